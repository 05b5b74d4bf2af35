//! Host-name resolution off the event loop: worker threads, a channel back, a mio `Waker`,
//! and what the loop knows of each name (a lookup under way, or a recent answer).

use mio::Waker;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A name resolver: `"host:port"` in, addresses out. It runs on a helper thread and may block
/// as long as it likes; the event loop never waits for it.
pub type ResolveFn = dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// The system resolver (`getaddrinfo` through [`ToSocketAddrs`]).
pub fn system_resolve(host: &str) -> io::Result<Vec<SocketAddr>> {
    host.to_socket_addrs().map(Iterator::collect)
}

/// How long an answer serves the connect attempts that come after it before the name is
/// asked again. Longer than a connect timeout and a reconnect backoff together, so that an
/// answer slower than the connect timeout serves the next attempt instead of being asked
/// for again (and timing out again) at every attempt; short enough that a name moved to
/// another address is followed within half a minute.
pub(crate) const ANSWER_TTL: Duration = Duration::from_secs(30);

/// One lookup of a name.
#[derive(Debug)]
struct Request {
    host: String,
}

/// The answer to a [`Request`].
#[derive(Debug)]
struct Answer {
    host: String,
    /// Every address of the name, in the resolver's order (never empty).
    result: io::Result<Vec<SocketAddr>>,
}

/// What the loop knows of a name.
#[derive(Debug)]
enum Known {
    /// A lookup is under way: whoever wants the name waits for its answer.
    Asking,
    /// Its addresses, good for new connects until `until`.
    Answered {
        until: Instant,
        addrs: Vec<SocketAddr>,
    },
}

/// What [`Resolver::lookup`] says about a name.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A recent answer: every address of the name (never empty).
    Addrs(Vec<SocketAddr>),
    /// A lookup is under way; its answer comes from [`Resolver::take_answers`].
    Pending,
    /// No worker is left to ask.
    Unavailable,
}

/// The answers [`Resolver::take_answers`] took, by name.
pub(crate) type Answers = HashMap<String, io::Result<Vec<SocketAddr>>>;

/// Worker threads that resolve names and wake the poll when an answer is ready, and what
/// the loop knows of each name.
///
/// Lookups are per name, not per connection: a name has at most one lookup under way,
/// joined by every connection that wants the name (many sessions to one PBX), and kept
/// while it runs even when nobody waits for it any more (a connection removed and added
/// again joins it instead of asking again). Its answer serves every connect to the name for
/// [`ANSWER_TTL`], whether it came in time for the attempt that asked or not. A failure is
/// not kept: the attempts waiting for it fail, and the next attempt asks again.
///
/// Threads start as lookups need them, up to a cap: a lookup that hangs (a DNS server that
/// does not answer: `getaddrinfo` waits seconds per try) holds one thread, and the next
/// name gets a new thread instead of queueing behind it. With one lookup per name, the
/// queue is bounded by the names in use, and a name that hangs never holds more than one
/// thread.
///
/// Dropping it closes the request channel; idle workers exit, a worker stuck in a lookup
/// exits when the lookup returns.
pub(crate) struct Resolver {
    requests: Sender<Request>,
    answers: Receiver<Answer>,
    shared: Arc<Workers>,
    /// Threads started so far, and the most that may be.
    started: usize,
    max_threads: usize,
    answer_tx: Sender<Answer>,
    waker: Arc<Waker>,
    resolve: Arc<ResolveFn>,
    /// Names with a lookup under way or a recent answer.
    names: HashMap<String, Known>,
    /// When expired answers are next swept out of `names` (a name nobody connects to any
    /// more is asked no more, and must not stay forever).
    next_sweep: Option<Instant>,
}

/// What the workers share: the request queue, and how many workers wait on it against how
/// many requests wait in it (one lock for both, so a request is never counted as served by
/// a worker that is about to take an older one).
struct Workers {
    requests: Mutex<Receiver<Request>>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Workers waiting for a request.
    idle: usize,
    /// Requests sent and not yet taken by a worker.
    queued: usize,
}

