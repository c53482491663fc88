//! The store conformance suite: DESIGN.md's invariants, checked on SQLite and PostgreSQL
//! through the one storage interface. Every test runs on both stores.

use crate::both_stores;
use crate::support::{
    Backend, TestDb, all_messages, assert_counters_match, exported, message, new_campaign,
    new_campaign_at, sandbox_channel, seed_list, seeded_address,
};
use herald::address::Address;
use herald::clock::now_ms;
use herald::domain::{CampaignAction, CampaignStatus, Counts, MessageStatus};
use herald::ids::{CampaignId, ChannelId, ListId, MessageId, OrgId};
use herald::store::{
    ClaimedMessage, ContactInput, InstanceInfo, Outcome, OutcomeKind, Receipt, ReceiptReport,
    SandboxEntry, SandboxStats, StartOutcome, Store, StoreError, UpsertReport,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use MessageStatus::{
    Cancelled, Delivered, Failed, InDoubt, InFlight, Queued, Read, RetryWait, Sent, Skipped,
    Undelivered,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

// ------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------

fn expect_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> String {
    match r {
        Err(StoreError::Conflict(m)) => m,
        other => panic!("{what}: expected a Conflict error, got {other:?}"),
    }
}

fn counts(expected: &[(MessageStatus, i64)]) -> Counts {
    let mut c = Counts::default();
    for (s, n) in expected {
        c.add(*s, *n);
    }
    c
}

#[track_caller]
fn expect_counts(actual: &Counts, expected: &[(MessageStatus, i64)]) {
    let expected = counts(expected);
    assert_eq!(
        *actual,
        expected,
        "counters differ\n actual:   {:?}\n expected: {:?}",
        actual.iter().filter(|(_, n)| *n != 0).collect::<Vec<_>>(),
        expected.iter().filter(|(_, n)| *n != 0).collect::<Vec<_>>()
    );
}

fn contact(address: &str, unsubscribed: Option<bool>) -> ContactInput {
    ContactInput {
        address: Address::parse(address).unwrap(),
        name: None,
        attributes: serde_json::Map::new(),
        unsubscribed,
    }
}

fn outcome(m: &ClaimedMessage, kind: OutcomeKind) -> Outcome {
    Outcome {
        attempt: None,
        message_id: m.id,
        campaign_id: m.campaign_id,
        kind,
    }
}

fn sent(provider_id: &str) -> OutcomeKind {
    OutcomeKind::Sent {
        provider_id: provider_id.to_string(),
    }
}

fn failed(error: &str) -> OutcomeKind {
    OutcomeKind::Failed {
        error: error.to_string(),
    }
}

fn retry(error: &str, next_attempt_at: i64) -> OutcomeKind {
    OutcomeKind::Retry {
        error: error.to_string(),
        next_attempt_at,
    }
}

fn unknown(error: &str) -> OutcomeKind {
    OutcomeKind::Unknown {
        error: error.to_string(),
    }
}

fn receipt(channel_id: ChannelId, provider_id: &str, status: MessageStatus) -> Receipt {
    Receipt {
        channel_id,
        provider_id: provider_id.to_string(),
        status,
        error: None,
    }
}

fn instance(id: &str, started_at: i64) -> InstanceInfo {
    InstanceInfo {
        id: id.to_string(),
        host: "test-host".to_string(),
        pid: 4242,
        proc_start: None,
        version: "test".to_string(),
        role: "serve".to_string(),
        started_at,
    }
}

/// A started campaign of `n` seeded recipients on a fresh list and sandbox channel.
async fn started(store: &Store, n: i64, now: i64) -> CampaignId {
    let (org, list) = seed_list(store, n).await;
    let channel = sandbox_channel(store, &format!("sb-{:08x}", rand::random::<u32>())).await;
    let id = new_campaign(store, org, list, channel, "Hello {{ name }}").await;
    match store.start_campaign(id, now, "test", None).await.unwrap() {
        StartOutcome::Started { messages, .. } => assert_eq!(messages, n),
        StartOutcome::NotDue => panic!("an operator start returned NotDue"),
    }
    id
}

async fn claim_all(store: &Store, id: CampaignId, owner: &str, now: i64) -> Vec<ClaimedMessage> {
    store
        .claim(id, owner, now, now + MINUTE, 100_000)
        .await
        .unwrap()
}

async fn status_of(store: &Store, id: CampaignId) -> CampaignStatus {
    store.campaign(id).await.unwrap().status
}

// ------------------------------------------------------------------------------------------
// 1. Migrations
// ------------------------------------------------------------------------------------------

both_stores!(migrate_is_idempotent_and_seeds_defaults, |db| async move {
    let store = &db.store;
    let again = store.migrate().await.unwrap();
    assert!(again.is_empty(), "a second migrate applied {again:?} again");
    // A second process migrating the same database changes nothing either.
    let other = Store::connect(&db.url).await.unwrap();
    assert!(other.migrate().await.unwrap().is_empty());
    other.close().await;

    let status = store.migration_status().await.unwrap();
    assert!(status.missing.is_empty(), "missing {:?}", status.missing);
    assert!(status.unknown.is_empty(), "unknown {:?}", status.unknown);
    assert!(!status.applied.is_empty());
    store.require_migrated().await.unwrap();

    let org = store.organisation_by_name("default").await.unwrap();
    assert_eq!(org.name, "default");
    assert_eq!(store.default_org().await.unwrap(), org.id);
    let sandbox = store.channel_by_name(org.id, "sandbox").await.unwrap();
    assert_eq!(sandbox.kind, "sandbox");
    // Migrating again did not seed a second default channel.
    let channels = store.channels(org.id).await.unwrap();
    assert_eq!(
        channels.iter().filter(|c| c.name == "sandbox").count(),
        1,
        "{channels:?}"
    );
});

both_stores!(
    unmigrated_database_reports_missing_migrations,
    |db| async move {
        // A database with nothing in it: every migration is missing and the store says so.
        match db.backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/empty.db", dir.path().display());
                let empty = Store::connect(&url).await.unwrap();
                let status = empty.migration_status().await.unwrap();
                assert!(status.applied.is_empty());
                assert!(!status.missing.is_empty());
                let err = empty.require_migrated().await.unwrap_err();
                assert!(err.to_string().contains("herald migrate"), "{err}");
                empty.close().await;
            }
            Backend::Postgres => {
                let empty = TestDb::new_unmigrated(Backend::Postgres).await;
                let status = empty.store.migration_status().await.unwrap();
                assert!(status.applied.is_empty());
                assert!(!status.missing.is_empty());
                let err = empty.store.require_migrated().await.unwrap_err();
                assert!(err.to_string().contains("herald migrate"), "{err}");
            }
        }
        drop(db);
    }
);

// ------------------------------------------------------------------------------------------
// 2–3. Start freezes the audience
// ------------------------------------------------------------------------------------------

both_stores!(start_freezes_the_audience, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 10).await;
    // A new unsubscribed contact, a new contact listed twice in one batch, and a seeded
    // contact listed again: the list still holds each address once.
    let report = store
        .upsert_contacts(
            org,
            list,
            &[
                contact("+15550000001", Some(true)),
                contact("+15550000002", None),
                contact("+15550000002", None),
                contact(&seeded_address(1), None),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        report,
        UpsertReport {
            inserted: 2,
            updated: 2
        }
    );
    // Seeded contact 2 unsubscribes; a later import without the flag leaves it unsubscribed.
    store
        .upsert_contacts(org, list, &[contact(&seeded_address(2), Some(true))])
        .await
        .unwrap();
    store
        .upsert_contacts(org, list, &[contact(&seeded_address(2), None)])
        .await
        .unwrap();
    // Seeded contact 3 is suppressed; a suppression of an address not on the list is inert.
    assert!(
        store
            .suppress(
                org,
                &seeded_address(3),
                "complained",
                &herald::store::OptSource::API
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .suppress(
                org,
                &seeded_address(3),
                "again",
                &herald::store::OptSource::API
            )
            .await
            .unwrap()
    );
    store
        .suppress(
            org,
            "+15559999999",
            "bounced",
            &herald::store::OptSource::API,
        )
        .await
        .unwrap();
    let info = store
        .lists(org)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.id == list)
        .unwrap();
    assert_eq!(info.members, 12);

    let channel = sandbox_channel(store, "sb-start").await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    assert_eq!(status_of(store, id).await, CampaignStatus::Draft);
    let t = now_ms();
    let out = store.start_campaign(id, t, "alice", None).await.unwrap();
    assert_eq!(
        out,
        StartOutcome::Started {
            messages: 12,
            queued: 9,
            skipped: 3,
            completed: false
        }
    );

    let c = assert_counters_match(store, id).await;
    assert_eq!(c.status, CampaignStatus::Sending);
    assert_eq!(c.started_at, Some(t));
    assert_eq!(c.completed_at, None);
    assert_eq!(c.total, 12);
    expect_counts(&c.counts, &[(Queued, 9), (Skipped, 3)]);

    // One row per distinct address.
    let messages = all_messages(store, id, None).await;
    assert_eq!(messages.len(), 12);
    let addresses: BTreeSet<&str> = messages.iter().map(|m| m.address.as_str()).collect();
    assert_eq!(addresses.len(), 12, "an address has two message rows");
    // Skipped rows say why.
    let reasons: BTreeMap<String, Option<String>> = messages
        .iter()
        .filter(|m| m.status == Skipped)
        .map(|m| (m.address.to_string(), m.last_error.clone()))
        .collect();
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("+15550000001".to_string(), Some("unsubscribed".to_string())),
            (seeded_address(2), Some("unsubscribed".to_string())),
            (
                seeded_address(3),
                Some("suppressed: complained".to_string())
            ),
        ])
    );

    // The audit trail explains the start.
    let events = store.events(id).await.unwrap();
    let start = events
        .iter()
        .find(|e| e.to_status == "sending")
        .expect("a start event");
    assert_eq!(start.from_status.as_deref(), Some("draft"));
    assert_eq!(start.actor, "alice");
    assert_eq!(start.at, t);
    assert!(start.reason.contains("12"), "{}", start.reason);

    // The audience is frozen: a contact added to the list later gets no message.
    store
        .upsert_contacts(org, list, &[contact("+15550000003", None)])
        .await
        .unwrap();
    assert_eq!(all_messages(store, id, None).await.len(), 12);

    // Starting twice is refused, and the refusal names the status.
    let events_before = store.events(id).await.unwrap().len();
    let msg = expect_conflict(
        store.start_campaign(id, t + 1, "alice", None).await,
        "second start",
    );
    assert!(msg.contains("sending"), "{msg}");
    let msg = expect_conflict(
        store
            .transition(id, CampaignAction::Start, t + 1, "alice", None)
            .await,
        "second start through transition",
    );
    assert!(msg.contains("sending"), "{msg}");
    assert_eq!(store.events(id).await.unwrap().len(), events_before);
    assert_eq!(all_messages(store, id, None).await.len(), 12);
    assert_counters_match(store, id).await;
});

both_stores!(
    start_skips_addresses_the_channel_cannot_reach,
    |db| async move {
        let store = &db.store;
        let org = store.default_org().await.unwrap();
        let list = store.ensure_list(org, "mixed").await.unwrap();
        store
            .upsert_contacts(
                org,
                list,
                &[
                    contact("alice@example.com", None),
                    contact("+15550000010", None),
                ],
            )
            .await
            .unwrap();
        // A kind that sends to phones (the store takes any configuration).
        let sms = store
            .create_channel(org, "sms-test", "twilio", &serde_json::json!({}))
            .await
            .unwrap();
        let id = new_campaign(store, org, list, sms, "Hi").await;
        store.start_campaign(id, now_ms(), "t", None).await.unwrap();
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Queued, 1), (Skipped, 1)]);
        let skipped = all_messages(store, id, Some(Skipped)).await;
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].address, "alice@example.com");
        let reason = skipped[0].last_error.clone().unwrap_or_default();
        assert!(reason.contains("not a phone number"), "{reason}");
    }
);

