//! The HTTP listener of `herald serve`: accepts connections and serves the router on each
//! one (HTTP/1.1), with the limits a public listener needs against slow or greedy clients:
//!
//! - a connection must send a request's headers within `http_header_timeout_ms` (the first
//!   request, and each next one on a kept-alive connection), or it is closed;
//! - a request's body must arrive within `http_body_timeout_ms` of its headers, or the
//!   request is answered 408 and the connection closed;
//! - one client address may hold `http_max_connections_per_ip` connections, and the whole
//!   listener `MAX_OPEN_CONNECTIONS`; a connection beyond either is closed at once and
//!   counted in `herald_http_connections_refused_total{reason}`. At its address's cap, a
//!   new connection first takes the place of the address's longest-idle kept-alive
//!   connection (one that answered a request at least a second ago and waits for the
//!   next), which closes. So a provider's or a proxy's pool of idle connections does not
//!   lock the address out: only connections at work hold the cap (as nginx's
//!   `limit_conn` counts them), and counting those still closing, an address holds at
//!   most twice the cap.
//!
//! Each request carries `ConnectInfo<SocketAddr>` (the peer), as `axum::serve` gave it. On
//! shutdown the listener stops accepting and every connection finishes its in-flight request
//! and closes; the caller bounds how long that may take (open event streams never finish).

use crate::config::Settings;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Connections open at once on one listener, whatever their addresses: far above what a
/// dashboard, an API client and providers' webhooks need, and below the file descriptors a
/// default service limit allows, so a flood from many addresses is refused by Herald rather
/// than failing `accept` (and the database pool's own connections) for lack of descriptors.
pub const MAX_OPEN_CONNECTIONS: usize = 4096;

/// The connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_per_address: usize,
    pub max_open: usize,
}

