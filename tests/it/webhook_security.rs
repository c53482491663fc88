//! Provider webhooks against a hostile tenant and a flood, through the real router on both
//! stores. Organisation B owns real channels and signs with its own credentials: nothing it
//! sends may touch organisation A's messages or contacts. Forged requests are counted, not
//! stored; accepted records expire; a flood from one address gets 429; an unknown channel
//! answers exactly as a bad signature does.

use crate::both_stores;
use crate::support::{TestDb, assert_counters_match};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use herald::channels::BuildContext;
use herald::config::Settings;
use herald::domain::MessageStatus;
use herald::http::{AppState, router};
use herald::ids::{CampaignId, ChannelId, MessageId, OrgId};
use herald::secrets::SecretKey;
use herald::store::{Outcome, OutcomeKind, Store};
use herald::webhooks::signature::{meta_signature, twilio_signature};
use std::net::SocketAddr;
use tower::ServiceExt;

const PUBLIC: &str = "https://herald.example.test";

/// One organisation with a Twilio and a WhatsApp channel of its own.
struct Tenant {
    org: OrgId,
    twilio: ChannelId,
    whatsapp: ChannelId,
    twilio_token: &'static str,
    app_secret: &'static str,
}

struct World {
    state: AppState,
    a: Tenant,
    b: Tenant,
}

fn app_state(store: &Store, key_text: String, settings: Settings) -> AppState {
    AppState {
        store: store.clone(),
        metrics: None,
        context: BuildContext {
            public_url: Some(PUBLIC.into()),
            secret_key: Some(key_text),
            outbound: Default::default(),
        },
        settings: std::sync::Arc::new(settings),
        webhook_limiter: Default::default(),
    }
}

async fn tenant(
    store: &Store,
    key: &SecretKey,
    org: OrgId,
    twilio_token: &'static str,
    app_secret: &'static str,
) -> Tenant {
    let twilio = store
        .create_channel_with(
            org,
            "sms",
            "twilio",
            &serde_json::json!({"account_sid": "AC00000000000000000000000000000000", "from": "+15005550006"}),
            Some((key, &serde_json::json!({"auth_token": twilio_token}))),
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
                key,
                &serde_json::json!({"access_token": "t", "app_secret": app_secret, "verify_token": "verify-me"}),
            )),
            None,
        )
        .await
        .unwrap();
    Tenant {
        org,
        twilio,
        whatsapp,
        twilio_token,
        app_secret,
    }
}

async fn world(db: &TestDb, settings: Settings) -> World {
    let store = &db.store;
    let key_text = SecretKey::generate();
    let key = SecretKey::parse(&key_text).unwrap();
    let org_a = store.default_org().await.unwrap();
    let org_b = store.create_organisation("tenant-b").await.unwrap();
    let a = tenant(store, &key, org_a, "token-of-a-0123456789", "secret-of-a").await;
    let b = tenant(store, &key, org_b, "token-of-b-0123456789", "secret-of-b").await;
    World {
        state: app_state(store, key_text, settings),
        a,
        b,
    }
}

/// A started campaign of `org` on `channel`, one contact per entry of `provider_ids`, all
/// claimed by owner "A"; the entries with a provider id are recorded as sent with it, the
/// others stay in flight. Returns (campaign, message ids in order).
async fn campaign_with(
    store: &Store,
    org: OrgId,
    channel: ChannelId,
    provider_ids: &[Option<&str>],
) -> (CampaignId, Vec<MessageId>) {
    let n = provider_ids.len() as i64;
    let list = store
        .ensure_list(org, &format!("list-{:08x}", rand::random::<u32>()))
        .await
        .unwrap();
    store.seed_contacts(org, list, n).await.unwrap();
    let id = crate::support::new_campaign(store, org, list, channel, "Hi").await;
    let now = herald::clock::now_ms();
    store.start_campaign(id, now, "test", None).await.unwrap();
    let claimed = store.claim(id, "A", now, now + 600_000, n).await.unwrap();
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .zip(provider_ids)
        .filter_map(|(m, pid)| {
            pid.map(|pid| Outcome {
                attempt: None,
                message_id: m.id,
                campaign_id: id,
                kind: OutcomeKind::Sent {
                    provider_id: pid.to_string(),
                },
            })
        })
        .collect();
    store.record_outcomes("A", now, &outcomes).await.unwrap();
    (id, claimed.iter().map(|m| m.id).collect())
}

