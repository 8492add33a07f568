//! `gradata generate man|completions SHELL|config`: the man page and shell completions, generated
//! from the same clap definition that parses the command line, and the example config, generated
//! from the options' declarations, so none can drift from what it describes. Used by the package
//! builds and to refresh `packaging/gradata.toml`; hidden from `--help`.
//!
//! The packages ship one page, gradata(8). It holds every subcommand with its own options (clap's
//! default would refer to a `gradata-serve(8)` page per subcommand, which nothing installs), and
//! the sections an administrator looks for: EXIT STATUS, ENVIRONMENT (every variable, from the
//! same option table the configuration reads), FILES and SEE ALSO.

use std::io::Write;

use anyhow::Context;
use clap::{Arg, CommandFactory, Subcommand};
use roff::{Inline, Roff, bold, italic, roman};

use super::{Cli, Outcome};
use crate::config;

/// What to generate.
#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// The man page gradata(8), in roff, on stdout
    Man,
    /// The example config file, every option at its default and documented, on stdout
    Config,
    /// Completions for a shell, on stdout
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

pub(crate) fn run(command: &GenerateCommand) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    let mut cli = Cli::command();
    match command {
        GenerateCommand::Man => render_man(cli, &mut out).context("writing the man page")?,
        GenerateCommand::Config => out
            .write_all(config::example_config().as_bytes())
            .context("writing the example config")?,
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli, "gradata", &mut out);
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(Outcome::Success)
}

/// The variables read besides each option's own (see [`config::option_keys`]).
const OTHER_VARIABLES: [(&str, &str); 14] = [
    (
        "GRADATA_CONFIG",
        "The config file to read instead of /etc/gradata/gradata.toml; empty: no config file.",
    ),
    (
        "GRADATA_API_KEY",
        "The cloud API key itself (after --api-key-file and GRADATA_API_KEY_FILE).",
    ),
    (
        "GRADATA_API_KEY_FILE",
        "A file holding the cloud API key, as --api-key-file; it must exist.",
    ),
    (
        "GRADATA_CLOUD_SYNC_DISABLE",
        "1 (or true, yes, on): keep events in the outbox and send nothing.",
    ),
    (
        "GRADATA_DAEMON_HOST, GRADATA_DAEMON_PORT",
        "The Gradata plugin's: when GRADATA_LISTEN is unset, listen on HOST:PORT (default 127.0.0.1:7342) and 127.0.0.1:8765.",
    ),
    (
        "GRADATA_BRAIN_DIR",
        "The Gradata SDK's: the data directory, when GRADATA_DATA_DIR is unset.",
    ),
    (
        "GRADATA_DISABLE_WRITE_THROUGH",
        "The Gradata SDK's: 1 does what GRADATA_CLOUD_SYNC_DISABLE=1 does.",
    ),
    (
        "GRADATA_HOME",
        "The Gradata plugin's home (default ~/.gradata): its file key holds the cloud API key of a user's instance.",
    ),
    (
        "Other variables of the Python daemon and the plugin",
        "Accepted without a warning and ignored; docs/compatibility.md lists each with the reason.",
    ),
    ("RUST_LOG", "The log filter, when GRADATA_LOG is unset."),
    (
        "STATE_DIRECTORY",
        "Set by systemd (StateDirectory=): the data directory when none is configured.",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd (LoadCredential=): its file api-key holds the cloud API key.",
    ),
    (
        "XDG_STATE_HOME, HOME",
        "The data directory when neither is configured nor set by systemd: $XDG_STATE_HOME/gradata, else ~/.local/state/gradata.",
    ),
    (
        "LISTEN_FDS, LISTEN_FDNAMES, NOTIFY_SOCKET, WATCHDOG_USEC",
        "Set by systemd: the passed sockets, and where readiness, status and watchdog notifications go.",
    ),
];

/// Renders gradata(8): clap's title, name, synopsis, description and global options, then the
/// commands with their options and the sections written here.
fn render_man(mut cli: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    // Propagates global options and fills in what clap derives (help flags, value names).
    cli.build();
    // Section 8: system administration commands (a daemon and its control tool).
    let man = clap_mangen::Man::new(cli.clone()).section("8");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    render_commands(&mut roff, &cli, "gradata");

    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "Success; for serve, a clean stop."),
        (
            "1",
            "Failure: the store could not be opened, an address could not be bound, a drain stopped on an error the cloud gave, or the service stopped on its own.",
        ),
        (
            "78",
            "Configuration that cannot be used (EX_CONFIG): a bad value, an unknown key, an unreadable file named explicitly, an API key that is not one line of printable ASCII, or a socket passed by systemd that cannot be listened on. gradata.service does not restart on it.",
        ),
    ] {
        tagged(&mut roff, [bold(code)], [roman(meaning)]);
    }

    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "Every option of the config file has a variable; it overrides the file and is overridden by a flag. /etc/gradata/gradata.toml, as shipped, describes each option. An empty variable counts as unset. A GRADATA_ variable that no option reads is ignored with a warning.",
    )]);
    for (key, variable) in config::option_keys() {
        tagged(
            &mut roff,
            [bold(variable)],
            [roman("Sets "), italic(key), roman(".")],
        );
    }
    for (old, new) in config::renamed_variables() {
        tagged(
            &mut roff,
            [bold(old)],
            [
                roman("The old name of "),
                bold(new),
                roman(", still read when that one is unset."),
            ],
        );
    }
    for (variable, meaning) in OTHER_VARIABLES {
        tagged(&mut roff, [bold(variable)], [roman(meaning)]);
    }

    roff.control("SH", ["FILES"]);
    for (path, meaning) in [
        (
            config::DEFAULT_CONFIG_FILE,
            "The configuration; as shipped, every option at its default, documented.",
        ),
        (
            config::DEFAULT_API_KEY_FILE,
            "The cloud API key, one line, owner root, mode 0600; gradata.service gets it as a credential.",
        ),
        (
            "/var/lib/gradata/system.db",
            "The outbox (SQLite, WAL), in the service's state directory.",
        ),
        (
            "/var/lib/gradata/.gradata.lock",
            "Held by the running service: a second one on the same directory fails at once.",
        ),
        (
            "/run/gradata/gradata.sock",
            "The local API on a unix socket (gradata-unix.socket), for members of group gradata.",
        ),
    ] {
        tagged(&mut roff, [italic(path)], [roman(meaning)]);
    }

    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemctl(1), journalctl(1), systemd.socket(5), systemd.exec(5); /usr/share/doc/gradata/README.md and operations.md.",
    )]);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// A tagged paragraph (`.TP`): `term` on its own line, `meaning` indented below it.
