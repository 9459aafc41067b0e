//! The store primitives on both backends: each transition is one conditional statement that
//! only the lease holder (or an expired lease's successor) can make.

mod common;

use std::sync::Arc;

use common::process::TestDatabase;
use std::time::Duration;

use paygate::idempotency;
use paygate::store::{
    self, Completion, HistoryKind, Inserted, Key, KeyState, NewKey, Note, PaymentClaim, RefundRow,
    SettleKey, Settled, Store,
};

const ANSWERED: Note<'static> = Note {
    kind: HistoryKind::Answered,
    detail: "answered",
};

/// An operator's settle of `key` with `refund`, audited as `ops`.
fn settle<'a>(key: &'a Key, refund: Option<RefundRow<'a>>) -> SettleKey<'a> {
    SettleKey {
        key,
        outcome: "{}",
        keep_ms: 60_000,
        refund,
        actor: "caller:ops",
        reason: "checked the back office",
        settled_as: "executed",
        refund_id: refund.and_then(|r| r.refund_id),
        audit_id: Box::leak(format!("audit-{}", key.request_id).into_boxed_str()),
        detail: "settled",
    }
}

fn key(id: &str) -> Key {
    Key {
        caller: "billing".into(),
        method: "RefundService.Create",
        request_id: id.into(),
    }
}

fn new_key<'a>(
    k: &'a Key,
    token: &'a str,
    lease_ms: i64,
    payment: Option<PaymentClaim<'a>>,
) -> NewKey<'a> {
    NewKey {
        key: k,
        account: "main",
        claim_keep_ms: 60_000,
        payment_id: payment.map(|p| p.payment_id),
        fingerprint: "fp",
        token,
        lease_ms,
        instance: "i1",
        payment,
    }
}

fn refund_row<'a>(
    request_id: &'a str,
    refund_id: Option<&'a str>,
    record: &'a str,
) -> RefundRow<'a> {
    RefundRow {
        account: "main",
        request_id,
        payment_id: Some("P1"),
        refund_id,
        state: "Succeeded",
        record,
        change: None,
    }
}

const PAY: PaymentClaim<'static> = PaymentClaim {
    account: "main",
    payment_id: "P1",
};

