//! The engine in-process on both stores: dispatch to completion, fairness, graceful
//! shutdown, two engines sharing one database, takeover of a dead instance's work, and the
//! stuck-campaign detector's reasons.

use crate::both_stores;
use crate::support::{
    FakeTwilio, assert_counters_match, new_campaign, sandbox_channel, seed_list, wait_for,
};
use herald::address::Address;
use herald::config::Settings;
use herald::domain::{CampaignStatus, MessageStatus};
use herald::engine::{Engine, health, instance_identity};
use herald::ids::{CampaignId, ChannelId, OrgId};
use herald::store::{InstanceInfo, Store};
use std::time::Duration;
use tokio::sync::watch;

fn fast_settings() -> Settings {
    Settings {
        heartbeat_interval_ms: 100,
        instance_stale_after_ms: 1000,
        reconcile_interval_ms: 150,
        scheduler_interval_ms: 100,
        idle_poll_ms: 20,
        retry_base_ms: 10,
        retry_max_ms: 50,
        // claims_whose_answer_was_lost_are_handed_back claims 10 s in the past: handed back
        // at the first reconcile rather than a minute later.
        lost_claim_after_ms: 2_000,
        ..Settings::default()
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    id: String,
}

fn spawn_engine(store: &Store, settings: Settings) -> Running {
    let (stop, rx) = watch::channel(false);
    let engine = Engine::new(store.clone(), settings, "test");
    let id = engine.instance_id().to_string();
    let task = tokio::spawn(engine.run(rx));
    Running { stop, task, id }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task
            .await
            .expect("engine task")
            .expect("engine result");
    }
}

async fn sandbox_with(store: &Store, name: &str, config: serde_json::Value) -> ChannelId {
    let org = store.default_org().await.unwrap();
    store
        .create_channel(org, name, "sandbox", &config)
        .await
        .unwrap()
}

/// A sandbox channel limited to `rate` messages a second.
async fn rated_sandbox_channel(store: &Store, org: OrgId, name: &str, rate: f64) -> ChannelId {
    store
        .create_channel_with(
            org,
            name,
            "sandbox",
            &serde_json::json!({}),
            None,
            Some(rate),
        )
        .await
        .unwrap()
}

async fn wait_status(store: &Store, id: CampaignId, want: CampaignStatus, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let c = store.campaign(id).await.unwrap();
        if c.status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign {id} is {} with {:?}, not {want} within {within:?}",
            c.status,
            c.counts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pauses, resumes or cancels the campaign now, as an operator would.
async fn act(store: &Store, id: CampaignId, action: herald::domain::CampaignAction) {
    store
        .transition(id, action, herald::clock::now_ms(), "test", None)
        .await
        .unwrap();
}

/// Starts the campaign now, as an operator would.
async fn start_now(store: &Store, id: CampaignId) {
    store
        .start_campaign(id, herald::clock::now_ms(), "test", None)
        .await
        .unwrap();
}

/// Waits until the campaign completes, failing after `within_s` seconds.
async fn completes(store: &Store, id: CampaignId, within_s: u64) {
    wait_status(
        store,
        id,
        CampaignStatus::Completed,
        Duration::from_secs(within_s),
    )
    .await;
}

both_stores!(engine_sends_everything_exactly_once, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 1500).await;
    let channel = sandbox_channel(store, "fast").await;
    let id = new_campaign(store, org, list, channel, "Hi {{ name }}").await;
    let engine = spawn_engine(store, fast_settings());
    start_now(store, id).await;
    completes(store, id, 60).await;
    engine.stop().await;
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.counts.get(MessageStatus::Sent), 1500);
    let stats = store.sandbox_stats(channel, Some(id)).await.unwrap();
    assert_eq!((stats.received, stats.duplicates), (1500, 0));
    assert_eq!(store.sandbox_lost(id).await.unwrap(), 0);
    // Completion is written once, by the transaction of the last outcome.
    let completions = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.to_status == "completed")
        .count();
    assert_eq!(completions, 1);
});

both_stores!(receipts_follow_sends, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 200).await;
    let channel = sandbox_with(
        store,
        "receipts",
        serde_json::json!({"delivery_delay_ms": 5}),
    )
    .await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let engine = spawn_engine(store, fast_settings());
    start_now(store, id).await;
    completes(store, id, 60).await;
    // Receipts may land after completion and still move the counters.
    wait_for(
        store,
        id,
        "every receipt applied",
        Duration::from_secs(30),
        |c| c.counts.get(MessageStatus::Delivered) == 200,
    )
    .await;
    engine.stop().await;
    assert_counters_match(store, id).await;
});

