//! Channels of the caller's organisation: the providers campaigns send through. Admins
//! create, change, delete and test them; anyone may read them. Each kind's configuration
//! is checked by the kind's own rules (the same ones `herald channel create` applies), and
//! secrets (auth tokens, access tokens, passwords) are write-only: sealed at rest under the
//! server's `secret_key`, never returned, never logged. Responses name the secrets that
//! are set, nothing more.

use super::auth::{AsAdmin, AsViewer, Principal};
use super::check_name;
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, FieldError, Problem};
use super::{ApiState, Page, PageParams, decode, timestamp};
use crate::channel_kind::{ChannelKind, UnknownChannelKind};
use crate::channels::{
    self, BuildContext, ChannelRegistry, SendRequest, SendResult, SettingProblem, SettingsError,
};
use crate::ids::{CampaignId, ChannelId, MessageId};
use crate::secrets::{SecretError, SecretKey};
use crate::store::ChannelInfo;
use crate::store::channels_admin::{ChannelDeletion, ChannelUpdate};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(get_channel, update_channel, delete_channel))
        .routes(routes!(test_channel))
        .routes(routes!(set_channel_pricing, clear_channel_pricing))
}

/// The longest string accepted as a configuration value, and as a secret.
const MAX_CONFIG_STRING: usize = 2000;
const MAX_SECRET_STRING: usize = 4096;
/// The largest rate limit accepted (messages, or SMS segments, per second).
const MAX_RATE: f64 = 100_000.0;
const MAX_TEST_BODY: usize = 10_000;
const DEFAULT_TEST_BODY: &str = "Test message from Herald";
/// How long a test send may take before its outcome is reported unknown.
const TEST_SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, ToSchema)]
pub struct Channel {
    #[schema(example = "chn_1")]
    pub id: String,
    pub name: String,
    /// sandbox, twilio, whatsapp or smtp.
    #[schema(example = json!(crate::channel_kind::twilio::NAME))]
    pub kind: String,
    /// The kind's public configuration (never a secret).
    #[schema(value_type = Object, example = json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "from": "+15017122661"}))]
    pub config: Value,
    /// The names of the secrets that are set; their values are never returned.
    #[schema(example = json!(["auth_token"]))]
    pub secrets_set: Vec<String>,
    /// Messages (SMS: segments) per second across all instances; null for no limit.
    pub rate_per_sec: Option<f64>,
    pub created_at: String,
    /// `unavailable` while the provider cannot be reached: the engine paused the
    /// channel's sending campaigns and probes the provider; they resume when it answers.
    pub availability: Availability,
    /// Since when the channel is unavailable (null while available).
    #[schema(example = "2026-12-02T10:42:05.120Z")]
    pub unavailable_since: Option<String>,
    /// Why, in one line (null while available).
    #[schema(example = "connection refused")]
    pub unavailable_reason: Option<String>,
    /// What a unit costs (an SMS segment on an SMS channel, a message otherwise), for the
    /// estimate before a campaign starts; null: no prices set.
    pub pricing: Option<ChannelPricing>,
}

/// A channel's prices, as decimal strings (kept to a millionth).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPricing {
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// The price per unit where no prefix matches; null: unpriced there.
    #[schema(example = "0.0079")]
    pub per_unit: Option<String>,
    /// Prices by destination prefix (`+` and 1 to 8 digits); the longest match wins.
    #[serde(default)]
    #[schema(example = json!({"+44": "0.04"}))]
    pub prefixes: std::collections::BTreeMap<String, String>,
}

impl From<&crate::pricing::Pricing> for ChannelPricing {
    fn from(p: &crate::pricing::Pricing) -> ChannelPricing {
        ChannelPricing {
            currency: p.currency.clone(),
            per_unit: p.default.map(|m| m.to_string()),
            prefixes: p
                .by_prefix
                .iter()
                .map(|(prefix, m)| (prefix.clone(), m.to_string()))
                .collect(),
        }
    }
}

