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
//! {"type":"call_ended","linkedid":..,"cause":16,"unobserved":false,"end":"seen","duration_s":12.5}
//! ```
//!
//! A call that ended while the link was down is reported with `"unobserved":true`,
//! `"end":"unobserved"`, no cause and no duration: nobody saw its Hangup, and the tracker
//! does not make one up. `"end":"moved"`: every channel of the call moved into another
//! call (a transfer, a bridge with an older call): it has no end or duration of its own.
//!
//! The view is looked at twice a second (a `calls` line only when it changed, and once more
//! at the end); the other lines come as they happen. A reader that stops reading loses no
//! session: the output waits on a thread of its own, older views give way to the newest,
//! and news that outgrows its cap is counted in a `{"type":"gap",...}` line
//! ([`crate::view_out`]).

use crate::session::{self, CallError, Change, Happening, Live, Ticket};
use crate::terminal::cell;
use crate::view_out::{Flow, ViewOut};
use crate::{words, Connection, Failure, EXIT_CONNECT, EXIT_OTHER};
use ami_proto::calls::{
    CallEnd, CallTracker, CallUpdate, Channel, EndedCall, StaleReason, TrackerConfig,
};
use ami_proto::DisconnectReason;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep watching: a live table on a terminal, JSON lines when stdout is not one.
    #[arg(long)]
    watch: bool,
    /// Stop watching after this many seconds (then at most 2 s more to log off, and 2 s for
    /// a stdout that does not drain to take what is left).
    #[arg(long, value_parser = crate::seconds::parse)]
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

/// The tracker, fed from a session: stream items, and the answers to its own requests.
struct Tracked {
    tracker: CallTracker,
    tickets: HashMap<Ticket, u64>,
    started: bool,
}

