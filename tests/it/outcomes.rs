//! Honest end states (issue 11): every way a campaign ends sets its outcome in the same
//! transaction, by `CampaignOutcome::of`; receipts after the end move a completed
//! campaign's outcome with its counters; and the engine's per-minute throughput history
//! counts every message recorded as sent or failed. On both stores.

use crate::both_stores;
use crate::support::{assert_counters_match, new_campaign, sandbox_channel, seed_list};
use herald::clock::now_ms;
use herald::domain::{CampaignAction, CampaignOutcome, CampaignStatus, MessageStatus};
use herald::ids::CampaignId;
use herald::store::{
    ClaimedMessage, Outcome, OutcomeKind, ProviderHas, Receipt, StartOutcome, Store,
    ThroughputMinute, minute_of,
};

const MINUTE: i64 = 60_000;

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

async fn claim_all(store: &Store, id: CampaignId, now: i64) -> Vec<ClaimedMessage> {
    store
        .claim(id, "A", now, now + MINUTE, 100_000)
        .await
        .unwrap()
}

fn sent(m: &ClaimedMessage) -> Outcome {
    Outcome {
        message_id: m.id,
        campaign_id: m.campaign_id,
        attempt: None,
        kind: OutcomeKind::Sent {
            provider_id: format!("p-{}", m.id),
        },
    }
}

/// The provider's answer never came: the message is in doubt.
fn timed_out(m: &ClaimedMessage) -> Outcome {
    Outcome {
        message_id: m.id,
        campaign_id: m.campaign_id,
        attempt: None,
        kind: OutcomeKind::Unknown {
            error: "timed out".into(),
        },
    }
}

fn failed(m: &ClaimedMessage) -> Outcome {
    Outcome {
        message_id: m.id,
        campaign_id: m.campaign_id,
        attempt: None,
        kind: OutcomeKind::Failed {
            error: "provider unreachable".into(),
        },
    }
}

async fn outcome(store: &Store, id: CampaignId) -> (CampaignStatus, Option<CampaignOutcome>) {
    let c = assert_counters_match(store, id).await;
    (c.status, c.outcome)
}

both_stores!(
    completion_by_the_last_outcome_sets_the_outcome,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        // Everything sent: succeeded.
        let ok = started(store, 3, t).await;
        assert_eq!(outcome(store, ok).await, (CampaignStatus::Sending, None));
        let ms = claim_all(store, ok, t).await;
        let all: Vec<Outcome> = ms.iter().map(sent).collect();
        let report = store.record_outcomes("A", t + 1, &all).await.unwrap();
        assert_eq!(report.completed, vec![ok]);
        assert_eq!(
            outcome(store, ok).await,
            (CampaignStatus::Completed, Some(CampaignOutcome::Succeeded))
        );

        // Everything failed (the provider was unreachable): failed, never a green "completed".
        let bad = started(store, 4, t).await;
        let ms = claim_all(store, bad, t).await;
        let all: Vec<Outcome> = ms.iter().map(failed).collect();
        store.record_outcomes("A", t + 1, &all).await.unwrap();
        assert_eq!(
            outcome(store, bad).await,
            (CampaignStatus::Completed, Some(CampaignOutcome::Failed))
        );

        // Some of each: partially failed.
        let mixed = started(store, 3, t).await;
        let ms = claim_all(store, mixed, t).await;
        let all = vec![sent(&ms[0]), sent(&ms[1]), failed(&ms[2])];
        store.record_outcomes("A", t + 1, &all).await.unwrap();
        assert_eq!(
            outcome(store, mixed).await,
            (
                CampaignStatus::Completed,
                Some(CampaignOutcome::PartiallyFailed)
            )
        );

        // No recipient at all: nothing failed, so succeeded (documented in README and API.md).
        let empty = started(store, 0, t).await;
        assert_eq!(
            outcome(store, empty).await,
            (CampaignStatus::Completed, Some(CampaignOutcome::Succeeded))
        );
    }
);

