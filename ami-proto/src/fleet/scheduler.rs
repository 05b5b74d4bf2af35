//! Many clients on one loop: per-step budgets with a rotating start.
//!
//! An adapter that drives many [`Client`](crate::Client)s from one event loop works in
//! *steps*: gather readiness, then give each connection a turn (read, feed the client, write).
//! Without limits one server flooding events keeps the loop inside its read, and a reconnect
//! storm (a hundred servers coming back at once) spends a whole step opening sockets. This
//! module is the runtime-neutral part of the answer: a [`Scheduler`] that hands each step a
//! [`Step`] with
//!
//! - an **order** of connection indices starting at a rotating cursor, and for each connection
//!   a [`Turn`]: how many bytes and messages it may take this step ([`Budget`]);
//! - a **step-wide** cap on bytes and messages: when it runs out, the remaining connections
//!   read nothing this step, and the next step *starts with the first one left out*;
//! - a cap on **connects started** per step, with its own cursor that also resumes at the
//!   first connection left out.
//!
//! Because both cursors resume where the budget ran out, a connection that keeps wanting a
//! turn gets one within `ceil(n / k)` steps, where `n` is the number of connections and `k`
//! how many fit in one step's budget (at least one). No server starves another.
//!
//! The scheduler does no I/O, reads no clock and starts no thread: the adapter reports what it
//! spent and asks what is left.
//!
//! ```
//! use ami_proto::fleet::{Budget, Scheduler};
//!
//! let mut scheduler = Scheduler::new(Budget::default());
//! let wants_connect = [true; 100];
//! let step = {
//!     let mut step = scheduler.begin(100);
//!     for i in step.order() {
//!         let Some(mut turn) = step.turn(i) else { continue };
//!         // Read while `turn.bytes_left() > 0`, then report what was taken:
//!         turn.charge(4096, 7);
//!         step.end_turn(turn);
//!     }
//!     for i in step.connect_order() {
//!         if wants_connect[i] && !step.take_connect(i) {
//!             break; // budget spent; `i` goes first next step
//!         }
//!     }
//!     step
//! };
//! scheduler.finish(step);
//! ```

/// Per-step limits for one event loop driving many connections.
///
/// Every limit is clamped to at least 1 by [`Scheduler::new`], so each step makes progress.
/// A read may overshoot a limit by one read chunk: the adapter checks the turn before each
/// read, not inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// Bytes one connection may read in one step. Default 64 KiB: about a hundred typical
    /// events, a few milliseconds of a busy server, a few read calls.
    pub read_bytes_per_conn: usize,
    /// Messages one connection may have decoded in one step. Default 1,024: bounds the work of
    /// a server sending many tiny messages, which a byte budget alone lets through.
    pub messages_per_conn: usize,
    /// Bytes all connections together may read in one step. Default 128 KiB (two full
    /// turns): a step stays well under a millisecond however many servers are busy, and
    /// what it decoded stays in cache until the application takes it. The events of one
    /// step wait, with the read buffers they came from, until the application drains them
    /// after the step; 512 KiB of small events (about 7,000, some 2 MiB alive at once) no
    /// longer fit a core's L2 cache, and ten busy servers then read 9-15 % slower than one
    /// (`fleet_loopback`: mio 0.90 of the single-server rate at 512 KiB, 0.94 at 128 KiB).
    pub read_bytes_per_step: usize,
    /// Messages all connections together may have decoded in one step. Default 2,048 (two
    /// full turns, as for the bytes).
    pub messages_per_step: usize,
    /// Transport opens started in one step. Default 16: a non-blocking connect costs a few
    /// system calls, so 16 keep a step well under a millisecond, and a hundred servers that
    /// come back at once are all reconnecting within seven steps.
    pub connects_per_step: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            read_bytes_per_conn: 64 << 10,
            messages_per_conn: 1024,
            read_bytes_per_step: 128 << 10,
            messages_per_step: 2048,
            connects_per_step: 16,
        }
    }
}

