//! The driver: one future per session that moves bytes and time between a transport and the
//! core. No protocol decisions are made here; every `if` is about I/O.

use crate::runtime::{BoxFuture, Runtime, Timer, Transport};
use crate::shared::Inner;
use crate::target::{self, Link, Target};
use ami_proto::{Input, Notice, Output};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Read size per call: one syscall moves up to this much into the decoder.
///
/// The read goes into the driver's own buffer, outside the core lock, and the core copies it
/// in under the lock. Reading straight into the decoder's buffer instead was tried (session
/// 14) and not kept: under the lock it made callers wait for each read's syscall (async-std
/// at one Ping in flight went from 11 to 24 syscalls per Ping, futex waits most of them),
/// and the room it needs at the end of the read buffer slowed the decoder itself by 3-15 %.
const READ_CHUNK: usize = 64 << 10;

/// Turns in a row that found work without waiting, after which the driver yields to its
/// executor once, so that a socket that is always readable cannot starve the other tasks
/// of a single-threaded executor.
pub(crate) const TURNS_BEFORE_YIELD: u32 = 64;
/// Written bytes kept at the front of the driver's copy before it is compacted.
const COMPACT_OUT: usize = 64 << 10;

/// How long a read may wait for a consumer that is behind (`Client::wants_read` false: its
/// queue holds `READ_AHEAD_BYTES` or half a cap), here and in the fleet's driver: long
/// enough that a consumer descheduled for a moment, or starved by the driver on a one-thread
/// executor, catches up instead of the driver decoding events only for the queue to drop
/// them; short enough that responses and heartbeats keep coming and Asterisk's 100 ms write
/// timeout is never near.
pub(crate) const HOLD_READ: Duration = Duration::from_millis(10);

/// How long reads may wait in a row for a consumer that is behind, however often it takes
/// (each take restarts `HOLD_READ`). A consumer still behind after this is slower than the
/// server: reads then go on until it has caught up (its queue drops the oldest, counted),
/// because reads held for as long as its backlog lasts block Asterisk's writes to the
/// session, and Asterisk ends a session whose write blocks `writetimeout` (100 ms by
/// default), and leave responses and heartbeats waiting behind the events in the socket.
pub(crate) const MAX_HOLD: Duration = Duration::from_millis(30);

/// One socket's run of held reads: when it began, and whether it lasted `MAX_HOLD` since
/// the consumer was last caught up (then reads go on until it is again).
#[derive(Debug, Default)]
pub(crate) struct HoldSpan {
    since: Option<Instant>,
    spent: bool,
}

impl HoldSpan {
    /// Whether the next read may wait now for a consumer that is `behind`: the run of held
    /// reads starts at the first `true`, and after `MAX_HOLD` the answer is false until the
    /// consumer has caught up (`behind` false).
    pub(crate) fn may_hold(&mut self, behind: bool, now: Instant) -> bool {
        if !behind {
            *self = HoldSpan::default();
            return false;
        }
        if self.spent {
            return false;
        }
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) >= MAX_HOLD {
            self.spent = true;
            self.since = None;
            return false;
        }
        true
    }

    /// A read went ahead (the consumer stopped taking, or the span ran out): the next
    /// hold, if any, starts a new run.
    pub(crate) fn read(&mut self) {
        self.since = None;
    }

    /// When the current run of held reads must end.
    pub(crate) fn ends_at(&self) -> Option<Instant> {
        self.since.map(|s| s + MAX_HOLD)
    }
}

/// How long the driver may spend writing out what is left once the session has closed,
/// before it drops the socket anyway.
const FINAL_FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// The future that runs one session's I/O. It completes when the session has closed for
/// good: after `logoff`, `close`, a final failure (a rejected login), or when the last
/// [`Handle`](crate::Handle) and the [`Events`](crate::Events) are gone. Dropping it before
/// that closes the session: pending actions fail, the status becomes `Closed`, the event
/// stream ends.
#[must_use = "nothing is sent or received until the driver runs"]
pub struct Driver {
    run: Option<BoxFuture<()>>,
    inner: Arc<Inner>,
}

