//! What a failure means to the person running a campaign, in one line, and what to do
//! about it. The engine stores a message's error as the provider (or the network) said it:
//! `twilio 30003: Unreachable destination handset`, `whatsapp 131026/2494010: …`,
//! `smtp RCPT TO: permanent error (550): …`, `twilio: could not connect: … Connection
//! refused`. [`explain`] reads that text and returns a stable [`Explanation::code`] (the key
//! failures are grouped by), a readable [`Explanation::reason`] and an
//! [`Explanation::action`]; the raw text stays available as the detail.
//!
//! One table per provider, here only: the API's message items and failure groups and the
//! dashboard's campaign page all read it. Codes follow `tests/contracts/PROVIDERS.md` §1.5
//! (Twilio) and §2.6 (WhatsApp), and the SMTP reply codes of RFC 5321. A code not in a
//! table gets a generic sentence that names it.

use crate::domain::MessageStatus;
use serde::Serialize;

/// A failure explained for a reader who is not an engineer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Stable key: `twilio.30003`, `whatsapp.131026`, `smtp.550`, `network.refused`,
    /// `http.503`, `suppressed`, `template`, `other`, …
    pub code: String,
    /// What happened, in one line.
    pub reason: String,
    /// What to do about it.
    pub action: String,
}

fn explanation(code: String, reason: impl Into<String>, action: impl Into<String>) -> Explanation {
    Explanation {
        code,
        reason: reason.into(),
        action: action.into(),
    }
}

const NOTHING_RETRIED: &str = "Nothing to do: Herald retries it later.";
const SLOWER: &str = "Herald retries it later; if it keeps happening, lower the channel's rate.";
const FIX_CHANNEL: &str = "Fix the channel's settings, then resume the campaign.";

/// Twilio error codes (`tests/contracts/PROVIDERS.md` §1.5).
fn twilio(code: i64) -> (String, String) {
    let (reason, action): (&str, &str) = match code {
        20003 => (
            "Twilio refused the channel's credentials",
            "Check the channel's Account SID and auth token, then resume the campaign.",
        ),
        20429 | 14107 => ("Twilio's rate limit for the account was reached", SLOWER),
        21211 => (
            "Invalid phone number",
            "Correct the contact's number; Herald does not retry it.",
        ),
        21408 => (
            "The Twilio account may not send to this country or region",
            "Enable the region in Twilio's geographic permissions, then send again.",
        ),
        21610 => (
            "Recipient replied STOP: they unsubscribed",
            "Nothing to do: the address is on the suppression list and is not messaged again.",
        ),
        21612 => (
            "Twilio cannot route a message from this sender to this number",
            "Check the number, or use a sender that can reach it.",
        ),
        21614 => (
            "This number cannot receive SMS (a landline, for example)",
            "Use a mobile number for this contact.",
        ),
        21212 | 21606 => (
            "The channel's sender number cannot send SMS or is not on this Twilio account",
            FIX_CHANNEL,
        ),
        21611 => (
            "The sender's queue at Twilio is full (more than 10 hours of messages)",
            SLOWER,
        ),
        30001 => (
            "Queue overflow: the message waited too long at Twilio",
            SLOWER,
        ),
        30002 => (
            "The Twilio account is suspended",
            "Contact Twilio support, then resume the campaign.",
        ),
        30003 => (
            "Unreachable handset: the phone is off or out of coverage; retried later",
            "Nothing to do; if it persists the number may be inactive.",
        ),
        30004 => (
            "Message blocked by the recipient or their carrier",
            "Do not send to this contact again.",
        ),
        30005 => (
            "Unknown or inactive number",
            "Remove or correct the contact's number.",
        ),
        30006 => (
            "Landline or unreachable carrier",
            "Use a mobile number for this contact.",
        ),
        30007 => (
            "Filtered as spam by the carrier",
            "Review the message content and the sender's registration (A2P 10DLC, toll-free verification).",
        ),
        30008 => (
            "Unknown error at the carrier",
            "Herald retries it; if it persists, ask Twilio support about the message id.",
        ),
        30034 => (
            "The US sender number is not registered for A2P 10DLC",
            "Register the number's campaign with Twilio, then resume.",
        ),
        _ => {
            return (
                format!("Twilio refused the message (error {code})"),
                format!("Look the code up at https://www.twilio.com/docs/errors/{code}."),
            );
        }
    };
    (reason.to_string(), action.to_string())
}

