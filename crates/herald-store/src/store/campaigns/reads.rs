//! Campaigns and their messages as read back: one campaign or many, the metrics gauges,
//! the audit trail, the recount and drift check of the counters, a campaign's messages, the
//! facts the stuck-campaign detector needs, and send latencies for `herald bench`.

use crate::domain::{CampaignOutcome, CampaignStatus, Counts, Derivation, MessageStatus};
use crate::ids::{CampaignId, MessageId, OrgId};
use crate::store::campaigns::autopause;
use crate::store::helpers::{campaign_status_of, counts_from_rows, status_of};
use crate::store::{Campaign, CampaignEvent, Drift, MessageInfo, PendingFacts, Store, StoreError};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

pub(in crate::store) const CAMPAIGN_COLUMNS: &str = "c.id, c.org_id, c.name, c.channel_id, ch.name AS channel_name, ch.kind AS channel_kind, \
     c.list_id, l.name AS list_name, c.body, c.status, c.scheduled_at, c.created_at, c.started_at, \
     c.completed_at, c.last_progress_at, c.total, c.queued, c.in_flight, c.retry_wait, c.sent, \
     c.delivered, c.read, c.undelivered, c.failed, c.skipped, c.cancelled, c.in_doubt, c.in_doubt_total, c.outcome, c.clicks, c.clicked, c.whatsapp_template, c.email, \
     (SELECT COUNT(*) FROM replies rp WHERE rp.campaign_id = c.id) AS replies, \
     c.auto_pause_percent, c.auto_pause_window, c.parent_id, c.parent_kind, \
     (SELECT org.auto_pause_percent FROM organisations org WHERE org.id = c.org_id) AS org_auto_pause_percent, \
     (SELECT org.auto_pause_window FROM organisations org WHERE org.id = c.org_id) AS org_auto_pause_window, \
     c.send_window, (SELECT org.send_window FROM organisations org WHERE org.id = c.org_id) AS org_send_window, \
     c.archived_at, CAST(CASE WHEN c.archived_failures IS NULL THEN 0 ELSE 1 END AS BIGINT) AS archive_begun";

pub(in crate::store) const CAMPAIGN_FROM: &str =
    "FROM campaigns c JOIN channels ch ON ch.id = c.channel_id JOIN lists l ON l.id = c.list_id";

