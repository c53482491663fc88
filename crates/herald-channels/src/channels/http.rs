//! The HTTP client the provider channels share, and the parts of a send's outcome that do
//! not depend on the provider: what a transport failure means and how long `Retry-After`
//! asks us to wait.
//!
//! reqwest and lettre are built on rustls without a default crypto provider, so the ring
//! provider is installed once per process before the first client is built.

use super::{ChannelError, SendResult};
use crate::outbound::Refused;
use std::time::Duration;

pub use crate::outbound::client::{
    CONNECT_TIMEOUT, Failure, ProviderClient, REQUEST_TIMEOUT, build_client, client,
    install_crypto_provider, try_client,
};

/// The longest `Retry-After` honoured; a longer one is clamped to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The guard's refusal somewhere in an error's causes (the resolver's error arrives
/// wrapped by hyper and reqwest).
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        current = e.source();
    }
    None
}

/// A refused destination as a send's result: every send would be refused the same way,
/// so the campaign stops with the guard's message (which never depends on the port).
pub fn refused_result(provider: &str, refused: &Refused) -> SendResult {
    SendResult::StopCampaign {
        error: format!("{provider}: {refused}"),
    }
}

/// The probe of an unavailable channel: one request that sends nothing (an authenticated
/// read). Any answer means the provider is back, except a 5xx (it is still down) and a
/// 401 or 403 (it answers but refuses the channel's credentials: sends would fail too).
pub async fn probe(
    provider: &str,
    client: &ProviderClient,
    request: reqwest::RequestBuilder,
) -> Result<(), ChannelError> {
    let refused = match client.send(request).await {
        Err(Failure::Refused(r)) => format!("{provider}: {r}"),
        Err(Failure::Transport(e)) => format!("{provider}: {}", describe(&e)),
        Ok(response) => match response.status().as_u16() {
            s @ (401 | 403) => format!(
                "{provider}: HTTP {s}: the provider answers but refuses the channel's credentials"
            ),
            s @ 500..=599 => format!("{provider}: HTTP {s}: the provider is not serving"),
            _ => return Ok(()),
        },
    };
    Err(ChannelError::Provider(refused))
}

/// A provider's answer to a send, read to the end or to [`MAX_ANSWER_BYTES`].
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    /// The body's size as received (more than `body` holds when it was cut).
    pub size: usize,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The most of an answer's body kept: provider answers are a few hundred bytes, and a
/// destination streaming without end must not grow Herald's memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Reads a send's answer, or says what the failure means: a request that never got an
/// answer per `transport_failure`, and a success whose body was lost is in doubt (the
/// provider has the message, Herald lacks its id). An error body that cannot be read is
/// taken as empty, classified by status alone.
pub async fn read_answer(
    provider: &str,
    response: Result<reqwest::Response, Failure>,
) -> Result<Answer, SendResult> {
    let response = response.map_err(|failure| match failure {
        Failure::Refused(r) => refused_result(provider, &r),
        Failure::Transport(e) => transport_failure(provider, &e),
    })?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    match read_bounded(response, MAX_ANSWER_BYTES).await {
        Ok((body, size)) => Ok(Answer {
            status,
            headers,
            body,
            size,
        }),
        Err(e) if (200..300).contains(&status) => Err(SendResult::Unknown {
            error: format!(
                "{provider}: HTTP {status} but its body was lost: {}",
                describe(&e)
            ),
        }),
        Err(_) => Ok(Answer {
            status,
            headers,
            body: String::new(),
            size: 0,
        }),
    }
}

/// The body's first `max` bytes as text (lossy) and how many bytes it had; reading stops
/// past `max`, so the size is at least `max + 1` then.
pub async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> Result<(String, usize), reqwest::Error> {
    let mut kept: Vec<u8> = Vec::new();
    let mut size = 0usize;
    while let Some(chunk) = response.chunk().await? {
        size = size.saturating_add(chunk.len());
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if size > max {
            break;
        }
    }
    Ok((String::from_utf8_lossy(&kept).into_owned(), size))
}