async fn exercise(store: Arc<dyn Store>) {
    let k = key("k1");
    let a = store.now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.now().await.unwrap() > a, "the store's clock moves");
    assert_eq!(
        store.insert(new_key(&k, "t1", 5_000, None)).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(
        store.insert(new_key(&k, "t2", 5_000, None)).await.unwrap(),
        Inserted::Exists,
        "one owner"
    );
    let row = store.load(&k).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.fingerprint.as_str(), row.live),
        ("in_flight", "fp", true)
    );
    assert!(row.lease_left_ms > 4_000 && row.lease_left_ms <= 5_000);

    // A live lease cannot be taken over; an expired one can, once.
    assert!(!store.take_over(&k, "t2", 300, "i2").await.unwrap());
    let k0 = key("k0");
    store.insert(new_key(&k0, "t0", 200, None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!store.load(&k0).await.unwrap().unwrap().live, "expired");
    assert!(store.take_over(&k0, "t0b", 5_000, "i2").await.unwrap());
    assert!(!store.take_over(&k0, "t0c", 5_000, "i2").await.unwrap());

    // A lease of an instance that stopped heartbeating is dead before it expires; one whose
    // instance beats (or never beat at all) is not.
    store.heartbeat("i1").await.unwrap();
    assert!(!store.take_over(&k, "t2", 5_000, "i2").await.unwrap());
    tokio::time::sleep(idempotency::INSTANCE_STALE + Duration::from_millis(100)).await;
    assert!(!store.load(&k).await.unwrap().unwrap().live, "i1 is silent");
    assert!(store.take_over(&k, "t2", 5_000, "i2").await.unwrap());
    assert!(!store.take_over(&k, "t3", 5_000, "i3").await.unwrap());
    store.heartbeat("i2").await.unwrap();
    assert!(store.load(&k).await.unwrap().unwrap().live);

    // The old holder can no longer complete, and writes nothing; the new one can.
    assert_eq!(
        store
            .complete(
                &k,
                "t1",
                "{}",
                60_000,
                Some(refund_row("k1", Some("R0"), "lost")),
                ANSWERED
            )
            .await
            .unwrap(),
        Completion::LeaseLost
    );
    assert!(store.load_refund("main", "k1").await.unwrap().is_none());
    assert!(store.known_refunds("main", "P1").await.unwrap().is_empty());
    assert!(store.mark_unknown(&k, "t2", "timeout").await.unwrap());
    assert_eq!(store.load(&k).await.unwrap().unwrap().state, "unknown");
    assert!(
        store.take_over(&k, "t3", 9_000, "i2").await.unwrap(),
        "unknown is resumable"
    );
    assert_eq!(
        store
            .complete(
                &k,
                "t3",
                "{\"x\":1}",
                60_000,
                Some(refund_row("k1", Some("R1"), "s")),
                ANSWERED
            )
            .await
            .unwrap(),
        Completion::Done
    );
    let row = store.load(&k).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.outcome.as_deref()),
        ("done", Some("{\"x\":1}"))
    );
    assert!(
        !store.take_over(&k, "t4", 9_000, "i2").await.unwrap(),
        "done is final"
    );
    assert_eq!(store.known_refunds("main", "P1").await.unwrap(), vec!["R1"]);
    assert_eq!(
        store
            .attributed_refund("main", Some("billing"), "k1")
            .await
            .unwrap()
            .as_deref(),
        Some("R1")
    );
    assert!(
        store
            .attributed_refund("main", Some("support"), "k1")
            .await
            .unwrap()
            .is_none(),
        "attributions belong to the caller"
    );
    assert_eq!(
        store
            .attributed_refund("main", None, "k1")
            .await
            .unwrap()
            .as_deref(),
        Some("R1"),
        "whoever's, for a caller allowed to read others'"
    );

    // Delete only by the holder.
    let k2 = key("k2");
    store.insert(new_key(&k2, "a", 5_000, None)).await.unwrap();
    assert!(!store.delete(&k2, "b").await.unwrap());
    assert!(store.delete(&k2, "a").await.unwrap());
    assert!(store.load(&k2).await.unwrap().is_none());

    // One unsettled attempt per payment: a second key waits until the first is settled.
    let p1 = key("p1");
    let p2 = key("p2");
    assert_eq!(
        store
            .insert(new_key(&p1, "x1", 5_000, Some(PAY)))
            .await
            .unwrap(),
        Inserted::Created
    );
    assert_eq!(
        store
            .insert(new_key(&p2, "x2", 5_000, Some(PAY)))
            .await
            .unwrap(),
        Inserted::PaymentBusy
    );
    assert!(store.load(&p2).await.unwrap().is_none(), "nothing written");
    let held = store.hold_payment(&p1, PAY).await.unwrap().unwrap();
    assert_eq!(held.last_sent_at, None);
    assert!(held.now >= held.started_at);
    assert!(store.hold_payment(&p2, PAY).await.unwrap().is_none());
    // A send is recorded only under the live lease.
    assert!(
        !store
            .begin_send(&p1, "not-the-holder", 60_000)
            .await
            .unwrap()
    );
    assert!(store.begin_send(&p1, "x1", 60_000).await.unwrap());
    // The request may leave until the window's end: the quiet period counts from there.
    let sent = store.hold_payment(&p1, PAY).await.unwrap().unwrap();
    assert!(
        sent.last_sent_at.is_some_and(|t| t >= sent.now + 59_000),
        "{sent:?}"
    );
    // Once the attempt's request ended, nothing of it leaves later than then.
    assert!(
        store
            .mark_unknown_after_send(&p1, "x1", "timeout")
            .await
            .unwrap()
    );
    let ended = store.hold_payment(&p1, PAY).await.unwrap().unwrap();
    assert!(
        ended
            .last_sent_at
            .is_some_and(|t| t <= ended.now && t >= held.started_at),
        "{ended:?}"
    );
    assert!(
        !store.begin_send(&p1, "x1", 60_000).await.unwrap(),
        "not while unknown"
    );
    assert_eq!(
        store
            .insert(new_key(&p2, "x2", 5_000, Some(PAY)))
            .await
            .unwrap(),
        Inserted::PaymentBusy,
        "an unknown attempt still holds the payment"
    );
    // An operator settles only keys that need a person: never one a live attempt holds.
    assert!(store.take_over(&p1, "x3", 5_000, "i2").await.unwrap());
    assert_eq!(
        store.settle(settle(&p1, None)).await.unwrap(),
        Settled::NotSettleable {
            state: KeyState::InFlight,
            lease_live: true
        },
        "never a live lease"
    );
    assert!(
        store
            .mark_unresolved(&p1, "x3", "two candidates")
            .await
            .unwrap()
    );
    // A refund attributed to another key is never settled onto this one.
    assert_eq!(
        store
            .settle(settle(&p1, Some(refund_row("p1", Some("R1"), "s"))))
            .await
            .unwrap(),
        Settled::AttributedElsewhere
    );
    assert_eq!(store.load(&p1).await.unwrap().unwrap().state, "unresolved");
    assert_eq!(
        store
            .settle(settle(&p1, Some(refund_row("p1", Some("R2"), "s"))))
            .await
            .unwrap(),
        Settled::Done {
            before: KeyState::Unresolved
        }
    );
    assert_eq!(
        store
            .settle(settle(&p1, Some(refund_row("p1", Some("R2"), "s"))))
            .await
            .unwrap(),
        Settled::NotSettleable {
            state: KeyState::Done,
            lease_live: false
        },
        "a second settle changes nothing"
    );
    assert_eq!(
        store
            .insert(new_key(&p2, "x2", 5_000, Some(PAY)))
            .await
            .unwrap(),
        Inserted::Created,
        "settling released the payment"
    );
    // Completing with a refund that another key owns writes nothing.
    assert_eq!(
        store
            .complete(
                &p2,
                "x2",
                "{}",
                60_000,
                Some(refund_row("p2", Some("R2"), "s")),
                ANSWERED
            )
            .await
            .unwrap(),
        Completion::AttributedElsewhere
    );
    assert_eq!(store.load(&p2).await.unwrap().unwrap().state, "in_flight");
    assert!(store.delete(&p2, "x2").await.unwrap());
    assert_eq!(
        store
            .insert(new_key(&p1, "x9", 5_000, Some(PAY)))
            .await
            .unwrap(),
        Inserted::Exists
    );

    // Purge removes done keys past their keep time, never unresolved or unknown ones.
    let k3 = key("k3");
    store.insert(new_key(&k3, "c", 5_000, None)).await.unwrap();
    assert!(store.mark_unknown(&k3, "c", "timeout").await.unwrap());
    let k4 = key("k4");
    store.insert(new_key(&k4, "d", 5_000, None)).await.unwrap();
    assert_eq!(
        store
            .complete(&k4, "d", "{}", 100, None, ANSWERED)
            .await
            .unwrap(),
        Completion::Done
    );
    let keep = paygate::store::Retention {
        keys_ms: 3_600_000,
        events_ms: 3_600_000,
        anomalies_ms: 3_600_000,
    };
    assert_eq!(store.purge(keep).await.unwrap(), 0, "nothing is due");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.purge(keep).await.unwrap(), 1, "k4's keep time passed");
    assert!(store.load(&k4).await.unwrap().is_none());
    assert!(
        store.load(&k).await.unwrap().is_some(),
        "k1 is kept for a minute"
    );
    assert!(store.load(&k3).await.unwrap().is_some());

    // A request id on an account belongs to its first caller.
    let theirs = Key {
        caller: "support".into(),
        method: "RefundService.Create",
        request_id: "k1".into(),
    };
    assert_eq!(
        store
            .insert(new_key(&theirs, "s1", 5_000, None))
            .await
            .unwrap(),
        Inserted::Claimed
    );
    assert!(
        store.load(&theirs).await.unwrap().is_none(),
        "nothing written"
    );
    assert_eq!(
        store
            .claimant("main", "RefundService.Create", "k1")
            .await
            .unwrap(),
        Some(("billing".to_string(), None))
    );
    assert_eq!(
        store
            .claimant("main", "RefundService.Create", "p1")
            .await
            .unwrap(),
        Some(("billing".to_string(), Some("P1".to_string())))
    );
    assert_eq!(
        store.refund_owner("main", "R2").await.unwrap().as_deref(),
        Some("billing")
    );

    // Refund states move forward only; a read refreshes only what a Create recorded.
    for (refund_id, state, record) in [
        (None, "Processing", "p"),
        (Some("R1"), "Succeeded", "s"),
        (None, "Processing", "late"),
    ] {
        store
            .save_refund(RefundRow {
                account: "main",
                request_id: "r1",
                payment_id: Some("P1"),
                refund_id,
                state,
                record,
                change: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store.load_refund("main", "r1").await.unwrap().as_deref(),
        Some("s")
    );
    let read = |request_id, refund_id, record| RefundRow {
        account: "main",
        request_id,
        payment_id: Some("P1"),
        refund_id: Some(refund_id),
        state: "Failed",
        record,
        change: None,
    };
    assert!(
        !store
            .refresh_refund(read("r1", "R9", "other"))
            .await
            .unwrap()
    );
    assert!(!store.refresh_refund(read("r2", "R1", "new")).await.unwrap());
    assert!(
        store.load_refund("main", "r2").await.unwrap().is_none(),
        "never recorded anew"
    );
    assert_eq!(
        store.load_refund("main", "r1").await.unwrap().as_deref(),
        Some("s")
    );
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("nested/dir/p.db").display());
    exercise(store::open(&url).await.unwrap()).await;
    // Reopening runs the migrations again without harm.
    assert!(store::open(&url).await.is_ok());
}

