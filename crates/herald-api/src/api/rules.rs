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

/// The characters `char::is_control` refuses (Unicode category Cc), for a class.
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

/// `check_text`, `check_name`: no control characters and something besides white space
/// (the value is trimmed).
fn text_rule(max: usize) -> Value {
    json!({
        "minLength": 1,
        "maxLength": max,
        "pattern": format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$"),
    })
}

/// A message body or template: something besides white space, and no control characters
/// but line breaks and tabs (`check_body`; the template syntax is described, not stated).
fn message_rule(max: usize) -> Value {
    let forbidden = "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f";
    json!({
        "minLength": 1,
        "maxLength": max,
        "pattern": format!("^[^{forbidden}]*[^\\s{forbidden}][^{forbidden}]*$"),
    })
}

/// Optional text (a contact's name, a suppression's reason): blank means none; no control
/// characters.
fn optional_text_rule(max: usize) -> Value {
    json!({"maxLength": max, "pattern": format!("^[^{CONTROL}]*$")})
}

/// `contact_rules::check_attributes`: at most 100 attributes, names non-blank without
/// control characters (at most 100 characters), values strings (at most 1000 characters,
/// no control characters but line breaks and tabs), numbers or booleans.
fn attributes_rule() -> Value {
    use crate::contact_rules::{MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES};
    json!({
        "maxProperties": MAX_ATTRIBUTES,
        "propertyNames": text_rule(MAX_ATTRIBUTE_KEY),
        "additionalProperties": {"anyOf": [
            {
                "type": "string",
                "maxLength": MAX_ATTRIBUTE_VALUE,
                "pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$",
            },
            {"type": "number"},
            {"type": "boolean"},
        ]},
    })
}

/// `credentials::normalise_email`.
fn email_rule() -> Value {
    json!({"format": "email", "maxLength": 254})
}

/// `credentials::password_problem`: 12 characters to 1024 bytes (the strength estimate
/// cannot be stated in a schema; it is described).
fn password_rule() -> Value {
    json!({"minLength": crate::credentials::MIN_PASSWORD_LEN, "maxLength": 256})
}

/// Channels' `rate_per_sec`: `check_rate`.
fn rate_rule() -> Value {
    json!({"minimum": crate::api::channels::MIN_RATE, "maximum": 100_000})
}

/// Rust's `char::is_whitespace` (Unicode White_Space), for a class: what `Address::parse`
/// trims and drops from phone numbers. Not `\s`: regex engines disagree on it.
const WHITE_SPACE: &str =
    "\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// `address::Address::parse`: a phone number (`+` or `00`, then a country code 1–9 and 8
/// to 15 digits in all, with spaces, dashes, dots and parentheses anywhere) or an email
/// address (an RFC 5322 dot-atom, non-ASCII letters allowed, `@`, dot-separated labels of
/// letters, digits and inner dashes ending in a top-level domain of 2 or more letters),
/// white space around either. What a pattern does not count is described: the local
/// part's 64 characters, a label's 63, and a `(0)` after an international prefix, which
/// is dropped (`+44 (0)20 7946 0958`) rather than counted as a digit.
pub fn address_pattern() -> String {
    let ws = format!("[{WHITE_SPACE}]*");
    let sep = format!("[{WHITE_SPACE}\\-.()]*");
    let phone = format!("{sep}(?:\\+|0{sep}0){sep}[1-9](?:{sep}[0-9]){{7,14}}{sep}");
    // Local part characters: ASCII letters, digits, the RFC 5322 specials and any
    // non-ASCII character that is neither white space nor a control (nor a surrogate,
    // which JSON cannot carry alone).
    let atext = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~\\-\\u00a1-\\u167f\\u1681-\\u1fff\\u200b-\\u2027\\u202a-\\u202e\\u2030-\\u205e\\u2060-\\u2fff\\u3001-\\ud7ff\\ue000-\\uffff]";
    let label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    let email = format!("{atext}+(?:\\.{atext}+)*@(?:{label}\\.)+[A-Za-z]{{2,63}}");
    format!("^{ws}(?:{phone}|{email}){ws}$")
}

fn address_rule() -> Value {
    json!({"minLength": 1, "maxLength": 254, "pattern": address_pattern()})
}

