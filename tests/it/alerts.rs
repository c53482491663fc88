//! Alerts to people (docs/ALERTS.md), on both stores: each alert-worthy occurrence reaches
//! each recipient once however many instances run; an alert about a channel never travels
//! through it (the fallback carries it, or it is recorded undeliverable and `doctor` says
//! so); "too many in doubt" is one occurrence until the campaign recovers; test alerts and
//! retries go through the same path.

use crate::both_stores;
use crate::support::{TestDb, new_campaign, sandbox_channel, seed_list};
use herald::config::Settings;
use herald::engine::Engine;
use herald::events::EventType;
use herald::ids::{CampaignId, ChannelId, ListId, NotificationId, OrgId};
use herald::store::Store;
use herald::store::alerts::{AlertOutcome, AlertSettingsChange};
use std::time::Duration;
use tokio::sync::watch;

fn settings() -> Settings {
    Settings {
        heartbeat_interval_ms: 100,
        reconcile_interval_ms: 150,
        scheduler_interval_ms: 100,
        idle_poll_ms: 20,
        ..Settings::default()
    }
}

async fn configure(
    store: &Store,
    org: OrgId,
    channel: Option<ChannelId>,
    fallback: Option<ChannelId>,
    recipients: &[&str],
) {
    store
        .set_alert_settings(
            org,
            &AlertSettingsChange {
                channel_id: Some(channel),
                fallback_channel_id: Some(fallback),
                in_doubt_threshold: None,
                add: recipients.iter().map(|r| r.to_string()).collect(),
                remove: Vec::new(),
            },
            herald::clock::now_ms(),
        )
        .await
        .unwrap();
}

/// A sending campaign (no engine runs, so it stays as started) marked stuck: one
/// `campaign.stuck` occurrence.
async fn stuck_campaign(store: &Store, org: OrgId, list: ListId, channel: ChannelId) -> CampaignId {
    let id = new_campaign(store, org, list, channel, "Hi {{ name }}").await;
    let now = herald::clock::now_ms();
    store.start_campaign(id, now, "test", None).await.unwrap();
    mark_stuck(store, id, now).await;
    id
}

/// Marks a started campaign stuck as the reconciler would, 10 s after `now`.
async fn mark_stuck(store: &Store, id: CampaignId, now: i64) {
    let marked = store
        .mark_stuck(
            id,
            now + 10_000,
            now + 5_000,
            "no instance claims its messages",
        )
        .await
        .unwrap();
    assert!(marked, "campaign {id} was not marked stuck");
}

/// One alert pass of an engine instance that is not running its other loops.
async fn alert_pass(store: &Store) -> u64 {
    let engine = Engine::new(store.clone(), settings(), "test");
    let (_stop, rx) = watch::channel(false);
    herald::engine::alerts::pass(&engine.context(), &rx).await
}

/// What the sandbox provider of `channel` received: (address, body).
async fn received(db: &TestDb, channel: ChannelId) -> Vec<(String, String)> {
    let pool = db.raw().await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT address, body FROM sandbox_received WHERE channel_id = $1 ORDER BY id",
    )
    .bind(channel)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

// Two engine instances run while a campaign is marked stuck: each of the two recipients
// gets one alert, through the alert channel (not the campaign's), naming the campaign and
// linking to its page.
both_stores!(
    one_alert_per_occurrence_and_recipient_across_instances,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 3).await;
        let campaign_channel = sandbox_channel(store, "campaigns").await;
        let alert_channel = sandbox_channel(store, "alerts").await;
        configure(
            store,
            org,
            Some(alert_channel),
            None,
            &["+14155550100", "+14155550101"],
        )
        .await;
        let id = new_campaign(store, org, list, campaign_channel, "Hi {{ name }}").await;
        let now = herald::clock::now_ms();
        store.start_campaign(id, now, "test", None).await.unwrap();
        // Two instances fan out and send at once.
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (stop, rx) = watch::channel(false);
            // Only the alert loop runs: the campaign stays as started, and the stuck mark
            // below is written directly.
            let engine = Engine::new(store.clone(), settings(), "test");
            let ctx = engine.context();
            tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_millis(10));
                while !*rx.borrow() {
                    ticker.tick().await;
                    herald::engine::alerts::pass(&ctx, &rx).await;
                }
            }));
            stops.push(stop);
        }
        mark_stuck(store, id, now).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let sent = store
                .list_alerts(org, Some("sent"), None, 100)
                .await
                .unwrap();
            if sent.len() >= 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alerts not sent within 30 s: {sent:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let both instances run a few more passes: nothing more may be sent.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for stop in stops {
            let _ = stop.send(true);
        }
        for t in tasks {
            t.await.unwrap();
        }
        let alerts = store.list_alerts(org, None, None, 100).await.unwrap();
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        for a in &alerts {
            assert_eq!(a.status, "sent", "{a:?}");
            assert_eq!(a.event_type, "campaign.stuck");
            assert_eq!(a.channel_id, Some(alert_channel));
            assert_eq!(a.concerns_channel_id, Some(campaign_channel));
            assert_eq!(a.attempts, 1);
        }
        let got = received(&db, alert_channel).await;
        assert_eq!(got.len(), 2, "{got:?}");
        let mut to: Vec<&str> = got.iter().map(|(a, _)| a.as_str()).collect();
        to.sort();
        assert_eq!(to, ["+14155550100", "+14155550101"]);
        for (_, body) in &got {
            assert!(body.contains(&format!("({id}) is stuck")), "{body}");
            assert!(body.contains("no instance claims its messages"), "{body}");
            assert!(body.contains(&format!("/campaigns/{id}")), "{body}");
        }
        assert!(received(&db, campaign_channel).await.is_empty());
    }
);

