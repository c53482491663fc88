//! Outbound events on both stores (docs/EVENTS.md): every event type the store emits is
//! written exactly once, with its data, in the transaction of the change it reports; a
//! refused change writes none; a change whose transaction fails after its event was written
//! leaves no event; an organisation never sees another's events; message delivery events
//! exist only while an endpoint of the organisation subscribes to them.

use crate::both_stores;
use crate::support::{TestDb, new_campaign, seed_list, seeded_address};
use herald::domain::{CampaignAction, CampaignStatus, MessageStatus};
use herald::events::EventType;
use herald::ids::{CampaignId, ContactId, NotificationId, OrgId};
use herald::store::{
    InboundMessage, NewCampaign, OptSource, OutboxEvent, Outcome, OutcomeKind, Receipt, Store,
    StoreError,
};
use sqlx::AssertSqlSafe;

/// Every event of the organisation, oldest first.
async fn events_of(store: &Store, org: OrgId) -> Vec<OutboxEvent> {
    store
        .outbox_events_after(org, NotificationId(0), 10_000)
        .await
        .unwrap()
}

/// The organisation's events of one type.
async fn of_type(store: &Store, org: OrgId, t: EventType) -> Vec<OutboxEvent> {
    events_of(store, org)
        .await
        .into_iter()
        .filter(|e| e.event_type == t)
        .collect()
}

fn types(events: &[OutboxEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// An enabled webhook endpoint of `org` subscribed to `events` (written directly: the
/// endpoint surfaces are not the subject here).
async fn subscribe(db: &TestDb, org: OrgId, events: &[EventType]) {
    let names: Vec<&str> = events.iter().map(|t| t.as_str()).collect();
    let pool = db.raw().await;
    sqlx::query(
        "INSERT INTO webhook_endpoints (org_id, url, events, secret, created_at) \
         VALUES ($1, 'https://hooks.example.com/herald', $2, 'sealed', 0)",
    )
    .bind(org)
    .bind(serde_json::to_string(&names).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// Starts the campaign and claims every queued message for `owner`.
async fn start_and_claim(
    store: &Store,
    id: CampaignId,
    owner: &str,
) -> Vec<herald::store::ClaimedMessage> {
    let now = herald::clock::now_ms();
    store.start_campaign(id, now, "test", None).await.unwrap();
    store
        .claim(id, owner, now, now + 60_000, 100)
        .await
        .unwrap()
}

fn outcome(m: &herald::store::ClaimedMessage, kind: OutcomeKind) -> Outcome {
    Outcome {
        message_id: m.id,
        campaign_id: m.campaign_id,
        attempt: Some(m.attempts),
        kind,
    }
}

fn sent(m: &herald::store::ClaimedMessage) -> Outcome {
    outcome(
        m,
        OutcomeKind::Sent {
            provider_id: format!("SM{}", m.id),
        },
    )
}

// A campaign's life, one event per change, each with the campaign's canonical ids; an
// illegal transition and an edit write none; completion carries outcome and counters.
both_stores!(campaign_changes_write_one_event_each, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 2).await;
    let channel = crate::support::sandbox_channel(store, "sms").await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let created = of_type(store, org, EventType::CampaignCreated).await;
    assert_eq!(created.len(), 1);
    let data = &created[0].data;
    assert_eq!(data["campaign"]["id"], format!("{id}"));
    assert_eq!(data["campaign"]["channel_id"], format!("{channel}"));
    assert_eq!(data["campaign"]["list_id"], format!("{list}"));
    assert_eq!(data["campaign"]["status"], "draft");
    assert_eq!(data["actor"], "test");
    assert_eq!(created[0].campaign_id, Some(id));
    assert_eq!(
        created[0].payload(Some(7))["type"],
        serde_json::json!("campaign.created")
    );

    // An edit of the draft is in the audit trail but is no event.
    store
        .api_campaign_update_draft(
            org,
            id,
            &herald::store::DraftEdit {
                name: Some("renamed"),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    let at = herald::clock::now_ms() + 3_600_000;
    store
        .api_campaign_schedule(org, id, at, "user:ada@example.org")
        .await
        .unwrap();
    let scheduled = of_type(store, org, EventType::CampaignScheduled).await;
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].data["campaign"]["name"], "renamed");
    assert_eq!(scheduled[0].data["from_status"], "draft");
    assert_eq!(
        scheduled[0].data["campaign"]["scheduled_at"],
        herald::clock::rfc3339(at)
    );

    let claimed = start_and_claim(store, id, "inst-a").await;
    let now = herald::clock::now_ms();
    store
        .transition(id, CampaignAction::Pause, now, "user:ada@example.org", None)
        .await
        .unwrap();
    // Refused: a paused campaign cannot be paused again. No event.
    let refused = store
        .transition(id, CampaignAction::Pause, now, "user:ada@example.org", None)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    store
        .transition(
            id,
            CampaignAction::Resume,
            now,
            "user:ada@example.org",
            None,
        )
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = claimed.iter().map(sent).collect();
    let report = store
        .record_outcomes("inst-a", now, &outcomes)
        .await
        .unwrap();
    assert_eq!(report.completed, vec![id]);

    let all = events_of(store, org).await;
    assert_eq!(
        types(&all),
        [
            "campaign.created",
            "campaign.scheduled",
            "campaign.started",
            "campaign.paused",
            "campaign.resumed",
            "campaign.completed"
        ]
    );
    let paused = &all[3].data;
    assert_eq!(paused["actor"], "user:ada@example.org");
    assert_eq!(paused["reason"], "paused by operator");
    let completed = &all[5].data;
    assert_eq!(completed["campaign"]["status"], "completed");
    assert_eq!(completed["campaign"]["outcome"], "succeeded");
    assert_eq!(completed["campaign"]["counts"]["total"], 2);
    assert_eq!(completed["campaign"]["counts"]["sent"], 2);
    assert_eq!(completed["campaign"]["counts"]["failed"], 0);
    assert_eq!(completed["actor"], "instance inst-a");
    assert_eq!(completed["from_status"], "sending");

    // A cancel: the outcome is `cancelled`, with the counters of the moment.
    let other = new_campaign(store, org, list, channel, "Bye").await;
    store
        .start_campaign(other, now, "test", None)
        .await
        .unwrap();
    store
        .transition(
            other,
            CampaignAction::Cancel,
            now,
            "test",
            Some("wrong list"),
        )
        .await
        .unwrap();
    let cancelled = of_type(store, org, EventType::CampaignCancelled).await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].data["campaign"]["outcome"], "cancelled");
    assert_eq!(cancelled[0].data["campaign"]["counts"]["cancelled"], 2);
    assert!(
        cancelled[0].data["reason"]
            .as_str()
            .unwrap()
            .starts_with("wrong list"),
        "{}",
        cancelled[0].data
    );
});

