-- When each message reached each outcome, for the export (docs/CAMPAIGNS.md): sent_at was
-- already kept; these are written by the same conditional updates that move the status.
-- delivered_at is the first receipt that proves delivery (a read receipt, when it comes
-- first); failed_at is when the message failed or came back undelivered. Null on rows
-- written before this migration.
ALTER TABLE messages ADD COLUMN delivered_at INTEGER;
ALTER TABLE messages ADD COLUMN read_at INTEGER;
ALTER TABLE messages ADD COLUMN failed_at INTEGER;
-- A campaign made from another (a resend to its failed recipients, or a duplicate): the
-- campaign it came from, shown on both campaigns' pages.
ALTER TABLE campaigns ADD COLUMN parent_id INTEGER REFERENCES campaigns(id) ON DELETE SET NULL;
ALTER TABLE campaigns ADD COLUMN parent_kind TEXT CHECK (parent_kind IS NULL OR parent_kind IN ('resend', 'duplicate'));
CREATE INDEX campaigns_parent ON campaigns (parent_id) WHERE parent_id IS NOT NULL;
-- A campaign's messages in id order, for the export's pages and the API's message list
-- (`WHERE campaign_id + 0 = $1 AND id > $2 ORDER BY id LIMIT n`). Without it both planners read every message of the
-- campaign through (campaign_id, address) and sorted them, for each page (2 s a page at
-- 1M messages on PostgreSQL). It is on `campaign_id + 0`, not `campaign_id`, so that only
-- a query that asks for it by that expression uses it: on `campaign_id` SQLite took it for
-- the pending and completion checks too, instead of their small partial indexes.
CREATE INDEX messages_campaign_export ON messages ((campaign_id + 0), id);
