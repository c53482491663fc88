//! Channel secrets at rest: sealed with ChaCha20-Poly1305 under a key from configuration
//! (`secret_key` / `HERALD_SECRET_KEY`), never logged, shown back only masked.
//!
//! Sealed form: `v1:<base64 nonce>:<base64 ciphertext>`; the channel id is bound in as
//! associated data, so a sealed value copied onto another channel does not open.

use crate::ids::TypedId;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "secret_key is not 32 bytes of base64: generate one with `herald keygen` and set HERALD_SECRET_KEY"
    )]
    BadKey,
    #[error(
        "this channel has secrets but no secret_key is configured: set HERALD_SECRET_KEY (generate one with `herald keygen`)"
    )]
    NoKey,
    #[error(
        "the channel's secrets do not open with the configured secret_key: it is not the key they were sealed with"
    )]
    WrongKey,
    #[error("the channel's sealed secrets are damaged: {0}")]
    Damaged(String),
}

#[derive(Clone)]
pub struct SecretKey(Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    pub fn parse(b64: &str) -> Result<SecretKey, SecretError> {
        let bytes = STANDARD
            .decode(b64.trim())
            .map_err(|_| SecretError::BadKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(SecretKey(arr.into()))
    }

    /// A fresh random key, base64-encoded for configuration.
    pub fn generate() -> String {
        // rand's thread generator is a CSPRNG seeded from the operating system.
        STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// The key from settings, if one is configured.
    pub fn from_settings(setting: Option<&str>) -> Result<Option<SecretKey>, SecretError> {
        setting
            .filter(|s| !s.trim().is_empty())
            .map(SecretKey::parse)
            .transpose()
    }
}

/// Seals a JSON object of secrets for the row `owner` (a channel, a webhook endpoint): the
/// seal binds its row number, so a sealed value copied to another row does not open.
pub fn seal(
    key: &SecretKey,
    owner: impl TypedId,
    secrets: &serde_json::Value,
) -> Result<String, SecretError> {
    let cipher = ChaCha20Poly1305::new(&key.0);
    // A random 96-bit nonce per seal: secrets are sealed rarely (channel writes), far below
    // the birthday bound.
    let nonce = Nonce::from(rand::random::<[u8; 12]>());
    let plaintext = secrets.to_string();
    let aad = owner.row().to_be_bytes();
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| SecretError::Damaged("encryption failed".into()))?;
    Ok(format!(
        "v1:{}:{}",
        STANDARD.encode(nonce),
        STANDARD.encode(ciphertext)
    ))
}

pub fn open(
    key: &SecretKey,
    owner: impl TypedId,
    sealed: &str,
) -> Result<serde_json::Value, SecretError> {
    let mut parts = sealed.splitn(3, ':');
    let (Some("v1"), Some(nonce), Some(ciphertext)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SecretError::Damaged("unknown format".into()));
    };
    let nonce = STANDARD
        .decode(nonce)
        .map_err(|e| SecretError::Damaged(e.to_string()))?;
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| SecretError::Damaged("bad nonce length".into()))?;
    let ciphertext = STANDARD
        .decode(ciphertext)
        .map_err(|e| SecretError::Damaged(e.to_string()))?;
    let aad = owner.row().to_be_bytes();
    let plaintext = ChaCha20Poly1305::new(&key.0)
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SecretError::WrongKey)?;
    serde_json::from_slice(&plaintext).map_err(|e| SecretError::Damaged(e.to_string()))
}

/// A secret as it may be shown: its last four characters only.
pub fn mask(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if secret.chars().count() <= 8 {
        "****".to_string()
    } else {
        format!("****{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChannelId;

    #[test]
    fn seals_and_opens_only_for_its_channel_and_key() {
        let key = SecretKey::parse(&SecretKey::generate()).unwrap();
        let secrets = serde_json::json!({"auth_token": "tok_1234567890"});
        let sealed = seal(&key, ChannelId(7), &secrets).unwrap();
        assert!(
            !sealed.contains("tok_"),
            "the secret must not appear in the sealed form"
        );
        assert_eq!(open(&key, ChannelId(7), &sealed).unwrap(), secrets);
        assert_eq!(
            open(&key, ChannelId(8), &sealed),
            Err(SecretError::WrongKey)
        );
        let other = SecretKey::parse(&SecretKey::generate()).unwrap();
        assert_eq!(
            open(&other, ChannelId(7), &sealed),
            Err(SecretError::WrongKey)
        );
        assert!(matches!(
            open(&key, ChannelId(7), "v2:x:y"),
            Err(SecretError::Damaged(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused_and_masks_hide_all_but_the_tail() {
        assert_eq!(SecretKey::parse("short").unwrap_err(), SecretError::BadKey);
        assert!(SecretKey::from_settings(None).unwrap().is_none());
        assert_eq!(mask("abcdefghijkl"), "****ijkl");
        assert_eq!(mask("abc"), "****");
        assert!(!format!("{:?}", SecretKey::parse(&SecretKey::generate()).unwrap()).contains('='));
    }
}