both_stores!(
    start_with_nothing_to_send_completes_at_once,
    |db| async move {
        let store = &db.store;
        let channel = sandbox_channel(store, "sb-empty").await;

        // An empty list.
        let (org, empty) = seed_list(store, 0).await;
        let id = new_campaign(store, org, empty, channel, "Hi").await;
        let t = now_ms();
        let out = store.start_campaign(id, t, "alice", None).await.unwrap();
        assert_eq!(
            out,
            StartOutcome::Started {
                messages: 0,
                queued: 0,
                skipped: 0,
                completed: true
            }
        );
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        assert_eq!(c.completed_at, Some(t));
        assert_eq!(c.started_at, Some(t));
        let events = store.events(id).await.unwrap();
        let last = events.last().unwrap();
        assert_eq!(last.to_status, "completed");
        assert_eq!(last.from_status.as_deref(), Some("sending"));
        assert_eq!(last.at, t);

        // A list whose every recipient is skipped.
        let list = store.ensure_list(org, "all-unsubscribed").await.unwrap();
        store
            .upsert_contacts(
                org,
                list,
                &[
                    contact("+15551110001", Some(true)),
                    contact("+15551110002", Some(true)),
                ],
            )
            .await
            .unwrap();
        store
            .suppress(
                org,
                "+15551110003",
                "bounced",
                &herald::store::OptSource::API,
            )
            .await
            .unwrap();
        store
            .upsert_contacts(org, list, &[contact("+15551110003", None)])
            .await
            .unwrap();
        let id = new_campaign(store, org, list, channel, "Hi").await;
        let t = now_ms();
        let out = store.start_campaign(id, t, "alice", None).await.unwrap();
        assert_eq!(
            out,
            StartOutcome::Started {
                messages: 3,
                queued: 0,
                skipped: 3,
                completed: true
            }
        );
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        assert_eq!(c.completed_at, Some(t));
        expect_counts(&c.counts, &[(Skipped, 3)]);
        assert!(claim_all(store, id, "A", t).await.is_empty());
    }
);

// A message belongs to a campaign that exists, for as long as both do. SQLite keeps the
// foreign key; PostgreSQL checks once per statement instead of once per row (migration
// 0027, which made the start's insert about a third shorter). Either way: a message naming
// no campaign is refused, its campaign never changes, and deleting a campaign deletes its
// messages.
both_stores!(
    every_message_belongs_to_a_campaign_that_exists,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 3, t).await;
        let raw = db.raw().await;
        let fk = |e: sqlx::Error, what: &str| match e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {}
            other => panic!("{what}: expected a foreign-key violation, got {other:?}"),
        };
        let missing = id.get() + 1_000;
        // One row, and a statement with a good row and a bad one: nothing of either lands.
        let e = sqlx::query(
            "INSERT INTO messages (campaign_id, address, status, updated_at) VALUES ($1, '+15550000001', 'queued', 0)",
        )
        .bind(missing)
        .execute(&raw)
        .await
        .unwrap_err();
        fk(e, "a message of a campaign that does not exist");
        let e = sqlx::query(
            "INSERT INTO messages (campaign_id, address, status, updated_at) \
             VALUES ($1, '+15550000002', 'queued', 0), ($2, '+15550000003', 'queued', 0)",
        )
        .bind(id)
        .bind(missing)
        .execute(&raw)
        .await
        .unwrap_err();
        fk(e, "a statement with one message of a missing campaign");
        let count = |campaign: i64| {
            let raw = raw.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM messages WHERE campaign_id = $1")
                    .bind(campaign)
                    .fetch_one(&raw)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            count(id.get()).await,
            3,
            "the refused statement left no row"
        );
        assert_eq!(count(missing).await, 0);
        // A message cannot move to a campaign that does not exist; on PostgreSQL, not to
        // any other campaign either (no statement of Herald's ever moves one).
        let other = started(store, 1, t).await;
        let mut targets = vec![missing];
        if db.backend == Backend::Postgres {
            targets.push(other.get());
        }
        for target in targets {
            let e = sqlx::query("UPDATE messages SET campaign_id = $1 WHERE campaign_id = $2")
                .bind(target)
                .bind(id)
                .execute(&raw)
                .await
                .unwrap_err();
            fk(e, "moving a message to another campaign");
        }
        assert_eq!(count(id.get()).await, 3);
        // Deleting a campaign deletes its messages, and only its.
        sqlx::query("DELETE FROM campaigns WHERE id = $1")
            .bind(id)
            .execute(&raw)
            .await
            .unwrap();
        assert_eq!(count(id.get()).await, 0);
        assert_eq!(count(other.get()).await, 1);
    }
);

// ------------------------------------------------------------------------------------------
// 4. Claims
// ------------------------------------------------------------------------------------------

both_stores!(claim_moves_queued_to_in_flight, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 20, t).await;

    let first = store.claim(id, "A", t, t + MINUTE, 5).await.unwrap();
    assert_eq!(first.len(), 5, "the claim limit is respected");
    let all = all_messages(store, id, None).await;
    let first_ids: Vec<_> = first.iter().map(|m| m.id).collect();
    let oldest: Vec<_> = all.iter().take(5).map(|m| m.id).collect();
    assert_eq!(
        first_ids, oldest,
        "claims take the oldest due messages first"
    );
    for m in &first {
        assert_eq!(m.campaign_id, id);
        assert_eq!(m.attempts, 1);
        assert!(m.name.as_deref().is_some_and(|n| n.starts_with("Contact ")));
        let row = message(store, id, m.id).await;
        assert_eq!(row.status, InFlight);
        assert_eq!(row.owner.as_deref(), Some("A"));
        assert_eq!(row.address, m.address);
        assert_eq!(row.attempts, 1);
    }
    let c = assert_counters_match(store, id).await;
    expect_counts(&c.counts, &[(Queued, 15), (InFlight, 5)]);

    // A paused campaign gives nothing to claim.
    store
        .transition(id, CampaignAction::Pause, t + 1, "op", None)
        .await
        .unwrap();
    assert!(
        store
            .claim(id, "B", t + 2, t + MINUTE, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let c = assert_counters_match(store, id).await;
    expect_counts(&c.counts, &[(Queued, 15), (InFlight, 5)]);

    store
        .transition(id, CampaignAction::Resume, t + 3, "op", None)
        .await
        .unwrap();
    let rest = store.claim(id, "B", t + 4, t + MINUTE, 100).await.unwrap();
    assert_eq!(rest.len(), 15);
    assert!(
        store
            .claim(id, "B", t + 5, t + MINUTE, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let c = assert_counters_match(store, id).await;
    expect_counts(&c.counts, &[(InFlight, 20)]);

    // A retry is claimable only once due, and counts its attempts.
    let r = store
        .record_outcomes("A", t + 6, &[outcome(&first[0], retry("busy", t + 10_000))])
        .await
        .unwrap();
    assert_eq!(r.applied, 1);
    assert!(
        store
            .claim(id, "B", t + 9_999, t + MINUTE, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim(id, "B", t + 10_000, t + MINUTE, 100)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].attempts, 2);
    assert_counters_match(store, id).await;

    // A draft campaign gives nothing to claim either.
    let (org, list) = seed_list(store, 3).await;
    let channel = sandbox_channel(store, "sb-draft").await;
    let draft = new_campaign(store, org, list, channel, "Hi").await;
    assert!(claim_all(store, draft, "A", t).await.is_empty());
});

both_stores!(concurrent_claimers_never_share_a_message, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 2000).await;
    let channel = sandbox_channel(store, "sb-race").await;
    for round in 0..10 {
        let id = new_campaign(store, org, list, channel, "Hi").await;
        let t = now_ms();
        store.start_campaign(id, t, "test", None).await.unwrap();
        let mut tasks = Vec::new();
        for (owner, limit) in [("A", 37), ("B", 53)] {
            let store = store.clone();
            let owner = format!("{owner}-{round}");
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = store.claim(id, &owner, t, t + MINUTE, limit).await.unwrap();
                    assert!(batch.len() as i64 <= limit);
                    if batch.is_empty() {
                        break;
                    }
                    got.extend(batch.into_iter().map(|m| m.id));
                    tokio::task::yield_now().await;
                }
                (owner, got)
            }));
        }
        let mut union = BTreeSet::new();
        let mut owner_of = BTreeMap::new();
        for task in tasks {
            let (owner, got) = task.await.unwrap();
            for m in got {
                assert!(
                    union.insert(m),
                    "round {round}: message {m} was claimed twice"
                );
                owner_of.insert(m, owner.clone());
            }
        }
        let all = all_messages(store, id, None).await;
        let all_ids: BTreeSet<_> = all.iter().map(|m| m.id).collect();
        assert_eq!(all_ids.len(), 2000);
        assert_eq!(
            union, all_ids,
            "round {round}: claimed set differs from all messages"
        );
        for m in &all {
            assert_eq!(m.status, InFlight);
            assert_eq!(m.owner.as_ref(), owner_of.get(&m.id), "round {round}");
        }
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(InFlight, 2000)]);
    }
});

// ------------------------------------------------------------------------------------------
// 5. Outcomes
// ------------------------------------------------------------------------------------------

both_stores!(record_outcomes_moves_the_right_counters, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 6, t).await;
    let m = claim_all(store, id, "A", t).await;
    assert_eq!(m.len(), 6);

    let report = store.record_outcomes("A", t + 1, &[]).await.unwrap();
    assert_eq!((report.applied, report.stale), (0, 0));

    let report = store
        .record_outcomes(
            "A",
            t + 1,
            &[
                outcome(&m[0], sent("p-0")),
                outcome(&m[1], failed("invalid number")),
                outcome(&m[2], retry("throttled", t + 10_000)),
                outcome(&m[3], OutcomeKind::Released),
                outcome(&m[4], unknown("timeout after send")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(report.applied, 5);
    assert_eq!(report.stale, 0);
    assert!(report.completed.is_empty());
    let c = assert_counters_match(store, id).await;
    expect_counts(
        &c.counts,
        &[
            (Sent, 1),
            (Failed, 1),
            (RetryWait, 1),
            (Queued, 1),
            (InDoubt, 1),
            (InFlight, 1),
        ],
    );
    assert_eq!(c.in_doubt_total, 1);
    assert_eq!(c.status, CampaignStatus::Sending);
    assert_eq!(c.last_progress_at, Some(t + 1));

    let r0 = message(store, id, m[0].id).await;
    assert_eq!(r0.status, Sent);
    assert_eq!(r0.provider_id.as_deref(), Some("p-0"));
    assert_eq!(r0.sent_at, Some(t + 1));
    let r1 = message(store, id, m[1].id).await;
    assert_eq!(r1.status, Failed);
    assert_eq!(r1.last_error.as_deref(), Some("invalid number"));
    let r2 = message(store, id, m[2].id).await;
    assert_eq!(r2.status, RetryWait);
    assert_eq!(r2.next_attempt_at, t + 10_000);
    assert_eq!(r2.attempts, 1);
    let r3 = message(store, id, m[3].id).await;
    assert_eq!(r3.status, Queued);
    assert_eq!(r3.attempts, 0, "a released claim refunds its attempt");
    assert_eq!(r3.owner, None);
    let r4 = message(store, id, m[4].id).await;
    assert_eq!(r4.status, InDoubt);
    assert!(r4.was_in_doubt);

    // Stale: the wrong owner, a message no longer in flight, a message that does not exist.
    let before = store.campaign(id).await.unwrap();
    let report = store
        .record_outcomes("B", t + 2, &[outcome(&m[5], sent("p-5-by-b"))])
        .await
        .unwrap();
    assert_eq!((report.applied, report.stale), (0, 1));
    let report = store
        .record_outcomes(
            "A",
            t + 2,
            &[
                outcome(&m[0], failed("late")),
                outcome(&m[3], sent("p-3")),
                Outcome {
                    attempt: None,
                    message_id: MessageId(987_654_321),
                    campaign_id: id,
                    kind: sent("p-x"),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!((report.applied, report.stale), (0, 3));
    let after = assert_counters_match(store, id).await;
    assert_eq!(after.counts, before.counts);
    assert_eq!(after.last_progress_at, before.last_progress_at);
    let r5 = message(store, id, m[5].id).await;
    assert_eq!((r5.status, r5.owner.as_deref()), (InFlight, Some("A")));
    assert_eq!(r5.provider_id, None);
    assert_eq!(message(store, id, m[0].id).await.status, Sent);

    // The same message twice in one batch applies once.
    let report = store
        .record_outcomes(
            "A",
            t + 3,
            &[outcome(&m[5], sent("p-5")), outcome(&m[5], sent("p-5"))],
        )
        .await
        .unwrap();
    assert_eq!((report.applied, report.stale), (1, 1));
    let c = assert_counters_match(store, id).await;
    expect_counts(
        &c.counts,
        &[
            (Sent, 2),
            (Failed, 1),
            (RetryWait, 1),
            (Queued, 1),
            (InDoubt, 1),
        ],
    );
    assert_eq!(c.status, CampaignStatus::Sending, "work is still pending");
});

both_stores!(
    completion_is_atomic_with_the_last_outcome,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let a = started(store, 3, t).await;
        let b = started(store, 2, t).await;
        let ma = claim_all(store, a, "A", t).await;
        let mb = claim_all(store, b, "A", t).await;

        let report = store
            .record_outcomes(
                "A",
                t + 1,
                &[outcome(&ma[0], sent("a-0")), outcome(&ma[1], failed("no"))],
            )
            .await
            .unwrap();
        assert!(report.completed.is_empty());
        assert_eq!(status_of(store, a).await, CampaignStatus::Sending);

        // One group commit holds the last outcome of both campaigns (and a stale one).
        let last_at = t + 7;
        let report = store
            .record_outcomes(
                "A",
                last_at,
                &[
                    outcome(&ma[2], sent("a-2")),
                    outcome(&mb[0], sent("b-0")),
                    outcome(&mb[1], retry("x", t)),
                    outcome(&ma[0], sent("a-0-again")),
                ],
            )
            .await
            .unwrap();
        assert_eq!((report.applied, report.stale), (3, 1));
        assert_eq!(report.completed, vec![a], "b still has a retry pending");
        let c = assert_counters_match(store, a).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        assert_eq!(c.completed_at, Some(last_at));
        expect_counts(&c.counts, &[(Sent, 2), (Failed, 1)]);
        let completions: Vec<_> = store
            .events(a)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.to_status == "completed")
            .collect();
        assert_eq!(completions.len(), 1, "{completions:?}");
        assert_eq!(completions[0].at, last_at);
        assert_eq!(completions[0].from_status.as_deref(), Some("sending"));
        assert!(
            completions[0].actor.contains('A'),
            "{}",
            completions[0].actor
        );

        // b's retry falls due, is sent, and that outcome completes b.
        let again = store.claim(b, "B", t + 8, t + MINUTE, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        let report = store
            .record_outcomes("B", t + 9, &[outcome(&again[0], sent("b-1"))])
            .await
            .unwrap();
        assert_eq!(report.completed, vec![b]);
        let c = assert_counters_match(store, b).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        assert_eq!(c.completed_at, Some(t + 9));

        // A late duplicate changes nothing and completes nothing twice.
        let report = store
            .record_outcomes("B", t + 10, &[outcome(&again[0], sent("b-1"))])
            .await
            .unwrap();
        assert_eq!((report.applied, report.stale), (0, 1));
        assert!(report.completed.is_empty());
        let completions = store
            .events(b)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.to_status == "completed")
            .count();
        assert_eq!(completions, 1);
        assert_eq!(store.campaign(b).await.unwrap().completed_at, Some(t + 9));
    }
);

both_stores!(
    outcomes_after_cancel_become_cancelled_or_record,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 4, t).await;
        let m = claim_all(store, id, "A", t).await;
        store
            .transition(id, CampaignAction::Cancel, t + 1, "bob", None)
            .await
            .unwrap();
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(InFlight, 4)]);

        let report = store
            .record_outcomes(
                "A",
                t + 2,
                &[
                    outcome(&m[0], retry("throttled", t + 1000)),
                    outcome(&m[1], OutcomeKind::Released),
                    outcome(&m[2], sent("p-2")),
                    outcome(&m[3], unknown("timeout")),
                ],
            )
            .await
            .unwrap();
        assert_eq!(report.applied, 4);
        assert!(report.completed.is_empty());
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Cancelled, 2), (Sent, 1), (InDoubt, 1)]);
        let r0 = message(store, id, m[0].id).await;
        assert_eq!(r0.status, Cancelled);
        assert!(
            r0.last_error
                .as_deref()
                .is_some_and(|e| e.contains("cancelled")),
            "{:?}",
            r0.last_error
        );
        assert_eq!(message(store, id, m[1].id).await.status, Cancelled);

        // The in-doubt message of a cancelled campaign is cancelled, whatever the policy.
        let report = store.resolve_in_doubt(true, t + 3, t + 3).await.unwrap();
        assert_eq!((report.resent, report.failed, report.cancelled), (0, 0, 1));
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Cancelled, 3), (Sent, 1)]);
        assert_eq!(c.status, CampaignStatus::Cancelled);
        assert!(
            store
                .events(id)
                .await
                .unwrap()
                .iter()
                .all(|e| e.to_status != "completed")
        );
    }
);

