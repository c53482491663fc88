//! Delivery of outbox events to webhook endpoints (docs/WEBHOOKS.md): fan-out (one
//! delivery per subscribed endpoint, with the endpoint's next sequence number), claims
//! (owner + lease, like message claims: every instance delivers, none sends one delivery
//! twice at once, a dead instance's claims are taken back when its lease runs out), the
//! outcome of each attempt (written only by the lease holder), disabling endpoints and
//! retention of the outbox.

use super::outbox::{emit, outbox_event_from_row};
use crate::events::EventType;
use crate::ids::{CampaignId, DeliveryId, NotificationId, OrgId, WebhookEndpointId};
use crate::store::helpers::ids_json;
use crate::store::{OutboxEvent, Store, StoreError, Tx, sql_str};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};

/// An endpoint failing every attempt for this long is disabled.
pub const DISABLE_AFTER_FAILING_MS: i64 = 5 * 24 * 3600 * 1000;

/// Rows bound in one bulk statement.
const BULK_ROWS: usize = 500;

/// What one fan-out pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Events marked fanned out.
    pub events: u64,
    /// Deliveries created.
    pub deliveries: u64,
}

/// What one claim statement may take.
struct Claim<'a> {
    owner: &'a str,
    now: i64,
    lease_until: i64,
    limit: i64,
    per_endpoint: i64,
    hold_ms: i64,
}

/// Which endpoints a claim looks at.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// Every endpoint but these (the claiming instance is still sending to them).
    Except(&'a [WebhookEndpointId]),
    /// This endpoint only, after this sequence number (a task going on with its
    /// endpoint: read along the endpoint's sequence index, not the whole due set).
    Only(WebhookEndpointId, i64),
}

/// The next batch a task that delivered its batch claims of its endpoint, in the
/// transaction that records the batch.
#[derive(Debug, Clone, Copy)]
pub struct NextClaim {
    pub endpoint_id: WebhookEndpointId,
    pub now: i64,
    pub lease_until: i64,
    pub limit: i64,
    /// As in [`Store::claim_webhook_deliveries`].
    pub hold_ms: i64,
    /// The last sequence number of the batch just sent: the next batch comes after it
    /// (a retry due meanwhile, of a lower number, is claimed by the next pass).
    pub after_seq: i64,
}

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub id: DeliveryId,
    pub org_id: OrgId,
    pub endpoint_id: WebhookEndpointId,
    pub seq: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    pub url: String,
    /// The endpoint's sealed secret, and the previous one while it still signs.
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_until: Option<i64>,
    pub event: OutboxEvent,
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// Failed; try again at this time.
    Retry { next_attempt_at: i64 },
    /// Failed and the schedule is exhausted: the delivery fails.
    GiveUp,
    /// 410 Gone: the endpoint is disabled and its pending deliveries fail.
    Gone,
}

/// One attempt of a claimed delivery, as the worker observed it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    pub org_id: OrgId,
    pub endpoint_id: WebhookEndpointId,
    pub at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    /// At most 1 KiB of the answer.
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub verdict: Verdict,
}

/// What recording a batch of attempts changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Deliveries whose outcome was written (the lease was still ours).
    pub written: u64,
    /// Outcomes not written because another instance had taken the claim back.
    pub lost: u64,
    /// Endpoints disabled by these attempts: (endpoint id, reason).
    pub disabled: Vec<(WebhookEndpointId, String)>,
}

