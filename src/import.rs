//! Streaming CSV import of contacts into a list. Memory stays flat in the file's size:
//! rows are read and written in batches, and rejected rows are reported as they are met.

use crate::address::Address;
use crate::store::{ContactInput, Store, StoreError};
use std::path::Path;

const BATCH: usize = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub imported: u64,
    pub updated: u64,
    pub rejected: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "{path} has no `address` column in its header row (found: {found}): add a column named address holding phone numbers (E.164) or emails"
    )]
    NoAddressColumn { path: String, found: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Imports `path` into the list `list_name` (created if needed). `on_reject` receives each
/// bad row's line number and reason; bad rows never stop the import.
pub async fn import_csv(
    store: &Store,
    org_id: i64,
    list_name: &str,
    path: &Path,
    mut on_reject: impl FnMut(u64, &str),
) -> Result<ImportReport, ImportError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| ImportError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| ImportError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let lower: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    let Some(address_col) = lower.iter().position(|h| h == "address") else {
        return Err(ImportError::NoAddressColumn {
            path: shown,
            found: headers.join(", "),
        });
    };
    let name_col = lower.iter().position(|h| h == "name");
    let unsub_col = lower.iter().position(|h| h == "unsubscribed");
    let list_id = store.ensure_list(org_id, list_name).await?;
    let mut report = ImportReport::default();
    let mut batch: Vec<ContactInput> = Vec::with_capacity(BATCH);
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                report.rejected += 1;
                on_reject(line, &format!("unreadable row: {e}"));
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(line);
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        if record.len() != headers.len() {
            report.rejected += 1;
            on_reject(
                line,
                &format!(
                    "has {} fields but the header has {}",
                    record.len(),
                    headers.len()
                ),
            );
            continue;
        }
        match parse_row(&record, &headers, address_col, name_col, unsub_col) {
            Ok(contact) => batch.push(contact),
            Err(reason) => {
                report.rejected += 1;
                on_reject(line, &reason);
                continue;
            }
        }
        if batch.len() >= BATCH {
            flush(store, org_id, list_id, &mut batch, &mut report).await?;
        }
    }
    flush(store, org_id, list_id, &mut batch, &mut report).await?;
    Ok(report)
}

async fn flush(
    store: &Store,
    org_id: i64,
    list_id: i64,
    batch: &mut Vec<ContactInput>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    if batch.is_empty() {
        return Ok(());
    }
    let r = store.upsert_contacts(org_id, list_id, batch).await?;
    report.imported += r.inserted;
    report.updated += r.updated;
    batch.clear();
    Ok(())
}

fn parse_row(
    record: &csv::StringRecord,
    headers: &[String],
    address_col: usize,
    name_col: Option<usize>,
    unsub_col: Option<usize>,
) -> Result<ContactInput, String> {
    let raw = record.get(address_col).unwrap_or_default();
    let address = Address::parse(raw).map_err(|e| e.to_string())?;
    let name = name_col
        .and_then(|i| record.get(i))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let unsubscribed = match unsub_col.and_then(|i| record.get(i)) {
        None | Some("") => None,
        Some(v) => Some(parse_bool(v).ok_or_else(|| {
            format!("unsubscribed is `{v}`: write true or false (also yes/no, 1/0)")
        })?),
    };
    let mut attributes = serde_json::Map::new();
    for (i, value) in record.iter().enumerate() {
        if i == address_col || Some(i) == name_col || Some(i) == unsub_col || value.is_empty() {
            continue;
        }
        if let Some(key) = headers.get(i).filter(|k| !k.is_empty()) {
            attributes.insert(key.clone(), serde_json::Value::String(value.to_string()));
        }
    }
    Ok(ContactInput {
        address: address.as_str().to_string(),
        name,
        attributes,
        unsubscribed,
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bool;

    #[test]
    fn booleans_accept_common_spellings() {
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
