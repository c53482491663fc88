//! Provider webhooks through the real router, on both stores: Twilio status callbacks and
//! inbound messages, WhatsApp verification and events. Signatures are made with the
//! contract's algorithms; bad ones change nothing.

use crate::both_stores;
use crate::support::{TestDb, assert_counters_match, new_campaign, seed_list, seeded_address};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald::channels::BuildContext;
use herald::domain::{CampaignStatus, MessageStatus};
use herald::http::{AppState, router};
use herald::ids::{CampaignId, ChannelId, MessageId, NotificationId, OrgId};
use herald::secrets::SecretKey;
use herald::store::{Outcome, OutcomeKind, Store};
use herald::webhooks::signature::{meta_signature, twilio_signature};
use tower::ServiceExt;

const PUBLIC: &str = "https://herald.example.test";
const TOKEN: &str = "twilio-auth-token-0123456789";
const APP_SECRET: &str = "meta-app-secret-0123456789";
const VERIFY: &str = "verify-me-please";

struct Fixture {
    state: AppState,
    twilio: ChannelId,
    whatsapp: ChannelId,
    org: OrgId,
}

async fn fixture(db: &TestDb) -> Fixture {
    let store = &db.store;
    let key_text = SecretKey::generate();
    let key = SecretKey::parse(&key_text).unwrap();
    let org = store.default_org().await.unwrap();
    let twilio = store
        .create_channel_with(
            org,
            "sms",
            "twilio",
            &serde_json::json!({"account_sid": "AC00000000000000000000000000000000", "from": "+15005550006"}),
            Some((&key, &serde_json::json!({"auth_token": TOKEN}))),
            None,
        )
        .await
        .unwrap();
    let whatsapp = store
        .create_channel_with(
            org,
            "wa",
            "whatsapp",
            &serde_json::json!({"phone_number_id": "1234567890"}),
            Some((
                &key,
                &serde_json::json!({"access_token": "t", "app_secret": APP_SECRET, "verify_token": VERIFY}),
            )),
            None,
        )
        .await
        .unwrap();
    Fixture {
        state: AppState {
            store: store.clone(),
            metrics: None,
            context: BuildContext {
                public_url: Some(PUBLIC.into()),
                secret_key: Some(key_text),
                outbound: Default::default(),
            },
            settings: Default::default(),
            webhook_limiter: Default::default(),
        },
        twilio,
        whatsapp,
        org,
    }
}

/// A started campaign whose first `sent` messages were accepted with provider ids
/// `SM0`, `SM1`, …; returns (campaign, message ids in order).
async fn sent_campaign(
    store: &Store,
    channel: ChannelId,
    n: i64,
    sent: usize,
) -> (CampaignId, Vec<MessageId>) {
    let (org, list) = seed_list(store, n).await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let now = herald::clock::now_ms();
    store.start_campaign(id, now, "test", None).await.unwrap();
    let claimed = store.claim(id, "A", now, now + 60_000, n).await.unwrap();
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .take(sent)
        .enumerate()
        .map(|(i, m)| Outcome {
            attempt: None,
            message_id: m.id,
            campaign_id: id,
            kind: OutcomeKind::Sent {
                provider_id: format!("SM{i}"),
            },
        })
        .collect();
    store.record_outcomes("A", now, &outcomes).await.unwrap();
    (id, claimed.iter().map(|m| m.id).collect())
}

fn form(params: &[(&str, &str)]) -> (Vec<(String, String)>, String) {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = serde_urlencoded::to_string(&owned).unwrap();
    (owned, body)
}

