//! A `gradata serve` on a brain directory of its own, for the brain routes' tests: the files a
//! test puts in the brain, the daemon, and posting JSON to it. Each test file adds the
//! helpers only it needs in an `impl Brain` of its own.

use std::path::PathBuf;

use serde_json::Value;

use super::daemon::{Daemon, Spec, post_json};

/// A served brain, removed with the value.
pub struct Brain {
    pub daemon: Daemon,
    pub dir: PathBuf,
    _guard: tempfile::TempDir,
}

impl Brain {
    /// Writes `files` (name, content) into a fresh brain directory and serves it; ready when
    /// returned.
    pub fn serve(files: &[(&str, &str)]) -> Brain {
        let (guard, dir) = super::temp_dir();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let daemon = Spec::new(&dir).spawn();
        daemon.expect_ready();
        Brain {
            daemon,
            dir,
            _guard: guard,
        }
    }

    /// Posts `body` to `path` and returns the status and the JSON answer.
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = post_json(self.daemon.addr(), path, &body);
        (response.status, response.json())
    }

    /// Posts `body` to `path`, expecting 200.
    pub fn ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.post(path, body);
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }
}
