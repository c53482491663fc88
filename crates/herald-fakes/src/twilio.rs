//! Fake Twilio Programmable Messaging (contracts README §1.1–1.9), loopback only.
//!
//! Endpoints:
//!
//! * `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`: form body; Basic auth
//!   `AccountSid:auth-token` (an `SK…` API key with the auth token as its secret also
//!   passes). Answers `201` with an `api.v2010.account.message` (status `queued`, or
//!   `accepted` with `from: null` and `num_segments: "0"` when only a `MessagingServiceSid`
//!   is given). Validation, in order: AccountSid pattern (404/20404), auth (401/20003),
//!   `--max-concurrency` (429/20429), `To` required (21604) and valid (21211), `From` or
//!   `MessagingServiceSid` (21603) and their formats (21212 / 21701), `Body`, `MediaUrl` or
//!   `ContentSid` (21602), `Body` ≤ 1600 chars (21617), `ContentSid` pattern (21655),
//!   `ContentVariables` JSON (21656), `StatusCallback` URL (21609), `MediaUrl` URLs (21620);
//!   then `--fail-rate` (500/20500), then the magic numbers below.
//! * `GET /2010-04-01/Accounts/{AccountSid}/Messages.json?To=&From=&DateSent=&DateSent>=&DateSent<=&PageSize=&Page=&PageToken=`:
//!   newest first, Twilio's paging envelope. A date-only bound covers that whole UTC day;
//!   `DateSent` filters match `date_sent`, or `date_created` while the message is unsent.
//! * `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`: fetch one (404/20404).
//! * Not Twilio's: `GET /_fake/stats[?per_recipient=0]`, `POST /_fake/reset`,
//!   `GET /_fake/messages` (every stored message, oldest first).
//!
//! Status callbacks (when `StatusCallback` is given): form POSTs with `MessageSid`,
//! `SmsSid`, `SmsMessageSid`, `MessageStatus`, `SmsStatus`, `AccountSid`, `From`, `To`,
//! `ApiVersion`, plus `MessagingServiceSid`, `ErrorCode` (failed/undelivered),
//! `RawDlrDoneDate` (SMS delivered/undelivered), `ChannelPrefix`/`ChannelToAddress`
//! (`whatsapp:` etc.). Headers `X-Twilio-Signature` (over the StatusCallback URL without
//! any `#fragment`, and every parameter) and `I-Twilio-Idempotency-Token` (one per event,
//! the same on retries and duplicates). Sequence: `sent` then `--final-status`
//! (`failed` alone, without `sent`; `read` goes `sent`, `delivered`, `read`; `sent` stops
//! there, as with a carrier that never returns a receipt).
//!
//! Magic numbers. A number is magic when, after an optional `channel:` prefix, it is `+`
//! then `1500555` then at least four digits; the last four digits pick the behaviour
//! (so `+15005550001` and `+1500555990001` behave the same). Every other number succeeds.
//!
//! | field | last 4 | HTTP | code  | behaviour |
//! |-------|--------|------|-------|-----------|
//! | From  | 0001   | 400  | 21212 | invalid From |
//! | From  | 0007   | 400  | 21606 | From not owned / not able to send |
//! | From  | 0008   | 400  | 21611 | sender queue full (10 h backlog) |
//! | From  | 0006   | 201  | –     | success (like any other From) |
//! | To    | 0001   | 400  | 21211 | invalid To |
//! | To    | 0002   | 400  | 21612 | To/From pair not routable |
//! | To    | 0003   | 400  | 21408 | region not enabled |
//! | To    | 0004   | 400  | 21610 | unsubscribed recipient (STOP) |
//! | To    | 0009   | 400  | 21614 | not a mobile number |
//! | To    | 0429   | 429  | 20429 | Too Many Requests, `Retry-After: --retry-after-s`; not created |
//! | To    | 0500   | 500  | 20500 | internal error; not created |
//! | To    | 0501   | 500  | 20500 | internal error, but the message WAS created (outcome unknown; the list finds it) |
//! | To    | 0503   | 503  | 20503 | service unavailable, `Retry-After`; not created |
//! | To    | 0504   | –    | –     | hang: never answers; not created |
//! | To    | 0505   | –    | –     | hang: never answers; the message WAS created |
//! | To    | 3001, 3002, 3034 | 201 | – | then a `failed` callback with ErrorCode 30001 / 30002 / 30034 |
//! | To    | 3003 … 3008      | 201 | – | then `sent` and `undelivered` with ErrorCode 30003 … 30008 |
//!
//! From magic numbers are checked before To magic numbers.

