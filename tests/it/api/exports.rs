//! CSV exports over the API (issue 14, point 1): a campaign's messages (one row per
//! message, as many as its `total`, across pages), contacts and suppressions; outcome times
//! and reasons in the cells; formula cells neutralised; another organisation's campaign
//! not found.

use super::{Auth, Reply, TestApp, api_test, started_sandbox_campaign};
use axum::http::StatusCode;
use herald::domain::{MessageStatus, Role};
use herald::ids::{CampaignId, ChannelId, ListId};
use herald::store::{NewCampaign, Receipt};
use serde_json::json;
use std::collections::HashMap;

/// The CSV's header and its rows as maps from column to cell.
fn parse_csv(r: &Reply) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut reader = csv::Reader::from_reader(r.text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            assert_eq!(rec.len(), header.len(), "a short row: {rec:?}");
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_string))
                .collect()
        })
        .collect();
    (header, rows)
}

async fn started_campaign(app: &TestApp, list: ListId) -> (CampaignId, ChannelId) {
    started_sandbox_campaign(app, list, "export", "Hi {{ name }}").await
}

api_test!(
    a_campaign_export_has_each_message_with_its_reason_and_times,
    |app| async move {
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let store = &app.db.store;
        let list = app
            .post("/api/v1/lists", &editor, json!({"name": "export"}))
            .await;
        list.expect(StatusCode::CREATED);
        let list_id = list.body["id"].as_str().unwrap().to_string();
        let names = [
            "=HYPERLINK(\"http://evil.example\",\"x\")",
            "Ana",
            "Bo",
            "Cy",
            "Di",
        ];
        for (i, name) in names.iter().enumerate() {
            app.post(
                "/api/v1/contacts",
                &editor,
                json!({"address": format!("+1555010000{i}"), "name": name, "list_ids": [list_id]}),
            )
            .await
            .expect(StatusCode::CREATED);
        }
        let (id, channel) = started_campaign(&app, ListId::parse_lenient(&list_id).unwrap()).await;

        // Four of the five are sent or failed; the fifth stays queued.
        let now = herald::clock::now_ms();
        let claimed = store.claim(id, "A", now, now + 60_000, 4).await.unwrap();
        assert_eq!(claimed.len(), 4);
        let outcomes = crate::support::sent_or_failed(
            id,
            &claimed,
            "SBexport",
            "twilio 30003: Unreachable destination handset",
            |i| i == 2,
        );
        store.record_outcomes("A", now, &outcomes).await.unwrap();
        let receipt = |i: usize, status: MessageStatus| Receipt {
            channel_id: channel,
            provider_id: format!("SBexport{i}"),
            status,
            error: (status == MessageStatus::Undelivered)
                .then(|| "twilio 30005: Unknown destination handset".to_string()),
        };
        store
            .apply_receipts(
                &[
                    receipt(0, MessageStatus::Delivered),
                    receipt(1, MessageStatus::Read),
                    receipt(3, MessageStatus::Undelivered),
                ],
                now + 1,
            )
            .await
            .unwrap();

        let r = app
            .get(&format!("/api/v1/campaigns/{id}/messages.csv"), &viewer)
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.content_type(), "text/csv; charset=utf-8");
        assert_eq!(
            r.headers["content-disposition"],
            format!("attachment; filename=\"{id}-messages.csv\"")
        );
        let (header, rows) = parse_csv(&r);
        assert_eq!(header, herald::export::MESSAGE_COLUMNS);
        let campaign = app.get(&format!("/api/v1/campaigns/{id}"), &viewer).await;
        assert_eq!(
            rows.len() as u64,
            campaign.body["total"].as_u64().unwrap(),
            "{}",
            campaign.text
        );
        let by_id: HashMap<String, &HashMap<String, String>> =
            rows.iter().map(|r| (r["message_id"].clone(), r)).collect();
        let row = |i: usize| by_id[&claimed[i].id.to_string()];

        let delivered = row(0);
        assert_eq!(delivered["status"], "delivered");
        assert!(!delivered["sent_at"].is_empty() && !delivered["delivered_at"].is_empty());
        assert!(delivered["read_at"].is_empty() && delivered["failed_at"].is_empty());
        assert_eq!(delivered["provider_id"], "SBexport0");
        assert_eq!(delivered["error_code"], "");
        let read = row(1);
        assert_eq!(read["status"], "read");
        assert!(!read["delivered_at"].is_empty() && !read["read_at"].is_empty());
        let failed = row(2);
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error_code"], "twilio.30003");
        assert!(!failed["error_reason"].is_empty());
        assert_eq!(
            failed["error_detail"],
            "twilio 30003: Unreachable destination handset"
        );
        assert!(!failed["failed_at"].is_empty() && failed["sent_at"].is_empty());
        assert_eq!(failed["attempts"], "1");
        let undelivered = row(3);
        assert_eq!(undelivered["status"], "undelivered");
        assert_eq!(undelivered["error_code"], "twilio.30005");
        assert!(!undelivered["failed_at"].is_empty());
        let queued: Vec<_> = rows.iter().filter(|r| r["status"] == "queued").collect();
        assert_eq!(queued.len(), 1);

        // Every row names its contact; the formula name is neutralised, the phone number
        // (a plain number to a spreadsheet) is not touched.
        for r in &rows {
            assert!(r["contact_id"].starts_with("con_"), "{r:?}");
            assert!(r["address"].starts_with("+1555010000"), "{r:?}");
        }
        let names: Vec<&str> = rows.iter().map(|r| r["contact_name"].as_str()).collect();
        assert!(
            names.contains(&"'=HYPERLINK(\"http://evil.example\",\"x\")"),
            "{names:?}"
        );

        // Another organisation cannot read it, and an unknown id is a problem document.
        let other = Auth::Key(app.key(app.other_org, Role::Admin).await);
        app.get(&format!("/api/v1/campaigns/{id}/messages.csv"), &other)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        app.get("/api/v1/campaigns/cmp_999999/messages.csv", &viewer)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        app.get(&format!("/api/v1/campaigns/{id}/messages.csv"), &Auth::None)
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
);

