//! The API's conventions, once for all routes: problem documents, idempotency keys,
//! sessions with CSRF, sign-in rate limits, body limits and the checked-in OpenAPI document.

use super::{Auth, TestApp, api_test};
use axum::http::{Method, StatusCode, header};
use herald::domain::Role;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

#[test]
fn the_checked_in_openapi_document_matches_the_handlers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let generated = herald::api::openapi_json();
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "docs/openapi.json differs from the document the handlers generate: run \
         `cargo run -q -- openapi > docs/openapi.json` and commit it"
    );
}

api_test!(
    errors_are_problem_documents_with_stable_types,
    |app| async move {
        let key = Auth::Key(app.key(app.org, Role::Owner).await);
        app.get("/api/v1/no-such-thing", &key)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "no-such-route");
        app.get("/api/v1/users/usr_999999", &key)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        app.get("/api/v1/users/garbage", &key)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        // Malformed JSON, a wrong media type, a missing field, a broken rule.
        app.send(
            Method::POST,
            "/api/v1/api-keys",
            &key,
            &[],
            Some(("application/json", "{".into())),
        )
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "malformed-json");
        app.send(
            Method::POST,
            "/api/v1/api-keys",
            &key,
            &[],
            Some(("text/plain", "x".into())),
        )
        .await
        .expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
        let missing = app
            .post("/api/v1/api-keys", &key, json!({"role": "viewer"}))
            .await;
        missing.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(
            missing.body["errors"][0]["field"], "name",
            "{}",
            missing.text
        );
        assert_eq!(missing.body["errors"][0]["rule"], "required");
        let blank = app
            .post(
                "/api/v1/api-keys",
                &key,
                json!({"name": " ", "role": "viewer"}),
            )
            .await;
        blank.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(blank.body["errors"][0]["field"], "name");
        let bad_role = app
            .post(
                "/api/v1/api-keys",
                &key,
                json!({"name": "k", "role": "god"}),
            )
            .await;
        bad_role.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        let unknown = app
            .post(
                "/api/v1/api-keys",
                &key,
                json!({"name": "k", "role": "viewer", "colour": 1}),
            )
            .await;
        unknown.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(unknown.body["errors"][0]["field"], "colour");
        // A body over the limit is refused before it is read in full.
        let huge = format!(
            "{{\"name\": \"{}\", \"role\": \"viewer\"}}",
            "x".repeat(2 * 1024 * 1024)
        );
        app.send(
            Method::POST,
            "/api/v1/api-keys",
            &key,
            &[],
            Some(("application/json", huge)),
        )
        .await
        .expect_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        // A key that is not valid is 401 even on a route that needs no more than viewer.
        app.get("/api/v1/users", &Auth::Key("hk_not_a_key".into()))
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
        app.send(
            Method::GET,
            "/api/v1/users",
            &Auth::None,
            &[("authorization", "Basic Zm9vOmJhcg==")],
            None,
        )
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
);

