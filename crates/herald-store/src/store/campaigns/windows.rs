//! Send windows as stored (docs/CAMPAIGNS.md, "Send windows"): an organisation's default,
//! a campaign's own (set while it is a draft or scheduled), and the messages a window holds,
//! counted for the campaign's page, `status` and the API. The window itself is parsed and
//! judged in `herald_core::send_window`; here it is text.

use crate::ids::{CampaignId, OrgId};
use crate::store::{Store, StoreError};
use sqlx::{AssertSqlSafe, Row};

/// Messages a send window holds now, and when the first of them may go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    pub messages: i64,
    /// The earliest opening among them; None when none waits.
    pub until: Option<i64>,
}

impl Store {
    /// The organisation's default send window; None: campaigns send at any hour unless
    /// they set their own.
    pub async fn org_send_window(&self, org_id: OrgId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT send_window FROM organisations WHERE id = $1")
                .bind(org_id)
                .fetch_optional(&self.read)
                .await?
                .flatten(),
        )
    }

    /// Sets (or, with None, removes) the organisation's default send window. The caller
    /// checks the text (`SendWindow::parse`). Campaigns already sending take it at their
    /// next claim, unless they set their own; the messages the old window holds (queued, or
    /// claimed for a re-check) in its sending and paused campaigns are looked at again at
    /// once, in the same transaction.
    pub async fn set_org_send_window(
        &self,
        org_id: OrgId,
        window: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Claims and commits of these campaigns finish first and wait for this: it writes
        // messages they may hold, so it must not hold those while they wait for the
        // campaign row (`CampaignLock`).
        sqlx::query(AssertSqlSafe(format!(
            "SELECT id{} FROM campaigns WHERE org_id = $1 AND status IN ('sending', 'paused') ORDER BY id{}",
            self.dialect.campaign_gate_column(true),
            self.dialect.lock_suffix()
        )))
        .bind(org_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("UPDATE organisations SET send_window = $1 WHERE id = $2")
            .bind(window)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        // The status is written out, not bound, so each statement matches its partial index.
        for sql in [
            "UPDATE messages SET next_attempt_at = $2, held_until = NULL \
             WHERE status = 'queued' AND held_until > $2 AND campaign_id IN \
             (SELECT id FROM campaigns WHERE org_id = $1 AND status IN ('sending', 'paused'))",
            "UPDATE messages SET next_attempt_at = $2, held_until = NULL \
             WHERE status = 'in_flight' AND held_until > $2 AND campaign_id IN \
             (SELECT id FROM campaigns WHERE org_id = $1 AND status IN ('sending', 'paused'))",
        ] {
            sqlx::query(sql)
                .bind(org_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The campaign's messages its send window holds at `now`: queued, or claimed again
    /// to look at the window (the claim keeps the hold until the look records its
    /// outcome), with a hold that has not ended. Counting the claimed ones keeps a waiting
    /// campaign from reading as stuck in the instant of a re-check.
    pub async fn campaign_waiting(
        &self,
        campaign_id: CampaignId,
        now: i64,
    ) -> Result<Waiting, StoreError> {
        // One read per partial index (`messages_claimable`, `messages_in_flight`): as one
        // `status IN ('queued', 'in_flight')`, which neither index matches, it read every
        // message of the campaign, sent ones too (scripts/explain-plans).
        let row = sqlx::query(
            "SELECT count(*) AS n, min(w.held_until) AS until FROM ( \
               SELECT held_until FROM messages WHERE campaign_id = $1 AND status = 'queued' AND held_until > $2 \
               UNION ALL \
               SELECT held_until FROM messages WHERE campaign_id = $1 AND status = 'in_flight' AND held_until > $2 \
             ) w",
        )
        .bind(campaign_id)
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        Ok(Waiting {
            messages: row.try_get("n")?,
            until: row.try_get("until")?,
        })
    }

    /// Sets a campaign's own send window (`off`: none, whatever its organisation's; None:
    /// its organisation's), until the campaign ends. The messages it holds are looked at
    /// again at once, in the same transaction, so a window that opens earlier sends them.
    pub async fn set_campaign_send_window(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
        window: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // As for the organisation's window: claims and commits in progress finish first.
        sqlx::query(AssertSqlSafe(format!(
            "SELECT id{} FROM campaigns WHERE id = $1 AND org_id = $2{}",
            self.dialect.campaign_gate_column(true),
            self.dialect.lock_suffix()
        )))
        .bind(campaign_id)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
        let r = sqlx::query(
            "UPDATE campaigns SET send_window = $1 \
             WHERE id = $2 AND org_id = $3 AND status NOT IN ('completed', 'cancelled')",
        )
        .bind(window)
        .bind(campaign_id)
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            // Held messages claimed for a re-check (in flight, `held_until` kept) are no
            // longer held either: `campaign_waiting` must not count them under the new window.
            // Written out, not bound, so each statement matches its partial index.
            for sql in [
                "UPDATE messages SET next_attempt_at = $2, held_until = NULL \
                 WHERE campaign_id = $1 AND status = 'queued' AND held_until > $2",
                "UPDATE messages SET next_attempt_at = $2, held_until = NULL \
                 WHERE campaign_id = $1 AND status = 'in_flight' AND held_until > $2",
            ] {
                sqlx::query(sql)
                    .bind(campaign_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            return Ok(());
        }
        tx.rollback().await?;
        Err(self.ended_refusal(org_id, campaign_id, "send window").await)
    }
}
