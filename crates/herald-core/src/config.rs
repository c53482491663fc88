//! Herald's effective settings and where each value came from.
//!
//! Layers, lowest to highest precedence: built-in defaults, `herald.toml`,
//! `HERALD_*` environment variables, command-line flags. Every layer is a
//! figment provider whose metadata name records the layer, so
//! `Figment::find_metadata` can tell `herald config` where a value came from.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// All effective settings of one Herald instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)] // a typo in herald.toml must be an error naming the key
pub struct Settings {
    pub database_url: String,
    pub listen: String,
    /// Max concurrent sends per instance.
    pub concurrency: usize,
    /// Messages claimed ahead of the sends, waiting for a send slot, in multiples of
    /// `concurrency`: an instance holds at most (1 + this) × `concurrency` claimed and
    /// unrecorded, the most a crash leaves in doubt and a pause may still let start.
    pub claim_ahead: usize,
    /// Messages claimed per claim statement.
    pub batch_size: usize,
    /// Max outcomes group-committed per transaction.
    pub commit_max_batch: usize,
    /// Max wait to fill a group commit.
    pub commit_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// An instance whose heartbeat is older than this is dead.
    pub instance_stale_after_ms: u64,
    pub reconcile_interval_ms: u64,
    pub scheduler_interval_ms: u64,
    /// Dispatcher sleep when nothing is claimable.
    pub idle_poll_ms: u64,
    pub stuck_after_ms: u64,
    pub drift_check_interval_ms: u64,
    pub in_doubt_policy: InDoubtPolicy,
    pub in_doubt_grace_ms: u64,
    /// How long after a message is found in doubt its provider is asked about it: time for
    /// a message created an instant before to show in the provider's list (Twilio).
    pub provider_lookup_delay_ms: u64,
    /// A row this instance claimed this long ago that none of its senders knows about is a
    /// claim whose answer was lost (it committed, the reply never arrived): it is handed
    /// back unsent. Longer than any claim can take to answer, so no claim still on its way
    /// is mistaken for a lost one.
    pub lost_claim_after_ms: u64,
    pub retry_max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub send_timeout_ms: u64,
    pub shutdown_deadline_ms: u64,
    pub log_format: LogFormat,
    /// The address the world reaches this Herald at (for provider callback URLs and
    /// Twilio signature checks), e.g. https://herald.example.com.
    pub public_url: Option<String>,
    /// 32 bytes, base64: encrypts channel secrets at rest (`herald keygen` makes one).
    pub secret_key: Option<String>,
    /// Allow outbound connections (providers, SMTP, customer webhooks) to loopback, private,
    /// link-local, unique-local, multicast and unspecified addresses. Off by default: an
    /// admin could otherwise point a channel at the machine's own services (SSRF).
    pub outbound_allow_private: bool,
    /// Comma-separated CIDRs allowed even when `outbound_allow_private` is off, e.g.
    /// `10.0.5.0/24,fd00::/64` for a self-hosted provider on the private network.
    pub outbound_allow_cidrs: String,
    /// Days verified provider webhook records (`webhook_events`) are kept before the
    /// reconciler deletes them. Unverified requests are never stored, only counted.
    pub webhook_retention_days: u64,
    /// Provider webhook requests accepted per minute from one source address (IPv6: its
    /// /64) for one channel, counted in memory per instance; more answer 429 with
    /// Retry-After. Size it above the channel's peak callbacks per provider address: a
    /// campaign sending N messages a second gets up to 3 N status callbacks a second (sent,
    /// delivered, read), spread over however many addresses the provider calls from. The
    /// default (200 a second) is far above that for one provider address yet caps what one
    /// forger can make an instance do; Twilio does not retry a refused status callback, so
    /// too low a value loses receipts.
    pub webhook_rate_per_minute: u64,
    /// Time a client has to send a request's headers before its connection is closed.
    pub http_header_timeout_ms: u64,
    /// Time a client has to send a request's body before the request fails with 408.
    pub http_body_timeout_ms: u64,
    /// Open HTTP connections allowed from one client address; more are refused.
    pub http_max_connections_per_ip: u64,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Consecutive sends through one channel that fail for a reason that says nothing
    /// about the recipient (connection refused or reset, DNS, TLS, connect timeout, no
    /// answer or a 5xx from the provider), with no success in between, that mark the
    /// channel `unavailable`: its sending campaigns are paused by the engine and the
    /// messages go back to the queue without spending an attempt.
    pub outage_after_failures: u32,
    /// How often an unavailable channel's provider is probed (one instance at a time);
    /// the first answer makes the channel available and resumes the campaigns the
    /// outage paused.
    pub outage_probe_interval_ms: u64,
    /// Messages a send window holds are looked at again at least this often, not only at
    /// the window's opening: a contact's `timezone` may change, or the campaign's window.
    pub send_window_recheck_ms: u64,
    /// Where Amazon SNS signing certificates and subscription confirmations may also be
    /// fetched from, besides `https://sns.<region>.amazonaws.com/` (docs/EMAIL.md): a URL
    /// prefix ending in `/`, only to point at a test double. An operator's setting, not a
    /// channel's: whoever serves the certificate decides which notifications verify.
    pub sns_certificate_url_prefix: Option<String>,
    /// Days outbound events (the outbox) are kept; older events whose deliveries are all
    /// settled are deleted by the reconciler, with their deliveries and attempt log.
    pub event_retention_days: u64,
    /// Days after a campaign completed or was cancelled that its message rows move to the
    /// message archive (docs/CAMPAIGNS.md, "Retention"); the campaign keeps its counters,
    /// outcome, failure groups and export. 0, the default: message rows are kept forever.
    pub message_retention_days: u32,
    /// Webhook deliveries sent at once by one instance (one endpoint at a time each): a
    /// slow endpoint holds one of these, never a message sender.
    pub webhook_concurrency: u64,
    /// How long a claimed webhook delivery stays with its instance; a dead instance's
    /// deliveries are taken back after this.
    pub webhook_lease_ms: u64,
    /// Divides the webhook retry schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h): 1 in
    /// production, larger in tests so a whole schedule runs in seconds.
    pub webhook_retry_divisor: u64,
}

