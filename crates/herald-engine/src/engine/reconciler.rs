//! The scheduler and the reconciler. Both run in every instance; both only make
//! conditional writes, so running them in many places at once is harmless.

use super::EngineContext;
use super::health;
use crate::config::InDoubtPolicy;
use crate::ids::{CampaignId, ChannelId, MessageId};
use crate::store::StartOutcome;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Starts scheduled campaigns when due. The start is conditional on the campaign still
/// being `scheduled` and due, so with any number of instances it happens exactly once.
pub async fn scheduler_loop(ctx: Arc<EngineContext>, shutdown: watch::Receiver<bool>) {
    let mut ticker = super::Ticker::new(ctx.settings.scheduler_interval_ms, shutdown);
    let actor = format!("scheduler@{}", ctx.instance.id);
    while ticker.next().await {
        let now = crate::clock::now_ms();
        let due = match ctx.store.due_scheduled(now).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler cannot read due campaigns");
                continue;
            }
        };
        for id in due {
            match ctx.store.start_campaign(id, now, &actor, Some(now)).await {
                Ok(StartOutcome::Started { messages, .. }) => {
                    tracing::info!(campaign_id = %id, messages, "scheduled campaign started");
                }
                Ok(StartOutcome::NotDue) => {
                    tracing::debug!(
                        campaign_id = %id,
                        "scheduled campaign already started elsewhere"
                    );
                }
                // Its audience cannot be read as it stands (a segment names a list that is
                // gone): no retry will change that, so it goes back to draft, saying why.
                Err(crate::store::StoreError::Invalid(why)) => {
                    match ctx.store.refuse_scheduled_start(id, &actor, &why).await {
                        Ok(_) => tracing::warn!(
                            campaign_id = %id,
                            reason = %why,
                            "scheduled start refused; campaign back to draft"
                        ),
                        Err(e) => {
                            tracing::warn!(campaign_id = %id, error = %e, "scheduled start refused; will retry")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(campaign_id = %id, error = %e, "scheduled start failed; will retry")
                }
            }
        }
    }
}

pub async fn reconciler_loop(ctx: Arc<EngineContext>, shutdown: watch::Receiver<bool>) {
    let mut ticker = super::Ticker::new(ctx.settings.reconcile_interval_ms, shutdown);
    let mut last_drift_check: Option<Instant> = None;
    let mut reported_stuck: BTreeSet<CampaignId> = BTreeSet::new();
    while ticker.next().await {
        let drift_due = last_drift_check.is_none_or(|t| {
            t.elapsed() >= Duration::from_millis(ctx.settings.drift_check_interval_ms)
        });
        if drift_due {
            last_drift_check = Some(Instant::now());
        }
        let pass = Instant::now();
        if let Err(e) = reconcile_once(&ctx, drift_due, &mut reported_stuck).await {
            tracing::warn!(error = %e, "reconciler pass failed; will retry");
        }
        tracing::debug!(
            took_ms = pass.elapsed().as_millis() as u64,
            drift_due,
            "reconciler pass"
        );
    }
}

/// Instances on this host, in this PID namespace, whose process is gone (or whose pid now
/// belongs to another process): provably dead without waiting for their heartbeat to go
/// stale. Anything that cannot be proven dead this way waits for the heartbeat rule.
pub fn dead_on_this_host(
    instances: &[crate::store::InstanceRow],
    me: &crate::store::InstanceInfo,
) -> Vec<String> {
    let Some(my_ns) = me.proc_start.as_deref().map(super::pid_namespace) else {
        return Vec::new();
    };
    instances
        .iter()
        .filter(|i| i.host == me.host && i.id != me.id)
        .filter(|i| {
            let Some(recorded) = i.proc_start.as_deref() else {
                return false;
            };
            if super::pid_namespace(recorded) != my_ns {
                return false;
            }
            let pid = u32::try_from(i.pid).unwrap_or(0);
            super::process_start_time(pid).as_deref() != Some(recorded)
        })
        .map(|i| i.id.clone())
        .collect()
}

