//! Resend, duplicate, and editing or unscheduling a scheduled campaign, over the API
//! (issue 14, point 2), on both stores.

use super::{Auth, TestApp, api_test, started_sandbox_campaign};
use axum::http::{Method, StatusCode};
use herald::domain::{MessageStatus, Role};
use herald::ids::{CampaignId, ListId};
use herald::store::Receipt;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// A started campaign on the sandbox channel to `n` new contacts (API-made, each with a
/// name), and the contacts' ids in message order.
async fn started(app: &TestApp, editor: &Auth, n: usize) -> (CampaignId, Vec<String>) {
    let list = app
        .post(
            "/api/v1/lists",
            editor,
            json!({"name": format!("l-{:08x}", rand::random::<u32>())}),
        )
        .await;
    list.expect(StatusCode::CREATED);
    let list_id = list.body["id"].as_str().unwrap().to_string();
    let mut contacts = Vec::new();
    for i in 0..n {
        let c = app
            .post(
                "/api/v1/contacts",
                editor,
                json!({"address": format!("+1555020{i:04}"), "name": format!("C{i}"), "list_ids": [list_id]}),
            )
            .await;
        c.expect(StatusCode::CREATED);
        contacts.push(c.body["id"].as_str().unwrap().to_string());
    }
    let (id, _) = started_sandbox_campaign(
        app,
        ListId::parse_lenient(&list_id).unwrap(),
        "Spring sale",
        "Hi {{ name }}",
    )
    .await;
    (id, contacts)
}

