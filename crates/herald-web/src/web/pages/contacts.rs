//! Contacts (search, segment filters counted live, CSV import with its row error report,
//! unsubscribe), lists and segments, and the suppression list.

use super::super::client::{query, segment};
use super::super::forms::idempotency_token;
use super::super::render::{PageMeta, page};
use super::super::session::redirect_with;
use super::super::{Ctx, FormErrors, Payload, PostForm, Web};
use super::{api_failed, error_page, items};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Default, Deserialize)]
pub struct ContactsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    list_id: String,
    #[serde(default)]
    unsubscribed: String,
    /// A segment filter (docs/SEGMENTS.md).
    #[serde(default)]
    filter: String,
    #[serde(default)]
    cursor: String,
}

/// One page of contacts for the filters, and the lists (for the filter and import forms).
async fn contacts_data(web: &Web, ctx: &Ctx, f: &ContactsQuery) -> Result<Value, Response> {
    let unsubscribed = match f.unsubscribed.as_str() {
        "yes" => "true",
        "no" => "false",
        _ => "",
    };
    let path = format!(
        "/api/v1/contacts{}",
        query(&[
            ("q", &f.q),
            ("list_id", &segment(&f.list_id)),
            ("unsubscribed", unsubscribed),
            ("filter", f.filter.trim()),
            ("cursor", &f.cursor),
            ("limit", "50"),
        ])
    );
    let contacts = web.get(&ctx.session, &path).await;
    // A filter is counted live, as a segment of it would be (`POST /segments/count`).
    let mut matching = Value::Null;
    if contacts.ok() && !f.filter.trim().is_empty() {
        let count = web
            .post(
                &ctx.session,
                "/api/v1/segments/count",
                json!({"filter": f.filter.trim()}),
            )
            .await;
        if count.ok() {
            matching = count.body.clone();
        }
    }
    if !contacts.ok() {
        if contacts.status == StatusCode::BAD_REQUEST
            || contacts.status == StatusCode::UNPROCESSABLE_ENTITY
        {
            return Ok(json!({
                "contacts": [],
                "search_error": contacts.message(),
            }));
        }
        return Err(api_failed(ctx, "Contacts", &contacts));
    }
    let lists = web.get(&ctx.session, "/api/v1/lists?limit=500").await;
    let lists = if lists.ok() { items(&lists) } else { json!([]) };
    let next = contacts.body["next_cursor"].as_str().map(|c| {
        format!(
            "{}{}",
            if f.list_id.is_empty() {
                "/contacts".to_string()
            } else {
                format!("/lists/{}", segment(&f.list_id))
            },
            query(&[
                ("q", &f.q),
                ("unsubscribed", &f.unsubscribed),
                ("filter", &f.filter),
                ("cursor", c),
            ])
        )
    });
    Ok(json!({
        "contacts": items(&contacts),
        "lists": lists,
        "next": next,
        "paged": !f.cursor.is_empty(),
        "filters": {"q": f.q, "list_id": f.list_id, "unsubscribed": f.unsubscribed, "filter": f.filter},
        "matching": matching,
        "idem": idempotency_token(),
    }))
}

pub async fn list(State(web): State<Web>, ctx: Ctx, Query(f): Query<ContactsQuery>) -> Response {
    let data = match contacts_data(&web, &ctx, &f).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    page(
        &ctx,
        PageMeta {
            status: StatusCode::OK,
            section: "contacts",
            title: "Contacts",
        },
        "contacts.html",
        data,
    )
}

