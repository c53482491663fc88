//! The webhook URLs of a channel, as the channels page shows them to paste into the
//! provider's console: the routes of `webhooks::inbound` under the instance's `public_url`.

use serde_json::{Value, json};

/// `(what, url, where it goes)` for each webhook a channel of `kind` receives; none for
/// kinds that receive none (sandbox, SMTP). Without a public URL the URLs start with a
/// placeholder the page explains.
pub fn for_channel(public_url: Option<&str>, kind: &str, id: &str) -> Vec<Value> {
    let base = public_url
        .map(|u| u.trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://YOUR-PUBLIC-URL".to_string());
    let hooks: &[(&str, &str, &str)] = match kind {
        "twilio" => &[
            (
                "Status callback",
                "status",
                "Herald sends it with every message as StatusCallback; paste it in the Messaging Service's status callback only if your account overrides it",
            ),
            (
                "Inbound messages",
                "inbound",
                "The phone number's (or Messaging Service's) “A message comes in” webhook, HTTP POST: replies such as STOP reach Herald here",
            ),
        ],
        "whatsapp" => &[(
            "Callback URL",
            "",
            "The app's WhatsApp webhook configuration, with the channel's verify token; subscribe to the messages field",
        )],
        _ => &[],
    };
    hooks
        .iter()
        .map(|(label, suffix, hint)| {
            let url = if suffix.is_empty() {
                format!("{base}/webhooks/{kind}/{id}")
            } else {
                format!("{base}/webhooks/{kind}/{id}/{suffix}")
            };
            json!({"label": label, "url": url, "hint": hint})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_inbound_routes() {
        let twilio = for_channel(Some("https://h.example.com/"), "twilio", "chn_5");
        let urls: Vec<&str> = twilio.iter().filter_map(|h| h["url"].as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://h.example.com/webhooks/twilio/chn_5/status",
                "https://h.example.com/webhooks/twilio/chn_5/inbound"
            ]
        );
        let wa = for_channel(None, "whatsapp", "chn_7");
        assert_eq!(
            wa[0]["url"],
            "https://YOUR-PUBLIC-URL/webhooks/whatsapp/chn_7"
        );
        assert!(for_channel(Some("https://h"), "sandbox", "chn_1").is_empty());
        assert!(for_channel(Some("https://h"), "smtp", "chn_2").is_empty());
    }
}
