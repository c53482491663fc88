//! Deterministic simulation of the engine's decisions against the REAL store (SQLite and
//! PostgreSQL) under a VIRTUAL clock.
//!
//! Every store call takes `now` as a parameter, so a seeded random schedule can drive
//! claims, sends, group commits, heartbeats, leases, the reconciler, pause/resume/cancel,
//! receipts and graceful stops of a few simulated instances, and inject crashes between any
//! two of them (including between "the provider accepted" and "the outcome is recorded"),
//! stalls (a paused process whose heartbeat goes stale and which later comes back), send
//! timeouts, and claims whose commit answer is lost. A simulated provider ledger records every
//! message the provider accepted, duplicates included; receipts (duplicated, out of order,
//! early, for unknown ids, `sent` ones too) are fed back. DESIGN.md's invariants are checked
//! after every step, and every store decision is checked against what it must have done
//! (exact claim sets, exact in-doubt sets, outcome counts, receipt folding). Each run is then
//! driven to completion with faults off and checked for loss, duplicates beyond the in-doubt
//! bound, and exactly one closing event.
//!
//! A failure prints the store, the seed and the last steps. Replay one seed with
//! `HERALD_SIM_SEED=<seed>`; run more seeds with `HERALD_SIM_SEEDS=<count>` (and longer runs
//! with `HERALD_SIM_STEPS=<steps>`).

use crate::support::{Backend, TestDb, sandbox_channel, seed_list};
use herald::address::Address;
use herald::domain::{CampaignAction, CampaignStatus, Counts, MessageStatus};
use herald::engine::retry::RetryPolicy;
use herald::ids::{CampaignId, ChannelId, ListId, MessageId, OrgId};
use herald::store::{
    Campaign, ClaimedMessage, ContactInput, InstanceInfo, MessageInfo, NewCampaign, Outcome,
    OutcomeKind, Receipt, StartOutcome, Store, StoreError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::AnyPool;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use MessageStatus::{
    Cancelled, Delivered, Failed, InDoubt, InFlight, Queued, Read, RetryWait, Sent, Skipped,
    Undelivered,
};

/// Virtual time of every run's start (ms since the epoch).
const EPOCH: i64 = 1_700_000_000_000;
/// `instance_stale_after_ms`: a heartbeat older than this makes an owner dead.
const STALE: i64 = 10_000;
/// Virtual time only moves in slices of at most SLICE, and a live instance heartbeats once its
/// last heartbeat is HEARTBEAT_AFTER old: a live instance's heartbeat is always younger than
/// STALE / 2.
const SLICE: i64 = STALE / 8;
const HEARTBEAT_AFTER: i64 = STALE * 3 / 8;
/// At most this many instances are alive or stalled at once.
const MAX_INSTANCES: usize = 3;
const LOG_LINES: usize = 30;
/// Iterations of the fault-free drive to completion before the run counts as stuck.
const DRIVE_BUDGET: usize = 300;

const SQLITE_SEEDS: u64 = 200;
const SQLITE_STEPS: usize = 200;
/// PostgreSQL runs other seeds than SQLite, for coverage; any seed replays on both.
const POSTGRES_SEED_BASE: u64 = 1_000_000;
const POSTGRES_SEEDS: u64 = 60;
const POSTGRES_STEPS: usize = 200;

/// Weight of `sent` receipts among the others (Twilio and WhatsApp status callbacks map
/// `sent` to one, ahead of `delivered`).
const SENT_RECEIPT_WEIGHT: u32 = 1;

type Res<T = ()> = Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn se<T>(r: Result<T, StoreError>, what: &str) -> Res<T> {
    r.map_err(|e| format!("{what} failed: {e}"))
}

fn pick_weighted(rng: &mut StdRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut roll = rng.random_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if roll < *w {
            return i;
        }
        roll -= w;
    }
    weights.len() - 1
}

/// The status a message with a recorded provider id must have after the receipts received
/// for that id, in arrival order: each moves it only to a strictly higher rank.
fn fold_receipts(receipts: Option<&Vec<MessageStatus>>) -> MessageStatus {
    let mut cur = Sent;
    for r in receipts.into_iter().flatten() {
        if let (Some(a), Some(b)) = (cur.receipt_rank(), r.receipt_rank())
            && b > a
        {
            cur = *r;
        }
    }
    cur
}

/// The message lifecycle of DESIGN.md, as the moves one step may make.
fn transition_ok(prev: &MessageInfo, next: &MessageInfo) -> bool {
    let (a, b) = (prev.status, next.status);
    if a == b {
        return true;
    }
    let up = || matches!((a.receipt_rank(), b.receipt_rank()), (Some(x), Some(y)) if y > x);
    match a {
        Queued | RetryWait => matches!(b, InFlight | Cancelled),
        // Sent (and kept receipts applied in the same commit), retry, failed, released,
        // in doubt, or cancelled (a retry or release of a cancelled campaign). Never skipped:
        // the simulation suppresses no address after the start.
        InFlight => b != Skipped,
        InDoubt => matches!(b, Queued | Failed | Cancelled),
        Sent | Delivered | Undelivered | Read => up(),
        // Only a receipt's failure (the message has a provider id) can still rank up.
        Failed => prev.provider_id.is_some() && up(),
        Skipped | Cancelled => false,
    }
}

// ------------------------------------------------------------------------------------------
// The fixture: one database per store, shared by every seed
// ------------------------------------------------------------------------------------------

struct ListShape {
    id: ListId,
    queued: i64,
    skipped: i64,
}

struct Fixture {
    store: Store,
    raw: AnyPool,
    /// Keeps the database alive (and drops the PostgreSQL one at the end).
    _keep: (Option<TestDb>, Option<tempfile::TempDir>),
    org: OrgId,
    channel: ChannelId,
    lists: Vec<ListShape>,
}

/// The SQLite store lives on a tmpfs when there is one: `synchronous = FULL` would otherwise
/// spend most of the run in fsync, and durability is not what this simulation tests.
async fn sqlite_on_tmpfs() -> Option<(Store, String, tempfile::TempDir)> {
    let shm = std::path::Path::new("/dev/shm");
    let dir = tempfile::Builder::new()
        .prefix("herald-sim-")
        .tempdir_in(shm)
        .ok()?;
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let store = Store::connect(&url).await.ok()?;
    store.migrate().await.ok()?;
    Some((store, url, dir))
}

async fn fixture(backend: Backend) -> Fixture {
    let (store, url, keep) = match backend {
        Backend::Sqlite => match sqlite_on_tmpfs().await {
            Some((store, url, dir)) => (store, url, (None, Some(dir))),
            None => {
                let db = TestDb::new(backend).await;
                (db.store.clone(), db.url.clone(), (Some(db), None))
            }
        },
        Backend::Postgres => {
            let db = TestDb::new(backend).await;
            (db.store.clone(), db.url.clone(), (Some(db), None))
        }
    };
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("raw connection to {url} failed: {e}"));
    let store = &store;
    let channel = sandbox_channel(store, "sim-sandbox").await;
    let mut lists = Vec::new();
    let mut org = OrgId(0);
    for n in [0i64, 1, 2, 3, 5, 8, 13, 21, 34] {
        let (o, list) = seed_list(store, n).await;
        org = o;
        lists.push(ListShape {
            id: list,
            queued: n,
            skipped: 0,
        });
    }
    // A list with an unsubscribed pair, a suppressed address and a duplicated row: ten
    // distinct addresses, three of them skipped at start.
    let list = store
        .ensure_list(org, "sim-mixed")
        .await
        .expect("ensure_list");
    let mut contacts: Vec<ContactInput> = (0..10)
        .map(|i| ContactInput {
            address: Address::parse(&format!("+1310000{i:04}")).unwrap(),
            name: Some(format!("Mixed {i}")),
            attributes: serde_json::Map::new(),
            unsubscribed: Some(i < 2),
        })
        .collect();
    contacts.push(contacts[5].clone());
    store
        .upsert_contacts(org, list, &contacts)
        .await
        .expect("upsert_contacts");
    store
        .suppress(
            org,
            "+13100000002",
            "complained",
            &herald::store::OptSource::API,
        )
        .await
        .expect("suppress");
    lists.push(ListShape {
        id: list,
        queued: 7,
        skipped: 3,
    });
    Fixture {
        store: store.clone(),
        raw,
        _keep: keep,
        org,
        channel,
        lists,
    }
}

