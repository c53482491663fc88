//! An organisation's webhook endpoints (docs/API.md, "Webhooks") and what the surfaces (API,
//! CLI, dashboard) do with them: create, change, delete, rotate the signing secret, read the
//! delivery log, replay deliveries and send a test event. Sending is the delivery worker's;
//! this module writes only the rows it reads: endpoints, deliveries set back to pending
//! (replay) and the one delivery of a test event.
//!
//! Every query names the organisation in its WHERE clause, so another organisation's
//! endpoint is "not found". Signing secrets are sealed at rest like channel secrets
//! ([`seal_signing_secret`]), bound to the endpoint's id.

use super::outbox;
use crate::events::EventType;
use crate::ids::{DeliveryId, NotificationId, OrgId, WebhookEndpointId};
use crate::secrets::{SecretError, SecretKey};
use crate::store::{Store, StoreError, sql_str};
use sqlx::Row;

/// After a rotation the previous secret also signs for this long (24 h).
pub const PREVIOUS_SECRET_MS: i64 = 24 * 3600 * 1000;
/// At most this many attempts are shown per delivery in the log (the newest).
pub const ATTEMPTS_SHOWN: i64 = 20;
/// At most this many deliveries one "replay failed since" sets back to pending; the answer
/// says when more are left (run it again).
pub const REPLAY_BATCH: i64 = 10_000;

const ENDPOINT_COLUMNS: &str = "id, org_id, url, description, events, secret, previous_secret, \
    previous_until, next_seq, created_at, disabled_at, disabled_reason";

/// The JSON object a signing secret is sealed as (`secrets::seal` seals objects).
const SEALED_FIELD: &str = "webhook_secret";

/// Seals an endpoint's signing secret (`whsec_…`) for endpoint `endpoint_id`.
pub fn seal_signing_secret(
    key: &SecretKey,
    endpoint_id: WebhookEndpointId,
    secret: &str,
) -> Result<String, SecretError> {
    crate::secrets::seal(
        key,
        endpoint_id,
        &serde_json::json!({ SEALED_FIELD: secret }),
    )
}

/// Opens a sealed signing secret of endpoint `endpoint_id`: the `whsec_…` text the delivery
/// worker signs with.
pub fn open_signing_secret(
    key: &SecretKey,
    endpoint_id: WebhookEndpointId,
    sealed: &str,
) -> Result<String, SecretError> {
    let value = crate::secrets::open(key, endpoint_id, sealed)?;
    value
        .get(SEALED_FIELD)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| SecretError::Damaged("not a webhook signing secret".into()))
}

/// One endpoint as stored (the sealed secrets are never shown; they are here for the
/// delivery worker and the tests that check them).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub org_id: OrgId,
    pub url: String,
    pub description: String,
    pub events: Vec<EventType>,
    pub secret_sealed: String,
    pub previous_secret_sealed: Option<String>,
    /// Until when the previous secret also signs.
    pub previous_until: Option<i64>,
    pub next_seq: i64,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
}

/// A change to an endpoint: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<Vec<EventType>>,
    /// `Some(true)` enables (clears the disabled time and reason); `Some(false)` disables
    /// with the reason given.
    pub enabled: Option<(bool, String)>,
}

/// What deleting an endpoint removed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointDeletion {
    /// Deliveries that were still to be sent (they never will be).
    pub pending_deliveries: i64,
    /// Every delivery of the endpoint, sent or not (their attempts went too).
    pub deliveries: i64,
}

/// One attempt of a delivery, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// One event for one endpoint, with its newest attempts (newest first).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event_id: NotificationId,
    pub event_type: String,
    pub seq: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub attempt_log: Vec<AttemptRecord>,
}

/// The statuses a delivery can have.
pub const DELIVERY_STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Deliveries set back to pending, due now.
    pub replayed: i64,
    /// Deliveries that were pending already (left as they were).
    pub already_pending: i64,
    /// Whether more failed deliveries are left than one replay takes ([`REPLAY_BATCH`]).
    pub more: bool,
}

