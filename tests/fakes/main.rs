#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests for the `herald-fakes` binary: each test starts the fake as a child
//! process on loopback, talks to it with reqwest, and receives its status callbacks on a
//! tiny axum server, checking signatures with Herald's own verifiers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use herald::webhooks::signature::{verify_meta, verify_twilio};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const AC: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const SECRET: &str = "6f1c2e3d4b5a69788796a5b4c3d2e1f0";
const PHONE_ID: &str = "106540352242922";
/// A Twilio form body.
type Form<'a> = Vec<(&'a str, &'a str)>;
const BOUND: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A running fake; killed (and reaped) on drop.
struct FakeProc {
    child: Child,
    base: String,
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> FakeProc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-fakes"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn herald-fakes");
    let stdout = child.stdout.take().expect("stdout");
    let mut fake = FakeProc {
        child,
        base: String::new(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let mut rest = String::new();
        while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
    });
    let line = rx
        .recv_timeout(BOUND)
        .expect("no listening line within the bound");
    let base = line
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix("listening on "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    fake.base = base.to_owned();
    fake
}

fn twilio(extra: &[&str]) -> FakeProc {
    let mut args = vec!["twilio", "--listen", "127.0.0.1:0", "--auth-token", TOKEN];
    args.extend_from_slice(extra);
    start(&args)
}

