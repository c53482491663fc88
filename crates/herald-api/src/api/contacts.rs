//! Contacts of the caller's organisation: search, create, change, delete, and CSV import
//! streamed straight from the request body into the store in batches.

use super::auth::{AsEditor, AsViewer};
use super::check_name;
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Problem};
use super::{ApiState, Page, PageParams, decode, timestamp};
use crate::address::Address;
use crate::ids::{ContactId, ListId, OrgId};
use crate::import::{ImportError, import_reader};
use crate::store::directory::{
    Attributes, ContactChange, ContactFilter, ContactRow, NewContact, OrgRow,
};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(import_contacts))
        .routes(routes!(get_contact, update_contact, delete_contact))
}

/// The largest CSV upload accepted.
pub const IMPORT_BODY_LIMIT: u64 = 100 * 1024 * 1024;
/// Rejected rows listed in an import report (all of them are counted).
pub const IMPORT_ERRORS_SHOWN: usize = 1000;
const MAX_LIST_IDS: usize = 100;
const MAX_QUERY: usize = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct Contact {
    #[schema(example = "con_1")]
    pub id: String,
    /// A phone number in E.164 form or an email address, normalised.
    #[schema(example = "+14155550100")]
    pub address: String,
    pub name: Option<String>,
    /// Values for templates: strings, numbers and booleans.
    #[schema(value_type = Object)]
    pub attributes: Attributes,
    /// Present, and true, only on a contact stored before today's contact rules whose
    /// attributes are too large to return: `attributes` is then `{}` (the stored values are
    /// kept; replace them with a PATCH). A name stored longer than the rules allow comes
    /// back cut, ending in `…`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub attributes_truncated: bool,
    pub unsubscribed: bool,
    /// Set when the address is on the organisation's suppression list (the recipient
    /// replied STOP, a bounce, a complaint, or added by hand): no campaign sends to it,
    /// whatever `unsubscribed` says. Null otherwise.
    pub suppressed: Option<ContactSuppression>,
    /// The lists the contact belongs to.
    #[schema(example = json!(["lst_1"]))]
    pub list_ids: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Why and since when a contact's address is suppressed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactSuppression {
    #[schema(
        example = "opted out at the provider: twilio 21610: Attempt to send to unsubscribed recipient"
    )]
    pub reason: String,
    /// When the address was suppressed.
    pub since: String,
}