both_stores!(
    transient_failures_retry_and_permanent_ones_fail,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 300).await;
        let channel = sandbox_with(
            store,
            "flaky",
            serde_json::json!({"fail_rate": 0.3, "permanent_fail_rate": 0.1}),
        )
        .await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        let settings = Settings {
            retry_max_attempts: 3,
            ..fast_settings()
        };
        let engine = spawn_engine(store, settings);
        start_now(store, id).await;
        completes(store, id, 60).await;
        engine.stop().await;
        let c = assert_counters_match(store, id).await;
        let failed = c.counts.get(MessageStatus::Failed);
        assert!(
            failed > 0 && c.counts.get(MessageStatus::Sent) > 0,
            "{:?}",
            c.counts
        );
        assert_eq!(failed + c.counts.get(MessageStatus::Sent), 300);
        let failures = crate::support::all_messages(store, id, Some(MessageStatus::Failed)).await;
        assert!(
            failures
                .iter()
                .all(|m| m.last_error.as_deref().is_some_and(|e| !e.is_empty()))
        );
        assert!(failures.iter().all(|m| m.attempts <= 3));
        // Some message needed more than one attempt and was eventually sent.
        let sent = crate::support::all_messages(store, id, Some(MessageStatus::Sent)).await;
        assert!(sent.iter().any(|m| m.attempts > 1));
    }
);

both_stores!(
    campaigns_sending_together_share_the_engine,
    |db| async move {
        let store = &db.store;
        let (org, big_list) = seed_list(store, 4000).await;
        let small_list = store.ensure_list(org, "small").await.unwrap();
        store
            .upsert_contacts(
                org,
                small_list,
                &(0..100)
                    .map(|i| herald::store::ContactInput {
                        address: Address::parse(&format!("+1311555{i:04}")).unwrap(),
                        name: None,
                        attributes: Default::default(),
                        unsubscribed: None,
                    })
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        let channel = sandbox_with(store, "slowish", serde_json::json!({"latency_ms": 5})).await;
        let big = new_campaign(store, org, big_list, channel, "Big").await;
        let small = new_campaign(store, org, small_list, channel, "Small").await;
        let now = herald::clock::now_ms();
        store.start_campaign(big, now, "test", None).await.unwrap();
        store
            .start_campaign(small, now, "test", None)
            .await
            .unwrap();
        let engine = spawn_engine(
            store,
            Settings {
                concurrency: 50,
                ..fast_settings()
            },
        );
        completes(store, small, 60).await;
        // The small campaign did not wait behind the big one.
        let big_now = store.campaign(big).await.unwrap();
        assert_eq!(
            big_now.status,
            CampaignStatus::Sending,
            "{:?}",
            big_now.counts
        );
        completes(store, big, 120).await;
        engine.stop().await;
        assert_counters_match(store, big).await;
        assert_counters_match(store, small).await;
    }
);

both_stores!(graceful_stop_leaves_nothing_in_doubt, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 600).await;
    let channel = sandbox_with(store, "slow", serde_json::json!({"latency_ms": 30})).await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let settings = Settings {
        concurrency: 40,
        ..fast_settings()
    };
    let engine = spawn_engine(store, settings.clone());
    start_now(store, id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.stop().await;
    let c = assert_counters_match(store, id).await;
    assert_eq!(
        c.counts.get(MessageStatus::InFlight),
        0,
        "a clean stop hands everything back"
    );
    assert!(
        c.counts.pending() > 0,
        "the stop came mid-campaign: {:?}",
        c.counts
    );
    let engine = spawn_engine(store, settings);
    completes(store, id, 60).await;
    engine.stop().await;
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.in_doubt_total, 0);
    let stats = store.sandbox_stats(channel, Some(id)).await.unwrap();
    assert_eq!((stats.received, stats.duplicates), (600, 0));
});

