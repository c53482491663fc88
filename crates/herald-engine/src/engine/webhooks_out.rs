//! Outbound webhook delivery (docs/WEBHOOKS.md): fans outbox events out to subscribed
//! endpoints and sends them per the Standard Webhooks specification (v1). Runs in every
//! engine instance; claims in the database keep two instances from sending one delivery at
//! once, and a dead instance's claims come back when their lease runs out.
//!
//! Delivery yields to message sending: it has its own HTTP client (built through the
//! outbound address guard, 15 s timeout, no redirects) and its own concurrency limit
//! (`webhook_concurrency` endpoints at a time), and while the instance sends messages it
//! paces itself (see [`PAUSE_WHILE_SENDING`]). Each endpoint's deliveries are sent in
//! sequence-number order by one task, so a slow endpoint holds only its own deliveries.

use super::{EngineContext, Ticker};
use crate::channels::http::{Failure, ProviderClient, build_client, describe, read_bounded};
use crate::ids::{DeliveryId, WebhookEndpointId};
use crate::secrets::SecretKey;
use crate::store::webhook_deliveries::{AttemptRecord, DeliveryJob, NextClaim, Verdict};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// One attempt's time limit (the spec allows 15 to 30 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer kept in the attempt log.
pub const EXCERPT_BYTES: usize = 1024;
/// Delays before attempts 2 to 8 (attempt 1 is immediate): the Standard Webhooks
/// schedule's first steps; after the eighth attempt a delivery fails.
pub const RETRY_SCHEDULE_MS: [i64; 7] = [
    5_000,
    5 * 60_000,
    30 * 60_000,
    2 * 3_600_000,
    5 * 3_600_000,
    10 * 3_600_000,
    10 * 3_600_000,
];
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER_MS: i64 = 24 * 3_600_000;
/// Deliveries of one endpoint claimed and sent in one go (in order), then recorded together.
pub const PER_ENDPOINT_BATCH: i64 = 100;
/// Batches one task sends to its endpoint before it gives the slot back.
pub const ROUNDS_PER_TASK: usize = 20;
/// While messages are being sent, webhook delivery yields to them: one batch at a time
/// (all endpoints together), each followed by a pause of this many times its own duration
/// (so delivery takes about a tenth of the time it otherwise would), at most
/// [`MAX_PAUSE_WHILE_SENDING`]; fan-out is paced the same way. Full speed once sending stops.
pub const PAUSE_WHILE_SENDING: u32 = 9;
/// The pause on a store with one writer (SQLite): there every webhook write waits for, and
/// makes wait, the dispatcher's writes, so delivery takes about a fortieth of the time
/// while a campaign sends (BENCHMARKS.md, "With events flowing").
pub const PAUSE_WHILE_SENDING_ONE_WRITER: u32 = 39;
pub const MAX_PAUSE_WHILE_SENDING: Duration = Duration::from_secs(5);
/// Events fanned out per statement batch, and batches per tick.
const FAN_OUT_BATCH: i64 = 1_000;
const FAN_OUT_ROUNDS: usize = 20;

/// When attempt `attempts + 1` failed at `now`: the next attempt's time (schedule step with
/// ±20 % jitter, scaled down by `divisor`, never before `retry_after_ms`), or None when the
/// schedule is exhausted.
pub fn next_attempt_at(
    attempts_made: i64,
    now: i64,
    divisor: u64,
    retry_after_ms: Option<i64>,
    jitter: f64,
) -> Option<i64> {
    let index = usize::try_from(attempts_made.saturating_sub(1)).ok()?;
    let step = *RETRY_SCHEDULE_MS.get(index)?;
    let divisor = i64::try_from(divisor.max(1)).unwrap_or(i64::MAX);
    let jittered = (step as f64 * (1.0 + jitter.clamp(-0.2, 0.2))) as i64 / divisor;
    let delay = jittered.max(retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS));
    Some(now.saturating_add(delay))
}