fn whatsapp(webhook_url: &str, extra: &[&str]) -> FakeProc {
    let mut args = vec![
        "whatsapp",
        "--listen",
        "127.0.0.1:0",
        "--app-secret",
        SECRET,
        "--webhook-url",
        webhook_url,
    ];
    args.extend_from_slice(extra);
    start(&args)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[derive(Debug, Clone)]
struct Hit {
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Rx {
    hits: Arc<Mutex<Vec<Hit>>>,
    fail: Arc<AtomicBool>,
}

impl Rx {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn record(State(rx): State<Rx>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.hits.lock().unwrap().push(Hit {
        uri: uri.to_string(),
        headers,
        body: body.to_vec(),
    });
    if rx.fail.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// A loopback receiver that records every request; returns its base URL.
async fn receiver() -> (String, Rx) {
    let rx = Rx::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(record).with_state(rx.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), rx)
}

async fn stats(c: &reqwest::Client, base: &str) -> Value {
    c.get(format!("{base}/_fake/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits (bounded) until every scheduled status event has settled.
async fn settle(c: &reqwest::Client, base: &str) -> Value {
    let deadline = Instant::now() + BOUND;
    loop {
        let s = stats(c, base).await;
        if s["callbacks_pending"] == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "callbacks never settled: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn form_decode(s: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                x => out.push(x),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

async fn twilio_send(
    c: &reqwest::Client,
    base: &str,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let r = c
        .post(format!("{base}/2010-04-01/Accounts/{AC}/Messages.json"))
        .basic_auth(AC, Some(TOKEN))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

async fn twilio_get(c: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let r = c.get(url).basic_auth(AC, Some(TOKEN)).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A Twilio status callback, checked: signature over the exact URL and decoded params.
fn twilio_callback(hit: &Hit, base: &str) -> Vec<(String, String)> {
    let url = format!("{base}{}", hit.uri);
    let params = form_decode(std::str::from_utf8(&hit.body).unwrap());
    let sig = header(&hit.headers, "x-twilio-signature");
    assert!(
        verify_twilio(TOKEN, &url, &params, sig),
        "bad signature on {url}"
    );
    assert!(!verify_twilio("wrong", &url, &params, sig));
    assert_eq!(
        header(&hit.headers, "content-type"),
        "application/x-www-form-urlencoded"
    );
    assert!(!header(&hit.headers, "i-twilio-idempotency-token").is_empty());
    params
}

// ---------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn twilio_create_fetch_and_list() {
    let fake = twilio(&["--callback-delay-ms", "10"]);
    let c = client();
    let b = &fake.base;
    let (status, headers, m) = twilio_send(
        &c,
        b,
        &[
            ("To", "+15558675310"),
            ("From", "+15017122661"),
            ("Body", "Hello"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    assert!(header(&headers, "twilio-request-id").starts_with("RQ"));
    let sid = m["sid"].as_str().unwrap().to_owned();
    assert!(is_sid(&sid, "SM"), "{sid}");
    assert_eq!(m["status"], "queued");
    assert_eq!(m["num_segments"], "1");
    assert_eq!(m["num_media"], "0");
    assert_eq!(m["direction"], "outbound-api");
    assert_eq!(m["api_version"], "2010-04-01");
    assert_eq!(m["account_sid"], AC);
    assert_eq!(m["to"], "+15558675310");
    assert_eq!(m["from"], "+15017122661");
    assert_eq!(m["body"], "Hello");
    assert_eq!(m["error_code"], Value::Null);
    assert_eq!(m["date_sent"], Value::Null);
    assert_eq!(m["price_unit"], "USD");
    assert_eq!(
        m["uri"],
        format!("/2010-04-01/Accounts/{AC}/Messages/{sid}.json")
    );
    assert!(m["subresource_uris"]["media"].is_string());
    let created = chrono::DateTime::parse_from_rfc2822(m["date_created"].as_str().unwrap())
        .expect("RFC 2822 date_created");
    assert!(m["date_created"].as_str().unwrap().ends_with(" +0000"));

    // Long UCS-2 body: 71 UTF-16 units need 2 segments.
    let long = format!("😀{}", "a".repeat(69));
    let (_, _, m2) = twilio_send(
        &c,
        b,
        &[
            ("To", "+15558675311"),
            ("From", "+15017122661"),
            ("Body", &long),
        ],
    )
    .await;
    assert_eq!(m2["num_segments"], "2");

    // With only a Messaging Service: accepted, from null, num_segments "0".
    let mg = "MGbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let (status, _, m3) = twilio_send(
        &c,
        b,
        &[
            ("To", "+15558675312"),
            ("MessagingServiceSid", mg),
            ("Body", "Hi"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(m3["status"], "accepted");
    assert_eq!(m3["from"], Value::Null);
    assert_eq!(m3["num_segments"], "0");
    assert_eq!(m3["messaging_service_sid"], mg);

    // Fetch: the lifecycle moves it to delivered.
    let url = format!("{b}/2010-04-01/Accounts/{AC}/Messages/{sid}.json");
    let deadline = Instant::now() + BOUND;
    let fetched = loop {
        let (s, v) = twilio_get(&c, &url).await;
        assert_eq!(s, StatusCode::OK);
        if v["status"] == "delivered" {
            break v;
        }
        assert!(Instant::now() < deadline, "never delivered: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(chrono::DateTime::parse_from_rfc2822(fetched["date_sent"].as_str().unwrap()).is_ok());
    assert!(fetched["price"].as_str().unwrap().starts_with('-'));
    let (s, v) = twilio_get(
        &c,
        &format!("{b}/2010-04-01/Accounts/{AC}/Messages/SM00000000000000000000000000000000.json"),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_i64()),
        (StatusCode::NOT_FOUND, Some(20404))
    );

    // List by To, From and date (key `DateSent>` as reqwest encodes it, and a raw `>=`).
    let today = created.format("%Y-%m-%d").to_string();
    let yesterday = (created - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let list_url = format!("{b}/2010-04-01/Accounts/{AC}/Messages.json");
    let r = c
        .get(&list_url)
        .basic_auth(AC, Some(TOKEN))
        .query(&[
            ("To", "+15558675310"),
            ("From", "+15017122661"),
            ("DateSent>", today.as_str()),
            ("PageSize", "20"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["messages"][0]["sid"], sid);
    assert_eq!(page["page"], 0);
    assert_eq!(page["page_size"], 20);
    assert_eq!(page["next_page_uri"], Value::Null);
    assert!(page["uri"].as_str().unwrap().contains("To=%2B15558675310"));
    let raw = format!("{list_url}?To=%2B15558675310&DateSent>={today}&DateSent<={today}");
    let (_, page) = twilio_get(&c, &raw).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    let raw = format!("{list_url}?To=%2B15558675310&DateSent<={yesterday}");
    let (_, page) = twilio_get(&c, &raw).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 0, "{page}");
    let (_, page) = twilio_get(&c, &format!("{list_url}?From=%2B19999999999")).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 0);

    // Paging: three messages, newest first, two per page.
    for _ in 0..3 {
        twilio_send(
            &c,
            b,
            &[
                ("To", "+15550001111"),
                ("From", "+15017122661"),
                ("Body", "p"),
            ],
        )
        .await;
    }
    let (_, p0) = twilio_get(&c, &format!("{list_url}?To=%2B15550001111&PageSize=2")).await;
    assert_eq!(p0["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        (p0["start"].as_i64(), p0["end"].as_i64()),
        (Some(0), Some(1))
    );
    let next = p0["next_page_uri"].as_str().expect("next page");
    assert!(next.contains("PageToken=PA"));
    let (_, p1) = twilio_get(&c, &format!("{b}{next}")).await;
    assert_eq!(p1["messages"].as_array().unwrap().len(), 1);
    assert_eq!(p1["page"], 1);
    assert_eq!(p1["next_page_uri"], Value::Null);
    assert!(p1["previous_page_uri"].is_string());
    let d = |v: &Value| {
        chrono::DateTime::parse_from_rfc2822(v["date_created"].as_str().unwrap()).unwrap()
    };
    assert!(d(&p0["messages"][0]) >= d(&p0["messages"][1]));
    assert!(d(&p0["messages"][1]) >= d(&p1["messages"][0]));
}

#[tokio::test]
async fn twilio_auth_and_validation() {
    let fake = twilio(&[]);
    let c = client();
    let b = &fake.base;
    let url = format!("{b}/2010-04-01/Accounts/{AC}/Messages.json");
    let ok = [
        ("To", "+15558675310"),
        ("From", "+15017122661"),
        ("Body", "x"),
    ];

    for auth in [
        Some((AC, "wrong")),
        Some(("ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", TOKEN)),
        None,
    ] {
        let mut req = c.post(&url).form(&ok);
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key("www-authenticate"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], 20003);
        assert_eq!(v["status"], 401);
        assert_eq!(v["more_info"], "https://www.twilio.com/docs/errors/20003");
        assert!(v["message"].is_string());
    }
    let r = c
        .post(format!("{b}/2010-04-01/Accounts/ACnothex/Messages.json"))
        .basic_auth("ACnothex", Some(TOKEN))
        .form(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 20404);

    let long = "a".repeat(1601);
    let cases: Vec<(Form<'_>, u16, i64)> = vec![
        (vec![("From", "+15017122661"), ("Body", "x")], 400, 21604),
        (
            vec![("To", "abc"), ("From", "+15017122661"), ("Body", "x")],
            400,
            21211,
        ),
        (vec![("To", "+15558675310"), ("Body", "x")], 400, 21603),
        (
            vec![
                ("To", "+15558675310"),
                ("From", "not a sender!"),
                ("Body", "x"),
            ],
            400,
            21212,
        ),
        (
            vec![
                ("To", "+15558675310"),
                ("MessagingServiceSid", "MG123"),
                ("Body", "x"),
            ],
            400,
            21701,
        ),
        (
            vec![("To", "+15558675310"), ("From", "+15017122661")],
            400,
            21602,
        ),
        (
            vec![
                ("To", "+15558675310"),
                ("From", "+15017122661"),
                ("Body", &long),
            ],
            400,
            21617,
        ),
        (
            vec![
                ("To", "+15558675310"),
                ("From", "+15017122661"),
                ("ContentSid", "HX1"),
            ],
            400,
            21655,
        ),
        (
            vec![
                ("To", "+15558675310"),
                ("From", "+15017122661"),
                ("Body", "x"),
                ("StatusCallback", "http://bad_host.test/cb"),
            ],
            400,
            21609,
        ),
    ];
    for (form, http, code) in &cases {
        let (s, _, v) = twilio_send(&c, b, form).await;
        assert_eq!(
            (s.as_u16(), v["code"].as_i64()),
            (*http, Some(*code)),
            "{form:?}: {v}"
        );
        assert_eq!(v["status"], *http);
    }
    // Alternatives to Body: a template, or repeated MediaUrl keys (MMS).
    let hx = "HXcccccccccccccccccccccccccccccccc";
    let (s, _, v) = twilio_send(
        &c,
        b,
        &[
            ("To", "whatsapp:+15558675310"),
            ("From", "whatsapp:+15017122661"),
            ("ContentSid", hx),
            ("ContentVariables", r#"{"1":"Ann"}"#),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _, v) = twilio_send(
        &c,
        b,
        &[
            ("To", "+15558675310"),
            ("From", "+15017122661"),
            ("MediaUrl", "https://example.test/a.png"),
            ("MediaUrl", "https://example.test/b.png"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(is_sid(v["sid"].as_str().unwrap(), "MM"));
    assert_eq!(v["num_media"], "2");
    let st = stats(&c, b).await;
    assert_eq!(st["received"], 2);
    assert_eq!(st["rejected"], 3 + 1 + cases.len());
}

#[tokio::test]
async fn twilio_magic_numbers() {
    let fake = twilio(&["--callback-delay-ms", "5", "--retry-after-s", "3"]);
    let c = client();
    let b = &fake.base;
    let cases = [
        ("From", "+15005550001", 400, 21212),
        ("From", "+15005550007", 400, 21606),
        ("From", "+15005550008", 400, 21611),
        ("To", "+15005550001", 400, 21211),
        ("To", "+15005550002", 400, 21612),
        ("To", "+15005550003", 400, 21408),
        ("To", "+15005550004", 400, 21610),
        ("To", "+15005550009", 400, 21614),
        ("To", "+1500555770004", 400, 21610),
        ("To", "+15005550429", 429, 20429),
        ("To", "+15005550500", 500, 20500),
        ("To", "+15005550501", 500, 20500),
        ("To", "+15005550503", 503, 20503),
    ];
    for (field, number, http, code) in cases {
        let (to, from) = if field == "To" {
            (number, "+15005550006")
        } else {
            ("+15558675310", number)
        };
        let (s, h, v) = twilio_send(&c, b, &[("To", to), ("From", from), ("Body", "m")]).await;
        assert_eq!(
            (s.as_u16(), v["code"].as_i64()),
            (http, Some(code)),
            "{field} {number}: {v}"
        );
        assert_eq!(
            v["more_info"],
            format!("https://www.twilio.com/docs/errors/{code}")
        );
        if http == 429 || http == 503 {
            assert_eq!(header(&h, "retry-after"), "3");
        }
    }
    // The magic From 0006, and ordinary numbers, succeed.
    let (s, _, _) = twilio_send(
        &c,
        b,
        &[
            ("To", "+15005551234"),
            ("From", "+15005550006"),
            ("Body", "m"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    // Hangs: the client times out; 0505 still created the message.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for to in ["+15005550504", "+15005550505"] {
        let e = quick
            .post(format!("{b}/2010-04-01/Accounts/{AC}/Messages.json"))
            .basic_auth(AC, Some(TOKEN))
            .form(&[("To", to), ("From", "+15005550006"), ("Body", "m")])
            .send()
            .await
            .expect_err("a hang must not answer");
        assert!(e.is_timeout(), "{e}");
    }

    // Created despite the error/hang: the reconciliation query finds them.
    let list = format!("{b}/2010-04-01/Accounts/{AC}/Messages.json");
    for (to, found) in [
        ("%2B15005550501", 1),
        ("%2B15005550505", 1),
        ("%2B15005550500", 0),
        ("%2B15005550504", 0),
        ("%2B15005550429", 0),
    ] {
        let (_, page) = twilio_get(&c, &format!("{list}?To={to}")).await;
        assert_eq!(page["messages"].as_array().unwrap().len(), found, "{to}");
    }
    let st = stats(&c, b).await;
    assert_eq!(st["received"], 3, "{st}");
    assert_eq!(st["per_recipient"]["+15005550501"], 1);
}

#[tokio::test]
async fn twilio_callbacks_in_order_and_signed() {
    let (rbase, rx) = receiver().await;
    let fake = twilio(&["--callback-delay-ms", "10"]);
    let c = client();
    let cb = format!("{rbase}/twilio/status?campaign=cmp_42");
    let mut sids = Vec::new();
    for i in 0..4 {
        let to = format!("+1555867531{i}");
        let (s, _, v) = twilio_send(
            &c,
            &fake.base,
            &[
                ("To", &to),
                ("From", "+15017122661"),
                ("Body", "hi"),
                ("StatusCallback", &cb),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        sids.push(v["sid"].as_str().unwrap().to_owned());
    }
    // A WhatsApp-channel address, a messaging service, and two async failures.
    let mg = "MGbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    for (to, from_key, from) in [
        ("whatsapp:+15558675399", "From", "whatsapp:+15017122661"),
        ("+15558675398", "MessagingServiceSid", mg),
        ("+15005553003", "From", "+15017122661"),
        ("+15005553001", "From", "+15017122661"),
    ] {
        let (s, _, v) = twilio_send(
            &c,
            &fake.base,
            &[
                ("To", to),
                (from_key, from),
                ("Body", "hi"),
                ("StatusCallback", &cb),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        sids.push(v["sid"].as_str().unwrap().to_owned());
    }
    let st = settle(&c, &fake.base).await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 2 * 7 + 1, "{st}");
    assert_eq!(st["callbacks_sent"], hits.len());
    assert_eq!(st["callbacks_failed"], 0);

    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut tokens = std::collections::HashSet::new();
    for hit in &hits {
        assert!(hit.uri.starts_with("/twilio/status?campaign=cmp_42"));
        assert!(tokens.insert(header(&hit.headers, "i-twilio-idempotency-token").to_owned()));
        let p = twilio_callback(hit, &rbase);
        let sid = get(&p, "MessageSid").unwrap();
        let status = get(&p, "MessageStatus").unwrap();
        assert_eq!(get(&p, "SmsSid"), Some(sid));
        assert_eq!(get(&p, "SmsStatus"), Some(status));
        assert_eq!(get(&p, "AccountSid"), Some(AC));
        assert_eq!(get(&p, "ApiVersion"), Some("2010-04-01"));
        assert!(get(&p, "From").is_some() && get(&p, "To").is_some());
        match status {
            "delivered" if !get(&p, "To").unwrap().starts_with("whatsapp:") => {
                let raw = get(&p, "RawDlrDoneDate").unwrap();
                assert!(raw.len() == 10 && raw.bytes().all(|b| b.is_ascii_digit()));
            }
            "undelivered" => assert_eq!(get(&p, "ErrorCode"), Some("30003")),
            "failed" => assert_eq!(get(&p, "ErrorCode"), Some("30001")),
            _ => assert_eq!(get(&p, "ErrorCode"), None),
        }
        if get(&p, "To") == Some("whatsapp:+15558675399") {
            assert_eq!(get(&p, "ChannelPrefix"), Some("whatsapp"));
        }
        if get(&p, "To") == Some("+15558675398") {
            assert_eq!(get(&p, "MessagingServiceSid"), Some(mg));
            assert_eq!(get(&p, "From"), Some("+15017122661"));
        }
        seen.entry(sid.to_owned())
            .or_default()
            .push(status.to_owned());
    }
    for sid in &sids[..6] {
        assert_eq!(seen[sid], ["sent", "delivered"], "{sid}");
    }
    assert_eq!(seen[&sids[6]], ["sent", "undelivered"]);
    assert_eq!(seen[&sids[7]], ["failed"]);

    // The stored state follows: fetch shows the final status and the error.
    let (_, v) = twilio_get(
        &c,
        &format!(
            "{}/2010-04-01/Accounts/{AC}/Messages/{}.json",
            fake.base, sids[6]
        ),
    )
    .await;
    assert_eq!(v["status"], "undelivered");
    assert_eq!(v["error_code"], 30003);
    assert_eq!(v["error_message"], "Unreachable destination handset");
}

#[tokio::test]
async fn twilio_shuffled_duplicated_callbacks() {
    let (rbase, rx) = receiver().await;
    let fake = twilio(&[
        "--callback-delay-ms",
        "30",
        "--callback-order",
        "shuffled",
        "--duplicate-callbacks",
    ]);
    let c = client();
    let cb = format!("{rbase}/cb");
    let mut sids = Vec::new();
    for i in 0..20 {
        let to = format!("+155500020{i:02}");
        let (_, _, v) = twilio_send(
            &c,
            &fake.base,
            &[
                ("To", &to),
                ("From", "+15017122661"),
                ("Body", "x"),
                ("StatusCallback", &cb),
            ],
        )
        .await;
        sids.push(v["sid"].as_str().unwrap().to_owned());
    }
    let st = settle(&c, &fake.base).await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 80, "{st}");
    assert_eq!(st["callbacks_sent"], 80);

    // Multiset: every (sid, status) exactly twice, both copies byte-identical.
    let mut copies: BTreeMap<(String, String), Vec<&Hit>> = BTreeMap::new();
    let mut order = Vec::new();
    for hit in &hits {
        let p = twilio_callback(hit, &rbase);
        let key = (
            get(&p, "MessageSid").unwrap().to_owned(),
            get(&p, "MessageStatus").unwrap().to_owned(),
        );
        order.push(key.clone());
        copies.entry(key).or_default().push(hit);
    }
    assert_eq!(copies.len(), 40);
    for sid in &sids {
        for status in ["sent", "delivered"] {
            let pair = &copies[&(sid.clone(), status.to_owned())];
            assert_eq!(pair.len(), 2, "{sid} {status}");
            assert_eq!(pair[0].body, pair[1].body);
            for h in ["x-twilio-signature", "i-twilio-idempotency-token"] {
                assert_eq!(header(&pair[0].headers, h), header(&pair[1].headers, h));
            }
        }
    }
    // Shuffled: some final status overtakes its `sent`, or messages interleave out of
    // creation order (each alone has probability ≈ 1 - 2^-20).
    let first_index = |sid: &str, status: &str| {
        order
            .iter()
            .position(|(s, st)| s == sid && st == status)
            .unwrap()
    };
    let overtaken = sids
        .iter()
        .any(|s| first_index(s, "delivered") < first_index(s, "sent"));
    let firsts: Vec<usize> = sids.iter().map(|s| first_index(s, "sent")).collect();
    let reordered = firsts.windows(2).any(|w| w[0] > w[1]);
    assert!(
        overtaken && reordered,
        "overtaken={overtaken} reordered={reordered}"
    );
}

#[tokio::test]
async fn twilio_callback_retries_then_drops() {
    let (rbase, rx) = receiver().await;
    rx.fail.store(true, Ordering::SeqCst);
    let fake = twilio(&[
        "--callback-delay-ms",
        "5",
        "--callback-retries",
        "2",
        "--callback-retry-ms",
        "5",
    ]);
    let c = client();
    let cb = format!("{rbase}/cb");
    let form = [
        ("To", "+15558675310"),
        ("From", "+15017122661"),
        ("Body", "x"),
        ("StatusCallback", cb.as_str()),
    ];
    twilio_send(&c, &fake.base, &form).await;
    let st = settle(&c, &fake.base).await;
    assert_eq!(st["callbacks_failed"], 2, "{st}");
    assert_eq!(st["callbacks_retried"], 4);
    assert_eq!(st["callbacks_sent"], 0);
    let hits = rx.hits();
    assert_eq!(hits.len(), 6);
    // Retries carry the same idempotency token.
    let tokens: std::collections::HashSet<&str> = hits
        .iter()
        .map(|h| header(&h.headers, "i-twilio-idempotency-token"))
        .collect();
    assert_eq!(tokens.len(), 2);

    // A receiver that recovers gets the next message's callbacks; a closed port is dropped.
    rx.fail.store(false, Ordering::SeqCst);
    twilio_send(&c, &fake.base, &form).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/cb", l.local_addr().unwrap())
    };
    let dead_form = [
        ("To", "+15558675310"),
        ("From", "+15017122661"),
        ("Body", "x"),
        ("StatusCallback", dead.as_str()),
    ];
    twilio_send(&c, &fake.base, &dead_form).await;
    let st = settle(&c, &fake.base).await;
    assert_eq!(st["callbacks_sent"], 2, "{st}");
    assert_eq!(st["callbacks_failed"], 4);
}

#[tokio::test]
async fn twilio_stats_count_duplicates_and_reset() {
    let fake = twilio(&["--callback-delay-ms", "1"]);
    let c = client();
    let b = &fake.base;
    for to in [
        "+15550000001",
        "+15550000001",
        "+15550000001",
        "+15550000002",
    ] {
        twilio_send(
            &c,
            b,
            &[("To", to), ("From", "+15017122661"), ("Body", "x")],
        )
        .await;
    }
    twilio_send(
        &c,
        b,
        &[
            ("To", "+15005550004"),
            ("From", "+15017122661"),
            ("Body", "x"),
        ],
    )
    .await;
    let st = settle(&c, b).await;
    assert_eq!(st["received"], 4, "{st}");
    assert_eq!(st["distinct_recipients"], 2);
    assert_eq!(st["duplicates"], 2);
    assert_eq!(
        st["per_recipient"],
        json!({"+15550000001": 3, "+15550000002": 1})
    );
    assert_eq!(st["requests"], 5);
    assert_eq!(st["rejected"], 1);
    let brief: Value = c
        .get(format!("{b}/_fake/stats?per_recipient=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(brief.get("per_recipient").is_none());
    let all: Value = c
        .get(format!("{b}/_fake/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 4);

    let r = c.post(format!("{b}/_fake/reset")).send().await.unwrap();
    assert!(r.status().is_success());
    let st = stats(&c, b).await;
    assert_eq!(st["received"], 0);
    assert_eq!(st["per_recipient"], json!({}));
    let all: Value = c
        .get(format!("{b}/_fake/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all, json!([]));
}

#[tokio::test]
async fn twilio_fault_knobs() {
    let c = client();
    let form = [
        ("To", "+15558675310"),
        ("From", "+15017122661"),
        ("Body", "x"),
    ];

    // --fail-rate 1: every valid send is a 500 that created nothing.
    let failing = twilio(&["--fail-rate", "1"]);
    for _ in 0..3 {
        let (s, _, v) = twilio_send(&c, &failing.base, &form).await;
        assert_eq!(
            (s, v["code"].as_i64()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some(20500))
        );
    }
    assert_eq!(stats(&c, &failing.base).await["received"], 0);

    // --latency-ms holds the --max-concurrency slot: of two parallel sends one is refused.
    let slow = twilio(&["--latency-ms", "300", "--max-concurrency", "1"]);
    let started = Instant::now();
    let (a, b) = tokio::join!(
        twilio_send(&c, &slow.base, &form),
        twilio_send(&c, &slow.base, &form)
    );
    let mut codes = [a.0.as_u16(), b.0.as_u16()];
    codes.sort_unstable();
    assert_eq!(codes, [201, 429]);
    let refused = if a.0 == StatusCode::TOO_MANY_REQUESTS {
        &a.2
    } else {
        &b.2
    };
    assert_eq!(refused["code"], 20429);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let st = stats(&c, &slow.base).await;
    assert_eq!(
        (st["received"].as_i64(), st["rejected"].as_i64()),
        (Some(1), Some(1))
    );
}

// ---------------------------------------------------------------------------------------
// WhatsApp
// ---------------------------------------------------------------------------------------

async fn wa_send(
    c: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = c
        .post(format!("{base}/v23.0/{PHONE_ID}/messages"))
        .json(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

fn wa_text(to: &str) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
           "type": "text", "text": {"preview_url": false, "body": "hello"}})
}

fn wa_template(to: &str) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
           "type": "template", "template": {"name": "order_update",
           "language": {"policy": "deterministic", "code": "en_US"},
           "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ann"}]}]}})
}

/// A WhatsApp webhook, checked: signature over the raw bytes; returns the status object.
fn wa_status(hit: &Hit) -> Value {
    let sig = header(&hit.headers, "x-hub-signature-256");
    assert!(
        verify_meta(SECRET, &hit.body, sig),
        "bad X-Hub-Signature-256"
    );
    assert!(!verify_meta("other", &hit.body, sig));
    assert!(header(&hit.headers, "content-type").starts_with("application/json"));
    assert!(hit.body.is_ascii(), "Meta escapes non-ASCII");
    let v: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(v["object"], "whatsapp_business_account");
    let change = &v["entry"][0]["changes"][0];
    assert_eq!(change["field"], "messages");
    assert_eq!(change["value"]["messaging_product"], "whatsapp");
    assert_eq!(change["value"]["metadata"]["phone_number_id"], PHONE_ID);
    let statuses = change["value"]["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 1);
    let s = statuses[0].clone();
    assert!(s["timestamp"].as_str().unwrap().parse::<i64>().is_ok());
    s
}

#[tokio::test]
async fn whatsapp_send_auth_and_validation() {
    let fake = whatsapp(
        "http://127.0.0.1:9/unused",
        &["--final-status", "sent", "--callback-delay-ms", "1"],
    );
    let c = client();
    let b = &fake.base;
    let (s, v) = wa_send(&c, b, Some("EAAtest"), &wa_text("+16505551234")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["messaging_product"], "whatsapp");
    assert_eq!(v["contacts"][0]["input"], "+16505551234");
    assert_eq!(v["contacts"][0]["wa_id"], "16505551234");
    let id = v["messages"][0]["id"].as_str().unwrap();
    assert!(id.starts_with("wamid.") && id.len() > 20, "{id}");
    let (s, v2) = wa_send(&c, b, Some("EAAtest"), &wa_template("16505551234")).await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    assert_ne!(v2["messages"][0]["id"], v["messages"][0]["id"]);
    // A template without `language.policy` is accepted, as by the real API.
    let mut t = wa_template("16505551234");
    t["template"]["language"] = json!({"code": "en_US"});
    assert_eq!(wa_send(&c, b, Some("t"), &t).await.0, StatusCode::OK);

    // Auth: missing, empty and non-bearer → 401 code 190.
    for token in [None, Some("")] {
        let (s, v) = wa_send(&c, b, token, &wa_text("16505551234")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"]["code"], 190);
        assert_eq!(v["error"]["type"], "OAuthException");
        assert!(v["error"]["fbtrace_id"].is_string());
    }
    let r = c
        .post(format!("{b}/v23.0/{PHONE_ID}/messages"))
        .basic_auth("u", Some("p"))
        .json(&wa_text("16505551234"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let cases = [
        (
            json!({"messaging_product": "sms", "to": "16505551234", "type": "text", "text": {"body": "x"}}),
            100,
        ),
        (
            json!({"to": "16505551234", "type": "text", "text": {"body": "x"}}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "phone", "type": "text", "text": {"body": "x"}}),
            131009,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {}}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "16505551234", "type": "fax", "fax": {}}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "16505551234", "type": "template", "template": {"name": "x"}}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {"body": "x"}, "biz_opaque_callback_data": "x".repeat(513)}),
            100,
        ),
        (json!(["not", "an", "object"]), 100),
    ];
    for (body, code) in &cases {
        let (s, v) = wa_send(&c, b, Some("t"), body).await;
        assert_eq!(
            (s, v["error"]["code"].as_i64()),
            (StatusCode::BAD_REQUEST, Some(*code)),
            "{body}: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("(#{code})"))
        );
    }
    let r = c
        .post(format!("{b}/latest/{PHONE_ID}/messages"))
        .bearer_auth("t")
        .json(&wa_text("16505551234"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let st = stats(&c, b).await;
    assert_eq!(st["received"], 3, "{st}");
}

#[tokio::test]
async fn whatsapp_magic_numbers() {
    let fake = whatsapp(
        "http://127.0.0.1:9/unused",
        &["--callback-delay-ms", "1", "--callback-retries", "0"],
    );
    let c = client();
    let b = &fake.base;
    let cases = [
        ("15005551026", 400, 131026),
        ("15005551047", 400, 131047),
        ("15005551049", 400, 131049),
        ("15005551050", 400, 131050),
        ("15005551021", 400, 131021),
        ("15005552001", 404, 132001),
        ("+15005550429", 429, 130429),
        ("15005551056", 429, 131056),
        ("15005550500", 500, 131000),
        ("15005550501", 500, 131000),
        ("15005550503", 503, 131016),
    ];
    for (to, http, code) in cases {
        let (s, v) = wa_send(&c, b, Some("t"), &wa_text(to)).await;
        assert_eq!(
            (s.as_u16(), v["error"]["code"].as_i64()),
            (http, Some(code)),
            "{to}: {v}"
        );
        let e = &v["error"];
        assert_eq!(e["type"], "OAuthException");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("(#{code})"))
        );
        assert!(e["fbtrace_id"].as_str().unwrap().starts_with('A'));
        assert!(e["error_data"]["details"].is_string());
        assert!(e["is_transient"].is_boolean());
    }
    assert!(
        wa_send(&c, b, Some("t"), &wa_text("15005551026")).await.1["error"]["error_subcode"]
            .is_number()
    );
    // 131047 applies to free-form only: a template to the same number succeeds.
    assert_eq!(
        wa_send(&c, b, Some("t"), &wa_template("15005551047"))
            .await
            .0,
        StatusCode::OK
    );
    // Async failures are accepted first.
    assert_eq!(
        wa_send(&c, b, Some("t"), &wa_text("15005558026")).await.0,
        StatusCode::OK
    );
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for to in ["15005550504", "15005550505"] {
        let e = quick
            .post(format!("{b}/v23.0/{PHONE_ID}/messages"))
            .bearer_auth("t")
            .json(&wa_text(to))
            .send()
            .await
            .expect_err("a hang must not answer");
        assert!(e.is_timeout(), "{e}");
    }
    let st = stats(&c, b).await;
    // Created: 0501, 1047 template, 8026, 0505.
    assert_eq!(st["received"], 4, "{st}");
    for to in ["15005550501", "15005550505", "15005558026", "15005551047"] {
        assert_eq!(st["per_recipient"][to], 1, "{to}: {st}");
    }
}

#[tokio::test]
async fn whatsapp_webhooks_in_order_and_signed() {
    let (rbase, rx) = receiver().await;
    let hook = format!("{rbase}/whatsapp/webhook");
    let fake = whatsapp(
        &hook,
        &["--final-status", "read", "--callback-delay-ms", "10"],
    );
    let c = client();
    let mut body = wa_text("+16505551234");
    body["biz_opaque_callback_data"] = json!("msg-ä/01");
    let (_, v) = wa_send(&c, &fake.base, Some("t"), &body).await;
    let wamid = v["messages"][0]["id"].as_str().unwrap().to_owned();
    let (_, v) = wa_send(&c, &fake.base, Some("t"), &wa_template("15005558026")).await;
    let failed_id = v["messages"][0]["id"].as_str().unwrap().to_owned();
    let st = settle(&c, &fake.base).await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 4, "{st}");
    assert_eq!(st["callbacks_sent"], 4);

    let mut order = Vec::new();
    for hit in &hits {
        assert_eq!(hit.uri, "/whatsapp/webhook");
        let s = wa_status(hit);
        if s["id"] == wamid.as_str() {
            // Escaped like Meta: `ä` as \u00e4 and `/` as \/; only raw bytes verify.
            let raw = std::str::from_utf8(&hit.body).unwrap();
            assert!(raw.contains(r"msg-\u00e4\/01"), "{raw}");
            assert_eq!(s["biz_opaque_callback_data"], "msg-ä/01");
            assert_eq!(s["recipient_id"], "16505551234");
            assert!(s["pricing"]["billable"].is_boolean());
            assert!(s.get("errors").is_none());
            order.push(s["status"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(s["id"], failed_id.as_str());
            assert_eq!(s["status"], "failed");
            assert_eq!(s["errors"][0]["code"], 131026);
            assert!(s["errors"][0]["title"].is_string());
            assert!(s["errors"][0]["error_data"]["details"].is_string());
            assert!(s.get("biz_opaque_callback_data").is_none());
        }
    }
    assert_eq!(order, ["sent", "delivered", "read"]);
    let all: Value = c
        .get(format!("{}/_fake/messages", fake.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all[0]["status"], "read");
    assert_eq!(all[1]["status"], "failed");
    assert_eq!(all[1]["error_code"], 131026);
}

#[tokio::test]
async fn whatsapp_shuffled_duplicated_skip_delivered() {
    let (rbase, rx) = receiver().await;
    let fake = whatsapp(
        &format!("{rbase}/wh"),
        &[
            "--final-status",
            "read",
            "--skip-delivered",
            "--callback-order",
            "shuffled",
            "--duplicate-callbacks",
            "--callback-delay-ms",
            "30",
        ],
    );
    let c = client();
    let mut ids = Vec::new();
    for i in 0..20 {
        let (s, v) = wa_send(
            &c,
            &fake.base,
            Some("t"),
            &wa_text(&format!("165055500{i:02}")),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        ids.push(v["messages"][0]["id"].as_str().unwrap().to_owned());
    }
    let st = settle(&c, &fake.base).await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 80, "{st}");
    let mut multiset: BTreeMap<(String, String), Vec<&[u8]>> = BTreeMap::new();
    let mut order = Vec::new();
    for hit in &hits {
        let s = wa_status(hit);
        let key = (
            s["id"].as_str().unwrap().to_owned(),
            s["status"].as_str().unwrap().to_owned(),
        );
        order.push(key.clone());
        multiset.entry(key).or_default().push(&hit.body);
    }
    assert_eq!(multiset.len(), 40);
    for id in &ids {
        for status in ["sent", "read"] {
            let copies = &multiset[&(id.clone(), status.to_owned())];
            assert_eq!(copies.len(), 2);
            assert_eq!(copies[0], copies[1], "duplicates are byte-identical");
        }
    }
    assert!(order.iter().all(|(_, s)| s != "delivered"));
    let first = |id: &str, status: &str| {
        order
            .iter()
            .position(|(i, s)| i == id && s == status)
            .unwrap()
    };
    assert!(ids.iter().any(|id| first(id, "read") < first(id, "sent")));
}

#[tokio::test]
async fn whatsapp_stats_duplicates_and_reset() {
    let fake = whatsapp(
        "http://127.0.0.1:9/unused",
        &[
            "--final-status",
            "sent",
            "--callback-delay-ms",
            "1",
            "--callback-retries",
            "0",
        ],
    );
    let c = client();
    let b = &fake.base;
    for to in ["+16505551234", "16505551234", "16505550000"] {
        assert_eq!(
            wa_send(&c, b, Some("t"), &wa_text(to)).await.0,
            StatusCode::OK
        );
    }
    let st = settle(&c, b).await;
    assert_eq!(st["received"], 3);
    assert_eq!(st["distinct_recipients"], 2);
    assert_eq!(st["duplicates"], 1);
    assert_eq!(
        st["per_recipient"],
        json!({"16505551234": 2, "16505550000": 1})
    );
    assert_eq!(st["callbacks_failed"], 3, "nothing listens on port 9");
    c.post(format!("{b}/_fake/reset")).send().await.unwrap();
    let st = stats(&c, b).await;
    assert_eq!(
        (st["received"].as_i64(), st["callbacks_failed"].as_i64()),
        (Some(0), Some(0))
    );
}

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

#[test]
fn cli_help_documents_magic_numbers() {
    let exe = env!("CARGO_BIN_EXE_herald-fakes");
    let out = Command::new(exe)
        .args(["twilio", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "21610",
        "20429",
        "0504",
        "--callback-order",
        "--duplicate-callbacks",
        "--fail-rate",
    ] {
        assert!(help.contains(needle), "twilio --help lacks {needle}");
    }
    let out = Command::new(exe)
        .args(["whatsapp", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["131047", "130429", "--webhook-url", "--skip-delivered"] {
        assert!(help.contains(needle), "whatsapp --help lacks {needle}");
    }
    let out = Command::new(exe)
        .args(["twilio", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--auth-token is required");
}
