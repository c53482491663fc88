//! The smaller holes of the security issue, replayed as an attacker would: ids with more
//! than one spelling, unsubscribe tokens with a padded id, guessable passwords, event
//! streams that outlive their credentials, and a /metrics page that shows every tenant's
//! channel names to anyone.

use super::{Auth, Reply, TestApp, api_test};
use axum::body::{Body, HttpBody};
use axum::http::{Method, Request, StatusCode, header};
use herald::config::Settings;
use herald::domain::Role;
use herald::engine::Engine;
use herald::http::AppState;
use herald::ids::{CampaignId, ChannelId};
use serde_json::{Value, json};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tower::ServiceExt;

/// A draft campaign of the default organisation over a list of `n` contacts and a
/// sandbox channel named `channel_name`: (campaign id, channel id).
async fn draft_campaign(app: &TestApp, channel_name: &str, n: i64) -> (CampaignId, ChannelId) {
    let store = &app.db.store;
    let list = store
        .ensure_list(app.org, &format!("list-{:08x}", rand::random::<u32>()))
        .await
        .unwrap();
    if n > 0 {
        store.seed_contacts(app.org, list, n).await.unwrap();
    }
    let channel = store
        .create_channel(app.org, channel_name, "sandbox", &json!({}))
        .await
        .unwrap();
    let campaign = crate::support::new_campaign(store, app.org, list, channel, "Hi").await;
    (campaign, channel)
}

#[track_caller]
fn expect_not_found(reply: &Reply, spelling: &str) {
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "{spelling} was accepted: {}",
        reply.text
    );
    reply.expect_problem(StatusCode::NOT_FOUND, "not-found");
}

// --------------------------------------------------------------------------------------
// One spelling per id
// --------------------------------------------------------------------------------------

api_test!(ids_have_one_spelling, |app| async move {
    let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
    let (campaign, channel) = draft_campaign(&app, "spelling", 0).await;
    app.get(&format!("/api/v1/campaigns/{campaign}"), &viewer)
        .await
        .expect(StatusCode::OK);
    app.get(&format!("/api/v1/channels/{channel}"), &viewer)
        .await
        .expect(StatusCode::OK);
    // `%3N` is the digit N percent-encoded: axum decodes `cmp_%31` to `cmp_1`.
    let digits = campaign.to_string();
    let encoded_first: String = format!("%3{}{}", &digits[..1], &digits[1..]);
    for spelling in [
        format!("cmp_0{campaign}"),
        format!("cmp_00{campaign}"),
        format!("cmp_+{campaign}"),
        format!("cmp_%2B{campaign}"),
        format!("cmp_{encoded_first}"),
        format!("%63mp_{campaign}"),
        format!("cmp%5F{campaign}"),
    ] {
        let reply = app
            .get(&format!("/api/v1/campaigns/{spelling}"), &viewer)
            .await;
        expect_not_found(&reply, &spelling);
        let reply = app
            .get(&format!("/api/v1/campaigns/{spelling}/stats"), &viewer)
            .await;
        expect_not_found(&reply, &spelling);
    }
    let reply = app
        .get(&format!("/api/v1/channels/chn_0{channel}"), &viewer)
        .await;
    expect_not_found(&reply, "chn_0…");
    // A write through a padded id changes nothing either.
    let editor = Auth::Key(app.key(app.org, Role::Editor).await);
    let reply = app
        .call(
            Method::PATCH,
            &format!("/api/v1/campaigns/cmp_0{campaign}"),
            &editor,
            Some(json!({"name": "renamed"})),
        )
        .await;
    expect_not_found(&reply, "PATCH cmp_0…");
});

// --------------------------------------------------------------------------------------
// Unsubscribe tokens
// --------------------------------------------------------------------------------------

