//! Campaigns: create and edit drafts, start, schedule, pause, resume, cancel and mark
//! complete (the store's state machine, every move in the audit trail with the caller as
//! actor), counters and stats, messages, the audit trail, and template previews. The live
//! event stream is in `campaign_events.rs`.

use super::auth::{AsEditor, AsViewer, Principal};
use super::campaign_email::{EmailPreview, check_email, render_email};
use super::problem::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Problem};
use super::{ApiState, Page, PageParams, decode, timestamp, timestamp_opt};
use super::{check_name, check_text};
use crate::domain::{
    CampaignAction, CampaignOutcome, CampaignStatus, Counts, Derivation, MessageStatus,
};
use crate::email_content::EmailContent;
use crate::ids::{CampaignId, ChannelId, ContactId, ListId};
use crate::segments::{Encoding, sms_segments};
use crate::store::autopause::{AutoPause, AutoPauseSource};
use crate::store::{
    Campaign as CampaignRow, CampaignEvent, ChannelInfo, ContactInput, DraftEdit, ListInfo,
    MessageInfo, NewCampaign as NewCampaignRow, StartOutcome,
};
use crate::template::{ContactFields, MessageTemplate, TemplateError, render_off_thread};
use crate::whatsapp_template::WhatsAppTemplate;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Message templates are at most this many characters.
pub const MAX_BODY: usize = 10_000;
/// Reasons given for a pause, resume, cancel or completion.
pub const MAX_REASON: usize = 500;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(get_campaign, update_campaign, delete_campaign))
        .routes(routes!(start_campaign))
        .routes(routes!(schedule_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(cancel_campaign))
        .routes(routes!(complete_campaign))
        .routes(routes!(campaign_stats))
        .routes(routes!(campaign_throughput))
        .routes(routes!(campaign_messages))
        .routes(routes!(campaign_audit))
        .routes(routes!(preview_campaign))
        .routes(routes!(preview_template))
}

// --------------------------------------------------------------------------------------
// Views
// --------------------------------------------------------------------------------------

/// How many of the campaign's messages are in each status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CampaignCounters {
    pub queued: i64,
    pub in_flight: i64,
    pub retry_wait: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub undelivered: i64,
    pub failed: i64,
    pub skipped: i64,
    pub cancelled: i64,
    pub in_doubt: i64,
    /// Queued, in flight, waiting to retry or in doubt: work not yet done.
    pub pending: i64,
    /// Sent, delivered, read, undelivered or failed: messages attempted and finished.
    /// `processed + pending + skipped + cancelled` is the campaign's total.
    pub processed: i64,
}

impl From<&Counts> for CampaignCounters {
    fn from(c: &Counts) -> CampaignCounters {
        CampaignCounters {
            queued: c.get(MessageStatus::Queued),
            in_flight: c.get(MessageStatus::InFlight),
            retry_wait: c.get(MessageStatus::RetryWait),
            sent: c.get(MessageStatus::Sent),
            delivered: c.get(MessageStatus::Delivered),
            read: c.get(MessageStatus::Read),
            undelivered: c.get(MessageStatus::Undelivered),
            failed: c.get(MessageStatus::Failed),
            skipped: c.get(MessageStatus::Skipped),
            cancelled: c.get(MessageStatus::Cancelled),
            in_doubt: c.get(MessageStatus::InDoubt),
            pending: c.pending(),
            processed: c.processed(),
        }
    }
}

/// Why a sending campaign makes no progress, as the engine's stuck detector sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignStuck {
    #[schema(
        example = "all 40 pending messages wait for a retry, the next at 2026-12-01T09:00:05.000Z; channel `sms` is failing: The provider had a problem on its side (HTTP 503). Check the provider's status page; Herald retries while it can."
    )]
    pub reason: String,
    /// When the campaign last made progress.
    pub no_progress_since: String,
    pub pending: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Campaign {
    #[schema(example = "cmp_1")]
    pub id: String,
    pub name: String,
    pub status: CampaignStatus,
    /// How the campaign came out, once completed or cancelled; null until then. See
    /// `CampaignOutcome` for the rule.
    pub outcome: Option<CampaignOutcome>,
    /// The message template (minijinja: `Hi {{ name }}`).
    pub body: String,
    #[schema(example = "chn_1")]
    pub channel_id: String,
    pub channel_name: String,
    /// The channel's provider: `twilio`, `whatsapp`, `smtp`, `sandbox`, ...
    pub channel_kind: String,
    #[schema(example = "lst_1")]
    pub list_id: String,
    pub list_name: String,
    /// Messages created when the campaign started (one per distinct address of the list).
    pub total: i64,
    pub counters: CampaignCounters,
    /// The share of messages no longer pending, from 0 to 1.
    pub progress: f64,
    /// Messages ever found in doubt (at most that many recipients may get a duplicate).
    pub in_doubt_total: i64,
    /// Messages with at least one counted click on a tracked link
    /// (`GET /campaigns/{id}/stats` has the rate and each link's).
    pub clicked: i64,
    /// Every counted click on its tracked links.
    pub clicks: i64,
    /// Replies to it: inbound messages whose sender it was the last campaign sent to
    /// (`GET /replies?campaign_id=`).
    pub replies: i64,
    pub created_at: String,
    pub scheduled_at: Option<String>,
    pub started_at: Option<String>,
    /// When it completed or was cancelled.
    pub completed_at: Option<String>,
    pub last_progress_at: Option<String>,
    /// Null unless the campaign is sending and has made no progress for a while.
    pub stuck: Option<CampaignStuck>,
    /// Why the campaign is paused, from its audit trail: the engine's reason (e.g.
    /// "paused by the engine: channel `sms-us` unreachable since 2026-12-02T10:42:05.120Z:
    /// connection refused"; such a campaign resumes by itself when the provider answers
    /// again) or the person's. Null unless paused.
    #[schema(
        example = "paused by the engine: channel `sms-us` unreachable since 2026-12-02T10:42:05.120Z: connection refused"
    )]
    pub paused_reason: Option<String>,
    /// The auto-pause setting in force: `20%/500` (paused by the engine when more than 20 %
    /// of the last 500 outcomes failed permanently) or `off`.
    #[schema(example = "20%/500")]
    pub auto_pause: String,
    /// Where it comes from: the campaign's own setting, its organisation's default
    /// (`herald org set --auto-pause`), or Herald's default (20%/500).
    pub auto_pause_source: AutoPauseSource,
    /// The campaign this one was made from (a resend or a duplicate); null otherwise.
    pub parent: Option<CampaignParent>,
    /// The WhatsApp template it sends, with the contact field for each parameter; null
    /// when it sends its body.
    pub whatsapp_template: Option<WhatsAppTemplate>,
    /// On an SMTP channel: the email's subject, HTML part, sender name and reply-to
    /// (docs/EMAIL.md); null when the body is sent as plain text, its first line the
    /// subject.
    pub email: Option<EmailContent>,
    /// The send window in force: the local times of each recipient (`08:00-21:00`, with the
    /// zone of recipients whose own is unknown when not UTC); null when it sends at any
    /// hour. docs/CAMPAIGNS.md, "Send windows".
    #[schema(example = "08:00-21:00 Europe/Lisbon")]
    pub send_window: Option<String>,
    /// Where it comes from: `campaign` (its own), `organisation` (its default), or `none`.
    #[schema(example = "organisation")]
    pub send_window_source: String,
    /// Messages its send window holds now (queued, no attempt spent) and when the first
    /// of them may go; null when none waits.
    pub waiting: Option<CampaignWaiting>,
    /// When its message rows were archived (`message_retention_days`, docs/CAMPAIGNS.md
    /// "Retention"): its counters, outcome, failure groups and export stay; its message
    /// list answers 410 and points at the export. Null while it has message rows.
    pub archived_at: Option<String>,
}

