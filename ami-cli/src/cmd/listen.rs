//! `ami listen`: the event stream as JSON lines on stdout; the session's story on stderr.
//! Ctrl-C, SIGTERM or SIGHUP ends it as `--duration` does: Logoff, every line held written,
//! exit 0; before the first login (or with several servers, before any), exit 3.

use crate::fleet::{self, Fleet};
use crate::losses::{Loss, Losses};
use crate::printer::{Flow, Line, Printer};
use crate::session::{self, Change, FirstLogin, Happening, Live, LOGOFF_GRACE};
use crate::stop;
use crate::subscription::{self, Subscription};
use crate::terminal::say;
use crate::{json, words};
use crate::{Connection, Failure, EXIT_CONNECT};
use ami_proto::fleet::{FleetItem, ServerStatus};
use ami_proto::{DisconnectReason, Message, StreamItem};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Stop after this many events (1 or more).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after this many seconds (more than 0), counted from the start: the first login
    /// included, then at most 2 s more to log off.
    #[arg(long, value_parser = crate::cmd::action::positive_seconds)]
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

/// `--duration`'s seconds as a duration (saturating: a year is a year).
fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e9))
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

impl Listener<'_> {
    /// Prints what arrived during the Logoff, as any other item: the events the server
    /// wrote before its Goodbye, gaps, and the session's `lost` line. The session's status
    /// changes say nothing more on stderr: it is logging off.
    fn last_lines(
        &mut self,
        happened: impl Iterator<Item = Happening>,
        live: &Live,
        result: &mut Result<(), Failure>,
    ) {
        for h in happened.filter(|h| matches!(h, Happening::Item(_))) {
            match self.happened(h, live) {
                Ok(Next::More | Next::Ended(_)) => {}
                Ok(Next::Done) => return,
                Err(f) => {
                    if result.is_ok() {
                        *result = Err(f);
                    }
                    return;
                }
            }
        }
    }
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    if conn.server.len() > 1 {
        return run_fleet(conn, args);
    }
    // The duration counts from the start: a first login that does not come within it ends
    // the command then (exit 3), as a stop signal meanwhile does.
    let within = args.duration.map(seconds);
    let end = within.map(|d| Instant::now() + d);
    let first = FirstLogin {
        within,
        stoppable: true,
    };
    let mut live = session::open_with(conn, args.subscription(), first)?;
    let mut listener = Listener {
        args,
        printer: Printer::start()?,
        losses: Losses::default(),
        seen: 0,
    };
    let mut happened = Vec::new();
    let mut result = Ok(());
    let mut closed = false;
    // Whether the run ended as asked (its duration, a stop signal): what arrives until the
    // Logoff's answer is printed too. A count reached or a stdout gone prints no more.
    let mut to_the_end = false;
    'listen: loop {
        if end.is_some_and(|e| Instant::now() >= e) || stop::requested() {
            to_the_end = true;
            break;
        }
        if let Err(f) = live.wait(stop::wake_by(end), &mut happened) {
            result = Err(f);
            break;
        }
        listener.losses.tick(Instant::now());
        if let Some(end) = listener.printer.ended_early() {
            // The reader left while nothing was printed (`ami listen | head -1`).
            result = end;
            break;
        }
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
    // The end's one grace counts from here: the Logoff and the last lines share it.
    let grace_ends = Instant::now() + LOGOFF_GRACE;
    if !closed {
        live.logoff_keeping(&mut happened);
        if to_the_end {
            listener.last_lines(happened.drain(..), &live, &mut result);
        }
    }
    listener.losses.finish();
    listener.printer.finish(grace_ends)?;
    result
}

