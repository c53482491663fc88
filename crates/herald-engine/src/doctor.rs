//! The diagnosis behind `herald doctor` and `GET /api/v1/health`: every manual step of the
//! incident in docs/DESIGN.md, answered at once. The checks themselves live in
//! `engine::health` (shared with the reconciler); this file gathers them into one report,
//! for the whole installation or for one organisation's campaigns.

use crate::config::Settings;
use crate::domain::{CampaignStatus, MessageStatus};
use crate::engine::health::{self, StuckCampaign};
use crate::ids::{CampaignId, OrgId};
use crate::store::{Campaign, Drift, InstanceRow, MigrationStatus, Store, StoreError};
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The database lacks migrations: nothing else was checked.
    MigrationsMissing,
    /// A sending campaign makes no progress.
    Stuck,
    /// A campaign's counters differ from its messages.
    Drift,
    /// A campaign has messages whose send outcome is unknown.
    InDoubt,
    /// Campaigns are sending and no engine instance is alive.
    NoLiveInstance,
    /// A channel's provider cannot be reached: its campaigns are paused until it answers.
    ChannelUnavailable,
    /// An alert to a person could not be delivered (docs/ALERTS.md) in the last 24 hours.
    AlertUndeliverable,
}

/// One thing that is wrong, in words.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The campaign it is about, if one.
    pub campaign_id: Option<CampaignId>,
    pub message: String,
}

/// A campaign with messages in doubt now or ever.
#[derive(Debug, Clone, Serialize)]
pub struct InDoubtCampaign {
    pub campaign_id: CampaignId,
    pub in_doubt: i64,
    pub in_doubt_total: i64,
}

/// What was found once the schema was known to be current.
#[derive(Debug, Clone)]
pub struct Checks {
    /// Instances whose heartbeat is fresh.
    pub live: Vec<InstanceRow>,
    /// Campaigns sending, and all campaigns (of the organisation, when scoped).
    pub sending: usize,
    pub total: usize,
    pub stuck: Vec<StuckCampaign>,
    pub drift: Vec<Drift>,
    pub in_doubt: Vec<InDoubtCampaign>,
    /// Channels whose provider cannot be reached (of the organisation, when scoped).
    pub unavailable: Vec<crate::store::outage::ChannelOutage>,
    /// Alerts that could not be delivered in the last 24 hours, newest first.
    pub undeliverable_alerts: Vec<crate::store::alerts::Alert>,
}

/// The diagnosis of a reachable database.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// When it was made (epoch ms).
    pub now: i64,
    pub store: &'static str,
    /// The database URL, password hidden.
    pub url: String,
    pub migrations: MigrationStatus,
    /// None when migrations are missing (nothing else was checked).
    pub checks: Option<Checks>,
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    pub fn healthy(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn finding_messages(&self) -> Vec<String> {
        self.findings.iter().map(|f| f.message.clone()).collect()
    }

    /// The report `herald doctor --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let Some(c) = &self.checks else {
            return json!({"healthy": false, "database": {"reachable": true, "store": self.store, "migrations_current": false, "missing": self.migrations.missing}});
        };
        let now = self.now;
        json!({
            "healthy": self.healthy(),
            "database": {"reachable": true, "store": self.store, "url": self.url, "migrations_current": true, "applied": self.migrations.applied},
            "instances": c.live.iter().map(|i| json!({
                "id": i.id, "host": i.host, "pid": i.pid, "version": i.version, "role": i.role,
                "last_heartbeat": crate::clock::rfc3339(i.heartbeat_at),
                "heartbeat_age_ms": now - i.heartbeat_at, "in_flight": i.in_flight,
            })).collect::<Vec<_>>(),
            "campaigns": {"sending": c.sending, "total": c.total},
            "stuck": json!(c.stuck),
            "drift": json!(c.drift),
            "in_doubt": c.in_doubt.iter().map(|d| json!({"campaign_id": d.campaign_id, "in_doubt": d.in_doubt, "in_doubt_total": d.in_doubt_total})).collect::<Vec<_>>(),
            "unavailable_channels": c.unavailable.iter().map(|o| json!({
                "id": o.channel_id, "name": o.name, "kind": o.kind,
                "unavailable_since": crate::clock::rfc3339(o.since), "reason": o.reason,
            })).collect::<Vec<_>>(),
            "undeliverable_alerts": c.undeliverable_alerts.iter().map(|a| json!({
                "id": a.id, "event_type": a.event_type, "recipient": a.address,
                "subject": a.subject, "error": a.last_error,
                "at": a.settled_at.map(crate::clock::rfc3339),
            })).collect::<Vec<_>>(),
            "findings": self.finding_messages(),
        })
    }
}

/// The most undeliverable alerts one diagnosis lists (newest first).
const UNDELIVERABLE_ALERTS_SHOWN: i64 = 20;

/// How far back finished campaigns are recounted (as `engine::health::drift` does).
const DRIFT_WINDOW_MS: i64 = 3600 * 1000;

