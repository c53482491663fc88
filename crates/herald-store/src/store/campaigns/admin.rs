//! Campaigns as the HTTP API manages them: every query here is scoped to one organisation
//! (another organisation's campaign, channel, list or contact is "not found"), lists are
//! pages in id order, and every change is a conditional write whose `WHERE` clause states
//! its precondition (`status = 'draft'`), recorded in the campaign's audit trail.

use crate::domain::{CampaignStatus, MessageStatus};
use crate::ids::{CampaignId, ChannelId, ContactId, EventId, ListId, MessageId, OrgId};
use crate::store::campaigns::lifecycle::insert_event;
use crate::store::campaigns::reads::{
    CAMPAIGN_COLUMNS, CAMPAIGN_FROM, campaign_from_row, event_from_row, message_from_row,
};
use crate::store::directory::contacts::list_from_row;
use crate::store::helpers::campaign_status_of;
use crate::store::{
    Campaign, CampaignEvent, ChannelInfo, ContactInput, DraftEdit, ListInfo, MessageInfo, Store,
    StoreError,
};
use sqlx::{AssertSqlSafe, Row};

fn no_campaign(id: CampaignId) -> StoreError {
    StoreError::NotFound(format!(
        "there is no campaign `{id}`: GET /api/v1/campaigns lists the campaigns there are"
    ))
}

fn refused(id: CampaignId, status: CampaignStatus, what: &str, allowed: &str) -> StoreError {
    StoreError::Conflict(format!(
        "campaign {id} is {status}: {what} applies only to a campaign that is {allowed}"
    ))
}

impl Store {
    /// One campaign of the organisation.
    pub async fn api_campaign(
        &self,
        org_id: OrgId,
        id: CampaignId,
    ) -> Result<Campaign, StoreError> {
        let sql =
            format!("SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.org_id = $1 AND c.id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| no_campaign(id))?;
        campaign_from_row(&row)
    }

    /// The campaign and the id of its latest audit event (0 when it has none): one cheap
    /// read per tick of a live event stream.
    pub async fn api_campaign_poll(
        &self,
        org_id: OrgId,
        id: CampaignId,
    ) -> Result<(Campaign, EventId), StoreError> {
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS}, \
             (SELECT COALESCE(max(e.id), 0) FROM campaign_events e WHERE e.campaign_id = c.id) AS last_event_id \
             {CAMPAIGN_FROM} WHERE c.org_id = $1 AND c.id = $2"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| no_campaign(id))?;
        Ok((campaign_from_row(&row)?, row.try_get("last_event_id")?))
    }

