//! `ami calls`: the live calls, from a snapshot, kept by the core's call tracker
//! ([`ami_proto::calls`]). Once by default; `--watch` keeps a live table on a terminal, or
//! writes JSON lines when stdout is not one, through gaps, reconnects and resyncs.
//!
//! JSON lines (`--watch` into a pipe, or once into a pipe):
//!
//! ```text
//! {"type":"calls","stale":false,"calls":[{"linkedid":..,"channels":[{..}]}]}   the view, when it changed
//! {"type":"stale","reason":"session lost: ..."}                               from here the view may be behind
//! {"type":"resynced","continued":3,"ended_unobserved":1,"adopted":0,"replayed":0,"kept_newer":0}
//! {"type":"call_ended","linkedid":..,"channels":2,"cause":16,"unobserved":false,"end":"seen","duration_s":12.5}
//! ```
//!
//! In a `calls` line `channels` is each call's channels; in `call_ended` it is how many the
//! call had (the channels themselves went with the call).
//!
//! A call that ended while the link was down is reported with `"unobserved":true`,
//! `"end":"unobserved"`, no cause and no duration: nobody saw its Hangup, and the tracker
//! does not make one up. `"end":"moved"`: every channel of the call moved into another
//! call (a transfer, a bridge with an older call): it has no end or duration of its own.
//!
//! With several servers (`--server` repeated, on every runtime) each has its own tracker
//! and view: every JSON line gains `"server":"host:port"` first, the terminal shows one
//! table per server, a server going down or coming back is said on stderr, a server that
//! stops for good is named there while the others go on (exit 3 at the end, as when no
//! server ever logged in), and `ami calls` (once) prints the servers that gave a snapshot
//! and names the others (exit 3).
//!
//! The view is looked at twice a second (a `calls` line only when it changed, and once more
//! at the end); the other lines come as they happen. A reader that stops reading loses no
//! session: the output waits on a thread of its own, older views give way to the newest,
//! and news that outgrows its cap is counted in a `{"type":"gap",...}` line
//! ([`crate::view_out`]).

mod link;
mod screen;

use crate::printer::stdout_end;
use crate::server_failures::ServerFailures;
use crate::session::{self, CallError, Ticket};
use crate::terminal::{cell, say};
use crate::url::ServerUrl;
use crate::view_out::{Flow, ViewOut};
use crate::{json, words, Connection, Failure, EXIT_CONNECT, EXIT_OTHER};
use ami_proto::calls::{
    CallEnd, CallTracker, CallUpdate, Channel, EndedCall, StaleReason, TrackerConfig,
};
use ami_proto::{DisconnectReason, StreamItem};
use link::{Link, News};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep watching: a live table on a terminal, JSON lines when stdout is not one.
    #[arg(long)]
    watch: bool,
    /// With --watch: stop watching after this many seconds (more than 0, counted from the
    /// start, the first login included; then at most 2 s more to log off, and 2 s for a
    /// stdout that does not drain to take what is left).
    #[arg(long, requires = "watch", value_parser = crate::cmd::action::positive_seconds)]
    duration: Option<f64>,
}

/// How long `ami calls` (once) waits for its snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(15);
/// How often the view is looked at: the terminal table redrawn (also when unchanged, for the
/// ages), the JSON view written if it changed.
const REDRAW: Duration = Duration::from_millis(500);
/// Lines of recent news under the terminal table.
const NEWS: usize = 8;
/// How long a stdout that does not drain gets to take the last of the output at the end.
const FINISH_GRACE: Duration = Duration::from_secs(2);

/// One server's tracker, fed from its stream and the answers to its own requests.
struct Tracked {
    tracker: CallTracker,
    tickets: HashMap<Ticket, u64>,
    /// Its session started (a `Ready` item fed, or up when the trackers were made).
    started: bool,
    /// Why the server stopped for good, once it did.
    closed: Option<String>,
}

/// Every server's tracker, in `--server` order.
struct Trackers {
    servers: Vec<Tracked>,
    /// Every server's session is up when the first news is fed (one session, logged in
    /// before; or the servers `keep_ready` kept), so a tracker not started by a `Ready`
    /// item of its own is started then. Otherwise a tracker starts at its session's
    /// `Ready` only: a server that never connects says nothing, and one that does says its
    /// start once.
    up_at_first_feed: bool,
}

