-- Attribution, per-payment serialization, process instances and retention by provider.
-- Every time below is Unix milliseconds on the store's own clock.

-- The process instance holding a lease, so a lease whose instance stopped heartbeating can be
-- taken over before it expires; when a key may be purged (NULL: by created_at + retention).
ALTER TABLE idempotency_keys ADD COLUMN lease_instance TEXT;
ALTER TABLE idempotency_keys ADD COLUMN keep_until BIGINT;

-- Gateway processes and their last heartbeat.
CREATE TABLE IF NOT EXISTS instances (
    instance_id   TEXT    PRIMARY KEY,
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL
);

-- On providers without an idempotency key of their own: the one refund attempt per payment
-- that is in flight or unsettled. Created with the key, removed when the key is settled.
-- started_at is the key's first attempt; last_sent_at the last time a request may have left.
CREATE TABLE IF NOT EXISTS payment_attempts (
    account       TEXT    NOT NULL,
    payment_id    TEXT    NOT NULL,
    caller        TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    started_at    BIGINT  NOT NULL,
    last_sent_at  BIGINT,
    PRIMARY KEY (account, payment_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS payment_attempts_key
    ON payment_attempts (caller, method, request_id);

-- Which provider refund belongs to which key. Written only by that key's own Create path
-- (executed, adopted, or settled by an operator), never by a read.
CREATE TABLE IF NOT EXISTS attributions (
    account       TEXT    NOT NULL,
    refund_id     TEXT    NOT NULL,
    caller        TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    payment_id    TEXT,
    created_at    BIGINT  NOT NULL,
    keep_until    BIGINT  NOT NULL,
    PRIMARY KEY (account, refund_id)
);
CREATE INDEX IF NOT EXISTS attributions_payment ON attributions (account, payment_id);
CREATE INDEX IF NOT EXISTS attributions_request ON attributions (account, request_id, caller);

-- Refunds recorded before this migration: only those whose own completed Create key names
-- the same refund id are attributions; rows that a read wrote are not carried over.
INSERT INTO attributions (account, refund_id, caller, request_id, payment_id, created_at, keep_until)
SELECT r.account, r.refund_id, k.caller, r.request_id, r.payment_id, k.created_at,
       k.created_at + 34128000000
FROM refunds r
JOIN idempotency_keys k
  ON k.method = 'RefundService.Create' AND k.request_id = r.request_id AND k.state = 'done'
 AND k.outcome LIKE '%"refund_id":"' || r.refund_id || '"%'
WHERE r.refund_id IS NOT NULL
ON CONFLICT DO NOTHING;

-- With authentication, a request id on an account belongs to the first caller that used it
-- for a method; other callers are refused instead of colliding at the provider (Antom
-- deduplicates refundRequestId per merchant, whoever sends it).
CREATE TABLE IF NOT EXISTS request_claims (
    account      TEXT    NOT NULL,
    method       TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    caller       TEXT    NOT NULL,
    keep_until   BIGINT  NOT NULL,
    payment_id   TEXT,
    PRIMARY KEY (account, method, request_id)
);
-- Refund keys stored before claims existed keep working: their recorded refunds claim their
-- request ids for the caller whose key it was.
INSERT INTO request_claims (account, method, request_id, caller, keep_until, payment_id)
SELECT DISTINCT r.account, k.method, r.request_id, k.caller, k.created_at + 34128000000, r.payment_id
FROM refunds r
JOIN idempotency_keys k ON k.method = 'RefundService.Create' AND k.request_id = r.request_id
WHERE k.state = 'done'
ON CONFLICT DO NOTHING;

-- The caller an event concerns (the claimant of the refund's request id), when known.
ALTER TABLE events ADD COLUMN caller TEXT;
