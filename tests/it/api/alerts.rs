//! Alert settings, the alert log and the test alert through the API, and the
//! organisation's auto-pause default (docs/ALERTS.md, docs/API.md), on both stores: the
//! rules answer 422 naming the field, another organisation's channel is refused, and what
//! is stored is what the next read and the CLI's store calls see.

use super::{Auth, api_test};
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use serde_json::json;

api_test!(
    alert_settings_round_trip_with_named_errors,
    |app| async move {
        let admin = Auth::Key(app.key(app.org, Role::Admin).await);
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let empty = app.get("/api/v1/alerts/settings", &viewer).await;
        empty.expect(StatusCode::OK);
        assert_eq!(empty.body["recipients"], json!([]));
        assert_eq!(empty.body["in_doubt_threshold"], 100);
        assert_eq!(empty.body["in_doubt_threshold_is_default"], true);

        // Without recipients, a test alert is a conflict that says what to do.
        let none = app.post("/api/v1/alerts/test", &admin, json!({})).await;
        none.expect_problem(StatusCode::CONFLICT, "conflict");
        assert!(
            none.text.contains("PUT /api/v1/alerts/settings"),
            "{}",
            none.text
        );

        let channel = app
            .post(
                "/api/v1/channels",
                &admin,
                json!({"name": "alerts", "kind": "sandbox", "config": {}}),
            )
            .await;
        channel.expect(StatusCode::CREATED);
        let channel_id = channel.body["id"].as_str().unwrap().to_string();

        let bad = app
            .call(
                Method::PUT,
                "/api/v1/alerts/settings",
                &admin,
                Some(json!({"channel_id": channel_id, "recipients": ["ops@example.org", "ops@"]})),
            )
            .await;
        bad.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(
            bad.body["errors"][0]["field"], "recipients[1]",
            "{}",
            bad.text
        );

        // Another organisation's channel names nothing here.
        let other_org = app.other_org;
        let theirs = app
            .db
            .store
            .create_channel(other_org, "theirs", "sandbox", &json!({}))
            .await
            .unwrap();
        let foreign = app
        .call(
            Method::PUT,
            "/api/v1/alerts/settings",
            &admin,
            Some(json!({"channel_id": channel_id, "fallback_channel_id": format!("{theirs}"), "recipients": []})),
        )
        .await;
        foreign.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(foreign.body["errors"][0]["field"], "fallback_channel_id");
        assert_eq!(foreign.body["errors"][0]["rule"], "exists");

        let viewer_put = app
            .call(
                Method::PUT,
                "/api/v1/alerts/settings",
                &viewer,
                Some(json!({"recipients": []})),
            )
            .await;
        viewer_put.expect(StatusCode::FORBIDDEN);

        let ok = app
            .call(
                Method::PUT,
                "/api/v1/alerts/settings",
                &admin,
                Some(json!({
                    "channel_id": channel_id,
                    "fallback_channel_id": null,
                    "in_doubt_threshold": 0,
                    "recipients": ["+1 415 555 0100", "ops@example.org", "+14155550100"],
                })),
            )
            .await;
        ok.expect(StatusCode::OK);
        assert_eq!(
            ok.body["recipients"],
            json!(["+14155550100", "ops@example.org"])
        );
        assert_eq!(ok.body["in_doubt_threshold"], 0);
        assert_eq!(ok.body["in_doubt_threshold_is_default"], false);
        assert_eq!(ok.body["channel_id"], channel_id);
        let stored = app.db.store.alert_settings(app.org).await.unwrap();
        assert_eq!(stored.recipients, ["+14155550100", "ops@example.org"]);
        assert_eq!(stored.in_doubt_threshold, Some(0));

        // PUT replaces: a recipient left out is removed.
        let replaced = app
            .call(
                Method::PUT,
                "/api/v1/alerts/settings",
                &admin,
                Some(json!({"channel_id": channel_id, "recipients": ["ops@example.org"]})),
            )
            .await;
        replaced.expect(StatusCode::OK);
        assert_eq!(replaced.body["recipients"], json!(["ops@example.org"]));
        assert_eq!(replaced.body["in_doubt_threshold_is_default"], true);

        let queued = app.post("/api/v1/alerts/test", &admin, json!({})).await;
        queued.expect(StatusCode::ACCEPTED);
        assert_eq!(queued.body["queued"], 1);
        let log = app.get("/api/v1/alerts?status=pending", &viewer).await;
        log.expect(StatusCode::OK);
        let items = log.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{}", log.text);
        assert_eq!(items[0]["event_type"], "alert.test");
        assert_eq!(items[0]["recipient"], "ops@example.org");
        assert!(items[0]["id"].as_str().unwrap().starts_with("alr_"));
        let bad_status = app.get("/api/v1/alerts?status=lost", &viewer).await;
        assert_eq!(
            bad_status.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            bad_status.text
        );
        // The other organisation sees none of it.
        let theirs_log = app
            .db
            .store
            .list_alerts(other_org, None, None, 10)
            .await
            .unwrap();
        assert!(theirs_log.is_empty());
    }
);

api_test!(the_organisations_auto_pause_default, |app| async move {
    let admin = Auth::Key(app.key(app.org, Role::Admin).await);
    let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
    let shown = app.get("/api/v1/organisation", &viewer).await;
    shown.expect(StatusCode::OK);
    assert_eq!(shown.body["id"], format!("{}", app.org));
    assert_eq!(shown.body["auto_pause"], "20%/500");
    assert_eq!(shown.body["auto_pause_source"], "default");
    let set = app
        .call(
            Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(json!({"auto_pause": "30%/200"})),
        )
        .await;
    set.expect(StatusCode::OK);
    assert_eq!(set.body["auto_pause"], "30%/200");
    assert_eq!(set.body["auto_pause_source"], "organisation");
    assert_eq!(
        app.db
            .store
            .org_auto_pause(app.org)
            .await
            .unwrap()
            .map(|a| a.to_string()),
        Some("30%/200".to_string())
    );
    let bad = app
        .call(
            Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(json!({"auto_pause": "30%/5"})),
        )
        .await;
    bad.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(bad.body["errors"][0]["field"], "auto_pause");
    let back = app
        .call(
            Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(json!({"auto_pause": "default"})),
        )
        .await;
    back.expect(StatusCode::OK);
    assert_eq!(back.body["auto_pause_source"], "default");
    let denied = app
        .call(
            Method::PATCH,
            "/api/v1/organisation",
            &viewer,
            Some(json!({"auto_pause": "off"})),
        )
        .await;
    denied.expect(StatusCode::FORBIDDEN);
});
