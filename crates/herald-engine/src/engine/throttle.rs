//! Per-channel rate limits held across every instance sharing the database.
//!
//! The bucket lives in the database (`Store::take_tokens`); each instance takes tokens in
//! small grants (about 50 ms of the channel's rate) and spends them locally, so the total
//! granted to all instances never exceeds the rate plus one burst, and the total sent in
//! any second never exceeds that plus the one grant each instance may still hold, at the
//! cost of a database round trip per grant rather than per message. A provider's rate-limit answer halves the
//! channel's rate for everyone and pauses it until its Retry-After.

use crate::ids::ChannelId;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The bucket holds at most this many seconds of the rate (at least one token).
const BURST_SECONDS: f64 = 0.1;
/// One grant is about this many seconds of the rate.
const GRANT_SECONDS: f64 = 0.05;

pub fn burst(rate: f64) -> f64 {
    (rate * BURST_SECONDS).max(1.0)
}

/// The tokens one grant takes from the shared bucket (at least one).
pub fn grant(rate: f64) -> f64 {
    (rate * GRANT_SECONDS).max(1.0)
}

#[derive(Clone)]
pub struct Throttle {
    store: Store,
    local: Arc<Mutex<HashMap<ChannelId, Arc<tokio::sync::Mutex<f64>>>>>,
}

/// Shutdown was requested, or the message stopped being wanted, while waiting for tokens:
/// the message was not sent.
#[derive(Debug)]
pub struct Stopped;

impl Throttle {
    pub fn new(store: Store) -> Throttle {
        Throttle {
            store,
            local: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn bucket(&self, channel_id: ChannelId) -> Arc<tokio::sync::Mutex<f64>> {
        match self.local.lock() {
            Ok(mut map) => map.entry(channel_id).or_default().clone(),
            // A poisoned map only loses locally held tokens; the shared bucket is intact.
            Err(_) => Arc::new(tokio::sync::Mutex::new(0.0)),
        }
    }

    /// Waits until `cost` tokens (SMS segments, or 1 per message) of the channel's rate
    /// are this instance's to spend. No rate: returns at once. Gives up, spending nothing,
    /// once `wanted` says the message is no longer to be sent (its campaign was paused or
    /// cancelled): up to `concurrency` messages can queue here behind a slow rate, and a
    /// pause must not wait for them to trickle out at that rate.
    pub async fn acquire(
        &self,
        channel_id: ChannelId,
        rate: Option<f64>,
        cost: f64,
        shutdown: &watch::Receiver<bool>,
        wanted: impl Fn() -> bool,
    ) -> Result<(), Stopped> {
        let Some(rate) = rate.filter(|r| *r > 0.0) else {
            return Ok(());
        };
        let bucket = self.bucket(channel_id);
        let mut tokens = bucket.lock().await;
        let mut shutdown = shutdown.clone();
        loop {
            if !wanted() {
                return Err(Stopped);
            }
            if *tokens >= cost {
                *tokens -= cost;
                return Ok(());
            }
            if *shutdown.borrow() {
                return Err(Stopped);
            }
            let want = (cost - *tokens).max(grant(rate));
            let wait = match self
                .store
                .take_tokens(channel_id, rate, burst(rate), want, crate::clock::now_ms())
                .await
            {
                Ok(grant) => {
                    *tokens += grant.granted;
                    if *tokens >= cost {
                        continue;
                    }
                    Duration::from_millis(grant.wait_ms.clamp(1, 1000) as u64)
                }
                Err(e) => {
                    tracing::warn!(channel_id = %channel_id, error = %e, "rate limiter cannot reach the database; waiting");
                    Duration::from_millis(200)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// The provider answered "too many requests".
    pub async fn penalize(&self, channel_id: ChannelId, retry_after: Duration) {
        let ms = i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = self
            .store
            .penalize_rate(channel_id, ms, crate::clock::now_ms())
            .await
        {
            tracing::warn!(channel_id = %channel_id, error = %e, "could not record the provider's rate limit");
        } else {
            tracing::info!(
                channel_id = %channel_id,
                retry_after_ms = ms,
                "provider rate limit: channel slowed for all instances"
            );
        }
        if let Ok(map) = self.local.lock()
            && let Some(bucket) = map.get(&channel_id)
            && let Ok(mut tokens) = bucket.try_lock()
        {
            // Tokens held locally were granted at the old rate.
            *tokens = 0.0;
        }
    }
}
