//! A campaign's email parts over the API (docs/EMAIL.md), on both stores: given at create
//! and shown in the view, refused naming the part (`email.subject`, `email.html`, …) and
//! only on an smtp channel, an empty body only with an HTML part, changed by an edit that
//! the audit trail names, copied by a duplicate, and rendered by both previews with the
//! HTML part escaped and the plain text derived from it.

use super::{Auth, Reply, TestApp, api_test};
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use serde_json::{Value, json};

/// A 422 naming `field` (and `rule`, when given) first.
#[track_caller]
fn field_error(reply: &Reply, field: &str, rule: Option<&str>) {
    reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.text);
    if let Some(rule) = rule {
        assert_eq!(reply.body["errors"][0]["rule"], rule, "{}", reply.text);
    }
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap().to_string()
}

/// An organisation with an smtp channel, its sandbox channel, a list and one contact on
/// it whose name needs escaping in HTML.
struct Setup {
    admin: Auth,
    smtp: String,
    sandbox: String,
    list: String,
    tom: String,
}

const TOM: &str = "Tom & <Jerry>";

async fn setup(app: &TestApp) -> Setup {
    let admin = Auth::Key(app.key(app.org, Role::Admin).await);
    let list = app
        .post("/api/v1/lists", &admin, json!({"name": "readers"}))
        .await;
    list.expect(StatusCode::CREATED);
    let list = id_of(&list);
    let tom = app
        .post(
            "/api/v1/contacts",
            &admin,
            json!({"address": "tom@example.org", "name": TOM, "list_ids": [list],
                   "attributes": {"plan": "gold"}}),
        )
        .await;
    tom.expect(StatusCode::CREATED);
    let smtp = app
        .post(
            "/api/v1/channels",
            &admin,
            json!({"name": "mail", "kind": "smtp",
                   "config": {"host": "smtp.example.com", "port": 587, "tls": "starttls",
                              "from": "Herald News <news@example.com>"}}),
        )
        .await;
    smtp.expect(StatusCode::CREATED);
    let sandbox = app
        .db
        .store
        .channel_by_name(app.org, "sandbox")
        .await
        .unwrap()
        .id;
    Setup {
        admin,
        smtp: id_of(&smtp),
        sandbox: format!("{sandbox}"),
        list,
        tom: id_of(&tom),
    }
}

/// Email parts that use every feature: templated subject and sender, escaped HTML.
fn full_email() -> Value {
    json!({
        "subject": "Hello {{ name }}, your {{ plan }} plan",
        "html": "<h1>Hello {{ name }}</h1>\n<p>Your <b>{{ plan }}</b> plan renews soon.</p>",
        "from_name": "{{ name }} at Herald",
        "reply_to": "support@example.com",
    })
}

fn campaign(s: &Setup, channel: &str, body: &str, email: Option<Value>) -> Value {
    let mut c = json!({"name": "news", "channel_id": channel, "list_id": s.list, "body": body});
    if let Some(email) = email {
        c["email"] = email;
    }
    c
}

