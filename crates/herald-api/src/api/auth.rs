//! Who is calling: API keys (`Authorization: Bearer hk_…`) and browser sessions (an
//! HTTP-only cookie, with a CSRF token required on every write), the role extractors that
//! guard each handler, and sign-in / sign-out with rate limits per account and per address.

use super::credentials::{self, constant_time_eq, digest};
use super::problem::{ApiError, ApiJson, ApiResult};
use super::{ApiState, timestamp};
use crate::domain::Role;
use crate::ids::{ApiKeyId, OrgId, SessionId, UserId};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "herald_session";
/// The header that carries the session's CSRF token on writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session lasts this long after sign-in.
pub const SESSION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Sign-in failures allowed per account, and per client address, in one window.
pub const ACCOUNT_FAILURE_LIMIT: i64 = 5;
pub const ADDRESS_FAILURE_LIMIT: i64 = 20;
pub const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;

/// How the caller proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    ApiKey {
        id: ApiKeyId,
    },
    Session {
        id: SessionId,
        user_id: UserId,
        csrf_token: String,
    },
}

/// The authenticated caller of a request: its organisation and role. Every handler's data
/// access is scoped to `org_id`.
#[derive(Debug, Clone)]
pub struct Principal {
    pub org_id: OrgId,
    pub role: Role,
    /// For audit trails: `user:ada@example.org` or `api_key:deploy`.
    pub actor: String,
    pub credential: Credential,
}

impl Principal {
    fn require(parts: &Parts, role: Role) -> Result<Principal, ApiError> {
        let principal = parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::unauthorized(
                "send an API key as `Authorization: Bearer hk_…`, or sign in at POST /api/v1/auth/login",
            )
        })?;
        if principal.role < role {
            return Err(ApiError::forbidden(format!(
                "this needs the {role} role or higher; {} has the {} role",
                principal.actor, principal.role
            )));
        }
        Ok(principal)
    }

    /// Roles a caller may hand out: its own and those below it.
    pub fn may_grant(&self, role: Role) -> Result<(), ApiError> {
        if role > self.role {
            return Err(ApiError::forbidden(format!(
                "{} has the {} role and cannot grant the {role} role",
                self.actor, self.role
            )));
        }
        Ok(())
    }
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                Principal::require(parts, $role).map($name)
            }
        }
    };
}

role_extractor!(
    /// Any signed-in caller (viewer or higher).
    AsViewer,
    Role::Viewer
);
role_extractor!(
    /// Editor or higher: changes contacts, lists, suppressions and campaigns.
    AsEditor,
    Role::Editor
);
role_extractor!(
    /// Admin or higher: channels, users, API keys.
    AsAdmin,
    Role::Admin
);
role_extractor!(
    /// Owner only.
    AsOwner,
    Role::Owner
);

/// The client's address, for per-address sign-in limits.
pub fn client_address(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Resolves the request's credentials. A Bearer key that is not valid is an error (the
/// caller meant to authenticate); a stale session cookie is simply no session.
pub async fn principal_for(state: &ApiState, headers: &HeaderMap) -> ApiResult<Option<Principal>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or_default();
        let Some(key) = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
        else {
            return Err(ApiError::unauthorized(
                "the Authorization header must be `Bearer hk_…` with an API key",
            ));
        };
        let key = key.trim();
        return match state.store.api_key_by_hash(&digest(key)).await? {
            Some(k) => Ok(Some(Principal {
                org_id: k.org_id,
                role: k.role,
                actor: format!("api_key:{}", k.name),
                credential: Credential::ApiKey { id: k.id },
            })),
            None => Err(ApiError::unauthorized(
                "this API key is not valid or was revoked: create one with `herald apikey create` or POST /api/v1/api-keys",
            )),
        };
    }
    if let Some(token) = cookie_value(headers, SESSION_COOKIE)
        && let Some(s) = state.store.session_by_hash(&digest(token)).await?
    {
        return Ok(Some(Principal {
            org_id: s.user.org_id,
            role: s.user.role,
            actor: format!("user:{}", s.user.email),
            credential: Credential::Session {
                id: s.id,
                user_id: s.user.id,
                csrf_token: s.csrf_token,
            },
        }));
    }
    Ok(None)
}

/// Middleware: puts the caller's `Principal` in the request's extensions, and refuses a
/// cookie-authenticated write whose CSRF token is missing or wrong.
pub async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let principal = match principal_for(&state, req.headers()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(p) = principal {
        if let Credential::Session { csrf_token, .. } = &p.credential {
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !safe && !constant_time_eq(sent, csrf_token) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf-token-invalid",
                    "The CSRF token is missing or wrong",
                    "a write with a session cookie must send the session's token in the X-CSRF-Token header (GET /api/v1/auth/session returns it)",
                )
                .into_response();
            }
        }
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "ada@example.org")]
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// `session` or `api_key`.
    pub via: String,
    /// `user:EMAIL` or `api_key:NAME`.
    pub actor: String,
    pub role: Role,
    pub organisation_id: String,
    pub organisation_name: String,
    /// Send this in `X-CSRF-Token` on every write made with the session cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(current_session))
}

/// Whether cookies must carry `Secure`: Herald is reached over TLS (its public URL is
/// https, or a proxy in front says so).
pub fn secure_cookies(state: &ApiState, headers: &HeaderMap) -> bool {
    state
        .context
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

pub fn session_cookie(token: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("herald_session=; Path=/; Max-Age=0"))
}

