//! Message retention over the API (docs/CAMPAIGNS.md, "Retention"): once a campaign's
//! message rows are archived, its view carries `archived_at`, its stats (counters, outcome,
//! failure groups) and its CSV export are byte for byte what they were, its message list
//! answers 410 pointing at the export, and another organisation still finds nothing.

use super::{Auth, api_test, started_sandbox_campaign};
use axum::http::StatusCode;
use herald::config::Settings;
use herald::domain::Role;
use herald::engine::Engine;
use herald::engine::reconciler::archive_messages;
use herald::ids::ListId;
use serde_json::json;

api_test!(
    an_archived_campaign_reads_the_same_and_its_message_list_points_at_the_export,
    |app| async move {
        let editor = Auth::Key(app.key(app.org, Role::Editor).await);
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let stranger = Auth::Key(app.key(app.other_org, Role::Admin).await);
        let store = &app.db.store;
        let list = app
            .post("/api/v1/lists", &editor, json!({"name": "retention"}))
            .await;
        list.expect(StatusCode::CREATED);
        let list_id = list.body["id"].as_str().unwrap().to_string();
        for i in 0..12 {
            app.post(
                "/api/v1/contacts",
                &editor,
                json!({"address": format!("+1555020{i:04}"), "name": format!("Name {i}"), "list_ids": [list_id]}),
            )
            .await
            .expect(StatusCode::CREATED);
        }
        let (id, _) = started_sandbox_campaign(
            &app,
            ListId::parse_lenient(&list_id).unwrap(),
            "retention",
            "Hi {{ name }}",
        )
        .await;
        // Finished 40 days ago: three failed, the rest sent.
        let now = herald::clock::now_ms();
        let then = now - 40 * 24 * 3_600_000;
        let claimed = store
            .claim(id, "A", then, then + 60_000, 100)
            .await
            .unwrap();
        let outcomes = crate::support::sent_or_failed(
            id,
            &claimed,
            "SBret",
            "twilio 30003: Unreachable destination handset",
            |i| i % 4 == 0,
        );
        store.record_outcomes("A", then, &outcomes).await.unwrap();

        let csv_path = format!("/api/v1/campaigns/{id}/messages.csv");
        let view_path = format!("/api/v1/campaigns/{id}");
        let stats_path = format!("/api/v1/campaigns/{id}/stats");
        let list_path = format!("/api/v1/campaigns/{id}/messages");
        let csv_before = app.get(&csv_path, &viewer).await;
        csv_before.expect(StatusCode::OK);
        let stats_before = app.get(&stats_path, &viewer).await;
        stats_before.expect(StatusCode::OK);
        let view_before = app.get(&view_path, &viewer).await;
        assert_eq!(view_before.body["archived_at"], serde_json::Value::Null);
        app.get(&list_path, &viewer).await.expect(StatusCode::OK);

        let settings = Settings {
            message_retention_days: 30,
            ..Settings::default()
        };
        let engine = Engine::new(store.clone(), settings, "test");
        let report = archive_messages(&engine.context(), now).await.unwrap();
        assert_eq!(report.rows, 12);

        let view = app.get(&view_path, &viewer).await;
        view.expect(StatusCode::OK);
        assert_eq!(
            view.body["archived_at"].as_str(),
            Some(herald::clock::rfc3339(now).as_str())
        );
        for field in ["status", "outcome", "counters", "total", "completed_at"] {
            assert_eq!(view.body[field], view_before.body[field], "{field}");
        }
        let stats = app.get(&stats_path, &viewer).await;
        stats.expect(StatusCode::OK);
        for field in ["outcome", "counters", "failures", "progress"] {
            assert_eq!(stats.body[field], stats_before.body[field], "{field}");
        }
        assert_eq!(stats.body["failures"][0]["count"], 3);
        let csv = app.get(&csv_path, &viewer).await;
        csv.expect(StatusCode::OK);
        assert_eq!(csv.text, csv_before.text);

        let gone = app.get(&list_path, &viewer).await;
        gone.expect_problem(StatusCode::GONE, "gone");
        let detail = gone.body["detail"].as_str().unwrap();
        assert!(detail.contains("archived"), "{detail}");
        assert!(detail.contains("messages.csv"), "{detail}");

        // Another organisation: still not found, archive or not.
        app.get(&csv_path, &stranger)
            .await
            .expect(StatusCode::NOT_FOUND);
        app.get(&list_path, &stranger)
            .await
            .expect(StatusCode::NOT_FOUND);
    }
);