/// Retries a store call while the database reports a transient failure (busy, deadlock
/// victim), as the engine does; anything else fails the test.
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if e.is_transient() && tries < 50 => {
                tries += 1;
                eprintln!("{what}: transient error, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

both_stores!(concurrent_workers_keep_counters_exact, |db| async move {
    // Four senders, a receipt feed and an operator pausing and resuming, all at once on one
    // campaign: the counters still equal the recount and the campaign completes once.
    let store = &db.store;
    let n = 500;
    let id = started(store, n, now_ms()).await;
    let ch = store.campaign(id).await.unwrap().channel_id;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("W{w}");
            loop {
                let now = now_ms();
                let batch =
                    retrying("claim", || store.claim(id, &owner, now, now + MINUTE, 20)).await;
                if batch.is_empty() {
                    if store.campaign(id).await.unwrap().status.is_terminal() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let outcomes: Vec<Outcome> = batch
                    .iter()
                    .map(|m| {
                        let kind = match m.id.get() % 10 {
                            0 if m.attempts < 3 => retry("busy", now),
                            1 => failed("rejected"),
                            _ => sent(&format!("cw-{}", m.id)),
                        };
                        outcome(m, kind)
                    })
                    .collect();
                let report = retrying("record_outcomes", || {
                    store.record_outcomes(&owner, now, &outcomes)
                })
                .await;
                assert_eq!(
                    report.applied,
                    outcomes.len(),
                    "an owner's own outcome was stale"
                );
            }
        }));
    }
    {
        let store = store.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let sent_rows = all_messages(&store, id, Some(Sent)).await;
                let receipts: Vec<Receipt> = sent_rows
                    .iter()
                    .filter_map(|m| m.provider_id.as_deref())
                    .map(|p| receipt(ch, p, Delivered))
                    .collect();
                if !receipts.is_empty() {
                    retrying("apply_receipts", || {
                        store.apply_receipts(&receipts, now_ms())
                    })
                    .await;
                }
                if finished {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(7)).await;
        let _ = store
            .transition(id, CampaignAction::Pause, now_ms(), "op", None)
            .await;
        tokio::time::sleep(Duration::from_millis(7)).await;
        let _ = store
            .transition(id, CampaignAction::Resume, now_ms(), "op", None)
            .await;
    }
    // The senders end once the campaign does.
    let senders: Vec<_> = tasks.drain(..4).collect();
    for t in senders {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.status, CampaignStatus::Completed);
    assert_eq!(c.counts.pending(), 0);
    assert_eq!(c.counts.get(Sent), 0, "every sent message got its receipt");
    assert_eq!(c.counts.get(Delivered) + c.counts.get(Failed), n);
    let completions = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.to_status == "completed")
        .count();
    assert_eq!(completions, 1);
    assert!(store.drift(&[id]).await.unwrap().is_empty());
});

// ------------------------------------------------------------------------------------------
// 6. Transitions
// ------------------------------------------------------------------------------------------

both_stores!(
    illegal_transitions_are_refused_and_name_the_status,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let (org, list) = seed_list(store, 3).await;
        let channel = sandbox_channel(store, "sb-tr").await;

        let check = |id: CampaignId, action: CampaignAction, status: &'static str| {
            let store = store.clone();
            async move {
                let before = store.events(id).await.unwrap().len();
                let msg = expect_conflict(
                    store.transition(id, action, t, "op", None).await,
                    &format!("{} from {status}", action.as_str()),
                );
                assert!(msg.contains(&format!("is {status}")), "{msg}");
                assert_eq!(status_of(&store, id).await.as_str(), status);
                assert_eq!(store.events(id).await.unwrap().len(), before);
            }
        };

        let draft = new_campaign(store, org, list, channel, "Hi").await;
        check(draft, CampaignAction::Pause, "draft").await;
        check(draft, CampaignAction::Resume, "draft").await;
        check(draft, CampaignAction::Complete, "draft").await;

        let scheduled = new_campaign_at(store, org, list, channel, "Hi", Some(t + HOUR)).await;
        assert_eq!(status_of(store, scheduled).await, CampaignStatus::Scheduled);
        check(scheduled, CampaignAction::Pause, "scheduled").await;
        check(scheduled, CampaignAction::Resume, "scheduled").await;
        check(scheduled, CampaignAction::Complete, "scheduled").await;
        let c = store
            .transition(
                scheduled,
                CampaignAction::Cancel,
                t,
                "op",
                Some("changed plans"),
            )
            .await
            .unwrap();
        assert_eq!(c.status, CampaignStatus::Cancelled);
        let last = store.events(scheduled).await.unwrap().pop().unwrap();
        assert_eq!(last.from_status.as_deref(), Some("scheduled"));
        assert!(last.reason.contains("changed plans"), "{}", last.reason);
        assert_eq!(
            store
                .start_campaign(scheduled, t + 2 * HOUR, "scheduler", Some(t + 2 * HOUR))
                .await
                .unwrap(),
            StartOutcome::NotDue
        );

        let sending = new_campaign(store, org, list, channel, "Hi").await;
        store.start_campaign(sending, t, "op", None).await.unwrap();
        check(sending, CampaignAction::Resume, "sending").await;
        let c = store
            .transition(sending, CampaignAction::Pause, t, "op", None)
            .await
            .unwrap();
        assert_eq!(c.status, CampaignStatus::Paused);
        let last = store.events(sending).await.unwrap().pop().unwrap();
        assert_eq!(
            (
                last.from_status.as_deref(),
                last.to_status.as_str(),
                last.actor.as_str()
            ),
            (Some("sending"), "paused", "op")
        );
        check(sending, CampaignAction::Pause, "paused").await;
        let c = store
            .transition(sending, CampaignAction::Resume, t, "op", None)
            .await
            .unwrap();
        assert_eq!(c.status, CampaignStatus::Sending);
        let c = store
            .transition(sending, CampaignAction::Cancel, t + 5, "op", None)
            .await
            .unwrap();
        assert_eq!(c.status, CampaignStatus::Cancelled);
        assert_eq!(c.completed_at, Some(t + 5));
        for action in [
            CampaignAction::Pause,
            CampaignAction::Resume,
            CampaignAction::Cancel,
            CampaignAction::Complete,
            CampaignAction::Start,
        ] {
            check(sending, action, "cancelled").await;
        }
        assert_counters_match(store, sending).await;

        let (org, empty) = seed_list(store, 0).await;
        let completed = new_campaign(store, org, empty, channel, "Hi").await;
        store
            .start_campaign(completed, t, "op", None)
            .await
            .unwrap();
        for action in [
            CampaignAction::Pause,
            CampaignAction::Resume,
            CampaignAction::Cancel,
            CampaignAction::Complete,
            CampaignAction::Start,
        ] {
            check(completed, action, "completed").await;
        }

        let missing = store
            .transition(CampaignId(987_654), CampaignAction::Pause, t, "op", None)
            .await;
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{missing:?}"
        );
    }
);

both_stores!(
    cancel_stops_unsent_work_and_lets_in_flight_finish,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 10, t).await;
        let m = store.claim(id, "A", t, t + MINUTE, 3).await.unwrap();
        store
            .record_outcomes("A", t + 1, &[outcome(&m[0], retry("busy", t + HOUR))])
            .await
            .unwrap();
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Queued, 7), (InFlight, 2), (RetryWait, 1)]);

        let c = store
            .transition(id, CampaignAction::Cancel, t + 5, "bob", None)
            .await
            .unwrap();
        assert_eq!(c.status, CampaignStatus::Cancelled);
        assert_eq!(c.completed_at, Some(t + 5));
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Cancelled, 8), (InFlight, 2)]);
        for row in all_messages(store, id, Some(Cancelled)).await {
            assert_eq!(row.last_error.as_deref(), Some("campaign cancelled"));
        }
        for row in all_messages(store, id, Some(InFlight)).await {
            assert_eq!(row.owner.as_deref(), Some("A"));
        }
        let last = store.events(id).await.unwrap().pop().unwrap();
        assert_eq!(last.actor, "bob");
        assert_eq!(last.from_status.as_deref(), Some("sending"));
        assert_eq!(last.to_status, "cancelled");
        assert!(last.reason.contains('8'), "{}", last.reason);

        assert!(
            store
                .claim(id, "A", t + HOUR, t + 2 * HOUR, 100)
                .await
                .unwrap()
                .is_empty()
        );

        // The sends that were in flight finish and are recorded.
        let report = store
            .record_outcomes(
                "A",
                t + 6,
                &[outcome(&m[1], sent("p-1")), outcome(&m[2], failed("bad"))],
            )
            .await
            .unwrap();
        assert_eq!(report.applied, 2);
        assert!(report.completed.is_empty());
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Cancelled, 8), (Sent, 1), (Failed, 1)]);
        assert_eq!(c.status, CampaignStatus::Cancelled);
        assert_eq!(c.completed_at, Some(t + 5));
    }
);