/// Messages a send window holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignWaiting {
    pub messages: i64,
    /// When the window opens for the first of them (RFC 3339).
    pub until: String,
}

/// A `send_window` field: a window (returned in its canonical form), `off`, or `inherit`
/// (None: the organisation's, for a campaign).
pub fn send_window_field(value: &str) -> ApiResult<Option<String>> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("inherit") {
        return Ok(None);
    }
    if value.eq_ignore_ascii_case("off") {
        return Ok(Some("off".to_string()));
    }
    crate::send_window::SendWindow::parse(value)
        .map(|w| Some(w.to_string()))
        .map_err(|e| ApiError::invalid("send_window", "send_window", e))
}

/// The campaign a resend or a duplicate was made from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignParent {
    #[schema(example = "cmp_1")]
    pub id: String,
    pub kind: Derivation,
}

/// An `auto_pause` field: `PERCENT%/WINDOW`, `off`, or `inherit` (None: the
/// organisation's default).
fn auto_pause_field(value: &str) -> ApiResult<Option<AutoPause>> {
    if value.trim().eq_ignore_ascii_case("inherit") {
        return Ok(None);
    }
    value
        .parse::<AutoPause>()
        .map(Some)
        .map_err(|e| ApiError::invalid("auto_pause", "format", format!("{e}, or inherit")))
}

