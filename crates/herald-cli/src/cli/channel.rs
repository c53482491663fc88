//! `herald channel …`: create channels of every kind (secrets sealed at rest), list them
//! with secrets masked, test-send, and read the sandbox provider's record.

use super::{Cli, CliError, CliResult, open_store, resolve_channel, resolve_org};
use crate::channel_kind::ChannelKind;
use crate::channels::{self, BuildContext, ChannelRegistry, Flags, SendRequest};
use crate::config::Settings;
use crate::ids::{CampaignId, ChannelId, MessageId};
use crate::secrets::SecretKey;
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel; prints its id (chn_N).
    Create(Box<ChannelCreate>),
    /// List channels (secrets masked).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What a sandbox channel's simulated provider holds.
    Stats {
        /// The channel: its name, or its id (chn_5, or 5).
        #[arg(value_name = "CHANNEL")]
        name: String,
        /// Only this campaign's messages: campaign id (cmp_2, or 2).
        #[arg(long, value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        campaign: Option<CampaignId>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set the channel's prices (for `campaign estimate`): a price per unit (an SMS
    /// segment on an SMS channel, a message otherwise), prices by number prefix, or both.
    Price {
        /// The channel: its name, or its id (chn_5, or 5).
        #[arg(value_name = "CHANNEL")]
        name: String,
        /// ISO 4217 currency code, e.g. USD.
        #[arg(long, required_unless_present = "clear")]
        currency: Option<String>,
        /// Price per unit where no prefix matches, e.g. 0.0079.
        #[arg(long, value_name = "PRICE")]
        per_unit: Option<String>,
        /// A price for numbers starting with PREFIX (the longest match wins); repeat.
        #[arg(long, value_name = "PREFIX=PRICE")]
        prefix: Vec<String>,
        /// Remove the channel's prices.
        #[arg(long, conflicts_with_all = ["currency", "per_unit", "prefix"])]
        clear: bool,
    },
    /// Send one real message through the channel and print the provider's answer.
    Test {
        /// The channel: its name, or its id (chn_5, or 5).
        #[arg(value_name = "CHANNEL")]
        name: String,
        /// Recipient: E.164 phone number or email address.
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// The message text.
        #[arg(long, default_value = "Test message from Herald")]
        body: String,
    },
}

/// Every kind's flags, each named as the setting it gives (`--account-sid` is
/// `account_sid`); serialised, they are what the kind's `from_flags` reads.
#[derive(Debug, Args, serde::Serialize)]
pub struct ChannelCreate {
    /// The channel's name, unique in the organisation (campaigns name it with --channel).
    #[arg(long)]
    pub name: String,
    /// sandbox, twilio, whatsapp or smtp.
    #[arg(long)]
    pub kind: String,
    /// Messages per second (SMS: segments per second), held across all instances.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Provider API base URL (tests point it at a local fake).
    #[arg(long)]
    pub base_url: Option<String>,

    /// sandbox: simulated provider latency.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// sandbox: probability of a transient failure (0..1).
    #[arg(long, default_value_t = 0.0)]
    #[serde(serialize_with = "float_flag")]
    pub fail_rate: f64,
    /// sandbox: probability of a permanent failure (0..1).
    #[arg(long, default_value_t = 0.0)]
    #[serde(serialize_with = "float_flag")]
    pub permanent_fail_rate: f64,
    /// sandbox: send a `delivered` receipt this long after each accepted send.
    #[arg(long)]
    pub delivery_delay_ms: Option<u64>,
    /// sandbox: simulate a provider outage (every send finds the provider unreachable).
    #[arg(long)]
    pub unreachable: bool,

    /// twilio: account SID (AC…).
    #[arg(long)]
    pub account_sid: Option<String>,
    /// twilio: auth token (sealed at rest).
    #[arg(long)]
    pub auth_token: Option<String>,
    /// twilio: sender number.
    #[arg(long)]
    pub from: Option<String>,
    /// twilio: Messaging Service SID (MG…), instead of --from.
    #[arg(long)]
    pub messaging_service_sid: Option<String>,
    /// twilio: Content API template (HX…), e.g. for WhatsApp templates through Twilio.
    #[arg(long)]
    pub content_sid: Option<String>,
    /// twilio: send over WhatsApp (whatsapp: addresses).
    #[arg(long)]
    pub whatsapp: bool,

    /// whatsapp: phone number id.
    #[arg(long)]
    pub phone_number_id: Option<String>,
    /// whatsapp: access token (sealed at rest).
    #[arg(long)]
    pub access_token: Option<String>,
    /// whatsapp: app secret, checks webhook signatures (sealed at rest).
    #[arg(long)]
    pub app_secret: Option<String>,
    /// whatsapp: webhook verify token (sealed at rest).
    #[arg(long)]
    pub verify_token: Option<String>,
    /// whatsapp: Graph API version.
    #[arg(long)]
    pub api_version: Option<String>,
    /// whatsapp: send this approved template (one body parameter per line of the message).
    #[arg(long)]
    pub template: Option<String>,
    /// whatsapp: the template's language.
    #[arg(long)]
    pub template_language: Option<String>,
    /// whatsapp: the WhatsApp Business Account id, to check campaigns' templates with Meta
    /// when they are created.
    #[arg(long)]
    pub business_account_id: Option<String>,

