//! What every HTTP handler shares (the store, settings, metrics, the provider webhook
//! limiter) and the RFC 9457 problem response. At the bottom of the HTTP side: the API, the
//! dashboard and the provider webhooks depend on it, and the router that mounts them
//! (`http`) sits above all three, so none of them imports the module that mounts it.

use crate::store::Store;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Option<PrometheusHandle>,
    /// Public URL and secret key, to check provider webhooks.
    pub context: crate::channels::BuildContext,
    /// The instance's settings: health and stuck judgements use its thresholds.
    pub settings: std::sync::Arc<crate::config::Settings>,
    /// Provider webhook admission per source address and channel, shared by every clone
    /// of the state (one per process; `Default` gives a fresh one).
    pub webhook_limiter: std::sync::Arc<crate::webhook_admission::WebhookLimiter>,
}

/// An RFC 9457 problem document.
pub fn problem(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("https://herald.dev/problems/{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}