impl From<ContactRow> for Contact {
    fn from(c: ContactRow) -> Contact {
        Contact {
            id: c.id.to_string(),
            address: c.address.to_string(),
            name: c.name,
            attributes: c.attributes,
            attributes_truncated: c.attributes_truncated,
            unsubscribed: c.unsubscribed,
            suppressed: c.suppression.map(|s| ContactSuppression {
                reason: s.reason,
                since: timestamp(s.created_at),
            }),
            list_ids: c.list_ids.into_iter().map(|l| l.to_string()).collect(),
            created_at: timestamp(c.created_at),
            updated_at: timestamp(c.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Contacts {
    pub items: Vec<Contact>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl From<Page<Contact>> for Contacts {
    fn from(p: Page<Contact>) -> Contacts {
        Contacts {
            items: p.items,
            next_cursor: p.next_cursor,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContactBody {
    /// A phone number (E.164 after normalisation) or an email address.
    #[schema(example = "+14155550100")]
    pub address: String,
    #[schema(example = "Ada Lovelace")]
    pub name: Option<String>,
    /// An object of strings, numbers and booleans (at most 100 keys).
    #[schema(value_type = Option<Object>, example = json!({"city": "London"}))]
    pub attributes: Option<serde_json::Value>,
    pub unsubscribed: Option<bool>,
    /// Lists to add the contact to.
    #[schema(example = json!(["lst_1"]))]
    pub list_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactChangeBody {
    /// A new name; null clears it.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// Replaces every attribute (`{}` removes them all).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
    pub unsubscribed: Option<bool>,
}

/// A present field (even `null`) is `Some`; an absent one stays `None` by `default`.
fn some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactQuery {
    /// Case-insensitive substring of the address or the name.
    pub q: Option<String>,
    /// Only members of this list.
    pub list_id: Option<String>,
    /// true: only contacts no campaign sends to, because they unsubscribed or their address
    /// is on the suppression list (a STOP reply, a bounce, a complaint); false: only the
    /// subscribed ones (neither).
    pub unsubscribed: Option<bool>,
    /// Only the contacts this segment filter matches (docs/SEGMENTS.md), for example
    /// `attributes.plan = "gold" and created since 30d`.
    #[param(max_length = 4000)]
    pub filter: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// The list to add the contacts to; created if it does not exist.
    #[param(example = "customers")]
    pub list: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RowError {
    /// The line of the CSV file (the header is line 1).
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    #[schema(example = "lst_1")]
    pub list_id: String,
    /// Contacts that did not exist before.
    pub inserted: u64,
    /// Existing contacts (by address) whose name and attributes were replaced.
    pub updated: u64,
    /// Rows that were not imported.
    pub rejected: u64,
    /// The first 1000 rejected rows and why.
    pub errors: Vec<RowError>,
    /// True when more rows were rejected than `errors` lists.
    pub truncated: bool,
}

// --------------------------------------------------------------------------------------
// Validation shared by contacts and lists
// --------------------------------------------------------------------------------------

/// A contact's optional name: blank means none. The rules are [`crate::contact_rules`],
/// shared with the CSV import.
fn check_contact_name(name: Option<&str>) -> ApiResult<Option<String>> {
    crate::contact_rules::check_name(name).map_err(broken_rule)
}

pub(super) fn check_address(field: &str, raw: &str) -> ApiResult<Address> {
    Address::parse(raw).map_err(|e| ApiError::invalid(field, "format", e.to_string()))
}

fn broken_rule(v: crate::contact_rules::Violation) -> ApiError {
    ApiError::invalid(&v.field, v.rule, v.detail)
}

fn check_attributes(value: Option<serde_json::Value>) -> ApiResult<Attributes> {
    let map = match value {
        None => return Ok(Attributes::new()),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::invalid(
                "attributes",
                "type",
                "must be an object of strings, numbers and booleans",
            ));
        }
    };
    crate::contact_rules::check_attributes(&map).map_err(broken_rule)?;
    Ok(map)
}

/// The opaque ids of `field` as typed ids of the caller's rows (lists, contacts); an id
/// that is malformed, unknown or another organisation's is named in a 422.
pub(super) async fn check_ids<T: OrgRow + PartialEq>(
    state: &ApiState,
    org_id: OrgId,
    field: &str,
    ids: &[String],
) -> ApiResult<Vec<T>> {
    let what = T::WHAT;
    let unknown = |id: &str| {
        ApiError::invalid(
            field,
            "exists",
            format!("there is no {what} `{id}` in this organisation"),
        )
    };
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let row = decode::<T>(id).map_err(|_| unknown(id))?;
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    let missing = state.store.unknown_org_ids(org_id, &rows).await?;
    if let Some(first) = missing.first() {
        return Err(unknown(&first.to_string()));
    }
    Ok(rows)
}

pub(super) fn invalid_query(field: &str, rule: &str, detail: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid-query",
        title: "A query parameter is not valid",
        ..ApiError::invalid(field, rule, detail)
    }
}

/// A `q` search parameter: trimmed, None when blank, at most [`MAX_QUERY`] characters, no
/// NUL (400 naming `q` otherwise). The contacts list and the inbox share it.
pub(super) fn search_text(q: Option<String>) -> ApiResult<Option<String>> {
    let q = q.map(|q| q.trim().to_string()).filter(|q| !q.is_empty());
    if q.as_ref().is_some_and(|q| q.chars().count() > MAX_QUERY) {
        return Err(invalid_query(
            "q",
            "max_length",
            format!("the search text is at most {MAX_QUERY} characters"),
        ));
    }
    if q.as_ref().is_some_and(|q| q.contains('\0')) {
        return Err(invalid_query("q", "format", "must not contain NUL"));
    }
    Ok(q)
}

/// The search of `GET /contacts` from its query parameters: the text trimmed and bounded,
/// the list id decoded (whether that list is the caller's is the handler's check).
pub fn contact_filter(query: ContactQuery) -> ApiResult<ContactFilter> {
    let q = search_text(query.q)?;
    let list_id = match &query.list_id {
        Some(id) => Some(decode::<ListId>(id)?),
        None => None,
    };
    let matching = match query.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            crate::contact_filter::parse(text)
                .map_err(|e| invalid_query("filter", "filter_syntax", e.to_string()))?,
        ),
    };
    Ok(ContactFilter {
        q,
        list_id,
        unsubscribed: query.unsubscribed,
        matching,
    })
}

/// A `filter` parameter's lists checked against the organisation (400 naming `filter`).
pub(super) async fn check_matching(
    state: &ApiState,
    org_id: OrgId,
    filter: &ContactFilter,
) -> ApiResult<()> {
    if let Some(matching) = &filter.matching {
        state
            .store
            .check_segment_filter(org_id, matching)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Invalid(m) => invalid_query("filter", "unknown_list", m),
                other => other.into(),
            })?;
    }
    Ok(())
}

/// One page of contacts matching `filter`.
pub(super) async fn contacts_page(
    state: &ApiState,
    org_id: OrgId,
    filter: &ContactFilter,
    page: &PageParams,
) -> ApiResult<Contacts> {
    let limit = page.limit()?;
    let after = page.after_id()?;
    let rows = state
        .store
        .org_contacts(org_id, filter, after, limit + 1)
        .await?;
    Ok(Page::from_rows(rows, limit, |c| c.id, Contact::from).into())
}

// --------------------------------------------------------------------------------------
// Handlers
// --------------------------------------------------------------------------------------

/// Contacts of the organisation, in creation order, optionally searched and filtered.
#[utoipa::path(get, path = "/contacts", tag = "contacts",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(PageParams, ContactQuery),
    responses(
        (status = 200, body = Contacts),
        (status = 400, description = "A query parameter is not valid (a `filter` that does not parse or names no list)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The `list_id` names no list", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_contacts(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(query): ApiQuery<ContactQuery>,
) -> ApiResult<axum::Json<Contacts>> {
    let filter = contact_filter(query)?;
    if let Some(list_id) = filter.list_id {
        state.store.org_list(p.org_id, list_id).await?;
    }
    check_matching(&state, p.org_id, &filter).await?;
    Ok(axum::Json(
        contacts_page(&state, p.org_id, &filter, &page).await?,
    ))
}

/// Create a contact. The address is normalised (E.164 or email); it must be new.
#[utoipa::path(post, path = "/contacts", tag = "contacts",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect")),
    request_body = NewContactBody,
    responses(
        (status = 201, body = Contact, headers(("Location" = String, description = "The new contact"))),
        (status = 409, description = "A contact with this address exists", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_contact(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiJson(body): ApiJson<NewContactBody>,
) -> ApiResult<Response> {
    let address = check_address("address", &body.address)?;
    let name = check_contact_name(body.name.as_deref())?;
    let attributes = check_attributes(body.attributes)?;
    let list_ids = body.list_ids.unwrap_or_default();
    if list_ids.len() > MAX_LIST_IDS {
        return Err(ApiError::invalid(
            "list_ids",
            "max_items",
            format!("at most {MAX_LIST_IDS} lists"),
        ));
    }
    let list_ids = check_ids::<ListId>(&state, p.org_id, "list_ids", &list_ids).await?;
    let contact = state
        .store
        .create_org_contact(
            p.org_id,
            &NewContact {
                address: address.clone(),
                name,
                attributes,
                unsubscribed: body.unsubscribed.unwrap_or(false),
                list_ids,
            },
        )
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        contact_id = %contact.id,
        actor = p.actor,
        "contact created"
    );
    let location = format!("/api/v1/contacts/{}", contact.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(Contact::from(contact)),
    )
        .into_response())
}

/// One contact.
#[utoipa::path(get, path = "/contacts/{id}", tag = "contacts",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Contact id")),
    responses(
        (status = 200, body = Contact),
    ))]
async fn get_contact(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<Contact>> {
    let id = decode::<ContactId>(&id)?;
    Ok(axum::Json(
        state.store.org_contact(p.org_id, id).await?.into(),
    ))
}

/// Change a contact's name, attributes (replaced as a whole) or unsubscribed flag.
#[utoipa::path(patch, path = "/contacts/{id}", tag = "contacts",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Contact id")),
    request_body = ContactChangeBody,
    responses(
        (status = 200, body = Contact),
    ))]
async fn update_contact(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ContactChangeBody>,
) -> ApiResult<axum::Json<Contact>> {
    let id = decode::<ContactId>(&id)?;
    let change = ContactChange {
        name: match body.name {
            None => None,
            Some(n) => Some(check_contact_name(n.as_deref())?),
        },
        attributes: match body.attributes {
            None => None,
            Some(a) => Some(check_attributes(Some(a))?),
        },
        unsubscribed: body.unsubscribed,
    };
    let contact = state
        .store
        .update_org_contact(p.org_id, id, &change)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        contact_id = %id,
        actor = p.actor,
        "contact changed"
    );
    Ok(axum::Json(contact.into()))
}

/// Delete a contact and remove it from its lists. Messages already sent keep their address.
#[utoipa::path(delete, path = "/contacts/{id}", tag = "contacts",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Contact id")),
    responses(
        (status = 204, description = "Deleted"),
    ))]
