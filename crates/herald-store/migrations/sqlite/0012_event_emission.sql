-- Outbound events (docs/EVENTS.md) that need state to be written exactly once.
-- A campaign the reconciler found stuck: since when and the engine's reason. Set by a
-- conditional write (WHERE stuck_since IS NULL) in the transaction that writes the
-- campaign.stuck event, so any number of instances report one occurrence once; cleared
-- (WHERE stuck_since = the value read) with campaign.unstuck when it progresses again or
-- leaves sending.
ALTER TABLE campaigns ADD COLUMN stuck_since INTEGER;
ALTER TABLE campaigns ADD COLUMN stuck_reason TEXT;
CREATE INDEX campaigns_stuck ON campaigns (stuck_since) WHERE stuck_since IS NOT NULL;
-- Inbound messages already reported (message.inbound), by the provider's id (Twilio
-- MessageSid, WhatsApp message id): a provider's retry of the same message conflicts here
-- and reports nothing twice. Expired with the webhook records (webhook_retention_days).
CREATE TABLE inbound_messages (
    channel_id          INTEGER NOT NULL,
    provider_message_id TEXT    NOT NULL,
    received_at         INTEGER NOT NULL,
    PRIMARY KEY (channel_id, provider_message_id)
);
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);