impl Driver {
    pub(crate) fn new<R: Runtime>(
        inner: Arc<Inner>,
        target: Target,
        #[cfg(feature = "tls")] tls: Option<crate::tls::TlsTarget>,
    ) -> Driver {
        let pump = Pump::<R> {
            inner: inner.clone(),
            target,
            #[cfg(feature = "tls")]
            tls,
            link: None,
            connecting: None,
            out: Vec::new(),
            out_pos: 0,
            lend_until: None,
            buf: vec![0u8; READ_CHUNK],
            timer: R::timer(),
            armed: None,
            completed: 0,
            hold: Hold::default(),
            hold_timer: R::timer(),
        };
        Driver {
            run: Some(Box::pin(pump.run())),
            inner,
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(run) = self.run.as_mut() else {
            return Poll::Ready(());
        };
        let done = run.as_mut().poll(cx);
        if done.is_ready() {
            self.run = None;
        }
        done
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Drop the I/O first, then tell the callers (a no-op when the run finished).
        self.run = None;
        self.inner.finish();
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("target", &self.inner.what)
            .field("finished", &self.run.is_none())
            .finish()
    }
}

/// What woke the driver.
enum Woke<T> {
    /// TCP is up and the TLS handshake starts.
    Handshaking,
    Opened(io::Result<Link<T>>),
    Wrote(io::Result<usize>),
    Read(io::Result<usize>),
    Failed(io::Error),
    Deadline,
    Rung,
    /// A held read waited `HOLD_READ` without the consumer taking a batch.
    HoldOver,
}

/// Whether reads wait for the consumer.
#[derive(Default)]
struct Hold {
    /// The next read waits (the consumer is behind and taking).
    active: bool,
    stall: Stall,
    span: HoldSpan,
}

/// Whether the consumer stopped taking, the rule both drivers hold reads by: reads wait for
/// a consumer that is behind but taking (the hold timer restarts at every take); a hold that
/// runs out without a take means it stopped, and reads go on unheld until its next take.
#[derive(Default)]
pub(crate) struct Stall {
    /// The consumer's take count when last seen.
    seen: u64,
    stalled: bool,
}

impl Stall {
    /// Notes the consumer's take count; true when it took since last seen (which ends a
    /// stall, and restarts a running hold).
    pub(crate) fn took(&mut self, takes: u64) -> bool {
        let took = takes != self.seen;
        self.seen = takes;
        self.stalled &= !took;
        took
    }

    /// A hold ran out: unless the consumer took meanwhile (`took`), it stopped.
    pub(crate) fn ran_out(&mut self, took: bool) {
        self.stalled |= !took;
    }

    /// Reads go on unheld.
    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled
    }
}

/// The I/O state of one session.
struct Pump<R: Runtime> {
    inner: Arc<Inner>,
    target: Target,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsTarget>,
    link: Option<Link<R::Tcp>>,
    connecting: Option<target::Opening<R::Tcp>>,
    /// A copy of the core's transmit bytes being written, lent by the core
    /// (`Client::lend_transmit`): it withdraws none of them, and counts an action none of
    /// whose bytes it lent as never sent. The core is told what was written only after each
    /// write, so `Stats::bytes_out` counts bytes the transport took; the unwritten rest is
    /// given back at the next turn (`give_back`).
    out: Vec<u8>,
    out_pos: usize,
    /// The core's next deadline when `out` was lent: from then on the copy may hold bytes
    /// of an action whose deadline passed, so no write starts before a turn has given the
    /// copy back and the core has withdrawn them.
    lend_until: Option<Instant>,
    buf: Vec<u8>,
    timer: R::Timer,
    armed: Option<Instant>,
    /// Actions the last turn completed (callers it woke).
    completed: usize,
    hold: Hold,
    hold_timer: R::Timer,
}