/// What a request that got no HTTP response means. A failure to connect (refused, DNS,
/// connect timeout, TLS handshake) means the request never left: `Unreachable`. Anything
/// later (a timeout after the request was sent, a reset while waiting for the answer) may
/// have created a message at the provider: `Unknown`. A destination the guard refused is
/// [`refused_result`].
pub fn transport_failure(provider: &str, error: &reqwest::Error) -> SendResult {
    if let Some(refused) = refusal_in(error) {
        return refused_result(provider, &refused);
    }
    let detail = describe(error);
    if error.is_connect() {
        SendResult::Unreachable {
            error: format!("{provider}: could not connect: {detail}"),
        }
    } else if error.is_builder() {
        // The request could not even be built (a bad URL): nothing was sent, and every
        // other send would fail the same way.
        SendResult::StopCampaign {
            error: format!("{provider}: invalid request: {detail}"),
        }
    } else if error.is_timeout() {
        SendResult::Unknown {
            error: format!("{provider}: no answer in time after the request was sent: {detail}"),
        }
    } else {
        SendResult::Unknown {
            error: format!("{provider}: the answer was lost: {detail}"),
        }
    }
}

/// The error and its causes on one line. reqwest's own message omits the cause (e.g.
/// "connection refused"), which is the useful part.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

/// `Retry-After` in delta-seconds (the form rate-limiting APIs send), clamped to
/// [`MAX_RETRY_AFTER`]. The HTTP-date form is ignored.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// The most of a provider's own error text kept in a message.
pub const MAX_PROVIDER_TEXT: usize = 300;

/// A recognised provider error's text (from its JSON error body), on one line and at
/// most [`MAX_PROVIDER_TEXT`] characters.
pub fn provider_text(text: &str) -> String {
    let mut one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_PROVIDER_TEXT + 1)
        .collect();
    if one_line.chars().count() > MAX_PROVIDER_TEXT {
        one_line = one_line.chars().take(MAX_PROVIDER_TEXT).collect();
        one_line.push('…');
    }
    one_line.trim().to_string()
}

/// An answer that is not a recognisable provider error, described without its body: it
/// may come from any service the channel was pointed at (an internal page, a metadata
/// endpoint), and echoing it would hand that service's content to whoever reads the
/// error.
pub fn unexpected_answer(status: u16, headers: &reqwest::header::HeaderMap, size: usize) -> String {
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 100 && v.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("no content type");
    let size = if size > MAX_ANSWER_BYTES {
        format!("more than {MAX_ANSWER_BYTES} bytes")
    } else {
        format!("{size} bytes")
    };
    format!("unexpected answer (HTTP {status}, {content_type}, {size})")
}

