//! `ami sim`: the simulated Asterisk (ami-sim) as a standalone server on loopback, so any
//! dialer, in any language, can be pointed at it. Prints its URL on stdout (one line) and
//! serves until stopped (Ctrl-C).

use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_sim::tcp::TcpFront;
use ami_sim::{ActionMatch, SimConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen: a loopback address only (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// UserEvents per second sent to every logged-in session (`UserEvent: SimStorm`,
    /// numbered by `Seq`).
    #[arg(long, default_value_t = 0)]
    events_per_s: u64,
    /// Turn on reproducible faults seeded with SEED: about 5% of replies 200 ms late, 1%
    /// duplicated, one garbage line in 1,000, and a restart (down 1 s) every 20 to 40 s.
    #[arg(long, value_name = "SEED")]
    faults: Option<u64>,
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
    let mut config = SimConfig::default();
    if let Some(seed) = args.faults {
        config.seed = seed;
    }
    let front = TcpFront::start(config, &args.listen.to_string())
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = front.local_addr();
    let mut restart_every = None;
    if let Some(seed) = args.faults {
        front.with_faults(|f| {
            f.delay_replies(
                ActionMatch::any().with_probability(0.05),
                Duration::from_millis(200),
            )
            .duplicate_replies(ActionMatch::any().with_probability(0.01))
            .garbage_lines(0.001, b"SimGarbage: not a header line");
        });
        restart_every = Some(Duration::from_secs(20 + seed % 21));
    }
    let host = if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    println!("ami://admin:amp111@{host}:{}", addr.port());
    // Scripts read the URL at once: it must not wait in a buffer.
    let _ = std::io::stdout().flush();
    eprintln!(
        "ami: simulated Asterisk on {addr} (users admin/amp111, limited/limited1), {} events/s{}; Ctrl-C stops it",
        args.events_per_s,
        restart_every.map_or(String::new(), |d| format!(
            ", faults on (restart every {})",
            crate::words::duration(d)
        ))
    );
    serve(&front, args.events_per_s, restart_every);
    Ok(())
}

/// Feeds events at the asked rate and restarts on schedule, forever.
fn serve(front: &TcpFront, events_per_s: u64, restart_every: Option<Duration>) {
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut next_restart = restart_every.map(|d| started + d);
    loop {
        std::thread::sleep(TICK);
        let due = (started.elapsed().as_secs_f64() * events_per_s as f64) as u64;
        if due > sent {
            let n = usize::try_from(due - sent).unwrap_or(usize::MAX);
            front.with_server(|sim, now| sim.emit_user_events(now, n));
            sent = due;
        }
        if let (Some(at), Some(every)) = (next_restart, restart_every) {
            if Instant::now() >= at {
                eprintln!("ami: simulated restart (down 1 s)");
                front.restart(Duration::from_secs(1));
                next_restart = Some(at + every);
            }
        }
    }
}
