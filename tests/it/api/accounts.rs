//! Users and API keys through the API.

use super::{Auth, api_test};
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use serde_json::json;

api_test!(
    users_are_created_with_roles_no_higher_than_the_callers,
    |app| async move {
        let admin = Auth::Key(app.key(app.org, Role::Admin).await);
        let created = app
            .post(
                "/api/v1/users",
                &admin,
                json!({"email": "Grace@Example.org", "role": "editor"}),
            )
            .await;
        created.expect(StatusCode::CREATED);
        assert_eq!(created.body["user"]["email"], "grace@example.org");
        let password = created.body["password"].as_str().unwrap().to_string();
        assert!(
            password.len() >= 12,
            "a generated one-time password: {password}"
        );
        let id = created.body["user"]["id"].as_str().unwrap().to_string();
        assert!(
            created
                .headers
                .get("location")
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(&id)
        );
        // The password works, and is stored only as an argon2id hash.
        let stored = app
            .db
            .store
            .user_credentials("grace@example.org")
            .await
            .unwrap()
            .unwrap();
        assert!(stored.password_hash.starts_with("$argon2id$"));
        assert!(!stored.password_hash.contains(&password));
        app.sign_in("grace@example.org", &password).await;

        // An admin cannot make owners, nor touch them.
        app.post(
            "/api/v1/users",
            &admin,
            json!({"email": "o@example.org", "role": "owner"}),
        )
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
        app.post(
            "/api/v1/users",
            &admin,
            json!({"email": "grace@example.org", "role": "viewer"}),
        )
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
        app.post(
            "/api/v1/users",
            &admin,
            json!({"email": "short@example.org", "role": "viewer", "password": "short"}),
        )
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        app.post(
            "/api/v1/users",
            &admin,
            json!({"email": "not-an-email", "role": "viewer"}),
        )
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");

        let listed = app.get("/api/v1/users", &admin).await;
        listed.expect(StatusCode::OK);
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
        app.call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            &admin,
            Some(json!({"role": "viewer"})),
        )
        .await
        .expect(StatusCode::OK);
        assert_eq!(
            app.get(&format!("/api/v1/users/{id}"), &admin).await.body["role"],
            "viewer"
        );
        app.call(Method::DELETE, &format!("/api/v1/users/{id}"), &admin, None)
            .await
            .expect(StatusCode::NO_CONTENT);
        app.get(&format!("/api/v1/users/{id}"), &admin)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
    }
);

api_test!(the_last_owner_stays, |app| async move {
    let owner = Auth::Key(app.key(app.org, Role::Owner).await);
    let created = app
        .post(
            "/api/v1/users",
            &owner,
            json!({"email": "own@example.org", "role": "owner"}),
        )
        .await;
    created.expect(StatusCode::CREATED);
    let id = created.body["user"]["id"].as_str().unwrap().to_string();
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        &owner,
        Some(json!({"role": "admin"})),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "conflict");
    app.call(Method::DELETE, &format!("/api/v1/users/{id}"), &owner, None)
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
    let second = app
        .post(
            "/api/v1/users",
            &owner,
            json!({"email": "own2@example.org", "role": "owner"}),
        )
        .await;
    second.expect(StatusCode::CREATED);
    app.call(Method::DELETE, &format!("/api/v1/users/{id}"), &owner, None)
        .await
        .expect(StatusCode::NO_CONTENT);
});

api_test!(
    api_keys_are_shown_once_stored_hashed_and_revocable,
    |app| async move {
        let admin = Auth::Key(app.key(app.org, Role::Admin).await);
        let created = app
            .post(
                "/api/v1/api-keys",
                &admin,
                json!({"name": "ci", "role": "editor"}),
            )
            .await;
        created.expect(StatusCode::CREATED);
        let key = created.body["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("hk_"));
        let id = created.body["api_key"]["id"].as_str().unwrap().to_string();
        assert_eq!(created.body["api_key"]["created_by"], "api_key:test-admin");
        let listed = app.get("/api/v1/api-keys", &admin).await;
        assert!(!listed.text.contains(&key), "listings never show the key");
        let fetched = app.get(&format!("/api/v1/api-keys/{id}"), &admin).await;
        assert!(!fetched.text.contains(&key));
        assert!(key.starts_with(fetched.body["prefix"].as_str().unwrap()));

        let ci = Auth::Key(key);
        let me = app.get("/api/v1/auth/session", &ci).await;
        me.expect(StatusCode::OK);
        assert_eq!(me.body["role"], "editor");
        assert_eq!(me.body["via"], "api_key");
        // An editor key cannot mint keys; an admin cannot mint owner keys.
        app.post(
            "/api/v1/api-keys",
            &ci,
            json!({"name": "x", "role": "viewer"}),
        )
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
        app.post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "x", "role": "owner"}),
        )
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");

        let revoked = app
            .call(
                Method::DELETE,
                &format!("/api/v1/api-keys/{id}"),
                &admin,
                None,
            )
            .await;
        revoked.expect(StatusCode::OK);
        assert!(revoked.body["revoked_at"].is_string());
        // Revoked is deleted: reading it back is 410, the list keeps it with revoked_at.
        let gone = app.get(&format!("/api/v1/api-keys/{id}"), &admin).await;
        gone.expect_problem(StatusCode::GONE, "gone");
        assert!(
            gone.body["detail"].as_str().unwrap().contains(&id),
            "{}",
            gone.text
        );
        let listed = app.get("/api/v1/api-keys", &admin).await;
        assert!(listed.text.contains(&id) && listed.text.contains("revoked_at"));
        app.get("/api/v1/auth/session", &ci)
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
);
