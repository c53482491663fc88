//! Campaigns newest first, for the dashboard's list and `GET /campaigns?order=newest`: the
//! same organisation-scoped page as `api_campaigns`, in descending id order.

use crate::domain::CampaignStatus;
use crate::ids::{CampaignId, OrgId};
use crate::store::campaigns::reads::{CAMPAIGN_COLUMNS, CAMPAIGN_FROM, campaign_from_row};
use crate::store::{Campaign, Store, StoreError};
use sqlx::AssertSqlSafe;

impl Store {
    /// Up to `limit` campaigns of the organisation with an id below `before_id` (every one
    /// when it is None), newest first.
    pub async fn api_campaigns_newest_first(
        &self,
        org_id: OrgId,
        status: Option<CampaignStatus>,
        before_id: Option<CampaignId>,
        limit: i64,
    ) -> Result<Vec<Campaign>, StoreError> {
        let filter = if status.is_some() {
            "AND c.status = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.org_id = $1 AND c.id < $2 {filter} \
             ORDER BY c.id DESC LIMIT $3"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(before_id.map_or(i64::MAX, CampaignId::get))
            .bind(limit);
        if let Some(s) = status {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.read).await?;
        rows.iter().map(campaign_from_row).collect()
    }
}