// Claimed ahead: an instance holds up to `claim_bound(concurrency, claim_ahead)` messages
// claimed and unrecorded (its sends plus `claim_ahead` times as many waiting for a send
// slot), never more, so what a crash can leave in doubt stays bounded; and it does claim
// ahead, so a freed send slot does not wait for the next claim (BENCHMARKS.md,
// "Latency-bound sending"). Checked at the default depth and at a deeper one.
both_stores!(claims_ahead_within_the_bound, |db| async move {
    let store = &db.store;
    for (claim_ahead, bound) in [(1, 20), (3, 40)] {
        let (org, list) = seed_list(store, 160).await;
        let channel = sandbox_with(
            store,
            &format!("ahead-{claim_ahead}"),
            serde_json::json!({"latency_ms": 150}),
        )
        .await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        let settings = Settings {
            concurrency: 10,
            claim_ahead,
            ..fast_settings()
        };
        assert_eq!(
            herald::engine::dispatcher::claim_bound(settings.concurrency, claim_ahead) as i64,
            bound
        );
        let engine = spawn_engine(store, settings);
        start_now(store, id).await;
        let mut most = 0;
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let c = store.campaign(id).await.unwrap();
            most = most.max(c.counts.get(MessageStatus::InFlight));
            if c.status == CampaignStatus::Completed {
                break;
            }
            assert!(
                std::time::Instant::now() < give_up,
                "not completed: {:?}",
                c.counts
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.stop().await;
        assert!(
            most <= bound,
            "claim_ahead {claim_ahead}: {most} claimed at once, above the bound {bound}"
        );
        // More than the depth below it allows: the setting is what sets the depth.
        let shallower = 10 * claim_ahead as i64;
        assert!(
            most > shallower,
            "claim_ahead {claim_ahead}: never more than {shallower} claimed ({most})"
        );
        assert_counters_match(store, id).await;
        let stats = store.sandbox_stats(channel, Some(id)).await.unwrap();
        assert_eq!((stats.received, stats.duplicates), (160, 0));
    }
});

both_stores!(two_engines_share_one_database, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 3000).await;
    let channel = sandbox_with(store, "shared", serde_json::json!({"latency_ms": 2})).await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let settings = Settings {
        concurrency: 50,
        batch_size: 50,
        ..fast_settings()
    };
    let a = spawn_engine(store, settings.clone());
    let b = spawn_engine(store, settings);
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    start_now(store, id).await;
    completes(store, id, 90).await;
    a.stop().await;
    b.stop().await;
    assert_counters_match(store, id).await;
    let stats = store.sandbox_stats(channel, Some(id)).await.unwrap();
    assert_eq!((stats.received, stats.duplicates), (3000, 0));
    let sent = crate::support::all_messages(store, id, Some(MessageStatus::Sent)).await;
    let by_a = sent
        .iter()
        .filter(|m| m.owner.as_deref() == Some(a_id.as_str()))
        .count();
    let by_b = sent
        .iter()
        .filter(|m| m.owner.as_deref() == Some(b_id.as_str()))
        .count();
    assert_eq!(by_a + by_b, 3000);
    assert!(
        by_a > 0 && by_b > 0,
        "work was not shared: a {by_a}, b {by_b}"
    );
});

// A dead instance's claimed messages are found in doubt and resent by the live engine;
// the campaign completes and says how many duplicates there could be.
both_stores!(dead_instance_work_is_taken_back_in_doubt, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 500).await;
    let channel = sandbox_channel(store, "takeover").await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let now = herald::clock::now_ms();
    store.start_campaign(id, now, "test", None).await.unwrap();
    // A "remote" instance claims 120 messages and then dies without a word.
    let ghost = InstanceInfo {
        id: "ghost-instance".into(),
        host: "another-host".into(),
        pid: 1,
        proc_start: None,
        version: "0".into(),
        role: "serve".into(),
        started_at: now,
    };
    store.register_instance(&ghost).await.unwrap();
    let claimed = store
        .claim(id, &ghost.id, now, now + 500, 120)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 120);
    let engine = spawn_engine(store, fast_settings());
    completes(store, id, 60).await;
    engine.stop().await;
    let c = assert_counters_match(store, id).await;
    assert_eq!(c.counts.get(MessageStatus::Sent), 500);
    assert_eq!(c.in_doubt_total, 120);
    let in_doubt = crate::support::all_messages(store, id, None)
        .await
        .into_iter()
        .filter(|m| m.was_in_doubt)
        .count();
    assert_eq!(in_doubt, 120);
});

