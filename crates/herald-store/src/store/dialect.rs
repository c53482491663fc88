//! The two databases Herald runs on, and the few things said differently to each: the
//! `Dialect` methods pick the text from `sqlite.rs` or `postgres.rs`, so no entity file ever
//! asks which database it talks to. Also the database URL as shown (password hidden).

use super::{postgres, sqlite};
use crate::store::StoreError;
use sqlx::AnyPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn from_url(url: &str) -> Result<Dialect, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            Err(StoreError::Invalid(format!(
                "database URL `{}` is not supported: use sqlite://herald.db or postgres://user@host/dbname",
                redact_url(url)
            )))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// Whether every write of every instance goes through one writer at a time (SQLite's
    /// database lock), so background writes (webhook fan-out and delivery) take their time
    /// straight from message sending; PostgreSQL writes in parallel.
    pub fn one_writer(self) -> bool {
        matches!(self, Dialect::Sqlite)
    }

    pub(super) fn json_ids(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_ids(param),
            Dialect::Postgres => postgres::json_ids(param),
        }
    }

    pub(super) fn json_records(self, param: &str, columns: &[(&str, &str)]) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_records(param, columns),
            Dialect::Postgres => postgres::json_records(param, columns),
        }
    }

    /// The statement, run inside a committing transaction, that wakes other instances'
    /// dispatchers; None where there are none to wake.
    pub(super) fn notify_work_sql(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(postgres::NOTIFY_WORK),
        }
    }

    /// Forwards other instances' wake-ups to `wake` until the process ends; returns at
    /// once where there are no other instances to hear (SQLite).
    pub(super) async fn listen_for_work(self, url: &str, shown_url: &str, wake: impl Fn()) {
        match self {
            Dialect::Sqlite => {}
            Dialect::Postgres => postgres::listen_for_work(url, shown_url, wake).await,
        }
    }

    pub(super) fn lock_suffix(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::LOCK_SUFFIX,
            Dialect::Postgres => postgres::LOCK_SUFFIX,
        }
    }

    pub(super) fn share_lock_suffix(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::SHARE_LOCK_SUFFIX,
            Dialect::Postgres => postgres::SHARE_LOCK_SUFFIX,
        }
    }

    pub(super) fn counter_lock_suffix(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::COUNTER_LOCK_SUFFIX,
            Dialect::Postgres => postgres::COUNTER_LOCK_SUFFIX,
        }
    }

    /// An output column that takes the campaign gate with the campaign row lock
    /// (PostgreSQL's `SHARED_GATE_COLUMN`); nothing on SQLite, whose single writer already
    /// serialises.
    pub(super) fn campaign_gate_column(self, exclusive: bool) -> &'static str {
        match (self, exclusive) {
            (Dialect::Sqlite, true) => sqlite::EXCLUSIVE_GATE_COLUMN,
            (Dialect::Sqlite, false) => sqlite::SHARED_GATE_COLUMN,
            (Dialect::Postgres, true) => postgres::EXCLUSIVE_GATE_COLUMN,
            (Dialect::Postgres, false) => postgres::SHARED_GATE_COLUMN,
        }
    }

    /// Whether a claim picks, moves and reads its messages in one statement (a
    /// data-modifying `WITH`): PostgreSQL has those and a round trip to save per statement;
    /// SQLite has neither, and runs the three steps under its single writer.
    pub(super) fn claims_in_one_statement(self) -> bool {
        matches!(self, Dialect::Postgres)
    }

    /// Whether a statement's returned rows come back cheaply (in its one answer) rather than
    /// one by one over a channel from a database thread, as sqlx's SQLite driver sends them.
    pub(super) fn returns_rows_cheaply(self) -> bool {
        matches!(self, Dialect::Postgres)
    }

    pub(super) fn skip_locked_suffix(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::SKIP_LOCKED_SUFFIX,
            Dialect::Postgres => postgres::SKIP_LOCKED_SUFFIX,
        }
    }

    pub(super) fn migrations(self) -> &'static [(i64, &'static str, &'static str)] {
        match self {
            Dialect::Sqlite => sqlite::MIGRATIONS,
            Dialect::Postgres => postgres::MIGRATIONS,
        }
    }

    /// What binds a segment filter's attribute name (docs/SEGMENTS.md).
    pub(super) fn attribute_key(self, key: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::attribute_key(key),
            Dialect::Postgres => postgres::attribute_key(key),
        }
    }

    /// Contact `c`'s attribute, named by the parameter `key`, as text.
    pub(super) fn attribute_text(self, key: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::attribute_text(key),
            Dialect::Postgres => postgres::attribute_text(key),
        }
    }

    /// Contact `c`'s attribute, named by the parameter `key`, as a number.
    pub(super) fn attribute_number(self, key: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::attribute_number(key),
            Dialect::Postgres => postgres::attribute_number(key),
        }
    }

    /// The `YYYY-MM-DD` a text starts with, else NULL.
    pub(super) fn date_prefix(self, text: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::date_prefix(text),
            Dialect::Postgres => postgres::date_prefix(text),
        }
    }

    /// A text with its ASCII letters lowered, the same on both databases.
    pub(super) fn ascii_lower(self, text: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::ascii_lower(text),
            Dialect::Postgres => postgres::ascii_lower(text),
        }
    }

    /// The texts of the JSON array bound at `param`, as a subquery (`IN …`).
    pub(super) fn json_texts(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_texts(param),
            Dialect::Postgres => postgres::json_texts(param),
        }
    }

    /// The size in bytes of a TEXT column's value, as an SQL expression.
    pub(super) fn text_bytes(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::text_bytes(column),
            Dialect::Postgres => postgres::text_bytes(column),
        }
    }

    /// How a write transaction begins.
    pub(super) fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::BEGIN_WRITE,
            Dialect::Postgres => postgres::BEGIN_WRITE,
        }
    }

    /// What serialises migrations between processes, if anything must.
    pub(super) fn migration_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => sqlite::MIGRATION_LOCK,
            Dialect::Postgres => postgres::MIGRATION_LOCK,
        }
    }

    /// The statement that serializes webhook fan-out between instances in a transaction
    /// (none on SQLite, whose one writer already does).
    pub(super) fn fan_out_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => sqlite::FAN_OUT_LOCK,
            Dialect::Postgres => postgres::FAN_OUT_LOCK,
        }
    }

    /// The statement that serializes webhook claims between instances in a transaction
    /// (none on SQLite).
    pub(super) fn webhook_claim_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => sqlite::WEBHOOK_CLAIM_LOCK,
            Dialect::Postgres => postgres::WEBHOOK_CLAIM_LOCK,
        }
    }

    /// `count(*)` of tables named `herald_migrations` (0 or 1).
    pub(super) fn migrations_table_count(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::MIGRATIONS_TABLE_COUNT,
            Dialect::Postgres => postgres::MIGRATIONS_TABLE_COUNT,
        }
    }

    /// The attribute keys of a list's contacts.
    pub(super) fn attribute_keys(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::ATTRIBUTE_KEYS,
            Dialect::Postgres => postgres::ATTRIBUTE_KEYS,
        }
    }

    /// The attribute keys of a segment's contacts (`$1` org, `$2` size bound).
    pub(super) fn attribute_keys_where(self, condition: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::attribute_keys_where(condition),
            Dialect::Postgres => postgres::attribute_keys_where(condition),
        }
    }

    /// The statements that seed `n` contacts and their list memberships (bench, tests).
    /// The query for whether the server vacuums on its own (one text row, `on` or `off`);
    /// None where there is no server to ask (SQLite).
    pub(super) fn autovacuum_setting(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(postgres::AUTOVACUUM_SETTING),
        }
    }

    pub(super) fn seed_contacts(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Sqlite => (sqlite::SEED_CONTACTS, sqlite::SEED_MEMBERS),
            Dialect::Postgres => (postgres::SEED_CONTACTS, postgres::SEED_MEMBERS),
        }
    }

    /// A JSON object built by the database from `members` (`'key', value, …`), as a
    /// value to nest in another object.
    pub(super) fn json_object(self, members: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_object(members),
            Dialect::Postgres => postgres::json_object(members),
        }
    }

    /// The same, as text (what a TEXT column stores).
    pub(super) fn json_object_text(self, members: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_object(members),
            Dialect::Postgres => format!("CAST({} AS TEXT)", postgres::json_object(members)),
        }
    }

    pub(super) async fn connect(self, url: &str) -> Result<(AnyPool, AnyPool), StoreError> {
        match self {
            Dialect::Sqlite => sqlite::connect(url).await,
            Dialect::Postgres => postgres::connect(url).await,
        }
    }
}

/// Hides the password of a database URL before it is shown or logged.
pub fn redact_url(url: &str) -> String {
    let hidden = match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    };
    // A password may also come as a query parameter (`?password=…`).
    match hidden.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => hidden,
    }
}