impl Trackers {
    /// One tracker per server of `names` (each named after its server in its log records,
    /// as the server's client is).
    fn new(names: Vec<String>, up_at_first_feed: bool) -> Result<Trackers, Failure> {
        let config = TrackerConfig::builder()
            .tag_prefix(&format!("ami-cli-{}", std::process::id()))
            .build()
            .map_err(|e| Failure::new(EXIT_OTHER, e.to_string()))?;
        Ok(Trackers {
            servers: names
                .into_iter()
                .map(|name| Tracked {
                    tracker: CallTracker::new(config.clone().with_name(name)),
                    tickets: HashMap::new(),
                    started: false,
                    closed: None,
                })
                .collect(),
            up_at_first_feed,
        })
    }

    /// Feeds what happened, then sends what the trackers ask for. `Err` when every server
    /// stopped for good (one session: as soon as it did).
    fn feed(&mut self, link: &mut Link, news: &mut Vec<News>) -> Result<(), Failure> {
        let now = Instant::now();
        for n in news.drain(..) {
            match n {
                News::Item(ix, item) => {
                    if let Some(t) = self.servers.get_mut(ix).filter(|t| t.closed.is_none()) {
                        // The tracker asks for its snapshot itself at a `Ready`.
                        t.started |= matches!(item, StreamItem::Ready { .. });
                        t.tracker.handle_item(now, &item);
                    }
                }
                News::Completed(ticket, result) => {
                    for t in &mut self.servers {
                        let Some(token) = t.tickets.remove(&ticket) else {
                            continue;
                        };
                        match result {
                            Ok(r) => t.tracker.handle_reply(now, token, Ok(r)),
                            Err(CallError::Action(e)) => t.tracker.handle_reply(now, token, Err(e)),
                            Err(_) => t.tracker.send_failed(now, token),
                        }
                        break;
                    }
                }
                News::Closed(ix, reason) => self.closed(link, ix, reason)?,
            }
        }
        // Waits that end with time alone (an answered Originate's channel events, a missing
        // channel's Hangup): due at every turn, which `watch` takes at least every REDRAW.
        for t in self.servers.iter_mut().filter(|t| t.closed.is_none()) {
            if t.tracker.poll_timeout().is_some_and(|at| at <= now) {
                t.tracker.handle_timeout(now);
            }
        }
        // A server out of the view (stopped for good, or taken out as down) is asked nothing.
        let up = std::mem::take(&mut self.up_at_first_feed);
        for (ix, t) in self
            .servers
            .iter_mut()
            .enumerate()
            .filter(|(_, t)| t.closed.is_none())
        {
            // The session was up before the first item arrived: ask for a snapshot now,
            // unless the stream's own session start already did.
            if !t.started && up {
                t.started = true;
                if !t.tracker.is_resyncing() && t.tracker.is_stale() {
                    t.tracker.resync();
                }
            }
            while let Some(req) = t.tracker.poll_request() {
                let ticket = link.send(ix, req.action, req.options);
                t.tickets.insert(ticket, req.token);
            }
        }
        Ok(())
    }

    /// Server `ix` stopped for good: with one server the command ends; with several it
    /// goes on for the others, and says so on stderr.
    fn closed(&mut self, link: &Link, ix: usize, reason: DisconnectReason) -> Result<(), Failure> {
        if matches!(
            reason,
            DisconnectReason::Logoff | DisconnectReason::LocalClose
        ) {
            return Err(Failure::new(EXIT_OTHER, "the session ended"));
        }
        let why = match link.url(ix) {
            Some(url) => words::reason(&reason, url),
            None => reason.to_string(),
        };
        if link.len() == 1 {
            return Err(Failure::new(EXIT_CONNECT, format!("session ended: {why}")));
        }
        say!("ami: {}: session ended: {why}", link.name(ix));
        self.gone(ix, why);
        if self.servers.iter().all(|t| t.closed.is_some()) {
            return Err(Failure::new(EXIT_CONNECT, "every server's session ended"));
        }
        Ok(())
    }