use crate::callbacks::{self, Outbound, Step};
use crate::common::{
    Knobs, Shared, form_encode, hang, is_e164, lock, magic_tail, param, parse_form, random_hex,
    wants_per_recipient,
};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use clap::{Args, ValueEnum};
use herald_core::segments::sms_segments;
use herald_core::signatures::twilio_signature;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const HELP: &str = "\
Magic numbers: after an optional `channel:` prefix, a number `+1500555` followed by at
least 4 digits is magic and its LAST FOUR digits pick the behaviour; all others succeed.

  field last4  HTTP  code   behaviour
  From  0001   400   21212  invalid From
  From  0007   400   21606  From not owned / cannot send
  From  0008   400   21611  sender queue full
  From  0006   201   -      success (like any other From)
  To    0001   400   21211  invalid To
  To    0002   400   21612  To/From pair not routable
  To    0003   400   21408  region not enabled
  To    0004   400   21610  unsubscribed recipient (STOP)
  To    0009   400   21614  not a mobile number
  To    0429   429   20429  Retry-After: --retry-after-s; not created
  To    0500   500   20500  not created
  To    0501   500   20500  message WAS created (outcome unknown)
  To    0503   503   20503  Retry-After; not created
  To    0504   -     -      hang, never answers; not created
  To    0505   -     -      hang, never answers; message WAS created
  To    3001/3002/3034  201  then `failed` callback, ErrorCode 30001/30002/30034
  To    3003..3008      201  then `sent` + `undelivered`, ErrorCode 30003..30008

Endpoints: POST|GET /2010-04-01/Accounts/{AC}/Messages.json,
GET /2010-04-01/Accounts/{AC}/Messages/{SM}.json, GET /_fake/stats, POST /_fake/reset,
GET /_fake/messages.";

const API_VERSION: &str = "2010-04-01";
/// The sender a Messaging Service "picks" when no `From` is given.
const POOL_SENDER: &str = "+15017122661";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FinalStatus {
    Delivered,
    Undelivered,
    Failed,
    /// Stop at `sent`: no delivery receipt ever arrives.
    Sent,
    Read,
}

#[derive(Args, Debug)]
pub struct TwilioArgs {
    /// Auth Token: checks Basic auth and signs status callbacks.
    #[arg(long)]
    pub auth_token: String,
    /// Last status of a normal message's lifecycle.
    #[arg(long, value_enum, default_value_t = FinalStatus::Delivered)]
    pub final_status: FinalStatus,
    #[command(flatten)]
    pub knobs: Knobs,
}

struct Message {
    seq: u64,
    sid: String,
    account_sid: String,
    messaging_service_sid: Option<String>,
    /// As requested; `None` when only a Messaging Service was given.
    from: Option<String>,
    /// The sender used on the wire (pool number with a Messaging Service).
    sender: String,
    to: String,
    body: String,
    num_media: usize,
    segments: u32,
    status: &'static str,
    rank: u8,
    error_code: Option<u32>,
    price: Option<String>,
    date_created: DateTime<Utc>,
    date_updated: DateTime<Utc>,
    date_sent: Option<DateTime<Utc>>,
    status_callback: Option<String>,
}

