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
//!
//! Rendering is bounded, because any viewer can preview a template and one slow
//! render would hold a thread the server needs:
//! * statements that let a template feed values back into itself (`set`,
//!   `with`, `filter` blocks, `do`, recursive loops) are refused at compile
//!   time ([`TemplateLimit::Statement`]); a message needs none of them;
//! * the two operators that allocate in proportion to an operand, `*`
//!   (repetition) and `+` (concatenation), are rerouted to bounded versions
//!   ([`MAX_BUILT_ITEMS`], [`MAX_BUILT_BYTES`]); minijinja repeats lists
//!   lazily, so `{{ [1]*100000000 }}` would otherwise print 100 million items
//!   before its fuel check saw the bytes;
//! * everything else (filters, functions, methods, loops, output) is charged
//!   against [`RENDER_FUEL`], and the output is capped at
//!   [`MAX_RENDERED_BYTES`];
//! * callers in the server run renders through [`render_off_thread`]: on the
//!   blocking pool, a few at a time, with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use minijinja::machinery::ast::{BinOpKind, Call, CallArg, Expr, Spanned, Stmt};
use minijinja::machinery::{self, Instruction, Instructions};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior, Value};

use crate::tracked_links;
use tokio::sync::Semaphore;

/// Instructions one render may execute. Real message templates use a few
/// hundred at most; the limit only stops a runaway loop from stalling a
/// sender.
pub const RENDER_FUEL: u64 = 100_000;

/// Largest rendered body, in bytes. Far above any SMS, WhatsApp or email
/// body, and stops a small loop printing huge strings from exhausting
/// memory (fuel counts instructions, not output size).
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// Most items (counted through nested lists and maps) a list built by `*` or
/// `+` may hold: far more than a message lists, and small enough that printing
/// or comparing such a list stays cheap.
pub const MAX_BUILT_ITEMS: usize = 10_000;

/// Longest string, in bytes, that `*` or `+` may build (strings inside built
/// lists count too).
pub const MAX_BUILT_BYTES: usize = MAX_RENDERED_BYTES;

/// Renders running at once on the blocking pool, across the whole process:
/// the machine's cores are shared with HTTP and the engine.
pub const MAX_CONCURRENT_RENDERS: usize = 2;

/// How long a caller waits for a render (queueing included) before giving up.
/// Fuel bounds a render to milliseconds; this only guards against a queue of
/// them.
pub const RENDER_DEADLINE: Duration = Duration::from_secs(10);

/// Names under which `*` and `+` are rerouted to [`bounded_mul`] and
/// [`bounded_add`]; prefixed so no template variable collides with them.
const BOUNDED_MUL: &str = "__herald_bounded_mul";
const BOUNDED_ADD: &str = "__herald_bounded_add";

/// The template function that makes a tracked link (`crate::tracked_links`).
pub const LINK_FUNCTION: &str = "link";
/// Where a render's tracked links (target to short URL) sit in its context; prefixed so
/// no contact attribute collides with it.
const LINKS_VARIABLE: &str = "__herald_links";

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
    /// The template uses a statement a message template may not, or a render
    /// went past one of the resource limits. `limit` names which, for the API's
    /// `rule`.
    #[error("{reason}")]
    Limit {
        limit: TemplateLimit,
        reason: String,
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

/// The limit a refused template ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateLimit {
    /// A statement that is refused at compile time (`set`, `with`, ...).
    Statement,
    /// More than [`RENDER_FUEL`] steps.
    Fuel,
    /// Output longer than [`MAX_RENDERED_BYTES`].
    OutputBytes,
    /// A list built by `*`/`+` with more than [`MAX_BUILT_ITEMS`] items.
    BuiltItems,
    /// A string built by `*`/`+` longer than [`MAX_BUILT_BYTES`].
    BuiltBytes,
    /// The render did not finish within [`RENDER_DEADLINE`].
    Deadline,
}

impl TemplateLimit {
    /// Stable name, used as the `rule` of the API's validation problem.
    pub fn code(self) -> &'static str {
        match self {
            TemplateLimit::Statement => "template_statement",
            TemplateLimit::Fuel => "max_render_steps",
            TemplateLimit::OutputBytes => "max_rendered_bytes",
            TemplateLimit::BuiltItems => "max_built_items",
            TemplateLimit::BuiltBytes => "max_built_bytes",
            TemplateLimit::Deadline => "render_deadline",
        }
    }
}

impl TemplateError {
    /// The limit this error is about, if it is about one.
    pub fn limit(&self) -> Option<TemplateLimit> {
        match self {
            TemplateError::Limit { limit, .. } => Some(*limit),
            _ => None,
        }
    }

    /// The API validation rule for this error: the limit's name, else `fallback`.
    pub fn rule<'a>(&self, fallback: &'a str) -> &'a str {
        match self.limit() {
            Some(limit) => limit.code(),
            None => fallback,
        }
    }
}