impl Limits {
    pub fn from_settings(settings: &Settings) -> Limits {
        Limits {
            header_timeout: Duration::from_millis(settings.http_header_timeout_ms),
            body_timeout: Duration::from_millis(settings.http_body_timeout_ms),
            max_per_address: usize::try_from(settings.http_max_connections_per_ip)
                .unwrap_or(usize::MAX),
            max_open: MAX_OPEN_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then drains: no new connections,
/// in-flight requests finish, idle connections close. Returns once every connection closed;
/// dropping the future instead (the caller's deadline) closes them all at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(OpenConnections::default());
    let mut connections = JoinSet::new();
    let mut stop = shutdown.clone();
    let stopping = async move {
        // A dropped sender means the process is ending: stop too.
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopping);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopping => break,
            // Reap finished connections so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of file descriptors or similar: accepting again at once
                        // would spin; the open connections closing is what frees them.
                        tracing::warn!(error = %e, "cannot accept a connection; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let slot = match open.admit(peer.ip(), &limits) {
            Ok(slot) => slot,
            Err(reason) => {
                metrics::counter!("herald_http_connections_refused_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(%peer, reason, "connection refused");
                drop(stream);
                continue;
            }
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            limits,
            shutdown.clone(),
            slot,
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let state = slot.state.clone();
    let working = state.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = app.clone();
        // At work from the request's headers until its response body is dropped (sent or
        // abandoned): only then is the connection idle, and may be taken back.
        let at_work = AtWork::start(working.clone());
        async move {
            let response = handle(app, request, peer, limits.body_timeout).await;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(WorkingBody {
                    inner: body,
                    _at_work: at_work,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        // Its place was given to a newer connection from its address: an idle connection
        // closes at once, one that took a request since finishes it first, within the
        // header timeout (a client that does not read its answer is not waited for).
        _ = state.reclaim.notified() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.header_timeout, connection).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        // Header timeouts, resets and malformed requests end here; none is the server's fault.
        tracing::debug!(%peer, error = %e, "connection closed");
    }
}

/// One request: the router sees the peer address and a body with a deadline; a body that
/// missed it is answered 408, whatever the handler made of the cut-off body.
async fn handle(
    app: Router,
    request: Request<Incoming>,
    peer: SocketAddr,
    body_timeout: Duration,
) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let timed_out = Arc::new(AtomicBool::new(false));
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(body_timeout)),
        timed_out: timed_out.clone(),
    });
    let response = match app.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if !timed_out.load(Ordering::Acquire) {
        return response;
    }
    metrics::counter!("herald_http_body_timeouts_total").increment(1);
    tracing::debug!(%peer, timeout_ms = body_timeout.as_millis() as u64, "request body timed out");
    let mut response = crate::app_state::problem(
        StatusCode::REQUEST_TIMEOUT,
        "request-body-timeout",
        "The request body did not arrive in time",
        &format!(
            "the whole body must arrive within {} ms of the request's headers (http_body_timeout_ms); send it at once, or split the upload",
            body_timeout.as_millis()
        ),
    );
    // The rest of the body is unread: the connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The error a body that missed its deadline ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
struct BodyTimedOut;

/// A request body that fails once its deadline passes (total time, not time between
/// chunks, so trickling a byte at a time does not extend it).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(axum::BoxError::from)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections, per client address and in all.
#[derive(Default)]
struct OpenConnections {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Each address's open connections, oldest first.
    per_address: HashMap<IpAddr, Vec<Arc<ConnectionState>>>,
    total: usize,
}

/// What the listener knows of one open connection.
#[derive(Default)]
struct ConnectionState {
    /// Requests whose response is not yet sent.
    at_work: AtomicUsize,
    /// When its last response was handed to hyper (ms since the epoch), 0 before the first:
    /// a connection still to send its first request is never taken back (a slow client's
    /// meets the header timeout instead).
    idle_since_ms: AtomicI64,
    /// Given up for a newer connection; told through `reclaim`.
    reclaimed: AtomicBool,
    reclaim: tokio::sync::Notify,
}

/// How long a kept-alive connection must have been idle before a new connection may take
/// its place: a client that sends its next request right after an answer is not cut off
/// with it unread.
const RECLAIM_AFTER_IDLE_MS: i64 = 1_000;

impl ConnectionState {
    /// Since when it has been idle, if it may be taken back at `now_ms`.
    fn idle_since(&self, now_ms: i64) -> Option<i64> {
        let since = self.idle_since_ms.load(Ordering::Acquire);
        (since > 0
            && since <= now_ms - RECLAIM_AFTER_IDLE_MS
            && self.at_work.load(Ordering::Acquire) == 0
            && !self.reclaimed.load(Ordering::Acquire))
        .then_some(since)
    }
}

/// A request at work on its connection, from its headers until its response body is
/// dropped.
struct AtWork(Arc<ConnectionState>);

impl AtWork {
    fn start(state: Arc<ConnectionState>) -> AtWork {
        state.at_work.fetch_add(1, Ordering::AcqRel);
        AtWork(state)
    }
}

impl Drop for AtWork {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(crate::clock::now_ms(), Ordering::Release);
        self.0.at_work.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request at work until hyper drops it.
struct WorkingBody {
    inner: Body,
    _at_work: AtWork,
}

impl HttpBody for WorkingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl OpenConnections {
    /// A slot for one more connection from `ip`, or the limit that refuses it. At the
    /// address's cap, its longest-idle connection (idle for `RECLAIM_AFTER_IDLE_MS` at
    /// least) is told to close and the new one takes its place; the one closing no longer
    /// counts against the cap, but against twice the cap.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Slot, &'static str> {
        // An IPv4 client reaching a dual-stack listener is one address, however spelled.
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= limits.max_open {
            return Err("open_connections");
        }
        let from_ip = counts.per_address.entry(ip).or_default();
        // Reclaimed connections still closing count too, up to twice the cap: one that
        // finishes an answer its client does not read is bounded by its deadline, and the
        // address by this.
        if from_ip.len() >= limits.max_per_address.saturating_mul(2) {
            return Err("per_address");
        }
        let open_at_work = from_ip
            .iter()
            .filter(|c| !c.reclaimed.load(Ordering::Acquire))
            .count();
        if open_at_work >= limits.max_per_address {
            // The one idle longest, so the likeliest to be forgotten by its client.
            let now = crate::clock::now_ms();
            let Some(idle) = from_ip
                .iter()
                .filter_map(|c| c.idle_since(now).map(|since| (since, c)))
                .min_by_key(|(since, _)| *since)
                .map(|(_, c)| c)
            else {
                return Err("per_address");
            };
            idle.reclaimed.store(true, Ordering::Release);
            // A permit is kept if its task is not waiting at this instant.
            idle.reclaim.notify_one();
            metrics::counter!("herald_http_connections_reclaimed_total").increment(1);
        }
        let state = Arc::new(ConnectionState::default());
        from_ip.push(state.clone());
        counts.total += 1;
        metrics::gauge!("herald_http_connections_open").set(counts.total as f64);
        Ok(Slot {
            open: self.clone(),
            ip,
            state,
        })
    }
}

/// One admitted connection; dropping it (the connection's task ending, or being aborted)
/// gives the slot back.
struct Slot {
    open: Arc<OpenConnections>,
    ip: IpAddr,
    state: Arc<ConnectionState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.open.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = counts.per_address.get_mut(&self.ip) {
            open.retain(|c| !Arc::ptr_eq(c, &self.state));
            if open.is_empty() {
                counts.per_address.remove(&self.ip);
            }
        }
        counts.total = counts.total.saturating_sub(1);
        metrics::gauge!("herald_http_connections_open").set(counts.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: usize, open: usize) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            max_per_address: per_address,
            max_open: open,
        }
    }

