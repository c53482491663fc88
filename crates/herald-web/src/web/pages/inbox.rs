//! The replies inbox (docs/INBOX.md): conversations with filters (unread, search, per
//! campaign), one conversation's thread, and marking it read. Every number and row comes
//! from `GET /api/v1/conversations` and `GET /api/v1/replies`.

use super::super::client::query;
use super::super::render::{PageMeta, page};
use super::super::session::redirect_with;
use super::super::{Ctx, Payload, PostForm, Web};
use super::{api_failed, error_page, items};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Default, Deserialize)]
pub struct InboxQuery {
    #[serde(default)]
    unread: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    campaign_id: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    address: String,
}

pub async fn list(State(web): State<Web>, ctx: Ctx, Query(q): Query<InboxQuery>) -> Response {
    let unread = if q.unread == "true" { "true" } else { "" };
    let filters = [
        ("unread", unread),
        ("q", q.q.trim()),
        ("campaign_id", q.campaign_id.trim()),
    ];
    let mut params = filters.to_vec();
    params.push(("cursor", &q.cursor));
    params.push(("limit", "50"));
    let path = format!("/api/v1/conversations{}", query(&params));
    let (reply, campaigns) = tokio::join!(
        web.get(&ctx.session, &path),
        web.get(&ctx.session, "/api/v1/campaigns?limit=200"),
    );
    if !reply.ok() {
        return api_failed(&ctx, "The inbox", &reply);
    }
    let next = reply.body["next_cursor"].as_str().map(|c| {
        let mut params = filters.to_vec();
        params.push(("cursor", c));
        format!("/inbox{}", query(&params))
    });
    // The last reply's first 120 characters, as the table shows it.
    let conversations: Vec<serde_json::Value> = items(&reply)
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            let body = c["last"]["body"].as_str().unwrap_or_default();
            let mut preview: String = body.chars().take(120).collect();
            if body.chars().count() > 120 {
                preview.push('…');
            }
            c["preview"] = json!(preview);
            c
        })
        .collect();
    page(
        &ctx,
        PageMeta {
            status: StatusCode::OK,
            section: "inbox",
            title: "Inbox",
        },
        "inbox.html",
        json!({
            "conversations": conversations,
            "campaigns": items(&campaigns),
            "filters": {"unread": unread == "true", "q": q.q.trim(), "campaign_id": q.campaign_id.trim()},
            "next": next,
        }),
    )
}

pub async fn thread(State(web): State<Web>, ctx: Ctx, Query(q): Query<InboxQuery>) -> Response {
    let address = q.address.trim();
    if address.is_empty() {
        return error_page(
            &ctx,
            StatusCode::BAD_REQUEST,
            "No conversation named",
            "Open a conversation from the inbox.",
        );
    }
    let path = format!(
        "/api/v1/replies{}",
        query(&[
            ("address", address),
            ("cursor", &q.cursor),
            ("limit", "100")
        ])
    );
    let reply = web.get(&ctx.session, &path).await;
    if !reply.ok() {
        return api_failed(&ctx, "The conversation", &reply);
    }
    let mut replies = items(&reply).as_array().cloned().unwrap_or_default();
    // Oldest first, as a conversation reads; the answer's status in words.
    replies.reverse();
    for r in &mut replies {
        let status = r["auto_reply_status"].as_str().unwrap_or_default();
        let words = match status {
            "in_webhook_answer" => "sent by the provider with the webhook's answer".to_string(),
            "pending" => "being sent".to_string(),
            s => match s.split_once(": ") {
                Some(("sent", id)) => format!("sent, provider id {id}"),
                Some(("failed", why)) => format!("not sent: {why}"),
                _ => s.to_string(),
            },
        };
        r["answer_status"] = json!(words);
    }
    let unread = replies.iter().filter(|r| r["read_at"].is_null()).count();
    let contact = replies
        .iter()
        .rev()
        .find_map(|r| r["contact_name"].as_str().map(str::to_string));
    let title = format!(
        "Conversation with {}",
        contact.as_deref().unwrap_or(address)
    );
    page(
        &ctx,
        PageMeta {
            status: if replies.is_empty() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            section: "inbox",
            title: &title,
        },
        "inbox_thread.html",
        json!({
            "address": address,
            "contact": contact,
            "replies": replies,
            "unread": unread,
            "older": reply.body["next_cursor"].as_str().map(|c| format!("/inbox/thread{}", query(&[("address", address), ("cursor", c)]))),
        }),
    )
}

pub async fn mark_read(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let address = form.get("address").to_string();
    let reply = web
        .api(
            &ctx.session,
            Method::POST,
            "/api/v1/replies/read",
            Payload::Json(json!({"address": address})),
            None,
        )
        .await;
    if !reply.ok() {
        return error_page(
            ctx,
            reply.status,
            "The conversation could not be marked read",
            &reply.message(),
        );
    }
    let n = reply.body["marked"].as_u64().unwrap_or(0);
    redirect_with(
        &format!("/inbox/thread{}", query(&[("address", &address)])),
        &format!("{n} replies marked read."),
        ctx.secure,
    )
}
