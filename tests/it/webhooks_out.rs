//! Outbound webhook delivery on both stores: fan-out order, claims and leases, the retry
//! schedule and Retry-After, 410 and 5-day disabling, signing with both keys after a
//! rotation, the outbound guard, retention, and the engine delivering end to end.
//! Endpoints and events are written with SQL here (the endpoints API is built elsewhere).

use crate::both_stores;
use crate::support::TestDb;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use herald::config::Settings;
use herald::engine::Engine;
use herald::engine::webhooks_out::{self, delivery_client};
use herald::ids::{CampaignId, DeliveryId, NotificationId, OrgId, WebhookEndpointId};
use herald::outbound::OutboundGuard;
use herald::secrets::SecretKey;
use herald::store::webhook_deliveries::{AttemptRecord, DISABLE_AFTER_FAILING_MS, Verdict};
use herald::webhooks::signature::{STANDARD_TOLERANCE, StandardHeaders, verify_standard};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Inserts an endpoint of the default organisation with `SECRET` sealed under `key`.
async fn endpoint(
    db: &TestDb,
    key_b64: &str,
    url: &str,
    events: &[&str],
    previous: Option<(&str, i64)>,
) -> i64 {
    let org = db.store.default_org().await.unwrap();
    let pool = db.raw().await;
    let events = serde_json::to_string(events).unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (org_id, url, events, secret, created_at) \
         VALUES ($1, $2, $3, 'unsealed', 0) RETURNING id",
    )
    .bind(org)
    .bind(url)
    .bind(events)
    .fetch_one(&pool)
    .await
    .unwrap();
    let key = SecretKey::parse(key_b64).unwrap();
    let sealed =
        herald::store::webhook_endpoints::seal_signing_secret(&key, WebhookEndpointId(id), SECRET)
            .unwrap();
    let (prev, until) = match previous {
        Some((s, until)) => (
            Some(
                herald::store::webhook_endpoints::seal_signing_secret(
                    &key,
                    WebhookEndpointId(id),
                    s,
                )
                .unwrap(),
            ),
            Some(until),
        ),
        None => (None, None),
    };
    sqlx::query(
        "UPDATE webhook_endpoints SET secret = $1, previous_secret = $2, previous_until = $3 WHERE id = $4",
    )
    .bind(sealed)
    .bind(prev)
    .bind(until)
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    id
}

/// Inserts `n` events of `kind` (campaign 7) at `at`; returns their ids in order.
async fn events(db: &TestDb, kind: &str, n: usize, at: i64) -> Vec<NotificationId> {
    let org = db.store.default_org().await.unwrap();
    let pool = db.raw().await;
    let mut ids = Vec::new();
    for i in 0..n {
        let id: NotificationId = sqlx::query_scalar(
            "INSERT INTO outbox_events (org_id, type, campaign_id, occurred_at, data) \
             VALUES ($1, $2, 7, $3, $4) RETURNING id",
        )
        .bind(org)
        .bind(kind)
        .bind(at)
        .bind(serde_json::json!({ "campaign_id": "cmp_7", "n": i }).to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        ids.push(id);
    }
    pool.close().await;
    ids
}

async fn scalar(db: &TestDb, sql: &str, id: i64) -> i64 {
    let pool = db.raw().await;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// `n` endpoints (`http://{host}{i}.example/h`) subscribed to `campaign.started`, and
/// `per_endpoint` such events fanned out to each of them.
async fn started_events_for_endpoints(
    db: &TestDb,
    key_b64: &str,
    host: &str,
    n: usize,
    per_endpoint: usize,
) -> Vec<i64> {
    let mut endpoints = Vec::new();
    for i in 0..n {
        let url = format!("http://{host}{i}.example/h");
        endpoints.push(endpoint(db, key_b64, &url, &["campaign.started"], None).await);
    }
    events(db, "campaign.started", per_endpoint, 1).await;
    fan_out_all(db).await;
    endpoints
}

async fn fan_out_all(db: &TestDb) {
    while db
        .store
        .fan_out_events(herald::clock::now_ms(), 1000)
        .await
        .unwrap()
        .events
        > 0
    {}
}

// ---------------------------------------------------------------------------------------
// A receiver: answers from a script (then 200), records what it got.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<(u16, Option<&'static str>)>>,
    got: Mutex<Vec<(HeaderMap, String)>>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    r.got.lock().unwrap().push((headers, body));
    let next = r.script.lock().unwrap().pop_front();
    let (status, retry_after) = next.unwrap_or((200, None));
    let mut response = (StatusCode::from_u16(status).unwrap(), "answer").into_response();
    if let Some(value) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    response
}

async fn start_receiver(script: Vec<(u16, Option<&'static str>)>) -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        script: Mutex::new(script.into()),
        got: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), receiver)
}