fn job_from_row(row: &sqlx::any::AnyRow) -> Result<DeliveryJob, StoreError> {
    Ok(DeliveryJob {
        id: row.try_get("delivery_id")?,
        org_id: row.try_get("org_id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        seq: row.try_get("seq")?,
        attempts: row.try_get("attempts")?,
        url: row.try_get("url")?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_until: row.try_get("previous_until")?,
        event: outbox_event_from_row(row)?,
    })
}

impl Store {
    /// Turns up to `limit` events not yet fanned out (oldest first) into one pending
    /// delivery per enabled endpoint of their organisation subscribed to their type, each
    /// with the endpoint's next sequence number, and marks them fanned out, all in one
    /// transaction. `webhook.test` events are marked without deliveries (their one delivery
    /// is made with them). Fan-outs are serialized, so an endpoint's sequence numbers
    /// increase with event ids even when several instances fan out at once.
    pub async fn fan_out_events(&self, now: i64, limit: i64) -> Result<FanOut, StoreError> {
        // A read first: with nothing to do, no write transaction (SQLite's one writer is
        // the message senders').
        let waiting: Option<i64> =
            sqlx::query_scalar("SELECT id FROM outbox_events WHERE fanned_out_at IS NULL LIMIT 1")
                .fetch_optional(&self.read)
                .await?;
        if waiting.is_none() {
            return Ok(FanOut::default());
        }
        let mut tx = self.begin().await?;
        if let Some(lock) = self.dialect.fan_out_lock() {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let events = sqlx::query(
            "SELECT id, org_id, type, campaign_id FROM outbox_events \
             WHERE fanned_out_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if events.is_empty() {
            tx.rollback().await?;
            return Ok(FanOut::default());
        }
        let mut orgs = BTreeSet::new();
        let mut parsed = Vec::with_capacity(events.len());
        for row in &events {
            let id: NotificationId = row.try_get("id")?;
            let org_id: OrgId = row.try_get("org_id")?;
            let type_name: String = row.try_get("type")?;
            let campaign_id: Option<CampaignId> = row.try_get("campaign_id")?;
            orgs.insert(org_id);
            // An unknown type (written by a newer version) goes to nobody.
            let event_type = type_name.parse::<EventType>().ok();
            parsed.push((id, org_id, event_type, campaign_id));
        }
        let org_list = ids_json(orgs.iter().copied());
        let endpoints = sqlx::query(sql_str(&format!(
            "SELECT id, org_id, events, next_seq FROM webhook_endpoints \
             WHERE disabled_at IS NULL AND org_id IN {} ORDER BY id{}",
            self.dialect.json_ids("$1"),
            self.dialect.lock_suffix()
        )))
        .bind(org_list)
        .fetch_all(&mut *tx)
        .await?;
        // org -> [(endpoint id, subscribed types)], and each endpoint's next seq.
        let mut by_org: BTreeMap<OrgId, Vec<(WebhookEndpointId, BTreeSet<EventType>)>> =
            BTreeMap::new();
        let mut next_seq: BTreeMap<WebhookEndpointId, (i64, i64)> = BTreeMap::new();
        for row in &endpoints {
            let id: WebhookEndpointId = row.try_get("id")?;
            let org_id: OrgId = row.try_get("org_id")?;
            let events: String = row.try_get("events")?;
            let seq: i64 = row.try_get("next_seq")?;
            let names: Vec<String> = serde_json::from_str(&events)
                .map_err(|e| StoreError::Corrupt(format!("webhook endpoint {id} events: {e}")))?;
            let types = names.iter().filter_map(|n| n.parse().ok()).collect();
            by_org.entry(org_id).or_default().push((id, types));
            next_seq.insert(id, (seq, seq));
        }
        let mut rows = Vec::new();
        for (event_id, org_id, event_type, campaign_id) in &parsed {
            let Some(event_type) = event_type else {
                continue;
            };
            if !event_type.is_subscribable() {
                continue;
            }
            for (endpoint_id, types) in by_org.get(org_id).map(Vec::as_slice).unwrap_or(&[]) {
                if !types.contains(event_type) {
                    continue;
                }
                let Some((_, seq)) = next_seq.get_mut(endpoint_id) else {
                    continue;
                };
                rows.push(serde_json::json!({
                    "org_id": org_id.get(), "endpoint_id": endpoint_id.get(), "event_id": event_id.get(),
                    "seq": *seq, "campaign_id": campaign_id.map(CampaignId::get),
                }));
                *seq += 1;
            }
        }
        let mut created = 0u64;
        let insert = format!(
            "INSERT INTO webhook_deliveries (org_id, endpoint_id, event_id, seq, campaign_id, \
             status, attempts, next_attempt_at, created_at) \
             SELECT x.org_id, x.endpoint_id, x.event_id, x.seq, x.campaign_id, 'pending', 0, $2, $2 \
             FROM {} WHERE true ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            self.dialect.json_records(
                "$1",
                &[
                    ("org_id", "int"),
                    ("endpoint_id", "int"),
                    ("event_id", "int"),
                    ("seq", "int"),
                    ("campaign_id", "int"),
                ]
            )
        );
        for chunk in rows.chunks(BULK_ROWS) {
            let json = serde_json::Value::Array(chunk.to_vec()).to_string();
            created += sqlx::query(sql_str(&insert))
                .bind(json)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        for (endpoint_id, (before, after)) in &next_seq {
            if before == after {
                continue;
            }
            let n = sqlx::query(
                "UPDATE webhook_endpoints SET next_seq = $1 WHERE id = $2 AND next_seq = $3",
            )
            .bind(after)
            .bind(endpoint_id)
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "webhook endpoint {} changed its sequence during fan-out; will retry",
                    *endpoint_id
                )));
            }
        }
        let ids_json = ids_json(parsed.iter().map(|p| p.0));
        let marked = sqlx::query(sql_str(&format!(
            "UPDATE outbox_events SET fanned_out_at = $1 \
             WHERE fanned_out_at IS NULL AND id IN {}",
            self.dialect.json_ids("$2")
        )))
        .bind(now)
        .bind(ids_json)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked != parsed.len() as u64 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(
                "outbox events were fanned out by another instance; will retry".into(),
            ));
        }
        tx.commit().await?;
        Ok(FanOut {
            events: marked,
            deliveries: created,
        })
    }

    /// Claims due pending deliveries for `owner` until `lease_until`: at most `limit`, at
    /// most `per_endpoint` of one endpoint (lowest sequence numbers first), none of an
    /// endpoint in `busy` (this instance is still sending to it), of an endpoint with a
    /// live lease elsewhere, of an endpoint held back after a failure (its latest attempt
    /// failed less than `hold_ms` ago, see [`Store::record_webhook_attempts`]) or of a
    /// disabled endpoint. A delivery whose lease ran out (its instance died) is claimable
    /// again. Claims are serialized (an advisory lock on PostgreSQL, SQLite's one writer),
    /// so one endpoint's deliveries are held by one instance at a time. Returned by
    /// endpoint, then sequence number.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
        per_endpoint: i64,
        busy: &[WebhookEndpointId],
        hold_ms: i64,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        // A read first: with nothing due, no write transaction.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until < $1) LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.read)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let claim = Claim {
            owner,
            now,
            lease_until,
            limit,
            per_endpoint,
            hold_ms,
        };
        let jobs = self.claim_in(&mut tx, &claim, Scope::Except(busy)).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    /// One claim statement in `tx` (after the claim lock on PostgreSQL), then what sending
    /// the claimed deliveries needs.
    async fn claim_in(
        &self,
        tx: &mut Tx,
        c: &Claim<'_>,
        scope: Scope<'_>,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        if let Some(lock) = self.dialect.webhook_claim_lock() {
            sqlx::query(lock).execute(&mut **tx).await?;
        }
        // The endpoints that may be claimed, first (a small table), with the per-endpoint
        // conditions checked once each rather than for every pending delivery: no live
        // lease on the endpoint (one instance at a time), no hold after a failure, not
        // disabled. When every endpoint with work is busy, leased elsewhere or held, the
        // deliveries are not scanned.
        let (filter, filter_param) = match scope {
            Scope::Except(busy) => (
                format!("w.id NOT IN {}", self.dialect.json_ids("$1")),
                ids_json(busy.iter().copied()),
            ),
            Scope::Only(id, _) => (
                format!("w.id IN {}", self.dialect.json_ids("$1")),
                format!("[{}]", id.get()),
            ),
        };
        let eligible: Vec<WebhookEndpointId> = sqlx::query_scalar(sql_str(&format!(
            "SELECT w.id FROM webhook_endpoints w WHERE w.disabled_at IS NULL AND {filter} \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries b WHERE b.endpoint_id = w.id \
               AND b.status = 'pending' AND b.lease_until >= $2) \
             AND NOT EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.id = \
               (SELECT MAX(l.id) FROM webhook_attempts l WHERE l.endpoint_id = w.id) \
               AND a.at > $2 - $3 \
               AND (a.status_code IS NULL OR a.status_code < 200 OR a.status_code > 299))",
        )))
        .bind(filter_param)
        .bind(c.now)
        .bind(c.hold_ms)
        .fetch_all(&mut **tx)
        .await?;
        if eligible.is_empty() {
            return Ok(Vec::new());
        }
        // Then the deliveries of those endpoints: along the endpoint's pending sequence
        // index for a task going on with its endpoint, by due time for a claim pass.
        let (scope_sql, order) = match scope {
            Scope::Except(_) => (
                format!("d.endpoint_id IN {}", self.dialect.json_ids("$4")),
                "d.next_attempt_at, d.id",
            ),
            Scope::Only(..) => ("d.endpoint_id = $4 AND d.seq > $7".to_string(), "d.seq"),
        };
        let query = sqlx::query_scalar(sql_str(&format!(
            "UPDATE webhook_deliveries SET owner = $1, lease_until = $2 \
             WHERE status = 'pending' AND id IN (SELECT r.id FROM (\
               SELECT c.id, ROW_NUMBER() OVER (PARTITION BY c.endpoint_id ORDER BY c.seq) AS rn \
               FROM (SELECT d.id, d.endpoint_id, d.seq FROM webhook_deliveries d \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= $3 \
                 AND (d.lease_until IS NULL OR d.lease_until < $3) \
                 AND {scope_sql} \
                 ORDER BY {order} LIMIT $5{skip}) AS c\
             ) AS r WHERE r.rn <= $6) RETURNING id",
            skip = self.dialect.skip_locked_suffix(),
        )))
        .bind(c.owner)
        .bind(c.lease_until)
        .bind(c.now);
        let query = match scope {
            Scope::Except(_) => query.bind(ids_json(eligible.iter().copied())),
            Scope::Only(id, _) => query.bind(id),
        };
        let query = query.bind(c.limit).bind(c.per_endpoint);
        let query = match scope {
            Scope::Except(_) => query,
            Scope::Only(_, after_seq) => query.bind(after_seq),
        };
        let claimed: Vec<DeliveryId> = query.fetch_all(&mut **tx).await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids_json(claimed.iter().copied());
        let rows = sqlx::query(sql_str(&format!(
            "SELECT d.id AS delivery_id, d.org_id, d.endpoint_id, d.seq, d.attempts, \
             w.url, w.secret, w.previous_secret, w.previous_until, \
             e.id, e.type, e.campaign_id, e.occurred_at, e.data \
             FROM webhook_deliveries d \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.org_id = d.org_id \
             JOIN outbox_events e ON e.id = d.event_id AND e.org_id = d.org_id \
             WHERE d.owner = $1 AND d.id IN {} ORDER BY d.endpoint_id, d.seq",
            self.dialect.json_ids("$2")
        )))
        .bind(c.owner)
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Records attempts like [`Store::record_webhook_attempts`] and, in the same
    /// transaction, claims the next due deliveries of the same endpoint as `next` says:
    /// a task that delivered its whole batch goes on with the endpoint without another
    /// transaction, and without letting go of it in between.
    pub async fn record_webhook_attempts_and_claim(
        &self,
        owner: &str,
        attempts: &[AttemptRecord],
        release: &[DeliveryId],
        next: Option<NextClaim>,
    ) -> Result<(Recorded, Vec<DeliveryJob>), StoreError> {
        let mut tx = self.begin().await?;
        let recorded = self.record_in(&mut tx, owner, attempts, release).await?;
        let jobs = match next {
            Some(n) => {
                let claim = Claim {
                    owner,
                    now: n.now,
                    lease_until: n.lease_until,
                    limit: n.limit,
                    per_endpoint: n.limit,
                    hold_ms: n.hold_ms,
                };
                self.claim_in(&mut tx, &claim, Scope::Only(n.endpoint_id, n.after_seq))
                    .await?
            }
            None => Vec::new(),
        };
        tx.commit().await?;
        Ok((recorded, jobs))
    }

    /// Records attempts made under `owner`'s claims, in one transaction: every attempt in
    /// the log; each delivery's outcome only while `owner` still holds it (another
    /// instance may have taken an expired lease back); the endpoint's failing streak; a
    /// 410 or 5 days of nothing but failures disables the endpoint (with its
    /// `webhook.endpoint_disabled` event). `release` are claimed deliveries not attempted:
    /// handed back, due as they were.
    pub async fn record_webhook_attempts(
        &self,
        owner: &str,
        attempts: &[AttemptRecord],
        release: &[DeliveryId],
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.begin().await?;
        let recorded = self.record_in(&mut tx, owner, attempts, release).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn record_in(
        &self,
        tx: &mut Tx,
        owner: &str,
        attempts: &[AttemptRecord],
        release: &[DeliveryId],
    ) -> Result<Recorded, StoreError> {
        let mut recorded = Recorded::default();
        if !attempts.is_empty() {
            let rows: Vec<serde_json::Value> = attempts
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "delivery_id": a.delivery_id.get(), "org_id": a.org_id.get(),
                        "endpoint_id": a.endpoint_id.get(), "at": a.at, "status_code": a.status_code,
                        "latency_ms": a.latency_ms, "response_excerpt": a.response_excerpt,
                        "error": a.error,
                    })
                })
                .collect();
            let insert = format!(
                "INSERT INTO webhook_attempts (delivery_id, org_id, endpoint_id, at, status_code, \
                 latency_ms, response_excerpt, error) \
                 SELECT x.delivery_id, x.org_id, x.endpoint_id, x.at, x.status_code, x.latency_ms, \
                 x.response_excerpt, x.error FROM {}",
                self.dialect.json_records(
                    "$1",
                    &[
                        ("delivery_id", "int"),
                        ("org_id", "int"),
                        ("endpoint_id", "int"),
                        ("at", "int"),
                        ("status_code", "int"),
                        ("latency_ms", "int"),
                        ("response_excerpt", "text"),
                        ("error", "text"),
                    ]
                )
            );
            for chunk in rows.chunks(BULK_ROWS) {
                sqlx::query(sql_str(&insert))
                    .bind(serde_json::Value::Array(chunk.to_vec()).to_string())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        // Successes in bulk: the common case, one statement for a whole batch.
        let delivered: Vec<&AttemptRecord> = attempts
            .iter()
            .filter(|a| a.verdict == Verdict::Delivered)
            .collect();
        for chunk in delivered.chunks(BULK_ROWS) {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .map(
                    |a| serde_json::json!({"id": a.delivery_id.get(), "at": a.at, "code": a.status_code}),
                )
                .collect();
            // UPDATE … FROM: the batch is read once, not once per row (a correlated
            // subquery over the JSON would parse it again for every delivery).
            let n = sqlx::query(sql_str(&format!(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, \
                 delivered_at = x.at, last_status_code = x.code, \
                 last_error = NULL, owner = NULL, lease_until = NULL \
                 FROM {r} WHERE x.id = webhook_deliveries.id \
                 AND webhook_deliveries.owner = $2 AND webhook_deliveries.status = 'pending'",
                r = self
                    .dialect
                    .json_records("$1", &[("id", "int"), ("at", "int"), ("code", "int")]),
            )))
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(owner)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            recorded.written += n;
            recorded.lost += chunk.len() as u64 - n;
        }
        let succeeded: BTreeSet<WebhookEndpointId> =
            delivered.iter().map(|a| a.endpoint_id).collect();
        for endpoint_id in &succeeded {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL \
                 WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .bind(endpoint_id)
            .execute(&mut **tx)
            .await?;
        }
        for a in attempts.iter().filter(|a| a.verdict != Verdict::Delivered) {
            let (status, next) = match a.verdict {
                Verdict::Retry { next_attempt_at } => ("pending", Some(next_attempt_at)),
                _ => ("failed", None),
            };
            let n = sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
                 next_attempt_at = COALESCE($2, next_attempt_at), last_status_code = $3, \
                 last_error = $4, owner = NULL, lease_until = NULL \
                 WHERE id = $5 AND owner = $6 AND status = 'pending'",
            )
            .bind(status)
            .bind(next)
            .bind(a.status_code)
            .bind(a.error.as_deref().or(a.response_excerpt.as_deref()))
            .bind(a.delivery_id)
            .bind(owner)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if n == 0 {
                recorded.lost += 1;
                continue;
            }
            recorded.written += 1;
            if succeeded.contains(&a.endpoint_id) {
                continue;
            }
            let failing_since: Option<i64> = sqlx::query_scalar(
                "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $1) \
                 WHERE id = $2 AND org_id = $3 AND disabled_at IS NULL RETURNING failing_since",
            )
            .bind(a.at)
            .bind(a.endpoint_id)
            .bind(a.org_id)
            .fetch_optional(&mut **tx)
            .await?
            .flatten();
            let reason = if a.verdict == Verdict::Gone {
                Some("the endpoint answered 410 Gone".to_string())
            } else {
                failing_since
                    .filter(|since| a.at.saturating_sub(*since) >= DISABLE_AFTER_FAILING_MS)
                    .map(|since| {
                        format!(
                            "every attempt failed since {} (5 days)",
                            crate::clock::rfc3339(since)
                        )
                    })
            };
            if let Some(reason) = reason
                && disable_endpoint(tx, a.org_id, a.endpoint_id, &reason, a.at).await?
            {
                recorded.disabled.push((a.endpoint_id, reason));
            }
        }
        if !release.is_empty() {
            let ids = ids_json(release.iter().copied());
            sqlx::query(sql_str(&format!(
                "UPDATE webhook_deliveries SET owner = NULL, lease_until = NULL \
                 WHERE owner = $1 AND status = 'pending' AND id IN {}",
                self.dialect.json_ids("$2")
            )))
            .bind(owner)
            .bind(ids)
            .execute(&mut **tx)
            .await?;
        }
        Ok(recorded)
    }

    /// Hands back every pending delivery `owner` holds (at shutdown).
    pub async fn release_webhook_claims(&self, owner: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE webhook_deliveries SET owner = NULL, lease_until = NULL \
             WHERE owner = $1 AND status = 'pending'",
        )
        .bind(owner)
        .execute(&self.write)
        .await?
        .rows_affected())
    }

    /// Whether any campaign is sending (delivery yields to it meanwhile).
    pub async fn any_campaign_sending(&self) -> Result<bool, StoreError> {
        let one: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM campaigns WHERE status = 'sending' LIMIT 1")
                .fetch_optional(&self.read)
                .await?;
        Ok(one.is_some())
    }

    /// Pending deliveries, for the `herald_webhook_deliveries_pending` gauge.
    pub async fn pending_webhook_deliveries(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&self.read)
                .await?,
        )
    }
}

