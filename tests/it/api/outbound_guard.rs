//! The outbound address guard against SSRF, and SMTP credentials never sent in clear.
//!
//! An admin points a channel at the machine's own services (loopback in every spelling,
//! the cloud metadata address, 0.0.0.0) and test-sends or runs a campaign: Herald must
//! refuse before connecting, so a listener bound on loopback sees nothing and the error
//! says nothing about the port. The operator's switches (`outbound_allow_private`,
//! `outbound_allow_cidrs`) let self-hosted providers through.

use super::{Auth, Reply, SECRET_KEY, TestApp};
use crate::support::Backend;
use axum::http::{Method, StatusCode};
use herald::config::Settings;
use herald::domain::{CampaignStatus, Role};
use herald::engine::Engine;
use herald::ids::{CampaignId, ChannelId};
use herald::outbound::OutboundGuard;
use herald::store::{NewCampaign, Store};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "tok-ssrf-0123456789";
const ACCESS_TOKEN: &str = "EAAG-ssrf-access-token";
const REFUSED: &str = "outbound destination refused";

/// A TCP listener that records every connection and, when asked, answers one canned HTTP
/// response per connection.
struct Listener {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    /// Binds `ip:0`; None when the address family is not available here (IPv6).
    async fn bind(ip: &str, answer: Option<String>) -> Option<Listener> {
        let listener = TcpListener::bind(format!("{ip}:0")).await.ok()?;
        let addr = listener.local_addr().ok()?;
        let connections = Arc::new(Mutex::new(Vec::new()));
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let request = read_http_request(&mut stream).await;
                    seen.lock().unwrap().push(request);
                    if let Some(a) = answer {
                        let _ = stream.write_all(a.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        Some(Listener { addr, connections })
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn seen(&self) -> Vec<String> {
        self.connections.lock().unwrap().clone()
    }
}

/// The request's head and body as text (empty when the peer sends nothing in time).
async fn read_http_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&buf).to_string()
}

fn http_answer(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn admin(app: &TestApp) -> Auth {
    Auth::Key(app.key(app.org, Role::Admin).await)
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {}", reply.text))
        .to_string()
}

fn twilio_at(name: &str, base_url: &str) -> Value {
    json!({"name": name, "kind": "twilio",
        "config": {"account_sid": TWILIO_SID, "from": "+15017122661", "base_url": base_url},
        "secrets": {"auth_token": AUTH_TOKEN}})
}

fn whatsapp_at(name: &str, base_url: &str) -> Value {
    json!({"name": name, "kind": "whatsapp",
        "config": {"phone_number_id": "1234567890", "base_url": base_url},
        "secrets": {"access_token": ACCESS_TOKEN, "app_secret": "app-secret", "verify_token": "verify"}})
}

fn smtp_at(name: &str, host: &str, port: u16) -> Value {
    json!({"name": name, "kind": "smtp",
        "config": {"host": host, "port": port, "tls": "none", "from": "news@example.com"}})
}

async fn create(app: &TestApp, auth: &Auth, body: Value) -> String {
    let r = app.post("/api/v1/channels", auth, body).await;
    r.expect(StatusCode::CREATED);
    id_of(&r)
}

async fn test_send(app: &TestApp, auth: &Auth, id: &str, to: &str) -> Reply {
    app.post(
        &format!("/api/v1/channels/{id}/test"),
        auth,
        json!({"to": to, "body": "hello"}),
    )
    .await
}

/// Asserts the guard's refusal: a 409 `destination-refused` whose detail is the guard's
/// message and carries no secret.
#[track_caller]
fn expect_refused(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::CONFLICT,
        "{what}: expected the guard's refusal, got {}",
        reply.text
    );
    reply.expect_problem(StatusCode::CONFLICT, "destination-refused");
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(REFUSED), "{what}: {detail}");
    for secret in [AUTH_TOKEN, ACCESS_TOKEN] {
        assert!(!reply.text.contains(secret), "{what}: {}", reply.text);
    }
}

