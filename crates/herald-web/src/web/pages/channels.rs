//! Channels: the providers campaigns send through. Admins create them (each kind's settings
//! and secrets in its own fieldset) and send a test message through one.

use super::super::client::{query, segment};
use super::super::forms::idempotency_token;
use super::super::render::{PageMeta, page};
use super::super::session::redirect_with;
use super::super::{Ctx, FormErrors, Payload, PostForm, Web};
use super::{api_failed, items};
use crate::channel_kind::{ALL, ChannelKind, Field, Input};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The kinds and their settings as the API's `config` and `secrets` take them, in each
/// kind's descriptor's order; a setting the form does not show is left out.
fn form_fields(kind: ChannelKind) -> impl Iterator<Item = &'static Field> {
    kind.fields().iter().filter(|f| f.in_form)
}

fn kinds_view() -> Value {
    let kinds: Vec<Value> = ALL
        .iter()
        .map(|kind| {
            let fields: Vec<Value> = form_fields(*kind)
                .map(|field| {
                    let (input_name, options): (&str, &[&str]) = match field.input {
                        Input::Text => ("text", &[]),
                        Input::Number => ("number", &[]),
                        Input::Checkbox => ("checkbox", &[]),
                        Input::Secret => ("secret", &[]),
                        Input::Choice(o) => ("choice", o),
                    };
                    let section = field.section();
                    json!({
                        "key": field.key,
                        "label": field.label,
                        "input": input_name,
                        "options": options,
                        "hint": field.hint,
                        "section": section,
                        "path": format!("{section}.{}", field.key),
                    })
                })
                .collect();
            json!({"kind": kind.as_str(), "label": kind.descriptor().label, "fields": fields})
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
    // Any other kind is sent as given, with no settings: the API names what is wrong.
    if let Ok(known) = kind.parse::<ChannelKind>() {
        for field in form_fields(known) {
            let key = field.key;
            let name = format!("{kind}.{key}");
            let value = if field.is_secret() {
                form.raw(&name)
            } else {
                form.get(&name)
            };
            match field.input {
                Input::Checkbox => {
                    if !value.is_empty() {
                        config.insert(key.into(), json!(true));
                    }
                }
                _ if value.is_empty() => {}
                Input::Secret => {
                    secrets.insert(key.into(), json!(value));
                }
                input => {
                    config.insert(key.into(), typed(value, input));
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
        json!({"kind": crate::channel_kind::sandbox::KIND.as_str()}),
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
            !ALL.iter().any(|kind| {
                kind.fields()
                    .iter()
                    .any(|f| f.is_secret() && *k == format!("{kind}.{}", f.key))
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

/// Sets or removes a channel's prices (PUT or DELETE /api/v1/channels/{id}/pricing) and
/// says what happened on the channels page.
pub async fn pricing(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let id = segment(form.get("channel_id"));
    let path = format!("/api/v1/channels/{id}/pricing");
    let reply = if form.get("clear").is_empty() {
        let prefixes: serde_json::Map<String, Value> = form
            .raw("prefixes")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once('=') {
                Some((prefix, price)) => (prefix.trim().to_string(), json!(price.trim())),
                // No `=`: sent as is, so the API names the line in its refusal.
                None => (l.to_string(), json!("")),
            })
            .collect();
        let per_unit = form.get("per_unit");
        let body = json!({
            "currency": form.get("currency"),
            "per_unit": (!per_unit.is_empty()).then_some(per_unit),
            "prefixes": prefixes,
        });
        web.api(&ctx.session, Method::PUT, &path, Payload::Json(body), None)
            .await
    } else {
        web.api(&ctx.session, Method::DELETE, &path, Payload::None, None)
            .await
    };
    let name = reply.body["name"].as_str().unwrap_or_default().to_string();
    let message = match (reply.ok(), form.get("clear").is_empty()) {
        (true, true) => format!("Prices of channel “{name}” set."),
        (true, false) => format!("Prices of channel “{name}” removed."),
        (false, _) => format!("!Prices refused: {}", reply.message()),
    };
    redirect_with("/channels", &message, ctx.secure)
}
