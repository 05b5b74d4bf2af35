//! `--runtime mio`: the same commands on ami-mio's non-blocking step and blocking wait.

use crate::json;
use crate::{Cli, Command, Failure, EXIT_CONNECT, EXIT_OTHER, EXIT_USAGE};
use ami_mio::{ConnId, MioDriver, Notice};
use ami_proto::{Action, ActionId, ClientConfig, Outcome, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long a command waits for its first login.
const FIRST_LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

struct Session {
    driver: MioDriver,
    conn: ConnId,
    completed: Vec<(ActionId, Outcome)>,
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure::new(EXIT_OTHER, format!("mio: {e}"))
}

impl Session {
    fn open(config: ClientConfig, host_port: String, what: &str) -> Result<Session, Failure> {
        let mut driver = MioDriver::new().map_err(io_failure)?;
        let conn = driver.add_host(config, host_port).map_err(io_failure)?;
        let mut s = Session {
            driver,
            conn,
            completed: Vec::new(),
        };
        let deadline = Instant::now() + FIRST_LOGIN_TIMEOUT;
        while Instant::now() < deadline {
            for notice in s.turn(Duration::from_millis(100))? {
                match notice {
                    Notice::Ready { .. } => return Ok(s),
                    Notice::Disconnected { reason, .. } | Notice::Closed { reason } => {
                        s.driver.close(s.conn);
                        return Err(Failure::new(EXIT_CONNECT, format!("{what}: {reason}")));
                    }
                    _ => {}
                }
            }
        }
        Err(Failure::new(
            EXIT_CONNECT,
            format!("{what}: no login within {FIRST_LOGIN_TIMEOUT:?}"),
        ))
    }

    /// One blocking wait plus one non-blocking step; completions are kept aside.
    fn turn(&mut self, timeout: Duration) -> Result<Vec<Notice>, Failure> {
        self.driver.wait(Some(timeout)).map_err(io_failure)?;
        let report = self.driver.step(Instant::now()).map_err(io_failure)?;
        let mut out = Vec::new();
        for (_, notice) in report.notices {
            match notice {
                Notice::Completed { id, outcome } => self.completed.push((id, outcome)),
                other => out.push(other),
            }
        }
        Ok(out)
    }

    fn call(&mut self, action: Action) -> Result<Outcome, Failure> {
        let id = self
            .driver
            .send(self.conn, action)
            .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?;
        loop {
            if let Some(i) = self.completed.iter().position(|(c, _)| *c == id) {
                return Ok(self.completed.swap_remove(i).1);
            }
            for notice in self.turn(Duration::from_millis(100))? {
                if let Notice::Closed { reason } = notice {
                    return Err(Failure::new(EXIT_CONNECT, format!("closed: {reason}")));
                }
            }
        }
    }

    fn logoff(&mut self) {
        self.driver.logoff(self.conn);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.turn(Duration::from_millis(50)) {
                Ok(notices) if notices.iter().any(|n| matches!(n, Notice::Closed { .. })) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

fn print_outcome(outcome: Outcome, originate: bool) -> Result<(), Failure> {
    let r = outcome
        .into_result()
        .map_err(crate::commands::action_failure)?;
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock<'_>, m: &ami_proto::Message| {
        writeln!(out, "{}", json::message(m))
            .map_err(|e| Failure::new(EXIT_OTHER, format!("stdout: {e}")))
    };
    if originate {
        return write(&mut out, r.follow_up().unwrap_or(r.message()));
    }
    write(&mut out, r.message())?;
    for m in r.items().iter().chain(r.complete()).chain(r.follow_up()) {
        write(&mut out, m)?;
    }
    Ok(())
}

/// Runs a command on the mio adapter.
pub(crate) fn run(cli: &Cli) -> Result<(), Failure> {
    let open = |events: &str| -> Result<Session, Failure> {
        let url = cli.server.as_ref().ok_or_else(|| {
            Failure::new(
                EXIT_USAGE,
                "no server: pass --server ami://USER:SECRET@HOST:PORT or set AMI_URL",
            )
        })?;
        if url.tls {
            return Err(Failure::new(
                EXIT_USAGE,
                "--runtime mio has no TLS yet; use --runtime tokio for amis://",
            ));
        }
        let config = crate::connect::config(cli, &url.user, url.secret.expose(), events)?;
        Session::open(config, url.authority(), &url.to_string())
    };
    match &cli.command {
        Command::Action { .. } => {
            let action = crate::commands::action_of(&cli.command)?;
            let mut s = open("off")?;
            let outcome = s.call(action)?;
            s.logoff();
            print_outcome(outcome, false)
        }
        Command::Originate { .. } => {
            let action = crate::commands::action_of(&cli.command)?;
            let mut s = open("call")?;
            let outcome = s.call(action)?;
            s.logoff();
            print_outcome(outcome, true)
        }
        Command::Listen {
            count,
            duration,
            events,
        } => {
            let mut s = open("on")?;
            let end = duration.map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
            let mut seen = 0u64;
            let mut out = std::io::stdout().lock();
            while end.is_none_or(|e| Instant::now() < e) && count.is_none_or(|c| seen < c) {
                for notice in s.turn(Duration::from_millis(100))? {
                    match notice {
                        Notice::Disconnected { reason, .. } => {
                            eprintln!("ami: disconnected ({reason}); reconnecting")
                        }
                        Notice::Ready { .. } => eprintln!("ami: reconnected"),
                        Notice::Closed { reason } => {
                            return Err(Failure::new(EXIT_CONNECT, format!("closed: {reason}")))
                        }
                        _ => {}
                    }
                }
                while let Some(item) = s.driver.poll_event(s.conn) {
                    match item {
                        StreamItem::Event(m) => {
                            let wanted = events.is_empty()
                                || m.event().is_some_and(|e| {
                                    events.iter().any(|n| n.eq_ignore_ascii_case(e))
                                });
                            if wanted && count.is_none_or(|c| seen < c) {
                                seen += 1;
                                writeln!(out, "{}", json::message(&m)).map_err(|e| {
                                    Failure::new(EXIT_OTHER, format!("stdout: {e}"))
                                })?;
                            }
                        }
                        StreamItem::Gap { dropped } => {
                            eprintln!("ami: gap: {dropped} events dropped")
                        }
                        _ => {}
                    }
                }
            }
            drop(out);
            s.logoff();
            Ok(())
        }
        Command::Bench { duration } => bench_embedded(cli, *duration),
        Command::Demo { .. } => Err(Failure::new(
            EXIT_USAGE,
            "demo runs on tokio; use --runtime tokio",
        )),
        Command::Decode { .. } => Ok(()),
    }
}

fn bench_embedded(cli: &Cli, duration: f64) -> Result<(), Failure> {
    if cli.server.is_some() {
        return Err(Failure::new(
            EXIT_USAGE,
            "--runtime mio bench runs against the embedded simulator only",
        ));
    }
    let sim = TcpFront::start(SimConfig::default(), "127.0.0.1:0")
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the simulator: {e}")))?;
    let config = crate::connect::config(cli, "admin", "amp111", "user")?;
    let mut s = Session::open(config, sim.local_addr().to_string(), "embedded simulator")?;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(duration.max(0.5));
    let (mut injected, mut received, mut gaps) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        if injected.saturating_sub(received + gaps) < 20_000 {
            sim.with_server(|srv, now| srv.emit_user_events(now, 10_000));
            injected += 10_000;
        }
        s.turn(Duration::from_millis(10))?;
        while let Some(item) = s.driver.poll_event(s.conn) {
            match item {
                StreamItem::Event(_) => received += 1,
                StreamItem::Gap { dropped } => gaps += dropped,
                _ => {}
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "events (mio): {received} in {secs:.2}s = {:.0}/s with a trivial consumer (dropped {gaps})",
        received as f64 / secs
    );
    s.driver.close(s.conn);
    Ok(())
}