both_stores!(manual_complete_is_guarded_and_audited, |db| async move {
    let store = &db.store;
    let t = now_ms();

    // Refused while anything is pending, saying how much.
    let busy = started(store, 5, t).await;
    let m = store.claim(busy, "A", t, t + MINUTE, 2).await.unwrap();
    let before = store.events(busy).await.unwrap().len();
    let msg = expect_conflict(
        store
            .transition(busy, CampaignAction::Complete, t, "carol", None)
            .await,
        "complete with pending work",
    );
    assert!(msg.contains("5 pending"), "{msg}");
    assert!(msg.contains("3 queued"), "{msg}");
    assert!(msg.contains("2 in_flight"), "{msg}");
    assert_eq!(status_of(store, busy).await, CampaignStatus::Sending);
    assert_eq!(store.events(busy).await.unwrap().len(), before);
    drop(m);

    // A paused campaign whose work drained may be marked complete.
    let id = started(store, 3, t).await;
    let m = claim_all(store, id, "A", t).await;
    store
        .transition(id, CampaignAction::Pause, t + 1, "carol", None)
        .await
        .unwrap();
    let msg = expect_conflict(
        store
            .transition(id, CampaignAction::Complete, t + 1, "carol", None)
            .await,
        "complete while in flight",
    );
    assert!(msg.contains("3 pending"), "{msg}");
    let report = store
        .record_outcomes(
            "A",
            t + 2,
            &m.iter()
                .map(|x| outcome(x, sent(&format!("p-{}", x.id))))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(report.applied, 3);
    assert!(
        report.completed.is_empty(),
        "a paused campaign stays paused"
    );
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.status, CampaignStatus::Paused);
    assert_eq!(c.counts.pending(), 0);

    let c = store
        .transition(id, CampaignAction::Complete, t + 3, "carol", None)
        .await
        .unwrap();
    assert_eq!(c.status, CampaignStatus::Completed);
    assert_eq!(c.completed_at, Some(t + 3));
    let last = store.events(id).await.unwrap().pop().unwrap();
    assert_eq!(last.actor, "carol");
    assert_eq!(last.from_status.as_deref(), Some("paused"));
    assert_eq!(last.to_status, "completed");
    assert_eq!(last.at, t + 3);
    assert_counters_match(store, id).await;
});

both_stores!(
    resume_of_a_drained_paused_campaign_completes_it,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 3, t).await;
        let m = claim_all(store, id, "A", t).await;
        store
            .transition(id, CampaignAction::Pause, t + 1, "dave", None)
            .await
            .unwrap();
        store
            .record_outcomes(
                "A",
                t + 2,
                &[
                    outcome(&m[0], sent("p-0")),
                    outcome(&m[1], sent("p-1")),
                    outcome(&m[2], failed("no")),
                ],
            )
            .await
            .unwrap();
        assert_eq!(status_of(store, id).await, CampaignStatus::Paused);

        let c = store
            .transition(id, CampaignAction::Resume, t + 3, "dave", None)
            .await
            .unwrap();
        assert_eq!(c.status, CampaignStatus::Completed);
        assert_eq!(c.completed_at, Some(t + 3));
        let events = store.events(id).await.unwrap();
        let tail: Vec<(Option<&str>, &str, &str)> = events
            .iter()
            .rev()
            .take(2)
            .rev()
            .map(|e| {
                (
                    e.from_status.as_deref(),
                    e.to_status.as_str(),
                    e.actor.as_str(),
                )
            })
            .collect();
        assert_eq!(
            tail,
            vec![
                (Some("paused"), "sending", "dave"),
                (Some("sending"), "completed", "dave")
            ]
        );
        assert_counters_match(store, id).await;
    }
);

// ------------------------------------------------------------------------------------------
// 7. The scheduler starts a campaign exactly once
// ------------------------------------------------------------------------------------------

both_stores!(scheduled_start_happens_exactly_once, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 25).await;
    let channel = sandbox_channel(store, "sb-sched").await;
    let t = now_ms();
    let id = new_campaign_at(store, org, list, channel, "Hi", Some(t - 1000)).await;
    let later = new_campaign_at(store, org, list, channel, "Hi", Some(t + HOUR)).await;
    let draft = new_campaign(store, org, list, channel, "Hi").await;
    let due = store.due_scheduled(t).await.unwrap();
    assert!(due.contains(&id) && !due.contains(&later) && !due.contains(&draft));

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .start_campaign(id, t, &format!("scheduler@i{i}"), Some(t))
                .await
                .unwrap()
        }));
    }
    let mut started_n = 0;
    let mut not_due = 0;
    for task in tasks {
        match task.await.unwrap() {
            StartOutcome::Started {
                messages,
                queued,
                skipped,
                completed,
            } => {
                started_n += 1;
                assert_eq!((messages, queued, skipped, completed), (25, 25, 0, false));
            }
            StartOutcome::NotDue => not_due += 1,
        }
    }
    assert_eq!((started_n, not_due), (1, 7));
    let messages = all_messages(store, id, None).await;
    assert_eq!(messages.len(), 25);
    let addresses: BTreeSet<&str> = messages.iter().map(|m| m.address.as_str()).collect();
    assert_eq!(addresses.len(), 25);
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.status, CampaignStatus::Sending);
    let starts: Vec<_> = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.to_status == "sending")
        .collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].from_status.as_deref(), Some("scheduled"));
    assert!(starts[0].actor.starts_with("scheduler@"));
    assert!(!store.due_scheduled(t).await.unwrap().contains(&id));

    // Not yet due, or not scheduled: the scheduler's start does nothing.
    assert_eq!(
        store
            .start_campaign(later, t, "scheduler", Some(t))
            .await
            .unwrap(),
        StartOutcome::NotDue
    );
    assert_eq!(status_of(store, later).await, CampaignStatus::Scheduled);
    assert!(all_messages(store, later, None).await.is_empty());
    assert_eq!(
        store
            .start_campaign(draft, t, "scheduler", Some(t))
            .await
            .unwrap(),
        StartOutcome::NotDue
    );
    assert_eq!(status_of(store, draft).await, CampaignStatus::Draft);
    // An operator may start a scheduled campaign early.
    assert!(matches!(
        store.start_campaign(later, t, "op", None).await.unwrap(),
        StartOutcome::Started { messages: 25, .. }
    ));
});

// ------------------------------------------------------------------------------------------
// 8. The reconciler
// ------------------------------------------------------------------------------------------

// Messages in doubt are asked about by one instance at a time (reconciler.rs
// `ask_providers`), and a dead asker gives them back at once, not at the end of its lease.
both_stores!(
    in_doubt_lookups_are_taken_by_one_asker_and_given_back_when_it_dies,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        for (who, at) in [("sender", t - HOUR), ("asker-a", t), ("asker-b", t)] {
            store.register_instance(&instance(who, at)).await.unwrap();
        }
        let id = started(store, 6, t).await;
        let claimed = store.claim(id, "sender", t, t + 1000, 6).await.unwrap();
        let ids: Vec<_> = claimed.iter().map(|m| m.id).collect();
        let t1 = t + 2000;
        assert!(store.heartbeat("asker-a", t1).await.unwrap());
        assert!(store.heartbeat("asker-b", t1).await.unwrap());
        let found = store.mark_in_doubt(t1, t1 - MINUTE, &[]).await.unwrap();
        assert_eq!(found, vec![(id, 6)]);

        // A takes four for a minute; B, asking at the same moment, gets only the other two.
        let lease = t1 + MINUTE;
        let a = store
            .take_in_doubt_for_lookup("asker-a", &ids[..4], t1, lease)
            .await
            .unwrap();
        assert_eq!(a.len(), 4);
        let b = store
            .take_in_doubt_for_lookup("asker-b", &ids, t1, lease)
            .await
            .unwrap();
        let b: BTreeSet<_> = b.into_iter().collect();
        assert_eq!(b, ids[4..].iter().copied().collect::<BTreeSet<MessageId>>());
        // Taken messages are not decided by the policy meanwhile.
        let report = store
            .resolve_in_doubt_limited(true, t1, t1, 5)
            .await
            .unwrap();
        assert_eq!(report.resent, 0, "{report:?}");

        // While both askers live, nothing is given back.
        assert_eq!(
            store
                .release_lookups_of_dead(t1 + 100, t1 - MINUTE, &[])
                .await
                .unwrap(),
            0
        );
        // B settles one of its two (not at the provider: due again for the policy).
        store.defer_in_doubt(&ids[4..5], t1).await.unwrap();
        // A dies (proved dead on this host): its four are due at once, B's remaining one
        // is not.
        let t2 = t1 + 500;
        let released = store
            .release_lookups_of_dead(t2, t1 - MINUTE, &["asker-a".to_string()])
            .await
            .unwrap();
        assert_eq!(released, 4);
        let report = store
            .resolve_in_doubt_limited(true, t2, t2, 5)
            .await
            .unwrap();
        assert_eq!(report.resent, 5, "A's four and B's settled one: {report:?}");
        let row = message(store, id, ids[5]).await;
        assert_eq!(row.status, InDoubt, "B still holds its last one");
        // B falls silent (its heartbeat older than the staleness bound) before its lease
        // ends: its lookup is given back as well.
        let t3 = t2 + 1000;
        assert_eq!(store.release_lookups_of_dead(t3, t3, &[]).await.unwrap(), 1);
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Queued, 5), (InDoubt, 1)]);
    }
);

