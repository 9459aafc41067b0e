-- Provider notifications, stored once each (event_id is unique) and numbered in the order they
-- were stored: seq comes from event_counter, whose row lock serializes the writers, so a
-- reader that has seen seq N has seen every smaller seq that will ever exist.
CREATE TABLE IF NOT EXISTS event_counter (
    id             INTEGER PRIMARY KEY,
    last_seq       BIGINT  NOT NULL,
    purged_through BIGINT  NOT NULL
);
INSERT INTO event_counter (id, last_seq, purged_through) VALUES (1, 0, 0)
    ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS events (
    seq          BIGINT  PRIMARY KEY,
    event_id     TEXT    NOT NULL UNIQUE,
    account      TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    received_at  BIGINT  NOT NULL
);

-- The latest known state of each subscription, by provider account: Cancel answers and
-- provider notifications write it; SubscriptionService.Get reads it.
CREATE TABLE IF NOT EXISTS subscriptions (
    account                  TEXT    NOT NULL,
    subscription_id          TEXT    NOT NULL,
    subscription_request_id  TEXT,
    cancellation             TEXT    NOT NULL,
    record                   TEXT    NOT NULL,
    updated_at               BIGINT  NOT NULL,
    PRIMARY KEY (account, subscription_id)
);
CREATE INDEX IF NOT EXISTS subscriptions_request ON subscriptions (account, subscription_request_id);
