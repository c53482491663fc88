//! The storage interface: everything Herald knows lives here, and every decision is a
//! conditional write whose `WHERE` clause states its precondition (docs/DESIGN.md invariant 1).
//!
//! One `Store` type serves both databases through sqlx's `Any` driver: the SQL is shared,
//! and the few places where the dialects differ (connection setup, row locks, JSON table
//! functions, bulk seeding) live in `sqlite.rs` and `postgres.rs`. The engine above never
//! knows which one it talks to. Timestamps are integer milliseconds since the epoch.

mod accounts;
pub mod alerts;
pub mod autopause;
mod campaign_order;
mod campaigns_admin;
pub mod channels_admin;
pub mod directory;
mod failures;
pub mod outage;
mod outbox;
mod outcomes;
mod postgres;
mod sqlite;
mod stuck;
mod types;
pub mod webhook_deliveries;
pub mod webhook_endpoints;

pub use accounts::{
    ApiKeyInfo, IdempotencyState, SessionInfo, StoredResponse, UserCredentials, UserInfo,
};
pub use outbox::{InboundMessage, OptSource, OutboxEvent};
pub use outcomes::{ThroughputMinute, minute_of};
pub use types::*;

use crate::domain::{CampaignAction, CampaignOutcome, CampaignStatus, Counts, MessageStatus};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A write transaction that remembers the campaign events it recorded and logs them only
/// once the commit succeeded, so the log never tells of a change that was rolled back.
struct Tx {
    inner: Transaction<'static, Any>,
    events: Vec<(i64, String, Option<CampaignStatus>, CampaignStatus, String)>,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Tx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await?;
        for (campaign_id, actor, from, to, reason) in self.events {
            tracing::info!(
                campaign_id = %crate::ids::CampaignId(campaign_id),
                actor,
                from = from.map(|s| s.as_str()),
                to = to.as_str(),
                reason,
                "campaign event"
            );
        }
        Ok(())
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

pub(crate) fn sql_str(s: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(s.to_string())
}

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

