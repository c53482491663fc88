//! Auto-pause on failure rate (issue 12): the engine pauses a sending campaign when more
//! than a threshold of its last N outcomes failed permanently, e.g. "20 % of the last 500".
//!
//! - The setting is per campaign, NULL inheriting the organisation's, NULL there inheriting
//!   Herald's default ([`DEFAULT`]); `off` turns it off at either level.
//! - The count is a sliding-window counter kept on the campaign row and moved in the
//!   transaction that records the outcomes (two small queries per campaign per batch, never a
//!   scan per message): the outcomes and failures of the current block of N, and the
//!   failures of the previous full block, weighted by the share of it still inside the last
//!   N. It is exact until the first N outcomes, and after that exact whenever failures are
//!   spread evenly within a block.
//! - Nothing is judged before the window is full (N outcomes since the campaign started or
//!   resumed): "20 % of the last 500" means 500, and fewer would pause healthy campaigns
//!   by chance (a campaign failing 14 % exceeds 20 % in 5 % of samples of 100). A campaign
//!   that wants a quicker verdict sets a smaller window.
//! - Only failures that say something about the recipient or the message count: those of
//!   an unreachable or failing provider (network errors, HTTP 5xx, rate limits, temporary
//!   errors given up on) pause through the outage path or are retried; suppressed, skipped
//!   and cancelled messages are not outcomes of a send.
//! - The pause is the conditional transition `sending → paused` in the same transaction,
//!   with the reason in the audit trail and a `campaign.auto_paused` event in the outbox, so
//!   exactly one instance pauses and exactly one event is written. Any transition back to
//!   sending (a person's resume, the outage probe's) restarts the window: the failures that
//!   caused the pause never pause the resumed campaign again.

use crate::domain::{CampaignStatus, MessageStatus};
use crate::events::EventType;
use crate::ids::{CampaignId, OrgId};
use crate::store::campaigns::lifecycle::insert_event;
use crate::store::events::outbox;
use crate::store::{Store, StoreError, Tx};
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// An auto-pause setting: off, or "more than `percent` % of the last `window` outcomes".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPause {
    Off,
    Rate { percent: u8, window: u32 },
}

/// Herald's default when neither the campaign nor its organisation sets one: 20 % of the
/// last 500. A healthy list fails a few percent (invalid numbers, full mailboxes); a fifth
/// failing permanently means a bad list, a bad template or a provider refusing the sender,
/// and 500 outcomes are enough that 20 % is not noise (the standard error of a 5 % failure
/// rate over 500 outcomes is 1 %).
pub const DEFAULT: AutoPause = AutoPause::Rate {
    percent: 20,
    window: 500,
};

/// The smallest and largest windows accepted.
pub const WINDOW_RANGE: std::ops::RangeInclusive<u32> = 10..=100_000;

impl AutoPause {
    /// The stored pair (percent, window); off is (0, 0).
    fn columns(self) -> (i64, i64) {
        match self {
            AutoPause::Off => (0, 0),
            AutoPause::Rate { percent, window } => (i64::from(percent), i64::from(window)),
        }
    }

    /// The setting stored as (percent, window), None when it inherits.
    fn from_columns(percent: Option<i64>, window: Option<i64>) -> Option<AutoPause> {
        match (percent, window) {
            (Some(0), _) => Some(AutoPause::Off),
            (Some(p), Some(w)) => Some(AutoPause::Rate {
                percent: u8::try_from(p).unwrap_or(99).clamp(1, 99),
                window: u32::try_from(w)
                    .unwrap_or(*WINDOW_RANGE.end())
                    .clamp(*WINDOW_RANGE.start(), *WINDOW_RANGE.end()),
            }),
            _ => None,
        }
    }
}

impl fmt::Display for AutoPause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AutoPause::Off => f.write_str("off"),
            AutoPause::Rate { percent, window } => write!(f, "{percent}%/{window}"),
        }
    }
}

impl FromStr for AutoPause {
    type Err = String;

