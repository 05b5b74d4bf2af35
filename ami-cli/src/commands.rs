//! listen, action, originate, decode.

use crate::connect;
use crate::json;
use crate::{Cli, Command, Failure, EXIT_OTHER, EXIT_SERVER_ERROR, EXIT_USAGE};
use ami_proto::{
    Action, ActionError, ActionId, Decoder, DecoderLimits, Frame, MessageKind, StreamItem,
    MAX_ACTION_ID_LEN,
};
use ami_tokio::{AmiError, Status};
use std::io::Write;
use std::time::Duration;

fn out_err(e: std::io::Error) -> Failure {
    Failure::new(EXIT_OTHER, format!("stdout: {e}"))
}

/// Maps a failed action to its exit code, printing the server's answer as JSON first so
/// scripts see what the server said.
pub(crate) fn action_failure(e: ActionError) -> Failure {
    match e {
        ActionError::Server(r) => {
            let shown = r.follow_up().unwrap_or(r.message());
            println!("{}", json::message(shown));
            Failure::new(EXIT_SERVER_ERROR, ActionError::Server(r).to_string())
        }
        other => Failure::new(EXIT_OTHER, other.to_string()),
    }
}

fn result_failure(e: AmiError) -> Failure {
    match e {
        AmiError::Action(a) => action_failure(a),
        AmiError::Send(e) => Failure::new(EXIT_USAGE, e.to_string()),
        other => Failure::new(EXIT_OTHER, other.to_string()),
    }
}

/// clap's parser for `KEY=VALUE` arguments.
pub(crate) fn parse_field(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected KEY=VALUE".to_string())
}

/// Refuses, before any connection, an action the encoder would refuse after login: bad
/// names, CR/LF/NUL in values, lines or messages over Asterisk's limits (counting the
/// longest ActionID the client may add).
pub(crate) fn check(cmd: &Command) -> Result<(), Failure> {
    if !matches!(cmd, Command::Action { .. } | Command::Originate { .. }) {
        return Ok(());
    }
    let longest = ActionId::new(&"x".repeat(MAX_ACTION_ID_LEN))
        .map_err(|e| Failure::new(EXIT_OTHER, e.to_string()))?;
    action_of(cmd)?
        .validate(Some(&longest))
        .map(drop)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("invalid action: {e}")))
}

