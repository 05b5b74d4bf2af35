//! The fleet's status log and [`StatusWatch`]: every server's status changes, once, in the
//! order they happened, whichever shard drives the server. Shards append under their own
//! lock (shard, then log: the log's lock is always taken last).

use super::shards::Shards;
use super::shared::Io;
use crate::shared::lock;
use ami_proto::fleet::{ServerName, ServerStatus};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Status changes kept for watchers that are behind. 4,096 changes of ~100 bytes: a few
/// hundred KiB; a watcher further behind is told how many it missed.
pub(crate) const STATUS_LOG_CAP: usize = 4096;
/// Bytes of the changes kept (see [`cost`]), whatever their count: a status carries server
/// text (a banner's version, a Login refusal's `Message`) as long as the decoder's line
/// limit, and 4,096 of those could be gigabytes. The newest change is kept whatever its size.
pub(crate) const STATUS_LOG_BYTES: usize = 1 << 20;

/// What one change keeps alive in the log: its entry, the server's name and the server's
/// text in the status.
fn cost(server: &ServerName, status: &ServerStatus) -> usize {
    let text = match status {
        ServerStatus::Ready { ami_version } => ami_version.len(),
        ServerStatus::BackingOff { reason, .. }
        | ServerStatus::BreakerOpen { reason, .. }
        | ServerStatus::Closed { reason } => match reason {
            ami_proto::DisconnectReason::LoginRejected { message } => message.len(),
            _ => 0,
        },
        _ => 0,
    };
    std::mem::size_of::<(ServerName, ServerStatus)>() + server.as_str().len() + text
}

/// Every shard's status changes, numbered from `first`.
pub(crate) struct StatusLog {
    state: Mutex<LogState>,
}

struct LogState {
    changes: VecDeque<(ServerName, ServerStatus)>,
    /// The [`cost`] of `changes`.
    bytes: usize,
    first: u64,
    wakers: HashMap<u64, Waker>,
    next_watch: u64,
    /// Shards that will log nothing more (closed, or their driver gone), of `shards`.
    over: usize,
    shards: usize,
}

impl StatusLog {
    pub(crate) fn new(shards: usize) -> StatusLog {
        StatusLog {
            state: Mutex::new(LogState {
                changes: VecDeque::new(),
                bytes: 0,
                first: 0,
                wakers: HashMap::new(),
                next_watch: 0,
                over: 0,
                shards,
            }),
        }
    }

    /// Appends a change; the watchers are woken by `io`.
    pub(crate) fn push(&self, server: ServerName, status: ServerStatus, io: &mut Io) {
        let mut s = lock(&self.state);
        let bytes = cost(&server, &status);
        // The oldest make room (a watch behind them is told how many it missed).
        while s.changes.len() >= STATUS_LOG_CAP
            || (!s.changes.is_empty() && s.bytes + bytes > STATUS_LOG_BYTES)
        {
            let Some((old_server, old_status)) = s.changes.pop_front() else {
                break;
            };
            s.bytes -= cost(&old_server, &old_status);
            s.first += 1;
        }
        s.bytes += bytes;
        s.changes.push_back((server, status));
        io.wake.extend(s.wakers.drain().map(|(_, w)| w));
    }

    /// One shard will log nothing more (call once per shard); the watchers find out.
    pub(crate) fn shard_over(&self, io: &mut Io) {
        let mut s = lock(&self.state);
        s.over += 1;
        io.wake.extend(s.wakers.drain().map(|(_, w)| w));
    }
}

/// What a [`StatusWatch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusChange {
    /// A server's status changed.
    Changed {
        /// Which server.
        server: ServerName,
        /// Its new status.
        status: ServerStatus,
    },
    /// This watch fell more than 4,096 changes (or 1 MiB of them) behind: that many were
    /// dropped (counted, never silent).
    /// [`FleetHandle::statuses`](super::FleetHandle::statuses) gives the present.
    Lagged(u64),
}

/// Status changes of every server, in order, from the moment the watch was made.
pub struct StatusWatch {
    log: Arc<StatusLog>,
    /// The fleet, which a watch closes when nothing more can come (no handle left, every
    /// server closed for good), as its stream's reader does.
    shards: Arc<Shards>,
    id: u64,
    next: u64,
    /// Shards over when [`poll_news`](Self::poll_news) last looked (or the watch was made).
    over_seen: usize,
}

impl std::fmt::Debug for StatusWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWatch")
            .field("next", &self.next)
            .finish()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        lock(&self.log.state).wakers.remove(&self.id);
    }
}