fn verify(headers: &HeaderMap, body: &str, secret: &str) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    verify_standard(
        secret,
        StandardHeaders {
            id: h("webhook-id"),
            timestamp: h("webhook-timestamp"),
            signature: h("webhook-signature"),
        },
        body.as_bytes(),
        herald::clock::now_ms() / 1000,
        STANDARD_TOLERANCE,
    )
    .is_ok()
}

// ---------------------------------------------------------------------------------------

both_stores!(
    fan_out_numbers_each_endpoint_in_event_order,
    |db| async move {
        let key = SecretKey::generate();
        let a = endpoint(&db, &key, "http://a.example/h", &["campaign.started"], None).await;
        let b = endpoint(
            &db,
            &key,
            "http://b.example/h",
            &["campaign.started", "campaign.completed"],
            None,
        )
        .await;
        let off = endpoint(&db, &key, "http://c.example/h", &["campaign.started"], None).await;
        db.raw_exec(
            "UPDATE webhook_endpoints SET disabled_at = 1 WHERE id = $1",
            CampaignId(off),
        )
        .await;
        // Interleaved types, and a test event that goes to nobody by fan-out.
        let mut ids = Vec::new();
        for _ in 0..150 {
            ids.extend(events(&db, "campaign.started", 1, 1).await);
            ids.extend(events(&db, "campaign.completed", 1, 1).await);
        }
        let test_event = events(&db, "webhook.test", 1, 1).await[0];
        // Two fan-outs at once, in small batches, racing.
        let (s1, s2) = (db.store.clone(), db.store.clone());
        let run = |s: herald::store::Store| async move {
            for _ in 0..1000 {
                // An error is a lost race (the other fan-out changed the rows): try again.
                if let Ok(f) = s.fan_out_events(herald::clock::now_ms(), 7).await
                    && f.events == 0
                {
                    break;
                }
            }
        };
        tokio::join!(run(s1), run(s2));
        fan_out_all(&db).await;
        assert_eq!(
            scalar(
                &db,
                "SELECT COUNT(*) FROM outbox_events WHERE fanned_out_at IS NULL AND id > $1",
                0
            )
            .await,
            0
        );
        let pool = db.raw().await;
        for (endpoint_id, expect) in [(a, 150i64), (b, 300)] {
            let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT event_id, seq FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY event_id",
        )
        .bind(endpoint_id)
        .fetch_all(&pool)
        .await
        .unwrap();
            assert_eq!(rows.len() as i64, expect);
            for (i, (_, seq)) in rows.iter().enumerate() {
                assert_eq!(
                    *seq,
                    i as i64 + 1,
                    "endpoint {endpoint_id}: seq follows event ids"
                );
            }
            let next: i64 =
                sqlx::query_scalar("SELECT next_seq FROM webhook_endpoints WHERE id = $1")
                    .bind(endpoint_id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(next, expect + 1);
        }
        let none: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1 OR event_id = $2",
        )
        .bind(off)
        .bind(test_event)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            none, 0,
            "no delivery to a disabled endpoint, none for webhook.test"
        );
        pool.close().await;
    }
);

