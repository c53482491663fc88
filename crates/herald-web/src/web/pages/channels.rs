//! Channels: the providers campaigns send through. Admins create them (each kind's settings
//! and secrets in its own fieldset) and send a test message through one.

use super::super::client::{query, segment};
use super::super::forms::idempotency_token;
use super::super::render::{PageMeta, page};
use super::super::session::redirect_with;
use super::super::{Ctx, FormErrors, Payload, PostForm, Web};
use super::{api_failed, items};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How a setting is entered.
#[derive(Clone, Copy, PartialEq)]
enum Input {
    Text,
    Number,
    Checkbox,
    Secret,
    Choice(&'static [&'static str]),
}

/// One setting of a channel kind: (key, label, input, hint).
type Setting = (&'static str, &'static str, Input, &'static str);

/// The kinds and their settings, as the API's `config` and `secrets` take them.
const KINDS: &[(&str, &str, &[Setting])] = &[
    (
        "sandbox",
        "Sandbox (simulated provider, sends nothing)",
        &[
            (
                "latency_ms",
                "Latency (ms)",
                Input::Number,
                "Simulated provider round trip per message.",
            ),
            (
                "fail_rate",
                "Transient failure rate (0 to 1)",
                Input::Number,
                "Share of sends that fail and are retried, e.g. 0.05.",
            ),
            (
                "permanent_fail_rate",
                "Permanent failure rate (0 to 1)",
                Input::Number,
                "Share of sends that fail for good.",
            ),
            (
                "delivery_delay_ms",
                "Delivery receipt after (ms)",
                Input::Number,
                "Leave empty for no delivery receipts.",
            ),
        ],
    ),
    (
        "twilio",
        "Twilio (SMS, or WhatsApp through Twilio)",
        &[
            ("account_sid", "Account SID", Input::Text, ""),
            (
                "auth_token",
                "Auth token",
                Input::Secret,
                "Stored encrypted; never shown again.",
            ),
            (
                "from",
                "From number",
                Input::Text,
                "E.164, e.g. +15551234567; or give a messaging service SID instead.",
            ),
            (
                "messaging_service_sid",
                "Messaging service SID",
                Input::Text,
                "",
            ),
            (
                "content_sid",
                "Content SID",
                Input::Text,
                "For WhatsApp templates.",
            ),
            ("whatsapp", "Send over WhatsApp", Input::Checkbox, ""),
            (
                "base_url",
                "API base URL",
                Input::Text,
                "Only to point at a test double.",
            ),
        ],
    ),
    (
        "whatsapp",
        "WhatsApp Cloud API",
        &[
            ("phone_number_id", "Phone number ID", Input::Text, ""),
            (
                "access_token",
                "Access token",
                Input::Secret,
                "Stored encrypted; never shown again.",
            ),
            (
                "app_secret",
                "App secret",
                Input::Secret,
                "Checks webhook signatures.",
            ),
            ("verify_token", "Webhook verify token", Input::Secret, ""),
            ("template", "Template name", Input::Text, ""),
            (
                "template_language",
                "Template language",
                Input::Text,
                "e.g. en_US",
            ),
            (
                "api_version",
                "Graph API version",
                Input::Text,
                "e.g. v21.0",
            ),
            (
                "base_url",
                "API base URL",
                Input::Text,
                "Only to point at a test double.",
            ),
        ],
    ),
    (
        "smtp",
        "Email over SMTP",
        &[
            ("host", "SMTP host", Input::Text, ""),
            ("port", "Port", Input::Number, ""),
            (
                "tls",
                "TLS",
                Input::Choice(&["starttls", "tls", "none"]),
                "",
            ),
            (
                "from",
                "From address",
                Input::Text,
                "e.g. News <news@example.org>",
            ),
            ("username", "Username", Input::Text, ""),
            (
                "password",
                "Password",
                Input::Secret,
                "Stored encrypted; never shown again.",
            ),
            ("default_subject", "Default subject", Input::Text, ""),
            ("max_connections", "Max connections", Input::Number, ""),
            (
                "allow_plaintext_auth",
                "Send the password without TLS (TLS none, a relay on a trusted network only)",
                Input::Checkbox,
                "",
            ),
        ],
    ),
];

fn kinds_view() -> Value {
    let kinds: Vec<Value> = KINDS
        .iter()
        .map(|(kind, label, settings)| {
            let fields: Vec<Value> = settings
                .iter()
                .map(|(key, label, input, hint)| {
                    let (input_name, options): (&str, &[&str]) = match input {
                        Input::Text => ("text", &[]),
                        Input::Number => ("number", &[]),
                        Input::Checkbox => ("checkbox", &[]),
                        Input::Secret => ("secret", &[]),
                        Input::Choice(o) => ("choice", o),
                    };
                    let section = if *input == Input::Secret {
                        "secrets"
                    } else {
                        "config"
                    };
                    json!({
                        "key": key,
                        "label": label,
                        "input": input_name,
                        "options": options,
                        "hint": hint,
                        "section": section,
                        "path": format!("{section}.{key}"),
                    })
                })
                .collect();
            json!({"kind": kind, "label": label, "fields": fields})
        })
        .collect();
    Value::Array(kinds)
}

/// A form value as JSON: a number when it reads as one (the API names the field if a
/// number was expected and this is not one).
fn typed(value: &str, input: Input) -> Value {
    if input == Input::Number {
        if let Ok(n) = value.parse::<i64>() {
            return json!(n);
        }
        if let Ok(f) = value.parse::<f64>() {
            return json!(f);
        }
    }
    json!(value)
}

/// The API request for the form's chosen kind: only that kind's fieldset is read.
fn new_channel_body(form: &PostForm) -> Value {
    let kind = form.get("kind");
    let mut config = Map::new();
    let mut secrets = Map::new();
    if let Some((_, _, settings)) = KINDS.iter().find(|(k, _, _)| *k == kind) {
        for (key, _, input, _) in settings.iter() {
            let name = format!("{kind}.{key}");
            let value = if *input == Input::Secret {
                form.raw(&name)
            } else {
                form.get(&name)
            };
            match input {
                Input::Checkbox => {
                    if !value.is_empty() {
                        config.insert((*key).into(), json!(true));
                    }
                }
                _ if value.is_empty() => {}
                Input::Secret => {
                    secrets.insert((*key).into(), json!(value));
                }
                _ => {
                    config.insert((*key).into(), typed(value, *input));
                }
            }
        }
    }
    let mut body = json!({"name": form.get("name"), "kind": kind, "config": config});
    if !secrets.is_empty() {
        body["secrets"] = Value::Object(secrets);
    }
    let rate = form.get("rate_per_sec");
    if !rate.is_empty() {
        body["rate_per_sec"] = typed(rate, Input::Number);
    }
    body
}

#[derive(Debug, Default, Deserialize)]
pub struct ChannelsQuery {
    #[serde(default)]
    cursor: String,
}

async fn render(
    web: &Web,
    ctx: &Ctx,
    cursor: &str,
    status: StatusCode,
    errors: FormErrors,
    values: Value,
) -> Response {
    let path = format!(
        "/api/v1/channels{}",
        query(&[("cursor", cursor), ("limit", "100")])
    );
    let reply = web.get(&ctx.session, &path).await;
    if !reply.ok() {
        return api_failed(ctx, "Channels", &reply);
    }
    let next = reply.body["next_cursor"]
        .as_str()
        .map(|c| format!("/channels{}", query(&[("cursor", c)])));
    let open = !errors.is_empty() || items(&reply).as_array().is_some_and(|a| a.is_empty());
    let public_url = web.state.context.public_url.as_deref();
    let webhooks: Vec<Value> = items(&reply)
        .as_array()
        .map(|channels| {
            channels
                .iter()
                .filter_map(|c| {
                    let kind = c["kind"].as_str()?;
                    let id = c["id"].as_str()?;
                    let hooks = super::webhook_urls::for_channel(public_url, kind, id);
                    (!hooks.is_empty())
                        .then(|| json!({"name": c["name"], "kind": kind, "hooks": hooks}))
                })
                .collect()
        })
        .unwrap_or_default();
    page(
        ctx,
        PageMeta {
            status,
            section: "channels",
            title: "Channels",
        },
        "channels.html",
        json!({
            "channels": items(&reply),
            "next": next,
            "kinds": kinds_view(),
            "errors": errors,
            "values": values,
            "open": open,
            "webhooks": webhooks,
            "public_url_set": public_url.is_some_and(|u| !u.is_empty()),
            "idem": idempotency_token(),
        }),
    )
}

pub async fn list(State(web): State<Web>, ctx: Ctx, Query(q): Query<ChannelsQuery>) -> Response {
    render(
        &web,
        &ctx,
        &q.cursor,
        StatusCode::OK,
        FormErrors::none(),
        json!({"kind": "sandbox"}),
    )
    .await
}

pub async fn create(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let body = new_channel_body(&form);
    let idem = form.get("_idem");
    let reply = web
        .api(
            &ctx.session,
            Method::POST,
            "/api/v1/channels",
            Payload::Json(body),
            (!idem.is_empty()).then_some(idem),
        )
        .await;
    if reply.ok() {
        let name = reply.body["name"].as_str().unwrap_or_default();
        return redirect_with(
            "/channels",
            &format!("Channel “{name}” created. Send it a test message below."),
            ctx.secure,
        );
    }
    let mut values: Map<String, Value> = form
        .values()
        .into_iter()
        .filter(|(k, _)| {
            // Secrets are never sent back to the browser.
            !KINDS.iter().any(|(kind, _, settings)| {
                settings.iter().any(|(key, _, input, _)| {
                    *input == Input::Secret && *k == format!("{kind}.{key}")
                })
            })
        })
        .map(|(k, v)| (k, json!(v)))
        .collect();
    values.remove("_idem");
    render(
        &web,
        ctx,
        "",
        reply.status,
        FormErrors::from_reply(&reply),
        Value::Object(values),
    )
    .await
}

/// Sends one test message and reports the provider's answer on the channels page.
pub async fn test_send(State(web): State<Web>, Path(id): Path<String>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let mut body = json!({"to": form.get("to")});
    let text = form.get("body");
    if !text.is_empty() {
        body["body"] = json!(text);
    }
    let path = format!("/api/v1/channels/{}/test", segment(&id));
    let reply = web
        .api(&ctx.session, Method::POST, &path, Payload::Json(body), None)
        .await;
    let to = form.get("to");
    let message = if reply.ok() {
        let b = &reply.body;
        match b["outcome"].as_str().unwrap_or_default() {
            "accepted" => format!(
                "Test message to {to} accepted by the provider (id {}).",
                b["provider_id"].as_str().unwrap_or("unknown")
            ),
            outcome => format!(
                "Test message to {to} not accepted ({}): {}",
                outcome.replace('_', " "),
                b["error"].as_str().unwrap_or("no reason given")
            ),
        }
    } else {
        format!("Test message to {to} failed: {}", reply.message())
    };
    redirect_with("/channels", &message, ctx.secure)
}