/// `Retry-After` as milliseconds from `now`: delta-seconds or an HTTP date, bounded by
/// [`MAX_RETRY_AFTER_MS`]; None when absent or unreadable.
pub fn retry_after_ms(headers: &reqwest::header::HeaderMap, now: i64) -> Option<i64> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let ms = if let Ok(secs) = value.parse::<u64>() {
        i64::try_from(secs.min(86_400 * 365))
            .unwrap_or(i64::MAX)
            .saturating_mul(1000)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        let at_ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())?;
        at_ms.saturating_sub(now).max(0)
    };
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

/// Whether an answer's status asks to be retried no earlier than its `Retry-After`.
pub fn honours_retry_after(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// The delivery HTTP client: its own pool and limits, names resolved through the outbound
/// guard, IP literals checked before each request, redirects never followed (a 3xx is a
/// failed attempt).
pub fn delivery_client(guard: crate::outbound::OutboundGuard) -> Result<ProviderClient, String> {
    build_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT, guard)
}

/// The plaintext `whsec_…` secret from its sealed form: the one format
/// `store::webhook_endpoints` seals endpoint secrets in, under the endpoint's id.
pub fn open_secret(
    key: &SecretKey,
    endpoint_id: WebhookEndpointId,
    sealed: &str,
) -> Result<String, String> {
    crate::store::webhook_endpoints::open_signing_secret(key, endpoint_id, sealed)
        .map_err(|e| e.to_string())
}

/// The `webhook-signature` header: `v1,<sig>` with the endpoint's secret, followed by the
/// previous secret's entry (space-separated) while that one still signs.
pub fn signature_header(
    secrets: &[String],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let mut entries = Vec::with_capacity(secrets.len());
    for secret in secrets {
        entries.push(
            crate::signatures::sign_standard(secret, webhook_id, timestamp, body)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(entries.join(" "))
}

/// The endpoint's signing secrets at `now`: current first, then the previous one while
/// `previous_until` is in the future.
fn signing_secrets(
    ctx: &EngineContext,
    job: &DeliveryJob,
    now: i64,
) -> Result<Vec<String>, String> {
    let key = SecretKey::from_settings(ctx.settings.secret_key.as_deref())
        .map_err(|e| format!("secret_key: {e}"))?
        .ok_or_else(|| "secret_key is not set: endpoint secrets cannot be opened".to_string())?;
    let mut secrets = vec![open_secret(&key, job.endpoint_id, &job.secret)?];
    if let (Some(previous), Some(until)) = (&job.previous_secret, job.previous_until)
        && until > now
    {
        secrets.push(open_secret(&key, job.endpoint_id, previous)?);
    }
    Ok(secrets)
}

/// Sends one delivery and says what it means.
pub async fn attempt(
    client: &ProviderClient,
    job: &DeliveryJob,
    secrets: &[String],
    divisor: u64,
) -> AttemptRecord {
    let webhook_id = job.event.id.to_string();
    let body = job.event.payload(Some(job.seq)).to_string().into_bytes();
    let started = Instant::now();
    let at = crate::clock::now_ms();
    let timestamp = at.div_euclid(1000);
    let made = job.attempts + 1;
    let mut record = AttemptRecord {
        delivery_id: job.id,
        org_id: job.org_id,
        endpoint_id: job.endpoint_id,
        at,
        status_code: None,
        latency_ms: 0,
        response_excerpt: None,
        error: None,
        verdict: Verdict::GiveUp,
    };
    let retry = |retry_after: Option<i64>| match next_attempt_at(
        made,
        crate::clock::now_ms(),
        divisor,
        retry_after,
        rand::random_range(-0.2..=0.2),
    ) {
        Some(next_attempt_at) => Verdict::Retry { next_attempt_at },
        None => Verdict::GiveUp,
    };
    let signature = match signature_header(secrets, &webhook_id, timestamp, &body) {
        Ok(s) => s,
        Err(e) => {
            record.error = Some(format!("cannot sign: {e}"));
            record.verdict = retry(None);
            return record;
        }
    };
    let request = client
        .post(job.url.as_str())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body);
    let response = client.send(request).await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            record.status_code = Some(i64::from(status));
            match read_bounded(response, EXCERPT_BYTES).await {
                Ok((text, _)) if !text.is_empty() => record.response_excerpt = Some(text),
                Ok(_) => {}
                Err(e) => record.error = Some(format!("answer unreadable: {}", describe(&e))),
            }
            record.verdict = if (200..300).contains(&status) {
                Verdict::Delivered
            } else if status == 410 {
                Verdict::Gone
            } else if honours_retry_after(status) {
                retry(retry_after_ms(&headers, crate::clock::now_ms()))
            } else {
                retry(None)
            };
        }
        Err(Failure::Refused(refused)) => {
            record.error = Some(refused.to_string());
            record.verdict = retry(None);
        }
        Err(Failure::Transport(e)) => {
            record.error = Some(describe(&e));
            record.verdict = retry(None);
        }
    }
    record.latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    record
}