    /// smtp: server host.
    #[arg(long)]
    pub host: Option<String>,
    /// smtp: server port.
    #[arg(long)]
    pub port: Option<u16>,
    /// smtp: none, starttls or tls.
    #[arg(long)]
    pub tls: Option<String>,
    /// smtp: user name.
    #[arg(long)]
    pub username: Option<String>,
    /// smtp: password (sealed at rest).
    #[arg(long)]
    pub password: Option<String>,
    /// smtp: subject when the message has no `Subject:` first line.
    #[arg(long)]
    pub default_subject: Option<String>,
    /// smtp: send the password even with --tls none (a relay on a trusted network only;
    /// refused otherwise, so credentials never cross a network in clear by accident).
    #[arg(long)]
    pub allow_plaintext_auth: bool,
    /// smtp: the Amazon SNS topic (ARN) that Amazon SES sends this channel's bounces and
    /// complaints to (docs/EMAIL.md).
    #[arg(long)]
    pub ses_topic_arn: Option<String>,
    /// smtp: the basic-auth password of Postmark's bounce webhooks (sealed at rest).
    #[arg(long)]
    pub postmark_webhook_token: Option<String>,
    /// smtp: the public key of SendGrid's signed Event Webhook (base64).
    #[arg(long)]
    pub sendgrid_verification_key: Option<String>,
}

/// A number flag as JSON, which has no `NaN` or `inf`: those as their text, so the kind's
/// rules see them (and refuse them) rather than nothing.
fn float_flag<S: serde::Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() {
        s.serialize_f64(*value)
    } else {
        s.serialize_str(&value.to_string())
    }
}

/// The public configuration and the secrets of the channel described by the flags, as
/// its kind reads them (`channels::Implementation::from_flags`).
fn describe(c: &ChannelCreate, kind: ChannelKind) -> Result<(Value, Option<Value>), CliError> {
    let Some(implementation) = channels::implementation(kind) else {
        return Err(unknown_kind(&c.kind));
    };
    let Value::Object(values) = serde_json::to_value(c)? else {
        return Err(CliError::from("the flags are not an object"));
    };
    let checked = (implementation.from_flags)(&Flags::new(kind, values))?;
    Ok((checked.config, checked.secrets))
}

fn unknown_kind(given: &str) -> CliError {
    CliError::from(format!(
        "--kind `{given}` is not a channel kind this herald knows: use one of {}",
        crate::channel_kind::names()
    ))
}

