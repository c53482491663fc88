//! The public HTTP API under `/api/v1`: what a customer's system and the dashboard use.
//!
//! Conventions, enforced here once for every route:
//! - callers authenticate with an API key (`Authorization: Bearer`) or a session cookie
//!   (writes then need the `X-CSRF-Token` header); each handler names the lowest role it
//!   accepts through its extractor (`AsViewer`, `AsEditor`, `AsAdmin`, `AsOwner`) and the
//!   same role as the OpenAPI security scope;
//! - every query is scoped to the caller's organisation: another organisation's resource
//!   is "not found" (404), never "forbidden";
//! - errors are `application/problem+json` with a stable `type` (`problem.rs`);
//! - `Idempotency-Key` is honoured on every POST (`idempotency.rs`);
//! - lists are paginated with opaque cursors; ids are opaque strings; times are RFC 3339 UTC.
//!
//! The router and the OpenAPI document are built together (`utoipa_axum`), so a route
//! cannot exist without its documentation, and `docs/openapi.json` is checked against the
//! generated document by the test suite.

pub mod auth;
// Security primitives live below the API (the CLI and the dashboard use them too).
pub use crate::credentials;
pub mod idempotency;
pub mod problem;

mod accounts;
pub mod alerts;
mod campaign_clicks;
pub mod campaign_derive;
mod campaign_email;
mod campaign_estimate;
mod campaign_events;
mod campaigns;
pub mod channels;
pub mod contacts;
mod exports;
pub mod lists;
mod organisation;
pub mod replies;
mod rules;
mod suppressions;
mod system;
pub mod webhooks;

pub use crate::app_state::AppState as ApiState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use problem::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

/// The largest JSON body accepted (CSV uploads stream and have their own limit).
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald API",
        description = "Bulk messaging campaigns that never lose track. Every route is scoped to the caller's organisation. Errors are RFC 9457 problem documents; POSTs honour Idempotency-Key; lists use cursor pagination.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(schemas(problem::Problem, problem::FieldError)),
    tags(
        (name = "auth", description = "Sign in and out, and who is calling"),
        (name = "contacts", description = "Contacts and CSV import"),
        (name = "lists", description = "Lists and their members"),
        (name = "suppressions", description = "Addresses never to send to"),
        (name = "channels", description = "Providers to send through"),
        (name = "campaigns", description = "Campaigns, their messages, audit trail and live events"),
        (name = "system", description = "Instances and health"),
        (name = "accounts", description = "Users and API keys"),
        (name = "webhooks", description = "Endpoints Herald sends its events to, their delivery log, replays and test events"),
        (name = "alerts", description = "Who is told when a campaign is stuck or a channel is down, and the alerts sent"),
        (name = "replies", description = "The replies inbox: inbound SMS and WhatsApp messages as conversations"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`hk_…`); the scope is the lowest role the route accepts",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                auth::SESSION_COOKIE,
                "The session cookie from POST /auth/login; writes also need the X-CSRF-Token header",
            ))),
        );
    }
}

/// Every route of the API with its documentation, before the shared layers.
fn documented_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(
        "/api/v1",
        OpenApiRouter::new()
            .merge(auth::routes())
            .merge(contacts::routes())
            .merge(lists::routes())
            .merge(suppressions::routes())
            .merge(channels::routes())
            .merge(campaigns::routes())
            .merge(campaign_events::routes())
            .merge(exports::routes())
            .merge(campaign_derive::routes())
            .merge(campaign_estimate::routes())
            .merge(system::routes())
            .merge(accounts::routes())
            .merge(webhooks::routes())
            .merge(alerts::routes())
            .merge(organisation::routes())
            .merge(replies::routes()),
    )
}

/// The OpenAPI 3.1 document of the API, generated from the handlers.
pub fn openapi() -> serde_json::Value {
    let (_, doc) = documented_routes().split_for_parts();
    with_shared_responses(rules::state_rules(
        serde_json::to_value(doc).unwrap_or_default(),
    ))
}

/// The document as `herald openapi` prints it and `docs/openapi.json` holds it.
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&openapi()).unwrap_or_default() + "\n"
}

