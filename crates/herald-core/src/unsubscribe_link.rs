//! The one-click unsubscribe link of an email (RFC 8058): the token is the message id and
//! an HMAC-SHA256 of it under the configured secret_key, so it cannot be guessed or altered
//! and needs no table. The engine puts the URL in each email; the HTTP route
//! (`webhooks::unsubscribe`) verifies it. Here, below both, so the engine needs nothing
//! from the HTTP side.

use crate::ids::MessageId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn mac(key: &str, message_id: MessageId) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).ok()?;
    // The bare row number: tokens issued before ids were typed stay valid.
    mac.update(format!("herald-unsubscribe:{}", message_id.get()).as_bytes());
    Some(mac)
}

/// The token for a message; None without a secret key, or for an id no message can have
/// (ids start at 1, and `verify` accepts only that canonical spelling).
pub fn token(secret_key: &str, message_id: MessageId) -> Option<String> {
    if message_id.get() < 1 {
        return None;
    }
    let tag = mac(secret_key, message_id)?.finalize().into_bytes();
    Some(format!(
        "{}.{}",
        message_id.get(),
        URL_SAFE_NO_PAD.encode(&tag[..16])
    ))
}

/// The message id a token stands for, if the token is genuine.
pub fn verify(secret_key: &str, token: &str) -> Option<MessageId> {
    let (id, tag) = token.split_once('.')?;
    // One spelling per token: `013.<mac>` would otherwise pass as `13.<mac>`.
    let id = MessageId(crate::domain::canonical_id(id)?);
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    // Exactly the 16 bytes we issue: a shorter tag would be guessable.
    if tag.len() != 16 {
        return None;
    }
    mac(secret_key, id)?.verify_truncated_left(&tag).ok()?;
    Some(id)
}

/// The unsubscribe URL for a message, when Herald has a public URL and a secret key.
pub fn url(
    public_url: Option<&str>,
    secret_key: Option<&str>,
    message_id: MessageId,
) -> Option<String> {
    let base = public_url?.trim_end_matches('/');
    Some(format!(
        "{base}/unsubscribe/{}",
        token(secret_key?, message_id)?
    ))
}
