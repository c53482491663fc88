//! Email bounce, complaint and delivery webhooks (docs/EMAIL.md) through the real router on
//! both stores: Amazon SES through SNS (`/webhooks/smtp/{id}/ses`), Postmark (`/postmark`)
//! and SendGrid (`/sendgrid`). Requests are signed here as the providers sign them (SNS
//! with the test certificate's key, served by a local double; SendGrid with a P-256 key
//! whose public half the channel holds), independently of the code under test.
//!
//! A verified hard bounce makes the message undelivered with the provider's reason and
//! suppresses the address (`contact.unsubscribed`, source `bounce`); a soft bounce is only
//! noted; a complaint suppresses (source `complaint`); a delivery marks it delivered. What
//! does not prove its provider, is for a channel of another kind or for none gets one and
//! the same 403 and changes nothing.

use crate::api::{Auth, Reply, TestApp, api_test};
use crate::support::{all_messages, assert_counters_match};
use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald::address::Address;
use herald::domain::{MessageStatus, Role};
use herald::ids::{CampaignId, ChannelId, MessageId, NotificationId, OrgId};
use herald::store::{ContactInput, Outcome, OutcomeKind, Store};
use rustls::SignatureScheme;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SigningKey;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The SNS test certificate and its private key (herald-core's fixtures).
const SNS_CERT: &str = include_str!("../../crates/herald-core/src/testdata/sns-test-cert.pem");
const SNS_KEY: &[u8] = include_bytes!("../../crates/herald-core/src/testdata/sns-test-key.pk8");
const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:ses-bounces";
const OTHER_TOPIC: &str = "arn:aws:sns:us-west-2:999999999999:someone-elses";

/// Two P-256 keys (PKCS#8, made with `openssl genpkey -algorithm EC -pkeyopt
/// ec_paramgen_curve:P-256`): the channel's SendGrid key and someone else's.
const SENDGRID_KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgULUQglIQOTz9UP/uVEtIR/0ad15+bIgN47EmOkjUQZKhRANCAARGmiQIV5+8nv59G0KDU23QzaUz4cY6itfzMHYF1tHt2BUMFL3vbvu+I7+8aavwOpW7YmdUiVfp4IQ4PBGa2MrX";
const OTHER_SENDGRID_KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6EF6/XLoDxUN2wzGeJFnaWhxoqLX7gWYNE6S4MNfMIyhRANCAASya2jijESPbdo6mEWxWg0KAUdeYV4JCy8JdoOZxBknZgZXwLzD3Tu1DIPuuUz10IzjCVSkClDX+EYHRWP4bQG1";

const POSTMARK_TOKEN: &str = "postmark-token-0123456789abcdef";

fn signing_key(pkcs8: &[u8]) -> Arc<dyn SigningKey> {
    rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pkcs8.to_vec(),
    )))
    .unwrap()
}

fn sign(key: &dyn SigningKey, scheme: SignatureScheme, message: &[u8]) -> Vec<u8> {
    key.choose_scheme(&[scheme]).unwrap().sign(message).unwrap()
}

fn sendgrid_key(which: &str) -> Arc<dyn SigningKey> {
    signing_key(&STANDARD.decode(which).unwrap())
}

/// The Base64 SubjectPublicKeyInfo SendGrid shows as the verification key.
fn sendgrid_public(which: &str) -> String {
    STANDARD.encode(sendgrid_key(which).public_key().unwrap().as_ref())
}

// ------------------------------------------------------------------ the SNS double

/// A local stand-in for Amazon SNS: serves the signing certificate under `certs/` and
/// records each SubscribeURL fetched under `confirm`.
struct SnsDouble {
    /// `http://127.0.0.1:PORT/`, the app's `sns_certificate_url_prefix`.
    prefix: String,
    port: u16,
    cert_fetches: Arc<AtomicUsize>,
    confirmations: Arc<Mutex<Vec<String>>>,
}

impl SnsDouble {
    async fn start() -> SnsDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cert_fetches = Arc::new(AtomicUsize::new(0));
        let confirmations = Arc::new(Mutex::new(Vec::new()));
        let fetches = cert_fetches.clone();
        let confirmed = confirmations.clone();
        let app = axum::Router::new()
            .route(
                "/certs/{name}",
                axum::routing::get(move || {
                    let fetches = fetches.clone();
                    async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        SNS_CERT
                    }
                }),
            )
            .route(
                "/confirm",
                axum::routing::get(move |uri: axum::http::Uri| {
                    let confirmed = confirmed.clone();
                    async move {
                        confirmed.lock().unwrap().push(uri.to_string());
                        "<ConfirmSubscriptionResponse/>"
                    }
                }),
            );
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        SnsDouble {
            prefix: format!("http://127.0.0.1:{port}/"),
            port,
            cert_fetches,
            confirmations,
        }
    }

    /// A certificate URL of its own for each test: the handler caches certificates by URL.
    fn cert_url(&self) -> String {
        format!("{}certs/{:016x}.pem", self.prefix, rand::random::<u64>())
    }

    fn confirmations(&self) -> Vec<String> {
        self.confirmations.lock().unwrap().clone()
    }
}

