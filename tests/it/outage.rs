//! Provider outages on both stores: a channel whose provider cannot be reached becomes
//! unavailable in the database, its campaigns are paused by the engine without spending
//! attempts or failing anything, and the probe resumes them (only them) when the provider
//! answers again. Recipient errors still fail only their recipient.

use crate::both_stores;
use crate::support::{
    FakeTwilio, all_messages, assert_counters_match, new_campaign, seed_list, wait_for,
};
use herald::config::Settings;
use herald::domain::{CampaignAction, CampaignStatus, MessageStatus};
use herald::engine::Engine;
use herald::ids::ChannelId;
use herald::store::Store;
use herald::store::channels_admin::ChannelUpdate;
use std::time::Duration;
use tokio::sync::watch;

fn outage_settings() -> Settings {
    Settings {
        heartbeat_interval_ms: 100,
        instance_stale_after_ms: 1000,
        reconcile_interval_ms: 150,
        scheduler_interval_ms: 100,
        idle_poll_ms: 20,
        retry_base_ms: 10,
        retry_max_ms: 50,
        outage_after_failures: 3,
        outage_probe_interval_ms: 100,
        ..Settings::default()
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn spawn_engine(store: &Store, settings: Settings) -> Running {
    let (stop, rx) = watch::channel(false);
    let engine = Engine::new(store.clone(), settings, "test");
    let task = tokio::spawn(engine.run(rx));
    Running { stop, task }
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

async fn set_config(store: &Store, channel: ChannelId, config: serde_json::Value) {
    let org = store.default_org().await.unwrap();
    store
        .update_org_channel::<herald::store::StoreError, _>(org, channel, |_| {
            Ok(ChannelUpdate {
                name: None,
                config: Some(config),
                secrets: None,
                rate_per_sec: None,
            })
        })
        .await
        .unwrap();
}

// Two engines; the provider is unreachable: the channel becomes unavailable with the
// reason, the campaign is paused by the engine (in its audit trail), nothing fails, no attempt is
// spent, and a campaign a person paused stays out of it. The provider comes back: the
// probe resumes the engine-paused campaign, which completes with every message sent once;
// the person's campaign stays paused.
both_stores!(outage_pauses_and_the_probe_resumes, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 40).await;
    let channel = sandbox_with(store, "sms-us", serde_json::json!({"unreachable": true})).await;
    let id = new_campaign(store, org, list, channel, "Hi {{ name }}").await;
    let mine = new_campaign(store, org, list, channel, "Hello {{ name }}").await;
    let now = herald::clock::now_ms();
    store.start_campaign(mine, now, "test", None).await.unwrap();
    store
        .transition(
            mine,
            CampaignAction::Pause,
            now,
            "user:ada@example.org",
            None,
        )
        .await
        .unwrap();
    store.start_campaign(id, now, "test", None).await.unwrap();
    // Two instances: the outage, the pauses and the resume are in the database, so either
    // may take each step and neither acts on a stale view of the other's.
    let engine = spawn_engine(store, outage_settings());
    let other = spawn_engine(store, outage_settings());

    let paused = wait_for(
        store,
        id,
        "paused with nothing in flight",
        Duration::from_secs(30),
        |c| c.status == CampaignStatus::Paused && c.counts.get(MessageStatus::InFlight) == 0,
    )
    .await;
    let outage = store
        .channel_outage(channel)
        .await
        .unwrap()
        .expect("the channel is unavailable");
    assert_eq!(outage.reason, "connection refused");
    assert_eq!(outage.name, "sms-us");
    assert!(
        outage
            .describe()
            .starts_with("channel `sms-us` unreachable since "),
        "{}",
        outage.describe()
    );
    assert_eq!(
        store
            .campaign_outage(id)
            .await
            .unwrap()
            .map(|o| o.channel_id),
        Some(channel)
    );
    assert_eq!(store.campaign_outage(mine).await.unwrap(), None);
    // Nothing failed, nothing was spent, nothing reached the provider.
    assert_counters_match(store, id).await;
    assert_eq!(paused.counts.get(MessageStatus::Failed), 0);
    assert_eq!(paused.counts.get(MessageStatus::Queued), 40);
    for m in all_messages(store, id, None).await {
        assert_eq!(
            (m.status, m.attempts),
            (MessageStatus::Queued, 0),
            "message {} spent an attempt or left the queue",
            m.id
        );
    }
    assert_eq!(
        store
            .sandbox_stats(channel, Some(id))
            .await
            .unwrap()
            .received,
        0
    );
    let events = store.events(id).await.unwrap();
    let pause = events
        .iter()
        .find(|e| e.to_status == "paused")
        .expect("a pause in the audit trail");
    assert!(pause.actor.starts_with("instance "), "{pause:?}");
    assert!(
        pause.reason.contains("channel `sms-us` unreachable since")
            && pause.reason.ends_with(": connection refused"),
        "{pause:?}"
    );

    // Probes keep failing while the provider is down: still paused.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.campaign(id).await.unwrap().status,
        CampaignStatus::Paused
    );
    // A campaign started during the outage is paused by the engine before it sends.
    let late = new_campaign(store, org, list, channel, "Late {{ name }}").await;
    store
        .start_campaign(late, herald::clock::now_ms(), "test", None)
        .await
        .unwrap();
    wait_for(store, late, "paused", Duration::from_secs(30), |c| {
        c.status == CampaignStatus::Paused
    })
    .await;
    assert_eq!(
        store
            .campaign_outage(late)
            .await
            .unwrap()
            .map(|o| o.channel_id),
        Some(channel)
    );
    assert_eq!(
        store.paused_reason(late).await.unwrap().as_deref(),
        Some(format!("paused by the engine: {}", outage.describe()).as_str())
    );

    // The provider answers again.
    set_config(store, channel, serde_json::json!({})).await;
    let done = wait_for(store, id, "completed", Duration::from_secs(30), |c| {
        c.status == CampaignStatus::Completed
    })
    .await;
    assert_eq!(done.counts.get(MessageStatus::Sent), 40);
    assert_eq!(done.counts.get(MessageStatus::Failed), 0);
    for m in all_messages(store, id, None).await {
        assert_eq!(
            (m.status, m.attempts),
            (MessageStatus::Sent, 1),
            "message {}",
            m.id
        );
    }
    let stats = store.sandbox_stats(channel, Some(id)).await.unwrap();
    assert_eq!((stats.received, stats.duplicates), (40, 0));
    assert_eq!(store.channel_outage(channel).await.unwrap(), None);
    let events = store.events(id).await.unwrap();
    let resume = events
        .iter()
        .find(|e| e.from_status.as_deref() == Some("paused") && e.to_status == "sending")
        .expect("a resume in the audit trail");
    assert!(
        resume.actor.starts_with("instance ")
            && resume
                .reason
                .starts_with("resumed by the engine: channel `sms-us` answers again"),
        "{resume:?}"
    );

    let late = wait_for(store, late, "completed", Duration::from_secs(30), |c| {
        c.status == CampaignStatus::Completed
    })
    .await;
    assert_eq!(late.counts.get(MessageStatus::Sent), 40);

    // The person's pause stands: nothing of it was sent or resumed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let theirs = assert_counters_match(store, mine).await;
    assert_eq!(theirs.status, CampaignStatus::Paused);
    assert_eq!(theirs.counts.get(MessageStatus::Queued), 40);
    assert!(
        store
            .events(mine)
            .await
            .unwrap()
            .iter()
            .all(|e| !e.actor.starts_with("instance ")),
        "the engine touched a campaign a person paused"
    );
    engine.stop().await;
    other.stop().await;
});

