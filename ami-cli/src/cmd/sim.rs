//! `ami sim`: the simulated Asterisk (ami-sim) as a standalone server on loopback, so any
//! dialer, in any language, can be pointed at it. Prints its URL on stdout (one line) and
//! serves until stopped (Ctrl-C).

use crate::terminal::say;
use crate::{Failure, EXIT_OTHER, EXIT_USAGE};
use ami_sim::tcp::TcpFront;
use ami_sim::{ActionMatch, CallRequest, ClassMask, Fault, FaultSchedule, SimConfig, SimUser};
use std::iter::Peekable;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen: a loopback address only (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// UserEvents per second sent to every logged-in session (`UserEvent: SimStorm`,
    /// numbered by `Seq` from 0 since the simulator started, so a reader can count what it
    /// missed). A rate beyond what the machine renders is sent as fast as it can be (said on
    /// stderr); a session that reads slower is closed as a slow reader, as Asterisk would.
    #[arg(long, default_value_t = 0)]
    events_per_s: u64,
    /// Turn on reproducible faults seeded with SEED (a random seed, printed, when none is
    /// given): about 5% of replies 200 ms late, 1% duplicated, one garbage line in 1,000,
    /// and one of restart / stall / dropped connections every 5 to 30 s (each said on
    /// stderr). The same SEED replays the same schedule.
    #[arg(long, value_name = "SEED", num_args = 0..=1)]
    faults: Option<Option<u64>>,
    /// Calls started per second (fractions allowed: 0.2 is one every 5 s), as if another
    /// program placed them: each a Local channel pair (`Local/hold@ami-test`) that answers
    /// and lasts --call-secs, its caller ID numbered from 5550000, with the Newchannel,
    /// Newstate, Hangup and Cdr events Asterisk sends, for the event stream, `ami calls` and
    /// CoreShowChannels to show.
    #[arg(long, default_value_t = 0.0)]
    calls_per_s: f64,
    /// How long each call of --calls-per-s lasts, in whole seconds (only with
    /// --calls-per-s: alone it would do nothing).
    #[arg(long, default_value_t = 60, requires = "calls_per_s")]
    call_secs: u32,
    /// Where each call of --calls-per-s goes in the simulated dialplan (`ami action Command
    /// Command="dialplan show"` lists it): `hold` (answered, lasts --call-secs), `queue`
    /// (through queue testq to an agent: QueueCallerJoin, AgentCalled, AgentConnect...),
    /// `busy`, `congestion` or `noanswer` (calls that fail), `userevent`, `echo`... (only
    /// with --calls-per-s).
    #[arg(long, default_value = "hold", requires = "calls_per_s")]
    call_exten: String,
    /// Another user the simulator accepts, as NAME:SECRET (repeatable), with every
    /// permission: so a dialer can log in with the credentials it is configured with.
    /// admin/amp111 and limited/limited1 stay.
    #[arg(long = "user", value_name = "NAME:SECRET")]
    users: Vec<String>,
}

/// The --user accounts, checked: a name and a secret, neither with a CR, LF or NUL (no Login
/// could carry them), the name without a colon, not one of the built-in users.
fn extra_users(given: &[String], builtin: &[SimUser]) -> Result<Vec<SimUser>, Failure> {
    let mut users: Vec<SimUser> = Vec::new();
    for spec in given {
        let bad = |why: &str| {
            // The secret is never echoed: only the name, escaped.
            let name = spec.split(':').next().unwrap_or_default();
            Err(Failure::new(
                EXIT_USAGE,
                format!("--user {}:***: {why}", crate::terminal::cell(name)),
            ))
        };
        let Some((name, secret)) = spec.split_once(':') else {
            return Err(Failure::new(
                EXIT_USAGE,
                "--user takes NAME:SECRET (no colon given)",
            ));
        };
        if name.is_empty() || secret.is_empty() {
            return bad("the name and the secret must not be empty");
        }
        if spec.contains(['\r', '\n', '\0']) {
            return bad("CR, LF and NUL cannot be sent in a Login");
        }
        let taken = |u: &SimUser| u.name.eq_ignore_ascii_case(name);
        if builtin.iter().any(taken) || users.iter().any(taken) {
            return bad("that user is already defined");
        }
        users.push(SimUser::new(name, secret, ClassMask::ALL, ClassMask::ALL));
    }
    Ok(users)
}

