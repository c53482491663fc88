//! The API, called in process: a request built as a browser's fetch would build it (the
//! session cookie, the CSRF token on writes), sent through the API router with `oneshot`.

use super::{Session, Web};
use crate::api::auth::{CSRF_HEADER, SESSION_COOKIE};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

/// Largest API answer read back (a page of 500 messages is far below this).
const REPLY_LIMIT: usize = 16 * 1024 * 1024;

/// What goes in the request body.
pub enum Payload {
    None,
    Json(Value),
    /// A body of another media type (CSV uploads).
    Raw {
        content_type: &'static str,
        bytes: Bytes,
    },
}

/// What the API answered.
#[derive(Debug, Clone)]
pub struct ApiReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl ApiReply {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The problem document's sentence for a person: its detail, else its title.
    pub fn message(&self) -> String {
        let detail = self.body["detail"].as_str().unwrap_or_default();
        let title = self.body["title"].as_str().unwrap_or_default();
        match (title.is_empty(), detail.is_empty()) {
            (_, false) => capitalise(detail),
            (false, true) => title.to_string(),
            (true, true) => format!("the API answered {}", self.status),
        }
    }

    /// A failure that is not the API's answer at all (it could not be asked).
    pub fn unavailable(detail: impl Into<String>) -> ApiReply {
        ApiReply {
            status: StatusCode::BAD_GATEWAY,
            headers: HeaderMap::new(),
            body: serde_json::json!({
                "type": "https://herald.dev/problems/api-unavailable",
                "title": "The API could not be reached",
                "status": 502,
                "detail": detail.into(),
            }),
        }
    }
}

pub fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl Web {
    /// Calls the API as the signed-in user. `idempotency_key` makes a repeated form
    /// submission replay the first answer instead of acting twice.
    pub async fn api(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        payload: Payload,
        idempotency_key: Option<&str>,
    ) -> ApiReply {
        let cookie = format!("{SESSION_COOKIE}={}", session.token);
        let Ok(cookie) = HeaderValue::from_str(&cookie) else {
            return ApiReply::unavailable("the session cookie is malformed; sign in again");
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::COOKIE, cookie)
            .header(header::ACCEPT, "application/json");
        if !matches!(method, Method::GET | Method::HEAD) {
            builder = builder.header(CSRF_HEADER, session.csrf.as_str());
        }
        if let Some(key) = idempotency_key.filter(|k| !k.is_empty() && k.len() <= 200) {
            builder = builder.header("idempotency-key", key);
        }
        let request = match payload {
            Payload::None => builder.body(Body::empty()),
            Payload::Json(v) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            Payload::Raw {
                content_type,
                bytes,
            } => builder
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(bytes)),
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => return ApiReply::unavailable(format!("the request is malformed: {e}")),
        };
        let response = match self.api.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match axum::body::to_bytes(response.into_body(), REPLY_LIMIT).await {
            Ok(b) => b,
            Err(e) => return ApiReply::unavailable(format!("the answer could not be read: {e}")),
        };
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if status.is_success() => {
                    return ApiReply::unavailable(format!(
                        "{method} {path} answered something that is not JSON"
                    ));
                }
                Err(_) => serde_json::json!({
                    "title": "The API refused the request",
                    "status": status.as_u16(),
                    "detail": String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>(),
                }),
            }
        };
        if status.is_server_error() {
            tracing::warn!(%method, path, %status, "dashboard: the API failed");
        }
        ApiReply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, session: &Session, path: &str) -> ApiReply {
        self.api(session, Method::GET, path, Payload::None, None)
            .await
    }

    pub async fn post(&self, session: &Session, path: &str, body: Value) -> ApiReply {
        self.api(session, Method::POST, path, Payload::Json(body), None)
            .await
    }

    /// The API's session view for a cookie token (who is signed in), or the reply.
    pub async fn whoami(&self, token: &str) -> ApiReply {
        let probe = Session {
            token: token.to_string(),
            csrf: String::new(),
            actor: String::new(),
            email: String::new(),
            role: crate::domain::Role::Viewer,
            organisation: String::new(),
        };
        self.get(&probe, "/api/v1/auth/session").await
    }
}

/// `a=1&b=x y` for a query string, dropping empty values.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .copied()
        .collect();
    if kept.is_empty() {
        return String::new();
    }
    match serde_urlencoded::to_string(&kept) {
        Ok(q) => format!("?{q}"),
        Err(_) => String::new(),
    }
}

/// Everything but unreserved characters (RFC 3986) percent-encoded: safe in a path
/// segment and in a query value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment taken from a URL, safe to put back into an API path: letters, digits, `_`
/// and `-` as they are, anything else percent-encoded. Nothing is dropped, so a misspelt id
/// (`cmp_+1`) stays misspelt and the API answers 404, instead of the dashboard turning it
/// into another id's one spelling (`cmp_1`).
pub fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn segments_keep_ids_and_encode_the_rest() {
        assert_eq!(segment("cmp_12"), "cmp_12");
        assert_eq!(segment("cmp_+1"), "cmp_%2B1");
        assert_eq!(segment("../users"), "%2E%2E%2Fusers");
        assert_eq!(segment("cmp_1?x=1"), "cmp_1%3Fx%3D1");
    }
}
