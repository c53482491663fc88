//! The system page: what `herald doctor` reports (database, live instances, stuck
//! campaigns, counter drift, messages in doubt) and every engine instance.

use super::super::render::{self, PageMeta};
use super::super::{Ctx, Web};
use super::items;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

async fn render_page(web: &Web, ctx: &Ctx) -> Response {
    let (health, instances) = tokio::join!(
        web.get(&ctx.session, "/api/v1/health"),
        web.get(&ctx.session, "/api/v1/instances"),
    );
    let health_error = (!health.ok()).then(|| health.message());
    let instances_error = (!instances.ok()).then(|| instances.message());
    render::page(
        ctx,
        PageMeta {
            status: StatusCode::OK,
            section: "system",
            title: "System",
        },
        "system.html",
        json!({
            "health": if health.ok() { health.body.clone() } else { serde_json::Value::Null },
            "health_error": health_error,
            "instances": items(&instances),
            "instances_error": instances_error,
        }),
    )
}

pub async fn page(State(web): State<Web>, ctx: Ctx) -> Response {
    render_page(&web, &ctx).await
}