fn limit_error(limit: TemplateLimit, reason: String) -> TemplateError {
    TemplateError::Limit { limit, reason }
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
    /// The targets of its `link("…")` calls, distinct, in order of first appearance:
    /// a link's position (1-based) is its index here plus one.
    links: Vec<String>,
    /// How printed values are escaped: none for text (SMS, plain email), HTML for an
    /// email's HTML part (`compile_html`), so a contact named `<b>` prints as text.
    escape: AutoEscape,
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
        Self::compile_escaped(source, AutoEscape::None)
    }

    /// Like [`Self::compile`], for HTML: every printed value is HTML-escaped (a contact's
    /// name `Tom & <Jerry>` prints as `Tom &amp; &lt;Jerry&gt;`, a link's `&` as `&amp;`),
    /// unless the template marks it `| safe`.
    pub fn compile_html(source: &str) -> Result<MessageTemplate, TemplateError> {
        Self::compile_escaped(source, AutoEscape::Html)
    }

    fn compile_escaped(source: &str, escape: AutoEscape) -> Result<MessageTemplate, TemplateError> {
        let mut env = Environment::new();
        // No `set`, so a namespace has no use; `debug()` dumps the whole context.
        env.remove_global("namespace");
        env.remove_global("debug");
        env.add_function(BOUNDED_MUL, bounded_mul);
        env.add_function(BOUNDED_ADD, bounded_add);
        env.add_function(LINK_FUNCTION, tracked_link);
        // Plain-text bodies: HTML escaping would turn "Tom & Jerry" into
        // "Tom &amp; Jerry" in an SMS. (The renderer passes `escape` itself.)
        let callback_escape = escape.clone();
        env.set_auto_escape_callback(move |_| callback_escape.clone());
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
        // Checked before minijinja compiles it: compiling folds constants (see
        // `check_expr`). Parsing twice is cheap and happens once per template.
        let tree =
            machinery::parse(source, TEMPLATE_NAME, SyntaxConfig::default()).map_err(|e| {
                TemplateError::Syntax {
                    line: e.line(),
                    message: e.detail().unwrap_or(&e.kind().to_string()).to_owned(),
                }
            })?;
        let mut calls = Vec::new();
        refuse_statements(std::slice::from_ref(&tree), &mut calls)?;
        let mut links: Vec<String> = Vec::new();
        for target in calls {
            if !links.contains(&target) {
                links.push(target);
            }
        }
        if links.len() > tracked_links::MAX_LINKS {
            return Err(TemplateError::Syntax {
                line: None,
                message: format!(
                    "the template has {} different link() URLs, more than {}: link one landing page that lists the rest",
                    links.len(),
                    tracked_links::MAX_LINKS
                ),
            });
        }
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
            links,
            escape,
        })
    }

    /// The targets of the template's `link("…")` calls, distinct, in order: position
    /// `i + 1` is `links()[i]`.
    pub fn links(&self) -> &[String] {
        &self.links
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
        self.renderer()?.render(contact)
    }

    /// A renderer for many contacts: the bounded program is built once.
    pub fn renderer(&self) -> Result<Renderer<'_>, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(internal_error)?;
        let compiled = machinery::get_compiled_template(&template);
        let program = bounded_program(&compiled.instructions);
        Ok(Renderer {
            template: self,
            program,
            blocks: BTreeMap::new(),
        })
    }

    /// Render with a stand-in contact whose every variable is its own name in
    /// capitals (`{{ city }}` renders `CITY`), as the editor previews a
    /// template before a contact is chosen.
    pub fn render_placeholder(&self) -> Result<String, TemplateError> {
        let mut attributes = serde_json::Map::new();
        for v in &self.variables {
            if !BUILTIN_VARIABLES.contains(&v.as_str()) {
                attributes.insert(v.clone(), serde_json::Value::String(v.to_uppercase()));
            }
        }
        self.render(&ContactFields {
            address: "ADDRESS",
            name: Some("NAME"),
            attributes: &attributes,
        })
    }

    /// Refuse a template that runs into a resource limit when rendered with the
    /// placeholder contact (see [`Self::render_placeholder`]); other render errors
    /// (a variable this stand-in lacks) are left to the real contacts. Done before
    /// a campaign is created, so `{{ [1]*100000000 }}` never reaches a sender.
    pub fn check_limits(&self) -> Result<(), TemplateError> {
        match self.render_placeholder() {
            Err(e @ TemplateError::Limit { .. }) => Err(e),
            _ => Ok(()),
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
            return limit_error(
                TemplateLimit::OutputBytes,
                format!(
                    "the message would be longer than {MAX_RENDERED_BYTES} bytes{line} (limit {}); shorten what the template prints",
                    TemplateLimit::OutputBytes.code()
                ),
            );
        }
        if e.kind() == ErrorKind::OutOfFuel {
            return limit_error(
                TemplateLimit::Fuel,
                format!(
                    "the template ran out of fuel{line} (more than {RENDER_FUEL} steps, limit {}), which means a loop or a value far too large for a message; simplify it",
                    TemplateLimit::Fuel.code()
                ),
            );
        }
        if let Some(BuiltTooLarge(limit)) =
            std::error::Error::source(e).and_then(|source| source.downcast_ref::<BuiltTooLarge>())
        {
            let detail = e.detail().unwrap_or_default();
            return limit_error(*limit, format!("{detail}{line}"));
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
fn context_value(contact: &ContactFields<'_>, links: Option<&BTreeMap<String, String>>) -> Value {
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
    if let Some(links) = links {
        ctx.insert(
            LINKS_VARIABLE.to_owned(),
            Value::from_pairs(links.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        );
    }
    Value::from(ctx)
}

/// `link("…")`: the render's tracked URL for the target when the caller gave the links
/// (the engine, the estimate), else the target itself (a plain preview).
fn tracked_link(state: &State<'_, '_>, target: &str) -> Result<Value, Error> {
    let url = match state.lookup(LINKS_VARIABLE) {
        None => Value::from(target),
        Some(links) => match links.get_item(&Value::from(target)) {
            Ok(url) if !url.is_undefined() && !url.is_none() => url,
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("link({target:?}) is not one of the template's links"),
                ));
            }
        },
    };
    // In HTML a URL needs only `&`, quotes and angle brackets escaped to sit in an
    // attribute; minijinja's escaping would also write every `/` as `&#x2f;`, which is
    // valid but reads as an obfuscated link to spam filters.
    if matches!(state.auto_escape(), AutoEscape::Html) {
        let text = url
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| url.to_string());
        let escaped = text
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        return Ok(Value::from_safe_string(escaped));
    }
    Ok(url)
}