/// `api.v2010.account.message` as the API writes it. Fields in alphabetical order, as
/// the `serde_json::Value` it replaces serialised them; typed and borrowed, so an answer
/// is written without building a map per message.
#[derive(serde::Serialize)]
struct MessageJson<'a> {
    account_sid: &'a str,
    api_version: &'static str,
    body: &'a str,
    date_created: String,
    date_sent: Option<String>,
    date_updated: String,
    direction: &'static str,
    error_code: Option<u32>,
    error_message: Option<&'static str>,
    from: Option<&'a str>,
    messaging_service_sid: Option<&'a str>,
    num_media: String,
    num_segments: String,
    price: Option<&'a str>,
    price_unit: &'static str,
    sid: &'a str,
    status: &'static str,
    subresource_uris: SubresourceUris,
    to: &'a str,
    uri: String,
}

#[derive(serde::Serialize)]
struct SubresourceUris {
    feedback: String,
    media: String,
}

#[derive(Default)]
struct Store {
    next_seq: u64,
    messages: HashMap<String, Message>,
    order: Vec<String>,
}

pub struct Fake {
    shared: Arc<Shared>,
    auth_token: String,
    final_status: FinalStatus,
    store: Mutex<Store>,
}

pub fn router(args: TwilioArgs) -> anyhow::Result<(Router, Knobs)> {
    let knobs = args.knobs.clone();
    let fake = Arc::new(Fake {
        shared: Arc::new(Shared::new(args.knobs)?),
        auth_token: args.auth_token,
        final_status: args.final_status,
        store: Mutex::new(Store::default()),
    });
    let router = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(create).get(list),
        )
        .route("/2010-04-01/Accounts/{account}/Messages/{file}", get(fetch))
        .route("/_fake/stats", get(stats))
        .route("/_fake/reset", post(reset))
        .route("/_fake/messages", get(all_messages))
        .fallback(not_found)
        .with_state(fake);
    Ok((router, knobs))
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

fn respond(status: StatusCode, body: impl serde::Serialize) -> Response {
    // Strings and numbers only: writing cannot fail; an empty body would show if it did.
    respond_bytes(
        status,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

/// A JSON body already written, as a response.
fn json_response(status: StatusCode, json: impl Into<Bytes>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json.into(),
    )
        .into_response()
}

/// A JSON answer already written, with Twilio's request id.
fn respond_bytes(status: StatusCode, json: Bytes) -> Response {
    let mut r = json_response(status, json);
    if let Ok(v) = HeaderValue::from_str(&format!("RQ{}", random_hex(16))) {
        r.headers_mut().insert("twilio-request-id", v);
    }
    r
}

/// Twilio's legacy error body: `{code, message, more_info, status}`.
fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    respond(
        status,
        json!({
            "code": code,
            "message": message.into(),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        }),
    )
}

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Twilio API\""),
    );
    r
}

fn resource_not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        20404,
        format!("The requested resource {path} was not found"),
    )
}

async fn not_found(uri: axum::http::Uri) -> Response {
    resource_not_found(uri.path())
}

// ---------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn basic_auth_ok(headers: &HeaderMap, account: &str, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, b64)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(decoded) = STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return false;
    };
    let Some((user, pass)) = decoded.split_once(':') else {
        return false;
    };
    (user == account || is_sid(user, "SK")) && pass == token
}

/// Splits `whatsapp:+1555…` into (`Some("whatsapp")`, `+1555…`).
fn split_channel(addr: &str) -> (Option<&str>, &str) {
    match addr.split_once(':') {
        Some((ch, rest)) if !ch.is_empty() && ch.bytes().all(|b| b.is_ascii_alphabetic()) => {
            (Some(ch), rest)
        }
        _ => (None, addr),
    }
}

fn valid_to(to: &str) -> bool {
    match split_channel(to) {
        (Some(_), rest) => !rest.is_empty() && (!rest.starts_with('+') || is_e164(rest)),
        (None, number) => is_e164(number),
    }
}

fn valid_from(from: &str) -> bool {
    let short_code = (3..=8).contains(&from.len()) && from.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&from.len())
        && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && from.bytes().any(|b| b.is_ascii_alphabetic());
    is_e164(from) || short_code || alphanumeric || valid_to(from)
}

fn valid_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    !host.is_empty() && !host.contains('_') && !url.contains(char::is_whitespace)
}

