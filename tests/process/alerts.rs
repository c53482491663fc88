//! Alerts to people through the real binary, on both stores (docs/ALERTS.md): `alert
//! settings` with clear errors for bad input, a test alert sent by `serve` through the alert
//! channel, an auto-paused campaign alerting each recipient once (never through the
//! campaign's own channel), and an alert no channel can carry shown by `doctor`.

use crate::both_stores;
use crate::support::{Backend, DEADLINE, Herald, Proc};
use serde_json::Value;
use std::time::Instant;

both_stores!(alerts_from_the_command_line);

fn alerts(h: &Herald, status: &str) -> Vec<Value> {
    let out = h.ok(&[
        "alert", "list", "--status", status, "--limit", "100", "--json",
    ]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("alert list is not JSON ({e}): {out}"))
}

/// Waits until `alert list --status STATUS` has at least `n` alerts.
fn wait_alerts(h: &Herald, status: &str, n: usize, serve: &Proc) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let got = alerts(h, status);
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "[{}] {n} {status} alerts expected within {DEADLINE:?}; have {got:?}\n{}",
            h.backend().name(),
            serve.log_tail(40)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn alerts_from_the_command_line(backend: Backend) {
    let h = Herald::migrated(backend);
    let shown = h.ok(&["alert", "settings"]);
    assert!(shown.contains("recipients: none"), "{shown}");
    assert!(
        shown.contains("in-doubt threshold: 100 (default)"),
        "{shown}"
    );

    // Bad input names the option, the value and the fix, and changes nothing.
    let bad = h.fails(&["alert", "settings", "--add-recipient", "ops@", "--json"]);
    assert!(
        bad.stderr.contains("--add-recipient `ops@`"),
        "{}",
        bad.describe()
    );
    let bad = h.fails(&["alert", "settings", "--channel", "chn_999"]);
    assert!(
        bad.stderr.contains("chn_999") && bad.stderr.contains("herald channel list"),
        "{}",
        bad.describe()
    );
    let bad = h.fails(&["alert", "settings", "--in-doubt-threshold", "-3"]);
    assert!(bad.stderr.contains("`default`"), "{}", bad.describe());
    let bad = h.fails(&["alert", "test"]);
    assert!(bad.stderr.contains("--add-recipient"), "{}", bad.describe());
    assert!(h.ok(&["alert", "settings"]).contains("recipients: none"));

    h.sandbox_channel("alerts", &[]);
    h.sandbox_channel("flaky", &["--permanent-fail-rate", "0.7"]);
    let out = h.ok(&[
        "alert",
        "settings",
        "--channel",
        "alerts",
        "--add-recipient",
        "+1 (415) 555-0100",
        "--add-recipient",
        "ops@example.org",
        "--in-doubt-threshold",
        "50",
        "--json",
    ]);
    let settings: Value = serde_json::from_str(&out).expect("settings JSON");
    assert_eq!(
        settings["recipients"],
        serde_json::json!(["+14155550100", "ops@example.org"])
    );
    assert_eq!(settings["in_doubt_threshold"], 50);
    assert!(
        settings["channel_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("chn_"))
    );

    let queued = h.ok(&["alert", "test"]);
    assert!(queued.starts_with("2 test alert(s) queued"), "{queued}");

    h.import_contacts("people", 200);
    let id = h.create_campaign("doomed", "people", "flaky", &["--auto-pause", "20%/50"]);
    h.ok(&["campaign", "start", &id.to_string()]);
    let serve = h.spawn(&["serve", "--listen", "127.0.0.1:0"], "serve");
    h.wait_status(id, "auto-paused", DEADLINE, &[&serve], |s| {
        s["status"] == "paused" && s["in_flight"] == 0
    });
    let sent = wait_alerts(&h, "sent", 4, &serve);
    let tests = sent
        .iter()
        .filter(|a| a["event_type"] == "alert.test")
        .count();
    assert_eq!(tests, 2, "one test alert per recipient: {sent:?}");
    let paused: Vec<&Value> = sent
        .iter()
        .filter(|a| a["event_type"] == "campaign.auto_paused")
        .collect();
    assert_eq!(paused.len(), 2, "one per recipient: {sent:?}");
    for a in &paused {
        assert_eq!(a["campaign_id"], format!("cmp_{id}"));
        assert_eq!(a["channel_id"], settings["channel_id"], "{a}");
        assert_ne!(a["channel_id"], a["concerns_channel_id"], "{a}");
        assert_eq!(a["link"], format!("/campaigns/cmp_{id}"));
    }

    // No channel can carry it: undeliverable, and doctor says so (exit code non-zero).
    h.ok(&["alert", "settings", "--channel", "none"]);
    h.ok(&["alert", "test"]);
    let undeliverable = wait_alerts(&h, "undeliverable", 2, &serve);
    assert!(
        undeliverable[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no alert channel is set")),
        "{undeliverable:?}"
    );
    let (code, report) = h.doctor();
    assert_ne!(code, Some(0), "{report:#}");
    let findings = report["findings"].to_string();
    assert!(findings.contains("could not be delivered"), "{report:#}");
    assert_eq!(
        report["undeliverable_alerts"].as_array().map(Vec::len),
        Some(2)
    );
    drop(serve);
}