async fn record_sent(store: &Store, campaign: CampaignId, message: MessageId, provider_id: &str) {
    let report = store
        .record_outcomes(
            "A",
            herald::clock::now_ms(),
            &[Outcome {
                attempt: None,
                message_id: message,
                campaign_id: campaign,
                kind: OutcomeKind::Sent {
                    provider_id: provider_id.into(),
                },
            }],
        )
        .await
        .unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(state: &AppState, req: Request<Body>) -> Answer {
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A Twilio form POST to `path`, signed with `token` as Twilio would (None: unsigned), from
/// `peer` when given (as `herald serve` records the connecting address).
fn twilio_request(
    path: &str,
    params: &[(&str, &str)],
    token: Option<&str>,
    peer: Option<SocketAddr>,
) -> Request<Body> {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = serde_urlencoded::to_string(&owned).unwrap();
    let mut req = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    if let Some(token) = token {
        req = req.header(
            "x-twilio-signature",
            twilio_signature(token, &format!("{PUBLIC}{path}"), &owned),
        );
    }
    let mut req = req.body(Body::from(body)).unwrap();
    if let Some(peer) = peer {
        req.extensions_mut().insert(ConnectInfo(peer));
    }
    req
}

/// A status callback for `sid` on `channel`, signed with `token`.
fn twilio_status(
    channel: ChannelId,
    token: Option<&str>,
    sid: &str,
    status: &str,
    error: Option<&str>,
) -> Request<Body> {
    let mut params = vec![
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("AccountSid", "AC00000000000000000000000000000000"),
    ];
    if let Some(code) = error {
        params.push(("ErrorCode", code));
    }
    twilio_request(
        &format!("/webhooks/twilio/{channel}/status"),
        &params,
        token,
        None,
    )
}

fn whatsapp_request(channel: ChannelId, body: &str, app_secret: Option<&str>) -> Request<Body> {
    let mut req = Request::post(format!("/webhooks/whatsapp/{channel}"))
        .header("content-type", "application/json");
    if let Some(secret) = app_secret {
        req = req.header(
            "x-hub-signature-256",
            meta_signature(secret, body.as_bytes()),
        );
    }
    req.body(Body::from(body.to_string())).unwrap()
}

fn whatsapp_event(value: serde_json::Value) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]
    })
    .to_string()
}

async fn status_of(store: &Store, campaign: CampaignId, message: MessageId) -> MessageStatus {
    crate::support::message(store, campaign, message)
        .await
        .status
}

