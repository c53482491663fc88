//! Fuzz entry points: one per parser of outside input, each calling the production parser
//! (never a copy) and asserting that parser's own invariants, so a fuzzer finds logic bugs
//! as well as panics. Every entry takes arbitrary bytes and panics only on a real defect.
//!
//! Driven two ways: `fuzz/fuzz_targets/*.rs` (cargo-fuzz / libFuzzer, `scripts/fuzz`), and
//! the unit tests below, which replay every checked-in seed and crash input
//! (`fuzz/corpus/<target>/`, `fuzz/artifacts/<target>/`) and then run a short seeded
//! mutation loop per target inside `cargo test`.

use crate::address::{Address, AddressKind};
use crate::api::contacts::{ContactQuery, contact_filter};
use crate::api::problem::ApiQuery;
use crate::api::{PageParams, cursor_after, decode_id, encode_id};
use crate::email_feedback::{
    EmailFeedback, FeedbackError, FeedbackKind, MAX_DETAIL_CHARS, MAX_MESSAGE_ID_LEN,
    MAX_SENDGRID_EVENTS, MAX_SES_RECIPIENTS, SnsEnvelope, check_postmark_auth, check_sendgrid_key,
    check_sns_cert_url, check_sns_subscribe_url, parse_postmark, parse_sendgrid, parse_ses,
    parse_sns, verify_sendgrid, verify_sns,
};
use crate::ids::{ChannelId, MessageId};
use crate::import::{Parsed, parse};
use crate::optout::keyword;
use crate::signatures::{
    StandardHeaders, meta_signature, sign_standard, twilio_signature, verify_meta, verify_standard,
    verify_twilio,
};
use crate::store::directory::like_pattern;
use crate::template::{ContactFields, MAX_RENDERED_BYTES, MessageTemplate, TemplateError};
use crate::tracked_links::LinkSigner;
use crate::webhooks::inbound::{
    TwilioStatus, inbound_sender, parse_twilio_form, parse_whatsapp_event, read_twilio_status,
};
use crate::webhooks::unsubscribe;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// The channel a fuzzed webhook is taken to arrive on.
const FUZZ_CHANNEL: ChannelId = ChannelId(1);
use std::time::Duration;

/// A fuzz entry: any bytes in, a panic only on a defect.
pub type Entry = fn(&[u8]);

/// Every target, by name: what `fuzz/fuzz_targets`, `scripts/fuzz` and the replay tests
/// iterate over. The name is also the corpus directory.
pub const TARGETS: [(&str, Entry); 12] = [
    ("template", template),
    ("csv_row", csv_row),
    ("twilio_form", twilio_form),
    ("whatsapp_json", whatsapp_json),
    ("standard_webhook", standard_webhook),
    ("contact_address", contact_address),
    ("contact_filter", contact_filter_query),
    ("id", id),
    ("unsubscribe_token", unsubscribe_token),
    ("tracked_link", tracked_link),
    ("page_cursor", page_cursor),
    ("email_feedback", email_feedback),
];

/// Larger inputs are cut here: the HTTP layer bounds every body long before, and a fuzzer
/// learns nothing from megabytes it cannot mutate usefully.
const MAX_INPUT: usize = 64 * 1024;

fn bounded(data: &[u8]) -> &[u8] {
    &data[..data.len().min(MAX_INPUT)]
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(bounded(data)).ok()
}

/// A message template (campaign body, preview) compiled and rendered for a typical contact.
/// Invariants: a render stays within [`MAX_RENDERED_BYTES`], is deterministic, and a
/// failed render of a variable names only variables the template reads.
pub fn template(data: &[u8]) {
    let Some(source) = text(data) else { return };
    let template = match MessageTemplate::compile(source) {
        Ok(t) => t,
        // Refusing a construct or a size before rendering is the template limits working.
        Err(TemplateError::Syntax { .. } | TemplateError::Limit { .. }) => return,
        Err(other) => panic!("compile failed with a non-syntax error: {other:?}"),
    };
    let attributes = match serde_json::json!({
        "city": "Lyon",
        "vip": true,
        "coupon": null,
        "order": {"total": 12.5, "items": [1, 2, 3]},
    }) {
        serde_json::Value::Object(map) => map,
        _ => return,
    };
    let contact = ContactFields {
        address: "+33612345678",
        name: Some("Ana"),
        attributes: &attributes,
    };
    let first = template.render(&contact);
    if let Ok(out) = &first {
        assert!(
            out.len() <= MAX_RENDERED_BYTES,
            "rendered {} bytes, over the {MAX_RENDERED_BYTES}-byte cap",
            out.len()
        );
    }
    if let Err(TemplateError::Render { missing, .. }) = &first {
        let variables = template.variables();
        for name in missing {
            let root = name.split('.').next().unwrap_or(name);
            assert!(
                variables.contains(root),
                "render blames `{name}`, which the template does not read ({variables:?})"
            );
        }
    }
    assert_eq!(
        template.render(&contact),
        first,
        "rendering is not deterministic"
    );
}

