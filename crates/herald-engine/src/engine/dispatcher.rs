//! The dispatcher: claims due messages in batches, sends them with bounded concurrency, and
//! group-commits their outcomes. Claims are committed before any send starts and outcomes
//! after it ends: no transaction is ever held open across a provider call.

use super::EngineContext;
use super::retry::RetryPolicy;
use crate::address::Address;
use crate::channels::{Channel, SendRequest, SendResult};
use crate::email_content::{EmailTemplates, RenderedEmail};
use crate::ids::{CampaignId, ChannelId, MessageId, OrgId};
use crate::store::{ClaimedMessage, Outcome, OutcomeKind, SendableCampaign};
use crate::template::{ContactFields, MessageTemplate};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

/// An outcome travelling to the committer, with the claim permit it holds: a claim permit
/// is returned only once the outcome is durable, so the instance never has more than
/// [`claim_bound`] messages claimed and unrecorded, which bounds what a crash can leave in
/// doubt. The send permit (`concurrency`) was returned at the provider's answer.
type Pending = (Outcome, OwnedSemaphorePermit, Label);

/// How many messages one instance may hold claimed and not yet durably recorded: its
/// `concurrency` sends, plus `claim_ahead` times as many claimed ahead, waiting for a send
/// slot, so a slot freed at the provider's answer starts its next send at once instead of
/// waiting for the next claim and for the group commit (BENCHMARKS.md, "Latency-bound
/// sending"). A crash can leave this many in doubt; the claimed-ahead ones were never
/// sent, which the provider's lookup shows (docs/DESIGN.md, invariant 6).
pub fn claim_bound(concurrency: usize, claim_ahead: usize) -> usize {
    concurrency.max(1) * (1 + claim_ahead)
}

/// How this instance's send slots are used: the time they spent in provider calls and how
/// many calls there were, since the engine started. Divided by `concurrency` and a stretch
/// of wall time it is the share of the slots busy at the provider, the rest being slots
/// that waited for a claimed message (`herald bench` reports it as `send_slots_busy`).
/// Also exported, sampled, as the gauge `herald_send_slots_busy` beside `herald_send_slots`.
#[derive(Debug, Default)]
pub struct SlotUse {
    provider_call_us: AtomicU64,
    provider_calls: AtomicU64,
}

impl SlotUse {
    /// The total time in provider calls, and the number of calls, so far.
    pub fn snapshot(&self) -> (Duration, u64) {
        (
            Duration::from_micros(self.provider_call_us.load(Ordering::Relaxed)),
            self.provider_calls.load(Ordering::Relaxed),
        )
    }

