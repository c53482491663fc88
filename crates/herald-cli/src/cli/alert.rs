//! `herald alert …`: who --org's alerts reach and through which channels, the alert log, and
//! a test alert (docs/ALERTS.md). The same rules as the API (`api::alerts`).

use super::{Cli, CliError, CliResult, actor, open_store, resolve_org};
use crate::alerts::{MAX_IN_DOUBT_THRESHOLD, check_recipients};
use crate::api::alerts::{ALERT_STATUSES, alert_view, settings_view};
use crate::config::Settings;
use crate::ids::{ChannelId, OrgId};
use crate::store::alerts::AlertSettingsChange;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Show the alert settings of --org, or change them with the options below.
    Settings {
        /// The channel alerts go through: its id (chn_2), name or number, or `none`.
        #[arg(long, value_name = "CHANNEL")]
        channel: Option<String>,
        /// The channel used when the first is the one an alert is about, cannot reach a
        /// recipient's kind of address, or is unavailable: id, name or number, or `none`.
        #[arg(long, value_name = "CHANNEL")]
        fallback_channel: Option<String>,
        /// Messages in doubt in one sending campaign that raise an alert: a number (0: off),
        /// or `default` (100).
        #[arg(long, value_name = "N", value_parser = threshold_or_default, allow_negative_numbers = true)]
        in_doubt_threshold: Option<ThresholdChoice>,
        /// Add a recipient: an email address or an E.164 phone number (repeat for more).
        #[arg(long = "add-recipient", value_name = "ADDRESS")]
        add: Vec<String>,
        /// Remove a recipient (repeat for more).
        #[arg(long = "remove-recipient", value_name = "ADDRESS")]
        remove: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The alerts of --org, newest first: sent, being sent, or undeliverable and why.
    List {
        /// Only alerts in this status: pending, sent or undeliverable.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// How many alerts to show (1 to 500).
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send a test alert to every recipient of --org through its alert channel.
    Test {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// A channel given on the command line (id, name or number) in `org`, or None for `none`.
async fn channel_or_none(
    store: &crate::store::Store,
    org: OrgId,
    option: &str,
    value: &str,
) -> Result<Option<ChannelId>, CliError> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    super::resolve_channel(store, org, value)
        .await
        .map(|c| Some(c.id))
        .map_err(|e| CliError {
            message: format!("{option}: {}", e.message),
            code: e.code,
        })
}

/// A threshold given on the command line, or `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThresholdChoice(Option<i64>);

fn threshold_or_default(value: &str) -> Result<ThresholdChoice, String> {
    if value.eq_ignore_ascii_case("default") {
        return Ok(ThresholdChoice(None));
    }
    match value.parse::<i64>() {
        Ok(n) if (0..=MAX_IN_DOUBT_THRESHOLD).contains(&n) => Ok(ThresholdChoice(Some(n))),
        _ => Err(format!(
            "`{value}` is not a threshold: give 0 (off) to {MAX_IN_DOUBT_THRESHOLD}, or `default`"
        )),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn recipients(option: &str, given: &[String]) -> Result<Vec<String>, CliError> {
    check_recipients(given).map_err(|(index, why)| {
        let which = index
            .and_then(|i| given.get(i))
            .map(|v| format!(" `{v}`"))
            .unwrap_or_default();
        CliError::from(format!("{option}{which}: {why}"))
    })
}

pub async fn run(cli: &Cli, settings: &Settings, command: &AlertCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    let org = resolve_org(&store, &cli.org).await?;
    let now = crate::clock::now_ms();
    match command {
        AlertCommand::Settings {
            channel,
            fallback_channel,
            in_doubt_threshold,
            add,
            remove,
            json,
        } => {
            let change = AlertSettingsChange {
                channel_id: match channel {
                    Some(v) => Some(channel_or_none(&store, org, "--channel", v).await?),
                    None => None,
                },
                fallback_channel_id: match fallback_channel {
                    Some(v) => Some(channel_or_none(&store, org, "--fallback-channel", v).await?),
                    None => None,
                },
                in_doubt_threshold: in_doubt_threshold.map(|t| t.0),
                add: recipients("--add-recipient", add)?,
                remove: recipients("--remove-recipient", remove)?,
            };
            let changes = change.channel_id.is_some()
                || change.fallback_channel_id.is_some()
                || change.in_doubt_threshold.is_some()
                || !change.add.is_empty()
                || !change.remove.is_empty();
            let current = if changes {
                let before = store.alert_settings(org).await?;
                let total = before
                    .recipients
                    .iter()
                    .filter(|r| !change.remove.contains(r))
                    .chain(change.add.iter().filter(|a| !before.recipients.contains(a)))
                    .count();
                if total > crate::alerts::MAX_RECIPIENTS {
                    return Err(CliError::from(format!(
                        "--add-recipient: at most {} alert recipients; use a mailing list or a group number for more",
                        crate::alerts::MAX_RECIPIENTS
                    )));
                }
                let after = store.set_alert_settings(org, &change, now).await?;
                tracing::info!(org_id = %org, actor = actor(), recipients = after.recipients.len(), "alert settings changed");
                after
            } else {
                store.alert_settings(org).await?
            };
            let view = settings_view(&current);
            // A recipient no configured channel can reach would make every alert to it
            // undeliverable: say so now rather than at the first incident.
            let (channels, configured) = store.alert_channels(org).await?;
            if configured > 0 {
                for r in &current.recipients {
                    let Ok(address) = crate::address::Address::parse(r) else {
                        continue;
                    };
                    let reachable = channels.iter().any(|c| c.reaches(address.kind()));
                    if !reachable {
                        eprintln!(
                            "warning: no alert channel can reach {r} ({} address): set a channel of that kind with --channel or --fallback-channel",
                            address.kind()
                        );
                    }
                }
            }
            if *json {
                print_json(&view)?;
            } else {
                let named = |id: Option<ChannelId>| match id {
                    None => "none".to_string(),
                    Some(id) => match channels.iter().find(|c| c.id == id) {
                        Some(c) => format!("{id} ({})", c.name),
                        None => format!("{id} (deleted)"),
                    },
                };
                println!("channel: {}", named(current.channel_id));
                println!("fallback channel: {}", named(current.fallback_channel_id));
                println!(
                    "in-doubt threshold: {}{}",
                    if view.in_doubt_threshold == 0 {
                        "off".to_string()
                    } else {
                        view.in_doubt_threshold.to_string()
                    },
                    if view.in_doubt_threshold_is_default {
                        " (default)"
                    } else {
                        ""
                    }
                );
                if view.recipients.is_empty() {
                    println!(
                        "recipients: none (`herald alert settings --add-recipient ADDRESS` adds one; until then alerts reach no one)"
                    );
                } else {
                    println!("recipients: {}", view.recipients.join(", "));
                }
            }
            Ok(0)
        }
        AlertCommand::List {
            status,
            limit,
            json,
        } => {
            if let Some(s) = status
                && !ALERT_STATUSES.contains(&s.as_str())
            {
                return Err(CliError::from(format!(
                    "--status: `{s}` is not an alert status; use one of {}",
                    ALERT_STATUSES.join(", ")
                )));
            }
            if !(1..=500).contains(limit) {
                return Err(CliError::from(format!(
                    "--limit: give 1 to 500, not {limit}"
                )));
            }
            let rows = store
                .list_alerts(org, status.as_deref(), None, *limit)
                .await?;
            let views: Vec<_> = rows.iter().map(alert_view).collect();
            if *json {
                print_json(&views)?;
            } else if views.is_empty() {
                println!("no alerts");
            } else {
                for a in &views {
                    let detail = match (&a.status[..], &a.error) {
                        ("sent", _) => {
                            format!("sent via {}", a.channel_id.clone().unwrap_or_default())
                        }
                        (_, Some(e)) => format!("{}: {e}", a.status),
                        (s, None) => s.to_string(),
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        a.id, a.created_at, a.event_type, a.recipient, a.subject, detail
                    );
                }
            }
            Ok(0)
        }
        AlertCommand::Test { json } => {
            let queued = store.create_test_alerts(org, now).await?;
            if queued == 0 {
                return Err(CliError::from(
                    "--org has no alert recipients: add one with `herald alert settings --add-recipient ADDRESS`",
                ));
            }
            tracing::info!(org_id = %org, actor = actor(), queued, "test alerts queued");
            if *json {
                print_json(&serde_json::json!({ "queued": queued }))?;
            } else {
                println!(
                    "{queued} test alert(s) queued; a running `herald serve` sends them, and `herald alert list` shows how they went"
                );
            }
            Ok(0)
        }
    }
}