    /// Server `ix` is out of the view for good, for `why`.
    fn gone(&mut self, ix: usize, why: String) {
        if let Some(t) = self.servers.get_mut(ix) {
            t.closed = Some(why);
        }
    }

    /// The servers still followed, with their index.
    fn followed(&self) -> impl Iterator<Item = (usize, &Tracked)> {
        self.servers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.closed.is_none())
    }
}

fn age(ch: &Channel, now: Instant) -> Option<f64> {
    ch.created
        .map(|c| now.saturating_duration_since(c).as_secs_f64())
}

fn channel_json(ch: &Channel, now: Instant) -> serde_json::Value {
    json!({
        "uniqueid": ch.uniqueid,
        "name": ch.name,
        "state": ch.state.name(),
        "caller_id_num": ch.caller_id_num,
        "caller_id_name": ch.caller_id_name,
        "context": ch.context,
        "exten": ch.exten,
        "bridge": ch.bridge,
        "age_s": age(ch, now),
        "adopted": ch.adopted,
        "originate": ch.originate.as_ref().map(|t| t.to_string()),
    })
}

/// `line` with `"server"` first when the calls come from several servers.
fn naming(line: String, server: Option<&str>) -> String {
    match server {
        Some(s) => json::with_server(&line, s),
        None => line,
    }
}

fn calls_json(tracker: &CallTracker) -> String {
    let now = Instant::now();
    let calls: Vec<serde_json::Value> = oldest_first(tracker)
        .into_iter()
        .map(|(linkedid, chans)| {
            let chans: Vec<_> = chans.iter().map(|c| channel_json(c, now)).collect();
            json!({"linkedid": linkedid, "channels": chans})
        })
        .collect();
    json_line(&json!({"type": "calls", "stale": tracker.is_stale(), "calls": calls}))
}

fn stale_text(reason: &StaleReason, url: Option<&ServerUrl>) -> String {
    match reason {
        StaleReason::Start => "session (re)started: taking a snapshot".to_string(),
        StaleReason::SessionLost(r) => format!(
            "session lost: {}",
            url.map_or(r.to_string(), |u| words::reason(r, u))
        ),
        StaleReason::Gap { dropped } => format!("{dropped} events dropped (reader behind)"),
        StaleReason::BufferFull => {
            "events for untracked channels dropped during a snapshot (buffer full)".to_string()
        }
        StaleReason::OriginateInDoubt => "an Originate's answer was lost".to_string(),
        StaleReason::SnapshotFailed { attempt } => format!("snapshot failed (attempt {attempt})"),
        other => format!("{other:?}"),
    }
}

fn ended_json(call: &EndedCall) -> String {
    let duration = match (call.created(), call.ended().seen()) {
        (Some(c), Some(e)) => Some(e.saturating_duration_since(c).as_secs_f64()),
        _ => None,
    };
    json_line(&json!({
        "type": "call_ended",
        "linkedid": call.linkedid,
        "channels": call.channels.len(),
        "cause": call.cause(),
        "unobserved": call.unobserved(),
        "end": end_word(call.ended()),
        "duration_s": duration,
    }))
}

/// A JSON value as one line, written so that no caller ID name a remote caller chose can
/// steer the reader's terminal ([`ami_json::TerminalSafe`]).
fn json_line(v: &serde_json::Value) -> String {
    // A Value always serializes.
    ami_json::to_string(v).unwrap_or_default()
}

/// How the end of a call is known, in one word: `duration_s` is null unless it is `seen`.
fn end_word(end: CallEnd) -> &'static str {
    match end {
        CallEnd::Seen(_) => "seen",
        CallEnd::Unobserved { .. } => "unobserved",
        CallEnd::Moved => "moved",
        _ => "unknown",
    }
}

/// One update as a JSON line, or `None` for updates this command does not show.
fn update_json(u: &CallUpdate, url: Option<&ServerUrl>) -> Option<String> {
    Some(match u {
        CallUpdate::Stale(r) => json_line(&json!({"type": "stale", "reason": stale_text(r, url)})),
        CallUpdate::Resynced(r) => json_line(&json!({
            "type": "resynced",
            "continued": r.continued,
            "ended_unobserved": r.ended_unobserved,
            "adopted": r.adopted,
            "replayed": r.replayed,
            "kept_newer": r.kept_newer,
        })),
        CallUpdate::CallEnded(c) => ended_json(c),
        _ => return None,
    })
}

