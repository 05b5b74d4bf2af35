//! `--runtime async-std`: listen, action and originate on ami-async-std (futures-io and
//! async-io, the reactor async-std and smol run on). The driver runs on a thread of its
//! own; the command runs on this one with `async_io::block_on`. No TLS, no bench or demo.

use crate::json;
use crate::{Cli, Command, Failure, EXIT_CONNECT, EXIT_OTHER, EXIT_USAGE};
use ami_async_std::{AmiError, Events, Handle, Status};
use ami_proto::{Action, Response, StreamItem};
use async_io::Timer;
use futures_lite::future;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long a command waits for its first login.
const FIRST_LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

fn out_err(e: std::io::Error) -> Failure {
    Failure::new(EXIT_OTHER, format!("stdout: {e}"))
}

fn result_failure(e: AmiError) -> Failure {
    match e {
        AmiError::Action(a) => crate::commands::action_failure(a),
        AmiError::Send(e) => Failure::new(EXIT_USAGE, e.to_string()),
        other => Failure::new(EXIT_OTHER, other.to_string()),
    }
}

/// Connects and waits for the first Ready. A first failure (refused, rejected password) is
/// reported at once, with no retry loop.
async fn open(cli: &Cli, events: &str) -> Result<(Handle, Events), Failure> {
    let url = cli.server.as_ref().ok_or_else(|| {
        Failure::new(
            EXIT_USAGE,
            "no server: pass --server ami://USER:SECRET@HOST:PORT or set AMI_URL",
        )
    })?;
    if url.tls {
        return Err(Failure::new(
            EXIT_USAGE,
            "--runtime async-std has no TLS; use --runtime tokio for amis://",
        ));
    }
    let config = crate::connect::config(cli, &url.user, url.secret.expose(), events)?;
    let (handle, events) = ami_async_std::run_on_thread(config, (url.host.as_str(), url.port))
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the driver: {e}")))?;
    let what = url.to_string();
    let first = async {
        let status = handle
            .status()
            .wait_for(|s| !matches!(s, Status::Connecting))
            .await;
        Some(status)
    };
    let timeout = async {
        Timer::after(FIRST_LOGIN_TIMEOUT).await;
        None
    };
    match future::or(first, timeout).await {
        Some(Status::Ready { .. }) => Ok((handle, events)),
        Some(Status::Closed { reason } | Status::Disconnected { reason, .. }) => {
            handle.close();
            Err(Failure::new(EXIT_CONNECT, format!("{what}: {reason}")))
        }
        _ => {
            handle.close();
            Err(Failure::new(
                EXIT_CONNECT,
                format!("{what}: no login within {FIRST_LOGIN_TIMEOUT:?}"),
            ))
        }
    }
}

/// Prints a response (then its items), or only the OriginateResponse for an originate.
fn print(resp: &Response, originate: bool) -> Result<(), Failure> {
    let mut lock = std::io::stdout().lock();
    if originate {
        let shown = resp.follow_up().unwrap_or(resp.message());
        return writeln!(lock, "{}", json::message(shown)).map_err(out_err);
    }
    writeln!(lock, "{}", json::message(resp.message())).map_err(out_err)?;
    for m in resp
        .items()
        .iter()
        .chain(resp.complete())
        .chain(resp.follow_up())
    {
        writeln!(lock, "{}", json::message(m)).map_err(out_err)?;
    }
    Ok(())
}

async fn call(cli: &Cli, events: &str, action: Action, originate: bool) -> Result<(), Failure> {
    let (handle, _events) = open(cli, events).await?;
    let printed = match handle.send(action).await {
        Ok(resp) => print(&resp, originate),
        Err(e) => Err(result_failure(e)),
    };
    handle.logoff().await;
    printed
}

/// What ended one wait of `listen`.
enum Woke {
    Items(usize),
    Status(Option<Status>),
    Deadline,
}

async fn listen(
    cli: &Cli,
    count: Option<u64>,
    duration: Option<f64>,
    names: &[String],
) -> Result<(), Failure> {
    let (handle, mut events) = open(cli, "on").await?;
    let mut status = Some(handle.status());
    let deadline = duration.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut seen = 0u64;
    let mut batch = Vec::with_capacity(1024);
    while count.is_none_or(|c| seen < c) {
        let items = async { Woke::Items(events.recv_many(&mut batch, 1024).await) };
        // Reconnects and closes go to stderr as they happen.
        let changed = async {
            match status.as_mut() {
                Some(s) => Woke::Status(s.changed().await),
                None => future::pending().await,
            }
        };
        let end = async {
            match deadline {
                Some(d) => {
                    Timer::at(d).await;
                    Woke::Deadline
                }
                None => future::pending().await,
            }
        };
        match future::or(items, future::or(changed, end)).await {
            Woke::Items(0) | Woke::Deadline => break,
            Woke::Items(_) => {}
            Woke::Status(None) => status = None,
            Woke::Status(Some(s)) => match s {
                Status::Disconnected { reason, retry_at } => {
                    let wait = retry_at.map(|t| t.saturating_duration_since(Instant::now()));
                    eprintln!("ami: disconnected ({reason}); reconnecting in {wait:?}");
                }
                Status::Ready { .. } => eprintln!("ami: reconnected"),
                Status::Closed { reason } => eprintln!("ami: closed ({reason})"),
                _ => {}
            },
        }
        let mut lock = std::io::stdout().lock();
        for item in batch.drain(..) {
            match item {
                StreamItem::Event(m) => {
                    let wanted = names.is_empty()
                        || m.event()
                            .is_some_and(|e| names.iter().any(|n| n.eq_ignore_ascii_case(e)));
                    if wanted && count.is_none_or(|c| seen < c) {
                        seen += 1;
                        writeln!(lock, "{}", json::message(&m)).map_err(out_err)?;
                    }
                }
                StreamItem::Gap { dropped } => {
                    eprintln!("ami: gap: {dropped} events dropped (consumer too slow)")
                }
                _ => {}
            }
        }
        lock.flush().map_err(out_err)?;
    }
    handle.logoff().await;
    Ok(())
}

/// Runs a command on the async-std adapter.
pub(crate) fn run(cli: &Cli) -> Result<(), Failure> {
    async_io::block_on(async {
        match &cli.command {
            Command::Listen {
                count,
                duration,
                events,
            } => listen(cli, *count, *duration, events).await,
            Command::Action { .. } => {
                call(cli, "off", crate::commands::action_of(&cli.command)?, false).await
            }
            Command::Originate { .. } => {
                let action = crate::commands::action_of(&cli.command)?;
                call(cli, "call", action, true).await
            }
            Command::Bench { .. } | Command::Demo { .. } => Err(Failure::new(
                EXIT_USAGE,
                "bench and demo run on tokio; use --runtime tokio",
            )),
            Command::Decode { .. } => Ok(()),
        }
    })
}
