//! The Prometheus alerting rules (docs/prometheus/herald-rules.yml) are valid
//! (`promtool check rules`), behave as their unit tests say (`promtool test rules
//! docs/prometheus/herald-rules.test.yml`: each alert fires on its problem and stays quiet
//! when healthy), and name only metrics Herald exports, so renaming a metric breaks this
//! test rather than silently disabling an alert. promtool comes from Debian's `prometheus`
//! package, which scripts/test installs; without it this test fails, it does not skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus")
}

/// `promtool`, from $PATH or $HERALD_TEST_TOOLS/promtool.
fn promtool() -> PathBuf {
    if let Some(dir) = std::env::var_os("HERALD_TEST_TOOLS") {
        let p = Path::new(&dir).join("promtool");
        if p.is_file() {
            return p;
        }
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool is not installed: run ./scripts/test (it installs Debian's `prometheus` package, \
             which has promtool) or `apt-get install prometheus`; the alerting rules cannot be checked without it"
        )
    })
}

fn run(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

#[test]
fn the_rules_are_valid() {
    let text = run(&["check", "rules", "herald-rules.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_fires_on_its_problem_and_only_then() {
    let text = run(&["test", "rules", "herald-rules.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

/// The `herald_…` names in a file.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("herald_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // Not part of a longer word (e.g. a file name like `my_herald_x`).
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_rules_name_only_exported_metrics() {
    let exported: BTreeSet<String> = herald::telemetry::METRICS
        .iter()
        .map(|(name, ..)| (*name).to_string())
        .collect();
    let rules = std::fs::read_to_string(rules_dir().join("herald-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join("herald-rules.test.yml")).unwrap();
    let used = metric_names(&rules);
    for (file, names) in [
        ("herald-rules.yml", &used),
        ("herald-rules.test.yml", &metric_names(&tests)),
    ] {
        let unknown: Vec<&String> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "docs/prometheus/{file} names metrics Herald does not export (crates/herald-core/src/telemetry.rs METRICS): {unknown:?}"
        );
    }
    // The alerts the issue asks for are all there, each with its metric.
    for (alert, metric) in [
        ("HeraldCampaignStuck", "herald_stuck_campaigns"),
        ("HeraldNoLiveInstance", "herald_live_instances"),
        ("HeraldCounterDrift", "herald_counter_drift"),
        (
            "HeraldWebhookDeliveriesFailing",
            "herald_webhook_deliveries_total",
        ),
        ("HeraldChannelUnavailable", "herald_channel_unavailable"),
        ("HeraldMessagesInDoubt", "herald_in_doubt_messages"),
        (
            "HeraldCampaignAutoPaused",
            "herald_campaigns_auto_paused_total",
        ),
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}\n")),
            "no alert {alert}"
        );
        assert!(used.contains(metric), "no rule reads {metric}");
    }
}

#[test]
fn metric_names_are_found() {
    assert_eq!(
        metric_names("max(herald_a_total) / x_herald_b + herald_c{x=\"1\"}"),
        BTreeSet::from(["herald_a_total".to_string(), "herald_c".to_string()])
    );
}