both_stores!(receipts_after_the_end_move_the_outcome, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 2, t).await;
    let channel = store.campaign(id).await.unwrap().channel_id;
    let ms = claim_all(store, id, t).await;
    store
        .record_outcomes("A", t + 1, &[sent(&ms[0]), sent(&ms[1])])
        .await
        .unwrap();
    assert_eq!(outcome(store, id).await.1, Some(CampaignOutcome::Succeeded));
    let undelivered = |m: &ClaimedMessage| Receipt {
        channel_id: channel,
        provider_id: format!("p-{}", m.id),
        status: MessageStatus::Undelivered,
        error: Some("30003".into()),
    };
    store
        .apply_receipts(&[undelivered(&ms[0])], t + 2)
        .await
        .unwrap();
    assert_eq!(
        outcome(store, id).await,
        (
            CampaignStatus::Completed,
            Some(CampaignOutcome::PartiallyFailed)
        )
    );
    store
        .apply_receipts(&[undelivered(&ms[1])], t + 3)
        .await
        .unwrap();
    assert_eq!(
        outcome(store, id).await,
        (CampaignStatus::Completed, Some(CampaignOutcome::Failed))
    );
});

both_stores!(cancel_sets_cancelled_and_keeps_it, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 10, t).await;
    let ms = store.claim(id, "A", t, t + MINUTE, 3).await.unwrap();
    assert_eq!(ms.len(), 3);
    store
        .record_outcomes("A", t + 1, &[sent(&ms[0])])
        .await
        .unwrap();
    let c = store
        .transition(id, CampaignAction::Cancel, t + 2, "test", None)
        .await
        .unwrap();
    assert_eq!(
        (c.status, c.outcome),
        (CampaignStatus::Cancelled, Some(CampaignOutcome::Cancelled))
    );
    // 1 sent, 2 still in flight, 7 cancelled: processed is 1 of 10, never 10 of 10.
    assert_eq!(c.counts.processed(), 1);
    assert_eq!(c.counts.get(MessageStatus::Cancelled), 7);
    assert_eq!(c.counts.pending(), 2);
    // The sends in flight at the cancel finish and are recorded; the outcome stays.
    store
        .record_outcomes("A", t + 3, &[sent(&ms[1]), failed(&ms[2])])
        .await
        .unwrap();
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.outcome, Some(CampaignOutcome::Cancelled));
    assert_eq!(c.counts.processed(), 3);
    assert_eq!(c.counts.pending(), 0);
    assert_eq!(c.total, 10);
});

both_stores!(mark_complete_sets_the_outcome, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 3, t).await;
    let ms = claim_all(store, id, t).await;
    store
        .transition(id, CampaignAction::Pause, t + 1, "test", None)
        .await
        .unwrap();
    // A paused campaign does not complete by itself when its last send is recorded.
    let all: Vec<Outcome> = ms.iter().map(failed).collect();
    store.record_outcomes("A", t + 2, &all).await.unwrap();
    assert_eq!(outcome(store, id).await, (CampaignStatus::Paused, None));
    let c = store
        .transition(id, CampaignAction::Complete, t + 3, "test", None)
        .await
        .unwrap();
    assert_eq!(
        (c.status, c.outcome),
        (CampaignStatus::Completed, Some(CampaignOutcome::Failed))
    );
    let pid = started(store, 2, t).await;
    let ms = claim_all(store, pid, t).await;
    store
        .transition(pid, CampaignAction::Pause, t + 1, "test", None)
        .await
        .unwrap();
    store
        .record_outcomes("A", t + 2, &[sent(&ms[0]), failed(&ms[1])])
        .await
        .unwrap();
    let c = store
        .transition(pid, CampaignAction::Complete, t + 3, "test", None)
        .await
        .unwrap();
    assert_eq!(c.outcome, Some(CampaignOutcome::PartiallyFailed));
});

both_stores!(finalizer_sets_the_outcome, |db| async move {
    let store = &db.store;
    let t = now_ms();
    let id = started(store, 2, t).await;
    let ms = claim_all(store, id, t).await;
    store
        .record_outcomes("A", t + 1, &[sent(&ms[0]), failed(&ms[1])])
        .await
        .unwrap();
    // Put it back to `sending` with nothing pending, as a lost completion would leave it:
    // the finalizer completes it and sets the outcome in the same transaction.
    let n = db
        .raw_exec(
            "UPDATE campaigns SET status = 'sending', completed_at = NULL, outcome = NULL WHERE id = $1",
            id,
        )
        .await;
    assert_eq!(n, 1);
    assert_eq!(outcome(store, id).await, (CampaignStatus::Sending, None));
    let done = store.finalize_drained(t + 2).await.unwrap();
    assert!(done.contains(&id), "{done:?}");
    assert_eq!(
        outcome(store, id).await,
        (
            CampaignStatus::Completed,
            Some(CampaignOutcome::PartiallyFailed)
        )
    );
});

