//! Message retention (issue 15, point 9; docs/CAMPAIGNS.md, "Retention"), on both stores:
//! the message rows of a campaign finished more than `message_retention_days` ago move to
//! the archive in bounded, crash-safe steps; its counters, outcome, failure groups and
//! export stay exactly as they were; campaigns finished since, still sending or paused are
//! untouched, and a retention of 0 archives nothing; an archive stopped half-way exports
//! right and the next pass finishes it; another organisation never reads it.

use crate::both_stores;
use crate::support::{exported, new_campaign, sandbox_channel, seed_list};
use herald::config::Settings;
use herald::domain::{CampaignAction, CampaignStatus, MessageStatus};
use herald::engine::Engine;
use herald::engine::reconciler::{archive_messages, archive_messages_limited};
use herald::export::{Export, ExportOf};
use herald::ids::{CampaignId, MessageId, OrgId};
use herald::store::{
    ArchiveLimits, ArchiveState, Campaign, ExportedMessage, Outcome, OutcomeKind, StartOutcome,
    Store, StoreError,
};

const DAY: i64 = 24 * 3_600_000;
const RETENTION_DAYS: u32 = 30;

fn settings(days: u32) -> Settings {
    Settings {
        message_retention_days: days,
        ..Settings::default()
    }
}

/// A campaign of `n` seeded recipients with a tracked link, started at `at`, one message
/// in seven failed (two reasons), the rest sent; so completed at `at`.
async fn finished(store: &Store, n: i64, at: i64) -> (OrgId, CampaignId) {
    let id = started(store, n, at).await;
    let claimed = store.claim(id, "A", at, at + 60_000, n).await.unwrap();
    assert_eq!(claimed.len() as i64, n);
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .enumerate()
        .map(|(i, m)| Outcome {
            message_id: m.id,
            campaign_id: id,
            attempt: None,
            kind: match i % 7 {
                0 => OutcomeKind::Failed {
                    error: "twilio 21211: Invalid 'To' Phone Number".into(),
                },
                3 => OutcomeKind::Failed {
                    error: format!("550 5.1.1 <{}>: Recipient address rejected", m.address),
                },
                _ => OutcomeKind::Sent {
                    provider_id: format!("SM{}", m.id),
                },
            },
        })
        .collect();
    store.record_outcomes("A", at, &outcomes).await.unwrap();
    // A click on the second message, so its row has clicks and a message_clicks row.
    let click = store
        .record_click(claimed[1].id, 1, at, true)
        .await
        .unwrap()
        .expect("the link");
    assert!(click.first_on_link && click.counted);
    let c = store.campaign(id).await.unwrap();
    assert_eq!(c.status, CampaignStatus::Completed);
    (c.org_id, id)
}

async fn started(store: &Store, n: i64, at: i64) -> CampaignId {
    let (org, list) = seed_list(store, n).await;
    let channel = sandbox_channel(store, &format!("sb-{:08x}", rand::random::<u32>())).await;
    let id = new_campaign(
        store,
        org,
        list,
        channel,
        "Hi {{ name }} {{ link(\"https://shop.example/sale\") }}",
    )
    .await;
    match store.start_campaign(id, at, "test", None).await.unwrap() {
        StartOutcome::Started { messages, .. } => assert_eq!(messages, n),
        StartOutcome::NotDue => panic!("an operator start returned NotDue"),
    }
    id
}

/// The whole CSV export, as the CLI and the API write it.
async fn csv(store: &Store, org: OrgId, id: CampaignId) -> Vec<u8> {
    let mut export = Export::new(store.clone(), org, ExportOf::CampaignMessages(id));
    let mut out = Vec::new();
    while let Some(chunk) = export.next_chunk().await.unwrap() {
        out.extend(chunk);
    }
    out
}

/// Message rows left, and archive chunks with the messages they hold.
async fn rows_and_chunks(db: &crate::support::TestDb, id: CampaignId) -> (i64, i64, i64) {
    let pool = db.raw().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE campaign_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let chunks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_archives WHERE campaign_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let archived: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(sum(message_count), 0) AS BIGINT) FROM message_archives WHERE campaign_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (rows, chunks, archived)
}

/// What must not change when a campaign is archived.
#[derive(Debug, PartialEq)]
struct Kept {
    status: CampaignStatus,
    outcome: Option<herald::domain::CampaignOutcome>,
    counts: herald::domain::Counts,
    total: i64,
    clicks: i64,
    clicked: i64,
    failures: Vec<(Option<String>, i64)>,
}

async fn kept(store: &Store, id: CampaignId) -> Kept {
    let c: Campaign = store.campaign(id).await.unwrap();
    let mut failures = store.failure_texts(id).await.unwrap();
    failures.sort();
    Kept {
        status: c.status,
        outcome: c.outcome,
        counts: c.counts,
        total: c.total,
        clicks: c.clicks,
        clicked: c.clicked,
        failures: herald::reasons::group(failures)
            .into_iter()
            .map(|(e, n)| (Some(e.code), n))
            .collect(),
    }
}

