//! The README's metrics are the ones `/metrics` serves: every `herald_…` name the README
//! mentions is exported with its `# HELP` and `# TYPE` lines, and every metric Herald
//! defines is in the README.

use crate::both_stores;
use crate::support::{Backend, DEADLINE, Herald, http_get};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

both_stores!(every_metric_the_readme_lists_is_exported_with_help);

/// Every backquoted `herald_…` name in the README.
fn readme_metric_names() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    readme
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| {
            let name: String = code
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (name.starts_with("herald_") && name.len() > "herald_".len()).then_some(name)
        })
        .collect()
}

fn has_line(body: &str, prefix: &str) -> bool {
    body.lines().any(|l| l.starts_with(prefix))
}

fn every_metric_the_readme_lists_is_exported_with_help(backend: Backend) {
    let listed = readme_metric_names();
    let defined: BTreeSet<String> = herald::telemetry::METRICS
        .iter()
        .map(|(name, ..)| (*name).to_string())
        .collect();
    assert_eq!(
        listed, defined,
        "the README's metric names and crates/herald-core/src/telemetry.rs METRICS differ"
    );

    let h = Herald::new(backend);
    let mut serve = h.spawn(&["serve", "--listen", "127.0.0.1:0"], "serve");
    let addr = serve.listen_addr();
    // Series whose labels come from data, and the histograms, appear with a first send.
    h.import_contacts("metrics", 3);
    let id = h.ok(&[
        "campaign",
        "create",
        "--name",
        "metrics",
        "--list",
        "metrics",
        "--channel",
        "sandbox",
        "--body",
        "Hi {{ name }}",
    ]);
    h.ok(&["campaign", "start", id.trim()]);

    let start = Instant::now();
    loop {
        let (code, body) = http_get(&addr, "/metrics");
        assert_eq!(code, 200, "{body}");
        let missing: Vec<String> = listed
            .iter()
            .flat_map(|name| {
                [
                    format!("# HELP {name} "),
                    format!("# TYPE {name} "),
                    name.clone(),
                ]
            })
            .filter(|prefix| !has_line(&body, prefix))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "/metrics lacks lines starting with {missing:?}:\n{body}\n{}",
            serve.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    serve.assert_running();
    serve.terminate(Duration::from_secs(15));
}
