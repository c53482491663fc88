-- Outbound events (docs/EVENTS.md) that need state to be written exactly once.
-- A campaign the reconciler found stuck: since when and the engine's reason. Set by a
-- conditional write (WHERE stuck_since IS NULL) in the transaction that writes the
-- campaign.stuck event, so any number of instances report one occurrence once; cleared
-- (WHERE stuck_since = the value read) with campaign.unstuck when it progresses again or
-- leaves sending.
ALTER TABLE campaigns ADD COLUMN stuck_since BIGINT;
ALTER TABLE campaigns ADD COLUMN stuck_reason TEXT;
CREATE INDEX campaigns_stuck ON campaigns (stuck_since) WHERE stuck_since IS NOT NULL;
-- The provider's id of an inbound message (Twilio MessageSid, WhatsApp message id) on the
-- webhook record that carried it: a provider's retry of the same message conflicts here,
-- so it is neither recorded twice nor reported twice as message.inbound.
ALTER TABLE webhook_events ADD COLUMN provider_message_id TEXT;
CREATE UNIQUE INDEX webhook_events_inbound ON webhook_events (channel_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
