//! One id format on every surface, and the command line's manners.
//!
//! The README's "A first campaign from the command line" followed with the ids each surface
//! prints: the CLI prints `chn_N` and `cmp_N`, takes them (and the bare number) back, the API
//! answers to `cmp_N` only, the dashboard's page is `/campaigns/cmp_N`, and `status --json`
//! says `"id": "cmp_N"`. Then the CLI polish: a past `--schedule-at` is refused,
//! `status --watch` into a pipe prints a line per change, no colour codes into a pipe or
//! with `NO_COLOR`, and the audit trail names the operating-system user and host.

use crate::both_stores;
use crate::support::{Backend, DEADLINE, Herald, assert_clean_failure, dechunk, rfc3339_in};
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

both_stores!(readme_flow_with_the_ids_each_surface_prints, cli_polish);

/// The number of `text` when it is `{prefix}_N`.
fn id_number(prefix: &str, text: &str) -> i64 {
    text.trim()
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text:?} is not a {prefix}_N id"))
}

/// One HTTP/1.1 request over loopback: (status, head, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String, String) {
    let sock: std::net::SocketAddr = addr.parse().expect("a socket address");
    assert!(sock.ip().is_loopback(), "loopback only, not {addr}");
    let mut stream =
        std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(10)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: malformed response {text:?}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, head.to_string(), body)
}

