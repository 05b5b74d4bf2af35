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
//! [`session::LOGOFF_GRACE`] (2 s) for the server to answer its Logoff. Ctrl-C or SIGTERM
//! ends `listen` and `calls --watch` as their `--duration` does (see [`stop`]); a second one
//! exits 130 at once.
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
    #[allow(rustdoc::broken_intra_doc_links)] // clap help text: `[::1]` is an address, not a link
    #[arg(
        long,
        env = "AMI_URL",
        global = true,
        hide_env_values = true,
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
    /// Which of the libraries' log records to show on stderr [default: error; info for
    /// bridge]. Secrets given to the command never appear in them.
    #[arg(long, env = "AMI_LOG", value_enum, global = true, value_name = "LEVEL")]
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
    /// Events/s and actions/s against a server (default: an embedded simulator).
    Bench(cmd::bench::Args),
    /// An embedded simulated Asterisk, no server needed: calls, events and client stats.
    Demo(cmd::demo::Args),
    /// Events and actions through NATS JetStream, with failover between bridges.
    Bridge(cmd::bridge::Args),
    /// Run the simulated Asterisk as a standalone server on loopback until stopped.
    Sim(cmd::sim::Args),
}

/// The connection options a command has no use for, given on its command line: refused,
/// since `ami sim --auth md5`, `ami sim --runtime mio` or `ami bridge --runtime mio` would
/// otherwise be ignored without a word (from `AMI_URL` a URL is not refused: it is set for
/// every command).
fn unused_connection_options(matches: &ArgMatches) -> Result<(), Failure> {
    let (name, sub, ids, what): (_, _, &[&str], _) = match matches.subcommand() {
        Some((name @ "sim", sub)) => (
            name,
            sub,
            &["server", "auth", "runtime", "ca"],
            "the simulator listens where --listen says and takes plain and MD5 logins alike",
        ),
        Some((name @ "decode", sub)) => (
            name,
            sub,
            &["server", "auth", "runtime", "ca"],
            "decode reads a capture, it connects to nothing",
        ),
        Some((name @ "bridge", sub)) => (
            name,
            sub,
            &["runtime"],
            "the bridge runs on tokio (one thread), as NATS's client does",
        ),
        _ => return Ok(()),
    };
    let given: Vec<String> = ids
        .iter()
        .filter(|id| sub.value_source(id) == Some(ValueSource::CommandLine))
        .map(|id| format!("--{id}"))
        .collect();
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
            if given.len() == 1 { "is" } else { "are" }
        ),
    ))
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(f) = unused_connection_options(&matches) {
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
