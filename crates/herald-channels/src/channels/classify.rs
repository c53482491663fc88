//! What a provider's error or status means for Herald: retry, give up on this recipient,
//! stop the campaign, record an opt-out, or admit the outcome is unknown. One table per
//! provider so the Twilio and WhatsApp channels and their webhooks cannot drift apart.
//!
//! Codes and handling follow `tests/contracts/PROVIDERS.md` §1.2 and §1.5 (Twilio) and §2.3
//! and §2.6 (WhatsApp), which are our proposed policy built on the providers' error pages.
//! The numeric code decides; the HTTP status is only the fallback when the code is absent
//! or not in the table.

use crate::domain::MessageStatus;

/// How the engine should treat a failed send or a failure reported later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Not processed, or transient: try again later with backoff (rate limits, queue
    /// overflow, unreachable handset, service unavailable).
    Retry,
    /// Retrying cannot help for this recipient or this content.
    Permanent,
    /// Configuration or account problem: every further send would fail the same way.
    StopCampaign,
    /// The outcome is unknown (5xx, timeout, connection reset): a message may exist.
    /// Reconcile before sending again (README §1.7).
    Unknown,
    /// The recipient has opted out (Twilio 21610; WhatsApp 131050 for marketing).
    /// Permanent, and the address goes on the suppression list.
    OptOut,
}

/// What a person reads when a provider refuses a channel's credentials (HTTP 401 or 403),
/// naming the provider and the settings to check, as the kind's channel words them:
/// "credentials refused by Twilio (401): check the channel's account SID and auth token".
/// None for any other status.
pub fn credentials_refused(provider: &str, settings: &str, http_status: u16) -> Option<String> {
    if !matches!(http_status, 401 | 403) {
        return None;
    }
    Some(format!(
        "credentials refused by {provider} ({http_status}): check the channel's {settings}"
    ))
}

/// Pass this as `http_status` when no HTTP response arrived (timeout, connection reset),
/// or for an asynchronous error (callback `ErrorCode`) that has no HTTP status.
pub const NO_RESPONSE: u16 = 0;

/// Fallback by HTTP status when the code is absent or unknown. A create request has no
/// idempotency key, so a 5xx or a timeout may have made a message (README §1.5, §1.7):
/// that is `Unknown`, not `Retry`.
fn by_http_status(http_status: u16) -> ErrorClass {
    match http_status {
        429 => ErrorClass::Retry,
        408 | 504 => ErrorClass::Unknown,
        401 | 403 => ErrorClass::StopCampaign,
        400..=499 => ErrorClass::Permanent,
        500..=599 => ErrorClass::Unknown,
        _ => ErrorClass::Unknown,
    }
}

/// Classifies a Twilio error: a synchronous create error (HTTP status plus the body's
/// `code`) or an asynchronous one (`ErrorCode` of a `failed`/`undelivered` callback, with
/// [`NO_RESPONSE`] as the status).
pub fn classify_twilio(http_status: u16, code: Option<i64>) -> ErrorClass {
    use ErrorClass::*;
    match code {
        // Account concurrency exceeded; the request was not processed.
        Some(20429) => Retry,
        // Authentication failed.
        Some(20003) => StopCampaign,
        // Invalid To; To/From pair not routable; To cannot receive SMS.
        Some(21211 | 21612 | 21614) => Permanent,
        // Recipient replied STOP.
        Some(21610) => OptOut,
        // No permission for this region: configuration, but only that region's recipients
        // are affected, so it fails them one by one instead of stopping the campaign.
        Some(21408) => Permanent,
        // Invalid From; From not owned or unable to send SMS.
        Some(21212 | 21606) => StopCampaign,
        // Sender queue holds more than 10 h of messages: back off, send slower.
        Some(21611) => Retry,
        // Queue overflow (retry later at a lower rate); handset unreachable (at most 1-2
        // retries, hours apart: the retry policy limits that); unknown error (once or twice).
        Some(30001 | 30003 | 30008) => Retry,
        // Account suspended; US A2P 10DLC number not registered.
        Some(30002 | 30034) => StopCampaign,
        // Blocked; unknown or inactive number; landline or unreachable carrier; filtered as
        // spam (a content or registration problem: never auto-retried).
        Some(30004..=30007) => Permanent,
        _ => by_http_status(http_status),
    }
}