/// The fields SNS signs, in its order (Subject only when present; none here).
const NOTIFICATION_KEYS: &[&str] = &["Message", "MessageId", "Timestamp", "TopicArn", "Type"];
const CONFIRMATION_KEYS: &[&str] = &[
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
];

/// An SNS request body with `fields`, signed (SignatureVersion 2, SHA256withRSA) by the
/// test certificate's key over the documented string to sign.
fn sns_body(fields: &[(&str, String)]) -> String {
    let kind = &fields.iter().find(|(k, _)| *k == "Type").unwrap().1;
    let keys = if kind == "Notification" {
        NOTIFICATION_KEYS
    } else {
        CONFIRMATION_KEYS
    };
    let mut to_sign = String::new();
    for key in keys {
        let (_, v) = fields.iter().find(|(k, _)| k == key).unwrap();
        to_sign.push_str(&format!("{key}\n{v}\n"));
    }
    let signature = sign(
        signing_key(SNS_KEY).as_ref(),
        SignatureScheme::RSA_PKCS1_SHA256,
        to_sign.as_bytes(),
    );
    let mut obj = serde_json::Map::new();
    for (k, v) in fields {
        obj.insert((*k).to_string(), Value::String(v.clone()));
    }
    obj.insert("SignatureVersion".into(), "2".into());
    obj.insert("Signature".into(), STANDARD.encode(signature).into());
    Value::Object(obj).to_string()
}

fn sns_notification(topic: &str, cert_url: &str, message: &Value) -> String {
    sns_body(&[
        ("Type", "Notification".into()),
        ("MessageId", format!("{:032x}", rand::random::<u128>())),
        ("TopicArn", topic.into()),
        ("Message", message.to_string()),
        ("Timestamp", "2026-01-02T03:04:05.678Z".into()),
        ("SigningCertURL", cert_url.into()),
        (
            "UnsubscribeURL",
            "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe".into(),
        ),
    ])
}

fn sns_confirmation(topic: &str, cert_url: &str, subscribe_url: &str) -> String {
    sns_body(&[
        ("Type", "SubscriptionConfirmation".into()),
        ("MessageId", format!("{:032x}", rand::random::<u128>())),
        (
            "Token",
            "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a9".into(),
        ),
        ("TopicArn", topic.into()),
        (
            "Message",
            format!("You have chosen to subscribe to the topic {topic}."),
        ),
        ("SubscribeURL", subscribe_url.into()),
        ("Timestamp", "2026-01-02T03:04:05.678Z".into()),
        ("SigningCertURL", cert_url.into()),
    ])
}

// ------------------------------------------------------------------ feedback bodies

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Ses,
    Postmark,
    Sendgrid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hard,
    Soft,
    Complaint,
    Delivered,
}

/// What the provider's reason says, for each kind.
const HARD_REASON: &str = "550 5.1.1 user unknown";
const SOFT_REASON: &str = "452 4.2.2 mailbox full";

/// The provider's notification that `kind` happened to `recipient` of the email whose
/// Message-ID is `herald_id`.
fn ses_message(kind: Kind, recipient: &str, herald_id: &str) -> Value {
    let mail = json!({
        "timestamp": "2026-01-02T03:04:00.000Z",
        "source": "news@example.com",
        "messageId": "0100018c-ses-id",
        "destination": [recipient],
        "commonHeaders": {"messageId": herald_id, "subject": "News"},
    });
    match kind {
        Kind::Hard => json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": recipient, "action": "failed",
                           "status": "5.1.1", "diagnosticCode": format!("smtp; {HARD_REASON}")}],
                       "timestamp": "2026-01-02T03:04:05.000Z", "feedbackId": "f1"},
            "mail": mail,
        }),
        Kind::Soft => json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull",
                       "bouncedRecipients": [{"emailAddress": recipient,
                           "diagnosticCode": format!("smtp; {SOFT_REASON}")}],
                       "timestamp": "2026-01-02T03:04:05.000Z", "feedbackId": "f2"},
            "mail": mail,
        }),
        Kind::Complaint => json!({
            "notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": recipient}],
                          "complaintFeedbackType": "abuse",
                          "timestamp": "2026-01-02T03:04:05.000Z", "feedbackId": "f3"},
            "mail": mail,
        }),
        Kind::Delivered => json!({
            "notificationType": "Delivery",
            "delivery": {"recipients": [recipient], "smtpResponse": "250 2.0.0 OK",
                         "timestamp": "2026-01-02T03:04:05.000Z"},
            "mail": mail,
        }),
    }
}

