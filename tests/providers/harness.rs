//! What the provider tests share on top of `tests/process/support.rs`: the test tools
//! `./scripts/test` installs under `target/tools`, the `herald-fakes` servers, `herald
//! serve` on a known port (so its public URL is known before it starts), and a tiny HTTP
//! client for loopback. Every child process is killed when its guard drops.

use crate::support::{Herald, Proc, http_get};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Twilio test account and token (any `AC` + 32 hex digits works with the fake).
pub const ACCOUNT_SID: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub const TWILIO_FROM: &str = "+15005550006";
/// WhatsApp test business number and secrets.
pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const ACCESS_TOKEN: &str = "EAAtest0123456789";
pub const APP_SECRET: &str = "6f1c2e3d4b5a69788796a5b4c3d2e1f0";
pub const VERIFY_TOKEN: &str = "verify-me-0123";

/// The longest wait for a tool or server to come up, or for receipts to land.
pub const BOUND: Duration = Duration::from_secs(60);

/// `tests/contracts/`: the providers' OpenAPI specs, kept in the repository.
pub fn contracts_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contracts")).to_path_buf()
}

/// Where `./scripts/test` installs the test tools (`HERALD_TEST_TOOLS` overrides).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("HERALD_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools")).into())
}

fn missing_tool(what: &str, path: &Path) -> ! {
    panic!(
        "{what} is not installed at {}: run ./scripts/test (it installs the pinned test tools \
         into target/tools), then run this test again",
        path.display()
    )
}

/// The Prism CLI `./scripts/test` installed.
pub fn prism_bin() -> PathBuf {
    let bin = tools_dir().join("prism/node_modules/.bin/prism");
    if !bin.exists() {
        missing_tool("Prism (@stoplight/prism-cli)", &bin);
    }
    bin
}

/// The Python of the virtual environment holding aiosmtpd.
pub fn aiosmtpd_python() -> PathBuf {
    let python = tools_dir().join("py/bin/python");
    if !python.exists() {
        missing_tool("the Python environment with aiosmtpd", &python);
    }
    let ok = Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing_tool("aiosmtpd", &python);
    }
    python
}

