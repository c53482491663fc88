//! Webhook endpoints of the caller's organisation: where Herald sends its outbound events
//! (docs/EVENTS.md, docs/WEBHOOKS.md). Anyone may read endpoints and their delivery log;
//! admins create, change, delete, rotate secrets, replay deliveries and send test events,
//! as with channels (both send data out of Herald to a destination an admin chose).
//!
//! The signing secret (`whsec_` + base64 of 32 random bytes, the Standard Webhooks form) is
//! shown once, in the answer to create and to rotate-secret; it is sealed at rest under the
//! server's `secret_key` and never returned again, nor kept for Idempotency-Key replays.
//! The rules here (URL, events, description) are shared by the CLI and the dashboard.

use super::auth::{AsAdmin, AsViewer};
use super::idempotency::ReplayWithout;
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Problem};
use super::{ApiState, PageParams, cursor_after, decode, timestamp, timestamp_opt};
use crate::events::EventType;
use crate::ids::{NotificationId, WebhookEndpointId};
use crate::outbound::{OutboundGuard, ResolveError};
use crate::secrets::SecretKey;
use crate::store::webhook_endpoints::{
    DELIVERY_STATUSES, DeliveryRecord, EndpointChange, ReplayOutcome, WebhookEndpoint,
};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(replay))
        .routes(routes!(send_test))
}

/// The longest endpoint URL accepted.
pub const MAX_URL: usize = 2048;
/// The longest description accepted.
pub const MAX_DESCRIPTION: usize = 500;
/// The most deliveries one page of the log shows.
pub const MAX_DELIVERY_PAGE: i64 = 100;
/// How long resolving an endpoint's host at save time may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The signing secret's prefix (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";

// --------------------------------------------------------------------------------------
// Rules shared by the API, the CLI and the dashboard
// --------------------------------------------------------------------------------------

/// A field that breaks a rule: which, the rule, and what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: &'static str,
    pub rule: &'static str,
    pub detail: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

impl From<FieldProblem> for ApiError {
    fn from(p: FieldProblem) -> ApiError {
        ApiError::invalid(p.field, p.rule, p.detail)
    }
}

fn problem(field: &'static str, rule: &'static str, detail: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field,
        rule,
        detail: detail.into(),
    }
}

/// A new signing secret: `whsec_` + standard base64 of 32 random bytes.
pub fn new_signing_secret() -> String {
    // rand's thread generator is a CSPRNG seeded from the operating system.
    format!(
        "{SECRET_PREFIX}{}",
        STANDARD.encode(rand::random::<[u8; 32]>())
    )
}

