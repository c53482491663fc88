//! Errors a marketer can read (issue 11, point 5): provider codes explained on every
//! message, failures grouped by reason in the stats, no stale error on a message that
//! reached its recipient, and suppressed contacts shown as suppressed.

use super::{Auth, TestApp, api_test};
use axum::http::{Method, StatusCode};
use herald::address::Address;
use herald::domain::{MessageStatus, Role};
use herald::ids::{CampaignId, ChannelId, MessageId};
use herald::store::{ContactInput, Outcome, OutcomeKind, Receipt};
use serde_json::{Value, json};

const MINUTE: i64 = 60_000;

fn outcome(id: MessageId, campaign_id: CampaignId, kind: OutcomeKind) -> Outcome {
    Outcome {
        message_id: id,
        campaign_id,
        attempt: None,
        kind,
    }
}

fn failed(error: &str) -> OutcomeKind {
    OutcomeKind::Failed {
        error: error.to_string(),
    }
}

fn sent(provider_id: &str) -> OutcomeKind {
    OutcomeKind::Sent {
        provider_id: provider_id.to_string(),
    }
}

fn receipt(
    channel_id: ChannelId,
    provider_id: &str,
    status: MessageStatus,
    error: Option<&str>,
) -> Receipt {
    Receipt {
        channel_id,
        provider_id: provider_id.to_string(),
        status,
        error: error.map(str::to_string),
    }
}

/// Every message of the campaign, by address.
async fn messages_by_address(
    app: &TestApp,
    auth: &Auth,
    campaign: &str,
) -> std::collections::BTreeMap<String, Value> {
    let r = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/messages?limit=100"),
            auth,
        )
        .await;
    r.expect(StatusCode::OK);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["address"].as_str().unwrap().to_string(), m.clone()))
        .collect()
}

