//! `ami-async`'s fleet (drivers of one or two shards, handles, the merged event stream) on
//! the simulated runtime of [`ami_fuzz::sim`], with up to four servers, each on a port of
//! its own, added and removed as the input says; callers route actions by name or policy;
//! servers answer, flood, stall, refuse connects and hang up; the reader of the merged
//! stream reads or stops reading. Checked:
//!
//! - nothing panics;
//! - no lost wake-up: once the input is used up, every server answers everything and time
//!   runs on timer by timer; every caller then hears back;
//! - every server still in the fleet has had each event it took in delivered to the reader,
//!   counted in a gap naming it, or counted in a `Discarded { reason: BeforeReady }` notice
//!   naming it (an event before its session was announced Ready: before the login's
//!   answer, or while a reconnect re-applies filters);
//! - closing the fleet ends its drivers and the merged stream.
//!
//! `cargo +nightly fuzz run async_fleet`; `FUZZ_TRACE=1` with a crash file prints each step.
#![no_main]

use ami_async::fleet::{FleetConfig, Policy, Route};
use ami_fuzz::sim::{self, Allowance, Sim, Task};
use ami_fuzz::Cursor;
use ami_proto::{Action, ClientConfig, Discard, StreamItem};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

const NAMES: [&str; 4] = ["s0", "s1", "s2", "s3"];
const BASE_PORT: u16 = 6000;

/// What the reader saw, per server.
#[derive(Default)]
struct Seen {
    events: HashMap<String, u64>,
    gaps: HashMap<String, u64>,
    /// Events discarded before their session was Ready, as the notices counted them.
    before_ready: HashMap<String, u64>,
    ended: bool,
}

fn client_config(b: u8) -> ClientConfig {
    match ClientConfig::builder("admin", "secret")
        .event_queue_cap(4 + usize::from(b % 16))
        .action_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(20))
        .backoff_base(Duration::from_millis(50))
        .backoff_max(Duration::from_millis(400))
        .build()
    {
        Ok(c) => c,
        Err(e) => panic!("config refused: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let trace = std::env::var_os("FUZZ_TRACE").is_some();
    let mut input = Cursor(data);
    let cfg = input.byte();
    sim::reset(cfg & 1 != 0);
    let mut config = FleetConfig::default();
    config.seed = 11;
    let shards = 1 + usize::from(cfg >> 1 & 1);
    let (fleet, mut events, drivers) = ami_async::fleet::start_sharded::<Sim>(config, shards);
    let mut tasks: Vec<Task> = drivers
        .into_iter()
        .map(|d| Task::new("driver", d))
        .collect();
    let drivers = tasks.len();
    let seen = Rc::new(RefCell::new(Seen::default()));
    let allowance = Allowance::unlimited();
    let reader = tasks.len();
    {
        let seen = Rc::clone(&seen);
        let allowance = allowance.clone();
        tasks.push(Task::new("reader", async move {
            loop {
                allowance.wait().await;
                let Some(item) = events.recv().await else {
                    seen.borrow_mut().ended = true;
                    return;
                };
                let mut s = seen.borrow_mut();
                let server = item.server.as_str().to_string();
                match item.item {
                    StreamItem::Event(_) => *s.events.entry(server).or_default() += 1,
                    StreamItem::Gap { dropped } => *s.gaps.entry(server).or_default() += dropped,
                    StreamItem::Discarded {
                        reason: Discard::BeforeReady,
                        count,
                    } => *s.before_ready.entry(server).or_default() += count,
                    _ => {}
                }
                drop(s);
                allowance.spend();
            }
        }));
    }
    let done = Rc::new(RefCell::new(0u32));
    let mut callers = 0u32;
    let mut removed = [false; 4];
    let mut steps = 0;
    while !input.is_empty() && steps < 400 {
        steps += 1;
        sim::serve_all(false);
        let op = input.byte();
        let k = usize::from(input.byte() % 4);
        let port = BASE_PORT + k as u16;
        if trace {
            eprintln!("op {} on {}", op % 13, NAMES[k]);
        }
        match op % 13 {
            0..=3 => {
                let pick = input.byte();
                sim::poll_one(&mut tasks, pick, trace);
            }
            4 => {
                let b = input.byte();
                // A removed name stays retired: items of the old server may still be on
                // their way to the reader, and would be counted for the new one.
                if removed[k] {
                    continue;
                }
                let r = fleet.add(NAMES[k], client_config(b), ("sim", port));
                if trace {
                    eprintln!("  add: {r:?}");
                }
            }
            5 => {
                // Events still queued for it go with it (counted by the fleet, not here).
                if fleet.remove(NAMES[k]) {
                    removed[k] = true;
                }
            }
            6..=9 => sim::server_op(port, op - 6, || input.byte()),
            10 if callers < 8 => {
                let how = input.byte();
                let fleet = fleet.clone();
                let done = Rc::clone(&done);
                callers += 1;
                tasks.push(Task::new("caller", async move {
                    let route = match how % 3 {
                        0 => Route::Server(NAMES[k]),
                        1 => Route::Any(Policy::RoundRobin),
                        _ => Route::Any(Policy::FewestInFlight),
                    };
                    let _ = fleet.send(route, Action::new("Ping")).await;
                    *done.borrow_mut() += 1;
                }));
            }
            11 => {
                let b = input.byte();
                allowance.set_from(b);
                tasks[reader].wake();
            }
            _ => {
                let pick = input.byte();
                while sim::poll_one(&mut tasks, pick, trace) {}
            }
        }
    }
    // The end: every server healthy and answering; time runs on timer by timer, until every
    // caller heard back and the reader has had a few quiet rounds to take what was queued.
    allowance.lift();
    tasks[reader].wake();
    let mut quiet_rounds = 0;
    sim::settle(&mut tasks, trace, Duration::from_secs(120), || {
        if *done.borrow() == callers {
            quiet_rounds += 1;
        }
        quiet_rounds > 2
    });
    assert_eq!(
        *done.borrow(),
        callers,
        "a caller never heard back although every server answered everything: lost wake-up"
    );
    let stats = fleet.stats();
    {
        let s = seen.borrow();
        for server in &stats.servers {
            let name = server.name.as_str();
            let got = [&s.events, &s.gaps, &s.before_ready]
                .iter()
                .map(|m| m.get(name).copied().unwrap_or(0))
                .sum::<u64>();
            if trace {
                eprintln!(
                    "end {name}: reader {got}, client took in {}, queued {}",
                    server.client.events_in, server.client.event_queue_len
                );
            }
            assert!(
                got == server.client.events_in && server.client.event_queue_len == 0,
                "{name}: the reader got {got} events, gaps and events discarded before Ready; its client took in {} ({} still queued)",
                server.client.events_in,
                server.client.event_queue_len
            );
        }
    }
    // Closing the fleet ends its drivers and the merged stream.
    fleet.close();
    drop(fleet);
    sim::run_down(&mut tasks, trace);
    for (i, task) in tasks.iter().enumerate().take(drivers) {
        assert!(task.is_done(), "fleet driver {i} still runs after close");
    }
    assert!(
        seen.borrow().ended,
        "the merged stream did not end after close"
    );
});
