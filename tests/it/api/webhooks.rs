//! Webhook endpoints through the API (create, read, change, delete, validation, the secret
//! shown once and sealed at rest, rotation keeping the previous secret 24 h, the delivery
//! log, replays and test events writing the rows the delivery worker reads), on both stores.

use super::{Auth, Reply, SECRET_KEY, TestApp, api_test};
use axum::http::{Method, StatusCode, header};
use base64::Engine as _;
use herald::domain::Role;
use herald::events::EventType;
use herald::ids::WebhookEndpointId;
use herald::outbound::OutboundGuard;
use herald::secrets::SecretKey;
use herald::store::webhook_endpoints::{PREVIOUS_SECRET_MS, open_signing_secret};
use serde_json::{Value, json};

const URL: &str = "http://127.0.0.1:9/hook";

async fn admin(app: &TestApp) -> Auth {
    Auth::Key(app.key(app.org, Role::Admin).await)
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {}", reply.text))
        .to_string()
}

fn row_id(id: &str) -> i64 {
    id.rsplit('_').next().unwrap().parse().unwrap()
}

/// Asserts a 422 naming `field` with `rule`.
#[track_caller]
fn expect_invalid(reply: &Reply, field: &str, rule: &str) {
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    let errors = reply.body["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == field && e["rule"] == rule),
        "expected {field} / {rule}: {}",
        reply.text
    );
}

async fn create(app: &TestApp, auth: &Auth, body: Value) -> Reply {
    app.post("/api/v1/webhooks", auth, body).await
}

/// Raw SQL with integer parameters, behind the store's back (what the delivery worker
/// would write).
async fn exec(app: &TestApp, sql: &'static str, params: &[i64]) -> u64 {
    let pool = app.db.raw().await;
    let mut q = sqlx::query(sql);
    for p in params {
        q = q.bind(*p);
    }
    let n = q
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
        .rows_affected();
    pool.close().await;
    n
}

async fn scalar(app: &TestApp, sql: &'static str, params: &[i64]) -> i64 {
    let pool = app.db.raw().await;
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for p in params {
        q = q.bind(*p);
    }
    let n = q
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    pool.close().await;
    n
}

async fn text(app: &TestApp, sql: &'static str, id: i64) -> Option<String> {
    let pool = app.db.raw().await;
    let v: Option<String> = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    pool.close().await;
    v
}

api_test!(
    endpoints_are_created_read_changed_and_deleted,
    |app| async move {
        let admin = admin(&app).await;
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let reply = create(&app, &admin, json!({"url": URL, "description": "billing"})).await;
        reply.expect(StatusCode::CREATED);
        let id = id_of(&reply);
        assert!(id.starts_with("whk_"), "{id}");
        assert_eq!(
            reply.headers.get(header::LOCATION).unwrap(),
            &format!("/api/v1/webhooks/{id}")
        );
        let defaults: Vec<String> = EventType::default_subscription()
            .iter()
            .map(|t| t.as_str().to_string())
            .collect();
        assert_eq!(reply.body["events"], json!(defaults));
        assert_eq!(reply.body["status"], "enabled");
        assert_eq!(reply.body["description"], "billing");

        let got = app.get(&format!("/api/v1/webhooks/{id}"), &viewer).await;
        got.expect(StatusCode::OK);
        assert!(got.body.get("secret").is_none(), "{}", got.text);
        assert_eq!(got.body["url"], URL);
        let list = app.get("/api/v1/webhooks", &viewer).await;
        list.expect(StatusCode::OK);
        assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
        assert!(!list.text.contains("whsec_"), "{}", list.text);

        let path = format!("/api/v1/webhooks/{id}");
        let changed = app
            .call(
                Method::PATCH,
                &path,
                &admin,
                Some(json!({"events": ["message.failed", "campaign.completed", "message.failed"], "description": "ops"})),
            )
            .await;
        changed.expect(StatusCode::OK);
        assert_eq!(
            changed.body["events"],
            json!(["message.failed", "campaign.completed"])
        );
        assert_eq!(changed.body["description"], "ops");
        let off = app
            .call(
                Method::PATCH,
                &path,
                &admin,
                Some(json!({"enabled": false})),
            )
            .await;
        off.expect(StatusCode::OK);
        assert_eq!(off.body["status"], "disabled");
        assert!(
            off.body["disabled_reason"]
                .as_str()
                .unwrap()
                .starts_with("disabled by "),
            "{}",
            off.text
        );
        assert!(off.body["disabled_at"].is_string());
        let test = app
            .call(Method::POST, &format!("{path}/test"), &admin, None)
            .await;
        test.expect_problem(StatusCode::CONFLICT, "conflict");
        let on = app
            .call(Method::PATCH, &path, &admin, Some(json!({"enabled": true})))
            .await;
        assert_eq!(on.body["status"], "enabled");
        assert!(on.body["disabled_reason"].is_null());

        // A viewer reads but does not manage.
        app.call(Method::DELETE, &path, &viewer, None)
            .await
            .expect(StatusCode::FORBIDDEN);
        app.call(Method::DELETE, &path, &admin, None)
            .await
            .expect(StatusCode::NO_CONTENT);
        app.get(&path, &admin)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
    }
);

