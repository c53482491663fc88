//! Fake WhatsApp Cloud API (contracts README §2.1–2.6), loopback only.
//!
//! Endpoints:
//!
//! * `POST /{version}/{phone_number_id}/messages` (`version` like `v23.0`,
//!   `phone_number_id` digits): `Authorization: Bearer <non-empty>` (equal to
//!   `--access-token` when that is set), else 401 code 190. JSON body checks: valid JSON
//!   object, `messaging_product` = `whatsapp`, `recipient_type` `individual|group` if
//!   present, `to` present (100) and digits with an optional `+` (131009), `type` one of
//!   the spec's types (default `text`) with its object present; `text.body` 1..=4096
//!   chars; `template.name` and `template.language.code`; `biz_opaque_callback_data` at
//!   most 512 bytes (all 100). `--max-concurrency` → 429/130429, `--fail-rate` → 500/131000,
//!   then the magic numbers below. Success: `200 {"messaging_product":"whatsapp",
//!   "contacts":[{"input":to,"wa_id":digits}],"messages":[{"id":"wamid.…",
//!   "message_status":"accepted"}]}`.
//! * Not Meta's: `GET /_fake/stats[?per_recipient=0]`, `POST /_fake/reset`,
//!   `GET /_fake/messages`.
//!
//! Errors use Graph's shape: `{"error":{"message":"(#code) title","type":"OAuthException",
//! "code","error_subcode","error_data":{"messaging_product","details"},"error_user_title",
//! "error_user_msg","is_transient","fbtrace_id"}}`.
//!
//! Status webhooks go to `--webhook-url` as `object: whatsapp_business_account` with one
//! `statuses[]` entry per POST (`id` = wamid, `status`, `timestamp` string, `recipient_id`,
//! `biz_opaque_callback_data` echoed, `conversation`/`pricing` except on `failed`,
//! `errors` on `failed`), signed with `X-Hub-Signature-256`. Like Meta, the JSON escapes
//! non-ASCII as lowercase `\uXXXX` and `/` as `\/`, so only the raw bytes verify.
//! Sequence: `sent`, `delivered`, `read` up to `--final-status`; `--skip-delivered` drops
//! `delivered` before `read` (delivered and read at the same moment); `failed` comes alone.
//!
//! Magic numbers: `to` whose digits are `1500555` then at least four more; the last four
//! pick the behaviour. Every other number succeeds.
//!
//! | last 4 | HTTP | code   | behaviour |
//! |--------|------|--------|-----------|
//! | 1026   | 400  | 131026 | message undeliverable |
//! | 1047   | 400  | 131047 | re-engagement (outside 24 h window); only non-template messages, a template succeeds |
//! | 1049   | 400  | 131049 | not delivered for ecosystem engagement |
//! | 1050   | 400  | 131050 | user stopped marketing messages |
//! | 1021   | 400  | 131021 | recipient cannot be sender |
//! | 2001   | 404  | 132001 | template does not exist |
//! | 0429   | 429  | 130429 | throughput rate limit hit |
//! | 1056   | 429  | 131056 | pair rate limit hit |
//! | 0500   | 500  | 131000 | something went wrong; not created |
//! | 0501   | 500  | 131000 | something went wrong, but the message WAS created (webhooks follow) |
//! | 0503   | 503  | 131016 | service unavailable; not created |
//! | 0504   | –    | –      | hang: never answers; not created |
//! | 0505   | –    | –      | hang: never answers; the message WAS created |
//! | 8026, 8049, 8050, 8000 | 200 | – | then a `failed` webhook with 131026 / 131049 / 131050 / 131000 |
//!
//! HTTP statuses on errors are our choice; Meta says to branch on `code`.

use crate::callbacks::{self, Outbound, Step};
use crate::common::{
    Knobs, Shared, hang, lock, magic_tail, random_bytes, random_hex, wants_per_recipient,
};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, ValueEnum};
use herald_core::signatures::meta_signature;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