/// Disables an enabled endpoint (conditional), fails its pending deliveries and writes its
/// `webhook.endpoint_disabled` event, in `tx`. False when it was already disabled.
async fn disable_endpoint(
    tx: &mut Tx,
    org_id: OrgId,
    endpoint_id: WebhookEndpointId,
    reason: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let url: Option<String> = sqlx::query_scalar(
        "UPDATE webhook_endpoints SET disabled_at = $1, disabled_reason = $2 \
         WHERE id = $3 AND org_id = $4 AND disabled_at IS NULL RETURNING url",
    )
    .bind(now)
    .bind(reason)
    .bind(endpoint_id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(url) = url else {
        return Ok(false);
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', owner = NULL, lease_until = NULL, \
         last_error = $1 WHERE endpoint_id = $2 AND org_id = $3 AND status = 'pending'",
    )
    .bind(format!("endpoint disabled: {reason}"))
    .bind(endpoint_id)
    .bind(org_id)
    .execute(&mut **tx)
    .await?;
    emit(
        tx,
        org_id,
        EventType::WebhookEndpointDisabled,
        None,
        now,
        serde_json::json!({
            "endpoint_id": endpoint_id.to_string(),
            "url": url,
            "reason": reason,
        }),
    )
    .await?;
    Ok(true)
}
