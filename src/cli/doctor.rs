//! `herald doctor`: every manual step of the incident in DESIGN.md, answered by one command.

use super::CliResult;
use crate::config::Settings;
use crate::domain::{CampaignStatus, MessageStatus};
use crate::engine::health;
use crate::store::Store;
use serde_json::json;

pub async fn run(settings: &Settings, as_json: bool) -> CliResult {
    let now = crate::clock::now_ms();
    let mut findings: Vec<String> = Vec::new();
    let store = match Store::connect(&settings.database_url).await {
        Ok(s) => s,
        Err(e) => {
            return report(
                as_json,
                json!({"healthy": false, "database": {"reachable": false, "error": e.to_string()}}),
                &[e.to_string()],
            );
        }
    };
    let migrations = store.migration_status().await?;
    if !migrations.missing.is_empty() {
        findings.push(format!(
            "database is missing migrations {:?}: run `herald migrate`",
            migrations.missing
        ));
        return report(
            as_json,
            json!({"healthy": false, "database": {"reachable": true, "store": store.dialect().name(), "migrations_current": false, "missing": migrations.missing}}),
            &findings,
        );
    }
    let instances = store.instances().await?;
    let live = health::live(&instances, now, settings);
    let stuck = health::stuck_campaigns(&store, now, settings).await?;
    for s in &stuck {
        findings.push(format!(
            "campaign {} `{}` is stuck: {} pending, no progress for {} s: {}",
            s.campaign_id,
            s.name,
            s.pending,
            s.no_progress_for_ms / 1000,
            s.reason
        ));
    }
    let drift = health::drift(&store, now).await?;
    for d in &drift {
        findings.push(format!(
            "campaign {} counter `{}` says {} but its messages say {}",
            d.campaign_id, d.status, d.counter, d.actual
        ));
    }
    let campaigns = store.campaigns_with_status(&CampaignStatus::ALL).await?;
    let mut in_doubt = Vec::new();
    for c in &campaigns {
        let now_in_doubt = c.counts.get(MessageStatus::InDoubt);
        if now_in_doubt > 0 || c.in_doubt_total > 0 {
            in_doubt.push(json!({"campaign_id": c.id, "in_doubt": now_in_doubt, "in_doubt_total": c.in_doubt_total}));
        }
        if now_in_doubt > 0 {
            findings.push(format!(
                "campaign {} has {now_in_doubt} messages in doubt awaiting the in-doubt policy ({})",
                c.id,
                settings.in_doubt_policy_name()
            ));
        }
    }
    let sending = campaigns
        .iter()
        .filter(|c| c.status == CampaignStatus::Sending)
        .count();
    if sending > 0 && live.is_empty() {
        findings.push(format!(
            "{sending} campaigns are sending but no Herald instance is alive: start `herald serve` or `herald worker`"
        ));
    }
    let body = json!({
        "healthy": findings.is_empty(),
        "database": {"reachable": true, "store": store.dialect().name(), "url": store.url(), "migrations_current": true, "applied": migrations.applied},
        "instances": live.iter().map(|i| json!({
            "id": i.id, "host": i.host, "pid": i.pid, "version": i.version, "role": i.role,
            "last_heartbeat": crate::clock::rfc3339(i.heartbeat_at),
            "heartbeat_age_ms": now - i.heartbeat_at, "in_flight": i.in_flight,
        })).collect::<Vec<_>>(),
        "campaigns": {"sending": sending, "total": campaigns.len()},
        "stuck": stuck,
        "drift": drift,
        "in_doubt": in_doubt,
        "findings": findings,
    });
    if !as_json {
        println!(
            "database: {} ({}), migrations current",
            store.url(),
            store.dialect().name()
        );
        if live.is_empty() {
            println!("instances: none alive");
        }
        for i in &live {
            println!(
                "instance {} on {} pid {} v{} ({}): last heartbeat {} ms ago, {} in flight",
                i.id,
                i.host,
                i.pid,
                i.version,
                i.role,
                now - i.heartbeat_at,
                i.in_flight
            );
        }
        println!("campaigns: {} sending of {}", sending, campaigns.len());
    }
    report(as_json, body, &findings)
}

fn report(as_json: bool, body: serde_json::Value, findings: &[String]) -> CliResult {
    if as_json {
        println!("{body}");
    } else if findings.is_empty() {
        println!("healthy: nothing stuck, counters match, nothing in doubt");
    } else {
        for f in findings {
            println!("FINDING: {f}");
        }
    }
    Ok(if findings.is_empty() { 0 } else { 1 })
}
