//! Provider webhooks served by `herald serve`: Twilio status callbacks and inbound
//! messages, WhatsApp verification and events (email bounces and complaints: `email.rs`,
//! with the same admission, answers and record).
//!
//! A webhook speaks only for the channel its path names: its receipts carry that channel
//! (`Receipt::channel_id`), so they find only that channel's messages, and its opt-outs act
//! on that channel's organisation. Every request is first admitted per source address and
//! channel (`limit`, 429 beyond `webhook_rate_per_minute`). A missing or bad signature, an
//! unknown channel and a channel of the other provider all get the same 403, so channel ids
//! cannot be probed; they change nothing, are counted in `herald_webhooks_rejected_total`
//! and are not stored. A verified request is kept as it arrived (`webhook_events`, deleted
//! by the engine after `webhook_retention_days`). A verified but malformed body gets 400 and
//! changes nothing. Receipts go through `Store::apply_receipts`, which only ever moves a
//! message forwards and keeps a receipt whose provider id is not recorded yet. Inbound
//! STOP-family keywords suppress the sender across the organisation's channels;
//! START-family lifts it.

use crate::app_state::{AppState, problem};
use crate::channel_kind::{ChannelKind, WebhookRoute, smtp, twilio, whatsapp};
use crate::channels::classify::{twilio_status, whatsapp_status};
use crate::ids::{ChannelId, MessageId, ReplyId};
use crate::optout::{Keyword, keyword};
use crate::signatures::{verify_meta, verify_twilio};
use crate::store::{ChannelInfo, InboundMessage, Receipt};
use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use std::collections::HashMap;
use std::net::SocketAddr;

/// The handlers of the webhook routes the kinds' descriptors declare
/// (`ChannelKindDescriptor::webhooks`); a test checks that every declared route has one.
fn handlers() -> Vec<(ChannelKind, &'static WebhookRoute, MethodRouter<AppState>)> {
    vec![
        (
            twilio::KIND,
            &twilio::STATUS_CALLBACK,
            post(twilio_status_callback),
        ),
        (twilio::KIND, &twilio::INBOUND, post(twilio_inbound)),
        (
            whatsapp::KIND,
            &whatsapp::EVENTS,
            get(whatsapp_verify).post(whatsapp_event),
        ),
        // An email provider batches its reports (SendGrid up to 768 KB a request): these
        // routes take up to `MAX_FEEDBACK_BODY`, the others the router's 256 KiB.
        (
            smtp::KIND,
            &smtp::SES,
            post(super::email::ses).layer(feedback_limit()),
        ),
        (
            smtp::KIND,
            &smtp::POSTMARK,
            post(super::email::postmark).layer(feedback_limit()),
        ),
        (
            smtp::KIND,
            &smtp::SENDGRID,
            post(super::email::sendgrid).layer(feedback_limit()),
        ),
    ]
}

fn feedback_limit() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(crate::email_feedback::MAX_FEEDBACK_BODY)
}

pub fn routes() -> Router<AppState> {
    handlers()
        .into_iter()
        .fold(Router::new(), |router, (kind, route, handler)| {
            router.route(&kind.webhook_path(route, "{channel_id}"), handler)
        })
}

pub(super) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "webhook could not be processed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "webhook-unavailable",
        "The webhook could not be processed now",
        "the database is unavailable; the provider will retry",
    )
}

pub(super) fn forbidden(detail: &str) -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "bad-signature",
        "Signature check failed",
        detail,
    )
}

/// The one answer for an unknown channel, a channel of the other provider, unreadable
/// secrets and a bad or missing signature: telling them apart would let anyone probe which
/// channel ids exist.
const TWILIO_UNVERIFIED: &str = "X-Twilio-Signature is missing or does not match: sign with the auth token of the Twilio channel this path names (there may be no such channel)";
const WHATSAPP_UNVERIFIED: &str = "X-Hub-Signature-256 is missing or does not match: sign with the app secret of the WhatsApp channel this path names (there may be no such channel)";
const WHATSAPP_UNVERIFIED_TOKEN: &str = "hub.mode must be subscribe and hub.verify_token must match the verify token of the WhatsApp channel this path names (there may be no such channel)";

