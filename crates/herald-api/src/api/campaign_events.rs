//! `GET /campaigns/{id}/events`: a campaign's live progress as Server-Sent Events.
//!
//! The stream opens with `event: snapshot` (the full campaign view). It then reads the
//! campaign row about every 250 ms (one cheap query on the read pool, which also returns the
//! id of the latest audit event; no connection is held between reads) and sends
//! `event: audit` for each new entry of the audit trail (with `id:` set to the entry's id,
//! so a reconnecting `EventSource` resumes after it through `Last-Event-ID`) and
//! `event: progress` whenever the status, the outcome or a counter changed. Each `progress`
//! is one read of the campaign row: every number a page shows comes from the same snapshot.
//! When the campaign has ended (completed or cancelled) and nothing of it is pending any more
//! (sends in flight at a cancel are recorded first), the last `progress` is followed by
//! `event: end` and the stream closes. A comment every 15 s keeps proxies from closing an idle stream. When the client
//! goes away the stream is dropped, and with it the polling.
//!
//! The caller's credentials are checked again every `CREDENTIAL_CHECK`: once the API key is
//! revoked, the session signed out or expired, the user removed or given a lower role, the
//! stream sends `event: end` and closes (a reconnect then authenticates afresh).

use super::auth::{AsViewer, Credential, Principal};
use super::campaigns::{self, CampaignAuditEvent, CampaignCounters};
use super::problem::{ApiPath, ApiResult};
use super::{ApiState, decode, timestamp_opt};
use crate::domain::{CampaignOutcome, CampaignStatus, Counts};
use crate::ids::{CampaignId, EventId, OrgId};
use crate::store::{Campaign as CampaignRow, StoreError};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How often the campaign row is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The longest wait between reads while the database does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The longest one stream lasts before the client must reconnect.
pub const MAX_STREAM: Duration = Duration::from_secs(300);
/// How often an open stream re-checks the caller's credentials; at most 10 s, so a revoked
/// key stops seeing a campaign within seconds, not at the end of `MAX_STREAM`.
pub const CREDENTIAL_CHECK: Duration = Duration::from_secs(5);
/// Audit entries read per query.
const AUDIT_BATCH: i64 = 100;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(campaign_events))
}

/// The data of an `event: progress`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignProgress {
    #[schema(example = "cmp_1")]
    pub id: String,
    pub status: CampaignStatus,
    /// How the campaign came out, once completed or cancelled; null until then.
    pub outcome: Option<CampaignOutcome>,
    pub total: i64,
    pub counters: CampaignCounters,
    /// The share of messages no longer pending, from 0 to 1.
    pub progress: f64,
    pub in_doubt_total: i64,
    pub last_progress_at: Option<String>,
    pub completed_at: Option<String>,
}

/// The data of an `event: end`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignStreamEnd {
    #[schema(example = "cmp_1")]
    pub id: String,
    /// The final status; null when the campaign was deleted.
    pub status: Option<CampaignStatus>,
    pub reason: String,
}

fn progress_of(c: &CampaignRow) -> CampaignProgress {
    CampaignProgress {
        id: c.id.to_string(),
        status: c.status,
        outcome: c.outcome,
        total: c.total,
        counters: CampaignCounters::from(&c.counts),
        progress: campaigns::progress(c),
        in_doubt_total: c.in_doubt_total,
        last_progress_at: timestamp_opt(c.last_progress_at),
        completed_at: timestamp_opt(c.completed_at),
    }
}

/// Ended and with nothing pending: its counters move no more (but for late provider
/// receipts), so the stream's last `progress` is the campaign's final picture. A campaign
/// cancelled while sends were in flight is followed until they are recorded.
fn settled(c: &CampaignRow) -> bool {
    c.status.is_terminal() && c.counts.pending() == 0
}

fn json_event(name: &'static str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, event = name, "cannot serialise a campaign event");
            Event::default().comment("an event could not be serialised")
        })
}

