//! Streaming CSV import of contacts into a list. Memory stays flat in the file's size:
//! rows are read and written in batches, and rejected rows are reported as they are met.
//!
//! The CSV parser is synchronous, so it runs on a blocking thread over any `Read` (a file
//! for the CLI, an HTTP body fed chunk by chunk for the API) and hands batches of parsed
//! rows to the async side, which writes them. Bounded channels keep at most a couple of
//! batches in memory.

use crate::address::Address;
use crate::contact_rules::{self, Violation};
use crate::ids::{ListId, OrgId};
use crate::store::{ContactInput, Store, StoreError};
use std::io::Read;
use std::path::Path;
use tokio::sync::mpsc;

const BATCH: usize = 1000;

/// Largest row, in bytes: an address, a name and every allowed attribute at its longest
/// (4-byte characters) fit well within it. A longer row is rejected by line.
pub const MAX_ROW_BYTES: usize = 512 * 1024;

/// The CSV reader's buffer: how far it reads ahead of the record it is parsing, and so the
/// slack the row cap allows before it stops the import (see [`RowCapReader`]).
const READ_BUFFER: usize = 64 * 1024;

/// Bytes a record may pull from the input before the import stops: [`MAX_ROW_BYTES`] plus
/// one buffer of read-ahead, so no row within the cap ever trips it.
const ROW_HARD_LIMIT: usize = MAX_ROW_BYTES + READ_BUFFER;

/// Counts the bytes the CSV reader pulls since the last record boundary (the parse loop
/// calls [`RowCapReader::start_record`] after each record) and fails once a record pulls
/// more than [`ROW_HARD_LIMIT`]. The csv crate buffers a whole record before handing it
/// over, so without this a 50 MB single-line row would sit in memory; with it, at most
/// about one cap's worth does.
struct RowCapReader<R> {
    inner: R,
    since_record: usize,
    tripped: bool,
}

impl<R: Read> RowCapReader<R> {
    fn new(inner: R) -> Self {
        RowCapReader {
            inner,
            since_record: 0,
            tripped: false,
        }
    }

    fn start_record(&mut self) {
        self.since_record = 0;
    }
}

impl<R: Read> Read for RowCapReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since_record > ROW_HARD_LIMIT {
            self.tripped = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a row is longer than {MAX_ROW_BYTES} bytes (rule max_row_bytes)"),
            ));
        }
        let n = self.inner.read(buf)?;
        self.since_record = self.since_record.saturating_add(n);
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    /// The list the contacts were added to.
    pub list_id: ListId,
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
    /// The header row breaks a contact rule (too many attribute columns, a bad column
    /// name): every row would, so the file is refused whole.
    #[error("the header row of {path}: {violation}")]
    Header { path: String, violation: Violation },
    /// A row far over [`MAX_ROW_BYTES`]: the CSV reader cannot skip it without holding it
    /// whole, so the import stops there; the rows before it are imported.
    #[error(
        "{path}, line {line}: the row is longer than {MAX_ROW_BYTES} bytes (rule max_row_bytes), so the import stopped at this line; the rows before it were imported: shorten or remove that row and import the file again (rows imported again are updated, not duplicated)"
    )]
    RowTooLong { path: String, line: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Imports `path` into the list `list_name` (created if needed). `on_reject` receives each
/// bad row's line number and reason; bad rows never stop the import.
pub async fn import_csv(
    store: &Store,
    org_id: OrgId,
    list_name: &str,
    path: &Path,
    on_reject: impl FnMut(u64, &str),
) -> Result<ImportReport, ImportError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| ImportError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    import_reader(store, org_id, list_name, &shown, file, on_reject).await
}

/// What the parsing thread hands to the writer.
pub enum Parsed {
    /// The header row has an `address` column: rows follow.
    Header,
    Rows {
        contacts: Vec<ContactInput>,
        rejects: Vec<(u64, String)>,
    },
    /// The whole input was read.
    Done,
}

