//! `soak`: many campaigns back to back on one growing database, to see whether sending slows
//! as history grows. Each campaign goes to the same list through a sandbox channel that
//! answers in 5 ms, fails 5 % of sends transiently and 1 % permanently and sends
//! `delivered` receipts, with two `herald serve` instances on PostgreSQL (one on SQLite).
//!
//! Every campaign must complete with nothing lost, no duplicate and exact counters; the
//! durations (the campaign's own `started_at` → `completed_at`), its first pass (from the
//! start until every message had its first attempt, as the harness polls it), the
//! instances' RSS and the database's size are reported, never asserted (speed is a figure,
//! not a test). At full size
//! (`scripts/chaos soak`) it is the soak of BENCHMARKS.md: 150 campaigns of 5,000.

use crate::harness::{
    Fleet, MESSAGE_STATUSES, Role, StoreKind, TERMINAL_STATUSES, World, n, query_ids, state,
};
use crate::scenarios::{
    CHANNEL, Ctx, check_doctor_and_processes, create_campaign, must_reach, prepare_with,
};
use serde_json::Value;
use std::cell::Cell;
use std::time::Instant;

/// How many of the first and of the last campaigns are averaged for the growth figure.
const WINDOW: usize = 10;

pub fn soak(ctx: &mut Ctx) {
    let campaigns = ctx.cfg.soak_campaigns;
    let size = ctx.cfg.soak_messages;
    let w = World::new(ctx.store);
    prepare_with(
        &w,
        size,
        5,
        true,
        &["--fail-rate", "0.05", "--permanent-fail-rate", "0.01"],
    );
    let instances = match ctx.store {
        StoreKind::Sqlite => 1,
        StoreKind::Postgres => 2,
    };
    ctx.report.size = size;
    ctx.report.instances = instances;
    ctx.report.faults = format!("none ({campaigns} campaigns back to back)");
    let mut fleet = Fleet::start(
        &w,
        &vec![Role::Serve; instances],
        ctx.cfg.concurrency,
        &mut ctx.rng,
    );

    let mut durations_ms: Vec<i64> = Vec::with_capacity(campaigns);
    let mut first_pass_ms: Vec<i64> = Vec::with_capacity(campaigns);
    let mut rss_kb: Vec<u64> = Vec::new();
    let (mut sent, mut failed, mut duplicates, mut lost) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..campaigns {
        let id = create_campaign(&w, &[]);
        w.ok(&["campaign", "start", &id.to_string()]);
        let started = Instant::now();
        // The first pass: every message had its first attempt (retries may still wait for
        // their back-off). Sending speed, apart from the retries' random back-off chains,
        // which decide most of a campaign's duration at this size.
        let first_pass = Cell::new(None);
        let done = must_reach(&w, id, &mut fleet, "completed", |s| {
            if first_pass.get().is_none() && n(s, "queued") == 0 && n(s, "in_flight") == 0 {
                first_pass.set(Some(started.elapsed()));
            }
            state(s) == "completed" && n(s, "pending") == 0
        });
        first_pass_ms.push(first_pass.get().map_or(0, |d| d.as_millis() as i64));
        let r = &mut ctx.report;
        let ms = elapsed_ms(&done);
        r.check(ms.is_some(), || {
            format!("campaign {id} has no started_at / completed_at: {done}")
        });
        durations_ms.push(ms.unwrap_or(0));

        // Nothing lost, counters exact, every accepted send at the provider exactly once.
        let total = n(&done, "total");
        let all: i64 = MESSAGE_STATUSES.iter().map(|k| n(&done, k)).sum();
        let terminal: i64 = TERMINAL_STATUSES.iter().map(|k| n(&done, k)).sum();
        r.check(
            total == size as i64 && all == total && terminal == total,
            || format!("campaign {id} (#{i}): counters do not add up to {size}: {done}"),
        );
        let stats = w.stats(CHANNEL, id);
        let distinct = stats["distinct_recipients"].as_i64().unwrap_or(-1);
        let dups = stats["duplicates"].as_i64().unwrap_or(-1);
        let acc = crate::harness::accepted(&done);
        r.check(distinct == acc && dups == 0, || {
            format!("campaign {id} (#{i}): the provider holds {distinct} recipients ({dups} duplicates), Herald counts {acc} accepted")
        });
        r.check(n(&done, "in_doubt_total") == 0, || {
            format!("campaign {id} (#{i}) had messages in doubt with nothing killed: {done}")
        });
        sent += acc;
        failed += n(&done, "failed");
        duplicates += dups.max(0);
        lost += (size as i64 - total).max(0) + (acc - distinct).max(0);
        rss_kb.extend(fleet.pids().into_iter().flatten().filter_map(rss_of));
        if ctx.cfg.full && (i + 1) % 10 == 0 {
            eprintln!(
                "[soak {}] {} campaigns, last {:.2} s",
                ctx.store.name(),
                i + 1,
                durations_ms[i] as f64 / 1000.0
            );
        }
    }

    let r = &mut ctx.report;
    check_doctor_and_processes(r, &w, &mut fleet);

    r.duplicates = Some(duplicates);
    r.lost = Some(lost);
    r.in_doubt_total = Some(0);
    r.note("campaigns", campaigns);
    r.note("accepted", sent);
    r.note("failed", failed);
    let window = WINDOW.min(campaigns / 3).max(1);
    r.note("window", window);
    // Each series: every campaign's figure in seconds, and the means of its first and last
    // `window`.
    let mut series = |name: &str, ms: &[i64]| {
        let first = mean_s(&ms[..window.min(ms.len())]);
        let last = mean_s(&ms[ms.len().saturating_sub(window)..]);
        r.note(&format!("{name}_first_mean_s"), round2(first));
        r.note(&format!("{name}_last_mean_s"), round2(last));
        if first > 0.0 {
            r.note(
                &format!("{name}_growth_pct"),
                round2((last / first - 1.0) * 100.0),
            );
        }
        let all: Vec<f64> = ms.iter().map(|&ms| round2(ms as f64 / 1000.0)).collect();
        r.note(&format!("{name}_s"), all);
    };
    series("duration", &durations_ms);
    series("first_pass", &first_pass_ms);
    if let (Some(lo), Some(hi)) = (rss_kb.iter().min(), rss_kb.iter().max()) {
        r.note("rss_mb_min", round2(*lo as f64 / 1024.0));
        r.note("rss_mb_max", round2(*hi as f64 / 1024.0));
    }
    let messages = query_ids(w.url(), "SELECT COUNT(*) FROM messages")
        .first()
        .copied()
        .unwrap_or(0);
    let (database, message_rows) = sizes(&w, ctx.store);
    r.note("messages", messages);
    r.note("database_mb", round2(database as f64 / 1_048_576.0));
    if messages > 0 {
        r.note("database_bytes_per_message", database / messages);
        if let Some(rows) = message_rows {
            r.note("messages_table_bytes_per_row", rows / messages);
        }
    }
}

/// The campaign's own duration, from its status: `completed_at - started_at`.
fn elapsed_ms(status: &Value) -> Option<i64> {
    let at = |k: &str| {
        status[k]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    Some((at("completed_at")? - at("started_at")?).num_milliseconds())
}

fn mean_s(ms: &[i64]) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    ms.iter().sum::<i64>() as f64 / ms.len() as f64 / 1000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Resident set size of a process in KiB (Linux `/proc/PID/status`).
fn rss_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// (whole database, `messages` with its indexes and TOAST when the store can tell) in bytes.
fn sizes(w: &World, store: StoreKind) -> (i64, Option<i64>) {
    let one = |sql: &str| query_ids(w.url(), sql).first().copied().unwrap_or(0);
    match store {
        StoreKind::Postgres => (
            one("SELECT pg_database_size(current_database())"),
            Some(one("SELECT pg_total_relation_size('messages')")),
        ),
        StoreKind::Sqlite => (
            one("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"),
            None,
        ),
    }
}
