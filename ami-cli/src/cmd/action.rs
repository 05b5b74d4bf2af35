//! `ami action NAME [KEY=VALUE...]`: one action, its response and list items as JSON lines.

use crate::session::{self, CallError};
use crate::url::ServerUrl;
use crate::{json, words};
use crate::{Connection, Failure, EXIT_OTHER, EXIT_SERVER_ERROR, EXIT_USAGE};
use ami_proto::{Action, ActionError, ActionId, Message, Response, MAX_ACTION_ID_LEN};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The action name, e.g. CoreShowChannels.
    name: String,
    /// Fields as KEY=VALUE (repeatable keys allowed).
    #[arg(value_parser = parse_field)]
    fields: Vec<(String, String)>,
}

/// clap's parser for `KEY=VALUE` arguments.
pub(crate) fn parse_field(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected KEY=VALUE".to_string())
}

/// Refuses, before any connection, what the client would refuse after login: bad names,
/// CR/LF/NUL in values, lines or messages over Asterisk's limits (counting the longest
/// ActionID the client may add), an ActionID of the caller's, the actions the client owns.
pub(crate) fn check(action: &Action) -> Result<(), Failure> {
    let usage = |why: String| Failure::new(EXIT_USAGE, format!("invalid action: {why}"));
    let longest = ActionId::new(&"x".repeat(MAX_ACTION_ID_LEN))
        .map_err(|e| Failure::new(EXIT_OTHER, e.to_string()))?;
    action
        .validate(Some(&longest))
        .map_err(|e| usage(e.to_string()))?;
    if action.get("ActionID").is_some() {
        return Err(usage(
            "the client assigns ActionIDs; remove ActionID".into(),
        ));
    }
    if ["Login", "Challenge", "Logoff"]
        .iter()
        .any(|n| action.is(n))
    {
        return Err(usage(format!(
            "{} is done by the client itself",
            action.name()
        )));
    }
    Ok(())
}

/// Which messages of a response a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    /// The response, its list items and closing event, and any follow-up.
    All,
    /// The follow-up event if any (an OriginateResponse), else the response.
    FollowUp,
}

fn print_lines<'a>(messages: impl Iterator<Item = &'a Message>) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    for m in messages {
        writeln!(out, "{}", json::message(m)?)
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot write to stdout: {e}")))?;
    }
    Ok(())
}

fn print(r: &Response, shown: Shown) -> Result<(), Failure> {
    match shown {
        Shown::FollowUp => print_lines(std::iter::once(r.follow_up().unwrap_or(r.message()))),
        Shown::All => print_lines(
            std::iter::once(r.message())
                .chain(r.items())
                .chain(r.complete())
                .chain(r.follow_up()),
        ),
    }
}

/// Prints an action's result; a server error is printed too (scripts see what the server
/// said) and exits 4.
pub(crate) fn report(
    result: Result<Response, CallError>,
    url: &ServerUrl,
    shown: Shown,
) -> Result<(), Failure> {
    match result {
        Ok(r) => print(&r, shown),
        Err(CallError::Action(ActionError::Server(r))) => {
            print(&r, Shown::FollowUp)?;
            let why = words::call_error(&CallError::Action(ActionError::Server(r)), url);
            Err(Failure::new(EXIT_SERVER_ERROR, why))
        }
        Err(e @ CallError::Refused(_)) => Err(Failure::new(EXIT_USAGE, words::call_error(&e, url))),
        Err(e) => Err(Failure::new(EXIT_OTHER, words::call_error(&e, url))),
    }
}

/// Checks `action`, opens a session asking for `events`, sends it, logs off, prints.
pub(crate) fn send_one(
    conn: &Connection,
    action: Action,
    events: &str,
    shown: Shown,
) -> Result<(), Failure> {
    check(&action)?;
    let mut live = session::open(conn, events)?;
    let result = live.call(action);
    live.logoff();
    report(result?, &live.url, shown)
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    let mut action = Action::new(&args.name);
    for (k, v) in &args.fields {
        action.push(k, v);
    }
    send_one(conn, action, "off", Shown::All)
}