impl Budget {
    /// The same budget with every limit at least 1.
    pub(crate) fn clamped(self) -> Budget {
        Budget {
            read_bytes_per_conn: self.read_bytes_per_conn.max(1),
            messages_per_conn: self.messages_per_conn.max(1),
            read_bytes_per_step: self.read_bytes_per_step.max(1),
            messages_per_step: self.messages_per_step.max(1),
            connects_per_step: self.connects_per_step.max(1),
        }
    }
}

/// Remembers where the last step left off; hands out [`Step`]s.
///
/// Call [`begin`](Self::begin) at the start of every step and [`finish`](Self::finish) with
/// the same step at its end; a step that is dropped instead leaves the cursors where they
/// were (the next step repeats its order).
#[derive(Debug, Clone)]
pub struct Scheduler {
    budget: Budget,
    read_start: usize,
    connect_start: usize,
}

impl Scheduler {
    /// A scheduler with `budget` (each limit clamped to at least 1).
    pub fn new(budget: Budget) -> Scheduler {
        Scheduler {
            budget: budget.clamped(),
            read_start: 0,
            connect_start: 0,
        }
    }

    /// The budget in force.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Starts a step over `n` connections (indices `0..n`).
    pub fn begin(&self, n: usize) -> Step {
        let wrap = |i: usize| if n == 0 { 0 } else { i % n };
        Step {
            n,
            budget: self.budget,
            read_start: wrap(self.read_start),
            connect_start: wrap(self.connect_start),
            bytes_left: self.budget.read_bytes_per_step,
            messages_left: self.budget.messages_per_step,
            connects_left: self.budget.connects_per_step,
            first_denied_turn: None,
            first_denied_connect: None,
        }
    }

    /// Ends a step: each cursor moves to the first connection the step's budget left out, or
    /// one place on if nobody was left out, so the start always rotates.
    pub fn finish(&mut self, step: Step) {
        let advance = |start: usize, denied: Option<usize>| match denied {
            Some(i) if i != start => i,
            _ => start.wrapping_add(1),
        };
        self.read_start = advance(step.read_start, step.first_denied_turn);
        self.connect_start = advance(step.connect_start, step.first_denied_connect);
        if step.n > 0 {
            self.read_start %= step.n;
            self.connect_start %= step.n;
        }
    }
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new(Budget::default())
    }
}

/// One step's budget and visiting order, from [`Scheduler::begin`].
#[derive(Debug, Clone)]
pub struct Step {
    n: usize,
    budget: Budget,
    read_start: usize,
    connect_start: usize,
    bytes_left: usize,
    messages_left: usize,
    connects_left: usize,
    first_denied_turn: Option<usize>,
    first_denied_connect: Option<usize>,
}

impl Step {
    /// Every index `0..n` once, starting at this step's read cursor. Visit connections in this
    /// order and ask [`turn`](Self::turn) for each.
    pub fn order(&self) -> Order {
        Order::new(self.n, self.read_start)
    }

    /// Every index `0..n` once, starting at this step's connect cursor. Offer connects in this
    /// order with [`take_connect`](Self::take_connect).
    pub fn connect_order(&self) -> Order {
        Order::new(self.n, self.connect_start)
    }

    /// The read allowance of connection `index` for this step, or `None` when the step-wide
    /// budget is spent (the connection reads nothing now and goes first next step).
    pub fn turn(&mut self, index: usize) -> Option<Turn> {
        if self.bytes_left == 0 || self.messages_left == 0 {
            self.first_denied_turn.get_or_insert(index);
            return None;
        }
        Some(Turn {
            bytes_left: self.budget.read_bytes_per_conn.min(self.bytes_left),
            messages_left: self.budget.messages_per_conn.min(self.messages_left),
            bytes: 0,
            messages: 0,
        })
    }

    /// Ends a connection's turn: what it took comes off the step-wide budget.
    pub fn end_turn(&mut self, turn: Turn) {
        self.bytes_left = self.bytes_left.saturating_sub(turn.bytes);
        self.messages_left = self.messages_left.saturating_sub(turn.messages);
    }

    /// True when the step-wide read budget is spent.
    pub fn is_spent(&self) -> bool {
        self.bytes_left == 0 || self.messages_left == 0
    }

