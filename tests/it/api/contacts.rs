//! Contacts, lists, list members, CSV import and suppressions over the HTTP API: what a
//! customer's system relies on, and that nothing of another organisation is ever visible.

use super::{Auth, Reply, TestApp, api_test};
use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, header};
use herald::domain::Role;
use herald::ids::ListId;
use herald::store::NewCampaign;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

async fn editor(app: &TestApp) -> Auth {
    Auth::Key(app.key(app.org, Role::Editor).await)
}

#[track_caller]
fn field_error(reply: &Reply, field: &str, rule: &str) {
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.text);
    assert_eq!(reply.body["errors"][0]["rule"], rule, "{}", reply.text);
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap().to_string()
}

async fn create_contact(app: &TestApp, auth: &Auth, body: Value) -> String {
    let r = app.post("/api/v1/contacts", auth, body).await;
    r.expect(StatusCode::CREATED);
    id_of(&r)
}

async fn create_list(app: &TestApp, auth: &Auth, name: &str) -> String {
    let r = app.post("/api/v1/lists", auth, json!({"name": name})).await;
    r.expect(StatusCode::CREATED);
    id_of(&r)
}

/// Every item of a paginated collection, following `next_cursor`; asserts page sizes.
async fn walk(app: &TestApp, auth: &Auth, path: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let r = app.get(&url, auth).await;
        r.expect(StatusCode::OK);
        let page = r.body["items"].as_array().unwrap().clone();
        assert!(page.len() <= limit, "{}", r.text);
        items.extend(page.clone());
        match r.body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(
                    page.len(),
                    limit,
                    "a page before the last is full: {}",
                    r.text
                );
                cursor = Some(c.to_string());
            }
            None => return items,
        }
    }
    panic!("pagination of {path} did not end");
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn csv(body: &str) -> Option<(&'static str, String)> {
    Some(("text/csv", body.to_string()))
}

async fn import(app: &TestApp, auth: &Auth, list: &str, body: &str) -> Reply {
    app.send(
        Method::POST,
        &format!("/api/v1/contacts/import?list={list}"),
        auth,
        &[],
        csv(body),
    )
    .await
}

api_test!(
    contacts_are_created_read_changed_and_deleted,
    |app| async move {
        let auth = editor(&app).await;
        let list = create_list(&app, &auth, "customers").await;
        let created = app
            .post(
                "/api/v1/contacts",
                &auth,
                json!({
                    "address": " +1 (415) 555-0100 ",
                    "name": "Ada Lovelace",
                    "attributes": {"city": "London", "orders": 3, "vip": true},
                    "list_ids": [list],
                }),
            )
            .await;
        created.expect(StatusCode::CREATED);
        let id = id_of(&created);
        assert!(id.starts_with("con_"), "{id}");
        assert_eq!(created.body["address"], "+14155550100");
        assert_eq!(created.body["name"], "Ada Lovelace");
        assert_eq!(
            created.body["attributes"],
            json!({"city": "London", "orders": 3, "vip": true})
        );
        assert_eq!(created.body["unsubscribed"], false);
        assert_eq!(created.body["list_ids"], json!([list]));
        assert!(created.body["created_at"].as_str().unwrap().ends_with('Z'));
        let location = created.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(location, format!("/api/v1/contacts/{id}"));

        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        let got = app.get(&location, &viewer).await;
        got.expect(StatusCode::OK);
        assert_eq!(got.body, created.body);

        // The same recipient spelled differently is the same contact.
        let dup = app
            .post(
                "/api/v1/contacts",
                &auth,
                json!({"address": "0014155550100"}),
            )
            .await;
        dup.expect_problem(StatusCode::CONFLICT, "conflict");
        assert!(
            dup.body["detail"]
                .as_str()
                .unwrap()
                .contains("+14155550100"),
            "{}",
            dup.text
        );

        // PATCH: attributes are replaced as a whole; absent fields stay.
        let changed = app
            .call(
                Method::PATCH,
                &location,
                &auth,
                Some(json!({"attributes": {"city": "Paris"}, "unsubscribed": true})),
            )
            .await;
        changed.expect(StatusCode::OK);
        assert_eq!(changed.body["attributes"], json!({"city": "Paris"}));
        assert_eq!(changed.body["unsubscribed"], true);
        assert_eq!(changed.body["name"], "Ada Lovelace");
        let cleared = app
            .call(Method::PATCH, &location, &auth, Some(json!({"name": null})))
            .await;
        cleared.expect(StatusCode::OK);
        assert_eq!(cleared.body["name"], Value::Null);
        assert_eq!(cleared.body["attributes"], json!({"city": "Paris"}));
        // The address is not changeable.
        let readdress = app
            .call(
                Method::PATCH,
                &location,
                &auth,
                Some(json!({"address": "+14155550199"})),
            )
            .await;
        readdress.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(readdress.body["errors"][0]["field"], "address");

        // A viewer reads but does not write.
        app.call(Method::DELETE, &location, &viewer, None)
            .await
            .expect_problem(StatusCode::FORBIDDEN, "forbidden");
        app.call(Method::DELETE, &location, &auth, None)
            .await
            .expect(StatusCode::NO_CONTENT);
        app.get(&location, &auth)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        app.call(Method::DELETE, &location, &auth, None)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        // Deleting it removed it from the list.
        let l = app.get(&format!("/api/v1/lists/{list}"), &auth).await;
        l.expect(StatusCode::OK);
        assert_eq!(l.body["members"], 0);
        // The address is free again.
        create_contact(&app, &auth, json!({"address": "+14155550100"})).await;
    }
);

