//! `GET /l/{code}`: a recipient follows a tracked link (`crate::tracked_links`). A genuine
//! code redirects (302) to the link's target and, when a person followed it, counts the
//! click (`Store::record_click`); link-preview bots, HEAD requests and a source over
//! `webhook_rate_per_minute` are redirected without being counted. Every code that cannot
//! be verified, or names no message or link, gets the same 404, which reveals nothing.

use crate::app_state::AppState;
use crate::ids::ChannelId;
use crate::tracked_links::{LinkSigner, is_preview_agent};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use std::net::SocketAddr;

/// The key clicks are counted under in the webhook limiter: no channel has it (ids start
/// at 1 and a path cannot name 0 or less), so clicks and webhooks have separate allowances.
const CLICKS: ChannelId = ChannelId(-1);

pub fn routes() -> Router<AppState> {
    Router::new().route(
        &format!("{}{{code}}", crate::tracked_links::PATH_PREFIX),
        get(follow),
    )
}

/// The one answer for a code that leads nowhere.
fn unknown() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        "This link is not valid.\n",
    )
        .into_response()
}

fn counted_metric(counted: &'static str) {
    metrics::counter!("herald_link_clicks_total", "counted" => counted).increment(1);
}

async fn follow(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(code): Path<String>,
) -> Response {
    let Some(signer) = LinkSigner::new(
        state.settings.public_url.as_deref(),
        state.settings.secret_key.as_deref(),
    ) else {
        return unknown();
    };
    let Some((message_id, position)) = signer.decode(&code) else {
        return unknown();
    };
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let now = crate::clock::now_ms();
    let ip = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let admitted = state
        .webhook_limiter
        .admit(ip, CLICKS, state.settings.webhook_rate_per_minute, now)
        .is_ok();
    let person = method == Method::GET && !is_preview_agent(agent);
    let counted = person && admitted;
    let click = match state
        .store
        .record_click(message_id, position, now, counted)
        .await
    {
        Ok(Some(click)) => click,
        Ok(None) => return unknown(),
        Err(e) => {
            tracing::warn!(error = %e, message_id = %message_id, "a tracked link could not be looked up");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::RETRY_AFTER, "2"),
                ],
                "This link cannot be followed right now; try again in a moment.\n",
            )
                .into_response();
        }
    };
    counted_metric(match (counted, click.counted, person) {
        (true, true, _) => "yes",
        // The message is in its campaign's archive: redirected, not counted.
        (true, false, _) => "archived",
        (false, _, true) => "rate_limited",
        (false, _, false) => "preview",
    });
    tracing::debug!(
        campaign_id = %click.campaign_id,
        message_id = %message_id,
        position,
        counted = click.counted,
        first = click.first_on_link,
        "tracked link followed"
    );
    // The target was checked (absolute http(s), ASCII, no spaces) when the template was
    // compiled; a value that still is not a header gets the 404 rather than a panic.
    let Ok(location) = HeaderValue::from_str(&click.url) else {
        return unknown();
    };
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::HeaderName::from_static("x-robots-tag"),
                HeaderValue::from_static("noindex"),
            ),
        ],
    )
        .into_response()
}