/// A CSV contact import (header row and rows). Invariants: every imported address is a
/// normalised [`Address`] (parses back to itself), no field carries NUL (PostgreSQL cannot
/// store it), rejected lines are in order and after the header, and no row is counted twice.
pub fn csv_row(data: &[u8]) {
    let data = bounded(data);
    // Most inputs are rows under the usual header; one that brings its own header (a first
    // line naming `address`) fuzzes the header handling too.
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let has_header = first_line
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"address"));
    let mut csv = Vec::with_capacity(data.len() + 40);
    if !has_header {
        csv.extend_from_slice(b"address,name,unsubscribed,city,plan\n");
    }
    csv.extend_from_slice(data);
    // CSV ends a record at `\n` or `\r`: each row needs one of them (or the end of input).
    let terminators = csv.iter().filter(|b| matches!(b, b'\n' | b'\r')).count();
    let lines = u64::try_from(terminators + 1).unwrap_or(u64::MAX);

    // Room for every batch this input can make, so the parser never waits for a reader.
    let (tx, mut rx) = tokio::sync::mpsc::channel(MAX_INPUT);
    parse(std::io::Cursor::new(csv), "fuzz.csv", &tx);
    drop(tx);
    let mut rows = 0u64;
    let mut last_reject = 0u64;
    while let Ok(message) = rx.try_recv() {
        let Ok(Parsed::Rows { contacts, rejects }) = message else {
            continue;
        };
        for contact in &contacts {
            let reparsed = Address::parse(contact.address.as_str()).map(|a| a.as_str().to_owned());
            assert_eq!(
                reparsed.as_deref(),
                Ok(contact.address.as_str()),
                "imported address is not normalised"
            );
            let fields = std::iter::once(contact.address.as_str())
                .chain(contact.name.as_deref())
                .chain(contact.attributes.keys().map(String::as_str))
                .chain(contact.attributes.values().filter_map(|v| v.as_str()));
            for field in fields {
                assert!(!field.contains('\0'), "imported field holds NUL: {field:?}");
            }
        }
        for (line, reason) in &rejects {
            // Not `>= 2`: the csv crate counts a CRLF row one line low (see SECURITY.md).
            assert!(*line >= 1, "rejected line {line} does not exist");
            assert!(
                *line >= last_reject,
                "rejects out of order: {line} after {last_reject}"
            );
            assert!(!reason.is_empty(), "a rejected row needs a reason");
            last_reject = *line;
        }
        rows += u64::try_from(contacts.len() + rejects.len()).unwrap_or(u64::MAX);
    }
    assert!(rows < lines, "{rows} rows counted from {lines} lines");
}

const TWILIO_TOKEN: &str = "fuzz-auth-token-0123456789abcdef";
const TWILIO_URL: &str = "https://herald.example/webhooks/twilio/7/status?x=1";

