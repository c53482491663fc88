//! Email feedback webhooks: bounces, complaints and deliveries reported by Amazon SES (through
//! Amazon SNS), Postmark and SendGrid, read into one [`EmailFeedback`] form, and the checks
//! that a request really comes from the provider.
//!
//! Why this exists: a forged complaint or hard bounce would suppress a good address and a
//! forged delivery would hide a failure, so each handler authenticates the request here
//! before it reads it: SNS's RSA signature (with the certificate from an AWS URL), Postmark's
//! HTTP Basic password, SendGrid's ECDSA signature. Secret comparisons are constant time.
//! The functions are pure: no I/O and no clock. The handler fetches the SNS certificate,
//! checks that the SNS topic is the channel's own (any AWS account's topic signs validly) and
//! answers [`FeedbackError::Unverified`] with 403 and [`FeedbackError::Malformed`] with 400.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, UnparsedPublicKey,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm, alg_id,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::signatures::constant_time_eq;

// ---------------------------------------------------------------------------------------
// The normalised form
// ---------------------------------------------------------------------------------------

/// What a provider reported about one recipient of one email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedbackKind {
    /// Accepted by the recipient's server.
    Delivered,
    /// Permanent: the message is undelivered and the address is suppressed.
    HardBounce,
    /// Temporary (or a refusal of the sender, not of the address): recorded only.
    SoftBounce,
    /// Marked as spam: the address is suppressed.
    Complaint,
    /// The provider did not send it, for a reason that says nothing bad about the address:
    /// undelivered, not suppressed.
    Dropped,
}

impl FeedbackKind {
    /// The words that start [`EmailFeedback::detail`].
    fn label(self) -> &'static str {
        match self {
            FeedbackKind::Delivered => "delivered",
            FeedbackKind::HardBounce => "hard bounce",
            FeedbackKind::SoftBounce => "soft bounce",
            FeedbackKind::Complaint => "complaint",
            FeedbackKind::Dropped => "dropped",
        }
    }
}

/// One provider report about one recipient of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailFeedback {
    pub kind: FeedbackKind,
    /// The Message-ID header Herald gave the email, angle brackets included, e.g.
    /// `<herald.12.1.00ab@example.com>` (it is the message's provider id); `None` when the
    /// provider's payload does not carry a usable one (see [`MAX_MESSAGE_ID_LEN`]).
    pub message_id: Option<String>,
    /// The recipient's address as the provider gives it (trimmed; not lowercased).
    pub recipient: String,
    /// One readable line, e.g. `hard bounce: 550 5.1.1 user unknown (Amazon SES
    /// Permanent/General)`; at most [`MAX_DETAIL_CHARS`] characters.
    pub detail: String,
}

/// Bodies above this are refused by the handler, so parsers may assume it. A single SES or
/// Postmark notification is far smaller, but SendGrid batches events into POSTs that may
/// approach 768 KB, so this leaves room above that; SendGrid batches are also bounded by
/// count below.
pub const MAX_FEEDBACK_BODY: usize = 1024 * 1024;

/// [`EmailFeedback::detail`] is cut to this many characters: enough for any SMTP reply
/// line, small enough to store one per recipient.
pub const MAX_DETAIL_CHARS: usize = 500;

/// A Message-ID longer than this (angle brackets included) is read as `None`: RFC 5322
/// limits a header line to 998 characters, so Herald never sent one, and refusing the whole
/// notification for it would lose the rest of the report (a SendGrid batch is all or
/// nothing).
pub const MAX_MESSAGE_ID_LEN: usize = 998;

/// At most this many recipients in one list of an SES notification (`bouncedRecipients`,
/// `delivery.recipients`, …); more is Malformed. SES accepts at most 50 recipients per
/// message, so a real notification never comes near it.
pub const MAX_SES_RECIPIENTS: usize = 100;

/// At most this many events in one SendGrid body; more is Malformed. A real event (ids,
/// timestamp, address, Herald's id) is over 200 bytes, so a batch SendGrid sends (at most
/// about 768 KB) holds fewer than 4,000 of them: the limit only refuses bodies of
/// near-empty objects, never a batch SendGrid would send.
pub const MAX_SENDGRID_EVENTS: usize = 5000;

/// The name under which Herald's Message-ID comes back: Postmark's `Metadata` key (sent as
/// the `X-PM-Metadata-herald_id` header) and SendGrid's unique argument (sent in
/// `X-SMTPAPI`), which SendGrid returns as a top-level field of each event.
pub const HERALD_ID_FIELD: &str = "herald_id";

/// Why a webhook was refused. Each message names the input and, where there is one, the
/// fix; it is displayed as is, so it reads well after a prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// Not proven to come from the provider (signature, token or certificate URL): 403.
    #[error("{0}")]
    Unverified(String),
    /// Verified (or not yet verifiable) but unreadable: 400.
    #[error("{0}")]
    Malformed(String),
}

fn unverified(why: impl Into<String>) -> FeedbackError {
    FeedbackError::Unverified(why.into())
}

fn malformed(why: impl Into<String>) -> FeedbackError {
    FeedbackError::Malformed(why.into())
}

/// Input echoed in an error message: at most 80 characters, escaped, in backticks, so a
/// hostile value cannot flood or forge log lines.
fn quoted(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_debug).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    format!("`{out}`")
}

/// Herald's Message-ID as Herald sent it: trimmed and in angle brackets (providers sometimes
/// strip them). Anything Herald cannot have sent (empty, longer than
/// [`MAX_MESSAGE_ID_LEN`], spaces, control or non-ASCII characters, stray brackets) is `None`.
fn normalise_message_id(raw: &str) -> Option<String> {
    let t = raw.trim();
    let inner = t.strip_prefix('<').unwrap_or(t);
    let inner = inner.strip_suffix('>').unwrap_or(inner);
    let printable = inner
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    if inner.is_empty() || inner.len() + 2 > MAX_MESSAGE_ID_LEN || !printable {
        return None;
    }
    Some(format!("<{inner}>"))
}

/// Control characters and runs of white space become one space: a provider's reason may be
/// a multi-line SMTP reply, and the detail is one line.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// At most `max` characters, the last one `…` when cut.
fn cut_chars(s: &str, max: usize) -> String {
    if s.chars().nth(max).is_none() {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `"{label}: {reason} ({source})"`, or without the reason when there is none. The reason is
/// what gets cut, so the source stays readable.
fn detail(kind: FeedbackKind, reason: &str, source: &str) -> String {
    let label = kind.label();
    let source = cut_chars(&one_line(source), 100);
    let reason = one_line(reason);
    if reason.is_empty() {
        return cut_chars(&format!("{label} ({source})"), MAX_DETAIL_CHARS);
    }
    let fixed = label.chars().count() + source.chars().count() + ": ".len() + " ()".len();
    let reason = cut_chars(&reason, MAX_DETAIL_CHARS.saturating_sub(fixed));
    cut_chars(&format!("{label}: {reason} ({source})"), MAX_DETAIL_CHARS)
}

/// A string field, or a number written as text (providers are loose about `status`).
fn text<'a>(v: &'a Value, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    match v.get(key)? {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        _ => None,
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// The recipient in `v[key]`: a non-empty string, trimmed.
fn recipient(v: &Value, key: &str, context: &str) -> Result<String, FeedbackError> {
    match v.get(key).and_then(Value::as_str).map(str::trim) {
        Some(r) if !r.is_empty() => Ok(r.to_owned()),
        _ => Err(malformed(format!(
            "{context} has no recipient address in `{key}`"
        ))),
    }
}

fn json_object<'a>(json: &'a Value, what: &str) -> Result<&'a Map<String, Value>, FeedbackError> {
    json.as_object()
        .ok_or_else(|| malformed(format!("the {what} is not a JSON object")))
}

// ---------------------------------------------------------------------------------------
// Amazon SNS (carrying Amazon SES notifications)
// ---------------------------------------------------------------------------------------

/// What an SNS request says, once [`verify_sns`] has accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnsEnvelope {
    /// A new subscription: the handler confirms it by fetching `subscribe_url` (only for
    /// the channel's own topic).
    SubscriptionConfirmation {
        topic_arn: String,
        subscribe_url: String,
    },
    /// A notification; `message` is the inner JSON text, for [`parse_ses`].
    Notification {
        topic_arn: String,
        message: String,
    },
    UnsubscribeConfirmation {
        topic_arn: String,
    },
}

impl SnsEnvelope {
    /// The topic, which the handler compares with the channel's configured one.
    pub fn topic_arn(&self) -> &str {
        match self {
            SnsEnvelope::SubscriptionConfirmation { topic_arn, .. }
            | SnsEnvelope::Notification { topic_arn, .. }
            | SnsEnvelope::UnsubscribeConfirmation { topic_arn } => topic_arn,
        }
    }
}

/// What the signature covers and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsSigned {
    /// Where the signing certificate is: check it with [`check_sns_cert_url`] before
    /// fetching it ([`parse_sns`] does not).
    pub signing_cert_url: String,
    /// `Key\nValue\n` for each signed field, in SNS's order.
    pub string_to_sign: String,
    /// The decoded `Signature`.
    pub signature: Vec<u8>,
    /// `SignatureVersion`: 1 = SHA1withRSA, 2 = SHA256withRSA.
    pub version: u8,
}

/// The fields SNS signs, in the order it signs them (the same for both signature versions).
const SNS_NOTIFICATION_KEYS: &[&str] = &[
    "Message",
    "MessageId",
    "Subject",
    "Timestamp",
    "TopicArn",
    "Type",
];
const SNS_CONFIRMATION_KEYS: &[&str] = &[
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
];

/// Reads an SNS HTTP(S) request body: the envelope and what its signature covers. Nothing is
/// verified yet: call [`check_sns_cert_url`], fetch the certificate, then [`verify_sns`].
/// A body that is not an SNS message is Malformed; a missing or unusable signature,
/// signature version or certificate URL is Unverified.
pub fn parse_sns(body: &[u8]) -> Result<(SnsEnvelope, SnsSigned), FeedbackError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("the Amazon SNS body is not JSON ({e})")))?;
    let obj = json_object(&json, "Amazon SNS body")?;
    let get = |key: &str| -> Result<&str, FeedbackError> {
        obj.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(format!("the Amazon SNS message has no string `{key}`")))
    };
    let kind = str_field(&json, "Type").ok_or_else(|| {
        malformed(
            "the body is no Amazon SNS message (no `Type`): if the subscription uses raw \
             message delivery, turn it off",
        )
    })?;
    let keys = match kind {
        "Notification" => SNS_NOTIFICATION_KEYS,
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => SNS_CONFIRMATION_KEYS,
        other => {
            return Err(malformed(format!(
                "unknown Amazon SNS message Type {} (expected Notification, \
                 SubscriptionConfirmation or UnsubscribeConfirmation)",
                quoted(other)
            )));
        }
    };
    let mut string_to_sign = String::new();
    for &key in keys {
        // Subject is signed only when the message has one.
        if key == "Subject" && obj.get(key).is_none_or(Value::is_null) {
            continue;
        }
        string_to_sign.push_str(key);
        string_to_sign.push('\n');
        string_to_sign.push_str(get(key)?);
        string_to_sign.push('\n');
    }

    let version = match obj.get("SignatureVersion").and_then(Value::as_str) {
        Some("1") => 1,
        Some("2") => 2,
        Some(other) => {
            return Err(unverified(format!(
                "SignatureVersion {} is not supported: Amazon SNS signs with \"1\" \
                 (SHA1withRSA) or \"2\" (SHA256withRSA)",
                quoted(other)
            )));
        }
        None => {
            return Err(unverified(
                "the Amazon SNS message has no string `SignatureVersion`",
            ));
        }
    };
    let signature = obj
        .get("Signature")
        .and_then(Value::as_str)
        .ok_or_else(|| unverified("the Amazon SNS message has no string `Signature`"))?;
    let signature = STANDARD
        .decode(signature.trim())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unverified("the Amazon SNS `Signature` is not Base64"))?;
    // HTTP endpoints get `SigningCertURL`; Lambda's copy of the message spells it `…Url`.
    let signing_cert_url = obj
        .get("SigningCertURL")
        .or_else(|| obj.get("SigningCertUrl"))
        .and_then(Value::as_str)
        .ok_or_else(|| unverified("the Amazon SNS message has no string `SigningCertURL`"))?
        .to_owned();

    let topic_arn = get("TopicArn")?.to_owned();
    let envelope = match kind {
        "Notification" => SnsEnvelope::Notification {
            topic_arn,
            message: get("Message")?.to_owned(),
        },
        "SubscriptionConfirmation" => SnsEnvelope::SubscriptionConfirmation {
            topic_arn,
            subscribe_url: get("SubscribeURL")?.to_owned(),
        },
        _ => SnsEnvelope::UnsubscribeConfirmation { topic_arn },
    };
    Ok((
        envelope,
        SnsSigned {
            signing_cert_url,
            string_to_sign,
            signature,
            version,
        },
    ))
}

