//! `ami`: the ami-rs command line for operators and scripts.
//!
//! Exit codes: 0 success, 1 other failure (timeout, outcome unknown), 2 usage,
//! 3 connection or login failure, 4 the server answered with an error.
#![forbid(unsafe_code)]

mod async_std_runtime;
mod commands;
mod connect;
mod demo;
mod json;
mod mio_runtime;
mod status_line;
mod url;

use clap::{Parser, Subcommand, ValueEnum};
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

#[derive(Debug, Parser)]
#[command(
    name = "ami",
    version,
    about = "Talk to Asterisk over the Manager Interface"
)]
pub(crate) struct Cli {
    /// ami://USER:SECRET@HOST:PORT (amis:// for TLS).
    #[arg(
        long,
        env = "AMI_URL",
        global = true,
        hide_env_values = true,
        value_parser = url::ServerUrlParser
    )]
    pub(crate) server: Option<url::ServerUrl>,
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
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Stream events, one JSON object a line.
    Listen {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Only these event names (repeatable, case-insensitive).
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// Send one action; print the response, then each list item.
    Action {
        /// The action name, e.g. CoreShowChannels.
        name: String,
        /// Fields as KEY=VALUE (repeatable keys allowed).
        #[arg(value_parser = commands::parse_field)]
        fields: Vec<(String, String)>,
    },
    /// Async Originate; prints the OriginateResponse.
    Originate {
        /// The channel to call, e.g. PJSIP/100.
        #[arg(long)]
        channel: String,
        /// Run this application on the answered channel (or give --context and --exten).
        #[arg(long, conflicts_with_all = ["context", "exten"], required_unless_present = "context")]
        application: Option<String>,
        /// The application's arguments.
        #[arg(long, requires = "application")]
        data: Option<String>,
        /// Dialplan context to connect the answered channel to (with --exten).
        #[arg(long, requires = "exten")]
        context: Option<String>,
        /// Extension in --context.
        #[arg(long, requires = "context")]
        exten: Option<String>,
        /// Priority in --context/--exten.
        #[arg(long, default_value = "1")]
        priority: String,
        /// Channel variables K=V (repeatable).
        #[arg(long = "var", value_parser = commands::parse_field)]
        vars: Vec<(String, String)>,
        /// Ring timeout in milliseconds.
        #[arg(long, default_value_t = 30000)]
        timeout: u64,
    },
    /// Decode a raw capture, one JSON object a line.
    Decode {
        /// The capture file (bytes as the server sent them).
        file: std::path::PathBuf,
        /// Print events through the typed layer (header names as on the wire, typed
        /// values) and report every field that does not parse as its declared type.
        #[arg(long)]
        typed: bool,
    },
    /// Events/s and actions/s against a server (default: an embedded simulator).
    Bench {
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// An embedded simulated Asterisk, no server needed: calls, events and client stats.
    Demo {
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = commands::check(&cli.command).and_then(|()| match (&cli.command, cli.runtime) {
        (Command::Decode { file, typed }, _) => commands::decode(file, *typed),
        (_, Runtime::AsyncStd) => async_std_runtime::run(&cli),
        (_, Runtime::Mio) => mio_runtime::run(&cli),
        (_, Runtime::Tokio) => run_tokio(&cli),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("ami: {}", f.reason);
            ExitCode::from(f.code)
        }
    }
}

fn run_tokio(cli: &Cli) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start tokio: {e}")))?;
    rt.block_on(async {
        match &cli.command {
            Command::Listen {
                count,
                duration,
                events,
            } => commands::listen(cli, *count, *duration, events).await,
            Command::Action { .. } => {
                commands::action(cli, commands::action_of(&cli.command)?).await
            }
            Command::Originate { .. } => {
                commands::originate(cli, commands::action_of(&cli.command)?).await
            }
            Command::Bench { duration } => demo::bench(cli, *duration).await,
            Command::Demo { duration } => demo::demo(*duration).await,
            Command::Decode { .. } => Ok(()),
        }
    })
}
