//! `Idempotency-Key` on POST: the first response to a key is kept in the database for a
//! day and replayed for every retry with the same key and the same request, so a client
//! whose connection dropped can retry a create or a start without a second effect.
//!
//! A retry with the same key but another request is refused (422); a retry while the first
//! request still runs gets 409. A server error (5xx) frees the key: it had no effect.
//! Keys are kept per caller (API key or user). A response that shows a secret once is
//! replayed without the secret (`ReplayWithout`): secrets are never kept.

use super::ApiState;
use super::auth::Principal;
use super::problem::{ApiError, too_large};
use crate::store::{IdempotencyState, StoredResponse};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Set on a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long a key and its response are kept.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// Streamed uploads are fingerprinted without their body (it is not buffered): a key
/// reused for another upload to the same URL replays the first upload's report.
fn is_streamed_upload(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/csv"))
}

/// Set by a handler on a response that shows a secret once (a new API key, a generated
/// password): the replay gets this body instead, with the secret left out, so no secret is
/// kept in the database.
#[derive(Debug, Clone)]
pub struct ReplayWithout(pub String);

/// Who sent the request: keys are kept per caller, so another user or key of the same
/// organisation can neither replay nor block someone else's request.
fn caller(principal: &Principal) -> String {
    match &principal.credential {
        // Bare row numbers: the scope of keys stored before ids were typed.
        super::auth::Credential::ApiKey { id } => format!("key:{}", id.get()),
        super::auth::Credential::Session { user_id, .. } => format!("user:{}", user_id.get()),
    }
}

pub async fn idempotency(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(IDEMPOTENCY_HEADER) else {
        return next.run(req).await;
    };
    // Unauthenticated requests are refused by the handler anyway; there is no tenant to
    // keep the key under.
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()) => {
            k.to_string()
        }
        _ => {
            return ApiError::invalid(
                "Idempotency-Key",
                "format",
                "the key must be 1 to 255 visible ASCII characters, e.g. a UUID",
            )
            .into_response();
        }
    };
    // The stored key is the caller's: the same key from another caller is another key.
    let key = format!("{}:{key}", caller(&principal));
    let (parts, body) = req.into_parts();
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    hasher.update(b"\n");
    let streamed = is_streamed_upload(&Request::from_parts(parts.clone(), Body::empty()));
    let body = if streamed {
        body
    } else {
        match axum::body::to_bytes(body, super::JSON_BODY_LIMIT).await {
            Ok(bytes) => {
                hasher.update(&bytes);
                Body::from(bytes)
            }
            Err(_) => return too_large().into_response(),
        }
    };
    let fingerprint: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let org = principal.org_id;
    match state
        .store
        .idempotency_begin(org, &key, &fingerprint, KEEP_MS)
        .await
    {
        Ok(IdempotencyState::Started) => {}
        Ok(IdempotencyState::Done(stored)) => return replay(stored),
        Ok(IdempotencyState::InProgress) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-use",
                "A request with this Idempotency-Key is still running",
                "wait for the first request with this key to finish, then retry",
            )
            .into_response();
        }
        // 409, not 422: the request itself is well formed (the document allows it); it
        // conflicts with the one already stored under the key.
        Ok(IdempotencyState::Mismatch) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "This Idempotency-Key was used for another request",
                "an Idempotency-Key names one request (method, URL and body); use a new key for a new request",
            )
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.status().is_server_error() {
        if let Err(e) = state.store.idempotency_abandon(org, &key).await {
            tracing::warn!(error = %e, "could not free an idempotency key after a server error");
        }
        return response;
    }
    let (mut resp_parts, resp_body) = response.into_parts();
    let bytes = match axum::body::to_bytes(resp_body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let kept_body = match resp_parts.extensions.remove::<ReplayWithout>() {
        Some(ReplayWithout(redacted)) => redacted,
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    let stored = StoredResponse {
        status: resp_parts.status.as_u16(),
        content_type: header_text(&resp_parts.headers, header::CONTENT_TYPE),
        location: header_text(&resp_parts.headers, header::LOCATION),
        body: kept_body,
    };
    if let Err(e) = state.store.idempotency_finish(org, &key, &stored).await {
        // The effect happened; the key stays "in progress" until it is taken over after a
        // minute. Say so rather than hide it.
        tracing::warn!(error = %e, key, "could not keep the response of an idempotent request");
    }
    Response::from_parts(resp_parts, Body::from(bytes))
}

fn header_text(headers: &axum::http::HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    if let Some(ct) = stored
        .content_type
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    if let Some(loc) = stored.location.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::LOCATION, loc);
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
