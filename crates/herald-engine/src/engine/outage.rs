//! Provider outages: a provider that stops answering pauses its campaigns, it does not fail
//! their messages.
//!
//! - Every send whose failure says nothing about the recipient (the provider could not be
//!   reached: connection refused or reset, DNS, TLS, connect timeout; or it answered 5xx or
//!   not at all after the request left) counts against its channel; any answer from the
//!   provider (an acceptance, a refusal of one recipient, a rate limit) resets the count.
//!   The count is this instance's evidence only: the decision it leads to is in the
//!   database.
//! - `outage_after_failures` of them in a row mark the channel `unavailable` in the
//!   database (a conditional write: one instance wins, every instance sees it), and the
//!   engine pauses the channel's sending campaigns with the reason, each in its audit
//!   trail. Messages that could not reach the provider go back to the queue with their
//!   attempt refunded; those that may have reached it are in doubt, as always.
//! - The probe loop asks each unavailable channel's provider, one instance at a time (a
//!   claim in the database), whether it answers, with a request that sends nothing. The
//!   first answer makes the channel available and resumes the campaigns the outage paused,
//!   and only those: a campaign a person paused stays paused.

use super::EngineContext;
use crate::ids::{CampaignId, ChannelId, OrgId};
use crate::store::outage::ChannelOutage;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// Consecutive provider-side failures per channel, as this instance saw them.
#[derive(Default)]
pub struct Tracker {
    streaks: Mutex<HashMap<ChannelId, u32>>,
}

impl Tracker {
    /// A failure that says nothing about the recipient; returns the streak so far.
    fn failed(&self, channel_id: ChannelId) -> u32 {
        match self.streaks.lock() {
            Ok(mut s) => {
                let n = s.entry(channel_id).or_default();
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 0,
        }
    }

    /// The provider answered: the streak ends.
    pub fn answered(&self, channel_id: ChannelId) {
        if let Ok(mut s) = self.streaks.lock()
            && s.get(&channel_id).is_some_and(|n| *n > 0)
        {
            s.remove(&channel_id);
        }
    }
}

/// The part of a transport error a person needs, in one line: "connection refused",
/// "DNS lookup failed", "TLS handshake failed", "timed out", "HTTP 503"…; otherwise the
/// error itself, shortened.
pub fn cause(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    let known: &[(&[&str], &str)] = &[
        (&["connection refused"], "connection refused"),
        (
            &["connection reset", "broken pipe", "connection closed"],
            "connection reset",
        ),
        (
            &[
                "dns error",
                "failed to lookup",
                "name or service not known",
                "no such host",
                "lookup",
            ],
            "DNS lookup failed",
        ),
        (
            &["certificate", "tls", "handshake", "ssl"],
            "TLS handshake failed",
        ),
        (&["timed out", "timeout", "no answer"], "timed out"),
        (
            &["network is unreachable", "no route"],
            "network unreachable",
        ),
    ];
    for (needles, short) in known {
        if needles.iter().any(|n| lower.contains(n)) {
            return (*short).to_string();
        }
    }
    if let Some(status) = http_5xx(&lower) {
        return format!("HTTP {status} from the provider");
    }
    crate::channels::http::provider_text(error)
}

/// A 5xx status named in an error ("HTTP 503", "twilio 20500 (503)").
fn http_5xx(lower: &str) -> Option<u16> {
    lower
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse::<u16>().ok())
        .find(|n| (500..=599).contains(n))
}

