//! Retention of the outbox: settled events are deleted once older than
//! `event_retention_days`, with their deliveries and attempts; and the counts `herald bench`
//! reports about the outbox.

use crate::events::EventType;
use crate::ids::{NotificationId, OrgId, WebhookEndpointId};
use crate::store::helpers::ids_json;
use crate::store::{Store, StoreError, sql_str};

impl Store {
    /// Deletes events that occurred before `before`, are fanned out and have no pending
    /// delivery (their deliveries and attempts go with them), `batch` a statement, at most
    /// `max_batches` statements. Returns how many events were deleted.
    pub async fn delete_settled_events_before(
        &self,
        before: i64,
        batch: i64,
        max_batches: usize,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for _ in 0..max_batches {
            let mut tx = self.begin().await?;
            let ids: Vec<NotificationId> = sqlx::query_scalar(
                "SELECT e.id FROM outbox_events e WHERE e.occurred_at < $1 \
                 AND e.fanned_out_at IS NOT NULL AND (e.alert_pending IS NULL OR e.alert_pending = 0) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                 WHERE d.event_id = e.id AND d.status = 'pending') \
                 ORDER BY e.occurred_at, e.id LIMIT $2",
            )
            .bind(before)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                tx.rollback().await?;
                break;
            }
            let json = ids_json(ids.iter().copied());
            let list = self.dialect.json_ids("$1");
            // Children first: SQLite enforces no foreign keys unless asked.
            sqlx::query(sql_str(&format!(
                "DELETE FROM webhook_attempts WHERE delivery_id IN \
                 (SELECT id FROM webhook_deliveries WHERE event_id IN {list})"
            )))
            .bind(json.clone())
            .execute(&mut *tx)
            .await?;
            sqlx::query(sql_str(&format!(
                "DELETE FROM webhook_deliveries WHERE event_id IN {list} AND status <> 'pending'"
            )))
            .bind(json.clone())
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query(sql_str(&format!(
                "DELETE FROM outbox_events WHERE id IN {list} AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = outbox_events.id)"
            )))
            .bind(json)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            deleted += n;
            if n < u64::try_from(batch).unwrap_or(0) {
                break;
            }
        }
        Ok(deleted)
    }
}

impl Store {
    /// An endpoint for `herald bench`'s own loopback receiver, subscribed to `events`, its
    /// `secret` sealed under `key` with the endpoint's id (as endpoint secrets are at rest).
    pub async fn create_bench_webhook_endpoint(
        &self,
        org_id: OrgId,
        url: &str,
        events: &[EventType],
        key: &crate::secrets::SecretKey,
        secret: &str,
    ) -> Result<WebhookEndpointId, StoreError> {
        let names: Vec<&str> = events.iter().map(|t| t.as_str()).collect();
        let names =
            serde_json::to_string(&names).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.begin().await?;
        let id: WebhookEndpointId = sqlx::query_scalar(
            "INSERT INTO webhook_endpoints (org_id, url, description, events, secret, created_at) \
             VALUES ($1, $2, 'herald bench', $3, '', $4) RETURNING id",
        )
        .bind(org_id)
        .bind(url)
        .bind(names)
        .bind(crate::clock::now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let sealed = super::webhook_endpoints::seal_signing_secret(key, id, secret)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query("UPDATE webhook_endpoints SET secret = $1 WHERE id = $2 AND org_id = $3")
            .bind(sealed)
            .bind(id)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Events not fanned out yet plus deliveries still pending, for `herald bench` (it
    /// polls this while the backlog drains: both counts read partial indexes only).
    pub async fn webhook_backlog(&self) -> Result<i64, StoreError> {
        let unfanned: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox_events WHERE fanned_out_at IS NULL")
                .fetch_one(&self.read)
                .await?;
        Ok(unfanned + self.pending_webhook_deliveries().await?)
    }

    /// Rows in the outbox, for `herald bench`.
    pub async fn outbox_rows(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox_events")
            .fetch_one(&self.read)
            .await?)
    }
}
