//! `herald webhook …`: the webhook endpoints of --org (where Herald sends its events), their
//! delivery log, replays and test events. The same rules as the API (`api::webhooks`).

use super::{Cli, CliError, CliResult, actor, open_store, resolve_org};
use crate::api::webhooks::{
    check_description, check_events, check_since, delivery_view, new_signing_secret, view,
};
use crate::channels::BuildContext;
use crate::config::Settings;
use crate::ids::{NotificationId, WebhookEndpointId};
use crate::secrets::SecretKey;
use crate::store::webhook_endpoints::DELIVERY_STATUSES;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Create an endpoint; prints its id and its signing secret (shown only this once).
    Create {
        /// Where Herald POSTs events: an http(s) URL the outbound guard allows.
        #[arg(long, value_name = "URL")]
        url: String,
        /// An event type to send (repeat for more), e.g. campaign.completed; without any,
        /// every type except message.failed, message.undelivered and message.delivered.
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
        /// What the endpoint is for (at most 500 characters).
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
        /// Print JSON (id, url, events, secret, ...) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the endpoints of --org (never their secrets).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete an endpoint with its deliveries (pending ones are never sent).
    Delete {
        /// The endpoint: its id (whk_3, or 3).
        #[arg(value_name = "ENDPOINT", value_parser = WebhookEndpointId::parse_lenient)]
        id: WebhookEndpointId,
    },
    /// Replace the signing secret; prints the new one (only this once). The previous one
    /// also signs for 24 hours.
    RotateSecret {
        /// The endpoint: its id (whk_3, or 3).
        #[arg(value_name = "ENDPOINT", value_parser = WebhookEndpointId::parse_lenient)]
        id: WebhookEndpointId,
        /// Print JSON (id, secret, previous_secret_until) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The delivery log: events given to the endpoint, newest first, with their attempts.
    Deliveries {
        /// The endpoint: its id (whk_3, or 3).
        #[arg(value_name = "ENDPOINT", value_parser = WebhookEndpointId::parse_lenient)]
        id: WebhookEndpointId,
        /// Only deliveries in this status: pending, delivered or failed.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// How many deliveries to show (1 to 100).
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send an event again: one (--event ntf_N) or every failed delivery since a time.
    Replay {
        /// The endpoint: its id (whk_3, or 3).
        #[arg(value_name = "ENDPOINT", value_parser = WebhookEndpointId::parse_lenient)]
        id: WebhookEndpointId,
        /// The event to send again (ntf_N, or N), as the delivery log shows it.
        #[arg(long, value_name = "EVENT", value_parser = NotificationId::parse_lenient, conflicts_with = "failed_since", required_unless_present = "failed_since")]
        event: Option<NotificationId>,
        /// Send again every failed delivery whose event happened at or after this RFC 3339
        /// time, e.g. 2026-12-01T00:00:00Z.
        #[arg(long, value_name = "TIME")]
        failed_since: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send a webhook.test event to this endpoint only; it shows in the delivery log.
    Test {
        /// The endpoint: its id (whk_3, or 3).
        #[arg(value_name = "ENDPOINT", value_parser = WebhookEndpointId::parse_lenient)]
        id: WebhookEndpointId,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn sealing_key(settings: &Settings) -> Result<SecretKey, CliError> {
    match SecretKey::from_settings(settings.secret_key.as_deref()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(CliError::from(
            "webhook signing secrets are sealed at rest and no secret_key is configured: generate one with `herald keygen` and set HERALD_SECRET_KEY",
        )),
        Err(e) => Err(e.into()),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn run(cli: &Cli, settings: &Settings, command: &WebhookCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    let org = resolve_org(&store, &cli.org).await?;
    let now = crate::clock::now_ms();
    match command {
        WebhookCommand::Create {
            url,
            events,
            description,
            json,
        } => {
            let events = check_events((!events.is_empty()).then_some(events.as_slice()))
                .map_err(|p| CliError::from(format!("--event: {}", p.detail)))?;
            let description = check_description(description)
                .map_err(|p| CliError::from(format!("--description: {}", p.detail)))?;
            let guard = BuildContext::from_settings(settings).outbound;
            let url = crate::api::webhooks::check_url(&guard, url)
                .await
                .map_err(|p| CliError::from(format!("--url: {}", p.detail)))?;
            let key = sealing_key(settings)?;
            let secret = new_signing_secret();
            let endpoint = store
                .create_webhook_endpoint(org, &url, &description, &events, &key, &secret)
                .await?;
            tracing::info!(
                org_id = %org,
                webhook_endpoint_id = %endpoint.id,
                actor = actor(),
                "webhook endpoint created"
            );
            let shown = view(&endpoint, now);
            if *json {
                let mut value = serde_json::to_value(&shown)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("secret".into(), secret.into());
                }
                print_json(&value)?;
            } else {
                println!("{}", shown.id);
                println!("url: {}", shown.url);
                println!("events: {}", shown.events.join(", "));
                println!("secret: {secret}");
                println!(
                    "The secret is shown only this once: store it where the receiver verifies signatures."
                );
            }
            Ok(0)
        }
        WebhookCommand::List { json } => {
            let mut all = Vec::new();
            let mut after = WebhookEndpointId(0);
            loop {
                let page = store.webhook_endpoints_page(org, after, 500).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                let full = page.len() == 500;
                all.extend(page.iter().map(|e| view(e, now)));
                if !full {
                    break;
                }
            }
            if *json {
                print_json(&all)?;
            } else if all.is_empty() {
                println!("no webhook endpoints: `herald webhook create --url URL` adds one");
            } else {
                for w in &all {
                    let status = match &w.disabled_reason {
                        Some(why) => format!("disabled ({why})"),
                        None if w.disabled_at.is_some() => "disabled".to_string(),
                        None => "enabled".to_string(),
                    };
                    println!(
                        "{}\t{}\t{}\t{} event type(s)\t{}",
                        w.id,
                        w.url,
                        status,
                        w.events.len(),
                        w.description
                    );
                }
            }
            Ok(0)
        }
        WebhookCommand::Delete { id } => {
            let gone = store.delete_webhook_endpoint(org, *id).await?;
            tracing::info!(
                org_id = %org,
                webhook_endpoint_id = %id,
                actor = actor(),
                pending_deliveries_dropped = gone.pending_deliveries,
                "webhook endpoint deleted"
            );
            println!(
                "deleted {id} with its {} deliveries ({} pending, never to be sent)",
                gone.deliveries, gone.pending_deliveries
            );
            Ok(0)
        }
        WebhookCommand::RotateSecret { id, json } => {
            let key = sealing_key(settings)?;
            let secret = new_signing_secret();
            let endpoint = store
                .rotate_webhook_secret(org, *id, &key, &secret, now)
                .await?;
            tracing::info!(
                org_id = %org,
                webhook_endpoint_id = %id,
                actor = actor(),
                "webhook signing secret rotated"
            );
            let until = crate::clock::rfc3339(endpoint.previous_until.unwrap_or(now));
            if *json {
                print_json(&serde_json::json!({
                    "id": id.to_string(),
                    "secret": secret,
                    "previous_secret_until": until,
                }))?;
            } else {
                println!("secret: {secret}");
                println!(
                    "The previous secret also signs until {until}; the new one is shown only this once."
                );
            }
            Ok(0)
        }
        WebhookCommand::Deliveries {
            id,
            status,
            limit,
            json,
        } => {
            if !(1..=crate::api::webhooks::MAX_DELIVERY_PAGE).contains(limit) {
                return Err(CliError::from(format!(
                    "--limit must be between 1 and {}, not {limit}",
                    crate::api::webhooks::MAX_DELIVERY_PAGE
                )));
            }
            if let Some(s) = status
                && !DELIVERY_STATUSES.contains(&s.as_str())
            {
                return Err(CliError::from(format!(
                    "--status `{s}` is not a delivery status: use one of {}",
                    DELIVERY_STATUSES.join(", ")
                )));
            }
            let rows = store
                .webhook_deliveries_page(org, *id, status.as_deref(), None, *limit)
                .await?;
            let items: Vec<_> = rows.into_iter().map(delivery_view).collect();
            if *json {
                print_json(&items)?;
            } else if items.is_empty() {
                println!("no deliveries for {id} yet: `herald webhook test {id}` sends one");
            } else {
                for d in &items {
                    println!(
                        "{}\t{}\tseq {}\t{}\t{} attempt(s)",
                        d.event_id,
                        d.event_type,
                        d.seq,
                        serde_json::to_value(d.status)?.as_str().unwrap_or(""),
                        d.attempts
                    );
                    for a in &d.attempt_log {
                        let outcome = match (a.status_code, &a.error) {
                            (Some(code), _) => format!("HTTP {code}"),
                            (None, Some(e)) => e.clone(),
                            (None, None) => "no answer".to_string(),
                        };
                        let excerpt = a.response_excerpt.as_deref().unwrap_or("");
                        println!(
                            "    {}\t{}\t{} ms\t{}",
                            a.at,
                            outcome,
                            a.latency_ms,
                            excerpt.chars().take(120).collect::<String>()
                        );
                    }
                }
            }
            Ok(0)
        }
        WebhookCommand::Replay {
            id,
            event,
            failed_since,
            json,
        } => {
            let outcome = match (event, failed_since) {
                (Some(event), None) => store.replay_webhook_event(org, *id, *event, now).await?,
                (None, Some(since)) => {
                    let since = check_since("--failed-since", since)
                        .map_err(|p| CliError::from(format!("--failed-since: {}", p.detail)))?;
                    store
                        .replay_failed_webhook_deliveries(org, *id, since, now)
                        .await?
                }
                _ => {
                    return Err(CliError::from(
                        "give exactly one of --event ntf_N and --failed-since TIME",
                    ));
                }
            };
            tracing::info!(
                org_id = %org,
                webhook_endpoint_id = %id,
                actor = actor(),
                replayed = outcome.replayed,
                "webhook deliveries replayed"
            );
            if *json {
                print_json(&serde_json::json!({
                    "replayed": outcome.replayed,
                    "already_pending": outcome.already_pending,
                    "more": outcome.more,
                }))?;
            } else {
                println!(
                    "{} deliver{} set back to pending, due now{}{}",
                    outcome.replayed,
                    if outcome.replayed == 1 { "y" } else { "ies" },
                    if outcome.already_pending > 0 {
                        "; it was pending already"
                    } else {
                        ""
                    },
                    if outcome.more {
                        "; more are left: run it again"
                    } else {
                        ""
                    }
                );
            }
            Ok(0)
        }
        WebhookCommand::Test { id, json } => {
            let sent = store
                .send_webhook_test_event(org, *id, &actor(), now)
                .await?;
            let event = sent.event_id;
            tracing::info!(
                org_id = %org,
                webhook_endpoint_id = %id,
                notification_id = %event,
                actor = actor(),
                "webhook test event written"
            );
            if *json {
                print_json(&serde_json::json!({"event_id": event.to_string(), "seq": sent.seq}))?;
            } else {
                println!(
                    "{event}: a webhook.test event for {id} (seq {}); `herald webhook deliveries {id}` shows how it went",
                    sent.seq
                );
            }
            Ok(0)
        }
    }
}