api_test!(
    unsubscribe_token_with_a_padded_id_is_refused,
    |app| async move {
        let store = &app.db.store;
        let (campaign, _) = draft_campaign(&app, "unsubscribe", 1).await;
        store
            .start_campaign(campaign, herald::clock::now_ms(), "test", None)
            .await
            .unwrap();
        let message = crate::support::all_messages(store, campaign, None).await[0].id;
        let token = herald::webhooks::unsubscribe::token(crate::api::SECRET_KEY, message).unwrap();
        let tag = token.split_once('.').unwrap().1;
        let address = crate::support::seeded_address(1);
        for padded in [format!("0{message}.{tag}"), format!("+{message}.{tag}")] {
            let reply = app
                .send(
                    Method::POST,
                    &format!("/unsubscribe/{padded}"),
                    &Auth::None,
                    &[],
                    Some((
                        "application/x-www-form-urlencoded",
                        "List-Unsubscribe=One-Click".into(),
                    )),
                )
                .await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{padded} was accepted: {}",
                reply.text
            );
            assert!(
                !store.is_suppressed(app.org, &address).await.unwrap(),
                "{padded} unsubscribed the recipient"
            );
        }
        // The token as issued still works.
        let reply = app
            .send(
                Method::POST,
                &format!("/unsubscribe/{token}"),
                &Auth::None,
                &[],
                Some((
                    "application/x-www-form-urlencoded",
                    "List-Unsubscribe=One-Click".into(),
                )),
            )
            .await;
        reply.expect(StatusCode::OK);
        assert!(store.is_suppressed(app.org, &address).await.unwrap());
    }
);

// --------------------------------------------------------------------------------------
// Passwords
// --------------------------------------------------------------------------------------

#[track_caller]
fn expect_weak(reply: &Reply, password: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{password:?} was accepted: {}",
        reply.text
    );
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    let error = &reply.body["errors"][0];
    assert_eq!(error["field"], "password", "{}", reply.text);
    assert_eq!(error["rule"], "strength", "{}", reply.text);
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("passphrase")),
        "the refusal suggests a passphrase: {}",
        reply.text
    );
}

api_test!(guessable_passwords_are_refused, |app| async move {
    let admin = Auth::Key(app.key(app.org, Role::Admin).await);
    for weak in [
        "aaaaaaaaaaaa",
        "111111111111",
        "password1234",
        "qwertyuiop12",
        "mallory@example.org",
    ] {
        let reply = app
            .post(
                "/api/v1/users",
                &admin,
                json!({"email": "mallory@example.org", "role": "viewer", "password": weak}),
            )
            .await;
        expect_weak(&reply, weak);
    }
    assert!(
        app.db
            .store
            .user_credentials("mallory@example.org")
            .await
            .unwrap()
            .is_none(),
        "no user was created with a weak password"
    );
    let created = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"email": "mallory@example.org", "role": "viewer", "password": "tangerine orbit velvet harbour"}),
        )
        .await;
    created.expect(StatusCode::CREATED);
    let id = created.body["user"]["id"].as_str().unwrap().to_string();
    // A password change is held to the same rule.
    let reply = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            &admin,
            Some(json!({"password": "zzzzzzzzzzzzzzzz"})),
        )
        .await;
    expect_weak(&reply, "zzzzzzzzzzzzzzzz");
    app.sign_in("mallory@example.org", "tangerine orbit velvet harbour")
        .await;
});

// --------------------------------------------------------------------------------------
// Event streams end when their credentials do
// --------------------------------------------------------------------------------------

/// Opens a campaign's event stream with `auth`.
async fn open_stream(app: &TestApp, campaign: CampaignId, auth: &Auth) -> Body {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("/api/v1/campaigns/{campaign}/events"));
    match auth {
        Auth::Key(k) => req = req.header(header::AUTHORIZATION, format!("Bearer {k}")),
        Auth::Session { cookie, .. } => req = req.header(header::COOKIE, cookie),
        Auth::None => {}
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body()
}

