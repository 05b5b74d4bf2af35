//! `ami action NAME [KEY=VALUE...]`: one action, its response and list items as JSON lines.

use crate::fleet::{self, Fleet};
use crate::server_failures::ServerFailures;
use crate::session::{self, CallError};
use crate::subscription::{self, Subscription};
use crate::url::ServerUrl;
use crate::{json, words};
use crate::{Connection, Failure, EXIT_CONNECT, EXIT_OTHER, EXIT_SERVER_ERROR, EXIT_USAGE};
use ami_proto::{Action, ActionError, ActionId, Message, Response, SendOptions, MAX_ACTION_ID_LEN};
use std::io::Write;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The action name, e.g. CoreShowChannels.
    name: String,
    /// Fields as KEY=VALUE (repeatable keys allowed).
    #[arg(value_parser = parse_field)]
    fields: Vec<(String, String)>,
    /// With several servers: the one to send to (its host:port), or `all` (one result
    /// per server, each JSON line naming its server).
    #[arg(long, value_name = "NAME|all")]
    on: Option<String>,
    /// Wait at most this many seconds for the response and any list items (default 30; an
    /// async Originate's OriginateResponse is awaited as long as its Timeout says). Past it
    /// the outcome is unknown: exit 1, and the server may still run the action.
    #[arg(long, value_parser = positive_seconds)]
    timeout: Option<f64>,
}

/// `--timeout`, `listen --duration`, `calls --duration`: seconds, more than 0 (an action
/// whose deadline has passed is never sent; a listener of no time prints nothing).
pub(crate) fn positive_seconds(text: &str) -> Result<f64, String> {
    match crate::seconds::parse(text)? {
        s if s > 0.0 => Ok(s),
        _ => Err("give more than 0 seconds".to_string()),
    }
}

/// The most `action --on` waits for every reply (a server that is down holds its action
/// until the action's own deadline).
const ON_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How much longer than an action's `--timeout` `action --on` waits at most.
const ON_LIMIT_PAST_TIMEOUT: Duration = Duration::from_secs(5);

/// For the CLI's own tests only: a shorter [`ON_LIMIT`] in milliseconds, so a test of a
/// server that never answers does not take a minute. Not documented for users; a value that
/// does not parse, or is longer than `ON_LIMIT`, is ignored.
const ON_LIMIT_TEST_ENV: &str = "AMI_TEST_ON_LIMIT_MS";

/// [`ON_LIMIT`], or the shorter limit a test asked for.
fn on_limit() -> std::time::Duration {
    std::env::var(ON_LIMIT_TEST_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
        .filter(|d| *d < ON_LIMIT)
        .unwrap_or(ON_LIMIT)
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

fn print_lines<'a>(
    messages: impl Iterator<Item = &'a Message>,
    server: Option<&str>,
) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    for m in messages {
        let line = json::message(m)?;
        let line = match server {
            Some(s) => json::with_server(&line, s),
            None => line,
        };
        // A closed pipe (`ami action CoreShowChannels | head -1`) ends the printing
        // quietly; the exit code stays the action's.
        if let Err(e) = writeln!(out, "{line}") {
            return crate::printer::stdout_end(&Err(e));
        }
    }
    Ok(())
}

fn print(r: &Response, shown: Shown, server: Option<&str>) -> Result<(), Failure> {
    match shown {
        Shown::FollowUp => print_lines(
            std::iter::once(r.follow_up().unwrap_or(r.message())),
            server,
        ),
        Shown::All => print_lines(
            std::iter::once(r.message())
                .chain(r.items())
                .chain(r.complete())
                .chain(r.follow_up()),
            server,
        ),
    }
}

/// Prints an action's result; a server error is printed too (scripts see what the server
/// said) and exits 4. A failure's words name the server and `attempt`.
pub(crate) fn report(
    result: Result<Response, CallError>,
    url: &ServerUrl,
    shown: Shown,
    attempt: &words::Attempt<'_>,
) -> Result<(), Failure> {
    report_on(result, url, shown, None, attempt)
}

/// [`report`], each line naming `server` when there is one (then the failure's words do
/// not: the caller prefixes them with it).
fn report_on(
    result: Result<Response, CallError>,
    url: &ServerUrl,
    shown: Shown,
    server: Option<&str>,
    attempt: &words::Attempt<'_>,
) -> Result<(), Failure> {
    let e = match result {
        Ok(r) => return print(&r, shown, server),
        Err(e) => e,
    };
    // What arrived is printed in the shape a success has (the response, the list items
    // that came, the follow-up), then the error is said and the exit code tells.
    if let CallError::Action(a) = &e {
        if let Some(r) = a.response() {
            print(r, shown, server)?;
        }
    }
    let code = match &e {
        CallError::Action(ActionError::Server(_)) => EXIT_SERVER_ERROR,
        CallError::Refused(_) => EXIT_USAGE,
        _ => EXIT_OTHER,
    };
    let words = match server {
        Some(_) => words::call_failure(&e, url, attempt),
        None => words::call_error(&e, url, attempt),
    };
    Err(Failure::new(code, words))
}