/// A Twilio status callback or inbound message: form decoding, the `X-Twilio-Signature`
/// check, and the reading the handlers do. Invariants: the signature Herald computes over
/// the decoded form verifies and one under another token does not; the body text is never
/// a valid signature; a receipt has a non-empty provider id; the sender normalisation is
/// idempotent.
pub fn twilio_form(data: &[u8]) {
    let data = bounded(data);
    let Ok(params) = parse_twilio_form(data) else {
        return;
    };
    let signature = twilio_signature(TWILIO_TOKEN, TWILIO_URL, &params);
    assert!(
        verify_twilio(TWILIO_TOKEN, TWILIO_URL, &params, &signature),
        "Herald's own signature does not verify"
    );
    let forged = twilio_signature("another-token", TWILIO_URL, &params);
    assert!(
        !verify_twilio(TWILIO_TOKEN, TWILIO_URL, &params, &forged),
        "a signature under another token verifies"
    );
    let body_as_header = String::from_utf8_lossy(data);
    assert!(
        !verify_twilio(TWILIO_TOKEN, TWILIO_URL, &params, &body_as_header),
        "the body itself verifies as a signature"
    );
    match read_twilio_status(FUZZ_CHANNEL, &params) {
        TwilioStatus::Receipt { receipt, opted_out } => {
            assert!(
                !receipt.provider_id.is_empty(),
                "receipt without a provider id"
            );
            assert!(
                params.iter().any(|(_, v)| *v == receipt.provider_id),
                "receipt id not taken from the form"
            );
            if let Some(to) = opted_out {
                assert!(!to.starts_with("whatsapp:"), "opt-out keeps the prefix");
            }
        }
        TwilioStatus::Unknown(status) => assert!(!status.is_empty()),
        TwilioStatus::Incomplete => {}
    }
    for (name, value) in &params {
        if name == "From" {
            let sender = inbound_sender(value);
            assert_eq!(
                inbound_sender(&sender),
                sender,
                "sender normalisation moves"
            );
        }
        if name == "Body" {
            let _ = keyword(value);
        }
    }
}

const META_SECRET: &str = "fuzz-app-secret";

