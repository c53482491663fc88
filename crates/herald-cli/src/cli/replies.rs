//! `herald replies …`: the replies inbox of --org (docs/INBOX.md), the same rows and JSON as
//! the API's `GET /replies` and `GET /conversations`.

use super::{Cli, CliError, CliResult, actor, open_store, resolve_org};
use crate::api::replies::{Conversation, Reply};
use crate::config::Settings;
use crate::ids::CampaignId;
use crate::store::replies::ReplyFilter;
use clap::Subcommand;

/// Most rows one command prints.
const LIMIT: i64 = 500;

#[derive(Debug, Subcommand)]
pub enum RepliesCommand {
    /// Conversations (one per sending address), the newest reply first; or, with
    /// --address, that sender's replies.
    List {
        /// Only unread replies (conversations with one).
        #[arg(long)]
        unread: bool,
        /// Only replies to this campaign (cmp_2, or 2).
        #[arg(long, value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        campaign: Option<CampaignId>,
        /// Text in the message, the address or the contact's name.
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// One sender's replies, newest first.
        #[arg(long, value_name = "ADDRESS")]
        address: Option<String>,
        /// Print JSON (the API's objects), one per line.
        #[arg(long)]
        json: bool,
    },
    /// Mark every unread reply from ADDRESS read.
    Read {
        /// The sender, as `replies list` shows it (+15005550101).
        address: String,
    },
}

pub async fn run(cli: &Cli, settings: &Settings, command: &RepliesCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    let org = resolve_org(&store, &cli.org).await?;
    match command {
        RepliesCommand::List {
            unread,
            campaign,
            search,
            address,
            json,
        } => {
            if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
                return Err(CliError::from("--search: at most 200 characters"));
            }
            let filter = ReplyFilter {
                unread: *unread,
                q: search.clone(),
                campaign_id: *campaign,
                address: address.clone(),
            };
            if address.is_some() {
                let rows = store.replies(org, &filter, None, LIMIT).await?;
                for r in rows {
                    let r = Reply::from(r);
                    if *json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        print_reply(&r);
                    }
                }
            } else {
                let rows = store.conversations(org, &filter, None, LIMIT).await?;
                if !*json {
                    println!(
                        "{:<18} {:<20} {:>7} {:>6}  LAST",
                        "FROM", "CONTACT", "REPLIES", "UNREAD"
                    );
                }
                for c in rows {
                    let c = Conversation::from(c);
                    if *json {
                        println!("{}", serde_json::to_string(&c)?);
                    } else {
                        println!(
                            "{:<18} {:<20} {:>7} {:>6}  {} {}",
                            c.address,
                            c.contact_name.as_deref().unwrap_or("-"),
                            c.replies,
                            c.unread,
                            c.last.received_at,
                            one_line(&c.last.body, 60)
                        );
                    }
                }
            }
            Ok(0)
        }
        RepliesCommand::Read { address } => {
            let n = store
                .mark_replies_read(org, address, crate::clock::now_ms())
                .await?;
            tracing::info!(org_id = %org, actor = actor(), marked = n, "replies marked read");
            println!("{n} replies from {address} marked read");
            Ok(0)
        }
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    } else {
        flat
    }
}

fn print_reply(r: &Reply) {
    let keyword = r
        .keyword
        .as_deref()
        .map(|k| format!(" [{}]", k.to_uppercase()))
        .unwrap_or_default();
    let unread = if r.read_at.is_none() { " (unread)" } else { "" };
    println!(
        "{} {} {}{keyword}{unread}: {}",
        r.id,
        r.received_at,
        r.campaign_id.as_deref().unwrap_or("-"),
        one_line(&r.body, 200)
    );
    if let Some(answer) = &r.auto_reply {
        println!(
            "    answered: {} ({})",
            one_line(answer, 200),
            r.auto_reply_status.as_deref().unwrap_or("")
        );
    }
}