/// What to do with a message whose send outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InDoubtPolicy {
    Resend,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: "sqlite://herald.db".to_string(),
            listen: "127.0.0.1:8080".to_string(),
            concurrency: 200,
            claim_ahead: 1,
            batch_size: 500,
            commit_max_batch: 1000,
            commit_interval_ms: 5,
            heartbeat_interval_ms: 1000,
            instance_stale_after_ms: 10_000,
            reconcile_interval_ms: 2000,
            scheduler_interval_ms: 1000,
            idle_poll_ms: 200,
            stuck_after_ms: 60_000,
            drift_check_interval_ms: 60_000,
            in_doubt_policy: InDoubtPolicy::Resend,
            in_doubt_grace_ms: 0,
            provider_lookup_delay_ms: 5_000,
            lost_claim_after_ms: 60_000,
            retry_max_attempts: 5,
            retry_base_ms: 1000,
            retry_max_ms: 300_000,
            send_timeout_ms: 30_000,
            shutdown_deadline_ms: 10_000,
            log_format: LogFormat::Text,
            public_url: None,
            secret_key: None,
            outbound_allow_private: false,
            outbound_allow_cidrs: String::new(),
            webhook_retention_days: 30,
            webhook_rate_per_minute: 12_000,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 60_000,
            http_max_connections_per_ip: 64,
            metrics_token: None,
            outage_after_failures: 5,
            outage_probe_interval_ms: 10_000,
            send_window_recheck_ms: 3_600_000,
            sns_certificate_url_prefix: None,
            event_retention_days: 30,
            message_retention_days: 0,
            webhook_concurrency: 16,
            webhook_lease_ms: 60_000,
            webhook_retry_divisor: 1,
        }
    }
}

/// What a setting's value looks like; drives env parsing and error hints.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Number,
    Bool,
    Choice(&'static [&'static str]),
}

/// Every field of `Settings`, in declaration order (a test keeps this in sync).
const FIELDS: &[(&str, Kind)] = &[
    ("database_url", Kind::Text),
    ("listen", Kind::Text),
    ("concurrency", Kind::Number),
    ("claim_ahead", Kind::Number),
    ("batch_size", Kind::Number),
    ("commit_max_batch", Kind::Number),
    ("commit_interval_ms", Kind::Number),
    ("heartbeat_interval_ms", Kind::Number),
    ("instance_stale_after_ms", Kind::Number),
    ("reconcile_interval_ms", Kind::Number),
    ("scheduler_interval_ms", Kind::Number),
    ("idle_poll_ms", Kind::Number),
    ("stuck_after_ms", Kind::Number),
    ("drift_check_interval_ms", Kind::Number),
    ("in_doubt_policy", Kind::Choice(&["resend", "fail"])),
    ("in_doubt_grace_ms", Kind::Number),
    ("provider_lookup_delay_ms", Kind::Number),
    ("lost_claim_after_ms", Kind::Number),
    ("retry_max_attempts", Kind::Number),
    ("retry_base_ms", Kind::Number),
    ("retry_max_ms", Kind::Number),
    ("send_timeout_ms", Kind::Number),
    ("shutdown_deadline_ms", Kind::Number),
    ("log_format", Kind::Choice(&["text", "json"])),
    ("public_url", Kind::Text),
    ("secret_key", Kind::Text),
    ("outbound_allow_private", Kind::Bool),
    ("outbound_allow_cidrs", Kind::Text),
    ("webhook_retention_days", Kind::Number),
    ("webhook_rate_per_minute", Kind::Number),
    ("http_header_timeout_ms", Kind::Number),
    ("http_body_timeout_ms", Kind::Number),
    ("http_max_connections_per_ip", Kind::Number),
    ("metrics_token", Kind::Text),
    ("outage_after_failures", Kind::Number),
    ("outage_probe_interval_ms", Kind::Number),
    ("send_window_recheck_ms", Kind::Number),
    ("sns_certificate_url_prefix", Kind::Text),
    ("event_retention_days", Kind::Number),
    ("message_retention_days", Kind::Number),
    ("webhook_concurrency", Kind::Number),
    ("webhook_lease_ms", Kind::Number),
    ("webhook_retry_divisor", Kind::Number),
];

