//! Recording send outcomes: many in one transaction, each a conditional write on the
//! message still being in flight for its owner, with the counters, the receipts kept for the
//! new provider ids, the completion of drained campaigns and the auto-pause judgement.

use crate::domain::{CampaignStatus, Counts, MessageStatus};
use crate::ids::{CampaignId, MessageId};
use crate::store::campaigns::lifecycle::CampaignLock;
use crate::store::campaigns::{autopause, outcomes};
use crate::store::helpers::{clean, ids_json, status_of};
use crate::store::{Outcome, OutcomeKind, RecordReport, Store, StoreError, Tx};
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One outcome as the group commit's statement reads it (`Dialect::json_records`): typed,
/// so a batch serialises without building a JSON map per message.
#[derive(serde::Serialize)]
struct OutcomeRecord<'a> {
    #[serde(serialize_with = "row_number")]
    id: MessageId,
    status: &'a str,
    provider_id: Option<String>,
    error: Option<String>,
    next_attempt_at: Option<i64>,
    refund: i64,
    sent_at: Option<i64>,
    release: i64,
    held_until: Option<i64>,
    attempt: Option<i64>,
    doubt: i64,
}

/// A typed id as the row number the statement joins on (its `Serialize` writes `cmp_2`).
fn row_number<S: serde::Serializer, I: Copy + Into<i64>>(id: &I, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64((*id).into())
}

/// A provider id just recorded, for the kept receipts' lookup.
#[derive(serde::Serialize)]
struct RecordedId {
    #[serde(serialize_with = "row_number")]
    campaign_id: CampaignId,
    provider_id: String,
}

impl Store {
    /// Records many send outcomes in one transaction: each is a conditional write (the
    /// message must still be in flight for this owner), counters move with them, pending
    /// receipts for the new provider ids are applied, and any campaign whose last pending
    /// message this was completes in the same transaction.
    pub async fn record_outcomes(
        &self,
        owner: &str,
        now: i64,
        outcomes: &[Outcome],
    ) -> Result<RecordReport, StoreError> {
        let rows_back = self.dialect.returns_rows_cheaply();
        match self
            .record_outcomes_once(owner, now, outcomes, rows_back)
            .await?
        {
            Some(report) => Ok(report),
            // Some outcome was stale: that attempt rolled back, and this one reads back
            // which applied.
            None => self
                .record_outcomes_once(owner, now, outcomes, true)
                .await?
                .ok_or_else(|| {
                    StoreError::Invalid(
                        "a group commit could not tell which outcomes applied".into(),
                    )
                }),
        }
    }

