//! Messages in doubt: in flight when their owner died, marked `in_doubt`, then resolved by
//! asking the provider (kept proofs, `resolve_in_doubt_sent_many`) or by the in-doubt policy
//! (resend or fail).

use crate::domain::{CampaignStatus, Counts, MessageStatus};
use crate::ids::{CampaignId, ChannelId, MessageId};
use crate::store::helpers::{clean, ids_json};
use crate::store::{InDoubtCandidate, InDoubtReport, ProviderHas, Store, StoreError, directory};
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};

impl Store {
    /// In-flight messages whose owner is dead (heartbeat older than `stale_before`, stopped,
    /// unknown, or listed in `dead_owners`) and whose lease ran out become `in_doubt`:
    /// marked, counted on the message and the campaign.
    pub async fn mark_in_doubt(
        &self,
        now: i64,
        stale_before: i64,
        dead_owners: &[String],
    ) -> Result<Vec<(CampaignId, i64)>, StoreError> {
        let dead = serde_json::Value::from(dead_owners.to_vec()).to_string();
        let dead_sql = self.dialect.json_texts("$3");
        let orphan = format!(
            "m.status = 'in_flight' AND (m.owner IN {dead_sql} OR ((m.lease_until IS NULL OR m.lease_until < $1) \
             AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = m.owner AND i.stopped_at IS NULL AND i.heartbeat_at >= $2)))"
        );
        let select =
            format!("SELECT m.id, m.campaign_id FROM messages m WHERE {orphan} LIMIT 10000");
        let mut tx = self.begin().await?;
        let rows = sqlx::query(AssertSqlSafe(select))
            .bind(now)
            .bind(stale_before)
            .bind(&dead)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        let mut campaigns = BTreeSet::new();
        for r in &rows {
            ids.push(r.try_get::<MessageId, _>("id")?);
            campaigns.insert(r.try_get::<CampaignId, _>("campaign_id")?);
        }
        self.lock_campaigns(&mut tx, &campaigns).await?;
        let update = format!(
            "UPDATE messages SET status = 'in_doubt', was_in_doubt = 1, in_doubt_at = $1, lease_until = NULL, updated_at = $1, \
             last_error = 'in doubt: owner ' || COALESCE(owner, '?') || ' died mid-send' \
             WHERE id IN {} AND id IN (SELECT m.id FROM messages m WHERE {orphan}) RETURNING campaign_id",
            self.dialect.json_ids("$4")
        );
        let moved = sqlx::query(AssertSqlSafe(update))
            .bind(now)
            .bind(stale_before)
            .bind(&dead)
            .bind(ids_json(ids))
            .fetch_all(&mut *tx)
            .await?;
        let mut per_campaign: BTreeMap<CampaignId, i64> = BTreeMap::new();
        for r in &moved {
            *per_campaign.entry(r.try_get("campaign_id")?).or_default() += 1;
        }
        for (campaign, n) in &per_campaign {
            let mut delta = Counts::default();
            delta.add(MessageStatus::InFlight, -n);
            delta.add(MessageStatus::InDoubt, *n);
            self.apply_counts(&mut tx, *campaign, &delta, *n, None)
                .await?;
        }
        tx.commit().await?;
        Ok(per_campaign.into_iter().collect())
    }

