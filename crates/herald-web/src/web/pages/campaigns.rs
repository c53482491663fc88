//! Campaigns: the list (status filter, progress), the editor (template with a preview for
//! a chosen contact, SMS segments and encoding; send now, schedule, or keep as a draft),
//! and the detail page (progress per status, live over server-sent events in the browser,
//! throughput, the audit trail in plain language, messages, and the actions, each behind a
//! confirmation).

use super::super::client::{query, segment};
use super::super::forms::idempotency_token;
use super::super::render::{PageMeta, page};
use super::super::session::redirect_with;
use super::super::{Ctx, FormErrors, Payload, PostForm, Web};
use super::{api_failed, error_page, items};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

pub const CAMPAIGN_STATUSES: [&str; 6] = [
    "draft",
    "scheduled",
    "sending",
    "paused",
    "completed",
    "cancelled",
];

pub const MESSAGE_STATUSES: [&str; 11] = [
    "queued",
    "in_flight",
    "retry_wait",
    "in_doubt",
    "sent",
    "delivered",
    "read",
    "undelivered",
    "failed",
    "skipped",
    "cancelled",
];

/// An action on a campaign: (path segment, button text, from which statuses, what the
/// confirmation says, the flash after it).
struct Action {
    name: &'static str,
    verb: &'static str,
    from: &'static [&'static str],
    explain: &'static str,
    done: &'static str,
    danger: bool,
}

/// The statuses the resend dialog offers: the store's list of final statuses, one truth
/// with the API's `statuses` rule. Failed and undelivered are ticked at first.
fn resend_statuses() -> impl Iterator<Item = (&'static str, bool)> {
    use crate::domain::MessageStatus;
    crate::store::derive::RESENDABLE.iter().map(|s| {
        (
            s.as_str(),
            matches!(s, MessageStatus::Failed | MessageStatus::Undelivered),
        )
    })
}

/// Actions that make a new campaign: the dashboard goes to it afterwards.
const MAKES_A_CAMPAIGN: [&str; 2] = ["resend", "duplicate"];

/// Actions that take no reason (their API call has no `reason`).
const NO_REASON: [&str; 4] = ["start", "unschedule", "resend", "duplicate"];

const ACTIONS: [Action; 8] = [
    Action {
        name: "start",
        verb: "Start sending",
        from: &["draft", "scheduled"],
        explain: "Herald creates one message per distinct address of the list and starts sending through the channel. Unsubscribed, suppressed and unusable addresses are skipped.",
        done: "Campaign started.",
        danger: false,
    },
    Action {
        name: "pause",
        verb: "Pause",
        from: &["sending"],
        explain: "No new messages are sent. Messages already handed to the provider finish and are recorded. You can resume at any time.",
        done: "Campaign paused.",
        danger: false,
    },
    Action {
        name: "resume",
        verb: "Resume",
        from: &["paused"],
        explain: "Sending continues where it stopped.",
        done: "Campaign resumed.",
        danger: false,
    },
    Action {
        name: "cancel",
        verb: "Cancel campaign",
        from: &["draft", "scheduled", "sending", "paused"],
        explain: "Messages not yet sent are cancelled; this cannot be undone. Messages already handed to the provider finish.",
        done: "Campaign cancelled.",
        danger: true,
    },
    Action {
        name: "unschedule",
        verb: "Unschedule",
        from: &["scheduled"],
        explain: "The campaign goes back to draft and will not start by itself. You can schedule or start it again later.",
        done: "Campaign unscheduled: it is a draft again.",
        danger: false,
    },
    Action {
        name: "resend",
        verb: "Resend",
        from: &["sending", "paused", "completed", "cancelled"],
        explain: "Herald makes a new draft campaign, with this one's channel and template, for the recipients whose messages ended in the statuses you tick, minus anyone unsubscribed or suppressed since. Nothing is sent until you start it.",
        done: "Resend created as a draft",
        danger: false,
    },
    Action {
        name: "duplicate",
        verb: "Duplicate",
        from: &CAMPAIGN_STATUSES,
        explain: "Herald makes a new draft with this campaign's name, channel, list and template. Nothing is sent until you start it.",
        done: "Duplicate created as a draft.",
        danger: false,
    },
    Action {
        name: "complete",
        verb: "Mark complete",
        from: &["sending", "paused"],
        explain: "Marks the campaign completed by hand, for when you know its work is done. Herald refuses while any message is still pending, and records it in the audit trail.",
        done: "Campaign marked complete.",
        danger: false,
    },
];

