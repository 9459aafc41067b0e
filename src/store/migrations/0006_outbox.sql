-- Schema generation 6: every change of a refund's or a subscription's state is an event, written
-- in the change's transaction (an outbox), whatever its source; a relay publishes the events.
--
-- The fence moves on: a replica of generation 5 would complete refunds without their events,
-- so from this commit on its statements that decide money fail (see 0005_fence.sql).
CREATE TABLE IF NOT EXISTS schema_fence_6 (
    id  INTEGER PRIMARY KEY
);
INSERT INTO schema_fence_6 (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
DROP TABLE IF EXISTS schema_fence_5;

-- Where an event comes from: notification (a provider's notification), answer (a Create or
-- Cancel answer, an adoption or a reconciliation), inquiry (an Inquire that found a new state),
-- operator (an operator's settle). Events stored before this generation are notifications.
ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'notification';

-- Relays of the event log to a bus: how far each has published (acknowledged by the bus), and
-- which instance relays now, until when (the store's clock). Events after the lowest
-- published_through are not purged.
CREATE TABLE IF NOT EXISTS relays (
    name               TEXT    PRIMARY KEY,
    published_through  BIGINT  NOT NULL,
    holder             TEXT    NOT NULL,
    lease_until        BIGINT  NOT NULL
);
