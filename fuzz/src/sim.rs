//! A simulated runtime for `ami-async` on one thread, for the async fuzz targets: virtual
//! time, one in-memory link per port whose reads and writes wake exactly the waker they were
//! given, timers that fire when the clock passes them, and an executor that polls only tasks
//! that were woken. Each port has a scripted AMI server: a banner on every new link, answers
//! owed to the actions it read, floods, hang-ups.

use ami_async::{BoxFuture, DirectWrite, Runtime, Timer, Transport};
use ami_proto::{Decoder, DecoderLimits};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

/// The server's side of one connection, and what the client's side registered to be woken by.
#[derive(Default)]
pub struct Link {
    incoming: VecDeque<u8>,
    written: Vec<u8>,
    /// Bytes the transport takes before it says `Pending`.
    pub write_budget: usize,
    /// Most bytes one read returns.
    pub read_chunk: usize,
    /// The server hung up: reads return 0 once `incoming` is empty, writes fail.
    eof: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

/// One port: whether connects succeed, the current link, and the scripted server on it.
pub struct Port {
    pub connect_ok: bool,
    link: Option<Arc<Mutex<Link>>>,
    /// The link the server has greeted (sent its banner on).
    greeted: usize,
    server: Decoder,
    /// ActionIDs and action names read and not answered yet.
    owed: VecDeque<(String, String)>,
    seq: u64,
}

impl Default for Port {
    fn default() -> Port {
        Port {
            connect_ok: true,
            link: None,
            greeted: 0,
            server: Decoder::without_banner(DecoderLimits::default()),
            owed: VecDeque::new(),
            seq: 0,
        }
    }
}

struct World {
    now: Instant,
    ports: HashMap<u16, Port>,
    direct: bool,
    timers: Vec<(Instant, Waker)>,
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World {
        now: Instant::now(),
        ports: HashMap::new(),
        direct: false,
        timers: Vec::new(),
    });
}

fn lock(link: &Arc<Mutex<Link>>) -> MutexGuard<'_, Link> {
    match link.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Starts a new world (each fuzz input): the clock at the real now, no ports, no timers;
/// `direct`: links offer callers a direct writer, as plain TCP on async-io does.
pub fn reset(direct: bool) {
    WORLD.with(|w| {
        let mut w = w.borrow_mut();
        w.now = Instant::now();
        w.ports.clear();
        w.direct = direct;
        w.timers.clear();
    });
}

/// The virtual now.
pub fn now() -> Instant {
    WORLD.with(|w| w.borrow().now)
}

