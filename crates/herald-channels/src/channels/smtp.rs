//! Email over SMTP.
//!
//! Each channel keeps a small pool of lettre `AsyncSmtpConnection`s (at most
//! `max_connections`, idle ones reused for up to [`IDLE_MAX`]). Herald drives the SMTP
//! transaction itself (MAIL, RCPT, DATA, content) instead of going through
//! `AsyncSmtpTransport`, because what a failure means depends on *when* it happens, and the
//! transport hides that:
//!
//! | when | reply 4xx | reply 5xx | connection lost, timeout |
//! | --- | --- | --- | --- |
//! | connect, TLS, EHLO, AUTH | Unreachable | CredentialsRefused (AUTH refused, e.g. 535: the channel becomes unavailable), StopCampaign (greeting refused, AUTH not offered) | Unreachable (DNS, refused, TLS, timeout) |
//! | MAIL FROM | Transient | StopCampaign (the sender is the same for every message), 552 Permanent | Transient (a stale pooled connection is replaced once, silently) |
//! | RCPT TO, DATA | Transient | Permanent (550/551/553 style rejects) | Transient |
//! | after the content was sent | Transient | Permanent | **Unknown**: the server may have taken the message |
//!
//! Message conventions (see [`build_message`]): when the rendered body's first line starts
//! with `Subject:` (any case), that line gives the subject and the body starts on the next
//! line, skipping one blank line if there is one; otherwise the subject is the channel's
//! `default_subject`, or `(no subject)`. Each attempt gets a unique
//! `Message-ID: <herald.{message_id}.{attempt}.{16 hex random}@{from domain}>`, which is
//! also the provider id. With an unsubscribe URL the message carries `List-Unsubscribe:
//! <url>` and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).

use super::settings::{self, Checked, Flags, KindRules, Validate};
use super::{
    BoxFuture, BuildContext, BuildInputs, Channel, ChannelError, Implementation, SendRequest,
    SendResult,
};
use crate::channel_kind::{ChannelKind, smtp::KIND};
use crate::outbound::{OutboundGuard, ResolveError};
use crate::store::ChannelInfo;
use lettre::message::header::{ContentType, HeaderName, HeaderValue, MIME_VERSION_1_0};
use lettre::message::{Mailbox, Message, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// SMTP's registration (`super::IMPLEMENTATIONS`).
pub const IMPLEMENTATION: Implementation = Implementation {
    kind: KIND,
    build: |info, inputs: &BuildInputs<'_>| SmtpChannel::build(info, inputs.context),
    check: settings::check::<Rules>,
    from_flags,
};

/// SMTP's settings: [`Config`] and [`Secrets`], and the credentials' rules between them.
pub struct Rules;

impl KindRules for Rules {
    const KIND: ChannelKind = KIND;
    type Config = Config;
    type Secrets = Secrets;

    fn validate_pair(config: &Config, secrets: &Secrets) -> Result<(), ChannelError> {
        validate_credentials(config, secrets)
    }
}

/// `herald channel create --kind smtp`.
fn from_flags(flags: &Flags) -> Result<Checked, ChannelError> {
    let tls: TlsMode = flags.need("tls", "--tls none|starttls|tls")?.parse()?;
    let config = Config {
        host: flags.need("host", "--host")?,
        port: flags
            .get("port")
            .ok_or_else(|| flags.missing("--port, e.g. 587"))?,
        tls,
        from: flags.need("from", "--from ADDRESS")?,
        username: flags.text("username"),
        default_subject: flags.text("default_subject"),
        max_connections: None,
        allow_plaintext_auth: flags.set("allow_plaintext_auth"),
        ses_topic_arn: flags.text("ses_topic_arn"),
        sendgrid_verification_key: flags.text("sendgrid_verification_key"),
    };
    let secrets = Secrets {
        password: flags.text("password"),
        postmark_webhook_token: flags.text("postmark_webhook_token"),
    };
    config.validate()?;
    secrets.validate()?;
    validate_credentials(&config, &secrets)?;
    Ok(settings::checked(&config, &secrets)?)
}

/// Connections kept per channel when `max_connections` is not set.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;
/// An idle pooled connection older than this is closed instead of reused.
pub const IDLE_MAX: Duration = Duration::from_secs(30);
/// Connecting: TCP, TLS, greeting, EHLO, STARTTLS and AUTH together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Each command of the transaction (MAIL, RCPT, DATA).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Sending the content and waiting for the server's verdict on it.
pub const CONTENT_TIMEOUT: Duration = Duration::from_secs(120);

/// How the connection is secured (`--tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (local relays and test servers only).
    None,
    /// Plain connection upgraded with STARTTLS, which the server must offer.
    #[default]
    Starttls,
    /// Implicit TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

impl FromStr for TlsMode {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<TlsMode, ChannelError> {
        match s {
            "none" => Ok(TlsMode::None),
            "starttls" => Ok(TlsMode::Starttls),
            "tls" => Ok(TlsMode::Tls),
            other => Err(ChannelError::settings(format!(
                "--tls `{other}` is not a TLS mode: use none, starttls or tls"
            ))),
        }
    }
}

/// The channel's public configuration (stored as the channel's `config` JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `--host`.
    pub host: String,
    /// `--port`.
    pub port: u16,
    /// `--tls none|starttls|tls`.
    pub tls: TlsMode,
    /// `--from`: the sender, `address@domain` or `Name <address@domain>`.
    pub from: String,
    /// `--username`; the password is a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Subject when the body does not start with a `Subject:` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_subject: Option<String>,
    /// Connections kept open to the server ([`DEFAULT_MAX_CONNECTIONS`] when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// `--allow-plaintext-auth`: send the password with `tls` none. Off by default, so
    /// the credentials never cross a network in clear unless the channel says so (a relay
    /// on a trusted network).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext_auth: bool,
    /// `--ses-topic-arn`: the Amazon SNS topic that Amazon SES publishes this channel's
    /// bounces and complaints to. Its notifications are accepted at
    /// `/webhooks/smtp/{id}/ses` only from this topic (every topic's messages carry a valid
    /// AWS signature, so the signature alone does not say whose they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ses_topic_arn: Option<String>,
    /// `--sendgrid-verification-key`: the public key of SendGrid's signed Event Webhook
    /// (base64, as SendGrid's settings show it); enables `/webhooks/smtp/{id}/sendgrid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendgrid_verification_key: Option<String>,
}

/// The channel's credentials (stored sealed).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// `--password`, with `--username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `--postmark-webhook-token`: the password of the HTTP basic auth that Postmark's
    /// bounce, spam-complaint and delivery webhooks send; enables
    /// `/webhooks/smtp/{id}/postmark`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmark_webhook_token: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field(
                "postmark_webhook_token",
                &self.postmark_webhook_token.as_ref().map(|_| "****"),
            )
            .finish()
    }
}