api_test!(every_field_is_checked_and_named, |app| async move {
    let admin = admin(&app).await;
    for (body, field, rule) in [
        (json!({"url": "ftp://example.org/x"}), "url", "format"),
        (json!({"url": "example.org/x"}), "url", "format"),
        (json!({"url": ""}), "url", "required"),
        (json!({"url": "https://u:p@example.org/"}), "url", "format"),
        (
            json!({"url": format!("https://example.org/{}", "a".repeat(2048))}),
            "url",
            "max_length",
        ),
        (json!({"url": URL, "events": []}), "events", "min_items"),
        (
            json!({"url": URL, "events": ["campaign.finished"]}),
            "events",
            "one_of",
        ),
        (
            json!({"url": URL, "events": ["webhook.test"]}),
            "events",
            "one_of",
        ),
        (
            json!({"url": URL, "description": "x".repeat(501)}),
            "description",
            "max_length",
        ),
    ] {
        let reply = create(&app, &admin, body.clone()).await;
        expect_invalid(&reply, field, rule);
    }
    create(&app, &admin, json!({"url": URL, "secret": "mine"}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    let none = app.get("/api/v1/webhooks", &admin).await;
    assert_eq!(none.body["items"], json!([]), "nothing was created");
    app.get("/api/v1/webhooks/whk_x", &admin)
        .await
        .expect(StatusCode::NOT_FOUND);
});

/// The default guard (no outbound_allow_private) refuses loopback and private endpoints
/// at save time.
async fn private_destinations_are_refused(backend: crate::support::Backend) {
    let app = TestApp::with_outbound(backend, OutboundGuard::new(false, Vec::new())).await;
    let admin = admin(&app).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
    ] {
        let reply = create(&app, &admin, json!({"url": url})).await;
        expect_invalid(&reply, "url", "destination");
        assert!(
            reply.text.contains("outbound_allow_private"),
            "{}",
            reply.text
        );
    }
    let allowed = TestApp::with_outbound(
        backend,
        OutboundGuard::new(false, herald::outbound::parse_cidrs("127.0.0.0/8").unwrap()),
    )
    .await;
    let admin = Auth::Key(allowed.key(allowed.org, Role::Admin).await);
    create(&allowed, &admin, json!({"url": URL}))
        .await
        .expect(StatusCode::CREATED);
}

mod private_destinations {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::private_destinations_are_refused(crate::support::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::private_destinations_are_refused(crate::support::Backend::Postgres).await;
    }
}

api_test!(
    the_secret_is_shown_once_sealed_at_rest_and_rotation_keeps_the_previous_for_a_day,
    |app| async move {
        let admin = admin(&app).await;
        let key = SecretKey::parse(SECRET_KEY).unwrap();
        let reply = app
            .send(
                Method::POST,
                "/api/v1/webhooks",
                &admin,
                &[("Idempotency-Key", "create-hook-1")],
                Some(("application/json", json!({"url": URL}).to_string())),
            )
            .await;
        reply.expect(StatusCode::CREATED);
        let secret = reply.body["secret"].as_str().unwrap().to_string();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
        let id = row_id(&id_of(&reply));

        // The replay of the same request has no secret; it is not in the database either.
        let again = app
            .send(
                Method::POST,
                "/api/v1/webhooks",
                &admin,
                &[("Idempotency-Key", "create-hook-1")],
                Some(("application/json", json!({"url": URL}).to_string())),
            )
            .await;
        again.expect(StatusCode::CREATED);
        assert_eq!(again.body["id"], reply.body["id"]);
        assert!(again.body.get("secret").is_none(), "{}", again.text);
        let kept = scalar(
            &app,
            "SELECT count(*) FROM idempotency_keys WHERE body LIKE '%whsec_%'",
            &[],
        )
        .await;
        assert_eq!(kept, 0, "a secret was kept for idempotent replays");
        let sealed = text(
            &app,
            "SELECT secret FROM webhook_endpoints WHERE id = $1",
            id,
        )
        .await
        .unwrap();
        assert!(!sealed.contains(&secret) && !sealed.contains("whsec_"));
        assert_eq!(
            open_signing_secret(&key, WebhookEndpointId(id), &sealed).unwrap(),
            secret
        );
        assert!(open_signing_secret(&key, WebhookEndpointId(id + 1), &sealed).is_err());

        let before = herald::clock::now_ms();
        let rotated = app
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/whk_{id}/rotate-secret"),
                &admin,
                None,
            )
            .await;
        rotated.expect(StatusCode::OK);
        let new_secret = rotated.body["secret"].as_str().unwrap().to_string();
        assert!(new_secret.starts_with("whsec_") && new_secret != secret);
        let sealed_now = text(
            &app,
            "SELECT secret FROM webhook_endpoints WHERE id = $1",
            id,
        )
        .await
        .unwrap();
        let previous = text(
            &app,
            "SELECT previous_secret FROM webhook_endpoints WHERE id = $1",
            id,
        )
        .await
        .unwrap();
        assert_eq!(
            open_signing_secret(&key, WebhookEndpointId(id), &sealed_now).unwrap(),
            new_secret
        );
        assert_eq!(
            open_signing_secret(&key, WebhookEndpointId(id), &previous).unwrap(),
            secret
        );
        let until = scalar(
            &app,
            "SELECT previous_until FROM webhook_endpoints WHERE id = $1",
            &[id],
        )
        .await;
        assert!(
            until >= before + PREVIOUS_SECRET_MS
                && until <= herald::clock::now_ms() + PREVIOUS_SECRET_MS,
            "previous_until {until} is not 24 h after the rotation"
        );
        let got = app.get(&format!("/api/v1/webhooks/whk_{id}"), &admin).await;
        assert_eq!(
            got.body["previous_secret_until"],
            rotated.body["previous_secret_until"]
        );
        assert!(!got.text.contains("whsec_"));
        // A second rotation moves the then-current secret to previous.
        let third = app
            .call(
                Method::POST,
                &format!("/api/v1/webhooks/whk_{id}/rotate-secret"),
                &admin,
                None,
            )
            .await;
        third.expect(StatusCode::OK);
        let previous = text(
            &app,
            "SELECT previous_secret FROM webhook_endpoints WHERE id = $1",
            id,
        )
        .await
        .unwrap();
        assert_eq!(
            open_signing_secret(&key, WebhookEndpointId(id), &previous).unwrap(),
            new_secret
        );
    }
);

