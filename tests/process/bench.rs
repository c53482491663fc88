//! `herald bench` as users run it against a Twilio-compatible server (`herald-fakes
//! twilio`): its duplicates and losses are read from what the server received, so a server
//! still holding an earlier run's messages (the same synthetic recipients) is refused with
//! the fix, instead of reporting that run's messages as duplicates of this one.

use crate::both_stores;
use crate::support::{Backend, FakeTwilio, Herald};
use serde_json::Value;

both_stores!(bench_counts_what_the_provider_received_and_refuses_a_used_one);

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