/// Reads the stream to its end; panics if it is still open after `within`. Returns the
/// text received after the call began.
async fn read_to_end(body: &mut Body, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut text = String::new();
    loop {
        let frame = tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)),
        )
        .await
        .unwrap_or_else(|_| panic!("the stream is still open after {within:?}: {text}"));
        match frame {
            None => return text,
            Some(frame) => {
                if let Ok(bytes) = frame.unwrap().into_data() {
                    text.push_str(std::str::from_utf8(&bytes).unwrap());
                }
            }
        }
    }
}

/// Reads what the stream sends for `period`, asserting it stays open.
async fn stays_open(body: &mut Body, period: Duration) {
    let deadline = tokio::time::Instant::now() + period;
    loop {
        match tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)),
        )
        .await
        {
            Err(_) => return,
            Ok(None) => panic!("the stream ended while its credentials were valid"),
            Ok(Some(_)) => {}
        }
    }
}

/// The stream ends, with an `end` event, within 10 s of `revoke` (the re-check interval is
/// 5 s; 10 s is the promise).
async fn ends_after(body: &mut Body, what: &str) {
    let revoked = Instant::now();
    let rest = read_to_end(body, Duration::from_secs(10)).await;
    assert!(
        rest.contains("event: end") && rest.contains("reconnect"),
        "{what}: the stream ended without saying why: {rest}"
    );
    eprintln!("{what}: stream ended {:?} after", revoked.elapsed());
}

api_test!(
    event_stream_ends_when_its_api_key_is_revoked,
    |app| async move {
        let admin = Auth::Key(app.key(app.org, Role::Admin).await);
        let (campaign, _) = draft_campaign(&app, "stream", 0).await;
        let created = app
            .post(
                "/api/v1/api-keys",
                &admin,
                json!({"name": "dashboard-tv", "role": "viewer"}),
            )
            .await;
        created.expect(StatusCode::CREATED);
        let key = created.body["key"].as_str().unwrap().to_string();
        let key_id = created.body["api_key"]["id"].as_str().unwrap().to_string();
        let mut stream = open_stream(&app, campaign, &Auth::Key(key.clone())).await;
        stays_open(&mut stream, Duration::from_secs(6)).await;
        app.call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{key_id}"),
            &admin,
            None,
        )
        .await;
        app.get("/api/v1/auth/session", &Auth::Key(key))
            .await
            .expect(StatusCode::UNAUTHORIZED);
        ends_after(&mut stream, "API key revoked").await;
    }
);

api_test!(
    event_stream_ends_when_its_session_signs_out,
    |app| async move {
        let (campaign, _) = draft_campaign(&app, "stream", 0).await;
        let password = "tangerine orbit velvet harbour";
        app.user(app.org, "ada@example.org", Role::Viewer, password)
            .await;
        let (cookie, csrf) = app.sign_in("ada@example.org", password).await;
        let session = Auth::Session {
            cookie,
            csrf: Some(csrf),
        };
        let mut stream = open_stream(&app, campaign, &session).await;
        app.call(Method::POST, "/api/v1/auth/logout", &session, None)
            .await
            .expect(StatusCode::NO_CONTENT);
        ends_after(&mut stream, "session signed out").await;
    }
);

api_test!(
    event_stream_ends_when_its_user_is_removed_or_demoted,
    |app| async move {
        let admin = Auth::Key(app.key(app.org, Role::Admin).await);
        let (campaign, _) = draft_campaign(&app, "stream", 0).await;
        let password = "tangerine orbit velvet harbour";
        let mut ids = Vec::new();
        for email in ["grace@example.org", "alan@example.org"] {
            app.user(app.org, email, Role::Editor, password).await;
            let users = app.get("/api/v1/users", &admin).await;
            let id = users.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["email"] == email)
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            ids.push(id);
        }
        let mut streams = Vec::new();
        for email in ["grace@example.org", "alan@example.org"] {
            let (cookie, _) = app.sign_in(email, password).await;
            let auth = Auth::Session { cookie, csrf: None };
            streams.push(open_stream(&app, campaign, &auth).await);
        }
        app.call(
            Method::DELETE,
            &format!("/api/v1/users/{}", ids[0]),
            &admin,
            None,
        )
        .await
        .expect(StatusCode::NO_CONTENT);
        app.call(
            Method::PATCH,
            &format!("/api/v1/users/{}", ids[1]),
            &admin,
            Some(json!({"role": "viewer"})),
        )
        .await
        .expect(StatusCode::OK);
        let (removed, demoted) = streams.split_at_mut(1);
        tokio::join!(
            ends_after(&mut removed[0], "user removed"),
            ends_after(&mut demoted[0], "role lowered"),
        );
    }
);

