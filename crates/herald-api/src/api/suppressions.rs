//! The organisation's suppression list: addresses no campaign sends to (opt-outs, hard
//! bounces, and those added here). Pages are ordered by address; the cursor holds the last
//! address of the previous page.

use super::auth::{AsEditor, AsViewer};
use super::contacts::check_address;
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Problem};
use super::{ApiState, PageParams, timestamp};
use crate::address::Address;
use crate::store::directory::SuppressionRow;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_suppressions, create_suppression))
        .routes(routes!(delete_suppression))
}

const MAX_REASON: usize = 500;
const DEFAULT_REASON: &str = "added through the API";

#[derive(Debug, Serialize, ToSchema)]
pub struct Suppression {
    #[schema(example = "+14155550100")]
    pub address: String,
    #[schema(example = "asked by phone not to be contacted")]
    pub reason: String,
    pub created_at: String,
}

impl From<SuppressionRow> for Suppression {
    fn from(s: SuppressionRow) -> Suppression {
        Suppression {
            address: s.address,
            reason: s.reason,
            created_at: timestamp(s.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Suppressions {
    pub items: Vec<Suppression>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    /// A phone number (E.164 after normalisation) or an email address.
    #[schema(example = "+14155550100")]
    pub address: String,
    /// Why (at most 500 characters); kept as it was when omitted for a known address.
    pub reason: Option<String>,
}

fn cursor_for(address: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{address}"))
}

/// The last address of the previous page ("" for the first page).
fn after_address(page: &PageParams) -> ApiResult<String> {
    let Some(cursor) = &page.cursor else {
        return Ok(String::new());
    };
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("after:").map(str::to_string))
        .filter(|s| !s.contains('\0'))
        .ok_or_else(|| ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid-cursor",
            title: "The cursor is not valid",
            ..ApiError::invalid(
                "cursor",
                "format",
                "pass back the `next_cursor` of a previous page unchanged",
            )
        })
}

/// An address as a URL path segment.
fn path_segment(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    for b in address.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@+!$&'()*,;=:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Suppressed addresses, in address order.
#[utoipa::path(get, path = "/suppressions", tag = "suppressions",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(PageParams),
    responses(
        (status = 200, body = Suppressions),
    ))]
async fn list_suppressions(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<Suppressions>> {
    let limit = page.limit()?;
    let after = after_address(&page)?;
    let mut rows = state
        .store
        .org_suppressions(p.org_id, &after, limit + 1)
        .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        rows.last().map(|r| cursor_for(&r.address))
    } else {
        None
    };
    Ok(axum::Json(Suppressions {
        items: rows.into_iter().map(Suppression::from).collect(),
        next_cursor,
    }))
}

/// Suppress an address: no campaign will send to it. Suppressing it again is not an error
/// (200; a given reason replaces the old one).
#[utoipa::path(post, path = "/suppressions", tag = "suppressions",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect")),
    request_body = NewSuppression,
    responses(
        (status = 201, description = "Suppressed", body = Suppression, headers(("Location" = String, description = "The suppression"))),
        (status = 200, description = "Already suppressed", body = Suppression),
    ))]
async fn create_suppression(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiJson(body): ApiJson<NewSuppression>,
) -> ApiResult<Response> {
    let address = check_address("address", &body.address)?;
    let reason = match body.reason.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) if r.chars().count() > MAX_REASON => {
            return Err(ApiError::invalid(
                "reason",
                "max_length",
                format!("must be at most {MAX_REASON} characters"),
            ));
        }
        Some(r) if r.chars().any(char::is_control) => {
            return Err(ApiError::invalid(
                "reason",
                "format",
                "must not contain control characters",
            ));
        }
        Some(r) => Some(r.to_string()),
    };
    let (row, created) = state
        .store
        .upsert_org_suppression(
            p.org_id,
            address.as_str(),
            reason.as_deref(),
            DEFAULT_REASON,
        )
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        address = row.address,
        actor = p.actor,
        created,
        "address suppressed"
    );
    let location = format!("/api/v1/suppressions/{}", path_segment(&row.address));
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::LOCATION, location)],
        axum::Json(Suppression::from(row)),
    )
        .into_response())
}

/// Lift a suppression: campaigns may send to the address again.
#[utoipa::path(delete, path = "/suppressions/{address}", tag = "suppressions",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("address" = String, Path, description = "The address, URL-encoded (normalised like on creation)")),
    responses(
        (status = 204, description = "No longer suppressed"),
        (status = 404, description = "The address is not suppressed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_suppression(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(address): ApiPath<String>,
) -> ApiResult<StatusCode> {
    // Suppressions hold normalised addresses; one that does not parse is looked up as given.
    let address = Address::parse(&address)
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|_| address.trim().to_string());
    if !state
        .store
        .unsuppress(p.org_id, &address, &crate::store::OptSource::API)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "the address `{address}` is not suppressed"
        )));
    }
    tracing::info!(
        org_id = %p.org_id,
        address,
        actor = p.actor,
        "suppression lifted"
    );
    Ok(StatusCode::NO_CONTENT)
}