/// The outcome of a sign-in attempt, for the API and the dashboard alike.
pub struct SignedIn {
    pub token: String,
    pub session: crate::store::SessionInfo,
}

/// Checks the rate limits, then the password; on success opens a session.
pub async fn sign_in(
    state: &ApiState,
    email: &str,
    password: &str,
    address: &str,
) -> ApiResult<SignedIn> {
    let email = credentials::normalise_email(email)
        .map_err(|detail| ApiError::invalid("email", "format", detail))?;
    let scopes = [
        (format!("account:{email}"), ACCOUNT_FAILURE_LIMIT),
        (format!("address:{address}"), ADDRESS_FAILURE_LIMIT),
    ];
    let paused = |wait_ms: i64| {
        let secs = u64::try_from(wait_ms / 1000 + 1).unwrap_or(1);
        ApiError {
            retry_after_secs: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-sign-in-attempts",
                "Too many failed sign-in attempts",
                format!("sign-in is paused for this account or address; try again in {secs} s"),
            )
        }
    };
    for (scope, limit) in &scopes {
        if let Some(wait_ms) = state
            .store
            .login_blocked(scope, FAILURE_WINDOW_MS, *limit)
            .await?
        {
            return Err(paused(wait_ms));
        }
    }
    // Count this attempt before checking the password, so that concurrent attempts cannot
    // all pass the check above; a successful one is forgiven below.
    for (scope, limit) in &scopes {
        let attempts = state
            .store
            .count_login_attempt(scope, FAILURE_WINDOW_MS)
            .await?;
        if attempts > *limit {
            return Err(paused(FAILURE_WINDOW_MS));
        }
    }
    let found = state.store.user_credentials(&email).await?;
    let hash = found
        .as_ref()
        .map(|c| c.password_hash.clone())
        .unwrap_or_else(|| credentials::decoy_hash().to_string());
    let attempt = password.to_string();
    let matches =
        tokio::task::spawn_blocking(move || credentials::verify_password(&attempt, &hash))
            .await
            .map_err(ApiError::internal)?;
    let user = match found {
        Some(c) if matches => c.user,
        _ => {
            tracing::info!(email, address, "sign-in refused");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "The email or password is wrong",
                "the email or password is wrong",
            ));
        }
    };
    state.store.clear_login_failures(&scopes[0].0).await?;
    state.store.forgive_login_attempt(&scopes[1].0).await?;
    let token = credentials::random_token();
    let csrf = credentials::random_token();
    let expires_at = crate::clock::now_ms() + SESSION_TTL_MS;
    let id = state
        .store
        .create_session(user.id, &digest(&token), &csrf, address, expires_at)
        .await?;
    tracing::info!(user_id = %user.id, org_id = %user.org_id, "signed in");
    Ok(SignedIn {
        token,
        session: crate::store::SessionInfo {
            id,
            user,
            csrf_token: csrf,
            expires_at,
        },
    })
}

/// Sign in with email and password: sets the session cookie and returns the CSRF token.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = SessionView),
        (status = 401, description = "Wrong email or password", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The email is malformed", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
async fn login(
    State(state): State<ApiState>,
    parts: axum::http::Extensions,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let address = client_address(&parts);
    let signed = sign_in(&state, &body.email, &body.password, &address).await?;
    let org = state.store.organisation(signed.session.user.org_id).await?;
    let view = SessionView {
        via: "session".into(),
        actor: format!("user:{}", signed.session.user.email),
        role: signed.session.user.role,
        organisation_id: org.id.to_string(),
        organisation_name: org.name,
        csrf_token: Some(signed.session.csrf_token.clone()),
        expires_at: Some(timestamp(signed.session.expires_at)),
    };
    let cookie = session_cookie(
        &signed.token,
        SESSION_TTL_MS / 1000,
        secure_cookies(&state, &headers),
    );
    Ok(([(header::SET_COOKIE, cookie)], axum::Json(view)).into_response())
}

/// Sign out: revokes the session on the server and clears the cookie.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    security(("session" = ["viewer"])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 400, description = "The caller used an API key, not a session", body = super::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No credentials", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    AsViewer(principal): AsViewer,
) -> ApiResult<Response> {
    let Credential::Session { id, .. } = principal.credential else {
        return Err(ApiError::bad_request(
            "not-a-session",
            "this request authenticated with an API key; revoke keys with DELETE /api/v1/api-keys/{id}",
        ));
    };
    state.store.revoke_session(id).await?;
    let cookie = session_cookie("", 0, secure_cookies(&state, &headers));
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// Who is calling: the organisation, role and (for sessions) the CSRF token.
#[utoipa::path(
    get,
    path = "/auth/session",
    tag = "auth",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    responses(
        (status = 200, description = "The caller", body = SessionView),
        (status = 401, description = "No credentials", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
async fn current_session(
    State(state): State<ApiState>,
    AsViewer(principal): AsViewer,
) -> ApiResult<axum::Json<SessionView>> {
    let org = state.store.organisation(principal.org_id).await?;
    let (via, csrf_token) = match &principal.credential {
        Credential::ApiKey { .. } => ("api_key", None),
        Credential::Session { csrf_token, .. } => ("session", Some(csrf_token.clone())),
    };
    Ok(axum::Json(SessionView {
        via: via.into(),
        actor: principal.actor,
        role: principal.role,
        organisation_id: org.id.to_string(),
        organisation_name: org.name,
        csrf_token,
        expires_at: None,
    }))
}