/// Counts a refused webhook. Labels are fixed words: never a tenant's name, and never the
/// path's channel id, which anyone can vary to grow the metric.
pub(super) fn rejected(channel_kind: ChannelKind, reason: &'static str) {
    metrics::counter!("herald_webhooks_rejected_total", "channel_kind" => channel_kind.as_str(), "reason" => reason)
        .increment(1);
}

/// The connecting address, as `herald serve` records it (`ConnectInfo`); absent for
/// in-process callers, which then share one allowance per channel.
pub(super) type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// Counts one request for `channel_id` from `peer`; over the rate, the 429 answer (with
/// `Retry-After`) to give instead of serving it.
pub(super) fn over_rate(
    state: &AppState,
    peer: &Peer,
    channel_id: ChannelId,
    channel_kind: ChannelKind,
) -> Option<Response> {
    let ip = peer.as_ref().map(|Extension(ConnectInfo(addr))| addr.ip());
    let per_minute = state.settings.webhook_rate_per_minute;
    match state
        .webhook_limiter
        .admit(ip, channel_id, per_minute, crate::clock::now_ms())
    {
        Ok(()) => None,
        Err(retry_after) => {
            rejected(channel_kind, "rate_limited");
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "webhook-rate-limited",
                "Too many webhook requests",
                &format!(
                    "more than {per_minute} requests a minute from this address for this channel \
                     (webhook_rate_per_minute); retry after {retry_after} s"
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            Some(response)
        }
    }
}

/// The answer to a webhook path that names no channel: only `chn_5` and the bare `5` of
/// callback URLs configured in a provider's console before ids were prefixed are ids.
/// 404 as problem+json (the syntax of an id is public, so this tells a prober nothing).
pub(super) fn bad_path(e: &crate::ids::IdError, channel_kind: ChannelKind) -> Response {
    rejected(channel_kind, "bad_path");
    problem(
        StatusCode::NOT_FOUND,
        "no-such-webhook",
        "No such webhook",
        &format!("{e}: a webhook path names a channel by its id"),
    )
}

pub(super) fn malformed(detail: &str) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "malformed-webhook",
        "Malformed webhook body",
        detail,
    )
}

/// The channel, if it exists and is of the expected kind, with its opened secrets; `None`
/// when there is none to verify against (the caller answers as for a bad signature).
pub(super) async fn channel_with_secrets(
    state: &AppState,
    channel_id: ChannelId,
    kind: ChannelKind,
) -> Result<Option<(ChannelInfo, serde_json::Value)>, Response> {
    let info = match state.store.channel(channel_id).await {
        Ok(info) if info.kind == kind.as_str() => info,
        Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {
            tracing::debug!(channel_id = %channel_id, kind = kind.as_str(), "webhook for no such channel");
            return Ok(None);
        }
        Err(e) => return Err(internal(e)),
    };
    match state.context.open_secrets(&info) {
        Ok(secrets) => Ok(Some((info, secrets))),
        Err(e) => {
            tracing::error!(channel_id = %channel_id, error = %e, "channel secrets cannot be opened; webhooks for it are refused");
            Ok(None)
        }
    }
}

pub(super) fn secret<'a>(secrets: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    secrets
        .get(name)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

/// Keeps a verified request as it arrived. Unverified ones are anyone's and are only
/// counted (`rejected`): a row each would let forged traffic fill the disk.
pub(super) async fn keep(
    state: &AppState,
    channel_id: ChannelId,
    kind: &str,
    outcome: &str,
    body: &[u8],
) {
    let text = String::from_utf8_lossy(body);
    if let Err(e) = state
        .store
        .record_webhook_event(channel_id, kind, true, outcome, &text)
        .await
    {
        tracing::warn!(channel_id = %channel_id, error = %e, "could not keep a raw webhook event");
    }
}

/// Keeps a verified request that carried inbound messages and reports them
/// (`message.inbound`) in the same transaction; unlike `keep`, a failure is the
/// provider's cue to retry (the dedup makes the retry report nothing twice).
async fn keep_inbound(
    state: &AppState,
    channel_id: ChannelId,
    kind: &str,
    outcome: &str,
    body: &[u8],
    inbound: &[InboundMessage],
) -> Result<Vec<Option<ReplyId>>, Response> {
    if inbound.is_empty() {
        keep(state, channel_id, kind, outcome, body).await;
        return Ok(Vec::new());
    }
    let text = String::from_utf8_lossy(body);
    match state
        .store
        .record_webhook_with_inbound(channel_id, kind, outcome, &text, inbound)
        .await
    {
        Ok(r) => {
            tracing::info!(channel_id = %channel_id, events = r.events, replies = r.replies.iter().flatten().count(), "inbound messages recorded");
            Ok(r.replies)
        }
        Err(e) => Err(internal(e)),
    }
}