both_stores!(throughput_history_counts_each_minute, |db| async move {
    let store = &db.store;
    let t = minute_of(now_ms()) + 5_000;
    let id = started(store, 7, t).await;
    let ms = claim_all(store, id, t).await;
    // Minute 1: two sent and one failed, in two batches; minute 3: three sent, one failed.
    store
        .record_outcomes("A", t, &[sent(&ms[0]), failed(&ms[1])])
        .await
        .unwrap();
    store
        .record_outcomes("A", t + 1_000, &[sent(&ms[2])])
        .await
        .unwrap();
    let later = t + 2 * MINUTE;
    store
        .record_outcomes(
            "A",
            later,
            &[sent(&ms[3]), sent(&ms[4]), sent(&ms[5]), failed(&ms[6])],
        )
        .await
        .unwrap();
    let history = store.campaign_throughput(id).await.unwrap();
    assert_eq!(
        history,
        vec![
            ThroughputMinute {
                minute: minute_of(t),
                sent: 2,
                failed: 1
            },
            ThroughputMinute {
                minute: minute_of(later),
                sent: 3,
                failed: 1
            },
        ]
    );
    // The history adds up to the messages the campaign processed, and stays after the end.
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.status, CampaignStatus::Completed);
    let recorded: i64 = history.iter().map(|m| m.sent + m.failed).sum();
    assert_eq!(recorded, c.counts.processed());
    // Another campaign's history is its own.
    let other = started(store, 1, t).await;
    assert!(store.campaign_throughput(other).await.unwrap().is_empty());
});

both_stores!(in_doubt_resolutions_count_in_the_history, |db| async move {
    let store = &db.store;
    let t = minute_of(now_ms()) + 1_000;
    let id = started(store, 2, t).await;
    let channel = store.campaign(id).await.unwrap().channel_id;
    let ms = claim_all(store, id, t).await;
    store
        .record_outcomes("A", t, &[timed_out(&ms[0]), timed_out(&ms[1])])
        .await
        .unwrap();
    assert!(store.campaign_throughput(id).await.unwrap().is_empty());
    // One is found at the provider (sent), the other failed by the in-doubt policy.
    assert!(
        store
            .resolve_in_doubt_sent(channel, ms[0].id, "p-found", t + 10)
            .await
            .unwrap()
    );
    let report = store.resolve_in_doubt(false, t + 20, t + 20).await.unwrap();
    assert_eq!(report.failed, 1);
    let c = assert_counters_match(store, id).await;
    assert_eq!(
        (c.status, c.outcome),
        (
            CampaignStatus::Completed,
            Some(CampaignOutcome::PartiallyFailed)
        )
    );
    let history = store.campaign_throughput(id).await.unwrap();
    assert_eq!(
        history,
        vec![ThroughputMinute {
            minute: minute_of(t),
            sent: 1,
            failed: 1
        }]
    );
});

