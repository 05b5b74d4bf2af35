//! `ami`: the ami-rs command line for operators and scripts.
//!
//! Each command lives in its own file under `cmd/` and is written once against
//! [`session::Session`], which each runtime (tokio, mio, async-std) implements in its own
//! file under `session/`. Adding a command is one file plus its line in [`Command`].
//!
//! Exit codes, the same on every runtime: 0 success, 1 other failure (timeout, outcome
//! unknown), 2 usage (bad arguments, refused before any connection), 3 connection or login
//! failure (also a session that ends for good mid-`listen`, such as a rejected re-login, and
//! with several servers any server that stops for good or is down for `action --on`),
//! 4 the server answered with an error. A command waits at most
//! [`session::LOGOFF_GRACE`] (2 s) for the server to answer its Logoff. Ctrl-C, SIGTERM or
//! SIGHUP ends `listen` and `calls --watch` as their `--duration` does (see [`stop`]: exit 3
//! before any login, as a duration that ends before one), and `bridge` cleanly (exit 0); a
//! second one exits 130 at once.
#![forbid(unsafe_code)]

mod cmd;
mod diagnose;
mod fleet;
mod json;
mod log_lines;
mod losses;
mod printer;
mod seconds;
mod server_failures;
mod session;
mod status_line;
mod stop;
mod subscription;
mod terminal;
mod url;
mod view_out;
mod words;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// Exit code and a one-line reason.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) reason: String,
}

impl Failure {
    pub(crate) fn new(code: u8, reason: impl Into<String>) -> Failure {
        Failure {
            code,
            reason: reason.into(),
        }
    }
}

pub(crate) const EXIT_OTHER: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_CONNECT: u8 = 3;
pub(crate) const EXIT_SERVER_ERROR: u8 = 4;
/// A second stop signal ended the command at once, before its clean stop was done.
pub(crate) const EXIT_STOPPED_AGAIN: u8 = 130;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Auth {
    Plain,
    Md5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Runtime {
    Tokio,
    Mio,
    AsyncStd,
}

/// Where and how to connect: the options every command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Connection {
    /// ami://USER:SECRET@HOST:PORT (amis:// for TLS; IPv6 as [::1]; %-escape reserved
    /// characters in USER and SECRET, a comma as %2C). Repeat it (or give AMI_URL a
    /// comma-separated list) for several servers: `listen` merges them, `calls` shows
    /// each one's, `action --on` picks one or all, `originate --on` one (every runtime).
    /// Without it, the commands that connect (listen, action, calls, originate, bridge)
    /// take AMI_URL (empty: unset); the others never read it.
    #[allow(rustdoc::broken_intra_doc_links)] // clap help text: `[::1]` is an address, not a link
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        value_parser = url::ServerUrlParser
    )]
    pub(crate) server: Vec<url::ServerUrl>,
    /// Login method.
    #[arg(long, value_enum, default_value = "plain", global = true)]
    pub(crate) auth: Auth,
    /// Which adapter drives the connection.
    #[arg(long, value_enum, default_value = "tokio", global = true)]
    pub(crate) runtime: Runtime,
    /// PEM file with the CA certificate(s) to trust for amis:// (Asterisk often uses a
    /// private CA).
    #[arg(long, global = true)]
    pub(crate) ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Parser)]
#[command(
    name = "ami",
    version,
    about = "Talk to Asterisk over the Manager Interface"
)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    /// Which of the libraries' log records to show on stderr [default: AMI_LOG (any case;
    /// empty: unset), else error; info for bridge]. Secrets given to the command never
    /// appear in them.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        global = true,
        value_name = "LEVEL"
    )]
    log: Option<log_lines::Level>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream events, one JSON object a line.
    Listen(cmd::listen::Args),
    /// Send one action; print the response, then each list item.
    Action(cmd::action::Args),
    /// The live calls, from a snapshot; --watch keeps them live (a table on a terminal, JSON
    /// lines otherwise), through reconnects and resyncs. Several servers: each one's calls,
    /// under its name.
    Calls(cmd::calls::Args),
    /// Async Originate; prints the OriginateResponse.
    Originate(cmd::originate::Args),
    /// Decode a raw capture, one JSON object a line.
    Decode(cmd::decode::Args),
    /// Events/s (default: an embedded simulator; with --server, also actions/s against it).
    ///
    /// Against a real server (a --server given here; AMI_URL is never used) bench floods it
    /// with UserEvent actions, tens of thousands a second, and Asterisk broadcasts each
    /// UserEvent to every AMI client logged in that reads the `user` class: dialers, CRMs
    /// and bridges on that server all receive the flood. Use a test server.
    Bench(cmd::bench::Args),
    /// An embedded simulated Asterisk, no server needed: calls, events and client stats.
    Demo(cmd::demo::Args),
    /// Events and actions through NATS JetStream, with failover between bridges.
    Bridge(cmd::bridge::Args),
    /// Run the simulated Asterisk as a standalone server on loopback until stopped.
    Sim(cmd::sim::Args),
}