/// What a `progress` event shows: a new one is sent when any of it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    status: CampaignStatus,
    outcome: Option<CampaignOutcome>,
    total: i64,
    counts: Counts,
    in_doubt_total: i64,
}

impl Shown {
    fn of(c: &CampaignRow) -> Shown {
        Shown {
            status: c.status,
            outcome: c.outcome,
            total: c.total,
            counts: c.counts,
            in_doubt_total: c.in_doubt_total,
        }
    }
}

/// The state of one client's stream between reads.
struct Feed {
    state: ApiState,
    org_id: OrgId,
    id: CampaignId,
    /// Events ready to send, oldest first.
    queue: VecDeque<Event>,
    shown: Shown,
    /// The id of the last audit entry sent (or already there when the stream opened).
    audit_after: EventId,
    done: bool,
    wait: Duration,
    /// When this stream ends even if the campaign has not: clients (EventSource) reconnect
    /// with Last-Event-ID, which re-checks their credentials and frees idle streams.
    until: std::time::Instant,
    /// Who opened the stream, and the request headers that proved it (Authorization and
    /// Cookie only), to check again every `CREDENTIAL_CHECK`.
    caller: Principal,
    credentials: HeaderMap,
    next_credential_check: std::time::Instant,
}

impl Feed {
    /// The next event, reading the campaign as often as needed; None ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.done || std::time::Instant::now() >= self.until {
                return None;
            }
            tokio::time::sleep(self.wait).await;
            if std::time::Instant::now() >= self.next_credential_check {
                self.next_credential_check = std::time::Instant::now() + CREDENTIAL_CHECK;
                if let Some(reason) = self.credentials_lapsed().await {
                    tracing::info!(
                        org_id = %self.org_id,
                        campaign_id = %self.id,
                        actor = self.caller.actor,
                        reason,
                        "campaign event stream closed: credentials no longer valid"
                    );
                    self.end(Some(self.shown.status), reason);
                    continue;
                }
            }
            self.tick().await;
        }
    }

    async fn tick(&mut self) {
        let read = self
            .state
            .store
            .api_campaign_poll(self.org_id, self.id)
            .await;
        let result = match read {
            Ok((c, last_event)) => self.observe(&c, last_event).await,
            Err(StoreError::NotFound(_)) => {
                self.end(None, "the campaign was deleted");
                Ok(())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => self.wait = POLL_INTERVAL,
            Err(e) => {
                self.wait = (self.wait * 2).min(MAX_BACKOFF);
                tracing::warn!(campaign_id = %self.id, error = %e, retry_in_ms = self.wait.as_millis() as u64, "campaign event stream cannot read the campaign");
            }
        }
    }

    async fn observe(&mut self, c: &CampaignRow, last_event: EventId) -> Result<(), StoreError> {
        if last_event > self.audit_after {
            self.read_audit().await?;
        }
        let shown = Shown::of(c);
        if shown != self.shown {
            self.queue
                .push_back(json_event("progress", &progress_of(c)));
            self.shown = shown;
        }
        if settled(c) {
            self.end(Some(c.status), &format!("the campaign is {}", c.status));
        }
        Ok(())
    }

    /// Queues the audit entries after `audit_after`.
    async fn read_audit(&mut self) -> Result<(), StoreError> {
        loop {
            let events = self
                .state
                .store
                .api_campaign_events(self.org_id, self.id, self.audit_after, AUDIT_BATCH)
                .await?;
            let n = events.len();
            for e in events {
                self.audit_after = self.audit_after.max(e.id);
                let id = e.id.to_string();
                self.queue
                    .push_back(json_event("audit", &CampaignAuditEvent::from(e)).id(id));
            }
            if i64::try_from(n).unwrap_or(0) < AUDIT_BATCH {
                return Ok(());
            }
        }
    }

    /// Why the caller may no longer read this stream, or None while it still may. Fails
    /// closed: credentials that cannot be checked (database unreachable) end the stream, and
    /// the client's reconnect is authenticated like any request.
    async fn credentials_lapsed(&self) -> Option<&'static str> {
        let now = match super::auth::principal_for(&self.state, &self.credentials).await {
            Ok(Some(now)) => now,
            Ok(None) | Err(_) => {
                return Some(
                    "the credentials are no longer valid (revoked, signed out or expired); reconnect with valid ones",
                );
            }
        };
        let same_credential = match (&now.credential, &self.caller.credential) {
            (Credential::ApiKey { id: a }, Credential::ApiKey { id: b }) => a == b,
            (Credential::Session { id: a, .. }, Credential::Session { id: b, .. }) => a == b,
            _ => false,
        };
        if !same_credential || now.org_id != self.caller.org_id {
            return Some("the credentials changed; reconnect");
        }
        if now.role < self.caller.role {
            return Some("the caller's role was lowered; reconnect");
        }
        None
    }

    fn end(&mut self, status: Option<CampaignStatus>, reason: &str) {
        self.queue.push_back(json_event(
            "end",
            &CampaignStreamEnd {
                id: self.id.to_string(),
                status,
                reason: reason.to_string(),
            },
        ));
        self.done = true;
    }
}

