//! Alerts to people (migration 0015, docs/ALERTS.md): an organisation's alert settings and
//! recipients, the fan-out of alert-worthy outbox events into one alert per recipient, the
//! claims and outcomes of sending them, and the `campaign.in_doubt` occurrence mark.
//!
//! Once per occurrence: an occurrence is one outbox event (itself written once by a
//! conditional write: the stuck mark, the outage, the auto-pause), and an alert is unique per
//! (event, recipient), so however many instances fan out, each recipient gets one alert.
//! Sending is claimed like messages (owner + lease); an outcome is written only by the
//! claim's holder.

use super::outbox::{emit, outbox_event_from_row};
use crate::alerts::{AlertText, CandidateChannel, DEFAULT_IN_DOUBT_THRESHOLD};
use crate::events::EventType;
use crate::ids::{AlertId, CampaignId, ChannelId, NotificationId, OrgId};
use crate::store::{Store, StoreError, sql_str};
use sqlx::Row;

/// An organisation's alert settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertSettings {
    pub channel_id: Option<ChannelId>,
    pub fallback_channel_id: Option<ChannelId>,
    /// None: Herald's default ([`DEFAULT_IN_DOUBT_THRESHOLD`]); 0: off.
    pub in_doubt_threshold: Option<i64>,
    /// Normalised addresses, oldest first.
    pub recipients: Vec<String>,
}

impl AlertSettings {
    /// The threshold in force.
    pub fn effective_in_doubt_threshold(&self) -> i64 {
        self.in_doubt_threshold
            .unwrap_or(DEFAULT_IN_DOUBT_THRESHOLD)
    }
}

/// A change of alert settings: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct AlertSettingsChange {
    pub channel_id: Option<Option<ChannelId>>,
    pub fallback_channel_id: Option<Option<ChannelId>>,
    pub in_doubt_threshold: Option<Option<i64>>,
    /// Normalised addresses to add and to remove.
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// One alert, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: AlertId,
    pub org_id: OrgId,
    pub event_id: Option<NotificationId>,
    pub event_type: String,
    pub campaign_id: Option<CampaignId>,
    pub concerns_channel_id: Option<ChannelId>,
    pub address: String,
    pub subject: String,
    pub body: String,
    pub link: Option<String>,
    /// `pending`, `sent` or `undeliverable`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub channel_id: Option<ChannelId>,
    pub provider_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub settled_at: Option<i64>,
}

/// What one attempt at a claimed alert came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOutcome {
    /// The channel accepted it.
    Sent {
        channel_id: ChannelId,
        provider_id: String,
    },
    /// Failed; try again at this time.
    Retry {
        channel_id: Option<ChannelId>,
        error: String,
        next_attempt_at: i64,
    },
    /// Cannot be delivered (no channel can carry it, the address was refused, or the
    /// attempts ran out): shown on the system page and by `herald doctor`.
    Undeliverable {
        channel_id: Option<ChannelId>,
        error: String,
    },
}

const ALERT_COLUMNS: &str = "id, org_id, event_id, event_type, campaign_id, concerns_channel_id, address, \
     subject, body, link, status, attempts, next_attempt_at, channel_id, provider_id, last_error, \
     created_at, settled_at";

fn alert_from_row(row: &sqlx::any::AnyRow) -> Result<Alert, StoreError> {
    Ok(Alert {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        campaign_id: row.try_get("campaign_id")?,
        concerns_channel_id: row.try_get("concerns_channel_id")?,
        address: row.try_get("address")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        link: row.try_get("link")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        channel_id: row.try_get("channel_id")?,
        provider_id: row.try_get("provider_id")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        settled_at: row.try_get("settled_at")?,
    })
}

/// What an alert reports: the organisation, the outbox event (None for a test alert), its
/// type and campaign.
struct AlertSource<'a> {
    org_id: OrgId,
    event_id: Option<NotificationId>,
    event_type: &'a str,
    campaign_id: Option<CampaignId>,
}