/// Kept receipts naming `provider_id`, by the channel they were kept for.
async fn kept_for(db: &TestDb, channel: ChannelId, provider_id: &str) -> i64 {
    let pool = db.raw().await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pending_receipts WHERE channel_id = $1 AND provider_id = $2",
    )
    .bind(channel)
    .bind(provider_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

// The attack as reported: B's own channel, B's own token, A's MessageSid. B's request is
// genuine for B's channel (200), so the receipt is kept for B's channel; A's messages never
// move, not even when A records that id after B named it.
both_stores!(
    cross_tenant_twilio_status_receipt_moves_nothing,
    |db| async move {
        let w = world(&db, Settings::default()).await;
        let store = &db.store;
        let (campaign, msgs) = campaign_with(
            store,
            w.a.org,
            w.a.twilio,
            &[Some("SMa0"), Some("SMa1"), None],
        )
        .await;
        for (sid, status, error) in [
            ("SMa0", "delivered", None),
            ("SMa0", "read", None),
            ("SMa1", "undelivered", Some("30003")),
        ] {
            let answer = send(
                &w.state,
                twilio_status(w.b.twilio, Some(w.b.twilio_token), sid, status, error),
            )
            .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        }
        assert_eq!(
            status_of(store, campaign, msgs[0]).await,
            MessageStatus::Sent
        );
        let second = crate::support::message(store, campaign, msgs[1]).await;
        assert_eq!(second.status, MessageStatus::Sent);
        assert_eq!(second.last_error, None);
        assert_eq!(kept_for(&db, w.b.twilio, "SMa0").await, 2);
        assert_eq!(kept_for(&db, w.b.twilio, "SMa1").await, 1);

        // B names an id A has not recorded yet; A records it afterwards.
        let answer = send(
            &w.state,
            twilio_status(w.b.twilio, Some(w.b.twilio_token), "SMa2", "read", None),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        record_sent(store, campaign, msgs[2], "SMa2").await;
        assert_eq!(
            status_of(store, campaign, msgs[2]).await,
            MessageStatus::Sent
        );
        store
            .apply_kept_receipts(herald::clock::now_ms())
            .await
            .unwrap();
        for m in &msgs {
            assert_eq!(status_of(store, campaign, *m).await, MessageStatus::Sent);
        }
        assert_eq!(kept_for(&db, w.b.twilio, "SMa2").await, 1);
        assert_eq!(kept_for(&db, w.a.twilio, "SMa2").await, 0);

        // A's own channel still moves A's message.
        let answer = send(
            &w.state,
            twilio_status(
                w.a.twilio,
                Some(w.a.twilio_token),
                "SMa0",
                "delivered",
                None,
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            status_of(store, campaign, msgs[0]).await,
            MessageStatus::Delivered
        );
        assert_counters_match(store, campaign).await;
    }
);

// The same through WhatsApp: B's signed event names A's wamid in a status, A's message ids
// as its own (biz_opaque_callback_data, the in-doubt proof), A's contact in a 131050
// opt-out, and an inbound STOP. Only B's organisation is affected.
both_stores!(cross_tenant_whatsapp_event_moves_nothing, |db| async move {
    let w = world(&db, Settings::default()).await;
    let store = &db.store;
    let (campaign, msgs) = campaign_with(
        store,
        w.a.org,
        w.a.whatsapp,
        &[Some("wamid.A0"), None, None],
    )
    .await;
    // The third message's instance died: it is in doubt.
    let now = herald::clock::now_ms();
    let raw = db.raw().await;
    sqlx::query("UPDATE messages SET lease_until = $1, owner = 'dead-one' WHERE id = $2")
        .bind(now - 1)
        .bind(msgs[2])
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    store
        .mark_in_doubt(now, now, &["dead-one".to_string()])
        .await
        .unwrap();
    assert_eq!(
        status_of(store, campaign, msgs[2]).await,
        MessageStatus::InDoubt
    );
    let event = whatsapp_event(serde_json::json!({
        "messaging_product": "whatsapp",
        "statuses": [
            {"id": "wamid.A0", "status": "read", "timestamp": "1700000000", "recipient_id": "12000000001"},
            {"id": "wamid.forged1", "status": "delivered", "timestamp": "1700000000",
             "recipient_id": "12000000002", "biz_opaque_callback_data": msgs[1].to_string()},
            {"id": "wamid.forged2", "status": "delivered", "timestamp": "1700000000",
             "recipient_id": "12000000003", "biz_opaque_callback_data": msgs[2].to_string()},
            {"id": "wamid.A0", "status": "failed", "timestamp": "1700000001", "recipient_id": "12000000001",
             "errors": [{"code": 131050, "title": "User stopped marketing messages"}]}
        ],
        "messages": [{"from": "12000000002", "id": "wamid.in", "timestamp": "1700000000",
                      "type": "text", "text": {"body": "STOP"}}]
    }));
    let answer = send(
        &w.state,
        whatsapp_request(w.b.whatsapp, &event, Some(w.b.app_secret)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        status_of(store, campaign, msgs[0]).await,
        MessageStatus::Sent
    );
    assert_eq!(
        status_of(store, campaign, msgs[1]).await,
        MessageStatus::InFlight
    );
    assert_eq!(
        status_of(store, campaign, msgs[2]).await,
        MessageStatus::InDoubt
    );
    assert_eq!(store.proof_for(msgs[1]).await.unwrap(), None);
    assert_eq!(store.proof_for(msgs[2]).await.unwrap(), None);
    for address in ["+12000000001", "+12000000002"] {
        assert!(!store.is_suppressed(w.a.org, address).await.unwrap());
        assert!(store.is_suppressed(w.b.org, address).await.unwrap());
    }
    assert_eq!(kept_for(&db, w.b.whatsapp, "wamid.A0").await, 2);
    // A records the wamid of its in-flight message that B named: still not moved.
    record_sent(store, campaign, msgs[1], "wamid.forged1").await;
    store
        .apply_kept_receipts(herald::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(
        status_of(store, campaign, msgs[1]).await,
        MessageStatus::Sent
    );
    assert_counters_match(store, campaign).await;
});

// Inbound keywords and provider-reported opt-outs on B's Twilio channel act on B's
// suppression list only: B cannot lift A's suppression with START, nor suppress A's
// contacts with STOP or a 21610 status callback.
both_stores!(
    cross_tenant_inbound_opt_outs_stay_in_their_organisation,
    |db| async move {
        let w = world(&db, Settings::default()).await;
        let store = &db.store;
        let inbound = |t: &Tenant, from: &str, text: &str| {
            twilio_request(
                &format!("/webhooks/twilio/{}/inbound", t.twilio),
                &[("From", from), ("Body", text)],
                Some(t.twilio_token),
                None,
            )
        };
        let stopped = "+12000000001";
        let answer = send(&w.state, inbound(&w.a, stopped, "STOP")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.headers.get("content-type").unwrap(), "text/xml");
        assert!(store.is_suppressed(w.a.org, stopped).await.unwrap());
        assert_eq!(
            send(&w.state, inbound(&w.b, stopped, "START")).await.status,
            StatusCode::OK
        );
        assert!(store.is_suppressed(w.a.org, stopped).await.unwrap());

        let other = "+12000000002";
        assert_eq!(
            send(&w.state, inbound(&w.b, other, "STOP")).await.status,
            StatusCode::OK
        );
        assert!(store.is_suppressed(w.b.org, other).await.unwrap());
        assert!(!store.is_suppressed(w.a.org, other).await.unwrap());

        let (_, _) = campaign_with(store, w.a.org, w.a.twilio, &[Some("SMa0")]).await;
        let third = "+12000000003";
        let answer = send(
            &w.state,
            twilio_request(
                &format!("/webhooks/twilio/{}/status", w.b.twilio),
                &[
                    ("MessageSid", "SMa0"),
                    ("MessageStatus", "undelivered"),
                    ("ErrorCode", "21610"),
                    ("To", third),
                ],
                Some(w.b.twilio_token),
                None,
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert!(!store.is_suppressed(w.a.org, third).await.unwrap());
        assert!(store.is_suppressed(w.b.org, third).await.unwrap());
    }
);

// Provider ids are unique per provider account only: two channels may see the same one.
// A receipt, and a receipt kept until its id is recorded, moves only its own channel's
// message.
both_stores!(
    kept_receipt_applies_only_within_its_channel,
    |db| async move {
        let w = world(&db, Settings::default()).await;
        let store = &db.store;
        let (a_campaign, a_msgs) =
            campaign_with(store, w.a.org, w.a.twilio, &[Some("SMshared"), None]).await;
        let (b_campaign, b_msgs) =
            campaign_with(store, w.b.org, w.b.twilio, &[Some("SMshared"), None]).await;

        let answer = send(
            &w.state,
            twilio_status(
                w.b.twilio,
                Some(w.b.twilio_token),
                "SMshared",
                "delivered",
                None,
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            status_of(store, b_campaign, b_msgs[0]).await,
            MessageStatus::Delivered
        );
        assert_eq!(
            status_of(store, a_campaign, a_msgs[0]).await,
            MessageStatus::Sent
        );
        send(
            &w.state,
            twilio_status(w.a.twilio, Some(w.a.twilio_token), "SMshared", "read", None),
        )
        .await;
        assert_eq!(
            status_of(store, a_campaign, a_msgs[0]).await,
            MessageStatus::Read
        );
        assert_eq!(
            status_of(store, b_campaign, b_msgs[0]).await,
            MessageStatus::Delivered
        );

        // Kept on B's channel; A records the id first, then B.
        send(
            &w.state,
            twilio_status(w.b.twilio, Some(w.b.twilio_token), "SMlate", "read", None),
        )
        .await;
        assert_eq!(kept_for(&db, w.b.twilio, "SMlate").await, 1);
        record_sent(store, a_campaign, a_msgs[1], "SMlate").await;
        store
            .apply_kept_receipts(herald::clock::now_ms())
            .await
            .unwrap();
        assert_eq!(
            status_of(store, a_campaign, a_msgs[1]).await,
            MessageStatus::Sent
        );
        assert_eq!(kept_for(&db, w.b.twilio, "SMlate").await, 1);
        record_sent(store, b_campaign, b_msgs[1], "SMlate").await;
        assert_eq!(
            status_of(store, b_campaign, b_msgs[1]).await,
            MessageStatus::Read
        );
        assert_eq!(kept_for(&db, w.b.twilio, "SMlate").await, 0);
        assert_counters_match(store, a_campaign).await;
        assert_counters_match(store, b_campaign).await;
    }
);

/// The sum of `herald_webhooks_rejected_total` over its labels in the process's recorder.
fn rejected_total(handle: &metrics_exporter_prometheus::PrometheusHandle) -> f64 {
    handle
        .render()
        .lines()
        .filter(|l| l.starts_with("herald_webhooks_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// The flood as reported, scaled down: forged requests of every kind get 403 and add no
// row; each is counted in herald_webhooks_rejected_total.
both_stores!(forged_webhooks_are_counted_not_stored, |db| async move {
    let handle = herald::telemetry::metrics_handle().expect("the test binary's recorder");
    let w = world(&db, Settings::default()).await;
    let before = rejected_total(&handle);
    let status_path = format!("/webhooks/twilio/{}/status", w.a.twilio);
    let params = [("MessageSid", "SM1"), ("MessageStatus", "delivered")];
    let mut requests = Vec::new();
    for i in 0..40 {
        requests.push(twilio_request(
            &status_path,
            &params,
            Some("not-the-token"),
            None,
        ));
        requests.push(twilio_request(&status_path, &params, None, None));
        requests.push(twilio_request(
            &format!("/webhooks/twilio/{}/inbound", 900_000 + i),
            &[("From", "+12000000001"), ("Body", "STOP")],
            Some(w.a.twilio_token),
            None,
        ));
        requests.push(whatsapp_request(
            w.a.whatsapp,
            &whatsapp_event(serde_json::json!({"statuses": []})),
            Some("not-the-secret"),
        ));
        requests.push(
            Request::post(&status_path)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", "AAAA")
                .body(Body::from(vec![0xff_u8, 0xfe, b'=', 0x80]))
                .unwrap(),
        );
    }
    let sent = requests.len();
    for req in requests {
        let answer = send(&w.state, req).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    }
    assert_eq!(
        db.raw_scalar("SELECT count(*) FROM webhook_events").await,
        0
    );
    let counted = rejected_total(&handle) - before;
    assert!(
        counted >= sent as f64,
        "{sent} forged requests, {counted} counted in herald_webhooks_rejected_total"
    );
    // A genuine request is still kept.
    let answer = send(
        &w.state,
        twilio_status(w.a.twilio, Some(w.a.twilio_token), "SM1", "delivered", None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        db.raw_scalar("SELECT count(*) FROM webhook_events").await,
        1
    );
});

// Accepted records older than webhook_retention_days are deleted by the engine's
// reconciler, in batches, including more than one batch's worth.
both_stores!(retention_deletes_old_accepted_records, |db| async move {
    let settings = Settings {
        webhook_retention_days: 30,
        ..Settings::default()
    };
    let w = world(&db, settings.clone()).await;
    for sid in ["SMr0", "SMr1", "SMr2"] {
        let answer = send(
            &w.state,
            twilio_status(w.a.twilio, Some(w.a.twilio_token), sid, "delivered", None),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let day: i64 = 24 * 3600 * 1000;
    let now = herald::clock::now_ms();
    let raw = db.raw().await;
    // 2,500 more records from 40 days ago: more than one delete batch.
    let bulk = match db.backend {
        crate::support::Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
                 INSERT INTO webhook_events (channel_id, kind, verified, outcome, body, received_at) \
                 SELECT $1, 'twilio-status', 1, 'applied', 'old', $2 FROM n"
        }
        crate::support::Backend::Postgres => {
            "INSERT INTO webhook_events (channel_id, kind, verified, outcome, body, received_at) \
                 SELECT $1, 'twilio-status', 1, 'applied', 'old', $2 FROM generate_series(1, 2500)"
        }
    };
    sqlx::query(bulk)
        .bind(w.a.twilio)
        .bind(now - 40 * day)
        .execute(&raw)
        .await
        .unwrap();
    // Two of the three genuine ones are 31 days old, one 29.
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM webhook_events WHERE body <> 'old' ORDER BY id")
            .fetch_all(&raw)
            .await
            .unwrap();
    assert_eq!(ids.len(), 3);
    for (id, age) in ids.iter().zip([31, 31, 29]) {
        sqlx::query("UPDATE webhook_events SET received_at = $1 WHERE id = $2")
            .bind(now - age * day)
            .bind(*id)
            .execute(&raw)
            .await
            .unwrap();
    }
    raw.close().await;
    let engine = herald::engine::Engine::new(db.store.clone(), settings, "test");
    let ctx = engine.context();
    herald::engine::reconciler::reconcile_once(&ctx, false, &mut std::collections::BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(
        db.raw_scalar("SELECT count(*) FROM webhook_events").await,
        1
    );
    let pool = db.raw().await;
    let left: i64 = sqlx::query_scalar("SELECT id FROM webhook_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(left, ids[2]);
});

// One source address flooding one channel gets 429 with Retry-After and a problem
// document once over webhook_rate_per_minute, before any signature or database work; other
// addresses and other channels keep their own allowance. IPv6 counts per /64.
both_stores!(webhook_flood_from_one_address_gets_429, |db| async move {
    // The limiter counts in fixed one-minute windows: a window that turns mid-test forgets
    // the flood. Start with at least 20 s of the current window left.
    let into_window = herald::clock::now_ms().rem_euclid(60_000);
    if into_window > 40_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            (60_000 - into_window + 50) as u64,
        ))
        .await;
    }
    let settings = Settings {
        webhook_rate_per_minute: 5,
        ..Settings::default()
    };
    let w = world(&db, settings).await;
    let path = format!("/webhooks/twilio/{}/status", w.a.twilio);
    let params = [("MessageSid", "SMf"), ("MessageStatus", "delivered")];
    let flooder: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    for _ in 0..5 {
        let answer = send(
            &w.state,
            twilio_request(&path, &params, Some(w.a.twilio_token), Some(flooder)),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let stored = db.raw_scalar("SELECT count(*) FROM webhook_events").await;
    for token in [Some(w.a.twilio_token), None] {
        let answer = send(
            &w.state,
            twilio_request(&path, &params, token, Some(flooder)),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            answer.body
        );
        let retry_after: u64 = answer
            .headers
            .get("retry-after")
            .expect("Retry-After")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(
            answer.headers.get("content-type").unwrap(),
            "application/problem+json"
        );
        let problem: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            problem["type"],
            "https://herald.dev/problems/webhook-rate-limited"
        );
        assert_eq!(problem["status"], 429);
    }
    // Refused before anything was written.
    assert_eq!(
        db.raw_scalar("SELECT count(*) FROM webhook_events").await,
        stored
    );
    // Another address, and the same address on another channel, are not limited.
    let other: SocketAddr = "203.0.113.8:40000".parse().unwrap();
    let answer = send(
        &w.state,
        twilio_request(&path, &params, Some(w.a.twilio_token), Some(other)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let b_path = format!("/webhooks/twilio/{}/status", w.b.twilio);
    let answer = send(
        &w.state,
        twilio_request(&b_path, &params, Some(w.b.twilio_token), Some(flooder)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // An IPv6 host has a /64: changing the low bits does not buy a new allowance.
    for i in 0..6 {
        let peer: SocketAddr = format!("[2001:db8:1:2::{}]:443", i + 1).parse().unwrap();
        let answer = send(&w.state, twilio_request(&path, &params, None, Some(peer))).await;
        let expected = if i < 5 {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(answer.status, expected, "request {i}: {}", answer.body);
    }
});

// Channel enumeration: an unknown channel id, a channel of the other kind, a bad or
// missing signature and a body that cannot be signed answer byte for byte the same.
both_stores!(
    unknown_channel_and_bad_signature_answer_identically,
    |db| async move {
        let mut w = world(&db, Settings::default()).await;
        let params = [("MessageSid", "SM1"), ("MessageStatus", "delivered")];
        let unknown = 987_654;
        for route in ["status", "inbound"] {
            let path = |channel: ChannelId| format!("/webhooks/twilio/{channel}/{route}");
            let answers = vec![
                send(
                    &w.state,
                    twilio_request(
                        &path(ChannelId(unknown)),
                        &params,
                        Some(w.a.twilio_token),
                        None,
                    ),
                )
                .await,
                send(
                    &w.state,
                    twilio_request(&path(w.a.twilio), &params, Some("not-the-token"), None),
                )
                .await,
                send(
                    &w.state,
                    twilio_request(&path(w.a.twilio), &params, None, None),
                )
                .await,
                send(
                    &w.state,
                    twilio_request(&path(w.a.whatsapp), &params, Some(w.a.twilio_token), None),
                )
                .await,
                send(
                    &w.state,
                    Request::post(path(w.a.twilio))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("x-twilio-signature", "AAAA")
                        .body(Body::from(vec![0xff_u8, 0xfe, b'=', 0x80]))
                        .unwrap(),
                )
                .await,
            ];
            assert_identical(&answers, StatusCode::FORBIDDEN);
        }

        let event = whatsapp_event(serde_json::json!({"statuses": []}));
        let answers = vec![
            send(
                &w.state,
                whatsapp_request(ChannelId(unknown), &event, Some(w.a.app_secret)),
            )
            .await,
            send(
                &w.state,
                whatsapp_request(w.a.whatsapp, &event, Some("not-the-secret")),
            )
            .await,
            send(&w.state, whatsapp_request(w.a.whatsapp, &event, None)).await,
            send(
                &w.state,
                whatsapp_request(w.a.twilio, &event, Some(w.a.app_secret)),
            )
            .await,
        ];
        assert_identical(&answers, StatusCode::FORBIDDEN);

        let verify = |channel: ChannelId, token: &str| {
            Request::get(format!(
                "/webhooks/whatsapp/{channel}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=42"
            ))
            .body(Body::empty())
            .unwrap()
        };
        let answers = vec![
            send(&w.state, verify(ChannelId(unknown), "verify-me")).await,
            send(&w.state, verify(w.a.whatsapp, "wrong")).await,
            send(&w.state, verify(w.a.twilio, "verify-me")).await,
        ];
        assert_identical(&answers, StatusCode::FORBIDDEN);
        assert_eq!(
            send(&w.state, verify(w.a.whatsapp, "verify-me")).await.body,
            "42"
        );

        // Without public_url no Twilio signature can be checked: the answer says so, for
        // every channel id alike.
        w.state.context.public_url = None;
        let path = |channel: ChannelId| format!("/webhooks/twilio/{channel}/status");
        let answers = vec![
            send(
                &w.state,
                twilio_request(
                    &path(ChannelId(unknown)),
                    &params,
                    Some(w.a.twilio_token),
                    None,
                ),
            )
            .await,
            send(
                &w.state,
                twilio_request(&path(w.a.twilio), &params, Some(w.a.twilio_token), None),
            )
            .await,
        ];
        assert_identical(&answers, StatusCode::FORBIDDEN);
        assert!(
            answers[0].body.contains("public_url"),
            "{}",
            answers[0].body
        );
    }
);

fn assert_identical(answers: &[Answer], status: StatusCode) {
    let first = &answers[0];
    assert_eq!(first.status, status, "{}", first.body);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(
            (a.status, &a.body, a.headers.get("content-type")),
            (first.status, &first.body, first.headers.get("content-type")),
            "answer {i} differs from answer 0"
        );
    }
}