/// Moves the clock to `at` (never back) and wakes the timers due.
pub fn advance_to(at: Instant) {
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

/// The earliest armed timer.
pub fn next_timer() -> Option<Instant> {
    WORLD.with(|w| w.borrow().timers.iter().map(|(t, _)| *t).min())
}

/// Runs `f` on port `port` (created on first use).
pub fn with_port<T>(port: u16, f: impl FnOnce(&mut Port) -> T) -> T {
    WORLD.with(|w| f(w.borrow_mut().ports.entry(port).or_default()))
}

/// Every port in use.
pub fn ports() -> Vec<u16> {
    WORLD.with(|w| w.borrow().ports.keys().copied().collect())
}

impl Port {
    /// Runs `f` on the current link, if any.
    pub fn with_link(&mut self, f: impl FnOnce(&mut Link)) {
        if let Some(link) = &self.link {
            f(&mut lock(link));
        }
    }

    /// Greets a new link, then reads what the client wrote, remembering what is owed.
    pub fn serve(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        let key = Arc::as_ptr(&link) as usize;
        if self.greeted != key {
            self.greeted = key;
            self.server = Decoder::without_banner(DecoderLimits::default());
            self.owed.clear();
            self.send(b"Asterisk Call Manager/11.0.0\r\n");
        }
        let bytes = std::mem::take(&mut lock(&link).written);
        crate::read_actions(&mut self.server, &bytes, false, &mut self.owed);
    }

    /// Bytes to the client, waking its read.
    pub fn send(&mut self, bytes: &[u8]) {
        self.with_link(|l| {
            if l.eof {
                return;
            }
            l.incoming.extend(bytes.iter().copied());
            if let Some(w) = l.read_waker.take() {
                w.wake();
            }
        });
    }

    /// Whether an answer is owed.
    pub fn owes(&self) -> bool {
        !self.owed.is_empty()
    }

    /// Answers the oldest action read: as Asterisk would, or with an error.
    pub fn answer_one(&mut self, error: bool) {
        let Some((id, name)) = self.owed.pop_front() else {
            return;
        };
        let text = match (name.as_str(), error) {
            ("Login", false) => format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
            ),
            ("Logoff", _) => format!("Response: Goodbye\r\nActionID: {id}\r\n\r\n"),
            ("Ping", false) => {
                format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n")
            }
            (_, false) => format!("Response: Success\r\nActionID: {id}\r\n\r\n"),
            (_, true) => format!("Response: Error\r\nActionID: {id}\r\nMessage: No\r\n\r\n"),
        };
        self.send(text.as_bytes());
    }

    /// `n` events of about `size` bytes each.
    pub fn flood(&mut self, n: u32, size: usize) {
        let mut text = String::new();
        for _ in 0..n {
            self.seq += 1;
            text += &format!(
                "Event: Newchannel\r\nPrivilege: call,all\r\nSeq: {}\r\nPad: {}\r\n\r\n",
                self.seq,
                "x".repeat(size)
            );
        }
        self.send(text.as_bytes());
    }

    /// The server hangs up this link.
    pub fn hang_up(&mut self) {
        self.with_link(|l| {
            l.eof = true;
            if let Some(w) = l.read_waker.take() {
                w.wake();
            }
            if let Some(w) = l.write_waker.take() {
                w.wake();
            }
        });
        self.owed.clear();
    }

    /// How much the link takes before its writes wait (0: they wait until it is raised).
    pub fn set_write_budget(&mut self, budget: usize) {
        self.with_link(|l| {
            l.write_budget = budget;
            if budget > 0 {
                if let Some(w) = l.write_waker.take() {
                    w.wake();
                }
            }
        });
    }
}

/// The runtime: [`Runtime`] for `ami-async`, on the world of this thread.
pub struct Sim;
/// A connected link.
pub struct SimTcp(Arc<Mutex<Link>>);
/// A timer on the virtual clock.
pub struct SimTimer(Option<Instant>);
struct SimDirect(Arc<Mutex<Link>>);