impl<R: Runtime> Pump<R> {
    async fn run(mut self) {
        let mut wake = Vec::new();
        let mut busy_turns = 0u32;
        let mut woke = None;
        loop {
            let going_on = self.turn(woke.take(), &mut wake);
            wake.drain(..).for_each(Waker::wake);
            if !going_on {
                self.flush_and_close().await;
                self.inner.finish();
                return;
            }
            if busy_turns >= TURNS_BEFORE_YIELD {
                // After the turn, never before it: the driver may be dropped at this await
                // (its task aborted, its runtime shut down), and a write or read held
                // across it would be lost unreported: bytes the transport took would go
                // back to the core as unwritten, and their action fail `NotSent` ("safe to
                // send again": a second call for an Originate).
                busy_turns = 0;
                yield_now().await;
            }
            let mut waited = false;
            woke = Some(
                poll_fn(|cx| {
                    let r = self.poll_sources(cx);
                    waited |= r.is_pending();
                    r
                })
                .await,
            );
            busy_turns = if waited { 0 } else { busy_turns + 1 };
            if R::YIELD_BEFORE_WRITE
                && waited
                && self.completed > 1
                && matches!(woke, Some(Woke::Rung))
            {
                // The last turn woke several callers and one of them has queued an action:
                // let the others queue theirs before the write (one write for all). With
                // one caller there is nothing to gather and the yield only costs. A ring
                // holds no I/O result, so nothing is lost if the driver is dropped here.
                busy_turns = 0;
                yield_now().await;
            }
        }
    }

    /// One turn under the core lock: report what happened, drain the outputs, take the
    /// bytes to write, arm the timer, hand a batch of events over. False once the session
    /// is over.
    fn turn(&mut self, woke: Option<Woke<R::Tcp>>, wake: &mut Vec<Waker>) -> bool {
        let inner = Arc::clone(&self.inner);
        // This turn takes whatever callers queued before it: a ring from before it needs no
        // turn of its own.
        inner.bell.clear();
        let mut shared = inner.lock();
        let now = R::now();
        let hold_over = matches!(woke, Some(Woke::HoldOver));
        let opened = matches!(woke, Some(Woke::Opened(Ok(_))));
        let report = woke.and_then(|w| self.input(w, &mut shared.client));
        // What the transport took is reported; the rest of the copy goes back to the core
        // before anything else, so that a lost link fails the actions it held `NotSent`,
        // a deadline withdraws them, and a cancel made meanwhile withdraws its action.
        let withdrawn = self.give_back(&mut shared.client);
        if let Some(input) = report.filter(|r| !matches!(r, Report::Timeout)) {
            shared.client.handle_input(now, input.as_input(&self.buf));
        }
        if self.armed.is_some_and(|at| at <= now) {
            self.armed = None;
        }
        // Asked of the core, not of the timer: the sources are polled read first, so while
        // the server keeps the socket readable the timer is never polled, and the timer
        // fires late by its granularity. Either way a deadline (an action's, the
        // heartbeat's, the Logoff's) fires at the first turn after it.
        if shared.client.poll_timeout().is_some_and(|d| d <= now) {
            shared.client.handle_timeout(now);
        }
        if !inner.has_users() {
            // Nobody can send or receive any more: close instead of reconnecting for no one.
            shared.client.close(now);
        }
        let mut finished = false;
        self.completed = 0;
        let mut late_rounds = 0;
        let deadline = loop {
            match shared.client.poll_output() {
                Output::Connect => {
                    self.connecting = Some(target::Opening::start::<R>(
                        &self.target,
                        #[cfg(feature = "tls")]
                        self.tls.clone(),
                    ));
                }
                Output::Close => {
                    target::shut_down(self.link.take());
                    self.connecting = None;
                    self.out.clear();
                    self.out_pos = 0;
                }
                Output::Notice(Notice::Completed { id, outcome }) => {
                    self.completed += 1;
                    shared.complete(&id, outcome, wake)
                }
                Output::Notice(Notice::Closed { .. }) => finished = true,
                Output::Wait(d) if d.is_some_and(|d| d <= now) && late_rounds < 2 => {
                    // Due already (set during this turn): handled before the bytes are
                    // lent, so nothing due is written.
                    late_rounds += 1;
                    shared.client.handle_timeout(now);
                }
                Output::Wait(d) => break d,
                _ => {}
            }
        };
        shared.publish_status(wake);
        if self.link.is_some() {
            self.lend(&mut shared.client, withdrawn);
            self.lend_until = deadline;
        } else {
            self.out.clear();
            self.out_pos = 0;
        }
        // Callers write their new actions themselves only while this driver holds nothing
        // unwritten, on the stream it has now, and it wakes early enough for their deadlines.
        shared.driver_writing = self.out_pos < self.out.len();
        if opened {
            shared.direct = self.link.as_ref().and_then(Transport::direct_writer);
        }
        if finished || self.link.is_none() {
            // Finished: only the final flush writes from here on.
            shared.direct = None;
        }
        if finished {
            return false;
        }
        self.arm(deadline);
        shared.driver_timer = self.armed;
        let takes = {
            let mut h = inner.handoff();
            if shared.client.has_stream_items() {
                if h.items.is_empty() {
                    shared.take_batch(&mut h.items);
                    wake.extend(h.waker.take());
                }
                h.backlog = shared.client.has_stream_items();
            }
            h.takes
        };
        let behind = !shared.client.wants_read() && self.link.is_some();
        self.decide_hold(behind, takes, hold_over, now);
        true
    }