/// Whether the channel's provider can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Available,
    Unavailable,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    #[schema(example = "twilio-us")]
    pub name: String,
    /// sandbox, twilio, whatsapp or smtp.
    #[schema(example = json!(crate::channel_kind::twilio::NAME))]
    pub kind: String,
    /// Kind-specific, the keys of `herald channel create`'s flags:
    /// sandbox `latency_ms`, `fail_rate`, `permanent_fail_rate`, `delivery_delay_ms`;
    /// twilio `account_sid`, `from` or `messaging_service_sid`, `content_sid`, `whatsapp`,
    /// `base_url`; whatsapp `phone_number_id`, `api_version`, `template`,
    /// `template_language`, `business_account_id`, `base_url`; smtp `host`, `port`, `tls` (none, starttls, tls),
    /// `from`, `username`, `default_subject`, `max_connections`, `allow_plaintext_auth`
    /// (true to send the password with `tls` none; refused otherwise).
    /// Destinations in loopback, private, link-local, unique-local, multicast and
    /// unspecified ranges are refused when sending unless the operator allows them
    /// (`outbound_allow_private`, `outbound_allow_cidrs`).
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "from": "+15017122661"}))]
    pub config: Option<Value>,
    /// Write-only: twilio `auth_token`; whatsapp `access_token`, `app_secret`,
    /// `verify_token`; smtp `password` (with `config.username`). Sealed at rest.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"auth_token": "your-auth-token"}))]
    pub secrets: Option<Value>,
    /// Messages (SMS: segments) per second across all instances; omit for no limit.
    pub rate_per_sec: Option<f64>,
}

/// A change: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelChange {
    pub name: Option<String>,
    /// Merged into the configuration (RFC 7396): a key given replaces its value, a key set
    /// to null is removed. The result is checked like a new channel's.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Secrets to replace (a secret set to null is removed); those not named stay. A change
    /// of the endpoint (`base_url`, `host`, `port`, `tls`, `allow_plaintext_auth`) needs
    /// all of them again: secrets are never sent to an endpoint, or over a connection,
    /// they were not given for.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub secrets: Option<Value>,
    /// A new rate limit; null removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    pub rate_per_sec: Option<Option<f64>>,
}

/// A field that is present (even as null) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelTest {
    /// The recipient: an E.164 phone number or an email address, as the kind sends to.
    #[schema(example = "+15550001234")]
    pub to: String,
    /// At most 10000 characters; "Test message from Herald" when omitted.
    pub body: Option<String>,
}

/// What the provider answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    /// The provider took the message.
    Accepted,
    /// A temporary refusal (rate limit, provider busy); a campaign would retry.
    Transient,
    /// The provider refused the message for this recipient or content.
    Permanent,
    /// The recipient has opted out at the provider.
    OptedOut,
    /// The channel cannot send at all (bad credentials, suspended account, bad sender).
    ChannelCannotSend,
    /// Whether the provider took it is not known (no answer in time).
    Unknown,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    pub outcome: TestOutcome,
    /// The provider's id for the message, when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// What the provider said, when not accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When transient: how long the provider asked to wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

// --------------------------------------------------------------------------------------
// The kinds' rules
// --------------------------------------------------------------------------------------

/// Configuration keys that say where the provider is and how the way there is protected
/// (every kind's endpoint settings, as their descriptors mark them): secrets given for one
/// endpoint are never sent to another, nor over a weaker connection (SMTP `tls` starttls
/// to none would send the password in clear).
fn endpoint_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    for field in crate::channel_kind::ALL
        .iter()
        .flat_map(|k| k.fields())
        .filter(|f| f.endpoint)
    {
        if !keys.contains(&field.key) {
            keys.push(field.key);
        }
    }
    keys
}

/// The keys of a kind's configuration, longest first (to find one named in a message).
fn config_fields(kind: ChannelKind) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = kind.config_fields().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    keys
}

/// `kind` is not a channel kind: the 422 naming it and the kinds there are.
fn unknown_kind(e: &UnknownChannelKind) -> ApiError {
    ApiError::invalid("kind", "one_of", e.to_string())
}

fn field_error(field: String, rule: &str, detail: impl Into<String>) -> FieldError {
    FieldError {
        field,
        rule: rule.to_string(),
        detail: detail.into(),
    }
}

/// A 422 naming every field that broke a rule.
fn invalid_all(mut errors: Vec<FieldError>) -> ApiError {
    if errors.is_empty() {
        return ApiError::invalid("body", "format", "the request is not valid");
    }
    let first = errors.remove(0);
    let mut e = ApiError::invalid(&first.field, &first.rule, first.detail);
    e.errors.extend(errors);
    e
}

