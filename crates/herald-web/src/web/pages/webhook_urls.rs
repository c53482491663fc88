//! The webhook URLs of a channel, as the channels page shows them to paste into the
//! provider's console: the routes its kind's descriptor declares (and `webhooks::inbound`
//! serves) under the instance's `public_url`.

use crate::channel_kind::ChannelKind;
use serde_json::{Value, json};

/// `(what, url, where it goes)` for each webhook a channel of `kind` receives; none for
/// kinds that receive none (sandbox) or that this herald does not know. Without a
/// public URL the URLs start with a placeholder the page explains.
pub fn for_channel(public_url: Option<&str>, kind: &str, id: &str) -> Vec<Value> {
    let Ok(kind) = kind.parse::<ChannelKind>() else {
        return Vec::new();
    };
    let base = public_url
        .map(|u| u.trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://YOUR-PUBLIC-URL".to_string());
    kind.webhooks()
        .iter()
        .map(|route| {
            let url = format!("{base}{}", kind.webhook_path(route, id));
            json!({"label": route.label, "url": url, "hint": route.hint})
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
        let smtp = for_channel(Some("https://h"), "smtp", "chn_2");
        let urls: Vec<&str> = smtp.iter().filter_map(|h| h["url"].as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://h/webhooks/smtp/chn_2/ses",
                "https://h/webhooks/smtp/chn_2/postmark",
                "https://h/webhooks/smtp/chn_2/sendgrid"
            ]
        );
    }
}
