//! Harness for the process-level tests: a fresh database per test on either store, the
//! `herald` binary run as a child process with fast recovery settings, bounded waits, and
//! guards that kill every child process (and drop the PostgreSQL database) even when a test
//! panics.

#![allow(dead_code)]

use herald::ids::CampaignId;
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyPoolOptions;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The longest any single wait in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Settings every child gets, so that recovery and scheduling are quick.
const FAST_ENV: &[(&str, &str)] = &[
    ("HERALD_HEARTBEAT_INTERVAL_MS", "200"),
    ("HERALD_INSTANCE_STALE_AFTER_MS", "1500"),
    ("HERALD_RECONCILE_INTERVAL_MS", "300"),
    ("HERALD_IDLE_POLL_MS", "50"),
    ("HERALD_SCHEDULER_INTERVAL_MS", "200"),
    // The fake providers and SMTP servers listen on loopback, which the outbound guard
    // refuses by default.
    ("HERALD_OUTBOUND_ALLOW_PRIVATE", "true"),
];

/// Every message status, i.e. every counter of `campaign status --json`.
pub const MESSAGE_STATUSES: [&str; 11] = [
    "queued",
    "in_flight",
    "retry_wait",
    "sent",
    "delivered",
    "read",
    "undelivered",
    "failed",
    "skipped",
    "cancelled",
    "in_doubt",
];

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

/// Generates `mod NAME { #[test] fn sqlite() ; #[test] fn postgres() }` calling `NAME(backend)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::support::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                super::$name($crate::support::Backend::Postgres);
            }
        }
    )*};
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
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for database set-up")
        .block_on(f)
}

/// Runs one admin statement on the PostgreSQL server; a server that does not answer fails
/// the test (the suite never skips a store).
fn postgres_admin(admin_url: &str, sql: &str) -> Result<(), String> {
    block_on(async {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(admin_url)
            .await
            .map_err(|e| {
                format!(
                    "the process tests need a PostgreSQL server and none answered at {admin_url}: {e}. \
                     Start one (trust auth for user postgres on 127.0.0.1:5432) or set \
                     HERALD_TEST_POSTGRES_URL to an admin URL of one that runs"
                )
            })?;
        let r = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .map(|_| ())
            .map_err(|e| format!("`{sql}` failed: {e}"));
        pool.close().await;
        r
    })
}

/// The first column of every row of a query on the test database, for facts the CLI does
/// not show.
pub fn query_column<T>(url: &str, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + Unpin,
{
    block_on(async {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(20))
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        let rows: Vec<T> = sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"));
        pool.close().await;
        rows
    })
}

/// One integer from a query on the test database.
pub fn query_i64(url: &str, sql: &str) -> i64 {
    query_column::<i64>(url, sql)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("`{sql}` returned no row"))
}

/// The first column (text) of every row of a query on the test database.
pub fn query_strings(url: &str, sql: &str) -> Vec<String> {
    query_column(url, sql)
}

/// A database of the test's own: a file in a temporary directory, or a fresh PostgreSQL
/// database dropped (WITH (FORCE)) when the guard goes.
pub struct Db {
    pub backend: Backend,
    pub url: String,
    postgres: Option<(String, String)>,
}

