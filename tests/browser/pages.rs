//! The dashboard without a browser: the real application router over a fresh SQLite store,
//! called in process as a browser with JavaScript off would call it (forms, redirects,
//! cookies). These need no Chromium and run in every `cargo test`.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use herald::api::credentials;
use herald::channels::BuildContext;
use herald::domain::Role;
use herald::http::AppState;
use herald::ids::{CampaignId, ChannelId, OrgId, WebhookEndpointId};
use herald::store::Store;
use std::collections::BTreeMap;
use tower::ServiceExt;

const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const PASSWORD: &str = "a password long enough";

struct App {
    router: Router,
    store: Store,
    org: OrgId,
    other_org: OrgId,
    _dir: tempfile::TempDir,
}

/// What the router answered.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of `name="field" value="…"` in the page (the first such input).
    fn input_value(&self, field: &str) -> String {
        let marker = format!("name=\"{field}\" value=\"");
        let start = self.body.find(&marker).map(|i| i + marker.len());
        start
            .and_then(|s| {
                self.body[s..]
                    .find('"')
                    .map(|e| self.body[s..s + e].to_string())
            })
            .unwrap_or_default()
    }
}

/// A browser's cookies, by name.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn take(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(header::SET_COOKIE) {
            let Some((pair, attrs)) = v
                .to_str()
                .ok()
                .map(|s| s.split_once(';').unwrap_or((s, "")))
            else {
                continue;
            };
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if attrs.contains("Max-Age=0") || value.is_empty() {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_string(), value.to_string());
            }
        }
    }
}

impl App {
    async fn new() -> App {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/herald.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let org = store.default_org().await.unwrap();
        let other_org = store.create_organisation("other").await.unwrap();
        let router = herald::http::router(AppState {
            store: store.clone(),
            metrics: None,
            context: BuildContext {
                public_url: None,
                secret_key: Some(SECRET_KEY.into()),
                outbound: Default::default(),
            },
            settings: Default::default(),
            webhook_limiter: Default::default(),
        });
        App {
            router,
            store,
            org,
            other_org,
            _dir: dir,
        }
    }

    async fn user(&self, org: OrgId, email: &str, role: Role) {
        let hash = credentials::hash_password(PASSWORD).unwrap();
        self.store
            .create_user(org, email, &hash, role)
            .await
            .unwrap();
    }

