//! Server input the client threw away ([`StreamItem::Discarded`]), said on stderr the way
//! `decode` says its decode errors, but once per burst: the first discard of a burst with
//! its reason at once, then how many followed when the burst ends (no discard of that reason
//! for 1 s, noticed at the next thing that happens or at exit), or every 10 s while it goes
//! on. A hostile server that pads every event with junk therefore costs a few lines, not
//! one per event.
//!
//! [`StreamItem::Discarded`]: ami_proto::StreamItem::Discarded

use crate::terminal::say;
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
pub(crate) struct Discards {
    bursts: HashMap<(String, Discard), Burst>,
    /// Where the lines go: stderr (tests keep them).
    sink: Box<dyn FnMut(String)>,
}

impl Default for Discards {
    fn default() -> Discards {
        Discards {
            bursts: HashMap::new(),
            sink: Box::new(|line| say!("{line}")),
        }
    }
}

fn line(server: &str, reason: &Discard, what: String) -> String {
    let prefix = if server.is_empty() {
        String::new()
    } else {
        format!("{server}: ")
    };
    format!("ami: {prefix}server input discarded: {reason} ({what})")
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
                    (self.sink)(line(server, &reason, format!("{} more so far", b.unsaid)));
                    b.said_at = now;
                    b.unsaid = 0;
                }
            }
            None => {
                (self.sink)(line(server, &reason, count.to_string()));
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
        let sink = &mut self.sink;
        self.bursts.retain(|(server, reason), b| {
            let going = now.saturating_duration_since(b.last) < QUIET;
            if !going && b.unsaid > 0 {
                sink(line(
                    server,
                    reason,
                    format!("{} more in that burst", b.unsaid),
                ));
            }
            going
        });
    }

    /// Says what is left unsaid (at exit).
    pub(crate) fn finish(&mut self) {
        for ((server, reason), b) in self.bursts.drain() {
            if b.unsaid > 0 {
                (self.sink)(line(
                    &server,
                    &reason,
                    format!("{} more in that burst", b.unsaid),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn keeping() -> (Discards, Arc<Mutex<Vec<String>>>) {
        let said = Arc::new(Mutex::new(Vec::new()));
        let keep = said.clone();
        let d = Discards {
            bursts: HashMap::new(),
            sink: Box::new(move |l| keep.lock().unwrap_or_else(|e| e.into_inner()).push(l)),
        };
        (d, said)
    }

    #[test]
    fn a_burst_is_said_once_with_its_reason_then_its_count_when_it_ends() {
        let (mut d, said) = keeping();
        let t0 = Instant::now();
        let skip = Discard::NotEventOrResponse;
        for i in 0..1000 {
            d.note("", skip, 1, t0 + Duration::from_millis(i));
        }
        // Quiet for 1 s: the burst ends and its count is said; the next discard opens another.
        d.tick(t0 + Duration::from_secs(3));
        d.note("pbx1", skip, 2, t0 + Duration::from_secs(3));
        d.finish();
        let said = said.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reason = skip.to_string();
        assert_eq!(
            said,
            [
                format!("ami: server input discarded: {reason} (1)"),
                format!("ami: server input discarded: {reason} (999 more in that burst)"),
                format!("ami: pbx1: server input discarded: {reason} (2)"),
            ]
        );
    }

    #[test]
    fn a_long_burst_says_its_count_every_10_s() {
        let (mut d, said) = keeping();
        let t0 = Instant::now();
        for i in 0..=25 {
            d.note(
                "",
                Discard::UnmatchedResponse,
                1,
                t0 + Duration::from_secs(i) / 2,
            );
        }
        d.finish();
        let said = said.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let counts: Vec<&str> = said
            .iter()
            .map(|l| l.rsplit('(').next().unwrap_or(""))
            .collect();
        assert_eq!(counts, ["1)", "20 more so far)", "5 more in that burst)"]);
    }
}
