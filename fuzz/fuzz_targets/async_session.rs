//! `ami-async`'s session (driver, handles, event stream) on the simulated runtime of
//! [`ami_fuzz::sim`]: one thread, virtual time, an in-memory link whose reads and writes wake
//! exactly the waker they were given, and an executor that polls only tasks that were
//! woken, in an order the input picks. The server answers, floods, stalls its reads, refuses
//! connects and hangs up; callers send; the consumer reads (with `recv`, or `try_recv` first)
//! or stops reading; handles are dropped. Checked:
//!
//! - nothing panics;
//! - no lost wake-up: once the input is used up, the server answers everything and time runs
//!   on to each timer in turn; every caller's action then completes, and the consumer gets
//!   every event the client took in, delivered, counted in a gap, or counted in a
//!   `Discarded { reason: BeforeReady }` notice (an event before its session was announced
//!   Ready: before the login's answer, or while a reconnect re-applies filters); a task
//!   still waiting with nothing left that could wake it is a wake-up that was lost;
//! - closing the handles and dropping the stream ends the driver.
//!
//! `cargo +nightly fuzz run async_session`; `FUZZ_TRACE=1` with a crash file prints each step.
#![no_main]

use ami_fuzz::sim::{self, Allowance, Sim, Task};
use ami_fuzz::Cursor;
use ami_proto::{Action, ClientConfig, Discard, StreamItem};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

const PORT: u16 = 5038;

/// What the consumer saw.
#[derive(Default)]
struct Seen {
    events: u64,
    gaps: u64,
    /// Events discarded before their session was Ready, as the notices counted them.
    before_ready: u64,
}

fuzz_target!(|data: &[u8]| {
    let trace = std::env::var_os("FUZZ_TRACE").is_some();
    let mut input = Cursor(data);
    let cfg = input.byte();
    sim::reset(cfg & 1 != 0);
    let config = match ClientConfig::builder("admin", "secret")
        .seed(7)
        .event_queue_cap(4 + usize::from(cfg >> 4))
        .action_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(20))
        .backoff_base(Duration::from_millis(50))
        .backoff_max(Duration::from_millis(400))
        .build()
    {
        Ok(c) => c,
        Err(e) => panic!("config refused: {e}"),
    };
    let (handle, mut events, driver) = ami_async::session::<Sim>(config, ("sim", PORT));
    let seen = Rc::new(RefCell::new(Seen::default()));
    let allowance = Allowance::unlimited();
    let done = Rc::new(RefCell::new(0u32));
    let mut callers = 0u32;
    let mut handles = vec![handle.clone()];
    drop(handle);
    let mut tasks = vec![Task::new("driver", driver)];
    let consumer = tasks.len();
    // Half the inputs: a consumer that tries `try_recv` first (taking straight from the core
    // when nothing was handed over) and waits in `recv` only when that finds nothing.
    let tries_first = cfg & 2 != 0;
    {
        let seen = Rc::clone(&seen);
        let allowance = allowance.clone();
        tasks.push(Task::new("consumer", async move {
            loop {
                allowance.wait().await;
                let item = match tries_first.then(|| events.try_recv()).flatten() {
                    Some(item) => Some(item),
                    None => events.recv().await,
                };
                match item {
                    Some(StreamItem::Event(_)) => seen.borrow_mut().events += 1,
                    Some(StreamItem::Gap { dropped }) => seen.borrow_mut().gaps += dropped,
                    Some(StreamItem::Discarded {
                        reason: Discard::BeforeReady,
                        count,
                    }) => seen.borrow_mut().before_ready += count,
                    Some(_) => {}
                    None => return,
                }
                allowance.spend();
            }
        }));
    }
    let mut steps = 0;
    while !input.is_empty() && steps < 400 {
        steps += 1;
        sim::serve_all(false);
        let op = input.byte();
        if trace {
            eprintln!("op {}", op % 12);
        }
        match op % 12 {
            0..=3 => {
                let pick = input.byte();
                sim::poll_one(&mut tasks, pick, trace);
            }
            4..=7 => sim::server_op(PORT, op - 4, || input.byte()),
            8 if callers < 8 => {
                // A caller: sends an action through a handle of its own, counts its end.
                let Some(handle) = handles.first().cloned() else {
                    continue;
                };
                let done = Rc::clone(&done);
                let name = ["Ping", "Status", "Command"][usize::from(input.byte() % 3)];
                callers += 1;
                tasks.push(Task::new("caller", async move {
                    let _ = handle.send(Action::new(name)).await;
                    *done.borrow_mut() += 1;
                }));
            }
            9 => {
                // The consumer stops reading after a few more items, or reads on.
                let b = input.byte();
                allowance.set_from(b);
                tasks[consumer].wake();
            }
            10 => {
                // A handle dropped, or one more made (callers keep their own).
                if handles.len() > 1 || input.byte() & 1 == 1 {
                    handles.pop();
                } else if let Some(first) = handles.first().cloned() {
                    handles.push(first);
                }
            }
            _ => {
                let pick = input.byte();
                while sim::poll_one(&mut tasks, pick, trace) {}
            }
        }
    }
    // The end: the server is healthy and answers everything; time runs on timer by timer.
    allowance.lift();
    tasks[consumer].wake();
    sim::settle(&mut tasks, trace, Duration::from_secs(120), || {
        *done.borrow() == callers
    });
    assert_eq!(
        *done.borrow(),
        callers,
        "a caller never heard back although the server answered everything: lost wake-up"
    );
    // Everything the client took in reached the consumer, as events, counted gaps or
    // counted discards before Ready.
    if let Some(stats) = handles.first().map(|h| h.stats()) {
        let s = seen.borrow();
        if trace {
            eprintln!(
                "end: {} callers done; consumer {} events, {} in gaps, {} before Ready; client took in {}, {} queued, {} connects",
                *done.borrow(),
                s.events,
                s.gaps,
                s.before_ready,
                stats.events_in,
                stats.event_queue_len,
                stats.connects,
            );
        }
        assert!(
            s.events + s.gaps + s.before_ready == stats.events_in && stats.event_queue_len == 0,
            "consumer saw {} events, {} in gaps and {} before Ready; the client took in {} ({} still queued)",
            s.events,
            s.gaps,
            s.before_ready,
            stats.events_in,
            stats.event_queue_len
        );
    }
    // Closing the handles and dropping the stream (the last users) ends the driver.
    for handle in &handles {
        handle.close();
    }
    handles.clear();
    tasks[consumer].drop_future();
    sim::run_down(&mut tasks, trace);
    assert!(
        tasks[0].is_done(),
        "the driver still runs after the handles closed and the stream was dropped"
    );
});
