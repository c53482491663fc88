//! Alerts to people (docs/ALERTS.md): what an alert-worthy outbox event says to an
//! organisation's alert recipients, and which channel may carry it. The store turns each
//! such event into one alert per recipient (`store::alerts`); the engine sends them
//! (`engine::alerts`). This file holds the rules both follow, free of I/O.

use crate::address::AddressKind;
use crate::events::EventType;
use crate::ids::{CampaignId, ChannelId, WebhookEndpointId};
use serde_json::Value;

/// Messages in doubt in one sending campaign that raise `campaign.in_doubt` when the
/// organisation sets no threshold of its own.
pub const DEFAULT_IN_DOUBT_THRESHOLD: i64 = 100;
/// Attempts at one alert before it is given up as undeliverable.
pub const MAX_ATTEMPTS: i64 = 6;
/// Delays before attempts 2 to 6.
pub const RETRY_SCHEDULE_MS: [i64; 5] = [30_000, 120_000, 600_000, 1_800_000, 3_600_000];
/// How long an undeliverable alert stays a finding of `herald doctor` (the system page and
/// `herald alert list` keep showing it until retention removes it).
pub const UNDELIVERABLE_FINDING_MS: i64 = 24 * 3600 * 1000;
/// The longest text an alert sends by SMS or WhatsApp (two concatenated GSM segments).
pub const PHONE_TEXT_MAX_CHARS: usize = 306;

/// What an alert says, and what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertText {
    /// One line: what happened to what.
    pub subject: String,
    /// The engine's reason and what to do.
    pub body: String,
    /// The dashboard page to open (`/campaigns/cmp_2`), made absolute with `public_url`.
    pub link: Option<String>,
    /// The channel the alert is about, which must not carry it.
    pub concerns_channel_id: Option<ChannelId>,
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn number(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_i64()
}

/// A canonical id (`chn_5`) back to its number.
fn channel_id_of(canonical: Option<&str>) -> Option<ChannelId> {
    ChannelId::parse_lenient(canonical?).ok()
}

/// An outbox event as the alert rules read it: its type, campaign and `data`.
#[derive(Debug, Clone, Copy)]
pub struct Occurrence<'a> {
    pub event_type: EventType,
    pub campaign_id: Option<CampaignId>,
    pub data: &'a Value,
}

/// The campaign an event names, as "“December promo” (cmp_2)".
fn campaign_label(event: &Occurrence<'_>) -> String {
    let data = event.data;
    let name = text(data, &["campaign", "name"]).or_else(|| text(data, &["name"]));
    let id = event
        .campaign_id
        .map(|id| id.to_string())
        .or_else(|| text(data, &["campaign", "id"]).map(str::to_string))
        .or_else(|| text(data, &["campaign_id"]).map(str::to_string))
        .unwrap_or_else(|| "a campaign".to_string());
    match name {
        Some(name) => format!("“{name}” ({id})"),
        None => id,
    }
}

/// What the alert for `event` says. `campaign_channel` is the channel of the campaign the
/// event names (read by the caller), the channel such an alert is about. None when the
/// event type raises no alert.
pub fn compose(event: &Occurrence<'_>, campaign_channel: Option<ChannelId>) -> Option<AlertText> {
    let data = event.data;
    let campaign_link = event.campaign_id.map(|id| format!("/campaigns/{id}"));
    let reason = text(data, &["reason"]).unwrap_or("no reason recorded");
    let alert = match event.event_type {
        EventType::CampaignStuck => AlertText {
            subject: format!("Campaign {} is stuck", campaign_label(event)),
            body: format!(
                "It has made no progress since {} with {} messages waiting: {reason}",
                text(data, &["last_progress_at"]).unwrap_or("its start"),
                number(data, &["pending"]).unwrap_or(0),
            ),
            link: campaign_link,
            concerns_channel_id: campaign_channel,
        },
        EventType::CampaignAutoPaused => AlertText {
            subject: format!(
                "Campaign {} was paused automatically",
                campaign_label(event)
            ),
            body: format!("{reason}. Resume it once the cause is fixed."),
            link: campaign_link,
            concerns_channel_id: campaign_channel,
        },
        EventType::CampaignInDoubt => AlertText {
            subject: format!(
                "Campaign {} has {} messages in doubt",
                campaign_label(event),
                number(data, &["in_doubt"]).unwrap_or(0)
            ),
            body: format!(
                "The provider's answer to these sends is unknown (threshold {}). Herald asks the \
                 provider where it can; `herald doctor` and the campaign page show what remains.",
                number(data, &["threshold"]).unwrap_or(DEFAULT_IN_DOUBT_THRESHOLD)
            ),
            link: campaign_link,
            concerns_channel_id: campaign_channel,
        },
        EventType::ChannelUnavailable => {
            let id = text(data, &["channel", "id"]);
            let name = text(data, &["channel", "name"]).unwrap_or("?");
            AlertText {
                subject: format!(
                    "Channel “{name}” ({}) is unavailable",
                    id.unwrap_or("a channel")
                ),
                body: format!(
                    "Its provider cannot be reached: {reason}. Its campaigns are paused and resume \
                     by themselves when it answers again."
                ),
                link: Some("/channels".to_string()),
                concerns_channel_id: channel_id_of(id),
            }
        }
        EventType::WebhookEndpointDisabled => {
            let id = text(data, &["endpoint_id"]);
            AlertText {
                subject: format!(
                    "Webhook endpoint {} was disabled",
                    id.unwrap_or("of your organisation")
                ),
                body: format!(
                    "{reason}. Herald no longer sends it events ({}); enable it again from its page once it answers.",
                    text(data, &["url"]).unwrap_or("?")
                ),
                link: id
                    .and_then(|id| WebhookEndpointId::parse_lenient(id).ok())
                    .map(|id| format!("/webhooks/{id}")),
                concerns_channel_id: None,
            }
        }
        _ => return None,
    };
    Some(alert)
}

