//! Recipient addresses: a phone number in E.164 form or an email address.
//!
//! "Parse, don't validate": the only way to get an [`Address`] is
//! [`Address::parse`], so every `Address` in the program is already
//! normalised and two spellings of the same recipient compare (and hash,
//! and deduplicate) equal.
//!
//! Rules, after trimming:
//! * with an `@` it is an email: one `@`, a non-empty local part of at most
//!   64 characters (an RFC 5322 dot-atom; non-ASCII letters allowed), a
//!   domain of dot-separated `[A-Za-z0-9-]` labels not starting or ending
//!   with `-` and ending in a TLD of 2+ letters, no whitespace, at most 254
//!   characters. The domain is lowercased; the local part is kept as given.
//! * otherwise it is a phone number in E.164: spaces, `-`, `.`, `(`, `)`
//!   are dropped (and `(0)` after an international prefix), a leading `00`
//!   becomes `+`, and the result must be `+` and 8 to 15 digits, the first
//!   one 1–9.

use std::fmt;
use std::str::FromStr;

/// E.164 caps a number at 15 digits, country code included.
const PHONE_MAX_DIGITS: usize = 15;
/// No country issues mobile numbers this short; anything shorter is a typo
/// or a national short code, which a bulk sender cannot reach.
const PHONE_MIN_DIGITS: usize = 8;
/// RFC 5321 limits.
const EMAIL_MAX_LEN: usize = 254;
const EMAIL_LOCAL_MAX_LEN: usize = 64;
const DNS_LABEL_MAX_LEN: usize = 63;

/// A normalised recipient address.
///
/// Invariant (kept private by construction through [`Address::parse`]):
/// `Phone` holds `+` followed by 8 to 15 digits, the first one 1–9;
/// `Email` holds `local@domain` with the domain lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Phone(String),
    Email(String),
}

/// Which kind of address a recipient has, e.g. to pick a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKind {
    Phone,
    Email,
}

impl AddressKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressKind::Phone => "phone",
            AddressKind::Email => "email",
        }
    }
}

impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input is not an address. Each message names the input (quoted
/// with Rust escapes, so control characters cannot garble a log line) and
/// says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "{input:?} is empty: give a phone number in E.164 form (+14155550100) or an email address"
    )]
    Empty { input: String },
    #[error("{input:?} is not an E.164 phone number: {reason}")]
    InvalidPhone { input: String, reason: String },
    #[error("{input:?} is not a valid email address: {reason}")]
    InvalidEmail { input: String, reason: String },
}