/// Checks --calls-per-s against --call-secs and the calls the simulator holds at once.
fn check_calls(args: &Args, max_calls: usize) -> Result<(), Failure> {
    let usage = |why: String| Err(Failure::new(EXIT_USAGE, why));
    if !args.calls_per_s.is_finite() || args.calls_per_s < 0.0 {
        return usage(format!(
            "--calls-per-s {}: a rate of zero or more",
            args.calls_per_s
        ));
    }
    if args.calls_per_s == 0.0 {
        return Ok(());
    }
    if args.call_secs == 0 {
        return usage("--call-secs 0: a call lasts at least a second".to_string());
    }
    let extens = ami_sim::dialplan_extensions();
    if args.call_exten == "T" || !extens.contains(&args.call_exten.as_str()) {
        let named: Vec<&str> = extens.iter().copied().filter(|e| *e != "T").collect();
        return usage(format!(
            "--call-exten {}: not in the simulated dialplan (one of {})",
            crate::terminal::cell(&args.call_exten),
            named.join(", ")
        ));
    }
    // Steady state: calls started per second times how long each lasts.
    let up = args.calls_per_s * f64::from(args.call_secs);
    if up > max_calls as f64 {
        return usage(format!(
            "--calls-per-s {} with --call-secs {} keeps about {} calls up; the simulator \
             holds at most {max_calls} (lower one of them)",
            args.calls_per_s,
            args.call_secs,
            up.round()
        ));
    }
    Ok(())
}

/// The calls --calls-per-s places, and those the simulator refused (at its call limit).
struct CallFeed {
    per_s: f64,
    secs: u32,
    /// `Local/<exten>@ami-test`.
    channel: String,
    max_calls: usize,
    owed: f64,
    placed: u64,
    /// Refused since they were last said.
    refused: u64,
    refused_said_at: Option<Instant>,
}

/// How often refused calls are said at most.
const REFUSED_EVERY: Duration = Duration::from_secs(10);