// A campaign created with a schedule is created and scheduled, in that order.
both_stores!(
    a_scheduled_creation_is_created_then_scheduled,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 1).await;
        let channel = crate::support::sandbox_channel(store, "sms").await;
        crate::support::new_campaign_at(
            store,
            org,
            list,
            channel,
            "Later",
            Some(herald::clock::now_ms() + 60_000),
        )
        .await;
        assert_eq!(
            types(&events_of(store, org).await),
            ["campaign.created", "campaign.scheduled"]
        );
    }
);

/// A trigger refusing any campaign's move to `completed`: the change's transaction fails
/// after its earlier statements, events included, were written.
async fn refuse_completion(db: &TestDb) {
    let pool = db.raw().await;
    let statements: &[&str] = match db.backend {
        crate::support::Backend::Sqlite => &[
            "CREATE TRIGGER refuse_completion BEFORE UPDATE OF status ON campaigns \
             WHEN NEW.status = 'completed' BEGIN SELECT RAISE(ABORT, 'completion refused by the test'); END",
        ],
        crate::support::Backend::Postgres => &[
            "CREATE FUNCTION refuse_completion() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'completion refused by the test'; END $$",
            "CREATE TRIGGER refuse_completion BEFORE UPDATE OF status ON campaigns \
             FOR EACH ROW WHEN (NEW.status = 'completed') EXECUTE FUNCTION refuse_completion()",
        ],
    };
    for sql in statements {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

// Structural: an event is written in the change's transaction. Starting a campaign with
// nothing to send writes campaign.started and then completes it; when the completion fails,
// the whole start rolls back and campaign.started, already written, is gone with it.
both_stores!(
    a_change_that_fails_after_its_event_leaves_no_event,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 0).await;
        let channel = crate::support::sandbox_channel(store, "sms").await;
        let id = new_campaign(store, org, list, channel, "Nobody").await;
        refuse_completion(&db).await;
        let before = events_of(store, org).await;
        let started = store
            .start_campaign(id, herald::clock::now_ms(), "test", None)
            .await;
        assert!(started.is_err(), "{started:?}");
        assert_eq!(
            store.campaign(id).await.unwrap().status,
            CampaignStatus::Draft
        );
        assert_eq!(events_of(store, org).await, before);
        assert_eq!(types(&before), ["campaign.created"]);
    }
);