    /// `20%/500` (more than 20 % of the last 500 outcomes failed permanently), or `off`.
    fn from_str(s: &str) -> Result<AutoPause, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(AutoPause::Off);
        }
        let usage = "write it as PERCENT%/WINDOW, e.g. 20%/500 (pause when more than 20 % of the last 500 outcomes failed permanently), or off";
        let Some((p, w)) = s.split_once('/') else {
            return Err(format!("auto-pause `{s}` is not a setting: {usage}"));
        };
        let p = p.trim().trim_end_matches('%').trim();
        let percent: u8 = p
            .parse()
            .ok()
            .filter(|p| (1..=99).contains(p))
            .ok_or_else(|| {
                format!("auto-pause percent `{p}` must be a whole number from 1 to 99: {usage}")
            })?;
        let w = w.trim();
        let window: u32 = w
            .parse()
            .ok()
            .filter(|w| WINDOW_RANGE.contains(w))
            .ok_or_else(|| {
                format!(
                    "auto-pause window `{w}` must be a whole number of outcomes from {} to {}: {usage}",
                    WINDOW_RANGE.start(),
                    WINDOW_RANGE.end()
                )
            })?;
        Ok(AutoPause::Rate { percent, window })
    }
}

/// Where a campaign's auto-pause setting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutoPauseSource {
    Campaign,
    Organisation,
    Default,
}

impl AutoPauseSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoPauseSource::Campaign => "campaign",
            AutoPauseSource::Organisation => "organisation",
            AutoPauseSource::Default => "default",
        }
    }
}

/// A campaign's setting: its own (None: inherit), and the one in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoPauseSetting {
    pub campaign: Option<AutoPause>,
    pub effective: AutoPause,
    pub source: AutoPauseSource,
}

fn resolve(campaign: Option<AutoPause>, org: Option<AutoPause>) -> AutoPauseSetting {
    let (effective, source) = match (campaign, org) {
        (Some(c), _) => (c, AutoPauseSource::Campaign),
        (None, Some(o)) => (o, AutoPauseSource::Organisation),
        (None, None) => (DEFAULT, AutoPauseSource::Default),
    };
    AutoPauseSetting {
        campaign,
        effective,
        source,
    }
}

/// A campaign's setting from a row with `auto_pause_percent`, `auto_pause_window` and its
/// organisation's as `org_auto_pause_percent`, `org_auto_pause_window`.
pub(in crate::store) fn setting_from_row(
    row: &sqlx::any::AnyRow,
) -> Result<AutoPauseSetting, StoreError> {
    Ok(resolve(
        AutoPause::from_columns(
            row.try_get("auto_pause_percent")?,
            row.try_get("auto_pause_window")?,
        ),
        AutoPause::from_columns(
            row.try_get("org_auto_pause_percent")?,
            row.try_get("org_auto_pause_window")?,
        ),
    ))
}

/// The rolling count of one campaign (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Outcomes in the current block.
    pub seen: i64,
    /// Permanent failures among them.
    pub failed: i64,
    /// Failures of the previous full block, scaled to one window.
    pub prev_failed: Option<i64>,
}

impl Window {
    /// Adds `outcomes` outcomes of which `failed` failed; a block that reaches `size`
    /// becomes the previous block.
    pub fn add(self, outcomes: i64, failed: i64, size: i64) -> Window {
        let size = size.max(1);
        let seen = self.seen + outcomes;
        let failed = self.failed + failed;
        if seen >= size {
            // A batch may overshoot the block: its rate, scaled to one window.
            Window {
                seen: 0,
                failed: 0,
                prev_failed: Some((failed * size + seen / 2) / seen),
            }
        } else {
            Window {
                seen,
                failed,
                prev_failed: self.prev_failed,
            }
        }
    }

    /// (failed, outcomes) over the last `size` outcomes.
    pub fn estimate(&self, size: i64) -> (i64, i64) {
        let size = size.max(1);
        match self.prev_failed {
            None => (self.failed, self.seen),
            Some(prev) => {
                let rest = size - self.seen;
                (self.failed + (prev * rest + size / 2) / size, size)
            }
        }
    }