// Errors about one recipient (permanent refusals) and the provider's own transient answers
// are answers: they never make the channel unavailable nor pause the campaign; each fails
// only its own message.
both_stores!(
    recipient_errors_fail_only_their_recipient,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 30).await;
        let channel = sandbox_with(
            store,
            "picky",
            serde_json::json!({"permanent_fail_rate": 0.6, "fail_rate": 0.4}),
        )
        .await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        let engine = spawn_engine(store, outage_settings());
        store
            .start_campaign(id, herald::clock::now_ms(), "test", None)
            .await
            .unwrap();
        let done = wait_for(store, id, "completed", Duration::from_secs(30), |c| {
            c.status == CampaignStatus::Completed
        })
        .await;
        engine.stop().await;
        assert_eq!(done.counts.get(MessageStatus::Failed), 30);
        assert_eq!(store.channel_outage(channel).await.unwrap(), None);
        assert!(
            store
                .events(id)
                .await
                .unwrap()
                .iter()
                .all(|e| e.to_status != "paused"),
            "a campaign was paused for errors about its recipients"
        );
    }
);

// The outage and probe records are conditional writes: one instance marks the channel
// unavailable, one at a time probes it, and only the outage that is still current ends.
both_stores!(outage_records_are_conditional, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 3).await;
    let channel = sandbox_with(store, "flaky", serde_json::json!({})).await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let t = herald::clock::now_ms();
    store.start_campaign(id, t, "test", None).await.unwrap();
    assert!(
        store
            .mark_channel_unavailable(channel, t, "connection refused")
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_channel_unavailable(channel, t + 1, "timed out")
            .await
            .unwrap()
    );
    let outage = store.channel_outage(channel).await.unwrap().unwrap();
    assert_eq!(
        (outage.since, outage.reason.as_str()),
        (t, "connection refused")
    );
    assert_eq!(store.org_channel_outages(org).await.unwrap().len(), 1);

    assert_eq!(
        store
            .pause_for_outage(channel, None, t, "instance a", "paused by the engine")
            .await
            .unwrap(),
        vec![id]
    );
    // Already paused: nothing more to pause.
    assert!(
        store
            .pause_for_outage(channel, None, t, "instance b", "paused by the engine")
            .await
            .unwrap()
            .is_empty()
    );

    assert!(store.claim_probe(channel, "a", t, t + 100).await.unwrap());
    assert!(
        !store
            .claim_probe(channel, "b", t + 50, t + 150)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_probe(channel, "b", t + 100, t + 200)
            .await
            .unwrap()
    );

    // An outage that is not the current one does not end it.
    assert!(!store.mark_channel_available(channel, t + 1).await.unwrap());
    assert!(store.mark_channel_available(channel, t).await.unwrap());
    assert!(
        !store
            .claim_probe(channel, "a", t + 300, t + 400)
            .await
            .unwrap()
    );
    assert_eq!(
        store.outage_pauses_of_available_channels().await.unwrap(),
        vec![(channel, "flaky".to_string())]
    );
    assert_eq!(
        store
            .resume_after_outage(channel, t + 5, "instance a", "resumed by the engine")
            .await
            .unwrap(),
        vec![id]
    );
    assert_eq!(
        store.campaign(id).await.unwrap().status,
        CampaignStatus::Sending
    );
    assert!(
        store
            .resume_after_outage(channel, t + 6, "instance b", "resumed by the engine")
            .await
            .unwrap()
            .is_empty()
    );

    // A person's resume ends the engine's claim on a campaign it paused: after the person
    // pauses it again, no outage resume touches it.
    assert!(
        store
            .mark_channel_unavailable(channel, t + 10, "timed out")
            .await
            .unwrap()
    );
    store
        .pause_for_outage(channel, None, t + 10, "instance a", "paused by the engine")
        .await
        .unwrap();
    store
        .transition(
            id,
            CampaignAction::Resume,
            t + 11,
            "user:ada@example.org",
            None,
        )
        .await
        .unwrap();
    store
        .transition(
            id,
            CampaignAction::Pause,
            t + 12,
            "user:ada@example.org",
            None,
        )
        .await
        .unwrap();
    assert!(store.mark_channel_available(channel, t + 10).await.unwrap());
    assert!(
        store
            .resume_after_outage(channel, t + 13, "instance a", "resumed by the engine")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.campaign(id).await.unwrap().status,
        CampaignStatus::Paused
    );
});