impl Runtime for Sim {
    type Tcp = SimTcp;
    type Timer = SimTimer;
    fn now() -> Instant {
        now()
    }
    fn resolve(_: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]) })
    }
    fn connect(addr: SocketAddr) -> BoxFuture<io::Result<SimTcp>> {
        let link = with_port(addr.port(), |p| {
            if !p.connect_ok {
                return None;
            }
            let link = Arc::new(Mutex::new(Link {
                write_budget: usize::MAX,
                read_chunk: 64 << 10,
                ..Link::default()
            }));
            p.link = Some(Arc::clone(&link));
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

/// A future the executor polls only once it was woken.
pub struct Task {
    pub name: &'static str,
    future: Option<Pin<Box<dyn Future<Output = ()>>>>,
    flag: Arc<Flag>,
}

impl Task {
    /// A task, woken (so it runs once).
    pub fn new(name: &'static str, future: impl Future<Output = ()> + 'static) -> Task {
        Task {
            name,
            future: Some(Box::pin(future)),
            flag: Arc::new(Flag(AtomicBool::new(true))),
        }
    }

    /// Woken and not finished.
    pub fn woken(&self) -> bool {
        self.future.is_some() && self.flag.0.load(Ordering::SeqCst)
    }

    /// Finished (or dropped).
    pub fn is_done(&self) -> bool {
        self.future.is_none()
    }

    /// Wakes it from outside (the harness changed something it waits on).
    pub fn wake(&self) {
        self.flag.0.store(true, Ordering::SeqCst);
    }

    /// Drops the future (what it owns goes with it).
    pub fn drop_future(&mut self) {
        self.future = None;
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

/// Polls one woken task, the `pick`-th of those woken; false when none is.
pub fn poll_one(tasks: &mut [Task], pick: u8, trace: bool) -> bool {
    let woken: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].woken()).collect();
    if woken.is_empty() {
        return false;
    }
    let i = woken[usize::from(pick) % woken.len()];
    if trace {
        eprintln!("  poll {}", tasks[i].name);
    }
    tasks[i].poll();
    true
}

/// Serves every port: greets new links, reads what was written, and (with `answer`) answers
/// everything owed.
pub fn serve_all(answer: bool) {
    for port in ports() {
        with_port(port, |p| {
            p.serve();
            while answer && p.owes() {
                p.answer_one(false);
                p.serve();
            }
        });
    }
}

/// One thing a server or the world does, chosen by `what` with its arguments from `next`:
/// answer the oldest action owed (or refuse it), send a flood of events, let time pass, or a
/// fault of the link (hang up, refuse connects or accept them again, stall or resume writes,
/// change the read size).
pub fn server_op(port: u16, what: u8, mut next: impl FnMut() -> u8) {
    match what % 4 {
        0 => {
            let error = next() & 1 == 1;
            with_port(port, |p| p.answer_one(error));
        }
        1 => {
            let (n, size) = (next() % 32, usize::from(next()) * 2);
            with_port(port, |p| p.flood(u32::from(n), size));
        }
        2 => {
            let ms = u64::from(next()) * 20;
            advance_to(now() + std::time::Duration::from_millis(ms));
        }
        _ => {
            let b = next();
            with_port(port, |p| match b % 4 {
                0 => p.hang_up(),
                1 => p.connect_ok = b & 4 == 0,
                2 => p.set_write_budget(usize::from(b) * 4),
                _ => p.with_link(|l| l.read_chunk = 1 + usize::from(b)),
            });
        }
    }
}

/// The end of a run: every server healthy and answering everything, tasks polled while any
/// is woken, and time moved on to the next timer whenever none is, until `finished` holds
/// (asked whenever nothing is woken) or `within` of virtual time has passed.
pub fn settle(
    tasks: &mut [Task],
    trace: bool,
    within: std::time::Duration,
    mut finished: impl FnMut() -> bool,
) {
    for port in ports() {
        with_port(port, |p| {
            p.connect_ok = true;
            p.set_write_budget(usize::MAX);
        });
    }
    let deadline = now() + within;
    for _ in 0..1_000_000 {
        serve_all(true);
        if poll_one(tasks, 0, trace) {
            continue;
        }
        if finished() {
            return;
        }
        match next_timer() {
            Some(t) if t <= deadline => advance_to(t),
            _ => return,
        }
    }
}

/// Polls woken tasks and fires timers until nothing is left to do (after a close).
pub fn run_down(tasks: &mut [Task], trace: bool) {
    for _ in 0..100_000 {
        if !poll_one(tasks, 0, trace) {
            match next_timer() {
                Some(t) => advance_to(t),
                None => return,
            }
        }
    }
}

/// How many more items a consumer task may take before it stops reading (a consumer that
/// stalls): set by the harness, spent by the task.
#[derive(Clone)]
pub struct Allowance(Rc<Cell<u64>>);

impl Allowance {
    /// No limit.
    pub fn unlimited() -> Allowance {
        Allowance(Rc::new(Cell::new(u64::MAX)))
    }

    /// From an input byte: a few more items (an even byte) or no limit (an odd one). Wake
    /// the consumer's task after it.
    pub fn set_from(&self, b: u8) {
        self.0.set(if b & 1 == 0 {
            u64::from(b >> 1)
        } else {
            u64::MAX
        });
    }

    /// No limit any more. Wake the consumer's task after it.
    pub fn lift(&self) {
        self.0.set(u64::MAX);
    }

    /// Waits while nothing is left (the harness wakes the task when it gives more).
    pub async fn wait(&self) {
        std::future::poll_fn(|_| {
            if self.0.get() > 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// One item taken.
    pub fn spend(&self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}