impl Workers {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay meaningful after a panic elsewhere: no invariant spans the lock.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Resolver {
    pub(crate) fn spawn(
        max_threads: usize,
        waker: Arc<Waker>,
        resolve: Arc<ResolveFn>,
    ) -> io::Result<Resolver> {
        let (requests, request_rx) = channel::<Request>();
        let (answer_tx, answers) = channel::<Answer>();
        let mut resolver = Resolver {
            requests,
            answers,
            shared: Arc::new(Workers {
                requests: Mutex::new(request_rx),
                counts: Mutex::new(Counts::default()),
            }),
            started: 0,
            max_threads: max_threads.max(1),
            answer_tx,
            waker,
            resolve,
            names: HashMap::new(),
            next_sweep: None,
        };
        // One at once: the first lookup must not pay for a thread start.
        resolver.start_worker()?;
        Ok(resolver)
    }

    fn start_worker(&mut self) -> io::Result<()> {
        let (shared, tx, waker, resolve) = (
            Arc::clone(&self.shared),
            self.answer_tx.clone(),
            Arc::clone(&self.waker),
            Arc::clone(&self.resolve),
        );
        std::thread::Builder::new()
            .name(format!("ami-mio-resolve-{}", self.started))
            .spawn(move || worker(&shared, &tx, &waker, &*resolve))?;
        self.started += 1;
        Ok(())
    }

    /// The addresses of `host` at `now`: a recent answer, or the lookup under way (one is
    /// started if there is none). Never waits for a lookup.
    pub(crate) fn lookup(&mut self, now: Instant, host: &str) -> Lookup {
        self.sweep(now);
        match self.names.get(host) {
            Some(Known::Asking) => return Lookup::Pending,
            Some(Known::Answered { until, addrs }) if now < *until => {
                return Lookup::Addrs(addrs.clone())
            }
            _ => {}
        }
        let request = Request {
            host: host.to_owned(),
        };
        if self.request(request) {
            self.names.insert(host.to_owned(), Known::Asking);
            Lookup::Pending
        } else {
            self.names.remove(host);
            Lookup::Unavailable
        }
    }

    /// Takes the answers that came in, keeping each name's addresses from `now` for
    /// [`ANSWER_TTL`]; returns them by name, for the connects waiting for them.
    pub(crate) fn take_answers(&mut self, now: Instant) -> Answers {
        let mut answers = Answers::new();
        while let Ok(answer) = self.answers.try_recv() {
            match &answer.result {
                Ok(addrs) => {
                    let until = now.checked_add(ANSWER_TTL).unwrap_or(now);
                    let addrs = addrs.clone();
                    self.names
                        .insert(answer.host.clone(), Known::Answered { until, addrs });
                }
                Err(_) => {
                    self.names.remove(&answer.host);
                }
            }
            answers.insert(answer.host, answer.result);
        }
        self.sweep(now);
        answers
    }

    /// Drops the expired answers, at most once per [`ANSWER_TTL`] (a pass over every name).
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.names.retain(|_, known| match known {
            Known::Asking => true,
            Known::Answered { until, .. } => now < *until,
        });
        self.next_sweep = now.checked_add(ANSWER_TTL);
    }