/// The `section.key` a kind's flag (`--auth-token`) stands for.
fn field_of_flag(kind: ChannelKind, flag: &str) -> String {
    let key = flag.trim_start_matches('-').replace('-', "_");
    if key == "kind" {
        return key;
    }
    let section = if kind.secret_fields().any(|k| k == key) {
        "secrets"
    } else {
        "config"
    };
    format!("{section}.{key}")
}

/// The `--flags` a message names, in order, with their positions.
fn flags_in(message: &str) -> Vec<(usize, usize)> {
    let bytes = message.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == b'-'
            && bytes[i + 1] == b'-'
            && bytes[i + 2].is_ascii_lowercase()
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'-')
        {
            let mut end = i + 2;
            while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'-') {
                end += 1;
            }
            out.push((i, end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// A kind's rule broken, as the kind words it (naming CLI flags), turned into the field it
/// is about, the rule, and the message with the flags named as API fields.
fn rule_error(kind: ChannelKind, message: &str) -> FieldError {
    let flags = flags_in(message);
    // "--username needs --password": the missing one is the field.
    let chosen = flags
        .iter()
        .find(|(start, _)| message[..*start].ends_with(" needs "))
        .or(flags.first())
        .map(|(s, e)| field_of_flag(kind, &message[*s..*e]));
    let field = chosen.unwrap_or_else(|| {
        config_fields(kind)
            .iter()
            .find(|k| message.contains(**k) || message.contains(&k.replace('_', " ")))
            .map(|k| format!("config.{k}"))
            .unwrap_or_else(|| "config".to_string())
    });
    let rule = if message.contains(" needs ") || message.contains("must not be empty") {
        "required"
    } else if message.contains("not both") {
        "exclusive"
    } else if message.contains("only applies with") {
        "requires"
    } else if message.contains("probability")
        || message.contains("exceed")
        || message.contains("must be from")
    {
        "range"
    } else {
        "format"
    };
    let mut detail = String::with_capacity(message.len());
    let mut last = 0;
    for (s, e) in &flags {
        detail.push_str(&message[last..*s]);
        detail.push_str(&field_of_flag(kind, &message[*s..*e]));
        last = *e;
    }
    detail.push_str(&message[last..]);
    field_error(field, rule, detail)
}

/// Checks strings against the length limits.
fn check_lengths(section: &str, values: &Map<String, Value>, max: usize) -> Vec<FieldError> {
    values
        .iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) if s.chars().count() > max => Some(field_error(
                format!("{section}.{k}"),
                "max_length",
                format!("must be at most {max} characters"),
            )),
            _ => None,
        })
        .collect()
}

/// A channel of `kind` with this configuration and these secrets, checked by the kind's
/// own rules (`channels::Implementation::check`): the configuration and the secrets as
/// stored (None: no secrets to seal).
fn check_channel(
    kind: &str,
    config: &Map<String, Value>,
    secrets: &Map<String, Value>,
) -> ApiResult<(Value, Option<Value>)> {
    let mut errors = check_lengths("config", config, MAX_CONFIG_STRING);
    errors.extend(check_lengths("secrets", secrets, MAX_SECRET_STRING));
    if !errors.is_empty() {
        return Err(invalid_all(errors));
    }
    let kind: ChannelKind = kind.parse().map_err(|e| unknown_kind(&e))?;
    let Some(implementation) = channels::implementation(kind) else {
        return Err(unknown_kind(&UnknownChannelKind {
            given: kind.to_string(),
        }));
    };
    match (implementation.check)(config, secrets) {
        Ok(checked) => Ok((checked.config, checked.secrets)),
        Err(SettingsError::Invalid(problems)) => Err(invalid_all(
            problems
                .into_iter()
                .map(|p| match p {
                    SettingProblem::Field {
                        field,
                        rule,
                        detail,
                    } => field_error(field, rule, detail),
                    SettingProblem::Rule(message) => rule_error(kind, &message),
                })
                .collect(),
        )),
        Err(SettingsError::Internal(e)) => Err(ApiError::internal(e)),
    }
}

/// The smallest rate limit accepted: one message per 1,000 s. Below it a rate is no use,
/// and a subnormal one (5e-324) failed in PostgreSQL's binary format.
pub const MIN_RATE: f64 = 0.001;