/// Whether the handler may fetch the signing certificate from `url`: only
/// `https://sns.<region>.amazonaws.com[.cn]/….pem` with no user, port, query or fragment,
/// because whoever serves the certificate decides what verifies. `test_prefix` (a channel
/// setting for tests against a local double, e.g. `http://127.0.0.1:4010/`) also allows URLs
/// starting with it; it must end with `/` so that it fixes the host and port.
pub fn check_sns_cert_url(url: &str, test_prefix: Option<&str>) -> Result<(), FeedbackError> {
    if let Some(prefix) = test_prefix.filter(|p| !p.is_empty()) {
        if !prefix.ends_with('/') {
            return Err(unverified(format!(
                "the test certificate URL prefix {} must end with `/`, so that it fixes the \
                 host and port",
                quoted(prefix)
            )));
        }
        if url.starts_with(prefix) {
            return Ok(());
        }
    }
    let refuse = |why: &str| {
        unverified(format!(
            "SigningCertURL {} {why}: Amazon SNS certificates come from \
             https://sns.<region>.amazonaws.com/<name>.pem",
            quoted(url)
        ))
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(refuse("is not https"));
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.contains('@') {
        return Err(refuse("has a user name"));
    }
    if host.contains(':') {
        return Err(refuse("has a port"));
    }
    if !is_sns_host(host) {
        return Err(refuse("is not on an Amazon SNS host"));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) || path.contains(['?', '#', '\\']) {
        return Err(refuse("has a query, fragment or unexpected characters"));
    }
    if !path.ends_with(".pem") {
        return Err(refuse("does not name a .pem file"));
    }
    Ok(())
}

/// Whether the handler may confirm a subscription by fetching `url`: an https URL on an
/// Amazon SNS host (or under `test_prefix`, as for [`check_sns_cert_url`]), with no user
/// or port. Fetching anything else on a webhook's say-so would let anyone aim Herald's
/// requests.
pub fn check_sns_subscribe_url(url: &str, test_prefix: Option<&str>) -> Result<(), FeedbackError> {
    if let Some(prefix) = test_prefix.filter(|p| !p.is_empty() && p.ends_with('/'))
        && url.starts_with(prefix)
    {
        return Ok(());
    }
    let refuse = |why: &str| {
        unverified(format!(
            "SubscribeURL {} {why}: Amazon SNS confirmations are on https://sns.<region>.amazonaws.com/",
            quoted(url)
        ))
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(refuse("is not https"));
    };
    let host = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if host.contains('@') || host.contains(':') {
        return Err(refuse("has a user name or a port"));
    }
    if !is_sns_host(host) {
        return Err(refuse("is not on an Amazon SNS host"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) || url.contains(['#', '\\']) {
        return Err(refuse("has unexpected characters"));
    }
    Ok(())
}

/// `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`, the region being
/// lowercase letters, digits and hyphens (so no extra labels can hide in it).
fn is_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// RSA PKCS#1 v1.5 with SHA-1, for `SignatureVersion` 1, which SNS still uses by default.
/// webpki offers no SHA-1 algorithm (it refuses SHA-1 in certificate chains), so this
/// wraps ring's legacy verifier; it is used for SNS message signatures only.
#[derive(Debug)]
struct RsaPkcs1Sha1;

/// `sha1WithRSAEncryption` (1.2.840.113549.1.1.5) with NULL parameters, DER without the
/// outer SEQUENCE, as `alg_id` writes the others.
const RSA_PKCS1_SHA1_ALG_ID: AlgorithmIdentifier = AlgorithmIdentifier::from_slice(&[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
]);

impl SignatureVerificationAlgorithm for RsaPkcs1Sha1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        RSA_PKCS1_SHA1_ALG_ID
    }
}

/// Checks the SNS signature with the public key of the certificate in `cert_pem` (the first
/// CERTIFICATE block), fetched from a URL that [`check_sns_cert_url`] accepted. The trust
/// comes from that URL (TLS to an AWS host), not from the certificate's chain or dates.
pub fn verify_sns(signed: &SnsSigned, cert_pem: &[u8]) -> Result<(), FeedbackError> {
    let der = CertificateDer::from_pem_slice(cert_pem).map_err(|e| {
        unverified(format!(
            "the Amazon SNS signing certificate is not a PEM CERTIFICATE ({e})"
        ))
    })?;
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| {
        unverified(format!(
            "the Amazon SNS signing certificate is not a readable X.509 certificate ({e})"
        ))
    })?;
    let algorithm: &dyn SignatureVerificationAlgorithm = match signed.version {
        1 => &RsaPkcs1Sha1,
        2 => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        other => {
            return Err(unverified(format!(
                "SignatureVersion {other} is not supported: Amazon SNS signs with 1 or 2"
            )));
        }
    };
    cert.verify_signature(
        algorithm,
        signed.string_to_sign.as_bytes(),
        &signed.signature,
    )
    .map_err(|_| {
        unverified(
            "the Amazon SNS signature does not match the message and the certificate at \
             SigningCertURL",
        )
    })
}

// ---------------------------------------------------------------------------------------
// Amazon SES (the SNS Message)
// ---------------------------------------------------------------------------------------

/// Reads an SES notification (the SNS `Message`): the feedback form (`notificationType`
/// Bounce, Complaint, Delivery) and the event publishing form (`eventType`, also Reject and
/// DeliveryDelay). Other types (Send, Open, Click, Rendering Failure, Subscription, SES's
/// subscription test) give no feedback. One [`EmailFeedback`] per recipient.
pub fn parse_ses(message: &str) -> Result<Vec<EmailFeedback>, FeedbackError> {
    let json: Value = serde_json::from_str(message)
        .map_err(|e| malformed(format!("the Amazon SES notification is not JSON ({e})")))?;
    json_object(&json, "Amazon SES notification")?;
    let kind = str_field(&json, "notificationType")
        .or_else(|| str_field(&json, "eventType"))
        .ok_or_else(|| {
            malformed(
                "the Amazon SES notification has neither `notificationType` nor `eventType`: \
                 is the SNS topic carrying SES notifications?",
            )
        })?;
    let mail = json.get("mail").unwrap_or(&Value::Null);
    let message_id = ses_message_id(mail);
    let feedback =
        |kind: FeedbackKind, recipient: String, reason: &str, source: &str| EmailFeedback {
            kind,
            message_id: message_id.clone(),
            recipient,
            detail: detail(kind, reason, source),
        };
    let mut out = Vec::new();
    match kind {
        "Bounce" => {
            let bounce = ses_part(&json, "bounce")?;
            let bounce_type = str_field(bounce, "bounceType")
                .ok_or_else(|| malformed("the Amazon SES bounce has no `bounceType`"))?;
            // Undetermined (SES could not tell) is recorded, not acted on, like Transient.
            let kind = if bounce_type == "Permanent" {
                FeedbackKind::HardBounce
            } else {
                FeedbackKind::SoftBounce
            };
            let source = match str_field(bounce, "bounceSubType") {
                Some(sub) => format!("Amazon SES {bounce_type}/{sub}"),
                None => format!("Amazon SES {bounce_type}"),
            };
            for r in ses_list(bounce, "bounce", "bouncedRecipients")? {
                let address = recipient(r, "emailAddress", "an Amazon SES bounced recipient")?;
                out.push(feedback(kind, address, &ses_reason(r), &source));
            }
        }
        "Complaint" => {
            let complaint = ses_part(&json, "complaint")?;
            let feedback_type = str_field(complaint, "complaintFeedbackType");
            // ARF's `not-spam` corrects an earlier report: the recipient is not complaining.
            if feedback_type.is_some_and(|t| t.eq_ignore_ascii_case("not-spam")) {
                return Ok(out);
            }
            let reason = feedback_type
                .or_else(|| str_field(complaint, "complaintSubType"))
                .unwrap_or("");
            for r in ses_list(complaint, "complaint", "complainedRecipients")? {
                let address = recipient(r, "emailAddress", "an Amazon SES complained recipient")?;
                out.push(feedback(
                    FeedbackKind::Complaint,
                    address,
                    reason,
                    "Amazon SES",
                ));
            }
        }
        "Delivery" => {
            let delivery = ses_part(&json, "delivery")?;
            let reason = str_field(delivery, "smtpResponse").unwrap_or("");
            for r in ses_list(delivery, "delivery", "recipients")? {
                let address = ses_plain_recipient(r, "delivery.recipients")?;
                out.push(feedback(
                    FeedbackKind::Delivered,
                    address,
                    reason,
                    "Amazon SES",
                ));
            }
        }
        "Reject" => {
            // SES refused to send it (a virus in the message): nothing about the addresses.
            let reason = json
                .get("reject")
                .and_then(|r| str_field(r, "reason"))
                .unwrap_or("");
            for r in ses_list(mail, "mail", "destination")? {
                let address = ses_plain_recipient(r, "mail.destination")?;
                out.push(feedback(
                    FeedbackKind::Dropped,
                    address,
                    reason,
                    "Amazon SES Reject",
                ));
            }
        }
        "DeliveryDelay" => {
            let delay = ses_part(&json, "deliveryDelay")?;
            let source = match str_field(delay, "delayType") {
                Some(t) => format!("Amazon SES DeliveryDelay/{t}"),
                None => "Amazon SES DeliveryDelay".to_owned(),
            };
            for r in ses_list(delay, "deliveryDelay", "delayedRecipients")? {
                let address = recipient(r, "emailAddress", "an Amazon SES delayed recipient")?;
                out.push(feedback(
                    FeedbackKind::SoftBounce,
                    address,
                    &ses_reason(r),
                    &source,
                ));
            }
        }
        _ => {}
    }
    Ok(out)
}

/// `mail.commonHeaders.messageId` (the original Message-ID), else the `Message-ID` entry of
/// `mail.headers` (present when the identity includes original headers).
fn ses_message_id(mail: &Value) -> Option<String> {
    let common = mail
        .get("commonHeaders")
        .and_then(|h| str_field(h, "messageId"))
        .and_then(normalise_message_id);
    common.or_else(|| {
        mail.get("headers")?
            .as_array()?
            .iter()
            .filter(|h| {
                str_field(h, "name").is_some_and(|n| n.trim().eq_ignore_ascii_case("Message-ID"))
            })
            .find_map(|h| str_field(h, "value").and_then(normalise_message_id))
    })
}

fn ses_part<'a>(json: &'a Value, key: &str) -> Result<&'a Value, FeedbackError> {
    json.get(key)
        .filter(|v| v.is_object())
        .ok_or_else(|| malformed(format!("the Amazon SES notification has no `{key}` object")))
}

/// `part[key]`, an array of at most [`MAX_SES_RECIPIENTS`].
fn ses_list<'a>(part: &'a Value, name: &str, key: &str) -> Result<&'a [Value], FeedbackError> {
    let list = part.get(key).and_then(Value::as_array).ok_or_else(|| {
        malformed(format!(
            "the Amazon SES notification has no `{name}.{key}` array"
        ))
    })?;
    if list.len() > MAX_SES_RECIPIENTS {
        return Err(malformed(format!(
            "the Amazon SES notification lists {} recipients in `{name}.{key}`, more than \
             the limit of {MAX_SES_RECIPIENTS}",
            list.len()
        )));
    }
    Ok(list)
}

fn ses_plain_recipient(v: &Value, list: &str) -> Result<String, FeedbackError> {
    match v.as_str().map(str::trim) {
        Some(r) if !r.is_empty() => Ok(r.to_owned()),
        _ => Err(malformed(format!(
            "an entry of the Amazon SES `{list}` is not an address"
        ))),
    }
}

/// The remote server's words: `diagnosticCode` without its type, else `status`.
fn ses_reason(r: &Value) -> String {
    match str_field(r, "diagnosticCode").map(without_diagnostic_type) {
        Some(code) if !code.is_empty() => code.to_owned(),
        _ => text(r, "status")
            .map(|s| s.into_owned())
            .unwrap_or_default(),
    }
}

/// A DSN Diagnostic-Code without its diagnostic-type (RFC 3464: `SMTP; 550 5.1.1 …`, any
/// case), which says nothing to a reader.
fn without_diagnostic_type(code: &str) -> &str {
    let code = code.trim();
    match code.split_once(';') {
        Some((kind, rest)) if kind.trim().eq_ignore_ascii_case("SMTP") => rest.trim(),
        _ => code,
    }
}

// ---------------------------------------------------------------------------------------
// Postmark
// ---------------------------------------------------------------------------------------

/// Checks Postmark's webhook request: the webhook URL is set in Postmark as
/// `https://<any user>:<token>@host/…`, so Postmark sends HTTP Basic auth whose password must
/// equal the channel's token. The comparison is of SHA-256 digests in constant time, which
/// hides the token's length too.
pub fn check_postmark_auth(authorization: Option<&str>, token: &str) -> Result<(), FeedbackError> {
    let how = "set the webhook URL in Postmark as https://herald:<token>@<host>/<path>";
    if token.is_empty() {
        return Err(unverified(
            "this channel has no Postmark webhook token: set one, then give it in the \
             webhook URL's password",
        ));
    }
    let header = authorization
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| unverified(format!("no Authorization header: {how}")))?;
    let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("Basic") {
        return Err(unverified(format!(
            "the Authorization scheme is {}, not Basic: {how}",
            quoted(scheme)
        )));
    }
    let decoded = STANDARD
        .decode(credentials.trim())
        .map_err(|_| unverified(format!("the Basic credentials are not Base64: {how}")))?;
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Err(unverified(format!(
            "the Basic credentials are not `user:password`: {how}"
        )));
    };
    let password = decoded.get(colon + 1..).unwrap_or_default();
    if constant_time_eq(&Sha256::digest(password), &Sha256::digest(token.as_bytes())) {
        Ok(())
    } else {
        Err(unverified(format!(
            "the Basic auth password is not this channel's webhook token: {how}"
        )))
    }
}

