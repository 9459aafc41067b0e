/*
 * The refund protocol on a provider without an idempotency key (PayXpert), as
 * src/idempotency/mod.rs and sql.rs implement it, checked by spin. README.md beside this
 * file says what is abstracted away; check.sh runs it with every rule on (no error allowed)
 * and with each rule off (a counterexample required).
 *
 * Two keys refund the same payment with the same amount. Key 1 has two workers (concurrent
 * duplicates, or a retry on another replica), key 2 one. Every worker makes up to CALLS
 * calls and may crash at any step. The provider executes or refuses each request whenever it
 * likes, also after the worker hung up, and any answer may be lost. Any lease may be judged
 * dead at any moment (expiry, a silent heartbeat, or a replica whose clock disagrees), so
 * nothing below depends on clocks; only the quiet period is a timing assumption: a request
 * is decided by the provider within it.
 *
 * Rules (define NO_<RULE> to remove one):
 *   SERIAL  one unsettled refund attempt per payment (payment_attempts)
 *   QUIET   "not in the export" means "not executed" only after the quiet period
 *   LEAVE   ... counted from the last moment the request can leave, not from the record of
 *           the send (BEGIN_SEND records now + the call's time left; END_SEND lowers it to
 *           when the attempt's request ended)
 *   FENCE   a request leaves only while its worker holds the live lease (BEGIN_SEND)
 *   LEASE   a completion whose lease was taken over writes nothing (COMPLETE by token)
 *   LEASE_ANSWER  ... and answers only the stored outcome: never its own value, which may be
 *           an adoption (OK only when the store holds it)
 *   READ    reads never attribute (Inquire refreshes a cache, never `attributions`)
 *   SETTLE  an operator settles only unresolved keys
 *   WINDOW  the export is searched from the key's first attempt
 *   KEEP    completed keys are kept past any retry (unkeyed retention)
 */

#define NKEYS 2
#define NW    3
#define CALLS 2
#define MAXR  8

mtype = { NONE, INFLIGHT, UNKNOWN, UNRESOLVED, DONE };

/* The store. */
mtype kstate[NKEYS + 1] = NONE;
byte  token[NKEYS + 1];        /* the lease holder's token; 0 = none */
bool  live[NKEYS + 1];         /* the lease is live, by the store */
byte  outcome[NKEYS + 1];      /* a done key's refund; 0 = settled as not executed */
byte  slot;                    /* the key holding the payment; 0 = free */
bool  sent[NKEYS + 1];         /* last_sent_at is set: a request may have left */
byte  leaving[NKEYS + 1];      /* sends recorded whose request has not left yet */
byte  attributed[MAXR];        /* refund -> key */

/* The provider. */
byte  nrefunds;                /* refunds executed, ids 1..nrefunds */
byte  owner[MAXR];             /* ghost: whose request executed refund i */
byte  pending[NKEYS + 1];      /* a key's requests the provider has not decided yet */
chan  req = [6] of { byte, byte, byte };          /* key, worker, seq */
chan  rep[NW + 1] = [3] of { byte, byte };        /* seq, refund (0 = not executed) */

/* Ghost: what each key was answered. */
byte  answered[NKEYS + 1];

/* A key is answered refund r: it must be a refund its own request executed, the same as
 * any earlier answer to it, and answered to no other key. */
inline answer(k, r) {
    assert(owner[r] == k);
    assert(answered[k] == 0 || answered[k] == r);
    assert(answered[3 - k] != r);
    answered[k] = r
}

inline release(k) {
    if
    :: slot == k -> slot = 0
    :: else -> skip
    fi
}

inline give_up(k, tok) {
    atomic {
        if
        :: token[k] == tok -> kstate[k] = UNKNOWN; token[k] = 0
        :: else -> skip
        fi
    }
}