/// A Twilio channel on the fake Twilio with this auth token.
async fn twilio_with_token(store: &Store, key: &str, url: &str, token: &str) -> ChannelId {
    let org = store.default_org().await.unwrap();
    store
        .create_channel_with(
            org,
            "sms-us",
            "twilio",
            &serde_json::json!({"account_sid": "AC00000000000000000000000000000000", "from": "+15005550006", "base_url": url}),
            Some((
                &herald::secrets::SecretKey::parse(key).unwrap(),
                &serde_json::json!({"auth_token": token}),
            )),
            None,
        )
        .await
        .unwrap()
}

// Twilio answers 401 (wrong auth token): one refusal is enough. The channel is unavailable
// at once with a reason a person can act on, its campaign is paused by the engine for the
// outage without spending an attempt or failing anything, and the probe keeps it so while
// the credentials are refused. Once the provider accepts them (the right token is stored),
// the probe makes the channel available and resumes the campaign, which completes.
both_stores!(
    refused_credentials_make_the_channel_unavailable_at_once,
    |db| async move {
        let store = &db.store;
        let fake = FakeTwilio::start("tok-right");
        let key = herald::secrets::SecretKey::generate();
        let settings = Settings {
            secret_key: Some(key.clone()),
            // More than the campaign has messages: only the 401 rule can mark it.
            outage_after_failures: 1000,
            // The fake Twilio listens on loopback.
            outbound_allow_private: true,
            ..outage_settings()
        };
        let channel = twilio_with_token(store, &key, &fake.url, "tok-wrong").await;
        let (org, list) = seed_list(store, 20).await;
        let id = new_campaign(store, org, list, channel, "Hi {{ name }}").await;
        store
            .start_campaign(id, herald::clock::now_ms(), "test", None)
            .await
            .unwrap();
        let engine = spawn_engine(store, settings);
        let paused = wait_for(
            store,
            id,
            "paused with nothing in flight",
            Duration::from_secs(30),
            |c| c.status == CampaignStatus::Paused && c.counts.get(MessageStatus::InFlight) == 0,
        )
        .await;
        let outage = store
            .channel_outage(channel)
            .await
            .unwrap()
            .expect("one 401 makes the channel unavailable");
        assert_eq!(
            outage.reason,
            "credentials refused by Twilio (401): check the channel's account SID and auth token"
        );
        assert!(
            outage
                .describe()
                .starts_with("channel `sms-us` unavailable since "),
            "{}",
            outage.describe()
        );
        assert_eq!(
            store
                .campaign_outage(id)
                .await
                .unwrap()
                .map(|o| o.channel_id),
            Some(channel)
        );
        assert_eq!(
            store.paused_reason(id).await.unwrap().as_deref(),
            Some(format!("paused by the engine: {}", outage.describe()).as_str())
        );
        assert_counters_match(store, id).await;
        assert_eq!(paused.counts.get(MessageStatus::Failed), 0);
        assert_eq!(paused.counts.get(MessageStatus::Queued), 20);
        for m in all_messages(store, id, None).await {
            assert_eq!(
                (m.status, m.attempts),
                (MessageStatus::Queued, 0),
                "{}",
                m.id
            );
        }
        // The probe is refused too: still unavailable, still paused.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(store.channel_outage(channel).await.unwrap().is_some());
        assert_eq!(
            store.campaign(id).await.unwrap().status,
            CampaignStatus::Paused
        );

        // The provider accepts the channel's credentials again.
        store
            .update_org_channel::<herald::store::StoreError, _>(org, channel, |_| {
                Ok(ChannelUpdate {
                    secrets: Some(Some((
                        herald::secrets::SecretKey::parse(&key).unwrap(),
                        serde_json::json!({"auth_token": "tok-right"}),
                    ))),
                    ..ChannelUpdate::default()
                })
            })
            .await
            .unwrap();
        let done = wait_for(store, id, "completed", Duration::from_secs(30), |c| {
            c.status == CampaignStatus::Completed
        })
        .await;
        engine.stop().await;
        assert_eq!(done.counts.get(MessageStatus::Sent), 20);
        assert_eq!(store.channel_outage(channel).await.unwrap(), None);
        let resume = store
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.from_status.as_deref() == Some("paused") && e.to_status == "sending")
            .expect("a resume in the audit trail");
        assert!(
            resume.actor.starts_with("instance ")
                && resume
                    .reason
                    .contains("credentials refused by Twilio (401)"),
            "{resume:?}"
        );
    }
);

