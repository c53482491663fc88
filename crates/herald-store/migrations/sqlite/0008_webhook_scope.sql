-- A provider webhook speaks for the channel its path names, and provider ids are unique
-- per provider account only: a receipt kept until its provider id is recorded carries
-- that channel and applies only to that channel's messages.
ALTER TABLE pending_receipts ADD COLUMN channel_id INTEGER;
-- A kept proof names its message, whose campaign names the channel.
UPDATE pending_receipts SET channel_id = (
    SELECT c.channel_id FROM messages m JOIN campaigns c ON c.id = m.campaign_id
    WHERE m.id = pending_receipts.message_id
) WHERE message_id IS NOT NULL;
-- Other receipts kept before this migration name no channel: they are never applied (no
-- channel matches NULL) and expire with the week kept receipts are given.
DROP INDEX pending_receipts_provider;
CREATE INDEX pending_receipts_channel_provider ON pending_receipts (channel_id, provider_id);
-- The engine deletes accepted webhook records older than webhook_retention_days in small
-- batches, oldest first.
CREATE INDEX webhook_events_received ON webhook_events (received_at, id);
