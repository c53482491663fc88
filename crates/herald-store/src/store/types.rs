//! Rows and requests that cross the storage interface.

use crate::address::Address;
use crate::domain::{CampaignStatus, Counts, MessageStatus};
use crate::ids::{CampaignId, ChannelId, ContactId, EventId, ListId, MessageId, OrgId};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    /// An illegal transition or a refused operation; the message says what would be right.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the database holds something this herald cannot read: {0}")]
    Corrupt(String),
    #[error(
        "cannot reach the database at {url}: {reason}; check that it is running and that the URL is right"
    )]
    Connect { url: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub(super) fn connect(url: &str, e: sqlx::Error) -> StoreError {
        StoreError::Connect {
            url: super::redact_url(url),
            reason: e.to_string(),
        }
    }

    pub(super) fn from_unique(e: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(message())
            }
            _ => StoreError::Database(e),
        }
    }

    /// Worth retrying: the database is busy, restarting, unreachable for a moment, or chose
    /// this transaction as a deadlock or serialization victim. The write was not applied.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => {
                    let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                    // SQLite: 5 BUSY, 6 LOCKED (and their extended codes, low byte).
                    // PostgreSQL: 40001 serialization, 40P01 deadlock, 57P0x shutdown,
                    // 08xxx connection exceptions, 53300 too many connections.
                    let sqlite_busy = code
                        .parse::<i64>()
                        .map(|c| matches!(c & 0xff, 5 | 6))
                        .unwrap_or(false);
                    sqlite_busy
                        || code == "40001"
                        || code == "40P01"
                        || code.starts_with("57P")
                        || code.starts_with("08")
                        || code == "53300"
                }
                _ => false,
            },
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Organisation {
    pub id: OrgId,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct ListInfo {
    pub id: ListId,
    pub name: String,
    pub members: i64,
}

#[derive(Debug, Clone)]
pub struct ContactInput {
    pub address: Address,
    pub name: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// None leaves an existing contact's flag as it is.
    pub unsubscribed: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertReport {
    pub inserted: u64,
    pub updated: u64,
}

#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub id: ChannelId,
    pub org_id: OrgId,
    pub name: String,
    pub kind: String,
    pub config: serde_json::Value,
    /// Sealed credentials (`secrets::seal`).
    pub secrets: Option<String>,
    pub rate_per_sec: Option<f64>,
    /// What a unit (an SMS segment, or a message) costs, for the estimate; None: unknown.
    pub pricing: Option<crate::pricing::Pricing>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub org_id: OrgId,
    pub name: String,
    pub channel_id: ChannelId,
    pub list_id: ListId,
    pub body: String,
    pub scheduled_at: Option<i64>,
    /// On a WhatsApp channel: the approved template it sends, and the contact field for
    /// each parameter.
    pub whatsapp_template: Option<crate::whatsapp_template::WhatsAppTemplate>,
    /// On an SMTP channel: its subject, HTML part, sender name and reply-to.
    pub email: Option<crate::email_content::EmailContent>,
    /// Its own send window (`08:00-21:00[ ZONE]`, or `off`); None: its organisation's.
    pub send_window: Option<String>,
}

/// A campaign's send window (docs/CAMPAIGNS.md, "Send windows"): its own setting (a window,
/// `off`, or None to take its organisation's) and its organisation's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendWindowSetting {
    pub campaign: Option<String>,
    pub organisation: Option<String>,
}

impl SendWindowSetting {
    /// The text `off` that turns an organisation's window off for one campaign.
    pub const OFF: &'static str = "off";

    /// The window in force, if any.
    pub fn effective(&self) -> Option<&str> {
        match self.campaign.as_deref() {
            Some(Self::OFF) => None,
            Some(own) => Some(own),
            None => self.organisation.as_deref(),
        }
    }

