//! Webhook signatures, built to `tests/contracts/PROVIDERS.md`: §1.4 (Twilio
//! `X-Twilio-Signature`), §2.4 (Meta `X-Hub-Signature-256`) and §3 (Standard Webhooks `v1`).
//!
//! Why this exists: a forged or replayed callback could mark messages delivered or failed,
//! or opt a number out, so every webhook handler checks the request here before it acts, and
//! Herald's own outbound events are signed here so consumers can do the same. Every
//! comparison against a secret-derived value is constant time (`Mac::verify_slice`). The
//! functions are pure: no I/O and no clock (the caller passes `now`).

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------------------
// Twilio (README §1.4)
// ---------------------------------------------------------------------------------------

/// The string Twilio signs: the URL, then for every parameter name in byte order each of its
/// distinct values in byte order, as `name` immediately followed by `value`. `params` holds
/// the **decoded** form values, every one that arrived (no whitelisting).
fn twilio_signing_string(url: &str, params: &[(String, String)]) -> String {
    let mut by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        by_name.entry(name).or_default().insert(value);
    }
    let mut s = String::from(url);
    for (name, values) in &by_name {
        for value in values {
            s.push_str(name);
            s.push_str(value);
        }
    }
    s
}

fn twilio_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Option<HmacSha1> {
    // HMAC takes keys of any length, so this never fails in practice.
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).ok()?;
    mac.update(twilio_signing_string(url, params).as_bytes());
    Some(mac)
}

/// `X-Twilio-Signature` for a request to exactly `url` with these decoded form parameters:
/// Base64 (standard, padded) of HMAC-SHA1 keyed with the Auth Token. For a JSON-bodied
/// webhook pass no parameters (the URL carries `bodySHA256`).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    twilio_mac(auth_token, url, params)
        .map(|mac| STANDARD.encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Checks `X-Twilio-Signature` for a form-encoded webhook. `url` is the full URL Twilio
/// called, rebuilt from configuration (scheme, host, path, query). Like Twilio's SDKs it
/// accepts a match on the URL with any port stripped or with the scheme's default port
/// (`:443`/`:80`) added, because Twilio is inconsistent about which one it signs.
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    let Ok(tag) = STANDARD.decode(header) else {
        return false;
    };
    let mut matched = false;
    for candidate in [url_without_port(url), url_with_default_port(url)] {
        let Some(mac) = twilio_mac(auth_token, &candidate, params) else {
            return false;
        };
        // No short circuit: both candidates are always computed.
        matched |= mac.verify_slice(&tag).is_ok();
    }
    matched
}

/// Checks a JSON-bodied Twilio webhook: the URL's `bodySHA256` query parameter must be the
/// lowercase hex SHA-256 of the raw body, and the signature is over the URL alone (same port
/// rules as [`verify_twilio`]). Not used by messaging status callbacks, which are forms.
pub fn verify_twilio_json(auth_token: &str, url: &str, raw_body: &[u8], header: &str) -> bool {
    let Some(claimed) = query_param(url, "bodySHA256") else {
        return false;
    };
    // The body hash is not secret (anyone holding the body can compute it): plain equality.
    let body_ok = claimed == hex_lower(&Sha256::digest(raw_body));
    let signature_ok = verify_twilio(auth_token, url, &[], header);
    body_ok && signature_ok
}

/// The pieces of `scheme://[userinfo@]host[:port]rest` that the port rules need.
struct Authority<'a> {
    /// `scheme://userinfo@`, everything before the host.
    prefix: &'a str,
    scheme: &'a str,
    host: &'a str,
    port: Option<&'a str>,
    /// Path, query and fragment.
    rest: &'a str,
}

fn split_authority(url: &str) -> Option<Authority<'_>> {
    let scheme_end = url.find("://")?;
    let authority_start = scheme_end + 3;
    let after = &url[authority_start..];
    let authority_len = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..authority_len];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let hostport = &authority[host_start..];
    // An IPv6 literal (`[::1]`) has colons of its own: look for the port after the bracket.
    let search_from = hostport.rfind(']').map_or(0, |i| i + 1);
    let (host, port) = match hostport[search_from..].rfind(':') {
        Some(i) => {
            let colon = search_from + i;
            let port = &hostport[colon + 1..];
            if port.bytes().all(|b| b.is_ascii_digit()) {
                // `host:` (empty port) counts as no port, as it does for URL parsers.
                (&hostport[..colon], (!port.is_empty()).then_some(port))
            } else {
                (hostport, None)
            }
        }
        None => (hostport, None),
    };
    Some(Authority {
        prefix: &url[..authority_start + host_start],
        scheme: &url[..scheme_end],
        host,
        port,
        rest: &after[authority_len..],
    })
}