fn actions_view() -> Value {
    Value::Array(
        ACTIONS
            .iter()
            .map(|a| {
                json!({
                    "name": a.name,
                    "verb": a.verb,
                    "from": a.from,
                    "when": a.from.join(" "),
                    "explain": a.explain,
                    "danger": a.danger,
                    "reason": !NO_REASON.contains(&a.name),
                })
            })
            .collect(),
    )
}

/// `user:ada@example.org` as a person reads it.
pub fn describe_actor(actor: &str) -> String {
    if let Some(email) = actor.strip_prefix("user:") {
        return email.to_string();
    }
    if let Some(name) = actor.strip_prefix("api_key:") {
        return format!("API key “{name}”");
    }
    if let Some(who) = actor.strip_prefix("cli:") {
        return format!("the command line ({who})");
    }
    if actor.starts_with("scheduler") {
        return "the scheduler".into();
    }
    if actor.starts_with("reconciler") {
        return "Herald's reconciler".into();
    }
    if let Some(instance) = actor.strip_prefix("instance ") {
        return format!("Herald instance {instance}");
    }
    if actor.starts_with("dispatcher") || actor.starts_with("engine") {
        return "Herald".into();
    }
    actor.to_string()
}

/// One audit-trail entry as a sentence: "Paused by ada@example.org".
pub fn describe_event(from: Option<&str>, to: &str, actor: &str) -> String {
    let who = describe_actor(actor);
    match (from, to) {
        (None, "scheduled") => format!("Created and scheduled by {who}"),
        (None, _) => format!("Created by {who}"),
        (Some("draft"), "draft") | (Some("scheduled"), "scheduled") => format!("Edited by {who}"),
        (Some(_), "scheduled") => format!("Scheduled by {who}"),
        (Some("paused"), "sending") => format!("Resumed by {who}"),
        (Some(_), "sending") => format!("Started by {who}"),
        (Some(_), "paused") => format!("Paused by {who}"),
        (Some(_), "cancelled") => format!("Cancelled by {who}"),
        (Some(_), "completed")
            if actor.starts_with("user:")
                || actor.starts_with("api_key:")
                || actor.starts_with("cli:") =>
        {
            format!("Marked complete by {who}")
        }
        (Some(_), "completed") => format!("Completed ({who})"),
        (Some(from), to) => format!("Moved from {from} to {to} by {who}"),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
}

pub async fn list(State(web): State<Web>, ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    let status = if CAMPAIGN_STATUSES.contains(&q.status.as_str()) {
        q.status.as_str()
    } else {
        ""
    };
    let path = format!(
        "/api/v1/campaigns{}",
        query(&[
            ("status", status),
            ("order", "newest"),
            ("cursor", &q.cursor),
            ("limit", "100")
        ])
    );
    let reply = web.get(&ctx.session, &path).await;
    if !reply.ok() {
        return api_failed(&ctx, "Campaigns", &reply);
    }
    let next = reply.body["next_cursor"]
        .as_str()
        .map(|c| format!("/campaigns{}", query(&[("status", status), ("cursor", c)])));
    page(
        &ctx,
        PageMeta {
            status: StatusCode::OK,
            section: "campaigns",
            title: "Campaigns",
        },
        "campaigns.html",
        json!({
            "campaigns": items(&reply),
            "statuses": CAMPAIGN_STATUSES,
            "status": status,
            "next": next,
            "paged": !q.cursor.is_empty(),
        }),
    )
}

// --------------------------------------------------------------------------------------
// The editor
// --------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    list_id: String,
    #[serde(default)]
    channel_id: String,
}

