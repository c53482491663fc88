//! A campaign's email parts in the dashboard (docs/EMAIL.md): the editor's fields, and the
//! HTML preview. The preview is its own document, served with
//! [`EMAIL_PREVIEW_POLICY`](super::super::EMAIL_PREVIEW_POLICY) (a CSP sandbox: no script
//! runs, the email's inline styles do) and shown in an `<iframe sandbox>` of the editor
//! or the campaign page, the only frame the dashboard allows.

use super::super::client::{query, segment};
use super::super::{Ctx, PostForm, Web};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// The editor's email fields as the API's `email`; null when none is filled in (a
/// subject-less part then gets the API's error naming `email.subject`).
pub fn email_field(form: &PostForm) -> Value {
    let subject = form.get("email_subject").trim();
    let html = form.raw("email_html");
    let from_name = form.get("email_from_name").trim();
    let reply_to = form.get("email_reply_to").trim();
    if subject.is_empty() && html.trim().is_empty() && from_name.is_empty() && reply_to.is_empty() {
        return Value::Null;
    }
    // Only the parts given, as the API returns a campaign's `email`: an unchanged form
    // then compares equal to it and the edit does not send it again.
    let mut email = json!({ "subject": subject });
    if !html.trim().is_empty() {
        email["html"] = json!(html);
    }
    for (key, value) in [("from_name", from_name), ("reply_to", reply_to)] {
        if !value.is_empty() {
            email[key] = json!(value);
        }
    }
    email
}

/// The editor's form as a `POST /api/v1/templates/preview` request: the body, the email
/// parts when any is filled in, the contact to preview for and the channel.
pub fn preview_request(form: &PostForm) -> Value {
    let mut request = json!({"body": form.raw("body")});
    let email = email_field(form);
    if !email.is_null() {
        request["email"] = email;
    }
    for (field, key) in [
        ("contact_id", "preview_contact"),
        ("channel_id", "channel_id"),
    ] {
        let v = form.get(key);
        if !v.is_empty() {
            request[field] = json!(v);
        }
    }
    request
}

/// A campaign's `email` as the editor's field values.
pub fn email_values(email: &Value, values: &mut Value) {
    for (field, key) in [
        ("email_subject", "subject"),
        ("email_html", "html"),
        ("email_from_name", "from_name"),
        ("email_reply_to", "reply_to"),
    ] {
        values[field] = json!(email[key].as_str().unwrap_or_default());
    }
}

/// The preview document: the rendered HTML as is, under the preview policy. Only a
/// response built here carries that policy, so only it may be framed.
fn preview_document(html: String, status: StatusCode) -> Response {
    let mut response = (status, html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(super::super::EMAIL_PREVIEW_POLICY),
    );
    response
}

/// What the frame shows when there is nothing to render: one escaped line.
fn preview_message(message: &str, status: StatusCode) -> Response {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    preview_document(
        format!(
            "<!doctype html><meta charset=\"utf-8\"><p style=\"font:14px system-ui,sans-serif;color:#555\">{escaped}</p>"
        ),
        status,
    )
}

/// The API's preview answer as the frame's document.
fn from_preview(reply: &super::super::ApiReply) -> Response {
    if !reply.ok() {
        return preview_message(&reply.message(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    match reply.body["email"]["html"].as_str() {
        Some(html) => preview_document(html.to_string(), StatusCode::OK),
        None => preview_message(
            "No HTML part: the email is sent as plain text.",
            StatusCode::OK,
        ),
    }
}

/// The editor's "Preview HTML" (the form posted into the preview frame): the HTML as the
/// chosen contact (or the placeholders) would get it.
pub async fn email_preview_draft(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let email = email_field(&form);
    if email.is_null() {
        return preview_message(
            "Give the email a subject and an HTML part to preview it.",
            StatusCode::OK,
        );
    }
    let request = preview_request(&form);
    let reply = web
        .post(&ctx.session, "/api/v1/templates/preview", request)
        .await;
    from_preview(&reply)
}

#[derive(Debug, Deserialize)]
pub struct PreviewQuery {
    #[serde(default)]
    contact_id: String,
}

/// A campaign's HTML part for one of its contacts (`?contact_id=`), else with the
/// placeholders, for the frame on the campaign page.
pub async fn email_preview(
    State(web): State<Web>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<PreviewQuery>,
) -> Response {
    let id = segment(&id);
    let contact = segment(&q.contact_id);
    let reply = if contact.is_empty() {
        let c = web
            .get(&ctx.session, &format!("/api/v1/campaigns/{id}"))
            .await;
        if !c.ok() {
            return preview_message(&c.message(), c.status);
        }
        if c.body["email"].is_null() {
            return preview_message(
                "This campaign has no email parts: it sends its message as plain text.",
                StatusCode::OK,
            );
        }
        web.post(
            &ctx.session,
            "/api/v1/templates/preview",
            json!({"body": c.body["body"], "email": c.body["email"], "channel_id": c.body["channel_id"]}),
        )
        .await
    } else {
        web.get(
            &ctx.session,
            &format!(
                "/api/v1/campaigns/{id}/preview{}",
                query(&[("contact_id", &contact)])
            ),
        )
        .await
    };
    from_preview(&reply)
}