both_stores!(
    claims_are_exclusive_and_expired_leases_are_taken_back,
    |db| async move {
        let key = SecretKey::generate();
        let endpoints = started_events_for_endpoints(&db, &key, "e", 4, 50).await;
        let now = herald::clock::now_ms();
        let (s1, s2) = (db.store.clone(), db.store.clone());
        let (c1, c2) = tokio::join!(
            s1.claim_webhook_deliveries("one", now, now + 60_000, 1000, 30, &[], 0),
            s2.claim_webhook_deliveries("two", now, now + 60_000, 1000, 30, &[], 0),
        );
        let (c1, c2) = (c1.unwrap(), c2.unwrap());
        let ids1: std::collections::BTreeSet<_> = c1.iter().map(|j| j.id).collect();
        let ids2: std::collections::BTreeSet<_> = c2.iter().map(|j| j.id).collect();
        assert!(ids1.is_disjoint(&ids2), "one delivery claimed twice");
        let ends1: std::collections::BTreeSet<_> = c1.iter().map(|j| j.endpoint_id).collect();
        let ends2: std::collections::BTreeSet<_> = c2.iter().map(|j| j.endpoint_id).collect();
        assert!(
            ends1.is_disjoint(&ends2),
            "one endpoint claimed by two owners"
        );
        // Per endpoint, the lowest sequence numbers, in order, at most 30.
        for owner_jobs in [&c1, &c2] {
            for e in &endpoints {
                let seqs: Vec<i64> = owner_jobs
                    .iter()
                    .filter(|j| j.endpoint_id == WebhookEndpointId(*e))
                    .map(|j| j.seq)
                    .collect();
                assert!(seqs.len() <= 30);
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            }
        }
        assert!(!c1.is_empty() || !c2.is_empty());
        // An endpoint leased elsewhere is not claimed again while the lease lives...
        let again = db
            .store
            .claim_webhook_deliveries("three", now + 1, now + 60_000, 1000, 30, &[], 0)
            .await
            .unwrap();
        let leased: std::collections::BTreeSet<WebhookEndpointId> =
            c1.iter().chain(&c2).map(|j| j.endpoint_id).collect();
        assert!(
            again.iter().all(|j| !leased.contains(&j.endpoint_id)),
            "a leased endpoint was claimed"
        );
        // ...and is taken back once it ran out (its instance died).
        let later = now + 61_000;
        let taken = db
            .store
            .claim_webhook_deliveries("three", later, later + 60_000, 1000, 30, &[], 0)
            .await
            .unwrap();
        assert!(
            taken
                .iter()
                .any(|j| ids1.contains(&j.id) || ids2.contains(&j.id))
        );
        // The first owner's late outcome is not written over the new holder's claim.
        let stolen = taken
            .iter()
            .find(|j| ids1.contains(&j.id) || ids2.contains(&j.id))
            .unwrap();
        let old_owner = if ids1.contains(&stolen.id) {
            "one"
        } else {
            "two"
        };
        let record = AttemptRecord {
            delivery_id: stolen.id,
            org_id: stolen.org_id,
            endpoint_id: stolen.endpoint_id,
            at: later,
            status_code: Some(200),
            latency_ms: 1,
            response_excerpt: None,
            error: None,
            verdict: Verdict::Delivered,
        };
        let recorded = db
            .store
            .record_webhook_attempts(old_owner, std::slice::from_ref(&record), &[])
            .await
            .unwrap();
        assert_eq!((recorded.written, recorded.lost), (0, 1));
        let recorded = db
            .store
            .record_webhook_attempts("three", &[record], &[])
            .await
            .unwrap();
        assert_eq!((recorded.written, recorded.lost), (1, 0));
        assert_eq!(
            scalar(
                &db,
                "SELECT attempts FROM webhook_deliveries WHERE id = $1",
                stolen.id.get()
            )
            .await,
            1
        );
    }
);

both_stores!(
    one_endpoint_is_claimed_by_one_instance_at_a_time,
    |db| async move {
        let key = SecretKey::generate();
        started_events_for_endpoints(&db, &key, "p", 3, 60).await;
        // Eight instances claim at once, each looking at 6 due deliveries and taking at
        // most 3 of an endpoint: an endpoint has more due deliveries than one claim looks
        // at, so without serialized claims a second instance would take (and lock) the
        // next ones beside the first.
        for round in 0..5i64 {
            let now = herald::clock::now_ms() + round * 100_000;
            let mut claims = tokio::task::JoinSet::new();
            for i in 0..8 {
                let store = db.store.clone();
                claims.spawn(async move {
                    let owner = format!("i{round}-{i}");
                    let jobs = store
                        .claim_webhook_deliveries(&owner, now, now + 60_000, 6, 3, &[], 0)
                        .await
                        .unwrap();
                    (owner, jobs)
                });
            }
            let claimed = claims.join_all().await;
            let mut holder: std::collections::BTreeMap<WebhookEndpointId, String> =
                Default::default();
            for (owner, jobs) in &claimed {
                for j in jobs {
                    let first = holder.entry(j.endpoint_id).or_insert_with(|| owner.clone());
                    assert_eq!(
                        first, owner,
                        "round {round}: endpoint {} claimed by {first} and {owner}",
                        j.endpoint_id
                    );
                }
            }
            assert_eq!(holder.len(), 3, "round {round}: every endpoint claimed");
        }
    }
);

