//! The PostgreSQL store, for many instances sharing one database.
//!
//! Claims and outcome commits hold their campaigns' gates shared and their rows `FOR KEY
//! SHARE` from their first statement (so they do not wait for each other) and take the rows
//! `FOR NO KEY UPDATE`, in id order, only to move the counters at the end; claims pick
//! messages with `FOR UPDATE SKIP LOCKED`. Pauses, cancels and every other transaction that
//! writes messages of a sending campaign (and clicks, shared) take its gate exclusive and
//! its row `FOR UPDATE` first, which waits for the claims and commits in progress, and
//! claims and commits that arrive later queue behind it. Each transaction takes its gates
//! and row locks in campaign id order, in one statement (`CampaignLock` in
//! campaigns/lifecycle.rs, `SHARED_GATE_COLUMN` below). The one exception, a commit's
//! counters for a campaign reached only through a kept receipt (not gated, locked after
//! the others), can meet a recovery's locks in a deadlock that PostgreSQL detects and
//! breaks by failing the commit, which is retried; docs/DESIGN.md "Gaps".
//! Commits are durable (`synchronous_commit` is left at the server's default, `on`).

use super::StoreError;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Connection};
use std::time::Duration;

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "sandbox_idempotent",
        include_str!("../../migrations/postgres/0002_sandbox_idempotent.sql"),
    ),
    (
        3,
        "channel_secrets",
        include_str!("../../migrations/postgres/0003_channel_secrets.sql"),
    ),
    (
        4,
        "webhook_events",
        include_str!("../../migrations/postgres/0004_webhook_events.sql"),
    ),
    (
        5,
        "channel_rate",
        include_str!("../../migrations/postgres/0005_channel_rate.sql"),
    ),
    (
        6,
        "receipt_message",
        include_str!("../../migrations/postgres/0006_receipt_message.sql"),
    ),
    (
        7,
        "accounts",
        include_str!("../../migrations/postgres/0007_accounts.sql"),
    ),
    (
        8,
        "webhook_scope",
        include_str!("../../migrations/postgres/0008_webhook_scope.sql"),
    ),
    (
        9,
        "outcome_throughput",
        include_str!("../../migrations/postgres/0009_outcome_throughput.sql"),
    ),
    (
        10,
        "channel_outage",
        include_str!("../../migrations/postgres/0010_channel_outage.sql"),
    ),
    (
        11,
        "event_outbox",
        include_str!("../../migrations/postgres/0011_event_outbox.sql"),
    ),
    (
        12,
        "event_emission",
        include_str!("../../migrations/postgres/0012_event_emission.sql"),
    ),
    (
        13,
        "webhook_delivery",
        include_str!("../../migrations/postgres/0013_webhook_delivery.sql"),
    ),
    (
        14,
        "auto_pause",
        include_str!("../../migrations/postgres/0014_auto_pause.sql"),
    ),
    (
        15,
        "alerts",
        include_str!("../../migrations/postgres/0015_alerts.sql"),
    ),
    (
        16,
        "delivery_sequence_index",
        include_str!("../../migrations/postgres/0016_delivery_sequence_index.sql"),
    ),
    (
        17,
        "message_times",
        include_str!("../../migrations/postgres/0017_message_times.sql"),
    ),
    (
        18,
        "channel_pricing",
        include_str!("../../migrations/postgres/0018_channel_pricing.sql"),
    ),
    (
        19,
        "tracked_links",
        include_str!("../../migrations/postgres/0019_tracked_links.sql"),
    ),
    (
        20,
        "whatsapp_templates",
        include_str!("../../migrations/postgres/0020_whatsapp_templates.sql"),
    ),
    (
        21,
        "replies",
        include_str!("../../migrations/postgres/0021_replies.sql"),
    ),
    (
        22,
        "segments",
        include_str!("../../migrations/postgres/0022_segments.sql"),
    ),
    (
        23,
        "send_windows",
        include_str!("../../migrations/postgres/0023_send_windows.sql"),
    ),
    (
        24,
        "campaign_email",
        include_str!("../../migrations/postgres/0024_campaign_email.sql"),
    ),
    (
        25,
        "message_archives",
        include_str!("../../migrations/postgres/0025_message_archives.sql"),
    ),
    (
        26,
        "campaign_message_range",
        include_str!("../../migrations/postgres/0026_campaign_message_range.sql"),
    ),
    (
        27,
        "messages_campaign_check",
        include_str!("../../migrations/postgres/0027_messages_campaign_check.sql"),
    ),
];