fn tagged(roff: &mut Roff, term: impl Into<Vec<Inline>>, meaning: impl Into<Vec<Inline>>) {
    roff.control("TP", []);
    roff.text(term);
    roff.text(meaning);
}

/// One subsection per visible command that runs something (`gradata queue list`, not `gradata
/// queue`), with its about text and its own options.
fn render_commands(roff: &mut Roff, command: &clap::Command, path: &str) {
    // clap's generated `help` subcommands are left out: this page is the help.
    for sub in command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
    {
        let path = format!("{path} {}", sub.get_name());
        if sub.has_subcommands() {
            render_commands(roff, sub, &path);
            continue;
        }
        roff.control("SS", [path.as_str()]);
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        for arg in sub.get_arguments().filter(|arg| shown(arg)) {
            let mut help = arg
                .get_long_help()
                .or_else(|| arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|value| !value.is_hide_set())
                .map(|value| value.get_name().to_owned())
                .collect();
            if !possible.is_empty() {
                help.push_str(&format!(" [possible values: {}]", possible.join(", ")));
            }
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            // A flag's implicit `false` says nothing.
            if !defaults.is_empty() && arg.get_action().takes_values() {
                help.push_str(&format!(" [default: {}]", defaults.join(", ")));
            }
            tagged(roff, usage(arg), [roman(help)]);
        }
    }
}

/// Whether an argument belongs in its command's list: not hidden, not a global option (listed
/// once under OPTIONS), not clap's own help and version flags (also listed there).
fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set()
        && !arg.is_global_set()
        && !matches!(arg.get_id().as_str(), "help" | "version")
}

/// `--listen <ADDR>`, `--json`, `<ID>...`.
fn usage(arg: &Arg) -> Vec<roff::Inline> {
    let values: Vec<String> = arg
        .get_value_names()
        .map(|names| names.iter().map(|name| format!("<{name}>")).collect())
        .unwrap_or_default();
    let takes_values = arg.get_action().takes_values();
    let mut inlines = Vec::new();
    match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => inlines.push(bold(format!("--{long}"))),
        (None, Some(short)) => inlines.push(bold(format!("-{short}"))),
        (None, None) => {
            let name = values
                .first()
                .cloned()
                .unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase()));
            inlines.push(italic(format!("{name}...")));
            return inlines;
        }
    }
    if takes_values {
        let name = values
            .first()
            .cloned()
            .unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase()));
        inlines.push(roman(" "));
        inlines.push(italic(name));
    }
    inlines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page lists every command's own options and the sections an administrator looks for,
    /// and refers to no page that is not shipped.
    #[test]
    fn the_man_page_documents_every_command_and_variable() {
        let mut rendered = Vec::new();
        render_man(Cli::command(), &mut rendered).unwrap();
        let page = String::from_utf8(rendered).unwrap();
        for needle in [
            "gradata serve",
            "\\-\\-listen",
            "gradata daemon",
            "\\-\\-port",
            "\\-\\-pid\\-file",
            "gradata drain",
            "\\-\\-max\\-rows",
            "\\-\\-max\\-seconds",
            "gradata status",
            "\\-\\-json",
            "gradata queue list",
            "\\-\\-state",
            "pending, dead, synced",
            "\\-\\-limit",
            "gradata queue retry",
            "\\-\\-all\\-dead",
            "<ID>...",
            ".SH \"EXIT STATUS\"",
            ".SH ENVIRONMENT",
            ".SH FILES",
        ] {
            assert!(page.contains(needle), "{needle:?} missing from:\n{page}");
        }
        let variables = config::option_keys().map(|(_, variable)| variable);
        let old_names = config::renamed_variables().map(|(old, _)| old);
        for variable in variables.chain(old_names).chain(config::OTHER_VARIABLES) {
            let escaped = variable.replace('-', "\\-");
            assert!(page.contains(&escaped), "{variable} missing");
        }
        assert!(!page.contains("gradata\\-serve(8)"), "{page}");
        assert!(
            !page.contains("gradata generate"),
            "the hidden command is listed"
        );
        assert!(
            !page.contains("gradata help"),
            "clap's help command is listed"
        );
    }
}
