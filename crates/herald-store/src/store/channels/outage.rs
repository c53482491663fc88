//! Provider outages, as every instance sees them: a channel marked `unavailable` (since
//! when, why), the campaigns the engine paused for it, the probe one instance at a time
//! runs against the provider, and the resume when it answers again. Every change is a
//! conditional write whose `WHERE` clause states its precondition, and every campaign
//! change is in its audit trail, in the same transaction.

use crate::domain::CampaignStatus;
use crate::events::EventType;
use crate::ids::{CampaignId, ChannelId, OrgId};
use crate::store::campaigns::lifecycle::insert_event;
use crate::store::events::outbox;
use crate::store::{Store, StoreError, Tx};
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeSet;

/// A channel that is unavailable: its provider stopped answering.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelOutage {
    pub channel_id: ChannelId,
    pub org_id: OrgId,
    pub name: String,
    pub kind: String,
    /// Since when (epoch ms).
    pub since: i64,
    /// Why, in one line (e.g. "connection refused").
    pub reason: String,
    /// The instance probing the provider now, and until when its claim holds.
    pub probe_owner: Option<String>,
    pub probe_until: Option<i64>,
}

impl ChannelOutage {
    /// What a person reads: "channel `sms-us` unreachable since 2026-12-02T10:42:05Z:
    /// connection refused".
    /// A channel whose credentials were refused is "unavailable", not "unreachable".
    pub fn describe(&self) -> String {
        let state = if self.reason.starts_with(CREDENTIALS_REFUSED) {
            "unavailable"
        } else {
            "unreachable"
        };
        format!(
            "channel `{}` {state} since {}: {}",
            self.name,
            crate::clock::rfc3339(self.since),
            self.reason
        )
    }
}

/// How the reason of an outage for refused credentials starts
/// (`channels::classify::credentials_refused`); new secrets end such an outage.
pub const CREDENTIALS_REFUSED: &str = "credentials refused";

const OUTAGE_COLUMNS: &str =
    "id, org_id, name, kind, unavailable_since, unavailable_reason, probe_owner, probe_until";

/// The channel as the channel events name it.
fn channel_json(id: ChannelId, row: &sqlx::any::AnyRow) -> Result<serde_json::Value, StoreError> {
    Ok(serde_json::json!({
        "id": id.to_string(),
        "name": row.try_get::<String, _>("name")?,
        "kind": row.try_get::<String, _>("kind")?,
    }))
}

fn outage_from_row(r: &sqlx::any::AnyRow) -> Result<ChannelOutage, StoreError> {
    Ok(ChannelOutage {
        channel_id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        since: r.try_get("unavailable_since")?,
        reason: r
            .try_get::<Option<String>, _>("unavailable_reason")?
            .unwrap_or_default(),
        probe_owner: r.try_get("probe_owner")?,
        probe_until: r.try_get("probe_until")?,
    })
}

