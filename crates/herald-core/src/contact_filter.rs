//! The filter language of segments (docs/SEGMENTS.md): conditions on a contact's fields and
//! attributes, combined with `and`, `or`, `not` and parentheses, for example
//!
//! ```text
//! attributes.plan = "gold" and (attributes.age >= 30 or name contains "ann")
//!   and created since 2026-01-01 and not list = "Staff"
//! ```
//!
//! This module parses and checks a filter; the store compiles it to SQL for each database
//! with the same meaning (`store::directory::segments`). Parsing is bounded: a filter is at
//! most [`MAX_FILTER_CHARS`] characters, [`MAX_CONDITIONS`] conditions and [`MAX_DEPTH`]
//! levels of nesting, so a hostile filter costs no more than a long one. Every error names
//! the field (or the place in the text) and says what would be right.

use std::fmt;

/// Longest filter text.
pub const MAX_FILTER_CHARS: usize = 4000;
/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 50;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 10;
/// Most values in one `in (…)`.
pub const MAX_IN_VALUES: usize = 100;

const DAY_MS: i64 = 86_400_000;

/// The symbols of the language, two-character ones first so that `<=` is not read as `<`.
const SYMBOLS: &[&str] = &["!=", "<=", ">=", "==", "<", ">", "=", "(", ")", ","];

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Condition(Condition),
}

/// A contact field a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Name,
    Address,
    /// When the contact was created.
    Created,
    /// When the contact was last changed.
    Updated,
    /// Membership of a list, by its name.
    List,
    /// One attribute, by its name.
    Attribute(String),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Name => f.write_str("name"),
            Field::Address => f.write_str("address"),
            Field::Created => f.write_str("created"),
            Field::Updated => f.write_str("updated"),
            Field::List => f.write_str("list"),
            Field::Attribute(key) if is_plain_key(key) => write!(f, "attributes.{key}"),
            Field::Attribute(key) => write!(f, "attributes.{}", quoted(key)),
        }
    }
}

/// A literal on the right of a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    Bool(bool),
    /// A calendar date, `YYYY-MM-DD`.
    Date(String),
    /// An instant (RFC 3339), in milliseconds since the epoch.
    Instant(i64),
    /// A time before now, as written (`30d`, `12h`, `15m`): days, hours or minutes.
    Ago {
        amount: i64,
        unit: char,
    },
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Text(_) => "text",
            Value::Number(_) => "a number",
            Value::Bool(_) => "true or false",
            Value::Date(_) => "a date",
            Value::Instant(_) => "a date and time",
            Value::Ago { .. } => "a time ago",
        }
    }

    /// The instant a time value names, `now` for the relative ones.
    pub fn instant(&self, now_ms: i64) -> Option<i64> {
        match self {
            Value::Date(d) => date_start_ms(d),
            Value::Instant(ms) => Some(*ms),
            Value::Ago { amount, unit } => {
                let unit_ms = match unit {
                    'd' => DAY_MS,
                    'h' => 3_600_000,
                    _ => 60_000,
                };
                Some(now_ms.saturating_sub(amount.saturating_mul(unit_ms)))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(&quoted(s)),
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Date(d) => f.write_str(d),
            Value::Instant(ms) => f.write_str(&crate::clock::rfc3339(*ms)),
            Value::Ago { amount, unit } => write!(f, "{amount}{unit}"),
        }
    }
}

/// How a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
        }
    }
}

/// What a condition asks of its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(Value),
    /// Different, or missing.
    NotEquals(Value),
    /// Holds the text, ignoring the case of ASCII letters.
    Contains(String),
    /// Equals one of the values.
    In(Vec<Value>),
    /// Present and not empty.
    Exists,
    Compare(Comparison, Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub test: Test,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.test {
            Test::Equals(v) => write!(f, "{} = {v}", self.field),
            Test::NotEquals(v) => write!(f, "{} != {v}", self.field),
            Test::Contains(s) => write!(f, "{} contains {}", self.field, quoted(s)),
            Test::In(values) => {
                let values: Vec<String> = values.iter().map(Value::to_string).collect();
                write!(f, "{} in ({})", self.field, values.join(", "))
            }
            Test::Exists => write!(f, "{} exists", self.field),
            Test::Compare(Comparison::GreaterOrEqual, v)
                if matches!(self.field, Field::Created | Field::Updated) =>
            {
                write!(f, "{} since {v}", self.field)
            }
            Test::Compare(c, v) => write!(f, "{} {} {v}", self.field, c.symbol()),
        }
    }
}

