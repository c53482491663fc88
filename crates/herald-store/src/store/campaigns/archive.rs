//! Message retention (docs/CAMPAIGNS.md, "Retention"): the message rows of a campaign
//! that finished longer ago than `message_retention_days` move into `message_archives`, as
//! the export reads them ([`ExportedMessage`]), one chunk of at most `chunk_rows` messages
//! in id order per transaction; the campaign row keeps its counters and outcome.
//!
//! Crash safety: each step locks the campaign, writes one chunk and deletes exactly the
//! rows it holds in the same transaction, so every message is in exactly one of the two
//! tables at any commit; a crash loses at most an uncommitted step, and the next pass goes
//! on from the rows left. The failure texts are frozen by the first step, before any row
//! goes (`campaigns.archived_failures`, which also says the archive has begun), and
//! `archived_at` is set by the step that leaves no row. Every write is conditional on the
//! campaign still being finished, unarchived and with nothing pending, so instances
//! running it at once only take turns.

use crate::ids::{CampaignId, MessageId, OrgId};
use crate::store::campaigns::export::{ExportedMessage, exported_from_row, live_rows_sql};
use crate::store::helpers::ids_json;
use crate::store::{Store, StoreError, Tx};
use sqlx::{AssertSqlSafe, Row};

/// How much one pass of the archive may do.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    /// Messages per chunk (one transaction each).
    pub chunk_rows: i64,
    /// Chunks written per pass, over all campaigns: a campaign of ten million messages is
    /// archived over many passes, never in one long transaction.
    pub chunks_per_pass: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            chunk_rows: 1_000,
            chunks_per_pass: 5,
        }
    }
}

/// A campaign whose last message row was archived by this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedCampaign {
    pub campaign_id: CampaignId,
    pub org_id: OrgId,
    /// Messages in its archive.
    pub rows: i64,
    /// Bytes of archive JSON (before the database compresses it).
    pub bytes: i64,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Chunks written, and the messages and JSON bytes they hold.
    pub chunks: usize,
    pub rows: u64,
    pub bytes: u64,
    /// Campaigns whose archive this pass finished.
    pub finished: Vec<ArchivedCampaign>,
    /// Campaigns left alone because a message row is still pending although the counters
    /// say none is (counter drift: reported by the drift check, never archived over).
    pub refused: Vec<CampaignId>,
}

/// What one step did to one campaign.
enum Step {
    Chunk {
        rows: u64,
        bytes: u64,
    },
    /// The campaign is archived, by a last chunk of `rows` (0: none was left).
    Finished {
        rows: u64,
        bytes: u64,
        done: ArchivedCampaign,
    },
    /// Not (or no longer) to be archived: it is not finished long enough, is archived, or
    /// has pending work.
    Skipped,
    Refused,
}

/// Campaigns looked at per pass (the oldest finished first).
const CANDIDATES_PER_PASS: i64 = 16;

/// The state of a campaign's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveState {
    /// Every message is a row.
    None,
    /// Some messages are in the archive and some are rows still.
    Begun,
    /// Every message is in the archive, since then.
    Archived(i64),
}