/// Several servers: their streams merged, each line naming its server (`"server"`), and a
/// line on stderr whenever a server goes down or comes back. Exit 3 when a server stopped
/// for good (at once when it was the last), or when no server ever logged in.
fn run_fleet(conn: &Connection, args: &Args) -> Result<(), Failure> {
    stop::catch();
    let started = Instant::now();
    let mut fleet = Fleet::open(conn, args.subscription())?;
    let end = args.duration.map(|s| started + seconds(s));
    let mut printer = Printer::start()?;
    let mut losses = Losses::default();
    let mut seen = 0u64;
    let mut status_lines = fleet::StatusLines::default();
    // Whether any server logged in during the run.
    let mut any_ready = false;
    let mut happened = Vec::new();
    let mut result = Ok(());
    // Whether the run ended as asked (its duration, a stop signal): what arrives until the
    // Logoffs' answers is printed too.
    let mut to_the_end = false;
    'listen: loop {
        if end.is_some_and(|e| Instant::now() >= e) || stop::requested() {
            to_the_end = true;
            break;
        }
        fleet.wait(stop::wake_by(end), &mut happened)?;
        losses.tick(Instant::now());
        if let Some(end) = printer.ended_early() {
            // The reader left while nothing was printed (`ami listen | head -1`).
            result = end;
            break;
        }
        for h in happened.drain(..) {
            let line = match h {
                fleet::Happening::Item(item) => {
                    let (line, ready) = fleet_line(&fleet, args, item, &mut losses, &mut seen);
                    any_ready |= ready;
                    match line {
                        Some(line) => line,
                        None => continue,
                    }
                }
                fleet::Happening::Status(server, status) => {
                    any_ready |= matches!(status, ServerStatus::Ready { .. });
                    status_lines.say(&fleet, server.as_str(), &status);
                    if matches!(status, ServerStatus::Closed { .. }) {
                        let (closed, all) = fleet.closed_for_good();
                        if all {
                            result = Err(if any_ready {
                                closed_failure(&fleet, &closed)
                            } else {
                                fleet.none_ready(started.elapsed())
                            });
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
        // No server ever logged in (all refused, say): nothing of what was asked was done,
        // however the run ended (its duration, a signal).
        if !any_ready {
            result = Err(fleet.none_ready(started.elapsed()));
        } else {
            // Some servers stopped for good while others kept streaming: the run did not do
            // all it was asked, and a script should know without reading stderr.
            let (closed, _) = fleet.closed_for_good();
            if !closed.is_empty() {
                result = Err(closed_failure(&fleet, &closed));
            }
        }
    }
    // The end's one grace counts from here: the Logoffs and the last lines share it.
    let grace_ends = Instant::now() + LOGOFF_GRACE;
    happened.clear();
    fleet.logoff_keeping(LOGOFF_GRACE - session::PRINT_RESERVE, &mut happened);
    if to_the_end {
        // Printed as any other item: each server's events before its Goodbye, its gaps
        // and its `lost` line. Status changes say nothing more: the servers are logging off.
        for h in happened.drain(..) {
            let fleet::Happening::Item(item) = h else {
                continue;
            };
            let (Some(line), _) = fleet_line(&fleet, args, item, &mut losses, &mut seen) else {
                continue;
            };
            match printer.line(line) {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) => break,
                Err(f) => {
                    if result.is_ok() {
                        result = Err(f);
                    }
                    break;
                }
            }
            if args.count.is_some_and(|c| seen >= c) {
                break;
            }
        }
    }
    losses.finish();
    printer.finish(grace_ends)?;
    result
}

/// The line of one item of the merged stream (`None`: nothing to print), its losses noted
/// and its events counted in `seen`; and whether it says its server logged in.
fn fleet_line(
    fleet: &Fleet,
    args: &Args,
    FleetItem { server, item }: FleetItem,
    losses: &mut Losses,
    seen: &mut u64,
) -> (Option<Line>, bool) {
    let line = match item {
        StreamItem::Event(m) if args.wanted(&m) => {
            *seen += 1;
            event(m, Some(server.as_str().to_string()))
        }
        StreamItem::Ready { ami_version } => {
            return (
                Some(Line::Text(json::with_server(
                    &json::session_ready(&ami_version),
                    server.as_str(),
                ))),
                true,
            );
        }
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
                return (None, false);
            }
            Line::Text(json::with_server(
                &json::discarded_gap(count),
                server.as_str(),
            ))
        }
        _ => return (None, false),
    };
    (Some(line), false)
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
