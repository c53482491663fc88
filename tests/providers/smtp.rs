//! Herald's SMTP channel against a real SMTP server (aiosmtpd, driven by
//! `smtp_server.py`) that refuses one recipient for now (451) and one for good (550); and a
//! campaign's email parts (subject, HTML, sender name, reply-to) read back by Python's own
//! MIME parser, with Postmark's bounce and complaint webhooks applied to what was sent.

use crate::harness::{
    BOUND, Guard, aiosmtpd_python, campaign, create_channel, free_port, http_request, import,
    wait_for,
};
use crate::support::{Backend, Herald, assert_counters_consistent, http_get, n};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
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

/// Starts `smtp_server.py` on a free port: (its guard, the port, its events file).
fn start_smtp_server(h: &Herald) -> (Guard, u16, PathBuf) {
    let python = aiosmtpd_python();
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
    (server, smtp_port, events_file)
}

pub fn smtp_against_a_real_server(backend: Backend) {
    let mut h = Herald::migrated(backend);
    crate::harness::with_secret_key(&mut h);
    h.set_env("HERALD_RETRY_MAX_ATTEMPTS", "2");
    h.set_env("HERALD_RETRY_BASE_MS", "10");
    let (_server, smtp_port, events_file) = start_smtp_server(&h);

    // No --public-url: Herald has no unsubscribe URL to offer.
    let port = free_port();
    let serve = crate::harness::serve(&h, port, false);
    smtp_channel(&h, smtp_port, "herald@example.test", &[]);
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

/// The channel's Postmark webhook token (the Basic-auth password Postmark sends); a `:` in
/// it, since only the first `:` of Basic credentials ends the user name.
const POSTMARK_TOKEN: &str = "pm:hook-Token_0123456789";
const FROM: &str = "herald@example.test";
/// A sender name with what a display name must quote or encode: `,`, `"`, `<>`, `()`, `@`,
/// `;` and non-ASCII.
const FROM_NAME: &str = "Herald, \"Café\" <Shop> (x) @ ; é";
const REPLY_TO: &str = "help@example.test";
/// Long enough, and non-ASCII enough, that the header is folded over encoded words.
const SUBJECT: &str = "Olá {{ name }}, the café is open — ação é já, ação é já, ação é já, ação é já, ação é já, ação é já, ação é já, ação é já, ação é já, ação é já, 日本語のテキスト日本語のテキスト日本語のテキスト, ação é já";
/// The HTML's one link, as the derived text must show it (the HTML writes `&` as `&amp;`).
const LINK: &str = "https://shop.example.org/sale?from=herald&utm=mail";
/// The recipients: one hard-bounced, one complaining, one a forged webhook names.
const BOUNCED: &str = "tom@example.test";
const COMPLAINED: &str = "zoe@example.test";
const UNTOUCHED: &str = "cy@example.test";

/// `value` as the HTML part must print it: `&`, `<`, `>`, quotes escaped.
fn html_escaped(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

/// A CLI CSV export (`herald campaign export ID`, `herald suppressions export`) as rows of
/// column name to cell.
fn csv_rows(h: &Herald, args: &[&str]) -> Vec<BTreeMap<String, String>> {
    let out = h.ok(args);
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .unwrap_or_else(|e| panic!("{args:?} printed no CSV header ({e}): {out}"))
        .iter()
        .map(str::to_string)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{args:?}: a bad CSV row ({e}): {out}"));
            columns
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

/// The campaign's messages by address (`herald campaign export`).
fn messages_by_address(h: &Herald, id: i64) -> BTreeMap<String, BTreeMap<String, String>> {
    csv_rows(h, &["campaign", "export", &id.to_string()])
        .into_iter()
        .map(|row| (row["address"].clone(), row))
        .collect()
}

/// The organisation's suppressions, address to reason (`herald suppressions export`).
fn suppressions(h: &Herald) -> BTreeMap<String, String> {
    csv_rows(h, &["suppressions", "export"])
        .into_iter()
        .map(|row| (row["address"].clone(), row["reason"].clone()))
        .collect()
}

/// POSTs a Postmark webhook body to the channel's Postmark path with `authorization`.
fn post_postmark(addr: &str, channel: i64, authorization: Option<&str>, body: &Value) -> u16 {
    let path = format!("/webhooks/smtp/{channel}/postmark");
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    let (code, answer) = http_request(addr, "POST", &path, &headers, body.to_string().as_bytes());
    if code != 200 && code != 403 {
        panic!("POST {path} answered {code}: {answer}");
    }
    code
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// An smtp channel `mail` to the test server on `port` (no TLS), sending as `from`, with
/// `extra` flags; its id.
fn smtp_channel(h: &Herald, port: u16, from: &str, extra: &[&str]) -> i64 {
    let port = port.to_string();
    let mut args = vec![
        "--name",
        "mail",
        "--kind",
        "smtp",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "none",
        "--from",
        from,
    ];
    args.extend_from_slice(extra);
    create_channel(h, &args)
}

/// What Postmark's `Metadata.herald_id` returns of a Message-ID: its part before the `@`.
fn metadata_id(message_id: &str) -> &str {
    message_id
        .trim_start_matches('<')
        .split('@')
        .next()
        .unwrap()
}

/// A Postmark HardBounce for the email whose Message-ID is `message_id`.
fn postmark_bounce(email: &str, message_id: &str) -> Value {
    let message_id = metadata_id(message_id);
    json!({
        "RecordType": "Bounce",
        "ID": 4323372036854775807_i64,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": { "herald_id": message_id },
        "ServerID": 1,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 user unknown",
        "Email": email,
        "From": FROM,
        "BouncedAt": "2026-12-06T10:00:00Z",
        "DumpAvailable": false,
        "Inactive": true,
        "CanActivate": true,
        "Subject": "Olá"
    })
}

/// A Postmark SpamComplaint for the email whose Message-ID is `message_id`.
fn postmark_complaint(email: &str, message_id: &str) -> Value {
    let message_id = metadata_id(message_id);
    json!({
        "RecordType": "SpamComplaint",
        "ID": 4323372036854775808_i64,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "",
        "MessageID": "00000000-0000-0000-0000-000000000000",
        "Metadata": { "herald_id": message_id },
        "ServerID": 1,
        "MessageStream": "outbound",
        "Description": "The subscriber explicitly marked this email as spam.",
        "Details": "Test spam complaint details",
        "Email": email,
        "From": FROM,
        "BouncedAt": "2026-12-06T10:05:00Z",
        "DumpAvailable": false,
        "Inactive": true,
        "CanActivate": false,
        "Subject": "Olá"
    })
}

/// A campaign with email parts, created with the CLI flags (`--subject`, `--html-file`,
/// `--from-name`, `--reply-to`, no `--body`), sent through aiosmtpd and parsed there by
/// Python's `email` package: multipart/alternative, the HTML escaping the contact's fields,
/// the text derived from it, every header decoded as rendered. Then Postmark's webhooks for
/// what was sent: a hard bounce marks the message undelivered and suppresses the address, a
/// complaint suppresses, and a request without the channel's token is refused and changes
/// nothing.
pub fn smtp_email_parts_and_postmark_feedback(backend: Backend) {
    let mut h = Herald::migrated(backend);
    crate::harness::with_secret_key(&mut h);
    let (_server, smtp_port, events_file) = start_smtp_server(&h);
    let port = free_port();
    let serve = crate::harness::serve(&h, port, false);
    let channel = smtp_channel(
        &h,
        smtp_port,
        FROM,
        &["--postmark-webhook-token", POSTMARK_TOKEN],
    );
    let rows: Vec<(String, String)> = [
        (BOUNCED, "Tom & <Jerry>"),
        (COMPLAINED, "Zoë"),
        (UNTOUCHED, "Cy"),
    ]
    .iter()
    .map(|(a, n)| ((*a).to_string(), (*n).to_string()))
    .collect();
    import(&h, "friends", &rows);
    let names: BTreeMap<String, String> = rows.iter().cloned().collect();

    // One line longer than SMTP's 1000 octets, with non-ASCII in it: the channel has to
    // encode the part so that the line survives.
    let long_line: String = (0..120)
        .map(|i| format!("palavra{i} é"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(long_line.len() > 1000, "{}", long_line.len());
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<h1>Olá {{{{ name }}}}!</h1>\n\
         <p>Our café sale starts today — até já.</p>\n\
         <p><a href=\"https://shop.example.org/sale?from=herald&amp;utm=mail\">See the sale</a></p>\n\
         <p>{long_line}</p>\n</body></html>\n"
    );
    let html_file = h.path("email.html");
    std::fs::write(&html_file, &html).expect("write the HTML");
    let out = h.ok(&[
        "campaign",
        "create",
        "--name",
        "email parts",
        "--list",
        "friends",
        "--channel",
        "mail",
        "--subject",
        SUBJECT,
        "--html-file",
        html_file.to_str().expect("utf-8 path"),
        "--from-name",
        "A first name",
        "--reply-to",
        REPLY_TO,
    ]);
    let id: i64 = out
        .trim()
        .strip_prefix("cmp_")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("campaign create printed {out:?}, not an id (cmp_N)"));
    // An edit changes the parts it names and keeps the others (the mails below still have
    // the subject, HTML and reply-to of the create); a bad one names its flag.
    let refused = h.fails(&["campaign", "edit", &id.to_string(), "--reply-to", "nobody"]);
    assert!(
        refused
            .stderr
            .contains("--reply-to: `nobody` is not an email address"),
        "{}",
        refused.stderr
    );
    h.ok(&[
        "campaign",
        "edit",
        &id.to_string(),
        "--from-name",
        FROM_NAME,
    ]);
    h.ok(&["campaign", "start", &id.to_string()]);
    let s = h.wait_completed(id, &[&serve]);
    assert_counters_consistent(&s);
    assert_eq!(n(&s, "sent"), 3, "{s}");

    let mails = wait_for("the server's record of every message", BOUND, || {
        let mails: Vec<Value> = events(&events_file)
            .into_iter()
            .filter(|e| e["event"] == "data")
            .collect();
        if mails.len() >= 3 {
            Ok(mails)
        } else {
            Err(format!("{} messages so far", mails.len()))
        }
    });
    assert_eq!(mails.len(), 3, "one message per recipient");
    let mut message_ids: BTreeMap<String, String> = BTreeMap::new();
    for mail in &mails {
        assert_eq!(mail["mail_from"], FROM, "{mail}");
        let to = mail["rcpt_tos"][0]
            .as_str()
            .expect("a recipient")
            .to_string();
        let name = names
            .get(&to)
            .unwrap_or_else(|| panic!("unexpected recipient {to}"));
        assert_eq!(
            mail["defects"],
            json!([]),
            "Python's parser found defects: {mail}"
        );
        assert!(
            mail["max_line_length"].as_u64().is_some_and(|l| l <= 998),
            "a line of the message is longer than RFC 5322 allows: {mail}"
        );
        assert_eq!(mail["content_type"], "multipart/alternative", "{mail}");
        let parts: Vec<&str> = mail["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .filter_map(|p| p["content_type"].as_str())
            .collect();
        assert_eq!(parts, ["text/plain", "text/html"], "{mail}");

        let html = mail["html"]
            .as_str()
            .expect("an HTML part")
            .replace("\r\n", "\n");
        assert!(
            html.contains(&format!("<h1>Olá {}!</h1>", html_escaped(name))),
            "the HTML prints the name escaped: {html}"
        );
        if to == BOUNCED {
            assert!(html.contains("Tom &amp; &lt;Jerry&gt;"), "{html}");
            assert!(!html.contains("<Jerry>"), "{html}");
        }
        assert!(
            html.contains("Our café sale starts today — até já."),
            "{html}"
        );
        assert!(
            html.contains(
                "<a href=\"https://shop.example.org/sale?from=herald&amp;utm=mail\">See the sale</a>"
            ),
            "{html}"
        );
        assert!(
            html.contains(&format!("<p>{long_line}</p>")),
            "the long line arrives whole: {html}"
        );

        let text = mail["text"]
            .as_str()
            .expect("a text part")
            .replace("\r\n", "\n");
        assert_eq!(mail["body"].as_str(), mail["text"].as_str(), "{mail}");
        assert!(
            text.contains(LINK),
            "the derived text shows the link: {text}"
        );
        assert!(
            text.contains(&format!("Olá {name}")),
            "the derived text has the name as written, unescaped: {text}"
        );
        assert!(
            text.contains("café") && text.contains("palavra119"),
            "{text}"
        );
        assert!(
            !text.replace(name.as_str(), "").contains('<')
                && !text.contains("&amp;")
                && !text.contains("&lt;"),
            "the derived text has no tags or entities: {text}"
        );

        assert_eq!(
            mail["subject"],
            SUBJECT.replace("{{ name }}", name),
            "{mail}"
        );
        assert_eq!(
            mail["from"],
            json!([{ "display_name": FROM_NAME, "addr_spec": FROM }]),
            "{mail}"
        );
        assert_eq!(
            mail["reply_to"],
            json!([{ "display_name": "", "addr_spec": REPLY_TO }]),
            "{mail}"
        );
        assert_eq!(header(mail, "message-id").len(), 1, "{mail}");
        assert_eq!(header(mail, "x-pm-metadata-herald_id").len(), 1, "{mail}");
        let mid = mail["message_id"]
            .as_str()
            .expect("a Message-ID")
            .to_string();
        assert!(
            mid.starts_with("<herald.") && mid.ends_with("@example.test>"),
            "Message-ID {mid}"
        );
        // Postmark keeps 80 characters of metadata: the Message-ID's part before the `@`.
        assert_eq!(
            mail["herald_id"],
            mid.trim_start_matches('<').split('@').next().unwrap(),
            "X-PM-Metadata-herald_id: {mail}"
        );
        assert!(
            message_ids.insert(to.clone(), mid).is_none(),
            "{to} got two messages"
        );
    }
    // Herald recorded each email's Message-ID as the message's provider id: what Postmark's
    // webhooks name it by.
    let before = messages_by_address(&h, id);
    for (to, mid) in &message_ids {
        assert_eq!(before[to]["provider_id"], *mid, "{to}: {:?}", before[to]);
        assert_eq!(before[to]["status"], "sent", "{to}: {:?}", before[to]);
    }
    assert!(suppressions(&h).is_empty(), "nobody is suppressed yet");

    // Requests without the channel's token are refused and change nothing.
    let addr = format!("127.0.0.1:{port}");
    let forged = postmark_bounce(UNTOUCHED, &message_ids[UNTOUCHED]);
    let wrong = basic("postmark", "pm:hook-Token_0123456780");
    assert_eq!(post_postmark(&addr, channel, Some(&wrong), &forged), 403);
    assert_eq!(post_postmark(&addr, channel, None, &forged), 403);
    let right = basic("postmark", POSTMARK_TOKEN);
    assert_eq!(
        post_postmark(&addr, channel + 1000, Some(&right), &forged),
        403,
        "no such channel"
    );

    // Postmark's hard bounce and spam complaint, with the token.
    let bounce = postmark_bounce(BOUNCED, &message_ids[BOUNCED]);
    assert_eq!(post_postmark(&addr, channel, Some(&right), &bounce), 200);
    let complaint = postmark_complaint(COMPLAINED, &message_ids[COMPLAINED]);
    let anyone = basic("", POSTMARK_TOKEN);
    assert_eq!(
        post_postmark(&addr, channel, Some(&anyone), &complaint),
        200
    );

    let reason = "hard bounce: 550 5.1.1 user unknown (Postmark HardBounce)";
    let after = wait_for("the bounce and the complaint applied", BOUND, || {
        let messages = messages_by_address(&h, id);
        let suppressed = suppressions(&h);
        if messages[BOUNCED]["status"] == "undelivered" && suppressed.len() >= 2 {
            Ok((messages, suppressed))
        } else {
            Err(format!(
                "messages {messages:?}, suppressions {suppressed:?}"
            ))
        }
    });
    let (messages, suppressed) = after;
    let bounced = &messages[BOUNCED];
    assert_eq!(bounced["status"], "undelivered", "{bounced:?}");
    assert_eq!(bounced["error_detail"], reason, "{bounced:?}");
    assert_eq!(
        messages[COMPLAINED]["status"], "sent",
        "a complaint suppresses but does not undo the delivery: {:?}",
        messages[COMPLAINED]
    );
    assert_eq!(
        messages[UNTOUCHED]["status"], "sent",
        "the refused webhooks changed nothing: {:?}",
        messages[UNTOUCHED]
    );
    assert_eq!(
        messages[UNTOUCHED]["error_detail"], "",
        "{:?}",
        messages[UNTOUCHED]
    );
    assert_eq!(
        suppressed.keys().map(String::as_str).collect::<Vec<_>>(),
        [BOUNCED, COMPLAINED],
        "the bounced and the complaining address are suppressed, no one else: {suppressed:?}"
    );
    assert_eq!(suppressed[BOUNCED], format!("bounced: {reason}"));
    assert_eq!(
        suppressed[COMPLAINED],
        "complained: complaint: Test spam complaint details (Postmark SpamComplaint)"
    );
    let s = h.status(id);
    assert_counters_consistent(&s);
    assert_eq!(n(&s, "undelivered"), 1, "{s}");
    assert_eq!(n(&s, "sent"), 2, "{s}");

    // The same bounce again (Postmark retries) changes nothing more; a forged webhook after
    // the fact changes nothing either.
    assert_eq!(post_postmark(&addr, channel, Some(&right), &bounce), 200);
    assert_eq!(post_postmark(&addr, channel, Some(&wrong), &forged), 403);
    assert_eq!(messages_by_address(&h, id), messages);
    assert_eq!(suppressions(&h), suppressed);
    drop(serve);
}