pub const HELP: &str = "\
Magic numbers: a `to` whose digits are `1500555` followed by at least 4 digits is magic
and its LAST FOUR digits pick the behaviour; all others succeed.

  last4  HTTP  code    behaviour
  1026   400   131026  message undeliverable
  1047   400   131047  re-engagement (24 h window); non-template only, templates succeed
  1049   400   131049  not delivered (ecosystem engagement)
  1050   400   131050  user stopped marketing messages
  1021   400   131021  recipient cannot be sender
  2001   404   132001  template does not exist
  0429   429   130429  throughput rate limit hit
  1056   429   131056  pair rate limit hit
  0500   500   131000  not created
  0501   500   131000  message WAS created (webhooks follow)
  0503   503   131016  service unavailable; not created
  0504   -     -       hang, never answers; not created
  0505   -     -       hang, never answers; message WAS created
  8026/8049/8050/8000  200  then a `failed` webhook: 131026/131049/131050/131000

Endpoints: POST /{version}/{phone_number_id}/messages, GET /_fake/stats,
POST /_fake/reset, GET /_fake/messages.";

const TYPES: &[&str] = &[
    "text",
    "template",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FinalStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

#[derive(Args, Debug)]
pub struct WhatsappArgs {
    /// App Secret: signs webhooks (`X-Hub-Signature-256`).
    #[arg(long)]
    pub app_secret: String,
    /// Where status webhooks are POSTed.
    #[arg(long)]
    pub webhook_url: String,
    /// If set, the bearer token must equal it; otherwise any non-empty token passes.
    #[arg(long)]
    pub access_token: Option<String>,
    /// Last status of a normal message's lifecycle.
    #[arg(long, value_enum, default_value_t = FinalStatus::Delivered)]
    pub final_status: FinalStatus,
    /// With `--final-status read`, skip the `delivered` webhook.
    #[arg(long)]
    pub skip_delivered: bool,
    /// `entry[].id` of webhooks.
    #[arg(long, default_value = "102290129340398")]
    pub waba_id: String,
    /// `metadata.display_phone_number` of webhooks.
    #[arg(long, default_value = "15550783881")]
    pub display_phone_number: String,
    #[command(flatten)]
    pub knobs: Knobs,
}

struct Message {
    wamid: String,
    to: String,
    wa_id: String,
    phone_number_id: String,
    kind: String,
    biz_opaque: Option<String>,
    status: &'static str,
    rank: u8,
    error_code: Option<u32>,
    created: i64,
    /// The request's `template` object, for a template message.
    template: Option<Value>,
}

#[derive(Default)]
struct Store {
    messages: HashMap<String, Message>,
    order: Vec<String>,
}

pub struct Fake {
    shared: Arc<Shared>,
    app_secret: String,
    webhook_url: String,
    access_token: Option<String>,
    final_status: FinalStatus,
    skip_delivered: bool,
    waba_id: String,
    display_phone_number: String,
    store: Mutex<Store>,
}

pub fn router(args: WhatsappArgs) -> anyhow::Result<(Router, Knobs)> {
    let knobs = args.knobs.clone();
    let fake = Arc::new(Fake {
        shared: Arc::new(Shared::new(args.knobs)?),
        app_secret: args.app_secret,
        webhook_url: args.webhook_url,
        access_token: args.access_token.filter(|t| !t.is_empty()),
        final_status: args.final_status,
        skip_delivered: args.skip_delivered,
        waba_id: args.waba_id,
        display_phone_number: args.display_phone_number,
        store: Mutex::new(Store::default()),
    });
    let router = Router::new()
        .route("/{version}/{phone_number_id}/messages", post(send))
        // The business account's templates (the path's id is the WABA's, not a number's).
        .route(
            "/{version}/{phone_number_id}/message_templates",
            get(message_templates),
        )
        .route("/_fake/stats", get(stats))
        .route("/_fake/reset", post(reset))
        .route("/_fake/messages", get(all_messages))
        .fallback(unknown_path)
        .with_state(fake);
    Ok((router, knobs))
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

fn fbtrace_id() -> String {
    let raw = STANDARD.encode(random_bytes(16));
    format!(
        "A{}",
        raw.replace(['+', '/', '='], "")
            .chars()
            .take(22)
            .collect::<String>()
    )
}

/// `(title, details, subcode, transient)` for the codes the fake produces.
fn describe(code: u32) -> (&'static str, &'static str, Option<u32>, bool) {
    match code {
        131026 => (
            "Message undeliverable",
            "Message Undeliverable.",
            Some(2_494_010),
            false,
        ),
        131047 => (
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            Some(2_494_010),
            false,
        ),
        131049 => (
            "This message was not delivered to maintain healthy ecosystem engagement.",
            "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
            Some(2_494_010),
            false,
        ),
        131050 => (
            "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business.",
            "The recipient has stopped marketing messages from this business.",
            Some(2_494_010),
            false,
        ),
        131021 => (
            "Recipient cannot be sender.",
            "Sender and recipient phone number is the same.",
            Some(2_494_010),
            false,
        ),
        132001 => (
            "Template name does not exist in the translation",
            "template name does not exist in the language",
            Some(2_494_010),
            false,
        ),
        130429 => (
            "Rate limit hit",
            "Cloud API message throughput has been reached.",
            Some(2_494_055),
            true,
        ),
        131056 => (
            "(Business Account, Consumer Account) pair rate limit hit",
            "Too many messages sent from the sender phone number to the same recipient phone number in a short period of time.",
            Some(2_494_055),
            true,
        ),
        131000 => (
            "Something went wrong",
            "Message failed to send due to an unknown error.",
            None,
            true,
        ),
        131016 => (
            "Service unavailable",
            "A service is temporarily unavailable.",
            None,
            true,
        ),
        _ => ("Unknown error", "Unknown error.", None, false),
    }
}

fn graph_error(status: StatusCode, code: u32) -> Response {
    let (title, details, subcode, transient) = describe(code);
    let mut error = json!({
        "message": format!("(#{code}) {title}"),
        "type": "OAuthException",
        "code": code,
        "error_data": { "messaging_product": "whatsapp", "details": details },
        "error_user_title": title,
        "error_user_msg": details,
        "is_transient": transient,
        "fbtrace_id": fbtrace_id(),
    });
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

/// A parameter error (code 100 or 131009) with a free-form message.
fn param_error(code: u32, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": {
            "message": format!("(#{code}) {message}"),
            "type": "OAuthException",
            "code": code,
            "error_data": { "messaging_product": "whatsapp", "details": message },
            "fbtrace_id": fbtrace_id(),
        }})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    let message = "Invalid OAuth access token - Cannot parse access token";
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": {
            "message": message,
            "type": "OAuthException",
            "code": 190,
            "fbtrace_id": fbtrace_id(),
        }})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "OAuth \"Facebook Platform\" \"invalid_token\" \"{message}\""
    )) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