/// Diagnoses the store. With `org`, only that organisation's campaigns are looked at
/// (instances and the schema are shared by all organisations).
pub async fn diagnose(
    store: &Store,
    settings: &Settings,
    org: Option<OrgId>,
) -> Result<Diagnosis, StoreError> {
    let now = crate::clock::now_ms();
    let mut findings: Vec<Finding> = Vec::new();
    let migrations = store.migration_status().await?;
    let mut diagnosis = Diagnosis {
        now,
        store: store.dialect().name(),
        url: store.url().to_string(),
        migrations,
        checks: None,
        findings: Vec::new(),
    };
    if !diagnosis.migrations.missing.is_empty() {
        diagnosis.findings.push(Finding {
            kind: FindingKind::MigrationsMissing,
            campaign_id: None,
            message: format!(
                "database is missing migrations {:?}: run `herald migrate`",
                diagnosis.migrations.missing
            ),
        });
        return Ok(diagnosis);
    }
    let instances = store.instances().await?;
    let live = health::live(&instances, now, settings);
    let campaigns: Vec<Campaign> = match org {
        Some(org) => store.campaigns(org).await?,
        None => store.campaigns_with_status(&CampaignStatus::ALL).await?,
    };
    let ours: HashSet<CampaignId> = campaigns.iter().map(|c| c.id).collect();
    let mut stuck = health::stuck_campaigns(store, now, settings).await?;
    let drift = match org {
        None => health::drift(store, now).await?,
        Some(_) => {
            let mut ids = store.campaigns_to_check(now - DRIFT_WINDOW_MS).await?;
            ids.retain(|id| ours.contains(id));
            store.drift(&ids).await?
        }
    };
    if org.is_some() {
        stuck.retain(|s| ours.contains(&s.campaign_id));
    }
    for s in &stuck {
        findings.push(Finding {
            kind: FindingKind::Stuck,
            campaign_id: Some(s.campaign_id),
            message: format!(
                "campaign {} `{}` is stuck: {} pending, no progress for {} s: {}",
                s.campaign_id,
                s.name,
                s.pending,
                s.no_progress_for_ms / 1000,
                s.reason
            ),
        });
    }
    for d in &drift {
        findings.push(Finding {
            kind: FindingKind::Drift,
            campaign_id: Some(d.campaign_id),
            message: format!(
                "campaign {} counter `{}` says {} but its messages say {}",
                d.campaign_id, d.status, d.counter, d.actual
            ),
        });
    }
    let mut in_doubt = Vec::new();
    for c in &campaigns {
        let now_in_doubt = c.counts.get(MessageStatus::InDoubt);
        if now_in_doubt > 0 || c.in_doubt_total > 0 {
            in_doubt.push(InDoubtCampaign {
                campaign_id: c.id,
                in_doubt: now_in_doubt,
                in_doubt_total: c.in_doubt_total,
            });
        }
        if now_in_doubt > 0 {
            findings.push(Finding {
                kind: FindingKind::InDoubt,
                campaign_id: Some(c.id),
                message: format!(
                    "campaign {} has {now_in_doubt} messages in doubt awaiting the in-doubt policy ({})",
                    c.id,
                    settings.in_doubt_policy_name()
                ),
            });
        }
    }
    let sending = campaigns
        .iter()
        .filter(|c| c.status == CampaignStatus::Sending)
        .count();
    if sending > 0 && live.is_empty() {
        findings.push(Finding {
            kind: FindingKind::NoLiveInstance,
            campaign_id: None,
            message: format!(
                "{sending} campaigns are sending but no Herald instance is alive: start `herald serve` or `herald worker`"
            ),
        });
    }
    let unavailable = match org {
        Some(org) => store.org_channel_outages(org).await?,
        None => store.channel_outages().await?,
    };
    for o in &unavailable {
        let paused = campaigns
            .iter()
            .filter(|c| c.channel_id == o.channel_id && c.status == CampaignStatus::Paused)
            .count();
        findings.push(Finding {
            kind: FindingKind::ChannelUnavailable,
            campaign_id: None,
            message: format!(
                "{}; {paused} of its campaigns are paused and resume when it answers again (probed every {} ms)",
                o.describe(),
                settings.outage_probe_interval_ms
            ),
        });
    }
    let undeliverable_alerts = store
        .undeliverable_alerts_since(
            org,
            now - crate::alerts::UNDELIVERABLE_FINDING_MS,
            UNDELIVERABLE_ALERTS_SHOWN,
        )
        .await?;
    for a in &undeliverable_alerts {
        findings.push(Finding {
            kind: FindingKind::AlertUndeliverable,
            campaign_id: a.campaign_id,
            message: format!(
                "alert {} to {} (\"{}\") could not be delivered: {}",
                a.id,
                a.address,
                a.subject,
                a.last_error.as_deref().unwrap_or("no reason recorded")
            ),
        });
    }
    diagnosis.checks = Some(Checks {
        undeliverable_alerts,
        live,
        sending,
        total: campaigns.len(),
        stuck,
        drift,
        in_doubt,
        unavailable,
    });
    diagnosis.findings = findings;
    Ok(diagnosis)
}