/// A failed attempt of `job`, retried at `next`.
fn failed(
    job: &herald::store::webhook_deliveries::DeliveryJob,
    at: i64,
    next: i64,
) -> AttemptRecord {
    AttemptRecord {
        delivery_id: job.id,
        org_id: job.org_id,
        endpoint_id: job.endpoint_id,
        at,
        status_code: Some(500),
        latency_ms: 1,
        response_excerpt: None,
        error: None,
        verdict: Verdict::Retry {
            next_attempt_at: next,
        },
    }
}

both_stores!(a_failed_attempt_holds_its_endpoint_back, |db| async move {
    let key = SecretKey::generate();
    let down = endpoint(
        &db,
        &key,
        "http://down.example/h",
        &["campaign.started"],
        None,
    )
    .await;
    let up = endpoint(
        &db,
        &key,
        "http://up.example/h",
        &["campaign.started"],
        None,
    )
    .await;
    events(&db, "campaign.started", 5, 1).await;
    fan_out_all(&db).await;
    let hold = 5_000;
    let now = herald::clock::now_ms();
    let jobs = db
        .store
        .claim_webhook_deliveries(
            "w",
            now,
            now + 60_000,
            100,
            100,
            &[WebhookEndpointId(up)],
            hold,
        )
        .await
        .unwrap();
    assert_eq!(jobs.len(), 5);
    // The first fails (retry in a minute), the other four are handed back unattempted.
    let release: Vec<_> = jobs[1..].iter().map(|j| j.id).collect();
    db.store
        .record_webhook_attempts("w", &[failed(&jobs[0], now, now + 60_000)], &release)
        .await
        .unwrap();
    // During the hold nothing of the endpoint is sent; other endpoints go on.
    for at in [now + 1, now + hold - 1] {
        let claimed = db
            .store
            .claim_webhook_deliveries("w", at, at + 60_000, 100, 100, &[], hold)
            .await
            .unwrap();
        assert!(
            claimed
                .iter()
                .all(|j| j.endpoint_id == WebhookEndpointId(up)),
            "at +{}",
            at - now
        );
        assert_eq!(claimed.len(), usize::from(at == now + 1) * 5);
    }
    // After it, the rest in order; the failed one waits for its own retry.
    let at = now + hold + 1;
    let after = db
        .store
        .claim_webhook_deliveries("w", at, at + 60_000, 100, 100, &[], hold)
        .await
        .unwrap();
    let seqs: Vec<i64> = after.iter().map(|j| j.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    assert!(
        after
            .iter()
            .all(|j| j.endpoint_id == WebhookEndpointId(down))
    );
    // A success ends the hold at once: the next failure's hold is measured from it.
    let ok: Vec<AttemptRecord> = after
        .iter()
        .map(|j| AttemptRecord {
            status_code: Some(204),
            verdict: Verdict::Delivered,
            ..failed(j, at, at)
        })
        .collect();
    db.store
        .record_webhook_attempts("w", &ok, &[])
        .await
        .unwrap();
    let retry_at = now + 60_000;
    let retried = db
        .store
        .claim_webhook_deliveries("w", retry_at, retry_at + 60_000, 100, 100, &[], hold)
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].seq, retried[0].attempts), (1, 1));
});

