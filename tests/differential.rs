//! The two stores, row for row. PostgreSQL runs the hot writes (a new key, a completion, a
//! subscription's state) as one statement each (`sql.rs`, "one statement per hot write"),
//! SQLite as the transaction of statements that `sql_store.rs` writes once; the one statement
//! must do exactly what that transaction does, or fall back to it. This drives both stores
//! through the same scenarios, those of the refund protocol's model
//! (`src/idempotency/model/refunds.pml`: two keys on one payment, duplicates, crashes and
//! take-overs, lost leases, unknown outcomes, settles, reads, purges) and every case the one
//! statements leave to the transaction, then compares every answer and every row of every
//! table (times compared as set or not).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::process::TestDatabase;
use paygate::store::{
    self, Change, EventEffect, EventRow, EventSource, HistoryKind, Key, NewKey, Note, PaymentClaim,
    RefundRow, Retention, SettleKey, Store, SubscriptionRow,
};
use sqlx::{Connection, Row};

const ANSWERED: Note<'static> = Note {
    kind: HistoryKind::Answered,
    detail: "answered",
};

fn key(caller: &str, method: &'static str, id: &str) -> Key {
    Key {
        caller: caller.into(),
        method,
        request_id: id.into(),
    }
}

fn refund(id: &str) -> Key {
    key("billing", "RefundService.Create", id)
}

fn new_key<'a>(k: &'a Key, token: &'a str, lease_ms: i64, payment: Option<&'a str>) -> NewKey<'a> {
    NewKey {
        key: k,
        account: "main",
        claim_keep_ms: 60_000,
        payment_id: payment,
        fingerprint: "fp",
        token,
        lease_ms,
        instance: "i1",
        payment: payment.map(|payment_id| PaymentClaim {
            account: "main",
            payment_id,
        }),
    }
}

fn change(event_id: &str) -> Change<'_> {
    Change {
        event_id,
        provider: "antom",
        source: EventSource::Answer,
        payload: "{\"notice\":1}",
        caller: Some("billing"),
    }
}

/// A refund's row as an answer reports it, with the event of its change.
fn row<'a>(
    request_id: &'a str,
    refund_id: Option<&'a str>,
    state: &'a str,
    event: Option<&'a str>,
) -> RefundRow<'a> {
    RefundRow {
        account: "main",
        request_id,
        payment_id: Some("P1"),
        refund_id,
        state,
        record: "{\"record\":1}",
        change: event.map(change),
    }
}

fn subscription<'a>(
    stage: i64,
    cancellation: &'a str,
    event: Option<&'a str>,
) -> SubscriptionRow<'a> {
    SubscriptionRow {
        account: "main",
        subscription_id: "SUB1",
        subscription_request_id: Some("SR1"),
        cancellation,
        record: "{\"sub\":1}",
        stage,
        reported_stage: None,
        change: event.map(change),
    }
}

/// What each step answered, in order.
struct Transcript(Vec<String>);

impl Transcript {
    fn add(&mut self, step: &str, answer: impl std::fmt::Debug) {
        self.0.push(format!("{step}: {answer:?}"));
    }
}

/// Lets a short lease expire by the store's clock.
async fn expire() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