async fn unknown_path(uri: axum::http::Uri) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": {
            "message": format!("Unknown path components: {}", uri.path()),
            "type": "OAuthException",
            "code": 2500,
            "fbtrace_id": fbtrace_id(),
        }})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Webhook payload (field order as Meta sends it)
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Envelope<'a> {
    object: &'static str,
    entry: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    changes: [Change<'a>; 1],
}

#[derive(Serialize)]
struct Change<'a> {
    value: ChangeValue<'a>,
    field: &'static str,
}

#[derive(Serialize)]
struct ChangeValue<'a> {
    messaging_product: &'static str,
    metadata: Metadata<'a>,
    statuses: [StatusObj; 1],
}

#[derive(Serialize)]
struct Metadata<'a> {
    display_phone_number: &'a str,
    phone_number_id: &'a str,
}

#[derive(Serialize)]
struct StatusObj {
    id: String,
    status: &'static str,
    timestamp: String,
    recipient_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_opaque_callback_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Value>,
}

/// Meta's wire form: non-ASCII as lowercase `\uXXXX` (UTF-16 units) and `/` as `\/`.
/// Both only ever occur inside JSON strings, so the result is equivalent JSON.
fn meta_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c == '/' {
            out.push_str("\\/");
        } else if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

fn rank(status: &str) -> u8 {
    match status {
        "accepted" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "failed" => 4,
        _ => 0,
    }
}

impl Fake {
    fn plan(&self, digits: &str) -> Vec<(&'static str, Option<u32>)> {
        let failure = match magic_tail(digits) {
            Some("8026") => Some(131_026),
            Some("8049") => Some(131_049),
            Some("8050") => Some(131_050),
            Some("8000") => Some(131_000),
            _ => None,
        };
        if let Some(code) = failure {
            return vec![("failed", Some(code))];
        }
        match self.final_status {
            FinalStatus::Sent => vec![("sent", None)],
            FinalStatus::Delivered => vec![("sent", None), ("delivered", None)],
            FinalStatus::Read if self.skip_delivered => vec![("sent", None), ("read", None)],
            FinalStatus::Read => vec![("sent", None), ("delivered", None), ("read", None)],
            FinalStatus::Failed => vec![(
                "failed",
                Some(self.shared.knobs.final_error_code.unwrap_or(131_026)),
            )],
        }
    }