both_stores!(
    a_delivered_batch_claims_the_endpoint_s_next_in_the_same_transaction,
    |db| async move {
        let key = SecretKey::generate();
        let a = endpoint(&db, &key, "http://a.example/h", &["campaign.started"], None).await;
        let b = endpoint(&db, &key, "http://b.example/h", &["campaign.started"], None).await;
        events(&db, "campaign.started", 12, 1).await;
        fan_out_all(&db).await;
        let now = herald::clock::now_ms();
        let first = db
            .store
            .claim_webhook_deliveries("w", now, now + 60_000, 100, 5, &[WebhookEndpointId(b)], 0)
            .await
            .unwrap();
        assert_eq!(
            first.iter().map(|j| j.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        let ok: Vec<AttemptRecord> = first
            .iter()
            .map(|j| AttemptRecord {
                status_code: Some(200),
                verdict: Verdict::Delivered,
                ..failed(j, now, now)
            })
            .collect();
        let next = herald::store::webhook_deliveries::NextClaim {
            endpoint_id: WebhookEndpointId(a),
            now,
            lease_until: now + 60_000,
            limit: 5,
            hold_ms: 5_000,
            after_seq: 5,
        };
        let (recorded, second) = db
            .store
            .record_webhook_attempts_and_claim("w", &ok, &[], Some(next))
            .await
            .unwrap();
        assert_eq!((recorded.written, recorded.lost), (5, 0));
        // The same endpoint only, the next sequence numbers, held by the same owner.
        assert_eq!(
            second.iter().map(|j| j.seq).collect::<Vec<_>>(),
            vec![6, 7, 8, 9, 10]
        );
        assert!(second.iter().all(|j| j.endpoint_id == WebhookEndpointId(a)));
        // Another instance cannot take the endpoint meanwhile.
        let other = db
            .store
            .claim_webhook_deliveries("x", now + 1, now + 60_000, 100, 100, &[], 0)
            .await
            .unwrap();
        assert!(
            other.iter().all(|j| j.endpoint_id == WebhookEndpointId(b)),
            "{other:?}"
        );
        // A failed batch ends the run: nothing of a held endpoint is claimed with it.
        let release: Vec<_> = second[1..].iter().map(|j| j.id).collect();
        let (_, third) = db
            .store
            .record_webhook_attempts_and_claim(
                "w",
                &[failed(&second[0], now + 2, now + 60_000)],
                &release,
                Some(herald::store::webhook_deliveries::NextClaim {
                    now: now + 3,
                    ..next
                }),
            )
            .await
            .unwrap();
        assert!(third.is_empty(), "{third:?}");
        assert_eq!(
            scalar(
                &db,
                "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND owner IS NOT NULL",
                a
            )
            .await,
            0,
            "the handed-back deliveries are free"
        );
    }
);

both_stores!(
    retries_follow_the_schedule_and_retry_after,
    |db| async move {
        let key = SecretKey::generate();
        let (url, receiver) = start_receiver(vec![
            (500, None),
            (503, Some("120")),
            (429, Some("1")),
            (301, None),
        ])
        .await;
        let e = endpoint(&db, &key, &url, &["campaign.started"], None).await;
        events(&db, "campaign.started", 1, 1).await;
        fan_out_all(&db).await;
        let client = delivery_client(OutboundGuard::allow_all()).unwrap();
        let secrets = vec![SECRET.to_string()];
        let mut verdicts = Vec::new();
        let mut webhook_ids = Vec::new();
        for round in 0..5 {
            let now = herald::clock::now_ms() + round * 100_000_000;
            let jobs = db
                .store
                .claim_webhook_deliveries("w", now, now + 60_000, 10, 10, &[], 0)
                .await
                .unwrap();
            assert_eq!(jobs.len(), 1, "round {round}");
            assert_eq!(jobs[0].attempts, round);
            let before = herald::clock::now_ms();
            let record = webhooks_out::attempt(&client, &jobs[0], &secrets, 1).await;
            let after = herald::clock::now_ms();
            verdicts.push((record.status_code, record.verdict.clone(), before, after));
            db.store
                .record_webhook_attempts("w", &[record], &[])
                .await
                .unwrap();
        }
        let delay = |i: usize| match verdicts[i].1 {
            Verdict::Retry { next_attempt_at } => (
                next_attempt_at - verdicts[i].3,
                next_attempt_at - verdicts[i].2,
            ),
            ref v => panic!("attempt {i}: {v:?}"),
        };
        // 500 after attempt 1: 5 s ± 20 %.
        let (lo, hi) = delay(0);
        assert!(lo >= 3_990 && hi <= 6_010, "{lo}..{hi}");
        // 503 with Retry-After: 120 s beats the 5 min step? No: the step (5 min ± 20 %) is longer.
        let (lo, hi) = delay(1);
        assert!(lo >= 239_990 && hi <= 360_010, "{lo}..{hi}");
        // 429 with Retry-After 1 s after attempt 3: the 30 min step.
        let (lo, _) = delay(2);
        assert!(lo >= 1_439_990, "{lo}");
        // A redirect is not followed: a failure.
        assert_eq!(verdicts[3].0, Some(301));
        assert!(matches!(verdicts[3].1, Verdict::Retry { .. }));
        assert_eq!(verdicts[4].1, Verdict::Delivered);
        for (headers, body) in receiver.got.lock().unwrap().iter() {
            assert!(verify(headers, body, SECRET), "bad signature");
            webhook_ids.push(headers["webhook-id"].to_str().unwrap().to_string());
            let payload: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(payload["seq"], 1);
            assert_eq!(payload["type"], "campaign.started");
        }
        assert_eq!(webhook_ids.len(), 5);
        assert!(
            webhook_ids
                .iter()
                .all(|id| id == &webhook_ids[0] && id.starts_with("ntf_"))
        );
        assert_eq!(
            scalar(
                &db,
                "SELECT COUNT(*) FROM webhook_attempts WHERE endpoint_id = $1",
                e
            )
            .await,
            5
        );
        assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'delivered'", e).await,
        1
    );
        // Retry-After longer than the step wins (bounded): 503 with 1 h after attempt 1.
        let (url2, _r2) = start_receiver(vec![(503, Some("3600")), (500, None)]).await;
        let e2 = endpoint(&db, &key, &url2, &["campaign.completed"], None).await;
        events(&db, "campaign.completed", 1, 1).await;
        fan_out_all(&db).await;
        let now = herald::clock::now_ms() + 1_000_000_000;
        let jobs = db
            .store
            .claim_webhook_deliveries("w", now, now + 60_000, 10, 10, &[], 0)
            .await
            .unwrap();
        let job = jobs
            .iter()
            .find(|j| j.endpoint_id == WebhookEndpointId(e2))
            .unwrap();
        let record = webhooks_out::attempt(&client, job, &secrets, 1).await;
        match record.verdict {
            Verdict::Retry { next_attempt_at } => {
                assert!(
                    next_attempt_at - record.at >= 3_600_000 - 10,
                    "{}",
                    next_attempt_at - record.at
                )
            }
            v => panic!("{v:?}"),
        }
        // The schedule ends after the eighth attempt.
        let mut last = job.clone();
        last.attempts = 7;
        assert_eq!(
            webhooks_out::attempt(&client, &last, &secrets, 1)
                .await
                .verdict,
            Verdict::GiveUp
        );
    }
);

both_stores!(gone_disables_the_endpoint_with_an_event, |db| async move {
    let key = SecretKey::generate();
    let (url, _receiver) = start_receiver(vec![(410, None)]).await;
    let e = endpoint(&db, &key, &url, &["campaign.started"], None).await;
    events(&db, "campaign.started", 3, 1).await;
    fan_out_all(&db).await;
    let now = herald::clock::now_ms();
    let jobs = db
        .store
        .claim_webhook_deliveries("w", now, now + 60_000, 1, 1, &[], 0)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let client = delivery_client(OutboundGuard::allow_all()).unwrap();
    let record = webhooks_out::attempt(&client, &jobs[0], &[SECRET.to_string()], 1).await;
    assert_eq!(record.verdict, Verdict::Gone);
    let recorded = db
        .store
        .record_webhook_attempts("w", &[record], &[])
        .await
        .unwrap();
    assert_eq!(recorded.disabled.len(), 1);
    assert!(recorded.disabled[0].1.contains("410"));
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM webhook_endpoints WHERE id = $1 AND disabled_at IS NOT NULL AND disabled_reason LIKE '%410%'", e).await,
        1
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'failed'",
            e
        )
        .await,
        3,
        "its pending deliveries fail"
    );
    let org = db.store.default_org().await.unwrap();
    let disabled: Vec<_> = db
        .store
        .outbox_events_after(org, NotificationId(0), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|ev| ev.event_type == herald::events::EventType::WebhookEndpointDisabled)
        .collect();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].data["endpoint_id"], format!("whk_{e}"));
    // Nothing more is claimed for it.
    let later = now + 10_000_000;
    assert!(
        db.store
            .claim_webhook_deliveries("w", later, later + 1, 10, 10, &[], 0)
            .await
            .unwrap()
            .iter()
            .all(|j| j.endpoint_id != WebhookEndpointId(e))
    );
});

