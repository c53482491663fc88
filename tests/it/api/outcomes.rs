//! The outcome and the stored throughput over the API (issue 11): null until the campaign
//! ends, the same in the campaign, its stats and the live stream; the per-minute history
//! at `/campaigns/{id}/throughput`, also once the campaign has ended.

use super::{Auth, TestApp, api_test, started_sandbox_campaign};
use axum::http::StatusCode;
use herald::domain::Role;
use herald::ids::CampaignId;
use herald::store::{Outcome, OutcomeKind};

async fn campaign(app: &TestApp, n: i64) -> CampaignId {
    let list = app
        .db
        .store
        .ensure_list(app.org, &format!("l-{:08x}", rand::random::<u32>()))
        .await
        .unwrap();
    app.db.store.seed_contacts(app.org, list, n).await.unwrap();
    started_sandbox_campaign(app, list, "outcome", "Hi").await.0
}

api_test!(outcome_and_throughput_over_the_api, |app| async move {
    let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
    let store = &app.db.store;
    let id = campaign(&app, 4).await;
    let path = format!("/api/v1/campaigns/{id}");
    let r = app.get(&path, &viewer).await;
    r.expect(StatusCode::OK);
    assert!(r.body["outcome"].is_null(), "{}", r.text);
    assert_eq!(r.body["counters"]["processed"], 0, "{}", r.text);

    let now = herald::clock::now_ms();
    let ms = store.claim(id, "A", now, now + 60_000, 100).await.unwrap();
    let outcomes: Vec<Outcome> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| Outcome {
            message_id: m.id,
            campaign_id: id,
            attempt: None,
            kind: if i == 0 {
                OutcomeKind::Sent {
                    provider_id: format!("p-{}", m.id),
                }
            } else {
                OutcomeKind::Failed {
                    error: "connection refused".into(),
                }
            },
        })
        .collect();
    store.record_outcomes("A", now, &outcomes).await.unwrap();

    let r = app.get(&path, &viewer).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["status"], "completed", "{}", r.text);
    assert_eq!(r.body["outcome"], "partially_failed", "{}", r.text);
    assert_eq!(r.body["counters"]["processed"], 4, "{}", r.text);
    let stats = app.get(&format!("{path}/stats"), &viewer).await;
    stats.expect(StatusCode::OK);
    assert_eq!(stats.body["outcome"], "partially_failed", "{}", stats.text);
    assert_eq!(stats.body["counters"], r.body["counters"]);

    let t = app.get(&format!("{path}/throughput"), &viewer).await;
    t.expect(StatusCode::OK);
    assert_eq!(t.body["id"], format!("{id}"));
    let minutes = t.body["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 1, "{}", t.text);
    assert_eq!(minutes[0]["sent"], 1);
    assert_eq!(minutes[0]["failed"], 3);
    assert_eq!(
        minutes[0]["minute"],
        herald::clock::rfc3339(herald::store::minute_of(now))
    );

    // The list shows it too; another organisation sees nothing.
    let list = app.get("/api/v1/campaigns", &viewer).await;
    list.expect(StatusCode::OK);
    let item = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == format!("{id}"))
        .cloned()
        .unwrap();
    assert_eq!(item["outcome"], "partially_failed");
    let other = Auth::Key(app.key(app.other_org, Role::Viewer).await);
    app.get(&format!("{path}/throughput"), &other)
        .await
        .expect(StatusCode::NOT_FOUND);
});
