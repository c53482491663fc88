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

/// The fake business account's id (`herald-fakes whatsapp --waba-id`'s default).
const WABA_ID: &str = "102290129340398";

/// Issue 14, point 8: a campaign names its approved template, language and the contact
/// field for each parameter. Checked at create, from the CLI and the API, against the
/// list's fields and Meta's template list (the fake's); sent as that template with each
/// recipient's values.
pub fn whatsapp_campaign_templates(backend: Backend) {
    let mut h = Herald::migrated(backend);
    with_secret_key(&mut h);
    let (port, fake_port) = (free_port(), free_port());
    let channel = whatsapp_channel(
        &h,
        "wa",
        &format!("http://127.0.0.1:{fake_port}"),
        &["--business-account-id", WABA_ID],
    );
    let fake = fake_whatsapp(&h, fake_port, port, ChannelId(channel));
    let serve = serve(&h, port, true);
    let addr = format!("127.0.0.1:{port}");
    let csv = h.path("orders.csv");
    std::fs::write(
        &csv,
        "address,name,order_id\n+15005550101,Ada,A-1001\n+15005550102,Grace,A-1002\n+15005550103,Linus,A-1003\n",
    )
    .unwrap();
    h.ok(&[
        "contacts",
        "import",
        csv.to_str().unwrap(),
        "--list",
        "orders",
    ]);
    h.ok(&["channel", "create", "--name", "sms", "--kind", "sandbox"]);

    let create = |channel: &str, template: &[&str]| {
        let mut args = vec![
            "campaign",
            "create",
            "--name",
            "shipped",
            "--list",
            "orders",
            "--channel",
            channel,
            "--body",
            "Hi {{ name }}, your order {{ order_id }} has shipped.",
        ];
        args.extend_from_slice(template);
        h.run(&args)
    };
    for (template, expected) in [
        (
            &[
                "--whatsapp-template",
                "order_update",
                "--template-param",
                "name,coupon",
            ][..],
            "`coupon` is no field of list \"orders\"",
        ),
        (
            &[
                "--whatsapp-template",
                "fall_promo",
                "--template-param",
                "name,order_id",
            ][..],
            "is REJECTED, not approved",
        ),
        (
            &[
                "--whatsapp-template",
                "order_update",
                "--template-language",
                "fr",
                "--template-param",
                "name,order_id",
            ][..],
            "has no fr version (it has en_US, pt_BR)",
        ),
        (
            &[
                "--whatsapp-template",
                "order_update",
                "--template-param",
                "name",
            ][..],
            "has 2 body parameters and the campaign gives 1",
        ),
        (
            &["--whatsapp-template", "nope"][..],
            "has no template `nope`",
        ),
        (
            &["--whatsapp-template", "Order Update"][..],
            "lowercase letters, digits and underscores",
        ),
    ] {
        let r = create("wa", template);
        assert!(!r.success(), "{template:?} was accepted");
        assert!(r.stderr.contains(expected), "{template:?}: {}", r.stderr);
    }
    let r = create("sms", &["--whatsapp-template", "order_update"]);
    assert!(
        !r.success() && r.stderr.contains("needs a whatsapp channel"),
        "{}",
        r.stderr
    );
    let listed = h.ok(&["campaign", "list"]);
    assert_eq!(listed.lines().count(), 1, "nothing was created: {listed}");

    // The API says the same, naming the field and the rule.
    let key = h
        .ok(&["apikey", "create", "--name", "api", "--role", "editor"])
        .trim()
        .to_string();
    let auth = format!("Bearer {key}");
    let post = |body: serde_json::Value| {
        crate::harness::http_request(
            &addr,
            "POST",
            "/api/v1/campaigns",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    };
    let (code, problem) = post(serde_json::json!({
        "name": "api", "channel_id": format!("chn_{channel}"), "list_id": "lst_1",
        "body": "Hi {{ name }}",
        "whatsapp_template": {"name": "fall_promo", "language": "en_US", "parameters": ["name", "order_id"]},
    }));
    assert_eq!(code, 422, "{problem}");
    assert!(
        problem.contains("\"field\":\"whatsapp_template\"")
            && problem.contains("template_not_approved"),
        "{problem}"
    );
    let (code, created) = post(serde_json::json!({
        "name": "api", "channel_id": format!("chn_{channel}"), "list_id": "lst_1",
        "body": "Olá {{ name }}",
        "whatsapp_template": {"name": "order_update", "language": "pt_BR", "parameters": ["name", "order_id"]},
    }));
    assert_eq!(code, 201, "{created}");
    assert!(created.contains("\"language\":\"pt_BR\""), "{created}");

    // Accepted, shown, and sent as the template with each recipient's values.
    let r = create(
        "wa",
        &[
            "--whatsapp-template",
            "order_update",
            "--template-param",
            "name",
            "--template-param",
            "order_id",
        ],
    );
    assert!(r.success(), "{}", r.describe());
    let id: i64 = r.stdout.trim().trim_start_matches("cmp_").parse().unwrap();
    let status = h.status(id);
    assert_eq!(
        status["whatsapp_template"],
        serde_json::json!({"name": "order_update", "language": "en_US", "parameters": ["name", "order_id"]}),
        "{status}"
    );
    h.ok(&["campaign", "start", &id.to_string()]);
    let done = h.wait_completed(id, &[&serve]);
    assert_eq!(accepted(&done), 3, "{done}");
    let (code, messages) = http_get(&fake.addr, "/_fake/messages");
    assert_eq!(code, 200);
    let messages: serde_json::Value = serde_json::from_str(&messages).unwrap();
    let mut sent: Vec<(String, Vec<String>)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "template", "{m}");
            assert_eq!(m["template"]["name"], "order_update", "{m}");
            assert_eq!(m["template"]["language"]["code"], "en_US", "{m}");
            let values = m["template"]["components"][0]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["text"].as_str().unwrap().to_string())
                .collect();
            (m["to"].as_str().unwrap().to_string(), values)
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            (
                "15005550101".to_string(),
                vec!["Ada".to_string(), "A-1001".to_string()]
            ),
            (
                "15005550102".to_string(),
                vec!["Grace".to_string(), "A-1002".to_string()]
            ),
            (
                "15005550103".to_string(),
                vec!["Linus".to_string(), "A-1003".to_string()]
            ),
        ]
    );

    // A duplicate keeps the template; an edit can drop it, and refuses one that does not fit.
    let copy = h.ok(&["campaign", "duplicate", &id.to_string()]);
    let copy = copy.trim().to_string();
    assert_eq!(
        h.status(copy.trim_start_matches("cmp_").parse().unwrap())["whatsapp_template"]["name"],
        "order_update"
    );
    let wrong = h.run(&["campaign", "edit", &copy, "--channel", "sms"]);
    assert!(
        !wrong.success() && wrong.stderr.contains("needs a whatsapp channel"),
        "{}",
        wrong.stderr
    );
    h.ok(&[
        "campaign",
        "edit",
        &copy,
        "--no-whatsapp-template",
        "--channel",
        "sms",
    ]);
    assert!(
        h.status(copy.trim_start_matches("cmp_").parse().unwrap())["whatsapp_template"].is_null()
    );
    drop(serve);
}

