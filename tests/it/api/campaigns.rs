//! Campaigns over the HTTP API: drafts, the state machine with its conflicts, a run to
//! completion by an in-process engine, messages and the audit trail, the live event
//! stream, template previews, and that nothing of another organisation is reachable.

use super::{Auth, Reply, TestApp, api_test};
use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use herald::address::Address;
use herald::config::Settings;
use herald::domain::Role;
use herald::engine::Engine;
use herald::ids::{CampaignId, OrgId};
use herald::store::{ContactInput, NewCampaign};
use serde_json::{Value, json};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;
use tower::ServiceExt;

// --------------------------------------------------------------------------------------
// Fixtures
// --------------------------------------------------------------------------------------

struct Fixture {
    editor: Auth,
    viewer: Auth,
    /// The default organisation's sandbox channel.
    channel: String,
    /// A list of three contacts with names and a `city`.
    list: String,
    /// Its contacts, in insertion order: Ada (Paris), Grace (Łódź), Alan (Oslo).
    contacts: Vec<String>,
}

fn contact(address: &str, name: Option<&str>, city: Option<&str>) -> ContactInput {
    let mut attributes = serde_json::Map::new();
    if let Some(c) = city {
        attributes.insert("city".into(), json!(c));
    }
    ContactInput {
        address: Address::parse(address).unwrap(),
        name: name.map(str::to_string),
        attributes,
        unsubscribed: None,
    }
}

async fn contact_id(app: &TestApp, org: OrgId, address: &str) -> String {
    let pool = app.db.raw().await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM contacts WHERE org_id = $1 AND address = $2")
        .bind(org)
        .bind(address)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    format!("con_{id}")
}

/// A list of `org` with the given contacts; returns its id and the contacts' ids.
async fn list_with(
    app: &TestApp,
    org: OrgId,
    name: &str,
    contacts: &[ContactInput],
) -> (String, Vec<String>) {
    let store = &app.db.store;
    let list = store.ensure_list(org, name).await.unwrap();
    store.upsert_contacts(org, list, contacts).await.unwrap();
    let mut ids = Vec::new();
    for c in contacts {
        ids.push(contact_id(app, org, c.address.as_str()).await);
    }
    (format!("{list}"), ids)
}

async fn fixture(app: &TestApp) -> Fixture {
    let store = &app.db.store;
    let channel = store.channel_by_name(app.org, "sandbox").await.unwrap().id;
    let (list, contacts) = list_with(
        app,
        app.org,
        "friends",
        &[
            contact("+15550000001", Some("Ada"), Some("Paris")),
            contact("+15550000002", Some("Grace"), Some("Łódź")),
            contact("+15550000003", Some("Alan"), Some("Oslo")),
        ],
    )
    .await;
    Fixture {
        editor: Auth::Key(app.key(app.org, Role::Editor).await),
        viewer: Auth::Key(app.key(app.org, Role::Viewer).await),
        channel: format!("{channel}"),
        list,
        contacts,
    }
}

#[track_caller]
fn field_error(reply: &Reply, field: &str, rule: &str) {
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.text);
    assert_eq!(reply.body["errors"][0]["rule"], rule, "{}", reply.text);
}

/// A well-formed time that has passed: 409 (the document allows the request), naming the
/// field and the rule.
#[track_caller]
fn not_in_future(reply: &Reply, field: &str) {
    reply.expect_problem(StatusCode::CONFLICT, "not-in-future");
    assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.text);
    assert_eq!(reply.body["errors"][0]["rule"], "future", "{}", reply.text);
}

#[track_caller]
fn conflict(reply: &Reply, detail_has: &str) {
    reply.expect_problem(StatusCode::CONFLICT, "conflict");
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(
        detail.contains(detail_has),
        "{detail:?} lacks {detail_has:?}"
    );
}

