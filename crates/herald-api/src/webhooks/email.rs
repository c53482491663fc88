//! Email bounces, complaints and deliveries from the provider behind an SMTP channel
//! (docs/EMAIL.md): Amazon SES through an SNS topic (`/webhooks/smtp/{id}/ses`), Postmark
//! (`/postmark`) and SendGrid's signed Event Webhook (`/sendgrid`).
//!
//! Each is checked like every provider webhook (`inbound.rs`): admitted per source address
//! and channel first; then proven to come from the provider the channel names, by the SNS
//! signature on a certificate fetched only from Amazon's SNS hosts and the channel's own
//! topic, Postmark's basic-auth token, or SendGrid's ECDSA signature. A request that does
//! not prove it, a channel that is not an SMTP channel or that does not configure this
//! provider, and no channel at all get the same 403 and change nothing. A verified request
//! is kept as it arrived and its feedback applied (`Store::apply_email_feedback`): a hard
//! bounce marks the message undelivered and suppresses the address, a soft bounce is noted
//! on the message, a complaint suppresses, a delivery marks it delivered.

use super::inbound::{
    Peer, bad_path, channel_with_secrets, forbidden, internal, keep, malformed, over_rate,
    rejected, secret,
};
use crate::app_state::AppState;
use crate::channel_kind::{WebhookRoute, smtp};
use crate::channels::smtp::Config as SmtpConfig;
use crate::email_feedback::{self, EmailFeedback, FeedbackError, FeedbackKind, SnsEnvelope};
use crate::ids::ChannelId;
use crate::store::ChannelInfo;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The one answer for every unverified request (module docs).
const UNVERIFIED: &str = "the request does not prove it comes from the email provider this path's channel is configured for (SES topic and SNS signature, Postmark webhook token, or SendGrid signature); there may be no such channel";

/// Largest signing certificate read from Amazon SNS.
const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// How long a fetched certificate is reused.
const CERTIFICATE_TTL: Duration = Duration::from_secs(3600);
/// Certificates kept at most (SNS uses one per region at a time).
const MAX_CERTIFICATES: usize = 32;

/// Amazon SES notifications through Amazon SNS: subscription confirmations (confirmed by
/// fetching the SubscribeURL, for the channel's own topic only) and notifications.
pub async fn ses(
    State(state): State<AppState>,
    Path(path_id): Path<String>,
    peer: Peer,
    body: Bytes,
) -> Response {
    let (info, config, _) = match admitted(&state, &path_id, &peer, &body, &smtp::SES).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(topic) = config.ses_topic_arn.as_deref() else {
        return refuse("not_configured");
    };
    let (envelope, signed) = match email_feedback::parse_sns(&body) {
        Ok(v) => v,
        Err(e) => return refused_by(&e),
    };
    // Every SNS topic's messages carry a valid AWS signature: only the channel's own
    // topic speaks for it.
    if envelope.topic_arn() != topic {
        tracing::debug!(channel_id = %info.id, "SNS message from another topic refused");
        return refuse("other_topic");
    }
    let prefix = state.settings.sns_certificate_url_prefix.as_deref();
    if let Err(e) = email_feedback::check_sns_cert_url(&signed.signing_cert_url, prefix) {
        return refused_by(&e);
    }
    let certificate = match certificate(&state, &signed.signing_cert_url).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(channel_id = %info.id, error = %e, "SNS signing certificate unavailable");
            return unavailable(&e);
        }
    };
    if let Err(e) = email_feedback::verify_sns(&signed, &certificate) {
        return refused_by(&e);
    }
    let kind = smtp::SES.recorded_as;
    match envelope {
        SnsEnvelope::SubscriptionConfirmation { subscribe_url, .. } => {
            if let Err(e) = email_feedback::check_sns_subscribe_url(&subscribe_url, prefix) {
                return refused_by(&e);
            }
            match confirm_subscription(&state, &subscribe_url).await {
                Ok(()) => {
                    tracing::info!(channel_id = %info.id, "SNS subscription confirmed");
                    keep(&state, info.id, kind, "subscription confirmed", &body).await;
                    StatusCode::OK.into_response()
                }
                Err(e) => {
                    tracing::warn!(channel_id = %info.id, error = %e, "SNS subscription not confirmed");
                    unavailable(&e)
                }
            }
        }
        SnsEnvelope::UnsubscribeConfirmation { .. } => {
            tracing::info!(channel_id = %info.id, "SNS topic unsubscribed this endpoint");
            keep(&state, info.id, kind, "unsubscribed", &body).await;
            StatusCode::OK.into_response()
        }
        SnsEnvelope::Notification { message, .. } => {
            let parsed = email_feedback::parse_ses(&message);
            apply(&state, &info, "ses", kind, parsed, &body).await
        }
    }
}

