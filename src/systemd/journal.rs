//! Logging straight to the journal: the native protocol with structured fields (`DELIVERED=`,
//! `REASON=`, `MESSAGE_ID=`…) and syslog priorities that match the levels (INFO is 6, not the
//! crate default 5).

use std::os::unix::fs::MetadataExt;

use tracing_journald::{Priority, PriorityMappings};

/// The `SYSLOG_IDENTIFIER` of every record.
pub const SYSLOG_IDENTIFIER: &str = "gradata";

/// A journald layer with gradata's field and priority conventions; `Err` when there is no journal
/// socket to talk to.
pub fn layer() -> std::io::Result<tracing_journald::Layer> {
    let mappings = PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    };
    Ok(tracing_journald::layer()?
        .with_field_prefix(None)
        .with_priority_mappings(mappings)
        .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned()))
}

/// Whether systemd connected our stderr to the journal (`JOURNAL_STREAM` names stderr's device and
/// inode), or started us with a journal socket to talk to (`INVOCATION_ID` set, socket present).
pub fn running_under_journal() -> bool {
    if let Ok(stream) = std::env::var("JOURNAL_STREAM") {
        if let (Some((dev, ino)), Ok(meta)) =
            (stream.split_once(':'), std::fs::metadata("/proc/self/fd/2"))
        {
            if dev.parse::<u64>().ok() == Some(meta.dev())
                && ino.parse::<u64>().ok() == Some(meta.ino())
            {
                return true;
            }
        }
    }
    std::env::var_os("INVOCATION_ID").is_some()
        && std::path::Path::new("/run/systemd/journal/socket").exists()
}