/// WhatsApp Cloud API error codes (`tests/contracts/PROVIDERS.md` §2.6).
fn whatsapp(code: i64) -> (String, String) {
    const TEMPLATE: &str =
        "Check the template's name, language and parameters in WhatsApp Manager, then resume.";
    const TOKEN: &str = "Give the channel a valid access token, then resume the campaign.";
    let (reason, action): (&str, &str) = match code {
        131026 => (
            "Undeliverable: the number is not on WhatsApp or cannot receive this message",
            "Reach this contact through another channel.",
        ),
        131047 => (
            "More than 24 hours since the contact last wrote: only a template message may be sent",
            "Send an approved message template instead.",
        ),
        131049 => (
            "Meta chose not to deliver this marketing message (per-user limit)",
            "Do not send it again within 24 hours.",
        ),
        131050 => (
            "The recipient stopped marketing messages",
            "Nothing to do: the address is on the suppression list.",
        ),
        131051 => (
            "WhatsApp does not support this message type",
            "Change the message, or report it as a Herald bug.",
        ),
        131048 => (
            "Too many recent messages were blocked or reported as spam",
            "Review the content and the audience before sending more.",
        ),
        130429 => ("WhatsApp's throughput limit was reached", SLOWER),
        131056 => (
            "Too many messages to this recipient in a short time",
            NOTHING_RETRIED,
        ),
        131057 => ("The WhatsApp account is in maintenance", NOTHING_RETRIED),
        131000 | 131016 | 1 | 2 => ("WhatsApp had a temporary problem", NOTHING_RETRIED),
        4 | 80007 => ("WhatsApp's API call limit was reached", SLOWER),
        130472 => (
            "The recipient is part of a Meta experiment and was not sent the message",
            "Nothing to do.",
        ),
        131021 => (
            "The recipient is the sender's own number",
            "Remove this contact from the list.",
        ),
        131052 | 131053 => (
            "WhatsApp could not download or upload the message's media",
            "Check that the media URL is public and in a supported format.",
        ),
        100 | 131008 | 131009 => (
            "WhatsApp refused a parameter of the message",
            "Check the message and the contact's data.",
        ),
        132000..=132016 => ("The WhatsApp message template is misconfigured", TEMPLATE),
        190 | 0 => ("The WhatsApp access token is expired or invalid", TOKEN),
        10 | 200..=299 => ("The WhatsApp access token lacks a permission", TOKEN),
        131031 => (
            "The WhatsApp business account is locked",
            "Resolve it in WhatsApp Manager, then resume.",
        ),
        131042 => (
            "The WhatsApp business account has a payment problem",
            "Fix the payment method in WhatsApp Manager, then resume.",
        ),
        368 => (
            "Meta blocked the account for a policy violation",
            "Review the account's status in WhatsApp Manager.",
        ),
        133010 => (
            "The business phone number is not registered with WhatsApp",
            "Register the number, then resume.",
        ),
        _ => {
            return (
                format!("WhatsApp refused the message (error {code})"),
                format!(
                    "Look the code up in Meta's WhatsApp Cloud API error codes (error {code})."
                ),
            );
        }
    };
    (reason.to_string(), action.to_string())
}