impl StatusWatch {
    /// A watch on the changes logged from now on.
    pub(crate) fn new(shards: Arc<Shards>) -> StatusWatch {
        let log = shards.log.clone();
        let (id, next, over_seen) = {
            let mut s = lock(&log.state);
            s.next_watch += 1;
            (s.next_watch, s.first + s.changes.len() as u64, s.over)
        };
        StatusWatch {
            log,
            shards,
            id,
            next,
            over_seen,
        }
    }

    /// For a waiter that looks at the present after anything happened
    /// ([`FleetHandle::wait_ready`](super::FleetHandle::wait_ready)): `Ready(true)` when
    /// something did since the last call (status changes, all skipped, or a shard that
    /// will log nothing more, such as one whose driver ended: its servers' statuses stay
    /// as they were, so no change says it); `Ready(false)` once nothing can happen any
    /// more; otherwise `Pending`, woken by the next.
    pub(crate) fn poll_news(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut s = lock(&self.log.state);
        let end = s.first + s.changes.len() as u64;
        let news = self.next != end || s.over != self.over_seen;
        self.next = end;
        self.over_seen = s.over;
        if news {
            return Poll::Ready(true);
        }
        if s.over >= s.shards {
            return Poll::Ready(false);
        }
        s.wakers.insert(self.id, cx.waker().clone());
        Poll::Pending
    }