    /// Holds reads while the consumer is behind and still taking; the hold timer restarts
    /// at every take, and a hold that runs out marks the consumer stalled (reads go on).
    fn decide_hold(&mut self, behind: bool, takes: u64, hold_over: bool, now: Instant) {
        let hold = &mut self.hold;
        let took = hold.stall.took(takes);
        // The timer fires at the run's end when that comes before `HOLD_READ` after the
        // last take: the consumer did not stop, its run of held reads is spent.
        let span_over = hold.span.ends_at().is_some_and(|end| now >= end);
        if hold_over && !span_over {
            hold.stall.ran_out(took);
        }
        let active = if behind && hold.stall.is_stalled() {
            // Reads go on for a consumer that stopped taking: its next take starts a new run.
            hold.span.read();
            false
        } else {
            hold.span.may_hold(behind, now)
        };
        if active && (!hold.active || took || hold_over) {
            let at = now + HOLD_READ;
            self.hold_timer
                .set_at(hold.span.ends_at().map_or(at, |end| end.min(at)));
        }
        hold.active = active;
    }

    /// Gives the unwritten rest of the copy back to the core (`Client::unlend_transmit`);
    /// returns the core's `actions_withdrawn` then. Between turns nothing is being written:
    /// every write the transport took was reported, so the rest never left. The copy itself
    /// is kept for [`lend`](Self::lend).
    fn give_back(&mut self, client: &mut ami_proto::Client) -> u64 {
        if self.out_pos < self.out.len() {
            client.unlend_transmit();
        }
        client.actions_withdrawn()
    }

    /// Lends what is to be written now ([`relend`]: the copy is kept while the core withdrew
    /// nothing since [`give_back`](Self::give_back) returned `withdrawn`).
    fn lend(&mut self, client: &mut ami_proto::Client, withdrawn: u64) {
        let kept = client.actions_withdrawn() == withdrawn;
        relend(
            &mut self.out,
            &mut self.out_pos,
            client.lend_transmit(),
            kept,
        );
    }

    /// Applies an I/O result to the transport state; returns what to report to the core.
    fn input(&mut self, woke: Woke<R::Tcp>, client: &mut ami_proto::Client) -> Option<Report> {
        match woke {
            Woke::Handshaking => Some(Report::Handshaking),
            Woke::Opened(Ok(link)) => {
                self.connecting = None;
                self.link = Some(link);
                Some(Report::Connected)
            }
            Woke::Opened(Err(e)) => {
                self.connecting = None;
                log::debug!("AMI {}: connect failed: {e}", self.target);
                Some(Report::ConnectFailed(target::connect_failure(&e)))
            }
            Woke::Wrote(Ok(0)) => self.lost(io::ErrorKind::WriteZero.into()),
            Woke::Wrote(Ok(n)) => {
                self.out_pos += n;
                client.advance_transmit(n);
                None
            }
            Woke::Read(Ok(0)) => {
                self.link = None;
                Some(Report::Eof)
            }
            Woke::Read(Ok(n)) => Some(Report::Received(n)),
            Woke::Wrote(Err(e)) | Woke::Read(Err(e)) | Woke::Failed(e) => self.lost(e),
            Woke::Deadline => Some(Report::Timeout),
            Woke::Rung | Woke::HoldOver => None,
        }
    }