const ENV_PREFIX: &str = "HERALD_";
const DEFAULT_CONFIG_FILE: &str = "./herald.toml";
// Metadata names of the layers; the toml layer's name carries its path instead.
const DEFAULT_LAYER: &str = "default";
const ENV_LAYER: &str = "environment";
const FLAG_LAYER: &str = "flag";

/// How to find the inputs of [`Settings::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Explicit config file (from `--config` / HERALD_CONFIG). When given it must exist.
    /// When None, `./herald.toml` is used if it exists, silently skipped if not.
    pub config_file: Option<PathBuf>,
    /// Values given as command-line flags, keyed by setting name (e.g. "database_url",
    /// "listen", "concurrency"), already typed as JSON values. Highest precedence.
    /// A `null` value counts as "flag not given".
    pub flags: serde_json::Map<String, serde_json::Value>,
    /// The environment to read HERALD_* from; tests pass their own map. In production
    /// pass `std::env::vars().collect()`.
    pub env: Vec<(String, String)>,
}

/// The effective settings plus, per setting, its value and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedSettings {
    pub settings: Settings,
    /// One entry per field of Settings, in declaration order.
    pub entries: Vec<SettingEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingEntry {
    pub key: String,
    /// The effective value; a password inside `database_url` is shown as `***`.
    pub value: serde_json::Value,
    /// "default", "herald.toml (<path>)", "environment (HERALD_<KEY>)" or "flag (--<key>)".
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("herald.toml ({}) does not exist: create it or drop --config / HERALD_CONFIG", path.display())]
    ConfigFileMissing { path: PathBuf },
    #[error("herald.toml ({}) could not be read: {source}", path.display())]
    ConfigFileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("herald.toml ({}) is not valid TOML: {message}", path.display())]
    ConfigFileSyntax { path: PathBuf, message: String },
    /// `input` names the file or says "flag"/"environment".
    #[error("{input}: unknown setting `{key}`; known settings are: {known}")]
    UnknownSetting {
        input: String,
        key: String,
        known: String,
    },
    /// `input` is e.g. `HERALD_CONCURRENCY="abc"` or `herald.toml (p): concurrency = "abc"`.
    #[error("{input} is not valid: expected {expected}")]
    InvalidValue { input: String, expected: String },
    /// A semantic check of [`Settings::validate`] failed; the message names the sources.
    #[error("{0}")]
    Invalid(String),
    /// Anything figment reports that the cases above do not cover.
    #[error("settings could not be loaded: {0}")]
    Other(String),
}

/// One layer of settings; its metadata name tells `find_metadata` which layer won.
struct Layer {
    name: String,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// A failed semantic check: the rule, and the settings whose values broke it.
struct Violation {
    rule: String,
    keys: &'static [&'static str],
}

impl Settings {
    /// Layers defaults, the config file, `HERALD_*` env vars and flags, then validates.
    pub fn load(opts: LoadOptions) -> Result<LoadedSettings, ConfigError> {
        let defaults = Value::serialize(Settings::default())
            .ok()
            .and_then(Value::into_dict)
            .ok_or_else(|| ConfigError::Other("the built-in defaults are not a table".into()))?;

        let mut figment = Figment::new().merge(Layer {
            name: DEFAULT_LAYER.into(),
            dict: defaults,
        });

        let toml_name =
            match read_config_file(opts.config_file.as_deref(), Path::new(DEFAULT_CONFIG_FILE))? {
                Some((path, dict)) => {
                    let name = format!("herald.toml ({})", path.display());
                    figment = figment.merge(Layer {
                        name: name.clone(),
                        dict,
                    });
                    Some(name)
                }
                None => None,
            };

        let (env_dict, env_raw) = env_layer(&opts.env);
        figment = figment.merge(Layer {
            name: ENV_LAYER.into(),
            dict: env_dict,
        });
        figment = figment.merge(Layer {
            name: FLAG_LAYER.into(),
            dict: flag_layer(&opts.flags)?,
        });

        let settings: Settings = figment
            .extract()
            .map_err(|e| extraction_error(&figment, e, toml_name.as_deref(), &env_raw))?;

        let source_of = |key: &str| -> String {
            match figment.find_metadata(key).map(|m| m.name.as_ref()) {
                Some(ENV_LAYER) => format!("environment ({})", env_var(key)),
                Some(FLAG_LAYER) => format!("flag ({})", flag_name(key)),
                Some(other) => other.to_string(),
                None => DEFAULT_LAYER.to_string(),
            }
        };

        if let Err(v) = settings.check() {
            let got: Vec<String> = v
                .keys
                .iter()
                .map(|k| {
                    let value = settings.display_value(k);
                    if v.keys.len() == 1 {
                        format!("{value} from {}", source_of(k))
                    } else {
                        format!("{k}={value} from {}", source_of(k))
                    }
                })
                .collect();
            return Err(ConfigError::Invalid(format!(
                "{} (got {})",
                v.rule,
                got.join(", ")
            )));
        }

        let json =
            serde_json::to_value(&settings).map_err(|e| ConfigError::Other(e.to_string()))?;
        let entries = FIELDS
            .iter()
            .map(|(key, _)| {
                let mut value = json.get(*key).cloned().unwrap_or(serde_json::Value::Null);
                if *key == "database_url" {
                    value = serde_json::Value::String(redact_url(&settings.database_url));
                }
                if (*key == "secret_key" || *key == "metrics_token") && !value.is_null() {
                    value = serde_json::Value::String("*** (set)".into());
                }
                SettingEntry {
                    key: (*key).to_string(),
                    value,
                    source: source_of(key),
                }
            })
            .collect();

        Ok(LoadedSettings { settings, entries })
    }