impl Config {
    pub fn from_json(v: &serde_json::Value) -> Result<Config, ChannelError> {
        let c: Config = serde_json::from_value(v.clone())
            .map_err(|e| ChannelError::settings(format!("invalid smtp configuration: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    fn rules(&self) -> Result<(), String> {
        let host = self.host.trim();
        if host.is_empty() || host != self.host || host.contains(char::is_whitespace) {
            return Err(format!(
                "--host `{}` must be the SMTP server's host name or IP address, like smtp.example.com",
                self.host
            ));
        }
        if self.port == 0 {
            return Err("--port must be from 1 to 65535 (usually 587 for starttls, 465 for tls, 25 for none)".into());
        }
        self.mailbox().map_err(|e| e.to_string())?;
        if let Some(u) = &self.username
            && (u.is_empty() || u.chars().any(char::is_control))
        {
            return Err("--username must not be empty or contain control characters".into());
        }
        if let Some(s) = &self.default_subject
            && s.chars().any(char::is_control)
        {
            return Err("the default subject must be a single line".into());
        }
        if let Some(n) = self.max_connections
            && !(1..=100).contains(&n)
        {
            return Err(format!("max_connections {n} must be from 1 to 100"));
        }
        if let Some(arn) = &self.ses_topic_arn {
            check_topic_arn(arn)?;
        }
        if let Some(key) = &self.sendgrid_verification_key {
            crate::email_feedback::check_sendgrid_key(key)
                .map_err(|e| format!("--sendgrid-verification-key: {e}"))?;
        }
        Ok(())
    }

    /// The parsed `--from`.
    pub fn mailbox(&self) -> Result<Mailbox, ChannelError> {
        Mailbox::from_str(self.from.trim()).map_err(|e| {
            ChannelError::settings(format!(
                "--from `{}` is not an email address ({e}): give one like news@example.com or \"Example News <news@example.com>\"",
                self.from
            ))
        })
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ChannelError> {
        self.rules().map_err(ChannelError::Settings)
    }
}

impl Secrets {
    pub fn from_json(v: &serde_json::Value) -> Result<Secrets, ChannelError> {
        let s: Secrets = serde_json::from_value(v.clone()).map_err(|e| {
            ChannelError::settings(format!("the smtp channel's secrets are damaged: {e}"))
        })?;
        s.validate()?;
        Ok(s)
    }
}

impl Validate for Secrets {
    fn validate(&self) -> Result<(), ChannelError> {
        if let Some(p) = &self.password
            && p.is_empty()
        {
            return Err(ChannelError::settings("--password must not be empty"));
        }
        if let Some(t) = &self.postmark_webhook_token
            && (t.len() < 16 || t.len() > 200 || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ChannelError::settings(
                "--postmark-webhook-token must be 16 to 200 printable ASCII characters without spaces: generate one, e.g. with `openssl rand -hex 24`",
            ));
        }
        Ok(())
    }
}

/// An SNS topic ARN: `arn:aws:sns:REGION:ACCOUNT:NAME` (or another AWS partition's).
fn check_topic_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.split(':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sns"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && !parts[5].is_empty()
        && parts[5].len() <= 256
        && parts[5]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--ses-topic-arn `{arn}` is not an SNS topic ARN: copy it from the topic's page, like arn:aws:sns:eu-west-1:123456789012:ses-bounces"
        ))
    }
}

/// Checks that `--username` and `--password` come together, and are not sent in clear
/// unless the channel allows it explicitly.
pub fn validate_credentials(config: &Config, secrets: &Secrets) -> Result<(), ChannelError> {
    match (&config.username, &secrets.password) {
        (Some(_), None) => Err(ChannelError::settings("--username needs --password")),
        (None, Some(_)) => Err(ChannelError::settings("--password needs --username")),
        (Some(_), Some(_)) if config.tls == TlsMode::None && !config.allow_plaintext_auth => {
            Err(ChannelError::settings(PLAINTEXT_AUTH_REFUSED))
        }
        _ => Ok(()),
    }
}

/// Why a channel with credentials and `--tls none` is refused (names `--tls` first: the
/// field to change).
pub const PLAINTEXT_AUTH_REFUSED: &str = "--tls none would send the password in clear: use --tls starttls or tls, or set --allow-plaintext-auth for a relay on a trusted network";

/// Splits the rendered body into its subject line, if it has one, and the rest (module docs).
pub fn split_subject(body: &str) -> (Option<String>, &str) {
    let (first, rest) = match body.split_once('\n') {
        Some((first, rest)) => (first, rest),
        None => (body, ""),
    };
    let first = first.strip_suffix('\r').unwrap_or(first);
    let is_subject = first
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("subject:"));
    if !is_subject {
        return (None, body);
    }
    let subject = first[8..].trim().to_string();
    let rest = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .unwrap_or(rest);
    (Some(subject), rest)
}

/// A fresh Message-ID for this attempt, angle brackets included.
pub fn new_message_id(from: &Mailbox, request: &SendRequest) -> String {
    format!(
        "<herald.{}.{}.{:016x}@{}>",
        request.message_id.get(),
        request.attempt,
        rand::random::<u64>(),
        from.email.domain()
    )
}

/// Where a bounce or complaint webhook finds the email's Message-ID (its provider id):
/// Postmark returns `X-PM-Metadata-*` headers as the webhook's `Metadata`, SendGrid the
/// `unique_args` of `X-SMTPAPI` as fields of each event. Amazon SES returns the original
/// Message-ID header itself, so it needs none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackHeaders {
    pub postmark: bool,
    pub sendgrid: bool,
}

impl FeedbackHeaders {
    /// The headers a channel's configuration calls for.
    pub fn of(config: &Config, secrets: &Secrets) -> FeedbackHeaders {
        FeedbackHeaders {
            postmark: secrets.postmark_webhook_token.is_some(),
            sendgrid: config.sendgrid_verification_key.is_some(),
        }
    }
}

/// What Postmark carries of a Message-ID (`<herald.12.1.00ab…@example.com>`): the part
/// between `<` and `@` (`herald.12.1.00ab…`).
pub fn postmark_metadata_id(message_id: &str) -> &str {
    let id = message_id.trim_start_matches('<');
    id.split('@').next().unwrap_or(id)
}