/// Counts a provider-side failure of a send through `channel_id`; at the threshold, marks
/// the channel unavailable and pauses its campaigns.
pub async fn provider_failed(
    ctx: &EngineContext,
    channel_id: ChannelId,
    campaign_id: CampaignId,
    error: &str,
) {
    let streak = ctx.outages.failed(channel_id);
    tracing::debug!(
        %channel_id,
        %campaign_id,
        streak,
        error,
        "send failed on the provider's side"
    );
    // At the threshold, and again at each multiple of it (should the first decision not
    // have been written): not once per failure, which would be one write per send in
    // flight when a provider goes down.
    let threshold = ctx.settings.outage_after_failures.max(1);
    if streak < threshold || !streak.is_multiple_of(threshold) {
        return;
    }
    let now = crate::clock::now_ms();
    match ctx
        .store
        .mark_channel_unavailable(channel_id, now, &cause(error))
        .await
    {
        Ok(true) => {
            tracing::warn!(
                %channel_id,
                %campaign_id,
                failures = streak,
                error,
                "channel unavailable: its provider cannot be reached; pausing its campaigns"
            );
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(%channel_id, error = %e, "could not mark the channel unavailable; will try again on the next failure");
            return;
        }
    }
    ctx.channels.forget(channel_id);
    match ctx.store.channel_outage(channel_id).await {
        Ok(Some(outage)) => pause_campaigns(ctx, &outage, None).await,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%channel_id, error = %e, "could not read the channel's outage")
        }
    }
}

/// The provider refused the channel's credentials (401/403): one answer is enough, the
/// account is refused. Marks the channel unavailable with `reason` (a conditional write:
/// unless it already is) and pauses its sending campaigns for the outage; the probe (or
/// new secrets, `Store::update_org_channel`) ends it.
pub async fn credentials_refused(
    ctx: &EngineContext,
    channel_id: ChannelId,
    campaign_id: CampaignId,
    reason: &str,
    error: &str,
) {
    let now = crate::clock::now_ms();
    match ctx
        .store
        .mark_channel_unavailable(channel_id, now, reason)
        .await
    {
        Ok(true) => tracing::warn!(
            channel_id = %channel_id,
            campaign_id = %campaign_id,
            reason,
            error,
            "channel unavailable: the provider refuses its credentials; pausing its campaigns"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(channel_id = %channel_id, error = %e, "could not mark the channel unavailable; the next refusal will try again");
            return;
        }
    }
    ctx.channels.forget(channel_id);
    match ctx.store.channel_outage(channel_id).await {
        Ok(Some(outage)) => pause_campaigns(ctx, &outage, None).await,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(channel_id = %channel_id, error = %e, "could not read the channel's outage")
        }
    }
}

/// Pauses the channel's sending campaigns (or just `only`) for its outage.
pub async fn pause_campaigns(
    ctx: &EngineContext,
    outage: &ChannelOutage,
    only: Option<CampaignId>,
) {
    let actor = format!("instance {}", ctx.instance.id);
    let reason = format!("paused by the engine: {}", outage.describe());
    match ctx
        .store
        .pause_for_outage(
            outage.channel_id,
            only,
            crate::clock::now_ms(),
            &actor,
            &reason,
        )
        .await
    {
        Ok(paused) => {
            for campaign_id in paused {
                tracing::warn!(
                    %campaign_id,
                    channel_id = %outage.channel_id,
                    %reason,
                    "campaign paused: its channel is unavailable"
                );
            }
        }
        Err(e) => tracing::warn!(
            channel_id = %outage.channel_id,
            error = %e,
            "could not pause the campaigns of an unavailable channel; will retry"
        ),
    }
}

/// Probes unavailable channels every `outage_probe_interval_ms`, one instance per channel
/// at a time, and resumes what their outage paused when they answer.
pub async fn probe_loop(ctx: std::sync::Arc<EngineContext>, shutdown: watch::Receiver<bool>) {
    let period = ctx.settings.outage_probe_interval_ms.max(1);
    let mut stop = shutdown.clone();
    let mut ticker = super::Ticker::new(period, shutdown);
    while ticker.next().await {
        // A probe may wait for a provider that does not answer: a stop does not wait for it.
        tokio::select! {
            result = probe_once(&ctx) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "outage probe pass failed; will retry");
                }
            }
            _ = stop.changed() => break,
        }
    }
}