pub(crate) async fn listen(
    cli: &Cli,
    count: Option<u64>,
    duration: Option<f64>,
    names: &[String],
) -> Result<(), Failure> {
    let (handle, mut events) = connect::open(cli, "on").await?;
    // Reconnects and closes go to stderr as they happen.
    let mut status = handle.status();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            match &*status.borrow_and_update() {
                Status::Disconnected { reason, retry_at } => {
                    let wait =
                        retry_at.map(|t| t.saturating_duration_since(std::time::Instant::now()));
                    eprintln!("ami: disconnected ({reason}); reconnecting in {wait:?}");
                }
                Status::Ready { .. } => eprintln!("ami: reconnected"),
                Status::Closed { reason } => eprintln!("ami: closed ({reason})"),
                _ => {}
            }
        }
    });
    let deadline =
        duration.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    let mut batch = Vec::with_capacity(1024);
    loop {
        if count.is_some_and(|c| seen >= c) {
            break;
        }
        let recv = events.recv_many(&mut batch, 1024);
        let n = match deadline {
            Some(d) => match tokio::time::timeout_at(d, recv).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => recv.await,
        };
        if n == 0 {
            break;
        }
        let mut lock = stdout.lock();
        for item in batch.drain(..) {
            match item {
                StreamItem::Event(m) => {
                    if !names.is_empty()
                        && !m
                            .event()
                            .is_some_and(|e| names.iter().any(|n| n.eq_ignore_ascii_case(e)))
                    {
                        continue;
                    }
                    if count.is_some_and(|c| seen >= c) {
                        break;
                    }
                    seen += 1;
                    writeln!(lock, "{}", json::message(&m)).map_err(out_err)?;
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

pub(crate) async fn action(cli: &Cli, action: Action) -> Result<(), Failure> {
    let (handle, _events) = connect::open(cli, "off").await?;
    let result = handle.send(action).await;
    let printed = match result {
        Ok(resp) => {
            let mut lock = std::io::stdout().lock();
            writeln!(lock, "{}", json::message(resp.message())).map_err(out_err)?;
            for item in resp
                .items()
                .iter()
                .chain(resp.complete())
                .chain(resp.follow_up())
            {
                writeln!(lock, "{}", json::message(item)).map_err(out_err)?;
            }
            Ok(())
        }
        Err(e) => Err(result_failure(e)),
    };
    handle.logoff().await;
    printed
}

/// The action `ami action` or `ami originate` sends.
pub(crate) fn action_of(cmd: &Command) -> Result<Action, Failure> {
    if let Command::Action { name, fields } = cmd {
        let mut action = Action::new(name);
        for (k, v) in fields {
            action.push(k, v);
        }
        return Ok(action);
    }
    let Command::Originate {
        channel,
        application,
        data,
        context,
        exten,
        priority,
        vars,
        timeout,
    } = cmd
    else {
        return Err(Failure::new(
            EXIT_USAGE,
            "not an action or originate command",
        ));
    };
    let mut action = Action::new("Originate").field("Channel", channel.as_str());
    match (application, context, exten) {
        (Some(app), _, _) => {
            action.push("Application", app.as_str());
            if let Some(d) = data {
                action.push("Data", d.as_str());
            }
        }
        (None, Some(c), Some(e)) => {
            action.push("Context", c.as_str());
            action.push("Exten", e.as_str());
            action.push("Priority", priority.as_str());
        }
        _ => {
            return Err(Failure::new(
                EXIT_USAGE,
                "originate needs --application A or --context X --exten E",
            ))
        }
    }
    for (k, v) in vars {
        action.push("Variable", format!("{k}={v}"));
    }
    action.push("Timeout", timeout.to_string());
    action.push("Async", "true");
    Ok(action)
}

pub(crate) async fn originate(cli: &Cli, action: Action) -> Result<(), Failure> {
    let (handle, _events) = connect::open(cli, "call").await?;
    let result = handle.send(action).await;
    let printed = match result {
        Ok(resp) => {
            println!(
                "{}",
                json::message(resp.follow_up().unwrap_or(resp.message()))
            );
            Ok(())
        }
        Err(e) => Err(result_failure(e)),
    };
    handle.logoff().await;
    printed
}

pub(crate) fn decode(file: &std::path::Path, typed: bool) -> Result<(), Failure> {
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("{}: {e}", file.display())))?;
    let mut decoder = Decoder::new(DecoderLimits::default());
    let mut report = json::TypedReport::default();
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = decoder.feed(rest);
        rest = &rest[n..];
        while let Some(frame) = decoder.decode() {
            match frame {
                Ok(Frame::Message(m)) if typed && m.kind() == MessageKind::Event => {
                    let line = report.typed_line(&m);
                    writeln!(lock, "{line}").map_err(out_err)?
                }
                Ok(Frame::Message(m)) => {
                    writeln!(lock, "{}", json::message(&m)).map_err(out_err)?
                }
                Ok(Frame::Banner(b)) => eprintln!("ami: banner: {}", b.text()),
                Err(e) => eprintln!("ami: decode error: {e}"),
            }
        }
    }
    lock.flush().map_err(out_err)?;
    let s = decoder.stats();
    if decoder.buffered() > 0 {
        eprintln!(
            "ami: {} trailing bytes without a message end",
            decoder.buffered()
        );
    }
    eprintln!(
        "ami: {} messages, {} decode errors",
        s.messages,
        s.lines_too_long + s.messages_too_large + s.too_many_fields
    );
    if typed {
        eprintln!("ami: {report}");
    }
    Ok(())
}
