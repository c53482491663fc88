//! A provider outage end to end, with the real binaries: a Twilio channel pointed at a
//! closed loopback port pauses its campaign with the channel's reason (nothing failed, no
//! attempt spent); a Twilio-compatible server (`herald-fakes twilio`) then started on that
//! port lets the probe resume the campaign, which completes with every message sent once.

use crate::both_stores;
use crate::support::{
    Backend, DEADLINE, FakeTwilio, Herald, Proc, assert_counters_consistent, n, query_i64,
};
use serde_json::Value;
use std::time::Duration;

both_stores!(twilio_on_a_closed_port_pauses_then_completes);

const TOTAL: i64 = 25;
const TOKEN: &str = "tok-outage-0123";

fn twilio_on_a_closed_port_pauses_then_completes(backend: Backend) {
    let mut h = Herald::migrated(backend);
    let key = h.ok(&["keygen"]).trim().to_string();
    h.set_env("HERALD_SECRET_KEY", &key);
    h.set_env("HERALD_OUTAGE_PROBE_INTERVAL_MS", "300");
    // A loopback port nothing listens on (bound, then released).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    h.ok(&[
        "channel",
        "create",
        "--name",
        "sms-us",
        "--kind",
        "twilio",
        "--account-sid",
        "AC0123456789abcdef0123456789abcdef",
        "--auth-token",
        TOKEN,
        "--from",
        "+15017122661",
        "--base-url",
        &base,
    ]);
    h.import_contacts("people", TOTAL as usize);
    let id = h.create_campaign("outage", "people", "sms-us", &[]);
    let mut serve = h.spawn(&["serve", "--listen", "127.0.0.1:0"], "serve");
    serve.listen_addr();
    h.ok(&["campaign", "start", &id.to_string()]);

    // Paused by the engine with the channel's reason, within 60 s: nothing failed, nothing
    // in flight, no attempt spent.
    let paused = h.wait_status(
        id,
        "paused with nothing in flight",
        DEADLINE,
        &[&serve],
        |s| s["status"] == "paused" && n(s, "in_flight") == 0,
    );
    assert_counters_consistent(&paused);
    assert_eq!(n(&paused, "failed"), 0, "{paused}");
    assert_eq!(n(&paused, "queued"), TOTAL, "{paused}");
    let reason = paused["paused_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("channel `sms-us` unreachable since")
            && reason.ends_with("connection refused"),
        "the status does not give the channel's reason: {paused}"
    );
    assert_eq!(
        query_i64(
            h.url(),
            "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM messages"
        ),
        0,
        "an attempt was spent on a provider that could not be reached"
    );
    let events = h.events(id);
    assert!(
        events.iter().any(|(from, to, actor)| from == "sending"
            && to == "paused"
            && actor.starts_with("instance ")),
        "no engine pause in the audit trail: {events:?}"
    );
    // The channel's availability, as the CLI and doctor show it.
    let channels: Value = serde_json::from_str(&h.ok(&["channel", "list", "--json"])).unwrap();
    let sms = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sms-us")
        .unwrap_or_else(|| panic!("no sms-us channel: {channels}"));
    assert_eq!(sms["availability"], "unavailable", "{sms}");
    assert_eq!(sms["unavailable_reason"], "connection refused", "{sms}");
    let (_, doctor) = h.doctor();
    assert!(
        doctor["unavailable_channels"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["name"] == "sms-us")),
        "doctor does not report the unavailable channel: {doctor:#}"
    );

    // The provider comes back on that port: the probe resumes the campaign.
    let fake = FakeTwilio::start_on(port, TOKEN);
    let done = h.wait_completed(id, &[&serve]);
    assert_counters_consistent(&done);
    assert_eq!(n(&done, "sent"), TOTAL, "{done}");
    assert_eq!(n(&done, "failed"), 0, "{done}");
    let stats = fake.stats();
    assert_eq!(stats["received"], TOTAL, "{stats}");
    assert_eq!(stats["duplicates"], 0, "{stats}");
    assert_eq!(
        query_i64(
            h.url(),
            "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM messages"
        ),
        TOTAL,
        "each message is sent with exactly one attempt"
    );
    let events = h.events(id);
    assert!(
        events.iter().any(|(from, to, actor)| from == "paused"
            && to == "sending"
            && actor.starts_with("instance ")),
        "no engine resume in the audit trail: {events:?}"
    );
    let channels: Value = serde_json::from_str(&h.ok(&["channel", "list", "--json"])).unwrap();
    assert!(
        channels
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["availability"] == "available"),
        "{channels}"
    );
    finish(&mut serve);
}

fn finish(serve: &mut Proc) {
    serve.assert_running();
    let (code, _) = serve.terminate(Duration::from_secs(15));
    assert!(code.success(), "serve exited with {code}");
}
