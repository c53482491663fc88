//! The HTTP surface of `herald serve`: health, readiness and Prometheus metrics.

pub use crate::app_state::{AppState, problem};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::webhooks::inbound::routes())
        .merge(crate::webhooks::unsubscribe::routes())
        .merge(crate::webhooks::links::routes())
        // Provider webhooks are small; anything larger is not one.
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .merge(crate::api::router(state.clone()))
        .merge(crate::web::router(state.clone()))
        .with_state(state)
}

/// The process is up and serving.
async fn healthz() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

/// Ready to work: the database answers and its schema is this binary's.
async fn readyz(State(state): State<AppState>) -> Response {
    // A probe wants a prompt answer: a database that does not answer within a second is
    // not ready, whatever the pool would wait.
    let ping = tokio::time::timeout(std::time::Duration::from_secs(1), state.store.ping()).await;
    let failure = match ping {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 1 s".to_string()),
    };
    if let Some(detail) = failure {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unreachable",
            "The database does not answer",
            &detail,
        );
    }
    if let Err(e) = state.store.require_migrated().await {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "database-not-migrated",
            "The database schema is not current",
            &e.to_string(),
        );
    }
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ready", "store": state.store.dialect().name()})),
    )
        .into_response()
}

/// Prometheus text: labels carry ids, never tenant-chosen names. With `metrics_token` set,
/// only a scraper that sends it as `Authorization: Bearer <token>` gets the page.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = state.settings.metrics_token.as_deref() {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        // Digests have one length, so the comparison does not reveal the token's length.
        let authorised = sent.is_some_and(|sent| {
            use crate::credentials::{constant_time_eq, digest};
            constant_time_eq(&digest(sent), &digest(expected))
        });
        if !authorised {
            let mut refused = problem(
                StatusCode::UNAUTHORIZED,
                "metrics-token-required",
                "The metrics token is missing or wrong",
                "this server sets metrics_token: scrape /metrics with `Authorization: Bearer <metrics_token>` (Prometheus: `authorization: {credentials: …}` in the scrape config)",
            );
            refused.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"metrics\""),
            );
            return refused;
        }
    }
    match &state.metrics {
        Some(h) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics-unavailable",
            "Metrics are not installed",
            "another metrics recorder was installed in this process",
        ),
    }
}