/// What Herald answers a STOP on a channel whose provider does not confirm it itself
/// (WhatsApp; a Twilio short code outside a Messaging Service): the opt-out took effect,
/// and how to undo it.
pub const STOP_CONFIRMATION: &str =
    "You are unsubscribed and will get no more messages from us. Reply START to subscribe again.";

/// An inbound message as the inbox keeps it: every one is a reply (docs/INBOX.md); a bare
/// STOP or START is reported as a contact event instead of `message.inbound`.
fn inbound_message(from: &str, text: &str, provider_message_id: Option<&str>) -> InboundMessage {
    InboundMessage {
        from: inbound_sender(from),
        body: text.to_string(),
        provider_message_id: provider_message_id.map(str::to_string),
        keyword: keyword(text).map(|k| match k {
            Keyword::Help => "help",
            Keyword::Stop => "stop",
            Keyword::Start => "start",
        }),
        auto_reply: None,
        auto_reply_status: None,
    }
}

/// The organisation's HELP answer, read before the webhook is recorded (so the answer
/// and its record go together); a database error is the provider's cue to retry.
async fn help_reply(state: &AppState, info: &ChannelInfo) -> Result<Option<String>, Response> {
    state
        .store
        .org_help_reply(info.org_id)
        .await
        .map_err(internal)
}