both_stores!(stuck_campaigns_say_why, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 20).await;
    let channel = sandbox_channel(store, "idle").await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let now = herald::clock::now_ms();
    store.start_campaign(id, now, "test", None).await.unwrap();
    let settings = Settings {
        stuck_after_ms: 0,
        ..fast_settings()
    };
    // No instance at all.
    let stuck = health::stuck_campaigns(store, now + 10, &settings)
        .await
        .unwrap();
    assert_eq!(stuck.len(), 1);
    assert!(
        stuck[0].reason.contains("no live Herald instance"),
        "{}",
        stuck[0].reason
    );
    // A live instance, but every pending message waits for a retry.
    let me = instance_identity("test");
    store.register_instance(&me).await.unwrap();
    let claimed = store
        .claim(id, &me.id, now, now + 10_000, 100)
        .await
        .unwrap();
    let retry_at = now + 3_600_000;
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|m| herald::store::Outcome {
            attempt: None,
            message_id: m.id,
            campaign_id: id,
            kind: herald::store::OutcomeKind::Retry {
                error: "twilio 20429: Too Many Requests".into(),
                next_attempt_at: retry_at,
            },
        })
        .collect();
    store.record_outcomes(&me.id, now, &outcomes).await.unwrap();
    let later = herald::clock::now_ms() + 10;
    let stuck = health::stuck_campaigns(store, later, &settings)
        .await
        .unwrap();
    assert_eq!(stuck.len(), 1);
    assert!(
        stuck[0].reason.contains("wait for a retry"),
        "{}",
        stuck[0].reason
    );
    // In words, as the campaign page's failure reasons read, not the provider's raw text.
    assert!(
        stuck[0].reason.contains(
            "is failing: Twilio's rate limit for the account was reached. Herald retries it later"
        ),
        "{}",
        stuck[0].reason
    );
    assert!(
        !stuck[0].reason.contains("Too Many Requests"),
        "{}",
        stuck[0].reason
    );
    // Not stuck while progress is recent.
    let patient = Settings {
        stuck_after_ms: 3_600_000,
        ..settings
    };
    assert!(
        health::stuck_campaigns(store, later, &patient)
            .await
            .unwrap()
            .is_empty()
    );
});

// A claim that committed while its answer was lost (the database restarted at that
// instant) leaves rows owned by a live engine that none of its senders knows about. The
// engine's reconciler hands them back unsent: the campaign completes, nothing in doubt.
both_stores!(
    claims_whose_answer_was_lost_are_handed_back,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 300).await;
        let channel = sandbox_channel(store, "lost-answer").await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        // The engine claims at most 2 x 100 of the 300, leaving the test's 40 to claim.
        let engine = spawn_engine(
            store,
            Settings {
                concurrency: 100,
                ..fast_settings()
            },
        );
        let then = herald::clock::now_ms() - 10_000;
        store.start_campaign(id, then, "test", None).await.unwrap();
        let orphaned = store
            .claim(id, &engine.id, then, then + 1, 40)
            .await
            .unwrap();
        assert_eq!(orphaned.len(), 40);
        completes(store, id, 60).await;
        engine.stop().await;
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.counts.get(MessageStatus::Sent), 300);
        assert_eq!(c.in_doubt_total, 0);
        let stats = store.sandbox_stats(channel, Some(id)).await.unwrap();
        assert_eq!((stats.received, stats.duplicates), (300, 0));
    }
);

// Suppression is checked again at send time: an address suppressed after the campaign
// started is skipped, not sent.
both_stores!(
    suppressed_after_start_is_skipped_at_send_time,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 50).await;
        let channel = sandbox_channel(store, "late-stop").await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        start_now(store, id).await;
        let victim = crate::support::seeded_address(7);
        assert!(
            store
                .suppress(org, &victim, "STOP keyword", &herald::store::OptSource::API)
                .await
                .unwrap()
        );
        let engine = spawn_engine(store, fast_settings());
        completes(store, id, 60).await;
        engine.stop().await;
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.counts.get(MessageStatus::Skipped), 1);
        assert_eq!(c.counts.get(MessageStatus::Sent), 49);
        let skipped = crate::support::all_messages(store, id, Some(MessageStatus::Skipped)).await;
        assert_eq!(skipped[0].address, victim.as_str());
        assert!(
            skipped[0]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("STOP keyword")
        );
        let stats = store.sandbox_stats(channel, Some(id)).await.unwrap();
        assert_eq!(stats.received, 49);
        assert!(
            store
                .unsuppress(org, &victim, &herald::store::OptSource::API)
                .await
                .unwrap()
        );
        assert!(!store.is_suppressed(org, &victim).await.unwrap());
    }
);

