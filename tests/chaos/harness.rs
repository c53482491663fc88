//! What the chaos scenarios drive and look at: a database of their own (a SQLite file, a
//! fresh database on the shared PostgreSQL server, or a private PostgreSQL cluster), real
//! `herald serve` / `herald worker` processes, and only what a user can see: the CLI's
//! `--json` output, HTTP (`/readyz`, `/metrics`) and the sandbox provider's own record.
//!
//! Every wait has a deadline, every child is killed when its guard goes (panics included),
//! every temporary directory and database is removed.

use crate::cluster::PgCluster;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyPoolOptions;
use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The longest a one-shot CLI command may take.
pub const CLI_DEADLINE: Duration = Duration::from_secs(30);
/// The longest a process may take to come up.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How often progress is polled.
pub const POLL: Duration = Duration::from_millis(10);

/// Settings every child gets, so that recovery is quick (a scenario may override them).
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

/// Every counter of `campaign status --json`.
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

/// The statuses a message ends in.
pub const TERMINAL_STATUSES: [&str; 7] = [
    "sent",
    "delivered",
    "read",
    "undelivered",
    "failed",
    "skipped",
    "cancelled",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub const ALL: [StoreKind; 2] = [StoreKind::Sqlite, StoreKind::Postgres];

    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// The `herald` binary under test: cargo's, unless HERALD_CHAOS_BIN names a copy (so a
/// long run is not disturbed by a rebuild of target/).
pub fn herald_bin() -> String {
    std::env::var("HERALD_CHAOS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").to_string())
}

pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string())
}

