-- The replies inbox (docs/INBOX.md): every inbound SMS and WhatsApp message a verified
-- provider webhook carried, once per provider message id, with the organisation's contact
-- of that address and the campaign last sent to it on that channel (when there are), the
-- keyword it was (help, stop, start) and what Herald answered. A conversation is an
-- organisation's replies from one address.
CREATE TABLE replies (
    id                  INTEGER PRIMARY KEY,
    org_id              INTEGER NOT NULL REFERENCES organisations(id),
    channel_id          INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    address             TEXT NOT NULL,
    contact_id          INTEGER REFERENCES contacts(id) ON DELETE SET NULL,
    campaign_id         INTEGER REFERENCES campaigns(id) ON DELETE SET NULL,
    body                TEXT NOT NULL,
    keyword             TEXT CHECK (keyword IS NULL OR keyword IN ('help', 'stop', 'start')),
    -- What Herald answered (the organisation's help reply, a STOP confirmation), and how
    -- it went: 'in_webhook_answer' (Twilio sends it), 'pending', 'sent: <provider id>',
    -- 'failed: <why>', or 'provider_confirms' (the provider answers STOP itself).
    auto_reply          TEXT,
    auto_reply_status   TEXT,
    provider_message_id TEXT,
    received_at         INTEGER NOT NULL,
    read_at             INTEGER
);
CREATE INDEX replies_org_received ON replies (org_id, received_at, id);
CREATE INDEX replies_org_address ON replies (org_id, address, received_at);
CREATE INDEX replies_campaign ON replies (campaign_id) WHERE campaign_id IS NOT NULL;
-- The answer to HELP (and its synonyms), per organisation; none: HELP is recorded only.
ALTER TABLE organisations ADD COLUMN help_reply TEXT;
