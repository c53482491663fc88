//! The engine's instances and the installation's health, as `herald doctor` sees them.
//! Instances and the schema are shared by every organisation; findings about campaigns
//! cover the caller's organisation only.

use super::auth::AsViewer;
use super::problem::{ApiResult, Problem};
use super::{ApiState, timestamp, timestamp_opt};
use crate::config::Settings;
use crate::doctor::FindingKind;
use crate::engine::health;
use crate::ids::CampaignId;
use crate::store::InstanceRow;
use crate::store::channels_admin::InstanceRecord;
use axum::extract::State;
use serde::Serialize;
use std::collections::HashSet;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances))
        .routes(routes!(get_health))
}

/// The settings the checks judge by: the serving instance's own (thresholds such as
/// `instance_stale_after_ms`, `stuck_after_ms`, `in_doubt_policy`).
fn settings(state: &ApiState) -> Settings {
    state.settings.as_ref().clone()
}

/// An engine instance (`herald serve` or `herald worker` process).
#[derive(Debug, Serialize, ToSchema)]
pub struct Instance {
    #[schema(example = "web-1-4242-1b2c")]
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    /// serve or worker.
    pub role: String,
    pub started_at: String,
    pub heartbeat_at: String,
    /// When it stopped cleanly or was found dead; null while registered.
    pub stopped_at: Option<String>,
    /// Registered and its heartbeat is fresh.
    pub alive: bool,
    /// Messages it is sending right now.
    pub in_flight: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Instances {
    /// The most recent heartbeats first (at most 200).
    pub items: Vec<Instance>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Database {
    pub reachable: bool,
    /// sqlite or postgres.
    pub store: String,
    pub migrations_current: bool,
    pub applied: Vec<i64>,
    /// Migrations this Herald has that the database lacks (`herald migrate`).
    pub missing: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignTotals {
    pub sending: usize,
    pub total: usize,
}

/// A sending campaign with pending work and no progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct StuckCampaign {
    #[schema(example = "cmp_1")]
    pub campaign_id: String,
    pub name: String,
    pub pending: i64,
    pub no_progress_for_ms: i64,
    /// Why, when it can be known.
    pub reason: String,
}

/// A campaign counter that differs from its messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct CounterDrift {
    pub campaign_id: String,
    /// The message status whose counter differs.
    pub status: String,
    pub counter: i64,
    pub actual: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InDoubtCampaign {
    pub campaign_id: String,
    /// Messages in doubt now.
    pub in_doubt: i64,
    /// Messages ever found in doubt.
    pub in_doubt_total: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Finding {
    pub kind: FindingKind,
    pub campaign_id: Option<String>,
    pub detail: String,
}

/// What `herald doctor` reports, for the caller's organisation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// No findings.
    pub healthy: bool,
    pub checked_at: String,
    pub database: Database,
    /// The live instances.
    pub instances: Vec<Instance>,
    pub campaigns: CampaignTotals,
    pub stuck: Vec<StuckCampaign>,
    pub drift: Vec<CounterDrift>,
    pub in_doubt: Vec<InDoubtCampaign>,
    pub findings: Vec<Finding>,
}

fn live_instance(i: &InstanceRow) -> Instance {
    Instance {
        id: i.id.clone(),
        host: i.host.clone(),
        pid: i.pid,
        version: i.version.clone(),
        role: i.role.clone(),
        started_at: timestamp(i.started_at),
        heartbeat_at: timestamp(i.heartbeat_at),
        stopped_at: None,
        alive: true,
        in_flight: i.in_flight,
    }
}

/// The engine instances, running and stopped, the most recent heartbeat first; `alive`
/// is judged as `herald doctor` judges it.
#[utoipa::path(get, path = "/instances", tag = "system",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    responses(
        (status = 200, body = Instances),
    ))]
async fn list_instances(
    State(state): State<ApiState>,
    AsViewer(_p): AsViewer,
) -> ApiResult<axum::Json<Instances>> {
    let records: Vec<InstanceRecord> = state.store.instance_records().await?;
    let now = crate::clock::now_ms();
    let registered: Vec<InstanceRow> = records
        .iter()
        .filter(|r| r.stopped_at.is_none())
        .map(|r| InstanceRow {
            id: r.id.clone(),
            host: r.host.clone(),
            pid: r.pid,
            proc_start: None,
            version: r.version.clone(),
            role: r.role.clone(),
            started_at: r.started_at,
            heartbeat_at: r.heartbeat_at,
            in_flight: r.in_flight,
        })
        .collect();
    let alive: HashSet<String> = health::live(&registered, now, &settings(&state))
        .into_iter()
        .map(|i| i.id)
        .collect();
    let items = records
        .into_iter()
        .map(|r| Instance {
            alive: alive.contains(&r.id),
            started_at: timestamp(r.started_at),
            heartbeat_at: timestamp(r.heartbeat_at),
            stopped_at: timestamp_opt(r.stopped_at),
            id: r.id,
            host: r.host,
            pid: r.pid,
            version: r.version,
            role: r.role,
            in_flight: r.in_flight,
        })
        .collect();
    Ok(axum::Json(Instances { items }))
}

/// The installation's health as `herald doctor` reports it: the database, the live
/// instances, and what is wrong with the organisation's campaigns (stuck, counters that
/// drifted, messages in doubt).
#[utoipa::path(get, path = "/health", tag = "system",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The database does not answer", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_health(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
) -> ApiResult<axum::Json<Health>> {
    let d = crate::doctor::diagnose(&state.store, &settings(&state), Some(p.org_id)).await?;
    let cmp = |id: CampaignId| id.to_string();
    let findings = d
        .findings
        .iter()
        .map(|f| Finding {
            kind: f.kind,
            campaign_id: f.campaign_id.map(cmp),
            detail: f.message.clone(),
        })
        .collect();
    let database = Database {
        reachable: true,
        store: d.store.to_string(),
        migrations_current: d.checks.is_some(),
        applied: d.migrations.applied.clone(),
        missing: d.migrations.missing.clone(),
    };
    let health = match &d.checks {
        None => Health {
            healthy: false,
            checked_at: timestamp(d.now),
            database,
            instances: Vec::new(),
            campaigns: CampaignTotals {
                sending: 0,
                total: 0,
            },
            stuck: Vec::new(),
            drift: Vec::new(),
            in_doubt: Vec::new(),
            findings,
        },
        Some(c) => Health {
            healthy: d.healthy(),
            checked_at: timestamp(d.now),
            database,
            instances: c.live.iter().map(live_instance).collect(),
            campaigns: CampaignTotals {
                sending: c.sending,
                total: c.total,
            },
            stuck: c
                .stuck
                .iter()
                .map(|s| StuckCampaign {
                    campaign_id: cmp(s.campaign_id),
                    name: s.name.clone(),
                    pending: s.pending,
                    no_progress_for_ms: s.no_progress_for_ms,
                    reason: s.reason.clone(),
                })
                .collect(),
            drift: c
                .drift
                .iter()
                .map(|x| CounterDrift {
                    campaign_id: cmp(x.campaign_id),
                    status: x.status.as_str().to_string(),
                    counter: x.counter,
                    actual: x.actual,
                })
                .collect(),
            in_doubt: c
                .in_doubt
                .iter()
                .map(|x| InDoubtCampaign {
                    campaign_id: cmp(x.campaign_id),
                    in_doubt: x.in_doubt,
                    in_doubt_total: x.in_doubt_total,
                })
                .collect(),
            findings,
        },
    };
    Ok(axum::Json(health))
}