fn check_rate(rate: Option<f64>) -> ApiResult<Option<f64>> {
    match rate {
        Some(r) if !(MIN_RATE..=MAX_RATE).contains(&r) => Err(ApiError::invalid(
            "rate_per_sec",
            "range",
            format!("must be between {MIN_RATE} and {MAX_RATE} messages per second, not {r}"),
        )),
        other => Ok(other),
    }
}

/// A JSON object, or (absent or null) an empty one.
/// `config` or `secrets` as an object whose keys are setting names (non-blank, at most 100
/// characters, no control characters; the document states it): `{"": null}` once reached
/// the store as a secret to remove and failed there.
fn object(field: &str, value: Option<Value>) -> ApiResult<Map<String, Value>> {
    let map = match value {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::invalid(field, "type", "must be a JSON object")),
    };
    if let Some(bad) = map
        .keys()
        .find(|k| k.trim().is_empty() || k.chars().count() > 100 || k.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            field,
            "known_field",
            format!(
                "`{bad}` is not a setting name: names are 1 to 100 characters without control characters"
            ),
        ));
    }
    Ok(map)
}

/// RFC 7396 merge: keys of `patch` replace, nulls remove.
fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            target.remove(&k);
        } else {
            target.insert(k, v);
        }
    }
}

/// The configured secret key; 422 when there is none (or it is not a key).
fn secret_key(ctx: &BuildContext) -> ApiResult<SecretKey> {
    match SecretKey::from_settings(ctx.secret_key.as_deref()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret-key-missing",
            "Herald has no key to seal secrets with",
            "channel secrets are sealed at rest under the server's secret key, and none is configured: generate one with `herald keygen`, set HERALD_SECRET_KEY and restart Herald",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret-key-invalid",
            "Herald's secret key is not usable",
            e.to_string(),
        )),
    }
}

/// The channel's secrets, opened (empty when it has none).
fn open_secrets(ctx: &BuildContext, info: &ChannelInfo) -> ApiResult<Map<String, Value>> {
    let Some(sealed) = &info.secrets else {
        return Ok(Map::new());
    };
    let key = secret_key(ctx)?;
    match crate::secrets::open(&key, info.id, sealed) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(unreadable(&SecretError::Damaged("not an object".into()))),
        Err(e) => Err(unreadable(&e)),
    }
}

fn unreadable(e: &SecretError) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "secrets-unreadable",
        "The channel's secrets cannot be opened",
        format!("{e}; give all of the channel's secrets again to replace them"),
    )
}

/// The names of the channel's secrets that are set (never their values). Without a key
/// to open them, the names the kind requires given the configuration.
fn secret_names(ctx: &BuildContext, info: &ChannelInfo) -> Vec<String> {
    if info.secrets.is_none() {
        return Vec::new();
    }
    let mut names: Vec<String> = match open_secrets(ctx, info) {
        Ok(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        Err(_) => info
            .kind
            .parse::<ChannelKind>()
            .map(|kind| kind.fields())
            .unwrap_or_default()
            .iter()
            .filter(|f| f.is_secret())
            .filter(|f| f.with.is_none_or(|key| info.config.get(key).is_some()))
            .map(|f| f.key.to_string())
            .collect(),
    };
    names.sort();
    names
}

fn view(ctx: &BuildContext, info: ChannelInfo) -> Channel {
    Channel {
        id: info.id.to_string(),
        secrets_set: secret_names(ctx, &info),
        name: info.name,
        kind: info.kind,
        config: info.config,
        rate_per_sec: info.rate_per_sec,
        created_at: timestamp(info.created_at),
        availability: Availability::Available,
        unavailable_since: None,
        unavailable_reason: None,
        pricing: info.pricing.as_ref().map(ChannelPricing::from),
    }
}

/// The channel as the API shows it, with its availability from `outages`.
fn view_with(
    ctx: &BuildContext,
    info: ChannelInfo,
    outages: &[crate::store::outage::ChannelOutage],
) -> Channel {
    let outage = outages.iter().find(|o| o.channel_id == info.id).cloned();
    let mut channel = view(ctx, info);
    if let Some(o) = outage {
        channel.availability = Availability::Unavailable;
        channel.unavailable_since = Some(timestamp(o.since));
        channel.unavailable_reason = Some(o.reason);
    }
    channel
}

/// The outage of one channel, as a list for [`view_with`].
async fn outage_of(
    state: &ApiState,
    channel_id: ChannelId,
) -> ApiResult<Vec<crate::store::outage::ChannelOutage>> {
    Ok(state
        .store
        .channel_outage(channel_id)
        .await?
        .into_iter()
        .collect())
}

fn name_taken(name: &str) -> ApiError {
    ApiError {
        errors: vec![field_error(
            "name".into(),
            "unique",
            "another channel of the organisation has this name",
        )],
        ..ApiError::conflict(format!(
            "a channel named `{name}` already exists in this organisation: pick another name"
        ))
    }
}

// --------------------------------------------------------------------------------------
// Handlers
// --------------------------------------------------------------------------------------

/// Channels of the organisation, in creation order.
#[utoipa::path(get, path = "/channels", tag = "channels",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(PageParams),
    responses(
        (status = 200, body = Page<Channel>),
    ))]
