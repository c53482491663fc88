//! The storage interface: everything Herald knows lives here, and every decision is a
//! conditional write whose `WHERE` clause states its precondition (docs/DESIGN.md invariant 1).
//!
//! One `Store` type serves both databases through sqlx's `Any` driver: the SQL is shared,
//! and the few places where the dialects differ (connection setup, row locks, JSON table
//! functions, bulk seeding) live in `sqlite.rs` and `postgres.rs`, chosen in `dialect.rs`.
//! The engine above never knows which one it talks to. Timestamps are integer milliseconds
//! since the epoch.
//!
//! This file holds the `Store` itself (connect, transactions, migrations); each of the
//! files below adds the `impl Store` methods of what it stores (docs/ARCHITECTURE.md, "The
//! store by entity").

mod accounts;
mod campaigns;
mod channels;
mod dialect;
pub mod directory;
mod dispatch;
mod events;
mod helpers;
#[cfg(target_os = "linux")]
pub mod nodelay;
mod postgres;
mod rate_limits;
mod recovery;
mod sqlite;
mod types;

pub use accounts::{
    ApiKeyInfo, IdempotencyState, SessionInfo, StoredResponse, UserCredentials, UserInfo,
};
pub use campaigns::archive::{ArchiveLimits, ArchiveReport, ArchiveState, ArchivedCampaign};
pub use campaigns::audience;
pub use campaigns::autopause;
pub use campaigns::derive;
pub use campaigns::export::{ExportedMessage, LinkClicks};
pub use campaigns::links::{CampaignLink, Click};
pub use campaigns::outcomes::{ThroughputMinute, minute_of};
pub use channels::admin as channels_admin;
pub use channels::outage;
pub use dialect::{Dialect, redact_url};
pub use dispatch::{FeedbackReport, KEPT_RECEIPT_BATCH};
pub use events::outbox::{InboundMessage, OptSource, OutboxEvent};
pub use events::provider_webhooks::RecordedInbound;
pub use events::{alerts, replies, webhook_deliveries, webhook_endpoints};
pub(crate) use helpers::sql_str;
pub use types::*;

use crate::domain::CampaignStatus;
use crate::ids::CampaignId;
use sqlx::{Any, AnyPool, Transaction};

/// A write transaction that remembers the campaign events it recorded and logs them only
/// once the commit succeeded, so the log never tells of a change that was rolled back.
struct Tx {
    inner: Transaction<'static, Any>,
    events: Vec<(
        CampaignId,
        String,
        Option<CampaignStatus>,
        CampaignStatus,
        String,
    )>,
    work: WorkSignal,
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
    async fn commit(mut self) -> Result<(), sqlx::Error> {
        // A campaign that starts or resumes sending wakes the dispatchers: this process's
        // at once after the commit, other instances' through the database's notification
        // (sent with the commit, so never for a change that was rolled back).
        let wakes = self.events.iter().any(|e| e.3 == CampaignStatus::Sending);
        if wakes && let Some(sql) = self.work.notify_sql {
            sqlx::query(sql).execute(&mut *self.inner).await?;
        }
        self.inner.commit().await?;
        if wakes {
            self.work.signal();
        }
        for (campaign_id, actor, from, to, reason) in self.events {
            tracing::info!(
                campaign_id = %campaign_id,
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

#[derive(Clone)]
pub struct Store {
    write: AnyPool,
    read: AnyPool,
    dialect: Dialect,
    url: String,
    /// The URL as given (with its password), kept only to open the work listener.
    connect_url: std::sync::Arc<str>,
    work: WorkSignal,
}

/// "Sendable work appeared": a campaign started or resumed. The dispatcher waits on it
/// between polls (docs/ARCHITECTURE.md, "Waking up"). Every clone of a `Store` shares one.
#[derive(Clone)]
struct WorkSignal {
    notify: std::sync::Arc<tokio::sync::Notify>,
    /// How many wake-ups there have been, so a dispatcher that did not wait can still tell
    /// that one came.
    signals: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The statement that tells other instances, on a store that has one (PostgreSQL's
    /// `NOTIFY`); SQLite has no other instance to tell.
    notify_sql: Option<&'static str>,
}

impl WorkSignal {
    fn signal(&self) {
        // notify_one keeps the wake-up if the dispatcher is busy right now: its next wait
        // returns at once instead of sleeping through the change.
        self.signals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }
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
            connect_url: url.into(),
            work: WorkSignal {
                notify: std::sync::Arc::new(tokio::sync::Notify::new()),
                signals: std::sync::Arc::default(),
                notify_sql: dialect.notify_work_sql(),
            },
        })
    }

    /// Resolves when sendable work may have appeared since the last call (a campaign of
    /// this process started or resumed, or, on PostgreSQL once [`Store::listen_for_work`]
    /// runs, of any instance). A wake-up that came while nobody waited is kept for the next.
    pub async fn work_appeared(&self) {
        self.work.notify.notified().await;
    }

    /// How many wake-ups [`Store::work_appeared`] has been given so far: a different
    /// number later means work may have appeared in between.
    pub fn work_signals(&self) -> u64 {
        self.work.signals.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Tells this process's dispatcher that work may have appeared (also what the
    /// listener does for another instance's change).
    pub fn signal_work(&self) {
        self.work.signal();
    }

    /// Forwards other instances' wake-ups to [`Store::work_appeared`] until the process
    /// ends, reconnecting after a lost connection. Returns at once on a store with no other
    /// instances to hear (SQLite).
    pub async fn listen_for_work(&self) {
        self.dialect
            .listen_for_work(&self.connect_url, &self.url, || self.signal_work())
            .await;
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// What the database server does that will slow Herald down as it sends, in words
    /// with the fix, or None. PostgreSQL with `autovacuum = off` never removes the old
    /// versions of claimed and sent messages: every claim of a large campaign then reads
    /// past all of them, so sending slows as it goes (BENCHMARKS.md, "A 10-million-recipient
    /// campaign").
    pub async fn server_maintenance_problem(&self) -> Result<Option<String>, StoreError> {
        let Some(sql) = self.dialect.autovacuum_setting() else {
            return Ok(None);
        };
        let autovacuum: Option<String> = sqlx::query_scalar(sql).fetch_optional(&self.read).await?;
        Ok(match autovacuum.as_deref() {
            Some("off") => Some(
                "autovacuum is off on this PostgreSQL server: the old row versions of claimed and \
                 sent messages are never removed, so every claim of a large campaign reads past \
                 them and sending slows down as the campaign goes on; set `autovacuum = on` in \
                 postgresql.conf (or run `VACUUM ANALYZE messages` while campaigns send)"
                    .to_string(),
            ),
            _ => None,
        })
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
            work: self.work.clone(),
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
}
