//! Where the data directory and the ingest API key come from when the configuration does not
//! name them: systemd's `STATE_DIRECTORY` and `CREDENTIALS_DIRECTORY`, the XDG state directory,
//! the key files.
//!
//! The key is only ever held as an [`ApiKey`], whose `Debug` is redacted. Every key is checked
//! here, where its source is known, so a key that could never be sent (two lines, a comment, a
//! control character) is a configuration error naming that source, never a failure after the
//! service has bound its sockets and opened the store.

use std::path::{Path, PathBuf};

use super::{CREDENTIAL_NAME, Environment, Error, Flags, Source};
use crate::sync::ApiKey;

pub(super) fn resolve_data_dir(
    configured: Option<&Path>,
    env: &Environment,
) -> Result<PathBuf, Error> {
    // An empty path (`data_dir = ""`, `--data-dir ''`) means "not configured", never the
    // current directory.
    if let Some(dir) = configured.filter(|dir| !dir.as_os_str().is_empty()) {
        return Ok(dir.to_path_buf());
    }
    // systemd's StateDirectory= may list several directories separated by colons; ours is first.
    if let Some(dir) = env
        .get("STATE_DIRECTORY")
        .and_then(|dirs| dirs.split(':').next())
        .filter(|d| !d.is_empty())
    {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env.get("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(Path::new(dir).join("gradata"));
    }
    if let Some(home) = env.get("HOME").filter(|d| !d.is_empty()) {
        return Ok(Path::new(home).join(".local/state/gradata"));
    }
    Err(Error::NoDataDir)
}

/// Finds the API key: `--api-key-file`/`GRADATA_API_KEY_FILE` > `GRADATA_API_KEY` >
/// `$CREDENTIALS_DIRECTORY/api-key` > `sync.api_key_file` > for a user's instance only, the
/// SDK's key file (see [`user_key_file`]). Returns the key (if any) and a
/// description of where it came from, or of every place searched.
pub(super) fn resolve_api_key(
    flags: &Flags,
    env: &Environment,
    configured_file: &Path,
    configured_source: &Source,
) -> Result<(Option<ApiKey>, String), Error> {
    let explicit = flags
        .api_key_file
        .clone()
        .map(|path| (path, "--api-key-file"))
        .or_else(|| {
            env.get("GRADATA_API_KEY_FILE")
                .filter(|p| !p.trim().is_empty())
                .map(|p| (PathBuf::from(p), "GRADATA_API_KEY_FILE"))
        });
    if let Some((path, origin)) = explicit {
        // A file named explicitly must exist: a typo should not silently disable sync.
        let key = read_key_file(&path, &Source::Flag(origin))?;
        return Ok(match key {
            Some(key) => (
                Some(key),
                format!("file {} (from {origin})", path.display()),
            ),
            None => (None, format!("{} (from {origin}) is empty", path.display())),
        });
    }
    let mut looked = vec![String::from(
        "--api-key-file and GRADATA_API_KEY_FILE are unset",
    )];
    match env.get("GRADATA_API_KEY") {
        Some(value) => match checked_key(value, || {
            ("the key".to_owned(), Source::Env("GRADATA_API_KEY"))
        })? {
            Some(key) => return Ok((Some(key), "environment variable GRADATA_API_KEY".to_owned())),
            None => looked.push("GRADATA_API_KEY is empty".to_owned()),
        },
        None => looked.push("GRADATA_API_KEY is unset".to_owned()),
    }
    match env.get("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        Some(dir) => {
            let path = Path::new(dir).join(CREDENTIAL_NAME);
            // An unreadable credentials directory is systemd's business (containers without
            // credential support hand over an empty root-only one); say so and look further
            // rather than refuse to start.
            match read_optional_key_file(&path, &Source::Env("CREDENTIALS_DIRECTORY")) {
                Ok(Some(key)) => {
                    return Ok((Some(key), format!("systemd credential {}", path.display())));
                }
                Ok(None) => looked.push(format!("{} is missing or empty", path.display())),
                Err(Error::Io { err, .. }) => {
                    looked.push(format!("{} is unreadable ({err})", path.display()))
                }
                Err(other) => return Err(other),
            }
        }
        None => looked.push("CREDENTIALS_DIRECTORY is unset (no LoadCredential=)".to_owned()),
    }
    // The key file is root-only by design (the service gets the key as a credential), so a CLI
    // run as an ordinary user cannot read it: that is noted, not fatal; sync is then disabled.
    match read_optional_key_file(configured_file, configured_source) {
        Ok(Some(key)) => {
            return Ok((
                Some(key),
                format!(
                    "file {} (sync.api_key_file, {configured_source})",
                    configured_file.display()
                ),
            ));
        }
        Ok(None) => looked.push(format!("{} is missing or empty", configured_file.display())),
        Err(Error::Io { err, .. }) => looked.push(format!(
            "{} is unreadable ({err})",
            configured_file.display()
        )),
        Err(other) => return Err(other),
    }
    match user_key_file(env) {
        Some((path, named_by)) => match read_optional_key_file(&path, &named_by) {
            Ok(Some(key)) => {
                return Ok((
                    Some(key),
                    format!("file {} (the Gradata SDK's key)", path.display()),
                ));
            }
            Ok(None) => looked.push(format!("{} is missing or empty", path.display())),
            Err(Error::Io { err, .. }) => {
                looked.push(format!("{} is unreadable ({err})", path.display()))
            }
            Err(other) => return Err(other),
        },
        None => looked.push(
            "not a user's instance (XDG_RUNTIME_DIR unset), so ~/.gradata/key was not read"
                .to_owned(),
        ),
    }
    Ok((None, format!("looked at: {}", looked.join("; "))))
}