impl fmt::Display for Filter {
    /// The canonical text: what a segment stores and shows, and what parses back to the
    /// same filter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn part(f: &mut fmt::Formatter<'_>, filter: &Filter, parent_and: bool) -> fmt::Result {
            match filter {
                // `or` inside `and` keeps its parentheses; everything else binds tighter.
                Filter::Or(_) if parent_and => write!(f, "({filter})"),
                _ => write!(f, "{filter}"),
            }
        }
        match self {
            Filter::Condition(c) => write!(f, "{c}"),
            Filter::Not(inner) => match inner.as_ref() {
                Filter::Condition(_) | Filter::Not(_) => write!(f, "not {inner}"),
                _ => write!(f, "not ({inner})"),
            },
            Filter::And(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    part(f, p, true)?;
                }
                Ok(())
            }
            Filter::Or(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    part(f, p, false)?;
                }
                Ok(())
            }
        }
    }
}

impl Filter {
    /// Every condition, in the order written.
    pub fn conditions(&self) -> Vec<&Condition> {
        let mut out = Vec::new();
        fn walk<'a>(f: &'a Filter, out: &mut Vec<&'a Condition>) {
            match f {
                Filter::Condition(c) => out.push(c),
                Filter::Not(inner) => walk(inner, out),
                Filter::And(parts) | Filter::Or(parts) => {
                    for p in parts {
                        walk(p, out)
                    }
                }
            }
        }
        walk(self, &mut out);
        out
    }

    /// The list names the filter reads, each once, in the order written.
    pub fn list_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for c in self.conditions() {
            if c.field != Field::List {
                continue;
            }
            let values: &[Value] = match &c.test {
                Test::Equals(v) | Test::NotEquals(v) => std::slice::from_ref(v),
                Test::In(values) => values,
                _ => &[],
            };
            for v in values {
                if let Value::Text(name) = v
                    && !names.contains(&name.as_str())
                {
                    names.push(name);
                }
            }
        }
        names
    }
}

/// A filter that cannot be used: where (the field, or `filter` for the text as a whole,
/// and the character offset), and what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// `filter`, or the field the error is about (`attributes.age`, `created`).
    pub field: String,
    /// 1-based character position in the filter text.
    pub position: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "filter" {
            write!(
                f,
                "filter, at character {}: {}",
                self.position, self.message
            )
        } else {
            write!(
                f,
                "filter, `{}` at character {}: {}",
                self.field, self.position, self.message
            )
        }
    }
}

impl std::error::Error for FilterError {}

/// Parses and checks a filter.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    if text.chars().nth(MAX_FILTER_CHARS).is_some() {
        return Err(FilterError {
            field: "filter".into(),
            position: MAX_FILTER_CHARS + 1,
            message: format!(
                "a filter is at most {MAX_FILTER_CHARS} characters: split it into segments or use `in (…)`"
            ),
        });
    }
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Err(FilterError {
            field: "filter".into(),
            position: 1,
            message: "the filter is empty: write a condition such as attributes.plan = \"gold\""
                .into(),
        });
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        conditions: 0,
        end: text.chars().count() + 1,
    };
    let filter = parser.or(0)?;
    if let Some(t) = parser.tokens.get(parser.at) {
        return Err(FilterError {
            field: "filter".into(),
            position: t.position,
            message: format!(
                "unexpected {}: join conditions with `and` or `or`",
                t.kind.describe()
            ),
        });
    }
    // The canonical text is what a segment stores and reads back: it must fit too (it
    // spaces `in (…)` and writes times in full).
    let canonical = filter.to_string().chars().count();
    if canonical > MAX_FILTER_CHARS {
        return Err(FilterError {
            field: "filter".into(),
            position: 1,
            message: format!(
                "written out in full the filter is {canonical} characters, over {MAX_FILTER_CHARS}: split it into segments"
            ),
        });
    }
    Ok(filter)
}

/// A key that can be written without quotes after `attributes.`.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with('-')
}

fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Midnight UTC of a `YYYY-MM-DD` date, in milliseconds.
fn date_start_ms(date: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Word(String),
    Text(String),
    Number(f64),
    Date(String),
    Instant(i64),
    Ago(i64, char),
    Symbol(&'static str),
}

impl TokenKind {
    fn describe(&self) -> String {
        match self {
            TokenKind::Word(w) => format!("`{w}`"),
            TokenKind::Text(s) => format!("text {}", quoted(s)),
            TokenKind::Number(n) => format!("number {n}"),
            TokenKind::Date(d) => format!("date {d}"),
            TokenKind::Instant(ms) => format!("time {}", crate::clock::rfc3339(*ms)),
            TokenKind::Ago(n, u) => format!("`{n}{u}`"),
            TokenKind::Symbol(s) => format!("`{s}`"),
        }
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self, TokenKind::Word(w) if w.eq_ignore_ascii_case(word))
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// 1-based character position.
    position: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let error = |position: usize, message: String| FilterError {
        field: "filter".into(),
        position,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(error(
                            position,
                            "this text is not closed: end it with `\"`".into(),
                        ));
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some(&e @ ('"' | '\\')) => s.push(e),
                            _ => {
                                return Err(error(
                                    i + 1,
                                    "inside text, `\\` escapes only `\"` and `\\`".into(),
                                ));
                            }
                        }
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            tokens.push(Token {
                kind: TokenKind::Text(s),
                position,
            });
            continue;
        }
        let next = chars.get(i + 1).copied().unwrap_or(' ');
        let symbol = SYMBOLS.iter().find(|sym| {
            let mut sc = sym.chars();
            sc.next() == Some(c) && sc.next().is_none_or(|second| second == next)
        });
        let symbol = symbol.map(|sym| (*sym, sym.chars().count()));
        if let Some((sym, len)) = symbol {
            tokens.push(Token {
                // `==` reads as `=`.
                kind: TokenKind::Symbol(if sym == "==" { "=" } else { sym }),
                position,
            });
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len()
            && !chars[i].is_whitespace()
            && !matches!(chars[i], '"' | '(' | ')' | ',' | '=' | '<' | '>' | '!')
        {
            i += 1;
        }
        if i == start {
            return Err(error(
                position,
                format!(
                    "`{c}` is not part of the filter language: compare with =, !=, <, <=, >, >="
                ),
            ));
        }
        let word: String = chars[start..i].iter().collect();
        // `attributes."first name"`: the quoted key follows the dot.
        if word.eq_ignore_ascii_case("attributes.") && chars.get(i) == Some(&'"') {
            tokens.push(Token {
                kind: TokenKind::Word(word),
                position,
            });
            continue;
        }
        tokens.push(Token {
            kind: literal_or_word(&word).map_err(|m| error(position, m))?,
            position,
        });
    }
    Ok(tokens)
}