proctype Worker(byte w; byte k) {
    byte calls = 0, tok, seq = 0, r, n, i, cand, known;
    bool fresh, quiet;
call:
    if
    :: calls == CALLS -> goto stop
    :: else -> calls++
    fi;
    tok = w * 16 + calls;
    atomic {
        if
        :: kstate[k] == DONE ->
            if
            :: outcome[k] != 0 -> answer(k, outcome[k])
            :: else -> skip
            fi;
            goto call
        :: kstate[k] == UNRESOLVED -> goto call
        :: kstate[k] == INFLIGHT && live[k] -> goto call          /* REQUEST_IN_FLIGHT */
        :: kstate[k] == NONE ->
#ifndef NO_SERIAL
            if
            :: slot != 0 -> goto call                             /* PAYMENT_REFUND_PENDING */
            :: else -> slot = k
            fi;
#endif
            kstate[k] = INFLIGHT; token[k] = tok; live[k] = 1; fresh = 1
        :: kstate[k] == UNKNOWN || (kstate[k] == INFLIGHT && !live[k]) ->
            kstate[k] = INFLIGHT; token[k] = tok; live[k] = 1; fresh = 0
        fi
    }
    if
    :: goto stop                                                  /* crash */
    :: fresh -> goto send
    :: !fresh -> skip
    fi;
    /* Resume: when the key's attempt was last sent (judged by the store's clock before the
     * export is read), the refunds attributed to keys, then the provider's export. */
    atomic {
#ifdef NO_QUIET
        quiet = 1;
#else
        if
#ifdef NO_LEAVE
        :: !sent[k] || pending[k] == 0 -> quiet = 1               /* counted from the record */
#else
        :: !sent[k] || (pending[k] == 0 && leaving[k] == 0) -> quiet = 1  /* the quiet period passed */
#endif
        :: true -> quiet = 0                                      /* or not yet */
        fi;
#endif
        known = 0; i = 1;
        do
        :: i < MAXR ->
            if
            :: attributed[i] != 0 -> known = known | (1 << i)
            :: else -> skip
            fi;
            i++
        :: else -> break
        od
    }
    atomic {
        n = 0; i = 1;
        do
        :: i <= nrefunds ->
            if
            :: (known & (1 << i)) == 0 -> n++; cand = i
#ifdef NO_WINDOW
            :: (known & (1 << i)) == 0 -> skip                    /* outside the window */
#endif
            :: else -> skip
            fi;
            i++
        :: else -> break
        od
    }
    if
    :: n == 1 -> r = cand; goto complete                          /* adopt */
    :: n > 1 ->
        atomic {
            if
            :: token[k] == tok -> kstate[k] = UNRESOLVED; token[k] = 0
            :: else -> skip
            fi
        };
        goto call
    :: n == 0 && quiet -> goto send
    :: n == 0 && !quiet -> give_up(k, tok); goto call             /* not yet decidable */
    fi;
send:
    /* The send is recorded under the live lease (BEGIN_SEND); the request leaves later (after
     * the status read, the rate limit), with no second check. A worker that dies in between
     * never sends; one that hangs (a stopped process) may still: its record stays. */
    atomic {
        if
#ifdef NO_FENCE
        :: true ->
#else
        :: token[k] == tok && live[k] && kstate[k] == INFLIGHT ->
#endif
            sent[k] = 1; leaving[k]++
        :: else -> goto call                                      /* lease lost: nothing sent */
        fi
    }
    if
    :: goto stop                                                  /* crash or hang */
    :: true -> skip
    fi;
    atomic { leaving[k]--; pending[k]++; seq++; req!k, w, seq }
    if
    :: goto stop                                                  /* crash */
    :: rep[w]??eval(seq), r ->
        if
        :: r > 0 -> goto complete
        :: else ->
            /* Refused before executing: a fresh key is deleted, a resumed one stays unknown. */
            atomic {
                if
                :: token[k] == tok && fresh ->
                    kstate[k] = NONE; token[k] = 0; sent[k] = 0; release(k)
                :: token[k] == tok && !fresh -> kstate[k] = UNKNOWN; token[k] = 0
                :: else -> skip
                fi
            };
            goto call
        fi
    :: true -> give_up(k, tok); goto call                         /* deadline, lost answer */
    fi;
complete:
    atomic {
        if
#ifdef NO_LEASE
        :: true ->
#else
        :: token[k] == tok && kstate[k] == INFLIGHT ->
#endif
            if
            :: attributed[r] != 0 && attributed[r] != k ->
                kstate[k] = UNRESOLVED; token[k] = 0
            :: else ->
                attributed[r] = k; outcome[k] = r; kstate[k] = DONE; token[k] = 0;
                release(k);
                answer(k, r)
            fi
        :: else ->
            /* The lease was taken over: nothing is written. The caller is told the stored
             * outcome if the key is done, else that the key is being settled; never this
             * worker's value, which may be an adoption a stale export offered. */
#ifdef NO_LEASE_ANSWER
            answer(k, r)
#else
            if
            :: kstate[k] == DONE && outcome[k] != 0 -> answer(k, outcome[k])
            :: kstate[k] == DONE && outcome[k] == 0 -> skip
            :: kstate[k] != DONE -> skip                          /* REQUEST_IN_FLIGHT */
            fi
#endif
        fi
    }
    goto call;
stop:
    skip
}