/// The connection options (by id) that command `name` refuses, and why: one table for the
/// refusal ([`unused_connection_options`]) and the help that leaves them out ([`grammar`]).
/// `bench` is not here: it refuses some of them only without `--server`.
fn refused_connection_options(name: &str) -> Option<(&'static [&'static str], &'static str)> {
    match name {
        "sim" => Some((
            &["server", "auth", "runtime", "ca"],
            "the simulator listens where --listen says and takes plain and MD5 logins alike",
        )),
        "decode" => Some((
            &["server", "auth", "runtime", "ca"],
            "decode reads a capture, it connects to nothing",
        )),
        "demo" => Some((
            &["server", "auth", "ca"],
            "demo runs its own simulated Asterisk and logs in to it (--runtime picks its \
             client's adapter)",
        )),
        "bridge" => Some((
            &["runtime"],
            "the bridge runs on tokio (one thread), as NATS's client does",
        )),
        _ => None,
    }
}

/// The connection options a command has no use for, given on its command line: refused,
/// since `ami sim --auth md5`, `ami sim --runtime mio` or `ami bridge --runtime mio` would
/// otherwise be ignored without a word (`AMI_URL` is not refused: it is set for every
/// command, and only the commands that connect read it).
fn unused_connection_options(matches: &ArgMatches) -> Result<(), Failure> {
    let given = |sub: &ArgMatches, ids: &[&str]| -> Vec<String> {
        ids.iter()
            .filter(|id| sub.value_source(id) == Some(ValueSource::CommandLine))
            .map(|id| format!("--{id}"))
            .collect()
    };
    let is_are = |given: &[String]| if given.len() == 1 { "is" } else { "are" };
    if let Some(("bench", sub)) = matches.subcommand() {
        // Without --server bench runs its own simulator: a login method or a CA has nothing
        // to apply to.
        let unused = given(sub, &["auth", "ca"]);
        if sub.value_source("server") != Some(ValueSource::CommandLine) && !unused.is_empty() {
            return Err(Failure::new(
                EXIT_USAGE,
                format!(
                    "{} {} for `ami bench --server URL`: without --server, bench runs its own \
                     simulator",
                    unused.join(" and "),
                    is_are(&unused)
                ),
            ));
        }
        return Ok(());
    }
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let Some((ids, what)) = refused_connection_options(name) else {
        return Ok(());
    };
    let given = given(sub, ids);
    if given.is_empty() {
        return Ok(());
    }
    let whom = if ids.len() == 1 {
        "the other commands"
    } else {
        "the commands that connect to a server"
    };
    Err(Failure::new(
        EXIT_USAGE,
        format!(
            "{} {} for {whom}, not `ami {name}`: {what}",
            given.join(" and "),
            is_are(&given)
        ),
    ))
}

/// The environment variable that sets `--log` when it is not given.
const LOG_ENV: &str = "AMI_LOG";

/// `AMI_LOG`'s level (`value`: its value, `None` when unset): unset or empty is none, any
/// case is taken, and a value that is no level is refused naming the variable.
fn log_from_env(value: Option<&std::ffi::OsStr>) -> Result<Option<log_lines::Level>, Failure> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|text| <log_lines::Level as ValueEnum>::from_str(text.trim(), true).ok())
        .map(Some)
        .ok_or_else(|| {
            Failure::new(
                EXIT_USAGE,
                format!(
                    "{LOG_ENV}={:?} is not a log level: off, error, warn, info, debug or trace",
                    value.to_string_lossy()
                ),
            )
        })
}

/// Whether `command` connects to the servers of `--server` or `AMI_URL`. The others run
/// their own simulator (`demo`, `bench` without `--server`) or connect to nothing.
fn connects(command: &Command) -> bool {
    match command {
        Command::Listen(_)
        | Command::Action(_)
        | Command::Calls(_)
        | Command::Originate(_)
        | Command::Bridge(_) => true,
        // `bench` targets a server only when one is typed for it: it floods the server.
        Command::Decode(_) | Command::Bench(_) | Command::Demo(_) | Command::Sim(_) => false,
    }
}

