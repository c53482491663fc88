//! Herald against the fake WhatsApp Cloud API: a campaign whose signed status webhooks
//! (sent, delivered, read, failed) land on Herald's `/webhooks/whatsapp/{channel_id}`.

use crate::harness::{
    ACCESS_TOKEN, APP_SECRET, BOUND, Fake, PHONE_NUMBER_ID, VERIFY_TOKEN, campaign, create_channel,
    free_port, import, phones, serve, wait_for, with_secret_key,
};
use crate::support::{
    Backend, Herald, accepted, assert_counters_consistent, http_get, n, query_i64,
};
use herald::ids::ChannelId;

const NORMAL: usize = 40;
/// 200, then a `failed` webhook with 131026.
const FAILS_LATER: &str = "+15005558026";
/// 400 / 131026 (undeliverable): permanent at once.
const UNDELIVERABLE: &str = "+15005551026";

pub fn whatsapp_channel(h: &Herald, name: &str, base_url: &str, extra: &[&str]) -> i64 {
    let mut args = vec![
        "--name",
        name,
        "--kind",
        "whatsapp",
        "--phone-number-id",
        PHONE_NUMBER_ID,
        "--access-token",
        ACCESS_TOKEN,
        "--app-secret",
        APP_SECRET,
        "--verify-token",
        VERIFY_TOKEN,
        "--base-url",
        base_url,
    ];
    args.extend_from_slice(extra);
    create_channel(h, &args)
}

/// `herald-fakes whatsapp` on `fake_port`, its webhooks going to Herald's endpoint for
/// `channel_id` on `herald_port`.
pub fn fake_whatsapp(h: &Herald, fake_port: u16, herald_port: u16, channel_id: ChannelId) -> Fake {
    let listen = format!("127.0.0.1:{fake_port}");
    let webhook = format!("http://127.0.0.1:{herald_port}/webhooks/whatsapp/{channel_id}");
    Fake::start(
        h,
        &[
            "whatsapp",
            "--listen",
            &listen,
            "--app-secret",
            APP_SECRET,
            "--webhook-url",
            &webhook,
            "--access-token",
            ACCESS_TOKEN,
            "--final-status",
            "read",
            "--callback-delay-ms",
            "20",
        ],
    )
}

pub fn whatsapp_campaign_end_to_end(backend: Backend) {
    let mut h = Herald::migrated(backend);
    with_secret_key(&mut h);
    let (port, fake_port) = (free_port(), free_port());
    // The channel first (its id goes into the fake's webhook URL), at the fake's port.
    let channel = whatsapp_channel(&h, "wa", &format!("http://127.0.0.1:{fake_port}"), &[]);
    let fake = fake_whatsapp(&h, fake_port, port, ChannelId(channel));
    let serve = serve(&h, port, true);
    let addr = format!("127.0.0.1:{port}");

    // The subscription handshake Meta makes before it sends any webhook.
    let verify = format!(
        "/webhooks/whatsapp/{channel}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
    );
    assert_eq!(http_get(&addr, &verify), (200, "1158201444".to_string()));
    let wrong = format!(
        "/webhooks/whatsapp/{channel}?hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope"
    );
    assert_eq!(http_get(&addr, &wrong).0, 403);

    let mut rows = phones(4, NORMAL);
    rows.push((FAILS_LATER.into(), "Later".into()));
    rows.push((UNDELIVERABLE.into(), "Never".into()));
    import(&h, "wa", &rows);
    let id = campaign(&h, "wa", "wa", "wa", "Hi {{ name }}, news from Herald.");
    h.ok(&["campaign", "start", &id.to_string()]);
    let done = h.wait_completed(id, &[&serve]);
    assert_counters_consistent(&done);
    assert_eq!(n(&done, "total"), rows.len() as i64);

    let s = wait_for("the WhatsApp status webhooks", BOUND, || {
        let s = h.status(id);
        if n(&s, "read") == NORMAL as i64 && n(&s, "failed") == 2 {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert_counters_consistent(&s);
    assert_eq!(n(&s, "sent") + n(&s, "delivered"), 0, "{s}");
    let stats = fake.wait_callbacks_settled();
    assert_eq!(
        stats["callbacks_failed"], 0,
        "Herald refused webhooks: {stats}"
    );
    assert_eq!(stats["duplicates"], 0, "{stats}");
    // The fake created every message but the undeliverable one; one of them failed later.
    assert_eq!(
        stats["received"].as_i64(),
        Some(accepted(&s) + 1),
        "{stats} vs {s}"
    );
    assert_eq!(
        stats["requests"].as_i64(),
        Some(rows.len() as i64),
        "{stats}"
    );

    // Each normal message's `delivered` webhook arrived, verified, before its `read`.
    let url = h.url().to_string();
    let delivered = query_i64(
        &url,
        "SELECT COUNT(*) FROM webhook_events WHERE kind = 'whatsapp' \
         AND body LIKE '%\"status\":\"delivered\"%' AND outcome LIKE 'receipts:%'",
    );
    assert_eq!(delivered, NORMAL as i64, "delivered webhooks processed");
    let rejected = query_i64(
        &url,
        "SELECT COUNT(*) FROM webhook_events WHERE outcome LIKE 'rejected%'",
    );
    assert_eq!(rejected, 0, "no webhook was rejected");
    // Unverified webhooks are counted, not stored: none of the fake's signed events may be
    // among them (the one wrong verify token above is `bad_verify_token`).
    let (_, metrics) = http_get(&addr, "/metrics");
    let refused: Vec<&str> = metrics
        .lines()
        // Every series is exported from the start (at 0, with its HELP): a refusal is a
        // count above zero.
        .filter(|l| {
            l.starts_with("herald_webhooks_rejected_total")
                && l.contains("bad_signature")
                && l.rsplit(' ').next() != Some("0")
        })
        .collect();
    assert!(
        refused.is_empty(),
        "signed webhooks were refused: {refused:?}"
    );
    drop(serve);
}

/// README §2.6: 131050 (user stopped marketing messages) is an opt-out to record, and §2.1:
/// some errors come only in a `failed` status webhook. A synchronous 131050 suppresses the
/// address; the same code in a webhook should too.
pub fn whatsapp_async_opt_out_suppresses(backend: Backend) {
    let mut h = Herald::migrated(backend);
    with_secret_key(&mut h);
    let (port, fake_port) = (free_port(), free_port());
    let channel = whatsapp_channel(&h, "wa", &format!("http://127.0.0.1:{fake_port}"), &[]);
    let _fake = fake_whatsapp(&h, fake_port, port, ChannelId(channel));
    let serve = serve(&h, port, true);
    let rows = vec![
        ("+15005551050".to_string(), "AtOnce".to_string()), // 400 / 131050
        ("+15005558050".to_string(), "Later".to_string()),  // 200, then failed 131050
    ];
    import(&h, "optouts", &rows);
    let first = campaign(&h, "first", "optouts", "wa", "Hi {{ name }}");
    h.ok(&["campaign", "start", &first.to_string()]);
    h.wait_completed(first, &[&serve]);
    wait_for("the failed webhook", BOUND, || {
        let s = h.status(first);
        if n(&s, "failed") == 2 {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    let second = campaign(&h, "second", "optouts", "wa", "Hi again {{ name }}");
    h.ok(&["campaign", "start", &second.to_string()]);
    let s = h.wait_completed(second, &[&serve]);
    assert_eq!(n(&s, "skipped"), 2, "both opt-outs are suppressed: {s}");
    drop(serve);
}