/// A WhatsApp Cloud API event: the `X-Hub-Signature-256` check and the JSON reading the
/// handler does. Invariants: Herald's own signature over the exact bytes verifies, an
/// upper-case or truncated one does not, the body is never a valid signature; every
/// receipt names a message (non-empty id); senders and opted-out recipients are written
/// with exactly one leading `+`.
pub fn whatsapp_json(data: &[u8]) {
    let data = bounded(data);
    let signature = meta_signature(META_SECRET, data);
    assert!(
        verify_meta(META_SECRET, data, &signature),
        "own signature fails"
    );
    assert!(
        !verify_meta(META_SECRET, data, &signature.to_uppercase()),
        "an upper-case signature verifies"
    );
    assert!(
        !verify_meta(META_SECRET, data, &signature[..signature.len() - 2]),
        "a truncated signature verifies"
    );
    assert!(
        !verify_meta(META_SECRET, data, &String::from_utf8_lossy(data)),
        "the body itself verifies as a signature"
    );
    let Ok(event) = parse_whatsapp_event(FUZZ_CHANNEL, data) else {
        return;
    };
    for receipt in &event.receipts {
        assert!(
            !receipt.provider_id.is_empty(),
            "a status with an empty id became a receipt"
        );
    }
    for (_, wamid) in &event.proven {
        assert!(!wamid.is_empty(), "proof of sending without a wamid");
    }
    let senders = event
        .opted_out
        .iter()
        .chain(event.inbound.iter().map(|(from, _, _)| from));
    for address in senders {
        assert!(
            address.starts_with('+') && !address[1..].starts_with('+'),
            "address {address:?} is not written with one leading +"
        );
    }
}

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Standard Webhooks verification (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
/// then the payload; one per line). Invariants: a request verifies only when its signature
/// header carries the exact entry Herald signs for it, and Herald's own entry verifies.
pub fn standard_webhook(data: &[u8]) {
    let data = bounded(data);
    let mut parts = data.splitn(4, |b| *b == b'\n');
    fn field(part: Option<&[u8]>) -> Option<&str> {
        part.and_then(|p| std::str::from_utf8(p).ok())
    }
    let (id, timestamp, signature) = (
        field(parts.next()),
        field(parts.next()),
        field(parts.next()),
    );
    let payload = parts.next().unwrap_or_default();
    let headers = StandardHeaders {
        id,
        timestamp,
        signature,
    };
    let now = 1_700_000_000;
    let tolerance = Duration::from_secs(300);
    let verified = verify_standard(STANDARD_SECRET, headers, payload, now, tolerance);
    if verified.is_ok() {
        let (Some(id), Some(timestamp), Some(signature)) = (id, timestamp, signature) else {
            panic!("verified without all three headers");
        };
        let timestamp: i64 = timestamp.parse().unwrap_or(i64::MIN);
        let expected = sign_standard(STANDARD_SECRET, id, timestamp, payload);
        assert!(
            expected
                .as_ref()
                .is_ok_and(|e| signature.split(' ').any(|entry| entry == e)),
            "verified without Herald's own entry in {signature:?}"
        );
    }
    if let Some(id) = id {
        let timestamp = timestamp.and_then(|t| t.parse::<i64>().ok()).unwrap_or(now);
        if let Ok(entry) = sign_standard(STANDARD_SECRET, id, timestamp, payload) {
            let own = StandardHeaders {
                id: Some(id),
                timestamp: Some(&timestamp.to_string()),
                signature: Some(&entry),
            };
            assert_eq!(
                verify_standard(STANDARD_SECRET, own, payload, timestamp, tolerance),
                Ok(()),
                "Herald's own signature does not verify"
            );
        }
    }
}

/// A contact address (API, CSV, webhook senders with or without `whatsapp:`). Invariants:
/// what parses is a fixed point of parse ∘ display and fits its kind's form (E.164: `+`
/// and 8 to 15 digits, the first not 0; email: one `@`, at most 254 bytes, lowercase
/// domain); the webhook sender normalisation agrees with it.
pub fn contact_address(data: &[u8]) {
    let Some(input) = text(data) else { return };
    if let Ok(address) = Address::parse(input) {
        let shown = address.to_string();
        assert_eq!(shown, address.as_str());
        assert_eq!(
            Address::parse(&shown),
            Ok(address.clone()),
            "{input:?} parsed to {shown:?}, which does not parse back to itself"
        );
        match address.kind() {
            AddressKind::Phone => {
                let digits = shown.strip_prefix('+').unwrap_or_default();
                assert!(
                    (8..=15).contains(&digits.len())
                        && digits.bytes().all(|b| b.is_ascii_digit())
                        && !digits.starts_with('0'),
                    "{input:?} gave the phone {shown:?}"
                );
            }
            AddressKind::Email => {
                let (local, domain) = shown.split_once('@').unwrap_or_default();
                assert!(
                    !local.is_empty()
                        && !domain.contains('@')
                        && shown.len() <= 254
                        && domain == domain.to_ascii_lowercase(),
                    "{input:?} gave the email {shown:?}"
                );
            }
        }
        assert_eq!(inbound_sender(input), shown);
        assert_eq!(inbound_sender(&format!("whatsapp:{shown}")), shown);
    }
}

/// Polls a future that never waits (the extractors below only read the request) to its end.
fn ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// The query string of `GET /contacts` through the API's own extractor and
/// [`contact_filter`], then the `LIKE` pattern the store binds. Invariants: the search text
/// is trimmed, non-empty and at most 200 characters, and the pattern matches it literally
/// (every `%`, `_` and `\` escaped; only the outer wildcards).
pub fn contact_filter_query(data: &[u8]) {
    let Some(query) = text(data) else { return };
    let Ok(uri) = format!("/api/v1/contacts?{query}").parse::<axum::http::Uri>() else {
        return;
    };
    let Ok(request) = axum::http::Request::builder().uri(uri).body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    let extracted = ready(
        <ApiQuery<ContactQuery> as axum::extract::FromRequestParts<()>>::from_request_parts(
            &mut parts,
            &(),
        ),
    );
    let Some(Ok(ApiQuery(query))) = extracted else {
        return;
    };
    let Ok(filter) = contact_filter(query) else {
        return;
    };
    if let Some(id) = filter.list_id {
        assert!(id.get() > 0, "list id {id} cannot exist");
    }
    let Some(q) = filter.q else { return };
    assert!(
        !q.is_empty() && q.trim() == q,
        "search text {q:?} not trimmed"
    );
    assert!(q.chars().count() <= 200, "search text over 200 characters");
    assert!(!q.contains('\0'), "search text holds NUL");
    let pattern = like_pattern(&q);
    let inner = pattern
        .strip_prefix('%')
        .and_then(|p| p.strip_suffix('%'))
        .unwrap_or_else(|| panic!("pattern {pattern:?} is not %…%"));
    let mut literal = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('%' | '_' | '\\')) => literal.push(escaped),
                other => panic!("pattern {pattern:?} escapes {other:?}"),
            },
            '%' | '_' => panic!("pattern {pattern:?} has an unescaped wildcard from {q:?}"),
            c => literal.push(c),
        }
    }
    assert_eq!(
        literal,
        q.to_lowercase(),
        "pattern does not match the text literally"
    );
}