    fn advance(&self, wamid: &str, status: &'static str, code: Option<u32>) -> Option<Outbound> {
        let mut store = lock(&self.store);
        let msg = store.messages.get_mut(wamid)?;
        if rank(status) > msg.rank {
            msg.status = status;
            msg.rank = rank(status);
            if code.is_some() {
                msg.error_code = code;
            }
        }
        let now = chrono::Utc::now().timestamp();
        let category = if msg.kind == "template" {
            "marketing"
        } else {
            "service"
        };
        let (conversation, pricing) = if status == "failed" {
            (None, None)
        } else {
            let mut conversation = json!({
                "id": random_hex(16),
                "origin": { "type": category },
            });
            if status == "sent" {
                conversation["expiration_timestamp"] = json!((msg.created + 86_400).to_string());
            }
            (
                Some(conversation),
                Some(json!({ "billable": true, "pricing_model": "PMP", "category": category })),
            )
        };
        let errors = code.map(|code| {
            let (title, details, _, _) = describe(code);
            json!([{
                "code": code,
                "title": title,
                "message": title,
                "error_data": { "details": details },
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }])
        });
        let envelope = Envelope {
            object: "whatsapp_business_account",
            entry: [Entry {
                id: &self.waba_id,
                changes: [Change {
                    value: ChangeValue {
                        messaging_product: "whatsapp",
                        metadata: Metadata {
                            display_phone_number: &self.display_phone_number,
                            phone_number_id: &msg.phone_number_id,
                        },
                        statuses: [StatusObj {
                            id: msg.wamid.clone(),
                            status,
                            timestamp: now.to_string(),
                            recipient_id: msg.wa_id.clone(),
                            conversation,
                            pricing,
                            biz_opaque_callback_data: msg.biz_opaque.clone(),
                            errors,
                        }],
                    },
                    field: "messages",
                }],
            }],
        };
        let body = meta_escape(&serde_json::to_string(&envelope).ok()?).into_bytes();
        drop(store);
        let signature = meta_signature(&self.app_secret, &body);
        Some(Outbound {
            url: self.webhook_url.clone(),
            content_type: "application/json",
            headers: vec![
                ("x-hub-signature-256", signature),
                ("user-agent", "facebookexternalua".to_owned()),
            ],
            body,
        })
    }

    fn create_message(self: &Arc<Self>, phone_number_id: &str, req: &SendReq) -> String {
        let mut id = req.wa_id.as_bytes().to_vec();
        id.extend(random_bytes(18));
        let wamid = format!("wamid.HBgL{}", STANDARD.encode(id));
        let msg = Message {
            wamid: wamid.clone(),
            to: req.to.clone(),
            wa_id: req.wa_id.clone(),
            phone_number_id: phone_number_id.to_owned(),
            kind: req.kind.clone(),
            biz_opaque: req.biz_opaque.clone(),
            status: "accepted",
            rank: 0,
            error_code: None,
            created: chrono::Utc::now().timestamp(),
            template: req.template.clone(),
        };
        {
            let mut store = lock(&self.store);
            store.order.push(wamid.clone());
            store.messages.insert(wamid.clone(), msg);
        }
        self.shared.record_created(&req.wa_id);
        let steps: Vec<Step> = self
            .plan(&req.wa_id)
            .into_iter()
            .map(|(status, code)| {
                let fake = Arc::clone(self);
                let wamid = wamid.clone();
                Box::new(move || fake.advance(&wamid, status, code)) as Step
            })
            .collect();
        callbacks::schedule(&self.shared, steps);
        wamid
    }
}

// ---------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------

struct SendReq {
    to: String,
    wa_id: String,
    kind: String,
    biz_opaque: Option<String>,
    template: Option<Value>,
}

/// The fake business account's message templates: `(name, language, status, body)`.
const TEMPLATES: &[(&str, &str, &str, &str)] = &[
    (
        "order_update",
        "en_US",
        "APPROVED",
        "Hi {{1}}, your order {{2}} has shipped.",
    ),
    (
        "order_update",
        "pt_BR",
        "APPROVED",
        "Olá {{1}}, o seu pedido {{2}} foi enviado.",
    ),
    (
        "fall_promo",
        "en_US",
        "REJECTED",
        "Hi {{1}}, use {{2}} for 25% off.",
    ),
    (
        "hello_world",
        "en_US",
        "APPROVED",
        "Welcome and congratulations!!",
    ),
];

