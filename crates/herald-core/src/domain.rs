//! Campaign and message state machines: the statuses of docs/DESIGN.md, which moves are legal,
//! and the per-status counters every campaign carries.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

// docs/DESIGN.md, "Message lifecycle". The API document names it `MessageState`; the
// doc comment below is its description there.
/// Where a message is: `queued`, `in_flight`, `retry_wait` and `in_doubt` are pending; the
/// others are final (receipts may still move `sent` on to `delivered`, `read`, ...).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(as = MessageState)]
pub enum MessageStatus {
    Queued,
    InFlight,
    RetryWait,
    Sent,
    Delivered,
    Read,
    Undelivered,
    Failed,
    Skipped,
    Cancelled,
    InDoubt,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 11] = [
        MessageStatus::Queued,
        MessageStatus::InFlight,
        MessageStatus::RetryWait,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Undelivered,
        MessageStatus::Failed,
        MessageStatus::Skipped,
        MessageStatus::Cancelled,
        MessageStatus::InDoubt,
    ];

    /// The column name used both for the status value and for the campaign's counter.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::InFlight => "in_flight",
            MessageStatus::RetryWait => "retry_wait",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Undelivered => "undelivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Skipped => "skipped",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::InDoubt => "in_doubt",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        MessageStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// Pending work: the campaign cannot complete while any message is in one of these.
    pub const fn is_pending(self) -> bool {
        matches!(
            self,
            MessageStatus::Queued
                | MessageStatus::InFlight
                | MessageStatus::RetryWait
                | MessageStatus::InDoubt
        )
    }

    /// Rank for provider receipts: a receipt applies only if it moves a message to a
    /// strictly higher rank, so duplicated, late or out-of-order receipts are harmless.
    pub const fn receipt_rank(self) -> Option<u8> {
        match self {
            MessageStatus::Sent => Some(1),
            MessageStatus::Delivered | MessageStatus::Undelivered | MessageStatus::Failed => {
                Some(2)
            }
            MessageStatus::Read => Some(3),
            _ => None,
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// The API document names it `CampaignState`; the doc comment below is its description there.
/// Where a campaign is in its life: `draft -> scheduled -> sending <-> paused -> completed`,
/// and `cancelled` from any status that has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = CampaignState)]
pub enum CampaignStatus {
    Draft,
    Scheduled,
    Sending,
    Paused,
    Completed,
    Cancelled,
}

impl CampaignStatus {
    pub const ALL: [CampaignStatus; 6] = [
        CampaignStatus::Draft,
        CampaignStatus::Scheduled,
        CampaignStatus::Sending,
        CampaignStatus::Paused,
        CampaignStatus::Completed,
        CampaignStatus::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Scheduled => "scheduled",
            CampaignStatus::Sending => "sending",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Completed => "completed",
            CampaignStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<CampaignStatus> {
        CampaignStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub const fn is_terminal(self) -> bool {
        matches!(self, CampaignStatus::Completed | CampaignStatus::Cancelled)
    }
}

impl fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a terminal campaign came out (null until it ends). The rule, `CampaignOutcome::of`:
///
/// 1. ended by cancellation ⇒ `cancelled` (whatever was sent before);
/// 2. else nothing reached a recipient (`sent + delivered + read == 0`) and something failed
///    (`failed + undelivered > 0`) ⇒ `failed`;
/// 3. else something failed or was undelivered ⇒ `partially_failed`;
/// 4. else ⇒ `succeeded`.
///
/// Skipped messages (unsubscribed, suppressed, unusable address) are decisions, not failures:
/// a campaign whose every recipient was skipped, and a campaign with no recipient at all, come
/// out `succeeded` with nothing sent; their counters say so. Receipts that arrive after a
/// campaign completed (a `sent` message later `undelivered`) move the counters, and the
/// outcome of a `completed` campaign follows them by the same rule.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CampaignOutcome {
    /// Nothing failed or was undelivered.
    Succeeded,
    /// Some messages reached their recipients, some failed or were undelivered.
    PartiallyFailed,
    /// Nothing reached a recipient, and at least one message failed or was undelivered.
    Failed,
    /// The campaign was cancelled.
    Cancelled,
}

impl CampaignOutcome {
    pub const ALL: [CampaignOutcome; 4] = [
        CampaignOutcome::Succeeded,
        CampaignOutcome::PartiallyFailed,
        CampaignOutcome::Failed,
        CampaignOutcome::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CampaignOutcome::Succeeded => "succeeded",
            CampaignOutcome::PartiallyFailed => "partially_failed",
            CampaignOutcome::Failed => "failed",
            CampaignOutcome::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<CampaignOutcome> {
        CampaignOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The outcome of a campaign that ended in `ended` (completed or cancelled) with these
    /// counters; None for a status that has not ended.
    pub fn of(ended: CampaignStatus, counts: &Counts) -> Option<CampaignOutcome> {
        match ended {
            CampaignStatus::Cancelled => Some(CampaignOutcome::Cancelled),
            CampaignStatus::Completed => {
                let reached = counts.get(MessageStatus::Sent)
                    + counts.get(MessageStatus::Delivered)
                    + counts.get(MessageStatus::Read);
                let failed =
                    counts.get(MessageStatus::Failed) + counts.get(MessageStatus::Undelivered);
                Some(if failed <= 0 {
                    CampaignOutcome::Succeeded
                } else if reached <= 0 {
                    CampaignOutcome::Failed
                } else {
                    CampaignOutcome::PartiallyFailed
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for CampaignOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CampaignOutcome::of` as a SQL expression over a `campaigns` row (its `status` and
/// counters), for the store's writes and migration 0009's backfill (which holds this very
/// text; a unit test checks both agree with `CampaignOutcome::of`).
pub const OUTCOME_SQL: &str = "CASE WHEN status = 'cancelled' THEN 'cancelled' \
WHEN status <> 'completed' THEN NULL \
WHEN failed + undelivered <= 0 THEN 'succeeded' \
WHEN sent + delivered + read <= 0 THEN 'failed' \
ELSE 'partially_failed' END";

/// An operator's (or the scheduler's) request to move a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignAction {
    Start,
    Pause,
    Resume,
    Cancel,
    /// The guarded manual "mark complete".
    Complete,
}

impl CampaignAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            CampaignAction::Start => "start",
            CampaignAction::Pause => "pause",
            CampaignAction::Resume => "resume",
            CampaignAction::Cancel => "cancel",
            CampaignAction::Complete => "complete",
        }
    }

    /// The statuses this action may be taken from.
    pub const fn allowed_from(self) -> &'static [CampaignStatus] {
        match self {
            CampaignAction::Start => &[CampaignStatus::Draft, CampaignStatus::Scheduled],
            CampaignAction::Pause => &[CampaignStatus::Sending],
            CampaignAction::Resume => &[CampaignStatus::Paused],
            CampaignAction::Cancel => &[
                CampaignStatus::Draft,
                CampaignStatus::Scheduled,
                CampaignStatus::Sending,
                CampaignStatus::Paused,
            ],
            CampaignAction::Complete => &[CampaignStatus::Sending, CampaignStatus::Paused],
        }
    }
}

/// How a campaign was made from another (docs/CAMPAIGNS.md).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Derivation {
    /// Sent again to the recipients of the parent whose messages ended in chosen statuses.
    Resend,
    /// A copy of the parent's settings, as a draft.
    Duplicate,
}

impl Derivation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Derivation::Resend => "resend",
            Derivation::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<Derivation> {
        [Derivation::Resend, Derivation::Duplicate]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// One counter per message status, indexed by `MessageStatus::index`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [i64; 11]);

impl Counts {
    pub fn get(&self, status: MessageStatus) -> i64 {
        self.0[status.index()]
    }

    pub fn add(&mut self, status: MessageStatus, n: i64) {
        self.0[status.index()] += n;
    }

    /// Record one message moving from `from` to `to`.
    pub fn moved(&mut self, from: MessageStatus, to: MessageStatus) {
        if from != to {
            self.add(from, -1);
            self.add(to, 1);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }

    pub fn total(&self) -> i64 {
        self.0.iter().sum()
    }

    pub fn pending(&self) -> i64 {
        MessageStatus::ALL
            .into_iter()
            .filter(|s| s.is_pending())
            .map(|s| self.get(s))
            .sum()
    }

    /// Messages Herald attempted and finished: sent, delivered, read, undelivered or
    /// failed. With the pending, skipped and cancelled ones it adds up to the total, so a
    /// campaign cancelled after 25 of 300 has processed 25, not 300.
    pub fn processed(&self) -> i64 {
        [
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Read,
            MessageStatus::Undelivered,
            MessageStatus::Failed,
        ]
        .into_iter()
        .map(|s| self.get(s))
        .sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (MessageStatus, i64)> + '_ {
        MessageStatus::ALL.into_iter().map(|s| (s, self.get(s)))
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, rhs: Counts) {
        for (a, b) in self.0.iter_mut().zip(rhs.0) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(s));
        }
        for s in CampaignStatus::ALL {
            assert_eq!(CampaignStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(MessageStatus::parse("bogus"), None);
    }

    #[test]
    fn index_matches_position_in_all() {
        for (i, s) in MessageStatus::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn moved_keeps_total_constant() {
        let mut c = Counts::default();
        c.add(MessageStatus::Queued, 3);
        c.moved(MessageStatus::Queued, MessageStatus::InFlight);
        c.moved(MessageStatus::InFlight, MessageStatus::Sent);
        assert_eq!(c.total(), 3);
        assert_eq!(c.pending(), 2);
        assert_eq!(c.get(MessageStatus::Sent), 1);
    }

    #[test]
    fn receipts_rank_above_sent_only() {
        assert!(MessageStatus::Queued.receipt_rank().is_none());
        assert!(MessageStatus::Read.receipt_rank() > MessageStatus::Delivered.receipt_rank());
        assert_eq!(
            MessageStatus::Undelivered.receipt_rank(),
            MessageStatus::Delivered.receipt_rank()
        );
    }
}

/// What a user or API key may do in its organisation. Ordered: each role can do everything
/// the roles below it can.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything in the organisation, changes nothing.
    Viewer,
    /// Also manages contacts, lists, suppressions and campaigns, and runs campaigns.
    Editor,
    /// Also manages channels, users and API keys (up to its own role).
    Admin,
    /// Also manages owners.
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Editor, Role::Admin, Role::Owner];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The row id spelled by `digits` in its one canonical form: ASCII decimal digits, no sign,
/// no leading zero, at least 1 (ids start at 1). Anything else names nothing, so a cached,
/// logged or rate-limited id has exactly one spelling (`cmp_01`, `cmp_+1` and `013.<mac>`
/// are not `cmp_1` and `13.<mac>`).
pub fn canonical_id(digits: &str) -> Option<i64> {
    let canonical = !digits.is_empty()
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    if !canonical {
        return None;
    }
    digits.parse::<i64>().ok()
}

#[cfg(test)]
mod canonical_id_tests {
    use super::canonical_id;

    #[test]
    fn only_plain_decimal_without_leading_zero_is_an_id() {
        assert_eq!(canonical_id("1"), Some(1));
        assert_eq!(canonical_id("9223372036854775807"), Some(i64::MAX));
        for spelling in [
            "",
            "0",
            "01",
            "00",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1_0",
            "١",
            "9223372036854775808",
        ] {
            assert_eq!(canonical_id(spelling), None, "{spelling:?}");
        }
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(pairs: &[(MessageStatus, i64)]) -> Counts {
        let mut c = Counts::default();
        for (s, n) in pairs {
            c.add(*s, *n);
        }
        c
    }

    #[test]
    fn the_four_end_states() {
        use CampaignOutcome as O;
        use MessageStatus as M;
        let done = CampaignStatus::Completed;
        assert_eq!(
            CampaignOutcome::of(done, &counts(&[(M::Sent, 3)])),
            Some(O::Succeeded)
        );
        assert_eq!(
            CampaignOutcome::of(done, &counts(&[(M::Delivered, 2), (M::Undelivered, 1)])),
            Some(O::PartiallyFailed)
        );
        assert_eq!(
            CampaignOutcome::of(done, &counts(&[(M::Failed, 300)])),
            Some(O::Failed)
        );
        assert_eq!(
            CampaignOutcome::of(done, &counts(&[(M::Undelivered, 2), (M::Skipped, 5)])),
            Some(O::Failed)
        );
        assert_eq!(
            CampaignOutcome::of(
                CampaignStatus::Cancelled,
                &counts(&[(M::Sent, 25), (M::Cancelled, 275)])
            ),
            Some(O::Cancelled)
        );
        // Skipped-only and empty campaigns: nothing failed.
        assert_eq!(
            CampaignOutcome::of(done, &counts(&[(M::Skipped, 4)])),
            Some(O::Succeeded)
        );
        assert_eq!(
            CampaignOutcome::of(done, &Counts::default()),
            Some(O::Succeeded)
        );
        for s in [
            CampaignStatus::Draft,
            CampaignStatus::Scheduled,
            CampaignStatus::Sending,
            CampaignStatus::Paused,
        ] {
            assert_eq!(CampaignOutcome::of(s, &counts(&[(M::Sent, 1)])), None);
        }
        for o in CampaignOutcome::ALL {
            assert_eq!(CampaignOutcome::parse(o.as_str()), Some(o));
        }
    }

    proptest! {
        #[test]
        fn outcome_follows_the_rule(raw in proptest::collection::vec(0i64..4, 11), cancelled: bool) {
            let mut c = Counts::default();
            for (s, n) in MessageStatus::ALL.into_iter().zip(raw) {
                c.add(s, n);
            }
            let ended = if cancelled { CampaignStatus::Cancelled } else { CampaignStatus::Completed };
            let o = CampaignOutcome::of(ended, &c);
            let reached = c.get(MessageStatus::Sent) + c.get(MessageStatus::Delivered) + c.get(MessageStatus::Read);
            let failed = c.get(MessageStatus::Failed) + c.get(MessageStatus::Undelivered);
            prop_assert!(o.is_some());
            if cancelled {
                prop_assert_eq!(o, Some(CampaignOutcome::Cancelled));
            } else {
                prop_assert_ne!(o, Some(CampaignOutcome::Cancelled));
                // Succeeded exactly when nothing failed; failed only when nothing reached.
                prop_assert_eq!(o == Some(CampaignOutcome::Succeeded), failed == 0);
                if o == Some(CampaignOutcome::Failed) {
                    prop_assert!(reached == 0 && failed > 0);
                }
                if o == Some(CampaignOutcome::PartiallyFailed) {
                    prop_assert!(reached > 0 && failed > 0);
                }
            }
        }
    }
}