/// SMTP reply codes (RFC 5321).
fn smtp(code: i64) -> (String, String) {
    let (reason, action): (&str, &str) = match code {
        550 => (
            "The mail server refused the address: mailbox unknown or unavailable",
            "Check the email address; remove it if it keeps bouncing.",
        ),
        551 => (
            "The mail server does not accept mail for this address (user not local)",
            "Check the email address.",
        ),
        552 => (
            "Mailbox full, or the message is too large",
            "Try again later, or shorten the message.",
        ),
        553 => (
            "The mail server refused the address as invalid",
            "Correct the email address.",
        ),
        554 => (
            "The mail server rejected the message (often spam or policy)",
            "Check the content and the sending domain's SPF, DKIM and DMARC records.",
        ),
        421 => ("The mail server is unavailable right now", NOTHING_RETRIED),
        450 => (
            "The mailbox is temporarily unavailable (greylisting, for example)",
            NOTHING_RETRIED,
        ),
        451 => ("The mail server had a local error", NOTHING_RETRIED),
        452 => (
            "The mail server is out of storage or refused more recipients",
            NOTHING_RETRIED,
        ),
        530 | 535 => (
            "The mail server refused the channel's login",
            "Check the SMTP username and password, then resume the campaign.",
        ),
        _ => {
            let kind = if (400..500).contains(&code) {
                "temporarily refused"
            } else {
                "refused"
            };
            return (
                format!("The mail server {kind} the message (reply {code})"),
                "See the server's reply in the detail.".to_string(),
            );
        }
    };
    (reason.to_string(), action.to_string())
}

/// The number right after `prefix` (at a word start) anywhere in `raw`, e.g. `30003` in
/// `gave up after 3 attempts: twilio 30003: …`.
fn number_after(raw: &str, prefix: &str) -> Option<i64> {
    let mut rest = raw;
    while let Some(at) = rest.find(prefix) {
        let word_start = at == 0 || !rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric());
        let after = &rest[at + prefix.len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if word_start && !digits.is_empty() && digits.len() <= 9 {
            return digits.parse().ok();
        }
        rest = after;
    }
    None
}

/// How the network failed, when the provider was never reached (or its answer was lost).
fn network(lower: &str) -> Option<(&'static str, &'static str)> {
    let table: &[(&[&str], &str, &str)] = &[
        (&["connection refused"], "refused", "connection refused"),
        (
            &[
                "dns error",
                "failed to lookup",
                "name or service not known",
                "no such host",
                "nodename nor servname",
                "temporary failure in name resolution",
            ],
            "dns",
            "its address could not be resolved (DNS)",
        ),
        (
            &["certificate", "tls", "ssl", "handshake"],
            "tls",
            "the secure connection (TLS) failed",
        ),
        (
            &["connection reset", "broken pipe", "connection aborted"],
            "reset",
            "the connection was cut",
        ),
        (
            &[
                "network is unreachable",
                "no route to host",
                "host is unreachable",
            ],
            "unreachable",
            "no network route to it",
        ),
        (
            &[
                "connecting timed out",
                "could not connect",
                "connect timeout",
            ],
            "connect",
            "the connection could not be opened in time",
        ),
    ];
    table
        .iter()
        .find(|(needles, _, _)| needles.iter().any(|n| lower.contains(n)))
        .map(|(_, key, what)| (*key, *what))
}

/// The failure a message shows in its status, explained: none for a message that reached
/// its recipient (an earlier attempt's failure is history, not its state) or that has no
/// error text. The API's message items, the dashboard and the export all read it here.
pub fn shown(status: MessageStatus, raw: Option<&str>) -> Option<Explanation> {
    let raw = raw.filter(|r| !r.trim().is_empty())?;
    if matches!(
        status,
        MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read
    ) {
        return None;
    }
    Some(explain(raw))
}

