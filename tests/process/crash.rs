//! Killing `herald serve` mid-campaign: SIGKILL (twice) must lose nothing and bound its
//! duplicates by what it reports as in doubt; SIGTERM must leave nothing in doubt at all.

use crate::both_stores;
use crate::support::{Backend, DEADLINE, Herald, Proc, accepted, assert_counters_consistent, n};
use herald::ids::CampaignId;
use serde_json::Value;
use std::time::Duration;

both_stores!(
    sigkill_mid_campaign_then_restart,
    sigterm_leaves_nothing_in_doubt
);

const TOTAL: i64 = 5000;
const SERVE: &[&str] = &["serve", "--listen", "127.0.0.1:0", "--concurrency", "100"];

/// A migrated database with a sandbox channel, 5000 contacts and a draft campaign.
fn setup(backend: Backend, latency_ms: &str) -> (Herald, String, i64) {
    let h = Herald::migrated(backend);
    let channel = h.sandbox_channel("provider", &["--latency-ms", latency_ms]);
    h.import_contacts("everyone", usize::try_from(TOTAL).unwrap());
    let id = h.create_campaign("big send", "everyone", &channel, &[]);
    (h, channel, id)
}

fn start_serve(h: &Herald) -> Proc {
    let mut serve = h.spawn(SERVE, "serve");
    serve.listen_addr();
    serve
}

/// Waits until at least `sent` messages went out; fails if the campaign got further than
/// "mid-campaign" before that was seen.
fn wait_mid_campaign(h: &Herald, id: i64, sent: i64, serve: &Proc) -> Value {
    let s = h.wait_status(id, &format!("{sent} sent"), DEADLINE, &[serve], |s| {
        n(s, "sent") >= sent || s["status"] != "sending"
    });
    assert_eq!(
        s["status"], "sending",
        "the campaign ended before the kill: {s}"
    );
    assert!(
        n(&s, "pending") > 0,
        "nothing left to send at the kill: {s}"
    );
    s
}

/// The status once the database has settled after a kill (a commit sent just before the
/// kill may still land).
fn settled_status(h: &Herald, id: i64) -> Value {
    let mut last = h.status(id);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(150));
        let now = h.status(id);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("campaign {id} keeps changing with no engine running: {last}");
}

fn sigkill_mid_campaign_then_restart(backend: Backend) {
    let (h, channel, id) = setup(backend, "5");
    let mut serve = start_serve(&h);
    h.ok(&["campaign", "start", &id.to_string()]);

    let mut orphaned = 0;
    let mut kills = 0;
    for threshold in [300, 2500] {
        let seen = h.wait_status(id, "progress", DEADLINE, &[&serve], |s| {
            n(s, "sent") >= threshold || s["status"] != "sending"
        });
        if seen["status"] != "sending" {
            // Only the second kill may miss: the first one is required.
            assert!(
                kills > 0,
                "the campaign ended before the first kill: {seen}"
            );
            eprintln!(
                "[{}] campaign finished before the second kill",
                backend.name()
            );
            break;
        }
        serve.kill();
        kills += 1;
        let after = settled_status(&h, id);
        eprintln!("[{}] SIGKILL #{kills} at {after}", backend.name());
        assert_eq!(after["status"], "sending", "{after}");
        assert_counters_consistent(&after);
        orphaned += n(&after, "in_flight");
        serve = start_serve(&h);
    }

    let done = h.wait_completed(id, &[&serve]);
    eprintln!("[{}] after {kills} kills: {done}", backend.name());
    assert_counters_consistent(&done);
    assert_eq!(n(&done, "total"), TOTAL);
    assert_eq!(n(&done, "pending"), 0, "{done}");
    for pending in ["queued", "in_flight", "retry_wait", "in_doubt"] {
        assert_eq!(n(&done, pending), 0, "{pending} left over: {done}");
    }
    assert_eq!(
        accepted(&done),
        TOTAL,
        "not every recipient was sent: {done}"
    );
    let in_doubt_total = n(&done, "in_doubt_total");
    assert!(
        in_doubt_total >= orphaned,
        "{orphaned} messages were in flight at the kills but only {in_doubt_total} were found in doubt"
    );

    let stats = h.channel_stats(&channel, Some(CampaignId(id)));
    eprintln!("[{}] provider: {stats}", backend.name());
    assert_eq!(
        stats["distinct_recipients"], TOTAL,
        "messages were lost: {stats}"
    );
    let duplicates = stats["duplicates"].as_i64().unwrap();
    assert!(
        duplicates <= in_doubt_total,
        "{duplicates} duplicates but only {in_doubt_total} messages were reported in doubt"
    );
    assert_eq!(stats["received"], TOTAL + duplicates, "{stats}");

    let events = h.events(id);
    let completions = events.iter().filter(|(_, t, _)| t == "completed").count();
    assert_eq!(completions, 1, "{events:?}");
    h.assert_healthy();
    serve.assert_running();
}

fn sigterm_leaves_nothing_in_doubt(backend: Backend) {
    let (h, channel, id) = setup(backend, "20");
    let mut serve = start_serve(&h);
    h.ok(&["campaign", "start", &id.to_string()]);
    wait_mid_campaign(&h, id, 300, &serve);

    let (code, took) = serve.terminate(Duration::from_secs(15));
    assert!(
        code.success(),
        "serve exited with {code} on SIGTERM\n{}",
        serve.log_tail(40)
    );
    assert!(
        took < Duration::from_secs(5),
        "serve took {took:?} to stop on SIGTERM"
    );

    let stopped = settled_status(&h, id);
    eprintln!("[{}] after SIGTERM: {stopped}", backend.name());
    assert_eq!(stopped["status"], "sending", "{stopped}");
    assert_eq!(
        n(&stopped, "in_flight"),
        0,
        "a graceful stop left sends in flight: {stopped}"
    );
    assert_eq!(n(&stopped, "in_doubt"), 0, "{stopped}");
    assert!(n(&stopped, "pending") > 0, "{stopped}");
    assert_counters_consistent(&stopped);
    // Everything the provider accepted is recorded: no outcome was dropped on the way out.
    let stats = h.channel_stats(&channel, Some(CampaignId(id)));
    assert_eq!(stats["received"], accepted(&stopped), "{stats} / {stopped}");

    // With the only engine gone, doctor says the campaign has nobody to send it.
    let (code, report) = h.doctor();
    assert_eq!(
        code,
        Some(1),
        "doctor should flag a sending campaign with no engine: {report:#}"
    );
    let findings = report["findings"].to_string();
    assert!(
        findings.contains("no Herald instance is alive"),
        "{report:#}"
    );

    let serve = start_serve(&h);
    let done = h.wait_completed(id, &[&serve]);
    assert_counters_consistent(&done);
    assert_eq!(
        n(&done, "in_doubt_total"),
        0,
        "a graceful stop left messages in doubt: {done}"
    );
    assert_eq!(accepted(&done), TOTAL, "{done}");
    let stats = h.channel_stats(&channel, Some(CampaignId(id)));
    assert_eq!(stats["duplicates"], 0, "{stats}");
    assert_eq!(stats["received"], TOTAL, "{stats}");
    assert_eq!(stats["distinct_recipients"], TOTAL, "{stats}");
    h.assert_healthy();
}