/// What the editor shows besides the form's values: the lists, channels, contacts of the
/// chosen list to preview for, and (after a preview request) the preview.
struct Editor {
    values: Value,
    errors: FormErrors,
    preview: Value,
    preview_error: Option<String>,
    status: StatusCode,
}

async fn render_editor(web: &Web, ctx: &Ctx, editor: Editor) -> Response {
    let (lists, channels) = tokio::join!(
        web.get(&ctx.session, "/api/v1/lists?limit=500"),
        web.get(&ctx.session, "/api/v1/channels?limit=500"),
    );
    if !lists.ok() {
        return api_failed(ctx, "Lists", &lists);
    }
    if !channels.ok() {
        return api_failed(ctx, "Channels", &channels);
    }
    let lists = items(&lists);
    let channels = items(&channels);
    let mut values = editor.values;
    // The list whose contacts the preview can use: the chosen one, else the first.
    let list_id = values["list_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| lists[0]["id"].as_str().map(str::to_string))
        .unwrap_or_default();
    if values["list_id"].as_str().unwrap_or_default().is_empty() {
        values["list_id"] = json!(list_id);
    }
    let contacts = if list_id.is_empty() {
        json!([])
    } else {
        let r = web
            .get(
                &ctx.session,
                &format!("/api/v1/lists/{}/members?limit=50", segment(&list_id)),
            )
            .await;
        if r.ok() { items(&r) } else { json!([]) }
    };
    // An existing draft or scheduled campaign is edited in the same editor; the form
    // carries its id (`_edit_id`) so a preview without JavaScript comes back to it.
    let editing = values["_edit_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(segment);
    page(
        ctx,
        PageMeta {
            status: editor.status,
            section: "campaigns",
            title: if editing.is_some() {
                "Edit campaign"
            } else {
                "New campaign"
            },
        },
        "campaign_new.html",
        json!({
            "editing": editing,
            "lists": lists,
            "channels": channels,
            "contacts": contacts,
            "values": values,
            "errors": editor.errors,
            "preview": editor.preview,
            "preview_error": editor.preview_error,
            "idem": idempotency_token(),
        }),
    )
}

pub async fn new_form(State(web): State<Web>, ctx: Ctx, Query(q): Query<NewQuery>) -> Response {
    render_editor(
        &web,
        &ctx,
        Editor {
            values: json!({
                "list_id": segment(&q.list_id),
                "channel_id": segment(&q.channel_id),
                "when": "now",
                "body": "Hi {{ name }}, ",
            }),
            errors: FormErrors::none(),
            preview: Value::Null,
            preview_error: None,
            status: StatusCode::OK,
        },
    )
    .await
}

/// The editor for an existing draft or scheduled campaign, filled with its settings.
pub async fn edit_form(State(web): State<Web>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let id = segment(&id);
    let c = web
        .get(&ctx.session, &format!("/api/v1/campaigns/{id}"))
        .await;
    if !c.ok() {
        return api_failed(&ctx, "The campaign", &c);
    }
    let status = c.body["status"].as_str().unwrap_or_default();
    if !matches!(status, "draft" | "scheduled") {
        return redirect_with(
            &format!("/campaigns/{id}"),
            &format!("!Campaign is {status}: only a draft or a scheduled campaign can be edited."),
            ctx.secure,
        );
    }
    // datetime-local wants `2026-12-01T09:00` (read back as UTC).
    let scheduled_at: String = c.body["scheduled_at"]
        .as_str()
        .map(|t| t.chars().take(16).collect())
        .unwrap_or_default();
    let (wa_template, wa_language, wa_params) =
        whatsapp_template_values(&c.body["whatsapp_template"]);
    let send_window = send_window_value(&web, &ctx, &c.body).await;
    let mut values = json!({
                "send_window": send_window,
                // What the editor showed: the save sends the window only if it changed
                // from this, whatever the organisation's default became meanwhile.
                "_send_window_shown": send_window,
                "wa_template": wa_template,
                "wa_language": wa_language,
                "wa_params": wa_params,
                "_edit_id": id,
                "name": c.body["name"],
                "list_id": c.body["list_id"],
                "channel_id": c.body["channel_id"],
                "body": c.body["body"],
                "when": if status == "scheduled" { "later" } else { "draft" },
                "scheduled_at": scheduled_at,
    });
    super::campaign_email::email_values(&c.body["email"], &mut values);
    render_editor(
        &web,
        &ctx,
        Editor {
            values,
            errors: FormErrors::none(),
            preview: Value::Null,
            preview_error: None,
            status: StatusCode::OK,
        },
    )
    .await
}

/// The editor's send-window field for a campaign: its own window; `off` when it turned
/// off the organisation's; empty when it follows the organisation's (or there is none, when
/// `off` and empty mean the same).
async fn send_window_value(web: &Web, ctx: &Ctx, campaign: &Value) -> String {
    match campaign["send_window_source"].as_str() {
        Some("campaign") => campaign["send_window"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Some("none") => {
            let org = web.get(&ctx.session, "/api/v1/organisation").await;
            if org.ok() && org.body["send_window"].is_string() {
                "off".to_string()
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}

/// Saves an edit (PATCH), then the schedule: a new start time, or back to draft.
pub async fn update(State(web): State<Web>, Path(id): Path<String>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let id = segment(&id);
    let when = form.get("when");
    let mut errors = FormErrors::none();
    let at = schedule_time(form.get("scheduled_at"));
    if when == "later" && at.is_empty() {
        errors = errors.field("scheduled_at", "Choose when to start (UTC)");
    }
    if errors.is_empty() {
        let base = format!("/api/v1/campaigns/{id}");
        let current = web.get(&ctx.session, &base).await;
        if !current.ok() {
            return api_failed(ctx, "The campaign", &current);
        }
        // Only what changed is sent, so the audit trail names only that.
        let mut change = serde_json::Map::new();
        for (field, value) in [
            ("name", form.get("name")),
            ("list_id", form.get("list_id")),
            ("channel_id", form.get("channel_id")),
            ("body", form.raw("body")),
        ] {
            if current.body[field].as_str() != Some(value) {
                change.insert(field.into(), json!(value));
            }
        }
        let template = whatsapp_template_field(&form);
        if current.body["whatsapp_template"] != template {
            change.insert("whatsapp_template".into(), template);
        }
        let email = super::campaign_email::email_field(&form);
        if current.body["email"] != email {
            change.insert("email".into(), email);
        }
        // Sent only if changed from what the editor showed; emptied, the organisation's
        // window again.
        let window = form.get("send_window").trim();
        if window != form.get("_send_window_shown").trim() {
            let window = if window.is_empty() { "inherit" } else { window };
            change.insert("send_window".into(), json!(window));
        }
        let change = Value::Object(change);
        let reply = web
            .api(
                &ctx.session,
                Method::PATCH,
                &base,
                Payload::Json(change),
                None,
            )
            .await;
        if reply.ok() {
            let was_scheduled = reply.body["status"] == "scheduled";
            // The form shows the time to the minute: the same minute is no change.
            let minute = |t: &str| crate::clock::parse_rfc3339(t).ok().map(|ms| ms / 60_000);
            let same_time = reply.body["scheduled_at"].as_str().and_then(minute) == minute(&at);
            let scheduled = if when == "later" && was_scheduled && same_time {
                None
            } else if when == "later" {
                Some(
                    web.api(
                        &ctx.session,
                        Method::POST,
                        &format!("{base}/schedule"),
                        Payload::Json(json!({"at": at})),
                        None,
                    )
                    .await,
                )
            } else if was_scheduled {
                Some(
                    web.api(
                        &ctx.session,
                        Method::POST,
                        &format!("{base}/unschedule"),
                        Payload::None,
                        None,
                    )
                    .await,
                )
            } else {
                None
            };
            let to = format!("/campaigns/{id}");
            let message = match scheduled {
                Some(r) if !r.ok() => {
                    format!(
                        "!Changes saved, but the schedule was refused: {}",
                        r.message()
                    )
                }
                Some(_) if when == "later" => "Changes saved; the campaign is scheduled.".into(),
                Some(_) => "Changes saved; the campaign is a draft again.".into(),
                None => "Changes saved.".into(),
            };
            tracing::info!(
                actor = ctx.session.actor,
                campaign = id,
                "dashboard: campaign edited"
            );
            return redirect_with(&to, &message, ctx.secure);
        }
        errors = FormErrors::from_reply(&reply);
        return editor_again(&web, &form, errors, reply.status).await;
    }
    errors.summary = Some("Please correct the form.".into());
    editor_again(&web, &form, errors, StatusCode::UNPROCESSABLE_ENTITY).await
}

/// The editor again with what the form sent and why it was refused.
async fn editor_again(
    web: &Web,
    form: &PostForm,
    errors: FormErrors,
    status: StatusCode,
) -> Response {
    render_editor(
        web,
        &form.ctx,
        Editor {
            values: editor_values(form),
            errors,
            preview: Value::Null,
            preview_error: None,
            status,
        },
    )
    .await
}

/// The editor's values as the form sent them, the body exactly as typed.
fn editor_values(form: &PostForm) -> Value {
    let mut values = json!(form.values());
    values["body"] = json!(form.raw("body"));
    values["email_html"] = json!(form.raw("email_html"));
    if let Value::Object(m) = &mut values {
        m.remove("_idem");
    }
    values
}

/// The preview without JavaScript: the editor again, with the message rendered for the
/// chosen contact.
pub async fn preview(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let request = super::campaign_email::preview_request(&form);
    let reply = web
        .post(&ctx.session, "/api/v1/templates/preview", request)
        .await;
    let (preview, preview_error) = if reply.ok() {
        (reply.body.clone(), None)
    } else {
        (Value::Null, Some(reply.message()))
    };
    render_editor(
        &web,
        ctx,
        Editor {
            values: editor_values(&form),
            errors: FormErrors::none(),
            preview,
            preview_error,
            status: StatusCode::OK,
        },
    )
    .await
}

/// `2026-12-01T09:00` (a datetime-local field, read as UTC) as RFC 3339.
fn schedule_time(value: &str) -> String {
    let v = value.trim();
    if v.is_empty() {
        return String::new();
    }
    if v.ends_with('Z') || v.contains('+') {
        return v.to_string();
    }
    match v.len() {
        16 => format!("{v}:00Z"),
        _ => format!("{v}Z"),
    }
}

/// Creates the campaign, then starts it when "send now" was chosen.
/// The editor's WhatsApp template fields as the API's `whatsapp_template`; null when no
/// template name is given.
fn whatsapp_template_field(form: &PostForm) -> Value {
    let name = form.get("wa_template").trim();
    if name.is_empty() {
        return Value::Null;
    }
    let language = match form.get("wa_language").trim() {
        "" => crate::channels::whatsapp::DEFAULT_TEMPLATE_LANGUAGE,
        l => l,
    };
    let parameters: Vec<&str> = form
        .get("wa_params")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    json!({"name": name, "language": language, "parameters": parameters})
}

/// The editor's WhatsApp template fields for a campaign's `whatsapp_template`.
fn whatsapp_template_values(t: &Value) -> (Value, Value, Value) {
    if t.is_null() {
        return (json!(""), json!(""), json!(""));
    }
    let parameters: Vec<&str> = t["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    (
        t["name"].clone(),
        t["language"].clone(),
        json!(parameters.join(", ")),
    )
}

pub async fn create(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let when = form.get("when");
    let mut body = json!({
        "name": form.get("name"),
        "list_id": form.get("list_id"),
        "channel_id": form.get("channel_id"),
        "body": form.raw("body"),
    });
    let template = whatsapp_template_field(&form);
    if !template.is_null() {
        body["whatsapp_template"] = template;
    }
    let email = super::campaign_email::email_field(&form);
    if !email.is_null() {
        body["email"] = email;
    }
    // Empty: the organisation's send window (the API's `inherit`).
    let window = form.get("send_window").trim();
    if !window.is_empty() {
        body["send_window"] = json!(window);
    }
    let mut errors = FormErrors::none();
    if when == "later" {
        let at = schedule_time(form.get("scheduled_at"));
        if at.is_empty() {
            errors = errors.field("scheduled_at", "Choose when to start (UTC)");
        } else {
            body["scheduled_at"] = json!(at);
        }
    }
    if errors.is_empty() {
        let idem = form.get("_idem").to_string();
        let reply = web
            .api(
                &ctx.session,
                Method::POST,
                "/api/v1/campaigns",
                Payload::Json(body),
                (!idem.is_empty()).then_some(idem.as_str()),
            )
            .await;
        if reply.ok() {
            let id = segment(reply.body["id"].as_str().unwrap_or_default());
            let name = reply.body["name"].as_str().unwrap_or_default().to_string();
            let to = format!("/campaigns/{id}");
            if when != "now" {
                let message = if when == "later" {
                    format!("Campaign “{name}” is scheduled.")
                } else {
                    format!("Campaign “{name}” is saved as a draft.")
                };
                return redirect_with(&to, &message, ctx.secure);
            }
            let start_key = format!("{idem}-start");
            let started = web
                .api(
                    &ctx.session,
                    Method::POST,
                    &format!("/api/v1/campaigns/{id}/start"),
                    Payload::None,
                    (!idem.is_empty()).then_some(start_key.as_str()),
                )
                .await;
            let message = if started.ok() {
                format!("Campaign “{name}” started.")
            } else {
                format!(
                    "!Campaign “{name}” was created but did not start: {}",
                    started.message()
                )
            };
            return redirect_with(&to, &message, ctx.secure);
        }
        errors = FormErrors::from_reply(&reply);
        return editor_again(&web, &form, errors, reply.status).await;
    }
    errors.summary = Some("Please correct the form.".into());
    editor_again(&web, &form, errors, StatusCode::UNPROCESSABLE_ENTITY).await
}

// --------------------------------------------------------------------------------------
// The detail page
// --------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
}

pub async fn detail(
    State(web): State<Web>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let id = segment(&id);
    let status = if MESSAGE_STATUSES.contains(&q.status.as_str()) {
        q.status.as_str()
    } else {
        ""
    };
    let base = format!("/api/v1/campaigns/{id}");
    let messages_path = format!(
        "{base}/messages{}",
        query(&[("status", status), ("cursor", &q.cursor), ("limit", "50")])
    );
    let stats_path = format!("{base}/stats");
    let audit_path = format!("{base}/audit?limit=500");
    let derived_path = format!("{base}/derived");
    let (campaign, stats, audit, messages, derived) = tokio::join!(
        web.get(&ctx.session, &base),
        web.get(&ctx.session, &stats_path),
        web.get(&ctx.session, &audit_path),
        web.get(&ctx.session, &messages_path),
        web.get(&ctx.session, &derived_path),
    );
    let children = items(&derived);
    if !campaign.ok() {
        return api_failed(&ctx, "The campaign", &campaign);
    }
    let audit_items: Vec<Value> = items(&audit)
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut e| {
            let sentence = describe_event(
                e["from"].as_str(),
                e["to"].as_str().unwrap_or_default(),
                e["actor"].as_str().unwrap_or_default(),
            );
            e["sentence"] = json!(sentence);
            e
        })
        .collect();
    let next = messages.body["next_cursor"].as_str().map(|c| {
        format!(
            "/campaigns/{id}{}#messages",
            query(&[("status", status), ("cursor", c)])
        )
    });
    let name = campaign.body["name"]
        .as_str()
        .unwrap_or("Campaign")
        .to_string();
    let bars: Vec<Value> = MESSAGE_STATUSES
        .iter()
        .map(|s| json!({"status": s, "count": campaign.body["counters"][*s]}))
        .collect();
    page(
        &ctx,
        PageMeta {
            status: StatusCode::OK,
            section: "campaigns",
            title: &name,
        },
        "campaign.html",
        json!({
            "c": campaign.body,
            "stats": if stats.ok() { stats.body.clone() } else { Value::Null },
            "audit": audit_items,
            "audit_error": (!audit.ok()).then(|| audit.message()),
            "messages": items(&messages),
            // 410: the campaign's message rows were archived (docs/CAMPAIGNS.md,
            // "Retention"); said as a fact with the export, not as an error.
            "messages_archived": (messages.status == StatusCode::GONE).then(|| messages.message()),
            "messages_error": (!messages.ok() && messages.status != StatusCode::GONE)
                .then(|| messages.message()),
            "message_statuses": MESSAGE_STATUSES,
            "message_status": status,
            "next": next,
            "paged": !q.cursor.is_empty(),
            "bars": bars,
            "actions": actions_view(),
            "resend_statuses": resend_statuses_view(),
            "children": children,
        }),
    )
}

fn resend_statuses_view() -> Value {
    resend_statuses()
        .map(|(s, on)| json!({"status": s, "checked": on}))
        .collect()
}

/// What a draft or scheduled campaign will send (GET /api/v1/campaigns/{id}/estimate),
/// counted when the page is opened: it reads and renders every recipient.
pub async fn estimate(State(web): State<Web>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let id = segment(&id);
    let base = format!("/api/v1/campaigns/{id}");
    let estimate_path = format!("{base}/estimate");
    let (campaign, estimate) = tokio::join!(
        web.get(&ctx.session, &base),
        web.get(&ctx.session, &estimate_path),
    );
    if !campaign.ok() {
        return api_failed(&ctx, "The campaign", &campaign);
    }
    let name = campaign.body["name"].as_str().unwrap_or("Campaign");
    let title = format!("Estimate: {name}");
    page(
        &ctx,
        PageMeta {
            status: StatusCode::OK,
            section: "campaigns",
            title: &title,
        },
        "estimate.html",
        json!({
            "c": campaign.body,
            "e": if estimate.ok() { estimate.body.clone() } else { Value::Null },
            "estimate_error": (!estimate.ok()).then(|| estimate.message()),
            "duration": estimate.body["duration_secs"].as_f64().map(crate::clock::human_duration),
        }),
    )
}

fn action(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// The confirmation page an action's button leads to (JavaScript opens a dialog instead).
pub async fn confirm(
    State(web): State<Web>,
    ctx: Ctx,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let Some(act) = action(&name) else {
        return super::not_found().await;
    };
    let id = segment(&id);
    let campaign = web
        .get(&ctx.session, &format!("/api/v1/campaigns/{id}"))
        .await;
    if !campaign.ok() {
        return api_failed(&ctx, "The campaign", &campaign);
    }
    let title = format!(
        "{}: {}",
        act.verb,
        campaign.body["name"].as_str().unwrap_or_default()
    );
    page(
        &ctx,
        PageMeta {
            status: StatusCode::OK,
            section: "campaigns",
            title: &title,
        },
        "confirm.html",
        json!({
            "c": campaign.body,
            "action": {
                "name": act.name,
                "verb": act.verb,
                "explain": act.explain,
                "danger": act.danger,
                "reason": !NO_REASON.contains(&act.name),
                "allowed": act.from.contains(&campaign.body["status"].as_str().unwrap_or_default()),
                "from": act.from,
            },
            "resend_statuses": resend_statuses_view(),
        }),
    )
}

/// Carries out a confirmed action, then back to the campaign with what happened.
pub async fn act(
    State(web): State<Web>,
    Path((id, name)): Path<(String, String)>,
    form: PostForm,
) -> Response {
    let ctx = &form.ctx;
    let Some(act) = action(&name) else {
        return super::not_found().await;
    };
    let id = segment(&id);
    let reason = form.get("reason");
    let payload = if act.name == "resend" {
        let statuses: Vec<&str> = resend_statuses()
            .map(|(s, _)| s)
            .filter(|s| !form.get(&format!("status_{s}")).is_empty())
            .collect();
        Payload::Json(json!({"statuses": statuses}))
    } else if reason.is_empty() || NO_REASON.contains(&act.name) {
        Payload::None
    } else {
        Payload::Json(json!({"reason": reason}))
    };
    let idem = form.get("_idem");
    let reply = web
        .api(
            &ctx.session,
            Method::POST,
            &format!("/api/v1/campaigns/{id}/{}", act.name),
            payload,
            (!idem.is_empty()).then_some(idem),
        )
        .await;
    let to = format!("/campaigns/{id}");
    if reply.ok() {
        tracing::info!(
            actor = ctx.session.actor,
            campaign = id,
            action = act.name,
            "dashboard: campaign action"
        );
        if MAKES_A_CAMPAIGN.contains(&act.name) {
            let made = if act.name == "resend" {
                &reply.body["campaign"]
            } else {
                &reply.body
            };
            let new_id = segment(made["id"].as_str().unwrap_or_default());
            let done = if act.name == "resend" {
                format!(
                    "{}: {} recipients ({} left out: unsubscribed or suppressed since; {} whose contact was deleted).",
                    act.done,
                    reply.body["recipients"],
                    reply.body["left_out_opted_out"],
                    reply.body["left_out_contact_deleted"]
                )
            } else {
                act.done.to_string()
            };
            return redirect_with(&format!("/campaigns/{new_id}"), &done, ctx.secure);
        }
        return redirect_with(&to, act.done, ctx.secure);
    }
    if reply.status == StatusCode::NOT_FOUND {
        return api_failed(ctx, "The campaign", &reply);
    }
    if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
        return error_page(
            ctx,
            reply.status,
            &format!("{}: the reason was refused", act.verb),
            &reply.message(),
        );
    }
    redirect_with(
        &to,
        &format!("!{} refused: {}", act.verb, reply.message()),
        ctx.secure,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_entries_read_as_sentences() {
        assert_eq!(
            describe_event(Some("sending"), "paused", "user:ada@example.org"),
            "Paused by ada@example.org"
        );
        assert_eq!(
            describe_event(Some("paused"), "sending", "api_key:deploy"),
            "Resumed by API key “deploy”"
        );
        assert_eq!(
            describe_event(None, "draft", "user:a@b.c"),
            "Created by a@b.c"
        );
        assert_eq!(
            describe_event(Some("sending"), "completed", "reconciler@host-1"),
            "Completed (Herald's reconciler)"
        );
        assert_eq!(
            describe_event(Some("paused"), "completed", "user:a@b.c"),
            "Marked complete by a@b.c"
        );
    }

    #[test]
    fn schedule_times_are_utc() {
        assert_eq!(schedule_time("2026-12-01T09:00"), "2026-12-01T09:00:00Z");
        assert_eq!(schedule_time("2026-12-01T09:00:30"), "2026-12-01T09:00:30Z");
        assert_eq!(
            schedule_time("2026-12-01T09:00:00Z"),
            "2026-12-01T09:00:00Z"
        );
        assert_eq!(schedule_time(" "), "");
    }
}