    /// Whether the rate over the last `window` outcomes is above `percent`, once the
    /// window is full.
    pub fn exceeds(&self, percent: u8, window: u32) -> Option<(i64, i64)> {
        let (failed, outcomes) = self.estimate(i64::from(window));
        (outcomes >= i64::from(window)
            && outcomes > 0
            && failed * 100 > i64::from(percent) * outcomes)
            .then_some((failed, outcomes))
    }
}

/// Whether a permanent failure counts against the campaign's failure rate: not when it
/// says nothing about the recipient or the message (the provider could not be reached or
/// failed on its side, a rate limit, a temporary error given up on, a send in doubt), nor
/// a message that was never an attempt (suppressed, cancelled).
pub fn counts_against_rate(error: &str) -> bool {
    let code = crate::reasons::explain(error).code;
    !(code.starts_with("network.")
        || code.starts_with("http.5")
        || matches!(
            code.as_str(),
            "http.429" | "in_doubt" | "cancelled" | "suppressed" | "sandbox.transient"
        ))
}

/// Per campaign: (outcomes that count, permanent failures that count), from the statuses
/// messages were just moved to and their errors.
pub(in crate::store) fn tally(
    into: &mut BTreeMap<CampaignId, (i64, i64)>,
    campaign: CampaignId,
    status: MessageStatus,
    error: Option<&str>,
) {
    match status {
        MessageStatus::Sent => into.entry(campaign).or_default().0 += 1,
        MessageStatus::Failed if error.is_none_or(counts_against_rate) => {
            let e = into.entry(campaign).or_default();
            e.0 += 1;
            e.1 += 1;
        }
        _ => {}
    }
}

/// A campaign the engine just auto-paused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPaused {
    pub campaign_id: CampaignId,
    pub reason: String,
}

/// "22 %", "20.2 %": one decimal when a whole number would hide the difference.
fn percent_text(failed: i64, outcomes: i64) -> String {
    let tenths = (failed * 1000 + outcomes / 2) / outcomes.max(1);
    if tenths % 10 == 0 {
        format!("{} %", tenths / 10)
    } else {
        format!("{}.{} %", tenths / 10, tenths % 10)
    }
}

/// The audit trail's reason for an auto-pause.
pub fn reason(failed: i64, outcomes: i64, percent: u8, top: Option<&str>) -> String {
    let mut r = format!(
        "auto-paused: {failed} of the last {outcomes} messages failed permanently ({} > {percent} %)",
        percent_text(failed, outcomes)
    );
    if let Some(top) = top {
        r.push_str("; most common: ");
        r.push_str(top);
    }
    r
}

