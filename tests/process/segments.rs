//! Segments (issue 14, point 5) as a campaign manager uses them from the CLI, with a real
//! `herald serve` sending: a filter counted before saving, saved, a campaign on it that
//! sends to exactly its matches, frozen at the start while new matches arrive; the same
//! counts in `segment show`, the campaign's status and the sandbox; bad filters refused
//! with the field and the fix, and nothing created.

use crate::both_stores;
use crate::support::{Backend, Herald, assert_clean_failure, n, query_strings};

both_stores!(a_segment_campaign_sends_to_its_matches_frozen_at_start);

fn a_segment_campaign_sends_to_its_matches_frozen_at_start(backend: Backend) {
    let h = Herald::migrated(backend);
    // 14 contacts in City0 … City6; and two more, on another list.
    h.import_contacts("people", 14);
    std::fs::write(
        h.path("vip.csv"),
        "address,name,city,tier\n+15550600001,Vera,City1,gold\n+15550600002,Walt,City9,silver\n",
    )
    .unwrap();
    h.ok(&[
        "contacts",
        "import",
        h.path("vip.csv").to_str().unwrap(),
        "--list",
        "vip",
    ]);
    h.sandbox_channel("sms", &[]);

    // Bad filters: the field, the place and the fix; exit 2; nothing saved.
    for (filter, says) in [
        ("city = \"City1\"", "`city` at character 1"),
        (
            "attributes.city contains City1",
            "put text in double quotes",
        ),
        ("list = \"nobody\"", "no list named \"nobody\""),
    ] {
        let r = h.fails(&["segment", "create", "bad", "--filter", filter]);
        assert_clean_failure(&r);
        assert!(r.stderr.contains(says), "{filter}: {}", r.stderr);
    }
    assert_eq!(
        h.ok(&["segment", "list"]).lines().count(),
        1,
        "only the header"
    );

    let filter = "(attributes.city in (\"City1\", \"City2\") and list = \"people\") or attributes.tier = \"gold\"";
    let counted = h.ok(&["segment", "count", "--filter", filter]);
    // City1: contacts 1 and 8; City2: 2 and 9; and Vera.
    assert!(counted.starts_with("5 contacts match "), "{counted}");
    let created = h.ok(&["segment", "create", "City 1+2", "--filter", filter]);
    assert!(created.contains("5 contacts match"), "{created}");
    let shown = h.ok(&["segment", "show", "City 1+2"]);
    assert!(shown.contains("first 5 of 5"), "{shown}");
    // A segment's members are its filter's: an import into it is refused.
    let r = h.fails(&[
        "contacts",
        "import",
        h.path("vip.csv").to_str().unwrap(),
        "--list",
        "City 1+2",
    ]);
    assert!(r.stderr.contains("is a segment"), "{}", r.stderr);

    let id = h.create_campaign("cities", "City 1+2", "sms", &[]);
    let estimate: serde_json::Value =
        serde_json::from_str(&h.ok(&["campaign", "estimate", &id.to_string(), "--json"])).unwrap();
    assert_eq!(estimate["audience"], 5, "{estimate}");
    let mut serve = h.spawn(&["serve", "--listen", "127.0.0.1:0"], "serve");
    h.ok(&["campaign", "start", &id.to_string()]);
    // A contact that matches from now on is not part of the started campaign.
    std::fs::write(
        h.path("late.csv"),
        "address,name,city,tier\n+15550600003,Late,City1,gold\n",
    )
    .unwrap();
    h.ok(&[
        "contacts",
        "import",
        h.path("late.csv").to_str().unwrap(),
        "--list",
        "vip",
    ]);
    let done = h.wait_completed(id, &[&serve]);
    assert_eq!(n(&done, "total"), 5, "{done}");
    assert_eq!(n(&done, "sent"), 5, "{done}");
    let mut bodies = query_strings(
        h.url(),
        &format!("SELECT body FROM sandbox_received WHERE campaign_id = {id} ORDER BY body"),
    );
    bodies.sort();
    assert_eq!(
        bodies,
        [
            "Hi Contact 1 from City1",
            "Hi Contact 2 from City2",
            "Hi Contact 8 from City1",
            "Hi Contact 9 from City2",
            "Hi Vera from City1",
        ]
    );
    // The segment counts the late contact now; the campaign keeps what it froze, and its
    // audit trail says which filter that was.
    assert!(
        h.ok(&["segment", "show", "City 1+2"])
            .contains("first 6 of 6")
    );
    let events = h.ok(&["campaign", "events", &id.to_string(), "--json"]);
    assert!(
        events.contains(
            "5 recipients (5 queued, 0 skipped), the contacts matching attributes.city in"
        ),
        "{events}"
    );
    serve.terminate(std::time::Duration::from_secs(20));
    h.assert_healthy();
}
