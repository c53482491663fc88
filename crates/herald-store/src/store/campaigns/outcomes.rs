//! Honest end states and stored throughput history (issue 11): the outcome a terminal
//! campaign carries (`domain::CampaignOutcome`, set in the transaction that ends it) and the
//! per-minute counts of messages recorded as sent or failed, kept by the engine so a
//! finished campaign still has its whole throughput chart.

use crate::domain::{MessageStatus, OUTCOME_SQL};
use crate::ids::CampaignId;
use crate::store::{Store, StoreError, Tx};
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeMap;

/// One minute of a campaign's sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughputMinute {
    /// Epoch milliseconds of the minute's start.
    pub minute: i64,
    /// Messages recorded as handed to the provider in that minute.
    pub sent: i64,
    /// Messages recorded as failed in that minute.
    pub failed: i64,
}

/// The start of the minute `at` (epoch milliseconds) falls in.
pub fn minute_of(at: i64) -> i64 {
    at.div_euclid(60_000) * 60_000
}

impl Store {
    /// Sets the outcome of campaign `id` from its counters if it has ended (completed or
    /// cancelled), inside the caller's transaction: called by every write that ends a
    /// campaign, and by receipts that move the counters of a completed one.
    pub(in crate::store) async fn settle_outcome(
        &self,
        tx: &mut Tx,
        id: CampaignId,
    ) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE campaigns SET outcome = {OUTCOME_SQL} WHERE id = $1 AND status IN ('completed', 'cancelled')"
        )))
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Adds the sent and failed outcomes just recorded (message status per campaign) to the
    /// campaigns' history for the minute of `now`: one upsert per campaign per batch.
    pub(in crate::store) async fn count_throughput(
        &self,
        tx: &mut Tx,
        now: i64,
        recorded: &BTreeMap<CampaignId, (i64, i64)>,
    ) -> Result<(), StoreError> {
        let minute = minute_of(now);
        for (campaign, (sent, failed)) in recorded {
            if *sent == 0 && *failed == 0 {
                continue;
            }
            sqlx::query(
                "INSERT INTO campaign_throughput (campaign_id, minute, sent, failed) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (campaign_id, minute) DO UPDATE SET sent = campaign_throughput.sent + excluded.sent, \
                 failed = campaign_throughput.failed + excluded.failed",
            )
            .bind(*campaign)
            .bind(minute)
            .bind(*sent)
            .bind(*failed)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// The campaign's per-minute history, oldest first.
    pub async fn campaign_throughput(
        &self,
        campaign_id: CampaignId,
    ) -> Result<Vec<ThroughputMinute>, StoreError> {
        let rows = sqlx::query(
            "SELECT minute, sent, failed FROM campaign_throughput WHERE campaign_id = $1 ORDER BY minute",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ThroughputMinute {
                    minute: r.try_get("minute")?,
                    sent: r.try_get("sent")?,
                    failed: r.try_get("failed")?,
                })
            })
            .collect()
    }
}

/// Tallies `(sent, failed)` per campaign from the statuses messages were just moved to.
pub(in crate::store) fn tally(
    into: &mut BTreeMap<CampaignId, (i64, i64)>,
    campaign: CampaignId,
    status: MessageStatus,
) {
    let e = into.entry(campaign).or_default();
    match status {
        MessageStatus::Sent => e.0 += 1,
        MessageStatus::Failed => e.1 += 1,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::{CampaignOutcome, CampaignStatus, Counts, MessageStatus, OUTCOME_SQL};
    use sqlx::Row;

    /// The SQL the store writes and migration 0009 backfills with says what
    /// `CampaignOutcome::of` says, for every status and a grid of counters.
    #[tokio::test]
    async fn outcome_sql_agrees_with_the_rule() {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory sqlite");
        let columns: Vec<String> = MessageStatus::ALL
            .iter()
            .enumerate()
            .map(|(i, s)| format!("${} AS {}", i + 2, s.as_str()))
            .collect();
        let sql = format!(
            "SELECT {OUTCOME_SQL} AS o FROM (SELECT $1 AS status, {}) t",
            columns.join(", ")
        );
        let mut checked = 0;
        for status in CampaignStatus::ALL {
            for bits in 0u32..(1 << 6) {
                let mut c = Counts::default();
                for (i, s) in [
                    MessageStatus::Sent,
                    MessageStatus::Delivered,
                    MessageStatus::Read,
                    MessageStatus::Undelivered,
                    MessageStatus::Failed,
                    MessageStatus::Skipped,
                ]
                .into_iter()
                .enumerate()
                {
                    c.add(s, i64::from((bits >> i) & 1) * (i as i64 + 1));
                }
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(status.as_str());
                for s in MessageStatus::ALL {
                    q = q.bind(c.get(s));
                }
                let row = q.fetch_one(&pool).await.expect("outcome query");
                let got: Option<String> = row.try_get("o").expect("outcome column");
                let want = CampaignOutcome::of(status, &c).map(|o| o.as_str().to_string());
                assert_eq!(got, want, "{status} {c:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 6 * 64);
    }

    #[test]
    fn migration_0009_backfills_with_the_same_sql() {
        for text in [
            include_str!("../../../migrations/sqlite/0009_outcome_throughput.sql"),
            include_str!("../../../migrations/postgres/0009_outcome_throughput.sql"),
        ] {
            assert!(
                text.contains(OUTCOME_SQL),
                "migration 0009 drifted from OUTCOME_SQL"
            );
        }
    }

    #[test]
    fn minutes_start_on_the_minute() {
        assert_eq!(super::minute_of(0), 0);
        assert_eq!(super::minute_of(59_999), 0);
        assert_eq!(super::minute_of(60_000), 60_000);
        assert_eq!(super::minute_of(1_700_000_123_456), 1_700_000_100_000);
    }
}
