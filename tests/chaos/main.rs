//! The chaos harness: real `herald serve` / `herald worker` processes against a real
//! database (SQLite with one instance, PostgreSQL with several), killed, stopped, starved
//! of their database, slowed down, paused and cancelled mid-campaign; the outcome is checked
//! only through what a user can see (CLI `--json`, HTTP, the sandbox provider's record).
//!
//! `cargo test --test chaos` runs every scenario at CI size (a few thousand messages, 3 s
//! database outage). `scripts/chaos` runs them at full size (`HERALD_CHAOS_FULL=1`: 20,000
//! messages, 10 s outage) in a release build; its figures are in RELIABILITY.md.
//!
//! Environment:
//! - `HERALD_CHAOS_FULL=1`: full size.
//! - `HERALD_CHAOS_SEED=N`: the seed of every random choice (printed on every run).
//! - `HERALD_CHAOS_ONLY=kill9,multi:postgres`: only these scenarios (optionally one store).
//! - `HERALD_CHAOS_MESSAGES=N`: campaign size (overrides the default of the mode).
//! - `HERALD_CHAOS_REPEAT=N`: run every selected scenario N times (a fresh world each).
//! - `HERALD_CHAOS_OUTAGES=N`: database stops in one `db-restart` run (default 1).
//! - `HERALD_TEST_POSTGRES_URL`: admin URL of the shared PostgreSQL server.
//! - `HERALD_CHAOS_BIN`: the `herald` binary to drive (default: cargo's).
//! - `HERALD_CHAOS_SOAK_CAMPAIGNS=N`, `HERALD_CHAOS_SOAK_MESSAGES=N`: `soak`'s campaigns and
//!   their size (full: 150 of 5,000; CI: 5 of 400).
//! - `HERALD_CHAOS_KEEP=1`: keep each world's directory (instance logs) instead of removing it.
//!
//! Every scenario prints one JSON line as it ends, and a table follows at the end. They go
//! straight to stdout, so they show even when the test harness captures output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod harness;
mod report;
mod scenarios;
mod soak;

use harness::StoreKind;
use rand::SeedableRng;
use report::Report;
use std::io::Write;
use std::time::{Duration, Instant};

pub struct Config {
    pub full: bool,
    pub seed: u64,
    /// Campaign size of every scenario but `slow-provider`.
    pub messages: usize,
    /// Campaign size where instances keep sending while the harness acts (`multi-kill9`,
    /// `pause-resume-cancel`, `sigterm` on PostgreSQL): at CI size they need more work to
    /// fit their moments in before the campaign ends.
    pub busy_messages: usize,
    /// Campaign size of `slow-provider` (every send takes 2.5 s).
    pub slow_messages: usize,
    /// How long `db-restart` keeps the database down.
    pub outage: Duration,
    /// How many times `db-restart` stops the database (1 unless HERALD_CHAOS_OUTAGES).
    pub outages: usize,
    /// Runs of every selected scenario (HERALD_CHAOS_REPEAT), each in a fresh world.
    pub repeat: usize,
    pub latency_ms: u64,
    pub concurrency: usize,
    /// SIGKILLs in `kill9` and `multi-kill9`.
    pub kills: usize,
    /// Instances on PostgreSQL.
    pub pg_instances: usize,
    /// Campaigns `soak` runs back to back (HERALD_CHAOS_SOAK_CAMPAIGNS).
    pub soak_campaigns: usize,
    /// Recipients of each of them (HERALD_CHAOS_SOAK_MESSAGES).
    pub soak_messages: usize,
    only: Vec<(String, Option<String>)>,
}