    /// Where the window in force comes from: `campaign`, `organisation`, or `none`.
    pub fn source(&self) -> &'static str {
        match (self.campaign.as_deref(), &self.organisation) {
            (Some(Self::OFF), _) | (None, None) => "none",
            (Some(_), _) => "campaign",
            (None, Some(_)) => "organisation",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: CampaignId,
    pub org_id: OrgId,
    pub name: String,
    pub channel_id: ChannelId,
    pub channel_name: String,
    pub channel_kind: String,
    pub list_id: ListId,
    pub list_name: String,
    pub body: String,
    pub status: CampaignStatus,
    pub scheduled_at: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub last_progress_at: Option<i64>,
    pub total: i64,
    pub counts: Counts,
    pub in_doubt_total: i64,
    /// Counted clicks on its tracked links, and how many of its messages were clicked.
    pub clicks: i64,
    pub clicked: i64,
    /// Inbound messages whose sender it was the last campaign sent to (docs/INBOX.md).
    pub replies: i64,
    /// How it came out; None until it is completed or cancelled.
    pub outcome: Option<crate::domain::CampaignOutcome>,
    /// Its auto-pause setting and the one in force (its own, its organisation's, Herald's).
    pub auto_pause: crate::store::autopause::AutoPauseSetting,
    /// The campaign it was made from, and how (a resend or a duplicate).
    pub parent: Option<(CampaignId, crate::domain::Derivation)>,
    /// Its WhatsApp template, when it names one.
    pub whatsapp_template: Option<crate::whatsapp_template::WhatsAppTemplate>,
    /// Its email parts, when it has them.
    pub email: Option<crate::email_content::EmailContent>,
    /// Its send window, its own and its organisation's.
    pub send_window: SendWindowSetting,
    /// When the last of its message rows moved to the archive (docs/CAMPAIGNS.md,
    /// "Retention"); its messages are then read from there.
    pub archived_at: Option<i64>,
    /// Its archive has begun (some or all of its messages are in it).
    pub archive_begun: bool,
}

#[derive(Debug, Clone)]
pub struct CampaignEvent {
    pub id: EventId,
    pub campaign_id: CampaignId,
    pub at: i64,
    pub actor: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct MessageInfo {
    pub id: MessageId,
    pub campaign_id: CampaignId,
    pub address: Address,
    pub status: MessageStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub owner: Option<String>,
    pub provider_id: Option<String>,
    pub last_error: Option<String>,
    pub was_in_doubt: bool,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
    /// Counted clicks on its tracked links.
    pub clicks: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    Started {
        messages: i64,
        queued: i64,
        skipped: i64,
        /// Nothing was left to send, so the start also completed it.
        completed: bool,
    },
    /// The scheduler's conditional start found the campaign no longer scheduled and due
    /// (another instance started it, or it was cancelled or rescheduled).
    NotDue,
}

#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The process start time from /proc, so a restarted pid is not mistaken for it.
    pub proc_start: Option<String>,
    pub version: String,
    pub role: String,
    pub started_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub proc_start: Option<String>,
    pub version: String,
    pub role: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub in_flight: i64,
}

#[derive(Debug, Clone)]
pub struct SendableCampaign {
    pub id: CampaignId,
    pub org_id: OrgId,
    pub channel_id: ChannelId,
    pub body: String,
    pub whatsapp_template: Option<crate::whatsapp_template::WhatsAppTemplate>,
    pub email: Option<crate::email_content::EmailContent>,
    /// The send window in force (its own, else its organisation's), as stored.
    pub send_window: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: MessageId,
    pub campaign_id: CampaignId,
    pub contact_id: Option<ContactId>,
    pub address: Address,
    /// Attempts including this one.
    pub attempts: i64,
    pub name: Option<String>,
    /// The contact's attributes as JSON text.
    pub attributes: String,
    /// Why the address is suppressed, if it was suppressed after the campaign started:
    /// suppression is checked again at send time.
    pub suppressed: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    Sent {
        provider_id: String,
    },
    /// Transient: try again at `next_attempt_at`.
    Retry {
        error: String,
        next_attempt_at: i64,
    },
    /// Permanent, or attempts exhausted.
    Failed {
        error: String,
    },
    /// Claimed but never sent (graceful shutdown): back to `queued`, attempt refunded.
    Released,
    /// Outside its send window: back to `queued`, attempt refunded, held until the window
    /// opens (`until`) and looked at again at `next_look` (at most `until`).
    Held {
        until: i64,
        next_look: i64,
    },
    /// The provider may or may not have the message (timed out after the request left):
    /// the message is in doubt and the in-doubt policy decides.
    Unknown {
        error: String,
    },
    /// Not sent: the address was suppressed after the campaign started.
    Skipped {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub message_id: MessageId,
    pub campaign_id: CampaignId,
    /// The attempt number of the claim this outcome belongs to. When given, the outcome
    /// applies only if the message is still on that claim: a late outcome of an earlier
    /// claim (its owner was cut off, the message re-claimed) changes nothing.
    pub attempt: Option<i64>,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone, Default)]
pub struct RecordReport {
    pub applied: usize,
    /// Outcomes whose message was no longer in flight for this owner (taken back as in
    /// doubt after this instance was presumed dead): nothing changed for them.
    pub stale: usize,
    pub completed: Vec<CampaignId>,
    /// Campaigns the engine auto-paused in the same transaction (failure rate).
    pub auto_paused: Vec<crate::store::autopause::AutoPaused>,
    /// The batch's campaigns not sending when it committed (paused, cancelled, completed,
    /// auto-paused): the dispatcher hands back what it claimed ahead for them, unsent.
    pub not_sending: Vec<CampaignId>,
}

/// What an edit of a draft or scheduled campaign changes; None leaves a field as it is
/// (`Some(None)` clears a WhatsApp template or the email parts).
#[derive(Debug, Clone, Copy, Default)]
pub struct DraftEdit<'a> {
    pub name: Option<&'a str>,
    pub body: Option<&'a str>,
    pub channel_id: Option<ChannelId>,
    pub list_id: Option<ListId>,
    pub whatsapp_template: Option<Option<&'a crate::whatsapp_template::WhatsAppTemplate>>,
    pub email: Option<Option<&'a crate::email_content::EmailContent>>,
}