both_stores!(five_days_of_failures_disable_an_endpoint, |db| async move {
    let key = SecretKey::generate();
    let e = endpoint(
        &db,
        &key,
        "http://down.example/h",
        &["campaign.started"],
        None,
    )
    .await;
    events(&db, "campaign.started", 2, 1).await;
    fan_out_all(&db).await;
    let t0 = herald::clock::now_ms();
    let fail = |id: DeliveryId, org: OrgId, at: i64| AttemptRecord {
        delivery_id: id,
        org_id: org,
        endpoint_id: WebhookEndpointId(e),
        at,
        status_code: Some(500),
        latency_ms: 3,
        response_excerpt: Some("boom".into()),
        error: None,
        verdict: Verdict::Retry {
            next_attempt_at: at + 1,
        },
    };
    let mut at = t0;
    for step in [
        0,
        DISABLE_AFTER_FAILING_MS / 2,
        DISABLE_AFTER_FAILING_MS - 1,
    ] {
        at = t0 + step;
        let jobs = db
            .store
            .claim_webhook_deliveries("w", at, at + 60_000, 1, 1, &[], 0)
            .await
            .unwrap();
        let r = db
            .store
            .record_webhook_attempts("w", &[fail(jobs[0].id, jobs[0].org_id, at)], &[])
            .await
            .unwrap();
        assert!(r.disabled.is_empty(), "disabled too early at +{step}");
    }
    // A success resets the streak...
    let jobs = db
        .store
        .claim_webhook_deliveries("w", at + 2, at + 60_000, 1, 1, &[], 0)
        .await
        .unwrap();
    let mut ok = fail(jobs[0].id, jobs[0].org_id, at + 2);
    ok.verdict = Verdict::Delivered;
    db.store
        .record_webhook_attempts("w", &[ok], &[])
        .await
        .unwrap();
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_endpoints WHERE id = $1 AND failing_since IS NULL",
            e
        )
        .await,
        1
    );
    // ...then 5 days of nothing but failures disable it.
    let t1 = at + 10;
    for step in [0, DISABLE_AFTER_FAILING_MS] {
        let at = t1 + step;
        let jobs = db
            .store
            .claim_webhook_deliveries("w", at, at + 60_000, 1, 1, &[], 0)
            .await
            .unwrap();
        let r = db
            .store
            .record_webhook_attempts("w", &[fail(jobs[0].id, jobs[0].org_id, at)], &[])
            .await
            .unwrap();
        assert_eq!(r.disabled.len(), usize::from(step > 0), "at +{step}");
    }
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM webhook_endpoints WHERE id = $1 AND disabled_reason LIKE '%5 days%'", e).await,
        1
    );
});

