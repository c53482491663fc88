//! A campaign's lifecycle: created, started (its messages made in the same transaction),
//! paused, resumed, cancelled, completed; the campaign row locks and counter updates every
//! write to its messages goes through, and the audit trail (`campaign_events`) of each
//! change.

use crate::domain::{CampaignAction, CampaignStatus, Counts, MessageStatus};
use crate::ids::{CampaignId, ListId, MessageId, OrgId};
use crate::store::directory::{Bind, query_with};
use crate::store::events::outbox;
use crate::store::helpers::{campaign_status_of, counts_from_rows, ids_json, status_of};
use crate::store::{Campaign, NewCampaign, StartOutcome, Store, StoreError, Tx};
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeSet, HashMap};

/// The pending messages of campaign `$1`, as one query per partial index (a single
/// `status IN (…4 statuses…)` matches none of them and scans the whole table).
const PENDING_ROWS: &str = "SELECT status FROM messages WHERE campaign_id = $1 AND status IN ('queued','retry_wait') \
     UNION ALL SELECT status FROM messages WHERE campaign_id = $1 AND status = 'in_flight' \
     UNION ALL SELECT status FROM messages WHERE campaign_id = $1 AND status = 'in_doubt'";

/// True for a campaign `c` with no pending message, index by index: scalar subqueries, one
/// probe each, which no planner turns into a join (as `NOT EXISTS`, PostgreSQL with
/// statistics of one campaign that is the whole table made one an anti join over a scan
/// of every message; scripts/explain-plans).
const NOTHING_PENDING: &str = "(SELECT m.next_attempt_at FROM messages m WHERE m.campaign_id = c.id AND m.status IN ('queued','retry_wait') \
       ORDER BY m.next_attempt_at LIMIT 1) IS NULL \
     AND (SELECT 1 FROM messages m WHERE m.campaign_id = c.id AND m.status = 'in_flight' ORDER BY m.owner LIMIT 1) IS NULL \
     AND (SELECT 1 FROM messages m WHERE m.campaign_id = c.id AND m.status = 'in_doubt' LIMIT 1) IS NULL";