// Each organisation sees its own events only.
both_stores!(events_are_scoped_to_their_organisation, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 1).await;
    let channel = crate::support::sandbox_channel(store, "sms").await;
    new_campaign(store, org, list, channel, "Mine").await;
    let other = store.create_organisation("other").await.unwrap();
    let other_list = store.ensure_list(other, "theirs").await.unwrap();
    store.seed_contacts(other, other_list, 1).await.unwrap();
    let other_channel = store
        .create_channel(other, "sms", "sandbox", &serde_json::json!({}))
        .await
        .unwrap();
    let theirs = store
        .create_campaign(
            &NewCampaign {
                org_id: other,
                name: "theirs".into(),
                channel_id: other_channel,
                list_id: other_list,
                body: "Hi".into(),
                scheduled_at: None,
                whatsapp_template: None,
                email: None,
                send_window: None,
            },
            "test",
        )
        .await
        .unwrap();
    store
        .suppress(other, &seeded_address(1), "complained", &OptSource::API)
        .await
        .unwrap();
    store
        .mark_channel_unavailable(other_channel, herald::clock::now_ms(), "down")
        .await
        .unwrap();
    let mine = events_of(store, org).await;
    assert_eq!(types(&mine), ["campaign.created"]);
    assert!(mine.iter().all(|e| e.org_id == org));
    let theirs_events = events_of(store, other).await;
    assert_eq!(
        types(&theirs_events),
        [
            "campaign.created",
            "contact.unsubscribed",
            "channel.unavailable"
        ]
    );
    assert!(theirs_events.iter().all(|e| e.org_id == other));
    assert_eq!(theirs_events[0].campaign_id, Some(theirs));
});

// message.failed/undelivered/delivered: none while no endpoint of the organisation names
// them (another organisation's endpoint does not count), then one per message and type
// named, with canonical ids.
both_stores!(
    message_events_need_a_subscribing_endpoint,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 4).await;
        let channel = crate::support::sandbox_channel(store, "sms").await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        let other = store.create_organisation("other").await.unwrap();
        subscribe(&db, other, EventType::ALL).await;
        let claimed = start_and_claim(store, id, "inst-a").await;
        assert_eq!(claimed.len(), 4);
        let now = herald::clock::now_ms();
        let failed = |m| {
            outcome(
                m,
                OutcomeKind::Failed {
                    error: "twilio 21211: invalid number".into(),
                },
            )
        };
        store
            .record_outcomes("inst-a", now, &[failed(&claimed[0])])
            .await
            .unwrap();
        assert!(
            of_type(store, org, EventType::MessageFailed)
                .await
                .is_empty()
        );

        subscribe(
            &db,
            org,
            &[EventType::MessageFailed, EventType::MessageDelivered],
        )
        .await;
        store
            .record_outcomes(
                "inst-a",
                now,
                &[failed(&claimed[1]), sent(&claimed[2]), sent(&claimed[3])],
            )
            .await
            .unwrap();
        let receipt = |m: &herald::store::ClaimedMessage, status| Receipt {
            channel_id: channel,
            provider_id: format!("SM{}", m.id),
            status,
            error: None,
        };
        store
            .apply_receipts(
                &[
                    receipt(&claimed[2], MessageStatus::Delivered),
                    receipt(&claimed[3], MessageStatus::Undelivered),
                ],
                now,
            )
            .await
            .unwrap();
        // The same delivered receipt again moves nothing and reports nothing.
        store
            .apply_receipts(&[receipt(&claimed[2], MessageStatus::Delivered)], now)
            .await
            .unwrap();

        let failed_events = of_type(store, org, EventType::MessageFailed).await;
        assert_eq!(failed_events.len(), 1, "{failed_events:?}");
        let m = &failed_events[0].data["message"];
        assert_eq!(m["id"], format!("{}", claimed[1].id));
        assert_eq!(m["campaign_id"], format!("{id}"));
        assert_eq!(m["channel_id"], format!("{channel}"));
        assert_eq!(
            m["contact_id"],
            format!("{}", claimed[1].contact_id.unwrap())
        );
        assert_eq!(m["address"], claimed[1].address.as_str());
        assert_eq!(m["status"], "failed");
        assert_eq!(m["error"], "twilio 21211: invalid number");
        assert_eq!(failed_events[0].campaign_id, Some(id));
        let delivered = of_type(store, org, EventType::MessageDelivered).await;
        assert_eq!(delivered.len(), 1);
        assert_eq!(
            delivered[0].data["message"]["id"],
            format!("{}", claimed[2].id)
        );
        assert_eq!(
            delivered[0].data["message"]["provider_id"],
            format!("SM{}", claimed[2].id)
        );
        // Nobody asked for message.undelivered.
        assert!(
            of_type(store, org, EventType::MessageUndelivered)
                .await
                .is_empty()
        );
        assert!(events_of(store, other).await.is_empty());
    }
);