    /// Asks to start a connect for connection `index`. False when this step's connect budget
    /// is spent: the connection should wait, and goes first next step.
    pub fn take_connect(&mut self, index: usize) -> bool {
        if self.connects_left == 0 {
            self.first_denied_connect.get_or_insert(index);
            return false;
        }
        self.connects_left -= 1;
        true
    }

    /// Connects this step may still start.
    pub fn connects_left(&self) -> usize {
        self.connects_left
    }
}

/// What one connection may read in one step, from [`Step::turn`]; hand it back with
/// [`Step::end_turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    bytes_left: usize,
    messages_left: usize,
    bytes: usize,
    messages: usize,
}

impl Turn {
    /// Records a read of `bytes` that produced `messages` decoded messages.
    pub fn charge(&mut self, bytes: usize, messages: usize) {
        self.bytes += bytes;
        self.messages += messages;
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
        self.messages_left = self.messages_left.saturating_sub(messages);
    }

    /// Bytes this connection may still read in this turn.
    pub fn bytes_left(&self) -> usize {
        self.bytes_left
    }

    /// True once the byte or the message allowance is used up: stop reading, remember that
    /// data may be left, and continue in the next step.
    pub fn is_spent(&self) -> bool {
        self.bytes_left == 0 || self.messages_left == 0
    }

    /// Bytes charged so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages charged so far.
    pub fn messages(&self) -> usize {
        self.messages
    }
}

/// The indices `0..n` once each, starting at a cursor and wrapping around.
#[derive(Debug, Clone)]
pub struct Order {
    n: usize,
    start: usize,
    k: usize,
}

impl Order {
    fn new(n: usize, start: usize) -> Order {
        Order { n, start, k: 0 }
    }
}

impl Iterator for Order {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.k >= self.n {
            return None;
        }
        let i = (self.start + self.k) % self.n;
        self.k += 1;
        Some(i)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.n - self.k;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Order {}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(connects: usize) -> Budget {
        Budget {
            connects_per_step: connects,
            ..Budget::default()
        }
    }

    /// Worst case storm: every connection wants a connect at every step, including those that
    /// just got one (their connect failed at once).
    #[test]
    fn storm_every_connection_connects_within_ceil_n_over_budget_steps() {
        let n: usize = 100;
        let per_step = 8;
        let bound = n.div_ceil(per_step); // 13
        let mut s = Scheduler::new(budget(per_step));
        let mut last = vec![0usize; n];
        for t in 1..=200usize {
            let mut step = s.begin(n);
            let mut granted = 0;
            for i in step.connect_order() {
                if !step.take_connect(i) {
                    break;
                }
                last[i] = t;
                granted += 1;
            }
            assert_eq!(granted, per_step);
            s.finish(step);
            for (i, l) in last.iter().enumerate() {
                assert!(t - l < bound, "conn {i} waited {} steps at step {t}", t - l);
            }
        }
    }

    /// Connections want connects irregularly; one that keeps wanting still gets one within the
    /// bound, counted from when it started wanting.
    #[test]
    fn irregular_demand_still_bounded() {
        let n: usize = 100;
        let per_step = 7;
        let bound = n.div_ceil(per_step);
        let mut s = Scheduler::new(budget(per_step));
        let mut waiting_since: Vec<Option<usize>> = vec![None; n];
        let mut rng = 0x1234_5678_u64;
        for t in 0..500usize {
            for w in waiting_since.iter_mut() {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if w.is_none() && (rng >> 33) % 3 == 0 {
                    *w = Some(t);
                }
            }
            let mut step = s.begin(n);
            for i in step.connect_order() {
                if let Some(since) = waiting_since[i] {
                    if !step.take_connect(i) {
                        break;
                    }
                    assert!(t - since < bound, "conn {i} waited {} steps", t - since);
                    waiting_since[i] = None;
                }
            }
            s.finish(step);
        }
    }

    #[test]
    fn read_start_rotates_when_nobody_is_left_out() {
        let mut s = Scheduler::default();
        let mut starts = Vec::new();
        for _ in 0..5 {
            let mut step = s.begin(3);
            starts.push(step.order().next());
            let order: Vec<_> = step.order().collect();
            assert_eq!(order.len(), 3);
            for i in order {
                let turn = step.turn(i);
                assert!(turn.is_some());
                if let Some(t) = turn {
                    step.end_turn(t);
                }
            }
            s.finish(step);
        }
        assert_eq!(starts, [Some(0), Some(1), Some(2), Some(0), Some(1)]);
    }

