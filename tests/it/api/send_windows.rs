//! Send windows over the API (issue 14, point 4), on both stores: set on a campaign and on
//! the organisation, shown with where it comes from, refused naming `send_window` and the
//! fix, changeable until the campaign ends, copied by a duplicate.

use super::{Auth, api_test};
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use serde_json::json;

api_test!(send_windows_through_the_api, |app| async move {
    let admin = Auth::Key(app.key(app.org, Role::Admin).await);
    let list = app
        .post("/api/v1/lists", &admin, json!({"name": "w"}))
        .await;
    let list_id = list.body["id"].as_str().unwrap().to_string();
    let channel = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({"name": "w-sms", "kind": "sandbox", "config": {}}),
        )
        .await;
    let channel_id = channel.body["id"].as_str().unwrap().to_string();
    let create = |window: serde_json::Value| {
        let mut body =
            json!({"name": "w", "list_id": list_id, "channel_id": channel_id, "body": "Hi"});
        if !window.is_null() {
            body["send_window"] = window;
        }
        body
    };

    // Refused, naming the field and the fix.
    for (bad, says) in [
        ("8-21", "two 24-hour local times"),
        ("08:00-08:00", "same time"),
        ("08:00-21:00 Mars/Base", "IANA time zone"),
    ] {
        let r = app
            .post("/api/v1/campaigns", &admin, create(json!(bad)))
            .await;
        r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(r.body["errors"][0]["field"], "send_window", "{}", r.text);
        assert!(r.text.contains(says), "{bad}: {}", r.text);
    }

    // Its own, in canonical form; none; the organisation's.
    let own = app
        .post("/api/v1/campaigns", &admin, create(json!("9:00-17:00")))
        .await;
    own.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    let own = app
        .post(
            "/api/v1/campaigns",
            &admin,
            create(json!("09:00-24:00 Europe/Lisbon")),
        )
        .await;
    own.expect(StatusCode::CREATED);
    assert_eq!(own.body["send_window"], "09:00-00:00 Europe/Lisbon");
    assert_eq!(own.body["send_window_source"], "campaign");
    assert!(own.body["waiting"].is_null());
    let plain = app
        .post("/api/v1/campaigns", &admin, create(json!(null)))
        .await;
    assert!(plain.body["send_window"].is_null());
    assert_eq!(plain.body["send_window_source"], "none");
    let r = app
        .call(
            Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(json!({"send_window": "08:00-21:00"})),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["send_window"], "08:00-21:00");
    let plain_id = plain.body["id"].as_str().unwrap().to_string();
    let r = app
        .get(&format!("/api/v1/campaigns/{plain_id}"), &admin)
        .await;
    assert_eq!(
        (&r.body["send_window"], &r.body["send_window_source"]),
        (&json!("08:00-21:00"), &json!("organisation"))
    );
    // `off` for one campaign; `inherit` back.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{plain_id}"),
            &admin,
            Some(json!({"send_window": "off"})),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(
        (&r.body["send_window"], &r.body["send_window_source"]),
        (&json!(null), &json!("none"))
    );
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{plain_id}"),
            &admin,
            Some(json!({"send_window": "inherit"})),
        )
        .await;
    assert_eq!(r.body["send_window_source"], "organisation", "{}", r.text);
    // A duplicate keeps the parent's own window.
    let own_id = own.body["id"].as_str().unwrap().to_string();
    let dup = app
        .post(
            &format!("/api/v1/campaigns/{own_id}/duplicate"),
            &admin,
            json!({}),
        )
        .await;
    dup.expect(StatusCode::CREATED);
    assert_eq!(
        dup.body["send_window"], "09:00-00:00 Europe/Lisbon",
        "{}",
        dup.text
    );
    // The organisation's: `off` removes it; `inherit` is a campaign's word, not its.
    let r = app
        .call(
            Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(json!({"send_window": "inherit"})),
        )
        .await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(json!({"send_window": "off"})),
        )
        .await;
    assert!(r.body["send_window"].is_null(), "{}", r.text);
    // An ended campaign's window no longer changes.
    app.post(
        &format!("/api/v1/campaigns/{plain_id}/start"),
        &admin,
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{plain_id}"),
            &admin,
            Some(json!({"send_window": "08:00-09:00"})),
        )
        .await;
    r.expect(StatusCode::CONFLICT);
});
