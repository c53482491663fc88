//! A campaign's messages as its export reads them (docs/CAMPAIGNS.md): keyset pages in
//! message id order, scoped to the organisation in the query, each page a short read, so
//! an export of a million rows holds no connection or transaction between pages and its
//! memory is one page.

use crate::contact_rules::MAX_NAME;
use crate::domain::MessageStatus;
use crate::ids::{CampaignId, ContactId, MessageId, OrgId};
use crate::store::helpers::status_of;
use crate::store::{Store, StoreError};
use sqlx::{AssertSqlSafe, Row};

/// One exported message with its contact's name and the time it reached each outcome.
#[derive(Debug, Clone)]
pub struct ExportedMessage {
    pub id: MessageId,
    /// As stored: an export shows every row, even one whose address no longer parses.
    pub address: String,
    /// Null when the contact was deleted after the campaign started.
    pub contact_id: Option<ContactId>,
    pub contact_name: Option<String>,
    pub status: MessageStatus,
    pub attempts: i64,
    pub provider_id: Option<String>,
    pub last_error: Option<String>,
    pub was_in_doubt: bool,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
    pub failed_at: Option<i64>,
    /// Counted clicks on its tracked links, and when the first came.
    pub clicks: i64,
    pub first_clicked_at: Option<i64>,
    pub updated_at: i64,
}

impl Store {
    /// Up to `limit` messages of the organisation's campaign with an id above `after`.
    /// Another organisation's campaign reads as no rows (the caller checked it exists).
    pub async fn export_campaign_messages(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
        after: MessageId,
        limit: i64,
    ) -> Result<Vec<ExportedMessage>, StoreError> {
        // The name is read cut to the contact rules' length: a name stored before the
        // rules could be megabytes, and a page holds a thousand of them.
        // Each page is one range of the ((campaign_id + 0), id) index (migration 0017).
        // The organisation is checked by a one-time EXISTS rather than a join, so that no
        // planner derives `campaign_id = c.id` and walks another index instead.
        let sql = format!(
            "SELECT m.id, m.address, m.contact_id, substr(ct.name, 1, {MAX_NAME}) AS contact_name, \
             m.status, m.attempts, m.provider_id, m.last_error, m.was_in_doubt, m.sent_at, \
             m.delivered_at, m.read_at, m.failed_at, m.clicks, m.first_clicked_at, m.updated_at \
             FROM messages m LEFT JOIN contacts ct ON ct.id = m.contact_id AND ct.org_id = $1 \
             WHERE EXISTS (SELECT 1 FROM campaigns c WHERE c.id = $2 AND c.org_id = $1) \
             AND (m.campaign_id + 0) = $2 AND m.id > $3 ORDER BY m.id LIMIT $4"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(campaign_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ExportedMessage {
                    id: r.try_get("id")?,
                    address: r.try_get("address")?,
                    contact_id: r.try_get("contact_id")?,
                    contact_name: r.try_get("contact_name")?,
                    status: status_of(r, "status")?,
                    attempts: r.try_get("attempts")?,
                    provider_id: r.try_get("provider_id")?,
                    last_error: r.try_get("last_error")?,
                    was_in_doubt: r.try_get::<i64, _>("was_in_doubt")? != 0,
                    sent_at: r.try_get("sent_at")?,
                    delivered_at: r.try_get("delivered_at")?,
                    read_at: r.try_get("read_at")?,
                    failed_at: r.try_get("failed_at")?,
                    clicks: r.try_get("clicks")?,
                    first_clicked_at: r.try_get("first_clicked_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }
}
