//! `ami-async`'s session (driver, handles, event stream) on a simulated runtime: one thread,
//! virtual time, an in-memory link whose reads and writes wake exactly the waker they were
//! given, and an executor that polls only tasks that were woken, in an order the input
//! picks. The server answers, floods, stalls its reads, hangs up; callers send; the consumer
//! reads or stops reading; handles are dropped. Checked:
//!
//! - nothing panics;
//! - no lost wake-up: once the input is used up, the server answers everything and time runs
//!   on to each timer in turn; every caller's action then completes and the consumer gets
//!   every event the client took in, delivered or counted in a gap; with nothing left that
//!   could wake a task, a task still waiting is a wake-up that was lost;
//! - closing the handles and dropping the stream ends the driver.
//!
//! `cargo +nightly fuzz run async_session`; `FUZZ_TRACE=1` with a crash file prints each step.
#![no_main]

use ami_async::{BoxFuture, DirectWrite, Handle, Runtime, Timer, Transport};
use ami_proto::{Action, ClientConfig, Decoder, DecoderLimits, Frame, StreamItem};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// The server's side of the link, and what the client's side registered to be woken by.
#[derive(Default)]
struct Link {
    incoming: VecDeque<u8>,
    written: Vec<u8>,
    /// Bytes the transport takes before it says `Pending`.
    write_budget: usize,
    /// Most bytes one read returns.
    read_chunk: usize,
    /// The server hung up: reads return 0 once `incoming` is empty.
    eof: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

/// The simulated world: the clock, the current link, timers waiting to fire.
struct World {
    now: Instant,
    link: Option<Arc<Mutex<Link>>>,
    connect_ok: bool,
    direct: bool,
    timers: Vec<(Instant, Waker)>,
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World {
        now: Instant::now(),
        link: None,
        connect_ok: true,
        direct: false,
        timers: Vec::new(),
    });
}

fn lock(link: &Arc<Mutex<Link>>) -> std::sync::MutexGuard<'_, Link> {
    match link.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

struct Sim;
struct SimTcp(Arc<Mutex<Link>>);
struct SimTimer(Option<Instant>);
struct SimDirect(Arc<Mutex<Link>>);

impl Runtime for Sim {
    type Tcp = SimTcp;
    type Timer = SimTimer;
    fn now() -> Instant {
        WORLD.with(|w| w.borrow().now)
    }
    fn resolve(_: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]) })
    }
    fn connect(_: SocketAddr) -> BoxFuture<io::Result<SimTcp>> {
        let link = WORLD.with(|w| {
            let mut w = w.borrow_mut();
            if !w.connect_ok {
                return None;
            }
            let link = Arc::new(Mutex::new(Link {
                write_budget: usize::MAX,
                read_chunk: 64 << 10,
                ..Link::default()
            }));
            w.link = Some(Arc::clone(&link));
            Some(link)
        });
        Box::pin(async move {
            link.map(SimTcp)
                .ok_or(io::ErrorKind::ConnectionRefused.into())
        })
    }
    fn timer() -> SimTimer {
        SimTimer(None)
    }
}

