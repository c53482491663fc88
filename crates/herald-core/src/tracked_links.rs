//! Tracked links: `{{ link("https://example.com/offer") }}` in a template becomes
//! `{public_url}/l/{code}`, one code per message and link, which redirects to the target.
//!
//! The code is 16 characters of base64url over 12 bytes: the message id (6 bytes), the
//! link's position in the template (1 byte) and the first 5 bytes of an HMAC-SHA256 of both
//! under the configured `secret_key`. So a code needs no table, cannot be altered into
//! another message's or link's code, and has one fixed length: the segment estimate counts
//! every tracked link as exactly [`LinkSigner::placeholder_url`]'s length. The engine,
//! the estimate and the in-doubt check render the same code for the same message, so a
//! message asked about at the provider is recognised by its body.
//!
//! Forty bits of tag means a guesser needs about 5 × 10^11 requests per valid code; a hit
//! only redirects to a campaign's public link and adds one click. The HTTP route answers
//! every code it cannot verify with the same 404.

use crate::domain::{Counts, MessageStatus};
use crate::ids::MessageId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

/// Characters of every code.
pub const CODE_LEN: usize = 16;
/// Bytes behind a code: message id, position, tag.
const CODE_BYTES: usize = 12;
const ID_BYTES: usize = 6;
const TAG_BYTES: usize = 5;
/// Distinct tracked links one template may hold (positions 1 to this).
pub const MAX_LINKS: usize = 20;
/// Longest target URL, in bytes: far above a real landing page's, small enough for an SMS.
pub const MAX_TARGET_BYTES: usize = 2048;
/// The path under `public_url` that tracked links use.
pub const PATH_PREFIX: &str = "/l/";

/// Makes and checks the codes of tracked links; exists only when Herald has both a
/// `public_url` (where recipients click) and a `secret_key` (what signs the codes).
#[derive(Clone)]
pub struct LinkSigner {
    /// `public_url` without its trailing slash, then `/l/`.
    base: String,
    key: String,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why a campaign may not use `link()` on this server, with the fix.
pub const UNCONFIGURED: &str = "link() needs Herald's public_url (where recipients' clicks arrive) and secret_key (which signs the links): set HERALD_PUBLIC_URL and HERALD_SECRET_KEY, or write the plain URL instead";

impl LinkSigner {
    pub fn new(public_url: Option<&str>, secret_key: Option<&str>) -> Option<LinkSigner> {
        let public = public_url?.trim().trim_end_matches('/');
        let key = secret_key?;
        if public.is_empty() || key.is_empty() {
            return None;
        }
        Some(LinkSigner {
            base: format!("{public}{PATH_PREFIX}"),
            key: key.to_owned(),
        })
    }

    fn tag(&self, message_id: MessageId, position: u8) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_bytes()).ok()?;
        mac.update(format!("herald-link:{}:{position}", message_id.get()).as_bytes());
        Some(mac)
    }

    /// The code of link `position` (1-based) in message `message_id`; None for an id or a
    /// position no message can have.
    pub fn code(&self, message_id: MessageId, position: u8) -> Option<String> {
        let id = u64::try_from(message_id.get()).ok()?;
        if !(1..1 << (8 * ID_BYTES)).contains(&id) || !(1..=MAX_LINKS as u8).contains(&position) {
            return None;
        }
        let tag = self.tag(message_id, position)?.finalize().into_bytes();
        let mut bytes = [0u8; CODE_BYTES];
        bytes[..ID_BYTES].copy_from_slice(&id.to_be_bytes()[8 - ID_BYTES..]);
        bytes[ID_BYTES] = position;
        bytes[ID_BYTES + 1..].copy_from_slice(&tag[..TAG_BYTES]);
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The message and link position a code stands for, if the code is genuine. Anything
    /// else (wrong length, another key's tag, an altered id) is None, and the caller
    /// answers all of them alike.
    pub fn decode(&self, code: &str) -> Option<(MessageId, u8)> {
        if code.len() != CODE_LEN {
            return None;
        }
        // The engine's decoder refuses non-canonical trailing bits; 16 characters carry
        // exactly 12 bytes, so each code has one spelling.
        let bytes = URL_SAFE_NO_PAD.decode(code).ok()?;
        let bytes: [u8; CODE_BYTES] = bytes.try_into().ok()?;
        let mut id = [0u8; 8];
        id[8 - ID_BYTES..].copy_from_slice(&bytes[..ID_BYTES]);
        let id = i64::try_from(u64::from_be_bytes(id)).ok()?;
        let position = bytes[ID_BYTES];
        if id < 1 || !(1..=MAX_LINKS as u8).contains(&position) {
            return None;
        }
        let message_id = MessageId(id);
        self.tag(message_id, position)?
            .verify_truncated_left(&bytes[ID_BYTES + 1..])
            .ok()?;
        Some((message_id, position))
    }

    /// The tracked URL of link `position` in message `message_id`.
    pub fn url(&self, message_id: MessageId, position: u8) -> Option<String> {
        Some(format!("{}{}", self.base, self.code(message_id, position)?))
    }

    /// A stand-in with a real link's exact length, for previews and the estimate.
    pub fn placeholder_url(&self) -> String {
        format!("{}{}", self.base, "x".repeat(CODE_LEN))
    }

    /// What `link(target)` prints in message `message_id`, for each of the template's
    /// targets (positions follow their order). None when an id or position is out of range.
    pub fn links_for(
        &self,
        message_id: MessageId,
        targets: &[String],
    ) -> Option<BTreeMap<String, String>> {
        targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let position = u8::try_from(i + 1).ok()?;
                Some((target.clone(), self.url(message_id, position)?))
            })
            .collect()
    }

    /// Every target printed as [`Self::placeholder_url`].
    pub fn placeholder_links(&self, targets: &[String]) -> BTreeMap<String, String> {
        let stand_in = self.placeholder_url();
        targets
            .iter()
            .map(|t| (t.clone(), stand_in.clone()))
            .collect()
    }
}