fn postmark_body(kind: Kind, recipient: &str, herald_id: &str) -> Value {
    let metadata = json!({"herald_id": herald_id});
    match kind {
        Kind::Hard => json!({"RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1,
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": recipient,
            "Details": format!("smtp;{HARD_REASON}"), "Description": "The address does not exist",
            "Metadata": metadata}),
        Kind::Soft => json!({"RecordType": "Bounce", "Type": "SoftBounce", "TypeCode": 4096,
            "Email": recipient, "Details": format!("smtp;{SOFT_REASON}"), "Metadata": metadata}),
        Kind::Complaint => json!({"RecordType": "SpamComplaint", "Type": "SpamComplaint",
            "Email": recipient, "Metadata": metadata}),
        Kind::Delivered => json!({"RecordType": "Delivery", "Recipient": recipient,
            "Details": "Test delivery webhook details", "Metadata": metadata}),
    }
}

fn sendgrid_body(kind: Kind, recipient: &str, herald_id: &str) -> Value {
    let mut event = match kind {
        Kind::Hard => json!({"event": "bounce", "type": "bounce", "status": "5.1.1",
            "reason": HARD_REASON}),
        Kind::Soft => json!({"event": "deferred", "response": SOFT_REASON, "attempt": "1"}),
        Kind::Complaint => json!({"event": "spamreport"}),
        Kind::Delivered => json!({"event": "delivered", "response": "250 OK"}),
    };
    event["email"] = json!(recipient);
    event["timestamp"] = json!(1_767_322_245);
    event["sg_event_id"] = json!(format!("{:016x}", rand::random::<u64>()));
    event["herald_id"] = json!(herald_id);
    json!([event])
}

// ------------------------------------------------------------------ the world

/// An organisation with one smtp channel per provider, one with none configured, and a
/// Twilio channel; the SNS double.
struct World {
    admin: Auth,
    ses: ChannelId,
    postmark: ChannelId,
    sendgrid: ChannelId,
    /// An smtp channel with no provider configured.
    bare: ChannelId,
    twilio: ChannelId,
    sandbox: ChannelId,
    sns: SnsDouble,
    cert_url: String,
}

async fn smtp_channel(app: &TestApp, admin: &Auth, name: &str, extra: Value) -> ChannelId {
    let mut body = json!({"name": name, "kind": "smtp",
        "config": {"host": "smtp.example.com", "port": 587, "tls": "starttls",
                   "from": "Herald News <news@example.com>"}});
    for (k, v) in extra["config"].as_object().into_iter().flatten() {
        body["config"][k] = v.clone();
    }
    if let Some(secrets) = extra.get("secrets") {
        body["secrets"] = secrets.clone();
    }
    let r = app.post("/api/v1/channels", admin, body).await;
    r.expect(StatusCode::CREATED);
    ChannelId::parse_lenient(r.body["id"].as_str().unwrap()).unwrap()
}

/// The app, served with the SNS double's prefix allowed, and its channels.
async fn world(app: TestApp) -> (TestApp, World) {
    let admin = Auth::Key(app.key(app.org, Role::Admin).await);
    let sns = SnsDouble::start().await;
    let owned = app.with_settings(herald::config::Settings {
        sns_certificate_url_prefix: Some(sns.prefix.clone()),
        ..Default::default()
    });
    let app = &owned;
    let ses = smtp_channel(
        app,
        &admin,
        "ses",
        json!({"config": {"ses_topic_arn": TOPIC}}),
    )
    .await;
    let postmark = smtp_channel(
        app,
        &admin,
        "postmark",
        json!({"secrets": {"postmark_webhook_token": POSTMARK_TOKEN}}),
    )
    .await;
    let sendgrid = smtp_channel(
        app,
        &admin,
        "sendgrid",
        json!({"config": {"sendgrid_verification_key": sendgrid_public(SENDGRID_KEY)}}),
    )
    .await;
    let bare = smtp_channel(app, &admin, "bare", json!({})).await;
    let twilio = app
        .db
        .store
        .create_channel(
            app.org,
            "sms",
            "twilio",
            &json!({"account_sid": "AC00000000000000000000000000000000", "from": "+15005550006"}),
        )
        .await
        .unwrap();
    let sandbox = app
        .db
        .store
        .channel_by_name(app.org, "sandbox")
        .await
        .unwrap()
        .id;
    let cert_url = sns.cert_url();
    let world = World {
        admin,
        ses,
        postmark,
        sendgrid,
        bare,
        twilio,
        sandbox,
        sns,
        cert_url,
    };
    (owned, world)
}