api_test!(email_parts_are_checked_and_shown, |app| async move {
    let s = setup(&app).await;
    let create = |c: Value| {
        let (app, admin) = (&app, s.admin.clone());
        async move { app.post("/api/v1/campaigns", &admin, c).await }
    };

    // Created with its parts, shown as given; read back the same.
    let r = create(campaign(&s, &s.smtp, "Hi {{ name }}", Some(full_email()))).await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.body["email"], full_email(), "{}", r.text);
    let id = id_of(&r);
    let back = app.get(&format!("/api/v1/campaigns/{id}"), &s.admin).await;
    back.expect(StatusCode::OK);
    assert_eq!(back.body["email"], full_email(), "{}", back.text);
    // Optional parts left out stay out; no parts at all is null.
    let r = create(campaign(
        &s,
        &s.smtp,
        "Hi",
        Some(json!({"subject": "Only a subject"})),
    ))
    .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.body["email"], json!({"subject": "Only a subject"}));
    let r = create(campaign(&s, &s.smtp, "Subject: old style\n\nHi", None)).await;
    r.expect(StatusCode::CREATED);
    assert!(r.body["email"].is_null(), "{}", r.text);

    // Only an smtp channel sends them.
    let r = create(campaign(&s, &s.sandbox, "Hi", Some(full_email()))).await;
    field_error(&r, "email", Some("channel_kind"));
    assert!(r.text.contains("smtp"), "{}", r.text);

    // Each part is checked, the error naming it.
    let with = |change: Value| {
        let mut email = full_email();
        for (k, v) in change.as_object().unwrap() {
            email[k] = v.clone();
        }
        campaign(&s, &s.smtp, "Hi", Some(email))
    };
    field_error(
        &create(with(json!({"subject": ""}))).await,
        "email.subject",
        Some("required"),
    );
    field_error(
        &create(with(json!({"subject": "   "}))).await,
        "email.subject",
        Some("required"),
    );
    field_error(
        &create(with(json!({"subject": "two\nlines"}))).await,
        "email.subject",
        Some("format"),
    );
    let r = create(with(json!({"html": "<p>Hi {{ nickname }}</p>"}))).await;
    field_error(&r, "email.html", Some("unknown_variable"));
    assert!(r.text.contains("nickname"), "{}", r.text);
    field_error(
        &create(with(json!({"html": "<p>{% if %}</p>"}))).await,
        "email.html",
        None,
    );
    field_error(
        &create(with(json!({"from_name": "{{ nickname }}"}))).await,
        "email.from_name",
        Some("unknown_variable"),
    );
    let r = create(with(json!({"reply_to": "not an address"}))).await;
    field_error(&r, "email.reply_to", Some("format"));
    field_error(
        &create(with(
            json!({"reply_to": "a@example.com\r\nBcc: x@example.com"}),
        ))
        .await,
        "email.reply_to",
        Some("format"),
    );
    // Unknown members of `email` are refused, not ignored.
    let r = create(with(json!({"cc": "x@example.com"}))).await;
    field_error(&r, "cc", Some("known_field"));

    // An empty body: the text comes from the HTML part, so only with one.
    let r = create(campaign(&s, &s.smtp, "", Some(full_email()))).await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.body["body"], "");
    let r = create(campaign(&s, &s.smtp, "", None)).await;
    field_error(&r, "body", Some("required"));
    let r = create(campaign(
        &s,
        &s.smtp,
        "  ",
        Some(json!({"subject": "No HTML"})),
    ))
    .await;
    field_error(&r, "body", Some("required"));
    let r = create(campaign(
        &s,
        &s.smtp,
        "",
        Some(json!({"subject": "Blank HTML", "html": "  "})),
    ))
    .await;
    field_error(&r, "body", Some("required"));

    // Nothing refused was stored.
    let all = app.get("/api/v1/campaigns?limit=100", &s.admin).await;
    all.expect(StatusCode::OK);
    assert_eq!(
        all.body["items"].as_array().unwrap().len(),
        4,
        "{}",
        all.text
    );
});

