//! Webhooks: the endpoints Herald sends the organisation's events to. Everyone sees the
//! endpoints and their delivery log; admins create them (the signing secret is shown once),
//! send test events, replay deliveries, rotate the secret, disable, enable and delete them.
//! Every action goes through the API, with its rules and roles.

use super::super::client::{query, segment};
use super::super::forms::idempotency_token;
use super::super::render::{PageMeta, page};
use super::super::session::redirect_with;
use super::super::{Ctx, FormErrors, Payload, PostForm, Web};
use super::{api_failed, error_page, items};
use crate::events::EventType;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

/// Every subscribable type, with its description and whether a new endpoint gets it by
/// default.
fn event_choices() -> Value {
    let defaults = EventType::default_subscription();
    Value::Array(
        EventType::ALL
            .iter()
            .filter(|t| t.is_subscribable())
            .map(|t| {
                json!({
                    "name": t.as_str(),
                    "description": t.description(),
                    "default": defaults.contains(t),
                    "slug": t.as_str().replace(['.', '_'], "-"),
                })
            })
            .collect(),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct WebhooksQuery {
    #[serde(default)]
    cursor: String,
}

async fn render_list(
    web: &Web,
    ctx: &Ctx,
    status: StatusCode,
    errors: FormErrors,
    values: Value,
    cursor: &str,
) -> Response {
    let path = format!(
        "/api/v1/webhooks{}",
        query(&[("cursor", cursor), ("limit", "100")])
    );
    let reply = web.get(&ctx.session, &path).await;
    if !reply.ok() {
        return api_failed(ctx, "Webhooks", &reply);
    }
    let next = reply.body["next_cursor"]
        .as_str()
        .map(|c| format!("/webhooks{}", query(&[("cursor", c)])));
    let open = !errors.is_empty() || items(&reply).as_array().is_some_and(|a| a.is_empty());
    page(
        ctx,
        PageMeta {
            status,
            section: "webhooks",
            title: "Webhooks",
        },
        "webhooks.html",
        json!({
            "endpoints": items(&reply),
            "next": next,
            "events": event_choices(),
            "errors": errors,
            "values": values,
            "open": open,
            "idem": idempotency_token(),
        }),
    )
}

pub async fn list(State(web): State<Web>, ctx: Ctx, Query(q): Query<WebhooksQuery>) -> Response {
    render_list(
        &web,
        &ctx,
        StatusCode::OK,
        FormErrors::none(),
        json!({}),
        &q.cursor,
    )
    .await
}

pub async fn create(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let chosen: Vec<&str> = form.all("events");
    let mut body = json!({"url": form.get("url"), "events": chosen});
    let description = form.get("description");
    if !description.is_empty() {
        body["description"] = json!(description);
    }
    let idem = form.get("_idem");
    let reply = web
        .api(
            &ctx.session,
            Method::POST,
            "/api/v1/webhooks",
            Payload::Json(body),
            (!idem.is_empty()).then_some(idem),
        )
        .await;
    if !reply.ok() {
        let mut values = json!(form.values());
        values["events"] = json!(chosen);
        return render_list(
            &web,
            ctx,
            reply.status,
            FormErrors::from_reply(&reply),
            values,
            "",
        )
        .await;
    }
    let id = reply.body["id"].as_str().unwrap_or_default();
    match reply.body["secret"].as_str() {
        Some(secret) => page(
            ctx,
            PageMeta {
                status: StatusCode::CREATED,
                section: "webhooks",
                title: "Webhook endpoint created",
            },
            "secret.html",
            json!({
                "heading": "Webhook endpoint created",
                "what": format!(
                    "Endpoint {id} ({}) gets its events signed with the secret below. Copy it now into the receiver's configuration: Herald keeps it sealed and cannot show it again (rotate it for a new one).",
                    reply.body["url"].as_str().unwrap_or_default()
                ),
                "secret": secret,
                "usage": "Verify each request's webhook-signature header with it (Standard Webhooks; any of its libraries does it). Select the text to copy it.",
                "back": format!("/webhooks/{id}"),
                "back_text": "Go to the endpoint",
            }),
        ),
        // A replay of the same form (Idempotency-Key): the secret was shown the first time.
        None => redirect_with(
            &format!("/webhooks/{id}"),
            "This endpoint was already created by this form; its secret was shown then. Rotate it for a new one.",
            ctx.secure,
        ),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DeliveriesQuery {
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    status: String,
}

pub async fn detail(
    State(web): State<Web>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Response {
    let base = format!("/api/v1/webhooks/{}", segment(&id));
    let endpoint = web.get(&ctx.session, &base).await;
    if !endpoint.ok() {
        return api_failed(&ctx, "Webhook endpoint", &endpoint);
    }
    let path = format!(
        "{base}/deliveries{}",
        query(&[
            ("cursor", q.cursor.as_str()),
            ("status", q.status.as_str()),
            ("limit", "50")
        ])
    );
    let log = web.get(&ctx.session, &path).await;
    if !log.ok() {
        return api_failed(&ctx, "Delivery log", &log);
    }
    let next = log.body["next_cursor"].as_str().map(|c| {
        format!(
            "/webhooks/{}{}",
            segment(&id),
            query(&[("cursor", c), ("status", q.status.as_str())])
        )
    });
    page(
        &ctx,
        PageMeta {
            status: StatusCode::OK,
            section: "webhooks",
            title: "Webhook endpoint",
        },
        "webhook.html",
        json!({
            "w": endpoint.body,
            "deliveries": items(&log),
            "next": next,
            "status": q.status,
            "statuses": ["pending", "delivered", "failed"],
            "idem": idempotency_token(),
        }),
    )
}

/// The admin actions of the endpoint page: test, replay, rotate, enable, disable, delete.
pub async fn act(
    State(web): State<Web>,
    Path((id, action)): Path<(String, String)>,
    form: PostForm,
) -> Response {
    let ctx = &form.ctx;
    let base = format!("/api/v1/webhooks/{}", segment(&id));
    let here = format!("/webhooks/{}", segment(&id));
    let idem = form.get("_idem");
    let idem = (!idem.is_empty()).then_some(idem);
    let (method, path, payload) = match action.as_str() {
        "test" => (Method::POST, format!("{base}/test"), Payload::None),
        "rotate" => (Method::POST, format!("{base}/rotate-secret"), Payload::None),
        "enable" => (
            Method::PATCH,
            base.clone(),
            Payload::Json(json!({"enabled": true})),
        ),
        "disable" => (
            Method::PATCH,
            base.clone(),
            Payload::Json(json!({"enabled": false})),
        ),
        "delete" => (Method::DELETE, base.clone(), Payload::None),
        "replay" => {
            let event = form.get("event_id");
            let body = if event.is_empty() {
                json!({"failed_since": form.get("failed_since")})
            } else {
                json!({"event_id": event})
            };
            (Method::POST, format!("{base}/replay"), Payload::Json(body))
        }
        _ => {
            return error_page(
                ctx,
                StatusCode::NOT_FOUND,
                "There is no such action",
                "an endpoint can be tested, replayed, rotated, enabled, disabled or deleted",
            );
        }
    };
    let reply = web.api(&ctx.session, method, &path, payload, idem).await;
    if !reply.ok() {
        let message = format!("!{} failed: {}", capital(&action), reply.message());
        let back = if action == "delete" && reply.status == StatusCode::NOT_FOUND {
            "/webhooks".to_string()
        } else {
            here
        };
        return redirect_with(&back, &message, ctx.secure);
    }
    let b = &reply.body;
    match action.as_str() {
        "rotate" => match b["secret"].as_str() {
            Some(secret) => page(
                ctx,
                PageMeta {
                    status: StatusCode::OK,
                    section: "webhooks",
                    title: "Signing secret rotated",
                },
                "secret.html",
                json!({
                    "heading": "Signing secret rotated",
                    "what": format!(
                        "Endpoint {id} has a new signing secret, below. Until {} Herald signs with both the new and the previous secret, so the receiver can switch without missing a request. Copy it now: it is not shown again.",
                        b["previous_secret_until"].as_str().unwrap_or("24 hours from now")
                    ),
                    "secret": secret,
                    "usage": "Select the text to copy it into the receiver's configuration.",
                    "back": here,
                    "back_text": "Back to the endpoint",
                }),
            ),
            None => redirect_with(
                &here,
                "The secret was rotated by this form already; it was shown then.",
                ctx.secure,
            ),
        },
        "test" => redirect_with(
            &here,
            &format!(
                "Test event {} written (seq {}); it shows below once it is sent.",
                b["event_id"].as_str().unwrap_or_default(),
                b["seq"]
            ),
            ctx.secure,
        ),
        "replay" => {
            let replayed = b["replayed"].as_i64().unwrap_or(0);
            let mut message = format!(
                "{replayed} deliver{} set back to pending, due now.",
                if replayed == 1 { "y" } else { "ies" }
            );
            if b["already_pending"].as_i64().unwrap_or(0) > 0 {
                message.push_str(" It was pending already.");
            }
            if b["more"].as_bool().unwrap_or(false) {
                message.push_str(" More are left: replay again.");
            }
            redirect_with(&here, &message, ctx.secure)
        }
        "delete" => redirect_with(
            "/webhooks",
            &format!(
                "Endpoint {id} deleted, with its deliveries: events still pending for it will not be sent."
            ),
            ctx.secure,
        ),
        "enable" => redirect_with(
            &here,
            "Endpoint enabled: Herald sends to it again.",
            ctx.secure,
        ),
        _ => redirect_with(
            &here,
            "Endpoint disabled: Herald sends it nothing until it is enabled again.",
            ctx.secure,
        ),
    }
}

fn capital(action: &str) -> String {
    match action {
        "test" => "Sending the test event",
        "rotate" => "Rotating the secret",
        "enable" => "Enabling the endpoint",
        "disable" => "Disabling the endpoint",
        "delete" => "Deleting the endpoint",
        _ => "Replaying",
    }
    .to_string()
}