impl Address {
    /// Parse and normalise a phone number or an email address.
    ///
    /// Anything containing `@` is treated as an email, everything else as a
    /// phone number; see the module docs for the rules.
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(AddressError::Empty {
                input: input.to_owned(),
            });
        }
        if trimmed.contains('@') {
            parse_email(trimmed)
                .map(Address::Email)
                .map_err(|reason| AddressError::InvalidEmail {
                    input: input.to_owned(),
                    reason,
                })
        } else {
            parse_phone(trimmed)
                .map(Address::Phone)
                .map_err(|reason| AddressError::InvalidPhone {
                    input: input.to_owned(),
                    reason,
                })
        }
    }

    /// The normalised form, e.g. `+14155550100` or `bob@example.com`.
    pub fn as_str(&self) -> &str {
        match self {
            Address::Phone(s) | Address::Email(s) => s,
        }
    }

    pub fn kind(&self) -> AddressKind {
        match self {
            Address::Phone(_) => AddressKind::Phone,
            Address::Email(_) => AddressKind::Email,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

/// An address equals its normalised text (`+14155550100`, `bob@example.com`).
impl PartialEq<str> for Address {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Address {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// As its normalised text (the API, the CLI's JSON, events).
impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// Stored as its normalised text and read back through `Address::parse`, so a row's address
// is an `Address` like any other: parsing a normalised address gives it back unchanged,
// and a stored text that is no address is an error where it is read, not a string that
// travels on.
impl sqlx_core::types::Type<sqlx_core::any::Any> for Address {
    fn type_info() -> sqlx_core::any::AnyTypeInfo {
        <String as sqlx_core::types::Type<sqlx_core::any::Any>>::type_info()
    }
    fn compatible(ty: &sqlx_core::any::AnyTypeInfo) -> bool {
        <String as sqlx_core::types::Type<sqlx_core::any::Any>>::compatible(ty)
    }
}

impl<'q> sqlx_core::encode::Encode<'q, sqlx_core::any::Any> for Address {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx_core::any::AnyArgumentBuffer,
    ) -> Result<sqlx_core::encode::IsNull, sqlx_core::error::BoxDynError> {
        <String as sqlx_core::encode::Encode<'q, sqlx_core::any::Any>>::encode(
            self.as_str().to_owned(),
            buf,
        )
    }
}

impl<'r> sqlx_core::decode::Decode<'r, sqlx_core::any::Any> for Address {
    fn decode(
        value: sqlx_core::any::AnyValueRef<'r>,
    ) -> Result<Self, sqlx_core::error::BoxDynError> {
        let text = <&str as sqlx_core::decode::Decode<'r, sqlx_core::any::Any>>::decode(value)?;
        Ok(Address::parse(text)?)
    }
}

/// Returns the normalised number, or the reason (with the fix) it is not one.
fn parse_phone(trimmed: &str) -> Result<String, String> {
    // "+44 (0)20 7946 0958" is the usual way to write a number that is dialled
    // with a 0 at home but without it from abroad. Stripping only the
    // parentheses would keep that 0 and give a wrong number that still looks
    // valid, so drop the whole "(0)" when an international prefix is present.
    let international = trimmed.starts_with('+') || trimmed.starts_with("00");
    let without_trunk = if international {
        trimmed.replace("(0)", "")
    } else {
        trimmed.to_owned()
    };

    let mut compact = String::with_capacity(without_trunk.len());
    for c in without_trunk.chars() {
        match c {
            // Any Unicode space counts: numbers pasted from documents often
            // carry non-breaking or thin spaces.
            c if c.is_whitespace() => {}
            '-' | '.' | '(' | ')' => {}
            '0'..='9' | '+' => compact.push(c),
            other => {
                return Err(format!(
                    "it contains {other:?}; use only digits, an optional leading +, spaces, dashes, dots and parentheses"
                ));
            }
        }
    }

    let digits = if let Some(rest) = compact.strip_prefix('+') {
        rest
    } else if let Some(rest) = compact.strip_prefix("00") {
        rest
    } else if let Some(national) = compact.strip_prefix('0') {
        // A national number with its trunk 0: the country code is missing.
        return Err(format!(
            "add the country code, e.g. +33{}",
            if national.is_empty() {
                "612345678"
            } else {
                national
            }
        ));
    } else if compact.is_empty() {
        return Err("it has no digits; give e.g. +14155550100".to_owned());
    } else if compact.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "start it with + and the country code, e.g. +{compact}"
        ));
    } else {
        return Err("put the + only at the start, e.g. +14155550100".to_owned());
    };

    if digits.contains('+') {
        return Err("put the + only at the start, e.g. +14155550100".to_owned());
    }
    if digits.starts_with('0') {
        return Err(
            "a country code never starts with 0: replace the 0 after + with the country code, e.g. +33612345678"
                .to_owned(),
        );
    }
    let n = digits.len();
    if n < PHONE_MIN_DIGITS {
        return Err(format!(
            "it has only {n} digits; give the full number with its country code ({PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} digits after the +)"
        ));
    }
    if n > PHONE_MAX_DIGITS {
        return Err(format!(
            "it has {n} digits but E.164 allows at most {PHONE_MAX_DIGITS}; remove the extra digits"
        ));
    }
    Ok(format!("+{digits}"))
}

