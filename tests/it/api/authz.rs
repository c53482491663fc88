//! The authorisation walk: every route of the API, taken from the OpenAPI document that is
//! generated together with the router (so a new route cannot escape), is called
//! - without credentials: 401, a problem document;
//! - with an API key one role below the route's declared scope: 403;
//! - for another organisation's resource, with an owner key: 404, never 403, never data;
//!
//! Every list answers without any of the other organisation's ids.
//!
//! A route that needs a body gets a valid one from `sample_body`; a new route without a
//! sample still gets walked (with `{}`), and fails here if it answers anything but the
//! expected status, which is the point.

use super::{Auth, TestApp, api_test};
use axum::http::{Method, StatusCode};
use herald::domain::Role;
use herald::ids::OrgId;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One resource of each kind in an organisation, by path parameter name.
struct Fixture {
    ids: BTreeMap<&'static str, String>,
}

impl Fixture {
    async fn create(app: &TestApp, org: OrgId, tag: &str) -> Fixture {
        let owner = Auth::Key(app.key(org, Role::Owner).await);
        let mut ids = BTreeMap::new();
        let created = |reply: &super::Reply, what: &str| -> String {
            assert!(
                reply.status.is_success(),
                "creating the {what} fixture failed: {}",
                reply.text
            );
            reply.body["id"]
                .as_str()
                .or_else(|| reply.body["user"]["id"].as_str())
                .or_else(|| reply.body["api_key"]["id"].as_str())
                .unwrap_or_else(|| panic!("no id in {}", reply.text))
                .to_string()
        };
        let contact = app
            .post(
                "/api/v1/contacts",
                &owner,
                json!({"address": format!("+1555000{}", if tag == "a" { "1001" } else { "2002" }), "name": tag}),
            )
            .await;
        ids.insert("contact_id", created(&contact, "contact"));
        let list = app
            .post(
                "/api/v1/lists",
                &owner,
                json!({"name": format!("list-{tag}")}),
            )
            .await;
        ids.insert("list_id", created(&list, "list"));
        app.post(
            &format!("/api/v1/lists/{}/members", ids["list_id"]),
            &owner,
            json!({"contact_ids": [ids["contact_id"]]}),
        )
        .await
        .expect(StatusCode::OK);
        let channel = app
            .post(
                "/api/v1/channels",
                &owner,
                json!({"name": format!("sandbox-{tag}"), "kind": "sandbox", "config": {}}),
            )
            .await;
        ids.insert("channel_id", created(&channel, "channel"));
        let campaign = app
            .post(
                "/api/v1/campaigns",
                &owner,
                json!({"name": format!("campaign-{tag}"), "channel_id": ids["channel_id"], "list_id": ids["list_id"], "body": "Hello {{ name }}"}),
            )
            .await;
        ids.insert("campaign_id", created(&campaign, "campaign"));
        let user = app
            .post(
                "/api/v1/users",
                &owner,
                json!({"email": format!("viewer-{tag}@example.org"), "role": "viewer"}),
            )
            .await;
        ids.insert("user_id", created(&user, "user"));
        let key = app
            .post(
                "/api/v1/api-keys",
                &owner,
                json!({"name": format!("key-{tag}"), "role": "viewer"}),
            )
            .await;
        ids.insert("api_key_id", created(&key, "API key"));
        let address = format!("blocked-{tag}@example.org");
        app.post(
            "/api/v1/suppressions",
            &owner,
            json!({"address": address, "reason": "test"}),
        )
        .await;
        ids.insert("address", address);
        let webhook = app
            .post(
                "/api/v1/webhooks",
                &owner,
                json!({"url": format!("http://127.0.0.1:9/hook-{tag}"), "description": tag}),
            )
            .await;
        ids.insert("webhook_id", created(&webhook, "webhook endpoint"));
        Fixture { ids }
    }

    /// `template` with `{name}` parameters replaced by this fixture's ids. The route's
    /// parameter names are mapped by the resource the path segment before them names.
    fn path(&self, template: &str) -> String {
        let segments: Vec<&str> = template.split('/').collect();
        let mut out = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            if seg.starts_with('{') && seg.ends_with('}') {
                let name = &seg[1..seg.len() - 1];
                let key = param_kind(name, segments.get(i.wrapping_sub(1)).copied());
                let value = self
                    .ids
                    .get(key)
                    .unwrap_or_else(|| panic!("no fixture for parameter {name} in {template}"));
                out.push(value.clone());
            } else {
                out.push((*seg).to_string());
            }
        }
        out.join("/")
    }
}