/// An opaque API id (`cmp_42`). Invariant: one spelling per id, so an id that decodes
/// prints back to exactly the text given, and names a possible row (> 0); the CLI's lenient
/// parse takes that spelling or the bare number, nothing else.
pub fn id(data: &[u8]) {
    let Some(input) = text(data) else { return };
    for (prefix, what) in crate::ids::KINDS {
        if let Ok(row) = decode_id(prefix, what, input) {
            assert!(row > 0, "{input:?} decodes to row {row}");
            assert_eq!(
                encode_id(prefix, row),
                input,
                "{input:?} is accepted as another spelling of {prefix}_{row}"
            );
        }
        if let Some(row) = crate::ids::parse_lenient(prefix, input) {
            assert!(row > 0, "{input:?} reads as row {row}");
            assert!(
                input == encode_id(prefix, row) || input == row.to_string(),
                "{input:?} is read as another spelling of {prefix}_{row}"
            );
        }
    }
}

/// A page cursor (`?cursor=`). Invariants: what decodes is a usable position (>= 0), and a
/// cursor Herald issues decodes to its position.
pub fn page_cursor(data: &[u8]) {
    let Some(input) = text(data) else { return };
    let page = |cursor: String| PageParams {
        cursor: Some(cursor),
        limit: None,
    };
    if let Ok(after) = page(input.to_owned()).after() {
        assert!(after >= 0, "{input:?} decodes to position {after}");
        assert_eq!(page(cursor_after(after)).after().ok(), Some(after));
    }
}

const UNSUBSCRIBE_KEY: &str = "fuzz-secret-key";

/// A one-click unsubscribe token (`<message id>.<mac>`). Invariants: a token verifies only
/// in the exact spelling Herald issued; any other spelling of the same message id with the
/// genuine MAC (which a fuzzer cannot forge, so it is built here) is refused.
pub fn unsubscribe_token(data: &[u8]) {
    let Some(input) = text(data) else { return };
    if let Some(id) = unsubscribe::verify(UNSUBSCRIBE_KEY, input) {
        assert_eq!(
            unsubscribe::token(UNSUBSCRIBE_KEY, id).as_deref(),
            Some(input),
            "{input:?} verifies as another spelling of message {id}"
        );
    }
    // The id part read leniently (sign, zeros, spaces) picks the message whose genuine MAC
    // is attached: the verifier must still insist on the canonical spelling.
    let id_text = input.split_once('.').map_or(input, |(id, _)| id);
    let Ok(id) = id_text.trim().parse::<i64>().map(MessageId) else {
        return;
    };
    let Some(genuine) = unsubscribe::token(UNSUBSCRIBE_KEY, id) else {
        return;
    };
    let Some((_, mac)) = genuine.split_once('.') else {
        return;
    };
    let respelled = format!("{id_text}.{mac}");
    let verified = unsubscribe::verify(UNSUBSCRIBE_KEY, &respelled);
    if respelled == genuine {
        assert_eq!(
            verified,
            Some(id),
            "the genuine token {genuine:?} is refused"
        );
    } else {
        assert_eq!(
            verified, None,
            "{respelled:?} verifies as another spelling of {genuine:?}"
        );
    }
}

/// A tracked link's code (`/l/{code}`) and a `link("…")` target. Invariants: a code decodes
/// only in the exact spelling Herald issues for what it decodes to, and checking a target
/// never panics and accepts only what can be a Location header.
pub fn tracked_link(data: &[u8]) {
    let Some(input) = text(data) else { return };
    let Some(signer) = LinkSigner::new(Some("https://go.example"), Some(UNSUBSCRIBE_KEY)) else {
        return;
    };
    if let Some((id, position)) = signer.decode(input) {
        assert_eq!(
            signer.code(id, position).as_deref(),
            Some(input),
            "{input:?} decodes as another spelling of message {id}, link {position}"
        );
    }
    if crate::tracked_links::check_target(input).is_ok() {
        assert!(
            axum::http::HeaderValue::from_str(input).is_ok(),
            "{input:?} passed the target check but is no Location header"
        );
    }
}

