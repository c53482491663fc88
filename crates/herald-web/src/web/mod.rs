//! The dashboard: server-rendered HTML pages on top of the JSON API.
//!
//! Every page handler calls the API router in process (`client.rs`), forwarding the
//! user's session cookie and, for writes, the session's CSRF token, then renders the JSON it
//! gets back. So every tenancy rule, role check and validation is the API's own: a page can
//! show only what the signed-in user's organisation may see, and a form error is the API's
//! problem document put next to the field it names.
//!
//! Rules every page follows:
//! - works without JavaScript (plain forms, POST-redirect-GET); `assets/app.js` only adds
//!   live progress over server-sent events, the template preview while typing, and
//!   confirmation dialogs in place of the confirmation pages;
//! - each form carries the session's CSRF token in a hidden `_csrf` field, checked before
//!   the API is called;
//! - every response carries a strict Content-Security-Policy (no inline script or style: the
//!   CSS and JS are files served from the binary under `/assets/`), `nosniff`, a referrer
//!   policy and `frame-ancestors 'none'`; the one exception is an email's HTML preview
//!   ([`EMAIL_PREVIEW_POLICY`]), sandboxed and framed only by the dashboard's own pages.

mod assets;
mod client;
mod flash;
mod forms;
mod pages;
mod render;
mod session;

use crate::app_state::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

pub use client::{ApiReply, Payload};
pub use forms::{FormErrors, PostForm};
pub use session::{Ctx, Session};

/// What every dashboard handler gets: the application state and the API router, built once.
#[derive(Clone)]
pub struct Web {
    pub state: AppState,
    api: Router,
}

/// The Content-Security-Policy of every dashboard response: nothing but this origin's own
/// files, no inline script or style, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The policy of an email's HTML preview, the one document the dashboard lets a page of
/// its own frame: a sandbox (a unique origin: no script runs, no form submits, no cookie
/// is read), no script at all, the email's own inline styles and its images over https
/// (as a mail client shows them), nothing else fetched, framed only by the dashboard.
pub const EMAIL_PREVIEW_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src https: data:; font-src https: data:; form-action 'none'; base-uri 'none'; frame-ancestors 'self'";

pub fn router(state: AppState) -> Router<AppState> {
    let web = Web {
        api: crate::api::router(state.clone()).with_state(state.clone()),
        state,
    };
    Router::new()
        .route("/", get(pages::home))
        .route(
            "/login",
            get(pages::auth::login_form).post(pages::auth::login),
        )
        .route("/logout", post(pages::auth::logout))
        .route(
            "/campaigns",
            get(pages::campaigns::list).post(pages::campaigns::create),
        )
        .route("/campaigns/new", get(pages::campaigns::new_form))
        .route("/campaigns/new/preview", post(pages::campaigns::preview))
        .route(
            "/campaigns/new/email-preview",
            post(pages::campaign_email::email_preview_draft),
        )
        .route(
            "/campaigns/{id}/email-preview",
            get(pages::campaign_email::email_preview),
        )
        .route("/campaigns/{id}", get(pages::campaigns::detail))
        .route("/campaigns/{id}/estimate", get(pages::campaigns::estimate))
        .route(
            "/campaigns/{id}/edit",
            get(pages::campaigns::edit_form).post(pages::campaigns::update),
        )
        .route(
            "/campaigns/{id}/{action}",
            get(pages::campaigns::confirm).post(pages::campaigns::act),
        )
        .route("/inbox", get(pages::inbox::list))
        .route("/inbox/thread", get(pages::inbox::thread))
        .route("/inbox/read", post(pages::inbox::mark_read))
        .route("/contacts", get(pages::contacts::list))
        .route("/contacts/import", post(pages::contacts::import))
        .route(
            "/contacts/{id}/unsubscribe",
            post(pages::contacts::unsubscribe),
        )
        .route(
            "/lists",
            get(pages::contacts::lists).post(pages::contacts::create_list),
        )
        .route("/lists/{id}", get(pages::contacts::list_detail))
        .route("/lists/{id}/filter", post(pages::contacts::edit_segment))
        .route(
            "/suppressions",
            get(pages::contacts::suppressions).post(pages::contacts::suppress),
        )
        .route(
            "/suppressions/{id}/delete",
            post(pages::contacts::unsuppress),
        )
        .route(
            "/channels",
            get(pages::channels::list).post(pages::channels::create),
        )
        .route("/channels/pricing", post(pages::channels::pricing))
        .route("/channels/{id}/test", post(pages::channels::test_send))
        .route(
            "/api-keys",
            get(pages::accounts::api_keys).post(pages::accounts::create_api_key),
        )
        .route(
            "/api-keys/{id}/revoke",
            post(pages::accounts::revoke_api_key),
        )
        .route(
            "/users",
            get(pages::accounts::users).post(pages::accounts::create_user),
        )
        .route("/users/{id}/role", post(pages::accounts::change_role))
        .route("/users/{id}/delete", post(pages::accounts::delete_user))
        .route(
            "/webhooks",
            get(pages::webhooks::list).post(pages::webhooks::create),
        )
        .route("/webhooks/{id}", get(pages::webhooks::detail))
        .route("/webhooks/{id}/{action}", post(pages::webhooks::act))
        .route("/system", get(pages::system::page))
        .route(
            "/system/alerts",
            get(pages::system::alert_settings).post(pages::system::save_alert_settings),
        )
        .route("/system/alerts/test", post(pages::system::send_test_alert))
        .route("/assets/{file}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

/// The headers every dashboard response carries.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    // An email preview brings its own, stricter-for-scripts policy (framed by the
    // dashboard, sandboxed); every other response gets the dashboard's.
    let framed_preview = h
        .get(header::CONTENT_SECURITY_POLICY)
        .is_some_and(|v| v.as_bytes() == EMAIL_PREVIEW_POLICY.as_bytes());
    if !framed_preview {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static(if framed_preview { "SAMEORIGIN" } else { "DENY" }),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
