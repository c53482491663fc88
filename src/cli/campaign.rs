//! `herald campaign …`

use super::{Cli, CliError, CliResult, actor, open_store, resolve_org};
use crate::config::Settings;
use crate::domain::{CampaignAction, MessageStatus};
use crate::store::{Campaign, NewCampaign, Store};
use crate::template::MessageTemplate;
use clap::Subcommand;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign (a draft, or scheduled with --schedule-at); prints its id.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        list: String,
        #[arg(long)]
        channel: String,
        /// Message template, e.g. "Hi {{ name }}".
        #[arg(long)]
        body: String,
        /// Start automatically at this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
        #[arg(long)]
        schedule_at: Option<String>,
    },
    /// Start sending now.
    Start { id: i64 },
    /// Stop claiming new messages; in-flight sends finish.
    Pause {
        id: i64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused campaign.
    Resume {
        id: i64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel: unsent messages are cancelled; in-flight sends finish.
    Cancel {
        id: i64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Mark complete by hand; refused while any message is pending.
    Complete {
        id: i64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// List campaigns.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The campaign's audit trail.
    Events {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Counters and status; --watch follows until the campaign ends.
    Status {
        id: i64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        watch: bool,
    },
}

pub async fn run(cli: &Cli, settings: &Settings, command: &CampaignCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    let org = resolve_org(&store, &cli.org).await?;
    let who = actor();
    let now = crate::clock::now_ms();
    match command {
        CampaignCommand::Create {
            name,
            list,
            channel,
            body,
            schedule_at,
        } => {
            let list = store.list_by_name(org, list).await?;
            let channel = store.channel_by_name(org, channel).await?;
            let template = MessageTemplate::compile(body)?;
            // The same trial render as the API's create: a body that runs into a render
            // limit is refused here, not by every sender.
            template.check_limits()?;
            let known = store.list_attribute_keys(list.id).await?;
            template.check_variables(&known, &list.name)?;
            let scheduled_at = schedule_at
                .as_deref()
                .map(crate::clock::parse_rfc3339)
                .transpose()?;
            let id = store
                .create_campaign(
                    &NewCampaign {
                        org_id: org,
                        name: name.clone(),
                        channel_id: channel.id,
                        list_id: list.id,
                        body: body.clone(),
                        scheduled_at,
                    },
                    &who,
                )
                .await?;
            println!("{id}");
            Ok(0)
        }
        CampaignCommand::Start { id } => {
            own(&store, org, *id).await?;
            store.start_campaign(*id, now, &who, None).await?;
            print_line(&store.campaign(*id).await?);
            Ok(0)
        }
        CampaignCommand::Pause { id, reason }
        | CampaignCommand::Resume { id, reason }
        | CampaignCommand::Cancel { id, reason }
        | CampaignCommand::Complete { id, reason } => {
            let action = match command {
                CampaignCommand::Pause { .. } => CampaignAction::Pause,
                CampaignCommand::Resume { .. } => CampaignAction::Resume,
                CampaignCommand::Cancel { .. } => CampaignAction::Cancel,
                _ => CampaignAction::Complete,
            };
            own(&store, org, *id).await?;
            let c = store
                .transition(*id, action, now, &who, reason.as_deref())
                .await?;
            print_line(&c);
            Ok(0)
        }
        CampaignCommand::List { json } => {
            let campaigns = store.campaigns(org).await?;
            if *json {
                let rows: Vec<_> = campaigns.iter().map(status_json).collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<6} {:<24} {:<10} {:>9} {:>9} {:>9} {:>9}",
                    "ID", "NAME", "STATUS", "TOTAL", "PENDING", "SENT+", "FAILED"
                );
                for c in &campaigns {
                    println!(
                        "{:<6} {:<24} {:<10} {:>9} {:>9} {:>9} {:>9}",
                        c.id,
                        truncate(&c.name, 24),
                        c.status.as_str(),
                        c.total,
                        c.counts.pending(),
                        delivered_or_better(c),
                        c.counts.get(MessageStatus::Failed)
                    );
                }
            }
            Ok(0)
        }
        CampaignCommand::Events { id, json } => {
            own(&store, org, *id).await?;
            let events = store.events(*id).await?;
            if *json {
                println!("{}", serde_json::to_string(&events)?);
            } else {
                for e in events {
                    println!(
                        "{}  {:<10} -> {:<10} by {}: {}",
                        crate::clock::rfc3339(e.at),
                        e.from_status.as_deref().unwrap_or("-"),
                        e.to_status,
                        e.actor,
                        e.reason
                    );
                }
            }
            Ok(0)
        }
        CampaignCommand::Status { id, json, watch } => {
            own(&store, org, *id).await?;
            if *watch {
                watch_status(&store, *id, *json).await
            } else {
                let c = store.campaign(*id).await?;
                let paused_reason = store.paused_reason(c.id).await?;
                if *json {
                    let mut v = status_json(&c);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("paused_reason".into(), paused_reason.into());
                    }
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    print_status(&c);
                    if let Some(reason) = paused_reason {
                        println!("  paused: {reason}");
                    }
                }
                Ok(0)
            }
        }
    }
}

/// Refuses to act on another organisation's campaign, with the same words as a missing one.
async fn own(store: &Store, org: i64, id: i64) -> Result<(), CliError> {
    let c = store.campaign(id).await?;
    if c.org_id != org {
        return Err(CliError::from(format!(
            "campaign {id} does not exist: `herald campaign list` shows the campaigns there are"
        )));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n.saturating_sub(1)).collect::<String>() + "…"
    }
}