async fn delete_contact(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = decode::<ContactId>(&id)?;
    state.store.delete_org_contact(p.org_id, id).await?;
    tracing::info!(
        org_id = %p.org_id,
        contact_id = %id,
        actor = p.actor,
        "contact deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Import contacts from a CSV file into a list (created if needed). The body is streamed
/// and written in batches, so files of any size up to 100 MiB take little memory.
///
/// The header row must have an `address` column; a `name` column is the name, an
/// `unsubscribed` column (true/false) the flag, and every other column an attribute.
/// Existing contacts (by normalised address) are updated, never duplicated. Bad rows are
/// skipped and reported with their line numbers.
#[utoipa::path(post, path = "/contacts/import", tag = "contacts",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(
        ImportParams,
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    request_body(content = String, content_type = "text/csv", description = "A CSV file with a header row"),
    responses(
        (status = 200, body = ImportResult),
        (status = 413, description = "The file is larger than 100 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `text/csv`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No `address` column, a bad list name, a bad header row, or a row far over the row size limit (the import stops at it)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn import_contacts(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiQuery(params): ApiQuery<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<ImportResult>> {
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/csv"));
    if !is_csv {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "The body's media type is not accepted",
            "send the CSV file as the body with `Content-Type: text/csv`",
        ));
    }
    let list_name = check_name("list", &params.list)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > IMPORT_BODY_LIMIT) {
        return Err(import_too_large(false));
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(8);
    let pump = AbortOnDrop(tokio::spawn(pump_body(body, tx, exceeded.clone())));
    let mut errors: Vec<RowError> = Vec::new();
    let mut truncated = false;
    let outcome = import_reader(
        &state.store,
        p.org_id,
        &list_name,
        "the uploaded CSV",
        ChunkReader {
            rx,
            chunk: Bytes::new(),
        },
        |line, reason| {
            if errors.len() < IMPORT_ERRORS_SHOWN {
                errors.push(RowError {
                    line,
                    reason: reason.to_string(),
                });
            } else {
                truncated = true;
            }
        },
    )
    .await;
    drop(pump);
    let report = match outcome {
        Ok(r) => r,
        Err(ImportError::Store(e)) => return Err(e.into()),
        Err(ImportError::NoAddressColumn { found, .. }) => {
            return Err(ApiError::invalid(
                "address",
                "required",
                format!(
                    "the header row has no `address` column (found: {found}); add a column named address holding phone numbers (E.164) or emails"
                ),
            ));
        }
        Err(ImportError::Header { violation, .. }) => {
            return Err(ApiError::invalid(
                &violation.field,
                violation.rule,
                format!("the header row: {}", violation.detail),
            ));
        }
        Err(ImportError::RowTooLong { line, .. }) => {
            return Err(ApiError::invalid(
                "body",
                "max_row_bytes",
                format!(
                    "line {line} is longer than {} bytes, so the import stopped there; the rows before it were imported: shorten or remove that row and upload the file again (rows imported again are updated, not duplicated)",
                    crate::import::MAX_ROW_BYTES
                ),
            ));
        }
        Err(ImportError::Unreadable { reason, .. }) => {
            if exceeded.load(Ordering::SeqCst) {
                return Err(import_too_large(true));
            }
            return Err(ApiError::bad_request(
                "unreadable-body",
                format!("the CSV could not be read: {reason}"),
            ));
        }
    };
    tracing::info!(
        org_id = %p.org_id,
        list_id = %report.list_id,
        actor = p.actor,
        inserted = report.imported,
        updated = report.updated,
        rejected = report.rejected,
        "contacts imported"
    );
    Ok(axum::Json(ImportResult {
        list_id: report.list_id.to_string(),
        inserted: report.imported,
        updated: report.updated,
        rejected: report.rejected,
        errors,
        truncated,
    }))
}

fn import_too_large(partly: bool) -> ApiError {
    let mut detail = format!(
        "CSV uploads are limited to {} MiB; split the file and upload the parts",
        IMPORT_BODY_LIMIT / (1024 * 1024)
    );
    if partly {
        detail.push_str(
            " (the rows before the limit were imported; importing them again updates them, it does not duplicate them)",
        );
    }
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "The body is too large",
        detail,
    )
}

/// Aborts the task when the request is done (or dropped because the client went away).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Chunk = std::io::Result<Bytes>;

/// Forwards the request body to the parser chunk by chunk, up to the upload limit.
async fn pump_body(mut body: Body, tx: mpsc::Sender<Chunk>, exceeded: Arc<AtomicBool>) {
    let mut total: u64 = 0;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => return,
            Some(Err(e)) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers carry no CSV.
                Err(_) => continue,
            },
        };
        total = total.saturating_add(data.len() as u64);
        if total > IMPORT_BODY_LIMIT {
            exceeded.store(true, Ordering::SeqCst);
            let _ = tx
                .send(Err(std::io::Error::other("the upload limit was exceeded")))
                .await;
            return;
        }
        if tx.send(Ok(data)).await.is_err() {
            return;
        }
    }
}

/// The body chunks as a blocking `Read`, for the CSV parser's thread.
struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    chunk: Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}