#[tokio::test]
async fn postgres_store() {
    let db = TestDatabase::create().await;
    exercise(store::open(&db.url).await.unwrap()).await;
    assert!(store::open(&db.url).await.is_ok());
}

/// A change written with its event numbers it; an event no relay has published outlives the
/// retention; once the relay's lease holder marks it published, the purge takes it; a replica
/// that does not hold the lease neither claims nor marks.
async fn relay_marks(store: Arc<dyn Store>) {
    use paygate::store::{Change, EventSource};
    let change = Change {
        event_id: "antom/main/refund/e1/SUCCEEDED",
        provider: "antom",
        source: EventSource::Answer,
        payload: "{}",
        caller: None,
    };
    store
        .save_refund(RefundRow {
            change: Some(change),
            ..refund_row("e1", Some("R1"), "s")
        })
        .await
        .unwrap();
    // The same state again: no second event.
    store
        .save_refund(RefundRow {
            change: Some(change),
            ..refund_row("e1", Some("R1"), "s")
        })
        .await
        .unwrap();
    let (last, _) = store.event_counter().await.unwrap();
    assert_eq!(last, 1);
    assert_eq!(
        store.relay_claim("nats", "a", 60_000).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        store.relay_claim("nats", "b", 60_000).await.unwrap(),
        None,
        "a holds it"
    );
    assert!(!store.relay_advance("nats", "b", 1).await.unwrap());
    let lag = store.relay_lag("nats").await.unwrap();
    assert_eq!(lag.events, 1);
    assert!(lag.oldest_at.is_some());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = paygate::store::Retention {
        keys_ms: 3_600_000,
        events_ms: 1,
        anomalies_ms: 3_600_000,
    };
    store.purge(now).await.unwrap();
    assert_eq!(
        store.event_counter().await.unwrap().1,
        0,
        "unpublished: kept"
    );
    assert!(store.relay_advance("nats", "a", 1).await.unwrap());
    assert_eq!(store.relay_lag("nats").await.unwrap().events, 0);
    store.purge(now).await.unwrap();
    assert_eq!(
        store.event_counter().await.unwrap().1,
        1,
        "published: purged"
    );
}