/// Fan-out paced while messages are being sent: a round, then no fan-out for
/// [`PAUSE_WHILE_SENDING`] times that round's duration (at most
/// [`MAX_PAUSE_WHILE_SENDING`]), so it takes about a tenth of the database's time while a
/// campaign sends (a fortieth on SQLite) and never stops; full speed once sending stops. `next` is when the next
/// round may run.
async fn fan_out_paced(ctx: &EngineContext, next: &mut Instant) {
    if !sending(ctx).await {
        fan_out_rounds(ctx, FAN_OUT_ROUNDS).await;
        return;
    }
    if Instant::now() < *next {
        return;
    }
    let started = Instant::now();
    fan_out_rounds(ctx, 1).await;
    *next = Instant::now()
        + started
            .elapsed()
            .saturating_mul(pause_while_sending(ctx))
            .min(MAX_PAUSE_WHILE_SENDING);
}

/// How many times a round's duration webhook work pauses while messages are sent.
fn pause_while_sending(ctx: &EngineContext) -> u32 {
    if ctx.store.dialect().one_writer() {
        PAUSE_WHILE_SENDING_ONE_WRITER
    } else {
        PAUSE_WHILE_SENDING
    }
}

/// Fans out what the outbox holds, at most `rounds` batches. Returns events fanned out.
async fn fan_out_rounds(ctx: &EngineContext, rounds: usize) -> u64 {
    let mut total = 0;
    for _ in 0..rounds {
        match ctx
            .store
            .fan_out_events(crate::clock::now_ms(), FAN_OUT_BATCH)
            .await
        {
            Ok(done) => {
                total += done.events;
                if done.deliveries > 0 {
                    tracing::debug!(
                        events = done.events,
                        deliveries = done.deliveries,
                        "events fanned out"
                    );
                }
                if done.events < FAN_OUT_BATCH as u64 {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "fan-out pass failed; will retry");
                break;
            }
        }
    }
    total
}

/// The delivery loop of one engine instance; returns once shutdown is requested and its
/// sends have finished (or the shutdown deadline passed: their claims are handed back).
pub async fn run(ctx: Arc<EngineContext>, shutdown: watch::Receiver<bool>) {
    let client = match ctx.settings.outbound_guard().and_then(delivery_client) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook delivery cannot start");
            return;
        }
    };
    let slots = usize::try_from(ctx.settings.webhook_concurrency)
        .unwrap_or(1)
        .max(1);
    let permits = Arc::new(Semaphore::new(slots));
    let busy: Arc<Mutex<HashSet<WebhookEndpointId>>> = Arc::default();
    let pace: Arc<tokio::sync::Mutex<()>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let stop = shutdown.clone();
    let mut ticker = Ticker::new(ctx.settings.idle_poll_ms.clamp(10, 1_000), shutdown);
    let mut next_fan_out = Instant::now();
    while ticker.next().await {
        while tasks.try_join_next().is_some() {}
        fan_out_paced(&ctx, &mut next_fan_out).await;
        let free = permits.available_permits();
        if free == 0 {
            continue;
        }
        let busy_now: Vec<WebhookEndpointId> = busy
            .lock()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        let now = crate::clock::now_ms();
        let jobs = match ctx
            .store
            .claim_webhook_deliveries(
                &ctx.instance.id,
                now,
                now.saturating_add(lease_ms(&ctx)),
                PER_ENDPOINT_BATCH.saturating_mul(free as i64),
                PER_ENDPOINT_BATCH,
                &busy_now,
                endpoint_hold_ms(&ctx),
            )
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "webhook claim failed; will retry");
                continue;
            }
        };
        let mut groups: Vec<Vec<DeliveryJob>> = Vec::new();
        for job in jobs {
            match groups.last_mut() {
                Some(g) if g[0].endpoint_id == job.endpoint_id => g.push(job),
                _ => groups.push(vec![job]),
            }
        }
        for group in groups {
            let endpoint_id = group[0].endpoint_id;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            if let Ok(mut b) = busy.lock() {
                b.insert(endpoint_id);
            }
            let ctx = ctx.clone();
            let client = client.clone();
            let busy = busy.clone();
            let shutdown = stop.clone();
            let pace = pace.clone();
            tasks.spawn(async move {
                serve_endpoint(&ctx, &client, group, &shutdown, &pace).await;
                if let Ok(mut b) = busy.lock() {
                    b.remove(&endpoint_id);
                }
                drop(permit);
            });
        }
    }
    let deadline = Duration::from_millis(ctx.settings.shutdown_deadline_ms);
    let _ = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    if let Err(e) = ctx.store.release_webhook_claims(&ctx.instance.id).await {
        tracing::warn!(error = %e, "could not hand back webhook claims; their lease will expire");
    }
}

