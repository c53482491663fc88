//! The replies inbox (docs/INBOX.md): the inbound messages providers' verified webhooks
//! carried, written with the webhook that carried them (`record_webhook_with_inbound`), and
//! read back per organisation as conversations (one per sending address) or as a list. Every
//! read and write here names the organisation in its SQL.

use crate::ids::{CampaignId, ChannelId, ContactId, OrgId, ReplyId};
use crate::store::directory::like_pattern;
use crate::store::{Store, StoreError, Tx};
use sqlx::{AssertSqlSafe, Row};

/// Most replies or conversations one page holds.
pub const MAX_PAGE: i64 = 501;

/// The longest help reply an organisation may set (it goes out as one SMS or WhatsApp
/// message; ten SMS segments).
pub const MAX_HELP_REPLY_CHARS: usize = 1_600;

/// A help reply as kept: trimmed, at most [`MAX_HELP_REPLY_CHARS`], no control characters
/// but line breaks; empty means none. The error is (rule, what to do).
pub fn help_reply_text(text: &str) -> Result<Option<String>, (&'static str, String)> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_HELP_REPLY_CHARS {
        return Err((
            "max_length",
            format!(
                "the help reply must be at most {MAX_HELP_REPLY_CHARS} characters (ten SMS segments)"
            ),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r')
    {
        return Err((
            "format",
            "the help reply must not contain control characters other than line breaks".into(),
        ));
    }
    Ok(Some(text.to_string()))
}

/// One inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: ReplyId,
    pub channel_id: ChannelId,
    pub address: String,
    pub contact_id: Option<ContactId>,
    pub contact_name: Option<String>,
    /// The campaign last sent to this address on this channel when it arrived.
    pub campaign_id: Option<CampaignId>,
    pub body: String,
    /// `help`, `stop` or `start` when the whole text was that keyword.
    pub keyword: Option<String>,
    /// What Herald answered, and how that went.
    pub auto_reply: Option<String>,
    pub auto_reply_status: Option<String>,
    pub received_at: i64,
    pub read_at: Option<i64>,
}

/// An organisation's replies from one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub address: String,
    pub contact_id: Option<ContactId>,
    pub contact_name: Option<String>,
    pub replies: i64,
    pub unread: i64,
    /// The newest reply.
    pub last: Reply,
}

/// Which replies: all of them unless narrowed.
#[derive(Debug, Clone, Default)]
pub struct ReplyFilter {
    /// Only unread replies (conversations: those with at least one).
    pub unread: bool,
    /// Text in the body, the address or the contact's name (case-insensitive).
    pub q: Option<String>,
    pub campaign_id: Option<CampaignId>,
    /// One sender's replies (its conversation).
    pub address: Option<String>,
}

const REPLY_COLUMNS: &str = "r.id, r.channel_id, r.address, r.contact_id, ct.name AS contact_name, r.campaign_id, \
     r.body, r.keyword, r.auto_reply, r.auto_reply_status, r.received_at, r.read_at";

/// The join that names a reply's contact, only within the reply's organisation.
const REPLY_FROM: &str =
    "FROM replies r LEFT JOIN contacts ct ON ct.id = r.contact_id AND ct.org_id = r.org_id";

fn reply_from_row(r: &sqlx::any::AnyRow) -> Result<Reply, StoreError> {
    Ok(Reply {
        id: r.try_get("id")?,
        channel_id: r.try_get("channel_id")?,
        address: r.try_get("address")?,
        contact_id: r.try_get("contact_id")?,
        contact_name: r.try_get("contact_name")?,
        campaign_id: r.try_get("campaign_id")?,
        body: r.try_get("body")?,
        keyword: r.try_get("keyword")?,
        auto_reply: r.try_get("auto_reply")?,
        auto_reply_status: r.try_get("auto_reply_status")?,
        received_at: r.try_get("received_at")?,
        read_at: r.try_get("read_at")?,
    })
}