/// `decode_id`: a body's reference to a resource is its canonical id (`lst_12`).
pub fn id_pattern(prefix: &str) -> String {
    format!("^{prefix}_[1-9][0-9]{{0,17}}$")
}

fn id_rule(prefix: &str) -> Value {
    json!({"pattern": id_pattern(prefix)})
}

fn ids_rule(prefix: &str) -> Value {
    json!({"items": {"type": "string", "pattern": id_pattern(prefix)}})
}

/// The rules of request body fields: (schema, property, keywords added to its schema).
fn field_rules() -> Vec<(&'static str, &'static str, Value)> {
    use crate::api::MAX_NAME;
    vec![
        ("NewList", "name", text_rule(MAX_NAME)),
        ("ListChange", "name", text_rule(MAX_NAME)),
        ("NewApiKey", "name", text_rule(MAX_NAME)),
        ("NewChannel", "name", text_rule(MAX_NAME)),
        ("ChannelChange", "name", text_rule(MAX_NAME)),
        ("NewCampaign", "name", text_rule(MAX_NAME)),
        ("CampaignChange", "name", text_rule(MAX_NAME)),
        ("NewChannel", "rate_per_sec", rate_rule()),
        ("ChannelChange", "rate_per_sec", rate_rule()),
        ("NewUser", "email", email_rule()),
        ("NewUser", "password", password_rule()),
        ("UserChange", "password", password_rule()),
        ("NewContactBody", "name", optional_text_rule(MAX_NAME)),
        ("ContactChangeBody", "name", optional_text_rule(MAX_NAME)),
        ("NewContactBody", "attributes", attributes_rule()),
        ("ContactChangeBody", "attributes", attributes_rule()),
        ("NewSuppression", "reason", optional_text_rule(500)),
        // `replies::help_reply_text`: no control characters but line breaks.
        (
            "OrganisationChange",
            "help_reply",
            json!({"maxLength": 1600, "pattern": "^[^\\u0000-\\u0009\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"}),
        ),
        ("CampaignActionReason", "reason", text_rule(500)),
        (
            "NewChannel",
            "config",
            json!({"propertyNames": text_rule(100)}),
        ),
        (
            "NewChannel",
            "secrets",
            json!({"propertyNames": text_rule(100)}),
        ),
        (
            "ChannelChange",
            "config",
            json!({"propertyNames": text_rule(100)}),
        ),
        (
            "ChannelChange",
            "secrets",
            json!({"propertyNames": text_rule(100)}),
        ),
        ("NewCampaign", "body", message_rule(10_000)),
        ("CampaignChange", "body", message_rule(10_000)),
        ("TemplatePreviewRequest", "body", message_rule(10_000)),
        (
            "ChannelTest",
            "body",
            json!({"minLength": 1, "maxLength": 10_000, "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"}),
        ),
        ("NewContactBody", "address", address_rule()),
        ("NewSuppression", "address", address_rule()),
        ("ChannelTest", "to", address_rule()),
        ("NewCampaign", "channel_id", id_rule("chn")),
        ("NewCampaign", "list_id", id_rule("lst")),
        ("CampaignChange", "channel_id", id_rule("chn")),
        ("CampaignChange", "list_id", id_rule("lst")),
        ("TemplatePreviewRequest", "channel_id", id_rule("chn")),
        ("TemplatePreviewRequest", "contact_id", id_rule("con")),
        ("NewContactBody", "list_ids", ids_rule("lst")),
        ("NewMembers", "contact_ids", ids_rule("con")),
        (
            "AlertSettingsUpdate",
            "recipients",
            json!({"items": address_rule()}),
        ),
        (
            "NewCampaign",
            "scheduled_at",
            json!({"format": "date-time"}),
        ),
        ("CampaignSchedule", "at", json!({"format": "date-time"})),
        ("ResendRequest", "name", text_rule(MAX_NAME)),
        ("DuplicateRequest", "name", text_rule(MAX_NAME)),
        (
            "ResendRequest",
            "statuses",
            json!({"minItems": 1, "items": {"enum": crate::store::derive::RESENDABLE
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()}}),
        ),
        (
            "ChannelPricing",
            "currency",
            json!({"pattern": crate::pricing::CURRENCY_PATTERN}),
        ),
        (
            "ChannelPricing",
            "per_unit",
            json!({"pattern": crate::pricing::PRICE_PATTERN}),
        ),
        (
            "ChannelPricing",
            "prefixes",
            json!({
                "maxProperties": crate::pricing::MAX_PREFIXES,
                "propertyNames": {"pattern": crate::pricing::PREFIX_PATTERN},
                "additionalProperties": {"type": "string", "pattern": crate::pricing::PRICE_PATTERN},
            }),
        ),
    ]
}

