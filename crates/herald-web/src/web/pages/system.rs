//! The system page: what `herald doctor` reports (database, live instances, stuck
//! campaigns, counter drift, messages in doubt), every engine instance, and the
//! organisation's alerts to people (docs/ALERTS.md): who is told through which channels, the
//! latest alerts, and for admins the settings form and a test alert. Everything comes from
//! the API (`/api/v1/health`, `/api/v1/instances`, `/api/v1/alerts/settings`,
//! `/api/v1/alerts`), with its rules and roles.

use super::super::forms::idempotency_token;
use super::super::render::{self, PageMeta};
use super::super::session::redirect_with;
use super::super::{Ctx, FormErrors, Payload, PostForm, Web};
use super::items;
use crate::alerts::MAX_IN_DOUBT_THRESHOLD;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

/// How many alerts the page lists (the newest).
const LATEST_ALERTS: &str = "10";

/// A channel of the organisation as the alerts section shows it: name, kind, availability.
/// A channel the list does not hold (removed since) is shown by its id alone.
fn channel_summary(channels: &Value, id: &Value) -> Value {
    let Some(id) = id.as_str() else {
        return Value::Null;
    };
    let found = channels
        .as_array()
        .and_then(|all| all.iter().find(|c| c["id"].as_str() == Some(id)));
    match found {
        Some(c) => json!({
            "id": id,
            "name": c["name"],
            "kind": c["kind"],
            "unavailable": c["availability"].as_str() == Some("unavailable"),
            "unavailable_reason": c["unavailable_reason"],
        }),
        None => json!({"id": id, "name": Value::Null}),
    }
}

/// The settings form's fields filled from the settings in force: recipients one per line,
/// the threshold empty when it is Herald's default.
fn form_values(settings: &Value) -> Value {
    let recipients: Vec<&str> = settings["recipients"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let threshold = if settings["in_doubt_threshold_is_default"].as_bool() == Some(true) {
        String::new()
    } else {
        settings["in_doubt_threshold"]
            .as_i64()
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    json!({
        "recipients": recipients.join("\n"),
        "channel_id": settings["channel_id"].as_str().unwrap_or_default(),
        "fallback_channel_id": settings["fallback_channel_id"].as_str().unwrap_or_default(),
        "in_doubt_threshold": threshold,
    })
}

/// The alert settings form as it was sent, or None to fill it from the settings in force.
struct Returned {
    errors: FormErrors,
    values: Value,
}

async fn render_page(
    web: &Web,
    ctx: &Ctx,
    status: StatusCode,
    returned: Option<Returned>,
    open_settings: bool,
) -> Response {
    let alerts_path = format!("/api/v1/alerts?limit={LATEST_ALERTS}");
    let (health, instances, settings, alerts, channels) = tokio::join!(
        web.get(&ctx.session, "/api/v1/health"),
        web.get(&ctx.session, "/api/v1/instances"),
        web.get(&ctx.session, "/api/v1/alerts/settings"),
        web.get(&ctx.session, &alerts_path),
        web.get(&ctx.session, "/api/v1/channels?limit=500"),
    );
    let health_error = (!health.ok()).then(|| health.message());
    let instances_error = (!instances.ok()).then(|| instances.message());
    let settings_error = (!settings.ok()).then(|| settings.message());
    let alerts_error = (!alerts.ok()).then(|| alerts.message());
    let channels_error = (!channels.ok()).then(|| channels.message());
    let channel_list = items(&channels);
    let s = if settings.ok() {
        settings.body.clone()
    } else {
        Value::Null
    };
    // The latest alerts, each with the name of the channel that carried it (or tried to).
    let mut latest = items(&alerts);
    if let Some(list) = latest.as_array_mut() {
        for a in list {
            let via = channel_summary(&channel_list, &a["channel_id"]);
            a["via"] = via;
        }
    }
    let (errors, values, open) = match returned {
        Some(r) => (r.errors, r.values, true),
        None => (FormErrors::none(), form_values(&s), open_settings),
    };
    render::page(
        ctx,
        PageMeta {
            status,
            section: "system",
            title: "System",
        },
        "system.html",
        json!({
            "health": if health.ok() { health.body.clone() } else { Value::Null },
            "health_error": health_error,
            "instances": items(&instances),
            "instances_error": instances_error,
            "alerts": {
                "settings": s,
                "settings_error": settings_error,
                "channel": channel_summary(&channel_list, &s["channel_id"]),
                "fallback": channel_summary(&channel_list, &s["fallback_channel_id"]),
                "latest": latest,
                "latest_error": alerts_error,
                "limit": LATEST_ALERTS,
            },
            "channels": channel_list,
            "channels_error": channels_error,
            "errors": errors,
            "values": values,
            "open": open,
            "max_threshold": MAX_IN_DOUBT_THRESHOLD,
            "idem": idempotency_token(),
        }),
    )
}

pub async fn page(State(web): State<Web>, ctx: Ctx) -> Response {
    render_page(&web, &ctx, StatusCode::OK, None, false).await
}

/// `/system/alerts`: the System page with the alert settings form open (where the form's
/// answer lands when it is reloaded).
pub async fn alert_settings(State(web): State<Web>, ctx: Ctx) -> Response {
    render_page(&web, &ctx, StatusCode::OK, None, true).await
}

/// The in-doubt threshold field: empty for Herald's default, else a whole number (the API
/// checks its range).
fn threshold(text: &str) -> Result<Value, String> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    text.parse::<i64>().map(Value::from).map_err(|_| {
        format!(
            "`{text}` is not a whole number: give 0 (off) to {MAX_IN_DOUBT_THRESHOLD}, or leave it empty for Herald's default"
        )
    })
}

/// A channel field: empty for none.
fn channel_field(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        json!(text)
    }
}

