-- Idempotency keys: one row per (caller, method, request_id).
-- state: in_flight (a lease owns it), unknown (an attempt may have executed), done (outcome is final).
-- Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller       TEXT    NOT NULL,
    method       TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    lease_token  TEXT,
    lease_until  BIGINT  NOT NULL,
    attempts     INTEGER NOT NULL,
    outcome      TEXT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (caller, method, request_id)
);

CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);

-- The latest known state of each refund, by provider account and request id. Create and
-- Inquire write it; replays of Create read it.
CREATE TABLE IF NOT EXISTS refunds (
    account      TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    refund_id    TEXT,
    state        TEXT    NOT NULL,
    record       TEXT    NOT NULL,
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (account, request_id)
);