pub(super) async fn connect(url: &str) -> Result<(AnyPool, AnyPool), StoreError> {
    install_default_drivers();
    // One direct attempt first: a pool would retry until its timeout and then report only
    // "pool timed out", hiding the real reason (refused, bad password, no such database).
    // (tests/it/database_sockets.rs `the_socket_has_tcp_nodelay_before_the_handshake`
    // relies on this being the one connection opened before any pool.)
    match tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
        }
        Ok(Err(e)) => return Err(StoreError::connect(url, e)),
        Err(_) => {
            return Err(StoreError::Connect {
                url: super::redact_url(url),
                reason: "no answer within 10 s".into(),
            });
        }
    }
    let port = tcp_port(url);
    let pool = AnyPoolOptions::new()
        .after_connect(move |_conn, _meta| {
            Box::pin(async move {
                nodelay_on_database_sockets(port);
                Ok(())
            })
        })
        .max_connections(16)
        .min_connections(1)
        // Short: during a database outage every caller (heartbeat, claims, commits) fails
        // fast and retries on its own schedule, instead of blocking through it and
        // resuming on the pool's slower reconnect backoff.
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|e| StoreError::connect(url, e))?;
    // One pool serves both roles: PostgreSQL handles concurrent writers itself.
    Ok((pool.clone(), pool))
}

/// The database's TCP port, or `None` when the URL names a Unix socket directory.
fn tcp_port(url: &str) -> Option<u16> {
    let options: sqlx::postgres::PgConnectOptions = url.parse().ok()?;
    let unix_socket = options.get_host().starts_with('/') || options.get_socket().is_some();
    (!unix_socket).then(|| options.get_port())
}

/// Turns `TCP_NODELAY` on for the database sockets (`nodelay.rs` says why). A failure never
/// refuses the connection: it costs speed over TLS, not correctness, and is logged once.
fn nodelay_on_database_sockets(port: Option<u16>) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some(port) = port else { return };
    #[cfg(target_os = "linux")]
    let outcome = super::nodelay::set_on_database_sockets(port).map(|count| count.set);
    #[cfg(not(target_os = "linux"))]
    let outcome: std::io::Result<usize> = Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "implemented on Linux only",
    ));
    match outcome {
        Ok(set) if set > 0 => tracing::debug!(port, set, "TCP_NODELAY set on database sockets"),
        Ok(_) => {}
        Err(e) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    port,
                    error = %e,
                    "cannot set TCP_NODELAY on the database sockets: over TLS each round trip may wait up to 40 ms (Nagle's algorithm)"
                );
            }
        }
    }
}

pub(super) const BEGIN_WRITE: &str = "BEGIN";

pub(super) fn text_bytes(column: &str) -> String {
    format!("octet_length({column})")
}

/// The channel on which a committing transaction tells every instance that a campaign
/// started or resumed sending (`Store::listen_for_work`).
const WORK_CHANNEL: &str = "herald_work";
pub(super) const NOTIFY_WORK: &str = "SELECT pg_notify('herald_work', '')";