/// Uploads a CSV file to the API and shows the import's report (rows imported, updated,
/// and each rejected row with its line and reason).
pub async fn import(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let list = form.get("list").to_string();
    let mut errors = FormErrors::none();
    if list.is_empty() {
        errors = errors.field("list", "Name the list to add the contacts to");
    }
    let file = form.file("file").filter(|f| !f.data.is_empty());
    if file.is_none() {
        errors = errors.field(
            "file",
            "Choose a CSV file with a header row and an address column",
        );
    }
    let mut report = Value::Null;
    let mut status = StatusCode::OK;
    if let (true, Some(file)) = (errors.fields.is_empty(), file) {
        let path = format!("/api/v1/contacts/import{}", query(&[("list", &list)]));
        let idem = form.get("_idem");
        let reply = web
            .api(
                &ctx.session,
                Method::POST,
                &path,
                Payload::Raw {
                    content_type: "text/csv",
                    bytes: Bytes::clone(&file.data),
                },
                (!idem.is_empty()).then_some(idem),
            )
            .await;
        if reply.ok() {
            tracing::info!(
                actor = ctx.session.actor,
                list,
                "dashboard: contacts imported"
            );
            report = json!({
                "file": file.filename,
                "list": list,
                "list_id": reply.body["list_id"],
                "inserted": reply.body["inserted"],
                "updated": reply.body["updated"],
                "rejected": reply.body["rejected"],
                "errors": reply.body["errors"],
                "truncated": reply.body["truncated"],
            });
        } else {
            status = reply.status;
            errors = FormErrors::from_reply(&reply);
            if let Some(msg) = errors.fields.remove("address") {
                errors.fields.insert("file".into(), msg);
            }
        }
    } else {
        status = StatusCode::UNPROCESSABLE_ENTITY;
        errors.summary = Some("The file could not be imported: see the fields below.".into());
    }
    let mut data = match contacts_data(&web, ctx, &ContactsQuery::default()).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Value::Object(m) = &mut data {
        m.insert("report".into(), report);
        m.insert("import_errors".into(), json!(errors));
        m.insert("import_values".into(), json!({"list": list}));
    }
    page(
        ctx,
        PageMeta {
            status,
            section: "contacts",
            title: "Contacts",
        },
        "contacts.html",
        data,
    )
}