/// The text of a test alert (`herald alert test`).
pub fn test_text() -> AlertText {
    AlertText {
        subject: "Test alert from Herald".to_string(),
        body: "Alerts reach you at this address. Nothing is wrong.".to_string(),
        link: Some("/system".to_string()),
        concerns_channel_id: None,
    }
}

/// The alert as one channel sends it: an email gets a `Subject:` line (the SMTP channel's
/// convention) and the full text; a phone gets one bounded line.
pub fn render_for(
    kind: AddressKind,
    subject: &str,
    body: &str,
    link: Option<&str>,
    public_url: Option<&str>,
) -> String {
    let link = link.map(|path| match public_url.filter(|u| !u.is_empty()) {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => format!("{path} on your Herald dashboard"),
    });
    match kind {
        AddressKind::Email => {
            let mut text = format!("Subject: Herald: {subject}\n\n{body}\n");
            if let Some(link) = link {
                text.push_str(&format!("\nOpen: {link}\n"));
            }
            text
        }
        AddressKind::Phone => {
            let tail = link.map(|l| format!(" {l}")).unwrap_or_default();
            let head = format!("Herald: {subject}. {body}");
            let room = PHONE_TEXT_MAX_CHARS.saturating_sub(tail.chars().count());
            let head: String = if head.chars().count() > room {
                let mut cut: String = head.chars().take(room.saturating_sub(1)).collect();
                cut.push('…');
                cut
            } else {
                head
            };
            format!("{head}{tail}")
        }
    }
}

/// A channel an alert could go through, as the organisation configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateChannel {
    pub id: ChannelId,
    pub name: String,
    pub kind: String,
    /// Set while the channel's provider cannot be reached.
    pub unavailable_since: Option<i64>,
}

impl CandidateChannel {
    /// Whether it reaches addresses of `kind`. A channel of a kind this herald does not
    /// know is not ruled out here: building it says what is wrong.
    pub fn reaches(&self, kind: AddressKind) -> bool {
        self.kind
            .parse::<crate::channel_kind::ChannelKind>()
            .ok()
            .is_none_or(|k| k.reaches(kind))
    }
}

/// The channel to send an alert to an address of `kind` with: the first of the
/// organisation's alert channels (primary, then fallback) that is not the channel the alert
/// is about, can reach that kind of address and is not unavailable. `Err` says why none can,
/// in words that name the fix.
pub fn pick_channel(
    candidates: &[CandidateChannel],
    configured: usize,
    concerns: Option<ChannelId>,
    kind: AddressKind,
) -> Result<&CandidateChannel, String> {
    if configured == 0 {
        return Err(
            "no alert channel is set: set one with `herald alert settings --channel ID`"
                .to_string(),
        );
    }
    let mut why = Vec::new();
    for c in candidates {
        let label = format!("{} ({})", c.name, c.id);
        if Some(c.id) == concerns {
            why.push(format!("{label} is the channel this alert is about"));
        } else if !c.reaches(kind) {
            why.push(format!("{label} cannot reach {kind} addresses"));
        } else if c.unavailable_since.is_some() {
            why.push(format!("{label} is unavailable"));
        } else {
            return Ok(c);
        }
    }
    if candidates.len() < configured {
        why.push("an alert channel no longer exists".to_string());
    }
    Err(format!(
        "no alert channel can carry it: {}; set another with `herald alert settings --fallback-channel ID`",
        why.join("; ")
    ))
}

/// The most alert recipients an organisation may have.
pub const MAX_RECIPIENTS: usize = 20;
/// The highest in-doubt threshold accepted.
pub const MAX_IN_DOUBT_THRESHOLD: i64 = 1_000_000;