    /// One attempt at [`Store::record_outcomes`]. With `rows_back` false (SQLite, see
    /// [`Store::apply_outcome_records`]) it returns None, having written nothing, when an
    /// outcome turns out stale.
    async fn record_outcomes_once(
        &self,
        owner: &str,
        now: i64,
        outcomes: &[Outcome],
        rows_back: bool,
    ) -> Result<Option<RecordReport>, StoreError> {
        let mut report = RecordReport::default();
        if outcomes.is_empty() {
            return Ok(Some(report));
        }
        let campaign_ids: BTreeSet<CampaignId> = outcomes.iter().map(|o| o.campaign_id).collect();
        let mut tx = self.begin().await?;
        // Shared with claims and other commits, exclusive of a pause or cancel: the statuses
        // read here hold until this commit ends. The counters lock comes last, below.
        let statuses = self
            .lock_campaigns_as(&mut tx, &campaign_ids, CampaignLock::Share)
            .await?;
        // An outcome Herald does not know (timeout) for a message the provider has already
        // named in a status is a send after all.
        let unknown: Vec<MessageId> = outcomes
            .iter()
            .filter(|o| matches!(o.kind, OutcomeKind::Unknown { .. }))
            .map(|o| o.message_id)
            .collect();
        let mut proofs: HashMap<MessageId, String> = HashMap::new();
        if !unknown.is_empty() {
            let sql = format!(
                "SELECT message_id, provider_id FROM pending_receipts WHERE message_id IN {}",
                self.dialect.json_ids("$1")
            );
            for r in sqlx::query(AssertSqlSafe(sql))
                .bind(ids_json(unknown))
                .fetch_all(&mut *tx)
                .await?
            {
                proofs.insert(r.try_get("message_id")?, r.try_get("provider_id")?);
            }
        }
        let proven: Vec<Outcome>;
        let outcomes: &[Outcome] = if proofs.is_empty() {
            outcomes
        } else {
            proven = outcomes
                .iter()
                .map(|o| match proofs.get(&o.message_id) {
                    Some(pid) if matches!(o.kind, OutcomeKind::Unknown { .. }) => Outcome {
                        kind: OutcomeKind::Sent {
                            provider_id: pid.clone(),
                        },
                        ..o.clone()
                    },
                    _ => o.clone(),
                })
                .collect();
            &proven
        };
        let mut records = Vec::with_capacity(outcomes.len());
        // What each outcome writes if it applies: the tally when the rows are not returned.
        let mut planned: Vec<(MessageId, CampaignId, MessageStatus)> =
            Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let cancelled = statuses.get(&o.campaign_id) == Some(&CampaignStatus::Cancelled);
            let held_until = match &o.kind {
                OutcomeKind::Held { until, .. } if !cancelled => Some(*until),
                _ => None,
            };
            let (status, provider_id, error, next_at, refund) = match &o.kind {
                OutcomeKind::Sent { provider_id } => (
                    MessageStatus::Sent,
                    Some(provider_id.as_str()),
                    None,
                    None,
                    0,
                ),
                OutcomeKind::Failed { error } => {
                    (MessageStatus::Failed, None, Some(error.clone()), None, 0)
                }
                OutcomeKind::Retry { error, .. } if cancelled => (
                    MessageStatus::Cancelled,
                    None,
                    Some(format!("campaign cancelled; last attempt: {error}")),
                    None,
                    0,
                ),
                OutcomeKind::Retry {
                    error,
                    next_attempt_at,
                } => (
                    MessageStatus::RetryWait,
                    None,
                    Some(error.clone()),
                    Some(*next_attempt_at),
                    0,
                ),
                OutcomeKind::Released if cancelled => (
                    MessageStatus::Cancelled,
                    None,
                    Some("campaign cancelled".to_string()),
                    None,
                    1,
                ),
                // Handed back unsent: the attempt did not happen.
                OutcomeKind::Released => (MessageStatus::Queued, None, None, Some(now), 1),
                OutcomeKind::Held { .. } if cancelled => (
                    MessageStatus::Cancelled,
                    None,
                    Some("campaign cancelled".to_string()),
                    None,
                    1,
                ),
                // Outside its send window: no attempt spent, due again when it opens.
                OutcomeKind::Held { next_look, .. } => {
                    (MessageStatus::Queued, None, None, Some(*next_look), 1)
                }
                OutcomeKind::Skipped { reason } => {
                    (MessageStatus::Skipped, None, Some(reason.clone()), None, 0)
                }
                OutcomeKind::Unknown { error } => (
                    MessageStatus::InDoubt,
                    None,
                    Some(format!("in doubt: {error}")),
                    None,
                    0,
                ),
            };
            planned.push((o.message_id, o.campaign_id, status));
            records.push(OutcomeRecord {
                id: o.message_id,
                status: status.as_str(),
                provider_id: provider_id.map(clean),
                error: error.as_deref().map(clean),
                next_attempt_at: next_at,
                refund,
                sent_at: if status == MessageStatus::Sent {
                    Some(now)
                } else {
                    None
                },
                release: i64::from(matches!(
                    o.kind,
                    OutcomeKind::Released | OutcomeKind::Held { .. }
                )),
                held_until,
                attempt: o.attempt,
                doubt: i64::from(status == MessageStatus::InDoubt),
            });
        }
        let recs = self.dialect.json_records(
            "$1",
            &[
                ("id", "int"),
                ("status", "text"),
                ("provider_id", "text"),
                ("error", "text"),
                ("next_attempt_at", "int"),
                ("refund", "int"),
                ("sent_at", "int"),
                ("release", "int"),
                ("held_until", "int"),
                ("doubt", "int"),
                ("attempt", "int"),
            ],
        );
        let sql = format!(
            "UPDATE messages SET status = x.status, provider_id = COALESCE(x.provider_id, messages.provider_id), \
             last_error = CASE WHEN x.status = 'sent' THEN NULL ELSE COALESCE(x.error, messages.last_error) END, next_attempt_at = COALESCE(x.next_attempt_at, messages.next_attempt_at), \
             attempts = messages.attempts - x.refund, sent_at = COALESCE(x.sent_at, messages.sent_at), \
             failed_at = CASE WHEN x.status = 'failed' THEN $2 ELSE messages.failed_at END, \
             owner = CASE WHEN x.release = 1 THEN NULL ELSE messages.owner END, lease_until = NULL, updated_at = $2, \
             held_until = x.held_until, \
             was_in_doubt = CASE WHEN x.doubt = 1 THEN 1 ELSE messages.was_in_doubt END, \
             in_doubt_at = CASE WHEN x.doubt = 1 THEN $2 ELSE messages.in_doubt_at END \
             FROM {recs} WHERE messages.id = x.id AND messages.status = 'in_flight' AND messages.owner = $3 \
             AND (x.attempt IS NULL OR messages.attempts = x.attempt)"
        );
        // Strings and numbers only: encoding cannot fail, but is not unwrapped.
        let records = serde_json::to_string(&records)
            .map_err(|e| StoreError::Invalid(format!("cannot encode outcomes: {e}")))?;
        let Some(applied) = self
            .apply_outcome_records(&mut tx, &sql, &records, (now, owner), planned, rows_back)
            .await?
        else {
            // Dropped unfinished: rolled back, and its events never logged.
            return Ok(None);
        };
        let mut deltas: BTreeMap<CampaignId, Counts> = BTreeMap::new();
        let mut doubts: BTreeMap<CampaignId, i64> = BTreeMap::new();
        let mut applied_ids = BTreeSet::new();
        let mut recorded_per_campaign = BTreeMap::new();
        let mut failure_rates = BTreeMap::new();
        let failed_errors: HashMap<MessageId, &str> = outcomes
            .iter()
            .filter_map(|o| match &o.kind {
                OutcomeKind::Failed { error } => Some((o.message_id, error.as_str())),
                _ => None,
            })
            .collect();
        let mut message_events = Vec::new();
        // A claim handed back (a stop, a send window's hold) is not progress: a campaign
        // whose every outcome here went back to `queued` keeps its last progress time.
        let mut requeued: BTreeSet<CampaignId> = BTreeSet::new();
        let mut moved_on: BTreeSet<CampaignId> = BTreeSet::new();
        for (id, campaign, status) in applied {
            applied_ids.insert(id);
            if status == MessageStatus::Failed {
                message_events.push((id, crate::events::EventType::MessageFailed));
            }
            outcomes::tally(&mut recorded_per_campaign, campaign, status);
            autopause::tally(
                &mut failure_rates,
                campaign,
                status,
                failed_errors.get(&id).copied(),
            );
            deltas
                .entry(campaign)
                .or_default()
                .moved(MessageStatus::InFlight, status);
            if status == MessageStatus::Queued {
                requeued.insert(campaign);
            } else {
                moved_on.insert(campaign);
            }
            if status == MessageStatus::InDoubt {
                *doubts.entry(campaign).or_default() += 1;
            }
            report.applied += 1;
        }
        report.stale = outcomes.len() - report.applied;
        // Receipts that arrived before their provider id was recorded apply now: those kept
        // for the channel of the message that recorded the id, no other.
        let recorded: Vec<RecordedId> = outcomes
            .iter()
            .filter(|o| applied_ids.contains(&o.message_id))
            .filter_map(|o| match &o.kind {
                OutcomeKind::Sent { provider_id } => Some(RecordedId {
                    campaign_id: o.campaign_id,
                    provider_id: clean(provider_id),
                }),
                _ => None,
            })
            .collect();
        if !recorded.is_empty() {
            let recs = self
                .dialect
                .json_records("$1", &[("campaign_id", "int"), ("provider_id", "text")]);
            let sql = format!(
                "SELECT DISTINCT pr.id, pr.channel_id, pr.provider_id, pr.status, pr.error FROM {recs} \
                 JOIN campaigns c ON c.id = x.campaign_id \
                 JOIN pending_receipts pr ON pr.channel_id = c.channel_id AND pr.provider_id = x.provider_id \
                 ORDER BY pr.id"
            );
            let recorded = serde_json::to_string(&recorded)
                .map_err(|e| StoreError::Invalid(format!("cannot encode provider ids: {e}")))?;
            let query = sqlx::query(AssertSqlSafe(sql)).bind(recorded);
            self.apply_pending_receipts(&mut tx, query, now, &mut deltas)
                .await?;
        }
        self.emit_message_events(&mut tx, now, &message_events)
            .await?;
        // From here the campaign rows (and their minute of throughput) are serialised with
        // other commits, until this one commits: the message writes above were not. The
        // counter update takes each row lock, in id order, and returns the status again:
        // another commit may have auto-paused a campaign meanwhile (a pause or cancel by a
        // person cannot have: it waits for this transaction). A campaign whose outcomes were
        // all stale has no counters to move and is only locked.
        let mut statuses = HashMap::with_capacity(campaign_ids.len());
        let touched: BTreeSet<CampaignId> =
            campaign_ids.iter().chain(deltas.keys()).copied().collect();
        for campaign in touched {
            let status = match deltas.get(&campaign) {
                Some(delta) => {
                    let doubt = doubts.get(&campaign).copied().unwrap_or(0);
                    let progress_at =
                        if requeued.contains(&campaign) && !moved_on.contains(&campaign) {
                            None
                        } else {
                            Some(now)
                        };
                    let status = self
                        .apply_counts_returning_status(&mut tx, campaign, delta, doubt, progress_at)
                        .await?;
                    if status != CampaignStatus::Sending {
                        // Sends finishing after a cancel, or kept receipts of an ended campaign.
                        self.settle_outcome(&mut tx, campaign).await?;
                    }
                    status
                }
                None => {
                    // Read for `not_sending`; a campaign gone meanwhile is skipped.
                    match self
                        .lock_campaigns_as(
                            &mut tx,
                            &BTreeSet::from([campaign]),
                            CampaignLock::Counters,
                        )
                        .await?
                        .remove(&campaign)
                    {
                        Some(status) => status,
                        None => continue,
                    }
                }
            };
            statuses.insert(campaign, status);
        }
        self.count_throughput(&mut tx, now, &recorded_per_campaign)
            .await?;
        // The failure rate is judged before completion: a batch that crosses the threshold
        // pauses its campaign even when it also holds the last pending messages, so whether
        // a campaign failing this much is paused (and alerted on) does not depend on how its
        // outcomes were grouped into commits. A paused campaign completes on resume.
        report.auto_paused = self
            .judge_failure_rates(&mut tx, &failure_rates, now, &format!("instance {owner}"))
            .await?;
        for campaign in deltas.keys() {
            if self
                .complete_if_drained(
                    &mut tx,
                    *campaign,
                    now,
                    &format!("instance {owner}"),
                    "last pending message recorded",
                )
                .await?
            {
                report.completed.push(*campaign);
            }
        }
        report.not_sending = statuses
            .iter()
            .filter(|(_, status)| **status != CampaignStatus::Sending)
            .map(|(id, _)| *id)
            .chain(report.auto_paused.iter().map(|p| p.campaign_id))
            .chain(report.completed.iter().copied())
            .collect();
        tx.commit().await?;
        Ok(Some(report))
    }
}

