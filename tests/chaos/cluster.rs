//! A PostgreSQL cluster of the harness's own (its own `initdb` data directory, socket
//! directory and loopback port), so that `db-restart` can stop and start a database server
//! without touching the shared one. Run as the `postgres` user (via `runuser`) when the
//! harness runs as root. Stopped (immediate) and removed when the guard goes.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
}

/// The newest `/usr/lib/postgresql/*/bin` that has `pg_ctl` and `initdb`.
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("pg_ctl").exists() && bin.join("initdb").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("db-restart needs the PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb and pg_ctl: Debian package `postgresql`)")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgCluster {
    /// initdb, start, and create database `db`.
    pub fn create(db: &str) -> PgCluster {
        let bin = server_bin();
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("herald-chaos-pg-")
            .tempdir()
            .expect("a temporary directory for the private cluster");
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                ok.success(),
                "chown postgres {} failed",
                dir.path().display()
            );
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: free_port(),
            as_postgres,
            running: false,
        };
        let data = cluster.data();
        cluster.tool(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        cluster.start();
        let port = cluster.port.to_string();
        cluster.tool(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", db],
        );
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Runs a server tool (as `postgres` when we are root); panics with its output on failure.
    fn tool(&self, name: &str, args: &[&str]) -> Output {
        let out = self.tool_unchecked(name, args);
        assert!(
            out.status.success(),
            "{name} {} failed ({}): {}{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
        out
    }

    fn tool_unchecked(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.env("LC_ALL", "C")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data();
        let mut all = vec!["-D", data.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        self.tool("pg_ctl", &all)
    }

    /// Starts the server and waits (bounded by pg_ctl's own -t) until it accepts connections.
    pub fn start(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.log_path();
        self.pg_ctl(&[
            "-l",
            log.to_str().expect("utf-8 path"),
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "start",
        ]);
        self.running = true;
    }

    /// `pg_ctl stop -m fast`: sessions are disconnected, open transactions rolled back.
    pub fn stop_fast(&mut self) {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
        self.running = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let out = self.tool_unchecked(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap_or_default(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ],
            );
            if !out.status.success() {
                eprintln!(
                    "could not stop the private PostgreSQL cluster in {}: {}",
                    self.dir.path().display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