    /// Semantic checks after loading; the error is one sentence naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|v| {
            let got: Vec<String> = v
                .keys
                .iter()
                .map(|k| {
                    let value = self.display_value(k);
                    if v.keys.len() == 1 {
                        value
                    } else {
                        format!("{k}={value}")
                    }
                })
                .collect();
            format!("{} (got {})", v.rule, got.join(", "))
        })
    }

    /// The outbound address guard these settings ask for (`outbound_allow_private`,
    /// `outbound_allow_cidrs`).
    pub fn outbound_guard(&self) -> Result<crate::outbound::OutboundGuard, String> {
        crate::outbound::OutboundGuard::from_settings(
            self.outbound_allow_private,
            &self.outbound_allow_cidrs,
        )
    }

    pub fn in_doubt_policy_name(&self) -> &'static str {
        match self.in_doubt_policy {
            InDoubtPolicy::Resend => "resend",
            InDoubtPolicy::Fail => "fail",
        }
    }

    fn check(&self) -> Result<(), Violation> {
        fn at_least_one(value: u64, key: &'static [&'static str]) -> Result<(), Violation> {
            if value >= 1 {
                return Ok(());
            }
            Err(Violation {
                rule: format!("{} must be at least 1", key[0]),
                keys: key,
            })
        }
        // usize/u32 -> u64 never truncates on supported targets; saturate just in case.
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        at_least_one(wide(self.concurrency), &["concurrency"])?;
        // A bound on what a crash leaves in doubt: at 20 ms answers, 2 or 3 already gave
        // 20-30 % more and deeper could only add doubt (BENCHMARKS.md, "How deep to claim
        // ahead").
        if self.claim_ahead > 8 {
            return Err(Violation {
                rule: "claim_ahead must be from 0 to 8 (messages claimed ahead of the sends, in multiples of concurrency)".into(),
                keys: &["claim_ahead"],
            });
        }
        at_least_one(wide(self.batch_size), &["batch_size"])?;
        at_least_one(wide(self.commit_max_batch), &["commit_max_batch"])?;
        at_least_one(self.heartbeat_interval_ms, &["heartbeat_interval_ms"])?;
        // Periodic timers with a zero period would spin (tokio's interval panics on zero).
        at_least_one(self.reconcile_interval_ms, &["reconcile_interval_ms"])?;
        at_least_one(self.scheduler_interval_ms, &["scheduler_interval_ms"])?;
        at_least_one(self.drift_check_interval_ms, &["drift_check_interval_ms"])?;
        // A zero timeout would fail every send before it starts.
        at_least_one(self.send_timeout_ms, &["send_timeout_ms"])?;
        at_least_one(u64::from(self.retry_max_attempts), &["retry_max_attempts"])?;
        at_least_one(self.webhook_retention_days, &["webhook_retention_days"])?;
        at_least_one(
            u64::from(self.outage_after_failures),
            &["outage_after_failures"],
        )?;
        at_least_one(self.outage_probe_interval_ms, &["outage_probe_interval_ms"])?;
        at_least_one(self.send_window_recheck_ms, &["send_window_recheck_ms"])?;
        if let Some(prefix) = &self.sns_certificate_url_prefix
            && !((prefix.starts_with("http://") || prefix.starts_with("https://"))
                && prefix.ends_with('/')
                && prefix.matches('/').count() >= 3)
        {
            return Err(Violation {
                rule: "sns_certificate_url_prefix must be an http(s) URL ending in `/` after its host and port, like http://127.0.0.1:4010/ (a test double only)".into(),
                keys: &["sns_certificate_url_prefix"],
            });
        }
        at_least_one(self.event_retention_days, &["event_retention_days"])?;
        at_least_one(self.webhook_concurrency, &["webhook_concurrency"])?;
        // Shorter, and a claim whose answer is merely slow could be handed back while its
        // sender is about to send it: the message would go twice.
        if self.lost_claim_after_ms < 1_000 {
            return Err(Violation {
                rule: "lost_claim_after_ms must be at least 1000 (longer than any claim takes to answer)".into(),
                keys: &["lost_claim_after_ms"],
            });
        }
        // A lease shorter than one request's timeout would be taken back mid-send.
        if self.webhook_lease_ms < 20_000 {
            return Err(Violation {
                rule: "webhook_lease_ms must be at least 20000 (longer than one delivery's 15 s timeout)".into(),
                keys: &["webhook_lease_ms"],
            });
        }
        at_least_one(self.webhook_retry_divisor, &["webhook_retry_divisor"])?;
        at_least_one(self.webhook_rate_per_minute, &["webhook_rate_per_minute"])?;
        at_least_one(self.http_header_timeout_ms, &["http_header_timeout_ms"])?;
        at_least_one(self.http_body_timeout_ms, &["http_body_timeout_ms"])?;
        at_least_one(
            self.http_max_connections_per_ip,
            &["http_max_connections_per_ip"],
        )?;
        if let Err(e) = crate::outbound::parse_cidrs(&self.outbound_allow_cidrs) {
            return Err(Violation {
                rule: format!(
                    "outbound_allow_cidrs must be comma-separated CIDRs such as 10.0.5.0/24,fd00::/64: {e}"
                ),
                keys: &["outbound_allow_cidrs"],
            });
        }

        if self.instance_stale_after_ms <= self.heartbeat_interval_ms {
            return Err(Violation {
                rule: "instance_stale_after_ms must be greater than heartbeat_interval_ms, \
                       or live instances would be declared dead between heartbeats"
                    .into(),
                keys: &["instance_stale_after_ms", "heartbeat_interval_ms"],
            });
        }
        if self.retry_base_ms > self.retry_max_ms {
            return Err(Violation {
                rule: "retry_base_ms must not be greater than retry_max_ms".into(),
                keys: &["retry_base_ms", "retry_max_ms"],
            });
        }
        let url = self.database_url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(Violation {
                rule: "database_url must be a SQLite URL such as sqlite://herald.db \
                       or a PostgreSQL URL such as postgres://user@host/db"
                    .into(),
                keys: &["database_url"],
            });
        }
        Ok(())
    }

    /// A setting's value as shown in error messages (JSON, URL password hidden).
    fn display_value(&self, key: &str) -> String {
        if key == "database_url" {
            return json_str(&redact_url(&self.database_url));
        }
        if key == "secret_key" || key == "metrics_token" {
            return json_str("***");
        }
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get(key).map(ToString::to_string))
            .unwrap_or_default()
    }
}