/// One update as a line of news under the terminal table.
fn update_text(u: &CallUpdate, url: Option<&ServerUrl>) -> Option<String> {
    Some(match u {
        CallUpdate::Stale(r) => format!("stale: {}", stale_text(r, url)),
        CallUpdate::Resynced(r) => format!(
            "resynced: {} continued, {} ended unseen, {} adopted",
            r.continued, r.ended_unobserved, r.adopted
        ),
        CallUpdate::CallEnded(c) if c.unobserved() => {
            format!("ended while unobserved: {} (cause unknown)", c.linkedid)
        }
        CallUpdate::CallEnded(c) if c.ended() == CallEnd::Moved => {
            format!("merged into other calls: {}", c.linkedid)
        }
        CallUpdate::CallEnded(c) => format!(
            "ended: {} cause {}",
            c.linkedid,
            c.cause().map_or("?".to_string(), |c| c.to_string())
        ),
        _ => return None,
    })
}

/// The calls as a table, one channel a row, grouped by call.
fn table(tracker: &CallTracker, out: &mut String) {
    let (columns, rows) = table_lines(tracker, None);
    for line in std::iter::once(columns).chain(rows) {
        out.push_str(&line);
        out.push('\n');
    }
}

/// The table's column names, and its rows: one channel a row, grouped by call.
/// `widths`: cells cut to these; `None` keeps every cell whole (the full widths as
/// minimums: a long name pushes its row's later cells right).
fn table_lines(tracker: &CallTracker, widths: Option<&[usize; 6]>) -> (String, Vec<String>) {
    let now = Instant::now();
    let columns = row(
        widths,
        [
            "LINKEDID",
            "CHANNEL",
            "STATE",
            "CALLER ID",
            "CONTEXT/EXTEN",
            "AGE",
        ],
    );
    let mut rows = Vec::new();
    for (linkedid, chans) in oldest_first(tracker) {
        for (i, ch) in chans.iter().enumerate() {
            let id = if i == 0 { linkedid } else { "" };
            let age = age(ch, now).map_or("?".to_string(), |a| format!("{a:.0}s"));
            rows.push(row(
                widths,
                [
                    id,
                    &ch.name,
                    ch.state.name(),
                    &format!("{} {}", ch.caller_id_num, ch.caller_id_name),
                    &format!("{}/{}", ch.context, ch.exten),
                    &age,
                ],
            ));
        }
    }
    (columns, rows)
}

/// The live calls, oldest first: a Linkedid is `epoch.sequence`, which as text (the
/// tracker's order) puts `.10` before `.4`.
fn oldest_first(tracker: &CallTracker) -> Vec<(&str, Vec<&Channel>)> {
    let mut calls: Vec<_> = tracker.calls().collect();
    calls.sort_by_cached_key(|(linkedid, _)| linkedid_order(linkedid));
    calls
}

/// A Linkedid's place in time: (epoch, sequence) for Asterisk's `1700000000.42`, after
/// them any other text, by its bytes.
fn linkedid_order(linkedid: &str) -> (u8, u64, u64, String) {
    let parsed = linkedid
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    match parsed {
        Some((epoch, seq)) => (0, epoch, seq, String::new()),
        None => (1, 0, 0, linkedid.to_string()),
    }
}

/// One line of the table. Every cell but the state is the server's text, and a caller ID
/// name is whatever the remote caller put in its SIP `From`: shown escaped, never obeyed.
fn row(widths: Option<&[usize; 6]>, [id, channel, state, caller, place, age]: [&str; 6]) -> String {
    let cut = widths.is_some();
    let [w_id, w_channel, w_state, w_caller, w_place, w_age] =
        *widths.unwrap_or(&screen::FULL_WIDTHS);
    format!(
        "{} {} {} {} {} {:>w_age$}",
        screen::column(&cell(id), w_id, cut),
        screen::column(&cell(channel), w_channel, cut),
        screen::column(&cell(state), w_state, cut),
        screen::column(&cell(caller), w_caller, cut),
        screen::column(&cell(place), w_place, cut),
        age
    )
}