/// `GET /{version}/{waba_id}/message_templates[?name=]`: the templates above, as the Graph
/// API lists them.
async fn message_templates(
    State(fake): State<Arc<Fake>>,
    Path((version, waba_id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // Template names are lowercase letters, digits and underscores: no decoding needed.
    let wanted = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="));
    if !bearer_ok(&headers, fake.access_token.as_deref()) {
        return unauthorized();
    }
    if !valid_version(&version) || waba_id != fake.waba_id {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": {
                "message": format!("Unsupported get request. Object with ID '{waba_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."),
                "type": "GraphMethodException",
                "code": 100,
                "error_subcode": 33,
                "fbtrace_id": fbtrace_id(),
            }})),
        )
            .into_response();
    }
    let data: Vec<Value> = TEMPLATES
        .iter()
        .enumerate()
        .filter(|(_, (name, ..))| wanted.is_none_or(|n| n == *name))
        .map(|(i, (name, language, status, body))| {
            json!({
                "name": name,
                "language": language,
                "status": status,
                "category": "UTILITY",
                "id": format!("{}", 1_192_339_204_654_487u64 + i as u64),
                "components": [{"type": "BODY", "text": body}],
            })
        })
        .collect();
    Json(json!({"data": data, "paging": {"cursors": {"before": "MAZDZD", "after": "MjQZD"}}}))
        .into_response()
}

/// Body validation; `Err` is the 400's `(code, message)`.
fn validate(body: &[u8]) -> Result<SendReq, (u32, String)> {
    fn bad(code: u32, message: impl Into<String>) -> (u32, String) {
        (code, message.into())
    }
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad(
            100,
            "Invalid parameter: the body must be a JSON object",
        ));
    };
    match v.get("messaging_product").and_then(Value::as_str) {
        Some("whatsapp") => {}
        Some(other) => {
            return Err(bad(
                100,
                format!("Param messaging_product must be one of {{WHATSAPP}} - got \"{other}\"."),
            ));
        }
        None => {
            return Err(bad(100, "The parameter messaging_product is required."));
        }
    }
    if let Some(rt) = v.get("recipient_type")
        && !matches!(rt.as_str(), Some("individual" | "group"))
    {
        return Err(bad(
            100,
            "Param recipient_type must be one of {INDIVIDUAL, GROUP}.",
        ));
    }
    let Some(to) = v
        .get("to")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return Err(bad(100, "The parameter to is required."));
    };
    let digits = to.strip_prefix('+').unwrap_or(to);
    if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(131_009, "Parameter value is not valid"));
    }
    let kind = match v.get("type") {
        None => "text",
        Some(t) => match t.as_str() {
            Some(t) if TYPES.contains(&t) => t,
            _ => {
                return Err(bad(
                    100,
                    format!(
                        "Param type must be one of {{{}}}.",
                        TYPES.join(", ").to_uppercase()
                    ),
                ));
            }
        },
    };
    let Some(payload) = v.get(kind).filter(|p| p.is_object()) else {
        return Err(bad(100, format!("The parameter {kind} is required.")));
    };
    match kind {
        "text" => {
            let body = payload.get("body").and_then(Value::as_str).unwrap_or("");
            if body.is_empty() {
                return Err(bad(100, "The parameter text['body'] is required."));
            }
            if body.chars().count() > 4096 {
                return Err(bad(
                    100,
                    "Param text['body'] must be at most 4096 characters long.",
                ));
            }
        }
        "template" => {
            if payload
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(bad(100, "The parameter template['name'] is required."));
            }
            let code = payload
                .get("language")
                .and_then(|l| l.get("code"))
                .and_then(Value::as_str);
            if code.is_none_or(str::is_empty) {
                return Err(bad(
                    100,
                    "The parameter template['language']['code'] is required.",
                ));
            }
        }
        _ => {}
    }
    let biz_opaque = match v.get("biz_opaque_callback_data") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 512 => Some(s.clone()),
        Some(_) => {
            return Err(bad(
                100,
                "Param biz_opaque_callback_data must be a string of at most 512 characters.",
            ));
        }
    };
    Ok(SendReq {
        to: to.to_owned(),
        wa_id: digits.to_owned(),
        kind: kind.to_owned(),
        biz_opaque,
        template: (kind == "template").then(|| payload.clone()),
    })
}