impl Store {
    /// Archives the message rows of campaigns completed or cancelled before
    /// `now - older_than_ms`, with nothing pending, oldest first, at most
    /// `limits.chunks_per_pass` chunks of `limits.chunk_rows` messages.
    pub async fn archive_finished_campaigns(
        &self,
        now: i64,
        older_than_ms: i64,
        limits: ArchiveLimits,
    ) -> Result<ArchiveReport, StoreError> {
        let finished_before = now.saturating_sub(older_than_ms);
        let chunk_rows = limits.chunk_rows.max(1);
        let mut report = ArchiveReport::default();
        if limits.chunks_per_pass == 0 {
            return Ok(report);
        }
        let candidates: Vec<CampaignId> = sqlx::query_scalar(
            "SELECT id FROM campaigns WHERE status IN ('completed', 'cancelled') \
             AND completed_at < $1 AND archived_at IS NULL \
             AND queued = 0 AND in_flight = 0 AND retry_wait = 0 AND in_doubt = 0 \
             ORDER BY completed_at, id LIMIT $2",
        )
        .bind(finished_before)
        .bind(CANDIDATES_PER_PASS)
        .fetch_all(&self.read)
        .await?;
        'campaigns: for id in candidates {
            loop {
                if report.chunks >= limits.chunks_per_pass {
                    break 'campaigns;
                }
                match self
                    .archive_step(id, now, finished_before, chunk_rows)
                    .await?
                {
                    Step::Chunk { rows, bytes } => {
                        report.chunks += 1;
                        report.rows += rows;
                        report.bytes += bytes;
                    }
                    Step::Finished { rows, bytes, done } => {
                        if rows > 0 {
                            report.chunks += 1;
                            report.rows += rows;
                            report.bytes += bytes;
                        }
                        report.finished.push(done);
                        continue 'campaigns;
                    }
                    Step::Skipped => continue 'campaigns,
                    Step::Refused => {
                        report.refused.push(id);
                        continue 'campaigns;
                    }
                }
            }
        }
        Ok(report)
    }

    /// One transaction: the next chunk of the campaign's rows into the archive, or the
    /// campaign marked archived when no row is left.
    async fn archive_step(
        &self,
        id: CampaignId,
        now: i64,
        finished_before: i64,
        chunk_rows: i64,
    ) -> Result<Step, StoreError> {
        let mut tx = self.begin().await?;
        // The campaign first, as every writer of a campaign's messages locks it (a click
        // on one of its links waits for this step, and then finds the row gone).
        self.lock_campaign(&mut tx, id).await?;
        let c = sqlx::query(
            "SELECT org_id, status, completed_at, archived_at, archived_failures, \
             queued + in_flight + retry_wait + in_doubt AS pending FROM campaigns WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let org_id: OrgId = c.try_get("org_id")?;
        let status: String = c.try_get("status")?;
        let completed_at: Option<i64> = c.try_get("completed_at")?;
        let archived_at: Option<i64> = c.try_get("archived_at")?;
        let begun = c
            .try_get::<Option<String>, _>("archived_failures")?
            .is_some();
        let pending: i64 = c.try_get("pending")?;
        let due = matches!(status.as_str(), "completed" | "cancelled")
            && completed_at.is_some_and(|t| t < finished_before)
            && archived_at.is_none()
            && pending == 0;
        if !due {
            tx.rollback().await?;
            return Ok(Step::Skipped);
        }
        if !begun {
            // Frozen before any row goes, in the same transaction as the first deletion:
            // the failure groups read either every row or this.
            let texts = failure_texts_in(&mut tx, id).await?;
            let json = serde_json::to_string(&texts)
                .map_err(|e| StoreError::Invalid(format!("failure texts: {e}")))?;
            sqlx::query(
                "UPDATE campaigns SET archived_failures = $1 WHERE id = $2 AND archived_failures IS NULL",
            )
            .bind(json)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        // The rows as the export reads them, the contact's name frozen now. Archived rows
        // are gone, so the first rows left are the next chunk.
        let rows = sqlx::query(AssertSqlSafe(live_rows_sql()))
            .bind(org_id)
            .bind(id)
            .bind(MessageId(0))
            .bind(chunk_rows)
            .fetch_all(&mut *tx)
            .await?;
        let mut page = rows
            .iter()
            .map(exported_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.add_link_clicks(&mut *tx, &mut page).await?;
        if page.iter().any(|m| m.status.is_pending()) {
            // The counters said nothing is pending; a row says otherwise. The drift
            // check reports it; a message that may still move is never archived.
            tx.rollback().await?;
            return Ok(Step::Refused);
        }
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            let done = self.mark_archived(&mut tx, id, org_id, now).await?;
            tx.commit().await?;
            return Ok(Step::Finished {
                rows: 0,
                bytes: 0,
                done,
            });
        };
        let (first, last) = (first.id, last.id);
        let data = serde_json::to_string(&page)
            .map_err(|e| StoreError::Invalid(format!("archive chunk: {e}")))?;
        let n = page.len() as i64;
        let bytes = data.len() as u64;
        sqlx::query(
            "INSERT INTO message_archives (campaign_id, first_message_id, last_message_id, message_count, data) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(first)
        .bind(last)
        .bind(n)
        .bind(data)
        .execute(&mut *tx)
        .await?;
        let ids = ids_json(page.iter().map(|m| m.id));
        let list = self.dialect.json_ids("$1");
        // Children first: their clicks are in the chunk (`clicks`, `first_clicked_at`,
        // `link_clicks`).
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM message_clicks WHERE message_id IN {list}"
        )))
        .bind(ids.clone())
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM messages WHERE id IN {list} AND campaign_id = $2"
        )))
        .bind(ids)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted != page.len() as u64 {
            tx.rollback().await?;
            return Err(StoreError::Corrupt(format!(
                "archiving campaign {id}: {deleted} of the {n} message rows read could be deleted; nothing was archived"
            )));
        }
        if n < chunk_rows {
            // The last chunk: under the lock no row of a finished campaign can appear.
            let done = self.mark_archived(&mut tx, id, org_id, now).await?;
            tx.commit().await?;
            return Ok(Step::Finished {
                rows: n as u64,
                bytes,
                done,
            });
        }
        tx.commit().await?;
        Ok(Step::Chunk {
            rows: n as u64,
            bytes,
        })
    }

    /// Sets `archived_at` and reads what the archive holds (inside the step's
    /// transaction, so the numbers include its chunk).
    async fn mark_archived(
        &self,
        tx: &mut Tx,
        id: CampaignId,
        org_id: OrgId,
        now: i64,
    ) -> Result<ArchivedCampaign, StoreError> {
        sqlx::query("UPDATE campaigns SET archived_at = $1 WHERE id = $2 AND archived_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let size = self.dialect.text_bytes("data");
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT CAST(COALESCE(sum(message_count), 0) AS BIGINT) AS n, \
             CAST(COALESCE(sum({size}), 0) AS BIGINT) AS bytes \
             FROM message_archives WHERE campaign_id = $1"
        )))
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(ArchivedCampaign {
            campaign_id: id,
            org_id,
            rows: row.try_get("n")?,
            bytes: row.try_get("bytes")?,
        })
    }

    /// Where the organisation's campaign's messages are (another organisation's campaign
    /// reads as not found).
    pub async fn archive_state(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
    ) -> Result<ArchiveState, StoreError> {
        let row = sqlx::query(
            "SELECT archived_at, \
             CAST(CASE WHEN archived_failures IS NULL THEN 0 ELSE 1 END AS BIGINT) AS begun \
             FROM campaigns WHERE id = $1 AND org_id = $2",
        )
        .bind(campaign_id)
        .bind(org_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "campaign {campaign_id} does not exist: `herald campaign list` shows the campaigns there are"
            ))
        })?;
        let at: Option<i64> = row.try_get("archived_at")?;
        let begun = row.try_get::<i64, _>("begun")? != 0;
        Ok(match (at, begun) {
            (Some(at), _) => ArchiveState::Archived(at),
            (None, true) => ArchiveState::Begun,
            (None, false) => ArchiveState::None,
        })
    }

    /// Archived messages of the organisation's campaign with an id above `after`, in id
    /// order: at least `limit` of them when there are (whole chunks, so maybe more).
    pub(in crate::store) async fn archived_messages_after(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
        after: MessageId,
        limit: i64,
    ) -> Result<Vec<ExportedMessage>, StoreError> {
        let mut out = Vec::new();
        let mut read_to = after;
        while (out.len() as i64) < limit {
            // One range of the (campaign_id, last_message_id) index: the chunk holding the
            // next id, or the first one after it.
            let chunk = sqlx::query(
                "SELECT a.last_message_id, a.data FROM message_archives a \
                 WHERE EXISTS (SELECT 1 FROM campaigns c WHERE c.id = $2 AND c.org_id = $1) \
                 AND a.campaign_id = $2 AND a.last_message_id > $3 \
                 ORDER BY a.last_message_id LIMIT 1",
            )
            .bind(org_id)
            .bind(campaign_id)
            .bind(read_to)
            .fetch_optional(&self.read)
            .await?;
            let Some(chunk) = chunk else {
                break;
            };
            read_to = chunk.try_get("last_message_id")?;
            let data: String = chunk.try_get("data")?;
            out.extend(
                parse_chunk(campaign_id, &data)?
                    .into_iter()
                    .filter(|m| m.id > after),
            );
        }
        Ok(out)
    }

    /// The archived message `message_id`, with its campaign and organisation (for a
    /// tracked link or an unsubscribe link in a message sent before its campaign was
    /// archived); None when no chunk holds it.
    pub(in crate::store) async fn archived_message(
        &self,
        message_id: MessageId,
    ) -> Result<Option<(CampaignId, OrgId, ExportedMessage)>, StoreError> {
        // A campaign's messages are one id range, made in one statement when it started;
        // chunks of campaigns started at the same moment may overlap, hence a few.
        let chunks = sqlx::query(
            "SELECT a.campaign_id, c.org_id, a.data FROM message_archives a \
             JOIN campaigns c ON c.id = a.campaign_id \
             WHERE a.last_message_id >= $1 AND a.first_message_id <= $1 \
             ORDER BY a.last_message_id LIMIT 8",
        )
        .bind(message_id)
        .fetch_all(&self.read)
        .await?;
        for chunk in &chunks {
            let campaign_id: CampaignId = chunk.try_get("campaign_id")?;
            let data: String = chunk.try_get("data")?;
            if let Some(m) = parse_chunk(campaign_id, &data)?
                .into_iter()
                .find(|m| m.id == message_id)
            {
                return Ok(Some((campaign_id, chunk.try_get("org_id")?, m)));
            }
        }
        Ok(None)
    }

    /// The failure texts frozen when the campaign's archive began; None before.
    pub(in crate::store) async fn archived_failure_texts(
        &self,
        campaign_id: CampaignId,
    ) -> Result<Option<Vec<(Option<String>, i64)>>, StoreError> {
        let json: Option<String> =
            sqlx::query_scalar("SELECT archived_failures FROM campaigns WHERE id = $1")
                .bind(campaign_id)
                .fetch_optional(&self.read)
                .await?
                .flatten();
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| {
                StoreError::Corrupt(format!(
                    "campaign {campaign_id}'s archived failure texts: {e}"
                ))
            })
        })
        .transpose()
    }
}

