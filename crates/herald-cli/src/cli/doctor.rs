//! `herald doctor`: every manual step of the incident in docs/DESIGN.md, answered by one command.
//! The diagnosis is `crate::doctor` (also served as `GET /api/v1/health`); this prints it.

use super::CliResult;
use crate::config::Settings;
use crate::store::Store;
use serde_json::json;

pub async fn run(settings: &Settings, as_json: bool) -> CliResult {
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
    let diagnosis = crate::doctor::diagnose(&store, settings, None).await?;
    let findings = diagnosis.finding_messages();
    let Some(checks) = &diagnosis.checks else {
        return report(as_json, diagnosis.to_json(), &findings);
    };
    if !as_json {
        let now = diagnosis.now;
        println!(
            "database: {} ({}), migrations current",
            store.url(),
            store.dialect().name()
        );
        if checks.live.is_empty() {
            println!("instances: none alive");
        }
        for i in &checks.live {
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
        println!("campaigns: {} sending of {}", checks.sending, checks.total);
    }
    report(as_json, diagnosis.to_json(), &findings)
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