/// The Message-ID a Postmark report names: its metadata id completed with the channel's
/// sender domain (`<herald.12.1.00ab…@example.com>`); an id that has a domain is kept.
pub fn message_id_from_postmark(reported: &str, domain: &str) -> String {
    let bare = reported
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    if bare.contains('@') {
        format!("<{bare}>")
    } else {
        format!("<{bare}@{domain}>")
    }
}

/// The message for one attempt (module docs for the conventions).
pub fn build_message(
    from: &Mailbox,
    default_subject: Option<&str>,
    request: &SendRequest,
    message_id: &str,
) -> Result<Message, ChannelError> {
    build_message_with(
        from,
        default_subject,
        request,
        message_id,
        FeedbackHeaders::default(),
    )
}

/// [`build_message`] with the headers a bounce webhook needs. With the campaign's email
/// parts (`request.email`): their subject, the sender name on the channel's address, a
/// `Reply-To`, and, with an HTML part, multipart/alternative of the body (plain text,
/// first, as RFC 2046 orders the simplest first) and the HTML.
pub fn build_message_with(
    from: &Mailbox,
    default_subject: Option<&str>,
    request: &SendRequest,
    message_id: &str,
    feedback: FeedbackHeaders,
) -> Result<Message, ChannelError> {
    let to: Mailbox = request.address.as_str().parse().map_err(|e| {
        ChannelError::Message(format!(
            "`{}` is not an email address: {e}",
            request.address
        ))
    })?;
    let (subject, body) = match &request.email {
        Some(email) => (email.subject.clone(), request.body.as_str()),
        None => {
            let (subject, body) = split_subject(&request.body);
            let subject = subject
                .filter(|s| !s.is_empty())
                .or_else(|| default_subject.map(str::to_string))
                .unwrap_or_else(|| "(no subject)".to_string());
            (subject, body)
        }
    };
    let sender = match request.email.as_ref().and_then(|e| e.from_name.clone()) {
        Some(name) => Mailbox::new(Some(name), from.email.clone()),
        None => from.clone(),
    };
    let mut builder = Message::builder()
        .from(sender)
        .to(to)
        .subject(subject)
        .message_id(Some(message_id.to_string()))
        .header(MIME_VERSION_1_0);
    if let Some(reply_to) = request.email.as_ref().and_then(|e| e.reply_to.as_deref()) {
        let mailbox: Mailbox = reply_to.parse().map_err(|e| {
            ChannelError::Message(format!(
                "the reply-to `{reply_to}` is not an email address: {e}"
            ))
        })?;
        builder = builder.reply_to(mailbox);
    }
    if let Some(url) = &request.unsubscribe_url {
        if url.is_empty() || url.contains(|c: char| c.is_control() || c == '<' || c == '>') {
            return Err(ChannelError::Message(format!(
                "the unsubscribe URL `{url}` cannot go in a header"
            )));
        }
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{url}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_string(),
            ));
    }
    // The Message-ID is Herald's own (`new_message_id`): no recipient data goes in these.
    // Postmark keeps metadata values of at most 80 characters: its part before the `@`
    // (under 50), which the webhook completes with the channel's domain.
    if feedback.postmark {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-PM-Metadata-herald_id"),
            postmark_metadata_id(message_id).to_string(),
        ));
    }
    if feedback.sendgrid {
        let args = serde_json::json!({ "unique_args": { crate::email_feedback::HERALD_ID_FIELD: message_id } });
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-SMTPAPI"),
            args.to_string(),
        ));
    }
    let built = match request.email.as_ref().and_then(|e| e.html.clone()) {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(body.to_string(), html)),
        None => builder
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string()),
    };
    built.map_err(|e| ChannelError::Message(format!("cannot build the email: {e}")))
}

/// The timeouts a channel applies (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub content: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            command: COMMAND_TIMEOUT,
            content: CONTENT_TIMEOUT,
        }
    }
}