both_stores!(the_guard_refuses_a_private_destination, |db| async move {
    let key = SecretKey::generate();
    let (url, receiver) = start_receiver(vec![]).await;
    endpoint(&db, &key, &url, &["campaign.started"], None).await;
    events(&db, "campaign.started", 1, 1).await;
    fan_out_all(&db).await;
    let now = herald::clock::now_ms();
    let jobs = db
        .store
        .claim_webhook_deliveries("w", now, now + 60_000, 1, 1, &[], 0)
        .await
        .unwrap();
    let guarded = delivery_client(OutboundGuard::new(false, Vec::new())).unwrap();
    let record = webhooks_out::attempt(&guarded, &jobs[0], &[SECRET.to_string()], 1).await;
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(herald::outbound::is_refusal),
        "{record:?}"
    );
    assert!(matches!(record.verdict, Verdict::Retry { .. }));
    assert!(
        receiver.got.lock().unwrap().is_empty(),
        "nothing reached the private address"
    );
    // A name resolving to loopback is refused as well.
    let mut by_name = jobs[0].clone();
    by_name.url = url.replace("127.0.0.1", "localhost");
    let record = webhooks_out::attempt(&guarded, &by_name, &[SECRET.to_string()], 1).await;
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(herald::outbound::is_refusal),
        "{record:?}"
    );
    assert!(receiver.got.lock().unwrap().is_empty());
});

both_stores!(retention_deletes_settled_events_only, |db| async move {
    let key = SecretKey::generate();
    endpoint(&db, &key, "http://r.example/h", &["campaign.started"], None).await;
    let day = 24 * 3_600_000;
    let now = herald::clock::now_ms();
    let old = events(&db, "campaign.started", 5, now - 31 * day).await;
    let young = events(&db, "campaign.started", 2, now - day).await;
    fan_out_all(&db).await;
    // Settle every old delivery but one; a settled delivery has attempts in the log.
    let pool = db.raw().await;
    sqlx::query("UPDATE webhook_deliveries SET status = 'delivered' WHERE event_id <> $1")
        .bind(old[4])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, org_id, endpoint_id, at, latency_ms) \
         SELECT id, org_id, endpoint_id, 1, 1 FROM webhook_deliveries WHERE event_id = $1",
    )
    .bind(old[0])
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let settings = Settings {
        event_retention_days: 30,
        ..Settings::default()
    };
    let engine = Engine::new(db.store.clone(), settings, "test");
    let deleted = webhooks_out::expire_events(&engine.context(), now)
        .await
        .unwrap();
    assert_eq!(deleted, 4);
    let left: Vec<NotificationId> = db
        .store
        .outbox_events_after(
            db.store.default_org().await.unwrap(),
            NotificationId(0),
            100,
        )
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, vec![old[4], young[0], young[1]]);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_attempts WHERE id > $1",
            0
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE id > $1",
            0
        )
        .await,
        3
    );
});

