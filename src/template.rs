//! Message body templates, rendered once per contact with minijinja.
//!
//! A template is compiled once per campaign and then rendered for every
//! contact, possibly from many tokio tasks at once, so [`MessageTemplate`] is
//! `Send + Sync` and rendering reuses the compiled template.
//!
//! What a template sees for a contact (see [`ContactFields`]):
//! * `address`: the recipient's normalised address;
//! * `name`: the contact's name, or the empty string when it has none;
//! * `attributes`: the map of all the contact's free attributes;
//! * every attribute as its own top-level variable, e.g. `{{ city }}`,
//!   except one named `address`, `name` or `attributes` (the built-ins win).
//!
//! Rendering is strict about output: printing a variable this contact lacks
//! (or whose value is JSON `null`) is an error naming the variable, never an
//! empty gap in a message that goes out to thousands of people. Testing a
//! missing variable is allowed, so `{% if coupon %}…{% endif %}` and
//! `{{ city | default("your city") }}` work for contacts without it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// Instructions one render may execute. Real message templates use a few
/// hundred at most; the limit only stops a runaway loop from stalling a
/// sender.
pub const RENDER_FUEL: u64 = 100_000;

/// Largest rendered body, in bytes. Far above any SMS, WhatsApp or email
/// body, and stops a small loop printing huge strings from exhausting
/// memory (fuel counts instructions, not output size).
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// Variables every contact has, whatever its list.
pub const BUILTIN_VARIABLES: [&str; 3] = ["address", "name", "attributes"];

/// The one template's name inside its private environment.
const TEMPLATE_NAME: &str = "message";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The source does not parse.
    #[error("the template has a syntax error{}: {message}", on_line(*line))]
    Syntax {
        line: Option<usize>,
        message: String,
    },
    /// The template reads variables that no contact of the list has.
    #[error("{}", unknown_variables_message(unknown, list, known))]
    UnknownVariables {
        /// Sorted; dotted for lookups inside `attributes`, e.g. `attributes.city`.
        unknown: Vec<String>,
        list: String,
        /// Sorted, built-ins first.
        known: Vec<String>,
    },
    /// Rendering failed for one contact.
    #[error("cannot render the message: {reason}")]
    Render {
        reason: String,
        /// The variables this contact lacks that the template reads, when
        /// that is the cause; empty for other failures (e.g. out of fuel),
        /// which would fail for every contact alike.
        missing: Vec<String>,
    },
}

fn on_line(line: Option<usize>) -> String {
    line.map(|l| format!(" on line {l}")).unwrap_or_default()
}

/// "`{{ a }}`, `{{ b }}` and `{{ c }}`"
fn list_placeholders(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{{{{ {n} }}}}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn unknown_variables_message(unknown: &[String], list: &str, known: &[String]) -> String {
    format!(
        "the template uses {}, which no contact of list {list:?} has; known variables: {}",
        list_placeholders(unknown),
        known.join(", ")
    )
}

/// The fields of one contact that a template can read.
#[derive(Debug, Clone, Copy)]
pub struct ContactFields<'a> {
    pub address: &'a str,
    pub name: Option<&'a str>,
    /// The contact's free attributes (a JSON object). Each key is exposed as a
    /// top-level variable (unless it collides with address/name/attributes,
    /// which win) and the whole map as `attributes`.
    pub attributes: &'a serde_json::Map<String, serde_json::Value>,
}

/// A compiled message template. Cheap to render; share it in an `Arc`.
pub struct MessageTemplate {
    /// Holds just this template (owned, so no borrow of the caller's source).
    env: Environment<'static>,
    source: String,
    /// Top-level variables read from the context, minus minijinja's globals.
    variables: BTreeSet<String>,
    /// Dotted lookups such as `attributes.city` or `order.total`, used to
    /// check `attributes.*` at campaign creation and to name what a contact
    /// lacks when rendering fails.
    paths: BTreeSet<String>,
}