/// A page of campaigns.
#[derive(Debug, Serialize, ToSchema)]
pub struct Campaigns {
    pub items: Vec<Campaign>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The share of messages no longer pending, rounded to 4 decimals.
pub(super) fn progress(c: &CampaignRow) -> f64 {
    if c.total <= 0 {
        return if c.status == CampaignStatus::Completed {
            1.0
        } else {
            0.0
        };
    }
    let done = (c.total - c.counts.pending()).max(0) as f64 / c.total as f64;
    (done.clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0
}

/// The full view of a campaign, with the stuck detector's verdict.
pub(crate) async fn view(state: &ApiState, c: CampaignRow) -> ApiResult<Campaign> {
    let stuck = stuck(state, &c).await?;
    let waiting = if matches!(c.status, CampaignStatus::Sending | CampaignStatus::Paused)
        && c.send_window.effective().is_some()
    {
        let w = state
            .store
            .campaign_waiting(c.id, crate::clock::now_ms())
            .await?;
        w.until.map(|until| CampaignWaiting {
            messages: w.messages,
            until: timestamp(until),
        })
    } else {
        None
    };
    let paused_reason = if c.status == CampaignStatus::Paused {
        state.store.paused_reason(c.id).await?
    } else {
        None
    };
    Ok(Campaign {
        id: c.id.to_string(),
        outcome: c.outcome,
        progress: progress(&c),
        counters: CampaignCounters::from(&c.counts),
        status: c.status,
        channel_id: c.channel_id.to_string(),
        channel_name: c.channel_name,
        channel_kind: c.channel_kind,
        list_id: c.list_id.to_string(),
        list_name: c.list_name,
        name: c.name,
        body: c.body,
        total: c.total,
        in_doubt_total: c.in_doubt_total,
        clicked: c.clicked,
        clicks: c.clicks,
        replies: c.replies,
        created_at: timestamp(c.created_at),
        scheduled_at: timestamp_opt(c.scheduled_at),
        started_at: timestamp_opt(c.started_at),
        completed_at: timestamp_opt(c.completed_at),
        last_progress_at: timestamp_opt(c.last_progress_at),
        stuck,
        paused_reason,
        auto_pause: c.auto_pause.effective.to_string(),
        auto_pause_source: c.auto_pause.source,
        parent: c.parent.map(|(id, kind)| CampaignParent {
            id: id.to_string(),
            kind,
        }),
        whatsapp_template: c.whatsapp_template,
        email: c.email,
        send_window: c.send_window.effective().map(str::to_string),
        send_window_source: c.send_window.source().to_string(),
        waiting,
        archived_at: timestamp_opt(c.archived_at),
    })
}

/// The engine's stuck rule for one campaign (`engine::health::stuck_campaigns`, with its
/// reasons, but reading only this campaign): sending, with pending work, and no progress
/// for `stuck_after_ms`.
async fn stuck(state: &ApiState, c: &CampaignRow) -> ApiResult<Option<CampaignStuck>> {
    let settings = state.settings.as_ref();
    let pending = c.counts.pending();
    if c.status != CampaignStatus::Sending || pending == 0 {
        return Ok(None);
    }
    let now = crate::clock::now_ms();
    let last = c.last_progress_at.or(c.started_at).unwrap_or(c.created_at);
    if now - last < i64::try_from(settings.stuck_after_ms).unwrap_or(i64::MAX) {
        return Ok(None);
    }
    if crate::engine::health::waiting_for_window(&state.store, c.id, pending, now).await? {
        return Ok(None);
    }
    let instances = state.store.instances().await?;
    let alive = crate::engine::health::live(&instances, now, settings);
    let reason = crate::engine::health::stuck_reason(
        &state.store,
        c.id,
        &c.channel_name,
        &c.counts,
        &alive,
        &instances,
    )
    .await?;
    Ok(Some(CampaignStuck {
        reason,
        no_progress_since: timestamp(last),
        pending,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignStats {
    #[schema(example = "cmp_1")]
    pub id: String,
    pub status: CampaignStatus,
    /// How the campaign came out, once completed or cancelled; null until then.
    pub outcome: Option<CampaignOutcome>,
    pub total: i64,
    pub counters: CampaignCounters,
    /// The share of messages no longer pending, from 0 to 1.
    pub progress: f64,
    /// Messages handed to the provider (sent, delivered, read, undelivered) or failed, per
    /// second, averaged from the start to now (to the last progress once paused, to the end
    /// once ended).
    pub throughput_per_sec: f64,
    /// Messages in doubt right now.
    pub in_doubt: i64,
    /// Messages ever found in doubt.
    pub in_doubt_total: i64,
    pub started_at: Option<String>,
    pub last_progress_at: Option<String>,
    pub completed_at: Option<String>,
    /// Milliseconds from the start to now (or to the end).
    pub elapsed_ms: Option<i64>,
    pub stuck: Option<CampaignStuck>,
    /// Failed and undelivered messages grouped by reason, the largest group first; the
    /// counts add up to `counters.failed + counters.undelivered`.
    pub failures: Vec<FailureGroup>,
    /// Clicks on the campaign's tracked links, in all and per link.
    pub clicks: super::campaign_clicks::ClickStats,
}

fn attempted(c: &Counts) -> i64 {
    [
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Undelivered,
        MessageStatus::Failed,
    ]
    .into_iter()
    .map(|s| c.get(s))
    .sum()
}

/// Run time and average rate: cheap, from the campaign row alone.
fn throughput(c: &CampaignRow, now: i64) -> (Option<i64>, f64) {
    let Some(started) = c.started_at else {
        return (None, 0.0);
    };
    let end = match c.status {
        CampaignStatus::Sending => now,
        CampaignStatus::Paused => c.last_progress_at.unwrap_or(now),
        _ => c.completed_at.or(c.last_progress_at).unwrap_or(now),
    };
    let elapsed = (end - started).max(0);
    let rate = attempted(&c.counts) as f64 * 1000.0 / elapsed.max(1) as f64;
    (Some(elapsed), (rate * 100.0).round() / 100.0)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignMessage {
    #[schema(example = "msg_1")]
    pub id: String,
    pub address: String,
    pub status: MessageStatus,
    /// Send attempts so far.
    pub attempts: i64,
    /// The provider's id for the message, once sent.
    pub provider_id: Option<String>,
    /// Why the last attempt failed, or why it was skipped or cancelled, as the provider
    /// or Herald said it (the same text as `error.detail`). Null once the message is
    /// `sent`, `delivered` or `read`: a message that reached its recipient shows no
    /// earlier attempt's error.
    pub last_error: Option<String>,
    /// The failure explained: a stable code, one readable line and what to do, with the
    /// raw text as `detail`. Null when `last_error` is.
    pub error: Option<MessageError>,
    /// The message was in doubt at some time (its recipient may have it twice).
    pub was_in_doubt: bool,
    /// For `retry_wait`: when the next attempt is due.
    pub next_attempt_at: Option<String>,
    pub updated_at: String,
    pub sent_at: Option<String>,
    /// Counted clicks on its tracked links (docs/CAMPAIGNS.md, "Link tracking").
    pub clicks: i64,
}

/// A message's failure, explained (`reasons`).
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageError {
    /// Stable key for the kind of failure: `twilio.30003`, `whatsapp.131026`, `smtp.550`,
    /// `network.refused`, `http.503`, `suppressed`, `cancelled`, `template`, `other`, ...
    #[schema(example = "twilio.30003")]
    pub code: String,
    /// What happened, in one line.
    #[schema(example = "Unreachable handset: the phone is off or out of coverage; retried later")]
    pub reason: String,
    /// What to do about it.
    #[schema(example = "Nothing to do; if it persists the number may be inactive.")]
    pub action: String,
    /// The provider's (or Herald's) own words.
    #[schema(example = "twilio 30003: Unreachable destination handset")]
    pub detail: String,
}

impl MessageError {
    /// The explained error a message shows in its status: none for a message that reached
    /// its recipient (an earlier attempt's failure is history, not its state).
    pub fn shown(status: MessageStatus, raw: Option<String>) -> Option<MessageError> {
        let e = crate::reasons::shown(status, raw.as_deref())?;
        let raw = raw.unwrap_or_default();
        Some(MessageError {
            code: e.code,
            reason: e.reason,
            action: e.action,
            detail: raw,
        })
    }
}

/// Failed and undelivered messages of one kind (`error.code` of their messages).
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureGroup {
    #[schema(example = "twilio.30005")]
    pub code: String,
    #[schema(example = "Unknown or inactive number")]
    pub reason: String,
    #[schema(example = "Remove or correct the contact's number.")]
    pub action: String,
    /// Messages that failed this way.
    pub count: i64,
}

/// A campaign's failed and undelivered messages grouped by reason, the largest group first.
pub(crate) async fn failure_groups(
    state: &ApiState,
    campaign_id: CampaignId,
) -> ApiResult<Vec<FailureGroup>> {
    let texts = state.store.failure_texts(campaign_id).await?;
    Ok(crate::reasons::group(texts)
        .into_iter()
        .map(|(e, count)| FailureGroup {
            code: e.code,
            reason: e.reason,
            action: e.action,
            count,
        })
        .collect())
}

impl From<MessageInfo> for CampaignMessage {
    fn from(m: MessageInfo) -> CampaignMessage {
        let error = MessageError::shown(m.status, m.last_error);
        CampaignMessage {
            id: m.id.to_string(),
            next_attempt_at: (m.status == MessageStatus::RetryWait)
                .then(|| timestamp(m.next_attempt_at)),
            status: m.status,
            address: m.address.to_string(),
            attempts: m.attempts,
            provider_id: m.provider_id,
            last_error: error.as_ref().map(|e| e.detail.clone()),
            error,
            was_in_doubt: m.was_in_doubt,
            updated_at: timestamp(m.updated_at),
            sent_at: timestamp_opt(m.sent_at),
            clicks: m.clicks,
        }
    }
}

/// A page of a campaign's messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignMessages {
    pub items: Vec<CampaignMessage>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One entry of a campaign's audit trail: who moved it from which status to which, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignAuditEvent {
    #[schema(example = "evt_1")]
    pub id: String,
    pub at: String,
    /// `user:EMAIL`, `api_key:NAME`, `scheduler@INSTANCE`, `reconciler`, ...
    #[schema(example = "api_key:deploy")]
    pub actor: String,
    /// Null for the creation.
    #[schema(value_type = Option<CampaignStatus>)]
    pub from: Option<String>,
    #[schema(value_type = CampaignStatus)]
    pub to: String,
    pub reason: String,
}

impl From<CampaignEvent> for CampaignAuditEvent {
    fn from(e: CampaignEvent) -> CampaignAuditEvent {
        CampaignAuditEvent {
            id: e.id.to_string(),
            at: timestamp(e.at),
            actor: e.actor,
            from: e.from_status,
            to: e.to_status,
            reason: e.reason,
        }
    }
}

/// A page of a campaign's audit trail, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignAudit {
    pub items: Vec<CampaignAuditEvent>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

// --------------------------------------------------------------------------------------
// Requests and validation
// --------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    #[schema(example = "December newsletter")]
    pub name: String,
    #[schema(example = "chn_1")]
    pub channel_id: String,
    #[schema(example = "lst_1")]
    pub list_id: String,
    /// The message template, e.g. `Hi {{ name }}`: every variable must be one the list's
    /// contacts have.
    #[schema(example = "Hi {{ name }}, our December sale starts today")]
    pub body: String,
    /// Start automatically at this time (RFC 3339); the campaign is then `scheduled` rather
    /// than `draft`. It must be in the future: a time that has passed is refused with 409
    /// `not-in-future`.
    #[schema(example = "2030-12-01T09:00:00Z")]
    pub scheduled_at: Option<String>,
    /// Auto-pause on failure rate: `PERCENT%/WINDOW` (pause when more than PERCENT % of
    /// the last WINDOW outcomes, 10 to 100000, failed permanently), `off`, or `inherit`
    /// (the default: the organisation's setting, else 20%/500).
    #[schema(
        example = "20%/500",
        max_length = 16,
        pattern = r"^(off|inherit|[1-9][0-9]?%/([1-9][0-9]{1,4}|100000))$"
    )]
    pub auto_pause: Option<String>,
    /// On a WhatsApp channel: the approved template to send and the contact field for each
    /// of its body parameters. Checked at create (name, language, fields of the list, and,
    /// when the channel has a `business_account_id`, with Meta: it exists in that
    /// language, is approved and takes that many parameters). The body stays Herald's text
    /// of the message, for previews and the estimate.
    pub whatsapp_template: Option<WhatsAppTemplate>,
    /// On an SMTP channel: the email's subject, HTML part, sender name and reply-to, each
    /// a template (docs/EMAIL.md). The body is then the plain-text part; it may be empty
    /// when there is an HTML part, and the text is derived from each recipient's HTML.
    pub email: Option<EmailContent>,
    /// Send only between these local times of each recipient (docs/CAMPAIGNS.md, "Send
    /// windows"): `HH:MM-HH:MM`, optionally followed by the IANA zone of recipients whose
    /// own zone is unknown (else UTC); `off` for none; `inherit` (the default) for the
    /// organisation's.
    #[schema(
        example = "08:00-21:00 Europe/Lisbon",
        max_length = 80,
        pattern = r"^(off|inherit|([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)( [A-Za-z][A-Za-z0-9_+/-]{0,59})?)$"
    )]
    pub send_window: Option<String>,
}

/// `null` as `Some(None)` (clear it) and absent as `None` (leave it).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Changes to a draft; fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignChange {
    pub name: Option<String>,
    pub body: Option<String>,
    pub channel_id: Option<String>,
    pub list_id: Option<String>,
    /// The WhatsApp template (as at create), or null to send the body instead.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<WhatsAppTemplate>)]
    pub whatsapp_template: Option<Option<WhatsAppTemplate>>,
    /// The email parts (as at create), or null to send the body as plain text again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<EmailContent>)]
    pub email: Option<Option<EmailContent>>,
    /// Auto-pause on failure rate: `PERCENT%/WINDOW`, `off`, or `inherit` (the
    /// organisation's setting). Unlike the other fields it can change until the campaign
    /// ends, e.g. to turn it off while sending; the failure window restarts.
    #[schema(
        example = "off",
        max_length = 16,
        pattern = r"^(off|inherit|[1-9][0-9]?%/([1-9][0-9]{1,4}|100000))$"
    )]
    pub auto_pause: Option<String>,
    /// The send window (as at create: a window, `off` or `inherit`). Like `auto_pause` it
    /// can change until the campaign ends; the messages it holds are looked at again at
    /// once.
    #[schema(
        example = "09:00-20:00",
        max_length = 80,
        pattern = r"^(off|inherit|([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)( [A-Za-z][A-Za-z0-9_+/-]{0,59})?)$"
    )]
    pub send_window: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSchedule {
    /// When to start (RFC 3339). It must be in the future: a time that has passed is
    /// refused with 409 `not-in-future`.
    #[schema(example = "2030-12-01T09:00:00Z")]
    pub at: String,
}

