-- Schema generation 5: replicas of other releases are fenced, states only move forward, and
-- anomalies are recorded.
--
-- The fence. Every statement of this release that changes what decides money (keys, payment
-- attempts, attributions, claims, refund and subscription states, events) names the table of
-- the generation it was built for, schema_fence_5. The release that next changes what those
-- statements mean drops it (and creates its own) in its migration, the same transaction that
-- changes the schema: from its commit on, every such statement of this release fails, so a
-- replica of this release still serving during a rolling update stops deciding money at once
-- (it still replays completed keys) instead of acting on rules the schema no longer has.
CREATE TABLE IF NOT EXISTS schema_fence_5 (
    id  INTEGER PRIMARY KEY
);
INSERT INTO schema_fence_5 (id) VALUES (1) ON CONFLICT (id) DO NOTHING;

-- Releases from before the fence are fenced by renaming what their transitions use: their key
-- transitions all name lease_token; their notifications take numbers from event_counter;
-- their refund-state writes (Inquire) name refunds.state.
ALTER TABLE idempotency_keys RENAME COLUMN lease_token TO lease;
ALTER TABLE event_counter RENAME TO event_sequence;
ALTER TABLE refunds RENAME COLUMN state TO refund_state;

-- How far a subscription's cancellation has gone; a write never lowers it:
-- 0 none, 1 cancel accepted, 2 cancel confirmed, 3 terminate accepted, 4 terminated.
ALTER TABLE subscriptions ADD COLUMN stage BIGINT NOT NULL DEFAULT 0;
UPDATE subscriptions SET stage =
    CASE
        WHEN record LIKE '%"cancellation_type":"Terminate"%' OR record LIKE '%"state":"TERMINATED"%'
            THEN CASE WHEN cancellation = 'Confirmed' OR record LIKE '%"state":"TERMINATED"%' THEN 4 ELSE 3 END
        WHEN cancellation = 'Confirmed' THEN 2
        WHEN cancellation = 'Accepted' THEN 1
        ELSE 0
    END;

-- Reports the gateway did not act on because they contradict a final state (a refund
-- recorded SUCCEEDED reported FAIL): for a person to look at. One row per report.
CREATE TABLE IF NOT EXISTS anomalies (
    anomaly_id   TEXT    PRIMARY KEY,
    account      TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    recorded     TEXT    NOT NULL,
    reported     TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS anomalies_created ON anomalies (created_at);
