//! Logs (tracing, structured, to stderr) and metrics (Prometheus text at /metrics).

use crate::channel_kind::twilio::NAME as TWILIO;
use crate::channel_kind::whatsapp::NAME as WHATSAPP;
use crate::config::LogFormat;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets. The exporter keeps each
/// sample until it is folded, which `install_recorder` leaves to its caller (only a scrape
/// of /metrics did it before): an instance nobody scrapes would otherwise grow by every
/// claim's and every commit's sample for as long as it sends.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The name of the thread that folds histogram samples.
const METRICS_UPKEEP_THREAD: &str = "metrics-upkeep";

/// Installs the log subscriber once. `RUST_LOG` overrides the default level (info).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},sqlx=warn")));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether to colour what goes to a stream: only a terminal, and never with `NO_COLOR` set
/// to anything but the empty string (https://no-color.org).
pub fn colour(stream_is_terminal: bool) -> bool {
    colour_for(stream_is_terminal, std::env::var_os("NO_COLOR").as_deref())
}

/// [`colour`] with the value of `NO_COLOR` given.
pub fn colour_for(stream_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stream_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    if let Some(h) = PROMETHEUS.get() {
        return Some(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .ok()?
        .install_recorder()
        .ok()?;
    // Only the caller that installed the recorder gets here: one upkeep thread per process.
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name(METRICS_UPKEEP_THREAD.into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histogram samples are folded only when /metrics is read");
    }
    let handle = PROMETHEUS.get_or_init(|| handle).clone();
    describe_metrics();
    Some(handle)
}

/// What a metric is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One series' labels: (name, value) pairs.
pub type Labels = &'static [(&'static str, &'static str)];

/// A metric: name, kind, `# HELP` text, the label sets registered at start.
pub type Metric = (&'static str, MetricKind, &'static str, &'static [Labels]);

/// Every metric Herald exports: name, kind, `# HELP` text, and the label sets known in
/// advance (an empty list: one series without labels). The README lists the same names;
/// tests/process/metrics.rs checks that each is served with its HELP and TYPE lines.
pub const METRICS: &[Metric] = &[
    (
        "herald_messages_total",
        MetricKind::Counter,
        "Send attempts recorded, by outcome and channel id (chn_5); a series appears with a channel's first message",
        &[],
    ),
    (
        "herald_campaigns",
        MetricKind::Gauge,
        "Campaigns by status, refreshed by the reconciler",
        &[],
    ),
    (
        "herald_pending_messages",
        MetricKind::Gauge,
        "Messages still to send (queued or being sent)",
        &[&[]],
    ),
    (
        "herald_stuck_campaigns",
        MetricKind::Gauge,
        "Sending campaigns with work pending and no progress for stuck_after_ms",
        &[&[]],
    ),
    (
        "herald_in_doubt_messages",
        MetricKind::Gauge,
        "Messages whose send may or may not have reached the provider, awaiting the in-doubt policy",
        &[&[]],
    ),
    (
        "herald_in_doubt_found_total",
        MetricKind::Counter,
        "Messages found in doubt (claimed by an instance that stopped mid-send)",
        &[&[]],
    ),
    (
        "herald_in_doubt_resolved_total",
        MetricKind::Counter,
        "In-doubt messages resolved, by how: provider_had_it, resent, failed, cancelled",
        &[
            &[("how", "provider_had_it")],
            &[("how", "resent")],
            &[("how", "failed")],
            &[("how", "cancelled")],
        ],
    ),
    (
        "herald_counter_drift",
        MetricKind::Gauge,
        "Campaigns whose stored counters disagree with their messages (0 when all is well)",
        &[&[]],
    ),
    (
        "herald_send_slots",
        MetricKind::Gauge,
        "Send slots of this instance (its `concurrency`): how many provider calls it makes at once at most",
        &[&[]],
    ),
    (
        "herald_send_slots_busy",
        MetricKind::Gauge,
        "Send slots in a provider call now; averaged over time and divided by herald_send_slots, the share of the slots busy (near 1: concurrency is the limit)",
        &[&[]],
    ),
    (
        "herald_claim_seconds",
        MetricKind::Histogram,
        "Time to claim a batch of messages to send, in seconds",
        &[],
    ),
    (
        "herald_commit_seconds",
        MetricKind::Histogram,
        "Time to record a batch of send outcomes durably, in seconds",
        &[],
    ),
    (
        "herald_http_connections_open",
        MetricKind::Gauge,
        "HTTP connections open on this instance",
        &[&[]],
    ),
    (
        "herald_http_connections_refused_total",
        MetricKind::Counter,
        "HTTP connections refused at accept, by reason: per_address or open_connections",
        &[
            &[("reason", "per_address")],
            &[("reason", "open_connections")],
        ],
    ),
    (
        "herald_http_connections_reclaimed_total",
        MetricKind::Counter,
        "Idle kept-alive HTTP connections closed to admit a new one from their address at its cap",
        &[&[]],
    ),
    (
        "herald_http_body_timeouts_total",
        MetricKind::Counter,
        "Requests whose body did not arrive within the body timeout",
        &[&[]],
    ),
    (
        "herald_webhooks_rejected_total",
        MetricKind::Counter,
        "Provider webhooks refused (nothing stored), by channel kind and reason",
        &[
            &[("channel_kind", TWILIO), ("reason", "bad_signature")],
            &[("channel_kind", TWILIO), ("reason", "malformed")],
            &[("channel_kind", TWILIO), ("reason", "public_url_unset")],
            &[("channel_kind", TWILIO), ("reason", "rate_limited")],
            &[("channel_kind", WHATSAPP), ("reason", "bad_signature")],
            &[("channel_kind", WHATSAPP), ("reason", "bad_verify_token")],
            &[("channel_kind", WHATSAPP), ("reason", "rate_limited")],
        ],
    ),
    (
        "herald_link_clicks_total",
        MetricKind::Counter,
        "Tracked links followed (docs/CAMPAIGNS.md): counted, or redirected uncounted as a link preview, past the rate, or in an archived campaign",
        &[
            &[("counted", "yes")],
            &[("counted", "preview")],
            &[("counted", "rate_limited")],
            &[("counted", "archived")],
        ],
    ),
    (
        "herald_messages_archived_total",
        MetricKind::Counter,
        "Message rows of finished campaigns moved to the message archive after message_retention_days (docs/CAMPAIGNS.md, Retention)",
        &[&[]],
    ),
    (
        "herald_messages_held_total",
        MetricKind::Counter,
        "Messages a send window held (docs/CAMPAIGNS.md): claimed outside the recipient's local window and put back, no attempt spent",
        &[&[]],
    ),
    (
        "herald_email_feedback_total",
        MetricKind::Counter,
        "Email bounces, complaints and deliveries received from a provider's webhook (docs/EMAIL.md), by provider and kind",
        &[
            &[("provider", "ses"), ("kind", "delivered")],
            &[("provider", "ses"), ("kind", "hard_bounce")],
            &[("provider", "ses"), ("kind", "soft_bounce")],
            &[("provider", "ses"), ("kind", "complaint")],
            &[("provider", "ses"), ("kind", "dropped")],
            &[("provider", "postmark"), ("kind", "delivered")],
            &[("provider", "postmark"), ("kind", "hard_bounce")],
            &[("provider", "postmark"), ("kind", "soft_bounce")],
            &[("provider", "postmark"), ("kind", "complaint")],
            &[("provider", "postmark"), ("kind", "dropped")],
            &[("provider", "sendgrid"), ("kind", "delivered")],
            &[("provider", "sendgrid"), ("kind", "hard_bounce")],
            &[("provider", "sendgrid"), ("kind", "soft_bounce")],
            &[("provider", "sendgrid"), ("kind", "complaint")],
            &[("provider", "sendgrid"), ("kind", "dropped")],
        ],
    ),
    (
        "herald_webhook_events_expired_total",
        MetricKind::Counter,
        "Stored provider webhook records deleted after webhook_retention_days",
        &[&[]],
    ),
    (
        "herald_live_instances",
        MetricKind::Gauge,
        "Instances whose heartbeat is fresh (within instance_stale_after_ms), as the database shows them",
        &[&[]],
    ),
    (
        "herald_channel_unavailable",
        MetricKind::Gauge,
        "1 while a channel (chn_5) is unavailable because its provider cannot be reached, 0 once it answers again; a series appears with a channel's first outage",
        &[],
    ),
    (
        "herald_campaigns_auto_paused_total",
        MetricKind::Counter,
        "Campaigns the engine paused because their permanent failure rate crossed their auto-pause threshold",
        &[&[]],
    ),
    // Exported by the outbound webhook delivery worker (crates/herald-engine/src/engine/webhooks_out.rs).
    (
        "herald_webhook_deliveries_total",
        MetricKind::Counter,
        "Outbound webhook delivery attempts, by result: delivered, retried (will be tried again) or failed (given up)",
        &[
            &[("result", "delivered")],
            &[("result", "retried")],
            &[("result", "failed")],
        ],
    ),
    (
        "herald_webhook_deliveries_pending",
        MetricKind::Gauge,
        "Outbound webhook deliveries still to send (pending), refreshed by the reconciler",
        &[&[]],
    ),
    (
        "herald_webhook_endpoints_disabled_total",
        MetricKind::Counter,
        "Webhook endpoints disabled by delivery (410 Gone, or every attempt failing for 5 days)",
        &[&[]],
    ),
    // Exported by the alert worker (crates/herald-engine/src/engine/alerts.rs).
    (
        "herald_alerts_total",
        MetricKind::Counter,
        "Alerts to people settled, by outcome: sent, or undeliverable (no channel could carry it, or its attempts ran out)",
        &[&[("outcome", "sent")], &[("outcome", "undeliverable")]],
    ),
];

/// Gives every metric of `METRICS` its HELP text and registers its known series at zero, so
/// `/metrics` lists them (and `rate()` has a start) before the first event. Series whose
/// labels come from data (campaign statuses, channel ids) and histograms appear with their
/// first sample.
fn describe_metrics() {
    for &(name, kind, help, series) in METRICS {
        match kind {
            MetricKind::Counter => {
                metrics::describe_counter!(name, help);
                for labels in series {
                    metrics::counter!(name, labels_of(labels)).increment(0);
                }
            }
            MetricKind::Gauge => {
                metrics::describe_gauge!(name, help);
                for labels in series {
                    metrics::gauge!(name, labels_of(labels)).increment(0.0);
                }
            }
            MetricKind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

fn labels_of(labels: &[(&'static str, &'static str)]) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|&(k, v)| metrics::Label::new(k, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{METRICS, METRICS_UPKEEP_THREAD, colour_for, metrics_handle};
    use std::ffi::OsStr;

    /// Histogram samples are folded by a thread of their own, not only by a scrape: an
    /// instance nobody scrapes keeps no samples beyond a few seconds' worth.
    #[test]
    fn installing_the_recorder_starts_one_upkeep_thread() {
        let threads = || -> usize {
            std::fs::read_dir("/proc/self/task")
                .map(|tasks| {
                    tasks
                        .filter_map(Result::ok)
                        .filter(|t| {
                            std::fs::read_to_string(t.path().join("comm"))
                                .is_ok_and(|name| name.trim() == METRICS_UPKEEP_THREAD)
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        assert!(
            metrics_handle().is_some(),
            "the recorder could not be installed"
        );
        assert!(metrics_handle().is_some());
        // A new thread takes its name once it runs, which may be after the spawn returned:
        // wait for it (a bounded wait, not a timing assertion).
        let mut found = threads();
        for _ in 0..500 {
            if found > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = threads();
        }
        assert_eq!(found, 1, "one upkeep thread, whatever the number of calls");
    }

    /// Two entries for one name would describe it twice (and a merge of two branches that
    /// both list a metric would go unnoticed).
    #[test]
    fn every_metric_is_listed_once() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a metric is listed twice in METRICS");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_for(true, None));
        assert!(colour_for(true, Some(OsStr::new(""))));
        assert!(!colour_for(true, Some(OsStr::new("1"))));
        assert!(!colour_for(false, None));
        assert!(!colour_for(false, Some(OsStr::new("1"))));
    }
}
