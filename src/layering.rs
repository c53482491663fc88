//! The direction of dependencies between Herald's crates and top-level modules
//! (docs/ARCHITECTURE.md), checked twice: `cargo metadata` must show every workspace crate
//! depending only on crates below it, and the sources must show every `crate::x` a module
//! uses in its own layer or a lower one, with no cycle. A new top-level module must be
//! placed in a layer here (and its file in that layer's crate), so where it sits is decided
//! once, in one place.

/// From the bottom up: each layer's crate and modules. A module may use modules of its own
/// layer and of the layers below; a crate (its layers' crates in this order) may depend only
/// on the crates before it. `herald-fakes` (the fake providers) stands apart and may use
/// only `herald-core`.
pub const LAYERS: &[(&str, &str, &[&str])] = &[
    (
        "core",
        "herald-core",
        &[
            "address",
            "alerts",
            "channel_kind",
            "clock",
            "config",
            "contact_filter",
            "contact_rules",
            "credentials",
            "domain",
            "email_content",
            "email_feedback",
            "events",
            "ids",
            "optout",
            "outbound",
            "pricing",
            "reasons",
            "secrets",
            "segments",
            "send_window",
            "signatures",
            "telemetry",
            "template",
            "tracked_links",
            "unsubscribe_link",
            "webhook_admission",
            "whatsapp_template",
        ],
    ),
    ("store", "herald-store", &["store"]),
    (
        "channels",
        "herald-channels",
        &["channels", "export", "import"],
    ),
    ("engine", "herald-engine", &["engine", "doctor", "estimate"]),
    ("http-state", "herald-api", &["app_state"]),
    ("http-handlers", "herald-api", &["api", "webhooks"]),
    // The command line sits below the dashboard: `herald serve` is handed the router
    // (`cli::RouterFactory`), so a page change does not recompile the commands.
    ("server", "herald-cli", &["server"]),
    ("command-line", "herald-cli", &["cli"]),
    ("dashboard", "herald-web", &["web"]),
    ("http-router", "herald", &["http", "fuzzing"]),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|(_, _, ms)| ms.contains(&module))
    }

    /// The workspace's crates from the bottom up, as [`LAYERS`] orders them.
    fn crates() -> Vec<&'static str> {
        let mut crates: Vec<&'static str> = LAYERS.iter().map(|(_, c, _)| *c).collect();
        crates.dedup();
        crates
    }

    fn workspace() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// The source directory of each crate of [`crates`].
    fn crate_sources() -> Vec<(&'static str, PathBuf)> {
        crates()
            .into_iter()
            .map(|name| {
                let dir = if name == "herald" {
                    workspace().join("src")
                } else {
                    workspace().join("crates").join(name).join("src")
                };
                (name, dir)
            })
            .collect()
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every Rust file of the layered crates: its path from the workspace root and its
    /// shipped code (the text before its first `#[cfg(test)]`).
    fn shipped_sources() -> Vec<(PathBuf, String, String)> {
        let mut out = Vec::new();
        for (_, src) in crate_sources() {
            let mut files = Vec::new();
            rust_files(&src, &mut files);
            for file in files {
                let rel = file
                    .strip_prefix(workspace())
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
                out.push((file, rel, code));
            }
        }
        out
    }

    /// Each top-level module, the crate its files are in, and the top-level modules its
    /// non-test code names as `crate::x`.
    fn uses() -> BTreeMap<String, (&'static str, BTreeSet<String>)> {
        let mut uses: BTreeMap<String, (&'static str, BTreeSet<String>)> = BTreeMap::new();
        for (crate_name, src) in crate_sources() {
            let mut files = Vec::new();
            rust_files(&src, &mut files);
            for file in files {
                let rel = file.strip_prefix(&src).unwrap_or(&file);
                let first = rel
                    .components()
                    .next()
                    .map(|c| {
                        c.as_os_str()
                            .to_string_lossy()
                            .trim_end_matches(".rs")
                            .to_string()
                    })
                    .unwrap_or_default();
                if matches!(first.as_str(), "lib" | "main" | "bin" | "layering") {
                    continue;
                }
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                // Test modules may reach anywhere; only the shipped code is layered.
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                let (_, used) = uses
                    .entry(first.clone())
                    .or_insert((crate_name, BTreeSet::new()));
                for (i, _) in code.match_indices("crate::") {
                    let name: String = code[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != first {
                        used.insert(name);
                    }
                }
            }
        }
        uses
    }

    #[test]
    fn every_module_has_a_layer_and_uses_only_its_own_or_lower_ones() {
        let uses = uses();
        let mut wrong = Vec::new();
        for (module, (crate_name, used)) in &uses {
            let Some(mine) = layer_of(module) else {
                wrong.push(format!("`{module}` is in no layer of src/layering.rs"));
                continue;
            };
            if LAYERS[mine].1 != *crate_name {
                wrong.push(format!(
                    "`{module}` ({}) belongs in crate {}, but its files are in {crate_name}",
                    LAYERS[mine].0, LAYERS[mine].1
                ));
            }
            for other in used {
                match layer_of(other) {
                    Some(theirs) if theirs > mine => wrong.push(format!(
                        "`{module}` ({}) uses `{other}` ({}), a higher layer",
                        LAYERS[mine].0, LAYERS[theirs].0
                    )),
                    _ => {}
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn top_level_modules_form_no_cycle() {
        let uses = uses();
        // Depth-first search; a module met again while still on the path closes a cycle.
        fn visit(
            m: &str,
            uses: &BTreeMap<String, (&'static str, BTreeSet<String>)>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| p == m) {
                let mut cycle = path[at..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            if done.contains(m) {
                return None;
            }
            path.push(m.to_string());
            for next in uses.get(m).into_iter().flat_map(|(_, used)| used) {
                if let Some(c) = visit(next, uses, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(m.to_string());
            None
        }
        let mut done = BTreeSet::new();
        for m in uses.keys() {
            if let Some(cycle) = visit(m, &uses, &mut Vec::new(), &mut done) {
                panic!("import cycle: {}", cycle.join(" -> "));
            }
        }
    }

    /// Every SQL difference between the two databases is a `Dialect` method backed by
    /// sqlite.rs and postgres.rs; the store's entity files ask for text and never branch on
    /// the dialect, and no store file is over about 800 lines (issue 13).
    #[test]
    fn store_entity_files_do_not_branch_on_the_dialect_and_stay_small() {
        let store = workspace().join("crates/herald-store/src/store");
        let mut files = Vec::new();
        rust_files(&store, &mut files);
        assert!(files.len() > 20, "the scan found only {files:?}");
        let dialect_files = ["dialect.rs", "sqlite.rs", "postgres.rs"];
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines = text.lines().count();
            assert!(
                lines <= 800,
                "{} has {lines} lines: split it by what it stores",
                file.display()
            );
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if file.parent() == Some(store.as_path()) && dialect_files.contains(&name) {
                continue;
            }
            for needle in [
                "match self.dialect",
                "Dialect::Postgres",
                "Dialect::Sqlite",
                "dialect ==",
            ] {
                assert!(
                    !text.contains(needle),
                    "{} contains `{needle}`: add a Dialect method instead",
                    file.display()
                );
            }
        }
    }

    /// A channel kind's name is written as a string literal only in the kind's own files
    /// (`channel_kind/<kind>.rs` in herald-core, its descriptor; `channels/<kind>.rs` in
    /// herald-channels, its channel): everywhere else a kind is a `ChannelKind`, parsed
    /// once at the edge, and what depends on it asks the descriptor (issue 13). Test code
    /// is not scanned, nor herald-fakes, whose fake providers speak the providers'
    /// protocols (`"messaging_product": "whatsapp"`), not Herald's kinds.
    #[test]
    fn kind_names_are_written_only_in_their_own_files() {
        // (file, name, why it may be written there).
        const ALLOWED: &[(&str, &str, &str)] = &[
            (
                "crates/herald-core/src/channel_kind/twilio.rs",
                "whatsapp",
                "Twilio's `whatsapp` setting (WhatsApp through Twilio), not the kind",
            ),
            (
                "crates/herald-core/src/reasons.rs",
                "smtp",
                "reads stored error text, where `smtp` is the SMTP channel's own prefix",
            ),
            (
                "crates/herald-core/src/tracked_links.rs",
                "whatsapp",
                "a User-Agent fragment of WhatsApp's link-preview fetcher, not the channel kind",
            ),
        ];
        let mut wrong = Vec::new();
        let mut own_files_seen = 0;
        let mut allowed_seen = vec![false; ALLOWED.len()];
        for (file, rel, code) in shipped_sources() {
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let dir = file
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str())
                .unwrap_or("");
            for kind in crate::channel_kind::ALL {
                let name = kind.as_str();
                let literal = format!("\"{name}\"");
                let own = stem == name && matches!(dir, "channel_kind" | "channels");
                for (n, line) in code.lines().enumerate() {
                    if !line.contains(&literal) || line.trim_start().starts_with("//") {
                        continue;
                    }
                    let allowed = ALLOWED.iter().position(|(f, k, _)| *f == rel && *k == name);
                    if own {
                        own_files_seen += 1;
                    } else if let Some(i) = allowed {
                        allowed_seen[i] = true;
                    } else {
                        wrong.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "a channel kind's name written outside its own files: parse it into a \
             ChannelKind at the edge, or ask its descriptor (crates/herald-core/src/\
             channel_kind/), instead:\n{}",
            wrong.join("\n")
        );
        for ((file, name, why), seen) in ALLOWED.iter().zip(allowed_seen) {
            assert!(
                seen,
                "{file} no longer writes `{name}` ({why}): drop it from ALLOWED"
            );
        }
        // Each kind's descriptor writes its name once: the scan read them.
        assert!(
            own_files_seen >= crate::channel_kind::ALL.len(),
            "the scan saw {own_files_seen} names in the kinds' own files"
        );
    }

    /// An id is a typed id (`CampaignId`, `ChannelId`, … in crates/herald-core/src/ids.rs)
    /// everywhere in the shipped code: a field, parameter or binding named `id`, `*_id` or
    /// `*_ids` of a bare integer type is how a campaign id once reached a function that
    /// wanted a channel id. Only the id machinery itself holds the row number.
    #[test]
    fn ids_are_typed_outside_the_id_machinery() {
        // (file, why it may hold a bare row number).
        const ALLOWED: &[(&str, &str)] = &[
            (
                "crates/herald-core/src/ids.rs",
                "the typed ids themselves: formatting, parsing and `from_row`",
            ),
            (
                "crates/herald-api/src/api/mod.rs",
                "`encode_id`, the canonical text of a row number for any prefix",
            ),
        ];
        const BARE: [&str; 6] = [
            ": i64",
            ": &i64",
            ": Option<i64>",
            ": Vec<i64>",
            ": &[i64]",
            ": Option<Option<i64>>",
        ];
        let mut wrong = Vec::new();
        let mut names_seen = 0;
        for (_, rel, code) in shipped_sources() {
            if ALLOWED.iter().any(|(f, _)| *f == rel) {
                continue;
            }
            for (n, line) in code.lines().enumerate() {
                let line = line.trim();
                if line.starts_with("//") {
                    continue;
                }
                for bare in BARE {
                    for (at, _) in line.match_indices(bare) {
                        // Only a type annotation ends the name: `x: i64,`, `x: i64)`,
                        // `x: i64 =`, not `x: i64x` or a longer type.
                        let after = line[at + bare.len()..].chars().next();
                        if after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                            continue;
                        }
                        let name: String = line[..at]
                            .chars()
                            .rev()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect();
                        if name == "id" || name.ends_with("_id") || name.ends_with("_ids") {
                            wrong.push(format!("{rel}:{}: {line}", n + 1));
                        } else if !name.is_empty() {
                            names_seen += 1;
                        }
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "an id held as a bare integer: use its typed id from crates/herald-core/src/\
             ids.rs (bound to SQL as the row number, printed as `cmp_2`), and `.get()` only \
             where a wire format wants the number:\n{}",
            wrong.join("\n")
        );
        // The scan read code: counts, times and limits are bare integers by the hundred.
        assert!(names_seen > 100, "the scan saw {names_seen} bare integers");
    }

    #[test]
    fn the_checker_sees_a_known_use() {
        // If the scan stopped reading files, the two tests above would pass on nothing.
        let uses = uses();
        assert!(uses["engine"].1.contains("store"), "{uses:?}");
        assert!(uses["api"].1.contains("app_state"), "{uses:?}");
        assert_eq!(uses["web"].0, "herald-web", "{uses:?}");
    }

    /// `cargo metadata` lists exactly the crates of [`LAYERS`] and `herald-fakes`, and each
    /// depends (normal, dev or build) only on Herald crates below it.
    #[test]
    fn workspace_crates_depend_only_downwards() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let out = std::process::Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(workspace())
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metadata: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
        let packages = metadata["packages"].as_array().expect("packages");
        let mut names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
        names.sort();
        let crates = crates();
        let mut expected: Vec<&str> = crates.iter().copied().chain(["herald-fakes"]).collect();
        expected.sort();
        assert_eq!(names, expected, "the workspace's members");
        let rank = |name: &str| crates.iter().position(|c| *c == name);
        let mut wrong = Vec::new();
        for package in packages {
            let name = package["name"].as_str().unwrap_or_default();
            for dep in package["dependencies"].as_array().into_iter().flatten() {
                let dep_name = dep["name"].as_str().unwrap_or_default();
                if !expected.contains(&dep_name) {
                    continue; // an external crate
                }
                let allowed = match (name, dep_name) {
                    ("herald-fakes", d) => d == "herald-core",
                    // The `herald` package builds the fakes' binary for the tests.
                    ("herald", "herald-fakes") => true,
                    (n, d) => matches!((rank(n), rank(d)), (Some(a), Some(b)) if b < a),
                };
                if !allowed {
                    wrong.push(format!("{name} depends on {dep_name}"));
                }
            }
        }
        assert!(wrong.is_empty(), "upward or sideways: {}", wrong.join(", "));
        // The walk saw real edges: the top depends on the bottom.
        let herald = packages
            .iter()
            .find(|p| p["name"] == "herald")
            .expect("herald");
        assert!(
            herald["dependencies"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["name"] == "herald-core")),
            "{herald}"
        );
    }
}