/// Renders `KEY  VALUE  SOURCE`, one aligned line per setting, for `herald config`.
pub fn describe(entries: &[SettingEntry]) -> String {
    let rows: Vec<(&str, String, &str)> = entries
        .iter()
        .map(|e| {
            // Strings unquoted: the table is for people, not for parsing.
            let value = match &e.value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (e.key.as_str(), value, e.source.as_str())
        })
        .collect();
    let key_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(3);
    let val_w = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = String::new();
    let mut line = |k: &str, v: &str, s: &str| {
        let pad = val_w.saturating_sub(v.chars().count());
        let _ = writeln!(out, "{k:<key_w$}  {v}{:pad$}  {s}", "");
    };
    line("KEY", "VALUE", "SOURCE");
    for (k, v, s) in &rows {
        line(k, v, s);
    }
    out
}

/// Reads the config file; `None` when no explicit file was given and `./herald.toml` is absent.
/// `default` is a parameter so tests need not depend on the working directory.
fn read_config_file(
    explicit: Option<&Path>,
    default: &Path,
) -> Result<Option<(PathBuf, Dict)>, ConfigError> {
    let path = explicit.unwrap_or(default).to_path_buf();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match explicit {
                Some(_) => Err(ConfigError::ConfigFileMissing { path }),
                None => Ok(None),
            };
        }
        Err(source) => return Err(ConfigError::ConfigFileUnreadable { path, source }),
    };
    let dict: Dict = Toml::from_str(&text).map_err(|e| ConfigError::ConfigFileSyntax {
        path: path.clone(),
        message: one_line_toml_error(&e.to_string()),
    })?;
    // Checked here rather than left to deny_unknown_fields so the error names the file.
    if let Some(key) = dict.keys().find(|k| kind_of(k).is_none()) {
        return Err(ConfigError::UnknownSetting {
            input: format!("herald.toml ({})", path.display()),
            key: key.clone(),
            known: known_settings(),
        });
    }
    Ok(Some((path, dict)))
}

/// Picks `HERALD_<KEY>` for known keys only, so HERALD_CONFIG and the like are ignored.
/// Returns the layer and the raw strings by key (for error messages).
fn env_layer(env: &[(String, String)]) -> (Dict, Map<String, String>) {
    let mut dict = Dict::new();
    let mut raw = Map::new();
    for (name, value) in env {
        let Some((key, kind)) = FIELDS.iter().find(|(k, _)| env_var(k) == *name) else {
            continue;
        };
        // Only numeric settings are parsed: "8080" for `listen` must stay text.
        let parsed = match kind {
            Kind::Number => match value.trim().parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(value.clone()),
            },
            Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Value::from(true),
                "false" | "0" | "no" | "off" => Value::from(false),
                _ => Value::from(value.clone()),
            },
            Kind::Text | Kind::Choice(_) => Value::from(value.clone()),
        };
        dict.insert((*key).to_string(), parsed);
        raw.insert((*key).to_string(), value.clone());
    }
    (dict, raw)
}

fn flag_layer(flags: &serde_json::Map<String, serde_json::Value>) -> Result<Dict, ConfigError> {
    let mut dict = Dict::new();
    for (key, value) in flags {
        if value.is_null() {
            continue; // an optional flag that was not given
        }
        if kind_of(key).is_none() {
            return Err(ConfigError::UnknownSetting {
                input: format!("flag {}", flag_name(key)),
                key: key.clone(),
                known: known_settings(),
            });
        }
        let value = Value::serialize(value).map_err(|e| ConfigError::InvalidValue {
            input: format!("flag {}", flag_name(key)),
            expected: e.to_string(),
        })?;
        dict.insert(key.clone(), value);
    }
    Ok(dict)
}