fn header(tracker: &CallTracker, name: &str) -> String {
    let state = if tracker.is_resyncing() {
        "resyncing"
    } else if tracker.is_stale() {
        "STALE"
    } else {
        "live"
    };
    let s = tracker.stats();
    format!(
        "ami calls {name}  [{state}]  {} calls, {} channels; {} resyncs, {} ended unseen\n\n",
        s.calls, s.channels, s.resynced, s.ended_unobserved
    )
}

/// What the `calls` JSON line shows of one channel, but its age (which moves every second).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChannelSig {
    uniqueid: String,
    linkedid: String,
    name: String,
    state: u8,
    caller_id_num: String,
    caller_id_name: String,
    context: String,
    exten: String,
    bridge: Option<String>,
    adopted: bool,
    originate: Option<String>,
}

/// Whether the view is stale, and its channels' signatures.
type ViewSig = (bool, Vec<ChannelSig>);

/// The signature of the view: everything its `calls` JSON line shows but the ages, so that
/// the line is written again when any of it changes (a rename, a bridge changed for another,
/// a caller ID given, a channel moved to another call), and only then.
fn signature(tracker: &CallTracker) -> ViewSig {
    let chans = tracker
        .channels()
        .map(|c| ChannelSig {
            uniqueid: c.uniqueid.clone(),
            linkedid: c.linkedid.clone(),
            name: c.name.clone(),
            state: c.state.code(),
            caller_id_num: c.caller_id_num.clone(),
            caller_id_name: c.caller_id_name.clone(),
            context: c.context.clone(),
            exten: c.exten.clone(),
            bridge: c.bridge.clone(),
            adopted: c.adopted,
            originate: c.originate.as_ref().map(|t| t.to_string()),
        })
        .collect();
    (tracker.is_stale(), chans)
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    let started = Instant::now();
    // The duration counts from the start: a first login that does not come within it ends
    // the watch then (exit 3), as a stop signal meanwhile does.
    let within = args
        .duration
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 1e9)));
    let first = session::FirstLogin {
        within,
        stoppable: args.watch,
    };
    // Only the classes the tracker reads: on a busy server the rest (RTCP reports, queue
    // and agent events, UserEvents) is most of the traffic.
    let mut link = Link::open(conn, ami_proto::calls::EVENT_MASK, first, args.watch)?;
    // One session is up already; `once` keeps the servers that are; a watch over several
    // follows each from its own session start.
    let names = (0..link.len()).map(|ix| link.name(ix)).collect();
    let mut t = Trackers::new(names, !args.watch || link.len() == 1)?;
    if args.watch {
        let mut out = ViewOut::start()?;
        let end = within.map(|d| started + d);
        let result = watch(&mut link, &mut t, end, &mut out)
            .and_then(|()| watch_end(&link, &t, started.elapsed()));
        link.logoff();
        // What the view had to say is out, or said to be lost, before the command ends.
        let written = out.finish(FINISH_GRACE);
        result.and(written)
    } else {
        let result = once(&mut link, &mut t);
        // Logged off before the table is written: a stdout that does not drain keeps no
        // session open.
        link.logoff();
        let (text, failed) = result?;
        write_out(&text)?;
        failed.map_or(Ok(()), Err)
    }
}