fn bearer_ok(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    let token = token.trim();
    scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && expected.is_none_or(|e| e == token)
}

fn valid_version(v: &str) -> bool {
    v.strip_prefix('v')
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
}

async fn send(
    State(fake): State<Arc<Fake>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.shared.count(|c| c.requests += 1);
    let response = send_inner(&fake, &version, &phone_number_id, &headers, &body).await;
    if !response.status().is_success() {
        fake.shared.count(|c| c.rejected += 1);
    }
    response
}

async fn send_inner(
    fake: &Arc<Fake>,
    version: &str,
    phone_number_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if !bearer_ok(headers, fake.access_token.as_deref()) {
        return unauthorized();
    }
    if !valid_version(version) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": {
                "message": format!("Unknown path components: /{version}/{phone_number_id}/messages"),
                "type": "OAuthException",
                "code": 2500,
                "fbtrace_id": fbtrace_id(),
            }})),
        )
            .into_response();
    }
    if phone_number_id.is_empty() || !phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
        let message = format!(
            "Unsupported post request. Object with ID '{phone_number_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
        );
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": {
                "message": message,
                "type": "GraphMethodException",
                "code": 100,
                "error_subcode": 33,
                "fbtrace_id": fbtrace_id(),
            }})),
        )
            .into_response();
    }
    let Some(_slot) = fake.shared.enter() else {
        return graph_error(StatusCode::TOO_MANY_REQUESTS, 130_429);
    };
    fake.shared.latency().await;
    let req = match validate(body) {
        Ok(r) => r,
        Err((code, message)) => return param_error(code, message),
    };
    if fake.shared.roll_failure() {
        return graph_error(StatusCode::INTERNAL_SERVER_ERROR, 131_000);
    }
    match magic_tail(&req.wa_id) {
        Some("1026") => return graph_error(StatusCode::BAD_REQUEST, 131_026),
        Some("1047") if req.kind != "template" => {
            return graph_error(StatusCode::BAD_REQUEST, 131_047);
        }
        Some("1049") => return graph_error(StatusCode::BAD_REQUEST, 131_049),
        Some("1050") => return graph_error(StatusCode::BAD_REQUEST, 131_050),
        Some("1021") => return graph_error(StatusCode::BAD_REQUEST, 131_021),
        Some("2001") => return graph_error(StatusCode::NOT_FOUND, 132_001),
        Some("0429") => return graph_error(StatusCode::TOO_MANY_REQUESTS, 130_429),
        Some("1056") => return graph_error(StatusCode::TOO_MANY_REQUESTS, 131_056),
        Some("0500") => return graph_error(StatusCode::INTERNAL_SERVER_ERROR, 131_000),
        Some("0501") => {
            fake.create_message(phone_number_id, &req);
            return graph_error(StatusCode::INTERNAL_SERVER_ERROR, 131_000);
        }
        Some("0503") => return graph_error(StatusCode::SERVICE_UNAVAILABLE, 131_016),
        Some("0504") => hang().await,
        Some("0505") => {
            fake.create_message(phone_number_id, &req);
            hang().await;
        }
        _ => {}
    }
    let wamid = fake.create_message(phone_number_id, &req);
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": req.to, "wa_id": req.wa_id }],
        "messages": [{ "id": wamid, "message_status": "accepted" }],
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// Inspection
// ---------------------------------------------------------------------------------------

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
    let list: Vec<Value> = store
        .order
        .iter()
        .filter_map(|id| store.messages.get(id))
        .map(|m| {
            json!({
                "id": m.wamid,
                "to": m.to,
                "wa_id": m.wa_id,
                "phone_number_id": m.phone_number_id,
                "type": m.kind,
                "biz_opaque_callback_data": m.biz_opaque,
                "status": m.status,
                "error_code": m.error_code,
                "created": m.created,
                "template": m.template,
            })
        })
        .collect();
    drop(store);
    Json(list).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_meta() {
        let s = serde_json::to_string(&json!({"a": "ä/😀"})).unwrap_or_default();
        let e = meta_escape(&s);
        assert_eq!(e, r#"{"a":"\u00e4\/\ud83d\ude00"}"#);
        let back: Value = serde_json::from_str(&e).unwrap_or_default();
        assert_eq!(back["a"], "ä/😀");
    }
}