/// Adds to every operation the problem responses the shared layers can give, so that each
/// handler documents only its own: 400/413/415/422 where there is a body, 400 where there
/// are query parameters, 404 where there is a path parameter, 401/403 where credentials
/// are needed (403 also for a missing CSRF token on writes), 409/422 for idempotency keys
/// on POST, and 503 when the database does not answer.
fn with_shared_responses(mut doc: serde_json::Value) -> serde_json::Value {
    let problem = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        })
    };
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return doc;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let has_body = op.contains_key("requestBody");
            let params: Vec<String> = op
                .get("parameters")
                .and_then(|p| p.as_array())
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p.get("in").and_then(|i| i.as_str()).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let secured = op.contains_key("security");
            let above_viewer = op
                .get("security")
                .map(|s| s.to_string())
                .is_some_and(|s| !s.contains("\"viewer\""));
            let mut add: Vec<(&str, &str)> =
                vec![("503", "The database did not answer; nothing changed")];
            if has_body {
                add.extend([
                    ("400", "The body cannot be read"),
                    ("413", "The body is too large"),
                    ("415", "The body's media type is not accepted"),
                    ("422", "A field breaks a validation rule"),
                ]);
            }
            if params.iter().any(|p| p == "query" || p == "header") {
                add.push(("400", "A parameter is not valid"));
                add.push(("422", "A parameter breaks a validation rule"));
            }
            if params.iter().any(|p| p == "path") {
                add.push(("404", "No such resource in your organisation"));
            }
            if secured {
                add.push(("401", "Credentials are missing or not valid"));
                if method != "get" || above_viewer {
                    add.push(("403", "The role is too low, or the CSRF token is missing"));
                }
            }
            if method == "post" {
                add.push((
                    "409",
                    "A request with this Idempotency-Key is still running, or the key was used for another request",
                ));
                add.push((
                    "422",
                    "The Idempotency-Key is not 1 to 255 visible ASCII characters",
                ));
            }
            let Some(responses) = op
                .entry("responses")
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
            else {
                continue;
            };
            for (status, description) in add {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| problem(description));
            }
        }
    }
    doc
}

/// The API's router, with authentication, idempotency and the body limit.
pub fn router(state: ApiState) -> Router<ApiState> {
    let (routes, _) = documented_routes().split_for_parts();
    let document = Arc::new(openapi_json());
    let documented = Arc::new(documented_operations());
    let api = routes
        // Every served path is in the document, so the authorisation walk over the
        // document (tests/it/api/authz.rs) covers the whole route table: a path added
        // without its documentation answers 500 instead of serving unchecked.
        .route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let documented = documented.clone();
                async move {
                    let path = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default();
                    // Methods a path does not route get axum's 405 further in; a path
                    // the document does not have is refused here.
                    let key = path;
                    if !documented.contains(&key) {
                        return ApiError::internal(format!(
                            "route {key} is served but not in the OpenAPI document"
                        ))
                        .into_response();
                    }
                    next.run(req).await
                }
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        document.as_ref().clone(),
                    )
                }
            }),
        );
    Router::new()
        .nest("/api/v1", Router::new().fallback(api_not_found))
        .merge(api)
}

/// The path template of every operation in the document.
fn documented_operations() -> std::collections::HashSet<String> {
    openapi()
        .get("paths")
        .and_then(|p| p.as_object())
        .map(|paths| paths.keys().cloned().collect())
        .unwrap_or_default()
}

async fn api_not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-such-route",
        "No such route",
        "this path is not part of the API; GET /api/v1/openapi.json lists the routes",
    )
    .into_response()
}

// --------------------------------------------------------------------------------------
// Shared conventions: ids, times, pagination, text fields
// --------------------------------------------------------------------------------------

/// The longest name of anything (campaign, list, channel, API key, contact).
pub const MAX_NAME: usize = 200;

/// A trimmed, non-empty text of at most `max` characters without control characters, or a
/// validation problem naming `field` and the rule it breaks.
pub fn check_text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(field, "required", "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            "max_length",
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "format",
            "must not contain control characters",
        ));
    }
    Ok(value.to_string())
}

/// A name: `check_text` with `MAX_NAME`.
pub fn check_name(field: &str, name: &str) -> ApiResult<String> {
    check_text(field, name, MAX_NAME)
}

