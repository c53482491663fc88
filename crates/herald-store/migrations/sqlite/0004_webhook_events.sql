-- Every provider webhook as it arrived (verified or not, applied or not): the raw record an
-- operator or a replay needs when a receipt or opt-out is questioned.
CREATE TABLE webhook_events (
    id          INTEGER PRIMARY KEY,
    channel_id  INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    verified    INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX webhook_events_channel ON webhook_events (channel_id, id);