api_test!(
    contact_validation_names_the_field_and_the_rule,
    |app| async move {
        let auth = editor(&app).await;
        let post = |body: Value| {
            let app = &app;
            let auth = &auth;
            async move { app.post("/api/v1/contacts", auth, body).await }
        };
        field_error(
            &post(json!({"address": "not an address"})).await,
            "address",
            "format",
        );
        field_error(
            &post(json!({"address": "+1415"})).await,
            "address",
            "format",
        );
        field_error(
            &post(json!({"address": "ada@example"})).await,
            "address",
            "format",
        );
        field_error(&post(json!({"name": "Ada"})).await, "address", "required");
        let unknown = post(json!({"address": "+14155550100", "colour": "red"})).await;
        unknown.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(unknown.body["errors"][0]["field"], "colour");
        field_error(
            &post(json!({"address": "+14155550100", "name": "x".repeat(201)})).await,
            "name",
            "max_length",
        );
        field_error(
            &post(json!({"address": "+14155550100", "attributes": ["a"]})).await,
            "attributes",
            "type",
        );
        field_error(
            &post(json!({"address": "+14155550100", "attributes": {"pet": {"kind": "cat"}}})).await,
            "attributes.pet",
            "type",
        );
        field_error(
            &post(json!({"address": "+14155550100", "attributes": {"bio": "x".repeat(1001)}}))
                .await,
            "attributes.bio",
            "max_length",
        );
        let unknown_list =
            post(json!({"address": "+14155550100", "list_ids": ["lst_999999"]})).await;
        field_error(&unknown_list, "list_ids", "exists");
        assert!(
            unknown_list.text.contains("lst_999999"),
            "{}",
            unknown_list.text
        );
        field_error(
            &post(json!({"address": "+14155550100", "list_ids": ["nonsense"]})).await,
            "list_ids",
            "exists",
        );
        // Nothing was created by the refused requests.
        let all = app.get("/api/v1/contacts", &auth).await;
        all.expect(StatusCode::OK);
        assert_eq!(all.body["items"], json!([]));
        // PATCH validates the same way.
        let id = create_contact(&app, &auth, json!({"address": "ada@Example.ORG"})).await;
        let got = app.get(&format!("/api/v1/contacts/{id}"), &auth).await;
        assert_eq!(got.body["address"], "ada@example.org");
        let bad = app
            .call(
                Method::PATCH,
                &format!("/api/v1/contacts/{id}"),
                &auth,
                Some(json!({"attributes": {"n": null}})),
            )
            .await;
        field_error(&bad, "attributes.n", "type");
        let bad = app
            .call(
                Method::PATCH,
                &format!("/api/v1/contacts/{id}"),
                &auth,
                Some(json!({"name": "a\u{7}b"})),
            )
            .await;
        field_error(&bad, "name", "format");
        // Malformed ids name nothing.
        app.get("/api/v1/contacts/lst_1", &auth)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        app.get("/api/v1/contacts/con_999999", &auth)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
    }
);

api_test!(
    contacts_are_searched_filtered_and_paginated,
    |app| async move {
        let auth = editor(&app).await;
        let vip = create_list(&app, &auth, "vip").await;
        let people = [
            ("+14155550101", Some("Ada Lovelace"), false, true),
            ("+14155550102", Some("Grace Hopper"), true, false),
            ("ada@example.org", None, false, false),
            ("+14155550104", Some("Alan Turing"), false, true),
            ("+4930123456", Some("Émile 100%"), true, false),
            ("linus@example.org", Some("Linus"), false, false),
            ("+14155550107", None, false, true),
        ];
        let mut created = Vec::new();
        for (address, name, unsubscribed, in_vip) in people {
            let mut body = json!({"address": address, "unsubscribed": unsubscribed});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if in_vip {
                body["list_ids"] = json!([vip]);
            }
            created.push(create_contact(&app, &auth, body).await);
        }
        // Seven contacts, three per page: every one exactly once, in creation order.
        let all = walk(&app, &auth, "/api/v1/contacts", 3).await;
        assert_eq!(ids(&all), created);
        let all = walk(&app, &auth, "/api/v1/contacts", 7).await;
        assert_eq!(ids(&all), created);

        // Search: case-insensitive, in the address or the name; `%` is literal.
        let search = |q: &str| format!("/api/v1/contacts?q={q}");
        let ada = walk(&app, &auth, &search("ADA"), 10).await;
        assert_eq!(ids(&ada), vec![created[0].clone(), created[2].clone()]);
        let by_address = walk(&app, &auth, &search("555010"), 2).await;
        assert_eq!(
            ids(&by_address),
            vec![
                created[0].clone(),
                created[1].clone(),
                created[3].clone(),
                created[6].clone()
            ]
        );
        let percent = walk(&app, &auth, &search("100%25"), 10).await;
        assert_eq!(ids(&percent), vec![created[4].clone()]);
        let nothing = walk(&app, &auth, &search("zzz"), 10).await;
        assert!(nothing.is_empty());

        // Filters, alone and combined, paginated.
        let unsub = walk(&app, &auth, "/api/v1/contacts?unsubscribed=true", 1).await;
        assert_eq!(ids(&unsub), vec![created[1].clone(), created[4].clone()]);
        let subscribed = walk(&app, &auth, "/api/v1/contacts?unsubscribed=false", 2).await;
        assert_eq!(subscribed.len(), 5);
        let in_vip = walk(&app, &auth, &format!("/api/v1/contacts?list_id={vip}"), 2).await;
        assert_eq!(
            ids(&in_vip),
            vec![created[0].clone(), created[3].clone(), created[6].clone()]
        );
        let combined = walk(
            &app,
            &auth,
            &format!("/api/v1/contacts?list_id={vip}&q=a"),
            5,
        )
        .await;
        assert_eq!(ids(&combined), vec![created[0].clone(), created[3].clone()]);

        // A list of another organisation (or none) is not found; bad parameters are 400.
        let other = Auth::Key(app.key(app.other_org, Role::Editor).await);
        let theirs = create_list(&app, &other, "vip").await;
        app.get(&format!("/api/v1/contacts?list_id={theirs}"), &auth)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not-found");
        app.get("/api/v1/contacts?cursor=bogus", &auth)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid-cursor");
        let r = app.get("/api/v1/contacts?limit=0", &auth).await;
        r.expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
        assert_eq!(r.body["errors"][0]["field"], "limit");
        app.get("/api/v1/contacts?unsubscribed=maybe", &auth)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
    }
);