/// The test event made for an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestEvent {
    pub event_id: NotificationId,
    pub delivery_id: DeliveryId,
    pub seq: i64,
}

fn not_found(id: WebhookEndpointId) -> StoreError {
    StoreError::NotFound(format!("there is no webhook endpoint {}", id))
}

fn disabled(id: WebhookEndpointId) -> StoreError {
    StoreError::Conflict(format!(
        "webhook endpoint {} is disabled: enable it first (PATCH with \"enabled\": true, or the dashboard's Enable button)",
        id
    ))
}

fn events_json(events: &[EventType]) -> String {
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}

fn endpoint_from_row(row: &sqlx::any::AnyRow) -> Result<WebhookEndpoint, StoreError> {
    let events: String = row.try_get("events")?;
    let events: Vec<EventType> = serde_json::from_str(&events)
        .map_err(|e| StoreError::Corrupt(format!("webhook endpoint events: {e}")))?;
    Ok(WebhookEndpoint {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events,
        secret_sealed: row.try_get("secret")?,
        previous_secret_sealed: row.try_get("previous_secret")?,
        previous_until: row.try_get("previous_until")?,
        next_seq: row.try_get("next_seq")?,
        created_at: row.try_get("created_at")?,
        disabled_at: row.try_get("disabled_at")?,
        disabled_reason: row.try_get("disabled_reason")?,
    })
}