fn path(channel: impl std::fmt::Display, provider: Provider) -> String {
    let suffix = match provider {
        Provider::Ses => "ses",
        Provider::Postmark => "postmark",
        Provider::Sendgrid => "sendgrid",
    };
    format!("/webhooks/smtp/{channel}/{suffix}")
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// A webhook POST with JSON `body` and `headers`.
async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: String) -> Reply {
    app.send(
        Method::POST,
        path,
        &Auth::None,
        headers,
        Some(("application/json", body)),
    )
    .await
}

/// A SendGrid request to `channel`: `body` signed with `key` over `signed_timestamp`, sent
/// with `sent_timestamp`.
async fn sendgrid_post(
    app: &TestApp,
    channel: impl std::fmt::Display,
    key: &str,
    signed_timestamp: &str,
    sent_timestamp: &str,
    body: &str,
) -> Reply {
    let mut signed = signed_timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body.as_bytes());
    let signature = STANDARD.encode(sign(
        sendgrid_key(key).as_ref(),
        SignatureScheme::ECDSA_NISTP256_SHA256,
        &signed,
    ));
    post(
        app,
        &path(channel, Provider::Sendgrid),
        &[
            ("x-twilio-email-event-webhook-signature", &signature),
            ("x-twilio-email-event-webhook-timestamp", sent_timestamp),
        ],
        body.to_string(),
    )
    .await
}

/// `kind` for `recipient` of the email `herald_id`, sent by `provider` as it signs it.
async fn feedback(
    app: &TestApp,
    w: &World,
    provider: Provider,
    kind: Kind,
    recipient: &str,
    herald_id: &str,
) -> Reply {
    match provider {
        Provider::Ses => {
            let body =
                sns_notification(TOPIC, &w.cert_url, &ses_message(kind, recipient, herald_id));
            post(app, &path(w.ses, provider), &[], body).await
        }
        Provider::Postmark => {
            let auth = basic("herald", POSTMARK_TOKEN);
            let body = postmark_body(kind, recipient, herald_id).to_string();
            post(
                app,
                &path(w.postmark, provider),
                &[("authorization", &auth)],
                body,
            )
            .await
        }
        Provider::Sendgrid => {
            let body = sendgrid_body(kind, recipient, herald_id).to_string();
            sendgrid_post(
                app,
                w.sendgrid,
                SENDGRID_KEY,
                "1767322245",
                "1767322245",
                &body,
            )
            .await
        }
    }
}

/// One email sent: its recipient, message and Message-ID (the provider id).
#[derive(Debug, Clone)]
struct Sent {
    address: String,
    message: MessageId,
    herald_id: String,
}

/// A started campaign of `org` on `channel` to `addresses`, every message accepted with a
/// Message-ID of Herald's form as its provider id.
async fn sent_campaign(
    store: &Store,
    org: OrgId,
    channel: ChannelId,
    addresses: &[&str],
) -> (CampaignId, Vec<Sent>) {
    let list = store
        .ensure_list(org, &format!("list-{:08x}", rand::random::<u32>()))
        .await
        .unwrap();
    let contacts: Vec<ContactInput> = addresses
        .iter()
        .map(|a| ContactInput {
            address: Address::parse(a).unwrap(),
            name: None,
            attributes: Default::default(),
            unsubscribed: None,
        })
        .collect();
    store.upsert_contacts(org, list, &contacts).await.unwrap();
    let id = crate::support::new_campaign(store, org, list, channel, "Hi").await;
    let now = herald::clock::now_ms();
    store.start_campaign(id, now, "test", None).await.unwrap();
    let n = addresses.len() as i64;
    let claimed = store.claim(id, "A", now, now + 600_000, n).await.unwrap();
    assert_eq!(claimed.len(), addresses.len());
    let herald_id =
        |m: MessageId| format!("<herald.{m}.1.{:016x}@example.com>", rand::random::<u64>());
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .map(|m| Outcome {
            attempt: None,
            message_id: m.id,
            campaign_id: id,
            kind: OutcomeKind::Sent {
                provider_id: herald_id(m.id),
            },
        })
        .collect();
    store.record_outcomes("A", now, &outcomes).await.unwrap();
    let sent = all_messages(store, id, None)
        .await
        .into_iter()
        .map(|m| {
            assert_eq!(m.status, MessageStatus::Sent);
            Sent {
                address: m.address.as_str().to_string(),
                message: m.id,
                herald_id: m.provider_id.unwrap(),
            }
        })
        .collect();
    (id, sent)
}

fn to<'a>(sent: &'a [Sent], address: &str) -> &'a Sent {
    sent.iter().find(|s| s.address == address).unwrap()
}

async fn message(store: &Store, campaign: CampaignId, id: MessageId) -> herald::store::MessageInfo {
    crate::support::message(store, campaign, id).await
}