/// What the command line leaves to the environment, and the checks that need both: the log
/// level from `AMI_LOG`, the servers from `AMI_URL` (for a command that connects and was
/// given no `--server`), and a `--ca` that no server would use.
fn settle(matches: &ArgMatches, cli: &mut Cli) -> Result<(), Failure> {
    unused_connection_options(matches)?;
    if cli.log.is_none() {
        cli.log = log_from_env(std::env::var_os(LOG_ENV).as_deref())?;
    }
    if cli.conn.server.is_empty() && connects(&cli.command) {
        cli.conn.server = url::from_env(std::env::var_os(url::ENV).as_deref())
            .map_err(|reason| Failure::new(EXIT_USAGE, reason))?;
    }
    let servers = &cli.conn.server;
    if cli.conn.ca.is_some() && !servers.is_empty() && !servers.iter().any(|u| u.tls) {
        return Err(Failure::new(
            EXIT_USAGE,
            "--ca is for amis:// (TLS) servers, and every server here is ami:// (plain TCP): \
             drop --ca, or use amis://",
        ));
    }
    Ok(())
}

/// The command line's grammar, its help without the connection options where they are
/// refused ([`refused_connection_options`]): they are global (so `ami listen --server ..`
/// works as well as `ami --server .. listen`), and clap would otherwise list them in the
/// help of `sim`, `decode`, `demo` and `bridge` as if they applied.
fn grammar() -> clap::Command {
    let mut cmd = Cli::command();
    // Global options reach the subcommands when the command is built. Changed in place
    // after that (`mut_subcommands`, `mut_args`): the built command indexes its
    // subcommands and arguments by position.
    cmd.build();
    cmd.mut_subcommands(|sub| {
        let Some((refused, _)) = refused_connection_options(sub.get_name()) else {
            return sub;
        };
        sub.mut_args(|a| {
            if refused.contains(&a.get_id().as_str()) {
                a.hide(true)
            } else {
                a
            }
        })
    })
}

fn main() -> ExitCode {
    let matches = grammar().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(f) = settle(&matches, &mut cli) {
        terminal::say!("ami: {}", f.reason);
        return ExitCode::from(f.code);
    }
    let conn = &cli.conn;
    let mut secrets: Vec<String> = conn
        .server
        .iter()
        .map(|u| u.secret.expose().to_string())
        .collect();
    let default_level = match &cli.command {
        Command::Bridge(a) => {
            secrets.extend(a.secrets());
            log_lines::Level::Info
        }
        _ => log_lines::Level::Error,
    };
    log_lines::install(cli.log.unwrap_or(default_level), secrets);
    let result = match &cli.command {
        Command::Listen(a) => cmd::listen::run(conn, a),
        Command::Action(a) => cmd::action::run(conn, a),
        Command::Calls(a) => cmd::calls::run(conn, a),
        Command::Originate(a) => cmd::originate::run(conn, a),
        Command::Decode(a) => cmd::decode::run(a),
        Command::Bench(a) => cmd::bench::run(conn, a),
        Command::Demo(a) => cmd::demo::run(conn, a),
        Command::Bridge(a) => cmd::bridge::run(conn, a),
        Command::Sim(a) => cmd::sim::run(a),
    };
    log_lines::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            terminal::say!("ami: {}", f.reason);
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn ami_log_unset_or_empty_is_no_level_and_any_case_is_taken() {
        assert_eq!(log_from_env(None).unwrap(), None);
        assert_eq!(log_from_env(Some(OsStr::new(""))).unwrap(), None);
        for (text, level) in [
            ("DEBUG", log_lines::Level::Debug),
            ("Warn", log_lines::Level::Warn),
            ("trace", log_lines::Level::Trace),
            ("off", log_lines::Level::Off),
        ] {
            assert_eq!(log_from_env(Some(OsStr::new(text))).unwrap(), Some(level));
        }
    }

    #[test]
    fn a_bad_ami_log_is_a_usage_error_naming_the_variable() {
        let f = log_from_env(Some(OsStr::new("loud"))).unwrap_err();
        assert_eq!(f.code, EXIT_USAGE);
        assert_eq!(
            f.reason,
            "AMI_LOG=\"loud\" is not a log level: off, error, warn, info, debug or trace"
        );
    }

    #[test]
    fn only_the_commands_that_connect_read_ami_url() {
        let command = |args: &[&str]| {
            Cli::try_parse_from([&["ami"], args].concat())
                .unwrap()
                .command
        };
        for args in [
            &["listen"][..],
            &["action", "Ping"],
            &["calls"],
            &["originate", "--channel", "c", "--application", "Wait"],
            &["bridge"],
        ] {
            assert!(connects(&command(args)), "{args:?}");
        }
        for args in [&["decode", "f"][..], &["bench"], &["demo"], &["sim"]] {
            assert!(!connects(&command(args)), "{args:?}");
        }
    }
}