api_test!(
    an_idempotency_key_replays_the_first_response_without_a_second_effect,
    |app| async move {
        let key = Auth::Key(app.key(app.org, Role::Admin).await);
        let body = json!({"name": "deploy", "role": "editor"}).to_string();
        let first = app
            .send(
                Method::POST,
                "/api/v1/api-keys",
                &key,
                &[("idempotency-key", "k-1")],
                Some(("application/json", body.clone())),
            )
            .await;
        first.expect(StatusCode::CREATED);
        assert!(first.headers.get("idempotent-replayed").is_none());
        let again = app
            .send(
                Method::POST,
                "/api/v1/api-keys",
                &key,
                &[("idempotency-key", "k-1")],
                Some(("application/json", body.clone())),
            )
            .await;
        again.expect(StatusCode::CREATED);
        assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
        assert_eq!(
            again.body["api_key"], first.body["api_key"],
            "the same key record"
        );
        // The key itself was shown once and is not kept, not even for replays.
        let secret = first.body["key"].as_str().unwrap();
        assert!(again.body.get("key").is_none() && !again.text.contains(secret));
        let raw = app.db.raw().await;
        let kept: Vec<String> = sqlx::query_scalar("SELECT body FROM idempotency_keys")
            .fetch_all(&raw)
            .await
            .unwrap();
        assert!(kept.iter().all(|b| !b.contains(secret)), "{kept:?}");
        // Keys are per caller: another admin of the organisation with the same key makes
        // its own request.
        let colleague = Auth::Key(app.key(app.org, Role::Admin).await);
        let theirs = app
            .send(
                Method::POST,
                "/api/v1/api-keys",
                &colleague,
                &[("idempotency-key", "k-1")],
                Some((
                    "application/json",
                    json!({"name": "colleague", "role": "viewer"}).to_string(),
                )),
            )
            .await;
        theirs.expect(StatusCode::CREATED);
        assert!(theirs.headers.get("idempotent-replayed").is_none());
        assert_eq!(
            again.headers.get(header::LOCATION),
            first.headers.get(header::LOCATION)
        );
        let deploys = app.db.store.api_keys(app.org).await.unwrap();
        assert_eq!(
            deploys.iter().filter(|k| k.name == "deploy").count(),
            1,
            "no second effect"
        );

        // The same key for another request is refused; a new key is a new request.
        let other = json!({"name": "other", "role": "viewer"}).to_string();
        app.send(
            Method::POST,
            "/api/v1/api-keys",
            &key,
            &[("idempotency-key", "k-1")],
            Some(("application/json", other.clone())),
        )
        .await
        .expect_problem(StatusCode::CONFLICT, "idempotency-key-reused");
        app.send(
            Method::POST,
            "/api/v1/api-keys",
            &key,
            &[("idempotency-key", "k-2")],
            Some(("application/json", other)),
        )
        .await
        .expect(StatusCode::CREATED);
        // Keys are per organisation: the other organisation's k-1 is its own.
        let other_org = Auth::Key(app.key(app.other_org, Role::Admin).await);
        let theirs = app
            .send(
                Method::POST,
                "/api/v1/api-keys",
                &other_org,
                &[("idempotency-key", "k-1")],
                Some(("application/json", body)),
            )
            .await;
        theirs.expect(StatusCode::CREATED);
        assert!(theirs.headers.get("idempotent-replayed").is_none());
        // A refused request is replayed as refused too (it had no effect, and says so again).
        let bad = json!({"name": "", "role": "viewer"}).to_string();
        for _ in 0..2 {
            app.send(
                Method::POST,
                "/api/v1/api-keys",
                &key,
                &[("idempotency-key", "k-3")],
                Some(("application/json", bad.clone())),
            )
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        }
        app.send(
            Method::POST,
            "/api/v1/api-keys",
            &key,
            &[("idempotency-key", "has spaces")],
            Some(("application/json", "{}".into())),
        )
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    }
);