both_stores!(
    dead_owners_work_is_in_doubt_and_live_owners_work_is_kept,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        store
            .register_instance(&instance("dead-1", t - HOUR))
            .await
            .unwrap();
        store
            .register_instance(&instance("dead-2", t - HOUR))
            .await
            .unwrap();
        store
            .register_instance(&instance("live-1", t))
            .await
            .unwrap();
        let id = started(store, 12, t).await;
        let dead = store.claim(id, "dead-1", t, t + 30_000, 4).await.unwrap();
        let live = store.claim(id, "live-1", t, t + 30_000, 3).await.unwrap();
        let live_ids: BTreeSet<_> = live.iter().map(|m| m.id).collect();
        let dead_ids: BTreeSet<_> = dead.iter().map(|m| m.id).collect();

        let live_untouched = |at: &'static str| {
            let store = store.clone();
            let live_ids = live_ids.clone();
            async move {
                for mid in &live_ids {
                    let row = message(&store, id, *mid).await;
                    assert_eq!(
                        (row.status, row.owner.as_deref()),
                        (InFlight, Some("live-1")),
                        "{at}: a live owner's message was taken"
                    );
                }
            }
        };

        // The dead owner's lease has not run out yet: nothing is taken.
        assert!(
            store
                .mark_in_doubt(t + 1000, t + 1000 - MINUTE, &[])
                .await
                .unwrap()
                .is_empty()
        );

        // Ten minutes later the live instance has kept its heartbeat; the dead one has not.
        let t2 = t + 10 * MINUTE;
        assert!(store.heartbeat("live-1", t2).await.unwrap());
        let found = store.mark_in_doubt(t2, t2 - MINUTE, &[]).await.unwrap();
        assert_eq!(found, vec![(id, 4)]);
        live_untouched("after mark_in_doubt").await;
        for mid in &dead_ids {
            let row = message(store, id, *mid).await;
            assert_eq!(row.status, InDoubt);
            assert!(row.was_in_doubt);
            assert!(
                row.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("dead-1")),
                "{:?}",
                row.last_error
            );
        }
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Queued, 5), (InFlight, 3), (InDoubt, 4)]);
        assert_eq!(c.in_doubt_total, 4);
        assert_eq!(c.status, CampaignStatus::Sending);
        // Marking again finds nothing more.
        assert!(
            store
                .mark_in_doubt(t2, t2 - MINUTE, &[])
                .await
                .unwrap()
                .is_empty()
        );

        // A fresh heartbeat protects the live owner's work even when its leases have lapsed.
        let t3 = t2 + 10 * MINUTE;
        assert!(store.heartbeat("live-1", t3).await.unwrap());
        assert!(
            store
                .mark_in_doubt(t3, t3 - MINUTE, &[])
                .await
                .unwrap()
                .is_empty()
        );
        live_untouched("with a lapsed lease but a fresh heartbeat").await;
        let rows = store.instances().await.unwrap();
        let live_row = rows.iter().find(|i| i.id == "live-1").unwrap();
        assert_eq!((live_row.heartbeat_at, live_row.in_flight), (t3, 3));

        // The dead owner's late outcomes are stale.
        let report = store
            .record_outcomes(
                "dead-1",
                t3,
                &dead
                    .iter()
                    .map(|m| outcome(m, sent("late")))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        assert_eq!((report.applied, report.stale), (0, 4));

        // The policy acts only on messages in doubt since before `older_than`.
        let r = store.resolve_in_doubt(true, t3, t2 - 1).await.unwrap();
        assert_eq!((r.resent, r.failed, r.cancelled), (0, 0, 0));
        let r = store.resolve_in_doubt(true, t3, t3).await.unwrap();
        assert_eq!((r.resent, r.failed, r.cancelled), (4, 0, 0));
        assert!(r.completed.is_empty());
        for mid in &dead_ids {
            let row = message(store, id, *mid).await;
            assert_eq!(row.status, Queued);
            assert_eq!(row.owner, None);
            assert!(
                row.was_in_doubt,
                "the message stays marked as once in doubt"
            );
        }
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Queued, 9), (InFlight, 3)]);
        assert_eq!(c.in_doubt_total, 4);

        // Policy `fail`.
        let dead2 = store.claim(id, "dead-2", t3, t3 + 1000, 2).await.unwrap();
        let t4 = t3 + 10 * MINUTE;
        assert!(store.heartbeat("live-1", t4).await.unwrap());
        assert_eq!(
            store.mark_in_doubt(t4, t4 - MINUTE, &[]).await.unwrap(),
            vec![(id, 2)]
        );
        live_untouched("second pass").await;
        let r = store.resolve_in_doubt(false, t4, t4).await.unwrap();
        assert_eq!((r.resent, r.failed, r.cancelled), (0, 2, 0));
        for m in &dead2 {
            let row = message(store, id, m.id).await;
            assert_eq!(row.status, Failed);
            assert!(
                row.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("fail")),
                "{:?}",
                row.last_error
            );
        }
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Queued, 7), (InFlight, 3), (Failed, 2)]);
        assert_eq!(c.in_doubt_total, 6);

        // An owner the caller proved dead loses its work even before its lease runs out.
        store
            .register_instance(&instance("dead-3", t4))
            .await
            .unwrap();
        let d3 = store.claim(id, "dead-3", t4, t4 + HOUR, 1).await.unwrap();
        assert_eq!(d3.len(), 1);
        assert_eq!(
            store
                .mark_in_doubt(t4, t4 - MINUTE, &["dead-3".to_string()])
                .await
                .unwrap(),
            vec![(id, 1)]
        );
        live_untouched("dead_owners pass").await;
        assert_eq!(store.campaign(id).await.unwrap().in_doubt_total, 7);
        let r = store.resolve_in_doubt(true, t4, t4).await.unwrap();
        assert_eq!(r.resent, 1);

        // Drain everything through the live owner: the last outcome completes the campaign.
        let rest = store.claim(id, "live-1", t4, t4 + HOUR, 100).await.unwrap();
        assert_eq!(rest.len(), 7);
        let report = store
            .record_outcomes(
                "live-1",
                t4 + 1,
                &rest
                    .iter()
                    .chain(live.iter())
                    .map(|m| outcome(m, sent(&format!("p-{}", m.id))))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        assert_eq!(report.applied, 10);
        assert_eq!(report.completed, vec![id]);
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        expect_counts(&c.counts, &[(Sent, 10), (Failed, 2)]);
        assert_eq!(c.in_doubt_total, 7);
    }
);

both_stores!(
    resolving_the_last_in_doubt_message_completes,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 2, t).await;
        let m = claim_all(store, id, "A", t).await;
        store
            .record_outcomes(
                "A",
                t + 1,
                &[
                    outcome(&m[0], sent("p-0")),
                    outcome(&m[1], unknown("timeout")),
                ],
            )
            .await
            .unwrap();
        assert_eq!(status_of(store, id).await, CampaignStatus::Sending);
        let r = store.resolve_in_doubt(false, t + 2, t + 2).await.unwrap();
        assert_eq!(r.failed, 1);
        assert_eq!(r.completed, vec![id]);
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        assert_eq!(c.completed_at, Some(t + 2));
        let last = store.events(id).await.unwrap().pop().unwrap();
        assert_eq!(last.to_status, "completed");
        assert_eq!(last.actor, "reconciler");
    }
);

both_stores!(
    finalize_drained_completes_a_forgotten_campaign,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 3, t).await;
        let m = claim_all(store, id, "A", t).await;
        let report = store
            .record_outcomes(
                "A",
                t + 1,
                &m.iter()
                    .map(|x| outcome(x, failed("no")))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        assert_eq!(report.completed, vec![id]);
        let busy = started(store, 2, t).await;
        // Nothing is left sending with no work: the backstop finds nothing.
        assert!(!store.finalize_drained(t + 2).await.unwrap().contains(&id));

        // Simulate the incident: the completion was lost and the campaign reads `sending`.
        let n = db
            .raw_exec(
                "UPDATE campaigns SET status = 'sending', completed_at = NULL WHERE id = $1",
                id,
            )
            .await;
        assert_eq!(n, 1);
        assert_eq!(status_of(store, id).await, CampaignStatus::Sending);

        let done = store.finalize_drained(t + 5).await.unwrap();
        assert!(done.contains(&id), "{done:?}");
        assert!(
            !done.contains(&busy),
            "a campaign with pending work was finalised"
        );
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        assert_eq!(c.completed_at, Some(t + 5));
        let last = store.events(id).await.unwrap().pop().unwrap();
        assert_eq!(last.actor, "reconciler");
        assert_eq!(last.from_status.as_deref(), Some("sending"));
        assert_eq!(last.to_status, "completed");
        assert_eq!(last.at, t + 5);
        assert!(store.finalize_drained(t + 6).await.unwrap().is_empty());
        assert_eq!(status_of(store, busy).await, CampaignStatus::Sending);
    }
);

// ------------------------------------------------------------------------------------------
// 9. Receipts
// ------------------------------------------------------------------------------------------

both_stores!(receipts_never_move_a_message_backwards, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 4, t).await;
    let ch = store.campaign(id).await.unwrap().channel_id;
    let m = claim_all(store, id, "A", t).await;
    store
        .record_outcomes(
            "A",
            t + 1,
            &[
                outcome(&m[0], sent("p-1")),
                outcome(&m[1], sent("p-2")),
                outcome(&m[2], sent("p-3")),
            ],
        )
        .await
        .unwrap();
    let rep = |applied, ignored, kept| ReceiptReport {
        applied,
        ignored,
        kept,
    };

    assert_eq!(
        store
            .apply_receipts(&[receipt(ch, "p-1", Delivered)], t + 2)
            .await
            .unwrap(),
        rep(1, 0, 0)
    );
    let c = assert_counters_match(store, id).await;
    expect_counts(&c.counts, &[(Sent, 2), (Delivered, 1), (InFlight, 1)]);
    assert_eq!(
        store
            .apply_receipts(&[receipt(ch, "p-1", Read)], t + 3)
            .await
            .unwrap(),
        rep(1, 0, 0)
    );
    // Duplicated and late receipts are harmless.
    assert_eq!(
        store
            .apply_receipts(
                &[receipt(ch, "p-1", Delivered), receipt(ch, "p-1", Read)],
                t + 4
            )
            .await
            .unwrap(),
        rep(0, 2, 0)
    );
    assert_eq!(message(store, id, m[0].id).await.status, Read);
    // Out of order in one batch: read, then delivered.
    assert_eq!(
        store
            .apply_receipts(
                &[receipt(ch, "p-2", Read), receipt(ch, "p-2", Delivered)],
                t + 4
            )
            .await
            .unwrap(),
        rep(1, 1, 0)
    );
    assert_eq!(message(store, id, m[1].id).await.status, Read);
    // Undelivered with the provider's error; a same-rank receipt does not flip it.
    let undelivered = Receipt {
        channel_id: ch,
        provider_id: "p-3".to_string(),
        status: Undelivered,
        error: Some("carrier rejected".to_string()),
    };
    assert_eq!(
        store.apply_receipts(&[undelivered], t + 5).await.unwrap(),
        rep(1, 0, 0)
    );
    assert_eq!(
        store
            .apply_receipts(&[receipt(ch, "p-3", Delivered)], t + 5)
            .await
            .unwrap(),
        rep(0, 1, 0)
    );
    let r3 = message(store, id, m[2].id).await;
    assert_eq!(r3.status, Undelivered);
    assert_eq!(r3.last_error.as_deref(), Some("carrier rejected"));
    // A status that is not a receipt moves nothing.
    assert_eq!(
        store
            .apply_receipts(&[receipt(ch, "p-1", Queued)], t + 5)
            .await
            .unwrap(),
        rep(0, 1, 0)
    );
    let c = assert_counters_match(store, id).await;
    expect_counts(&c.counts, &[(Read, 2), (Undelivered, 1), (InFlight, 1)]);

    // A receipt ahead of its outcome is kept, then applied when the outcome records it.
    assert_eq!(
        store
            .apply_receipts(&[receipt(ch, "p-4", Delivered)], t + 6)
            .await
            .unwrap(),
        rep(0, 0, 1)
    );
    let c = assert_counters_match(store, id).await;
    expect_counts(&c.counts, &[(Read, 2), (Undelivered, 1), (InFlight, 1)]);
    let report = store
        .record_outcomes("A", t + 7, &[outcome(&m[3], sent("p-4"))])
        .await
        .unwrap();
    assert_eq!(report.completed, vec![id]);
    let r4 = message(store, id, m[3].id).await;
    assert_eq!(r4.status, Delivered, "the kept receipt was not applied");
    assert_eq!(r4.provider_id.as_deref(), Some("p-4"));
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.status, CampaignStatus::Completed);
    assert_eq!(c.completed_at, Some(t + 7));
    expect_counts(&c.counts, &[(Read, 2), (Undelivered, 1), (Delivered, 1)]);

    // Receipts after completion still count, and leave the campaign completed.
    assert_eq!(
        store
            .apply_receipts(&[receipt(ch, "p-4", Read)], t + 8)
            .await
            .unwrap(),
        rep(1, 0, 0)
    );
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.status, CampaignStatus::Completed);
    assert_eq!(c.completed_at, Some(t + 7));
    expect_counts(&c.counts, &[(Read, 3), (Undelivered, 1)]);
    let pending = db.raw_scalar("SELECT count(*) FROM pending_receipts").await;
    assert_eq!(pending, 0, "applied receipts are no longer kept");
});

both_stores!(several_kept_receipts_apply_in_order, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 2, t).await;
    let ch = store.campaign(id).await.unwrap().channel_id;
    let m = claim_all(store, id, "A", t).await;
    let kept = store
        .apply_receipts(
            &[receipt(ch, "q-1", Read), receipt(ch, "q-1", Delivered)],
            t + 1,
        )
        .await
        .unwrap();
    assert_eq!(kept.kept, 2);
    store
        .apply_receipts(&[receipt(ch, "q-2", Delivered)], t + 1)
        .await
        .unwrap();
    store
        .record_outcomes(
            "A",
            t + 2,
            &[outcome(&m[0], sent("q-1")), outcome(&m[1], sent("q-2"))],
        )
        .await
        .unwrap();
    assert_eq!(message(store, id, m[0].id).await.status, Read);
    assert_eq!(message(store, id, m[1].id).await.status, Delivered);
    let c = assert_counters_match(store, id).await;
    expect_counts(&c.counts, &[(Read, 1), (Delivered, 1)]);
    assert_eq!(c.status, CampaignStatus::Completed);
});

