//! `herald webhook …` end to end: the JSON contract of `create --json` (id, url, events,
//! secret; no --event = every type but message.*), the secret shown once and sealed at rest,
//! the outbound guard at save time, list/test/deliveries/replay/rotate-secret/delete, bare
//! and canonical ids, and clear errors with a non-zero exit.

use crate::both_stores;
use crate::support::{Backend, Herald, assert_clean_failure, query_i64};
use base64::Engine as _;
use herald::events::EventType;
use serde_json::Value;

both_stores!(webhook_commands);

const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn webhook_commands(backend: Backend) {
    let mut h = Herald::migrated(backend);
    let url = "http://127.0.0.1:9/hook";

    // Without a key to seal the secret with, nothing is created.
    let r = h.run(&["webhook", "create", "--url", url]);
    assert_ne!(r.code, Some(0), "{}", r.describe());
    assert_clean_failure(&r);
    assert!(r.stderr.contains("herald keygen"), "{}", r.stderr);
    h.set_env("HERALD_SECRET_KEY", SECRET_KEY);

    // The default guard refuses a loopback destination, naming the flag and the setting
    // (the process tests' environment allows private destinations for their fakes).
    let r = h.run_env(
        &["webhook", "create", "--url", url],
        &[("HERALD_OUTBOUND_ALLOW_PRIVATE", "false")],
    );
    assert_ne!(r.code, Some(0), "{}", r.describe());
    assert_clean_failure(&r);
    assert!(
        r.stderr.contains("--url") && r.stderr.contains("outbound_allow_private"),
        "{}",
        r.stderr
    );

    let created = json(&h.ok(&["webhook", "create", "--url", url, "--json"]));
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("whk_"), "{created}");
    assert_eq!(created["url"], url);
    let defaults: Vec<&str> = EventType::default_subscription()
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(created["events"], serde_json::json!(defaults));
    let secret = created["secret"].as_str().unwrap().to_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert_eq!(raw.len(), 32, "whsec_ + base64 of 32 random bytes");
    assert_eq!(
        query_i64(
            h.url(),
            "SELECT count(*) FROM webhook_endpoints WHERE secret LIKE '%whsec_%'"
        ),
        0,
        "the secret is sealed at rest"
    );

    let chosen = json(&h.ok(&[
        "webhook",
        "create",
        "--url",
        "http://127.0.0.1:9/other",
        "--event",
        "campaign.completed",
        "--event",
        "message.failed",
        "--event",
        "campaign.completed",
        "--description",
        "ops",
        "--json",
    ]));
    assert_eq!(
        chosen["events"],
        serde_json::json!(["campaign.completed", "message.failed"])
    );
    for (flag, value, needle) in [
        ("--event", "campaign.finished", "campaign.completed"),
        ("--event", "webhook.test", "cannot be subscribed"),
        ("--url", "ftp://example.org/x", "scheme"),
    ] {
        let mut args = vec!["webhook", "create", "--url", url];
        if flag == "--url" {
            args = vec!["webhook", "create"];
        }
        args.extend([flag, value]);
        let r = h.fails(&args);
        assert!(
            r.stderr.contains(flag) && r.stderr.contains(needle),
            "{flag} {value}: {}",
            r.stderr
        );
    }

    let list = h.ok(&["webhook", "list", "--json"]);
    assert!(!list.contains("whsec_"), "a secret is shown once: {list}");
    assert_eq!(json(&list).as_array().unwrap().len(), 2);
    let text = h.ok(&["webhook", "list"]);
    assert!(text.contains(&id) && text.contains("enabled"), "{text}");

    // A bare number names the endpoint too.
    let bare = id.trim_start_matches("whk_");
    let sent = json(&h.ok(&["webhook", "test", bare, "--json"]));
    let event = sent["event_id"].as_str().unwrap().to_string();
    assert!(event.starts_with("ntf_") && sent["seq"] == 1, "{sent}");
    let log = json(&h.ok(&["webhook", "deliveries", &id, "--json"]));
    assert_eq!(log[0]["event_id"], event.as_str());
    assert_eq!(log[0]["event_type"], "webhook.test");
    assert_eq!(log[0]["status"], "pending");
    let replay = json(&h.ok(&["webhook", "replay", &id, "--event", &event, "--json"]));
    assert_eq!(
        replay,
        serde_json::json!({"replayed": 0, "already_pending": 1, "more": false})
    );
    let since = json(&h.ok(&[
        "webhook",
        "replay",
        &id,
        "--failed-since",
        "2000-01-01T00:00:00Z",
        "--json",
    ]));
    assert_eq!(since["replayed"], 0);
    let r = h.run(&["webhook", "replay", &id]);
    assert_ne!(r.code, Some(0), "replay needs --event or --failed-since");
    let r = h.fails(&["webhook", "replay", &id, "--failed-since", "yesterday"]);
    assert!(r.stderr.contains("--failed-since"), "{}", r.stderr);
    let r = h.fails(&["webhook", "deliveries", &id, "--status", "lost"]);
    assert!(
        r.stderr.contains("pending, delivered, failed"),
        "{}",
        r.stderr
    );

    let rotated = json(&h.ok(&["webhook", "rotate-secret", &id, "--json"]));
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated["previous_secret_until"].is_string());

    let gone = h.ok(&["webhook", "delete", &id]);
    assert!(
        gone.contains(&format!("deleted {id}")) && gone.contains("1 pending"),
        "{gone}"
    );
    let r = h.fails(&["webhook", "delete", &id]);
    assert!(
        r.stderr
            .contains(&format!("there is no webhook endpoint {id}")),
        "{}",
        r.stderr
    );
    let r = h.fails(&["webhook", "test", "whk_x"]);
    assert!(r.stderr.contains("whk_N"), "{}", r.stderr);
}
