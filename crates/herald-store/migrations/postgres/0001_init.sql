-- Herald schema, PostgreSQL dialect. Timestamps are milliseconds since the Unix epoch (UTC) in
-- both stores, so the engine's SQL and clock arithmetic are the same on either.

CREATE TABLE organisations (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE contacts (
    id           BIGSERIAL PRIMARY KEY,
    org_id       BIGINT NOT NULL REFERENCES organisations(id),
    address      TEXT    NOT NULL,
    name         TEXT,
    attributes   TEXT    NOT NULL DEFAULT '{}',
    unsubscribed BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (org_id, address)
);

CREATE TABLE lists (
    id         BIGSERIAL PRIMARY KEY,
    org_id     BIGINT NOT NULL REFERENCES organisations(id),
    name       TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE list_members (
    list_id    BIGINT NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
    contact_id BIGINT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (list_id, contact_id)
);

CREATE TABLE suppressions (
    org_id     BIGINT NOT NULL REFERENCES organisations(id),
    address    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, address)
);

CREATE TABLE channels (
    id           BIGSERIAL PRIMARY KEY,
    org_id       BIGINT NOT NULL REFERENCES organisations(id),
    name         TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    config       TEXT    NOT NULL DEFAULT '{}',
    rate_per_sec DOUBLE PRECISION,
    created_at   BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE campaigns (
    id               BIGSERIAL PRIMARY KEY,
    org_id           BIGINT NOT NULL REFERENCES organisations(id),
    name             TEXT    NOT NULL,
    channel_id       BIGINT NOT NULL REFERENCES channels(id),
    list_id          BIGINT NOT NULL REFERENCES lists(id),
    body             TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN
                         ('draft','scheduled','sending','paused','completed','cancelled')),
    scheduled_at     BIGINT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    last_progress_at BIGINT,
    total            BIGINT NOT NULL DEFAULT 0,
    queued           BIGINT NOT NULL DEFAULT 0 CHECK (queued >= 0),
    in_flight        BIGINT NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    retry_wait       BIGINT NOT NULL DEFAULT 0 CHECK (retry_wait >= 0),
    sent             BIGINT NOT NULL DEFAULT 0 CHECK (sent >= 0),
    delivered        BIGINT NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    read             BIGINT NOT NULL DEFAULT 0 CHECK (read >= 0),
    undelivered      BIGINT NOT NULL DEFAULT 0 CHECK (undelivered >= 0),
    failed           BIGINT NOT NULL DEFAULT 0 CHECK (failed >= 0),
    skipped          BIGINT NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    cancelled        BIGINT NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    in_doubt         BIGINT NOT NULL DEFAULT 0 CHECK (in_doubt >= 0),
    in_doubt_total   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX campaigns_status ON campaigns (status);

CREATE TABLE messages (
    id              BIGSERIAL PRIMARY KEY,
    campaign_id     BIGINT NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    contact_id      BIGINT,
    address         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN
                        ('queued','in_flight','retry_wait','sent','delivered','read',
                         'undelivered','failed','skipped','cancelled','in_doubt')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    owner           TEXT,
    lease_until     BIGINT,
    provider_id     TEXT,
    last_error      TEXT,
    was_in_doubt    BIGINT NOT NULL DEFAULT 0,
    in_doubt_at     BIGINT,
    updated_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    UNIQUE (campaign_id, address)
);
-- Claims scan only claimable rows of one campaign, oldest due first.
CREATE INDEX messages_claimable ON messages (campaign_id, next_attempt_at, id)
    WHERE status IN ('queued', 'retry_wait');
-- In-flight rows are few (the instances' send windows): the reconciler, heartbeats and
-- completion checks find them by campaign or by owner through this small index.
CREATE INDEX messages_in_flight ON messages (campaign_id, owner) WHERE status = 'in_flight';
CREATE INDEX messages_in_doubt ON messages (campaign_id) WHERE status = 'in_doubt';
-- Receipts find their message by the provider's id.
CREATE INDEX messages_provider ON messages (provider_id) WHERE provider_id IS NOT NULL;

CREATE TABLE campaign_events (
    id          BIGSERIAL PRIMARY KEY,
    campaign_id BIGINT NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    at          BIGINT NOT NULL,
    actor       TEXT    NOT NULL,
    from_status TEXT,
    to_status   TEXT    NOT NULL,
    reason      TEXT    NOT NULL
);
CREATE INDEX campaign_events_campaign ON campaign_events (campaign_id, id);

CREATE TABLE instances (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          BIGINT NOT NULL,
    proc_start   TEXT,
    version      TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT
);

-- Receipts whose provider id is not recorded on any message yet: kept, applied later.
CREATE TABLE pending_receipts (
    id          BIGSERIAL PRIMARY KEY,
    provider_id TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    error       TEXT,
    received_at BIGINT NOT NULL
);
CREATE INDEX pending_receipts_provider ON pending_receipts (provider_id);

-- What the sandbox channel's simulated provider holds: one row per send it accepted,
-- written independently of Herald's own outcome write, as a real provider would hold it.
CREATE TABLE sandbox_received (
    id          BIGSERIAL PRIMARY KEY,
    channel_id  BIGINT NOT NULL,
    campaign_id BIGINT NOT NULL,
    message_id  BIGINT NOT NULL,
    address     TEXT    NOT NULL,
    provider_id TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX sandbox_received_channel ON sandbox_received (channel_id, campaign_id, address);

INSERT INTO organisations (name, created_at) VALUES ('default', (extract(epoch from clock_timestamp()) * 1000)::bigint);
INSERT INTO channels (org_id, name, kind, config, created_at)
    SELECT id, 'sandbox', 'sandbox', '{}', created_at FROM organisations WHERE name = 'default';
