//! What is wrong right now, in words: stuck campaigns with their reasons, live instances,
//! counter drift, messages in doubt. Shared by the reconciler (logs, metrics) and
//! `herald doctor`.

use crate::config::Settings;
use crate::domain::{CampaignStatus, MessageStatus};
use crate::ids::CampaignId;
use crate::store::{Drift, InstanceRow, Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct StuckCampaign {
    pub campaign_id: CampaignId,
    pub name: String,
    pub pending: i64,
    pub no_progress_for_ms: i64,
    pub reason: String,
}

/// Instances whose heartbeat is fresh.
pub fn live(instances: &[InstanceRow], now: i64, settings: &Settings) -> Vec<InstanceRow> {
    let stale_before = now - settings.instance_stale_after_ms as i64;
    instances
        .iter()
        .filter(|i| i.heartbeat_at >= stale_before)
        .cloned()
        .collect()
}

/// A sending campaign with pending work and no progress for `stuck_after_ms` is stuck; the
/// reason says why when it can be known.
pub async fn stuck_campaigns(
    store: &Store,
    now: i64,
    settings: &Settings,
) -> Result<Vec<StuckCampaign>, StoreError> {
    let campaigns = store
        .campaigns_with_status(&[CampaignStatus::Sending])
        .await?;
    let instances = store.instances().await?;
    let alive = live(&instances, now, settings);
    let mut out = Vec::new();
    for c in campaigns {
        let pending = c.counts.pending();
        let last = c.last_progress_at.or(c.started_at).unwrap_or(c.created_at);
        let idle_for = now - last;
        if pending == 0 || idle_for < settings.stuck_after_ms as i64 {
            continue;
        }
        if waiting_for_window(store, c.id, pending, now).await? {
            continue;
        }
        let reason =
            stuck_reason(store, c.id, &c.channel_name, &c.counts, &alive, &instances).await?;
        out.push(StuckCampaign {
            campaign_id: c.id,
            name: c.name.clone(),
            pending,
            no_progress_for_ms: idle_for,
            reason,
        });
    }
    Ok(out)
}

/// Whether every pending message of a campaign waits for its send window to open:
/// waiting, not stuck, however long it lasts (docs/CAMPAIGNS.md, "Send windows").
pub async fn waiting_for_window(
    store: &Store,
    campaign_id: CampaignId,
    pending: i64,
    now: i64,
) -> Result<bool, StoreError> {
    Ok(store.campaign_waiting(campaign_id, now).await?.messages >= pending)
}

/// Why a campaign with pending work makes no progress, from what the engine knows: no live
/// instance, a failing channel, messages in doubt, or instances that do not get to it.
pub async fn stuck_reason(
    store: &Store,
    campaign_id: CampaignId,
    channel_name: &str,
    counts: &crate::domain::Counts,
    alive: &[InstanceRow],
    all: &[InstanceRow],
) -> Result<String, StoreError> {
    if alive.is_empty() {
        let last = all
            .iter()
            .map(|i| {
                format!(
                    "{} on {} (last heartbeat {})",
                    i.id,
                    i.host,
                    crate::clock::rfc3339(i.heartbeat_at)
                )
            })
            .next()
            .unwrap_or_else(|| "none ever registered".to_string());
        return Ok(format!(
            "no live Herald instance is running to send it (last seen: {last}); start `herald serve` or `herald worker`"
        ));
    }
    let facts = store.pending_facts(campaign_id).await?;
    let waiting = counts.get(MessageStatus::RetryWait);
    if waiting == counts.pending() {
        let until = facts
            .next_retry_at
            .map(crate::clock::rfc3339)
            .unwrap_or_else(|| "unknown".into());
        let err = readable(facts.last_error.as_deref().unwrap_or_default());
        return Ok(format!(
            "all {waiting} pending messages wait for a retry, the next at {until}; channel `{}` is failing: {err}",
            channel_name
        ));
    }
    if let Some(err) = facts.last_error.filter(|_| waiting > 0) {
        return Ok(format!(
            "channel `{}` is failing ({waiting} messages waiting to retry): {}",
            channel_name,
            readable(&err)
        ));
    }
    if counts.get(MessageStatus::InDoubt) > 0 {
        return Ok(format!(
            "{} messages are in doubt and wait for the in-doubt policy",
            counts.get(MessageStatus::InDoubt)
        ));
    }
    Ok(format!(
        "{} queued and {} in flight but nothing recorded; {} live instance(s) are not making progress on it",
        counts.get(MessageStatus::Queued),
        counts.get(MessageStatus::InFlight),
        alive.len()
    ))
}

/// A provider's error as the campaign page's failure reasons read it
/// (`reasons::explain`): what happened and what to do. The raw text is on the
/// campaign's messages and failure groups; it is quoted here only when the error is not one
/// the tables know, so the sentence still says something.
fn readable(error: &str) -> String {
    let error = error.trim();
    if error.is_empty() {
        return "no error was recorded".to_string();
    }
    let e = crate::reasons::explain(error);
    if e.code == "other" {
        format!(
            "{} ({})",
            e.reason,
            crate::channels::http::provider_text(error)
        )
    } else {
        format!("{}. {}", e.reason, e.action)
    }
}

/// Counter drift over campaigns that are sending, paused, or finished recently.
pub async fn drift(store: &Store, now: i64) -> Result<Vec<Drift>, StoreError> {
    let campaigns = store.campaigns_to_check(now - 3600 * 1000).await?;
    store.drift(&campaigns).await
}