/// Which fixture a path parameter names: explicit names first, then `{id}` by the
/// collection before it.
fn param_kind(name: &str, previous: Option<&str>) -> &'static str {
    match name {
        "contact_id" => "contact_id",
        "list_id" => "list_id",
        "channel_id" => "channel_id",
        "campaign_id" => "campaign_id",
        "address" => "address",
        "id" => match previous {
            Some("contacts") => "contact_id",
            Some("lists") => "list_id",
            Some("channels") => "channel_id",
            Some("campaigns") => "campaign_id",
            Some("users") => "user_id",
            Some("api-keys") => "api_key_id",
            Some("webhooks") => "webhook_id",
            other => panic!("add the collection {other:?} to param_kind"),
        },
        other => panic!("add the path parameter {other} to param_kind"),
    }
}

/// A valid body for routes that need one (for the caller's own fixture).
fn sample_body(method: &Method, template: &str, own: &Fixture) -> Option<Value> {
    let body = match (method.as_str(), template) {
        ("POST", "/api/v1/auth/login") => {
            json!({"email": "nobody@example.org", "password": "wrong password!"})
        }
        ("POST", "/api/v1/contacts") => json!({"address": "+15550009999"}),
        ("PATCH", "/api/v1/contacts/{id}") => json!({"name": "renamed"}),
        ("POST", "/api/v1/lists") => json!({"name": "another"}),
        ("PATCH", "/api/v1/lists/{id}") => json!({"name": "renamed"}),
        ("POST", "/api/v1/lists/{id}/members") => json!({"contact_ids": [own.ids["contact_id"]]}),
        ("POST", "/api/v1/suppressions") => json!({"address": "x@example.org"}),
        ("POST", "/api/v1/replies/read") => json!({"address": "+15550001234"}),
        ("POST", "/api/v1/segments/count") => json!({"filter": "name exists"}),
        ("POST", "/api/v1/channels") => json!({"name": "another", "kind": "sandbox", "config": {}}),
        ("PATCH", "/api/v1/channels/{id}") => json!({"rate_per_sec": 10.0}),
        ("POST", "/api/v1/channels/{id}/test") => json!({"to": "+15550001234"}),
        ("PUT", "/api/v1/channels/{id}/pricing") => json!({"currency": "USD", "per_unit": "0.01"}),
        ("POST", "/api/v1/campaigns") => {
            json!({"name": "c", "channel_id": own.ids["channel_id"], "list_id": own.ids["list_id"], "body": "hi"})
        }
        ("PATCH", "/api/v1/campaigns/{id}") => json!({"name": "renamed"}),
        ("POST", "/api/v1/campaigns/{id}/schedule") => json!({"at": "2099-01-01T00:00:00Z"}),
        ("POST", "/api/v1/templates/preview") => json!({"body": "hi {{ name }}"}),
        ("POST", "/api/v1/users") => json!({"email": "new@example.org", "role": "viewer"}),
        ("PATCH", "/api/v1/users/{id}") => json!({"role": "viewer"}),
        ("POST", "/api/v1/api-keys") => json!({"name": "k", "role": "viewer"}),
        ("POST", "/api/v1/webhooks") => json!({"url": "http://127.0.0.1:9/another"}),
        ("PATCH", "/api/v1/webhooks/{id}") => json!({"description": "renamed"}),
        ("POST", "/api/v1/webhooks/{id}/replay") => json!({"failed_since": "2000-01-01T00:00:00Z"}),
        ("PATCH", "/api/v1/organisation") => json!({"auto_pause": "30%/200"}),
        ("PUT", "/api/v1/alerts/settings") => {
            json!({"channel_id": own.ids["channel_id"], "recipients": ["ops@example.org"]})
        }
        ("POST", _) | ("PATCH", _) | ("PUT", _) => json!({}),
        _ => return None,
    };
    Some(body)
}