    fn lost(&mut self, e: io::Error) -> Option<Report> {
        self.link = None;
        Some(Report::Error(e.kind()))
    }

    /// Polls every source, in priority order: connect, write, read, deadline, callers.
    fn poll_sources(&mut self, cx: &mut Context<'_>) -> Poll<Woke<R::Tcp>> {
        if let Some(c) = self.connecting.as_mut() {
            if let Poll::Ready(r) = c.poll_open(cx) {
                return Poll::Ready(match r {
                    target::Opened::Handshaking => Woke::Handshaking,
                    target::Opened::Done(r) => Woke::Opened(r),
                });
            }
        }
        if let Some(link) = self.link.as_mut() {
            if self.out_pos < self.out.len() {
                if self.lend_until.is_some_and(|at| R::now() >= at) {
                    // A deadline passed since the copy was lent (the timer fires late, and
                    // after the write in this order): a turn first, which withdraws what
                    // is due instead of writing it late.
                    self.lend_until = None;
                    return Poll::Ready(Woke::Deadline);
                }
                if let Poll::Ready(r) = link.poll_write(cx, &self.out[self.out_pos..]) {
                    return Poll::Ready(Woke::Wrote(r));
                }
            }
            if let Poll::Ready(Err(e)) = link.poll_flush(cx) {
                return Poll::Ready(Woke::Failed(e));
            }
            if self.hold.active {
                if self.hold_timer.poll_fired(cx).is_ready() {
                    return Poll::Ready(Woke::HoldOver);
                }
            } else if let Poll::Ready(r) = link.poll_read(cx, &mut self.buf) {
                return Poll::Ready(Woke::Read(r));
            }
        }
        if self.armed.is_some() && self.timer.poll_fired(cx).is_ready() {
            self.armed = None;
            return Poll::Ready(Woke::Deadline);
        }
        self.inner.bell.poll_rung(cx).map(|()| Woke::Rung)
    }

    /// Arms the timer when the deadline is earlier than the armed one. A later deadline
    /// (the heartbeat moves at every read) leaves the timer as is: it fires early, the core
    /// finds nothing due, and the timer is armed again. Fewer timer updates per read.
    fn arm(&mut self, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            if self.armed.is_none_or(|a| d < a) {
                self.timer.set_at(d);
                self.armed = Some(d);
            }
        }
    }

    /// Best effort, bounded: whatever is left to write (a Logoff), then a clean close.
    async fn flush_and_close(&mut self) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        self.timer.set_at(R::now() + FINAL_FLUSH_LIMIT);
        let (out, mut pos) = (&self.out, self.out_pos);
        let timer = &mut self.timer;
        poll_fn(|cx| {
            if timer.poll_fired(cx).is_ready() {
                return Poll::Ready(());
            }
            while pos < out.len() {
                match link.poll_write(cx, &out[pos..]) {
                    Poll::Ready(Ok(n)) if n > 0 => pos += n,
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
            link.poll_close(cx).map(|_| ())
        })
        .await;
    }
}