fn literal_or_word(word: &str) -> Result<TokenKind, String> {
    let first = word.chars().next().unwrap_or(' ');
    if !(first.is_ascii_digit() || first == '-' && word.len() > 1) {
        return Ok(TokenKind::Word(word.to_string()));
    }
    let bytes = word.as_bytes();
    // A date (2026-01-31) or an instant (2026-01-31T09:00:00Z).
    if bytes.len() >= 10 && bytes[4] == b'-' && bytes[7] == b'-' && first.is_ascii_digit() {
        if bytes.len() == 10 {
            return match date_start_ms(word) {
                Some(_) => Ok(TokenKind::Date(word.to_string())),
                None => Err(format!(
                    "`{word}` is not a date: write YYYY-MM-DD, for example 2026-01-31"
                )),
            };
        }
        return crate::clock::parse_rfc3339(word)
            .map(TokenKind::Instant)
            .map_err(|_| {
                format!(
                    "`{word}` is not a date and time: write RFC 3339 with its offset, for example 2026-01-31T09:00:00Z"
                )
            });
    }
    if let Some(unit) = word.chars().last().filter(|u| matches!(u, 'd' | 'h' | 'm'))
        && first.is_ascii_digit()
    {
        let amount = &word[..word.len() - 1];
        if !amount.is_empty() && amount.chars().all(|c| c.is_ascii_digit()) {
            return match amount.parse::<i64>() {
                Ok(n) if n <= 36_500 * 24 * 60 => Ok(TokenKind::Ago(n, unit)),
                _ => Err(format!("`{word}` is too long ago")),
            };
        }
    }
    let plain = word.strip_prefix('-').unwrap_or(word);
    let well_formed = {
        let mut parts = plain.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let fraction = parts.next();
        !whole.is_empty()
            && whole.chars().all(|c| c.is_ascii_digit())
            && fraction.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
    };
    match word.parse::<f64>() {
        Ok(n) if well_formed && n.is_finite() && plain.len() <= 30 => Ok(TokenKind::Number(n)),
        _ => Err(format!(
            "`{word}` is not a number, a date (2026-01-31) or a time ago (30d, 12h, 15m)"
        )),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    conditions: usize,
    /// Position just past the text, for errors at its end.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn position(&self) -> usize {
        self.peek().map(|t| t.position).unwrap_or(self.end)
    }

    fn error(&self, field: &str, position: usize, message: impl Into<String>) -> FilterError {
        FilterError {
            field: field.to_string(),
            position,
            message: message.into(),
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.kind.is_word(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if self
            .peek()
            .is_some_and(|t| matches!(t.kind, TokenKind::Symbol(s) if s == symbol))
        {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut parts = vec![self.and(depth)?];
        while self.eat_word("or") {
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut parts = vec![self.unary(depth)?];
        while self.eat_word("and") {
            parts.push(self.unary(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(
                "filter",
                self.position(),
                format!("nested more than {MAX_DEPTH} levels deep: simplify the parentheses"),
            ));
        }
        if self.eat_word("not") {
            return Ok(Filter::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.eat_symbol("(") {
            let open = self.tokens[self.at - 1].position;
            let inner = self.or(depth + 1)?;
            if !self.eat_symbol(")") {
                return Err(self.error("filter", open, "this parenthesis is not closed: add `)`"));
            }
            return Ok(inner);
        }
        self.condition().map(Filter::Condition)
    }

    fn field(&mut self) -> Result<(Field, usize), FilterError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.error(
                "filter",
                self.end,
                "a condition is missing at the end: write one such as name exists",
            ));
        };
        let TokenKind::Word(word) = &token.kind else {
            return Err(self.error(
                "filter",
                token.position,
                format!(
                    "expected a field, found {}: conditions start with name, address, created, updated, list or attributes.NAME",
                    token.kind.describe()
                ),
            ));
        };
        self.at += 1;
        let lower = word.to_ascii_lowercase();
        let field = match lower.as_str() {
            "name" => Field::Name,
            "address" => Field::Address,
            "created" => Field::Created,
            "updated" => Field::Updated,
            "list" => Field::List,
            "attributes." => match self.peek().map(|t| t.kind.clone()) {
                Some(TokenKind::Text(key)) => {
                    self.at += 1;
                    Field::Attribute(key)
                }
                _ => {
                    return Err(self.error(
                        "filter",
                        token.position,
                        "an attribute's name follows `attributes.`: attributes.plan or attributes.\"first name\"",
                    ));
                }
            },
            _ => match word.split_once('.') {
                Some((prefix, key)) if prefix.eq_ignore_ascii_case("attributes") => {
                    Field::Attribute(key.to_string())
                }
                _ => {
                    return Err(self.error(
                        word,
                        token.position,
                        format!(
                            "`{word}` is not a contact field: use name, address, created, updated, list, or attributes.{word} for an attribute"
                        ),
                    ));
                }
            },
        };
        if let Field::Attribute(key) = &field
            && let Err(v) = crate::contact_rules::check_attribute_key(key)
        {
            return Err(self.error(&field.to_string(), token.position, v.detail));
        }
        if let Field::Attribute(key) = &field
            && key.contains(['"', '\\'])
        {
            return Err(self.error(
                &field.to_string(),
                token.position,
                "attribute names with `\"` or `\\` cannot be filtered on: rename the attribute",
            ));
        }
        Ok((field, token.position))
    }

    fn value(&mut self, field: &Field) -> Result<Value, FilterError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.error(
                &field.to_string(),
                self.end,
                "a value is missing at the end: write one such as \"gold\", 30 or 2026-01-31",
            ));
        };
        let value = match token.kind {
            TokenKind::Text(s) => Value::Text(s),
            TokenKind::Number(n) => Value::Number(n),
            TokenKind::Date(d) => Value::Date(d),
            TokenKind::Instant(ms) => Value::Instant(ms),
            TokenKind::Ago(n, u) => Value::Ago { amount: n, unit: u },
            TokenKind::Word(w) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            TokenKind::Word(w) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            other => {
                let hint = match &other {
                    TokenKind::Word(w) => format!(": put text in double quotes, \"{w}\""),
                    _ => String::new(),
                };
                return Err(self.error(
                    &field.to_string(),
                    token.position,
                    format!("expected a value, found {}{hint}", other.describe()),
                ));
            }
        };
        self.at += 1;
        Ok(value)
    }

    fn condition(&mut self) -> Result<Condition, FilterError> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(self.error(
                "filter",
                self.position(),
                format!("more than {MAX_CONDITIONS} conditions: use `in (…)` or split the segment"),
            ));
        }
        let (field, position) = self.field()?;
        let name = field.to_string();
        let op_position = self.position();
        let test = if self.eat_symbol("=") {
            Test::Equals(self.value(&field)?)
        } else if self.eat_symbol("!=") {
            Test::NotEquals(self.value(&field)?)
        } else if self.eat_symbol("<") {
            Test::Compare(Comparison::Less, self.value(&field)?)
        } else if self.eat_symbol("<=") {
            Test::Compare(Comparison::LessOrEqual, self.value(&field)?)
        } else if self.eat_symbol(">") {
            Test::Compare(Comparison::Greater, self.value(&field)?)
        } else if self.eat_symbol(">=") || self.eat_word("since") {
            Test::Compare(Comparison::GreaterOrEqual, self.value(&field)?)
        } else if self.eat_word("exists") {
            Test::Exists
        } else if self.eat_word("contains") {
            match self.value(&field)? {
                Value::Text(s) => Test::Contains(s),
                other => {
                    return Err(self.error(
                        &name,
                        op_position,
                        format!(
                            "`contains` looks for text, not {}: put it in double quotes",
                            other.kind()
                        ),
                    ));
                }
            }
        } else if self.eat_word("in") {
            if !self.eat_symbol("(") {
                return Err(self.error(
                    &name,
                    self.position(),
                    "`in` takes values in parentheses: in (\"a\", \"b\")",
                ));
            }
            let mut values = vec![self.value(&field)?];
            while self.eat_symbol(",") {
                if values.len() >= MAX_IN_VALUES {
                    return Err(self.error(
                        &name,
                        self.position(),
                        format!("`in` takes at most {MAX_IN_VALUES} values"),
                    ));
                }
                values.push(self.value(&field)?);
            }
            if !self.eat_symbol(")") {
                return Err(self.error(
                    &name,
                    self.position(),
                    "separate the values of `in` with commas and close them with `)`",
                ));
            }
            Test::In(values)
        } else {
            let found = self
                .peek()
                .map(|t| t.kind.describe())
                .unwrap_or_else(|| "the end".into());
            return Err(self.error(
                &name,
                op_position,
                format!(
                    "expected =, !=, <, <=, >, >=, contains, in, exists or since after `{name}`, found {found}"
                ),
            ));
        };
        check(&field, &test).map_err(|m| self.error(&name, position, m))?;
        Ok(Condition { field, test })
    }
}

