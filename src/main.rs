//! The `gradata` binary: parse the command line, run it, turn the outcome into an exit code.
//!
//! The exit policy lives here and only here: 0 success, 78 (EX_CONFIG) a configuration that cannot
//! be used (the settings, the key, or a socket systemd passed that cannot be listened on), 1
//! anything else. Returning (rather than `process::exit`) lets destructors run, so the
//! store closes and its locks are released.

use std::process::ExitCode;

use gradata::cli;
use gradata::config;
use gradata::daemon;

/// `sysexits.h` EX_CONFIG.
const EX_CONFIG: u8 = 78;

/// The service allocates and frees small buffers on every request from several threads at once
/// (headers, JSON values, the rows of a group commit); mimalloc's per-thread pages serve that with
/// far less lock traffic than the system allocator's arenas. Built without its transparent huge
/// pages: a `/correct` batch allocates and frees a few MB each time, and the kernel zeroed a 2 MB
/// page for every one mimalloc took back (28% of the CPU at 16 clients on 10,000 lessons).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::parse();
    match cli::run(args) {
        Ok(cli::Outcome::Success) => ExitCode::SUCCESS,
        Ok(cli::Outcome::Failure) => ExitCode::FAILURE,
        Err(err) => {
            let code = if err.chain().any(is_configuration) {
                EX_CONFIG
            } else {
                1
            };
            cli::report_error(&err);
            ExitCode::from(code)
        }
    }
}

/// Whether `cause` is a configuration that cannot be used, which no restart fixes: a
/// [`config::Error`], or a socket the service was given but cannot listen on.
fn is_configuration(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.is::<config::Error>()
        || cause
            .downcast_ref::<daemon::Error>()
            .is_some_and(daemon::Error::is_configuration)
}