/// The live calls once, as the table on a terminal or JSON lines (each naming its server
/// when there are several), and the failure to report after them: with several servers,
/// those that gave no snapshot are named on stderr and the others are shown.
fn once(link: &mut Link, t: &mut Trackers) -> Result<(String, Option<Failure>), Failure> {
    let many = link.len() > 1;
    let mut failures = ServerFailures::default();
    let mut last_down = None;
    for (ix, why) in link.keep_ready(session::FIRST_LOGIN_TIMEOUT)? {
        if many {
            failures.say(
                &link.name(ix),
                &format!("not connected: {why}"),
                EXIT_CONNECT,
            );
        }
        last_down = Some(format!("{}: {why}", link.name(ix)));
        t.gone(ix, why);
    }
    if t.followed().next().is_none() {
        // Nothing to show: with one server its reason is the failure, with several each
        // was said above.
        return Err(match failures.into_failure(link.len(), "no calls shown") {
            Some(f) => f,
            None => Failure::new(
                EXIT_CONNECT,
                last_down.unwrap_or_else(|| "no server".into()),
            ),
        });
    }
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    let mut news = Vec::new();
    // What is there already (a session's login), then the snapshots are asked for before
    // a wait blocks: a quiet server whose first items went by while the fleet settled would
    // otherwise be asked only when the wait ends, at the deadline.
    link.wait(Some(Instant::now()), &mut news)?;
    t.feed(link, &mut news)?;
    while t
        .followed()
        .any(|(_, s)| s.tracker.is_stale() || !s.started)
    {
        if Instant::now() >= deadline {
            let late: Vec<String> = t
                .followed()
                .filter(|(_, s)| s.tracker.is_stale() || !s.started)
                .map(|(ix, _)| link.name(ix))
                .collect();
            // The snapshot is a CoreShowChannels list: named, with what a late one means.
            let why = format!(
                "CoreShowChannels: no snapshot: its list did not complete within {} (no \
                 response, or the list cut short; a read-only list, safe to ask again)",
                words::duration(SNAPSHOT_WAIT)
            );
            if !many {
                let name = late.first().map_or("the server", String::as_str);
                return Err(Failure::new(EXIT_OTHER, format!("{name}: {why}")));
            }
            for name in &late {
                failures.say(name, &why, EXIT_OTHER);
            }
            let late_ix: Vec<usize> = t
                .followed()
                .filter(|(_, s)| s.tracker.is_stale() || !s.started)
                .map(|(ix, _)| ix)
                .collect();
            for ix in late_ix {
                t.gone(ix, why.clone());
            }
            break;
        }
        link.wait(Some(deadline), &mut news)?;
        t.feed(link, &mut news)?;
    }
    let mut out = String::new();
    let terminal = std::io::stdout().is_terminal();
    let now = Instant::now();
    for (ix, s) in t.followed() {
        let name = link.name(ix);
        let server = many.then_some(name.as_str());
        if terminal {
            if many {
                out.push_str(&format!("== {} ==\n", cell(&name)));
            }
            table(&s.tracker, &mut out);
        } else {
            for (linkedid, chans) in oldest_first(&s.tracker) {
                let chans: Vec<_> = chans.iter().map(|c| channel_json(c, now)).collect();
                let line = json!({"type": "call", "linkedid": linkedid, "channels": chans});
                out.push_str(&naming(json_line(&line), server));
                out.push('\n');
            }
        }
    }
    Ok((out, failures.into_failure(link.len(), "calls not shown")))
}

/// Writes to stdout; a reader that has gone (`ami calls | head -1`) is a quiet end.
fn write_out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout_end(
        &stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )
}