/// A loopback port nobody listens on right now (bind port 0, read it, let it go).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// A child process other than herald, killed (SIGKILL) and reaped on drop.
pub struct Guard {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Guard {
    pub fn spawn(mut cmd: Command, name: &str, log: PathBuf) -> Guard {
        let file = std::fs::File::create(&log).expect("a log file");
        let err = file.try_clone().expect("clone the log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Guard {
            child: Some(child),
            name: name.to_string(),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- {} log ({}) ---\n{}\n",
            self.name,
            self.log.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("a child");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "{} exited early with {status}\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            self.assert_running();
            assert!(
                start.elapsed() < timeout,
                "{} did not log {needle:?} within {timeout:?}\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("{}", self.log_tail(30));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `herald-fakes` server.
pub struct Fake {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub log: PathBuf,
}

impl Fake {
    /// `herald-fakes ARGS…`; waits for its `listening on` line.
    pub fn start(h: &Herald, args: &[&str]) -> Fake {
        let log = h.path(&format!("fake-{}-{}.log", args[0], free_port()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald-fakes"))
            .args(args)
            .env("HERALD_FAKES_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("a fake log file"),
            ))
            .spawn()
            .expect("start herald-fakes");
        let stdout = child.stdout.take().expect("the fake's stdout");
        let mut fake = Fake {
            child: Some(child),
            base: String::new(),
            addr: String::new(),
            log,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = String::new();
            while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
                rest.clear();
            }
        });
        let line = rx
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("herald-fakes {args:?} printed no listening line"));
        let base = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("herald-fakes printed {line:?}, not `listening on URL`"))
            .to_string();
        fake.addr = base
            .strip_prefix("http://")
            .expect("an http base URL")
            .to_string();
        fake.base = base;
        fake
    }

    /// `/_fake/stats` without the per-recipient map.
    pub fn stats(&self) -> Value {
        self.stats_query("/_fake/stats?per_recipient=0")
    }

    /// `/_fake/stats` with `per_recipient`.
    pub fn stats_full(&self) -> Value {
        self.stats_query("/_fake/stats")
    }

    fn stats_query(&self, path: &str) -> Value {
        let (code, body) = http_get(&self.addr, path);
        assert_eq!(code, 200, "GET {path} on the fake: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("fake stats not JSON ({e}): {body}"))
    }

    /// Waits until the fake has settled every status callback it scheduled.
    pub fn wait_callbacks_settled(&self) -> Value {
        let start = Instant::now();
        loop {
            let s = self.stats();
            if s["callbacks_pending"] == 0 {
                return s;
            }
            assert!(
                start.elapsed() < BOUND,
                "the fake still has callbacks pending after {BOUND:?}: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- fake log ({}) ---\n{}",
                    self.log.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Generates a secret key with `herald keygen` and gives it to every later child.
pub fn with_secret_key(h: &mut Herald) {
    let key = h.ok(&["keygen"]).trim().to_string();
    assert!(!key.is_empty(), "herald keygen printed nothing");
    h.set_env("HERALD_SECRET_KEY", &key);
}

/// `herald serve` on `127.0.0.1:port`, with `--public-url http://127.0.0.1:port` when
/// `public`; returns once it listens.
pub fn serve(h: &Herald, port: u16, public: bool) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let public_url = format!("http://{listen}");
    let mut args = vec!["serve", "--listen", &listen];
    if public {
        args.extend_from_slice(&["--public-url", &public_url]);
    }
    let mut p = h.spawn(&args, "serve");
    let addr = p.listen_addr();
    assert_eq!(addr, listen, "herald listens elsewhere than asked");
    p
}

/// Runs `herald channel create ARGS…`; returns the channel id.
pub fn create_channel(h: &Herald, args: &[&str]) -> i64 {
    let mut all = vec!["channel", "create"];
    all.extend_from_slice(args);
    let out = h.ok(&all);
    out.trim()
        .strip_prefix("chn_")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("channel create printed {out:?}, not an id (chn_N)"))
}

/// Writes `address,name` rows as a CSV and imports them into `list`.
pub fn import(h: &Herald, list: &str, rows: &[(String, String)]) {
    let mut csv = String::from("address,name\n");
    for (address, name) in rows {
        writeln!(csv, "{address},{name}").expect("write");
    }
    let path = h.path(&format!("{list}.csv"));
    std::fs::write(&path, csv).expect("write the CSV");
    let out = h.ok(&[
        "contacts",
        "import",
        path.to_str().expect("utf-8 path"),
        "--list",
        list,
    ]);
    assert!(
        out.contains("rejected 0"),
        "importing {list} rejected rows: {out}"
    );
}

/// `n` ordinary (non-magic) phone numbers, distinct per `series` (0..=9).
pub fn phones(series: u32, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("+1415{series}{:06}", 100_000 + i),
                format!("Contact{series}x{i}"),
            )
        })
        .collect()
}

/// Creates a campaign on `list`/`channel` with `body`; returns its id.
pub fn campaign(h: &Herald, name: &str, list: &str, channel: &str, body: &str) -> i64 {
    let out = h.ok(&[
        "campaign",
        "create",
        "--name",
        name,
        "--list",
        list,
        "--channel",
        channel,
        "--body",
        body,
    ]);
    out.trim()
        .strip_prefix("cmp_")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("campaign create printed {out:?}, not an id (cmp_N)"))
}

/// One HTTP/1.1 request over loopback: (status code, body). The body is returned as
/// received (the callers only read short, non-chunked answers or just the status).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let sock: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("`{addr}` is not a socket address: {e}"));
    assert!(sock.ip().is_loopback(), "loopback only, not {addr}");
    let mut stream = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        write!(head, "{k}: {v}\r\n").expect("write");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send the head");
    stream.write_all(body).expect("send the body");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer to {method} {path}: {e}"));
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
    (code, body.to_string())
}

/// Form-encodes pairs (`application/x-www-form-urlencoded`).
pub fn form_encode(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => write!(out, "%{b:02X}").expect("write"),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Polls `check` every 50 ms until it returns `Some`, failing with `what` and the last
/// observation after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("{what} did not happen within {timeout:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