/// A connection-level failure, before any message was handed over.
fn connect_failure(
    host: &str,
    port: u16,
    step: &str,
    e: &lettre::transport::smtp::Error,
) -> SendResult {
    let error = format!("smtp {host}:{port} {step}: {e}");
    if step == "AUTH" && e.is_permanent() {
        // 535 and its kin: the server refused the channel's login. No message can go; the
        // channel is unavailable until the probe logs in (or new secrets are given).
        let code = e.status().map(|c| c.to_string()).unwrap_or_default();
        let code = if code.is_empty() {
            String::new()
        } else {
            format!(" ({code})")
        };
        return SendResult::CredentialsRefused {
            reason: format!(
                "credentials refused by the SMTP server {host}{code}: check the channel's username and password"
            ),
            error,
        };
    }
    if e.is_permanent() || (e.is_client() && step != "connect") {
        // Greeting refused, bad credentials, STARTTLS or AUTH not offered: every message
        // would fail the same way.
        SendResult::StopCampaign { error }
    } else {
        // The server could not be reached or dropped the connection before any message
        // was handed over: nothing about the recipient.
        SendResult::Unreachable { error }
    }
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

pub struct SmtpChannel {
    name: String,
    config: Config,
    from: Mailbox,
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
    timeouts: Timeouts,
    guard: OutboundGuard,
    feedback: FeedbackHeaders,
}

impl SmtpChannel {
    /// The channel for the registry.
    pub fn build(info: &ChannelInfo, ctx: &BuildContext) -> Result<Arc<dyn Channel>, ChannelError> {
        let config = Config::from_json(&info.config)?;
        let secrets = Secrets::from_json(&ctx.open_secrets(info)?)?;
        Ok(Arc::new(SmtpChannel::new(
            info.name.clone(),
            config,
            secrets,
            Timeouts::default(),
            ctx.outbound.clone(),
        )?))
    }

    /// The channel connects only to addresses `guard` allows, resolving `host` itself.
    pub fn new(
        name: String,
        config: Config,
        secrets: Secrets,
        timeouts: Timeouts,
        guard: OutboundGuard,
    ) -> Result<SmtpChannel, ChannelError> {
        config.validate()?;
        secrets.validate()?;
        validate_credentials(&config, &secrets)?;
        super::http::install_crypto_provider();
        let tls = match config.tls {
            TlsMode::None => None,
            TlsMode::Starttls | TlsMode::Tls => {
                Some(TlsParameters::new(config.host.clone()).map_err(|e| {
                    ChannelError::Setup(format!(
                        "cannot set up TLS for --host {}: {e}",
                        config.host
                    ))
                })?)
            }
        };
        let credentials = match (&config.username, &secrets.password) {
            (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
            _ => None,
        };
        let permits = config.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS) as usize;
        let feedback = FeedbackHeaders::of(&config, &secrets);
        Ok(SmtpChannel {
            feedback,
            name,
            from: config.mailbox()?,
            config,
            tls,
            credentials,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(permits),
            timeouts,
            guard,
        })
    }

    fn checkout(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|i| i.since.elapsed() < IDLE_MAX && !i.conn.has_broken());
        idle.pop().map(|i| i.conn)
    }

    fn recycle(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendResult> {
        let (host, port) = (self.config.host.as_str(), self.config.port);
        let implicit = match self.config.tls {
            TlsMode::Tls => self.tls.clone(),
            _ => None,
        };
        let attempt = async {
            // Resolved and checked here, and lettre connects to exactly these addresses
            // (DNS rebinding cannot pass); TLS still verifies `host`, the name its
            // parameters were built with.
            let addrs = self.guard.resolve(host, port).await.map_err(|e| match e {
                ResolveError::Refused(r) => SendResult::StopCampaign {
                    error: format!("smtp: {r}"),
                },
                ResolveError::Lookup(m) => SendResult::Unreachable {
                    error: format!("smtp {host}:{port} connect: {m}"),
                },
            })?;
            let mut conn = AsyncSmtpConnection::connect_tokio1(
                &addrs[..],
                Some(self.timeouts.connect),
                &self.hello,
                implicit,
                None,
            )
            .await
            .map_err(|e| connect_failure(host, port, "connect", &e))?;
            if self.config.tls == TlsMode::Starttls
                && let Some(params) = self.tls.clone()
            {
                conn.starttls(params, &self.hello)
                    .await
                    .map_err(|e| connect_failure(host, port, "STARTTLS", &e))?;
            }
            if let Some(credentials) = &self.credentials {
                // `new` refuses this combination; checked again on the connection itself
                // so no path sends the password over an unencrypted stream by mistake.
                if !conn.is_encrypted() && !self.config.allow_plaintext_auth {
                    return Err(SendResult::StopCampaign {
                        error: format!("smtp {host}:{port} AUTH: {PLAINTEXT_AUTH_REFUSED}"),
                    });
                }
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(|e| connect_failure(host, port, "AUTH", &e))?;
            }
            Ok(conn)
        };
        match tokio::time::timeout(self.timeouts.connect, attempt).await {
            Ok(result) => result,
            Err(_) => Err(SendResult::Unreachable {
                error: format!("smtp {host}:{port}: connecting timed out"),
            }),
        }
    }

    /// Sends one SMTP command with the command timeout.
    async fn command<C: std::fmt::Display>(
        &self,
        conn: &mut AsyncSmtpConnection,
        command: C,
    ) -> Result<(), CommandError> {
        match tokio::time::timeout(self.timeouts.command, conn.command(command)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(CommandError::Smtp(e)),
            Err(_) => Err(CommandError::Timeout),
        }
    }

    /// Leaves the transaction after a negative reply and keeps the connection if it
    /// still works.
    async fn reset_and_recycle(&self, mut conn: AsyncSmtpConnection) {
        if self.command(&mut conn, Rset).await.is_ok() {
            self.recycle(conn);
        }
    }

    async fn send_inner(&self, request: SendRequest) -> SendResult {
        let message_id = new_message_id(&self.from, &request);
        let message = match build_message_with(
            &self.from,
            self.config.default_subject.as_deref(),
            &request,
            &message_id,
            self.feedback,
        ) {
            Ok(m) => m,
            Err(error) => {
                return SendResult::Permanent {
                    error: error.to_string(),
                };
            }
        };
        let envelope = message.envelope().clone();
        let bytes = message.formatted();

        let Ok(_permit) = self.permits.acquire().await else {
            return SendResult::Transient {
                error: "smtp: the channel is shutting down".into(),
                retry_after: None,
            };
        };

        // MAIL FROM, on a pooled connection when one is idle. A pooled connection the
        // server has dropped fails here without a reply; nothing was handed over yet, so
        // it is replaced once without a word.
        let mut pooled = self.checkout();
        let mut conn = loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => c,
                    Err(result) => return result,
                },
            };
            let mut params = Vec::new();
            if envelope
                .to()
                .iter()
                .chain(envelope.from())
                .any(|a| !AsRef::<str>::as_ref(a).is_ascii())
            {
                if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                    self.recycle(conn);
                    return SendResult::Permanent {
                        error: format!(
                            "smtp: `{}` has non-ASCII characters and the server does not support SMTPUTF8",
                            request.address
                        ),
                    };
                }
                params.push(MailParameter::SmtpUtfEight);
            }
            if !bytes.is_ascii() {
                params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
            }
            match self
                .command(&mut conn, Mail::new(envelope.from().cloned(), params))
                .await
            {
                Ok(()) => break conn,
                Err(CommandError::Smtp(e)) if e.is_transient() => {
                    self.reset_and_recycle(conn).await;
                    return transient("MAIL FROM", &e);
                }
                Err(CommandError::Smtp(e)) if e.is_permanent() => {
                    let error = format!("smtp MAIL FROM: {e}");
                    self.reset_and_recycle(conn).await;
                    return if e.status().is_some_and(|c| c.to_string() == "552") {
                        SendResult::Permanent { error }
                    } else {
                        SendResult::StopCampaign { error }
                    };
                }
                Err(_) if reused => continue,
                Err(e) => {
                    return SendResult::Transient {
                        error: format!("smtp MAIL FROM: {e}"),
                        retry_after: None,
                    };
                }
            }
        };

        // RCPT TO and DATA: a reply refuses this message; a lost connection has not
        // handed anything over.
        let mut steps: Vec<(&str, Step)> = envelope
            .to()
            .iter()
            .map(|to| ("RCPT TO", Step::Rcpt(to.clone())))
            .collect();
        steps.push(("DATA", Step::Data));
        for (name, step) in steps {
            let result = match step {
                Step::Rcpt(to) => self.command(&mut conn, Rcpt::new(to, vec![])).await,
                Step::Data => self.command(&mut conn, Data).await,
            };
            match result {
                Ok(()) => {}
                Err(CommandError::Smtp(e)) if e.is_transient() => {
                    self.reset_and_recycle(conn).await;
                    return transient(name, &e);
                }
                Err(CommandError::Smtp(e)) if e.is_permanent() => {
                    self.reset_and_recycle(conn).await;
                    return SendResult::Permanent {
                        error: format!("smtp {name}: {e}"),
                    };
                }
                Err(e) => {
                    return SendResult::Transient {
                        error: format!("smtp {name}: {e}"),
                        retry_after: None,
                    };
                }
            }
        }

        // The content. From here on a missing answer means the server may have it.
        match tokio::time::timeout(self.timeouts.content, conn.message(&bytes)).await {
            Ok(Ok(_)) => {
                self.recycle(conn);
                SendResult::Accepted {
                    provider_id: message_id,
                }
            }
            Ok(Err(e)) if e.is_transient() => {
                self.recycle(conn);
                transient("content", &e)
            }
            Ok(Err(e)) if e.is_permanent() => {
                self.recycle(conn);
                SendResult::Permanent {
                    error: format!("smtp content: {e}"),
                }
            }
            Ok(Err(e)) => SendResult::Unknown {
                error: format!(
                    "smtp: the server's answer to the message was lost ({e}); it may have been accepted"
                ),
            },
            Err(_) => SendResult::Unknown {
                error: format!(
                    "smtp: no answer to the message within {:?}; it may have been accepted",
                    self.timeouts.content
                ),
            },
        }
    }
}

