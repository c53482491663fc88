//! The direction of dependencies between Herald's top-level modules (docs/ARCHITECTURE.md),
//! checked by reading the sources: every `crate::x` a module uses must be in its own layer
//! or a lower one, and the modules form no cycle. A new top-level module must be placed in
//! a layer here, so where it sits is decided once, in one place.

/// From the bottom up. A module may use modules of its own layer and of the layers below.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "core",
        &[
            "address",
            "alerts",
            "channel_kind",
            "clock",
            "config",
            "contact_rules",
            "credentials",
            "domain",
            "events",
            "ids",
            "optout",
            "outbound",
            "reasons",
            "secrets",
            "segments",
            "signatures",
            "telemetry",
            "template",
            "unsubscribe_link",
            "webhook_admission",
        ],
    ),
    ("store", &["store"]),
    ("channels", &["channels", "import"]),
    ("engine", &["engine", "doctor"]),
    ("http-state", &["app_state"]),
    ("http-handlers", &["api", "webhooks"]),
    ("dashboard", &["web"]),
    ("http-server", &["http", "server", "fuzzing"]),
    ("binary", &["cli"]),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|(_, ms)| ms.contains(&module))
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

    /// Each top-level module and the top-level modules its non-test code names as
    /// `crate::x`.
    fn uses() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
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
            let used = uses.entry(first.clone()).or_default();
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
        uses
    }

    #[test]
    fn every_module_has_a_layer_and_uses_only_its_own_or_lower_ones() {
        let uses = uses();
        let mut wrong = Vec::new();
        for (module, used) in &uses {
            let Some(mine) = layer_of(module) else {
                wrong.push(format!("`{module}` is in no layer of src/layering.rs"));
                continue;
            };
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
            uses: &BTreeMap<String, BTreeSet<String>>,
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
            for next in uses.get(m).into_iter().flatten() {
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
        let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
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

    #[test]
    fn the_checker_sees_a_known_use() {
        // If the scan stopped reading files, the two tests above would pass on nothing.
        let uses = uses();
        assert!(uses["engine"].contains("store"), "{uses:?}");
        assert!(uses["api"].contains("app_state"), "{uses:?}");
    }
}