    async fn send(&self, jar: &mut Jar, method: Method, path: &str, form: &[(&str, &str)]) -> Page {
        let mut req = Request::builder().method(method.clone()).uri(path);
        if !jar.0.is_empty() {
            req = req.header(header::COOKIE, jar.header());
        }
        let req = if method == Method::POST {
            req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        } else {
            req.body(Body::empty())
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        jar.take(&headers);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, jar: &mut Jar, path: &str) -> Page {
        self.send(jar, Method::GET, path, &[]).await
    }

    async fn post(&self, jar: &mut Jar, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(jar, Method::POST, path, form).await
    }

    /// Signs in through the sign-in form; returns the jar and the session's CSRF token.
    async fn sign_in(&self, email: &str) -> (Jar, String) {
        let mut jar = Jar::default();
        let form = self.get(&mut jar, "/login").await;
        let token = form.input_value("_csrf");
        let done = self
            .post(
                &mut jar,
                "/login",
                &[
                    ("_csrf", &token),
                    ("email", email),
                    ("password", PASSWORD),
                    ("next", "/campaigns"),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location(), "/campaigns");
        let page = self.get(&mut jar, "/campaigns").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = page.input_value("_csrf");
        assert!(!csrf.is_empty());
        (jar, csrf)
    }

    /// A JSON API call with an API key of `org` (to set up another organisation's data).
    async fn api_as(
        &self,
        org: OrgId,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (key, prefix, digest) = credentials::new_api_key();
        self.store
            .create_api_key(org, "setup", Role::Owner, &prefix, &digest, "test")
            .await
            .unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }
}

fn assert_security_headers(page: &Page, what: &str) {
    let csp = page.header("content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(page.header("x-content-type-options"), "nosniff", "{what}");
    assert!(!page.header("referrer-policy").is_empty(), "{what}");
}

#[tokio::test]
async fn without_a_session_every_page_leads_to_sign_in_and_carries_the_headers() {
    let app = App::new().await;
    let mut jar = Jar::default();
    let home = app.get(&mut jar, "/").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.location(), "/login");
    assert_security_headers(&home, "/");
    let page = app.get(&mut jar, "/campaigns/cmp_1?status=sending").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location(),
        "/login?next=%2Fcampaigns%2Fcmp_1%3Fstatus%3Dsending"
    );
    let login = app.get(&mut jar, "/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert_security_headers(&login, "/login");
    assert!(login.body.contains("<main id=\"main\""), "a main landmark");
    assert!(!login.body.contains("<script>"), "no inline script");
    assert!(!login.body.contains("style="), "no inline style");
    let css = app.get(&mut jar, "/assets/app.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").starts_with("text/css"));
    let missing = app.get(&mut jar, "/no/such/page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_security_headers(&missing, "a missing page");
}

#[tokio::test]
async fn sign_in_then_every_page_renders_and_sign_out_ends_the_session() {
    let app = App::new().await;
    app.user(app.org, "ada@example.org", Role::Owner).await;
    let mut jar = Jar::default();
    let form = app.get(&mut jar, "/login").await;
    let token = form.input_value("_csrf");
    let wrong = app
        .post(
            &mut jar,
            "/login",
            &[
                ("_csrf", &token),
                ("email", "ada@example.org"),
                ("password", "wrong password!"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("email or password is wrong"),
        "{}",
        wrong.body
    );

    let (mut jar, csrf) = app.sign_in("ada@example.org").await;
    for (path, heading) in [
        ("/campaigns", "Campaigns"),
        ("/campaigns/new", "New campaign"),
        ("/contacts", "Contacts"),
        ("/lists", "Lists"),
        ("/suppressions", "Suppression list"),
        ("/channels", "Channels"),
        ("/webhooks", "Webhooks"),
        ("/api-keys", "API keys"),
        ("/users", "Users and roles"),
        ("/system", "System"),
    ] {
        let page = app.get(&mut jar, path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.contains(&format!("<h1>{heading}</h1>")), "{path}");
        assert_security_headers(&page, path);
        assert_eq!(page.header("cache-control"), "no-store", "{path}");
    }
    let home = app.get(&mut jar, "/").await;
    assert_eq!(home.location(), "/campaigns");

    let out = app.post(&mut jar, "/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login");
    let after = app.get(&mut jar, "/campaigns").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "the session is gone");
}

#[tokio::test]
async fn forms_post_redirect_get_and_refuse_a_missing_csrf_token() {
    let app = App::new().await;
    app.user(app.org, "ada@example.org", Role::Editor).await;
    let (mut jar, csrf) = app.sign_in("ada@example.org").await;

    let forged = app.post(&mut jar, "/lists", &[("name", "forged")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let wrong = app
        .post(&mut jar, "/lists", &[("_csrf", "nope"), ("name", "forged")])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(!app.get(&mut jar, "/lists").await.body.contains("forged"));

    let created = app
        .post(
            &mut jar,
            "/lists",
            &[("_csrf", &csrf), ("name", "customers")],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert!(
        created.location().starts_with("/lists/lst_"),
        "{}",
        created.location()
    );
    let page = app.get(&mut jar, created.location()).await;
    assert!(
        page.body.contains("List “customers” created."),
        "the flash message"
    );
    let again = app.get(&mut jar, created.location()).await;
    assert!(
        !again.body.contains("created."),
        "a flash message shows once"
    );

    // A field the API refuses is named next to its input.
    let empty = app
        .post(&mut jar, "/lists", &[("_csrf", &csrf), ("name", "  ")])
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        empty.body.contains("id=\"list-name-error\""),
        "{}",
        empty.body
    );
    assert!(empty.body.contains("aria-invalid=\"true\""));

    // An editor may not manage channels: the API's 403 is the page's answer.
    let channel = app
        .post(
            &mut jar,
            "/channels",
            &[("_csrf", &csrf), ("name", "x"), ("kind", "sandbox")],
        )
        .await;
    assert_eq!(channel.status, StatusCode::FORBIDDEN, "{}", channel.body);
}

#[tokio::test]
async fn the_smtp_form_sends_a_password_in_clear_only_when_ticked() {
    let app = App::new().await;
    app.user(app.org, "root@example.org", Role::Admin).await;
    let (mut jar, csrf) = app.sign_in("root@example.org").await;
    let page = app.get(&mut jar, "/channels").await;
    assert!(
        page.body
            .contains("type=\"checkbox\" name=\"smtp.allow_plaintext_auth\""),
        "the SMTP fieldset offers the checkbox"
    );
    let form = |name: &'static str, tick: bool| {
        let mut f = vec![
            ("name", name),
            ("kind", "smtp"),
            ("smtp.host", "relay.example.org"),
            ("smtp.port", "25"),
            ("smtp.tls", "none"),
            ("smtp.from", "news@example.org"),
            ("smtp.username", "news"),
            ("smtp.password", "hunter2"),
        ];
        if tick {
            f.push(("smtp.allow_plaintext_auth", "true"));
        }
        f
    };
    let mut refused = form("clear", false);
    refused.push(("_csrf", &csrf));
    let page = app.post(&mut jar, "/channels", &refused).await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.body
    );
    assert!(
        page.body.contains("id=\"ch-smtp-tls-error\""),
        "{}",
        page.body
    );
    let mut allowed = form("clear", true);
    allowed.push(("_csrf", &csrf));
    let page = app.post(&mut jar, "/channels", &allowed).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

#[tokio::test]
async fn a_campaign_is_created_confirmed_and_acted_on_without_javascript() {
    let app = App::new().await;
    app.user(app.org, "ada@example.org", Role::Editor).await;
    let (mut jar, csrf) = app.sign_in("ada@example.org").await;
    let list = app
        .post(
            &mut jar,
            "/lists",
            &[("_csrf", &csrf), ("name", "customers")],
        )
        .await;
    let list_id = list.location().trim_start_matches("/lists/").to_string();
    let editor = app.get(&mut jar, "/campaigns/new").await;
    let channel_id = {
        let marker = "<option value=\"chn_";
        let at = editor
            .body
            .find(marker)
            .expect("the default sandbox channel")
            + "<option value=\"".len();
        editor.body[at..].split('"').next().unwrap().to_string()
    };

    let bad = app
        .post(
            &mut jar,
            "/campaigns",
            &[
                ("_csrf", &csrf),
                ("name", "Hello"),
                ("list_id", &list_id),
                ("channel_id", &channel_id),
                ("body", "Hi {{ name }"),
                ("when", "draft"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains("id=\"body-error\""), "{}", bad.body);
    assert!(
        bad.body.contains("Hi {{ name }"),
        "the form keeps what was typed"
    );

    let preview = app
        .post(
            &mut jar,
            "/campaigns/new/preview",
            &[
                ("_csrf", &csrf),
                ("list_id", &list_id),
                ("channel_id", &channel_id),
                ("body", "Hi {{ name }}!"),
            ],
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK);
    assert!(
        preview.body.contains("Hi NAME!"),
        "the preview with placeholders"
    );

    let created = app
        .post(
            &mut jar,
            "/campaigns",
            &[
                ("_csrf", &csrf),
                ("_idem", "form-1"),
                ("name", "Hello"),
                ("list_id", &list_id),
                ("channel_id", &channel_id),
                ("body", "Hi {{ name }}!"),
                ("when", "draft"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let url = created.location().to_string();
    assert!(url.starts_with("/campaigns/cmp_"), "{url}");
    let page = app.get(&mut jar, &url).await;
    assert!(page.body.contains("is saved as a draft"), "{}", page.body);
    assert!(
        page.body.contains("Created by ada@example.org"),
        "the audit trail in words"
    );

    let confirm = app.get(&mut jar, &format!("{url}/cancel")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm.body.contains(&format!("action=\"{url}/cancel\"")),
        "{}",
        confirm.body
    );
    let cancelled = app
        .post(
            &mut jar,
            &format!("{url}/cancel"),
            &[("_csrf", &csrf), ("reason", "wrong list")],
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    let page = app.get(&mut jar, &url).await;
    assert!(page.body.contains("Campaign cancelled."));
    assert!(
        page.body
            .contains("Cancelled by ada@example.org</strong>: wrong list"),
        "{}",
        page.body
    );
    let refused = app
        .post(&mut jar, &format!("{url}/pause"), &[("_csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert!(app.get(&mut jar, &url).await.body.contains("Pause refused"));
}

#[tokio::test]
async fn another_organisations_data_never_shows() {
    let app = App::new().await;
    app.user(app.org, "ada@example.org", Role::Owner).await;
    let list = app
        .api_as(
            app.other_org,
            Method::POST,
            "/api/v1/lists",
            serde_json::json!({"name": "their-list"}),
        )
        .await;
    let channel = app
        .api_as(
            app.other_org,
            Method::POST,
            "/api/v1/channels",
            serde_json::json!({"name": "their-channel", "kind": "sandbox"}),
        )
        .await;
    let campaign = app
        .api_as(
            app.other_org,
            Method::POST,
            "/api/v1/campaigns",
            serde_json::json!({
                "name": "their-campaign",
                "list_id": list["id"],
                "channel_id": channel["id"],
                "body": "Hi",
            }),
        )
        .await;
    let theirs = campaign["id"].as_str().unwrap().to_string();

    let (mut jar, csrf) = app.sign_in("ada@example.org").await;
    for path in [
        "/campaigns",
        "/campaigns/new",
        "/lists",
        "/channels",
        "/contacts",
    ] {
        let page = app.get(&mut jar, path).await;
        assert!(
            !page.body.contains("their-"),
            "{path} shows the other organisation's data"
        );
    }
    let detail = app.get(&mut jar, &format!("/campaigns/{theirs}")).await;
    assert_eq!(detail.status, StatusCode::NOT_FOUND);
    assert!(!detail.body.contains("their-campaign"));
    let act = app
        .post(
            &mut jar,
            &format!("/campaigns/{theirs}/cancel"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(act.status, StatusCode::NOT_FOUND);
    let list_page = app
        .get(
            &mut jar,
            &format!("/lists/{}", list["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(list_page.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_database_that_does_not_answer_gives_a_clear_page() {
    let app = App::new().await;
    app.user(app.org, "ada@example.org", Role::Owner).await;
    let (mut jar, _) = app.sign_in("ada@example.org").await;
    app.store.close().await;
    let page = app.get(&mut jar, "/campaigns").await;
    assert!(page.status.is_server_error(), "{}", page.status);
    assert!(
        page.body
            .contains("Herald cannot tell who you are right now"),
        "{}",
        page.body
    );
    assert_security_headers(&page, "an error page");
}

// A provider outage as the dashboard and the API show it: the channel "Unavailable" with
// since when and why, and the campaign the engine paused for it with the reason and the
// promise that it resumes by itself (the engine's steps are those of `Store`, as the
// engine takes them; tests/it/outage.rs runs the engine itself on both stores).
#[tokio::test]
async fn an_outage_shows_on_the_channels_and_campaign_pages() {
    let app = App::new().await;
    app.user(app.org, "ada@example.org", Role::Owner).await;
    let (mut jar, _) = app.sign_in("ada@example.org").await;
    let store = &app.store;
    let list = store.ensure_list(app.org, "people").await.unwrap();
    store.seed_contacts(app.org, list, 3).await.unwrap();
    let channel = store
        .create_channel(app.org, "sms-us", "sandbox", &serde_json::json!({}))
        .await
        .unwrap();
    let campaign = store
        .create_campaign(
            &herald::store::NewCampaign {
                org_id: app.org,
                name: "Spring".into(),
                channel_id: channel,
                list_id: list,
                body: "Hi".into(),
                scheduled_at: None,
                whatsapp_template: None,
                email: None,
                send_window: None,
            },
            "test",
        )
        .await
        .unwrap();
    let now = herald::clock::now_ms();
    store
        .start_campaign(campaign, now, "test", None)
        .await
        .unwrap();

    let page = app.get(&mut jar, "/channels").await;
    assert!(page.body.contains(">Available<"), "{}", page.body);
    assert!(!page.body.contains(">Unavailable<"), "{}", page.body);

    assert!(
        store
            .mark_channel_unavailable(channel, now, "connection refused")
            .await
            .unwrap()
    );
    let outage = store.channel_outage(channel).await.unwrap().unwrap();
    let reason = format!("paused by the engine: {}", outage.describe());
    store
        .pause_for_outage(channel, None, now, "instance test", &reason)
        .await
        .unwrap();

    let page = app.get(&mut jar, "/channels").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(">Unavailable<"), "{}", page.body);
    assert!(page.body.contains("connection refused"), "{}", page.body);
    let page = app.get(&mut jar, &format!("/campaigns/{campaign}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains("<div id=\"paused-banner\" class=\"alert warn\" role=\"status\">"),
        "the banner is hidden: {}",
        page.body
    );
    let shown = page
        .body
        .split("<p id=\"paused-reason\">")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_default();
    assert!(
        shown.starts_with("paused by the engine: channel `sms-us` unreachable since")
            && shown.ends_with("connection refused"),
        "{shown}"
    );
    assert!(
        page.body
            .contains("<p class=\"small\" id=\"paused-outage\">"),
        "the outage note is hidden: {}",
        page.body
    );

    let api = app
        .api_as(
            app.org,
            Method::GET,
            &format!("/api/v1/channels/{channel}"),
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(api["availability"], "unavailable", "{api}");
    assert_eq!(api["unavailable_reason"], "connection refused", "{api}");
    assert!(api["unavailable_since"].is_string(), "{api}");
    let api = app
        .api_as(
            app.org,
            Method::GET,
            &format!("/api/v1/campaigns/{campaign}"),
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(api["paused_reason"], reason.as_str(), "{api}");
}

#[tokio::test]
async fn failures_read_as_reasons_and_suppressed_contacts_show_as_suppressed() {
    use herald::domain::MessageStatus;
    use herald::store::{Outcome, OutcomeKind, Receipt};
    let app = App::new().await;
    app.user(app.org, "ada@example.org", Role::Editor).await;
    let (mut jar, _csrf) = app.sign_in("ada@example.org").await;
    let channel = app
        .store
        .channel_by_name(app.org, "sandbox")
        .await
        .unwrap()
        .id;
    let list = app.store.ensure_list(app.org, "three").await.unwrap();
    app.store.seed_contacts(app.org, list, 3).await.unwrap();
    let created = app
        .api_as(
            app.org,
            Method::POST,
            "/api/v1/campaigns",
            serde_json::json!({"name": "Three", "channel_id": format!("{channel}"), "list_id": format!("{list}"), "body": "Hi"}),
        )
        .await;
    let cid = created["id"].as_str().unwrap().to_string();
    let id: i64 = cid[4..].parse().unwrap();
    app.api_as(
        app.org,
        Method::POST,
        &format!("/api/v1/campaigns/{cid}/start"),
        serde_json::json!({}),
    )
    .await;
    let t = herald::clock::now_ms();
    let m = app
        .store
        .claim(CampaignId(id), "A", t, t + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(m.len(), 3);
    let outcome = |i: usize, kind: OutcomeKind| Outcome {
        message_id: m[i].id,
        campaign_id: CampaignId(id),
        attempt: None,
        kind,
    };
    app.store
        .record_outcomes(
            "A",
            t + 1,
            &[
                outcome(
                    0,
                    OutcomeKind::Retry {
                        error: "sandbox: simulated transient failure (503)".into(),
                        next_attempt_at: t + 2,
                    },
                ),
                outcome(
                    1,
                    OutcomeKind::Failed {
                        error: "twilio 30005: Unknown destination handset".into(),
                    },
                ),
                outcome(
                    2,
                    OutcomeKind::Failed {
                        error: "twilio 30005: Unknown destination handset".into(),
                    },
                ),
            ],
        )
        .await
        .unwrap();
    let again = app
        .store
        .claim(CampaignId(id), "A", t + 3, t + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    app.store
        .record_outcomes(
            "A",
            t + 4,
            &[outcome(
                0,
                OutcomeKind::Sent {
                    provider_id: "SB0".into(),
                },
            )],
        )
        .await
        .unwrap();
    app.store
        .apply_receipts(
            &[Receipt {
                channel_id: channel,
                provider_id: "SB0".into(),
                status: MessageStatus::Delivered,
                error: None,
            }],
            t + 5,
        )
        .await
        .unwrap();

    let page = app.get(&mut jar, &format!("/campaigns/{cid}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(body.contains("Why messages failed"), "{body}");
    assert!(
        body.contains("<tr data-code=\"twilio.30005\">"),
        "the failure group: {body}"
    );
    // The table cell reads as a sentence; the provider's words wait behind a disclosure.
    assert!(
        body.contains("<summary class=\"error-text\">Unknown or inactive number</summary>"),
        "{body}"
    );
    assert!(body.contains("twilio 30005: Unknown destination handset"));
    assert!(
        !body.contains("simulated transient failure"),
        "a delivered message shows no earlier error: {body}"
    );

    // Contacts: a suppressed contact is not shown as subscribed.
    app.store
        .suppress(
            app.org,
            m[1].address.as_str(),
            "replied STOP",
            &herald::store::OptSource::API,
        )
        .await
        .unwrap();
    let page = app.get(&mut jar, "/contacts").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let row = |address: &str| -> String {
        let at = page.body.find(&format!(">{address}</td>")).unwrap();
        let end = page.body[at..].find("</tr>").unwrap();
        page.body[at..at + end].to_string()
    };
    let stopped = row(m[1].address.as_str());
    assert!(stopped.contains(">Suppressed</span>"), "{stopped}");
    assert!(stopped.contains("replied STOP"), "{stopped}");
    assert!(!stopped.contains("Subscribed"), "{stopped}");
    assert!(row(m[0].address.as_str()).contains(">Subscribed</span>"));
}

/// The channels page shows a Twilio channel's webhook URLs, to paste into Twilio's console;
/// without a public URL it says that webhooks are refused and shows a placeholder.
#[tokio::test]
async fn the_channels_page_shows_webhook_urls() {
    let app = App::new().await;
    app.user(app.org, "root@example.org", Role::Admin).await;
    let (mut jar, csrf) = app.sign_in("root@example.org").await;
    let form = [
        ("name", "sms"),
        ("kind", "twilio"),
        ("twilio.account_sid", "AC0123456789abcdef0123456789abcdef"),
        ("twilio.from", "+15017122661"),
        ("twilio.auth_token", "not-a-real-token"),
        ("_csrf", csrf.as_str()),
    ];
    let page = app.post(&mut jar, "/channels", &form).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = app.get(&mut jar, "/channels").await;
    // The template escapes `/` as `&#x2f;`, which the browser shows (and copies) as `/`.
    let body = page.body.replace("&#x2f;", "/");
    let id = app.store.channel_by_name(app.org, "sms").await.unwrap().id;
    for url in [
        format!("https://YOUR-PUBLIC-URL/webhooks/twilio/{id}/status"),
        format!("https://YOUR-PUBLIC-URL/webhooks/twilio/{id}/inbound"),
    ] {
        assert!(
            body.contains(&format!("<code class=\"copyable\">{url}</code>")),
            "{url} is not on the page:\n{body}"
        );
    }
    assert!(page.body.contains("webhooks are refused"), "{}", page.body);
}

/// The webhooks page: a refused destination is named next to the URL, a created endpoint's
/// secret is shown once, and the endpoint page sends a test event, rotates, disables,
/// enables, replays and deletes, each through the API with its rules and roles.
#[tokio::test]
async fn the_webhooks_page_creates_endpoints_and_acts_on_them() {
    let app = App::new().await;
    app.user(app.org, "root@example.org", Role::Admin).await;
    app.user(app.org, "eve@example.org", Role::Viewer).await;
    let (mut jar, csrf) = app.sign_in("root@example.org").await;

    // The default outbound guard refuses loopback: the error is next to the URL.
    let refused = app
        .post(
            &mut jar,
            "/webhooks",
            &[
                ("_csrf", &csrf),
                ("url", "http://127.0.0.1:9/hook"),
                ("events", "campaign.completed"),
            ],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("id=\"wh-url-error\""),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("outbound destination refused"));
    assert!(
        refused
            .body
            .contains("value=\"campaign.completed\" checked"),
        "the chosen events are kept"
    );

    let created = app
        .post(
            &mut jar,
            "/webhooks",
            &[
                ("_csrf", &csrf),
                ("url", "https://203.0.113.10/herald"),
                ("description", "ops"),
                ("events", "campaign.completed"),
                ("events", "message.failed"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(created.body.contains("id=\"secret-value\""));
    assert!(created.body.contains("whsec_"), "the secret is shown once");
    let endpoints = app
        .store
        .webhook_endpoints_page(app.org, WebhookEndpointId(0), 10)
        .await
        .unwrap();
    assert_eq!(endpoints.len(), 1);
    let id = format!("{}", endpoints[0].id);
    assert_eq!(
        endpoints[0].events,
        vec![
            herald::events::EventType::CampaignCompleted,
            herald::events::EventType::MessageFailed
        ]
    );

    let list = app.get(&mut jar, "/webhooks").await;
    assert!(list.body.contains(&format!("href=\"/webhooks/{id}\"")));
    assert!(!list.body.contains("whsec_"), "never shown again");
    let detail_path = format!("/webhooks/{id}");
    let detail = app.get(&mut jar, &detail_path).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert!(detail.body.contains("Delivery log") && !detail.body.contains("whsec_"));

    let sent = app
        .post(
            &mut jar,
            &format!("{detail_path}/test"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    assert_eq!(sent.location(), detail_path);
    let detail = app.get(&mut jar, &detail_path).await;
    assert!(
        detail.body.contains("Test event ntf_"),
        "the flash names the event"
    );
    assert!(
        detail.body.contains("webhook.test"),
        "the delivery is in the log"
    );

    let rotated = app
        .post(
            &mut jar,
            &format!("{detail_path}/rotate"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert!(rotated.body.contains("Signing secret rotated") && rotated.body.contains("whsec_"));
    let detail = app.get(&mut jar, &detail_path).await;
    assert!(detail.body.contains("the previous secret also signs until"));

    app.post(
        &mut jar,
        &format!("{detail_path}/disable"),
        &[("_csrf", &csrf)],
    )
    .await;
    let detail = app.get(&mut jar, &detail_path).await;
    assert!(
        detail.body.contains("Disabled")
            && detail.body.contains("disabled by user:root@example.org")
    );
    let test_disabled = app
        .post(
            &mut jar,
            &format!("{detail_path}/test"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(test_disabled.location(), detail_path);
    let detail = app.get(&mut jar, &detail_path).await;
    assert!(
        detail.body.contains("Sending the test event failed"),
        "{}",
        detail.body
    );
    app.post(
        &mut jar,
        &format!("{detail_path}/enable"),
        &[("_csrf", &csrf)],
    )
    .await;
    let replay = app
        .post(
            &mut jar,
            &format!("{detail_path}/replay"),
            &[("_csrf", &csrf), ("failed_since", "2000-01-01T00:00:00Z")],
        )
        .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER);
    let detail = app.get(&mut jar, &detail_path).await;
    assert!(
        detail.body.contains("0 deliveries set back to pending"),
        "{}",
        detail.body
    );

    // A viewer sees the endpoint and its log, without the admin's actions.
    let (mut viewer, viewer_csrf) = app.sign_in("eve@example.org").await;
    let seen = app.get(&mut viewer, &detail_path).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.body.contains("webhook.test") && !seen.body.contains("Send a test event"));
    let denied = app
        .post(
            &mut viewer,
            &format!("{detail_path}/delete"),
            &[("_csrf", &viewer_csrf)],
        )
        .await;
    assert_eq!(denied.location(), detail_path);
    assert_eq!(
        app.store
            .webhook_endpoints_page(app.org, WebhookEndpointId(0), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Another organisation's endpoint is not found.
    let key = herald::secrets::SecretKey::parse(SECRET_KEY).unwrap();
    let theirs = app
        .store
        .create_webhook_endpoint(
            app.other_org,
            "https://203.0.113.11/theirs",
            "",
            &[herald::events::EventType::CampaignCompleted],
            &key,
            "whsec_dGhlaXJz",
        )
        .await
        .unwrap();
    let other = app.get(&mut jar, &format!("/webhooks/{}", theirs.id)).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    let deleted = app
        .post(
            &mut jar,
            &format!("{detail_path}/delete"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(deleted.location(), "/webhooks");
    assert!(
        app.store
            .webhook_endpoints_page(app.org, WebhookEndpointId(0), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_system_page_shows_alerts_and_admins_change_their_settings() {
    let app = App::new().await;
    app.user(app.org, "root@example.org", Role::Admin).await;
    app.user(app.org, "eve@example.org", Role::Viewer).await;
    let quick = app
        .api_as(
            app.org,
            Method::POST,
            "/api/v1/channels",
            serde_json::json!({"name": "quick", "kind": "sandbox"}),
        )
        .await;
    let quick_id = quick["id"].as_str().unwrap().to_string();
    let theirs = app
        .api_as(
            app.other_org,
            Method::POST,
            "/api/v1/channels",
            serde_json::json!({"name": "their-channel", "kind": "sandbox"}),
        )
        .await;
    let (mut jar, csrf) = app.sign_in("root@example.org").await;

    // Nothing set: the page says alerts reach no one; there is no test button yet.
    let page = app.get(&mut jar, "/system").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("alerts reach no one"), "{}", page.body);
    assert!(
        page.body.contains("(Herald&#x27;s default)") || page.body.contains("(Herald's default)")
    );
    assert!(page.body.contains("Change alert settings"));
    assert!(!page.body.contains("id=\"send-test-alert\""));
    assert!(
        page.body.contains("GET /api/v1/alerts/settings"),
        "where it comes from"
    );
    // The API refuses a test without recipients; the page says why.
    let refused = app
        .post(&mut jar, "/system/alerts/test", &[("_csrf", &csrf)])
        .await;
    assert_eq!(refused.location(), "/system");
    let page = app.get(&mut jar, "/system").await;
    assert!(
        page.body.contains("Sending the test alert failed")
            && page.body.contains("no alert recipients"),
        "{}",
        page.body
    );

    // Each refused field is named next to itself, and what was typed is kept.
    let their_id = theirs["id"].as_str().unwrap().to_string();
    for (recipients, channel, threshold, field, words) in [
        (
            "ops@example.org\n\nnot-an-address",
            &quick_id,
            "",
            "al-recipients-error",
            "Line 3: &quot;not-an-address&quot; is not",
        ),
        (
            "ops@example.org",
            &quick_id,
            "many",
            "al-threshold-error",
            "`many` is not a whole number",
        ),
        (
            "ops@example.org",
            &quick_id,
            "-1",
            "al-threshold-error",
            "must be 0 (off)",
        ),
        (
            "ops@example.org",
            &their_id,
            "",
            "al-channel_id-error",
            "there is no channel",
        ),
    ] {
        let pairs = [
            ("_csrf", csrf.as_str()),
            ("recipients", recipients),
            ("channel_id", channel.as_str()),
            ("fallback_channel_id", ""),
            ("in_doubt_threshold", threshold),
        ];
        let back = app.post(&mut jar, "/system/alerts", &pairs).await;
        assert_eq!(
            back.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            back.body
        );
        assert!(
            back.body.contains(&format!("id=\"{field}\"")),
            "{field}: {}",
            back.body
        );
        assert!(back.body.contains(words), "{words}: {}", back.body);
        assert!(back.body.contains("data-error-summary"));
        assert!(
            back.body.contains("ops@example.org"),
            "the recipients are kept"
        );
        assert!(
            back.body.contains("<details class=\"settings\" open>"),
            "the form is open"
        );
    }
    assert_eq!(
        app.store.alert_settings(app.org).await.unwrap(),
        Default::default(),
        "nothing refused was saved"
    );

    // Saved: the whole document, as the form has it.
    let saved = app
        .post(
            &mut jar,
            "/system/alerts",
            &[
                ("_csrf", &csrf),
                ("recipients", "ops@example.org\r\n\r\n +1 415 555 0100 \r\n"),
                ("channel_id", &quick_id),
                ("fallback_channel_id", ""),
                ("in_doubt_threshold", "0"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(saved.location(), "/system");
    let settings = app.store.alert_settings(app.org).await.unwrap();
    assert_eq!(settings.recipients, vec!["ops@example.org", "+14155550100"]);
    assert_eq!(
        settings.channel_id.map(|id| format!("{id}")),
        Some(quick_id.clone())
    );
    assert_eq!(settings.fallback_channel_id, None);
    assert_eq!(settings.in_doubt_threshold, Some(0));
    let page = app.get(&mut jar, "/system").await;
    assert!(
        page.body.contains("Alert settings saved: 2 recipients"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("alerts reach no one"));
    assert!(
        page.body
            .contains("<dt>In-doubt threshold</dt>\n    <dd>off</dd>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<a href=\"/channels\">quick</a>"));
    assert!(page.body.contains("+14155550100"));
    assert!(page.body.contains("id=\"send-test-alert\""));
    assert!(
        page.body
            .contains(&format!("<option value=\"{quick_id}\" selected>")),
        "the form shows the settings in force"
    );

    // A test alert per recipient; one sent, one that could not be delivered.
    let sent = app
        .post(
            &mut jar,
            "/system/alerts/test",
            &[("_csrf", &csrf), ("_idem", "test-alert-form-1")],
        )
        .await;
    assert_eq!(sent.location(), "/system");
    let page = app.get(&mut jar, "/system").await;
    assert!(page.body.contains("2 test alerts queued"), "{}", page.body);
    let again = app
        .post(
            &mut jar,
            "/system/alerts/test",
            &[("_csrf", &csrf), ("_idem", "test-alert-form-1")],
        )
        .await;
    assert_eq!(again.location(), "/system");
    assert_eq!(
        app.store
            .list_alerts(app.org, None, None, 10)
            .await
            .unwrap()
            .len(),
        2,
        "the same form sent twice queues once"
    );
    let now = herald::clock::now_ms();
    let claimed = app
        .store
        .claim_alerts("pages-test", now, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let channel = quick_id.trim_start_matches("chn_").parse::<i64>().unwrap();
    for a in &claimed {
        let outcome = if a.address.starts_with('+') {
            herald::store::alerts::AlertOutcome::Undeliverable {
                channel_id: None,
                error: "no alert channel can carry it: the provider refused +14155550100"
                    .to_string(),
            }
        } else {
            herald::store::alerts::AlertOutcome::Sent {
                channel_id: ChannelId(channel),
                provider_id: "sbx-1".to_string(),
            }
        };
        assert!(
            app.store
                .record_alert_attempt(a.id, "pages-test", &outcome, now)
                .await
                .unwrap()
        );
    }
    let page = app.get(&mut jar, "/system").await;
    assert!(page.body.contains("alert.test"), "{}", page.body);
    assert!(page.body.contains("<span class=\"badge completed\">Sent</span> <span class=\"small muted\">via quick</span>"), "{}", page.body);
    assert!(
        page.body.contains("<span class=\"badge cancelled\">Undeliverable</span> <span class=\"small error-text wrap-anywhere\">no alert channel can carry it: the provider refused +14155550100</span>"),
        "{}",
        page.body
    );

    // Empty threshold: Herald's default again.
    app.post(
        &mut jar,
        "/system/alerts",
        &[
            ("_csrf", &csrf),
            ("recipients", "ops@example.org"),
            ("channel_id", &quick_id),
            ("fallback_channel_id", &quick_id),
            ("in_doubt_threshold", ""),
        ],
    )
    .await;
    let settings = app.store.alert_settings(app.org).await.unwrap();
    assert_eq!(settings.in_doubt_threshold, None);
    assert_eq!(settings.recipients, vec!["ops@example.org"]);
    let page = app.get(&mut jar, "/system/alerts").await;
    assert!(
        page.body
            .contains("100 messages in doubt in one sending campaign")
    );
    assert!(
        page.body.contains("<details class=\"settings\" open>"),
        "/system/alerts opens the form"
    );

    // A viewer reads the settings and the log, without the form or the button; the API
    // refuses a change all the same.
    let (mut viewer, viewer_csrf) = app.sign_in("eve@example.org").await;
    let seen = app.get(&mut viewer, "/system").await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.body.contains("ops@example.org") && seen.body.contains("Undeliverable"));
    assert!(!seen.body.contains("Change alert settings") && !seen.body.contains("send-test-alert"));
    let denied = app
        .post(
            &mut viewer,
            "/system/alerts",
            &[("_csrf", &viewer_csrf), ("recipients", "")],
        )
        .await;
    assert_eq!(denied.location(), "/system", "{}", denied.body);
    let seen = app.get(&mut viewer, "/system").await;
    assert!(
        seen.body.contains("Saving the alert settings failed"),
        "{}",
        seen.body
    );
    assert_eq!(
        app.store.alert_settings(app.org).await.unwrap().recipients,
        vec!["ops@example.org"]
    );
    let denied = app
        .post(
            &mut viewer,
            "/system/alerts/test",
            &[("_csrf", &viewer_csrf)],
        )
        .await;
    assert_eq!(denied.location(), "/system");
    assert_eq!(
        app.store
            .list_alerts(app.org, None, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}