/// Why, for the audit trail (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignActionReason {
    #[schema(example = "copy needs a fix")]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignListQuery {
    /// The `next_cursor` of the previous page, unchanged; omit for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only campaigns in this status.
    #[param(value_type = Option<CampaignStatus>)]
    pub status: Option<String>,
    /// `oldest` first (the default) or `newest` first; a cursor continues the order of the
    /// page that gave it.
    #[param(inline)]
    pub order: Option<CampaignOrder>,
}

/// The order of a list of campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CampaignOrder {
    Oldest,
    Newest,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageListQuery {
    /// The `next_cursor` of the previous page, unchanged; omit for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only messages in this status.
    #[param(value_type = Option<MessageStatus>)]
    pub status: Option<String>,
}

fn page(cursor: Option<String>, limit: Option<i64>) -> PageParams {
    PageParams { cursor, limit }
}

/// A query parameter that is not one of its values: 400, naming it.
fn bad_query(field: &str, detail: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid-query",
        title: "A query parameter is not valid",
        ..ApiError::invalid(field, "one_of", detail)
    }
}

fn campaign_status_param(s: Option<&str>) -> ApiResult<Option<CampaignStatus>> {
    s.map(|s| {
        CampaignStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = CampaignStatus::ALL.iter().map(|s| s.as_str()).collect();
            bad_query(
                "status",
                format!(
                    "`{s}` is not a campaign status: use one of {}",
                    all.join(", ")
                ),
            )
        })
    })
    .transpose()
}

fn message_status_param(s: Option<&str>) -> ApiResult<Option<MessageStatus>> {
    s.map(|s| {
        MessageStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = MessageStatus::ALL.iter().map(|s| s.as_str()).collect();
            bad_query(
                "status",
                format!(
                    "`{s}` is not a message status: use one of {}",
                    all.join(", ")
                ),
            )
        })
    })
    .transpose()
}

/// A template's length and syntax. Line breaks are allowed; other control characters are
/// not (they would go out in every message).
fn check_body(body: &str) -> ApiResult<MessageTemplate> {
    if body.trim().is_empty() {
        return Err(ApiError::invalid("body", "required", "must not be empty"));
    }
    if body.chars().count() > MAX_BODY {
        return Err(ApiError::invalid(
            "body",
            "max_length",
            format!("must be at most {MAX_BODY} characters"),
        ));
    }
    if body
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(ApiError::invalid(
            "body",
            "format",
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    MessageTemplate::compile(body)
        .map_err(|e| ApiError::invalid("body", e.rule("template"), e.to_string()))
}

/// [`check_body`], then a trial render with placeholders on the render pool, so a body
/// that runs into a render limit (`{{ (range(3)|list) * 100000000 }}`) is refused before
/// any sender renders it: 422 with the limit as the rule.
async fn check_body_renders(state: &ApiState, body: &str) -> ApiResult<MessageTemplate> {
    let template = check_body(body)?;
    crate::tracked_links::check_trackable(
        template.links(),
        state.settings.public_url.as_deref(),
        state.settings.secret_key.as_deref(),
    )
    .map_err(|e| ApiError::invalid("body", "link_tracking", e))?;
    let (template, limits) = render_off_thread(move || {
        let limits = template.check_limits();
        (template, limits)
    })
    .await
    .map_err(|e| render_problem("body", e))?;
    limits.map_err(|e| render_problem("body", e))?;
    Ok(template)
}

/// The body of a campaign with these email parts: [`check_body_renders`], except that an
/// empty body is the HTML part's text when there is one.
async fn check_campaign_body(
    state: &ApiState,
    body: &str,
    email: Option<&EmailContent>,
) -> ApiResult<MessageTemplate> {
    if email.is_some_and(|e| e.derives_text(body)) {
        return MessageTemplate::compile("")
            .map_err(|e| ApiError::invalid("body", e.rule("template"), e.to_string()));
    }
    check_body_renders(state, body).await
}

/// A template that cannot render: 422 naming the field and, for a resource limit, the
/// limit as the rule.
fn render_problem(field: &str, e: TemplateError) -> ApiError {
    ApiError::invalid(field, e.rule("render"), e.to_string())
}

/// An id in a request body that must name something of the caller's organisation: 422
/// naming the field otherwise (malformed, missing, or another organisation's).
fn not_there(field: &str, what: &str, value: &str) -> ApiError {
    ApiError::invalid(
        field,
        "exists",
        format!("there is no {what} `{value}` in your organisation"),
    )
}

async fn channel_ref(state: &ApiState, p: &Principal, value: &str) -> ApiResult<ChannelInfo> {
    let id = decode::<ChannelId>(value).map_err(|_| not_there("channel_id", "channel", value))?;
    state
        .store
        .api_campaign_channel(p.org_id, id)
        .await?
        .ok_or_else(|| not_there("channel_id", "channel", value))
}

async fn list_ref(state: &ApiState, p: &Principal, value: &str) -> ApiResult<ListInfo> {
    let id = decode::<ListId>(value).map_err(|_| not_there("list_id", "list", value))?;
    state
        .store
        .api_campaign_list(p.org_id, id)
        .await?
        .ok_or_else(|| not_there("list_id", "list", value))
}

async fn contact_ref(state: &ApiState, p: &Principal, value: &str) -> ApiResult<ContactInput> {
    let id = decode::<ContactId>(value).map_err(|_| not_there("contact_id", "contact", value))?;
    state
        .store
        .api_campaign_contact(p.org_id, id)
        .await?
        .ok_or_else(|| not_there("contact_id", "contact", value))
}

/// Every variable of the template must be one the list's contacts have (as the CLI checks).
async fn check_variables(
    state: &ApiState,
    template: &MessageTemplate,
    list_id: ListId,
    list_name: &str,
    field: &str,
) -> ApiResult<()> {
    let known = state.store.list_attribute_keys(list_id).await?;
    template
        .check_variables(&known, list_name)
        .map_err(|e| ApiError::invalid(field, "unknown_variable", e.to_string()))
}

/// A campaign's WhatsApp template (`channels::template_check`), as problems of the
/// `whatsapp_template` field; 503 when Meta could not be asked.
async fn check_whatsapp_template(
    state: &ApiState,
    template: &WhatsAppTemplate,
    channel: &ChannelInfo,
    list_id: ListId,
    list_name: &str,
) -> ApiResult<()> {
    use crate::channels::template_check::{TemplateProblem, check_whatsapp_template as check};
    match check(
        &state.store,
        &state.context,
        template,
        channel,
        list_id,
        list_name,
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(TemplateProblem::Invalid { rule, message }) => {
            Err(ApiError::invalid("whatsapp_template", rule, message))
        }
        Err(e @ TemplateProblem::Unavailable(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "template-check-unavailable",
            "Meta could not be asked about the template",
            e.to_string(),
        )),
        Err(TemplateProblem::Store(e)) => Err(e.into()),
    }
}

/// An RFC 3339 time in the future. A well-formed time that has passed is 409 `not-in-future`
/// (with the field in `errors`), not 422: the document states the format, and no schema can
/// state "after now"; the request is valid, the clock has moved past it.
fn future_time(field: &str, value: &str) -> ApiResult<i64> {
    let at =
        crate::clock::parse_rfc3339(value).map_err(|e| ApiError::invalid(field, "format", e))?;
    if at <= crate::clock::now_ms() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            kind: "not-in-future",
            title: "The time is not in the future",
            ..ApiError::invalid(
                field,
                "future",
                format!("`{value}` is not in the future: to start now, POST …/start"),
            )
        });
    }
    Ok(at)
}

