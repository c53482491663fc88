-- Herald's outbound events (docs/EVENTS.md). Each row is written in the same transaction as
-- the state change it reports, so a crash can neither lose an event nor leave one for a
-- change that did not commit. `data` is the JSON of the payload's "data" member, with ids
-- in their canonical form; the payload's "type" and "timestamp" come from the columns.
-- campaign_id orders a campaign's events for each endpoint; NULL for events of no campaign.
CREATE TABLE outbox_events (
    id          BIGSERIAL PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES organisations(id),
    type        TEXT    NOT NULL,
    campaign_id BIGINT,
    occurred_at BIGINT NOT NULL,
    data        TEXT    NOT NULL,
    -- Set once the event has become one delivery per subscribed endpoint (fan-out).
    fanned_out_at BIGINT
);
CREATE INDEX outbox_events_org ON outbox_events (org_id, id);
CREATE INDEX outbox_events_to_fan_out ON outbox_events (id) WHERE fanned_out_at IS NULL;

-- Where an organisation wants its events. `events` is a JSON array of the subscribed types;
-- message.* events are written to the outbox only while some endpoint of the organisation
-- names them, so a campaign nobody listens to pays nothing for them. Secrets are sealed
-- like channel secrets; after a rotation the previous one also signs until previous_until.
CREATE TABLE webhook_endpoints (
    id               BIGSERIAL PRIMARY KEY,
    org_id           BIGINT NOT NULL REFERENCES organisations(id),
    url              TEXT    NOT NULL,
    description      TEXT    NOT NULL DEFAULT '',
    events           TEXT    NOT NULL,
    secret           TEXT    NOT NULL,
    previous_secret  TEXT,
    previous_until   BIGINT,
    next_seq         BIGINT NOT NULL DEFAULT 1,
    created_at       BIGINT NOT NULL,
    disabled_at      BIGINT,
    disabled_reason  TEXT
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id, id);

-- One event for one endpoint: the unit that is claimed, sent, retried and logged. seq is the
-- endpoint's sequence number for the event (put in the payload). Claims work like message
-- claims: owner + lease_until; a dead instance's lease expires and another takes it back.
-- status: pending (to send at next_attempt_at), delivered, failed (gave up or endpoint disabled).
CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    org_id           BIGINT NOT NULL REFERENCES organisations(id),
    endpoint_id      BIGINT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id         BIGINT NOT NULL REFERENCES outbox_events(id) ON DELETE CASCADE,
    seq              BIGINT NOT NULL,
    campaign_id      BIGINT,
    status           TEXT    NOT NULL DEFAULT 'pending',
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    owner            TEXT,
    lease_until      BIGINT,
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, seq);

-- Every attempt of a delivery, for the delivery log: when, what came back, how long it took,
-- and a bounded excerpt of the answer (or the transport error).
CREATE TABLE webhook_attempts (
    id               BIGSERIAL PRIMARY KEY,
    delivery_id      BIGINT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    org_id           BIGINT NOT NULL REFERENCES organisations(id),
    endpoint_id      BIGINT NOT NULL,
    at               BIGINT NOT NULL,
    status_code      BIGINT,
    latency_ms       BIGINT NOT NULL,
    response_excerpt TEXT,
    error            TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);
