//! One-click unsubscribe for email (RFC 8058): every message carries
//! `List-Unsubscribe: <{public_url}/unsubscribe/{token}>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. A POST to that URL suppresses the
//! recipient for the organisation; a GET only shows a confirmation form, because mail
//! scanners follow links.
//!
//! The token is the message id and an HMAC-SHA256 of it under the configured secret_key,
//! so it cannot be guessed or altered, and needs no table.

use crate::app_state::{AppState, problem};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use crate::unsubscribe_link::{token, url, verify};

pub fn routes() -> Router<AppState> {
    Router::new().route("/unsubscribe/{token}", get(confirm).post(unsubscribe))
}

fn invalid() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "unknown-unsubscribe-link",
        "This unsubscribe link is not valid",
        "the link was altered or this server uses another secret key",
    )
}

async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(key) = state.context.secret_key.as_deref() else {
        return invalid();
    };
    if verify(key, &token).is_none() {
        return invalid();
    }
    // Only a POST unsubscribes: link scanners issue GETs.
    let page = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Unsubscribe</title>\
         <body><form method=\"post\" action=\"/unsubscribe/{token}\">\
         <p>Stop receiving these messages?</p><button type=\"submit\">Unsubscribe</button></form></body></html>"
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

async fn unsubscribe(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(key) = state.context.secret_key.as_deref() else {
        return invalid();
    };
    let Some(message_id) = verify(key, &token) else {
        return invalid();
    };
    let (org_id, address) = match state.store.message_recipient(message_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return invalid(),
        Err(e) => {
            tracing::error!(error = %e, "unsubscribe could not be recorded");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unsubscribe-unavailable",
                "The unsubscribe could not be recorded now",
                "try again in a moment",
            );
        }
    };
    match state
        .store
        .suppress(
            org_id,
            &address,
            "one-click unsubscribe (List-Unsubscribe)",
            &crate::store::OptSource::new("link", None, None),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(message_id = %message_id, "recipient unsubscribed with one click");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "You are unsubscribed.",
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "unsubscribe could not be recorded");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unsubscribe-unavailable",
                "The unsubscribe could not be recorded now",
                "try again in a moment",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;

    #[test]
    fn tokens_verify_only_unaltered_and_under_their_key() {
        let t = token("key-one", MessageId(42)).unwrap();
        assert_eq!(verify("key-one", &t), Some(MessageId(42)));
        assert_eq!(verify("key-two", &t), None);
        let forged = t.replacen("42.", "43.", 1);
        assert_eq!(verify("key-one", &forged), None);
        assert_eq!(verify("key-one", "42"), None);
        // The id has one spelling: the tag of 42 does not make `042` or `+42` valid.
        let tag = t.split_once('.').unwrap().1;
        for spelling in ["042", "+42", "0042"] {
            assert_eq!(verify("key-one", &format!("{spelling}.{tag}")), None);
        }
        // A truncated tag must not verify (it would be guessable in 256 tries).
        let (id, tag) = t.split_once('.').unwrap();
        assert_eq!(verify("key-one", &format!("{id}.{}", &tag[..2])), None);
        assert_eq!(
            url(Some("https://h.example/"), Some("key-one"), MessageId(42)).unwrap(),
            format!("https://h.example/unsubscribe/{t}")
        );
        assert!(url(None, Some("k"), MessageId(1)).is_none());
        assert!(url(Some("https://h"), None, MessageId(1)).is_none());
    }
}
