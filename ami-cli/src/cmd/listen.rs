//! `ami listen`: the event stream as JSON lines on stdout; the session's story on stderr.
//! Ctrl-C or SIGTERM ends it as `--duration` does: Logoff, every line held written, exit 0.

use crate::fleet::{self, Fleet};
use crate::losses::{Loss, Losses};
use crate::printer::{Flow, Line, Printer};
use crate::session::{self, Change, Happening, Live, LOGOFF_GRACE};
use crate::stop;
use crate::subscription::{self, Subscription};
use crate::terminal::say;
use crate::{json, words};
use crate::{Connection, Failure, EXIT_CONNECT};
use ami_proto::fleet::{FleetItem, ServerStatus};
use ami_proto::{DisconnectReason, Message, StreamItem};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Stop after this many events (1 or more).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after this many seconds (then at most 2 s more to log off).
    #[arg(long, value_parser = crate::seconds::parse)]
    duration: Option<f64>,
    /// Only these event names (repeatable, case-insensitive). The server is asked to send
    /// only those (the event mask of their classes, and a Filter where the user may: AMI's
    /// `write=system`); the command filters them too, so the output is the same either way.
    #[arg(long = "event", value_parser = event_name)]
    events: Vec<String>,
}

/// An `--event` value: an `Event:` header's value can hold no blank, control character or
/// colon, so such a name (a paste with its line end, `Hangup\r\n...`) is a usage error, not a
/// subscription that can never match, or a Filter that could not be sent.
fn event_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an event name cannot be empty".into());
    }
    match name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ':')
    {
        Some(c) => Err(format!("an event name cannot hold {}", c.escape_default())),
        None => Ok(name.to_string()),
    }
}

impl Args {
    /// What to ask the server for; a name the catalog does not know is said on stderr
    /// (a typo listens for nothing), then listened for as given.
    fn subscription(&self) -> Subscription {
        for (name, near) in subscription::unknown_names(&self.events) {
            match near {
                Some(near) => say!(
                    "ami: --event {name}: not an event of Asterisk 22 (did you mean {near}?); \
                     listening for it as given"
                ),
                None => say!(
                    "ami: --event {name}: not an event of Asterisk 22; listening for it as given"
                ),
            }
        }
        subscription::for_events(&self.events)
    }

    fn wanted(&self, m: &Message) -> bool {
        self.events.is_empty()
            || m.event()
                .is_some_and(|e| self.events.iter().any(|n| n.eq_ignore_ascii_case(e)))
    }
}

/// Where the listening stands after a batch.
enum Next {
    More,
    /// Done (count reached, stdout closed).
    Done,
    /// The session ended for good (no Logoff to send), with the command's result.
    Ended(Result<(), Failure>),
}

struct Listener<'a> {
    args: &'a Args,
    printer: Printer,
    losses: Losses,
    seen: u64,
}

/// An event as a line of output (formatted by the printer's thread).
fn event(message: Message, server: Option<String>) -> Line {
    Line::Message { message, server }
}