fn parse_chunk(campaign_id: CampaignId, data: &str) -> Result<Vec<ExportedMessage>, StoreError> {
    serde_json::from_str(data).map_err(|e| {
        StoreError::Corrupt(format!("an archive chunk of campaign {campaign_id}: {e}"))
    })
}

/// The campaign's failure texts and counts, read in `tx` (as `Store::failure_texts`),
/// one text per explanation (`reasons::group` merges texts by their code): error texts
/// that name the recipient would otherwise freeze one entry per failed message.
async fn failure_texts_in(
    tx: &mut Tx,
    campaign_id: CampaignId,
) -> Result<Vec<(Option<String>, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT last_error, count(*) AS n FROM messages \
         WHERE campaign_id = $1 AND status IN ('failed', 'undelivered') GROUP BY last_error \
         ORDER BY count(*) DESC, last_error",
    )
    .bind(campaign_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut by_code: Vec<(String, Option<String>, i64)> = Vec::new();
    for r in &rows {
        let text: Option<String> = r.try_get("last_error")?;
        let n: i64 = r.try_get("n")?;
        let code = match text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => crate::reasons::explain(t).code,
            None => String::new(),
        };
        match by_code.iter_mut().find(|g| g.0 == code) {
            Some(g) => g.2 += n,
            None => by_code.push((code, text, n)),
        }
    }
    Ok(by_code.into_iter().map(|(_, text, n)| (text, n)).collect())
}