impl Db {
    fn new(backend: Backend, dir: &Path) -> Db {
        match backend {
            Backend::Sqlite => Db {
                backend,
                url: format!("sqlite://{}/herald.db", dir.display()),
                postgres: None,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("herald_proc_{:016x}", rand::random::<u64>());
                let mut attempt = 0u64;
                loop {
                    // Concurrent CREATE DATABASE can collide on the template; retry a little.
                    match postgres_admin(&admin, &format!("CREATE DATABASE \"{name}\"")) {
                        Ok(()) => break,
                        Err(e) if attempt < 10 && !e.contains("none answered") => {
                            attempt += 1;
                            eprintln!("{e}; retrying");
                            std::thread::sleep(Duration::from_millis(100 * attempt));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                Db {
                    backend,
                    url: with_database(&admin, &name),
                    postgres: Some((admin, name)),
                }
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = postgres_admin(admin, &sql) {
                eprintln!("could not drop test database {name}: {e}");
            }
        }
    }
}

/// What a finished CLI command left behind.
#[derive(Debug)]
pub struct Run {
    pub args: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        format!(
            "`herald {}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

/// One test's world: a temporary directory (CSV files, logs, the SQLite file) and a database.
pub struct Herald {
    // Field order is drop order: the database goes before the directory holding it.
    pub db: Db,
    pub dir: tempfile::TempDir,
    extra_env: Vec<(String, String)>,
}

impl Herald {
    pub fn new(backend: Backend) -> Herald {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = Db::new(backend, dir.path());
        Herald {
            db,
            dir,
            extra_env: Vec::new(),
        }
    }

    /// A Herald on a migrated database.
    pub fn migrated(backend: Backend) -> Herald {
        let h = Herald::new(backend);
        let out = h.ok(&["migrate"]);
        assert!(out.contains("migrated"), "unexpected migrate output: {out}");
        h
    }

    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    pub fn url(&self) -> &str {
        &self.db.url
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An environment variable for every child started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.to_string(), value.to_string()));
    }

    /// `herald --database-url URL ARGS…` with a hermetic environment: no inherited HERALD_*
    /// or RUST_LOG, the fast recovery settings, and the temporary directory as working
    /// directory (so no stray ./herald.toml is read).
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.command_with_url(self.url(), args, env)
    }

    /// Like [`Herald::command`] with another database URL.
    pub fn command_with_url(&self, url: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        for (k, _) in std::env::vars() {
            if k.starts_with("HERALD_") || k == "RUST_LOG" || k == "RUST_BACKTRACE" {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in FAST_ENV {
            cmd.env(k, v);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.current_dir(self.dir.path());
        cmd.arg("--database-url").arg(url);
        cmd.args(args);
        cmd
    }

    /// Runs a one-shot command to its end (killed and failed after the deadline).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_bounded(self.command(args, env), args.join(" "))
    }

    pub fn run_with_url(&self, url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_bounded(self.command_with_url(url, args, env), args.join(" "))
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(r.success(), "expected success: {}", r.describe());
        r.stdout
    }

    /// Runs a command that must fail; returns it for the message checks.
    pub fn fails(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert!(
            r.code.is_some_and(|c| c != 0),
            "expected a non-zero exit: {}",
            r.describe()
        );
        assert_clean_failure(&r);
        r
    }

    /// Starts a long-running command (`serve`, `worker`) with its output in log files.
    pub fn spawn(&self, args: &[&str], name: &str) -> Proc {
        self.spawn_env(args, &[], name)
    }

    pub fn spawn_env(&self, args: &[&str], env: &[(&str, &str)], name: &str) -> Proc {
        let n = std::fs::read_dir(self.dir.path()).map_or(0, Iterator::count);
        let log = self.path(&format!("{name}-{n}.log"));
        let out = self.path(&format!("{name}-{n}.out"));
        let mut cmd = self.command(args, env);
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("a stdout file"))
            .stderr(std::fs::File::create(&log).expect("a log file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start herald {}: {e}", args.join(" ")));
        Proc {
            child: Some(child),
            name: name.to_string(),
            log,
        }
    }

    /// Writes a CSV of `n` distinct phone contacts with a `city` attribute.
    pub fn contacts_csv(&self, file: &str, n: usize) -> PathBuf {
        let mut s = String::from("address,name,city\n");
        for i in 0..n {
            writeln!(s, "+1415{:07},Contact {i},City{}", 5_000_000 + i, i % 7).expect("write");
        }
        let path = self.path(file);
        std::fs::write(&path, s).expect("write the CSV");
        path
    }

    /// Imports `n` generated contacts into `list`.
    pub fn import_contacts(&self, list: &str, n: usize) {
        let csv = self.contacts_csv(&format!("{list}.csv"), n);
        let out = self.ok(&[
            "contacts",
            "import",
            csv.to_str().expect("utf-8 path"),
            "--list",
            list,
        ]);
        assert_eq!(out.trim(), format!("imported {n}, updated 0, rejected 0"));
    }

    /// Creates a sandbox channel with extra flags; returns its name.
    pub fn sandbox_channel(&self, name: &str, flags: &[&str]) -> String {
        let mut args = vec!["channel", "create", "--name", name, "--kind", "sandbox"];
        args.extend_from_slice(flags);
        let out = self.ok(&args);
        out.trim()
            .strip_prefix("chn_")
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("channel create printed {out:?}, not an id (chn_N)"));
        name.to_string()
    }

    /// Creates a campaign; returns its id (the only thing `campaign create` prints).
    pub fn create_campaign(&self, name: &str, list: &str, channel: &str, extra: &[&str]) -> i64 {
        let mut args = vec![
            "campaign",
            "create",
            "--name",
            name,
            "--list",
            list,
            "--channel",
            channel,
            "--body",
            "Hi {{ name }} from {{ city }}",
        ];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        assert_eq!(
            out.lines().count(),
            1,
            "campaign create printed more than an id: {out:?}"
        );
        out.trim()
            .strip_prefix("cmp_")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("campaign create printed {out:?}, not an id (cmp_N)"))
    }

    /// `campaign resend ID EXTRA…`: the new draft's id (all it prints on stdout) and what
    /// it said on stderr (how many recipients, who was left out).
    pub fn resend(&self, id: i64, extra: &[&str]) -> (i64, String) {
        let id = id.to_string();
        let mut args = vec!["campaign", "resend", id.as_str()];
        args.extend_from_slice(extra);
        let r = self.run(&args);
        assert!(r.success(), "{}", r.describe());
        let draft = r
            .stdout
            .trim()
            .strip_prefix("cmp_")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("resend printed {:?}, not an id", r.stdout));
        (draft, r.stderr)
    }

    pub fn status(&self, id: i64) -> Value {
        let out = self.ok(&["campaign", "status", &id.to_string(), "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}"))
    }

    /// Polls `campaign status --json` until `done` holds; fails after `timeout` with the last
    /// status and the logs of `procs`.
    pub fn wait_status(
        &self,
        id: i64,
        what: &str,
        timeout: Duration,
        procs: &[&Proc],
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status(id);
            if done(&s) {
                return s;
            }
            if start.elapsed() > timeout {
                let logs: String = procs.iter().map(|p| p.log_tail(40)).collect();
                panic!(
                    "[{}] campaign {id} did not reach `{what}` within {timeout:?}; last status: {s}\n{logs}",
                    self.backend().name()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_completed(&self, id: i64, procs: &[&Proc]) -> Value {
        self.wait_status(id, "completed", DEADLINE, procs, |s| {
            s["status"] == "completed"
        })
    }

    /// `channel stats NAME --json` (optionally one campaign).
    pub fn channel_stats(&self, channel: &str, campaign: Option<CampaignId>) -> Value {
        let id = campaign.map(|c| c.to_string());
        let mut args = vec!["channel", "stats", channel, "--json"];
        if let Some(id) = &id {
            args.extend_from_slice(&["--campaign", id]);
        }
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stats are not JSON ({e}): {out}"))
    }

    /// `campaign events ID --json` as (from, to, actor) triples.
    pub fn events(&self, id: i64) -> Vec<(String, String, String)> {
        let out = self.ok(&["campaign", "events", &id.to_string(), "--json"]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("events are not JSON ({e}): {out}"));
        v.as_array()
            .unwrap_or_else(|| panic!("events are not an array: {out}"))
            .iter()
            .map(|e| {
                (
                    e["from_status"].as_str().unwrap_or("-").to_string(),
                    e["to_status"].as_str().expect("to_status").to_string(),
                    e["actor"].as_str().expect("actor").to_string(),
                )
            })
            .collect()
    }

    /// `doctor --json`: (exit code, report).
    pub fn doctor(&self) -> (Option<i32>, Value) {
        let r = self.run(&["doctor", "--json"]);
        let v = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}): {}", r.describe()));
        (r.code, v)
    }

    pub fn assert_healthy(&self) {
        let (code, report) = self.doctor();
        assert_eq!(code, Some(0), "doctor is not happy: {report:#}");
        assert_eq!(report["healthy"], Value::Bool(true), "doctor: {report:#}");
    }
}

/// Spawns the command, collects its output, and kills it if it outlives the deadline.
fn run_bounded(mut cmd: Command, args: String) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run herald {args}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for herald") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            // What it printed before it stopped answering says where it was.
            panic!(
                "`herald {args}` did not finish within {DEADLINE:?}; killed\n--- its stdout ---\n{}\n--- its stderr ---\n{}",
                out_reader.join().unwrap_or_default(),
                err_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        args,
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// A failure must be a message, not a crash.
pub fn assert_clean_failure(r: &Run) {
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(
            !r.stderr.contains(bad),
            "`herald {}` crashed instead of explaining itself: {}",
            r.args,
            r.stderr
        );
    }
    // Warnings about the environment (e.g. autovacuum off on the server) may come first.
    let first_other = r
        .stderr
        .trim_start()
        .lines()
        .find(|line| !line.starts_with("warning: "))
        .unwrap_or_default();
    assert!(
        first_other.starts_with("error: "),
        "`herald {}` failed without an `error:` message: {}",
        r.args,
        r.stderr
    );
}

/// A running `herald serve` or `herald worker`; killed (SIGKILL) when dropped.
pub struct Proc {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running child").id()
    }

    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        strip_ansi(&raw)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- {} log ({}) ---\n{tail}\n",
            self.name,
            self.log.display()
        )
    }

    /// Fails the test if the process has already exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("a child");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "{} exited early with {status}\n{}",
                self.name,
                self.log_tail(60)
            );
        }
    }

    /// Waits until the log shows `listening addr=…`; returns that address.
    pub fn listen_addr(&mut self) -> String {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| l.contains("listening"))
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
            {
                return addr.trim_matches('"').to_string();
            }
            self.assert_running();
            assert!(
                start.elapsed() < DEADLINE,
                "{} never logged its listening address\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            self.assert_running();
            assert!(
                start.elapsed() < DEADLINE,
                "{} never logged {needle:?}\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; waits up to `timeout` for the exit and returns its status and how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let pid = self.pid().to_string();
        let start = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let child = self.child.as_mut().expect("a child");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let took = start.elapsed();
                self.child = None;
                return (status, took);
            }
            if start.elapsed() > timeout {
                let tail = self.log_tail(60);
                self.kill();
                panic!(
                    "{} did not exit within {timeout:?} of SIGTERM\n{tail}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
        self.kill();
    }
}

/// Removes ANSI colour sequences, in case the log is coloured despite NO_COLOR.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A counter of `campaign status --json`.
pub fn n(status: &Value, key: &str) -> i64 {
    status[key]
        .as_i64()
        .unwrap_or_else(|| panic!("status has no integer `{key}`: {status}"))
}

/// Sent or better: what the provider accepted, as Herald recorded it.
pub fn accepted(status: &Value) -> i64 {
    ["sent", "delivered", "read", "undelivered"]
        .iter()
        .map(|k| n(status, k))
        .sum()
}

/// The counters must add up to the total, and `pending` must be their pending part.
pub fn assert_counters_consistent(status: &Value) {
    let sum: i64 = MESSAGE_STATUSES.iter().map(|k| n(status, k)).sum();
    assert_eq!(
        sum,
        n(status, "total"),
        "counters do not add up to total: {status}"
    );
    let pending: i64 = ["queued", "in_flight", "retry_wait", "in_doubt"]
        .iter()
        .map(|k| n(status, k))
        .sum();
    assert_eq!(
        pending,
        n(status, "pending"),
        "pending is not queued+in_flight+retry_wait+in_doubt: {status}"
    );
}

/// A plain HTTP/1.1 GET over loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (code, _, body) = http_request(addr, "GET", path, &[]);
    (code, body)
}

