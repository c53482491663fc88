//! Send windows (issue 14, point 4) as a campaign manager meets them with the real binary:
//! contacts whose `timezone` comes from a CSV column, a campaign whose window is open for
//! one of them and closed for the other; the first is sent at once, the second waits with
//! no attempt spent, and `status`, its JSON and the API say how many wait and until when;
//! the campaign is not stuck; turning the window off sends the other at once; and an
//! instance whose window clock reads the opening (a debug build's `HERALD_TEST_WINDOW_CLOCK`)
//! sends the held one. tests/it/send_windows.rs moves the clock through several zones.

use crate::both_stores;
use crate::support::{Backend, Herald, http_request, n};
use chrono::Timelike;

both_stores!(a_recipient_outside_the_window_waits_and_is_shown_waiting);

fn a_recipient_outside_the_window_waits_and_is_shown_waiting(backend: Backend) {
    let mut h = Herald::migrated(backend);
    h.set_env("HERALD_STUCK_AFTER_MS", "1000");
    // A window of two hours starting two hours from now (UTC): open in UTC+2, closed in
    // UTC, and still so if the run crosses into the next hour (a one-hour window closed
    // in UTC+2 too when a run started in an hour's last seconds).
    let hour = (chrono::Utc::now().hour() + 2) % 24;
    let window = format!("{hour:02}:00-{:02}:00", (hour + 2) % 24);
    std::fs::write(
        h.path("zones.csv"),
        "address,name,city,timezone\n+15550700001,East,Athens,Etc/GMT-2\n+15550700002,Here,London,Etc/UTC\n",
    )
    .unwrap();
    h.ok(&[
        "contacts",
        "import",
        h.path("zones.csv").to_str().unwrap(),
        "--list",
        "zones",
    ]);
    h.sandbox_channel("sms", &[]);

    // A window that is not one is refused with the fix; nothing is created.
    for (window, says) in [
        ("8-21", "two 24-hour local times"),
        ("08:00-21:00 Mars/Base", "IANA time zone"),
    ] {
        let r = h.fails(&[
            "campaign",
            "create",
            "--name",
            "w",
            "--list",
            "zones",
            "--channel",
            "sms",
            "--body",
            "Hi",
            "--send-window",
            window,
        ]);
        assert!(r.stderr.contains(says), "{window}: {}", r.stderr);
    }
    assert_eq!(h.ok(&["campaign", "list"]).lines().count(), 1);

    let id = h.create_campaign("windowed", "zones", "sms", &["--send-window", &window]);
    let viewer = h
        .ok(&["apikey", "create", "--name", "w", "--role", "viewer"])
        .trim()
        .to_string();
    let mut serve = h.spawn(&["serve", "--listen", "127.0.0.1:0"], "serve");
    let addr = serve.listen_addr();
    h.ok(&["campaign", "start", &id.to_string()]);
    let status = h.wait_status(
        id,
        "one sent, one waiting",
        std::time::Duration::from_secs(30),
        &[&serve],
        |s| n(s, "sent") == 1 && n(s, "queued") == 1 && n(s, "in_flight") == 0,
    );
    assert_eq!(status["status"], "sending", "{status}");
    assert_eq!(status["send_window"], window.as_str(), "{status}");
    assert_eq!(status["send_window_source"], "campaign", "{status}");
    assert_eq!(status["waiting"]["messages"], 1, "{status}");
    let until = status["waiting"]["until"].as_str().unwrap().to_string();
    assert!(
        until.contains(&format!("T{hour:02}:00:00")),
        "opens at {hour}:00 UTC: {until}"
    );
    let text = h.ok(&["campaign", "status", &id.to_string()]);
    assert!(
        text.contains(&format!(
            "waiting 1 for their send window, the first at {until}"
        )),
        "{text}"
    );
    // The API says the same, and waiting is not stuck.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, _, body) = http_request(
        &addr,
        "GET",
        &format!("/api/v1/campaigns/cmp_{id}"),
        &[("Authorization", &format!("Bearer {viewer}"))],
    );
    assert_eq!(code, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["waiting"]["messages"], 1, "{api}");
    assert_eq!(api["waiting"]["until"], until.as_str(), "{api}");
    assert!(api["stuck"].is_null(), "{api}");
    let attempts = crate::support::query_i64(
        h.url(),
        &format!("SELECT attempts FROM messages WHERE campaign_id = {id} AND status = 'queued'"),
    );
    assert_eq!(attempts, 0, "the wait spent no attempt");

    // Off: the waiting message is looked at again at once, and sent.
    let out = h.ok(&["campaign", "send-window", &id.to_string(), "off"]);
    assert!(out.contains("send window none: any hour (none)"), "{out}");
    let done = h.wait_completed(id, &[&serve]);
    assert_eq!(n(&done, "sent"), 2, "{done}");

    serve.terminate(std::time::Duration::from_secs(20));

    // The window opening: the same campaign again, held by an instance that looks at held
    // messages every 200 ms (so a clock that moves is seen at once; the checks above read
    // the held row, which such re-looks briefly put in flight), then an instance whose
    // window clock (a debug build's HERALD_TEST_WINDOW_CLOCK) reads a minute after the
    // opening sends the held message, having spent no attempt on the wait.
    let recheck = ("HERALD_SEND_WINDOW_RECHECK_MS", "200");
    let mut holder = h.spawn_env(&["worker"], &[recheck], "worker-before-the-opening");
    let again = h.create_campaign("opens", "zones", "sms", &["--send-window", &window]);
    h.ok(&["campaign", "start", &again.to_string()]);
    let status = h.wait_status(
        again,
        "one sent, one waiting",
        std::time::Duration::from_secs(30),
        &[&holder],
        |s| n(s, "sent") == 1 && n(s, "queued") == 1 && n(s, "in_flight") == 0,
    );
    let until = status["waiting"]["until"].as_str().unwrap().to_string();
    // A graceful stop hands a held message it is re-looking at back, attempt refunded.
    holder.terminate(std::time::Duration::from_secs(20));
    let opened =
        chrono::DateTime::parse_from_rfc3339(&until).unwrap() + chrono::Duration::minutes(1);
    let clock = opened.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let later = h.spawn_env(
        &["worker"],
        &[recheck, ("HERALD_TEST_WINDOW_CLOCK", clock.as_str())],
        "worker-at-the-opening",
    );
    let done = h.wait_completed(again, &[&later]);
    assert_eq!(n(&done, "sent"), 2, "{done}");
    let attempts = crate::support::query_i64(
        h.url(),
        &format!("SELECT max(attempts) FROM messages WHERE campaign_id = {again}"),
    );
    assert_eq!(attempts, 1, "each message sent on its first attempt");
    drop(later);
    h.assert_healthy();
}