/// Migrations 1 to 8, as a database that predates the outcome column has them.
fn migrations_before_0009(backend: crate::support::Backend) -> Vec<&'static str> {
    match backend {
        crate::support::Backend::Sqlite => vec![
            include_str!("../../crates/herald-store/migrations/sqlite/0001_init.sql"),
            include_str!("../../crates/herald-store/migrations/sqlite/0002_sandbox_idempotent.sql"),
            include_str!("../../crates/herald-store/migrations/sqlite/0003_channel_secrets.sql"),
            include_str!("../../crates/herald-store/migrations/sqlite/0004_webhook_events.sql"),
            include_str!("../../crates/herald-store/migrations/sqlite/0005_channel_rate.sql"),
            include_str!("../../crates/herald-store/migrations/sqlite/0006_receipt_message.sql"),
            include_str!("../../crates/herald-store/migrations/sqlite/0007_accounts.sql"),
            include_str!("../../crates/herald-store/migrations/sqlite/0008_webhook_scope.sql"),
        ],
        crate::support::Backend::Postgres => vec![
            include_str!("../../crates/herald-store/migrations/postgres/0001_init.sql"),
            include_str!(
                "../../crates/herald-store/migrations/postgres/0002_sandbox_idempotent.sql"
            ),
            include_str!("../../crates/herald-store/migrations/postgres/0003_channel_secrets.sql"),
            include_str!("../../crates/herald-store/migrations/postgres/0004_webhook_events.sql"),
            include_str!("../../crates/herald-store/migrations/postgres/0005_channel_rate.sql"),
            include_str!("../../crates/herald-store/migrations/postgres/0006_receipt_message.sql"),
            include_str!("../../crates/herald-store/migrations/postgres/0007_accounts.sql"),
            include_str!("../../crates/herald-store/migrations/postgres/0008_webhook_scope.sql"),
        ],
    }
}

/// A campaign row as schema 8 left it: status, sent, delivered, undelivered, failed,
/// skipped, cancelled, and the outcome migration 0009 must give it.
type OldRow = (
    &'static str,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<&'static str>,
);

/// Migration 0009 gives campaigns that ended before it their outcome by the same rule, and
/// leaves the others null.
async fn backfill(backend: crate::support::Backend) {
    let db = crate::support::TestDb::new_unmigrated(backend).await;
    let pool = db.raw().await;
    sqlx::raw_sql(
        "CREATE TABLE herald_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (i, sql) in migrations_before_0009(backend).into_iter().enumerate() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("migration {} failed: {e}", i + 1));
        sqlx::query(
            "INSERT INTO herald_migrations (version, name, applied_at) VALUES ($1, 'old', 0)",
        )
        .bind(i as i64 + 1)
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = &db.store;
    let org = store.default_org().await.unwrap();
    // The list as a schema-8 Herald made it (today's reads a segment's filter too).
    let list: herald::ids::ListId = sqlx::query_scalar(
        "INSERT INTO lists (org_id, name, created_at) VALUES ($1, 'old', 0) RETURNING id",
    )
    .bind(org)
    .fetch_one(&pool)
    .await
    .unwrap();
    let channel = sandbox_channel(store, "old").await;
    let rows: [OldRow; 6] = [
        ("completed", 5, 2, 0, 0, 1, 0, Some("succeeded")),
        ("completed", 0, 0, 0, 300, 0, 0, Some("failed")),
        ("completed", 3, 0, 1, 2, 0, 0, Some("partially_failed")),
        ("completed", 0, 0, 0, 0, 4, 0, Some("succeeded")),
        ("cancelled", 25, 0, 0, 0, 0, 275, Some("cancelled")),
        ("sending", 0, 0, 0, 3, 0, 0, None),
    ];
    let mut ids = Vec::new();
    for (status, sent, delivered, undelivered, failed, skipped, cancelled, _) in rows {
        // Written as a schema-8 Herald wrote them: today's store also writes events and
        // outcomes, tables and columns a schema-8 database does not have yet.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO campaigns (org_id, name, channel_id, list_id, body, status, created_at) \
             VALUES ($1, $2, $3, $4, 'Hi', 'draft', 0) RETURNING id",
        )
        .bind(org)
        .bind(format!("old-{}", ids.len()))
        .bind(channel)
        .bind(list)
        .fetch_one(&pool)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE campaigns SET status = $1, sent = $2, delivered = $3, undelivered = $4, failed = $5, \
             skipped = $6, cancelled = $7, total = $2 + $3 + $4 + $5 + $6 + $7 WHERE id = $8",
        )
        .bind(status)
        .bind(sent)
        .bind(delivered)
        .bind(undelivered)
        .bind(failed)
        .bind(skipped)
        .bind(cancelled)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
        ids.push(id);
    }
    pool.close().await;
    // 0027 replaces PostgreSQL's per-row foreign key on messages; SQLite has no 0027.
    let mut later: Vec<i64> = (9..=26).collect();
    if backend == crate::support::Backend::Postgres {
        later.push(27);
    }
    assert_eq!(store.migrate().await.unwrap(), later);
    for (id, row) in ids.iter().zip(rows) {
        let c = store.campaign(CampaignId(*id)).await.unwrap();
        assert_eq!(c.outcome.map(|o| o.as_str()), row.7, "{row:?}");
        assert_eq!(
            c.outcome,
            CampaignOutcome::of(c.status, &c.counts),
            "{row:?}"
        );
    }
}