/// Messages accepted by the provider and not reported undelivered (sent, delivered, read):
/// the base of every click rate.
pub fn reached(counts: &Counts) -> i64 {
    [
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
    ]
    .into_iter()
    .map(|s| counts.get(s))
    .sum()
}

/// `clicked / reached`, 0 to 1, rounded to 4 decimals; 0 when nothing reached anyone.
pub fn click_rate(clicked: i64, reached: i64) -> f64 {
    if reached <= 0 {
        return 0.0;
    }
    ((clicked as f64 / reached as f64).clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0
}

/// Refuses a template with `link("…")` calls on a server that cannot track them
/// ([`UNCONFIGURED`] says why and what to set), so no campaign is created whose links would
/// silently go out untracked.
pub fn check_trackable(
    links: &[String],
    public_url: Option<&str>,
    secret_key: Option<&str>,
) -> Result<(), &'static str> {
    if links.is_empty() || LinkSigner::new(public_url, secret_key).is_some() {
        Ok(())
    } else {
        Err(UNCONFIGURED)
    }
}

/// Lowercase fragments of the User-Agent of programs that fetch a link to draw its preview
/// (messaging apps, social networks, search engines), not a person following it. Their
/// requests are redirected and not counted, as is a request with no User-Agent (browsers
/// always send one) and a HEAD request.
pub const PREVIEW_AGENTS: &[&str] = &[
    "facebookexternalhit",
    "facebot",
    "twitterbot",
    "slackbot",
    "slack-imgproxy",
    "whatsapp",
    "telegrambot",
    "discordbot",
    "linkedinbot",
    "skypeuripreview",
    "microsoftpreview",
    "applebot",
    "googlebot",
    "google-pagerenderer",
    "bingbot",
    "bingpreview",
    "pinterest",
    "redditbot",
    "embedly",
    "iframely",
    "vkshare",
    "viber",
    "snapchat",
    "mattermost",
    "zoom",
    "bitlybot",
    "duckduckbot",
    "yandex",
    "baiduspider",
    "curl/",
    "wget/",
    "python-requests",
];

/// Whether a request with this User-Agent is a link preview or a bot, not a person.
pub fn is_preview_agent(user_agent: Option<&str>) -> bool {
    let Some(agent) = user_agent.map(str::trim).filter(|a| !a.is_empty()) else {
        return true;
    };
    let agent = agent.to_ascii_lowercase();
    PREVIEW_AGENTS.iter().any(|bot| agent.contains(bot))
}

/// What a message's `link("…")` calls print: its tracked URLs when Herald can sign them
/// and the template has links, else None (the targets print as written: a server whose
/// public_url or secret_key was removed after the campaign was created still sends).
pub fn links_for(
    signer: Option<&LinkSigner>,
    message_id: MessageId,
    targets: &[String],
) -> Option<BTreeMap<String, String>> {
    if targets.is_empty() {
        return None;
    }
    signer?.links_for(message_id, targets)
}