/// Inserts one alert per recipient for `text` in `tx` (a recipient already alerted for
/// this event is left alone); returns the alerts created.
async fn insert_alerts(
    tx: &mut crate::store::Tx,
    source: &AlertSource<'_>,
    text: &AlertText,
    recipients: &[String],
    now: i64,
) -> Result<u64, StoreError> {
    let mut made = 0;
    for address in recipients {
        made += sqlx::query(
            "INSERT INTO alerts (org_id, event_id, event_type, campaign_id, concerns_channel_id, \
             address, subject, body, link, status, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $10) \
             ON CONFLICT (event_id, address) DO NOTHING",
        )
        .bind(source.org_id)
        .bind(source.event_id)
        .bind(source.event_type)
        .bind(source.campaign_id)
        .bind(text.concerns_channel_id)
        .bind(address)
        .bind(&text.subject)
        .bind(&text.body)
        .bind(&text.link)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(made)
}

impl Store {
    /// The organisation's alert settings and recipients.
    pub async fn alert_settings(&self, org_id: OrgId) -> Result<AlertSettings, StoreError> {
        let row = sqlx::query(
            "SELECT alert_channel_id, alert_fallback_channel_id, alert_in_doubt_threshold \
             FROM organisations WHERE id = $1",
        )
        .bind(org_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("there is no organisation {}", org_id)))?;
        let recipients = sqlx::query_scalar(
            "SELECT address FROM alert_recipients WHERE org_id = $1 ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(&self.read)
        .await?;
        Ok(AlertSettings {
            channel_id: row.try_get("alert_channel_id")?,
            fallback_channel_id: row.try_get("alert_fallback_channel_id")?,
            in_doubt_threshold: row.try_get("alert_in_doubt_threshold")?,
            recipients,
        })
    }

    /// Applies `change` to the organisation's alert settings in one transaction. A channel
    /// must be one of the organisation's own (checked in the statement); a threshold must be
    /// 0 or more. Returns the settings as they are now.
    pub async fn set_alert_settings(
        &self,
        org_id: OrgId,
        change: &AlertSettingsChange,
        now: i64,
    ) -> Result<AlertSettings, StoreError> {
        let mut tx = self.begin().await?;
        for (column, value) in [
            ("alert_channel_id", change.channel_id),
            ("alert_fallback_channel_id", change.fallback_channel_id),
        ] {
            let Some(value) = value else { continue };
            if let Some(channel) = value {
                let ours: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM channels WHERE id = $1 AND org_id = $2")
                        .bind(channel)
                        .bind(org_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if ours.is_none() {
                    return Err(StoreError::Invalid(format!(
                        "channel {} does not exist in this organisation; `herald channel list` shows its channels",
                        channel
                    )));
                }
            }
            sqlx::query(sql_str(&format!(
                "UPDATE organisations SET {column} = $1 WHERE id = $2"
            )))
            .bind(value)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(threshold) = change.in_doubt_threshold {
            if threshold.is_some_and(|t| t < 0) {
                return Err(StoreError::Invalid(
                    "the in-doubt threshold must be 0 (off) or more".to_string(),
                ));
            }
            sqlx::query("UPDATE organisations SET alert_in_doubt_threshold = $1 WHERE id = $2")
                .bind(threshold)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
        }
        for address in &change.remove {
            sqlx::query("DELETE FROM alert_recipients WHERE org_id = $1 AND address = $2")
                .bind(org_id)
                .bind(address)
                .execute(&mut *tx)
                .await?;
        }
        for address in &change.add {
            sqlx::query(
                "INSERT INTO alert_recipients (org_id, address, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (org_id, address) DO NOTHING",
            )
            .bind(org_id)
            .bind(address)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.alert_settings(org_id).await
    }

    /// Turns up to `limit` alert-worthy events (oldest first) into one pending alert per
    /// recipient of their organisation, and marks them done, one transaction per event (the
    /// mark is conditional, and alerts are unique per event and address, so two instances
    /// fanning out at once make each alert once). An organisation without recipients has
    /// its events marked and no alert. Returns the alerts created.
    pub async fn fan_out_alerts(&self, now: i64, limit: i64) -> Result<u64, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.org_id, e.type, e.campaign_id, e.occurred_at, e.data, c.channel_id AS campaign_channel \
             FROM outbox_events e LEFT JOIN campaigns c ON c.id = e.campaign_id AND c.org_id = e.org_id \
             WHERE e.alert_pending = 1 ORDER BY e.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let mut made = 0;
        for row in &rows {
            let event = outbox_event_from_row(row)?;
            let campaign_channel: Option<ChannelId> = row.try_get("campaign_channel")?;
            let mut tx = self.begin().await?;
            let mine = sqlx::query(
                "UPDATE outbox_events SET alert_pending = 0 WHERE id = $1 AND alert_pending = 1",
            )
            .bind(event.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if mine == 0 {
                // Another instance fanned it out first.
                tx.rollback().await?;
                continue;
            }
            let occurrence = crate::alerts::Occurrence {
                event_type: event.event_type,
                campaign_id: event.campaign_id,
                data: &event.data,
            };
            if let Some(text) = crate::alerts::compose(&occurrence, campaign_channel) {
                let recipients: Vec<String> = sqlx::query_scalar(
                    "SELECT address FROM alert_recipients WHERE org_id = $1 ORDER BY id",
                )
                .bind(event.org_id)
                .fetch_all(&mut *tx)
                .await?;
                let source = AlertSource {
                    org_id: event.org_id,
                    event_id: Some(event.id),
                    event_type: event.event_type.as_str(),
                    campaign_id: event.campaign_id,
                };
                made += insert_alerts(&mut tx, &source, &text, &recipients, now).await?;
            }
            tx.commit().await?;
        }
        Ok(made)
    }

    /// A test alert to each of the organisation's recipients, sent like any other.
    /// Returns how many were queued (0: no recipients).
    pub async fn create_test_alerts(&self, org_id: OrgId, now: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let recipients: Vec<String> = sqlx::query_scalar(
            "SELECT address FROM alert_recipients WHERE org_id = $1 ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(&mut *tx)
        .await?;
        let source = AlertSource {
            org_id,
            event_id: None,
            event_type: "alert.test",
            campaign_id: None,
        };
        let made = insert_alerts(
            &mut tx,
            &source,
            &crate::alerts::test_text(),
            &recipients,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(made)
    }

    /// Claims up to `limit` due alerts for `owner` until `lease_until` (an expired claim of
    /// a dead instance is due again).
    pub async fn claim_alerts(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM alerts WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until < $1) LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.read)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let rows = sqlx::query(sql_str(&format!(
            "UPDATE alerts SET owner = $1, lease_until = $2 WHERE id IN (\
               SELECT id FROM alerts WHERE status = 'pending' AND next_attempt_at <= $3 \
               AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at, id LIMIT $4{}) \
             AND status = 'pending' RETURNING {ALERT_COLUMNS}",
            self.dialect.skip_locked_suffix()
        )))
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// The channels an organisation's alerts may go through, primary then fallback (those
    /// that still exist), and how many are configured.
    pub async fn alert_channels(
        &self,
        org_id: OrgId,
    ) -> Result<(Vec<CandidateChannel>, usize), StoreError> {
        let settings = self.alert_settings(org_id).await?;
        let configured: Vec<ChannelId> = [settings.channel_id, settings.fallback_channel_id]
            .into_iter()
            .flatten()
            .collect();
        let mut found = Vec::new();
        for id in &configured {
            let row = sqlx::query(
                "SELECT id, name, kind, unavailable_since FROM channels WHERE id = $1 AND org_id = $2",
            )
            .bind(id)
            .bind(org_id)
            .fetch_optional(&self.read)
            .await?;
            if let Some(row) = row {
                found.push(CandidateChannel {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    unavailable_since: row.try_get("unavailable_since")?,
                });
            }
        }
        Ok((found, configured.len()))
    }

    /// Records one attempt at an alert claimed by `owner`; false when the claim was lost
    /// (another instance took an expired lease back), and nothing is written.
    pub async fn record_alert_attempt(
        &self,
        alert_id: AlertId,
        owner: &str,
        outcome: &AlertOutcome,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (status, channel_id, provider_id, error, next, settled) = match outcome {
            AlertOutcome::Sent {
                channel_id,
                provider_id,
            } => (
                "sent",
                Some(*channel_id),
                Some(provider_id.as_str()),
                None,
                now,
                Some(now),
            ),
            AlertOutcome::Retry {
                channel_id,
                error,
                next_attempt_at,
            } => (
                "pending",
                *channel_id,
                None,
                Some(error.as_str()),
                *next_attempt_at,
                None,
            ),
            AlertOutcome::Undeliverable { channel_id, error } => (
                "undeliverable",
                *channel_id,
                None,
                Some(error.as_str()),
                now,
                Some(now),
            ),
        };
        let written = sqlx::query(
            "UPDATE alerts SET status = $1, attempts = attempts + 1, channel_id = COALESCE($2, channel_id), \
             provider_id = $3, last_error = $4, next_attempt_at = $5, settled_at = $6, owner = NULL, lease_until = NULL \
             WHERE id = $7 AND owner = $8 AND status = 'pending'",
        )
        .bind(status)
        .bind(channel_id)
        .bind(provider_id)
        .bind(error)
        .bind(next)
        .bind(settled)
        .bind(alert_id)
        .bind(owner)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(written == 1)
    }

    /// Hands back `owner`'s claims unsent (a stopping instance), due as they were.
    pub async fn release_alert_claims(&self, owner: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE alerts SET owner = NULL, lease_until = NULL WHERE owner = $1 AND status = 'pending'",
        )
        .bind(owner)
        .execute(&self.write)
        .await?
        .rows_affected())
    }

    /// The organisation's alerts, newest first, before `before_id` (a cursor), optionally
    /// only those of one status.
    pub async fn list_alerts(
        &self,
        org_id: OrgId,
        status: Option<&str>,
        before_id: Option<AlertId>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query(sql_str(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE org_id = $1 AND ($2 = '' OR status = $2) \
             AND id < $3 ORDER BY id DESC LIMIT $4"
        )))
        .bind(org_id)
        .bind(status.unwrap_or(""))
        .bind(before_id.map_or(i64::MAX, AlertId::get))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// Alerts that could not be delivered since `since`, newest first: of one
    /// organisation, or of all (the installation-wide `herald doctor`).
    pub async fn undeliverable_alerts_since(
        &self,
        org_id: Option<OrgId>,
        since: i64,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query(sql_str(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE status = 'undeliverable' \
             AND ($1 = 0 OR org_id = $1) AND settled_at >= $2 ORDER BY id DESC LIMIT $3"
        )))
        .bind(org_id.map_or(0, OrgId::get))
        .bind(since)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// Deletes settled alerts settled before `before` (the outbox's retention), at most
    /// `limit`; returns how many.
    pub async fn delete_settled_alerts_before(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE status <> 'pending' \
             AND settled_at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.write)
        .await?
        .rows_affected())
    }

    /// Records each occurrence of "too many messages in doubt" once: every sending
    /// campaign whose in-doubt count reached its organisation's threshold (0: off) and is
    /// not marked gets the mark and a `campaign.in_doubt` event in one transaction (the
    /// write is conditional, so instances racing record it once). A mark is cleared, with
    /// no event, once the campaign is under half the threshold or no longer sending, so a
    /// count hovering at the threshold does not alert on every step. Returns the campaigns
    /// marked by this call.
    pub async fn mark_in_doubt_campaigns(&self, now: i64) -> Result<Vec<CampaignId>, StoreError> {
        let threshold = format!(
            "(SELECT COALESCE(o.alert_in_doubt_threshold, {DEFAULT_IN_DOUBT_THRESHOLD}) \
             FROM organisations o WHERE o.id = campaigns.org_id)"
        );
        sqlx::query(sql_str(&format!(
            "UPDATE campaigns SET in_doubt_alerted_at = NULL WHERE in_doubt_alerted_at IS NOT NULL \
             AND (status <> 'sending' OR in_doubt * 2 < {threshold})"
        )))
        .execute(&self.write)
        .await?;
        let candidates: Vec<CampaignId> = sqlx::query_scalar(sql_str(&format!(
            "SELECT id FROM campaigns WHERE status = 'sending' AND in_doubt_alerted_at IS NULL \
             AND in_doubt > 0 AND {threshold} > 0 AND in_doubt >= {threshold} ORDER BY id"
        )))
        .fetch_all(&self.read)
        .await?;
        let mut marked = Vec::new();
        for id in candidates {
            let mut tx = self.begin().await?;
            let row = sqlx::query(sql_str(&format!(
                "UPDATE campaigns SET in_doubt_alerted_at = $1 WHERE id = $2 AND status = 'sending' \
                 AND in_doubt_alerted_at IS NULL AND {threshold} > 0 AND in_doubt >= {threshold} \
                 RETURNING org_id, name, channel_id, in_doubt, {threshold} AS threshold"
            )))
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                continue;
            };
            let data = serde_json::json!({
                "campaign": {
                    "id": id.to_string(),
                    "name": row.try_get::<String, _>("name")?,
                    "channel_id": ChannelId(row.try_get("channel_id")?).to_string(),
                    "status": "sending",
                },
                "in_doubt": row.try_get::<i64, _>("in_doubt")?,
                "threshold": row.try_get::<i64, _>("threshold")?,
            });
            emit(
                &mut tx,
                row.try_get("org_id")?,
                EventType::CampaignInDoubt,
                Some(id),
                now,
                data,
            )
            .await?;
            tx.commit().await?;
            marked.push(id);
        }
        Ok(marked)
    }
}