impl Store {
    pub async fn create_campaign(
        &self,
        new: &NewCampaign,
        actor: &str,
    ) -> Result<CampaignId, StoreError> {
        let now = crate::clock::now_ms();
        let status = if new.scheduled_at.is_some() {
            CampaignStatus::Scheduled
        } else {
            CampaignStatus::Draft
        };
        let mut tx = self.begin().await?;
        let id: CampaignId = sqlx::query_scalar(
            "INSERT INTO campaigns (org_id, name, channel_id, list_id, body, status, scheduled_at, created_at, whatsapp_template, send_window, email) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(new.org_id)
        .bind(&new.name)
        .bind(new.channel_id)
        .bind(new.list_id)
        .bind(&new.body)
        .bind(status.as_str())
        .bind(new.scheduled_at)
        .bind(now)
        .bind(template_json(new.whatsapp_template.as_ref()))
        .bind(new.send_window.as_deref())
        .bind(email_json(new.email.as_ref()))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            // The list or channel was deleted between the caller's check and this insert.
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::Invalid(
                "the campaign's list or channel no longer exists: pick another".into(),
            ),
            _ => StoreError::Database(e),
        })?;
        let reason = match new.scheduled_at {
            Some(at) => format!("created, scheduled for {}", crate::clock::rfc3339(at)),
            None => "created".to_string(),
        };
        insert_event(&mut tx, id, now, actor, None, status, &reason).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Starts a draft or scheduled campaign: in one transaction, moves it to `sending` and
    /// creates one message per distinct address of its list (docs/DESIGN.md invariant 2).
    /// `due_at` set means "only if scheduled and due by then" (the scheduler's call).
    pub async fn start_campaign(
        &self,
        id: CampaignId,
        now: i64,
        actor: &str,
        due_at: Option<i64>,
    ) -> Result<StartOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let from = self.lock_campaign(&mut tx, id).await?;
        let row = sqlx::query(
            "SELECT c.list_id, c.org_id, c.scheduled_at, c.body, ch.kind, ch.name AS channel_name FROM campaigns c JOIN channels ch ON ch.id = c.channel_id WHERE c.id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let list_id: ListId = row.try_get("list_id")?;
        let org_id: OrgId = row.try_get("org_id")?;
        let scheduled_at: Option<i64> = row.try_get("scheduled_at")?;
        let kind: String = row.try_get("kind")?;
        let channel_name: String = row.try_get("channel_name")?;
        let body: String = row.try_get("body")?;
        if let Some(due) = due_at {
            if from != CampaignStatus::Scheduled || scheduled_at.is_none_or(|at| at > due) {
                tx.rollback().await?;
                return Ok(StartOutcome::NotDue);
            }
        } else if !CampaignAction::Start.allowed_from().contains(&from) {
            tx.rollback().await?;
            return Err(illegal(id, from, CampaignAction::Start));
        }
        // A kind this herald does not know skips no address here; it cannot be built to
        // send either, which its messages then say.
        let required = kind
            .parse::<crate::channel_kind::ChannelKind>()
            .ok()
            .and_then(|k| k.address_kind());
        let mismatch_reason = match required {
            Some(crate::address::AddressKind::Phone) => {
                format!("not a phone number: channel `{channel_name}` sends to phones")
            }
            Some(crate::address::AddressKind::Email) => {
                format!("not an email address: channel `{channel_name}` sends email")
            }
            None => String::new(),
        };
        let required_str = required.map(|k| k.as_str()).unwrap_or("any");
        // One row per distinct address: contacts are unique per organisation and address,
        // list members per list and contact, suppressions per organisation and address, so
        // the audience holds no address twice. The unique index on (campaign_id, address)
        // is the backstop, and a duplicate would fail the start instead of being skipped
        // unseen; `ON CONFLICT DO NOTHING` here cost 14 to 19 % of the insert on PostgreSQL
        // (BENCHMARKS.md, "A start without ON CONFLICT"). Unsubscribed, suppressed and
        // unusable addresses are frozen as `skipped` with the reason.
        // The audience: the list's members, or the contacts a segment's filter matches now
        // (docs/SEGMENTS.md), read once here and frozen as messages.
        let segment = self.segment_of(org_id, list_id, now).await?;
        let mut binds = vec![
            Bind::Int(id.get()),
            Bind::Text(required_str.to_string()),
            Bind::Text(mismatch_reason.clone()),
            Bind::Int(now),
            Bind::Int(org_id.get()),
        ];
        let source = match &segment {
            Some(segment) => format!(
                "FROM contacts c LEFT JOIN suppressions s ON s.org_id = $5 AND s.address = c.address \
                 WHERE c.org_id = $5 AND ({})",
                segment.condition(self.dialect, &mut binds)
            ),
            None => format!(
                "FROM list_members lm JOIN contacts c ON c.id = lm.contact_id \
                 LEFT JOIN suppressions s ON s.org_id = $5 AND s.address = c.address \
                 WHERE lm.list_id = {} AND c.org_id = $5",
                Bind::push(&mut binds, Bind::Int(list_id.get()))
            ),
        };
        let sql = format!(
            "INSERT INTO messages (campaign_id, contact_id, address, status, last_error, next_attempt_at, updated_at) \
             SELECT $1, c.id, c.address, \
               CASE WHEN c.unsubscribed <> 0 OR s.address IS NOT NULL \
                      OR ($2 = 'phone' AND c.address NOT LIKE '+%') OR ($2 = 'email' AND c.address NOT LIKE '%@%') \
                    THEN 'skipped' ELSE 'queued' END, \
               CASE WHEN c.unsubscribed <> 0 THEN 'unsubscribed' \
                    WHEN s.address IS NOT NULL THEN 'suppressed: ' || s.reason \
                    WHEN ($2 = 'phone' AND c.address NOT LIKE '+%') OR ($2 = 'email' AND c.address NOT LIKE '%@%') THEN $3 \
                    ELSE NULL END, \
               0, $4 \
             {source}"
        );
        let inserted = query_with(sql, binds)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // The counts, and the range of ids the insert gave (migration 0026): the export and
        // the message list walk it, in the same read of the rows just written.
        let rows = sqlx::query(
            "SELECT status, count(*) AS n, min(id) AS first_id, max(id) AS last_id \
             FROM messages WHERE campaign_id = $1 GROUP BY status",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let counts = counts_from_rows(&rows)?;
        let mut first_message_id: Option<MessageId> = None;
        let mut last_message_id: Option<MessageId> = None;
        for r in &rows {
            let (first, last): (MessageId, MessageId) =
                (r.try_get("first_id")?, r.try_get("last_id")?);
            first_message_id = Some(first_message_id.map_or(first, |f| f.min(first)));
            last_message_id = Some(last_message_id.map_or(last, |l| l.max(last)));
        }
        let sql = format!(
            "UPDATE campaigns SET status = 'sending', started_at = $12, last_progress_at = $12, total = $13, \
             first_message_id = $16, last_message_id = $17, {} \
             WHERE id = $14 AND status = $15",
            MessageStatus::ALL
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{} = ${}", s.as_str(), i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for s in MessageStatus::ALL {
            q = q.bind(counts.get(s));
        }
        let moved = q
            .bind(now)
            .bind(counts.total())
            .bind(id)
            .bind(from.as_str())
            .bind(first_message_id)
            .bind(last_message_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(StartOutcome::NotDue);
        }
        self.freeze_links(&mut tx, id, &body).await?;
        let mut reason = format!(
            "started: {} recipients ({} queued, {} skipped)",
            inserted,
            counts.get(MessageStatus::Queued),
            counts.get(MessageStatus::Skipped)
        );
        if let Some(segment) = &segment {
            reason.push_str(&format!(
                ", the contacts matching {}",
                segment.filter_text()
            ));
        }
        insert_event(
            &mut tx,
            id,
            now,
            actor,
            Some(from),
            CampaignStatus::Sending,
            &reason,
        )
        .await?;
        let completed = self
            .complete_if_drained(
                &mut tx,
                id,
                now,
                actor,
                "nothing to send: every recipient was skipped or the list is empty",
            )
            .await?;
        tx.commit().await?;
        Ok(StartOutcome::Started {
            messages: inserted as i64,
            queued: counts.get(MessageStatus::Queued),
            skipped: counts.get(MessageStatus::Skipped),
            completed,
        })
    }

    /// Scheduled campaigns due by `now`.
    pub async fn due_scheduled(&self, now: i64) -> Result<Vec<CampaignId>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM campaigns WHERE status = 'scheduled' AND scheduled_at <= $1 ORDER BY scheduled_at, id",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?)
    }

