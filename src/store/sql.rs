//! The SQL both stores run (`$n` placeholders work in PostgreSQL and SQLite alike), and the
//! schema's migrations. `sql_store.rs` runs it. Every state change is one
//! conditional statement (or one transaction of them), so concurrent gateways never
//! check-then-act.
//!
//! Time: every statement that compares or stores a time that two processes must agree on
//! (leases, heartbeats, quiet periods, retention) reads the database's clock, written `NOW_MS`
//! below and replaced per backend by [`render`]. No process's own clock is ever compared with
//! another's.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The versioned schema migrations, embedded in the binary.
pub(super) fn migrator() -> Migrator {
    let m = |version, name: &'static str, sql: &'static str| {
        Migration::new(
            version,
            name.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        m(
            1,
            "idempotency",
            include_str!("migrations/0001_idempotency.sql"),
        ),
        m(
            2,
            "refund payments",
            include_str!("migrations/0002_refund_payment.sql"),
        ),
        m(
            3,
            "events and subscriptions",
            include_str!("migrations/0003_events.sql"),
        ),
        m(
            4,
            "attribution, payment attempts, instances",
            include_str!("migrations/0004_attribution.sql"),
        ),
        m(
            5,
            "schema fence, forward-only states, anomalies",
            include_str!("migrations/0005_fence.sql"),
        ),
        m(
            6,
            "every state change an event (outbox), relays",
            include_str!("migrations/0006_outbox.sql"),
        ),
        m(
            SCHEMA_GENERATION,
            "key history, audit trail",
            include_str!("migrations/0007_admin.sql"),
        ),
    ])
}

/// The schema generation this release's statements are built for: the version of its last
/// migration, which creates [`FENCE_TABLE`].
pub(crate) const SCHEMA_GENERATION: i64 = 7;

/// The fence of [`SCHEMA_GENERATION`]: every statement below that changes what decides money
/// names this table, so it fails (and nothing changes) once a newer release's migration has
/// dropped it. See `migrations/0005_fence.sql`, `0006_outbox.sql` and `0007_admin.sql`.
macro_rules! fence {
    () => {
        "schema_fence_7"
    };
}

/// `AND` the fence stands.
macro_rules! fenced {
    () => {
        concat!(" AND EXISTS (SELECT 1 FROM ", fence!(), ")")
    };
}

/// The fence table's name.
pub(crate) const FENCE_TABLE: &str = fence!();

/// The database's clock in Unix milliseconds, per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Clock {
    /// `julianday('now')`.
    Sqlite,
    /// `clock_timestamp()` (not `now()`, which stands still within a transaction).
    Postgres,
}

