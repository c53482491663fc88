//! The caller's organisation and its settings: today its auto-pause default
//! (docs/MONITORING.md), the same setting as `herald org show|set --auto-pause`. Anyone in
//! the organisation reads it; admins change it.

use super::ApiState;
use super::auth::{AsAdmin, AsViewer};
use super::problem::{ApiError, ApiJson, ApiResult, Problem};
use crate::ids::OrgId;
use crate::store::autopause::{AutoPause, DEFAULT};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(get_organisation, update_organisation))
}

/// The caller's organisation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Organisation {
    #[schema(example = "org_1")]
    pub id: String,
    pub name: String,
    /// The auto-pause setting its campaigns inherit: `PERCENT%/WINDOW` or `off`.
    #[schema(example = "20%/500")]
    pub auto_pause: String,
    /// `organisation` when the organisation set it, `default` when it is Herald's.
    #[schema(example = "default")]
    pub auto_pause_source: String,
    /// What Herald answers an inbound HELP (or INFO) with; null: HELP is recorded in the
    /// inbox and not answered (docs/INBOX.md).
    pub help_reply: Option<String>,
    /// The send window its campaigns inherit (docs/CAMPAIGNS.md, "Send windows"); null:
    /// they send at any hour unless they set one.
    #[schema(example = "08:00-21:00")]
    pub send_window: Option<String>,
}

/// Changes to the organisation's settings; fields left out stay as they are.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganisationChange {
    /// The auto-pause default of its campaigns: `PERCENT%/WINDOW` (more than PERCENT % of
    /// the last WINDOW outcomes failed permanently), `off`, or `default` (Herald's, 20%/500).
    #[schema(
        example = "20%/500",
        max_length = 16,
        pattern = r"^(off|default|[1-9][0-9]?%/([1-9][0-9]{1,4}|100000))$"
    )]
    pub auto_pause: Option<String>,
    /// The answer to HELP, up to 1,600 characters; the empty string removes it.
    #[schema(
        max_length = 1600,
        example = "Acme Shop: questions? Call +1 415 555 0100. Reply STOP to unsubscribe."
    )]
    pub help_reply: Option<String>,
    /// The send window its campaigns inherit: `HH:MM-HH:MM` in each recipient's local time,
    /// optionally followed by the IANA zone of recipients whose own is unknown; `off`
    /// removes it.
    #[schema(
        example = "08:00-21:00",
        max_length = 80,
        pattern = r"^(off|([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)( [A-Za-z][A-Za-z0-9_+/-]{0,59})?)$"
    )]
    pub send_window: Option<String>,
}

fn view(
    id: OrgId,
    name: String,
    setting: Option<AutoPause>,
    help_reply: Option<String>,
    send_window: Option<String>,
) -> Organisation {
    Organisation {
        id: id.to_string(),
        name,
        auto_pause: setting.unwrap_or(DEFAULT).to_string(),
        auto_pause_source: if setting.is_some() {
            "organisation"
        } else {
            "default"
        }
        .to_string(),
        help_reply,
        send_window,
    }
}

/// The caller's organisation and its settings.
#[utoipa::path(get, path = "/organisation", tag = "accounts",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    responses(
        (status = 200, body = Organisation),
    ))]
async fn get_organisation(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
) -> ApiResult<axum::Json<Organisation>> {
    let org = state.store.organisation(p.org_id).await?;
    let setting = state.store.org_auto_pause(p.org_id).await?;
    let help = state.store.org_help_reply(p.org_id).await?;
    let window = state.store.org_send_window(p.org_id).await?;
    Ok(axum::Json(view(org.id, org.name, setting, help, window)))
}

/// Change the organisation's settings (its campaigns' auto-pause default and send window,
/// its answer to HELP).
#[utoipa::path(patch, path = "/organisation", tag = "accounts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    request_body = OrganisationChange,
    responses(
        (status = 200, body = Organisation),
        (status = 422, description = "`auto_pause` is not PERCENT%/WINDOW, off or default, `help_reply` is too long, or `send_window` is not a window or off", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_organisation(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiJson(change): ApiJson<OrganisationChange>,
) -> ApiResult<axum::Json<Organisation>> {
    if let Some(value) = &change.auto_pause {
        let setting = if value.trim().eq_ignore_ascii_case("default") {
            None
        } else {
            Some(value.parse::<AutoPause>().map_err(|e| {
                ApiError::invalid("auto_pause", "format", format!("{e}, or default"))
            })?)
        };
        state.store.set_org_auto_pause(p.org_id, setting).await?;
        tracing::info!(org_id = %p.org_id, actor = p.actor, auto_pause = ?setting, "organisation auto-pause default changed");
    }
    if let Some(text) = &change.help_reply {
        let text = check_help_reply(text)?;
        state
            .store
            .set_org_help_reply(p.org_id, text.as_deref())
            .await?;
        tracing::info!(org_id = %p.org_id, actor = p.actor, set = text.is_some(), "organisation help reply changed");
    }
    if let Some(value) = &change.send_window {
        let window = match super::campaigns::send_window_field(value)? {
            Some(w) if w == "off" => None,
            Some(w) => Some(w),
            None => {
                return Err(ApiError::invalid(
                    "send_window",
                    "send_window",
                    "an organisation's send window is a window like 08:00-21:00, or off",
                ));
            }
        };
        state
            .store
            .set_org_send_window(p.org_id, window.as_deref(), crate::clock::now_ms())
            .await?;
        tracing::info!(org_id = %p.org_id, actor = p.actor, send_window = window.as_deref().unwrap_or("off"), "organisation send window changed");
    }
    let org = state.store.organisation(p.org_id).await?;
    let setting = state.store.org_auto_pause(p.org_id).await?;
    let help = state.store.org_help_reply(p.org_id).await?;
    let window = state.store.org_send_window(p.org_id).await?;
    Ok(axum::Json(view(org.id, org.name, setting, help, window)))
}

/// A help reply as the store keeps it (`replies::help_reply_text`), or 422.
pub fn check_help_reply(text: &str) -> ApiResult<Option<String>> {
    crate::store::replies::help_reply_text(text)
        .map_err(|(rule, e)| ApiError::invalid("help_reply", rule, e))
}