    /// Pause, resume, cancel or mark complete: a conditional write on the campaign's status,
    /// recorded in the audit trail. Start has its own method.
    pub async fn transition(
        &self,
        id: CampaignId,
        action: CampaignAction,
        now: i64,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Campaign, StoreError> {
        if action == CampaignAction::Start {
            self.start_campaign(id, now, actor, None).await?;
            return self.campaign(id).await;
        }
        let mut tx = self.begin().await?;
        let from = self.lock_campaign(&mut tx, id).await?;
        if !action.allowed_from().contains(&from) {
            tx.rollback().await?;
            return Err(illegal(id, from, action));
        }
        let to = match action {
            CampaignAction::Pause => CampaignStatus::Paused,
            CampaignAction::Resume => CampaignStatus::Sending,
            CampaignAction::Cancel => CampaignStatus::Cancelled,
            CampaignAction::Complete | CampaignAction::Start => CampaignStatus::Completed,
        };
        if action == CampaignAction::Complete {
            // The guard reads the messages themselves, not the counters.
            let pending = sqlx::query(AssertSqlSafe(format!(
                "SELECT status, count(*) AS n FROM ({PENDING_ROWS}) p GROUP BY status"
            )))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            if !pending.is_empty() {
                let mut parts = Vec::new();
                let mut total = 0i64;
                for r in &pending {
                    let n: i64 = r.try_get("n")?;
                    total += n;
                    parts.push(format!("{} {}", n, status_of(r, "status")?));
                }
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "campaign {} still has {total} pending messages ({}): wait for them to finish, pause it, or cancel it instead",
                    id,
                    parts.join(", ")
                )));
            }
        }
        let ended = if to.is_terminal() { Some(now) } else { None };
        sqlx::query(
            // Any transition through here (a person's, or the engine's for a reason other
            // than an outage) ends an outage pause: the probe never resumes it after that.
            "UPDATE campaigns SET status = $1, completed_at = COALESCE($2, completed_at), outage_channel_id = NULL WHERE id = $3 AND status = $4",
        )
        .bind(to.as_str())
        .bind(ended)
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        let default_reason = match action {
            CampaignAction::Pause => "paused by operator".to_string(),
            CampaignAction::Resume => "resumed by operator".to_string(),
            CampaignAction::Complete => {
                "marked complete by operator: nothing was pending".to_string()
            }
            CampaignAction::Cancel | CampaignAction::Start => "cancelled by operator".to_string(),
        };
        let mut reason = reason.map(str::to_string).unwrap_or(default_reason);
        if action == CampaignAction::Cancel {
            // Unsent work is cancelled now; sends already in flight finish and are recorded.
            let rows = sqlx::query(
                "SELECT status, count(*) AS n FROM messages WHERE campaign_id = $1 AND status IN ('queued','retry_wait') GROUP BY status",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let mut delta = Counts::default();
            for r in &rows {
                let n: i64 = r.try_get("n")?;
                let s = status_of(r, "status")?;
                delta.add(s, -n);
                delta.add(MessageStatus::Cancelled, n);
            }
            if !delta.is_zero() {
                sqlx::query(
                    "UPDATE messages SET status = 'cancelled', last_error = 'campaign cancelled', owner = NULL, lease_until = NULL, updated_at = $1 \
                     WHERE campaign_id = $2 AND status IN ('queued','retry_wait')",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                reason = format!(
                    "{reason}; {} unsent messages cancelled",
                    delta.get(MessageStatus::Cancelled)
                );
                self.apply_counts(&mut tx, id, &delta, 0, Some(now)).await?;
            }
        }
        if to.is_terminal() {
            self.settle_outcome(&mut tx, id).await?;
        }
        insert_event(&mut tx, id, now, actor, Some(from), to, &reason).await?;
        if to == CampaignStatus::Sending {
            self.restart_failure_window(&mut tx, id).await?;
        }
        if action == CampaignAction::Resume {
            self.complete_if_drained(&mut tx, id, now, actor, "resumed with nothing pending")
                .await?;
        }
        tx.commit().await?;
        self.campaign(id).await
    }

    /// The backstop of invariant 5: any `sending` campaign whose messages (not counters)
    /// show nothing pending is completed.
    pub async fn finalize_drained(&self, now: i64) -> Result<Vec<CampaignId>, StoreError> {
        let candidates: Vec<CampaignId> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT c.id FROM campaigns c WHERE c.status = 'sending' \
             AND {NOTHING_PENDING}"
        )))
        .fetch_all(&self.read)
        .await?;
        let mut done = Vec::new();
        for id in candidates {
            let mut tx = self.begin().await?;
            let status = self.lock_campaign(&mut tx, id).await?;
            let pending: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM ({PENDING_ROWS}) p"
            )))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if status != CampaignStatus::Sending || pending > 0 {
                tx.rollback().await?;
                continue;
            }
            sqlx::query(
                "UPDATE campaigns SET status = 'completed', completed_at = $1 WHERE id = $2 AND status = 'sending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            self.settle_outcome(&mut tx, id).await?;
            insert_event(
                &mut tx,
                id,
                now,
                "reconciler",
                Some(CampaignStatus::Sending),
                CampaignStatus::Completed,
                "finalised: sending with no pending message",
            )
            .await?;
            tx.commit().await?;
            done.push(id);
        }
        Ok(done)
    }

    /// Locks the given campaigns (in id order, so lock order is the same everywhere) and
    /// returns their statuses.
    pub(in crate::store) async fn lock_campaigns(
        &self,
        tx: &mut Tx,
        ids: &BTreeSet<CampaignId>,
    ) -> Result<HashMap<CampaignId, CampaignStatus>, StoreError> {
        self.lock_campaigns_as(tx, ids, CampaignLock::Exclusive)
            .await
    }

    /// Locks the given campaigns in id order with `mode` and returns their statuses.
    pub(in crate::store) async fn lock_campaigns_as(
        &self,
        tx: &mut Tx,
        ids: &BTreeSet<CampaignId>,
        mode: CampaignLock,
    ) -> Result<HashMap<CampaignId, CampaignStatus>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        // Counters is taken by a transaction that already holds the shared gate.
        let (gate, suffix) = match mode {
            CampaignLock::Exclusive => (
                self.dialect.campaign_gate_column(true),
                self.dialect.lock_suffix(),
            ),
            CampaignLock::Share => (
                self.dialect.campaign_gate_column(false),
                self.dialect.share_lock_suffix(),
            ),
            CampaignLock::Counters => ("", self.dialect.counter_lock_suffix()),
        };
        let sql = format!(
            "SELECT id, status{gate} FROM campaigns WHERE id IN {} ORDER BY id{suffix}",
            self.dialect.json_ids("$1"),
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ids_json(ids.iter().copied()))
            .fetch_all(&mut **tx)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, campaign_status_of(r, "status")?)))
            .collect()
    }

    pub(in crate::store) async fn lock_campaign(
        &self,
        tx: &mut Tx,
        id: CampaignId,
    ) -> Result<CampaignStatus, StoreError> {
        self.lock_campaign_as(tx, id, CampaignLock::Exclusive).await
    }

    pub(in crate::store) async fn lock_campaign_as(
        &self,
        tx: &mut Tx,
        id: CampaignId,
        mode: CampaignLock,
    ) -> Result<CampaignStatus, StoreError> {
        let ids = BTreeSet::from([id]);
        self.lock_campaigns_as(tx, &ids, mode)
            .await?
            .remove(&id)
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "campaign {} does not exist: `herald campaign list` shows the campaigns there are",
                    id
                ))
            })
    }

    /// [`Self::apply_counts`] for a claim or commit that has not locked the row for its
    /// counters yet: the update takes the lock [`CampaignLock::Counters`] would, even for a
    /// zero delta, and returns the status it found (a claim rolls back unless `sending`).
    /// One round trip where a lock and an update would be two.
    pub(in crate::store) async fn apply_counts_returning_status(
        &self,
        tx: &mut Tx,
        campaign_id: CampaignId,
        delta: &Counts,
        in_doubt_total: i64,
        progress_at: Option<i64>,
    ) -> Result<CampaignStatus, StoreError> {
        let sql = format!("{} RETURNING status", counts_update_sql());
        let row = bind_counts(&sql, campaign_id, delta, in_doubt_total, progress_at)
            .fetch_optional(&mut **tx)
            .await?;
        match row {
            Some(r) => campaign_status_of(&r, "status"),
            None => Err(StoreError::NotFound(format!(
                "campaign {campaign_id} does not exist: `herald campaign list` shows the campaigns there are"
            ))),
        }
    }

    pub(in crate::store) async fn apply_counts(
        &self,
        tx: &mut Tx,
        campaign_id: CampaignId,
        delta: &Counts,
        in_doubt_total: i64,
        progress_at: Option<i64>,
    ) -> Result<(), StoreError> {
        if delta.is_zero() && in_doubt_total == 0 && progress_at.is_none() {
            return Ok(());
        }
        bind_counts(
            &counts_update_sql(),
            campaign_id,
            delta,
            in_doubt_total,
            progress_at,
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Completes the campaign if it is sending and its counters show nothing pending. Runs
    /// inside the transaction that recorded the last outcome (docs/DESIGN.md invariant 4).
    pub(in crate::store) async fn complete_if_drained(
        &self,
        tx: &mut Tx,
        campaign_id: CampaignId,
        now: i64,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE campaigns SET status = 'completed', completed_at = $1 \
             WHERE id = $2 AND status = 'sending' AND queued = 0 AND in_flight = 0 AND retry_wait = 0 AND in_doubt = 0",
        )
        .bind(now)
        .bind(campaign_id)
        .execute(&mut **tx)
        .await?;
        if r.rows_affected() == 1 {
            self.settle_outcome(tx, campaign_id).await?;
            insert_event(
                tx,
                campaign_id,
                now,
                actor,
                Some(CampaignStatus::Sending),
                CampaignStatus::Completed,
                reason,
            )
            .await?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// How a transaction locks campaign rows (PostgreSQL; SQLite's single writer serialises
/// every write transaction whatever the mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum CampaignLock {
    /// The campaign gate exclusive, then `FOR UPDATE`: start, pause, cancel, resume, mark
    /// complete, finalising, recovery, outage pause and resume, archive: waits for every
    /// claim, commit and click in progress, and those that come after it wait for it
    /// (postgres.rs `SHARED_GATE_COLUMN` says why the gate). Send-window edits, a resend's
    /// parent and draft edits take the same two in their own selects.
    Exclusive,
    /// The campaign gate shared, then `FOR KEY SHARE`, for a claim's, an outcome commit's
    /// or a click's whole transaction: the status it read holds until it commits, and they
    /// do not wait for each other.
    Share,
    /// `FOR NO KEY UPDATE`, the lock a counter update takes: the campaign row is serialised
    /// for the end of a claim or commit only, not for its message writes. Claims and
    /// commits get it from their `UPDATE … RETURNING status`
    /// ([`Store::apply_counts_returning_status`]); this mode is for a commit's campaign
    /// with no counter to move (every outcome stale).
    Counters,
}

/// The counter update of [`Store::apply_counts`] and
/// [`Store::apply_counts_returning_status`]: the delta in `$1`–`$11`, then the in-doubt
/// total, the progress time and the campaign id ([`bind_counts`] binds them).
fn counts_update_sql() -> String {
    format!(
        "UPDATE campaigns SET {}, in_doubt_total = in_doubt_total + $12, \
         last_progress_at = COALESCE($13, last_progress_at) WHERE id = $14",
        counter_update_sql(1)
    )
}

fn bind_counts<'q>(
    sql: &'q str,
    campaign_id: CampaignId,
    delta: &Counts,
    in_doubt_total: i64,
    progress_at: Option<i64>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for s in MessageStatus::ALL {
        q = q.bind(delta.get(s));
    }
    q.bind(in_doubt_total).bind(progress_at).bind(campaign_id)
}

/// `SET queued = queued + $1, ...` for a counter delta; the parameters start at `$first`.
fn counter_update_sql(first: usize) -> String {
    let sets: Vec<String> = MessageStatus::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{0} = {0} + ${1}", s.as_str(), first + i))
        .collect();
    sets.join(", ")
}

fn illegal(id: CampaignId, from: CampaignStatus, action: CampaignAction) -> StoreError {
    let allowed: Vec<&str> = action.allowed_from().iter().map(|s| s.as_str()).collect();
    StoreError::Conflict(format!(
        "campaign {} is {from}: `{}` applies only to a campaign that is {}",
        id,
        action.as_str(),
        allowed.join(" or ")
    ))
}

/// Writes an entry of the campaign's audit trail (`campaign_events`) and its outbound event,
/// in the transaction of the change; the log line waits for the commit (`Tx::commit`).
pub(in crate::store) async fn insert_event(
    tx: &mut Tx,
    campaign_id: CampaignId,
    at: i64,
    actor: &str,
    from: Option<CampaignStatus>,
    to: CampaignStatus,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO campaign_events (campaign_id, at, actor, from_status, to_status, reason) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(campaign_id)
    .bind(at)
    .bind(actor)
    .bind(from.map(|s| s.as_str()))
    .bind(to.as_str())
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    // The outbound event of the change, in the same transaction (docs/EVENTS.md).
    outbox::emit_campaign_change(
        tx,
        &outbox::CampaignChange {
            campaign_id,
            at,
            actor,
            from,
            to,
            reason,
        },
    )
    .await?;
    tx.events
        .push((campaign_id, actor.to_string(), from, to, reason.to_string()));
    Ok(())
}

/// A campaign's WhatsApp template as stored (JSON text), or null.
pub(in crate::store) fn template_json(
    t: Option<&crate::whatsapp_template::WhatsAppTemplate>,
) -> Option<String> {
    t.and_then(|t| serde_json::to_string(t).ok())
}

/// A stored WhatsApp template; a value that no longer reads is corrupt, not absent.
pub(in crate::store) fn template_from_json(
    text: Option<String>,
) -> Result<Option<crate::whatsapp_template::WhatsAppTemplate>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            StoreError::Corrupt(format!("a campaign's whatsapp_template does not read: {e}"))
        })
    })
    .transpose()
}

/// A campaign's email parts as stored (JSON text), or null.
pub(in crate::store) fn email_json(
    e: Option<&crate::email_content::EmailContent>,
) -> Option<String> {
    e.and_then(|e| serde_json::to_string(e).ok())
}

/// Stored email parts; a value that no longer reads is corrupt, not absent.
pub(in crate::store) fn email_from_json(
    text: Option<String>,
) -> Result<Option<crate::email_content::EmailContent>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("a campaign's email does not read: {e}")))
    })
    .transpose()
}
