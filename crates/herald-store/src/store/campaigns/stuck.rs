//! The stored "stuck" mark of a sending campaign (migration 0012): the reconciler computes
//! stuck campaigns (engine::health) and records each occurrence once, with the engine's
//! reason, in the transaction that writes `campaign.stuck`; the mark is cleared with
//! `campaign.unstuck` when the campaign progresses again or leaves `sending`. Both writes
//! are conditional, so any number of instances report an occurrence exactly once.

use crate::events::EventType;
use crate::ids::{CampaignId, ChannelId};
use crate::store::events::outbox;
use crate::store::{Store, StoreError};
use sqlx::Row;

/// The campaign as the stuck events name it.
fn campaign_json(id: CampaignId, row: &sqlx::any::AnyRow) -> Result<serde_json::Value, StoreError> {
    Ok(serde_json::json!({
        "id": id.to_string(),
        "name": row.try_get::<String, _>("name")?,
        "channel_id": ChannelId(row.try_get("channel_id")?).to_string(),
        "status": row.try_get::<String, _>("status")?,
    }))
}

/// The campaign's last progress as SQL: its last recorded outcome, else its start.
const LAST_PROGRESS: &str = "COALESCE(last_progress_at, started_at, created_at)";

impl Store {
    /// Marks a sending campaign stuck since `now` with the engine's `reason`, unless it is
    /// marked already or made progress after `idle_before`; writes `campaign.stuck` in the
    /// same transaction. True when this call marked it.
    pub async fn mark_stuck(
        &self,
        campaign_id: CampaignId,
        now: i64,
        idle_before: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        // Marked already (the usual case on every pass while it stays stuck): no write
        // transaction. The conditional write below is what decides.
        let marked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT stuck_since FROM campaigns WHERE id = $1")
                .bind(campaign_id)
                .fetch_optional(&self.read)
                .await?;
        if !matches!(marked, Some(None)) {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        let sql = format!(
            "UPDATE campaigns SET stuck_since = $1, stuck_reason = $2 \
             WHERE id = $3 AND status = 'sending' AND stuck_since IS NULL AND {LAST_PROGRESS} <= $4 \
             AND queued + in_flight + retry_wait + in_doubt > 0 \
             RETURNING org_id, name, channel_id, status, {LAST_PROGRESS} AS progress_at, \
             queued + in_flight + retry_wait + in_doubt AS pending"
        );
        let row = sqlx::query(crate::store::sql_str(&sql))
            .bind(now)
            .bind(reason)
            .bind(campaign_id)
            .bind(idle_before)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let progress_at: i64 = row.try_get("progress_at")?;
        let data = serde_json::json!({
            "campaign": campaign_json(campaign_id, &row)?,
            "reason": reason,
            "pending": row.try_get::<i64, _>("pending")?,
            "last_progress_at": crate::clock::rfc3339(progress_at),
            "no_progress_for_ms": (now - progress_at).max(0),
        });
        outbox::emit(
            &mut tx,
            row.try_get("org_id")?,
            EventType::CampaignStuck,
            Some(campaign_id),
            now,
            data,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Clears the stuck mark of every campaign that made progress after it was marked or
    /// is no longer sending, each in its own transaction with its `campaign.unstuck`
    /// event. Returns the campaigns cleared by this call.
    pub async fn clear_unstuck(&self, now: i64) -> Result<Vec<CampaignId>, StoreError> {
        let cond = format!("(status <> 'sending' OR {LAST_PROGRESS} > stuck_since)");
        let candidates: Vec<(CampaignId, i64)> = sqlx::query(crate::store::sql_str(&format!(
            "SELECT id, stuck_since FROM campaigns WHERE stuck_since IS NOT NULL AND {cond} ORDER BY id"
        )))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("stuck_since")?)))
        .collect::<Result<_, StoreError>>()?;
        let mut cleared = Vec::new();
        for (id, since) in candidates {
            let mut tx = self.begin().await?;
            let reason: Option<String> = sqlx::query_scalar(
                "SELECT stuck_reason FROM campaigns WHERE id = $1 AND stuck_since = $2",
            )
            .bind(id)
            .bind(since)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
            let row = sqlx::query(crate::store::sql_str(&format!(
                "UPDATE campaigns SET stuck_since = NULL, stuck_reason = NULL \
                 WHERE id = $1 AND stuck_since = $2 AND {cond} \
                 RETURNING org_id, name, channel_id, status, {LAST_PROGRESS} AS progress_at"
            )))
            .bind(id)
            .bind(since)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                continue;
            };
            let status: String = row.try_get("status")?;
            let resolution = if status == "sending" {
                "progressed again".to_string()
            } else {
                format!("no longer sending: {status}")
            };
            let data = serde_json::json!({
                "campaign": campaign_json(id, &row)?,
                "reason": reason,
                "resolution": resolution,
                "stuck_since": crate::clock::rfc3339(since),
                "stuck_for_ms": (now - since).max(0),
            });
            outbox::emit(
                &mut tx,
                row.try_get("org_id")?,
                EventType::CampaignUnstuck,
                Some(id),
                now,
                data,
            )
            .await?;
            tx.commit().await?;
            cleared.push(id);
        }
        Ok(cleared)
    }
}