/// Ids are opaque strings to clients: a type prefix and the row id (`cmp_42`).
pub fn encode_id(prefix: &str, id: i64) -> String {
    crate::ids::format_id(prefix, id)
}

/// The row id of an opaque id, or "not found" (an id that cannot exist names nothing). Only
/// the spelling `encode_id` gives is accepted (see `domain::canonical_id`).
pub fn decode_id(prefix: &str, what: &str, id: &str) -> ApiResult<i64> {
    crate::ids::parse_canonical(prefix, id)
        .ok_or_else(|| ApiError::not_found(format!("there is no {what} `{id}`")))
}

/// The typed id of an opaque id, or "not found", as [`decode_id`].
pub fn decode<T: crate::ids::TypedId>(id: &str) -> ApiResult<T> {
    decode_id(T::PREFIX, T::WHAT, id).map(T::from_row)
}

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(ms: i64) -> String {
    crate::clock::rfc3339(ms)
}

pub fn timestamp_opt(ms: Option<i64>) -> Option<String> {
    ms.map(timestamp)
}

/// `?cursor=…&limit=…` on every list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_cursor` of the previous page, unchanged; omit for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

impl PageParams {
    pub fn limit(&self) -> ApiResult<i64> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                kind: "invalid-query",
                title: "A query parameter is not valid",
                ..ApiError::invalid(
                    "limit",
                    "range",
                    format!("limit must be between 1 and {MAX_PAGE}, not {limit}"),
                )
            });
        }
        Ok(limit)
    }

    /// The last id of the previous page, typed (row 0 for the first page).
    pub fn after_id<T: crate::ids::TypedId>(&self) -> ApiResult<T> {
        self.after().map(T::from_row)
    }

    /// The last row number of the previous page (0 for the first page).
    pub fn after(&self) -> ApiResult<i64> {
        let Some(cursor) = &self.cursor else {
            return Ok(0);
        };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("after:").and_then(|n| n.parse::<i64>().ok()))
            .filter(|n| *n >= 0)
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
}

/// The cursor after row `id` (typed or not): `after:` and the bare row number, opaque to
/// clients.
pub fn cursor_after(id: impl Into<i64>) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{}", id.into()))
}

/// One page of a list, and the cursor of the next page when there is one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` fetched with `LIMIT limit + 1`, in id order: the extra row only says that
    /// there is a next page.
    pub fn from_rows<R, K: Into<i64>>(
        mut rows: Vec<R>,
        limit: i64,
        id_of: impl Fn(&R) -> K,
        view: impl Fn(R) -> T,
    ) -> Page<T> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|r| cursor_after(id_of(r)))
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CampaignId;

    #[test]
    fn ids_round_trip_and_refuse_others() {
        assert_eq!(
            decode::<CampaignId>(&encode_id("cmp", 42)).unwrap(),
            CampaignId(42)
        );
        for bad in ["42", "cmp_", "cmp_x", "lst_42", "cmp_-1", "cmp_0", "cmp42"] {
            let e = decode::<CampaignId>(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_FOUND, "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_400() {
        let p = PageParams {
            cursor: Some(cursor_after(17)),
            limit: None,
        };
        assert_eq!(p.after().unwrap(), 17);
        assert_eq!(p.limit().unwrap(), DEFAULT_PAGE);
        let bad = PageParams {
            cursor: Some("nonsense!".into()),
            limit: Some(0),
        };
        assert_eq!(bad.after().unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.limit().unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn pages_say_when_there_is_more() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |r| *r, |r| r * 10);
        assert_eq!(page.items, vec![10, 20]);
        assert_eq!(page.next_cursor, Some(cursor_after(2)));
        let last = Page::from_rows(vec![1, 2], 2, |r| *r, |r| r);
        assert_eq!(last.next_cursor, None);
    }
}

#[cfg(test)]
mod document_tests {
    #[test]
    fn the_document_is_openapi_3_1_with_every_route_under_api_v1() {
        let json = super::openapi();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = json["paths"].as_object().unwrap();
        assert!(
            paths.contains_key("/api/v1/auth/login"),
            "{:?}",
            paths.keys()
        );
        assert!(paths.keys().all(|p| p.starts_with("/api/v1/")));
    }
}
