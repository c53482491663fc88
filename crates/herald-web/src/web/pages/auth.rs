//! Sign in and sign out. Sign-in uses the API's own `auth::sign_in` (rate limits, password
//! check, session); its form is protected by a double-submit token, since no session exists
//! yet to hold one.

use super::super::render::public_page;
use super::super::session::{FLASH_COOKIE, redirect_with, safe_next};
use super::super::{Payload, PostForm, Web};
use crate::api::auth::{self, SESSION_COOKIE, SESSION_TTL_MS, cookie_value};
use crate::credentials::{constant_time_eq, random_token};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

/// The cookie holding the sign-in form's anti-forgery token.
const LOGIN_COOKIE: &str = "herald_login";

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn login_cookie(value: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={value}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

struct LoginView<'a> {
    status: StatusCode,
    next: &'a str,
    email: &'a str,
    error: Option<String>,
    email_error: Option<String>,
    notice: Option<String>,
}

/// The sign-in form with a fresh anti-forgery token.
fn render_login(web: &Web, headers: &HeaderMap, view: LoginView<'_>) -> Response {
    let token = random_token();
    let mut response = public_page(
        view.status,
        "Sign in",
        "login.html",
        json!({
            "csrf": token,
            "next": view.next,
            "email": view.email,
            "error": view.error,
            "email_error": view.email_error,
            // Wrong email or password: the message is about both fields.
            "credentials_wrong": view.error.is_some() && view.status == StatusCode::UNAUTHORIZED,
            "notice": view.notice,
        }),
    );
    let secure = auth::secure_cookies(&web.state, headers);
    if let Some(v) = login_cookie(&token, 3600, secure) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

pub async fn login_form(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref().unwrap_or("/campaigns"));
    if let Some(token) = cookie_value(&headers, SESSION_COOKIE).filter(|t| !t.is_empty())
        && web.whoami(token).await.ok()
    {
        return Redirect::to(next).into_response();
    }
    let flashed = cookie_value(&headers, FLASH_COOKIE).is_some();
    let notice = flashed.then(|| "You are signed out.".to_string());
    let mut response = render_login(
        &web,
        &headers,
        LoginView {
            status: StatusCode::OK,
            next,
            email: "",
            error: None,
            email_error: None,
            notice,
        },
    );
    if flashed {
        super::super::session::clear_flash(
            response.headers_mut(),
            auth::secure_cookies(&web.state, &headers),
        );
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

pub async fn login(
    State(web): State<Web>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: LoginForm = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => {
            return render_login(
                &web,
                &headers,
                LoginView {
                    status: StatusCode::BAD_REQUEST,
                    next: "/campaigns",
                    email: "",
                    error: Some("The form could not be read; please try again.".into()),
                    email_error: None,
                    notice: None,
                },
            );
        }
    };
    let next = safe_next(if form.next.is_empty() {
        "/campaigns"
    } else {
        &form.next
    });
    let expected = cookie_value(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(&form.csrf, expected) {
        return render_login(
            &web,
            &headers,
            LoginView {
                status: StatusCode::FORBIDDEN,
                next,
                email: &form.email,
                error: Some(
                    "This sign-in form expired (or cookies are blocked); please sign in again."
                        .into(),
                ),
                email_error: None,
                notice: None,
            },
        );
    }
    let address = auth::client_address(&extensions);
    match auth::sign_in(&web.state, &form.email, &form.password, &address).await {
        Ok(signed) => {
            let secure = auth::secure_cookies(&web.state, &headers);
            let mut response = Redirect::to(next).into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                auth::session_cookie(&signed.token, SESSION_TTL_MS / 1000, secure),
            );
            if let Some(v) = login_cookie("", 0, secure) {
                h.append(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => {
            let email_error = e
                .errors
                .iter()
                .find(|f| f.field == "email")
                .map(|f| super::super::client::capitalise(&f.detail));
            let error = if email_error.is_some() {
                None
            } else {
                Some(super::super::client::capitalise(&e.detail))
            };
            render_login(
                &web,
                &headers,
                LoginView {
                    status: e.status,
                    next,
                    email: &form.email,
                    error,
                    email_error,
                    notice: None,
                },
            )
        }
    }
}

/// Revokes the session on the server and clears the cookie.
pub async fn logout(State(web): State<Web>, form: PostForm) -> Response {
    let ctx = &form.ctx;
    let reply = web
        .api(
            &ctx.session,
            Method::POST,
            "/api/v1/auth/logout",
            Payload::None,
            None,
        )
        .await;
    if !reply.ok() {
        tracing::warn!(status = %reply.status, "dashboard: sign-out was not recorded by the API");
    }
    let mut response = redirect_with("/login", "signed-out", ctx.secure);
    response
        .headers_mut()
        .append(header::SET_COOKIE, auth::session_cookie("", 0, ctx.secure));
    response
}
