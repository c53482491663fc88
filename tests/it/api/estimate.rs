//! The estimate before a campaign starts (issue 14, point 6) and channel prices, over the
//! API on both stores: recipients and skips as the start counts them, segments, UCS-2 and
//! the characters that force it, cost by prefix, duration at the rate.

use super::{Auth, TestApp, api_test};
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use serde_json::{Value, json};

const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";

async fn contact(app: &TestApp, auth: &Auth, address: &str, name: &str, list: &str) -> String {
    let r = app
        .post(
            "/api/v1/contacts",
            auth,
            json!({"address": address, "name": name, "list_ids": [list]}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    r.body["id"].as_str().unwrap().to_string()
}

api_test!(
    an_estimate_counts_what_the_start_will_send,
    |app| async move {
        let admin = Auth::Key(app.key(app.org, Role::Admin).await);
        let channel = app
            .post(
                "/api/v1/channels",
                &admin,
                json!({"name": "sms", "kind": "twilio", "rate_per_sec": 10.0,
                       "config": {"account_sid": TWILIO_SID, "from": "+15017122661"},
                       "secrets": {"auth_token": "tok-very-secret-0123456789"}}),
            )
            .await;
        channel.expect(StatusCode::CREATED);
        let channel_id = channel.body["id"].as_str().unwrap().to_string();
        assert!(channel.body["pricing"].is_null());

        // Prices: bad ones are refused naming the problem; good ones are shown back.
        let pricing = format!("/api/v1/channels/{channel_id}/pricing");
        for (bad, says) in [
            (
                json!({"currency": "dollars", "per_unit": "0.01"}),
                "currency",
            ),
            (
                json!({"currency": "USD", "prefixes": {"44": "0.04"}}),
                "prefix",
            ),
            (
                json!({"currency": "USD", "per_unit": "0.0000001"}),
                "six decimals",
            ),
            (json!({"currency": "USD"}), "give a price"),
        ] {
            let r = app.call(Method::PUT, &pricing, &admin, Some(bad)).await;
            r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
            assert!(r.text.contains(says), "{says}: {}", r.text);
        }
        let r = app
            .call(
                Method::PUT,
                &pricing,
                &admin,
                Some(json!({"currency": "usd", "per_unit": "0.0079", "prefixes": {"+44": "0.04"}})),
            )
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(
            r.body["pricing"],
            json!({"currency": "USD", "per_unit": "0.0079", "prefixes": {"+44": "0.04"}})
        );
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        app.call(
            Method::PUT,
            &pricing,
            &editor,
            Some(json!({"currency": "USD", "per_unit": "1"})),
        )
        .await
        .expect(StatusCode::FORBIDDEN);

        let list = app
            .post("/api/v1/lists", &admin, json!({"name": "estimate"}))
            .await;
        let list_id = list.body["id"].as_str().unwrap().to_string();
        contact(&app, &admin, "+15550300001", "Ana", &list_id).await;
        contact(&app, &admin, "+447700900001", "José’s", &list_id).await;
        let unsubscribed = contact(&app, &admin, "+15550300003", "Bo", &list_id).await;
        contact(&app, &admin, "+15550300004", "Cy", &list_id).await;
        contact(&app, &admin, "em@example.com", "Em", &list_id).await;
        contact(&app, &admin, "+15550300006", &"x".repeat(170), &list_id).await;
        app.call(
            Method::PATCH,
            &format!("/api/v1/contacts/{unsubscribed}"),
            &admin,
            Some(json!({"unsubscribed": true})),
        )
        .await
        .expect(StatusCode::OK);
        app.post(
            "/api/v1/suppressions",
            &admin,
            json!({"address": "+15550300004", "reason": "STOP"}),
        )
        .await
        .expect(StatusCode::CREATED);
        let campaign = app
            .post(
                "/api/v1/campaigns",
                &admin,
                json!({"name": "Estimate me", "list_id": list_id, "channel_id": channel_id, "body": "Hi {{ name }}"}),
            )
            .await;
        campaign.expect(StatusCode::CREATED);
        let id = campaign.body["id"].as_str().unwrap().to_string();

        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let r = app
            .get(&format!("/api/v1/campaigns/{id}/estimate"), &viewer)
            .await;
        r.expect(StatusCode::OK);
        let e = &r.body;
        assert_eq!(e["audience"], 6, "{}", r.text);
        assert_eq!(e["recipients"], 3, "{}", r.text);
        assert_eq!(
            e["skipped"],
            json!({"unsubscribed": 1, "suppressed": 1, "unusable_address": 1})
        );
        assert_eq!(e["rendered"], 3);
        assert_eq!(e["render_failures"], 0);
        assert_eq!(e["counts_segments"], true);
        assert_eq!(e["units"], 4, "1 + 1 + 2 segments: {}", r.text);
        assert_eq!(e["recipients_by_segments"], json!({"1": 2, "2": 1}));
        assert_eq!(e["ucs2_recipients"], 1);
        assert_eq!(
            e["ucs2_characters"],
            json!([{"character": "’", "code_point": "U+2019", "recipients": 1, "replacement": "'"}])
        );
        // 0.0079 × 1 (US) + 0.04 × 1 (UK) + 0.0079 × 2 (US, two segments).
        assert_eq!(
            e["cost"],
            json!({"currency": "USD", "total": "0.0637", "unpriced_recipients": 0})
        );
        assert_eq!(e["rate_per_sec"], 10.0);
        assert_eq!(e["duration_secs"], 0.4);

        // The start agrees with the estimate.
        let started = app
            .post(&format!("/api/v1/campaigns/{id}/start"), &admin, json!({}))
            .await;
        started.expect(StatusCode::OK);
        let counters: &Value = &started.body["counters"];
        assert_eq!(counters["queued"], e["recipients"], "{}", started.text);
        assert_eq!(counters["skipped"], 3, "{}", started.text);
        app.get(&format!("/api/v1/campaigns/{id}/estimate"), &viewer)
            .await
            .expect_problem(StatusCode::CONFLICT, "conflict");

        // Another organisation sees neither the estimate nor the prices.
        let other = Auth::Key(app.key(app.other_org, Role::Admin).await);
        app.get(&format!("/api/v1/campaigns/{id}/estimate"), &other)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        app.call(
            Method::PUT,
            &pricing,
            &other,
            Some(json!({"currency": "USD", "per_unit": "1"})),
        )
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
        let cleared = app.call(Method::DELETE, &pricing, &admin, None).await;
        cleared.expect(StatusCode::OK);
        assert!(cleared.body["pricing"].is_null());
    }
);