/// Every spelling of "this machine" the issue lists, as a URL host for `port`, and
/// whether the listener on `127.0.0.1:port` (or `[::1]:port`) is what it reaches.
fn loopback_spellings(port: u16, v6_port: Option<u16>) -> Vec<(String, String)> {
    let mut hosts = vec![
        ("127.0.0.1".to_string(), format!("http://127.0.0.1:{port}")),
        ("localhost".to_string(), format!("http://localhost:{port}")),
        ("127.1".to_string(), format!("http://127.1:{port}")),
        (
            "2130706433".to_string(),
            format!("http://2130706433:{port}"),
        ),
        ("0.0.0.0".to_string(), format!("http://0.0.0.0:{port}")),
        // The metadata endpoint: nothing listens there in a test, and nothing may try.
        (
            "169.254.169.254".to_string(),
            "http://169.254.169.254".to_string(),
        ),
    ];
    if let Some(p) = v6_port {
        hosts.push(("[::1]".to_string(), format!("http://[::1]:{p}")));
    }
    hosts
}

async fn strict(backend: Backend) -> TestApp {
    TestApp::with_outbound(backend, OutboundGuard::default()).await
}

macro_rules! guard_test {
    ($name:ident, |$backend:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $backend = Backend::Sqlite;
                $body.await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $backend = Backend::Postgres;
                $body.await;
            }
        }
    };
}

// Twilio and WhatsApp channels pointed at each loopback spelling, the metadata address
// and 0.0.0.0: the test send is refused by the guard and no connection reaches the
// listener. Before the guard, each of these connected and sent the credentials.
guard_test!(
    http_channels_to_internal_addresses_are_refused_without_connecting,
    |backend| async move {
        let app = strict(backend).await;
        let admin = admin(&app).await;
        let ok = Some(http_answer(
            "201 Created",
            "application/json",
            r#"{"sid":"SM0123","messages":[{"id":"wamid.1"}]}"#,
        ));
        let v4 = Listener::bind("127.0.0.1", ok.clone()).await.unwrap();
        let v6 = Listener::bind("[::1]", ok).await;
        let spellings = loopback_spellings(v4.port(), v6.as_ref().map(Listener::port));
        for (i, (host, url)) in spellings.iter().enumerate() {
            let tw = create(&app, &admin, twilio_at(&format!("tw-{i}"), url)).await;
            expect_refused(
                &test_send(&app, &admin, &tw, "+15550001234").await,
                &format!("twilio at {host}"),
            );
            let wa = create(&app, &admin, whatsapp_at(&format!("wa-{i}"), url)).await;
            expect_refused(
                &test_send(&app, &admin, &wa, "+15550001234").await,
                &format!("whatsapp at {host}"),
            );
        }
        // Patching a channel that was fine to an internal address is refused the same.
        let tw = create(
            &app,
            &admin,
            twilio_at("moved", "https://api.twilio.example"),
        )
        .await;
        app.call(
            Method::PATCH,
            &format!("/api/v1/channels/{tw}"),
            &admin,
            Some(
                json!({"config": {"base_url": format!("http://127.1:{}", v4.port())},
                "secrets": {"auth_token": AUTH_TOKEN}}),
            ),
        )
        .await
        .expect(StatusCode::OK);
        expect_refused(
            &test_send(&app, &admin, &tw, "+15550001234").await,
            "twilio patched to 127.1",
        );
        assert!(v4.seen().is_empty(), "connections: {:?}", v4.seen());
        if let Some(v6) = v6 {
            assert!(v6.seen().is_empty(), "connections: {:?}", v6.seen());
        }
    }
);

// An SMTP channel's host in each spelling: refused before connecting, the listener sees
// nothing.
guard_test!(
    smtp_channels_to_internal_addresses_are_refused_without_connecting,
    |backend| async move {
        let app = strict(backend).await;
        let admin = admin(&app).await;
        let v4 = Listener::bind("127.0.0.1", None).await.unwrap();
        let v6 = Listener::bind("[::1]", None).await;
        let mut hosts = vec![
            ("127.0.0.1", v4.port()),
            ("localhost", v4.port()),
            ("127.1", v4.port()),
            ("2130706433", v4.port()),
            ("0.0.0.0", v4.port()),
            ("169.254.169.254", 25),
        ];
        if let Some(v6) = &v6 {
            hosts.push(("::1", v6.port()));
        }
        for (i, (host, port)) in hosts.iter().enumerate() {
            let id = create(&app, &admin, smtp_at(&format!("mail-{i}"), host, *port)).await;
            expect_refused(
                &test_send(&app, &admin, &id, "ada@example.org").await,
                &format!("smtp at {host}"),
            );
        }
        assert!(v4.seen().is_empty(), "connections: {:?}", v4.seen());
        if let Some(v6) = v6 {
            assert!(v6.seen().is_empty(), "connections: {:?}", v6.seen());
        }
    }
);

