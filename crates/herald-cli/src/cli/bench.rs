//! `herald bench`: a real campaign through the real engine, into the sandbox channel or,
//! with `--channel twilio --provider-url URL`, over real HTTP into a Twilio-compatible
//! server (the `herald-fakes twilio` fake).

use super::{CliError, CliResult};
use crate::channel_kind::{ChannelKind, sandbox, twilio};
use crate::config::Settings;
use crate::domain::{CampaignStatus, MessageStatus};
use crate::engine::Engine;
use crate::store::{NewCampaign, Store};
use clap::Args;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many recipients.
    #[arg(long, value_name = "N")]
    pub messages: i64,
    /// Concurrent sends (default: the `concurrency` setting).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Messages claimed ahead of the sends, in multiples of the concurrency (default: the
    /// `claim_ahead` setting, 0 to 8).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=8))]
    pub claim_ahead: Option<u8>,
    /// Simulated provider latency (sandbox channel).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// `sandbox` (in-process simulated provider) or `twilio` (HTTP to --provider-url).
    #[arg(long, default_value = crate::channel_kind::sandbox::NAME)]
    pub channel: String,
    /// Base URL of a Twilio-compatible server, e.g. one started with
    /// `herald-fakes twilio --auth-token herald-bench`.
    #[arg(long)]
    pub provider_url: Option<String>,
    /// The auth token the provider at --provider-url expects.
    #[arg(long, default_value = "herald-bench")]
    pub provider_token: String,
    /// Add a webhook endpoint subscribed to this event type (e.g. message.delivered),
    /// delivered to a receiver the bench starts on loopback; repeat for more types. The
    /// figures then include the events delivered and how long the backlog took to drain.
    #[arg(long = "webhook-event", value_name = "TYPE")]
    pub webhook_events: Vec<String>,
    /// Sandbox channel: follow each accepted send with a `delivered` receipt, as providers
    /// do, so receipts are applied during the run (and `message.delivered` events, when an
    /// endpoint subscribes, have something to report).
    #[arg(long)]
    pub receipts: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The bench's webhook receiver: answers 204 to everything and counts what it got.
#[derive(Default)]
struct WebhookSink {
    requests: std::sync::atomic::AtomicI64,
    ids: std::sync::Mutex<std::collections::HashSet<String>>,
}

async fn start_sink() -> Result<(String, std::sync::Arc<WebhookSink>), CliError> {
    use axum::extract::State;
    use std::sync::Arc;
    async fn receive(
        State(sink): State<Arc<WebhookSink>>,
        headers: axum::http::HeaderMap,
    ) -> axum::http::StatusCode {
        sink.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let (Some(id), Ok(mut ids)) = (
            headers.get("webhook-id").and_then(|v| v.to_str().ok()),
            sink.ids.lock(),
        ) {
            ids.insert(id.to_string());
        }
        axum::http::StatusCode::NO_CONTENT
    }
    let sink = Arc::new(WebhookSink::default());
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hooks"), sink))
}

const BENCH_ACCOUNT: &str = "AC00000000000000000000000000000000";

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time spent, in clock ticks (`USER_HZ`, 100 a second on Linux): this process's own
/// (`/proc/self/stat`) and the whole machine's busy time (`/proc/stat`), which on a machine
/// running nothing else is Herald, the database and the provider fake together. `None`
/// where `/proc` is not there.
#[derive(Clone, Copy)]
struct CpuTicks {
    own: u64,
    machine: u64,
}

impl CpuTicks {
    const PER_SECOND: f64 = 100.0;

    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces, so split after its `)`):
        // utime and stime are the 14th and 15th of the whole line.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let machine_line = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = machine_line.lines().next()?.strip_prefix("cpu ")?;
        let ticks: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        let busy = ticks
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, t)| *t)
            .sum();
        Some(Self { own, machine: busy })
    }

    /// Milliseconds of CPU per message between two readings: Herald's and the machine's.
    fn per_message(from: Option<Self>, to: Option<Self>, messages: i64) -> serde_json::Value {
        match (from, to) {
            (Some(a), Some(b)) if messages > 0 => {
                let ms = |ticks: u64| {
                    let v = ticks as f64 * 1000.0 / Self::PER_SECOND / messages as f64;
                    (v * 1000.0).round() / 1000.0
                };
                serde_json::json!({
                    "herald": ms(b.own.saturating_sub(a.own)),
                    "machine": ms(b.machine.saturating_sub(a.machine)),
                })
            }
            _ => serde_json::Value::Null,
        }
    }
}