both_stores!(
    a_campaign_finished_longer_ago_than_the_retention_is_archived_and_exports_the_same,
    |db| async move {
        let store = &db.store;
        let now = herald::clock::now_ms();
        let (org, old) = finished(store, 250, now - (i64::from(RETENTION_DAYS) + 1) * DAY).await;
        let before_csv = csv(store, org, old).await;
        let before_rows = exported(store, org, old, 1000).await;
        let before = kept(store, old).await;
        assert_eq!(before_rows.len(), 250);
        assert_eq!(before.counts.get(MessageStatus::Failed), 72);
        let clicked = before_rows[1].clone();
        assert_eq!(clicked.clicks, 1);
        // Its clicks per link too, which the archive must keep (the rows compared below).
        assert_eq!(
            clicked.link_clicks,
            [herald::store::LinkClicks {
                position: 1,
                clicks: 1
            }]
        );

        // Retention 0 (the default) archives nothing.
        let off = Engine::new(store.clone(), settings(0), "test");
        let report = archive_messages(&off.context(), now).await.unwrap();
        assert_eq!(report.rows, 0);
        assert_eq!(rows_and_chunks(&db, old).await, (250, 0, 0));

        let engine = Engine::new(store.clone(), settings(RETENTION_DAYS), "test");
        let limits = ArchiveLimits {
            chunk_rows: 100,
            chunks_per_pass: 100,
        };
        let report = archive_messages_limited(&engine.context(), now, limits)
            .await
            .unwrap();
        assert_eq!((report.chunks, report.rows), (3, 250));
        assert_eq!(report.finished.len(), 1);
        assert_eq!(report.finished[0].campaign_id, old);
        assert_eq!(report.finished[0].rows, 250);
        assert!(report.finished[0].bytes > 0);
        assert_eq!(rows_and_chunks(&db, old).await, (0, 3, 250));
        let c = store.campaign(old).await.unwrap();
        assert_eq!(c.archived_at, Some(now));
        assert!(c.archive_begun);
        assert_eq!(
            store.archive_state(org, old).await.unwrap(),
            ArchiveState::Archived(now)
        );

        // Counters, outcome, clicks and failure groups unchanged; the export the same, byte
        // for byte, whatever the page size.
        assert_eq!(kept(store, old).await, before);
        assert_eq!(csv(store, org, old).await, before_csv);
        assert_eq!(exported(store, org, old, 1000).await, before_rows);
        assert_eq!(exported(store, org, old, 7).await, before_rows);

        // Nothing recounts it: the drift check skips it.
        assert!(store.drift(&[old]).await.unwrap().is_empty());
        assert!(
            !store
                .campaigns_to_check(now - 365 * DAY)
                .await
                .unwrap()
                .contains(&old)
        );

        // Its links still redirect (not counted), its unsubscribe links still find the
        // recipient.
        let click = store
            .record_click(clicked.id, 1, now, true)
            .await
            .unwrap()
            .expect("an archived message's link still redirects");
        assert_eq!(click.url, "https://shop.example/sale");
        assert!(!click.first_on_link && !click.counted);
        assert_eq!(store.campaign(old).await.unwrap().clicks, before.clicks);
        assert_eq!(
            store.message_recipient(clicked.id).await.unwrap(),
            Some((org, clicked.address.clone()))
        );

        // A resend reads message rows: refused, saying where the recipients are.
        match store
            .api_campaign_resend(org, old, &[MessageStatus::Failed], None, "test")
            .await
        {
            Err(StoreError::Conflict(m)) => assert!(m.contains("archived"), "{m}"),
            other => panic!("a resend of an archived campaign: {other:?}"),
        }

        // A second pass has nothing to do.
        let again = archive_messages_limited(&engine.context(), now, limits)
            .await
            .unwrap();
        assert_eq!((again.chunks, again.finished.len()), (0, 0));
        assert_eq!(csv(store, org, old).await, before_csv);
    }
);

both_stores!(
    recent_sending_and_paused_campaigns_are_untouched,
    |db| async move {
        let store = &db.store;
        let now = herald::clock::now_ms();
        let long_ago = now - (i64::from(RETENTION_DAYS) + 5) * DAY;
        // Finished a day inside the retention.
        let (org, recent) = finished(store, 20, now - (i64::from(RETENTION_DAYS) - 1) * DAY).await;
        // Started long ago and still sending; another paused; another cancelled long ago
        // with nothing pending (archived, as a completed one).
        let sending = started(store, 20, long_ago).await;
        let paused = started(store, 20, long_ago).await;
        store
            .transition(paused, CampaignAction::Pause, long_ago, "test", None)
            .await
            .unwrap();
        let cancelled = started(store, 20, long_ago).await;
        store
            .transition(cancelled, CampaignAction::Cancel, long_ago, "test", None)
            .await
            .unwrap();
        let before: Vec<Vec<u8>> = futures_csv(store, org, &[recent, sending, paused]).await;

        let engine = Engine::new(store.clone(), settings(RETENTION_DAYS), "test");
        let report = archive_messages(&engine.context(), now).await.unwrap();
        assert_eq!(
            report
                .finished
                .iter()
                .map(|c| c.campaign_id)
                .collect::<Vec<_>>(),
            vec![cancelled]
        );
        assert_eq!(rows_and_chunks(&db, cancelled).await, (0, 1, 20));
        for id in [recent, sending, paused] {
            assert_eq!(rows_and_chunks(&db, id).await, (20, 0, 0), "{id}");
            assert_eq!(
                store.archive_state(org, id).await.unwrap(),
                ArchiveState::None
            );
            assert_eq!(store.campaign(id).await.unwrap().archived_at, None);
        }
        assert_eq!(
            futures_csv(store, org, &[recent, sending, paused]).await,
            before
        );
        // The paused one resumes and sends as before.
        store
            .transition(paused, CampaignAction::Resume, now, "test", None)
            .await
            .unwrap();
        assert_eq!(
            store
                .claim(paused, "A", now, now + 60_000, 100)
                .await
                .unwrap()
                .len(),
            20
        );
    }
);