fn url_without_port(url: &str) -> String {
    match split_authority(url) {
        Some(a) => format!("{}{}{}", a.prefix, a.host, a.rest),
        None => url.to_owned(),
    }
}

/// The URL with an explicit port: unchanged when it has one, else the scheme's default
/// (443 for https, 80 otherwise, as twilio-python does).
fn url_with_default_port(url: &str) -> String {
    match split_authority(url) {
        Some(a) => {
            let port = match a.port {
                Some(p) => p,
                None if a.scheme.eq_ignore_ascii_case("https") => "443",
                None => "80",
            };
            format!("{}{}:{}{}", a.prefix, a.host, port, a.rest)
        }
        None => url.to_owned(),
    }
}

/// The raw value of the first `name=` parameter in the URL's query.
fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------------------
// Meta / WhatsApp (README §2.4)
// ---------------------------------------------------------------------------------------

const META_PREFIX: &str = "sha256=";

/// `X-Hub-Signature-256` for a raw request body: `sha256=` + lowercase hex of HMAC-SHA256
/// keyed with the App Secret.
pub fn meta_signature(app_secret: &str, raw_body: &[u8]) -> String {
    match HmacSha256::new_from_slice(app_secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(raw_body);
            format!("{META_PREFIX}{}", hex_lower(&mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// Checks `X-Hub-Signature-256` over the exact bytes received (never re-serialised JSON).
/// The header must be exactly `sha256=` followed by 64 lowercase hex digits.
pub fn verify_meta(app_secret: &str, raw_body: &[u8], header: &str) -> bool {
    let Some(tag) = header.strip_prefix(META_PREFIX).and_then(decode_hex_lower) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(app_secret.as_bytes()) else {
        return false;
    };
    mac.update(raw_body);
    mac.verify_slice(&tag).is_ok()
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn decode_hex_lower(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Standard Webhooks v1 (README §3)
// ---------------------------------------------------------------------------------------

/// The reference libraries' tolerance: timestamps more than 5 minutes in the past or the
/// future are rejected.
pub const STANDARD_TOLERANCE: Duration = Duration::from_secs(5 * 60);

const SECRET_PREFIX: &str = "whsec_";

/// Standard Base64 that accepts the secret with or without padding (as the Python
/// reference library does).
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The three Standard Webhooks headers as received; `None` when a header is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandardHeaders<'a> {
    /// `webhook-id`
    pub id: Option<&'a str>,
    /// `webhook-timestamp` (Unix seconds)
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`: space-separated `<version>,<base64>` entries.
    pub signature: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the secret is not `whsec_` + Base64 of 24 to 64 bytes")]
    InvalidSecret,
    #[error("the webhook id is empty or contains '.'")]
    InvalidId,
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not an integer number of seconds")]
    InvalidTimestamp,
    #[error("webhook-timestamp is older than the tolerance")]
    TimestampTooOld,
    #[error("webhook-timestamp is further in the future than the tolerance")]
    TimestampInFuture,
    #[error("no v1 signature matches")]
    NoMatch,
}

/// The HMAC key: the decoded bytes after `whsec_` (the prefix is optional, as in the
/// reference libraries). The spec's secrets are 24 to 64 bytes; anything else is refused.
fn standard_key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = SECRET_BASE64
        .decode(b64)
        .map_err(|_| SignatureError::InvalidSecret)?;
    if (24..=64).contains(&key.len()) {
        Ok(key)
    } else {
        Err(SignatureError::InvalidSecret)
    }
}

fn standard_mac(
    key: &[u8],
    msg_id: &str,
    timestamp: i64,
    payload: &[u8],
) -> Result<HmacSha256, SignatureError> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| SignatureError::InvalidSecret)?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(payload);
    Ok(mac)
}

/// The `webhook-signature` entry `v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{payload}"`.
/// During key rotation, sign with each key and join the entries with a space.
pub fn sign_standard(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    payload: &[u8],
) -> Result<String, SignatureError> {
    let key = standard_key(secret)?;
    if msg_id.is_empty() || msg_id.contains('.') {
        return Err(SignatureError::InvalidId);
    }
    let mac = standard_mac(&key, msg_id, timestamp, payload)?;
    Ok(format!(
        "v1,{}",
        general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Verifies a Standard Webhooks request: all three headers present, the timestamp within
/// `tolerance` of `now` (Unix seconds) either way (a difference of exactly `tolerance` is
/// accepted, as in the reference libraries), and at least one `v1` entry of the signature
/// header matching. Entries of other versions (`v1a`, …) and malformed entries are skipped.
pub fn verify_standard(
    secret: &str,
    headers: StandardHeaders<'_>,
    payload: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let id = headers
        .id
        .ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let timestamp = headers
        .timestamp
        .ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let signature = headers
        .signature
        .ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let key = standard_key(secret)?;

    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::InvalidTimestamp)?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(timestamp) > tolerance {
        return Err(SignatureError::TimestampTooOld);
    }
    if timestamp.saturating_sub(now) > tolerance {
        return Err(SignatureError::TimestampInFuture);
    }

    let mac = standard_mac(&key, id, timestamp, payload)?;
    let mut matched = false;
    for entry in signature.split(' ') {
        let Some(("v1", b64)) = entry.split_once(',') else {
            continue;
        };
        let Ok(tag) = general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        matched |= mac.clone().verify_slice(&tag).is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

/// Compares two byte strings in time independent of where they differ (the length is not
/// secret). For shared tokens such as WhatsApp's verify token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/contracts/signature-test-vectors.json"
    );

    fn vectors(scheme: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(VECTORS).expect("read signature-test-vectors.json");
        let json: Value = serde_json::from_str(&text).expect("parse signature-test-vectors.json");
        let list = json[scheme]
            .as_array()
            .unwrap_or_else(|| panic!("no `{scheme}` array in the vectors file"))
            .clone();
        assert!(!list.is_empty(), "zero vectors for `{scheme}`");
        list
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("vector {:?}: `{key}` missing", v["name"]))
    }

    /// A vector is positive unless it says `"valid": false` (or `"expected_valid": false`).
    fn expect_valid(v: &Value) -> bool {
        v.get("valid")
            .or_else(|| v.get("expected_valid"))
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    fn params(v: &Value) -> Vec<(String, String)> {
        v["params"]
            .as_array()
            .expect("params array")
            .iter()
            .map(|p| {
                let pair = p.as_array().expect("param pair");
                assert_eq!(pair.len(), 2, "param pair in {:?}", v["name"]);
                (
                    pair[0].as_str().expect("name").to_owned(),
                    pair[1].as_str().expect("value").to_owned(),
                )
            })
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// `application/x-www-form-urlencoded` decoding, for checking vectors' raw bodies.
    fn form_decode(body: &str) -> Vec<(String, String)> {
        fn decode(s: &str) -> String {
            let bytes = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'+' => out.push(b' '),
                    b'%' => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                        out.push(u8::from_str_radix(hex, 16).expect("percent escape"));
                        i += 2;
                    }
                    b => out.push(b),
                }
                i += 1;
            }
            String::from_utf8(out).expect("utf-8")
        }
        body.split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("k=v");
                (decode(k), decode(v))
            })
            .collect()
    }

    #[test]
    fn every_twilio_vector() {
        for v in vectors("twilio_x_twilio_signature") {
            let name = s(&v, "name");
            let token = s(&v, "auth_token");
            let url = s(&v, "url");
            let expected = s(&v, "expected");
            let params = params(&v);
            assert_eq!(
                twilio_signing_string(url, &params),
                s(&v, "string_to_sign"),
                "{name}"
            );
            let ok = expect_valid(&v);
            assert_eq!(
                twilio_signature(token, url, &params) == expected,
                ok,
                "{name}"
            );

            if let Some(hash) = v.get("body_sha256_hex") {
                let body = s(&v, "raw_body").as_bytes();
                assert_eq!(
                    hex_lower(&Sha256::digest(body)),
                    hash.as_str().expect("hex")
                );
                assert_eq!(verify_twilio_json(token, url, body, expected), ok, "{name}");
                assert!(
                    !verify_twilio_json(token, url, b"{\"property\": \"tampered\"}", expected),
                    "{name}: tampered JSON body"
                );
            } else {
                if let Some(raw) = v.get("raw_body") {
                    // The signature uses the decoded values of the body as it arrived.
                    let mut decoded = form_decode(raw.as_str().expect("raw_body"));
                    let mut given = params.clone();
                    decoded.sort();
                    given.sort();
                    assert_eq!(decoded, given, "{name}");
                }
                assert_eq!(verify_twilio(token, url, &params, expected), ok, "{name}");
            }
            if ok {
                assert!(
                    !verify_twilio(&format!("{token}x"), url, &params, expected),
                    "{name}: wrong token"
                );
            }
        }
    }

    #[test]
    fn twilio_port_forms() {
        let p = owned(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]);
        let bare = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let with_443 = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let signed_bare = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let signed_443 = "kvajT1Ptam85bY51eRf/AJRuM3w=";
        // Either signature is accepted whichever form our configured URL takes.
        for url in [bare, with_443] {
            assert!(verify_twilio("12345", url, &p, signed_bare), "{url}");
            assert!(verify_twilio("12345", url, &p, signed_443), "{url}");
        }
        // The wrong default port (:80 on https) is not one of the accepted forms.
        let with_80 = "https://mycompany.com:80/myapp.php?foo=1&bar=2";
        let signed_80 = twilio_signature("12345", with_80, &p);
        assert!(!verify_twilio("12345", bare, &p, &signed_80));
        // A non-default port is kept in the with-port form and stripped in the other.
        let custom = "https://mycompany.com:8443/myapp.php?foo=1&bar=2";
        assert!(verify_twilio("12345", custom, &p, signed_bare));
        assert!(verify_twilio(
            "12345",
            custom,
            &p,
            &twilio_signature("12345", custom, &p)
        ));
        assert!(!verify_twilio(
            "12345",
            bare,
            &p,
            &twilio_signature("12345", custom, &p)
        ));
    }

    #[test]
    fn twilio_url_forms() {
        assert_eq!(
            url_with_default_port("http://u:p@h.test/x?a=1"),
            "http://u:p@h.test:80/x?a=1"
        );
        assert_eq!(
            url_without_port("http://u:p@h.test:8080/x"),
            "http://u:p@h.test/x"
        );
        assert_eq!(
            url_with_default_port("https://[::1]/x"),
            "https://[::1]:443/x"
        );
        assert_eq!(url_without_port("https://[::1]:8443"), "https://[::1]");
        assert_eq!(
            url_with_default_port("https://h.test"),
            "https://h.test:443"
        );
        assert_eq!(url_without_port("not a url"), "not a url");
        assert_eq!(
            query_param("https://h/x?a=1&bodySHA256=ab#f", "bodySHA256"),
            Some("ab")
        );
        assert_eq!(query_param("https://h/x", "bodySHA256"), None);
    }

    #[test]
    fn twilio_negative_cases() {
        let url = "https://hooks.example.test/twilio/status?campaign=cmp_42";
        let p = owned(&[("MessageSid", "SM1"), ("MessageStatus", "delivered")]);
        let good = twilio_signature("token", url, &p);
        assert!(verify_twilio("token", url, &p, &good));
        let tampered = owned(&[("MessageSid", "SM1"), ("MessageStatus", "failed")]);
        assert!(!verify_twilio("token", url, &tampered, &good));
        assert!(!verify_twilio("other", url, &p, &good));
        assert!(!verify_twilio("token", &format!("{url}&x=1"), &p, &good));
        assert!(!verify_twilio("token", url, &p, ""));
        assert!(!verify_twilio("token", url, &p, "not base64!"));
        assert!(!verify_twilio("token", url, &p, &good[..good.len() - 4]));
        // A JSON-variant URL without bodySHA256 never verifies.
        assert!(!verify_twilio_json(
            "token",
            url,
            b"{}",
            &twilio_signature("token", url, &[])
        ));
    }

    #[test]
    fn every_meta_vector() {
        for v in vectors("meta_x_hub_signature_256") {
            let name = s(&v, "name");
            let secret = s(&v, "app_secret");
            let body = s(&v, "raw_body").as_bytes();
            let expected = s(&v, "expected_header");
            let ok = expect_valid(&v);
            assert_eq!(meta_signature(secret, body) == expected, ok, "{name}");
            assert_eq!(verify_meta(secret, body, expected), ok, "{name}");
            if ok {
                let mut tampered = body.to_vec();
                tampered.push(b' ');
                assert!(
                    !verify_meta(secret, &tampered, expected),
                    "{name}: tampered"
                );
                assert!(
                    !verify_meta("wrong", body, expected),
                    "{name}: wrong secret"
                );
            }
        }
    }

    #[test]
    fn meta_header_format_is_strict() {
        let header = meta_signature("secret", b"test");
        assert!(verify_meta("secret", b"test", &header));
        let hex = header.trim_start_matches(META_PREFIX);
        assert!(!verify_meta("secret", b"test", hex), "prefix required");
        assert!(!verify_meta("secret", b"test", &format!("sha1={hex}")));
        assert!(!verify_meta("secret", b"test", &header.to_uppercase()));
        assert!(!verify_meta("secret", b"test", &header[..header.len() - 2]));
        assert!(!verify_meta("secret", b"test", &format!("{header}00")));
        assert!(!verify_meta("secret", b"test", "sha256=zz"));
        assert!(!verify_meta("secret", b"test", ""));
        // The raw bytes count: the same JSON re-serialised differently does not verify.
        let body = br#"{"a":"\u00e4"}"#;
        let header = meta_signature("secret", body);
        assert!(!verify_meta("secret", "{\"a\":\"ä\"}".as_bytes(), &header));
    }

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> StandardHeaders<'a> {
        StandardHeaders {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn every_standard_webhooks_vector() {
        for v in vectors("standard_webhooks_v1") {
            let name = s(&v, "name");
            let id = s(&v, "webhook_id");
            let ts = v["webhook_timestamp"].as_i64().expect("webhook_timestamp");
            let ts_str = ts.to_string();
            let body = s(&v, "raw_body").as_bytes();
            let ok = expect_valid(&v);
            if let Some(content) = v.get("signed_content") {
                let signed = format!("{id}.{ts}.{}", s(&v, "raw_body"));
                assert_eq!(signed, content.as_str().expect("signed_content"), "{name}");
            }
            let (secrets, expected): (Vec<&str>, &str) = match v.get("secrets") {
                Some(list) => (
                    list.as_array()
                        .expect("secrets")
                        .iter()
                        .map(|x| x.as_str().expect("secret"))
                        .collect(),
                    s(&v, "expected_header"),
                ),
                None => (vec![s(&v, "secret")], s(&v, "expected_signature")),
            };
            assert!(!secrets.is_empty(), "{name}");
            let entries: Vec<String> = secrets
                .iter()
                .map(|secret| sign_standard(secret, id, ts, body).expect("sign"))
                .collect();
            assert_eq!(entries.join(" ") == expected, ok, "{name}");
            for secret in &secrets {
                let verdict = verify_standard(
                    secret,
                    headers(id, &ts_str, expected),
                    body,
                    ts,
                    STANDARD_TOLERANCE,
                );
                assert_eq!(verdict.is_ok(), ok, "{name}: {verdict:?}");
                if ok {
                    let mut tampered = body.to_vec();
                    tampered.push(b'\n');
                    assert_eq!(
                        verify_standard(
                            secret,
                            headers(id, &ts_str, expected),
                            &tampered,
                            ts,
                            STANDARD_TOLERANCE
                        ),
                        Err(SignatureError::NoMatch),
                        "{name}: tampered"
                    );
                }
            }
        }
    }

    const KEY: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn standard_timestamp_tolerance() {
        let body = b"{}";
        let sig = sign_standard(KEY, "evt_1", 1_000_000, body).expect("sign");
        let check = |now: i64| {
            verify_standard(
                KEY,
                headers("evt_1", "1000000", &sig),
                body,
                now,
                STANDARD_TOLERANCE,
            )
        };
        assert_eq!(check(1_000_000), Ok(()));
        assert_eq!(check(1_000_300), Ok(()), "exactly 5 min old is accepted");
        assert_eq!(check(999_700), Ok(()), "exactly 5 min ahead is accepted");
        assert_eq!(check(1_000_301), Err(SignatureError::TimestampTooOld));
        assert_eq!(check(999_699), Err(SignatureError::TimestampInFuture));
        assert_eq!(check(i64::MAX), Err(SignatureError::TimestampTooOld));
        assert_eq!(check(i64::MIN), Err(SignatureError::TimestampInFuture));
        // A replay with a refreshed timestamp header but the old signature fails.
        assert_eq!(
            verify_standard(
                KEY,
                headers("evt_1", "1000400", &sig),
                body,
                1_000_400,
                STANDARD_TOLERANCE
            ),
            Err(SignatureError::NoMatch)
        );
        for bad in ["", "abc", "1.5", "99999999999999999999"] {
            assert_eq!(
                verify_standard(
                    KEY,
                    headers("evt_1", bad, &sig),
                    body,
                    0,
                    STANDARD_TOLERANCE
                ),
                Err(SignatureError::InvalidTimestamp),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn standard_headers_and_secrets() {
        let body = b"{\"type\":\"x\"}";
        let sig = sign_standard(KEY, "evt_1", 10, body).expect("sign");
        let tol = STANDARD_TOLERANCE;
        let missing = |h: StandardHeaders<'_>| verify_standard(KEY, h, body, 10, tol);
        let full = headers("evt_1", "10", &sig);
        assert_eq!(missing(full), Ok(()));
        assert_eq!(
            missing(StandardHeaders { id: None, ..full }),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            missing(StandardHeaders {
                timestamp: None,
                ..full
            }),
            Err(SignatureError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            missing(StandardHeaders {
                signature: None,
                ..full
            }),
            Err(SignatureError::MissingHeader("webhook-signature"))
        );
        // Wrong id, wrong secret.
        assert_eq!(
            missing(headers("evt_2", "10", &sig)),
            Err(SignatureError::NoMatch)
        );
        let other = "whsec_////////////////////////////////";
        assert_eq!(
            verify_standard(other, full, body, 10, tol),
            Err(SignatureError::NoMatch)
        );
        // Other versions and junk entries are skipped; any v1 match is enough.
        let tag = sig.trim_start_matches("v1,");
        for header in [
            format!("v1a,{tag} {sig}"),
            format!("junk v1,!!! v2,{tag} {sig}"),
            format!("{sig} v1,AAAA"),
        ] {
            assert_eq!(missing(headers("evt_1", "10", &header)), Ok(()), "{header}");
        }
        for header in [
            format!("v1a,{tag}"),
            format!("v2,{tag}"),
            tag.to_owned(),
            String::new(),
        ] {
            assert_eq!(
                missing(headers("evt_1", "10", &header)),
                Err(SignatureError::NoMatch),
                "{header}"
            );
        }
        // The prefix and the padding are optional; the length and Base64 are not.
        let unprefixed = KEY.trim_start_matches(SECRET_PREFIX);
        assert_eq!(
            sign_standard(unprefixed, "evt_1", 10, body),
            Ok(sig.clone())
        );
        let unpadded = KEY.trim_end_matches('=');
        assert_eq!(sign_standard(unpadded, "evt_1", 10, body), Ok(sig.clone()));
        for bad in ["whsec_", "whsec_AAECAwQF", "whsec_not base64", ""] {
            assert_eq!(
                sign_standard(bad, "evt_1", 10, body),
                Err(SignatureError::InvalidSecret),
                "{bad:?}"
            );
            assert_eq!(
                verify_standard(bad, full, body, 10, tol),
                Err(SignatureError::InvalidSecret)
            );
        }
        assert_eq!(
            sign_standard(KEY, "evt.1", 10, body),
            Err(SignatureError::InvalidId)
        );
        assert_eq!(
            sign_standard(KEY, "", 10, body),
            Err(SignatureError::InvalidId)
        );
    }
}