async fn list_channels(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<Page<Channel>>> {
    let limit = page.limit()?;
    let rows = state
        .store
        .org_channels_page(p.org_id, page.after_id()?, limit + 1)
        .await?;
    let ctx = &state.context;
    let outages = state.store.org_channel_outages(p.org_id).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |c| c.id,
        |c| view_with(ctx, c, &outages),
    )))
}

/// Create a channel. Secrets are sealed at rest under the server's `secret_key` and are
/// never returned: the channel lists their names in `secrets_set`.
#[utoipa::path(post, path = "/channels", tag = "channels",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect")),
    request_body = NewChannel,
    responses(
        (status = 201, body = Channel, headers(("Location" = String, description = "The new channel"))),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks the kind's rules, or secrets were given and the server has no secret key", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_channel(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiJson(body): ApiJson<NewChannel>,
) -> ApiResult<Response> {
    let name = check_name("name", &body.name)?;
    let kind: ChannelKind = body.kind.parse().map_err(|e| unknown_kind(&e))?;
    let rate = check_rate(body.rate_per_sec)?;
    let config = object("config", body.config)?;
    let mut secrets = object("secrets", body.secrets)?;
    secrets.retain(|_, v| !v.is_null());
    let (config, secrets) = check_channel(kind.as_str(), &config, &secrets)?;
    let key = match &secrets {
        Some(_) => Some(secret_key(&state.context)?),
        None => None,
    };
    let sealed = key.as_ref().zip(secrets.as_ref());
    let id = state
        .store
        .create_channel_with(p.org_id, &name, kind.as_str(), &config, sealed, rate)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => name_taken(&name),
            e => e.into(),
        })?;
    tracing::info!(
        org_id = %p.org_id,
        channel_id = %id,
        actor = p.actor,
        kind = kind.as_str(),
        "channel created"
    );
    let info = state.store.org_channel(p.org_id, id).await?;
    let location = format!("/api/v1/channels/{}", id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view(&state.context, info)),
    )
        .into_response())
}

/// One channel: its configuration and the names of the secrets that are set.
#[utoipa::path(get, path = "/channels/{id}", tag = "channels",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, body = Channel),
    ))]
