//! Where the data directory and the ingest API key come from when the configuration does not
//! name them: systemd's `STATE_DIRECTORY` and `CREDENTIALS_DIRECTORY`, the XDG state directory,
//! the key files.
//!
//! The key is only ever held as an [`ApiKey`], whose `Debug` is redacted.

use std::path::{Path, PathBuf};

use super::{CREDENTIAL_NAME, Environment, Error, Flags, Source};
use crate::sync::ApiKey;

pub(super) fn resolve_data_dir(
    configured: Option<&Path>,
    env: &Environment,
) -> Result<PathBuf, Error> {
    if let Some(dir) = configured {
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
/// `$CREDENTIALS_DIRECTORY/api-key` > `sync.api_key_file`. Returns the key (if any) and a
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
                .filter(|p| !p.is_empty())
                .map(|p| (PathBuf::from(p), "GRADATA_API_KEY_FILE"))
        });
    if let Some((path, origin)) = explicit {
        // A file named explicitly must exist: a typo should not silently disable sync.
        let key = read_key_file(&path)?;
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
        Some(value) => match ApiKey::new(value) {
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
            match read_optional_key_file(&path) {
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
    match read_optional_key_file(configured_file) {
        Ok(Some(key)) => Ok((
            Some(key),
            format!(
                "file {} (sync.api_key_file, {configured_source})",
                configured_file.display()
            ),
        )),
        Ok(None) => {
            looked.push(format!("{} is missing or empty", configured_file.display()));
            Ok((None, format!("looked at: {}", looked.join("; "))))
        }
        Err(Error::Io { err, .. }) => {
            looked.push(format!(
                "{} is unreadable ({err})",
                configured_file.display()
            ));
            Ok((None, format!("looked at: {}", looked.join("; "))))
        }
        Err(other) => Err(other),
    }
}

fn read_key_file(path: &Path) -> Result<Option<ApiKey>, Error> {
    let text = std::fs::read_to_string(path).map_err(|err| Error::Io {
        path: path.to_path_buf(),
        err,
    })?;
    Ok(ApiKey::new(&text))
}

fn read_optional_key_file(path: &Path) -> Result<Option<ApiKey>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(ApiKey::new(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::Io {
            path: path.to_path_buf(),
            err,
        }),
    }
}
