//! CSV exports of a campaign's messages, of the contacts and of the suppression list
//! (docs/CAMPAIGNS.md). An [`Export`] reads one keyset page at a time and turns it into
//! one chunk of CSV, so the CLI writes a file and the API streams a response in constant
//! memory however many rows there are, and no page holds a database connection while the
//! reader is slow.
//!
//! Every cell that a spreadsheet would run as a formula is neutralised ([`neutralise`]):
//! a contact's name or a provider's error text is data from outside.

use crate::clock::rfc3339;
use crate::ids::{CampaignId, ContactId, ListId, MessageId, OrgId};
use crate::store::directory::{ContactFilter, ContactRow, SuppressionRow};
use crate::store::{ExportedMessage, Store, StoreError};
use std::borrow::Cow;
use std::collections::HashMap;

/// Rows read and written per chunk.
pub const PAGE_ROWS: i64 = 1000;

/// The columns of a campaign's message export, in order.
pub const MESSAGE_COLUMNS: &[&str] = &[
    "message_id",
    "address",
    "contact_id",
    "contact_name",
    "status",
    "error_code",
    "error_reason",
    "error_detail",
    "attempts",
    "provider_id",
    "was_in_doubt",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "link_clicks",
    "first_clicked_at",
    "clicks_by_link",
    "updated_at",
];

/// The columns of the contacts export, in order.
pub const CONTACT_COLUMNS: &[&str] = &[
    "contact_id",
    "address",
    "name",
    "subscribed",
    "unsubscribed",
    "suppressed",
    "suppression_reason",
    "lists",
    "attributes",
    "created_at",
    "updated_at",
];

/// The columns of the suppressions export, in order.
pub const SUPPRESSION_COLUMNS: &[&str] = &["address", "reason", "created_at"];

/// A cell as a spreadsheet may safely open it. Excel, LibreOffice and Google Sheets run a
/// cell that begins with `=`, `+`, `-` or `@` (or a tab or carriage return before one)
/// as a formula, so such a cell gets a leading apostrophe, which they show as text
/// (OWASP "CSV injection"). A plain number (`+15551234567`, `-3`, `2.5`) is left as it
/// is: a spreadsheet reads it as the same number, and a phone number stays greppable.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    let Some(first) = cell.chars().next() else {
        return Cow::Borrowed(cell);
    };
    if !matches!(first, '=' | '+' | '-' | '@' | '\t' | '\r') {
        return Cow::Borrowed(cell);
    }
    let rest = cell.strip_prefix(['+', '-']).unwrap_or(cell);
    let plain_number = !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && rest.bytes().filter(|b| *b == b'.').count() <= 1
        && rest.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if plain_number {
        Cow::Borrowed(cell)
    } else {
        Cow::Owned(format!("'{cell}"))
    }
}

fn time(ms: Option<i64>) -> String {
    ms.map(rfc3339).unwrap_or_default()
}

/// CSV of `records`, every cell neutralised; with the header row first when `header`.
fn csv_chunk(header: Option<&[&str]>, records: &[Vec<String>]) -> Vec<u8> {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(records.len() * 160 + 256));
    // Writing to a Vec cannot fail, and every record has the header's length.
    if let Some(header) = header {
        let _ = out.write_record(header);
    }
    for record in records {
        let _ = out.write_record(record.iter().map(|c| neutralise(c).into_owned()));
    }
    out.into_inner().unwrap_or_default()
}

