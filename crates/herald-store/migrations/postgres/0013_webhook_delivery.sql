-- Delivery of outbound events to webhook endpoints (docs/WEBHOOKS.md).

-- Since when every attempt to the endpoint has failed (NULL after a success, or before the
-- first attempt). An endpoint failing every attempt for 5 days is disabled.
ALTER TABLE webhook_endpoints ADD COLUMN failing_since BIGINT;

-- Retention deletes events by age; deleting an event cascades to its deliveries, which
-- needs their event_id indexed (PostgreSQL would otherwise scan every delivery per event).
CREATE INDEX outbox_events_occurred ON outbox_events (occurred_at, id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- The claim skips endpoints whose deliveries another instance holds a lease on.
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (endpoint_id, lease_until) WHERE status = 'pending';
