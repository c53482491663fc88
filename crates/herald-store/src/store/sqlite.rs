//! The embedded SQLite store: one file, WAL, `synchronous=FULL`, foreign keys on.
//!
//! SQLite serialises writers, so the store keeps a single writing connection (claims and
//! group commits queue in-process instead of fighting over the file lock) and a few
//! readers. Every write transaction starts with `BEGIN IMMEDIATE` so another process (the
//! CLI next to a running `herald serve`) waits on the busy timeout instead of failing a
//! read-to-write upgrade.

use super::StoreError;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "sandbox_idempotent",
        include_str!("../../migrations/sqlite/0002_sandbox_idempotent.sql"),
    ),
    (
        3,
        "channel_secrets",
        include_str!("../../migrations/sqlite/0003_channel_secrets.sql"),
    ),
    (
        4,
        "webhook_events",
        include_str!("../../migrations/sqlite/0004_webhook_events.sql"),
    ),
    (
        5,
        "channel_rate",
        include_str!("../../migrations/sqlite/0005_channel_rate.sql"),
    ),
    (
        6,
        "receipt_message",
        include_str!("../../migrations/sqlite/0006_receipt_message.sql"),
    ),
    (
        7,
        "accounts",
        include_str!("../../migrations/sqlite/0007_accounts.sql"),
    ),
    (
        8,
        "webhook_scope",
        include_str!("../../migrations/sqlite/0008_webhook_scope.sql"),
    ),
    (
        9,
        "outcome_throughput",
        include_str!("../../migrations/sqlite/0009_outcome_throughput.sql"),
    ),
    (
        10,
        "channel_outage",
        include_str!("../../migrations/sqlite/0010_channel_outage.sql"),
    ),
    (
        11,
        "event_outbox",
        include_str!("../../migrations/sqlite/0011_event_outbox.sql"),
    ),
    (
        12,
        "event_emission",
        include_str!("../../migrations/sqlite/0012_event_emission.sql"),
    ),
    (
        13,
        "webhook_delivery",
        include_str!("../../migrations/sqlite/0013_webhook_delivery.sql"),
    ),
    (
        14,
        "auto_pause",
        include_str!("../../migrations/sqlite/0014_auto_pause.sql"),
    ),
    (
        15,
        "alerts",
        include_str!("../../migrations/sqlite/0015_alerts.sql"),
    ),
    (
        16,
        "delivery_sequence_index",
        include_str!("../../migrations/sqlite/0016_delivery_sequence_index.sql"),
    ),
    (
        17,
        "message_times",
        include_str!("../../migrations/sqlite/0017_message_times.sql"),
    ),
    (
        18,
        "channel_pricing",
        include_str!("../../migrations/sqlite/0018_channel_pricing.sql"),
    ),
    (
        19,
        "tracked_links",
        include_str!("../../migrations/sqlite/0019_tracked_links.sql"),
    ),
    (
        20,
        "whatsapp_templates",
        include_str!("../../migrations/sqlite/0020_whatsapp_templates.sql"),
    ),
    (
        21,
        "replies",
        include_str!("../../migrations/sqlite/0021_replies.sql"),
    ),
    (
        22,
        "segments",
        include_str!("../../migrations/sqlite/0022_segments.sql"),
    ),
    (
        23,
        "send_windows",
        include_str!("../../migrations/sqlite/0023_send_windows.sql"),
    ),
    (
        24,
        "campaign_email",
        include_str!("../../migrations/sqlite/0024_campaign_email.sql"),
    ),
    (
        25,
        "message_archives",
        include_str!("../../migrations/sqlite/0025_message_archives.sql"),
    ),
    (
        26,
        "campaign_message_range",
        include_str!("../../migrations/sqlite/0026_campaign_message_range.sql"),
    ),
];

/// Accepts `sqlite://path`, `sqlite:path` and `sqlite::memory:`; creates the file if needed.
pub(super) fn normalise_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

pub(super) async fn connect(url: &str) -> Result<(AnyPool, AnyPool), StoreError> {
    install_default_drivers();
    let shown = url;
    let url = normalise_url(url);
    let options = || {
        AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // The busy timeout first: switching to WAL reads the file's header and
                    // can meet another process's lock (a CLI beside `herald serve`).
                    conn.execute("PRAGMA busy_timeout = 15000").await?;
                    // WAL lets readers run beside the writer; FULL makes every commit durable.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
    };
    let write = options()
        .max_connections(1)
        .connect(&url)
        .await
        .map_err(|e| StoreError::connect(shown, e))?;
    let read = options()
        .max_connections(4)
        .connect(&url)
        .await
        .map_err(|e| StoreError::connect(shown, e))?;
    Ok((write, read))
}

pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// `length` of TEXT counts characters; of a BLOB, bytes.
pub(super) fn text_bytes(column: &str) -> String {
    format!("length(CAST({column} AS BLOB))")
}

