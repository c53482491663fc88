//! Status-callback scheduling and delivery, shared by both fakes.
//!
//! A created message gets a lifecycle: a list of [`Step`]s (e.g. `sent`, then `delivered`).
//! When a step fires it updates the fake's store (monotonically; an out-of-order event
//! never moves a stored status backwards) and returns the signed request to deliver, or
//! `None` when the message has no callback URL. Timing follows the knobs:
//!
//! * `in-order`: one task per message; each step `--callback-delay-ms` after the previous
//!   step was delivered, so a message's `sent` always lands before its final status.
//! * `shuffled`: every step is an independent task at a random time in
//!   `0..=2 × max(delay, 20 ms)`, so order is random across messages and a final status
//!   can land before `sent`.
//! * `--duplicate-callbacks`: each delivery is made twice with identical bytes (the second
//!   copy right after the first in-order, at its own random time when shuffled).
//!
//! At most `--callback-concurrency` deliveries are in flight at once. A delivery attempt
//! fails on a connection error, a timeout or any non-2xx (redirects are not followed). It
//! is retried `--callback-retries` times with doubling backoff, then dropped and counted
//! in `callbacks_failed`. Work scheduled before `/_fake/reset` is abandoned silently.

use crate::common::{Order, Shared};
use axum::http::header::CONTENT_TYPE;
use rand::Rng as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::sleep;

/// One signed HTTP POST to make.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub url: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// A lifecycle step: applies the status change and builds the callback, if any.
pub type Step = Box<dyn FnOnce() -> Option<Outbound> + Send + 'static>;

pub fn schedule(shared: &Arc<Shared>, steps: Vec<Step>) {
    if steps.is_empty() {
        return;
    }
    let generation = shared.generation();
    let copies: u64 = if shared.knobs.duplicate_callbacks {
        2
    } else {
        1
    };
    let events = steps.len() as u64 * copies;
    shared.count_in(generation, |c| c.callbacks_pending += events);
    let delay = Duration::from_millis(shared.knobs.callback_delay_ms);
    match shared.knobs.callback_order {
        Order::InOrder => {
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                for step in steps {
                    sleep(delay).await;
                    if shared.generation() != generation {
                        return;
                    }
                    let out = step();
                    for _ in 0..copies {
                        if let Some(out) = &out {
                            deliver(&shared, generation, out).await;
                        }
                        settle(&shared, generation);
                    }
                }
            });
        }
        Order::Shuffled => {
            let window = u64::try_from(delay.max(Duration::from_millis(20)).as_millis() * 2)
                .unwrap_or(u64::MAX);
            for step in steps {
                let (a, b) = {
                    let mut rng = rand::rng();
                    let x = rng.random_range(0..=window);
                    let y = rng.random_range(0..=window);
                    (x.min(y), x.max(y))
                };
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    sleep(Duration::from_millis(a)).await;
                    if shared.generation() != generation {
                        return;
                    }
                    let out = step();
                    if let Some(out) = &out {
                        deliver(&shared, generation, out).await;
                    }
                    settle(&shared, generation);
                    if copies == 2 {
                        sleep(Duration::from_millis(b - a)).await;
                        if let Some(out) = &out {
                            deliver(&shared, generation, out).await;
                        }
                        settle(&shared, generation);
                    }
                });
            }
        }
    }
}

fn settle(shared: &Shared, generation: u64) {
    shared.count_in(generation, |c| {
        c.callbacks_pending = c.callbacks_pending.saturating_sub(1);
    });
}

async fn deliver(shared: &Shared, generation: u64, out: &Outbound) {
    let attempts = shared.knobs.callback_retries.saturating_add(1);
    for attempt in 0..attempts {
        if shared.generation() != generation {
            return;
        }
        // Never closed, so `acquire` only fails if it were; then deliver unthrottled.
        let permit = shared.callback_slots.acquire().await.ok();
        let mut req = shared
            .client
            .post(&out.url)
            .header(CONTENT_TYPE, out.content_type)
            .body(out.body.clone());
        for (name, value) in &out.headers {
            req = req.header(*name, value);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                // Read the body so the connection can be reused.
                let _ = resp.bytes().await;
                shared.count_in(generation, |c| c.callbacks_sent += 1);
                return;
            }
            Ok(resp) => {
                tracing::debug!(url = %out.url, status = %resp.status(), attempt, "callback refused");
            }
            Err(e) => {
                tracing::debug!(url = %out.url, error = %e, attempt, "callback failed");
            }
        }
        // Release the slot before any backoff sleep.
        drop(permit);
        if attempt + 1 < attempts {
            shared.count_in(generation, |c| c.callbacks_retried += 1);
            let backoff = shared
                .knobs
                .callback_retry_ms
                .saturating_mul(1 << attempt.min(10));
            sleep(Duration::from_millis(backoff)).await;
        }
    }
    tracing::info!(url = %out.url, "callback dropped after retries");
    shared.count_in(generation, |c| c.callbacks_failed += 1);
}