/// The key file the Python SDK keeps (`gradata cloud enable` writes it), for a user's instance:
/// `$GRADATA_HOME/key`, else `~/.gradata/key`. A user's instance is a process with
/// `XDG_RUNTIME_DIR` set, which systemd's user manager gives its services and a login session its
/// shells, and which the system manager never gives a system service: the system service must
/// not pick up whatever key its user's home directory happens to hold.
fn user_key_file(env: &Environment) -> Option<(PathBuf, Source)> {
    env.get("XDG_RUNTIME_DIR")
        .filter(|dir| !dir.trim().is_empty())?;
    if let Some(home) = env.get("GRADATA_HOME").filter(|dir| !dir.trim().is_empty()) {
        return Some((Path::new(home).join("key"), Source::Env("GRADATA_HOME")));
    }
    let home = env.get("HOME").filter(|dir| !dir.trim().is_empty())?;
    Some((Path::new(home).join(".gradata/key"), Source::Env("HOME")))
}

fn read_key_file(path: &Path, named_by: &Source) -> Result<Option<ApiKey>, Error> {
    let text = std::fs::read_to_string(path).map_err(|err| Error::Io {
        path: path.to_path_buf(),
        err,
    })?;
    checked_key(&text, || key_file_origin(path, named_by))
}

fn read_optional_key_file(path: &Path, named_by: &Source) -> Result<Option<ApiKey>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => checked_key(&text, || key_file_origin(path, named_by)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::Io {
            path: path.to_path_buf(),
            err,
        }),
    }
}

/// Where a key file's content came from, for an error: the file, and what named it.
fn key_file_origin(path: &Path, named_by: &Source) -> (String, Source) {
    let described = match named_by {
        Source::Env("CREDENTIALS_DIRECTORY") => "the systemd credential".to_owned(),
        Source::Default => "the key file (the default sync.api_key_file)".to_owned(),
        other => format!("the key file (named by {other})"),
    };
    (described, Source::File(path.to_path_buf()))
}

/// Wraps `text` as a key, or says why it cannot be one (`origin` describes where `text` came
/// from, as the subject of the message, and its source). A key is one line of visible ASCII: that
/// is what an `Authorization` header can carry, and it is what every Gradata key is. Whitespace
/// around it (a file's final newline) is trimmed; anything else is refused rather than guessed
/// at: a second line may be a comment, or half of a key pasted over two lines, and sending the
/// wrong half would only earn 401s. The key itself is never part of the message.
fn checked_key(
    text: &str,
    origin: impl FnOnce() -> (String, Source),
) -> Result<Option<ApiKey>, Error> {
    let trimmed = text.trim();
    let problem = if trimmed.contains(['\n', '\r']) {
        Some("holds more than one line; put only the key in it, on one line (no comments)")
    } else if trimmed.chars().any(|c| !c.is_ascii_graphic()) {
        Some("holds spaces, control or non-ASCII characters, which an API key never contains")
    } else {
        None
    };
    match problem {
        Some(problem) => {
            let (described, source) = origin();
            Err(Error::Invalid {
                key: "sync.api_key".to_owned(),
                origin: source,
                message: format!("{described} {problem}"),
            })
        }
        None => Ok(ApiKey::new(trimmed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_line_of_visible_ascii() {
        let origin = || ("test".to_owned(), Source::Env("GRADATA_API_KEY"));
        for (text, accepted) in [
            ("gk_live_abc123\n", true),
            ("  gk_live_abc123  \r\n", true),
            ("", true),
            ("abc\ndef\n", false),
            ("gk_live_abc123\n# rotated 2026-11-01\n", false),
            ("gk live", false),
            ("gk\u{7f}live", false),
            ("gk\tlive", false),
            ("gkélive", false),
        ] {
            let checked = checked_key(text, origin);
            assert_eq!(checked.is_ok(), accepted, "{text:?}: {checked:?}");
        }
        let err = checked_key("abc\ndef", origin).unwrap_err().to_string();
        assert!(!err.contains("abc") && !err.contains("def"), "{err}");
        assert!(err.contains("sync.api_key"), "{err}");
    }
}
