//! Provider receipts (delivered, read, undelivered, failed): applied to their message by
//! rank (docs/DESIGN.md invariant 7), or kept in `pending_receipts` until the message's
//! provider id is recorded.

use crate::domain::{Counts, MessageStatus};
use crate::ids::{CampaignId, ChannelId, MessageId};
use crate::store::helpers::{clean, ids_json, status_of};
use crate::store::{Receipt, ReceiptReport, Store, StoreError, Tx};
use sqlx::{Any, AssertSqlSafe, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How long a receipt for an unknown provider id is kept waiting for its message.
const KEPT_RECEIPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// How many kept receipts one `apply_kept_receipts` transaction takes. A caller that gets a
/// full batch back calls again: more are waiting.
pub const KEPT_RECEIPT_BATCH: usize = 1000;

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
    /// transaction missing the other's row; this applies it on the next pass. Takes at most
    /// [`KEPT_RECEIPT_BATCH`] and returns how many it took.
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
                     WHERE m.provider_id = pr.provider_id AND c.channel_id = pr.channel_id) ORDER BY pr.id LIMIT $1",
                )
                .bind(KEPT_RECEIPT_BATCH as i64),
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
        deltas: &mut BTreeMap<CampaignId, Counts>,
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
            let Some(channel_id) = r.try_get::<Option<ChannelId>, _>("channel_id")? else {
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
        deltas: &mut BTreeMap<CampaignId, Counts>,
        keep_unknown: bool,
    ) -> Result<ReceiptReport, StoreError> {
        let mut report = ReceiptReport::default();
        if receipts.is_empty() {
            return Ok(report);
        }
        let param = serde_json::Value::from(
            receipts
                .iter()
                .map(|r| serde_json::json!({"channel_id": r.channel_id.get(), "provider_id": r.provider_id}))
                .collect::<Vec<_>>(),
        )
        .to_string();
        // The channel is part of the lookup, in the SQL: a provider id another channel's
        // message carries is not this receipt's message. Each receipt is one probe of the
        // provider-id index, its channel checked on the rows found: as a join, PostgreSQL
        // planned it on a messages table not analysed yet as a hash join over every message,
        // and with the channel as a join or `EXISTS`, as the provider-id index ANDed with
        // every message of the campaign, at each probe (scripts/explain-plans).
        let recs = self
            .dialect
            .json_records("$1", &[("channel_id", "int"), ("provider_id", "text")]);
        let sql = format!(
            "SELECT x.channel_id, x.provider_id, \
             (SELECT m.id FROM messages m WHERE m.provider_id = x.provider_id \
              AND (SELECT c.channel_id = x.channel_id FROM campaigns c WHERE c.id = m.campaign_id) \
              LIMIT 1) AS id FROM {recs}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&param)
            .fetch_all(&mut **tx)
            .await?;
        let mut by_provider: HashMap<(ChannelId, String), MessageId> = HashMap::new();
        for r in &rows {
            if let Some(id) = r.try_get::<Option<MessageId>, _>("id")? {
                by_provider.insert((r.try_get("channel_id")?, r.try_get("provider_id")?), id);
            }
        }

        // The messages' rows are locked in id order (PostgreSQL; SQLite has one writer), so
        // the statuses read here are the ones the conditional update below finds: only
        // another receipt moves a message that has a provider id, and it waits here. The
        // campaign row is not locked until the counters are added, last, by the caller: the
        // dispatcher's claims and outcome commits wait on that lock, so the message update
        // and the events written here are not sending time lost. The dispatcher never waits
        // on these rows: it only writes messages in flight, and none of these is.
        let ids: Vec<MessageId> = by_provider.values().copied().collect();
        let select = format!(
            "SELECT id, status, last_error FROM messages WHERE id IN {} ORDER BY id{}",
            self.dialect.json_ids("$1"),
            self.dialect.lock_suffix()
        );
        let mut moves: HashMap<MessageId, ReceiptMove> = HashMap::new();
        for r in sqlx::query(AssertSqlSafe(select))
            .bind(ids_json(ids))
            .fetch_all(&mut **tx)
            .await?
        {
            let status = status_of(&r, "status")?;
            moves.insert(
                r.try_get("id")?,
                ReceiptMove {
                    from: status,
                    to: status,
                    error: r.try_get("last_error")?,
                    events: Vec::new(),
                    receipts: 0,
                },
            );
        }
        let mut unknown = Vec::new();
        for receipt in receipts {
            let key = (receipt.channel_id, receipt.provider_id.clone());
            let Some(message_id) = by_provider.get(&key) else {
                if keep_unknown {
                    unknown.push(serde_json::json!({
                        "channel_id": receipt.channel_id.get(),
                        "provider_id": clean(&receipt.provider_id),
                        "status": receipt.status.as_str(),
                        "error": receipt.error.as_deref().map(clean),
                    }));
                }
                continue;
            };
            if !moves.get_mut(message_id).is_some_and(|m| m.step(receipt)) {
                report.ignored += 1;
            }
        }
        if !unknown.is_empty() {
            report.kept += unknown.len();
            let recs = self.dialect.json_records(
                "$1",
                &[
                    ("channel_id", "int"),
                    ("provider_id", "text"),
                    ("status", "text"),
                    ("error", "text"),
                ],
            );
            let sql = format!(
                "INSERT INTO pending_receipts (channel_id, provider_id, status, error, received_at) \
                 SELECT x.channel_id, x.provider_id, x.status, x.error, $2 FROM {recs}"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(serde_json::Value::from(unknown).to_string())
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }

        // One conditional update for the batch: each message moves from the status read
        // above to the highest its receipts reached (docs/DESIGN.md invariant 7).
        let records: Vec<serde_json::Value> = moves
            .iter()
            .filter(|(_, m)| m.receipts > 0)
            .map(|(id, m)| {
                serde_json::json!({
                    "id": id.get(),
                    "from_status": m.from.as_str(),
                    "to_status": m.to.as_str(),
                    "error": m.error,
                })
            })
            .collect();
        let mut message_events = Vec::new();
        if !records.is_empty() {
            let recs = self.dialect.json_records(
                "$1",
                &[
                    ("id", "int"),
                    ("from_status", "text"),
                    ("to_status", "text"),
                    ("error", "text"),
                ],
            );
            let sql = format!(
                "UPDATE messages SET status = x.to_status, last_error = x.error, updated_at = $2, \
                 delivered_at = CASE WHEN x.to_status IN ('delivered', 'read') THEN COALESCE(messages.delivered_at, $2) ELSE messages.delivered_at END, \
                 read_at = CASE WHEN x.to_status = 'read' THEN COALESCE(messages.read_at, $2) ELSE messages.read_at END, \
                 failed_at = CASE WHEN x.to_status IN ('failed', 'undelivered') THEN $2 ELSE messages.failed_at END \
                 FROM {recs} WHERE messages.id = x.id AND messages.status = x.from_status \
                 RETURNING messages.id, messages.campaign_id"
            );
            let mut moved: Vec<(MessageId, CampaignId)> = Vec::with_capacity(records.len());
            for r in sqlx::query(AssertSqlSafe(sql))
                .bind(serde_json::Value::from(records).to_string())
                .bind(now)
                .fetch_all(&mut **tx)
                .await?
            {
                moved.push((r.try_get("id")?, r.try_get("campaign_id")?));
            }
            // The order of occurrence: events are written in message order, as before.
            moved.sort_unstable();
            let mut moved_ids = BTreeSet::new();
            for (message_id, campaign_id) in moved {
                let Some(m) = moves.get(&message_id) else {
                    continue;
                };
                moved_ids.insert(message_id);
                deltas.entry(campaign_id).or_default().moved(m.from, m.to);
                message_events.extend(m.events.iter().map(|t| (message_id, *t)));
                report.applied += m.receipts;
            }
            // A message whose status changed under the lock after all (none should): its
            // receipts moved nothing.
            report.ignored += moves
                .iter()
                .filter(|(id, m)| m.receipts > 0 && !moved_ids.contains(id))
                .map(|(_, m)| m.receipts)
                .sum::<usize>();
        }
        self.emit_message_events(tx, now, &message_events).await?;
        Ok(report)
    }
}

/// One message's receipts in a batch, applied in order of arrival to the status read
/// under the campaign lock: `from` is what the conditional update expects, `to` and
/// `error` what it writes.
struct ReceiptMove {
    from: MessageStatus,
    to: MessageStatus,
    error: Option<String>,
    events: Vec<crate::events::EventType>,
    /// How many of the batch's receipts moved it.
    receipts: usize,
}

impl ReceiptMove {
    /// Applies one receipt if it ranks strictly higher than where the message is now
    /// (a `sent` receipt never does: a recorded provider id is already `sent`).
    fn step(&mut self, receipt: &Receipt) -> bool {
        let (Some(rank), Some(current)) = (receipt.status.receipt_rank(), self.to.receipt_rank())
        else {
            return false;
        };
        if current >= rank {
            return false;
        }
        // A success (sent, delivered, read) clears an earlier attempt's error: a message
        // that reached its recipient shows no stale failure.
        let success = matches!(
            receipt.status,
            MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read
        );
        self.error = if success {
            None
        } else {
            receipt.error.as_deref().map(clean).or(self.error.take())
        };
        if let Some(t) = receipt_event(self.to, receipt.status) {
            self.events.push(t);
        }
        self.to = receipt.status;
        self.receipts += 1;
        true
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
