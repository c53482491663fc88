//! Auto-pause from the command line, through the real binary: `org set/show --auto-pause`,
//! `campaign create --auto-pause`, `campaign auto-pause`, the setting in `campaign status`,
//! clear errors for a malformed setting, and a served engine auto-pausing a campaign whose
//! messages mostly fail permanently, with the reason in `paused_reason` and the audit trail.

use crate::both_stores;
use crate::support::{Backend, DEADLINE, Herald};

both_stores!(auto_pause_from_the_command_line);

fn auto_pause_from_the_command_line(backend: Backend) {
    let h = Herald::migrated(backend);
    h.import_contacts("people", 300);
    const NO_HELP: &str = "help reply: none (HELP is recorded in the inbox, not answered)\nsend window: none (campaigns send at any hour unless they set one)";
    assert_eq!(
        h.ok(&["org", "show"]).trim(),
        format!("auto-pause 20%/500 (Herald's default)\n{NO_HELP}")
    );
    assert_eq!(
        h.ok(&["org", "set", "--auto-pause", "20%/50"]).trim(),
        "auto-pause 20%/50"
    );
    assert_eq!(
        h.ok(&["org", "show"]).trim(),
        format!("auto-pause 20%/50\n{NO_HELP}")
    );
    // The answer to HELP (docs/INBOX.md) is the other setting of `org set`.
    assert_eq!(
        h.ok(&["org", "set", "--help-reply", " Acme: call +1 415 555 0100 "])
            .trim(),
        "help reply: Acme: call +1 415 555 0100"
    );
    assert!(
        h.ok(&["org", "show"])
            .contains("help reply: Acme: call +1 415 555 0100")
    );
    assert_eq!(
        h.ok(&["org", "set", "--help-reply", ""]).trim(),
        "help reply: none (HELP is recorded in the inbox, not answered)"
    );
    // And the send window its campaigns inherit (docs/CAMPAIGNS.md, "Send windows").
    let bad = h.fails(&["org", "set", "--send-window", "8:00-21:00"]);
    assert!(bad.stderr.contains("like 08:00-21:00"), "{}", bad.stderr);
    assert_eq!(
        h.ok(&["org", "set", "--send-window", "08:00-21:00 Europe/Lisbon"])
            .trim(),
        "send window: 08:00-21:00 Europe/Lisbon (each recipient's local time)"
    );
    assert!(
        h.ok(&["org", "show"])
            .contains("send window: 08:00-21:00 Europe/Lisbon")
    );
    assert_eq!(
        h.ok(&["org", "set", "--send-window", "off"]).trim(),
        "send window: none (campaigns send at any hour unless they set one)"
    );
    let nothing = h.fails(&["org", "set"]);
    assert!(
        nothing
            .stderr
            .contains("--auto-pause, --help-reply or --send-window"),
        "{}",
        nothing.describe()
    );

    let bad = h.fails(&["org", "set", "--auto-pause", "lots"]);
    assert!(bad.stderr.contains("20%/500"), "{}", bad.describe());
    let bad = h.fails(&[
        "campaign",
        "create",
        "--name",
        "x",
        "--list",
        "people",
        "--channel",
        "sandbox",
        "--body",
        "Hi",
        "--auto-pause",
        "20%/5",
    ]);
    assert!(
        bad.stderr.contains("auto-pause window `5`"),
        "{}",
        bad.describe()
    );

    h.sandbox_channel("flaky", &["--permanent-fail-rate", "0.7"]);
    let off = h.create_campaign("off", "people", "flaky", &["--auto-pause", "off"]);
    let inherits = h.create_campaign("inherits", "people", "flaky", &[]);
    let s = h.status(off);
    assert_eq!(
        (&s["auto_pause"], &s["auto_pause_source"]),
        (&"off".into(), &"campaign".into())
    );
    let s = h.status(inherits);
    assert_eq!(
        (&s["auto_pause"], &s["auto_pause_source"]),
        (&"20%/50".into(), &"organisation".into())
    );
    let out = h.ok(&["campaign", "auto-pause", &format!("cmp_{off}"), "inherit"]);
    assert_eq!(
        out.trim(),
        format!("campaign cmp_{off}: auto-pause 20%/50 (organisation)")
    );
    h.ok(&["campaign", "auto-pause", &off.to_string(), "off"]);
    let text = h.ok(&["campaign", "status", &off.to_string()]);
    assert!(text.contains("auto-pause off (campaign)"), "{text}");

    h.ok(&["campaign", "start", &inherits.to_string()]);
    h.ok(&["campaign", "start", &off.to_string()]);
    let mut serve = h.spawn(&["serve", "--listen", "127.0.0.1:0"], "serve");
    let paused = h.wait_status(inherits, "auto-paused", DEADLINE, &[&serve], |s| {
        s["status"] == "paused" && s["in_flight"] == 0
    });
    let reason = paused["paused_reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("auto-paused: ")
            && reason.contains(" of the last 50 messages failed permanently (")
            && reason.contains("most common: Simulated permanent failure (sandbox channel)"),
        "{paused}"
    );
    assert!(
        h.events(inherits)
            .iter()
            .any(|(from, to, actor)| from == "sending"
                && to == "paused"
                && actor.starts_with("instance ")),
        "{:?}",
        h.events(inherits)
    );
    let done = h.wait_completed(off, &[&serve]);
    assert!(done["failed"].as_i64().unwrap_or(0) > 150, "{done}");
    serve.assert_running();
    serve.terminate(std::time::Duration::from_secs(15));
}
