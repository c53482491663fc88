//! Provider receipts (delivered, read, undelivered, failed): applied to their message by
//! rank (docs/DESIGN.md invariant 7), or kept in `pending_receipts` until the message's
//! provider id is recorded.

use crate::domain::{Counts, MessageStatus};
use crate::store::helpers::{clean, ids_json, status_of};
use crate::store::{Receipt, ReceiptReport, Store, StoreError, Tx};
use sqlx::{Any, AssertSqlSafe, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How long a receipt for an unknown provider id is kept waiting for its message.
const KEPT_RECEIPT_MS: i64 = 7 * 24 * 3600 * 1000;

impl Store {
    /// Applies provider receipts (delivered, read, undelivered, failed). A receipt moves a
    /// message only to a strictly higher rank (docs/DESIGN.md invariant 7); one whose provider id
    /// is not recorded yet is kept in `pending_receipts` and applied when it is. A receipt
    /// only ever finds a message of its own channel (`Receipt::channel_id`): another
    /// organisation's channel cannot name this one's provider ids.
    pub async fn apply_receipts(
        &self,
        receipts: &[Receipt],
        now: i64,
    ) -> Result<ReceiptReport, StoreError> {
        let mut deltas = BTreeMap::new();
        let mut tx = self.begin().await?;
        let report = self
            .apply_receipts_in(&mut tx, receipts, now, &mut deltas, true)
            .await?;
        for (campaign, delta) in &deltas {
            self.apply_counts(&mut tx, *campaign, delta, 0, None)
                .await?;
            // Receipts after the end move a completed campaign's outcome with its counters.
            self.settle_outcome(&mut tx, *campaign).await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    /// The reconciler's sweep of kept receipts whose provider id is recorded by now: on
    /// PostgreSQL a receipt can be kept in the same instant its outcome commits, each
    /// transaction missing the other's row; this applies it on the next pass.
    pub async fn apply_kept_receipts(&self, now: i64) -> Result<usize, StoreError> {
        let mut deltas = BTreeMap::new();
        let mut tx = self.begin().await?;
        // A receipt whose provider id was never recorded in a week is for a message Herald
        // did not send (another tool on the same number): not worth keeping forever.
        sqlx::query("DELETE FROM pending_receipts WHERE received_at < $1")
            .bind(now - KEPT_RECEIPT_MS)
            .execute(&mut *tx)
            .await?;
        let n = self
            .apply_pending_receipts(
                &mut tx,
                sqlx::query(
                    "SELECT pr.id, pr.channel_id, pr.provider_id, pr.status, pr.error FROM pending_receipts pr \
                     WHERE EXISTS (SELECT 1 FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
                     WHERE m.provider_id = pr.provider_id AND c.channel_id = pr.channel_id) ORDER BY pr.id LIMIT 1000",
                ),
                now,
                &mut deltas,
            )
            .await?;
        for (campaign, delta) in &deltas {
            self.apply_counts(&mut tx, *campaign, delta, 0, None)
                .await?;
            // Receipts after the end move a completed campaign's outcome with its counters.
            self.settle_outcome(&mut tx, *campaign).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Applies the kept receipts `select` returns (columns id, channel_id, provider_id,
    /// status, error) and deletes them. Each applies within the channel it was kept for.
    pub(in crate::store) async fn apply_pending_receipts(
        &self,
        tx: &mut Tx,
        select: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
        now: i64,
        deltas: &mut BTreeMap<i64, Counts>,
    ) -> Result<usize, StoreError> {
        let rows = select.fetch_all(&mut **tx).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut receipts = Vec::new();
        let mut ids = Vec::new();
        for r in &rows {
            ids.push(r.try_get::<i64, _>("id")?);
            // Kept before receipts carried their channel: no channel may claim it.
            let Some(channel_id) = r.try_get::<Option<i64>, _>("channel_id")? else {
                continue;
            };
            receipts.push(Receipt {
                channel_id,
                provider_id: r.try_get("provider_id")?,
                status: status_of(r, "status")?,
                error: r.try_get("error")?,
            });
        }
        self.apply_receipts_in(tx, &receipts, now, deltas, false)
            .await?;
        let del = format!(
            "DELETE FROM pending_receipts WHERE id IN {}",
            self.dialect.json_ids("$1")
        );
        let n = ids.len();
        sqlx::query(AssertSqlSafe(del))
            .bind(ids_json(ids))
            .execute(&mut **tx)
            .await?;
        Ok(n)
    }

    async fn apply_receipts_in(
        &self,
        tx: &mut Tx,
        receipts: &[Receipt],
        now: i64,
        deltas: &mut BTreeMap<i64, Counts>,
        keep_unknown: bool,
    ) -> Result<ReceiptReport, StoreError> {
        let mut report = ReceiptReport::default();
        if receipts.is_empty() {
            return Ok(report);
        }
        let param = serde_json::Value::from(
            receipts
                .iter()
                .map(|r| serde_json::json!({"channel_id": r.channel_id, "provider_id": r.provider_id}))
                .collect::<Vec<_>>(),
        )
        .to_string();
        // The channel is part of the lookup, in the SQL: a provider id another channel's
        // message carries is not this receipt's message.
        let recs = self
            .dialect
            .json_records("$1", &[("channel_id", "int"), ("provider_id", "text")]);
        let sql = format!(
            "SELECT DISTINCT m.id, m.campaign_id, m.provider_id, c.channel_id FROM {recs} \
             JOIN messages m ON m.provider_id = x.provider_id \
             JOIN campaigns c ON c.id = m.campaign_id AND c.channel_id = x.channel_id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&param)
            .fetch_all(&mut **tx)
            .await?;
        let mut by_provider: HashMap<(i64, String), (i64, i64)> = HashMap::new();
        let mut campaigns = BTreeSet::new();
        for r in &rows {
            let campaign: i64 = r.try_get("campaign_id")?;
            campaigns.insert(campaign);
            by_provider.insert(
                (r.try_get("channel_id")?, r.try_get("provider_id")?),
                (r.try_get("id")?, campaign),
            );
        }
        self.lock_campaigns(tx, &campaigns).await?;
        let mut message_events = Vec::new();
        for receipt in receipts {
            let key = (receipt.channel_id, receipt.provider_id.clone());
            let Some((message_id, campaign_id)) = by_provider.get(&key) else {
                if keep_unknown {
                    sqlx::query(
                        "INSERT INTO pending_receipts (channel_id, provider_id, status, error, received_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(receipt.channel_id)
                    .bind(clean(&receipt.provider_id))
                    .bind(receipt.status.as_str())
                    .bind(receipt.error.as_deref().map(clean))
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    report.kept += 1;
                }
                continue;
            };
            let Some(rank) = receipt.status.receipt_rank() else {
                report.ignored += 1;
                continue;
            };
            // Only statuses of a strictly lower rank may move; the WHERE clause says so.
            let lower: Vec<String> = MessageStatus::ALL
                .into_iter()
                .filter(|s| s.receipt_rank().is_some_and(|r| r < rank))
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            if lower.is_empty() {
                // A `sent` receipt: a recorded provider id means the message is sent
                // already, so there is nothing below it to move from.
                report.ignored += 1;
                continue;
            }
            // A success (sent, delivered, read) clears an earlier attempt's error: a message
            // that reached its recipient shows no stale failure.
            let success = matches!(
                receipt.status,
                MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read
            );
            let sql = format!(
                "UPDATE messages SET status = $1, \
                 last_error = CASE WHEN {} THEN NULL ELSE COALESCE($2, last_error) END, updated_at = $3 \
                 WHERE id = $4 AND status IN ({}) RETURNING (SELECT 1) AS one",
                if success { "1 = 1" } else { "1 = 0" },
                lower.join(",")
            );
            // The previous status is needed for the counters: read it under the same lock.
            let prev: Option<String> =
                sqlx::query_scalar("SELECT status FROM messages WHERE id = $1")
                    .bind(*message_id)
                    .fetch_optional(&mut **tx)
                    .await?;
            let moved = sqlx::query(AssertSqlSafe(sql))
                .bind(receipt.status.as_str())
                .bind(receipt.error.as_deref().map(clean))
                .bind(now)
                .bind(*message_id)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            match (moved, prev.as_deref().and_then(MessageStatus::parse)) {
                (true, Some(prev)) => {
                    deltas
                        .entry(*campaign_id)
                        .or_default()
                        .moved(prev, receipt.status);
                    if let Some(t) = receipt_event(prev, receipt.status) {
                        message_events.push((*message_id, t));
                    }
                    report.applied += 1;
                }
                _ => report.ignored += 1,
            }
        }
        self.emit_message_events(tx, now, &message_events).await?;
        Ok(report)
    }
}

/// The message event a receipt's move reports: failed, undelivered, or delivered (a
/// `read` straight from below `delivered` was delivered too).
fn receipt_event(prev: MessageStatus, to: MessageStatus) -> Option<crate::events::EventType> {
    use crate::events::EventType;
    match to {
        MessageStatus::Failed => Some(EventType::MessageFailed),
        MessageStatus::Undelivered => Some(EventType::MessageUndelivered),
        MessageStatus::Delivered => Some(EventType::MessageDelivered),
        MessageStatus::Read if prev != MessageStatus::Delivered => {
            Some(EventType::MessageDelivered)
        }
        _ => None,
    }
}
