//! `herald campaign …`

use super::campaign_email::{EmailFlags, body_or_derived, check_email};
use super::{
    Cli, CliError, CliResult, actor, open_store, resolve_channel, resolve_list, resolve_org,
};
use crate::config::Settings;
use crate::domain::{CampaignAction, CampaignStatus, MessageStatus};
use crate::export::{Export, ExportOf};
use crate::ids::{CampaignId, OrgId};
use crate::store::autopause::AutoPause;
use crate::store::{Campaign, CampaignEvent, NewCampaign, Store};
use crate::template::MessageTemplate;
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign (a draft, or scheduled with --schedule-at); prints its id (cmp_N).
    Create {
        /// The campaign's name, as the dashboard and `campaign list` show it.
        #[arg(long)]
        name: String,
        /// The list to send to: its name, or its id (lst_3).
        #[arg(long, value_name = "LIST")]
        list: String,
        /// The channel to send through: its name, or its id (chn_5).
        #[arg(long, value_name = "CHANNEL")]
        channel: String,
        /// Message template, e.g. "Hi {{ name }}" (for an email with --subject: its plain
        /// text; leave it out with --html-file to derive the text from the HTML).
        #[arg(long)]
        body: Option<String>,
        /// Start automatically at this time, which must be in the future (RFC 3339, e.g.
        /// 2026-12-01T09:00:00Z).
        #[arg(long, value_name = "TIME")]
        schedule_at: Option<String>,
        /// Auto-pause on failure rate: PERCENT%/WINDOW (e.g. 20%/500: the engine pauses
        /// the campaign when more than 20 % of its last 500 outcomes failed permanently) or
        /// off. Without it, the organisation's setting applies (`herald org set
        /// --auto-pause`), else 20%/500.
        #[arg(long, value_name = "PERCENT%/WINDOW|off", value_parser = parse_auto_pause)]
        auto_pause: Option<AutoPause>,
        /// Send only between these local times of each recipient: HH:MM-HH:MM, optionally
        /// with the IANA zone of recipients whose own is unknown ("08:00-21:00
        /// Europe/Lisbon"), or off. Without it, the organisation's (`herald org set
        /// --send-window`). docs/CAMPAIGNS.md, "Send windows".
        #[arg(long, value_name = "HH:MM-HH:MM[ ZONE]|off", value_parser = parse_send_window)]
        send_window: Option<String>,
        #[command(flatten)]
        template: TemplateFlags,
        #[command(flatten)]
        email: EmailFlags,
    },
    /// Change a campaign's send window until it ends; the messages it holds are looked at
    /// again at once.
    SendWindow {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// HH:MM-HH:MM[ ZONE], off, or inherit (the organisation's).
        #[arg(value_name = "HH:MM-HH:MM[ ZONE]|off|inherit")]
        window: String,
    },
    /// Change a campaign's auto-pause setting until it ends (the failure window restarts).
    AutoPause {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// PERCENT%/WINDOW (e.g. 20%/500), off, or inherit (the organisation's setting).
        #[arg(value_name = "PERCENT%/WINDOW|off|inherit", value_parser = parse_auto_pause_or_inherit)]
        setting: Inherit,
    },
    /// Make a new draft that resends to the recipients whose messages ended in the given
    /// statuses (default failed,undelivered), minus anyone unsubscribed or suppressed
    /// since; prints its id (cmp_N), and who was left out on stderr.
    Resend {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Comma-separated final statuses: failed, undelivered, skipped, cancelled, sent,
        /// delivered, read.
        #[arg(long, value_name = "STATUS,...", default_value = "failed,undelivered")]
        status: String,
        /// The new campaign's name (default: the parent's with " (resend)").
        #[arg(long)]
        name: Option<String>,
    },
    /// Copy any campaign as a new draft (name, channel, list, template, auto-pause); prints
    /// its id.
    Duplicate {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// The new campaign's name (default: "Copy of " and the parent's).
        #[arg(long)]
        name: Option<String>,
    },
    /// Edit a draft or a scheduled campaign (a scheduled one stays scheduled).
    Edit {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// The list to send to: its name, or its id (lst_3).
        #[arg(long, value_name = "LIST")]
        list: Option<String>,
        /// The channel to send through: its name, or its id (chn_5).
        #[arg(long, value_name = "CHANNEL")]
        channel: Option<String>,
        /// Message template, e.g. "Hi {{ name }}".
        #[arg(long)]
        body: Option<String>,
        #[command(flatten)]
        template: TemplateFlags,
        /// Send the body again instead of the campaign's WhatsApp template.
        #[arg(long, conflicts_with = "whatsapp_template")]
        no_whatsapp_template: bool,
        #[command(flatten)]
        email: EmailFlags,
        /// Send the body as plain text again (its first line the subject), without the
        /// email parts. (--subject, --html-file, --from-name, --reply-to change one part
        /// each and keep the others.)
        #[arg(long, conflicts_with_all = ["subject", "html_file", "from_name", "reply_to"])]
        no_email: bool,
    },
    /// Schedule a draft, or move a scheduled campaign, to start at TIME (RFC 3339, in
    /// the future).
    Schedule {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// When to start (RFC 3339, e.g. 2026-12-01T09:00:00Z).
        #[arg(long, value_name = "TIME")]
        at: String,
    },
    /// Take a scheduled campaign back to draft.
    Unschedule {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
    },
    /// Start sending now.
    Start {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
    },
    /// Stop claiming new messages; in-flight sends finish.
    Pause {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused campaign.
    Resume {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel: unsent messages are cancelled; in-flight sends finish.
    Cancel {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Mark complete by hand; refused while any message is pending.
    Complete {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List campaigns.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Export the campaign's messages as CSV, one row per message (docs/CAMPAIGNS.md
    /// lists the columns).
    Export {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Write to this file instead of stdout (replaced only once the export is whole).
        #[arg(long, short, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// Before it starts: recipients and who would be skipped, every message rendered with
    /// its SMS segments, UCS-2 and the characters forcing it, cost at the channel's prices
    /// (`herald channel price`), duration at its rate.
    Estimate {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Print JSON (what GET /api/v1/campaigns/{id}/estimate answers).
        #[arg(long)]
        json: bool,
    },
    /// The campaign's audit trail.
    Events {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Print a JSON array instead of one line per event.
        #[arg(long)]
        json: bool,
    },
    /// Counters and status; --watch follows until the campaign ends.
    Status {
        /// Campaign id (cmp_2, or 2).
        #[arg(value_name = "CAMPAIGN", value_parser = CampaignId::parse_lenient)]
        id: CampaignId,
        /// Print JSON (with --watch: one JSON object per line, one per change).
        #[arg(long)]
        json: bool,
        /// Follow until the campaign ends: a progress bar on a terminal, one line per
        /// change otherwise (a pipe, a file, a CI log).
        #[arg(long)]
        watch: bool,
    },
}

/// A campaign's WhatsApp template (docs/CAMPAIGNS.md, "WhatsApp templates").
#[derive(Debug, Clone, Args)]
pub struct TemplateFlags {
    /// WhatsApp channels: send this approved template instead of the body (the body stays
    /// Herald's text of the message, for previews and the estimate).
    #[arg(long, value_name = "NAME")]
    whatsapp_template: Option<String>,
    /// The template's language, as approved (default en_US).
    #[arg(long, value_name = "CODE", requires = "whatsapp_template")]
    template_language: Option<String>,
    /// The contact field for each body parameter, in order ({{1}} first): name, address or
    /// one of the list's attributes; repeat the flag or separate with commas.
    #[arg(
        long = "template-param",
        value_name = "FIELD",
        value_delimiter = ',',
        requires = "whatsapp_template"
    )]
    template_params: Vec<String>,
}

impl TemplateFlags {
    fn template(&self) -> Option<crate::whatsapp_template::WhatsAppTemplate> {
        Some(crate::whatsapp_template::WhatsAppTemplate {
            name: self.whatsapp_template.clone()?,
            language: self
                .template_language
                .clone()
                .unwrap_or_else(|| crate::channels::whatsapp::DEFAULT_TEMPLATE_LANGUAGE.into()),
            parameters: self.template_params.clone(),
        })
    }
}

/// The API's check of a campaign's WhatsApp template, with the CLI's error.
async fn check_template(
    store: &Store,
    settings: &Settings,
    template: &crate::whatsapp_template::WhatsAppTemplate,
    channel: &crate::store::ChannelInfo,
    list_id: crate::ids::ListId,
    list_name: &str,
) -> Result<(), CliError> {
    crate::channels::template_check::check_whatsapp_template(
        store,
        &crate::channels::BuildContext::from_settings(settings),
        template,
        channel,
        list_id,
        list_name,
    )
    .await
    .map_err(|e| CliError::from(format!("--whatsapp-template: {e}")))
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
            auto_pause,
            send_window,
            template: template_flags,
            email: email_flags,
        } => {
            let list = resolve_list(&store, org, list).await?;
            let channel = resolve_channel(&store, org, channel).await?;
            let whatsapp_template = template_flags.template();
            if let Some(t) = &whatsapp_template {
                check_template(&store, settings, t, &channel, list.id, &list.name).await?;
            }
            let email = email_flags.email()?;
            let body = &body_or_derived(body.as_deref(), email.as_ref())?;
            let template = MessageTemplate::compile(body)?;
            // The same trial render as the API's create: a body that runs into a render
            // limit is refused here, not by every sender.
            template.check_limits()?;
            crate::tracked_links::check_trackable(
                template.links(),
                settings.public_url.as_deref(),
                settings.secret_key.as_deref(),
            )?;
            let known = store.list_attribute_keys(list.id).await?;
            template.check_variables(&known, &list.name)?;
            if let Some(e) = &email {
                check_email(
                    &store,
                    settings,
                    e,
                    &channel,
                    (list.id, &list.name),
                    template.links(),
                )
                .await?;
            }
            let scheduled_at = schedule_at
                .as_deref()
                .map(|at| future_time(at, now))
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
                        whatsapp_template,
                        email,
                        send_window: send_window.clone(),
                    },
                    &who,
                )
                .await?;
            if auto_pause.is_some() {
                store.set_campaign_auto_pause(org, id, *auto_pause).await?;
            }
            println!("{}", id);
            Ok(0)
        }
        CampaignCommand::SendWindow { id, window } => {
            let id = own(&store, org, *id).await?;
            let setting = if window.trim().eq_ignore_ascii_case("inherit") {
                None
            } else {
                Some(parse_send_window(window).map_err(CliError::from)?)
            };
            store
                .set_campaign_send_window(org, id, setting.as_deref(), now)
                .await?;
            let c = store.campaign(id).await?;
            println!(
                "campaign {}: send window {} ({})",
                id,
                c.send_window.effective().unwrap_or("none: any hour"),
                c.send_window.source()
            );
            Ok(0)
        }
        CampaignCommand::AutoPause { id, setting } => {
            let id = own(&store, org, *id).await?;
            store.set_campaign_auto_pause(org, id, setting.0).await?;
            let c = store.campaign(id).await?;
            println!(
                "campaign {}: auto-pause {} ({})",
                id,
                c.auto_pause.effective,
                c.auto_pause.source.as_str()
            );
            Ok(0)
        }
        CampaignCommand::Resend { id, status, name } => {
            let id = own(&store, org, *id).await?;
            let names: Vec<String> = status.split(',').map(str::to_string).collect();
            let statuses = crate::api::campaign_derive::resend_statuses(Some(&names))
                .map_err(|m| CliError::from(format!("--status: {m}")))?;
            let name = name.as_deref().map(check_campaign_name).transpose()?;
            let r = store
                .api_campaign_resend(org, id, &statuses, name.as_deref(), &who)
                .await?;
            println!("{}", r.campaign_id);
            eprintln!(
                "{} recipients in list {} (\"{}\"); left out: {} unsubscribed or suppressed since, {} whose contact was deleted. Start it with `herald campaign start {}`.",
                r.recipients, r.list_id, r.list_name, r.opted_out, r.no_contact, r.campaign_id
            );
            Ok(0)
        }
        CampaignCommand::Duplicate { id, name } => {
            let id = own(&store, org, *id).await?;
            let name = name.as_deref().map(check_campaign_name).transpose()?;
            let new = store
                .api_campaign_duplicate(org, id, name.as_deref(), &who)
                .await?;
            println!("{new}");
            Ok(0)
        }
        CampaignCommand::Edit {
            id,
            name,
            list,
            channel,
            body,
            template: template_flags,
            no_whatsapp_template,
            email: email_flags,
            no_email,
        } => {
            let id = own(&store, org, *id).await?;
            let template_change = if *no_whatsapp_template {
                Some(None)
            } else {
                template_flags.template().map(Some)
            };
            let current = store.campaign(id).await?;
            let email_change = if *no_email {
                Some(None)
            } else {
                email_flags.edited(current.email.as_ref())?.map(Some)
            };
            if name.is_none()
                && list.is_none()
                && channel.is_none()
                && body.is_none()
                && template_change.is_none()
                && email_change.is_none()
            {
                return Err(CliError::from(
                    "nothing to change: give --name, --list, --channel, --body, --whatsapp-template, --no-whatsapp-template, --subject (with --html-file, --from-name, --reply-to) or --no-email",
                ));
            }
            let name = name.as_deref().map(check_campaign_name).transpose()?;
            let list = match list {
                Some(l) => Some(resolve_list(&store, org, l).await?),
                None => None,
            };
            let channel = match channel {
                Some(c) => Some(resolve_channel(&store, org, c).await?),
                None => None,
            };
            if body.is_some() || list.is_some() {
                let template = MessageTemplate::compile(body.as_deref().unwrap_or(&current.body))?;
                template.check_limits()?;
                crate::tracked_links::check_trackable(
                    template.links(),
                    settings.public_url.as_deref(),
                    settings.secret_key.as_deref(),
                )?;
                let (list_id, list_name) = match &list {
                    Some(l) => (l.id, l.name.clone()),
                    None => (current.list_id, current.list_name.clone()),
                };
                let known = store.list_attribute_keys(list_id).await?;
                template.check_variables(&known, &list_name)?;
            }
            // The template as it will be, against the channel and list as they will be.
            let final_template = match &template_change {
                Some(t) => t.clone(),
                None => current.whatsapp_template.clone(),
            };
            if let Some(t) = &final_template
                && (template_change.is_some() || channel.is_some() || list.is_some())
            {
                let final_channel = match &channel {
                    Some(c) => c.clone(),
                    None => store.org_channel(org, current.channel_id).await?,
                };
                let (list_id, list_name) = match &list {
                    Some(l) => (l.id, l.name.clone()),
                    None => (current.list_id, current.list_name.clone()),
                };
                check_template(&store, settings, t, &final_channel, list_id, &list_name).await?;
            }
            // The email parts as they will be, against the body, channel and list as they
            // will be: an empty body is the HTML's text only with an HTML part.
            let final_email = match &email_change {
                Some(e) => e.clone(),
                None => current.email.clone(),
            };
            let final_body = body.clone().unwrap_or_else(|| current.body.clone());
            if final_body.trim().is_empty()
                && !final_email.as_ref().is_some_and(|e| e.derives_text(""))
            {
                return Err(CliError::from(
                    "--body must not be empty: give the message, or keep --subject and --html-file so the text comes from the HTML",
                ));
            }
            if let Some(e) = &final_email
                && (email_change.is_some() || body.is_some() || channel.is_some() || list.is_some())
            {
                let final_channel = match &channel {
                    Some(c) => c.clone(),
                    None => store.org_channel(org, current.channel_id).await?,
                };
                let (list_id, list_name) = match &list {
                    Some(l) => (l.id, l.name.clone()),
                    None => (current.list_id, current.list_name.clone()),
                };
                let body_links = MessageTemplate::compile(&final_body)?.links().to_vec();
                check_email(
                    &store,
                    settings,
                    e,
                    &final_channel,
                    (list_id, &list_name),
                    &body_links,
                )
                .await?;
            }
            let c = store
                .api_campaign_update_draft(
                    org,
                    id,
                    &crate::store::DraftEdit {
                        name: name.as_deref(),
                        body: body.as_deref(),
                        channel_id: channel.map(|c| c.id),
                        list_id: list.map(|l| l.id),
                        whatsapp_template: template_change.as_ref().map(Option::as_ref),
                        email: email_change.as_ref().map(Option::as_ref),
                    },
                    &who,
                )
                .await?;
            print_line(&c);
            Ok(0)
        }
        CampaignCommand::Schedule { id, at } => {
            let id = own(&store, org, *id).await?;
            let at = future_time_flag("--at", at, now)?;
            let c = store.api_campaign_schedule(org, id, at, &who).await?;
            print_line(&c);
            Ok(0)
        }
        CampaignCommand::Unschedule { id } => {
            let id = own(&store, org, *id).await?;
            let c = store.api_campaign_unschedule(org, id, &who).await?;
            print_line(&c);
            Ok(0)
        }
        CampaignCommand::Start { id } => {
            let id = own(&store, org, *id).await?;
            store.start_campaign(id, now, &who, None).await?;
            print_line(&store.campaign(id).await?);
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
            let id = own(&store, org, *id).await?;
            let c = store
                .transition(id, action, now, &who, reason.as_deref())
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
                    "{:<10} {:<24} {:<10} {:>9} {:>9} {:>9} {:>9}  OUTCOME",
                    "ID", "NAME", "STATUS", "TOTAL", "PENDING", "SENT+", "FAILED"
                );
                for c in &campaigns {
                    println!(
                        "{:<10} {:<24} {:<10} {:>9} {:>9} {:>9} {:>9}  {}",
                        c.id.to_string(),
                        truncate(&c.name, 24),
                        c.status.as_str(),
                        c.total,
                        c.counts.pending(),
                        delivered_or_better(c),
                        c.counts.get(MessageStatus::Failed),
                        c.outcome.map(|o| o.as_str()).unwrap_or("-")
                    );
                }
            }
            Ok(0)
        }
        CampaignCommand::Export { id, output } => {
            let id = own(&store, org, *id).await?;
            let export = Export::new(store, org, ExportOf::CampaignMessages(id));
            let rows = super::export::write(export, output.as_deref()).await?;
            super::report_export(rows, "messages", output.as_deref());
            Ok(0)
        }
        CampaignCommand::Estimate { id, json } => {
            let id = own(&store, org, *id).await?;
            let c = store.campaign(id).await?;
            if !matches!(c.status, CampaignStatus::Draft | CampaignStatus::Scheduled) {
                return Err(CliError::from(format!(
                    "campaign {id} is {}: an estimate is for a campaign that has not started; `herald campaign status {id}` has its real counts",
                    c.status
                )));
            }
            let channel = store.org_channel(org, c.channel_id).await?;
            let signer = crate::tracked_links::LinkSigner::new(
                settings.public_url.as_deref(),
                settings.secret_key.as_deref(),
            );
            let e = crate::estimate::estimate(&store, &c, &channel, signer.as_ref()).await?;
            if *json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                print_estimate(&c, &e);
            }
            Ok(0)
        }
        CampaignCommand::Events { id, json } => {
            let id = own(&store, org, *id).await?;
            let events = store.events(id).await?;
            if *json {
                let rows: Vec<_> = events.iter().map(event_json).collect();
                println!("{}", serde_json::to_string(&rows)?);
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
            let id = own(&store, org, *id).await?;
            if *watch {
                watch_status(&store, id, *json).await
            } else {
                let c = store.campaign(id).await?;
                let paused_reason = store.paused_reason(c.id).await?;
                let links = store.campaign_links(org, c.id).await?;
                let reached = crate::tracked_links::reached(&c.counts);
                // Messages its send window holds, as the API's `waiting`.
                let waiting = store.campaign_waiting(c.id, now).await?;
                if *json {
                    let mut v = status_json(&c);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("paused_reason".into(), paused_reason.into());
                        o.insert(
                            "waiting".into(),
                            match waiting.until {
                                Some(until) => serde_json::json!({
                                    "messages": waiting.messages,
                                    "until": crate::clock::rfc3339(until),
                                }),
                                None => serde_json::Value::Null,
                            },
                        );
                        let links: Vec<serde_json::Value> = links
                            .iter()
                            .map(|l| {
                                serde_json::json!({
                                    "position": l.position,
                                    "url": l.url,
                                    "clicks": l.clicks,
                                    "clicked": l.clicked,
                                    "click_rate": crate::tracked_links::click_rate(l.clicked, reached),
                                })
                            })
                            .collect();
                        o.insert("links".into(), links.into());
                    }
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    print_status(&c);
                    if let Some(until) = waiting.until {
                        println!(
                            "  waiting {} for their send window, the first at {} (not stuck: no attempt is spent)",
                            waiting.messages,
                            crate::clock::rfc3339(until)
                        );
                    }
                    if let Some(reason) = paused_reason {
                        println!("  paused: {reason}");
                    }
                    if !links.is_empty() {
                        println!(
                            "  clicked {} of {reached} reached ({:.1} %), {} clicks",
                            c.clicked,
                            crate::tracked_links::click_rate(c.clicked, reached) * 100.0,
                            c.clicks
                        );
                        for l in &links {
                            println!(
                                "    link {}: {} clicked ({:.1} %), {} clicks  {}",
                                l.position,
                                l.clicked,
                                crate::tracked_links::click_rate(l.clicked, reached) * 100.0,
                                l.clicks,
                                l.url
                            );
                        }
                    }
                }
                Ok(0)
            }
        }
    }
}