/// Sends one endpoint's claimed deliveries batch after batch, then lets go of it: each
/// batch in sequence order, stopping at the first failure (the rest are handed back
/// unattempted, and the endpoint is held back, see [`endpoint_hold_ms`]) or when the
/// lease could run out before another attempt ends. A batch's attempts are recorded in
/// one transaction, which also claims the endpoint's next batch when this one was
/// delivered in full (at most [`ROUNDS_PER_TASK`] batches, so other endpoints get slots).
async fn serve_endpoint(
    ctx: &EngineContext,
    client: &ProviderClient,
    mut jobs: Vec<DeliveryJob>,
    shutdown: &watch::Receiver<bool>,
    pace: &tokio::sync::Mutex<()>,
) {
    let mut rounds = 1;
    let mut claimed_at = Instant::now();
    loop {
        let Some(endpoint_id) = jobs.first().map(|j| j.endpoint_id) else {
            return;
        };
        // While this instance sends messages, one batch at a time and then a pause.
        let gate = if sending(ctx).await {
            Some(pace.lock().await)
        } else {
            None
        };
        let started = Instant::now();
        let (records, release) = send_batch(ctx, client, &jobs, claimed_at).await;
        let delivered_all =
            release.is_empty() && records.iter().all(|r| r.verdict == Verdict::Delivered);
        let next = (delivered_all && rounds < ROUNDS_PER_TASK && !*shutdown.borrow()).then(|| {
            let now = crate::clock::now_ms();
            NextClaim {
                endpoint_id,
                now,
                lease_until: now.saturating_add(lease_ms(ctx)),
                limit: PER_ENDPOINT_BATCH,
                hold_ms: endpoint_hold_ms(ctx),
                after_seq: jobs.last().map(|j| j.seq).unwrap_or(0),
            }
        });
        let more = record(ctx, endpoint_id, &records, &release, next).await;
        claimed_at = Instant::now();
        if gate.is_some() {
            let pause = started
                .elapsed()
                .saturating_mul(pause_while_sending(ctx))
                .min(MAX_PAUSE_WHILE_SENDING);
            let mut stop = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
        drop(gate);
        match more {
            Some(more) if !more.is_empty() => {
                jobs = more;
                rounds += 1;
            }
            _ => return,
        }
    }
}

/// Whether messages are being sent: this instance's dispatcher has sends in flight, or a
/// campaign is sending (between two claims nothing may be in flight for a moment).
async fn sending(ctx: &EngineContext) -> bool {
    if ctx.in_flight.lock().map(|m| !m.is_empty()).unwrap_or(false) {
        return true;
    }
    ctx.store.any_campaign_sending().await.unwrap_or(false)
}

/// The lease a claim takes, in milliseconds.
fn lease_ms(ctx: &EngineContext) -> i64 {
    i64::try_from(ctx.settings.webhook_lease_ms).unwrap_or(i64::MAX)
}

/// How long an endpoint is held back after a failed attempt: none of its deliveries is
/// sent until then (the failed one waits for its own retry, which is never sooner), so a
/// down endpoint gets one attempt per hold, not one per pass. The schedule's first step
/// (5 s), divided like the schedule.
pub fn endpoint_hold_ms(ctx: &EngineContext) -> i64 {
    let divisor = i64::try_from(ctx.settings.webhook_retry_divisor.max(1)).unwrap_or(i64::MAX);
    RETRY_SCHEDULE_MS[0] / divisor
}

/// Sends `jobs` (one endpoint's, in sequence order, claimed at `claimed_at`) until the
/// first failure or until their lease could run out; returns the attempts and the
/// deliveries not attempted.
async fn send_batch(
    ctx: &EngineContext,
    client: &ProviderClient,
    jobs: &[DeliveryJob],
    claimed_at: Instant,
) -> (Vec<AttemptRecord>, Vec<DeliveryId>) {
    let started = claimed_at;
    let lease = Duration::from_millis(ctx.settings.webhook_lease_ms);
    let budget = lease.saturating_sub(REQUEST_TIMEOUT + Duration::from_secs(1));
    let mut records = Vec::with_capacity(jobs.len());
    let mut release = Vec::new();
    let mut secrets: Option<Result<Vec<String>, String>> = None;
    let mut stopped = false;
    for job in jobs {
        if stopped || started.elapsed() > budget {
            release.push(job.id);
            continue;
        }
        let keys = secrets.get_or_insert_with(|| signing_secrets(ctx, job, crate::clock::now_ms()));
        let record = match keys {
            Ok(keys) => attempt(client, job, keys, ctx.settings.webhook_retry_divisor).await,
            Err(e) => {
                let now = crate::clock::now_ms();
                AttemptRecord {
                    delivery_id: job.id,
                    org_id: job.org_id,
                    endpoint_id: job.endpoint_id,
                    at: now,
                    status_code: None,
                    latency_ms: 0,
                    response_excerpt: None,
                    error: Some(format!("cannot sign: {e}")),
                    verdict: match next_attempt_at(
                        job.attempts + 1,
                        now,
                        ctx.settings.webhook_retry_divisor,
                        None,
                        0.0,
                    ) {
                        Some(next_attempt_at) => Verdict::Retry { next_attempt_at },
                        None => Verdict::GiveUp,
                    },
                }
            }
        };
        let result = match &record.verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry { .. } => "retried",
            Verdict::GiveUp | Verdict::Gone => "failed",
        };
        metrics::counter!("herald_webhook_deliveries_total", "result" => result).increment(1);
        if record.verdict != Verdict::Delivered {
            tracing::info!(
                endpoint_id = %job.endpoint_id,
                event_id = %job.event.id,
                seq = job.seq,
                attempt = job.attempts + 1,
                status = record.status_code,
                error = record.error.as_deref(),
                result,
                "webhook delivery attempt failed"
            );
            stopped = true;
        }
        records.push(record);
    }
    (records, release)
}

