//! Herald against the fake Twilio: a real campaign with status callbacks (in order, and
//! shuffled with duplicates), the opt-out of a 21610, and signed inbound STOP/START.

use crate::harness::{
    ACCOUNT_SID, AUTH_TOKEN, BOUND, Fake, TWILIO_FROM, campaign, create_channel, form_encode,
    free_port, http_request, import, phones, serve, wait_for, with_secret_key,
};
use crate::support::{Backend, Herald, accepted, assert_counters_consistent, n};
use herald::ids::ChannelId;
use herald::webhooks::signature::twilio_signature;
use serde_json::Value;

/// Ordinary recipients of the big campaign.
const NORMAL: usize = 290;
/// Magic numbers (herald-fakes twilio --help): the last four digits pick the behaviour.
const INVALID: [&str; 2] = ["+15005550001", "+1500555990001"]; // 400 / 21211
const OPTED_OUT: [&str; 2] = ["+15005550004", "+1500555990004"]; // 400 / 21610
const UNDELIVERED: [&str; 3] = ["+15005553003", "+1500555993003", "+15005553005"]; // 201, then undelivered 3000x

fn fake_twilio(h: &Herald, extra: &[&str]) -> Fake {
    let mut args = vec![
        "twilio",
        "--listen",
        "127.0.0.1:0",
        "--auth-token",
        AUTH_TOKEN,
        "--callback-delay-ms",
        "20",
    ];
    args.extend_from_slice(extra);
    Fake::start(h, &args)
}

fn twilio_channel(h: &Herald, name: &str, base_url: &str) -> i64 {
    create_channel(
        h,
        &[
            "--name",
            name,
            "--kind",
            "twilio",
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
            "--from",
            TWILIO_FROM,
            "--base-url",
            base_url,
        ],
    )
}

fn magic_rows(numbers: &[&str], tag: &str) -> Vec<(String, String)> {
    numbers
        .iter()
        .enumerate()
        .map(|(i, a)| (a.to_string(), format!("{tag}{i}")))
        .collect()
}

/// Waits for the receipts to land, checking on every look that no counter of a final
/// status ever goes down (receipts never move a message backwards).
fn wait_receipts(h: &Herald, id: i64, delivered: i64, undelivered: i64) -> Value {
    let mut last: Option<Value> = None;
    wait_for("the delivery receipts", BOUND, || {
        let s = h.status(id);
        if let Some(prev) = &last {
            for key in ["delivered", "undelivered", "failed", "read"] {
                assert!(
                    n(&s, key) >= n(prev, key),
                    "`{key}` went backwards: {prev} then {s}"
                );
            }
        }
        assert_counters_consistent(&s);
        let done = n(&s, "delivered") == delivered && n(&s, "undelivered") == undelivered;
        last = Some(s.clone());
        if done { Ok(s) } else { Err(s.to_string()) }
    })
}

