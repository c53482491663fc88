-- Message retention (docs/CAMPAIGNS.md, "Retention"): with `message_retention_days` set,
-- the message rows of a campaign finished longer ago than that move here, as the export
-- reads them (`ExportedMessage`, the contact's name frozen), a JSON array per chunk of at
-- most 1,000 messages in id order. Each chunk is written in the transaction that deletes
-- its messages, so a message is always in exactly one of the two tables. TEXT is
-- compressed by TOAST on PostgreSQL.
CREATE TABLE message_archives (
    campaign_id      INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    first_message_id INTEGER NOT NULL,
    last_message_id  INTEGER NOT NULL,
    message_count    INTEGER NOT NULL CHECK (message_count > 0),
    data             TEXT   NOT NULL,
    PRIMARY KEY (campaign_id, first_message_id)
);
-- The export's pages find the chunk after the last message read: a campaign's chunks are
-- disjoint id ranges, so their last ids are in the same order as their first.
CREATE INDEX message_archives_campaign_last ON message_archives (campaign_id, last_message_id);
-- A tracked link or an unsubscribe link of an archived message finds its chunk by id.
CREATE INDEX message_archives_last ON message_archives (last_message_id);
-- The failure texts with their counts (JSON [[text, n], ...]), frozen by the archive's
-- first step before any message row goes: set means the archive has begun (the failure
-- groups and the message list read it from then on). archived_at: when the last message
-- row went; the campaign's messages are then all in message_archives.
ALTER TABLE campaigns ADD COLUMN archived_failures TEXT;
ALTER TABLE campaigns ADD COLUMN archived_at INTEGER;