api_test!(
    csv_import_reports_bad_rows_and_updates_on_a_second_upload,
    |app| async move {
        let auth = editor(&app).await;
        let file = "address,name,city,unsubscribed\n\
                +1 415 555 0101,Ada,London,\n\
                not-a-number,Bob,Paris,\n\
                +14155550103,Cy\n\
                +14155550104,Di,Rome,perhaps\n\
                \n\
                eve@Example.org,Eve,Oslo,yes\n\
                +14155550101,Ada Again,Leeds,\n";
        let r = import(&app, &auth, "customers", file).await;
        r.expect(StatusCode::OK);
        let list = r.body["list_id"].as_str().unwrap().to_string();
        assert!(list.starts_with("lst_"), "{}", r.text);
        // A later row for the same address counts as an update.
        assert_eq!(r.body["inserted"], 2, "{}", r.text);
        assert_eq!(r.body["updated"], 1, "{}", r.text);
        assert_eq!(r.body["rejected"], 3, "{}", r.text);
        assert_eq!(r.body["truncated"], false);
        let errors = r.body["errors"].as_array().unwrap();
        let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, vec![3, 4, 5], "{}", r.text);
        assert!(
            errors[0]["reason"]
                .as_str()
                .unwrap()
                .contains("not-a-number"),
            "{}",
            r.text
        );
        assert!(
            errors[1]["reason"].as_str().unwrap().contains("fields"),
            "{}",
            r.text
        );
        assert!(
            errors[2]["reason"]
                .as_str()
                .unwrap()
                .contains("unsubscribed"),
            "{}",
            r.text
        );

        let members = walk(&app, &auth, &format!("/api/v1/lists/{list}/members"), 10).await;
        assert_eq!(members.len(), 2);
        assert_eq!(members[0]["address"], "+14155550101");
        assert_eq!(members[0]["name"], "Ada Again");
        assert_eq!(members[0]["attributes"], json!({"city": "Leeds"}));
        assert_eq!(members[1]["address"], "eve@example.org");
        assert_eq!(members[1]["unsubscribed"], true);

        // The same people again, fixed: updated, not duplicated, into the same list.
        let again = "address,name,city\n+14155550101,Ada,York\neve@example.org,Eve,Oslo\n+14155550104,Di,Rome\n";
        let r = import(&app, &auth, "customers", again).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["list_id"], list.as_str());
        assert_eq!(r.body["inserted"], 1, "{}", r.text);
        assert_eq!(r.body["updated"], 2, "{}", r.text);
        assert_eq!(r.body["rejected"], 0);
        assert_eq!(r.body["errors"], json!([]));
        let all = walk(&app, &auth, "/api/v1/contacts", 50).await;
        assert_eq!(all.len(), 3);
        assert_eq!(all[0]["attributes"], json!({"city": "York"}));
        // The flag stays as it was when the file has no unsubscribed column.
        assert_eq!(all[1]["unsubscribed"], true);
        let l = app.get(&format!("/api/v1/lists/{list}"), &auth).await;
        assert_eq!(l.body["members"], 3);
        assert_eq!(l.body["name"], "customers");

        // Refusals: the media type, the header, the list name, the role, the size.
        let r = app
            .send(
                Method::POST,
                "/api/v1/contacts/import?list=x",
                &auth,
                &[],
                Some(("application/json", "{}".into())),
            )
            .await;
        r.expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
        let r = app
            .send(
                Method::POST,
                "/api/v1/contacts/import?list=x",
                &auth,
                &[],
                None,
            )
            .await;
        r.expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
        let r = import(&app, &auth, "nocolumn", "phone,name\n+14155550101,Ada\n").await;
        field_error(&r, "address", "required");
        assert!(r.text.contains("phone"), "{}", r.text);
        let r = import(&app, &auth, "%20", "address\n+14155550101\n").await;
        field_error(&r, "list", "required");
        app.send(
            Method::POST,
            "/api/v1/contacts/import",
            &auth,
            &[],
            csv("address\n"),
        )
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
        let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
        import(&app, &viewer, "customers", again)
            .await
            .expect_problem(StatusCode::FORBIDDEN, "forbidden");
        // Neither refused list was created.
        let lists = walk(&app, &auth, "/api/v1/lists", 10).await;
        assert_eq!(lists.len(), 1, "{lists:?}");
        // A declared length over the limit is refused before reading; so is a body that
        // turns out larger while streaming.
        let big = (100u64 * 1024 * 1024 + 1).to_string();
        let r = app
            .send(
                Method::POST,
                "/api/v1/contacts/import?list=big",
                &auth,
                &[(header::CONTENT_LENGTH.as_str(), big.as_str())],
                csv("address\n"),
            )
            .await;
        r.expect_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        assert!(r.text.contains("100 MiB"), "{}", r.text);
        let mut huge = String::from("address\n");
        huge.push_str(&"\n".repeat(100 * 1024 * 1024 + 1));
        let r = app
            .send(
                Method::POST,
                "/api/v1/contacts/import?list=big",
                &auth,
                &[],
                Some(("text/csv", huge)),
            )
            .await;
        r.expect_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
        assert!(r.text.contains("CSV uploads are limited"), "{}", r.text);
        // Files larger than the JSON body limit are fine (many rows; each cell within the
        // contact rules, which refuse a 700 KB cell).
        let note = "n".repeat(900);
        let mut file = String::from("address,note\n");
        for i in 0..2500 {
            file.push_str(&format!("+1415556{i:04},{note}\n"));
        }
        assert!(file.len() > 2 * 1024 * 1024);
        let r = import(&app, &auth, "large", &file).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["inserted"], 2500, "{}", r.text);
    }
);

api_test!(
    csv_import_lists_the_first_thousand_errors,
    |app| async move {
        let auth = editor(&app).await;
        let mut file = String::from("address\n");
        for _ in 0..1005 {
            file.push_str("nope\n");
        }
        file.push_str("+14155550101\n");
        let r = import(&app, &auth, "many", &file).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["inserted"], 1);
        assert_eq!(r.body["rejected"], 1005);
        assert_eq!(r.body["errors"].as_array().unwrap().len(), 1000);
        assert_eq!(r.body["errors"][999]["line"], 1001);
        assert_eq!(r.body["truncated"], true);
    }
);

