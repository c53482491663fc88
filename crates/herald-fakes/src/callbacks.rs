//! Status-callback scheduling and delivery, shared by both fakes.
//!
//! A created message gets a lifecycle: a list of [`Step`]s (e.g. `sent`, then `delivered`).
//! When a step fires it updates the fake's store (monotonically; an out-of-order event
//! never moves a stored status backwards) and returns the signed request to deliver, or
//! `None` when the message has no callback URL. Timing follows the knobs:
//!
//! * `in-order`: each step `--callback-delay-ms` after the previous step was delivered, so
//!   a message's `sent` always lands before its final status. Every step is due a fixed
//!   delay after it was queued, so one queue in due order (the [`Timeline`]) and one task
//!   serve all messages; a step with a callback to deliver gets a task of its own, which
//!   queues the next step once the delivery is done.
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

use crate::common::{Order, Shared, lock};
use axum::http::header::CONTENT_TYPE;
use rand::Rng as _;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until};

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
            shared.timeline.push(
                shared,
                Lifecycle {
                    generation,
                    copies,
                    steps: steps.into(),
                },
                delay,
            );
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

/// The steps of one message still to fire, in order.
struct Lifecycle {
    generation: u64,
    copies: u64,
    steps: VecDeque<Step>,
}

/// In-order lifecycles waiting for their next step, oldest first. Each entry is due a
/// fixed delay after it was queued, and is queued under the lock, so the queue is in due
/// order and its front is always the next to fire.
#[derive(Default)]
pub struct Timeline {
    queue: Mutex<VecDeque<(Instant, Lifecycle)>>,
    wake: Arc<Notify>,
    running: AtomicBool,
}

impl Timeline {
    fn push(&self, shared: &Arc<Shared>, lifecycle: Lifecycle, delay: Duration) {
        let was_empty = {
            let mut queue = lock(&self.queue);
            let was_empty = queue.is_empty();
            queue.push_back((Instant::now() + delay, lifecycle));
            was_empty
        };
        if !self.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(run_timeline(Arc::downgrade(shared), delay));
        }
        if was_empty {
            // Stores a permit if the task is not waiting yet, so no push is missed.
            self.wake.notify_one();
        }
    }
}

/// Fires in-order steps as they fall due, until the fake it serves is dropped (a test's
/// in-process fake): it holds the fake only while it has a step to fire.
async fn run_timeline(fake: Weak<Shared>, delay: Duration) {
    loop {
        let Some(shared) = fake.upgrade() else {
            return;
        };
        let timeline = &shared.timeline;
        let next = {
            let mut queue = lock(&timeline.queue);
            match queue.front() {
                None => None,
                Some((due, _)) if *due > Instant::now() => Some(Err(*due)),
                Some(_) => queue.pop_front().map(Ok),
            }
        };
        let mut lifecycle = match next {
            None => {
                let wake = Arc::clone(&timeline.wake);
                drop(shared);
                // Looks again now and then, to end once the fake is gone.
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
                continue;
            }
            Some(Err(due)) => {
                drop(shared);
                sleep_until(due).await;
                continue;
            }
            Some(Ok((_, lifecycle))) => lifecycle,
        };
        if shared.generation() != lifecycle.generation {
            continue;
        }
        let Some(step) = lifecycle.steps.pop_front() else {
            continue;
        };
        match step() {
            Some(out) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    for _ in 0..lifecycle.copies {
                        deliver(&shared, lifecycle.generation, &out).await;
                        settle(&shared, lifecycle.generation);
                    }
                    if !lifecycle.steps.is_empty() {
                        shared.timeline.push(&shared, lifecycle, delay);
                    }
                });
            }
            None => {
                for _ in 0..lifecycle.copies {
                    settle(&shared, lifecycle.generation);
                }
                if !lifecycle.steps.is_empty() {
                    timeline.push(&shared, lifecycle, delay);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::Knobs;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        knobs: Knobs,
    }

    fn shared(delay_ms: &str) -> Arc<Shared> {
        let knobs = Command::try_parse_from(["fake", "--callback-delay-ms", delay_ms])
            .map(|c| c.knobs)
            .unwrap_or_else(|e| panic!("the test's knobs parse: {e}"));
        Arc::new(Shared::new(knobs).unwrap_or_else(|e| panic!("the fake starts: {e}")))
    }

    /// A step that records `(message, step)` when it fires.
    fn step(fired: &Arc<Mutex<Vec<(usize, usize)>>>, message: usize, n: usize) -> Step {
        let fired = Arc::clone(fired);
        Box::new(move || {
            lock(&fired).push((message, n));
            None
        })
    }

    async fn wait_for(fired: &Arc<Mutex<Vec<(usize, usize)>>>, count: usize) {
        for _ in 0..500 {
            if lock(fired).len() >= count {
                return;
            }
            sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn in_order_steps_fire_once_each_in_each_messages_order() {
        let shared = shared("3");
        let fired = Arc::new(Mutex::new(Vec::new()));
        for message in 0..50 {
            schedule(&shared, (0..3).map(|n| step(&fired, message, n)).collect());
        }
        wait_for(&fired, 150).await;
        let fired = lock(&fired).clone();
        assert_eq!(fired.len(), 150, "every step fires once: {fired:?}");
        for message in 0..50 {
            let steps: Vec<usize> = fired
                .iter()
                .filter(|(m, _)| *m == message)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(steps, vec![0, 1, 2], "message {message}'s steps in order");
        }
        // Every step is pending until it fired, and none is once all have.
        assert_eq!(shared.stats_json(false)["callbacks_pending"], 0);
    }

    #[tokio::test]
    async fn a_reset_abandons_the_steps_not_yet_fired() {
        let shared = shared("30");
        let fired = Arc::new(Mutex::new(Vec::new()));
        schedule(&shared, (0..3).map(|n| step(&fired, 0, n)).collect());
        shared.reset();
        schedule(&shared, vec![step(&fired, 1, 0)]);
        wait_for(&fired, 1).await;
        // Long enough for the abandoned message's three steps, had they been kept.
        sleep(Duration::from_millis(150)).await;
        assert_eq!(*lock(&fired), vec![(1, 0)]);
    }
}
