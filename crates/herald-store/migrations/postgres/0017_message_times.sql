-- When each message reached each outcome, for the export (docs/CAMPAIGNS.md): sent_at was
-- already kept; these are written by the same conditional updates that move the status.
-- delivered_at is the first receipt that proves delivery (a read receipt, when it comes
-- first); failed_at is when the message failed or came back undelivered. Null on rows
-- written before this migration.
ALTER TABLE messages ADD COLUMN delivered_at BIGINT;
ALTER TABLE messages ADD COLUMN read_at BIGINT;
ALTER TABLE messages ADD COLUMN failed_at BIGINT;
-- A campaign made from another (a resend to its failed recipients, or a duplicate): the
-- campaign it came from, shown on both campaigns' pages.
ALTER TABLE campaigns ADD COLUMN parent_id BIGINT REFERENCES campaigns(id) ON DELETE SET NULL;
ALTER TABLE campaigns ADD COLUMN parent_kind TEXT CHECK (parent_kind IS NULL OR parent_kind IN ('resend', 'duplicate'));
CREATE INDEX campaigns_parent ON campaigns (parent_id) WHERE parent_id IS NOT NULL;
