//! The replies inbox over the API (issue 14, point 3): conversations and replies of the
//! caller's organisation only, with their filters and pages; marking read needs an editor;
//! the organisation's help reply.

use super::{Auth, api_test};
use axum::http::StatusCode;
use herald::domain::Role;
use herald::store::InboundMessage;
use serde_json::json;

fn inbound(from: &str, body: &str, id: &str) -> InboundMessage {
    InboundMessage {
        from: from.into(),
        body: body.into(),
        provider_message_id: Some(id.into()),
        keyword: None,
        auto_reply: None,
        auto_reply_status: None,
    }
}

api_test!(
    conversations_and_replies_of_the_organisation,
    |app| async move {
        let store = &app.db.store;
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        let channel = crate::support::sandbox_channel(store, "sms").await;
        let (ann, bob) = ("+15550100001", "+15550100002");
        for (from, body, id) in [
            (ann, "Is the sale on Sunday too?", "SM1"),
            (bob, "Wrong number", "SM2"),
            (ann, "And Monday?", "SM3"),
        ] {
            store
                .record_webhook_with_inbound(
                    channel,
                    "twilio-inbound",
                    "test",
                    "",
                    &[inbound(from, body, id)],
                )
                .await
                .unwrap();
        }

        // Newest conversation first, with its counts and last reply.
        let r = app.get("/api/v1/conversations", &viewer).await;
        r.expect(StatusCode::OK);
        let items = r.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{}", r.body);
        assert_eq!(items[0]["address"], ann);
        assert_eq!(items[0]["replies"], 2);
        assert_eq!(items[0]["unread"], 2);
        assert_eq!(items[0]["last"]["body"], "And Monday?");
        assert!(items[0]["last"]["id"].as_str().unwrap().starts_with("rpl_"));
        // Pages.
        let first = app.get("/api/v1/conversations?limit=1", &viewer).await;
        let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
        let second = app
            .get(
                &format!("/api/v1/conversations?limit=1&cursor={cursor}"),
                &viewer,
            )
            .await;
        assert_eq!(second.body["items"][0]["address"], bob, "{}", second.body);
        assert!(second.body["next_cursor"].is_null());
        // One sender's replies, newest first; a search.
        let r = app
            .get("/api/v1/replies?address=%2B15550100001", &viewer)
            .await;
        let bodies: Vec<&str> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies, ["And Monday?", "Is the sale on Sunday too?"]);
        let r = app.get("/api/v1/replies?q=wrong", &viewer).await;
        assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
        assert_eq!(r.body["items"][0]["from"], bob);

        // Another organisation sees nothing and marks nothing read.
        let other = store.create_organisation("inbox-stranger").await.unwrap();
        let stranger = Auth::Key(app.key(other, Role::Owner).await);
        let r = app.get("/api/v1/conversations", &stranger).await;
        assert_eq!(r.body["items"], json!([]));
        let r = app
            .get("/api/v1/replies?address=%2B15550100001", &stranger)
            .await;
        assert_eq!(r.body["items"], json!([]));
        let r = app
            .post("/api/v1/replies/read", &stranger, json!({"address": ann}))
            .await;
        assert_eq!(r.body["marked"], 0);

        // Marking read needs an editor; then the conversation is no longer unread.
        app.post("/api/v1/replies/read", &viewer, json!({"address": ann}))
            .await
            .expect(StatusCode::FORBIDDEN);
        let r = app
            .post("/api/v1/replies/read", &editor, json!({"address": ann}))
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["marked"], 2);
        let r = app.get("/api/v1/conversations?unread=true", &viewer).await;
        let unread: Vec<&str> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap())
            .collect();
        assert_eq!(unread, [bob]);

        // Bad input names the parameter.
        app.get(&format!("/api/v1/replies?q={}", "x".repeat(201)), &viewer)
            .await
            .expect(StatusCode::BAD_REQUEST);
        app.get("/api/v1/replies?cursor=nonsense", &viewer)
            .await
            .expect(StatusCode::BAD_REQUEST);
        app.get("/api/v1/conversations?campaign_id=cmp_x", &viewer)
            .await
            .expect(StatusCode::BAD_REQUEST);
        // A campaign that is not the organisation's has no replies here.
        let r = app
            .get("/api/v1/replies?campaign_id=cmp_999", &viewer)
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["items"], json!([]));
    }
);

api_test!(the_organisation_sets_its_help_reply, |app| async move {
    let admin = Auth::Key(app.key(app.org, Role::Admin).await);
    let r = app.get("/api/v1/organisation", &admin).await;
    assert!(r.body["help_reply"].is_null(), "{}", r.body);
    let r = app
        .call(
            axum::http::Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(
                json!({"help_reply": "  Acme: call +1 415 555 0100. Reply STOP to unsubscribe.  "}),
            ),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(
        r.body["help_reply"],
        "Acme: call +1 415 555 0100. Reply STOP to unsubscribe."
    );
    let r = app
        .call(
            axum::http::Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(json!({"help_reply": "x".repeat(1601)})),
        )
        .await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("help_reply"), "{}", r.text);
    let r = app
        .call(
            axum::http::Method::PATCH,
            "/api/v1/organisation",
            &admin,
            Some(json!({"help_reply": ""})),
        )
        .await;
    assert!(r.body["help_reply"].is_null(), "{}", r.body);
    let editor = Auth::Key(app.key(app.org, Role::Editor).await);
    app.call(
        axum::http::Method::PATCH,
        "/api/v1/organisation",
        &editor,
        Some(json!({"help_reply": "x"})),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
});
