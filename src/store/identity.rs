//! The brain id put in every payload (`{"brain_id": …}`), when the configuration does not set one:
//! the `.tenant_id` of a Gradata brain directory (what the original daemon used), else the service's
//! own id in `brain_id`, made once as a ULID and kept, so it never changes across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// File of a Gradata brain directory holding its tenant id.
const TENANT_FILE: &str = ".tenant_id";
/// gradata's own id file, created on first start.
const BRAIN_ID_FILE: &str = "brain_id";

/// Reads, or creates once, the brain id of `data_dir`.
pub fn resolve_brain_id(data_dir: &Path) -> std::io::Result<String> {
    for name in [TENANT_FILE, BRAIN_ID_FILE] {
        match std::fs::read_to_string(data_dir.join(name)) {
            Ok(text) if is_valid(text.trim()) => return Ok(text.trim().to_owned()),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    let id = ulid::Ulid::new().to_string();
    // Written to a temporary file and renamed, so a crash never leaves a half-written id.
    let temporary = data_dir.join(format!(".{BRAIN_ID_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(super::PRIVATE_FILE_MODE)
        .open(&temporary)?;
    file.write_all(id.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, data_dir.join(BRAIN_ID_FILE))?;
    Ok(id)
}

fn is_valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve_brain_id(dir.path()).unwrap();
        assert_eq!(first.len(), 26);
        assert_eq!(resolve_brain_id(dir.path()).unwrap(), first);
    }

    #[test]
    fn a_brain_directory_keeps_its_tenant_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TENANT_FILE), "tenant-42\n").unwrap();
        assert_eq!(resolve_brain_id(dir.path()).unwrap(), "tenant-42");
        assert!(!dir.path().join(BRAIN_ID_FILE).exists());
    }
}