api_test!(
    sessions_need_csrf_tokens_for_writes_and_can_be_revoked,
    |app| async move {
        app.user(app.org, "ada@example.org", Role::Admin, PASSWORD)
            .await;
        let login = app
            .post(
                "/api/v1/auth/login",
                &Auth::None,
                json!({"email": "Ada@Example.org", "password": PASSWORD}),
            )
            .await;
        login.expect(StatusCode::OK);
        let set_cookie = login
            .headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        assert!(
            !set_cookie.contains("Secure"),
            "served over plain HTTP: {set_cookie}"
        );
        let (cookie, csrf) = app.sign_in("ada@example.org", PASSWORD).await;

        // Reads need no token; writes do, and the wrong one is refused.
        let no_token = Auth::Session {
            cookie: cookie.clone(),
            csrf: None,
        };
        let wrong = Auth::Session {
            cookie: cookie.clone(),
            csrf: Some("x".repeat(43)),
        };
        let right = Auth::Session {
            cookie: cookie.clone(),
            csrf: Some(csrf.clone()),
        };
        let me = app.get("/api/v1/auth/session", &no_token).await;
        me.expect(StatusCode::OK);
        assert_eq!(me.body["actor"], "user:ada@example.org");
        assert_eq!(me.body["csrf_token"], csrf.as_str());
        let new_key = json!({"name": "from-browser", "role": "viewer"});
        app.post("/api/v1/api-keys", &no_token, new_key.clone())
            .await
            .expect_problem(StatusCode::FORBIDDEN, "csrf-token-invalid");
        app.post("/api/v1/api-keys", &wrong, new_key.clone())
            .await
            .expect_problem(StatusCode::FORBIDDEN, "csrf-token-invalid");
        app.post("/api/v1/api-keys", &right, new_key)
            .await
            .expect(StatusCode::CREATED);

        // Sign-out revokes the session on the server: the old cookie no longer works.
        let out = app
            .call(Method::POST, "/api/v1/auth/logout", &right, None)
            .await;
        out.expect(StatusCode::NO_CONTENT);
        assert!(
            out.headers
                .get(header::SET_COOKIE)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
        app.get("/api/v1/auth/session", &right)
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");

        // A password change signs the user out everywhere.
        let (cookie, _) = app.sign_in("ada@example.org", PASSWORD).await;
        let session = Auth::Session { cookie, csrf: None };
        app.get("/api/v1/auth/session", &session)
            .await
            .expect(StatusCode::OK);
        let user = app
            .db
            .store
            .user_credentials("ada@example.org")
            .await
            .unwrap()
            .unwrap()
            .user;
        let owner = Auth::Key(app.key(app.org, Role::Owner).await);
        app.call(
            Method::PATCH,
            &format!("/api/v1/users/{}", user.id),
            &owner,
            Some(json!({"password": "another long password"})),
        )
        .await
        .expect(StatusCode::OK);
        app.get("/api/v1/auth/session", &session)
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
);

api_test!(sign_in_is_rate_limited_per_account, |app| async move {
    app.user(app.org, "eve@example.org", Role::Viewer, PASSWORD)
        .await;
    let wrong = json!({"email": "eve@example.org", "password": "not the password"});
    for _ in 0..5 {
        app.post("/api/v1/auth/login", &Auth::None, wrong.clone())
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    }
    // Now even the right password waits: the account is paused for the window.
    let blocked = app
        .post(
            "/api/v1/auth/login",
            &Auth::None,
            json!({"email": "eve@example.org", "password": PASSWORD}),
        )
        .await;
    blocked.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-sign-in-attempts");
    let retry: u64 = blocked
        .headers
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 15 * 60, "{retry}");
    // Unknown accounts answer exactly like wrong passwords.
    app.post(
        "/api/v1/auth/login",
        &Auth::None,
        json!({"email": "nobody@example.org", "password": PASSWORD}),
    )
    .await
    .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_rate_limited_per_address() {
    let app = TestApp::new(crate::support::Backend::Sqlite).await;
    let store = &app.db.store;
    // Twenty failures from one address, spread over accounts, pause that address.
    for _ in 0..20 {
        store
            .record_login_failure("address:unknown", 15 * 60 * 1000)
            .await
            .unwrap();
    }
    app.user(app.org, "kim@example.org", Role::Viewer, PASSWORD)
        .await;
    app.post(
        "/api/v1/auth/login",
        &Auth::None,
        json!({"email": "kim@example.org", "password": PASSWORD}),
    )
    .await
    .expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-sign-in-attempts");
}

api_test!(the_first_owner_is_created_once, |app| async move {
    let store = &app.db.store;
    assert!(
        store
            .bootstrap_owner("first@example.org", "$argon2id$x")
            .await
            .unwrap()
    );
    assert!(
        !store
            .bootstrap_owner("second@example.org", "$argon2id$x")
            .await
            .unwrap()
    );
    let users = store.users(app.org).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].role, Role::Owner);
});

api_test!(
    concurrent_sign_in_attempts_cannot_slip_past_the_limit,
    |app| async move {
        app.user(app.org, "mallory@example.org", Role::Viewer, PASSWORD)
            .await;
        let wrong = json!({"email": "mallory@example.org", "password": "guess guess guess"});
        let attempts = (0..12).map(|_| app.post("/api/v1/auth/login", &Auth::None, wrong.clone()));
        let replies = futures_util::future::join_all(attempts).await;
        let checked = replies
            .iter()
            .filter(|r| r.status == StatusCode::UNAUTHORIZED)
            .count();
        let paused = replies
            .iter()
            .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert!(
            checked <= 5,
            "{checked} passwords were checked, the limit is 5"
        );
        assert_eq!(checked + paused, 12);
    }
);

api_test!(
    nul_characters_are_refused_not_a_server_error,
    |app| async move {
        let key = Auth::Key(app.key(app.org, Role::Owner).await);
        let body = r#"{"address": "+15550001234", "name": "a\u0000b"}"#.to_string();
        let r = app
            .send(
                Method::POST,
                "/api/v1/contacts",
                &key,
                &[],
                Some(("application/json", body)),
            )
            .await;
        r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        app.get("/api/v1/contacts?q=%00", &key)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
        let r = app
            .call(Method::DELETE, "/api/v1/suppressions/a%00b", &key, None)
            .await;
        r.expect_problem(StatusCode::NOT_FOUND, "not-found");
        let csv = "address,name,city\n+15550001111,ok,x\n+15550002222,bad\0name,y\n".to_string();
        let r = app
            .send(
                Method::POST,
                "/api/v1/contacts/import?list=nul",
                &key,
                &[],
                Some(("text/csv", csv)),
            )
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["inserted"], 1, "{}", r.text);
        assert_eq!(r.body["rejected"], 1, "{}", r.text);
    }
);
