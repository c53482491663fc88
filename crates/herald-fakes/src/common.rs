//! Pieces both fakes share: the command-line knobs, the counters behind `/_fake/stats`,
//! form encoding, random ids and fault injection (latency, random 5xx, a concurrency cap).

use axum::extract::RawQuery;
use clap::{Args, ValueEnum};
use rand::Rng as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Order in which status callbacks / webhooks are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Per message, strictly in lifecycle order (`sent` before the final status), each
    /// step `--callback-delay-ms` after the previous one.
    InOrder,
    /// Every event (and every duplicate) at an independent random time within
    /// 2 × max(delay, 20 ms): order is random across messages, and a final status may
    /// arrive before `sent`.
    Shuffled,
}

/// Knobs shared by both fakes.
#[derive(Args, Debug, Clone)]
pub struct Knobs {
    /// Address to bind; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Delay before each status callback (in-order) or the scale of the random delays
    /// (shuffled).
    #[arg(long, default_value_t = 50)]
    pub callback_delay_ms: u64,
    /// Delivery order of status callbacks.
    #[arg(long, value_enum, default_value_t = Order::InOrder)]
    pub callback_order: Order,
    /// Deliver every callback twice (same body, signature and idempotency token).
    #[arg(long)]
    pub duplicate_callbacks: bool,
    /// Retries of a callback that failed (connection error, timeout or non-2xx) before it
    /// is dropped and counted in `callbacks_failed`.
    #[arg(long, default_value_t = 2)]
    pub callback_retries: u32,
    /// First retry backoff; doubles on each further retry.
    #[arg(long, default_value_t = 100)]
    pub callback_retry_ms: u64,
    /// Maximum callback deliveries in flight at once (the rest wait their turn, FIFO).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub callback_concurrency: u32,
    /// Timeout of one callback delivery attempt.
    #[arg(long, default_value_t = 5000)]
    pub callback_timeout_ms: u64,
    /// Added latency on every provider API request (for sends, inside the
    /// `--max-concurrency` slot, so the two together model a concurrency limit).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Probability (0..=1) that a valid send gets a 5xx without creating a message.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Maximum concurrent send requests; beyond it the send gets the provider's
    /// rate-limit error (Twilio 429/20429, WhatsApp 429/130429). Unlimited by default.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Error code carried by a `--final-status` failure (default: Twilio 30003 for
    /// undelivered, 30008 for failed; WhatsApp 131026).
    #[arg(long)]
    pub final_error_code: Option<u32>,
    /// `Retry-After` seconds on magic 429/503 answers.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err("must be between 0 and 1".to_owned())
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything `/_fake/stats` reports. `generation` changes on `/_fake/reset` so work
/// scheduled before a reset neither counts nor delivers afterwards.
#[derive(Debug, Default)]
pub struct Counters {
    pub generation: u64,
    /// Send requests of any outcome.
    pub requests: u64,
    /// Send requests answered with an error (validation, auth, magic number, fault).
    pub rejected: u64,
    /// Messages created (including ones created before a magic 5xx or hang).
    pub received: u64,
    pub per_recipient: BTreeMap<String, u64>,
    pub callbacks_sent: u64,
    pub callbacks_failed: u64,
    pub callbacks_retried: u64,
    /// Status events (one per copy) not yet settled: delivered, dropped, or fired
    /// without a callback URL.
    pub callbacks_pending: u64,
}

pub struct Shared {
    pub knobs: Knobs,
    counters: Mutex<Counters>,
    in_flight: AtomicUsize,
    pub client: reqwest::Client,
    /// `--callback-concurrency` permits.
    pub callback_slots: tokio::sync::Semaphore,
    /// In-order lifecycles waiting for their next step.
    pub timeline: crate::callbacks::Timeline,
}

/// Holds one slot of `--max-concurrency` while a send request is being answered.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    pub fn new(knobs: Knobs) -> anyhow::Result<Self> {
        // reqwest is built with `rustls-no-provider`: callbacks to https URLs need one, and
        // the client cannot be built without it. Installed once per process; later calls
        // find it there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(knobs.callback_timeout_ms.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let slots = usize::try_from(knobs.callback_concurrency).unwrap_or(64);
        Ok(Self {
            callback_slots: tokio::sync::Semaphore::new(slots),
            knobs,
            counters: Mutex::new(Counters::default()),
            in_flight: AtomicUsize::new(0),
            client,
            timeline: crate::callbacks::Timeline::default(),
        })
    }

    pub fn generation(&self) -> u64 {
        lock(&self.counters).generation
    }

    /// Updates the counters of the current generation.
    pub fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut lock(&self.counters));
    }

    /// Updates the counters only if no reset happened since `generation`.
    pub fn count_in(&self, generation: u64, f: impl FnOnce(&mut Counters)) {
        let mut c = lock(&self.counters);
        if c.generation == generation {
            f(&mut c);
        }
    }

    pub fn record_created(&self, recipient: &str) {
        self.count(|c| {
            c.received += 1;
            *c.per_recipient.entry(recipient.to_owned()).or_default() += 1;
        });
    }

    pub fn reset(&self) {
        let mut c = lock(&self.counters);
        let generation = c.generation + 1;
        *c = Counters {
            generation,
            ..Counters::default()
        };
    }

    pub fn stats_json(&self, per_recipient: bool) -> Value {
        let c = lock(&self.counters);
        let distinct = c.per_recipient.len() as u64;
        let mut v = json!({
            "received": c.received,
            "distinct_recipients": distinct,
            "duplicates": c.received.saturating_sub(distinct),
            "callbacks_sent": c.callbacks_sent,
            "callbacks_failed": c.callbacks_failed,
            "callbacks_retried": c.callbacks_retried,
            "callbacks_pending": c.callbacks_pending,
            "requests": c.requests,
            "rejected": c.rejected,
        });
        if per_recipient {
            v["per_recipient"] = json!(c.per_recipient);
        }
        v
    }

    /// Takes a concurrency slot; `None` when `--max-concurrency` is exceeded.
    pub fn enter(&self) -> Option<InFlight<'_>> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = InFlight(&self.in_flight);
        match self.knobs.max_concurrency {
            Some(max) if now > max => None,
            _ => Some(guard),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// `--latency-ms`.
    pub async fn latency(&self) {
        if self.knobs.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.knobs.latency_ms)).await;
        }
    }

    /// `--fail-rate`: true when this request should get a random 5xx.
    pub fn roll_failure(&self) -> bool {
        self.knobs.fail_rate > 0.0 && rand::rng().random_bool(self.knobs.fail_rate)
    }
}

