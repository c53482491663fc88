-- Herald schema, SQLite dialect. Timestamps are milliseconds since the Unix epoch (UTC) in
-- both stores, so the engine's SQL and clock arithmetic are the same on either.

CREATE TABLE organisations (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE contacts (
    id           INTEGER PRIMARY KEY,
    org_id       INTEGER NOT NULL REFERENCES organisations(id),
    address      TEXT    NOT NULL,
    name         TEXT,
    attributes   TEXT    NOT NULL DEFAULT '{}',
    unsubscribed INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (org_id, address)
);

CREATE TABLE lists (
    id         INTEGER PRIMARY KEY,
    org_id     INTEGER NOT NULL REFERENCES organisations(id),
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE list_members (
    list_id    INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (list_id, contact_id)
);

CREATE TABLE suppressions (
    org_id     INTEGER NOT NULL REFERENCES organisations(id),
    address    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, address)
);

CREATE TABLE channels (
    id           INTEGER PRIMARY KEY,
    org_id       INTEGER NOT NULL REFERENCES organisations(id),
    name         TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    config       TEXT    NOT NULL DEFAULT '{}',
    rate_per_sec REAL,
    created_at   INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE campaigns (
    id               INTEGER PRIMARY KEY,
    org_id           INTEGER NOT NULL REFERENCES organisations(id),
    name             TEXT    NOT NULL,
    channel_id       INTEGER NOT NULL REFERENCES channels(id),
    list_id          INTEGER NOT NULL REFERENCES lists(id),
    body             TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN
                         ('draft','scheduled','sending','paused','completed','cancelled')),
    scheduled_at     INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    last_progress_at INTEGER,
    total            INTEGER NOT NULL DEFAULT 0,
    queued           INTEGER NOT NULL DEFAULT 0 CHECK (queued >= 0),
    in_flight        INTEGER NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    retry_wait       INTEGER NOT NULL DEFAULT 0 CHECK (retry_wait >= 0),
    sent             INTEGER NOT NULL DEFAULT 0 CHECK (sent >= 0),
    delivered        INTEGER NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    read             INTEGER NOT NULL DEFAULT 0 CHECK (read >= 0),
    undelivered      INTEGER NOT NULL DEFAULT 0 CHECK (undelivered >= 0),
    failed           INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0),
    skipped          INTEGER NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    cancelled        INTEGER NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    in_doubt         INTEGER NOT NULL DEFAULT 0 CHECK (in_doubt >= 0),
    in_doubt_total   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX campaigns_status ON campaigns (status);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    campaign_id     INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    contact_id      INTEGER,
    address         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN
                        ('queued','in_flight','retry_wait','sent','delivered','read',
                         'undelivered','failed','skipped','cancelled','in_doubt')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    owner           TEXT,
    lease_until     INTEGER,
    provider_id     TEXT,
    last_error      TEXT,
    was_in_doubt    INTEGER NOT NULL DEFAULT 0,
    in_doubt_at     INTEGER,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER,
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
    id          INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    from_status TEXT,
    to_status   TEXT    NOT NULL,
    reason      TEXT    NOT NULL
);
CREATE INDEX campaign_events_campaign ON campaign_events (campaign_id, id);

CREATE TABLE instances (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    proc_start   TEXT,
    version      TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at   INTEGER
);

-- Receipts whose provider id is not recorded on any message yet: kept, applied later.
CREATE TABLE pending_receipts (
    id          INTEGER PRIMARY KEY,
    provider_id TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    error       TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX pending_receipts_provider ON pending_receipts (provider_id);

-- What the sandbox channel's simulated provider holds: one row per send it accepted,
-- written independently of Herald's own outcome write, as a real provider would hold it.
CREATE TABLE sandbox_received (
    id          INTEGER PRIMARY KEY,
    channel_id  INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    message_id  INTEGER NOT NULL,
    address     TEXT    NOT NULL,
    provider_id TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX sandbox_received_channel ON sandbox_received (channel_id, campaign_id, address);

INSERT INTO organisations (name, created_at) VALUES ('default', CAST(unixepoch('subsec') * 1000 AS INTEGER));
INSERT INTO channels (org_id, name, kind, config, created_at)
    SELECT id, 'sandbox', 'sandbox', '{}', created_at FROM organisations WHERE name = 'default';