/// Saves the whole alert settings document (`PUT /api/v1/alerts/settings`), as the form
/// has it: recipients one per line.
pub async fn save_alert_settings(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let values = json!(form.values());
    // The non-empty lines, with their line numbers, to name the line the API refuses.
    let lines: Vec<(usize, &str)> = form
        .raw("recipients")
        .lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i + 1, l))
        .collect();
    let recipients: Vec<&str> = lines.iter().map(|(_, l)| *l).collect();
    let in_doubt_threshold = match threshold(form.get("in_doubt_threshold")) {
        Ok(t) => t,
        Err(why) => {
            let errors = FormErrors {
                summary: Some(format!("Please correct the form: {why}")),
                ..FormErrors::none()
            }
            .field("in_doubt_threshold", super::super::client::capitalise(&why));
            return render_page(
                &web,
                ctx,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(Returned { errors, values }),
                true,
            )
            .await;
        }
    };
    let body = json!({
        "recipients": recipients,
        "channel_id": channel_field(form.get("channel_id")),
        "fallback_channel_id": channel_field(form.get("fallback_channel_id")),
        "in_doubt_threshold": in_doubt_threshold,
    });
    let reply = web
        .api(
            &ctx.session,
            Method::PUT,
            "/api/v1/alerts/settings",
            Payload::Json(body),
            None,
        )
        .await;
    if reply.status == StatusCode::FORBIDDEN {
        // No form to put it on (a viewer has none): say it at the top of the page.
        return redirect_with(
            "/system",
            &format!("!Saving the alert settings failed: {}", reply.message()),
            ctx.secure,
        );
    }
    if !reply.ok() {
        return render_page(
            &web,
            ctx,
            reply.status,
            Some(Returned {
                errors: name_the_line(FormErrors::from_reply(&reply), &lines),
                values,
            }),
            true,
        )
        .await;
    }
    let count = reply.body["recipients"].as_array().map_or(0, Vec::len);
    let message = if count == 0 {
        "Alert settings saved. There are no recipients: alerts reach no one until one is added."
            .to_string()
    } else {
        format!(
            "Alert settings saved: {count} recipient{}. Send a test alert to check they are reached.",
            if count == 1 { "" } else { "s" }
        )
    };
    redirect_with("/system", &message, ctx.secure)
}

/// The API names a refused recipient by its place in the list (`recipients[1]`); the form
/// says which line of the text box that is.
fn name_the_line(mut errors: FormErrors, lines: &[(usize, &str)]) -> FormErrors {
    let refused = errors.fields.iter().find_map(|(field, detail)| {
        let index = field
            .strip_prefix("recipients[")?
            .strip_suffix(']')?
            .parse::<usize>()
            .ok()?;
        let (line, _) = lines.get(index)?;
        Some(format!("Line {line}: {detail}"))
    });
    if let Some(message) = refused {
        errors.summary = Some(format!("Please correct the recipients. {message}"));
        errors.fields.insert("recipients".to_string(), message);
    }
    errors
}

/// Sends a test alert to every recipient (`POST /api/v1/alerts/test`).
pub async fn send_test_alert(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let idem = form.get("_idem");
    let reply = web
        .api(
            &ctx.session,
            Method::POST,
            "/api/v1/alerts/test",
            Payload::None,
            (!idem.is_empty()).then_some(idem),
        )
        .await;
    if !reply.ok() {
        return redirect_with(
            "/system",
            &format!("!Sending the test alert failed: {}", reply.message()),
            ctx.secure,
        );
    }
    let queued = reply.body["queued"].as_u64().unwrap_or(0);
    redirect_with(
        "/system",
        &format!(
            "{queued} test alert{} queued, one per recipient: each shows under Latest alerts below, sent or undeliverable with the reason, once the engine has tried it.",
            if queued == 1 { "" } else { "s" }
        ),
        ctx.secure,
    )
}