fn rank(status: &str) -> u8 {
    match status {
        "accepted" | "scheduled" => 0,
        "queued" => 1,
        "sending" => 2,
        "sent" => 3,
        "delivered" | "undelivered" | "failed" => 4,
        "read" => 5,
        _ => 0,
    }
}

fn error_text(code: u32) -> &'static str {
    match code {
        30001 => "Queue overflow",
        30002 => "Account suspended",
        30003 => "Unreachable destination handset",
        30004 => "Message blocked",
        30005 => "Unknown destination handset",
        30006 => "Landline or unreachable carrier",
        30007 => "Message filtered",
        30008 => "Unknown error",
        30034 => "Message from an Unregistered Number",
        _ => "Unknown error",
    }
}

fn rfc2822(t: DateTime<Utc>) -> String {
    t.to_rfc2822()
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

impl Message {
    /// `api.v2010.account.message`. `creating`: the create response, where a Messaging
    /// Service send has `from: null` and `num_segments: "0"`.
    fn to_json(&self, creating: bool) -> MessageJson<'_> {
        let via_service_only = self.from.is_none();
        let from = if creating && via_service_only {
            None
        } else {
            Some(self.from.as_deref().unwrap_or(&self.sender))
        };
        let segments = if creating && via_service_only {
            0
        } else {
            self.segments
        };
        let base = format!(
            "/2010-04-01/Accounts/{}/Messages/{}",
            self.account_sid, self.sid
        );
        let date_created = rfc2822(self.date_created);
        // A new message's three dates are one instant: formatted once.
        let date_updated = if self.date_updated == self.date_created {
            date_created.clone()
        } else {
            rfc2822(self.date_updated)
        };
        MessageJson {
            account_sid: &self.account_sid,
            api_version: API_VERSION,
            body: &self.body,
            date_created,
            date_sent: self.date_sent.map(rfc2822),
            date_updated,
            direction: "outbound-api",
            error_code: self.error_code,
            error_message: self.error_code.map(error_text),
            from,
            messaging_service_sid: self.messaging_service_sid.as_deref(),
            num_media: self.num_media.to_string(),
            num_segments: segments.to_string(),
            price: self.price.as_deref(),
            price_unit: "USD",
            sid: &self.sid,
            status: self.status,
            subresource_uris: SubresourceUris {
                feedback: format!("{base}/Feedback.json"),
                media: format!("{base}/Media.json"),
            },
            to: &self.to,
            uri: format!("{base}.json"),
        }
    }

    /// The time `DateSent` filters compare against.
    fn sent_or_created(&self) -> DateTime<Utc> {
        self.date_sent.unwrap_or(self.date_created)
    }
}

impl Fake {
    /// The lifecycle steps after creation: `(status, ErrorCode)`.
    fn plan(&self, to: &str) -> Vec<(&'static str, Option<u32>)> {
        let code = self.shared.knobs.final_error_code;
        let (_, number) = split_channel(to);
        if let Some(tail) = magic_tail(number) {
            match tail {
                "3001" => return vec![("failed", Some(30001))],
                "3002" => return vec![("failed", Some(30002))],
                "3034" => return vec![("failed", Some(30034))],
                "3003" | "3004" | "3005" | "3006" | "3007" | "3008" => {
                    let n: u32 = tail.parse().unwrap_or(3008);
                    return vec![("sent", None), ("undelivered", Some(27_000 + n))];
                }
                _ => {}
            }
        }
        match self.final_status {
            FinalStatus::Delivered => vec![("sent", None), ("delivered", None)],
            FinalStatus::Read => vec![("sent", None), ("delivered", None), ("read", None)],
            FinalStatus::Sent => vec![("sent", None)],
            FinalStatus::Undelivered => {
                vec![("sent", None), ("undelivered", Some(code.unwrap_or(30003)))]
            }
            FinalStatus::Failed => vec![("failed", Some(code.unwrap_or(30008)))],
        }
    }