impl std::fmt::Debug for MessageTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageTemplate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl MessageTemplate {
    /// Compile; syntax errors become [`TemplateError::Syntax`] with line info.
    ///
    /// Unknown filters or tests (`{{ name | uper }}`) are not syntax errors in
    /// minijinja: they only fail at render time, for every contact.
    pub fn compile(source: &str) -> Result<MessageTemplate, TemplateError> {
        let mut env = Environment::new();
        // Plain-text bodies: HTML escaping would turn "Tom & Jerry" into
        // "Tom &amp; Jerry" in an SMS.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // SemiStrict: printing or iterating a missing variable fails, while
        // `{% if x %}` on a missing one is false, the usual way to write
        // optional parts of a message.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(RENDER_FUEL));
        // Printing JSON null would otherwise write "none" into the message.
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                return Err(Error::new(
                    ErrorKind::UndefinedError,
                    "a null value cannot be printed",
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| TemplateError::Syntax {
                line: e.line(),
                message: e.detail().unwrap_or(&e.kind().to_string()).to_owned(),
            })?;

        let (variables, paths) = {
            let template = env.get_template(TEMPLATE_NAME).map_err(internal_error)?;
            // `range`, `dict`, … parse as variable reads but are always there.
            let globals: BTreeSet<String> = env.globals().map(|(k, _)| k.to_owned()).collect();
            let is_global = |v: &String| globals.contains(v.split('.').next().unwrap_or(v));
            let variables: BTreeSet<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !is_global(v))
                .collect();
            let paths: BTreeSet<String> = template
                .undeclared_variables(true)
                .into_iter()
                .filter(|v| !is_global(v))
                .collect();
            (variables, paths)
        };

        Ok(MessageTemplate {
            env,
            source: source.to_owned(),
            variables,
            paths,
        })
    }

    /// Variables the template reads from its context
    /// (minijinja's `undeclared_variables(false)`), sorted. Globals such as
    /// `range` are left out.
    pub fn variables(&self) -> BTreeSet<String> {
        self.variables.clone()
    }

    /// Error if the template uses a variable not in `known_attributes` (the
    /// built-ins `name`, `address`, `attributes` are always known), or reads
    /// `attributes.X` for an unknown `X`. `list_name` only goes into the
    /// message.
    pub fn check_variables(
        &self,
        known_attributes: &BTreeSet<String>,
        list_name: &str,
    ) -> Result<(), TemplateError> {
        let is_known = |v: &str| BUILTIN_VARIABLES.contains(&v) || known_attributes.contains(v);
        let mut unknown: Vec<String> = self
            .variables
            .iter()
            .filter(|v| !is_known(v))
            .cloned()
            .collect();
        unknown.extend(
            self.paths
                .iter()
                .filter(|p| {
                    let mut segments = p.split('.');
                    segments.next() == Some("attributes")
                        && segments
                            .next()
                            .is_some_and(|attr| !known_attributes.contains(attr))
                })
                .cloned(),
        );
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort();
        unknown.dedup();

        // Built-ins first, as every list has them; `attributes` is left out
        // because it is the escape hatch, not something to suggest.
        let mut known: Vec<String> = ["address", "name"].map(String::from).to_vec();
        known.extend(
            known_attributes
                .iter()
                .filter(|a| !BUILTIN_VARIABLES.contains(&a.as_str()))
                .cloned(),
        );
        Err(TemplateError::UnknownVariables {
            unknown,
            list: list_name.to_owned(),
            known,
        })
    }