// The alert channel is the campaign's own channel: without a fallback the alert is
// undeliverable, says why, and `doctor` reports it; with a fallback, the next occurrence
// goes through the fallback.
both_stores!(
    an_alert_never_travels_through_the_channel_it_is_about,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 2).await;
        let shared = sandbox_channel(store, "shared").await;
        configure(store, org, Some(shared), None, &["ops@example.org"]).await;
        let first = stuck_campaign(store, org, list, shared).await;
        alert_pass(store).await;
        let alerts = store.list_alerts(org, None, None, 10).await.unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.status, "undeliverable", "{a:?}");
        assert_eq!(a.campaign_id, Some(first));
        let why = a.last_error.as_deref().unwrap_or_default();
        assert!(why.contains("is the channel this alert is about"), "{why}");
        assert!(why.contains("--fallback-channel"), "{why}");
        assert!(received(&db, shared).await.is_empty());

        let diagnosis = herald::doctor::diagnose(store, &settings(), Some(org))
            .await
            .unwrap();
        let finding = diagnosis
            .findings
            .iter()
            .find(|f| f.kind == herald::doctor::FindingKind::AlertUndeliverable)
            .expect("an undeliverable-alert finding");
        assert!(
            finding.message.contains(&format!("{}", a.id)),
            "{}",
            finding.message
        );
        assert!(
            finding.message.contains("ops@example.org"),
            "{}",
            finding.message
        );
        assert_eq!(
            diagnosis.to_json()["undeliverable_alerts"][0]["id"],
            format!("{}", a.id)
        );

        let fallback = sandbox_channel(store, "fallback").await;
        configure(store, org, Some(shared), Some(fallback), &[]).await;
        let second = stuck_campaign(store, org, list, shared).await;
        alert_pass(store).await;
        let sent = store
            .list_alerts(org, Some("sent"), None, 10)
            .await
            .unwrap();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].campaign_id, Some(second));
        assert_eq!(sent[0].channel_id, Some(fallback));
        let got = received(&db, fallback).await;
        assert_eq!(got.len(), 1);
        assert!(
            got[0].1.starts_with("Subject: Herald: Campaign "),
            "{}",
            got[0].1
        );
        assert!(received(&db, shared).await.is_empty());
    }
);

// A channel outage is about that channel: the alert goes through the other one. An email
// recipient cannot be reached through a phone-only channel: that alert says so.
both_stores!(
    a_channel_outage_alerts_through_another_channel,
    |db| async move {
        let store = &db.store;
        let org = store.default_org().await.unwrap();
        let down = sandbox_channel(store, "down").await;
        let other = sandbox_channel(store, "other").await;
        configure(store, org, Some(down), Some(other), &["+14155550100"]).await;
        assert!(
            store
                .mark_channel_unavailable(down, herald::clock::now_ms(), "connection refused")
                .await
                .unwrap()
        );
        alert_pass(store).await;
        let sent = store
            .list_alerts(org, Some("sent"), None, 10)
            .await
            .unwrap();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].event_type, EventType::ChannelUnavailable.as_str());
        assert_eq!(sent[0].concerns_channel_id, Some(down));
        assert_eq!(sent[0].channel_id, Some(other));
        let got = received(&db, other).await;
        assert!(
            got[0].1.contains("“down”") && got[0].1.contains("connection refused"),
            "{got:?}"
        );
    }
);

