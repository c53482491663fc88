//! Test harness: a fresh, migrated store per test on either backend, and the small helpers
//! every store test needs.
//!
//! SQLite gets a temporary directory; PostgreSQL gets a database of its own, created on the
//! server named by `HERALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped again when the test ends. A
//! PostgreSQL that cannot be reached fails the test: the suite never skips a store.

#![allow(dead_code)]

use herald::domain::MessageStatus;
use herald::ids::{CampaignId, ChannelId, ListId, MessageId, OrgId};
use herald::store::{
    Campaign, ClaimedMessage, MessageInfo, NewCampaign, Outcome, OutcomeKind, Store,
};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe};
use std::time::Duration;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A fresh database with the schema applied, and a store connected to it.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub store: Store,
    /// Keeps the SQLite file's directory alive for as long as the test runs.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the admin URL and the database to drop afterwards.
    postgres: Option<(String, String)>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string())
}

/// `postgres://user@host:port/admin?opts` with the database name replaced by `db`.
fn with_database(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn admin_pool(admin_url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    // One direct connection first: its error says why (refused, auth), where a pool's
    // would only say that it timed out.
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url),
    )
    .await;
    let reason = match probe {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 10 s".to_string()),
    };
    let pool = match reason {
        None => AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(admin_url)
            .await
            .map_err(|e| e.to_string()),
        Some(reason) => Err(reason),
    };
    pool.unwrap_or_else(|e| {
        panic!(
            "the PostgreSQL store tests need a PostgreSQL server, and none answered at {}: {e}. \
             Start one (trust auth for user postgres on 127.0.0.1:5432), or point \
             HERALD_TEST_POSTGRES_URL at the admin URL of one that runs; scripts/test does both.",
            herald::store::redact_url(admin_url)
        )
    })
}

fn drop_postgres_database(admin_url: &str, name: &str) {
    let admin_url = admin_url.to_string();
    let name = name.to_string();
    // Drop may run inside a runtime (blocking there is not allowed) or outside one: a thread
    // of its own with its own small runtime works in both cases.
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to drop the test database");
        rt.block_on(async move {
            sqlx::any::install_default_drivers();
            let Ok(pool) = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect(&admin_url)
                .await
            else {
                return;
            };
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&pool).await {
                eprintln!("could not drop test database {name}: {e}");
            }
            pool.close().await;
        });
    });
    let _ = handle.join();
}

impl TestDb {
    /// A fresh database with the schema applied.
    pub async fn new(backend: Backend) -> TestDb {
        let db = TestDb::new_unmigrated(backend).await;
        db.store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrating the {} test store failed: {e}", backend.name()));
        db
    }

    /// A fresh, empty database: no schema at all.
    pub async fn new_unmigrated(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}/herald.db", dir.path().display());
                let store = Store::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot open the SQLite test store: {e}"));
                TestDb {
                    backend,
                    url,
                    store,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("herald_test_{:016x}", rand::random::<u64>());
                let pool = admin_pool(&admin_url).await;
                let create = format!("CREATE DATABASE \"{name}\"");
                let mut attempt = 0;
                loop {
                    // Concurrent CREATE DATABASE can collide on the template; retry a little.
                    match sqlx::raw_sql(AssertSqlSafe(create.clone()))
                        .execute(&pool)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if attempt < 20 => {
                            attempt += 1;
                            eprintln!("CREATE DATABASE {name} failed ({e}); retrying");
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(e) => panic!("cannot create the PostgreSQL test database {name}: {e}"),
                    }
                }
                pool.close().await;
                let url = with_database(&admin_url, &name);
                let store = match Store::connect(&url).await {
                    Ok(s) => s,
                    Err(e) => {
                        drop_postgres_database(&admin_url, &name);
                        panic!("cannot connect to the PostgreSQL test database: {e}");
                    }
                };
                TestDb {
                    backend,
                    url,
                    store,
                    _dir: None,
                    postgres: Some((admin_url, name)),
                }
            }
        }
    }

    /// A separate connection pool to the same database, for raw SQL that simulates
    /// corruption or crashes behind the store's back.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("raw connection to {} failed: {e}", self.url))
    }

    /// Runs one raw statement with one integer parameter (`$1`) on a separate connection.
    pub async fn raw_exec(&self, sql: &'static str, id: CampaignId) -> u64 {
        let pool = self.raw().await;
        let n = sqlx::query(sql)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("raw SQL `{sql}` failed: {e}"))
            .rows_affected();
        pool.close().await;
        n
    }
}

impl TestDb {
    /// Runs one raw query returning one integer on a separate connection.
    pub async fn raw_scalar(&self, sql: &'static str) -> i64 {
        let pool = self.raw().await;
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("raw SQL `{sql}` failed: {e}"));
        pool.close().await;
        n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            // The store's pools may still hold connections; FORCE ends them.
            drop_postgres_database(&admin_url, &name);
        }
    }
}

/// Generates one test module with a SQLite and a PostgreSQL test running the same body.
///
/// ```ignore
/// both_stores!(my_test, |db| async move { /* db: TestDb */ });
/// ```
#[macro_export]
macro_rules! both_stores {
    ($name:ident, |$db:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::support::TestDb::new($crate::support::Backend::Sqlite).await;
                $body.await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $db = $crate::support::TestDb::new($crate::support::Backend::Postgres).await;
                $body.await;
            }
        }
    };
}