/// Postmark's bounce, spam complaint and delivery webhooks, with basic auth.
pub async fn postmark(
    State(state): State<AppState>,
    Path(path_id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (info, config, secrets) =
        match admitted(&state, &path_id, &peer, &body, &smtp::POSTMARK).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let Some(token) = secret(&secrets, "postmark_webhook_token") else {
        return refuse("not_configured");
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = email_feedback::check_postmark_auth(authorization, token) {
        return refused_by(&e);
    }
    let kind = smtp::POSTMARK.recorded_as;
    let mut parsed = email_feedback::parse_postmark(&body);
    // Postmark returns the Message-ID's part before the `@` (the header the channel
    // adds): the domain is the channel's sender's.
    if let (Ok(feedback), Ok(from)) = (&mut parsed, config.mailbox()) {
        let domain = from.email.domain().to_string();
        for f in feedback {
            if let Some(id) = &f.message_id {
                f.message_id = Some(crate::channels::smtp::message_id_from_postmark(id, &domain));
            }
        }
    }
    apply(&state, &info, "postmark", kind, parsed, &body).await
}

/// SendGrid's signed Event Webhook.
pub async fn sendgrid(
    State(state): State<AppState>,
    Path(path_id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (info, config, _) = match admitted(&state, &path_id, &peer, &body, &smtp::SENDGRID).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(key) = config.sendgrid_verification_key.as_deref() else {
        return refuse("not_configured");
    };
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(signature), Some(timestamp)) = (
        header_text("x-twilio-email-event-webhook-signature"),
        header_text("x-twilio-email-event-webhook-timestamp"),
    ) else {
        return refuse("bad_signature");
    };
    if let Err(e) = email_feedback::verify_sendgrid(key, signature, timestamp, &body) {
        return refused_by(&e);
    }
    let kind = smtp::SENDGRID.recorded_as;
    let parsed = email_feedback::parse_sendgrid(&body);
    apply(&state, &info, "sendgrid", kind, parsed, &body).await
}

/// The checks before any provider's proof: the path names a channel id, the request is
/// within the rate and the size bound, and the channel exists, is an SMTP channel and its
/// settings open (no such channel is answered like a bad signature). `Err`: the answer.
async fn admitted(
    state: &AppState,
    path_id: &str,
    peer: &Peer,
    body: &Bytes,
    route: &WebhookRoute,
) -> Result<(ChannelInfo, SmtpConfig, serde_json::Value), Response> {
    let channel_id = ChannelId::parse_lenient(path_id).map_err(|e| bad_path(&e, smtp::KIND))?;
    if let Some(r) = over_rate(state, peer, channel_id, smtp::KIND) {
        return Err(r);
    }
    if body.len() > email_feedback::MAX_FEEDBACK_BODY {
        rejected(smtp::KIND, "too_large");
        return Err(crate::app_state::problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "webhook-too-large",
            "Webhook body too large",
            &format!(
                "{} bytes is more than the {} bytes an email provider's webhook may send to {}",
                body.len(),
                email_feedback::MAX_FEEDBACK_BODY,
                route.label
            ),
        ));
    }
    let Some((info, secrets)) = channel_with_secrets(state, channel_id, smtp::KIND).await? else {
        return Err(refuse("no_channel"));
    };
    match SmtpConfig::from_json(&info.config) {
        Ok(config) => Ok((info, config, secrets)),
        Err(e) => {
            tracing::error!(channel_id = %info.id, error = %e, "smtp channel settings do not read; its webhooks are refused");
            Err(refuse("no_channel"))
        }
    }
}

/// The 403 for an unverified request, counted under `reason`.
fn refuse(reason: &'static str) -> Response {
    rejected(smtp::KIND, reason);
    forbidden(UNVERIFIED)
}

/// 403 for a request that proves nothing, 400 for one too malformed to be checked.
fn refused_by(e: &FeedbackError) -> Response {
    match e {
        FeedbackError::Unverified(why) => {
            tracing::debug!(reason = %why, "email webhook refused");
            refuse("bad_signature")
        }
        FeedbackError::Malformed(why) => {
            rejected(smtp::KIND, "malformed");
            malformed(why)
        }
    }
}

/// 503: the provider retries (SNS does, with back-off).
fn unavailable(why: &str) -> Response {
    crate::app_state::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "webhook-unavailable",
        "The webhook could not be processed now",
        why,
    )
}