/// Classifies a WhatsApp Cloud API (Graph) error from its `code`. `error_subcode` is
/// accepted for the callers' convenience but no subcode changes the class (README §2.6
/// branches on `code` only).
pub fn classify_whatsapp(http_status: u16, code: Option<i64>, subcode: Option<i64>) -> ErrorClass {
    use ErrorClass::*;
    let _ = subcode;
    match code {
        // Throughput limit; pair rate limit; account maintenance; unknown or service
        // unavailable; Graph API call rate limits.
        Some(130429 | 131056 | 131057 | 131000 | 131016 | 1 | 2 | 4 | 80007) => Retry,
        // Spam rate limit: pause the sender for a long time, no quick retries.
        Some(131048) => StopCampaign,
        // Meta chose not to deliver (per-user marketing limit): not worth retrying within
        // the campaign (README: not before 24 h).
        Some(131049) => Permanent,
        // User stopped marketing messages: a marketing opt-out.
        Some(131050) => OptOut,
        // Undeliverable; outside the 24 h window (free-form); Meta experiment; recipient is
        // the sender; unsupported type; media download/upload; bad parameters.
        Some(
            131026 | 131047 | 130472 | 131021 | 131051 | 131052 | 131053 | 100 | 131008 | 131009,
        ) => Permanent,
        // Template problems: the campaign step is misconfigured.
        Some(132000 | 132001 | 132005 | 132007 | 132012 | 132015 | 132016) => StopCampaign,
        // Token expired, permissions.
        Some(190 | 10 | 200..=299) => StopCampaign,
        // Account locked, payment problem, policy block; business number not registered.
        Some(131031 | 131042 | 368 | 133010) => StopCampaign,
        _ => by_http_status(http_status),
    }
}

/// Maps a Twilio `MessageStatus`/`status` string to Herald's status. `None` means "no
/// change": the initial statuses (`queued`, `accepted`, `scheduled`, `sending`), inbound
/// ones (`receiving`, `received`) and any string never seen before (README §1.2: tolerate
/// unknown statuses). `partially_delivered` has no documented meaning; the README says to
/// treat it as terminal, and since not all of the message is known to have arrived it maps
/// to `Undelivered` (callers should log it). `canceled` (a scheduled message) is terminal.
pub fn twilio_status(s: &str) -> Option<MessageStatus> {
    match s {
        "sent" => Some(MessageStatus::Sent),
        "delivered" => Some(MessageStatus::Delivered),
        "undelivered" | "partially_delivered" => Some(MessageStatus::Undelivered),
        "failed" => Some(MessageStatus::Failed),
        "read" => Some(MessageStatus::Read),
        "canceled" => Some(MessageStatus::Cancelled),
        _ => None,
    }
}