/// `id` when it is a campaign of `org`; another organisation's campaign is refused with
/// the same words as a missing one.
/// The estimate as a person reads it.
fn print_estimate(c: &Campaign, e: &crate::estimate::Estimate) {
    let skipped: i64 = e.skipped.values().sum();
    println!(
        "{} ({}): {} recipients of {} in list {}",
        c.name, c.id, e.recipients, e.audience, c.list_name
    );
    if skipped > 0 {
        let reasons: Vec<String> = e
            .skipped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{n} {}", r.replace('_', " ")))
            .collect();
        println!("skipped at start: {skipped} ({})", reasons.join(", "));
    }
    if e.render_failures > 0 {
        println!(
            "cannot render for {} recipients; first: {}",
            e.render_failures,
            e.first_render_failure.as_deref().unwrap_or("")
        );
    }
    if e.counts_segments {
        let by: Vec<String> = e
            .recipients_by_segments
            .iter()
            .map(|(s, n)| format!("{n} × {s}"))
            .collect();
        println!("SMS segments: {} ({})", e.units, by.join(", "));
        println!(
            "UCS-2 (70 characters per segment): {} recipients",
            e.ucs2_recipients
        );
        for u in &e.ucs2_characters {
            match &u.replacement {
                Some(r) => println!(
                    "  {} ({}) in {} messages: replace with {r:?} to stay in GSM-7",
                    u.character, u.code_point, u.recipients
                ),
                None => println!(
                    "  {} ({}) in {} messages: no GSM-7 replacement",
                    u.character, u.code_point, u.recipients
                ),
            }
        }
    } else {
        println!("messages: {}", e.units);
    }
    match e.tracked_link_length {
        Some(length) => println!(
            "tracked links: {}, each counted as {length} characters",
            e.tracked_links
        ),
        None if e.tracked_links > 0 => println!(
            "tracked links: {}, counted as written (set public_url and secret_key to track them)",
            e.tracked_links
        ),
        None => {}
    }
    match &e.cost {
        Some(cost) => {
            print!("estimated cost: {} {}", cost.currency, cost.total);
            if cost.unpriced_recipients > 0 {
                print!(" (+ {} recipients with no price)", cost.unpriced_recipients);
            }
            println!();
        }
        None => println!("estimated cost: unknown (set prices with `herald channel price`)"),
    }
    match (e.rate_per_sec, e.duration_secs) {
        (Some(rate), Some(secs)) => println!(
            "duration at {rate}/s: {}",
            crate::clock::human_duration(secs)
        ),
        _ => println!(
            "duration: no rate limit on the channel (bounded by the provider and concurrency)"
        ),
    }
}