/// Turns figment's extraction error into a sentence naming the input that was wrong.
fn extraction_error(
    figment: &Figment,
    err: figment::Error,
    toml_name: Option<&str>,
    env_raw: &Map<String, String>,
) -> ConfigError {
    use figment::error::Kind as K;
    let layer = err.metadata.as_ref().map(|m| m.name.to_string());
    let key = err.path.first().cloned();
    match (&err.kind, key) {
        (K::UnknownField(field, _), _) => ConfigError::UnknownSetting {
            input: layer.unwrap_or_else(|| "settings".into()),
            key: field.clone(),
            known: known_settings(),
        },
        (
            K::InvalidType(..) | K::InvalidValue(..) | K::UnknownVariant(..) | K::Message(_),
            Some(key),
        ) if kind_of(&key).is_some() => {
            let shown = figment
                .find_value(&key)
                .ok()
                .and_then(|v| serde_json::to_string(&v).ok())
                .unwrap_or_default();
            let input = match layer.as_deref() {
                Some(ENV_LAYER) => {
                    let raw = env_raw.get(&key).map(|s| json_str(s)).unwrap_or(shown);
                    format!("{}={raw}", env_var(&key))
                }
                Some(FLAG_LAYER) => format!("flag {}={shown}", flag_name(&key)),
                Some(name) if Some(name) == toml_name => format!("{name}: {key} = {shown}"),
                _ => format!("{key} = {shown}"),
            };
            ConfigError::InvalidValue {
                input,
                expected: expected_for(&key),
            }
        }
        _ => ConfigError::Other(err.to_string()),
    }
}

/// toml's message spans lines with a `|` source excerpt; keep the position line and
/// the explanation so the error stays one sentence.
fn one_line_toml_error(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines.next().unwrap_or_default().to_string();
    let detail: Vec<&str> = lines.filter(|l| !l.contains('|')).collect();
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {}", detail.join(" "))
    }
}

fn kind_of(key: &str) -> Option<Kind> {
    FIELDS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, kind)| *kind)
}