/// Renders one template for many contacts with the bounded program.
pub struct Renderer<'a> {
    template: &'a MessageTemplate,
    program: Instructions<'a>,
    blocks: BTreeMap<&'a str, Instructions<'a>>,
}

impl Renderer<'_> {
    /// See [`MessageTemplate::render`]. `link("…")` prints its target unchanged.
    pub fn render(&self, contact: &ContactFields<'_>) -> Result<String, TemplateError> {
        self.render_linked(contact, None)
    }

    /// Renders with `links` (target to tracked URL, see
    /// [`crate::tracked_links::LinkSigner::links_for`]) standing in for each `link("…")`.
    pub fn render_linked(
        &self,
        contact: &ContactFields<'_>,
        links: Option<&BTreeMap<String, String>>,
    ) -> Result<String, TemplateError> {
        let context = context_value(contact, links);
        let mut rendered = String::new();
        let result = {
            let mut out = machinery::make_string_output(&mut rendered);
            machinery::eval(
                &self.template.env,
                &self.program,
                context,
                &self.blocks,
                &mut out,
                self.template.escape.clone(),
            )
            .map(|_| ())
        };
        // Fuel charges every byte written, so the output cannot pass a few
        // megabytes before this check; a message is refused past the cap.
        let overflowed = rendered.len() > MAX_RENDERED_BYTES;
        match result {
            Ok(()) if !overflowed => Ok(rendered),
            Ok(()) => Err(self.template.render_error(
                &Error::from(ErrorKind::InvalidOperation),
                contact,
                true,
            )),
            Err(e) => Err(self.template.render_error(&e, contact, overflowed)),
        }
    }
}

/// A copy of the compiled template with `*` and `+` rerouted to the bounded
/// functions. One instruction for one, so every jump target stays valid; line
/// records are kept for error messages.
fn bounded_program<'s>(original: &Instructions<'s>) -> Instructions<'s> {
    let mut program = Instructions::new(original.name(), original.source());
    let mut idx = 0u32;
    while let Some(instruction) = original.get(idx) {
        let instruction = match instruction {
            Instruction::Mul => Instruction::CallFunction(BOUNDED_MUL, Some(2)),
            Instruction::Add => Instruction::CallFunction(BOUNDED_ADD, Some(2)),
            other => other.clone(),
        };
        let line = original
            .get_line(idx)
            .and_then(|l| u16::try_from(l).ok())
            .unwrap_or(u16::MAX);
        program.add_with_line(instruction, line);
        idx += 1;
    }
    program
}

/// Refuse the statements that let a template feed a value back into itself
/// (and so grow it without bound) or that a message has no use for.
fn refuse_statements(
    statements: &[Stmt<'_>],
    links: &mut Vec<String>,
) -> Result<(), TemplateError> {
    for statement in statements {
        let (what, line) = match statement {
            Stmt::Template(t) => {
                refuse_statements(&t.children, links)?;
                continue;
            }
            Stmt::EmitExpr(e) => {
                check_expr(&e.expr, links)?;
                continue;
            }
            Stmt::EmitRaw(_) => continue,
            Stmt::IfCond(c) => {
                check_expr(&c.expr, links)?;
                refuse_statements(&c.true_body, links)?;
                refuse_statements(&c.false_body, links)?;
                continue;
            }
            Stmt::AutoEscape(a) => {
                refuse_statements(&a.body, links)?;
                continue;
            }
            Stmt::ForLoop(f) if !f.recursive => {
                check_expr(&f.iter, links)?;
                if let Some(filter) = &f.filter_expr {
                    check_expr(filter, links)?;
                }
                refuse_statements(&f.body, links)?;
                refuse_statements(&f.else_body, links)?;
                continue;
            }
            Stmt::ForLoop(f) => ("a recursive `for` loop", f.span().start_line),
            Stmt::Set(s) => ("`{% set %}`", s.span().start_line),
            Stmt::SetBlock(s) => ("`{% set %}`", s.span().start_line),
            Stmt::WithBlock(w) => ("`{% with %}`", w.span().start_line),
            Stmt::FilterBlock(f) => ("`{% filter %}`", f.span().start_line),
            Stmt::Do(d) => ("`{% do %}`", d.span().start_line),
        };
        return Err(limit_error(
            TemplateLimit::Statement,
            format!(
                "message templates cannot use {what} (line {line}, limit {}); print values with `{{{{ … }}}}` and use `{{% if %}}` and `{{% for %}}` for the rest",
                TemplateLimit::Statement.code()
            ),
        ));
    }
    Ok(())
}

/// What an expression folds to at compile time, if it does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Folded {
    Scalar,
    Container,
}