api_test!(
    failures_read_as_reasons_grouped_and_success_clears_them,
    |app| async move {
        let store = &app.db.store;
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        let channel = store.channel_by_name(app.org, "sandbox").await.unwrap().id;
        let list = store.ensure_list(app.org, "seven").await.unwrap();
        store.seed_contacts(app.org, list, 7).await.unwrap();
        let r = app
            .post(
                "/api/v1/campaigns",
                &editor,
                json!({"name": "Seven", "channel_id": format!("{channel}"), "list_id": format!("{list}"), "body": "Hi"}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let cid = r.body["id"].as_str().unwrap().to_string();
        let id: i64 = cid[4..].parse().unwrap();
        app.call(
            Method::POST,
            &format!("/api/v1/campaigns/{cid}/start"),
            &editor,
            None,
        )
        .await
        .expect(StatusCode::OK);

        // No engine runs: the test plays it, through the store's own statements.
        let t = herald::clock::now_ms();
        let m = store
            .claim(CampaignId(id), "A", t, t + MINUTE, 100)
            .await
            .unwrap();
        assert_eq!(m.len(), 7);
        let addr = |i: usize| m[i].address.to_string();
        let report = store
            .record_outcomes(
                "A",
                t + 1,
                &[
                    // Fails once, then is sent and delivered: no stale error.
                    outcome(
                        m[0].id,
                        CampaignId(id),
                        OutcomeKind::Retry {
                            error: "sandbox: simulated transient failure (503)".into(),
                            next_attempt_at: t + 2,
                        },
                    ),
                    outcome(m[1].id, CampaignId(id), failed("twilio 30005: Unknown destination handset")),
                    outcome(
                        m[2].id,
                        CampaignId(id),
                        failed("gave up after 3 attempts: twilio 30003: Unreachable destination handset"),
                    ),
                    outcome(m[3].id, CampaignId(id), failed("twilio 30005: Unknown destination")),
                    outcome(m[4].id, CampaignId(id), sent("SM4")),
                    outcome(
                        m[5].id,
                        CampaignId(id),
                        failed("whatsapp 131026/2494010: Message undeliverable"),
                    ),
                    outcome(m[6].id, CampaignId(id), sent("SM6")),
                ],
            )
            .await
            .unwrap();
        assert_eq!(report.applied, 7);
        // While it waits, the retrying message shows the readable reason.
        let before = messages_by_address(&app, &viewer, &cid).await;
        assert_eq!(before[&addr(0)]["status"], "retry_wait");
        assert_eq!(before[&addr(0)]["error"]["code"], "sandbox.transient");
        assert_eq!(
            before[&addr(0)]["error"]["detail"],
            "sandbox: simulated transient failure (503)"
        );

        let again = store
            .claim(CampaignId(id), "A", t + 3, t + MINUTE, 100)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, m[0].id);
        store
            .record_outcomes("A", t + 4, &[outcome(m[0].id, CampaignId(id), sent("SM0"))])
            .await
            .unwrap();
        store
            .apply_receipts(
                &[
                    receipt(channel, "SM0", MessageStatus::Delivered, None),
                    receipt(
                        channel,
                        "SM4",
                        MessageStatus::Undelivered,
                        Some("twilio 30007"),
                    ),
                    // Failed, then read after all (receipts out of order): read wins, and
                    // the failure's error goes with it.
                    receipt(channel, "SM6", MessageStatus::Failed, Some("twilio 30008")),
                ],
                t + 5,
            )
            .await
            .unwrap();
        let mid = messages_by_address(&app, &viewer, &cid).await;
        assert_eq!(mid[&addr(6)]["status"], "failed");
        assert_eq!(mid[&addr(6)]["error"]["code"], "twilio.30008");
        store
            .apply_receipts(&[receipt(channel, "SM6", MessageStatus::Read, None)], t + 6)
            .await
            .unwrap();

        let msgs = messages_by_address(&app, &viewer, &cid).await;
        for i in [0, 6] {
            let m = &msgs[&addr(i)];
            assert!(m["status"] == "delivered" || m["status"] == "read", "{m}");
            assert_eq!(m["last_error"], Value::Null, "{m}");
            assert_eq!(m["error"], Value::Null, "{m}");
        }
        // The store agrees: the success cleared the earlier error.
        let stored = crate::support::message(store, CampaignId(id), m[0].id).await;
        assert_eq!(stored.status, MessageStatus::Delivered);
        assert_eq!(stored.last_error, None);

        let one = &msgs[&addr(1)];
        assert_eq!(one["status"], "failed");
        assert_eq!(one["error"]["code"], "twilio.30005");
        assert_eq!(one["error"]["reason"], "Unknown or inactive number");
        assert_eq!(
            one["error"]["detail"],
            "twilio 30005: Unknown destination handset"
        );
        assert_eq!(one["last_error"], one["error"]["detail"]);
        assert!(!one["error"]["action"].as_str().unwrap().is_empty());
        assert_eq!(
            msgs[&addr(2)]["error"]["reason"],
            "Unreachable handset: the phone is off or out of coverage; retried later"
        );
        assert_eq!(msgs[&addr(4)]["status"], "undelivered");
        assert_eq!(msgs[&addr(4)]["error"]["code"], "twilio.30007");
        assert_eq!(msgs[&addr(5)]["error"]["code"], "whatsapp.131026");

        let stats = app
            .get(&format!("/api/v1/campaigns/{cid}/stats"), &viewer)
            .await;
        stats.expect(StatusCode::OK);
        let groups: Vec<(String, i64)> = stats.body["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                assert!(!g["reason"].as_str().unwrap().is_empty(), "{g}");
                assert!(!g["action"].as_str().unwrap().is_empty(), "{g}");
                (
                    g["code"].as_str().unwrap().to_string(),
                    g["count"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                ("twilio.30005".to_string(), 2),
                ("twilio.30003".to_string(), 1),
                ("twilio.30007".to_string(), 1),
                ("whatsapp.131026".to_string(), 1),
            ],
            "{}",
            stats.text
        );
        let counters = &stats.body["counters"];
        let total: i64 = groups.iter().map(|g| g.1).sum();
        assert_eq!(
            total,
            counters["failed"].as_i64().unwrap() + counters["undelivered"].as_i64().unwrap(),
            "{}",
            stats.text
        );
        assert_eq!(
            stats.body["failures"][0]["reason"],
            "Unknown or inactive number"
        );
    }
);

api_test!(
    suppressed_contacts_show_as_suppressed_with_reason_and_time,
    |app| async move {
        let store = &app.db.store;
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let list = store.ensure_list(app.org, "people").await.unwrap();
        let contact = |address: &str| ContactInput {
            address: Address::parse(address).unwrap(),
            name: None,
            attributes: serde_json::Map::new(),
            unsubscribed: None,
        };
        store
            .upsert_contacts(
                app.org,
                list,
                &[contact("+15550000101"), contact("+15550000102")],
            )
            .await
            .unwrap();
        let before = herald::clock::now_ms();
        let reason =
            "opted out at the provider: twilio 21610: Attempt to send to unsubscribed recipient";
        assert!(
            store
                .suppress(
                    app.org,
                    "+15550000101",
                    reason,
                    &herald::store::OptSource::API
                )
                .await
                .unwrap()
        );
        // The same address suppressed in another organisation says nothing about ours.
        assert!(
            store
                .suppress(
                    app.other_org,
                    "+15550000102",
                    "complained",
                    &herald::store::OptSource::API
                )
                .await
                .unwrap()
        );

        let page = app.get("/api/v1/contacts?limit=10", &viewer).await;
        page.expect(StatusCode::OK);
        let items = page.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{}", page.text);
        let by: std::collections::BTreeMap<&str, &Value> = items
            .iter()
            .map(|c| (c["address"].as_str().unwrap(), c))
            .collect();
        let stopped = by["+15550000101"];
        assert_eq!(stopped["unsubscribed"], false);
        assert_eq!(stopped["suppressed"]["reason"], reason, "{stopped}");
        let since = stopped["suppressed"]["since"].as_str().unwrap();
        let since_ms = chrono::DateTime::parse_from_rfc3339(since)
            .unwrap()
            .timestamp_millis();
        assert!(since_ms >= before - 1000, "{since}");
        assert_eq!(by["+15550000102"]["suppressed"], Value::Null);

        let id = stopped["id"].as_str().unwrap();
        let one = app.get(&format!("/api/v1/contacts/{id}"), &viewer).await;
        one.expect(StatusCode::OK);
        assert_eq!(one.body["suppressed"]["reason"], reason);
        assert_eq!(one.body["suppressed"]["since"], since);

        // Lifted: the contact is no longer shown as suppressed.
        assert!(
            store
                .unsuppress(app.org, "+15550000101", &herald::store::OptSource::API)
                .await
                .unwrap()
        );
        let one = app.get(&format!("/api/v1/contacts/{id}"), &viewer).await;
        assert_eq!(one.body["suppressed"], Value::Null, "{}", one.text);
    }
);