api_test!(
    email_parts_are_edited_audited_and_duplicated,
    |app| async move {
        let s = setup(&app).await;
        let patch = |id: &str, change: Value| {
            let (app, admin, path) = (&app, s.admin.clone(), format!("/api/v1/campaigns/{id}"));
            async move { app.call(Method::PATCH, &path, &admin, Some(change)).await }
        };
        let r = app
            .post(
                "/api/v1/campaigns",
                &s.admin,
                campaign(&s, &s.smtp, "", Some(full_email())),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let id = id_of(&r);

        // The body is empty: the email must keep an HTML part.
        field_error(&patch(&id, json!({"email": null})).await, "email", None);
        field_error(
            &patch(&id, json!({"email": {"subject": "No HTML now"}})).await,
            "email",
            None,
        );
        field_error(
            &patch(
                &id,
                json!({"email": {"subject": "x", "html": "{{ nickname }}"}}),
            )
            .await,
            "email.html",
            Some("unknown_variable"),
        );
        // An smtp channel only, for a change of channel too.
        field_error(
            &patch(&id, json!({"channel_id": s.sandbox})).await,
            "email",
            Some("channel_kind"),
        );
        // The write checks the rule again: an edit that passed the API's check against a
        // campaign another edit has changed since (here: the parts removed while the body
        // is empty) is refused, and changes nothing.
        let campaign_id = herald::ids::CampaignId::parse_lenient(&id).unwrap();
        let raced = app
            .db
            .store
            .api_campaign_update_draft(
                app.org,
                campaign_id,
                &herald::store::DraftEdit {
                    email: Some(None),
                    ..Default::default()
                },
                "test",
            )
            .await;
        assert!(
            matches!(&raced, Err(herald::store::StoreError::Invalid(m)) if m.contains("empty body")),
            "{raced:?}"
        );
        let unchanged = app.get(&format!("/api/v1/campaigns/{id}"), &s.admin).await;
        assert_eq!(unchanged.body["email"], full_email(), "{}", unchanged.text);
        assert_eq!(unchanged.body["channel_id"], s.smtp, "{}", unchanged.text);

        // Another list, whose contacts have no `plan`: the parts are checked against it.
        let other = app
            .post("/api/v1/lists", &s.admin, json!({"name": "no plans"}))
            .await;
        other.expect(StatusCode::CREATED);
        app.post(
            "/api/v1/contacts",
            &s.admin,
            json!({"address": "ann@example.org", "list_ids": [id_of(&other)]}),
        )
        .await
        .expect(StatusCode::CREATED);
        let r = patch(&id, json!({"list_id": id_of(&other)})).await;
        field_error(&r, "email.subject", Some("unknown_variable"));
        assert!(r.text.contains("plan"), "{}", r.text);
        let unchanged = app.get(&format!("/api/v1/campaigns/{id}"), &s.admin).await;
        assert_eq!(unchanged.body["list_id"], s.list, "{}", unchanged.text);

        // A change of the parts.
        let new_email = json!({
            "subject": "Changed for {{ name }}",
            "html": "<p>Changed</p>",
            "reply_to": "{{ address }}",
        });
        let r = patch(&id, json!({"email": new_email})).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["email"], new_email, "{}", r.text);
        let audit = app
            .get(&format!("/api/v1/campaigns/{id}/audit"), &s.admin)
            .await;
        audit.expect(StatusCode::OK);
        let reasons: Vec<&str> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"].as_str().unwrap())
            .collect();
        assert!(reasons.contains(&"edited: email"), "{reasons:?}");
        // With a body, the email can go: the body is sent as plain text again.
        let r = patch(
            &id,
            json!({"body": "Subject: Plain\n\nHello", "email": null}),
        )
        .await;
        r.expect(StatusCode::OK);
        assert!(r.body["email"].is_null(), "{}", r.text);
        assert_eq!(r.body["body"], "Subject: Plain\n\nHello");
        let audit = app
            .get(&format!("/api/v1/campaigns/{id}/audit"), &s.admin)
            .await;
        assert!(audit.text.contains("edited: body, email"), "{}", audit.text);
        // And back, now with the body as the text.
        let r = patch(&id, json!({"email": full_email()})).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body["email"], full_email());

        // A duplicate copies the parts.
        let dup = app
            .post(
                &format!("/api/v1/campaigns/{id}/duplicate"),
                &s.admin,
                json!({}),
            )
            .await;
        dup.expect(StatusCode::CREATED);
        assert_ne!(id_of(&dup), id);
        assert_eq!(dup.body["email"], full_email(), "{}", dup.text);
        assert_eq!(dup.body["body"], "Subject: Plain\n\nHello");
        // Its own, independent of the original's.
        let dup_id = id_of(&dup);
        patch(&dup_id, json!({"email": null}))
            .await
            .expect(StatusCode::OK);
        let original = app.get(&format!("/api/v1/campaigns/{id}"), &s.admin).await;
        assert_eq!(original.body["email"], full_email(), "{}", original.text);
        // An empty-body HTML campaign duplicates into one that still has its HTML.
        let html_only = app
            .post(
                "/api/v1/campaigns",
                &s.admin,
                campaign(&s, &s.smtp, "", Some(full_email())),
            )
            .await;
        let dup = app
            .post(
                &format!("/api/v1/campaigns/{}/duplicate", id_of(&html_only)),
                &s.admin,
                json!({}),
            )
            .await;
        dup.expect(StatusCode::CREATED);
        assert_eq!(dup.body["email"], full_email(), "{}", dup.text);
        assert_eq!(dup.body["body"], "");

        // A resend copies them too.
        let html_only = id_of(&html_only);
        app.post(
            &format!("/api/v1/campaigns/{html_only}/start"),
            &s.admin,
            json!({}),
        )
        .await
        .expect(StatusCode::OK);
        let store = &app.db.store;
        let campaign_id = herald::ids::CampaignId::parse_lenient(&html_only).unwrap();
        let now = herald::clock::now_ms();
        let claimed = store
            .claim(campaign_id, "A", now, now + 60_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        store
            .record_outcomes(
                "A",
                now,
                &[herald::store::Outcome {
                    attempt: None,
                    message_id: claimed[0].id,
                    campaign_id,
                    kind: herald::store::OutcomeKind::Failed {
                        error: "smtp 550: mailbox unavailable".into(),
                    },
                }],
            )
            .await
            .unwrap();
        let r = app
            .post(
                &format!("/api/v1/campaigns/{html_only}/resend"),
                &s.admin,
                json!({}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.body["recipients"], 1, "{}", r.text);
        assert_eq!(r.body["campaign"]["email"], full_email(), "{}", r.text);
        assert_eq!(r.body["campaign"]["body"], "");
    }
);

api_test!(previews_render_the_email, |app| async move {
    let s = setup(&app).await;
    let expected_html =
        "<h1>Hello Tom &amp; &lt;Jerry&gt;</h1>\n<p>Your <b>gold</b> plan renews soon.</p>";
    let r = app
        .post(
            "/api/v1/campaigns",
            &s.admin,
            campaign(&s, &s.smtp, "", Some(full_email())),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let id = id_of(&r);

    // The campaign's preview for a contact: the name escaped in the HTML only, the text
    // derived from the HTML.
    let p = app
        .get(
            &format!("/api/v1/campaigns/{id}/preview?contact_id={}", s.tom),
            &s.admin,
        )
        .await;
    p.expect(StatusCode::OK);
    let email = &p.body["email"];
    assert_eq!(email["subject"], "Hello Tom & <Jerry>, your gold plan");
    assert_eq!(email["html"], expected_html, "{}", p.text);
    assert_eq!(email["from_name"], "Tom & <Jerry> at Herald");
    assert_eq!(email["reply_to"], "support@example.com");
    let text = email["text"].as_str().unwrap();
    assert!(text.contains("Hello Tom & <Jerry>"), "{text:?}");
    assert!(text.contains("Your gold plan renews soon."), "{text:?}");
    assert!(
        !text.contains("**")
            && !text.contains("&amp;")
            && !text.contains("&lt;")
            && !text.contains("<h1>")
            && !text.contains("<b>")
            && !text.contains("<p>"),
        "{text:?}"
    );
    assert_eq!(p.body["rendered"], email["text"]);
    assert_eq!(
        p.body["characters"],
        json!(text.chars().count()),
        "{}",
        p.text
    );
    assert!(p.body["segments"].is_null() && p.body["encoding"].is_null());

    // The editor's preview: the same for the contact.
    let tp = |body: Value| {
        let (app, admin) = (&app, s.admin.clone());
        async move { app.post("/api/v1/templates/preview", &admin, body).await }
    };
    let r = tp(json!({"body": "", "email": full_email(), "contact_id": s.tom})).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["email"], p.body["email"], "{}", r.text);
    // A body given is the text as it is, rendered (not escaped).
    let r = tp(json!({"body": "Hi {{ name }}", "email": full_email(), "contact_id": s.tom})).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["email"]["text"], "Hi Tom & <Jerry>");
    assert_eq!(r.body["rendered"], "Hi Tom & <Jerry>");
    assert_eq!(r.body["email"]["html"], expected_html);
    // Without a contact: every variable as its name in capitals.
    let r = tp(json!({"body": "", "email": full_email()})).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["email"]["subject"], "Hello NAME, your PLAN plan");
    assert_eq!(
        r.body["email"]["html"],
        "<h1>Hello NAME</h1>\n<p>Your <b>PLAN</b> plan renews soon.</p>"
    );
    assert!(
        r.body["email"]["text"]
            .as_str()
            .unwrap()
            .contains("Hello NAME"),
        "{}",
        r.text
    );
    // The parts are checked as at create.
    let r = tp(json!({"body": "", "email": {"subject": ""}})).await;
    field_error(&r, "email.subject", Some("required"));
    let r = tp(json!({"body": "", "email": {"subject": "No HTML"}})).await;
    field_error(&r, "body", Some("required"));
    let r = tp(json!({"body": "x", "email": {"subject": "s", "reply_to": "not an address"}})).await;
    field_error(&r, "email.reply_to", Some("format"));
    // Without email parts, no email in the answer.
    let r = tp(json!({"body": "Hi {{ name }}", "contact_id": s.tom})).await;
    r.expect(StatusCode::OK);
    assert!(r.body["email"].is_null(), "{}", r.text);
    assert_eq!(r.body["rendered"], "Hi Tom & <Jerry>");
});