mod migration_backfills_outcomes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::backfill(crate::support::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::backfill(crate::support::Backend::Postgres).await;
    }
}

both_stores!(
    a_pass_of_provider_answers_is_sent_in_one_batch_each_judged_alone,
    |db| async move {
        let store = &db.store;
        let t = now_ms();
        let (org, six) = seed_list(store, 6).await;
        let (_, two) = seed_list(store, 2).await;
        let x = sandbox_channel(store, &format!("x-{:08x}", rand::random::<u32>())).await;
        let y = sandbox_channel(store, &format!("y-{:08x}", rand::random::<u32>())).await;
        let a = new_campaign(store, org, six, x, "Hi").await;
        let b = new_campaign(store, org, two, x, "Hi").await;
        for id in [a, b] {
            store.start_campaign(id, t, "test", None).await.unwrap();
        }
        let ma = claim_all(store, a, t).await;
        let mb = claim_all(store, b, t).await;
        // a's last message was sent as "taken"; every other message is in doubt.
        let mut outcomes: Vec<Outcome> = ma[..5].iter().chain(&mb).map(timed_out).collect();
        outcomes.push(Outcome {
            kind: OutcomeKind::Sent {
                provider_id: "taken".into(),
            },
            ..timed_out(&ma[5])
        });
        store.record_outcomes("A", t, &outcomes).await.unwrap();
        // A delivery receipt for p1 came before anyone knew whose message p1 was.
        let kept = store
            .apply_receipts(
                &[Receipt {
                    channel_id: x,
                    provider_id: "p1".into(),
                    status: MessageStatus::Delivered,
                    error: None,
                }],
                t + 1,
            )
            .await
            .unwrap();
        assert_eq!(kept.kept, 1, "{kept:?}");
        let has = |channel, m: &ClaimedMessage, pid: &str| ProviderHas {
            channel_id: channel,
            message_id: m.id,
            provider_id: pid.into(),
        };
        let found = [
            has(x, &ma[0], "p0"),
            has(x, &ma[1], "p1"),
            // One provider id for two messages of the channel names neither for sure.
            has(x, &ma[2], "same"),
            has(x, &ma[3], "same"),
            // Another message of the channel already has this id.
            has(x, &ma[4], "taken"),
            // Another channel cannot speak for x's message.
            has(y, &mb[0], "pb0"),
            has(x, &mb[1], "pb1"),
        ];
        let sent = store
            .resolve_in_doubt_sent_many(&found, t + 10)
            .await
            .unwrap();
        let mut want = vec![ma[0].id, ma[1].id, mb[1].id];
        want.sort_unstable();
        assert_eq!(sent, want);
        // Judged again, nothing moves twice.
        assert!(
            store
                .resolve_in_doubt_sent_many(&found, t + 11)
                .await
                .unwrap()
                .is_empty()
        );
        let ca = assert_counters_match(store, a).await;
        assert_eq!(ca.counts.get(MessageStatus::InDoubt), 3, "{:?}", ca.counts);
        assert_eq!(
            ca.counts.get(MessageStatus::Delivered),
            1,
            "the kept receipt applied"
        );
        assert_eq!(ca.counts.get(MessageStatus::Sent), 2);
        let cb = assert_counters_match(store, b).await;
        assert_eq!(cb.counts.get(MessageStatus::InDoubt), 1);
        assert_eq!(cb.status, CampaignStatus::Sending);
        // The last one found completes its campaign in the same transaction.
        let last = store
            .resolve_in_doubt_sent_many(&[has(x, &mb[0], "pb0")], t + 12)
            .await
            .unwrap();
        assert_eq!(last, vec![mb[0].id]);
        let cb = assert_counters_match(store, b).await;
        assert_eq!(cb.status, CampaignStatus::Completed);
    }
);