/// minijinja folds constant expressions while compiling, with its own `*` and
/// `+`, which repeat lists lazily and without a size check (`2 in [1]*100000000`
/// would scan 100 million items at compile time). So `*` and `+` on list, tuple
/// or map literals are refused before compiling; on anything else they run
/// through the bounded functions. Returns how `expr` folds.
fn check_expr(expr: &Expr<'_>, links: &mut Vec<String>) -> Result<Option<Folded>, TemplateError> {
    let check_all = |exprs: &[Expr<'_>], links: &mut Vec<String>| -> Result<bool, TemplateError> {
        let mut all_const = true;
        for e in exprs {
            all_const &= check_expr(e, links)?.is_some();
        }
        Ok(all_const)
    };
    let check_args = |args: &[CallArg<'_>], links: &mut Vec<String>| -> Result<(), TemplateError> {
        for arg in args {
            match arg {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => {
                    check_expr(e, links)?;
                }
            }
        }
        Ok(())
    };
    Ok(match expr {
        Expr::Const(_) => Some(Folded::Scalar),
        Expr::Var(_) => None,
        Expr::List(l) => check_all(&l.items, links)?.then_some(Folded::Container),
        Expr::Tuple(t) => check_all(&t.items, links)?.then_some(Folded::Container),
        Expr::Map(m) => {
            let keys = check_all(&m.keys, links)?;
            (check_all(&m.values, links)? && keys).then_some(Folded::Container)
        }
        Expr::UnaryOp(u) => check_expr(&u.expr, links)?.map(|_| Folded::Scalar),
        Expr::BinOp(b) => {
            let left = check_expr(&b.left, links)?;
            let right = check_expr(&b.right, links)?;
            match (left, right) {
                (Some(l), Some(r))
                    if matches!(b.op, BinOpKind::Mul | BinOpKind::Add)
                        && (l == Folded::Container || r == Folded::Container) =>
                {
                    return Err(limit_error(
                        TemplateLimit::BuiltItems,
                        format!(
                            "`*` and `+` on list literals are not allowed in message templates (line {}, limit {}); a message never needs them",
                            b.span().start_line,
                            TemplateLimit::BuiltItems.code()
                        ),
                    ));
                }
                (Some(_), Some(_)) => Some(Folded::Scalar),
                _ => None,
            }
        }
        Expr::Compare(c) => {
            let mut all_const = check_expr(&c.expr, links)?.is_some();
            for op in &c.ops {
                all_const &= check_expr(&op.expr, links)?.is_some();
            }
            all_const.then_some(Folded::Scalar)
        }
        Expr::Slice(s) => {
            check_expr(&s.expr, links)?;
            for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                check_expr(part, links)?;
            }
            None
        }
        Expr::IfExpr(i) => {
            check_expr(&i.test_expr, links)?;
            check_expr(&i.true_expr, links)?;
            if let Some(e) = &i.false_expr {
                check_expr(e, links)?;
            }
            None
        }
        Expr::Filter(f) => {
            if let Some(e) = &f.expr {
                check_expr(e, links)?;
            }
            check_args(&f.args, links)?;
            None
        }
        Expr::Test(t) => {
            check_expr(&t.expr, links)?;
            check_args(&t.args, links)?;
            None
        }
        Expr::GetAttr(g) => {
            check_expr(&g.expr, links)?;
            None
        }
        Expr::GetItem(g) => {
            check_expr(&g.expr, links)?;
            check_expr(&g.subscript_expr, links)?;
            None
        }
        Expr::Call(c) if matches!(&c.expr, Expr::Var(v) if v.id == LINK_FUNCTION) => {
            links.push(link_target(c)?);
            None
        }
        Expr::Call(c) => {
            check_expr(&c.expr, links)?;
            check_args(&c.args, links)?;
            None
        }
    })
}

/// The target of one `link(...)` call: exactly one URL written in quotes, checked
/// ([`tracked_links::check_target`]). A computed target would give each recipient a link
/// no campaign-wide count could name.
fn link_target(call: &Spanned<Call<'_>>) -> Result<String, TemplateError> {
    let line = call.span().start_line;
    let syntax = |message: String| TemplateError::Syntax {
        line: Some(line as usize),
        message,
    };
    let target = match call.args.as_slice() {
        [CallArg::Pos(Expr::Const(c))] => c.value.as_str().map(str::to_owned),
        _ => None,
    }
    .ok_or_else(|| {
        syntax(
            "link() takes one URL written in quotes, e.g. {{ link(\"https://example.com/offer\") }}"
                .to_owned(),
        )
    })?;
    tracked_links::check_target(&target).map_err(syntax)?;
    Ok(target)
}

