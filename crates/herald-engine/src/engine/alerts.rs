//! Sends alerts to people (docs/ALERTS.md). Every instance runs this loop: it turns
//! alert-worthy outbox events into alerts (`store::alerts`, once per occurrence and
//! recipient), records "too many messages in doubt" occurrences, and sends due alerts under
//! a claim, through the organisation's alert channel, never through the channel an alert is
//! about. An alert no channel can carry, or whose attempts ran out, is recorded
//! undeliverable: the system page and `herald doctor` show it.

use super::{EngineContext, Ticker};
use crate::address::Address;
use crate::alerts::{next_attempt_at, pick_channel, render_for};
use crate::channels::{SendRequest, SendResult};
use crate::ids::{CampaignId, ChannelId, MessageId};
use crate::store::alerts::{Alert, AlertOutcome};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Alert-worthy events turned into alerts per pass.
const FAN_OUT_BATCH: i64 = 100;
/// Alerts claimed per pass (they are rare; a burst waits for the next pass).
const CLAIM_BATCH: i64 = 20;
/// How long a claim lasts beyond the send timeout.
const LEASE_MARGIN_MS: i64 = 30_000;

/// One attempt at a claimed alert.
pub async fn attempt(
    ctx: &EngineContext,
    alert: &Alert,
    shutdown: &watch::Receiver<bool>,
) -> AlertOutcome {
    let now = crate::clock::now_ms();
    let retry_or_give_up = |channel_id: Option<ChannelId>, error: String| {
        let made = alert.attempts + 1;
        match next_attempt_at(made, now) {
            Some(next_attempt_at) => AlertOutcome::Retry {
                channel_id,
                error,
                next_attempt_at,
            },
            None => AlertOutcome::Undeliverable {
                channel_id,
                error: format!("gave up after {made} attempts: {error}"),
            },
        }
    };
    let address = match Address::parse(&alert.address) {
        Ok(a) => a,
        Err(e) => {
            return AlertOutcome::Undeliverable {
                channel_id: None,
                error: format!("the recipient is not an address: {e}"),
            };
        }
    };
    let (candidates, configured) = match ctx.store.alert_channels(alert.org_id).await {
        Ok(c) => c,
        Err(e) => return retry_or_give_up(None, format!("alert settings unreadable: {e}")),
    };
    let channel = match pick_channel(
        &candidates,
        configured,
        alert.concerns_channel_id,
        address.kind(),
    ) {
        Ok(c) => c.clone(),
        Err(why) => {
            return AlertOutcome::Undeliverable {
                channel_id: None,
                error: why,
            };
        }
    };
    let (sender, rate) = match ctx.channels.get_with_rate(channel.id).await {
        Ok(c) => c,
        Err(e) => {
            return retry_or_give_up(
                Some(channel.id),
                format!("channel {} cannot be built: {e}", channel.id),
            );
        }
    };
    let body = render_for(
        address.kind(),
        &alert.subject,
        &alert.body,
        alert.link.as_deref(),
        ctx.settings.public_url.as_deref(),
    );
    // Alerts share the channel's rate with its campaigns.
    if ctx
        .throttle
        .acquire(channel.id, rate, sender.cost(&body), shutdown, || true)
        .await
        .is_err()
    {
        return retry_or_give_up(Some(channel.id), "the instance stopped".to_string());
    }
    let request = SendRequest {
        // An alert is not a campaign's message: no message, and its campaign when it has one.
        message_id: MessageId(0),
        campaign_id: alert.campaign_id.unwrap_or(CampaignId(0)),
        address: address.clone(),
        body,
        attempt: alert.attempts + 1,
        unsubscribe_url: None,
        template: None,
        email: None,
    };
    let timeout = Duration::from_millis(ctx.settings.send_timeout_ms);
    let result = match tokio::time::timeout(timeout, sender.send(request)).await {
        Ok(r) => r,
        Err(_) => SendResult::Unknown {
            error: format!("no answer within {} ms", ctx.settings.send_timeout_ms),
        },
    };
    match result {
        SendResult::Accepted { provider_id } => AlertOutcome::Sent {
            channel_id: channel.id,
            provider_id,
        },
        SendResult::Permanent { error } | SendResult::OptOut { error } => {
            AlertOutcome::Undeliverable {
                channel_id: Some(channel.id),
                error: format!("{} refused the recipient: {error}", channel.name),
            }
        }
        // A lost answer may mean it was sent: a second copy of an alert is better than
        // none.
        SendResult::Transient { error, .. }
        | SendResult::Unknown { error }
        | SendResult::Unreachable { error }
        | SendResult::StopCampaign { error }
        | SendResult::CredentialsRefused { error, .. } => {
            retry_or_give_up(Some(channel.id), format!("{}: {error}", channel.name))
        }
    }
}