// A channel's rate holds across instances: two engines share one bucket in the database.
// Checked on the provider's own timestamps: no one-second window holds more than the rate
// plus one burst (10 % of a second's worth) plus the grant each engine may still hold
// (throttle.rs), with 10 % for the time between taking a token and the provider's stamp.
both_stores!(channel_rate_holds_across_instances, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 400).await;
    let rate = 100.0;
    let channel = rated_sandbox_channel(store, org, "limited", rate).await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let a = spawn_engine(store, fast_settings());
    let b = spawn_engine(store, fast_settings());
    start_now(store, id).await;
    completes(store, id, 60).await;
    a.stop().await;
    b.stop().await;
    assert_counters_match(store, id).await;
    let pool = db.raw().await;
    let mut times: Vec<i64> = sqlx::query_scalar(
        "SELECT received_at FROM sandbox_received WHERE campaign_id = $1 ORDER BY received_at",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    times.sort_unstable();
    assert_eq!(times.len(), 400);
    let burst = herald::engine::throttle::burst(rate);
    let held = 2.0 * herald::engine::throttle::grant(rate);
    let limit = (rate * 1.1 + burst + held).ceil() as usize;
    let mut worst = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= 1000 {
            start += 1;
        }
        worst = worst.max(end - start + 1);
    }
    assert!(
        worst <= limit,
        "{worst} sends in one second on a {rate}/s channel (limit {limit})"
    );
    // And the limiter does not starve it: most windows are near the rate.
    assert!(
        worst as f64 >= rate * 0.5,
        "only {worst} sends in the busiest second"
    );
});

both_stores!(
    rate_limit_answers_slow_the_channel_for_everyone,
    |db| async move {
        let store = &db.store;
        let org = store.default_org().await.unwrap();
        let channel = rated_sandbox_channel(store, org, "slowed", 50.0).await;
        let t = 1_000_000;
        let first = store.take_tokens(channel, 50.0, 5.0, 5.0, t).await.unwrap();
        assert_eq!(first.granted, 5.0);
        let empty = store.take_tokens(channel, 50.0, 5.0, 5.0, t).await.unwrap();
        assert_eq!(empty.granted, 0.0);
        assert_eq!(empty.wait_ms, 100);
        // 100 ms later the bucket has refilled 5 tokens (50/s), never more than the burst.
        let later = store
            .take_tokens(channel, 50.0, 5.0, 50.0, t + 10_000)
            .await
            .unwrap();
        assert_eq!(later.granted, 5.0);
        store
            .penalize_rate(channel, 2_000, t + 10_000)
            .await
            .unwrap();
        let blocked = store
            .take_tokens(channel, 50.0, 5.0, 1.0, t + 11_000)
            .await
            .unwrap();
        assert_eq!((blocked.granted, blocked.wait_ms), (0.0, 1_000));
        let halved = store
            .take_tokens(channel, 50.0, 5.0, 5.0, t + 12_000)
            .await
            .unwrap();
        assert_eq!(halved.factor, 0.5);
        // The rate recovers once no new rate-limit answer came for a while.
        let recovered = store
            .take_tokens(channel, 50.0, 5.0, 1.0, t + 60_000)
            .await
            .unwrap();
        assert_eq!(recovered.factor, 1.0);
    }
);