// One batch may carry several receipts for one message (a provider's delivered and read
// in the same webhook call, or a kept pair applied together): each moves the message one
// rank up in order of arrival, reports its own event, clears or keeps the error as a
// single receipt would, and the counters end where the message does.
both_stores!(
    several_receipts_for_one_message_in_one_batch,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 3).await;
        let channel = crate::support::sandbox_channel(store, "sms").await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        subscribe(
            &db,
            org,
            &[EventType::MessageUndelivered, EventType::MessageDelivered],
        )
        .await;
        let claimed = start_and_claim(store, id, "inst-a").await;
        let now = herald::clock::now_ms();
        store
            .record_outcomes("inst-a", now, &claimed.iter().map(sent).collect::<Vec<_>>())
            .await
            .unwrap();
        let receipt = |m: &herald::store::ClaimedMessage, status, error: Option<&str>| Receipt {
            channel_id: channel,
            provider_id: format!("SM{}", m.id),
            status,
            error: error.map(str::to_string),
        };
        let report = store
            .apply_receipts(
                &[
                    receipt(
                        &claimed[0],
                        MessageStatus::Undelivered,
                        Some("carrier 30003"),
                    ),
                    receipt(&claimed[1], MessageStatus::Delivered, None),
                    receipt(&claimed[0], MessageStatus::Read, None),
                    receipt(&claimed[1], MessageStatus::Read, None),
                    // Below read: ignored, and its error is not written.
                    receipt(&claimed[1], MessageStatus::Failed, Some("late failure")),
                    receipt(
                        &claimed[2],
                        MessageStatus::Undelivered,
                        Some("carrier 30005"),
                    ),
                    // Same rank as undelivered: ignored, the first error stays.
                    receipt(&claimed[2], MessageStatus::Failed, Some("other")),
                ],
                now + 1,
            )
            .await
            .unwrap();
        assert_eq!((report.applied, report.ignored, report.kept), (5, 2, 0));
        let m0 = crate::support::message(store, id, claimed[0].id).await;
        assert_eq!(m0.status, MessageStatus::Read);
        assert_eq!(m0.last_error, None, "a read message shows no stale failure");
        let m1 = crate::support::message(store, id, claimed[1].id).await;
        assert_eq!(m1.status, MessageStatus::Read);
        assert_eq!(m1.last_error, None);
        let m2 = crate::support::message(store, id, claimed[2].id).await;
        assert_eq!(m2.status, MessageStatus::Undelivered);
        assert_eq!(m2.last_error.as_deref(), Some("carrier 30005"));
        let c = crate::support::assert_counters_match(store, id).await;
        assert_eq!(c.counts.get(MessageStatus::Read), 2);
        assert_eq!(c.counts.get(MessageStatus::Undelivered), 1);

        let ids = |t| async move {
            of_type(store, org, t)
                .await
                .iter()
                .map(|e| {
                    e.data["message"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        let msg = |m: &herald::store::ClaimedMessage| format!("{}", m.id);
        assert_eq!(
            ids(EventType::MessageUndelivered).await,
            vec![msg(&claimed[0]), msg(&claimed[2])]
        );
        // Read straight after undelivered was delivered too; read after delivered is not
        // a second delivery.
        assert_eq!(
            ids(EventType::MessageDelivered).await,
            vec![msg(&claimed[0]), msg(&claimed[1])]
        );
    }
);

// A channel's outage and its end: one event each, however many instances try.
both_stores!(channel_availability_events_once, |db| async move {
    let store = &db.store;
    let org = store.default_org().await.unwrap();
    let channel = crate::support::sandbox_channel(store, "sms").await;
    let since = herald::clock::now_ms();
    assert!(
        store
            .mark_channel_unavailable(channel, since, "connection refused")
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_channel_unavailable(channel, since + 5, "timeout")
            .await
            .unwrap()
    );
    assert!(store.mark_channel_available(channel, since).await.unwrap());
    assert!(!store.mark_channel_available(channel, since).await.unwrap());
    let all = events_of(store, org).await;
    assert_eq!(types(&all), ["channel.unavailable", "channel.available"]);
    assert_eq!(all[0].data["channel"]["id"], format!("{channel}"));
    assert_eq!(all[0].data["channel"]["name"], "sms");
    assert_eq!(all[0].data["reason"], "connection refused");
    assert_eq!(all[1].data["reason"], "connection refused");
    assert_eq!(
        all[1].data["unavailable_since"],
        herald::clock::rfc3339(since)
    );
});

// Opt-out and opt-in: one event per change with how it came; repeating it changes nothing
// and writes nothing.
both_stores!(contact_events_once_per_change, |db| async move {
    let store = &db.store;
    let (org, _list) = seed_list(store, 2).await;
    let channel = crate::support::sandbox_channel(store, "sms").await;
    let address = seeded_address(1);
    let via = OptSource::new("keyword", Some(channel), Some("STOP"));
    assert!(
        store
            .suppress(org, &address, "inbound STOP", &via)
            .await
            .unwrap()
    );
    assert!(
        !store
            .suppress(org, &address, "inbound STOP", &via)
            .await
            .unwrap()
    );
    let start = OptSource::new("keyword", Some(channel), Some("START"));
    assert!(store.unsuppress(org, &address, &start).await.unwrap());
    assert!(!store.unsuppress(org, &address, &start).await.unwrap());
    // The API's suppression of an address no contact has.
    store
        .upsert_org_suppression(org, "+15550001111", None, "added by hand")
        .await
        .unwrap();
    store
        .upsert_org_suppression(org, "+15550001111", Some("again"), "added by hand")
        .await
        .unwrap();
    let all = events_of(store, org).await;
    assert_eq!(
        types(&all),
        [
            "contact.unsubscribed",
            "contact.resubscribed",
            "contact.unsubscribed"
        ]
    );
    let contact: i64 = sqlx::query_scalar("SELECT id FROM contacts WHERE address = $1")
        .bind(&address)
        .fetch_one(&db.raw().await)
        .await
        .unwrap();
    assert_eq!(all[0].data["contact"]["id"], format!("con_{contact}"));
    assert_eq!(all[0].data["contact"]["address"], address);
    assert_eq!(all[0].data["channel_id"], format!("{channel}"));
    assert_eq!(all[0].data["source"], "keyword");
    assert_eq!(all[0].data["keyword"], "STOP");
    assert_eq!(all[1].data["keyword"], "START");
    assert_eq!(all[2].data["contact"]["id"], serde_json::Value::Null);
    assert_eq!(all[2].data["source"], "api");
    assert_eq!(all[2].data["reason"], "added by hand");

    // The contact's own flag (PATCH /contacts/{id}): a change is an event, a repeat is not.
    let flag = |u| herald::store::directory::ContactChange {
        unsubscribed: Some(u),
        ..Default::default()
    };
    for u in [true, true, false, false] {
        store
            .update_org_contact(org, ContactId(contact), &flag(u))
            .await
            .unwrap();
    }
    let by_flag: Vec<OutboxEvent> = events_of(store, org)
        .await
        .into_iter()
        .filter(|e| e.data["source"] == "contact_update")
        .collect();
    assert_eq!(
        types(&by_flag),
        ["contact.unsubscribed", "contact.resubscribed"]
    );
    assert_eq!(by_flag[0].data["contact"]["id"], format!("con_{contact}"));
});

// Stuck: the conditional mark wins once (a second instance's, or a campaign that moved
// since, writes nothing); unstuck once when it progresses again.
both_stores!(stuck_and_unstuck_once_per_occurrence, |db| async move {
    let store = &db.store;
    let (org, list) = seed_list(store, 2).await;
    let channel = crate::support::sandbox_channel(store, "sms").await;
    let id = new_campaign(store, org, list, channel, "Hi").await;
    let claimed = start_and_claim(store, id, "inst-a").await;
    let started = store.campaign(id).await.unwrap().last_progress_at.unwrap();
    let reason = "2 queued and 0 in flight but nothing recorded";
    // It made progress after the idle threshold: not stuck.
    assert!(
        !store
            .mark_stuck(id, started + 1, started - 1, reason)
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_stuck(id, started + 60_000, started, reason)
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_stuck(id, started + 61_000, started + 1_000, "other")
            .await
            .unwrap()
    );
    // Nothing moved: nothing to clear.
    assert!(
        store
            .clear_unstuck(started + 62_000)
            .await
            .unwrap()
            .is_empty()
    );
    let stuck = of_type(store, org, EventType::CampaignStuck).await;
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].data["reason"], reason);
    assert_eq!(stuck[0].data["campaign"]["id"], format!("{id}"));
    assert_eq!(stuck[0].data["pending"], 2);
    assert_eq!(stuck[0].data["no_progress_for_ms"], 60_000);

    store
        .record_outcomes("inst-a", started + 70_000, &[sent(&claimed[0])])
        .await
        .unwrap();
    assert_eq!(
        store.clear_unstuck(started + 71_000).await.unwrap(),
        vec![id]
    );
    assert!(
        store
            .clear_unstuck(started + 72_000)
            .await
            .unwrap()
            .is_empty()
    );
    let unstuck = of_type(store, org, EventType::CampaignUnstuck).await;
    assert_eq!(unstuck.len(), 1);
    assert_eq!(unstuck[0].data["reason"], reason);
    assert_eq!(unstuck[0].data["resolution"], "progressed again");
    assert_eq!(unstuck[0].data["stuck_for_ms"], 11_000);
});

