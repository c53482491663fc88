-- A task going on with its endpoint claims the next pending deliveries after the last
-- sequence number it sent (docs/WEBHOOKS.md). This index reads them in order and stops at
-- the batch size; without it the claim scanned every pending delivery of the endpoint,
-- which made the drain after a large campaign slow down with the backlog.
CREATE INDEX webhook_deliveries_pending_seq ON webhook_deliveries (endpoint_id, seq) WHERE status = 'pending';