async fn get_channel(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<Channel>> {
    let id = decode::<ChannelId>(&id)?;
    let info = state.store.org_channel(p.org_id, id).await?;
    let outages = outage_of(&state, id).await?;
    Ok(axum::Json(view_with(&state.context, info, &outages)))
}

/// Change a channel's name, configuration (merged), secrets (those given are replaced)
/// or rate limit. The changed channel is checked like a new one. Campaigns sending
/// through it pick the change up when their instances next build the channel.
#[utoipa::path(patch, path = "/channels/{id}", tag = "channels",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "Channel id")),
    request_body = ChannelChange,
    responses(
        (status = 200, body = Channel),
        (status = 409, description = "The name is taken, or the stored secrets cannot be opened", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_channel(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ChannelChange>,
) -> ApiResult<axum::Json<Channel>> {
    let id = decode::<ChannelId>(&id)?;
    let name = body
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    let rate = match body.rate_per_sec {
        Some(r) => Some(check_rate(r)?),
        None => None,
    };
    let config_patch = match body.config {
        None => None,
        Some(v) => Some(object("config", Some(v))?),
    };
    let secrets_patch = match body.secrets {
        None => None,
        Some(v) => Some(object("secrets", Some(v))?),
    };
    let ctx = state.context.clone();
    let new_name = name.clone();
    let mut changed_secrets: Vec<String> = Vec::new();
    let result = state
        .store
        .update_org_channel(p.org_id, id, |current: &ChannelInfo| {
            let mut update = ChannelUpdate {
                name: new_name,
                rate_per_sec: rate,
                ..ChannelUpdate::default()
            };
            if config_patch.is_none() && secrets_patch.is_none() {
                return Ok(update);
            }
            let mut config = match &current.config {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            // Secrets are bound to the endpoint they were given for: moving the channel to
            // another endpoint (base_url, host, port) or weakening its protection (tls,
            // allow_plaintext_auth) without giving them again would send them wherever the
            // new endpoint points, or in clear.
            let moved_keys: Vec<String> = config_patch
                .as_ref()
                .map(|patch| {
                    endpoint_keys()
                        .iter()
                        .filter(|k| patch.contains_key(**k) && patch.get(**k) != config.get(**k))
                        .map(|k| format!("config.{k}"))
                        .collect()
                })
                .unwrap_or_default();
            let endpoint_moved = !moved_keys.is_empty();
            if let Some(patch) = config_patch {
                merge(&mut config, patch);
            }
            let mut secrets = if endpoint_moved {
                Map::new()
            } else {
                open_secrets(&ctx, current)?
            };
            let secrets_patch = if endpoint_moved && current.secrets.is_some() {
                Some(secrets_patch.clone().ok_or_else(|| {
                    ApiError::invalid(
                        "secrets",
                        "required",
                        format!(
                            "the channel's endpoint changes ({}): give its secrets again for the new endpoint (they are never sent to an endpoint, or over a connection, they were not given for)",
                            moved_keys.join(", ")
                        ),
                    )
                })?)
            } else {
                secrets_patch.clone()
            };
            if let Some(patch) = &secrets_patch {
                changed_secrets = patch.keys().cloned().collect();
                merge(&mut secrets, patch.clone());
            }
            let (config, secrets) = check_channel(&current.kind, &config, &secrets)?;
            update.config = Some(config);
            if secrets_patch.is_some() {
                update.secrets = Some(match secrets {
                    Some(s) => Some((secret_key(&ctx)?, s)),
                    None => None,
                });
            }
            Ok::<_, ApiError>(update)
        })
        .await;
    let info = match result {
        // The only plain conflict an update meets in the store is a taken name.
        Err(ApiError {
            kind: "conflict", ..
        }) if name.is_some() => {
            return Err(name_taken(name.as_deref().unwrap_or_default()));
        }
        other => other?,
    };
    tracing::info!(
        org_id = %p.org_id,
        channel_id = %id,
        actor = p.actor,
        secrets_changed = ?changed_secrets,
        "channel changed"
    );
    if !changed_secrets.is_empty() {
        end_credentials_outage(&state, &p, id).await?;
    }
    let outages = outage_of(&state, id).await?;
    Ok(axum::Json(view_with(&state.context, info, &outages)))
}

/// New secrets end an outage for refused credentials: the channel is available again and
/// the campaigns the outage paused resume, each with the person in its audit trail (should
/// the provider still refuse them, the next send makes it unavailable again).
async fn end_credentials_outage(state: &ApiState, p: &Principal, id: ChannelId) -> ApiResult<()> {
    let Some(outage) = state.store.end_credentials_outage(p.org_id, id).await? else {
        return Ok(());
    };
    let reason = format!(
        "resumed: {} gave channel `{}` new secrets (unavailable since {}: {})",
        p.actor,
        outage.name,
        crate::clock::rfc3339(outage.since),
        outage.reason
    );
    let resumed = state
        .store
        .resume_after_outage(id, crate::clock::now_ms(), &p.actor, &reason)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        channel_id = %id,
        actor = p.actor,
        resumed = resumed.len(),
        "channel available again: new secrets replace the refused credentials"
    );
    Ok(())
}

/// Delete a channel no campaign uses.
#[utoipa::path(delete, path = "/channels/{id}", tag = "channels",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Campaigns use the channel; the problem names them", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_channel(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = decode::<ChannelId>(&id)?;
    match state.store.delete_org_channel(p.org_id, id).await? {
        ChannelDeletion::Deleted => {
            tracing::info!(
                org_id = %p.org_id,
                channel_id = %id,
                actor = p.actor,
                "channel deleted"
            );
            Ok(StatusCode::NO_CONTENT)
        }
        ChannelDeletion::InUse { campaigns, others } => {
            const SHOWN: usize = 20;
            let mut named: Vec<String> = campaigns
                .iter()
                .take(SHOWN)
                .map(|c| format!("{} `{}`", c.id, c.name))
                .collect();
            let more = (campaigns.len().saturating_sub(SHOWN)) as i64 + others;
            if more > 0 {
                named.push(format!("{more} more"));
            }
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "channel-in-use",
                "Campaigns use the channel",
                format!(
                    "channel {} is used by {} campaign(s): {}; a channel campaigns use cannot be deleted",
                    id,
                    campaigns.len() as i64 + others,
                    named.join(", ")
                ),
            ))
        }
    }
}