impl CallFeed {
    /// Starts the calls due after `elapsed` more of the run.
    fn top_up(&mut self, front: &TcpFront, elapsed: Duration) {
        if self.per_s == 0.0 {
            return;
        }
        // Never more than a second's worth due: a stalled feeder starts a burst, not a
        // flood of every call it missed.
        self.owed = (self.owed + elapsed.as_secs_f64() * self.per_s).min(self.per_s.max(1.0));
        while self.owed >= 1.0 {
            self.owed -= 1.0;
            let n = self.placed;
            let mut req = CallRequest::new(&self.channel, self.secs);
            req.caller_id = Some(format!("\"Caller {n}\" <{}>", 5_550_000 + n));
            req.report = false;
            // A restarting Asterisk places no calls: those due meanwhile are not owed.
            let placed = front.with_server(|sim, now| {
                (!sim.is_down(now)).then(|| sim.originate_call(now, req).is_some())
            });
            match placed {
                Some(true) => self.placed += 1,
                // The check at start keeps the steady state under the limit; a burst after
                // a stall can still reach it.
                Some(false) => self.refused += 1,
                None => {}
            }
        }
        let due = self
            .refused_said_at
            .is_none_or(|at| at.elapsed() >= REFUSED_EVERY);
        if self.refused > 0 && due {
            say!(
                "ami: {} call(s) not placed: the simulator holds at most {} at once",
                self.refused,
                self.max_calls
            );
            self.refused = 0;
            self.refused_said_at = Some(Instant::now());
        }
    }
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
    let max_calls = config.max_calls;
    check_calls(args, max_calls)?;
    let extra = extra_users(&args.users, &config.users)?;
    let extra_names: Vec<String> = extra
        .iter()
        .map(|u| crate::terminal::cell(&u.name).into_owned())
        .collect();
    config.users.extend(extra);
    if let Some(seed) = seed {
        config.seed = seed;
    }
    // Clients on this host compare its timestamps (Ping's, EventTV, Cdr times) with their
    // own clock: the simulated one starts at the real time, not at the tests' fixed date.
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        config.start_unix = now;
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
    // Scripts read the URL at once: it must not wait in a buffer (`print_line` flushes). A
    // reader that has gone (`ami sim | head -0`) is no reason to stop serving: clients may
    // have the URL from elsewhere.
    crate::printer::print_line(format_args!("ami://admin:amp111@{host}:{}", addr.port()))?;
    let calls = if args.calls_per_s > 0.0 {
        format!(
            ", {} calls/s of {} s to {}",
            args.calls_per_s, args.call_secs, args.call_exten
        )
    } else {
        String::new()
    };
    say!(
        "ami: simulated Asterisk on {addr} (users admin/amp111, limited/limited1{}), {} events/s{calls}{}; Ctrl-C stops it",
        extra_names.iter().map(|n| format!(", {n}")).collect::<String>(),
        args.events_per_s,
        seed.map_or(String::new(), |s| format!(
            ", faults on (seed {s}; replay with --faults {s})"
        ))
    );
    let calls = CallFeed {
        per_s: args.calls_per_s,
        secs: args.call_secs,
        channel: format!("Local/{}@ami-test", args.call_exten),
        max_calls,
        owed: 0.0,
        placed: 0,
        refused: 0,
        refused_said_at: None,
    };
    serve(
        &front,
        args.events_per_s,
        calls,
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

/// Events emitted under one hold of the simulator's lock: a login or an action arriving
/// meanwhile waits about a millisecond at most.
const CHUNK_EVENTS: usize = 10_000;
/// Time each tick may spend emitting; the rest is the sessions' (their threads take the
/// same lock to read, write and answer).
const EMIT_BUDGET: Duration = Duration::from_millis(5);

/// Feeds events and calls at the asked rates and applies the fault schedule as it falls
/// due, forever.
///
/// A rate beyond what this machine renders is sent as fast as it can be, said once on
/// stderr: emitting everything due at once held the simulator's lock for ever (at 10^12
/// events/s no client could even log in).
fn serve(
    front: &TcpFront,
    events_per_s: u64,
    mut calls: CallFeed,
    mut faults: Option<Peekable<FaultSchedule>>,
) {
    let started = Instant::now();
    let rate = events_per_s as f64;
    let (mut next_seq, mut owed, mut last) = (0usize, 0f64, started);
    let mut short = false;
    loop {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let elapsed = now.duration_since(last);
        owed += elapsed.as_secs_f64() * rate;
        last = now;
        calls.top_up(front, elapsed);
        while owed >= 1.0 && now.elapsed() < EMIT_BUDGET {
            let n = front.with_server(|sim, now| {
                // Whole events only (`owed` is at least 1 here). With no session to reach
                // nothing is rendered: the whole debt at once costs nothing.
                let n = match sim.storm_readers() {
                    0 => owed as usize,
                    _ => (owed as usize).min(CHUNK_EVENTS),
                };
                sim.emit_user_events_from(now, next_seq, n);
                n
            });
            next_seq = next_seq.saturating_add(n);
            owed -= n as f64;
        }
        if owed >= CHUNK_EVENTS as f64 && !short {
            // The tick's budget ran out with more than a chunk still due: the rate is out
            // of reach while sessions read. Said once.
            say!(
                "ami: this machine cannot render {events_per_s} events/s for the sessions \
                 reading; the simulator sends as many as it can"
            );
            short = true;
        }
        // Never more than a second's worth due: catching up after a stall is a burst, not
        // a flood that lasts as long as the stall did. `Seq` stays contiguous, so readers
        // still count only real losses.
        owed = owed.min(rate);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--call-secs` or `--call-exten` without `--calls-per-s` would be accepted and do
    /// nothing: refused as a usage error instead, naming the flag it needs.
    #[test]
    fn call_shape_flags_without_a_call_rate_are_refused() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            args: Args,
        }
        for alone in [
            &["sim", "--call-secs", "5"][..],
            &["sim", "--call-exten", "queue"],
        ] {
            let e = Line::try_parse_from(alone).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("--calls-per-s")),
                "{alone:?}: {e:?}"
            );
        }
        let with = Line::try_parse_from(["sim", "--calls-per-s", "1", "--call-secs", "5"]);
        assert!(with.is_ok());
        assert!(Line::try_parse_from(["sim"]).is_ok(), "the defaults alone");
    }

    fn feed(per_s: f64, max_calls: usize) -> CallFeed {
        CallFeed {
            per_s,
            secs: 60,
            channel: "Local/hold@ami-test".to_string(),
            max_calls,
            owed: 0.0,
            placed: 0,
            refused: 0,
            refused_said_at: None,
        }
    }

    #[test]
    fn calls_due_are_placed_up_to_the_limit_and_the_rest_counted_and_said() {
        let config = SimConfig {
            max_calls: 3,
            ..SimConfig::default()
        };
        let front = TcpFront::start(config, "127.0.0.1:0").unwrap();
        let mut calls = feed(5.0, 3);
        // Half a second: two and a half calls due, two placed.
        calls.top_up(&front, Duration::from_millis(500));
        assert_eq!((calls.placed, calls.refused), (2, 0));
        // A long stall: a second's worth at most (five), one fits.
        calls.top_up(&front, Duration::from_secs(30));
        assert_eq!(calls.placed, 3);
        // The four refused were said (and the count restarted).
        assert_eq!(calls.refused, 0);
        assert!(calls.refused_said_at.is_some());
        let up = front.with_server(|sim, _| sim.stats().calls_started);
        assert_eq!(up, 3);
    }

    #[test]
    fn extra_users_are_checked_and_their_secrets_never_echoed() {
        let builtin = SimConfig::default().users;
        let ok = extra_users(&["dialer:S3:CRET".to_string()], &builtin).unwrap();
        assert_eq!(
            (ok[0].name.as_str(), ok[0].secret.as_str()),
            ("dialer", "S3:CRET")
        );
        let refused = [
            vec!["nocolon"],
            vec![":S3CRET"],
            vec!["name:"],
            vec!["ADMIN:S3CRET"],
            vec!["a:S3CRET\r\nAction: Logoff"],
            vec!["x:S3CRET", "X:S3CRET2"],
        ];
        for specs in refused {
            let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
            let err = extra_users(&specs, &builtin).unwrap_err();
            assert_eq!(err.code, EXIT_USAGE, "{specs:?}");
            assert!(!err.reason.contains("S3CRET"), "{}", err.reason);
        }
    }

    #[test]
    fn a_rate_whose_calls_outgrow_the_simulator_is_refused_at_start() {
        let args = |calls_per_s: f64, call_secs: u32, exten: &str| Args {
            listen: "127.0.0.1:0".parse().unwrap(),
            events_per_s: 0,
            faults: None,
            calls_per_s,
            call_secs,
            call_exten: exten.to_string(),
            users: Vec::new(),
        };
        assert!(check_calls(&args(0.0, 0, "nowhere"), 2000).is_ok());
        assert!(check_calls(&args(20.0, 100, "hold"), 2000).is_ok());
        assert!(check_calls(&args(1.0, 10, "queue"), 2000).is_ok());
        for (rate, secs, exten) in [
            (21.0, 100, "hold"),
            (-1.0, 60, "hold"),
            (f64::NAN, 60, "hold"),
            (1.0, 0, "hold"),
            (1.0, 10, "T"),
            (1.0, 10, "no-such-exten"),
        ] {
            let refused = check_calls(&args(rate, secs, exten), 2000);
            assert_eq!(
                refused.map_err(|f| f.code),
                Err(EXIT_USAGE),
                "{rate} {secs} {exten}"
            );
        }
    }
}