/// `postgres://user@host:port/admin?opts` with the database name replaced by `db`.
pub fn with_database(admin_url: &str, db: &str) -> String {
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

/// Runs one admin statement; a PostgreSQL server that does not answer fails the scenario
/// (the harness never skips a store).
pub fn postgres_admin(admin_url: &str, sql: &str) -> Result<(), String> {
    block_on(async {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(admin_url)
            .await
            .map_err(|e| {
                format!(
                    "the chaos harness needs a PostgreSQL server and none answered at {admin_url}: {e}. \
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

/// The first column (an integer) of every row `sql` returns, read straight from the
/// scenario's database: what the CLI's counters cannot tell, such as which messages.
pub fn query_ids(url: &str, sql: &str) -> Vec<i64> {
    block_on(async {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("the chaos harness cannot open {url}: {e}"));
        let rows = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"));
        pool.close().await;
        rows
    })
}

/// The scenario's database; removed when the guard goes.
pub enum Db {
    Sqlite {
        url: String,
    },
    /// A fresh database on the shared server, dropped WITH (FORCE) at the end.
    Shared {
        url: String,
        admin: String,
        name: String,
    },
    /// A PostgreSQL cluster of the scenario's own, which it may stop and start.
    Private {
        url: String,
        cluster: PgCluster,
    },
}

impl Db {
    fn url(&self) -> &str {
        match self {
            Db::Sqlite { url } | Db::Shared { url, .. } | Db::Private { url, .. } => url,
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Shared { admin, name, .. } = self {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = postgres_admin(admin, &sql) {
                eprintln!("could not drop chaos database {name}: {e}");
            }
        }
    }
}

/// What a finished CLI command left behind.
#[derive(Debug)]
pub struct CliRun {
    pub args: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        format!(
            "`herald {}` exited with {:?}: {}{}",
            self.args,
            self.code,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// One scenario's world: a temporary directory (CSV, logs, the SQLite file) and a database.
pub struct World {
    // Field order is drop order: the database goes before the directory holding it.
    db: Db,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    spawned: Cell<usize>,
    /// A provider fake the channel sends to, when not the sandbox: its record replaces the
    /// sandbox's in [`World::stats`].
    provider: Option<FakeTwilio>,
}

impl World {
    /// A fresh database on `store`: a SQLite file, or a new database on the shared server.
    pub fn new(store: StoreKind) -> World {
        let dir = scratch_dir();
        let db = match store {
            StoreKind::Sqlite => Db::Sqlite {
                url: format!("sqlite://{}/herald.db", dir.path().display()),
            },
            StoreKind::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("herald_chaos_{:016x}", rand::random::<u64>());
                let mut attempt = 0u64;
                loop {
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
                Db::Shared {
                    url: with_database(&admin, &name),
                    admin,
                    name,
                }
            }
        };
        World {
            db,
            dir,
            env: Vec::new(),
            spawned: Cell::new(0),
            provider: None,
        }
    }

    /// A database in a PostgreSQL cluster of this world's own (initdb, own port).
    pub fn private_postgres() -> World {
        let dir = scratch_dir();
        let cluster = PgCluster::create("herald");
        World {
            db: Db::Private {
                url: cluster.url("herald"),
                cluster,
            },
            dir,
            env: Vec::new(),
            spawned: Cell::new(0),
            provider: None,
        }
    }

    pub fn url(&self) -> &str {
        self.db.url()
    }

    /// The private cluster (only for a world made by [`World::private_postgres`]).
    pub fn cluster(&mut self) -> &mut PgCluster {
        match &mut self.db {
            Db::Private { cluster, .. } => cluster,
            _ => panic!("this world has no private PostgreSQL cluster"),
        }
    }

    /// An environment variable for every child started from now on (overrides FAST_ENV).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// `herald --database-url URL ARGS…` with a hermetic environment: no inherited HERALD_*
    /// or RUST_LOG, the fast recovery settings, the temporary directory as working directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(herald_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("HERALD_") || k == "RUST_LOG" || k == "RUST_BACKTRACE" {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in FAST_ENV {
            cmd.env(k, v);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.current_dir(self.dir.path());
        cmd.arg("--database-url").arg(self.url());
        cmd.args(args);
        cmd
    }

    /// Runs a one-shot command to its end (killed, and the scenario failed, after the deadline).
    pub fn run(&self, args: &[&str]) -> CliRun {
        run_bounded(self.command(args), args.join(" "))
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(r.success(), "expected success: {}", r.describe());
        r.stdout
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let r = self.run(args);
        if !r.success() {
            return None;
        }
        serde_json::from_str(&r.stdout).ok()
    }

    /// `campaign status ID --json`, or None while the database does not answer.
    pub fn try_status(&self, id: i64) -> Option<Value> {
        self.json(&["campaign", "status", &id.to_string(), "--json"])
    }

    /// Ids of campaign `id`'s messages that are in flight now.
    pub fn in_flight_ids(&self, id: i64) -> Vec<i64> {
        query_ids(
            self.db.url(),
            &format!("SELECT id FROM messages WHERE campaign_id = {id} AND status = 'in_flight'"),
        )
    }

    /// Ids of campaign `id`'s messages that were never marked in doubt.
    pub fn never_in_doubt_ids(&self, id: i64) -> Vec<i64> {
        query_ids(
            self.db.url(),
            &format!("SELECT id FROM messages WHERE campaign_id = {id} AND was_in_doubt = 0"),
        )
    }

    pub fn status(&self, id: i64) -> Value {
        let out = self.ok(&["campaign", "status", &id.to_string(), "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}"))
    }

    /// Sends through `fake` from now on: [`World::stats`] reads its record.
    pub fn use_provider(&mut self, fake: FakeTwilio) {
        self.provider = Some(fake);
    }

    /// What the provider holds: `received`, `distinct_recipients`, `duplicates`. The
    /// sandbox's `channel stats NAME --campaign ID --json`, or the fake's `/_fake/stats`.
    pub fn stats(&self, channel: &str, id: i64) -> Value {
        if let Some(fake) = &self.provider {
            return fake.stats();
        }
        let out = self.ok(&[
            "channel",
            "stats",
            channel,
            "--campaign",
            &id.to_string(),
            "--json",
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stats are not JSON ({e}): {out}"))
    }

    /// `campaign events ID --json`: the audit trail.
    pub fn events(&self, id: i64) -> Vec<Value> {
        let out = self.ok(&["campaign", "events", &id.to_string(), "--json"]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("events are not JSON ({e}): {out}"));
        v.as_array()
            .unwrap_or_else(|| panic!("events are not an array: {out}"))
            .clone()
    }

    /// `doctor --json`: (exit code, report).
    pub fn doctor(&self) -> (Option<i32>, Value) {
        let r = self.run(&["doctor", "--json"]);
        let v = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}): {}", r.describe()));
        (r.code, v)
    }

    /// Imports `n` generated distinct phone contacts into `list`.
    pub fn import_contacts(&self, list: &str, n: usize) {
        let mut s = String::from("address,name,city\n");
        for i in 0..n {
            writeln!(s, "+1415{:07},Contact {i},City{}", 1_000_000 + i, i % 7).expect("write");
        }
        let path = self.dir.path().join(format!("{list}.csv"));
        std::fs::write(&path, s).expect("write the CSV");
        let out = self.ok(&[
            "contacts",
            "import",
            path.to_str().expect("utf-8 path"),
            "--list",
            list,
        ]);
        assert_eq!(out.trim(), format!("imported {n}, updated 0, rejected 0"));
    }

    /// Starts `herald serve` (HTTP on a free loopback port) or `herald worker`.
    pub fn spawn(&self, role: Role, concurrency: usize, name: &str) -> Proc {
        let seq = self.spawned.get();
        self.spawned.set(seq + 1);
        let log = self.dir.path().join(format!("{name}-{seq}.log"));
        let c = concurrency.to_string();
        let args: Vec<&str> = match role {
            Role::Serve => vec!["serve", "--listen", "127.0.0.1:0", "--concurrency", &c],
            Role::Worker => vec!["worker", "--concurrency", &c],
        };
        let mut cmd = self.command(&args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start herald {}: {e}", args.join(" ")));
        Proc {
            child: Some(child),
            name: name.to_string(),
            role,
            log,
            addr: None,
        }
    }

    /// Log files that show a panic.
    pub fn panicked_logs(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    if text.contains("panicked at") {
                        out.push(p.display().to_string());
                    }
                }
            }
        }
        out
    }
}

/// The world's directory (CSV, instance logs, SQLite file); removed at the end unless
/// HERALD_CHAOS_KEEP=1 asks to keep it for reading the instances' logs.
fn scratch_dir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix("herald-chaos-")
        .tempdir()
        .expect("a temporary directory");
    if std::env::var("HERALD_CHAOS_KEEP").is_ok_and(|v| v == "1") {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

/// Spawns the command, collects its output, and kills it if it outlives the deadline.
fn run_bounded(mut cmd: Command, args: String) -> CliRun {
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
        if start.elapsed() > CLI_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            // What it printed says where it was: an answer on stdout means its work was
            // done and it hung on the way out.
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "`herald {args}` did not finish within {CLI_DEADLINE:?}; killed\n--- its stdout ---\n{stdout}\n--- its stderr ---\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    CliRun {
        args,
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Worker,
}

/// A running `herald serve` or `herald worker`; killed (SIGKILL) when dropped.
pub struct Proc {
    child: Option<Child>,
    pub name: String,
    pub role: Role,
    pub log: PathBuf,
    /// `serve`'s HTTP address once it is up.
    pub addr: Option<String>,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
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

    /// If the process has exited on its own: how.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// True once the engine runs (and for `serve`, once it listens).
    pub fn is_ready(&mut self) -> bool {
        if self.child.is_none() {
            return false;
        }
        let text = self.log_text();
        if self.role == Role::Serve && self.addr.is_none() {
            self.addr = text
                .lines()
                .find(|l| l.contains("listening"))
                .and_then(|line| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .map(|a| a.trim_matches('"').to_string())
                });
        }
        text.contains("engine started") && (self.role == Role::Worker || self.addr.is_some())
    }

    /// Waits until the engine runs (and for `serve`, until it listens).
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        while !self.is_ready() {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited with {status} while starting\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            assert!(
                start.elapsed() < READY_DEADLINE,
                "{} did not start within {READY_DEADLINE:?}\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal_term(&self) {
        if let Some(pid) = self.pid() {
            let sent = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("run kill -TERM");
            assert!(sent.success(), "kill -TERM {pid} failed");
        }
    }

    /// Waits up to `timeout` for an exit after SIGTERM; SIGKILLs on timeout (None).
    fn wait_exit(&mut self, since: Instant, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some((status, since.elapsed()));
            }
            if since.elapsed() > timeout {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The instances of one scenario.
pub struct Fleet {
    pub procs: Vec<Proc>,
    concurrency: usize,
    /// Instances that exited without being told to, with how.
    pub crashes: Vec<String>,
}

impl Fleet {
    /// Starts one instance per role, each after a random gap of up to 500 ms: real
    /// instances are never started in the same millisecond, and their loops' timers (heartbeat,
    /// reconciler) must not be in lockstep for the harness to see what real ones would.
    pub fn start(w: &World, roles: &[Role], concurrency: usize, rng: &mut StdRng) -> Fleet {
        let mut procs: Vec<Proc> = Vec::with_capacity(roles.len());
        for (i, r) in roles.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
            }
            procs.push(w.spawn(*r, concurrency, &instance_name(*r, i)));
        }
        for p in &mut procs {
            p.wait_ready();
        }
        Fleet {
            procs,
            concurrency,
            crashes: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn running(&self) -> usize {
        self.procs.iter().filter(|p| p.is_running()).count()
    }

    pub fn kill(&mut self, i: usize) {
        self.procs[i].kill();
    }

    pub fn kill_all(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
    }

    pub fn restart_all(&mut self, w: &World) -> Instant {
        let all: Vec<usize> = (0..self.procs.len()).collect();
        self.restart_many(w, &all)
    }

    pub fn restart_many(&mut self, w: &World, idx: &[usize]) -> Instant {
        let at = self.respawn(w, idx);
        for &i in idx {
            self.procs[i].wait_ready();
        }
        at
    }

    /// Starts the stopped instances `idx` again without waiting for them to come up (the
    /// others keep working meanwhile); returns when they were spawned.
    pub fn respawn(&mut self, w: &World, idx: &[usize]) -> Instant {
        let at = Instant::now();
        for &i in idx {
            let role = self.procs[i].role;
            assert!(!self.procs[i].is_running(), "restart of a running instance");
            self.procs[i] = w.spawn(role, self.concurrency, &instance_name(role, i));
        }
        at
    }

    /// Waits until every running instance is up.
    pub fn wait_ready(&mut self) {
        for p in &mut self.procs {
            if p.is_running() {
                p.wait_ready();
            }
        }
    }

    /// Indexes of the instances that are up.
    pub fn ready(&mut self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&i| self.procs[i].is_ready())
            .collect()
    }

    /// SIGTERM to every instance in `idx` at once; their exits (None: had to be killed).
    pub fn terminate(
        &mut self,
        idx: &[usize],
        timeout: Duration,
    ) -> Vec<(String, Option<(ExitStatus, Duration)>)> {
        let since = Instant::now();
        for &i in idx {
            self.procs[i].signal_term();
        }
        idx.iter()
            .map(|&i| {
                let p = &mut self.procs[i];
                (p.name.clone(), p.wait_exit(since, timeout))
            })
            .collect()
    }

    /// Notes every instance that exited without being told to.
    pub fn check(&mut self) {
        for p in &mut self.procs {
            if let Some(status) = p.exited() {
                self.crashes.push(format!(
                    "{} exited on its own with {status}\n{}",
                    p.name,
                    p.log_tail(30)
                ));
            }
        }
    }

    pub fn pids(&self) -> Vec<Option<u32>> {
        self.procs.iter().map(Proc::pid).collect()
    }

    pub fn addrs(&self) -> Vec<(String, String)> {
        self.procs
            .iter()
            .filter_map(|p| p.addr.clone().map(|a| (p.name.clone(), a)))
            .collect()
    }

    pub fn log_tails(&self, lines: usize) -> String {
        self.procs.iter().map(|p| p.log_tail(lines)).collect()
    }
}

fn instance_name(role: Role, i: usize) -> String {
    match role {
        Role::Serve => format!("serve{i}"),
        Role::Worker => format!("worker{i}"),
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

/// A plain HTTP/1.1 GET over loopback: (status code, body), or why it failed.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("`{addr}` is not a socket address: {e}"))?;
    if !sock.ip().is_loopback() {
        return Err(format!("the harness talks to loopback only, not {addr}"));
    }
    let mut stream = std::net::TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )
    .map_err(|e| format!("GET {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("GET {path}: no answer: {e}"))?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: malformed response {text:?}"))?;
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status line in {head:?}"))?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    Ok((code, if chunked { dechunk(body) } else { body.into() }))
}

fn dechunk(mut s: &str) -> String {
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

/// The sum of a Prometheus counter's samples whose line starts with `prefix`.
pub fn metric_sum(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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

pub fn state(status: &Value) -> &str {
    status["status"].as_str().unwrap_or("?")
}

/// RFC 3339 time `ms` milliseconds from now.
pub fn rfc3339_in(ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `herald-fakes twilio` on a free loopback port, killed when dropped.
pub struct FakeTwilio {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl FakeTwilio {
    pub const AUTH_TOKEN: &'static str = "chaos-twilio-token-0123";
    pub const ACCOUNT_SID: &'static str = "AC0123456789abcdef0123456789abcdef";

    pub fn start(latency_ms: u64) -> FakeTwilio {
        use std::io::BufRead;
        let latency = latency_ms.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald-fakes"))
            .args(["twilio", "--auth-token", Self::AUTH_TOKEN])
            .args(["--listen", "127.0.0.1:0", "--latency-ms", &latency])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start herald-fakes twilio: {e}"));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            panic!("herald-fakes twilio printed {line:?}, not `listening on http://…`");
        };
        FakeTwilio {
            addr: addr.to_string(),
            child,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Value {
        match http_get(
            &self.addr,
            "/_fake/stats?per_recipient=0",
            Duration::from_secs(10),
        ) {
            Ok((200, body)) => serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("the fake's stats are not JSON ({e}): {body}")),
            other => panic!("the fake's stats: {other:?}"),
        }
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