enum Step {
    Rcpt(lettre::Address),
    Data,
}

enum CommandError {
    Smtp(lettre::transport::smtp::Error),
    Timeout,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Smtp(e) => write!(f, "{}", super::http::describe(e)),
            CommandError::Timeout => f.write_str("no answer in time"),
        }
    }
}

fn transient(step: &str, e: &lettre::transport::smtp::Error) -> SendResult {
    SendResult::Transient {
        error: format!("smtp {step}: {e}"),
        retry_after: None,
    }
}

impl Channel for SmtpChannel {
    fn kind(&self) -> ChannelKind {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, request: SendRequest) -> BoxFuture<'_, SendResult> {
        Box::pin(self.send_inner(request))
    }

    /// Connects (TLS and AUTH as configured) and says QUIT: sends nothing.
    fn probe(&self) -> BoxFuture<'_, Result<(), ChannelError>> {
        Box::pin(async move {
            match self.connect().await {
                Ok(mut conn) => {
                    let _ = conn.quit().await;
                    Ok(())
                }
                Err(
                    SendResult::Unreachable { error }
                    | SendResult::StopCampaign { error }
                    | SendResult::Transient { error, .. }
                    | SendResult::Permanent { error }
                    | SendResult::Unknown { error }
                    | SendResult::OptOut { error }
                    | SendResult::CredentialsRefused { error, .. },
                ) => Err(ChannelError::Provider(error)),
                Err(SendResult::Accepted { .. }) => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CampaignId, MessageId};
    use base64::Engine;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn config(port: u16) -> Config {
        Config {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            from: "Herald News <news@example.com>".into(),
            username: None,
            default_subject: None,
            ses_topic_arn: None,
            sendgrid_verification_key: None,
            max_connections: None,
            allow_plaintext_auth: false,
        }
    }

    fn request(to: &str, body: &str, unsubscribe: Option<&str>) -> SendRequest {
        SendRequest {
            message_id: MessageId(123),
            campaign_id: CampaignId(4),
            address: crate::address::Address::parse(to).unwrap(),
            body: body.into(),
            attempt: 2,
            unsubscribe_url: unsubscribe.map(str::to_string),
            template: None,
            email: None,
        }
    }

    fn formatted(m: &Message) -> String {
        String::from_utf8(m.formatted()).unwrap()
    }

    #[test]
    fn subject_line_convention() {
        assert_eq!(
            split_subject("Subject: Hello Ann\n\nBody\nmore"),
            (Some("Hello Ann".into()), "Body\nmore")
        );
        assert_eq!(
            split_subject("subject:Hi\r\n\r\nBody"),
            (Some("Hi".into()), "Body")
        );
        // Only one blank line is skipped; without one the body starts right after.
        assert_eq!(
            split_subject("Subject: A\n\n\nB"),
            (Some("A".into()), "\nB")
        );
        assert_eq!(split_subject("Subject: A\nB"), (Some("A".into()), "B"));
        assert_eq!(split_subject("Subject: only"), (Some("only".into()), ""));
        assert_eq!(
            split_subject("Hello\nSubject: no"),
            (None, "Hello\nSubject: no")
        );
        assert_eq!(split_subject(" Subject: x"), (None, " Subject: x"));
        assert_eq!(split_subject("Subj"), (None, "Subj"));
    }

    #[test]
    fn builds_the_message_with_the_conventions() {
        let from: Mailbox = "Herald News <news@example.com>".parse().unwrap();
        let req = request(
            "ann@example.org",
            "Subject: Grüße, Ann\n\nHello Ann,\nsee you.",
            Some("https://herald.example.test/u/abc123"),
        );
        let id = new_message_id(&from, &req);
        let (prefix, rest) = id.split_at("<herald.123.2.".len());
        assert_eq!(prefix, "<herald.123.2.");
        let (random, domain) = rest.split_once('@').unwrap();
        assert_eq!(random.len(), 16);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(domain, "example.com>");
        assert_ne!(
            id,
            new_message_id(&from, &req),
            "each attempt gets a fresh id"
        );

        let m = build_message(&from, Some("Default"), &req, &id).unwrap();
        let text = formatted(&m);
        assert!(text.contains(&format!("Message-ID: {id}\r\n")), "{text}");
        assert!(
            text.contains("From: \"Herald News\" <news@example.com>\r\n"),
            "{text}"
        );
        assert!(text.contains("To: ann@example.org\r\n"), "{text}");
        assert!(
            text.contains("Subject: =?utf-8?"),
            "non-ASCII subjects are encoded: {text}"
        );
        assert!(
            text.contains("List-Unsubscribe: <https://herald.example.test/u/abc123>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{text}"
        );
        assert!(text.contains("Date: "), "{text}");
        assert!(text.contains("MIME-Version: 1.0\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nHello Ann,\r\nsee you."), "{text}");
        assert_eq!(m.envelope().to().len(), 1);
        assert_eq!(m.envelope().from().unwrap().to_string(), "news@example.com");

        // No subject line: the default subject, no unsubscribe headers without a URL.
        let plain = request("bob@example.org", "Just text", None);
        let text = formatted(
            &build_message(&from, Some("Weekly news"), &plain, "<x@example.com>").unwrap(),
        );
        assert!(text.contains("Subject: Weekly news\r\n"), "{text}");
        assert!(!text.contains("List-Unsubscribe"), "{text}");
        assert!(text.ends_with("\r\n\r\nJust text"), "{text}");
        let text = formatted(&build_message(&from, None, &plain, "<x@example.com>").unwrap());
        assert!(text.contains("Subject: (no subject)\r\n"), "{text}");
        // A non-ASCII body is transfer-encoded, so the message itself stays ASCII.
        let accented = request("bob@example.org", "Grüße aus Köln 😀", None);
        let bytes = build_message(&from, None, &accented, "<x@example.com>")
            .unwrap()
            .formatted();
        assert!(bytes.is_ascii());

        assert!(
            build_message(
                &from,
                None,
                &request("+14155550100", "x", None),
                "<x@e.com>"
            )
            .is_err()
        );
        assert!(
            build_message(
                &from,
                None,
                &request("a@b.co", "x", Some("https://x/>\r\nBcc: y")),
                "<x@e.com>"
            )
            .is_err()
        );
    }

    #[test]
    fn config_and_secrets_validation() {
        let ok = config(25);
        assert!(ok.validate().is_ok());
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["tls"], "none");
        assert_eq!(Config::from_json(&json).unwrap(), ok);
        assert!(
            Config::from_json(
                &serde_json::json!({"host": "h", "port": 25, "tls": "ssl", "from": "a@b.co"})
            )
            .is_err()
        );
        assert!(Config::from_json(&serde_json::json!({"host": "h", "port": 25, "tls": "tls", "from": "a@b.co", "password": "x"})).is_err());
        assert_eq!("starttls".parse::<TlsMode>(), Ok(TlsMode::Starttls));
        assert!("ssl".parse::<TlsMode>().unwrap_err().mentions("--tls"));

        let err = |c: Config| c.validate().unwrap_err().to_string();
        assert!(
            err(Config {
                host: "".into(),
                ..ok.clone()
            })
            .contains("--host")
        );
        assert!(
            err(Config {
                host: "a b".into(),
                ..ok.clone()
            })
            .contains("--host")
        );
        assert!(
            err(Config {
                port: 0,
                ..ok.clone()
            })
            .contains("--port")
        );
        assert!(
            err(Config {
                from: "nobody".into(),
                ..ok.clone()
            })
            .contains("--from")
        );
        assert!(
            err(Config {
                username: Some("".into()),
                ..ok.clone()
            })
            .contains("--username")
        );
        assert!(
            err(Config {
                default_subject: Some("a\nb".into()),
                ..ok.clone()
            })
            .contains("subject")
        );
        assert!(
            err(Config {
                max_connections: Some(0),
                ..ok.clone()
            })
            .contains("max_connections")
        );

        let with_user = Config {
            username: Some("u".into()),
            tls: TlsMode::Starttls,
            ..ok.clone()
        };
        let pw = Secrets {
            password: Some("p".into()),
            ..Default::default()
        };
        assert!(validate_credentials(&with_user, &pw).is_ok());
        // The password in clear only when the channel says so.
        let plaintext = Config {
            tls: TlsMode::None,
            ..with_user.clone()
        };
        assert!(
            validate_credentials(&plaintext, &pw)
                .unwrap_err()
                .to_string()
                .starts_with("--tls none")
        );
        assert!(
            validate_credentials(
                &Config {
                    allow_plaintext_auth: true,
                    ..plaintext
                },
                &pw
            )
            .is_ok()
        );
        assert!(validate_credentials(&ok, &Secrets::default()).is_ok());
        assert!(
            validate_credentials(&with_user, &Secrets::default())
                .unwrap_err()
                .mentions("--password")
        );
        assert!(
            validate_credentials(&ok, &pw)
                .unwrap_err()
                .mentions("--username")
        );
        assert!(
            Secrets {
                password: Some("".into()),
                ..Default::default()
            }
            .validate()
            .unwrap_err()
            .mentions("--password")
        );
        assert_eq!(
            Secrets::from_json(&serde_json::json!({})).unwrap(),
            Secrets::default()
        );
        assert!(
            !format!(
                "{:?}",
                Secrets {
                    password: Some("hunter2".into()),
                    ..Default::default()
                }
            )
            .contains("hunter2")
        );
        assert!(
            SmtpChannel::new(
                "m".into(),
                with_user,
                Secrets::default(),
                Timeouts::default(),
                OutboundGuard::allow_all()
            )
            .is_err()
        );
    }

    /// A scripted SMTP server. Recipients choose the outcome by local part: `reject…` 550
    /// at RCPT, `tempfail…` 451 at RCPT, `bounce…` 554 after the content, `lost…` closes
    /// the connection after the content, `slow…` never answers the content.
    struct FakeSmtp {
        port: u16,
        connections: Arc<AtomicUsize>,
        messages: Arc<Mutex<Vec<String>>>,
    }

    impl FakeSmtp {
        async fn start(auth: Option<(&'static str, &'static str)>) -> FakeSmtp {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let connections = Arc::new(AtomicUsize::new(0));
            let messages = Arc::new(Mutex::new(Vec::new()));
            let (c, m) = (connections.clone(), messages.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(session(stream, auth, m.clone()));
                }
            });
            FakeSmtp {
                port,
                connections,
                messages,
            }
        }
    }

    async fn session(
        stream: tokio::net::TcpStream,
        auth: Option<(&'static str, &'static str)>,
        messages: Arc<Mutex<Vec<String>>>,
    ) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let _ = write.write_all(b"220 fake ESMTP\r\n").await;
        let mut authed = auth.is_none();
        let mut rcpt = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let upper = line.to_ascii_uppercase();
            let reply: String = if upper.starts_with("EHLO") {
                let auth_line = if auth.is_some() {
                    "250-AUTH PLAIN LOGIN\r\n"
                } else {
                    ""
                };
                format!("250-fake\r\n{auth_line}250-8BITMIME\r\n250 SMTPUTF8\r\n")
            } else if let Some(b64) = line.strip_prefix("AUTH PLAIN ") {
                let (user, pass) = auth.unwrap_or(("", ""));
                let expected =
                    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
                if b64 == expected {
                    authed = true;
                    "235 2.7.0 ok\r\n".into()
                } else {
                    "535 5.7.8 bad credentials\r\n".into()
                }
            } else if upper.starts_with("MAIL FROM") {
                if authed {
                    "250 ok\r\n".into()
                } else {
                    "530 5.7.0 authentication required\r\n".into()
                }
            } else if upper.starts_with("RCPT TO:<") {
                rcpt = line[9..].trim_end_matches('>').to_string();
                if rcpt.starts_with("reject") {
                    "550 5.1.1 no such user\r\n".into()
                } else if rcpt.starts_with("tempfail") {
                    "451 4.3.0 try later\r\n".into()
                } else {
                    "250 ok\r\n".into()
                }
            } else if upper == "DATA" {
                let _ = write.write_all(b"354 go ahead\r\n").await;
                let mut data = String::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l == "." {
                        break;
                    }
                    data.push_str(&l);
                    data.push('\n');
                }
                if rcpt.starts_with("lost") {
                    return;
                }
                if rcpt.starts_with("slow") {
                    std::future::pending::<()>().await;
                }
                if rcpt.starts_with("bounce") {
                    "554 5.7.1 rejected as spam\r\n".into()
                } else {
                    messages.lock().unwrap().push(data);
                    "250 2.0.0 queued\r\n".into()
                }
            } else if upper == "QUIT" {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            } else {
                // NOOP, RSET
                "250 ok\r\n".into()
            };
            if write.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn fast() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            command: Duration::from_secs(2),
            content: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn sends_over_a_reused_connection_and_classifies_replies() {
        let server = FakeSmtp::start(None).await;
        let ch = SmtpChannel::new(
            "mail".into(),
            config(server.port),
            Secrets::default(),
            fast(),
            OutboundGuard::allow_all(),
        )
        .unwrap();

        let SendResult::Accepted { provider_id } = ch
            .send(request(
                "ann@example.org",
                "Subject: Hi\n\nHello",
                Some("https://h.test/u/1"),
            ))
            .await
        else {
            panic!("not accepted");
        };
        assert!(provider_id.starts_with("<herald.123.2."), "{provider_id}");
        assert!(provider_id.ends_with("@example.com>"), "{provider_id}");
        {
            let messages = server.messages.lock().unwrap();
            assert_eq!(messages.len(), 1);
            assert!(messages[0].contains(&format!("Message-ID: {provider_id}")));
            assert!(messages[0].contains("List-Unsubscribe: <https://h.test/u/1>"));
            assert!(messages[0].contains("Subject: Hi"));
        }

        assert!(matches!(
            ch.send(request("reject@example.org", "x", None)).await,
            SendResult::Permanent { error } if error.contains("550")
        ));
        assert!(matches!(
            ch.send(request("tempfail@example.org", "x", None)).await,
            SendResult::Transient { error, .. } if error.contains("451")
        ));
        assert!(matches!(
            ch.send(request("bounce@example.org", "x", None)).await,
            SendResult::Permanent { error } if error.contains("554")
        ));
        assert!(matches!(
            ch.send(request("bob@example.org", "x", None)).await,
            SendResult::Accepted { .. }
        ));
        assert_eq!(
            server.connections.load(Ordering::SeqCst),
            1,
            "refusals are reset and the connection is reused"
        );

        // The connection drops after the content: the outcome is unknown.
        assert!(matches!(
            ch.send(request("lost@example.org", "x", None)).await,
            SendResult::Unknown { .. }
        ));
        assert!(matches!(
            ch.send(request("slow@example.org", "x", None)).await,
            SendResult::Unknown { .. }
        ));
        // A fresh connection after the broken ones.
        assert!(matches!(
            ch.send(request("carol@example.org", "x", None)).await,
            SendResult::Accepted { .. }
        ));
        assert_eq!(server.messages.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_dropped_pooled_connection_is_replaced_silently() {
        let server = FakeSmtp::start(None).await;
        let ch = SmtpChannel::new(
            "mail".into(),
            config(server.port),
            Secrets::default(),
            fast(),
            OutboundGuard::allow_all(),
        )
        .unwrap();
        assert!(matches!(
            ch.send(request("a@example.org", "x", None)).await,
            SendResult::Accepted { .. }
        ));
        // Break the idle connection behind the pool's back: the server side is gone.
        {
            let mut idle = ch.idle.lock().unwrap();
            assert_eq!(idle.len(), 1);
            let Idle { conn, .. } = idle.pop().unwrap();
            drop(conn);
        }
        // Replace it with one to a server that has closed.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (mut s, _) = closed.accept().await.unwrap();
            s.write_all(b"220 x\r\n").await.unwrap();
            let mut buf = [0u8; 256];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            s.write_all(b"250 x\r\n").await.unwrap();
            // Close after EHLO.
        });
        let stale =
            AsyncSmtpConnection::connect_tokio1(addr, None, &ClientId::default(), None, None)
                .await
                .unwrap();
        accept.await.unwrap();
        ch.recycle(stale);
        assert!(matches!(
            ch.send(request("b@example.org", "x", None)).await,
            SendResult::Accepted { .. }
        ));
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_and_auth_failures() {
        // Nothing listening: unreachable (nothing was handed over).
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let ch = SmtpChannel::new(
            "mail".into(),
            config(port),
            Secrets::default(),
            fast(),
            OutboundGuard::allow_all(),
        )
        .unwrap();
        assert!(matches!(
            ch.send(request("a@example.org", "x", None)).await,
            SendResult::Unreachable { .. }
        ));

        let server = FakeSmtp::start(Some(("user", "secret"))).await;
        // No credentials where the server wants them: MAIL FROM refused, every message
        // would be.
        let ch = SmtpChannel::new(
            "mail".into(),
            config(server.port),
            Secrets::default(),
            fast(),
            OutboundGuard::allow_all(),
        )
        .unwrap();
        assert!(matches!(
            ch.send(request("a@example.org", "x", None)).await,
            SendResult::StopCampaign { error } if error.contains("530")
        ));
        let with_user = Config {
            username: Some("user".into()),
            allow_plaintext_auth: true,
            ..config(server.port)
        };
        let ch = SmtpChannel::new(
            "mail".into(),
            with_user.clone(),
            Secrets {
                password: Some("wrong".into()),
                ..Default::default()
            },
            fast(),
            OutboundGuard::allow_all(),
        )
        .unwrap();
        let result = ch.send(request("a@example.org", "x", None)).await;
        assert!(
            matches!(&result, SendResult::CredentialsRefused { reason, error } if error.contains("535") && !error.contains("wrong") && reason.contains("username and password")),
            "{result:?}"
        );
        let ch = SmtpChannel::new(
            "mail".into(),
            with_user,
            Secrets {
                password: Some("secret".into()),
                ..Default::default()
            },
            fast(),
            OutboundGuard::allow_all(),
        )
        .unwrap();
        assert!(matches!(
            ch.send(request("a@example.org", "x", None)).await,
            SendResult::Accepted { .. }
        ));

        // STARTTLS required but not offered: configuration.
        let ch = SmtpChannel::new(
            "mail".into(),
            Config {
                tls: TlsMode::Starttls,
                ..config(server.port)
            },
            Secrets::default(),
            fast(),
            OutboundGuard::allow_all(),
        )
        .unwrap();
        assert!(matches!(
            ch.send(request("a@example.org", "x", None)).await,
            SendResult::StopCampaign { error } if error.contains("STARTTLS")
        ));
    }

    /// An email with its parts, as an independent MIME parser (mail-parser, Stalwart's)
    /// reads it: multipart/alternative with the text first, both bodies decoded to what
    /// was given (non-ASCII and a line longer than SMTP's 998 octets included), the
    /// subject, the sender's name on the channel's address, Reply-To, Message-ID and the
    /// headers the bounce webhooks read Herald's id back from.
    #[test]
    fn an_email_with_parts_reads_back_with_an_independent_parser() {
        use mail_parser::{MessageParser, MimeHeaders};
        let from: Mailbox = "Herald News <news@example.com>".parse().unwrap();
        let text = "Hallo Zoë,\nGrüße aus Köln — bis bald! 😀\n";
        let html = format!(
            "<html><body><h1>Grüße, Zoë &amp; co</h1><p>{}</p></body></html>",
            "Ça va très bien, merci — 😀 ".repeat(80)
        );
        assert!(
            html.lines().any(|l| l.len() > 998),
            "one line longer than SMTP's limit"
        );
        let subject = "Ünsere Aktion für Zoë: −20 % 😀";
        let mut req = request("zoe@example.org", text, None);
        req.email = Some(crate::email_content::RenderedEmail {
            subject: subject.into(),
            html: Some(html.clone()),
            from_name: Some("Zoë at Herald, Inc.".into()),
            reply_to: Some("support@example.com".into()),
        });
        let id = new_message_id(&from, &req);
        let feedback = FeedbackHeaders {
            postmark: true,
            sendgrid: true,
        };
        let bytes = build_message_with(&from, Some("Default"), &req, &id, feedback)
            .unwrap()
            .formatted();
        assert!(
            bytes.is_ascii(),
            "transfer-encoded, so the message is ASCII"
        );
        assert!(
            bytes.split(|&b| b == b'\n').all(|l| l.len() <= 1000),
            "no line over 998 octets and its CRLF"
        );
        let raw = String::from_utf8(bytes.clone()).unwrap();
        let m = MessageParser::default()
            .parse(&bytes)
            .unwrap_or_else(|| panic!("unparseable: {raw}"));

        let root = m.root_part();
        let ct = root.content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("alternative")),
            "{raw}"
        );
        let parts = root.sub_parts().unwrap();
        assert_eq!(parts.len(), 2, "{raw}");
        let part = |i: usize| &m.parts[parts[i] as usize];
        let kind = |i: usize| {
            let ct = part(i).content_type().unwrap();
            (ct.ctype().to_string(), ct.subtype().map(str::to_string))
        };
        assert_eq!(kind(0), ("text".into(), Some("plain".into())), "{raw}");
        assert_eq!(kind(1), ("text".into(), Some("html".into())), "{raw}");
        let lf = |s: &str| s.replace("\r\n", "\n");
        assert_eq!(lf(part(0).text_contents().unwrap()), text, "{raw}");
        assert_eq!(lf(part(1).text_contents().unwrap()), html, "{raw}");
        assert_eq!(m.body_text(0).map(|t| lf(&t)).as_deref(), Some(text));
        assert_eq!(
            m.body_html(0).map(|t| lf(&t)).as_deref(),
            Some(html.as_str())
        );

        assert_eq!(m.subject(), Some(subject));
        let sender = m.from().and_then(|a| a.first()).unwrap();
        assert_eq!(sender.name(), Some("Zoë at Herald, Inc."));
        assert_eq!(sender.address(), Some("news@example.com"));
        assert_eq!(m.from().and_then(|a| a.as_list()).map(<[_]>::len), Some(1));
        let reply_to = m.reply_to().and_then(|a| a.first()).unwrap();
        assert_eq!(reply_to.address(), Some("support@example.com"));
        let to = m.to().and_then(|a| a.first()).unwrap();
        assert_eq!(to.address(), Some("zoe@example.org"));
        let bare_id = id.trim_start_matches('<').trim_end_matches('>');
        assert_eq!(m.message_id(), Some(bare_id));

        // Herald's id where Postmark (Metadata) and SendGrid (unique_args) return it.
        let header_text = |name: &str| {
            m.header(name)
                .and_then(|v| v.as_text())
                .map(str::trim)
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no {name} header: {raw}"))
        };
        let pm = header_text("X-PM-Metadata-herald_id");
        assert_eq!(pm, postmark_metadata_id(&id));
        assert!(pm.len() <= 80 && !pm.contains('@'), "{pm}");
        assert_eq!(message_id_from_postmark(&pm, "example.com"), id);
        assert_eq!(message_id_from_postmark(&id, "other.org"), id);
        let smtpapi: serde_json::Value = serde_json::from_str(&header_text("X-SMTPAPI")).unwrap();
        assert_eq!(
            smtpapi["unique_args"][crate::email_feedback::HERALD_ID_FIELD],
            serde_json::Value::String(id.clone()),
            "{smtpapi}"
        );

        // Without the feedback headers: neither header.
        let plain_bytes = build_message_with(&from, None, &req, &id, FeedbackHeaders::default())
            .unwrap()
            .formatted();
        let plain_headers = MessageParser::default().parse(&plain_bytes).unwrap();
        assert!(plain_headers.header("X-PM-Metadata-herald_id").is_none());
        assert!(plain_headers.header("X-SMTPAPI").is_none());

        // Without parts: one text/plain part, the subject from the body's first line.
        let plain = request("zoe@example.org", "Subject: Grüße\n\nHallo Zoë", None);
        let bytes = build_message_with(&from, None, &plain, &id, feedback)
            .unwrap()
            .formatted();
        let m = MessageParser::default().parse(&bytes).unwrap();
        let ct = m.root_part().content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
        assert_eq!(m.parts.len(), 1);
        assert_eq!(m.subject(), Some("Grüße"));
        assert_eq!(m.body_text(0).map(|t| lf(&t)).as_deref(), Some("Hallo Zoë"));
        let sender = m.from().and_then(|a| a.first()).unwrap();
        assert_eq!(sender.name(), Some("Herald News"));
        assert!(m.reply_to().is_none());
        // With parts but no HTML: text/plain still, the parts' subject and sender.
        req.email = Some(crate::email_content::RenderedEmail {
            subject: "Nur Text".into(),
            html: None,
            from_name: None,
            reply_to: None,
        });
        let bytes = build_message_with(&from, None, &req, &id, feedback)
            .unwrap()
            .formatted();
        let m = MessageParser::default().parse(&bytes).unwrap();
        let ct = m.root_part().content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
        assert_eq!(m.subject(), Some("Nur Text"));
        assert_eq!(m.body_text(0).map(|t| lf(&t)).as_deref(), Some(text));
        let sender = m.from().and_then(|a| a.first()).unwrap();
        assert_eq!(sender.name(), Some("Herald News"));
        assert_eq!(sender.address(), Some("news@example.com"));
    }
}