/// Totals of a value counted through nested lists and maps, stopping as soon
/// as a limit is passed (so counting itself stays bounded).
#[derive(Default)]
struct Size {
    items: usize,
    bytes: usize,
}

impl Size {
    fn over(&self) -> bool {
        self.items > MAX_BUILT_ITEMS || self.bytes > MAX_BUILT_BYTES
    }

    fn add(&mut self, value: &Value, depth: usize) -> Result<(), Error> {
        if self.over() {
            return Ok(());
        }
        if let Some(s) = value.as_str() {
            self.bytes = self.bytes.saturating_add(s.len());
            return Ok(());
        }
        let kind = value.kind();
        if !matches!(kind, ValueKind::Seq | ValueKind::Iterable | ValueKind::Map) {
            return Ok(());
        }
        // Nesting needs a list per level, which the item count already bounds;
        // this only keeps the recursion off the stack's limit.
        if depth > 64 {
            self.items = usize::MAX;
            return Ok(());
        }
        for item in value.try_iter()? {
            self.items = self.items.saturating_add(1);
            if kind == ValueKind::Map {
                let entry = value.get_item(&item)?;
                self.add(&item, depth + 1)?;
                self.add(&entry, depth + 1)?;
            } else {
                self.add(&item, depth + 1)?;
            }
            if self.over() {
                break;
            }
        }
        Ok(())
    }
}

/// Attached to the error of a refused `*`/`+`, so the render error can name
/// the limit.
#[derive(Debug, thiserror::Error)]
#[error("built value too large")]
struct BuiltTooLarge(TemplateLimit);

fn built_too_large(size: &Size, op: &str) -> Error {
    let limit = if size.items > MAX_BUILT_ITEMS {
        TemplateLimit::BuiltItems
    } else {
        TemplateLimit::BuiltBytes
    };
    let message = if limit == TemplateLimit::BuiltItems {
        format!(
            "`{op}` would build a list of more than {MAX_BUILT_ITEMS} items (limit {}); a message never needs one",
            TemplateLimit::BuiltItems.code()
        )
    } else {
        format!(
            "`{op}` would build more than {MAX_BUILT_BYTES} bytes of text (limit {}); a message never needs that much",
            TemplateLimit::BuiltBytes.code()
        )
    };
    Error::new(ErrorKind::InvalidOperation, message).with_source(BuiltTooLarge(limit))
}

fn is_list(value: &Value) -> bool {
    matches!(value.kind(), ValueKind::Seq | ValueKind::Iterable)
}

/// An integer operand (booleans count, as in Jinja), or None.
fn as_int(value: &Value) -> Option<i128> {
    if value.is_integer() || value.kind() == ValueKind::Bool {
        i128::try_from(value.clone()).ok()
    } else {
        None
    }
}

fn as_float(value: &Value) -> Option<f64> {
    if value.is_number() || value.kind() == ValueKind::Bool {
        f64::try_from(value.clone()).ok()
    } else {
        None
    }
}

fn impossible(op: &str, lhs: &Value, rhs: &Value) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "tried to use {op} operator on unsupported types {} and {}",
            lhs.kind(),
            rhs.kind()
        ),
    )
}

fn too_large_number(op: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("the result of `{op}` is too large a number"),
    )
}

/// `a + b`: numbers add; strings and lists concatenate, up to the built-value
/// limits. Lists are built eagerly (minijinja's are lazy and uncounted).
fn bounded_add(lhs: Value, rhs: Value) -> Result<Value, Error> {
    if let (Some(a), Some(b)) = (lhs.as_str(), rhs.as_str()) {
        if a.len().saturating_add(b.len()) > MAX_BUILT_BYTES {
            return Err(built_too_large(
                &Size {
                    items: 0,
                    bytes: usize::MAX,
                },
                "+",
            ));
        }
        return Ok(Value::from([a, b].concat()));
    }
    if is_list(&lhs) && is_list(&rhs) {
        let mut size = Size::default();
        size.add(&lhs, 0)?;
        size.add(&rhs, 0)?;
        if size.over() {
            return Err(built_too_large(&size, "+"));
        }
        let mut items: Vec<Value> = lhs.try_iter()?.collect();
        items.extend(rhs.try_iter()?);
        return Ok(Value::from(items));
    }
    if let (Some(a), Some(b)) = (as_int(&lhs), as_int(&rhs)) {
        return a
            .checked_add(b)
            .map(Value::from)
            .ok_or_else(|| too_large_number("+"));
    }
    match (as_float(&lhs), as_float(&rhs)) {
        (Some(a), Some(b)) => Ok(Value::from(a + b)),
        _ => Err(impossible("+", &lhs, &rhs)),
    }
}