    /// Ten connections that each always have a full turn's worth of data; the step budget fits
    /// three turns. Every connection reads within ceil(10/3) steps and no one reads twice as
    /// often as another.
    #[test]
    fn greedy_readers_share_the_step_budget() {
        let n: usize = 10;
        let per_conn = 1000;
        let b = Budget {
            read_bytes_per_conn: per_conn,
            read_bytes_per_step: 3 * per_conn,
            ..Budget::default()
        };
        let mut s = Scheduler::new(b);
        let mut reads = vec![0usize; n];
        let mut last = vec![0usize; n];
        let bound = n.div_ceil(3);
        for t in 1..=300usize {
            let mut step = s.begin(n);
            for i in step.order() {
                let Some(mut turn) = step.turn(i) else {
                    continue;
                };
                while !turn.is_spent() {
                    turn.charge(turn.bytes_left().min(400), 3);
                }
                reads[i] += 1;
                last[i] = t;
                step.end_turn(turn);
            }
            assert!(step.is_spent());
            s.finish(step);
            for (i, l) in last.iter().enumerate() {
                assert!(t - l < bound + 1, "conn {i} starved at step {t}");
            }
        }
        let (min, max) = (reads.iter().min(), reads.iter().max());
        assert!(
            matches!((min, max), (Some(a), Some(b)) if *b <= *a + 1),
            "{reads:?}"
        );
    }

    #[test]
    fn message_budget_limits_tiny_messages() {
        let b = Budget {
            messages_per_conn: 10,
            messages_per_step: 25,
            ..Budget::default()
        };
        let mut s = Scheduler::new(b);
        let mut step = s.begin(4);
        let mut served = Vec::new();
        for i in step.order() {
            let Some(mut turn) = step.turn(i) else {
                continue;
            };
            while !turn.is_spent() {
                turn.charge(20, 4);
            }
            assert!(turn.messages() <= 12); // one read of overshoot at most
            served.push(i);
            step.end_turn(turn);
        }
        assert_eq!(served, [0, 1, 2]);
        s.finish(step);
        assert_eq!(s.begin(4).order().next(), Some(3));
    }

    #[test]
    fn zero_limits_are_clamped_and_empty_fleets_work() {
        let b = Budget {
            read_bytes_per_conn: 0,
            messages_per_conn: 0,
            read_bytes_per_step: 0,
            messages_per_step: 0,
            connects_per_step: 0,
        };
        let mut s = Scheduler::new(b);
        assert_eq!(s.budget().connects_per_step, 1);
        let step = s.begin(0);
        assert_eq!(step.order().count(), 0);
        s.finish(step);
        let mut step = s.begin(2);
        assert!(step.take_connect(1));
        assert!(!step.take_connect(0));
        s.finish(step);
        assert_eq!(s.begin(2).connect_order().next(), Some(0));
    }

    /// An adapter that offers turns twice in one step (a second pass for connections with
    /// data left) is refused the second turn of the connection that went first: that refusal
    /// must not keep the cursor on it, or it would go first at every step and, taking the
    /// whole step's budget each time, starve the others.
    #[test]
    fn a_second_turn_refused_to_the_first_connection_still_moves_the_cursor_on() {
        let b = Budget {
            read_bytes_per_conn: 100,
            read_bytes_per_step: 100,
            ..Budget::default()
        };
        let mut s = Scheduler::new(b);
        let mut step = s.begin(3);
        // Only connection 0 has data in the first pass; it takes the whole step.
        let mut turn = step.turn(0).expect("a fresh step refused its first turn");
        turn.charge(100, 1);
        step.end_turn(turn);
        // The second pass asks for it again: refused, the step is spent.
        assert!(step.turn(0).is_none());
        s.finish(step);
        assert_eq!(s.begin(3).order().next(), Some(1));
    }