    #[tokio::test]
    async fn at_the_cap_only_an_idle_served_connection_is_taken_back() {
        let open = Arc::new(OpenConnections::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let limits = limits(2, 10);
        let fresh = open.admit(a, &limits).unwrap();
        let working = open.admit(a, &limits).unwrap();
        // One never served a request, the other is at work: neither is taken back.
        let at_work = AtWork::start(working.state.clone());
        assert_eq!(open.admit(a, &limits).err(), Some("per_address"));
        // Its response just sent, the second is idle, but not for long enough.
        drop(at_work);
        assert_eq!(open.admit(a, &limits).err(), Some("per_address"));
        // Idle for a second: the next connection takes its place.
        working.state.idle_since_ms.store(
            crate::clock::now_ms() - RECLAIM_AFTER_IDLE_MS,
            Ordering::Release,
        );
        let newer = open.admit(a, &limits).unwrap();
        assert!(working.state.reclaimed.load(Ordering::Acquire));
        assert!(!fresh.state.reclaimed.load(Ordering::Acquire));
        // Told: its task wakes (the permit waits if it was not listening yet).
        tokio::time::timeout(Duration::from_secs(1), working.state.reclaim.notified())
            .await
            .unwrap();
        // Fresh and newer fill the cap; the reclaimed one no longer counts against it.
        assert_eq!(open.admit(a, &limits).err(), Some("per_address"));
        // Whatever is idle, an address never holds more than twice the cap.
        for c in [&fresh, &newer] {
            c.state.idle_since_ms.store(1, Ordering::Release);
        }
        let third = open.admit(a, &limits).unwrap();
        assert!(
            fresh.state.reclaimed.load(Ordering::Acquire),
            "idle longest"
        );
        assert_eq!(
            open.admit(a, &limits).err(),
            Some("per_address"),
            "4 = 2 × 2 open"
        );
        drop(third);
        drop(working);
        drop(newer);
        drop(fresh);
        assert_eq!(open.counts.lock().unwrap().total, 0);
    }

    #[test]
    fn slots_are_counted_per_address_and_in_all_and_given_back() {
        let open = Arc::new(OpenConnections::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let limits = limits(2, 3);
        let first = open.admit(a, &limits).unwrap();
        let _second = open.admit(a_mapped, &limits).unwrap();
        assert_eq!(open.admit(a, &limits).err(), Some("per_address"));
        let _third = open.admit(b, &limits).unwrap();
        assert_eq!(open.admit(b, &limits).err(), Some("open_connections"));
        drop(first);
        assert!(open.admit(a, &limits).is_ok());
        let counts = open.counts.lock().unwrap();
        assert_eq!(counts.total, 2, "the slot admitted last was dropped");
        assert_eq!(
            counts.per_address.get(&a.to_canonical()).map(Vec::len),
            Some(1)
        );
    }
}
