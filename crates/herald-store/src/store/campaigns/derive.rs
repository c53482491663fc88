//! Campaigns made from others, and the scheduled campaign taken back (docs/CAMPAIGNS.md):
//! a resend to the recipients whose messages ended in chosen statuses, a duplicate, and
//! unscheduling. Each is one write transaction scoped to the organisation, recorded in the
//! audit trail; the parent is locked while it is read, so a resend sees one state of it.

use crate::domain::{CampaignStatus, Derivation, MessageStatus};
use crate::ids::{CampaignId, ChannelId, ListId, OrgId};
use crate::store::campaigns::lifecycle::insert_event;
use crate::store::helpers::campaign_status_of;
use crate::store::{Campaign, Store, StoreError, Tx};
use sqlx::{AssertSqlSafe, Row};

/// The statuses a resend may choose: those a message ends in.
pub const RESENDABLE: &[MessageStatus] = &[
    MessageStatus::Failed,
    MessageStatus::Undelivered,
    MessageStatus::Skipped,
    MessageStatus::Cancelled,
    MessageStatus::Sent,
    MessageStatus::Delivered,
    MessageStatus::Read,
];

/// Longest campaign name (the API's rule for names).
const MAX_NAME: usize = 200;

/// What a resend made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendReport {
    /// The new draft campaign.
    pub campaign_id: CampaignId,
    /// The list that holds its audience, frozen when the resend was made.
    pub list_id: ListId,
    pub list_name: String,
    /// Messages of the parent in the chosen statuses.
    pub matched: i64,
    /// Distinct contacts in the new list.
    pub recipients: i64,
    /// Left out: the contact unsubscribed, or its address was suppressed, since.
    pub opted_out: i64,
    /// Left out: the contact was deleted since.
    pub no_contact: i64,
}

/// A campaign made from another, as its parent's page lists it.
#[derive(Debug, Clone)]
pub struct ChildCampaign {
    pub id: CampaignId,
    pub name: String,
    pub kind: Derivation,
    pub status: CampaignStatus,
    pub created_at: i64,
}

/// The parent's settings a derived campaign copies.
struct ParentRow {
    status: CampaignStatus,
    name: String,
    channel_id: ChannelId,
    list_id: ListId,
    body: String,
    auto_pause_percent: Option<i64>,
    auto_pause_window: Option<i64>,
    /// Its archive has begun: its messages are no longer all rows.
    archive_begun: bool,
}

/// `base` cut so that `base + suffix` fits in a name, on a character boundary.
fn name_with(base: &str, suffix: &str) -> String {
    let room = MAX_NAME.saturating_sub(suffix.chars().count());
    let cut: String = base.chars().take(room).collect();
    format!("{cut}{suffix}")
}