impl Store {
    /// The organisation's auto-pause setting; None: Herald's default.
    pub async fn org_auto_pause(&self, org_id: OrgId) -> Result<Option<AutoPause>, StoreError> {
        let row = sqlx::query(
            "SELECT auto_pause_percent, auto_pause_window FROM organisations WHERE id = $1",
        )
        .bind(org_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "organisation {} does not exist: `herald org list` shows them",
                org_id
            ))
        })?;
        Ok(AutoPause::from_columns(
            row.try_get("auto_pause_percent")?,
            row.try_get("auto_pause_window")?,
        ))
    }

    /// Sets the organisation's default (None: back to Herald's). Campaigns that inherit it
    /// use it from their next batch of outcomes.
    pub async fn set_org_auto_pause(
        &self,
        org_id: OrgId,
        setting: Option<AutoPause>,
    ) -> Result<(), StoreError> {
        let (percent, window) = setting.map(AutoPause::columns).unzip();
        let r = sqlx::query(
            "UPDATE organisations SET auto_pause_percent = $1, auto_pause_window = $2 WHERE id = $3",
        )
        .bind(percent)
        .bind(window)
        .bind(org_id)
        .execute(&self.write)
        .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!(
                "organisation {} does not exist: `herald org list` shows them",
                org_id
            )));
        }
        Ok(())
    }

    /// The campaign's setting and the one in force, read within its organisation.
    pub async fn campaign_auto_pause(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
    ) -> Result<AutoPauseSetting, StoreError> {
        let row = sqlx::query(
            "SELECT c.auto_pause_percent AS cp, c.auto_pause_window AS cw, \
             o.auto_pause_percent AS op, o.auto_pause_window AS ow \
             FROM campaigns c JOIN organisations o ON o.id = c.org_id WHERE c.id = $1 AND c.org_id = $2",
        )
        .bind(campaign_id)
        .bind(org_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| not_found(campaign_id))?;
        Ok(resolve(
            AutoPause::from_columns(row.try_get("cp")?, row.try_get("cw")?),
            AutoPause::from_columns(row.try_get("op")?, row.try_get("ow")?),
        ))
    }

    /// Sets the campaign's own setting (None: inherit the organisation's), unless it has
    /// ended; the window restarts, so the new threshold judges only outcomes from now on.
    pub async fn set_campaign_auto_pause(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
        setting: Option<AutoPause>,
    ) -> Result<(), StoreError> {
        let (percent, window) = setting.map(AutoPause::columns).unzip();
        let r = sqlx::query(
            "UPDATE campaigns SET auto_pause_percent = $1, auto_pause_window = $2, \
             auto_pause_seen = 0, auto_pause_failed = 0, auto_pause_prev_failed = NULL \
             WHERE id = $3 AND org_id = $4 AND status NOT IN ('completed', 'cancelled')",
        )
        .bind(percent)
        .bind(window)
        .bind(campaign_id)
        .bind(org_id)
        .execute(&self.write)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(());
        }
        Err(self
            .ended_refusal(org_id, campaign_id, "auto-pause setting")
            .await)
    }

    /// Why a setting that changes until a campaign ends did not change: the campaign is not
    /// the organisation's (not found), or it has ended (a conflict naming its status).
    pub(in crate::store) async fn ended_refusal(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
        setting: &str,
    ) -> StoreError {
        let status: Result<Option<String>, sqlx::Error> =
            sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1 AND org_id = $2")
                .bind(campaign_id)
                .bind(org_id)
                .fetch_optional(&self.read)
                .await;
        match status {
            Err(e) => e.into(),
            Ok(None) => not_found(campaign_id),
            Ok(Some(s)) => StoreError::Conflict(format!(
                "campaign {campaign_id} is {s}: its {setting} can change only until it ends"
            )),
        }
    }

    /// Restarts the campaign's failure window (it just went back to sending).
    pub(in crate::store) async fn restart_failure_window(
        &self,
        tx: &mut Tx,
        campaign_id: CampaignId,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE campaigns SET auto_pause_seen = 0, auto_pause_failed = 0, auto_pause_prev_failed = NULL \
             WHERE id = $1 AND status = 'sending'",
        )
        .bind(campaign_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Moves the failure windows of the campaigns whose outcomes `tx` just recorded
    /// (`tallies`: campaign → (outcomes, failures) that count) and auto-pauses those still
    /// sending whose rate crossed their threshold. Runs in the outcomes' transaction after the
    /// counters move and before a drained campaign completes.
    pub(in crate::store) async fn judge_failure_rates(
        &self,
        tx: &mut Tx,
        tallies: &BTreeMap<CampaignId, (i64, i64)>,
        now: i64,
        actor: &str,
    ) -> Result<Vec<AutoPaused>, StoreError> {
        let mut paused = Vec::new();
        for (&campaign_id, &(outcomes, failed)) in tallies {
            if outcomes == 0 {
                continue;
            }
            let Some(row) = sqlx::query(
                "SELECT c.org_id, c.name, c.auto_pause_percent AS cp, c.auto_pause_window AS cw, \
                 o.auto_pause_percent AS op, o.auto_pause_window AS ow, \
                 c.auto_pause_seen, c.auto_pause_failed, c.auto_pause_prev_failed \
                 FROM campaigns c JOIN organisations o ON o.id = c.org_id \
                 WHERE c.id = $1 AND c.status = 'sending'",
            )
            .bind(campaign_id)
            .fetch_optional(&mut **tx)
            .await?
            else {
                continue;
            };
            let setting = resolve(
                AutoPause::from_columns(row.try_get("cp")?, row.try_get("cw")?),
                AutoPause::from_columns(row.try_get("op")?, row.try_get("ow")?),
            );
            let AutoPause::Rate { percent, window } = setting.effective else {
                continue;
            };
            let before = Window {
                seen: row.try_get("auto_pause_seen")?,
                failed: row.try_get("auto_pause_failed")?,
                prev_failed: row.try_get("auto_pause_prev_failed")?,
            };
            let after = before.add(outcomes, failed, i64::from(window));
            let verdict = if failed > 0 {
                after.exceeds(percent, window)
            } else {
                // A batch without a failure cannot raise the rate.
                None
            };
            let Some((failed_in_window, judged)) = verdict else {
                sqlx::query(
                    "UPDATE campaigns SET auto_pause_seen = $1, auto_pause_failed = $2, auto_pause_prev_failed = $3 \
                     WHERE id = $4 AND status = 'sending'",
                )
                .bind(after.seen)
                .bind(after.failed)
                .bind(after.prev_failed)
                .bind(campaign_id)
                .execute(&mut **tx)
                .await?;
                continue;
            };
            let top = self.top_failure(tx, campaign_id, i64::from(window)).await?;
            let reason = reason(
                failed_in_window,
                judged,
                percent,
                top.as_ref().map(|e| e.reason.as_str()),
            );
            let r = sqlx::query(
                "UPDATE campaigns SET status = 'paused', outage_channel_id = NULL, \
                 auto_pause_seen = 0, auto_pause_failed = 0, auto_pause_prev_failed = NULL \
                 WHERE id = $1 AND status = 'sending'",
            )
            .bind(campaign_id)
            .execute(&mut **tx)
            .await?;
            if r.rows_affected() != 1 {
                continue;
            }
            insert_event(
                tx,
                campaign_id,
                now,
                actor,
                Some(CampaignStatus::Sending),
                CampaignStatus::Paused,
                &reason,
            )
            .await?;
            let org_id: OrgId = row.try_get("org_id")?;
            let name: String = row.try_get("name")?;
            outbox::emit(
                tx,
                org_id,
                EventType::CampaignAutoPaused,
                Some(campaign_id),
                now,
                serde_json::json!({
                    "campaign_id": campaign_id.to_string(),
                    "name": name,
                    "failed": failed_in_window,
                    "window": judged,
                    "percent": (failed_in_window as f64 * 1000.0 / judged as f64).round() / 10.0,
                    "threshold": percent,
                    "top_reason": top.map(|e| serde_json::json!({
                        "code": e.code,
                        "reason": e.reason,
                        "action": e.action,
                    })),
                    "reason": reason,
                }),
            )
            .await?;
            paused.push(AutoPaused {
                campaign_id,
                reason,
            });
        }
        Ok(paused)
    }

    /// The most common explanation among the campaign's latest `limit` permanent failures
    /// that count against its rate.
    async fn top_failure(
        &self,
        tx: &mut Tx,
        campaign_id: CampaignId,
        limit: i64,
    ) -> Result<Option<crate::reasons::Explanation>, StoreError> {
        let errors: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT last_error FROM messages WHERE campaign_id = $1 AND status = 'failed' \
             ORDER BY updated_at DESC LIMIT $2",
        )
        .bind(campaign_id)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        let counted = errors
            .into_iter()
            .filter(|e| e.as_deref().is_none_or(counts_against_rate))
            .map(|e| (e, 1));
        Ok(crate::reasons::group(counted)
            .into_iter()
            .next()
            .map(|(e, _)| e))
    }
}