both_stores!(
    the_engine_delivers_in_order_signed_with_both_keys,
    |db| async move {
        let key = SecretKey::generate();
        // The first attempt of the first event fails: it is retried (divided schedule) and
        // everything still arrives.
        let (url, receiver) = start_receiver(vec![(500, None)]).await;
        let until = herald::clock::now_ms() + 3_600_000;
        endpoint(
            &db,
            &key,
            &url,
            &["campaign.started", "campaign.completed"],
            Some((OLD_SECRET, until)),
        )
        .await;
        // Recent events: retention (30 days) must not delete them while the test looks.
        let ids = events(&db, "campaign.started", 40, herald::clock::now_ms()).await;
        let settings = Settings {
            secret_key: Some(key.clone()),
            idle_poll_ms: 20,
            reconcile_interval_ms: 100,
            webhook_retry_divisor: 1000,
            // The receiver is on loopback.
            outbound_allow_private: true,
            ..Settings::default()
        };
        herald::telemetry::init_logging(herald::config::LogFormat::Text, "info");
        let (stop, rx) = watch::channel(false);
        let engine = Engine::new(db.store.clone(), settings, "test");
        let task = tokio::spawn(engine.run(rx));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let delivered = scalar(
                &db,
                "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered' AND id > $1",
                0,
            )
            .await;
            if delivered == 40 {
                break;
            }
            if std::time::Instant::now() > deadline {
                let sql = "SELECT COUNT(*) FROM webhook_attempts WHERE id > $1";
                let attempts = scalar(&db, sql, 0).await;
                let sql =
                    "SELECT COUNT(*) FROM outbox_events WHERE fanned_out_at IS NULL AND id > $1";
                let waiting = scalar(&db, sql, 0).await;
                panic!("only {delivered} delivered: {attempts} attempts, {waiting} not fanned out");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(true);
        task.await.unwrap().unwrap();
        let got = receiver.got.lock().unwrap().clone();
        assert_eq!(got.len(), 41);
        let mut seen = Vec::new();
        for (headers, body) in &got {
            assert!(verify(headers, body, SECRET), "new key");
            assert!(verify(headers, body, OLD_SECRET), "previous key");
            let signature = headers["webhook-signature"].to_str().unwrap();
            assert_eq!(signature.split(' ').count(), 2, "{signature}");
            let payload: serde_json::Value = serde_json::from_str(body).unwrap();
            seen.push((
                headers["webhook-id"].to_str().unwrap().to_string(),
                payload["seq"].as_i64().unwrap(),
            ));
        }
        // The failed first event came again; after it, the rest in sequence order.
        let expected: Vec<(String, i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.to_string(), i as i64 + 1))
            .collect();
        let mut sorted = seen.clone();
        sorted.sort_by_key(|s| s.1);
        sorted.dedup();
        assert_eq!(sorted, expected);
        let failed: i64 = scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_attempts WHERE status_code = 500 AND id > $1",
            0,
        )
        .await;
        assert_eq!(failed, 1);
    }
);

both_stores!(a_down_endpoint_is_not_hammered, |db| async move {
    let key = SecretKey::generate();
    // Every attempt fails.
    let (url, receiver) = start_receiver(vec![(500, None); 200]).await;
    endpoint(&db, &key, &url, &["campaign.started"], None).await;
    events(&db, "campaign.started", 30, herald::clock::now_ms()).await;
    let settings = Settings {
        secret_key: Some(key.clone()),
        idle_poll_ms: 20,
        // The real schedule: after a failure the endpoint is held back 5 s.
        webhook_retry_divisor: 1,
        outbound_allow_private: true,
        ..Settings::default()
    };
    let (stop, rx) = watch::channel(false);
    let engine = Engine::new(db.store.clone(), settings, "test");
    let task = tokio::spawn(engine.run(rx));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while receiver.got.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was attempted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Fifty passes of the delivery loop later (well inside the 5 s hold), the first
    // failure is still the only attempt: the other 29 deliveries were not tried one a pass.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    assert_eq!(receiver.got.lock().unwrap().len(), 1);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE attempts > 0 AND id > $1",
            0
        )
        .await,
        1
    );
});