/// A new list in the default organisation with `n` synthetic contacts
/// (`+12000000001`, `+12000000002`, …).
pub async fn seed_list(store: &Store, n: i64) -> (OrgId, ListId) {
    let org = store.default_org().await.expect("default organisation");
    let name = format!("list-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let list = store.ensure_list(org, &name).await.expect("ensure_list");
    if n > 0 {
        store
            .seed_contacts(org, list, n)
            .await
            .expect("seed_contacts");
    }
    (org, list)
}

/// The address `seed_contacts` gives its `i`-th contact (1-based).
pub fn seeded_address(i: i64) -> String {
    format!("+1{}", 2_000_000_000 + i)
}

/// A sandbox channel in the default organisation.
pub async fn sandbox_channel(store: &Store, name: &str) -> ChannelId {
    let org = store.default_org().await.expect("default organisation");
    store
        .create_channel(org, name, "sandbox", &serde_json::json!({}))
        .await
        .expect("create_channel")
}

/// A draft campaign.
pub async fn new_campaign(
    store: &Store,
    org: OrgId,
    list: ListId,
    channel: ChannelId,
    body: &str,
) -> CampaignId {
    new_campaign_at(store, org, list, channel, body, None).await
}

/// A draft campaign, or a scheduled one when `scheduled_at` is set.
pub async fn new_campaign_at(
    store: &Store,
    org: OrgId,
    list: ListId,
    channel: ChannelId,
    body: &str,
    scheduled_at: Option<i64>,
) -> CampaignId {
    store
        .create_campaign(
            &NewCampaign {
                org_id: org,
                name: format!("campaign-{:08x}", rand::random::<u32>()),
                channel_id: channel,
                list_id: list,
                body: body.to_string(),
                scheduled_at,
                whatsapp_template: None,
                email: None,
                send_window: None,
            },
            "test",
        )
        .await
        .expect("create_campaign")
}

/// Invariant 3: the campaign's counters equal a `GROUP BY status` over its messages, and its
/// total equals the number of messages.
pub async fn assert_counters_match(store: &Store, campaign_id: CampaignId) -> Campaign {
    let c = store.campaign(campaign_id).await.expect("campaign");
    let actual = store.recount(campaign_id).await.expect("recount");
    assert_eq!(
        c.counts, actual,
        "campaign {campaign_id} ({}): counters differ from the recount\n counters: {:?}\n recount:  {:?}",
        c.status, c.counts, actual
    );
    assert_eq!(
        c.total,
        actual.total(),
        "campaign {campaign_id}: total {} but {} messages",
        c.total,
        actual.total()
    );
    c
}

/// Every message of a campaign, optionally of one status.
pub async fn all_messages(
    store: &Store,
    campaign_id: CampaignId,
    status: Option<MessageStatus>,
) -> Vec<MessageInfo> {
    let mut out = Vec::new();
    let mut after = MessageId(0);
    loop {
        let page = store
            .messages(campaign_id, status, after, 1000)
            .await
            .expect("messages");
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        out.extend(page);
    }
    out
}

/// Every exported message of the organisation's campaign, read `page` at a time.
pub async fn exported(
    store: &Store,
    org: OrgId,
    id: CampaignId,
    page: i64,
) -> Vec<herald::store::ExportedMessage> {
    let mut out = Vec::new();
    let mut after = MessageId(0);
    loop {
        let rows = store
            .export_campaign_messages(org, id, after, page)
            .await
            .expect("export_campaign_messages");
        assert!(rows.len() as i64 <= page);
        let Some(last) = rows.last() else {
            break;
        };
        after = last.id;
        out.extend(rows);
    }
    out
}

/// One message by id.
pub async fn message(store: &Store, campaign_id: CampaignId, id: MessageId) -> MessageInfo {
    store
        .messages(campaign_id, None, MessageId(id.get() - 1), 1)
        .await
        .expect("messages")
        .into_iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("message {id} of campaign {campaign_id} not found"))
}

#[path = "../../shared/fake_twilio.rs"]
mod fake_twilio;
pub use fake_twilio::FakeTwilio;

impl FakeTwilio {
    pub async fn stats(&self) -> serde_json::Value {
        herald::channels::http::try_client()
            .unwrap()
            .get(format!("{}/_fake/stats?per_recipient=0", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Polls the campaign until `done` holds; fails after `within`, naming `what` and the
/// counters it had.
pub async fn wait_for(
    store: &Store,
    id: CampaignId,
    what: &str,
    within: Duration,
    done: impl Fn(&herald::store::Campaign) -> bool,
) -> herald::store::Campaign {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let c = store.campaign(id).await.unwrap();
        if done(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign {id} did not reach `{what}` within {within:?}: {} with {:?}",
            c.status,
            c.counts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Outcomes of one claim by position: message `i` failed with `error` where `failed(i)`,
/// else sent with provider id `{provider_prefix}{i}`; `attempt` unchecked.
pub fn sent_or_failed(
    campaign_id: CampaignId,
    claimed: &[ClaimedMessage],
    provider_prefix: &str,
    error: &str,
    failed: impl Fn(usize) -> bool,
) -> Vec<Outcome> {
    claimed
        .iter()
        .enumerate()
        .map(|(i, m)| Outcome {
            message_id: m.id,
            campaign_id,
            attempt: None,
            kind: if failed(i) {
                OutcomeKind::Failed {
                    error: error.to_string(),
                }
            } else {
                OutcomeKind::Sent {
                    provider_id: format!("{provider_prefix}{i}"),
                }
            },
        })
        .collect()
}