fn not_found(campaign_id: CampaignId) -> StoreError {
    StoreError::NotFound(format!(
        "campaign {} does not exist: `herald campaign list` shows the campaigns there are",
        campaign_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_print() {
        assert_eq!(
            "20%/500".parse::<AutoPause>(),
            Ok(AutoPause::Rate {
                percent: 20,
                window: 500
            })
        );
        assert_eq!(
            " 5 % / 50 ".parse::<AutoPause>(),
            Ok(AutoPause::Rate {
                percent: 5,
                window: 50
            })
        );
        assert_eq!("OFF".parse::<AutoPause>(), Ok(AutoPause::Off));
        assert_eq!(DEFAULT.to_string(), "20%/500");
        assert_eq!(AutoPause::Off.to_string(), "off");
        for bad in [
            "",
            "20",
            "0%/500",
            "100%/500",
            "20%/5",
            "20%/1000000",
            "x%/500",
        ] {
            let e = bad.parse::<AutoPause>().unwrap_err();
            assert!(e.contains("20%/500"), "{bad}: {e}");
        }
    }

    #[test]
    fn stored_columns_round_trip() {
        for s in [AutoPause::Off, DEFAULT] {
            let (p, w) = s.columns();
            assert_eq!(AutoPause::from_columns(Some(p), Some(w)), Some(s));
        }
        assert_eq!(AutoPause::from_columns(None, None), None);
    }

    #[test]
    fn campaign_overrides_organisation_overrides_default() {
        let off = Some(AutoPause::Off);
        let ten = AutoPause::Rate {
            percent: 10,
            window: 100,
        };
        assert_eq!(resolve(None, None).source, AutoPauseSource::Default);
        assert_eq!(resolve(None, None).effective, DEFAULT);
        assert_eq!(resolve(None, Some(ten)).effective, ten);
        assert_eq!(
            resolve(None, Some(ten)).source,
            AutoPauseSource::Organisation
        );
        assert_eq!(resolve(off, Some(ten)).effective, AutoPause::Off);
        assert_eq!(resolve(off, Some(ten)).source, AutoPauseSource::Campaign);
    }

    #[test]
    fn nothing_is_judged_before_the_window_is_full() {
        let w = Window::default().add(499, 499, 500);
        assert_eq!(w.exceeds(20, 500), None);
        let w = w.add(1, 1, 500);
        assert_eq!(w.exceeds(20, 500), Some((500, 500)));
        let w = Window::default().add(20, 5, 20);
        assert_eq!(w.exceeds(20, 20), Some((5, 20)));
    }

    #[test]
    fn the_threshold_is_strict() {
        let w = Window::default().add(100, 20, 100);
        assert_eq!(w.exceeds(20, 100), None);
        let w = Window::default().add(100, 21, 100);
        assert_eq!(w.exceeds(20, 100), Some((21, 100)));
    }

    #[test]
    fn the_window_slides() {
        // A block of 500 with 30 % failures, then 250 clean outcomes: half of the old
        // block is still inside the last 500.
        let w = Window::default().add(500, 150, 500);
        assert_eq!(w.estimate(500), (150, 500));
        assert!(w.exceeds(20, 500).is_some());
        let w = w.add(250, 0, 500);
        assert_eq!(w.estimate(500), (75, 500));
        assert_eq!(w.exceeds(20, 500), None);
        // A batch overshooting the block keeps its rate.
        let w = Window::default().add(400, 0, 500).add(200, 60, 500);
        assert_eq!(w.prev_failed, Some(50));
    }

    #[test]
    fn outage_and_provider_failures_do_not_count() {
        for e in [
            "error sending request: connection refused",
            "unexpected answer (HTTP 503)",
            "unexpected answer (HTTP 429)",
            "gave up after 3 attempts: simulated transient failure",
            "in doubt: no answer",
            "suppressed before sending: unsubscribed",
            "campaign cancelled",
        ] {
            assert!(!counts_against_rate(e), "{e}");
        }
        for e in [
            "simulated permanent failure",
            "twilio 21211: invalid 'To' phone number",
            "template: undefined variable",
            "opted out at the provider: twilio 21610",
        ] {
            assert!(counts_against_rate(e), "{e}");
        }
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            reason(112, 500, 20, Some("The number is not valid")),
            "auto-paused: 112 of the last 500 messages failed permanently (22.4 % > 20 %); most common: The number is not valid"
        );
        assert_eq!(
            reason(110, 500, 20, None),
            "auto-paused: 110 of the last 500 messages failed permanently (22 % > 20 %)"
        );
    }
}