async fn futures_csv(store: &Store, org: OrgId, ids: &[CampaignId]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(csv(store, org, *id).await);
    }
    out
}

both_stores!(
    an_archive_stopped_half_way_exports_every_message_and_the_next_pass_finishes_it,
    |db| async move {
        let store = &db.store;
        let now = herald::clock::now_ms();
        let (org, id) = finished(store, 250, now - (i64::from(RETENTION_DAYS) + 1) * DAY).await;
        let before_csv = csv(store, org, id).await;
        let before_rows = exported(store, org, id, 1000).await;
        let before = kept(store, id).await;
        let engine = Engine::new(store.clone(), settings(RETENTION_DAYS), "test");
        let one_chunk = ArchiveLimits {
            chunk_rows: 100,
            chunks_per_pass: 1,
        };

        // One chunk a pass: the pass stops with 100 messages archived and 150 rows left,
        // the state a crash after the first step leaves.
        let report = archive_messages_limited(&engine.context(), now, one_chunk)
            .await
            .unwrap();
        assert_eq!((report.chunks, report.rows), (1, 100));
        assert!(report.finished.is_empty());
        assert_eq!(rows_and_chunks(&db, id).await, (150, 1, 100));
        assert_eq!(
            store.archive_state(org, id).await.unwrap(),
            ArchiveState::Begun
        );
        assert_eq!(store.campaign(id).await.unwrap().archived_at, None);
        assert_eq!(kept(store, id).await, before);
        assert_eq!(csv(store, org, id).await, before_csv);
        assert_eq!(exported(store, org, id, 60).await, before_rows);

        // An export paged while the archive moves rows under it, a step between pages,
        // still reads every message once.
        let mut paged: Vec<ExportedMessage> = Vec::new();
        let mut after = MessageId(0);
        loop {
            let rows = store
                .export_campaign_messages(org, id, after, 60)
                .await
                .unwrap();
            let Some(last) = rows.last() else {
                break;
            };
            after = last.id;
            paged.extend(rows);
            archive_messages_limited(
                &engine.context(),
                now,
                ArchiveLimits {
                    chunk_rows: 20,
                    chunks_per_pass: 1,
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(paged, before_rows);
        // Five pages, a step of 20 after each: 50 rows are left.
        assert_eq!(rows_and_chunks(&db, id).await, (50, 6, 200));
        assert_eq!(csv(store, org, id).await, before_csv);

        // The next passes finish it.
        let mut finished = Vec::new();
        for _ in 0..10 {
            finished.extend(
                archive_messages_limited(&engine.context(), now, one_chunk)
                    .await
                    .unwrap()
                    .finished,
            );
        }
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].rows, 250);
        let (rows, _, archived) = rows_and_chunks(&db, id).await;
        assert_eq!((rows, archived), (0, 250));
        assert_eq!(
            store.archive_state(org, id).await.unwrap(),
            ArchiveState::Archived(now)
        );
        assert_eq!(kept(store, id).await, before);
        assert_eq!(csv(store, org, id).await, before_csv);
    }
);

both_stores!(
    another_organisation_never_reads_an_archive,
    |db| async move {
        let store = &db.store;
        let now = herald::clock::now_ms();
        let (org, id) = finished(store, 30, now - (i64::from(RETENTION_DAYS) + 1) * DAY).await;
        let other = store.create_organisation("other").await.unwrap();
        let engine = Engine::new(store.clone(), settings(RETENTION_DAYS), "test");
        archive_messages(&engine.context(), now).await.unwrap();
        assert_eq!(rows_and_chunks(&db, id).await, (0, 1, 30));
        assert_eq!(exported(store, org, id, 1000).await.len(), 30);
        // Through the archive, the campaign of another organisation reads as nothing.
        assert!(exported(store, other, id, 1000).await.is_empty());
        let header_only = csv(store, other, id).await;
        assert_eq!(header_only.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(matches!(
            store.archive_state(other, id).await,
            Err(StoreError::NotFound(_))
        ));
    }
);