/// The organisation's `contact.unsubscribed` events: (address, source, channel id).
async fn unsubscribed(store: &Store, org: OrgId) -> Vec<(String, String, String)> {
    store
        .outbox_events_after(org, NotificationId(0), 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type.as_str() == "contact.unsubscribed")
        .map(|e| {
            (
                e.data["contact"]["address"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                e.data["source"].as_str().unwrap_or("").to_string(),
                e.data["channel_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Requests kept for `channel` (verified ones only are kept).
async fn kept(app: &TestApp, channel: ChannelId) -> i64 {
    let pool = app.db.raw().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE channel_id = $1")
        .bind(channel)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// The organisation's suppressions through the API: (address, reason).
async fn suppressions(app: &TestApp, auth: &Auth) -> Vec<(String, String)> {
    let r = app.get("/api/v1/suppressions?limit=100", auth).await;
    r.expect(StatusCode::OK);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

// ------------------------------------------------------------------ each provider

/// Each kind of feedback through `provider`'s webhook, applied to the message it names.
async fn each_kind_applies(app: TestApp, provider: Provider) {
    let (app, w) = world(app).await;
    let store = &app.db.store;
    let channel = match provider {
        Provider::Ses => w.ses,
        Provider::Postmark => w.postmark,
        Provider::Sendgrid => w.sendgrid,
    };
    let (hard, soft, complaint, delivered) = (
        "hard@example.org",
        "soft@example.org",
        "complaint@example.org",
        "delivered@example.org",
    );
    let (id, sent) =
        sent_campaign(store, app.org, channel, &[hard, soft, complaint, delivered]).await;

    // A hard bounce: undelivered with the reason, the address suppressed: the one Herald
    // sent to, though the provider reports it with another case.
    let s = to(&sent, hard);
    feedback(
        &app,
        &w,
        provider,
        Kind::Hard,
        "Hard@example.org",
        &s.herald_id,
    )
    .await
    .expect(StatusCode::OK);
    let m = message(store, id, s.message).await;
    assert_eq!(m.status, MessageStatus::Undelivered, "{m:?}");
    let error = m.last_error.unwrap_or_default();
    assert!(
        error.contains(HARD_REASON) && error.contains("hard bounce"),
        "{error}"
    );
    assert!(store.is_suppressed(app.org, hard).await.unwrap());
    assert_eq!(
        unsubscribed(store, app.org).await,
        [(hard.to_string(), "bounce".to_string(), format!("{channel}"))]
    );

    // A soft bounce: still sent, the reason noted; nothing suppressed.
    let s = to(&sent, soft);
    feedback(&app, &w, provider, Kind::Soft, soft, &s.herald_id)
        .await
        .expect(StatusCode::OK);
    let m = message(store, id, s.message).await;
    assert_eq!(m.status, MessageStatus::Sent, "{m:?}");
    let note = m.last_error.unwrap_or_default();
    assert!(
        note.contains(SOFT_REASON) && note.contains("soft bounce"),
        "{note}"
    );
    assert!(!store.is_suppressed(app.org, soft).await.unwrap());

    // A complaint: suppressed, source complaint.
    let s = to(&sent, complaint);
    feedback(&app, &w, provider, Kind::Complaint, complaint, &s.herald_id)
        .await
        .expect(StatusCode::OK);
    assert!(store.is_suppressed(app.org, complaint).await.unwrap());
    assert_eq!(
        unsubscribed(store, app.org).await,
        [
            (hard.to_string(), "bounce".to_string(), format!("{channel}")),
            (
                complaint.to_string(),
                "complaint".to_string(),
                format!("{channel}")
            ),
        ]
    );

    // A delivery: delivered, nothing suppressed.
    let s = to(&sent, delivered);
    feedback(&app, &w, provider, Kind::Delivered, delivered, &s.herald_id)
        .await
        .expect(StatusCode::OK);
    let m = message(store, id, s.message).await;
    assert_eq!(m.status, MessageStatus::Delivered, "{m:?}");
    assert!(!store.is_suppressed(app.org, delivered).await.unwrap());

    // The suppressions say why; the counters follow the messages; each request was kept.
    let list = suppressions(&app, &w.admin).await;
    let addresses: Vec<&str> = list.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(addresses, [complaint, hard], "{list:?}");
    assert!(list[0].1.starts_with("complained"), "{list:?}");
    assert!(
        list[1].1.starts_with("bounced") && list[1].1.contains(HARD_REASON),
        "{list:?}"
    );
    assert_counters_match(store, id).await;
    assert_eq!(kept(&app, channel).await, 4);

    // The suppressed addresses are left out of what is sent next: a resend to the
    // undelivered and the still-sent recipients reaches the soft bounce only.
    let r = app
        .post(
            &format!("/api/v1/campaigns/{id}/resend"),
            &w.admin,
            json!({"statuses": ["undelivered", "sent"]}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.body["matched"], 3, "{}", r.text);
    assert_eq!(r.body["recipients"], 1, "{}", r.text);
    assert_eq!(r.body["left_out_opted_out"], 2, "{}", r.text);

    // A repeat changes nothing more: no second suppression event, no status going back.
    let s = to(&sent, hard);
    feedback(&app, &w, provider, Kind::Hard, hard, &s.herald_id)
        .await
        .expect(StatusCode::OK);
    assert_eq!(unsubscribed(store, app.org).await.len(), 2);
    let s = to(&sent, delivered);
    feedback(&app, &w, provider, Kind::Soft, delivered, &s.herald_id)
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        message(store, id, s.message).await.status,
        MessageStatus::Delivered
    );
    // No other organisation was touched.
    assert!(!store.is_suppressed(app.other_org, hard).await.unwrap());
}

api_test!(ses_feedback_through_sns_is_applied, |app| async move {
    each_kind_applies(app, Provider::Ses).await;
});

api_test!(postmark_feedback_is_applied, |app| async move {
    each_kind_applies(app, Provider::Postmark).await;
});

api_test!(sendgrid_feedback_is_applied, |app| async move {
    each_kind_applies(app, Provider::Sendgrid).await;
});

// ------------------------------------------------------------------ SNS subscriptions

api_test!(
    sns_subscription_is_confirmed_once_for_the_channels_topic_only,
    |app| async move {
        let (app, w) = world(app).await;
        let confirm = format!(
            "{}confirm?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37",
            w.sns.prefix
        );
        let r = post(
            &app,
            &path(w.ses, Provider::Ses),
            &[],
            sns_confirmation(TOPIC, &w.cert_url, &confirm),
        )
        .await;
        r.expect(StatusCode::OK);
        let fetched = w.sns.confirmations();
        assert_eq!(fetched.len(), 1, "{fetched:?}");
        assert_eq!(
            fetched[0],
            format!("/confirm?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37")
        );
        assert_eq!(kept(&app, w.ses).await, 1);

        // Another topic's confirmation, validly signed: refused, nothing fetched.
        let r = post(
            &app,
            &path(w.ses, Provider::Ses),
            &[],
            sns_confirmation(OTHER_TOPIC, &w.cert_url, &confirm),
        )
        .await;
        r.expect(StatusCode::FORBIDDEN);
        // A SubscribeURL outside Amazon's hosts and the test prefix (the same server
        // under another name): refused, not fetched.
        let elsewhere = format!(
            "http://localhost:{}/confirm?Action=ConfirmSubscription",
            w.sns.port
        );
        let r = post(
            &app,
            &path(w.ses, Provider::Ses),
            &[],
            sns_confirmation(TOPIC, &w.cert_url, &elsewhere),
        )
        .await;
        r.expect(StatusCode::FORBIDDEN);
        // The channel's own topic on another smtp channel's path (none configured there).
        let r = post(
            &app,
            &path(w.bare, Provider::Ses),
            &[],
            sns_confirmation(TOPIC, &w.cert_url, &confirm),
        )
        .await;
        r.expect(StatusCode::FORBIDDEN);
        assert_eq!(
            w.sns.confirmations().len(),
            1,
            "{:?}",
            w.sns.confirmations()
        );
        assert_eq!(kept(&app, w.ses).await, 1);
        assert_eq!(kept(&app, w.bare).await, 0);
    }
);

// ------------------------------------------------------------------ what is refused

api_test!(
    unproven_email_feedback_is_refused_and_changes_nothing,
    |app| async move {
        let (app, w) = world(app).await;
        let store = &app.db.store;
        let victim = "victim@example.org";
        let mut sent = Vec::new();
        for channel in [w.ses, w.postmark, w.sendgrid] {
            let (id, s) = sent_campaign(store, app.org, channel, &[victim]).await;
            sent.push((channel, id, s[0].clone()));
        }
        let herald_id = |channel: ChannelId| {
            sent.iter()
                .find(|(c, _, _)| *c == channel)
                .unwrap()
                .2
                .herald_id
                .clone()
        };
        let forbidden = |r: &Reply, what: &str| {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text);
            r.text.clone()
        };
        let mut answers = Vec::new();

        // Postmark: no auth, a wrong token, the right token but not as Basic auth.
        let hard = postmark_body(Kind::Hard, victim, &herald_id(w.postmark)).to_string();
        let to_postmark = path(w.postmark, Provider::Postmark);
        let r = post(&app, &to_postmark, &[], hard.clone()).await;
        answers.push(forbidden(&r, "postmark without auth"));
        let wrong = basic("herald", "not-the-token-0123456789abcdef");
        let r = post(
            &app,
            &to_postmark,
            &[("authorization", &wrong)],
            hard.clone(),
        )
        .await;
        answers.push(forbidden(&r, "postmark with a wrong token"));
        let bearer = format!("Bearer {POSTMARK_TOKEN}");
        let r = post(
            &app,
            &to_postmark,
            &[("authorization", &bearer)],
            hard.clone(),
        )
        .await;
        answers.push(forbidden(&r, "postmark token as bearer"));
        let token_as_user = basic(POSTMARK_TOKEN, "x");
        let r = post(
            &app,
            &to_postmark,
            &[("authorization", &token_as_user)],
            hard.clone(),
        )
        .await;
        answers.push(forbidden(&r, "postmark token as the user name"));
        // The right token on paths that are not this channel's provider: a channel of
        // another kind, an smtp channel without Postmark, no channel at all.
        let good = basic("herald", POSTMARK_TOKEN);
        for (channel, what) in [
            (format!("{}", w.sandbox), "sandbox channel"),
            (format!("{}", w.twilio), "twilio channel"),
            (format!("{}", w.bare), "smtp channel without postmark"),
            (format!("{}", w.sendgrid), "sendgrid channel"),
            ("chn_999999".to_string(), "no such channel"),
        ] {
            let r = post(
                &app,
                &path(&channel, Provider::Postmark),
                &[("authorization", &good)],
                hard.clone(),
            )
            .await;
            answers.push(forbidden(&r, what));
        }

        // SendGrid: another key's signature, a changed timestamp, a changed body, none.
        let body = sendgrid_body(Kind::Hard, victim, &herald_id(w.sendgrid)).to_string();
        let r = sendgrid_post(
            &app,
            w.sendgrid,
            OTHER_SENDGRID_KEY,
            "1767322245",
            "1767322245",
            &body,
        )
        .await;
        answers.push(forbidden(&r, "sendgrid signed by another key"));
        let r = sendgrid_post(
            &app,
            w.sendgrid,
            SENDGRID_KEY,
            "1767322245",
            "1767322246",
            &body,
        )
        .await;
        answers.push(forbidden(&r, "sendgrid with a changed timestamp"));
        let mut signed = b"1767322245".to_vec();
        signed.extend_from_slice(body.as_bytes());
        let signature = STANDARD.encode(sign(
            sendgrid_key(SENDGRID_KEY).as_ref(),
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &signed,
        ));
        let changed = body.replace("bounce", "spamreport");
        assert_ne!(changed, body);
        let r = post(
            &app,
            &path(w.sendgrid, Provider::Sendgrid),
            &[
                ("x-twilio-email-event-webhook-signature", &signature),
                ("x-twilio-email-event-webhook-timestamp", "1767322245"),
            ],
            changed,
        )
        .await;
        answers.push(forbidden(&r, "sendgrid body changed after signing"));
        let r = post(
            &app,
            &path(w.sendgrid, Provider::Sendgrid),
            &[],
            body.clone(),
        )
        .await;
        answers.push(forbidden(&r, "sendgrid unsigned"));
        // A good SendGrid signature on the Postmark channel's path.
        let r = sendgrid_post(
            &app,
            w.postmark,
            SENDGRID_KEY,
            "1767322245",
            "1767322245",
            &body,
        )
        .await;
        answers.push(forbidden(&r, "sendgrid to a channel without its key"));

        // SNS: another topic's notification (validly signed), a certificate elsewhere, a
        // message changed after signing, a good one to another channel's path.
        let bounce = ses_message(Kind::Hard, victim, &herald_id(w.ses));
        let to_ses = path(w.ses, Provider::Ses);
        let r = post(
            &app,
            &to_ses,
            &[],
            sns_notification(OTHER_TOPIC, &w.cert_url, &bounce),
        )
        .await;
        answers.push(forbidden(&r, "sns from another topic"));
        let fetches = w.sns.cert_fetches.load(Ordering::SeqCst);
        for elsewhere in [
            // The same double under another name: reachable, so only the check stops it.
            format!(
                "http://localhost:{}/certs/{:016x}.pem",
                w.sns.port,
                rand::random::<u64>()
            ),
            "https://evil.example.com/SimpleNotificationService-x.pem".to_string(),
            "https://sns.us-west-2.amazonaws.com.evil.example/SimpleNotificationService-x.pem"
                .to_string(),
        ] {
            let r = post(
                &app,
                &to_ses,
                &[],
                sns_notification(TOPIC, &elsewhere, &bounce),
            )
            .await;
            answers.push(forbidden(&r, &format!("sns certificate at {elsewhere}")));
        }
        assert_eq!(
            w.sns.cert_fetches.load(Ordering::SeqCst),
            fetches,
            "a certificate was fetched from outside the allowed hosts"
        );
        let good = sns_notification(TOPIC, &w.cert_url, &bounce);
        let mut tampered: Value = serde_json::from_str(&good).unwrap();
        tampered["Message"] =
            json!(ses_message(Kind::Complaint, victim, &herald_id(w.ses)).to_string());
        let r = post(&app, &to_ses, &[], tampered.to_string()).await;
        answers.push(forbidden(&r, "sns message changed after signing"));
        for (channel, what) in [
            (w.bare, "sns to an smtp channel without a topic"),
            (w.postmark, "sns to the postmark channel"),
            (w.sandbox, "sns to the sandbox channel"),
            (w.twilio, "sns to a twilio channel"),
        ] {
            let r = post(&app, &path(channel, Provider::Ses), &[], good.clone()).await;
            answers.push(forbidden(&r, what));
        }

        // One answer for all: it does not tell a missing channel from a bad signature.
        for a in &answers {
            assert_eq!(a, &answers[0]);
        }
        assert!(answers[0].contains("bad-signature"), "{}", answers[0]);

        // Too large, even when authenticated: 413 before anything is read.
        let large = format!(
            "{{\"RecordType\":\"Bounce\",\"Type\":\"HardBounce\",\"Email\":\"{victim}\",\"Details\":\"{}\"}}",
            "x".repeat(herald::email_feedback::MAX_FEEDBACK_BODY)
        );
        assert!(large.len() > herald::email_feedback::MAX_FEEDBACK_BODY);
        let r = post(
            &app,
            &to_postmark,
            &[("authorization", &good_auth())],
            large,
        )
        .await;
        r.expect(StatusCode::PAYLOAD_TOO_LARGE);

        // Nothing changed: every message still sent, nothing suppressed, no event, nothing
        // kept.
        for (channel, id, s) in &sent {
            let m = message(store, *id, s.message).await;
            assert_eq!(m.status, MessageStatus::Sent, "{channel}: {m:?}");
            assert!(m.last_error.is_none(), "{channel}: {m:?}");
            assert_eq!(kept(&app, *channel).await, 0, "{channel}");
        }
        assert!(!store.is_suppressed(app.org, victim).await.unwrap());
        assert!(suppressions(&app, &w.admin).await.is_empty());
        assert!(unsubscribed(store, app.org).await.is_empty());

        // The genuine request still works afterwards (the refusals were not a broken
        // route): the SNS one verifies and applies.
        post(&app, &to_ses, &[], good).await.expect(StatusCode::OK);
        let (_, id, s) = sent.iter().find(|(c, _, _)| *c == w.ses).unwrap();
        assert_eq!(
            message(store, *id, s.message).await.status,
            MessageStatus::Undelivered
        );
        assert!(store.is_suppressed(app.org, victim).await.unwrap());
    }
);

fn good_auth() -> String {
    basic("herald", POSTMARK_TOKEN)
}

// ------------------------------------------------------------------ other tenants

api_test!(
    another_organisations_channel_cannot_touch_these_messages,
    |app| async move {
        let (app, w) = world(app).await;
        let store = &app.db.store;
        let victim = "victim@example.org";
        let (id, sent) = sent_campaign(store, app.org, w.postmark, &[victim]).await;
        // The other organisation's own Postmark channel, with its own token: its
        // verified feedback names our message's Message-ID and address.
        let theirs_admin = Auth::Key(app.key(app.other_org, Role::Admin).await);
        let theirs = smtp_channel(
            &app,
            &theirs_admin,
            "postmark",
            json!({"secrets": {"postmark_webhook_token": "their-token-0123456789abcdef"}}),
        )
        .await;
        let r = post(
            &app,
            &path(theirs, Provider::Postmark),
            &[("authorization", &basic("x", "their-token-0123456789abcdef"))],
            postmark_body(Kind::Hard, victim, &sent[0].herald_id).to_string(),
        )
        .await;
        r.expect(StatusCode::OK);
        // Ours is untouched: still sent, not suppressed here, no event here.
        let m = message(store, id, sent[0].message).await;
        assert_eq!(m.status, MessageStatus::Sent, "{m:?}");
        assert!(m.last_error.is_none(), "{m:?}");
        assert!(!store.is_suppressed(app.org, victim).await.unwrap());
        assert!(unsubscribed(store, app.org).await.is_empty());
        // (Their own suppression list is theirs to keep.)
        assert!(store.is_suppressed(app.other_org, victim).await.unwrap());
        // Their token does not open our channel's path either.
        let r = post(
            &app,
            &path(w.postmark, Provider::Postmark),
            &[("authorization", &basic("x", "their-token-0123456789abcdef"))],
            postmark_body(Kind::Hard, victim, &sent[0].herald_id).to_string(),
        )
        .await;
        r.expect(StatusCode::FORBIDDEN);
        assert_eq!(
            message(store, id, sent[0].message).await.status,
            MessageStatus::Sent
        );
    }
);
