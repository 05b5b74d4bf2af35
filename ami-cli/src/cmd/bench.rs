//! `ami bench`: events/s (and actions/s against a real server) on the chosen runtime.
//!
//! Against the embedded simulator it gives two figures on events of a realistic size: the
//! CLI's own batched reads, then the README's loop (one `recv()` per item), which is what
//! most programs will write.

use crate::printer::print_line;
use crate::session::{self, Happening, Live};
use crate::status_line::StatusLine;
use crate::terminal::say;
use crate::{words, Connection, Failure, Runtime, EXIT_OTHER};
use ami_proto::fleet::ServerName;
use ami_proto::{Action, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0, value_parser = crate::seconds::parse)]
    duration: f64,
    /// Run N simulated servers in-process, each flooding events as fast as it is read, and
    /// report the merged stream's events/s through the fleet (on the chosen runtime; not
    /// with --server).
    #[arg(long, value_name = "N")]
    servers: Option<usize>,
    /// Size of each simulated event in bytes [default: 500], without `--server` (the
    /// captures of a busy Asterisk average about 500; the least this gives is about 380, a
    /// channel event's fields; the most is 1 MiB, the client's longest line by default).
    /// `--servers 1` and `--servers 10` use it too, so they compare like for like.
    #[arg(long, value_name = "BYTES")]
    event_bytes: Option<usize>,
}

/// `--event-bytes` when not given: about the average event of a busy Asterisk's captures.
const DEFAULT_EVENT_BYTES: usize = 500;

/// The options that size or multiply bench's own simulators, refused with a `--server`:
/// against a server the events are its UserEvents, and the server is the one given.
fn simulator_options_with_a_server(conn: &Connection, args: &Args) -> Result<(), Failure> {
    if conn.server.is_empty() {
        return Ok(());
    }
    let refused = |reason: &str| Err(Failure::new(crate::EXIT_USAGE, reason));
    if args.servers.is_some() {
        return refused(
            "--servers runs that many simulated servers in-process: it cannot be combined \
             with --server",
        );
    }
    if args.event_bytes.is_some() {
        return refused(
            "--event-bytes sizes the simulator's events: against a --server the events are \
             the server's own UserEvents",
        );
    }
    Ok(())
}

/// Said once on stderr before bench floods a real server.
fn flood_warning(url: &crate::url::ServerUrl) -> String {
    format!(
        "ami: warning: bench floods {url} with UserEvent actions (as fast as it answers), and \
         Asterisk broadcasts each UserEvent to every AMI client logged in there that reads the \
         user class"
    )
}

/// The most simulated servers `--servers` starts (each is a listener and a feeder thread).
const MAX_SIM_SERVERS: usize = 1000;

/// The largest simulated event: the client's default line limit, since an event's padding
/// is one line.
const MAX_EVENT_BYTES: usize = ami_proto::DEFAULT_MAX_LINE_LEN;

/// UserEvent actions kept in flight against a real server.
const IN_FLIGHT: usize = 64;
/// How often `wait` returns to refill the storm and the status line.
const TURN: Duration = Duration::from_millis(100);

pub(crate) fn start_sim() -> Result<TcpFront, Failure> {
    TcpFront::start(SimConfig::default(), "127.0.0.1:0")
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the simulator: {e}")))
}

/// What one run counted.
#[derive(Default)]
struct Tally {
    events: u64,
    gaps: u64,
    actions: u64,
}

impl Tally {
    fn rate(n: u64, secs: f64) -> f64 {
        n as f64 / secs.max(1e-9)
    }
}

fn runtime_name(r: Runtime) -> &'static str {
    match r {
        Runtime::Tokio => "tokio",
        Runtime::Mio => "mio",
        Runtime::AsyncStd => "async-std",
    }
}

/// What the README loop calls once per item on `r`.
fn one_by_one_call(r: Runtime) -> &'static str {
    match r {
        Runtime::Mio => "poll_event()",
        Runtime::Tokio | Runtime::AsyncStd => "recv()",
    }
}