impl Store {
    /// Every unavailable channel, of every organisation (the engine's view).
    pub async fn channel_outages(&self) -> Result<Vec<ChannelOutage>, StoreError> {
        let sql = format!(
            "SELECT {OUTAGE_COLUMNS} FROM channels WHERE unavailable_since IS NOT NULL ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(outage_from_row).collect()
    }

    /// Every channel of every organisation, and whether it is unavailable (the
    /// `herald_channel_unavailable` gauge).
    pub async fn channel_availability(&self) -> Result<Vec<(ChannelId, bool)>, StoreError> {
        let rows = sqlx::query("SELECT id, unavailable_since FROM channels ORDER BY id")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get::<Option<i64>, _>("unavailable_since")?.is_some(),
                ))
            })
            .collect()
    }

    /// The unavailable channels of one organisation.
    pub async fn org_channel_outages(
        &self,
        org_id: OrgId,
    ) -> Result<Vec<ChannelOutage>, StoreError> {
        let sql = format!(
            "SELECT {OUTAGE_COLUMNS} FROM channels WHERE org_id = $1 AND unavailable_since IS NOT NULL ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(outage_from_row).collect()
    }

    /// The channel's outage, or None while it is available.
    pub async fn channel_outage(
        &self,
        channel_id: ChannelId,
    ) -> Result<Option<ChannelOutage>, StoreError> {
        let sql = format!(
            "SELECT {OUTAGE_COLUMNS} FROM channels WHERE id = $1 AND unavailable_since IS NOT NULL"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(channel_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(outage_from_row).transpose()
    }

    /// Marks the channel unavailable, unless it already is: true when this call did it
    /// (exactly one instance wins the conditional write).
    pub async fn mark_channel_unavailable(
        &self,
        channel_id: ChannelId,
        now: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE channels SET unavailable_since = $1, unavailable_reason = $2, probe_owner = NULL, probe_until = NULL \
             WHERE id = $3 AND unavailable_since IS NULL RETURNING org_id, name, kind",
        )
        .bind(now)
        .bind(reason)
        .bind(channel_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let data = serde_json::json!({
            "channel": channel_json(channel_id, &row)?,
            "reason": reason,
            "unavailable_since": crate::clock::rfc3339(now),
        });
        outbox::emit(
            &mut tx,
            row.try_get("org_id")?,
            EventType::ChannelUnavailable,
            None,
            now,
            data,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Pauses every sending campaign of the channel for its outage, each conditional on
    /// still sending and recorded in its audit trail with `reason`; the campaigns remember
    /// the channel, so the probe resumes them (and only them) when it answers again.
    /// Returns the campaigns paused by this call.
    pub async fn pause_for_outage(
        &self,
        channel_id: ChannelId,
        only: Option<CampaignId>,
        now: i64,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<CampaignId>, StoreError> {
        let candidates: Vec<CampaignId> = sqlx::query_scalar(
            "SELECT id FROM campaigns WHERE channel_id = $1 AND status = 'sending' ORDER BY id",
        )
        .bind(channel_id)
        .fetch_all(&self.write)
        .await?;
        let ids: BTreeSet<CampaignId> = candidates
            .into_iter()
            .filter(|id| only.is_none_or(|o| o == *id))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let statuses = self.lock_campaigns(&mut tx, &ids).await?;
        let mut paused = Vec::new();
        for id in ids {
            if statuses.get(&id) != Some(&CampaignStatus::Sending) {
                continue;
            }
            let r = sqlx::query(
                "UPDATE campaigns SET status = 'paused', outage_channel_id = $1 \
                 WHERE id = $2 AND status = 'sending' AND channel_id = $1",
            )
            .bind(channel_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 1 {
                insert_event(
                    &mut tx,
                    id,
                    now,
                    actor,
                    Some(CampaignStatus::Sending),
                    CampaignStatus::Paused,
                    reason,
                )
                .await?;
                paused.push(id);
            }
        }
        tx.commit().await?;
        Ok(paused)
    }

    /// Claims the channel's probe for `owner` until `until`, unless another instance holds
    /// an unexpired claim or the channel is available again: true when this instance
    /// probes now.
    pub async fn claim_probe(
        &self,
        channel_id: ChannelId,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE channels SET probe_owner = $1, probe_until = $2 \
             WHERE id = $3 AND unavailable_since IS NOT NULL AND (probe_until IS NULL OR probe_until <= $4)",
        )
        .bind(owner)
        .bind(until)
        .bind(channel_id)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Marks the channel available again, if it is still in the outage that started at
    /// `since`: true when this call ended it.
    pub async fn mark_channel_available(
        &self,
        channel_id: ChannelId,
        since: i64,
    ) -> Result<bool, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let reason: Option<Option<String>> = sqlx::query_scalar(
            "SELECT unavailable_reason FROM channels WHERE id = $1 AND unavailable_since = $2",
        )
        .bind(channel_id)
        .bind(since)
        .fetch_optional(&mut *tx)
        .await?;
        let row = sqlx::query(
            "UPDATE channels SET unavailable_since = NULL, unavailable_reason = NULL, probe_owner = NULL, probe_until = NULL \
             WHERE id = $1 AND unavailable_since = $2 RETURNING org_id, name, kind",
        )
        .bind(channel_id)
        .bind(since)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let data = serde_json::json!({
            "channel": channel_json(channel_id, &row)?,
            "unavailable_since": crate::clock::rfc3339(since),
            "unavailable_for_ms": (now - since).max(0),
            "reason": reason.flatten(),
        });
        outbox::emit(
            &mut tx,
            row.try_get("org_id")?,
            EventType::ChannelAvailable,
            None,
            now,
            data,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A person gave the channel new secrets: ends its outage if the provider had refused
    /// its credentials (an outage of the network stays for the probe to end). A conditional
    /// write scoped by organisation: only the outage read, only if still that kind.
    /// Returns the outage ended.
    pub async fn end_credentials_outage(
        &self,
        org_id: OrgId,
        channel_id: ChannelId,
    ) -> Result<Option<ChannelOutage>, StoreError> {
        let sql = format!(
            "SELECT {OUTAGE_COLUMNS} FROM channels WHERE org_id = $1 AND id = $2 AND unavailable_since IS NOT NULL"
        );
        let Some(outage) = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(channel_id)
            .fetch_optional(&self.write)
            .await?
            .as_ref()
            .map(outage_from_row)
            .transpose()?
        else {
            return Ok(None);
        };
        if !outage.reason.starts_with(CREDENTIALS_REFUSED) {
            return Ok(None);
        }
        let r = sqlx::query(
            "UPDATE channels SET unavailable_since = NULL, unavailable_reason = NULL, probe_owner = NULL, probe_until = NULL \
             WHERE org_id = $1 AND id = $2 AND unavailable_since = $3 AND unavailable_reason = $4",
        )
        .bind(org_id)
        .bind(channel_id)
        .bind(outage.since)
        .bind(&outage.reason)
        .execute(&self.write)
        .await?;
        Ok((r.rows_affected() == 1).then_some(outage))
    }

    /// Resumes the campaigns the engine paused for this channel's outage and nobody
    /// touched since (a person's pause, resume or cancel clears the mark): each conditional
    /// on still being paused for it, recorded in its audit trail. A campaign with nothing
    /// left to send completes in the same transaction. Returns the campaigns resumed.
    pub async fn resume_after_outage(
        &self,
        channel_id: ChannelId,
        now: i64,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<CampaignId>, StoreError> {
        let candidates: Vec<CampaignId> = sqlx::query_scalar(
            "SELECT id FROM campaigns WHERE outage_channel_id = $1 AND status = 'paused' ORDER BY id",
        )
        .bind(channel_id)
        .fetch_all(&self.write)
        .await?;
        let ids: BTreeSet<CampaignId> = candidates.into_iter().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let statuses = self.lock_campaigns(&mut tx, &ids).await?;
        let mut resumed = Vec::new();
        for id in ids {
            if statuses.get(&id) != Some(&CampaignStatus::Paused) {
                continue;
            }
            if self
                .resume_one_after_outage(&mut tx, id, channel_id, now, actor, reason)
                .await?
            {
                resumed.push(id);
            }
        }
        tx.commit().await?;
        Ok(resumed)
    }

    async fn resume_one_after_outage(
        &self,
        tx: &mut Tx,
        id: CampaignId,
        channel_id: ChannelId,
        now: i64,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE campaigns SET status = 'sending', outage_channel_id = NULL \
             WHERE id = $1 AND status = 'paused' AND outage_channel_id = $2",
        )
        .bind(id)
        .bind(channel_id)
        .execute(&mut **tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(
            tx,
            id,
            now,
            actor,
            Some(CampaignStatus::Paused),
            CampaignStatus::Sending,
            reason,
        )
        .await?;
        self.restart_failure_window(tx, id).await?;
        self.complete_if_drained(tx, id, now, actor, "resumed with nothing pending")
            .await?;
        Ok(true)
    }

    /// The outage a campaign is paused for, when the engine paused it for one and its
    /// channel is still unavailable.
    pub async fn campaign_outage(
        &self,
        campaign_id: CampaignId,
    ) -> Result<Option<ChannelOutage>, StoreError> {
        let sql = format!(
            "SELECT {} FROM campaigns c JOIN channels ch ON ch.id = c.outage_channel_id \
             WHERE c.id = $1 AND c.status = 'paused' AND ch.unavailable_since IS NOT NULL",
            OUTAGE_COLUMNS
                .split(", ")
                .map(|c| format!("ch.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(campaign_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(outage_from_row).transpose()
    }

    /// Channels available again that still have campaigns paused for their outage (the
    /// instance that ended the outage stopped before resuming them).
    pub async fn outage_pauses_of_available_channels(
        &self,
    ) -> Result<Vec<(ChannelId, String)>, StoreError> {
        let ids: Vec<(ChannelId, String)> = sqlx::query_as(
            "SELECT DISTINCT c.outage_channel_id, ch.name FROM campaigns c JOIN channels ch ON ch.id = c.outage_channel_id \
             WHERE c.status = 'paused' AND ch.unavailable_since IS NULL ORDER BY c.outage_channel_id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(ids)
    }

    /// Why a paused campaign is paused: the reason of its latest pause in the audit trail
    /// (the engine's, naming the unavailable channel and since when, or a person's).
    pub async fn paused_reason(
        &self,
        campaign_id: CampaignId,
    ) -> Result<Option<String>, StoreError> {
        let reason: Option<String> = sqlx::query_scalar(
            "SELECT e.reason FROM campaign_events e JOIN campaigns c ON c.id = e.campaign_id \
             WHERE e.campaign_id = $1 AND c.status = 'paused' AND e.to_status = 'paused' \
             ORDER BY e.id DESC LIMIT 1",
        )
        .bind(campaign_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(reason)
    }
}