    /// A cursor that wrapped past the last connection starts the next step at the first one,
    /// also when the fleet grew in between (a server added): the new one waits its turn.
    #[test]
    fn a_cursor_past_the_last_connection_starts_at_the_first_of_a_resized_fleet() {
        let mut s = Scheduler::default();
        for _ in 0..3 {
            let step = s.begin(3);
            s.finish(step);
        }
        let step = s.begin(4);
        assert_eq!(step.order().next(), Some(0));
        assert_eq!(step.connect_order().next(), Some(0));
    }

    /// The step-wide budget is spent when either its bytes or its messages are, not before.
    #[test]
    fn a_step_is_spent_once_its_bytes_or_its_messages_are_used_up() {
        let b = Budget {
            read_bytes_per_conn: 100,
            read_bytes_per_step: 150,
            messages_per_conn: 10,
            messages_per_step: 15,
            ..Budget::default()
        };
        let s = Scheduler::new(b);
        let mut step = s.begin(3);
        assert!(!step.is_spent());
        let Some(mut turn) = step.turn(0) else {
            panic!("the first turn of a fresh step is refused");
        };
        turn.charge(100, 1);
        step.end_turn(turn);
        assert!(!step.is_spent(), "50 bytes and 14 messages are left");
        let Some(mut turn) = step.turn(1) else {
            panic!("a turn is refused with budget left");
        };
        turn.charge(10, 14);
        step.end_turn(turn);
        assert!(step.is_spent(), "the messages are used up");
        assert!(step.turn(2).is_none());

        let mut step = s.begin(3);
        let Some(mut turn) = step.turn(0) else {
            panic!("the first turn of a fresh step is refused");
        };
        turn.charge(150, 1);
        step.end_turn(turn);
        assert!(step.is_spent(), "the bytes are used up");
    }

    #[test]
    fn connects_left_counts_down_to_zero_as_connects_are_taken() {
        let s = Scheduler::new(budget(2));
        let mut step = s.begin(5);
        assert_eq!(step.connects_left(), 2);
        assert!(step.take_connect(0));
        assert_eq!(step.connects_left(), 1);
        assert!(step.take_connect(1));
        assert_eq!(step.connects_left(), 0);
        assert!(!step.take_connect(2));
        assert_eq!(step.connects_left(), 0);
    }

    #[test]
    fn a_turn_reports_what_it_was_charged_and_what_it_may_still_read() {
        let b = Budget {
            read_bytes_per_conn: 1000,
            messages_per_conn: 10,
            ..Budget::default()
        };
        let s = Scheduler::new(b);
        let mut step = s.begin(1);
        let mut turn = step.turn(0).expect("a fresh step refused its first turn");
        assert_eq!(
            (turn.bytes_left(), turn.bytes(), turn.messages()),
            (1000, 0, 0)
        );
        turn.charge(300, 2);
        turn.charge(200, 3);
        assert_eq!(
            (turn.bytes_left(), turn.bytes(), turn.messages()),
            (500, 500, 5)
        );
        assert!(!turn.is_spent());
        turn.charge(600, 1);
        assert_eq!(
            (turn.bytes_left(), turn.bytes(), turn.messages()),
            (0, 1100, 6)
        );
        assert!(turn.is_spent());
        step.end_turn(turn);
    }

    /// `Order` is an `ExactSizeIterator`: an adapter sizes its per-step buffers from `len()`.
    #[test]
    fn an_order_knows_how_many_indices_are_left() {
        let s = Scheduler::default();
        let step = s.begin(4);
        let mut order = step.order();
        assert_eq!(order.len(), 4);
        assert_eq!(order.size_hint(), (4, Some(4)));
        order.next();
        assert_eq!(order.len(), 3);
        order.by_ref().for_each(drop);
        assert_eq!(order.len(), 0);
        assert_eq!(step.connect_order().len(), 4);
    }

    #[test]
    fn a_shrinking_fleet_keeps_cursors_in_range() {
        let mut s = Scheduler::default();
        for _ in 0..7 {
            let step = s.begin(9);
            s.finish(step);
        }
        let order: Vec<_> = s.begin(4).order().collect();
        assert_eq!(order.len(), 4);
        assert!(order.iter().all(|i| *i < 4));
    }
}