both_stores!(receipt_racing_its_outcome_is_not_lost, |db| async move {
    // A receipt and the outcome that records its provider id, committed at the same time
    // (two instances behind a load balancer), must still meet: invariant 7 says a kept
    // receipt is applied later, never dropped.
    let store = &db.store;
    let t = now_ms();
    let n = 40;
    let id = started(store, n, t).await;
    let ch = store.campaign(id).await.unwrap().channel_id;
    let m = claim_all(store, id, "A", t).await;

    if db.backend == Backend::Postgres {
        // Deterministic interleaving: the receipt's transaction has looked for the message
        // (not found) and is about to keep the receipt when the outcome commits.
        let blocker = db.raw().await;
        let watcher = db.raw().await;
        let mut lock = blocker.begin().await.unwrap();
        sqlx::query("LOCK TABLE pending_receipts IN SHARE MODE")
            .execute(&mut *lock)
            .await
            .unwrap();
        let s = store.clone();
        let receipt_task = tokio::spawn(async move {
            s.apply_receipts(&[receipt(ch, "race-0", Delivered)], t + 1)
                .await
        });
        let mut waited = 0;
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'pending_receipts'::regclass",
            )
            .fetch_one(&watcher)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            waited += 1;
            assert!(waited < 500, "the receipt never reached pending_receipts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = store
            .record_outcomes("A", t + 2, &[outcome(&m[0], sent("race-0"))])
            .await
            .unwrap();
        assert_eq!(report.applied, 1);
        lock.commit().await.unwrap();
        let kept = receipt_task.await.unwrap().unwrap();
        assert_eq!(kept.applied + kept.kept, 1);
        // Each transaction missed the other's row; the reconciler's sweep of kept receipts
        // (run every pass) applies it.
        assert_eq!(store.apply_kept_receipts(t + 3).await.unwrap(), kept.kept);
        assert_eq!(store.apply_kept_receipts(t + 3).await.unwrap(), 0);
        assert_eq!(
            message(store, id, m[0].id).await.status,
            Delivered,
            "a receipt kept while its provider id was being recorded was never applied"
        );
    }

    // Free-running: receipts and outcomes for the same provider ids in parallel.
    let mut tasks = Vec::new();
    let first = usize::from(db.backend == Backend::Postgres);
    for msg in m.iter().skip(first) {
        let pid = format!("race-{}", msg.id);
        let s = store.clone();
        let r = receipt(ch, &pid, Delivered);
        tasks.push(tokio::spawn(async move {
            s.apply_receipts(&[r], t + 3).await.unwrap();
        }));
        let s = store.clone();
        let o = outcome(msg, sent(&pid));
        tasks.push(tokio::spawn(async move {
            s.record_outcomes("A", t + 3, &[o]).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    store.apply_kept_receipts(t + 4).await.unwrap();
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.status, CampaignStatus::Completed);
    assert_eq!(
        c.counts.get(Delivered),
        n,
        "receipts were lost: {:?}",
        c.counts.iter().filter(|(_, v)| *v != 0).collect::<Vec<_>>()
    );
});

both_stores!(
    receipts_wait_for_the_campaign_row_only_to_add_their_counters,
    |db| async move {
        // The dispatcher's claims and outcome commits lock the campaign row, so a receipt
        // batch must not hold it while it moves messages and writes their events: it takes
        // the row only to add its counters. Two receipts for one message still meet in
        // order (delivered, then read), because the message's own row serialises them.
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 2, t).await;
        let ch = store.campaign(id).await.unwrap().channel_id;
        let m = claim_all(store, id, "A", t).await;
        let outcomes: Vec<Outcome> = m
            .iter()
            .map(|x| outcome(x, sent(&format!("cr-{}", x.id))))
            .collect();
        store.record_outcomes("A", t + 1, &outcomes).await.unwrap();
        let pid = format!("cr-{}", m[0].id);

        if db.backend == Backend::Postgres {
            let blocker = db.raw().await;
            let watcher = db.raw().await;
            // What every waiting Herald statement is, as PostgreSQL reports it.
            let waiting = |watcher: sqlx::AnyPool| async move {
                sqlx::query_scalar::<_, String>(
                    "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND datname = current_database() ORDER BY query_start",
                )
                .fetch_all(&watcher)
                .await
                .unwrap()
            };
            let until = |what: &'static str, want: usize, pred: fn(&str) -> bool| {
                let watcher = watcher.clone();
                async move {
                    for _ in 0..500 {
                        let now = waiting(watcher.clone()).await;
                        if now.iter().filter(|q| pred(q)).count() >= want {
                            return now;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    panic!("{what}: {:?}", waiting(watcher.clone()).await);
                }
            };
            // An outcome commit in progress: it holds the campaign row.
            let mut lock = blocker.begin().await.unwrap();
            sqlx::query("SELECT id FROM campaigns WHERE id = $1 FOR UPDATE")
                .bind(id)
                .execute(&mut *lock)
                .await
                .unwrap();
            let s = store.clone();
            let r = receipt(ch, &pid, Delivered);
            let delivered = tokio::spawn(async move { s.apply_receipts(&[r], t + 2).await });
            let seen = until(
                "the delivered receipt never waited for its counters",
                1,
                |q| q.starts_with("UPDATE campaigns"),
            )
            .await;
            assert!(
                !seen.iter().any(|q| q.contains("FROM campaigns")),
                "a receipt waited for the campaign row before moving its messages: {seen:?}"
            );
            // A second receipt for the same message waits on the message, not the campaign.
            let s = store.clone();
            let r = receipt(ch, &pid, Read);
            let read = tokio::spawn(async move { s.apply_receipts(&[r], t + 3).await });
            until(
                "the read receipt never waited on the message's row",
                1,
                |q| q.starts_with("SELECT id, status, last_error FROM messages"),
            )
            .await;
            lock.commit().await.unwrap();
            assert_eq!(delivered.await.unwrap().unwrap().applied, 1);
            assert_eq!(read.await.unwrap().unwrap().applied, 1);
        } else {
            let r = [receipt(ch, &pid, Delivered)];
            assert_eq!(store.apply_receipts(&r, t + 2).await.unwrap().applied, 1);
            let r = [receipt(ch, &pid, Read)];
            assert_eq!(store.apply_receipts(&r, t + 3).await.unwrap().applied, 1);
        }
        assert_eq!(message(store, id, m[0].id).await.status, Read);
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.counts.get(Read), 1);
        assert_eq!(c.counts.get(Sent), 1);
    }
);

// Receipts that lost the race with their outcomes by the thousand (a provider that reports
// faster than outcomes commit, as the sandbox does) are all applied by one reconciler pass,
// batch after batch, not one batch per pass: the counters must not trail the provider by
// minutes.
both_stores!(
    one_reconciler_pass_applies_more_than_a_batch_of_kept_receipts,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let n = herald::store::KEPT_RECEIPT_BATCH as i64 * 2 + 500;
        let id = started(store, n, t).await;
        let m = claim_all(store, id, "A", t).await;
        let outcomes: Vec<Outcome> = m
            .iter()
            .map(|x| outcome(x, sent(&format!("bulk-{}", x.id))))
            .collect();
        store.record_outcomes("A", t + 1, &outcomes).await.unwrap();
        // Kept after the outcomes committed, as each transaction missing the other's row
        // leaves them.
        let pool = db.raw().await;
        sqlx::query(
            "INSERT INTO pending_receipts (channel_id, provider_id, status, error, received_at) \
             SELECT c.channel_id, m.provider_id, 'delivered', NULL, $2 FROM messages m \
             JOIN campaigns c ON c.id = m.campaign_id WHERE m.campaign_id = $1",
        )
        .bind(id)
        .bind(t + 1)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let engine =
            herald::engine::Engine::new(store.clone(), herald::config::Settings::default(), "test");
        herald::engine::reconciler::reconcile_once(&engine.context(), false, &mut BTreeSet::new())
            .await
            .unwrap();
        let c = assert_counters_match(store, id).await;
        assert_eq!(
            c.counts.get(Delivered),
            n,
            "kept receipts left for later passes"
        );
        assert_eq!(
            db.raw_scalar("SELECT count(*) FROM pending_receipts").await,
            0
        );
    }
);

// ------------------------------------------------------------------------------------------
// 10. Drift
// ------------------------------------------------------------------------------------------

both_stores!(drift_is_reported_never_fixed, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 5, t).await;
    let clean = started(store, 2, t).await;
    let m = store.claim(id, "A", t, t + MINUTE, 2).await.unwrap();
    store
        .record_outcomes("A", t + 1, &[outcome(&m[0], sent("p-0"))])
        .await
        .unwrap();
    assert!(store.drift(&[id, clean]).await.unwrap().is_empty());

    let n = db
        .raw_exec(
            "UPDATE campaigns SET sent = sent + 5, queued = queued - 1 WHERE id = $1",
            id,
        )
        .await;
    assert_eq!(n, 1);
    for _ in 0..2 {
        let drift = store.drift(&[id, clean]).await.unwrap();
        let found: BTreeSet<(CampaignId, MessageStatus, i64, i64)> = drift
            .iter()
            .map(|d| (d.campaign_id, d.status, d.counter, d.actual))
            .collect();
        assert_eq!(
            found,
            BTreeSet::from([(id, Sent, 6, 1), (id, Queued, 2, 3)]),
            "{drift:?}"
        );
    }
    // Still corrupt: drift reports, it does not repair.
    let c = store.campaign(id).await.unwrap();
    assert_eq!((c.counts.get(Sent), c.counts.get(Queued)), (6, 2));
});

// ------------------------------------------------------------------------------------------
// 11. The sandbox provider's record
// ------------------------------------------------------------------------------------------

both_stores!(sandbox_record_and_stats, |db| async move {
    let store = &db.store;
    let ch = sandbox_channel(store, "sb-stats").await;
    let other = sandbox_channel(store, "sb-other").await;
    let entry = |campaign_id: CampaignId, message_id: MessageId, address: &str| SandboxEntry {
        channel_id: ch,
        campaign_id,
        message_id,
        address: Address::parse(address).unwrap(),
        provider_id: format!("sb-{campaign_id}-{message_id}-{}", rand::random::<u32>()),
        body: "Hi".to_string(),
        received_at: now_ms(),
    };
    store.sandbox_record(&[]).await.unwrap();
    assert_eq!(
        store.sandbox_stats(ch, None).await.unwrap(),
        SandboxStats {
            received: 0,
            distinct_recipients: 0,
            duplicates: 0
        }
    );
    store
        .sandbox_record(&[
            entry(CampaignId(1), MessageId(10), "+15550000001"),
            entry(CampaignId(1), MessageId(11), "+15550000002"),
            entry(CampaignId(2), MessageId(20), "+15550000001"),
        ])
        .await
        .unwrap();
    // The same message delivered twice (a resend after doubt).
    store
        .sandbox_record(&[entry(CampaignId(1), MessageId(10), "+15550000001")])
        .await
        .unwrap();
    assert_eq!(
        store.sandbox_stats(ch, None).await.unwrap(),
        SandboxStats {
            received: 4,
            distinct_recipients: 3,
            duplicates: 1
        }
    );
    assert_eq!(
        store.sandbox_stats(ch, Some(CampaignId(1))).await.unwrap(),
        SandboxStats {
            received: 3,
            distinct_recipients: 2,
            duplicates: 1
        }
    );
    assert_eq!(
        store.sandbox_stats(ch, Some(CampaignId(2))).await.unwrap(),
        SandboxStats {
            received: 1,
            distinct_recipients: 1,
            duplicates: 0
        }
    );
    assert_eq!(store.sandbox_stats(other, None).await.unwrap().received, 0);
});

both_stores!(
    sandbox_lost_counts_sends_the_provider_never_received,
    |db| async move {
        let store = &db.store;
        let now = now_ms();
        let id = started(store, 5, now).await;
        let channel = store.campaign(id).await.unwrap().channel_id;
        let other = sandbox_channel(store, "sb-lost-other").await;
        let claimed = claim_all(store, id, "w1", now).await;
        assert_eq!(claimed.len(), 5);
        // Four recorded as sent, the fifth failed.
        let outcomes: Vec<Outcome> = claimed
            .iter()
            .enumerate()
            .map(|(i, m)| match i {
                4 => outcome(m, failed("refused")),
                _ => outcome(m, sent(&format!("lost-{i}"))),
            })
            .collect();
        store.record_outcomes("w1", now, &outcomes).await.unwrap();
        assert_eq!(
            store.sandbox_lost(id).await.unwrap(),
            4,
            "nothing received yet"
        );
        let entry =
            |channel_id: ChannelId, campaign_id: CampaignId, m: &ClaimedMessage| SandboxEntry {
                channel_id,
                campaign_id,
                message_id: m.id,
                address: m.address.clone(),
                provider_id: format!("sb-lost-{}", rand::random::<u64>()),
                body: "Hi".to_string(),
                received_at: now,
            };
        store
            .sandbox_record(&[
                entry(channel, id, &claimed[0]),
                // Received twice: still one message, not lost.
                entry(channel, id, &claimed[1]),
                entry(channel, id, &claimed[1]),
                // Received by another channel, or for another campaign: still lost here.
                entry(other, id, &claimed[2]),
                entry(channel, CampaignId(id.get() + 1000), &claimed[3]),
                // Received, though Herald recorded it failed: not a lost message.
                entry(channel, id, &claimed[4]),
            ])
            .await
            .unwrap();
        assert_eq!(store.sandbox_lost(id).await.unwrap(), 2);
        store
            .sandbox_record(&[
                entry(channel, id, &claimed[2]),
                entry(channel, id, &claimed[3]),
            ])
            .await
            .unwrap();
        assert_eq!(store.sandbox_lost(id).await.unwrap(), 0);
    }
);