fn known_settings() -> String {
    FIELDS
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a correct value for `key` looks like, with the default as the example.
fn expected_for(key: &str) -> String {
    let example = Settings::default().display_value(key);
    match kind_of(key) {
        Some(Kind::Number) => format!("a whole number such as {example}"),
        Some(Kind::Bool) => "true or false".into(),
        Some(Kind::Text) => format!("text such as {example}"),
        Some(Kind::Choice(options)) => {
            let quoted: Vec<String> = options.iter().map(|o| json_str(o)).collect();
            format!("one of {}", quoted.join(", "))
        }
        None => "a known setting".into(),
    }
}

fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Hides the password of `scheme://user:password@host/...` so `herald config` and
/// error messages never print it.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let Some((user, _password)) = authority[..at].split_once(':') else {
        return url.to_string();
    };
    format!("{scheme}://{user}:***{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn toml_file(body: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("create temp file");
        f.write_all(body.as_bytes()).expect("write temp file");
        f
    }

    /// Always an explicit file, so a stray ./herald.toml in the test cwd can't leak in.
    fn opts(file: &Path, env_pairs: &[(&str, &str)]) -> LoadOptions {
        LoadOptions {
            config_file: Some(file.to_path_buf()),
            flags: serde_json::Map::new(),
            env: env(env_pairs),
        }
    }

    fn entry<'a>(loaded: &'a LoadedSettings, key: &str) -> &'a SettingEntry {
        loaded
            .entries
            .iter()
            .find(|e| e.key == key)
            .expect("entry present")
    }

    #[test]
    fn defaults_come_from_default() {
        let empty = toml_file("");
        let loaded = Settings::load(opts(empty.path(), &[])).expect("load");
        assert_eq!(loaded.settings, Settings::default());
        assert_eq!(loaded.entries.len(), FIELDS.len());
        for e in &loaded.entries {
            assert_eq!(e.source, "default", "{}", e.key);
        }
        assert_eq!(entry(&loaded, "concurrency").value, serde_json::json!(200));
        assert_eq!(
            entry(&loaded, "in_doubt_policy").value,
            serde_json::json!("resend")
        );
    }

    #[test]
    fn missing_default_file_is_skipped() {
        // The default path is relative; run from a fresh dir where it can't exist.
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("herald.toml");
        assert!(matches!(read_config_file(None, &missing), Ok(None)));
        let err = read_config_file(Some(&missing), &missing).expect_err("explicit must exist");
        assert!(matches!(err, ConfigError::ConfigFileMissing { .. }));
        let present = toml_file("listen = \"x:1\"\n");
        let found = read_config_file(None, present.path()).expect("read");
        assert!(found.is_some_and(|(_, d)| d.contains_key("listen")));
    }

    #[test]
    fn fields_table_matches_struct_in_order() {
        let json = serde_json::to_string(&Settings::default()).expect("serialize");
        let mut last = 0;
        for (key, _) in FIELDS {
            let pos = json.find(&format!("\"{key}\":")).expect("field exists");
            assert!(pos >= last, "{key} out of declaration order");
            last = pos;
        }
        let value = serde_json::to_value(Settings::default()).expect("to_value");
        assert_eq!(value.as_object().map(|o| o.len()), Some(FIELDS.len()));
    }

    #[test]
    fn toml_overrides_defaults_and_is_named() {
        let f = toml_file("concurrency = 7\nin_doubt_policy = \"fail\"\n");
        let loaded = Settings::load(opts(f.path(), &[])).expect("load");
        assert_eq!(loaded.settings.concurrency, 7);
        assert_eq!(loaded.settings.in_doubt_policy, InDoubtPolicy::Fail);
        assert_eq!(loaded.settings.in_doubt_policy_name(), "fail");
        let expected = format!("herald.toml ({})", f.path().display());
        assert_eq!(entry(&loaded, "concurrency").source, expected);
        assert_eq!(entry(&loaded, "in_doubt_policy").source, expected);
        assert_eq!(entry(&loaded, "batch_size").source, "default");
    }

    #[test]
    fn env_overrides_toml() {
        let f = toml_file("concurrency = 7\nlisten = \"0.0.0.0:1\"\n");
        let loaded = Settings::load(opts(
            f.path(),
            &[
                ("HERALD_CONCURRENCY", "9"),
                ("HERALD_DATABASE_URL", "postgres://u@h/db"),
                ("HERALD_LISTEN", "8080"),
                ("HERALD_LOG_FORMAT", "json"),
            ],
        ))
        .expect("load");
        assert_eq!(loaded.settings.concurrency, 9);
        assert_eq!(loaded.settings.database_url, "postgres://u@h/db");
        assert_eq!(loaded.settings.listen, "8080");
        assert_eq!(loaded.settings.log_format, LogFormat::Json);
        assert_eq!(
            entry(&loaded, "concurrency").source,
            "environment (HERALD_CONCURRENCY)"
        );
        assert_eq!(
            entry(&loaded, "database_url").source,
            "environment (HERALD_DATABASE_URL)"
        );
    }

    #[test]
    fn flags_override_env() {
        let f = toml_file("concurrency = 7\n");
        let mut o = opts(f.path(), &[("HERALD_CONCURRENCY", "9")]);
        o.flags.insert("concurrency".into(), serde_json::json!(11));
        o.flags.insert("listen".into(), serde_json::Value::Null);
        let loaded = Settings::load(o).expect("load");
        assert_eq!(loaded.settings.concurrency, 11);
        assert_eq!(entry(&loaded, "concurrency").source, "flag (--concurrency)");
        assert_eq!(entry(&loaded, "listen").source, "default");
    }

    #[test]
    fn unknown_toml_key_is_named() {
        let f = toml_file("concurency = 7\n");
        let err = Settings::load(opts(f.path(), &[])).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("unknown setting `concurency`"), "{msg}");
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(
            msg.contains("known settings are: database_url, listen"),
            "{msg}"
        );
    }

    #[test]
    fn bad_toml_value_names_file_and_key() {
        let f = toml_file("concurrency = \"lots\"\n");
        let msg = Settings::load(opts(f.path(), &[]))
            .expect_err("must fail")
            .to_string();
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(msg.contains("concurrency = \"lots\""), "{msg}");
        assert!(msg.contains("expected a whole number such as 200"), "{msg}");
    }

    #[test]
    fn bad_env_number_names_variable() {
        let empty = toml_file("");
        let err =
            Settings::load(opts(empty.path(), &[("HERALD_CONCURRENCY", "abc")])).expect_err("fail");
        assert_eq!(
            err.to_string(),
            "HERALD_CONCURRENCY=\"abc\" is not valid: expected a whole number such as 200"
        );
        let err = Settings::load(opts(empty.path(), &[("HERALD_RETRY_MAX_ATTEMPTS", "-1")]))
            .expect_err("fail");
        assert!(
            err.to_string()
                .starts_with("HERALD_RETRY_MAX_ATTEMPTS=\"-1\"")
        );
        let err = Settings::load(opts(empty.path(), &[("HERALD_IN_DOUBT_POLICY", "maybe")]))
            .expect_err("fail");
        assert_eq!(
            err.to_string(),
            "HERALD_IN_DOUBT_POLICY=\"maybe\" is not valid: expected one of \"resend\", \"fail\""
        );
    }

    #[test]
    fn bad_toml_syntax_is_reported() {
        let f = toml_file("concurrency = = 7\n");
        let err = Settings::load(opts(f.path(), &[])).expect_err("must fail");
        assert!(matches!(err, ConfigError::ConfigFileSyntax { .. }), "{err}");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        assert!(!msg.contains(" | "), "{msg}");
    }

    #[test]
    fn missing_explicit_config_file_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.toml");
        let err = Settings::load(opts(&path, &[])).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("herald.toml ({}) does not exist", path.display())));
        assert!(msg.contains("drop --config"), "{msg}");
    }

    #[test]
    fn unrelated_herald_vars_ignored() {
        let empty = toml_file("");
        let loaded = Settings::load(opts(
            empty.path(),
            &[
                ("HERALD_CONFIG", "/nope.toml"),
                ("HERALD_TEST_DATABASE", "whatever"),
                ("HERALD_CONCURRENCYX", "abc"),
                ("herald_concurrency", "abc"),
                ("CONCURRENCY", "abc"),
            ],
        ))
        .expect("load");
        assert_eq!(loaded.settings, Settings::default());
    }

    #[test]
    fn unknown_flag_errors() {
        let empty = toml_file("");
        let mut o = opts(empty.path(), &[]);
        o.flags.insert("concurency".into(), serde_json::json!(3));
        let err = Settings::load(o).expect_err("must fail");
        assert!(
            err.to_string().contains("unknown setting `concurency`"),
            "{err}"
        );
    }

    #[test]
    fn validate_catches_stale_after_not_above_heartbeat() {
        let mut s = Settings::default();
        assert_eq!(s.validate(), Ok(()));
        s.instance_stale_after_ms = s.heartbeat_interval_ms;
        let msg = s.validate().expect_err("must fail");
        assert!(
            msg.contains("instance_stale_after_ms must be greater than heartbeat_interval_ms"),
            "{msg}"
        );
    }

    #[test]
    fn validate_catches_bad_database_url() {
        let mut s = Settings::default();
        for ok in [
            "sqlite::memory:",
            "postgresql://u@h/db",
            "postgres://u@h/db",
        ] {
            s.database_url = ok.into();
            assert_eq!(s.validate(), Ok(()), "{ok}");
        }
        s.database_url = "mysql://u:secret@h/db".into();
        let msg = s.validate().expect_err("must fail");
        assert!(msg.contains("mysql://u:***@h/db"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
        assert!(msg.contains("sqlite://herald.db"), "{msg}");
        assert!(msg.contains("postgres://user@host/db"), "{msg}");
    }

    #[test]
    fn validate_other_rules() {
        let mut s = Settings::default();
        s.retry_base_ms = s.retry_max_ms + 1;
        assert!(s.validate().is_err());
        let s = Settings {
            batch_size: 0,
            ..Settings::default()
        };
        assert_eq!(
            s.validate(),
            Err("batch_size must be at least 1 (got 0)".to_string())
        );
        for (claim_ahead, ok) in [(0, true), (8, true), (9, false)] {
            let s = Settings {
                claim_ahead,
                ..Settings::default()
            };
            let r = s.validate();
            assert_eq!(r.is_ok(), ok, "claim_ahead {claim_ahead}: {r:?}");
            if let Err(e) = r {
                assert!(e.starts_with("claim_ahead must be from 0 to 8"), "{e}");
            }
        }
        // The SNS test prefix must fix a host and port: it ends in `/` after them.
        for bad in [
            "http://127.0.0.1:4010",
            "ftp://x/",
            "http://",
            "sns.example/",
        ] {
            let s = Settings {
                sns_certificate_url_prefix: Some(bad.into()),
                ..Settings::default()
            };
            let e = s.validate().unwrap_err();
            assert!(
                e.starts_with("sns_certificate_url_prefix must be"),
                "{bad}: {e}"
            );
        }
        let s = Settings {
            sns_certificate_url_prefix: Some("http://127.0.0.1:4010/".into()),
            ..Settings::default()
        };
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn load_reports_source_of_invalid_value() {
        let empty = toml_file("");
        let err =
            Settings::load(opts(empty.path(), &[("HERALD_CONCURRENCY", "0")])).expect_err("fail");
        assert_eq!(
            err.to_string(),
            "concurrency must be at least 1 (got 0 from environment (HERALD_CONCURRENCY))"
        );
        let f = toml_file("heartbeat_interval_ms = 20000\n");
        let msg = Settings::load(opts(f.path(), &[]))
            .expect_err("fail")
            .to_string();
        assert!(
            msg.contains("instance_stale_after_ms=10000 from default"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "heartbeat_interval_ms=20000 from herald.toml ({})",
                f.path().display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn entries_hide_database_password() {
        let empty = toml_file("");
        let mut o = opts(empty.path(), &[]);
        o.flags.insert(
            "database_url".into(),
            serde_json::json!("postgres://app:hunter2@db:5432/herald"),
        );
        let loaded = Settings::load(o).expect("load");
        assert_eq!(
            loaded.settings.database_url,
            "postgres://app:hunter2@db:5432/herald"
        );
        assert_eq!(
            entry(&loaded, "database_url").value,
            serde_json::json!("postgres://app:***@db:5432/herald")
        );
        assert!(!describe(&loaded.entries).contains("hunter2"));
    }

    #[test]
    fn describe_is_aligned() {
        let empty = toml_file("");
        let loaded =
            Settings::load(opts(empty.path(), &[("HERALD_LISTEN", "0.0.0.0:9")])).expect("load");
        let table = describe(&loaded.entries);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), FIELDS.len() + 1);
        assert!(lines[0].starts_with("KEY"));
        let col = lines[0].find("SOURCE").expect("header");
        let listen = lines
            .iter()
            .find(|l| l.starts_with("listen "))
            .expect("row");
        assert_eq!(listen.find("environment (HERALD_LISTEN)"), Some(col));
        assert!(listen.contains("0.0.0.0:9"));
        let val_col = lines[0].find("VALUE").expect("header");
        assert_eq!(listen.find("0.0.0.0:9"), Some(val_col));
    }
}