    /// Queues a lookup, starting a thread for it when none is idle and the cap allows;
    /// false if no worker is left to take it.
    fn request(&mut self, request: Request) -> bool {
        let short = {
            let mut counts = self.shared.counts();
            counts.queued += 1;
            counts.queued > counts.idle
        };
        if short && self.started < self.max_threads {
            if let Err(e) = self.start_worker() {
                log::warn!("ami-mio: cannot start a resolver thread: {e}");
            }
        }
        if self.requests.send(request).is_ok() {
            true
        } else {
            let mut counts = self.shared.counts();
            counts.queued = counts.queued.saturating_sub(1);
            false
        }
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

fn worker(shared: &Workers, answers: &Sender<Answer>, waker: &Waker, resolve: &ResolveFn) {
    loop {
        shared.counts().idle += 1;
        let next = match shared.requests.lock() {
            Ok(rx) => rx.recv().ok(),
            Err(_) => None,
        };
        let Some(request) = next else {
            let mut counts = shared.counts();
            counts.idle = counts.idle.saturating_sub(1);
            return;
        };
        {
            let mut counts = shared.counts();
            counts.idle = counts.idle.saturating_sub(1);
            counts.queued = counts.queued.saturating_sub(1);
        }
        // A resolver that panics answers with an error: the connects waiting for the name
        // are told and retry, and this thread stays to serve the others.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| resolve(&request.host)))
            .unwrap_or_else(|_| {
                log::error!("ami-mio: the resolver panicked looking up {}", request.host);
                Err(io::Error::other("the resolver panicked"))
            })
            .and_then(|addrs| {
                if addrs.is_empty() {
                    Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "the name has no address",
                    ))
                } else {
                    Ok(addrs)
                }
            });
        if let Err(e) = &result {
            log::debug!("ami-mio: resolving {} failed: {e}", request.host);
        }
        let answer = Answer {
            host: request.host,
            result,
        };
        if answers.send(answer).is_err() {
            return;
        }
        if let Err(e) = waker.wake() {
            log::warn!("ami-mio: cannot wake the poll after a lookup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver whose lookups count themselves and answer after `delay`: names starting
    /// `bad` fail, the others give 127.0.0.1:5038.
    fn counting(delay: Duration) -> (Resolver, mio::Poll, Arc<AtomicUsize>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let resolve: Arc<ResolveFn> = Arc::new(move |host: &str| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            if host.starts_with("bad") {
                return Err(io::Error::other("no such name"));
            }
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], 5038))])
        });
        (Resolver::spawn(4, waker, resolve).unwrap(), poll, calls)
    }

    /// Takes answers at `now` until one comes (a few seconds at most).
    fn next_answers(resolver: &mut Resolver, now: Instant) -> Answers {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let answers = resolver.take_answers(now);
            if !answers.is_empty() {
                return answers;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no answer");
    }

    #[test]
    fn a_name_has_one_lookup_at_a_time_and_its_answer_serves_until_it_expires() {
        let (mut resolver, _poll, calls) = counting(Duration::from_millis(20));
        let t0 = Instant::now();
        // Many connections want the name while its lookup runs: one lookup.
        for _ in 0..5 {
            assert!(matches!(
                resolver.lookup(t0, "pbx.test:5038"),
                Lookup::Pending
            ));
        }
        let answers = next_answers(&mut resolver, t0);
        assert!(matches!(answers.get("pbx.test:5038"), Some(Ok(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Whoever comes next, however late for the attempt that asked, takes the answer.
        let later = t0 + ANSWER_TTL - Duration::from_millis(1);
        assert!(matches!(
            resolver.lookup(later, "pbx.test:5038"),
            Lookup::Addrs(a) if a == [SocketAddr::from(([127, 0, 0, 1], 5038))]
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Expired: the name is asked again (it may have moved).
        let expired = t0 + ANSWER_TTL;
        assert!(matches!(
            resolver.lookup(expired, "pbx.test:5038"),
            Lookup::Pending
        ));
        next_answers(&mut resolver, expired);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_lookup_is_not_kept_and_the_next_connect_asks_again() {
        let (mut resolver, _poll, calls) = counting(Duration::ZERO);
        let t0 = Instant::now();
        assert!(matches!(
            resolver.lookup(t0, "bad.test:5038"),
            Lookup::Pending
        ));
        let answers = next_answers(&mut resolver, t0);
        assert!(matches!(answers.get("bad.test:5038"), Some(Err(_))));
        assert!(matches!(
            resolver.lookup(t0, "bad.test:5038"),
            Lookup::Pending
        ));
        next_answers(&mut resolver, t0);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn expired_answers_of_names_nobody_asks_for_any_more_are_swept() {
        let (mut resolver, _poll, _calls) = counting(Duration::ZERO);
        let t0 = Instant::now();
        for k in 0..3 {
            resolver.lookup(t0, &format!("pbx-{k}.test:5038"));
        }
        let mut answered = 0;
        while answered < 3 {
            answered += next_answers(&mut resolver, t0).len();
        }
        assert_eq!(resolver.names.len(), 3);
        resolver.lookup(t0 + ANSWER_TTL, "other.test:5038");
        assert_eq!(resolver.names.len(), 1, "only the lookup under way is left");
    }
}
