//! API keys and users. A new key (or a generated password) is shown once, on the page that
//! answers the form, and never again: Herald keeps only its digest.

use super::super::client::segment;
use super::super::forms::idempotency_token;
use super::super::render::{PageMeta, page};
use super::super::session::redirect_with;
use super::super::{Ctx, FormErrors, Payload, PostForm, Web};
use super::{api_failed, error_page, items};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

const ROLES: [&str; 4] = ["viewer", "editor", "admin", "owner"];

/// The roles the user may grant: its own and those below.
fn grantable(ctx: &Ctx) -> Vec<&'static str> {
    ROLES
        .iter()
        .copied()
        .filter(|r| crate::domain::Role::parse(r).is_some_and(|role| role <= ctx.session.role))
        .collect()
}

async fn render_keys(
    web: &Web,
    ctx: &Ctx,
    status: StatusCode,
    errors: FormErrors,
    values: Value,
) -> Response {
    let reply = web.get(&ctx.session, "/api/v1/api-keys").await;
    if !reply.ok() {
        return api_failed(ctx, "API keys", &reply);
    }
    page(
        ctx,
        PageMeta {
            status,
            section: "api-keys",
            title: "API keys",
        },
        "api_keys.html",
        json!({
            "keys": items(&reply),
            "roles": grantable(ctx),
            "errors": errors,
            "values": values,
            "idem": idempotency_token(),
        }),
    )
}

pub async fn api_keys(State(web): State<Web>, ctx: Ctx) -> Response {
    render_keys(
        &web,
        &ctx,
        StatusCode::OK,
        FormErrors::none(),
        json!({"role": "editor"}),
    )
    .await
}

pub async fn create_api_key(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let idem = form.get("_idem");
    let reply = web
        .api(
            &ctx.session,
            Method::POST,
            "/api/v1/api-keys",
            Payload::Json(json!({"name": form.get("name"), "role": form.get("role")})),
            (!idem.is_empty()).then_some(idem),
        )
        .await;
    if !reply.ok() {
        return render_keys(
            &web,
            ctx,
            reply.status,
            FormErrors::from_reply(&reply),
            json!(form.values()),
        )
        .await;
    }
    let key = &reply.body["api_key"];
    page(
        ctx,
        PageMeta {
            status: StatusCode::CREATED,
            section: "api-keys",
            title: "API key created",
        },
        "secret.html",
        json!({
            "heading": "API key created",
            "what": format!(
                "The API key “{}” ({} role) is below. Copy it now: Herald keeps only a digest, so it cannot show the key again.",
                key["name"].as_str().unwrap_or_default(),
                key["role"].as_str().unwrap_or_default(),
            ),
            "secret": reply.body["key"],
            "usage": "Send it as the header  Authorization: Bearer <key>",
            "back": "/api-keys",
            "back_text": "Back to API keys",
        }),
    )
}

pub async fn revoke_api_key(
    State(web): State<Web>,
    Path(id): Path<String>,
    form: PostForm,
) -> Response {
    let ctx = &form.ctx;
    let reply = web
        .api(
            &ctx.session,
            Method::DELETE,
            &format!("/api/v1/api-keys/{}", segment(&id)),
            Payload::None,
            None,
        )
        .await;
    if !reply.ok() {
        return error_page(
            ctx,
            reply.status,
            "The API key was not revoked",
            &reply.message(),
        );
    }
    let name = reply.body["name"].as_str().unwrap_or("The key");
    redirect_with(
        "/api-keys",
        &format!("API key “{name}” is revoked: it stopped working everywhere."),
        ctx.secure,
    )
}

async fn render_users(
    web: &Web,
    ctx: &Ctx,
    status: StatusCode,
    errors: FormErrors,
    values: Value,
) -> Response {
    let reply = web.get(&ctx.session, "/api/v1/users").await;
    if !reply.ok() {
        return api_failed(ctx, "Users", &reply);
    }
    page(
        ctx,
        PageMeta {
            status,
            section: "users",
            title: "Users and roles",
        },
        "users.html",
        json!({
            "users": items(&reply),
            "roles": grantable(ctx),
            "all_roles": ROLES,
            "errors": errors,
            "values": values,
            "idem": idempotency_token(),
        }),
    )
}

pub async fn users(State(web): State<Web>, ctx: Ctx) -> Response {
    render_users(
        &web,
        &ctx,
        StatusCode::OK,
        FormErrors::none(),
        json!({"role": "viewer"}),
    )
    .await
}

pub async fn create_user(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let mut body = json!({"email": form.get("email"), "role": form.get("role")});
    let password = form.raw("password");
    if !password.is_empty() {
        body["password"] = json!(password);
    }
    let idem = form.get("_idem");
    let reply = web
        .api(
            &ctx.session,
            Method::POST,
            "/api/v1/users",
            Payload::Json(body),
            (!idem.is_empty()).then_some(idem),
        )
        .await;
    if !reply.ok() {
        return render_users(
            &web,
            ctx,
            reply.status,
            FormErrors::from_reply(&reply),
            json!(form.values()),
        )
        .await;
    }
    let user = &reply.body["user"];
    let email = user["email"].as_str().unwrap_or_default();
    match reply.body["password"].as_str() {
        Some(generated) => page(
            ctx,
            PageMeta {
                status: StatusCode::CREATED,
                section: "users",
                title: "User added",
            },
            "secret.html",
            json!({
                "heading": "User added",
                "what": format!(
                    "{email} can now sign in with the {} role, using the password below. Give it to them safely: it is not shown again.",
                    user["role"].as_str().unwrap_or_default()
                ),
                "secret": generated,
                "back": "/users",
                "back_text": "Back to users",
            }),
        ),
        None => redirect_with(
            "/users",
            &format!("{email} can now sign in with the password you chose."),
            ctx.secure,
        ),
    }
}

pub async fn change_role(
    State(web): State<Web>,
    Path(id): Path<String>,
    form: PostForm,
) -> Response {
    let ctx = &form.ctx;
    let reply = web
        .api(
            &ctx.session,
            Method::PATCH,
            &format!("/api/v1/users/{}", segment(&id)),
            Payload::Json(json!({"role": form.get("role")})),
            None,
        )
        .await;
    if !reply.ok() {
        return error_page(
            ctx,
            reply.status,
            "The role was not changed",
            &reply.message(),
        );
    }
    redirect_with(
        "/users",
        &format!(
            "{} now has the {} role.",
            reply.body["email"].as_str().unwrap_or("The user"),
            reply.body["role"].as_str().unwrap_or_default()
        ),
        ctx.secure,
    )
}

pub async fn delete_user(
    State(web): State<Web>,
    Path(id): Path<String>,
    form: PostForm,
) -> Response {
    let ctx = &form.ctx;
    let reply = web
        .api(
            &ctx.session,
            Method::DELETE,
            &format!("/api/v1/users/{}", segment(&id)),
            Payload::None,
            None,
        )
        .await;
    if !reply.ok() {
        return error_page(
            ctx,
            reply.status,
            "The user was not removed",
            &reply.message(),
        );
    }
    let email = form.get("email");
    redirect_with(
        "/users",
        &format!(
            "{} is removed and signed out.",
            if email.is_empty() { "The user" } else { email }
        ),
        ctx.secure,
    )
}