// "Too many in doubt" is one occurrence: marked once with its event, not again while the
// count stays high, and again only after it fell under half the threshold.
both_stores!(
    in_doubt_above_the_threshold_is_one_occurrence,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 10).await;
        let channel = sandbox_channel(store, "c").await;
        store
            .set_alert_settings(
                org,
                &AlertSettingsChange {
                    in_doubt_threshold: Some(Some(4)),
                    ..AlertSettingsChange::default()
                },
                herald::clock::now_ms(),
            )
            .await
            .unwrap();
        let id = new_campaign(store, org, list, channel, "Hi").await;
        store
            .start_campaign(id, herald::clock::now_ms(), "test", None)
            .await
            .unwrap();
        let set_in_doubt = |n: i64| {
            let db = &db;
            async move {
                let pool = db.raw().await;
                sqlx::query("UPDATE campaigns SET in_doubt = $1 WHERE id = $2")
                    .bind(n)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        };
        let now = herald::clock::now_ms();
        set_in_doubt(3).await;
        assert!(store.mark_in_doubt_campaigns(now).await.unwrap().is_empty());
        set_in_doubt(4).await;
        assert_eq!(store.mark_in_doubt_campaigns(now).await.unwrap(), vec![id]);
        set_in_doubt(9).await;
        assert!(store.mark_in_doubt_campaigns(now).await.unwrap().is_empty());
        set_in_doubt(2).await;
        assert!(store.mark_in_doubt_campaigns(now).await.unwrap().is_empty());
        set_in_doubt(1).await;
        assert!(store.mark_in_doubt_campaigns(now).await.unwrap().is_empty());
        set_in_doubt(5).await;
        assert_eq!(store.mark_in_doubt_campaigns(now).await.unwrap(), vec![id]);
        let events: Vec<_> = store
            .outbox_events_after(org, NotificationId(0), 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == EventType::CampaignInDoubt)
            .collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].data["in_doubt"], 4);
        assert_eq!(events[0].data["threshold"], 4);
        assert_eq!(events[1].data["in_doubt"], 5);
        // Threshold 0 turns it off.
        store
            .set_alert_settings(
                org,
                &AlertSettingsChange {
                    in_doubt_threshold: Some(Some(0)),
                    ..AlertSettingsChange::default()
                },
                now,
            )
            .await
            .unwrap();
        set_in_doubt(0).await;
        assert!(store.mark_in_doubt_campaigns(now).await.unwrap().is_empty());
        set_in_doubt(50).await;
        assert!(store.mark_in_doubt_campaigns(now).await.unwrap().is_empty());
    }
);

// Concurrent fan-outs of the same events make each alert once; an organisation without
// recipients gets none; the test alert goes to every recipient.
both_stores!(fan_out_is_once_per_event_and_recipient, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 2).await;
    let channel = sandbox_channel(store, "c").await;
    // No recipients yet: the occurrence is consumed, no alert.
    stuck_campaign(store, org, list, channel).await;
    assert_eq!(
        store
            .fan_out_alerts(herald::clock::now_ms(), 100)
            .await
            .unwrap(),
        0
    );
    configure(
        store,
        org,
        None,
        None,
        &["a@example.org", "b@example.org", "+14155550100"],
    )
    .await;
    for _ in 0..3 {
        stuck_campaign(store, org, list, channel).await;
    }
    let now = herald::clock::now_ms();
    let (a, b, c) = tokio::join!(
        store.fan_out_alerts(now, 100),
        store.fan_out_alerts(now, 100),
        store.fan_out_alerts(now, 100)
    );
    assert_eq!(a.unwrap() + b.unwrap() + c.unwrap(), 9);
    assert_eq!(store.fan_out_alerts(now, 100).await.unwrap(), 0);
    assert_eq!(
        store.list_alerts(org, None, None, 100).await.unwrap().len(),
        9
    );
    assert_eq!(store.create_test_alerts(org, now).await.unwrap(), 3);
    assert_eq!(
        store
            .list_alerts(org, Some("pending"), None, 100)
            .await
            .unwrap()
            .len(),
        12
    );
    // No channel set: every one is undeliverable with the fix named.
    alert_pass(store).await;
    let undeliverable = store
        .list_alerts(org, Some("undeliverable"), None, 100)
        .await
        .unwrap();
    assert!(!undeliverable.is_empty());
    for u in &undeliverable {
        let why = u.last_error.as_deref().unwrap_or_default();
        assert!(why.contains("no alert channel is set"), "{why}");
    }
});

// A failed attempt is retried on the schedule; only the claim's holder writes an outcome;
// the attempts run out into undeliverable.
both_stores!(retries_and_claims, |db| async move {
    let store = &db.store;
    let org = store.default_org().await.unwrap();
    configure(store, org, None, None, &["+14155550100"]).await;
    let now = herald::clock::now_ms();
    store.create_test_alerts(org, now).await.unwrap();
    let claimed = store
        .claim_alerts("A", now, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // Claimed: nobody else gets it until the lease runs out.
    assert!(
        store
            .claim_alerts("B", now, now + 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = AlertOutcome::Retry {
        channel_id: None,
        error: "503".into(),
        next_attempt_at: now + 30_000,
    };
    assert!(
        !store
            .record_alert_attempt(claimed[0].id, "B", &retry, now)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_alert_attempt(claimed[0].id, "A", &retry, now)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_alerts("B", now + 1, now + 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_alerts("B", now + 30_000, now + 90_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    // B dies; its lease runs out and C takes the alert back.
    let taken = store
        .claim_alerts("C", now + 90_001, now + 150_000, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert!(
        !store
            .record_alert_attempt(taken[0].id, "B", &retry, now)
            .await
            .unwrap()
    );
    let gone = AlertOutcome::Undeliverable {
        channel_id: None,
        error: "gave up".into(),
    };
    assert!(
        store
            .record_alert_attempt(taken[0].id, "C", &gone, now + 90_002)
            .await
            .unwrap()
    );
    let a = &store.list_alerts(org, None, None, 10).await.unwrap()[0];
    assert_eq!((a.status.as_str(), a.attempts), ("undeliverable", 2));
    assert_eq!(
        herald::alerts::next_attempt_at(herald::alerts::MAX_ATTEMPTS, now),
        None
    );
});