/// The optional `{"reason": …}` body of an action.
fn action_reason(body: &Bytes) -> ApiResult<Option<String>> {
    // No body, or `null` (the document's body is optional): no reason.
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(None);
    }
    let parsed: CampaignActionReason = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            let detail = e.to_string();
            let field = detail.split('`').nth(1).unwrap_or("reason").to_string();
            ApiError::invalid(&field, "type", detail)
        } else {
            ApiError::bad_request("malformed-json", format!("the body is not valid JSON: {e}"))
        }
    })?;
    parsed
        .reason
        .map(|r| check_text("reason", &r, MAX_REASON))
        .transpose()
}

pub(super) async fn owned_status(
    state: &ApiState,
    p: &Principal,
    id: &str,
) -> ApiResult<(CampaignId, CampaignStatus)> {
    let id = decode::<CampaignId>(id)?;
    let status = state.store.api_campaign_status(p.org_id, id).await?;
    Ok((id, status))
}

/// 409 when the action does not apply to the campaign's status, saying what it applies to
/// (the store checks again under its lock: this only words the common case).
fn allowed(id: CampaignId, status: CampaignStatus, action: CampaignAction) -> ApiResult<()> {
    if action.allowed_from().contains(&status) {
        return Ok(());
    }
    let from: Vec<&str> = action.allowed_from().iter().map(|s| s.as_str()).collect();
    Err(ApiError::conflict(format!(
        "campaign {id} is {status}: `{}` applies only to a campaign that is {}",
        action.as_str(),
        from.join(" or ")
    )))
}

// --------------------------------------------------------------------------------------
// Handlers
// --------------------------------------------------------------------------------------

