//! Twilio Programmable Messaging: SMS, and WhatsApp through Twilio (README §1).
//!
//! A send is one `POST {base}/2010-04-01/Accounts/{sid}/Messages.json` (form body, Basic
//! auth). Errors are classified by [`classify::classify_twilio`]; a request that may have
//! reached Twilio without an answer is `Unknown`, and [`TwilioChannel::find_sent`] looks
//! such a message up later (README §1.7).
//!
//! Content templates (`content_sid`, how WhatsApp templates are sent through Twilio): the
//! rendered body gives `ContentVariables`. A body whose first non-blank character is `{` must
//! be a JSON object (string, number or boolean values, e.g. `{"1":"Ann","2":"Friday"}`);
//! any other body gives one variable per line, numbered from 1 (`Ann\nFriday` is the same
//! as the object above; trailing blank lines are ignored). A blank body sends no
//! variables.

use super::classify::{self, ErrorClass};
use super::http::{self, retry_after};
use super::settings::{self, Checked, Flags, KindRules, Validate};
use super::{
    BoxFuture, BuildContext, BuildInputs, Channel, ChannelError, Implementation, SendRequest,
    SendResult,
};
use crate::channel_kind::{ChannelKind, twilio::KIND};
use crate::ids::ChannelId;
use crate::store::ChannelInfo;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Twilio's registration (`super::IMPLEMENTATIONS`).
pub const IMPLEMENTATION: Implementation = Implementation {
    kind: KIND,
    build: |info, inputs: &BuildInputs<'_>| TwilioChannel::build(info, inputs.context),
    check: settings::check::<Rules>,
    from_flags,
};

/// Twilio's settings: [`Config`] and [`Secrets`].
pub struct Rules;

impl KindRules for Rules {
    const KIND: ChannelKind = KIND;
    type Config = Config;
    type Secrets = Secrets;
}

/// `herald channel create --kind twilio`.
fn from_flags(flags: &Flags) -> Result<Checked, ChannelError> {
    let config = Config {
        account_sid: flags.need("account_sid", "--account-sid")?,
        from: flags.text("from"),
        messaging_service_sid: flags.text("messaging_service_sid"),
        base_url: flags.text("base_url"),
        content_sid: flags.text("content_sid"),
        whatsapp: flags.set(crate::channel_kind::twilio::WHATSAPP_SETTING),
    };
    let secrets = Secrets {
        auth_token: flags.need("auth_token", "--auth-token")?,
    };
    config.validate()?;
    secrets.validate()?;
    Ok(settings::checked(&config, &secrets)?)
}

/// What a person reads when Twilio refuses the channel's credentials.
fn credentials_refused(http_status: u16) -> Option<String> {
    classify::credentials_refused("Twilio", "account SID and auth token", http_status)
}

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// How far before `sent_after` a message's `date_created` may lie and still match in
/// [`TwilioChannel::find_sent`] (clock skew between Herald and Twilio).
const FIND_SLACK_MS: i64 = 120_000;
/// Messages per page of [`TwilioChannel::find_sent`]'s list: one recipient's messages from
/// one sender since the claim fit in one page nearly always.
const FIND_PAGE_SIZE: &str = "100";
/// Pages [`TwilioChannel::find_sent`] reads at most.
const FIND_MAX_PAGES: usize = 20;

/// The channel's public configuration (stored as the channel's `config` JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `--account-sid`: `AC` and 32 hex digits.
    pub account_sid: String,
    /// `--from`: the sender (E.164 number, short code or alphanumeric sender ID; for
    /// WhatsApp an E.164 number, with or without the `whatsapp:` prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `--messaging-service-sid`: `MG` and 32 hex digits, instead of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    /// `--base-url`; [`DEFAULT_BASE_URL`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `--content-sid`: a Content API template (`HX` and 32 hex digits); the body then
    /// carries its variables (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sid: Option<String>,
    /// WhatsApp through Twilio: `To` and `From` get the `whatsapp:` prefix.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whatsapp: bool,
}