    fn json_ids(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_ids(param),
            Dialect::Postgres => postgres::json_ids(param),
        }
    }

    fn json_records(self, param: &str, columns: &[(&str, &str)]) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_records(param, columns),
            Dialect::Postgres => postgres::json_records(param, columns),
        }
    }

    fn lock_suffix(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::LOCK_SUFFIX,
            Dialect::Postgres => postgres::LOCK_SUFFIX,
        }
    }

    fn skip_locked_suffix(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::SKIP_LOCKED_SUFFIX,
            Dialect::Postgres => postgres::SKIP_LOCKED_SUFFIX,
        }
    }

    fn migrations(self) -> &'static [(i64, &'static str, &'static str)] {
        match self {
            Dialect::Sqlite => sqlite::MIGRATIONS,
            Dialect::Postgres => postgres::MIGRATIONS,
        }
    }

    /// The texts of the JSON array bound at `param`, as a subquery (`IN …`).
    fn json_texts(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_texts(param),
            Dialect::Postgres => postgres::json_texts(param),
        }
    }

    /// How a write transaction begins.
    fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::BEGIN_WRITE,
            Dialect::Postgres => postgres::BEGIN_WRITE,
        }
    }

    /// What serialises migrations between processes, if anything must.
    fn migration_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => sqlite::MIGRATION_LOCK,
            Dialect::Postgres => postgres::MIGRATION_LOCK,
        }
    }

    /// `count(*)` of tables named `herald_migrations` (0 or 1).
    fn migrations_table_count(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::MIGRATIONS_TABLE_COUNT,
            Dialect::Postgres => postgres::MIGRATIONS_TABLE_COUNT,
        }
    }

    /// The attribute keys of a list's contacts.
    fn attribute_keys(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::ATTRIBUTE_KEYS,
            Dialect::Postgres => postgres::ATTRIBUTE_KEYS,
        }
    }

    /// The statements that seed `n` contacts and their list memberships (bench, tests).
    fn seed_contacts(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Sqlite => (sqlite::SEED_CONTACTS, sqlite::SEED_MEMBERS),
            Dialect::Postgres => (postgres::SEED_CONTACTS, postgres::SEED_MEMBERS),
        }
    }

    /// A JSON object built by the database from `members` (`'key', value, …`), as a
    /// value to nest in another object.
    fn json_object(self, members: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_object(members),
            Dialect::Postgres => postgres::json_object(members),
        }
    }

    /// The same, as text (what a TEXT column stores).
    fn json_object_text(self, members: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite::json_object(members),
            Dialect::Postgres => format!("CAST({} AS TEXT)", postgres::json_object(members)),
        }
    }

    async fn connect(self, url: &str) -> Result<(AnyPool, AnyPool), StoreError> {
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

#[derive(Clone)]
pub struct Store {
    write: AnyPool,
    read: AnyPool,
    dialect: Dialect,
    url: String,
}

/// How long a receipt for an unknown provider id is kept waiting for its message.
const KEPT_RECEIPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// The pending messages of campaign `$1`, as one query per partial index (a single
/// `status IN (…4 statuses…)` matches none of them and scans the whole table).
const PENDING_ROWS: &str = "SELECT status FROM messages WHERE campaign_id = $1 AND status IN ('queued','retry_wait') \
     UNION ALL SELECT status FROM messages WHERE campaign_id = $1 AND status = 'in_flight' \
     UNION ALL SELECT status FROM messages WHERE campaign_id = $1 AND status = 'in_doubt'";

/// True for a campaign `c` with no pending message, index by index.
const NOTHING_PENDING: &str = "NOT EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = c.id AND m.status IN ('queued','retry_wait')) \
     AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = c.id AND m.status = 'in_flight') \
     AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = c.id AND m.status = 'in_doubt')";

/// Text from outside (provider errors, ids) without control characters: PostgreSQL refuses
/// NUL in text and JSON, and a log line should stay one line.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

fn ids_json(ids: impl IntoIterator<Item = i64>) -> String {
    let v: Vec<i64> = ids.into_iter().collect();
    serde_json::Value::from(v).to_string()
}

fn status_of(row: &AnyRow, col: &str) -> Result<MessageStatus, StoreError> {
    let s: String = row.try_get(col)?;
    MessageStatus::parse(&s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown message status `{s}`")))
}

/// Counts from `SELECT status, count(*) AS n … GROUP BY status` rows.
fn counts_from_rows(rows: &[AnyRow]) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    for r in rows {
        counts.add(status_of(r, "status")?, r.try_get("n")?);
    }
    Ok(counts)
}

fn campaign_status_of(row: &AnyRow, col: &str) -> Result<CampaignStatus, StoreError> {
    let s: String = row.try_get(col)?;
    CampaignStatus::parse(&s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown campaign status `{s}`")))
}

const CAMPAIGN_COLUMNS: &str = "c.id, c.org_id, c.name, c.channel_id, ch.name AS channel_name, ch.kind AS channel_kind, \
     c.list_id, l.name AS list_name, c.body, c.status, c.scheduled_at, c.created_at, c.started_at, \
     c.completed_at, c.last_progress_at, c.total, c.queued, c.in_flight, c.retry_wait, c.sent, \
     c.delivered, c.read, c.undelivered, c.failed, c.skipped, c.cancelled, c.in_doubt, c.in_doubt_total, c.outcome, \
     c.auto_pause_percent, c.auto_pause_window, \
     (SELECT org.auto_pause_percent FROM organisations org WHERE org.id = c.org_id) AS org_auto_pause_percent, \
     (SELECT org.auto_pause_window FROM organisations org WHERE org.id = c.org_id) AS org_auto_pause_window";
const CAMPAIGN_FROM: &str =
    "FROM campaigns c JOIN channels ch ON ch.id = c.channel_id JOIN lists l ON l.id = c.list_id";

fn list_from_row(row: &AnyRow) -> Result<ListInfo, StoreError> {
    Ok(ListInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        members: row.try_get("members")?,
    })
}

pub(super) fn event_from_row(r: &AnyRow) -> Result<CampaignEvent, StoreError> {
    Ok(CampaignEvent {
        id: r.try_get("id")?,
        campaign_id: r.try_get("campaign_id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        from_status: r.try_get("from_status")?,
        to_status: r.try_get("to_status")?,
        reason: r.try_get("reason")?,
    })
}

pub(super) fn message_from_row(r: &AnyRow) -> Result<MessageInfo, StoreError> {
    Ok(MessageInfo {
        id: r.try_get("id")?,
        campaign_id: r.try_get("campaign_id")?,
        address: r.try_get("address")?,
        status: status_of(r, "status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        owner: r.try_get("owner")?,
        provider_id: r.try_get("provider_id")?,
        last_error: r.try_get("last_error")?,
        was_in_doubt: r.try_get::<i64, _>("was_in_doubt")? != 0,
        updated_at: r.try_get("updated_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

fn campaign_from_row(row: &AnyRow) -> Result<Campaign, StoreError> {
    let mut counts = Counts::default();
    for s in MessageStatus::ALL {
        counts.add(s, row.try_get::<i64, _>(s.as_str())?);
    }
    Ok(Campaign {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        channel_id: row.try_get("channel_id")?,
        channel_name: row.try_get("channel_name")?,
        channel_kind: row.try_get("channel_kind")?,
        list_id: row.try_get("list_id")?,
        list_name: row.try_get("list_name")?,
        body: row.try_get("body")?,
        status: campaign_status_of(row, "status")?,
        scheduled_at: row.try_get("scheduled_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        last_progress_at: row.try_get("last_progress_at")?,
        total: row.try_get("total")?,
        counts,
        in_doubt_total: row.try_get("in_doubt_total")?,
        auto_pause: autopause::setting_from_row(row)?,
        outcome: match row.try_get::<Option<String>, _>("outcome")? {
            None => None,
            Some(s) => {
                Some(CampaignOutcome::parse(&s).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown campaign outcome `{s}`"))
                })?)
            }
        },
    })
}

/// `SET queued = queued + $1, ...` for a counter delta; the parameters start at `$first`.
fn counter_update_sql(first: usize) -> String {
    let sets: Vec<String> = MessageStatus::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{0} = {0} + ${1}", s.as_str(), first + i))
        .collect();
    sets.join(", ")
}

impl Store {
    /// Connects to `sqlite://…` or `postgres://…`. Does not migrate.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let dialect = Dialect::from_url(url)?;
        let (write, read) = dialect.connect(url).await?;
        Ok(Store {
            write,
            read,
            dialect,
            url: redact_url(url),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL with any password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        let inner = self.write.begin_with(self.dialect.begin_write()).await?;
        Ok(Tx {
            inner,
            events: Vec::new(),
        })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Migrations
    // ----------------------------------------------------------------------------------

    /// Applies the embedded migrations not applied yet, each in its own transaction.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let mut applied_now = Vec::new();
        for (version, name, sql) in self.dialect.migrations() {
            let mut tx = self.begin().await?;
            if let Some(lock) = self.dialect.migration_lock() {
                sqlx::raw_sql(sql_str(lock)).execute(&mut *tx).await?;
            }
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS herald_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM herald_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                tx.rollback().await?;
                continue;
            }
            sqlx::raw_sql(sql_str(sql)).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO herald_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(*version)
            .bind(*name)
            .bind(crate::clock::now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            applied_now.push(*version);
        }
        Ok(applied_now)
    }

    /// Which embedded migrations are applied, and which are missing.
    pub async fn migration_status(&self) -> Result<MigrationStatus, StoreError> {
        let expected: Vec<i64> = self.dialect.migrations().iter().map(|m| m.0).collect();
        let table_exists = sqlx::query_scalar::<_, i64>(self.dialect.migrations_table_count())
            .fetch_one(&self.read)
            .await?
            > 0;
        let applied: Vec<i64> = if table_exists {
            sqlx::query_scalar("SELECT version FROM herald_migrations ORDER BY version")
                .fetch_all(&self.read)
                .await?
        } else {
            Vec::new()
        };
        let missing = expected
            .iter()
            .copied()
            .filter(|v| !applied.contains(v))
            .collect();
        let unknown = applied
            .iter()
            .copied()
            .filter(|v| !expected.contains(v))
            .collect();
        Ok(MigrationStatus {
            applied,
            missing,
            unknown,
        })
    }

    /// Fails with a clear message when the schema is not at this binary's version.
    pub async fn require_migrated(&self) -> Result<(), StoreError> {
        let status = self.migration_status().await?;
        if !status.missing.is_empty() {
            return Err(StoreError::Invalid(format!(
                "the database at {} is not migrated (missing migrations {:?}): run `herald migrate` first",
                self.url, status.missing
            )));
        }
        if !status.unknown.is_empty() {
            return Err(StoreError::Invalid(format!(
                "the database at {} has migrations {:?} that this herald binary does not know: upgrade herald",
                self.url, status.unknown
            )));
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Organisations, lists, contacts, suppressions
    // ----------------------------------------------------------------------------------

    pub async fn organisation_by_name(&self, name: &str) -> Result<Organisation, StoreError> {
        let row = sqlx::query("SELECT id, name FROM organisations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("organisation `{name}` does not exist")))?;
        Ok(Organisation {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
        })
    }

    pub async fn default_org(&self) -> Result<i64, StoreError> {
        Ok(self.organisation_by_name("default").await?.id)
    }

    pub async fn create_organisation(&self, name: &str) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO organisations (name, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(name)
        .bind(crate::clock::now_ms())
        .fetch_one(&self.write)
        .await
        .map_err(|e| {
            StoreError::from_unique(e, || {
                format!("an organisation named `{name}` already exists")
            })
        })?;
        Ok(id)
    }

    /// Returns the list's id, creating it if needed.
    pub async fn ensure_list(&self, org_id: i64, name: &str) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO lists (org_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (org_id, name) DO NOTHING",
        )
        .bind(org_id)
        .bind(name)
        .bind(crate::clock::now_ms())
        .execute(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM lists WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn list_by_name(&self, org_id: i64, name: &str) -> Result<ListInfo, StoreError> {
        let row = sqlx::query(
            "SELECT l.id, l.name, (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS members \
             FROM lists l WHERE l.org_id = $1 AND l.name = $2",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "list `{name}` does not exist: import contacts into it first with `herald contacts import FILE.csv --list {name}`"
            ))
        })?;
        list_from_row(&row)
    }

    pub async fn lists(&self, org_id: i64) -> Result<Vec<ListInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT l.id, l.name, (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS members \
             FROM lists l WHERE l.org_id = $1 ORDER BY l.name",
        )
        .bind(org_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(list_from_row).collect()
    }

    /// Inserts or updates a batch of contacts (by address) and adds them to the list, in one
    /// transaction. Reports how many were new and how many existed.
    pub async fn upsert_contacts(
        &self,
        org_id: i64,
        list_id: i64,
        contacts: &[ContactInput],
    ) -> Result<UpsertReport, StoreError> {
        if contacts.is_empty() {
            return Ok(UpsertReport::default());
        }
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let addresses = serde_json::Value::from(
            contacts
                .iter()
                .map(|c| c.address.clone())
                .collect::<Vec<_>>(),
        )
        .to_string();
        let existing_sql = format!(
            "SELECT address FROM contacts WHERE org_id = $1 AND address IN {}",
            self.dialect.json_texts("$2")
        );
        let mut existing: BTreeSet<String> = sqlx::query_scalar(AssertSqlSafe(existing_sql))
            .bind(org_id)
            .bind(&addresses)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let mut report = UpsertReport::default();
        for c in contacts {
            // A later row of the same file for the same address counts as an update.
            if existing.insert(c.address.clone()) {
                report.inserted += 1;
            } else {
                report.updated += 1;
            }
        }
        // Later duplicates in one batch win; ON CONFLICT cannot touch a row twice in one
        // statement on PostgreSQL, so each contact is its own statement.
        for c in contacts {
            sqlx::query(
                "INSERT INTO contacts (org_id, address, name, attributes, unsubscribed, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, COALESCE($5, 0), $6, $6) \
                 ON CONFLICT (org_id, address) DO UPDATE SET \
                   name = COALESCE(excluded.name, contacts.name), attributes = excluded.attributes, \
                   unsubscribed = CASE WHEN $5 IS NULL THEN contacts.unsubscribed ELSE excluded.unsubscribed END, \
                   updated_at = excluded.updated_at",
            )
            .bind(org_id)
            .bind(&c.address)
            .bind(c.name.as_deref())
            .bind(serde_json::Value::Object(c.attributes.clone()).to_string())
            .bind(c.unsubscribed.map(i64::from))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let members_sql = format!(
            "INSERT INTO list_members (list_id, contact_id, added_at) \
             SELECT $1, c.id, $3 FROM contacts c WHERE c.org_id = $4 AND c.address IN {} \
             ON CONFLICT (list_id, contact_id) DO NOTHING",
            self.dialect.json_texts("$2")
        );
        sqlx::query(AssertSqlSafe(members_sql))
            .bind(list_id)
            .bind(&addresses)
            .bind(now)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Attribute keys present on at least one contact of the list. Attributes too large
    /// to read (rows from before the contact rules, see
    /// `directory::bounded_contact_fields`) are not parsed: templates never see them.
    pub async fn list_attribute_keys(&self, list_id: i64) -> Result<BTreeSet<String>, StoreError> {
        let sql = self.dialect.attribute_keys();
        let keys: Vec<String> = sqlx::query_scalar(sql)
            .bind(list_id)
            .bind(crate::contact_rules::MAX_READ_ATTRIBUTES_BYTES as i64)
            .fetch_all(&self.read)
            .await?;
        Ok(keys.into_iter().collect())
    }

    /// Suppresses an address unless it already is; a new suppression writes
    /// `contact.unsubscribed` (saying how, `via`) in the same transaction. True when new.
    pub async fn suppress(
        &self,
        org_id: i64,
        address: &str,
        reason: &str,
        via: &OptSource<'_>,
    ) -> Result<bool, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "INSERT INTO suppressions (org_id, address, reason, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, address) DO NOTHING",
        )
        .bind(org_id)
        .bind(address)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        outbox::emit_contact_change(&mut tx, org_id, address, true, via, Some(reason), now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes an address from the suppression list (an inbound START, the API); a removal
    /// writes `contact.resubscribed` in the same transaction. True when it was suppressed.
    pub async fn unsuppress(
        &self,
        org_id: i64,
        address: &str,
        via: &OptSource<'_>,
    ) -> Result<bool, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let r = sqlx::query("DELETE FROM suppressions WHERE org_id = $1 AND address = $2")
            .bind(org_id)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        outbox::emit_contact_change(&mut tx, org_id, address, false, via, None, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn is_suppressed(&self, org_id: i64, address: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM suppressions WHERE org_id = $1 AND address = $2",
        )
        .bind(org_id)
        .bind(address)
        .fetch_one(&self.read)
        .await?;
        Ok(n > 0)
    }

    /// The organisation and address a message went to.
    pub async fn message_recipient(
        &self,
        message_id: i64,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT c.org_id, m.address FROM messages m JOIN campaigns c ON c.id = m.campaign_id WHERE m.id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| Ok((r.try_get("org_id")?, r.try_get("address")?)))
            .transpose()
    }

    /// Keeps a provider webhook as it arrived and, in the same transaction, reports each
    /// inbound message it carried as `message.inbound`, once per provider message id (a
    /// provider's retry of a message already reported writes no second event). Returns how
    /// many events it wrote.
    pub async fn record_webhook_with_inbound(
        &self,
        channel_id: i64,
        kind: &str,
        outcome: &str,
        body: &str,
        inbound: &[InboundMessage],
    ) -> Result<usize, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_events (channel_id, kind, verified, outcome, body, received_at) VALUES ($1, $2, 1, $3, $4, $5)",
        )
        .bind(channel_id)
        .bind(kind)
        .bind(outcome)
        .bind(body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut written = 0;
        if !inbound.is_empty() {
            let org_id: i64 = sqlx::query_scalar("SELECT org_id FROM channels WHERE id = $1")
                .bind(channel_id)
                .fetch_one(&mut *tx)
                .await?;
            for m in inbound {
                if let Some(pid) = &m.provider_message_id {
                    let new = sqlx::query(
                        "INSERT INTO inbound_messages (channel_id, provider_message_id, received_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (channel_id, provider_message_id) DO NOTHING",
                    )
                    .bind(channel_id)
                    .bind(clean(pid))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if new == 0 {
                        continue;
                    }
                }
                outbox::emit_inbound(&mut tx, org_id, channel_id, m, now).await?;
                written += 1;
            }
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Keeps a provider webhook as it arrived.
    pub async fn record_webhook_event(
        &self,
        channel_id: i64,
        kind: &str,
        verified: bool,
        outcome: &str,
        body: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO webhook_events (channel_id, kind, verified, outcome, body, received_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(channel_id)
        .bind(kind)
        .bind(i64::from(verified))
        .bind(outcome)
        .bind(body)
        .bind(crate::clock::now_ms())
        .fetch_one(&self.write)
        .await?)
    }

    /// Deletes webhook records received before `before`, oldest first, `batch` rows per
    /// statement and at most `max_batches` statements: each statement is its own short
    /// transaction, so a large backlog never holds the write lock for long. Returns how
    /// many were deleted.
    pub async fn delete_webhook_events_before(
        &self,
        before: i64,
        batch: i64,
        max_batches: usize,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        // The inbound dedup keys live as long as the webhook records that carried them.
        sqlx::query(
            "DELETE FROM inbound_messages WHERE received_at < $1 AND (channel_id, provider_message_id) IN \
             (SELECT channel_id, provider_message_id FROM inbound_messages WHERE received_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(batch)
        .execute(&self.write)
        .await?;
        for _ in 0..max_batches {
            let n = sqlx::query(
                "DELETE FROM webhook_events WHERE id IN \
                 (SELECT id FROM webhook_events WHERE received_at < $1 ORDER BY received_at, id LIMIT $2)",
            )
            .bind(before)
            .bind(batch)
            .execute(&self.write)
            .await?
            .rows_affected();
            deleted += n;
            if n < u64::try_from(batch).unwrap_or(0) {
                break;
            }
        }
        Ok(deleted)
    }

    /// Synthetic contacts `+12000000001…` for `herald bench`, added to the list in bulk.
    pub async fn seed_contacts(&self, org_id: i64, list_id: i64, n: i64) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        let (contacts, members) = self.dialect.seed_contacts();
        let mut tx = self.begin().await?;
        sqlx::query(contacts)
            .bind(org_id)
            .bind(n)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(members)
            .bind(list_id)
            .bind(org_id)
            .bind(n)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Channels
    // ----------------------------------------------------------------------------------

    pub async fn create_channel(
        &self,
        org_id: i64,
        name: &str,
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        self.create_channel_with(org_id, name, kind, config, None, None)
            .await
    }

    /// Creates a channel with sealed credentials and an optional rate limit, in one
    /// transaction (the seal binds the new channel's id, so it is written after the insert).
    pub async fn create_channel_with(
        &self,
        org_id: i64,
        name: &str,
        kind: &str,
        config: &serde_json::Value,
        secrets: Option<(&crate::secrets::SecretKey, &serde_json::Value)>,
        rate_per_sec: Option<f64>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO channels (org_id, name, kind, config, rate_per_sec, created_at) \
             VALUES ($1, $2, $3, $4, CASE WHEN $7 = 1 THEN $5 END, $6) RETURNING id",
        )
        .bind(org_id)
        .bind(name)
        .bind(kind)
        .bind(config.to_string())
        // Never a NULL f64 bind: see `channels_admin::update_org_channel`.
        .bind(rate_per_sec.unwrap_or(0.0))
        .bind(crate::clock::now_ms())
        .bind(i64::from(rate_per_sec.is_some()))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            StoreError::from_unique(e, || {
                format!("a channel named `{name}` already exists: pick another --name")
            })
        })?;
        if let Some((key, values)) = secrets {
            let sealed = crate::secrets::seal(key, id, values)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            sqlx::query("UPDATE channels SET secrets = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    fn channel_from_row(row: &AnyRow) -> Result<ChannelInfo, StoreError> {
        let config: String = row.try_get("config")?;
        Ok(ChannelInfo {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            config: serde_json::from_str(&config)
                .map_err(|e| StoreError::Corrupt(format!("channel config is not JSON: {e}")))?,
            secrets: row.try_get("secrets")?,
            rate_per_sec: row.try_get("rate_per_sec")?,
            created_at: row.try_get("created_at")?,
        })
    }

    pub async fn channels(&self, org_id: i64) -> Result<Vec<ChannelInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_id, name, kind, config, secrets, rate_per_sec, created_at FROM channels WHERE org_id = $1 ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(Self::channel_from_row).collect()
    }

    pub async fn channel(&self, id: i64) -> Result<ChannelInfo, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, name, kind, config, secrets, rate_per_sec, created_at FROM channels WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("channel {} does not exist", crate::ids::ChannelId(id))))?;
        Self::channel_from_row(&row)
    }

    pub async fn channel_by_name(
        &self,
        org_id: i64,
        name: &str,
    ) -> Result<ChannelInfo, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, name, kind, config, secrets, rate_per_sec, created_at FROM channels WHERE org_id = $1 AND name = $2",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "channel `{name}` does not exist: `herald channel list` shows the channels there are"
            ))
        })?;
        Self::channel_from_row(&row)
    }

    // ----------------------------------------------------------------------------------
    // Campaigns
    // ----------------------------------------------------------------------------------

    pub async fn create_campaign(&self, new: &NewCampaign, actor: &str) -> Result<i64, StoreError> {
        let now = crate::clock::now_ms();
        let status = if new.scheduled_at.is_some() {
            CampaignStatus::Scheduled
        } else {
            CampaignStatus::Draft
        };
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO campaigns (org_id, name, channel_id, list_id, body, status, scheduled_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(new.org_id)
        .bind(&new.name)
        .bind(new.channel_id)
        .bind(new.list_id)
        .bind(&new.body)
        .bind(status.as_str())
        .bind(new.scheduled_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            // The list or channel was deleted between the caller's check and this insert.
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::Invalid(
                "the campaign's list or channel no longer exists: pick another".into(),
            ),
            _ => StoreError::Database(e),
        })?;
        let reason = match new.scheduled_at {
            Some(at) => format!("created, scheduled for {}", crate::clock::rfc3339(at)),
            None => "created".to_string(),
        };
        insert_event(&mut tx, id, now, actor, None, status, &reason).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn campaign(&self, id: i64) -> Result<Campaign, StoreError> {
        let sql = format!("SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "campaign {} does not exist: `herald campaign list` shows the campaigns there are",
                    crate::ids::CampaignId(id)
                ))
            })?;
        campaign_from_row(&row)
    }

    pub async fn campaigns(&self, org_id: i64) -> Result<Vec<Campaign>, StoreError> {
        let sql =
            format!("SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.org_id = $1 ORDER BY c.id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    pub async fn campaigns_with_status(
        &self,
        statuses: &[CampaignStatus],
    ) -> Result<Vec<Campaign>, StoreError> {
        let list: Vec<String> = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS} {CAMPAIGN_FROM} WHERE c.status IN ({}) ORDER BY c.id",
            list.join(",")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    /// Per campaign status: how many campaigns, their pending and in-doubt messages (one
    /// aggregate query, for the metrics gauges).
    pub async fn campaign_gauges(
        &self,
    ) -> Result<Vec<(CampaignStatus, i64, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, count(*) AS campaigns, \
             CAST(COALESCE(sum(queued + in_flight + retry_wait + in_doubt), 0) AS BIGINT) AS pending, \
             CAST(COALESCE(sum(in_doubt), 0) AS BIGINT) AS in_doubt FROM campaigns GROUP BY status",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    campaign_status_of(r, "status")?,
                    r.try_get("campaigns")?,
                    r.try_get("pending")?,
                    r.try_get("in_doubt")?,
                ))
            })
            .collect()
    }

    /// Campaigns still running, or that ended after `ended_since`: the ones worth recounting.
    pub async fn campaigns_to_check(&self, ended_since: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM campaigns WHERE status NOT IN ('completed', 'cancelled') OR completed_at >= $1 ORDER BY id",
        )
        .bind(ended_since)
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn events(&self, campaign_id: i64) -> Result<Vec<CampaignEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, campaign_id, at, actor, from_status, to_status, reason FROM campaign_events WHERE campaign_id = $1 ORDER BY id",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// A `GROUP BY status` over the campaign's messages: the truth the counters must equal.
    pub async fn recount(&self, campaign_id: i64) -> Result<Counts, StoreError> {
        let rows = sqlx::query(
            "SELECT status, count(*) AS n FROM messages WHERE campaign_id = $1 GROUP BY status",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?;
        counts_from_rows(&rows)
    }

    /// Messages of a campaign found in doubt at any time (so the bound on duplicates).
    pub async fn messages(
        &self,
        campaign_id: i64,
        status: Option<MessageStatus>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<MessageInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, campaign_id, address, status, attempts, next_attempt_at, owner, provider_id, last_error, was_in_doubt, updated_at, sent_at \
             FROM messages WHERE campaign_id = $1 AND ($2 = '' OR status = $2) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(campaign_id)
        .bind(status.map(|s| s.as_str()).unwrap_or(""))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Locks the given campaigns (in id order, so lock order is the same everywhere) and
    /// returns their statuses.
    async fn lock_campaigns(
        &self,
        tx: &mut Tx,
        ids: &BTreeSet<i64>,
    ) -> Result<HashMap<i64, CampaignStatus>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT id, status FROM campaigns WHERE id IN {} ORDER BY id{}",
            self.dialect.json_ids("$1"),
            self.dialect.lock_suffix()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ids_json(ids.iter().copied()))
            .fetch_all(&mut **tx)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, campaign_status_of(r, "status")?)))
            .collect()
    }

    async fn lock_campaign(&self, tx: &mut Tx, id: i64) -> Result<CampaignStatus, StoreError> {
        let ids = BTreeSet::from([id]);
        self.lock_campaigns(tx, &ids)
            .await?
            .remove(&id)
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "campaign {} does not exist: `herald campaign list` shows the campaigns there are",
                    crate::ids::CampaignId(id)
                ))
            })
    }

    async fn apply_counts(
        &self,
        tx: &mut Tx,
        campaign_id: i64,
        delta: &Counts,
        in_doubt_total: i64,
        progress_at: Option<i64>,
    ) -> Result<(), StoreError> {
        if delta.is_zero() && in_doubt_total == 0 && progress_at.is_none() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE campaigns SET {}, in_doubt_total = in_doubt_total + $12, \
             last_progress_at = COALESCE($13, last_progress_at) WHERE id = $14",
            counter_update_sql(1)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for s in MessageStatus::ALL {
            q = q.bind(delta.get(s));
        }
        q.bind(in_doubt_total)
            .bind(progress_at)
            .bind(campaign_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Completes the campaign if it is sending and its counters show nothing pending. Runs
    /// inside the transaction that recorded the last outcome (docs/DESIGN.md invariant 4).
    async fn complete_if_drained(
        &self,
        tx: &mut Tx,
        campaign_id: i64,
        now: i64,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE campaigns SET status = 'completed', completed_at = $1 \
             WHERE id = $2 AND status = 'sending' AND queued = 0 AND in_flight = 0 AND retry_wait = 0 AND in_doubt = 0",
        )
        .bind(now)
        .bind(campaign_id)
        .execute(&mut **tx)
        .await?;
        if r.rows_affected() == 1 {
            self.settle_outcome(tx, campaign_id).await?;
            insert_event(
                tx,
                campaign_id,
                now,
                actor,
                Some(CampaignStatus::Sending),
                CampaignStatus::Completed,
                reason,
            )
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Starts a draft or scheduled campaign: in one transaction, moves it to `sending` and
    /// creates one message per distinct address of its list (docs/DESIGN.md invariant 2).
    /// `due_at` set means "only if scheduled and due by then" (the scheduler's call).
    pub async fn start_campaign(
        &self,
        id: i64,
        now: i64,
        actor: &str,
        due_at: Option<i64>,
    ) -> Result<StartOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let from = self.lock_campaign(&mut tx, id).await?;
        let row = sqlx::query(
            "SELECT c.list_id, c.org_id, c.scheduled_at, ch.kind, ch.name AS channel_name FROM campaigns c JOIN channels ch ON ch.id = c.channel_id WHERE c.id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let list_id: i64 = row.try_get("list_id")?;
        let org_id: i64 = row.try_get("org_id")?;
        let scheduled_at: Option<i64> = row.try_get("scheduled_at")?;
        let kind: String = row.try_get("kind")?;
        let channel_name: String = row.try_get("channel_name")?;
        if let Some(due) = due_at {
            if from != CampaignStatus::Scheduled || scheduled_at.is_none_or(|at| at > due) {
                tx.rollback().await?;
                return Ok(StartOutcome::NotDue);
            }
        } else if !CampaignAction::Start.allowed_from().contains(&from) {
            tx.rollback().await?;
            return Err(illegal(id, from, CampaignAction::Start));
        }
        let required = crate::channel_kind::address_requirement(&kind);
        let mismatch_reason = match required {
            Some(crate::address::AddressKind::Phone) => {
                format!("not a phone number: channel `{channel_name}` sends to phones")
            }
            Some(crate::address::AddressKind::Email) => {
                format!("not an email address: channel `{channel_name}` sends email")
            }
            None => String::new(),
        };
        let required_str = required.map(|k| k.as_str()).unwrap_or("any");
        // One row per distinct address (contacts are unique per organisation and address;
        // the unique index is the backstop). Unsubscribed, suppressed and unusable
        // addresses are frozen as `skipped` with the reason.
        let inserted = sqlx::query(
            "INSERT INTO messages (campaign_id, contact_id, address, status, last_error, next_attempt_at, updated_at) \
             SELECT $1, c.id, c.address, \
               CASE WHEN c.unsubscribed <> 0 OR s.address IS NOT NULL \
                      OR ($2 = 'phone' AND c.address NOT LIKE '+%') OR ($2 = 'email' AND c.address NOT LIKE '%@%') \
                    THEN 'skipped' ELSE 'queued' END, \
               CASE WHEN c.unsubscribed <> 0 THEN 'unsubscribed' \
                    WHEN s.address IS NOT NULL THEN 'suppressed: ' || s.reason \
                    WHEN ($2 = 'phone' AND c.address NOT LIKE '+%') OR ($2 = 'email' AND c.address NOT LIKE '%@%') THEN $3 \
                    ELSE NULL END, \
               0, $4 \
             FROM list_members lm JOIN contacts c ON c.id = lm.contact_id \
             LEFT JOIN suppressions s ON s.org_id = $5 AND s.address = c.address \
             WHERE lm.list_id = $6 AND c.org_id = $5 \
             ON CONFLICT (campaign_id, address) DO NOTHING",
        )
        .bind(id)
        .bind(required_str)
        .bind(&mismatch_reason)
        .bind(now)
        .bind(org_id)
        .bind(list_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let rows = sqlx::query(
            "SELECT status, count(*) AS n FROM messages WHERE campaign_id = $1 GROUP BY status",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let counts = counts_from_rows(&rows)?;
        let sql = format!(
            "UPDATE campaigns SET status = 'sending', started_at = $12, last_progress_at = $12, total = $13, {} \
             WHERE id = $14 AND status = $15",
            MessageStatus::ALL
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{} = ${}", s.as_str(), i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for s in MessageStatus::ALL {
            q = q.bind(counts.get(s));
        }
        let moved = q
            .bind(now)
            .bind(counts.total())
            .bind(id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(StartOutcome::NotDue);
        }
        let reason = format!(
            "started: {} recipients ({} queued, {} skipped)",
            inserted,
            counts.get(MessageStatus::Queued),
            counts.get(MessageStatus::Skipped)
        );
        insert_event(
            &mut tx,
            id,
            now,
            actor,
            Some(from),
            CampaignStatus::Sending,
            &reason,
        )
        .await?;
        let completed = self
            .complete_if_drained(
                &mut tx,
                id,
                now,
                actor,
                "nothing to send: every recipient was skipped or the list is empty",
            )
            .await?;
        tx.commit().await?;
        Ok(StartOutcome::Started {
            messages: inserted as i64,
            queued: counts.get(MessageStatus::Queued),
            skipped: counts.get(MessageStatus::Skipped),
            completed,
        })
    }

    /// Scheduled campaigns due by `now`.
    pub async fn due_scheduled(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM campaigns WHERE status = 'scheduled' AND scheduled_at <= $1 ORDER BY scheduled_at, id",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?)
    }

    /// Pause, resume, cancel or mark complete: a conditional write on the campaign's status,
    /// recorded in the audit trail. Start has its own method.
    pub async fn transition(
        &self,
        id: i64,
        action: CampaignAction,
        now: i64,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Campaign, StoreError> {
        if action == CampaignAction::Start {
            self.start_campaign(id, now, actor, None).await?;
            return self.campaign(id).await;
        }
        let mut tx = self.begin().await?;
        let from = self.lock_campaign(&mut tx, id).await?;
        if !action.allowed_from().contains(&from) {
            tx.rollback().await?;
            return Err(illegal(id, from, action));
        }
        let to = match action {
            CampaignAction::Pause => CampaignStatus::Paused,
            CampaignAction::Resume => CampaignStatus::Sending,
            CampaignAction::Cancel => CampaignStatus::Cancelled,
            CampaignAction::Complete | CampaignAction::Start => CampaignStatus::Completed,
        };
        if action == CampaignAction::Complete {
            // The guard reads the messages themselves, not the counters.
            let pending = sqlx::query(AssertSqlSafe(format!(
                "SELECT status, count(*) AS n FROM ({PENDING_ROWS}) p GROUP BY status"
            )))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            if !pending.is_empty() {
                let mut parts = Vec::new();
                let mut total = 0i64;
                for r in &pending {
                    let n: i64 = r.try_get("n")?;
                    total += n;
                    parts.push(format!("{} {}", n, status_of(r, "status")?));
                }
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "campaign {} still has {total} pending messages ({}): wait for them to finish, pause it, or cancel it instead",
                    crate::ids::CampaignId(id),
                    parts.join(", ")
                )));
            }
        }
        let ended = if to.is_terminal() { Some(now) } else { None };
        sqlx::query(
            // Any transition through here (a person's, or the engine's for a reason other
            // than an outage) ends an outage pause: the probe never resumes it after that.
            "UPDATE campaigns SET status = $1, completed_at = COALESCE($2, completed_at), outage_channel_id = NULL WHERE id = $3 AND status = $4",
        )
        .bind(to.as_str())
        .bind(ended)
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        let default_reason = match action {
            CampaignAction::Pause => "paused by operator".to_string(),
            CampaignAction::Resume => "resumed by operator".to_string(),
            CampaignAction::Complete => {
                "marked complete by operator: nothing was pending".to_string()
            }
            CampaignAction::Cancel | CampaignAction::Start => "cancelled by operator".to_string(),
        };
        let mut reason = reason.map(str::to_string).unwrap_or(default_reason);
        if action == CampaignAction::Cancel {
            // Unsent work is cancelled now; sends already in flight finish and are recorded.
            let rows = sqlx::query(
                "SELECT status, count(*) AS n FROM messages WHERE campaign_id = $1 AND status IN ('queued','retry_wait') GROUP BY status",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let mut delta = Counts::default();
            for r in &rows {
                let n: i64 = r.try_get("n")?;
                let s = status_of(r, "status")?;
                delta.add(s, -n);
                delta.add(MessageStatus::Cancelled, n);
            }
            if !delta.is_zero() {
                sqlx::query(
                    "UPDATE messages SET status = 'cancelled', last_error = 'campaign cancelled', owner = NULL, lease_until = NULL, updated_at = $1 \
                     WHERE campaign_id = $2 AND status IN ('queued','retry_wait')",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                reason = format!(
                    "{reason}; {} unsent messages cancelled",
                    delta.get(MessageStatus::Cancelled)
                );
                self.apply_counts(&mut tx, id, &delta, 0, Some(now)).await?;
            }
        }
        if to.is_terminal() {
            self.settle_outcome(&mut tx, id).await?;
        }
        insert_event(&mut tx, id, now, actor, Some(from), to, &reason).await?;
        if to == CampaignStatus::Sending {
            self.restart_failure_window(&mut tx, id).await?;
        }
        if action == CampaignAction::Resume {
            self.complete_if_drained(&mut tx, id, now, actor, "resumed with nothing pending")
                .await?;
        }
        tx.commit().await?;
        self.campaign(id).await
    }

    // ----------------------------------------------------------------------------------
    // Instances
    // ----------------------------------------------------------------------------------

    pub async fn register_instance(&self, i: &InstanceInfo) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, host, pid, proc_start, version, role, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&i.id)
        .bind(&i.host)
        .bind(i.pid)
        .bind(i.proc_start.as_deref())
        .bind(&i.version)
        .bind(&i.role)
        .bind(i.started_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Renews the instance's heartbeat. The heartbeat is what keeps this instance's claims
    /// its own: past a message's `lease_until`, only a stale heartbeat lets anyone take it
    /// back. (Renewing every message's lease here would lock message rows in an order that
    /// can deadlock with group commits on PostgreSQL.)
    pub async fn heartbeat(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let alive = sqlx::query(
            "UPDATE instances SET heartbeat_at = $1 WHERE id = $2 AND stopped_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?
        .rows_affected()
            == 1;
        Ok(alive)
    }

    /// Registers a deregistered instance again (it was taken for dead but is alive).
    pub async fn revive_instance(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET stopped_at = NULL, heartbeat_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn stop_instance(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET stopped_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Every registered instance that has not stopped, newest heartbeat first.
    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.id, i.host, i.pid, i.proc_start, i.version, i.role, i.started_at, i.heartbeat_at, i.stopped_at, \
             (SELECT count(*) FROM messages m WHERE m.status = 'in_flight' AND m.owner = i.id) AS in_flight \
             FROM instances i WHERE i.stopped_at IS NULL ORDER BY i.heartbeat_at DESC",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    proc_start: r.try_get("proc_start")?,
                    version: r.try_get("version")?,
                    role: r.try_get("role")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    in_flight: r.try_get("in_flight")?,
                })
            })
            .collect()
    }

    /// Marks instances stopped that the caller proved dead (same host, process gone), so
    /// they no longer show as live.
    pub async fn forget_instances(&self, ids: &[String], now: i64) -> Result<(), StoreError> {
        for id in ids {
            self.stop_instance(id, now).await?;
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // The dispatcher's statements
    // ----------------------------------------------------------------------------------

    /// Sending campaigns with work due now.
    pub async fn sendable_campaigns(&self, now: i64) -> Result<Vec<SendableCampaign>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id, c.org_id, c.channel_id, c.body FROM campaigns c WHERE c.status = 'sending' \
             AND EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = c.id AND m.status IN ('queued','retry_wait') AND m.next_attempt_at <= $1) \
             ORDER BY c.id",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SendableCampaign {
                    id: r.try_get("id")?,
                    org_id: r.try_get("org_id")?,
                    channel_id: r.try_get("channel_id")?,
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }

    /// Claims up to `limit` due messages of one sending campaign for `owner`, in one
    /// transaction that also moves the counters. Returns nothing if the campaign is not
    /// sending (a pause stops claims at once).
    pub async fn claim(
        &self,
        campaign_id: i64,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let mut tx = self.begin().await?;
        let status = self.lock_campaign(&mut tx, campaign_id).await?;
        if status != CampaignStatus::Sending {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, status FROM messages WHERE campaign_id = $1 AND status IN ('queued','retry_wait') \
             AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3{}",
            self.dialect.skip_locked_suffix()
        );
        let picked = sqlx::query(AssertSqlSafe(sql))
            .bind(campaign_id)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if picked.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut delta = Counts::default();
        let mut ids = Vec::with_capacity(picked.len());
        for r in &picked {
            ids.push(r.try_get::<i64, _>("id")?);
            delta.moved(status_of(r, "status")?, MessageStatus::InFlight);
        }
        let ids_param = ids_json(ids.iter().copied());
        let update = format!(
            "UPDATE messages SET status = 'in_flight', owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id IN {} AND status IN ('queued','retry_wait')",
            self.dialect.json_ids("$4")
        );
        let n = sqlx::query(AssertSqlSafe(update))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(&ids_param)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n as usize != ids.len() {
            // Cannot happen while the campaign row is locked; refuse rather than miscount.
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "claim of campaign {campaign_id} raced: {n} of {} rows moved",
                ids.len()
            )));
        }
        // Name and attributes bounded as every read of contacts is.
        let details = format!(
            "SELECT m.id, m.contact_id, m.address, m.attempts, {}, \
             (SELECT s.reason FROM suppressions s JOIN campaigns k ON k.id = m.campaign_id \
               WHERE s.org_id = k.org_id AND s.address = m.address) AS suppressed \
             FROM messages m LEFT JOIN contacts c ON c.id = m.contact_id WHERE m.id IN {} ORDER BY m.id",
            directory::bounded_contact_fields("c"),
            self.dialect.json_ids("$1")
        );
        let rows = sqlx::query(AssertSqlSafe(details))
            .bind(&ids_param)
            .fetch_all(&mut *tx)
            .await?;
        self.apply_counts(&mut tx, campaign_id, &delta, 0, None)
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedMessage {
                    id: r.try_get("id")?,
                    campaign_id,
                    contact_id: r.try_get("contact_id")?,
                    address: r.try_get("address")?,
                    attempts: r.try_get("attempts")?,
                    name: r.try_get("name")?,
                    attributes: r
                        .try_get::<Option<String>, _>("attributes")?
                        .unwrap_or_else(|| "{}".to_string()),
                    suppressed: r.try_get("suppressed")?,
                })
            })
            .collect()
    }

    /// Records many send outcomes in one transaction: each is a conditional write (the
    /// message must still be in flight for this owner), counters move with them, pending
    /// receipts for the new provider ids are applied, and any campaign whose last pending
    /// message this was completes in the same transaction.
    pub async fn record_outcomes(
        &self,
        owner: &str,
        now: i64,
        outcomes: &[Outcome],
    ) -> Result<RecordReport, StoreError> {
        let mut report = RecordReport::default();
        if outcomes.is_empty() {
            return Ok(report);
        }
        let campaign_ids: BTreeSet<i64> = outcomes.iter().map(|o| o.campaign_id).collect();
        let mut tx = self.begin().await?;
        let statuses = self.lock_campaigns(&mut tx, &campaign_ids).await?;
        // An outcome Herald does not know (timeout) for a message the provider has already
        // named in a status is a send after all.
        let unknown: Vec<i64> = outcomes
            .iter()
            .filter(|o| matches!(o.kind, OutcomeKind::Unknown { .. }))
            .map(|o| o.message_id)
            .collect();
        let mut proofs: HashMap<i64, String> = HashMap::new();
        if !unknown.is_empty() {
            let sql = format!(
                "SELECT message_id, provider_id FROM pending_receipts WHERE message_id IN {}",
                self.dialect.json_ids("$1")
            );
            for r in sqlx::query(AssertSqlSafe(sql))
                .bind(ids_json(unknown))
                .fetch_all(&mut *tx)
                .await?
            {
                proofs.insert(r.try_get("message_id")?, r.try_get("provider_id")?);
            }
        }
        let proven: Vec<Outcome>;
        let outcomes: &[Outcome] = if proofs.is_empty() {
            outcomes
        } else {
            proven = outcomes
                .iter()
                .map(|o| match proofs.get(&o.message_id) {
                    Some(pid) if matches!(o.kind, OutcomeKind::Unknown { .. }) => Outcome {
                        kind: OutcomeKind::Sent {
                            provider_id: pid.clone(),
                        },
                        ..o.clone()
                    },
                    _ => o.clone(),
                })
                .collect();
            &proven
        };
        let mut records = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let cancelled = statuses.get(&o.campaign_id) == Some(&CampaignStatus::Cancelled);
            let (status, provider_id, error, next_at, refund) = match &o.kind {
                OutcomeKind::Sent { provider_id } => (
                    MessageStatus::Sent,
                    Some(provider_id.as_str()),
                    None,
                    None,
                    0,
                ),
                OutcomeKind::Failed { error } => {
                    (MessageStatus::Failed, None, Some(error.clone()), None, 0)
                }
                OutcomeKind::Retry { error, .. } if cancelled => (
                    MessageStatus::Cancelled,
                    None,
                    Some(format!("campaign cancelled; last attempt: {error}")),
                    None,
                    0,
                ),
                OutcomeKind::Retry {
                    error,
                    next_attempt_at,
                } => (
                    MessageStatus::RetryWait,
                    None,
                    Some(error.clone()),
                    Some(*next_attempt_at),
                    0,
                ),
                OutcomeKind::Released if cancelled => (
                    MessageStatus::Cancelled,
                    None,
                    Some("campaign cancelled".to_string()),
                    None,
                    1,
                ),
                // Handed back unsent: the attempt did not happen.
                OutcomeKind::Released => (MessageStatus::Queued, None, None, Some(now), 1),
                OutcomeKind::Skipped { reason } => {
                    (MessageStatus::Skipped, None, Some(reason.clone()), None, 0)
                }
                OutcomeKind::Unknown { error } => (
                    MessageStatus::InDoubt,
                    None,
                    Some(format!("in doubt: {error}")),
                    None,
                    0,
                ),
            };
            records.push(serde_json::json!({
                "id": o.message_id,
                "status": status.as_str(),
                "provider_id": provider_id.map(clean),
                "error": error.as_deref().map(clean),
                "next_attempt_at": next_at,
                "refund": refund,
                "sent_at": if status == MessageStatus::Sent { Some(now) } else { None },
                "release": i64::from(matches!(o.kind, OutcomeKind::Released)),
                "attempt": o.attempt,
                "doubt": i64::from(status == MessageStatus::InDoubt),
            }));
        }
        let recs = self.dialect.json_records(
            "$1",
            &[
                ("id", "int"),
                ("status", "text"),
                ("provider_id", "text"),
                ("error", "text"),
                ("next_attempt_at", "int"),
                ("refund", "int"),
                ("sent_at", "int"),
                ("release", "int"),
                ("doubt", "int"),
                ("attempt", "int"),
            ],
        );
        let sql = format!(
            "UPDATE messages SET status = x.status, provider_id = COALESCE(x.provider_id, messages.provider_id), \
             last_error = CASE WHEN x.status = 'sent' THEN NULL ELSE COALESCE(x.error, messages.last_error) END, next_attempt_at = COALESCE(x.next_attempt_at, messages.next_attempt_at), \
             attempts = messages.attempts - x.refund, sent_at = COALESCE(x.sent_at, messages.sent_at), \
             owner = CASE WHEN x.release = 1 THEN NULL ELSE messages.owner END, lease_until = NULL, updated_at = $2, \
             was_in_doubt = CASE WHEN x.doubt = 1 THEN 1 ELSE messages.was_in_doubt END, \
             in_doubt_at = CASE WHEN x.doubt = 1 THEN $2 ELSE messages.in_doubt_at END \
             FROM {recs} WHERE messages.id = x.id AND messages.status = 'in_flight' AND messages.owner = $3 \
             AND (x.attempt IS NULL OR messages.attempts = x.attempt) \
             RETURNING messages.id, messages.campaign_id, messages.status"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(serde_json::Value::from(records).to_string())
            .bind(now)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await?;
        let mut deltas: BTreeMap<i64, Counts> = BTreeMap::new();
        let mut doubts: BTreeMap<i64, i64> = BTreeMap::new();
        let mut applied_ids = BTreeSet::new();
        let mut recorded_per_campaign = BTreeMap::new();
        let mut failure_rates = BTreeMap::new();
        let failed_errors: HashMap<i64, &str> = outcomes
            .iter()
            .filter_map(|o| match &o.kind {
                OutcomeKind::Failed { error } => Some((o.message_id, error.as_str())),
                _ => None,
            })
            .collect();
        let mut message_events = Vec::new();
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            applied_ids.insert(id);
            let campaign: i64 = r.try_get("campaign_id")?;
            let status = status_of(r, "status")?;
            if status == MessageStatus::Failed {
                message_events.push((id, crate::events::EventType::MessageFailed));
            }
            outcomes::tally(&mut recorded_per_campaign, campaign, status);
            autopause::tally(
                &mut failure_rates,
                campaign,
                status,
                failed_errors.get(&id).copied(),
            );
            deltas
                .entry(campaign)
                .or_default()
                .moved(MessageStatus::InFlight, status);
            if status == MessageStatus::InDoubt {
                *doubts.entry(campaign).or_default() += 1;
            }
            report.applied += 1;
        }
        report.stale = outcomes.len() - report.applied;
        // Receipts that arrived before their provider id was recorded apply now: those kept
        // for the channel of the message that recorded the id, no other.
        let recorded: Vec<serde_json::Value> = outcomes
            .iter()
            .filter(|o| applied_ids.contains(&o.message_id))
            .filter_map(|o| match &o.kind {
                OutcomeKind::Sent { provider_id } => Some(serde_json::json!({
                    "campaign_id": o.campaign_id,
                    "provider_id": clean(provider_id),
                })),
                _ => None,
            })
            .collect();
        if !recorded.is_empty() {
            let recs = self
                .dialect
                .json_records("$1", &[("campaign_id", "int"), ("provider_id", "text")]);
            let sql = format!(
                "SELECT DISTINCT pr.id, pr.channel_id, pr.provider_id, pr.status, pr.error FROM {recs} \
                 JOIN campaigns c ON c.id = x.campaign_id \
                 JOIN pending_receipts pr ON pr.channel_id = c.channel_id AND pr.provider_id = x.provider_id \
                 ORDER BY pr.id"
            );
            let query =
                sqlx::query(AssertSqlSafe(sql)).bind(serde_json::Value::from(recorded).to_string());
            self.apply_pending_receipts(&mut tx, query, now, &mut deltas)
                .await?;
        }
        self.emit_message_events(&mut tx, now, &message_events)
            .await?;
        self.count_throughput(&mut tx, now, &recorded_per_campaign)
            .await?;
        for (campaign, delta) in &deltas {
            let doubt = doubts.get(campaign).copied().unwrap_or(0);
            self.apply_counts(&mut tx, *campaign, delta, doubt, Some(now))
                .await?;
            if statuses.get(campaign) != Some(&CampaignStatus::Sending) {
                // Sends finishing after a cancel, or kept receipts of an ended campaign.
                self.settle_outcome(&mut tx, *campaign).await?;
            }
            if self
                .complete_if_drained(
                    &mut tx,
                    *campaign,
                    now,
                    &format!("instance {owner}"),
                    "last pending message recorded",
                )
                .await?
            {
                report.completed.push(*campaign);
            }
        }
        report.auto_paused = self
            .judge_failure_rates(&mut tx, &failure_rates, now, &format!("instance {owner}"))
            .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Applies the kept receipts `select` returns (columns id, channel_id, provider_id,
    /// status, error) and deletes them. Each applies within the channel it was kept for.
    async fn apply_pending_receipts(
        &self,
        tx: &mut Tx,
        select: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
        now: i64,
        deltas: &mut BTreeMap<i64, Counts>,
    ) -> Result<usize, StoreError> {
        let rows = select.fetch_all(&mut **tx).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut receipts = Vec::new();
        let mut ids = Vec::new();
        for r in &rows {
            ids.push(r.try_get::<i64, _>("id")?);
            // Kept before receipts carried their channel: no channel may claim it.
            let Some(channel_id) = r.try_get::<Option<i64>, _>("channel_id")? else {
                continue;
            };
            receipts.push(Receipt {
                channel_id,
                provider_id: r.try_get("provider_id")?,
                status: status_of(r, "status")?,
                error: r.try_get("error")?,
            });
        }
        self.apply_receipts_in(tx, &receipts, now, deltas, false)
            .await?;
        let del = format!(
            "DELETE FROM pending_receipts WHERE id IN {}",
            self.dialect.json_ids("$1")
        );
        let n = ids.len();
        sqlx::query(AssertSqlSafe(del))
            .bind(ids_json(ids))
            .execute(&mut **tx)
            .await?;
        Ok(n)
    }

    /// The reconciler's sweep of kept receipts whose provider id is recorded by now: on
    /// PostgreSQL a receipt can be kept in the same instant its outcome commits, each
    /// transaction missing the other's row; this applies it on the next pass.
    pub async fn apply_kept_receipts(&self, now: i64) -> Result<usize, StoreError> {
        let mut deltas = BTreeMap::new();
        let mut tx = self.begin().await?;
        // A receipt whose provider id was never recorded in a week is for a message Herald
        // did not send (another tool on the same number): not worth keeping forever.
        sqlx::query("DELETE FROM pending_receipts WHERE received_at < $1")
            .bind(now - KEPT_RECEIPT_MS)
            .execute(&mut *tx)
            .await?;
        let n = self
            .apply_pending_receipts(
                &mut tx,
                sqlx::query(
                    "SELECT pr.id, pr.channel_id, pr.provider_id, pr.status, pr.error FROM pending_receipts pr \
                     WHERE EXISTS (SELECT 1 FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
                     WHERE m.provider_id = pr.provider_id AND c.channel_id = pr.channel_id) ORDER BY pr.id LIMIT 1000",
                ),
                now,
                &mut deltas,
            )
            .await?;
        for (campaign, delta) in &deltas {
            self.apply_counts(&mut tx, *campaign, delta, 0, None)
                .await?;
            // Receipts after the end move a completed campaign's outcome with its counters.
            self.settle_outcome(&mut tx, *campaign).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Applies provider receipts (delivered, read, undelivered, failed). A receipt moves a
    /// message only to a strictly higher rank (docs/DESIGN.md invariant 7); one whose provider id
    /// is not recorded yet is kept in `pending_receipts` and applied when it is. A receipt
    /// only ever finds a message of its own channel (`Receipt::channel_id`): another
    /// organisation's channel cannot name this one's provider ids.
    pub async fn apply_receipts(
        &self,
        receipts: &[Receipt],
        now: i64,
    ) -> Result<ReceiptReport, StoreError> {
        let mut deltas = BTreeMap::new();
        let mut tx = self.begin().await?;
        let report = self
            .apply_receipts_in(&mut tx, receipts, now, &mut deltas, true)
            .await?;
        for (campaign, delta) in &deltas {
            self.apply_counts(&mut tx, *campaign, delta, 0, None)
                .await?;
            // Receipts after the end move a completed campaign's outcome with its counters.
            self.settle_outcome(&mut tx, *campaign).await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn apply_receipts_in(
        &self,
        tx: &mut Tx,
        receipts: &[Receipt],
        now: i64,
        deltas: &mut BTreeMap<i64, Counts>,
        keep_unknown: bool,
    ) -> Result<ReceiptReport, StoreError> {
        let mut report = ReceiptReport::default();
        if receipts.is_empty() {
            return Ok(report);
        }
        let param = serde_json::Value::from(
            receipts
                .iter()
                .map(|r| serde_json::json!({"channel_id": r.channel_id, "provider_id": r.provider_id}))
                .collect::<Vec<_>>(),
        )
        .to_string();
        // The channel is part of the lookup, in the SQL: a provider id another channel's
        // message carries is not this receipt's message.
        let recs = self
            .dialect
            .json_records("$1", &[("channel_id", "int"), ("provider_id", "text")]);
        let sql = format!(
            "SELECT DISTINCT m.id, m.campaign_id, m.provider_id, c.channel_id FROM {recs} \
             JOIN messages m ON m.provider_id = x.provider_id \
             JOIN campaigns c ON c.id = m.campaign_id AND c.channel_id = x.channel_id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&param)
            .fetch_all(&mut **tx)
            .await?;
        let mut by_provider: HashMap<(i64, String), (i64, i64)> = HashMap::new();
        let mut campaigns = BTreeSet::new();
        for r in &rows {
            let campaign: i64 = r.try_get("campaign_id")?;
            campaigns.insert(campaign);
            by_provider.insert(
                (r.try_get("channel_id")?, r.try_get("provider_id")?),
                (r.try_get("id")?, campaign),
            );
        }
        self.lock_campaigns(tx, &campaigns).await?;
        let mut message_events = Vec::new();
        for receipt in receipts {
            let key = (receipt.channel_id, receipt.provider_id.clone());
            let Some((message_id, campaign_id)) = by_provider.get(&key) else {
                if keep_unknown {
                    sqlx::query(
                        "INSERT INTO pending_receipts (channel_id, provider_id, status, error, received_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(receipt.channel_id)
                    .bind(clean(&receipt.provider_id))
                    .bind(receipt.status.as_str())
                    .bind(receipt.error.as_deref().map(clean))
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    report.kept += 1;
                }
                continue;
            };
            let Some(rank) = receipt.status.receipt_rank() else {
                report.ignored += 1;
                continue;
            };
            // Only statuses of a strictly lower rank may move; the WHERE clause says so.
            let lower: Vec<String> = MessageStatus::ALL
                .into_iter()
                .filter(|s| s.receipt_rank().is_some_and(|r| r < rank))
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            if lower.is_empty() {
                // A `sent` receipt: a recorded provider id means the message is sent
                // already, so there is nothing below it to move from.
                report.ignored += 1;
                continue;
            }
            // A success (sent, delivered, read) clears an earlier attempt's error: a message
            // that reached its recipient shows no stale failure.
            let success = matches!(
                receipt.status,
                MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Read
            );
            let sql = format!(
                "UPDATE messages SET status = $1, \
                 last_error = CASE WHEN {} THEN NULL ELSE COALESCE($2, last_error) END, updated_at = $3 \
                 WHERE id = $4 AND status IN ({}) RETURNING (SELECT 1) AS one",
                if success { "1 = 1" } else { "1 = 0" },
                lower.join(",")
            );
            // The previous status is needed for the counters: read it under the same lock.
            let prev: Option<String> =
                sqlx::query_scalar("SELECT status FROM messages WHERE id = $1")
                    .bind(*message_id)
                    .fetch_optional(&mut **tx)
                    .await?;
            let moved = sqlx::query(AssertSqlSafe(sql))
                .bind(receipt.status.as_str())
                .bind(receipt.error.as_deref().map(clean))
                .bind(now)
                .bind(*message_id)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            match (moved, prev.as_deref().and_then(MessageStatus::parse)) {
                (true, Some(prev)) => {
                    deltas
                        .entry(*campaign_id)
                        .or_default()
                        .moved(prev, receipt.status);
                    if let Some(t) = receipt_event(prev, receipt.status) {
                        message_events.push((*message_id, t));
                    }
                    report.applied += 1;
                }
                _ => report.ignored += 1,
            }
        }
        self.emit_message_events(tx, now, &message_events).await?;
        Ok(report)
    }

    // ----------------------------------------------------------------------------------
    // The reconciler's statements
    // ----------------------------------------------------------------------------------

    /// In-flight messages whose owner is dead (heartbeat older than `stale_before`, stopped,
    /// unknown, or listed in `dead_owners`) and whose lease ran out become `in_doubt`:
    /// marked, counted on the message and the campaign.
    pub async fn mark_in_doubt(
        &self,
        now: i64,
        stale_before: i64,
        dead_owners: &[String],
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let dead = serde_json::Value::from(dead_owners.to_vec()).to_string();
        let dead_sql = self.dialect.json_texts("$3");
        let orphan = format!(
            "m.status = 'in_flight' AND (m.owner IN {dead_sql} OR ((m.lease_until IS NULL OR m.lease_until < $1) \
             AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = m.owner AND i.stopped_at IS NULL AND i.heartbeat_at >= $2)))"
        );
        let select =
            format!("SELECT m.id, m.campaign_id FROM messages m WHERE {orphan} LIMIT 10000");
        let mut tx = self.begin().await?;
        let rows = sqlx::query(AssertSqlSafe(select))
            .bind(now)
            .bind(stale_before)
            .bind(&dead)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        let mut campaigns = BTreeSet::new();
        for r in &rows {
            ids.push(r.try_get::<i64, _>("id")?);
            campaigns.insert(r.try_get::<i64, _>("campaign_id")?);
        }
        self.lock_campaigns(&mut tx, &campaigns).await?;
        let update = format!(
            "UPDATE messages SET status = 'in_doubt', was_in_doubt = 1, in_doubt_at = $1, lease_until = NULL, updated_at = $1, \
             last_error = 'in doubt: owner ' || COALESCE(owner, '?') || ' died mid-send' \
             WHERE id IN {} AND id IN (SELECT m.id FROM messages m WHERE {orphan}) RETURNING campaign_id",
            self.dialect.json_ids("$4")
        );
        let moved = sqlx::query(AssertSqlSafe(update))
            .bind(now)
            .bind(stale_before)
            .bind(&dead)
            .bind(ids_json(ids))
            .fetch_all(&mut *tx)
            .await?;
        let mut per_campaign: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &moved {
            *per_campaign.entry(r.try_get("campaign_id")?).or_default() += 1;
        }
        for (campaign, n) in &per_campaign {
            let mut delta = Counts::default();
            delta.add(MessageStatus::InFlight, -n);
            delta.add(MessageStatus::InDoubt, *n);
            self.apply_counts(&mut tx, *campaign, &delta, *n, None)
                .await?;
        }
        tx.commit().await?;
        Ok(per_campaign.into_iter().collect())
    }

    /// Messages in flight for `owner` whose claim is older than `claimed_before`.
    pub async fn owned_in_flight(
        &self,
        owner: &str,
        claimed_before: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, campaign_id FROM messages WHERE status = 'in_flight' AND owner = $1 AND updated_at < $2",
        )
        .bind(owner)
        .bind(claimed_before)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("campaign_id")?)))
            .collect()
    }

    /// Messages in doubt since before `decided_before`, with what is needed to ask their
    /// provider about them (channel, address, and the body as rendered from the campaign's
    /// template and the contact).
    pub async fn in_doubt_candidates(
        &self,
        decided_before: i64,
        limit: i64,
    ) -> Result<Vec<InDoubtCandidate>, StoreError> {
        // Name and attributes bounded as every read of contacts is.
        let sql = format!(
            "SELECT m.id, m.campaign_id, m.address, m.in_doubt_at, m.updated_at, k.channel_id, ch.kind AS channel_kind, \
             k.body, {} FROM messages m JOIN campaigns k ON k.id = m.campaign_id \
             JOIN channels ch ON ch.id = k.channel_id LEFT JOIN contacts c ON c.id = m.contact_id \
             WHERE m.status = 'in_doubt' AND m.in_doubt_at <= $1 LIMIT $2",
            directory::bounded_contact_fields("c")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(decided_before)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(InDoubtCandidate {
                    id: r.try_get("id")?,
                    campaign_id: r.try_get("campaign_id")?,
                    channel_id: r.try_get("channel_id")?,
                    channel_kind: r.try_get("channel_kind")?,
                    address: r.try_get("address")?,
                    in_doubt_at: r.try_get::<Option<i64>, _>("in_doubt_at")?.unwrap_or(0),
                    marked_at: r.try_get("updated_at")?,
                    template: r.try_get("body")?,
                    name: r.try_get("name")?,
                    attributes: r
                        .try_get::<Option<String>, _>("attributes")?
                        .unwrap_or_else(|| "{}".into()),
                })
            })
            .collect()
    }

    /// Keeps a provider's proof that it has Herald's message `message_id` (a status naming
    /// it), for a message whose own outcome is not recorded yet.
    /// Only while the message is in flight on `channel_id`: afterwards its outcome or the
    /// in-doubt check has the last word.
    pub async fn keep_proof(
        &self,
        channel_id: i64,
        message_id: i64,
        provider_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO pending_receipts (provider_id, status, error, received_at, message_id, channel_id) \
             SELECT $1, 'sent', NULL, $2, m.id, c.channel_id FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
             WHERE m.id = $3 AND m.status = 'in_flight' AND c.channel_id = $4",
        )
        .bind(clean(provider_id))
        .bind(now)
        .bind(message_id)
        .bind(channel_id)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The provider id a kept proof gives for a message, if any.
    pub async fn proof_for(&self, message_id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT provider_id FROM pending_receipts WHERE message_id = $1 ORDER BY id LIMIT 1",
        )
        .bind(message_id)
        .fetch_optional(&self.read)
        .await?)
    }

    /// Postpones the in-doubt decision for these messages until `until`.
    pub async fn defer_in_doubt(&self, ids: &[i64], until: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE messages SET in_doubt_at = $1 WHERE id IN {} AND status = 'in_doubt'",
            self.dialect.json_ids("$2")
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(until)
            .bind(ids_json(ids.iter().copied()))
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The provider has an in-doubt message after all: it is `sent`, with the provider's
    /// id (so its receipts apply), and nothing is resent. Conditional on it still being in
    /// doubt.
    /// Only for a message sent through `channel_id` (a provider speaks for its own
    /// channel), and never with a provider id another message already has (an ambiguous
    /// match at the provider resends rather than risk calling an unsent message sent).
    pub async fn resolve_in_doubt_sent(
        &self,
        channel_id: i64,
        message_id: i64,
        provider_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let campaign: Option<i64> = sqlx::query_scalar(
            "SELECT m.campaign_id FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
             WHERE m.id = $1 AND m.status = 'in_doubt' AND c.channel_id = $2 \
             AND NOT EXISTS (SELECT 1 FROM messages o JOIN campaigns oc ON oc.id = o.campaign_id \
             WHERE o.provider_id = $3 AND o.id <> m.id AND oc.channel_id = $2)",
        )
        .bind(message_id)
        .bind(channel_id)
        .bind(provider_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(campaign) = campaign else {
            tx.rollback().await?;
            return Ok(false);
        };
        self.lock_campaign(&mut tx, campaign).await?;
        let moved = sqlx::query(
            "UPDATE messages SET status = 'sent', provider_id = $1, sent_at = $2, updated_at = $2, \
             last_error = 'was in doubt; the provider has it' WHERE id = $3 AND status = 'in_doubt'",
        )
        .bind(provider_id)
        .bind(now)
        .bind(message_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut delta = Counts::default();
        delta.moved(MessageStatus::InDoubt, MessageStatus::Sent);
        self.count_throughput(&mut tx, now, &BTreeMap::from([(campaign, (1, 0))]))
            .await?;
        let mut deltas = BTreeMap::from([(campaign, delta)]);
        let pending = sqlx::query(
            "SELECT id, channel_id, provider_id, status, error FROM pending_receipts \
             WHERE channel_id = $1 AND provider_id = $2 ORDER BY id",
        )
        .bind(channel_id)
        .bind(provider_id);
        self.apply_pending_receipts(&mut tx, pending, now, &mut deltas)
            .await?;
        for (c, d) in &deltas {
            self.apply_counts(&mut tx, *c, d, 0, Some(now)).await?;
        }
        self.complete_if_drained(
            &mut tx,
            campaign,
            now,
            "reconciler",
            "last in-doubt message found at the provider",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Applies the in-doubt policy to messages in doubt since before `older_than`: resend
    /// (back to `queued`) or fail. Messages of a cancelled campaign are cancelled.
    pub async fn resolve_in_doubt(
        &self,
        resend: bool,
        now: i64,
        older_than: i64,
    ) -> Result<InDoubtReport, StoreError> {
        self.resolve_in_doubt_limited(resend, now, older_than, i64::MAX)
            .await
    }

    /// As `resolve_in_doubt`, but a message that has used `max_attempts` attempts is failed
    /// rather than resent, so a message that always ends in doubt cannot loop.
    pub async fn resolve_in_doubt_limited(
        &self,
        resend: bool,
        now: i64,
        older_than: i64,
        max_attempts: i64,
    ) -> Result<InDoubtReport, StoreError> {
        let mut report = InDoubtReport::default();
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT id, campaign_id, attempts FROM messages WHERE status = 'in_doubt' AND in_doubt_at <= $1 LIMIT 10000",
        )
        .bind(older_than)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(report);
        }
        // Keyed by campaign and whether the message has used all its attempts.
        let mut by_campaign: BTreeMap<(i64, bool), Vec<i64>> = BTreeMap::new();
        for r in &rows {
            let attempts: i64 = r.try_get("attempts")?;
            by_campaign
                .entry((r.try_get("campaign_id")?, attempts >= max_attempts))
                .or_default()
                .push(r.try_get("id")?);
        }
        let statuses = self
            .lock_campaigns(&mut tx, &by_campaign.keys().map(|k| k.0).collect())
            .await?;
        for ((campaign, exhausted), ids) in &by_campaign {
            let (to, error) = if statuses.get(campaign) == Some(&CampaignStatus::Cancelled) {
                (
                    MessageStatus::Cancelled,
                    "campaign cancelled while the message was in doubt",
                )
            } else if resend && *exhausted {
                (
                    MessageStatus::Failed,
                    "in doubt after its last allowed attempt (retry_max_attempts); not resent",
                )
            } else if resend {
                (
                    MessageStatus::Queued,
                    "in doubt: owner died mid-send; resent by policy",
                )
            } else {
                (
                    MessageStatus::Failed,
                    "in doubt: owner died mid-send; failed by policy (in_doubt_policy = fail)",
                )
            };
            let sql = format!(
                "UPDATE messages SET status = $1, last_error = $2, next_attempt_at = $3, owner = NULL, updated_at = $3 \
                 WHERE id IN {} AND status = 'in_doubt' RETURNING id",
                self.dialect.json_ids("$4")
            );
            let moved: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(to.as_str())
                .bind(error)
                .bind(now)
                .bind(ids_json(ids.iter().copied()))
                .fetch_all(&mut *tx)
                .await?;
            let n = moved.len() as i64;
            if to == MessageStatus::Failed {
                let events: Vec<_> = moved
                    .iter()
                    .map(|id| (*id, crate::events::EventType::MessageFailed))
                    .collect();
                self.emit_message_events(&mut tx, now, &events).await?;
            }
            let mut delta = Counts::default();
            delta.add(MessageStatus::InDoubt, -n);
            delta.add(to, n);
            if to == MessageStatus::Failed {
                self.count_throughput(&mut tx, now, &BTreeMap::from([(*campaign, (0, n))]))
                    .await?;
            }
            self.apply_counts(&mut tx, *campaign, &delta, 0, Some(now))
                .await?;
            match to {
                MessageStatus::Queued => report.resent += n,
                MessageStatus::Failed => report.failed += n,
                _ => report.cancelled += n,
            }
            if self
                .complete_if_drained(
                    &mut tx,
                    *campaign,
                    now,
                    "reconciler",
                    "last in-doubt message resolved",
                )
                .await?
            {
                report.completed.push(*campaign);
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    /// The backstop of invariant 5: any `sending` campaign whose messages (not counters)
    /// show nothing pending is completed.
    pub async fn finalize_drained(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        let candidates: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT c.id FROM campaigns c WHERE c.status = 'sending' \
             AND {NOTHING_PENDING}"
        )))
        .fetch_all(&self.read)
        .await?;
        let mut done = Vec::new();
        for id in candidates {
            let mut tx = self.begin().await?;
            let status = self.lock_campaign(&mut tx, id).await?;
            let pending: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM ({PENDING_ROWS}) p"
            )))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if status != CampaignStatus::Sending || pending > 0 {
                tx.rollback().await?;
                continue;
            }
            sqlx::query(
                "UPDATE campaigns SET status = 'completed', completed_at = $1 WHERE id = $2 AND status = 'sending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            self.settle_outcome(&mut tx, id).await?;
            insert_event(
                &mut tx,
                id,
                now,
                "reconciler",
                Some(CampaignStatus::Sending),
                CampaignStatus::Completed,
                "finalised: sending with no pending message",
            )
            .await?;
            tx.commit().await?;
            done.push(id);
        }
        Ok(done)
    }

    /// Campaigns whose counters differ from a recount. Reported, never silently fixed.
    pub async fn drift(&self, campaign_ids: &[i64]) -> Result<Vec<Drift>, StoreError> {
        let mut out = Vec::new();
        for id in campaign_ids {
            let c = self.campaign(*id).await?;
            let actual = self.recount(*id).await?;
            // In-flight sends may commit between the two reads; re-read once before reporting.
            if actual != c.counts {
                let c2 = self.campaign(*id).await?;
                let actual2 = self.recount(*id).await?;
                if actual2 != c2.counts && c2.counts == self.campaign(*id).await?.counts {
                    for s in MessageStatus::ALL {
                        if actual2.get(s) != c2.counts.get(s) {
                            out.push(Drift {
                                campaign_id: *id,
                                status: s,
                                counter: c2.counts.get(s),
                                actual: actual2.get(s),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Facts the stuck-campaign detector needs about one campaign's pending work.
    pub async fn pending_facts(&self, campaign_id: i64) -> Result<PendingFacts, StoreError> {
        let next_retry_at: Option<i64> = sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM messages WHERE campaign_id = $1 AND status = 'retry_wait'",
        )
        .bind(campaign_id)
        .fetch_one(&self.read)
        .await?;
        let last_error: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM messages WHERE campaign_id = $1 AND status IN ('retry_wait','failed') AND last_error IS NOT NULL \
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(campaign_id)
        .fetch_optional(&self.read)
        .await?
        .flatten();
        Ok(PendingFacts {
            next_retry_at,
            last_error,
        })
    }

    // ----------------------------------------------------------------------------------
    // Channel rate limits, shared by all instances
    // ----------------------------------------------------------------------------------

    /// Takes up to `want` tokens from the channel's shared bucket (refilled at
    /// `rate_per_sec` × the adaptive factor, holding at most `burst`). Returns what was
    /// granted and, when short, how long until the rest would be there.
    pub async fn take_tokens(
        &self,
        channel_id: i64,
        rate_per_sec: f64,
        burst: f64,
        want: f64,
        now: i64,
    ) -> Result<TokenGrant, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO channel_rate (channel_id, tokens, updated_at) VALUES ($1, $2, $3) ON CONFLICT (channel_id) DO NOTHING",
        )
        .bind(channel_id)
        .bind(burst)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "SELECT tokens, updated_at, factor, penalized_at, slow_until FROM channel_rate WHERE channel_id = $1{}",
            self.dialect.lock_suffix()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(channel_id)
            .fetch_one(&mut *tx)
            .await?;
        let tokens: f64 = row.try_get("tokens")?;
        let updated_at: i64 = row.try_get("updated_at")?;
        let mut factor: f64 = row.try_get("factor")?;
        let penalized_at: i64 = row.try_get("penalized_at")?;
        let slow_until: i64 = row.try_get("slow_until")?;
        // The rate recovers a quarter every 10 s without a new rate-limit answer.
        if factor < 1.0 && now - penalized_at >= 10_000 {
            let steps = ((now - penalized_at) / 10_000) as i32;
            factor = (factor * 1.25f64.powi(steps)).min(1.0);
        }
        let rate = (rate_per_sec * factor).max(f64::MIN_POSITIVE);
        let elapsed = (now - updated_at).max(0) as f64 / 1000.0;
        let available = (tokens + elapsed * rate).min(burst);
        let granted = if now < slow_until {
            0.0
        } else {
            want.min(available.floor()).max(0.0)
        };
        let wait_ms = if now < slow_until {
            slow_until - now
        } else if granted >= want {
            0
        } else {
            (((want - available).max(0.0) / rate) * 1000.0)
                .ceil()
                .max(1.0) as i64
        };
        sqlx::query(
            "UPDATE channel_rate SET tokens = $1, updated_at = $2, factor = $3 WHERE channel_id = $4",
        )
        .bind(available - granted)
        .bind(now)
        .bind(factor)
        .bind(channel_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TokenGrant {
            granted,
            wait_ms,
            factor,
        })
    }

    /// A provider said "too many requests": halve the channel's rate for every instance
    /// (down to a tenth) and send nothing before `retry_after_ms` has passed.
    pub async fn penalize_rate(
        &self,
        channel_id: i64,
        retry_after_ms: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE channel_rate SET factor = CASE WHEN factor * 0.5 < 0.1 THEN 0.1 ELSE factor * 0.5 END, \
             penalized_at = $1, tokens = 0, updated_at = $1, \
             slow_until = CASE WHEN slow_until > $2 THEN slow_until ELSE $2 END WHERE channel_id = $3",
        )
        .bind(now)
        .bind(now + retry_after_ms.max(0))
        .bind(channel_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // The sandbox provider's own record
    // ----------------------------------------------------------------------------------

    pub async fn sandbox_record(&self, entries: &[SandboxEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let records = serde_json::Value::from(
            entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "channel_id": e.channel_id, "campaign_id": e.campaign_id, "message_id": e.message_id,
                        "address": e.address, "provider_id": e.provider_id, "body": e.body, "received_at": e.received_at,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .to_string();
        let recs = self.dialect.json_records(
            "$1",
            &[
                ("channel_id", "int"),
                ("campaign_id", "int"),
                ("message_id", "int"),
                ("address", "text"),
                ("provider_id", "text"),
                ("body", "text"),
                ("received_at", "int"),
            ],
        );
        let sql = format!(
            "INSERT INTO sandbox_received (channel_id, campaign_id, message_id, address, provider_id, body, received_at) \
             SELECT x.channel_id, x.campaign_id, x.message_id, x.address, x.provider_id, x.body, x.received_at FROM {recs} \
             WHERE true ON CONFLICT (provider_id) DO NOTHING"
        );
        // Its own transaction: the provider holds what it accepted whatever Herald does next.
        let mut tx = self.begin().await?;
        sqlx::query(AssertSqlSafe(sql))
            .bind(records)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// What the sandbox provider holds for a channel (optionally one campaign).
    pub async fn sandbox_stats(
        &self,
        channel_id: i64,
        campaign_id: Option<i64>,
    ) -> Result<SandboxStats, StoreError> {
        let campaign = campaign_id.unwrap_or(0);
        let received: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sandbox_received WHERE channel_id = $1 AND ($2 = 0 OR campaign_id = $2)",
        )
        .bind(channel_id)
        .bind(campaign)
        .fetch_one(&self.read)
        .await?;
        let distinct: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT DISTINCT campaign_id, address FROM sandbox_received WHERE channel_id = $1 AND ($2 = 0 OR campaign_id = $2)) t",
        )
        .bind(channel_id)
        .bind(campaign)
        .fetch_one(&self.read)
        .await?;
        Ok(SandboxStats {
            received,
            distinct_recipients: distinct,
            duplicates: received - distinct,
        })
    }

    /// Messages Herald recorded as sent (or later) that the sandbox provider never received:
    /// a lost message, which must always be zero.
    pub async fn sandbox_lost(&self, campaign_id: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
             WHERE m.campaign_id = $1 AND m.status IN ('sent','delivered','read','undelivered') \
             AND NOT EXISTS (SELECT 1 FROM sandbox_received s WHERE s.channel_id = c.channel_id \
               AND s.campaign_id = m.campaign_id AND s.address = m.address)",
        )
        .bind(campaign_id)
        .fetch_one(&self.read)
        .await?)
    }

    /// Per-message times from the campaign's start to its send, for `herald bench`.
    pub async fn send_latencies(&self, campaign_id: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT m.sent_at - c.started_at FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
             WHERE m.campaign_id = $1 AND m.sent_at IS NOT NULL ORDER BY 1",
        )
        .bind(campaign_id)
        .fetch_all(&self.read)
        .await?)
    }
}

/// The message event a receipt's move reports: failed, undelivered, or delivered (a
/// `read` straight from below `delivered` was delivered too).
fn receipt_event(prev: MessageStatus, to: MessageStatus) -> Option<crate::events::EventType> {
    use crate::events::EventType;
    match to {
        MessageStatus::Failed => Some(EventType::MessageFailed),
        MessageStatus::Undelivered => Some(EventType::MessageUndelivered),
        MessageStatus::Delivered => Some(EventType::MessageDelivered),
        MessageStatus::Read if prev != MessageStatus::Delivered => {
            Some(EventType::MessageDelivered)
        }
        _ => None,
    }
}

fn illegal(id: i64, from: CampaignStatus, action: CampaignAction) -> StoreError {
    let allowed: Vec<&str> = action.allowed_from().iter().map(|s| s.as_str()).collect();
    StoreError::Conflict(format!(
        "campaign {} is {from}: `{}` applies only to a campaign that is {}",
        crate::ids::CampaignId(id),
        action.as_str(),
        allowed.join(" or ")
    ))
}

async fn insert_event(
    tx: &mut Tx,
    campaign_id: i64,
    at: i64,
    actor: &str,
    from: Option<CampaignStatus>,
    to: CampaignStatus,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO campaign_events (campaign_id, at, actor, from_status, to_status, reason) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(campaign_id)
    .bind(at)
    .bind(actor)
    .bind(from.map(|s| s.as_str()))
    .bind(to.as_str())
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    // The outbound event of the change, in the same transaction (docs/EVENTS.md).
    outbox::emit_campaign_change(
        tx,
        &outbox::CampaignChange {
            campaign_id,
            at,
            actor,
            from,
            to,
            reason,
        },
    )
    .await?;
    tx.events
        .push((campaign_id, actor.to_string(), from, to, reason.to_string()));
    Ok(())
}