/// Explains a message's stored error text. Never fails: text nothing recognises is
/// `other`, with a generic sentence (the detail keeps the text).
pub fn explain(raw: &str) -> Explanation {
    let lower = raw.to_lowercase();
    if lower.starts_with("suppressed") {
        return explanation(
            "suppressed".into(),
            "Not sent: the address is on the suppression list",
            "Nothing to do; remove the address from the suppression list only if the contact asked to be messaged again.",
        );
    }
    if lower.contains("campaign cancelled") {
        return explanation(
            "cancelled".into(),
            "Not sent: the campaign was cancelled",
            "Nothing to do.",
        );
    }
    if let Some(code) = number_after(&lower, "twilio ") {
        let (reason, action) = twilio(code);
        return explanation(format!("twilio.{code}"), reason, action);
    }
    if let Some(code) = number_after(&lower, "whatsapp ") {
        let (reason, action) = whatsapp(code);
        return explanation(format!("whatsapp.{code}"), reason, action);
    }
    if lower.contains("smtp") {
        let code = number_after(&lower, "permanent error (")
            .or_else(|| number_after(&lower, "transient error ("));
        if let Some(code) = code {
            let (reason, action) = smtp(code);
            return explanation(format!("smtp.{code}"), reason, action);
        }
    }
    // An email provider's bounce report (crates/herald-core/src/email_feedback.rs labels
    // its detail with the kind).
    if lower.starts_with("hard bounce:") {
        return explanation(
            "email.hard_bounce".into(),
            "The recipient's mail server refused the address (hard bounce)",
            "Nothing to do: the address is now on the suppression list; correct it on the contact if it was mistyped.",
        );
    }
    if lower.starts_with("soft bounce:") {
        return explanation(
            "email.soft_bounce".into(),
            "The recipient's mail server could not take the message for now (soft bounce)",
            "Nothing to do unless it repeats: a full mailbox or a busy server usually clears.",
        );
    }
    if lower.starts_with("dropped:") {
        return explanation(
            "email.dropped".into(),
            "The email provider did not send the message",
            "See the detail for the provider's reason, then check the provider's account.",
        );
    }
    if lower.starts_with("template:") {
        return explanation(
            "template".into(),
            "The message template could not be filled in for this contact",
            "Check the template's placeholders against the contact's attributes.",
        );
    }
    if lower.starts_with("channel:") {
        return explanation(
            "channel".into(),
            "The campaign's channel could not be used",
            FIX_CHANNEL,
        );
    }
    if lower.contains("simulated transient failure") {
        return explanation(
            "sandbox.transient".into(),
            "Simulated temporary failure (sandbox channel)",
            NOTHING_RETRIED,
        );
    }
    if lower.contains("simulated permanent failure") {
        return explanation(
            "sandbox.permanent".into(),
            "Simulated permanent failure (sandbox channel)",
            "Nothing to do: the sandbox fails a share of messages on purpose.",
        );
    }
    if lower.contains("in doubt") {
        return explanation(
            "in_doubt".into(),
            "Herald could not confirm whether the provider received the message",
            "Check the provider's log for this recipient before sending again.",
        );
    }
    if let Some((key, what)) = network(&lower) {
        return explanation(
            format!("network.{key}"),
            format!("Herald could not reach the provider: {what}"),
            "Check the channel's address and the provider's status; Herald retries while it can.",
        );
    }
    if lower.contains("no answer")
        || lower.contains("timed out")
        || lower.contains("answer was lost")
    {
        return explanation(
            "network.timeout".into(),
            "The provider did not answer in time; it may have the message",
            "Check the provider's status; Herald finds out whether it has the message before sending again.",
        );
    }
    if let Some(status) = number_after(&lower, "unexpected answer (http ") {
        let (reason, action) = match status {
            401 | 403 => (
                "The provider refused the channel's credentials",
                "Check the channel's credentials, then resume the campaign.",
            ),
            429 => ("The provider's rate limit was reached", SLOWER),
            500..=599 => (
                "The provider had a problem on its side",
                "Check the provider's status page; Herald retries while it can.",
            ),
            _ => (
                "The provider refused the request",
                "Check the channel's address and settings.",
            ),
        };
        return explanation(
            format!("http.{status}"),
            format!("{reason} (HTTP {status})"),
            action,
        );
    }
    explanation(
        "other".into(),
        "The message could not be sent",
        "See the detail for what the provider or Herald said.",
    )
}