async fn post_twilio(
    f: &Fixture,
    path: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> (StatusCode, String) {
    let (owned, body) = form(params);
    let good = twilio_signature(TOKEN, &format!("{PUBLIC}{path}"), &owned);
    let mut req = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    match signature {
        Some("good") => req = req.header("x-twilio-signature", good),
        Some(other) => req = req.header("x-twilio-signature", other),
        None => {}
    }
    let resp = router(f.state.clone())
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn status_of(store: &Store, campaign: CampaignId, message: MessageId) -> MessageStatus {
    crate::support::message(store, campaign, message)
        .await
        .status
}

both_stores!(
    twilio_status_callbacks_move_messages_forward_only,
    |db| async move {
        let f = fixture(&db).await;
        let store = &db.store;
        let (id, msgs) = sent_campaign(store, f.twilio, 4, 3).await;
        let path = format!("/webhooks/twilio/{}/status", f.twilio);
        let cb = |sid: &'static str, status: &'static str| {
            vec![
                ("MessageSid", sid),
                ("SmsSid", sid),
                ("MessageStatus", status),
                ("AccountSid", "AC00000000000000000000000000000000"),
            ]
        };

        // Missing and bad signatures: 403, nothing changes.
        let (code, body) = post_twilio(&f, &path, &cb("SM0", "delivered"), None).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("bad-signature"), "{body}");
        let (code, _) = post_twilio(&f, &path, &cb("SM0", "delivered"), Some("bm90IGl0")).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert_eq!(status_of(store, id, msgs[0]).await, MessageStatus::Sent);

        // Malformed: 400, nothing changes.
        let (code, body) =
            post_twilio(&f, &path, &[("MessageStatus", "delivered")], Some("good")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");

        // Good: applied; duplicated and out of order: harmless.
        assert_eq!(
            post_twilio(&f, &path, &cb("SM0", "read"), Some("good"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            post_twilio(&f, &path, &cb("SM0", "delivered"), Some("good"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            post_twilio(&f, &path, &cb("SM0", "sent"), Some("good"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(status_of(store, id, msgs[0]).await, MessageStatus::Read);
        assert_eq!(
            post_twilio(&f, &path, &cb("SM1", "undelivered"), Some("good"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            post_twilio(&f, &path, &cb("SM1", "undelivered"), Some("good"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            status_of(store, id, msgs[1]).await,
            MessageStatus::Undelivered
        );
        // A status Herald does not track (queued, sending) is accepted and ignored.
        assert_eq!(
            post_twilio(&f, &path, &cb("SM2", "sending"), Some("good"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(status_of(store, id, msgs[2]).await, MessageStatus::Sent);

        // A receipt for a provider id not recorded yet is kept, then applied when it is.
        assert_eq!(
            post_twilio(&f, &path, &cb("SM3", "delivered"), Some("good"))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(status_of(store, id, msgs[3]).await, MessageStatus::InFlight);
        let now = herald::clock::now_ms();
        store
            .record_outcomes(
                "A",
                now,
                &[Outcome {
                    attempt: None,
                    message_id: msgs[3],
                    campaign_id: id,
                    kind: OutcomeKind::Sent {
                        provider_id: "SM3".into(),
                    },
                }],
            )
            .await
            .unwrap();
        assert_eq!(
            status_of(store, id, msgs[3]).await,
            MessageStatus::Delivered
        );
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        // Unknown channel: the same 403 as a bad signature (no channel enumeration).
        let (code, _) = post_twilio(
            &f,
            "/webhooks/twilio/999999/status",
            &cb("SM0", "read"),
            Some("good"),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
    }
);

both_stores!(twilio_inbound_stop_and_start_keywords, |db| async move {
    let f = fixture(&db).await;
    let store = &db.store;
    let path = format!("/webhooks/twilio/{}/inbound", f.twilio);
    let who = seeded_address(42);
    let (code, body) = post_twilio(
        &f,
        &path,
        &[("From", &who), ("Body", " stop ")],
        Some("good"),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("<Response>"), "{body}");
    assert!(store.is_suppressed(f.org, &who).await.unwrap());
    // Not a keyword: nothing changes.
    post_twilio(
        &f,
        &path,
        &[("From", &who), ("Body", "stop sending me stuff please")],
        Some("good"),
    )
    .await;
    assert!(store.is_suppressed(f.org, &who).await.unwrap());
    // A message the provider delivers twice (same MessageSid) is reported once.
    for _ in 0..2 {
        let (code, _) = post_twilio(
            &f,
            &path,
            &[("From", &who), ("Body", "hello?"), ("MessageSid", "SMin1")],
            Some("good"),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
    }
    // The STOP is a contact event; the other messages are inbound events.
    let events: Vec<_> = store
        .outbox_events_after(f.org, NotificationId(0), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| !e.event_type.as_str().starts_with("campaign."))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        ["contact.unsubscribed", "message.inbound", "message.inbound"]
    );
    assert_eq!(events[0].data["source"], "keyword");
    assert_eq!(events[0].data["keyword"], "STOP");
    assert_eq!(events[0].data["channel_id"], format!("{}", f.twilio));
    assert_eq!(events[0].data["contact"]["address"], who.as_str());
    assert_eq!(
        events[1].data["message"]["body"],
        "stop sending me stuff please"
    );
    assert_eq!(events[2].data["message"]["provider_message_id"], "SMin1");
    assert_eq!(events[2].data["message"]["from"], who.as_str());
    // A forged STOP changes nothing.
    let other = seeded_address(43);
    let (code, _) = post_twilio(
        &f,
        &path,
        &[("From", &other), ("Body", "STOP")],
        Some("AAAA"),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(!store.is_suppressed(f.org, &other).await.unwrap());
    post_twilio(
        &f,
        &path,
        &[("From", &who), ("Body", "START")],
        Some("good"),
    )
    .await;
    assert!(!store.is_suppressed(f.org, &who).await.unwrap());
    // A suppressed address is skipped when a campaign starts.
    post_twilio(
        &f,
        &path,
        &[("From", &seeded_address(1)), ("Body", "UNSUBSCRIBE")],
        Some("good"),
    )
    .await;
    let (org, list) = seed_list(store, 3).await;
    let id = new_campaign(store, org, list, f.twilio, "Hi").await;
    store
        .start_campaign(id, herald::clock::now_ms(), "test", None)
        .await
        .unwrap();
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.counts.get(MessageStatus::Skipped), 1);
});

async fn whatsapp_post(f: &Fixture, body: &str, signature: Option<String>) -> StatusCode {
    let mut req = Request::post(format!("/webhooks/whatsapp/{}", f.whatsapp))
        .header("content-type", "application/json");
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    router(f.state.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap()
        .status()
}

both_stores!(whatsapp_verification_and_events, |db| async move {
    let f = fixture(&db).await;
    let store = &db.store;
    // Verification handshake.
    let uri = format!(
        "/webhooks/whatsapp/{}?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1158201444",
        f.whatsapp
    );
    let resp = router(f.state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
    assert_eq!(&bytes[..], b"1158201444");
    let wrong = format!(
        "/webhooks/whatsapp/{}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
        f.whatsapp
    );
    let resp = router(f.state.clone())
        .oneshot(Request::get(wrong).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Status events, signed over the raw body.
    let (id, msgs) = sent_campaign(store, f.whatsapp, 2, 2).await;
    let event = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1234567890"},
            "statuses": [
                {"id": "SM0", "status": "read", "timestamp": "1700000000", "recipient_id": "12000000001"},
                {"id": "SM0", "status": "delivered", "timestamp": "1700000001", "recipient_id": "12000000001"},
                {"id": "SM1", "status": "failed", "timestamp": "1700000000", "recipient_id": "12000000002",
                 "errors": [{"code": 131026, "title": "Message undeliverable"}]}
            ],
            "messages": [{"from": "12000000099", "id": "wamid.x", "timestamp": "1700000000", "type": "text", "text": {"body": "STOP"}}]
        }}]}]
    })
    .to_string();
    assert_eq!(whatsapp_post(&f, &event, None).await, StatusCode::FORBIDDEN);
    assert_eq!(
        whatsapp_post(&f, &event, Some("sha256=00".into())).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status_of(store, id, msgs[0]).await, MessageStatus::Sent);
    assert_eq!(
        whatsapp_post(
            &f,
            &event,
            Some(meta_signature(APP_SECRET, event.as_bytes()))
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(status_of(store, id, msgs[0]).await, MessageStatus::Read);
    let failed = crate::support::message(store, id, msgs[1]).await;
    assert_eq!(failed.status, MessageStatus::Failed);
    assert!(failed.last_error.unwrap_or_default().contains("131026"));
    assert!(store.is_suppressed(f.org, "+12000000099").await.unwrap());
    assert_counters_match(store, id).await;
    // Malformed JSON with a valid signature: 400.
    let junk = "{not json";
    assert_eq!(
        whatsapp_post(&f, junk, Some(meta_signature(APP_SECRET, junk.as_bytes()))).await,
        StatusCode::BAD_REQUEST
    );
});

// WhatsApp cannot be asked, but it tells: a status webhook carrying Herald's message id
// (biz_opaque_callback_data) proves an in-doubt message was sent, so it is not resent.
both_stores!(
    whatsapp_status_resolves_a_message_in_doubt,
    |db| async move {
        let f = fixture(&db).await;
        let store = &db.store;
        let (org, list) = seed_list(store, 2).await;
        let id = new_campaign(store, org, list, f.whatsapp, "Hi").await;
        let now = herald::clock::now_ms();
        store.start_campaign(id, now, "test", None).await.unwrap();
        let claimed = store.claim(id, "dead-one", now, now + 1, 2).await.unwrap();
        let marked = store
            .mark_in_doubt(now + 10, now, &["dead-one".to_string()])
            .await
            .unwrap();
        assert_eq!(marked, vec![(id, 2)]);
        let event = serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "statuses": [{"id": "wamid.HBgL", "status": "delivered", "timestamp": "1700000000",
                              "recipient_id": "12000000001",
                              "biz_opaque_callback_data": claimed[0].id.to_string()}]
            }}]}]
        })
        .to_string();
        assert_eq!(
            whatsapp_post(
                &f,
                &event,
                Some(meta_signature(APP_SECRET, event.as_bytes()))
            )
            .await,
            StatusCode::OK
        );
        let m = crate::support::message(store, id, claimed[0].id).await;
        assert_eq!(m.status, MessageStatus::Delivered);
        assert_eq!(m.provider_id.as_deref(), Some("wamid.HBgL"));
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.counts.get(MessageStatus::InDoubt), 1);
        assert_eq!(c.in_doubt_total, 2);
    }
);

// One-click unsubscribe (RFC 8058): GET shows a form and changes nothing (mail scanners
// follow links); POST suppresses the recipient; an altered token is refused.
both_stores!(one_click_unsubscribe, |db| async move {
    let f = fixture(&db).await;
    let store = &db.store;
    let (_, msgs) = sent_campaign(store, f.twilio, 1, 1).await;
    let key = f.state.context.secret_key.clone().unwrap();
    let url = herald::webhooks::unsubscribe::url(Some(PUBLIC), Some(&key), msgs[0]).unwrap();
    let path = url.strip_prefix(PUBLIC).unwrap().to_string();
    let address = seeded_address(1);
    let get = router(f.state.clone())
        .oneshot(Request::get(&path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert!(!store.is_suppressed(f.org, &address).await.unwrap());
    let forged = path.replacen(
        &format!("/{}.", msgs[0].get()),
        &format!("/{}.", msgs[0].get() + 1),
        1,
    );
    let bad = router(f.state.clone())
        .oneshot(Request::post(&forged).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
    assert!(!store.is_suppressed(f.org, &address).await.unwrap());
    let post = router(f.state.clone())
        .oneshot(
            Request::post(&path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("List-Unsubscribe=One-Click"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::OK);
    assert!(store.is_suppressed(f.org, &address).await.unwrap());
});

// WhatsApp names the message in a status before Herald knows the send's outcome (the
// answer is lost or late): the proof is kept, and an outcome that comes back unknown is
// recorded as sent with the provider's id instead of going in doubt.
both_stores!(
    whatsapp_proof_before_the_outcome_prevents_doubt,
    |db| async move {
        let f = fixture(&db).await;
        let store = &db.store;
        let (org, list) = seed_list(store, 2).await;
        let id = new_campaign(store, org, list, f.whatsapp, "Hi").await;
        let now = herald::clock::now_ms();
        store.start_campaign(id, now, "test", None).await.unwrap();
        let claimed = store.claim(id, "A", now, now + 60_000, 2).await.unwrap();
        let status = |mid: i64, wamid: &str| {
            serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "statuses": [{"id": wamid, "status": "sent", "timestamp": "1700000000",
                              "recipient_id": "12000000001", "biz_opaque_callback_data": mid.to_string()}]
            }}]}]
        })
        .to_string()
        };
        for (m, wamid) in claimed.iter().zip(["wamid.ONE", "wamid.TWO"]) {
            let event = status(m.id.get(), wamid);
            assert_eq!(
                whatsapp_post(
                    &f,
                    &event,
                    Some(meta_signature(APP_SECRET, event.as_bytes()))
                )
                .await,
                StatusCode::OK
            );
        }
        assert_eq!(
            store.proof_for(claimed[1].id).await.unwrap().as_deref(),
            Some("wamid.TWO")
        );
        // The first send's answer is lost: its outcome is unknown, but the proof makes it sent.
        let report = store
            .record_outcomes(
                "A",
                now + 1,
                &[Outcome {
                    attempt: None,
                    message_id: claimed[0].id,
                    campaign_id: id,
                    kind: OutcomeKind::Unknown {
                        error: "timeout".into(),
                    },
                }],
            )
            .await
            .unwrap();
        assert_eq!(report.applied, 1);
        let m = crate::support::message(store, id, claimed[0].id).await;
        assert_eq!(m.status, MessageStatus::Sent);
        assert_eq!(m.provider_id.as_deref(), Some("wamid.ONE"));
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.in_doubt_total, 0);
    }
);

both_stores!(
    webhook_paths_take_the_prefixed_and_the_bare_id,
    |db| async move {
        let f = fixture(&db).await;
        let store = &db.store;
        let (id, msgs) = sent_campaign(store, f.twilio, 2, 2).await;
        let cb = |sid: &'static str| {
            vec![
                ("MessageSid", sid),
                ("MessageStatus", "delivered"),
                ("AccountSid", "AC00000000000000000000000000000000"),
            ]
        };
        // The canonical form Herald now generates, and the bare number of callback URLs
        // configured before: both reach the channel.
        let canonical = format!("/webhooks/twilio/{}/status", f.twilio);
        let (code, body) = post_twilio(&f, &canonical, &cb("SM0"), Some("good")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            status_of(store, id, msgs[0]).await,
            MessageStatus::Delivered
        );
        let bare = format!("/webhooks/twilio/{}/status", f.twilio);
        let (code, body) = post_twilio(&f, &bare, &cb("SM1"), Some("good")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            status_of(store, id, msgs[1]).await,
            MessageStatus::Delivered
        );
        // Signed, but another channel's id: the usual 403.
        let other = format!("/webhooks/twilio/{}/status", f.whatsapp);
        let (code, _) = post_twilio(&f, &other, &cb("SM0"), Some("good")).await;
        assert_eq!(code, StatusCode::FORBIDDEN);

        // A path that names no channel at all: problem+json, not a plain-text 400.
        for bad in [
            format!("chn_0{}", f.twilio.get()),
            format!("cmp_{}", f.twilio.get()),
            "chn_x".to_string(),
            "%2B5".to_string(),
        ] {
            for path in [
                format!("/webhooks/twilio/{bad}/status"),
                format!("/webhooks/twilio/{bad}/inbound"),
                format!("/webhooks/whatsapp/{bad}"),
            ] {
                let resp = router(f.state.clone())
                    .oneshot(
                        Request::post(&path)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(Body::from("MessageSid=SM0"))
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
                assert_eq!(
                    resp.headers()["content-type"],
                    "application/problem+json",
                    "{path}"
                );
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
                    .await
                    .unwrap();
                let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert!(
                    problem["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("is not a channel id")),
                    "{path}: {problem}"
                );
            }
        }
        let resp = router(f.state.clone())
        .oneshot(
            Request::get(format!(
                "/webhooks/whatsapp/{}?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=7",
                f.whatsapp
            ))
            .body(Body::empty())
            .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
);

// Twilio confirms a STOP itself on long codes, toll-free numbers and Messaging Services; a
// standalone short code gets no automatic handling, so Herald answers it in the TwiML.
both_stores!(
    a_stop_to_a_short_code_is_confirmed_by_herald,
    |db| async move {
        use herald::store::replies::ReplyFilter;
        let f = fixture(&db).await;
        let store = &db.store;
        let path = format!("/webhooks/twilio/{}/inbound", f.twilio);
        let confirmation = "<Message>You are unsubscribed and will get no more messages from us. Reply START to subscribe again.</Message>";
        // The case, the form's extra fields, whether Herald answers.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: [Case; 5] = [
            ("long code", &[("To", "+14155550100")], false),
            ("short code", &[("To", "88222")], true),
            (
                "short code in a Messaging Service",
                &[("To", "88222"), ("MessagingServiceSid", "MG0123")],
                false,
            ),
            ("no To", &[], false),
            // Twilio confirms no STOP on WhatsApp, even in a Messaging Service.
            (
                "WhatsApp",
                &[
                    ("To", "whatsapp:+14155550100"),
                    ("MessagingServiceSid", "MG0123"),
                ],
                true,
            ),
        ];
        for (i, (case, extra, herald_answers)) in cases.into_iter().enumerate() {
            let who = crate::support::seeded_address(10 + i as i64);
            let sid = format!("SMstop{i}");
            let mut params = vec![
                ("From", who.as_str()),
                ("Body", "Stop"),
                ("MessageSid", &sid),
            ];
            params.extend_from_slice(extra);
            let (code, twiml) = post_twilio(&f, &path, &params, Some("good")).await;
            assert_eq!(code, StatusCode::OK, "{case}");
            assert_eq!(
                twiml.contains(confirmation),
                herald_answers,
                "{case}: {twiml}"
            );
            assert!(
                store.is_suppressed(f.org, &who).await.unwrap(),
                "{case}: the STOP suppresses"
            );
            let filter = ReplyFilter {
                q: Some(who.clone()),
                ..Default::default()
            };
            let kept = store.replies(f.org, &filter, None, 10).await.unwrap();
            assert_eq!(kept.len(), 1, "{case}");
            let want = if herald_answers {
                "in_webhook_answer"
            } else {
                "provider_confirms"
            };
            assert_eq!(kept[0].auto_reply_status.as_deref(), Some(want), "{case}");
            assert_eq!(kept[0].auto_reply.is_some(), herald_answers, "{case}");
        }
    }
);

both_stores!(
    replies_are_kept_as_conversations_and_help_is_answered,
    |db| async move {
        use herald::store::replies::ReplyFilter;
        let f = fixture(&db).await;
        let store = &db.store;
        let (campaign, _) = sent_campaign(store, f.twilio, 3, 3).await;
        let who = seeded_address(1);
        let path = format!("/webhooks/twilio/{}/inbound", f.twilio);
        let all = ReplyFilter::default();

        // An ordinary reply: kept with its contact and the campaign last sent to it, unread.
        let (code, twiml) = post_twilio(
            &f,
            &path,
            &[
                ("From", &who),
                ("Body", "Is the sale on Sunday too?"),
                ("MessageSid", "SMr1"),
            ],
            Some("good"),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert!(!twiml.contains("<Message>"), "{twiml}");
        let kept = store.replies(f.org, &all, None, 10).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].campaign_id, Some(campaign));
        assert!(kept[0].contact_id.is_some());
        assert_eq!(kept[0].body, "Is the sale on Sunday too?");
        assert_eq!(kept[0].keyword, None);
        assert!(kept[0].read_at.is_none());
        assert_eq!(store.campaign(campaign).await.unwrap().replies, 1);

        // HELP without a help reply: recorded, not answered.
        let (_, twiml) = post_twilio(
            &f,
            &path,
            &[("From", &who), ("Body", "HELP"), ("MessageSid", "SMr2")],
            Some("good"),
        )
        .await;
        assert!(!twiml.contains("<Message>"), "{twiml}");
        // With one: answered in the webhook's answer (Twilio sends it), escaped, and a
        // provider's retry of the same message is neither kept nor answered twice.
        store
            .set_org_help_reply(f.org, Some("Acme <Shop> & co: call +1 415 555 0100"))
            .await
            .unwrap();
        let mut answers = Vec::new();
        for _ in 0..2 {
            let (code, twiml) = post_twilio(
                &f,
                &path,
                &[("From", &who), ("Body", " info? "), ("MessageSid", "SMr3")],
                Some("good"),
            )
            .await;
            assert_eq!(code, StatusCode::OK);
            answers.push(twiml);
        }
        assert!(
            answers[0]
                .contains("<Message>Acme &lt;Shop&gt; &amp; co: call +1 415 555 0100</Message>"),
            "{}",
            answers[0]
        );
        assert!(!answers[1].contains("<Message>"), "{}", answers[1]);
        // STOP: kept; Twilio confirms it itself.
        post_twilio(
            &f,
            &path,
            &[("From", &who), ("Body", "STOP"), ("MessageSid", "SMr4")],
            Some("good"),
        )
        .await;
        let kept = store.replies(f.org, &all, None, 10).await.unwrap();
        let summary: Vec<(Option<&str>, Option<&str>, Option<&str>)> = kept
            .iter()
            .map(|r| {
                (
                    r.keyword.as_deref(),
                    r.auto_reply.as_deref(),
                    r.auto_reply_status.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Some("stop"), None, Some("provider_confirms")),
                (
                    Some("help"),
                    Some("Acme <Shop> & co: call +1 415 555 0100"),
                    Some("in_webhook_answer")
                ),
                (Some("help"), None, None),
                (None, None, None),
            ]
        );

        // One conversation; filters; marking it read.
        let conversations = store.conversations(f.org, &all, None, 10).await.unwrap();
        assert_eq!(conversations.len(), 1);
        assert_eq!((conversations[0].replies, conversations[0].unread), (4, 4));
        assert_eq!(conversations[0].last.keyword.as_deref(), Some("stop"));
        let search = ReplyFilter {
            q: Some("SUNDAY".into()),
            ..Default::default()
        };
        assert_eq!(
            store.replies(f.org, &search, None, 10).await.unwrap().len(),
            1
        );
        let of_campaign = ReplyFilter {
            campaign_id: Some(campaign),
            ..Default::default()
        };
        assert_eq!(
            store
                .replies(f.org, &of_campaign, None, 10)
                .await
                .unwrap()
                .len(),
            4
        );
        assert_eq!(store.unread_replies(f.org).await.unwrap(), 4);

        // Another organisation sees none of it and cannot mark it read.
        let other = store.create_organisation("other").await.unwrap();
        assert!(
            store
                .replies(other, &all, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .conversations(other, &all, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.mark_replies_read(other, &who, 1).await.unwrap(), 0);
        assert_eq!(store.unread_replies(f.org).await.unwrap(), 4);

        assert_eq!(store.mark_replies_read(f.org, &who, 1).await.unwrap(), 4);
        let unread = ReplyFilter {
            unread: true,
            ..Default::default()
        };
        assert!(
            store
                .conversations(f.org, &unread, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
);