    /// Applies a lifecycle step and builds its signed callback (if the message has one).
    fn advance(&self, sid: &str, status: &'static str, code: Option<u32>) -> Option<Outbound> {
        let mut store = lock(&self.store);
        let msg = store.messages.get_mut(sid)?;
        let now = Utc::now();
        if rank(status) > msg.rank {
            msg.status = status;
            msg.rank = rank(status);
            msg.date_updated = now;
            if status != "failed" && msg.date_sent.is_none() {
                msg.date_sent = Some(now);
            }
            if code.is_some() {
                msg.error_code = code;
            }
            if matches!(status, "delivered" | "undelivered" | "read") && msg.price.is_none() {
                msg.price = Some(format!("-{:.5}", 0.0079 * f64::from(msg.segments)));
            }
        }
        let url = msg.status_callback.clone()?;
        let (channel, address) = split_channel(&msg.to);
        let mut params: Vec<(String, String)> = vec![
            ("AccountSid".into(), msg.account_sid.clone()),
            ("ApiVersion".into(), API_VERSION.into()),
            ("From".into(), msg.sender.clone()),
            ("MessageSid".into(), msg.sid.clone()),
            ("MessageStatus".into(), status.into()),
            ("SmsMessageSid".into(), msg.sid.clone()),
            ("SmsSid".into(), msg.sid.clone()),
            ("SmsStatus".into(), status.into()),
            ("To".into(), msg.to.clone()),
        ];
        if let Some(mss) = &msg.messaging_service_sid {
            params.push(("MessagingServiceSid".into(), mss.clone()));
        }
        if let Some(code) = code {
            params.push(("ErrorCode".into(), code.to_string()));
        }
        match channel {
            Some(ch) => {
                params.push(("ChannelPrefix".into(), ch.to_owned()));
                params.push(("ChannelToAddress".into(), address.to_owned()));
            }
            None if matches!(status, "delivered" | "undelivered") => {
                params.push((
                    "RawDlrDoneDate".into(),
                    now.format("%y%m%d%H%M").to_string(),
                ));
            }
            None => {}
        }
        drop(store);
        // Connection-override fragments (`#rc=…`) are not part of the request URL.
        let url = url.split('#').next().unwrap_or(&url).to_owned();
        let signature = twilio_signature(&self.auth_token, &url, &params);
        let token = random_hex(16);
        let token = format!(
            "{}-{}-{}-{}-{}",
            &token[..8],
            &token[8..12],
            &token[12..16],
            &token[16..20],
            &token[20..]
        );
        Some(Outbound {
            url,
            content_type: "application/x-www-form-urlencoded",
            headers: vec![
                ("x-twilio-signature", signature),
                ("i-twilio-idempotency-token", token),
                ("user-agent", "TwilioProxy/1.1".to_owned()),
            ],
            body: form_encode(&params).into_bytes(),
        })
    }

    /// Stores a new message, counts it and starts its lifecycle. Returns the create
    /// answer's JSON, written before the message moves into the store.
    fn create_message(self: &Arc<Self>, account: &str, params: &[(String, String)]) -> Bytes {
        let to = param(params, "To").unwrap_or_default().to_owned();
        let from = param(params, "From").map(str::to_owned);
        let mss = param(params, "MessagingServiceSid").map(str::to_owned);
        let body = param(params, "Body").unwrap_or_default().to_owned();
        let num_media = params.iter().filter(|(k, _)| k == "MediaUrl").count();
        let segments = if body.is_empty() {
            1
        } else {
            sms_segments(&body).segments
        };
        let prefix = if num_media > 0 { "MM" } else { "SM" };
        let sid = format!("{prefix}{}", random_hex(16));
        let now = Utc::now();
        let (status, rank_) = if mss.is_some() {
            ("accepted", 0)
        } else {
            ("queued", 1)
        };
        let msg = Message {
            seq: 0,
            sid: sid.clone(),
            account_sid: account.to_owned(),
            messaging_service_sid: mss,
            sender: from.clone().unwrap_or_else(|| POOL_SENDER.to_owned()),
            from,
            to: to.clone(),
            body,
            num_media,
            segments,
            status,
            rank: rank_,
            error_code: None,
            price: None,
            date_created: now,
            date_updated: now,
            date_sent: None,
            status_callback: param(params, "StatusCallback").map(str::to_owned),
        };
        // Strings and numbers only: writing cannot fail; an empty body would show if it did.
        let json = serde_json::to_vec(&msg.to_json(true)).unwrap_or_default();
        {
            let mut store = lock(&self.store);
            let seq = store.next_seq;
            store.next_seq += 1;
            store.order.push(sid.clone());
            store.messages.insert(sid.clone(), Message { seq, ..msg });
        }
        self.shared.record_created(&to);
        let steps: Vec<Step> = self
            .plan(&to)
            .into_iter()
            .map(|(status, code)| {
                let fake = Arc::clone(self);
                let sid = sid.clone();
                Box::new(move || fake.advance(&sid, status, code)) as Step
            })
            .collect();
        callbacks::schedule(&self.shared, steps);
        Bytes::from(json)
    }
}