/// Sends, after the webhook was recorded, each answer recorded as `pending` (WhatsApp has
/// no way to answer in the webhook's response), and records how it went.
fn send_pending_answers(
    state: &AppState,
    info: &ChannelInfo,
    inbound: &[InboundMessage],
    replies: &[Option<ReplyId>],
) {
    let pending: Vec<(ReplyId, String, String)> = inbound
        .iter()
        .zip(replies)
        .filter_map(|(m, id)| {
            let id = (*id)?;
            (m.auto_reply_status.as_deref() == Some("pending"))
                .then(|| (id, m.from.clone(), m.auto_reply.clone().unwrap_or_default()))
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let store = state.store.clone();
    let context = state.context.clone();
    let channel_id = info.id;
    tokio::spawn(async move {
        let registry = crate::channels::ChannelRegistry::new(store.clone(), None, context);
        let channel = registry.get(channel_id).await;
        for (reply, to, text) in pending {
            let status = match (&channel, crate::address::Address::parse(&to)) {
                (Err(e), _) => format!("failed: the channel cannot send: {e}"),
                (_, Err(e)) => format!("failed: {e}"),
                (Ok(channel), Ok(address)) => {
                    // Not a campaign's message: no message row, no campaign.
                    let request = crate::channels::SendRequest {
                        message_id: MessageId(0),
                        campaign_id: crate::ids::CampaignId(0),
                        address,
                        body: text,
                        attempt: 1,
                        unsubscribe_url: None,
                        template: None,
                        email: None,
                    };
                    match channel.send(request).await {
                        crate::channels::SendResult::Accepted { provider_id, .. } => {
                            format!("sent: {provider_id}")
                        }
                        other => format!("failed: {}", other.describe()),
                    }
                }
            };
            tracing::info!(channel_id = %channel_id, reply_id = %reply, status, "answer to an inbound message");
            if let Err(e) = store.set_auto_reply_status(reply, &status).await {
                tracing::warn!(reply_id = %reply, error = %e, "could not record how an answer went");
            }
        }
    });
}

/// A TwiML text node: `&`, `<` and `>` escaped.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Checks `X-Twilio-Signature` over the public URL Twilio called and the form parameters.
async fn twilio_verified_form(
    state: &AppState,
    channel_id: ChannelId,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(ChannelInfo, Vec<(String, String)>), Response> {
    // Everything that does not depend on the channel is checked before it is looked up, so
    // these answers are the same for every channel id.
    let Some(public) = state.context.public_url.as_deref() else {
        rejected(twilio::KIND, "public_url_unset");
        return Err(forbidden(
            "Twilio signs the public URL it called; set public_url (HERALD_PUBLIC_URL) so Herald can check it",
        ));
    };
    let params = match parse_twilio_form(body) {
        Ok(p) => p,
        Err(e) => {
            rejected(twilio::KIND, "malformed");
            return Err(malformed(&format!("the body is not form-encoded: {e}")));
        }
    };
    let Some((info, secrets)) = channel_with_secrets(state, channel_id, twilio::KIND).await? else {
        rejected(twilio::KIND, "bad_signature");
        return Err(forbidden(TWILIO_UNVERIFIED));
    };
    let url = format!(
        "{}{}",
        public.trim_end_matches('/'),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = secret(&secrets, "auth_token").unwrap_or("");
    if signature.is_empty() || token.is_empty() || !verify_twilio(token, &url, &params, signature) {
        rejected(twilio::KIND, "bad_signature");
        return Err(forbidden(TWILIO_UNVERIFIED));
    }
    Ok((info, params))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

async fn twilio_status_callback(
    State(state): State<AppState>,
    Path(path_id): Path<String>,
    peer: Peer,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let channel_id = match ChannelId::parse_lenient(&path_id) {
        Ok(id) => id,
        Err(e) => return bad_path(&e, twilio::KIND),
    };
    let kind = twilio::STATUS_CALLBACK.recorded_as;
    if let Some(r) = over_rate(&state, &peer, channel_id, twilio::KIND) {
        return r;
    }
    let (info, params) = match twilio_verified_form(&state, channel_id, &uri, &headers, &body).await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (receipt, opted_out) = match read_twilio_status(info.id, &params) {
        TwilioStatus::Incomplete => {
            keep(
                &state,
                channel_id,
                kind,
                "rejected: no MessageSid or MessageStatus",
                &body,
            )
            .await;
            return malformed("a status callback needs MessageSid and MessageStatus");
        }
        TwilioStatus::Unknown(status) => {
            keep(
                &state,
                channel_id,
                kind,
                &format!("ignored: status {status}"),
                &body,
            )
            .await;
            return StatusCode::OK.into_response();
        }
        TwilioStatus::Receipt { receipt, opted_out } => (receipt, opted_out),
    };
    if let Some(address) = opted_out {
        // Some opt-outs arrive only in a status callback.
        if let Err(e) = state
            .store
            .suppress(
                info.org_id,
                address,
                "opted out at the provider (Twilio status callback)",
                &crate::store::OptSource::new("provider_opt_out", Some(info.id), None),
            )
            .await
        {
            return internal(e);
        }
    }
    apply(&state, channel_id, kind, receipt, &body).await
}

async fn apply(
    state: &AppState,
    channel_id: ChannelId,
    kind: &str,
    receipt: Receipt,
    body: &[u8],
) -> Response {
    match state
        .store
        .apply_receipts(std::slice::from_ref(&receipt), crate::clock::now_ms())
        .await
    {
        Ok(report) => {
            let outcome = if report.applied > 0 {
                "applied"
            } else if report.kept > 0 {
                "kept: provider id not recorded yet"
            } else {
                "ignored: not newer than the message's status"
            };
            tracing::debug!(channel_id = %channel_id, provider_id = %receipt.provider_id, status = %receipt.status, outcome, "receipt");
            keep(state, channel_id, kind, outcome, body).await;
            StatusCode::OK.into_response()
        }
        Err(e) => internal(e),
    }
}

/// Applies an inbound message's keyword to the organisation's suppression list.
async fn opt_out(
    state: &AppState,
    info: &ChannelInfo,
    from: &str,
    text: &str,
) -> Result<&'static str, Response> {
    let address = inbound_sender(from);
    let word: String = text.trim().to_uppercase().chars().take(32).collect();
    let via = crate::store::OptSource::new("keyword", Some(info.id), Some(&word));
    match keyword(text) {
        Some(Keyword::Stop) => {
            let reason = format!("inbound {word} on channel `{}`", info.name);
            state
                .store
                .suppress(info.org_id, &address, &reason, &via)
                .await
                .map_err(internal)?;
            tracing::info!(channel_id = %info.id, "inbound opt-out: address suppressed");
            Ok("opt-out: suppressed")
        }
        Some(Keyword::Start) => {
            state
                .store
                .unsuppress(info.org_id, &address, &via)
                .await
                .map_err(internal)?;
            tracing::info!(channel_id = %info.id, "inbound opt-in: suppression lifted");
            Ok("opt-in: suppression lifted")
        }
        Some(Keyword::Help) | None => Ok("inbound message: no keyword"),
    }
}

async fn twilio_inbound(
    State(state): State<AppState>,
    Path(path_id): Path<String>,
    peer: Peer,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let channel_id = match ChannelId::parse_lenient(&path_id) {
        Ok(id) => id,
        Err(e) => return bad_path(&e, twilio::KIND),
    };
    let kind = twilio::INBOUND.recorded_as;
    if let Some(r) = over_rate(&state, &peer, channel_id, twilio::KIND) {
        return r;
    }
    let (info, params) = match twilio_verified_form(&state, channel_id, &uri, &headers, &body).await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(from) = param(&params, "From") else {
        keep(&state, channel_id, kind, "rejected: no From", &body).await;
        return malformed("an inbound message needs From");
    };
    let text = param(&params, "Body").unwrap_or("");
    let outcome = match opt_out(&state, &info, from, text).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut message = inbound_message(from, text, param(&params, "MessageSid"));
    // Herald answers HELP with the organisation's text, and STOP where Twilio does not
    // confirm it itself, in the webhook's own answer (TwiML), which Twilio sends.
    match message.keyword {
        Some("help") => {
            let help = match help_reply(&state, &info).await {
                Ok(h) => h,
                Err(r) => return r,
            };
            if let Some(help) = help {
                message.auto_reply = Some(help);
                message.auto_reply_status = Some("in_webhook_answer".into());
            }
        }
        Some("stop") if twilio_confirms_stop(&params) => {
            message.auto_reply_status = Some("provider_confirms".into());
        }
        Some("stop") => {
            message.auto_reply = Some(STOP_CONFIRMATION.into());
            message.auto_reply_status = Some("in_webhook_answer".into());
        }
        _ => {}
    }
    let answer = message.auto_reply.clone();
    let inbound = [message];
    let recorded = match keep_inbound(&state, channel_id, kind, outcome, &body, &inbound).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    // A provider's retry of a message already recorded is not answered twice.
    let twiml = match (answer, recorded.first().copied().flatten()) {
        (Some(text), Some(_)) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            xml_text(&text)
        ),
        _ => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".to_string(),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], twiml).into_response()
}

/// Whether Twilio confirms a STOP to its sender itself. Its opt-out handling covers SMS
/// long codes, toll-free numbers and every sender of a Messaging Service; a standalone
/// short code (the message's `To`: digits only, no `+`) outside a Messaging Service gets
/// none, and neither does WhatsApp through Twilio (`To` = `whatsapp:+…`), so Herald must
/// answer (docs/INBOX.md).
fn twilio_confirms_stop(params: &[(String, String)]) -> bool {
    let to = param(params, "To").unwrap_or_default();
    if to.starts_with("whatsapp:") {
        return false;
    }
    param(params, "MessagingServiceSid").is_some() || !is_short_code(to)
}

/// A short code as Twilio writes one in `To`: 3 to 8 digits, with no country prefix.
fn is_short_code(to: &str) -> bool {
    (3..=8).contains(&to.len()) && to.bytes().all(|b| b.is_ascii_digit())
}

/// Meta's subscription handshake: echo `hub.challenge` when the verify token matches.
async fn whatsapp_verify(
    State(state): State<AppState>,
    Path(path_id): Path<String>,
    peer: Peer,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let channel_id = match ChannelId::parse_lenient(&path_id) {
        Ok(id) => id,
        Err(e) => return bad_path(&e, whatsapp::KIND),
    };
    if let Some(r) = over_rate(&state, &peer, channel_id, whatsapp::KIND) {
        return r;
    }
    let secrets = match channel_with_secrets(&state, channel_id, whatsapp::KIND).await {
        Ok(Some((_, secrets))) => secrets,
        Ok(None) => serde_json::Value::Null,
        Err(r) => return r,
    };
    let expected = secret(&secrets, "verify_token");
    let given = query.get("hub.verify_token").map(String::as_str);
    match (query.get("hub.mode").map(String::as_str), expected, given) {
        (Some("subscribe"), Some(expected), Some(given))
            if crate::signatures::constant_time_eq(expected.as_bytes(), given.as_bytes()) =>
        {
            query
                .get("hub.challenge")
                .cloned()
                .unwrap_or_default()
                .into_response()
        }
        _ => {
            rejected(whatsapp::KIND, "bad_verify_token");
            forbidden(WHATSAPP_UNVERIFIED_TOKEN)
        }
    }
}

async fn whatsapp_event(
    State(state): State<AppState>,
    Path(path_id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let channel_id = match ChannelId::parse_lenient(&path_id) {
        Ok(id) => id,
        Err(e) => return bad_path(&e, whatsapp::KIND),
    };
    let kind = whatsapp::EVENTS.recorded_as;
    if let Some(r) = over_rate(&state, &peer, channel_id, whatsapp::KIND) {
        return r;
    }
    let (info, secrets) = match channel_with_secrets(&state, channel_id, whatsapp::KIND).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            rejected(whatsapp::KIND, "bad_signature");
            return forbidden(WHATSAPP_UNVERIFIED);
        }
        Err(r) => return r,
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let app_secret = secret(&secrets, "app_secret").unwrap_or("");
    if signature.is_empty() || app_secret.is_empty() || !verify_meta(app_secret, &body, signature) {
        rejected(whatsapp::KIND, "bad_signature");
        return forbidden(WHATSAPP_UNVERIFIED);
    }
    let WhatsAppEvent {
        receipts,
        proven,
        opted_out,
        inbound,
    } = match parse_whatsapp_event(info.id, &body) {
        Ok(event) => event,
        Err(e) => {
            keep(&state, channel_id, kind, e.outcome(), &body).await;
            return malformed(&e.to_string());
        }
    };
    let mut outcomes = Vec::new();
    let mut reported = Vec::new();
    let mut help: Option<Option<String>> = None;
    for (from, text, id) in &inbound {
        match opt_out(&state, &info, from, text).await {
            Ok(o) => outcomes.push(o.to_string()),
            Err(r) => return r,
        }
        let mut message = inbound_message(from, text, id.as_deref());
        // WhatsApp confirms no STOP itself and has no answer in the webhook's response:
        // Herald sends the confirmation, and the HELP answer, once the webhook is recorded.
        match message.keyword {
            Some("help") => {
                if help.is_none() {
                    help = Some(match help_reply(&state, &info).await {
                        Ok(h) => h,
                        Err(r) => return r,
                    });
                }
                if let Some(Some(text)) = &help {
                    message.auto_reply = Some(text.clone());
                    message.auto_reply_status = Some("pending".into());
                }
            }
            Some("stop") => {
                message.auto_reply = Some(STOP_CONFIRMATION.into());
                message.auto_reply_status = Some("pending".into());
            }
            _ => {}
        }
        reported.push(message);
    }
    for address in &opted_out {
        let reason = format!(
            "opted out at the provider (WhatsApp status webhook on channel `{}`)",
            info.name
        );
        let via = crate::store::OptSource::new("provider_opt_out", Some(info.id), None);
        if let Err(e) = state
            .store
            .suppress(info.org_id, address, &reason, &via)
            .await
        {
            return internal(e);
        }
        outcomes.push("opt-out reported by the provider: suppressed".to_string());
    }
    for (message_id, wamid) in &proven {
        match state
            .store
            .resolve_in_doubt_sent(channel_id, *message_id, wamid, crate::clock::now_ms())
            .await
        {
            Ok(true) => outcomes.push(format!(
                "message {} was in doubt: the provider has it",
                *message_id
            )),
            // Still in flight (its send's answer may yet be lost): keep the proof.
            Ok(false) => match state
                .store
                .keep_proof(channel_id, *message_id, wamid, crate::clock::now_ms())
                .await
            {
                Ok(true) => outcomes.push(format!("proof kept for message {}", *message_id)),
                Ok(false) => {}
                Err(e) => return internal(e),
            },
            Err(e) => return internal(e),
        }
    }
    if !receipts.is_empty() {
        match state
            .store
            .apply_receipts(&receipts, crate::clock::now_ms())
            .await
        {
            Ok(r) => outcomes.push(format!(
                "receipts: {} applied, {} kept, {} ignored",
                r.applied, r.kept, r.ignored
            )),
            Err(e) => return internal(e),
        }
    }
    let outcome = if outcomes.is_empty() {
        "nothing to apply".to_string()
    } else {
        outcomes.join("; ")
    };
    let replies = match keep_inbound(&state, channel_id, kind, &outcome, &body, &reported).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    send_pending_answers(&state, &info, &reported, &replies);
    StatusCode::OK.into_response()
}

// ---------------------------------------------------------------------------------------
// Reading the bodies. Pure functions, public so the fuzz targets (src/fuzzing.rs) run the
// exact code the handlers run.
// ---------------------------------------------------------------------------------------

/// Decodes a Twilio form body, every pair as sent (repeated keys included: the signature
/// covers them all).
pub fn parse_twilio_form(
    body: &[u8],
) -> Result<Vec<(String, String)>, serde_urlencoded::de::Error> {
    serde_urlencoded::from_bytes(body)
}

/// What a (verified) Twilio status callback asks for.
#[derive(Debug)]
pub enum TwilioStatus<'a> {
    /// No `MessageSid`/`SmsSid` or no `MessageStatus`/`SmsStatus`.
    Incomplete,
    /// A status Herald does not track (e.g. `queued`): acknowledged, nothing changes.
    Unknown(&'a str),
    Receipt {
        receipt: Receipt,
        /// The recipient to suppress when the error code says they opted out.
        opted_out: Option<&'a str>,
    },
}

/// `channel_id` is the channel the webhook path names: the receipt speaks only for it.
pub fn read_twilio_status(channel_id: ChannelId, params: &[(String, String)]) -> TwilioStatus<'_> {
    let (Some(sid), Some(status)) = (
        param(params, "MessageSid").or(param(params, "SmsSid")),
        param(params, "MessageStatus").or(param(params, "SmsStatus")),
    ) else {
        return TwilioStatus::Incomplete;
    };
    let Some(mapped) = twilio_status(status) else {
        return TwilioStatus::Unknown(status);
    };
    let error_code = param(params, "ErrorCode");
    let code = error_code.and_then(|c| c.parse::<i64>().ok());
    let opted_out =
        if crate::channels::classify::classify_twilio(crate::channels::classify::NO_RESPONSE, code)
            == crate::channels::classify::ErrorClass::OptOut
        {
            param(params, "To").map(|to| to.trim_start_matches("whatsapp:"))
        } else {
            None
        };
    TwilioStatus::Receipt {
        receipt: Receipt {
            channel_id,
            provider_id: sid.to_string(),
            status: mapped,
            error: error_code.map(|c| format!("twilio {c}")),
        },
        opted_out,
    }
}

/// The sender of an inbound message as the suppression list keys it: normalised when it is
/// an address, as given (without `whatsapp:`) otherwise.
pub fn inbound_sender(from: &str) -> String {
    let address = from.trim_start_matches("whatsapp:");
    crate::address::Address::parse(address)
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|_| address.to_string())
}

/// What a (verified) WhatsApp Cloud API event asks for, collected before any await.
#[derive(Debug, Default)]
pub struct WhatsAppEvent {
    pub receipts: Vec<Receipt>,
    /// (Herald's message id from `biz_opaque_callback_data`, the provider's wamid).
    pub proven: Vec<(MessageId, String)>,
    /// Recipients the provider reports as opted out.
    pub opted_out: Vec<String>,
    /// (sender, text, the provider's message id) of inbound messages.
    pub inbound: Vec<(String, String, Option<String>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WhatsAppEventError {
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("a WhatsApp event needs an `entry` array")]
    NoEntry,
}

impl WhatsAppEventError {
    /// The outcome kept with the raw event.
    pub fn outcome(&self) -> &'static str {
        match self {
            WhatsAppEventError::NotJson(_) => "rejected: not JSON",
            WhatsAppEventError::NoEntry => "rejected: no entry array",
        }
    }
}

/// `channel_id` is the channel the webhook path names: its receipts speak only for it.
pub fn parse_whatsapp_event(
    channel_id: ChannelId,
    body: &[u8],
) -> Result<WhatsAppEvent, WhatsAppEventError> {
    let event: serde_json::Value =
        serde_json::from_slice(body).map_err(WhatsAppEventError::NotJson)?;
    let entries = event
        .get("entry")
        .and_then(|e| e.as_array())
        .ok_or(WhatsAppEventError::NoEntry)?;
    let mut parsed = WhatsAppEvent::default();
    let values: Vec<&serde_json::Value> = entries
        .iter()
        .filter_map(|e| e.get("changes").and_then(|c| c.as_array()))
        .flatten()
        .filter_map(|c| c.get("value"))
        .collect();
    for value in values {
        let statuses = value.get("statuses").and_then(|s| s.as_array());
        for st in statuses.map(|v| v.as_slice()).unwrap_or_default() {
            // A status without an id names no message: kept, it would wait forever as a
            // receipt for an id no send ever gets.
            let (Some(id), Some(status)) = (
                st.get("id")
                    .and_then(|v| v.as_str())
                    .filter(|id| !id.is_empty()),
                st.get("status").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            // Our message id comes back with every status: a message Herald found in doubt
            // (its instance died mid-send) is proven sent by it, and is not resent.
            if let Some(ours) = st
                .get("biz_opaque_callback_data")
                .and_then(|v| v.as_str())
                .and_then(|v| MessageId::parse_lenient(v).ok())
            {
                parsed.proven.push((ours, id.to_string()));
            }
            // Some opt-outs arrive only by webhook (131050 on a failed status).
            let code = st
                .get("errors")
                .and_then(|e| e.get(0))
                .and_then(|e| e.get("code"))
                .and_then(|c| c.as_i64());
            if crate::channels::classify::classify_whatsapp(
                crate::channels::classify::NO_RESPONSE,
                code,
                None,
            ) == crate::channels::classify::ErrorClass::OptOut
                && let Some(recipient) = st.get("recipient_id").and_then(|v| v.as_str())
            {
                parsed
                    .opted_out
                    .push(format!("+{}", recipient.trim_start_matches('+')));
            }
            if let Some(mapped) = whatsapp_status(status) {
                let error = st.get("errors").and_then(|e| e.get(0)).map(|e| {
                    format!(
                        "whatsapp {}: {}",
                        e.get("code").unwrap_or(&serde_json::Value::Null),
                        e.get("title").and_then(|t| t.as_str()).unwrap_or("")
                    )
                });
                parsed.receipts.push(Receipt {
                    channel_id,
                    provider_id: id.to_string(),
                    status: mapped,
                    error,
                });
            }
        }
        let messages = value.get("messages").and_then(|m| m.as_array());
        for msg in messages.map(|v| v.as_slice()).unwrap_or_default() {
            let from = msg.get("from").and_then(|v| v.as_str()).unwrap_or("");
            let text = msg
                .get("text")
                .and_then(|t| t.get("body"))
                .and_then(|b| b.as_str())
                .or_else(|| {
                    msg.get("button")
                        .and_then(|b| b.get("text"))
                        .and_then(|t| t.as_str())
                })
                .unwrap_or("");
            if !from.is_empty() {
                parsed.inbound.push((
                    format!("+{}", from.trim_start_matches('+')),
                    text.to_string(),
                    msg.get("id")
                        .and_then(|v| v.as_str())
                        .filter(|id| !id.is_empty())
                        .map(str::to_string),
                ));
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every webhook route a kind's descriptor declares is served, and only those: the
    /// dashboard shows the declared ones as the URLs to paste into providers' consoles.
    #[test]
    fn every_declared_route_is_served() {
        let path =
            |kind: ChannelKind, route: &WebhookRoute| kind.webhook_path(route, "{channel_id}");
        let served: Vec<String> = handlers()
            .iter()
            .map(|(kind, route, _)| path(*kind, route))
            .collect();
        let declared: Vec<String> = crate::channel_kind::ALL
            .iter()
            .flat_map(|kind| kind.webhooks().iter().map(|route| path(*kind, route)))
            .collect();
        assert_eq!(served, declared);
        assert_eq!(
            served,
            [
                "/webhooks/twilio/{channel_id}/status",
                "/webhooks/twilio/{channel_id}/inbound",
                "/webhooks/whatsapp/{channel_id}",
                "/webhooks/smtp/{channel_id}/ses",
                "/webhooks/smtp/{channel_id}/postmark",
                "/webhooks/smtp/{channel_id}/sendgrid"
            ]
        );
        // Mounting them panics on a malformed or repeated path.
        let _ = routes();
    }
}
