//! `GET /campaigns/{id}/estimate`: what a draft or scheduled campaign will send, before it
//! starts (docs/CAMPAIGNS.md; the counting is `estimate::estimate`).

use super::ApiState;
use super::auth::AsViewer;
use super::campaigns::owned_status;
use super::problem::{ApiError, ApiPath, ApiResult, Problem};
use crate::domain::CampaignStatus;
use crate::estimate::{Estimate, EstimateError};
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(campaign_estimate))
}

/// Before a draft or scheduled campaign starts: its recipients and who the start would
/// skip (by reason), every recipient's message rendered and counted (SMS segments, UCS-2
/// and the characters that force it, with GSM-7 replacements), the cost at the channel's
/// prices and the duration at its rate. Counted now; the start freezes the audience.
#[utoipa::path(get, path = "/campaigns/{id}/estimate", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = Estimate),
        (status = 409, description = "The campaign has started: its stats have the real counts", body = Problem, content_type = "application/problem+json"),
    ))]
async fn campaign_estimate(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<Estimate>> {
    let (id, status) = owned_status(&state, &p, &id).await?;
    if !matches!(status, CampaignStatus::Draft | CampaignStatus::Scheduled) {
        return Err(ApiError::conflict(format!(
            "campaign {id} is {status}: an estimate is for a campaign that has not started; GET /api/v1/campaigns/{id}/stats has its real counts"
        )));
    }
    let campaign = state.store.api_campaign(p.org_id, id).await?;
    let channel = state
        .store
        .org_channel(p.org_id, campaign.channel_id)
        .await?;
    let started = std::time::Instant::now();
    let signer = crate::tracked_links::LinkSigner::new(
        state.settings.public_url.as_deref(),
        state.settings.secret_key.as_deref(),
    );
    let estimate = crate::estimate::estimate(&state.store, &campaign, &channel, signer.as_ref())
        .await
        .map_err(|e| match e {
            EstimateError::Store(e) => ApiError::from(e),
            EstimateError::Template(e) => {
                ApiError::invalid("body", e.rule("template"), e.to_string())
            }
        })?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %id,
        actor = p.actor,
        recipients = estimate.recipients,
        units = estimate.units,
        took_ms = started.elapsed().as_millis() as u64,
        "campaign estimate"
    );
    Ok(axum::Json(estimate))
}
