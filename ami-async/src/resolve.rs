//! One lookup per name at a time. A runtime's lookup runs where it cannot be stopped (a
//! blocking thread in `getaddrinfo`, which may take tens of seconds when the resolver does
//! not answer), and the core's connect timeout gives up the attempt, not the thread. If every
//! reconnect started its own lookup, a hung resolver would leave one more blocked thread per
//! attempt, per session and fleet server, until the runtime's blocking pool (which the
//! application shares) is full. So a connect that finds a lookup of the same name running
//! waits for that one, and every attempt waiting gets its answer; a lookup is forgotten as
//! soon as it ends, so the next connect asks again and DNS changes are seen.

use crate::runtime::{BoxFuture, Runtime};
use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Most names being looked up at once (a lookup nobody waits for any more counts until it
/// is found ended). Past it a lookup is not shared: a guard, far above the names an
/// application connects to.
const MAX_FLIGHTS: usize = 1024;

/// How long a running lookup is waited for by later attempts: past it, the next attempt
/// starts a lookup of its own. `getaddrinfo` gives up by itself well before (a resolver that
/// does not answer costs its timeout per try and name server, some 30 s with glibc's
/// defaults and three servers); a runtime's lookup that never ends must not take the name
/// with it.
const JOIN_WITHIN: Duration = Duration::from_secs(60);

/// A lookup: the runtime (its lookups are its own futures), the name and the port.
type Key = (TypeId, String, u16);

/// An answer every waiting attempt gets a copy of (`io::Error` is not `Clone`).
type Answer = Result<Vec<SocketAddr>, (io::ErrorKind, String)>;

/// The lookups running, by name. A panic elsewhere leaves the map consistent (each change
/// is one call), so a poisoned lock is taken as it is.
fn flights() -> MutexGuard<'static, HashMap<Key, Arc<Flight>>> {
    static FLIGHTS: LazyLock<Mutex<HashMap<Key, Arc<Flight>>>> = LazyLock::new(Default::default);
    FLIGHTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A lookup being made, shared by the attempts that wait for it.
struct Flight {
    /// The runtime's lookup, until it ends; then its answer.
    lookup: Mutex<Lookup>,
    /// Who waits: separate from `lookup`, since the lookup may wake [`Flight::waker`] while
    /// it is polled.
    waiting: Mutex<Waiting>,
    /// When the lookup started (on the runtime's clock).
    started: Instant,
    /// Wakes every waiting attempt: the lookup is polled with it, so that its wake-up is not
    /// lost with an attempt given up since it last polled.
    waker: Waker,
}

enum Lookup {
    Running(BoxFuture<io::Result<Vec<SocketAddr>>>),
    Ended(Answer),
}

#[derive(Default)]
struct Waiting {
    /// Attempts holding this flight.
    attempts: usize,
    /// Their wakers, by attempt (bounded by `attempts`).
    wakers: Vec<(u64, Waker)>,
    next_id: u64,
}

struct WakeAll(Weak<Flight>);

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(flight) = self.0.upgrade() {
            let wakers: Vec<Waker> = flight
                .waiting()
                .wakers
                .iter()
                .map(|(_, w)| w.clone())
                .collect();
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

impl Flight {
    fn start(lookup: BoxFuture<io::Result<Vec<SocketAddr>>>, started: Instant) -> Arc<Flight> {
        Arc::new_cyclic(|weak| Flight {
            started,
            lookup: Mutex::new(Lookup::Running(lookup)),
            waiting: Mutex::new(Waiting::default()),
            waker: Waker::from(Arc::new(WakeAll(weak.clone()))),
        })
    }

    fn lookup(&self) -> MutexGuard<'_, Lookup> {
        self.lookup.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Polls the lookup on: its answer once it ended.
    fn poll(&self) -> Poll<Answer> {
        let mut lookup = self.lookup();
        let answer = match &mut *lookup {
            Lookup::Ended(answer) => return Poll::Ready(answer.clone()),
            Lookup::Running(f) => match f.as_mut().poll(&mut Context::from_waker(&self.waker)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.map_err(|e| (e.kind(), e.to_string())),
            },
        };
        *lookup = Lookup::Ended(answer.clone());
        Poll::Ready(answer)
    }

    /// A lookup no attempt waits for that ended (maybe long ago): its answer is not used.
    fn ended_unwatched(&self) -> bool {
        // Not polled under `waiting`: the lookup may wake `waker`, which takes it.
        let unwatched = self.waiting().attempts == 0;
        unwatched && self.poll().is_ready()
    }
}

/// An attempt waiting for a [`Flight`].
struct Attempt {
    key: Key,
    flight: Arc<Flight>,
    id: u64,
}

impl Attempt {
    fn join(key: Key, flight: Arc<Flight>) -> Attempt {
        let id = {
            let mut w = flight.waiting();
            w.attempts += 1;
            w.next_id += 1;
            w.next_id
        };
        Attempt { key, flight, id }
    }
}

impl Future for Attempt {
    type Output = io::Result<Vec<SocketAddr>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &*self;
        {
            let mut w = this.flight.waiting();
            let id = this.id;
            match w.wakers.iter_mut().find(|(i, _)| *i == id) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => w.wakers.push((id, cx.waker().clone())),
            }
        }
        let Poll::Ready(answer) = this.flight.poll() else {
            return Poll::Pending;
        };
        // Ended: forgotten, so that the next connect looks the name up again.
        let mut flights = flights();
        if flights
            .get(&this.key)
            .is_some_and(|f| Arc::ptr_eq(f, &this.flight))
        {
            flights.remove(&this.key);
        }
        drop(flights);
        this.flight.waker.wake_by_ref();
        Poll::Ready(answer.map_err(|(kind, text)| io::Error::new(kind, text)))
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        // The lookup itself stays (it runs on anyway): the next attempt waits for it.
        let mut w = self.flight.waiting();
        w.attempts -= 1;
        w.wakers.retain(|(i, _)| *i != self.id);
    }
}

/// Looks `host` up with the runtime's resolver, or waits for its lookup already running.
pub(crate) async fn lookup<R: Runtime>(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    match join::<R>(host, port) {
        Some(attempt) => attempt.await,
        None => R::resolve(host.to_string(), port).await,
    }
}

/// The lookup of `host` to wait for, started if none is running; `None` when
/// [`MAX_FLIGHTS`] are.
fn join<R: Runtime>(host: &str, port: u16) -> Option<Attempt> {
    let key = (TypeId::of::<R>(), host.to_string(), port);
    let mut flights = flights();
    if flights.len() >= MAX_FLIGHTS && !flights.contains_key(&key) {
        flights.retain(|_, f| !f.ended_unwatched());
    }
    let now = R::now();
    let running = flights
        .get(&key)
        .filter(|f| now.saturating_duration_since(f.started) < JOIN_WITHIN && !f.ended_unwatched())
        .cloned();
    let flight = match running {
        Some(flight) => flight,
        None if flights.len() >= MAX_FLIGHTS => return None,
        None => {
            let flight = Flight::start(R::resolve(host.to_string(), port), now);
            flights.insert(key.clone(), flight.clone());
            flight
        }
    };
    Some(Attempt::join(key, flight))
}