fn twilio_flow(backend: Backend, fake_flags: &[&str]) {
    let mut h = Herald::migrated(backend);
    with_secret_key(&mut h);
    let port = free_port();
    let fake = fake_twilio(&h, fake_flags);
    let serve = serve(&h, port, true);
    let channel = twilio_channel(&h, "sms", &fake.base);

    let mut rows = phones(1, NORMAL);
    rows.extend(magic_rows(&INVALID, "Invalid"));
    rows.extend(magic_rows(&OPTED_OUT, "OptedOut"));
    rows.extend(magic_rows(&UNDELIVERED, "Unreachable"));
    let total = rows.len() as i64;
    import(&h, "everyone", &rows);

    let id = campaign(
        &h,
        "big",
        "everyone",
        "sms",
        "Hi {{ name }}, this is Herald.",
    );
    h.ok(&["campaign", "start", &id.to_string()]);
    let done = h.wait_completed(id, &[&serve]);
    assert_counters_consistent(&done);
    assert_eq!(n(&done, "total"), total, "{done}");
    assert_eq!(n(&done, "pending"), 0, "{done}");
    assert_eq!(
        n(&done, "failed"),
        (INVALID.len() + OPTED_OUT.len()) as i64,
        "the invalid and the opted-out numbers fail at once: {done}"
    );

    let s = wait_receipts(&h, id, NORMAL as i64, UNDELIVERED.len() as i64);
    assert_eq!(
        n(&s, "sent"),
        0,
        "every accepted message got its receipt: {s}"
    );
    assert_eq!(n(&s, "skipped"), 0, "{s}");
    assert_eq!(n(&s, "in_doubt_total"), 0, "{s}");

    let stats = fake.wait_callbacks_settled();
    assert_eq!(
        stats["received"].as_i64(),
        Some(accepted(&s)),
        "the fake holds exactly what Herald counts as sent or later: {stats} vs {s}"
    );
    assert_eq!(stats["duplicates"], 0, "{stats}");
    assert_eq!(
        stats["requests"].as_i64(),
        Some(total),
        "one create request per message, no retries: {stats}"
    );
    assert_eq!(
        stats["rejected"].as_i64(),
        Some((INVALID.len() + OPTED_OUT.len()) as i64),
        "{stats}"
    );
    assert_eq!(
        stats["callbacks_failed"], 0,
        "Herald refused status callbacks: {stats}"
    );
    // The final counts hold after every callback (duplicates included) has landed.
    let settled = h.status(id);
    for key in ["delivered", "undelivered", "failed", "sent", "read"] {
        assert_eq!(n(&settled, key), n(&s, key), "{key}: {s} then {settled}");
    }

    // The 21610 answers put those addresses on the suppression list: a second campaign
    // skips them, while the invalid number is tried (and refused) again.
    let mut again = magic_rows(&OPTED_OUT, "OptedOut");
    again.extend(magic_rows(&INVALID[..1], "Invalid"));
    again.extend(phones(2, 3));
    import(&h, "again", &again);
    let id2 = campaign(&h, "again", "again", "sms", "Hello again {{ name }}");
    h.ok(&["campaign", "start", &id2.to_string()]);
    let done2 = h.wait_completed(id2, &[&serve]);
    assert_eq!(
        n(&done2, "skipped"),
        OPTED_OUT.len() as i64,
        "opted-out addresses are suppressed: {done2}"
    );
    assert_eq!(n(&done2, "failed"), 1, "{done2}");
    wait_receipts(&h, id2, 3, 0);
    let stats2 = fake.wait_callbacks_settled();
    assert_eq!(
        stats2["requests"].as_i64(),
        Some(total + 4),
        "no request for a suppressed address: {stats2}"
    );
    assert_eq!(stats2["callbacks_failed"], 0, "{stats2}");

    // A resend of the mixed campaign (delivered, failed, undelivered) reaches exactly its
    // failed and undelivered recipients, minus those suppressed since: the opted-out ones
    // (their 21610) and an undelivered one who replied STOP after it ended.
    let addr = format!("127.0.0.1:{port}");
    // The fake's 64 callback connections fill 127.0.0.1's cap; one idle for a second
    // gives its place to this request (docs/SECURITY.md, slow clients).
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    assert_eq!(
        inbound(&addr, ChannelId(channel), UNDELIVERED[0], "STOP", true),
        200
    );
    let (resend, _) = h.resend(id, &[]);
    let draft = h.status(resend);
    assert_eq!(draft["status"], "draft", "{draft}");
    assert_eq!(draft["parent_id"], format!("cmp_{id}"), "{draft}");
    h.ok(&["campaign", "start", &resend.to_string()]);
    h.wait_completed(resend, &[&serve]);
    let export = h.ok(&["campaign", "export", &resend.to_string()]);
    let mut reader = csv::Reader::from_reader(export.as_bytes());
    let address = reader
        .headers()
        .unwrap()
        .iter()
        .position(|c| c == "address")
        .unwrap();
    let mut resent: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[address].to_string())
        .collect();
    resent.sort();
    let mut wanted: Vec<String> = INVALID
        .iter()
        .chain(&UNDELIVERED[1..])
        .map(|a| a.to_string())
        .collect();
    wanted.sort();
    assert_eq!(resent, wanted, "{export}");
    drop(serve);
}

/// In-order callbacks, 20 ms apart.
pub fn twilio_campaign_end_to_end(backend: Backend) {
    twilio_flow(backend, &[]);
}

/// Every callback at a random time and delivered twice: same final counts.
pub fn twilio_shuffled_duplicated_callbacks(backend: Backend) {
    twilio_flow(
        backend,
        &["--callback-order", "shuffled", "--duplicate-callbacks"],
    );
}

/// POSTs an inbound message to Herald's Twilio webhook, signed unless `sign` is false:
/// the status code.
fn inbound(addr: &str, channel_id: ChannelId, from: &str, body: &str, sign: bool) -> u16 {
    inbound_answer(addr, channel_id, from, body, sign).0
}