// ------------------------------------------------------------------------------------------
// 12. Random operation sequences keep every invariant
// ------------------------------------------------------------------------------------------

mod random_sequences {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::Config;

    const MESSAGES: i64 = 30;

    #[derive(Debug, Clone)]
    enum Op {
        Claim {
            owner: usize,
            limit: i64,
        },
        Record {
            owner: usize,
            picks: Vec<(Index, u8)>,
            stale: Vec<Index>,
        },
        /// The owner claims everything due and records every one of its sends as sent.
        Drain {
            owner: usize,
        },
        Pause,
        Resume,
        Cancel,
        /// The owner dies: mark_in_doubt (with it listed dead) and the in-doubt policy.
        Kill {
            owner: usize,
            resend: bool,
        },
        Receipt {
            message: Index,
            status: u8,
        },
        Finalize,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..2usize, 1..16i64).prop_map(|(owner, limit)| Op::Claim { owner, limit }),
            10 => (
                0..2usize,
                proptest::collection::vec((any::<Index>(), 0..10u8), 1..12),
                proptest::collection::vec(any::<Index>(), 0..2),
            )
                .prop_map(|(owner, picks, stale)| Op::Record { owner, picks, stale }),
            2 => (0..2usize).prop_map(|owner| Op::Drain { owner }),
            2 => Just(Op::Pause),
            3 => Just(Op::Resume),
            1 => Just(Op::Cancel),
            2 => (0..2usize, any::<bool>()).prop_map(|(owner, resend)| Op::Kill { owner, resend }),
            6 => (any::<Index>(), 0..4u8).prop_map(|(message, status)| Op::Receipt { message, status }),
            1 => Just(Op::Finalize),
        ]
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(op(), 1..60)
    }

    /// Shared by the cases of one run: the database, one list and one channel.
    struct Fixture {
        db: TestDb,
        raw: sqlx::AnyPool,
        org: OrgId,
        list: ListId,
        channel: ChannelId,
    }

    async fn fixture(backend: Backend) -> Fixture {
        let db = TestDb::new(backend).await;
        let (org, list) = seed_list(&db.store, MESSAGES).await;
        let channel = sandbox_channel(&db.store, "sb-prop").await;
        let raw = db.raw().await;
        Fixture {
            db,
            raw,
            org,
            list,
            channel,
        }
    }

    async fn in_flight_of(store: &Store, id: CampaignId, owner: &str) -> Vec<MessageId> {
        all_messages(store, id, Some(InFlight))
            .await
            .into_iter()
            .filter(|m| m.owner.as_deref() == Some(owner))
            .map(|m| m.id)
            .collect()
    }

    fn ignore_conflict(r: Result<herald::store::Campaign, StoreError>) {
        match r {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("transition failed: {e}"),
        }
    }

    async fn run_case(f: &Fixture, ops: Vec<Op>) {
        let store = &f.db.store;
        let mut now = now_ms();
        let id = new_campaign(store, f.org, f.list, f.channel, "Hi").await;
        store.start_campaign(id, now, "prop", None).await.unwrap();
        let owners = [format!("A-{id}"), format!("B-{id}")];
        for o in &owners {
            store.register_instance(&instance(o, now)).await.unwrap();
        }
        let ids: Vec<MessageId> = all_messages(store, id, None)
            .await
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids.len() as i64, MESSAGES);
        let mut last: BTreeMap<MessageId, MessageStatus> = BTreeMap::new();
        check(f, id, &mut last, "start").await;

        for (step, op) in ops.into_iter().enumerate() {
            now += 1000;
            let what = format!("step {step}: {op:?}");
            match op {
                Op::Claim { owner, limit } => {
                    let got = store
                        .claim(id, &owners[owner], now, now + 5000, limit)
                        .await
                        .unwrap();
                    assert!(got.len() as i64 <= limit, "{what}");
                }
                Op::Record {
                    owner,
                    picks,
                    stale,
                } => {
                    let mine = in_flight_of(store, id, &owners[owner]).await;
                    let mut outcomes = Vec::new();
                    let mut distinct = BTreeSet::new();
                    if !mine.is_empty() {
                        for (pick, kind) in &picks {
                            let mid = mine[pick.index(mine.len())];
                            distinct.insert(mid);
                            let kind = match kind {
                                0..=3 => sent(&format!("pv-{id}-{mid}")),
                                4 | 5 => retry("busy", now + 2000),
                                6 | 7 => failed("rejected"),
                                8 => OutcomeKind::Released,
                                _ => unknown("timeout"),
                            };
                            outcomes.push(Outcome {
                                attempt: None,
                                message_id: mid,
                                campaign_id: id,
                                kind,
                            });
                        }
                    }
                    // Outcomes for random messages: applied only if they happen to be in
                    // flight for this owner. Their provider ids are their own, as a real
                    // provider's would be.
                    for pick in &stale {
                        let mid = ids[pick.index(ids.len())];
                        if mine.contains(&mid) {
                            distinct.insert(mid);
                        }
                        outcomes.push(Outcome {
                            attempt: None,
                            message_id: mid,
                            campaign_id: id,
                            kind: sent(&format!("stale-{id}-{mid}-{step}")),
                        });
                    }
                    let report = store
                        .record_outcomes(&owners[owner], now, &outcomes)
                        .await
                        .unwrap();
                    assert_eq!(report.applied, distinct.len(), "{what}");
                    assert_eq!(report.applied + report.stale, outcomes.len(), "{what}");
                }
                Op::Drain { owner } => {
                    let owner = &owners[owner];
                    store.claim(id, owner, now, now + 5000, 1000).await.unwrap();
                    let outcomes: Vec<Outcome> = in_flight_of(store, id, owner)
                        .await
                        .into_iter()
                        .map(|mid| Outcome {
                            attempt: None,
                            message_id: mid,
                            campaign_id: id,
                            kind: sent(&format!("pv-{id}-{mid}")),
                        })
                        .collect();
                    let report = store.record_outcomes(owner, now, &outcomes).await.unwrap();
                    assert_eq!(report.applied, outcomes.len(), "{what}");
                    let c = store.campaign(id).await.unwrap();
                    if report.completed.contains(&id) {
                        assert_eq!(c.status, CampaignStatus::Completed, "{what}");
                        assert_eq!(c.completed_at, Some(now), "{what}");
                    }
                }
                Op::Pause => ignore_conflict(
                    store
                        .transition(id, CampaignAction::Pause, now, "prop", None)
                        .await,
                ),
                Op::Resume => ignore_conflict(
                    store
                        .transition(id, CampaignAction::Resume, now, "prop", None)
                        .await,
                ),
                Op::Cancel => ignore_conflict(
                    store
                        .transition(id, CampaignAction::Cancel, now, "prop", None)
                        .await,
                ),
                Op::Kill { owner, resend } => {
                    let dead = &owners[owner];
                    let alive = &owners[1 - owner];
                    assert!(store.heartbeat(alive, now).await.unwrap());
                    let kept = in_flight_of(store, id, alive).await;
                    let dead_before = in_flight_of(store, id, dead).await;
                    let found = store
                        .mark_in_doubt(now, now - MINUTE, std::slice::from_ref(dead))
                        .await
                        .unwrap();
                    let here = found
                        .iter()
                        .find(|(c, _)| *c == id)
                        .map(|(_, n)| *n)
                        .unwrap_or(0);
                    assert_eq!(here, dead_before.len() as i64, "{what}");
                    assert_eq!(
                        in_flight_of(store, id, alive).await,
                        kept,
                        "{what}: a live owner's message was taken"
                    );
                    assert!(in_flight_of(store, id, dead).await.is_empty(), "{what}");
                    store.resolve_in_doubt(resend, now, now).await.unwrap();
                    assert!(
                        all_messages(store, id, Some(InDoubt)).await.is_empty(),
                        "{what}"
                    );
                }
                Op::Receipt { message, status } => {
                    let mid = ids[message.index(ids.len())];
                    let status = [Delivered, Read, Undelivered, Failed][status as usize];
                    store
                        .apply_receipts(
                            &[receipt(f.channel, &format!("pv-{id}-{mid}"), status)],
                            now,
                        )
                        .await
                        .unwrap();
                }
                Op::Finalize => {
                    let done = store.finalize_drained(now).await.unwrap();
                    assert!(
                        !done.contains(&id),
                        "{what}: the reconciler had to finalise a campaign the outcome should have completed"
                    );
                }
            }
            check(f, id, &mut last, &what).await;
        }
        if std::env::var_os("HERALD_PROP_TRACE").is_some() {
            let c = store.campaign(id).await.unwrap();
            eprintln!(
                "case end: {} {:?}",
                c.status,
                c.counts.iter().filter(|(_, n)| *n != 0).collect::<Vec<_>>()
            );
        }
    }

    /// The invariants after every step.
    async fn check(
        f: &Fixture,
        id: CampaignId,
        last: &mut BTreeMap<MessageId, MessageStatus>,
        what: &str,
    ) {
        let store = &f.db.store;
        let c = store.campaign(id).await.unwrap();
        let actual = store.recount(id).await.unwrap();
        assert_eq!(c.counts, actual, "{what}: counters differ from the recount");
        assert_eq!(c.total, MESSAGES, "{what}");
        assert_eq!(actual.total(), MESSAGES, "{what}");
        let pending = actual.pending();
        match c.status {
            CampaignStatus::Sending => {
                assert!(pending > 0, "{what}: sending with nothing pending")
            }
            CampaignStatus::Completed => {
                assert_eq!(pending, 0, "{what}: completed with work pending");
                assert!(c.completed_at.is_some(), "{what}");
            }
            CampaignStatus::Paused | CampaignStatus::Cancelled => {}
            CampaignStatus::Draft | CampaignStatus::Scheduled => {
                panic!("{what}: a started campaign went back to {}", c.status)
            }
        }
        if pending == 0 {
            assert!(
                matches!(
                    c.status,
                    CampaignStatus::Completed | CampaignStatus::Paused | CampaignStatus::Cancelled
                ),
                "{what}: nothing pending but the campaign is {}",
                c.status
            );
        }
        let messages = all_messages(store, id, None).await;
        let ever_in_doubt = messages.iter().filter(|m| m.was_in_doubt).count() as i64;
        assert!(
            c.in_doubt_total >= ever_in_doubt,
            "{what}: in_doubt_total {} < {ever_in_doubt} messages once in doubt",
            c.in_doubt_total
        );
        for m in &messages {
            if let Some(prev) = last.insert(m.id, m.status) {
                if !prev.is_pending() {
                    assert!(
                        !m.status.is_pending(),
                        "{what}: message {} went from {prev} back to {}",
                        m.id,
                        m.status
                    );
                }
                if let (Some(a), Some(b)) = (prev.receipt_rank(), m.status.receipt_rank()) {
                    assert!(
                        b >= a,
                        "{what}: message {} went from {prev} back to {}",
                        m.id,
                        m.status
                    );
                }
                if matches!(prev, Skipped | Cancelled) {
                    assert_eq!(prev, m.status, "{what}: message {} left {prev}", m.id);
                }
            }
            if m.status == InFlight {
                assert!(
                    m.owner.is_some(),
                    "{what}: message {} in flight with no owner",
                    m.id
                );
            }
        }
        // Invariant 7: no receipt stays kept once its provider id is recorded.
        let stuck: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pending_receipts p JOIN messages m ON m.provider_id = p.provider_id WHERE m.campaign_id = $1",
        )
        .bind(id)
        .fetch_one(&f.raw)
        .await
        .unwrap();
        assert_eq!(stuck, 0, "{what}: a kept receipt was never applied");
    }

    fn run(backend: Backend, cases: u32) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let f = rt.block_on(fixture(backend));
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        proptest!(config, |(ops in ops())| {
            rt.block_on(run_case(&f, ops));
        });
        rt.block_on(async move {
            f.raw.close().await;
            f.db.store.close().await;
            drop(f);
        });
    }

    #[test]
    fn sqlite() {
        run(Backend::Sqlite, 24);
    }

    #[test]
    fn postgres() {
        run(Backend::Postgres, 8);
    }
}