/// The endpoint URL, trimmed, if it is an absolute http(s) URL of at most [`MAX_URL`]
/// characters, without credentials or fragment, whose host the outbound guard lets Herald
/// connect to (an IP literal is checked as it is; a name is resolved, within 5 s, and must
/// give an address the guard allows).
pub async fn check_url(guard: &OutboundGuard, url: &str) -> Result<String, FieldProblem> {
    let url = url.trim();
    if url.is_empty() {
        return Err(problem(
            "url",
            "required",
            "give the URL Herald should POST events to, e.g. https://example.org/herald",
        ));
    }
    if url.chars().count() > MAX_URL {
        return Err(problem(
            "url",
            "max_length",
            format!("must be at most {MAX_URL} characters"),
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        problem(
            "url",
            "format",
            format!("is not an absolute URL ({e}): write it like https://example.org/herald"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(problem(
            "url",
            "format",
            format!(
                "the scheme must be https (or http), not `{}`",
                parsed.scheme()
            ),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(problem(
            "url",
            "format",
            "must not carry a user name or password: endpoint URLs are listed to every viewer; the signature authenticates Herald to the receiver",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(problem(
            "url",
            "format",
            "must not have a #fragment (it is never sent to the server)",
        ));
    }
    let Some(host) = parsed.host_str().map(str::to_string) else {
        return Err(problem("url", "format", "must name a host"));
    };
    guard
        .check_url(&parsed)
        .map_err(|e| problem("url", "destination", e.to_string()))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    match tokio::time::timeout(RESOLVE_TIMEOUT, guard.resolve(&host, port)).await {
        Ok(Ok(_)) => Ok(parsed.to_string()),
        Ok(Err(ResolveError::Refused(e))) => Err(problem("url", "destination", e.to_string())),
        Ok(Err(e)) => Err(problem(
            "url",
            "destination",
            format!("{e}: check the host name, or use an address that resolves"),
        )),
        Err(_) => Err(problem(
            "url",
            "destination",
            format!(
                "resolving `{host}` took longer than {} s: check the host name",
                RESOLVE_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The subscribed types: known, subscribable, at least one, duplicates dropped (first
/// order kept). None gives the default subscription (every type but message.*).
pub fn check_events(events: Option<&[String]>) -> Result<Vec<EventType>, FieldProblem> {
    let Some(names) = events else {
        return Ok(EventType::default_subscription());
    };
    if names.is_empty() {
        return Err(problem(
            "events",
            "min_items",
            "name at least one event type, or leave the field out for every type but message.*",
        ));
    }
    let mut out: Vec<EventType> = Vec::new();
    for name in names {
        let t: EventType = name
            .trim()
            .parse()
            .map_err(|e: crate::events::UnknownEventType| {
                problem("events", "one_of", e.to_string())
            })?;
        if !t.is_subscribable() {
            return Err(problem(
                "events",
                "one_of",
                format!(
                    "`{t}` cannot be subscribed to: it is sent only on request to one endpoint (POST /webhooks/{{id}}/test)"
                ),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The description: trimmed, at most [`MAX_DESCRIPTION`] characters, no control
/// characters (empty is allowed).
pub fn check_description(text: &str) -> Result<String, FieldProblem> {
    let text = text.trim();
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(problem(
            "description",
            "max_length",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(problem(
            "description",
            "format",
            "must not contain control characters",
        ));
    }
    Ok(text.to_string())
}

/// The key secrets are sealed with, or a problem naming the fix.
pub fn sealing_key(secret_key: Option<&str>) -> ApiResult<SecretKey> {
    match SecretKey::from_settings(secret_key) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret-key-missing",
            "Herald has no key to seal secrets with",
            "webhook signing secrets are sealed at rest under the server's secret key, and none is configured: generate one with `herald keygen`, set HERALD_SECRET_KEY and restart Herald",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret-key-invalid",
            "Herald's secret key is not usable",
            e.to_string(),
        )),
    }
}

/// An RFC 3339 time, as `failed_since` takes it.
pub fn check_since(field: &'static str, text: &str) -> Result<i64, FieldProblem> {
    crate::clock::parse_rfc3339(text.trim()).map_err(|e| {
        problem(
            field,
            "format",
            format!("{e}; write an RFC 3339 time like 2026-12-01T00:00:00Z"),
        )
    })
}

// --------------------------------------------------------------------------------------
// Schemas
// --------------------------------------------------------------------------------------

/// An event type an endpoint can subscribe to (docs/EVENTS.md).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[allow(dead_code)] // Only the API document's description of `events`.
pub enum SubscribableEvent {
    #[serde(rename = "campaign.created")]
    CampaignCreated,
    #[serde(rename = "campaign.scheduled")]
    CampaignScheduled,
    #[serde(rename = "campaign.started")]
    CampaignStarted,
    #[serde(rename = "campaign.paused")]
    CampaignPaused,
    #[serde(rename = "campaign.resumed")]
    CampaignResumed,
    #[serde(rename = "campaign.cancelled")]
    CampaignCancelled,
    #[serde(rename = "campaign.completed")]
    CampaignCompleted,
    #[serde(rename = "campaign.stuck")]
    CampaignStuck,
    #[serde(rename = "campaign.unstuck")]
    CampaignUnstuck,
    #[serde(rename = "campaign.auto_paused")]
    CampaignAutoPaused,
    #[serde(rename = "campaign.in_doubt")]
    CampaignInDoubt,
    #[serde(rename = "channel.unavailable")]
    ChannelUnavailable,
    #[serde(rename = "channel.available")]
    ChannelAvailable,
    #[serde(rename = "contact.unsubscribed")]
    ContactUnsubscribed,
    #[serde(rename = "contact.resubscribed")]
    ContactResubscribed,
    #[serde(rename = "message.failed")]
    MessageFailed,
    #[serde(rename = "message.undelivered")]
    MessageUndelivered,
    #[serde(rename = "message.delivered")]
    MessageDelivered,
    #[serde(rename = "message.inbound")]
    MessageInbound,
    #[serde(rename = "webhook.endpoint_disabled")]
    WebhookEndpointDisabled,
}

/// Whether Herald sends to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Webhook {
    #[schema(example = "whk_3")]
    pub id: String,
    #[schema(example = "https://example.org/herald")]
    pub url: String,
    pub description: String,
    /// The subscribed event types.
    #[schema(value_type = Vec<SubscribableEvent>)]
    pub events: Vec<String>,
    pub status: EndpointStatus,
    /// When Herald stopped sending to it (null while enabled).
    pub disabled_at: Option<String>,
    /// Why (`410 Gone`, failing for 5 days, or who disabled it); null while enabled.
    pub disabled_reason: Option<String>,
    /// After a rotation, until when the previous secret also signs; null otherwise.
    pub previous_secret_until: Option<String>,
    pub created_at: String,
}

/// A new endpoint, with its signing secret: shown in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret (`whsec_…`, Standard Webhooks): verify each request's
    /// `webhook-signature` with it. Shown once; absent from Idempotency-Key replays.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where to POST events: http(s), at most 2048 characters, a destination the outbound
    /// guard allows (no loopback, private, link-local... address unless the operator allows it).
    #[schema(example = "https://example.org/herald", max_length = 2048)]
    pub url: String,
    /// The event types to send; omit for every type except message.failed,
    /// message.undelivered and message.delivered.
    #[serde(default)]
    #[schema(value_type = Option<Vec<SubscribableEvent>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

/// A change: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<SubscribableEvent>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// false stops sending (pending deliveries wait); true sends again, also after Herald
    /// disabled the endpoint itself.
    pub enabled: Option<bool>,
}

/// The new signing secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    #[schema(example = "whk_3")]
    pub id: String,
    /// Absent from Idempotency-Key replays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the previous secret also signs (24 h): requests carry both signatures.
    pub previous_secret_until: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// The `next_cursor` of the previous page, unchanged; omit for the first page.
    pub cursor: Option<String>,
    /// Deliveries per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Only deliveries in this status.
    #[param(inline)]
    pub status: Option<DeliveryStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// To be sent (at `next_attempt_at`).
    Pending,
    Delivered,
    /// Herald gave up (retries exhausted, or the endpoint was disabled).
    Failed,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => DELIVERY_STATUSES[0],
            DeliveryStatus::Delivered => DELIVERY_STATUSES[1],
            DeliveryStatus::Failed => DELIVERY_STATUSES[2],
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub at: String,
    /// The HTTP status the endpoint answered; null when no answer came.
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    /// The start of the answer's body (bounded).
    pub response_excerpt: Option<String>,
    /// The transport error when there was no answer (timeout, refused, TLS...).
    pub error: Option<String>,
}

/// One event for this endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// The event: the `webhook-id` header of every attempt.
    #[schema(example = "ntf_12")]
    pub event_id: String,
    #[schema(example = "campaign.completed")]
    pub event_type: String,
    /// The endpoint's sequence number for the event (`seq` in the payload).
    pub seq: i64,
    #[schema(inline)]
    pub status: DeliveryStatus,
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    /// The newest attempts first (at most 20).
    pub attempt_log: Vec<Attempt>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deliveries {
    pub items: Vec<Delivery>,
    /// Pass as `cursor` for older deliveries; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Replay this event (`ntf_N`), which must have been given to the endpoint.
    #[schema(example = "ntf_12")]
    pub event_id: Option<String>,
    /// Or replay every failed delivery of the endpoint whose event happened at or after
    /// this time (RFC 3339).
    #[schema(example = "2026-12-01T00:00:00Z")]
    pub failed_since: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    /// Deliveries set back to pending, due now, with a fresh retry schedule.
    pub replayed: i64,
    /// Deliveries that were pending already (unchanged).
    pub already_pending: i64,
    /// More failed deliveries are left than one replay takes (10,000): replay again.
    pub more: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestSent {
    /// The test event (`webhook.test`): its delivery shows in the log.
    #[schema(example = "ntf_13")]
    pub event_id: String,
    pub seq: i64,
}

// --------------------------------------------------------------------------------------
// Views
// --------------------------------------------------------------------------------------

pub fn view(e: &WebhookEndpoint, now: i64) -> Webhook {
    Webhook {
        id: e.id.to_string(),
        url: e.url.clone(),
        description: e.description.clone(),
        events: e.events.iter().map(|t| t.as_str().to_string()).collect(),
        status: if e.disabled_at.is_some() {
            EndpointStatus::Disabled
        } else {
            EndpointStatus::Enabled
        },
        disabled_at: timestamp_opt(e.disabled_at),
        disabled_reason: e.disabled_reason.clone(),
        previous_secret_until: e
            .previous_until
            .filter(|until| *until > now && e.previous_secret_sealed.is_some())
            .map(timestamp),
        created_at: timestamp(e.created_at),
    }
}

pub fn delivery_view(d: DeliveryRecord) -> Delivery {
    let status = match d.status.as_str() {
        "delivered" => DeliveryStatus::Delivered,
        "failed" => DeliveryStatus::Failed,
        _ => DeliveryStatus::Pending,
    };
    Delivery {
        event_id: d.event_id.to_string(),
        event_type: d.event_type,
        seq: d.seq,
        next_attempt_at: (status == DeliveryStatus::Pending).then(|| timestamp(d.next_attempt_at)),
        status,
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        created_at: timestamp(d.created_at),
        delivered_at: timestamp_opt(d.delivered_at),
        attempt_log: d
            .attempt_log
            .into_iter()
            .map(|a| Attempt {
                at: timestamp(a.at),
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                response_excerpt: a.response_excerpt,
                error: a.error,
            })
            .collect(),
    }
}

fn replay_view(o: ReplayOutcome) -> ReplayResult {
    ReplayResult {
        replayed: o.replayed,
        already_pending: o.already_pending,
        more: o.more,
    }
}

fn endpoint_id(id: &str) -> ApiResult<WebhookEndpointId> {
    decode(id)
}

/// Responds with a body showing a secret once; replays get `redacted`.
fn once(status: StatusCode, location: Option<String>, body: String, redacted: String) -> Response {
    let mut response = match location {
        Some(l) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::LOCATION, l),
            ],
            body,
        )
            .into_response(),
        None => (
            status,
            [(header::CONTENT_TYPE, "application/json".to_string())],
            body,
        )
            .into_response(),
    };
    response.extensions_mut().insert(ReplayWithout(redacted));
    response
}

// --------------------------------------------------------------------------------------
// Handlers
// --------------------------------------------------------------------------------------

/// Webhook endpoints of the organisation, in creation order.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(PageParams),
    responses(
        (status = 200, body = super::Page<Webhook>),
    ))]
async fn list_webhooks(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<super::Page<Webhook>>> {
    let limit = page.limit()?;
    let rows = state
        .store
        .webhook_endpoints_page(p.org_id, page.after_id()?, limit + 1)
        .await?;
    let now = crate::clock::now_ms();
    Ok(axum::Json(super::Page::from_rows(
        rows,
        limit,
        |e| e.id,
        |e| view(&e, now),
    )))
}

/// Create an endpoint. The answer holds its signing secret, the only time it is shown.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same response (without the secret), no second effect")),
    request_body = NewWebhook,
    responses(
        (status = 201, body = CreatedWebhook, headers(("Location" = String, description = "The new endpoint"))),
        (status = 422, description = "A field breaks a rule (the URL's destination is refused, an event type is unknown...), or the server has no secret key", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_webhook(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiJson(body): ApiJson<NewWebhook>,
) -> ApiResult<Response> {
    let events = check_events(body.events.as_deref())?;
    let description = check_description(body.description.as_deref().unwrap_or(""))?;
    let url = check_url(&state.context.outbound, &body.url).await?;
    let key = sealing_key(state.context.secret_key.as_deref())?;
    let secret = new_signing_secret();
    let endpoint = state
        .store
        .create_webhook_endpoint(p.org_id, &url, &description, &events, &key, &secret)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        webhook_endpoint_id = %endpoint.id,
        actor = p.actor,
        events = events.len(),
        "webhook endpoint created"
    );
    let webhook = view(&endpoint, crate::clock::now_ms());
    let location = format!("/api/v1/webhooks/{}", webhook.id);
    let redacted = serde_json::to_string(&CreatedWebhook {
        webhook: webhook.clone(),
        secret: None,
    })
    .unwrap_or_default();
    let body = serde_json::to_string(&CreatedWebhook {
        webhook,
        secret: Some(secret),
    })
    .map_err(ApiError::internal)?;
    Ok(once(StatusCode::CREATED, Some(location), body, redacted))
}

/// One endpoint (never its secret).
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Webhook endpoint id")),
    responses(
        (status = 200, body = Webhook),
    ))]
async fn get_webhook(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<Webhook>> {
    let id = endpoint_id(&id)?;
    let endpoint = state.store.webhook_endpoint(p.org_id, id).await?;
    Ok(axum::Json(view(&endpoint, crate::clock::now_ms())))
}

/// Change an endpoint's URL, events or description, or disable/enable it.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "Webhook endpoint id")),
    request_body = WebhookChange,
    responses(
        (status = 200, body = Webhook),
    ))]
async fn update_webhook(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<WebhookChange>,
) -> ApiResult<axum::Json<Webhook>> {
    let id = endpoint_id(&id)?;
    // Another organisation's endpoint is "not found" before any rule is checked.
    state.store.webhook_endpoint(p.org_id, id).await?;
    let events = match &body.events {
        Some(list) => Some(check_events(Some(list))?),
        None => None,
    };
    let description = body
        .description
        .as_deref()
        .map(check_description)
        .transpose()?;
    let url = match &body.url {
        Some(u) => Some(check_url(&state.context.outbound, u).await?),
        None => None,
    };
    let change = EndpointChange {
        url,
        description,
        events,
        enabled: body
            .enabled
            .map(|on| (on, format!("disabled by {}", p.actor))),
    };
    let endpoint = state
        .store
        .update_webhook_endpoint(p.org_id, id, &change)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        webhook_endpoint_id = %id,
        actor = p.actor,
        enabled = ?body.enabled,
        "webhook endpoint changed"
    );
    Ok(axum::Json(view(&endpoint, crate::clock::now_ms())))
}

/// Delete an endpoint. Its deliveries go with it: pending ones are never sent.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "Webhook endpoint id")),
    responses(
        (status = 204, description = "Deleted, with its deliveries (the log says how many pending ones)"),
    ))]
async fn delete_webhook(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = endpoint_id(&id)?;
    let gone = state.store.delete_webhook_endpoint(p.org_id, id).await?;
    tracing::info!(
        org_id = %p.org_id,
        webhook_endpoint_id = %id,
        actor = p.actor,
        pending_deliveries_dropped = gone.pending_deliveries,
        deliveries_deleted = gone.deliveries,
        "webhook endpoint deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the signing secret. The new one is in this answer only; the previous one also
/// signs for 24 hours, so receivers can switch without missing a request.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "webhooks",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(
        ("id" = String, Path, description = "Webhook endpoint id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response (without the secret), no second effect"),
    ),
    responses(
        (status = 200, body = RotatedSecret),
        (status = 422, description = "The server has no secret key", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rotate_secret(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = endpoint_id(&id)?;
    state.store.webhook_endpoint(p.org_id, id).await?;
    let key = sealing_key(state.context.secret_key.as_deref())?;
    let secret = new_signing_secret();
    let now = crate::clock::now_ms();
    let endpoint = state
        .store
        .rotate_webhook_secret(p.org_id, id, &key, &secret, now)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        webhook_endpoint_id = %id,
        actor = p.actor,
        "webhook signing secret rotated"
    );
    let until = timestamp(endpoint.previous_until.unwrap_or(now));
    let rotated = |secret: Option<String>| RotatedSecret {
        id: id.to_string(),
        secret,
        previous_secret_until: until.clone(),
    };
    let redacted = serde_json::to_string(&rotated(None)).unwrap_or_default();
    let body = serde_json::to_string(&rotated(Some(secret))).map_err(ApiError::internal)?;
    Ok(once(StatusCode::OK, None, body, redacted))
}

/// The endpoint's delivery log, newest first: every event given to it, with its status and
/// its newest attempts (time, HTTP status, latency, an excerpt of the answer or the error).
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Webhook endpoint id"), DeliveryQuery),
    responses(
        (status = 200, body = Deliveries),
    ))]
async fn list_deliveries(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<axum::Json<Deliveries>> {
    let id = endpoint_id(&id)?;
    let params = PageParams {
        cursor: q.cursor,
        limit: q.limit,
    };
    let limit = params.limit.unwrap_or(super::DEFAULT_PAGE);
    if !(1..=MAX_DELIVERY_PAGE).contains(&limit) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid-query",
            title: "A query parameter is not valid",
            ..ApiError::invalid(
                "limit",
                "range",
                format!("limit must be between 1 and {MAX_DELIVERY_PAGE}, not {limit}"),
            )
        });
    }
    let before = params
        .cursor
        .is_some()
        .then(|| params.after_id())
        .transpose()?;
    let rows = state
        .store
        .webhook_deliveries_page(
            p.org_id,
            id,
            q.status.map(DeliveryStatus::as_str),
            before,
            limit + 1,
        )
        .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    let mut rows = rows;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        rows.last().map(|d| cursor_after(d.id))
    } else {
        None
    };
    Ok(axum::Json(Deliveries {
        items: rows.into_iter().map(delivery_view).collect(),
        next_cursor,
    }))
}

/// Send an event again: one event (`event_id`), or every failed delivery since a time
/// (`failed_since`). Each delivery goes back to pending, due now, with a fresh retry
/// schedule; its earlier attempts stay in the log.
#[utoipa::path(post, path = "/webhooks/{id}/replay", tag = "webhooks",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(
        ("id" = String, Path, description = "Webhook endpoint id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    request_body = ReplayRequest,
    responses(
        (status = 200, body = ReplayResult),
        (status = 409, description = "The endpoint is disabled: enable it first", body = Problem, content_type = "application/problem+json"),
    ))]
async fn replay(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> ApiResult<axum::Json<ReplayResult>> {
    let id = endpoint_id(&id)?;
    state.store.webhook_endpoint(p.org_id, id).await?;
    let now = crate::clock::now_ms();
    let outcome = match (&body.event_id, &body.failed_since) {
        (Some(event), None) => {
            let event_id = event.trim().parse::<NotificationId>().map_err(|_| {
                ApiError::invalid(
                    "event_id",
                    "format",
                    format!(
                        "`{}` is not an event id: write ntf_N, as the delivery log shows it",
                        event.chars().take(64).collect::<String>()
                    ),
                )
            })?;
            state
                .store
                .replay_webhook_event(p.org_id, id, event_id, now)
                .await?
        }
        (None, Some(since)) => {
            let since = check_since("failed_since", since)?;
            state
                .store
                .replay_failed_webhook_deliveries(p.org_id, id, since, now)
                .await?
        }
        _ => {
            return Err(ApiError::invalid(
                "event_id",
                "one_of",
                "give exactly one of `event_id` (one event) and `failed_since` (every failed delivery since then)",
            ));
        }
    };
    tracing::info!(
        org_id = %p.org_id,
        webhook_endpoint_id = %id,
        actor = p.actor,
        replayed = outcome.replayed,
        "webhook deliveries replayed"
    );
    Ok(axum::Json(replay_view(outcome)))
}

/// Send a `webhook.test` event to this endpoint only. It is delivered like any event (with
/// the endpoint's next sequence number) and shows in the delivery log.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(
        ("id" = String, Path, description = "Webhook endpoint id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    responses(
        (status = 202, body = TestSent, headers(("Location" = String, description = "The endpoint's delivery log"))),
        (status = 409, description = "The endpoint is disabled: enable it first", body = Problem, content_type = "application/problem+json"),
    ))]
async fn send_test(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = endpoint_id(&id)?;
    let sent = state
        .store
        .send_webhook_test_event(p.org_id, id, &p.actor, crate::clock::now_ms())
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        webhook_endpoint_id = %id,
        notification_id = %sent.event_id,
        actor = p.actor,
        "webhook test event written"
    );
    let location = format!("/api/v1/webhooks/{}/deliveries", id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(TestSent {
            event_id: sent.event_id.to_string(),
            seq: sent.seq,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_event_names_are_the_subscribable_catalogue() {
        let documented: Vec<String> = EventType::ALL
            .iter()
            .filter(|t| t.is_subscribable())
            .map(|t| t.as_str().to_string())
            .collect();
        let schema_names: Vec<String> = documented
            .iter()
            .map(|name| {
                let parsed: SubscribableEvent =
                    serde_json::from_value(serde_json::json!(name)).unwrap();
                serde_json::to_value(parsed)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(schema_names, documented);
        assert!(
            serde_json::from_value::<SubscribableEvent>(serde_json::json!("webhook.test")).is_err()
        );
    }

    #[test]
    fn secrets_are_whsec_and_32_random_bytes() {
        let a = new_signing_secret();
        let b = new_signing_secret();
        assert_ne!(a, b);
        let raw = STANDARD
            .decode(a.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn events_are_checked_deduplicated_and_default_to_every_non_message_type() {
        assert_eq!(
            check_events(None).unwrap(),
            EventType::default_subscription()
        );
        let names = vec![
            "campaign.completed".to_string(),
            "message.failed".into(),
            "campaign.completed".into(),
        ];
        assert_eq!(
            check_events(Some(&names)).unwrap(),
            vec![EventType::CampaignCompleted, EventType::MessageFailed]
        );
        assert_eq!(check_events(Some(&[])).unwrap_err().rule, "min_items");
        let test = vec!["webhook.test".to_string()];
        assert_eq!(check_events(Some(&test)).unwrap_err().field, "events");
        let unknown = vec!["campaign.finished".to_string()];
        assert!(
            check_events(Some(&unknown))
                .unwrap_err()
                .detail
                .contains("campaign.completed")
        );
    }

    #[tokio::test]
    async fn urls_must_be_http_bounded_and_allowed_by_the_guard() {
        let strict = OutboundGuard::new(false, Vec::new());
        let open = OutboundGuard::allow_all();
        assert_eq!(
            check_url(&open, " http://127.0.0.1:9/hook ").await.unwrap(),
            "http://127.0.0.1:9/hook"
        );
        for (bad, rule) in [
            ("ftp://example.org/x", "format"),
            ("not a url", "format"),
            ("https://user:pw@example.org/", "format"),
            ("https://example.org/#frag", "format"),
            ("", "required"),
        ] {
            assert_eq!(check_url(&open, bad).await.unwrap_err().rule, rule, "{bad}");
        }
        let long = format!("https://example.org/{}", "a".repeat(MAX_URL));
        assert_eq!(
            check_url(&open, &long).await.unwrap_err().rule,
            "max_length"
        );
        for private in [
            "http://127.0.0.1/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest",
            "http://10.0.0.1/",
            "http://localhost:8080/",
        ] {
            let e = check_url(&strict, private).await.unwrap_err();
            assert_eq!(e.rule, "destination", "{private}");
        }
    }
}