/// The channel's credentials (stored sealed).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// `--auth-token`.
    pub auth_token: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("auth_token", &crate::secrets::mask(&self.auth_token))
            .finish()
    }
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn is_short_code(s: &str) -> bool {
    (3..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_alphanumeric_sender(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && !s.starts_with(' ')
        && !s.ends_with(' ')
}

fn with_whatsapp_prefix(address: &str) -> String {
    if address.starts_with("whatsapp:") {
        address.to_string()
    } else {
        format!("whatsapp:{address}")
    }
}

impl Config {
    pub fn from_json(v: &serde_json::Value) -> Result<Config, ChannelError> {
        let c: Config = serde_json::from_value(v.clone())
            .map_err(|e| ChannelError::settings(format!("invalid twilio configuration: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    fn rules(&self) -> Result<(), String> {
        if !is_sid(&self.account_sid, "AC") {
            return Err(
                "--account-sid must look like AC followed by 32 hex digits (ACxxxxxxxx…)".into(),
            );
        }
        match (&self.from, &self.messaging_service_sid) {
            (Some(_), Some(_)) => {
                return Err(
                    "give either --from or --messaging-service-sid, not both: Twilio picks the sender from one of them".into(),
                );
            }
            (None, None) => {
                return Err(
                    "a Twilio channel needs a sender: give --from NUMBER or --messaging-service-sid MG…".into(),
                );
            }
            (Some(from), None) => {
                if self.whatsapp {
                    let number = from.strip_prefix("whatsapp:").unwrap_or(from);
                    if !is_e164(number) {
                        return Err(format!(
                            "--from `{from}` must be a WhatsApp-enabled number in E.164, like +15017122661"
                        ));
                    }
                } else if !(is_e164(from) || is_short_code(from) || is_alphanumeric_sender(from)) {
                    return Err(format!(
                        "--from `{from}` must be a number in E.164 (+15017122661), a short code, or an alphanumeric sender ID of up to 11 letters, digits and spaces"
                    ));
                }
            }
            (None, Some(mg)) => {
                if !is_sid(mg, "MG") {
                    return Err(
                        "--messaging-service-sid must look like MG followed by 32 hex digits"
                            .into(),
                    );
                }
            }
        }
        if let Some(hx) = &self.content_sid
            && !is_sid(hx, "HX")
        {
            return Err("--content-sid must look like HX followed by 32 hex digits".into());
        }
        if let Some(url) = &self.base_url {
            http::validate_base_url("--base-url", url).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
    }

    /// The `From` form value, prefixed for WhatsApp; None with a Messaging Service.
    fn sender_field(&self) -> Option<String> {
        self.from.as_ref().map(|f| {
            if self.whatsapp {
                with_whatsapp_prefix(f)
            } else {
                f.clone()
            }
        })
    }

    fn recipient_field(&self, address: &str) -> String {
        if self.whatsapp {
            with_whatsapp_prefix(address)
        } else {
            address.to_string()
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ChannelError> {
        self.rules().map_err(ChannelError::Settings)
    }
}

impl Secrets {
    pub fn from_json(v: &serde_json::Value) -> Result<Secrets, ChannelError> {
        let s: Secrets = serde_json::from_value(v.clone()).map_err(|_| {
            ChannelError::settings("the twilio channel's secrets are incomplete: set --auth-token")
        })?;
        s.validate()?;
        Ok(s)
    }
}

impl Validate for Secrets {
    fn validate(&self) -> Result<(), ChannelError> {
        if self.auth_token.trim().is_empty() {
            return Err(ChannelError::settings(
                "--auth-token must not be empty: copy it from the Twilio console",
            ));
        }
        if self
            .auth_token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ChannelError::settings(
                "--auth-token must not contain spaces or control characters",
            ));
        }
        Ok(())
    }
}

/// `ContentVariables` for a content template from the rendered body (module docs).
pub fn content_variables(body: &str) -> Result<Option<String>, ChannelError> {
    content_variables_of(body).map_err(ChannelError::Message)
}

fn content_variables_of(body: &str) -> Result<Option<String>, String> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let mut vars = serde_json::Map::new();
    if trimmed.starts_with('{') {
        let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(trimmed)
            .map_err(|e| {
                format!("the rendered body is not a JSON object of content variables: {e}")
            })?;
        for (k, v) in parsed {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "content variable `{k}` must be a string, number or boolean, not {other}"
                    ));
                }
            };
            vars.insert(k, serde_json::Value::String(text));
        }
    } else {
        let mut lines: Vec<&str> = body
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        for (i, line) in lines.iter().enumerate() {
            vars.insert(
                (i + 1).to_string(),
                serde_json::Value::String((*line).to_string()),
            );
        }
    }
    Ok(Some(serde_json::Value::Object(vars).to_string()))
}

/// A Twilio error body, either shape (README §1.1).
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

impl ErrorBody {
    fn code(&self) -> Option<i64> {
        match self.code.as_ref()? {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn text(&self) -> Option<&str> {
        self.message
            .as_deref()
            .or(self.detail.as_deref())
            .or(self.title.as_deref())
    }
}

/// The engine's result for a non-2xx create response.
/// Only a body with a Twilio error code is quoted (its text bounded); any other answer is
/// described by status, type and size (`http::unexpected_answer`).
fn error_result(answer: &http::Answer) -> SendResult {
    let (status, headers) = (answer.status, &answer.headers);
    let parsed: ErrorBody = serde_json::from_str(&answer.body).unwrap_or_default();
    let code = parsed.code();
    let error = match (code, parsed.text()) {
        (Some(code), Some(text)) => format!("twilio {code}: {}", http::provider_text(text)),
        (Some(code), None) => format!("twilio {code} (HTTP {status})"),
        (None, _) => format!(
            "twilio: {}",
            http::unexpected_answer(status, headers, answer.size)
        ),
    };
    match classify::classify_twilio(status, code) {
        ErrorClass::Retry => SendResult::Transient {
            error,
            retry_after: retry_after(headers),
        },
        ErrorClass::Permanent => SendResult::Permanent { error },
        ErrorClass::OptOut => SendResult::OptOut { error },
        ErrorClass::StopCampaign => match credentials_refused(status) {
            Some(reason) => SendResult::CredentialsRefused { reason, error },
            None => SendResult::StopCampaign { error },
        },
        ErrorClass::Unknown => SendResult::Unknown { error },
    }
}

pub struct TwilioChannel {
    channel_id: ChannelId,
    name: String,
    config: Config,
    secrets: Secrets,
    status_callback: Option<String>,
    /// Parsed once: a send would otherwise parse (and IDNA-map) the same URL every time,
    /// about 2 % of Herald's CPU per message over HTTP (BENCHMARKS.md).
    messages_url: reqwest::Url,
    client: http::ProviderClient,
}

impl TwilioChannel {
    /// The channel for the registry.
    pub fn build(info: &ChannelInfo, ctx: &BuildContext) -> Result<Arc<dyn Channel>, ChannelError> {
        Ok(Arc::new(TwilioChannel::open(info, ctx)?))
    }

    /// The concrete channel (for [`TwilioChannel::find_sent`]).
    pub fn open(info: &ChannelInfo, ctx: &BuildContext) -> Result<TwilioChannel, ChannelError> {
        let config = Config::from_json(&info.config)?;
        let secrets = Secrets::from_json(&ctx.open_secrets(info)?)?;
        TwilioChannel::new(
            info.id,
            info.name.clone(),
            config,
            secrets,
            ctx.public_url.as_deref(),
            ctx.outbound.http_client().map_err(ChannelError::Setup)?,
        )
    }

    pub fn new(
        channel_id: ChannelId,
        name: String,
        config: Config,
        secrets: Secrets,
        public_url: Option<&str>,
        client: http::ProviderClient,
    ) -> Result<TwilioChannel, ChannelError> {
        config.validate()?;
        secrets.validate()?;
        let status_callback = public_url
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .map(|u| {
                let channel = channel_id.to_string();
                let route = &crate::channel_kind::twilio::STATUS_CALLBACK;
                format!("{u}{}", KIND.webhook_path(route, &channel))
            });
        let messages_url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            config.base_url(),
            config.account_sid
        );
        let messages_url = reqwest::Url::parse(&messages_url).map_err(|e| {
            ChannelError::Setup(format!(
                "twilio: the API address `{messages_url}` is not a URL ({e}): check `base_url`"
            ))
        })?;
        Ok(TwilioChannel {
            channel_id,
            name,
            config,
            secrets,
            status_callback,
            messages_url,
            client,
        })
    }

    pub fn channel_id(&self) -> ChannelId {
        self.channel_id
    }

    /// The `StatusCallback` sent with each message, when Herald has a public URL.
    pub fn status_callback(&self) -> Option<&str> {
        self.status_callback.as_deref()
    }

    fn messages_url(&self) -> reqwest::Url {
        self.messages_url.clone()
    }

    /// The create request's form fields, in order.
    pub fn form(&self, request: &SendRequest) -> Result<Vec<(&'static str, String)>, ChannelError> {
        let mut form = vec![("To", self.config.recipient_field(request.address.as_str()))];
        match (
            self.config.sender_field(),
            &self.config.messaging_service_sid,
        ) {
            (Some(from), _) => form.push(("From", from)),
            (None, Some(mg)) => form.push(("MessagingServiceSid", mg.clone())),
            (None, None) => {}
        }
        match &self.config.content_sid {
            Some(hx) => {
                form.push(("ContentSid", hx.clone()));
                if let Some(vars) = content_variables(&request.body)? {
                    form.push(("ContentVariables", vars));
                }
            }
            None => form.push(("Body", request.body.clone())),
        }
        if let Some(cb) = &self.status_callback {
            form.push(("StatusCallback", cb.clone()));
        }
        Ok(form)
    }

    async fn send_inner(&self, request: SendRequest) -> SendResult {
        let form = match self.form(&request) {
            Ok(f) => f,
            Err(error) => {
                return SendResult::Permanent {
                    error: error.to_string(),
                };
            }
        };
        let request = self
            .client
            .post(self.messages_url())
            .basic_auth(&self.config.account_sid, Some(&self.secrets.auth_token))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let response = self.client.send(request).await;
        let answer = match http::read_answer("twilio", response).await {
            Ok(a) => a,
            Err(result) => return result,
        };
        if answer.is_success() {
            // Only the sid is read: the rest of the message resource is skipped, not built.
            #[derive(serde::Deserialize)]
            struct Created {
                sid: Option<String>,
            }
            let sid = serde_json::from_str::<Created>(&answer.body)
                .ok()
                .and_then(|created| created.sid)
                .filter(|s| !s.is_empty());
            return match sid {
                Some(provider_id) => SendResult::Accepted { provider_id },
                None => SendResult::Unknown {
                    error: format!(
                        "twilio: no message sid in the {}",
                        http::unexpected_answer(answer.status, &answer.headers, answer.size)
                    ),
                },
            };
        }
        error_result(&answer)
    }

    /// Looks for a message this channel created for `to` at or after `sent_after_ms`
    /// (epoch milliseconds, with two minutes of slack for clock skew) whose body is `body`
    /// (ignored for content templates, whose body Herald does not know), and returns its
    /// sid: the earliest such message. Lists by `To` and `From` (unless a Messaging Service
    /// sends), newest first, and stops at the first page whose messages were all created
    /// before the cutoff. No `DateSent` filter: it matches only messages Twilio has sent,
    /// so one still queued (no `date_sent`) would not be found and would be sent again.
    pub async fn find_sent(
        &self,
        to: &str,
        sent_after_ms: i64,
        body: &str,
    ) -> Result<Option<String>, ChannelError> {
        self.find_sent_as_text(to, sent_after_ms, body)
            .await
            .map_err(ChannelError::Provider)
    }

    async fn find_sent_as_text(
        &self,
        to: &str,
        sent_after_ms: i64,
        body: &str,
    ) -> Result<Option<String>, String> {
        let cutoff = sent_after_ms - FIND_SLACK_MS;
        let mut query = vec![("To", self.config.recipient_field(to))];
        if let Some(from) = self.config.sender_field() {
            query.push(("From", from));
        }
        query.push(("PageSize", FIND_PAGE_SIZE.to_string()));
        let match_body = self.config.content_sid.is_none();

        let mut best: Option<(i64, String)> = None;
        let mut next = Some(self.client.get(self.messages_url()).query(&query));
        let mut pages = 0;
        while let Some(request) = next.take() {
            pages += 1;
            let request = request
                .basic_auth(&self.config.account_sid, Some(&self.secrets.auth_token))
                .header(reqwest::header::ACCEPT, "application/json");
            let response = self.client.send(request).await.map_err(|f| match f {
                http::Failure::Refused(r) => format!("twilio: {r}"),
                http::Failure::Transport(e) => match http::refusal_in(&e) {
                    Some(r) => format!("twilio: {r}"),
                    None => format!("twilio: listing messages failed: {}", http::describe(&e)),
                },
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            // A page of 1000 messages is well under a megabyte.
            let (text, size) = http::read_bounded(response, 4 << 20)
                .await
                .map_err(|e| format!("twilio: listing messages failed: {}", http::describe(&e)))?;
            if !(200..300).contains(&status) {
                let parsed: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                return Err(match (parsed.code(), parsed.text()) {
                    (Some(code), Some(t)) => format!(
                        "twilio: listing messages: {code}: {}",
                        http::provider_text(t)
                    ),
                    _ => format!(
                        "twilio: listing messages: {}",
                        http::unexpected_answer(status, &headers, size)
                    ),
                });
            }
            let page: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("twilio: listing messages: not JSON: {e}"))?;
            // Newest first: once a whole page predates the cutoff, so do all later ones.
            let mut any_recent = false;
            for m in page
                .get("messages")
                .and_then(|m| m.as_array())
                .into_iter()
                .flatten()
            {
                let field = |k: &str| m.get(k).and_then(|v| v.as_str());
                let Some(sid) = field("sid") else { continue };
                if !field("direction")
                    .unwrap_or("outbound-api")
                    .starts_with("outbound")
                {
                    continue;
                }
                let Some(created) = field("date_created")
                    .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                    .map(|d| d.timestamp_millis())
                else {
                    // Unreadable: not proof that the page is old.
                    any_recent = true;
                    continue;
                };
                if created < cutoff {
                    continue;
                }
                any_recent = true;
                if match_body {
                    // A trial account prefixes the body; anything else must match exactly.
                    let theirs = field("body").unwrap_or("");
                    if theirs != body && !theirs.ends_with(body) {
                        continue;
                    }
                }
                if best.as_ref().is_none_or(|(t, _)| created < *t) {
                    best = Some((created, sid.to_string()));
                }
            }
            if pages >= FIND_MAX_PAGES || !any_recent {
                break;
            }
            next = page
                .get("next_page_uri")
                .and_then(|u| u.as_str())
                .filter(|u| !u.is_empty())
                .map(|uri| {
                    self.client
                        .get(format!("{}{}", self.config.base_url(), uri))
                });
        }
        Ok(best.map(|(_, sid)| sid))
    }
}

impl Channel for TwilioChannel {
    fn kind(&self) -> ChannelKind {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// SMS count segments against the rate limit (README §1.6); WhatsApp messages and
    /// content templates count one each.
    fn cost(&self, body: &str) -> f64 {
        if self.config.whatsapp || self.config.content_sid.is_some() {
            1.0
        } else {
            f64::from(crate::segments::sms_segments(body).segments)
        }
    }

    fn send(&self, request: SendRequest) -> BoxFuture<'_, SendResult> {
        Box::pin(self.send_inner(request))
    }

    /// One authenticated page of one message from the account's list: sends nothing.
    fn probe(&self) -> BoxFuture<'_, Result<(), ChannelError>> {
        Box::pin(async move {
            let request = self
                .client
                .get(self.messages_url())
                .query(&[("PageSize", "1")])
                .basic_auth(&self.config.account_sid, Some(&self.secrets.auth_token))
                .header(reqwest::header::ACCEPT, "application/json");
            http::probe("twilio", &self.client, request).await
        })
    }

    /// Twilio can be asked (README §1.7): list messages by To, From and date sent.
    fn lookup<'a>(
        &'a self,
        query: &'a super::LookupQuery,
    ) -> Option<BoxFuture<'a, Result<Option<String>, ChannelError>>> {
        Some(Box::pin(self.find_sent(
            query.address.as_str(),
            query.sent_after_ms,
            &query.body,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::http::fake::{FakeServer, Reply, closed_port_url};
    use crate::ids::{CampaignId, MessageId};
    use base64::Engine;
    use std::time::Duration;

    const AC: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const MG: &str = "MGbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const HX: &str = "HXcccccccccccccccccccccccccccccccc";
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn config(base: &str) -> Config {
        Config {
            account_sid: AC.into(),
            from: Some("+15005550006".into()),
            base_url: Some(base.into()),
            ..Default::default()
        }
    }

    fn channel_with(config: Config, public_url: Option<&str>, timeout_ms: u64) -> TwilioChannel {
        let client = http::build_client(
            Duration::from_millis(1000),
            Duration::from_millis(timeout_ms),
            crate::outbound::OutboundGuard::allow_all(),
        )
        .unwrap();
        TwilioChannel::new(
            ChannelId(42),
            "sms".into(),
            config,
            Secrets {
                auth_token: TOKEN.into(),
            },
            public_url,
            client,
        )
        .unwrap()
    }

    fn request(body: &str) -> SendRequest {
        SendRequest {
            message_id: MessageId(7),
            campaign_id: CampaignId(3),
            address: crate::address::Address::parse("+15558675310").unwrap(),
            body: body.into(),
            attempt: 1,
            unsubscribe_url: None,
            template: None,
            email: None,
        }
    }

    fn created(sid: &str) -> Reply {
        Reply::json(
            201,
            serde_json::json!({"sid": sid, "status": "queued", "num_segments": "1", "error_code": null}),
        )
    }

    #[tokio::test]
    async fn sends_the_contract_request_and_takes_the_sid() {
        let fake = FakeServer::start().await;
        fake.reply(created("SM00000000000000000000000000000001"));
        let ch = channel_with(
            config(&fake.base),
            Some("https://herald.example.test/"),
            5000,
        );
        let result = ch.send(request("Hello & welcome")).await;
        assert_eq!(
            result,
            SendResult::Accepted {
                provider_id: "SM00000000000000000000000000000001".into()
            }
        );
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, format!("/2010-04-01/Accounts/{AC}/Messages.json"));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{AC}:{TOKEN}"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(r.header("accept"), Some("application/json"));
        let form = r.form();
        let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["To", "From", "Body", "StatusCallback"]);
        assert_eq!(r.form_value("To").as_deref(), Some("+15558675310"));
        assert_eq!(r.form_value("From").as_deref(), Some("+15005550006"));
        assert_eq!(r.form_value("Body").as_deref(), Some("Hello & welcome"));
        assert_eq!(
            r.form_value("StatusCallback").as_deref(),
            Some("https://herald.example.test/webhooks/twilio/chn_42/status")
        );
    }

    #[tokio::test]
    async fn messaging_service_whatsapp_and_content_templates() {
        let fake = FakeServer::start().await;
        fake.reply(created("SM00000000000000000000000000000002"));
        fake.reply(created("SM00000000000000000000000000000003"));
        let cfg = Config {
            from: None,
            messaging_service_sid: Some(MG.into()),
            ..config(&fake.base)
        };
        // No public URL: no StatusCallback.
        let ch = channel_with(cfg, None, 5000);
        assert!(matches!(
            ch.send(request("hi")).await,
            SendResult::Accepted { .. }
        ));

        let cfg = Config {
            whatsapp: true,
            from: Some("+15017122661".into()),
            content_sid: Some(HX.into()),
            ..config(&fake.base)
        };
        let ch = channel_with(cfg, Some("https://h.test"), 5000);
        assert!(matches!(
            ch.send(request("Ann\nFriday\n")).await,
            SendResult::Accepted { .. }
        ));

        let reqs = fake.requests();
        let names: Vec<String> = reqs[0].form().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["To", "MessagingServiceSid", "Body"]);
        assert_eq!(
            reqs[0].form_value("MessagingServiceSid").as_deref(),
            Some(MG)
        );

        let r = &reqs[1];
        assert_eq!(r.form_value("To").as_deref(), Some("whatsapp:+15558675310"));
        assert_eq!(
            r.form_value("From").as_deref(),
            Some("whatsapp:+15017122661")
        );
        assert_eq!(r.form_value("ContentSid").as_deref(), Some(HX));
        assert_eq!(r.form_value("Body"), None);
        let vars: serde_json::Value =
            serde_json::from_str(&r.form_value("ContentVariables").unwrap()).unwrap();
        assert_eq!(vars, serde_json::json!({"1": "Ann", "2": "Friday"}));
        assert_eq!(
            r.form_value("StatusCallback").as_deref(),
            Some("https://h.test/webhooks/twilio/chn_42/status")
        );
    }

    #[test]
    fn sms_cost_counts_segments() {
        let sms = channel_with(config("http://127.0.0.1:1"), None, 1000);
        assert_eq!(sms.cost("hi"), 1.0);
        assert_eq!(sms.cost(&"a".repeat(161)), 2.0);
        assert_eq!(sms.cost(&"é😀".repeat(40)), 2.0);
        let wa = channel_with(
            Config {
                whatsapp: true,
                ..config("http://127.0.0.1:1")
            },
            None,
            1000,
        );
        assert_eq!(wa.cost(&"a".repeat(500)), 1.0);
    }

    #[test]
    fn content_variable_conventions() {
        assert_eq!(content_variables("  \n").unwrap(), None);
        let v = |s: &str| -> serde_json::Value {
            serde_json::from_str(&content_variables(s).unwrap().unwrap()).unwrap()
        };
        assert_eq!(
            v(r#" {"1": "Ann", "2": 3, "3": true} "#),
            serde_json::json!({"1": "Ann", "2": "3", "3": "true"})
        );
        assert_eq!(
            v("Ann\r\n\r\nx\n\n"),
            serde_json::json!({"1": "Ann", "2": "", "3": "x"})
        );
        assert!(
            content_variables("{not json")
                .unwrap_err()
                .mentions("JSON object")
        );
        assert!(content_variables(r#"{"1": [1]}"#).is_err());
    }

    async fn outcome(reply: Reply) -> SendResult {
        let fake = FakeServer::start().await;
        fake.reply(reply);
        channel_with(config(&fake.base), None, 5000)
            .send(request("x"))
            .await
    }

    #[tokio::test]
    async fn classifies_error_responses() {
        let legacy = |code: i64, status: u16, msg: &str| {
            Reply::json(
                status,
                serde_json::json!({"code": code, "message": msg, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}),
            )
        };
        assert_eq!(
            outcome(legacy(
                21211,
                400,
                "The 'To' number is not a valid phone number."
            ))
            .await,
            SendResult::Permanent {
                error: "twilio 21211: The 'To' number is not a valid phone number.".into()
            }
        );
        assert!(matches!(
            outcome(legacy(21610, 400, "Attempt to send to unsubscribed recipient")).await,
            SendResult::OptOut { error } if error.starts_with("twilio 21610")
        ));
        // RFC 9457 shape.
        assert!(matches!(
            outcome(Reply::json(401, serde_json::json!({"type": "https://www.twilio.com/docs/errors/20003", "title": "Authenticate", "status": 401, "code": 20003, "detail": "Authentication Error - invalid username"}))).await,
            SendResult::CredentialsRefused { reason, error } if error == "twilio 20003: Authentication Error - invalid username"
                && reason == "credentials refused by Twilio (401): check the channel's account SID and auth token"
        ));
        assert_eq!(
            outcome(Reply::Respond {
                status: 429,
                headers: vec![
                    ("retry-after", "7".into()),
                    ("content-type", "application/json".into())
                ],
                body: serde_json::json!({"code": 20429, "message": "Too Many Requests", "status": 429}).to_string(),
            })
            .await,
            SendResult::Transient {
                error: "twilio 20429: Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            outcome(Reply::Respond { status: 500, headers: vec![], body: "oops".into() }).await,
            SendResult::Unknown { error } if error.contains("500")
        ));
        // A 201 without a sid cannot be tracked.
        assert!(matches!(
            outcome(Reply::json(201, serde_json::json!({"status": "queued"}))).await,
            SendResult::Unknown { .. }
        ));
    }

    // The probe of an unavailable channel: an authenticated GET of one message page that
    // sends nothing; any answer but a 5xx, 401 or 403 means the provider is back.
    #[tokio::test]
    async fn the_probe_reads_and_judges_the_answer() {
        let closed = channel_with(config(&closed_port_url().await), None, 300);
        let refused = closed.probe().await.unwrap_err().to_string();
        assert!(refused.contains("twilio"), "{refused}");

        let fake = FakeServer::start().await;
        let ch = channel_with(config(&fake.base), None, 300);
        fake.reply(Reply::json(503, serde_json::json!({"code": 20503})));
        assert!(ch.probe().await.unwrap_err().mentions("HTTP 503"));
        fake.reply(Reply::json(401, serde_json::json!({"code": 20003})));
        assert!(ch.probe().await.unwrap_err().mentions("credentials"));
        fake.reply(Reply::json(200, serde_json::json!({"messages": []})));
        assert_eq!(ch.probe().await, Ok(()));
        let requests = fake.requests();
        assert_eq!(requests.len(), 3);
        for r in &requests {
            assert_eq!(r.method, "GET");
            assert_eq!(r.path, format!("/2010-04-01/Accounts/{AC}/Messages.json"));
            assert_eq!(r.query.as_deref(), Some("PageSize=1"));
            assert!(
                r.header("authorization")
                    .is_some_and(|a| a.starts_with("Basic "))
            );
        }
    }

    #[tokio::test]
    async fn no_answer_is_unknown_and_no_connection_is_transient() {
        let fake = FakeServer::start().await;
        fake.reply(Reply::Hang);
        let ch = channel_with(config(&fake.base), None, 300);
        assert!(matches!(
            ch.send(request("x")).await,
            SendResult::Unknown { error } if error.contains("no answer")
        ));
        assert_eq!(fake.requests().len(), 1, "the request did reach the server");

        let ch = channel_with(config(&closed_port_url().await), None, 300);
        assert!(matches!(
            ch.send(request("x")).await,
            SendResult::Unreachable { error } if error.contains("could not connect")
        ));
    }

    #[tokio::test]
    async fn find_sent_lists_by_to_and_from_and_matches_the_body() {
        let fake = FakeServer::start().await;
        let msg = |sid: &str, date: &str, body: &str, dir: &str| serde_json::json!({"sid": sid, "date_created": date, "body": body, "direction": dir, "to": "+15558675310"});
        // One page of Twilio's list, pointing at page `next` (a page token) when given.
        let page = |messages: Vec<serde_json::Value>, next: Option<&str>| {
            Reply::json(
                200,
                serde_json::json!({
                    "messages": messages,
                    "next_page_uri": next.map(|token| format!("/2010-04-01/Accounts/{AC}/Messages.json?PageToken={token}&PageSize=100")),
                }),
            )
        };
        // 2026-11-28T10:00:00Z is the attempt time.
        let t = crate::clock::parse_rfc3339("2026-11-28T10:00:00Z").unwrap();
        fake.reply(page(
            vec![
                msg(
                    "SM_other_body",
                    "Sat, 28 Nov 2026 10:00:05 +0000",
                    "different",
                    "outbound-api",
                ),
                msg(
                    "SM_later",
                    "Sat, 28 Nov 2026 10:00:09 +0000",
                    "hello",
                    "outbound-api",
                ),
                msg(
                    "SM_inbound",
                    "Sat, 28 Nov 2026 10:00:01 +0000",
                    "hello",
                    "inbound",
                ),
            ],
            Some("PA1"),
        ));
        fake.reply(page(
            vec![
                msg(
                    "SM_match",
                    "Sat, 28 Nov 2026 10:00:02 +0000",
                    "Sent from your Twilio trial account - hello",
                    "outbound-api",
                ),
                msg(
                    "SM_too_old",
                    "Fri, 27 Nov 2026 09:00:00 +0000",
                    "hello",
                    "outbound-api",
                ),
            ],
            None,
        ));
        let ch = channel_with(config(&fake.base), None, 5000);
        let found = ch.find_sent("+15558675310", t, "hello").await.unwrap();
        assert_eq!(found.as_deref(), Some("SM_match"));
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(
            reqs[0].path,
            format!("/2010-04-01/Accounts/{AC}/Messages.json")
        );
        let q = reqs[0].query_pairs();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("To"), Some("+15558675310"));
        assert_eq!(get("From"), Some("+15005550006"));
        // No DateSent filter: it would hide a message still queued at Twilio.
        assert!(q.iter().all(|(n, _)| !n.starts_with("DateSent")), "{q:?}");
        assert_eq!(get("PageSize"), Some("100"));
        assert!(
            reqs[0]
                .header("authorization")
                .unwrap()
                .starts_with("Basic ")
        );
        assert!(reqs[1].query.as_deref().unwrap().contains("PageToken=PA1"));

        // A page whose messages all predate the cutoff ends the search, however many
        // pages Twilio offers after it.
        let before = fake.requests().len();
        fake.reply(page(
            vec![
                msg(
                    "SM_old1",
                    "Fri, 27 Nov 2026 09:00:00 +0000",
                    "hello",
                    "outbound-api",
                ),
                msg(
                    "SM_old2",
                    "Thu, 26 Nov 2026 09:00:00 +0000",
                    "hello",
                    "outbound-api",
                ),
            ],
            Some("PA9"),
        ));
        assert_eq!(
            ch.find_sent("+15558675310", t, "hello").await.unwrap(),
            None
        );
        assert_eq!(fake.requests().len(), before + 1, "no second page read");

        // Nothing matching: None; an error answer: Err.
        fake.reply(Reply::json(200, serde_json::json!({"messages": []})));
        assert_eq!(
            ch.find_sent("+15558675310", t, "hello").await.unwrap(),
            None
        );
        fake.reply(Reply::json(
            401,
            serde_json::json!({"code": 20003, "message": "Authenticate"}),
        ));
        assert!(
            ch.find_sent("+15558675310", t, "hello")
                .await
                .unwrap_err()
                .mentions("20003")
        );
    }

    #[test]
    fn config_and_secrets_validation() {
        let ok = config("http://127.0.0.1:1");
        assert!(ok.validate().is_ok());
        let from_json = Config::from_json(&serde_json::to_value(&ok).unwrap()).unwrap();
        assert_eq!(from_json, ok);
        assert!(
            Config::from_json(
                &serde_json::json!({"account_sid": AC, "from": "+15005550006", "rate": 3})
            )
            .is_err()
        );

        let err = |c: Config| c.validate().unwrap_err().to_string();
        assert!(
            err(Config {
                account_sid: "AC123".into(),
                ..ok.clone()
            })
            .contains("--account-sid")
        );
        assert!(
            err(Config {
                from: None,
                ..ok.clone()
            })
            .contains("--from")
        );
        assert!(
            err(Config {
                messaging_service_sid: Some(MG.into()),
                ..ok.clone()
            })
            .contains("not both")
        );
        assert!(
            err(Config {
                from: None,
                messaging_service_sid: Some("MG1".into()),
                ..ok.clone()
            })
            .contains("--messaging-service-sid")
        );
        assert!(
            err(Config {
                from: Some("not a sender!".into()),
                ..ok.clone()
            })
            .contains("--from")
        );
        assert!(
            err(Config {
                from: Some("Herald".into()),
                whatsapp: true,
                ..ok.clone()
            })
            .contains("--from")
        );
        assert!(
            err(Config {
                content_sid: Some("HX1".into()),
                ..ok.clone()
            })
            .contains("--content-sid")
        );
        assert!(
            err(Config {
                base_url: Some("ftp://x".into()),
                ..ok.clone()
            })
            .contains("--base-url")
        );
        for from in ["+15005550006", "12345", "Herald", "My Shop 1"] {
            assert!(
                Config {
                    from: Some(from.into()),
                    ..ok.clone()
                }
                .validate()
                .is_ok(),
                "{from}"
            );
        }
        assert!(
            Config {
                from: Some("whatsapp:+15017122661".into()),
                whatsapp: true,
                ..ok.clone()
            }
            .validate()
            .is_ok()
        );
        assert_eq!(ok.base_url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(
            Config {
                base_url: None,
                ..ok.clone()
            }
            .base_url(),
            DEFAULT_BASE_URL
        );

        assert!(
            Secrets {
                auth_token: "".into()
            }
            .validate()
            .unwrap_err()
            .mentions("--auth-token")
        );
        assert!(
            Secrets {
                auth_token: "a b".into()
            }
            .validate()
            .unwrap_err()
            .mentions("--auth-token")
        );
        assert!(
            Secrets::from_json(&serde_json::json!({}))
                .unwrap_err()
                .mentions("--auth-token")
        );
        let s = Secrets {
            auth_token: TOKEN.into(),
        };
        assert!(!format!("{s:?}").contains(TOKEN));
    }
}