/// Whether `target` may be a tracked link's destination: an absolute http or https URL
/// with a host, no whitespace or control characters, at most [`MAX_TARGET_BYTES`].
pub fn check_target(target: &str) -> Result<(), String> {
    if target.len() > MAX_TARGET_BYTES {
        return Err(format!(
            "link() URL is {} bytes, more than {MAX_TARGET_BYTES}: shorten it",
            target.len()
        ));
    }
    if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "link() URL {target:?} contains spaces or control characters: percent-encode them"
        ));
    }
    // It goes out as a Location header, which carries ASCII only.
    if !target.is_ascii() {
        return Err(format!(
            "link() URL {target:?} contains non-ASCII characters: percent-encode them (and write an international domain in its xn-- form)"
        ));
    }
    let rest = target
        .strip_prefix("https://")
        .or_else(|| target.strip_prefix("http://"))
        .ok_or_else(|| format!("link() URL {target:?} must start with https:// or http://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!(
            "link() URL {target:?} has no host: write it in full, e.g. link(\"https://example.com/offer\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(Some("https://hrld.example/"), Some("k3y")).unwrap()
    }

    #[test]
    fn a_code_round_trips_and_has_one_length() {
        let s = signer();
        for (id, pos) in [(1, 1), (42, 3), ((1i64 << 48) - 1, 20)] {
            let code = s.code(MessageId(id), pos).unwrap();
            assert_eq!(code.len(), CODE_LEN, "{code}");
            assert_eq!(s.decode(&code), Some((MessageId(id), pos)));
            let url = s.url(MessageId(id), pos).unwrap();
            assert_eq!(url.len(), s.placeholder_url().len());
            assert!(url.starts_with("https://hrld.example/l/"), "{url}");
        }
    }

    /// Links already sent must keep working: the format is fixed (vectors computed
    /// independently, with Python's hmac and base64).
    #[test]
    fn codes_keep_their_format() {
        let s = LinkSigner::new(Some("https://go.example"), Some("fuzz-secret-key")).unwrap();
        assert_eq!(s.code(MessageId(42), 1).unwrap(), "AAAAAAAqAQeqLsTy");
        assert_eq!(s.code(MessageId(1), 20).unwrap(), "AAAAAAABFAHupWae");
        assert_eq!(
            s.code(MessageId((1 << 48) - 1), 3).unwrap(),
            "________AyX595BF"
        );
    }

    #[test]
    fn out_of_range_ids_and_positions_have_no_code() {
        let s = signer();
        assert_eq!(s.code(MessageId(0), 1), None);
        assert_eq!(s.code(MessageId(1 << 48), 1), None);
        assert_eq!(s.code(MessageId(1), 0), None);
        assert_eq!(s.code(MessageId(1), MAX_LINKS as u8 + 1), None);
    }

    #[test]
    fn altered_or_foreign_codes_are_refused() {
        let s = signer();
        let code = s.code(MessageId(7), 2).unwrap();
        // Every single-character change fails.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..code.len() {
            for c in alphabet.chars() {
                let mut altered: Vec<char> = code.chars().collect();
                if altered[i] == c {
                    continue;
                }
                altered[i] = c;
                let altered: String = altered.into_iter().collect();
                assert_eq!(s.decode(&altered), None, "{altered}");
            }
        }
        let other = LinkSigner::new(Some("https://hrld.example"), Some("other")).unwrap();
        assert_eq!(other.decode(&code), None);
        for bad in [
            "",
            "short",
            &format!("{code}A"),
            "================",
            "AAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(s.decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn previews_are_told_from_people() {
        for bot in [
            None,
            Some(""),
            Some("WhatsApp/2.23.20.0 A"),
            Some("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
            // iMessage's preview fetcher.
            Some(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
            ),
            Some("TelegramBot (like TwitterBot)"),
            Some("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"),
            Some("curl/8.5.0"),
        ] {
            assert!(is_preview_agent(bot), "{bot:?}");
        }
        for person in [
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
        ] {
            assert!(!is_preview_agent(Some(person)), "{person}");
        }
    }

    #[test]
    fn no_signer_without_public_url_or_key() {
        assert!(LinkSigner::new(None, Some("k")).is_none());
        assert!(LinkSigner::new(Some("https://x.example"), None).is_none());
        assert!(LinkSigner::new(Some(" "), Some("k")).is_none());
        assert!(LinkSigner::new(Some("https://x.example"), Some("")).is_none());
    }

    #[test]
    fn targets_are_absolute_http_urls() {
        for good in [
            "https://example.com",
            "http://example.com/offer?a=1#top",
            "https://user@example.com:8443/x",
        ] {
            assert_eq!(check_target(good), Ok(()), "{good}");
        }
        for bad in [
            "example.com/offer",
            "javascript:alert(1)",
            "https://",
            "https:///path",
            "https://exa mple.com",
            "ftp://example.com",
            "https://:80/x",
            "https://exämple.com/",
        ] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
        assert!(check_target(&format!("https://e.com/{}", "a".repeat(MAX_TARGET_BYTES))).is_err());
    }
}