/// The keys that need a retry or a person are counted by account and state from the store;
/// a settled key no longer counts.
async fn attention(store: Arc<dyn Store>) {
    use paygate::store::KeyState;
    assert!(store.needing_attention().await.unwrap().is_empty());
    let (a, b) = (key("att-1"), key("att-2"));
    store.insert(new_key(&a, "t1", 60_000, None)).await.unwrap();
    store.insert(new_key(&b, "t2", 60_000, None)).await.unwrap();
    assert!(store.mark_unknown(&a, "t1", "timeout").await.unwrap());
    assert!(
        store
            .mark_unresolved(&b, "t2", "two candidates")
            .await
            .unwrap()
    );
    let mut rows = store.needing_attention().await.unwrap();
    rows.sort_by_key(|r| r.state.as_str());
    let seen: Vec<_> = rows
        .iter()
        .map(|r| (r.account.as_str(), r.state, r.count))
        .collect();
    assert_eq!(
        seen,
        [
            ("main", KeyState::Unknown, 1),
            ("main", KeyState::Unresolved, 1)
        ]
    );
    assert!(rows.iter().all(|r| r.now >= r.oldest_at));
    assert_eq!(
        store.settle(settle(&b, None)).await.unwrap(),
        Settled::Done {
            before: KeyState::Unresolved
        }
    );
    let rows = store.needing_attention().await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state, KeyState::Unknown);
}

