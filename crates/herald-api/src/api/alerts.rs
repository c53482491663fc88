//! Alerts to people (docs/ALERTS.md): the caller's organisation's alert settings (who is
//! told, through which channels, from how many messages in doubt), the log of alerts sent
//! or undeliverable, and a test alert. Anyone may read them; admins change the settings and
//! send a test, as with webhook endpoints (both decide where Herald's warnings go).

use super::auth::{AsAdmin, AsViewer};
use super::problem::{ApiError, ApiJson, ApiQuery, ApiResult, Problem};
use super::{ApiState, PageParams, timestamp, timestamp_opt};
use crate::alerts::{MAX_IN_DOUBT_THRESHOLD, check_recipients};
use crate::ids::{AlertId, ChannelId};
use crate::store::alerts::{Alert, AlertSettings, AlertSettingsChange};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(list_alerts))
        .routes(routes!(send_test))
}

/// The alert settings of an organisation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertSettingsView {
    /// The channel alerts go through; null: none set (alerts are undeliverable).
    #[schema(example = "chn_2")]
    pub channel_id: Option<String>,
    /// The channel used when the first is the one an alert is about, cannot reach a
    /// recipient's kind of address, or is unavailable; null: none.
    #[schema(example = "chn_3")]
    pub fallback_channel_id: Option<String>,
    /// Messages in doubt in one sending campaign that raise `campaign.in_doubt`; 0: off.
    pub in_doubt_threshold: i64,
    /// Whether that threshold is Herald's default (the organisation set none).
    pub in_doubt_threshold_is_default: bool,
    /// Who is told: email addresses and E.164 phone numbers.
    #[schema(example = json!(["ops@example.org", "+14155550100"]))]
    pub recipients: Vec<String>,
}

pub fn settings_view(s: &AlertSettings) -> AlertSettingsView {
    AlertSettingsView {
        channel_id: s.channel_id.map(|id| id.to_string()),
        fallback_channel_id: s.fallback_channel_id.map(|id| id.to_string()),
        in_doubt_threshold: s.effective_in_doubt_threshold(),
        in_doubt_threshold_is_default: s.in_doubt_threshold.is_none(),
        recipients: s.recipients.clone(),
    }
}

/// The whole alert settings, replacing what was there.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertSettingsUpdate {
    /// The channel alerts go through (one of the organisation's); null: none.
    #[schema(pattern = "^chn_[1-9][0-9]{0,17}$")]
    pub channel_id: Option<String>,
    /// The channel used when the first cannot carry an alert; null: none.
    #[schema(pattern = "^chn_[1-9][0-9]{0,17}$")]
    pub fallback_channel_id: Option<String>,
    /// Messages in doubt that raise `campaign.in_doubt`; 0: off; null: Herald's default
    /// (100).
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub in_doubt_threshold: Option<i64>,
    /// Who is told: up to 20 email addresses or E.164 phone numbers.
    #[schema(max_items = 20, min_items = 0)]
    pub recipients: Vec<String>,
}

/// One alert to one recipient.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertView {
    #[schema(example = "alr_4")]
    pub id: String,
    /// The event it reports (`campaign.stuck`, ...), or `alert.test`.
    #[schema(example = "campaign.stuck")]
    pub event_type: String,
    /// The outbox event (null for a test alert).
    #[schema(example = "ntf_12")]
    pub event_id: Option<String>,
    pub campaign_id: Option<String>,
    /// The channel it is about, which never carries it.
    pub concerns_channel_id: Option<String>,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// The dashboard page it links to.
    #[schema(example = "/campaigns/cmp_2")]
    pub link: Option<String>,
    /// `pending` (being sent or retried), `sent`, or `undeliverable`.
    #[schema(example = "sent")]
    pub status: String,
    pub attempts: i64,
    /// The channel that carried it (or last tried to).
    pub channel_id: Option<String>,
    pub provider_id: Option<String>,
    /// Why the last attempt failed, or why it cannot be delivered.
    pub error: Option<String>,
    pub created_at: String,
    /// When it was sent or given up.
    pub settled_at: Option<String>,
}

pub fn alert_view(a: &Alert) -> AlertView {
    AlertView {
        id: a.id.to_string(),
        event_type: a.event_type.clone(),
        event_id: a.event_id.map(|id| id.to_string()),
        campaign_id: a.campaign_id.map(|id| id.to_string()),
        concerns_channel_id: a.concerns_channel_id.map(|id| id.to_string()),
        recipient: a.address.clone(),
        subject: a.subject.clone(),
        body: a.body.clone(),
        link: a.link.clone(),
        status: a.status.clone(),
        attempts: a.attempts,
        channel_id: a.channel_id.map(|id| id.to_string()),
        provider_id: a.provider_id.clone(),
        error: a.last_error.clone(),
        created_at: timestamp(a.created_at),
        settled_at: timestamp_opt(a.settled_at),
    }
}

/// The statuses an alert can have.
pub const ALERT_STATUSES: [&str; 3] = ["pending", "sent", "undeliverable"];

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertListParams {
    /// Only alerts in this status.
    #[param(pattern = "^(pending|sent|undeliverable)$")]
    pub status: Option<String>,
    /// The `next_cursor` of the previous page, unchanged; omit for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// How many test alerts were queued.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestAlertsQueued {
    /// One per recipient; they show in the alert log.
    pub queued: u64,
}

