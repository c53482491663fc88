//! Tracked links (issue 14, point 7), as a recipient and a campaign manager meet them: the
//! links a real `herald serve` sends through the sandbox, followed over HTTP; clicks
//! counted once per recipient with their count, link previews and HEAD requests not
//! counted; the counts the same in `status`, the API's stats and the export; unknown
//! codes 404 and alike.

use crate::both_stores;
use crate::support::{Backend, Herald, http_request, n, query_strings};
use std::collections::BTreeMap;

both_stores!(clicks_are_counted_once_per_recipient_with_their_count);

const PUBLIC_URL: &str = "https://go.example.test";
const SALE: &str = "https://shop.example/sale";
const TERMS: &str = "https://shop.example/terms?from=sms";
const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// The tracked links in a body, in order.
fn codes_in(body: &str) -> Vec<String> {
    let prefix = format!("{PUBLIC_URL}/l/");
    body.match_indices(&prefix)
        .map(|(at, _)| body[at + prefix.len()..at + prefix.len() + 16].to_string())
        .collect()
}

fn location(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    })
}

fn clicks_are_counted_once_per_recipient_with_their_count(backend: Backend) {
    let mut h = Herald::migrated(backend);
    h.import_contacts("people", 3);
    h.sandbox_channel("sms", &[]);
    let body = format!(
        "Sale for {{{{ name }}}}: {{{{ link('{SALE}') }}}} Terms: {{{{ link(\"{TERMS}\") }}}} {{{{ link('{SALE}') }}}}"
    );

    // Without a public_url and a secret_key there is nowhere for clicks to go: refused,
    // with the fix, and nothing created.
    let refused = h.fails(&[
        "campaign",
        "create",
        "--name",
        "links",
        "--list",
        "people",
        "--channel",
        "sms",
        "--body",
        body.as_str(),
    ]);
    assert!(
        refused.stderr.contains("HERALD_PUBLIC_URL") && refused.stderr.contains("link()"),
        "{}",
        refused.stderr
    );
    let listed = h.ok(&["campaign", "list"]);
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");
    // A computed target is refused at create, naming the rule.
    let computed = h.fails(&[
        "campaign",
        "create",
        "--name",
        "links",
        "--list",
        "people",
        "--channel",
        "sms",
        "--body",
        "{{ link('https://shop.example/' ~ name) }}",
    ]);
    assert!(
        computed.stderr.contains("one URL written in quotes"),
        "{}",
        computed.stderr
    );

    let key = h.ok(&["keygen"]).trim().to_string();
    h.set_env("HERALD_SECRET_KEY", &key);
    h.set_env("HERALD_PUBLIC_URL", &format!("{PUBLIC_URL}/"));
    let out = h.ok(&[
        "campaign",
        "create",
        "--name",
        "links",
        "--list",
        "people",
        "--channel",
        "sms",
        "--body",
        body.as_str(),
    ]);
    let id: i64 = out.trim().trim_start_matches("cmp_").parse().unwrap();

    // The estimate counts each link at the length every recipient's has.
    let estimate: serde_json::Value =
        serde_json::from_str(&h.ok(&["campaign", "estimate", &id.to_string(), "--json"])).unwrap();
    let link_length = format!("{PUBLIC_URL}/l/").len() as i64 + 16;
    assert_eq!(estimate["tracked_links"], 2, "{estimate}");
    assert_eq!(estimate["tracked_link_length"], link_length, "{estimate}");

    let viewer = h
        .ok(&["apikey", "create", "--name", "stats", "--role", "viewer"])
        .trim()
        .to_string();
    let mut serve = h.spawn(&["serve", "--listen", "127.0.0.1:0"], "serve");
    let addr = serve.listen_addr();
    h.ok(&["campaign", "start", &id.to_string()]);
    let done = h.wait_completed(id, &[&serve]);
    assert_eq!(n(&done, "total"), 3, "{done}");

    // What the provider received: each body carries its own links, one code per link
    // and message, the repeated target twice with the same code.
    let rows = query_strings(
        h.url(),
        &format!(
            "SELECT CAST(message_id AS TEXT) || ' ' || body FROM sandbox_received WHERE campaign_id = {id} ORDER BY message_id"
        ),
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    let mut links: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for row in &rows {
        let (message, body) = row.split_once(' ').unwrap();
        let codes = codes_in(body);
        assert_eq!(codes.len(), 3, "{body}");
        assert_eq!(codes[0], codes[2], "one target, one code: {body}");
        assert_ne!(codes[0], codes[1], "{body}");
        assert!(!body.contains(SALE) && !body.contains(TERMS), "{body}");
        links.insert(message.parse().unwrap(), codes[..2].to_vec());
    }
    let all: std::collections::BTreeSet<&String> = links.values().flatten().collect();
    assert_eq!(
        all.len(),
        6,
        "every message has codes of its own: {links:?}"
    );
    let messages: Vec<i64> = links.keys().copied().collect();
    let (first, second) = (&links[&messages[0]], &links[&messages[1]]);

    let follow = |method: &str, code: &str, agent: Option<&str>| {
        let headers: Vec<(&str, &str)> = agent.map(|a| ("User-Agent", a)).into_iter().collect();
        http_request(&addr, method, &format!("/l/{code}"), &headers)
    };
    // The first recipient opens the sale twice and the terms once; a WhatsApp preview
    // and a HEAD request fetch the sale too, uncounted. The second opens the sale once.
    for (method, code, agent) in [
        ("GET", &first[0], Some(PHONE)),
        ("GET", &first[0], Some(PHONE)),
        ("GET", &first[0], Some("WhatsApp/2.23.20.0 A")),
        ("HEAD", &first[0], Some(PHONE)),
        ("GET", &first[1], Some(PHONE)),
        ("GET", &second[0], Some(PHONE)),
        ("GET", &second[0], None),
    ] {
        let (status, head, _) = follow(method, code, agent);
        assert_eq!(status, 302, "{method} {code} {agent:?}: {head}");
        let target = if code == &first[1] { TERMS } else { SALE };
        assert_eq!(location(&head).as_deref(), Some(target), "{head}");
    }

    // Unknown codes: one answer for all, which names nothing.
    let mut altered = first[0].clone().into_bytes();
    altered[15] = if altered[15] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let mut answers = Vec::new();
    for code in [
        altered.as_str(),
        "AAAAAAAAAAAAAAAA",
        "short",
        "%2e%2e%2fsecret",
        &"x".repeat(5000),
    ] {
        let (status, _, body) = follow("GET", code, Some(PHONE));
        assert_eq!(status, 404, "{code}");
        answers.push(body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert!(!answers[0].contains("cmp_") && !answers[0].contains("shop.example"));

    // The counts, the same on every surface.
    let status: serde_json::Value =
        serde_json::from_str(&h.ok(&["campaign", "status", &id.to_string(), "--json"])).unwrap();
    assert_eq!(status["clicked"], 2, "{status}");
    assert_eq!(status["clicks"], 4, "{status}");
    assert_eq!(status["click_rate"], 0.6667, "{status}");
    let by_link: Vec<(String, i64, i64)> = status["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["url"].as_str().unwrap().to_string(),
                l["clicks"].as_i64().unwrap(),
                l["clicked"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_link,
        [(SALE.to_string(), 3, 2), (TERMS.to_string(), 1, 1)],
        "{status}"
    );
    let text = h.ok(&["campaign", "status", &id.to_string()]);
    assert!(
        text.contains("clicked 2 of 3 reached (66.7 %), 4 clicks"),
        "{text}"
    );

    let (code, _, stats) = http_request(
        &addr,
        "GET",
        &format!("/api/v1/campaigns/cmp_{id}/stats"),
        &[("Authorization", &format!("Bearer {viewer}"))],
    );
    assert_eq!(code, 200, "{stats}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let clicks = &stats["clicks"];
    assert_eq!(clicks["clicked"], 2, "{stats}");
    assert_eq!(clicks["clicks"], 4, "{stats}");
    assert_eq!(clicks["reached"], 3, "{stats}");
    assert_eq!(clicks["click_rate"], 0.6667, "{stats}");
    assert_eq!(clicks["links"][0]["clicked"], 2, "{stats}");
    assert_eq!(clicks["links"][1]["clicks"], 1, "{stats}");

    let export = h.ok(&["campaign", "export", &id.to_string()]);
    let mut reader = csv::Reader::from_reader(export.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|c| c == name).unwrap();
    let (message, count, first_at, by_link) = (
        column("message_id"),
        column("link_clicks"),
        column("first_clicked_at"),
        column("clicks_by_link"),
    );
    let exported: BTreeMap<i64, (i64, bool, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[message].trim_start_matches("msg_").parse().unwrap(),
                (
                    r[count].parse().unwrap(),
                    !r[first_at].is_empty(),
                    r[by_link].to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(
        exported,
        BTreeMap::from([
            (messages[0], (3, true, format!("{SALE} (2); {TERMS} (1)"))),
            (messages[1], (1, true, format!("{SALE} (1)"))),
            (messages[2], (0, false, String::new())),
        ]),
        "{export}"
    );
    // The metric says the same: four counted, three redirected uncounted (the WhatsApp
    // preview, the HEAD, the request without a User-Agent).
    let (_, _, metrics) = http_request(&addr, "GET", "/metrics", &[]);
    for (label, n) in [("yes", 4), ("preview", 3), ("rate_limited", 0)] {
        let line = format!("herald_link_clicks_total{{counted=\"{label}\"}} {n}");
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in /metrics"
        );
    }
    // The counters agree with the rows they count.
    let recount = |sql: &str| crate::support::query_i64(h.url(), sql);
    assert_eq!(
        recount(&format!(
            "SELECT count(*) FROM messages WHERE campaign_id = {id} AND clicks > 0"
        )),
        2
    );
    assert_eq!(
        recount(&format!(
            "SELECT CAST(COALESCE(SUM(clicks), 0) AS BIGINT) FROM message_clicks WHERE message_id IN (SELECT id FROM messages WHERE campaign_id = {id})"
        )),
        4
    );
    assert_eq!(
        recount(&format!(
            "SELECT CAST(COALESCE(SUM(clicks), 0) AS BIGINT) FROM campaign_links WHERE campaign_id = {id}"
        )),
        4
    );
    serve.terminate(crate::support::DEADLINE);
}