async fn create(app: &TestApp, f: &Fixture, name: &str, body: &str) -> String {
    let r = app
        .post(
            "/api/v1/campaigns",
            &f.editor,
            json!({"name": name, "channel_id": f.channel, "list_id": f.list, "body": body}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    r.body["id"].as_str().unwrap().to_string()
}

async fn act(app: &TestApp, auth: &Auth, id: &str, action: &str) -> Reply {
    app.call(
        Method::POST,
        &format!("/api/v1/campaigns/{id}/{action}"),
        auth,
        None,
    )
    .await
}

fn future(secs: i64) -> String {
    herald::clock::rfc3339(herald::clock::now_ms() + secs * 1000)
}

fn fast_settings() -> Settings {
    Settings {
        heartbeat_interval_ms: 100,
        instance_stale_after_ms: 1000,
        reconcile_interval_ms: 150,
        scheduler_interval_ms: 100,
        idle_poll_ms: 20,
        retry_base_ms: 10,
        retry_max_ms: 50,
        ..Settings::default()
    }
}

/// Polls the campaign over the API until it has `status`.
async fn wait_for(app: &TestApp, auth: &Auth, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = app.get(&format!("/api/v1/campaigns/{id}"), auth).await;
        r.expect(StatusCode::OK);
        if r.body["status"] == status {
            return r.body.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign {id} is not {status} within 60 s: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every item of a paginated collection, following `next_cursor`; asserts page sizes.
async fn walk(app: &TestApp, auth: &Auth, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    for pages in 1..100 {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let r = app.get(&url, auth).await;
        r.expect(StatusCode::OK);
        let page = r.body["items"].as_array().unwrap().clone();
        assert!(page.len() <= limit, "{}", r.text);
        items.extend(page.clone());
        match r.body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(
                    page.len(),
                    limit,
                    "a page before the last is full: {}",
                    r.text
                );
                cursor = Some(c.to_string());
            }
            None => return (items, pages),
        }
    }
    panic!("pagination of {path} did not end");
}

// --------------------------------------------------------------------------------------
// Server-Sent Events, read from the response body as a client would
// --------------------------------------------------------------------------------------

#[derive(Debug)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

struct SseStream {
    body: Body,
    buffer: String,
}

async fn open_events(
    app: &TestApp,
    id: &str,
    auth: &Auth,
    last_event_id: Option<&str>,
) -> (StatusCode, HeaderMap, SseStream) {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("/api/v1/campaigns/{id}/events"));
    if let Auth::Key(k) = auth {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    if let Some(l) = last_event_id {
        req = req.header("last-event-id", l);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (
        status,
        headers,
        SseStream {
            body: resp.into_body(),
            buffer: String::new(),
        },
    )
}

impl SseStream {
    /// The next event (keep-alive comments skipped), or None once the stream has ended.
    /// Fails the test when nothing comes within 15 s.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = None;
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                match event {
                    Some(event) => {
                        return Some(SseEvent {
                            event,
                            id,
                            data: serde_json::from_str(&data).unwrap(),
                        });
                    }
                    None => continue,
                }
            }
            let frame = tokio::time::timeout(
                Duration::from_secs(15),
                std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)),
            )
            .await
            .expect("no event within 15 s");
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(bytes) = frame.unwrap().into_data() {
                        self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
                    }
                }
            }
        }
    }

    /// Events up to and including the first of kind `until`.
    async fn until(&mut self, until: &str) -> Vec<SseEvent> {
        let mut out = Vec::new();
        loop {
            let e = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream ended before `{until}`: {out:?}"));
            let done = e.event == until;
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

// --------------------------------------------------------------------------------------
// Tests
// --------------------------------------------------------------------------------------

api_test!(create_edit_start_and_run_to_completion, |app| async move {
    let f = fixture(&app).await;
    let r = app
        .post(
            "/api/v1/campaigns",
            &f.editor,
            json!({"name": "  Spring  ", "channel_id": f.channel, "list_id": f.list, "body": "Hi {{ name }}"}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("cmp_"), "{}", r.text);
    assert_eq!(
        r.headers[header::LOCATION].to_str().unwrap(),
        format!("/api/v1/campaigns/{id}")
    );
    assert_eq!(r.body["name"], "Spring");
    assert_eq!(r.body["status"], "draft");
    assert_eq!(r.body["channel_id"], f.channel);
    assert_eq!(r.body["channel_name"], "sandbox");
    assert_eq!(r.body["list_id"], f.list);
    assert_eq!(r.body["list_name"], "friends");
    assert_eq!(r.body["total"], 0);
    assert_eq!(r.body["stuck"], Value::Null);
    assert_eq!(r.body["started_at"], Value::Null);

    // A viewer reads it; only an editor changes it.
    let got = app.get(&format!("/api/v1/campaigns/{id}"), &f.viewer).await;
    got.expect(StatusCode::OK);
    assert_eq!(got.body["body"], "Hi {{ name }}");
    app.call(
        Method::PATCH,
        &format!("/api/v1/campaigns/{id}"),
        &f.viewer,
        Some(json!({"name": "x"})),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    let patched = app
        .call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{id}"),
            &f.editor,
            Some(json!({"name": "Spring sale", "body": "Hi {{ name }} from {{ city }}"})),
        )
        .await;
    patched.expect(StatusCode::OK);
    assert_eq!(patched.body["name"], "Spring sale");
    assert_eq!(patched.body["body"], "Hi {{ name }} from {{ city }}");
    // The list's contacts have no `coupon`.
    let unknown = app
        .call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{id}"),
            &f.editor,
            Some(json!({"body": "Use {{ coupon }}"})),
        )
        .await;
    field_error(&unknown, "body", "unknown_variable");
    assert!(unknown.text.contains("coupon"), "{}", unknown.text);
    field_error(
        &app.call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{id}"),
            &f.editor,
            Some(json!({"list_id": "lst_999999"})),
        )
        .await,
        "list_id",
        "exists",
    );

    let store = app.db.store.clone();
    let (stop, rx) = watch::channel(false);
    let engine = tokio::spawn(Engine::new(store, fast_settings(), "test").run(rx));

    let started = act(&app, &f.editor, &id, "start").await;
    started.expect(StatusCode::OK);
    assert!(
        ["sending", "completed"].contains(&started.body["status"].as_str().unwrap()),
        "{}",
        started.text
    );
    assert_eq!(started.body["total"], 3);
    assert!(started.body["started_at"].is_string());

    let done = wait_for(&app, &f.viewer, &id, "completed").await;
    let _ = stop.send(true);
    engine.await.unwrap().unwrap();
    assert_eq!(done["counters"]["sent"], 3, "{done}");
    assert_eq!(done["counters"]["pending"], 0, "{done}");
    assert_eq!(done["progress"], 1.0);
    assert!(done["completed_at"].is_string());

    let stats = app
        .get(&format!("/api/v1/campaigns/{id}/stats"), &f.viewer)
        .await;
    stats.expect(StatusCode::OK);
    assert_eq!(stats.body["status"], "completed");
    assert_eq!(stats.body["total"], 3);
    assert_eq!(stats.body["counters"]["sent"], 3);
    assert_eq!(stats.body["progress"], 1.0);
    assert_eq!(stats.body["in_doubt"], 0);
    assert_eq!(stats.body["stuck"], Value::Null);
    assert!(
        stats.body["throughput_per_sec"].as_f64().unwrap() > 0.0,
        "{}",
        stats.text
    );
    assert!(stats.body["elapsed_ms"].as_i64().unwrap() >= 0);

    let messages = app
        .get(
            &format!("/api/v1/campaigns/{id}/messages?status=sent"),
            &f.viewer,
        )
        .await;
    messages.expect(StatusCode::OK);
    let items = messages.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for m in items {
        assert!(m["id"].as_str().unwrap().starts_with("msg_"), "{m}");
        assert_eq!(m["status"], "sent");
        assert_eq!(m["attempts"], 1);
        assert!(m["provider_id"].is_string(), "{m}");
        assert!(m["sent_at"].is_string(), "{m}");
        assert!(m["updated_at"].is_string(), "{m}");
    }

    // Started campaigns can be neither edited nor deleted.
    conflict(
        &app.call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{id}"),
            &f.editor,
            Some(json!({"name": "late"})),
        )
        .await,
        "only a draft",
    );
    // A WhatsApp template is a draft's setting too: a started campaign refuses it rather
    // than answering 200 and ignoring it (schemathesis ST201, 2026-12-06).
    conflict(
        &app.call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{id}"),
            &f.editor,
            Some(json!({"whatsapp_template": {"name": "order_update", "language": "en_US", "parameters": []}})),
        )
        .await,
        "only a draft",
    );
    conflict(
        &app.call(
            Method::DELETE,
            &format!("/api/v1/campaigns/{id}"),
            &f.editor,
            None,
        )
        .await,
        "draft",
    );
    conflict(
        &act(&app, &f.editor, &id, "start").await,
        "draft or scheduled",
    );

    // The audit trail: who did what, oldest first.
    let audit = app
        .get(&format!("/api/v1/campaigns/{id}/audit"), &f.viewer)
        .await;
    audit.expect(StatusCode::OK);
    let trail = audit.body["items"].as_array().unwrap();
    let moves: Vec<(Value, Value)> = trail
        .iter()
        .map(|e| (e["from"].clone(), e["to"].clone()))
        .collect();
    assert_eq!(moves[0], (Value::Null, json!("draft")), "{}", audit.text);
    assert_eq!(moves[1], (json!("draft"), json!("draft")), "{}", audit.text);
    assert_eq!(
        moves[2],
        (json!("draft"), json!("sending")),
        "{}",
        audit.text
    );
    assert_eq!(
        moves.last().unwrap().1,
        json!("completed"),
        "{}",
        audit.text
    );
    assert!(trail[0]["id"].as_str().unwrap().starts_with("evt_"));
    for e in &trail[..3] {
        assert_eq!(e["actor"], "api_key:test-editor", "{e}");
        assert!(e["at"].is_string());
    }
    assert!(trail[1]["reason"].as_str().unwrap().contains("name, body"));
});

