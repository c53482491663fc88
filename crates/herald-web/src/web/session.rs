//! Who is signed in: the session cookie, resolved by the API's own `GET /auth/session`, and
//! the one-shot "flash" message a POST-redirect-GET carries to the page it lands on.

use super::Web;
use crate::api::auth::{SESSION_COOKIE, cookie_value};
use crate::domain::Role;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

pub use super::flash::{FLASH_COOKIE, clear_flash};
use super::flash::{decode, encode, flash_cookie};

/// The signed-in user, as the API sees the session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session cookie's value, forwarded to the API.
    pub token: String,
    /// The session's CSRF token: forms must echo it, API writes carry it.
    pub csrf: String,
    /// `user:EMAIL`.
    pub actor: String,
    pub email: String,
    pub role: Role,
    pub organisation: String,
}

impl Session {
    pub fn at_least(&self, role: Role) -> bool {
        self.role >= role
    }
}

/// A dashboard request by a signed-in user: the session, where the request was made, and
/// the flash message the previous page left, if any.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub session: Session,
    /// Path and query of this request, to come back to after signing in again.
    pub here: String,
    pub flash: Option<String>,
    /// Whether the request came over TLS (for cookie flags).
    pub secure: bool,
}

impl FromRequestParts<Web> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Ctx, Response> {
        let here = parts
            .extensions
            .get::<OriginalUri>()
            .map(|u| u.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let here = here
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let Some(token) = cookie_value(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty())
        else {
            return Err(to_login(&here));
        };
        let reply = web.whoami(token).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            return Err(to_login(&here));
        }
        if !reply.ok() {
            return Err(super::render::bare_error(
                reply.status,
                "Herald cannot tell who you are right now",
                &reply.message(),
            ));
        }
        let b = &reply.body;
        let actor = b["actor"].as_str().unwrap_or_default().to_string();
        let session = Session {
            token: token.to_string(),
            csrf: b["csrf_token"].as_str().unwrap_or_default().to_string(),
            email: actor.strip_prefix("user:").unwrap_or(&actor).to_string(),
            actor,
            role: serde_json::from_value(b["role"].clone()).unwrap_or(Role::Viewer),
            organisation: b["organisation_name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        Ok(Ctx {
            session,
            here,
            flash: cookie_value(&parts.headers, FLASH_COOKIE).map(decode),
            secure: crate::api::auth::secure_cookies(&web.state, &parts.headers),
        })
    }
}

/// To the sign-in page, coming back here afterwards.
fn to_login(here: &str) -> Response {
    let next = if here == "/" || here.starts_with("/login") {
        String::new()
    } else {
        super::client::query(&[("next", here)])
    };
    Redirect::to(&format!("/login{next}")).into_response()
}

/// A `next` target that stays on this site (no `//host`, no scheme, no backslash).
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && next.len() <= 1000;
    if ok { next } else { "/campaigns" }
}

/// A redirect (303: the browser follows with GET) carrying a message for the next page.
pub fn redirect_with(to: &str, message: &str, secure: bool) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&flash_cookie(&encode(message), 60, secure)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_text_round_trips_through_a_cookie_value() {
        for text in ["Campaign paused.", "a; b, \"c\" = 100%", "ünïcödé ✓", ""] {
            let e = encode(text);
            assert!(
                e.chars().all(|c| c.is_ascii_alphanumeric() || c == '%'),
                "{e}"
            );
            assert_eq!(decode(&e), text);
        }
        assert_eq!(decode("50%"), "50%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn next_targets_stay_on_this_site() {
        assert_eq!(safe_next("/campaigns/cmp_1"), "/campaigns/cmp_1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "evil",
            "",
        ] {
            assert_eq!(safe_next(bad), "/campaigns", "{bad}");
        }
    }
}