/// The scenarios, in one store; every step's answer.
async fn scenarios(s: Arc<dyn Store>) -> Vec<String> {
    let mut t = Transcript(Vec::new());
    // A first call answered at once, with a new refund and its event (the one statements).
    let a = refund("a");
    t.add("a insert", s.insert(new_key(&a, "ta", 60_000, None)).await);
    t.add(
        "a duplicate",
        s.insert(new_key(&a, "ta2", 60_000, None)).await,
    );
    let done = s.complete(
        &a,
        "ta",
        "{\"a\":1}",
        60_000,
        Some(row("a", Some("R1"), "Succeeded", Some("ev-a"))),
        ANSWERED,
    );
    t.add("a complete", done.await);
    t.add(
        "a complete again",
        s.complete(&a, "ta", "{}", 60_000, None, ANSWERED).await,
    );

    // SERIAL: two keys on one payment (PayXpert): the second waits.
    let (b, c) = (refund("b"), refund("c"));
    t.add(
        "b insert",
        s.insert(new_key(&b, "tb", 60_000, Some("P1"))).await,
    );
    t.add(
        "c payment busy",
        s.insert(new_key(&c, "tc", 60_000, Some("P1"))).await,
    );
    t.add("b send", s.begin_send(&b, "tb", 5_000).await);
    // LEASE: a completion by a token that does not hold the lease writes nothing.
    t.add(
        "b stale token",
        s.complete(
            &b,
            "tx",
            "{}",
            60_000,
            Some(row("b", Some("R2"), "Succeeded", Some("ev-b"))),
            ANSWERED,
        )
        .await,
    );
    // A refund attributed to another key is refused, and nothing of the completion stays.
    t.add(
        "b refund of a",
        s.complete(
            &b,
            "tb",
            "{}",
            60_000,
            Some(row("b", Some("R1"), "Succeeded", Some("ev-b1"))),
            ANSWERED,
        )
        .await,
    );
    // The refund already recorded (a notification came first): the transaction decides.
    t.add(
        "b notified first",
        s.save_refund(row("b", None, "Processing", Some("ev-b-proc")))
            .await,
    );
    t.add(
        "b complete",
        s.complete(
            &b,
            "tb",
            "{\"b\":1}",
            60_000,
            Some(row("b", Some("R2"), "Succeeded", Some("ev-b2"))),
            ANSWERED,
        )
        .await,
    );
    t.add(
        "c insert",
        s.insert(new_key(&c, "tc", 60_000, Some("P1"))).await,
    );

    // A final state contradicted by the answer: an anomaly for a person.
    t.add(
        "c failed first",
        s.save_refund(row("c", Some("R3"), "Failed", Some("ev-c-failed")))
            .await,
    );
    t.add(
        "c contradicted",
        s.complete(
            &c,
            "tc",
            "{\"c\":1}",
            60_000,
            Some(row("c", Some("R3"), "Succeeded", Some("ev-c"))),
            ANSWERED,
        )
        .await,
    );

    // A request id claimed by another caller; the same caller's key gone and back.
    let other = key("support", "RefundService.Create", "a");
    t.add(
        "other caller",
        s.insert(new_key(&other, "to", 60_000, None)).await,
    );
    let d = refund("d");
    t.add(
        "d insert",
        s.insert(new_key(&d, "td", 60_000, Some("P2"))).await,
    );
    t.add("d delete", s.delete(&d, "td").await);
    t.add(
        "d insert again",
        s.insert(new_key(&d, "td2", 60_000, Some("P2"))).await,
    );
    // No refund id, no event.
    t.add(
        "d complete",
        s.complete(
            &d,
            "td2",
            "{\"d\":1}",
            60_000,
            Some(row("d", None, "Processing", None)),
            ANSWERED,
        )
        .await,
    );

    // A crash: the lease expires, another worker takes over, the first one's completion is
    // lost; an unknown outcome is taken over and settled by the successor.
    let e = refund("e");
    t.add("e insert", s.insert(new_key(&e, "te", 1, Some("P3"))).await);
    expire().await;
    t.add("e take over", s.take_over(&e, "te2", 60_000, "i2").await);
    t.add(
        "e lost lease",
        s.complete(
            &e,
            "te",
            "{}",
            60_000,
            Some(row("e", Some("R5"), "Succeeded", Some("ev-e0"))),
            ANSWERED,
        )
        .await,
    );
    t.add("e send", s.begin_send(&e, "te2", 5_000).await);
    t.add(
        "e unknown",
        s.mark_unknown_after_send(&e, "te2", "timed out").await,
    );
    t.add(
        "e take over unknown",
        s.take_over(&e, "te3", 60_000, "i2").await,
    );
    let adopted = Note {
        kind: HistoryKind::Adopted,
        detail: "found in the export",
    };
    t.add(
        "e adopted",
        s.complete(
            &e,
            "te3",
            "{\"e\":1}",
            60_000,
            Some(row("e", Some("R5"), "Succeeded", Some("ev-e"))),
            adopted,
        )
        .await,
    );

    // Unresolved, settled by an operator.
    let f = refund("f");
    t.add(
        "f insert",
        s.insert(new_key(&f, "tf", 60_000, Some("P4"))).await,
    );
    t.add(
        "f unresolved",
        s.mark_unresolved(&f, "tf", "two candidates").await,
    );
    let settle = SettleKey {
        key: &f,
        outcome: "{\"f\":1}",
        keep_ms: 60_000,
        refund: Some(row("f", Some("R6"), "Succeeded", Some("ev-f"))),
        actor: "caller:ops",
        reason: "checked",
        settled_as: "executed",
        refund_id: Some("R6"),
        audit_id: "audit-f",
        detail: "settled",
    };
    t.add("f settle", s.settle(settle).await);

    // The event id already stored: the number is taken, no second event.
    let g = refund("g");
    t.add("g insert", s.insert(new_key(&g, "tg", 60_000, None)).await);
    t.add(
        "g complete",
        s.complete(
            &g,
            "tg",
            "{\"g\":1}",
            60_000,
            Some(row("g", Some("R7"), "Succeeded", Some("ev-a"))),
            ANSWERED,
        )
        .await,
    );

    // READ: an Inquire refreshes a refund still processing, never attributes.
    t.add(
        "d refreshed",
        s.refresh_refund(row("d", Some("R4"), "Succeeded", Some("ev-d")))
            .await,
    );
    t.add(
        "d attributed",
        s.attributed_refund("main", Some("billing"), "d").await,
    );

    // Cancels: a key without a refund, a subscription's state with its event, only forward.
    let h = key("billing", "SubscriptionService.Cancel", "h");
    t.add("h insert", s.insert(new_key(&h, "th", 60_000, None)).await);
    t.add(
        "h accepted",
        s.save_subscription(subscription(1, "Accepted", Some("ev-h1")))
            .await,
    );
    t.add(
        "h accepted again",
        s.save_subscription(subscription(1, "Accepted", Some("ev-h1b")))
            .await,
    );
    t.add(
        "h complete",
        s.complete(&h, "th", "{\"h\":1}", 60_000, None, ANSWERED)
            .await,
    );
    t.add(
        "h confirmed",
        s.save_subscription(subscription(2, "Confirmed", Some("ev-h2")))
            .await,
    );
    t.add(
        "h late accept",
        s.save_subscription(subscription(1, "Accepted", Some("ev-h3")))
            .await,
    );
    let notice = EventRow {
        event_id: "n-1",
        account: "main",
        provider: "antom",
        kind: "REFUND_RESULT",
        payload: "{}",
        caller: None,
        signed_at: None,
        max_age_ms: 60_000,
    };
    t.add(
        "notification",
        s.record_event(
            notice,
            EventEffect::Refund(row("g", Some("R7"), "Succeeded", None)),
        )
        .await,
    );

    // KEEP: a purge with nothing past its keep time changes nothing.
    let keep = Retention {
        keys_ms: 86_400_000,
        events_ms: 86_400_000,
        anomalies_ms: 86_400_000,
    };
    t.add("purge", s.purge(keep).await);
    t.0
}