const POSTMARK_TOKEN: &str = "fuzz-postmark-token";
/// A P-256 verification key as SendGrid shows one; its private key was thrown away, so no
/// input carries a signature it verifies.
const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEtxk/tEwu8uVg0KXKr0kNCINPhrf0\
                            ZKp3CO8x/bZ80Rfr237uG+lcMBIlNdAcyIZAi94uomKEcUmjO8iCE+33pQ==";
/// The channel setting for tests against a local SNS double.
const SNS_TEST_PREFIX: &str = "http://127.0.0.1:4010/";

/// An email provider's feedback webhook (Amazon SNS carrying Amazon SES, Postmark,
/// SendGrid) and the checks of who sent it. Invariants: every [`EmailFeedback`] has a
/// trimmed recipient, a one-line detail of at most [`MAX_DETAIL_CHARS`] characters that
/// starts with its kind, and a Message-ID that is `None` or in angle brackets within
/// [`MAX_MESSAGE_ID_LEN`]; lists stay within their limits; an accepted certificate or
/// subscription URL is https to an Amazon SNS host as a URL parser reads it (or under the
/// test prefix, which fixes nothing without its `/`); the Postmark check accepts one token
/// per header; no SendGrid signature verifies without the key.
pub fn email_feedback(data: &[u8]) {
    let data = bounded(data);
    let lossy = String::from_utf8_lossy(data);
    if let Ok((envelope, signed)) = parse_sns(data) {
        assert!(matches!(signed.version, 1 | 2), "{signed:?}");
        assert!(!signed.signature.is_empty(), "{signed:?}");
        let topic = format!("TopicArn\n{}\n", envelope.topic_arn());
        assert!(
            signed.string_to_sign.contains(&topic),
            "the topic {:?} is not signed: {signed:?}",
            envelope.topic_arn()
        );
        sns_url_is_sound(
            &signed.signing_cert_url,
            check_sns_cert_url,
            "SigningCertURL",
        );
        // The body read as the certificate: PEM and X.509 reading of any bytes never panics.
        let _ = verify_sns(&signed, data);
        match &envelope {
            SnsEnvelope::SubscriptionConfirmation { subscribe_url, .. } => {
                sns_url_is_sound(subscribe_url, check_sns_subscribe_url, "SubscribeURL");
            }
            SnsEnvelope::Notification { message, .. } => {
                feedback_is_sound(parse_ses(message), MAX_SES_RECIPIENTS);
            }
            SnsEnvelope::UnsubscribeConfirmation { .. } => {}
        }
    }
    feedback_is_sound(parse_ses(&lossy), MAX_SES_RECIPIENTS);
    feedback_is_sound(parse_postmark(data), 1);
    feedback_is_sound(parse_sendgrid(data), MAX_SENDGRID_EVENTS);

    sns_url_is_sound(&lossy, check_sns_cert_url, "SigningCertURL");
    if check_sns_cert_url(&lossy, None).is_ok() {
        assert!(
            lossy.ends_with(".pem") && !lossy.contains(['?', '#']),
            "SigningCertURL {lossy:?} accepted with a query, fragment or no .pem"
        );
    }
    sns_url_is_sound(&lossy, check_sns_subscribe_url, "SubscribeURL");

    if check_postmark_auth(Some(&lossy), POSTMARK_TOKEN).is_ok() {
        assert!(
            check_postmark_auth(Some(&lossy), "another-token").is_err(),
            "{lossy:?} passes for two tokens"
        );
    }
    assert!(
        check_postmark_auth(Some(&lossy), "").is_err(),
        "{lossy:?} passes for a channel without a token"
    );

    // Signature, then timestamp, one per line; the body is the whole input.
    let mut lines = lossy.lines();
    let (signature, timestamp) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    assert!(
        verify_sendgrid(SENDGRID_KEY, signature, timestamp, data).is_err(),
        "a SendGrid signature made without the key verifies"
    );
    assert!(
        verify_sendgrid(SENDGRID_KEY, &lossy, &lossy, data).is_err(),
        "a SendGrid signature made without the key verifies"
    );
    // The input as the key: the key's own checks, never a panic.
    let _ = check_sendgrid_key(&lossy);
    let _ = verify_sendgrid(&lossy, signature, timestamp, data);
}