/// Live progress of a campaign as Server-Sent Events (`text/event-stream`).
///
/// Events, each with a JSON `data:` line:
/// - `snapshot` (first): the full campaign, as GET /campaigns/{id} returns it;
/// - `progress`: status and counters (`CampaignProgress`), whenever one of them changed;
/// - `audit`: a new entry of the audit trail (`CampaignAuditEvent`), with `id:` set to its id;
/// - `end` (last): the campaign completed or was cancelled and nothing of it is pending any
///   more (sends in flight at a cancel are followed until recorded), or the caller's
///   credentials are no longer valid (`CampaignStreamEnd`); the stream closes.
///
/// The campaign is read about every 250 ms; a comment line is sent every 15 s while
/// nothing happens. Reconnecting with `Last-Event-ID` (as `EventSource` does) also sends the
/// audit entries after that id. Credentials are checked again every 5 s: a revoked API key,
/// a signed-out session, a removed user or a lowered role ends the stream.
#[utoipa::path(get, path = "/campaigns/{id}/events", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last `audit` event received (`evt_…`): entries after it are sent again"),
    ),
    responses(
        (status = 200, description = "A stream of `snapshot`, `progress`, `audit` and `end` events", content_type = "text/event-stream", body = String),
    ))]
async fn campaign_events(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = decode::<CampaignId>(&id)?;
    let (c, last_event) = state.store.api_campaign_poll(p.org_id, id).await?;
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| decode::<EventId>(v.trim()).ok())
        .filter(|n| *n <= last_event);
    let snapshot = campaigns::view(&state, c.clone()).await?;
    let mut credentials = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::COOKIE] {
        for value in headers.get_all(&name) {
            credentials.append(name.clone(), value.clone());
        }
    }
    let mut feed = Feed {
        state,
        org_id: p.org_id,
        id,
        queue: VecDeque::from([json_event("snapshot", &snapshot)]),
        shown: Shown::of(&c),
        audit_after: resume_after.unwrap_or(last_event),
        done: false,
        wait: POLL_INTERVAL,
        until: std::time::Instant::now() + MAX_STREAM,
        caller: p.clone(),
        credentials,
        next_credential_check: std::time::Instant::now() + CREDENTIAL_CHECK,
    };
    if resume_after.is_some() {
        feed.read_audit().await?;
    }
    if settled(&c) {
        feed.end(Some(c.status), &format!("the campaign is {}", c.status));
    }
    tracing::debug!(
        org_id = %p.org_id,
        campaign_id = %id,
        actor = p.actor,
        "campaign event stream opened"
    );
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<Event, Infallible>(event), feed))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}
