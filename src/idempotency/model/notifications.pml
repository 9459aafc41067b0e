/*
 * The order of states, as src/events.rs and src/store/sql.rs apply provider reports, checked
 * by spin: one refund and one subscription, reports arriving in any order, duplicated,
 * contradicted, and one captured notification replayed at any time. check.sh runs it with
 * every rule on (no error allowed) and with each rule off (a counterexample required).
 *
 * Rules (define NO_<RULE> to remove one):
 *   FINAL  a refund's final state never changes (SAVE_REFUND and REFRESH_REFUND write only
 *          over PROCESSING or the same state; a contradicting report is an anomaly, no event)
 *   STAGE  a subscription's cancellation stage never goes down, in one conditional write
 *          (SAVE_SUBSCRIPTION ... WHERE excluded.stage >= subscriptions.stage): TERMINATE
 *          dominates CANCEL, and an answer racing a notification loses nothing
 *   FRESH  a notification signed outside the freshness window is refused (by the store's clock)
 *   KEEP   what proves a notification was seen (its event) is kept at least the window
 */

#define NONE 0
#define PROC 1
#define SUCC 2
#define FAIL 3

/* The refund: the recorded state, the final state it first reached, the final state the
 * events showed. */
byte refund = NONE;
byte first_final = NONE;
byte shown = NONE;

/* The subscription's recorded stage: 0 none, 1 cancel accepted, 2 cancel confirmed,
 * 3 terminate accepted, 4 terminated. */
byte stage = 0;

/* One captured notification: whether its signature is past the window, whether its event
 * is stored, how often it was acted on. */
bool old = 0;
bool seen = 0;
byte acted = 0;

inline write_refund(st, notification) {
    atomic {
#ifdef NO_FINAL
        if
        :: true ->
#else
        if
        :: refund == NONE || refund == PROC || refund == st ->
#endif
            if
            :: st == PROC && (refund == SUCC || refund == FAIL) -> skip  /* never back to PROCESSING */
            :: else -> refund = st
            fi;
            if
            :: first_final != NONE -> assert(refund == first_final)
            :: first_final == NONE && (refund == SUCC || refund == FAIL) -> first_final = refund
            :: else -> skip
            fi;
            if
            :: notification && (st == SUCC || st == FAIL) ->
                /* The event shows the final state: never two different ones. */
                assert(shown == NONE || shown == st);
                shown = st
            :: else -> skip
            fi
#ifndef NO_FINAL
        :: else -> skip                                            /* an anomaly: recorded */
#endif
        fi
    }
}

/* Create's answer: PROCESSING or SUCCESS. */
proctype Create() {
    byte st;
    if
    :: st = PROC
    :: st = SUCC
    fi;
    write_refund(st, 0)
}

/* Antom's notifyRefund (the truth), sent and resent. */
proctype RefundNotified() {
    write_refund(SUCC, 1);
    write_refund(SUCC, 1)
}

/* A report that contradicts it, at any time. */
proctype Contradiction() {
    write_refund(FAIL, 1)
}

/* Inquire while the provider still says PROCESSING. */
proctype Inquire() {
    write_refund(PROC, 0)
}

/* A handler reads what is recorded, merges (the furthest stage wins), then writes: the read
 * and the write are separate steps, so another handler may write in between. */
inline save_stage(st) {
    byte known, merged;
    known = stage;
    if
    :: st > known -> merged = st
    :: else -> merged = known
    fi;
    atomic {
#ifdef NO_STAGE
        stage = merged                                             /* last writer wins */
#else
        if
        :: merged >= stage -> stage = merged
        :: else -> skip
        fi
#endif
    }
}

/* The Cancel(TERMINATE) answer: accepted. */
proctype CancelAnswer() {
    save_stage(3)
}

/* Antom's TERMINATE notification, racing the answer. */
proctype Terminated() {
    save_stage(4)
}

/* A CANCEL notification Antom resends late. */
proctype LateCancel() {
    save_stage(2)
}

/* The captured notification, posted again, twice, at any time. */
proctype Replay() {
    byte n = 0;
    do
    :: n < 2 ->
        n++;
        atomic {
#ifdef NO_FRESH
            if
            :: true ->
#else
            if
            :: !old ->
#endif
                if
                :: !seen -> seen = 1; acted++
                :: else -> skip                                    /* a duplicate */
                fi
#ifndef NO_FRESH
            :: else -> skip                                        /* stale: refused */
#endif
            fi
        }
    :: else -> break
    od
}

/* Time passes: the notification's signature leaves the window. */
proctype Clock() {
    old = 1
}

/* The purge: events go once past their keep time. */
proctype Purge() {
end:
    atomic {
#ifndef NO_KEEP
        old ->
#endif
        seen = 0
    }
}

proctype Final() {
    timeout;
    assert(stage == 4);
    assert(acted == 1)
}

init {
    atomic {
        /* The notification was delivered once, fresh. */
        seen = 1; acted = 1;
        run Create();
        run RefundNotified();
        run Contradiction();
        run Inquire();
        run CancelAnswer();
        run Terminated();
        run LateCancel();
        run Replay();
        run Clock();
        run Purge();
        run Final()
    }
}