fn check_campaign_name(name: &str) -> Result<String, CliError> {
    super::check_cli_name("--name", name)
}

async fn own(store: &Store, org: OrgId, id: CampaignId) -> Result<CampaignId, CliError> {
    let missing = || {
        CliError::from(format!(
            "campaign {id} does not exist: `herald campaign list` shows the campaigns there are"
        ))
    };
    let c = match store.campaign(id).await {
        Ok(c) => c,
        Err(crate::store::StoreError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if c.org_id != org {
        return Err(missing());
    }
    Ok(c.id)
}

/// `--schedule-at`: RFC 3339 and in the future, as the API's `scheduled_at` must be.
fn future_time(value: &str, now: i64) -> Result<i64, CliError> {
    future_time_flag("--schedule-at", value, now)
}

/// A time flag (`--schedule-at`, `--at`): RFC 3339 and in the future.
fn future_time_flag(flag: &str, value: &str, now: i64) -> Result<i64, CliError> {
    let at =
        crate::clock::parse_rfc3339(value).map_err(|e| CliError::from(format!("{flag}: {e}")))?;
    if at <= now {
        return Err(CliError::from(format!(
            "{flag} `{value}` is not in the future: give a later time, or run `herald campaign start` to start now"
        )));
    }
    Ok(at)
}

/// One entry of `campaign events --json`, with prefixed ids.
fn event_json(e: &CampaignEvent) -> serde_json::Value {
    serde_json::json!({
        "id": e.id.to_string(),
        "campaign_id": e.campaign_id.to_string(),
        "at": e.at,
        "actor": e.actor,
        "from_status": e.from_status,
        "to_status": e.to_status,
        "reason": e.reason,
    })
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
    o.insert("id".into(), c.id.to_string().into());
    o.insert("name".into(), c.name.clone().into());
    o.insert("status".into(), c.status.as_str().into());
    o.insert(
        "auto_pause".into(),
        c.auto_pause.effective.to_string().into(),
    );
    o.insert(
        "auto_pause_source".into(),
        c.auto_pause.source.as_str().into(),
    );
    o.insert("send_window".into(), c.send_window.effective().into());
    o.insert("send_window_source".into(), c.send_window.source().into());
    // Null until the campaign is completed or cancelled (domain::CampaignOutcome).
    o.insert("outcome".into(), c.outcome.map(|o| o.as_str()).into());
    o.insert("channel".into(), c.channel_name.clone().into());
    o.insert("channel_id".into(), c.channel_id.to_string().into());
    o.insert("list".into(), c.list_name.clone().into());
    o.insert("list_id".into(), c.list_id.to_string().into());
    // The campaign it was made from (a resend or a duplicate), as the API's `parent`.
    o.insert(
        "parent_id".into(),
        c.parent.map(|(id, _)| id.to_string()).into(),
    );
    o.insert(
        "parent_kind".into(),
        c.parent.map(|(_, kind)| kind.as_str()).into(),
    );
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
    // When its message rows moved to the archive (docs/CAMPAIGNS.md, "Retention").
    o.insert(
        "archived_at".into(),
        c.archived_at.map(crate::clock::rfc3339).into(),
    );
    for (s, n) in c.counts.iter() {
        o.insert(s.as_str().into(), n.into());
    }
    o.insert("in_doubt_total".into(), c.in_doubt_total.into());
    // As the API's stats: messages with a counted click, every counted click, and the
    // rate over the messages that reached the provider.
    o.insert(
        "whatsapp_template".into(),
        serde_json::to_value(&c.whatsapp_template).unwrap_or_default(),
    );
    o.insert(
        "email".into(),
        serde_json::to_value(&c.email).unwrap_or_default(),
    );
    o.insert("replies".into(), c.replies.into());
    o.insert("clicked".into(), c.clicked.into());
    o.insert("clicks".into(), c.clicks.into());
    o.insert(
        "click_rate".into(),
        crate::tracked_links::click_rate(c.clicked, crate::tracked_links::reached(&c.counts))
            .into(),
    );
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
    let id = c.id;
    match c.outcome {
        Some(o) => println!("campaign {id} `{}`: {} ({o})", c.name, c.status),
        None => println!("campaign {id} `{}`: {}", c.name, c.status),
    }
    println!("  channel {}  list {}", c.channel_name, c.list_name);
    if let Some(t) = &c.whatsapp_template {
        println!(
            "  whatsapp template {} ({}), parameters: {}",
            t.name,
            t.language,
            if t.parameters.is_empty() {
                "none".to_string()
            } else {
                t.parameters.join(", ")
            }
        );
    }
    if let Some(e) = &c.email {
        println!("  email subject: {}", e.subject);
        let text = if e.derives_text(&c.body) {
            "derived from the HTML"
        } else {
            "the body"
        };
        match &e.html {
            Some(html) => println!(
                "  email HTML part: {} characters; plain text: {text}",
                html.chars().count()
            ),
            None => println!("  email: plain text only (the body)"),
        }
        if let Some(name) = &e.from_name {
            println!("  email from name: {name}");
        }
        if let Some(r) = &e.reply_to {
            println!("  email reply-to: {r}");
        }
    }
    println!(
        "  auto-pause {} ({})",
        c.auto_pause.effective,
        c.auto_pause.source.as_str()
    );
    if let Some(w) = c.send_window.effective() {
        println!("  send window {w} ({})", c.send_window.source());
    }
    if let Some(t) = c.started_at {
        println!("  started   {}", crate::clock::rfc3339(t));
    }
    if let Some(t) = c.completed_at {
        println!("  ended     {}", crate::clock::rfc3339(t));
    }
    match c.archived_at {
        Some(t) => println!(
            "  archived  {} (its messages are in the archive: `herald campaign export {}` reads them)",
            crate::clock::rfc3339(t),
            c.id
        ),
        None if c.archive_begun => println!(
            "  archiving (its message rows are moving to the archive; `herald campaign export {}` reads both)",
            c.id
        ),
        None => {}
    }
    println!(
        "  total {}  processed {}  pending {}",
        c.total,
        c.total - c.counts.pending(),
        c.counts.pending()
    );
    for (s, n) in c.counts.iter() {
        if n != 0 {
            println!("  {:<12} {n}", s.as_str());
        }
    }
    if c.replies > 0 {
        println!(
            "  {} replies (`herald replies list --campaign {}`)",
            c.replies, c.id
        );
    }
    if c.in_doubt_total > 0 {
        println!(
            "  {} messages were found in doubt after an instance died: at most that many duplicates",
            c.in_doubt_total
        );
    }
}

/// One line of progress: what changes while a campaign runs.
fn progress_line(c: &Campaign) -> String {
    format!(
        "campaign {} {}: {} of {} processed · sent {} · failed {} · retry {} · in doubt {}",
        c.id,
        c.status,
        (c.total - c.counts.pending()).max(0),
        c.total,
        delivered_or_better(c),
        c.counts.get(MessageStatus::Failed),
        c.counts.get(MessageStatus::RetryWait),
        c.counts.get(MessageStatus::InDoubt)
    )
}

/// Follows the campaign until it ends. On a terminal, a progress bar redrawn in place; into
/// a pipe or a file, one line per change (`--json`: one JSON object per line), so a log
/// holds what happened and no redraws.
async fn watch_status(store: &Store, id: CampaignId, json: bool) -> CliResult {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        watch_bar(store, id, json).await
    } else {
        watch_lines(store, id, json).await
    }
}

async fn watch_lines(store: &Store, id: CampaignId, json: bool) -> CliResult {
    use std::io::Write;
    let mut last = String::new();
    loop {
        let c = store.campaign(id).await?;
        let line = if json {
            serde_json::to_string(&status_json(&c))?
        } else {
            progress_line(&c)
        };
        if line != last {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
            last = line;
        }
        if c.status.is_terminal() {
            if !json {
                print_status(&c);
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn watch_bar(store: &Store, id: CampaignId, json: bool) -> CliResult {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let first = store.campaign(id).await?;
    let bar = ProgressBar::with_draw_target(
        Some(first.total.max(0) as u64),
        ProgressDrawTarget::stdout(),
    );
    // No colour in the template: the bar is plain text, with or without NO_COLOR.
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

/// `--send-window`: a window (in its canonical form) or off.
pub fn parse_send_window(s: &str) -> Result<String, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok("off".to_string());
    }
    crate::send_window::SendWindow::parse(s).map(|w| w.to_string())
}

/// `--auto-pause`: PERCENT%/WINDOW or off.
pub fn parse_auto_pause(s: &str) -> Result<AutoPause, String> {
    s.parse()
}

/// A setting, or `inherit` (None).
#[derive(Debug, Clone, Copy)]
pub struct Inherit(pub Option<AutoPause>);

fn parse_auto_pause_or_inherit(s: &str) -> Result<Inherit, String> {
    if s.trim().eq_ignore_ascii_case("inherit") {
        return Ok(Inherit(None));
    }
    s.parse()
        .map(|a| Inherit(Some(a)))
        .map_err(|e| format!("{e}, or inherit"))
}