api_test!(lists_and_their_members, |app| async move {
    let auth = editor(&app).await;
    let created = app
        .post("/api/v1/lists", &auth, json!({"name": " customers "}))
        .await;
    created.expect(StatusCode::CREATED);
    let list = id_of(&created);
    assert_eq!(created.body["name"], "customers");
    assert_eq!(created.body["members"], 0);
    assert_eq!(
        created.headers[header::LOCATION].to_str().unwrap(),
        format!("/api/v1/lists/{list}")
    );
    app.post("/api/v1/lists", &auth, json!({"name": "customers"}))
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
    field_error(
        &app.post("/api/v1/lists", &auth, json!({"name": "  "}))
            .await,
        "name",
        "required",
    );
    field_error(
        &app.post("/api/v1/lists", &auth, json!({"name": "x".repeat(201)}))
            .await,
        "name",
        "max_length",
    );
    field_error(
        &app.post("/api/v1/lists", &auth, json!({})).await,
        "name",
        "required",
    );

    // Rename; a taken name is a conflict.
    let other_list = create_list(&app, &auth, "newsletter").await;
    let renamed = app
        .call(
            Method::PATCH,
            &format!("/api/v1/lists/{list}"),
            &auth,
            Some(json!({"name": "clients"})),
        )
        .await;
    renamed.expect(StatusCode::OK);
    assert_eq!(renamed.body["name"], "clients");
    app.call(
        Method::PATCH,
        &format!("/api/v1/lists/{list}"),
        &auth,
        Some(json!({"name": "newsletter"})),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "conflict");

    // Members: adding twice is fine; unknown ids are named.
    let mut contacts = Vec::new();
    for i in 0..5 {
        contacts
            .push(create_contact(&app, &auth, json!({"address": format!("+1415555020{i}")})).await);
    }
    let members_url = format!("/api/v1/lists/{list}/members");
    let added = app
        .post(
            &members_url,
            &auth,
            json!({"contact_ids": [contacts[0], contacts[1], contacts[2], contacts[0]]}),
        )
        .await;
    added.expect(StatusCode::OK);
    assert_eq!(added.body["added"], 3, "{}", added.text);
    assert_eq!(added.body["list"]["members"], 3);
    let again = app
        .post(
            &members_url,
            &auth,
            json!({"contact_ids": [contacts[2], contacts[3], contacts[4]]}),
        )
        .await;
    again.expect(StatusCode::OK);
    assert_eq!(again.body["added"], 2);
    assert_eq!(again.body["list"]["members"], 5);
    let bad = app
        .post(
            &members_url,
            &auth,
            json!({"contact_ids": [contacts[0], "con_999999"]}),
        )
        .await;
    field_error(&bad, "contact_ids", "exists");
    assert!(bad.text.contains("con_999999"), "{}", bad.text);
    field_error(
        &app.post(&members_url, &auth, json!({"contact_ids": []}))
            .await,
        "contact_ids",
        "min_items",
    );
    field_error(
        &app.post(&members_url, &auth, json!({"contact_ids": ["lst_1"]}))
            .await,
        "contact_ids",
        "exists",
    );
    app.post(
        "/api/v1/lists/lst_999999/members",
        &auth,
        json!({"contact_ids": [contacts[0]]}),
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not-found");

    let members = walk(&app, &auth, &members_url, 2).await;
    assert_eq!(ids(&members), contacts);
    let contact = app
        .get(&format!("/api/v1/contacts/{}", contacts[0]), &auth)
        .await;
    assert_eq!(contact.body["list_ids"], json!([list]));

    // Remove a member: the contact stays.
    let member_url = format!("{members_url}/{}", contacts[0]);
    app.call(Method::DELETE, &member_url, &auth, None)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.call(Method::DELETE, &member_url, &auth, None)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
    app.get(&format!("/api/v1/contacts/{}", contacts[0]), &auth)
        .await
        .expect(StatusCode::OK);
    assert_eq!(walk(&app, &auth, &members_url, 10).await.len(), 4);

    // Lists paginate with member counts.
    for name in ["a", "b", "c"] {
        create_list(&app, &auth, name).await;
    }
    let lists = walk(&app, &auth, "/api/v1/lists", 2).await;
    let names: Vec<&str> = lists.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["clients", "newsletter", "a", "b", "c"]);
    assert_eq!(lists[0]["members"], 4);

    // A list a campaign uses stays, and the refusal names the campaign.
    let channel = app
        .db
        .store
        .channel_by_name(app.org, "sandbox")
        .await
        .unwrap();
    let campaign = app
        .db
        .store
        .create_campaign(
            &NewCampaign {
                org_id: app.org,
                name: "Spring sale".into(),
                channel_id: channel.id,
                list_id: list.parse().unwrap(),
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
    let refused = app
        .call(
            Method::DELETE,
            &format!("/api/v1/lists/{list}"),
            &auth,
            None,
        )
        .await;
    refused.expect_problem(StatusCode::CONFLICT, "list-in-use");
    assert!(
        refused.text.contains(&format!("{campaign}")),
        "{}",
        refused.text
    );
    assert!(refused.text.contains("Spring sale"), "{}", refused.text);

    // Another list is deleted with its memberships; its contacts stay.
    app.post(
        &format!("/api/v1/lists/{other_list}/members"),
        &auth,
        json!({"contact_ids": [contacts[1]]}),
    )
    .await
    .expect(StatusCode::OK);
    app.call(
        Method::DELETE,
        &format!("/api/v1/lists/{other_list}"),
        &auth,
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    app.get(&format!("/api/v1/lists/{other_list}"), &auth)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
    app.get(&format!("/api/v1/lists/{other_list}/members"), &auth)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
    let c = app
        .get(&format!("/api/v1/contacts/{}", contacts[1]), &auth)
        .await;
    c.expect(StatusCode::OK);
    assert_eq!(c.body["list_ids"], json!([list]));
    // The name can be used again.
    create_list(&app, &auth, "newsletter").await;
});

api_test!(suppressions_are_added_listed_and_lifted, |app| async move {
    let auth = editor(&app).await;
    let r = app
        .post(
            "/api/v1/suppressions",
            &auth,
            json!({"address": "+1 (415) 555-0100", "reason": "asked by phone"}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.body["address"], "+14155550100");
    assert_eq!(r.body["reason"], "asked by phone");
    assert_eq!(
        r.headers[header::LOCATION].to_str().unwrap(),
        "/api/v1/suppressions/+14155550100"
    );
    assert!(
        app.db
            .store
            .is_suppressed(app.org, "+14155550100")
            .await
            .unwrap()
    );
    // Again: not an error; no reason keeps the old one, a reason replaces it.
    let again = app
        .post(
            "/api/v1/suppressions",
            &auth,
            json!({"address": "+14155550100"}),
        )
        .await;
    again.expect(StatusCode::OK);
    assert_eq!(again.body["reason"], "asked by phone");
    assert_eq!(again.body["created_at"], r.body["created_at"]);
    let again = app
        .post(
            "/api/v1/suppressions",
            &auth,
            json!({"address": "+14155550100", "reason": "complaint"}),
        )
        .await;
    again.expect(StatusCode::OK);
    assert_eq!(again.body["reason"], "complaint");

    field_error(
        &app.post("/api/v1/suppressions", &auth, json!({"address": "12"}))
            .await,
        "address",
        "format",
    );
    field_error(
        &app.post("/api/v1/suppressions", &auth, json!({})).await,
        "address",
        "required",
    );
    field_error(
        &app.post(
            "/api/v1/suppressions",
            &auth,
            json!({"address": "+14155550100", "reason": "x".repeat(501)}),
        )
        .await,
        "reason",
        "max_length",
    );

    // Pages in address order, each address once.
    let mut expected = vec!["+14155550100".to_string()];
    for a in [
        "zed@example.org",
        "+4930123456",
        "a/b@example.org",
        "+14155550150",
        "bob@example.org",
    ] {
        let r = app
            .post("/api/v1/suppressions", &auth, json!({"address": a}))
            .await;
        r.expect(StatusCode::CREATED);
        assert!(!r.body["reason"].as_str().unwrap().is_empty());
        expected.push(r.body["address"].as_str().unwrap().to_string());
    }
    expected.sort();
    let walked = walk(&app, &auth, "/api/v1/suppressions", 2).await;
    let addresses: Vec<String> = walked
        .iter()
        .map(|s| s["address"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = addresses.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, expected);
    assert_eq!(addresses.len(), expected.len());
    app.get("/api/v1/suppressions?cursor=%%%", &auth)
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-cursor");

    // Lift: by the address as stored, URL-encoded; a second time it is gone.
    app.call(
        Method::DELETE,
        "/api/v1/suppressions/%2B14155550100",
        &auth,
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    assert!(
        !app.db
            .store
            .is_suppressed(app.org, "+14155550100")
            .await
            .unwrap()
    );
    app.call(
        Method::DELETE,
        "/api/v1/suppressions/+14155550100",
        &auth,
        None,
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not-found");
    let created = app
        .post(
            "/api/v1/suppressions",
            &auth,
            json!({"address": "a/b@example.org"}),
        )
        .await;
    let location = created.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(location, "/api/v1/suppressions/a%2Fb@example.org");
    app.call(Method::DELETE, &location, &auth, None)
        .await
        .expect(StatusCode::NO_CONTENT);
    let viewer = Auth::Key(app.key(app.org, Role::Viewer).await);
    app.call(
        Method::DELETE,
        "/api/v1/suppressions/bob@example.org",
        &viewer,
        None,
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    app.get("/api/v1/suppressions", &viewer)
        .await
        .expect(StatusCode::OK);
});

api_test!(
    nothing_of_another_organisation_is_visible_or_reachable,
    |app| async move {
        let auth = editor(&app).await;
        let other = Auth::Key(app.key(app.other_org, Role::Owner).await);
        // The other organisation's data, created through the API.
        let their_list = create_list(&app, &other, "customers").await;
        let their_contact = create_contact(
            &app,
            &other,
            json!({"address": "+14155550100", "name": "Theirs", "list_ids": [their_list]}),
        )
        .await;
        let r = import(
            &app,
            &other,
            "customers",
            "address,name\n+14155550101,Theirs too\n",
        )
        .await;
        r.expect(StatusCode::OK);
        app.post(
            "/api/v1/suppressions",
            &other,
            json!({"address": "+14155550100"}),
        )
        .await
        .expect(StatusCode::CREATED);

        // Ours: the same address and list name are ours to use.
        let mine = create_contact(&app, &auth, json!({"address": "+14155550100"})).await;
        let my_list = create_list(&app, &auth, "customers").await;
        assert_ne!(mine, their_contact);
        assert_ne!(my_list, their_list);
        let r = import(&app, &auth, "customers", "address\n+14155550101\n").await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["list_id"], my_list.as_str());
        assert_eq!(r.body["inserted"], 1, "{}", r.text);

        // Nothing of theirs is listed...
        let contacts = walk(&app, &auth, "/api/v1/contacts", 10).await;
        assert!(
            contacts
                .iter()
                .all(|c| c["name"] != "Theirs" && c["name"] != "Theirs too")
        );
        assert_eq!(contacts.len(), 2);
        let found = walk(&app, &auth, "/api/v1/contacts?q=theirs", 10).await;
        assert!(found.is_empty());
        let lists = walk(&app, &auth, "/api/v1/lists", 10).await;
        assert_eq!(ids(&lists), vec![my_list.clone()]);
        assert_eq!(lists[0]["members"], 1);
        let suppressions = walk(&app, &auth, "/api/v1/suppressions", 10).await;
        assert!(suppressions.is_empty());
        let all_ids: BTreeSet<String> = ids(&contacts).into_iter().collect();
        assert!(!all_ids.contains(&their_contact));

        // ...and nothing of theirs is reachable.
        let contact_url = format!("/api/v1/contacts/{their_contact}");
        let list_url = format!("/api/v1/lists/{their_list}");
        for reply in [
            app.get(&contact_url, &auth).await,
            app.call(
                Method::PATCH,
                &contact_url,
                &auth,
                Some(json!({"name": "Mine"})),
            )
            .await,
            app.call(Method::DELETE, &contact_url, &auth, None).await,
            app.get(&list_url, &auth).await,
            app.call(
                Method::PATCH,
                &list_url,
                &auth,
                Some(json!({"name": "mine"})),
            )
            .await,
            app.call(Method::DELETE, &list_url, &auth, None).await,
            app.get(&format!("{list_url}/members"), &auth).await,
            app.post(
                &format!("{list_url}/members"),
                &auth,
                json!({"contact_ids": [mine]}),
            )
            .await,
            app.call(
                Method::DELETE,
                &format!("{list_url}/members/{their_contact}"),
                &auth,
                None,
            )
            .await,
            app.call(
                Method::DELETE,
                "/api/v1/suppressions/+14155550100",
                &auth,
                None,
            )
            .await,
        ] {
            reply.expect_problem(StatusCode::NOT_FOUND, "not-found");
            assert!(!reply.text.contains("Theirs"), "{}", reply.text);
        }
        // Their contacts cannot be put into our lists, nor ours into theirs.
        let r = app
            .post(
                &format!("/api/v1/lists/{my_list}/members"),
                &auth,
                json!({"contact_ids": [their_contact]}),
            )
            .await;
        field_error(&r, "contact_ids", "exists");
        let r = app
            .post(
                "/api/v1/contacts",
                &auth,
                json!({"address": "+14155550199", "list_ids": [their_list]}),
            )
            .await;
        field_error(&r, "list_ids", "exists");

        // Theirs is untouched.
        let theirs = app.get(&contact_url, &other).await;
        theirs.expect(StatusCode::OK);
        assert_eq!(theirs.body["name"], "Theirs");
        assert_eq!(theirs.body["list_ids"], json!([their_list]));
        let their_lists = walk(&app, &other, "/api/v1/lists", 10).await;
        assert_eq!(their_lists[0]["members"], 2);
        assert!(
            app.db
                .store
                .is_suppressed(app.other_org, "+14155550100")
                .await
                .unwrap()
        );
        assert!(
            !app.db
                .store
                .is_suppressed(app.org, "+14155550100")
                .await
                .unwrap()
        );
    }
);

/// A CSV file of `rows` under `header`, quoted by the csv crate so control characters and
/// commas survive.
fn csv_file(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header).unwrap();
    for row in rows {
        writer.write_record(row).unwrap();
    }
    String::from_utf8(writer.into_inner().unwrap()).unwrap()
}

// The issue's attack: a CSV import stored a 50 MB name, 100,000 attribute columns, a 5 MB
// cell and control characters that `POST /contacts` refuses. One table of bad contacts goes
// through both: the JSON API refuses each with the rule, the import rejects each row by its
// line with the same rule, and the good row beside them is imported.
api_test!(
    json_api_and_csv_import_refuse_the_same_bad_contacts,
    |app| async move {
        let auth = editor(&app).await;
        // (name, note attribute, field, rule). NUL is refused earlier by both (the JSON body
        // extractor, the import's NUL check) and so is not in this table.
        let bad: Vec<(String, String, &str, &str)> = vec![
            ("x".repeat(50_000), "ok".into(), "name", "max_length"),
            ("Ada\u{7}".into(), "ok".into(), "name", "format"),
            (
                "Ada".into(),
                "x".repeat(5_000),
                "attributes.note",
                "max_length",
            ),
            (
                "Ada".into(),
                "red\u{1b}[31m".into(),
                "attributes.note",
                "format",
            ),
        ];
        for (i, (name, note, field, rule)) in bad.iter().enumerate() {
            let r = app
                .post(
                    "/api/v1/contacts",
                    &auth,
                    json!({"address": format!("+1415555{:04}", 100 + i), "name": name, "attributes": {"note": note}}),
                )
                .await;
            field_error(&r, field, rule);
        }

        let mut rows: Vec<Vec<String>> = bad
            .iter()
            .enumerate()
            .map(|(i, (name, note, _, _))| {
                vec![
                    format!("+1415555{:04}", 100 + i),
                    name.clone(),
                    note.clone(),
                ]
            })
            .collect();
        rows.push(vec![
            "+14155550999".into(),
            "Good".into(),
            "line\nbreak".into(),
        ]);
        let file = csv_file(&["address", "name", "note"], &rows);
        let r = import(&app, &auth, "attack", &file).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["inserted"], 1, "{}", r.text);
        assert_eq!(r.body["rejected"], bad.len(), "{}", r.text);
        let errors = r.body["errors"].as_array().unwrap();
        for (i, ((_, _, field, rule), error)) in bad.iter().zip(errors).enumerate() {
            // The header is line 1.
            assert_eq!(error["line"], i as u64 + 2, "{}", r.text);
            let reason = error["reason"].as_str().unwrap();
            assert!(
                reason.contains(&format!("`{field}`")) && reason.contains(rule),
                "line {}: {reason}",
                i + 2
            );
        }
        let list = r.body["list_id"].as_str().unwrap().to_string();
        let members = walk(&app, &auth, &format!("/api/v1/lists/{list}/members"), 10).await;
        assert_eq!(members.len(), 1);
        assert_eq!(members[0]["attributes"], json!({"note": "line\nbreak"}));

        // Too many attributes: the JSON API refuses 101; the import refuses a header with
        // 101 (or 100,000) attribute columns whole, before reading a row.
        let many: serde_json::Map<String, Value> =
            (0..101).map(|i| (format!("a{i}"), json!("v"))).collect();
        let r = app
            .post(
                "/api/v1/contacts",
                &auth,
                json!({"address": "+14155550998", "attributes": many}),
            )
            .await;
        field_error(&r, "attributes", "max_items");
        // (100,000 columns make a header longer than any row may be: refused by its size
        // before it is even held whole.)
        for (columns, field, rule) in [
            (101, "attributes", "max_items"),
            (100_000, "header", "max_row_bytes"),
        ] {
            let mut header = vec!["address".to_string()];
            header.extend((0..columns).map(|i| format!("a{i}")));
            let mut row = vec!["+14155550997".to_string()];
            row.extend((0..columns).map(|_| "v".to_string()));
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let r = import(&app, &auth, "wide", &csv_file(&header, &[row])).await;
            field_error(&r, field, rule);
        }
    }
);

/// The id of the organisation's list named `name`.
async fn list_named(app: &TestApp, auth: &Auth, name: &str) -> String {
    let lists = walk(app, auth, "/api/v1/lists", 500).await;
    lists
        .iter()
        .find(|l| l["name"] == name)
        .and_then(|l| l["id"].as_str())
        .unwrap_or_else(|| panic!("no list named {name}: {lists:?}"))
        .to_string()
}

// The issue's attack, streamed as a client would send it: a 50 MB name and a 5 MB cell,
// each on one line. The csv crate holds a whole record before handing it over, so the
// import used to read (and hold) every byte of the row only to reject it at the end. Now
// it stops one row cap into the row with a 422 naming the line and the rule, having pulled
// a bounded part of the upload; the row before it is imported, the rows after it are not.
api_test!(
    a_huge_csv_row_stops_the_import_before_it_is_held,
    |app| async move {
        static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        let auth = editor(&app).await;
        let cases = [
            ("name", "+14155550201,", 50 << 20, ",Rome\n"),
            ("cell", "+14155550201,Eve,", 5 << 20, "\n"),
        ];
        for (label, before, filler, after) in cases {
            let pulled = Arc::new(AtomicUsize::new(0));
            let counter = pulled.clone();
            let head = format!("address,name,city\n+14155550200,Ada,Paris\n{before}");
            let tail = format!("{after}+14155550202,Bob,Oslo\n");
            let chunks = std::iter::once(Bytes::from(head))
                .chain((0..filler / FILLER.len()).map(|_| Bytes::from_static(&FILLER)))
                .chain(std::iter::once(Bytes::from(tail)))
                .map(move |chunk| {
                    counter.fetch_add(chunk.len(), Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(chunk)
                });
            let list = format!("huge-{label}");
            let r = app
                .send_body(
                    Method::POST,
                    &format!("/api/v1/contacts/import?list={list}"),
                    &auth,
                    &[],
                    Some("text/csv"),
                    Body::from_stream(futures_util::stream::iter(chunks)),
                )
                .await;
            field_error(&r, "body", "max_row_bytes");
            let detail = r.body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("line 3 "), "{label}: {detail}");
            let pulled = pulled.load(Ordering::SeqCst);
            assert!(
                pulled < 2 << 20,
                "{label}: the import pulled {pulled} bytes of the upload"
            );
            let list = list_named(&app, &auth, &list).await;
            let members = walk(&app, &auth, &format!("/api/v1/lists/{list}/members"), 10).await;
            let addresses: Vec<&str> = members
                .iter()
                .filter_map(|m| m["address"].as_str())
                .collect();
            assert_eq!(addresses, ["+14155550200"], "{label}");
        }
    }
);

/// Inserts a contact of `org` in `list` behind the store's back, as a database from before
/// the contact rules holds it; returns its id.
async fn insert_raw_contact(
    app: &TestApp,
    list: ListId,
    address: &str,
    name: &str,
    attributes: &str,
) -> i64 {
    let pool = app.db.raw().await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO contacts (org_id, address, name, attributes, unsubscribed, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 0, 0, 0) RETURNING id",
    )
    .bind(app.org)
    .bind(address)
    .bind(name)
    .bind(attributes)
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO list_members (list_id, contact_id, added_at) VALUES ($1, $2, 0)")
        .bind(list)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    id
}

// The issue's aftermath: rows an old CSV import stored (a 50 MB name, 100,000 attributes, a
// 5 MB cell) were read whole by every list, search and page: the dashboard's list page
// answered 502 and 16 concurrent member reads took the server to 1.4 GB. Every read of
// contacts (API list, members, search, get, template preview, the dashboard, the sender's
// claim) now answers in bounded size: the name cut to the rule's limit plus `…`, oversized
// attributes withheld and flagged, and the other contacts intact.
api_test!(
    contacts_stored_before_the_rules_are_read_bounded,
    |app| async move {
        const MIB: usize = 1 << 20;
        let auth = editor(&app).await;
        let r = app
            .post("/api/v1/lists", &auth, json!({"name": "legacy"}))
            .await;
        r.expect(StatusCode::CREATED);
        let list = id_of(&r);
        let list_id: ListId = list.parse().unwrap();
        let ada = create_contact(
            &app,
            &auth,
            json!({"address": "+14155550300", "name": "Ada", "attributes": {"city": "Paris"}, "list_ids": [list]}),
        )
        .await;
        let wide: serde_json::Map<String, Value> = (0..100_000)
            .map(|i| (format!("a{i}"), json!("v")))
            .collect();
        let huge_name = insert_raw_contact(
            &app,
            list_id,
            "+14155550301",
            &"n".repeat(50 * MIB),
            r#"{"city":"Rome"}"#,
        )
        .await;
        let many = insert_raw_contact(
            &app,
            list_id,
            "+14155550302",
            "Wide",
            &Value::Object(wide).to_string(),
        )
        .await;
        let cell = insert_raw_contact(
            &app,
            list_id,
            "+14155550303",
            "Cell",
            &json!({"note": "x".repeat(5 * MIB)}).to_string(),
        )
        .await;
        let bob = create_contact(
            &app,
            &auth,
            json!({"address": "+14155550304", "name": "Bob", "attributes": {"city": "Oslo"}, "list_ids": [list]}),
        )
        .await;
        let cut_name = format!("{}\u{2026}", "n".repeat(200));

        // What each contact read must look like: (name, attributes, withheld).
        let expected = |id: &str| -> (Value, Value, bool) {
            match id {
                _ if id == ada => (json!("Ada"), json!({"city": "Paris"}), false),
                _ if id == bob => (json!("Bob"), json!({"city": "Oslo"}), false),
                _ if id == format!("con_{huge_name}") => {
                    (json!(cut_name), json!({"city": "Rome"}), false)
                }
                _ if id == format!("con_{many}") => (json!("Wide"), json!({}), true),
                _ if id == format!("con_{cell}") => (json!("Cell"), json!({}), true),
                _ => panic!("unexpected contact {id}"),
            }
        };
        let check = |items: &[Value], what: &str| {
            for c in items {
                let (name, attributes, withheld) = expected(c["id"].as_str().unwrap());
                assert_eq!(c["name"], name, "{what}");
                assert_eq!(c["attributes"], attributes, "{what}");
                match withheld {
                    true => assert_eq!(c["attributes_truncated"], true, "{what}"),
                    false => assert!(c.get("attributes_truncated").is_none(), "{what}: {c}"),
                }
            }
        };
        for path in [
            "/api/v1/contacts?limit=500".to_string(),
            format!("/api/v1/lists/{list}/members?limit=500"),
        ] {
            let r = app.get(&path, &auth).await;
            r.expect(StatusCode::OK);
            assert!(r.text.len() < MIB, "{path}: {} bytes", r.text.len());
            assert_eq!(r.body["items"].as_array().unwrap().len(), 5, "{path}");
            check(r.body["items"].as_array().unwrap(), &path);
        }
        // Pages stay capped at 500.
        app.get(&format!("/api/v1/lists/{list}/members?limit=501"), &auth)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid-query");
        // A search that matches the huge name reads only its first characters.
        let r = app
            .get(
                &format!("/api/v1/contacts?q={}&limit=500", "n".repeat(50)),
                &auth,
            )
            .await;
        r.expect(StatusCode::OK);
        assert!(r.text.len() < MIB, "search: {} bytes", r.text.len());
        assert_eq!(r.body["items"][0]["name"], cut_name.as_str());
        for id in [huge_name, many, cell] {
            let r = app.get(&format!("/api/v1/contacts/con_{id}"), &auth).await;
            r.expect(StatusCode::OK);
            assert!(r.text.len() < MIB, "con_{id}: {} bytes", r.text.len());
            check(std::slice::from_ref(&r.body), &format!("con_{id}"));
            let r = app
                .post(
                    "/api/v1/templates/preview",
                    &auth,
                    json!({"body": "Hi {{ name }}", "contact_id": format!("con_{id}")}),
                )
                .await;
            r.expect(StatusCode::OK);
            assert!(
                r.text.len() < MIB,
                "preview con_{id}: {} bytes",
                r.text.len()
            );
        }

        // The dashboard's pages of the list and of contacts (they read through the API).
        let password = "a long enough password";
        app.user(app.org, "viewer@example.org", Role::Viewer, password)
            .await;
        let (cookie, _) = app.sign_in("viewer@example.org", password).await;
        let session = Auth::Session { cookie, csrf: None };
        for path in [
            format!("/lists/{list}"),
            format!("/contacts?list_id={list}"),
        ] {
            let r = app.get(&path, &session).await;
            r.expect(StatusCode::OK);
            assert!(r.text.len() < MIB, "{path}: {} bytes", r.text.len());
            assert!(r.text.contains("Bob"), "{path}");
        }

        // The sender's claim of a campaign to the list.
        let store = &app.db.store;
        let channel = crate::support::sandbox_channel(store, "legacy").await;
        let campaign =
            crate::support::new_campaign(store, app.org, list_id, channel, "Hi {{ name }}").await;
        let now = herald::clock::now_ms();
        store
            .start_campaign(campaign, now, "test", None)
            .await
            .unwrap();
        let owner = herald::store::InstanceInfo {
            id: "legacy-reader".into(),
            host: "test".into(),
            pid: 1,
            proc_start: None,
            version: "0".into(),
            role: "serve".into(),
            started_at: now,
        };
        store.register_instance(&owner).await.unwrap();
        let claimed = store
            .claim(campaign, &owner.id, now, now + 60_000, 500)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 5);
        for m in &claimed {
            let name = m.name.as_deref().unwrap_or_default();
            assert!(
                name.chars().count() <= 201,
                "{}: name {}",
                m.address,
                name.len()
            );
            assert!(m.attributes.len() < MIB, "{}: attributes", m.address);
        }
        // And the in-doubt check, which renders the same bodies (the last use of this
        // campaign: its counters no longer matter).
        app.db
            .raw_exec(
                "UPDATE messages SET status = 'in_doubt', in_doubt_at = 0 WHERE campaign_id = $1",
                campaign,
            )
            .await;
        let candidates = store.in_doubt_candidates(now, 100).await.unwrap();
        assert_eq!(candidates.len(), 5);
        for m in &candidates {
            let name = m.name.as_deref().unwrap_or_default();
            assert!(
                name.chars().count() <= 201,
                "{}: name {}",
                m.address,
                name.len()
            );
            assert!(m.attributes.len() < MIB, "{}: attributes", m.address);
        }
    }
);

// A contact whose address is on the organisation's suppression list (a STOP reply) is not
// subscribed, whatever its flag: the subscription filter says so, and another
// organisation's suppression of the same address changes nothing here.
api_test!(
    the_subscription_filter_counts_suppressions,
    |app| async move {
        let auth = editor(&app).await;
        let kept = create_contact(&app, &auth, json!({"address": "+14155550201"})).await;
        let stopped = create_contact(&app, &auth, json!({"address": "+14155550202"})).await;
        let unsubscribed = create_contact(
            &app,
            &auth,
            json!({"address": "+14155550203", "unsubscribed": true}),
        )
        .await;
        app.post(
            "/api/v1/suppressions",
            &auth,
            json!({"address": "+1 415 555 0202", "reason": "replied STOP"}),
        )
        .await
        .expect(StatusCode::CREATED);
        let other = Auth::Key(app.key(app.other_org, Role::Editor).await);
        app.post(
            "/api/v1/suppressions",
            &other,
            json!({"address": "+14155550201", "reason": "replied STOP"}),
        )
        .await
        .expect(StatusCode::CREATED);

        let not_subscribed = walk(&app, &auth, "/api/v1/contacts?unsubscribed=true", 1).await;
        assert_eq!(ids(&not_subscribed), vec![stopped.clone(), unsubscribed]);
        assert_eq!(not_subscribed[0]["unsubscribed"], false);
        assert_eq!(not_subscribed[0]["suppressed"]["reason"], "replied STOP");
        let subscribed = walk(&app, &auth, "/api/v1/contacts?unsubscribed=false", 1).await;
        assert_eq!(ids(&subscribed), vec![kept]);
        assert_eq!(subscribed[0]["suppressed"], serde_json::Value::Null);
    }
);