api_test!(create_validates_every_field, |app| async move {
    let f = fixture(&app).await;
    let valid =
        json!({"name": "N", "channel_id": f.channel, "list_id": f.list, "body": "Hi {{ name }}"});
    let with = |k: &str, v: Value| {
        let mut b = valid.clone();
        b[k] = v;
        b
    };
    let post = |body: Value| {
        let app = &app;
        let auth = f.editor.clone();
        async move { app.post("/api/v1/campaigns", &auth, body).await }
    };

    field_error(
        &post(json!({"channel_id": f.channel, "list_id": f.list, "body": "x"})).await,
        "name",
        "required",
    );
    field_error(&post(with("name", json!("   "))).await, "name", "required");
    field_error(
        &post(with("name", json!("n".repeat(201)))).await,
        "name",
        "max_length",
    );
    field_error(&post(with("body", json!(""))).await, "body", "required");
    field_error(
        &post(with("body", json!("x".repeat(10_001)))).await,
        "body",
        "max_length",
    );
    let syntax = post(with("body", json!("Hi {{ name"))).await;
    field_error(&syntax, "body", "template");
    assert!(syntax.text.contains("syntax error"), "{}", syntax.text);
    field_error(
        &post(with("body", json!("Hi {{ coupon }}"))).await,
        "body",
        "unknown_variable",
    );
    field_error(
        &post(with("channel_id", json!("chn_nope"))).await,
        "channel_id",
        "exists",
    );
    field_error(
        &post(with("channel_id", json!("chn_999999"))).await,
        "channel_id",
        "exists",
    );
    field_error(
        &post(with("list_id", json!("lst_999999"))).await,
        "list_id",
        "exists",
    );
    field_error(
        &post(with("scheduled_at", json!("tomorrow"))).await,
        "scheduled_at",
        "format",
    );
    not_in_future(
        &post(with("scheduled_at", json!("2001-01-01T00:00:00Z"))).await,
        "scheduled_at",
    );
    let unknown = post(with("colour", json!("red"))).await;
    unknown.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(
        unknown.body["errors"][0]["field"], "colour",
        "{}",
        unknown.text
    );

    // The other organisation's channel and list are not there for this one.
    let other_channel = app
        .db
        .store
        .create_channel(app.other_org, "theirs", "sandbox", &json!({}))
        .await
        .unwrap();
    let (other_list, _) = list_with(
        &app,
        app.other_org,
        "theirs",
        &[contact("+15550000099", None, None)],
    )
    .await;
    field_error(
        &post(with("channel_id", json!(format!("{other_channel}")))).await,
        "channel_id",
        "exists",
    );
    field_error(
        &post(with("list_id", json!(other_list))).await,
        "list_id",
        "exists",
    );

    // Viewers cannot create.
    app.post("/api/v1/campaigns", &f.viewer, valid.clone())
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    // With `scheduled_at` it is scheduled, as the CLI does it.
    let at = future(3600);
    let r = post(with("scheduled_at", json!(at))).await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.body["status"], "scheduled");
    assert_eq!(
        herald::clock::parse_rfc3339(r.body["scheduled_at"].as_str().unwrap()).unwrap(),
        herald::clock::parse_rfc3339(&at).unwrap()
    );
    let audit = app
        .get(
            &format!("/api/v1/campaigns/{}/audit", r.body["id"].as_str().unwrap()),
            &f.viewer,
        )
        .await;
    assert_eq!(audit.body["items"][0]["to"], "scheduled", "{}", audit.text);
});

