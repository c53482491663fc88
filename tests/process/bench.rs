//! `herald bench` as users run it against a Twilio-compatible server (`herald-fakes
//! twilio`): its duplicates and losses are read from what the server received, so a server
//! still holding an earlier run's messages (the same synthetic recipients) is refused with
//! the fix, instead of reporting that run's messages as duplicates of this one.

use crate::both_stores;
use crate::support::{Backend, FakeTwilio, Herald};
use serde_json::Value;

both_stores!(
    bench_counts_what_the_provider_received_and_refuses_a_used_one,
    bench_times_the_provider_calls_it_makes
);

/// A provider that answers in 20 ms keeps each call at least that long: the mean call
/// `herald bench` reports is what its slots spent at the provider, not a guess.
fn bench_times_the_provider_calls_it_makes(backend: Backend) {
    let h = Herald::new(backend);
    let out = h.ok(&[
        "bench",
        "--messages",
        "200",
        "--concurrency",
        "20",
        "--latency-ms",
        "20",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    assert_eq!(report["lost"], 0, "{report}");
    let call = report["provider_call_ms"].as_f64().unwrap_or(0.0);
    assert!(
        call >= 20.0,
        "a 20 ms provider's calls took {call} ms: {report}"
    );
    let busy = report["send_slots_busy"].as_f64().unwrap_or(-1.0);
    assert!(busy > 0.0 && busy <= 1.0, "send_slots_busy: {report}");
}

fn bench_counts_what_the_provider_received_and_refuses_a_used_one(backend: Backend) {
    let h = Herald::new(backend);
    let fake = FakeTwilio::start("herald-bench");
    let args = [
        "bench",
        "--messages",
        "300",
        "--concurrency",
        "20",
        "--channel",
        "twilio",
        "--provider-url",
        fake.url.as_str(),
        "--json",
    ];
    let run = |what: &str| -> Value {
        let out = h.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: bench printed {out:?} ({e})"))
    };
    let first = run("first run");
    assert_eq!(first["messages"], 300, "{first}");
    assert_eq!(first["duplicates"], 0, "{first}");
    assert_eq!(first["lost"], 0, "{first}");
    assert_eq!(fake.stats()["received"], 300);
    // The slots' report: some of their time at the provider, never more than all of it,
    // and the sending phase (after the start's commit) no longer than the whole run.
    let busy = first["send_slots_busy"].as_f64().unwrap_or(-1.0);
    assert!(busy > 0.0 && busy <= 1.0, "send_slots_busy: {first}");
    assert!(
        first["provider_call_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{first}"
    );
    assert!(
        first["sending_msgs_per_s"].as_f64().unwrap_or(0.0)
            >= first["msgs_per_s"].as_f64().unwrap_or(f64::MAX),
        "{first}"
    );

    let refused = h.fails(&args);
    assert!(
        refused.stderr.contains("already holds 300 messages")
            && refused.stderr.contains("/_fake/reset"),
        "a provider holding an earlier run is refused with the fix: {}",
        refused.describe()
    );
    assert_eq!(
        fake.stats()["received"],
        300,
        "nothing was sent by the refused run"
    );

    fake.reset();
    let second = run("after a reset");
    assert_eq!(second["duplicates"], 0, "{second}");
    assert_eq!(second["lost"], 0, "{second}");
}