/// A plain HTTP/1.1 request over loopback with extra headers: (status code, the response's
/// head with its status line, body).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let sock: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("`{addr}` is not a socket address: {e}"));
    assert!(
        sock.ip().is_loopback(),
        "tests talk to loopback only, not {addr}"
    );
    let mut stream = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n{extra}\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer to GET {path} failed: {e}"));
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: malformed response {text:?}"));
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status line in {head:?}"));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, head.to_string(), body)
}

/// The body of a `Transfer-Encoding: chunked` answer.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(len) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if len == 0 || rest.len() < len {
            break;
        }
        out.push_str(&rest[..len]);
        s = rest[len..].trim_start_matches("\r\n");
    }
    out
}

/// RFC 3339 time `secs` seconds from now.
pub fn rfc3339_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[path = "../shared/fake_twilio.rs"]
mod fake_twilio;
pub use fake_twilio::FakeTwilio;

impl FakeTwilio {
    fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    pub fn stats(&self) -> serde_json::Value {
        let (code, body) = http_get(self.addr(), "/_fake/stats?per_recipient=0");
        assert_eq!(code, 200, "fake stats: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("fake stats ({e}): {body}"))
    }

    /// Forgets every message received (`POST /_fake/reset`).
    pub fn reset(&self) {
        let (code, _, body) = http_request(self.addr(), "POST", "/_fake/reset", &[]);
        assert_eq!(code, 204, "fake reset: {body}");
    }
}