impl Store {
    /// Runs the group commit's message update (`sql`, without a `RETURNING`) and says which
    /// outcomes applied, with their campaign and new status.
    ///
    /// With `rows_back`, the update returns the rows it changed: PostgreSQL sends them in
    /// its one answer. On SQLite every returned row crosses sqlx's channel from the database
    /// thread, which cost about 15 µs a row of the single writer's time under load
    /// (BENCHMARKS.md, "Where a SQLite writer's time goes"), so there the update returns
    /// none: when it changed exactly one row per outcome, every outcome applied as planned;
    /// otherwise (an outcome stale, rare) this returns None and the caller drops the
    /// transaction and asks again with rows back.
    async fn apply_outcome_records(
        &self,
        tx: &mut Tx,
        update: &str,
        records: &str,
        (now, owner): (i64, &str),
        planned: Vec<(MessageId, CampaignId, MessageStatus)>,
        rows_back: bool,
    ) -> Result<Option<Vec<(MessageId, CampaignId, MessageStatus)>>, StoreError> {
        let distinct: BTreeSet<MessageId> = planned.iter().map(|p| p.0).collect();
        if rows_back || distinct.len() != planned.len() {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "{update} RETURNING messages.id, messages.campaign_id, messages.status"
            )))
            .bind(records)
            .bind(now)
            .bind(owner)
            .fetch_all(&mut **tx)
            .await?;
            return rows
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get("id")?,
                        r.try_get("campaign_id")?,
                        status_of(r, "status")?,
                    ))
                })
                .collect::<Result<_, StoreError>>()
                .map(Some);
        }
        let updated = sqlx::query(AssertSqlSafe(update))
            .bind(records)
            .bind(now)
            .bind(owner)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        // Each outcome names a distinct message and the update changes a message at most
        // once, so one row per outcome means none was stale.
        Ok((usize::try_from(updated).ok() == Some(planned.len())).then_some(planned))
    }
}