/// Records a batch's attempts (and claims the endpoint's next batch when `next` says
/// so); returns the next batch, None when recording failed.
async fn record(
    ctx: &EngineContext,
    endpoint_id: WebhookEndpointId,
    records: &[AttemptRecord],
    release: &[DeliveryId],
    next: Option<NextClaim>,
) -> Option<Vec<DeliveryJob>> {
    // Recording must not be lost to a passing database error: the sends happened.
    for wait_ms in [0u64, 200, 1_000, 3_000] {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let next = next.map(|n| {
            // A retry claims as of now.
            let now = crate::clock::now_ms();
            NextClaim {
                now,
                lease_until: now.saturating_add(lease_ms(ctx)),
                ..n
            }
        });
        match ctx
            .store
            .record_webhook_attempts_and_claim(&ctx.instance.id, records, release, next)
            .await
        {
            Ok((recorded, jobs)) => {
                if recorded.lost > 0 {
                    tracing::warn!(
                        endpoint_id = %endpoint_id,
                        lost = recorded.lost,
                        "webhook deliveries were taken back by another instance while being sent; they may arrive twice"
                    );
                }
                for (endpoint_id, reason) in recorded.disabled {
                    metrics::counter!("herald_webhook_endpoints_disabled_total").increment(1);
                    tracing::warn!(
                        endpoint_id = %endpoint_id,
                        reason,
                        "webhook endpoint disabled"
                    );
                }
                return Some(jobs);
            }
            Err(e) => {
                tracing::warn!(
                    endpoint_id = %endpoint_id,
                    error = %e,
                    "could not record webhook attempts; retrying"
                );
            }
        }
    }
    tracing::warn!(
        endpoint_id = %endpoint_id,
        "webhook attempts not recorded; the deliveries will be sent again when their lease expires"
    );
    None
}