/// One pass: fan out, mark in-doubt occurrences, send what is due. Returns alerts sent or
/// settled by this pass.
pub async fn pass(ctx: &EngineContext, shutdown: &watch::Receiver<bool>) -> u64 {
    let now = crate::clock::now_ms();
    match ctx.store.mark_in_doubt_campaigns(now).await {
        Ok(marked) => {
            for id in marked {
                tracing::warn!(campaign_id = %id, "messages in doubt reached the alert threshold");
            }
        }
        Err(e) => tracing::debug!(error = %e, "in-doubt alert check failed; will retry"),
    }
    if let Err(e) = ctx.store.fan_out_alerts(now, FAN_OUT_BATCH).await {
        tracing::debug!(error = %e, "alert fan-out failed; will retry");
    }
    let lease = i64::try_from(ctx.settings.send_timeout_ms)
        .unwrap_or(i64::MAX)
        .saturating_add(LEASE_MARGIN_MS);
    let claimed = match ctx
        .store
        .claim_alerts(
            &ctx.instance.id,
            now,
            now.saturating_add(lease),
            CLAIM_BATCH,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "alert claim failed; will retry");
            return 0;
        }
    };
    let mut settled = 0;
    for alert in claimed {
        let outcome = attempt(ctx, &alert, shutdown).await;
        match &outcome {
            AlertOutcome::Sent { channel_id, .. } => {
                metrics::counter!("herald_alerts_total", "outcome" => "sent").increment(1);
                tracing::info!(alert_id = %alert.id, event = %alert.event_type, channel_id = %*channel_id, "alert sent");
            }
            AlertOutcome::Retry { error, .. } => {
                tracing::debug!(alert_id = %alert.id, event = %alert.event_type, error = %error, "alert attempt failed; will retry");
            }
            AlertOutcome::Undeliverable { error, .. } => {
                metrics::counter!("herald_alerts_total", "outcome" => "undeliverable").increment(1);
                tracing::error!(alert_id = %alert.id, event = %alert.event_type, error = %error, "alert cannot be delivered");
            }
        }
        match ctx
            .store
            .record_alert_attempt(alert.id, &ctx.instance.id, &outcome, crate::clock::now_ms())
            .await
        {
            Ok(true) => settled += 1,
            Ok(false) => {
                tracing::debug!(
                    alert_id = %alert.id,
                    "alert claim was taken back before its outcome was written"
                )
            }
            Err(e) => {
                tracing::warn!(alert_id = %alert.id, error = %e, "alert outcome not written; its claim runs out and it is tried again")
            }
        }
    }
    settled
}

/// How often settled alerts older than `event_retention_days` are deleted, and how many at
/// most per time.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);
const EXPIRY_BATCH: i64 = 1_000;

async fn expire(ctx: &EngineContext) {
    let days = i64::try_from(ctx.settings.event_retention_days).unwrap_or(i64::MAX);
    let before = crate::clock::now_ms().saturating_sub(days.saturating_mul(24 * 3600 * 1000));
    match ctx
        .store
        .delete_settled_alerts_before(before, EXPIRY_BATCH)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(deleted = n, "expired alerts deleted"),
        Err(e) => tracing::debug!(error = %e, "alert expiry failed; will retry"),
    }
}

/// The alert loop of one engine instance; returns once shutdown is requested, handing back
/// claims it did not use.
pub async fn run(ctx: Arc<EngineContext>, shutdown: watch::Receiver<bool>) {
    let mut ticker = Ticker::new(ctx.settings.idle_poll_ms.clamp(10, 1_000), shutdown.clone());
    let mut last_expiry: Option<std::time::Instant> = None;
    while ticker.next().await {
        pass(&ctx, &shutdown).await;
        if last_expiry.is_none_or(|t| t.elapsed() >= EXPIRY_INTERVAL) {
            last_expiry = Some(std::time::Instant::now());
            expire(&ctx).await;
        }
    }
    if let Err(e) = ctx.store.release_alert_claims(&ctx.instance.id).await {
        tracing::debug!(error = %e, "could not hand back alert claims; their leases run out");
    }
}