/// One pass: take back dead instances' work as in doubt, apply the in-doubt policy,
/// finalise drained campaigns, and report stuck campaigns and counter drift.
pub async fn reconcile_once(
    ctx: &EngineContext,
    check_drift: bool,
    reported_stuck: &mut BTreeSet<CampaignId>,
) -> Result<(), crate::store::StoreError> {
    let store = &ctx.store;
    let settings = &ctx.settings;
    let now = crate::clock::now_ms();
    let instances = store.instances().await?;
    let dead = dead_on_this_host(&instances, &ctx.instance);
    if !dead.is_empty() {
        tracing::warn!(instances = ?dead, "instances on this host exited without deregistering");
        store.forget_instances(&dead, now).await?;
    }
    // Judge other instances by their heartbeats only after this one has itself reached the
    // database for a whole staleness window; until then only provably dead processes count.
    let healthy_since = ctx
        .db_healthy_since
        .load(std::sync::atomic::Ordering::SeqCst);
    let window = settings.instance_stale_after_ms as i64;
    // After an outage the others need time to reconnect too (up to the pool's acquire
    // timeout): silence is evidence only once this instance has been reachable for a
    // whole window plus that allowance.
    let stale_before = if healthy_since > 0 && now - healthy_since >= window + PEER_RECONNECT_MS {
        now - window
    } else {
        i64::MIN
    };
    for (campaign_id, n) in store.mark_in_doubt(now, stale_before, &dead).await? {
        tracing::warn!(
            campaign_id = %campaign_id,
            in_doubt = n,
            "messages of a dead instance are in doubt"
        );
        metrics::counter!("herald_in_doubt_found_total").increment(n as u64);
    }
    let released = store
        .release_lookups_of_dead(now, stale_before, &dead)
        .await?;
    if released > 0 {
        tracing::info!(
            released,
            "in-doubt messages a dead instance was asking its provider about are due again"
        );
    }
    release_unknown_claims(ctx, now).await?;
    let found = ask_providers(ctx, now).await?;
    let resend = settings.in_doubt_policy == InDoubtPolicy::Resend;
    let report = store
        .resolve_in_doubt_limited(
            resend,
            now,
            now - settings.in_doubt_grace_ms as i64,
            i64::from(settings.retry_max_attempts),
        )
        .await?;
    metrics::counter!("herald_in_doubt_resolved_total", "how" => "provider_had_it")
        .increment(found);
    metrics::counter!("herald_in_doubt_resolved_total", "how" => "resent")
        .increment(report.resent as u64);
    metrics::counter!("herald_in_doubt_resolved_total", "how" => "failed")
        .increment(report.failed as u64);
    metrics::counter!("herald_in_doubt_resolved_total", "how" => "cancelled")
        .increment(report.cancelled as u64);
    if found as i64 + report.resent + report.failed + report.cancelled > 0 {
        tracing::info!(
            found_at_provider = found,
            resent = report.resent,
            failed = report.failed,
            cancelled = report.cancelled,
            policy = settings.in_doubt_policy_name(),
            "in-doubt messages resolved"
        );
    }
    // A full batch means more are waiting (a provider that reports faster than outcomes
    // commit, as the sandbox does, leaves most of its receipts kept): go on, one short
    // transaction per batch, up to KEPT_RECEIPT_BATCHES_PER_PASS, so the counters catch up
    // within a pass or two instead of one batch every `reconcile_interval_ms`.
    let mut kept = 0;
    for _ in 0..KEPT_RECEIPT_BATCHES_PER_PASS {
        let n = store.apply_kept_receipts(now).await?;
        kept += n;
        if n < crate::store::KEPT_RECEIPT_BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    if kept > 0 {
        tracing::info!(
            receipts = kept,
            "kept receipts applied once their provider ids were recorded"
        );
    }
    expire_webhook_events(ctx, now).await?;
    super::webhooks_out::expire_events(ctx, now).await?;
    archive_messages(ctx, now).await?;
    for id in store.finalize_drained(now).await? {
        tracing::warn!(
            campaign_id = %id,
            "reconciler finalised a sending campaign with nothing pending"
        );
    }
    let stuck = health::stuck_campaigns(store, now, settings).await?;
    metrics::gauge!("herald_stuck_campaigns").set(stuck.len() as f64);
    let now_stuck: BTreeSet<CampaignId> = stuck.iter().map(|s| s.campaign_id).collect();
    for s in &stuck {
        if !reported_stuck.contains(&s.campaign_id) {
            tracing::warn!(campaign_id = %s.campaign_id, pending = s.pending, reason = %s.reason, "campaign is stuck");
        }
    }
    *reported_stuck = now_stuck;
    // The stored mark and its events: one campaign.stuck per occurrence across instances
    // (the conditional write wins once), campaign.unstuck when it moves again.
    let idle_before = now - settings.stuck_after_ms as i64;
    for s in &stuck {
        store
            .mark_stuck(s.campaign_id, now, idle_before, &s.reason)
            .await?;
    }
    for id in store.clear_unstuck(now).await? {
        tracing::info!(campaign_id = %id, "campaign is no longer stuck");
    }
    if check_drift {
        let drift = health::drift(store, now).await?;
        metrics::gauge!("herald_counter_drift").set(drift.len() as f64);
        for d in &drift {
            tracing::error!(campaign_id = %d.campaign_id, status = %d.status, counter = d.counter, actual = d.actual, "counter drift");
        }
    }
    update_gauges(ctx).await
}

/// Rows one retention statement deletes, and statements per pass: small enough that the
/// write lock is never held long, enough to work off a backlog of 10,000 a second at the
/// default two-second pass.
const WEBHOOK_EXPIRY_BATCH: i64 = 1_000;
const WEBHOOK_EXPIRY_BATCHES: usize = 20;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// How many batches of kept receipts one reconciler pass may apply (a batch is one short
/// transaction of `KEPT_RECEIPT_BATCH`; twenty take well under a second on the 2-core
/// machine in a release build).
const KEPT_RECEIPT_BATCHES_PER_PASS: usize = 20;

/// Deletes provider webhook records older than `webhook_retention_days`.
pub async fn expire_webhook_events(
    ctx: &EngineContext,
    now: i64,
) -> Result<u64, crate::store::StoreError> {
    let days = i64::try_from(ctx.settings.webhook_retention_days).unwrap_or(i64::MAX);
    let before = now.saturating_sub(days.saturating_mul(DAY_MS));
    let deleted = ctx
        .store
        .delete_webhook_events_before(before, WEBHOOK_EXPIRY_BATCH, WEBHOOK_EXPIRY_BATCHES)
        .await?;
    if deleted > 0 {
        metrics::counter!("herald_webhook_events_expired_total").increment(deleted);
        tracing::debug!(
            deleted,
            retention_days = ctx.settings.webhook_retention_days,
            "expired webhook records deleted"
        );
    }
    Ok(deleted)
}

/// What one reconciler pass may archive: five chunks of a thousand messages, each one short
/// transaction, so a campaign of ten million messages is archived over some 2,000 passes
/// (about an hour at the default two-second pass) and never holds a lock for long.
const ARCHIVE_LIMITS: crate::store::ArchiveLimits = crate::store::ArchiveLimits {
    chunk_rows: 1_000,
    chunks_per_pass: 5,
};

/// Moves the message rows of campaigns finished more than `message_retention_days` ago
/// into the message archive (docs/CAMPAIGNS.md, "Retention"), `ARCHIVE_LIMITS` a pass;
/// nothing when the setting is 0.
pub async fn archive_messages(
    ctx: &EngineContext,
    now: i64,
) -> Result<crate::store::ArchiveReport, crate::store::StoreError> {
    archive_messages_limited(ctx, now, ARCHIVE_LIMITS).await
}

/// [`archive_messages`] with other limits (tests stop an archive half-way with these).
pub async fn archive_messages_limited(
    ctx: &EngineContext,
    now: i64,
    limits: crate::store::ArchiveLimits,
) -> Result<crate::store::ArchiveReport, crate::store::StoreError> {
    let days = i64::from(ctx.settings.message_retention_days);
    if days == 0 {
        return Ok(crate::store::ArchiveReport::default());
    }
    let report = ctx
        .store
        .archive_finished_campaigns(now, days.saturating_mul(DAY_MS), limits)
        .await?;
    if report.rows > 0 {
        metrics::counter!("herald_messages_archived_total").increment(report.rows);
        tracing::debug!(
            chunks = report.chunks,
            rows = report.rows,
            bytes = report.bytes,
            "message rows archived"
        );
    }
    for c in &report.finished {
        tracing::info!(
            campaign_id = %c.campaign_id,
            rows = c.rows,
            bytes = c.bytes,
            retention_days = days,
            "campaign's messages archived"
        );
    }
    for id in &report.refused {
        tracing::warn!(
            campaign_id = %id,
            "campaign not archived: a message row is still pending although its counters say none is (see the counter drift check)"
        );
    }
    Ok(report)
}

/// The most time one reconciler pass spends asking providers.
const LOOKUP_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
/// How long other instances may take to reach the database again after an outage (the
/// PostgreSQL pool gives up acquiring a connection after 3 s and the next heartbeat tries
/// afresh).
pub const PEER_RECONNECT_MS: i64 = 5_000;
/// How long to wait before asking a provider again when it could not answer.
const LOOKUP_RETRY_MS: i64 = 30_000;
/// Provider lookups one reconciler pass has in progress at once.
const LOOKUP_CONCURRENCY: usize = 32;
/// In-doubt messages one instance takes to ask about at a time (see `ask_providers`).
const LOOKUP_CHUNK: usize = 4 * LOOKUP_CONCURRENCY;
/// How long a message taken for a lookup is left to its asker: longer than a pass's lookups
/// can take. An asker that dies gives its messages back as soon as it is known dead
/// (`Store::release_lookups_of_dead`), not after this.
const LOOKUP_LEASE_MS: i64 = 60_000;

/// Resolves in-doubt messages by asking their provider where it can tell, before the
/// in-doubt policy resends or fails them: a message the provider has becomes `sent` and
/// is not resent. Returns how many the providers had.
async fn ask_providers(ctx: &EngineContext, now: i64) -> Result<u64, crate::store::StoreError> {
    let settings = &ctx.settings;
    let candidates = ctx
        .store
        .in_doubt_candidates(now - settings.in_doubt_grace_ms as i64, 10_000)
        .await?;
    let started = std::time::Instant::now();
    let mut found = 0u64;
    let mut templates: std::collections::HashMap<
        CampaignId,
        Option<std::sync::Arc<crate::template::MessageTemplate>>,
    > = std::collections::HashMap::new();
    let mut to_ask = Vec::new();
    // One query for the proofs and one write per deferral time, not two statements per
    // message: a kill leaves hundreds in doubt at once, and every instance's reconciler
    // goes through them.
    let ids: Vec<MessageId> = candidates.iter().map(|c| c.id).collect();
    let proofs = ctx.store.proofs_for(&ids).await?;
    // A status naming the message may have come while it was still in flight: those the
    // provider has already shown are sent, in one transaction for all of them.
    let proven: Vec<crate::store::ProviderHas> = candidates
        .iter()
        .filter_map(|c| {
            proofs
                .get(&c.id)
                .map(|provider_id| crate::store::ProviderHas {
                    channel_id: c.channel_id,
                    message_id: c.id,
                    provider_id: provider_id.clone(),
                })
        })
        .collect();
    let resolved: std::collections::HashSet<MessageId> = ctx
        .store
        .resolve_in_doubt_sent_many(&proven, now)
        .await?
        .into_iter()
        .collect();
    found += resolved.len() as u64;
    let mut deferred: std::collections::BTreeMap<i64, Vec<MessageId>> = Default::default();
    for c in candidates {
        if resolved.contains(&c.id) {
            continue;
        }
        // The kind's wait (`ChannelKindDescriptor::in_doubt_wait`): for a status webhook
        // naming the message (WhatsApp), or for a message created an instant before to
        // show in the provider's list (Twilio, `provider_lookup_delay_ms`).
        let wait = c
            .channel_kind
            .parse::<crate::channel_kind::ChannelKind>()
            .ok()
            .and_then(|k| k.in_doubt_wait().ms(settings.provider_lookup_delay_ms));
        if let Some(wait) = wait
            && now - c.marked_at < wait
        {
            deferred.entry(c.marked_at + wait).or_default().push(c.id);
            continue;
        }
        let Ok(channel) = ctx.channels.get(c.channel_id).await else {
            continue;
        };
        let template = templates.entry(c.campaign_id).or_insert_with(|| {
            crate::template::MessageTemplate::compile(&c.template)
                .ok()
                .map(std::sync::Arc::new)
        });
        let Some(template) = template.clone() else {
            continue;
        };
        to_ask.push((c, channel, template));
    }
    for (until, ids) in deferred {
        ctx.store.defer_in_doubt(&ids, until).await?;
    }
    // Rendering is CPU work: on the render pool, in one hand-off for the whole pass. (One
    // per message queued each render behind the senders' claim-sized batches, and a pass of
    // two thousand in-doubt messages ran out of its lookup budget.)
    // With the same tracked links the sender printed, so the provider's copy matches.
    let signer = crate::tracked_links::LinkSigner::new(
        settings.public_url.as_deref(),
        settings.secret_key.as_deref(),
    );
    let inputs: Vec<_> = to_ask
        .iter()
        .map(|(c, _, template)| {
            (
                template.clone(),
                c.id,
                c.address.clone(),
                c.name.clone(),
                c.attributes.clone(),
            )
        })
        .collect();
    let bodies = crate::template::render_off_thread(move || {
        inputs
            .iter()
            .map(|(template, id, address, name, attributes)| {
                let attributes: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(attributes).unwrap_or_default();
                let links = crate::tracked_links::links_for(signer.as_ref(), *id, template.links());
                template
                    .renderer()
                    .and_then(|r| {
                        r.render_linked(
                            &crate::template::ContactFields {
                                address: address.as_str(),
                                name: name.as_deref(),
                                attributes: &attributes,
                            },
                            links.as_ref(),
                        )
                    })
                    .ok()
            })
            .collect::<Vec<Option<String>>>()
    })
    .await
    .unwrap_or_default();
    let mut lookups = Vec::new();
    for ((c, channel, _), body) in to_ask.into_iter().zip(bodies) {
        let Some(body) = body else {
            continue;
        };
        // No copy can predate the claim, which came at most a staleness window and a send
        // timeout before the message was found in doubt; a minute of slack for clocks.
        let query = crate::channels::LookupQuery {
            address: c.address.clone(),
            body,
            sent_after_ms: c.marked_at
                - settings.instance_stale_after_ms as i64
                - settings.send_timeout_ms as i64
                - 60_000,
        };
        // A kind that cannot be asked (only Twilio can) is neither taken nor asked: the
        // in-doubt policy decides it as before. Building the question sends nothing.
        if channel.lookup(&query).is_none() {
            continue;
        }
        lookups.push((c, channel, query));
    }
    // Asked in chunks, each taken first (`take_in_doubt_for_lookup`), so that each message
    // is asked about by one instance: every instance's reconciler sees the same
    // candidates, and three of them asking the same questions tripled the provider's load
    // (and the time) after a kill. Shuffled and chunked, so that several instances share
    // the questions instead of the first one taking them all.
    let due_by = now - settings.in_doubt_grace_ms as i64;
    {
        use rand::seq::SliceRandom;
        lookups.shuffle(&mut rand::rng());
    }
    let prepared_ms = started.elapsed().as_millis() as u64;
    let mut asked = 0;
    let mut answers = Vec::new();
    let mut waiting = lookups.into_iter().peekable();
    while waiting.peek().is_some() && started.elapsed() <= LOOKUP_BUDGET {
        let mut chunk: Vec<_> = waiting.by_ref().take(LOOKUP_CHUNK).collect();
        let ids: Vec<MessageId> = chunk.iter().map(|(c, _, _)| c.id).collect();
        let taken: std::collections::HashSet<MessageId> = ctx
            .store
            .take_in_doubt_for_lookup(&ctx.instance.id, &ids, due_by, now + LOOKUP_LEASE_MS)
            .await?
            .into_iter()
            .collect();
        chunk.retain(|(c, _, _)| taken.contains(&c.id));
        asked += chunk.len();
        // Several questions at once: a provider answers a list query in 100-300 ms, and a
        // dead instance leaves up to `concurrency` messages in doubt; one at a time, 200 of
        // them took most of a minute.
        let mut asking = tokio::task::JoinSet::new();
        let mut chunk = chunk.into_iter();
        loop {
            while asking.len() < LOOKUP_CONCURRENCY {
                let Some((c, channel, query)) = chunk.next() else {
                    break;
                };
                asking.spawn(async move {
                    let answer = match channel.lookup(&query) {
                        Some(asked) => Some(asked.await),
                        None => None,
                    };
                    (c, answer)
                });
            }
            match asking.join_next().await {
                Some(Ok(answered)) => answers.push(answered),
                // Taken but unanswered: given back when the lease ends.
                Some(Err(e)) => tracing::warn!(error = %e, "a provider lookup did not finish"),
                None => break,
            }
        }
    }
    // Out of time this pass: the rest wait for the next one rather than be resent without
    // asking. Taken, so that a message another instance took meanwhile keeps its lease.
    let unasked: Vec<MessageId> = waiting.map(|(c, _, _)| c.id).collect();
    ctx.store
        .take_in_doubt_for_lookup(
            &ctx.instance.id,
            &unasked,
            due_by,
            now + settings.reconcile_interval_ms as i64,
        )
        .await?;
    tracing::debug!(
        asked,
        answered = answers.len(),
        prepared_ms,
        took_ms = started.elapsed().as_millis() as u64,
        "asked providers about in-doubt messages"
    );
    // Not at the provider (or it cannot be asked): back to when the decision was due, so
    // that the in-doubt policy decides now.
    let mut undecided: std::collections::BTreeMap<i64, Vec<MessageId>> = Default::default();
    // What the providers have is sent in one transaction for the pass, not one each.
    let mut had = Vec::new();
    for (c, answer) in answers {
        match answer {
            None | Some(Ok(None)) => undecided.entry(c.in_doubt_at).or_default().push(c.id),
            Some(Ok(Some(provider_id))) => had.push(crate::store::ProviderHas {
                channel_id: c.channel_id,
                message_id: c.id,
                provider_id,
            }),
            Some(Err(e)) => {
                tracing::warn!(message_id = %c.id, campaign_id = %c.campaign_id, error = %e, "provider could not say whether it has an in-doubt message; asking again later");
                ctx.store
                    .defer_in_doubt(&[c.id], now + LOOKUP_RETRY_MS)
                    .await?;
            }
        }
    }
    found += ctx.store.resolve_in_doubt_sent_many(&had, now).await?.len() as u64;
    for (due, ids) in undecided {
        ctx.store.defer_in_doubt(&ids, due).await?;
    }
    Ok(found)
}

/// Hands back rows this instance owns in flight but no sender of this process knows about:
/// claims whose commit succeeded while its answer was lost. They were never sent, so they go
/// back to `queued` (not in doubt).
async fn release_unknown_claims(
    ctx: &EngineContext,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    // Older than any claim whose answer could still be on its way to the dispatcher
    // (`lost_claim_after_ms`, a minute by default: far longer than any claim waits for its
    // transaction and answer).
    let after = i64::try_from(ctx.settings.lost_claim_after_ms).unwrap_or(i64::MAX);
    release_claims_unknown_before(ctx, now, now.saturating_sub(after)).await
}

/// Releases this instance's in-flight rows claimed before `claimed_before` that no sender
/// of this process knows about. At shutdown (dispatcher stopped) every such row qualifies.
pub async fn release_claims_unknown_before(
    ctx: &EngineContext,
    now: i64,
    claimed_before: i64,
) -> Result<(), crate::store::StoreError> {
    let owned = ctx
        .store
        .owned_in_flight(&ctx.instance.id, claimed_before)
        .await?;
    let unknown: Vec<crate::store::Outcome> = {
        let Ok(known) = ctx.in_flight.lock() else {
            return Ok(());
        };
        owned
            .into_iter()
            .filter(|(id, _)| !known.contains(id))
            .map(|(message_id, campaign_id)| crate::store::Outcome {
                attempt: None,
                message_id,
                campaign_id,
                kind: crate::store::OutcomeKind::Released,
            })
            .collect()
    };
    if !unknown.is_empty() {
        let report = ctx
            .store
            .record_outcomes(&ctx.instance.id, now, &unknown)
            .await?;
        tracing::warn!(
            released = report.applied,
            "claims whose answer was lost were handed back unsent"
        );
    }
    Ok(())
}

async fn update_gauges(ctx: &EngineContext) -> Result<(), crate::store::StoreError> {
    let gauges = ctx.store.campaign_gauges().await?;
    let mut pending = 0;
    let mut in_doubt = 0;
    for s in crate::domain::CampaignStatus::ALL {
        let row = gauges.iter().find(|g| g.0 == s);
        let n = row.map(|g| g.1).unwrap_or(0);
        metrics::gauge!("herald_campaigns", "status" => s.as_str()).set(n as f64);
        if !s.is_terminal() {
            pending += row.map(|g| g.2).unwrap_or(0);
        }
        in_doubt += row.map(|g| g.3).unwrap_or(0);
    }
    metrics::gauge!("herald_pending_messages").set(pending as f64);
    metrics::gauge!("herald_in_doubt_messages").set(in_doubt as f64);
    let now = crate::clock::now_ms();
    let instances = ctx.store.instances().await?;
    let live = super::health::live(&instances, now, &ctx.settings).len();
    metrics::gauge!("herald_live_instances").set(live as f64);
    // One series per channel: 1 while unavailable, 0 otherwise; a channel deleted since
    // keeps its series at 0.
    let channels = ctx.store.channel_availability().await?;
    if let Ok(mut seen) = CHANNEL_SERIES.lock() {
        for gone in seen
            .iter()
            .filter(|id| !channels.iter().any(|c| c.0 == **id))
        {
            metrics::gauge!(
                "herald_channel_unavailable",
                "channel" => gone.to_string()
            )
            .set(0.0);
        }
        seen.clear();
        for (channel, down) in &channels {
            seen.insert(*channel);
            metrics::gauge!(
                "herald_channel_unavailable",
                "channel" => channel.to_string()
            )
            .set(if *down { 1.0 } else { 0.0 });
        }
    }
    Ok(())
}

/// Channels with a `herald_channel_unavailable` series in this process.
static CHANNEL_SERIES: std::sync::Mutex<BTreeSet<ChannelId>> =
    std::sync::Mutex::new(BTreeSet::new());

#[cfg(test)]
mod tests {
    use super::dead_on_this_host;
    use crate::engine::instance_identity;
    use crate::store::InstanceRow;

    fn row(id: &str, host: &str, pid: i64, proc_start: Option<String>) -> InstanceRow {
        InstanceRow {
            id: id.into(),
            host: host.into(),
            pid,
            proc_start,
            version: "0".into(),
            role: "serve".into(),
            started_at: 0,
            heartbeat_at: 0,
            in_flight: 0,
        }
    }

    #[test]
    fn only_provably_gone_processes_in_our_namespace_are_dead() {
        let me = instance_identity("test");
        let mine = me.proc_start.clone().expect("linux /proc");
        let ns = crate::engine::pid_namespace(&mine).to_string();
        let rows = vec![
            // Same live process under another instance id: alive.
            row("alive", &me.host, me.pid, Some(mine.clone())),
            // A pid that cannot exist: dead.
            row("gone", &me.host, 4_000_000_000, Some(format!("{ns}/1"))),
            // Our pid but another start time (pid reused): dead.
            row("reused", &me.host, me.pid, Some(format!("{ns}/1"))),
            // Another PID namespace (a container with the same host name): not provable.
            row(
                "other-ns",
                &me.host,
                4_000_000_000,
                Some("pid:[1]/1".into()),
            ),
            // Another host: not provable.
            row(
                "elsewhere",
                "other-host",
                4_000_000_000,
                Some(format!("{ns}/1")),
            ),
            // Nothing recorded: not provable.
            row("unknown", &me.host, 4_000_000_000, None),
        ];
        let mut dead = dead_on_this_host(&rows, &me);
        dead.sort();
        assert_eq!(dead, vec!["gone".to_string(), "reused".to_string()]);
    }
}