    /// Render for one contact.
    ///
    /// Printing a variable missing for THIS contact is a
    /// [`TemplateError::Render`] naming it. A contact without a name renders
    /// `{{ name }}` as the empty string rather than failing: many lists have
    /// no names for some contacts, and a template can still write
    /// `{{ name or "there" }}`. (`name | default(..)` does not apply, since
    /// the empty string is defined.) Running out of [`RENDER_FUEL`] or
    /// exceeding [`MAX_RENDERED_BYTES`] is a `Render` error too.
    pub fn render(&self, contact: &ContactFields<'_>) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(internal_error)?;
        let mut out = CappedBuffer::default();
        match template.render_captured_to(context_value(contact), &mut out) {
            Ok(_captured) => String::from_utf8(out.bytes).map_err(|_| TemplateError::Render {
                // Unreachable in practice: minijinja only writes `str`s and
                // the buffer never keeps part of one.
                reason: "the output is not valid UTF-8".to_owned(),
                missing: Vec::new(),
            }),
            Err(e) => Err(self.render_error(&e, contact, out.overflowed)),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn render_error(
        &self,
        e: &Error,
        contact: &ContactFields<'_>,
        overflowed: bool,
    ) -> TemplateError {
        let line = on_line(e.line());
        if overflowed {
            return render_failure(format!(
                "the message would be longer than {MAX_RENDERED_BYTES} bytes{line}; shorten what the template prints"
            ));
        }
        if e.kind() == ErrorKind::OutOfFuel {
            return render_failure(format!(
                "the template ran out of fuel{line} (more than {RENDER_FUEL} steps), which means a loop far too large for a message; simplify it"
            ));
        }
        let about_undefined = e.kind() == ErrorKind::UndefinedError
            || e.detail().is_some_and(|d| d.contains("undefined"));
        let missing = if about_undefined {
            self.missing_for(contact)
        } else {
            Vec::new()
        };
        if missing.is_empty() {
            let mut reason = e.kind().to_string();
            if let Some(detail) = e.detail() {
                let _ = write!(reason, " ({detail})");
            }
            reason.push_str(&line);
            return render_failure(reason);
        }
        let guard = missing.first().map(String::as_str).unwrap_or("x");
        TemplateError::Render {
            reason: format!(
                "this contact has no {}{line}; give it a value or guard the use with {{% if {guard} is defined %}}",
                list_placeholders(&missing),
            ),
            missing,
        }
    }

    /// The variables and dotted lookups the template reads that this contact
    /// cannot supply (absent or null). Some may sit in branches that were not
    /// taken, so this is only reported once rendering hit an undefined value.
    fn missing_for(&self, contact: &ContactFields<'_>) -> Vec<String> {
        let missing: BTreeSet<String> = self
            .paths
            .iter()
            .filter_map(|p| missing_prefix(p, contact))
            .collect();
        missing.into_iter().collect()
    }
}

/// The shortest part of a dotted lookup that this contact cannot supply, so
/// a contact without `order` is told about `order`, not `order.total`.
fn missing_prefix(path: &str, contact: &ContactFields<'_>) -> Option<String> {
    let segments: Vec<&str> = path.split('.').collect();
    (1..=segments.len())
        .map(|k| segments[..k].join("."))
        .find(|prefix| !resolves(prefix, contact))
}

fn render_failure(reason: String) -> TemplateError {
    TemplateError::Render {
        reason,
        missing: Vec::new(),
    }
}

/// The template was added in `compile`; failing to find it again would be a
/// bug here, reported rather than panicking a sender.
fn internal_error(e: Error) -> TemplateError {
    TemplateError::Render {
        reason: format!("internal error: {e}"),
        missing: Vec::new(),
    }
}

/// Whether a dotted lookup such as `city` or `attributes.order.total` finds a
/// non-null value in what [`context_value`] builds for this contact.
fn resolves(path: &str, contact: &ContactFields<'_>) -> bool {
    let mut segments = path.split('.');
    let Some(first) = segments.next() else {
        return false;
    };
    let mut current = match first {
        // Strings: any attribute lookup on them is undefined.
        "address" | "name" => return segments.next().is_none(),
        "attributes" => match segments.next() {
            None => return true,
            Some(key) => contact.attributes.get(key),
        },
        key => contact.attributes.get(key),
    };
    for segment in segments {
        current = match current {
            Some(serde_json::Value::Object(map)) => map.get(segment),
            Some(serde_json::Value::Array(items)) => {
                segment.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
    }
    current.is_some_and(|v| !v.is_null())
}

/// The render context for one contact.
fn context_value(contact: &ContactFields<'_>) -> Value {
    let attributes: BTreeMap<String, Value> = contact
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(Serde(v))))
        .collect();
    let mut ctx: BTreeMap<String, Value> = attributes
        .iter()
        // A null attribute is treated as missing, so strict rendering catches
        // it instead of printing "none".
        .filter(|(k, v)| !v.is_none() && !BUILTIN_VARIABLES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ctx.insert("address".to_owned(), Value::from(contact.address));
    ctx.insert("name".to_owned(), Value::from(contact.name.unwrap_or("")));
    ctx.insert("attributes".to_owned(), Value::from(attributes));
    Value::from(ctx)
}

/// Output buffer that refuses to grow past [`MAX_RENDERED_BYTES`]. A refused
/// write is rejected whole, so the bytes kept are always whole `str`s.
#[derive(Default)]
struct CappedBuffer {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl io::Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("rendered message too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(source: &str) -> MessageTemplate {
        match MessageTemplate::compile(source) {
            Ok(t) => t,
            Err(e) => panic!("{source:?} should compile: {e}"),
        }
    }

    fn attrs(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match value {
            serde_json::Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn render(
        t: &MessageTemplate,
        name: Option<&str>,
        a: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        let map = attrs(a.clone());
        t.render(&ContactFields {
            address: "+33612345678",
            name,
            attributes: &map,
        })
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MessageTemplate>();
        assert_send_sync::<TemplateError>();
    }

    #[test]
    fn renders_name_address_and_attributes() {
        let t = compile(
            "Hi {{ name }} ({{ address }}), see you in {{ city }} / {{ attributes.city }}. \
             {% if vip %}VIP {% endif %}{{ order.items | length }} items, Tom & Jerry <3",
        );
        let out = render(
            &t,
            Some("Ana"),
            &json!({"city": "Lyon", "vip": true, "order": {"items": [1, 2]}}),
        );
        assert_eq!(
            out,
            Ok(
                "Hi Ana (+33612345678), see you in Lyon / Lyon. VIP 2 items, Tom & Jerry <3"
                    .to_owned()
            )
        );
        assert_eq!(
            t.variables(),
            set(&["address", "attributes", "city", "name", "order", "vip"])
        );
        assert!(t.source().starts_with("Hi {{ name }}"));
    }

    #[test]
    fn builtins_win_over_colliding_attributes() {
        let t = compile("{{ name }}|{{ address }}|{{ attributes.name }}");
        let out = render(&t, Some("Ana"), &json!({"name": "Evil", "address": "x"}));
        assert_eq!(out, Ok("Ana|+33612345678|Evil".to_owned()));
    }

    #[test]
    fn missing_name_renders_empty() {
        let t = compile("Hi {{ name }}!|{{ name or 'there' }}");
        assert_eq!(render(&t, None, &json!({})), Ok("Hi !|there".to_owned()));
    }

    #[test]
    fn unknown_variable_is_rejected_at_check() {
        let t = compile(
            "Hi {{ frist_name }} from {{ city }}, {{ attributes.zip }} {{ range(2)|length }}",
        );
        let known = set(&["city", "first_name"]);
        let err = t.check_variables(&known, "Spring promo");
        assert_eq!(
            err.clone().map_err(|e| e.to_string()),
            Err("the template uses `{{ attributes.zip }}` and `{{ frist_name }}`, which no contact of list \"Spring promo\" has; known variables: address, name, city, first_name".to_owned())
        );
        assert!(
            matches!(err, Err(TemplateError::UnknownVariables { ref unknown, .. }) if unknown == &["attributes.zip", "frist_name"])
        );
        assert_eq!(
            t.check_variables(&set(&["city", "frist_name", "zip"]), "x"),
            Ok(())
        );
        assert_eq!(
            compile("{{ name }} {{ address }} {{ attributes }}")
                .check_variables(&BTreeSet::new(), "x"),
            Ok(())
        );
    }

    #[test]
    fn missing_attribute_fails_at_render_naming_it() {
        let t = compile("Hello {{ name }},\nyour code is {{ coupon }}.");
        let err = render(&t, Some("Ana"), &json!({"city": "Lyon"}));
        let Err(TemplateError::Render { reason, missing }) = &err else {
            panic!("expected a render error, got {err:?}");
        };
        assert_eq!(missing, &["coupon"]);
        assert!(
            reason.contains("`{{ coupon }}`") && reason.contains("line 2"),
            "{reason}"
        );
        assert_eq!(
            render(&t, Some("Ana"), &json!({"coupon": "X1"})),
            Ok("Hello Ana,\nyour code is X1.".to_owned())
        );
    }

    #[test]
    fn null_or_nested_missing_values_fail_too() {
        let t = compile("{{ coupon }}");
        assert!(
            matches!(render(&t, None, &json!({"coupon": null})), Err(TemplateError::Render { missing, .. }) if missing == ["coupon"])
        );
        let t = compile("{{ attributes.coupon }}");
        assert!(
            matches!(render(&t, None, &json!({"coupon": null})), Err(TemplateError::Render { missing, .. }) if missing == ["attributes.coupon"])
        );
        let t = compile("{{ order.total }}");
        assert!(
            matches!(render(&t, None, &json!({})), Err(TemplateError::Render { missing, .. }) if missing == ["order"])
        );
        assert!(
            matches!(render(&t, None, &json!({"order": {}})), Err(TemplateError::Render { missing, .. }) if missing == ["order.total"])
        );
    }

    #[test]
    fn optional_parts_can_test_missing_variables() {
        let t = compile(
            "Hi{% if coupon %}, use {{ coupon }}{% endif %}{% if city is defined %} in {{ city }}{% endif %}. {{ zip | default('-') }}",
        );
        assert_eq!(render(&t, None, &json!({})), Ok("Hi. -".to_owned()));
        assert_eq!(
            render(&t, None, &json!({"coupon": "C", "city": "Lyon", "zip": 69})),
            Ok("Hi, use C in Lyon. 69".to_owned())
        );
    }

    #[test]
    fn fuel_exhaustion_errors_instead_of_hanging() {
        let t = compile(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        );
        let err = render(&t, None, &json!({}));
        assert!(
            matches!(&err, Err(TemplateError::Render { reason, missing }) if reason.contains("ran out of fuel") && missing.is_empty()),
            "{err:?}"
        );
        // Fuel is per render, not used up across renders.
        let t = compile("{% for i in range(2000) %}.{% endfor %}");
        for _ in 0..100 {
            assert_eq!(render(&t, None, &json!({})).map(|s| s.len()), Ok(2000));
        }
    }

    #[test]
    fn huge_output_is_refused() {
        let t = compile("{% for i in range(20) %}{{ 'x' * 100000 }}{% endfor %}");
        let err = render(&t, None, &json!({}));
        assert!(
            matches!(&err, Err(TemplateError::Render { reason, .. }) if reason.contains("longer than")),
            "{err:?}"
        );
    }

    #[test]
    fn syntax_error_is_reported_with_line() {
        let err = MessageTemplate::compile("Hello {{ name }}\n{% if vip %}VIP");
        assert!(
            matches!(&err, Err(TemplateError::Syntax { line: Some(2), .. })),
            "{err:?}"
        );
        let text = err.map(|_| ()).map_err(|e| e.to_string());
        assert!(
            matches!(&text, Err(m) if m.starts_with("the template has a syntax error on line 2: ")),
            "{text:?}"
        );
        assert!(MessageTemplate::compile("{{ name ").is_err());
    }

    #[test]
    fn other_render_errors_say_what_and_where() {
        let t = compile("ok\n{{ name | uper }}");
        let err = render(&t, Some("a"), &json!({})).map_err(|e| e.to_string());
        assert!(
            matches!(&err, Err(m) if m.contains("uper") && m.contains("line 2")),
            "{err:?}"
        );
    }
}