/// The `WHERE` conditions of `filter` after `r.org_id = $1`, numbering its parameters
/// from `$2`, and their values in order.
fn conditions(filter: &ReplyFilter) -> (String, Vec<FilterValue>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    if let Some(c) = filter.campaign_id {
        values.push(FilterValue::Id(c.get()));
        sql.push_str(&format!(" AND r.campaign_id = ${}", values.len() + 1));
    }
    if let Some(a) = &filter.address {
        values.push(FilterValue::Text(a.clone()));
        sql.push_str(&format!(" AND r.address = ${}", values.len() + 1));
    }
    if let Some(q) = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        values.push(FilterValue::Text(like_pattern(q)));
        let n = values.len() + 1;
        sql.push_str(&format!(
            " AND (lower(r.body) LIKE ${n} ESCAPE '\\' OR lower(r.address) LIKE ${n} ESCAPE '\\' \
             OR lower(COALESCE(ct.name, '')) LIKE ${n} ESCAPE '\\')"
        ));
    }
    (sql, values)
}

enum FilterValue {
    Id(i64),
    Text(String),
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    values: &'q [FilterValue],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for v in values {
        q = match v {
            FilterValue::Id(i) => q.bind(*i),
            FilterValue::Text(t) => q.bind(t.as_str()),
        };
    }
    q
}

