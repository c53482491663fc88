-- One token bucket per rate-limited channel, shared by every instance: instances take
-- tokens in small grants, so the channel's rate holds across all of them. A provider's
-- 429 halves the rate for everyone (factor) and stops sends until slow_until.
CREATE TABLE channel_rate (
    channel_id   BIGINT PRIMARY KEY REFERENCES channels(id) ON DELETE CASCADE,
    tokens       DOUBLE PRECISION NOT NULL,
    updated_at   BIGINT NOT NULL,
    factor       DOUBLE PRECISION NOT NULL DEFAULT 1,
    penalized_at BIGINT NOT NULL DEFAULT 0,
    slow_until   BIGINT NOT NULL DEFAULT 0
);
