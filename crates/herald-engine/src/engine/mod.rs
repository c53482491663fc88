//! The engine every `herald serve` and `herald worker` runs: heartbeat, dispatcher,
//! scheduler and reconciler. Each loop is idempotent and keeps no state that matters in
//! memory (docs/DESIGN.md invariant 5), so any number of instances can run side by side and any
//! of them can die.

pub mod alerts;
pub mod dispatcher;
pub mod health;
pub mod outage;
pub mod reconciler;
pub mod retry;
pub mod throttle;
pub mod webhooks_out;

use crate::channels::ChannelRegistry;
use crate::config::Settings;
use crate::store::{InstanceInfo, Receipt, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Who this process is, as recorded in `instances`.
pub fn instance_identity(role: &str) -> InstanceInfo {
    let pid = std::process::id();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".to_string());
    InstanceInfo {
        id: format!("{host}-{pid}-{:08x}", rand::random::<u32>()),
        host,
        pid: i64::from(pid),
        proc_start: process_start_time(pid),
        version: env!("CARGO_PKG_VERSION").to_string(),
        role: role.to_string(),
        started_at: crate::clock::now_ms(),
    }
}

/// Identifies a process for as long as it lives: the machine's boot id, its PID namespace
/// and field 22 of /proc/PID/stat (start time in clock ticks since boot). The boot id tells
/// machines apart even when they share a host name (cloned VMs); the namespace tells
/// containers apart; the start time tells a reused pid from the process that had it.
pub fn process_start_time(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{}/{}/{start}", boot.trim(), ns.display()))
}

/// The machine-and-namespace part of a `process_start_time` value: two processes can be
/// compared by pid only when this part is equal.
pub fn pid_namespace(proc_start: &str) -> &str {
    proc_start.rsplit_once('/').map(|(ns, _)| ns).unwrap_or("")
}

/// Shared by the engine's loops.
pub struct EngineContext {
    pub store: Store,
    pub settings: Settings,
    pub instance: InstanceInfo,
    pub channels: ChannelRegistry,
    /// Since when this instance's heartbeats have succeeded without a gap (0: not yet).
    /// Another instance's silence proves nothing while this one could not reach the
    /// database either: after an outage every heartbeat is old.
    pub db_healthy_since: std::sync::atomic::AtomicI64,
    /// Messages this process knows it has in flight (claimed, outcome not yet durable).
    /// A claim whose commit succeeded but whose answer was lost (the database restarted at
    /// that moment) leaves rows owned by this instance that no sender knows about; the
    /// reconciler finds them by comparing with this set and hands them back.
    pub in_flight: std::sync::Mutex<std::collections::HashSet<crate::ids::MessageId>>,
    /// Campaigns the last group commits found not sending (paused, cancelled, completed):
    /// their messages claimed ahead and still waiting for a send slot are handed back
    /// unsent. A campaign leaves the set when a claim of it succeeds again.
    pub not_sending: std::sync::Mutex<std::collections::HashSet<crate::ids::CampaignId>>,
    pub throttle: throttle::Throttle,
    /// Consecutive provider-side send failures per channel seen by this instance: the
    /// evidence that marks a channel unavailable (the mark itself is in the database).
    pub outages: outage::Tracker,
    /// The clock send windows read recipients' local time from: the system's, or one a
    /// test sets.
    pub window_clock: WindowClock,
    /// The send slots' time at the provider (`herald bench`'s `send_slots_busy`).
    pub slot_use: dispatcher::SlotUse,
}

/// The time send windows judge by: the system clock plus an offset that only tests move
/// (`Engine::with_window_clock`), so a test can see a held message sent when its window
/// opens without waiting for the hour.
#[derive(Debug, Clone, Default)]
pub struct WindowClock {
    offset_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl WindowClock {
    pub fn now_ms(&self) -> i64 {
        crate::clock::now_ms() + self.offset_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes `now_ms` read `at` from now on (as it moves with the system clock).
    pub fn set(&self, at: i64) {
        self.offset_ms.store(
            at - crate::clock::now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

pub struct Engine {
    ctx: Arc<EngineContext>,
    receipts_rx: mpsc::Receiver<Receipt>,
}

impl Engine {
    pub fn new(store: Store, settings: Settings, role: &str) -> Engine {
        let (receipts_tx, receipts_rx) = mpsc::channel(10_000);
        let channels = ChannelRegistry::new(
            store.clone(),
            Some(receipts_tx),
            crate::channels::BuildContext::from_settings(&settings),
        );
        Engine {
            ctx: Arc::new(EngineContext {
                settings,
                instance: instance_identity(role),
                channels,
                db_healthy_since: std::sync::atomic::AtomicI64::new(0),
                in_flight: std::sync::Mutex::new(std::collections::HashSet::new()),
                not_sending: std::sync::Mutex::new(std::collections::HashSet::new()),
                throttle: throttle::Throttle::new(store.clone()),
                outages: outage::Tracker::default(),
                window_clock: WindowClock::default(),
                slot_use: dispatcher::SlotUse::default(),
                store,
            }),
            receipts_rx,
        }
    }

    /// The engine with send windows judged by `clock` (tests).
    pub fn with_window_clock(self, clock: WindowClock) -> Engine {
        let mut engine = self;
        if let Some(ctx) = Arc::get_mut(&mut engine.ctx) {
            ctx.window_clock = clock;
        }
        engine
    }

    pub fn instance_id(&self) -> &str {
        &self.ctx.instance.id
    }

    pub fn context(&self) -> Arc<EngineContext> {
        self.ctx.clone()
    }

    /// Runs until `shutdown` turns true, then stops claiming, lets in-flight sends finish
    /// within the deadline, hands back unsent claims, and deregisters.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let ctx = self.ctx;
        retry_forever("register instance", &shutdown, || {
            ctx.store.register_instance(&ctx.instance)
        })
        .await?;
        tracing::info!(instance = %ctx.instance.id, role = %ctx.instance.role, "engine started");

        let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone(), shutdown.clone()));
        let scheduler = tokio::spawn(reconciler::scheduler_loop(ctx.clone(), shutdown.clone()));
        let reconciler = tokio::spawn(reconciler::reconciler_loop(ctx.clone(), shutdown.clone()));
        let receipts = tokio::spawn(receipt_loop(ctx.clone(), self.receipts_rx));
        let probes = tokio::spawn(outage::probe_loop(ctx.clone(), shutdown.clone()));
        let webhooks = tokio::spawn(webhooks_out::run(ctx.clone(), shutdown.clone()));
        let alerts = tokio::spawn(alerts::run(ctx.clone(), shutdown.clone()));
        // Other instances' starts and resumes wake this dispatcher (PostgreSQL); on SQLite
        // this returns at once and the in-process signal is all there is.
        let store = ctx.store.clone();
        let listener = tokio::spawn(async move { store.listen_for_work().await });
        let dispatcher = dispatcher::run(ctx.clone(), shutdown.clone()).await;
        listener.abort();
        if let Err(e) = dispatcher {
            tracing::error!(error = %e, "dispatcher stopped with an error");
        }
        let _ = scheduler.await;
        let _ = reconciler.await;
        let _ = probes.await;
        let _ = webhooks.await;
        let _ = alerts.await;
        // The dispatcher has stopped: a row this instance owns that no sender knows about
        // (a claim whose answer was lost) was never sent; hand it back now rather than
        // leave it to be found in doubt.
        let now = crate::clock::now_ms();
        if let Err(e) = reconciler::release_claims_unknown_before(&ctx, now, i64::MAX).await {
            tracing::warn!(error = %e, "could not hand back unknown claims at shutdown; they will be found in doubt");
        }
        let _ = heartbeat.await;
        receipts.abort();
        // Deregistering tells the others at once that whatever this instance still has in
        // flight (sends that outlived the deadline) is in doubt.
        if let Err(e) = ctx
            .store
            .stop_instance(&ctx.instance.id, crate::clock::now_ms())
            .await
        {
            tracing::warn!(error = %e, "could not deregister instance; its heartbeat will go stale instead");
        }
        tracing::info!(instance = %ctx.instance.id, "engine stopped");
        Ok(())
    }
}

/// The clock of a periodic loop that ends when shutdown is requested.
pub(crate) struct Ticker {
    interval: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
}

impl Ticker {
    pub(crate) fn new(period_ms: u64, shutdown: watch::Receiver<bool>) -> Ticker {
        let mut interval = tokio::time::interval(Duration::from_millis(period_ms.max(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker { interval, shutdown }
    }

    /// Waits for the next tick; false once shutdown is requested.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => {}
            _ = self.shutdown.changed() => {}
        }
        !*self.shutdown.borrow()
    }
}

async fn heartbeat_loop(ctx: Arc<EngineContext>, shutdown: watch::Receiver<bool>) {
    use std::sync::atomic::Ordering;
    let mut ticker = Ticker::new(ctx.settings.heartbeat_interval_ms, shutdown);
    // Heartbeats count as continuous only while they complete this often; a longer gap
    // (the call blocked through an outage) starts the healthy window again.
    let max_gap = (ctx.settings.heartbeat_interval_ms as i64 * 2).max(1_000);
    let mut last_ok = 0i64;
    while ticker.next().await {
        // Reach the database first, then read the clock: a call that waited through an
        // outage must not write a time from inside it.
        let result = match ctx.store.ping().await {
            Ok(()) => {
                let now = crate::clock::now_ms();
                ctx.store
                    .heartbeat(&ctx.instance.id, now)
                    .await
                    .map(|a| (a, now))
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((alive, now)) => {
                let done = crate::clock::now_ms();
                if last_ok == 0 || done - last_ok > max_gap {
                    ctx.db_healthy_since.store(done, Ordering::SeqCst);
                }
                last_ok = done;
                if !alive {
                    // Another instance took this one for dead (its work was handed on as in
                    // doubt; late outcomes for it are refused). Register again, so this
                    // instance's new claims are protected by its heartbeat.
                    tracing::warn!(instance = %ctx.instance.id, "heartbeat found this instance deregistered; registering again");
                    if let Err(e) = ctx.store.revive_instance(&ctx.instance.id, now).await {
                        tracing::warn!(error = %e, "could not register again");
                    }
                }
            }
            Err(e) => {
                ctx.db_healthy_since.store(0, Ordering::SeqCst);
                last_ok = 0;
                tracing::warn!(error = %e, "heartbeat failed; will retry");
            }
        }
    }
}

/// Applies provider receipts (the sandbox's simulated ones) in groups.
async fn receipt_loop(ctx: Arc<EngineContext>, mut rx: mpsc::Receiver<Receipt>) {
    let mut batch = Vec::new();
    while let Some(r) = rx.recv().await {
        batch.push(r);
        while batch.len() < 500 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        loop {
            match ctx
                .store
                .apply_receipts(&batch, crate::clock::now_ms())
                .await
            {
                Ok(report) => {
                    tracing::debug!(
                        applied = report.applied,
                        kept = report.kept,
                        ignored = report.ignored,
                        "receipts applied"
                    );
                    break;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "receipts not applied yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, count = batch.len(), "receipts could not be applied");
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// Retries a store operation while its errors are transient (database restarting, busy),
/// until it succeeds or shutdown is requested.
pub async fn retry_forever<T, F, Fut>(
    what: &str,
    shutdown: &watch::Receiver<bool>,
    mut op: F,
) -> Result<T, crate::store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                tracing::warn!(error = %e, what, "database unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}