/// Maps a WhatsApp status webhook's `status` to Herald's status (README §2.3). Anything
/// else (`played` for voice messages, future values) is `None`: no change.
pub fn whatsapp_status(s: &str) -> Option<MessageStatus> {
    match s {
        "sent" => Some(MessageStatus::Sent),
        "delivered" => Some(MessageStatus::Delivered),
        "read" => Some(MessageStatus::Read),
        "failed" => Some(MessageStatus::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorClass::*;
    use super::*;

    #[test]
    fn twilio_codes() {
        let table: &[(i64, ErrorClass)] = &[
            (20429, Retry),
            (20003, StopCampaign),
            (21211, Permanent),
            (21610, OptOut),
            (21612, Permanent),
            (21408, Permanent),
            (21614, Permanent),
            (21212, StopCampaign),
            (21606, StopCampaign),
            (21611, Retry),
            (30001, Retry),
            (30002, StopCampaign),
            (30003, Retry),
            (30004, Permanent),
            (30005, Permanent),
            (30006, Permanent),
            (30007, Permanent),
            (30008, Retry),
            (30034, StopCampaign),
        ];
        for &(code, class) in table {
            // The code decides whatever the HTTP status says.
            for status in [400, 401, 429, 500, NO_RESPONSE] {
                assert_eq!(
                    classify_twilio(status, Some(code)),
                    class,
                    "{code} @ {status}"
                );
            }
        }
    }

    #[test]
    fn twilio_http_fallbacks() {
        assert_eq!(classify_twilio(429, None), Retry);
        assert_eq!(classify_twilio(500, None), Unknown);
        assert_eq!(classify_twilio(503, Some(20500)), Unknown);
        assert_eq!(classify_twilio(504, None), Unknown);
        assert_eq!(classify_twilio(408, None), Unknown);
        assert_eq!(classify_twilio(NO_RESPONSE, None), Unknown);
        assert_eq!(classify_twilio(401, None), StopCampaign);
        assert_eq!(classify_twilio(403, None), StopCampaign);
        assert_eq!(classify_twilio(400, Some(99999)), Permanent);
        assert_eq!(classify_twilio(404, None), Permanent);
        assert_eq!(classify_twilio(302, None), Unknown);
    }

    #[test]
    fn whatsapp_codes() {
        let mut table: Vec<(i64, ErrorClass)> = vec![
            (130429, Retry),
            (131056, Retry),
            (131057, Retry),
            (131000, Retry),
            (131016, Retry),
            (1, Retry),
            (2, Retry),
            (4, Retry),
            (80007, Retry),
            (131048, StopCampaign),
            (131049, Permanent),
            (131050, OptOut),
            (131026, Permanent),
            (131047, Permanent),
            (130472, Permanent),
            (131021, Permanent),
            (131051, Permanent),
            (131052, Permanent),
            (131053, Permanent),
            (100, Permanent),
            (131008, Permanent),
            (131009, Permanent),
            (132000, StopCampaign),
            (132001, StopCampaign),
            (132005, StopCampaign),
            (132007, StopCampaign),
            (132012, StopCampaign),
            (132015, StopCampaign),
            (132016, StopCampaign),
            (190, StopCampaign),
            (10, StopCampaign),
            (131031, StopCampaign),
            (131042, StopCampaign),
            (368, StopCampaign),
            (133010, StopCampaign),
        ];
        table.extend((200..=299).map(|c| (c, StopCampaign)));
        for (code, class) in table {
            for status in [400, 403, 429, 500, NO_RESPONSE] {
                assert_eq!(
                    classify_whatsapp(status, Some(code), Some(2494010)),
                    class,
                    "{code} @ {status}"
                );
                assert_eq!(classify_whatsapp(status, Some(code), None), class);
            }
        }
    }

    #[test]
    fn whatsapp_http_fallbacks() {
        assert_eq!(classify_whatsapp(429, None, None), Retry);
        assert_eq!(classify_whatsapp(500, None, None), Unknown);
        assert_eq!(classify_whatsapp(502, Some(424242), None), Unknown);
        assert_eq!(classify_whatsapp(NO_RESPONSE, None, None), Unknown);
        assert_eq!(classify_whatsapp(401, None, None), StopCampaign);
        assert_eq!(classify_whatsapp(400, Some(424242), None), Permanent);
        assert_eq!(classify_whatsapp(300, Some(199), None), Unknown);
        assert_eq!(classify_whatsapp(400, Some(300), None), Permanent);
    }

    #[test]
    fn twilio_statuses() {
        use MessageStatus as M;
        let rows: &[(&str, Option<M>)] = &[
            ("queued", None),
            ("accepted", None),
            ("scheduled", None),
            ("sending", None),
            ("sent", Some(M::Sent)),
            ("delivered", Some(M::Delivered)),
            ("undelivered", Some(M::Undelivered)),
            ("failed", Some(M::Failed)),
            ("read", Some(M::Read)),
            ("partially_delivered", Some(M::Undelivered)),
            ("canceled", Some(M::Cancelled)),
            ("receiving", None),
            ("received", None),
            ("delivery_unknown", None),
            ("DELIVERED", None),
            ("", None),
            ("\u{0}ß😀", None),
        ];
        for &(s, expected) in rows {
            assert_eq!(twilio_status(s), expected, "{s:?}");
        }
    }

    #[test]
    fn whatsapp_statuses() {
        use MessageStatus as M;
        let rows: &[(&str, Option<M>)] = &[
            ("sent", Some(M::Sent)),
            ("delivered", Some(M::Delivered)),
            ("read", Some(M::Read)),
            ("failed", Some(M::Failed)),
            ("played", None),
            ("deleted", None),
            ("undelivered", None),
            ("", None),
        ];
        for &(s, expected) in rows {
            assert_eq!(whatsapp_status(s), expected, "{s:?}");
        }
    }
}