/// Campaigns of the organisation, oldest first, or newest first with `order=newest`.
#[utoipa::path(get, path = "/campaigns", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(CampaignListQuery),
    responses(
        (status = 200, body = Campaigns),
        (status = 400, description = "A bad cursor, limit or status", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_campaigns(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(q): ApiQuery<CampaignListQuery>,
) -> ApiResult<axum::Json<Campaigns>> {
    let status = campaign_status_param(q.status.as_deref())?;
    let params = page(q.cursor, q.limit);
    let limit = params.limit()?;
    let after = params.after_id()?;
    let rows = if q.order == Some(CampaignOrder::Newest) {
        // The cursor names the last campaign of the previous page; the next is older.
        let before = params.cursor.is_some().then_some(after);
        state
            .store
            .api_campaigns_newest_first(p.org_id, status, before, limit + 1)
            .await?
    } else {
        state
            .store
            .api_campaigns(p.org_id, status, after, limit + 1)
            .await?
    };
    let page = Page::from_rows(rows, limit, |c| c.id, |c| c);
    let mut items = Vec::with_capacity(page.items.len());
    for c in page.items {
        items.push(view(&state, c).await?);
    }
    Ok(axum::Json(Campaigns {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// Create a campaign: a draft, or scheduled when `scheduled_at` is given. The channel and
/// list must be the organisation's, and the template must compile and use only variables
/// the list's contacts have.
#[utoipa::path(post, path = "/campaigns", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect")),
    request_body = NewCampaign,
    responses(
        (status = 201, body = Campaign, headers(("Location" = String, description = "The new campaign"))),
        (status = 422, description = "A field breaks a rule, the channel or list is not the organisation's, or the template does not compile", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiJson(body): ApiJson<NewCampaign>,
) -> ApiResult<Response> {
    let name = check_name("name", &body.name)?;
    let template = check_campaign_body(&state, &body.body, body.email.as_ref()).await?;
    let scheduled_at = body
        .scheduled_at
        .as_deref()
        .map(|at| future_time("scheduled_at", at))
        .transpose()?;
    let auto_pause = body
        .auto_pause
        .as_deref()
        .map(auto_pause_field)
        .transpose()?
        .flatten();
    let send_window = body
        .send_window
        .as_deref()
        .map(send_window_field)
        .transpose()?
        .flatten();
    let channel = channel_ref(&state, &p, &body.channel_id).await?;
    let list = list_ref(&state, &p, &body.list_id).await?;
    check_variables(&state, &template, list.id, &list.name, "body").await?;
    if let Some(t) = &body.whatsapp_template {
        check_whatsapp_template(&state, t, &channel, list.id, &list.name).await?;
    }
    if let Some(e) = &body.email {
        check_email(&state, e, &channel, list.id, &list.name, template.links()).await?;
    }
    let id = state
        .store
        .create_campaign(
            &NewCampaignRow {
                org_id: p.org_id,
                name,
                channel_id: channel.id,
                list_id: list.id,
                body: body.body,
                scheduled_at,
                whatsapp_template: body.whatsapp_template,
                email: body.email,
                send_window,
            },
            &p.actor,
        )
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %id,
        actor = p.actor,
        scheduled = scheduled_at.is_some(),
        "campaign created"
    );
    if auto_pause.is_some() {
        state
            .store
            .set_campaign_auto_pause(p.org_id, id, auto_pause)
            .await?;
    }
    let c = state.store.api_campaign(p.org_id, id).await?;
    let location = format!("/api/v1/campaigns/{}", id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view(&state, c).await?),
    )
        .into_response())
}

/// One campaign: status, counters, progress, and whether it is stuck (and why).
#[utoipa::path(get, path = "/campaigns/{id}", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = Campaign),
    ))]
async fn get_campaign(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<Campaign>> {
    let id = decode::<CampaignId>(&id)?;
    let c = state.store.api_campaign(p.org_id, id).await?;
    Ok(axum::Json(view(&state, c).await?))
}

/// Edit a draft's or a scheduled campaign's name, template, channel or list (a scheduled
/// campaign stays scheduled). Once a campaign has started it cannot be edited (409),
/// except its `auto_pause`, which can change until it ends.
#[utoipa::path(patch, path = "/campaigns/{id}", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Campaign id")),
    request_body = CampaignChange,
    responses(
        (status = 200, body = Campaign),
        (status = 409, description = "The campaign has started (or, for auto_pause and send_window, has ended)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<CampaignChange>,
) -> ApiResult<axum::Json<Campaign>> {
    let id = decode::<CampaignId>(&id)?;
    let auto_pause = change
        .auto_pause
        .as_deref()
        .map(auto_pause_field)
        .transpose()?;
    let send_window = change
        .send_window
        .as_deref()
        .map(send_window_field)
        .transpose()?;
    let drafts_only = change.name.is_some()
        || change.body.is_some()
        || change.channel_id.is_some()
        || change.list_id.is_some()
        || change.whatsapp_template.is_some()
        || change.email.is_some();
    let mut current = state.store.api_campaign(p.org_id, id).await?;
    let editable = matches!(
        current.status,
        CampaignStatus::Draft | CampaignStatus::Scheduled
    );
    if drafts_only && !editable {
        return Err(ApiError::conflict(format!(
            "campaign {} is {}: only a draft or a scheduled campaign can be edited (its auto_pause and send_window alone can change until it ends)",
            id, current.status
        )));
    }
    if let Some(setting) = auto_pause {
        state
            .store
            .set_campaign_auto_pause(p.org_id, id, setting)
            .await?;
        tracing::info!(
            org_id = %p.org_id,
            campaign_id = %id,
            actor = p.actor,
            auto_pause = %setting.map_or("inherit".to_string(), |s| s.to_string()),
            "campaign auto-pause setting changed"
        );
        current = state.store.api_campaign(p.org_id, id).await?;
    }
    if let Some(window) = &send_window {
        state
            .store
            .set_campaign_send_window(p.org_id, id, window.as_deref(), crate::clock::now_ms())
            .await?;
        tracing::info!(
            org_id = %p.org_id,
            campaign_id = %id,
            actor = p.actor,
            send_window = window.as_deref().unwrap_or("inherit"),
            "campaign send window changed"
        );
        current = state.store.api_campaign(p.org_id, id).await?;
    }
    if !drafts_only {
        return Ok(axum::Json(view(&state, current).await?));
    }

    let name = change
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    // The email parts as they will be: an empty body is the HTML's text only with them.
    let final_email = match &change.email {
        Some(e) => e.as_ref(),
        None => current.email.as_ref(),
    };
    let template = match change.body.as_deref() {
        Some(body) => Some(check_campaign_body(&state, body, final_email).await?),
        None => None,
    };
    if change.body.is_none()
        && change.email.is_some()
        && current.body.trim().is_empty()
        && !final_email.is_some_and(|e| e.derives_text(&current.body))
    {
        return Err(ApiError::invalid(
            "email",
            "required",
            "the body is empty, so the plain text comes from the HTML part: keep email.html, or give a body too",
        ));
    }
    let channel = match change.channel_id.as_deref() {
        Some(v) => Some(channel_ref(&state, &p, v).await?),
        None => None,
    };
    let list = match change.list_id.as_deref() {
        Some(v) => Some(list_ref(&state, &p, v).await?),
        None => None,
    };
    let body_changed = template.is_some();
    // The body as it will be (the current one passed these checks when it was written; an
    // empty one is an HTML email's derived text).
    let template = match template {
        Some(t) => t,
        None => MessageTemplate::compile(&current.body)
            .map_err(|e| ApiError::invalid("body", e.rule("template"), e.to_string()))?,
    };
    if body_changed || list.is_some() {
        let (list_id, list_name) = match &list {
            Some(l) => (l.id, l.name.as_str()),
            None => (current.list_id, current.list_name.as_str()),
        };
        let field = if change.body.is_some() {
            "body"
        } else {
            "list_id"
        };
        check_variables(&state, &template, list_id, list_name, field).await?;
    }
    // The WhatsApp template and the email parts as they will be, checked against the
    // channel and list as they will be, when any of them changes.
    let final_template = match &change.whatsapp_template {
        Some(t) => t.as_ref(),
        None => current.whatsapp_template.as_ref(),
    };
    let check_template = final_template
        .filter(|_| change.whatsapp_template.is_some() || channel.is_some() || list.is_some());
    let check_parts = final_email.filter(|_| {
        change.email.is_some() || change.body.is_some() || channel.is_some() || list.is_some()
    });
    if check_template.is_some() || check_parts.is_some() {
        let final_channel = match &channel {
            Some(c) => c.clone(),
            None => {
                state
                    .store
                    .org_channel(p.org_id, current.channel_id)
                    .await?
            }
        };
        let (list_id, list_name) = match &list {
            Some(l) => (l.id, l.name.as_str()),
            None => (current.list_id, current.list_name.as_str()),
        };
        if let Some(t) = check_template {
            check_whatsapp_template(&state, t, &final_channel, list_id, list_name).await?;
        }
        if let Some(e) = check_parts {
            check_email(
                &state,
                e,
                &final_channel,
                list_id,
                list_name,
                template.links(),
            )
            .await?;
        }
    }
    if name.is_none()
        && change.body.is_none()
        && channel.is_none()
        && list.is_none()
        && change.whatsapp_template.is_none()
        && change.email.is_none()
    {
        return Ok(axum::Json(view(&state, current).await?));
    }
    let c = state
        .store
        .api_campaign_update_draft(
            p.org_id,
            id,
            &DraftEdit {
                name: name.as_deref(),
                body: change.body.as_deref(),
                channel_id: channel.map(|c| c.id),
                list_id: list.map(|l| l.id),
                whatsapp_template: change.whatsapp_template.as_ref().map(Option::as_ref),
                email: change.email.as_ref().map(Option::as_ref),
            },
            &p.actor,
        )
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %id,
        actor = p.actor,
        "campaign edited"
    );
    Ok(axum::Json(view(&state, c).await?))
}

/// Delete a draft. A campaign that was scheduled or started stays (cancel it instead).
#[utoipa::path(delete, path = "/campaigns/{id}", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The campaign is not a draft", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = decode::<CampaignId>(&id)?;
    state.store.api_campaign_delete_draft(p.org_id, id).await?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %id,
        actor = p.actor,
        "campaign deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Pause, resume, cancel or mark complete, through the store's state machine.
async fn act(
    state: &ApiState,
    p: &Principal,
    id: &str,
    action: CampaignAction,
    body: &Bytes,
) -> ApiResult<axum::Json<Campaign>> {
    let (id, status) = owned_status(state, p, id).await?;
    allowed(id, status, action)?;
    let reason = action_reason(body)?;
    state
        .store
        .transition(
            id,
            action,
            crate::clock::now_ms(),
            &p.actor,
            reason.as_deref(),
        )
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %id,
        actor = p.actor,
        action = action.as_str(),
        "campaign action"
    );
    let c = state.store.api_campaign(p.org_id, id).await?;
    Ok(axum::Json(view(state, c).await?))
}

/// Start sending now (a draft or scheduled campaign): one message per distinct address of
/// the list is created; unsubscribed, suppressed and unusable addresses are skipped.
#[utoipa::path(post, path = "/campaigns/{id}/start", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    responses(
        (status = 200, body = Campaign),
        (status = 409, description = "The campaign is not a draft or scheduled", body = Problem, content_type = "application/problem+json"),
    ))]
async fn start_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<Campaign>> {
    let (id, status) = owned_status(&state, &p, &id).await?;
    allowed(id, status, CampaignAction::Start)?;
    match state
        .store
        .start_campaign(id, crate::clock::now_ms(), &p.actor, None)
        .await?
    {
        StartOutcome::Started { messages, .. } => {
            tracing::info!(
                org_id = %p.org_id,
                campaign_id = %id,
                actor = p.actor,
                messages,
                "campaign started"
            );
        }
        StartOutcome::NotDue => {
            return Err(ApiError::conflict(format!(
                "campaign {} changed while it was being started (another request started or cancelled it): GET it to see its status",
                id
            )));
        }
    }
    let c = state.store.api_campaign(p.org_id, id).await?;
    Ok(axum::Json(view(&state, c).await?))
}

