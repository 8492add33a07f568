//! The pid file the Python Gradata daemon wrote with `--pid-file`, and its tools read: JSON with
//! `port`, `pid`, `brain_dir`, `sdk_version` and `started_at`. [`PidFile::write`] replaces it
//! atomically (a temporary file beside it, fsynced, renamed over it, the directory fsynced), so a
//! reader sees the old file or the new one, never half of one; [`PidFile::remove`] deletes it at a
//! clean stop. A crash leaves it behind (stale: its `pid` is gone), and the next start replaces it.
//!
//! It knows nothing of when the service is ready or stops; `daemon` calls it at those points.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

/// What the pid file says, field for field as the original wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contents {
    /// The TCP port served: the first TCP listener's (the plugin's, by default).
    pub port: u16,
    /// This process.
    pub pid: u32,
    /// The data directory, absolute.
    pub brain_dir: PathBuf,
    /// gradata's version (the original wrote the Python SDK's).
    pub sdk_version: &'static str,
    /// When the service started, ISO 8601 in UTC as Python's `isoformat()` writes it
    /// (`2026-12-07T17:00:09.123456+00:00`).
    pub started_at: String,
}

impl Contents {
    /// The contents for this process, started at `started`.
    pub fn new(port: u16, brain_dir: &Path, started: SystemTime) -> Contents {
        // The original resolves `--brain-dir`; a relative data directory would say nothing to a
        // reader in another working directory.
        let brain_dir = std::path::absolute(brain_dir).unwrap_or_else(|_| brain_dir.to_path_buf());
        Contents {
            port,
            pid: std::process::id(),
            brain_dir,
            sdk_version: env!("CARGO_PKG_VERSION"),
            started_at: python_isoformat(started),
        }
    }
}

/// A pid file this process wrote and removes when it stops cleanly.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes `contents` to `path` atomically, replacing any file there (a stale one from a
    /// crash, say).
    pub fn write(path: &Path, contents: &Contents) -> std::io::Result<PidFile> {
        let mut text = serde_json::to_string_pretty(contents).map_err(std::io::Error::other)?;
        text.push('\n');
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Named after this process, so two starts racing never write into one temporary file.
        let temporary = directory.join(format!(".daemon.pid.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&temporary).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        if let Err(err) = written.and_then(|()| std::fs::rename(&temporary, path)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(err);
        }
        // The rename is durable only once the directory is.
        std::fs::File::open(&directory)?.sync_all()?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes it; one already gone is fine.
    pub fn remove(self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

/// `time` as Python's `datetime.isoformat()` writes an aware UTC time: microseconds, `+00:00`.
fn python_isoformat(time: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_micros(time).to_string();
    match rfc3339.strip_suffix('Z') {
        Some(local) => format!("{local}+00:00"),
        None => rfc3339,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn started_at_is_python_isoformat_in_utc() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_662_809_123_456);
        assert_eq!(python_isoformat(time), "2026-12-07T17:00:09.123456+00:00");
    }

    /// The file holds exactly the original's fields, replaces a stale one, and is gone after
    /// `remove` (which a second time is no error).
    #[test]
    fn writes_replaces_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.pid");
        std::fs::write(&path, "{\"pid\": 1, \"port\": 8765}").unwrap();
        let contents = Contents::new(7342, Path::new("brain"), SystemTime::now());
        let written = PidFile::write(&path, &contents).unwrap();
        let read: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let keys: Vec<&str> = read
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = ["brain_dir", "pid", "port", "sdk_version", "started_at"];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(read["port"], 7342);
        assert_eq!(read["pid"], std::process::id());
        assert!(
            read["brain_dir"].as_str().unwrap().starts_with('/'),
            "{read}"
        );
        assert_eq!(read["sdk_version"], env!("CARGO_PKG_VERSION"));
        // Nothing else was left in the directory (no temporary file).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        written.remove().unwrap();
        assert!(!path.exists());
        PidFile { path }.remove().unwrap();
    }
}