impl Store {
    /// Creates an endpoint of the organisation with the signing secret `secret` (sealed
    /// under `key`, bound to the new id, in the same transaction).
    pub async fn create_webhook_endpoint(
        &self,
        org_id: OrgId,
        url: &str,
        description: &str,
        events: &[EventType],
        key: &SecretKey,
        secret: &str,
    ) -> Result<WebhookEndpoint, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let id: WebhookEndpointId = sqlx::query_scalar(
            "INSERT INTO webhook_endpoints (org_id, url, description, events, secret, created_at) \
             VALUES ($1, $2, $3, $4, '', $5) RETURNING id",
        )
        .bind(org_id)
        .bind(url)
        .bind(description)
        .bind(events_json(events))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let sealed =
            seal_signing_secret(key, id, secret).map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query("UPDATE webhook_endpoints SET secret = $1 WHERE org_id = $2 AND id = $3")
            .bind(&sealed)
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.webhook_endpoint(org_id, id).await
    }

    /// One endpoint of the organisation.
    pub async fn webhook_endpoint(
        &self,
        org_id: OrgId,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND id = $2"
        );
        let row = sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| not_found(id))?;
        endpoint_from_row(&row)
    }

    /// Endpoints of the organisation with ids above `after`, in id order, at most `limit`.
    pub async fn webhook_endpoints_page(
        &self,
        org_id: OrgId,
        after: WebhookEndpointId,
        limit: i64,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    /// Changes an endpoint of the organisation; the fields not given stay.
    pub async fn update_webhook_endpoint(
        &self,
        org_id: OrgId,
        id: WebhookEndpointId,
        change: &EndpointChange,
    ) -> Result<WebhookEndpoint, StoreError> {
        let now = crate::clock::now_ms();
        let (set_enabled, enable, reason) = match &change.enabled {
            None => (0i64, 0i64, String::new()),
            Some((true, _)) => (1, 1, String::new()),
            Some((false, why)) => (1, 0, why.clone()),
        };
        // One conditional write: the row must be the organisation's; a field not given keeps
        // its value; disabling an endpoint already disabled keeps its first time and reason.
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET \
             url = CASE WHEN $3 = 1 THEN $4 ELSE url END, \
             description = CASE WHEN $5 = 1 THEN $6 ELSE description END, \
             events = CASE WHEN $7 = 1 THEN $8 ELSE events END, \
             disabled_at = CASE WHEN $9 = 0 THEN disabled_at WHEN $10 = 1 THEN NULL \
                 WHEN disabled_at IS NULL THEN $11 ELSE disabled_at END, \
             disabled_reason = CASE WHEN $9 = 0 THEN disabled_reason WHEN $10 = 1 THEN NULL \
                 WHEN disabled_at IS NULL THEN $12 ELSE disabled_reason END \
             WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(id)
        .bind(i64::from(change.url.is_some()))
        .bind(change.url.clone().unwrap_or_default())
        .bind(i64::from(change.description.is_some()))
        .bind(change.description.clone().unwrap_or_default())
        .bind(i64::from(change.events.is_some()))
        .bind(
            change
                .events
                .as_deref()
                .map(events_json)
                .unwrap_or_default(),
        )
        .bind(set_enabled)
        .bind(enable)
        .bind(now)
        .bind(reason)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        self.webhook_endpoint(org_id, id).await
    }

    /// Deletes an endpoint of the organisation with its deliveries (pending ones are never
    /// sent) and their attempts, and says how many deliveries went with it.
    pub async fn delete_webhook_endpoint(
        &self,
        org_id: OrgId,
        id: WebhookEndpointId,
    ) -> Result<EndpointDeletion, StoreError> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT id FROM webhook_endpoints WHERE org_id = $1 AND id = $2{}",
            self.dialect.lock_suffix()
        );
        sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(id))?;
        let counts = sqlx::query(
            "SELECT count(*) AS deliveries, \
             COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending \
             FROM webhook_deliveries WHERE org_id = $1 AND endpoint_id = $2",
        )
        .bind(org_id)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let deliveries: i64 = counts.try_get("deliveries")?;
        let pending: i64 = counts.try_get("pending")?;
        // The foreign keys cascade too; said here so the deletion does not depend on them.
        for sql in [
            "DELETE FROM webhook_attempts WHERE org_id = $1 AND endpoint_id = $2",
            "DELETE FROM webhook_deliveries WHERE org_id = $1 AND endpoint_id = $2",
            "DELETE FROM webhook_endpoints WHERE org_id = $1 AND id = $2",
        ] {
            sqlx::query(sql)
                .bind(org_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(EndpointDeletion {
            pending_deliveries: pending,
            deliveries,
        })
    }

    /// Replaces the endpoint's signing secret with `new_secret`; the current one becomes the
    /// previous one, which also signs until `now` + [`PREVIOUS_SECRET_MS`]. A previous secret
    /// from an earlier rotation is dropped.
    pub async fn rotate_webhook_secret(
        &self,
        org_id: OrgId,
        id: WebhookEndpointId,
        key: &SecretKey,
        new_secret: &str,
        now: i64,
    ) -> Result<WebhookEndpoint, StoreError> {
        let sealed = seal_signing_secret(key, id, new_secret)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        // The previous secret is the one stored at the moment of the write: two rotations at
        // once each move the then-current secret, never lose both.
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $3, \
             secret = $4 WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(id)
        .bind(now + PREVIOUS_SECRET_MS)
        .bind(&sealed)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        self.webhook_endpoint(org_id, id).await
    }

    /// The endpoint's deliveries, newest first, below `before` (None: from the newest), at
    /// most `limit`, optionally only those in `status`; each with its newest attempts.
    pub async fn webhook_deliveries_page(
        &self,
        org_id: OrgId,
        endpoint_id: WebhookEndpointId,
        status: Option<&str>,
        before: Option<DeliveryId>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        // The endpoint must be the organisation's: an unknown one is "not found", not empty.
        self.webhook_endpoint(org_id, endpoint_id).await?;
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, e.type, d.seq, d.status, d.attempts, d.next_attempt_at, \
             d.last_status_code, d.last_error, d.created_at, d.delivered_at \
             FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id AND e.org_id = d.org_id \
             WHERE d.org_id = $1 AND d.endpoint_id = $2 AND d.id < $3 \
             AND ($4 = '' OR d.status = $4) ORDER BY d.id DESC LIMIT $5",
        )
        .bind(org_id)
        .bind(endpoint_id)
        .bind(before.map_or(i64::MAX, DeliveryId::get))
        .bind(status.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let mut deliveries = rows
            .iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    id: r.try_get("id")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("type")?,
                    seq: r.try_get("seq")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    last_status_code: r.try_get("last_status_code")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    delivered_at: r.try_get("delivered_at")?,
                    attempt_log: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let placeholders: Vec<String> = (0..deliveries.len())
            .map(|i| format!("${}", i + 4))
            .collect();
        let sql = format!(
            "SELECT delivery_id, at, status_code, latency_ms, response_excerpt, error FROM ( \
             SELECT a.*, ROW_NUMBER() OVER (PARTITION BY a.delivery_id ORDER BY a.id DESC) AS rn \
             FROM webhook_attempts a WHERE a.org_id = $1 AND a.endpoint_id = $2 \
             AND a.delivery_id IN ({})) t WHERE rn <= $3 ORDER BY delivery_id, at DESC, rn",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(endpoint_id)
            .bind(ATTEMPTS_SHOWN);
        for d in &deliveries {
            query = query.bind(d.id);
        }
        let attempts = query.fetch_all(&self.read).await?;
        for a in &attempts {
            let delivery_id: DeliveryId = a.try_get("delivery_id")?;
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == delivery_id) {
                d.attempt_log.push(AttemptRecord {
                    at: a.try_get("at")?,
                    status_code: a.try_get("status_code")?,
                    latency_ms: a.try_get("latency_ms")?,
                    response_excerpt: a.try_get("response_excerpt")?,
                    error: a.try_get("error")?,
                });
            }
        }
        Ok(deliveries)
    }

    /// The endpoint, locked for the rest of `tx` (PostgreSQL; SQLite's write transaction
    /// holds the database), refused when disabled.
    async fn enabled_endpoint_locked(
        &self,
        tx: &mut crate::store::Tx,
        org_id: OrgId,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint, StoreError> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND id = $2{}",
            self.dialect.lock_suffix()
        );
        let row = sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| not_found(id))?;
        let endpoint = endpoint_from_row(&row)?;
        if endpoint.disabled_at.is_some() {
            return Err(disabled(id));
        }
        Ok(endpoint)
    }

    /// Sets the endpoint's delivery of event `event_id` back to pending, due now, with a
    /// fresh retry schedule (its attempts stay in the log). A delivery still pending is left
    /// as it is. The event must have been given to this endpoint.
    pub async fn replay_webhook_event(
        &self,
        org_id: OrgId,
        endpoint_id: WebhookEndpointId,
        event_id: NotificationId,
        now: i64,
    ) -> Result<ReplayOutcome, StoreError> {
        let mut tx = self.begin().await?;
        self.enabled_endpoint_locked(&mut tx, org_id, endpoint_id)
            .await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM webhook_deliveries WHERE org_id = $1 AND endpoint_id = $2 AND event_id = $3",
        )
        .bind(org_id)
        .bind(endpoint_id)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(_) = status else {
            return Err(StoreError::NotFound(format!(
                "event {} was never given to webhook endpoint {}: only events the endpoint was sent (see its deliveries) can be replayed",
                event_id, endpoint_id
            )));
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $4, \
             owner = NULL, lease_until = NULL, delivered_at = NULL \
             WHERE org_id = $1 AND endpoint_id = $2 AND event_id = $3 AND status <> 'pending'",
        )
        .bind(org_id)
        .bind(endpoint_id)
        .bind(event_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let replayed = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        Ok(ReplayOutcome {
            replayed,
            already_pending: 1 - replayed.min(1),
            more: false,
        })
    }

    /// Sets every failed delivery of the endpoint whose event happened at or after `since`
    /// back to pending, due now (at most [`REPLAY_BATCH`], oldest first; `more` says when
    /// some are left).
    pub async fn replay_failed_webhook_deliveries(
        &self,
        org_id: OrgId,
        endpoint_id: WebhookEndpointId,
        since: i64,
        now: i64,
    ) -> Result<ReplayOutcome, StoreError> {
        let mut tx = self.begin().await?;
        self.enabled_endpoint_locked(&mut tx, org_id, endpoint_id)
            .await?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $4, \
             owner = NULL, lease_until = NULL, delivered_at = NULL \
             WHERE org_id = $1 AND endpoint_id = $2 AND status = 'failed' AND id IN ( \
               SELECT d.id FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id \
               WHERE d.org_id = $1 AND d.endpoint_id = $2 AND d.status = 'failed' \
               AND e.org_id = $1 AND e.occurred_at >= $3 ORDER BY d.id LIMIT $5)",
        )
        .bind(org_id)
        .bind(endpoint_id)
        .bind(since)
        .bind(now)
        .bind(REPLAY_BATCH)
        .execute(&mut *tx)
        .await?;
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id \
             WHERE d.org_id = $1 AND d.endpoint_id = $2 AND d.status = 'failed' \
             AND e.org_id = $1 AND e.occurred_at >= $3",
        )
        .bind(org_id)
        .bind(endpoint_id)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ReplayOutcome {
            replayed: i64::try_from(done.rows_affected()).unwrap_or(i64::MAX),
            already_pending: 0,
            more: left > 0,
        })
    }

    /// Writes a `webhook.test` event and its one delivery to this endpoint (the endpoint's
    /// next sequence number, due now) in one transaction. The event is marked fanned out:
    /// no other endpoint ever gets it.
    pub async fn send_webhook_test_event(
        &self,
        org_id: OrgId,
        endpoint_id: WebhookEndpointId,
        actor: &str,
        now: i64,
    ) -> Result<TestEvent, StoreError> {
        let mut tx = self.begin().await?;
        let endpoint = self
            .enabled_endpoint_locked(&mut tx, org_id, endpoint_id)
            .await?;
        let data = serde_json::json!({
            "endpoint_id": endpoint_id.to_string(),
            "requested_by": actor,
            "message": "A test event from Herald, sent on request to this endpoint only.",
        });
        let data_text = data.to_string();
        outbox::emit(&mut tx, org_id, EventType::WebhookTest, None, now, data).await?;
        // The endpoint's row is locked, so no other test event of this endpoint (the same
        // data) can be written before this transaction ends: the newest with this data is it.
        let event_id: NotificationId = sqlx::query_scalar(
            "SELECT max(id) FROM outbox_events WHERE org_id = $1 AND type = $2 AND data = $3",
        )
        .bind(org_id)
        .bind(EventType::WebhookTest.as_str())
        .bind(&data_text)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE outbox_events SET fanned_out_at = $3 WHERE org_id = $1 AND id = $2 \
             AND fanned_out_at IS NULL",
        )
        .bind(org_id)
        .bind(event_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let seq = endpoint.next_seq;
        let taken = sqlx::query(
            "UPDATE webhook_endpoints SET next_seq = next_seq + 1 \
             WHERE org_id = $1 AND id = $2 AND next_seq = $3",
        )
        .bind(org_id)
        .bind(endpoint_id)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "webhook endpoint {} changed while the test event was written: try again",
                endpoint_id
            )));
        }
        let delivery_id: DeliveryId = sqlx::query_scalar(
            "INSERT INTO webhook_deliveries (org_id, endpoint_id, event_id, seq, campaign_id, \
             status, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, NULL, 'pending', 0, $5, $5) RETURNING id",
        )
        .bind(org_id)
        .bind(endpoint_id)
        .bind(event_id)
        .bind(seq)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TestEvent {
            event_id,
            delivery_id,
            seq,
        })
    }
}