/// `a * b`: numbers multiply; a string or list times an integer repeats, up to
/// the built-value limits (checked before anything is allocated).
fn bounded_mul(lhs: Value, rhs: Value) -> Result<Value, Error> {
    let repeat = if let Some(n) = as_int(&rhs).filter(|_| !rhs.is_number() || rhs.is_integer()) {
        (lhs.as_str().is_some() || is_list(&lhs)).then_some((&lhs, n))
    } else {
        None
    }
    .or_else(|| {
        as_int(&lhs).and_then(|n| (rhs.as_str().is_some() || is_list(&rhs)).then_some((&rhs, n)))
    });
    if let Some((repeated, n)) = repeat {
        // Like Python, a negative count repeats zero times.
        let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
        let mut size = Size::default();
        size.add(repeated, 0)?;
        let total = Size {
            items: size.items.saturating_mul(n),
            bytes: size.bytes.saturating_mul(n),
        };
        if total.over() {
            return Err(built_too_large(&total, "*"));
        }
        if let Some(s) = repeated.as_str() {
            return Ok(Value::from(s.repeat(n)));
        }
        let once: Vec<Value> = repeated.try_iter()?.collect();
        let mut items = Vec::with_capacity(once.len().saturating_mul(n));
        for _ in 0..n {
            items.extend(once.iter().cloned());
        }
        return Ok(Value::from(items));
    }
    if lhs.as_str().is_some() || rhs.as_str().is_some() || is_list(&lhs) || is_list(&rhs) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "strings and lists can only be multiplied by an integer",
        ));
    }
    if let (Some(a), Some(b)) = (as_int(&lhs), as_int(&rhs)) {
        return a
            .checked_mul(b)
            .map(Value::from)
            .ok_or_else(|| too_large_number("*"));
    }
    match (as_float(&lhs), as_float(&rhs)) {
        (Some(a), Some(b)) => Ok(Value::from(a * b)),
        _ => Err(impossible("*", &lhs, &rhs)),
    }
}

/// Renders are CPU work: they run on tokio's blocking pool, never on the
/// threads that serve HTTP or drive the engine, at most
/// [`MAX_CONCURRENT_RENDERS`] at a time, and the caller gives up after
/// [`RENDER_DEADLINE`] (the permit stays with the work until it ends, so an
/// abandoned render still counts against the bound).
pub async fn render_off_thread<T, F>(work: F) -> Result<T, TemplateError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    static RENDER_SLOTS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_RENDERS);
    let run = async {
        let permit = RENDER_SLOTS
            .acquire()
            .await
            .map_err(|e| internal_error(Error::new(ErrorKind::InvalidOperation, e.to_string())))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| internal_error(Error::new(ErrorKind::InvalidOperation, e.to_string())))
    };
    match tokio::time::timeout(RENDER_DEADLINE, run).await {
        Ok(result) => result,
        Err(_) => Err(limit_error(
            TemplateLimit::Deadline,
            format!(
                "rendering did not finish within {} s (limit {}); the server is busy rendering, try again",
                RENDER_DEADLINE.as_secs(),
                TemplateLimit::Deadline.code()
            ),
        )),
    }
}

