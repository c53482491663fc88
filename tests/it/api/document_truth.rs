//! The server refuses what the OpenAPI document forbids and answers what it allows without
//! a validation error (issue 11, point 8); schemathesis checks the same against a live
//! server (tests/process/accounts.rs `schema_fuzz`), these pin the cases it found.

use super::{Auth, api_test};
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use serde_json::json;

api_test!(bodies_that_are_not_objects_are_refused, |app| async move {
    let owner = Auth::Key(app.key(app.org, Role::Owner).await);
    let channel = app
        .post(
            "/api/v1/channels",
            &owner,
            json!({"name": "sim", "kind": "sandbox"}),
        )
        .await;
    channel.expect(StatusCode::CREATED);
    let channel = channel.body["id"].as_str().unwrap().to_string();
    let user = app
        .post(
            "/api/v1/users",
            &owner,
            json!({"email": "ada@example.org", "role": "viewer"}),
        )
        .await;
    user.expect(StatusCode::CREATED);
    let user = user.body["user"]["id"].as_str().unwrap().to_string();
    for path in [
        format!("/api/v1/channels/{channel}"),
        format!("/api/v1/users/{user}"),
    ] {
        // serde reads a struct from an array too: `[null, null]` answered 200.
        for body in [json!([null, null]), json!([]), json!("x"), json!(1)] {
            let r = app
                .call(Method::PATCH, &path, &owner, Some(body.clone()))
                .await;
            r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
            if body.is_array() {
                assert_eq!(r.body["errors"][0]["field"], "body", "{path} {body}");
            }
        }
    }
    // An object is still read as before.
    app.call(
        Method::PATCH,
        &format!("/api/v1/channels/{channel}"),
        &owner,
        Some(json!({"name": "renamed"})),
    )
    .await
    .expect(StatusCode::OK);
});

api_test!(
    channel_rates_and_setting_names_follow_the_document,
    |app| async move {
        let owner = Auth::Key(app.key(app.org, Role::Owner).await);
        let created = app
            .post(
                "/api/v1/channels",
                &owner,
                json!({"name": "sim", "kind": "sandbox"}),
            )
            .await;
        let path = format!("/api/v1/channels/{}", created.body["id"].as_str().unwrap());
        for rate in [json!(5e-324), json!(0.0009), json!(0), json!(100_001)] {
            let r = app
                .call(
                    Method::PATCH,
                    &path,
                    &owner,
                    Some(json!({"config": {}, "rate_per_sec": rate})),
                )
                .await;
            r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
            assert_eq!(r.body["errors"][0]["rule"], "range", "{rate}");
        }
        for rate in [json!(0.001), json!(100_000)] {
            app.call(
                Method::PATCH,
                &path,
                &owner,
                Some(json!({"config": {}, "rate_per_sec": rate})),
            )
            .await
            .expect(StatusCode::OK);
        }
        // `{"": null}` reached the store as a secret to remove (500 on PostgreSQL).
        let r = app
            .call(
                Method::PATCH,
                &path,
                &owner,
                Some(json!({"secrets": {"": null}})),
            )
            .await;
        r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(r.body["errors"][0]["field"], "secrets");
        let doc = herald::api::openapi();
        let rate = &doc["components"]["schemas"]["ChannelChange"]["properties"]["rate_per_sec"];
        assert_eq!(rate["minimum"], 0.001);
        assert_eq!(rate["maximum"], 100_000);
    }
);

api_test!(
    a_key_cannot_revoke_itself_and_reused_keys_are_conflicts,
    |app| async move {
        let admin = Auth::Key(app.key(app.org, Role::Admin).await);
        let created = app
            .post(
                "/api/v1/api-keys",
                &admin,
                json!({"name": "self", "role": "admin"}),
            )
            .await;
        created.expect(StatusCode::CREATED);
        let own = Auth::Key(created.body["key"].as_str().unwrap().to_string());
        let id = created.body["api_key"]["id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/api-keys/{id}");
        app.call(Method::DELETE, &path, &own, None)
            .await
            .expect_problem(StatusCode::CONFLICT, "conflict");
        app.get("/api/v1/auth/session", &own)
            .await
            .expect(StatusCode::OK);
        app.call(Method::DELETE, &path, &admin, None)
            .await
            .expect(StatusCode::OK);

        let key = [("Idempotency-Key", "same-key-1")];
        let first = app
            .send(
                Method::POST,
                "/api/v1/lists",
                &admin,
                &key,
                Some(("application/json", json!({"name": "a"}).to_string())),
            )
            .await;
        first.expect(StatusCode::CREATED);
        app.send(
            Method::POST,
            "/api/v1/lists",
            &admin,
            &key,
            Some(("application/json", json!({"name": "b"}).to_string())),
        )
        .await
        .expect_problem(StatusCode::CONFLICT, "idempotency-key-reused");
    }
);

api_test!(
    campaigns_list_newest_first_and_cursors_follow_their_pattern,
    |app| async move {
        let editor = Auth::Key(app.key(app.org, Role::Owner).await);
        let list = app
            .post("/api/v1/lists", &editor, json!({"name": "l"}))
            .await;
        let list = list.body["id"].as_str().unwrap().to_string();
        let channel = app
            .post(
                "/api/v1/channels",
                &editor,
                json!({"name": "c", "kind": "sandbox"}),
            )
            .await;
        let channel = channel.body["id"].as_str().unwrap().to_string();
        let mut ids = Vec::new();
        for name in ["one", "two", "three"] {
            let r = app
                .post(
                    "/api/v1/campaigns",
                    &editor,
                    json!({"name": name, "list_id": list, "channel_id": channel, "body": "Hi"}),
                )
                .await;
            r.expect(StatusCode::CREATED);
            ids.push(r.body["id"].as_str().unwrap().to_string());
        }
        let first = app
            .get("/api/v1/campaigns?order=newest&limit=2", &editor)
            .await;
        first.expect(StatusCode::OK);
        let names: Vec<&str> = first.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["three", "two"]);
        let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
        assert!(cursor.starts_with("YWZ0ZXI6"), "{cursor}");
        let next = app
            .get(
                &format!("/api/v1/campaigns?order=newest&limit=2&cursor={cursor}"),
                &editor,
            )
            .await;
        assert_eq!(next.body["items"][0]["name"], "one", "{}", next.text);
        assert!(next.body["next_cursor"].is_null());
        let oldest = app.get("/api/v1/campaigns", &editor).await;
        assert_eq!(oldest.body["items"][0]["name"], "one");
        app.get("/api/v1/campaigns?cursor=bm9uc2Vuc2U", &editor)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid-cursor");
    }
);