pub async fn unsubscribe(
    State(web): State<Web>,
    Path(id): Path<String>,
    form: PostForm,
) -> Response {
    let ctx = &form.ctx;
    let path = format!("/api/v1/contacts/{}", segment(&id));
    let reply = web
        .api(
            &ctx.session,
            Method::PATCH,
            &path,
            Payload::Json(json!({"unsubscribed": true})),
            None,
        )
        .await;
    if !reply.ok() {
        return api_failed(ctx, "Unsubscribing the contact", &reply);
    }
    let address = reply.body["address"].as_str().unwrap_or("The contact");
    let back = super::super::session::safe_next(form.get("back"));
    redirect_with(
        back,
        &format!("{address} is unsubscribed: no campaign will send to it."),
        ctx.secure,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct CursorQuery {
    #[serde(default)]
    cursor: String,
}

async fn render_lists(
    web: &Web,
    ctx: &Ctx,
    cursor: &str,
    status: StatusCode,
    errors: FormErrors,
    values: Value,
) -> Response {
    let path = format!(
        "/api/v1/lists{}",
        query(&[("cursor", cursor), ("limit", "100")])
    );
    let reply = web.get(&ctx.session, &path).await;
    if !reply.ok() {
        return api_failed(ctx, "Lists", &reply);
    }
    let next = reply.body["next_cursor"]
        .as_str()
        .map(|c| format!("/lists{}", query(&[("cursor", c)])));
    page(
        ctx,
        PageMeta {
            status,
            section: "lists",
            title: "Lists",
        },
        "lists.html",
        json!({
            "lists": items(&reply),
            "next": next,
            "errors": errors,
            "values": values,
        }),
    )
}

pub async fn lists(State(web): State<Web>, ctx: Ctx, Query(q): Query<CursorQuery>) -> Response {
    render_lists(
        &web,
        &ctx,
        &q.cursor,
        StatusCode::OK,
        FormErrors::none(),
        json!({}),
    )
    .await
}

pub async fn create_list(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let name = form.get("name");
    let filter = form.get("filter").trim();
    let body = if filter.is_empty() {
        json!({"name": name})
    } else {
        json!({"name": name, "filter": filter})
    };
    let reply = web.post(&ctx.session, "/api/v1/lists", body).await;
    if reply.ok() {
        let id = reply.body["id"].as_str().unwrap_or_default();
        let said = if filter.is_empty() {
            format!("List “{name}” created.")
        } else {
            format!(
                "Segment “{name}” created: {} it now. A campaign freezes its members when it starts.",
                matches(&reply.body["members"])
            )
        };
        return redirect_with(&format!("/lists/{}", segment(id)), &said, ctx.secure);
    }
    render_lists(
        &web,
        ctx,
        "",
        reply.status,
        FormErrors::from_reply(&reply),
        json!(form.values()),
    )
    .await
}

pub async fn list_detail(
    State(web): State<Web>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(f): Query<ContactsQuery>,
) -> Response {
    render_list_detail(&web, &ctx, &id, f, FormErrors::none(), json!({})).await
}

/// A list's page (a segment's with its filter and the form that changes it) and its
/// members, read live for a segment.
async fn render_list_detail(
    web: &Web,
    ctx: &Ctx,
    id: &str,
    mut f: ContactsQuery,
    errors: FormErrors,
    values: Value,
) -> Response {
    let id = segment(id);
    let reply = web.get(&ctx.session, &format!("/api/v1/lists/{id}")).await;
    if !reply.ok() {
        return api_failed(ctx, "The list", &reply);
    }
    f.list_id = id;
    let mut data = match contacts_data(web, ctx, &f).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let name = reply.body["name"].as_str().unwrap_or("List").to_string();
    let status = if errors.summary.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    if let Value::Object(m) = &mut data {
        m.insert("list".into(), reply.body.clone());
        m.insert("segment_errors".into(), json!(errors));
        m.insert("segment_values".into(), values);
    }
    page(
        ctx,
        PageMeta {
            status,
            section: "lists",
            title: &name,
        },
        "contacts.html",
        data,
    )
}

/// "1 contact matches", "12 contacts match".
fn matches(members: &Value) -> String {
    match members.as_i64() {
        Some(1) => "1 contact matches".to_string(),
        Some(n) => format!("{n} contacts match"),
        None => "its contacts match".to_string(),
    }
}

/// Changes a segment's filter (`PATCH /lists/{id}`); the page shows the new count.
pub async fn edit_segment(
    State(web): State<Web>,
    Path(id): Path<String>,
    form: PostForm,
) -> Response {
    let ctx = &form.ctx;
    let id = segment(&id);
    let filter = form.get("filter").trim().to_string();
    let reply = web
        .api(
            &ctx.session,
            Method::PATCH,
            &format!("/api/v1/lists/{id}"),
            Payload::Json(json!({ "filter": filter })),
            None,
        )
        .await;
    if reply.ok() {
        return redirect_with(
            &format!("/lists/{id}"),
            &format!(
                "Filter saved: {} it now. Campaigns already started keep their recipients.",
                matches(&reply.body["members"])
            ),
            ctx.secure,
        );
    }
    if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
        return render_list_detail(
            &web,
            ctx,
            &id,
            ContactsQuery::default(),
            FormErrors::from_reply(&reply),
            json!({ "filter": filter }),
        )
        .await;
    }
    api_failed(ctx, "Saving the filter", &reply)
}

async fn render_suppressions(
    web: &Web,
    ctx: &Ctx,
    cursor: &str,
    status: StatusCode,
    errors: FormErrors,
    values: Value,
) -> Response {
    let path = format!(
        "/api/v1/suppressions{}",
        query(&[("cursor", cursor), ("limit", "100")])
    );
    let reply = web.get(&ctx.session, &path).await;
    if !reply.ok() {
        return api_failed(ctx, "The suppression list", &reply);
    }
    let next = reply.body["next_cursor"]
        .as_str()
        .map(|c| format!("/suppressions{}", query(&[("cursor", c)])));
    page(
        ctx,
        PageMeta {
            status,
            section: "suppressions",
            title: "Suppression list",
        },
        "suppressions.html",
        json!({
            "suppressions": items(&reply),
            "next": next,
            "errors": errors,
            "values": values,
        }),
    )
}

pub async fn suppressions(
    State(web): State<Web>,
    ctx: Ctx,
    Query(q): Query<CursorQuery>,
) -> Response {
    render_suppressions(
        &web,
        &ctx,
        &q.cursor,
        StatusCode::OK,
        FormErrors::none(),
        json!({}),
    )
    .await
}

pub async fn suppress(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let address = form.get("address");
    let reason = form.get("reason");
    let mut body = json!({"address": address});
    if !reason.is_empty() {
        body["reason"] = json!(reason);
    }
    let reply = web.post(&ctx.session, "/api/v1/suppressions", body).await;
    if reply.ok() {
        let shown = reply.body["address"].as_str().unwrap_or(address);
        return redirect_with(
            "/suppressions",
            &format!("{shown} is suppressed: no campaign will send to it."),
            ctx.secure,
        );
    }
    render_suppressions(
        &web,
        ctx,
        "",
        reply.status,
        FormErrors::from_reply(&reply),
        json!(form.values()),
    )
    .await
}

/// Removes an address from the suppression list (the form names the address).
pub async fn unsuppress(
    State(web): State<Web>,
    Path(id): Path<String>,
    form: PostForm,
) -> Response {
    let ctx = &form.ctx;
    let target = super::super::client::percent_encode(&id);
    let reply = web
        .api(
            &ctx.session,
            Method::DELETE,
            &format!("/api/v1/suppressions/{target}"),
            Payload::None,
            None,
        )
        .await;
    if !reply.ok() {
        return error_page(
            ctx,
            reply.status,
            "The address could not be removed from the suppression list",
            &reply.message(),
        );
    }
    redirect_with(
        "/suppressions",
        &format!("{id} is no longer suppressed."),
        ctx.secure,
    )
}