/// The parsers' promises about each [`EmailFeedback`] they return.
fn feedback_is_sound(parsed: Result<Vec<EmailFeedback>, FeedbackError>, max: usize) {
    let Ok(feedback) = parsed else { return };
    assert!(
        feedback.len() <= max,
        "{} feedback entries, over {max}",
        feedback.len()
    );
    for f in &feedback {
        let detail = &f.detail;
        assert!(
            detail.chars().count() <= MAX_DETAIL_CHARS,
            "detail over {MAX_DETAIL_CHARS} characters: {f:?}"
        );
        assert!(
            detail
                .chars()
                .all(|c| c == ' ' || !(c.is_whitespace() || c.is_control())),
            "detail is not one line: {f:?}"
        );
        let label = match f.kind {
            FeedbackKind::Delivered => "delivered",
            FeedbackKind::HardBounce => "hard bounce",
            FeedbackKind::SoftBounce => "soft bounce",
            FeedbackKind::Complaint => "complaint",
            FeedbackKind::Dropped => "dropped",
        };
        assert!(
            detail.starts_with(label),
            "detail does not say {label}: {f:?}"
        );
        assert!(
            !f.recipient.is_empty() && f.recipient.trim() == f.recipient,
            "recipient empty or not trimmed: {f:?}"
        );
        if let Some(id) = &f.message_id {
            let inner = id.strip_prefix('<').and_then(|i| i.strip_suffix('>'));
            assert!(
                id.len() <= MAX_MESSAGE_ID_LEN
                    && inner.is_some_and(|i| {
                        !i.is_empty()
                            && i.bytes()
                                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
                    }),
                "message id {id:?} is not one Herald could have sent: {f:?}"
            );
        }
    }
}