async fn list_members(app: &TestApp, auth: &Auth, list_id: &str) -> BTreeSet<String> {
    let r = app
        .get(
            &format!("/api/v1/contacts?list_id={list_id}&limit=500"),
            auth,
        )
        .await;
    r.expect(StatusCode::OK);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

api_test!(
    a_resend_targets_exactly_the_failed_and_undelivered_recipients,
    |app| async move {
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        let store = &app.db.store;
        let (id, contacts) = started(&app, &editor, 7).await;
        let channel = store.channel_by_name(app.org, "sandbox").await.unwrap().id;

        // Outcomes by position: 0 delivered, 1 failed, 2 failed (then suppressed), 3
        // undelivered, 4 sent, 5 failed (then its contact deleted), 6 failed (then
        // unsubscribed).
        let now = herald::clock::now_ms();
        let claimed = store.claim(id, "A", now, now + 60_000, 100).await.unwrap();
        assert_eq!(claimed.len(), 7);
        let failed = [1, 2, 5, 6];
        let outcomes = crate::support::sent_or_failed(
            id,
            &claimed,
            "SBresend",
            "twilio 21211: Invalid 'To' Phone Number",
            |i| failed.contains(&i),
        );
        store.record_outcomes("A", now, &outcomes).await.unwrap();
        let receipt = |i: usize, status| Receipt {
            channel_id: channel,
            provider_id: format!("SBresend{i}"),
            status,
            error: None,
        };
        store
            .apply_receipts(
                &[
                    receipt(0, MessageStatus::Delivered),
                    receipt(3, MessageStatus::Undelivered),
                ],
                now + 1,
            )
            .await
            .unwrap();
        // Messages are created in contact order; map each message to its contact by the
        // export's contact_id.
        let contact_of = |i: usize| -> String {
            let m = &claimed[i];
            m.contact_id.map(|c| c.to_string()).unwrap()
        };
        assert_eq!(
            (0..7).map(contact_of).collect::<BTreeSet<_>>(),
            contacts.iter().cloned().collect::<BTreeSet<_>>()
        );
        app.post(
            "/api/v1/suppressions",
            &editor,
            json!({"address": claimed[2].address.to_string(), "reason": "complaint"}),
        )
        .await
        .expect(StatusCode::CREATED);
        app.call(
            Method::DELETE,
            &format!("/api/v1/contacts/{}", contact_of(5)),
            &editor,
            None,
        )
        .await
        .expect(StatusCode::NO_CONTENT);
        app.call(
            Method::PATCH,
            &format!("/api/v1/contacts/{}", contact_of(6)),
            &editor,
            Some(json!({"unsubscribed": true})),
        )
        .await
        .expect(StatusCode::OK);

        let r = app
            .post(
                &format!("/api/v1/campaigns/{id}/resend"),
                &editor,
                json!({}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let new_id = r.body["campaign"]["id"].as_str().unwrap().to_string();
        assert_eq!(r.headers["location"], format!("/api/v1/campaigns/{new_id}"));
        assert_eq!(r.body["matched"], 5, "{}", r.text);
        assert_eq!(r.body["recipients"], 2, "{}", r.text);
        assert_eq!(r.body["left_out_opted_out"], 2, "{}", r.text);
        assert_eq!(r.body["left_out_contact_deleted"], 1, "{}", r.text);
        let c = &r.body["campaign"];
        assert_eq!(c["status"], "draft");
        assert_eq!(c["name"], "Spring sale (resend)");
        assert_eq!(c["body"], "Hi {{ name }}");
        assert_eq!(c["parent"], json!({"id": id.to_string(), "kind": "resend"}));
        let members = list_members(&app, &editor, c["list_id"].as_str().unwrap()).await;
        assert_eq!(members, BTreeSet::from([contact_of(1), contact_of(3)]));

        // Started, it sends to exactly those two.
        app.post(
            &format!("/api/v1/campaigns/{new_id}/start"),
            &editor,
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
        let sent = app
            .get(&format!("/api/v1/campaigns/{new_id}/messages"), &editor)
            .await;
        let addresses: BTreeSet<String> = sent.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["address"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            addresses,
            BTreeSet::from([
                claimed[1].address.to_string(),
                claimed[3].address.to_string()
            ])
        );

        // The parent lists it; its audit trail says what it is.
        let derived = app
            .get(&format!("/api/v1/campaigns/{id}/derived"), &editor)
            .await;
        derived.expect(StatusCode::OK);
        assert_eq!(derived.body["items"][0]["id"], new_id.as_str());
        assert_eq!(derived.body["items"][0]["kind"], "resend");
        let audit = app
            .get(&format!("/api/v1/campaigns/{new_id}/audit"), &editor)
            .await;
        let first = audit.body["items"][0]["reason"].as_str().unwrap();
        assert!(first.contains(&format!("resend of {id}")), "{first}");

        // Another set of statuses: the delivered and the sent one.
        let r = app
            .post(
                &format!("/api/v1/campaigns/{id}/resend"),
                &editor,
                json!({"statuses": ["delivered", "sent"], "name": "Thanks"}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.body["recipients"], 2, "{}", r.text);
        assert_eq!(r.body["campaign"]["name"], "Thanks");
        let members = list_members(
            &app,
            &editor,
            r.body["campaign"]["list_id"].as_str().unwrap(),
        )
        .await;
        assert_eq!(members, BTreeSet::from([contact_of(0), contact_of(4)]));

        // Nobody to resend to: refused, and nothing is created.
        let lists_before = app.get("/api/v1/lists", &editor).await.body["items"]
            .as_array()
            .unwrap()
            .len();
        let none = app
            .post(
                &format!("/api/v1/campaigns/{id}/resend"),
                &editor,
                json!({"statuses": ["cancelled"]}),
            )
            .await;
        none.expect_problem(StatusCode::CONFLICT, "conflict");
        assert!(
            none.text.contains("no recipient to resend to"),
            "{}",
            none.text
        );
        let lists_after = app.get("/api/v1/lists", &editor).await.body["items"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(lists_after, lists_before);

        // Bad input, refusals, and another organisation.
        let bad = app
            .post(
                &format!("/api/v1/campaigns/{id}/resend"),
                &editor,
                json!({"statuses": ["queued"]}),
            )
            .await;
        bad.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert!(bad.text.contains("statuses"), "{}", bad.text);
        let draft = app
            .post(
                &format!("/api/v1/campaigns/{id}/duplicate"),
                &editor,
                json!({}),
            )
            .await;
        draft.expect(StatusCode::CREATED);
        let draft_id = draft.body["id"].as_str().unwrap();
        app.post(
            &format!("/api/v1/campaigns/{draft_id}/resend"),
            &editor,
            json!({}),
        )
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
        let other = Auth::Key(app.key(app.other_org, Role::Admin).await);
        app.post(&format!("/api/v1/campaigns/{id}/resend"), &other, json!({}))
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        app.post(
            &format!("/api/v1/campaigns/{id}/duplicate"),
            &other,
            json!({}),
        )
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        app.post(
            &format!("/api/v1/campaigns/{id}/resend"),
            &viewer,
            json!({}),
        )
        .await
        .expect(StatusCode::FORBIDDEN);
    }
);

api_test!(
    a_duplicate_is_a_draft_with_the_same_settings,
    |app| async move {
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        let (id, _) = started(&app, &editor, 2).await;
        let parent = app.get(&format!("/api/v1/campaigns/{id}"), &editor).await;
        let r = app
            .call(
                Method::POST,
                &format!("/api/v1/campaigns/{id}/duplicate"),
                &editor,
                None,
            )
            .await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.body["status"], "draft");
        assert_eq!(r.body["name"], "Copy of Spring sale");
        for field in ["body", "list_id", "channel_id", "auto_pause"] {
            assert_eq!(r.body[field], parent.body[field], "{field}");
        }
        assert_eq!(r.body["parent"]["kind"], "duplicate");
        assert_eq!(r.body["total"], 0);
        let named = app
            .post(
                &format!("/api/v1/campaigns/{id}/duplicate"),
                &editor,
                json!({"name": "  "}),
            )
            .await;
        named.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    }
);

api_test!(
    a_scheduled_campaign_can_be_edited_rescheduled_and_unscheduled,
    |app| async move {
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        let store = &app.db.store;
        let list = store.ensure_list(app.org, "sched").await.unwrap();
        store.seed_contacts(app.org, list, 3).await.unwrap();
        let channel = store.channel_by_name(app.org, "sandbox").await.unwrap().id;
        let in_a_day = herald::clock::rfc3339(herald::clock::now_ms() + 86_400_000);
        let r = app
            .post(
                "/api/v1/campaigns",
                &editor,
                json!({"name": "Later", "list_id": list.to_string(), "channel_id": channel.to_string(),
                       "body": "Hi", "scheduled_at": in_a_day}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let id = r.body["id"].as_str().unwrap().to_string();
        assert_eq!(r.body["status"], "scheduled");

        let edited = app
            .call(
                Method::PATCH,
                &format!("/api/v1/campaigns/{id}"),
                &editor,
                Some(json!({"name": "Later still", "body": "Hello"})),
            )
            .await;
        edited.expect(StatusCode::OK);
        assert_eq!(edited.body["status"], "scheduled");
        assert_eq!(edited.body["body"], "Hello");

        let in_two_days = herald::clock::rfc3339(herald::clock::now_ms() + 2 * 86_400_000);
        let moved = app
            .post(
                &format!("/api/v1/campaigns/{id}/schedule"),
                &editor,
                json!({"at": in_two_days}),
            )
            .await;
        moved.expect(StatusCode::OK);

        let back = app
            .call(
                Method::POST,
                &format!("/api/v1/campaigns/{id}/unschedule"),
                &editor,
                None,
            )
            .await;
        back.expect(StatusCode::OK);
        assert_eq!(back.body["status"], "draft");
        assert!(back.body["scheduled_at"].is_null());
        app.call(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/unschedule"),
            &editor,
            None,
        )
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");

        let audit = app
            .get(&format!("/api/v1/campaigns/{id}/audit"), &editor)
            .await;
        let trail: Vec<(Value, Value, String)> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["from"].clone(),
                    e["to"].clone(),
                    e["reason"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(trail.len(), 4, "{trail:?}");
        assert_eq!(trail[1].0, "scheduled");
        assert_eq!(trail[1].1, "scheduled");
        assert!(trail[1].2.starts_with("edited: name, body"), "{trail:?}");
        assert!(trail[2].2.starts_with("rescheduled for"), "{trail:?}");
        assert_eq!(
            (trail[3].0.clone(), trail[3].1.clone()),
            (json!("scheduled"), json!("draft"))
        );

        // A started campaign is no longer editable or unschedulable.
        app.post(&format!("/api/v1/campaigns/{id}/start"), &editor, json!({}))
            .await
            .expect(StatusCode::OK);
        app.call(
            Method::PATCH,
            &format!("/api/v1/campaigns/{id}"),
            &editor,
            Some(json!({"name": "Too late"})),
        )
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
        app.call(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/unschedule"),
            &editor,
            None,
        )
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
    }
);