// ------------------------------------------------------------------------------------------
// Simulated instances and the provider
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Runs and heartbeats at least every STALE / 2.
    Alive,
    /// Paused (GC, partition): no heartbeat, but its memory survives and it may come back.
    Stalled,
    /// Gone: its memory is lost and it never heartbeats again.
    Crashed,
    /// Stopped gracefully (deregistered).
    Stopped,
}

/// A claimed message not sent yet. `tainted`: the instance came back from a stall long
/// enough for its work to have been taken, so the message may no longer be its own.
struct Held {
    msg: ClaimedMessage,
    tainted: bool,
}

/// A send result not recorded yet.
struct Done {
    outcome: Outcome,
    tainted: bool,
}

struct Inst {
    id: String,
    life: Life,
    last_hb: i64,
    claimed: Vec<Held>,
    pending: Vec<Done>,
    /// Claims whose commit answer was lost (the database restarted as it committed): the
    /// rows are this instance's in flight, but no sender of it knows about them.
    lost: BTreeSet<MessageId>,
}

impl Inst {
    fn holds(&self, message_id: MessageId) -> bool {
        self.claimed.iter().any(|h| h.msg.id == message_id)
            || self
                .pending
                .iter()
                .any(|d| d.outcome.message_id == message_id)
    }
}

#[derive(Debug, Clone, Copy)]
enum Act {
    Claim,
    ClaimLost,
    Send,
    Commit,
    Heartbeat,
    Jump,
    Reconcile,
    Receipts,
    Pause,
    Resume,
    Cancel,
    Complete,
    Crash,
    Stall,
    Unstall,
    Restart,
    Stop,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    runs: u64,
    steps: u64,
    crashes: u64,
    crashes_mid_send: u64,
    stalls: u64,
    in_doubt: i64,
    duplicates: i64,
    stale_outcomes: u64,
    completed: u64,
    cancelled: u64,
    sent: i64,
    failed: i64,
}

struct Failure {
    seed: u64,
    step: usize,
    error: String,
    log: Vec<String>,
}

// ------------------------------------------------------------------------------------------
// One run
// ------------------------------------------------------------------------------------------

struct Sim<'a> {
    store: &'a Store,
    raw: &'a AnyPool,
    seed: u64,
    rng: StdRng,
    now: i64,
    id: CampaignId,
    /// Crashes, stalls and send timeouts may be injected (off while driving to the end).
    faults: bool,
    /// Something that can legitimately cause a duplicate happened in this run.
    fault_injected: bool,
    /// A claim answer was lost: its rows may end in doubt (never sent, so no duplicate).
    claim_lost: bool,
    cancel_enabled: bool,
    resend: bool,
    grace: i64,
    policy: RetryPolicy,
    expected_skipped: i64,
    insts: Vec<Inst>,
    next_inst: usize,
    /// The provider's side: accepted sends per address (duplicates count), which address
    /// each provider id was for, and every provider id in acceptance order.
    ledger: BTreeMap<String, u32>,
    pid_addr: BTreeMap<String, String>,
    accepted: Vec<String>,
    next_pid: u64,
    next_ghost: u64,
    /// Every receipt sent to Herald, per provider id, in arrival order.
    receipts: BTreeMap<String, Vec<MessageStatus>>,
    /// The messages as of the last refresh, with what the simulation knows the store keeps
    /// but does not show: each in-flight message's lease and each in-doubt one's time.
    msgs: BTreeMap<MessageId, MessageInfo>,
    lease: BTreeMap<MessageId, i64>,
    in_doubt_at: BTreeMap<MessageId, i64>,
    /// The campaign as of the last check, and its status as known right now.
    camp: Campaign,
    status: CampaignStatus,
    ever_cancelled: bool,
    /// A store call of this step reported that it completed the campaign.
    completion_claimed: bool,
    /// How many messages the last claim returned.
    last_claimed: usize,
    /// What a step's writes may have changed, so what the check must read back.
    msgs_dirty: bool,
    camp_dirty: bool,
    receipts_dirty: bool,
    step: usize,
    log: VecDeque<String>,
    stats: Stats,
}