#[tokio::test]
async fn attention_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    attention(store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn attention_on_postgres() {
    let db = TestDatabase::create().await;
    attention(store::open(&db.url).await.unwrap()).await;
}

/// Every transition of a key is in its history, written with it; operators list keys by state,
/// payment and page, see what blocks a payment, and every settle leaves an audit entry.
async fn history_and_audit(store: Arc<dyn Store>) {
    use paygate::store::{AuditFilter, KeyFilter};
    let k = key("hist-1");
    assert_eq!(
        store
            .insert(new_key(&k, "h1", 60_000, Some(PAY)))
            .await
            .unwrap(),
        Inserted::Created
    );
    assert!(store.begin_send(&k, "h1", 1_000).await.unwrap());
    assert!(
        store
            .mark_unknown_after_send(&k, "h1", "PROVIDER_TIMEOUT: no answer")
            .await
            .unwrap()
    );
    assert!(
        !store.mark_unknown(&k, "h1", "fenced").await.unwrap(),
        "a transition fenced out writes no history"
    );
    assert!(store.take_over(&k, "h2", 60_000, "i2").await.unwrap());
    assert!(
        store
            .mark_unresolved(&k, "h2", "2 refunds: R7, R8")
            .await
            .unwrap()
    );
    let kinds = |h: &[paygate::store::HistoryEntry]| {
        h.iter()
            .map(|e| (e.attempt, e.kind.clone()))
            .collect::<Vec<_>>()
    };
    let history = store.key_history(&k).await.unwrap();
    assert_eq!(
        kinds(&history),
        [
            (1, "sent".to_owned()),
            (1, "unknown".to_owned()),
            (2, "taken_over".to_owned()),
            (2, "unresolved".to_owned())
        ]
    );
    assert_eq!(history[3].detail, "2 refunds: R7, R8");
    assert!(history.windows(2).all(|w| w[0].at <= w[1].at));
    let view = store.key_view(&k).await.unwrap().unwrap();
    assert_eq!(
        (
            view.account.as_str(),
            view.payment_id.as_deref(),
            view.state,
            view.attempts
        ),
        ("main", Some("P1"), KeyState::Unresolved, 2)
    );
    assert!(view.blocks_payment && !view.lease_live);
    assert_eq!(view.last_failure.as_deref(), Some("2 refunds: R7, R8"));

    // Listing: by state, by payment, in pages.
    let other = key("hist-2");
    store
        .insert(new_key(&other, "o1", 60_000, None))
        .await
        .unwrap();
    let listed = |f: KeyFilter| {
        let store = store.clone();
        async move {
            let rows = store.list_keys(&f).await.unwrap();
            rows.into_iter()
                .map(|v| v.key.request_id)
                .collect::<Vec<_>>()
        }
    };
    let unresolved = KeyFilter {
        states: vec![KeyState::Unresolved],
        limit: 10,
        ..KeyFilter::default()
    };
    assert_eq!(listed(unresolved.clone()).await, ["hist-1"]);
    let by_payment = KeyFilter {
        states: KeyState::ALL.to_vec(),
        payment_id: Some("P1".into()),
        limit: 10,
        ..KeyFilter::default()
    };
    assert_eq!(listed(by_payment).await, ["hist-1"]);
    let all = KeyFilter {
        states: vec![KeyState::InFlight, KeyState::Unresolved],
        limit: 1,
        ..KeyFilter::default()
    };
    let first = store.list_keys(&all).await.unwrap();
    assert_eq!(first.len(), 1);
    let next = KeyFilter {
        after: Some((first[0].updated_at, first[0].key.clone())),
        ..all.clone()
    };
    let second = listed(next).await;
    let mut both = vec![first[0].key.request_id.clone()];
    both.extend(second);
    both.sort();
    assert_eq!(both, ["hist-1", "hist-2"], "two pages, each key once");
    assert!(
        listed(KeyFilter {
            min_age_ms: 3_600_000,
            ..unresolved.clone()
        })
        .await
        .is_empty(),
        "not an hour old"
    );

    // Settling: the history's last entry and one audit entry, in the same transaction.
    assert_eq!(
        store
            .settle(settle(&k, Some(refund_row("hist-1", Some("R7"), "s"))))
            .await
            .unwrap(),
        Settled::Done {
            before: KeyState::Unresolved
        }
    );
    let history = store.key_history(&k).await.unwrap();
    assert_eq!(history.last().unwrap().kind, "settled");
    let view = store.key_view(&k).await.unwrap().unwrap();
    assert_eq!(view.refund_id.as_deref(), Some("R7"));
    assert!(!view.blocks_payment, "settling released the payment");
    let audit = store
        .audit_entries(&AuditFilter {
            key: Some(k.clone()),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    let a = &audit[0];
    assert_eq!(
        (
            a.actor.as_str(),
            a.reason.as_str(),
            a.state_before.as_str(),
            a.state_after.as_str()
        ),
        (
            "caller:ops",
            "checked the back office",
            "unresolved",
            "done"
        )
    );
    assert_eq!(
        (a.account.as_str(), a.refund_id.as_deref()),
        ("main", Some("R7"))
    );
    let none = store
        .audit_entries(&AuditFilter {
            key: Some(other.clone()),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // A key that executed nothing goes with its history.
    assert!(store.mark_unknown(&other, "o1", "timeout").await.unwrap());
    assert!(store.take_over(&other, "o2", 60_000, "i2").await.unwrap());
    assert_eq!(store.key_history(&other).await.unwrap().len(), 2);
    assert!(store.delete(&other, "o2").await.unwrap());
    assert!(store.key_history(&other).await.unwrap().is_empty());
}

#[tokio::test]
async fn history_and_audit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("h.db").display());
    history_and_audit(store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn history_and_audit_on_postgres() {
    let db = TestDatabase::create().await;
    history_and_audit(store::open(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn relay_marks_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    relay_marks(store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn relay_marks_on_postgres() {
    let db = TestDatabase::create().await;
    relay_marks(store::open(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn an_unreachable_store_is_an_error_not_a_hang() {
    let port = common::process::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/none");
    assert!(store::open(&url).await.is_err());
    assert!(store::open("mysql://x").await.is_err());
}

#[tokio::test]
async fn an_unknown_outcome_is_settled_before_anything_is_sent_again() {
    use paygate::domain::{CancelOutcome, CancellationStatus, ProviderResult};
    use paygate::error::{ErrorContext, GatewayError};
    use paygate::idempotency::{FnOperation, Idempotency, Keyed};
    use paygate::providers::{ProviderError, Resolution};
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let idem = Idempotency::new(
        store::open(&url).await.unwrap(),
        idempotency::DEFAULT_RETENTION,
    );
    let outcome = || CancelOutcome {
        status: CancellationStatus::Accepted,
        result: ProviderResult {
            provider: "x".into(),
            code: "OK".into(),
            status: "S".into(),
            message: String::new(),
        },
        effect: None,
        subscription_state: None,
        cancel_time: None,
        cancel_reason: None,
    };
    let calls = AtomicU32::new(0);
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(5);
    let ctx = ErrorContext::default();
    let lost = |k: &'static str| {
        let k = key(k);
        let idem = &idem;
        let ctx = &ctx;
        let calls = &calls;
        async move {
            let r = idem
                .run(
                    &Keyed {
                        key: &k,
                        fingerprint: "fp",
                        account: "main",
                        deadline: deadline(),
                        ctx,
                        refund: None,
                    },
                    &FnOperation {
                        settle: |_| async { Ok(Resolution::<CancelOutcome>::Resend) },
                        send: || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            Err(ProviderError::unknown("answer lost", None))
                        },
                    },
                )
                .await;
            assert!(matches!(r, Err(GatewayError::Provider(..))));
            k
        }
    };

    // Undecidable: never sent again, and it stays so until an operator settles it.
    let k = lost("undecidable").await;
    for _ in 0..3 {
        let again = idem
            .run(
                &Keyed {
                    key: &k,
                    fingerprint: "fp",
                    account: "main",
                    deadline: deadline(),
                    ctx: &ctx,
                    refund: None,
                },
                &FnOperation {
                    settle: |_| async { Ok(Resolution::Undecidable("two candidates".into())) },
                    send: || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(outcome())
                    },
                },
            )
            .await;
        let Err(GatewayError::OutcomeUnresolved(_)) = again else {
            panic!("expected OUTCOME_UNKNOWN, got {again:?}");
        };
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never resent");

    // Adopt: the earlier execution's result is stored and returned, nothing is sent.
    let k = lost("adopt").await;
    let adopted = idem
        .run(
            &Keyed {
                key: &k,
                fingerprint: "fp",
                account: "main",
                deadline: deadline(),
                ctx: &ctx,
                refund: None,
            },
            &FnOperation {
                settle: |_| async { Ok(Resolution::Adopt(outcome())) },
                send: || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(outcome())
                },
            },
        )
        .await
        .unwrap();
    assert!(!adopted.replayed);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "only the lost attempt was sent"
    );
    let replay = idem
        .run(
            &Keyed {
                key: &k,
                fingerprint: "fp",
                account: "main",
                deadline: deadline(),
                ctx: &ctx,
                refund: None,
            },
            &FnOperation {
                settle: |_| async { Ok(Resolution::Resend) },
                send: || async { Ok(outcome()) },
            },
        )
        .await
        .unwrap();
    assert!(replay.replayed);
}

/// A store written by the previous schema (migrations 1-3): its completed refund keys keep
/// replaying, their refunds are attributed to them, and their request ids are claimed by their
/// callers.
async fn keys_from_before_claims(url: &str) {
    use paygate::idempotency::{FnOperation, Keyed};
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let m = |v, name: &'static str, sql: &'static str| {
        Migration::new(
            v,
            name.into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(sql),
            false,
        )
    };
    let old = Migrator::with_migrations(vec![
        m(
            1,
            "idempotency",
            include_str!("../src/store/migrations/0001_idempotency.sql"),
        ),
        m(
            2,
            "refund payments",
            include_str!("../src/store/migrations/0002_refund_payment.sql"),
        ),
        m(
            3,
            "events and subscriptions",
            include_str!("../src/store/migrations/0003_events.sql"),
        ),
    ]);
    let outcome = r#"{"Refund":{"refund_id":"R-OLD","request_id":"old-1","payment_id":"P9","amount":{"currency":"EUR","value":100},"state":"Succeeded","refund_time":null,"reference_refund_id":null,"result":{"provider":"payxpert","code":"000","status":"S","message":""}}}"#;
    let insert_key = "INSERT INTO idempotency_keys (caller, method, request_id, fingerprint, state, \
         lease_token, lease_until, attempts, outcome, created_at, updated_at) \
         VALUES ('billing', 'RefundService.Create', 'old-1', 'fp', 'done', NULL, 0, 1, $1, 1000, 1000)";
    let insert_refund = "INSERT INTO refunds (account, request_id, refund_id, state, record, updated_at, payment_id) \
         VALUES ('main', 'old-1', 'R-OLD', 'Succeeded', '{}', 1000, 'P9')";
    // A refund row that a read wrote, with no key of its own: not an attribution.
    let read_row = "INSERT INTO refunds (account, request_id, refund_id, state, record, updated_at, payment_id) \
         VALUES ('main', 'someone-else', 'R-READ', 'Succeeded', '{}', 1000, 'P9')";
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        old.run(&pool).await.unwrap();
        sqlx::query(insert_key)
            .bind(outcome)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(insert_refund).execute(&pool).await.unwrap();
        sqlx::query(read_row).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        old.run(&pool).await.unwrap();
        sqlx::query(insert_key)
            .bind(outcome)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(insert_refund).execute(&pool).await.unwrap();
        sqlx::query(read_row).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let store = store::open(url).await.unwrap();
    let k = key("old-1");
    assert_eq!(store.load(&k).await.unwrap().unwrap().state, "done");
    assert_eq!(
        store
            .attributed_refund("main", Some("billing"), "old-1")
            .await
            .unwrap()
            .as_deref(),
        Some("R-OLD")
    );
    assert_eq!(
        store.known_refunds("main", "P9").await.unwrap(),
        vec!["R-OLD"]
    );
    assert_eq!(
        store
            .claimant("main", "RefundService.Create", "old-1")
            .await
            .unwrap(),
        Some(("billing".to_string(), Some("P9".to_string())))
    );
    let theirs = Key {
        caller: "support".into(),
        method: "RefundService.Create",
        request_id: "old-1".into(),
    };
    assert_eq!(
        store
            .insert(new_key(&theirs, "s", 5_000, None))
            .await
            .unwrap(),
        Inserted::Claimed
    );
    // And the key replays through the idempotency layer.
    let idem = paygate::idempotency::Idempotency::new(store, idempotency::DEFAULT_RETENTION);
    let r = idem
        .run(
            &Keyed {
                key: &k,
                fingerprint: "fp",
                account: "main",
                deadline: tokio::time::Instant::now() + Duration::from_secs(5),
                ctx: &paygate::error::ErrorContext::default(),
                refund: None,
            },
            &FnOperation {
                settle: |_| async { Ok(paygate::providers::Resolution::Resend) },
                send: || -> std::future::Pending<
                    Result<paygate::domain::RefundRecord, paygate::providers::ProviderError>,
                > { panic!("a replay never calls the provider") },
            },
        )
        .await
        .unwrap();
    assert!(r.replayed);
    assert_eq!(r.value.refund_id.as_deref(), Some("R-OLD"));
}

#[tokio::test]
async fn keys_from_before_claims_keep_working_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    keys_from_before_claims(&format!("sqlite://{}", dir.path().join("old.db").display())).await;
}

#[tokio::test]
async fn keys_from_before_claims_keep_working_postgres() {
    let db = TestDatabase::create().await;
    keys_from_before_claims(&db.url).await;
}