    fn record(&self, call: Duration) {
        let us = u64::try_from(call.as_micros()).unwrap_or(u64::MAX);
        self.provider_call_us.fetch_add(us, Ordering::Relaxed);
        self.provider_calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Metric labels of one outcome. The channel is labelled by id (`chn_5`), never by its
/// name: names are tenant text, and /metrics is one page for every organisation.
struct Label {
    outcome: &'static str,
    channel_id: ChannelId,
    /// The rate-limited channel's in-flight slot, returned with the outcome.
    _slot: Option<OwnedSemaphorePermit>,
}

pub async fn run(
    ctx: Arc<EngineContext>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let settings = &ctx.settings;
    let concurrency = settings.concurrency.max(1);
    metrics::gauge!("herald_send_slots").set(concurrency as f64);
    // Sends at the provider: taken by a claimed message when it starts its send, returned
    // at the answer.
    let send_permits = Arc::new(Semaphore::new(concurrency));
    // Claimed and not yet recorded: taken at the claim, returned once durable.
    let bound = claim_bound(concurrency, settings.claim_ahead);
    let permits = Arc::new(Semaphore::new(bound));
    let (out_tx, out_rx) = mpsc::channel::<Pending>(bound);
    let committer = tokio::spawn(commit_loop(ctx.clone(), out_rx));
    let batch = settings.batch_size.max(1);
    // Claim only when a useful batch fits: tiny claims cost a transaction each.
    let min_claim = (batch.min(bound) / 4).max(1);
    let idle = Duration::from_millis(settings.idle_poll_ms.max(1));
    let mut templates: HashMap<CampaignId, Result<Arc<CampaignTemplates>, String>> = HashMap::new();
    // In-flight slots per rate-limited channel (about two seconds of its rate), shared by
    // all its campaigns: a slow or rate-limited channel cannot take every send permit.
    let mut channel_slots: HashMap<ChannelId, Arc<Semaphore>> = HashMap::new();
    let mut round = 0usize;
    let owner = ctx.instance.id.clone();
    let mut reusable: Option<CampaignList> = None;

    loop {
        if *shutdown.borrow() {
            break;
        }
        // Wait until at least a minimal batch of permits is free.
        tokio::select! {
            p = permits.clone().acquire_many_owned(min_claim as u32) => { drop(p); }
            _ = shutdown.changed() => continue,
        }
        let now = crate::clock::now_ms();
        let (campaigns, listed) = match reusable.take().filter(|l| l.still_current(&ctx)) {
            Some(list) => (list.campaigns, list.listed),
            None => {
                let listed = Listed::now(&ctx);
                let campaigns = match ctx.store.sendable_campaigns(now).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list sendable campaigns; retrying");
                        sleep_or_shutdown(idle, &mut shutdown).await;
                        continue;
                    }
                };
                // Forget templates of campaigns that stopped sending, so a long-running instance
                // does not accumulate them.
                templates.retain(|id, _| campaigns.iter().any(|c| c.id == *id));
                if campaigns.is_empty() {
                    wait_for_work(&ctx, idle, &[], &mut shutdown).await;
                    continue;
                }
                // A campaign whose channel is unavailable (marked by any instance) claims nothing:
                // the engine pauses it with the channel's reason, and the probe resumes it.
                let campaigns = match ctx.store.channel_outages().await {
                    Ok(outages) if !outages.is_empty() => {
                        let mut sendable = Vec::with_capacity(campaigns.len());
                        for c in campaigns {
                            match outages.iter().find(|o| o.channel_id == c.channel_id) {
                                Some(outage) => {
                                    ctx.channels.forget(c.channel_id);
                                    super::outage::pause_campaigns(&ctx, outage, Some(c.id)).await;
                                }
                                None => sendable.push(c),
                            }
                        }
                        sendable
                    }
                    Ok(_) => campaigns,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read channel outages; retrying");
                        sleep_or_shutdown(idle, &mut shutdown).await;
                        continue;
                    }
                };
                if campaigns.is_empty() {
                    sleep_or_shutdown(idle, &mut shutdown).await;
                    continue;
                }
                (campaigns, listed)
            }
        };
        let n = campaigns.len();
        let mut claimed_any = false;
        // Every campaign tried got all it asked for: each has more work due, so the next
        // round may claim from the same list without listing again.
        let mut every_claim_full = true;
        // Rate-limited channels whose in-flight slots were all taken this round: when nothing
        // was claimed, the dispatcher waits for one of their slots to free, not for the poll.
        let mut full_channels: Vec<Arc<Semaphore>> = Vec::new();
        // Round-robin over campaigns, each taking a fair share of the free permits, so one
        // large campaign cannot starve the others.
        for k in 0..n {
            let campaign = &campaigns[(round + k) % n];
            let available = permits.available_permits();
            if available == 0 {
                break;
            }
            // A channel that cannot be built claims nothing: a transient database error
            // waits for the next turn; a configuration error (no secret key on this
            // instance, unknown kind) pauses the campaign with the reason instead of
            // failing its messages one by one.
            let channel = match ctx.channels.get_with_rate(campaign.channel_id).await {
                Ok(c) => Ok(c),
                Err(e) if e.is_transient() => {
                    tracing::warn!(campaign_id = %campaign.id, error = %e, "channel not available; will retry");
                    every_claim_full = false;
                    continue;
                }
                Err(e) => {
                    let reason = format!("paused: its channel cannot send from this instance: {e}");
                    tracing::error!(campaign_id = %campaign.id, %reason);
                    let actor = format!("instance {}", ctx.instance.id);
                    if let Err(pause_error) = ctx
                        .store
                        .transition(
                            campaign.id,
                            crate::domain::CampaignAction::Pause,
                            crate::clock::now_ms(),
                            &actor,
                            Some(&reason),
                        )
                        .await
                    {
                        tracing::warn!(campaign_id = %campaign.id, error = %pause_error, "could not pause the campaign");
                    }
                    every_claim_full = false;
                    continue;
                }
            };
            let mut share = (available / n).max(min_claim).min(available).min(batch);
            let slots = match &channel {
                Ok((_, Some(rate))) => {
                    let slots = channel_slots
                        .entry(campaign.channel_id)
                        .or_insert_with(|| Arc::new(Semaphore::new(((rate * 2.0) as usize).max(1))))
                        .clone();
                    share = share.min(slots.available_permits());
                    if share == 0 {
                        full_channels.push(slots);
                        every_claim_full = false;
                        continue;
                    }
                    Some(slots)
                }
                _ => None,
            };
            let started = Instant::now();
            let lease_until = now + settings.instance_stale_after_ms as i64;
            let claimed = match ctx
                .store
                .claim(
                    campaign.id,
                    &owner,
                    crate::clock::now_ms(),
                    lease_until,
                    share as i64,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(campaign_id = %campaign.id, error = %e, "claim failed; will retry");
                    every_claim_full = false;
                    continue;
                }
            };
            metrics::histogram!("herald_claim_seconds").record(started.elapsed().as_secs_f64());
            if claimed.len() < share {
                every_claim_full = false;
            }
            if claimed.is_empty() {
                continue;
            }
            claimed_any = true;
            tracing::debug!(campaign_id = %campaign.id, count = claimed.len(), "claimed");
            // The claim found it sending, under its row's lock.
            if let Ok(mut stopped) = ctx.not_sending.lock() {
                stopped.remove(&campaign.id);
            }
            if let Ok(mut known) = ctx.in_flight.lock() {
                known.extend(claimed.iter().map(|m| m.id));
            }
            // Recipients outside the campaign's send window go back, held, with no attempt
            // spent; the others are sent now.
            let claimed = hold_outside_window(&ctx, &owner, campaign, claimed).await;
            if claimed.is_empty() {
                continue;
            }
            let template = templates
                .entry(campaign.id)
                .or_insert_with(|| CampaignTemplates::compile(campaign).map(Arc::new))
                .clone();
            let signer = crate::tracked_links::LinkSigner::new(
                ctx.settings.public_url.as_deref(),
                ctx.settings.secret_key.as_deref(),
            );
            let bodies = render_claimed(
                template,
                signer,
                campaign.whatsapp_template.clone(),
                &claimed,
            )
            .await;
            for (message, body) in claimed.into_iter().zip(bodies) {
                // Never waits: no more messages were claimed than there were free permits
                // (and channel slots).
                let permit = permits.clone().acquire_owned().await?;
                let slot = match &slots {
                    Some(slots) => Some(slots.clone().acquire_owned().await?),
                    None => None,
                };
                spawn_send(
                    &ctx,
                    campaign,
                    message,
                    body,
                    channel.clone(),
                    (send_permits.clone(), permit, slot),
                    out_tx.clone(),
                    shutdown.clone(),
                );
            }
        }
        round = round.wrapping_add(1);
        if claimed_any && every_claim_full {
            reusable = Some(CampaignList { campaigns, listed });
        }
        if !claimed_any {
            wait_for_work(&ctx, idle, &full_channels, &mut shutdown).await;
        }
    }

    // Graceful stop: no more claims; wait for in-flight sends to finish and be recorded
    // (the claimed-ahead ones are handed back unsent).
    let deadline = Duration::from_millis(settings.shutdown_deadline_ms);
    let drained = tokio::time::timeout(deadline, permits.acquire_many(bound as u32)).await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = bound - permits.available_permits(),
            "shutdown deadline passed with sends still in flight; they will be found in doubt"
        );
    }
    drop(out_tx);
    let _ = tokio::time::timeout(deadline, committer).await;
    Ok(())
}