api_test!(
    test_events_replays_and_the_delivery_log_write_and_read_the_worker_rows,
    |app| async move {
        let admin = admin(&app).await;
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let id = id_of(&create(&app, &admin, json!({"url": URL})).await);
        let endpoint = row_id(&id);
        let path = format!("/api/v1/webhooks/{id}");

        // Two test events: each one outbox row (never fanned out) and one delivery, with
        // the endpoint's next sequence numbers.
        let mut events = Vec::new();
        for expected_seq in [1, 2] {
            let sent = app
                .call(Method::POST, &format!("{path}/test"), &admin, None)
                .await;
            sent.expect(StatusCode::ACCEPTED);
            assert_eq!(sent.body["seq"], expected_seq);
            let event = row_id(sent.body["event_id"].as_str().unwrap());
            assert!(sent.body["event_id"].as_str().unwrap().starts_with("ntf_"));
            events.push(event);
            assert_eq!(
                text(&app, "SELECT type FROM outbox_events WHERE id = $1", event)
                    .await
                    .as_deref(),
                Some("webhook.test")
            );
            assert_eq!(
                scalar(
                    &app,
                    "SELECT count(*) FROM outbox_events WHERE id = $1 AND fanned_out_at IS NOT NULL",
                    &[event]
                )
                .await,
                1,
                "a test event is never fanned out to other endpoints"
            );
            assert_eq!(
                scalar(
                    &app,
                    "SELECT count(*) FROM webhook_deliveries WHERE event_id = $1 AND endpoint_id = $2 \
                     AND status = 'pending' AND seq = $3 AND org_id = $4",
                    &[event, endpoint, expected_seq, app.org.get()]
                )
                .await,
                1
            );
        }
        assert_eq!(
            scalar(
                &app,
                "SELECT next_seq FROM webhook_endpoints WHERE id = $1",
                &[endpoint]
            )
            .await,
            3
        );

        // The worker tried the first one twice and gave up.
        let first = events[0];
        let delivery = scalar(
            &app,
            "SELECT id FROM webhook_deliveries WHERE event_id = $1",
            &[first],
        )
        .await;
        exec(
            &app,
            "UPDATE webhook_deliveries SET status = 'failed', attempts = 2, last_status_code = 500 WHERE id = $1",
            &[delivery],
        )
        .await;
        exec(
            &app,
            "INSERT INTO webhook_attempts (delivery_id, org_id, endpoint_id, at, status_code, latency_ms, response_excerpt, error) \
             VALUES ($1, $2, $3, 1000, 500, 12, 'oops', NULL), ($1, $2, $3, 2000, NULL, 15000, NULL, 'timed out')",
            &[delivery, app.org.get(), endpoint],
        )
        .await;

        let log = app.get(&format!("{path}/deliveries"), &viewer).await;
        log.expect(StatusCode::OK);
        let items = log.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0]["event_id"],
            format!("ntf_{}", events[1]),
            "newest first"
        );
        assert_eq!(items[0]["status"], "pending");
        assert!(items[0]["next_attempt_at"].is_string());
        let failed = &items[1];
        assert_eq!(failed["event_type"], "webhook.test");
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["seq"], 1);
        assert_eq!(failed["attempts"], 2);
        assert!(failed["next_attempt_at"].is_null());
        assert_eq!(
            failed["attempt_log"],
            json!([
                {"at": "1970-01-01T00:00:02.000Z", "status_code": null, "latency_ms": 15000, "response_excerpt": null, "error": "timed out"},
                {"at": "1970-01-01T00:00:01.000Z", "status_code": 500, "latency_ms": 12, "response_excerpt": "oops", "error": null},
            ])
        );
        let only_failed = app
            .get(&format!("{path}/deliveries?status=failed"), &viewer)
            .await;
        assert_eq!(only_failed.body["items"].as_array().unwrap().len(), 1);
        app.get(&format!("{path}/deliveries?status=lost"), &viewer)
            .await
            .expect(StatusCode::BAD_REQUEST);
        app.get(&format!("{path}/deliveries?limit=101"), &viewer)
            .await
            .expect(StatusCode::BAD_REQUEST);
        let page = app
            .get(&format!("{path}/deliveries?limit=1"), &viewer)
            .await;
        assert_eq!(
            page.body["items"][0]["event_id"],
            format!("ntf_{}", events[1])
        );
        let cursor = page.body["next_cursor"].as_str().unwrap();
        let next = app
            .get(
                &format!("{path}/deliveries?limit=1&cursor={cursor}"),
                &viewer,
            )
            .await;
        assert_eq!(next.body["items"][0]["event_id"], format!("ntf_{first}"));
        assert!(next.body["next_cursor"].is_null());

        // Replay one event: back to pending, due now, a fresh schedule; the log stays.
        let replay = format!("{path}/replay");
        let done = app
            .post(&replay, &admin, json!({"event_id": format!("ntf_{first}")}))
            .await;
        done.expect(StatusCode::OK);
        assert_eq!(
            done.body,
            json!({"replayed": 1, "already_pending": 0, "more": false})
        );
        assert_eq!(
            scalar(
                &app,
                "SELECT count(*) FROM webhook_deliveries WHERE id = $1 AND status = 'pending' AND attempts = 0 AND owner IS NULL",
                &[delivery]
            )
            .await,
            1
        );
        assert_eq!(
            scalar(
                &app,
                "SELECT count(*) FROM webhook_attempts WHERE delivery_id = $1",
                &[delivery]
            )
            .await,
            2
        );
        let twice = app
            .post(&replay, &admin, json!({"event_id": format!("ntf_{first}")}))
            .await;
        assert_eq!(
            twice.body,
            json!({"replayed": 0, "already_pending": 1, "more": false})
        );

        // Replay every failed delivery since a time (the event's time decides).
        exec(
            &app,
            "UPDATE webhook_deliveries SET status = 'failed' WHERE endpoint_id = $1",
            &[endpoint],
        )
        .await;
        let future = app
            .post(
                &replay,
                &admin,
                json!({"failed_since": "2999-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(future.body["replayed"], 0, "{}", future.text);
        let all = app
            .post(
                &replay,
                &admin,
                json!({"failed_since": "2000-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(
            all.body,
            json!({"replayed": 2, "already_pending": 0, "more": false})
        );

        app.post(&replay, &admin, json!({"event_id": "ntf_999999"}))
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        expect_invalid(
            &app.post(
                &replay,
                &admin,
                json!({"event_id": format!("ntf_{first}"), "failed_since": "2000-01-01T00:00:00Z"}),
            )
            .await,
            "event_id",
            "one_of",
        );
        expect_invalid(
            &app.post(&replay, &admin, json!({"failed_since": "yesterday"}))
                .await,
            "failed_since",
            "format",
        );
        app.post(
            &replay,
            &viewer,
            json!({"failed_since": "2000-01-01T00:00:00Z"}),
        )
        .await
        .expect(StatusCode::FORBIDDEN);

        // Deleting the endpoint takes its deliveries and attempts with it.
        app.call(Method::DELETE, &path, &admin, None)
            .await
            .expect(StatusCode::NO_CONTENT);
        assert_eq!(
            scalar(
                &app,
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1",
                &[endpoint]
            )
            .await,
            0
        );
        assert_eq!(
            scalar(
                &app,
                "SELECT count(*) FROM webhook_attempts WHERE endpoint_id = $1",
                &[endpoint]
            )
            .await,
            0
        );
    }
);

api_test!(
    another_organisations_endpoint_is_not_found_anywhere,
    |app| async move {
        let other_owner = Auth::Key(app.key(app.other_org, Role::Owner).await);
        let theirs = id_of(&create(&app, &other_owner, json!({"url": URL})).await);
        app.call(
            Method::POST,
            &format!("/api/v1/webhooks/{theirs}/test"),
            &other_owner,
            None,
        )
        .await
        .expect(StatusCode::ACCEPTED);
        let owner = Auth::Key(app.key(app.org, Role::Owner).await);
        let path = format!("/api/v1/webhooks/{theirs}");
        for (method, path, body) in [
            (Method::GET, path.clone(), None),
            (
                Method::PATCH,
                path.clone(),
                Some(json!({"description": "x"})),
            ),
            (Method::GET, format!("{path}/deliveries"), None),
            (Method::POST, format!("{path}/rotate-secret"), None),
            (Method::POST, format!("{path}/test"), None),
            (
                Method::POST,
                format!("{path}/replay"),
                Some(json!({"event_id": "ntf_1"})),
            ),
            (Method::DELETE, path.clone(), None),
        ] {
            let reply = app.call(method.clone(), &path, &owner, body).await;
            reply.expect_problem(StatusCode::NOT_FOUND, "not-found");
            assert!(
                !reply.text.contains("127.0.0.1"),
                "{method} {path}: {}",
                reply.text
            );
        }
        let list = app.get("/api/v1/webhooks", &owner).await;
        assert_eq!(list.body["items"], json!([]));
        // Still there for its own organisation.
        app.get(&path, &other_owner).await.expect(StatusCode::OK);
    }
);

api_test!(
    concurrent_test_events_take_distinct_consecutive_sequence_numbers,
    |app| async move {
        let admin = admin(&app).await;
        let id = row_id(&id_of(&create(&app, &admin, json!({"url": URL})).await));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = app.db.store.clone();
            let org = app.org;
            tasks.push(tokio::spawn(async move {
                store
                    .send_webhook_test_event(
                        org,
                        WebhookEndpointId(id),
                        &format!("test:{i}"),
                        herald::clock::now_ms(),
                    )
                    .await
            }));
        }
        let mut seqs = Vec::new();
        let mut events = Vec::new();
        for t in tasks {
            let sent = t.await.unwrap().unwrap();
            seqs.push(sent.seq);
            events.push(sent.event_id);
        }
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=8).collect::<Vec<i64>>(),
            "one seq each, none skipped"
        );
        events.sort_unstable();
        events.dedup();
        assert_eq!(events.len(), 8, "one event each");
        assert_eq!(
            scalar(
                &app,
                "SELECT next_seq FROM webhook_endpoints WHERE id = $1",
                &[id]
            )
            .await,
            9
        );
        assert_eq!(
            scalar(
                &app,
                "SELECT count(DISTINCT seq) FROM webhook_deliveries WHERE endpoint_id = $1",
                &[id]
            )
            .await,
            8
        );
    }
);