/// Every row of every table the store keeps, as text, sorted: times only as set or not
/// (each store reads its own clock), the schema's own bookkeeping left out.
type Rows = BTreeMap<String, Vec<Vec<String>>>;

fn normalized(column: &str, value: Option<String>) -> String {
    let time = column == "at" || column.ends_with("_at") || column.ends_with("_until");
    match value {
        None => "NULL".into(),
        Some(v) if time && v != "0" => "<time>".into(),
        Some(v) => v,
    }
}

/// `rows` as normalized text, sorted.
fn texts<R>(rows: &[R], columns: &[String]) -> Vec<Vec<String>>
where
    R: Row,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let mut v: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..columns.len())
                .map(|i| normalized(&columns[i], r.get::<Option<String>, _>(i)))
                .collect()
        })
        .collect();
    v.sort();
    v
}

fn select(table: &str, columns: &[String]) -> String {
    let list: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST({c} AS TEXT)"))
        .collect();
    format!("SELECT {} FROM {table}", list.join(", "))
}

fn kept(table: &str) -> bool {
    !table.starts_with("_sqlx")
        && !table.starts_with("schema_fence")
        && !table.starts_with("sqlite_")
}

async fn sqlite_rows(url: &str) -> Rows {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut c)
            .await
            .unwrap();
    let mut rows = Rows::new();
    for table in tables.into_iter().filter(|t| kept(t)) {
        let columns: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap();
        let found = sqlx::query(sqlx::AssertSqlSafe(select(&table, &columns)))
            .fetch_all(&mut c)
            .await
            .unwrap();
        rows.insert(table, texts(&found, &columns));
    }
    rows
}

async fn postgres_rows(url: &str) -> Rows {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut rows = Rows::new();
    for table in tables.into_iter().filter(|t| kept(t)) {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&table)
        .fetch_all(&mut c)
        .await
        .unwrap();
        let found = sqlx::query(sqlx::AssertSqlSafe(select(&table, &columns)))
            .fetch_all(&mut c)
            .await
            .unwrap();
        rows.insert(table, texts(&found, &columns));
    }
    rows
}

/// Both stores give the same answers and hold the same rows after every scenario.
#[tokio::test]
async fn both_stores_answer_and_write_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("d.db").display());
    let sqlite = scenarios(store::open(&sqlite_url).await.unwrap()).await;
    let db = TestDatabase::create().await;
    let postgres = scenarios(store::open(&db.url).await.unwrap()).await;
    for (s, p) in sqlite.iter().zip(&postgres) {
        assert_eq!(s, p, "the stores answered a step differently");
    }
    assert_eq!(sqlite.len(), postgres.len());

    let (s, p) = (sqlite_rows(&sqlite_url).await, postgres_rows(&db.url).await);
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        p.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    let mut compared = 0;
    for (table, rows) in &s {
        assert_eq!(
            rows, &p[table],
            "table {table} differs between SQLite and PostgreSQL"
        );
        compared += rows.len();
    }
    // The scenarios wrote what they are about (a guard against comparing two empty stores).
    for table in [
        "idempotency_keys",
        "attributions",
        "refunds",
        "events",
        "anomalies",
        "key_history",
        "audit_entries",
        "subscriptions",
        "request_claims",
    ] {
        assert!(!s[table].is_empty(), "no row in {table}");
    }
    eprintln!(
        "{} steps, {compared} rows in {} tables: the same",
        sqlite.len(),
        s.len()
    );
}