impl Clock {
    fn expr(self) -> &'static str {
        match self {
            Clock::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Clock::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// `sql` with `NOW_MS` replaced by `clock`'s expression; rendered once per statement and
/// backend, then reused.
pub(super) fn render(clock: Clock, sql: &'static str) -> &'static str {
    if !sql.contains("NOW_MS") {
        return sql;
    }
    type Cache = RwLock<HashMap<(Clock, usize), &'static str>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = (clock, sql.as_ptr() as usize);
    if let Some(s) = cache.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return s;
    }
    let mut w = cache.write().unwrap_or_else(|e| e.into_inner());
    w.entry(id)
        .or_insert_with(|| sql.replace("NOW_MS", clock.expr()).leak())
}

/// A lease whose instance has not heartbeat for this long is dead and may be taken over (its
/// outcome is unknown, so it is settled first): six missed beats of the 250 ms heartbeat. The
/// SQL below carries the same literal.
pub const INSTANCE_STALE: std::time::Duration = std::time::Duration::from_millis(1500);

/// A lease is dead once it expired, or once its instance stopped heartbeating for
/// [`INSTANCE_STALE`] (1,500 ms; the literal below). An instance that never heartbeat (a
/// process that does not serve) is judged by expiry alone.
macro_rules! lease_dead {
    () => {
        "(lease_until <= NOW_MS OR EXISTS (SELECT 1 FROM instances i \
           WHERE i.instance_id = idempotency_keys.lease_instance AND i.heartbeat_at <= NOW_MS - 1500))"
    };
}

pub(super) const NOW: &str = "SELECT NOW_MS";

pub(super) const INSERT: &str = concat!(
    "INSERT INTO idempotency_keys \
     (caller, method, request_id, fingerprint, state, lease, lease_until, attempts, created_at, updated_at, lease_instance) \
     SELECT $1, $2, $3, $4, 'in_flight', $5, NOW_MS + $6, 1, NOW_MS, NOW_MS, $7 FROM ",
    fence!(),
    " WHERE true ON CONFLICT (caller, method, request_id) DO NOTHING"
);

/// Claims the request id on the account for the key's caller (same transaction as the key).
pub(super) const CLAIM_REQUEST: &str = concat!(
    "INSERT INTO request_claims \
     (account, method, request_id, caller, keep_until, payment_id) \
     SELECT $1, $2, $3, $4, NOW_MS + $5, $6 FROM ",
    fence!(),
    " WHERE true ON CONFLICT DO NOTHING"
);

/// Who claimed a request id on an account for a method, and the payment of a refund key.
pub(super) const CLAIMANT: &str = "SELECT caller, payment_id FROM request_claims \
     WHERE account = $1 AND method = $2 AND request_id = $3";

pub(super) const PURGE_CLAIMS: &str = "DELETE FROM request_claims WHERE keep_until < NOW_MS";

/// Claims the payment for the key just inserted (same transaction).
pub(super) const CLAIM_PAYMENT: &str = concat!(
    "INSERT INTO payment_attempts \
     (account, payment_id, caller, method, request_id, started_at, last_sent_at) \
     SELECT $4, $5, $1, $2, $3, NOW_MS, NULL FROM ",
    fence!(),
    " WHERE true ON CONFLICT DO NOTHING"
);

/// Claims the payment for a key that predates payment attempts, from its own row.
pub(super) const CLAIM_PAYMENT_FOR_OLD_KEY: &str = concat!(
    "INSERT INTO payment_attempts \
     (account, payment_id, caller, method, request_id, started_at, last_sent_at) \
     SELECT $4, $5, caller, method, request_id, created_at, updated_at FROM idempotency_keys \
     WHERE caller = $1 AND method = $2 AND request_id = $3",
    fenced!(),
    " ON CONFLICT DO NOTHING"
);

/// The key's payment attempt: when it started, when a request last may have left, and now.
pub(super) const LOAD_ATTEMPT: &str = "SELECT started_at, last_sent_at, NOW_MS FROM payment_attempts \
     WHERE caller = $1 AND method = $2 AND request_id = $3";

/// Marks that a request is about to leave and may leave until `$5` ms from now (the quiet
/// period counts from then), only while `$4` holds the key's live lease.
pub(super) const BEGIN_SEND: &str = concat!(
    "UPDATE payment_attempts SET last_sent_at = NOW_MS + $5 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND EXISTS (SELECT 1 FROM idempotency_keys k \
       WHERE k.caller = $1 AND k.method = $2 AND k.request_id = $3 AND k.state = 'in_flight' \
         AND k.lease = $4 AND k.lease_until > NOW_MS)",
    fenced!()
);

/// The attempt's request has ended: nothing of it leaves after now.
pub(super) const END_SEND: &str = concat!(
    "UPDATE payment_attempts SET last_sent_at = NOW_MS \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND last_sent_at > NOW_MS",
    fenced!()
);

pub(super) const RELEASE_PAYMENT: &str = concat!(
    "DELETE FROM payment_attempts WHERE caller = $1 AND method = $2 AND request_id = $3",
    fenced!()
);

/// The key, whether its lease is live, how long it has left, all by the store's clock.
pub(super) const LOAD: &str = concat!(
    "SELECT fingerprint, state, lease_until - NOW_MS, outcome, \
       CAST(CASE WHEN state = 'in_flight' AND NOT ",
    lease_dead!(),
    " THEN 1 ELSE 0 END AS BIGINT) \
     FROM idempotency_keys WHERE caller = $1 AND method = $2 AND request_id = $3"
);

/// Takes over a key whose earlier attempt ended unknown or whose lease is dead.
pub(super) const TAKE_OVER: &str = concat!(
    "UPDATE idempotency_keys \
     SET state = 'in_flight', lease = $4, lease_until = NOW_MS + $5, lease_instance = $6, \
       attempts = attempts + 1, updated_at = NOW_MS \
     WHERE caller = $1 AND method = $2 AND request_id = $3 \
       AND (state = 'unknown' OR (state = 'in_flight' AND ",
    lease_dead!(),
    "))",
    fenced!()
);

pub(super) const COMPLETE: &str = concat!(
    "UPDATE idempotency_keys \
     SET state = 'done', outcome = $5, lease = NULL, lease_until = 0, updated_at = NOW_MS, \
       keep_until = NOW_MS + $6 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease = $4 AND state = 'in_flight'",
    fenced!()
);

pub(super) const MARK_UNKNOWN: &str = concat!(
    "UPDATE idempotency_keys \
     SET state = 'unknown', lease = NULL, lease_until = 0, updated_at = NOW_MS \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease = $4",
    fenced!()
);

pub(super) const MARK_UNRESOLVED: &str = concat!(
    "UPDATE idempotency_keys \
     SET state = 'unresolved', lease = NULL, lease_until = 0, updated_at = NOW_MS \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease = $4",
    fenced!()
);

/// An operator settles a key that needs a person (unknown or unresolved: no lease), still in
/// the state `$6` it was read in.
pub(super) const SETTLE: &str = concat!(
    "UPDATE idempotency_keys \
     SET state = 'done', outcome = $4, lease = NULL, lease_until = 0, updated_at = NOW_MS, \
       keep_until = NOW_MS + $5 \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND state = $6 \
       AND state IN ('unknown', 'unresolved')",
    fenced!()
);

/// Records a step in the key's life, numbered after its last, with the key's attempt (same
/// transaction as the step; the key's row, changed first, orders the writers).
pub(super) const RECORD_HISTORY: &str = concat!(
    "INSERT INTO key_history (caller, method, request_id, entry, at, attempt, kind, detail) \
     SELECT caller, method, request_id, \
       COALESCE((SELECT MAX(h.entry) FROM key_history h \
         WHERE h.caller = $1 AND h.method = $2 AND h.request_id = $3), 0) + 1, \
       NOW_MS, attempts, $4, $5 \
     FROM idempotency_keys WHERE caller = $1 AND method = $2 AND request_id = $3",
    fenced!()
);

/// The account a key's request id was claimed on.
pub(super) const CLAIM_OF_KEY: &str = "SELECT account FROM request_claims \
     WHERE caller = $1 AND method = $2 AND request_id = $3 LIMIT 1";

/// A key's history goes with the key.
pub(super) const DELETE_HISTORY: &str = concat!(
    "DELETE FROM key_history WHERE caller = $1 AND method = $2 AND request_id = $3",
    fenced!()
);

/// Histories of keys that are gone.
pub(super) const PURGE_HISTORY: &str = "DELETE FROM key_history WHERE NOT EXISTS \
     (SELECT 1 FROM idempotency_keys k WHERE k.caller = key_history.caller \
       AND k.method = key_history.method AND k.request_id = key_history.request_id)";

/// An operator's action (same transaction as the action).
pub(super) const INSERT_AUDIT: &str = concat!(
    "INSERT INTO audit_entries (audit_id, at, actor, action, account, caller, method, request_id, \
       reason, state_before, state_after, outcome, refund_id) \
     SELECT $1, NOW_MS, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM ",
    fence!(),
    " WHERE true"
);

/// A key as operators see it: columns, then `FROM` (the key, its claim), for a `WHERE`.
macro_rules! key_view {
    () => {
        concat!(
            "SELECT idempotency_keys.caller, idempotency_keys.method, idempotency_keys.request_id, \
               state, CAST(attempts AS BIGINT), created_at, updated_at, COALESCE(c.account, ''), \
               c.payment_id, \
               (SELECT a.refund_id FROM attributions a WHERE a.account = c.account \
                 AND a.request_id = idempotency_keys.request_id AND a.caller = idempotency_keys.caller \
                 ORDER BY a.created_at LIMIT 1), \
               (SELECT h.detail FROM key_history h WHERE h.caller = idempotency_keys.caller \
                 AND h.method = idempotency_keys.method AND h.request_id = idempotency_keys.request_id \
                 AND h.kind IN ('unknown', 'unresolved') ORDER BY h.entry DESC LIMIT 1), \
               CAST(CASE WHEN state = 'in_flight' AND NOT ",
            lease_dead!(),
            " THEN 1 ELSE 0 END AS BIGINT), \
               CAST(CASE WHEN EXISTS (SELECT 1 FROM payment_attempts p \
                 WHERE p.caller = idempotency_keys.caller AND p.method = idempotency_keys.method \
                   AND p.request_id = idempotency_keys.request_id) THEN 1 ELSE 0 END AS BIGINT), \
               idempotency_keys.outcome \
             FROM idempotency_keys LEFT JOIN request_claims c ON c.method = idempotency_keys.method \
               AND c.request_id = idempotency_keys.request_id AND c.caller = idempotency_keys.caller"
        )
    };
}

/// One key as operators see it.
pub(super) const KEY_VIEW: &str = concat!(
    key_view!(),
    " WHERE idempotency_keys.caller = $1 AND idempotency_keys.method = $2 \
       AND idempotency_keys.request_id = $3"
);

/// The filters of a key listing: `$1` the states (`,a,b,`), `$2` the account (empty: any),
/// `$3` the payment (empty: any), `$4` the minimum age (ms), `$5`..`$8` the last key of the
/// previous page (`updated_at`, caller, method, request id), `$9` the page size.
macro_rules! key_filters {
    () => {
        " AND $1 LIKE '%,' || state || ',%' \
           AND ($2 = '' OR c.account = $2) AND ($3 = '' OR c.payment_id = $3) \
           AND updated_at <= NOW_MS - $4 \
           AND (updated_at, idempotency_keys.caller, idempotency_keys.method, idempotency_keys.request_id) \
             < ($5, $6, $7, $8) \
         ORDER BY updated_at DESC, idempotency_keys.caller DESC, idempotency_keys.method DESC, \
           idempotency_keys.request_id DESC LIMIT $9"
    };
}

/// Keys that are not done (the partial index `idempotency_keys_open`), by the filters.
pub(super) const LIST_OPEN_KEYS: &str =
    concat!(key_view!(), " WHERE state <> 'done'", key_filters!());

/// Keys in any state, by the filters.
pub(super) const LIST_KEYS: &str = concat!(key_view!(), " WHERE true", key_filters!());

/// A key's history, oldest first.
pub(super) const KEY_HISTORY: &str = "SELECT at, attempt, kind, detail FROM key_history \
     WHERE caller = $1 AND method = $2 AND request_id = $3 ORDER BY entry";

/// Operators' actions, oldest first: `$1` 1 to filter by the key `$2`..`$4`; after (`$5`,
/// `$6`); at most `$7`.
pub(super) const LIST_AUDIT: &str = "SELECT audit_id, at, actor, action, account, caller, method, \
       request_id, reason, state_before, state_after, outcome, refund_id FROM audit_entries \
     WHERE ($1 = 0 OR (caller = $2 AND method = $3 AND request_id = $4)) \
       AND (at, audit_id) > ($5, $6) ORDER BY at, audit_id LIMIT $7";

/// Which refund belongs to the key (written with its completion).
pub(super) const ATTRIBUTE: &str = concat!(
    "INSERT INTO attributions \
     (account, refund_id, caller, request_id, payment_id, created_at, keep_until) \
     SELECT $1, $2, $3, $4, $5, NOW_MS, NOW_MS + $6 FROM ",
    fence!(),
    " WHERE true ON CONFLICT DO NOTHING"
);

/// Who a refund is attributed to.
pub(super) const ATTRIBUTED_TO: &str =
    "SELECT caller, request_id FROM attributions WHERE account = $1 AND refund_id = $2";

pub(super) const KNOWN_REFUNDS: &str =
    "SELECT refund_id FROM attributions WHERE account = $1 AND payment_id = $2";

/// The refund attributed to a caller's request id.
pub(super) const ATTRIBUTED_REFUND: &str = "SELECT refund_id FROM attributions \
     WHERE account = $1 AND request_id = $2 AND caller = $3";

/// The refund attributed to a request id, whoever's (request ids are claimed per account).
pub(super) const ATTRIBUTED_REFUND_ANY_CALLER: &str = "SELECT refund_id FROM attributions \
     WHERE account = $1 AND request_id = $2 ORDER BY created_at LIMIT 1";

/// Deletes a key whose attempt executed nothing.
pub(super) const DELETE: &str = concat!(
    "DELETE FROM idempotency_keys \
     WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease = $4",
    fenced!()
);

/// Completed keys past their keep time (`$1` = the default retention, for older keys).
pub(super) const PURGE: &str = "DELETE FROM idempotency_keys WHERE state = 'done' \
     AND ((keep_until IS NULL AND created_at < NOW_MS - $1) OR keep_until < NOW_MS)";

pub(super) const PURGE_ATTRIBUTIONS: &str = "DELETE FROM attributions WHERE keep_until < NOW_MS";

pub(super) const PURGE_REFUNDS: &str =
    "DELETE FROM refunds WHERE updated_at < NOW_MS - $1 AND refund_state <> 'Processing'";

/// Instances silent for a day.
pub(super) const PURGE_INSTANCES: &str =
    "DELETE FROM instances WHERE heartbeat_at < NOW_MS - 86400000";

pub(super) const HEARTBEAT: &str = "INSERT INTO instances (instance_id, started_at, heartbeat_at) \
     VALUES ($1, NOW_MS, NOW_MS) \
     ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at";

/// Records a refund's state. States only move forward: PROCESSING to a final state, and a
/// final state never changes (a record of the same state may gain the refund id). Whether a
/// write that changed nothing contradicts the recorded state is read with
/// [`REFUND_STATE`] in the same transaction.
pub(super) const SAVE_REFUND: &str = concat!(
    "INSERT INTO refunds (account, request_id, refund_id, refund_state, record, updated_at, payment_id) \
     SELECT $1, $2, $3, $4, $5, NOW_MS, $6 FROM ",
    fence!(),
    " WHERE true \
     ON CONFLICT (account, request_id) DO UPDATE SET \
       refund_id = COALESCE(excluded.refund_id, refunds.refund_id), \
       payment_id = COALESCE(excluded.payment_id, refunds.payment_id), \
       refund_state = excluded.refund_state, record = excluded.record, updated_at = excluded.updated_at \
     WHERE (refunds.refund_state = 'Processing' OR refunds.refund_state = excluded.refund_state) \
       AND (refunds.refund_state <> excluded.refund_state OR refunds.refund_id IS NULL)"
);

/// A refund's recorded state.
pub(super) const REFUND_STATE: &str =
    "SELECT refund_state FROM refunds WHERE account = $1 AND request_id = $2";

/// A report the gateway did not act on, for a person (one row per report).
pub(super) const INSERT_ANOMALY: &str = concat!(
    "INSERT INTO anomalies \
     (anomaly_id, account, provider, kind, subject, recorded, reported, detail, created_at) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, NOW_MS FROM ",
    fence!(),
    " WHERE true ON CONFLICT (anomaly_id) DO NOTHING"
);

/// What a read (Inquire) learned of a refund: it refreshes the recorded state of the request
/// the refund is recorded under, and never records a refund under a request id (the
/// `refund_id` column). A refund still processing takes what the read learned of it (its
/// provider id, say) into its record, which replays answer; a final state never changes.
pub(super) const REFRESH_REFUND: &str = concat!(
    "UPDATE refunds SET refund_state = $4, record = $5, updated_at = NOW_MS \
     WHERE account = $1 AND request_id = $2 AND (refund_id = $3 OR refund_id IS NULL) \
       AND refund_state = 'Processing' AND ($4 <> 'Processing' OR record <> $5)",
    fenced!()
);

pub(super) const LOAD_REFUND: &str =
    "SELECT record FROM refunds WHERE account = $1 AND request_id = $2";

/// Takes the next event number; the row lock it holds until commit orders the writers.
pub(super) const NEXT_EVENT_SEQ: &str = concat!(
    "UPDATE event_sequence SET last_seq = last_seq + 1 WHERE id = 1",
    fenced!(),
    " RETURNING last_seq"
);

/// Whether an event with this id is stored.
pub(super) const EVENT_SEEN: &str = "SELECT seq FROM events WHERE event_id = $1";

pub(super) const INSERT_EVENT: &str = concat!(
    "INSERT INTO events \
     (seq, event_id, account, provider, kind, payload, received_at, caller, source) \
     SELECT $1, $2, $3, $4, $5, $6, NOW_MS, $7, $8 FROM ",
    fence!(),
    " WHERE true ON CONFLICT (event_id) DO NOTHING"
);

pub(super) const EVENTS_AFTER: &str = "SELECT seq, event_id, account, provider, kind, payload, received_at, caller, source \
     FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";

pub(super) const EVENT_COUNTER: &str =
    "SELECT last_seq, purged_through FROM event_sequence WHERE id = 1";

/// Moves the purge mark to the newest event received before the retention that every relay
/// active within the retention has published: an event is not purged unpublished.
pub(super) const MARK_EVENTS_PURGED: &str = "UPDATE event_sequence SET purged_through = \
     COALESCE((SELECT MAX(seq) FROM events WHERE received_at < NOW_MS - $1 \
       AND seq <= COALESCE((SELECT MIN(published_through) FROM relays \
         WHERE lease_until > NOW_MS - $1), seq)), purged_through) WHERE id = 1";

/// Takes or renews a relay's lease: when it is free, expired, or this instance's.
pub(super) const RELAY_CLAIM: &str = concat!(
    "INSERT INTO relays (name, published_through, holder, lease_until) \
     SELECT $1, 0, $2, NOW_MS + $3 FROM ",
    fence!(),
    " WHERE true \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
     WHERE relays.holder = excluded.holder OR relays.lease_until < NOW_MS \
     RETURNING published_through"
);

/// Moves a relay's published mark forward, while the instance holds its live lease.
pub(super) const RELAY_ADVANCE: &str = concat!(
    "UPDATE relays SET published_through = $3 \
     WHERE name = $1 AND holder = $2 AND lease_until >= NOW_MS AND published_through < $3",
    fenced!()
);

/// A relay's published mark (0 before it first ran), the newest event, the oldest unpublished
/// event's time, and the store's now.
pub(super) const RELAY_LAG: &str = "SELECT p.through, \
       (SELECT last_seq FROM event_sequence WHERE id = 1), \
       (SELECT MIN(received_at) FROM events WHERE seq > p.through), NOW_MS \
     FROM (SELECT COALESCE((SELECT published_through FROM relays WHERE name = $1), 0) AS through) p";

pub(super) const PURGE_EVENTS: &str =
    "DELETE FROM events WHERE seq <= (SELECT purged_through FROM event_sequence WHERE id = 1)";

pub(super) const PURGE_ANOMALIES: &str = "DELETE FROM anomalies WHERE created_at < NOW_MS - $1";

/// Records a subscription's state in one conditional write: its cancellation stage never goes
/// down (a confirmed cancellation stays confirmed, TERMINATE dominates CANCEL), whatever
/// order the Cancel answer and the provider's notifications arrive in.
macro_rules! save_subscription {
    () => {
        concat!(
            "INSERT INTO subscriptions \
             (account, subscription_id, subscription_request_id, cancellation, record, updated_at, stage) \
             SELECT $1, $2, $3, $4, $5, NOW_MS, $6 FROM ",
            fence!(),
            " WHERE true \
             ON CONFLICT (account, subscription_id) DO UPDATE SET \
               subscription_request_id = COALESCE(excluded.subscription_request_id, subscriptions.subscription_request_id), \
               cancellation = excluded.cancellation, record = excluded.record, updated_at = excluded.updated_at, \
               stage = excluded.stage \
             WHERE excluded.stage >= subscriptions.stage"
        )
    };
}

pub(super) const SAVE_SUBSCRIPTION: &str = save_subscription!();

/// A subscription's recorded cancellation stage.
pub(super) const SUBSCRIPTION_STAGE: &str =
    "SELECT stage FROM subscriptions WHERE account = $1 AND subscription_id = $2";

/// Keys that need a settle or a person, by account and state, with the oldest one's last
/// change and the store's now.
pub(super) const NEEDING_ATTENTION: &str = "SELECT COALESCE(c.account, ''), k.state, COUNT(*), \
       MIN(k.updated_at), NOW_MS \
     FROM idempotency_keys k LEFT JOIN request_claims c \
       ON c.method = k.method AND c.request_id = k.request_id AND c.caller = k.caller \
     WHERE k.state <> 'done' AND k.state IN ('unknown', 'unresolved') \
     GROUP BY COALESCE(c.account, ''), k.state";

/// A subscription's recorded stage and cancellation.
pub(super) const SUBSCRIPTION_STATE: &str =
    "SELECT stage, cancellation FROM subscriptions WHERE account = $1 AND subscription_id = $2";

/// By subscription id, or, when that is empty, by the merchant's subscription id.
pub(super) const LOAD_SUBSCRIPTION: &str = "SELECT record, updated_at FROM subscriptions \
     WHERE account = $1 AND ((subscription_id = $2) OR ($2 = '' AND subscription_request_id = $3)) \
     ORDER BY updated_at DESC LIMIT 1";

// ---------------------------------------------------------------- one statement per hot write
//
// PostgreSQL only (data-modifying `WITH`; SQLite has none, and its group commit makes a
// write's statements cheap). The three writes every first call and every Cancel make, each
// as one statement: one round trip, and the event counter's row lock (`NEXT_EVENT_SEQ`) held
// only while the server runs the statement and commits it, never across a round trip to the
// gateway. Each statement applies only in the case it is written for, a fresh row where
// `sql_store.rs`'s transaction would find one; in every other case it fails with
// [`FALLBACK`] in its text, having changed nothing (one statement is one transaction), and
// that transaction, the one place the rules are written, decides. `tests/differential.rs`
// drives both stores through the same scenarios and compares every row.

/// The marker of a one-statement write that left the case to the transaction: the text its
/// statement fails to read as a number (`22P02`), so the whole statement is undone.
pub(super) const FALLBACK: &str = "paygate_fallback";

/// `InsertKey` in one statement: the key, its request-id claim and, `$11` = 1, its payment
/// (`$12`, `$13`). Answers 1 (created) or 0 (the key exists, nothing written); a claim or a
/// payment held by another key falls back.
pub(super) const INSERT_KEY_ONE: &str = concat!(
    "WITH ins AS (INSERT INTO idempotency_keys \
       (caller, method, request_id, fingerprint, state, lease, lease_until, attempts, created_at, updated_at, lease_instance) \
       SELECT $1, $2, $3, $4, 'in_flight', $5, NOW_MS + $6, 1, NOW_MS, NOW_MS, $7 FROM ",
    fence!(),
    " WHERE true ON CONFLICT (caller, method, request_id) DO NOTHING RETURNING 1 AS one), \
     cl AS (INSERT INTO request_claims (account, method, request_id, caller, keep_until, payment_id) \
       SELECT $8, $2, $3, $1, NOW_MS + $9, $10 FROM ins ON CONFLICT DO NOTHING RETURNING 1 AS one), \
     pay AS (INSERT INTO payment_attempts \
       (account, payment_id, caller, method, request_id, started_at, last_sent_at) \
       SELECT $12, $13, $1, $2, $3, NOW_MS, NULL FROM ins WHERE $11 = 1 \
       ON CONFLICT DO NOTHING RETURNING 1 AS one) \
     SELECT CAST(CASE \
       WHEN NOT EXISTS (SELECT 1 FROM ins) THEN '0' \
       WHEN NOT EXISTS (SELECT 1 FROM cl) OR ($11 = 1 AND NOT EXISTS (SELECT 1 FROM pay)) \
         THEN 'paygate_fallback' \
       ELSE '1' END AS BIGINT)"
);

/// `Finish` of `COMPLETE` in one statement: the key done under its lease (`$1`-`$6` as
/// `COMPLETE`), and with it, `$7` = 1, its refund (`$8` account, `$9` request id, `$10`
/// refund id, `$11` state, `$12` record, `$13` payment), attributed to it when it has an id;
/// `$14` = 1, the event of the change (`$15` id, `$16` provider, `$17` payload, `$18`
/// caller, `$19` source); and the payment's release. Answers 1 (done) or 0 (the lease is
/// gone, nothing written); a refund already recorded or attributed falls back.
pub(super) const COMPLETE_ONE: &str = concat!(
    "WITH k AS (UPDATE idempotency_keys \
       SET state = 'done', outcome = $5, lease = NULL, lease_until = 0, updated_at = NOW_MS, \
         keep_until = NOW_MS + $6 \
       WHERE caller = $1 AND method = $2 AND request_id = $3 AND lease = $4 AND state = 'in_flight'",
    fenced!(),
    " RETURNING 1 AS one), \
     att AS (INSERT INTO attributions \
       (account, refund_id, caller, request_id, payment_id, created_at, keep_until) \
       SELECT $8, $10, $1, $3, $13, NOW_MS, NOW_MS + $6 FROM k WHERE $7 = 1 AND $10 IS NOT NULL \
       ON CONFLICT DO NOTHING RETURNING 1 AS one), \
     ref AS (INSERT INTO refunds \
       (account, request_id, refund_id, refund_state, record, updated_at, payment_id) \
       SELECT $8, $9, $10, $11, $12, NOW_MS, $13 FROM k WHERE $7 = 1 \
       ON CONFLICT DO NOTHING RETURNING 1 AS one), \
     seq AS (UPDATE event_sequence SET last_seq = last_seq + 1 \
       WHERE id = 1 AND $14 = 1 AND EXISTS (SELECT 1 FROM ref) RETURNING last_seq), \
     ev AS (INSERT INTO events \
       (seq, event_id, account, provider, kind, payload, received_at, caller, source) \
       SELECT last_seq, $15, $8, $16, '', $17, NOW_MS, $18, $19 FROM seq \
       ON CONFLICT (event_id) DO NOTHING RETURNING 1 AS one), \
     rel AS (DELETE FROM payment_attempts \
       WHERE caller = $1 AND method = $2 AND request_id = $3 AND EXISTS (SELECT 1 FROM k) \
       RETURNING 1 AS one) \
     SELECT CAST(CASE \
       WHEN NOT EXISTS (SELECT 1 FROM k) THEN '0' \
       WHEN ($7 = 1 AND $10 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM att)) \
         OR ($7 = 1 AND NOT EXISTS (SELECT 1 FROM ref)) THEN 'paygate_fallback' \
       ELSE '1' END AS BIGINT)"
);

/// `SaveSubscription` in one statement (`$1`-`$6` as `SAVE_SUBSCRIPTION`): the state, and
/// with it, `$7` = 1, the event of its change (`$8` id, `$9` provider, `$10` payload, `$11`
/// caller, `$12` source) when it changed the stage or the cancellation. Answers 1 (written)
/// or 0 (a further stage is recorded).
pub(super) const SAVE_SUBSCRIPTION_ONE: &str = concat!(
    "WITH before AS (SELECT stage, cancellation FROM subscriptions \
       WHERE account = $1 AND subscription_id = $2), \
     sv AS (",
    save_subscription!(),
    " RETURNING 1 AS one), \
     seq AS (UPDATE event_sequence SET last_seq = last_seq + 1 \
       WHERE id = 1 AND $7 = 1 AND EXISTS (SELECT 1 FROM sv) \
         AND NOT EXISTS (SELECT 1 FROM before WHERE stage = $6 AND cancellation = $4) \
       RETURNING last_seq), \
     ev AS (INSERT INTO events \
       (seq, event_id, account, provider, kind, payload, received_at, caller, source) \
       SELECT last_seq, $8, $1, $9, '', $10, NOW_MS, $11, $12 FROM seq \
       ON CONFLICT (event_id) DO NOTHING RETURNING 1 AS one) \
     SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM sv) THEN 1 ELSE 0 END AS BIGINT)"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement that changes what decides money names the fence of this release's
    /// schema generation, so the next release's migration can revoke it.
    #[test]
    fn every_write_that_decides_money_names_the_fence() {
        for (name, sql) in [
            ("INSERT", INSERT),
            ("CLAIM_REQUEST", CLAIM_REQUEST),
            ("CLAIM_PAYMENT", CLAIM_PAYMENT),
            ("CLAIM_PAYMENT_FOR_OLD_KEY", CLAIM_PAYMENT_FOR_OLD_KEY),
            ("BEGIN_SEND", BEGIN_SEND),
            ("END_SEND", END_SEND),
            ("RELEASE_PAYMENT", RELEASE_PAYMENT),
            ("TAKE_OVER", TAKE_OVER),
            ("COMPLETE", COMPLETE),
            ("MARK_UNKNOWN", MARK_UNKNOWN),
            ("MARK_UNRESOLVED", MARK_UNRESOLVED),
            ("SETTLE", SETTLE),
            ("RECORD_HISTORY", RECORD_HISTORY),
            ("DELETE_HISTORY", DELETE_HISTORY),
            ("INSERT_AUDIT", INSERT_AUDIT),
            ("ATTRIBUTE", ATTRIBUTE),
            ("DELETE", DELETE),
            ("SAVE_REFUND", SAVE_REFUND),
            ("INSERT_ANOMALY", INSERT_ANOMALY),
            ("REFRESH_REFUND", REFRESH_REFUND),
            ("NEXT_EVENT_SEQ", NEXT_EVENT_SEQ),
            ("INSERT_EVENT", INSERT_EVENT),
            ("SAVE_SUBSCRIPTION", SAVE_SUBSCRIPTION),
            ("RELAY_CLAIM", RELAY_CLAIM),
            ("RELAY_ADVANCE", RELAY_ADVANCE),
            ("INSERT_KEY_ONE", INSERT_KEY_ONE),
            ("COMPLETE_ONE", COMPLETE_ONE),
            ("SAVE_SUBSCRIPTION_ONE", SAVE_SUBSCRIPTION_ONE),
        ] {
            assert!(
                sql.contains(FENCE_TABLE),
                "{name} does not name {FENCE_TABLE}"
            );
        }
    }

    /// The one statements that can leave a case to the transaction fail with the marker the
    /// writer recognises (`writer.rs`), and only by reading it as a number (`22P02`).
    #[test]
    fn the_one_statements_fall_back_with_the_marker() {
        for sql in [INSERT_KEY_ONE, COMPLETE_ONE] {
            assert!(sql.contains(&format!("THEN '{FALLBACK}'")));
            assert!(sql.contains("AS BIGINT)"));
        }
        assert!(
            !SAVE_SUBSCRIPTION_ONE.contains(FALLBACK),
            "it has no case to leave"
        );
    }

    /// The fence is the table of the last migration's generation, and that migration
    /// creates it.
    #[test]
    fn the_fence_is_the_last_migrations() {
        let last = migrator().iter().map(|m| m.version).max().unwrap();
        assert_eq!(last, SCHEMA_GENERATION);
        assert_eq!(FENCE_TABLE, format!("schema_fence_{SCHEMA_GENERATION}"));
        let m = migrator()
            .iter()
            .find(|m| m.version == last)
            .unwrap()
            .clone();
        assert!(
            m.sql
                .as_ref()
                .contains(&format!("CREATE TABLE IF NOT EXISTS {FENCE_TABLE}"))
        );
    }

    #[test]
    fn the_stale_literal_is_the_documented_constant() {
        assert_eq!(super::INSTANCE_STALE.as_millis(), 1500);
        assert!(super::LOAD.contains("NOW_MS - 1500"));
        assert!(super::TAKE_OVER.contains("NOW_MS - 1500"));
    }
}
