//! Herald's SMTP channel against a real SMTP server (aiosmtpd, driven by
//! `smtp_server.py`) that refuses one recipient for now (451) and one for good (550).

use crate::harness::{
    BOUND, Guard, aiosmtpd_python, campaign, create_channel, free_port, http_request, import,
    wait_for,
};
use crate::support::{Backend, Herald, assert_counters_consistent, http_get, n};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const NORMAL: usize = 18;
const TEMPFAIL: &str = "tempfail@example.test";
const REJECT: &str = "reject@example.test";

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

fn header<'a>(mail: &'a Value, name: &str) -> Vec<&'a str> {
    mail["headers"][name]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub fn smtp_against_a_real_server(backend: Backend) {
    let python = aiosmtpd_python();
    let mut h = Herald::migrated(backend);
    crate::harness::with_secret_key(&mut h);
    h.set_env("HERALD_RETRY_MAX_ATTEMPTS", "2");
    h.set_env("HERALD_RETRY_BASE_MS", "10");

    let smtp_port = free_port();
    let events_file = h.path("smtp-events.jsonl");
    let mut cmd = Command::new(&python);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/providers/smtp_server.py"
    ))
    .arg(smtp_port.to_string())
    .arg(&events_file)
    .env("PYTHONUNBUFFERED", "1");
    let mut server = Guard::spawn(cmd, "aiosmtpd", h.path("smtp-server.log"));
    server.wait_log("listening on", BOUND);

    // No --public-url: Herald has no unsubscribe URL to offer.
    let port = free_port();
    let serve = crate::harness::serve(&h, port, false);
    create_channel(
        &h,
        &[
            "--name",
            "mail",
            "--kind",
            "smtp",
            "--host",
            "127.0.0.1",
            "--port",
            &smtp_port.to_string(),
            "--tls",
            "none",
            "--from",
            "herald@example.test",
        ],
    );
    let mut rows: Vec<(String, String)> = (0..NORMAL)
        .map(|i| (format!("reader{i}@example.test"), format!("Reader{i}")))
        .collect();
    rows.push((TEMPFAIL.into(), "Later".into()));
    rows.push((REJECT.into(), "Never".into()));
    import(&h, "readers", &rows);

    let id = campaign(
        &h,
        "newsletter",
        "readers",
        "mail",
        "Subject: News for {{ name }}\n\nHello {{ name }},\nthis is Herald.",
    );
    h.ok(&["campaign", "start", &id.to_string()]);
    let s = h.wait_completed(id, &[&serve]);
    assert_counters_consistent(&s);
    assert_eq!(n(&s, "sent"), NORMAL as i64, "{s}");
    assert_eq!(n(&s, "failed"), 2, "{s}");

    let all = wait_for("the server's record of every message", BOUND, || {
        let all = events(&events_file);
        let data = all.iter().filter(|e| e["event"] == "data").count();
        if data >= NORMAL {
            Ok(all)
        } else {
            Err(format!("{data} messages so far"))
        }
    });
    let rcpts = |to: &str| -> Vec<i64> {
        all.iter()
            .filter(|e| e["event"] == "rcpt" && e["to"] == to)
            .filter_map(|e| e["code"].as_i64())
            .collect()
    };
    assert_eq!(
        rcpts(TEMPFAIL),
        [451, 451],
        "the 451 recipient is tried HERALD_RETRY_MAX_ATTEMPTS times, then failed"
    );
    assert_eq!(rcpts(REJECT), [550], "the 550 recipient fails at once");

    let mails: Vec<&Value> = all.iter().filter(|e| e["event"] == "data").collect();
    assert_eq!(mails.len(), NORMAL, "one message per accepted recipient");
    let mut recipients = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for mail in &mails {
        assert_eq!(mail["mail_from"], "herald@example.test", "{mail}");
        let to = mail["rcpt_tos"][0]
            .as_str()
            .expect("a recipient")
            .to_string();
        let i: usize = to
            .strip_prefix("reader")
            .and_then(|r| r.strip_suffix("@example.test"))
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("unexpected recipient {to}"));
        assert_eq!(
            header(mail, "subject"),
            [format!("News for Reader{i}")],
            "{mail}"
        );
        assert_eq!(
            mail["body"]
                .as_str()
                .map(|b| b.replace("\r\n", "\n").trim_end().to_string()),
            Some(format!("Hello Reader{i},\nthis is Herald.")),
            "{mail}"
        );
        let message_id = header(mail, "message-id");
        assert_eq!(message_id.len(), 1, "{mail}");
        let mid = message_id[0];
        assert!(
            mid.starts_with("<herald.") && mid.ends_with("@example.test>"),
            "Message-ID {mid}"
        );
        assert!(ids.insert(mid.to_string()), "Message-ID {mid} twice");
        assert!(recipients.insert(to), "{mail}");
        // Without a public URL there is nothing to unsubscribe at.
        assert!(header(mail, "list-unsubscribe").is_empty(), "{mail}");
        assert!(header(mail, "list-unsubscribe-post").is_empty(), "{mail}");
    }
    assert_eq!(recipients.len(), NORMAL);

    // With a public URL every email offers one-click unsubscribe (RFC 8058), and a POST to
    // its link suppresses the recipient for the next campaign.
    let mut serve = serve;
    serve.terminate(Duration::from_secs(20));
    let port = free_port();
    let serve = crate::harness::serve(&h, port, true);
    let few: Vec<(String, String)> = rows[..3].to_vec();
    import(&h, "few", &few);
    let second = campaign(
        &h,
        "second",
        "few",
        "mail",
        "Subject: Again\n\nHi {{ name }}",
    );
    h.ok(&["campaign", "start", &second.to_string()]);
    let s = h.wait_completed(second, &[&serve]);
    assert_eq!(n(&s, "sent"), 3, "{s}");
    let later = wait_for("the second campaign's emails", BOUND, || {
        let later: Vec<Value> = events(&events_file)
            .into_iter()
            .filter(|e| e["event"] == "data")
            .skip(NORMAL)
            .collect();
        if later.len() >= 3 {
            Ok(later)
        } else {
            Err(format!("{} so far", later.len()))
        }
    });
    let prefix = format!("<http://127.0.0.1:{port}/unsubscribe/");
    let mut links = Vec::new();
    for mail in &later {
        let unsubscribe = header(mail, "list-unsubscribe");
        assert!(
            unsubscribe.len() == 1
                && unsubscribe[0].starts_with(&prefix)
                && unsubscribe[0].ends_with('>'),
            "List-Unsubscribe: {mail}"
        );
        assert_eq!(
            header(mail, "list-unsubscribe-post"),
            ["List-Unsubscribe=One-Click"],
            "{mail}"
        );
        let path = unsubscribe[0]
            .trim_start_matches(&prefix[..prefix.len() - "/unsubscribe/".len()])
            .trim_end_matches('>')
            .to_string();
        links.push((mail["rcpt_tos"][0].as_str().unwrap_or("").to_string(), path));
    }
    let addr = format!("127.0.0.1:{port}");
    let (leaver, path) = &links[0];
    // A GET (what link scanners do) only shows the form; the one-click POST unsubscribes.
    assert_eq!(http_get(&addr, &links[1].1).0, 200);
    let tampered = format!("{}x", &path[..path.len() - 1]);
    let one_click = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = b"List-Unsubscribe=One-Click";
    assert_eq!(
        http_request(&addr, "POST", &tampered, &one_click, body).0,
        404
    );
    assert_eq!(http_request(&addr, "POST", path, &one_click, body).0, 200);
    let third = campaign(
        &h,
        "third",
        "few",
        "mail",
        "Subject: Once more\n\nHi {{ name }}",
    );
    h.ok(&["campaign", "start", &third.to_string()]);
    let s = h.wait_completed(third, &[&serve]);
    assert_eq!(
        n(&s, "skipped"),
        1,
        "{leaver} unsubscribed with one click: {s}"
    );
    assert_eq!(n(&s, "sent"), 2, "{s}");
    drop(serve);
}
