//! The dashboard in a real browser: `herald serve` on a free loopback port with a fresh
//! SQLite database, driven by headless Chromium through playwright-core
//! (`tests/browser/dashboard.mjs`). The script signs in, creates channels, imports CSV
//! files, runs campaigns and watches one complete live (server-sent events, no reload),
//! pauses and resumes another, sees a stuck campaign's banner, checks the security
//! headers, every page at a phone's width (no sideways scroll) and through axe-core (WCAG 2.1
//! AA, `audit.mjs`), and that no page breaks the Content-Security-Policy,
//! and writes a screenshot of each main page to `docs/screenshots/`.
//!
//! `pages.rs` checks the same pages in process, without a browser.
//!
//! It needs Debian's `chromium`, and playwright-core and axe-core in `target/tools/browser`, which
//! `./scripts/test` (through `scripts/browser-tools`) installs; without them it fails, saying
//! so. Nothing here is built: the `herald` binary is the one cargo built for this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pages;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const EMAIL: &str = "owner@example.org";
const PASSWORD: &str = "correct horse battery staple";
/// Seals channel secrets (the test creates none, but the server wants a key for them).
const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The auth token of the Twilio channel whose inbound webhook the script signs.
const TWILIO_TOKEN: &str = "browser-test-twilio-auth-token";
/// The whole browser script may take this long.
/// (The accessibility audit, tests/browser/audit.mjs, takes about a minute of it.)
const SCRIPT_DEADLINE: Duration = Duration::from_secs(540);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where scripts/browser-tools installs playwright-core.
fn tools_dir() -> PathBuf {
    std::env::var_os("HERALD_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target/tools"))
}