api_test!(state_machine_moves_and_conflicts, |app| async move {
    let f = fixture(&app).await;
    let id = create(&app, &f, "Moves", "Hi {{ name }}").await;

    // A draft can be neither paused, resumed nor completed; the detail says what is allowed.
    conflict(&act(&app, &f.editor, &id, "pause").await, "sending");
    conflict(&act(&app, &f.editor, &id, "resume").await, "paused");
    conflict(
        &act(&app, &f.editor, &id, "complete").await,
        "sending or paused",
    );
    act(&app, &f.viewer, &id, "start")
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    // Schedule, reschedule; a scheduled campaign is no longer editable.
    let r = app
        .post(
            &format!("/api/v1/campaigns/{id}/schedule"),
            &f.editor,
            json!({"at": future(3600)}),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["status"], "scheduled");
    not_in_future(
        &app.post(
            &format!("/api/v1/campaigns/{id}/schedule"),
            &f.editor,
            json!({"at": "2001-01-01T00:00:00Z"}),
        )
        .await,
        "at",
    );
    let later = future(7200);
    let r = app
        .post(
            &format!("/api/v1/campaigns/{id}/schedule"),
            &f.editor,
            json!({"at": later}),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(
        herald::clock::parse_rfc3339(r.body["scheduled_at"].as_str().unwrap()).unwrap(),
        herald::clock::parse_rfc3339(&later).unwrap()
    );
    // A scheduled campaign can still be edited (issue 14); it stays scheduled.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{id}"),
            &f.editor,
            Some(json!({"name": "x"})),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["status"], "scheduled");
    assert_eq!(r.body["name"], "x");

    // Start now (no engine runs here, so the messages stay queued).
    let r = act(&app, &f.editor, &id, "start").await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["status"], "sending");
    assert_eq!(r.body["total"], 3);
    assert_eq!(r.body["counters"]["queued"], 3);
    assert_eq!(r.body["progress"], 0.0);
    assert_eq!(r.body["stuck"], Value::Null);
    // No engine runs, so after a minute without progress it is stuck, and says why.
    let n: i64 = id[4..].parse().unwrap();
    app.db
        .raw_exec(
            "UPDATE campaigns SET started_at = 1000, last_progress_at = 1000 WHERE id = $1",
            CampaignId(n),
        )
        .await;
    let stuck = app.get(&format!("/api/v1/campaigns/{id}"), &f.viewer).await;
    stuck.expect(StatusCode::OK);
    let reason = stuck.body["stuck"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no live Herald instance"), "{}", stuck.text);
    assert_eq!(stuck.body["stuck"]["pending"], 3);
    let stats = app
        .get(&format!("/api/v1/campaigns/{id}/stats"), &f.viewer)
        .await;
    stats.expect(StatusCode::OK);
    assert_eq!(stats.body["stuck"]["reason"], reason);
    assert_eq!(stats.body["counters"]["queued"], 3);
    assert_eq!(stats.body["throughput_per_sec"], 0.0);
    conflict(
        &app.post(
            &format!("/api/v1/campaigns/{id}/schedule"),
            &f.editor,
            json!({"at": future(60)}),
        )
        .await,
        "draft or scheduled",
    );

    let r = app
        .post(
            &format!("/api/v1/campaigns/{id}/pause"),
            &f.editor,
            json!({"reason": "copy needs a fix"}),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["status"], "paused");
    conflict(&act(&app, &f.editor, &id, "pause").await, "sending");
    field_error(
        &app.post(
            &format!("/api/v1/campaigns/{id}/resume"),
            &f.editor,
            json!({"reason": "r".repeat(501)}),
        )
        .await,
        "reason",
        "max_length",
    );
    let r = act(&app, &f.editor, &id, "resume").await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["status"], "sending");
    // Marking complete is refused while messages are pending.
    conflict(&act(&app, &f.editor, &id, "complete").await, "pending");

    let r = act(&app, &f.editor, &id, "cancel").await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["counters"]["cancelled"], 3);
    assert_eq!(r.body["counters"]["pending"], 0);
    assert!(r.body["completed_at"].is_string());
    for action in ["cancel", "start", "pause", "resume", "complete"] {
        conflict(&act(&app, &f.editor, &id, action).await, "cancelled");
    }

    let audit = app
        .get(&format!("/api/v1/campaigns/{id}/audit"), &f.viewer)
        .await;
    audit.expect(StatusCode::OK);
    let trail = audit.body["items"].as_array().unwrap();
    let tos: Vec<&str> = trail.iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(
        tos,
        [
            "draft",
            "scheduled",
            "scheduled",
            "scheduled",
            "sending",
            "paused",
            "sending",
            "cancelled"
        ],
        "{}",
        audit.text
    );
    assert!(
        trail.iter().all(|e| e["actor"] == "api_key:test-editor"),
        "{}",
        audit.text
    );
    assert_eq!(trail[5]["reason"], "copy needs a fix");
    assert!(
        trail[2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("rescheduled for")
    );

    // The audit trail pages like every list.
    let (all, pages) = walk(&app, &f.viewer, &format!("/api/v1/campaigns/{id}/audit"), 3).await;
    assert_eq!((all.len(), pages), (8, 3));

    // Only drafts are deleted.
    let draft = create(&app, &f, "Throwaway", "Hi").await;
    app.call(
        Method::DELETE,
        &format!("/api/v1/campaigns/{draft}"),
        &f.viewer,
        None,
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    app.call(
        Method::DELETE,
        &format!("/api/v1/campaigns/{draft}"),
        &f.editor,
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    app.get(&format!("/api/v1/campaigns/{draft}"), &f.viewer)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
    app.call(
        Method::DELETE,
        &format!("/api/v1/campaigns/{draft}"),
        &f.editor,
        None,
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not-found");
});

api_test!(
    lists_and_messages_paginate_with_status_filters,
    |app| async move {
        let f = fixture(&app).await;
        let store = &app.db.store;
        // Five contacts, two of them suppressed: skipped at start.
        let list = store.ensure_list(app.org, "five").await.unwrap();
        store.seed_contacts(app.org, list, 5).await.unwrap();
        for i in [2, 4] {
            store
                .suppress(
                    app.org,
                    &format!("+1{}", 2_000_000_000 + i),
                    "complained",
                    &herald::store::OptSource::API,
                )
                .await
                .unwrap();
        }
        let r = app
        .post(
            "/api/v1/campaigns",
            &f.editor,
            json!({"name": "Five", "channel_id": f.channel, "list_id": format!("{list}"), "body": "Hi"}),
        )
        .await;
        r.expect(StatusCode::CREATED);
        let id = r.body["id"].as_str().unwrap().to_string();
        act(&app, &f.editor, &id, "start")
            .await
            .expect(StatusCode::OK);

        let path = format!("/api/v1/campaigns/{id}/messages");
        let (all, pages) = walk(&app, &f.viewer, &path, 2).await;
        assert_eq!((all.len(), pages), (5, 3));
        let ids: Vec<i64> = all
            .iter()
            .map(|m| m["id"].as_str().unwrap()[4..].parse().unwrap())
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "in id order without repeats: {ids:?}"
        );

        let (skipped, _) = walk(&app, &f.viewer, &format!("{path}?status=skipped"), 1).await;
        assert_eq!(skipped.len(), 2);
        for m in &skipped {
            assert_eq!(m["status"], "skipped");
            assert_eq!(m["last_error"], "suppressed: complained", "{m}");
            assert_eq!(m["attempts"], 0);
            assert_eq!(m["provider_id"], Value::Null);
        }
        let (queued, pages) = walk(&app, &f.viewer, &format!("{path}?status=queued"), 2).await;
        assert_eq!((queued.len(), pages), (3, 2));
        assert!(queued.iter().all(|m| m["status"] == "queued"));
        let (failed, _) = walk(&app, &f.viewer, &format!("{path}?status=failed"), 2).await;
        assert!(failed.is_empty());

        let bad = app.get(&format!("{path}?status=lost"), &f.viewer).await;
        bad.expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
        assert_eq!(bad.body["errors"][0]["field"], "status");
        app.get(&format!("{path}?limit=0"), &f.viewer)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
        app.get(&format!("{path}?cursor=garbage"), &f.viewer)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid-cursor");

        // Campaigns: pages, and a status filter.
        let drafts = [
            create(&app, &f, "D1", "Hi").await,
            create(&app, &f, "D2", "Hi").await,
            create(&app, &f, "D3", "Hi").await,
        ];
        let (every, pages) = walk(&app, &f.viewer, "/api/v1/campaigns", 2).await;
        assert_eq!((every.len(), pages), (4, 2));
        let (only_drafts, _) = walk(&app, &f.viewer, "/api/v1/campaigns?status=draft", 2).await;
        let got: Vec<&str> = only_drafts
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, drafts.iter().map(String::as_str).collect::<Vec<_>>());
        let (sending, _) = walk(&app, &f.viewer, "/api/v1/campaigns?status=sending", 2).await;
        assert_eq!(sending.len(), 1);
        assert_eq!(sending[0]["id"], id.as_str());
        assert_eq!(sending[0]["counters"]["skipped"], 2);
        assert_eq!(sending[0]["counters"]["queued"], 3);
        assert_eq!(sending[0]["progress"], 0.4);
        let bad = app.get("/api/v1/campaigns?status=running", &f.viewer).await;
        bad.expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
        assert_eq!(bad.body["errors"][0]["field"], "status");
        assert!(bad.text.contains("sending"), "{}", bad.text);
    }
);