impl Listener<'_> {
    fn print(&mut self, line: Line) -> Result<Next, Failure> {
        Ok(match self.printer.line(line)? {
            Flow::Go => Next::More,
            Flow::Stop => Next::Done,
        })
    }

    fn happened(&mut self, h: Happening, live: &Live) -> Result<Next, Failure> {
        match h {
            Happening::Item(StreamItem::Event(m)) if self.args.wanted(&m) => {
                self.seen += 1;
                if self.args.count.is_some_and(|c| self.seen >= c) {
                    self.print(event(m, None))?;
                    return Ok(Next::Done);
                }
                return self.print(event(m, None));
            }
            Happening::Item(StreamItem::Ready { ami_version }) => {
                return self.print(Line::Text(json::session_ready(&ami_version)));
            }
            Happening::Item(StreamItem::Disconnected { reason }) => {
                let reason = words::reason(&reason, &live.url);
                return self.print(Line::Text(json::session_lost(&reason)));
            }
            Happening::Item(StreamItem::Discarded { reason, count }) => {
                self.losses
                    .note("", Loss::Discarded(reason), count, Instant::now());
                if reason.may_be_events() {
                    // Possibly events: marked where they were, as the other gaps are.
                    return self.print(Line::Text(json::discarded_gap(count)));
                }
            }
            Happening::Item(StreamItem::Gap { dropped }) => {
                self.losses
                    .note("", Loss::FellBehind, dropped, Instant::now());
                // In stream order on stdout too: a script reading the lines knows.
                return self.print(Line::Text(json::gap(dropped)));
            }
            Happening::Change(Change::Ready) => say!("ami: logged in again to {}", live.url),
            Happening::Change(Change::Lost {
                reason,
                retry_at,
                breaker_open,
            }) => {
                say!(
                    "ami: {}",
                    words::lost(&reason, retry_at, breaker_open, &live.url)
                )
            }
            Happening::Change(Change::Closed { reason }) => {
                return Ok(Next::Ended(match reason {
                    DisconnectReason::Logoff | DisconnectReason::LocalClose => Ok(()),
                    other => Err(Failure::new(
                        EXIT_CONNECT,
                        format!("session ended: {}", words::reason(&other, &live.url)),
                    )),
                }))
            }
            _ => {}
        }
        Ok(Next::More)
    }
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    if conn.server.len() > 1 {
        return run_fleet(conn, args);
    }
    let mut live = session::open(conn, args.subscription())?;
    // Only now: until the first login there is nothing to save, and the signals' default
    // action ends a slow name lookup or connect at once, as a person pressing Ctrl-C wants.
    stop::catch();
    let end = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.clamp(0.0, 1e9)));
    let mut listener = Listener {
        args,
        printer: Printer::start()?,
        losses: Losses::default(),
        seen: 0,
    };
    let mut happened = Vec::new();
    let mut result = Ok(());
    let mut closed = false;
    'listen: while end.is_none_or(|e| Instant::now() < e) && !stop::requested() {
        if let Err(f) = live.wait(stop::wake_by(end), &mut happened) {
            result = Err(f);
            break;
        }
        listener.losses.tick(Instant::now());
        for h in happened.drain(..) {
            match listener.happened(h, &live) {
                Ok(Next::More) => {}
                Ok(Next::Done) => break 'listen,
                Ok(Next::Ended(r)) => {
                    (closed, result) = (true, r);
                    break 'listen;
                }
                Err(f) => {
                    result = Err(f);
                    break 'listen;
                }
            }
        }
    }
    if !closed {
        live.logoff();
    }
    listener.losses.finish();
    listener.printer.finish(LOGOFF_GRACE)?;
    result
}