/// A provider's status for one of its message ids. Provider ids are unique per provider
/// account only, and a webhook speaks only for the channel it arrived on: a receipt applies
/// to that channel's messages and never to another's.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The channel whose provider reported it (a webhook's path, the sandbox's own id).
    pub channel_id: ChannelId,
    pub provider_id: String,
    pub status: MessageStatus,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptReport {
    pub applied: usize,
    pub ignored: usize,
    pub kept: usize,
}

#[derive(Debug, Clone, Default)]
pub struct InDoubtReport {
    pub resent: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub completed: Vec<CampaignId>,
}

/// Serialised as `herald doctor --json` shows it (the campaign as `cmp_2`).
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub campaign_id: CampaignId,
    pub status: MessageStatus,
    pub counter: i64,
    pub actual: i64,
}

#[derive(Debug, Clone)]
pub struct PendingFacts {
    pub next_retry_at: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SandboxEntry {
    pub channel_id: ChannelId,
    pub campaign_id: CampaignId,
    pub message_id: MessageId,
    pub address: Address,
    pub provider_id: String,
    pub body: String,
    pub received_at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SandboxStats {
    pub received: i64,
    pub distinct_recipients: i64,
    pub duplicates: i64,
}

#[derive(Debug, Clone)]
pub struct MigrationStatus {
    pub applied: Vec<i64>,
    pub missing: Vec<i64>,
    pub unknown: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenGrant {
    pub granted: f64,
    /// When short: how long until the missing tokens would have accrued.
    pub wait_ms: i64,
    /// The channel's current adaptive factor (1 = full configured rate).
    pub factor: f64,
}

/// A provider has a message in doubt after all: the channel that spoke for it, the message
/// and the provider's id for it (`Store::resolve_in_doubt_sent_many`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderHas {
    pub channel_id: ChannelId,
    pub message_id: MessageId,
    pub provider_id: String,
}

/// A message in doubt, with what its provider would need to find it.
#[derive(Debug, Clone)]
pub struct InDoubtCandidate {
    pub id: MessageId,
    pub campaign_id: CampaignId,
    pub channel_id: ChannelId,
    pub channel_kind: String,
    pub address: Address,
    /// When the decision is due (set when it was found in doubt; deferrals move it).
    pub in_doubt_at: i64,
    /// When it was found in doubt.
    pub marked_at: i64,
    pub template: String,
    pub name: Option<String>,
    pub attributes: String,
}