fn readme_flow_with_the_ids_each_surface_prints(backend: Backend) {
    let h = Herald::migrated(backend);
    // The `sandbox` channel every database starts with, as `channel list` shows it, and one
    // made here: both named chn_N.
    let channels: Value = serde_json::from_str(&h.ok(&["channel", "list", "--json"])).unwrap();
    let channel = channels[0]["id"].as_str().expect("a string id").to_string();
    assert_eq!(channels[0]["name"], "sandbox", "{channels}");
    let channel_n = id_number("chn", &channel);
    let made = h.ok(&["channel", "create", "--name", "slow", "--kind", "sandbox"]);
    assert!(id_number("chn", &made) > channel_n, "{made}");
    let table = h.ok(&["channel", "list"]);
    assert!(table.lines().any(|l| l.starts_with(&channel)), "{table}");
    h.import_contacts("customers", 5);

    // herald campaign create …: prints cmp_N, and nothing else.
    let create = |name: &str, channel: &str| {
        let out = h.ok(&[
            "campaign",
            "create",
            "--name",
            name,
            "--list",
            "customers",
            "--channel",
            channel,
            "--body",
            "Hi {{ name }}",
        ]);
        assert_eq!(out.lines().count(), 1, "{out:?}");
        out.trim().to_string()
    };
    let campaign = create("welcome", "sandbox");
    let n = id_number("cmp", &campaign);
    // The channel by the id `channel create` printed, and by its bare number.
    let second = create("second", &channel);
    let third = create("third", &channel_n.to_string());
    let second_n = id_number("cmp", &second);
    id_number("cmp", &third);

    // Both spellings are taken back.
    let started = h.ok(&["campaign", "start", &campaign]);
    assert!(
        started.contains(&format!("campaign {campaign} ")) && started.contains("sending"),
        "{started}"
    );
    let started = h.ok(&["campaign", "start", &second_n.to_string()]);
    assert!(
        started.contains(&format!("campaign {second} ")),
        "{started}"
    );
    // Every other spelling is refused with what to write instead.
    for bad in [format!("cmp_0{n}"), format!("chn_{n}"), format!("cmp_+{n}")] {
        let r = h.fails(&["campaign", "status", &bad]);
        assert!(
            r.stderr.contains("is not a campaign id") && r.stderr.contains("cmp_N"),
            "{}",
            r.stderr
        );
    }

    // The lists the CLI prints name the same ids.
    let list: Value = serde_json::from_str(&h.ok(&["campaign", "list", "--json"])).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().expect("a string id"))
        .collect();
    assert!(ids.contains(&campaign.as_str()), "{list}");
    let table = h.ok(&["campaign", "list"]);
    assert!(table.lines().any(|l| l.starts_with(&campaign)), "{table}");

    // The API and the dashboard.
    let key = h.ok(&["apikey", "create", "--name", "readme", "--role", "owner"]);
    let key = key.trim().to_string();
    let user = h.ok(&[
        "user",
        "create",
        "--email",
        "ada@example.org",
        "--role",
        "owner",
    ]);
    id_number("usr", user.lines().next().unwrap_or_default());
    let password = user
        .lines()
        .find_map(|l| l.strip_prefix("password (shown only now): "))
        .unwrap_or_else(|| panic!("no password printed: {user}"))
        .to_string();
    let mut serve = h.spawn(&["serve", "--listen", "127.0.0.1:0"], "serve");
    let addr = serve.listen_addr();
    let bearer = format!("Authorization: Bearer {key}");

    let (code, _, body) = http(
        &addr,
        "GET",
        &format!("/api/v1/campaigns/{campaign}"),
        &[&bearer],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["id"], campaign.as_str(), "{api}");
    assert_eq!(api["channel_id"], channel.as_str(), "{api}");
    let (code, head, body) = http(
        &addr,
        "GET",
        &format!("/api/v1/campaigns/{n}"),
        &[&bearer],
        "",
    );
    assert_eq!(code, 404, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );

    let login = serde_json::json!({"email": "ada@example.org", "password": password}).to_string();
    let (code, head, body) = http(
        &addr,
        "POST",
        "/api/v1/auth/login",
        &["Content-Type: application/json"],
        &login,
    );
    assert_eq!(code, 200, "{body}");
    let session = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim()))
        .find_map(|c| c.strip_prefix("herald_session="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {head}"))
        .to_string();
    let cookie = format!("Cookie: herald_session={session}");
    let (code, _, page) = http(
        &addr,
        "GET",
        &format!("/campaigns/{campaign}"),
        &[&cookie],
        "",
    );
    assert_eq!(code, 200, "{}", &page[..page.len().min(2000)]);
    assert!(
        page.contains("welcome"),
        "the page does not name the campaign"
    );
    let (code, _, page) = http(&addr, "GET", "/campaigns", &[&cookie], "");
    assert_eq!(code, 200);
    assert!(
        page.contains(&format!("href=\"/campaigns/{campaign}\"")),
        "the campaigns page does not link to /campaigns/{campaign}"
    );

    // status --json, once the engine of `serve` is done.
    let done = h.wait_status(n, "completed", DEADLINE, &[&serve], |s| {
        s["status"] == "completed"
    });
    assert_eq!(done["id"], campaign.as_str(), "{done}");
    assert_eq!(done["channel_id"], channel.as_str(), "{done}");
    let by_name: Value =
        serde_json::from_str(&h.ok(&["campaign", "status", &campaign, "--json"])).unwrap();
    assert_eq!(by_name["id"], campaign.as_str());
    // One truth: the CLI's status and the API's stats of the ended campaign agree on the
    // status, the outcome, the total, every message status and in-doubt count.
    let (code, _, body) = http(
        &addr,
        "GET",
        &format!("/api/v1/campaigns/{campaign}/stats"),
        &[&bearer],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let api_stats: Value = serde_json::from_str(&body).unwrap();
    for field in [
        "id",
        "status",
        "outcome",
        "total",
        "in_doubt_total",
        "started_at",
        "completed_at",
    ] {
        assert_eq!(
            by_name[field], api_stats[field],
            "`{field}`: CLI {by_name} / API {api_stats}"
        );
    }
    for field in [
        "queued",
        "in_flight",
        "retry_wait",
        "sent",
        "delivered",
        "read",
        "undelivered",
        "failed",
        "skipped",
        "cancelled",
        "in_doubt",
        "pending",
    ] {
        assert_eq!(
            by_name[field], api_stats["counters"][field],
            "`{field}`: CLI {by_name} / API {api_stats}"
        );
    }
    let events: Value =
        serde_json::from_str(&h.ok(&["campaign", "events", &campaign, "--json"])).unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["campaign_id"] == campaign.as_str()
                && e["id"].as_str().is_some_and(|i| i.starts_with("evt_"))),
        "{events}"
    );
    let stats = h.ok(&[
        "channel",
        "stats",
        &channel,
        "--campaign",
        &campaign,
        "--json",
    ]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["received"], 5, "{stats}");
    serve.terminate(DEADLINE);
}