// An instance dies after Twilio accepted some of its messages but before it recorded
// them. The survivor finds them in doubt, asks Twilio (list by To, From, date sent), marks
// the ones Twilio has as sent and resends only the others: no duplicate at the provider.
both_stores!(
    in_doubt_messages_the_provider_has_are_not_resent,
    |db| async move {
        let store = &db.store;
        let fake = FakeTwilio::start("tok-in-doubt");
        let key = herald::secrets::SecretKey::generate();
        let settings = Settings {
            secret_key: Some(key.clone()),
            provider_lookup_delay_ms: 200,
            // The fake Twilio listens on loopback.
            outbound_allow_private: true,
            ..fast_settings()
        };
        let org = store.default_org().await.unwrap();
        let channel = store
        .create_channel_with(
            org,
            "tw",
            "twilio",
            &serde_json::json!({"account_sid": "AC00000000000000000000000000000000", "from": "+15005550006", "base_url": fake.url}),
            Some((
                &herald::secrets::SecretKey::parse(&key).unwrap(),
                &serde_json::json!({"auth_token": "tok-in-doubt"}),
            )),
            None,
        )
        .await
        .unwrap();
        let (_, list) = seed_list(store, 60).await;
        let id = new_campaign(store, org, list, channel, "Your code is {{ address }}").await;
        let now = herald::clock::now_ms();
        store.start_campaign(id, now, "test", None).await.unwrap();
        // The ghost claims 20 and gets 12 of them to Twilio before dying.
        let ghost = InstanceInfo {
            id: "ghost-twilio".into(),
            host: "elsewhere".into(),
            pid: 1,
            proc_start: None,
            version: "0".into(),
            role: "serve".into(),
            started_at: now,
        };
        store.register_instance(&ghost).await.unwrap();
        let claimed = store
            .claim(id, &ghost.id, now, now + 500, 20)
            .await
            .unwrap();
        let registry = herald::channels::ChannelRegistry::new(
            store.clone(),
            None,
            herald::channels::BuildContext {
                public_url: None,
                secret_key: Some(key.clone()),
                // The fake provider listens on loopback.
                outbound: herald::outbound::OutboundGuard::allow_all(),
            },
        );
        let twilio = registry.get(channel).await.unwrap();
        for m in claimed.iter().take(12) {
            let r = twilio
                .send(herald::channels::SendRequest {
                    message_id: m.id,
                    campaign_id: id,
                    address: m.address.clone(),
                    body: format!("Your code is {}", m.address),
                    attempt: m.attempts,
                    unsubscribe_url: None,
                    template: None,
                    email: None,
                })
                .await;
            assert!(
                matches!(r, herald::channels::SendResult::Accepted { .. }),
                "{r:?}"
            );
        }
        let engine = spawn_engine(store, settings);
        completes(store, id, 60).await;
        engine.stop().await;
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.counts.get(MessageStatus::Sent), 60);
        assert_eq!(c.in_doubt_total, 20);
        let stats = fake.stats().await;
        assert_eq!(stats["received"], 60, "{stats}");
        assert_eq!(
            stats["duplicates"], 0,
            "Twilio was asked before resending: {stats}"
        );
        let found = crate::support::all_messages(store, id, Some(MessageStatus::Sent))
            .await
            .into_iter()
            .filter(|m| m.last_error.as_deref() == Some("was in doubt; the provider has it"))
            .count();
        assert_eq!(found, 12);
    }
);

// An instance that cannot build a campaign's channel (here: no secret_key to open its
// credentials) pauses the campaign with the reason; it fails no message.
both_stores!(
    unbuildable_channel_pauses_instead_of_failing,
    |db| async move {
        let store = &db.store;
        let org = store.default_org().await.unwrap();
        let key =
            herald::secrets::SecretKey::parse(&herald::secrets::SecretKey::generate()).unwrap();
        let channel = store
        .create_channel_with(
            org,
            "locked",
            "twilio",
            &serde_json::json!({"account_sid": "AC00000000000000000000000000000000", "from": "+15005550006", "base_url": "http://127.0.0.1:9"}),
            Some((&key, &serde_json::json!({"auth_token": "secret-token"}))),
            None,
        )
        .await
        .unwrap();
        let (_, list) = seed_list(store, 30).await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        start_now(store, id).await;
        let engine = spawn_engine(store, fast_settings());
        wait_status(store, id, CampaignStatus::Paused, Duration::from_secs(30)).await;
        engine.stop().await;
        let c = assert_counters_match(store, id).await;
        assert_eq!(c.counts.get(MessageStatus::Queued), 30, "{:?}", c.counts);
        let events = store.events(id).await.unwrap();
        let pause = events
            .iter()
            .rev()
            .find(|e| e.to_status == "paused")
            .unwrap();
        assert!(pause.reason.contains("secret_key"), "{}", pause.reason);
    }
);