/// Send one real message through the channel, as `herald channel test` does, and report
/// what the provider answered. A refusal by the provider is a 200 with its outcome; a
/// provider that cannot be reached is a 502.
#[utoipa::path(post, path = "/channels/{id}/test", tag = "channels",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    request_body = ChannelTest,
    responses(
        (status = 200, description = "The provider's answer", body = TestResult),
        (status = 409, description = "The channel cannot be built (its secrets do not open, its configuration is damaged: `channel-unusable`), or the outbound guard refuses its destination (`destination-refused`: a loopback, private, link-local, unique-local, multicast or unspecified address the operator has not allowed); nothing was sent", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider could not be reached", body = Problem, content_type = "application/problem+json"),
    ))]
async fn test_channel(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ChannelTest>,
) -> ApiResult<axum::Json<TestResult>> {
    let id = decode::<ChannelId>(&id)?;
    let info = state.store.org_channel(p.org_id, id).await?;
    let text = body.body.unwrap_or_else(|| DEFAULT_TEST_BODY.to_string());
    if text.trim().is_empty() {
        return Err(ApiError::invalid("body", "required", "must not be empty"));
    }
    if text.chars().count() > MAX_TEST_BODY {
        return Err(ApiError::invalid(
            "body",
            "max_length",
            format!("must be at most {MAX_TEST_BODY} characters"),
        ));
    }
    let address = crate::address::Address::parse(&body.to)
        .map_err(|e| ApiError::invalid("to", "format", e.to_string()))?;
    if let Some(needed) = info
        .kind
        .parse::<ChannelKind>()
        .ok()
        .and_then(|k| k.address_kind())
        && needed != address.kind()
    {
        return Err(ApiError::invalid(
            "to",
            "kind",
            format!(
                "a {} channel sends to {} addresses, and `{}` is not one",
                info.kind,
                needed.as_str(),
                address.as_str()
            ),
        ));
    }
    let registry = ChannelRegistry::new(state.store.clone(), None, state.context.clone());
    let channel = registry.get(info.id).await.map_err(|e| match e {
        crate::store::StoreError::Invalid(m) => ApiError::new(
            StatusCode::CONFLICT,
            "channel-unusable",
            "The channel cannot send",
            m,
        ),
        e => e.into(),
    })?;
    // A test message belongs to no campaign: no message, no campaign.
    let request = SendRequest {
        message_id: MessageId(0),
        campaign_id: CampaignId(0),
        address: address.clone(),
        body: text,
        attempt: 1,
        unsubscribe_url: None,
        template: None,
        email: None,
    };
    let result = match tokio::time::timeout(TEST_SEND_TIMEOUT, channel.send(request)).await {
        Ok(r) => r,
        Err(_) => SendResult::Unknown {
            error: format!(
                "no answer within {} s: the provider may or may not have taken the message",
                TEST_SEND_TIMEOUT.as_secs()
            ),
        },
    };
    let reply = match result {
        SendResult::Accepted { provider_id } => TestResult {
            outcome: TestOutcome::Accepted,
            provider_id: Some(provider_id),
            error: None,
            retry_after_ms: None,
        },
        SendResult::StopCampaign { error } if crate::outbound::is_refusal(&error) => {
            tracing::info!(
                org_id = %p.org_id,
                channel_id = %id,
                actor = p.actor,
                outcome = "destination refused",
                "channel test message"
            );
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "destination-refused",
                "The channel's destination is refused",
                error,
            ));
        }
        SendResult::Unreachable { error } | SendResult::Transient { error, .. }
            if unreachable(&error) =>
        {
            tracing::info!(
                org_id = %p.org_id,
                channel_id = %id,
                actor = p.actor,
                outcome = "unreachable",
                "channel test message"
            );
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "provider-unreachable",
                "The provider could not be reached",
                error,
            ));
        }
        SendResult::Transient { error, retry_after } => TestResult {
            outcome: TestOutcome::Transient,
            provider_id: None,
            error: Some(error),
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        },
        SendResult::Permanent { error } => refused(TestOutcome::Permanent, error),
        SendResult::OptOut { error } => refused(TestOutcome::OptedOut, error),
        SendResult::StopCampaign { error } => refused(TestOutcome::ChannelCannotSend, error),
        SendResult::CredentialsRefused { reason, error } => refused(
            TestOutcome::ChannelCannotSend,
            format!("{reason} ({error})"),
        ),
        SendResult::Unknown { error } => refused(TestOutcome::Unknown, error),
        // Unreachable without the words `unreachable` looks for (a TLS handshake the
        // server broke off): still nothing was sent, and worth trying again later.
        SendResult::Unreachable { error } => TestResult {
            outcome: TestOutcome::Transient,
            provider_id: None,
            error: Some(error),
            retry_after_ms: None,
        },
    };
    tracing::info!(org_id = %p.org_id, channel_id = %id, actor = p.actor, outcome = ?reply.outcome, "channel test message");
    Ok(axum::Json(reply))
}

