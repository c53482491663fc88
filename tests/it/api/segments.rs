//! Segments (issue 14, point 5; docs/SEGMENTS.md) over the API on both stores: every
//! operator means the same on SQLite and PostgreSQL, the count before saving equals the
//! recipients at start, the start freezes them, and bad filters are refused naming the
//! field and the fix.

use super::{Auth, TestApp, api_test};
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use serde_json::{Value, json};

async fn contact(app: &TestApp, auth: &Auth, address: &str, body: Value) -> String {
    let mut body = body;
    body["address"] = json!(address);
    let r = app.post("/api/v1/contacts", auth, body).await;
    r.expect(StatusCode::CREATED);
    r.body["id"].as_str().unwrap().to_string()
}

async fn list(app: &TestApp, auth: &Auth, name: &str) -> String {
    let r = app
        .post("/api/v1/lists", auth, json!({ "name": name }))
        .await;
    r.expect(StatusCode::CREATED);
    r.body["id"].as_str().unwrap().to_string()
}

/// The names of the contacts `filter` matches, through `GET /contacts?filter=`, after
/// checking that `POST /segments/count` says as many.
async fn matching(app: &TestApp, auth: &Auth, filter: &str) -> Vec<String> {
    let count = app
        .post("/api/v1/segments/count", auth, json!({ "filter": filter }))
        .await;
    count.expect(StatusCode::OK);
    let path = format!("/api/v1/contacts?limit=100&filter={}", url_escape(filter));
    let r = app.get(&path, auth).await;
    r.expect(StatusCode::OK);
    let mut names: Vec<String> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    assert_eq!(
        count.body["contacts"],
        json!(names.len()),
        "{filter}: count and listing disagree"
    );
    names
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

api_test!(segments_filter_count_and_freeze, |app| async move {
    let admin = Auth::Key(app.key(app.org, Role::Admin).await);
    let news = list(&app, &admin, "News").await;
    let staff = list(&app, &admin, "Staff").await;
    // Attributes as the JSON API stores them (numbers, booleans) and as a CSV import does
    // (text, with spaces): both read the same.
    contact(
        &app,
        &admin,
        "+15550400001",
        json!({"name": "Ann Lee", "list_ids": [news],
        "attributes": {"plan": "gold", "age": 34, "renewal": "2026-03-01", "vip": true}}),
    )
    .await;
    let bob = contact(&app, &admin, "+15550400002", json!({"name": "Bob", "list_ids": [news],
        "attributes": {"plan": "silver", "age": "29", "renewal": "2025-12-01T10:00:00Z", "vip": false}})).await;
    contact(
        &app,
        &admin,
        "+15550400003",
        json!({"name": "Carla Ann", "list_ids": [news],
        "attributes": {"plan": "GOLD", "age": " 41 ", "score": 2.5}}),
    )
    .await;
    contact(
        &app,
        &admin,
        "+15550400004",
        json!({"name": "Dan", "list_ids": [news],
        "attributes": {"plan": "", "age": "x41", "first name": "Daniel"}}),
    )
    .await;
    contact(
        &app,
        &admin,
        "eve@example.com",
        json!({"name": "Eve", "list_ids": [staff],
        "attributes": {"plan": "gold", "age": 41.0}}),
    )
    .await;
    contact(
        &app,
        &admin,
        "+15550400006",
        // A 400-digit text is no number (PostgreSQL's float8 would overflow), on both.
        json!({"attributes": {"plan": "50%_off", "score": "1".repeat(400)}}),
    )
    .await;

    let cases: &[(&str, &[&str])] = &[
        ("attributes.plan = \"gold\"", &["Ann Lee", "Eve"]),
        (
            "attributes.plan != \"gold\"",
            &["", "Bob", "Carla Ann", "Dan"],
        ),
        (
            "attributes.plan contains \"GoL\"",
            &["Ann Lee", "Carla Ann", "Eve"],
        ),
        ("attributes.plan contains \"%_\"", &[""]),
        (
            "attributes.plan in (\"silver\", \"GOLD\")",
            &["Bob", "Carla Ann"],
        ),
        (
            "attributes.plan exists",
            &["", "Ann Lee", "Bob", "Carla Ann", "Eve"],
        ),
        ("not attributes.plan exists", &["Dan"]),
        ("attributes.age >= 34", &["Ann Lee", "Carla Ann", "Eve"]),
        ("attributes.age = 41", &["Carla Ann", "Eve"]),
        ("attributes.age < 30", &["Bob"]),
        ("attributes.age in (29, 34)", &["Ann Lee", "Bob"]),
        ("attributes.score > 2", &["Carla Ann"]),
        ("attributes.vip = true", &["Ann Lee"]),
        ("attributes.vip = false", &["Bob"]),
        ("attributes.renewal < 2026-01-01", &["Bob"]),
        ("attributes.renewal >= 2026-01-01", &["Ann Lee"]),
        ("attributes.\"first name\" = \"Daniel\"", &["Dan"]),
        ("name contains \"ann\"", &["Ann Lee", "Carla Ann"]),
        (
            "name = \"Bob\" or address contains \"@example\"",
            &["Bob", "Eve"],
        ),
        ("name exists and not name contains \"a\"", &["Bob", "Eve"]),
        ("list = \"Staff\"", &["Eve"]),
        ("list != \"News\"", &["", "Eve"]),
        (
            "list in (\"News\", \"Staff\") and attributes.plan = \"gold\"",
            &["Ann Lee", "Eve"],
        ),
        (
            "(list = \"News\" or list = \"Staff\") and (attributes.age > 40 or attributes.vip = true)",
            &["Ann Lee", "Carla Ann", "Eve"],
        ),
        (
            "created since 1d and updated since 2026-01-01",
            &["", "Ann Lee", "Bob", "Carla Ann", "Dan", "Eve"],
        ),
        ("created < 2020-01-01", &[]),
        ("created <= 1m", &[]),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            matching(&app, &admin, filter).await,
            expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{filter}"
        );
    }
    // `updated` tells a contact changed after a moment from the others, which `created`
    // does not: Bob's plan changes after it.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let moment = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.call(
        Method::PATCH,
        &format!("/api/v1/contacts/{bob}"),
        &admin,
        Some(json!({"attributes": {"plan": "gold"}})),
    )
    .await
    .expect(StatusCode::OK);
    for (filter, expected) in [
        (format!("updated since {moment}"), vec!["Bob"]),
        (
            format!("updated < {moment}"),
            vec!["", "Ann Lee", "Carla Ann", "Dan", "Eve"],
        ),
        (format!("created since {moment}"), vec![]),
        (
            format!("updated > {moment} and attributes.plan = \"gold\""),
            vec!["Bob"],
        ),
    ] {
        assert_eq!(matching(&app, &admin, &filter).await, expected, "{filter}");
    }
    // Bob's plan back, for the counts below.
    app.call(
        Method::PATCH,
        &format!("/api/v1/contacts/{bob}"),
        &admin,
        Some(json!({"attributes": {"plan": "silver"}})),
    )
    .await
    .expect(StatusCode::OK);

    // Bad filters: 422 naming the field, the place and the fix; the contacts list says 400.
    for (filter, field, says) in [
        ("plan = \"gold\"", "plan", "attributes.plan"),
        ("attributes.age >= \"x\"", "attributes.age", "number"),
        ("name = gold", "name", "\"gold\""),
        ("created = 2026-01-01", "created", "since"),
        ("(name exists", "filter", "not closed"),
        ("list = \"Nope\"", "list", "no list named \"Nope\""),
    ] {
        let r = app
            .post(
                "/api/v1/segments/count",
                &admin,
                json!({ "filter": filter }),
            )
            .await;
        r.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(
            r.body["errors"][0]["field"], "filter",
            "{filter}: {}",
            r.text
        );
        let detail = r.body["errors"][0]["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("`{field}`")) || field == "filter",
            "{filter}: {detail}"
        );
        assert!(detail.contains(says), "{filter}: {detail}");
        let r = app
            .get(
                &format!("/api/v1/contacts?filter={}", url_escape(filter)),
                &admin,
            )
            .await;
        r.expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
    }
    let long = format!("name = \"{}\"", "x".repeat(5000));
    app.post("/api/v1/segments/count", &admin, json!({ "filter": long }))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");

    // A segment: saved in canonical form, counted live, its members read live.
    let r = app
        .post(
            "/api/v1/lists",
            &admin,
            json!({"name": "Gold SMS", "filter": "attributes.plan = \"gold\"  AND address contains \"+\""}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let segment = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.body["filter"],
        "attributes.plan = \"gold\" and address contains \"+\""
    );
    assert_eq!(r.body["members"], 1);
    let members = app
        .get(&format!("/api/v1/lists/{segment}/members"), &admin)
        .await;
    members.expect(StatusCode::OK);
    assert_eq!(members.body["items"].as_array().unwrap().len(), 1);
    // Its members are its filter's: none are added or removed by hand.
    let someone = members.body["items"][0]["id"].as_str().unwrap().to_string();
    app.post(
        &format!("/api/v1/lists/{segment}/members"),
        &admin,
        json!({ "contact_ids": [someone] }),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "conflict");
    app.call(
        Method::DELETE,
        &format!("/api/v1/lists/{segment}/members/{someone}"),
        &admin,
        None,
    )
    .await
    .expect(StatusCode::CONFLICT);
    let r = app
        .post(
            "/api/v1/contacts",
            &admin,
            json!({"address": "+15550400099", "list_ids": [segment]}),
        )
        .await;
    r.expect(StatusCode::CONFLICT);
    // A list has no filter to change; a segment's changes.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/lists/{news}"),
            &admin,
            Some(json!({"filter": "name exists"})),
        )
        .await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/lists/{segment}"),
            &admin,
            Some(json!({"filter": "attributes.plan contains \"gold\" and list = \"News\""})),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["members"], 2, "{}", r.text);
    let lists = app.get("/api/v1/lists", &admin).await;
    let listed = lists.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == json!(segment))
        .cloned()
        .unwrap();
    assert_eq!(listed["members"], 2);
    assert!(listed["filter_problem"].is_null());

    // A campaign on the segment: the estimate and the start count what the segment
    // counted; a contact that matches later is not added.
    let channel = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({"name": "segment-sms", "kind": "sandbox", "config": {}}),
        )
        .await;
    channel.expect(StatusCode::CREATED);
    let channel_id = channel.body["id"].as_str().unwrap();
    let campaign = app
        .post(
            "/api/v1/campaigns",
            &admin,
            json!({"name": "Gold", "list_id": segment, "channel_id": channel_id, "body": "Hi {{ name }}, {{ plan }}"}),
        )
        .await;
    campaign.expect(StatusCode::CREATED);
    let id = campaign.body["id"].as_str().unwrap().to_string();
    let estimate = app
        .get(&format!("/api/v1/campaigns/{id}/estimate"), &admin)
        .await;
    estimate.expect(StatusCode::OK);
    assert_eq!(estimate.body["audience"], 2, "{}", estimate.text);
    app.post(&format!("/api/v1/campaigns/{id}/start"), &admin, json!({}))
        .await
        .expect(StatusCode::OK);
    contact(
        &app,
        &admin,
        "+15550400007",
        json!({"name": "Late", "list_ids": [news],
        "attributes": {"plan": "gold"}}),
    )
    .await;
    let started = app.get(&format!("/api/v1/campaigns/{id}"), &admin).await;
    assert_eq!(started.body["total"], 2, "{}", started.text);
    let events = app
        .get(&format!("/api/v1/campaigns/{id}/audit"), &admin)
        .await;
    assert!(
        events.text.contains(
            "the contacts matching attributes.plan contains \\\"gold\\\" and list = \\\"News\\\""
        ),
        "{}",
        events.text
    );
    let r = app
        .post(
            "/api/v1/segments/count",
            &admin,
            json!({"filter": "attributes.plan contains \"gold\" and list = \"News\""}),
        )
        .await;
    assert_eq!(r.body["contacts"], 3);

    // A segment naming a list that is gone says so, and a campaign on it is not started.
    let r = app
        .post(
            "/api/v1/lists",
            &admin,
            json!({"name": "Staff gold", "filter": "list = \"Staff\""}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let staff_gold = r.body["id"].as_str().unwrap().to_string();
    let campaign = app
        .post(
            "/api/v1/campaigns",
            &admin,
            json!({"name": "Staff", "list_id": staff_gold, "channel_id": channel_id, "body": "Hi"}),
        )
        .await;
    campaign.expect(StatusCode::CREATED);
    let staff_campaign = campaign.body["id"].as_str().unwrap().to_string();
    app.call(
        Method::PATCH,
        &format!("/api/v1/lists/{staff}"),
        &admin,
        Some(json!({"name": "Team"})),
    )
    .await
    .expect(StatusCode::OK);
    let r = app
        .get(&format!("/api/v1/lists/{staff_gold}"), &admin)
        .await;
    assert!(
        r.body["filter_problem"]
            .as_str()
            .is_some_and(|p| p.contains("no list named \"Staff\"")),
        "{}",
        r.text
    );
    let r = app
        .post(
            &format!("/api/v1/campaigns/{staff_campaign}/start"),
            &admin,
            json!({}),
        )
        .await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("edit the segment"), "{}", r.text);
    let draft = app
        .get(&format!("/api/v1/campaigns/{staff_campaign}"), &admin)
        .await;
    assert_eq!(draft.body["status"], "draft");

    // Another organisation's lists are not seen by name.
    let other_admin = Auth::Key(app.key(app.other_org, Role::Admin).await);
    let r = app
        .post(
            "/api/v1/segments/count",
            &other_admin,
            json!({"filter": "list = \"News\""}),
        )
        .await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .post(
            "/api/v1/segments/count",
            &other_admin,
            json!({"filter": "attributes.plan exists"}),
        )
        .await;
    assert_eq!(r.body["contacts"], 0);
});