/// Errors grouped by explanation: `(error text, count)` rows in, one `(explanation, count)`
/// per code out, the largest first (ties by code). Texts that explain to the same code
/// (one code, different provider wording or recipients) are one group.
pub fn group<I>(rows: I) -> Vec<(Explanation, i64)>
where
    I: IntoIterator<Item = (Option<String>, i64)>,
{
    let mut groups: std::collections::BTreeMap<String, (Explanation, i64)> = Default::default();
    for (text, count) in rows {
        let e = match text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => explain(t),
            None => explanation(
                "unknown".into(),
                "No reason was recorded",
                "See the campaign's audit trail.",
            ),
        };
        groups
            .entry(e.code.clone())
            .and_modify(|g| g.1 += count)
            .or_insert((e, count));
    }
    let mut out: Vec<(Explanation, i64)> = groups.into_values().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.code.cmp(&b.0.code)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(raw: &str) -> String {
        explain(raw).code
    }

    #[test]
    fn twilio_codes_read_as_sentences() {
        let e = explain("twilio 30003: Unreachable destination handset");
        assert_eq!(e.code, "twilio.30003");
        assert_eq!(
            e.reason,
            "Unreachable handset: the phone is off or out of coverage; retried later"
        );
        // An asynchronous failure carries only the code.
        assert_eq!(
            explain("twilio 21610").reason,
            "Recipient replied STOP: they unsubscribed"
        );
        // The engine's wrappers do not hide the code.
        assert_eq!(
            code(
                "opted out at the provider: twilio 21610: Attempt to send to unsubscribed recipient"
            ),
            "twilio.21610"
        );
        assert_eq!(
            code("gave up after 3 attempts: twilio 20429: Too Many Requests"),
            "twilio.20429"
        );
        for (c, words) in [
            (21211, "Invalid phone number"),
            (21408, "region"),
            (21612, "route"),
            (30005, "inactive"),
            (30006, "Landline"),
            (30007, "spam"),
            (30008, "Unknown error"),
            (20003, "credentials"),
            (14107, "rate limit"),
        ] {
            let e = explain(&format!("twilio {c}: whatever Twilio said"));
            assert_eq!(e.code, format!("twilio.{c}"));
            assert!(e.reason.contains(words), "{c}: {}", e.reason);
            assert!(!e.action.is_empty());
        }
        let unknown = explain("twilio 12345: Something new");
        assert_eq!(unknown.code, "twilio.12345");
        assert_eq!(unknown.reason, "Twilio refused the message (error 12345)");
        assert!(unknown.action.contains("twilio.com/docs/errors/12345"));
    }

    #[test]
    fn whatsapp_codes_read_as_sentences() {
        let e = explain("whatsapp 131026/2494010: Message undeliverable (More detail.)");
        assert_eq!(e.code, "whatsapp.131026");
        assert!(e.reason.starts_with("Undeliverable"), "{}", e.reason);
        for (c, words) in [
            (131047, "24 hours"),
            (131049, "marketing"),
            (131051, "message type"),
            (130429, "throughput"),
            (190, "access token"),
            (0, "access token"),
            (368, "policy"),
            (132001, "template"),
        ] {
            let e = explain(&format!("whatsapp {c}: text"));
            assert_eq!(e.code, format!("whatsapp.{c}"));
            assert!(e.reason.contains(words), "{c}: {}", e.reason);
        }
        assert_eq!(
            explain("whatsapp 424242: Brand new").reason,
            "WhatsApp refused the message (error 424242)"
        );
        // `whatsapp:` with no code is not a code.
        assert_eq!(
            code("whatsapp: unexpected answer (HTTP 500, no content type, 8 bytes)"),
            "http.500"
        );
    }

    #[test]
    fn smtp_replies_read_as_sentences() {
        let e =
            explain("smtp RCPT TO: permanent error (550): 5.1.1 <bob@example.com>: user unknown");
        assert_eq!(e.code, "smtp.550");
        assert!(e.reason.contains("mailbox unknown"), "{}", e.reason);
        for (c, words) in [
            (551, "not local"),
            (552, "full"),
            (553, "invalid"),
            (554, "rejected"),
            (421, "unavailable"),
            (450, "temporarily"),
            (451, "local error"),
            (452, "storage"),
        ] {
            let kind = if c < 500 { "transient" } else { "permanent" };
            let e = explain(&format!("smtp DATA: {kind} error ({c}): text"));
            assert_eq!(e.code, format!("smtp.{c}"));
            assert!(e.reason.contains(words), "{c}: {}", e.reason);
        }
        assert_eq!(
            explain("smtp content: permanent error (557): odd").reason,
            "The mail server refused the message (reply 557)"
        );
        assert_eq!(
            explain("smtp MAIL FROM: transient error (459): odd").reason,
            "The mail server temporarily refused the message (reply 459)"
        );
    }

    #[test]
    fn transport_failures_say_the_provider_was_not_reached() {
        let e = explain(
            "twilio: could not connect: error sending request for url (http://127.0.0.1:9/2010-04-01/Accounts/AC1/Messages.json): client error (Connect): tcp connect error: Connection refused (os error 111)",
        );
        assert_eq!(e.code, "network.refused");
        assert_eq!(
            e.reason,
            "Herald could not reach the provider: connection refused"
        );
        assert_eq!(
            code(
                "whatsapp: could not connect: dns error: failed to lookup address information: Name or service not known"
            ),
            "network.dns"
        );
        assert_eq!(
            code("twilio: could not connect: invalid peer certificate: UnknownIssuer"),
            "network.tls"
        );
        assert_eq!(
            code("smtp mail.example.com:587 connect: Connection refused (os error 111)"),
            "network.refused"
        );
        assert_eq!(
            code("smtp mail.example.com:587: connecting timed out"),
            "network.connect"
        );
        assert_eq!(
            code("twilio: the answer was lost: connection reset by peer"),
            "network.reset"
        );
        assert_eq!(
            code("twilio: no answer in time after the request was sent: operation timed out"),
            "network.timeout"
        );
        assert_eq!(
            code("twilio: unexpected answer (HTTP 503, text/html, 120 bytes)"),
            "http.503"
        );
        assert!(
            explain("twilio: unexpected answer (HTTP 401, no content type, 0 bytes)")
                .reason
                .contains("credentials")
        );
    }

    #[test]
    fn herald_own_reasons() {
        assert_eq!(
            code("sandbox: simulated transient failure (503)"),
            "sandbox.transient"
        );
        assert_eq!(
            code("gave up after 3 attempts: sandbox: simulated transient failure (503)"),
            "sandbox.transient"
        );
        assert_eq!(
            code("sandbox: simulated permanent failure for +15550000001"),
            "sandbox.permanent"
        );
        assert_eq!(code("suppressed: STOP keyword"), "suppressed");
        assert_eq!(code("suppressed before sending: complained"), "suppressed");
        assert_eq!(code("campaign cancelled"), "cancelled");
        assert_eq!(code("template: unknown placeholder `x`"), "template");
        assert_eq!(
            code("in doubt after its last allowed attempt (retry_max_attempts); not resent"),
            "in_doubt"
        );
        let other = explain("something nobody foresaw");
        assert_eq!(other.code, "other");
        // Email providers' bounce reports, as email_feedback labels them.
        assert_eq!(
            explain("hard bounce: 550 5.1.1 user unknown (Postmark HardBounce)").code,
            "email.hard_bounce"
        );
        assert_eq!(
            explain("soft bounce: mailbox full (Amazon SES Transient/MailboxFull)").code,
            "email.soft_bounce"
        );
        assert_eq!(
            explain("dropped: Unsubscribed Address (SendGrid)").code,
            "email.dropped"
        );
        assert_eq!(other.reason, "The message could not be sent");
        // A word that merely ends in a provider's name is no code.
        assert_eq!(code("nottwilio 30003"), "other");
    }

    #[test]
    fn groups_merge_texts_of_one_code() {
        let groups = group([
            (
                Some("twilio 30003: Unreachable destination handset".into()),
                2,
            ),
            (Some("twilio 30003".into()), 3),
            (
                Some("twilio 21211: The 'To' number +1 is not valid".into()),
                1,
            ),
            (
                Some("sandbox: simulated permanent failure for +1".into()),
                4,
            ),
            (
                Some("sandbox: simulated permanent failure for +2".into()),
                1,
            ),
            (None, 1),
        ]);
        let got: Vec<(&str, i64)> = groups.iter().map(|(e, n)| (e.code.as_str(), *n)).collect();
        assert_eq!(
            got,
            vec![
                ("sandbox.permanent", 5),
                ("twilio.30003", 5),
                ("twilio.21211", 1),
                ("unknown", 1),
            ]
        );
    }
}