/// Takes what the core lends now (`fresh`: every byte from its first unwritten one, after
/// the copy `out[out_pos..]` was given back) into the copy. While the core withdrew nothing
/// meanwhile (`kept`), `fresh` starts with exactly the copy's unwritten rest, and only what
/// follows it is copied: a server that stops reading does not cost a copy of every
/// unwritten byte at each turn. Otherwise the copy is taken afresh. Written bytes at the
/// copy's front go once [`COMPACT_OUT`] of them gather (or all are written). Shared by the
/// session and fleet drivers.
pub(crate) fn relend(out: &mut Vec<u8>, out_pos: &mut usize, fresh: &[u8], kept: bool) {
    let held = out.len() - *out_pos;
    let copied = match fresh.get(held..) {
        Some(tail) if kept => {
            debug_assert_eq!(&fresh[..held], &out[*out_pos..]);
            if *out_pos >= COMPACT_OUT || held == 0 {
                out.drain(..*out_pos);
                *out_pos = 0;
            }
            out.extend_from_slice(tail);
            tail.len()
        }
        _ => {
            out.clear();
            *out_pos = 0;
            out.extend_from_slice(fresh);
            fresh.len()
        }
    };
    #[cfg(test)]
    RELENT.with(|c| c.set(c.get() + copied));
    #[cfg(not(test))]
    let _ = copied;
}

#[cfg(test)]
thread_local! {
    /// Bytes [`relend`] copied on this thread: the tests check that a copy kept across
    /// turns and reads is not taken again.
    pub(crate) static RELENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// An input to report, decided outside the borrow of the read buffer.
enum Report {
    Handshaking,
    Connected,
    ConnectFailed(ami_proto::ConnectFailure),
    Received(usize),
    Eof,
    Error(io::ErrorKind),
    /// Not an input: the deadline passed.
    Timeout,
}

impl Report {
    fn as_input<'a>(&self, buf: &'a [u8]) -> Input<'a> {
        match *self {
            Report::Handshaking => Input::Handshaking,
            Report::Connected => Input::Connected,
            Report::ConnectFailed(cause) => Input::ConnectFailed(cause),
            Report::Received(n) => Input::Received(&buf[..n]),
            Report::Eof => Input::Eof,
            Report::Error(kind) => Input::TransportError(kind),
            // Handled before; an empty read reports nothing.
            Report::Timeout => Input::Received(&[]),
        }
    }
}

/// Returns `Pending` once, after asking to be polled again: a turn for the other tasks.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::{HoldSpan, Stall, MAX_HOLD};
    use std::time::{Duration, Instant};

    #[test]
    fn held_reads_last_at_most_max_hold_in_a_row_then_wait_for_the_consumer_to_catch_up() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut span = HoldSpan::default();
        assert!(!span.may_hold(false, t0), "caught up: reads go on");
        assert!(span.may_hold(true, t0));
        assert_eq!(span.ends_at(), Some(t0 + MAX_HOLD));
        // Takes keep coming, the consumer stays behind: held until MAX_HOLD in a row.
        assert!(span.may_hold(true, ms(10)));
        assert!(span.may_hold(true, ms(29)));
        assert!(!span.may_hold(true, t0 + MAX_HOLD));
        // Spent: reads go on for as long as the consumer is behind...
        assert!(!span.may_hold(true, ms(40)));
        assert!(!span.may_hold(true, ms(500)));
        assert_eq!(span.ends_at(), None);
        // ...and once it has caught up, a new run may begin.
        assert!(!span.may_hold(false, ms(501)));
        assert!(span.may_hold(true, ms(502)));
        assert_eq!(span.ends_at(), Some(ms(502) + MAX_HOLD));
        // A read that went ahead (the consumer had stopped taking) starts a new run.
        span.read();
        assert!(span.may_hold(true, ms(600)));
        assert_eq!(span.ends_at(), Some(ms(600) + MAX_HOLD));
    }

    #[test]
    fn a_hold_that_runs_out_without_a_take_stalls_until_the_next_take() {
        let mut stall = Stall::default();
        assert!(!stall.took(0));
        stall.ran_out(false);
        assert!(stall.is_stalled());
        assert!(!stall.took(0), "no take: still stalled");
        assert!(stall.is_stalled());
        assert!(stall.took(1));
        assert!(!stall.is_stalled(), "a take ends the stall");
        let took = stall.took(2);
        stall.ran_out(took);
        assert!(!stall.is_stalled(), "a take during the hold is no stall");
    }
}
