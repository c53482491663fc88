//! What a campaign manager does after a campaign, from the command line (issue 14):
//! export its messages, the contacts and the suppression list as CSV.

use crate::both_stores;
use crate::support::{Backend, Herald, n};

both_stores!(export_from_the_command_line);

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

fn export_from_the_command_line(backend: Backend) {
    let h = Herald::migrated(backend);
    h.import_contacts("people", 30);
    h.sandbox_channel("flaky", &["--permanent-fail-rate", "0.3"]);
    let id = h.create_campaign("export", "people", "flaky", &["--auto-pause", "off"]);
    h.ok(&["campaign", "start", &id.to_string()]);
    let worker = h.spawn(&["worker"], "worker");
    let done = h.wait_completed(id, &[&worker]);
    drop(worker);

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
    let (header, rows) = csv_rows(&written);
    assert_eq!(header, herald::export::MESSAGE_COLUMNS);
    assert_eq!(rows.len() as i64, n(&done, "total"));
    let status = header.iter().position(|c| c == "status").unwrap();
    let failed = rows.iter().filter(|r| &r[status] == "failed").count() as i64;
    assert_eq!(failed, n(&done, "failed"), "{done}");
    let code = header.iter().position(|c| c == "error_code").unwrap();
    assert!(
        rows.iter()
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
}
