//! Why messages failed, grouped, and whether contacts are suppressed: the reads behind a
//! campaign's failure groups and a contact's suppression state.

use crate::ids::{CampaignId, OrgId};
use crate::store::directory::{ContactRow, SuppressionRow};
use crate::store::{Store, StoreError};
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;

impl Store {
    /// The stored error texts of a campaign's messages that ended without reaching their
    /// recipient (`failed`, `undelivered`), with how many messages have each text. The
    /// caller explains and merges them (`reasons::group`); the counts add up to
    /// the campaign's failed and undelivered messages. Once its archive has begun, the
    /// texts frozen then (docs/CAMPAIGNS.md, "Retention").
    pub async fn failure_texts(
        &self,
        campaign_id: CampaignId,
    ) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT last_error, count(*) AS n FROM messages \
             WHERE campaign_id = $1 AND status IN ('failed', 'undelivered') GROUP BY last_error",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?;
        // The rows first: an archive that began since froze every text before its first
        // row went, and is read instead of a part of the rows.
        if let Some(frozen) = self.archived_failure_texts(campaign_id).await? {
            return Ok(frozen);
        }
        rows.iter()
            .map(|r| Ok((r.try_get("last_error")?, r.try_get("n")?)))
            .collect()
    }

    /// Sets each contact's `suppression` from the organisation's suppression list (one
    /// query for the whole page).
    pub(in crate::store) async fn fill_suppressions(
        &self,
        org_id: OrgId,
        contacts: &mut [ContactRow],
    ) -> Result<(), StoreError> {
        if contacts.is_empty() {
            return Ok(());
        }
        let addresses = serde_json::Value::from(
            contacts
                .iter()
                .map(|c| c.address.as_str())
                .collect::<Vec<_>>(),
        )
        .to_string();
        let list = self.dialect.json_texts("$2");
        let sql = format!(
            "SELECT address, reason, created_at FROM suppressions WHERE org_id = $1 AND address IN {list}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(addresses)
            .fetch_all(&self.read)
            .await?;
        let mut by_address: HashMap<String, SuppressionRow> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let row = SuppressionRow {
                address: r.try_get("address")?,
                reason: r.try_get("reason")?,
                created_at: r.try_get("created_at")?,
            };
            by_address.insert(row.address.clone(), row);
        }
        for c in contacts {
            c.suppression = by_address.remove(c.address.as_str());
        }
        Ok(())
    }
}
