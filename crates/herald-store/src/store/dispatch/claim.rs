//! Claiming messages to send: the sending campaigns with work due, and the claim that moves
//! due messages to `in_flight` for one instance (docs/DESIGN.md invariants 1 and 3).

use crate::domain::{CampaignStatus, Counts, MessageStatus};
use crate::ids::CampaignId;
use crate::store::campaigns::lifecycle::CampaignLock;
use crate::store::helpers::{ids_json, status_of};
use crate::store::{ClaimedMessage, SendableCampaign, Store, StoreError, Tx, directory};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

/// What one claim asks for: up to `limit` due messages of a campaign, for `owner`, leased
/// until `lease_until`.
#[derive(Clone, Copy)]
struct ClaimAsk<'a> {
    campaign_id: CampaignId,
    owner: &'a str,
    now: i64,
    lease_until: i64,
    limit: i64,
}

impl Store {
    /// Sending campaigns with work due now: one probe of `messages_claimable` per sending
    /// campaign, as a scalar subquery (which no planner turns into a join). As `EXISTS`,
    /// PostgreSQL with statistics of one campaign that is the whole table made it a merge
    /// join over every message, at each poll (scripts/explain-plans).
    pub async fn sendable_campaigns(&self, now: i64) -> Result<Vec<SendableCampaign>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id, c.org_id, c.channel_id, c.body, c.whatsapp_template, c.email, \
             CASE WHEN c.send_window = 'off' THEN NULL \
                  ELSE COALESCE(c.send_window, (SELECT o.send_window FROM organisations o WHERE o.id = c.org_id)) END AS send_window \
             FROM campaigns c WHERE c.status = 'sending' \
             AND (SELECT m.next_attempt_at FROM messages m WHERE m.campaign_id = c.id AND m.status IN ('queued','retry_wait') \
                  AND m.next_attempt_at <= $1 ORDER BY m.next_attempt_at LIMIT 1) IS NOT NULL \
             ORDER BY c.id",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SendableCampaign {
                    id: r.try_get("id")?,
                    org_id: r.try_get("org_id")?,
                    channel_id: r.try_get("channel_id")?,
                    body: r.try_get("body")?,
                    whatsapp_template: crate::store::campaigns::lifecycle::template_from_json(
                        r.try_get("whatsapp_template")?,
                    )?,
                    email: crate::store::campaigns::lifecycle::email_from_json(
                        r.try_get("email")?,
                    )?,
                    send_window: r.try_get("send_window")?,
                })
            })
            .collect()
    }

    /// When the earliest message of a sending campaign that is not due yet (a retry, a
    /// deferral) falls due, if any: the dispatcher sleeps until then rather than a whole
    /// poll. One index probe per sending campaign (`messages_claimable`).
    pub async fn next_due_at(&self, now: i64) -> Result<Option<i64>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT min((SELECT m.next_attempt_at FROM messages m WHERE m.campaign_id = c.id \
             AND m.status IN ('queued','retry_wait') AND m.next_attempt_at > $1 \
             ORDER BY m.next_attempt_at LIMIT 1)) FROM campaigns c WHERE c.status = 'sending'",
        )
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        Ok(due)
    }

    /// Claims up to `limit` due messages of one sending campaign for `owner`, in one
    /// transaction that also moves the counters. Returns nothing if the campaign is not
    /// sending (a pause stops claims at once).
    ///
    /// Four statements on PostgreSQL, each a round trip: the campaign's shared lock, the
    /// claim itself (pick, move to `in_flight` and read the rows to render, in one
    /// statement), the counters (which return the status they found) and the commit.
    pub async fn claim(
        &self,
        campaign_id: CampaignId,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let mut tx = self.begin().await?;
        // Shared with other claims and commits, exclusive of a pause or cancel: the status
        // read here holds until this claim commits.
        let status = self
            .lock_campaign_as(&mut tx, campaign_id, CampaignLock::Share)
            .await?;
        if status != CampaignStatus::Sending {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let ask = ClaimAsk {
            campaign_id,
            owner,
            now,
            lease_until,
            limit,
        };
        let claimed = if self.dialect.claims_in_one_statement() {
            self.claim_in_one_statement(&mut tx, &ask).await?
        } else {
            self.claim_stepwise(&mut tx, &ask).await?
        };
        let Some((rows, delta)) = claimed else {
            tx.rollback().await?;
            return Ok(Vec::new());
        };
        // The counters last: the campaign row is serialised for this statement and the
        // commit, not for the message writes above. Another instance's commit may have
        // auto-paused the campaign meanwhile (its status write needs no more than the row
        // lock this update takes): then nothing is claimed.
        if self
            .apply_counts_returning_status(&mut tx, campaign_id, &delta, 0, None)
            .await?
            != CampaignStatus::Sending
        {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedMessage {
                    id: r.try_get("id")?,
                    campaign_id,
                    contact_id: r.try_get("contact_id")?,
                    address: r.try_get("address")?,
                    attempts: r.try_get("attempts")?,
                    name: r.try_get("name")?,
                    attributes: r
                        .try_get::<Option<String>, _>("attributes")?
                        .unwrap_or_else(|| "{}".to_string()),
                    suppressed: r.try_get("suppressed")?,
                })
            })
            .collect()
    }

    /// PostgreSQL: picks the due rows (`SKIP LOCKED`, so concurrent claims take different
    /// ones), moves them to `in_flight` and returns them with what rendering needs, in one
    /// statement. `None` when nothing was due.
    async fn claim_in_one_statement(
        &self,
        tx: &mut Tx,
        ask: &ClaimAsk<'_>,
    ) -> Result<Option<(Vec<AnyRow>, Counts)>, StoreError> {
        let ClaimAsk {
            campaign_id,
            owner,
            now,
            lease_until,
            limit,
        } = *ask;
        let sql = format!(
            "WITH picked AS (SELECT id, status FROM messages WHERE campaign_id = $1 \
               AND status IN ('queued','retry_wait') AND next_attempt_at <= $2 \
               ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED), \
             moved AS (UPDATE messages m SET status = 'in_flight', owner = $4, lease_until = $5, \
               attempts = m.attempts + 1, updated_at = $2 FROM picked p \
               WHERE m.id = p.id AND m.status IN ('queued','retry_wait') \
               RETURNING m.id, p.status AS was, m.contact_id, m.address, m.attempts) \
             SELECT mv.id, mv.was, mv.contact_id, mv.address, mv.attempts, {}, \
               (SELECT s.reason FROM suppressions s WHERE s.address = mv.address \
                  AND s.org_id = (SELECT k.org_id FROM campaigns k WHERE k.id = $1)) AS suppressed, \
               (SELECT count(*) FROM picked) AS picked \
             FROM moved mv LEFT JOIN contacts c ON c.id = mv.contact_id ORDER BY mv.id",
            directory::bounded_contact_fields("c"),
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(now)
            .bind(limit)
            .bind(owner)
            .bind(lease_until)
            .fetch_all(&mut **tx)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let picked: i64 = first.try_get("picked")?;
        if picked != rows.len() as i64 {
            // Cannot happen: the rows picked are locked by the same statement. Refuse
            // rather than miscount.
            return Err(StoreError::Conflict(format!(
                "claim of campaign {campaign_id} raced: {} of {picked} rows moved",
                rows.len()
            )));
        }
        let mut delta = Counts::default();
        for r in &rows {
            delta.moved(status_of(r, "was")?, MessageStatus::InFlight);
        }
        Ok(Some((rows, delta)))
    }

    /// SQLite: the same claim in three statements (its single writer is held for the
    /// transaction, so nobody can claim in between; there is no round trip to save).
    async fn claim_stepwise(
        &self,
        tx: &mut Tx,
        ask: &ClaimAsk<'_>,
    ) -> Result<Option<(Vec<AnyRow>, Counts)>, StoreError> {
        let ClaimAsk {
            campaign_id,
            owner,
            now,
            lease_until,
            limit,
        } = *ask;
        let sql = format!(
            "SELECT id, status FROM messages WHERE campaign_id = $1 AND status IN ('queued','retry_wait') \
             AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3{}",
            self.dialect.skip_locked_suffix()
        );
        let picked = sqlx::query(AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
        if picked.is_empty() {
            return Ok(None);
        }
        let mut delta = Counts::default();
        let mut ids = Vec::with_capacity(picked.len());
        for r in &picked {
            ids.push(r.try_get::<i64, _>("id")?);
            delta.moved(status_of(r, "status")?, MessageStatus::InFlight);
        }
        let ids_param = ids_json(ids.iter().copied());
        let update = format!(
            "UPDATE messages SET status = 'in_flight', owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id IN {} AND status IN ('queued','retry_wait')",
            self.dialect.json_ids("$4")
        );
        let n = sqlx::query(AssertSqlSafe(update))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(&ids_param)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if n as usize != ids.len() {
            // Cannot happen: the single writer holds the rows picked. Refuse rather than
            // miscount.
            return Err(StoreError::Conflict(format!(
                "claim of campaign {campaign_id} raced: {n} of {} rows moved",
                ids.len()
            )));
        }
        // Name and attributes bounded as every read of contacts is.
        let details = format!(
            "SELECT m.id, m.contact_id, m.address, m.attempts, {}, \
             (SELECT s.reason FROM suppressions s WHERE s.address = m.address \
                AND s.org_id = (SELECT k.org_id FROM campaigns k WHERE k.id = $2)) AS suppressed \
             FROM messages m LEFT JOIN contacts c ON c.id = m.contact_id WHERE m.id IN {} ORDER BY m.id",
            directory::bounded_contact_fields("c"),
            self.dialect.json_ids("$1")
        );
        let rows = sqlx::query(AssertSqlSafe(details))
            .bind(&ids_param)
            .bind(campaign_id)
            .fetch_all(&mut **tx)
            .await?;
        Ok(Some((rows, delta)))
    }
}
