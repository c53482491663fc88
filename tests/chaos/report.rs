//! One result per scenario and store: a JSON line as soon as it is known, and a table at
//! the end (the columns of RELIABILITY.md).

use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

pub struct Report {
    pub scenario: &'static str,
    pub store: &'static str,
    pub size: usize,
    pub instances: usize,
    /// What was done to it, in words ("5 × SIGKILL", "db stopped 10 s", "none").
    pub faults: String,
    /// SIGKILLs (and SIGTERMs for `sigterm`).
    pub kills: usize,
    /// From the last restart or fault (for a run without faults: from the campaign's start)
    /// to the terminal state, as observed by polling.
    pub recovery: Option<Duration>,
    pub in_doubt_total: Option<i64>,
    pub duplicates: Option<i64>,
    pub lost: Option<i64>,
    pub elapsed: Duration,
    pub violations: Vec<String>,
    /// Why the scenario does not apply to this store.
    pub not_applicable: Option<String>,
    pub extra: serde_json::Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &'static str, store: &'static str) -> Report {
        Report {
            scenario,
            store,
            size: 0,
            instances: 0,
            faults: "none".into(),
            kills: 0,
            recovery: None,
            in_doubt_total: None,
            duplicates: None,
            lost: None,
            elapsed: Duration::ZERO,
            violations: Vec::new(),
            not_applicable: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Records a violated pass criterion (the scenario goes on, to report the rest).
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let msg = what();
            eprintln!("[{} {}] VIOLATION: {msg}", self.scenario, self.store);
            self.violations.push(msg);
        }
    }

    pub fn note(&mut self, key: &str, value: impl Into<Value>) {
        self.extra.insert(key.to_string(), value.into());
    }

    pub fn passed(&self) -> bool {
        self.not_applicable.is_none() && self.violations.is_empty()
    }

    pub fn failed(&self) -> bool {
        self.not_applicable.is_none() && !self.violations.is_empty()
    }

    pub fn verdict(&self) -> String {
        match &self.not_applicable {
            Some(why) => why.clone(),
            None if self.violations.is_empty() => "pass".into(),
            None => "FAIL".into(),
        }
    }

    pub fn json(&self, seed: u64, full: bool) -> Value {
        json!({
            "scenario": self.scenario,
            "store": self.store,
            "result": self.verdict(),
            "size": self.size,
            "instances": self.instances,
            "faults": self.faults,
            "kills": self.kills,
            "recovery_ms": self.recovery.map(|d| d.as_millis() as u64),
            "in_doubt_total": self.in_doubt_total,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "seed": seed,
            "full": full,
            "violations": self.violations,
            "details": self.extra,
        })
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A Markdown table of the reports.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| scenario | store | size | instances | kills / faults | recovery time | in-doubt | duplicates | lost | result |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---|---:|---:|---:|---:|---|");
    for r in reports {
        if r.not_applicable.is_some() {
            let _ = writeln!(
                s,
                "| {} | {} | - | - | - | - | - | - | - | {} |",
                r.scenario,
                r.store,
                r.verdict()
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.store,
            r.size,
            r.instances,
            r.faults,
            r.recovery
                .map_or_else(|| "-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            opt(r.in_doubt_total),
            opt(r.duplicates),
            opt(r.lost),
            r.verdict()
        );
    }
    let passed = reports.iter().filter(|r| r.passed()).count();
    let failed = reports.iter().filter(|r| r.failed()).count();
    let na = reports.len() - passed - failed;
    let _ = writeln!(
        s,
        "\n{passed} passed, {failed} failed, {na} not applicable (not counted as passes)"
    );
    s
}