/// A channel id of the body, or 422 naming the field.
fn body_channel(field: &str, value: Option<&str>) -> ApiResult<Option<ChannelId>> {
    value
        .map(|v| {
            v.parse::<ChannelId>().map_err(|_| {
                ApiError::invalid(
                    field,
                    "pattern",
                    format!("`{field}` must be a channel id like chn_2, not `{v}`"),
                )
            })
        })
        .transpose()
}

/// The change a full settings document makes.
pub fn change_from(
    body: &AlertSettingsUpdate,
    current: &AlertSettings,
) -> ApiResult<AlertSettingsChange> {
    let recipients = check_recipients(&body.recipients).map_err(|(index, why)| {
        let field = index
            .map(|i| format!("recipients[{i}]"))
            .unwrap_or_else(|| "recipients".to_string());
        ApiError::invalid(&field, "address", why)
    })?;
    if let Some(t) = body.in_doubt_threshold
        && !(0..=MAX_IN_DOUBT_THRESHOLD).contains(&t)
    {
        return Err(ApiError::invalid(
            "in_doubt_threshold",
            "range",
            format!("`in_doubt_threshold` must be 0 (off) to {MAX_IN_DOUBT_THRESHOLD}, not {t}"),
        ));
    }
    Ok(AlertSettingsChange {
        channel_id: Some(body_channel("channel_id", body.channel_id.as_deref())?),
        fallback_channel_id: Some(body_channel(
            "fallback_channel_id",
            body.fallback_channel_id.as_deref(),
        )?),
        in_doubt_threshold: Some(body.in_doubt_threshold),
        remove: current
            .recipients
            .iter()
            .filter(|r| !recipients.contains(r))
            .cloned()
            .collect(),
        add: recipients,
    })
}

/// The organisation's alert settings.
#[utoipa::path(get, path = "/alerts/settings", tag = "alerts",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    responses(
        (status = 200, body = AlertSettingsView),
    ))]
async fn get_settings(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
) -> ApiResult<axum::Json<AlertSettingsView>> {
    let settings = state.store.alert_settings(p.org_id).await?;
    Ok(axum::Json(settings_view(&settings)))
}

/// Replace the organisation's alert settings: recipients, channels and the in-doubt
/// threshold.
#[utoipa::path(put, path = "/alerts/settings", tag = "alerts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    request_body = AlertSettingsUpdate,
    responses(
        (status = 200, body = AlertSettingsView),
        (status = 422, description = "A recipient is not an address, or a channel is not one of the organisation's", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_settings(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiJson(body): ApiJson<AlertSettingsUpdate>,
) -> ApiResult<axum::Json<AlertSettingsView>> {
    let current = state.store.alert_settings(p.org_id).await?;
    let change = change_from(&body, &current)?;
    for (field, value, id) in [
        ("channel_id", &body.channel_id, change.channel_id.flatten()),
        (
            "fallback_channel_id",
            &body.fallback_channel_id,
            change.fallback_channel_id.flatten(),
        ),
    ] {
        if let (Some(value), Some(id)) = (value, id)
            && state
                .store
                .api_campaign_channel(p.org_id, id)
                .await?
                .is_none()
        {
            return Err(ApiError::invalid(
                field,
                "exists",
                format!("there is no channel `{value}` in your organisation"),
            ));
        }
    }
    let settings = state
        .store
        .set_alert_settings(p.org_id, &change, crate::clock::now_ms())
        .await?;
    tracing::info!(org_id = %p.org_id, actor = p.actor, recipients = settings.recipients.len(), "alert settings changed");
    Ok(axum::Json(settings_view(&settings)))
}

/// The organisation's alerts, newest first.
#[utoipa::path(get, path = "/alerts", tag = "alerts",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(AlertListParams),
    responses(
        (status = 200, body = super::Page<AlertView>),
    ))]
async fn list_alerts(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(params): ApiQuery<AlertListParams>,
) -> ApiResult<axum::Json<super::Page<AlertView>>> {
    let page = PageParams {
        cursor: params.cursor.clone(),
        limit: params.limit,
    };
    let limit = page.limit()?;
    if let Some(s) = &params.status
        && !ALERT_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "enum",
            format!(
                "`status` must be one of {}, not `{s}`",
                ALERT_STATUSES.join(", ")
            ),
        ));
    }
    // Newest first: the cursor is the last id shown, and the next page is below it.
    let before = Some(page.after()?).filter(|id| *id > 0).map(AlertId);
    let rows = state
        .store
        .list_alerts(p.org_id, params.status.as_deref(), before, limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<AlertView> = rows.iter().take(limit as usize).map(alert_view).collect();
    let next_cursor = if more {
        rows.get(limit as usize - 1)
            .map(|a| super::cursor_after(a.id))
    } else {
        None
    };
    Ok(axum::Json(super::Page { items, next_cursor }))
}

/// Send a test alert to every recipient, through the alert channel, like any alert. It
/// shows in the alert log.
#[utoipa::path(post, path = "/alerts/test", tag = "alerts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    responses(
        (status = 202, body = TestAlertsQueued),
        (status = 409, description = "The organisation has no alert recipients: add one first", body = Problem, content_type = "application/problem+json"),
    ))]
async fn send_test(State(state): State<ApiState>, AsAdmin(p): AsAdmin) -> ApiResult<Response> {
    let queued = state
        .store
        .create_test_alerts(p.org_id, crate::clock::now_ms())
        .await?;
    if queued == 0 {
        return Err(ApiError::conflict(
            "the organisation has no alert recipients: add one with PUT /api/v1/alerts/settings",
        ));
    }
    tracing::info!(org_id = %p.org_id, actor = p.actor, queued, "test alerts queued");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(TestAlertsQueued { queued }),
    )
        .into_response())
}
