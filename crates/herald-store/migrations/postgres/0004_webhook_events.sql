-- Every provider webhook as it arrived (verified or not, applied or not): the raw record an
-- operator or a replay needs when a receipt or opt-out is questioned.
CREATE TABLE webhook_events (
    id          BIGSERIAL PRIMARY KEY,
    channel_id  BIGINT NOT NULL,
    kind        TEXT    NOT NULL,
    verified    BIGINT NOT NULL,
    outcome     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX webhook_events_channel ON webhook_events (channel_id, id);