/// Listens on [`WORK_CHANNEL`] and calls `wake` for each notification, reconnecting with
/// a pause after a lost connection (the dispatcher's poll covers the gap).
pub(super) async fn listen_for_work(url: &str, shown_url: &str, wake: impl Fn()) {
    loop {
        match sqlx::postgres::PgListener::connect(url).await {
            Ok(mut listener) => match listener.listen(WORK_CHANNEL).await {
                Ok(()) => {
                    nodelay_on_database_sockets(tcp_port(url));
                    tracing::debug!(url = shown_url, "listening for work on {WORK_CHANNEL}");
                    // recv() reconnects on its own after a lost connection and then
                    // returns Ok again; wake once then, for anything sent meanwhile.
                    loop {
                        match listener.recv().await {
                            Ok(_) => wake(),
                            Err(e) => {
                                tracing::warn!(error = %e, "work listener lost its connection; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN for work; polling only"),
            },
            Err(e) => {
                tracing::warn!(url = shown_url, error = %e, "cannot open the work listener; polling only")
            }
        }
        wake();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
pub(super) const LOCK_SUFFIX: &str = " FOR UPDATE";
/// Held by claims and outcome commits for their whole transaction: they do not block each
/// other, but a pause or cancel (`FOR UPDATE`) waits for them and they wait for it.
pub(super) const SHARE_LOCK_SUFFIX: &str = " FOR KEY SHARE";
/// The campaign gate, a transaction-scoped advisory lock per campaign taken in the same
/// statement as the row lock, before it (volatile output columns are computed after
/// `ORDER BY`, so in id order, and below `FOR …` in the plan). Why a row lock is not
/// enough: a new `FOR KEY SHARE` joins the current holders even while a `FOR UPDATE`
/// waits, so overlapping claims and commits of several instances could hold a pause off
/// until sending ran dry. The lock manager queues a shared request behind a waiting
/// exclusive one, so a pause waits only for the claims and commits already in progress.
/// The key is the campaign id split in two 31-bit halves, the high one offset by 7264920
/// (the other advisory locks use the one-bigint form, a separate key space): one gate per
/// campaign, ordered as ids are. Each gate held is an entry in the server's lock table
/// (`max_locks_per_transaction` × `max_connections`, about 6,400 by default), unlike a row
/// lock: docs/DESIGN.md "Gaps". `::text` because the driver cannot decode `void`.
pub(super) const SHARED_GATE_COLUMN: &str = ", pg_advisory_xact_lock_shared(\
     (7264920 + (id >> 31))::int4, (id & 2147483647)::int4)::text AS gate";
pub(super) const EXCLUSIVE_GATE_COLUMN: &str = ", pg_advisory_xact_lock(\
     (7264920 + (id >> 31))::int4, (id & 2147483647)::int4)::text AS gate";
/// The row lock a counter update takes (a claim's or commit's `UPDATE … RETURNING
/// status`), taken by this select only for a commit's campaign whose outcomes were all
/// stale: counter updates queue here, for the commit only. Compatible with `FOR KEY
/// SHARE`, so upgrading to it never waits behind a queued `FOR UPDATE`.
pub(super) const COUNTER_LOCK_SUFFIX: &str = " FOR NO KEY UPDATE";
pub(super) const SKIP_LOCKED_SUFFIX: &str = " FOR UPDATE SKIP LOCKED";
/// Two instances starting at once must not both apply a migration.
pub(super) const MIGRATION_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(7264911)");
/// Serializes webhook fan-out between instances, so each endpoint's sequence numbers follow
/// event ids.
pub(super) const FAN_OUT_LOCK: Option<&str> =
    Some("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(7264912)) AS l");
/// Serializes webhook claims between instances: the check that no other instance holds a
/// live lease on an endpoint and the claim are then one step.
pub(super) const WEBHOOK_CLAIM_LOCK: Option<&str> =
    Some("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(7264913)) AS l");

pub(super) fn json_ids(param: &str) -> String {
    format!("(SELECT (value)::bigint FROM jsonb_array_elements_text(CAST({param} AS jsonb)))")
}

pub(super) fn json_records(param: &str, columns: &[(&str, &str)]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(name, ty)| {
            let pg = match *ty {
                "int" => "bigint",
                "real" => "double precision",
                _ => "text",
            };
            format!("{name} {pg}")
        })
        .collect();
    format!(
        "jsonb_to_recordset(CAST({param} AS jsonb)) AS x({})",
        cols.join(", ")
    )
}

pub(super) const ATTRIBUTE_KEYS: &str = "SELECT DISTINCT jsonb_object_keys(CAST(c.attributes AS jsonb)) AS key \
     FROM list_members lm JOIN contacts c ON c.id = lm.contact_id \
     WHERE lm.list_id = $1 AND octet_length(c.attributes) <= $2";

pub(super) const AUTOVACUUM_SETTING: &str =
    "SELECT setting FROM pg_settings WHERE name = 'autovacuum'";

pub(super) const SEED_CONTACTS: &str = "INSERT INTO contacts (org_id, address, name, attributes, created_at, updated_at) \
     SELECT $1, '+1' || (2000000000 + i), 'Contact ' || i, '{}', $3, $3 FROM generate_series(1, $2) AS s(i) \
     ON CONFLICT (org_id, address) DO NOTHING";

pub(super) const SEED_MEMBERS: &str = "INSERT INTO list_members (list_id, contact_id, added_at) \
     SELECT $1, c.id, $4 FROM generate_series(1, $3) AS s(i) \
     JOIN contacts c ON c.org_id = $2 AND c.address = '+1' || (2000000000 + s.i) \
     ON CONFLICT DO NOTHING";

/// The texts of the JSON array bound at `param`, as a subquery.
pub(super) fn json_texts(param: &str) -> String {
    format!("(SELECT value FROM jsonb_array_elements_text(CAST({param} AS jsonb)))")
}

/// Whether the migrations table exists (0 or 1).
pub(super) const MIGRATIONS_TABLE_COUNT: &str = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'herald_migrations' AND table_schema = current_schema()";

/// A JSON object built from `members` (`'key', value, …`).
pub(super) fn json_object(members: &str) -> String {
    format!("json_build_object({members})")
}

/// How a segment filter's attribute name is bound: the key itself.
pub(super) fn attribute_key(key: &str) -> String {
    key.to_string()
}

/// Contact `c`'s attribute named by the parameter `key` as text, NULL when absent.
pub(super) fn attribute_text(key: &str) -> String {
    format!("(c.attributes::jsonb ->> {key})")
}

/// The attribute as a number: a JSON number, or text of at most 40 characters that reads
/// as one (`-?[0-9]+(\.[0-9]+)?` once trimmed of spaces; longer would overflow `float8`);
/// NULL otherwise.
pub(super) fn attribute_number(key: &str) -> String {
    format!(
        "(CASE jsonb_typeof(c.attributes::jsonb -> {key}) WHEN 'number' THEN (c.attributes::jsonb ->> {key})::float8 \
         WHEN 'string' THEN (CASE WHEN btrim(c.attributes::jsonb ->> {key}, ' ') ~ '^-?[0-9]+(\\.[0-9]+)?$' \
              AND length(btrim(c.attributes::jsonb ->> {key}, ' ')) <= 40 \
              THEN btrim(c.attributes::jsonb ->> {key}, ' ')::float8 END) END)"
    )
}

/// The first ten characters of `text` when they are a `YYYY-MM-DD` date, else NULL.
pub(super) fn date_prefix(text: &str) -> String {
    format!(
        "(CASE WHEN {text} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}' THEN substr({text}, 1, 10) END)"
    )
}

/// `text` with only ASCII letters lowered, as SQLite's `lower` does.
pub(super) fn ascii_lower(text: &str) -> String {
    format!("translate({text}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')")
}

/// The attribute keys of the organisation's (`$1`) contacts matching `condition`, those
/// of readable size (`$2`).
pub(super) fn attribute_keys_where(condition: &str) -> String {
    format!(
        "SELECT DISTINCT jsonb_object_keys(CAST(c.attributes AS jsonb)) AS key FROM contacts c \
         WHERE c.org_id = $1 AND octet_length(c.attributes) <= $2 AND ({condition})"
    )
}