pub async fn run(settings: &Settings, args: &BenchArgs) -> CliResult {
    if args.messages < 1 {
        return Err(CliError::from(
            "--messages must be at least 1, e.g. --messages 100000",
        ));
    }
    let mut settings = settings.clone();
    if let Some(a) = args.claim_ahead {
        settings.claim_ahead = usize::from(a);
    }
    if let Some(c) = args.concurrency {
        settings.concurrency = c.max(1);
    }
    if settings.secret_key.is_none() {
        // The bench's own channel secrets need a key; a throwaway one will do.
        settings.secret_key = Some(crate::secrets::SecretKey::generate());
    }
    // Without an explicit database the bench uses a fresh SQLite file of its own, so it
    // never touches ./herald.db.
    let explicit = std::env::var("HERALD_DATABASE_URL").is_ok()
        || std::env::args().any(|a| a.starts_with("--database-url"));
    let scratch = if explicit {
        None
    } else {
        let dir = std::env::temp_dir().join(format!("herald-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        settings.database_url = format!("sqlite://{}/bench.db", dir.display());
        Some(dir)
    };
    for name in &args.webhook_events {
        let t: crate::events::EventType = name
            .parse()
            .map_err(|e| CliError::from(format!("--webhook-event: {e}")))?;
        if !t.is_subscribable() {
            return Err(CliError::from(format!(
                "--webhook-event: `{t}` cannot be subscribed to; name another type"
            )));
        }
    }
    if !args.webhook_events.is_empty() {
        // The bench's own receiver listens on loopback: allowed for this run only.
        let mut cidrs = settings.outbound_allow_cidrs.clone();
        if !cidrs.trim().is_empty() {
            cidrs.push(',');
        }
        cidrs.push_str("127.0.0.1/32");
        settings.outbound_allow_cidrs = cidrs;
    }
    if let Some(url) = &args.provider_url {
        // The operator names the provider to bench against on the command line (usually
        // a local fake): its addresses are allowed for this run only, not every private
        // destination.
        allow_provider(&mut settings, url).await?;
        if args.channel.parse::<ChannelKind>().ok() == Some(twilio::KIND) {
            // Duplicates and losses are read from what the server received: messages of an
            // earlier run (the same synthetic recipients) would count as duplicates of this
            // one. Checked before anything is seeded.
            let (already, _) = provider_stats(url).await?;
            if already > 0 {
                return Err(CliError::from(format!(
                    "the provider at {url} already holds {already} messages from an earlier run, which would be counted as duplicates of this one: restart it, or empty it with `curl -X POST {}/_fake/reset`",
                    url.trim_end_matches('/')
                )));
            }
        }
    }
    let result = bench(&settings, args).await;
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    let out = result?;
    if args.json {
        println!("{out}");
    } else {
        println!(
            "{} messages on {}: {:.0} msgs/s ({:.0} from the start's commit, send slots {:.1} % at the provider, {} ms a call), start {} ms, p50 {} ms, p99 {} ms, completion lag {} ms, peak RSS {:.1} MB, duplicates {}, lost {}, CPU per message {} ms (Herald) / {} ms (machine)",
            out["messages"],
            out["store"],
            out["msgs_per_s"].as_f64().unwrap_or(0.0),
            out["sending_msgs_per_s"].as_f64().unwrap_or(0.0),
            out["send_slots_busy"].as_f64().unwrap_or(0.0) * 100.0,
            out["provider_call_ms"],
            out["start_ms"],
            out["p50_ms"],
            out["p99_ms"],
            out["completion_lag_ms"],
            out["peak_rss_mb"].as_f64().unwrap_or(0.0),
            out["duplicates"],
            out["lost"],
            out["cpu_ms_per_message"]["herald"],
            out["cpu_ms_per_message"]["machine"]
        );
        if !out["webhooks"].is_null() {
            println!(
                "webhooks ({}): {} events, {} requests, {} distinct ids, drained {} ms after completion",
                args.webhook_events.join(", "),
                out["webhooks"]["events"],
                out["webhooks"]["requests"],
                out["webhooks"]["distinct_ids"],
                out["webhooks"]["drain_ms"]
            );
        }
        println!(
            "outbox: {} rows after the run, {} after retention ({} ms)",
            out["outbox"]["rows"],
            out["outbox"]["rows_after_retention"],
            out["outbox"]["retention_ms"]
        );
    }
    Ok(0)
}

/// How the send slots were used while the campaign sent: the share of `concurrency` × the
/// sending time spent in provider calls, and the mean call. With a provider that answers
/// in L ms the sending rate cannot pass `concurrency` / L; `busy_share` says how close the
/// slots came (1.0: every slot always at the provider), so a rate below the bound is
/// either a slower answer (`mean_call_ms` above L) or slots waiting for claimed messages.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SlotReport {
    busy_share: f64,
    mean_call_ms: f64,
}

impl SlotReport {
    fn new(call_time: Duration, calls: u64, concurrency: usize, sending_s: f64) -> Self {
        let capacity_s = concurrency.max(1) as f64 * sending_s.max(0.001);
        let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
        Self {
            // Calls of the last instant may end after the completion was read: at most 1.
            busy_share: round3((call_time.as_secs_f64() / capacity_s).min(1.0)),
            mean_call_ms: round3(if calls == 0 {
                0.0
            } else {
                call_time.as_secs_f64() * 1000.0 / calls as f64
            }),
        }
    }
}

/// Adds the addresses `url`'s host resolves to (or its IP literal) to
/// `outbound_allow_cidrs`.
async fn allow_provider(settings: &mut Settings, url: &str) -> Result<(), CliError> {
    crate::channels::http::validate_base_url("--provider-url", url)?;
    let parsed = reqwest::Url::parse(url).map_err(|e| CliError::from(e.to_string()))?;
    let host = parsed.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<std::net::IpAddr> = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| CliError::from(format!("--provider-url: cannot resolve `{host}`: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    let mut cidrs: Vec<String> = settings
        .outbound_allow_cidrs
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    cidrs.extend(addrs.iter().map(|ip| ip.to_canonical().to_string()));
    settings.outbound_allow_cidrs = cidrs.join(",");
    Ok(())
}

async fn bench(settings: &Settings, args: &BenchArgs) -> Result<serde_json::Value, CliError> {
    let store = Store::connect(&settings.database_url).await?;
    store.migrate().await?;
    // Figures from such a server are not Herald's: say so where they are printed.
    if let Some(problem) = store.server_maintenance_problem().await? {
        eprintln!("warning: {problem}");
    }
    let org = store.default_org().await?;
    let tag = format!("bench-{}", crate::clock::now_ms());
    let list = store.ensure_list(org, &tag).await?;
    let seed_started = Instant::now();
    store.seed_contacts(org, list, args.messages).await?;
    let seed_ms = seed_started.elapsed().as_millis();
    let kind = args.channel.parse::<ChannelKind>().ok();
    let channel = if kind == Some(sandbox::KIND) {
        store
            .create_channel(
                org,
                &tag,
                sandbox::NAME,
                &if args.receipts {
                    serde_json::json!({"latency_ms": args.latency_ms, "delivery_delay_ms": 0})
                } else {
                    serde_json::json!({"latency_ms": args.latency_ms})
                },
            )
            .await?
    } else if kind == Some(twilio::KIND) {
        if args.receipts {
            return Err(CliError::from(
                "--receipts applies to the sandbox channel only: a Twilio-compatible server sends its own status callbacks",
            ));
        }
        let url = args.provider_url.as_deref().ok_or_else(|| {
                CliError::from("--channel twilio needs --provider-url, e.g. the address `herald-fakes twilio --auth-token herald-bench` prints")
            })?;
        let key =
            crate::secrets::SecretKey::parse(settings.secret_key.as_deref().unwrap_or_default())?;
        store
                .create_channel_with(
                    org,
                    &tag,
                    twilio::NAME,
                    &serde_json::json!({"account_sid": BENCH_ACCOUNT, "from": "+15005550006", "base_url": url}),
                    Some((&key, &serde_json::json!({"auth_token": args.provider_token}))),
                    None,
                )
                .await?
    } else {
        return Err(CliError::from(format!(
            "--channel {} cannot be benchmarked: use {} or {}",
            args.channel,
            sandbox::KIND,
            twilio::KIND
        )));
    };
    let id = store
        .create_campaign(
            &NewCampaign {
                org_id: org,
                name: tag.clone(),
                channel_id: channel,
                list_id: list,
                body: "Hello {{ name }}, this is a Herald benchmark.".into(),
                scheduled_at: None,
                whatsapp_template: None,
                email: None,
                send_window: None,
            },
            "bench",
        )
        .await?;
    let sink = if args.webhook_events.is_empty() {
        None
    } else {
        let (url, sink) = start_sink().await?;
        let key =
            crate::secrets::SecretKey::parse(settings.secret_key.as_deref().unwrap_or_default())?;
        let events: Vec<crate::events::EventType> = args
            .webhook_events
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        store
            .create_bench_webhook_endpoint(
                org,
                &url,
                &events,
                &key,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )
            .await?;
        Some(sink)
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let engine = Engine::new(store.clone(), settings.clone(), "bench");
    let engine_context = engine.context();
    let engine_task = tokio::spawn(engine.run(stop_rx));
    // Start once the dispatcher has found nothing and waits, as under `serve`: first_send_ms
    // then shows how fast a start wakes it (docs/ARCHITECTURE.md, "Waking up").
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_at_start = CpuTicks::now();
    let start_started = Instant::now();
    store
        .start_campaign(id, crate::clock::now_ms(), "bench", None)
        .await?;
    let start_ms = start_started.elapsed().as_millis();
    // The sending phase: from the start's commit (its rows all written) to completion.
    let sending_from = crate::clock::now_ms();
    loop {
        let c = store.campaign(id).await?;
        if c.status == CampaignStatus::Completed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_at_completion = CpuTicks::now();
    let (provider_call_time, provider_calls) = engine_context.slot_use.snapshot();
    // With receipts: the time until every receipt was applied (at most 10 minutes) after
    // the campaign completed (it completes when every message was sent); the endpoint's
    // `message.delivered` events exist only once their receipt was applied.
    let drained = Instant::now();
    let delivered_while_sending = sink
        .as_ref()
        .map(|s| s.requests.load(std::sync::atomic::Ordering::Relaxed));
    let mut receipts_applied_ms = serde_json::Value::Null;
    if args.receipts {
        while drained.elapsed() < Duration::from_secs(600) {
            let c = store.campaign(id).await?;
            if c.counts.get(MessageStatus::Delivered) >= args.messages {
                receipts_applied_ms = serde_json::json!(drained.elapsed().as_millis());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // With an endpoint: the time until every event of the run was delivered (at most 10
    // minutes), after the campaign completed.
    let mut webhook = serde_json::Value::Null;
    if let Some(sink) = &sink {
        while drained.elapsed() < Duration::from_secs(600) {
            if store.webhook_backlog().await? == 0 {
                break;
            }
            // Counting a large backlog is not free: look twice a second.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let events = store.outbox_rows().await?;
        let distinct = sink.ids.lock().map(|ids| ids.len()).unwrap_or(0);
        webhook = serde_json::json!({
            "events": events,
            "requests": sink.requests.load(std::sync::atomic::Ordering::Relaxed),
            "distinct_ids": distinct,
            "requests_while_sending": delivered_while_sending,
            "drain_ms": drained.elapsed().as_millis(),
        });
    }
    let _ = stop_tx.send(true);
    let _ = engine_task.await;
    // The outbox after the run, and after the retention pass that deletes the run's events
    // once they are older than `event_retention_days` (run here as if that time had
    // passed): what bounds the outbox is retention, not the run's size.
    let outbox_rows = store.outbox_rows().await?;
    let retention_started = Instant::now();
    let mut expired = 0u64;
    loop {
        let n = store
            .delete_settled_events_before(crate::clock::now_ms() + 1, 1_000, 20)
            .await?;
        expired += n;
        if n == 0 {
            break;
        }
    }
    let retention_ms = retention_started.elapsed().as_millis();
    let outbox_rows_after = store.outbox_rows().await?;
    let c = store.campaign(id).await?;
    let started = c.started_at.unwrap_or(0);
    let completed = c.completed_at.unwrap_or(started);
    // The peak while seeding and sending, before the checks below read anything back.
    let sending_peak_rss_mb = peak_rss_mb();
    let latencies = store
        .send_latency_quantiles(id, &[0.0, 0.50, 0.99, 1.0])
        .await?;
    let [first_send, p50, p99, last_send] =
        [0, 1, 2, 3].map(|i| latencies.get(i).copied().flatten());
    let last_sent = last_send.unwrap_or(0) + started;
    let elapsed_s = ((completed - started) as f64 / 1000.0).max(0.001);
    let sending_s = ((completed - sending_from) as f64 / 1000.0).max(0.001);
    let slots = SlotReport::new(
        provider_call_time,
        provider_calls,
        settings.concurrency,
        sending_s,
    );
    let (duplicates, lost) = if kind == Some(twilio::KIND) {
        let stats = provider_stats(args.provider_url.as_deref().unwrap_or_default()).await?;
        let sent_or_later = c.counts.get(crate::domain::MessageStatus::Sent)
            + c.counts.get(crate::domain::MessageStatus::Delivered)
            + c.counts.get(crate::domain::MessageStatus::Read)
            + c.counts.get(crate::domain::MessageStatus::Undelivered);
        (
            stats.0 - stats.1,
            (sent_or_later - stats.1).max(0) + c.counts.pending(),
        )
    } else {
        let stats = store.sandbox_stats(channel, Some(id)).await?;
        (
            stats.duplicates,
            store.sandbox_lost(id).await? + c.counts.pending(),
        )
    };
    store.close().await;
    Ok(serde_json::json!({
        "messages": args.messages,
        "store": store.dialect().name(),
        "channel": args.channel,
        "concurrency": settings.concurrency,
        "claim_ahead": settings.claim_ahead,
        "latency_ms": args.latency_ms,
        "msgs_per_s": (args.messages as f64 / elapsed_s).round(),
        "sending_msgs_per_s": (args.messages as f64 / sending_s).round(),
        "send_slots_busy": slots.busy_share,
        "provider_call_ms": slots.mean_call_ms,
        "seed_ms": seed_ms,
        "start_ms": start_ms,
        "first_send_ms": first_send,
        "p50_ms": p50.unwrap_or(0),
        "p99_ms": p99.unwrap_or(0),
        "completion_lag_ms": (completed - last_sent).max(0),
        "receipts_applied_ms": receipts_applied_ms,
        "peak_rss_mb": (sending_peak_rss_mb * 10.0).round() / 10.0,
        "cpu_ms_per_message": CpuTicks::per_message(cpu_at_start, cpu_at_completion, args.messages),
        "duplicates": duplicates,
        "lost": lost,
        "webhook_events": args.webhook_events,
        "webhooks": webhook,
        "outbox": {
            "rows": outbox_rows,
            "expired_by_retention": expired,
            "retention_ms": retention_ms,
            "rows_after_retention": outbox_rows_after,
        },
    }))
}

/// (received, distinct recipients) as the fake provider counts them.
async fn provider_stats(url: &str) -> Result<(i64, i64), CliError> {
    let stats: serde_json::Value = crate::channels::http::try_client()
        .map_err(CliError::from)?
        .get(format!(
            "{}/_fake/stats?per_recipient=0",
            url.trim_end_matches('/')
        ))
        .send()
        .await?
        .json()
        .await?;
    let field = |name: &str| stats.get(name).and_then(|v| v.as_i64()).unwrap_or(0);
    Ok((field("received"), field("distinct_recipients")))
}

#[cfg(test)]
mod tests {
    use super::SlotReport;
    use std::time::Duration;

    #[test]
    fn slot_report_is_the_share_of_slot_time_at_the_provider() {
        // 200 slots for 2 s is 400 slot-seconds; 20,000 calls of 18 ms fill 360 of them.
        let r = SlotReport::new(Duration::from_secs(360), 20_000, 200, 2.0);
        assert_eq!(r.busy_share, 0.9);
        assert_eq!(r.mean_call_ms, 18.0);
        // Calls that end just after the completion was read cannot make it pass 1.
        let r = SlotReport::new(Duration::from_secs(401), 20_000, 200, 2.0);
        assert_eq!(r.busy_share, 1.0);
        let r = SlotReport::new(Duration::ZERO, 0, 0, 0.0);
        assert_eq!((r.busy_share, r.mean_call_ms), (0.0, 0.0));
    }
}