/// Request validation; `Err` is the 400's `(code, message)`.
fn validate(params: &[(String, String)]) -> Result<(), (u32, String)> {
    let bad = |code: u32, msg: String| Err((code, msg));
    let Some(to) = param(params, "To") else {
        return bad(21604, "A 'To' phone number is required.".into());
    };
    if !valid_to(to) {
        return bad(
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    let from = param(params, "From");
    let mss = param(params, "MessagingServiceSid");
    if from.is_none() && mss.is_none() {
        return bad(21603, "A 'From' phone number is required.".into());
    }
    if let Some(from) = from
        && !valid_from(from)
    {
        return bad(
            21212,
            format!(
                "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
            ),
        );
    }
    if let Some(mss) = mss
        && !is_sid(mss, "MG")
    {
        return bad(
            21701,
            format!("The Messaging Service Sid {mss} is invalid."),
        );
    }
    let body = param(params, "Body");
    let content = param(params, "ContentSid");
    let media: Vec<&str> = params
        .iter()
        .filter(|(k, v)| k == "MediaUrl" && !v.is_empty())
        .map(|(_, v)| v.as_str())
        .collect();
    if body.is_none() && content.is_none() && media.is_empty() {
        return bad(21602, "Message body is required.".into());
    }
    if let Some(body) = body
        && body.chars().count() > 1600
    {
        return bad(
            21617,
            "The concatenated message body exceeds the 1600 character limit.".into(),
        );
    }
    if let Some(content) = content
        && !is_sid(content, "HX")
    {
        return bad(21655, "The ContentSid is Invalid.".into());
    }
    if let Some(vars) = param(params, "ContentVariables")
        && !serde_json::from_str::<Value>(vars).is_ok_and(|v| v.is_object())
    {
        return bad(21656, "The ContentVariables Parameter is invalid.".into());
    }
    if let Some(cb) = param(params, "StatusCallback")
        && !valid_url(cb)
    {
        return bad(
            21609,
            format!("The StatusCallback URL {cb} is not a valid URL."),
        );
    }
    if media.iter().any(|m| !valid_url(m)) {
        return bad(21620, "Invalid media URL(s).".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

async fn create(
    State(fake): State<Arc<Fake>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.shared.count(|c| c.requests += 1);
    let response = create_inner(&fake, &account, &headers, &body).await;
    if !response.status().is_success() {
        fake.shared.count(|c| c.rejected += 1);
    }
    response
}

async fn create_inner(
    fake: &Arc<Fake>,
    account: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if !is_sid(account, "AC") {
        return resource_not_found(&format!("/2010-04-01/Accounts/{account}/Messages.json"));
    }
    if !basic_auth_ok(headers, account, &fake.auth_token) {
        return unauthorized();
    }
    // The slot is held through the added latency, so `--latency-ms` with
    // `--max-concurrency` models Twilio's per-account concurrency limit.
    let Some(_slot) = fake.shared.enter() else {
        return error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
    };
    fake.shared.latency().await;
    let params = parse_form(&String::from_utf8_lossy(body));
    if let Err((code, message)) = validate(&params) {
        return error(StatusCode::BAD_REQUEST, code, message);
    }
    let concurrent = fake.shared.in_flight();
    if fake.shared.roll_failure() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "An internal server error has occurred",
        );
    }
    let retry_after = fake.shared.knobs.retry_after_s;
    let to = param(&params, "To").unwrap_or_default();
    let from = param(&params, "From").unwrap_or_default();
    let bad = |code: u32, msg: String| error(StatusCode::BAD_REQUEST, code, msg);
    match magic_tail(split_channel(from).1) {
        Some("0001") => {
            return bad(
                21212,
                format!(
                    "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
                ),
            );
        }
        Some("0007") => {
            return bad(
                21606,
                format!(
                    "The 'From' phone number provided ({from}) is not a valid message-capable Twilio phone number for this destination."
                ),
            );
        }
        Some("0008") => {
            return bad(
                21611,
                "This 'From' number has exceeded the maximum number of queued messages".into(),
            );
        }
        _ => {}
    }
    match magic_tail(split_channel(to).1) {
        Some("0001") => {
            return bad(
                21211,
                format!("The 'To' number {to} is not a valid phone number."),
            );
        }
        Some("0002") => {
            return bad(
                21612,
                format!(
                    "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {from} via SMS."
                ),
            );
        }
        Some("0003") => {
            return bad(
                21408,
                format!(
                    "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."
                ),
            );
        }
        Some("0004") => {
            return bad(21610, "Attempt to send to unsubscribed recipient".into());
        }
        Some("0009") => {
            return bad(
                21614,
                format!("'To' number {to} is not a valid mobile number"),
            );
        }
        Some("0429") => {
            return with_retry_after(
                error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
                retry_after,
            );
        }
        Some("0500") => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "An internal server error has occurred",
            );
        }
        Some("0501") => {
            fake.create_message(account, &params);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "An internal server error has occurred",
            );
        }
        Some("0503") => {
            return with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    20503,
                    "Service Unavailable",
                ),
                retry_after,
            );
        }
        Some("0504") => {
            hang().await;
        }
        Some("0505") => {
            fake.create_message(account, &params);
            hang().await;
        }
        _ => {}
    }
    let json = fake.create_message(account, &params);
    let mut r = respond_bytes(StatusCode::CREATED, json);
    r.headers_mut()
        .insert("twilio-concurrent-requests", HeaderValue::from(concurrent));
    r
}