    /// A page of the organisation's campaigns in id order, optionally of one status.
    pub async fn api_campaigns(
        &self,
        org_id: OrgId,
        status: Option<CampaignStatus>,
        after_id: CampaignId,
        limit: i64,
    ) -> Result<Vec<Campaign>, StoreError> {
        let filter = if status.is_some() {
            "AND c.status = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.org_id = $1 AND c.id > $2 {filter} \
             ORDER BY c.id LIMIT $3"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(after_id)
            .bind(limit);
        if let Some(s) = status {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.read).await?;
        rows.iter().map(campaign_from_row).collect()
    }

    /// A channel of the organisation, or None.
    pub async fn api_campaign_channel(
        &self,
        org_id: OrgId,
        channel_id: ChannelId,
    ) -> Result<Option<ChannelInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, name, kind, config, secrets, rate_per_sec, pricing, created_at FROM channels WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(channel_id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(Self::channel_from_row).transpose()
    }

    /// A list of the organisation, or None.
    pub async fn api_campaign_list(
        &self,
        org_id: OrgId,
        list_id: ListId,
    ) -> Result<Option<ListInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT l.id, l.name, (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS members \
             FROM lists l WHERE l.org_id = $1 AND l.id = $2",
        )
        .bind(org_id)
        .bind(list_id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(list_from_row).transpose()
    }

    /// A contact of the organisation, as a template sees it, or None.
    pub async fn api_campaign_contact(
        &self,
        org_id: OrgId,
        contact_id: ContactId,
    ) -> Result<Option<ContactInput>, StoreError> {
        // Name and attributes bounded as every read of contacts is.
        let sql = format!(
            "SELECT c.address, {}, c.unsubscribed FROM contacts c WHERE c.org_id = $1 AND c.id = $2",
            crate::store::directory::bounded_contact_fields("c")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(contact_id)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let attributes: String = row.try_get("attributes")?;
        let attributes = match serde_json::from_str::<serde_json::Value>(&attributes) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => serde_json::Map::new(),
            Err(e) => {
                return Err(StoreError::Corrupt(format!(
                    "contact {contact_id} has attributes that are not JSON: {e}"
                )));
            }
        };
        Ok(Some(ContactInput {
            address: row.try_get("address")?,
            name: row.try_get("name")?,
            attributes,
            unsubscribed: Some(row.try_get::<i64, _>("unsubscribed")? != 0),
        }))
    }

    /// Why a conditional write on the campaign matched nothing: it is not there (for this
    /// organisation), or it is in another status.
    pub(super) async fn api_campaign_refusal(
        &self,
        org_id: OrgId,
        id: CampaignId,
        what: &str,
        allowed: &str,
    ) -> StoreError {
        match self.api_campaign_status(org_id, id).await {
            Ok(status) => refused(id, status, what, allowed),
            Err(e) => e,
        }
    }

    /// Edits a draft or a scheduled campaign: one conditional `UPDATE … WHERE status = <the
    /// status read under the lock>`, so an edit can never change a campaign that has
    /// started (the scheduler's start waits for the lock, then sees the edit). Only the
    /// given fields change; the caller has checked that the channel and list belong to
    /// the organisation.
    pub async fn api_campaign_update_draft(
        &self,
        org_id: OrgId,
        id: CampaignId,
        edit: &DraftEdit<'_>,
        actor: &str,
    ) -> Result<Campaign, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let status = match self.api_campaign_lock(&mut tx, org_id, id).await {
            Ok(s) => s,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        if !matches!(status, CampaignStatus::Draft | CampaignStatus::Scheduled) {
            tx.rollback().await?;
            return Err(refused(id, status, "editing", "draft or scheduled"));
        }
        let changed = sqlx::query(
            "UPDATE campaigns SET name = COALESCE($1, name), body = COALESCE($2, body), \
             channel_id = COALESCE($3, channel_id), list_id = COALESCE($4, list_id), \
             whatsapp_template = CASE WHEN $8 = 1 THEN $9 ELSE whatsapp_template END, \
             email = CASE WHEN $10 = 1 THEN $11 ELSE email END \
             WHERE org_id = $5 AND id = $6 AND status = $7 \
             AND (TRIM(COALESCE($2, body)) <> '' \
                  OR COALESCE(CASE WHEN $10 = 1 THEN $11 ELSE email END, '') LIKE '%\"html\":%')",
        )
        .bind(edit.name)
        .bind(edit.body)
        .bind(edit.channel_id)
        .bind(edit.list_id)
        .bind(org_id)
        .bind(id)
        .bind(status.as_str())
        .bind(i64::from(edit.whatsapp_template.is_some()))
        .bind(crate::store::campaigns::lifecycle::template_json(
            edit.whatsapp_template.flatten(),
        ))
        .bind(i64::from(edit.email.is_some()))
        .bind(crate::store::campaigns::lifecycle::email_json(
            edit.email.flatten(),
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            // The status was checked under the lock: what refused the write is the rule
            // that an empty body needs an HTML part to take its text from, checked here
            // again because two edits (one emptying the body, one removing the email
            // parts) may each have passed it alone.
            tx.rollback().await?;
            return Err(StoreError::Invalid(format!(
                "campaign {id} would have an empty body and no email HTML part to derive its text from: give it a body, or keep the email's HTML"
            )));
        }
        let fields: Vec<&str> = [
            edit.name.map(|_| "name"),
            edit.body.map(|_| "body"),
            edit.channel_id.map(|_| "channel"),
            edit.list_id.map(|_| "list"),
            edit.whatsapp_template.map(|_| "whatsapp template"),
            edit.email.map(|_| "email"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let reason = format!("edited: {}", fields.join(", "));
        insert_event(&mut tx, id, now, actor, Some(status), status, &reason).await?;
        tx.commit().await?;
        self.api_campaign(org_id, id).await
    }

    /// Locks the organisation's campaign for the rest of the transaction and returns its
    /// status.
    async fn api_campaign_lock(
        &self,
        tx: &mut crate::store::Tx,
        org_id: OrgId,
        id: CampaignId,
    ) -> Result<CampaignStatus, StoreError> {
        let sql = format!(
            "SELECT status{} FROM campaigns WHERE org_id = $1 AND id = $2{}",
            self.dialect.campaign_gate_column(true),
            self.dialect.lock_suffix()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        match row {
            Some(r) => campaign_status_of(&r, "status"),
            None => Err(no_campaign(id)),
        }
    }

    /// Deletes a draft and its audit trail (it never sent anything); anything else is
    /// refused.
    pub async fn api_campaign_delete_draft(
        &self,
        org_id: OrgId,
        id: CampaignId,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let status = match self.api_campaign_lock(&mut tx, org_id, id).await {
            Ok(s) => s,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        if status != CampaignStatus::Draft {
            tx.rollback().await?;
            return Err(refused(id, status, "deleting", "draft (cancel it instead)"));
        }
        sqlx::query("DELETE FROM campaign_events WHERE campaign_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM campaigns WHERE org_id = $1 AND id = $2 AND status = 'draft'")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Schedules a draft (or reschedules a scheduled campaign) to start at `at`; the
    /// scheduler's conditional start does the rest.
    pub async fn api_campaign_schedule(
        &self,
        org_id: OrgId,
        id: CampaignId,
        at: i64,
        actor: &str,
    ) -> Result<Campaign, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let from = match self.api_campaign_lock(&mut tx, org_id, id).await {
            Ok(s) => s,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        if !matches!(from, CampaignStatus::Draft | CampaignStatus::Scheduled) {
            tx.rollback().await?;
            return Err(refused(id, from, "`schedule`", "draft or scheduled"));
        }
        sqlx::query(
            "UPDATE campaigns SET status = 'scheduled', scheduled_at = $1 \
             WHERE org_id = $2 AND id = $3 AND status = $4",
        )
        .bind(at)
        .bind(org_id)
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        let verb = if from == CampaignStatus::Scheduled {
            "rescheduled"
        } else {
            "scheduled"
        };
        let reason = format!("{verb} for {}", crate::clock::rfc3339(at));
        insert_event(
            &mut tx,
            id,
            now,
            actor,
            Some(from),
            CampaignStatus::Scheduled,
            &reason,
        )
        .await?;
        tx.commit().await?;
        self.api_campaign(org_id, id).await
    }

    /// A page of the campaign's audit trail in id order.
    pub async fn api_campaign_events(
        &self,
        org_id: OrgId,
        id: CampaignId,
        after_id: EventId,
        limit: i64,
    ) -> Result<Vec<CampaignEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.campaign_id, e.at, e.actor, e.from_status, e.to_status, e.reason \
             FROM campaign_events e JOIN campaigns c ON c.id = e.campaign_id \
             WHERE c.org_id = $1 AND e.campaign_id = $2 AND e.id > $3 ORDER BY e.id LIMIT $4",
        )
        .bind(org_id)
        .bind(id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// A page of the campaign's messages in id order, optionally of one status.
    pub async fn api_campaign_messages(
        &self,
        org_id: OrgId,
        id: CampaignId,
        status: Option<MessageStatus>,
        after_id: MessageId,
        limit: i64,
    ) -> Result<Vec<MessageInfo>, StoreError> {
        let filter = if status.is_some() {
            "AND m.status = $5"
        } else {
            ""
        };
        // One range of the primary key a page, the organisation checked in the bounds, as
        // the export reads (campaigns/export.rs): with a join on `campaign_id`, SQLite
        // sorted every message of the campaign for each page.
        let range = super::export::MESSAGE_RANGE;
        let sql = format!(
            "SELECT m.id, m.campaign_id, m.address, m.status, m.attempts, m.next_attempt_at, m.owner, \
             m.provider_id, m.last_error, m.was_in_doubt, m.updated_at, m.sent_at, m.clicks \
             FROM messages m \
             WHERE {range} {filter} ORDER BY m.id LIMIT $4"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .bind(after_id)
            .bind(limit);
        if let Some(s) = status {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.read).await?;
        rows.iter().map(message_from_row).collect()
    }

    /// The campaign's status only (for callers that need nothing else).
    pub async fn api_campaign_status(
        &self,
        org_id: OrgId,
        id: CampaignId,
    ) -> Result<CampaignStatus, StoreError> {
        let row = sqlx::query("SELECT status FROM campaigns WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| no_campaign(id))?;
        campaign_status_of(&row, "status")
    }
}
