//! Ctrl-C, SIGTERM and SIGHUP end `listen` and `calls --watch` the way their `--duration`
//! does. SIGHUP is a stop too: the terminal of an SSH session closed, or a unit's
//! `ExecReload=kill -HUP`; killed by it, the command lost its lines and sent no Logoff.
//!
//! Killed by the signal's default action, `ami listen > events.jsonl` lost the events it had
//! received but not yet written (up to the printer's queue, 4096 lines), and sent no Logoff.
//! Caught instead, the command stops reading, logs off (at most 2 s), writes every line it
//! holds and exits 0: being stopped is how a listener normally ends. A second signal ends
//! the process at once (exit 130), for a person who does not want to wait for the Logoff.
//!
//! The signals are caught by a thread of their own (a current-thread tokio runtime, which
//! the CLI has anyway); the command's loop looks at the flag at least every [`POLL`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// How long a waiting command goes at most without looking for a stop request.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Catches SIGINT, SIGTERM and SIGHUP from now on (said on stderr, and left to their
/// default actions, if they cannot be caught). Once per process: later calls do nothing.
pub(crate) fn catch() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(catch_now);
}

fn catch_now() {
    #[cfg(unix)]
    {
        let (ready, registered) = std::sync::mpsc::sync_channel::<bool>(1);
        let started = std::thread::Builder::new()
            .name("ami-signals".into())
            .spawn(move || catch_on_this_thread(&ready));
        // Wait until the handlers are in place: a signal before that would still kill.
        let caught = started.is_ok()
            && registered
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or(false);
        if !caught {
            crate::terminal::say!(
                "ami: Ctrl-C, SIGTERM and SIGHUP not caught: they stop the command without a Logoff"
            );
        }
    }
}

#[cfg(unix)]
fn catch_on_this_thread(ready: &std::sync::mpsc::SyncSender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        let _ = ready.send(false);
        return;
    };
    rt.block_on(async {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            let _ = ready.send(false);
            return;
        };
        // Under `nohup` SIGHUP stays ignored, as asked.
        let mut hup = if hangup_ignored() {
            None
        } else {
            signal(SignalKind::hangup()).ok()
        };
        let _ = ready.send(true);
        for _ in 0..2 {
            let hangup = async {
                match &mut hup {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hangup => {}
            }
            if REQUESTED.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(crate::EXIT_STOPPED_AGAIN));
            }
        }
    });
}

/// Whether SIGHUP was ignored when the process started (`nohup`), from the `SigIgn` mask of
/// `/proc/self/status` (no such file: not ignored).
#[cfg(unix)]
pub(crate) fn hangup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        // SIGHUP is signal 1: the mask's lowest bit.
        .is_some_and(|mask| mask & 1 != 0)
}

/// Whether a stop was asked for.
pub(crate) fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `until`, brought forward to at most [`POLL`] from now: how long a loop that must notice
/// a stop request may wait.
pub(crate) fn wake_by(until: Option<Instant>) -> Option<Instant> {
    let soon = Instant::now() + POLL;
    Some(until.map_or(soon, |u| u.min(soon)))
}