// A rate-limited channel's sends queue for its rate, up to its slots (two seconds of the
// rate) on each instance. A pause must stop them where they wait: before, they went on at
// the rate after the pause, and in chaos (three instances, 500/s) a campaign sent all
// 5,000 messages across two pauses and completed before it could be cancelled (CI, stop 28).
both_stores!(a_pause_stops_sends_waiting_for_the_rate, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 120).await;
    let rate = 10.0;
    let channel = rated_sandbox_channel(store, org, "slow-rate", rate).await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let engine = spawn_engine(
        store,
        Settings {
            concurrency: 50,
            ..fast_settings()
        },
    );
    start_now(store, id).await;
    // Sending, with the channel's slots (20 here) queued for its rate.
    wait_for(
        store,
        id,
        "sending with 15 queued",
        Duration::from_secs(30),
        |c| c.counts.get(MessageStatus::Sent) >= 5 && c.counts.get(MessageStatus::InFlight) >= 15,
    )
    .await;
    let paused_at = herald::clock::now_ms();
    store
        .transition(
            id,
            herald::domain::CampaignAction::Pause,
            paused_at,
            "test",
            None,
        )
        .await
        .unwrap();
    wait_for(
        store,
        id,
        "nothing in flight",
        Duration::from_secs(30),
        |c| c.counts.get(MessageStatus::InFlight) == 0,
    )
    .await;
    // What was at the provider or held its tokens at the pause, and the send whose record
    // told this instance of it: a few, not the 15 or more that were queued.
    let pool = db.raw().await;
    let after: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sandbox_received WHERE campaign_id = $1 AND received_at > $2",
    )
    .bind(id)
    .bind(paused_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(after <= 5, "{after} messages sent after the pause");
    assert_counters_match(store, id).await;
    // The ones handed back are sent after a resume, each once.
    act(store, id, herald::domain::CampaignAction::Resume).await;
    completes(store, id, 60).await;
    engine.stop().await;
    assert_counters_match(store, id).await;
    let stats = store.sandbox_stats(channel, Some(id)).await.unwrap();
    assert_eq!((stats.received, stats.duplicates), (120, 0));
});

// Waking up (docs/ARCHITECTURE.md): an idle dispatcher whose poll is ten minutes still
// starts a campaign at once, because the start signals it; and a message deferred by a
// second is sent when it falls due, not at the next poll. Each wait below is far shorter
// than the poll, so only the wake-up can complete the campaign in time.
fn sleepy_settings() -> Settings {
    Settings {
        idle_poll_ms: 600_000,
        ..fast_settings()
    }
}

both_stores!(a_start_wakes_an_idle_dispatcher, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 50).await;
    let channel = sandbox_channel(store, "wake").await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let engine = spawn_engine(store, sleepy_settings());
    // Let the dispatcher find nothing and settle into its ten-minute wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    start_now(store, id).await;
    completes(store, id, 30).await;

    // Paused and resumed: the resume wakes it too. Two thousand recipients, so the campaign
    // is still sending when the pause comes an instant after the start.
    let (_, big) = seed_list(store, 2_000).await;
    let id2 = new_campaign(store, org, big, channel, "Again").await;
    start_now(store, id2).await;
    act(store, id2, herald::domain::CampaignAction::Pause).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    act(store, id2, herald::domain::CampaignAction::Resume).await;
    completes(store, id2, 30).await;
    engine.stop().await;
    assert_counters_match(store, id).await;
    assert_counters_match(store, id2).await;
});

// While every claim gets all it asks for, the dispatcher claims from the list of sendable
// campaigns it read last (for at most 50 ms) instead of listing them each round. A campaign
// started meanwhile must still be listed and get its share at once: it finishes its fifty
// recipients long before the big campaign sending beside it finishes its twenty thousand.
both_stores!(
    a_start_is_seen_while_another_campaign_claims_at_full_speed,
    |db| async move {
        let store = &db.store;
        let (org, big) = seed_list(store, 20_000).await;
        let (_, small) = seed_list(store, 50).await;
        let channel = sandbox_channel(store, "busy").await;
        let first = new_campaign(store, org, big, channel, "Big").await;
        let second = new_campaign(store, org, small, channel, "Small").await;
        let engine = spawn_engine(
            store,
            Settings {
                concurrency: 20,
                batch_size: 40,
                ..sleepy_settings()
            },
        );
        start_now(store, first).await;
        // The big one is being claimed, round after round, when the small one starts.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store
            .campaign(first)
            .await
            .unwrap()
            .counts
            .get(MessageStatus::Sent)
            < 200
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the big campaign never got going"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start_now(store, second).await;
        completes(store, second, 30).await;
        let big_now = store.campaign(first).await.unwrap();
        assert_eq!(
            big_now.status,
            CampaignStatus::Sending,
            "the small campaign waited for the big one: {:?}",
            big_now.counts
        );
        engine.stop().await;
        assert_counters_match(store, second).await;
    }
);