/// Adds the rules to the generated document.
pub fn state_rules(mut doc: Value) -> Value {
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (schema, property, rule) in field_rules() {
            let Some(target) = schemas
                .get_mut(schema)
                .and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if let Value::Object(rule) = rule {
                target.extend(rule);
            }
        }
        // Every other string of a request body: no NUL.
        for name in REQUEST_SCHEMAS {
            if let Some(props) = schemas
                .get_mut(*name)
                .and_then(|s| s.get_mut("properties"))
                .and_then(Value::as_object_mut)
            {
                for prop in props.values_mut() {
                    no_nul(prop);
                }
            }
        }
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                // A CSV upload: no NUL anywhere (`import`: a header with one cannot be read,
                // 400 unreadable-body; PostgreSQL cannot store it).
                if let Some(csv) = op
                    .pointer_mut("/requestBody/content/text~1csv/schema")
                    .and_then(Value::as_object_mut)
                {
                    csv.entry("pattern")
                        .or_insert_with(|| json!(NO_NUL_PATTERN));
                }
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

/// The schemas of request bodies.
const REQUEST_SCHEMAS: &[&str] = &[
    "NewList",
    "ListChange",
    "NewMembers",
    "NewApiKey",
    "NewUser",
    "UserChange",
    "NewChannel",
    "ChannelChange",
    "ChannelTest",
    "NewCampaign",
    "CampaignChange",
    "CampaignSchedule",
    "CampaignActionReason",
    "NewContactBody",
    "ContactChangeBody",
    "NewSuppression",
    "TemplatePreviewRequest",
    "LoginRequest",
    "AlertSettingsUpdate",
    "OrganisationChange",
    "MarkRead",
];

fn is_string_schema(schema: &serde_json::Map<String, Value>) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// A string (or an array of strings) without a pattern gets the no-NUL one.
fn no_nul(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if is_string_schema(obj) && !obj.contains_key("enum") {
        obj.entry("pattern")
            .or_insert_with(|| json!(NO_NUL_PATTERN));
    }
    if let Some(items) = obj.get_mut("items") {
        no_nul(items);
    }
}

fn state_parameter_rules(param: &mut Value) {
    let name = param["name"].as_str().unwrap_or_default().to_string();
    let place = param["in"].as_str().unwrap_or_default().to_string();
    let Some(schema) = param.get_mut("schema").and_then(Value::as_object_mut) else {
        return;
    };
    if !is_string_schema(schema) {
        return;
    }
    match (place.as_str(), name.as_str()) {
        ("query", "contact_id") => {
            schema.insert("pattern".into(), json!(id_pattern("con")));
        }
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
    fn every_field_rule_names_a_property_of_the_document() {
        let doc = crate::api::openapi();
        for (schema, property, _) in field_rules() {
            assert!(
                doc["components"]["schemas"][schema]["properties"][property].is_object(),
                "{schema}.{property} is not in the document"
            );
        }
        for schema in REQUEST_SCHEMAS {
            assert!(
                doc["components"]["schemas"][schema].is_object(),
                "{schema} is not in the document"
            );
        }
        let name = &doc["components"]["schemas"]["NewList"]["properties"]["name"];
        assert_eq!(name["minLength"], 1);
        assert_eq!(name["maxLength"], 200);
    }

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
                matches!(
                    (a, b),
                    (b'M' | b'N', b'D' | b'T' | b'j' | b'z') | (b'O', b'D' | b'T')
                )
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
                        && matches!(
                            (a, b),
                            (b'M' | b'N', b'A' | b'Q' | b'g' | b'w') | (b'O', b'A' | b'Q')
                        )
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