fn user_event(n: u64) -> Action {
    Action::new("UserEvent")
        .field("UserEvent", "AmiBench")
        .field("N", n.to_string())
}

/// Runs for `duration`: `refill` before each turn, counts what happens; against a real
/// server each finished UserEvent is replaced by the next.
fn drive(
    live: &mut Live,
    duration: Duration,
    mut refill: impl FnMut(&Tally),
) -> Result<(Tally, f64), Failure> {
    let status = StatusLine::new();
    let started = Instant::now();
    let end = started + duration;
    let mut tally = Tally::default();
    let mut happened = Vec::new();
    while Instant::now() < end {
        refill(&tally);
        live.wait(Some((Instant::now() + TURN).min(end)), &mut happened)?;
        for h in happened.drain(..) {
            match h {
                Happening::Item(StreamItem::Event(_)) => tally.events += 1,
                Happening::Item(StreamItem::Gap { dropped }) => tally.gaps += dropped,
                Happening::Completed { result, .. } => {
                    result.map_err(|e| {
                        // Every action `bench` waits for is a UserEvent, at the client's
                        // default deadline: no flag changes it.
                        let attempt = words::Attempt {
                            action: "UserEvent",
                            waited: Some(words::DEFAULT_WAIT),
                            flag: None,
                        };
                        Failure::new(EXIT_OTHER, words::call_error(&e, &live.url, &attempt))
                    })?;
                    tally.actions += 1;
                    if Instant::now() < end {
                        live.session.send(user_event(tally.actions));
                    }
                }
                _ => {}
            }
        }
        let secs = started.elapsed().as_secs_f64();
        status.update(&format!(
            "{secs:.1} s  {:.0} events/s  {:.0} actions/s  dropped {}",
            Tally::rate(tally.events, secs),
            Tally::rate(tally.actions, secs),
            tally.gaps
        ));
    }
    status.finish();
    Ok((tally, started.elapsed().as_secs_f64()))
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    let duration = Duration::from_secs_f64(args.duration.clamp(0.5, 1e6));
    let name = runtime_name(conn.runtime);
    simulator_options_with_a_server(conn, args)?;
    let event_bytes = args.event_bytes.unwrap_or(DEFAULT_EVENT_BYTES);
    if event_bytes > MAX_EVENT_BYTES {
        // A simulated event is one long padding line: past the client's line limit every
        // event would be a decode error, and the figure would measure nothing.
        return Err(Failure::new(
            crate::EXIT_USAGE,
            format!("--event-bytes takes at most {MAX_EVENT_BYTES} (the client's longest line)"),
        ));
    }
    if let Some(n) = args.servers {
        return fleet(conn, n, duration, event_bytes);
    }
    if conn.server.is_empty() {
        // An in-process simulator that writes events as fast as the client reads them.
        let flood = ami_sim::flood::Flood::start_sized(event_bytes)
            .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the simulator: {e}")))?;
        let mut live = session::open_local(conn.runtime, flood.addr(), "user")?;
        let (t, secs) = drive(&mut live, duration, |_| {})?;
        let stats = live.session.stats();
        let size = stats.bytes_in / stats.events_in.max(1);
        let open = print_line(format_args!(
            "events ({name}): {} in {secs:.2} s = {:.0}/s with a trivial consumer, batched (the \
             CLI's own reads, a batch per wait; dropped {}, {} bytes in, {} decode errors; \
             events of about {size} bytes){}",
            t.events,
            Tally::rate(t.events, secs),
            t.gaps,
            stats.bytes_in,
            stats.decoder.lines_too_long
                + stats.decoder.messages_too_large
                + stats.decoder.too_many_fields,
            lost(stats.logins)
        ))?;
        if !open {
            // stdout's reader has gone: nobody would see the second figure.
            live.session.close();
            return Ok(());
        }
        // The README loop on the same session, for as long.
        let started = Instant::now();
        let one = live.session.read_one_by_one(started + duration)?;
        let secs = started.elapsed().as_secs_f64();
        live.session.close();
        print_line(format_args!(
            "events ({name}, README loop, {} per item): {} in {secs:.2} s = {:.0}/s (dropped {})",
            one_by_one_call(conn.runtime),
            one.events,
            Tally::rate(one.events, secs),
            one.dropped
        ))?;
        return Ok(());
    }
    // Against a real server pipelined UserEvent actions make the events (each one round
    // trip), so that figure is also actions/s. Every other client of that server that
    // reads the `user` class receives them too: said before the first is sent.
    say!("{}", flood_warning(session::one_server(conn)?));
    let mut live = session::open(conn, "user")?;
    for n in 0..IN_FLIGHT {
        live.session.send(user_event(n as u64));
    }
    let (t, secs) = drive(&mut live, duration, |_| {})?;
    live.session.close();
    print_line(format_args!(
        "events ({name}): {} in {secs:.2} s = {:.0}/s (dropped {}); actions: {} = {:.0}/s",
        t.events,
        Tally::rate(t.events, secs),
        t.gaps,
        t.actions,
        Tally::rate(t.actions, secs)
    ))?;
    Ok(())
}