/// Imports the CSV read from `reader` (named `source` in errors) into the list `list_name`,
/// created once the header row is known to be right. `on_reject` receives each bad row's
/// line number and reason, in order; bad rows never stop the import, an unreadable input
/// does (the batches before it stay imported).
pub async fn import_reader<R>(
    store: &Store,
    org_id: OrgId,
    list_name: &str,
    source: &str,
    reader: R,
    mut on_reject: impl FnMut(u64, &str),
) -> Result<ImportReport, ImportError>
where
    R: Read + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(2);
    let shown = source.to_string();
    // Detached: if the writer stops early, dropping `rx` makes the parser's next send fail
    // and it returns.
    let _parser = tokio::task::spawn_blocking(move || parse(reader, &shown, &tx));
    let unreadable = |reason: &str| ImportError::Unreadable {
        path: source.to_string(),
        reason: reason.to_string(),
    };
    // The list exists once the header is read; the parser sends rows only after it.
    let mut list_id = None;
    let (mut imported, mut updated, mut rejected) = (0, 0, 0);
    while let Some(parsed) = rx.recv().await {
        match parsed? {
            Parsed::Header => list_id = Some(store.ensure_list(org_id, list_name).await?),
            Parsed::Rows { contacts, rejects } => {
                for (line, reason) in &rejects {
                    rejected += 1;
                    on_reject(*line, reason);
                }
                if !contacts.is_empty() {
                    let list = list_id.ok_or_else(|| unreadable("rows came before the header"))?;
                    let r = store.upsert_contacts(org_id, list, &contacts).await?;
                    imported += r.inserted;
                    updated += r.updated;
                }
            }
            Parsed::Done => {
                let list_id = list_id.ok_or_else(|| unreadable("the input has no header row"))?;
                return Ok(ImportReport {
                    list_id,
                    imported,
                    updated,
                    rejected,
                });
            }
        }
    }
    Err(unreadable("the import stopped before the end of the input"))
}

pub type ParsedTx = mpsc::Sender<Result<Parsed, ImportError>>;