/// How long a list of sendable campaigns is claimed from without listing them again, while
/// every claim from it gets all it asked for. Listing (with its outage check) is two
/// queries per round, which at full speed cost as much as a tenth of the claim itself;
/// a campaign that starts or resumes meanwhile signals the store and is listed at once.
const LIST_REUSE: Duration = Duration::from_millis(50);

/// When a list of sendable campaigns was read: the time, and the store's wake-up count.
#[derive(Clone, Copy)]
struct Listed {
    at: Instant,
    signals: u64,
}

impl Listed {
    fn now(ctx: &EngineContext) -> Self {
        Self {
            at: Instant::now(),
            signals: ctx.store.work_signals(),
        }
    }
}

/// The sendable campaigns of the last round, kept for the next one.
struct CampaignList {
    campaigns: Vec<SendableCampaign>,
    listed: Listed,
}

impl CampaignList {
    /// Young enough, and no campaign has started or resumed since it was read.
    fn still_current(&self, ctx: &EngineContext) -> bool {
        self.listed.at.elapsed() < LIST_REUSE && ctx.store.work_signals() == self.listed.signals
    }
}

/// Splits a claim by the campaign's send window (docs/CAMPAIGNS.md, "Send windows"): the
/// messages whose recipient's local time is outside it are recorded held (back to
/// `queued`, the claim's attempt refunded, due again when the window opens or at the next
/// re-check, whichever is first); the rest are returned to be sent. A window that no
/// longer parses holds nothing: the API and the CLI refuse one at every write.
async fn hold_outside_window(
    ctx: &EngineContext,
    owner: &str,
    campaign: &SendableCampaign,
    claimed: Vec<ClaimedMessage>,
) -> Vec<ClaimedMessage> {
    let Some(text) = campaign.send_window.as_deref() else {
        return claimed;
    };
    let window = match crate::send_window::SendWindow::parse(text) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(campaign_id = %campaign.id, error = %e, "send window does not parse; sending");
            return claimed;
        }
    };
    let window_now = ctx.window_clock.now_ms();
    let real_now = crate::clock::now_ms();
    let recheck = ctx.settings.send_window_recheck_ms.max(1) as i64;
    let mut send = Vec::with_capacity(claimed.len());
    let mut held = Vec::new();
    for m in claimed {
        let zones = crate::send_window::recipient_zones(m.address.as_str(), &m.attributes);
        match window.next_open(&zones.zones, window_now) {
            None => send.push(m),
            Some(opens) => {
                // The hold is counted on the window's clock; the claim runs on the
                // database's (the same, but in tests).
                let wait = opens - window_now;
                tracing::debug!(
                    campaign_id = %campaign.id,
                    message_id = %m.id,
                    opens = %crate::clock::rfc3339(real_now + wait),
                    basis = ?zones.basis,
                    "held by the send window"
                );
                held.push(Outcome {
                    message_id: m.id,
                    campaign_id: campaign.id,
                    attempt: Some(m.attempts),
                    kind: OutcomeKind::Held {
                        until: real_now + wait,
                        next_look: real_now + wait.min(recheck),
                    },
                });
            }
        }
    }
    if !held.is_empty() {
        let count = held.len();
        record_durably(ctx, owner, held.clone()).await;
        if let Ok(mut known) = ctx.in_flight.lock() {
            for o in &held {
                known.remove(&o.message_id);
            }
        }
        metrics::counter!("herald_messages_held_total").increment(count as u64);
        tracing::debug!(campaign_id = %campaign.id, held = count, "send window holds messages");
    }
    send
}