api_test!(event_stream_follows_the_campaign, |app| async move {
    let f = fixture(&app).await;
    let id = create(&app, &f, "Live", "Hi {{ name }}").await;

    let (status, headers, mut stream) = open_events(&app, &id, &f.viewer, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let snapshot = stream.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["id"], id.as_str());
    assert_eq!(snapshot.data["status"], "draft");
    assert_eq!(snapshot.data["name"], "Live");

    // A start shows as an audit entry and a progress event.
    act(&app, &f.editor, &id, "start")
        .await
        .expect(StatusCode::OK);
    let events = stream.until("progress").await;
    let audit = events
        .iter()
        .find(|e| e.event == "audit")
        .unwrap_or_else(|| panic!("no audit event: {events:?}"));
    assert_eq!(audit.data["from"], "draft");
    assert_eq!(audit.data["to"], "sending");
    assert_eq!(audit.data["actor"], "api_key:test-editor");
    let first_audit_id = audit.id.clone().unwrap();
    assert!(first_audit_id.starts_with("evt_"));
    assert_eq!(audit.data["id"], first_audit_id.as_str());
    let progress = events.last().unwrap();
    assert_eq!(progress.data["status"], "sending");
    assert_eq!(progress.data["total"], 3);
    assert_eq!(progress.data["counters"]["queued"], 3);

    // A cancel: its audit entry, the final progress, then the end, and the stream closes.
    act(&app, &f.editor, &id, "cancel")
        .await
        .expect(StatusCode::OK);
    let events = stream.until("end").await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["audit", "progress", "end"], "{events:?}");
    assert_eq!(events[0].data["to"], "cancelled");
    assert_eq!(events[1].data["status"], "cancelled");
    assert_eq!(events[1].data["counters"]["cancelled"], 3);
    assert_eq!(events[2].data["status"], "cancelled");
    assert!(stream.next().await.is_none(), "the stream ends after `end`");

    // Reconnecting after the first audit entry replays the later ones; an ended campaign
    // ends the stream at once.
    let (status, _, mut again) = open_events(&app, &id, &f.viewer, Some(&first_audit_id)).await;
    assert_eq!(status, StatusCode::OK);
    let events = again.until("end").await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["snapshot", "audit", "end"], "{events:?}");
    assert_eq!(events[0].data["status"], "cancelled");
    assert_eq!(events[1].data["to"], "cancelled");
    assert!(again.next().await.is_none());

    // No credentials, or another organisation's campaign: no stream.
    let (status, _, _) = open_events(&app, &id, &Auth::None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let theirs = Auth::Key(app.key(app.other_org, Role::Viewer).await);
    let (status, headers, _) = open_events(&app, &id, &theirs, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
});

