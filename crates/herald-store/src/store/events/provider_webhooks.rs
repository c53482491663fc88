//! Webhooks received from providers, kept as they arrived (and deleted after their
//! retention), with the inbound messages they carried reported once each as
//! `message.inbound`.

use crate::ids::ReplyId;
use crate::ids::{ChannelId, OrgId};
use crate::store::events::outbox;
use crate::store::helpers::clean;
use crate::store::{InboundMessage, Store, StoreError};

/// What `record_webhook_with_inbound` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedInbound {
    /// `message.inbound` events.
    pub events: usize,
    /// Per inbound message, in order, its reply; None for a provider's retry of one
    /// already recorded.
    pub replies: Vec<Option<ReplyId>>,
}

impl Store {
    /// Keeps a provider webhook as it arrived and, in the same transaction, writes each
    /// inbound message it carried as a reply (the inbox) and reports it as
    /// `message.inbound` (a STOP or START is a contact event instead), once per provider
    /// message id: a provider's retry of a message already recorded writes nothing twice.
    pub async fn record_webhook_with_inbound(
        &self,
        channel_id: ChannelId,
        kind: &str,
        outcome: &str,
        body: &str,
        inbound: &[InboundMessage],
    ) -> Result<RecordedInbound, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_events (channel_id, kind, verified, outcome, body, received_at) VALUES ($1, $2, 1, $3, $4, $5)",
        )
        .bind(channel_id)
        .bind(kind)
        .bind(outcome)
        .bind(body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut written = 0;
        let mut replies = Vec::with_capacity(inbound.len());
        if !inbound.is_empty() {
            let org_id: OrgId = sqlx::query_scalar("SELECT org_id FROM channels WHERE id = $1")
                .bind(channel_id)
                .fetch_one(&mut *tx)
                .await?;
            for m in inbound {
                if let Some(pid) = &m.provider_message_id {
                    let new = sqlx::query(
                        "INSERT INTO inbound_messages (channel_id, provider_message_id, received_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (channel_id, provider_message_id) DO NOTHING",
                    )
                    .bind(channel_id)
                    .bind(clean(pid))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if new == 0 {
                        replies.push(None);
                        continue;
                    }
                }
                let context = outbox::inbound_context(&mut tx, org_id, channel_id, m).await?;
                if !matches!(m.keyword, Some("stop" | "start")) {
                    outbox::emit_inbound(&mut tx, org_id, channel_id, m, now, context).await?;
                    written += 1;
                }
                let reply = self
                    .insert_reply(&mut tx, org_id, channel_id, m, context.0, context.1, now)
                    .await?;
                replies.push(Some(reply));
            }
        }
        tx.commit().await?;
        Ok(RecordedInbound {
            events: written,
            replies,
        })
    }

    /// Keeps a provider webhook as it arrived.
    pub async fn record_webhook_event(
        &self,
        channel_id: ChannelId,
        kind: &str,
        verified: bool,
        outcome: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_events (channel_id, kind, verified, outcome, body, received_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(channel_id)
        .bind(kind)
        .bind(i64::from(verified))
        .bind(outcome)
        .bind(body)
        .bind(crate::clock::now_ms())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Deletes webhook records received before `before`, oldest first, `batch` rows per
    /// statement and at most `max_batches` statements: each statement is its own short
    /// transaction, so a large backlog never holds the write lock for long. Returns how
    /// many were deleted.
    pub async fn delete_webhook_events_before(
        &self,
        before: i64,
        batch: i64,
        max_batches: usize,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        // The inbound dedup keys live as long as the webhook records that carried them.
        sqlx::query(
            "DELETE FROM inbound_messages WHERE received_at < $1 AND (channel_id, provider_message_id) IN \
             (SELECT channel_id, provider_message_id FROM inbound_messages WHERE received_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(batch)
        .execute(&self.write)
        .await?;
        for _ in 0..max_batches {
            let n = sqlx::query(
                "DELETE FROM webhook_events WHERE id IN \
                 (SELECT id FROM webhook_events WHERE received_at < $1 ORDER BY received_at, id LIMIT $2)",
            )
            .bind(before)
            .bind(batch)
            .execute(&self.write)
            .await?
            .rows_affected();
            deleted += n;
            if n < u64::try_from(batch).unwrap_or(0) {
                break;
            }
        }
        Ok(deleted)
    }
}