fn chromium() -> PathBuf {
    std::env::var_os("HERALD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails (never skips) when a tool is missing, naming the command that installs it.
fn require_tools() -> (PathBuf, PathBuf, PathBuf) {
    let playwright = tools_dir().join("browser/node_modules/playwright-core");
    let axe = tools_dir().join("browser/node_modules/axe-core");
    let browser = chromium();
    let mut missing = Vec::new();
    if !browser.exists() {
        missing.push(format!("Chromium at {}", browser.display()));
    }
    if !playwright.join("package.json").exists() {
        missing.push(format!("playwright-core in {}", playwright.display()));
    }
    if !axe.join("axe.min.js").exists() {
        missing.push(format!("axe-core in {}", axe.display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node".to_string());
    }
    assert!(
        missing.is_empty(),
        "the browser test needs {}: run ./scripts/test (or ./scripts/browser-tools) to install them",
        missing.join(", ")
    );
    (playwright, browser, axe)
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One plain HTTP GET: (status, body), or None while nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn herald(db: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(HERALD)
        .args(args)
        .env("HERALD_DATABASE_URL", db)
        .env("HERALD_SECRET_KEY", SECRET_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("herald finishes");
    assert!(
        out.status.success(),
        "herald {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path of the receiver's endpoint that fails before it succeeds, long so that the
/// transport error naming its URL is long too.
const FLAKY_PATH: &str =
    "/flaky/a-receiver-path-long-enough-that-the-transport-error-naming-it-is-long-too";

/// A webhook receiver on a free loopback port, answering one request per connection, for the
/// audit's webhook endpoint pages (`audit.mjs`). `/hook` answers 200. [`FLAKY_PATH`] answers
/// each event (counted by its `webhook-id`, the same on every retry) three times: the first
/// attempt by closing the connection without an answer (the attempt's error), the second
/// with a 500 and a long body without spaces (the attempt's response excerpt), the third
/// with a 200. Counting per event, not per request, keeps this true when Herald interleaves
/// one event's retry with another event's first attempt (test events belong to no campaign,
/// so nothing orders them; a global counter made this test flaky). Runs until the test
/// process ends; returns its base URL.
fn start_receiver() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the receiver");
    let port = listener
        .local_addr()
        .expect("the receiver's address")
        .port();
    std::thread::spawn(move || {
        let mut attempts_per_event: HashMap<String, u32> = HashMap::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((path, webhook_id)) = read_request(&mut stream) else {
                continue;
            };
            let (status, body) = if path == FLAKY_PATH {
                let attempt = attempts_per_event.entry(webhook_id).or_default();
                *attempt += 1;
                match *attempt {
                    1 => continue, // dropped: closed without an answer
                    2 => (
                        "500 Internal Server Error",
                        "upstream_dependency_unavailable:".repeat(12),
                    ),
                    _ => ("200 OK", "ok".to_string()),
                }
            } else if path == "/hook" {
                ("200 OK", "ok".to_string())
            } else {
                ("404 Not Found", "no such path".to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// Reads one HTTP request (head and `Content-Length` body) and returns its path and its
/// `webhook-id` header (empty when absent).
fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let webhook_id = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("webhook-id")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    let path = head.split_whitespace().nth(1)?.to_string();
    Some((path, webhook_id))
}

/// The CSV files the browser uploads: `customers.csv` (60 contacts with a city, and two
/// rows the import must reject) and `everyone.csv` (400 contacts, for the slow campaign).
fn write_fixtures(dir: &Path) {
    let mut customers = String::from("address,name,city\n");
    customers.push_str("+15550100000,Ada Lovelace,London\n");
    for i in 1..60 {
        writeln!(customers, "+1555010{i:04},Customer {i},Paris").unwrap();
    }
    customers.push_str("not-a-number,Bad Row,Nowhere\n");
    customers.push_str("+12,Too Short,Nowhere\n");
    std::fs::write(dir.join("customers.csv"), customers).unwrap();
    let mut everyone = String::from("address,name\n");
    for i in 0..400 {
        writeln!(everyone, "+1555020{i:04},Person {i}").unwrap();
    }
    std::fs::write(dir.join("everyone.csv"), everyone).unwrap();
}

#[test]
fn dashboard_in_a_real_browser() {
    let (playwright, browser, axe) = require_tools();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = format!("sqlite://{}/herald.db", dir.path().display());
    herald(&db, &["migrate"], None);
    herald(
        &db,
        &[
            "user",
            "create",
            "--org",
            "default",
            "--email",
            EMAIL,
            "--role",
            "owner",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    write_fixtures(dir.path());
    // A Twilio channel whose inbound webhook the script signs (the inbox step), and the
    // organisation's answer to HELP.
    let replies_channel = herald(
        &db,
        &[
            "channel",
            "create",
            "--name",
            "replies",
            "--kind",
            "twilio",
            "--account-sid",
            "AC0123456789abcdef0123456789abcdef",
            "--auth-token",
            TWILIO_TOKEN,
            "--from",
            "+15005550006",
        ],
        None,
    )
    .trim()
    .to_string();
    // An SMTP channel for the email step (its campaign stays a draft: nothing connects).
    herald(
        &db,
        &[
            "channel",
            "create",
            "--name",
            "mail",
            "--kind",
            "smtp",
            "--host",
            "127.0.0.1",
            "--port",
            "2525",
            "--tls",
            "none",
            "--from",
            "Acme <news@acme.test>",
        ],
        None,
    );
    herald(
        &db,
        &[
            "org",
            "set",
            "--org",
            "default",
            "--help-reply",
            "Acme: call +1 415 555 0100",
        ],
        None,
    );

    let receiver = start_receiver();
    let port = free_port();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = Command::new(HERALD)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("HERALD_DATABASE_URL", &db)
        .env("HERALD_SECRET_KEY", SECRET_KEY)
        // Tracked links point back at this server, where the test follows them.
        .env("HERALD_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("HERALD_HEARTBEAT_INTERVAL_MS", "200")
        .env("HERALD_RECONCILE_INTERVAL_MS", "300")
        .env("HERALD_SCHEDULER_INTERVAL_MS", "200")
        .env("HERALD_IDLE_POLL_MS", "50")
        // A transient failure waits ten minutes for its retry: a channel that always fails
        // leaves its campaign waiting with no progress, which the engine reports as stuck ...
        .env("HERALD_RETRY_BASE_MS", "600000")
        .env("HERALD_RETRY_MAX_MS", "600000")
        .env("HERALD_RETRY_MAX_ATTEMPTS", "50")
        // ... and after five seconds without progress (instead of a minute).
        .env("HERALD_STUCK_AFTER_MS", "5000")
        // The audit's webhook endpoints send to the test's receiver on loopback, which the
        // outbound guard refuses unless listed; other private ranges stay refused (the
        // audit's refused-URL form uses one). Webhook retries come 1000 times sooner
        // (milliseconds instead of minutes), so a delivery's failed attempts and its
        // success all show within the audit.
        .env("HERALD_OUTBOUND_ALLOW_CIDRS", "127.0.0.1/32")
        .env("HERALD_WEBHOOK_RETRY_DIVISOR", "1000")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("herald serve starts");
    let _server = Guard(server);
    let started = Instant::now();
    while http_get(port, "/healthz").map(|(s, _)| s) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "herald serve did not answer /healthz within 30 s; its log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let screenshots = manifest_dir().join("docs/screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = manifest_dir().join("tests/browser/dashboard.mjs");
    let mut node = Command::new("node")
        .arg(&script)
        .env("HERALD_URL", format!("http://127.0.0.1:{port}"))
        .env("HERALD_EMAIL", EMAIL)
        .env("HERALD_PASSWORD", PASSWORD)
        .env("HERALD_RECEIVER", &receiver)
        .env("HERALD_FLAKY_PATH", FLAKY_PATH)
        // The recipient's side of a tracked link: the script computes a code as Herald
        // signs it (docs/CAMPAIGNS.md, "Link tracking").
        .env("HERALD_SECRET_KEY", SECRET_KEY)
        .env("HERALD_TWILIO_CHANNEL", &replies_channel)
        .env("HERALD_TWILIO_TOKEN", TWILIO_TOKEN)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("AXE_CORE", &axe)
        .env("CHROMIUM", &browser)
        .env("SCREENSHOTS", &screenshots)
        .env("FIXTURES", dir.path())
        .env("USER_DATA_DIR", dir.path().join("chromium-profile"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    // Read the script's output on threads, so a chatty script never blocks on a full pipe.
    let mut out = node.stdout.take().unwrap();
    let mut err = node.stderr.take().unwrap();
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
    let begun = Instant::now();
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break Some(status);
        }
        if begun.elapsed() > SCRIPT_DEADLINE {
            let _ = node.kill();
            let _ = node.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let server_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = server_log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    match status {
        Some(s) if s.success() => println!("{stdout}"),
        Some(s) => panic!(
            "the browser script failed ({s}):\n{stdout}\n{stderr}\n--- herald serve, last lines ---\n{tail}"
        ),
        None => panic!(
            "the browser script did not finish within {} s:\n{stdout}\n{stderr}\n--- herald serve, last lines ---\n{tail}",
            SCRIPT_DEADLINE.as_secs()
        ),
    }
}
