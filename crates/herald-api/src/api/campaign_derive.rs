//! Campaigns made from others, and a scheduled campaign taken back to draft
//! (docs/CAMPAIGNS.md): resend to the recipients whose messages ended in chosen statuses,
//! duplicate, unschedule. Each is one conditional write in the store, in the audit trail.

use super::ApiState;
use super::auth::{AsEditor, AsViewer};
use super::campaigns::{Campaign, owned_status, view};
use super::problem::{ApiError, ApiPath, ApiResult, Problem};
use super::timestamp;
use super::{check_name, decode};
use crate::domain::{CampaignStatus, Derivation, MessageStatus};
use crate::ids::CampaignId;
use crate::store::derive::RESENDABLE;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(resend_campaign))
        .routes(routes!(duplicate_campaign))
        .routes(routes!(unschedule_campaign))
        .routes(routes!(derived_campaigns))
}

/// A campaign made from another.
#[derive(Debug, Serialize, ToSchema)]
pub struct DerivedCampaign {
    #[schema(example = "cmp_7")]
    pub id: String,
    pub name: String,
    pub kind: Derivation,
    pub status: CampaignStatus,
    pub created_at: String,
}

/// The campaigns made from this one.
#[derive(Debug, Serialize, ToSchema)]
pub struct DerivedCampaigns {
    /// Oldest first, at most 1,000.
    pub items: Vec<DerivedCampaign>,
}

/// What to resend.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendRequest {
    /// The final statuses whose recipients get the resend; default `["failed",
    /// "undelivered"]`. Any of failed, undelivered, skipped, cancelled, sent, delivered,
    /// read.
    #[schema(example = json!(["failed", "undelivered"]))]
    pub statuses: Option<Vec<String>>,
    /// The new campaign's name; default the parent's with ` (resend)`.
    pub name: Option<String>,
}

/// The draft a resend made, and who is in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResendResult {
    pub campaign: Campaign,
    /// Messages of the parent in the chosen statuses.
    pub matched: i64,
    /// Contacts in the new campaign's list (`campaign.list_id`).
    pub recipients: i64,
    /// Left out: unsubscribed, or their address suppressed, since the parent sent.
    pub left_out_opted_out: i64,
    /// Left out: their contact was deleted since.
    pub left_out_contact_deleted: i64,
}

/// A new name, if given.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateRequest {
    /// The new campaign's name; default `Copy of ` and the parent's.
    pub name: Option<String>,
}

/// The statuses named by a resend, checked; default failed and undelivered.
pub fn resend_statuses(names: Option<&[String]>) -> Result<Vec<MessageStatus>, String> {
    let Some(names) = names else {
        return Ok(vec![MessageStatus::Failed, MessageStatus::Undelivered]);
    };
    let allowed = || {
        RESENDABLE
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if names.is_empty() {
        return Err(format!("name at least one status: {}", allowed()));
    }
    let mut statuses = Vec::new();
    for name in names {
        let status = MessageStatus::parse(name.trim())
            .filter(|s| RESENDABLE.contains(s))
            .ok_or_else(|| {
                format!(
                    "`{}` is not a status a message ends in: use {}",
                    name.chars().take(40).collect::<String>(),
                    allowed()
                )
            })?;
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    Ok(statuses)
}

/// An optional JSON body: none (or `null`) is the default request.
fn optional_json<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(trimmed).map_err(|e| {
        if e.is_data() {
            let detail = e.to_string();
            let field = detail.split('`').nth(1).unwrap_or("body").to_string();
            ApiError::invalid(&field, "type", detail)
        } else {
            ApiError::bad_request("malformed-json", format!("the body is not valid JSON: {e}"))
        }
    })
}

fn created(campaign_id: CampaignId, body: impl Serialize) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/campaigns/{campaign_id}"))],
        axum::Json(body),
    )
        .into_response()
}

/// Resend to the recipients whose messages ended in the chosen statuses (default failed and
/// undelivered): a new draft campaign with the parent's channel, template and auto-pause
/// setting, whose audience is a new list of exactly those contacts now, minus those who
/// unsubscribed or were suppressed since and those deleted. Start it as any draft.
#[utoipa::path(post, path = "/campaigns/{id}/resend", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    request_body = Option<ResendRequest>,
    responses(
        (status = 201, body = ResendResult, headers(("Location" = String, description = "The new campaign"))),
        (status = 409, description = "The campaign has not started (no messages yet), or no recipient is left to resend to (nothing is created)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A status a message does not end in, or a bad name", body = Problem, content_type = "application/problem+json"),
    ))]
async fn resend_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: ResendRequest = optional_json(&body)?;
    let statuses = resend_statuses(body.statuses.as_deref())
        .map_err(|m| ApiError::invalid("statuses", "enum", m))?;
    let name = body
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    let (parent, _) = owned_status(&state, &p, &id).await?;
    let report = state
        .store
        .api_campaign_resend(p.org_id, parent, &statuses, name.as_deref(), &p.actor)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %report.campaign_id,
        parent_id = %parent,
        actor = p.actor,
        recipients = report.recipients,
        "campaign resend created"
    );
    let c = state
        .store
        .api_campaign(p.org_id, report.campaign_id)
        .await?;
    Ok(created(
        report.campaign_id,
        ResendResult {
            campaign: view(&state, c).await?,
            matched: report.matched,
            recipients: report.recipients,
            left_out_opted_out: report.opted_out,
            left_out_contact_deleted: report.no_contact,
        },
    ))
}

/// Duplicate any campaign as a new draft: its name (`Copy of …`), channel, list, template
/// and auto-pause setting.
#[utoipa::path(post, path = "/campaigns/{id}/duplicate", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    request_body = Option<DuplicateRequest>,
    responses(
        (status = 201, body = Campaign, headers(("Location" = String, description = "The new campaign"))),
    ))]
async fn duplicate_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: DuplicateRequest = optional_json(&body)?;
    let name = body
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    let parent = decode::<CampaignId>(&id)?;
    let id = state
        .store
        .api_campaign_duplicate(p.org_id, parent, name.as_deref(), &p.actor)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %id,
        parent_id = %parent,
        actor = p.actor,
        "campaign duplicated"
    );
    let c = state.store.api_campaign(p.org_id, id).await?;
    Ok(created(id, view(&state, c).await?))
}

/// Take a scheduled campaign back to draft: it will not start by itself.
#[utoipa::path(post, path = "/campaigns/{id}/unschedule", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = Campaign),
        (status = 409, description = "The campaign is not scheduled (the scheduler may have started it)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn unschedule_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<Campaign>> {
    let id = decode::<CampaignId>(&id)?;
    let c = state
        .store
        .api_campaign_unschedule(p.org_id, id, &p.actor)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %id,
        actor = p.actor,
        "campaign unscheduled"
    );
    Ok(axum::Json(view(&state, c).await?))
}

/// The resends and duplicates made from this campaign, oldest first.
#[utoipa::path(get, path = "/campaigns/{id}/derived", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = DerivedCampaigns),
    ))]
async fn derived_campaigns(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<DerivedCampaigns>> {
    let (id, _) = owned_status(&state, &p, &id).await?;
    let children = state.store.api_campaign_children(p.org_id, id).await?;
    Ok(axum::Json(DerivedCampaigns {
        items: children
            .into_iter()
            .map(|c| DerivedCampaign {
                id: c.id.to_string(),
                name: c.name,
                kind: c.kind,
                status: c.status,
                created_at: timestamp(c.created_at),
            })
            .collect(),
    }))
}