/// Returns the normalised email, or the reason (with the fix) it is not one.
fn parse_email(trimmed: &str) -> Result<String, String> {
    if let Some(c) = trimmed.chars().find(|c| c.is_whitespace()) {
        return Err(format!("it contains the whitespace {c:?}; remove it"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err("it contains a control character; remove it".to_owned());
    }
    let (local, domain) = match trimmed.split_once('@') {
        Some((l, d)) if !d.contains('@') => (l, d),
        _ => {
            return Err("it has more than one @; give exactly one address".to_owned());
        }
    };

    if local.is_empty() {
        return Err(format!(
            "the part before the @ is empty, e.g. bob@{}",
            if domain.is_empty() {
                "example.com"
            } else {
                domain
            }
        ));
    }
    if local.chars().count() > EMAIL_LOCAL_MAX_LEN {
        return Err(format!(
            "the part before the @ is longer than {EMAIL_LOCAL_MAX_LEN} characters; check it"
        ));
    }
    check_local(local)?;

    if domain.is_empty() {
        return Err(format!(
            "the domain after the @ is missing, e.g. {local}@example.com"
        ));
    }
    if !domain.contains('.') {
        return Err(format!("the domain needs a dot, e.g. {local}@{domain}.com"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(
                "the domain has an empty part (two dots in a row, or a dot at an end); remove the extra dot"
                    .to_owned(),
            );
        }
        if label.len() > DNS_LABEL_MAX_LEN {
            return Err(format!(
                "the domain part {label:?} is longer than {DNS_LABEL_MAX_LEN} characters; check it"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "the domain contains {c:?}; use only letters, digits, dashes and dots (write international domains in their xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "the domain part {label:?} starts or ends with a dash; remove it"
            ));
        }
    }
    // `labels` is non-empty since split always yields at least one item; the
    // fallback only keeps this free of panics.
    let tld = labels.last().copied().unwrap_or_default();
    if tld.len() < 2 || !tld.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "the domain must end in a top-level domain of at least 2 letters, e.g. {local}@example.com"
        ));
    }

    let normalised = format!("{local}@{}", domain.to_ascii_lowercase());
    if normalised.len() > EMAIL_MAX_LEN {
        return Err(format!(
            "it is longer than {EMAIL_MAX_LEN} characters; check it"
        ));
    }
    Ok(normalised)
}