/// A message's clicks per link, as `URL (N)` joined by `; ` in the links' order: each
/// link named by its target, which the campaign's `links` map from positions.
fn clicks_by_link(m: &ExportedMessage, links: &HashMap<i64, String>) -> String {
    m.link_clicks
        .iter()
        .map(|l| match links.get(&l.position) {
            Some(url) => format!("{url} ({})", l.clicks),
            None => format!("link {} ({})", l.position, l.clicks),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One message as a record of [`MESSAGE_COLUMNS`]; `links` maps its campaign's tracked
/// link positions to their targets.
pub fn message_record(m: &ExportedMessage, links: &HashMap<i64, String>) -> Vec<String> {
    let error = crate::reasons::shown(m.status, m.last_error.as_deref());
    let (code, reason, detail) = match error {
        Some(e) => (e.code, e.reason, m.last_error.clone().unwrap_or_default()),
        None => Default::default(),
    };
    vec![
        m.id.to_string(),
        m.address.clone(),
        m.contact_id.map(|c| c.to_string()).unwrap_or_default(),
        m.contact_name.clone().unwrap_or_default(),
        m.status.as_str().to_string(),
        code,
        reason,
        detail,
        m.attempts.to_string(),
        m.provider_id.clone().unwrap_or_default(),
        m.was_in_doubt.to_string(),
        time(m.sent_at),
        time(m.delivered_at),
        time(m.read_at),
        time(m.failed_at),
        m.clicks.to_string(),
        time(m.first_clicked_at),
        clicks_by_link(m, links),
        time(Some(m.updated_at)),
    ]
}

fn contact_record(c: &ContactRow, list_names: &HashMap<ListId, String>) -> Vec<String> {
    let lists: Vec<&str> = c
        .list_ids
        .iter()
        .filter_map(|id| list_names.get(id).map(String::as_str))
        .collect();
    let suppressed = c.suppression.is_some();
    vec![
        c.id.to_string(),
        c.address.to_string(),
        c.name.clone().unwrap_or_default(),
        (!c.unsubscribed && !suppressed).to_string(),
        c.unsubscribed.to_string(),
        suppressed.to_string(),
        c.suppression
            .as_ref()
            .map(|s| s.reason.clone())
            .unwrap_or_default(),
        lists.join("; "),
        serde_json::to_string(&c.attributes).unwrap_or_default(),
        time(Some(c.created_at)),
        time(Some(c.updated_at)),
    ]
}

fn suppression_record(s: &SuppressionRow) -> Vec<String> {
    vec![
        s.address.clone(),
        s.reason.clone(),
        time(Some(s.created_at)),
    ]
}

/// What an [`Export`] reads.
#[derive(Debug, Clone)]
pub enum ExportOf {
    /// One campaign's messages, in message id order.
    CampaignMessages(CampaignId),
    /// The contacts, in id order, optionally filtered as the contacts page filters them.
    Contacts(ContactFilter),
    /// The suppression list, in address order.
    Suppressions,
}

#[derive(Debug, Clone)]
enum Cursor {
    Message(MessageId),
    Contact(ContactId),
    Address(String),
}

/// An export in progress: [`Export::next_chunk`] returns the next chunk of CSV (the first
/// one starts with the header row, so an empty export is the header alone) until `None`.
pub struct Export {
    store: Store,
    org_id: OrgId,
    of: ExportOf,
    cursor: Cursor,
    header_written: bool,
    done: bool,
    rows: u64,
    list_names: Option<HashMap<ListId, String>>,
    /// The campaign's tracked links by position, read with the first page.
    link_urls: Option<HashMap<i64, String>>,
}

impl Export {
    /// An export of `of`, scoped to the organisation. The caller checks that a campaign or
    /// list it names belongs to the organisation (another's reads as no rows).
    pub fn new(store: Store, org_id: OrgId, of: ExportOf) -> Export {
        let cursor = match &of {
            ExportOf::CampaignMessages(_) => Cursor::Message(MessageId(0)),
            ExportOf::Contacts(_) => Cursor::Contact(ContactId(0)),
            ExportOf::Suppressions => Cursor::Address(String::new()),
        };
        Export {
            store,
            org_id,
            of,
            cursor,
            header_written: false,
            done: false,
            rows: 0,
            list_names: None,
            link_urls: None,
        }
    }

    /// Data rows written so far (the header not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn columns(&self) -> &'static [&'static str] {
        match self.of {
            ExportOf::CampaignMessages(_) => MESSAGE_COLUMNS,
            ExportOf::Contacts(_) => CONTACT_COLUMNS,
            ExportOf::Suppressions => SUPPRESSION_COLUMNS,
        }
    }

    /// The next chunk of CSV, or `None` once every row was returned.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let records = self.next_records().await?;
        if (records.len() as i64) < PAGE_ROWS {
            self.done = true;
        }
        self.rows += records.len() as u64;
        let header = (!self.header_written).then(|| self.columns());
        self.header_written = true;
        if header.is_none() && records.is_empty() {
            return Ok(None);
        }
        Ok(Some(csv_chunk(header, &records)))
    }

    async fn next_records(&mut self) -> Result<Vec<Vec<String>>, StoreError> {
        let store = &self.store;
        match (&self.of, &mut self.cursor) {
            (ExportOf::CampaignMessages(campaign), Cursor::Message(after)) => {
                if self.link_urls.is_none() {
                    let links = store.campaign_links(self.org_id, *campaign).await?;
                    self.link_urls = Some(links.into_iter().map(|l| (l.position, l.url)).collect());
                }
                let links = self.link_urls.get_or_insert_with(HashMap::new);
                let page = store
                    .export_campaign_messages(self.org_id, *campaign, *after, PAGE_ROWS)
                    .await?;
                if let Some(last) = page.last() {
                    *after = last.id;
                }
                Ok(page.iter().map(|m| message_record(m, links)).collect())
            }
            (ExportOf::Contacts(filter), Cursor::Contact(after)) => {
                if self.list_names.is_none() {
                    self.list_names = Some(all_list_names(store, self.org_id).await?);
                }
                let page = store
                    .org_contacts(self.org_id, filter, *after, PAGE_ROWS)
                    .await?;
                if let Some(last) = page.last() {
                    *after = last.id;
                }
                let names = self.list_names.as_ref();
                Ok(page
                    .iter()
                    .map(|c| contact_record(c, names.unwrap_or(&HashMap::new())))
                    .collect())
            }
            (ExportOf::Suppressions, Cursor::Address(after)) => {
                let page = store
                    .org_suppressions(self.org_id, after, PAGE_ROWS)
                    .await?;
                if let Some(last) = page.last() {
                    after.clone_from(&last.address);
                }
                Ok(page.iter().map(suppression_record).collect())
            }
            _ => Err(StoreError::Corrupt(
                "an export's cursor does not match what it exports".into(),
            )),
        }
    }
}

/// Every list's name, for the contacts export's `lists` column.
async fn all_list_names(
    store: &Store,
    org_id: OrgId,
) -> Result<HashMap<ListId, String>, StoreError> {
    let mut names = HashMap::new();
    let mut after = ListId(0);
    loop {
        let page = store.org_lists(org_id, after, PAGE_ROWS).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let full = page.len() as i64 == PAGE_ROWS;
        names.extend(page.into_iter().map(|l| (l.id, l.name)));
        if !full {
            break;
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::neutralise;

    #[test]
    fn formula_cells_are_neutralised_and_plain_numbers_kept() {
        for attack in [
            "=HYPERLINK(\"http://evil\",\"click\")",
            "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd|' /C calc'!A0",
            "\t=1+1",
            "\r=1+1",
            "+",
            "-",
            "+1.2.3",
            "-.5",
        ] {
            assert_eq!(neutralise(attack), format!("'{attack}"), "{attack:?}");
        }
        for plain in [
            "+15551234567",
            "-3",
            "2.5",
            "hello",
            "",
            "a=b",
            "ana@example.com",
        ] {
            assert_eq!(neutralise(plain), plain, "{plain:?}");
        }
    }
}
