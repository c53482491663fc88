//! Outbound webhooks through the real binary, checked by the official Standard Webhooks
//! library: a Python receiver (tests/tools/webhook_receiver.py, PyPI `standardwebhooks`
//! installed by ./scripts/test) answers 500 to its first requests, is then stopped (port
//! closed) for a while and started again; meanwhile `herald serve` is killed with SIGKILL
//! while deliveries are in flight and restarted. In the end every event arrived, each
//! `webhook-id` at least once, never two ids for one event, none invented, every request
//! verified by the library.

use crate::both_stores;
use crate::support::{Backend, Herald, Proc};
use herald::ids::WebhookEndpointId;
use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

both_stores!(deliveries_survive_failures_an_outage_and_sigkill);

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Where ./scripts/test installs the pinned standardwebhooks library; missing fails (CI
/// must not skip the check by the official library).
fn receiver_python() -> PathBuf {
    let tools = std::env::var_os("HERALD_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools")));
    let python = tools.join("standardwebhooks/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the standardwebhooks library is not installed at {}: run ./scripts/test (it installs \
         the pinned test tools) or set HERALD_TEST_TOOLS",
        python.display()
    );
    python
}

/// The Python receiver; killed (SIGKILL) when dropped.
struct Receiver(Child);

impl Receiver {
    fn start(port: u16, record: &Path, fail_first: u32) -> Receiver {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/webhook_receiver.py"
        );
        let mut child = Command::new(receiver_python())
            .arg(script)
            .args(["--port", &port.to_string(), "--secret", SECRET])
            .args(["--record", record.to_str().expect("utf-8 path")])
            .args(["--fail-first", &fail_first.to_string(), "--delay-ms", "5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python receiver");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("receiver stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read the receiver's ready line");
        assert_eq!(line.trim(), "ready", "the receiver did not start");
        Receiver(child)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

async fn pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect")
}

/// The endpoint, subscribed to every subscribable type, its secret sealed under `key`.
fn insert_endpoint(url: &str, key: &str, target: &str) {
    block_on(async {
        let pool = pool(url).await;
        let events: Vec<&str> = herald::events::EventType::ALL
            .iter()
            .filter(|t| t.is_subscribable())
            .map(|t| t.as_str())
            .collect();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_endpoints (org_id, url, events, secret, created_at) \
             VALUES ((SELECT MIN(id) FROM organisations), $1, $2, 'unsealed', 0) RETURNING id",
        )
        .bind(target)
        .bind(serde_json::to_string(&events).unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
        let key = herald::secrets::SecretKey::parse(key).unwrap();
        let sealed = herald::store::webhook_endpoints::seal_signing_secret(
            &key,
            WebhookEndpointId(id),
            SECRET,
        )
        .unwrap();
        sqlx::query("UPDATE webhook_endpoints SET secret = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
}

/// `n` events as the store would write them (a state change's transaction), numbered from
/// `from`: unique data per event, so two ids for one event would show.
fn insert_events(url: &str, from: usize, n: usize) {
    block_on(async {
        let pool = pool(url).await;
        for i in from..from + n {
            sqlx::query(
                "INSERT INTO outbox_events (org_id, type, campaign_id, occurred_at, data) \
                 VALUES ((SELECT MIN(id) FROM organisations), 'contact.unsubscribed', NULL, $1, $2)",
            )
            .bind(herald::clock::now_ms())
            .bind(serde_json::json!({ "contact_id": format!("ctc_{i}"), "n": i }).to_string())
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    });
}

/// Every event of the organisation subscribed by the endpoint: id -> (type, data).
fn stored_events(url: &str) -> BTreeMap<String, (String, String)> {
    block_on(async {
        let pool = pool(url).await;
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, type, data FROM outbox_events WHERE type <> 'webhook.test'")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        rows.into_iter()
            .map(|(id, t, d)| (format!("ntf_{id}"), (t, d)))
            .collect()
    })
}

fn received(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(h: &Herald, name: &str) -> Proc {
    let mut p = h.spawn(&["serve", "--listen", "127.0.0.1:0"], name);
    p.listen_addr();
    p
}

fn deliveries_survive_failures_an_outage_and_sigkill(backend: Backend) {
    let mut h = Herald::migrated(backend);
    let key = herald::secrets::SecretKey::generate();
    h.set_env("HERALD_SECRET_KEY", &key);
    // The whole schedule (5 s … 10 h) in about 100 s; a dead instance's claims come back
    // after 20 s.
    h.set_env("HERALD_WEBHOOK_RETRY_DIVISOR", "1000");
    h.set_env("HERALD_WEBHOOK_LEASE_MS", "20000");
    let port = free_port();
    let record = h.path("received.jsonl");
    insert_endpoint(h.url(), &key, &format!("http://127.0.0.1:{port}/hooks"));

    // A campaign runs too: whatever events it writes must arrive as well.
    let channel = h.sandbox_channel("provider", &[]);
    h.import_contacts("everyone", 50);
    let campaign = h.create_campaign("with webhooks", "everyone", &channel, &[]);

    let receiver = Receiver::start(port, &record, 5);
    insert_events(h.url(), 0, 400);
    let mut first = serve(&h, "serve-1");
    h.ok(&["campaign", "start", &campaign.to_string()]);

    // SIGKILL while deliveries are in flight: some arrived, not all.
    let start = Instant::now();
    while received(&record).len() < 60 {
        first.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no deliveries arrived\n{}",
            first.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill();
    let at_kill = received(&record).len();
    assert!(
        at_kill < 400,
        "everything arrived before the kill ({at_kill})"
    );

    // The receiver goes away (port closed) while a new instance starts and more events come.
    drop(receiver);
    let mut second = serve(&h, "serve-2");
    insert_events(h.url(), 400, 100);
    std::thread::sleep(Duration::from_secs(3));
    let receiver = Receiver::start(port, &record, 0);

    // Every event arrives (the killed instance's claims come back after their lease).
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        second.assert_running();
        let stored = stored_events(h.url());
        let got: BTreeSet<String> = received(&record)
            .iter()
            .filter(|r| r["status"] == 204)
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&String> = stored.keys().filter(|id| !got.contains(*id)).collect();
        if missing.is_empty() && stored.len() >= 500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events never arrived, e.g. {:?}\n{}",
            missing.len(),
            stored.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            second.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(receiver);

    let stored = stored_events(h.url());
    let all = received(&record);
    assert!(
        all.len() > stored.len(),
        "the failures were retried: {} requests",
        all.len()
    );
    let mut ids_per_event: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut seq_per_id: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for r in &all {
        assert_eq!(
            r["verified"], true,
            "the official library refused a request: {r}"
        );
        let id = r["id"].as_str().expect("a webhook-id").to_string();
        assert!(
            stored.contains_key(&id),
            "{id} is not an event Herald stored (invented)"
        );
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        let event = (
            body["type"].as_str().unwrap().to_string(),
            body["data"].to_string(),
        );
        assert_eq!(
            serde_json::from_str::<Value>(&stored[&id].1).unwrap(),
            body["data"],
            "{id}: the body is not the stored event"
        );
        ids_per_event.entry(event).or_default().insert(id.clone());
        seq_per_id
            .entry(id)
            .or_default()
            .insert(body["seq"].as_i64().expect("a seq"));
    }
    for (event, ids) in &ids_per_event {
        assert_eq!(
            ids.len(),
            1,
            "one event sent under two ids: {event:?} {ids:?}"
        );
    }
    for (id, seqs) in &seq_per_id {
        assert_eq!(seqs.len(), 1, "{id} sent with different seq: {seqs:?}");
    }
    let seqs: BTreeSet<i64> = seq_per_id.values().flatten().copied().collect();
    assert_eq!(seqs.len(), stored.len(), "one seq per event");
    second.kill();
}