/// Checks `action`, opens a session asking for `events`, sends it with `options`, logs
/// off, prints. `flag` is the command's option that sets `options.timeout`, if it has one.
/// `server`: the name each printed line carries (the one picked of several, as `--on`
/// lines do), if any.
pub(crate) fn send_one(
    conn: &Connection,
    action: Action,
    options: SendOptions,
    events: impl Into<Subscription>,
    (shown, server): (Shown, Option<&str>),
    flag: Option<&str>,
) -> Result<(), Failure> {
    check(&action)?;
    // An action's deadline bounds its first login too: `--timeout 2` is not 10 s against a
    // server that never answers the Login.
    let first = session::FirstLogin {
        within: options.timeout,
        stoppable: false,
    };
    let mut live = session::open_with(conn, events, first)?;
    let name = action.name().to_string();
    let result = live.call_with(action, options);
    live.logoff();
    let attempt = words::Attempt {
        action: &name,
        waited: Some(options.timeout.unwrap_or(words::DEFAULT_WAIT)),
        flag,
    };
    let result = result?;
    match server {
        None => report(result, &live.url, shown, &attempt),
        Some(name) => {
            // Named like a `--on all` reply: the failure's words too.
            report_on(result, &live.url, shown, Some(name), &attempt).map_err(|f| Failure {
                reason: format!("{name}: {}", f.reason),
                ..f
            })
        }
    }
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    let mut action = Action::new(&args.name);
    for (k, v) in &args.fields {
        action.push(k, v);
    }
    let options = args
        .timeout
        .map(|s| SendOptions::timeout(Duration::from_secs_f64(s)))
        .unwrap_or_default();
    // No events, except an async Originate's answer: its OriginateResponse is an event, and
    // a session that asks for none would place the call and time out waiting for it.
    let events = if action.expects_originate_response() {
        subscription::for_events(&["OriginateResponse".to_string()])
    } else {
        Subscription::from("off")
    };
    match (&args.on, conn.server.len()) {
        (None, 0 | 1) => send_one(
            conn,
            action,
            options,
            events,
            (Shown::All, None),
            Some("--timeout"),
        ),
        (None, _) => Err(Failure::new(
            EXIT_USAGE,
            "several servers: pick one with --on HOST:PORT, or --on all",
        )),
        (Some(on), _) => send_on(conn, action, options, events, on),
    }
}

/// `--on NAME|all`: one result per server, each line naming its server; the exit code is
/// the worst of them (a failure's words on stderr, prefixed with the server).
fn send_on(
    conn: &Connection,
    action: Action,
    options: SendOptions,
    events: Subscription,
    on: &str,
) -> Result<(), Failure> {
    check(&action)?;
    if conn.server.is_empty() {
        return Err(crate::session::no_server());
    }
    if on != "all" && fleet::named(&conn.server, on).is_none() {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "--on {on}: no such server (servers: {}, or all)",
                fleet::names(&conn.server)
            ),
        ));
    }
    let mut fleet = Fleet::open(conn, events)?;
    let mut failures = ServerFailures::default();
    // An action's deadline bounds its first logins too, as with one server (`--timeout 1`
    // is not 10 s against a server that never answers the Login); at most the usual wait.
    let first_logins = options
        .timeout
        .map_or(crate::session::FIRST_LOGIN_TIMEOUT, |t| {
            t.min(crate::session::FIRST_LOGIN_TIMEOUT)
        });
    let down = fleet.keep_ready(first_logins)?;
    let target_down = down.iter().any(|(server, _)| server == on);
    for (server, why) in down {
        if on == "all" || server == on {
            failures.say(&server, &format!("not connected: {why}"), EXIT_CONNECT);
        }
    }
    // The actions' own deadlines end them first, each as a typed timeout; the limit only
    // bounds what no deadline covers (an Originate's follow-up, say).
    let limit = options
        .timeout
        .map_or(on_limit(), |t| on_limit().max(t + ON_LIMIT_PAST_TIMEOUT));
    let name = action.name().to_string();
    let attempt = words::Attempt {
        action: &name,
        waited: Some(options.timeout.unwrap_or(words::DEFAULT_WAIT)),
        flag: Some("--timeout"),
    };
    let called = if target_down {
        Ok(fleet::Called {
            replies: Vec::new(),
            late: Vec::new(),
        })
    } else {
        fleet.call(on, action, options, limit)
    };
    fleet.logoff(crate::session::LOGOFF_GRACE);
    let called = called?;
    // The servers that answered in time are printed; each one that did not is named, as a
    // timeout (exit 1, unless another server did worse).
    for server in &called.late {
        let why = format!(
            "no reply within {} (the replies that came are printed)",
            words::duration(limit)
        );
        failures.say(server, &why, EXIT_OTHER);
    }
    for reply in called.replies {
        let server = reply.server.as_str();
        let Some(url) = fleet.urls.get(server) else {
            continue;
        };
        let result = reply.result.map_err(CallError::from);
        if let Err(f) = report_on(result, url, Shown::All, Some(server), &attempt) {
            failures.say(server, &f.reason, f.code);
        }
    }
    let asked = if on == "all" { conn.server.len() } else { 1 };
    failures.into_failure(asked, "failed").map_or(Ok(()), Err)
}
