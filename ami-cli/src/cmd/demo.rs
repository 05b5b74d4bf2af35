//! `ami demo`: an in-process simulated Asterisk on 127.0.0.1, calls placed through it, and
//! what the client sees.

use super::bench::start_sim;
use crate::printer::print_line;
use crate::session::{self, Change, Happening, Ticket};
use crate::status_line::StatusLine;
use crate::terminal::say;
use crate::{words, Connection, Failure, EXIT_OTHER};
use ami_proto::{Action, StreamItem};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0, value_parser = crate::seconds::parse)]
    duration: f64,
}

/// One call every this often.
const CALL_EVERY: Duration = Duration::from_millis(500);
/// Events printed in full; later ones only count.
const SHOWN_EVENTS: usize = 40;
/// Extensions of the simulator's `ami-test` context, in turn.
const EXTENSIONS: [&str; 4] = ["echo", "userevent", "busy", "wait10"];

/// What an action in flight was for.
enum Sent {
    Call(&'static str),
    Channels,
}

fn originate(ext: &str) -> Action {
    Action::new("Originate")
        .field("Channel", format!("Local/{ext}@ami-test"))
        .field("Application", "Wait")
        .field("Data", "1")
        .field("Async", "true")
        .field("Timeout", "5000")
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    let sim = start_sim()?;
    let addr = sim.local_addr();
    if !print_line(format_args!("simulated Asterisk listening on {addr}"))? {
        return Ok(());
    }
    let mut live = session::open_local(conn.runtime, addr, "on")?;
    // stdout's reader gone: the session ends as at the end of the demo, quietly.
    macro_rules! out {
        ($($arg:tt)*) => {
            if !print_line(format_args!($($arg)*))? {
                live.logoff();
                return Ok(());
            }
        };
    }
    out!("logged in as admin");
    // The demo's actions wait the client's default; no flag changes it.
    let attempt = |action| words::Attempt {
        action,
        waited: Some(words::DEFAULT_WAIT),
        flag: None,
    };
    let pong = live.call(Action::new("Ping"))?.map_err(|e| {
        Failure::new(
            EXIT_OTHER,
            words::call_error(&e, &live.url, &attempt("Ping")),
        )
    })?;
    out!("Ping -> {}", pong.message().get_str("Ping").unwrap_or("?"));

    let status = StatusLine::new();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration.clamp(0.5, 1e6));
    let mut next_call = started;
    let mut sent: HashMap<Ticket, Sent> = HashMap::new();
    let (mut calls, mut shown) = (0usize, 0usize);
    let mut happened = Vec::new();
    while Instant::now() < end {
        if Instant::now() >= next_call {
            let ext = EXTENSIONS[calls % EXTENSIONS.len()];
            sent.insert(live.session.send(originate(ext)), Sent::Call(ext));
            calls += 1;
            if calls % 4 == 0 {
                let t = live.session.send(Action::new("CoreShowChannels"));
                sent.insert(t, Sent::Channels);
            }
            next_call += CALL_EVERY;
        }
        live.wait(Some(next_call.min(end)), &mut happened)?;
        for h in happened.drain(..) {
            match h {
                Happening::Completed { ticket, result } => match (sent.remove(&ticket), result) {
                    (Some(Sent::Call(ext)), Ok(r)) => out!(
                        "call to {ext}: answered (Reason {})",
                        r.follow_up()
                            .and_then(|f| f.get_str("Reason"))
                            .unwrap_or("?")
                    ),
                    (Some(Sent::Call(ext)), Err(e)) => {
                        out!(
                            "call to {ext}: {}",
                            words::call_error(&e, &live.url, &attempt("Originate"))
                        )
                    }
                    (Some(Sent::Channels), Ok(r)) => {
                        out!("CoreShowChannels: {} live channels", r.items().len())
                    }
                    _ => {}
                },
                Happening::Item(StreamItem::Event(e)) => {
                    shown += 1;
                    if shown <= SHOWN_EVENTS {
                        out!(
                            "event {:<18} {}",
                            e.event().unwrap_or("?"),
                            e.get_str("Channel").unwrap_or("")
                        );
                    }
                }
                Happening::Item(StreamItem::Gap { dropped }) => {
                    say!("gap: {dropped} events dropped")
                }
                Happening::Change(Change::Lost {
                    reason,
                    retry_at,
                    breaker_open,
                }) => {
                    say!(
                        "{}",
                        words::lost(&reason, retry_at, breaker_open, &live.url)
                    )
                }
                _ => {}
            }
        }
        let s = live.session.stats();
        status.update(&format!(
            "{:.1} s  events {}  actions {}  dropped {}",
            started.elapsed().as_secs_f64(),
            s.events_in,
            s.actions_written,
            s.events_dropped
        ));
    }
    status.finish();
    live.logoff();
    let s = live.session.stats();
    let quantile = |q| {
        s.latency
            .quantile(q)
            .map_or_else(|| "n/a".to_string(), words::duration)
    };
    print_line(format_args!(
        "done: {calls} calls, {} events received ({} shown), {} actions, {} dropped, \
         action latency p50 {} p99 {}",
        s.events_in,
        shown.min(SHOWN_EVENTS),
        s.actions_written,
        s.events_dropped,
        quantile(0.5),
        quantile(0.99),
    ))?;
    Ok(())
}