/// Secrets as they may be shown: each value masked to its last four characters.
fn masked(secrets: &Value) -> Value {
    match secrets {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let shown = v.as_str().map(crate::secrets::mask).unwrap_or_default();
                    (k.clone(), Value::String(shown))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

pub async fn run(cli: &Cli, settings: &Settings, command: &ChannelCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    let org = resolve_org(&store, &cli.org).await?;
    let context = BuildContext::from_settings(settings);
    match command {
        ChannelCommand::Create(c) => {
            if let Some(rate) = c.rate
                && !(rate > 0.0 && rate.is_finite())
            {
                return Err(CliError::from(format!(
                    "--rate {rate} is not a rate: give messages per second above 0, e.g. --rate 10"
                )));
            }
            let kind: ChannelKind = c.kind.parse().map_err(|_| unknown_kind(&c.kind))?;
            let (config, secrets) = describe(c, kind)?;
            let key = match &secrets {
                Some(_) => Some(
                    SecretKey::from_settings(settings.secret_key.as_deref())?
                        .ok_or(crate::secrets::SecretError::NoKey)?,
                ),
                None => None,
            };
            let sealed = match (&key, &secrets) {
                (Some(k), Some(s)) => Some((k, s)),
                _ => None,
            };
            let id = store
                .create_channel_with(org, &c.name, kind.as_str(), &config, sealed, c.rate)
                .await?;
            println!("{}", id);
            Ok(0)
        }
        ChannelCommand::List { json } => {
            let channels = store.channels(org).await?;
            let outages = store.org_channel_outages(org).await?;
            let outage_of = |id: ChannelId| outages.iter().find(|o| o.channel_id == id);
            let rows: Vec<Value> = channels
                .iter()
                .map(|c| {
                    let outage = outage_of(c.id);
                    let secrets = match &c.secrets {
                        None => Value::Null,
                        Some(_) => context
                            .open_secrets(c)
                            .map(|s| masked(&s))
                            .unwrap_or_else(|_| Value::String("sealed (no key to open)".into())),
                    };
                    serde_json::json!({"id": c.id.to_string(), "name": c.name, "kind": c.kind, "config": c.config,
                        "rate_per_sec": c.rate_per_sec, "secrets": secrets,
                        "pricing": c.pricing.as_ref().map(crate::api::channels::ChannelPricing::from),
                        "availability": if outage.is_some() { "unavailable" } else { "available" },
                        "unavailable_since": outage.map(|o| crate::clock::rfc3339(o.since)),
                        "unavailable_reason": outage.map(|o| o.reason.clone())})
                })
                .collect();
            if *json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<10} {:<24} {:<10} {:<8} CONFIG",
                    "ID", "NAME", "KIND", "RATE"
                );
                for (c, row) in channels.iter().zip(&rows) {
                    let rate = c
                        .rate_per_sec
                        .map(|r| format!("{r}/s"))
                        .unwrap_or_else(|| "-".into());
                    let secrets = if row["secrets"].is_null() {
                        String::new()
                    } else {
                        format!(" secrets {}", row["secrets"])
                    };
                    println!(
                        "{:<10} {:<24} {:<10} {:<8} {}{secrets}",
                        c.id.to_string(),
                        c.name,
                        c.kind,
                        rate,
                        c.config
                    );
                    if let Some(o) = outage_of(c.id) {
                        println!(
                            "       UNAVAILABLE: {} (sending campaigns are paused; they resume when it answers)",
                            o.describe()
                        );
                    }
                }
            }
            Ok(0)
        }
        ChannelCommand::Price {
            name,
            currency,
            per_unit,
            prefix,
            clear,
        } => {
            let channel = resolve_channel(&store, org, name).await?;
            let pricing = if *clear {
                None
            } else {
                Some(
                    crate::pricing::Pricing::parse(
                        currency.as_deref().unwrap_or_default(),
                        per_unit.as_deref(),
                        prefix,
                    )
                    .map_err(|m| {
                        CliError::from(format!("{m} (see `herald channel price --help`)"))
                    })?,
                )
            };
            let info = store
                .set_org_channel_pricing(org, channel.id, pricing.as_ref())
                .await?;
            match &info.pricing {
                None => println!("channel {}: no prices", info.id),
                Some(p) => println!("channel {}: {}", info.id, describe_pricing(p)),
            }
            Ok(0)
        }
        ChannelCommand::Stats {
            name,
            campaign,
            json,
        } => {
            let channel = resolve_channel(&store, org, name).await?;
            if channel.kind.parse::<ChannelKind>().ok() != Some(crate::channel_kind::sandbox::KIND)
            {
                return Err(CliError::from(format!(
                    "channel `{name}` is a {} channel: stats show what a sandbox channel's simulated provider holds",
                    channel.kind
                )));
            }
            let stats = store.sandbox_stats(channel.id, *campaign).await?;
            if *json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                println!(
                    "received {}, distinct recipients {}, duplicates {}",
                    stats.received, stats.distinct_recipients, stats.duplicates
                );
            }
            Ok(0)
        }
        ChannelCommand::Test { name, to, body } => {
            let info = resolve_channel(&store, org, name).await?;
            let address = crate::address::Address::parse(to)?;
            let registry = ChannelRegistry::new(store.clone(), None, context);
            let channel = registry.get(info.id).await?;
            let result = channel
                .send(SendRequest {
                    // A test message belongs to no campaign: no message, no campaign.
                    message_id: MessageId(0),
                    campaign_id: CampaignId(0),
                    address: address.clone(),
                    body: body.clone(),
                    attempt: 1,
                    unsubscribe_url: None,
                    template: None,
                    email: None,
                })
                .await;
            println!("{}", serde_json::to_string(&result_json(&result))?);
            Ok(if matches!(result, channels::SendResult::Accepted { .. }) {
                0
            } else {
                1
            })
        }
    }
}

fn result_json(r: &channels::SendResult) -> Value {
    use channels::SendResult::*;
    match r {
        Accepted { provider_id } => {
            serde_json::json!({"result": "accepted", "provider_id": provider_id})
        }
        Transient { error, retry_after } => {
            serde_json::json!({"result": "transient", "error": error,
            "retry_after_ms": retry_after.map(|d| d.as_millis() as u64)})
        }
        Permanent { error } => serde_json::json!({"result": "permanent", "error": error}),
        OptOut { error } => serde_json::json!({"result": "opted_out", "error": error}),
        StopCampaign { error } => {
            serde_json::json!({"result": "channel_cannot_send", "error": error})
        }
        CredentialsRefused { reason, error } => {
            serde_json::json!({"result": "channel_cannot_send", "reason": reason, "error": error})
        }
        Unknown { error } => serde_json::json!({"result": "unknown", "error": error}),
        Unreachable { error } => serde_json::json!({"result": "unreachable", "error": error}),
    }
}

/// `USD 0.0079 per unit; +44 0.04` as `channel price` and `channel list` print it.
pub fn describe_pricing(p: &crate::pricing::Pricing) -> String {
    let mut parts = Vec::new();
    if let Some(d) = p.default {
        parts.push(format!("{} {d} per unit", p.currency));
    }
    for (prefix, m) in &p.by_prefix {
        parts.push(format!("{prefix}: {} {m}", p.currency));
    }
    parts.join("; ")
}