impl<'a> Sim<'a> {
    fn note(&mut self, s: impl Into<String>) {
        let line = format!(
            "#{:03} t=+{:>7}ms {}",
            self.step,
            self.now - EPOCH,
            s.into()
        );
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.insts.len())
            .filter(|i| self.insts[*i].life == Life::Alive)
            .collect()
    }

    fn with_life(&self, lives: &[Life]) -> Vec<usize> {
        (0..self.insts.len())
            .filter(|i| lives.contains(&self.insts[*i].life))
            .collect()
    }

    fn pick(&mut self, from: &[usize]) -> usize {
        from[self.rng.random_range(0..from.len())]
    }

    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for m in self.msgs.values() {
            c.add(m.status, 1);
        }
        c
    }

    fn duplicates(&self) -> i64 {
        self.ledger.values().map(|n| i64::from(*n) - 1).sum()
    }

    async fn register(&mut self) -> Res<usize> {
        let k = self.next_inst;
        self.next_inst += 1;
        let id = format!("sim{}-i{k}", self.seed);
        se(
            self.store
                .register_instance(&InstanceInfo {
                    id: id.clone(),
                    // Distinct fake hosts: same-host pid detection never applies.
                    host: format!("sim-host-{}-{k}", self.seed),
                    pid: 10_000 + k as i64,
                    proc_start: None,
                    version: "sim".to_string(),
                    role: "serve".to_string(),
                    started_at: self.now,
                })
                .await,
            "register_instance",
        )?;
        self.insts.push(Inst {
            id,
            life: Life::Alive,
            last_hb: self.now,
            claimed: Vec::new(),
            pending: Vec::new(),
            lost: BTreeSet::new(),
        });
        Ok(self.insts.len() - 1)
    }

    /// Moves virtual time forward in slices, heartbeating every live instance as it goes.
    async fn advance(&mut self, dt: i64) -> Res {
        let mut left = dt;
        while left > 0 {
            let d = left.min(SLICE);
            self.now += d;
            left -= d;
            for i in 0..self.insts.len() {
                if self.insts[i].life == Life::Alive
                    && self.now - self.insts[i].last_hb >= HEARTBEAT_AFTER
                {
                    self.heartbeat(i).await?;
                }
            }
        }
        Ok(())
    }

    async fn heartbeat(&mut self, i: usize) -> Res {
        let ok = se(
            self.store.heartbeat(&self.insts[i].id, self.now).await,
            "heartbeat",
        )?;
        ensure!(
            ok,
            "heartbeat of running instance {} found it deregistered",
            self.insts[i].id
        );
        self.insts[i].last_hb = self.now;
        Ok(())
    }

    // --------------------------------------------------------------------------------------
    // Reading the store back, and the per-message invariants
    // --------------------------------------------------------------------------------------

    async fn refresh(&mut self) -> Res {
        let mut list = Vec::new();
        let mut after = MessageId(0);
        loop {
            let page = se(
                self.store.messages(self.id, None, after, 1000).await,
                "messages",
            )?;
            let Some(last) = page.last() else { break };
            after = last.id;
            list.extend(page);
        }
        let first = self.msgs.is_empty();
        ensure!(
            first || list.len() == self.msgs.len(),
            "the campaign had {} messages and now has {}",
            self.msgs.len(),
            list.len()
        );
        let mut next = BTreeMap::new();
        for m in list {
            if let Some(prev) = self.msgs.get(&m.id) {
                ensure!(
                    transition_ok(prev, &m),
                    "message {} ({}) moved {} -> {} (invariant 7 / message lifecycle)",
                    m.id,
                    m.address,
                    prev.status,
                    m.status
                );
                ensure!(
                    !prev.was_in_doubt || m.was_in_doubt,
                    "message {} forgot that it was in doubt",
                    m.id
                );
                ensure!(
                    prev.provider_id.is_none() || prev.provider_id == m.provider_id,
                    "message {} changed provider id {:?} -> {:?}",
                    m.id,
                    prev.provider_id,
                    m.provider_id
                );
                if prev.status != InDoubt && m.status == InDoubt {
                    self.in_doubt_at.insert(m.id, self.now);
                }
            } else {
                ensure!(first, "message {} appeared after the start", m.id);
            }
            if m.status == InFlight {
                ensure!(
                    m.owner.is_some(),
                    "message {} in flight with no owner",
                    m.id
                );
            }
            match &m.provider_id {
                Some(p) => {
                    ensure!(
                        matches!(m.status, Sent | Delivered | Read | Undelivered | Failed),
                        "message {} is {} with provider id {p}",
                        m.id,
                        m.status
                    );
                    // No loss: Herald counts it sent only if the provider accepted it.
                    ensure!(
                        self.pid_addr.get(p) == Some(&m.address.to_string()),
                        "message {} ({}) is {} with provider id {p}, which the provider never accepted for that address",
                        m.id,
                        m.address,
                        m.status
                    );
                    // Receipts are never lost and never move a message backwards.
                    let want = fold_receipts(self.receipts.get(p));
                    ensure!(
                        m.status == want,
                        "message {} is {} but its receipts {:?} say {want} (invariant 7)",
                        m.id,
                        m.status,
                        self.receipts.get(p)
                    );
                }
                None => ensure!(
                    !matches!(m.status, Sent | Delivered | Read | Undelivered),
                    "message {} is {} without a provider id",
                    m.id,
                    m.status
                ),
            }
            next.insert(m.id, m);
        }
        self.msgs = next;
        self.msgs_dirty = false;
        Ok(())
    }

    async fn check_events(&self, status: CampaignStatus) -> Res {
        let ev = se(self.store.events(self.id).await, "events")?;
        ensure!(
            ev.first().is_some_and(|e| e.from_status.is_none()),
            "the audit trail does not start with the creation: {ev:?}"
        );
        for w in ev.windows(2) {
            ensure!(
                w[1].from_status.as_deref() == Some(w[0].to_status.as_str()),
                "audit trail gap: {} -> {} followed by {:?} -> {} (invariant 8)",
                w[0].from_status.as_deref().unwrap_or("-"),
                w[0].to_status,
                w[1].from_status,
                w[1].to_status
            );
        }
        let last = ev.last().map(|e| e.to_status.as_str()).unwrap_or("");
        ensure!(
            last == status.as_str(),
            "campaign is {status} but its last event says {last}"
        );
        let closing = ev
            .iter()
            .filter(|e| e.to_status == "completed" || e.to_status == "cancelled")
            .count();
        let want = usize::from(status.is_terminal());
        ensure!(
            closing == want,
            "campaign is {status} with {closing} closing events: {:?}",
            ev.iter()
                .map(|e| format!(
                    "{}->{} by {}",
                    e.from_status.as_deref().unwrap_or("-"),
                    e.to_status,
                    e.actor
                ))
                .collect::<Vec<_>>()
        );
        Ok(())
    }

    /// DESIGN.md's invariants, after every step. The store is read back only when the step
    /// wrote to it (heartbeats and sends touch neither messages nor campaigns).
    async fn check(&mut self) -> Res {
        if self.msgs_dirty {
            self.refresh().await?;
        }
        if self.camp_dirty {
            self.check_campaign().await?;
        }
        self.check_memory()?;
        if self.receipts_dirty {
            self.check_kept_receipts().await?;
        }
        Ok(())
    }

    async fn check_campaign(&mut self) -> Res {
        let prev = self.camp.status;
        let c = se(self.store.campaign(self.id).await, "campaign")?;
        let recount = se(self.store.recount(self.id).await, "recount")?;
        // 1. Counters equal the recount; the total equals their sum.
        ensure!(
            c.counts == recount,
            "counters differ from the recount (invariant 3)\n counters: {:?}\n recount:  {:?}",
            c.counts,
            recount
        );
        ensure!(
            recount == self.counts(),
            "recount {recount:?} differs from the messages read"
        );
        ensure!(
            c.total == recount.total() && c.total == self.msgs.len() as i64,
            "total {} but {} messages",
            c.total,
            recount.total()
        );
        // 2. Completion is atomic with the last outcome.
        let pending = recount.pending();
        match c.status {
            CampaignStatus::Sending => ensure!(
                pending > 0,
                "campaign is sending with nothing pending (invariant 4)"
            ),
            CampaignStatus::Completed => {
                ensure!(pending == 0, "completed with {pending} pending");
                ensure!(c.completed_at.is_some(), "completed without completed_at");
            }
            CampaignStatus::Paused | CampaignStatus::Cancelled => {}
            CampaignStatus::Draft | CampaignStatus::Scheduled => {
                return Err(format!("a started campaign went back to {}", c.status));
            }
        }
        if prev.is_terminal() {
            ensure!(c.status == prev, "campaign left {prev} for {}", c.status);
        }
        if prev != CampaignStatus::Completed && c.status == CampaignStatus::Completed {
            ensure!(
                self.completion_claimed,
                "the campaign completed from {prev} but no store call of this step said it did"
            );
        }
        if self.completion_claimed {
            ensure!(
                c.status == CampaignStatus::Completed,
                "a store call reported completing the campaign, which is {}",
                c.status
            );
        }
        self.completion_claimed = false;
        if c.status != prev {
            self.check_events(c.status).await?;
        }
        self.status = c.status;
        self.camp = c;
        self.camp_dirty = false;
        Ok(())
    }

    fn check_memory(&self) -> Res {
        let c = &self.camp;
        // 5. Duplicates are bounded by what was in doubt.
        let was_in_doubt = self.msgs.values().filter(|m| m.was_in_doubt).count() as i64;
        ensure!(
            c.in_doubt_total >= was_in_doubt,
            "in_doubt_total {} < {was_in_doubt} messages once in doubt",
            c.in_doubt_total
        );
        let dups = self.duplicates();
        ensure!(
            dups <= c.in_doubt_total,
            "the provider holds {dups} duplicates but in_doubt_total is {} (invariant 6)",
            c.in_doubt_total
        );
        if !self.fault_injected {
            ensure!(
                dups == 0,
                "no crash, stall or send timeout, yet {dups} duplicates"
            );
            ensure!(
                self.claim_lost || c.in_doubt_total == 0,
                "no fault was injected, yet in_doubt_total {}",
                c.in_doubt_total
            );
        }
        let by_addr: BTreeMap<&str, &MessageInfo> = self
            .msgs
            .values()
            .map(|m| (m.address.as_str(), m))
            .collect();
        for (addr, n) in &self.ledger {
            let m = by_addr.get(addr.as_str());
            ensure!(m.is_some(), "the provider got {addr}, not in the audience");
            ensure!(
                *n <= 1 || m.is_some_and(|m| m.was_in_doubt),
                "the provider got {addr} {n} times but its message was never in doubt"
            );
        }
        // 4. A live instance's claims stay its own; every in-flight message is accounted for.
        for inst in &self.insts {
            if inst.life == Life::Alive {
                ensure!(
                    self.now - inst.last_hb <= STALE / 2,
                    "simulator bug: live instance {} last heartbeat {} ms ago",
                    inst.id,
                    self.now - inst.last_hb
                );
                let held = inst.claimed.iter().map(|h| (h.msg.id, h.tainted)).chain(
                    inst.pending
                        .iter()
                        .map(|d| (d.outcome.message_id, d.tainted)),
                );
                for (mid, tainted) in held {
                    if tainted {
                        continue;
                    }
                    let m = &self.msgs[&mid];
                    ensure!(
                        m.status == InFlight && m.owner.as_deref() == Some(inst.id.as_str()),
                        "message {mid} claimed by live instance {} is {} owned by {:?} (invariant 6: stolen from a live owner)",
                        inst.id,
                        m.status,
                        m.owner
                    );
                }
            }
        }
        for m in self.msgs.values().filter(|m| m.status == InFlight) {
            let owner = m.owner.as_deref().unwrap_or("");
            let inst = self.insts.iter().find(|i| i.id == owner);
            ensure!(
                inst.is_some(),
                "message {} in flight for unknown owner {owner}",
                m.id
            );
            if let Some(inst) = inst {
                match inst.life {
                    Life::Alive | Life::Stalled => ensure!(
                        inst.holds(m.id) || inst.lost.contains(&m.id),
                        "message {} is in flight for {owner}, which never got it from a claim",
                        m.id
                    ),
                    // A lost claim outlives a graceful stop; the reconciler takes it as in doubt.
                    Life::Stopped => ensure!(
                        inst.lost.contains(&m.id),
                        "message {} is in flight for {owner}, which stopped gracefully",
                        m.id
                    ),
                    Life::Crashed => {}
                }
            }
        }
        Ok(())
    }

    async fn check_kept_receipts(&mut self) -> Res {
        // Invariant 7: no receipt stays kept once its provider id is recorded.
        let stuck: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pending_receipts p JOIN messages m ON m.provider_id = p.provider_id WHERE m.campaign_id = $1",
        )
        .bind(self.id)
        .fetch_one(self.raw)
        .await
        .map_err(|e| format!("pending_receipts query failed: {e}"))?;
        ensure!(
            stuck == 0,
            "{stuck} kept receipts match recorded provider ids"
        );
        self.receipts_dirty = false;
        Ok(())
    }

    // --------------------------------------------------------------------------------------
    // Steps
    // --------------------------------------------------------------------------------------

    fn choose(&mut self) -> Act {
        let alive = self.alive();
        let mut opts: Vec<(Act, u32)> = vec![
            (Act::Jump, 3),
            (Act::Reconcile, 6),
            (Act::Receipts, 6),
            (Act::Pause, 2),
            (Act::Resume, 3),
            (Act::Complete, 1),
        ];
        if !alive.is_empty() {
            opts.push((Act::Claim, 14));
            opts.push((Act::Heartbeat, 3));
            opts.push((Act::Stop, 1));
            if self.faults {
                opts.push((Act::Stall, 1));
                opts.push((Act::ClaimLost, 1));
            }
        }
        if alive.iter().any(|i| !self.insts[*i].claimed.is_empty()) {
            opts.push((Act::Send, 16));
        }
        if alive.iter().any(|i| !self.insts[*i].pending.is_empty()) {
            opts.push((Act::Commit, 14));
        }
        if self.cancel_enabled {
            opts.push((Act::Cancel, 1));
        }
        let running = self.with_life(&[Life::Alive, Life::Stalled]).len();
        if self.faults && running > 0 {
            opts.push((Act::Crash, 2));
        }
        if !self.with_life(&[Life::Stalled]).is_empty() {
            opts.push((Act::Unstall, 2));
        }
        if running < MAX_INSTANCES {
            opts.push((Act::Restart, if alive.is_empty() { 12 } else { 2 }));
        }
        let weights: Vec<u32> = opts.iter().map(|o| o.1).collect();
        opts[pick_weighted(&mut self.rng, &weights)].0
    }

    async fn act(&mut self, act: Act) -> Res {
        match act {
            Act::Claim => {
                let i = self.pick(&self.alive());
                let limit = self.rng.random_range(1..=8);
                self.claim(i, limit).await.map(|_| ())
            }
            Act::ClaimLost => {
                let i = self.pick(&self.alive());
                let limit = self.rng.random_range(1..=4);
                self.claim_lost(i, limit).await
            }
            Act::Send => {
                let cands: Vec<usize> = self
                    .alive()
                    .into_iter()
                    .filter(|i| !self.insts[*i].claimed.is_empty())
                    .collect();
                let i = self.pick(&cands);
                let k = self.rng.random_range(1..=self.insts[i].claimed.len());
                self.send(i, k);
                Ok(())
            }
            Act::Commit => {
                let cands: Vec<usize> = self
                    .alive()
                    .into_iter()
                    .filter(|i| !self.insts[*i].pending.is_empty())
                    .collect();
                let i = self.pick(&cands);
                let max = self.rng.random_range(1..=self.insts[i].pending.len());
                self.commit(i, max).await.map(|_| ())
            }
            Act::Heartbeat => {
                let i = self.pick(&self.alive());
                self.note(format!("heartbeat {}", self.insts[i].id));
                self.heartbeat(i).await
            }
            Act::Jump => {
                let dt = STALE + self.grace + self.rng.random_range(1..=3000);
                self.note(format!("jump {dt} ms"));
                self.advance(dt).await
            }
            Act::Reconcile => self.reconcile().await,
            Act::Receipts => self.receipts().await,
            Act::Pause => self.transition(CampaignAction::Pause).await,
            Act::Resume => self.transition(CampaignAction::Resume).await,
            Act::Cancel => self.transition(CampaignAction::Cancel).await,
            Act::Complete => self.transition(CampaignAction::Complete).await,
            Act::Crash => {
                let i = self.pick(&self.with_life(&[Life::Alive, Life::Stalled]));
                self.crash(i, "crash");
                Ok(())
            }
            Act::Stall => {
                let i = self.pick(&self.alive());
                self.insts[i].life = Life::Stalled;
                self.fault_injected = true;
                self.stats.stalls += 1;
                self.note(format!(
                    "stall {} (holds {} claimed, {} unrecorded)",
                    self.insts[i].id,
                    self.insts[i].claimed.len(),
                    self.insts[i].pending.len()
                ));
                Ok(())
            }
            Act::Unstall => {
                let i = self.pick(&self.with_life(&[Life::Stalled]));
                self.unstall(i).await
            }
            Act::Restart => {
                let i = self.register().await?;
                self.note(format!("start instance {}", self.insts[i].id));
                Ok(())
            }
            Act::Stop => {
                let i = self.pick(&self.alive());
                self.stop(i).await
            }
        }
    }

    fn crash(&mut self, i: usize, why: &str) {
        let inst = &mut self.insts[i];
        let (c, p) = (inst.claimed.len(), inst.pending.len());
        inst.life = Life::Crashed;
        inst.claimed.clear();
        inst.pending.clear();
        self.fault_injected = true;
        self.stats.crashes += 1;
        let id = self.insts[i].id.clone();
        self.note(format!(
            "{why}: {id} dies, losing {c} claimed and {p} unrecorded outcomes"
        ));
    }

    async fn unstall(&mut self, i: usize) -> Res {
        let silent = self.now - self.insts[i].last_hb;
        let taken = silent > STALE;
        if taken {
            for h in &mut self.insts[i].claimed {
                h.tainted = true;
            }
            for d in &mut self.insts[i].pending {
                d.tainted = true;
            }
        }
        self.insts[i].life = Life::Alive;
        self.note(format!(
            "{} comes back after {silent} ms{}",
            self.insts[i].id,
            if taken {
                " (its work may be taken)"
            } else {
                ""
            }
        ));
        self.heartbeat(i).await
    }

    /// Marks what a store write may have changed.
    fn wrote(&mut self, receipts: bool) {
        self.msgs_dirty = true;
        self.camp_dirty = true;
        self.receipts_dirty |= receipts;
    }

    async fn claim(&mut self, i: usize, limit: i64) -> Res<usize> {
        let owner = self.insts[i].id.clone();
        let got = se(
            self.store
                .claim(self.id, &owner, self.now, self.now + STALE, limit)
                .await,
            "claim",
        )?;
        if !got.is_empty() {
            // An empty claim rolled back: nothing to read back.
            self.wrote(false);
        }
        let mut want: Vec<MessageId> = if self.status == CampaignStatus::Sending {
            let mut due: Vec<&MessageInfo> = self
                .msgs
                .values()
                .filter(|m| matches!(m.status, Queued | RetryWait) && m.next_attempt_at <= self.now)
                .collect();
            due.sort_by_key(|m| (m.next_attempt_at, m.id));
            due.iter().take(limit as usize).map(|m| m.id).collect()
        } else {
            Vec::new()
        };
        want.sort_unstable();
        let ids: Vec<_> = got.iter().map(|m| m.id).collect();
        self.note(format!("{owner} claims (limit {limit}): {ids:?}"));
        ensure!(
            ids == want,
            "claim by {owner} (limit {limit}, campaign {}) got {ids:?}; the due messages were {want:?}",
            self.status
        );
        for m in &got {
            let prev = &self.msgs[&m.id];
            ensure!(
                m.attempts == prev.attempts + 1 && m.address == prev.address,
                "claimed message {} has attempts {} (was {}) and address {} (was {})",
                m.id,
                m.attempts,
                prev.attempts,
                m.address,
                prev.address
            );
        }
        let n = got.len();
        self.last_claimed = n;
        for m in got {
            self.lease.insert(m.id, self.now + STALE);
            let tainted = self.insts[i].holds(m.id);
            self.insts[i].claimed.push(Held { msg: m, tainted });
        }
        Ok(n)
    }

    /// A claim that commits while its answer is lost: the instance never learns of it.
    async fn claim_lost(&mut self, i: usize, limit: i64) -> Res {
        self.note(format!(
            "the answer to the next claim by {} is lost",
            self.insts[i].id
        ));
        self.claim_lost = true;
        self.claim(i, limit).await?;
        let n = self.insts[i].claimed.len();
        let got: Vec<Held> = self.insts[i]
            .claimed
            .drain(n - self.last_claimed..)
            .collect();
        for h in got {
            self.insts[i].lost.insert(h.msg.id);
        }
        Ok(())
    }

    /// The instance's own reconciler hands back rows it owns in flight that no sender of it
    /// knows about (claims older than 5 s whose answer was lost), unsent.
    async fn release_unknown(&mut self, i: usize) -> Res {
        let me = self.insts[i].id.clone();
        let claimed_before = self.now - 5_000;
        let owned: BTreeSet<MessageId> = se(
            self.store.owned_in_flight(&me, claimed_before).await,
            "owned_in_flight",
        )?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
        let want: BTreeSet<MessageId> = self
            .msgs
            .values()
            .filter(|m| m.status == InFlight && m.owner.as_deref() == Some(me.as_str()))
            .filter(|m| {
                self.lease
                    .get(&m.id)
                    .is_some_and(|l| l - STALE < claimed_before)
            })
            .map(|m| m.id)
            .collect();
        ensure!(
            owned == want,
            "owned_in_flight({me}) returned {owned:?}; its claims older than 5 s in flight are {want:?}"
        );
        let unknown: Vec<MessageId> = owned
            .into_iter()
            .filter(|id| !self.insts[i].holds(*id))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let outcomes: Vec<Outcome> = unknown
            .iter()
            .map(|id| Outcome {
                attempt: None,
                message_id: *id,
                campaign_id: self.id,
                kind: OutcomeKind::Released,
            })
            .collect();
        let report = se(
            self.store.record_outcomes(&me, self.now, &outcomes).await,
            "record_outcomes (release unknown claims)",
        )?;
        self.wrote(true);
        self.note(format!(
            "{me} hands back claims it never heard of: {unknown:?} -> applied {}",
            report.applied
        ));
        ensure!(
            report.applied == unknown.len(),
            "releasing unknown claims {unknown:?} of {me} applied {}",
            report.applied
        );
        if report.completed.contains(&self.id) {
            self.completion_claimed = true;
        }
        for id in &unknown {
            ensure!(
                self.insts[i].lost.remove(id),
                "{me} released message {id}, which it had not lost"
            );
        }
        self.refresh().await
    }

    /// The provider's answer to one send; the ledger records what it accepted.
    fn provide(&mut self, m: &ClaimedMessage) -> (OutcomeKind, bool, &'static str) {
        let roll = self.rng.random_range(0..100);
        let accept = |sim: &mut Self| {
            let pid = format!("sim{}-p{}", sim.seed, sim.next_pid);
            sim.next_pid += 1;
            *sim.ledger.entry(m.address.to_string()).or_default() += 1;
            sim.pid_addr.insert(pid.clone(), m.address.to_string());
            sim.accepted.push(pid.clone());
            pid
        };
        if roll < 80 || (!self.faults && roll >= 95) {
            let provider_id = accept(self);
            (OutcomeKind::Sent { provider_id }, true, "sent")
        } else if roll < 90 {
            if self.policy.may_retry(m.attempts) {
                let jitter: f64 = self.rng.random();
                let wait = self.policy.backoff(m.attempts, jitter).as_millis() as i64;
                (
                    OutcomeKind::Retry {
                        error: "provider busy".to_string(),
                        next_attempt_at: self.now + wait,
                    },
                    false,
                    "retry",
                )
            } else {
                (
                    OutcomeKind::Failed {
                        error: format!("gave up after {} attempts: provider busy", m.attempts),
                    },
                    false,
                    "gave-up",
                )
            }
        } else if roll < 95 {
            (
                OutcomeKind::Failed {
                    error: "rejected".to_string(),
                },
                false,
                "rejected",
            )
        } else {
            // A timeout after the request left: the provider may or may not have it.
            self.fault_injected = true;
            let has = self.rng.random_bool(0.5);
            if has {
                accept(self);
            }
            (
                OutcomeKind::Unknown {
                    error: "no answer within the send timeout".to_string(),
                },
                has,
                if has {
                    "timeout(accepted)"
                } else {
                    "timeout(lost)"
                },
            )
        }
    }

    /// Instance `i` sends its first `k` claimed messages; a crash may strike right after
    /// the provider accepted one, before anything is recorded.
    fn send(&mut self, i: usize, k: usize) {
        let batch: Vec<Held> = self.insts[i].claimed.drain(..k).collect();
        let mut parts = Vec::new();
        let mut crash = false;
        for h in batch {
            let (kind, provider_has, label) = self.provide(&h.msg);
            parts.push(format!("{}:{label}", h.msg.id));
            self.insts[i].pending.push(Done {
                outcome: Outcome {
                    attempt: None,
                    message_id: h.msg.id,
                    campaign_id: self.id,
                    kind,
                },
                tainted: h.tainted,
            });
            if provider_has && self.faults && self.rng.random_bool(0.05) {
                crash = true;
                break;
            }
        }
        let id = self.insts[i].id.clone();
        self.note(format!("{id} sends {}", parts.join(" ")));
        if crash {
            self.stats.crashes_mid_send += 1;
            self.crash(i, "crash between provider accept and outcome record");
        }
    }

    /// Instance `i` group-commits up to `max` of its unrecorded outcomes (one per message).
    async fn commit(&mut self, i: usize, max: usize) -> Res<usize> {
        let owner = self.insts[i].id.clone();
        let all = std::mem::take(&mut self.insts[i].pending);
        let mut seen = BTreeSet::new();
        let (mut batch, mut rest) = (Vec::new(), Vec::new());
        for d in all {
            if batch.len() < max && seen.insert(d.outcome.message_id) {
                batch.push(d);
            } else {
                rest.push(d);
            }
        }
        self.insts[i].pending = rest;
        let mut expected = 0;
        for d in &batch {
            let m = &self.msgs[&d.outcome.message_id];
            let mine = m.status == InFlight && m.owner.as_deref() == Some(owner.as_str());
            ensure!(
                mine || d.tainted,
                "message {} of live instance {owner} is {} owned by {:?} before its outcome was recorded",
                m.id,
                m.status,
                m.owner
            );
            expected += usize::from(mine);
        }
        let outcomes: Vec<Outcome> = batch.iter().map(|d| d.outcome.clone()).collect();
        let report = se(
            self.store
                .record_outcomes(&owner, self.now, &outcomes)
                .await,
            "record_outcomes",
        )?;
        self.wrote(true);
        let desc: Vec<String> = outcomes
            .iter()
            .map(|o| {
                let k = match &o.kind {
                    OutcomeKind::Sent { .. } => "sent",
                    OutcomeKind::Retry { .. } => "retry",
                    OutcomeKind::Failed { .. } => "failed",
                    OutcomeKind::Released => "released",
                    OutcomeKind::Held { .. } => "held",
                    OutcomeKind::Unknown { .. } => "unknown",
                    OutcomeKind::Skipped { .. } => "skipped",
                };
                format!("{}:{k}", o.message_id)
            })
            .collect();
        self.note(format!(
            "{owner} records {} -> applied {} stale {}{}",
            desc.join(" "),
            report.applied,
            report.stale,
            if report.completed.contains(&self.id) {
                " COMPLETED"
            } else {
                ""
            }
        ));
        ensure!(
            report.applied == expected && report.stale == batch.len() - expected,
            "record_outcomes by {owner}: applied {} stale {}, expected applied {expected} of {}",
            report.applied,
            report.stale,
            batch.len()
        );
        self.stats.stale_outcomes += report.stale as u64;
        if report.completed.contains(&self.id) {
            self.completion_claimed = true;
        }
        self.refresh().await?;
        Ok(batch.len())
    }

    async fn commit_all(&mut self, i: usize) -> Res {
        while !self.insts[i].pending.is_empty() {
            self.commit(i, usize::MAX).await?;
        }
        Ok(())
    }

    /// Graceful stop: record what was sent, release what was not, deregister.
    async fn stop(&mut self, i: usize) -> Res {
        self.note(format!("graceful stop of {}", self.insts[i].id));
        self.commit_all(i).await?;
        let claimed = std::mem::take(&mut self.insts[i].claimed);
        for h in claimed {
            self.insts[i].pending.push(Done {
                outcome: Outcome {
                    attempt: None,
                    message_id: h.msg.id,
                    campaign_id: self.id,
                    kind: OutcomeKind::Released,
                },
                tainted: h.tainted,
            });
        }
        self.commit_all(i).await?;
        se(
            self.store.stop_instance(&self.insts[i].id, self.now).await,
            "stop_instance",
        )?;
        self.insts[i].life = Life::Stopped;
        Ok(())
    }

    fn is_live(&self, owner: &str) -> bool {
        self.insts
            .iter()
            .any(|i| i.id == owner && i.life != Life::Stopped && i.last_hb >= self.now - STALE)
    }

    /// One reconciler pass, each decision checked against what it must do.
    async fn reconcile(&mut self) -> Res {
        let expect: BTreeSet<MessageId> = self
            .msgs
            .values()
            .filter(|m| m.status == InFlight)
            .filter(|m| self.lease.get(&m.id).is_none_or(|l| *l < self.now))
            .filter(|m| !self.is_live(m.owner.as_deref().unwrap_or("")))
            .map(|m| m.id)
            .collect();
        let found = se(
            self.store
                .mark_in_doubt(self.now, self.now - STALE, &[])
                .await,
            "mark_in_doubt",
        )?;
        self.wrote(false);
        let n = found
            .iter()
            .find(|(c, _)| *c == self.id)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let before: BTreeMap<MessageId, MessageStatus> =
            self.msgs.iter().map(|(id, m)| (*id, m.status)).collect();
        self.refresh().await?;
        let moved: BTreeSet<MessageId> = self
            .msgs
            .values()
            .filter(|m| before[&m.id] == InFlight && m.status == InDoubt)
            .map(|m| m.id)
            .collect();
        ensure!(
            moved == expect && n == expect.len() as i64,
            "mark_in_doubt took {moved:?} (reported {n}); the dead owners' expired work was {expect:?}"
        );
        for id in &moved {
            for inst in &mut self.insts {
                inst.lost.remove(id);
            }
        }
        let alive = self.alive();
        if !alive.is_empty() {
            let i = self.pick(&alive);
            self.release_unknown(i).await?;
        }
        let older_than = self.now - self.grace;
        let due: BTreeSet<MessageId> = self
            .msgs
            .values()
            .filter(|m| m.status == InDoubt)
            .filter(|m| {
                self.in_doubt_at
                    .get(&m.id)
                    .is_some_and(|t| *t <= older_than)
            })
            .map(|m| m.id)
            .collect();
        let target = if self.status == CampaignStatus::Cancelled {
            Cancelled
        } else if self.resend {
            Queued
        } else {
            Failed
        };
        let report = se(
            self.store
                .resolve_in_doubt(self.resend, self.now, older_than)
                .await,
            "resolve_in_doubt",
        )?;
        self.wrote(false);
        if report.completed.contains(&self.id) {
            self.completion_claimed = true;
        }
        if !due.is_empty() || !moved.is_empty() {
            self.refresh().await?;
            for m in self.msgs.values() {
                if due.contains(&m.id) {
                    ensure!(
                        m.status == target,
                        "resolve_in_doubt left message {} {} instead of {target}",
                        m.id,
                        m.status
                    );
                } else if before[&m.id] == InDoubt || moved.contains(&m.id) {
                    ensure!(
                        m.status == InDoubt,
                        "resolve_in_doubt moved message {} to {} before its grace ran out",
                        m.id,
                        m.status
                    );
                }
            }
        }
        let kept = se(
            self.store.apply_kept_receipts(self.now).await,
            "apply_kept_receipts",
        )?;
        self.wrote(true);
        let done = se(
            self.store.finalize_drained(self.now).await,
            "finalize_drained",
        )?;
        self.wrote(false);
        self.note(format!(
            "reconcile: in doubt {moved:?}, resolved {due:?} -> {target}, kept receipts {kept}, finalised {done:?}"
        ));
        ensure!(
            !done.contains(&self.id),
            "the reconciler had to finalise the campaign: its last outcome did not complete it (invariant 4)"
        );
        Ok(())
    }

    async fn receipts(&mut self) -> Res {
        let n = self.rng.random_range(1..=4);
        let mut batch: Vec<Receipt> = Vec::new();
        for _ in 0..n {
            if let Some(last) = batch.last()
                && self.rng.random_bool(0.15)
            {
                batch.push(last.clone());
                continue;
            }
            let provider_id = if !self.accepted.is_empty() && self.rng.random_bool(0.9) {
                self.accepted[self.rng.random_range(0..self.accepted.len())].clone()
            } else {
                self.next_ghost += 1;
                format!("sim{}-ghost{}", self.seed, self.next_ghost)
            };
            let status = [Delivered, Read, Undelivered, Failed, Sent, Queued]
                [pick_weighted(&mut self.rng, &[10, 6, 2, 2, SENT_RECEIPT_WEIGHT, 1])];
            let error =
                matches!(status, Undelivered | Failed).then(|| "carrier said no".to_string());
            batch.push(Receipt {
                channel_id: self.camp.channel_id,
                provider_id,
                status,
                error,
            });
        }
        let recorded: BTreeSet<&str> = self
            .msgs
            .values()
            .filter_map(|m| m.provider_id.as_deref())
            .collect();
        let expect_kept = batch
            .iter()
            .filter(|r| !recorded.contains(r.provider_id.as_str()))
            .count();
        let report = se(
            self.store.apply_receipts(&batch, self.now).await,
            "apply_receipts",
        )?;
        self.wrote(true);
        let desc: Vec<String> = batch
            .iter()
            .map(|r| format!("{}={}", r.provider_id, r.status))
            .collect();
        self.note(format!(
            "receipts {} -> applied {} ignored {} kept {}",
            desc.join(" "),
            report.applied,
            report.ignored,
            report.kept
        ));
        ensure!(
            report.kept == expect_kept && report.applied + report.ignored + report.kept == n,
            "apply_receipts of {n}: {report:?}, expected {expect_kept} kept"
        );
        for r in batch {
            self.receipts
                .entry(r.provider_id)
                .or_default()
                .push(r.status);
        }
        Ok(())
    }

    async fn transition(&mut self, action: CampaignAction) -> Res {
        let from = self.status;
        let pending = self.counts().pending();
        let status_ok = action.allowed_from().contains(&from);
        let legal = status_ok && !(action == CampaignAction::Complete && pending > 0);
        let r = self
            .store
            .transition(self.id, action, self.now, "sim", None)
            .await;
        if r.is_ok() {
            // A refused transition rolled back: nothing to read back.
            self.wrote(false);
        }
        self.note(format!(
            "{} from {from} (pending {pending}) -> {}",
            action.as_str(),
            match &r {
                Ok(c) => c.status.to_string(),
                Err(e) => format!("error: {e}"),
            }
        ));
        match r {
            Ok(c) => {
                ensure!(
                    legal,
                    "`{}` from {from} with {pending} pending was allowed",
                    action.as_str()
                );
                let want = match action {
                    CampaignAction::Pause => CampaignStatus::Paused,
                    CampaignAction::Resume if pending == 0 => CampaignStatus::Completed,
                    CampaignAction::Resume => CampaignStatus::Sending,
                    CampaignAction::Cancel => CampaignStatus::Cancelled,
                    CampaignAction::Complete | CampaignAction::Start => CampaignStatus::Completed,
                };
                ensure!(
                    c.status == want,
                    "`{}` from {from} with {pending} pending left the campaign {} instead of {want}",
                    action.as_str(),
                    c.status
                );
                if want == CampaignStatus::Completed {
                    self.completion_claimed = true;
                }
                self.status = c.status;
                if action == CampaignAction::Cancel {
                    self.ever_cancelled = true;
                    self.refresh().await?;
                    let left: Vec<MessageId> = self
                        .msgs
                        .values()
                        // In-doubt messages stay in doubt: the provider may have them, so the
                        // reconciler asks before they are cancelled (DESIGN.md: queued and
                        // retry_wait are what a cancel cancels).
                        .filter(|m| matches!(m.status, Queued | RetryWait))
                        .map(|m| m.id)
                        .collect();
                    ensure!(left.is_empty(), "cancel left unsent messages {left:?}");
                }
                Ok(())
            }
            Err(StoreError::Conflict(msg)) => {
                ensure!(
                    !legal,
                    "`{}` from {from} with {pending} pending was refused: {msg}",
                    action.as_str()
                );
                if status_ok {
                    ensure!(
                        msg.contains("pending"),
                        "the refusal of `complete` does not mention the pending work: {msg}"
                    );
                } else {
                    ensure!(
                        msg.contains(&format!("is {from}")),
                        "the refusal of `{}` does not name the status {from}: {msg}",
                        action.as_str()
                    );
                }
                Ok(())
            }
            Err(e) => Err(format!("transition {} failed: {e}", action.as_str())),
        }
    }

    fn finished(&self) -> bool {
        self.status.is_terminal() && self.msgs.values().all(|m| !m.status.is_pending())
    }

    /// Faults off, one instance alive: claims, sends, commits and reconciler passes until
    /// the campaign is done, or the budget runs out (the campaign is stuck).
    async fn drive(&mut self) -> Res {
        self.faults = false;
        self.note("drive to completion: faults off");
        for i in self.with_life(&[Life::Stalled]) {
            if self.rng.random_bool(0.5) {
                self.crash(i, "drive");
            } else {
                self.unstall(i).await?;
            }
        }
        if self.alive().is_empty() {
            let i = self.register().await?;
            self.note(format!("start instance {}", self.insts[i].id));
        }
        for _ in 0..DRIVE_BUDGET {
            self.step += 1;
            if self.finished() {
                return Ok(());
            }
            if self.status == CampaignStatus::Paused {
                self.transition(CampaignAction::Resume).await?;
            }
            for i in self.alive() {
                self.commit_all(i).await?;
            }
            let i = self.pick(&self.alive());
            let got = self.claim(i, 10).await?;
            if got > 0 {
                self.refresh().await?;
            }
            for i in self.alive() {
                let k = self.insts[i].claimed.len();
                if k > 0 {
                    self.send(i, k);
                }
                self.commit_all(i).await?;
            }
            self.reconcile().await?;
            if got == 0 {
                self.advance(STALE + self.grace + 1).await?;
            } else {
                let dt = self.rng.random_range(0..=STALE / 4);
                self.advance(dt).await?;
            }
            self.check().await?;
        }
        let c = self.counts();
        Err(format!(
            "stuck: campaign {} still has {} pending ({:?}) after {DRIVE_BUDGET} fault-free drive rounds",
            self.status,
            c.pending(),
            c.iter().filter(|(_, n)| *n != 0).collect::<Vec<_>>()
        ))
    }

    async fn finish(&mut self) -> Res {
        let c = self.camp.clone();
        self.check_events(c.status).await?;
        ensure!(
            c.completed_at.is_some(),
            "{} without completed_at",
            c.status
        );
        for m in self.msgs.values() {
            ensure!(
                matches!(
                    m.status,
                    Sent | Delivered | Read | Undelivered | Failed | Skipped | Cancelled
                ),
                "at the end message {} is {}",
                m.id,
                m.status
            );
        }
        ensure!(
            c.counts.get(Skipped) == self.expected_skipped,
            "{} skipped, expected {}",
            c.counts.get(Skipped),
            self.expected_skipped
        );
        if !self.ever_cancelled {
            ensure!(
                c.status == CampaignStatus::Completed && c.counts.get(Cancelled) == 0,
                "never cancelled, yet {} with {} cancelled messages",
                c.status,
                c.counts.get(Cancelled)
            );
        }
        for i in self.alive() {
            self.stop(i).await?;
        }
        self.check().await?;
        self.stats.runs = 1;
        self.stats.in_doubt = c.in_doubt_total;
        self.stats.duplicates = self.duplicates();
        self.stats.completed = u64::from(c.status == CampaignStatus::Completed);
        self.stats.cancelled = u64::from(c.status == CampaignStatus::Cancelled);
        self.stats.sent = c.counts.get(Sent)
            + c.counts.get(Delivered)
            + c.counts.get(Read)
            + c.counts.get(Undelivered);
        self.stats.failed = c.counts.get(Failed);
        Ok(())
    }
}

