//! The CPU floor of one provider request on this machine: the same HTTP/1.1 exchange Herald's
//! Twilio channel makes (a form POST with Basic auth over a pooled keep-alive connection,
//! a JSON answer of a Twilio message's size), between the same client (`reqwest`, Herald's
//! outbound client settings) and the same server stack as the fake (`axum` on `hyper`),
//! with no work on either side: no database, no parsing, no bookkeeping.
//!
//! Whatever a message costs end to end cannot be less than this, so it bounds what
//! `herald bench --channel twilio` can reach on the same cores (BENCHMARKS.md, "The floor
//! of an HTTP request").
//!
//! ```sh
//! cargo run --release -p herald-fakes --example http_floor -- [REQUESTS] [CONCURRENCY] [fake]
//! ```
//!
//! With `fake` as the third argument the server is `herald-fakes twilio` itself (its router,
//! default knobs, on the same server runtime), so the server's figure is the fake's own
//! cost per request and its distance from the floor is the fake's bookkeeping.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// A created message as the fake answers it (about 900 bytes).
const ANSWER: &str = r#"{"account_sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","api_version":"2010-04-01","body":"Hello Ada, your appointment is confirmed for Tuesday at 10:00.","date_created":"Mon, 07 Dec 2026 12:00:00 +0000","date_sent":null,"date_updated":"Mon, 07 Dec 2026 12:00:00 +0000","direction":"outbound-api","error_code":null,"error_message":null,"from":"+15005550006","messaging_service_sid":null,"num_media":"0","num_segments":"1","price":null,"price_unit":"USD","sid":"SM0123456789abcdef0123456789abcdef","status":"queued","subresource_uris":{"media":"/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Messages/SM0123456789abcdef0123456789abcdef/Media.json","feedback":"/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Messages/SM0123456789abcdef0123456789abcdef/Feedback.json"},"to":"+15005550001","uri":"/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Messages/SM0123456789abcdef0123456789abcdef.json"}"#;

async fn create(headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    if !headers.contains_key(header::AUTHORIZATION) || body.is_empty() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        );
    }
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        ANSWER,
    )
}

/// The user and system CPU of this process's threads whose name starts with `prefix`, in
/// clock ticks (100 a second), from /proc: the client's and the server's runtimes have
/// threads of their own, so each side's cost is read apart.
fn cpu_ticks(prefix: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if name.starts_with(prefix) {
            // A thread that ended meanwhile is no longer counted on either side.
            if let Ok(ticks) = thread_ticks(&path.join("stat")) {
                total += ticks;
            }
        }
    }
    Ok(total)
}

fn thread_ticks(stat: &std::path::Path) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(stat)?;
    // After the command name (which may hold spaces): utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("/proc/self/stat has no command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("/proc/self/stat is too short"))?
            .parse()?)
    };
    Ok(field(11)? + field(12)?)
}

fn arg(position: usize, default: usize) -> anyhow::Result<usize> {
    match std::env::args().nth(position) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            anyhow::anyhow!(
                "argument {position} `{text}` is not a whole number; usage: http_floor [REQUESTS] [CONCURRENCY] [fake]"
            )
        }),
    }
}

fn main() -> anyhow::Result<()> {
    let requests = arg(1, 200_000)?;
    let concurrency = arg(2, 200)?.max(1);
    let fake = match std::env::args().nth(3).as_deref() {
        None => false,
        Some("fake") => true,
        Some(other) => anyhow::bail!(
            "argument 3 `{other}` is not `fake`; usage: http_floor [REQUESTS] [CONCURRENCY] [fake]"
        ),
    };
    // Two runtimes, each with a worker per core as `herald serve` and the fake have.
    let server = tokio::runtime::Builder::new_multi_thread()
        .thread_name("floor-server")
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .thread_name("floor-client")
        .enable_all()
        .build()?;
    let app = if fake {
        herald_fakes::twilio_router(&["--auth-token", "token"])?
    } else {
        Router::new().route("/2010-04-01/Accounts/{sid}/Messages.json", post(create))
    };
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!(
        "http://{}/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Messages.json",
        listener.local_addr()?
    );
    server.spawn(async move { axum::serve(listener, app).await });
    client.block_on(measure(&url, requests, concurrency, fake))
}

async fn measure(url: &str, requests: usize, concurrency: usize, fake: bool) -> anyhow::Result<()> {
    let client = herald_core::outbound::client::try_client().map_err(anyhow::Error::msg)?;
    let url = reqwest::Url::parse(url)?;
    let next = Arc::new(AtomicUsize::new(0));
    let form = [
        // Not one of the fake's magic numbers (`+1500555…`), which it would refuse.
        ("To", "+15557650001"),
        ("From", "+15005550006"),
        (
            "Body",
            "Hello Ada, your appointment is confirmed for Tuesday at 10:00.",
        ),
    ];

    // Warm the pool (one connection per worker) before measuring.
    let run = |count: usize| {
        next.store(0, Ordering::Relaxed);
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, next) = (client.clone(), url.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        let answer = client
                            .post(url.clone())
                            .basic_auth("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Some("token"))
                            .header(reqwest::header::ACCEPT, "application/json")
                            .form(&form)
                            .send()
                            .await?;
                        let status = answer.status();
                        let text = answer.text().await?;
                        // The fake's answer has this request's own fields, not the floor's.
                        anyhow::ensure!(
                            status == reqwest::StatusCode::CREATED
                                && (fake || text.len() == ANSWER.len()),
                            "unexpected answer {status}"
                        );
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        async move {
            for worker in workers {
                worker.await??;
            }
            anyhow::Ok(())
        }
    };
    run(concurrency * 2).await?;

    let before = (cpu_ticks("floor-client")?, cpu_ticks("floor-server")?);
    let started = Instant::now();
    run(requests).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = (cpu_ticks("floor-client")?, cpu_ticks("floor-server")?);
    // Ticks are 10 ms: milliseconds per request, to the microsecond.
    let per_request =
        |ticks: u64| (ticks as f64 * 10.0 / requests as f64 * 1000.0).round() / 1000.0;
    let (client, server) = (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    );
    println!(
        "{}",
        serde_json::json!({
            "requests": requests,
            "concurrency": concurrency,
            "server": if fake { "herald-fakes twilio" } else { "floor" },
            "requests_per_s": (requests as f64 / elapsed).round(),
            "cpu_ms_per_request": {
                "client": per_request(client),
                "server": per_request(server),
                "both": per_request(client + server),
            },
        })
    );
    Ok(())
}