impl Store {
    async fn lock_parent(
        &self,
        tx: &mut Tx,
        org_id: OrgId,
        id: CampaignId,
    ) -> Result<ParentRow, StoreError> {
        let sql = format!(
            "SELECT status, name, channel_id, list_id, body, auto_pause_percent, auto_pause_window, \
             CAST(CASE WHEN archived_failures IS NULL THEN 0 ELSE 1 END AS BIGINT) AS archive_begun{} \
             FROM campaigns WHERE org_id = $1 AND id = $2{}",
            self.dialect.campaign_gate_column(true),
            self.dialect.lock_suffix()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "there is no campaign `{id}`: GET /api/v1/campaigns lists the campaigns there are"
                ))
            })?;
        Ok(ParentRow {
            status: campaign_status_of(&row, "status")?,
            name: row.try_get("name")?,
            channel_id: row.try_get("channel_id")?,
            list_id: row.try_get("list_id")?,
            body: row.try_get("body")?,
            auto_pause_percent: row.try_get("auto_pause_percent")?,
            auto_pause_window: row.try_get("auto_pause_window")?,
            archive_begun: row.try_get::<i64, _>("archive_begun")? != 0,
        })
    }

    /// Inserts the derived draft with the parent's settings and its creation event.
    #[allow(clippy::too_many_arguments)]
    async fn insert_derived(
        &self,
        tx: &mut Tx,
        org_id: OrgId,
        parent_id: CampaignId,
        parent: &ParentRow,
        kind: Derivation,
        name: &str,
        list_id: ListId,
        now: i64,
        actor: &str,
        reason: &str,
    ) -> Result<CampaignId, StoreError> {
        let id: CampaignId = sqlx::query_scalar(
            "INSERT INTO campaigns (org_id, name, channel_id, list_id, body, status, created_at, \
             auto_pause_percent, auto_pause_window, parent_id, parent_kind) \
             VALUES ($1, $2, $3, $4, $5, 'draft', $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(org_id)
        .bind(name)
        .bind(parent.channel_id)
        .bind(list_id)
        .bind(&parent.body)
        .bind(now)
        .bind(parent.auto_pause_percent)
        .bind(parent.auto_pause_window)
        .bind(parent_id)
        .bind(kind.as_str())
        .fetch_one(&mut **tx)
        .await?;
        // Its WhatsApp template and send window too: a resend sends what and when the
        // parent did.
        sqlx::query(
            "UPDATE campaigns SET whatsapp_template = (SELECT p.whatsapp_template FROM campaigns p WHERE p.id = $1), \
             email = (SELECT p.email FROM campaigns p WHERE p.id = $1), \
             send_window = (SELECT p.send_window FROM campaigns p WHERE p.id = $1) WHERE id = $2",
        )
        .bind(parent_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        insert_event(tx, id, now, actor, None, CampaignStatus::Draft, reason).await?;
        Ok(id)
    }

    /// A new draft campaign with the parent's channel, body and auto-pause setting, whose
    /// audience is a new list of exactly the parent's recipients whose messages are in
    /// `statuses` now, minus those who unsubscribed or were suppressed since and those
    /// whose contact was deleted. The parent must have started (a draft has no messages),
    /// and someone must be left to send to (else nothing is created: 409).
    pub async fn api_campaign_resend(
        &self,
        org_id: OrgId,
        parent_id: CampaignId,
        statuses: &[MessageStatus],
        name: Option<&str>,
        actor: &str,
    ) -> Result<ResendReport, StoreError> {
        if statuses.is_empty() || statuses.iter().any(|s| !RESENDABLE.contains(s)) {
            return Err(StoreError::Invalid(format!(
                "a resend chooses among the statuses a message ends in: {}",
                RESENDABLE
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let parent = self.lock_parent(&mut tx, org_id, parent_id).await?;
        if matches!(
            parent.status,
            CampaignStatus::Draft | CampaignStatus::Scheduled
        ) {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "campaign {parent_id} is {}: it has no messages to resend yet; a resend applies to a campaign that has started",
                parent.status
            )));
        }
        if parent.archive_begun {
            // Its recipients' outcomes are in the archive, one JSON chunk per thousand:
            // a resend reads message rows (docs/CAMPAIGNS.md, "Retention").
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "campaign {parent_id}'s messages were archived (message_retention_days): a resend reads its message rows, which are gone; its export has every recipient and outcome, to import as a list"
            )));
        }
        let status_list: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let statuses_json = serde_json::Value::from(status_list.clone()).to_string();
        let in_statuses = self.dialect.json_texts("$3");
        // Opted out: what the start would skip (docs/DESIGN.md invariant 2), judged on the
        // contact's address now, in the same organisation.
        let opted_out = "(ct.unsubscribed <> 0 OR EXISTS (SELECT 1 FROM suppressions s \
                         WHERE s.org_id = $1 AND s.address = ct.address))";
        let counts = sqlx::query(AssertSqlSafe(format!(
            "SELECT count(*) AS matched, count(ct.id) AS with_contact, \
             COALESCE(sum(CASE WHEN ct.id IS NOT NULL AND {opted_out} THEN 1 ELSE 0 END), 0) AS opted_out \
             FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
             LEFT JOIN contacts ct ON ct.id = m.contact_id AND ct.org_id = $1 \
             WHERE c.org_id = $1 AND m.campaign_id = $2 AND m.status IN {in_statuses}"
        )))
        .bind(org_id)
        .bind(parent_id)
        .bind(&statuses_json)
        .fetch_one(&mut *tx)
        .await?;
        let matched: i64 = counts.try_get("matched")?;
        let with_contact: i64 = counts.try_get("with_contact")?;
        let opted_out_n: i64 = counts.try_get("opted_out")?;

        let list_name = self
            .free_list_name(
                &mut tx,
                org_id,
                &format!("Resend of {parent_id}: {}", status_list.join(", ")),
            )
            .await?;
        let list_id: ListId = sqlx::query_scalar(
            "INSERT INTO lists (org_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(org_id)
        .bind(&list_name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let recipients = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO list_members (list_id, contact_id, added_at) \
             SELECT DISTINCT $4, ct.id, $5 FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
             JOIN contacts ct ON ct.id = m.contact_id AND ct.org_id = $1 \
             WHERE c.org_id = $1 AND m.campaign_id = $2 AND m.status IN {in_statuses} AND NOT {opted_out}"
        )))
        .bind(org_id)
        .bind(parent_id)
        .bind(&statuses_json)
        .bind(list_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;

        let no_contact = matched - with_contact;
        if recipients == 0 {
            // An empty draft and an empty list would only have to be deleted by hand.
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "campaign {parent_id} has no recipient to resend to: {matched} of its messages are {} ({opted_out_n} of them unsubscribed or suppressed since, {no_contact} with their contact deleted); nothing was created",
                status_list.join(" or ")
            )));
        }
        let name = match name {
            Some(n) => n.to_string(),
            None => name_with(&parent.name, " (resend)"),
        };
        let reason = format!(
            "created: resend of {parent_id} to its {} recipients ({recipients} in list {list_id}; left out: {opted_out_n} unsubscribed or suppressed since, {no_contact} whose contact was deleted)",
            status_list.join(", ")
        );
        let campaign_id = self
            .insert_derived(
                &mut tx,
                org_id,
                parent_id,
                &parent,
                Derivation::Resend,
                &name,
                list_id,
                now,
                actor,
                &reason,
            )
            .await?;
        tx.commit().await?;
        Ok(ResendReport {
            campaign_id,
            list_id,
            list_name,
            matched,
            recipients,
            opted_out: opted_out_n,
            no_contact,
        })
    }

    /// `base`, or `base #2`, `base #3`, … : the first list name the organisation does not
    /// use yet.
    async fn free_list_name(
        &self,
        tx: &mut Tx,
        org_id: OrgId,
        base: &str,
    ) -> Result<String, StoreError> {
        for n in 1..=1000 {
            let candidate = if n == 1 {
                name_with(base, "")
            } else {
                name_with(base, &format!(" #{n}"))
            };
            let taken = sqlx::query("SELECT 1 FROM lists WHERE org_id = $1 AND name = $2")
                .bind(org_id)
                .bind(&candidate)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            if !taken {
                return Ok(candidate);
            }
        }
        Err(StoreError::Conflict(format!(
            "a thousand lists are already named `{base}`: delete some, then resend again"
        )))
    }

    /// A new draft with the parent's name (`Copy of …` unless `name`), channel, list, body
    /// and auto-pause setting; any campaign can be duplicated.
    pub async fn api_campaign_duplicate(
        &self,
        org_id: OrgId,
        parent_id: CampaignId,
        name: Option<&str>,
        actor: &str,
    ) -> Result<CampaignId, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let parent = self.lock_parent(&mut tx, org_id, parent_id).await?;
        let name = match name {
            Some(n) => n.to_string(),
            None => name_with(&format!("Copy of {}", parent.name), ""),
        };
        let reason = format!("created: duplicate of {parent_id}");
        let id = self
            .insert_derived(
                &mut tx,
                org_id,
                parent_id,
                &parent,
                Derivation::Duplicate,
                &name,
                parent.list_id,
                now,
                actor,
                &reason,
            )
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Takes a scheduled campaign back to draft: one conditional `UPDATE … WHERE status =
    /// 'scheduled'`, so a campaign the scheduler started first is refused, not unstarted.
    pub async fn api_campaign_unschedule(
        &self,
        org_id: OrgId,
        id: CampaignId,
        actor: &str,
    ) -> Result<Campaign, StoreError> {
        if !self
            .scheduled_to_draft(id, Some(org_id), actor, "unscheduled: back to draft")
            .await?
        {
            return Err(self
                .api_campaign_refusal(org_id, id, "`unschedule`", "scheduled")
                .await);
        }
        self.api_campaign(org_id, id).await
    }

    /// A scheduled campaign whose start is refused for good (its segment's filter names a
    /// list that is gone) goes back to draft with the reason in its audit trail, instead of
    /// being retried unseen at every scheduler tick. False when it is no longer scheduled.
    pub async fn refuse_scheduled_start(
        &self,
        id: CampaignId,
        actor: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        let reason = format!("scheduled start refused, back to draft: {why}");
        self.scheduled_to_draft(id, None, actor, &reason).await
    }

    /// One conditional `UPDATE … WHERE status = 'scheduled'` (of the organisation's, when
    /// given) back to draft, with its audit event: a campaign the scheduler started first
    /// is not unstarted. True when this call moved it.
    async fn scheduled_to_draft(
        &self,
        id: CampaignId,
        org_id: Option<OrgId>,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE campaigns SET status = 'draft', scheduled_at = NULL \
             WHERE id = $1 AND status = 'scheduled' AND ($2 < 0 OR org_id = $2) RETURNING id",
        )
        .bind(id)
        // Any organisation: -1, which no id is.
        .bind(org_id.map_or(-1, |o| o.get()))
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_event(
            &mut tx,
            id,
            now,
            actor,
            Some(CampaignStatus::Scheduled),
            CampaignStatus::Draft,
            reason,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The campaigns made from this one, oldest first.
    pub async fn api_campaign_children(
        &self,
        org_id: OrgId,
        id: CampaignId,
    ) -> Result<Vec<ChildCampaign>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, parent_kind, status, created_at FROM campaigns \
             WHERE org_id = $1 AND parent_id = $2 ORDER BY id LIMIT 1000",
        )
        .bind(org_id)
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("parent_kind")?;
                Ok(ChildCampaign {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    kind: Derivation::parse(&kind).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown campaign parent kind `{kind}`"))
                    })?,
                    status: campaign_status_of(r, "status")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::name_with;

    #[test]
    fn derived_names_fit_the_name_rule() {
        assert_eq!(
            name_with("Spring sale", " (resend)"),
            "Spring sale (resend)"
        );
        let long = "é".repeat(300);
        let named = name_with(&long, " (resend)");
        assert_eq!(named.chars().count(), 200);
        assert!(named.ends_with(" (resend)"));
    }
}