/// Waits, with nothing to claim, until whichever comes first: a campaign starts or resumes
/// (the store's work signal, from this process or, on PostgreSQL, any instance), a slot of
/// one of `full_channels` frees (a send on a rate-limited channel ended, so its campaigns
/// can claim again), the next retry or deferred message falls due, `idle` passes (the poll
/// that catches anything else), or shutdown.
async fn wait_for_work(
    ctx: &EngineContext,
    idle: Duration,
    full_channels: &[Arc<Semaphore>],
    shutdown: &mut watch::Receiver<bool>,
) {
    let now = crate::clock::now_ms();
    let wait = match ctx.store.next_due_at(now).await {
        Ok(Some(due)) if due > now => idle.min(Duration::from_millis((due - now) as u64)),
        // Due already, yet its claim found nothing this round (its channel's slots are
        // full: a freed slot wakes the wait below): the poll's pace, not a spin.
        Ok(_) => idle,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the next due time; polling");
            idle
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = ctx.store.work_appeared() => {}
        _ = any_slot_frees(full_channels) => {}
        _ = shutdown.changed() => {}
    }
}

/// Returns once one of `channels` has a free slot (never, for none). The slot is not kept:
/// the next round claims against it.
async fn any_slot_frees(channels: &[Arc<Semaphore>]) {
    if channels.is_empty() {
        return std::future::pending().await;
    }
    let mut waiting = tokio::task::JoinSet::new();
    for slots in channels {
        let slots = slots.clone();
        waiting.spawn(async move {
            drop(slots.acquire_owned().await);
        });
    }
    // Dropping the set aborts the other waits; none of them holds a slot.
    let _ = waiting.join_next().await;
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

/// A claimed message's body: rendered, refused by the template (the message fails with
/// the reason), or not rendered because the render pool missed its deadline (the
/// message is handed back unsent, for a later claim).
enum Body {
    Rendered(Rendered),
    Refused(String),
    NotRendered,
}

/// One recipient's message.
struct Rendered {
    /// The body (for an email with an HTML part and no body: the text derived from it).
    body: String,
    /// The campaign's WhatsApp template with this recipient's parameters.
    template: Option<crate::channels::TemplateSend>,
    /// The campaign's email parts, rendered for this recipient.
    email: Option<RenderedEmail>,
}

/// A sending campaign's compiled templates, kept while it sends.
pub struct CampaignTemplates {
    body: MessageTemplate,
    email: Option<EmailTemplates>,
    /// Whether the plain text is derived from the HTML part (the body is empty).
    derive_text: bool,
    /// Its tracked links' targets, in position order (body first, then the HTML part's).
    links: Vec<String>,
}

impl CampaignTemplates {
    fn compile(campaign: &SendableCampaign) -> Result<CampaignTemplates, String> {
        let body = MessageTemplate::compile(&campaign.body).map_err(|e| e.to_string())?;
        let email = campaign
            .email
            .as_ref()
            .map(|e| e.compile().map_err(|e| e.to_string()))
            .transpose()?;
        let links = crate::email_content::link_targets(
            body.links(),
            email.as_ref().map_or(&[], |e| e.html_links()),
        );
        Ok(CampaignTemplates {
            derive_text: campaign
                .email
                .as_ref()
                .is_some_and(|e| e.derives_text(&campaign.body)),
            body,
            email,
            links,
        })
    }
}

/// Render every claimed message of one campaign in one task on the render pool: the
/// sender's async threads never render, and a claim pays one hand-off, not one per
/// message.
async fn render_claimed(
    template: Result<Arc<CampaignTemplates>, String>,
    signer: Option<crate::tracked_links::LinkSigner>,
    whatsapp: Option<crate::whatsapp_template::WhatsAppTemplate>,
    claimed: &[ClaimedMessage],
) -> Vec<Body> {
    let template = match template {
        Ok(t) => t,
        Err(e) => return claimed.iter().map(|_| Body::Refused(e.clone())).collect(),
    };
    let contacts: Vec<(MessageId, Address, Option<String>, String)> = claimed
        .iter()
        .map(|m| {
            (
                m.id,
                m.address.clone(),
                m.name.clone(),
                m.attributes.clone(),
            )
        })
        .collect();
    let count = contacts.len();
    let rendered = crate::template::render_off_thread(move || {
        let renderer = match template.body.renderer() {
            Ok(r) => r,
            Err(e) => return contacts.iter().map(|_| Err(e.to_string())).collect(),
        };
        let email_renderer = match template.email.as_ref().map(|e| e.renderers()).transpose() {
            Ok(r) => r,
            Err(e) => return contacts.iter().map(|_| Err(e.to_string())).collect(),
        };
        contacts
            .iter()
            .map(|(id, address, name, attributes)| {
                let attributes: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(attributes).unwrap_or_default();
                let links = crate::tracked_links::links_for(signer.as_ref(), *id, &template.links);
                let fields = ContactFields {
                    address: address.as_str(),
                    name: name.as_deref(),
                    attributes: &attributes,
                };
                let mut body = renderer
                    .render_linked(&fields, links.as_ref())
                    .map_err(|e| e.to_string())?;
                let email = email_renderer
                    .as_ref()
                    .map(|r| r.render(&fields, links.as_ref()))
                    .transpose()?;
                if template.derive_text
                    && let Some(html) = email.as_ref().and_then(|e| e.html.as_deref())
                {
                    body = crate::email_content::text_from_html(html)?;
                }
                // The campaign's WhatsApp template: its parameters from this contact's
                // fields; a contact without one fails with the field named.
                let send = match &whatsapp {
                    Some(t) => Some(crate::channels::TemplateSend {
                        name: t.name.clone(),
                        language: t.language.clone(),
                        parameters: t.values_for(&fields)?,
                    }),
                    None => None,
                };
                Ok(Rendered {
                    body,
                    template: send,
                    email,
                })
            })
            .collect::<Vec<Result<Rendered, String>>>()
    })
    .await;
    match rendered {
        Ok(bodies) => bodies
            .into_iter()
            .map(|b| match b {
                Ok(rendered) => Body::Rendered(rendered),
                Err(e) => Body::Refused(e),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, count, "render pool missed its deadline; handing the claim back");
            (0..count).map(|_| Body::NotRendered).collect()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_send(
    ctx: &Arc<EngineContext>,
    campaign: &SendableCampaign,
    message: ClaimedMessage,
    body: Body,
    channel: Result<(Arc<dyn Channel>, Option<f64>), String>,
    (send_permits, permit, slot): (
        Arc<Semaphore>,
        OwnedSemaphorePermit,
        Option<OwnedSemaphorePermit>,
    ),
    out: mpsc::Sender<Pending>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = ctx.clone();
    let campaign_id = campaign.id;
    let org_id = campaign.org_id;
    let channel_id = campaign.channel_id;
    tokio::spawn(async move {
        // A claimed-ahead message waits for a send slot (first claimed, first served); a
        // stop while it waits hands it back unsent.
        let sending = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => None,
            slot = send_permits.acquire_owned() => slot.ok(),
        };
        let stopped = campaign_stopped(&ctx, campaign_id);
        let (kind, outcome) = match sending {
            // Paused or cancelled while it waited: back unsent, its attempt refunded.
            Some(_) if stopped => (OutcomeKind::Released, "released"),
            Some(_sending) => {
                send_one(&ctx, org_id, channel_id, &message, body, channel, &shutdown).await
            }
            None => (OutcomeKind::Released, "released"),
        };
        let label = Label {
            outcome,
            channel_id,
            _slot: slot,
        };
        let outcome = Outcome {
            message_id: message.id,
            campaign_id,
            attempt: Some(message.attempts),
            kind,
        };
        // The committer outlives every sender; if it is gone the process is ending and the
        // message stays in flight, to be found in doubt.
        let _ = out.send((outcome, permit, label)).await;
    });
}

/// Whether this instance's last group commits found the campaign paused, cancelled or
/// completed since it was last claimed: its messages not yet at the provider go back.
fn campaign_stopped(ctx: &EngineContext, campaign_id: CampaignId) -> bool {
    ctx.not_sending
        .lock()
        .is_ok_and(|stopped| stopped.contains(&campaign_id))
}

/// Sends one message and classifies the result into the outcome to record.
#[allow(clippy::too_many_arguments)]
async fn send_one(
    ctx: &EngineContext,
    org_id: OrgId,
    channel_id: ChannelId,
    m: &ClaimedMessage,
    body: Body,
    channel: Result<(Arc<dyn Channel>, Option<f64>), String>,
    shutdown: &watch::Receiver<bool>,
) -> (OutcomeKind, &'static str) {
    if *shutdown.borrow() {
        return (OutcomeKind::Released, "released");
    }
    if let Some(reason) = &m.suppressed {
        return (
            OutcomeKind::Skipped {
                reason: format!("suppressed before sending: {reason}"),
            },
            "skipped",
        );
    }
    let Rendered {
        body,
        template,
        email,
    } = match body {
        Body::Rendered(rendered) => rendered,
        Body::Refused(e) => {
            return (
                OutcomeKind::Failed {
                    error: format!("template: {e}"),
                },
                "failed",
            );
        }
        Body::NotRendered => return (OutcomeKind::Released, "released"),
    };
    let (channel, rate) = match channel {
        Ok(c) => c,
        Err(e) => {
            return (
                OutcomeKind::Failed {
                    error: format!("channel: {e}"),
                },
                "failed",
            );
        }
    };
    // The channel's rate, shared with every other instance; a stop, or a pause or cancel
    // of the campaign, while waiting hands the message back unsent.
    if ctx
        .throttle
        .acquire(channel_id, rate, channel.cost(&body), shutdown, || {
            !campaign_stopped(ctx, m.campaign_id)
        })
        .await
        .is_err()
    {
        return (OutcomeKind::Released, "released");
    }
    let request = SendRequest {
        message_id: m.id,
        campaign_id: m.campaign_id,
        address: m.address.clone(),
        body,
        attempt: m.attempts,
        unsubscribe_url: crate::unsubscribe_link::url(
            ctx.settings.public_url.as_deref(),
            ctx.settings.secret_key.as_deref(),
            m.id,
        ),
        template,
        email,
    };
    let timeout = Duration::from_millis(ctx.settings.send_timeout_ms);
    let call_started = Instant::now();
    metrics::gauge!("herald_send_slots_busy").increment(1.0);
    let answer = tokio::time::timeout(timeout, channel.send(request)).await;
    metrics::gauge!("herald_send_slots_busy").decrement(1.0);
    ctx.slot_use.record(call_started.elapsed());
    let result = match answer {
        Ok(r) => r,
        Err(_) => {
            return (
                OutcomeKind::Unknown {
                    error: format!(
                        "no answer from the provider within {} ms; it may have the message",
                        ctx.settings.send_timeout_ms
                    ),
                },
                "in_doubt",
            );
        }
    };
    let policy = RetryPolicy {
        max_attempts: ctx.settings.retry_max_attempts,
        base: Duration::from_millis(ctx.settings.retry_base_ms),
        max: Duration::from_millis(ctx.settings.retry_max_ms),
    };
    // Failures that say nothing about the recipient count towards the channel's outage;
    // any answer from the provider ends the streak.
    match &result {
        SendResult::Unreachable { error } | SendResult::Unknown { error } => {
            super::outage::provider_failed(ctx, channel_id, m.campaign_id, error).await;
        }
        _ => ctx.outages.answered(channel_id),
    }
    match result {
        SendResult::Accepted { provider_id } => (OutcomeKind::Sent { provider_id }, "sent"),
        SendResult::Permanent { error } => (OutcomeKind::Failed { error }, "failed"),
        SendResult::Unknown { error } => (OutcomeKind::Unknown { error }, "in_doubt"),
        // Nothing reached the provider, and it is not the recipient's doing: back to the
        // queue with the attempt refunded (a campaign paused for the outage keeps it
        // queued until the probe resumes it).
        SendResult::Unreachable { error } => {
            tracing::debug!(message_id = %m.id, campaign_id = %m.campaign_id, error = %error, "provider unreachable; message handed back");
            (OutcomeKind::Released, "unreachable")
        }
        SendResult::OptOut { error } => {
            let reason = format!("opted out at the provider: {error}");
            let via = crate::store::OptSource::new(
                "provider_code",
                Some(channel_id),
                provider_code(&error),
            );
            if let Err(e) = ctx
                .store
                .suppress(org_id, m.address.as_str(), &reason, &via)
                .await
            {
                tracing::warn!(message_id = %m.id, error = %e, "could not record an opt-out; the next send will report it again");
            }
            (OutcomeKind::Failed { error: reason }, "failed")
        }
        // The account is refused: the channel is unavailable at once (one refusal is
        // enough), its campaigns pause for the outage and the probe resumes them.
        SendResult::CredentialsRefused { reason, error } => {
            super::outage::credentials_refused(ctx, channel_id, m.campaign_id, &reason, &error)
                .await;
            tracing::debug!(message_id = %m.id, campaign_id = %m.campaign_id, error = %error, "credentials refused; message handed back");
            (OutcomeKind::Released, "released")
        }
        SendResult::StopCampaign { error } => {
            let actor = format!("instance {}", ctx.instance.id);
            let reason = format!("paused: the channel cannot send: {error}");
            match ctx
                .store
                .transition(
                    m.campaign_id,
                    crate::domain::CampaignAction::Pause,
                    crate::clock::now_ms(),
                    &actor,
                    Some(&reason),
                )
                .await
            {
                Ok(_) | Err(crate::store::StoreError::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(campaign_id = %m.campaign_id, error = %e, "could not pause the campaign")
                }
            }
            // Not the message's fault: it goes back to the queue with its attempt refunded
            // and waits for the resume.
            tracing::debug!(message_id = %m.id, campaign_id = %m.campaign_id, error = %error, "channel cannot send; message handed back");
            (OutcomeKind::Released, "released")
        }
        SendResult::Transient { error, retry_after } => {
            if let Some(wait) = retry_after.filter(|_| rate.is_some()) {
                ctx.throttle.penalize(channel_id, wait).await;
            }
            if policy.may_retry(m.attempts) {
                let jitter: f64 = rand::rng().random();
                let wait = policy
                    .backoff(m.attempts, jitter)
                    .max(retry_after.unwrap_or_default());
                (
                    OutcomeKind::Retry {
                        error,
                        next_attempt_at: crate::clock::now_ms() + wait.as_millis() as i64,
                    },
                    "retry",
                )
            } else {
                (
                    OutcomeKind::Failed {
                        error: format!("gave up after {} attempts: {error}", m.attempts),
                    },
                    "failed",
                )
            }
        }
    }
}

/// Group commit: many outcomes, their counter deltas and any completion in one transaction.
async fn commit_loop(ctx: Arc<EngineContext>, mut rx: mpsc::Receiver<Pending>) {
    let max = ctx.settings.commit_max_batch.max(1);
    let wait = Duration::from_millis(ctx.settings.commit_interval_ms);
    let owner = ctx.instance.id.clone();
    let mut batch: Vec<Pending> = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // A small batch waits briefly for company; a big one goes now.
                    if batch.len() >= 64 {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(p)) => batch.push(p),
                        _ => break,
                    }
                }
            }
        }
        let outcomes: Vec<Outcome> = batch.iter().map(|p| p.0.clone()).collect();
        let started = Instant::now();
        record_durably(&ctx, &owner, outcomes.clone()).await;
        if let Ok(mut known) = ctx.in_flight.lock() {
            for o in &outcomes {
                known.remove(&o.message_id);
            }
        }
        metrics::histogram!("herald_commit_seconds").record(started.elapsed().as_secs_f64());
        for (_, _, label) in &batch {
            metrics::counter!(
                "herald_messages_total",
                "outcome" => label.outcome,
                "channel" => label.channel_id.to_string()
            )
            .increment(1);
        }
        batch.clear();
    }
}