// An inbound message: one event per provider message id (a retry of the webhook reports
// nothing twice), naming the contact and the campaign last sent to it on the channel.
both_stores!(
    inbound_message_event_once_per_provider_id,
    |db| async move {
        let store = &db.store;
        let (org, list) = seed_list(store, 1).await;
        let channel = crate::support::sandbox_channel(store, "sms").await;
        let id = new_campaign(store, org, list, channel, "Hi").await;
        let claimed = start_and_claim(store, id, "inst-a").await;
        store
            .record_outcomes("inst-a", herald::clock::now_ms(), &[sent(&claimed[0])])
            .await
            .unwrap();
        let long = "x".repeat(2_000);
        let message = InboundMessage {
            from: seeded_address(1),
            body: long.clone(),
            provider_message_id: Some("SMinbound1".into()),
            keyword: None,
            auto_reply: None,
            auto_reply_status: None,
        };
        for _ in 0..2 {
            store
                .record_webhook_with_inbound(
                    channel,
                    "twilio-inbound",
                    "inbound message: no keyword",
                    "Body=x",
                    std::slice::from_ref(&message),
                )
                .await
                .unwrap();
        }
        let inbound = of_type(store, org, EventType::MessageInbound).await;
        assert_eq!(inbound.len(), 1);
        let m = &inbound[0].data["message"];
        assert_eq!(m["channel_id"], format!("{channel}"));
        assert_eq!(m["from"], seeded_address(1));
        assert_eq!(
            m["contact_id"],
            format!("{}", claimed[0].contact_id.unwrap())
        );
        assert_eq!(m["campaign_id"], format!("{id}"));
        assert_eq!(m["provider_message_id"], "SMinbound1");
        assert_eq!(m["body"].as_str().unwrap().chars().count(), 1_600);
        assert_eq!(m["body_truncated"], true);
        assert_eq!(inbound[0].campaign_id, Some(id));
        // Both deliveries of the webhook are kept as they arrived.
        assert_eq!(
            db.raw_scalar("SELECT count(*) FROM webhook_events").await,
            2
        );
    }
);