/// Whether `url` is fetched from an Amazon SNS host, `https://sns.<region>.amazonaws.com`
/// or `….com.cn`, as a WHATWG URL parser (reqwest's) reads it: the authority ends at the
/// first `/`, `?`, `#` or `\`, and an authority that is exactly such a host has no user
/// and no port. Written apart from `email_feedback`'s own check, to hold it to account.
fn fetched_from_sns(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    let region = authority.strip_prefix("sns.").and_then(|r| {
        r.strip_suffix(".amazonaws.com")
            .or_else(|| r.strip_suffix(".amazonaws.com.cn"))
    });
    url.bytes().all(|b| b.is_ascii_graphic())
        && region.is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

type UrlCheck = fn(&str, Option<&str>) -> Result<(), FeedbackError>;

/// An SNS URL check accepts only what is fetched from Amazon SNS, or with the test prefix
/// also what starts with it; a prefix without its trailing `/` adds nothing.
fn sns_url_is_sound(url: &str, check: UrlCheck, what: &str) {
    let aws = check(url, None).is_ok();
    if aws {
        assert!(
            fetched_from_sns(url),
            "{what} {url:?} accepted, but not fetched from an Amazon SNS host"
        );
    }
    if check(url, Some(SNS_TEST_PREFIX)).is_ok() {
        assert!(
            aws || url.starts_with(SNS_TEST_PREFIX),
            "{what} {url:?} accepted under the test prefix {SNS_TEST_PREFIX:?}"
        );
    }
    let unbounded = SNS_TEST_PREFIX.trim_end_matches('/');
    if check(url, Some(unbounded)).is_ok() {
        assert!(
            aws,
            "{what} {url:?} accepted under the test prefix {unbounded:?}, which has no `/`"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    /// Per target, in `cargo test`: enough to catch a regression on the checked-in
    /// inputs and their near neighbours without loading CI's two cores.
    const ITERATIONS: usize = 3000;
    const BUDGET: Duration = Duration::from_millis(1500);

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// The files of `fuzz/<kind>/<target>/`, sorted by name.
    fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
            .collect()
    }

    /// Runs one input, turning a panic into an error that shows the input.
    fn run(entry: super::Entry, input: &[u8]) -> Result<(), String> {
        std::panic::catch_unwind(|| entry(input)).map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            format!("{message}\n  input: {:?}", String::from_utf8_lossy(input))
        })
    }

    #[test]
    fn every_target_has_seeds() {
        for (name, _) in TARGETS {
            assert!(
                inputs("corpus", name).len() >= 3,
                "fuzz/corpus/{name}/ needs a handful of seeds"
            );
        }
    }

    #[test]
    fn checked_in_inputs_replay_clean() {
        let mut failures = Vec::new();
        for (name, entry) in TARGETS {
            for kind in ["corpus", "artifacts"] {
                for (path, input) in inputs(kind, name) {
                    if let Err(e) = run(entry, &input) {
                        failures.push(format!("{}: {e}", path.display()));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Found by `csv_row`: the row after a header, unreadable (not UTF-8), was reported
    /// as line 3 (the position before a read is the previous record's end).
    #[test]
    fn unreadable_csv_row_is_reported_on_its_own_line() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let csv = b"address,name\n+1415555\xff0100,Ada\n+14155550101,Grace\n".to_vec();
        crate::import::parse(std::io::Cursor::new(csv), "t.csv", &tx);
        drop(tx);
        let mut rejected = Vec::new();
        while let Ok(message) = rx.try_recv() {
            if let Ok(crate::import::Parsed::Rows { rejects, .. }) = message {
                rejected.extend(rejects.into_iter().map(|(line, _)| line));
            }
        }
        assert_eq!(rejected, [2]);
    }

    /// One random edit of `input`, sometimes splicing in part of another seed.
    fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        const INTERESTING: [&[u8]; 12] = [
            b"0", b"+", b"%", b"_", b"\\", b"\0", b"{{", b"}}", b"\"", b",", b"\n", b"\xff",
        ];
        let at = |rng: &mut StdRng, len: usize| rng.random_range(0..=len);
        match rng.random_range(0..6) {
            0 if !input.is_empty() => {
                let i = rng.random_range(0..input.len());
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = at(rng, input.len());
                input.insert(i, rng.random());
            }
            2 if !input.is_empty() => {
                let start = rng.random_range(0..input.len());
                let end = (start + rng.random_range(1..8)).min(input.len());
                input.drain(start..end);
            }
            3 => {
                let i = at(rng, input.len());
                let token = INTERESTING[rng.random_range(0..INTERESTING.len())];
                input.splice(i..i, token.iter().copied());
            }
            4 if !seeds.is_empty() => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let start = at(rng, other.len());
                let end = (start + rng.random_range(0..32)).min(other.len());
                let i = at(rng, input.len());
                input.splice(i..i, other[start..end].iter().copied());
            }
            _ if input.len() > 1 => {
                // Repeat a slice: lengths and counts are where limits break.
                let start = rng.random_range(0..input.len());
                let end = (start + rng.random_range(1..8)).min(input.len());
                let piece = input[start..end].to_vec();
                input.splice(end..end, piece);
            }
            _ => input.push(rng.random()),
        }
    }

    /// Bounded random mutation of the seeds of every target. The seed is printed; set
    /// HERALD_FUZZ_SEED to replay a failure exactly.
    #[test]
    fn mutated_seeds_keep_every_invariant() {
        let seed = std::env::var("HERALD_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| rand::rng().random());
        println!("fuzz mutation seed: {seed} (replay with HERALD_FUZZ_SEED={seed})");
        let mut failures = Vec::new();
        for (name, entry) in TARGETS {
            let seeds: Vec<Vec<u8>> = inputs("corpus", name).into_iter().map(|(_, b)| b).collect();
            let mut rng = StdRng::seed_from_u64(seed ^ fxhash(name));
            let started = Instant::now();
            let mut runs = 0;
            while runs < ITERATIONS && started.elapsed() < BUDGET {
                let mut input = seeds
                    .get(rng.random_range(0..seeds.len().max(1)))
                    .cloned()
                    .unwrap_or_default();
                for _ in 0..rng.random_range(1..6) {
                    mutate(&mut rng, &mut input, &seeds);
                }
                if let Err(e) = run(entry, &input) {
                    failures.push(format!("{name} (seed {seed}, run {runs}): {e}"));
                    break;
                }
                runs += 1;
            }
            println!("{name}: {runs} mutated inputs in {:?}", started.elapsed());
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// A stable per-target offset of the seed, so targets do not share a random stream.
    fn fxhash(name: &str) -> u64 {
        name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }
}