/// Locks nothing: the single writer connection plus `BEGIN IMMEDIATE` already serialise.
pub(super) const LOCK_SUFFIX: &str = "";
pub(super) const SHARE_LOCK_SUFFIX: &str = "";
pub(super) const COUNTER_LOCK_SUFFIX: &str = "";
pub(super) const SHARED_GATE_COLUMN: &str = "";
pub(super) const EXCLUSIVE_GATE_COLUMN: &str = "";
pub(super) const SKIP_LOCKED_SUFFIX: &str = "";
pub(super) const MIGRATION_LOCK: Option<&str> = None;
pub(super) const FAN_OUT_LOCK: Option<&str> = None;
pub(super) const WEBHOOK_CLAIM_LOCK: Option<&str> = None;

/// A JSON array of integers, bound as text, as a subquery of ids.
pub(super) fn json_ids(param: &str) -> String {
    format!("(SELECT value FROM json_each({param}))")
}

/// A JSON array of objects, bound as text, as a table named `x` with the given columns.
pub(super) fn json_records(param: &str, columns: &[(&str, &str)]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
        .collect();
    format!("(SELECT {} FROM json_each({param})) AS x", cols.join(", "))
}

pub(super) const ATTRIBUTE_KEYS: &str = "SELECT DISTINCT j.key FROM list_members lm \
     JOIN contacts c ON c.id = lm.contact_id, json_each(c.attributes) j \
     WHERE lm.list_id = $1 AND octet_length(c.attributes) <= $2";

/// `$1` org, `$2` count, `$3` now: synthetic contacts for `herald bench`.
pub(super) const SEED_CONTACTS: &str = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $2) \
     INSERT INTO contacts (org_id, address, name, attributes, created_at, updated_at) \
     SELECT $1, '+1' || (2000000000 + i), 'Contact ' || i, '{}', $3, $3 FROM s WHERE true \
     ON CONFLICT (org_id, address) DO NOTHING";

pub(super) const SEED_MEMBERS: &str = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $3) \
     INSERT INTO list_members (list_id, contact_id, added_at) \
     SELECT $1, c.id, $4 FROM s JOIN contacts c ON c.org_id = $2 AND c.address = '+1' || (2000000000 + s.i) WHERE true \
     ON CONFLICT DO NOTHING";

/// The texts of the JSON array bound at `param`, as a subquery.
pub(super) fn json_texts(param: &str) -> String {
    format!("(SELECT value FROM json_each({param}))")
}

/// Whether the migrations table exists (0 or 1).
pub(super) const MIGRATIONS_TABLE_COUNT: &str =
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'herald_migrations'";

/// A JSON object built from `members` (`'key', value, …`).
pub(super) fn json_object(members: &str) -> String {
    format!("json_object({members})")
}

/// How a segment filter's attribute name is bound: a JSON path (`$."plan"`); the filter
/// language refuses names with `"` or `\`, which a path cannot quote.
pub(super) fn attribute_key(key: &str) -> String {
    format!("$.\"{key}\"")
}

/// Contact `c`'s attribute at the path bound to `key` as text, NULL when absent: text as
/// it is, booleans `true`/`false`, integers and plain decimals as PostgreSQL's `->>` writes
/// them (a number stored in exponent form, `1e20`, reads differently on the two).
pub(super) fn attribute_text(key: &str) -> String {
    format!(
        "(CASE json_type(c.attributes, {key}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
         ELSE CAST(json_extract(c.attributes, {key}) AS TEXT) END)"
    )
}

/// The attribute as a number: a JSON number, or text of at most 40 characters that reads
/// as one (`-?[0-9]+(\.[0-9]+)?` once trimmed of spaces), as on PostgreSQL; NULL
/// otherwise.
pub(super) fn attribute_number(key: &str) -> String {
    let t = format!("trim(json_extract(c.attributes, {key}))");
    let digits = format!("ltrim({t}, '-')");
    format!(
        "(CASE json_type(c.attributes, {key}) WHEN 'integer' THEN json_extract(c.attributes, {key}) \
         WHEN 'real' THEN json_extract(c.attributes, {key}) \
         WHEN 'text' THEN (CASE WHEN {digits} GLOB '[0-9]*' AND {digits} NOT GLOB '*[^0-9.]*' \
              AND {digits} NOT GLOB '*.*.*' AND {digits} NOT GLOB '*.' AND {t} NOT GLOB '--*' \
              AND length({t}) <= 40 \
              THEN CAST({t} AS REAL) END) END)"
    )
}

/// The first ten characters of `text` when they are a `YYYY-MM-DD` date, else NULL.
pub(super) fn date_prefix(text: &str) -> String {
    format!(
        "(CASE WHEN {text} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' THEN substr({text}, 1, 10) END)"
    )
}

/// `text` with ASCII letters lowered (SQLite's `lower` folds only those).
pub(super) fn ascii_lower(text: &str) -> String {
    format!("lower({text})")
}

/// The attribute keys of the organisation's (`$1`) contacts matching `condition`, those
/// of readable size (`$2`).
pub(super) fn attribute_keys_where(condition: &str) -> String {
    format!(
        "SELECT DISTINCT j.key FROM contacts c, json_each(c.attributes) j \
         WHERE c.org_id = $1 AND octet_length(c.attributes) <= $2 AND ({condition})"
    )
}
