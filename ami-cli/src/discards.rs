//! Server input the client threw away ([`StreamItem::Discarded`]), said on stderr the way
//! `decode` says its decode errors, but once per burst: the first discard of a burst with
//! its reason at once, then how many followed when the burst ends (no discard of that reason
//! for 1 s, noticed at the next thing that happens or at exit), or every 10 s while it goes
//! on. A hostile server that pads every event with junk therefore costs a few lines, not
//! one per event.
//!
//! [`StreamItem::Discarded`]: ami_proto::StreamItem::Discarded

use ami_proto::Discard;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A burst ends after this long without a discard of its reason.
const QUIET: Duration = Duration::from_secs(1);
/// While a burst lasts, its count is said at most this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Burst {
    last: Instant,
    said_at: Instant,
    /// Discards not said yet.
    unsaid: u64,
}

/// Bursts of discards per server (`""` for a single server) and reason.
#[derive(Debug, Default)]
pub(crate) struct Discards {
    bursts: HashMap<(String, Discard), Burst>,
}

fn say(server: &str, reason: &Discard, what: String) {
    let prefix = if server.is_empty() {
        String::new()
    } else {
        format!("{server}: ")
    };
    eprintln!("ami: {prefix}server input discarded: {reason} ({what})");
}

impl Discards {
    /// `count` inputs were discarded for `reason` at `now` (from `server`, `""` for one).
    pub(crate) fn note(&mut self, server: &str, reason: Discard, count: u64, now: Instant) {
        self.tick(now);
        match self.bursts.get_mut(&(server.to_string(), reason)) {
            Some(b) => {
                b.last = now;
                b.unsaid += count;
                if now.saturating_duration_since(b.said_at) >= SUMMARY_EVERY {
                    say(server, &reason, format!("{} more so far", b.unsaid));
                    b.said_at = now;
                    b.unsaid = 0;
                }
            }
            None => {
                say(server, &reason, count.to_string());
                self.bursts.insert(
                    (server.to_string(), reason),
                    Burst {
                        last: now,
                        said_at: now,
                        unsaid: 0,
                    },
                );
            }
        }
    }

    /// Ends the bursts that went quiet, saying their counts.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.bursts.retain(|(server, reason), b| {
            let going = now.saturating_duration_since(b.last) < QUIET;
            if !going && b.unsaid > 0 {
                say(server, reason, format!("{} more in that burst", b.unsaid));
            }
            going
        });
    }

    /// Says what is left unsaid (at exit).
    pub(crate) fn finish(&mut self) {
        for ((server, reason), b) in self.bursts.drain() {
            if b.unsaid > 0 {
                say(&server, &reason, format!("{} more in that burst", b.unsaid));
            }
        }
    }
}