/// A route, as the OpenAPI document declares it.
struct Route {
    method: Method,
    template: String,
    /// The lowest role allowed; None for a public route.
    role: Option<Role>,
}

fn routes_of_document() -> Vec<Route> {
    let doc = serde_json::to_value(herald::api::openapi()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = match method.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                "patch" => Method::PATCH,
                "put" => Method::PUT,
                "delete" => Method::DELETE,
                _ => continue,
            };
            let scopes: Vec<Role> = op["security"]
                .as_array()
                .map(|reqs| {
                    reqs.iter()
                        .filter_map(|r| r.as_object())
                        .flat_map(|r| r.values())
                        .filter_map(|v| v.as_array())
                        .flatten()
                        .filter_map(|s| s.as_str())
                        .map(|s| Role::parse(s).unwrap_or_else(|| panic!("scope {s} on {path}")))
                        .collect()
                })
                .unwrap_or_default();
            if let (Some(first), true) = (scopes.first(), !scopes.is_empty()) {
                assert!(
                    scopes.iter().all(|s| s == first),
                    "{method} {path} declares different roles for its security schemes"
                );
            }
            routes.push(Route {
                method,
                template: path.clone(),
                role: scopes.first().copied(),
            });
        }
    }
    routes
}

fn role_below(role: Role) -> Option<Role> {
    match role {
        Role::Viewer => None,
        Role::Editor => Some(Role::Viewer),
        Role::Admin => Some(Role::Editor),
        Role::Owner => Some(Role::Admin),
    }
}

/// Every string in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

api_test!(
    every_route_refuses_the_unauthenticated_the_underprivileged_and_other_tenants,
    |app| async move {
        let own = Fixture::create(&app, app.org, "a").await;
        let other = Fixture::create(&app, app.other_org, "b").await;
        let routes = routes_of_document();
        assert!(
            routes.len() >= 30,
            "only {} routes in the document",
            routes.len()
        );
        let public: Vec<String> = routes
            .iter()
            .filter(|r| r.role.is_none())
            .map(|r| format!("{} {}", r.method, r.template))
            .collect();
        assert_eq!(
            public,
            vec!["POST /api/v1/auth/login".to_string()],
            "only sign-in is public"
        );

        let owner = Auth::Key(app.key(app.org, Role::Owner).await);
        let mut keys = BTreeMap::new();
        for role in Role::ALL {
            keys.insert(role, Auth::Key(app.key(app.org, role).await));
        }
        let other_ids: Vec<&String> = other.ids.values().collect();
        for route in routes.iter().filter(|r| r.role.is_some()) {
            let role = route.role.unwrap_or(Role::Viewer);
            let what = format!("{} {}", route.method, route.template);
            let own_path = own.path(&route.template);
            let body = sample_body(&route.method, &route.template, &own);

            let reply = app
                .call(route.method.clone(), &own_path, &Auth::None, body.clone())
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{what} without credentials: {}",
                reply.text
            );
            assert_eq!(reply.content_type(), "application/problem+json", "{what}");

            if let Some(below) = role_below(role) {
                let reply = app
                    .call(route.method.clone(), &own_path, &keys[&below], body.clone())
                    .await;
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{what} as {below}: {}",
                    reply.text
                );
                assert_eq!(reply.content_type(), "application/problem+json", "{what}");
            }

            if route.template.contains('{') {
                let other_path = other.path(&route.template);
                let reply = app
                    .call(route.method.clone(), &other_path, &owner, body.clone())
                    .await;
                assert_eq!(
                    reply.status,
                    StatusCode::NOT_FOUND,
                    "{what} for another organisation's resource ({other_path}): {}",
                    reply.text
                );
                let mut seen = Vec::new();
                strings(&reply.body, &mut seen);
                for id in &other_ids {
                    assert!(!seen.contains(id), "{what} revealed {id}: {}", reply.text);
                }
            } else if route.method == Method::GET {
                let reply = app.get(&own_path, &owner).await;
                assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.text);
                let mut seen = Vec::new();
                strings(&reply.body, &mut seen);
                for id in &other_ids {
                    assert!(
                        !seen.contains(id),
                        "{what} listed the other organisation's {id}"
                    );
                }
            }
        }
    }
);
