//! Small helpers every entity file uses: SQL text built at run time, text from outside
//! cleaned before it is stored, id lists bound as JSON, and statuses and counts read from
//! rows.

use crate::domain::{CampaignStatus, Counts, MessageStatus};
use crate::store::StoreError;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

pub(crate) fn sql_str(s: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(s.to_string())
}

/// Text from outside (provider errors, ids) without control characters: PostgreSQL refuses
/// NUL in text and JSON, and a log line should stay one line.
pub(super) fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

/// A JSON array of row ids (typed or not) for `Dialect::json_ids`: numbers, never the
/// prefixed form a typed id serialises to.
pub(super) fn ids_json<I: Into<i64>>(ids: impl IntoIterator<Item = I>) -> String {
    let v: Vec<i64> = ids.into_iter().map(Into::into).collect();
    serde_json::Value::from(v).to_string()
}

pub(super) fn status_of(row: &AnyRow, col: &str) -> Result<MessageStatus, StoreError> {
    let s: String = row.try_get(col)?;
    MessageStatus::parse(&s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown message status `{s}`")))
}

/// Counts from `SELECT status, count(*) AS n … GROUP BY status` rows.
pub(super) fn counts_from_rows(rows: &[AnyRow]) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    for r in rows {
        counts.add(status_of(r, "status")?, r.try_get("n")?);
    }
    Ok(counts)
}

pub(super) fn campaign_status_of(row: &AnyRow, col: &str) -> Result<CampaignStatus, StoreError> {
    let s: String = row.try_get(col)?;
    CampaignStatus::parse(&s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown campaign status `{s}`")))
}