/// `?per_recipient=0|false` on `/_fake/stats` leaves the (possibly large) map out.
pub fn wants_per_recipient(query: &RawQuery) -> bool {
    let params = parse_form(query.0.as_deref().unwrap_or(""));
    !params
        .iter()
        .any(|(k, v)| k == "per_recipient" && (v == "0" || v == "false"))
}

/// Never answers: the connection stays open until the client gives up.
pub async fn hang() {
    std::future::pending::<()>().await;
}

pub fn random_hex(bytes: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::rng();
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let b = rng.random::<u8>();
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random::<u8>()).collect()
}

/// Decodes `application/x-www-form-urlencoded` (or a query string) into pairs, in order,
/// keeping repeated keys. `+` is a space; malformed `%` escapes are kept literally.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes pairs as `application/x-www-form-urlencoded` (space as `+`).
pub fn form_encode(pairs: &[(String, String)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}

/// The first non-blank value of `key`.
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, v)| k == key && !v.trim().is_empty())
        .map(|(_, v)| v.as_str())
}

/// `+` followed by 2 to 15 digits, the first not zero.
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// Magic-number rule shared by both fakes: a number (with an optional `+`) whose digits
/// start with `1500555` and continue with at least four more; its last four digits pick
/// the behaviour. Anything else is an ordinary number.
pub fn magic_tail(number: &str) -> Option<&str> {
    let digits = number.strip_prefix('+').unwrap_or(number);
    let ok = digits.len() >= 11
        && digits.starts_with("1500555")
        && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| &digits[digits.len() - 4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_round_trip() {
        let pairs = vec![
            ("To".to_owned(), "+1 555/ä&=x".to_owned()),
            ("Empty".to_owned(), String::new()),
        ];
        let enc = form_encode(&pairs);
        assert_eq!(parse_form(&enc), pairs);
        assert_eq!(
            parse_form("a=%zz&b=%4"),
            vec![
                ("a".to_owned(), "%zz".to_owned()),
                ("b".to_owned(), "%4".to_owned())
            ]
        );
        assert_eq!(parse_form("DateSent>=2024-01-01")[0].0, "DateSent>");
    }

    #[test]
    fn magic() {
        assert_eq!(magic_tail("+15005550001"), Some("0001"));
        assert_eq!(magic_tail("150055577770429"), Some("0429"));
        assert_eq!(magic_tail("+1500555000"), None);
        assert_eq!(magic_tail("+15551230429"), None);
    }
}