// The operator's switches: with `outbound_allow_private` or a CIDR listing the network,
// the same loopback destination is reached (self-hosted providers, tests); a CIDR for
// another network does not open loopback.
guard_test!(
    private_destinations_pass_when_the_operator_allows_them,
    |backend| async move {
        let ok = Some(http_answer(
            "201 Created",
            "application/json",
            r#"{"sid":"SM0123"}"#,
        ));
        for (guard, reaches) in [
            (OutboundGuard::allow_all(), true),
            (
                OutboundGuard::new(false, herald::outbound::parse_cidrs("127.0.0.0/8").unwrap()),
                true,
            ),
            (
                OutboundGuard::new(false, herald::outbound::parse_cidrs("10.0.0.0/8").unwrap()),
                false,
            ),
        ] {
            let described = format!("{guard:?}");
            let app = TestApp::with_outbound(backend, guard).await;
            let admin = admin(&app).await;
            let listener = Listener::bind("127.0.0.1", ok.clone()).await.unwrap();
            let id = create(
                &app,
                &admin,
                twilio_at("local", &format!("http://localhost:{}", listener.port())),
            )
            .await;
            let r = test_send(&app, &admin, &id, "+15550001234").await;
            if reaches {
                r.expect(StatusCode::OK);
                assert_eq!(r.body["outcome"], "accepted", "{described}: {}", r.text);
                assert_eq!(listener.seen().len(), 1, "{described}");
            } else {
                expect_refused(&r, &described);
                assert!(listener.seen().is_empty(), "{described}");
            }
        }
    }
);

