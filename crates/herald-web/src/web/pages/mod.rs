//! The dashboard's pages, one module per area. Each handler asks the API and renders what
//! it answers; a failed API call becomes a page saying what failed, never a blank page.

pub mod accounts;
pub mod auth;
pub mod campaign_email;
pub mod campaigns;
pub mod channels;
pub mod contacts;
pub mod inbox;
pub mod system;
pub mod webhook_urls;
pub mod webhooks;

use super::render::{PageMeta, page};
use super::{ApiReply, Ctx, Web};
use crate::api::auth::{SESSION_COOKIE, cookie_value};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

/// `/`: the campaigns when signed in, the sign-in page otherwise.
pub async fn home(State(web): State<Web>, headers: HeaderMap) -> Response {
    let signed_in = match cookie_value(&headers, SESSION_COOKIE) {
        Some(token) if !token.is_empty() => web.whoami(token).await.ok(),
        _ => false,
    };
    if signed_in {
        Redirect::to("/campaigns").into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

pub async fn not_found() -> Response {
    bare_error(
        StatusCode::NOT_FOUND,
        "There is no such page",
        "the address may be mistyped, or the page was removed",
    )
}

/// An error page inside the layout, for a signed-in user.
pub fn error_page(ctx: &Ctx, status: StatusCode, title: &str, detail: &str) -> Response {
    page(
        ctx,
        PageMeta {
            status,
            section: "",
            title,
        },
        "error.html",
        json!({"title": title, "detail": detail, "status": status.as_u16()}),
    )
}

pub use super::render::bare_error;

/// The page for an API call that failed: not found stays "not found", everything else
/// says which request failed and why.
pub fn api_failed(ctx: &Ctx, what: &str, reply: &ApiReply) -> Response {
    let status = match reply.status {
        s if s.is_client_error() || s.is_server_error() => s,
        _ => StatusCode::BAD_GATEWAY,
    };
    let title = match status {
        StatusCode::NOT_FOUND => format!("{what}: not found"),
        StatusCode::FORBIDDEN => format!("{what}: your role does not allow this"),
        _ => format!("{what} could not be loaded"),
    };
    error_page(ctx, status, &title, &reply.message())
}

/// Items of a list answer (`{"items": [...]}`), empty when absent.
pub fn items(reply: &ApiReply) -> serde_json::Value {
    match &reply.body["items"] {
        serde_json::Value::Array(a) => serde_json::Value::Array(a.clone()),
        _ => json!([]),
    }
}