impl Transport for SimTcp {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut l = lock(&self.0);
        if l.incoming.is_empty() {
            if l.eof {
                return Poll::Ready(Ok(0));
            }
            l.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(l.read_chunk.max(1)).min(l.incoming.len());
        for (b, x) in buf.iter_mut().zip(l.incoming.drain(..n)) {
            *b = x;
        }
        Poll::Ready(Ok(n))
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut l = lock(&self.0);
        if l.eof {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(l.write_budget);
        if n == 0 {
            l.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        l.write_budget = l.write_budget.saturating_sub(n);
        l.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn direct_writer(&self) -> Option<Arc<dyn DirectWrite>> {
        let direct = WORLD.with(|w| w.borrow().direct);
        direct.then(|| Arc::new(SimDirect(Arc::clone(&self.0))) as Arc<dyn DirectWrite>)
    }
}

impl DirectWrite for SimDirect {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut l = lock(&self.0);
        let n = buf.len().min(l.write_budget);
        if l.eof || n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        l.write_budget = l.write_budget.saturating_sub(n);
        l.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Timer for SimTimer {
    fn set_at(&mut self, at: Instant) {
        self.0 = Some(at);
    }
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.0 else {
            return Poll::Pending;
        };
        WORLD.with(|w| {
            let mut w = w.borrow_mut();
            if w.now >= at {
                Poll::Ready(())
            } else {
                w.timers.push((at, cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// A task's wake flag.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Task {
    name: &'static str,
    future: Option<Pin<Box<dyn Future<Output = ()>>>>,
    flag: Arc<Flag>,
}

impl Task {
    fn new(name: &'static str, future: impl Future<Output = ()> + 'static) -> Task {
        Task {
            name,
            future: Some(Box::pin(future)),
            flag: Arc::new(Flag(AtomicBool::new(true))),
        }
    }

    fn woken(&self) -> bool {
        self.future.is_some() && self.flag.0.load(Ordering::SeqCst)
    }

    fn poll(&mut self) {
        let Some(f) = self.future.as_mut() else {
            return;
        };
        self.flag.0.store(false, Ordering::SeqCst);
        let waker = Waker::from(Arc::clone(&self.flag));
        let mut cx = Context::from_waker(&waker);
        if f.as_mut().poll(&mut cx).is_ready() {
            self.future = None;
        }
    }
}

/// What the consumer saw.
#[derive(Default)]
struct Seen {
    events: u64,
    gaps: u64,
    ended: bool,
    /// Items it may still take before it stops reading (a consumer that stalls).
    allowance: u64,
}

/// Bytes of the input, read one at a time; zeros once it is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

struct Harness {
    tasks: Vec<Task>,
    handles: Vec<Handle>,
    /// Answers owed: the ActionIDs and action names the server has read, not yet answered.
    server: Decoder,
    owed: VecDeque<(String, String)>,
    /// Callers whose action completed.
    done: Rc<RefCell<u32>>,
    callers: u32,
    seq: u64,
    trace: bool,
}

impl Harness {
    fn link() -> Option<Arc<Mutex<Link>>> {
        WORLD.with(|w| w.borrow().link.clone())
    }

    /// Reads what the client wrote, remembering what it owes an answer to.
    fn read_written(&mut self) {
        let Some(link) = Self::link() else {
            return;
        };
        let bytes = std::mem::take(&mut lock(&link).written);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = self.server.feed(rest);
            rest = &rest[n..];
            while let Some(frame) = self.server.decode() {
                if let Ok(Frame::Message(m)) = frame {
                    let id = m.action_id().unwrap_or("").to_string();
                    let name = m.action().unwrap_or("").to_string();
                    self.owed.push_back((id, name));
                }
            }
        }
    }

    fn send_to_client(&mut self, bytes: &[u8]) {
        let Some(link) = Self::link() else {
            return;
        };
        let mut l = lock(&link);
        if l.eof {
            return;
        }
        l.incoming.extend(bytes.iter().copied());
        if let Some(w) = l.read_waker.take() {
            w.wake();
        }
    }

    /// Answers the oldest action the server owes an answer to.
    fn answer_one(&mut self, error: bool) {
        let Some((id, name)) = self.owed.pop_front() else {
            return;
        };
        let text = match (name.as_str(), error) {
            ("Login", false) => format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
            ),
            ("Logoff", _) => format!("Response: Goodbye\r\nActionID: {id}\r\n\r\n"),
            ("Ping", false) => format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"),
            (_, false) => format!("Response: Success\r\nActionID: {id}\r\n\r\n"),
            (_, true) => format!("Response: Error\r\nActionID: {id}\r\nMessage: No\r\n\r\n"),
        };
        self.send_to_client(text.as_bytes());
    }

    fn flood(&mut self, n: u32, size: usize) {
        let mut text = String::new();
        for _ in 0..n {
            self.seq += 1;
            text += &format!(
                "Event: Newchannel\r\nPrivilege: call,all\r\nSeq: {}\r\nPad: {}\r\n\r\n",
                self.seq,
                "x".repeat(size)
            );
        }
        self.send_to_client(text.as_bytes());
    }

    fn hang_up(&mut self) {
        if let Some(link) = Self::link() {
            let mut l = lock(&link);
            l.eof = true;
            if let Some(w) = l.read_waker.take() {
                w.wake();
            }
            if let Some(w) = l.write_waker.take() {
                w.wake();
            }
        }
        self.server = Decoder::without_banner(DecoderLimits::default());
        self.owed.clear();
    }

    fn set_write_budget(&mut self, budget: usize) {
        if let Some(link) = Self::link() {
            let mut l = lock(&link);
            l.write_budget = budget;
            if budget > 0 {
                if let Some(w) = l.write_waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Moves the clock to `at` and wakes the timers due.
    fn advance_to(at: Instant) {
        let due: Vec<Waker> = WORLD.with(|w| {
            let mut w = w.borrow_mut();
            if at > w.now {
                w.now = at;
            }
            let now = w.now;
            let (due, later): (Vec<_>, Vec<_>) = w.timers.drain(..).partition(|(t, _)| *t <= now);
            w.timers = later;
            due.into_iter().map(|(_, waker)| waker).collect()
        });
        due.into_iter().for_each(Waker::wake);
    }

    fn next_timer() -> Option<Instant> {
        WORLD.with(|w| w.borrow().timers.iter().map(|(t, _)| *t).min())
    }

    fn poll_one(&mut self, pick: u8) -> bool {
        let woken: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].woken())
            .collect();
        if woken.is_empty() {
            return false;
        }
        let i = woken[usize::from(pick) % woken.len()];
        if self.trace {
            eprintln!("  poll {}", self.tasks[i].name);
        }
        self.tasks[i].poll();
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let cfg = input.byte();
    WORLD.with(|w| {
        let mut w = w.borrow_mut();
        w.now = Instant::now();
        w.link = None;
        w.connect_ok = true;
        w.direct = cfg & 1 != 0;
        w.timers.clear();
    });
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
    let (handle, mut events, driver) = ami_async::session::<Sim>(config, ("sim", 5038));
    let seen = Rc::new(RefCell::new(Seen {
        allowance: u64::MAX,
        ..Seen::default()
    }));
    let done = Rc::new(RefCell::new(0u32));
    let mut h = Harness {
        tasks: Vec::new(),
        handles: vec![handle.clone()],
        server: Decoder::without_banner(DecoderLimits::default()),
        owed: VecDeque::new(),
        done: Rc::clone(&done),
        callers: 0,
        seq: 0,
        trace: std::env::var_os("FUZZ_TRACE").is_some(),
    };
    h.tasks.push(Task::new("driver", driver));
    {
        let seen = Rc::clone(&seen);
        h.tasks.push(Task::new("consumer", async move {
            loop {
                // A consumer out of allowance stops reading (it stalls), until more comes.
                std::future::poll_fn(|_| {
                    if seen.borrow().allowance > 0 {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                match events.recv().await {
                    Some(StreamItem::Event(_)) => seen.borrow_mut().events += 1,
                    Some(StreamItem::Gap { dropped }) => seen.borrow_mut().gaps += dropped,
                    Some(_) => {}
                    None => {
                        seen.borrow_mut().ended = true;
                        return;
                    }
                }
                let mut s = seen.borrow_mut();
                s.allowance = s.allowance.saturating_sub(1);
            }
        }));
    }
    let consumer = 1;
    drop(handle);
    let mut banner_for: Option<usize> = None;
    let mut steps = 0;
    while !input.0.is_empty() && steps < 400 {
        steps += 1;
        // A new link gets its banner.
        if let Some(link) = Harness::link() {
            let key = Arc::as_ptr(&link) as usize;
            if banner_for != Some(key) {
                banner_for = Some(key);
                h.server = Decoder::without_banner(DecoderLimits::default());
                h.owed.clear();
                h.send_to_client(b"Asterisk Call Manager/11.0.0\r\n");
            }
        }
        h.read_written();
        let op = input.byte();
        if h.trace {
            eprintln!("op {}", op % 12);
        }
        match op % 12 {
            0..=3 => {
                let pick = input.byte();
                h.poll_one(pick);
            }
            4 => h.answer_one(input.byte() & 1 == 1),
            5 => {
                let (n, size) = (input.byte() % 32, usize::from(input.byte()) * 2);
                h.flood(u32::from(n), size);
            }
            6 => {
                let ms = u64::from(input.byte()) * 20;
                let at = WORLD.with(|w| w.borrow().now) + Duration::from_millis(ms);
                Harness::advance_to(at);
            }
            7 => {
                let b = input.byte();
                match b % 4 {
                    0 => h.hang_up(),
                    1 => WORLD.with(|w| w.borrow_mut().connect_ok = b & 4 == 0),
                    2 => h.set_write_budget(usize::from(b) * 4),
                    _ => {
                        if let Some(link) = Harness::link() {
                            lock(&link).read_chunk = 1 + usize::from(b);
                        }
                    }
                }
            }
            8 if h.callers < 8 => {
                // A caller: sends an action (through a handle of its own) and counts its end.
                let Some(handle) = h.handles.first().cloned() else {
                    continue;
                };
                let done = Rc::clone(&h.done);
                let name = ["Ping", "Status", "Command"][usize::from(input.byte() % 3)];
                h.callers += 1;
                h.tasks.push(Task::new("caller", async move {
                    let _ = handle.send(Action::new(name)).await;
                    *done.borrow_mut() += 1;
                }));
            }
            9 => {
                // The consumer stops reading after a few more items, or reads on.
                let b = input.byte();
                let mut s = seen.borrow_mut();
                s.allowance = if b & 1 == 0 {
                    u64::from(b >> 1)
                } else {
                    u64::MAX
                };
                drop(s);
                h.tasks[consumer].flag.0.store(true, Ordering::SeqCst);
            }
            10 => {
                // A handle dropped (callers keep their own).
                if h.handles.len() > 1 || input.byte() & 1 == 1 {
                    h.handles.pop();
                } else {
                    let Some(first) = h.handles.first().cloned() else {
                        continue;
                    };
                    h.handles.push(first);
                }
            }
            _ => {
                let pick = input.byte();
                while h.poll_one(pick) {}
            }
        }
    }
    // The end: the server is healthy, answers everything, and time runs on to each timer.
    WORLD.with(|w| w.borrow_mut().connect_ok = true);
    h.set_write_budget(usize::MAX);
    seen.borrow_mut().allowance = u64::MAX;
    h.tasks[consumer].flag.0.store(true, Ordering::SeqCst);
    let deadline = WORLD.with(|w| w.borrow().now) + Duration::from_secs(120);
    for _ in 0..1_000_000 {
        if let Some(link) = Harness::link() {
            let key = Arc::as_ptr(&link) as usize;
            if banner_for != Some(key) {
                banner_for = Some(key);
                h.server = Decoder::without_banner(DecoderLimits::default());
                h.owed.clear();
                h.send_to_client(b"Asterisk Call Manager/11.0.0\r\n");
            }
        }
        h.read_written();
        while !h.owed.is_empty() {
            h.answer_one(false);
        }
        if h.poll_one(0) {
            continue;
        }
        let all_done = *done.borrow() == h.callers;
        if all_done {
            break;
        }
        match Harness::next_timer() {
            Some(t) if t <= deadline => Harness::advance_to(t),
            _ => break,
        }
    }
    assert_eq!(
        *done.borrow(),
        h.callers,
        "a caller never heard back although the server answered everything: lost wake-up"
    );
    // Everything the client took in reaches the consumer, as events or counted gaps.
    let stats = {
        let probe = h.handles.first().cloned();
        probe.map(|p| p.stats())
    };
    if let Some(stats) = stats {
        let s = seen.borrow();
        if h.trace {
            eprintln!(
                "end: {} callers done; consumer {} events, {} in gaps; client took in {}, {} queued, {} connects, status {:?}",
                *done.borrow(),
                s.events,
                s.gaps,
                stats.events_in,
                stats.event_queue_len,
                stats.connects,
                h.handles.first().map(|h| h.status().get())
            );
        }
        assert!(
            s.events + s.gaps == stats.events_in && stats.event_queue_len == 0,
            "consumer saw {} events and {} in gaps; the client took in {} ({} still queued)",
            s.events,
            s.gaps,
            stats.events_in,
            stats.event_queue_len
        );
    }
    // Closing the handles and dropping the stream (the last users) ends the driver.
    for handle in &h.handles {
        handle.close();
    }
    h.handles.clear();
    h.tasks[consumer].future = None;
    for _ in 0..100_000 {
        if !h.poll_one(0) {
            match Harness::next_timer() {
                Some(t) => Harness::advance_to(t),
                None => break,
            }
        }
    }
    assert!(
        h.tasks[0].future.is_none(),
        "the driver still runs after the last handle closed"
    );
});