// An internal service that is not a provider answers with a page holding a secret: the
// error shown to the admin describes the answer (status, type, size) and never quotes it.
guard_test!(
    answers_of_non_provider_services_are_never_echoed,
    |backend| async move {
        const SECRET: &str = "INTERNAL-ADMIN-PASSWORD-42";
        let app = TestApp::with_outbound(backend, OutboundGuard::allow_all()).await;
        let admin = admin(&app).await;
        let page = format!("<html><body>db password: {SECRET}</body></html>");
        let json_leak = format!(r#"{{"status":"ok","config":{{"password":"{SECRET}"}}}}"#);
        for (i, (status, content_type, body)) in [
            ("404 Not Found", "text/html; charset=utf-8", page.clone()),
            ("200 OK", "text/html", page.clone()),
            (
                "500 Internal Server Error",
                "application/json",
                json_leak.clone(),
            ),
            ("200 OK", "application/json", json_leak.clone()),
        ]
        .into_iter()
        .enumerate()
        {
            let listener =
                Listener::bind("127.0.0.1", Some(http_answer(status, content_type, &body)))
                    .await
                    .unwrap();
            let url = format!("http://127.0.0.1:{}", listener.port());
            for channel in [
                twilio_at(&format!("tw-{i}"), &url),
                whatsapp_at(&format!("wa-{i}"), &url),
            ] {
                let id = create(&app, &admin, channel).await;
                let r = test_send(&app, &admin, &id, "+15550001234").await;
                assert!(
                    !r.text.contains(SECRET),
                    "{status} {content_type}: {}",
                    r.text
                );
                assert!(!r.text.contains("db password"), "{}", r.text);
                let error = r.body["error"].as_str().unwrap_or_default();
                assert!(
                    error.contains("unexpected answer (HTTP "),
                    "{status} {content_type}: {}",
                    r.text
                );
                assert!(
                    error.contains(&format!("{} bytes", body.len())),
                    "{}",
                    r.text
                );
            }
        }
    }
);

/// The engine's settings: fast loops, the default guard (stated, it is what is tested).
fn fast_settings() -> Settings {
    Settings {
        heartbeat_interval_ms: 100,
        instance_stale_after_ms: 1000,
        reconcile_interval_ms: 150,
        scheduler_interval_ms: 100,
        idle_poll_ms: 20,
        retry_base_ms: 10,
        retry_max_ms: 50,
        secret_key: Some(SECRET_KEY.into()),
        outbound_allow_private: false,
        ..Settings::default()
    }
}

async fn run_campaign_until(store: &Store, channel: ChannelId, want: CampaignStatus) -> CampaignId {
    let org = store.default_org().await.unwrap();
    let list = store.ensure_list(org, "guarded").await.unwrap();
    store.seed_contacts(org, list, 5).await.unwrap();
    let id = store
        .create_campaign(
            &NewCampaign {
                org_id: org,
                name: format!("guarded-{channel}"),
                channel_id: channel,
                list_id: list,
                body: "Hi {{ name }}".into(),
                scheduled_at: None,
                whatsapp_template: None,
                email: None,
                send_window: None,
            },
            "test",
        )
        .await
        .unwrap();
    store
        .start_campaign(id, herald::clock::now_ms(), "test", None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = store.campaign(id).await.unwrap();
        if c.status == want {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign {id} is {} with {:?}, not {want}",
            c.status,
            c.counts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// A campaign on a channel pointed at loopback: the engine (default settings) pauses it
// with the guard's reason and fails no message; nothing reaches the listener.
guard_test!(
    campaigns_to_internal_addresses_pause_with_the_guards_reason,
    |backend| async move {
        let db = crate::support::TestDb::new(backend).await;
        let store = &db.store;
        let org = store.default_org().await.unwrap();
        let key = herald::secrets::SecretKey::parse(SECRET_KEY).unwrap();
        let listener = Listener::bind("127.0.0.1", None).await.unwrap();
        let twilio = store
            .create_channel_with(
                org,
                "tw",
                "twilio",
                &json!({"account_sid": TWILIO_SID, "from": "+15017122661",
                    "base_url": format!("http://localhost:{}", listener.port())}),
                Some((&key, &json!({"auth_token": AUTH_TOKEN}))),
                None,
            )
            .await
            .unwrap();
        let whatsapp = store
            .create_channel_with(
                org,
                "wa",
                "whatsapp",
                &json!({"phone_number_id": "1234567890",
                    "base_url": format!("http://2130706433:{}", listener.port())}),
                Some((
                    &key,
                    &json!({"access_token": ACCESS_TOKEN, "app_secret": "s", "verify_token": "v"}),
                )),
                None,
            )
            .await
            .unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let engine = Engine::new(store.clone(), fast_settings(), "test");
        let task = tokio::spawn(engine.run(rx));
        for channel in [twilio, whatsapp] {
            let id = run_campaign_until(store, channel, CampaignStatus::Paused).await;
            let events = store.events(id).await.unwrap();
            let pause = events
                .iter()
                .rev()
                .find(|e| e.to_status == "paused")
                .unwrap();
            assert!(pause.reason.contains(REFUSED), "{}", pause.reason);
            assert!(!pause.reason.contains(AUTH_TOKEN), "{}", pause.reason);
            assert!(!pause.reason.contains(ACCESS_TOKEN), "{}", pause.reason);
            let c = store.campaign(id).await.unwrap();
            assert_eq!(
                c.counts.get(herald::domain::MessageStatus::Failed),
                0,
                "{:?}",
                c.counts
            );
        }
        let _ = stop.send(true);
        task.await.unwrap().unwrap();
        assert!(
            listener.seen().is_empty(),
            "connections: {:?}",
            listener.seen()
        );
    }
);

// --------------------------------------------------------------------------------------
// SMTP: the TLS mode is part of the endpoint; AUTH never goes over plaintext unasked
// --------------------------------------------------------------------------------------

/// A plaintext SMTP server offering AUTH PLAIN/LOGIN; records every line it receives.
struct PlainSmtp {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PlainSmtp {
    async fn start() -> PlainSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let _ = write.write_all(b"220 plain.test ESMTP\r\n").await;
                    let mut in_data = false;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match read.read_line(&mut line).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        let text = line.trim_end().to_string();
                        seen.lock().unwrap().push(text.clone());
                        let upper = text.to_ascii_uppercase();
                        let reply: &[u8] = if in_data {
                            if text == "." {
                                in_data = false;
                                b"250 queued\r\n"
                            } else {
                                continue;
                            }
                        } else if upper.starts_with("EHLO") {
                            b"250-plain.test\r\n250 AUTH PLAIN LOGIN\r\n"
                        } else if upper.starts_with("AUTH") {
                            b"235 ok\r\n"
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            b"354 go on\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        } else {
                            b"250 ok\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        PlainSmtp { port, lines }
    }

    fn auth_lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.to_ascii_uppercase().starts_with("AUTH"))
            .cloned()
            .collect()
    }
}

// The downgrade of the issue: `tls` starttls → none without the password again is a 422
// naming `secrets` (and the key that changed); with the password but without
// `allow_plaintext_auth` it is a 422 naming `config.tls`; saying so explicitly is accepted.
guard_test!(
    smtp_tls_downgrade_needs_the_secrets_again_and_an_explicit_allowance,
    |backend| async move {
        let app = strict(backend).await;
        let admin = admin(&app).await;
        let id = create(
            &app,
            &admin,
            json!({"name": "mail", "kind": "smtp",
                "config": {"host": "smtp.example.com", "port": 587, "tls": "starttls",
                    "from": "news@example.com", "username": "news"},
                "secrets": {"password": "hunter2-smtp"}}),
        )
        .await;
        let path = format!("/api/v1/channels/{id}");
        let r = app
            .call(
                Method::PATCH,
                &path,
                &admin,
                Some(json!({"config": {"tls": "none"}})),
            )
            .await;
        r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        let errors = r.body["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == "secrets" && e["rule"] == "required"),
            "{}",
            r.text
        );
        assert!(r.text.contains("config.tls"), "{}", r.text);

        let r = app
            .call(
                Method::PATCH,
                &path,
                &admin,
                Some(json!({"config": {"tls": "none"}, "secrets": {"password": "hunter2-smtp"}})),
            )
            .await;
        r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert!(
            r.body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == "config.tls"),
            "{}",
            r.text
        );
        assert!(!r.text.contains("hunter2-smtp"), "{}", r.text);

        // Unchanged: still starttls.
        let current = app.get(&path, &admin).await;
        assert_eq!(
            current.body["config"]["tls"], "starttls",
            "{}",
            current.text
        );

        app.call(
            Method::PATCH,
            &path,
            &admin,
            Some(
                json!({"config": {"tls": "none", "allow_plaintext_auth": true},
                "secrets": {"password": "hunter2-smtp"}}),
            ),
        )
        .await
        .expect(StatusCode::OK);
        // Turning the allowance on alone is a downgrade too.
        let id2 = create(
            &app,
            &admin,
            json!({"name": "mail2", "kind": "smtp",
                "config": {"host": "smtp.example.com", "port": 25, "tls": "none",
                    "from": "news@example.com"}}),
        )
        .await;
        let r = app
            .call(
                Method::PATCH,
                &format!("/api/v1/channels/{id2}"),
                &admin,
                Some(json!({"config": {"allow_plaintext_auth": true, "username": "news"}})),
            )
            .await;
        r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    }
);

// A plaintext SMTP server never sees AUTH from a channel that did not allow it, even one
// stored before the rule existed (written straight to the store, as an upgrade finds it);
// once the channel allows it explicitly, AUTH is sent.
guard_test!(
    plaintext_smtp_never_receives_auth_unless_the_channel_allows_it,
    |backend| async move {
        let app = TestApp::with_outbound(backend, OutboundGuard::allow_all()).await;
        let admin = admin(&app).await;
        let server = PlainSmtp::start().await;
        let key = herald::secrets::SecretKey::parse(SECRET_KEY).unwrap();
        let legacy = app
            .db
            .store
            .create_channel_with(
                app.org,
                "legacy",
                "smtp",
                &json!({"host": "127.0.0.1", "port": server.port, "tls": "none",
                    "from": "news@example.com", "username": "news"}),
                Some((&key, &json!({"password": "hunter2-smtp"}))),
                None,
            )
            .await
            .unwrap();
        let id = format!("{legacy}");
        let r = test_send(&app, &admin, &id, "ada@example.org").await;
        assert_ne!(r.body["outcome"], "accepted", "{}", r.text);
        assert!(!r.text.contains("hunter2-smtp"), "{}", r.text);
        assert!(server.auth_lines().is_empty(), "{:?}", server.auth_lines());

        app.call(
            Method::PATCH,
            &format!("/api/v1/channels/{id}"),
            &admin,
            Some(json!({"config": {"allow_plaintext_auth": true},
                "secrets": {"password": "hunter2-smtp"}})),
        )
        .await
        .expect(StatusCode::OK);
        let r = test_send(&app, &admin, &id, "ada@example.org").await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["outcome"], "accepted", "{}", r.text);
        assert_eq!(server.auth_lines().len(), 1, "{:?}", server.auth_lines());
    }
);