impl Store {
    pub async fn campaign(&self, id: CampaignId) -> Result<Campaign, StoreError> {
        let sql = format!("SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "campaign {} does not exist: `herald campaign list` shows the campaigns there are",
                    id
                ))
            })?;
        campaign_from_row(&row)
    }

    pub async fn campaigns(&self, org_id: OrgId) -> Result<Vec<Campaign>, StoreError> {
        let sql =
            format!("SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.org_id = $1 ORDER BY c.id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    pub async fn campaigns_with_status(
        &self,
        statuses: &[CampaignStatus],
    ) -> Result<Vec<Campaign>, StoreError> {
        let list: Vec<String> = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.status IN ({}) ORDER BY c.id",
            list.join(",")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    /// Per campaign status: how many campaigns, their pending and in-doubt messages (one
    /// aggregate query, for the metrics gauges).
    pub async fn campaign_gauges(
        &self,
    ) -> Result<Vec<(CampaignStatus, i64, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, count(*) AS campaigns, \
             CAST(COALESCE(sum(queued + in_flight + retry_wait + in_doubt), 0) AS BIGINT) AS pending, \
             CAST(COALESCE(sum(in_doubt), 0) AS BIGINT) AS in_doubt FROM campaigns GROUP BY status",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    campaign_status_of(r, "status")?,
                    r.try_get("campaigns")?,
                    r.try_get("pending")?,
                    r.try_get("in_doubt")?,
                ))
            })
            .collect()
    }

    /// Campaigns still running, or that ended after `ended_since`: the ones worth recounting
    /// (never one whose archive has begun: its rows are no longer all there to count).
    pub async fn campaigns_to_check(
        &self,
        ended_since: i64,
    ) -> Result<Vec<CampaignId>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM campaigns WHERE (status NOT IN ('completed', 'cancelled') OR completed_at >= $1) \
             AND archived_failures IS NULL ORDER BY id",
        )
        .bind(ended_since)
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn events(&self, campaign_id: CampaignId) -> Result<Vec<CampaignEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, campaign_id, at, actor, from_status, to_status, reason FROM campaign_events WHERE campaign_id = $1 ORDER BY id",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// A `GROUP BY status` over the campaign's messages: the truth the counters must equal
    /// (of the rows left, once its archive has begun: `Campaign::archive_begun`).
    pub async fn recount(&self, campaign_id: CampaignId) -> Result<Counts, StoreError> {
        let rows = sqlx::query(
            "SELECT status, count(*) AS n FROM messages WHERE campaign_id = $1 GROUP BY status",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?;
        counts_from_rows(&rows)
    }

    /// Messages of a campaign found in doubt at any time (so the bound on duplicates).
    pub async fn messages(
        &self,
        campaign_id: CampaignId,
        status: Option<MessageStatus>,
        after_id: MessageId,
        limit: i64,
    ) -> Result<Vec<MessageInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, campaign_id, address, status, attempts, next_attempt_at, owner, provider_id, last_error, was_in_doubt, updated_at, sent_at, clicks \
             FROM messages WHERE campaign_id = $1 AND ($2 = '' OR status = $2) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(campaign_id)
        .bind(status.map(|s| s.as_str()).unwrap_or(""))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Campaigns whose counters differ from a recount. Reported, never silently fixed. A
    /// campaign whose archive has begun is not recounted: the recount reads message rows,
    /// and the archive moves its rows out without touching its counters (docs/DESIGN.md,
    /// invariant 3).
    pub async fn drift(&self, campaign_ids: &[CampaignId]) -> Result<Vec<Drift>, StoreError> {
        let mut out = Vec::new();
        for id in campaign_ids {
            let c = self.campaign(*id).await?;
            if c.archive_begun {
                continue;
            }
            let actual = self.recount(*id).await?;
            // In-flight sends may commit between the two reads; re-read once before reporting.
            if actual != c.counts {
                let c2 = self.campaign(*id).await?;
                let actual2 = self.recount(*id).await?;
                if actual2 != c2.counts
                    && !c2.archive_begun
                    && c2.counts == self.campaign(*id).await?.counts
                {
                    for s in MessageStatus::ALL {
                        if actual2.get(s) != c2.counts.get(s) {
                            out.push(Drift {
                                campaign_id: *id,
                                status: s,
                                counter: c2.counts.get(s),
                                actual: actual2.get(s),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Facts the stuck-campaign detector needs about one campaign's pending work.
    pub async fn pending_facts(&self, campaign_id: CampaignId) -> Result<PendingFacts, StoreError> {
        let next_retry_at: Option<i64> = sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM messages WHERE campaign_id = $1 AND status = 'retry_wait'",
        )
        .bind(campaign_id)
        .fetch_one(&self.read)
        .await?;
        let last_error: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM messages WHERE campaign_id = $1 AND status IN ('retry_wait','failed') AND last_error IS NOT NULL \
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(campaign_id)
        .fetch_optional(&self.read)
        .await?
        .flatten();
        Ok(PendingFacts {
            next_retry_at,
            last_error,
        })
    }

    /// Times from the campaign's start to its sends, for `herald bench`: the send at each
    /// quantile in `quantiles` (0.0 the first, 1.0 the last; nearest rank), in milliseconds,
    /// None when nothing was sent. Ranked in the database so that a 10-million-message
    /// campaign's latencies never come into memory. The start is read once, not joined:
    /// statistics from the start (no message sent yet) made PostgreSQL loop over the million
    /// sent messages (scripts/explain-plans).
    pub async fn send_latency_quantiles(
        &self,
        campaign_id: CampaignId,
        quantiles: &[f64],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let sent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE campaign_id = $1 AND sent_at IS NOT NULL",
        )
        .bind(campaign_id)
        .fetch_one(&self.read)
        .await?;
        let mut out = Vec::with_capacity(quantiles.len());
        for q in quantiles {
            if sent == 0 {
                out.push(None);
                continue;
            }
            let rank = ((sent - 1) as f64 * q.clamp(0.0, 1.0)).round() as i64;
            let latency: Option<i64> = sqlx::query_scalar(
                "SELECT m.sent_at - (SELECT c.started_at FROM campaigns c WHERE c.id = $1) \
                 FROM messages m WHERE m.campaign_id = $1 AND m.sent_at IS NOT NULL \
                 ORDER BY 1 LIMIT 1 OFFSET $2",
            )
            .bind(campaign_id)
            .bind(rank)
            .fetch_optional(&self.read)
            .await?;
            out.push(latency);
        }
        Ok(out)
    }
}

pub(in crate::store) fn campaign_from_row(row: &AnyRow) -> Result<Campaign, StoreError> {
    let mut counts = Counts::default();
    for s in MessageStatus::ALL {
        counts.add(s, row.try_get::<i64, _>(s.as_str())?);
    }
    Ok(Campaign {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        channel_id: row.try_get("channel_id")?,
        channel_name: row.try_get("channel_name")?,
        channel_kind: row.try_get("channel_kind")?,
        list_id: row.try_get("list_id")?,
        list_name: row.try_get("list_name")?,
        body: row.try_get("body")?,
        status: campaign_status_of(row, "status")?,
        scheduled_at: row.try_get("scheduled_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        last_progress_at: row.try_get("last_progress_at")?,
        total: row.try_get("total")?,
        counts,
        in_doubt_total: row.try_get("in_doubt_total")?,
        clicks: row.try_get("clicks")?,
        clicked: row.try_get("clicked")?,
        replies: row.try_get("replies")?,
        whatsapp_template: crate::store::campaigns::lifecycle::template_from_json(
            row.try_get("whatsapp_template")?,
        )?,
        email: crate::store::campaigns::lifecycle::email_from_json(row.try_get("email")?)?,
        auto_pause: autopause::setting_from_row(row)?,
        send_window: crate::store::SendWindowSetting {
            campaign: row.try_get("send_window")?,
            organisation: row.try_get("org_send_window")?,
        },
        parent: match (
            row.try_get::<Option<CampaignId>, _>("parent_id")?,
            row.try_get::<Option<String>, _>("parent_kind")?,
        ) {
            (Some(id), Some(kind)) => Some((
                id,
                Derivation::parse(&kind).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown campaign parent kind `{kind}`"))
                })?,
            )),
            _ => None,
        },
        archived_at: row.try_get("archived_at")?,
        archive_begun: row.try_get::<i64, _>("archive_begun")? != 0,
        outcome: match row.try_get::<Option<String>, _>("outcome")? {
            None => None,
            Some(s) => {
                Some(CampaignOutcome::parse(&s).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown campaign outcome `{s}`"))
                })?)
            }
        },
    })
}

pub(in crate::store) fn event_from_row(r: &AnyRow) -> Result<CampaignEvent, StoreError> {
    Ok(CampaignEvent {
        id: r.try_get("id")?,
        campaign_id: r.try_get("campaign_id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        from_status: r.try_get("from_status")?,
        to_status: r.try_get("to_status")?,
        reason: r.try_get("reason")?,
    })
}

pub(in crate::store) fn message_from_row(r: &AnyRow) -> Result<MessageInfo, StoreError> {
    Ok(MessageInfo {
        id: r.try_get("id")?,
        campaign_id: r.try_get("campaign_id")?,
        address: r.try_get("address")?,
        status: status_of(r, "status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        owner: r.try_get("owner")?,
        provider_id: r.try_get("provider_id")?,
        last_error: r.try_get("last_error")?,
        was_in_doubt: r.try_get::<i64, _>("was_in_doubt")? != 0,
        updated_at: r.try_get("updated_at")?,
        sent_at: r.try_get("sent_at")?,
        clicks: r.try_get("clicks")?,
    })
}