/// Parses a `DateSent` bound: `YYYY-MM-DD` (a whole UTC day), RFC 3339 or RFC 2822.
/// Returns the inclusive range it covers.
fn parse_date(s: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let start = d.and_hms_opt(0, 0, 0)?.and_utc();
        return Some((start, start + Days::days(1) - Days::nanoseconds(1)));
    }
    let t = DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_rfc2822(s))
        .ok()?
        .with_timezone(&Utc);
    Some((t, t))
}

async fn list(
    State(fake): State<Arc<Fake>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    fake.shared.latency().await;
    let path = format!("/2010-04-01/Accounts/{account}/Messages.json");
    if !is_sid(&account, "AC") {
        return resource_not_found(&path);
    }
    if !basic_auth_ok(&headers, &account, &fake.auth_token) {
        return unauthorized();
    }
    let query = parse_form(query.as_deref().unwrap_or(""));
    let mut filters: Vec<(String, String)> = Vec::new();
    let (mut to, mut from) = (None, None);
    let (mut on, mut after, mut before) = (None, None, None);
    let mut page_size: usize = 50;
    let mut page: usize = 0;
    let bad = |what: &str| {
        error(
            StatusCode::BAD_REQUEST,
            20001,
            format!("Invalid value for {what}"),
        )
    };
    for (k, v) in &query {
        // `DateSent>=x` arrives as key `DateSent>`; an encoded `>=` as `DateSent>=`.
        let key = k.strip_suffix('=').unwrap_or(k);
        match key {
            "To" => to = Some(v.clone()),
            "From" => from = Some(v.clone()),
            "DateSent" | "DateSent>" | "DateSent<" => {
                let Some(range) = parse_date(v) else {
                    return bad(key);
                };
                match key {
                    "DateSent" => on = Some(range),
                    "DateSent>" => after = Some(range.0),
                    _ => before = Some(range.1),
                }
            }
            "PageSize" => match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => page_size = n,
                _ => return bad("PageSize"),
            },
            "Page" => match v.parse::<usize>() {
                Ok(n) => page = n,
                Err(_) => return bad("Page"),
            },
            _ => {}
        }
        if matches!(key, "To" | "From" | "DateSent" | "DateSent>" | "DateSent<") {
            filters.push((key.to_owned(), v.clone()));
        }
    }
    let store = lock(&fake.store);
    let mut matching: Vec<&Message> = store
        .messages
        .values()
        .filter(|m| m.account_sid == account)
        .filter(|m| to.as_ref().is_none_or(|t| &m.to == t))
        .filter(|m| {
            from.as_ref()
                .is_none_or(|f| m.from.as_deref().unwrap_or(&m.sender) == f)
        })
        .filter(|m| {
            let t = m.sent_or_created();
            on.is_none_or(|(a, b)| a <= t && t <= b)
                && after.is_none_or(|a| a <= t)
                && before.is_none_or(|b| t <= b)
        })
        .collect();
    matching.sort_by_key(|m| std::cmp::Reverse(m.seq));
    let start = page.saturating_mul(page_size);
    let items: Vec<&Message> = matching
        .iter()
        .skip(start)
        .take(page_size)
        .copied()
        .collect();
    let uri_for = |p: usize, token: Option<String>| {
        let mut q = filters.clone();
        q.push(("PageSize".into(), page_size.to_string()));
        q.push(("Page".into(), p.to_string()));
        if let Some(t) = token {
            q.push(("PageToken".into(), t));
        }
        format!("{path}?{}", form_encode(&q))
    };
    let next = (start + items.len() < matching.len())
        .then(|| {
            items
                .last()
                .map(|m| uri_for(page + 1, Some(format!("PA{}", m.sid))))
        })
        .flatten();
    let previous =
        (page > 0).then(|| uri_for(page - 1, items.first().map(|m| format!("PB{}", m.sid))));
    let body = json!({
        "end": (start + items.len()).saturating_sub(1).max(start),
        "first_page_uri": uri_for(0, None),
        "next_page_uri": next,
        "page": page,
        "page_size": page_size,
        "previous_page_uri": previous,
        "start": start,
        "uri": uri_for(page, None),
        "messages": items.iter().map(|m| m.to_json(false)).collect::<Vec<_>>(),
    });
    drop(store);
    respond(StatusCode::OK, body)
}

