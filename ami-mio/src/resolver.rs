//! Host-name resolution off the event loop: worker threads, a channel back, a mio `Waker`.

use mio::Waker;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// A name resolver: `"host:port"` in, addresses out. It runs on a helper thread and may block
/// as long as it likes; the event loop never waits for it.
pub type ResolveFn = dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// The system resolver (`getaddrinfo` through [`ToSocketAddrs`]).
pub fn system_resolve(host: &str) -> io::Result<Vec<SocketAddr>> {
    host.to_socket_addrs().map(Iterator::collect)
}

/// One lookup, tagged with the connection it is for.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) index: usize,
    pub(crate) generation: u64,
    pub(crate) host: String,
}

/// The answer to a [`Request`].
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) index: usize,
    pub(crate) generation: u64,
    /// Every address of the name, in the resolver's order (never empty).
    pub(crate) result: io::Result<Vec<SocketAddr>>,
}

/// Worker threads that resolve names and wake the poll when an answer is ready.
///
/// Threads start as lookups need them, up to a cap: a lookup that hangs (a DNS server that
/// does not answer: `getaddrinfo` waits seconds per try) holds one thread, and the next
/// lookup gets a new thread instead of queueing behind it. Each connection has at most one
/// lookup outstanding (the caller's rule), so the queue is bounded by the connections.
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

    /// Queues a lookup, starting a thread for it when none is idle and the cap allows;
    /// false if no worker is left to take it.
    pub(crate) fn request(&mut self, request: Request) -> bool {
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

    /// The next answer, if one is ready.
    pub(crate) fn try_answer(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
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
        // A resolver that panics answers with an error: its connection is told and retries,
        // and this thread stays to serve the others.
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
            index: request.index,
            generation: request.generation,
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