/// Runs on a blocking thread. Returns when the input ends, on an unreadable input, or when
/// the writer is gone.
pub fn parse<R: Read>(reader: R, shown: &str, tx: &ParsedTx) {
    let send = |m: Result<Parsed, ImportError>| tx.blocking_send(m).is_ok();
    let unreadable = |e: &dyn std::fmt::Display| ImportError::Unreadable {
        path: shown.to_string(),
        reason: e.to_string(),
    };
    // The csv reader buffers its input itself (READ_BUFFER), over the row cap.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .buffer_capacity(READ_BUFFER)
        .from_reader(RowCapReader::new(reader));
    let headers = reader
        .headers()
        .map(|h| h.iter().map(|h| h.trim().to_string()).collect::<Vec<_>>());
    let headers: Vec<String> = match headers {
        Ok(h) => h,
        Err(_) if reader.get_ref().tripped => {
            send(Err(ImportError::Header {
                path: shown.to_string(),
                violation: Violation {
                    field: "header".into(),
                    rule: "max_row_bytes",
                    detail: format!(
                        "longer than {MAX_ROW_BYTES} bytes, far more than {} attribute columns need",
                        contact_rules::MAX_ATTRIBUTES
                    ),
                },
            }));
            return;
        }
        Err(e) => {
            send(Err(unreadable(&e)));
            return;
        }
    };
    if let Some(column) = headers.iter().position(|h| h.contains('\0')) {
        // Header names become attribute names, which PostgreSQL cannot store with a NUL.
        send(Err(unreadable(&format!(
            "column {} of the header row holds a NUL character; remove it",
            column + 1
        ))));
        return;
    }
    reader.get_mut().start_record();
    let lower: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    let Some(address_col) = lower.iter().position(|h| h == "address") else {
        send(Err(ImportError::NoAddressColumn {
            path: shown.to_string(),
            found: headers.join(", "),
        }));
        return;
    };
    let name_col = lower.iter().position(|h| h == "name");
    let unsub_col = lower.iter().position(|h| h == "unsubscribed");
    let attribute_cols: Vec<&String> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != address_col && Some(*i) != name_col && Some(*i) != unsub_col)
        .map(|(_, h)| h)
        .collect();
    let header_rules = contact_rules::check_attribute_count(attribute_cols.len()).and_then(|()| {
        attribute_cols
            .iter()
            .try_for_each(|h| contact_rules::check_attribute_key(h))
    });
    if let Err(violation) = header_rules {
        send(Err(ImportError::Header {
            path: shown.to_string(),
            violation,
        }));
        return;
    }
    if !send(Ok(Parsed::Header)) {
        return;
    }
    let mut contacts: Vec<ContactInput> = Vec::with_capacity(BATCH);
    let mut rejects: Vec<(u64, String)> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        // Where the reader stands: the line the next record starts on (blank lines aside).
        let line = reader.position().line();
        let read = reader.read_record(&mut record);
        reader.get_mut().start_record();
        match read {
            Ok(false) => break,
            Ok(true) => {}
            Err(_) if reader.get_ref().tripped => {
                // The parser is mid-row and cannot resync: keep the rows before this one
                // (as an unreadable input does) and stop, naming the line.
                if send(Ok(Parsed::Rows { contacts, rejects })) {
                    send(Err(ImportError::RowTooLong {
                        path: shown.to_string(),
                        line,
                    }));
                }
                return;
            }
            Err(e) => {
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    send(Err(unreadable(&e)));
                    return;
                }
                // The position before the read is that of the previous record's end: the
                // error knows the row's own line.
                let line = e.position().map_or(line, |p| p.line());
                rejects.push((line, format!("unreadable row: {e}")));
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(line);
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        if record.as_slice().len() > MAX_ROW_BYTES {
            rejects.push((
                line,
                format!(
                    "the row is longer than {MAX_ROW_BYTES} bytes (rule max_row_bytes); no contact needs that much"
                ),
            ));
        } else if let Some(column) = record.iter().position(|f| f.contains('\0')) {
            // PostgreSQL cannot store a NUL character, and no address book needs one.
            rejects.push((
                line,
                format!(
                    "column `{}` holds a NUL character; remove it",
                    headers.get(column).map(String::as_str).unwrap_or("?")
                ),
            ));
        } else if record.len() != headers.len() {
            rejects.push((
                line,
                format!(
                    "has {} fields but the header has {}",
                    record.len(),
                    headers.len()
                ),
            ));
        } else {
            match parse_row(&record, &headers, address_col, name_col, unsub_col) {
                Ok(contact) => contacts.push(contact),
                Err(reason) => rejects.push((line, reason)),
            }
        }
        if contacts.len() >= BATCH || rejects.len() >= BATCH {
            let rows = Parsed::Rows {
                contacts: std::mem::replace(&mut contacts, Vec::with_capacity(BATCH)),
                rejects: std::mem::take(&mut rejects),
            };
            if !send(Ok(rows)) {
                return;
            }
        }
    }
    if send(Ok(Parsed::Rows { contacts, rejects })) {
        send(Ok(Parsed::Done));
    }
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
    let name = contact_rules::check_name(name_col.and_then(|i| record.get(i)))
        .map_err(|v| v.to_string())?;
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
    // The same rules as `POST /contacts`, so an import stores nothing the API refuses.
    contact_rules::check_attributes(&attributes).map_err(|v| v.to_string())?;
    Ok(ContactInput {
        address,
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
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the bytes the parser pulls from its input.
    struct Counting<R> {
        inner: R,
        pulled: Arc<AtomicUsize>,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.pulled.fetch_add(n, Ordering::SeqCst);
            Ok(n)
        }
    }

    // The attack: a 50 MB name and a 5 MB cell on one line each. The csv crate
    // buffers a whole record, so before the row cap sat under it the parser pulled (and
    // held) all 50 MB only to reject the row at the end. Now it stops one cap and a buffer
    // into the row, keeps the row before it and names the line and the rule.
    #[test]
    fn a_huge_row_stops_the_parser_before_it_is_buffered() {
        let head = "address,name,city\n+14155550100,Ada,Paris\n";
        let cases = [
            ("50 MB name", "+14155550101,", 50 << 20, ",Rome\n"),
            ("5 MB cell", "+14155550101,Eve,", 5 << 20, "\n"),
        ];
        for (label, before, filler, after) in cases {
            let pulled = Arc::new(AtomicUsize::new(0));
            let input = Counting {
                inner: head
                    .as_bytes()
                    .chain(before.as_bytes())
                    .chain(std::io::repeat(b'x').take(filler))
                    .chain(after.as_bytes())
                    .chain(&b"+14155550102,Bob,Oslo\n"[..]),
                pulled: pulled.clone(),
            };
            let (tx, mut rx) = mpsc::channel(16);
            parse(input, "contacts.csv", &tx);
            drop(tx);
            let mut imported = Vec::new();
            let mut stopped_at = None;
            while let Ok(parsed) = rx.try_recv() {
                match parsed {
                    Ok(Parsed::Header) => {}
                    Ok(Parsed::Rows { contacts, rejects }) => {
                        assert!(rejects.is_empty(), "{label}: {rejects:?}");
                        imported.extend(contacts.into_iter().map(|c| c.address));
                    }
                    Ok(Parsed::Done) => panic!("{label}: the parser read past the huge row"),
                    Err(ImportError::RowTooLong { line, .. }) => stopped_at = Some(line),
                    Err(e) => panic!("{label}: {e}"),
                }
            }
            assert_eq!(imported, ["+14155550100"], "{label}");
            assert_eq!(stopped_at, Some(3), "{label}");
            let pulled = pulled.load(Ordering::SeqCst);
            assert!(
                pulled <= ROW_HARD_LIMIT + 2 * READ_BUFFER,
                "{label}: the parser pulled {pulled} bytes"
            );
        }
    }

    #[test]
    fn booleans_accept_common_spellings() {
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
