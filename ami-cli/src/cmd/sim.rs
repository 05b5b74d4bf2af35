//! `ami sim`: the simulated Asterisk (ami-sim) as a standalone server on loopback, so any
//! dialer, in any language, can be pointed at it. Prints its URL on stdout (one line) and
//! serves until stopped (Ctrl-C).

use crate::terminal::say;
use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_sim::tcp::TcpFront;
use ami_sim::{ActionMatch, Fault, FaultSchedule, SimConfig};
use std::io::Write;
use std::iter::Peekable;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen: a loopback address only (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// UserEvents per second sent to every logged-in session (`UserEvent: SimStorm`,
    /// numbered by `Seq` from 0 since the simulator started, so a reader can count what it missed).
    #[arg(long, default_value_t = 0)]
    events_per_s: u64,
    /// Turn on reproducible faults seeded with SEED (a random seed, printed, when none is
    /// given): about 5% of replies 200 ms late, 1% duplicated, one garbage line in 1,000,
    /// and one of restart / stall / dropped connections every 5 to 30 s (each said on
    /// stderr). The same SEED replays the same schedule.
    #[arg(long, value_name = "SEED", num_args = 0..=1)]
    faults: Option<Option<u64>>,
}

/// How often the feeder tops up events and checks for a due restart.
const TICK: Duration = Duration::from_millis(10);

pub(crate) fn run(args: &Args) -> Result<(), Failure> {
    if !args.listen.ip().is_loopback() {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "--listen {}: the simulator serves loopback only (127.0.0.1 or ::1)",
                args.listen
            ),
        ));
    }
    let seed = args.faults.map(|given| given.unwrap_or_else(random_seed));
    let mut config = SimConfig::default();
    if let Some(seed) = seed {
        config.seed = seed;
    }
    let front = TcpFront::start(config, &args.listen.to_string())
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = front.local_addr();
    if seed.is_some() {
        front.with_faults(|f| {
            f.delay_replies(
                ActionMatch::any().with_probability(0.05),
                Duration::from_millis(200),
            )
            .duplicate_replies(ActionMatch::any().with_probability(0.01))
            .garbage_lines(0.001, b"SimGarbage: not a header line");
        });
    }
    let host = if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    println!("ami://admin:amp111@{host}:{}", addr.port());
    // Scripts read the URL at once: it must not wait in a buffer.
    let _ = std::io::stdout().flush();
    say!(
        "ami: simulated Asterisk on {addr} (users admin/amp111, limited/limited1), {} events/s{}; Ctrl-C stops it",
        args.events_per_s,
        seed.map_or(String::new(), |s| format!(
            ", faults on (seed {s}; replay with --faults {s})"
        ))
    );
    serve(
        &front,
        args.events_per_s,
        seed.map(|s| FaultSchedule::new(s).peekable()),
    );
    Ok(())
}

/// A seed nobody chose: std's hasher keys are random per process.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// What a scheduled fault does, for stderr.
fn describe(fault: &Fault) -> String {
    match fault {
        Fault::Restart { down_for } => {
            format!("restart (down {})", crate::words::duration(*down_for))
        }
        Fault::HalfOpen { .. } => "stall: every session goes silent".to_string(),
        Fault::Resume { .. } => "stall over: sessions speak again".to_string(),
        Fault::ResetMidMessage { .. } => "every connection dropped mid-message".to_string(),
        other => format!("{other:?}"),
    }
}

/// Feeds events at the asked rate and applies the fault schedule as it falls due, forever.
fn serve(front: &TcpFront, events_per_s: u64, mut faults: Option<Peekable<FaultSchedule>>) {
    let started = Instant::now();
    let mut sent: u64 = 0;
    loop {
        std::thread::sleep(TICK);
        let due = (started.elapsed().as_secs_f64() * events_per_s as f64) as u64;
        if due > sent {
            let n = usize::try_from(due - sent).unwrap_or(usize::MAX);
            let first = usize::try_from(sent).unwrap_or(usize::MAX);
            front.with_server(|sim, now| sim.emit_user_events_from(now, first, n));
            sent = due;
        }
        let Some(schedule) = faults.as_mut() else {
            continue;
        };
        while let Some((at, fault)) = schedule.next_if(|(at, _)| started + *at <= Instant::now()) {
            say!(
                "ami: fault at {}: {}",
                crate::words::duration(at),
                describe(&fault)
            );
            front.with_faults(|f| {
                f.schedule(started + at, fault);
            });
        }
    }
}
