-- A terminal campaign says how it came out: succeeded, partially_failed, failed or
-- cancelled (domain.rs, CampaignOutcome). The engine sets it in the transaction that ends
-- the campaign; it is null until then.
ALTER TABLE campaigns ADD COLUMN outcome TEXT CHECK (outcome IS NULL OR outcome IN
    ('succeeded','partially_failed','failed','cancelled'));
-- Campaigns that ended before this migration, by the same rule (domain::OUTCOME_SQL).
UPDATE campaigns SET outcome = CASE WHEN status = 'cancelled' THEN 'cancelled' WHEN status <> 'completed' THEN NULL WHEN failed + undelivered <= 0 THEN 'succeeded' WHEN sent + delivered + read <= 0 THEN 'failed' ELSE 'partially_failed' END
WHERE status IN ('completed', 'cancelled');
-- Per-minute send history: how many messages of a campaign the engine recorded as handed
-- to the provider (sent) or failed in each minute (minute = epoch milliseconds of the
-- minute's start), incremented in the transaction that records the outcomes. The
-- throughput chart of a campaign is drawn from it, so a finished campaign keeps its chart.
CREATE TABLE campaign_throughput (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    minute      INTEGER NOT NULL,
    sent        INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, minute)
);