/// Reads one Postmark webhook (one JSON object): RecordType Bounce, SpamComplaint and
/// Delivery give feedback; Open, Click, SubscriptionChange and others give none.
pub fn parse_postmark(body: &[u8]) -> Result<Vec<EmailFeedback>, FeedbackError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("the Postmark webhook is not JSON ({e})")))?;
    json_object(&json, "Postmark webhook")?;
    let record = str_field(&json, "RecordType")
        .ok_or_else(|| malformed("the Postmark webhook has no `RecordType`"))?;
    let message_id = json
        .get("Metadata")
        .and_then(|m| str_field(m, HERALD_ID_FIELD))
        .and_then(normalise_message_id);
    let reason = || {
        [str_field(&json, "Details"), str_field(&json, "Description")]
            .into_iter()
            .flatten()
            .map(without_diagnostic_type)
            .find(|s| !s.is_empty())
            .unwrap_or("")
    };
    let (kind, address, source) = match record {
        "Bounce" => {
            let bounce_type = str_field(&json, "Type")
                .ok_or_else(|| malformed("the Postmark bounce has no `Type`"))?;
            let Some(kind) = postmark_bounce_kind(bounce_type) else {
                return Ok(Vec::new());
            };
            (
                kind,
                recipient(&json, "Email", "the Postmark bounce")?,
                format!("Postmark {bounce_type}"),
            )
        }
        "SpamComplaint" => (
            FeedbackKind::Complaint,
            recipient(&json, "Email", "the Postmark spam complaint")?,
            "Postmark SpamComplaint".to_owned(),
        ),
        "Delivery" => (
            FeedbackKind::Delivered,
            recipient(&json, "Recipient", "the Postmark delivery")?,
            "Postmark".to_owned(),
        ),
        _ => return Ok(Vec::new()),
    };
    Ok(vec![EmailFeedback {
        kind,
        message_id,
        recipient: address,
        detail: detail(kind, reason(), &source),
    }])
}

/// Postmark's bounce `Type`s. Only what says the address is bad suppresses it; refusals of
/// the sender or the content (Blocked, SpamNotification, VirusNotification, DMARCPolicy)
/// are recorded as soft, since Postmark itself keeps sending to those addresses; replies
/// that are not bounces (AutoResponder, Subscribe, …) give nothing. A type Postmark adds
/// later is recorded as soft: never suppress on a guess.
fn postmark_bounce_kind(bounce_type: &str) -> Option<FeedbackKind> {
    match bounce_type {
        "HardBounce" | "BadEmailAddress" | "ManuallyDeactivated" => Some(FeedbackKind::HardBounce),
        "SpamComplaint" => Some(FeedbackKind::Complaint),
        // Postmark did not send it: the request or the template failed.
        "SMTPApiError" | "TemplateRenderingFailed" => Some(FeedbackKind::Dropped),
        "AutoResponder"
        | "Subscribe"
        | "Unsubscribe"
        | "AddressChange"
        | "OpenRelayTest"
        | "ChallengeVerification"
        | "Unconfirmed"
        | "InboundError" => None,
        // SoftBounce, Transient, DnsError, Unknown, Blocked, SpamNotification,
        // VirusNotification, DMARCPolicy and anything new.
        _ => Some(FeedbackKind::SoftBounce),
    }
}

// ---------------------------------------------------------------------------------------
// SendGrid Event Webhook
// ---------------------------------------------------------------------------------------

/// The DER SubjectPublicKeyInfo of every P-256 key in uncompressed form starts with these 26
/// bytes, then the 65-byte point (`04 || X || Y`): DER has one encoding per value, and for
/// this curve every length is fixed — SEQUENCE (89 bytes) { SEQUENCE { OID id-ecPublicKey,
/// OID prime256v1 }, BIT STRING (66 bytes, 0 unused bits) }. So comparing the prefix and the
/// length is an exact parse. (The compressed form, 59 bytes in all, is not what SendGrid
/// shows and is refused.)
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const P256_SPKI_LEN: usize = P256_SPKI_PREFIX.len() + 65;

/// The uncompressed point of SendGrid's verification key, or what is wrong with the key.
/// Accepts the Base64 as SendGrid shows it, with or without line breaks or PEM armour.
fn sendgrid_point(public_key_base64: &str) -> Result<Vec<u8>, String> {
    let where_ = "copy the Verification Key from SendGrid's Settings > Mail Settings > \
                  Event Webhook > Signature Verification";
    let compact: String = public_key_base64
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(str::chars)
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(format!("the SendGrid verification key is empty: {where_}"));
    }
    let der = STANDARD
        .decode(&compact)
        .map_err(|_| format!("the SendGrid verification key is not Base64: {where_}"))?;
    match der.get(P256_SPKI_PREFIX.len()..) {
        Some(point) if der.len() == P256_SPKI_LEN && der.starts_with(&P256_SPKI_PREFIX) => {
            if point.first() == Some(&0x04) {
                Ok(point.to_vec())
            } else {
                Err(format!(
                    "the SendGrid verification key's point is not in uncompressed form: \
                     {where_}"
                ))
            }
        }
        _ => Err(format!(
            "the SendGrid verification key is not an ECDSA P-256 public key (a {}-byte \
             SubjectPublicKeyInfo starting MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE; this one \
             decodes to {} bytes): {where_}",
            P256_SPKI_LEN,
            der.len()
        )),
    }
}

/// Says whether `public_key_base64` is usable as SendGrid's verification key (a Base64 DER
/// SubjectPublicKeyInfo of a P-256 key), for when the channel is configured.
pub fn check_sendgrid_key(public_key_base64: &str) -> Result<(), FeedbackError> {
    sendgrid_point(public_key_base64)
        .map(|_| ())
        .map_err(FeedbackError::Malformed)
}

/// Checks SendGrid's Signed Event Webhook: `signature_base64`
/// (`X-Twilio-Email-Event-Webhook-Signature`, Base64 of a DER ECDSA signature) must be a
/// P-256 SHA-256 signature of `timestamp` (`X-Twilio-Email-Event-Webhook-Timestamp`, as
/// received) followed by the raw body. A bad key is Unverified here too.
pub fn verify_sendgrid(
    public_key_base64: &str,
    signature_base64: &str,
    timestamp: &str,
    body: &[u8],
) -> Result<(), FeedbackError> {
    let point = sendgrid_point(public_key_base64).map_err(FeedbackError::Unverified)?;
    if timestamp.is_empty() {
        return Err(unverified(
            "no X-Twilio-Email-Event-Webhook-Timestamp header: turn on Signed Event Webhook \
             Requests in SendGrid",
        ));
    }
    let signature = STANDARD
        .decode(signature_base64.trim())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            unverified(
                "X-Twilio-Email-Event-Webhook-Signature is missing or not Base64: turn on \
                 Signed Event Webhook Requests in SendGrid",
            )
        })?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point)
        .verify(&signed, &signature)
        .map_err(|_| {
            unverified(
                "the SendGrid signature does not match the timestamp and body for this \
                 channel's verification key",
            )
        })
}

/// SendGrid bounce classifications that blame the sender or its content, not the address.
const SENDGRID_SENDER_SIDE: &[&str] = &[
    "Technical Failure",
    "Reputation",
    "Content",
    "Frequency or Volume Too High",
];