api_test!(
    previews_render_variables_and_count_segments,
    |app| async move {
        let f = fixture(&app).await;
        let sms = app
            .db
            .store
            .create_channel(app.org, "sms", "twilio", &json!({}))
            .await
            .unwrap();
        let r = app
            .post(
                "/api/v1/campaigns",
                &f.editor,
                json!({"name": "Preview", "channel_id": format!("{sms}"), "list_id": f.list,
                   "body": "Hi {{ name }}, see you in {{ city }}"}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let id = r.body["id"].as_str().unwrap().to_string();
        let preview =
            |contact: &str| format!("/api/v1/campaigns/{id}/preview?contact_id={contact}");

        let ada = app.get(&preview(&f.contacts[0]), &f.viewer).await;
        ada.expect(StatusCode::OK);
        assert_eq!(ada.body["rendered"], "Hi Ada, see you in Paris");
        assert_eq!(ada.body["characters"], 24);
        assert_eq!(ada.body["segments"], 1);
        assert_eq!(ada.body["encoding"], "gsm7");
        // `Ł` and `ź` are not in the GSM alphabet.
        let grace = app.get(&preview(&f.contacts[1]), &f.viewer).await;
        grace.expect(StatusCode::OK);
        assert_eq!(grace.body["rendered"], "Hi Grace, see you in Łódź");
        assert_eq!(grace.body["encoding"], "ucs2");

        // A contact that lacks a variable cannot be rendered; unknown contacts are refused.
        let (_, lone) = list_with(
            &app,
            app.org,
            "lone",
            &[contact("+15550000004", Some("Bo"), None)],
        )
        .await;
        let r = app.get(&preview(&lone[0]), &f.viewer).await;
        field_error(&r, "contact_id", "render");
        assert!(r.text.contains("city"), "{}", r.text);
        field_error(
            &app.get(&preview("con_999999"), &f.viewer).await,
            "contact_id",
            "exists",
        );
        field_error(
            &app.get(&preview("nonsense"), &f.viewer).await,
            "contact_id",
            "exists",
        );
        let (_, theirs) = list_with(
            &app,
            app.other_org,
            "theirs",
            &[contact("+15550000005", Some("Eve"), Some("Rome"))],
        )
        .await;
        field_error(
            &app.get(&preview(&theirs[0]), &f.viewer).await,
            "contact_id",
            "exists",
        );
        app.get(&format!("/api/v1/campaigns/{id}/preview"), &f.viewer)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid-query");

        // The editor's preview, before any campaign exists (a viewer may use it too).
        let tp = |body: Value| {
            let app = &app;
            let auth = f.viewer.clone();
            async move { app.post("/api/v1/templates/preview", &auth, body).await }
        };
        let r = tp(json!({"body": "Hi {{ name }} from {{ city }}"})).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["rendered"], "Hi NAME from CITY");
        assert_eq!(r.body["segments"], 1);
        let r =
            tp(json!({"body": "Hi {{ name }} from {{ city }}", "contact_id": f.contacts[2]})).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["rendered"], "Hi Alan from Oslo");
        let long = "x".repeat(161);
        let r = tp(json!({"body": long, "channel_id": format!("{sms}")})).await;
        r.expect(StatusCode::OK);
        assert_eq!(
            (r.body["segments"].clone(), r.body["characters"].clone()),
            (json!(2), json!(161))
        );
        assert_eq!(r.body["encoding"], "gsm7");
        // A channel that does not send SMS has no segments.
        let r = tp(json!({"body": "Hello", "channel_id": f.channel})).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["segments"], Value::Null);
        assert_eq!(r.body["encoding"], Value::Null);
        assert_eq!(r.body["characters"], 5);
        field_error(&tp(json!({"body": "{% if %}"})).await, "body", "template");
        field_error(&tp(json!({"body": ""})).await, "body", "required");
        field_error(
            &tp(json!({"body": "Hi", "contact_id": theirs[0]})).await,
            "contact_id",
            "exists",
        );
        field_error(
            &tp(json!({"body": "Hi", "channel_id": "chn_999999"})).await,
            "channel_id",
            "exists",
        );
        app.post(
            "/api/v1/templates/preview",
            &Auth::None,
            json!({"body": "Hi"}),
        )
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
);