/// Which tests and values each field takes.
fn check(field: &Field, test: &Test) -> Result<(), String> {
    let values: Vec<&Value> = match test {
        Test::Equals(v) | Test::NotEquals(v) | Test::Compare(_, v) => vec![v],
        Test::In(values) => values.iter().collect(),
        Test::Contains(_) | Test::Exists => vec![],
    };
    match field {
        Field::Name | Field::Address | Field::List => {
            if let Test::Compare(c, _) = test {
                return Err(format!(
                    "`{}` compares numbers and dates; {field} is text: use =, !=, contains or in",
                    c.symbol()
                ));
            }
            if *field == Field::List && matches!(test, Test::Contains(_) | Test::Exists) {
                return Err(
                    "list takes a list's name: list = \"Newsletter\", list != \"Staff\" or list in (\"A\", \"B\")"
                        .into(),
                );
            }
            if let Some(v) = values.iter().find(|v| !matches!(v, Value::Text(_))) {
                return Err(format!(
                    "{field} is text, and {v} is {}: put it in double quotes",
                    v.kind()
                ));
            }
        }
        Field::Created | Field::Updated => {
            let Test::Compare(..) = test else {
                return Err(format!(
                    "{field} is a time: compare it, {field} since 2026-01-01, {field} >= 30d or {field} < 2026-01-31T09:00:00Z"
                ));
            };
            if let Some(v) = values.iter().find(|v| v.instant(0).is_none()) {
                return Err(format!(
                    "{field} is compared with a date (2026-01-31), a date and time (2026-01-31T09:00:00Z) or a time ago (30d, 12h, 15m), not {}",
                    v.kind()
                ));
            }
        }
        Field::Attribute(_) => match test {
            Test::Compare(c, v) if !matches!(v, Value::Number(_) | Value::Date(_)) => {
                return Err(format!(
                    "`{}` compares an attribute with a number (30) or a date (2026-01-31), not {}",
                    c.symbol(),
                    v.kind()
                ));
            }
            _ => {
                if let Some(v) = values
                    .iter()
                    .find(|v| matches!(v, Value::Date(_) | Value::Instant(_) | Value::Ago { .. }))
                    && !matches!(test, Test::Compare(..))
                {
                    return Err(format!(
                        "{v} is {}: compare attribute dates with <, <=, > or >=, or put the text in double quotes",
                        v.kind()
                    ));
                }
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(text: &str) -> FilterError {
        match parse(text) {
            Ok(f) => panic!("{text:?} parsed as {f:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let f = parse(
            "attributes.plan = \"gold\" and (attributes.age >= 30 or name contains \"ann\") and created since 2026-01-01 and not list = \"Staff\"",
        )
        .unwrap();
        let Filter::And(parts) = &f else {
            panic!("{f:?}")
        };
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts[0],
            Filter::Condition(Condition {
                field: Field::Attribute("plan".into()),
                test: Test::Equals(Value::Text("gold".into())),
            })
        );
        assert!(matches!(&parts[1], Filter::Or(p) if p.len() == 2));
        assert!(matches!(&parts[3], Filter::Not(_)));
        assert_eq!(f.list_names(), vec!["Staff"]);
        assert_eq!(
            f.to_string(),
            "attributes.plan = \"gold\" and (attributes.age >= 30 or name contains \"ann\") and created since 2026-01-01 and not list = \"Staff\""
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = parse("name exists or address contains \"@x\" and list = \"A\"").unwrap();
        let Filter::Or(parts) = f else { panic!() };
        assert!(matches!(&parts[1], Filter::And(p) if p.len() == 2));
    }

    #[test]
    fn keywords_ignore_case_and_keys_may_be_quoted() {
        let f = parse("attributes.\"first name\" EXISTS AND Name IN (\"a\", \"b\")").unwrap();
        assert_eq!(
            f.to_string(),
            "attributes.\"first name\" exists and name in (\"a\", \"b\")"
        );
        assert_eq!(
            parse("updated >= 30d").unwrap().to_string(),
            "updated since 30d"
        );
    }

    #[test]
    fn times_resolve_against_now() {
        let Filter::Condition(c) = parse("created since 2d").unwrap() else {
            panic!()
        };
        let Test::Compare(_, v) = c.test else {
            panic!()
        };
        assert_eq!(v.instant(10 * DAY_MS), Some(8 * DAY_MS));
        assert_eq!(Value::Date("1970-01-02".into()).instant(0), Some(DAY_MS));
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let e = err("plan = \"gold\"");
        assert_eq!((e.field.as_str(), e.position), ("plan", 1));
        assert!(e.message.contains("attributes.plan"), "{e}");

        let e = err("attributes.age >= \"x\"");
        assert_eq!(e.field, "attributes.age");
        assert!(e.message.contains("number"), "{e}");

        let e = err("name = gold");
        assert_eq!(e.field, "name");
        assert!(e.message.contains("\"gold\""), "{e}");

        let e = err("created = 2026-01-01");
        assert_eq!(e.field, "created");
        let e = err("list contains \"x\"");
        assert_eq!(e.field, "list");
        let e = err("name > 3");
        assert_eq!(e.field, "name");
        let e = err("attributes.x = 2026-13-01");
        assert!(e.message.contains("YYYY-MM-DD"), "{e}");
        let e = err("(name exists");
        assert_eq!((e.field.as_str(), e.position), ("filter", 1));
        let e = err("name exists address exists");
        assert_eq!(e.position, 13);
        let e = err("name = \"x");
        assert!(e.message.contains("not closed"), "{e}");
        let e = err("   ");
        assert!(e.message.contains("empty"), "{e}");
        let e = err("name =");
        assert_eq!(e.position, 7);
        assert!(e.to_string().starts_with("filter, `name` at character 7:"));
    }

    #[test]
    fn hostile_filters_are_bounded() {
        let deep = format!("{}name exists{}", "(".repeat(50), ")".repeat(50));
        assert!(err(&deep).message.contains("nested"));
        let nots = format!("{}name exists", "not ".repeat(50));
        assert!(err(&nots).message.contains("nested"));
        let many = vec!["name exists"; MAX_CONDITIONS + 1].join(" or ");
        assert!(err(&many).message.contains("conditions"));
        let long = format!("name = \"{}\"", "x".repeat(MAX_FILTER_CHARS));
        assert!(err(&long).message.contains("at most"));
        let values = vec!["\"a\""; MAX_IN_VALUES + 1].join(",");
        assert!(
            err(&format!("name in ({values})"))
                .message
                .contains("at most")
        );
        // Compact text whose canonical form (", " between values) is over the limit.
        let values = vec!["\"x\""; MAX_IN_VALUES].join(",");
        let compact = vec![format!("name in({values})"); 9].join(" or ");
        assert!(compact.chars().count() <= MAX_FILTER_CHARS);
        assert!(err(&compact).message.contains("written out in full"));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-zA-Z \"\\\\é]{0,8}".prop_map(Value::Text),
            (-1000i32..1000).prop_map(|n| Value::Number(f64::from(n) / 4.0)),
            Just(Value::Date("2026-01-31".into())),
        ]
    }

    fn arb_condition() -> impl Strategy<Value = Filter> {
        let field = prop_oneof![
            Just(Field::Name),
            Just(Field::Address),
            "[a-z][a-z0-9_ ]{0,6}".prop_map(Field::Attribute),
        ];
        (field, arb_value(), 0..4usize).prop_map(|(field, value, op)| {
            let text_field = !matches!(field, Field::Attribute(_));
            let value = match (&value, text_field) {
                (Value::Text(_), _) => value,
                (_, true) => Value::Text(value.to_string()),
                (Value::Date(_), false) if op != 2 => Value::Text("d".into()),
                _ => value,
            };
            let test = match op {
                0 => Test::Equals(value),
                1 => Test::In(vec![value.clone(), value]),
                2 if !text_field && !matches!(value, Value::Text(_)) => {
                    Test::Compare(Comparison::Less, value)
                }
                3 => Test::Exists,
                _ => Test::NotEquals(value),
            };
            Filter::Condition(Condition { field, test })
        })
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        arb_condition().prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Filter::Or),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
    }

    /// Flattens nested and/or the way the parser builds them.
    fn normal(f: Filter) -> Filter {
        match f {
            Filter::And(parts) => Filter::And(
                parts
                    .into_iter()
                    .map(normal)
                    .flat_map(|p| match p {
                        Filter::And(inner) => inner,
                        other => vec![other],
                    })
                    .collect(),
            ),
            Filter::Or(parts) => Filter::Or(
                parts
                    .into_iter()
                    .map(normal)
                    .flat_map(|p| match p {
                        Filter::Or(inner) => inner,
                        other => vec![other],
                    })
                    .collect(),
            ),
            Filter::Not(inner) => Filter::Not(Box::new(normal(*inner))),
            c => c,
        }
    }

    proptest! {
        /// The canonical text parses back to the same filter.
        #[test]
        fn canonical_text_round_trips(f in arb_filter()) {
            let text = f.to_string();
            let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(normal(parsed), normal(f), "{}", text);
        }

        /// Any text is answered, never a panic, and quickly bounded.
        #[test]
        fn any_text_is_parsed_or_refused(text in "[a-z0-9 .\"()<>=!,\\-]{0,80}") {
            let _ = parse(&text);
        }
    }
}