/// Several servers: their streams merged, each line naming its server (`"server"`), and a
/// line on stderr whenever a server goes down or comes back.
fn run_fleet(conn: &Connection, args: &Args) -> Result<(), Failure> {
    stop::catch();
    let mut fleet = Fleet::open(conn, args.subscription())?;
    let end = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.clamp(0.0, 1e9)));
    let mut printer = Printer::start()?;
    let mut losses = Losses::default();
    let mut seen = 0u64;
    // Servers down now, and whether their breaker opening was said.
    let mut down: HashMap<String, bool> = HashMap::new();
    let mut happened = Vec::new();
    let mut result = Ok(());
    'listen: while end.is_none_or(|e| Instant::now() < e) && !stop::requested() {
        fleet.wait(stop::wake_by(end), &mut happened)?;
        losses.tick(Instant::now());
        for h in happened.drain(..) {
            let line = match h {
                fleet::Happening::Item(FleetItem { server, item }) => match item {
                    StreamItem::Event(m) if args.wanted(&m) => {
                        seen += 1;
                        event(m, Some(server.as_str().to_string()))
                    }
                    StreamItem::Ready { ami_version } => Line::Text(json::with_server(
                        &json::session_ready(&ami_version),
                        server.as_str(),
                    )),
                    StreamItem::Disconnected { reason } => {
                        let url = fleet.urls.get(server.as_str());
                        let why = url.map_or(reason.to_string(), |u| words::reason(&reason, u));
                        Line::Text(json::with_server(
                            &json::session_lost(&why),
                            server.as_str(),
                        ))
                    }
                    StreamItem::Gap { dropped } => {
                        losses.note(server.as_str(), Loss::FellBehind, dropped, Instant::now());
                        Line::Text(json::with_server(&json::gap(dropped), server.as_str()))
                    }
                    StreamItem::Discarded { reason, count } => {
                        let loss = Loss::Discarded(reason);
                        losses.note(server.as_str(), loss, count, Instant::now());
                        if !reason.may_be_events() {
                            continue;
                        }
                        Line::Text(json::with_server(
                            &json::discarded_gap(count),
                            server.as_str(),
                        ))
                    }
                    _ => continue,
                },
                fleet::Happening::Status(server, status) => {
                    status_line(&fleet, &mut down, server.as_str(), &status);
                    if matches!(status, ServerStatus::Closed { .. }) {
                        let (closed, all) = fleet.closed_for_good();
                        if all {
                            result = Err(closed_failure(&fleet, &closed));
                            break 'listen;
                        }
                    }
                    continue;
                }
                fleet::Happening::Ended => break 'listen,
                // listen sends no action of its own.
                fleet::Happening::Completed { .. } => continue,
            };
            match printer.line(line) {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) => break 'listen,
                Err(f) => {
                    result = Err(f);
                    break 'listen;
                }
            }
            if args.count.is_some_and(|c| seen >= c) {
                break 'listen;
            }
        }
    }
    if result.is_ok() {
        // Some servers stopped for good while others kept streaming: the run did not do
        // all it was asked, and a script should know without reading stderr.
        let (closed, _) = fleet.closed_for_good();
        if !closed.is_empty() {
            result = Err(closed_failure(&fleet, &closed));
        }
    }
    fleet.logoff(LOGOFF_GRACE);
    losses.finish();
    printer.finish(LOGOFF_GRACE)?;
    result
}

/// Exit 3 naming each server that stopped for good and why.
fn closed_failure(fleet: &Fleet, closed: &[(String, DisconnectReason)]) -> Failure {
    let each: Vec<String> = closed
        .iter()
        .map(|(server, reason)| match fleet.urls.get(server) {
            Some(url) => format!("{server}: {}", words::reason(reason, url)),
            None => format!("{server}: {reason}"),
        })
        .collect();
    Failure::new(
        EXIT_CONNECT,
        format!("stopped for good: {}", each.join("; ")),
    )
}

/// One line on stderr when a server goes down, when its circuit breaker opens (its next
/// try a minute away, not a backoff's), or when it comes back.
fn status_line(
    fleet: &Fleet,
    down: &mut HashMap<String, bool>,
    server: &str,
    status: &ServerStatus,
) {
    let Some(url) = fleet.urls.get(server) else {
        return;
    };
    match status {
        ServerStatus::Ready { .. } if down.remove(server).is_some() => {
            say!("ami: {server}: back (logged in again to {url})")
        }
        ServerStatus::BackingOff { until, reason }
        | ServerStatus::BreakerOpen { until, reason } => {
            // Once per outage, and once more if the breaker opens: retries while it stays
            // down are not news.
            let breaker = matches!(status, ServerStatus::BreakerOpen { .. });
            match down.insert(server.to_string(), breaker) {
                Some(said) if said || !breaker => {
                    down.insert(server.to_string(), said);
                    return;
                }
                _ => {}
            }
            say!(
                "ami: {server}: down: {}",
                words::lost(reason, Some(*until), breaker, url)
            )
        }
        ServerStatus::Closed { reason }
            if !matches!(
                reason,
                DisconnectReason::Logoff | DisconnectReason::LocalClose
            ) =>
        {
            say!("ami: {server}: closed: {}", words::reason(reason, url))
        }
        _ => {}
    }
}