    /// Messages in flight for `owner` whose claim is older than `claimed_before`.
    pub async fn owned_in_flight(
        &self,
        owner: &str,
        claimed_before: i64,
    ) -> Result<Vec<(MessageId, CampaignId)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, campaign_id FROM messages WHERE status = 'in_flight' AND owner = $1 AND updated_at < $2",
        )
        .bind(owner)
        .bind(claimed_before)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("campaign_id")?)))
            .collect()
    }

    /// Messages in doubt since before `decided_before`, with what is needed to ask their
    /// provider about them (channel, address, and the body as rendered from the campaign's
    /// template and the contact).
    pub async fn in_doubt_candidates(
        &self,
        decided_before: i64,
        limit: i64,
    ) -> Result<Vec<InDoubtCandidate>, StoreError> {
        // Name and attributes bounded as every read of contacts is.
        let sql = format!(
            "SELECT m.id, m.campaign_id, m.address, m.in_doubt_at, m.updated_at, k.channel_id, ch.kind AS channel_kind, \
             k.body, {} FROM messages m JOIN campaigns k ON k.id = m.campaign_id \
             JOIN channels ch ON ch.id = k.channel_id LEFT JOIN contacts c ON c.id = m.contact_id \
             WHERE m.status = 'in_doubt' AND m.in_doubt_at <= $1 LIMIT $2",
            directory::bounded_contact_fields("c")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(decided_before)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(InDoubtCandidate {
                    id: r.try_get("id")?,
                    campaign_id: r.try_get("campaign_id")?,
                    channel_id: r.try_get("channel_id")?,
                    channel_kind: r.try_get("channel_kind")?,
                    address: r.try_get("address")?,
                    in_doubt_at: r.try_get::<Option<i64>, _>("in_doubt_at")?.unwrap_or(0),
                    marked_at: r.try_get("updated_at")?,
                    template: r.try_get("body")?,
                    name: r.try_get("name")?,
                    attributes: r
                        .try_get::<Option<String>, _>("attributes")?
                        .unwrap_or_else(|| "{}".into()),
                })
            })
            .collect()
    }

    /// Keeps a provider's proof that it has Herald's message `message_id` (a status naming
    /// it), for a message whose own outcome is not recorded yet.
    /// Only while the message is in flight on `channel_id`: afterwards its outcome or the
    /// in-doubt check has the last word.
    pub async fn keep_proof(
        &self,
        channel_id: ChannelId,
        message_id: MessageId,
        provider_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO pending_receipts (provider_id, status, error, received_at, message_id, channel_id) \
             SELECT $1, 'sent', NULL, $2, m.id, c.channel_id FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
             WHERE m.id = $3 AND m.status = 'in_flight' AND c.channel_id = $4",
        )
        .bind(clean(provider_id))
        .bind(now)
        .bind(message_id)
        .bind(channel_id)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The provider id a kept proof gives for a message, if any.
    pub async fn proof_for(&self, message_id: MessageId) -> Result<Option<String>, StoreError> {
        Ok(self.proofs_for(&[message_id]).await?.remove(&message_id))
    }

    /// [`Store::proof_for`] for many messages in one query: each one's first proof, by
    /// message id; messages without one are absent.
    pub async fn proofs_for(
        &self,
        message_ids: &[MessageId],
    ) -> Result<std::collections::HashMap<MessageId, String>, StoreError> {
        let mut proofs = std::collections::HashMap::new();
        if message_ids.is_empty() {
            return Ok(proofs);
        }
        let sql = format!(
            "SELECT message_id, provider_id FROM pending_receipts WHERE message_id IN {} ORDER BY id",
            self.dialect.json_ids("$1")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ids_json(message_ids.iter().copied()))
            .fetch_all(&self.read)
            .await?;
        for r in rows {
            let message_id: MessageId = r.try_get("message_id")?;
            let provider_id: String = r.try_get("provider_id")?;
            // Ordered by id: the first proof of each message wins.
            proofs.entry(message_id).or_insert(provider_id);
        }
        Ok(proofs)
    }

    /// Takes these in-doubt messages for asking their provider: their decision moves to
    /// `until`, so that no other instance asks about them or decides them meanwhile.
    /// Returns the ones taken: a message another instance took first (its decision no
    /// longer due by `due_by`) is left out. The asker then settles each one (sent, back to
    /// its due time for the policy, or deferred); one that dies meanwhile leaves them to
    /// be taken again at `until`.
    pub async fn take_in_doubt_for_lookup(
        &self,
        asker: &str,
        ids: &[MessageId],
        due_by: i64,
        until: i64,
    ) -> Result<Vec<MessageId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // `owner` and `lease_until` name the asker while it asks (an in-doubt message has
        // no sender any more), so that its death gives the messages back at once
        // (`release_lookups_of_dead`) rather than at `until`.
        let sql = format!(
            "UPDATE messages SET in_doubt_at = $1, owner = $4, lease_until = $1 \
             WHERE id IN {} AND status = 'in_doubt' AND in_doubt_at <= $3 RETURNING id",
            self.dialect.json_ids("$2")
        );
        Ok(sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(until)
            .bind(ids_json(ids.iter().copied()))
            .bind(due_by)
            .bind(asker)
            .fetch_all(&self.write)
            .await?)
    }

    /// Gives back the in-doubt messages taken for a lookup by an instance that is dead
    /// (listed in `dead_askers`, stopped, unknown, or silent since `stale_before`): their
    /// decision is due at `now`. Returns how many.
    pub async fn release_lookups_of_dead(
        &self,
        now: i64,
        stale_before: i64,
        dead_askers: &[String],
    ) -> Result<u64, StoreError> {
        let dead = serde_json::Value::from(dead_askers.to_vec()).to_string();
        let sql = format!(
            "UPDATE messages SET in_doubt_at = $1, lease_until = NULL \
             WHERE status = 'in_doubt' AND lease_until IS NOT NULL AND lease_until > $1 \
             AND (owner IN {} OR NOT EXISTS (SELECT 1 FROM instances i \
                  WHERE i.id = messages.owner AND i.stopped_at IS NULL AND i.heartbeat_at >= $2))",
            self.dialect.json_texts("$3")
        );
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(stale_before)
            .bind(&dead)
            .execute(&self.write)
            .await?
            .rows_affected())
    }

    /// Postpones the in-doubt decision for these messages until `until`.
    pub async fn defer_in_doubt(&self, ids: &[MessageId], until: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE messages SET in_doubt_at = $1, lease_until = NULL WHERE id IN {} AND status = 'in_doubt'",
            self.dialect.json_ids("$2")
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(until)
            .bind(ids_json(ids.iter().copied()))
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The provider has an in-doubt message after all: it is `sent`, with the provider's
    /// id (so its receipts apply), and nothing is resent. Conditional on it still being in
    /// doubt.
    /// Only for a message sent through `channel_id` (a provider speaks for its own
    /// channel), and never with a provider id another message already has (an ambiguous
    /// match at the provider resends rather than risk calling an unsent message sent).
    pub async fn resolve_in_doubt_sent(
        &self,
        channel_id: ChannelId,
        message_id: MessageId,
        provider_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let found = [ProviderHas {
            channel_id,
            message_id,
            provider_id: provider_id.to_string(),
        }];
        Ok(self.resolve_in_doubt_sent_many(&found, now).await? == [message_id])
    }

    /// [`Store::resolve_in_doubt_sent`] for a batch, in one transaction: what a reconciler
    /// pass found at its providers (or in proofs kept from status webhooks). A kill leaves
    /// hundreds of messages in doubt at once; one transaction each kept recovery waiting on
    /// commits. Each message is judged as alone: in doubt, of a campaign on the channel that
    /// spoke for it, and with a provider id no other message of that channel has, in the
    /// database or elsewhere in the batch. Returns the messages now `sent`.
    pub async fn resolve_in_doubt_sent_many(
        &self,
        found: &[ProviderHas],
        now: i64,
    ) -> Result<Vec<MessageId>, StoreError> {
        // A provider id given for two messages of one channel names neither for sure.
        let mut uses: HashMap<(ChannelId, &str), usize> = HashMap::new();
        for f in found {
            *uses
                .entry((f.channel_id, f.provider_id.as_str()))
                .or_default() += 1;
        }
        let records: Vec<serde_json::Value> = found
            .iter()
            .filter(|f| uses[&(f.channel_id, f.provider_id.as_str())] == 1)
            .map(|f| {
                serde_json::json!({
                    "channel_id": f.channel_id.get(),
                    "message_id": f.message_id.get(),
                    "provider_id": clean(&f.provider_id),
                })
            })
            .collect();
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let records = serde_json::Value::from(records).to_string();
        let recs = self.dialect.json_records(
            "$1",
            &[
                ("channel_id", "int"),
                ("message_id", "int"),
                ("provider_id", "text"),
            ],
        );
        let mut tx = self.begin().await?;
        let eligible = sqlx::query(AssertSqlSafe(format!(
            "SELECT m.campaign_id FROM {recs} JOIN messages m ON m.id = x.message_id \
             JOIN campaigns c ON c.id = m.campaign_id \
             WHERE m.status = 'in_doubt' AND c.channel_id = x.channel_id \
             AND NOT EXISTS (SELECT 1 FROM messages o JOIN campaigns oc ON oc.id = o.campaign_id \
             WHERE o.provider_id = x.provider_id AND o.id <> m.id AND oc.channel_id = x.channel_id)"
        )))
        .bind(&records)
        .fetch_all(&mut *tx)
        .await?;
        let campaigns: BTreeSet<CampaignId> = eligible
            .iter()
            .map(|r| r.try_get("campaign_id"))
            .collect::<Result<_, _>>()?;
        if campaigns.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        // Campaign rows first, in id order, as every writer of counters locks them.
        self.lock_campaigns(&mut tx, &campaigns).await?;
        // The same conditions again under the locks: only what is still in doubt moves.
        let moved = sqlx::query(AssertSqlSafe(format!(
            "UPDATE messages SET status = 'sent', provider_id = x.provider_id, sent_at = $2, \
             updated_at = $2, last_error = 'was in doubt; the provider has it' \
             FROM {recs} WHERE messages.id = x.message_id AND messages.status = 'in_doubt' \
             AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = messages.campaign_id \
             AND c.channel_id = x.channel_id) \
             AND NOT EXISTS (SELECT 1 FROM messages o JOIN campaigns oc ON oc.id = o.campaign_id \
             WHERE o.provider_id = x.provider_id AND o.id <> messages.id AND oc.channel_id = x.channel_id) \
             RETURNING messages.id, messages.campaign_id"
        )))
        .bind(&records)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut sent = Vec::with_capacity(moved.len());
        let mut deltas: BTreeMap<CampaignId, Counts> = BTreeMap::new();
        let mut tallies: BTreeMap<CampaignId, (i64, i64)> = BTreeMap::new();
        for r in &moved {
            let campaign: CampaignId = r.try_get("campaign_id")?;
            sent.push(r.try_get::<MessageId, _>("id")?);
            deltas
                .entry(campaign)
                .or_default()
                .moved(MessageStatus::InDoubt, MessageStatus::Sent);
            tallies.entry(campaign).or_default().0 += 1;
        }
        if sent.is_empty() {
            tx.rollback().await?;
            return Ok(sent);
        }
        sent.sort_unstable();
        self.count_throughput(&mut tx, now, &tallies).await?;
        // Receipts that came before their message was known to have this provider id.
        let pending = sqlx::query(AssertSqlSafe(format!(
            "SELECT p.id, p.channel_id, p.provider_id, p.status, p.error FROM pending_receipts p \
             JOIN {recs} ON p.channel_id = x.channel_id AND p.provider_id = x.provider_id \
             ORDER BY p.id"
        )))
        .bind(records.clone());
        self.apply_pending_receipts(&mut tx, pending, now, &mut deltas)
            .await?;
        for (c, d) in &deltas {
            self.apply_counts(&mut tx, *c, d, 0, Some(now)).await?;
        }
        for campaign in tallies.keys() {
            self.complete_if_drained(
                &mut tx,
                *campaign,
                now,
                "reconciler",
                "last in-doubt message found at the provider",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(sent)
    }

    /// Applies the in-doubt policy to messages in doubt since before `older_than`: resend
    /// (back to `queued`) or fail. Messages of a cancelled campaign are cancelled.
    pub async fn resolve_in_doubt(
        &self,
        resend: bool,
        now: i64,
        older_than: i64,
    ) -> Result<InDoubtReport, StoreError> {
        self.resolve_in_doubt_limited(resend, now, older_than, i64::MAX)
            .await
    }

    /// As `resolve_in_doubt`, but a message that has used `max_attempts` attempts is failed
    /// rather than resent, so a message that always ends in doubt cannot loop.
    pub async fn resolve_in_doubt_limited(
        &self,
        resend: bool,
        now: i64,
        older_than: i64,
        max_attempts: i64,
    ) -> Result<InDoubtReport, StoreError> {
        let mut report = InDoubtReport::default();
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT id, campaign_id, attempts FROM messages WHERE status = 'in_doubt' AND in_doubt_at <= $1 LIMIT 10000",
        )
        .bind(older_than)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(report);
        }
        // Keyed by campaign and whether the message has used all its attempts.
        let mut by_campaign: BTreeMap<(CampaignId, bool), Vec<MessageId>> = BTreeMap::new();
        for r in &rows {
            let attempts: i64 = r.try_get("attempts")?;
            by_campaign
                .entry((r.try_get("campaign_id")?, attempts >= max_attempts))
                .or_default()
                .push(r.try_get("id")?);
        }
        let statuses = self
            .lock_campaigns(&mut tx, &by_campaign.keys().map(|k| k.0).collect())
            .await?;
        for ((campaign, exhausted), ids) in &by_campaign {
            let (to, error) = if statuses.get(campaign) == Some(&CampaignStatus::Cancelled) {
                (
                    MessageStatus::Cancelled,
                    "campaign cancelled while the message was in doubt",
                )
            } else if resend && *exhausted {
                (
                    MessageStatus::Failed,
                    "in doubt after its last allowed attempt (retry_max_attempts); not resent",
                )
            } else if resend {
                (
                    MessageStatus::Queued,
                    "in doubt: owner died mid-send; resent by policy",
                )
            } else {
                (
                    MessageStatus::Failed,
                    "in doubt: owner died mid-send; failed by policy (in_doubt_policy = fail)",
                )
            };
            let sql = format!(
                "UPDATE messages SET status = $1, last_error = $2, next_attempt_at = $3, owner = NULL, updated_at = $3, \
                 failed_at = CASE WHEN $1 = 'failed' THEN $3 ELSE failed_at END \
                 WHERE id IN {} AND status = 'in_doubt' RETURNING id",
                self.dialect.json_ids("$4")
            );
            let moved: Vec<MessageId> = sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(to.as_str())
                .bind(error)
                .bind(now)
                .bind(ids_json(ids.iter().copied()))
                .fetch_all(&mut *tx)
                .await?;
            let n = moved.len() as i64;
            if to == MessageStatus::Failed {
                let events: Vec<_> = moved
                    .iter()
                    .map(|id| (*id, crate::events::EventType::MessageFailed))
                    .collect();
                self.emit_message_events(&mut tx, now, &events).await?;
            }
            let mut delta = Counts::default();
            delta.add(MessageStatus::InDoubt, -n);
            delta.add(to, n);
            if to == MessageStatus::Failed {
                self.count_throughput(&mut tx, now, &BTreeMap::from([(*campaign, (0, n))]))
                    .await?;
            }
            self.apply_counts(&mut tx, *campaign, &delta, 0, Some(now))
                .await?;
            match to {
                MessageStatus::Queued => report.resent += n,
                MessageStatus::Failed => report.failed += n,
                _ => report.cancelled += n,
            }
            if self
                .complete_if_drained(
                    &mut tx,
                    *campaign,
                    now,
                    "reconciler",
                    "last in-doubt message resolved",
                )
                .await?
            {
                report.completed.push(*campaign);
            }
        }
        tx.commit().await?;
        Ok(report)
    }
}