/// Issue 14, point 3: replies over WhatsApp. A signed inbound message lands in the inbox
/// with its campaign; STOP suppresses and, since WhatsApp confirms nothing itself, Herald
/// sends the confirmation through the channel (the fake receives it as a text message);
/// HELP gets the organisation's help reply the same way; each answer's outcome is recorded.
pub fn whatsapp_replies_are_answered(backend: Backend) {
    let mut h = Herald::migrated(backend);
    with_secret_key(&mut h);
    let (port, fake_port) = (free_port(), free_port());
    let channel = whatsapp_channel(&h, "wa", &format!("http://127.0.0.1:{fake_port}"), &[]);
    let fake = fake_whatsapp(&h, fake_port, port, ChannelId(channel));
    let serve = serve(&h, port, true);
    let addr = format!("127.0.0.1:{port}");
    let rows = vec![("+15005550201".to_string(), "Ada".to_string())];
    import(&h, "replies", &rows);
    let id = campaign(&h, "news", "replies", "wa", "Hi {{ name }}, news.");
    h.ok(&["campaign", "start", &id.to_string()]);
    h.wait_completed(id, &[&serve]);
    h.ok(&["org", "set", "--help-reply", "Acme: call +1 415 555 0100"]);

    let post = |n: u32, text: &str| {
        let body = serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
                "contacts": [{"profile": {"name": "Ada"}, "wa_id": "15005550201"}],
                "messages": [{"from": "15005550201", "id": format!("wamid.IN{n}"),
                    "timestamp": "1750000000", "type": "text", "text": {"body": text}}],
            }}]}],
        })
        .to_string();
        let signature = herald::signatures::meta_signature(APP_SECRET, body.as_bytes());
        let (code, answer) = crate::harness::http_request(
            &addr,
            "POST",
            &format!("/webhooks/whatsapp/chn_{channel}"),
            &[
                ("Content-Type", "application/json"),
                ("X-Hub-Signature-256", &signature),
            ],
            body.as_bytes(),
        );
        assert_eq!(code, 200, "{answer}");
    };
    post(1, "Is the sale on Sunday too?");
    post(2, "help");
    post(3, "STOP");

    let replies = wait_for("the answers to be sent", BOUND, || {
        let out = h.ok(&["replies", "list", "--address", "+15005550201", "--json"]);
        let replies: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let settled = replies.len() == 3
            && replies.iter().all(|r| {
                r["auto_reply_status"]
                    .as_str()
                    .is_none_or(|s| s.starts_with("sent: "))
            });
        if settled { Ok(replies) } else { Err(out) }
    });
    // Newest first: STOP, HELP, the question.
    assert_eq!(replies[0]["keyword"], "stop");
    assert!(
        replies[0]["auto_reply"]
            .as_str()
            .unwrap()
            .contains("Reply START")
    );
    assert_eq!(replies[1]["keyword"], "help");
    assert_eq!(replies[1]["auto_reply"], "Acme: call +1 415 555 0100");
    assert!(replies[2]["auto_reply"].is_null());
    for r in &replies {
        assert_eq!(r["campaign_id"], format!("cmp_{id}"), "{r}");
    }
    // The fake received both answers as text messages to the sender.
    let (_, messages) = http_get(&fake.addr, "/_fake/messages");
    let messages: Vec<serde_json::Value> = serde_json::from_str(&messages).unwrap();
    let texts = messages
        .iter()
        .filter(|m| m["type"] == "text" && m["to"] == "15005550201")
        .count();
    assert_eq!(
        texts, 3,
        "the campaign's message and two answers: {messages:?}"
    );
    // STOP suppressed the sender; the campaign counts its replies.
    let status = h.status(id);
    assert_eq!(status["replies"], 3, "{status}");
    let conversations = h.ok(&["replies", "list", "--unread"]);
    assert!(conversations.contains("+15005550201"), "{conversations}");
    assert!(
        h.ok(&["replies", "read", "+15005550201"])
            .starts_with("3 replies")
    );
    drop(serve);
}
