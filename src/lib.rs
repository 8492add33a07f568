//! gradata: a systemd-native service that serves a Gradata brain to the Gradata plugin, and takes
//! events over loopback HTTP, commits each one durably to an SQLite outbox, and forwards it
//! at-least-once to the Gradata cloud ingest API. `docs/ARCHITECTURE.md` is the map, with the
//! invariants a change must keep.
//!
//! # Layout
//!
//! - [`config`]: one validated `Config` from defaults, file, environment and flags; the API key.
//! - [`store`]: the outbox in `system.db`: migrations, group-commit enqueue, claims under lease,
//!   settlements, status, retention, the lock files; and the brain's `events` table beside it.
//! - [`sync`]: delivery: the ingest client, the response table, the retry policy, the drain
//!   engine every caller shares, the background worker.
//! - [`brain`]: the brain directory (`lessons.md`, the event log, sessions) and every decision of
//!   the brain routes; no HTTP.
//! - [`api`]: the local HTTP API: routes, guards, `serve` on the listeners it is given.
//! - [`daemon`]: the one place that orders startup and shutdown of `gradata serve`.
//! - [`cli`]: the subcommands; `main.rs` only parses and maps errors to exit codes.
//! - [`systemd`]: notifications, socket activation, the journal.
//! - [`clock`]: the wall-clock times that are stored; [`metrics`]: the Prometheus registry;
//!   [`logging`]: where log records go, and how an error's causes are printed.
//!
//! Dependencies point one way: `clock`, `metrics` and `systemd` are leaves; `store` uses only
//! `clock`; `sync` and `brain` use `store`, neither the other; `api` uses `brain`, `store` and
//! `sync`; `daemon` and `cli` use everything. The test `dependencies_point_one_way` checks it.

pub mod api;
pub mod brain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod store;
pub mod sync;
pub mod systemd;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    const MODULES: [&str; 11] = [
        "api", "brain", "cli", "clock", "config", "daemon", "logging", "metrics", "store", "sync",
        "systemd",
    ];

    /// The crate's modules that each module's code must not name. `logging` is missing from the
    /// lists of the modules that are not leaves: its error-chain printer is used everywhere.
    const FORBIDDEN: [(&str, &[&str]); 10] = [
        ("clock", &MODULES),
        ("metrics", &MODULES),
        ("systemd", &MODULES),
        (
            "store",
            &[
                "api", "brain", "cli", "config", "daemon", "metrics", "sync", "systemd",
            ],
        ),
        (
            "sync",
            &["api", "brain", "cli", "config", "daemon", "systemd"],
        ),
        (
            "brain",
            &[
                "api", "cli", "config", "daemon", "metrics", "sync", "systemd",
            ],
        ),
        ("api", &["cli", "config", "daemon", "systemd"]),
        ("config", &["cli", "daemon"]),
        ("logging", &["cli", "daemon"]),
        ("daemon", &["cli"]),
    ];

    /// The source files of a module: `src/<module>.rs` and everything under `src/<module>/`.
    fn sources(module: &str) -> Vec<PathBuf> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = rust_files(&src.join(module));
        let single = src.join(format!("{module}.rs"));
        if single.is_file() {
            files.push(single);
        }
        files
    }

    /// Every `.rs` file under `dir`, at any depth.
    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    files.push(path);
                }
            }
        }
        files
    }

    fn line_count(path: &Path) -> usize {
        std::fs::read_to_string(path).unwrap().lines().count()
    }

    /// The sizes that keep a file readable in one sitting: no source file over 600 lines, no
    /// test file over 1,200, `daemon.rs` (the order of startup and shutdown) under 450, and the
    /// architecture document under 250. Split along a seam rather than raise a limit.
    #[test]
    fn files_stay_small_enough_to_change_with_confidence() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut too_long = Vec::new();
        for (dir, limit) in [("src", 600), ("tests", 1_200)] {
            for file in rust_files(&root.join(dir)) {
                let lines = line_count(&file);
                if lines > limit {
                    too_long.push(format!(
                        "{}: {lines} lines (at most {limit})",
                        file.display()
                    ));
                }
            }
        }
        for (file, below) in [("src/daemon.rs", 450), ("docs/ARCHITECTURE.md", 250)] {
            let lines = line_count(&root.join(file));
            if lines >= below {
                too_long.push(format!("{file}: {lines} lines (under {below})"));
            }
        }
        assert!(too_long.is_empty(), "{}", too_long.join("\n"));
    }

    /// The crate's top-level modules a line of code names as `crate::<module>` or inside
    /// `crate::{…}`. Comments are left out: a doc may mention any module.
    fn named_modules(line: &str) -> Vec<String> {
        let code = line.split("//").next().unwrap_or_default();
        let mut named = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            named.push(first_segment(&group[start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            named.push(first_segment(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                named.push(first_segment(rest));
            }
        }
        named
    }

    fn first_segment(path: &str) -> String {
        path.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    }

    #[test]
    fn the_parser_finds_every_form_of_a_crate_path() {
        assert_eq!(named_modules("use crate::store::Store;"), ["store"]);
        assert_eq!(
            named_modules("use crate::{store::{self, Store}, sync};"),
            ["store", "sync"]
        );
        assert_eq!(
            named_modules("let x = crate::clock::now(); // crate::api"),
            ["clock"]
        );
        assert!(named_modules("/// See [`crate::api`].").is_empty());
    }

    #[test]
    fn dependencies_point_one_way() {
        let mut wrong = Vec::new();
        for (module, forbidden) in FORBIDDEN {
            let files = sources(module);
            assert!(!files.is_empty(), "no source file for {module}");
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                for (number, line) in text.lines().enumerate() {
                    for named in named_modules(line) {
                        if named != module && forbidden.contains(&named.as_str()) {
                            wrong.push(format!(
                                "{}:{}: {module} names crate::{named}",
                                file.display(),
                                number + 1
                            ));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