/// The same: the status code and the answer (TwiML when signed).
fn inbound_answer(
    addr: &str,
    channel_id: ChannelId,
    from: &str,
    body: &str,
    sign: bool,
) -> (u16, String) {
    // Each message its own sid, as Twilio gives them: a repeated sid is a retry, which
    // Herald records and answers once.
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sid = format!("SM{n:032x}");
    let path = format!("/webhooks/twilio/{channel_id}/inbound");
    let params: Vec<(String, String)> = [
        ("MessageSid", sid.as_str()),
        ("SmsSid", sid.as_str()),
        ("SmsMessageSid", sid.as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("From", from),
        ("To", TWILIO_FROM),
        ("Body", body),
        ("NumMedia", "0"),
        ("NumSegments", "1"),
        ("FromCountry", "US"),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let token = if sign { AUTH_TOKEN } else { "not-the-token" };
    let signature = twilio_signature(token, &format!("http://{addr}{path}"), &params);
    let (code, answer) = http_request(
        addr,
        "POST",
        &path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Twilio-Signature", &signature),
        ],
        form_encode(&params).as_bytes(),
    );
    if sign {
        assert!(
            answer.contains("<Response>"),
            "inbound answer is not TwiML: {answer}"
        );
    }
    (code, answer)
}

pub fn twilio_inbound_stop_start(backend: Backend) {
    let mut h = Herald::migrated(backend);
    with_secret_key(&mut h);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let fake = fake_twilio(&h, &[]);
    let serve = serve(&h, port, true);
    let channel = twilio_channel(&h, "sms", &fake.base);
    let people = phones(3, 4);
    let (stopper, other) = (people[0].0.clone(), people[1].0.clone());
    import(&h, "people", &people);

    // A forged STOP changes nothing; a signed one suppresses the sender.
    assert_eq!(
        inbound(&addr, ChannelId(channel), &other, "STOP", false),
        403
    );
    assert_eq!(
        inbound(&addr, ChannelId(channel), &stopper, "Stop", true),
        200
    );

    let per_recipient = |fake: &Fake, a: &str| fake.stats_full()["per_recipient"][a].as_i64();
    let first = campaign(&h, "first", "people", "sms", "Hi {{ name }}");
    h.ok(&["campaign", "start", &first.to_string()]);
    let s = h.wait_completed(first, &[&serve]);
    assert_eq!(n(&s, "skipped"), 1, "the STOP sender is skipped: {s}");
    assert_eq!(accepted(&s), 3, "{s}");
    assert_eq!(
        per_recipient(&fake, &stopper),
        None,
        "{}",
        fake.stats_full()
    );
    assert_eq!(per_recipient(&fake, &other), Some(1));

    // START lifts the suppression: the next campaign reaches the address again.
    assert_eq!(
        inbound(&addr, ChannelId(channel), &stopper, "START", true),
        200
    );
    let second = campaign(&h, "second", "people", "sms", "Hello again {{ name }}");
    h.ok(&["campaign", "start", &second.to_string()]);
    let s = h.wait_completed(second, &[&serve]);
    assert_eq!(n(&s, "skipped"), 0, "{s}");
    assert_eq!(accepted(&s), 4, "{s}");
    assert_eq!(per_recipient(&fake, &stopper), Some(1));
    assert_eq!(per_recipient(&fake, &other), Some(2));

    // HELP is answered with the organisation's help reply in the TwiML, which Twilio
    // sends; every inbound message is in the inbox with the campaign last sent to it.
    h.ok(&["org", "set", "--help-reply", "Acme: call +1 415 555 0100"]);
    let (code, answer) = inbound_answer(&addr, ChannelId(channel), &other, "help", true);
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer.contains("<Message>Acme: call +1 415 555 0100</Message>"),
        "{answer}"
    );
    let replies_of = |address: &str| -> Vec<serde_json::Value> {
        h.ok(&["replies", "list", "--address", address, "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // The forged STOP was not kept.
    let replies = replies_of(&other);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["keyword"], "help", "{replies:?}");
    assert_eq!(replies[0]["auto_reply_status"], "in_webhook_answer");
    assert_eq!(replies[0]["campaign_id"], format!("cmp_{second}"));
    // Newest first; Twilio confirms the STOP to a long code itself.
    let replies = replies_of(&stopper);
    let keywords: Vec<&str> = replies
        .iter()
        .map(|r| r["keyword"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keywords, ["start", "stop"], "{replies:?}");
    assert_eq!(replies[1]["auto_reply_status"], "provider_confirms");
    drop(serve);
}