/// Keeps the view until the duration ends, a signal comes or stdout closes.
///
/// The view is looked at once per [`REDRAW`], not per batch of events: on a busy server
/// (a thousand calls, hundreds of events a second) a view per batch would be megabytes of
/// JSON a second that nobody can read. News lines go out as they come. The output goes
/// through [`ViewOut`], never straight to stdout: a reader that stops reading must not stop
/// the session (on `ami-mio` this thread is the one that reads the socket). With several
/// servers each has its own view (JSON lines name their server; the terminal shows one
/// table per server), and a server that stops for good leaves the others running.
fn watch(
    link: &mut Link,
    t: &mut Trackers,
    end: Option<Instant>,
    out: &mut ViewOut,
) -> Result<(), Failure> {
    let many = link.len() > 1;
    let terminal = std::io::stdout().is_terminal();
    let mut news: VecDeque<String> = VecDeque::new();
    let mut happened = Vec::new();
    let mut last_sig: Vec<Option<ViewSig>> = vec![None; link.len()];
    let mut looked = Instant::now() - REDRAW;
    crate::stop::catch();
    link.wait(Some(Instant::now()), &mut happened)?;
    t.feed(link, &mut happened)?;
    loop {
        let going = end.is_none_or(|e| Instant::now() < e) && !crate::stop::requested();
        if going {
            let due = looked + REDRAW;
            let until = end.map_or(due, |e| e.min(due));
            link.wait(crate::stop::wake_by(Some(until)), &mut happened)?;
            t.feed(link, &mut happened)?;
        }
        let mut lines = Vec::new();
        for (ix, s) in t.servers.iter_mut().enumerate() {
            let name = link.name(ix);
            let url = link.url(ix);
            while let Some(u) = s.tracker.poll_update() {
                if terminal {
                    if let Some(text) = update_text(&u, url) {
                        let text = if many {
                            format!("{name}: {text}")
                        } else {
                            text
                        };
                        news.push_back(cell(&text).into_owned());
                        if news.len() > NEWS {
                            news.pop_front();
                        }
                    }
                } else if let Some(line) = update_json(&u, url) {
                    let mut line = naming(line, many.then_some(name.as_str()));
                    line.push('\n');
                    lines.push(line);
                }
            }
        }
        let mut view = None;
        // The last look, at the end, gives a pipe the view as it was when the command ended.
        if looked.elapsed() >= REDRAW || !going {
            looked = Instant::now();
            let mut changed = Vec::new();
            for (ix, s) in t.followed() {
                let sig = signature(&s.tracker);
                if last_sig[ix].as_ref() != Some(&sig) {
                    changed.push(ix);
                }
                last_sig[ix] = Some(sig);
            }
            if terminal && going {
                // Redrawn even when unchanged: the ages move. Fitted to the terminal as it
                // is now (it may have been resized).
                let (height, width) = screen::terminal_size().unwrap_or((24, 80));
                let widths = screen::column_widths(width);
                let sections: Vec<screen::Section> = t
                    .followed()
                    .map(|(ix, s)| {
                        let (columns, rows) = table_lines(&s.tracker, Some(&widths));
                        let mut head: Vec<String> = header(&s.tracker, &cell(&link.name(ix)))
                            .lines()
                            .map(str::to_string)
                            .collect();
                        head.push(columns);
                        screen::Section { head, rows }
                    })
                    .collect();
                let news: Vec<String> = news.iter().cloned().collect();
                let mut text = String::from("\x1b[H\x1b[2J");
                text.push_str(&screen::fit(&sections, &news, height, width));
                view = Some(text);
            } else if !terminal && !changed.is_empty() {
                let mut text = String::new();
                for ix in changed {
                    let line = calls_json(&t.servers[ix].tracker);
                    text.push_str(&naming(line, many.then_some(link.name(ix).as_str())));
                    text.push('\n');
                }
                view = Some(text);
            }
        }
        if (!lines.is_empty() || view.is_some()) && out.show(lines, view)? == Flow::Stop {
            return Ok(());
        }
        // Its reader left while nothing changed (`calls --watch | head -1`, quiet server).
        if !going || out.ended() {
            return Ok(());
        }
    }
}