api_test!(
    another_organisations_campaigns_are_not_there,
    |app| async move {
        let f = fixture(&app).await;
        let store = &app.db.store;
        let their_channel = store
            .create_channel(app.other_org, "theirs", "sandbox", &json!({}))
            .await
            .unwrap();
        let (their_list, their_contacts) = list_with(
            &app,
            app.other_org,
            "theirs",
            &[contact("+15550000077", Some("Eve"), Some("Rome"))],
        )
        .await;
        let new = |name: &str| NewCampaign {
            org_id: app.other_org,
            name: name.into(),
            channel_id: their_channel,
            list_id: their_list.parse().unwrap(),
            body: "Hi {{ name }}".into(),
            scheduled_at: None,
            whatsapp_template: None,
            email: None,
            send_window: None,
        };
        let draft = store
            .create_campaign(&new("their draft"), "test")
            .await
            .unwrap();
        let running = store
            .create_campaign(&new("their run"), "test")
            .await
            .unwrap();
        store
            .start_campaign(running, herald::clock::now_ms(), "test", None)
            .await
            .unwrap();
        let mine = create(&app, &f, "Mine", "Hi").await;

        for theirs in [format!("{draft}"), format!("{running}")] {
            for path in [
                format!("/api/v1/campaigns/{theirs}"),
                format!("/api/v1/campaigns/{theirs}/stats"),
                format!("/api/v1/campaigns/{theirs}/messages"),
                format!("/api/v1/campaigns/{theirs}/audit"),
                format!("/api/v1/campaigns/{theirs}/events"),
                format!(
                    "/api/v1/campaigns/{theirs}/preview?contact_id={}",
                    their_contacts[0]
                ),
            ] {
                app.get(&path, &f.editor)
                    .await
                    .expect_problem(StatusCode::NOT_FOUND, "not-found");
            }
            for action in ["start", "pause", "resume", "cancel", "complete"] {
                act(&app, &f.editor, &theirs, action)
                    .await
                    .expect_problem(StatusCode::NOT_FOUND, "not-found");
            }
            app.post(
                &format!("/api/v1/campaigns/{theirs}/schedule"),
                &f.editor,
                json!({"at": future(60)}),
            )
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
            app.call(
                Method::PATCH,
                &format!("/api/v1/campaigns/{theirs}"),
                &f.editor,
                Some(json!({"name": "mine now"})),
            )
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
            app.call(
                Method::DELETE,
                &format!("/api/v1/campaigns/{theirs}"),
                &f.editor,
                None,
            )
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        }
        // Untouched, and absent from every list.
        assert_eq!(
            store.campaign(draft).await.unwrap().status,
            herald::domain::CampaignStatus::Draft
        );
        assert_eq!(
            store.campaign(running).await.unwrap().status,
            herald::domain::CampaignStatus::Sending
        );
        let (all, _) = walk(&app, &f.viewer, "/api/v1/campaigns", 50).await;
        let ids: Vec<&str> = all.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [mine.as_str()]);
        let (sending, _) = walk(&app, &f.viewer, "/api/v1/campaigns?status=sending", 50).await;
        assert!(sending.is_empty());
        // Their list, channel and contacts cannot be used either.
        field_error(
            &app.call(
                Method::PATCH,
                &format!("/api/v1/campaigns/{mine}"),
                &f.editor,
                Some(json!({"list_id": their_list})),
            )
            .await,
            "list_id",
            "exists",
        );
        field_error(
            &app.call(
                Method::PATCH,
                &format!("/api/v1/campaigns/{mine}"),
                &f.editor,
                Some(json!({"channel_id": format!("{their_channel}")})),
            )
            .await,
            "channel_id",
            "exists",
        );
        // Malformed ids name nothing.
        app.get("/api/v1/campaigns/lst_1", &f.viewer)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
    }
);