proctype Provider() {
    byte k, w, s;
end:
    do
    :: req?k, w, s ->
        atomic {
            if
            :: nrefunds++;
               assert(nrefunds < MAXR);
               owner[nrefunds] = k;
               pending[k]--;
               if
               :: nfull(rep[w]) -> rep[w]!s, nrefunds
               :: true -> skip                                    /* answer lost */
               fi
            :: pending[k]--;
               if
               :: nfull(rep[w]) -> rep[w]!s, 0
               :: true -> skip
               fi
            fi
        }
    od
}

/* Leases die whenever: expiry, a silent heartbeat, or a replica whose clock disagrees. */
proctype Leases() {
end:
    do
    :: atomic { kstate[1] == INFLIGHT && live[1] -> live[1] = 0 }
    :: atomic { kstate[2] == INFLIGHT && live[2] -> live[2] = 0 }
    od
}

/* An operator settles a key after looking at the provider (here: at the truth). */
proctype Operator() {
    byte k, i, found;
    if
    :: k = 1
    :: k = 2
    fi;
end_waiting:
    atomic {
#ifdef NO_SETTLE
        if
        :: kstate[k] == UNRESOLVED || kstate[k] == INFLIGHT || kstate[k] == UNKNOWN -> skip
        fi;
#else
        kstate[k] == UNRESOLVED;
#endif
        found = 0; i = 1;
        do
        :: i <= nrefunds ->
            if
            :: owner[i] == k && attributed[i] == 0 -> found = i
            :: else -> skip
            fi;
            i++
        :: else -> break
        od;
        if
        :: found != 0 -> attributed[found] = k
        :: else -> skip
        fi;
        outcome[k] = found; kstate[k] = DONE; token[k] = 0; release(k)
    }
}

#ifdef NO_READ
/* Inquire with a request id records the refund it read under that request. */
proctype Reader() {
    byte i;
end_waiting:
    atomic {
        nrefunds > 0;
        i = nrefunds;
        attributed[i] = owner[i]
    }
}
#endif

#ifdef NO_KEEP
/* Retention shorter than the time a retry may come. */
proctype Purge() {
    byte k, i;
    if
    :: k = 1
    :: k = 2
    fi;
end_waiting:
    atomic {
        kstate[k] == DONE;
        kstate[k] = NONE; sent[k] = 0;
        i = 1;
        do
        :: i < MAXR ->
            if
            :: attributed[i] == k -> attributed[i] = 0
            :: else -> skip
            fi;
            i++
        :: else -> break
        od
    }
}
#endif

/* At the end: a key settled as "not executed" executed nothing, and no key executed twice. */
proctype Final() {
    byte i, k, count;
    timeout;
    k = 1;
    do
    :: k <= NKEYS ->
        count = 0; i = 1;
        do
        :: i <= nrefunds ->
            if
            :: owner[i] == k -> count++
            :: else -> skip
            fi;
            i++
        :: else -> break
        od;
        assert(count <= 1);
        assert(!(kstate[k] == DONE && outcome[k] == 0 && count > 0));
        k++
    :: else -> break
    od
}

init {
    atomic {
        run Provider();
        run Leases();
        run Operator();
#ifdef NO_READ
        run Reader();
#endif
#ifdef NO_KEEP
        run Purge();
#endif
        run Final();
        run Worker(1, 1);
        run Worker(2, 1);
        run Worker(3, 2)
    }
}
