//! Secrets that authenticate callers: passwords (argon2id), API keys and session tokens
//! (random, stored as SHA-256 digests: they carry 256 bits of entropy, so a slow hash adds
//! nothing), CSRF tokens, and the comparison that does not leak timing.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every API key starts with this, so a leaked key is easy to recognise (and to scan for).
pub const API_KEY_PREFIX: &str = "hk_";

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD_LEN: usize = 12;

/// 32 random bytes, URL-safe base64 without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256: how keys and session tokens are stored and looked up.
pub fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new API key: (the key, shown once; the prefix kept for listings; the digest stored).
pub fn new_api_key() -> (String, String, String) {
    let key = format!("{API_KEY_PREFIX}{}", random_token());
    let prefix = key.chars().take(API_KEY_PREFIX.len() + 6).collect();
    let hash = digest(&key);
    (key, prefix, hash)
}

/// A readable random password for first-time accounts: 20 URL-safe characters.
pub fn generate_password() -> String {
    random_token().chars().take(20).collect()
}

/// The lowest zxcvbn score accepted: 3 is "safely unguessable: moderate protection from
/// offline slow-hash scenario" (about 10^10 guesses), which argon2id makes offline attacks pay.
pub const MIN_PASSWORD_SCORE: u8 = 3;
/// Passwords are scored on this many leading characters: zxcvbn's matching grows faster
/// than linearly with length, and a prefix this long that is guessable is not a passphrase.
const SCORED_CHARS: usize = 128;

/// Why a password is refused: the rule (`min_length`, `max_length`, `strength`) and what to
/// do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordProblem {
    pub rule: &'static str,
    pub detail: String,
}

/// Why a password is not acceptable, or None. `user_inputs` are words about the account
/// (its email) that make a password guessable when it contains them.
pub fn password_problem(password: &str, user_inputs: &[&str]) -> Option<PasswordProblem> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Some(PasswordProblem {
            rule: "min_length",
            detail: format!(
                "the password must be at least {MIN_PASSWORD_LEN} characters long; a passphrase of four or five unrelated words is long and easy to remember"
            ),
        });
    }
    if password.len() > 1024 {
        return Some(PasswordProblem {
            rule: "max_length",
            detail: "the password must be at most 1024 bytes long".into(),
        });
    }
    let scored: String = password.chars().take(SCORED_CHARS).collect();
    let estimate = zxcvbn::zxcvbn(&scored, user_inputs);
    let score = u8::from(estimate.score());
    if score >= MIN_PASSWORD_SCORE {
        return None;
    }
    let why = estimate
        .feedback()
        .and_then(|f| f.warning())
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    Some(PasswordProblem {
        rule: "strength",
        detail: format!(
            "the password is too easy to guess{why}: it scores {score} of 4 on the zxcvbn strength estimate and at least {MIN_PASSWORD_SCORE} is required; avoid repeats, sequences, common words and the email address, e.g. use a passphrase of four or five unrelated words"
        ),
    })
}

/// An argon2id PHC string (default parameters: 19 MiB, 2 passes). CPU-heavy: call it from
/// `spawn_blocking` in async code.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// True when `password` matches the PHC string. CPU-heavy, like `hash_password`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A valid hash of a password nobody knows, verified when the account does not exist so
/// that a failed sign-in takes as long whether or not the email is known.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Normalises an email address for storage and lookup, or says what is wrong with it.
pub fn normalise_email(input: &str) -> Result<String, String> {
    let email = input.trim().to_lowercase();
    // RFC 5322's dot-atom local part and a host name (RFC 1035 labels, a last label with a
    // letter): what the document's `format: email` accepts, or less.
    let local_ok = |local: &str| {
        !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let domain_ok = |domain: &str| {
        domain.split('.').all(label_ok)
            && domain
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic()))
    };
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| local_ok(local) && domain_ok(domain));
    if valid {
        Ok(email)
    } else {
        Err(format!(
            "`{input}` is not an email address: write it like ada@example.org"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterx", &hash));
        assert!(!verify_password("anything", "not a phc string"));
        assert!(!verify_password("anything", decoy_hash()));
    }

    #[test]
    fn api_keys_are_random_prefixed_and_stored_as_digests() {
        let (key, prefix, hash) = new_api_key();
        let (other, _, other_hash) = new_api_key();
        assert_ne!(key, other);
        assert_ne!(hash, other_hash);
        assert!(key.starts_with(API_KEY_PREFIX) && key.starts_with(&prefix));
        assert_eq!(hash, digest(&key));
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&key));
    }

    #[test]
    fn short_passwords_are_refused() {
        let short = password_problem("short", &[]).unwrap();
        assert_eq!(short.rule, "min_length");
        let long = password_problem(&"x".repeat(1025), &[]).unwrap();
        assert_eq!(long.rule, "max_length");
    }

    #[test]
    fn guessable_passwords_are_refused_for_their_strength() {
        for weak in [
            "aaaaaaaaaaaa",
            "111111111111",
            "abcdefghijkl",
            "password1234",
            "qwertyuiopas",
            "ada@example.org1",
        ] {
            let problem = password_problem(weak, &["ada@example.org"])
                .unwrap_or_else(|| panic!("{weak:?} was accepted"));
            assert_eq!(problem.rule, "strength", "{weak:?}");
            assert!(problem.detail.contains("passphrase"), "{}", problem.detail);
        }
        for strong in [
            "correct horse battery staple",
            "another long password",
            "a password long enough",
            "a long enough password",
            "Pw-2d8f-Kq94-xZt7",
        ] {
            assert_eq!(password_problem(strong, &[]), None, "{strong:?}");
        }
        // Generated first-owner passwords always pass.
        for _ in 0..50 {
            let generated = generate_password();
            assert_eq!(password_problem(&generated, &[]), None, "{generated}");
        }
    }

    #[test]
    fn scoring_a_long_password_is_bounded() {
        let long: String = "correct horse battery staple "
            .repeat(40)
            .chars()
            .take(1024)
            .collect();
        let started = std::time::Instant::now();
        let _ = password_problem(&long, &["ada@example.org"]);
        let elapsed = started.elapsed();
        assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
    }

    #[test]
    fn emails_are_normalised_or_refused() {
        assert_eq!(
            normalise_email(" Ada@Example.ORG ").unwrap(),
            "ada@example.org"
        );
        assert!(normalise_email("ada").is_err());
        assert!(normalise_email("@example.org").is_err());
        assert!(normalise_email("a b@example.org").is_err());
        // What the schemathesis run of 2026-12-06 sent: a `*` in the domain was accepted
        // although the document's `format: email` refuses it.
        assert!(normalise_email("_!@n7oh.com*").is_err());
        assert!(normalise_email("a..b@example.org").is_err());
        assert!(normalise_email("a@-example.org").is_err());
        assert!(normalise_email("a@example.123").is_err());
        assert_eq!(
            normalise_email("o'brien+news@mail.example.co.uk").unwrap(),
            "o'brien+news@mail.example.co.uk"
        );
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