// A rate-limited channel holds about two seconds of its rate in flight; once its slots are
// all taken the dispatcher claims nothing and waits. A send that ends frees a slot and must
// wake it: before, only the idle poll did (ten minutes here), and a 20/s campaign stopped
// after its first 40 messages.
both_stores!(a_freed_channel_slot_wakes_the_dispatcher, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 100).await;
    let rated = rated_sandbox_channel(store, org, "slots", 20.0).await;
    let id = new_campaign(store, org, list, rated, "Hi").await;
    let engine = spawn_engine(store, sleepy_settings());
    start_now(store, id).await;
    // 100 messages at 20 a second: five seconds of sending, given thirty.
    completes(store, id, 30).await;
    engine.stop().await;
    assert_counters_match(store, id).await;
});

both_stores!(
    a_deferred_message_is_sent_when_due_not_at_the_next_poll,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 5).await;
        let channel = sandbox_channel(store, "due").await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        start_now(store, id).await;
        // Every message waits 1.5 s (as a retry would), before any engine runs.
        let pool = db.raw().await;
        sqlx::query("UPDATE messages SET next_attempt_at = $1 WHERE campaign_id = $2")
            .bind(herald::clock::now_ms() + 1500)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let engine = spawn_engine(store, sleepy_settings());
        completes(store, id, 30).await;
        engine.stop().await;
        assert_counters_match(store, id).await;
    }
);

// Another instance's start reaches this one through the database (PostgreSQL `NOTIFY`):
// the engine runs on a second connection to the same database, with its own signal, so
// only the notification can wake it. SQLite has no notification to send; its other
// processes find the campaign at their next poll (README, `idle_poll_ms`).
both_stores!(another_instances_start_wakes_this_one, |db| async move {
    if db.backend != crate::support::Backend::Postgres {
        return;
    }
    let store = &db.store;
    let (org, list) = seed_list(store, 50).await;
    let channel = sandbox_channel(store, "wake-remote").await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let other = Store::connect(&db.url).await.unwrap();
    let engine = spawn_engine(&other, sleepy_settings());
    tokio::time::sleep(Duration::from_millis(800)).await;
    start_now(store, id).await;
    completes(store, id, 30).await;
    engine.stop().await;
    other.close().await;
    assert_counters_match(store, id).await;
});

// A scheduled campaign whose segment names a list that is gone (renamed after the segment
// was saved) cannot start, and no retry would change that: the scheduler puts it back to
// draft with the reason in its audit trail, once, instead of retrying it unseen.
both_stores!(
    a_scheduled_segment_that_cannot_run_goes_back_to_draft,
    |db| async move {
        let store = &db.store;
        let (org, _) = seed_list(store, 3).await;
        let channel = sandbox_channel(store, "seg-sched").await;
        let filter = herald::contact_filter::parse("list = \"vip\"").unwrap();
        let vip = store.ensure_list(org, "vip").await.unwrap();
        let segment = store
            .create_segment(org, "vip only", &filter)
            .await
            .unwrap();
        store
            .rename_org_list(org, vip, "very important")
            .await
            .unwrap();
        let id = crate::support::new_campaign_at(
            store,
            org,
            segment,
            channel,
            "Hi",
            Some(herald::clock::now_ms() + 200),
        )
        .await;
        let engine = spawn_engine(store, fast_settings());
        wait_status(store, id, CampaignStatus::Draft, Duration::from_secs(10)).await;
        engine.stop().await;
        let events = store.events(id).await.unwrap();
        let refused: Vec<_> = events
            .iter()
            .filter(|e| e.reason.starts_with("scheduled start refused"))
            .collect();
        assert_eq!(refused.len(), 1, "{events:?}");
        assert!(
            refused[0].reason.contains("no list named \"vip\"")
                && refused[0].reason.contains("edit the segment's filter"),
            "{:?}",
            refused[0]
        );
        assert!(
            refused[0].actor.starts_with("scheduler@"),
            "{:?}",
            refused[0]
        );
        let c = store.campaign(id).await.unwrap();
        assert_eq!(
            (c.status, c.scheduled_at, c.total),
            (CampaignStatus::Draft, None, 0)
        );
    }
);