/// Render `template` for each contact on the blocking pool (one task for the
/// whole batch, so a sender pays one hand-off per claim, not per message).
pub async fn render_batch_off_thread<C>(
    template: Arc<MessageTemplate>,
    contacts: Vec<C>,
    fields: fn(&C) -> ContactFields<'_>,
) -> Result<Vec<Result<String, TemplateError>>, TemplateError>
where
    C: Send + 'static,
{
    render_off_thread(move || match template.renderer() {
        Ok(renderer) => contacts
            .iter()
            .map(|c| renderer.render(&fields(c)))
            .collect(),
        Err(e) => contacts.iter().map(|_| Err(e.clone())).collect(),
    })
    .await
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
            matches!(&err, Err(TemplateError::Limit { limit: TemplateLimit::Fuel, reason }) if reason.contains("ran out of fuel")),
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
            matches!(&err, Err(TemplateError::Limit { reason, .. }) if reason.contains("longer than") || reason.contains("fuel")),
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

    /// One hostile template per built-in family: each must be refused with a
    /// limit, or finish with output under the cap. Before the bounds,
    /// `{{ [1]*100000000 }}` spent seconds printing a lazily repeated list.
    #[test]
    fn hostile_templates_are_refused_or_bounded() {
        let lazy_list = "([1]*100000000)";
        let big_string = "(\"x\"*5000000)";
        let cases: Vec<String> = vec![
            format!("{{{{ {lazy_list} }}}}"),
            format!("{{{{ {lazy_list} ~ '' }}}}"),
            format!("{{{{ 2 in {lazy_list} }}}}"),
            format!("{{{{ {lazy_list}|string|length }}}}"),
            format!("{{{{ '%s'|format({lazy_list})|length }}}}"),
            format!("{{{{ {lazy_list} + {lazy_list} }}}}"),
            "{{ ([1]*1000) * 1000 }}".into(),
            "{{ [[1]*5000] * 3 }}".into(),
            "{{ (range(10000)|list) + (range(10000)|list) }}".into(),
            "{{ 100000000 * [1] }}".into(),
            format!("{{{{ {big_string} }}}}"),
            format!("{{{{ {big_string} + {big_string} }}}}"),
            format!("{{{{ {big_string} ~ {big_string} }}}}"),
            "{{ 'x' * 2000000 }}".into(),
            "{{ range(100000)|join(',') }}".into(),
            "{{ range(100000)|list|string }}".into(),
            "{{ range(100000000)|list|length }}".into(),
            "{{ range(100000)|batch(1)|list|length }}".into(),
            "{{ range(100000)|slice(3)|list }}".into(),
            "{{ range(100000)|sort|list|length }}".into(),
            "{{ range(100000)|unique|list|length }}".into(),
            "{{ range(100000)|map('string')|join }}".into(),
            "{{ ('ab'*400000)|replace('a', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx') }}".into(),
            "{{ ('a\n'*400000)|indent(100) }}".into(),
            "{{ ('x'*1000)|indent(100000000) }}".into(),
            "{{ 'x'.center(100000000) }}".into(),
            "{{ 'x'.ljust(100000000) }}".into(),
            "{{ 'x'.zfill(100000000) }}".into(),
            "{{ '%s%s%s%s%s%s%s%s'|format('x'*900000, 'x'*900000, 'x'*900000, 'x'*900000, 'x'*900000, 'x'*900000, 'x'*900000, 'x'*900000) }}".into(),
            "{{ ('x'*900000)|upper|lower|title|capitalize|trim }}".into(),
            "{{ dict(a='x'*900000, b='x'*900000, c='x'*900000)|pprint }}".into(),
            "{{ 2**100000000 }}".into(),
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}".into(),
            "{% for i in range(100000) %}{{ 'x'*100000 }}{% endfor %}".into(),
        ];
        for source in &cases {
            let result = MessageTemplate::compile(source).and_then(|t| t.render_placeholder());
            match &result {
                Ok(out) => assert!(
                    out.len() <= MAX_RENDERED_BYTES,
                    "{source}: {} bytes rendered",
                    out.len()
                ),
                Err(TemplateError::Limit { .. }) => {}
                // Refused by minijinja itself (e.g. `2**100000000`), or not a
                // built-in here (`.center`): fails fast either way.
                Err(TemplateError::Render { reason, .. })
                    if reason.contains("invalid operation")
                        || reason.contains("unknown method") => {}
                Err(e) => panic!("{source}: unexpected {e:?}"),
            }
        }
        // The headline attack names its limit, at compile time (a literal) or
        // at render time (a list from a variable or a filter).
        let err = MessageTemplate::compile("{{ [1]*100000000 }}");
        assert!(
            matches!(&err, Err(TemplateError::Limit { limit: TemplateLimit::BuiltItems, reason }) if reason.contains("max_built_items")),
            "{err:?}"
        );
        for source in [
            "{{ tags * 100000000 }}",
            "{{ (range(3)|list) * 100000000 }}",
        ] {
            let err = render(&compile(source), None, &json!({"tags": [1]}));
            assert!(
                matches!(&err, Err(TemplateError::Limit { limit: TemplateLimit::BuiltItems, reason }) if reason.contains("10000 items") && reason.contains("max_built_items")),
                "{source}: {err:?}"
            );
        }
        assert!(
            compile("{{ (range(3)|list) * 100000000 }}")
                .check_limits()
                .is_err()
        );
        assert!(compile("{{ 'x' * 100000000 }}").check_limits().is_err());
    }

    #[test]
    fn feedback_statements_are_refused_at_compile() {
        for (source, what) in [
            ("{% set a = 'x' %}{{ a }}", "`{% set %}`"),
            ("{% set a %}x{% endset %}{{ a }}", "`{% set %}`"),
            ("ok\n{% with a = 1 %}{{ a }}{% endwith %}", "`{% with %}`"),
            ("{% filter upper %}x{% endfilter %}", "`{% filter %}`"),
            ("{% do range(3) %}", "`{% do %}`"),
            (
                "{% for x in [[1]] recursive %}{{ loop(x) }}{% endfor %}",
                "recursive",
            ),
            (
                "{% if name %}{% for i in range(2) %}{% set ns = 1 %}{% endfor %}{% endif %}",
                "`{% set %}`",
            ),
        ] {
            let err = MessageTemplate::compile(source);
            assert!(
                matches!(&err, Err(TemplateError::Limit { limit: TemplateLimit::Statement, reason }) if reason.contains(what)),
                "{source}: {err:?}"
            );
        }
        let err = MessageTemplate::compile("a\n{% with a = 1 %}{% endwith %}");
        assert!(
            matches!(&err, Err(TemplateError::Limit { reason, .. }) if reason.contains("line 2")),
            "{err:?}"
        );
        // Globals with no use without `set`, or that dump the context, are gone.
        for source in ["{{ namespace(a=1) }}", "{{ debug() }}"] {
            assert!(
                matches!(
                    compile(source).render_placeholder(),
                    Err(TemplateError::Render { .. })
                ),
                "{source}"
            );
        }
    }

    #[test]
    fn bounded_operators_keep_their_meaning() {
        let t = compile(
            "{{ 2 * 3 }}|{{ 2.5 * 2 }}|{{ '-' * 3 }}|{{ 3 * 'ab' }}|{{ tags * 2 }}|{{ 'a' * -1 }}|\
             {{ 1 + 2 + 3 }}|{{ 1.5 + 1 }}|{{ 'a' + 'b' }}|{{ tags + tags }}|{{ name * qty }}|\
             {{ true + 1 }}|{{ qty * price }}|{{ qty + 1 }}|{{ range(3)|list * 2 }}",
        );
        assert_eq!(
            render(&t, Some("ab"), &json!({"qty": 3, "price": 1.5, "tags": [1, 2]})),
            Ok("6|5.0|---|ababab|[1, 2, 1, 2]||6|2.5|ab|[1, 2, 1, 2]|ababab|2|4.5|4|[0, 1, 2, 0, 1, 2]".to_owned())
        );
        let err = render(&compile("{{ 'a' * 'b' }}"), None, &json!({}));
        assert!(matches!(err, Err(TemplateError::Render { .. })), "{err:?}");
        let err = render(&compile("{{ 10**38 * 10**38 }}"), None, &json!({}));
        assert!(matches!(err, Err(TemplateError::Render { .. })), "{err:?}");
        // Errors from a rerouted operator still carry the line.
        let err = render(
            &compile("ok\n{{ (range(2)|list) * 20000 }}"),
            None,
            &json!({}),
        );
        assert!(
            matches!(&err, Err(TemplateError::Limit { reason, .. }) if reason.contains("line 2")),
            "{err:?}"
        );
        // A renderer is reusable across contacts.
        let t = compile("{{ name }}");
        let Ok(renderer) = t.renderer() else {
            panic!("no renderer")
        };
        let empty = serde_json::Map::new();
        for n in ["a", "b"] {
            assert_eq!(
                renderer.render(&ContactFields {
                    address: "x",
                    name: Some(n),
                    attributes: &empty
                }),
                Ok(n.to_owned())
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renders_run_off_the_async_threads() {
        let t = Arc::new(compile("{{ name }}"));
        let on_worker = std::thread::current().id();
        let (thread, out) =
            render_off_thread(move || (std::thread::current().id(), t.render_placeholder()))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(thread, on_worker);
        assert_eq!(out, Ok("NAME".to_owned()));
        let batch = render_batch_off_thread(
            Arc::new(compile("Hi {{ name }}")),
            vec![
                ("+1".to_owned(), "A".to_owned()),
                ("+2".to_owned(), "B".to_owned()),
            ],
            |c: &(String, String)| ContactFields {
                address: &c.0,
                name: Some(&c.1),
                attributes: empty_map(),
            },
        )
        .await;
        assert_eq!(
            batch,
            Ok(vec![Ok("Hi A".to_owned()), Ok("Hi B".to_owned())])
        );
    }

    #[test]
    fn link_calls_are_collected_in_order_once_each() {
        let t = compile(
            "Hi {{ name }}: {{ link('https://shop.example/a') }} or {{ link(\"https://shop.example/b?x=1\") }}, again {{ link('https://shop.example/a') }}",
        );
        assert_eq!(
            t.links(),
            ["https://shop.example/a", "https://shop.example/b?x=1"]
        );
        // Not a variable a contact must have.
        assert!(!t.variables().contains("link"));
        let contact = ContactFields {
            address: "+1",
            name: Some("Ann"),
            attributes: empty_map(),
        };
        // A plain render prints the targets.
        assert_eq!(
            t.render(&contact).unwrap(),
            "Hi Ann: https://shop.example/a or https://shop.example/b?x=1, again https://shop.example/a"
        );
        let links = BTreeMap::from([
            (
                "https://shop.example/a".to_owned(),
                "https://h.example/l/AAAA".to_owned(),
            ),
            (
                "https://shop.example/b?x=1".to_owned(),
                "https://h.example/l/BBBB".to_owned(),
            ),
        ]);
        let renderer = t.renderer().unwrap();
        assert_eq!(
            renderer.render_linked(&contact, Some(&links)).unwrap(),
            "Hi Ann: https://h.example/l/AAAA or https://h.example/l/BBBB, again https://h.example/l/AAAA"
        );
        // Links inside a branch count even when the branch is not taken.
        let t = compile("{% if vip %}{{ link('https://shop.example/vip') }}{% endif %}");
        assert_eq!(t.links(), ["https://shop.example/vip"]);
    }

    #[test]
    fn link_needs_one_quoted_absolute_url() {
        for (source, expected) in [
            ("{{ link(url) }}", "one URL written in quotes"),
            (
                "{{ link('https://a.example/' ~ name) }}",
                "one URL written in quotes",
            ),
            ("{{ link() }}", "one URL written in quotes"),
            (
                "{{ link('https://a.example', 'x') }}",
                "one URL written in quotes",
            ),
            (
                "{{ link('shop.example/offer') }}",
                "must start with https://",
            ),
            (
                "{{ link('javascript:alert(1)') }}",
                "must start with https://",
            ),
            ("{{ link('https:///x') }}", "has no host"),
        ] {
            match MessageTemplate::compile(source) {
                Err(TemplateError::Syntax { message, line }) => {
                    assert!(message.contains(expected), "{source}: {message}");
                    assert_eq!(line, Some(1), "{source}");
                }
                other => panic!("{source}: {other:?}"),
            }
        }
        let many: String = (0..=crate::tracked_links::MAX_LINKS)
            .map(|i| format!("{{{{ link('https://a.example/{i}') }}}} "))
            .collect();
        match MessageTemplate::compile(&many) {
            Err(TemplateError::Syntax { message, .. }) => {
                assert!(message.contains("more than 20"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    fn empty_map() -> &'static serde_json::Map<String, serde_json::Value> {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, serde_json::Value>> =
            std::sync::OnceLock::new();
        EMPTY.get_or_init(serde_json::Map::new)
    }
}
