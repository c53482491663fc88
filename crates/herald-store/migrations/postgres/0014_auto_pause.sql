-- Auto-pause on failure rate (issue 12, docs/MONITORING.md): the engine pauses a sending
-- campaign when more than auto_pause_percent % of its last auto_pause_window outcomes failed
-- permanently. Both NULL on a campaign: the organisation's setting; both NULL on an
-- organisation: Herald's default (20 % of the last 500). Percent 0 (window 0): off.
ALTER TABLE organisations ADD COLUMN auto_pause_percent BIGINT CHECK (auto_pause_percent IS NULL OR auto_pause_percent BETWEEN 0 AND 99);
ALTER TABLE organisations ADD COLUMN auto_pause_window BIGINT CHECK (auto_pause_window IS NULL OR auto_pause_window BETWEEN 0 AND 100000);
ALTER TABLE campaigns ADD COLUMN auto_pause_percent BIGINT CHECK (auto_pause_percent IS NULL OR auto_pause_percent BETWEEN 0 AND 99);
ALTER TABLE campaigns ADD COLUMN auto_pause_window BIGINT CHECK (auto_pause_window IS NULL OR auto_pause_window BETWEEN 0 AND 100000);
-- The rolling count, moved in the transaction that records the outcomes (a sliding-window
-- counter): outcomes and permanent failures in the current block of auto_pause_window
-- outcomes, and the failures of the previous full block (NULL until one filled up). Reset
-- whenever the campaign goes (back) to sending, so a resume starts a fresh window.
ALTER TABLE campaigns ADD COLUMN auto_pause_seen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN auto_pause_failed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN auto_pause_prev_failed BIGINT;
-- The most common reason among a campaign's latest permanent failures, read when the engine
-- auto-pauses it: a bounded walk of this partial index (failed rows only, so sends and
-- receipts never maintain it).
CREATE INDEX messages_failed_recent ON messages (campaign_id, updated_at) WHERE status = 'failed';