/// Said after a figure whose session was lost and logged in again during the run: the
/// rate then includes time spent reconnecting, so it is not the stream's.
fn lost(logins: u64) -> String {
    match logins.saturating_sub(1) {
        0 => String::new(),
        n => format!("; the session was lost and logged in again {n} times (--log info says why)"),
    }
}

/// `--servers N`: N flooding simulators (events of `event_bytes`, like the single-session
/// figure) merged by the fleet; events/s in total and the least and most any one server got
/// (a fair merge keeps them close).
fn fleet(
    conn: &Connection,
    n: usize,
    duration: Duration,
    event_bytes: usize,
) -> Result<(), Failure> {
    if n == 0 || n > MAX_SIM_SERVERS {
        return Err(Failure::new(
            crate::EXIT_USAGE,
            format!("--servers takes 1 to {MAX_SIM_SERVERS}"),
        ));
    }
    let floods = (0..n)
        .map(|_| ami_sim::flood::Flood::start_sized(event_bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the simulators: {e}")))?;
    let server = floods
        .iter()
        .map(|f| format!("ami://admin:amp111@{}", f.addr()).parse())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::new(EXIT_OTHER, format!("{e}")))?;
    let sims = Connection {
        server,
        auth: crate::Auth::Plain,
        runtime: conn.runtime,
        ca: None,
    };
    let mut fleet = crate::fleet::Fleet::open(&sims, "user")?;
    let mut shares = Shares::default();
    let (mut events, mut gaps) = (0u64, 0u64);
    let mut happened = Vec::new();
    let status = StatusLine::new();
    let started = Instant::now();
    let end = started + duration;
    while Instant::now() < end {
        fleet.wait(Some((Instant::now() + TURN).min(end)), &mut happened)?;
        for h in happened.drain(..) {
            if let crate::fleet::Happening::Item(item) = h {
                match item.item {
                    StreamItem::Event(_) => {
                        events += 1;
                        shares.count(&item.server);
                    }
                    StreamItem::Gap { dropped } => gaps += dropped,
                    _ => {}
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        status.update(&format!(
            "{secs:.1} s  {:.0} events/s from {n} servers  dropped {gaps}",
            Tally::rate(events, secs)
        ));
    }
    status.finish();
    let secs = started.elapsed().as_secs_f64();
    let (least, most) = shares.least_most(n);
    fleet.close();
    // What the simulators queued, over the events they queued: the size actually sent.
    let (bytes, written) = floods.iter().fold((0, 0), |(b, e), f| {
        let st = f.stats();
        (b + st.bytes_queued, e + st.events_delivered)
    });
    print_line(format_args!(
        "events ({} fleet, {n} simulated servers): {events} in {secs:.2} s = {:.0}/s merged \
         (dropped {gaps}; events of about {} bytes); per server {least} to {most}",
        runtime_name(conn.runtime),
        Tally::rate(events, secs),
        bytes / written.max(1)
    ))?;
    Ok(())
}

/// Events per server, counted in the loop without hashing: the merged stream hands out one
/// item per server in rotation, so at ten servers nearly every event has a new server, and a
/// `HashMap` keyed by name cost ~5 % of the client thread (perf, mio). The rotation visits
/// servers in the same order each round, so the server is looked for first where it says.
/// (Names are compared by text: a short name is kept inline, so two items of one server do
/// not share its text, and comparing pointers found none and scanned every server.)
#[derive(Default)]
struct Shares {
    totals: Vec<(ServerName, u64)>,
    last: usize,
}

impl Shares {
    fn count(&mut self, server: &ServerName) {
        // The next server is almost always the one after the last (or the last again, in a
        // run of its items).
        let n = self.totals.len();
        let guess = [self.last, (self.last + 1) % n.max(1)];
        let found = (guess
            .into_iter()
            .find(|&i| self.totals.get(i).is_some_and(|(s, _)| s == server)))
        .or_else(|| self.totals.iter().position(|(s, _)| s == server));
        self.last = found.unwrap_or_else(|| {
            self.totals.push((server.clone(), 0));
            n
        });
        if let Some((_, k)) = self.totals.get_mut(self.last) {
            *k += 1;
        }
    }

    /// The least and the most events any of `n` servers delivered (a server that delivered
    /// nothing has a share of 0).
    fn least_most(&self, n: usize) -> (u64, u64) {
        let counts = self.totals.iter().map(|(_, k)| *k);
        let most = counts.clone().max().unwrap_or(0);
        let least = if self.totals.len() < n {
            0
        } else {
            counts.min().unwrap_or(0)
        };
        (least, most)
    }
}

#[cfg(test)]
mod shares_tests {
    use super::*;

    #[test]
    fn shares_count_each_server_whatever_order_the_items_come_in() {
        let names: Vec<ServerName> = (0..5)
            .map(|i| ServerName::new(&format!("s{i}")).unwrap())
            .collect();
        let mut shares = Shares::default();
        // Rotation, runs, a jump backwards, and a name equal to s2 but not shared with it:
        // server i gets 3 + 3i in the rounds.
        for round in 0..3 {
            for (i, name) in names.iter().enumerate() {
                for _ in 0..=(i * round) {
                    shares.count(name);
                }
            }
        }
        shares.count(&names[0]);
        shares.count(&names[3]);
        shares.count(&ServerName::new("s2").unwrap());
        let got: Vec<(String, u64)> = shares
            .totals
            .iter()
            .map(|(s, k)| (s.to_string(), *k))
            .collect();
        let want: Vec<(String, u64)> = [4, 6, 10, 13, 15]
            .iter()
            .enumerate()
            .map(|(i, &k)| (format!("s{i}"), k))
            .collect();
        assert_eq!(got, want);
        assert_eq!(shares.least_most(5), (4, 15));
        assert_eq!(shares.least_most(6), (0, 15));
    }
}

#[cfg(test)]
mod tests {
    use super::lost;

    #[test]
    fn a_figure_from_a_run_that_reconnected_says_so() {
        assert_eq!(lost(0), "");
        assert_eq!(lost(1), "");
        assert!(lost(3).contains("logged in again 2 times"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod warning_tests {
    use super::*;

    #[test]
    fn the_flood_warning_names_the_server_and_never_its_secret() {
        let url: crate::url::ServerUrl = "ami://admin:S3cr3t@pbx:5038".parse().unwrap();
        let said = flood_warning(&url);
        assert!(said.contains("ami://admin@pbx:5038"), "{said}");
        assert!(said.contains("every AMI client"), "{said}");
        assert!(!said.contains("S3cr3t"), "{said}");
        assert_eq!(said.lines().count(), 1);
    }
}