/// Records outcomes, never giving up on them while this process lives: transient errors
/// (database restarting) are retried with backoff; a batch that keeps failing otherwise is
/// split so one bad outcome cannot hold back the others; an outcome that still cannot be
/// written is recorded as in doubt instead (the provider may have the message), so the
/// in-doubt policy and the provider check decide rather than a stuck row.
async fn record_durably(ctx: &EngineContext, owner: &str, outcomes: Vec<Outcome>) {
    let mut delay = Duration::from_millis(20);
    let mut failures = 0u32;
    let mut outcomes = outcomes;
    loop {
        match ctx
            .store
            .record_outcomes(owner, crate::clock::now_ms(), &outcomes)
            .await
        {
            Ok(report) => {
                if !report.not_sending.is_empty()
                    && let Ok(mut stopped) = ctx.not_sending.lock()
                {
                    stopped.extend(report.not_sending.iter().copied());
                }
                for paused in &report.auto_paused {
                    metrics::counter!("herald_campaigns_auto_paused_total").increment(1);
                    tracing::warn!(
                        campaign_id = %paused.campaign_id,
                        reason = %paused.reason,
                        "campaign auto-paused: its permanent failure rate crossed its threshold"
                    );
                }
                if report.stale > 0 {
                    tracing::warn!(
                        stale = report.stale,
                        "outcomes arrived for messages already taken back as in doubt; they were not applied"
                    );
                }
                return;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, count = outcomes.len(), "database unavailable; retrying the outcomes in hand");
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, count = outcomes.len(), failures, "recording outcomes failed");
                if failures >= 3 && outcomes.len() > 1 {
                    for one in outcomes {
                        Box::pin(record_durably(ctx, owner, vec![one])).await;
                    }
                    return;
                }
                // A send whose outcome cannot be written becomes in doubt; a message that
                // was never sent (handed back, held by its window) does not: it stays in
                // flight until recorded or its lease runs out.
                if failures >= 3
                    && let Some(o) = outcomes.first_mut()
                    && !matches!(
                        o.kind,
                        OutcomeKind::Unknown { .. }
                            | OutcomeKind::Released
                            | OutcomeKind::Held { .. }
                    )
                {
                    o.kind = OutcomeKind::Unknown {
                        error: format!("the send's outcome could not be recorded ({e})"),
                    };
                    failures = 0;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The provider's numeric error code at the start of a classified error (`twilio 21610:
/// …` → `21610`), for the opt-out event.
fn provider_code(error: &str) -> Option<&str> {
    error
        .split(|c: char| c.is_whitespace() || c == ':' || c == ',')
        .take(3)
        .find(|w| !w.is_empty() && w.len() <= 12 && w.chars().all(|c| c.is_ascii_digit()))
}