/// The local part as an RFC 5322 dot-atom (the form every mail provider
/// hands out). Non-ASCII letters are allowed for SMTPUTF8 mailboxes. Quoted
/// local parts are refused: they are vanishingly rare in contact lists, and
/// characters like `<`, `,` or `"` there almost always mean a pasted
/// "Name <addr>" or a list of several addresses.
fn check_local(local: &str) -> Result<(), String> {
    const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    if let Some(c) = local
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || SPECIALS.contains(*c) || !c.is_ascii()))
    {
        return Err(format!(
            "the part before the @ contains {c:?}; give the bare address, e.g. bob@example.com"
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(
            "the part before the @ cannot start or end with a dot or have two dots in a row; remove the extra dot"
                .to_owned(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn phone(s: &str) -> Address {
        match Address::parse(s) {
            Ok(a) => a,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match Address::parse(s) {
            Ok(a) => panic!("{s:?} should not parse, got {a}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_phones_are_normalised() {
        for (input, want) in [
            ("+14155550100", "+14155550100"),
            ("  +1 415 555 0100 ", "+14155550100"),
            ("+1-415-555-0100", "+14155550100"),
            ("+1 (415) 555.0100", "+14155550100"),
            ("0033 6 12 34 56 78", "+33612345678"),
            ("0033612345678", "+33612345678"),
            ("+44 (0)20 7946 0958", "+442079460958"),
            ("+33\u{a0}6\u{a0}12\u{a0}34\u{a0}56\u{a0}78", "+33612345678"),
            ("+12345678", "+12345678"),
            ("+123456789012345", "+123456789012345"),
        ] {
            let a = phone(input);
            assert_eq!(a.as_str(), want, "input {input:?}");
            assert_eq!(a.kind(), AddressKind::Phone);
            assert_eq!(a.to_string(), want);
        }
        assert_eq!(phone("+1 415 555 0100"), phone("001-415-555-0100"));
    }

    #[test]
    fn bad_phones_are_rejected_with_a_fix() {
        assert_eq!(
            err("0612345678"),
            r#""0612345678" is not an E.164 phone number: add the country code, e.g. +33612345678"#
        );
        assert!(err("+1 415 CALL NOW").contains("'C'"));
        assert!(err("+33abc12345678").contains("'a'"));
        assert!(err("+1234567").contains("only 7 digits"));
        assert!(err("+1234567890123456").contains("at most 15"));
        assert!(err("+0612345678").contains("never starts with 0"));
        assert!(err("000612345678").contains("never starts with 0"));
        assert!(err("14155550100").contains("e.g. +14155550100"));
        assert!(err("+1415+5550100").contains("only at the start"));
        assert!(err("---").contains("no digits"));
        assert!(err("+").contains("only 0 digits"));
    }

    #[test]
    fn empty_is_rejected() {
        assert_eq!(
            err(""),
            r#""" is empty: give a phone number in E.164 form (+14155550100) or an email address"#
        );
        assert!(err("   ").contains("is empty"));
    }

    #[test]
    fn emails() {
        let a = phone("  Bob.Smith+tag@Example.COM ");
        assert_eq!(a.as_str(), "Bob.Smith+tag@example.com");
        assert_eq!(a.kind(), AddressKind::Email);
        assert_eq!(a.kind().as_str(), "email");
        assert_eq!(
            phone("x@sub-1.example.co.uk").as_str(),
            "x@sub-1.example.co.uk"
        );
        assert_eq!(phone("josé@example.com").as_str(), "josé@example.com");

        assert_eq!(
            err("bob@example"),
            r#""bob@example" is not a valid email address: the domain needs a dot, e.g. bob@example.com"#
        );
        assert!(err("bob@@example.com").contains("more than one @"));
        assert!(err("bob@example.com,alice@example.com").contains("more than one @"));
        assert!(err("bob smith@example.com").contains("whitespace"));
        assert!(err("bob@exa mple.com").contains("whitespace"));
        assert!(err("@example.com").contains("before the @ is empty"));
        assert!(err("bob@").contains("domain after the @ is missing"));
        assert!(err("bob@-example.com").contains("dash"));
        assert!(err("bob@example-.com").contains("dash"));
        assert!(err("bob@example..com").contains("empty part"));
        assert!(err("bob@example.c").contains("top-level domain"));
        assert!(err("bob@example.c0m").contains("top-level domain"));
        assert!(err("bob@exa_mple.com").contains("'_'"));
        assert!(err("<bob@example.com>").contains("'<'"));
        assert!(err(".bob@example.com").contains("dot"));
        assert!(err(&format!("{}@example.com", "a".repeat(65))).contains("64"));
        let long_domain = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(err(&format!("bob@{long_domain}")).contains("254"));
    }

    #[test]
    fn control_characters_are_escaped_in_messages() {
        let msg = err("+33\u{1b}[31m612345678");
        assert!(!msg.contains('\u{1b}'), "{msg}");
    }

    #[test]
    fn from_str_matches_parse() {
        let a: Result<Address, _> = "+14155550100".parse();
        assert_eq!(a, Address::parse("+14155550100"));
    }

    /// A valid E.164 number written the way people write them: `+` or `00`,
    /// with separators sprinkled between digits.
    fn formatted_phone() -> impl Strategy<Value = String> {
        (
            prop::bool::ANY,
            1u8..=9,
            prop::collection::vec(
                (0u8..=9, prop::sample::select(vec!["", " ", "-", "."])),
                7..=14,
            ),
        )
            .prop_map(|(double_zero, first, rest)| {
                let mut s = String::from(if double_zero { "00" } else { "+" });
                s.push(char::from(b'0' + first));
                for (d, sep) in rest {
                    s.push_str(sep);
                    s.push(char::from(b'0' + d));
                }
                s
            })
    }

    proptest! {
        #[test]
        fn parse_display_round_trips(input in formatted_phone()) {
            let first = Address::parse(&input);
            prop_assert!(first.is_ok(), "{:?} should parse: {:?}", input, first);
            if let Ok(a) = &first {
                prop_assert_eq!(Address::parse(&a.to_string()), first.clone());
            }
        }

        #[test]
        fn parse_never_panics(input in ".{0,40}") {
            if let Ok(a) = Address::parse(&input) {
                // Whatever parses is a fixed point of parse ∘ display.
                prop_assert_eq!(Address::parse(a.as_str()), Ok(a));
            }
        }
    }
}
