//! Host-name resolution off the event loop: worker threads, a channel back, a mio `Waker`.

use mio::Waker;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// A name resolver: `"host:port"` in, addresses out. It runs on a helper thread and may block
/// as long as it likes; the event loop never waits for it.
pub type ResolveFn = dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// The system resolver (`getaddrinfo` through [`ToSocketAddrs`]).
pub fn system_resolve(host: &str) -> io::Result<Vec<SocketAddr>> {
    host.to_socket_addrs().map(Iterator::collect)
}

/// One lookup, tagged so a stale answer is recognised.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) index: usize,
    pub(crate) generation: u64,
    pub(crate) attempt: u64,
    pub(crate) host: String,
}

/// The answer to a [`Request`].
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) index: usize,
    pub(crate) generation: u64,
    pub(crate) attempt: u64,
    /// Every address of the name, in the resolver's order (never empty).
    pub(crate) result: io::Result<Vec<SocketAddr>>,
}

/// Worker threads that resolve names and wake the poll when an answer is ready.
///
/// Dropping it closes the request channel; idle workers exit, a worker stuck in a lookup
/// exits when the lookup returns.
pub(crate) struct Resolver {
    requests: Sender<Request>,
    answers: Receiver<Answer>,
}

impl Resolver {
    pub(crate) fn spawn(
        threads: usize,
        waker: Arc<Waker>,
        resolve: Arc<ResolveFn>,
    ) -> io::Result<Resolver> {
        let (requests, request_rx) = channel::<Request>();
        let (answer_tx, answers) = channel::<Answer>();
        let request_rx = Arc::new(Mutex::new(request_rx));
        for k in 0..threads.max(1) {
            let (rx, tx, waker, resolve) = (
                Arc::clone(&request_rx),
                answer_tx.clone(),
                Arc::clone(&waker),
                Arc::clone(&resolve),
            );
            std::thread::Builder::new()
                .name(format!("ami-mio-resolve-{k}"))
                .spawn(move || worker(&rx, &tx, &waker, &*resolve))?;
        }
        Ok(Resolver { requests, answers })
    }

    /// Queues a lookup; false if every worker has gone.
    pub(crate) fn request(&self, request: Request) -> bool {
        self.requests.send(request).is_ok()
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

fn worker(
    requests: &Mutex<Receiver<Request>>,
    answers: &Sender<Answer>,
    waker: &Waker,
    resolve: &ResolveFn,
) {
    loop {
        let request = {
            let Ok(rx) = requests.lock() else { return };
            match rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            }
        };
        let result = resolve(&request.host).and_then(|addrs| {
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
            attempt: request.attempt,
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
