//! Users and API keys of the caller's organisation. Admins manage both, and may grant
//! only roles up to their own; secrets (passwords, keys) are shown once and stored hashed.

use super::auth::{AsAdmin, AsViewer, Credential, Principal};
use super::credentials;
use super::problem::{ApiError, ApiJson, ApiPath, ApiResult, Problem};
use super::{ApiState, check_name, decode, timestamp, timestamp_opt};
use crate::domain::Role;
use crate::ids::{ApiKeyId, UserId};
use crate::store::{ApiKeyInfo, UserInfo};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(get_api_key, revoke_api_key))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    #[schema(example = "usr_1")]
    pub id: String,
    pub email: String,
    pub role: Role,
    pub created_at: String,
    pub updated_at: String,
}

impl From<UserInfo> for User {
    fn from(u: UserInfo) -> User {
        User {
            id: u.id.to_string(),
            email: u.email,
            role: u.role,
            created_at: timestamp(u.created_at),
            updated_at: timestamp(u.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(example = "ada@example.org")]
    pub email: String,
    pub role: Role,
    /// At least 12 characters. Omit it and Herald generates one, returned once.
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    pub user: User,
    /// The generated password, shown only in this response (absent when one was given, and
    /// from a replay of the request with the same Idempotency-Key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub role: Option<Role>,
    /// A new password (at least 12 characters); signs the user out everywhere.
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    #[schema(example = "key_1")]
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The key's first characters, to recognise it.
    #[schema(example = "hk_AbC123")]
    pub prefix: String,
    pub created_by: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<ApiKeyInfo> for ApiKey {
    fn from(k: ApiKeyInfo) -> ApiKey {
        ApiKey {
            id: k.id.to_string(),
            name: k.name,
            role: k.role,
            prefix: k.prefix,
            created_by: k.created_by,
            created_at: timestamp(k.created_at),
            last_used_at: timestamp_opt(k.last_used_at),
            revoked_at: timestamp_opt(k.revoked_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    #[schema(example = "deploy")]
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub api_key: ApiKey,
    /// The key itself, shown only in this response: send it as `Authorization: Bearer KEY`.
    /// Absent from a replay of the request (same Idempotency-Key): keys are never kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Users {
    pub items: Vec<User>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeys {
    pub items: Vec<ApiKey>,
}

/// Checks the password's length and strength (the email counts as a guessable word), then
/// hashes it; both are CPU work, so they run off the async threads.
async fn hash(password: String, email: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        if let Some(problem) = credentials::password_problem(&password, &[&email]) {
            return Err(ApiError::invalid("password", problem.rule, problem.detail));
        }
        credentials::hash_password(&password).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Users of the organisation.
#[utoipa::path(get, path = "/users", tag = "accounts",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    responses(
        (status = 200, body = Users),
    ))]
async fn list_users(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
) -> ApiResult<axum::Json<Users>> {
    let users = state.store.users(p.org_id).await?;
    Ok(axum::Json(Users {
        items: users.into_iter().map(User::from).collect(),
    }))
}

/// Add a user to the organisation. Without a password, one is generated and returned once.
#[utoipa::path(post, path = "/users", tag = "accounts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect")),
    request_body = NewUser,
    responses(
        (status = 201, body = CreatedUser),
        (status = 409, description = "The email is taken", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_user(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<Response> {
    p.may_grant(body.role)?;
    let email = credentials::normalise_email(&body.email)
        .map_err(|d| ApiError::invalid("email", "format", d))?;
    let (password, generated) = match body.password {
        Some(pw) => (pw, None),
        None => {
            let pw = credentials::generate_password();
            (pw.clone(), Some(pw))
        }
    };
    let hashed = hash(password, email.clone()).await?;
    let user = state
        .store
        .create_user(p.org_id, &email, &hashed, body.role)
        .await?;
    tracing::info!(org_id = %p.org_id, user_id = %user.id, actor = p.actor, role = %user.role, "user created");
    let location = format!("/api/v1/users/{}", user.id);
    let created = CreatedUser {
        user: user.into(),
        password: generated,
    };
    let replay = serde_json::to_string(&CreatedUser {
        password: None,
        user: created.user.clone(),
    })
    .unwrap_or_default();
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(created),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(super::idempotency::ReplayWithout(replay));
    Ok(response)
}

/// One user.
#[utoipa::path(get, path = "/users/{id}", tag = "accounts",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, body = User),
    ))]
async fn get_user(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<User>> {
    let id = decode::<UserId>(&id)?;
    Ok(axum::Json(state.store.user(p.org_id, id).await?.into()))
}

/// Change a user's role or password. The last owner cannot be demoted.
#[utoipa::path(patch, path = "/users/{id}", tag = "accounts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "User id")),
    request_body = UserChange,
    responses(
        (status = 200, body = User),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_user(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UserChange>,
) -> ApiResult<axum::Json<User>> {
    let id = decode::<UserId>(&id)?;
    let target = state.store.user(p.org_id, id).await?;
    guard_peer(&p, target.role)?;
    if let Some(role) = body.role {
        p.may_grant(role)?;
    }
    let hashed = match body.password {
        Some(pw) => Some(hash(pw, target.email.clone()).await?),
        None => None,
    };
    let user = state
        .store
        .update_user(p.org_id, id, body.role, hashed.as_deref())
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        user_id = %id,
        actor = p.actor,
        "user changed"
    );
    Ok(axum::Json(user.into()))
}

/// Remove a user (signing it out). The last owner cannot be removed.
#[utoipa::path(delete, path = "/users/{id}", tag = "accounts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_user(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = decode::<UserId>(&id)?;
    let target = state.store.user(p.org_id, id).await?;
    guard_peer(&p, target.role)?;
    state.store.delete_user(p.org_id, id).await?;
    tracing::info!(
        org_id = %p.org_id,
        user_id = %id,
        actor = p.actor,
        "user removed"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// An admin may not change or remove an owner.
fn guard_peer(p: &Principal, target: Role) -> ApiResult<()> {
    if target > p.role {
        return Err(ApiError::forbidden(format!(
            "{} has the {} role and cannot change a user with the {target} role",
            p.actor, p.role
        )));
    }
    Ok(())
}

/// API keys of the organisation (never the keys themselves).
#[utoipa::path(get, path = "/api-keys", tag = "accounts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = 200, body = ApiKeys),
    ))]
async fn list_api_keys(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
) -> ApiResult<axum::Json<ApiKeys>> {
    let keys = state.store.api_keys(p.org_id).await?;
    Ok(axum::Json(ApiKeys {
        items: keys.into_iter().map(ApiKey::from).collect(),
    }))
}

/// Create an API key. The key is in this response only; Herald keeps its SHA-256 digest.
#[utoipa::path(post, path = "/api-keys", tag = "accounts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect")),
    request_body = NewApiKey,
    responses(
        (status = 201, body = CreatedApiKey),
    ))]
async fn create_api_key(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiJson(body): ApiJson<NewApiKey>,
) -> ApiResult<Response> {
    p.may_grant(body.role)?;
    let name = check_name("name", &body.name)?;
    let (key, prefix, digest) = credentials::new_api_key();
    let info = state
        .store
        .create_api_key(p.org_id, &name, body.role, &prefix, &digest, &p.actor)
        .await?;
    tracing::info!(org_id = %p.org_id, api_key_id = %info.id, actor = p.actor, role = %info.role, "API key created");
    let location = format!("/api/v1/api-keys/{}", info.id);
    let api_key: ApiKey = info.into();
    // A replay (same Idempotency-Key) shows the key's record, not the key: it is never kept.
    let replay = serde_json::to_string(&CreatedApiKey {
        api_key: api_key.clone(),
        key: None,
    })
    .unwrap_or_default();
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(CreatedApiKey {
            api_key,
            key: Some(key),
        }),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(super::idempotency::ReplayWithout(replay));
    Ok(response)
}

/// One API key. A revoked key is gone (410): revoking is the API's delete, and what was
/// deleted is not read back as if it were there; the list (`GET /api-keys`) keeps showing
/// it with `revoked_at`, for the audit trail.
#[utoipa::path(get, path = "/api-keys/{id}", tag = "accounts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "API key id")),
    responses(
        (status = 200, body = ApiKey),
        (status = 410, description = "The key was revoked (`type` gone)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_api_key(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<ApiKey>> {
    let id = decode::<ApiKeyId>(&id)?;
    let key = state.store.api_key(p.org_id, id).await?;
    if let Some(at) = key.revoked_at {
        return Err(ApiError::new(
            StatusCode::GONE,
            "gone",
            "The resource was deleted",
            format!(
                "API key {} was revoked at {}; `GET /api/v1/api-keys` lists it with `revoked_at`",
                id,
                timestamp(at)
            ),
        ));
    }
    Ok(axum::Json(key.into()))
}

/// Revoke an API key: it stops working at once, on every instance. A key cannot revoke
/// itself (409): a system that locks itself out by mistake cannot undo it; revoke it with
/// another key, in the dashboard or with `herald apikey revoke`.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "accounts",
    security(("api_key" = ["admin"]), ("session" = ["admin"])),
    params(("id" = String, Path, description = "API key id")),
    responses(
        (status = 200, description = "Revoked", body = ApiKey),
        (status = 409, description = "The key making the request is the one to revoke", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_api_key(
    State(state): State<ApiState>,
    AsAdmin(p): AsAdmin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<ApiKey>> {
    let id = decode::<ApiKeyId>(&id)?;
    let target = state.store.api_key(p.org_id, id).await?;
    guard_peer(&p, target.role)?;
    if matches!(p.credential, Credential::ApiKey { id: own } if own == id) {
        return Err(ApiError::conflict(
            "a key cannot revoke itself: revoke it with another key, in the dashboard (API keys) or with `herald apikey revoke`",
        ));
    }
    let key = state.store.revoke_api_key(p.org_id, id).await?;
    tracing::info!(
        org_id = %p.org_id,
        api_key_id = %id,
        actor = p.actor,
        "API key revoked"
    );
    Ok(axum::Json(key.into()))
}
