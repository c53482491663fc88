//! What a campaign manager does after a campaign, from the command line (issue 14):
//! export its messages, the contacts and the suppression list as CSV; resend to the
//! recipients who failed; duplicate; schedule, edit and unschedule.

use crate::both_stores;
use crate::support::{Backend, Herald, n, rfc3339_in};
use std::collections::BTreeSet;

both_stores!(
    export_and_resend_from_the_command_line,
    estimate_and_prices_from_the_command_line,
);

fn csv_rows(text: &str) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader.records().map(Result::unwrap).collect();
    (header, rows)
}

fn export_and_resend_from_the_command_line(backend: Backend) {
    let h = Herald::migrated(backend);
    h.import_contacts("people", 30);
    h.sandbox_channel("flaky", &["--permanent-fail-rate", "0.3"]);
    let id = h.create_campaign("export", "people", "flaky", &["--auto-pause", "off"]);
    h.ok(&["campaign", "start", &id.to_string()]);
    let worker = h.spawn(&["worker"], "worker");
    let done = h.wait_completed(id, &[&worker]);

    let file = h.path("messages.csv");
    let r = h.run(&[
        "campaign",
        "export",
        &format!("cmp_{id}"),
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(r.success(), "{}", r.describe());
    assert!(
        r.stdout.is_empty(),
        "the CSV went to the file: {}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains(&format!("exported 30 messages to {}", file.display())),
        "{}",
        r.stderr
    );
    assert!(!h.path("messages.csv.partial").exists());
    let written = std::fs::read_to_string(&file).unwrap();
    let (header, message_rows) = csv_rows(&written);
    assert_eq!(header, herald::export::MESSAGE_COLUMNS);
    assert_eq!(message_rows.len() as i64, n(&done, "total"));
    let status = header.iter().position(|c| c == "status").unwrap();
    let failed = message_rows
        .iter()
        .filter(|r| &r[status] == "failed")
        .count() as i64;
    assert_eq!(failed, n(&done, "failed"), "{done}");
    let code = header.iter().position(|c| c == "error_code").unwrap();
    assert!(
        message_rows
            .iter()
            .filter(|r| &r[status] == "failed")
            .all(|r| !r[code].is_empty()),
        "every failed row says why"
    );

    // To stdout it is the same file.
    let to_stdout = h.ok(&["campaign", "export", &id.to_string()]);
    assert_eq!(to_stdout, written);

    let contacts = h.ok(&["contacts", "export", "--list", "people"]);
    let (header, rows) = csv_rows(&contacts);
    assert_eq!(header, herald::export::CONTACT_COLUMNS);
    assert_eq!(rows.len(), 30);
    let suppressions = h.ok(&["suppressions", "export"]);
    assert_eq!(
        suppressions.trim_end(),
        herald::export::SUPPRESSION_COLUMNS.join(",")
    );

    // Bad input: a clear error, a non-zero exit and no file.
    let unknown = h.fails(&["campaign", "export", "cmp_999999"]);
    assert!(unknown.stderr.contains("cmp_999999"), "{}", unknown.stderr);
    let nowhere = h.path("no-such-dir/out.csv");
    let unwritable = h.fails(&[
        "campaign",
        "export",
        &id.to_string(),
        "--output",
        nowhere.to_str().unwrap(),
    ]);
    assert!(
        unwritable.stderr.contains("cannot write") && unwritable.stderr.contains("--output"),
        "{}",
        unwritable.stderr
    );
    assert!(!nowhere.exists());
    let list = h.fails(&["contacts", "export", "--list", "nobody"]);
    assert!(list.stderr.contains("nobody"), "{}", list.stderr);

    // Resend to the failed: exactly the addresses the export says failed.
    let address = header_index(&written, "address");
    let failed_addresses: BTreeSet<String> = message_rows
        .iter()
        .filter(|r| &r[status] == "failed")
        .map(|r| r[address].to_string())
        .collect();
    assert!(
        !failed_addresses.is_empty(),
        "the flaky channel failed none: {done}"
    );
    let (resend, said) = h.resend(id, &[]);
    assert!(
        said.contains(&format!("{} recipients", failed_addresses.len())),
        "{said}"
    );
    let draft = h.status(resend);
    assert_eq!(draft["status"], "draft");
    assert_eq!(draft["parent_id"], format!("cmp_{id}"));
    assert_eq!(draft["parent_kind"], "resend");
    h.ok(&["campaign", "start", &resend.to_string()]);
    let resent = h.wait_completed(resend, &[&worker]);
    assert_eq!(n(&resent, "total") as usize, failed_addresses.len());
    let again = h.ok(&["campaign", "export", &resend.to_string()]);
    let (_, resent_rows) = csv_rows(&again);
    let resent_addresses: BTreeSet<String> =
        resent_rows.iter().map(|r| r[address].to_string()).collect();
    assert_eq!(resent_addresses, failed_addresses);
    drop(worker);
    let bad = h.fails(&["campaign", "resend", &id.to_string(), "--status", "queued"]);
    assert!(
        bad.stderr.contains("--status") && bad.stderr.contains("queued"),
        "{}",
        bad.stderr
    );

    // Duplicate, schedule, edit while scheduled, unschedule: each in the audit trail.
    let copy: i64 = h
        .ok(&["campaign", "duplicate", &id.to_string()])
        .trim()
        .strip_prefix("cmp_")
        .and_then(|n| n.parse().ok())
        .expect("duplicate prints an id");
    let copied = h.status(copy);
    assert_eq!(copied["status"], "draft");
    assert_eq!(copied["name"], "Copy of export");
    assert_eq!(copied["parent_kind"], "duplicate");
    let later = rfc3339_in(86_400);
    h.ok(&["campaign", "schedule", &copy.to_string(), "--at", &later]);
    h.ok(&[
        "campaign",
        "edit",
        &copy.to_string(),
        "--name",
        "Copy, edited",
    ]);
    assert_eq!(h.status(copy)["status"], "scheduled");
    h.ok(&["campaign", "unschedule", &copy.to_string()]);
    assert_eq!(h.status(copy)["status"], "draft");
    let trail: Vec<(String, String)> = h
        .events(copy)
        .into_iter()
        .map(|(from, to, _)| (from, to))
        .collect();
    let expected: Vec<(String, String)> = [
        ("-", "draft"),
        ("draft", "scheduled"),
        ("scheduled", "scheduled"),
        ("scheduled", "draft"),
    ]
    .iter()
    .map(|(f, t)| ((*f).to_string(), (*t).to_string()))
    .collect();
    assert_eq!(trail, expected);
    let not_scheduled = h.fails(&["campaign", "unschedule", &copy.to_string()]);
    assert!(
        not_scheduled.stderr.contains("draft"),
        "{}",
        not_scheduled.stderr
    );
    let past = h.fails(&[
        "campaign",
        "schedule",
        &copy.to_string(),
        "--at",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(past.stderr.contains("--at"), "{}", past.stderr);
    let nothing = h.fails(&["campaign", "edit", &copy.to_string()]);
    assert!(nothing.stderr.contains("--name"), "{}", nothing.stderr);
}

fn header_index(text: &str, column: &str) -> usize {
    csv_rows(text)
        .0
        .iter()
        .position(|c| c == column)
        .unwrap_or_else(|| panic!("no column {column}"))
}

fn estimate_and_prices_from_the_command_line(backend: Backend) {
    let h = Herald::migrated(backend);
    h.import_contacts("people", 12);
    let priced = h.ok(&[
        "channel",
        "price",
        "sandbox",
        "--currency",
        "eur",
        "--per-unit",
        "0.05",
    ]);
    assert!(priced.contains("EUR 0.05 per unit"), "{priced}");
    let id = h.create_campaign("estimate", "people", "sandbox", &[]);

    let text = h.ok(&["campaign", "estimate", &id.to_string()]);
    assert!(text.contains("12 recipients of 12"), "{text}");
    assert!(text.contains("messages: 12"), "{text}");
    assert!(text.contains("estimated cost: EUR 0.6"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&h.ok(&["campaign", "estimate", &id.to_string(), "--json"])).unwrap();
    assert_eq!(json["recipients"], 12);
    assert_eq!(json["cost"]["total"], "0.6");

    let bad = h.fails(&[
        "channel",
        "price",
        "sandbox",
        "--currency",
        "EUR",
        "--per-unit",
        "0.0000001",
    ]);
    assert!(bad.stderr.contains("six decimals"), "{}", bad.stderr);
    let bad = h.fails(&[
        "channel",
        "price",
        "sandbox",
        "--currency",
        "EUR",
        "--prefix",
        "44=0.1",
    ]);
    assert!(bad.stderr.contains("prefix"), "{}", bad.stderr);
    let cleared = h.ok(&["channel", "price", "sandbox", "--clear"]);
    assert!(cleared.contains("no prices"), "{cleared}");
    let text = h.ok(&["campaign", "estimate", &id.to_string()]);
    assert!(text.contains("estimated cost: unknown"), "{text}");

    h.ok(&["campaign", "start", &id.to_string()]);
    let started = h.fails(&["campaign", "estimate", &id.to_string()]);
    assert!(started.stderr.contains("sending"), "{}", started.stderr);
}