/// Schedule a draft (or move a scheduled campaign) to start at `at`.
#[utoipa::path(post, path = "/campaigns/{id}/schedule", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect"),
    ),
    request_body = CampaignSchedule,
    responses(
        (status = 200, body = Campaign),
        (status = 409, description = "The campaign is not a draft or scheduled", body = Problem, content_type = "application/problem+json"),
    ))]
async fn schedule_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CampaignSchedule>,
) -> ApiResult<axum::Json<Campaign>> {
    let (id, _) = owned_status(&state, &p, &id).await?;
    let at = future_time("at", &body.at)?;
    let c = state
        .store
        .api_campaign_schedule(p.org_id, id, at, &p.actor)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        campaign_id = %id,
        actor = p.actor,
        at = body.at,
        "campaign scheduled"
    );
    Ok(axum::Json(view(&state, c).await?))
}

/// Pause a sending campaign: no new messages are claimed; sends in flight finish.
#[utoipa::path(post, path = "/campaigns/{id}/pause", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Campaign id")),
    request_body = Option<CampaignActionReason>,
    responses(
        (status = 200, body = Campaign),
        (status = 409, description = "The campaign is not sending", body = Problem, content_type = "application/problem+json"),
    ))]
async fn pause_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Campaign>> {
    act(&state, &p, &id, CampaignAction::Pause, &body).await
}

/// Resume a paused campaign.
#[utoipa::path(post, path = "/campaigns/{id}/resume", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Campaign id")),
    request_body = Option<CampaignActionReason>,
    responses(
        (status = 200, body = Campaign),
        (status = 409, description = "The campaign is not paused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn resume_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Campaign>> {
    act(&state, &p, &id, CampaignAction::Resume, &body).await
}

/// Cancel a campaign that has not ended: unsent messages are cancelled; sends in flight
/// finish and are recorded.
#[utoipa::path(post, path = "/campaigns/{id}/cancel", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Campaign id")),
    request_body = Option<CampaignActionReason>,
    responses(
        (status = 200, body = Campaign),
        (status = 409, description = "The campaign has already ended", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Campaign>> {
    act(&state, &p, &id, CampaignAction::Cancel, &body).await
}

/// Mark a sending or paused campaign complete by hand; refused while any message is
/// pending.
#[utoipa::path(post, path = "/campaigns/{id}/complete", tag = "campaigns",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "Campaign id")),
    request_body = Option<CampaignActionReason>,
    responses(
        (status = 200, body = Campaign),
        (status = 409, description = "The campaign is not sending or paused, or messages are pending", body = Problem, content_type = "application/problem+json"),
    ))]
async fn complete_campaign(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Campaign>> {
    act(&state, &p, &id, CampaignAction::Complete, &body).await
}

/// Counters, progress, throughput, messages in doubt and whether the campaign is stuck.
#[utoipa::path(get, path = "/campaigns/{id}/stats", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = CampaignStats),
    ))]
async fn campaign_stats(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<CampaignStats>> {
    let id = decode::<CampaignId>(&id)?;
    let c = state.store.api_campaign(p.org_id, id).await?;
    let (elapsed_ms, throughput_per_sec) = throughput(&c, crate::clock::now_ms());
    let stuck = stuck(&state, &c).await?;
    let failures = failure_groups(&state, c.id).await?;
    let clicks =
        super::campaign_clicks::click_stats(&state, p.org_id, c.id, &c.counts, c.clicked, c.clicks)
            .await?;
    Ok(axum::Json(CampaignStats {
        id: c.id.to_string(),
        status: c.status,
        outcome: c.outcome,
        total: c.total,
        counters: CampaignCounters::from(&c.counts),
        progress: progress(&c),
        throughput_per_sec,
        in_doubt: c.counts.get(MessageStatus::InDoubt),
        in_doubt_total: c.in_doubt_total,
        started_at: timestamp_opt(c.started_at),
        last_progress_at: timestamp_opt(c.last_progress_at),
        completed_at: timestamp_opt(c.completed_at),
        elapsed_ms,
        stuck,
        failures,
        clicks,
    }))
}

/// One minute of a campaign's sending history.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThroughputPoint {
    /// The start of the minute (UTC).
    #[schema(example = "2026-12-01T09:00:00.000Z")]
    pub minute: String,
    /// Messages recorded as handed to the provider in that minute.
    pub sent: i64,
    /// Messages recorded as failed in that minute.
    pub failed: i64,
}

/// A campaign's stored throughput history.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignThroughput {
    #[schema(example = "cmp_1")]
    pub id: String,
    /// Minutes with at least one message recorded as sent or failed, oldest first (minutes
    /// without any are left out: nothing was recorded then).
    pub minutes: Vec<ThroughputPoint>,
}

/// Per-minute counts of messages recorded as sent or failed, kept by the engine as it
/// records outcomes: the whole history of a campaign, also once it has ended.
#[utoipa::path(get, path = "/campaigns/{id}/throughput", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = CampaignThroughput),
    ))]
async fn campaign_throughput(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<CampaignThroughput>> {
    let id = decode::<CampaignId>(&id)?;
    let c = state.store.api_campaign(p.org_id, id).await?;
    let minutes = state.store.campaign_throughput(c.id).await?;
    Ok(axum::Json(CampaignThroughput {
        id: c.id.to_string(),
        minutes: minutes
            .into_iter()
            .map(|m| ThroughputPoint {
                minute: timestamp(m.minute),
                sent: m.sent,
                failed: m.failed,
            })
            .collect(),
    }))
}

/// The campaign's messages in creation order, optionally of one status.
#[utoipa::path(get, path = "/campaigns/{id}/messages", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id"), MessageListQuery),
    responses(
        (status = 200, body = CampaignMessages),
        (status = 400, description = "A bad cursor, limit or status", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The campaign's messages were archived (`message_retention_days`): its export has every one", body = Problem, content_type = "application/problem+json"),
    ))]