// New secrets end an outage for refused credentials, and only that kind: a conditional
// write scoped by organisation (another organisation's id changes nothing; an outage of
// the network stays for the probe).
both_stores!(new_secrets_end_only_a_credentials_outage, |db| async move {
    let store = &db.store;
    let org = store.default_org().await.unwrap();
    let other = store.create_organisation("elsewhere").await.unwrap();
    let channel = sandbox_with(store, "sms-us", serde_json::json!({})).await;
    let t = herald::clock::now_ms();
    let reason =
        "credentials refused by Twilio (401): check the channel's account SID and auth token";
    assert!(
        store
            .mark_channel_unavailable(channel, t, reason)
            .await
            .unwrap()
    );
    assert_eq!(
        store.end_credentials_outage(other, channel).await.unwrap(),
        None
    );
    assert!(store.channel_outage(channel).await.unwrap().is_some());
    let ended = store
        .end_credentials_outage(org, channel)
        .await
        .unwrap()
        .expect("the outage ends");
    assert_eq!((ended.since, ended.reason.as_str()), (t, reason));
    assert_eq!(store.channel_outage(channel).await.unwrap(), None);
    assert_eq!(
        store.end_credentials_outage(org, channel).await.unwrap(),
        None
    );
    // A network outage is the probe's to end.
    assert!(
        store
            .mark_channel_unavailable(channel, t + 1, "connection refused")
            .await
            .unwrap()
    );
    assert_eq!(
        store.end_credentials_outage(org, channel).await.unwrap(),
        None
    );
    assert!(store.channel_outage(channel).await.unwrap().is_some());
});