/// Recipients as given (emails or phone numbers) in their normalised form, without
/// duplicates, in the order given; `Err((index, why))` names the first that is not an
/// address, or says there are too many.
pub fn check_recipients(given: &[String]) -> Result<Vec<String>, (Option<usize>, String)> {
    let mut out: Vec<String> = Vec::with_capacity(given.len());
    for (i, raw) in given.iter().enumerate() {
        let address = crate::address::Address::parse(raw).map_err(|e| (Some(i), e.to_string()))?;
        let address = address.as_str().to_string();
        if !out.contains(&address) {
            out.push(address);
        }
    }
    if out.len() > MAX_RECIPIENTS {
        return Err((
            None,
            format!(
                "at most {MAX_RECIPIENTS} alert recipients; use a mailing list or a group number for more"
            ),
        ));
    }
    Ok(out)
}

/// When attempt `attempts_made + 1` should follow a failed one at `now`, or None when the
/// alert has had its attempts.
pub fn next_attempt_at(attempts_made: i64, now: i64) -> Option<i64> {
    if attempts_made >= MAX_ATTEMPTS {
        return None;
    }
    let index = usize::try_from(attempts_made.saturating_sub(1)).ok()?;
    RETRY_SCHEDULE_MS.get(index).map(|d| now + d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        event_type: EventType,
        campaign_id: Option<CampaignId>,
        data: &Value,
    ) -> Occurrence<'_> {
        Occurrence {
            event_type,
            campaign_id,
            data,
        }
    }

    fn channel(id: ChannelId, kind: &str, unavailable: bool) -> CandidateChannel {
        CandidateChannel {
            id,
            name: format!("c{}", id.get()),
            kind: kind.to_string(),
            unavailable_since: unavailable.then_some(1),
        }
    }

    #[test]
    fn every_alert_worthy_type_has_a_text_and_no_other_does() {
        for t in EventType::ALL {
            let empty = serde_json::json!({});
            let composed = compose(&event(*t, Some(CampaignId(2)), &empty), Some(ChannelId(5)));
            assert_eq!(composed.is_some(), t.raises_alert(), "{t}");
        }
    }

    #[test]
    fn a_channel_alert_is_about_that_channel() {
        let data = serde_json::json!({"channel": {"id": "chn_7", "name": "sms-us"}, "reason": "connection refused"});
        let e = event(EventType::ChannelUnavailable, None, &data);
        let a = compose(&e, None).expect("an alert");
        assert_eq!(a.concerns_channel_id, Some(ChannelId(7)));
        assert!(a.subject.contains("sms-us") && a.body.contains("connection refused"));
    }

    #[test]
    fn the_channel_an_alert_is_about_never_carries_it() {
        let both = [
            channel(ChannelId(1), "twilio", false),
            channel(ChannelId(2), "twilio", false),
        ];
        let picked =
            pick_channel(&both, 2, Some(ChannelId(1)), AddressKind::Phone).expect("fallback");
        assert_eq!(picked.id, ChannelId(2));
        let one = [channel(ChannelId(1), "twilio", false)];
        let err = pick_channel(&one, 1, Some(ChannelId(1)), AddressKind::Phone).unwrap_err();
        assert!(err.contains("is the channel this alert is about"), "{err}");
        assert!(err.contains("--fallback-channel"), "{err}");
    }

    #[test]
    fn the_address_kind_and_availability_decide_too() {
        let cs = [
            channel(ChannelId(1), "smtp", false),
            channel(ChannelId(2), "twilio", true),
        ];
        assert_eq!(
            pick_channel(&cs, 2, None, AddressKind::Email).map(|c| c.id),
            Ok(ChannelId(1))
        );
        let err = pick_channel(&cs, 2, None, AddressKind::Phone).unwrap_err();
        assert!(
            err.contains("cannot reach phone") && err.contains("is unavailable"),
            "{err}"
        );
        let err = pick_channel(&[], 0, None, AddressKind::Phone).unwrap_err();
        assert!(err.contains("--channel"), "{err}");
        let err = pick_channel(&[], 1, None, AddressKind::Phone).unwrap_err();
        assert!(err.contains("no longer exists"), "{err}");
    }

    #[test]
    fn a_phone_alert_is_bounded_and_keeps_its_link() {
        let long = "x".repeat(1000);
        let text = render_for(
            AddressKind::Phone,
            "Campaign is stuck",
            &long,
            Some("/campaigns/cmp_2"),
            Some("https://herald.example.org/"),
        );
        assert!(
            text.chars().count() <= PHONE_TEXT_MAX_CHARS,
            "{}",
            text.len()
        );
        assert!(
            text.ends_with(" https://herald.example.org/campaigns/cmp_2"),
            "{text}"
        );
        let mail = render_for(AddressKind::Email, "S", "B", Some("/system"), None);
        assert!(mail.starts_with("Subject: Herald: S\n\nB\n"), "{mail}");
        assert!(mail.contains("/system on your Herald dashboard"), "{mail}");
    }

    #[test]
    fn retries_follow_the_schedule_then_stop() {
        assert_eq!(next_attempt_at(1, 0), Some(30_000));
        assert_eq!(next_attempt_at(5, 0), Some(3_600_000));
        assert_eq!(next_attempt_at(MAX_ATTEMPTS, 0), None);
    }
}
