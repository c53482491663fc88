-- A provider status that names Herald's own message id (WhatsApp biz_opaque_callback_data)
-- proves the message reached the provider even before Herald recorded its provider id;
-- kept with the id so a send whose answer was lost is recorded as sent, not resent.
ALTER TABLE pending_receipts ADD COLUMN message_id INTEGER;
CREATE INDEX pending_receipts_message ON pending_receipts (message_id) WHERE message_id IS NOT NULL;