/// A child whose stdout goes to a file (not a terminal), waited for within the deadline.
fn run_to_file(
    h: &Herald,
    mut cmd: Command,
    name: &str,
) -> (std::process::ExitStatus, String, String) {
    let out = h.path(&format!("{name}.out"));
    let err = h.path(&format!("{name}.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start herald");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald {name} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    )
}

fn cli_polish(backend: Backend) {
    let h = Herald::migrated(backend);
    h.sandbox_channel("slow", &["--latency-ms", "5"]);
    h.import_contacts("customers", 40);
    let create = |extra: &[&str]| {
        let mut args = vec![
            "campaign",
            "create",
            "--name",
            "later",
            "--list",
            "customers",
            "--channel",
            "slow",
            "--body",
            "Hi",
        ];
        args.extend_from_slice(extra);
        h.run(&args)
    };

    // A past --schedule-at: refused, nothing created.
    let past = create(&["--schedule-at", "2020-01-01T09:00:00Z"]);
    assert_ne!(past.code, Some(0), "{past:?}");
    assert_clean_failure(&past);
    assert!(
        past.stderr.contains("not in the future") && past.stderr.contains("2020-01-01T09:00:00Z"),
        "{}",
        past.stderr
    );
    assert!(past.stdout.trim().is_empty(), "{}", past.stdout);
    assert_eq!(
        h.ok(&["campaign", "list", "--json"]).trim(),
        "[]",
        "a refused campaign was created"
    );
    let later = create(&["--schedule-at", &rfc3339_in(3600)]);
    assert!(later.success(), "{later:?}");
    let scheduled = later.stdout.trim().to_string();
    id_number("cmp", &scheduled);
    h.ok(&["campaign", "cancel", &scheduled]);

    // The audit trail names the OS user and host: from $USER, and from the password file
    // when no variable says (cron, containers).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let draft = create(&[]);
    let draft = draft.stdout.trim().to_string();
    let n = id_number("cmp", &draft);
    let r = h.run_env(
        &["campaign", "cancel", &draft, "--reason", "not today"],
        &[("USER", "alice"), ("LOGNAME", "bob")],
    );
    assert!(r.success(), "{r:?}");
    let actors: Vec<String> = h.events(n).into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(
        actors.last().unwrap(),
        &format!("cli:alice@{host}"),
        "{actors:?}"
    );
    let whoami = Command::new("id").arg("-un").output().unwrap();
    let whoami = String::from_utf8_lossy(&whoami.stdout).trim().to_string();
    let mut cmd = h.command(
        &[
            "campaign",
            "create",
            "--name",
            "anon",
            "--list",
            "customers",
            "--channel",
            "slow",
            "--body",
            "Hi",
        ],
        &[],
    );
    cmd.env_remove("USER").env_remove("LOGNAME");
    let (status, out, err) = run_to_file(&h, cmd, "anon");
    assert!(status.success(), "{err}");
    let anon = id_number("cmp", &out);
    let actors: Vec<String> = h.events(anon).into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(actors, [format!("cli:{whoami}@{host}")]);
    assert!(!actors[0].contains("unknown"), "{actors:?}");

    // --watch into a file: one line per change, no redraws, no escapes. Started on a draft,
    // it sees the draft, then the campaign through to its end.
    let campaign = create(&[]).stdout.trim().to_string();
    let n = id_number("cmp", &campaign);
    let watch = |json: bool, name: &str| {
        let mut args = vec!["campaign", "status", campaign.as_str(), "--watch"];
        if json {
            args.push("--json");
        }
        let mut cmd = h.command(&args, &[]);
        cmd.env_remove("NO_COLOR");
        let out = h.path(&format!("{name}.out"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watch");
        (child, out)
    };
    let (mut text_watch, text_out) = watch(false, "watch");
    let (mut json_watch, json_out) = watch(true, "watch-json");
    // Both have printed the draft before the campaign starts.
    let start = Instant::now();
    while [&text_out, &json_out]
        .iter()
        .any(|p| std::fs::read_to_string(p).unwrap_or_default().is_empty())
    {
        assert!(start.elapsed() < DEADLINE, "the watches printed nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut serve = h.spawn(&["worker"], "worker");
    h.ok(&["campaign", "start", &n.to_string()]);
    h.wait_completed(n, &[&serve]);
    for child in [&mut text_watch, &mut json_watch] {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the watch did not end with the campaign"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success());
    }
    let text = std::fs::read_to_string(&text_out).unwrap();
    assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
    let progress: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("campaign {campaign} ")))
        .collect();
    // At least the draft and the end; how many lines between depends on the polls.
    assert!(progress.len() >= 2, "{text}");
    assert!(progress[0].contains(" draft: "), "{text}");
    assert!(
        progress
            .iter()
            .any(|l| l.contains(" completed: 40 of 40 processed")),
        "{text}"
    );
    for pair in progress.windows(2) {
        assert_ne!(pair[0], pair[1], "a line repeated without a change: {text}");
    }
    let json = std::fs::read_to_string(&json_out).unwrap();
    let objects: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(objects.first().unwrap()["status"], "draft", "{json}");
    assert_eq!(objects.last().unwrap()["status"], "completed", "{json}");
    assert!(
        objects.iter().all(|o| o["id"] == campaign.as_str()),
        "{json}"
    );
    serve.terminate(DEADLINE);

    // No colour codes into a pipe, even without NO_COLOR: a long-running command's log and
    // a refused argument.
    let mut cmd = h.command(&["campaign", "start", "cmp_02"], &[]);
    cmd.env_remove("NO_COLOR");
    let (status, _, err) = run_to_file(&h, cmd, "refused");
    assert!(!status.success());
    assert!(err.contains("is not a campaign id"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let mut worker = h.spawn_env(&["worker"], &[("NO_COLOR", "")], "plain-worker");
    worker.wait_log("INFO");
    worker.terminate(DEADLINE);
    let log = worker.log_text();
    assert!(!log.contains('\u{1b}'), "{log:?}");

    // On a terminal (script(1) gives one), colour unless NO_COLOR says no.
    if let Some(tty) = on_a_terminal(&h, &["campaign", "start", "cmp_02"], None) {
        assert!(tty.contains("is not a campaign id"), "{tty:?}");
        assert!(tty.contains('\u{1b}'), "no colour on a terminal: {tty:?}");
        let plain = on_a_terminal(&h, &["campaign", "start", "cmp_02"], Some("1"))
            .expect("script ran once");
        assert!(plain.contains("is not a campaign id"), "{plain:?}");
        assert!(
            !plain.contains('\u{1b}'),
            "colour despite NO_COLOR: {plain:?}"
        );
    }
}

/// The output of `herald ARGS` run on a pseudo-terminal by script(1), when it is installed.
fn on_a_terminal(h: &Herald, args: &[&str], no_color: Option<&str>) -> Option<String> {
    let script = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let inner = h.command(args, &[]);
    let mut line = String::new();
    line.push_str(&shell_quote(&inner.get_program().to_string_lossy()));
    for a in inner.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&a.to_string_lossy()));
    }
    let env_of = h.command(&[], &[]);
    let mut outer = Command::new(script);
    outer.args(["-qec", &line, "/dev/null"]);
    for (k, v) in env_of.get_envs() {
        match v {
            Some(v) => outer.env(k, v),
            None => outer.env_remove(k),
        };
    }
    outer.env_remove("NO_COLOR");
    if let Some(v) = no_color {
        outer.env("NO_COLOR", v);
    }
    outer.current_dir(h.dir.path());
    let (_, out, _) = run_to_file(h, outer, "tty");
    Some(out)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