/// Applies a verified request's feedback, keeps the request with what it changed, and
/// counts it; a verified body that does not read is kept with why and answered 400.
async fn apply(
    state: &AppState,
    info: &ChannelInfo,
    provider: &'static str,
    kind: &str,
    parsed: Result<Vec<EmailFeedback>, FeedbackError>,
    body: &[u8],
) -> Response {
    let feedback = match parsed {
        Ok(feedback) => feedback,
        Err(e) => {
            keep(state, info.id, kind, &format!("rejected: {e}"), body).await;
            return malformed(&e.to_string());
        }
    };
    for f in &feedback {
        let label = match f.kind {
            FeedbackKind::Delivered => "delivered",
            FeedbackKind::HardBounce => "hard_bounce",
            FeedbackKind::SoftBounce => "soft_bounce",
            FeedbackKind::Complaint => "complaint",
            FeedbackKind::Dropped => "dropped",
        };
        metrics::counter!("herald_email_feedback_total", "provider" => provider, "kind" => label)
            .increment(1);
    }
    match state
        .store
        .apply_email_feedback(info.org_id, info.id, &feedback, crate::clock::now_ms())
        .await
    {
        Ok(report) => {
            tracing::debug!(channel_id = %info.id, provider, outcome = %report.outcome(), "email feedback");
            if report.suppressed > 0 {
                tracing::info!(channel_id = %info.id, provider, suppressed = report.suppressed, "addresses suppressed after bounces or complaints");
            }
            keep(state, info.id, kind, &report.outcome(), body).await;
            StatusCode::OK.into_response()
        }
        Err(e) => internal(e),
    }
}

/// Certificates by URL, each with when it was fetched.
type CertificateCache = Mutex<HashMap<String, (Vec<u8>, Instant)>>;

/// Signing certificates fetched lately, by URL.
fn certificates() -> &'static CertificateCache {
    static CACHE: OnceLock<CertificateCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The certificate at `url` (already checked to be on an SNS host), from the cache or
/// fetched through the outbound guard, at most [`MAX_CERTIFICATE_BYTES`].
async fn certificate(state: &AppState, url: &str) -> Result<Vec<u8>, String> {
    if let Ok(cache) = certificates().lock()
        && let Some((pem, at)) = cache.get(url)
        && at.elapsed() < CERTIFICATE_TTL
    {
        return Ok(pem.clone());
    }
    let pem = fetch(state, url).await?;
    if let Ok(mut cache) = certificates().lock() {
        cache.retain(|_, (_, at)| at.elapsed() < CERTIFICATE_TTL);
        if cache.len() >= MAX_CERTIFICATES {
            cache.clear();
        }
        cache.insert(url.to_string(), (pem.clone(), Instant::now()));
    }
    Ok(pem)
}

/// Confirms an SNS subscription: a GET of its SubscribeURL, answered 200 by Amazon.
async fn confirm_subscription(state: &AppState, url: &str) -> Result<(), String> {
    fetch(state, url).await.map(|_| ())
}

/// A bounded GET through the outbound guard.
async fn fetch(state: &AppState, url: &str) -> Result<Vec<u8>, String> {
    let client = state.context.outbound.http_client()?;
    let mut response = client
        .send(client.get(url))
        .await
        .map_err(|e| format!("GET {url}: {e:?}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", response.status()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        if bytes.len() + chunk.len() > MAX_CERTIFICATE_BYTES {
            return Err(format!(
                "GET {url}: more than {MAX_CERTIFICATE_BYTES} bytes"
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