api_test!(
    an_export_spans_pages_with_each_message_once,
    |app| async move {
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let store = &app.db.store;
        let list = store.ensure_list(app.org, "many").await.unwrap();
        let n = 2 * herald::export::PAGE_ROWS + 345;
        store.seed_contacts(app.org, list, n).await.unwrap();
        let (id, _) = started_campaign(&app, list).await;
        let r = app
            .get(&format!("/api/v1/campaigns/{id}/messages.csv"), &viewer)
            .await;
        r.expect(StatusCode::OK);
        let (_, rows) = parse_csv(&r);
        assert_eq!(rows.len() as i64, n);
        let total = store.campaign(id).await.unwrap().total;
        assert_eq!(rows.len() as i64, total);
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| {
                herald::ids::MessageId::parse_lenient(&r["message_id"])
                    .unwrap()
                    .get()
            })
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids in order, once each"
        );

        // An empty campaign (a draft) exports its header alone.
        let draft = store
            .create_campaign(
                &NewCampaign {
                    org_id: app.org,
                    name: "draft".into(),
                    channel_id: store.channel_by_name(app.org, "sandbox").await.unwrap().id,
                    list_id: list,
                    body: "Hi".into(),
                    scheduled_at: None,
                    whatsapp_template: None,
                    email: None,
                    send_window: None,
                },
                "test",
            )
            .await
            .unwrap();
        let r = app
            .get(&format!("/api/v1/campaigns/{draft}/messages.csv"), &viewer)
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.text, herald::export::MESSAGE_COLUMNS.join(",") + "\r\n");
    }
);

api_test!(
    contacts_and_suppressions_export_as_the_pages_filter_them,
    |app| async move {
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let list = app
            .post("/api/v1/lists", &editor, json!({"name": "vip"}))
            .await;
        let list_id = list.body["id"].as_str().unwrap().to_string();
        app.post(
            "/api/v1/contacts",
            &editor,
            json!({"address": "+15550100001", "name": "@Ana", "attributes": {"city": "Lisbon"}, "list_ids": [list_id]}),
        )
        .await
        .expect(StatusCode::CREATED);
        app.post(
            "/api/v1/contacts",
            &editor,
            json!({"address": "bo@example.com", "name": "Bo"}),
        )
        .await
        .expect(StatusCode::CREATED);
        app.post(
            "/api/v1/suppressions",
            &editor,
            json!({"address": "bo@example.com", "reason": "=bounced"}),
        )
        .await
        .expect(StatusCode::CREATED);

        let r = app.get("/api/v1/contacts.csv", &viewer).await;
        r.expect(StatusCode::OK);
        let (header, rows) = parse_csv(&r);
        assert_eq!(header, herald::export::CONTACT_COLUMNS);
        assert_eq!(rows.len(), 2, "{}", r.text);
        let ana = &rows[0];
        assert_eq!(ana["name"], "'@Ana");
        assert_eq!(ana["lists"], "vip");
        assert_eq!(ana["subscribed"], "true");
        assert_eq!(ana["attributes"], r#"{"city":"Lisbon"}"#);
        let bo = &rows[1];
        assert_eq!(bo["suppressed"], "true");
        assert_eq!(bo["subscribed"], "false");
        assert_eq!(bo["suppression_reason"], "'=bounced");

        let r = app
            .get(&format!("/api/v1/contacts.csv?list_id={list_id}"), &viewer)
            .await;
        let (_, rows) = parse_csv(&r);
        assert_eq!(rows.len(), 1);
        let r = app
            .get("/api/v1/contacts.csv?unsubscribed=true", &viewer)
            .await;
        let (_, rows) = parse_csv(&r);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["address"], "bo@example.com");
        app.get("/api/v1/contacts.csv?list_id=lst_999999", &viewer)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");

        let r = app.get("/api/v1/suppressions.csv", &viewer).await;
        r.expect(StatusCode::OK);
        let (header, rows) = parse_csv(&r);
        assert_eq!(header, herald::export::SUPPRESSION_COLUMNS);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["address"], "bo@example.com");

        // The other organisation sees none of it.
        let other = Auth::Key(app.key(app.other_org, Role::Viewer).await);
        let (_, rows) = parse_csv(&app.get("/api/v1/contacts.csv", &other).await);
        assert!(rows.is_empty());
        let (_, rows) = parse_csv(&app.get("/api/v1/suppressions.csv", &other).await);
        assert!(rows.is_empty());
    }
);