    /// The next change; `None` once the fleet is closed and every change was seen (also once
    /// no handle is left and every server has closed for good: nothing more can come).
    pub async fn changed(&mut self) -> Option<StatusChange> {
        poll_fn(|cx| loop {
            {
                let mut s = lock(&self.log.state);
                if self.next < s.first {
                    let lost = s.first - self.next;
                    self.next = s.first;
                    log::warn!(
                        "AMI fleet: a status watch lost {lost} changes (cap {STATUS_LOG_CAP} \
                         changes, {STATUS_LOG_BYTES} bytes)"
                    );
                    return Poll::Ready(Some(StatusChange::Lagged(lost)));
                }
                let at = (self.next - s.first) as usize;
                if let Some((server, status)) = s.changes.get(at) {
                    self.next += 1;
                    return Poll::Ready(Some(StatusChange::Changed {
                        server: server.clone(),
                        status: status.clone(),
                    }));
                }
                // Closing logs every server's last change at once: nothing can follow.
                if s.over >= s.shards {
                    return Poll::Ready(None);
                }
                s.wakers.insert(self.id, cx.waker().clone());
            }
            // Nothing new, and with no handle left and every server closed for good nothing
            // can come: the fleet closes (outside the log's lock: the directory and the
            // shards come first), which logs the end, and the watch looks again.
            if !self.shards.close_if_finished() {
                return Poll::Pending;
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ami_proto::fleet::FleetConfig;
    use std::future::Future;
    use std::pin::pin;
    use std::time::Instant;

    fn at_once<T>(f: impl Future<Output = T>) -> T {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("waits"),
        }
    }

    #[test]
    fn the_status_log_is_capped_in_bytes_and_a_watch_behind_it_is_told_what_it_missed() {
        // Statuses carry server text (a banner's version, a Login refusal's Message), up to
        // the decoder's line length: 4,096 of them held whatever their size could be
        // gigabytes, kept even with no watch behind.
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        shards.join();
        let mut watch = StatusWatch::new(shards.clone());
        let server = ServerName::new("pbx").unwrap();
        let ami_version = "9".repeat(64 << 10);
        let mut io = Io::default();
        for _ in 0..1024 {
            let status = ServerStatus::Ready {
                ami_version: ami_version.clone(),
            };
            shards.log.push(server.clone(), status, &mut io);
        }
        match at_once(watch.changed()) {
            Some(StatusChange::Lagged(n)) => assert!(n > 0 && n < 1024, "{n}"),
            Some(StatusChange::Changed { status, .. }) => {
                panic!("64 MiB of statuses kept for a watch: {}", status.label())
            }
            other => panic!("{other:?}"),
        }
        // The newest is always kept, however large.
        let newest = StatusWatch::new(shards.clone()).next;
        assert!(lock(&shards.log.state).first < newest);
    }

    #[test]
    fn the_status_log_keeps_at_most_its_count_and_what_fits_its_bytes_refusal_text_included() {
        let server = ServerName::new("pbx").unwrap();
        let mut io = Io::default();
        // The count cap: the oldest go, each counted.
        let log = StatusLog::new(1);
        let small = ServerStatus::Ready {
            ami_version: "1".to_string(),
        };
        for _ in 0..STATUS_LOG_CAP + 100 {
            log.push(server.clone(), small.clone(), &mut io);
        }
        {
            let s = lock(&log.state);
            assert_eq!(s.changes.len(), STATUS_LOG_CAP);
            assert_eq!(s.first, 100);
        }
        // The byte cap, a Login refusal's `Message` counted: changes of exactly 64 KiB each,
        // sixteen of which fill the 1 MiB.
        let log = StatusLog::new(1);
        let each = 64 << 10;
        let fixed = std::mem::size_of::<(ServerName, ServerStatus)>() + "pbx".len();
        let refused = ServerStatus::Closed {
            reason: ami_proto::DisconnectReason::LoginRejected {
                message: "x".repeat(each - fixed),
            },
        };
        assert_eq!(cost(&server, &refused), each);
        for _ in 0..40 {
            log.push(server.clone(), refused.clone(), &mut io);
        }
        let s = lock(&log.state);
        assert_eq!(s.changes.len(), STATUS_LOG_BYTES / each);
        assert_eq!(s.first, 40 - (STATUS_LOG_BYTES / each) as u64);
        assert_eq!(
            s.bytes,
            s.changes.iter().map(|(n, st)| cost(n, st)).sum::<usize>()
        );
    }

    #[test]
    fn a_fleet_status_watch_given_up_while_waiting_leaves_no_waker_behind() {
        // `timeout(d, watch.changed())` in a loop, each time on a new watch: each must take
        // its waker with it, or the log keeps one per try until the next change.
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        for _ in 0..3 {
            let mut watch = StatusWatch::new(shards.clone());
            {
                let mut next = pin!(watch.changed());
                assert!(next
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_pending());
            }
            assert!(format!("{watch:?}").contains("StatusWatch"));
            drop(watch);
        }
        assert!(lock(&shards.log.state).wakers.is_empty());
    }

    #[test]
    fn news_for_a_ready_waiter_is_each_change_once_and_a_shard_ending_once() {
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        let server = ServerName::new("pbx").unwrap();
        let status = ServerStatus::Ready {
            ami_version: "1".to_string(),
        };
        let mut io = Io::default();
        // A log that has dropped its oldest: its changes are numbered from past zero.
        for _ in 0..STATUS_LOG_CAP + 10 {
            shards.log.push(server.clone(), status.clone(), &mut io);
        }
        let mut watch = StatusWatch::new(shards.clone());
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(watch.poll_news(&mut cx), Poll::Pending, "nothing new yet");
        shards.log.push(server.clone(), status, &mut io);
        assert_eq!(watch.poll_news(&mut cx), Poll::Ready(true));
        assert_eq!(watch.poll_news(&mut cx), Poll::Pending, "told once");
        // The only shard will log nothing more, with no status change saying so.
        shards.log.shard_over(&mut io);
        assert_eq!(watch.poll_news(&mut cx), Poll::Ready(true));
        assert_eq!(
            watch.poll_news(&mut cx),
            Poll::Ready(false),
            "nothing can follow"
        );
    }

    #[test]
    fn a_watch_on_a_log_past_its_cap_gets_the_right_change_and_the_right_count_missed() {
        let shards = Arc::new(Shards::new(FleetConfig::default(), 1, Instant::now));
        shards.join();
        let server = ServerName::new("pbx").unwrap();
        let mut io = Io::default();
        let push = |version: &str, io: &mut Io| {
            let status = ServerStatus::Ready {
                ami_version: version.to_string(),
            };
            shards.log.push(server.clone(), status, io);
        };
        for _ in 0..STATUS_LOG_CAP + 10 {
            push("old", &mut io);
        }
        let mut watch = StatusWatch::new(shards.clone());
        let mut behind = StatusWatch::new(shards.clone());
        let made_at = behind.next;
        push("new", &mut io);
        match at_once(watch.changed()) {
            Some(StatusChange::Changed { status, .. }) => assert_eq!(
                status,
                ServerStatus::Ready {
                    ami_version: "new".to_string()
                }
            ),
            other => panic!("{other:?}"),
        }
        for _ in 0..STATUS_LOG_CAP + 5 {
            push("later", &mut io);
        }
        let first = lock(&shards.log.state).first;
        match at_once(behind.changed()) {
            Some(StatusChange::Lagged(n)) => assert_eq!(n, first - made_at),
            other => panic!("{other:?}"),
        }
    }
}
