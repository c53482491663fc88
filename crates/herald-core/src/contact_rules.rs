//! The rules every contact passes, however it arrives: `POST /contacts`, `PATCH`, and each
//! row of a CSV import (API or CLI). One table, so an import cannot store what the JSON API
//! refuses (the 50 MB name, 100,000 attribute columns and 5 MB cells).

/// The longest contact name, as for every other name.
pub const MAX_NAME: usize = 200;
/// Attributes one contact may have.
pub const MAX_ATTRIBUTES: usize = 100;
/// Characters of an attribute name.
pub const MAX_ATTRIBUTE_KEY: usize = 100;
/// Characters of an attribute value.
pub const MAX_ATTRIBUTE_VALUE: usize = 1000;

/// Largest stored attributes (their JSON text, in bytes) a read returns. Every contact
/// within the rules above fits with room to spare (100 attributes of 100-character names
/// and 1,000-character values, 4-byte characters and JSON escapes included, are about
/// 440 KB); only rows stored before these rules applied to every write can be larger, and
/// reads withhold those attributes (see `store::directory::bounded_contact_fields`).
pub const MAX_READ_ATTRIBUTES_BYTES: usize = 512 * 1024;

/// Appended to a stored name that reads cut to [`MAX_NAME`] characters.
pub const TRUNCATION_MARK: &str = "\u{2026}";

/// A broken rule: the field (`name`, `attributes`, `attributes.city`), the rule's stable
/// name (as the API's `rule`) and what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub rule: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` breaks rule {}: {}",
            self.field, self.rule, self.detail
        )
    }
}

fn violation(field: &str, rule: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        field: field.to_owned(),
        rule,
        detail: detail.into(),
    }
}

/// A contact's optional name, trimmed: blank means none; otherwise at most [`MAX_NAME`]
/// characters and no control characters.
pub fn check_name(name: Option<&str>) -> Result<Option<String>, Violation> {
    let name = match name.map(str::trim) {
        None | Some("") => return Ok(None),
        Some(n) => n,
    };
    // Counting stops one past the limit, so a 50 MB name costs no more than a long one.
    if name.chars().nth(MAX_NAME).is_some() {
        return Err(violation(
            "name",
            "max_length",
            format!("must be at most {MAX_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(violation(
            "name",
            "format",
            "must not contain control characters",
        ));
    }
    Ok(Some(name.to_owned()))
}

/// Whether `value` is a control character other than a line break or tab, which text
/// values may hold (an address on two lines).
fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\r' | '\t')
}

/// How many attributes a contact may have: checked on the CSV header before any row is
/// read, so a file with 100,000 columns is refused whole.
pub fn check_attribute_count(count: usize) -> Result<(), Violation> {
    if count > MAX_ATTRIBUTES {
        return Err(violation(
            "attributes",
            "max_items",
            format!("at most {MAX_ATTRIBUTES} attributes, not {count}"),
        ));
    }
    Ok(())
}

/// One attribute name: non-empty, at most [`MAX_ATTRIBUTE_KEY`] characters, no control
/// characters.
pub fn check_attribute_key(key: &str) -> Result<(), Violation> {
    if key.trim().is_empty() || key.chars().any(char::is_control) {
        return Err(violation(
            "attributes",
            "format",
            "attribute names must be non-empty and without control characters",
        ));
    }
    if key.chars().nth(MAX_ATTRIBUTE_KEY).is_some() {
        return Err(violation(
            &format!("attributes.{key}"),
            "max_length",
            format!("attribute names are at most {MAX_ATTRIBUTE_KEY} characters"),
        ));
    }
    Ok(())
}

/// The attributes of one contact: count, names, and values that are strings (at most
/// [`MAX_ATTRIBUTE_VALUE`] characters, no control characters but line breaks and tabs),
/// numbers or booleans.
pub fn check_attributes(
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), Violation> {
    check_attribute_count(attributes.len())?;
    for (key, value) in attributes {
        check_attribute_key(key)?;
        let field = format!("attributes.{key}");
        match value {
            serde_json::Value::String(s) if s.chars().nth(MAX_ATTRIBUTE_VALUE).is_some() => {
                return Err(violation(
                    &field,
                    "max_length",
                    format!("must be at most {MAX_ATTRIBUTE_VALUE} characters"),
                ));
            }
            serde_json::Value::String(s) if s.chars().any(is_forbidden_control) => {
                return Err(violation(
                    &field,
                    "format",
                    "must not contain control characters other than line breaks and tabs",
                ));
            }
            serde_json::Value::String(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Bool(_) => {}
            _ => {
                return Err(violation(
                    &field,
                    "type",
                    "must be a string, a number or a boolean",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_attributes_follow_the_table() {
        assert_eq!(check_name(Some("  ")), Ok(None));
        assert_eq!(check_name(Some(" Ada ")), Ok(Some("Ada".into())));
        assert_eq!(
            check_name(Some(&"x".repeat(MAX_NAME + 1))).map_err(|v| v.rule),
            Err("max_length")
        );
        assert_eq!(
            check_name(Some("a\u{7}b")).map_err(|v| v.rule),
            Err("format")
        );
        let map = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            check_attributes(&map(json!({"a": "x\ny\tz", "n": 1, "b": true}))),
            Ok(())
        );
        let cases = [
            (
                json!({"a": "x".repeat(MAX_ATTRIBUTE_VALUE + 1)}),
                "max_length",
            ),
            (json!({"a": "x\u{1b}[31m"}), "format"),
            (json!({"a": "x\u{0}"}), "format"),
            (json!({"a": ["x"]}), "type"),
            (json!({"": "x"}), "format"),
        ];
        for (value, rule) in cases {
            assert_eq!(
                check_attributes(&map(value.clone())).map_err(|v| v.rule),
                Err(rule),
                "{value}"
            );
        }
        assert_eq!(
            check_attribute_count(MAX_ATTRIBUTES + 1).map_err(|v| v.rule),
            Err("max_items")
        );
    }
}