// --------------------------------------------------------------------------------------
// /metrics
// --------------------------------------------------------------------------------------

const METRICS_TOKEN: &str = "scrape-7f3a9c1e5b2d";

fn metrics_router(app: &TestApp, token: Option<&str>) -> axum::Router {
    herald::http::router(AppState {
        store: app.db.store.clone(),
        metrics: herald::telemetry::metrics_handle(),
        context: herald::channels::BuildContext {
            public_url: Some("http://herald.test".into()),
            secret_key: Some(super::SECRET_KEY.into()),
            outbound: Default::default(),
        },
        settings: std::sync::Arc::new(Settings {
            metrics_token: token.map(str::to_string),
            ..Settings::default()
        }),
        webhook_limiter: Default::default(),
    })
}

async fn scrape(router: &axum::Router, authorization: Option<&str>) -> (StatusCode, Value, String) {
    let mut req = Request::get("/metrics");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

api_test!(metrics_label_channels_by_id_not_name, |app| async move {
    let store = &app.db.store;
    // A tenant's channel name is its own text: another tenant must not read it on /metrics.
    let secret_name = "Acme Q3 layoffs notice";
    let (campaign, channel) = draft_campaign(&app, secret_name, 3).await;
    let router = metrics_router(&app, None);
    let (stop, rx) = watch::channel(false);
    let settings = Settings {
        idle_poll_ms: 20,
        scheduler_interval_ms: 100,
        reconcile_interval_ms: 150,
        heartbeat_interval_ms: 100,
        ..Settings::default()
    };
    let engine = tokio::spawn(Engine::new(store.clone(), settings, "test").run(rx));
    store
        .start_campaign(campaign, herald::clock::now_ms(), "test", None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let label = format!("channel=\"{channel}\"");
    let page = loop {
        let (status, _, page) = scrape(&router, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if page
            .lines()
            .any(|l| l.starts_with("herald_messages_total{") && l.contains(&label))
        {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "no herald_messages_total with {label} within 60 s:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(true);
    engine.await.unwrap().unwrap();
    assert!(
        !page.contains(secret_name),
        "/metrics shows the channel's name:\n{page}"
    );
});

api_test!(
    metrics_require_the_token_when_one_is_set,
    |app| async move {
        let open = metrics_router(&app, None);
        let (status, _, _) = scrape(&open, None).await;
        assert_eq!(status, StatusCode::OK, "without a token, /metrics is open");
        let guarded = metrics_router(&app, Some(METRICS_TOKEN));
        for refused in [
            None,
            Some("Bearer wrong-token"),
            Some("Bearer scrape-7f3a9c1e5b2"),
            Some("scrape-7f3a9c1e5b2d"),
            Some("Basic c2NyYXBlOnNjcmFwZQ=="),
        ] {
            let (status, problem, text) = scrape(&guarded, refused).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{refused:?} was let in: {text}"
            );
            assert_eq!(
                problem["type"], "https://herald.dev/problems/metrics-token-required",
                "{text}"
            );
            assert!(!text.contains("herald_"), "{text}");
        }
        let (status, _, text) = scrape(&guarded, Some(&format!("Bearer {METRICS_TOKEN}"))).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
);