fn delivered_or_better(c: &Campaign) -> i64 {
    [
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Undelivered,
    ]
    .iter()
    .map(|s| c.counts.get(*s))
    .sum()
}

/// The flat object of `campaign status --json`.
pub fn status_json(c: &Campaign) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("id".into(), c.id.into());
    o.insert("name".into(), c.name.clone().into());
    o.insert("status".into(), c.status.as_str().into());
    o.insert("channel".into(), c.channel_name.clone().into());
    o.insert("list".into(), c.list_name.clone().into());
    o.insert("total".into(), c.total.into());
    o.insert("pending".into(), c.counts.pending().into());
    o.insert(
        "created_at".into(),
        crate::clock::rfc3339(c.created_at).into(),
    );
    o.insert(
        "scheduled_at".into(),
        c.scheduled_at.map(crate::clock::rfc3339).into(),
    );
    o.insert(
        "started_at".into(),
        c.started_at.map(crate::clock::rfc3339).into(),
    );
    o.insert(
        "completed_at".into(),
        c.completed_at.map(crate::clock::rfc3339).into(),
    );
    for (s, n) in c.counts.iter() {
        o.insert(s.as_str().into(), n.into());
    }
    o.insert("in_doubt_total".into(), c.in_doubt_total.into());
    serde_json::Value::Object(o)
}

fn print_line(c: &Campaign) {
    println!(
        "campaign {} `{}` is {} ({} total, {} pending)",
        c.id,
        c.name,
        c.status,
        c.total,
        c.counts.pending()
    );
}

fn print_status(c: &Campaign) {
    println!("campaign {} `{}`: {}", c.id, c.name, c.status);
    println!("  channel {}  list {}", c.channel_name, c.list_name);
    if let Some(t) = c.started_at {
        println!("  started   {}", crate::clock::rfc3339(t));
    }
    if let Some(t) = c.completed_at {
        println!("  ended     {}", crate::clock::rfc3339(t));
    }
    println!("  total {}  pending {}", c.total, c.counts.pending());
    for (s, n) in c.counts.iter() {
        if n != 0 {
            println!("  {:<12} {n}", s.as_str());
        }
    }
    if c.in_doubt_total > 0 {
        println!(
            "  {} messages were found in doubt after an instance died: at most that many duplicates",
            c.in_doubt_total
        );
    }
}

async fn watch_status(store: &Store, id: i64, json: bool) -> CliResult {
    use indicatif::{ProgressBar, ProgressStyle};
    let first = store.campaign(id).await?;
    let bar = ProgressBar::new(first.total.max(0) as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {per_sec} {msg}",
    ) {
        bar.set_style(style);
    }
    loop {
        let c = store.campaign(id).await?;
        bar.set_length(c.total.max(0) as u64);
        bar.set_position((c.total - c.counts.pending()).max(0) as u64);
        bar.set_message(format!(
            "{} · sent {} · failed {} · retry {} · in doubt {}",
            c.status,
            delivered_or_better(&c),
            c.counts.get(MessageStatus::Failed),
            c.counts.get(MessageStatus::RetryWait),
            c.counts.get(MessageStatus::InDoubt)
        ));
        if c.status.is_terminal() {
            bar.finish();
            if json {
                println!("{}", serde_json::to_string(&status_json(&c))?);
            } else {
                print_status(&c);
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