// The issue's attack: a viewer's preview of `{{ [1]*100000000 }}` cost seconds of CPU on
// the threads serving HTTP (four at once held `/healthz` for 7.8 s), and a campaign with
// such a body stalled the sender. Each hostile body is refused with a 422 naming the
// limit, while `/healthz`, sent alongside them, still answers; and none can be created.
api_test!(
    hostile_templates_are_refused_and_health_stays_up,
    |app| async move {
        let f = fixture(&app).await;
        let hostile = [
            ("{{ [1]*100000000 }}", "max_built_items"),
            ("{{ (range(3)|list) * 100000000 }}", "max_built_items"),
            ("{{ 'x' * 100000000 }}", "max_built_bytes"),
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                "max_render_steps",
            ),
            ("{% set a = 'x' %}{{ a }}", "template_statement"),
        ];
        let previews = hostile.iter().map(|(body, _)| {
            let app = &app;
            let viewer = f.viewer.clone();
            async move {
                app.post("/api/v1/templates/preview", &viewer, json!({"body": body}))
                    .await
            }
        });
        let (replies, health) = tokio::join!(
            futures_util::future::join_all(previews),
            app.get("/healthz", &Auth::None)
        );
        assert_eq!(health.status, StatusCode::OK, "{}", health.text);
        for ((body, rule), reply) in hostile.iter().zip(&replies) {
            field_error(reply, "body", rule);
            let detail = reply.body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains(rule), "{body}: {detail}");
        }
        for (body, rule) in hostile {
            let r = app
                .post(
                    "/api/v1/campaigns",
                    &f.editor,
                    json!({"name": "hostile", "channel_id": f.channel, "list_id": f.list, "body": body}),
                )
                .await;
            field_error(&r, "body", rule);
        }
        // Preview for a real contact goes through the same bounds.
        let r = app
            .post(
                "/api/v1/templates/preview",
                &f.viewer,
                json!({"body": "{{ (range(3)|list) * 100000000 }}", "contact_id": f.contacts[0]}),
            )
            .await;
        field_error(&r, "contact_id", "max_built_items");
    }
);

api_test!(
    event_stream_after_a_cancel_follows_sends_in_flight_to_the_end,
    |app| async move {
        let f = fixture(&app).await;
        let id = create(&app, &f, "cancel live", "Hi {{ name }}").await;
        act(&app, &f.editor, &id, "start")
            .await
            .expect(StatusCode::OK);
        let n: i64 = id.trim_start_matches("cmp_").parse().unwrap();
        let store = &app.db.store;
        let now = herald::clock::now_ms();
        // One send in flight (no engine runs here: this test plays the instance).
        let claimed = store
            .claim(CampaignId(n), "A", now, now + 60_000, 1)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        act(&app, &f.editor, &id, "cancel")
            .await
            .expect(StatusCode::OK);
        let (status, _, mut stream) = open_events(&app, &id, &f.viewer, None).await;
        assert_eq!(status, StatusCode::OK);
        let snapshot = stream.next().await.unwrap();
        assert_eq!(snapshot.event, "snapshot");
        assert_eq!(snapshot.data["status"], "cancelled");
        assert_eq!(snapshot.data["outcome"], "cancelled");
        assert_eq!(snapshot.data["counters"]["in_flight"], 1);
        // The send in flight at the cancel finishes and is recorded: the stream shows it
        // before it ends, so a page never stays at "in flight 1" after a cancel.
        store
            .record_outcomes(
                "A",
                now + 1,
                &[herald::store::Outcome {
                    message_id: claimed[0].id,
                    campaign_id: CampaignId(n),
                    attempt: None,
                    kind: herald::store::OutcomeKind::Sent {
                        provider_id: "p-live".into(),
                    },
                }],
            )
            .await
            .unwrap();
        let events = stream.until("end").await;
        let last_progress = events
            .iter()
            .rev()
            .find(|e| e.event == "progress")
            .unwrap_or_else(|| panic!("no progress before the end: {events:?}"));
        assert_eq!(last_progress.data["counters"]["pending"], 0);
        assert_eq!(last_progress.data["counters"]["processed"], 1);
        assert_eq!(last_progress.data["counters"]["cancelled"], 2);
        assert_eq!(last_progress.data["outcome"], "cancelled");
        let stats = app
            .get(&format!("/api/v1/campaigns/{id}/stats"), &f.viewer)
            .await;
        stats.expect(StatusCode::OK);
        assert_eq!(stats.body["counters"], last_progress.data["counters"]);
        assert!(
            stream.next().await.is_none(),
            "the stream closes after `end`"
        );
    }
);