impl Store {
    /// Writes one inbound message as a reply in the webhook's transaction.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) async fn insert_reply(
        &self,
        tx: &mut Tx,
        org_id: OrgId,
        channel_id: ChannelId,
        m: &crate::store::InboundMessage,
        contact: Option<ContactId>,
        campaign: Option<CampaignId>,
        at: i64,
    ) -> Result<ReplyId, StoreError> {
        let body: String = m
            .body
            .chars()
            .take(crate::store::events::outbox::INBOUND_BODY_MAX_CHARS)
            .collect();
        let (auto_reply, status) = (m.auto_reply.as_deref(), m.auto_reply_status.as_deref());
        Ok(sqlx::query_scalar(
            "INSERT INTO replies (org_id, channel_id, address, contact_id, campaign_id, body, keyword, \
             auto_reply, auto_reply_status, provider_message_id, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(org_id)
        .bind(channel_id)
        .bind(&m.from)
        .bind(contact)
        .bind(campaign)
        .bind(crate::store::helpers::clean(&body))
        .bind(m.keyword)
        .bind(auto_reply)
        .bind(status)
        .bind(m.provider_message_id.as_deref().map(crate::store::helpers::clean))
        .bind(at)
        .fetch_one(&mut **tx)
        .await?)
    }

    /// Records how an answer sent after the webhook went (`sent: <provider id>` or
    /// `failed: <why>`), for a reply still `pending`.
    pub async fn set_auto_reply_status(&self, id: ReplyId, status: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE replies SET auto_reply_status = $1 WHERE id = $2 AND auto_reply_status = 'pending'",
        )
        .bind(status)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The organisation's replies matching `filter`, newest first, before `before` (the
    /// last id of the previous page).
    pub async fn replies(
        &self,
        org_id: OrgId,
        filter: &ReplyFilter,
        before: Option<ReplyId>,
        limit: i64,
    ) -> Result<Vec<Reply>, StoreError> {
        let (mut cond, mut values) = conditions(filter);
        if filter.unread {
            cond.push_str(" AND r.read_at IS NULL");
        }
        if let Some(b) = before {
            values.push(FilterValue::Id(b.get()));
            cond.push_str(&format!(" AND r.id < ${}", values.len() + 1));
        }
        let sql = format!(
            "SELECT {REPLY_COLUMNS} {REPLY_FROM} WHERE r.org_id = $1{cond} ORDER BY r.id DESC LIMIT {}",
            limit.clamp(1, MAX_PAGE)
        );
        let q = bind_all(sqlx::query(AssertSqlSafe(sql)).bind(org_id), &values);
        let rows = q.fetch_all(&self.read).await?;
        rows.iter().map(reply_from_row).collect()
    }

    /// The organisation's conversations (one per sending address) with a reply matching
    /// `filter`, the one with the newest reply first, before `before` (the newest reply id
    /// of the previous page's last conversation).
    pub async fn conversations(
        &self,
        org_id: OrgId,
        filter: &ReplyFilter,
        before: Option<ReplyId>,
        limit: i64,
    ) -> Result<Vec<Conversation>, StoreError> {
        let (cond, mut values) = conditions(filter);
        let mut having = Vec::new();
        if filter.unread {
            having.push("SUM(CASE WHEN r.read_at IS NULL THEN 1 ELSE 0 END) > 0".to_string());
        }
        if let Some(b) = before {
            values.push(FilterValue::Id(b.get()));
            having.push(format!("MAX(r.id) < ${}", values.len() + 1));
        }
        let having = if having.is_empty() {
            String::new()
        } else {
            format!(" HAVING {}", having.join(" AND "))
        };
        let sql = format!(
            "SELECT r.address, MAX(r.id) AS last_id, COUNT(*) AS replies, \
             CAST(SUM(CASE WHEN r.read_at IS NULL THEN 1 ELSE 0 END) AS BIGINT) AS unread \
             {REPLY_FROM} WHERE r.org_id = $1{cond} GROUP BY r.address{having} \
             ORDER BY last_id DESC LIMIT {}",
            limit.clamp(1, MAX_PAGE)
        );
        let q = bind_all(sqlx::query(AssertSqlSafe(sql)).bind(org_id), &values);
        let groups = q.fetch_all(&self.read).await?;
        // The page's last replies in one read, not one per conversation.
        let last_ids = groups
            .iter()
            .map(|g| g.try_get::<ReplyId, _>("last_id"))
            .collect::<Result<Vec<_>, _>>()?;
        let sql = format!(
            "SELECT {REPLY_COLUMNS} {REPLY_FROM} WHERE r.org_id = $1 AND r.id IN {}",
            self.dialect.json_ids("$2")
        );
        let mut last_replies: std::collections::HashMap<ReplyId, Reply> =
            sqlx::query(AssertSqlSafe(sql))
                .bind(org_id)
                .bind(crate::store::helpers::ids_json(last_ids.iter().copied()))
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(|r| reply_from_row(r).map(|reply| (reply.id, reply)))
                .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(groups.len());
        for (g, last_id) in groups.iter().zip(last_ids) {
            let Some(last) = last_replies.remove(&last_id) else {
                continue;
            };
            out.push(Conversation {
                address: g.try_get("address")?,
                contact_id: last.contact_id,
                contact_name: last.contact_name.clone(),
                replies: g.try_get("replies")?,
                unread: g.try_get("unread")?,
                last,
            });
        }
        Ok(out)
    }

    /// Marks the organisation's unread replies from `address` read; returns how many.
    pub async fn mark_replies_read(
        &self,
        org_id: OrgId,
        address: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE replies SET read_at = $1 WHERE org_id = $2 AND address = $3 AND read_at IS NULL",
        )
        .bind(now)
        .bind(org_id)
        .bind(address)
        .execute(&self.write)
        .await?
        .rows_affected())
    }

    /// The organisation's unread replies.
    pub async fn unread_replies(&self, org_id: OrgId) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM replies WHERE org_id = $1 AND read_at IS NULL",
            )
            .bind(org_id)
            .fetch_one(&self.read)
            .await?,
        )
    }

    /// The organisation's answer to HELP; None: HELP is recorded and not answered.
    pub async fn org_help_reply(&self, org_id: OrgId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT help_reply FROM organisations WHERE id = $1")
                .bind(org_id)
                .fetch_optional(&self.read)
                .await?
                .flatten(),
        )
    }

    pub async fn set_org_help_reply(
        &self,
        org_id: OrgId,
        text: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE organisations SET help_reply = $1 WHERE id = $2")
            .bind(text)
            .bind(org_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
