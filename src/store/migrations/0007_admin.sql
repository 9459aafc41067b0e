-- Schema generation 7: every key keeps its history, and operators' actions an audit trail,
-- each written in the transaction of the change it records.
--
-- The fence moves on: a replica of generation 6 would change keys without their history, and
-- settle without an audit entry, so from this commit on its statements that decide money
-- fail (see 0005_fence.sql).
CREATE TABLE IF NOT EXISTS schema_fence_7 (
    id  INTEGER PRIMARY KEY
);
INSERT INTO schema_fence_7 (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
DROP TABLE IF EXISTS schema_fence_6;

-- A key's life: one row per attempt and transition (created, taken_over, sent, answered,
-- adopted, unknown, unresolved, settled), numbered per key, written with the transition.
-- Goes with its key (deleted with it, purged once it is gone).
CREATE TABLE IF NOT EXISTS key_history (
    caller      TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    entry       BIGINT  NOT NULL,
    at          BIGINT  NOT NULL,
    attempt     BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    PRIMARY KEY (caller, method, request_id, entry)
);

-- Operators' actions, append-only and never purged: who (caller:<name>, os:<user>,
-- anonymous), when, what, why, and the key's state before and after.
CREATE TABLE IF NOT EXISTS audit_entries (
    audit_id      TEXT    PRIMARY KEY,
    at            BIGINT  NOT NULL,
    actor         TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    caller        TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    state_before  TEXT    NOT NULL,
    state_after   TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    refund_id     TEXT
);
CREATE INDEX IF NOT EXISTS audit_entries_key ON audit_entries (caller, method, request_id, at);
CREATE INDEX IF NOT EXISTS audit_entries_at ON audit_entries (at, audit_id);

-- The keys that are not done (few: in flight, or waiting for a retry or a person), by age, for
-- the listing operators read and the gauge every replica reads every 5 s, without a scan of
-- every completed key.
CREATE INDEX IF NOT EXISTS idempotency_keys_open ON idempotency_keys (updated_at) WHERE state <> 'done';