impl Config {
    fn from_env() -> Config {
        let full = std::env::var("HERALD_CHAOS_FULL").is_ok_and(|v| v != "0" && !v.is_empty());
        let seed = std::env::var("HERALD_CHAOS_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
                    % 1_000_000_007
            });
        let messages =
            env_usize("HERALD_CHAOS_MESSAGES").unwrap_or(if full { 20_000 } else { 5_000 });
        let only = std::env::var("HERALD_CHAOS_ONLY")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once(':') {
                Some((sc, st)) => (sc.to_string(), Some(st.to_string())),
                None => (s.to_string(), None),
            })
            .collect();
        Config {
            full,
            seed,
            messages,
            busy_messages: messages.max(if full { 20_000 } else { 5_000 }),
            slow_messages: if full { 500 } else { 400 },
            outage: Duration::from_secs(if full { 10 } else { 3 }),
            outages: env_usize("HERALD_CHAOS_OUTAGES").unwrap_or(1),
            repeat: env_usize("HERALD_CHAOS_REPEAT").unwrap_or(1).max(1),
            latency_ms: 20,
            concurrency: 200,
            kills: 5,
            pg_instances: 3,
            soak_campaigns: env_usize("HERALD_CHAOS_SOAK_CAMPAIGNS")
                .unwrap_or(if full { 150 } else { 5 })
                .max(1),
            soak_messages: env_usize("HERALD_CHAOS_SOAK_MESSAGES").unwrap_or(if full {
                5_000
            } else {
                400
            }),
            only,
        }
    }

    fn selected(&self, scenario: &str, store: StoreKind) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|(sc, st)| sc == scenario && st.as_deref().is_none_or(|st| st == store.name()))
    }
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|s| s.trim().parse().ok())
}

/// Straight to stdout: not captured by the test harness.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// A seed of its own per scenario and store, so one of them can be rerun alone.
fn scenario_seed(seed: u64, scenario: &str, store: StoreKind) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scenario.bytes().chain(store.name().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "panic".into())
}

fn run_one(cfg: &Config, scenario: &'static str, store: StoreKind, round: usize) -> Report {
    let mut report = Report::new(scenario, store.name());
    if let Some(why) = scenarios::not_applicable(scenario, store) {
        report.not_applicable = Some(why.to_string());
        return report;
    }
    let started = Instant::now();
    let mut ctx = scenarios::Ctx {
        cfg,
        store,
        rng: rand::rngs::StdRng::seed_from_u64(
            scenario_seed(cfg.seed, scenario, store).wrapping_add(round as u64),
        ),
        report,
        rate: None,
        left_at_last_fault: None,
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenarios::run(scenario, &mut ctx)
    }));
    let mut report = ctx.report;
    if let Err(e) = outcome {
        report
            .violations
            .push(format!("harness: {}", panic_message(&*e)));
    }
    report.elapsed = started.elapsed();
    report
}

#[test]
fn chaos() {
    let cfg = Config::from_env();
    emit(&format!(
        "chaos: {} size, seed {} (rerun with HERALD_CHAOS_SEED={}), {} messages, latency {} ms, concurrency {}, {} PostgreSQL instances, herald {}",
        if cfg.full { "full" } else { "CI" },
        cfg.seed,
        cfg.seed,
        cfg.messages,
        cfg.latency_ms,
        cfg.concurrency,
        cfg.pg_instances,
        harness::herald_bin(),
    ));
    let started = Instant::now();
    let mut reports = Vec::new();
    for scenario in scenarios::SCENARIOS {
        for store in StoreKind::ALL {
            if !cfg.selected(scenario, store) {
                continue;
            }
            let rounds = if scenarios::not_applicable(scenario, store).is_some() {
                1
            } else {
                cfg.repeat
            };
            for round in 0..rounds {
                let r = run_one(&cfg, scenario, store, round);
                emit(&r.json(cfg.seed, cfg.full).to_string());
                reports.push(r);
            }
        }
    }
    assert!(
        !reports.is_empty(),
        "HERALD_CHAOS_ONLY selected no scenario"
    );
    emit(&format!(
        "\n{}chaos: {:.1} s in all\n",
        report::table(&reports),
        started.elapsed().as_secs_f64()
    ));
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.failed())
        .map(|r| format!("{} on {}: {}", r.scenario, r.store, r.violations.join("; ")))
        .collect();
    assert!(
        failed.is_empty(),
        "chaos scenarios failed (seed {}):\n{}",
        cfg.seed,
        failed.join("\n")
    );
}
