//! The store primitives on both backends: each transition is one conditional statement that
//! only the lease holder (or an expired lease's successor) can make.

mod common;

use std::sync::Arc;

use common::process::TestDatabase;
use paygate::idempotency::{self, Key, Store};

fn key(id: &str) -> Key {
    Key {
        caller: "billing".into(),
        method: "RefundService.Create",
        request_id: id.into(),
    }
}

async fn exercise(store: Arc<dyn Store>) {
    let k = key("k1");
    let now = 1_000_000;
    assert!(
        store
            .insert(&k, "fp", "t1", now + 5_000, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert(&k, "fp", "t2", now + 5_000, now)
            .await
            .unwrap(),
        "one owner"
    );
    let row = store.load(&k).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.fingerprint.as_str()),
        ("in_flight", "fp")
    );

    // A live lease cannot be taken over; an expired one can, once.
    assert!(
        !store
            .take_over(&k, "t2", now + 9_000, now + 1_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .take_over(&k, "t2", now + 9_000, now + 5_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_over(&k, "t3", now + 9_000, now + 5_000)
            .await
            .unwrap()
    );

    // The old holder can no longer complete; the new one can.
    assert!(!store.complete(&k, "t1", "{}", None, now).await.unwrap());
    assert!(store.mark_unknown(&k, "t2", now).await.unwrap());
    assert_eq!(store.load(&k).await.unwrap().unwrap().state, "unknown");
    assert!(
        store.take_over(&k, "t3", now + 9_000, now).await.unwrap(),
        "unknown is resumable"
    );
    assert!(
        store
            .complete(&k, "t3", "{\"x\":1}", None, now)
            .await
            .unwrap()
    );
    let row = store.load(&k).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.outcome.as_deref()),
        ("done", Some("{\"x\":1}"))
    );
    assert!(
        !store
            .take_over(&k, "t4", i64::MAX, i64::MAX - 1)
            .await
            .unwrap(),
        "done is final"
    );

    // Delete only by the holder.
    let k2 = key("k2");
    assert!(
        store
            .insert(&k2, "fp", "a", now + 5_000, now)
            .await
            .unwrap()
    );
    assert!(!store.delete(&k2, "b").await.unwrap());
    assert!(store.delete(&k2, "a").await.unwrap());
    assert!(store.load(&k2).await.unwrap().is_none());

    // Purge removes done keys created before the cutoff, never unresolved ones.
    let k3 = key("k3");
    assert!(
        store
            .insert(&k3, "fp", "c", now + 5_000, now)
            .await
            .unwrap()
    );
    assert!(store.mark_unknown(&k3, "c", now).await.unwrap());
    assert_eq!(store.purge(now + 1).await.unwrap(), 1);
    assert!(store.load(&k).await.unwrap().is_none());
    assert!(store.load(&k3).await.unwrap().is_some());

    // Refund states move forward only.
    store
        .save_refund(
            paygate::idempotency::RefundRow {
                account: "main",
                request_id: "r1",
                payment_id: Some("P1"),
                refund_id: None,
                state: "Processing",
                record: "p",
            },
            now,
        )
        .await
        .unwrap();
    store
        .save_refund(
            paygate::idempotency::RefundRow {
                account: "main",
                request_id: "r1",
                payment_id: Some("P1"),
                refund_id: Some("R1"),
                state: "Succeeded",
                record: "s",
            },
            now,
        )
        .await
        .unwrap();
    store
        .save_refund(
            paygate::idempotency::RefundRow {
                account: "main",
                request_id: "r1",
                payment_id: Some("P1"),
                refund_id: None,
                state: "Processing",
                record: "late",
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        store.load_refund("main", "r1").await.unwrap().as_deref(),
        Some("s")
    );
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("nested/dir/p.db").display());
    exercise(idempotency::open(&url).await.unwrap()).await;
    // Reopening runs the migrations again without harm.
    assert!(idempotency::open(&url).await.is_ok());
}

#[tokio::test]
async fn postgres_store() {
    let db = TestDatabase::create().await;
    exercise(idempotency::open(&db.url).await.unwrap()).await;
    assert!(idempotency::open(&db.url).await.is_ok());
}

#[tokio::test]
async fn an_unreachable_store_is_an_error_not_a_hang() {
    let port = common::process::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/none");
    assert!(idempotency::open(&url).await.is_err());
    assert!(idempotency::open("mysql://x").await.is_err());
}

#[tokio::test]
async fn an_unknown_outcome_is_settled_before_anything_is_sent_again() {
    use paygate::domain::{CancelOutcome, CancellationStatus, ProviderResult};
    use paygate::error::{ErrorContext, GatewayError};
    use paygate::idempotency::Idempotency;
    use paygate::providers::{ProviderError, Resolution};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let idem = Idempotency::new(
        idempotency::open(&url).await.unwrap(),
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
                .run::<CancelOutcome, _, _, _, _>(
                    &k,
                    "fp",
                    "main",
                    deadline(),
                    ctx,
                    || async { Ok(Resolution::Resend) },
                    || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Err(ProviderError::unknown("answer lost", None))
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
                &k,
                "fp",
                "main",
                deadline(),
                &ctx,
                || async { Ok(Resolution::Undecidable("two candidates".into())) },
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(outcome())
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
            &k,
            "fp",
            "main",
            deadline(),
            &ctx,
            || async { Ok(Resolution::Adopt(outcome())) },
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(outcome())
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
            &k,
            "fp",
            "main",
            deadline(),
            &ctx,
            || async { Ok(Resolution::Resend) },
            || async { Ok(outcome()) },
        )
        .await
        .unwrap();
    assert!(replay.replayed);
}