/// One pass: probe every unavailable channel whose probe this instance claims, and finish
/// resumes a crash interrupted (a channel available again with campaigns still paused for
/// it).
pub async fn probe_once(ctx: &EngineContext) -> Result<(), crate::store::StoreError> {
    let period = ctx.settings.outage_probe_interval_ms.max(1) as i64;
    for outage in ctx.store.channel_outages().await? {
        let now = crate::clock::now_ms();
        if !ctx
            .store
            .claim_probe(outage.channel_id, &ctx.instance.id, now, now + period)
            .await?
        {
            continue;
        }
        match probe(ctx, outage.channel_id).await {
            Ok(()) => {
                if ctx
                    .store
                    .mark_channel_available(outage.channel_id, outage.since)
                    .await?
                {
                    tracing::info!(
                        channel_id = %outage.channel_id,
                        down_ms = crate::clock::now_ms() - outage.since,
                        "channel available again: its provider answers"
                    );
                }
                ctx.channels.forget(outage.channel_id);
                ctx.outages.answered(outage.channel_id);
                resume(ctx, &outage).await?;
            }
            Err(error) => {
                tracing::info!(
                    channel_id = %outage.channel_id,
                    error = %error,
                    next_probe_ms = period,
                    "channel still unavailable"
                );
            }
        }
    }
    // Another instance's probe may have marked the channel available a moment ago and be
    // resuming its campaigns now: this sweep names the channel just the same.
    for (channel_id, name) in ctx.store.outage_pauses_of_available_channels().await? {
        let outage = ChannelOutage {
            channel_id,
            org_id: OrgId(0),
            name,
            kind: String::new(),
            since: 0,
            reason: String::new(),
            probe_owner: None,
            probe_until: None,
        };
        resume(ctx, &outage).await?;
    }
    Ok(())
}

async fn probe(ctx: &EngineContext, channel_id: ChannelId) -> Result<(), String> {
    let channel = ctx
        .channels
        .fresh(channel_id)
        .await
        .map_err(|e| e.to_string())?;
    let limit = Duration::from_millis(ctx.settings.send_timeout_ms)
        .min(crate::channels::http::REQUEST_TIMEOUT);
    match tokio::time::timeout(limit, channel.probe()).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    }
}

async fn resume(
    ctx: &EngineContext,
    outage: &ChannelOutage,
) -> Result<(), crate::store::StoreError> {
    let actor = format!("instance {}", ctx.instance.id);
    let now = crate::clock::now_ms();
    let reason = if outage.since > 0 {
        format!(
            "resumed by the engine: channel `{}` answers again (unavailable since {}: {})",
            outage.name,
            crate::clock::rfc3339(outage.since),
            outage.reason
        )
    } else {
        format!(
            "resumed by the engine: channel `{}` answers again",
            outage.name
        )
    };
    for campaign_id in ctx
        .store
        .resume_after_outage(outage.channel_id, now, &actor, &reason)
        .await?
    {
        tracing::info!(
            %campaign_id,
            channel_id = %outage.channel_id,
            %reason,
            "campaign resumed: its channel is available again"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_short() {
        let cases = [
            (
                "twilio: could not connect: error sending request for url (http://127.0.0.1:9/): client error (Connect): tcp connect error: Connection refused (os error 111)",
                "connection refused",
            ),
            (
                "twilio: could not connect: dns error: failed to lookup address information",
                "DNS lookup failed",
            ),
            (
                "smtp mail.example:465 connect: invalid peer certificate: UnknownIssuer",
                "TLS handshake failed",
            ),
            ("smtp h:25: connecting timed out", "timed out"),
            (
                "twilio: unexpected answer (HTTP 503, text/html, 20 bytes)",
                "HTTP 503 from the provider",
            ),
            ("something else entirely", "something else entirely"),
        ];
        for (error, short) in cases {
            assert_eq!(cause(error), short, "{error}");
        }
    }

    #[test]
    fn streaks_count_and_reset() {
        let t = Tracker::default();
        assert_eq!(t.failed(ChannelId(1)), 1);
        assert_eq!(t.failed(ChannelId(1)), 2);
        assert_eq!(t.failed(ChannelId(2)), 1);
        t.answered(ChannelId(1));
        assert_eq!(t.failed(ChannelId(1)), 1);
        assert_eq!(t.failed(ChannelId(2)), 2);
    }
}