async fn campaign_messages(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessageListQuery>,
) -> ApiResult<axum::Json<CampaignMessages>> {
    let (id, _) = owned_status(&state, &p, &id).await?;
    let status = message_status_param(q.status.as_deref())?;
    let params = page(q.cursor, q.limit);
    let limit = params.limit()?;
    let rows = state
        .store
        .api_campaign_messages(p.org_id, id, status, params.after_id()?, limit + 1)
        .await?;
    // After the rows: an archive that began meanwhile is seen here, so no page is ever a
    // part of the messages that reads as all of them.
    archived_messages_gone(&state, p.org_id, id).await?;
    let page = Page::from_rows(rows, limit, |m| m.id, CampaignMessage::from);
    Ok(axum::Json(CampaignMessages {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// 410 once the campaign's message rows are (being) archived: the list reads rows, the
/// export reads the archive.
async fn archived_messages_gone(
    state: &ApiState,
    org_id: crate::ids::OrgId,
    id: CampaignId,
) -> ApiResult<()> {
    let when = match state.store.archive_state(org_id, id).await? {
        crate::store::ArchiveState::None => return Ok(()),
        crate::store::ArchiveState::Begun => "are being archived".to_string(),
        crate::store::ArchiveState::Archived(at) => format!("were archived at {}", timestamp(at)),
    };
    Err(ApiError::new(
        StatusCode::GONE,
        "gone",
        "The resource was deleted",
        format!(
            "campaign {id}'s message rows {when} (message_retention_days); its counters, outcome and failure groups stay, and GET /api/v1/campaigns/{id}/messages.csv (`herald campaign export`) has every message"
        ),
    ))
}

/// The campaign's audit trail, oldest first: every change of status (and every edit of a
/// draft), who made it and why.
#[utoipa::path(get, path = "/campaigns/{id}/audit", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id"), PageParams),
    responses(
        (status = 200, body = CampaignAudit),
        (status = 400, description = "A bad cursor or limit", body = Problem, content_type = "application/problem+json"),
    ))]
async fn campaign_audit(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<CampaignAudit>> {
    let (id, _) = owned_status(&state, &p, &id).await?;
    let limit = params.limit()?;
    let rows = state
        .store
        .api_campaign_events(p.org_id, id, params.after_id()?, limit + 1)
        .await?;
    let page = Page::from_rows(rows, limit, |e| e.id, CampaignAuditEvent::from);
    Ok(axum::Json(CampaignAudit {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

// --------------------------------------------------------------------------------------
// Previews
// --------------------------------------------------------------------------------------

/// How an SMS body goes over the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmsEncoding {
    /// The GSM 03.38 alphabet: 160 characters in one segment, 153 per segment once split.
    Gsm7,
    /// Anything else: 70 characters in one segment, 67 per segment once split.
    Ucs2,
}

/// A template rendered for one contact (or with placeholders).
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplatePreview {
    #[schema(example = "Hi Ada, see you in Paris")]
    pub rendered: String,
    /// Unicode characters in the rendered message.
    pub characters: i64,
    /// SMS segments the message takes (what SMS providers bill); null for channels that
    /// do not send SMS.
    pub segments: Option<u32>,
    /// The SMS encoding; null for channels that do not send SMS.
    pub encoding: Option<SmsEncoding>,
    /// With email parts: the email as the recipient gets it (`rendered` is then its
    /// plain-text part).
    pub email: Option<EmailPreview>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePreviewRequest {
    #[schema(example = "Hi {{ name }}, see you in {{ city }}")]
    pub body: String,
    /// Render for this contact; without one, every variable shows as its name in capitals.
    #[schema(example = "con_1")]
    pub contact_id: Option<String>,
    /// Count SMS segments as this channel would send the message; without one, they are
    /// counted as for SMS.
    #[schema(example = "chn_1")]
    pub channel_id: Option<String>,
    /// Email parts to render too (as a campaign's `email`); the body may then be empty
    /// when there is an HTML part.
    pub email: Option<EmailContent>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// The contact to render the message for.
    #[param(required = true, example = "con_1")]
    pub contact_id: Option<String>,
}

/// Whether a channel of the stored `kind` sends SMS, billed by segment (its descriptor
/// says; a kind this herald does not know does not).
fn sends_sms(kind: &str) -> bool {
    kind.parse::<crate::channel_kind::ChannelKind>()
        .is_ok_and(|k| k.counts_sms_segments())
}

fn preview_of(rendered: String, sms: bool) -> TemplatePreview {
    let (segments, encoding) = if sms {
        let s = sms_segments(&rendered);
        let encoding = match s.encoding {
            Encoding::Gsm7 => SmsEncoding::Gsm7,
            Encoding::Ucs2 => SmsEncoding::Ucs2,
        };
        (Some(s.segments), Some(encoding))
    } else {
        (None, None)
    };
    TemplatePreview {
        characters: i64::try_from(rendered.chars().count()).unwrap_or(i64::MAX),
        rendered,
        segments,
        encoding,
        email: None,
    }
}

/// Render on the render pool (never on the thread serving this request); for a contact, or
/// with placeholders when there is none.
async fn render_for(
    template: MessageTemplate,
    contact: Option<ContactInput>,
) -> Result<String, TemplateError> {
    render_off_thread(move || match &contact {
        Some(contact) => template.render(&ContactFields {
            address: contact.address.as_str(),
            name: contact.name.as_deref(),
            attributes: &contact.attributes,
        }),
        None => template.render_placeholder(),
    })
    .await?
}

/// The campaign's message as one contact of the organisation would get it, with its
/// length and (for SMS channels) segments and encoding.
#[utoipa::path(get, path = "/campaigns/{id}/preview", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id"), PreviewQuery),
    responses(
        (status = 200, body = TemplatePreview),
        (status = 400, description = "`contact_id` is missing", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such contact in the organisation, or the message cannot be rendered for it", body = Problem, content_type = "application/problem+json"),
    ))]
async fn preview_campaign(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> ApiResult<axum::Json<TemplatePreview>> {
    let id = decode::<CampaignId>(&id)?;
    let c = state.store.api_campaign(p.org_id, id).await?;
    let contact_id = q.contact_id.ok_or_else(|| ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid-query",
        title: "A query parameter is not valid",
        ..ApiError::invalid(
            "contact_id",
            "required",
            "name the contact to render the message for: `?contact_id=con_…`",
        )
    })?;
    let contact = contact_ref(&state, &p, &contact_id).await?;
    if let Some(email) = c.email {
        return email_preview(email, c.body, Some(contact), "contact_id").await;
    }
    let template = MessageTemplate::compile(&c.body).map_err(|e| {
        ApiError::conflict(format!("the campaign's template does not compile: {e}"))
    })?;
    let rendered = render_for(template, Some(contact))
        .await
        .map_err(|e| render_problem("contact_id", e))?;
    Ok(axum::Json(preview_of(rendered, sends_sms(&c.channel_kind))))
}

/// An email preview as a [`TemplatePreview`]: `rendered` is the plain-text part.
async fn email_preview(
    email: EmailContent,
    body: String,
    contact: Option<ContactInput>,
    field: &str,
) -> ApiResult<axum::Json<TemplatePreview>> {
    let preview = render_email(email, body, contact)
        .await
        .map_err(|e| ApiError::invalid(field, "render", e))?;
    Ok(axum::Json(TemplatePreview {
        characters: i64::try_from(preview.text.chars().count()).unwrap_or(i64::MAX),
        rendered: preview.text.clone(),
        segments: None,
        encoding: None,
        email: Some(preview),
    }))
}

/// Render a template before any campaign exists (the editor's live preview): for a
/// contact, or with placeholders. Changes nothing.
#[utoipa::path(post, path = "/templates/preview", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    request_body = TemplatePreviewRequest,
    responses(
        (status = 200, body = TemplatePreview),
        (status = 422, description = "The template does not compile or render, or the contact or channel is not the organisation's", body = Problem, content_type = "application/problem+json"),
    ))]
async fn preview_template(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiJson(req): ApiJson<TemplatePreviewRequest>,
) -> ApiResult<axum::Json<TemplatePreview>> {
    if let Some(email) = req.email {
        email
            .compile()
            .map_err(|e| ApiError::invalid(e.field, e.rule, e.message))?;
        if !email.derives_text(&req.body) {
            check_body(&req.body)?;
        }
        let contact = match req.contact_id.as_deref() {
            Some(v) => Some(contact_ref(&state, &p, v).await?),
            None => None,
        };
        let field = if contact.is_some() {
            "contact_id"
        } else {
            "email"
        };
        return email_preview(email, req.body, contact, field).await;
    }
    let template = check_body(&req.body)?;
    let sms = match req.channel_id.as_deref() {
        Some(v) => sends_sms(&channel_ref(&state, &p, v).await?.kind),
        None => true,
    };
    let rendered = match req.contact_id.as_deref() {
        Some(v) => {
            let contact = contact_ref(&state, &p, v).await?;
            render_for(template, Some(contact))
                .await
                .map_err(|e| render_problem("contact_id", e))?
        }
        None => render_for(template, None)
            .await
            .map_err(|e| render_problem("body", e))?,
    };
    Ok(axum::Json(preview_of(rendered, sms)))
}