/// Checks a `--base-url` flag: an absolute http(s) URL without query or fragment.
pub fn validate_base_url(flag: &str, url: &str) -> Result<(), ChannelError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        ChannelError::settings(format!(
            "{flag} `{url}` is not a URL ({e}): give one like https://api.example.com"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ChannelError::settings(format!(
            "{flag} `{url}` must be an http:// or https:// URL with a host"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ChannelError::settings(format!(
            "{flag} `{url}` must not have a query or fragment: give the API's base only"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::OutboundGuard;

    #[test]
    fn retry_after_takes_seconds_only() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "999999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn base_urls() {
        assert!(validate_base_url("--base-url", "https://api.twilio.com").is_ok());
        assert!(validate_base_url("--base-url", "http://127.0.0.1:4010/").is_ok());
        assert!(
            validate_base_url("--base-url", "ftp://x")
                .unwrap_err()
                .mentions("--base-url")
        );
        assert!(validate_base_url("--base-url", "not a url").is_err());
        assert!(validate_base_url("--base-url", "https://x/?a=1").is_err());
    }

    #[test]
    fn unexpected_answers_are_described_not_quoted() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(
            unexpected_answer(404, &h, 1234),
            "unexpected answer (HTTP 404, no content type, 1234 bytes)"
        );
        h.insert(
            reqwest::header::CONTENT_TYPE,
            "text/html; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(
            unexpected_answer(200, &h, MAX_ANSWER_BYTES + 1),
            format!("unexpected answer (HTTP 200, text/html, more than {MAX_ANSWER_BYTES} bytes)")
        );
    }

    #[test]
    fn provider_text_is_one_bounded_line() {
        assert_eq!(provider_text(" Invalid\nnumber "), "Invalid number");
        let long = provider_text(&"x".repeat(5000));
        assert_eq!(long.chars().count(), MAX_PROVIDER_TEXT + 1);
        assert!(long.ends_with('…'));
    }

    #[tokio::test]
    async fn a_refused_name_stops_the_campaign_without_connecting() {
        // `localhost` goes through the guard's resolver; a refused resolution arrives
        // wrapped by hyper and reqwest and is still recognised as the guard's.
        let client = build_client(
            Duration::from_millis(500),
            Duration::from_millis(500),
            OutboundGuard::default(),
        )
        .unwrap();
        let request = client.post("http://localhost:9/x");
        let result = read_answer("twilio", client.send(request).await).await;
        match result {
            Err(SendResult::StopCampaign { error }) => {
                assert!(crate::outbound::is_refusal(&error), "{error}")
            }
            Err(other) => panic!("{other:?}"),
            Ok(a) => panic!("answered HTTP {}", a.status),
        }
        let request = client.post("http://127.1:9/x");
        assert!(matches!(
            read_answer("twilio", client.send(request).await).await,
            Err(SendResult::StopCampaign { error }) if crate::outbound::is_refusal(&error)
        ));
    }

    #[tokio::test]
    async fn answers_are_read_to_a_bound() {
        let server = fake::FakeServer::start().await;
        server.reply(fake::Reply::Respond {
            status: 500,
            headers: vec![],
            body: "y".repeat(MAX_ANSWER_BYTES * 3),
        });
        let client = build_client(
            Duration::from_secs(2),
            Duration::from_secs(5),
            OutboundGuard::allow_all(),
        )
        .unwrap();
        let request = client.post(format!("{}/x", server.base));
        let Ok(answer) = read_answer("twilio", client.send(request).await).await else {
            panic!("no answer");
        };
        assert_eq!(answer.body.len(), MAX_ANSWER_BYTES);
        assert!(answer.size > MAX_ANSWER_BYTES);
    }

    #[test]
    fn clients_build_more_than_once() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(try_client().is_ok());
        assert!(
            build_client(
                Duration::from_millis(10),
                Duration::from_millis(10),
                OutboundGuard::default()
            )
            .is_ok()
        );
    }
}

/// A tiny HTTP server for channel tests: records every request and answers from a queue
/// of canned replies (500 when the queue is empty).
#[cfg(test)]
pub(crate) mod fake {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::Response;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone)]
    pub struct Recorded {
        pub method: String,
        pub path: String,
        pub query: Option<String>,
        pub headers: HeaderMap,
        pub body: Vec<u8>,
    }

    impl Recorded {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }

        /// The body as decoded form pairs, in order.
        pub fn form(&self) -> Vec<(String, String)> {
            reqwest::Url::parse(&format!(
                "http://x/?{}",
                String::from_utf8_lossy(&self.body)
            ))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default()
        }

        pub fn form_value(&self, name: &str) -> Option<String> {
            self.form()
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
        }

        pub fn query_pairs(&self) -> Vec<(String, String)> {
            reqwest::Url::parse(&format!(
                "http://x/?{}",
                self.query.clone().unwrap_or_default()
            ))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default()
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
        }
    }

    #[derive(Debug, Clone)]
    pub enum Reply {
        Respond {
            status: u16,
            headers: Vec<(&'static str, String)>,
            body: String,
        },
        /// Accept the request and never answer.
        Hang,
    }

    impl Reply {
        pub fn json(status: u16, body: serde_json::Value) -> Reply {
            Reply::Respond {
                status,
                headers: vec![("content-type", "application/json".to_string())],
                body: body.to_string(),
            }
        }
    }

    #[derive(Default)]
    struct Shared {
        requests: Mutex<Vec<Recorded>>,
        replies: Mutex<VecDeque<Reply>>,
    }

    pub struct FakeServer {
        pub base: String,
        shared: Arc<Shared>,
    }

    impl FakeServer {
        pub async fn start() -> FakeServer {
            let shared = Arc::new(Shared::default());
            let app = axum::Router::new()
                .fallback(handle)
                .with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            FakeServer {
                base: format!("http://{addr}"),
                shared,
            }
        }

        pub fn reply(&self, reply: Reply) {
            self.shared.replies.lock().expect("lock").push_back(reply);
        }

        pub fn requests(&self) -> Vec<Recorded> {
            self.shared.requests.lock().expect("lock").clone()
        }
    }

    async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        shared.requests.lock().expect("lock").push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
        });
        let reply = shared.replies.lock().expect("lock").pop_front();
        match reply {
            Some(Reply::Respond {
                status,
                headers,
                body,
            }) => {
                let mut builder = Response::builder().status(status);
                for (name, value) in headers {
                    builder = builder.header(name, value);
                }
                builder.body(Body::from(body)).expect("response")
            }
            Some(Reply::Hang) => std::future::pending().await,
            None => Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::from("no canned reply"))
                .expect("response"),
        }
    }

    /// A local port nothing listens on.
    pub async fn closed_port_url() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}")
    }
}