/// How a watch that ended on its own terms (its duration, a signal, stdout closed) ends for
/// the command, after `waited`: exit 3 when no server ever started a session, or when one
/// stopped for good (each said on stderr as it happened), as `listen` does.
fn watch_end(link: &Link, t: &Trackers, waited: Duration) -> Result<(), Failure> {
    if t.servers.iter().all(|s| !s.started) {
        if let Some(f) = link.none_ready(waited) {
            return Err(f);
        }
    }
    let closed: Vec<String> = t
        .servers
        .iter()
        .enumerate()
        .filter_map(|(ix, s)| Some(format!("{}: {}", link.name(ix), s.closed.as_ref()?)))
        .collect();
    if closed.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            EXIT_CONNECT,
            format!("stopped for good: {}", closed.join("; ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON view of `ami calls --watch` (stdout not a terminal) is written when
    /// `signature` changes, so the signature holds everything the line shows but the ages:
    /// a channel renamed, moved from one bridge to another, or given its caller ID
    /// (NewCallerid, `originate_async.raw`: `<unknown>` -> `5551000` while the state stays 0)
    /// writes the line again.
    #[test]
    fn a_rename_a_bridge_changed_for_another_or_a_caller_id_writes_the_view_again() {
        fn event(text: &str) -> ami_proto::StreamItem {
            let mut d = ami_proto::Decoder::without_banner(ami_proto::DecoderLimits::default());
            let bytes = text.replace('\n', "\r\n");
            d.feed(bytes.as_bytes());
            match d.decode() {
                Some(Ok(ami_proto::Frame::Message(m))) => ami_proto::StreamItem::Event(m),
                other => panic!("{other:?}"),
            }
        }
        let block = |num: &str| {
            format!(
                "Channel: Local/wait10@ami-test-00000002;1\nChannelState: 0\nChannelStateDesc: Down\n\
                 CallerIDNum: {num}\nCallerIDName: <unknown>\nContext: ami-test\nExten: wait10\n\
                 Priority: 1\nUniqueid: 1795423110.4\nLinkedid: 1795423110.4\n"
            )
        };
        let now = Instant::now();
        let mut tr = CallTracker::new(TrackerConfig::builder().build().unwrap());
        tr.handle_item(
            now,
            &ami_proto::StreamItem::Ready {
                ami_version: "11.0.0".into(),
            },
        );
        tr.handle_item(
            now,
            &event(&format!("Event: Newchannel\n{}\n", block("<unknown>"))),
        );
        let mut changes = Vec::new();
        let mut last = signature(&tr);
        // The view is looked at every REDRAW (500 ms): each step is what happens between
        // two looks.
        let mut step = |tr: &mut CallTracker, what: &str, texts: Vec<String>| {
            for text in texts {
                tr.handle_item(now, &event(&text));
            }
            let sig = signature(tr);
            if sig == last {
                changes.push(what.to_string());
            }
            last = sig;
        };
        step(
            &mut tr,
            "NewCallerid",
            vec![format!("Event: NewCallerid\n{}\n", block("5551000"))],
        );
        step(
            &mut tr,
            "BridgeEnter b-1",
            vec![format!(
                "Event: BridgeEnter\nBridgeUniqueid: b-1\n{}\n",
                block("5551000")
            )],
        );
        step(
            &mut tr,
            "moved from bridge b-1 to b-2 (transfer)",
            vec![
                format!(
                    "Event: BridgeLeave\nBridgeUniqueid: b-1\n{}\n",
                    block("5551000")
                ),
                format!(
                    "Event: BridgeEnter\nBridgeUniqueid: b-2\n{}\n",
                    block("5551000")
                ),
            ],
        );
        step(
            &mut tr,
            "Rename",
            vec!["Event: Rename\nChannel: Local/wait10@ami-test-00000002;1\nNewname: PJSIP/100-0000000a\nUniqueid: 1795423110.4\n\n".to_string()],
        );
        assert_eq!(
            tr.channel("1795423110.4").unwrap().name,
            "PJSIP/100-0000000a"
        );
        assert!(
            changes.is_empty(),
            "view changes that write no new `calls` JSON line: {changes:?}"
        );
    }

    #[test]
    fn a_caller_name_that_would_steer_a_terminal_is_written_escaped() {
        let line = json_line(&json!({"callerid_name": "Bob \u{202e}gnp.exe\u{9b}"}));
        assert_eq!(line, r#"{"callerid_name":"Bob \u202egnp.exe\u009b"}"#);
    }

    #[test]
    fn calls_are_listed_oldest_first_by_their_linkedid_as_numbers() {
        let mut ids = vec!["1700000001.4", "x-other", "1700000001.10", "1700000000.99"];
        ids.sort_by_key(|id| linkedid_order(id));
        assert_eq!(
            ids,
            ["1700000000.99", "1700000001.4", "1700000001.10", "x-other"]
        );
    }

    #[test]
    fn a_caller_id_name_that_holds_escape_sequences_is_shown_escaped_in_the_table() {
        let out = row(
            None,
            [
                "1700000000.1",
                "PJSIP/100-0000002a\x1b[2J",
                "Ring",
                "100 \x1b]52;c;cm0gLXJmIC8K\x07Boss\u{9b}",
                "default/200\r",
                "3s",
            ],
        );
        assert!(!out.chars().any(char::is_control), "{out:?}");
        assert!(
            out.contains("100 \\x1b]52;c;cm0gLXJmIC8K\\x07Boss\\u{9b}"),
            "{out:?}"
        );
        assert!(out.contains("PJSIP/100-0000002a\\x1b[2J"), "{out:?}");
    }
}
