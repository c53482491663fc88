//! A campaign's messages as its export reads them (docs/CAMPAIGNS.md): keyset pages in
//! message id order, scoped to the organisation in the query, each page a short read, so
//! an export of a million rows holds no connection or transaction between pages and its
//! memory is one page. A campaign whose rows were archived (`archive.rs`) is read from its
//! archive chunks, which hold these very records: the export is the same before and after.

use crate::contact_rules::MAX_NAME;
use crate::domain::MessageStatus;
use crate::ids::{CampaignId, ContactId, MessageId, OrgId};
use crate::store::helpers::{ids_json, status_of};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeMap;

/// One exported message with its contact's name and the time it reached each outcome.
/// Also the unit of the message archive: a chunk is a JSON array of these (absent
/// optional fields read as null), so an archived message exports exactly as it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedMessage {
    pub id: MessageId,
    /// As stored: an export shows every row, even one whose address no longer parses.
    pub address: String,
    /// Null when the contact was deleted after the campaign started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<ContactId>,
    /// In an archive: the name when the message was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_name: Option<String>,
    pub status: MessageStatus,
    pub attempts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub was_in_doubt: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<i64>,
    /// Counted clicks on its tracked links, and when the first came.
    pub clicks: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_clicked_at: Option<i64>,
    /// Its counted clicks on each of its campaign's links that it clicked, in position
    /// order (absent in chunks archived before 2026-12-07: those exports leave it empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_clicks: Vec<LinkClicks>,
    pub updated_at: i64,
}

/// One message's counted clicks on one tracked link of its campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClicks {
    /// The link's position in `campaign_links` (1-based).
    pub position: i64,
    pub clicks: i64,
}

/// The messages `m` of campaign `$2` of organisation `$1` after id `$3`, as a range of the
/// primary key: the export's pages and the API's message list (campaigns/admin.rs) read
/// with it. One lower bound, the greater of the cursor and the campaign's first id: with
/// two (`id >= first AND id > $3`), SQLite started every page's range at the campaign's
/// first message and skipped to the cursor, so a page deep in a 1M campaign read 900,000
/// rows and the export took 31 s instead of 6 (BENCHMARKS.md "Export and estimate at a
/// million").
pub(in crate::store) const MESSAGE_RANGE: &str = "(m.campaign_id + 0) = $2 \
     AND m.id > (SELECT CASE WHEN c.first_message_id - 1 > $3 THEN c.first_message_id - 1 ELSE $3 END \
     FROM campaigns c WHERE c.id = $2 AND c.org_id = $1) \
     AND m.id <= (SELECT c.last_message_id FROM campaigns c WHERE c.id = $2 AND c.org_id = $1)";

/// The export's read of live message rows: `$1` the organisation, `$2` the campaign, `$3`
/// the id to read after, `$4` the limit. The archive reads its chunks' rows with it too.
pub(in crate::store) fn live_rows_sql() -> String {
    // The name is read cut to the contact rules' length: a name stored before the
    // rules could be megabytes, and a page holds a thousand of them.
    // Each page is one range of the primary key, within the campaign's ids (migration
    // 0026), read by two one-time subqueries that also check the organisation (another
    // organisation's campaign gives NULL bounds, so no row). Not a join, and the campaign
    // compared as `campaign_id + 0`, so that no planner walks (campaign_id, address) and
    // sorts the whole campaign for each page instead.
    format!(
        "SELECT m.id, m.address, m.contact_id, substr(ct.name, 1, {MAX_NAME}) AS contact_name, \
         m.status, m.attempts, m.provider_id, m.last_error, m.was_in_doubt, m.sent_at, \
         m.delivered_at, m.read_at, m.failed_at, m.clicks, m.first_clicked_at, m.updated_at \
         FROM messages m LEFT JOIN contacts ct ON ct.id = m.contact_id AND ct.org_id = $1 \
         WHERE {MESSAGE_RANGE} ORDER BY m.id LIMIT $4"
    )
}

pub(in crate::store) fn exported_from_row(r: &AnyRow) -> Result<ExportedMessage, StoreError> {
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
        link_clicks: Vec::new(),
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Fills `link_clicks` of the page's clicked messages: one read of `message_clicks`
    /// by primary key, and none for a page nobody clicked in. The ids come from a page
    /// already scoped to the organisation.
    pub(in crate::store) async fn add_link_clicks<'c, E>(
        &self,
        executor: E,
        page: &mut [ExportedMessage],
    ) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let clicked: Vec<MessageId> = page.iter().filter(|m| m.clicks > 0).map(|m| m.id).collect();
        if clicked.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT message_id, position, clicks FROM message_clicks WHERE message_id IN {} \
             ORDER BY message_id, position",
            self.dialect.json_ids("$1")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ids_json(clicked))
            .fetch_all(executor)
            .await?;
        let mut by_message: BTreeMap<MessageId, Vec<LinkClicks>> = BTreeMap::new();
        for r in &rows {
            by_message
                .entry(r.try_get("message_id")?)
                .or_default()
                .push(LinkClicks {
                    position: r.try_get("position")?,
                    clicks: r.try_get("clicks")?,
                });
        }
        for m in page.iter_mut() {
            if let Some(links) = by_message.remove(&m.id) {
                m.link_clicks = links;
            }
        }
        Ok(())
    }
}

impl Store {
    /// Up to `limit` messages of the organisation's campaign with an id above `after`,
    /// wherever they are: message rows, archive chunks, or both while an archive is under
    /// way. Another organisation's campaign reads as no rows (the caller checked it
    /// exists).
    pub async fn export_campaign_messages(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
        after: MessageId,
        limit: i64,
    ) -> Result<Vec<ExportedMessage>, StoreError> {
        // The rows first, then the archive. The archive moves messages from rows to chunks
        // (never back) in one transaction per chunk, so a chunk written between the two
        // reads holds rows the first read saw, read twice and kept once: no message
        // falls between the reads.
        let rows = sqlx::query(AssertSqlSafe(live_rows_sql()))
            .bind(org_id)
            .bind(campaign_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        let mut live = rows
            .iter()
            .map(exported_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.add_link_clicks(&self.read, &mut live).await?;
        let archived = self
            .archived_messages_after(org_id, campaign_id, after, limit)
            .await?;
        if archived.is_empty() {
            return Ok(live);
        }
        let mut merged: BTreeMap<MessageId, ExportedMessage> =
            live.into_iter().map(|m| (m.id, m)).collect();
        // The archived copy wins: it is what every later export reads.
        merged.extend(archived.into_iter().map(|m| (m.id, m)));
        Ok(merged
            .into_values()
            .take(usize::try_from(limit).unwrap_or(0))
            .collect())
    }
}