/// Reads a SendGrid Event Webhook body (a JSON array of events, at most
/// [`MAX_SENDGRID_EVENTS`]): delivered, bounce, deferred, dropped and spamreport give
/// feedback; processed, open, click, unsubscribe, group_* and unknown events give none.
pub fn parse_sendgrid(body: &[u8]) -> Result<Vec<EmailFeedback>, FeedbackError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("the SendGrid webhook is not JSON ({e})")))?;
    let events = json
        .as_array()
        .ok_or_else(|| malformed("the SendGrid webhook is not a JSON array of events"))?;
    if events.len() > MAX_SENDGRID_EVENTS {
        return Err(malformed(format!(
            "the SendGrid webhook has {} events, more than the limit of {MAX_SENDGRID_EVENTS}",
            events.len()
        )));
    }
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if !event.is_object() {
            return Err(malformed(format!(
                "SendGrid event {i} is not a JSON object"
            )));
        }
        let name = str_field(event, "event")
            .ok_or_else(|| malformed(format!("SendGrid event {i} has no `event`")))?;
        let field = |key: &str| text(event, key).map(|s| one_line(&s)).unwrap_or_default();
        let (kind, reason, source) = match name {
            "delivered" => (
                FeedbackKind::Delivered,
                field("response"),
                "SendGrid".to_owned(),
            ),
            "bounce" => {
                let bounce_type = str_field(event, "type").unwrap_or("bounce");
                let class = str_field(event, "bounce_classification");
                let sender_side = class.is_some_and(|c| {
                    SENDGRID_SENDER_SIDE
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(c.trim()))
                });
                let kind = if bounce_type.eq_ignore_ascii_case("blocked") || sender_side {
                    FeedbackKind::SoftBounce
                } else {
                    FeedbackKind::HardBounce
                };
                let reason = [field("status"), field("reason")]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                let source = match class {
                    Some(c) => format!("SendGrid {bounce_type}, {c}"),
                    None => format!("SendGrid {bounce_type}"),
                };
                (kind, reason, source)
            }
            "deferred" => {
                let source = match text(event, "attempt") {
                    Some(n) => format!("SendGrid deferred, attempt {n}"),
                    None => "SendGrid deferred".to_owned(),
                };
                (FeedbackKind::SoftBounce, field("response"), source)
            }
            "dropped" => {
                let reason = field("reason");
                let kind = match reason.to_ascii_lowercase().as_str() {
                    // On SendGrid's bounce or invalid list: the address is bad.
                    "bounced address" | "invalid" => FeedbackKind::HardBounce,
                    "spam reporting address" => FeedbackKind::Complaint,
                    // Unsubscribed Address, Spam Content, Invalid SMTPAPI header, …
                    _ => FeedbackKind::Dropped,
                };
                (kind, reason, "SendGrid dropped".to_owned())
            }
            "spamreport" => (
                FeedbackKind::Complaint,
                String::new(),
                "SendGrid spamreport".to_owned(),
            ),
            _ => continue,
        };
        let address = recipient(event, "email", &format!("SendGrid event {i} ({name})"))?;
        let message_id = str_field(event, HERALD_ID_FIELD)
            .and_then(normalise_message_id)
            .or_else(|| str_field(event, "smtp-id").and_then(normalise_message_id));
        out.push(EmailFeedback {
            kind,
            message_id,
            recipient: address,
            detail: detail(kind, &reason, &source),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
        RSA_PKCS1_SHA256, RsaKeyPair,
    };
    use serde_json::json;

    // ------------------------------------------------------------------ general helpers

    #[test]
    fn message_ids_are_normalised() {
        let n = normalise_message_id;
        assert_eq!(
            n("<herald.12.1.00ab@example.com>").as_deref(),
            Some("<herald.12.1.00ab@example.com>")
        );
        assert_eq!(
            n("  herald.12.1.00ab@example.com \n").as_deref(),
            Some("<herald.12.1.00ab@example.com>")
        );
        assert_eq!(n("<abc@x").as_deref(), Some("<abc@x>"));
        assert_eq!(n(""), None);
        assert_eq!(n("<>"), None);
        assert_eq!(n("<a b@x>"), None, "white space inside");
        assert_eq!(n("<a<b@x>"), None, "stray bracket");
        assert_eq!(n("<é@x>"), None, "non-ASCII");
        let longest = format!("<{}@x>", "a".repeat(MAX_MESSAGE_ID_LEN - 4));
        assert_eq!(longest.len(), MAX_MESSAGE_ID_LEN);
        assert_eq!(n(&longest).as_deref(), Some(longest.as_str()));
        assert_eq!(
            n(&format!("<{}@x>", "a".repeat(MAX_MESSAGE_ID_LEN - 3))),
            None
        );
    }

    #[test]
    fn detail_is_one_bounded_line_that_keeps_its_source() {
        let d = detail(
            FeedbackKind::HardBounce,
            "550 5.1.1\r\n  user\tunknown",
            "Amazon SES Permanent/General",
        );
        assert_eq!(
            d,
            "hard bounce: 550 5.1.1 user unknown (Amazon SES Permanent/General)"
        );
        assert_eq!(
            detail(FeedbackKind::Complaint, "  ", "SendGrid spamreport"),
            "complaint (SendGrid spamreport)"
        );
        let long = "é".repeat(2000);
        let d = detail(FeedbackKind::SoftBounce, &long, "Postmark Transient");
        assert_eq!(d.chars().count(), MAX_DETAIL_CHARS);
        assert!(d.ends_with("… (Postmark Transient)"), "{d}");
        let d = detail(FeedbackKind::SoftBounce, "x", &"s".repeat(2000));
        assert!(d.chars().count() <= MAX_DETAIL_CHARS);
    }

    #[test]
    fn errors_echo_input_briefly_and_escaped() {
        let q = quoted(&format!("a\nb{}", "x".repeat(200)));
        assert!(q.starts_with("`a\\nb"), "{q}");
        assert!(q.ends_with("…`"), "{q}");
        assert!(q.chars().count() < 90, "{q}");
    }

    // ------------------------------------------------------------------ Amazon SNS

    const CERT: &[u8] = include_bytes!("testdata/sns-test-cert.pem");
    const KEY: &[u8] = include_bytes!("testdata/sns-test-key.pk8");
    const CERT_URL: &str = "https://sns.us-west-2.amazonaws.com/\
                            SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem";
    const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:MyTopic";

    /// The SHA256withRSA signature of the notification below (with its Subject) by an RSA
    /// key that is not the test key (made once with openssl and thrown away).
    const OTHER_KEY_SIGNATURE: &str = "C4gD42BUIoNTcoLZ6EcHJN+msH1LNR2Oyt0RxFnOmCFHVD6AiEu\
        HMlM8PDkOvHBre2iJ4ZExRCtH486txY5S2M2alykickQimFcDbnynqjTfWbiCKIdKhFx+pozzJZ1sl3p5u4\
        6bxnyNBzFd5MOUzlCYSboEx24XG4C9r3p/GUqlGW8v+qy4A43emcBzogkcjyD7xic1G49yIvFo6VVaRtKd7\
        KXHg3mJGJfrhRLqfcYVW36yu9LDpdvOY5kDhwb6flvmKQp0wSn/3NObnELPTH1CxqzchIdfl4JWIKLGs6jp\
        TOAtBFzxn8xoJixKua3O9BUIR5lMEJWNhW8bZKHyKA==";

    /// SNS's documented example notification (its fields, not its signature).
    fn notification_fields(subject: Option<&str>) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("Type", "Notification".to_owned()),
            (
                "MessageId",
                "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324".to_owned(),
            ),
            ("TopicArn", TOPIC.to_owned()),
            ("Message", "Hello world!".to_owned()),
            ("Timestamp", "2012-05-02T00:54:06.655Z".to_owned()),
            ("SigningCertURL", CERT_URL.to_owned()),
            (
                "UnsubscribeURL",
                "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=\
                 arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96"
                    .to_owned(),
            ),
        ];
        if let Some(s) = subject {
            f.push(("Subject", s.to_owned()));
        }
        f
    }

    fn confirmation_fields(kind: &str) -> Vec<(&'static str, String)> {
        vec![
            ("Type", kind.to_owned()),
            (
                "MessageId",
                "165545c9-2a5c-472c-8df2-7ff2be2b3b1b".to_owned(),
            ),
            (
                "Token",
                "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f\
                 3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6\
                 fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736"
                    .to_owned(),
            ),
            ("TopicArn", TOPIC.to_owned()),
            (
                "Message",
                "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:\
                 MyTopic.\nTo confirm the subscription, visit the SubscribeURL included in this \
                 message."
                    .to_owned(),
            ),
            (
                "SubscribeURL",
                "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=\
                 arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37"
                    .to_owned(),
            ),
            ("Timestamp", "2012-04-26T20:45:04.751Z".to_owned()),
            ("SigningCertURL", CERT_URL.to_owned()),
        ]
    }

    /// The string to sign written out by hand from the documented rule, independently of
    /// `parse_sns`.
    fn by_hand(fields: &[(&str, String)], keys: &[&str]) -> String {
        let mut s = String::new();
        for key in keys {
            if let Some((_, v)) = fields.iter().find(|(k, _)| k == key) {
                s.push_str(&format!("{key}\n{v}\n"));
            }
        }
        s
    }

    /// SHA1withRSA signatures by the test key, made with `openssl dgst -sha1 -keyform DER
    /// -sign testdata/sns-test-key.pk8` over the strings to sign of the fixtures named here:
    /// ring signs with SHA-256 and up only. PKCS#1 v1.5 is deterministic, so they are fixed.
    const SHA1_WITH_SUBJECT: &str = "mX3p4efQ4d5bQUJ11HS3per/k9e2fF3u+EoRN7hGB8gMZ8x0lpu0i/2C8rzXdbS/hOzd7IV8QnXF\
        ZRX1g/jQlvCgASSlRKrMZWME6TuvunMRkG97nyYn+Isikz4ZGdkmNVkatYKo5WSnChzZCyxkLn2R\
        +PtDbGNvzhFl4fkGraggsOfecaFAZvIIv6z05Oxpbt/eIZ3rJF9G3Glu+pcVO8N7K5YeLCnZuFE7\
        iJ77fyL705Pr++wRoYY9vF8Nx+0QXXmwGgkm3RuR+55FHDYrp6eEZk/RORYtJ7Cdth4e0GdiaC9r\
        JtEciGfXWSgcu+LwYFzOlkDSJoHDoEwCVV9lig==";
    const SHA1_WITHOUT_SUBJECT: &str = "gJpl3zGFIYx+gsH7Rjq7LMfvV7v1cnDPzsFfu7lrOdfx4KdWROmW9Frc4O+OIA1ARBEC93thHQY2\
        6bXs2P+K6KqTFiFdzBQx85WogCRjBHd8Sknl34TqBkpXJLWyLkMc9ULT7Tr8ZOcQBIHiJOU/jaFa\
        FN/jc0GR6iwHbTfxTIaDzu2F78oY5Vuxh98M75Ypc4diWui6ptd2StAy/lbn6fz+g8A5vMgo6a+n\
        PFj3L1grYyuONx83aben2doFhAQbC/UEm64nwrGcpx2qSOx9jkgBC9kkpzZdamkOgtnTiHQcqFvP\
        SBd0QrPDkvM5tWFXGwJEm/ZZQ5Scv7UgSAKDPg==";
    const SHA1_UNSUBSCRIBE: &str = "YWPl8ekIRURwbmlj0bdmhrncToKQUFmItspvS/fcEDh+d/I7XoggyrKwKRptaSINY9fq6xjxH2CK\
        XIrO8/5lMOTgbC/jbLJfDr945LRYIN15bujR3imyThAvRR82GOdOuoVRW/x8CZaavHfHfwxJ5mym\
        GoEKlxIb2Cxm/mGNSWGmf6z8yZJqX2290p9DBe7UsvA44aE4rkzDfX4a5bUrM91IYYG9XyuhUgnp\
        U7eizYbANFpRPz2OW2leXacAvBs024YJbzKxl9fpCcbWtcF+QFESlToK039lnxRvJScn65q08hsM\
        T/Wgtm70MG8zg1ypQU5TonO1eJFplWTZaTBWvA==";

    fn sign_rsa(version: u8, message: &str) -> String {
        if version == 1 {
            let made = [
                (
                    notification_fields(Some("My First Message")),
                    SHA1_WITH_SUBJECT,
                ),
                (notification_fields(None), SHA1_WITHOUT_SUBJECT),
                (
                    confirmation_fields("UnsubscribeConfirmation"),
                    SHA1_UNSUBSCRIBE,
                ),
            ];
            return made
                .iter()
                .find(|(fields, _)| by_hand(fields, keys_for(fields)) == message)
                .map(|(_, sig)| (*sig).to_owned())
                .unwrap_or_else(|| panic!("no SHA1withRSA signature made for {message:?}"));
        }
        let key = RsaKeyPair::from_pkcs8(KEY).expect("test key");
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message.as_bytes(),
            &mut sig,
        )
        .expect("sign");
        STANDARD.encode(sig)
    }

    fn body(fields: &[(&str, String)], version: &str, signature: &str) -> Vec<u8> {
        let mut obj = Map::new();
        for (k, v) in fields {
            obj.insert((*k).to_owned(), Value::String(v.clone()));
        }
        obj.insert("SignatureVersion".into(), version.into());
        obj.insert("Signature".into(), signature.into());
        serde_json::to_vec(&Value::Object(obj)).expect("json")
    }

    fn keys_for(fields: &[(&str, String)]) -> &'static [&'static str] {
        if fields
            .iter()
            .any(|(k, v)| *k == "Type" && v == "Notification")
        {
            SNS_NOTIFICATION_KEYS
        } else {
            SNS_CONFIRMATION_KEYS
        }
    }

    /// A body signed by the test key over the hand-written string to sign.
    fn signed(fields: &[(&str, String)], version: u8) -> Vec<u8> {
        let sig = sign_rsa(version, &by_hand(fields, keys_for(fields)));
        body(fields, &version.to_string(), &sig)
    }

    /// Parse then verify against the test certificate.
    fn check(body: &[u8]) -> Result<SnsEnvelope, FeedbackError> {
        let (envelope, signed) = parse_sns(body)?;
        verify_sns(&signed, CERT)?;
        Ok(envelope)
    }

    /// `body` with one JSON field replaced (or removed, for `None`) after signing.
    fn tampered(body: &[u8], key: &str, value: Option<&str>) -> Vec<u8> {
        let mut json: Value = serde_json::from_slice(body).expect("json");
        let obj = json.as_object_mut().expect("object");
        match value {
            Some(v) => obj.insert(key.to_owned(), v.into()),
            None => obj.remove(key),
        };
        serde_json::to_vec(&json).expect("json")
    }

    #[test]
    fn sns_string_to_sign_follows_the_documented_order() {
        let with = notification_fields(Some("My First Message"));
        let (_, s) = parse_sns(&body(&with, "1", "AAAA")).expect("parse");
        assert_eq!(
            s.string_to_sign,
            "Message\nHello world!\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
             Subject\nMy First Message\nTimestamp\n2012-05-02T00:54:06.655Z\n\
             TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nNotification\n"
        );
        assert_eq!(s.signing_cert_url, CERT_URL);
        assert_eq!(s.signature, vec![0, 0, 0]);
        assert_eq!(s.version, 1);

        let without = notification_fields(None);
        let (_, s) = parse_sns(&body(&without, "2", "AAAA")).expect("parse");
        assert!(
            !s.string_to_sign.contains("Subject"),
            "{}",
            s.string_to_sign
        );
        assert_eq!(s.version, 2);
        // A JSON null Subject is no Subject.
        let null_subject = tampered(&body(&without, "2", "AAAA"), "Subject", None);
        let mut json: Value = serde_json::from_slice(&null_subject).expect("json");
        json["Subject"] = Value::Null;
        let (_, s2) = parse_sns(&serde_json::to_vec(&json).expect("json")).expect("parse");
        assert_eq!(s2.string_to_sign, s.string_to_sign);

        let conf = confirmation_fields("SubscriptionConfirmation");
        let (envelope, s) = parse_sns(&body(&conf, "1", "AAAA")).expect("parse");
        assert_eq!(s.string_to_sign, by_hand(&conf, SNS_CONFIRMATION_KEYS));
        assert!(
            s.string_to_sign.starts_with("Message\nYou have chosen")
                && s.string_to_sign.contains("\nSubscribeURL\nhttps://")
                && s.string_to_sign.contains("\nToken\n2336")
                && s.string_to_sign
                    .ends_with("Type\nSubscriptionConfirmation\n"),
            "{}",
            s.string_to_sign
        );
        assert_eq!(envelope.topic_arn(), TOPIC);
    }

    #[test]
    fn sns_both_signature_versions_verify() {
        for version in [1, 2] {
            for subject in [Some("My First Message"), None] {
                let b = signed(&notification_fields(subject), version);
                assert_eq!(
                    check(&b),
                    Ok(SnsEnvelope::Notification {
                        topic_arn: TOPIC.to_owned(),
                        message: "Hello world!".to_owned(),
                    }),
                    "version {version}, subject {subject:?}"
                );
            }
        }
    }

    #[test]
    fn sns_confirmations_verify() {
        let b = signed(&confirmation_fields("SubscriptionConfirmation"), 2);
        match check(&b) {
            Ok(SnsEnvelope::SubscriptionConfirmation {
                topic_arn,
                subscribe_url,
            }) => {
                assert_eq!(topic_arn, TOPIC);
                assert!(subscribe_url.contains("Action=ConfirmSubscription"));
            }
            other => panic!("{other:?}"),
        }
        let b = signed(&confirmation_fields("UnsubscribeConfirmation"), 1);
        assert_eq!(
            check(&b),
            Ok(SnsEnvelope::UnsubscribeConfirmation {
                topic_arn: TOPIC.to_owned()
            })
        );
        // The subscribe URL is signed.
        let forged = tampered(&b, "SubscribeURL", Some("https://evil.example/"));
        assert!(matches!(check(&forged), Err(FeedbackError::Unverified(_))));
    }

    #[test]
    fn sns_changes_after_signing_fail() {
        for version in [1, 2] {
            let with = signed(&notification_fields(Some("My First Message")), version);
            let without = signed(&notification_fields(None), version);
            let cases = [
                (
                    "changed Message",
                    tampered(&with, "Message", Some("Hello world?")),
                ),
                (
                    "changed TopicArn",
                    tampered(
                        &with,
                        "TopicArn",
                        Some("arn:aws:sns:us-west-2:999999999999:MyTopic"),
                    ),
                ),
                (
                    "changed Timestamp",
                    tampered(&with, "Timestamp", Some("2030-05-02T00:54:06.655Z")),
                ),
                ("Subject removed", tampered(&with, "Subject", None)),
                (
                    "Subject added",
                    tampered(&without, "Subject", Some("My First Message")),
                ),
                (
                    "Subject changed",
                    tampered(&with, "Subject", Some("My Second Message")),
                ),
                (
                    "other version",
                    tampered(
                        &with,
                        "SignatureVersion",
                        Some(if version == 1 { "2" } else { "1" }),
                    ),
                ),
            ];
            for (name, b) in cases {
                match check(&b) {
                    Err(FeedbackError::Unverified(why)) => {
                        assert!(why.contains("does not match"), "{name}: {why}");
                    }
                    other => panic!("version {version}, {name}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn sns_signature_by_another_key_fails() {
        let fields = notification_fields(Some("My First Message"));
        let b = body(&fields, "2", OTHER_KEY_SIGNATURE);
        // The constant was made over exactly this string; if the fixture drifts, say so.
        let (_, s) = parse_sns(&b).expect("parse");
        assert_eq!(s.string_to_sign, by_hand(&fields, SNS_NOTIFICATION_KEYS));
        assert_eq!(s.signature.len(), 256);
        assert!(matches!(check(&b), Err(FeedbackError::Unverified(_))));
        // And the same body signed by the test key verifies.
        assert!(check(&signed(&fields, 2)).is_ok());
    }

    #[test]
    fn sns_unsupported_signature_versions_are_refused() {
        let good = signed(&notification_fields(None), 2);
        for version in ["3", "0", "", "2 "] {
            let b = tampered(&good, "SignatureVersion", Some(version));
            match parse_sns(&b) {
                Err(FeedbackError::Unverified(why)) => {
                    assert!(why.contains("SignatureVersion"), "{why}");
                }
                other => panic!("{version:?}: {other:?}"),
            }
        }
        let mut json: Value = serde_json::from_slice(&good).expect("json");
        json["SignatureVersion"] = json!(2);
        match parse_sns(&serde_json::to_vec(&json).expect("json")) {
            Err(FeedbackError::Unverified(why)) => assert!(why.contains("SignatureVersion")),
            other => panic!("{other:?}"),
        }
        let missing = tampered(&good, "SignatureVersion", None);
        assert!(
            matches!(parse_sns(&missing), Err(FeedbackError::Unverified(w)) if w.contains("SignatureVersion"))
        );
        // A hand-made SnsSigned with another version is refused by verify_sns too.
        let (_, mut s) = parse_sns(&good).expect("parse");
        s.version = 3;
        assert!(
            matches!(verify_sns(&s, CERT), Err(FeedbackError::Unverified(w)) if w.contains("3"))
        );
    }

    #[test]
    fn sns_bodies_that_are_not_sns_messages() {
        let good = signed(&notification_fields(None), 2);
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("not JSON", b"Type=Notification".to_vec(), false),
            ("array", b"[]".to_vec(), false),
            (
                "unknown Type",
                tampered(&good, "Type", Some("Hello")),
                false,
            ),
            ("no MessageId", tampered(&good, "MessageId", None), false),
            ("no Message", tampered(&good, "Message", None), false),
            ("no Signature", tampered(&good, "Signature", None), true),
            (
                "Signature not Base64",
                tampered(&good, "Signature", Some("not base64!")),
                true,
            ),
            (
                "empty Signature",
                tampered(&good, "Signature", Some("")),
                true,
            ),
            (
                "no SigningCertURL",
                tampered(&good, "SigningCertURL", None),
                true,
            ),
        ];
        for (name, b, is_unverified) in cases {
            match parse_sns(&b) {
                Err(FeedbackError::Unverified(_)) if is_unverified => {}
                Err(FeedbackError::Malformed(_)) if !is_unverified => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        // Lambda's spelling of the certificate URL is read too.
        let mut json: Value = serde_json::from_slice(&good).expect("json");
        let obj = json.as_object_mut().expect("object");
        let url = obj.remove("SigningCertURL").expect("url");
        obj.insert("SigningCertUrl".into(), url);
        assert!(check(&serde_json::to_vec(&json).expect("json")).is_ok());
    }

    #[test]
    fn sns_certificates_that_are_not_usable() {
        let (_, s) = parse_sns(&signed(&notification_fields(None), 2)).expect("parse");
        for (name, pem) in [
            ("empty", &b""[..]),
            ("garbage", b"hello"),
            (
                "key only",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            (
                "not DER",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
        ] {
            match verify_sns(&s, pem) {
                Err(FeedbackError::Unverified(why)) => {
                    assert!(why.contains("certificate"), "{name}: {why}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn sns_parse_leaves_the_cert_url_to_check_sns_cert_url() {
        let mut fields = notification_fields(None);
        for f in &mut fields {
            if f.0 == "SigningCertURL" {
                f.1 = "http://sns.evil.com/cert.pem".to_owned();
            }
        }
        let (_, s) = parse_sns(&signed(&fields, 2)).expect("parse");
        assert_eq!(s.signing_cert_url, "http://sns.evil.com/cert.pem");
        assert!(check_sns_cert_url(&s.signing_cert_url, None).is_err());
    }

    #[test]
    fn sns_cert_urls() {
        for url in [
            CERT_URL,
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert_eq!(check_sns_cert_url(url, None), Ok(()), "{url}");
        }
        for url in [
            "https://sns.evil.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-abc.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.evil.com.amazonaws.com/x.pem",
            "https://sqs.us-east-1.amazonaws.com/x.pem",
            "https://SNS.US-EAST-1.AMAZONAWS.COM/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "ftp://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com@evil.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.txt",
            "https://sns.us-east-1.amazonaws.com/",
            "https://sns.us-east-1.amazonaws.com",
            "https://sns.us-east-1.amazonaws.com/x.pem?y=.pem",
            "https://sns.us-east-1.amazonaws.com/x#.pem",
            "https://sns.us-east-1.amazonaws.com/a\\b.pem",
            "https://sns.us-east-1.amazonaws.com/a b.pem",
            "",
        ] {
            match check_sns_cert_url(url, None) {
                Err(FeedbackError::Unverified(why)) => {
                    assert!(why.contains("SigningCertURL"), "{url}: {why}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        let prefix = Some("http://127.0.0.1:4010/");
        assert_eq!(
            check_sns_cert_url("http://127.0.0.1:4010/cert.pem", prefix),
            Ok(())
        );
        assert_eq!(
            check_sns_cert_url(CERT_URL, prefix),
            Ok(()),
            "AWS still allowed"
        );
        assert!(check_sns_cert_url("http://127.0.0.1:4011/cert.pem", prefix).is_err());
        assert!(check_sns_cert_url("http://sns.evil.com/cert.pem", prefix).is_err());
        assert_eq!(check_sns_cert_url(CERT_URL, Some("")), Ok(()));
        match check_sns_cert_url(
            "http://127.0.0.1:4010@evil.com/x.pem",
            Some("http://127.0.0.1:4010"),
        ) {
            Err(FeedbackError::Unverified(why)) => assert!(why.contains("end with `/`"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    const SUBSCRIBE_URL: &str = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\
                                 &TopicArn=arn:aws:sns:us-east-1:123456789012:t&Token=abc";

    /// `url` refused by [`check_sns_subscribe_url`] as Unverified, with a message that names
    /// the field.
    fn subscribe_refused(url: &str, test_prefix: Option<&str>) {
        match check_sns_subscribe_url(url, test_prefix) {
            Err(FeedbackError::Unverified(why)) => {
                assert!(why.contains("SubscribeURL"), "{url:?}: {why}");
            }
            other => panic!("{url:?} (prefix {test_prefix:?}): {other:?}"),
        }
    }

    /// What the HTTP client (reqwest, whose parser follows the WHATWG URL standard) would
    /// fetch for an accepted URL: https to an Amazon SNS host on the default port, with no
    /// user name, password or fragment.
    fn fetches_from_sns(url: &str) {
        let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
        assert_eq!(parsed.scheme(), "https", "{url:?}");
        assert!(
            parsed.host_str().is_some_and(is_sns_host),
            "{url:?} goes to {:?}",
            parsed.host_str()
        );
        assert_eq!(parsed.port(), None, "{url:?}");
        assert_eq!(parsed.username(), "", "{url:?}");
        assert_eq!(parsed.password(), None, "{url:?}");
        assert_eq!(parsed.fragment(), None, "{url:?}");
    }

    #[test]
    fn sns_subscribe_urls_on_aws_hosts() {
        for url in [
            SUBSCRIBE_URL,
            // The one in SNS's documented confirmation.
            "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=\
             arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37",
            // The China partition.
            "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription\
             &TopicArn=arn:aws-cn:sns:cn-north-1:123456789012:t&Token=abc",
            "https://sns.us-gov-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc",
            // A query straight after the host: the host still ends there.
            "https://sns.us-east-1.amazonaws.com?Action=ConfirmSubscription&Token=abc",
            "https://sns.us-east-1.amazonaws.com?@evil.com/",
            "https://sns.us-east-1.amazonaws.com/",
            "https://sns.us-east-1.amazonaws.com",
        ] {
            assert_eq!(check_sns_subscribe_url(url, None), Ok(()), "{url}");
            fetches_from_sns(url);
        }
        for url in [
            // Not https.
            "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc",
            "ftp://sns.us-east-1.amazonaws.com/",
            "HTTPS://sns.us-east-1.amazonaws.com/",
            "//sns.us-east-1.amazonaws.com/",
            "sns.us-east-1.amazonaws.com/",
            // Another host.
            "https://sns.evil.com/?Action=ConfirmSubscription&Token=abc",
            "https://sns.us-east-1.amazonaws.com.evil.com/?Action=ConfirmSubscription",
            "https://evil.com/sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
            "https://evil.com?sns.us-east-1.amazonaws.com/",
            "https://evil.com?.sns.us-east-1.amazonaws.com",
            "https://sns.us-east-1.evil.com.amazonaws.com/",
            "https://sqs.us-east-1.amazonaws.com/",
            "https://sns..amazonaws.com/",
            "https://sns.us-east-1.amazonaws.com.cn.evil.com/",
            "https://sns.us-east-1.amazonaws.com./",
            "https://sns.us%2deast-1.amazonaws.com/",
            "https:///sns.us-east-1.amazonaws.com/",
            "https://",
            "",
            // A user name, whichever side of the SNS host it is on.
            "https://sns.us-east-1.amazonaws.com@evil.com/",
            "https://user@sns.us-east-1.amazonaws.com/",
            "https://user:pw@sns.us-east-1.amazonaws.com/",
            "https://evil.com?@sns.us-east-1.amazonaws.com/",
            // A port.
            "https://sns.us-east-1.amazonaws.com:443/?Action=ConfirmSubscription",
            "https://sns.us-east-1.amazonaws.com:8443/",
            "https://sns.us-east-1.amazonaws.com:/",
            // Upper case (an SNS host is never written so, and a check of the lowercase form
            // would have to agree with IDNA).
            "https://SNS.US-EAST-1.AMAZONAWS.COM/?Action=ConfirmSubscription",
            "https://sns.US-EAST-1.amazonaws.com/",
            "https://sns.us-east-1.AmazonAWS.com/",
            // Spaces and control characters, anywhere.
            "https://sns.us-east-1.amazonaws.com/?Action=Confirm Subscription",
            " https://sns.us-east-1.amazonaws.com/",
            "https://sns.us-east-1.amazonaws.com/ ",
            "https://sns.us-east-1.amazonaws.com/?Token=a\tb",
            "https://sns.us-east-1.amazonaws.com/?Token=a\nb",
            "https://sns.us-east-1.amazonaws.com/?Token=a\0b",
            "https://sns.us-east-1.amazonaws.com/?Token=a\x7fb",
            "https://sns.us-east-1.amazonaws.com/?Token=é",
            "https://sns.us-east-1.ama\tzonaws.com/",
            // A fragment.
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription#x",
            "https://sns.us-east-1.amazonaws.com#@evil.com/",
            "https://sns.us-east-1.amazonaws.com/#",
            // Backslashes, which URL parsers read as `/` in the authority.
            "https://sns.us-east-1.amazonaws.com\\@evil.com/",
            "https://evil.com\\@sns.us-east-1.amazonaws.com/",
            "https://evil.com\\.sns.us-east-1.amazonaws.com/",
            "https://sns.us-east-1.amazonaws.com/\\evil.com",
        ] {
            subscribe_refused(url, None);
        }
    }

    #[test]
    fn sns_subscribe_urls_under_a_test_prefix() {
        let prefix = Some("http://127.0.0.1:4010/");
        for url in [
            "http://127.0.0.1:4010/confirm?x=1",
            "http://127.0.0.1:4010/",
            SUBSCRIBE_URL,
        ] {
            assert_eq!(check_sns_subscribe_url(url, prefix), Ok(()), "{url}");
        }
        for url in [
            "http://127.0.0.1:4010@evil.com/",
            "http://127.0.0.1:4010@evil.com/confirm?x=1",
            "http://127.0.0.1:40100/confirm",
            "http://127.0.0.1:4011/confirm",
            "http://127.0.0.1:4010",
            "https://127.0.0.1:4010/confirm",
            "http://sns.us-east-1.amazonaws.com/",
            "https://sns.us-east-1.amazonaws.com@evil.com/",
        ] {
            subscribe_refused(url, prefix);
        }
        // Without the trailing `/` a prefix would not fix the host and port, so it allows
        // nothing beyond the AWS URLs.
        let unbounded = Some("http://127.0.0.1:4010");
        for url in [
            "http://127.0.0.1:4010/confirm?x=1",
            "http://127.0.0.1:4010@evil.com/",
            "http://127.0.0.1:40100/confirm",
            "http://127.0.0.1:4010",
        ] {
            subscribe_refused(url, unbounded);
        }
        assert_eq!(check_sns_subscribe_url(SUBSCRIBE_URL, unbounded), Ok(()));
        // An empty prefix is none.
        assert_eq!(check_sns_subscribe_url(SUBSCRIBE_URL, Some("")), Ok(()));
        subscribe_refused("http://127.0.0.1:4010/confirm", Some(""));
        subscribe_refused("", Some(""));
    }

    proptest::proptest! {
        /// Whatever the check accepts (without a test prefix), the HTTP client would fetch
        /// from an Amazon SNS host: the check and the URL parser agree on where the host
        /// ends.
        #[test]
        fn sns_subscribe_urls_accepted_are_fetched_from_sns(
            tail in "[a-zA-Z0-9@:/?#\\\\.%\\[\\] -]{0,24}",
            head in proptest::sample::select(vec![
                "https://sns.us-east-1.amazonaws.com",
                "https://sns.cn-north-1.amazonaws.com.cn",
                "https://sns.us-east-1.amazonaws.co",
                "https://sns.",
                "https://",
                "https://evil.com",
                "http://127.0.0.1:4010",
            ]),
        ) {
            let url = format!("{head}{tail}");
            if check_sns_subscribe_url(&url, None).is_ok() {
                fetches_from_sns(&url);
            }
        }
    }

    // ------------------------------------------------------------------ Amazon SES

    /// AWS's example bounce notification with a DSN and the original headers.
    const SES_BOUNCE: &str = r#"{
       "notificationType":"Bounce",
       "bounce":{
          "bounceType":"Permanent",
          "reportingMTA":"dns; email.example.com",
          "bouncedRecipients":[
             {
                "emailAddress":"jane@example.com",
                "status":"5.1.1",
                "action":"failed",
                "diagnosticCode":"smtp; 550 5.1.1 <jane@example.com>... User"
             }
          ],
          "bounceSubType":"General",
          "timestamp":"2016-01-27T14:59:38.237Z",
          "feedbackId":"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000",
          "remoteMtaIp":"127.0.2.0"
       },
       "mail":{
          "timestamp":"2016-01-27T14:59:38.237Z",
          "source":"john@example.com",
          "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
          "sourceIp": "127.0.3.0",
          "sendingAccountId":"123456789012",
          "callerIdentity": "IAM_user_or_role_name",
          "messageId":"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
          "destination":[
            "jane@example.com",
            "mary@example.com",
            "richard@example.com"],
          "headersTruncated":false,
          "headers":[
           { "name":"From", "value":"\"John Doe\" <john@example.com>" },
           { "name":"To", "value":"\"Jane Doe\" <jane@example.com>, \"Mary Doe\" <mary@example.com>, \"Richard Doe\" <richard@example.com>" },
           { "name":"Message-ID", "value":"custom-message-ID" },
           { "name":"Subject", "value":"Hello" },
           { "name":"Content-Type", "value":"text/plain; charset=\"UTF-8\"" },
           { "name":"Content-Transfer-Encoding", "value":"base64" },
           { "name":"Date", "value":"Wed, 27 Jan 2016 14:05:45 +0000" }
          ],
          "commonHeaders":{
             "from":[ "John Doe <john@example.com>" ],
             "date":"Wed, 27 Jan 2016 14:05:45 +0000",
             "to":[ "Jane Doe <jane@example.com>, Mary Doe <mary@example.com>, Richard Doe <richard@example.com>" ],
             "messageId":"custom-message-ID",
             "subject":"Hello"
           }
        }
    }"#;

    /// AWS's example complaint notification with a feedback report.
    const SES_COMPLAINT: &str = r#"{
      "notificationType":"Complaint",
      "complaint":{
         "userAgent":"AnyCompany Feedback Loop (V0.01)",
         "complainedRecipients":[
            { "emailAddress":"richard@example.com" }
         ],
         "complaintFeedbackType":"abuse",
         "arrivalDate":"2016-01-27T14:59:38.237Z",
         "timestamp":"2016-01-27T14:59:38.237Z",
         "feedbackId":"000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000"
      },
      "mail":{
         "timestamp":"2016-01-27T14:59:38.237Z",
         "messageId":"000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
         "source":"john@example.com",
         "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
         "sourceIp": "127.0.3.0",
         "sendingAccountId":"123456789012",
         "callerIdentity": "IAM_user_or_role_name",
         "destination":[
            "jane@example.com",
            "mary@example.com",
            "richard@example.com"
         ],
         "headersTruncated":false,
         "headers":[
          { "name":"From", "value":"\"John Doe\" <john@example.com>" },
          { "name":"Message-ID", "value":"<herald.12.1.00ab@example.com>" },
          { "name":"Subject", "value":"Hello" }
         ],
         "commonHeaders":{
            "from":[ "\"John Doe\" <john@example.com>" ],
            "date":"Wed, 27 Jan 2016 14:05:45 +0000",
            "to":[ "\"Jane Doe\" <jane@example.com>, \"Mary Doe\" <mary@example.com>, \"Richard Doe\" <richard@example.com>" ],
            "messageId":"<herald.12.1.00ab@example.com>",
            "subject":"Hello"
         }
      }
    }"#;

    /// AWS's example delivery notification (without the original headers).
    const SES_DELIVERY: &str = r#"{
      "notificationType":"Delivery",
      "mail":{
         "timestamp":"2016-01-27T14:59:38.237Z",
         "messageId":"0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
         "source":"john@example.com",
         "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
         "sourceIp": "127.0.3.0",
         "sendingAccountId":"123456789012",
         "callerIdentity": "IAM_user_or_role_name",
         "destination":[ "jane@example.com" ]
      },
      "delivery":{
         "timestamp":"2016-01-27T14:59:38.237Z",
         "recipients":["jane@example.com"],
         "processingTimeMillis":546,
         "reportingMTA":"a8-70.smtp-out.amazonses.com",
         "smtpResponse":"250 ok:  Message 64111812 accepted",
         "remoteMtaIp":"127.0.2.0"
      }
    }"#;

    #[test]
    fn ses_documented_bounce() {
        assert_eq!(
            parse_ses(SES_BOUNCE),
            Ok(vec![EmailFeedback {
                kind: FeedbackKind::HardBounce,
                message_id: Some("<custom-message-ID>".to_owned()),
                recipient: "jane@example.com".to_owned(),
                detail: "hard bounce: 550 5.1.1 <jane@example.com>... User \
                         (Amazon SES Permanent/General)"
                    .to_owned(),
            }])
        );
    }

    #[test]
    fn ses_documented_complaint() {
        assert_eq!(
            parse_ses(SES_COMPLAINT),
            Ok(vec![EmailFeedback {
                kind: FeedbackKind::Complaint,
                message_id: Some("<herald.12.1.00ab@example.com>".to_owned()),
                recipient: "richard@example.com".to_owned(),
                detail: "complaint: abuse (Amazon SES)".to_owned(),
            }])
        );
    }

    #[test]
    fn ses_documented_delivery() {
        assert_eq!(
            parse_ses(SES_DELIVERY),
            Ok(vec![EmailFeedback {
                kind: FeedbackKind::Delivered,
                message_id: None,
                recipient: "jane@example.com".to_owned(),
                detail: "delivered: 250 ok: Message 64111812 accepted (Amazon SES)".to_owned(),
            }])
        );
    }

    fn ses(value: Value) -> Result<Vec<EmailFeedback>, FeedbackError> {
        parse_ses(&value.to_string())
    }

    #[test]
    fn ses_bounce_types_and_recipients() {
        for (bounce_type, kind) in [
            ("Permanent", FeedbackKind::HardBounce),
            ("Transient", FeedbackKind::SoftBounce),
            ("Undetermined", FeedbackKind::SoftBounce),
            ("SomethingNew", FeedbackKind::SoftBounce),
        ] {
            let out = ses(json!({
                "notificationType": "Bounce",
                "bounce": {
                    "bounceType": bounce_type,
                    "bounceSubType": "General",
                    "bouncedRecipients": [
                        {"emailAddress": " a@example.com ", "status": "4.4.7"},
                        {"emailAddress": "b@example.com"}
                    ]
                },
                "mail": {"commonHeaders": {"messageId": "<herald.1.2.3@example.com>"}}
            }))
            .expect("parse");
            assert_eq!(out.len(), 2);
            assert!(out.iter().all(|f| f.kind == kind), "{bounce_type}: {out:?}");
            assert_eq!(out[0].recipient, "a@example.com");
            assert_eq!(
                out[0].detail,
                format!("{}: 4.4.7 (Amazon SES {bounce_type}/General)", kind.label())
            );
            assert_eq!(
                out[1].detail,
                format!("{} (Amazon SES {bounce_type}/General)", kind.label())
            );
        }
    }

    #[test]
    fn ses_message_id_from_headers_when_common_headers_lack_it() {
        let out = ses(json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "a@x.org"}]},
            "mail": {"headers": [
                {"name": "From", "value": "<x@y>"},
                {"name": "message-id", "value": " herald.12.1.00ab@example.com "}
            ]}
        }))
        .expect("parse");
        assert_eq!(
            out[0].message_id.as_deref(),
            Some("<herald.12.1.00ab@example.com>")
        );
        // An unusable commonHeaders id falls through to the headers.
        let out = ses(json!({
            "eventType": "Delivery",
            "delivery": {"recipients": ["a@x.org"]},
            "mail": {
                "commonHeaders": {"messageId": "has space"},
                "headers": [{"name": "Message-ID", "value": "<h.1@x>"}]
            }
        }))
        .expect("parse");
        assert_eq!(out[0].message_id.as_deref(), Some("<h.1@x>"));
    }

    #[test]
    fn ses_event_publishing_forms() {
        let mail = json!({
            "destination": ["a@example.com", "b@example.com"],
            "commonHeaders": {"messageId": "<herald.7.8.9@example.com>"}
        });
        let out =
            ses(json!({"eventType": "Reject", "mail": mail.clone(), "reject": {"reason": "Bad content"}}))
                .expect("reject");
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|f| f.kind == FeedbackKind::Dropped));
        assert_eq!(out[1].recipient, "b@example.com");
        assert_eq!(out[0].detail, "dropped: Bad content (Amazon SES Reject)");
        assert_eq!(
            out[0].message_id.as_deref(),
            Some("<herald.7.8.9@example.com>")
        );

        let out = ses(json!({
            "eventType": "DeliveryDelay",
            "mail": mail.clone(),
            "deliveryDelay": {
                "timestamp": "2020-06-16T00:15:40.641Z",
                "delayType": "TransientCommunicationFailure",
                "expirationTime": "2020-06-16T00:25:40.914Z",
                "delayedRecipients": [{
                    "emailAddress": "a@example.com",
                    "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host"
                }]
            }
        }))
        .expect("delay");
        assert_eq!(
            out,
            vec![EmailFeedback {
                kind: FeedbackKind::SoftBounce,
                message_id: Some("<herald.7.8.9@example.com>".to_owned()),
                recipient: "a@example.com".to_owned(),
                detail: "soft bounce: 421 4.4.1 Unable to connect to remote host \
                         (Amazon SES DeliveryDelay/TransientCommunicationFailure)"
                    .to_owned(),
            }]
        );

        let out = ses(json!({
            "eventType": "Bounce",
            "mail": mail.clone(),
            "bounce": {"bounceType": "Permanent", "bounceSubType": "Suppressed",
                       "bouncedRecipients": [{"emailAddress": "a@example.com"}]}
        }))
        .expect("bounce");
        assert_eq!(out[0].kind, FeedbackKind::HardBounce);

        for kind in [
            "Send",
            "Open",
            "Click",
            "Rendering Failure",
            "Subscription",
            "Whatever",
        ] {
            assert_eq!(
                ses(json!({"eventType": kind, "mail": mail.clone()})),
                Ok(vec![]),
                "{kind}"
            );
        }
        // What SES publishes when the topic is first set up.
        assert_eq!(
            ses(json!({"notificationType": "AmazonSnsSubscriptionSucceeded",
                       "message": "You have successfully subscribed your Amazon SNS topic"})),
            Ok(vec![])
        );
    }

    #[test]
    fn ses_not_spam_feedback_is_no_complaint() {
        let out = ses(json!({
            "notificationType": "Complaint",
            "complaint": {"complaintFeedbackType": "not-spam",
                          "complainedRecipients": [{"emailAddress": "a@x.org"}]},
            "mail": {}
        }));
        assert_eq!(out, Ok(vec![]));
        let out = ses(json!({
            "notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": "a@x.org"}]},
            "mail": {}
        }))
        .expect("parse");
        assert_eq!(out[0].detail, "complaint (Amazon SES)");
    }

    #[test]
    fn ses_recipient_limit() {
        let list = |n: usize| -> Vec<String> { (0..n).map(|i| format!("r{i}@x.org")).collect() };
        let at_limit = ses(json!({"notificationType": "Delivery",
                                  "delivery": {"recipients": list(MAX_SES_RECIPIENTS)}}))
        .expect("at the limit");
        assert_eq!(at_limit.len(), MAX_SES_RECIPIENTS);
        match ses(json!({"notificationType": "Delivery",
                         "delivery": {"recipients": list(MAX_SES_RECIPIENTS + 1)}}))
        {
            Err(FeedbackError::Malformed(why)) => {
                assert!(
                    why.contains("101 recipients") && why.contains("limit of 100"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ses_malformed_notifications() {
        for (name, text) in [
            ("not JSON", "Successfully validated SNS topic".to_owned()),
            ("array", "[]".to_owned()),
            ("no type", json!({"mail": {}}).to_string()),
            ("no bounce", json!({"notificationType": "Bounce"}).to_string()),
            ("no bounceType", json!({"notificationType": "Bounce", "bounce": {"bouncedRecipients": []}}).to_string()),
            ("no recipients", json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}}).to_string()),
            ("recipient without address", json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"status": "5.1.1"}]}}).to_string()),
            ("empty address", json!({"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "  "}]}}).to_string()),
            ("delivery recipient not a string", json!({"notificationType": "Delivery", "delivery": {"recipients": [1]}}).to_string()),
            ("reject without destination", json!({"eventType": "Reject", "mail": {}}).to_string()),
        ] {
            assert!(
                matches!(parse_ses(&text), Err(FeedbackError::Malformed(_))),
                "{name}: {:?}",
                parse_ses(&text)
            );
        }
    }

    // ------------------------------------------------------------------ Postmark

    fn basic(credentials: &str) -> String {
        format!("Basic {}", STANDARD.encode(credentials))
    }

    #[test]
    fn postmark_basic_auth() {
        let token = "s3cret-token";
        assert_eq!(
            check_postmark_auth(Some(&basic("herald:s3cret-token")), token),
            Ok(())
        );
        assert_eq!(
            check_postmark_auth(Some(&basic("anyone:s3cret-token")), token),
            Ok(())
        );
        assert_eq!(
            check_postmark_auth(Some(&basic(":s3cret-token")), token),
            Ok(())
        );
        let lower = format!("basic  {}", STANDARD.encode("u:s3cret-token"));
        assert_eq!(
            check_postmark_auth(Some(&lower), token),
            Ok(()),
            "scheme is case-insensitive"
        );
        // A colon in the password is part of it.
        assert_eq!(check_postmark_auth(Some(&basic("u:a:b")), "a:b"), Ok(()));

        let refused = |header: Option<&str>, token: &str, needle: &str| match check_postmark_auth(
            header, token,
        ) {
            Err(FeedbackError::Unverified(why)) => {
                assert!(why.contains(needle), "{header:?}: {why}")
            }
            other => panic!("{header:?}: {other:?}"),
        };
        refused(
            Some(&basic("herald:wrong")),
            token,
            "not this channel's webhook token",
        );
        refused(
            Some(&basic("herald:s3cret-token2")),
            token,
            "not this channel's webhook token",
        );
        refused(
            Some(&basic("herald:")),
            token,
            "not this channel's webhook token",
        );
        refused(Some(&basic("s3cret-token")), token, "user:password");
        refused(None, token, "no Authorization header");
        refused(Some("  "), token, "no Authorization header");
        refused(Some("Bearer s3cret-token"), token, "not Basic");
        refused(Some("Basic !!not-base64!!"), token, "not Base64");
        refused(Some(&basic("herald:")), "", "no Postmark webhook token");
        refused(Some(&basic("herald:x")), "", "no Postmark webhook token");
    }

    /// Postmark's example bounce webhook, with Herald's metadata.
    const POSTMARK_HARD_BOUNCE: &str = r#"{
      "RecordType": "Bounce",
      "MessageStream": "outbound",
      "ID": 4323372036854775807,
      "Type": "HardBounce",
      "TypeCode": 1,
      "Name": "Hard bounce",
      "Tag": "Test",
      "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
      "Metadata" : {
        "herald_id" : "<herald.12.1.00ab@example.com>",
        "b_key": "b_value"
      },
      "ServerID": 23,
      "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
      "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
      "Email": "john@example.com",
      "From": "sender@example.com",
      "BouncedAt": "2019-11-05T16:33:54.9070259Z",
      "DumpAvailable": true,
      "Inactive": true,
      "CanActivate": true,
      "Subject": "Test subject",
      "Content": "Return-Path: <>\r\nReceived: …"
    }"#;

    const POSTMARK_SOFT_BOUNCE: &str = r#"{
      "RecordType": "Bounce",
      "MessageStream": "outbound",
      "ID": 692560173,
      "Type": "SoftBounce",
      "TypeCode": 4096,
      "Name": "Soft bounce",
      "MessageID": "b1a2c3d4-0000-4000-8000-000000000000",
      "Metadata": {"herald_id": "herald.12.2.00cd@example.com"},
      "ServerID": 23,
      "Description": "Unable to temporarily deliver this email. This is usually caused by a full mailbox.",
      "Details": "",
      "Email": "jane@example.com",
      "From": "sender@example.com",
      "BouncedAt": "2019-11-05T16:33:54Z",
      "DumpAvailable": false,
      "Inactive": false,
      "CanActivate": true,
      "Subject": "Test subject"
    }"#;

    const POSTMARK_SPAM_COMPLAINT: &str = r#"{
      "RecordType": "SpamComplaint",
      "MessageStream": "outbound",
      "ID": 42,
      "Type": "SpamComplaint",
      "TypeCode": 100001,
      "Name": "Spam complaint",
      "Tag": "Test",
      "MessageID": "00000000-0000-0000-0000-000000000000",
      "Metadata": {"herald_id": "<herald.12.3.00ef@example.com>"},
      "ServerID": 1234,
      "Description": "The subscriber explicitly marked this message as spam.",
      "Details": "Test spam complaint details",
      "Email": "john@example.com",
      "From": "sender@example.com",
      "BouncedAt": "2019-11-05T16:33:54.9070259Z",
      "DumpAvailable": true,
      "Inactive": true,
      "CanActivate": false,
      "Subject": "Test subject",
      "Content": "<Abuse report dump>"
    }"#;

    const POSTMARK_DELIVERY: &str = r#"{
      "RecordType": "Delivery",
      "ServerID": 23,
      "MessageStream": "outbound",
      "MessageID": "00000000-0000-0000-0000-000000000000",
      "Recipient": "john@example.com",
      "Tag": "welcome-email",
      "DeliveredAt": "2021-02-21T16:34:52Z",
      "Details": "Test delivery webhook details",
      "Metadata": {"herald_id": "<herald.12.4.0012@example.com>"}
    }"#;

    const POSTMARK_OPEN: &str = r#"{
      "RecordType": "Open",
      "MessageStream": "outbound",
      "Metadata": {"herald_id": "<herald.12.4.0012@example.com>"},
      "FirstOpen": true,
      "Recipient": "john@example.com",
      "MessageID": "00000000-0000-0000-0000-000000000000",
      "ReceivedAt": "2019-11-05T16:33:54.9070259Z",
      "Platform": "WebMail",
      "ReadSeconds": 5,
      "Tag": "welcome-email",
      "UserAgent": "Mozilla/5.0",
      "OS": {"Name": "OS X 10.7 Lion", "Family": "OS X 10", "Company": "Apple Computer, Inc."},
      "Client": {"Name": "Chrome 35.0.1916.153", "Family": "Chrome", "Company": "Google"},
      "Geo": {"IP": "188.2.95.4", "City": "Novi Sad", "Country": "Serbia"}
    }"#;

    #[test]
    fn postmark_documented_payloads() {
        let one = |body: &str| {
            let mut out = parse_postmark(body.as_bytes()).expect("parse");
            assert_eq!(out.len(), 1, "{out:?}");
            out.remove(0)
        };
        assert_eq!(
            one(POSTMARK_HARD_BOUNCE),
            EmailFeedback {
                kind: FeedbackKind::HardBounce,
                message_id: Some("<herald.12.1.00ab@example.com>".to_owned()),
                recipient: "john@example.com".to_owned(),
                detail: "hard bounce: 550 5.1.1 The email account that you tried to reach \
                         does not exist. (Postmark HardBounce)"
                    .to_owned(),
            }
        );
        assert_eq!(
            one(POSTMARK_SOFT_BOUNCE),
            EmailFeedback {
                kind: FeedbackKind::SoftBounce,
                message_id: Some("<herald.12.2.00cd@example.com>".to_owned()),
                recipient: "jane@example.com".to_owned(),
                detail: "soft bounce: Unable to temporarily deliver this email. This is \
                         usually caused by a full mailbox. (Postmark SoftBounce)"
                    .to_owned(),
            }
        );
        assert_eq!(
            one(POSTMARK_SPAM_COMPLAINT),
            EmailFeedback {
                kind: FeedbackKind::Complaint,
                message_id: Some("<herald.12.3.00ef@example.com>".to_owned()),
                recipient: "john@example.com".to_owned(),
                detail: "complaint: Test spam complaint details (Postmark SpamComplaint)"
                    .to_owned(),
            }
        );
        assert_eq!(
            one(POSTMARK_DELIVERY),
            EmailFeedback {
                kind: FeedbackKind::Delivered,
                message_id: Some("<herald.12.4.0012@example.com>".to_owned()),
                recipient: "john@example.com".to_owned(),
                detail: "delivered: Test delivery webhook details (Postmark)".to_owned(),
            }
        );
        assert_eq!(parse_postmark(POSTMARK_OPEN.as_bytes()), Ok(vec![]));
        for record in ["Click", "SubscriptionChange", "Inbound"] {
            let b = json!({"RecordType": record, "Recipient": "a@x.org"}).to_string();
            assert_eq!(parse_postmark(b.as_bytes()), Ok(vec![]), "{record}");
        }
        // No metadata: no message id, the feedback still counts.
        let b = json!({"RecordType": "Delivery", "Recipient": "a@x.org"}).to_string();
        assert_eq!(
            parse_postmark(b.as_bytes()).expect("parse")[0].message_id,
            None
        );
    }

    #[test]
    fn postmark_bounce_types() {
        use FeedbackKind::*;
        for (bounce_type, expected) in [
            ("HardBounce", Some(HardBounce)),
            ("BadEmailAddress", Some(HardBounce)),
            ("ManuallyDeactivated", Some(HardBounce)),
            ("SpamComplaint", Some(Complaint)),
            ("SoftBounce", Some(SoftBounce)),
            ("Transient", Some(SoftBounce)),
            ("DnsError", Some(SoftBounce)),
            ("Unknown", Some(SoftBounce)),
            ("Blocked", Some(SoftBounce)),
            ("SpamNotification", Some(SoftBounce)),
            ("VirusNotification", Some(SoftBounce)),
            ("DMARCPolicy", Some(SoftBounce)),
            ("SomethingNew", Some(SoftBounce)),
            ("SMTPApiError", Some(Dropped)),
            ("TemplateRenderingFailed", Some(Dropped)),
            ("AutoResponder", None),
            ("Subscribe", None),
            ("Unsubscribe", None),
            ("AddressChange", None),
            ("OpenRelayTest", None),
            ("ChallengeVerification", None),
            ("Unconfirmed", None),
            ("InboundError", None),
        ] {
            let b = json!({"RecordType": "Bounce", "Type": bounce_type, "Email": "a@x.org",
                           "Description": "d"})
            .to_string();
            let out = parse_postmark(b.as_bytes()).expect("parse");
            assert_eq!(out.first().map(|f| f.kind), expected, "{bounce_type}");
        }
    }

    #[test]
    fn postmark_malformed_payloads() {
        for (name, b) in [
            ("not JSON", "RecordType=Bounce".to_owned()),
            ("array", json!([{"RecordType": "Bounce"}]).to_string()),
            (
                "no RecordType",
                json!({"Type": "HardBounce", "Email": "a@x.org"}).to_string(),
            ),
            (
                "bounce without Type",
                json!({"RecordType": "Bounce", "Email": "a@x.org"}).to_string(),
            ),
            (
                "bounce without Email",
                json!({"RecordType": "Bounce", "Type": "HardBounce"}).to_string(),
            ),
            (
                "delivery without Recipient",
                json!({"RecordType": "Delivery", "Email": "a@x.org"}).to_string(),
            ),
        ] {
            assert!(
                matches!(
                    parse_postmark(b.as_bytes()),
                    Err(FeedbackError::Malformed(_))
                ),
                "{name}"
            );
        }
    }

    // ------------------------------------------------------------------ SendGrid

    const P256_PREFIX_HEX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// A fresh P-256 key pair and its verification key as SendGrid shows one.
    fn sendgrid_key() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let mut spki = hex(P256_PREFIX_HEX);
        spki.extend_from_slice(pair.public_key().as_ref());
        (pair, STANDARD.encode(spki))
    }

    fn sendgrid_sign(pair: &EcdsaKeyPair, timestamp: &str, body: &[u8]) -> String {
        let mut msg = timestamp.as_bytes().to_vec();
        msg.extend_from_slice(body);
        let sig = pair.sign(&SystemRandom::new(), &msg).expect("sign");
        STANDARD.encode(sig.as_ref())
    }

    #[test]
    fn sendgrid_spki_prefix_is_the_documented_one() {
        assert_eq!(P256_SPKI_PREFIX.to_vec(), hex(P256_PREFIX_HEX));
        let (_, key) = sendgrid_key();
        assert!(
            key.starts_with("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"),
            "{key}"
        );
        assert_eq!(check_sendgrid_key(&key), Ok(()));
    }

    #[test]
    fn sendgrid_signatures() {
        let (pair, key) = sendgrid_key();
        let (_, other_key) = sendgrid_key();
        let body = br#"[{"email":"a@x.org","event":"delivered"}]"#;
        let ts = "1600112502";
        let sig = sendgrid_sign(&pair, ts, body);
        assert_eq!(verify_sendgrid(&key, &sig, ts, body), Ok(()));
        // The key as pasted with line breaks or PEM armour.
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &key[..64],
            &key[64..]
        );
        assert_eq!(verify_sendgrid(&pem, &sig, ts, body), Ok(()));

        let fails =
            |k: &str, s: &str, t: &str, b: &[u8], needle: &str| match verify_sendgrid(k, s, t, b) {
                Err(FeedbackError::Unverified(why)) => assert!(why.contains(needle), "{why}"),
                other => panic!("{other:?}"),
            };
        fails(&other_key, &sig, ts, body, "does not match");
        fails(
            &key,
            &sig,
            ts,
            br#"[{"email":"a@x.org","event":"bounce"}]"#,
            "does not match",
        );
        fails(&key, &sig, "1600112503", body, "does not match");
        fails(&key, &sig, "", body, "Timestamp");
        fails(&key, "", ts, body, "Signature");
        fails(&key, "%%%", ts, body, "Signature");
        fails(
            &key,
            &STANDARD.encode([0u8; 70]),
            ts,
            body,
            "does not match",
        );
        fails("", &sig, ts, body, "empty");
        fails("not base64!", &sig, ts, body, "not Base64");
    }

    #[test]
    fn sendgrid_keys_that_are_not_p256_spki_are_refused_readably() {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).expect("generate");
        let p384 = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let mut spki = hex("3076301006072a8648ce3d020106052b81040022036200");
        spki.extend_from_slice(p384.public_key().as_ref());
        let (_, good) = sendgrid_key();
        let mut compressed = hex(P256_PREFIX_HEX);
        compressed.push(0x02);
        compressed.extend_from_slice(&[7; 64]);
        for (name, key, needle) in [
            (
                "P-384",
                STANDARD.encode(&spki),
                "not an ECDSA P-256 public key",
            ),
            (
                "raw point",
                STANDARD.encode([4u8; 65]),
                "not an ECDSA P-256 public key",
            ),
            (
                "truncated",
                good[..good.len() - 8].to_owned(),
                "decodes to 87 bytes",
            ),
            ("not base64", "SG.apikey-not-a-key".to_owned(), "not Base64"),
            ("empty", "  ".to_owned(), "empty"),
            (
                "not uncompressed",
                STANDARD.encode(&compressed),
                "uncompressed",
            ),
        ] {
            match check_sendgrid_key(&key) {
                Err(FeedbackError::Malformed(why)) => {
                    assert!(why.contains(needle), "{name}: {why}");
                    assert!(why.contains("Verification Key"), "{name}: {why}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    /// SendGrid's documented example batch, one event of each kind, with Herald's unique
    /// argument on some.
    const SENDGRID_BATCH: &str = r#"[
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"processed","category":"cat facts","sg_event_id":"rbtnWrG1DVDGGGFHFyun0A==",
       "sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000",
       "herald_id":"<herald.1.1.aa@example.com>"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"deferred","category":"cat facts","sg_event_id":"rbtnWrG1DVDGGGFHFyun0A==",
       "sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000",
       "response":"400 try again later","attempt":"5","herald_id":"<herald.1.1.aa@example.com>"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"delivered","category":"cat facts","sg_event_id":"rbtnWrG1DVDGGGFHFyun0A==",
       "sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000",
       "response":"250 OK","herald_id":"herald.1.1.aa@example.com"},
      {"email":"example@test.com","timestamp":1513299569,"event":"open","sg_machine_open":false,
       "category":"cat facts","sg_event_id":"FOTFFO0ecsBE-zxFXfs6WA==",
       "sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000",
       "useragent":"Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)","ip":"255.255.255.255"},
      {"email":"example@test.com","timestamp":1513299569,"event":"click","category":"cat facts",
       "sg_event_id":"kCAi1KttyQdEKHhdC-nuEA==","url":"http://www.sendgrid.com/","url_offset":{"index":0,"type":"html"}},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"bounce","category":"cat facts","sg_event_id":"6g4ZI7SA-xmRDv57GoPIPw==",
       "sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000",
       "reason":"500 unknown recipient","status":"5.0.0","type":"bounce","bounce_classification":"Invalid Address"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"bounce","category":"cat facts","sg_event_id":"6g4ZI7SA-xmRDv57GoPIPw==",
       "reason":"550 5.7.1 Service unavailable; client host blocked using Spamhaus","status":"5.7.1","type":"blocked",
       "bounce_classification":"Reputation","herald_id":"<herald.1.2.bb@example.com>"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"dropped","category":"cat facts","sg_event_id":"zmzJhfJgAfUSOW80yEbPyw==",
       "sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000",
       "reason":"Bounced Address","status":"5.0.0"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"spamreport","sg_event_id":"Ff9KnVbdJqvEnsoE3j4Qqg==",
       "sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000"},
      {"email":"example@test.com","timestamp":1513299569,"event":"unsubscribe","category":"cat facts",
       "sg_event_id":"zz_BjPgU_5pS-J8vlfB1sg=="},
      {"email":"example@test.com","timestamp":1513299569,"event":"group_unsubscribe","asm_group_id":10,
       "sg_event_id":"ahSCB7xYcXFb-hEaawsPRw=="},
      {"email":"example@test.com","timestamp":1513299569,"event":"group_resubscribe","asm_group_id":10,
       "sg_event_id":"ahSCB7xYcXFb-hEaawsPRw=="}
    ]"#;

    #[test]
    fn sendgrid_documented_batch() {
        let out = parse_sendgrid(SENDGRID_BATCH.as_bytes()).expect("parse");
        let herald = Some("<herald.1.1.aa@example.com>".to_owned());
        let smtp_id = Some("<14c5d75ce93.dfd.64b469@ismtpd-555>".to_owned());
        let f = |kind, message_id: &Option<String>, detail: &str| EmailFeedback {
            kind,
            message_id: message_id.clone(),
            recipient: "example@test.com".to_owned(),
            detail: detail.to_owned(),
        };
        assert_eq!(
            out,
            vec![
                f(
                    FeedbackKind::SoftBounce,
                    &herald,
                    "soft bounce: 400 try again later (SendGrid deferred, attempt 5)"
                ),
                f(
                    FeedbackKind::Delivered,
                    &herald,
                    "delivered: 250 OK (SendGrid)"
                ),
                f(
                    FeedbackKind::HardBounce,
                    &smtp_id,
                    "hard bounce: 5.0.0 500 unknown recipient (SendGrid bounce, Invalid Address)"
                ),
                f(
                    FeedbackKind::SoftBounce,
                    &Some("<herald.1.2.bb@example.com>".to_owned()),
                    "soft bounce: 5.7.1 550 5.7.1 Service unavailable; client host blocked using \
                     Spamhaus (SendGrid blocked, Reputation)"
                ),
                f(
                    FeedbackKind::HardBounce,
                    &smtp_id,
                    "hard bounce: Bounced Address (SendGrid dropped)"
                ),
                f(
                    FeedbackKind::Complaint,
                    &smtp_id,
                    "complaint (SendGrid spamreport)"
                ),
            ]
        );
    }

    #[test]
    fn sendgrid_event_mappings() {
        use FeedbackKind::*;
        let kind_of = |event: Value| -> Option<FeedbackKind> {
            let b = Value::Array(vec![event]).to_string();
            parse_sendgrid(b.as_bytes())
                .expect("parse")
                .first()
                .map(|f| f.kind)
        };
        let e = |fields: Value| {
            let mut v = json!({"email": "a@x.org"});
            if let (Some(o), Some(extra)) = (v.as_object_mut(), fields.as_object()) {
                o.extend(extra.clone());
            }
            v
        };
        assert_eq!(kind_of(e(json!({"event": "bounce"}))), Some(HardBounce));
        assert_eq!(
            kind_of(e(
                json!({"event": "bounce", "type": "bounce", "bounce_classification": "Mailbox Unavailable"})
            )),
            Some(HardBounce)
        );
        assert_eq!(
            kind_of(e(
                json!({"event": "bounce", "type": "bounce", "bounce_classification": "Unclassified"})
            )),
            Some(HardBounce)
        );
        assert_eq!(
            kind_of(e(
                json!({"event": "bounce", "type": "blocked", "bounce_classification": "Unclassified"})
            )),
            Some(SoftBounce)
        );
        for class in SENDGRID_SENDER_SIDE {
            assert_eq!(
                kind_of(e(
                    json!({"event": "bounce", "type": "bounce", "bounce_classification": class})
                )),
                Some(SoftBounce),
                "{class}"
            );
        }
        assert_eq!(kind_of(e(json!({"event": "deferred"}))), Some(SoftBounce));
        assert_eq!(
            kind_of(e(json!({"event": "dropped", "reason": "Bounced Address"}))),
            Some(HardBounce)
        );
        assert_eq!(
            kind_of(e(json!({"event": "dropped", "reason": "Invalid"}))),
            Some(HardBounce)
        );
        assert_eq!(
            kind_of(e(
                json!({"event": "dropped", "reason": "Spam Reporting Address"})
            )),
            Some(Complaint)
        );
        for reason in [
            "Unsubscribed Address",
            "Spam Content",
            "Invalid SMTPAPI header",
            "Duplicate message",
            "",
        ] {
            assert_eq!(
                kind_of(e(json!({"event": "dropped", "reason": reason}))),
                Some(Dropped),
                "{reason}"
            );
        }
        assert_eq!(kind_of(e(json!({"event": "spamreport"}))), Some(Complaint));
        assert_eq!(kind_of(e(json!({"event": "delivered"}))), Some(Delivered));
        for ignored in [
            "processed",
            "open",
            "click",
            "unsubscribe",
            "group_unsubscribe",
            "group_resubscribe",
            "account_status_change",
            "new",
        ] {
            assert_eq!(kind_of(e(json!({"event": ignored}))), None, "{ignored}");
        }
        // An ignored event needs no address.
        assert_eq!(parse_sendgrid(br#"[{"event":"open"}]"#), Ok(vec![]));
        // Herald's id wins over smtp-id; an unusable one falls back to it.
        let out = parse_sendgrid(
            br#"[{"email":" a@x.org ","event":"delivered","smtp-id":"<s@x>","herald_id":"bad id"}]"#,
        )
        .expect("parse");
        assert_eq!(out[0].message_id.as_deref(), Some("<s@x>"));
        assert_eq!(out[0].recipient, "a@x.org");
        assert_eq!(parse_sendgrid(b"[]"), Ok(vec![]));
    }

    // The arithmetic in the limits' documentation: a batch SendGrid sends (up to about
    // 768 KB) fits within the body limit, and, its events being over 200 bytes each, within
    // the event limit.
    const _: () = assert!(MAX_FEEDBACK_BODY > 768 * 1024);
    const _: () = assert!(768 * 1024 / 200 < MAX_SENDGRID_EVENTS);

    #[test]
    fn sendgrid_event_limit_and_malformed_bodies() {
        let events = |n: usize| {
            let one = r#"{"email":"a@x.org","event":"delivered"}"#;
            format!("[{}]", vec![one; n].join(","))
        };
        assert_eq!(
            parse_sendgrid(events(MAX_SENDGRID_EVENTS).as_bytes())
                .expect("at the limit")
                .len(),
            MAX_SENDGRID_EVENTS
        );
        match parse_sendgrid(events(MAX_SENDGRID_EVENTS + 1).as_bytes()) {
            Err(FeedbackError::Malformed(why)) => {
                assert!(
                    why.contains(&format!("limit of {MAX_SENDGRID_EVENTS}")),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        for (name, b) in [
            ("not JSON", &b"event=delivered"[..]),
            ("object", br#"{"email":"a@x.org","event":"delivered"}"#),
            ("not an object", br#"["delivered"]"#),
            ("no event", br#"[{"email":"a@x.org"}]"#),
            ("no email", br#"[{"event":"bounce"}]"#),
            ("empty email", br#"[{"event":"spamreport","email":" "}]"#),
        ] {
            assert!(
                matches!(parse_sendgrid(b), Err(FeedbackError::Malformed(_))),
                "{name}: {:?}",
                parse_sendgrid(b)
            );
        }
    }

    // ------------------------------------------------------------------ all parsers

    /// What every parser promises about what it returns, whatever the input.
    fn check_invariants(bytes: &[u8]) {
        if let Ok((_, signed)) = parse_sns(bytes) {
            let _ = verify_sns(&signed, CERT);
            let _ = check_sns_cert_url(&signed.signing_cert_url, None);
        }
        let text = String::from_utf8_lossy(bytes);
        let parsed = [
            parse_ses(&text),
            parse_postmark(bytes),
            parse_sendgrid(bytes),
        ];
        for f in parsed.into_iter().flatten().flatten() {
            assert!(f.detail.chars().count() <= MAX_DETAIL_CHARS, "{f:?}");
            assert!(!f.detail.contains(['\n', '\r']), "{f:?}");
            assert!(
                !f.recipient.is_empty() && f.recipient.trim() == f.recipient,
                "{f:?}"
            );
            if let Some(id) = &f.message_id {
                assert_eq!(normalise_message_id(id).as_ref(), Some(id), "{f:?}");
            }
        }
        let _ = check_postmark_auth(Some(&text), "token");
        let _ = check_sendgrid_key(&text);
        let _ = verify_sendgrid(&text, &text, &text, bytes);
        let _ = check_sns_cert_url(&text, Some("http://127.0.0.1:4010/"));
    }

    fn fixtures() -> Vec<Vec<u8>> {
        vec![
            signed(&notification_fields(Some("My First Message")), 2),
            signed(&confirmation_fields("SubscriptionConfirmation"), 2),
            signed(&confirmation_fields("UnsubscribeConfirmation"), 1),
            SES_BOUNCE.into(),
            SES_COMPLAINT.into(),
            SES_DELIVERY.into(),
            POSTMARK_HARD_BOUNCE.into(),
            POSTMARK_DELIVERY.into(),
            SENDGRID_BATCH.into(),
        ]
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
        ) {
            check_invariants(&bytes);
        }

        #[test]
        fn mutated_fixtures_never_panic(
            which in proptest::prelude::any::<proptest::sample::Index>(),
            flips in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                1..6,
            ),
        ) {
            let all = fixtures();
            let mut bytes = which.get(&all).clone();
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            check_invariants(&bytes);
        }
    }
}
