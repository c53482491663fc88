-- Alerts to people (issue 12, docs/ALERTS.md): an organisation's alert recipients and the
-- channels to reach them with. The alert-worthy events of the outbox (campaign.stuck,
-- campaign.auto_paused, campaign.in_doubt, channel.unavailable, webhook.endpoint_disabled)
-- become one alert per recipient; each alert is sent once per occurrence, never through the
-- channel it is about, and one that cannot be delivered stays visible (system page, doctor).
--
-- The channel alerts go through, and the one used when the first is the channel an alert is
-- about (or cannot reach a recipient's kind of address). NULL: none set. Not foreign keys:
-- a deleted channel makes its alerts undeliverable with that reason rather than blocking
-- the deletion.
ALTER TABLE organisations ADD COLUMN alert_channel_id BIGINT;
ALTER TABLE organisations ADD COLUMN alert_fallback_channel_id BIGINT;
-- Messages in doubt in one sending campaign that raise campaign.in_doubt; NULL: Herald's
-- default (100); 0: off.
ALTER TABLE organisations ADD COLUMN alert_in_doubt_threshold BIGINT CHECK (alert_in_doubt_threshold IS NULL OR alert_in_doubt_threshold >= 0);
-- One occurrence of "too many in doubt": set by a conditional write (WHERE
-- in_doubt_alerted_at IS NULL) with its campaign.in_doubt event, cleared when the campaign
-- falls back under the threshold or stops sending.
ALTER TABLE campaigns ADD COLUMN in_doubt_alerted_at BIGINT;

CREATE TABLE alert_recipients (
    id         BIGSERIAL PRIMARY KEY,
    org_id     BIGINT NOT NULL REFERENCES organisations(id),
    -- An email address or an E.164 phone number, normalised as contact addresses are.
    address    TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, address)
);

-- 1 while an alert-worthy event waits to become alerts (set by the emit that wrote it,
-- cleared by the fan-out that made its alerts); NULL for every other event.
ALTER TABLE outbox_events ADD COLUMN alert_pending BIGINT;
CREATE INDEX outbox_events_alert_pending ON outbox_events (id) WHERE alert_pending = 1;

CREATE TABLE alerts (
    id                  BIGSERIAL PRIMARY KEY,
    org_id              BIGINT NOT NULL REFERENCES organisations(id),
    -- The outbox event it reports (NULL for a test alert). Not a foreign key: the outbox's
    -- retention may delete the event; the alert keeps its own text.
    event_id            BIGINT,
    event_type          TEXT    NOT NULL,
    campaign_id         BIGINT,
    -- The channel the alert is about: never used to send it.
    concerns_channel_id BIGINT,
    address             TEXT    NOT NULL,
    subject             TEXT    NOT NULL,
    body                TEXT    NOT NULL,
    -- The dashboard path it links to (/campaigns/cmp_2), made absolute with public_url.
    link                TEXT,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'undeliverable')),
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    -- Claims, like message claims: the instance sending it and until when.
    owner               TEXT,
    lease_until         BIGINT,
    channel_id          BIGINT,
    provider_id         TEXT,
    last_error          TEXT,
    created_at          BIGINT NOT NULL,
    settled_at          BIGINT,
    -- Once per occurrence: however many instances fan an event out, one alert per recipient.
    UNIQUE (event_id, address)
);
CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE status = 'pending';
CREATE INDEX alerts_org ON alerts (org_id, id);
CREATE INDEX alerts_undeliverable ON alerts (org_id, settled_at) WHERE status = 'undeliverable';