async fn run_seed(fx: &Fixture, seed: u64, steps: usize) -> Result<Stats, Failure> {
    let store = &fx.store;
    let mut rng = StdRng::seed_from_u64(seed);
    let faults = !seed.is_multiple_of(4);
    let cancel_enabled = rng.random_bool(0.25);
    let resend = rng.random_bool(0.8);
    let grace = [0, 3_000, 15_000][rng.random_range(0..3)];
    let policy = RetryPolicy {
        max_attempts: rng.random_range(1..=4),
        base: Duration::from_millis(500),
        max: Duration::from_millis(4_000),
    };
    let list = &fx.lists[pick_weighted(&mut rng, &[1, 2, 2, 3, 4, 4, 4, 4, 3, 3])];
    let scheduled = rng.random_bool(0.3);
    let now = EPOCH;
    let setup = async {
        let id = se(
            store
                .create_campaign(
                    &NewCampaign {
                        org_id: fx.org,
                        name: format!("sim-{seed}"),
                        channel_id: fx.channel,
                        list_id: list.id,
                        body: "Hello {{ name }}".to_string(),
                        scheduled_at: scheduled.then_some(now),
                        whatsapp_template: None,
                        email: None,
                        send_window: None,
                    },
                    "sim",
                )
                .await,
            "create_campaign",
        )?;
        let due = scheduled.then_some(now);
        let actor = if scheduled { "scheduler" } else { "sim" };
        match se(store.start_campaign(id, now, actor, due).await, "start")? {
            StartOutcome::Started {
                messages,
                queued,
                skipped,
                completed,
            } => {
                ensure!(
                    messages == list.queued + list.skipped
                        && queued == list.queued
                        && skipped == list.skipped
                        && completed == (list.queued == 0),
                    "start: {messages} messages, {queued} queued, {skipped} skipped, completed {completed}"
                );
            }
            StartOutcome::NotDue => return Err("start returned NotDue".to_string()),
        }
        // Starting again is refused (operator) or not due (scheduler), and changes nothing.
        match store.start_campaign(id, now, actor, due).await {
            Ok(StartOutcome::NotDue) if scheduled => {}
            Err(StoreError::Conflict(_)) if !scheduled => {}
            other => return Err(format!("a second start returned {other:?}")),
        }
        let camp = se(store.campaign(id).await, "campaign")?;
        Ok((id, camp))
    };
    let (id, camp) = match setup.await {
        Ok(v) => v,
        Err(error) => {
            return Err(Failure {
                seed,
                step: 0,
                error,
                log: Vec::new(),
            });
        }
    };
    let mut sim = Sim {
        store,
        raw: &fx.raw,
        seed,
        rng,
        now,
        id,
        faults,
        fault_injected: false,
        claim_lost: false,
        cancel_enabled,
        resend,
        grace,
        policy,
        expected_skipped: list.skipped,
        insts: Vec::new(),
        next_inst: 0,
        ledger: BTreeMap::new(),
        pid_addr: BTreeMap::new(),
        accepted: Vec::new(),
        next_pid: 0,
        next_ghost: 0,
        receipts: BTreeMap::new(),
        msgs: BTreeMap::new(),
        lease: BTreeMap::new(),
        in_doubt_at: BTreeMap::new(),
        status: camp.status,
        camp,
        ever_cancelled: false,
        completion_claimed: false,
        last_claimed: 0,
        msgs_dirty: true,
        camp_dirty: true,
        receipts_dirty: true,
        step: 0,
        log: VecDeque::new(),
        stats: Stats::default(),
    };
    sim.note(format!(
        "campaign {id}: {} recipients, faults {faults}, cancel {cancel_enabled}, resend {resend}, grace {grace}, max attempts {}, scheduled {scheduled}",
        list.queued + list.skipped,
        sim.policy.max_attempts
    ));
    let result = async {
        let n = sim.rng.random_range(2..=MAX_INSTANCES);
        for _ in 0..n {
            sim.register().await?;
        }
        sim.check().await?;
        if sim.camp.status == CampaignStatus::Sending {
            sim.check_events(CampaignStatus::Sending).await?;
        }
        for step in 1..=steps {
            if sim.finished() {
                break;
            }
            sim.step = step;
            let dt = sim.rng.random_range(0..=2_000);
            sim.advance(dt).await?;
            let act = sim.choose();
            sim.act(act).await?;
            sim.check().await?;
        }
        sim.drive().await?;
        sim.finish().await
    }
    .await;
    match result {
        Ok(()) => {
            let mut stats = sim.stats;
            stats.steps = sim.step as u64;
            Ok(stats)
        }
        Err(error) => Err(Failure {
            seed,
            step: sim.step,
            error,
            log: sim.log.into_iter().collect(),
        }),
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Seeds run on this many fixtures (databases) at once: a seed spends most of its time
/// waiting on its database, so shards overlap those waits. Each seed creates its own
/// campaign and runs alone on its shard, so a seed's outcome does not depend on its shard.
const SHARDS: usize = 3;

async fn run_many(backend: Backend, base: u64, default_seeds: u64, default_steps: usize) {
    let started = Instant::now();
    let steps = env_num("HERALD_SIM_STEPS").map_or(default_steps, |s| s as usize);
    let seeds: Vec<u64> = match env_num("HERALD_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (base..base + env_num("HERALD_SIM_SEEDS").unwrap_or(default_seeds)).collect(),
    };
    let shards = SHARDS.min(seeds.len()).max(1);
    let mut fixtures = Vec::with_capacity(shards);
    for _ in 0..shards {
        fixtures.push(fixture(backend).await);
    }
    let runs = fixtures.iter().enumerate().map(|(shard, fx)| {
        let mine: Vec<u64> = seeds.iter().copied().skip(shard).step_by(shards).collect();
        async move {
            let mut results: Vec<(u64, Result<Stats, Failure>)> = Vec::new();
            let mut failed = 0;
            for seed in mine {
                let result = run_seed(fx, seed, steps).await;
                failed += usize::from(result.is_err());
                results.push((seed, result));
                if failed > 4 {
                    break;
                }
            }
            results
        }
    });
    let mut results: Vec<(u64, Result<Stats, Failure>)> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    results.sort_by_key(|(seed, _)| *seed);
    let mut total = Stats::default();
    let mut failures: Vec<Failure> = Vec::new();
    for (_, result) in results {
        match result {
            Ok(s) => {
                total.runs += s.runs;
                total.steps += s.steps;
                total.crashes += s.crashes;
                total.crashes_mid_send += s.crashes_mid_send;
                total.stalls += s.stalls;
                total.in_doubt += s.in_doubt;
                total.duplicates += s.duplicates;
                total.stale_outcomes += s.stale_outcomes;
                total.completed += s.completed;
                total.cancelled += s.cancelled;
                total.sent += s.sent;
                total.failed += s.failed;
            }
            Err(f) => failures.push(f),
        }
    }
    eprintln!(
        "simulation {}: {} seeds ({} ok), {} steps, {:.1} s: {:?}",
        backend.name(),
        seeds.len(),
        total.runs,
        total.steps,
        started.elapsed().as_secs_f64(),
        total
    );
    for fx in fixtures {
        fx.raw.close().await;
        fx.store.close().await;
    }
    if let Some(f) = failures.first() {
        let others: Vec<String> = failures[1..]
            .iter()
            .map(|o| format!("seed {} step {}: {}", o.seed, o.step, o.error))
            .collect();
        panic!(
            "simulation on {} failed for seed {} at step {}: {}\n\
             replay: HERALD_SIM_SEED={} cargo test --test it simulation::{}_many_seeds -- --nocapture\n\
             last steps:\n  {}\n{}",
            backend.name(),
            f.seed,
            f.step,
            f.error,
            f.seed,
            backend.name(),
            f.log.join("\n  "),
            if others.is_empty() {
                String::new()
            } else {
                format!("other failing seeds:\n  {}", others.join("\n  "))
            }
        );
    }
}

#[tokio::test]
async fn sqlite_many_seeds() {
    run_many(Backend::Sqlite, 0, SQLITE_SEEDS, SQLITE_STEPS).await;
}

#[tokio::test]
async fn postgres_many_seeds() {
    run_many(
        Backend::Postgres,
        POSTGRES_SEED_BASE,
        POSTGRES_SEEDS,
        POSTGRES_STEPS,
    )
    .await;
}
