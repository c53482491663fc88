//! The rules the server enforces, stated in the OpenAPI document: what utoipa's attributes
//! cannot say (a pattern shared by many parameters, a header every POST takes, the rules of
//! free-form objects) is added here, after the document is generated from the handlers and
//! before it is served or checked in. Each rule names the check in the code it states;
//! schemathesis (`--checks all`, tests/process/accounts.rs `schema_fuzz`) sends requests
//! the document allows and requests it forbids, and fails when the server disagrees.

use serde_json::{Value, json};

/// Every cursor `cursor_after` gives, and nothing else (`PageParams::after`): `after:` and
/// 1 to 18 digits, in unpadded base64url. `YWZ0ZXI6` is `after:`; each group of three
/// digits is four characters, a last one or two digits two or three.
pub const CURSOR_PATTERN: &str = "^YWZ0ZXI6(?:(?:(?:M[DTjz]|N[DTjz]|O[DT])[AEIMQUYcgk][w-z0-5]){1,6}|(?:(?:M[DTjz]|N[DTjz]|O[DT])[AEIMQUYcgk][w-z0-5]){0,5}(?:M[AQgw]|N[AQgw]|O[AQ]|(?:M[DTjz]|N[DTjz]|O[DT])[AEIMQUYcgk]))$";

/// `idempotency::idempotency`: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// No NUL anywhere (`ApiJson` and `ApiQuery` refuse `\u0000` and `%00`: PostgreSQL text
/// cannot hold it).
pub const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";

/// Adds the rules to the generated document.
pub fn state_rules(mut doc: Value) -> Value {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                    continue;
                };
                for param in params {
                    state_parameter_rules(param);
                }
            }
        }
    }
    doc
}

fn state_parameter_rules(param: &mut Value) {
    let name = param["name"].as_str().unwrap_or_default().to_string();
    let place = param["in"].as_str().unwrap_or_default().to_string();
    let Some(schema) = param.get_mut("schema").and_then(Value::as_object_mut) else {
        return;
    };
    let is_string = match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    };
    if !is_string {
        return;
    }
    match (place.as_str(), name.as_str()) {
        ("query", "cursor") => {
            schema.insert("pattern".into(), json!(CURSOR_PATTERN));
        }
        ("header", "Idempotency-Key") => {
            schema.insert("minLength".into(), json!(1));
            schema.insert("maxLength".into(), json!(255));
            schema.insert("pattern".into(), json!(IDEMPOTENCY_KEY_PATTERN));
        }
        ("query", _) if !schema.contains_key("enum") => {
            schema
                .entry("pattern")
                .or_insert_with(|| json!(NO_NUL_PATTERN));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cursor_parameter_and_idempotency_key_states_its_pattern() {
        let doc = crate::api::openapi();
        let mut cursors = 0;
        let mut keys = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["name"] == "cursor" {
                        assert_eq!(p["schema"]["pattern"], CURSOR_PATTERN);
                        cursors += 1;
                    }
                    if p["name"] == "Idempotency-Key" {
                        assert_eq!(p["schema"]["pattern"], IDEMPOTENCY_KEY_PATTERN);
                        keys += 1;
                    }
                }
            }
        }
        assert!(cursors >= 8, "{cursors} cursor parameters");
        assert!(keys >= 10, "{keys} Idempotency-Key headers");
    }

    /// The pattern describes exactly the cursors `cursor_after` gives: checked here on the
    /// structure it states (no regex engine in the dependencies) for many ids.
    #[test]
    fn the_cursor_pattern_matches_every_cursor_given() {
        fn matches(cursor: &str) -> bool {
            let Some(rest) = cursor.strip_prefix("YWZ0ZXI6") else {
                return false;
            };
            let first = |a: u8, b: u8| {
                matches!((a, b), (b'M' | b'N', b'D' | b'T' | b'j' | b'z') | (b'O', b'D' | b'T'))
            };
            let third = |c: u8| b"AEIMQUYcgk".contains(&c);
            let fourth = |c: u8| matches!(c, b'w'..=b'z' | b'0'..=b'5');
            let bytes = rest.as_bytes();
            let (groups, tail) = bytes.split_at(bytes.len() / 4 * 4);
            let groups_ok = groups
                .chunks(4)
                .all(|g| first(g[0], g[1]) && third(g[2]) && fourth(g[3]));
            let tail_ok = match tail {
                [] => !groups.is_empty() && groups.len() <= 24,
                [a, b] => {
                    groups.len() <= 20
                        && matches!((a, b), (b'M' | b'N', b'A' | b'Q' | b'g' | b'w') | (b'O', b'A' | b'Q'))
                }
                [a, b, c] => groups.len() <= 20 && first(*a, *b) && third(*c),
                _ => false,
            };
            groups_ok && tail_ok
        }
        let mut id: i64 = 0;
        while id < 999_999_999_999_999_999 {
            let cursor = crate::api::cursor_after(id);
            assert!(matches(&cursor), "{id}: {cursor}");
            id = id * 7 + 3;
        }
        for id in 0..5000 {
            assert!(matches(&crate::api::cursor_after(id)), "{id}");
        }
        assert!(!matches("YWZ0ZXI6"));
        assert!(!matches("bm9uc2Vuc2U"));
    }
}
