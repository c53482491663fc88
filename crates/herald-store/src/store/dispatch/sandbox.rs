//! The sandbox provider's own record of what it received, and the checks made on it (no
//! message lost, duplicates counted).

use crate::ids::{CampaignId, ChannelId};
use crate::store::{SandboxEntry, SandboxStats, Store, StoreError};
use sqlx::AssertSqlSafe;

impl Store {
    pub async fn sandbox_record(&self, entries: &[SandboxEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let records = serde_json::Value::from(
            entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "channel_id": e.channel_id.get(), "campaign_id": e.campaign_id.get(), "message_id": e.message_id.get(),
                        "address": e.address, "provider_id": e.provider_id, "body": e.body, "received_at": e.received_at,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .to_string();
        let recs = self.dialect.json_records(
            "$1",
            &[
                ("channel_id", "int"),
                ("campaign_id", "int"),
                ("message_id", "int"),
                ("address", "text"),
                ("provider_id", "text"),
                ("body", "text"),
                ("received_at", "int"),
            ],
        );
        let sql = format!(
            "INSERT INTO sandbox_received (channel_id, campaign_id, message_id, address, provider_id, body, received_at) \
             SELECT x.channel_id, x.campaign_id, x.message_id, x.address, x.provider_id, x.body, x.received_at FROM {recs} \
             WHERE true ON CONFLICT (provider_id) DO NOTHING"
        );
        // Its own transaction: the provider holds what it accepted whatever Herald does next.
        let mut tx = self.begin().await?;
        sqlx::query(AssertSqlSafe(sql))
            .bind(records)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// What the sandbox provider holds for a channel (optionally one campaign).
    pub async fn sandbox_stats(
        &self,
        channel_id: ChannelId,
        campaign_id: Option<CampaignId>,
    ) -> Result<SandboxStats, StoreError> {
        let campaign = campaign_id.map_or(0, CampaignId::get);
        let received: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sandbox_received WHERE channel_id = $1 AND ($2 = 0 OR campaign_id = $2)",
        )
        .bind(channel_id)
        .bind(campaign)
        .fetch_one(&self.read)
        .await?;
        let distinct: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT DISTINCT campaign_id, address FROM sandbox_received WHERE channel_id = $1 AND ($2 = 0 OR campaign_id = $2)) t",
        )
        .bind(channel_id)
        .bind(campaign)
        .fetch_one(&self.read)
        .await?;
        Ok(SandboxStats {
            received,
            distinct_recipients: distinct,
            duplicates: received - distinct,
        })
    }

    /// Messages Herald recorded as sent (or later) that the sandbox provider never received:
    /// a lost message, which must always be zero.
    ///
    /// Both sides are read once and grouped by address (a message's address is unique in
    /// its campaign), a shape no planner can turn into a loop: as `NOT EXISTS`, PostgreSQL
    /// planned it on tables not analysed yet as a nested loop, one probe of the provider's
    /// record per message, and `herald bench` once waited minutes on it after a 1M campaign
    /// (scripts/explain-plans).
    pub async fn sandbox_lost(&self, campaign_id: CampaignId) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT u.address FROM ( \
               SELECT m.address, 1 AS sent FROM messages m \
               WHERE m.campaign_id = $1 AND m.status IN ('sent','delivered','read','undelivered') \
               UNION ALL \
               SELECT s.address, 0 AS sent FROM sandbox_received s \
               WHERE s.campaign_id = $1 AND s.channel_id = (SELECT c.channel_id FROM campaigns c WHERE c.id = $1) \
             ) u GROUP BY u.address HAVING min(u.sent) = 1) lost",
        )
        .bind(campaign_id)
        .fetch_one(&self.read)
        .await?)
    }
}