async fn fetch(
    State(fake): State<Arc<Fake>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    fake.shared.latency().await;
    let path = format!("/2010-04-01/Accounts/{account}/Messages/{file}");
    if !is_sid(&account, "AC") {
        return resource_not_found(&path);
    }
    if !basic_auth_ok(&headers, &account, &fake.auth_token) {
        return unauthorized();
    }
    let Some(sid) = file.strip_suffix(".json") else {
        return resource_not_found(&path);
    };
    let store = lock(&fake.store);
    match store.messages.get(sid) {
        Some(m) if m.account_sid == account => respond(StatusCode::OK, m.to_json(false)),
        _ => resource_not_found(&path),
    }
}

async fn stats(State(fake): State<Arc<Fake>>, query: RawQuery) -> Response {
    Json(fake.shared.stats_json(wants_per_recipient(&query))).into_response()
}

async fn reset(State(fake): State<Arc<Fake>>) -> Response {
    fake.shared.reset();
    *lock(&fake.store) = Store::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn all_messages(State(fake): State<Arc<Fake>>) -> Response {
    let store = lock(&fake.store);
    let list: Vec<MessageJson<'_>> = store
        .order
        .iter()
        .filter_map(|sid| store.messages.get(sid))
        .map(|m| m.to_json(false))
        .collect();
    // Written while the store is held, so the lock is released before the answer goes out.
    let body = serde_json::to_vec(&list).unwrap_or_default();
    drop(list);
    drop(store);
    json_response(StatusCode::OK, body)
}