impl Tracked {
    /// Feeds what happened; `Err` when the session ended for good.
    fn feed(&mut self, live: &mut Live, happened: &mut Vec<Happening>) -> Result<(), Failure> {
        let now = Instant::now();
        for h in happened.drain(..) {
            match h {
                Happening::Item(item) => self.tracker.handle_item(now, &item),
                Happening::Completed { ticket, result } => {
                    let Some(token) = self.tickets.remove(&ticket) else {
                        continue;
                    };
                    match result {
                        Ok(r) => self.tracker.handle_reply(now, token, Ok(r)),
                        Err(CallError::Action(e)) => self.tracker.handle_reply(now, token, Err(e)),
                        Err(_) => self.tracker.send_failed(now, token),
                    }
                }
                Happening::Change(Change::Closed { reason }) => {
                    return Err(match reason {
                        DisconnectReason::Logoff | DisconnectReason::LocalClose => {
                            Failure::new(EXIT_OTHER, "the session ended")
                        }
                        other => Failure::new(
                            EXIT_CONNECT,
                            format!("session ended: {}", words::reason(&other, &live.url)),
                        ),
                    });
                }
                Happening::Change(_) => {}
            }
        }
        // The session was up before the first item arrived: ask for a snapshot now, unless
        // the stream's own session start already did.
        if !self.started {
            self.started = true;
            if !self.tracker.is_resyncing() && self.tracker.is_stale() {
                self.tracker.resync();
            }
        }
        while let Some(req) = self.tracker.poll_request() {
            let ticket = live.session.send_with(req.action, req.options);
            self.tickets.insert(ticket, req.token);
        }
        Ok(())
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

fn calls_json(tracker: &CallTracker) -> String {
    let now = Instant::now();
    let calls: Vec<serde_json::Value> = tracker
        .calls()
        .map(|(linkedid, chans)| {
            let chans: Vec<_> = chans.iter().map(|c| channel_json(c, now)).collect();
            json!({"linkedid": linkedid, "channels": chans})
        })
        .collect();
    json!({"type": "calls", "stale": tracker.is_stale(), "calls": calls}).to_string()
}

fn stale_text(reason: &StaleReason, live: &Live) -> String {
    match reason {
        StaleReason::Start => "session (re)started: taking a snapshot".to_string(),
        StaleReason::SessionLost(r) => format!("session lost: {}", words::reason(r, &live.url)),
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
    json!({
        "type": "call_ended",
        "linkedid": call.linkedid,
        "channels": call.channels.len(),
        "cause": call.cause(),
        "unobserved": call.unobserved(),
        "end": end_word(call.ended()),
        "duration_s": duration,
    })
    .to_string()
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
fn update_json(u: &CallUpdate, live: &Live) -> Option<String> {
    Some(match u {
        CallUpdate::Stale(r) => json!({"type": "stale", "reason": stale_text(r, live)}).to_string(),
        CallUpdate::Resynced(r) => json!({
            "type": "resynced",
            "continued": r.continued,
            "ended_unobserved": r.ended_unobserved,
            "adopted": r.adopted,
            "replayed": r.replayed,
            "kept_newer": r.kept_newer,
        })
        .to_string(),
        CallUpdate::CallEnded(c) => ended_json(c),
        _ => return None,
    })
}

/// One update as a line of news under the terminal table.
fn update_text(u: &CallUpdate, live: &Live) -> Option<String> {
    Some(match u {
        CallUpdate::Stale(r) => format!("stale: {}", stale_text(r, live)),
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
    let now = Instant::now();
    row(
        out,
        [
            "LINKEDID",
            "CHANNEL",
            "STATE",
            "CALLER ID",
            "CONTEXT/EXTEN",
            "AGE",
        ],
    );
    for (linkedid, chans) in tracker.calls() {
        for (i, ch) in chans.iter().enumerate() {
            let id = if i == 0 { linkedid } else { "" };
            let age = age(ch, now).map_or("?".to_string(), |a| format!("{a:.0}s"));
            row(
                out,
                [
                    id,
                    &ch.name,
                    ch.state.name(),
                    &format!("{} {}", ch.caller_id_num, ch.caller_id_name),
                    &format!("{}/{}", ch.context, ch.exten),
                    &age,
                ],
            );
        }
    }
}

/// One line of the table. Every cell but the state is the server's text, and a caller ID
/// name is whatever the remote caller put in its SIP `From`: shown escaped, never obeyed.
fn row(out: &mut String, [id, channel, state, caller, place, age]: [&str; 6]) {
    out.push_str(&format!(
        "{:<18} {:<36} {:<8} {:<18} {:<22} {:>6}\n",
        cell(id),
        cell(channel),
        cell(state),
        cell(caller),
        cell(place),
        age
    ));
}

fn header(tracker: &CallTracker, live: &Live) -> String {
    let state = if tracker.is_resyncing() {
        "resyncing"
    } else if tracker.is_stale() {
        "STALE"
    } else {
        "live"
    };
    let s = tracker.stats();
    format!(
        "ami calls {}  [{state}]  {} calls, {} channels; {} resyncs, {} ended unseen\n\n",
        live.url, s.calls, s.channels, s.resynced, s.ended_unobserved
    )
}

/// A cheap signature of the view: it changed when this did.
fn signature(tracker: &CallTracker) -> Vec<(String, u8, bool)> {
    let mut sig: Vec<_> = tracker
        .channels()
        .map(|c| (c.uniqueid.clone(), c.state.code(), c.bridge.is_some()))
        .collect();
    sig.push((String::new(), 0, tracker.is_stale()));
    sig
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    // Only the classes the tracker reads: on a busy server the rest (RTCP reports, queue
    // and agent events, UserEvents) is most of the traffic.
    let mut live = session::open(conn, ami_proto::calls::EVENT_MASK)?;
    let config = TrackerConfig::builder()
        .tag_prefix(&format!("ami-cli-{}", std::process::id()))
        .build()
        .map_err(|e| Failure::new(EXIT_OTHER, e.to_string()))?;
    let mut t = Tracked {
        tracker: CallTracker::new(config),
        tickets: HashMap::new(),
        started: false,
    };
    if args.watch {
        let mut out = ViewOut::start()?;
        let result = watch(&mut live, &mut t, args, &mut out);
        live.logoff();
        // What the view had to say is out, or said to be lost, before the command ends.
        let written = out.finish(FINISH_GRACE);
        result.and(written)
    } else {
        let result = once(&mut live, &mut t);
        // Logged off before the table is written: a stdout that does not drain keeps no
        // session open.
        live.logoff();
        write_out(&result?)
    }
}

/// The live calls once, as the table on a terminal or JSON lines.
fn once(live: &mut Live, t: &mut Tracked) -> Result<String, Failure> {
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    let mut happened = Vec::new();
    while t.tracker.is_stale() || !t.started {
        if Instant::now() >= deadline {
            return Err(Failure::new(
                EXIT_OTHER,
                format!("no snapshot within {}", words::duration(SNAPSHOT_WAIT)),
            ));
        }
        live.wait(Some(deadline), &mut happened)?;
        t.feed(live, &mut happened)?;
    }
    let mut out = String::new();
    if std::io::stdout().is_terminal() {
        table(&t.tracker, &mut out);
    } else {
        let now = Instant::now();
        for (linkedid, chans) in t.tracker.calls() {
            let chans: Vec<_> = chans.iter().map(|c| channel_json(c, now)).collect();
            out.push_str(
                &json!({"type": "call", "linkedid": linkedid, "channels": chans}).to_string(),
            );
            out.push('\n');
        }
    }
    Ok(out)
}

/// Writes to stdout; a reader that has gone (`ami calls | head -1`) is a quiet end.
fn write_out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
            EXIT_OTHER,
            format!("cannot write to stdout: {e}"),
        )),
        _ => Ok(()),
    }
}

/// Keeps the view until the duration ends, a signal comes or stdout closes.
///
/// The view is looked at once per [`REDRAW`], not per batch of events: on a busy server
/// (a thousand calls, hundreds of events a second) a view per batch would be megabytes of
/// JSON a second that nobody can read. News lines go out as they come. The output goes
/// through [`ViewOut`], never straight to stdout: a reader that stops reading must not stop
/// the session (on `ami-mio` this thread is the one that reads the socket).
fn watch(live: &mut Live, t: &mut Tracked, args: &Args, out: &mut ViewOut) -> Result<(), Failure> {
    let end = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.clamp(0.0, 1e9)));
    let terminal = std::io::stdout().is_terminal();
    let mut news: VecDeque<String> = VecDeque::new();
    let mut happened = Vec::new();
    let mut last_sig = None;
    let mut looked = Instant::now() - REDRAW;
    crate::stop::catch();
    loop {
        let going = end.is_none_or(|e| Instant::now() < e) && !crate::stop::requested();
        if going {
            let due = looked + REDRAW;
            let until = end.map_or(due, |e| e.min(due));
            live.wait(crate::stop::wake_by(Some(until)), &mut happened)?;
            t.feed(live, &mut happened)?;
        }
        let mut lines = Vec::new();
        while let Some(u) = t.tracker.poll_update() {
            if terminal {
                if let Some(text) = update_text(&u, live) {
                    news.push_back(cell(&text).into_owned());
                    if news.len() > NEWS {
                        news.pop_front();
                    }
                }
            } else if let Some(mut line) = update_json(&u, live) {
                line.push('\n');
                lines.push(line);
            }
        }
        let mut view = None;
        // The last look, at the end, gives a pipe the view as it was when the command ended.
        if looked.elapsed() >= REDRAW || !going {
            looked = Instant::now();
            let sig = signature(&t.tracker);
            let changed = last_sig.as_ref() != Some(&sig);
            last_sig = Some(sig);
            if terminal && going {
                // Redrawn even when unchanged: the ages move.
                let mut screen = String::from("\x1b[H\x1b[2J");
                screen.push_str(&header(&t.tracker, live));
                table(&t.tracker, &mut screen);
                screen.push('\n');
                for n in &news {
                    screen.push_str(n);
                    screen.push('\n');
                }
                view = Some(screen);
            } else if changed && !terminal {
                let mut line = calls_json(&t.tracker);
                line.push('\n');
                view = Some(line);
            }
        }
        if (!lines.is_empty() || view.is_some()) && out.show(lines, view)? == Flow::Stop {
            return Ok(());
        }
        if !going {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_id_name_that_holds_escape_sequences_is_shown_escaped_in_the_table() {
        let mut out = String::new();
        row(
            &mut out,
            [
                "1700000000.1",
                "PJSIP/100-0000002a\x1b[2J",
                "Ring",
                "100 \x1b]52;c;cm0gLXJmIC8K\x07Boss\u{9b}",
                "default/200\r",
                "3s",
            ],
        );
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(
            !out.trim_end_matches('\n').chars().any(char::is_control),
            "{out:?}"
        );
        assert!(
            out.contains("100 \\x1b]52;c;cm0gLXJmIC8K\\x07Boss\\u{9b}"),
            "{out:?}"
        );
        assert!(out.contains("PJSIP/100-0000002a\\x1b[2J"), "{out:?}");
    }
}