/// Rows one retention statement deletes, and statements per pass.
const EXPIRY_BATCH: i64 = 1_000;
const EXPIRY_BATCHES: usize = 20;

/// Deletes settled events older than `event_retention_days` and updates the pending gauge
/// (called by the reconciler).
pub async fn expire_events(ctx: &EngineContext, now: i64) -> Result<u64, crate::store::StoreError> {
    let days = i64::try_from(ctx.settings.event_retention_days).unwrap_or(i64::MAX);
    let before = now.saturating_sub(days.saturating_mul(24 * 3_600_000));
    let deleted = ctx
        .store
        .delete_settled_events_before(before, EXPIRY_BATCH, EXPIRY_BATCHES)
        .await?;
    if deleted > 0 {
        tracing::debug!(
            deleted,
            retention_days = days,
            "expired outbox events deleted"
        );
    }
    let pending = ctx.store.pending_webhook_deliveries().await?;
    metrics::gauge!("herald_webhook_deliveries_pending").set(pending as f64);
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_spec_s_with_bounded_jitter_and_ends_after_eight_attempts() {
        let now = 1_000_000;
        assert_eq!(next_attempt_at(1, now, 1, None, 0.0), Some(now + 5_000));
        assert_eq!(next_attempt_at(2, now, 1, None, 0.0), Some(now + 300_000));
        assert_eq!(
            next_attempt_at(7, now, 1, None, 0.0),
            Some(now + 36_000_000)
        );
        assert_eq!(next_attempt_at(8, now, 1, None, 0.0), None);
        assert_eq!(next_attempt_at(2, now, 1, None, 0.2), Some(now + 360_000));
        assert_eq!(next_attempt_at(2, now, 1, None, 0.9), Some(now + 360_000));
        assert_eq!(next_attempt_at(2, now, 1, None, -0.2), Some(now + 240_000));
        assert_eq!(next_attempt_at(2, now, 1000, None, 0.0), Some(now + 300));
        // Retry-After is a floor, bounded.
        assert_eq!(
            next_attempt_at(1, now, 1, Some(60_000), 0.0),
            Some(now + 60_000)
        );
        assert_eq!(
            next_attempt_at(1, now, 1, Some(i64::MAX), 0.0),
            Some(now + MAX_RETRY_AFTER_MS)
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after_ms(&h, 0), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after_ms(&h, 0), Some(7_000));
        h.insert(reqwest::header::RETRY_AFTER, "999999999".parse().unwrap());
        assert_eq!(retry_after_ms(&h, 0), Some(MAX_RETRY_AFTER_MS));
        // Thu, 01 Jan 1970 00:01:40 GMT = 100 s.
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Thu, 01 Jan 1970 00:01:40 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after_ms(&h, 40_000), Some(60_000));
        assert_eq!(retry_after_ms(&h, 400_000), Some(0));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after_ms(&h, 0), None);
        assert!(honours_retry_after(503) && !honours_retry_after(500));
    }

    #[test]
    fn both_keys_sign_during_rotation_matching_the_published_vectors() {
        let body = br#"{"type":"message.delivered","timestamp":"2026-11-28T10:00:00Z","data":{"message_id":"msg_01","campaign_id":"cmp_42","channel":"sms","status":"delivered"}}"#;
        let secrets = vec![
            "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_string(),
            "whsec_////////////////////////////////".to_string(),
        ];
        assert_eq!(
            signature_header(&secrets, "evt_0001", 1795860000, body).unwrap(),
            "v1,txFsCX1JTct07zEneeIQLdbbpBKrluunPZuhvlpOXOc= v1,RNxXGfTKx8cfNxynthof2vx7gIbCBKmbu/uF0ONkedk="
        );
    }
}