fn refused(outcome: TestOutcome, error: String) -> TestResult {
    TestResult {
        outcome,
        provider_id: None,
        error: Some(error),
        retry_after_ms: None,
    }
}

/// A transient failure that never reached the provider: no connection could be made.
fn unreachable(error: &str) -> bool {
    error.contains("could not connect")
        || error.contains("connecting timed out")
        || error.contains(" connect: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_rules_name_api_fields() {
        let e = rule_error(
            crate::channel_kind::smtp::KIND,
            "--username needs --password",
        );
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("secrets.password", "required")
        );
        assert_eq!(e.detail, "config.username needs secrets.password");
        let e = rule_error(
            crate::channel_kind::twilio::KIND,
            "--from `x` must be a number in E.164 (+15017122661)",
        );
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("config.from", "format")
        );
        let e = rule_error(
            crate::channel_kind::sandbox::KIND,
            "--fail-rate 2 is not a probability: give a number from 0 to 1",
        );
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("config.fail_rate", "range")
        );
        let e = rule_error(
            crate::channel_kind::smtp::KIND,
            "the default subject must be a single line",
        );
        assert_eq!(e.field, "config.default_subject");
    }
}

/// Set the channel's prices: a currency, a price per unit (an SMS segment on an SMS
/// channel, a message otherwise), prices by destination prefix, or both. The estimate
/// before a campaign starts uses them; nothing is charged.
#[utoipa::path(put, path = "/channels/{id}/pricing", tag = "channels",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "Channel id")),
    request_body = ChannelPricing,
    responses(
        (status = 200, body = Channel),
        (status = 422, description = "A bad currency, price or prefix", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_channel_pricing(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ChannelPricing>,
) -> ApiResult<axum::Json<Channel>> {
    let id = decode::<ChannelId>(&id)?;
    let prefixes: Vec<(String, String)> = body
        .prefixes
        .iter()
        .map(|(prefix, price)| (prefix.clone(), price.clone()))
        .collect();
    let pricing = crate::pricing::Pricing::new(&body.currency, body.per_unit.as_deref(), &prefixes)
        .map_err(|m| ApiError::invalid("pricing", "format", m))?;
    let info = state
        .store
        .set_org_channel_pricing(p.org_id, id, Some(&pricing))
        .await?;
    tracing::info!(org_id = %p.org_id, channel_id = %id, actor = p.actor, "channel prices set");
    let outages = outage_of(&state, id).await?;
    Ok(axum::Json(view_with(&state.context, info, &outages)))
}

/// Remove the channel's prices.
#[utoipa::path(delete, path = "/channels/{id}/pricing", tag = "channels",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, body = Channel),
    ))]
async fn clear_channel_pricing(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<Channel>> {
    let id = decode::<ChannelId>(&id)?;
    let info = state
        .store
        .set_org_channel_pricing(p.org_id, id, None)
        .await?;
    tracing::info!(org_id = %p.org_id, channel_id = %id, actor = p.actor, "channel prices removed");
    let outages = outage_of(&state, id).await?;
    Ok(axum::Json(view_with(&state.context, info, &outages)))
}