// A message that keeps ending in doubt is not resent forever: once it has used its
// attempts, the resend policy fails it with the reason.
both_stores!(
    in_doubt_resend_respects_the_attempt_limit,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 2, t).await;
        let m = store.claim(id, "A", t, t + 1, 2).await.unwrap();
        store
            .record_outcomes(
                "A",
                t,
                &m.iter()
                    .map(|x| {
                        outcome(
                            x,
                            OutcomeKind::Unknown {
                                error: "timeout".into(),
                            },
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        // Attempts are 1 each; a limit of 1 means no resend.
        let report = store
            .resolve_in_doubt_limited(true, t + 1, t + 1, 1)
            .await
            .unwrap();
        assert_eq!((report.resent, report.failed), (0, 2));
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        let failed = message(store, id, m[0].id).await;
        assert!(
            failed
                .last_error
                .unwrap_or_default()
                .contains("retry_max_attempts")
        );
    }
);

// An outcome belongs to one claim: the late outcome of an earlier claim of the same owner
// (cut off, its message taken back and re-claimed) changes nothing.
both_stores!(
    late_outcome_of_an_earlier_claim_is_refused,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 1, t).await;
        let first = store.claim(id, "A", t, t + 1, 1).await.unwrap();
        assert_eq!(first[0].attempts, 1);
        store
            .mark_in_doubt(t + 10, t + 5, &["A".to_string()])
            .await
            .unwrap();
        store.resolve_in_doubt(true, t + 10, t + 10).await.unwrap();
        let second = store.claim(id, "A", t + 20, t + 60_000, 1).await.unwrap();
        assert_eq!(second[0].attempts, 2);
        let late = Outcome {
            attempt: Some(1),
            ..outcome(
                &first[0],
                OutcomeKind::Failed {
                    error: "late".into(),
                },
            )
        };
        let report = store.record_outcomes("A", t + 21, &[late]).await.unwrap();
        assert_eq!((report.applied, report.stale), (0, 1));
        let current = Outcome {
            attempt: Some(2),
            ..outcome(&second[0], sent("p-2"))
        };
        let report = store
            .record_outcomes("A", t + 22, &[current])
            .await
            .unwrap();
        assert_eq!(report.applied, 1);
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.status, CampaignStatus::Completed);
        assert_eq!(c.counts.get(Sent), 1);
    }
);

// A PostgreSQL server that never vacuums is named when an instance starts (serve, worker,
// bench): it slows every claim of a large campaign (BENCHMARKS.md, "A 10-million-recipient
// campaign"). The answer is compared with what the server itself says; SQLite has nothing to
// report.
both_stores!(a_server_without_autovacuum_is_named, |db| async move {
    let problem = db
        .store
        .server_maintenance_problem()
        .await
        .expect("read the server's settings");
    match db.backend {
        Backend::Sqlite => assert_eq!(problem, None),
        Backend::Postgres => {
            let raw = db.raw().await;
            let autovacuum: String =
                sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'autovacuum'")
                    .fetch_one(&raw)
                    .await
                    .expect("read autovacuum");
            if autovacuum == "off" {
                let problem = problem.expect("autovacuum off must be reported");
                assert!(
                    problem.contains("autovacuum is off") && problem.contains("autovacuum = on"),
                    "{problem}"
                );
            } else {
                assert_eq!(problem, None, "autovacuum is {autovacuum}");
            }
        }
    }
});

// `herald bench`'s latencies are ranked in the database (nearest rank), so a 10M campaign's
// never come into memory: the first, median, 99th percentile and last send of five sends
// 10..50 ms after the start, the unsent ones left out; nothing sent gives nothing.
both_stores!(
    send_latency_quantiles_rank_in_the_database,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 7, t).await;
        let quantiles = [0.0, 0.5, 0.99, 1.0];
        assert_eq!(
            store.send_latency_quantiles(id, &quantiles).await.unwrap(),
            vec![None; 4],
            "nothing sent yet"
        );
        let raw = db.raw().await;
        // Five of the seven sent, in an order unlike their ids; two never sent.
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE campaign_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&raw)
                .await
                .unwrap();
        for (mid, after) in ids.iter().zip([40i64, 10, 50, 20, 30]) {
            sqlx::query("UPDATE messages SET sent_at = $1 WHERE id = $2")
                .bind(t + after)
                .bind(mid)
                .execute(&raw)
                .await
                .unwrap();
        }
        assert_eq!(
            store.send_latency_quantiles(id, &quantiles).await.unwrap(),
            vec![Some(10), Some(30), Some(50), Some(50)]
        );
    }
);

// Claims and outcome commits hold their campaign row shared (`FOR KEY SHARE`) and take it
// exclusively only to move the counters at the end (`CampaignLock`): a claim goes through
// while another instance's commit is writing its messages, and a pause still waits for that
// commit and then stops claims. PostgreSQL: a transaction holding the share lock stands for
// the commit in progress; before this split the claim waited for it (`FOR UPDATE`). SQLite
// has one writer: the same sequence, without the concurrency.
both_stores!(
    claims_pass_commits_in_progress_and_a_pause_waits_for_them,
    |db| async move {
        let store = db.store.clone();
        let t = now_ms();
        let id = started(&store, 20, t).await;
        let first = claim_all(&store, id, "A", t).await;
        assert_eq!(first.len(), 20);
        // Give ten back, so there is something left to claim.
        let handed_back: Vec<Outcome> = first[..10]
            .iter()
            .map(|m| Outcome {
                message_id: m.id,
                campaign_id: id,
                attempt: Some(m.attempts),
                kind: OutcomeKind::Released,
            })
            .collect();
        store
            .record_outcomes("A", t + 1, &handed_back)
            .await
            .unwrap();
        let hang = Duration::from_secs(30);
        let raw = db.raw().await;
        let mut in_progress = None;
        if db.backend == Backend::Postgres {
            let mut tx = raw.begin().await.unwrap();
            sqlx::query("SELECT id FROM campaigns WHERE id = $1 FOR KEY SHARE")
                .bind(id.get())
                .execute(&mut *tx)
                .await
                .unwrap();
            in_progress = Some(tx);
        }
        let claimed = tokio::time::timeout(hang, store.claim(id, "B", t + 2, t + MINUTE, 5))
            .await
            .expect("a claim must not wait for another instance's commit in progress")
            .unwrap();
        assert_eq!(claimed.len(), 5);
        let pausing = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .transition(id, CampaignAction::Pause, t + 3, "op", None)
                    .await
            }
        });
        if let Some(tx) = in_progress {
            // The pause waits on the row lock until the commit in progress ends (watched
            // from another connection: the raw pool's one holds the transaction).
            wait_for_lock_waiter(&db.raw().await, "FOR UPDATE").await;
            assert!(
                !pausing.is_finished(),
                "a pause must wait for a commit in progress"
            );
            tx.commit().await.unwrap();
        }
        let paused = tokio::time::timeout(hang, pausing)
            .await
            .expect("the pause ends once the commit in progress has")
            .unwrap()
            .unwrap();
        assert_eq!(paused.status, CampaignStatus::Paused);
        assert!(
            store
                .claim(id, "B", t + 4, t + MINUTE, 5)
                .await
                .unwrap()
                .is_empty(),
            "a pause stops claims"
        );
        let c = assert_counters_match(&store, id).await;
        expect_counts(&c.counts, &[(Queued, 5), (InFlight, 15)]);
    }
);

// A pause must not be overtaken by claims that arrive after it, however they overlap
// (docs/DESIGN.md "Campaign lifecycle", Pause). On PostgreSQL a claim holds its campaign
// row `FOR KEY SHARE`, and a new `FOR KEY SHARE` used to join the holders even while the
// pause's `FOR UPDATE` waited: with several instances claiming back to back, the pause
// waited until sending ran dry. The campaign gate queues later claims behind the pause.
// SQLite's single writer runs the claim after the pause; the body checks the same outcome.
both_stores!(
    a_claim_that_arrives_after_a_waiting_pause_waits_for_it,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let id = started(store, 50, t).await;
        let claim = |owner: &'static str| {
            let s = store.clone();
            tokio::spawn(async move { s.claim(id, owner, t, t + MINUTE, 10).await })
        };
        let pause = || {
            let s = store.clone();
            tokio::spawn(async move {
                s.transition(id, CampaignAction::Pause, t + 1, "test", None)
                    .await
            })
        };
        if db.backend == Backend::Postgres {
            // Claim A stops at its counter update behind a raw row lock that a pause's
            // `FOR UPDATE` also waits for but a claim's `FOR KEY SHARE` does not: A is a
            // claim in progress when the pause arrives, and B arrives while it waits.
            let blocker = db.raw().await;
            let watcher = db.raw().await;
            let mut hold = blocker.begin().await.unwrap();
            sqlx::query("SELECT id FROM campaigns WHERE id = $1 FOR NO KEY UPDATE")
                .bind(id)
                .fetch_one(&mut *hold)
                .await
                .unwrap();
            let a = claim("A");
            wait_for_lock_waiters(&watcher, "transactionid", 1).await;
            let paused = pause();
            wait_for_lock_waiters(&watcher, "advisory", 1).await;
            let b = claim("B");
            // Before the gate, B took the row and its messages and waited on the raw lock
            // instead: then this wait fails after 30 s, as the assertion below would.
            wait_for_lock_waiters(&watcher, "advisory", 2).await;
            hold.commit().await.unwrap();
            let a = a.await.unwrap().unwrap();
            assert_eq!(
                a.len(),
                10,
                "the claim in progress before the pause completes"
            );
            let c = paused.await.unwrap().unwrap();
            assert_eq!(c.status, CampaignStatus::Paused);
            let b = b.await.unwrap().unwrap();
            assert!(
                b.is_empty(),
                "a claim that arrived while the pause waited took {} messages of a campaign \
                 being paused",
                b.len()
            );
        } else {
            let a = claim("A").await.unwrap().unwrap();
            assert_eq!(a.len(), 10);
            let c = pause().await.unwrap().unwrap();
            assert_eq!(c.status, CampaignStatus::Paused);
            assert!(claim("B").await.unwrap().unwrap().is_empty());
        }
        let c = assert_counters_match(store, id).await;
        expect_counts(&c.counts, &[(Queued, 40), (InFlight, 10)]);
    }
);

/// Waits (at most 30 s) until exactly `n` other backends of this test's database wait for
/// a lock of kind `event` (`transactionid`: a row another transaction holds; `advisory`).
async fn wait_for_lock_waiters(raw: &sqlx::AnyPool, event: &str, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND wait_event = $1 AND datname = current_database() AND pid <> pg_backend_pid()",
        )
        .bind(event)
        .fetch_one(raw)
        .await
        .unwrap();
        if waiting == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} statements did not wait for a lock of kind {event} within 30 s ({waiting} did)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 30 s) until a PostgreSQL backend waits for a row lock in a statement
/// containing `fragment`.
async fn wait_for_lock_waiter(raw: &sqlx::AnyPool, fragment: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND datname = current_database() AND position($1 in query) > 0",
        )
        .bind(fragment)
        .fetch_one(raw)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no statement with {fragment:?} waited for a lock within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// A campaign's message pages (the export's and the API's list) walk the primary key between
// the ids its start recorded (migration 0026). Another campaign started at the same moment
// can have ids in that range: the pages still hold this campaign's messages only, each
// once, and nothing for another organisation.
both_stores!(
    message_pages_hold_the_campaigns_own_messages_when_ranges_overlap,
    |db| async move {
        let store = &db.store;
        let now = now_ms();
        let first = started(store, 30, now).await;
        let second = started(store, 20, now).await;
        let org = store.default_org().await.unwrap();
        let other_org = store.create_organisation("elsewhere").await.unwrap();
        for id in [first, second] {
            // As if both starts had interleaved: each range spans every message.
            db.raw_exec(
                "UPDATE campaigns SET first_message_id = (SELECT min(id) FROM messages), \
                 last_message_id = (SELECT max(id) FROM messages) WHERE id = $1",
                id,
            )
            .await;
        }
        for (id, n) in [(first, 30), (second, 20)] {
            let expected: Vec<MessageId> = all_messages(store, id, None)
                .await
                .iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(expected.len(), n);
            let exported: Vec<MessageId> = exported(store, org, id, 7)
                .await
                .iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(exported, expected, "export of {id}");
            let listed = store
                .api_campaign_messages(org, id, None, MessageId(0), 1000)
                .await
                .unwrap();
            assert!(listed.iter().all(|m| m.campaign_id == id));
            assert_eq!(
                listed.iter().map(|m| m.id).collect::<Vec<_>>(),
                expected,
                "API list of {id}"
            );
            let queued = store
                .api_campaign_messages(org, id, Some(Queued), MessageId(0), 1000)
                .await
                .unwrap();
            assert_eq!(queued.len(), n);
            assert!(
                store
                    .export_campaign_messages(other_org, id, MessageId(0), 1000)
                    .await
                    .unwrap()
                    .is_empty(),
                "another organisation exported {id}"
            );
            assert!(
                store
                    .api_campaign_messages(other_org, id, None, MessageId(0), 1000)
                    .await
                    .unwrap()
                    .is_empty(),
                "another organisation listed {id}"
            );
        }
    }
);
