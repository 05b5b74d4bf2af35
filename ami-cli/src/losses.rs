//! What was lost, said on stderr once per burst: server input the client threw away
//! ([`StreamItem::Discarded`]), events the client's queue dropped because this reader fell
//! behind ([`StreamItem::Gap`]), and lines the stdout queue dropped because stdout drained
//! too slowly. The first loss of a burst is said at once with its cause, then how many
//! followed when the burst ends (nothing of that cause for 1 s, noticed at the next thing
//! that happens or at exit), or every 10 s while it goes on. A hostile server that pads
//! every event with junk, or a pipe that reads slower than the stream (`ami listen | wc -l`
//! at a million events a second), therefore costs a few lines, not one per event.
//!
//! [`StreamItem::Discarded`]: ami_proto::StreamItem::Discarded
//! [`StreamItem::Gap`]: ami_proto::StreamItem::Gap

use crate::terminal::say;
use ami_proto::Discard;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A burst ends after this long without a loss of its cause.
const QUIET: Duration = Duration::from_secs(1);
/// While a burst lasts, its count is said at most this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// What was lost, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Loss {
    /// Server input the client threw away, for this reason.
    Discarded(Discard),
    /// Events the client's queue dropped: this reader fell behind.
    FellBehind,
    /// Lines the stdout queue dropped: stdout drained too slowly.
    NotPrinted,
    /// A live view's news lines (`ami calls --watch`) dropped: stdout drained too slowly.
    UpdatesNotPrinted,
}

/// Where in its burst a line is said.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The burst's first loss.
    First,
    /// The count since the last line, while the burst goes on.
    SoFar,
    /// The count since the last line, as the burst ends.
    Ended,
}

#[derive(Debug)]
struct Burst {
    last: Instant,
    said_at: Instant,
    /// Losses not said yet.
    unsaid: u64,
}

/// Bursts of losses per server (`""` for a single server) and cause.
pub(crate) struct Losses {
    bursts: HashMap<(String, Loss), Burst>,
    /// Where the lines go: stderr (tests keep them).
    sink: Box<dyn FnMut(String) + Send>,
}

impl Default for Losses {
    fn default() -> Losses {
        Losses {
            bursts: HashMap::new(),
            sink: Box::new(|line| say!("{line}")),
        }
    }
}

fn line(server: &str, loss: &Loss, count: u64, phase: Phase) -> String {
    let prefix = if server.is_empty() {
        String::new()
    } else {
        format!("{server}: ")
    };
    let (more, when) = match phase {
        Phase::First => ("", ""),
        Phase::SoFar => (" more", " so far"),
        Phase::Ended => (" more", " in that burst"),
    };
    match loss {
        Loss::Discarded(reason) => {
            format!("ami: {prefix}server input discarded: {reason} ({count}{more}{when})")
        }
        Loss::FellBehind => format!(
            "ami: {prefix}gap: {count}{more} events dropped{when} (this reader fell behind)"
        ),
        Loss::NotPrinted => {
            format!("ami: {prefix}gap: {count}{more} events not printed{when} (stdout too slow)")
        }
        Loss::UpdatesNotPrinted => format!(
            "ami: {prefix}gap: {count}{more} call updates not printed{when} (stdout too slow)"
        ),
    }
}

impl Losses {
    /// Losses said to `sink` instead of stderr (tests keep the lines).
    #[cfg(test)]
    pub(crate) fn with_sink(sink: impl FnMut(String) + Send + 'static) -> Losses {
        Losses {
            bursts: HashMap::new(),
            sink: Box::new(sink),
        }
    }

    /// `count` things were lost for `loss` at `now` (from `server`, `""` for one).
    pub(crate) fn note(&mut self, server: &str, loss: Loss, count: u64, now: Instant) {
        self.tick(now);
        match self.bursts.get_mut(&(server.to_string(), loss)) {
            Some(b) => {
                b.last = now;
                b.unsaid += count;
                if now.saturating_duration_since(b.said_at) >= SUMMARY_EVERY {
                    (self.sink)(line(server, &loss, b.unsaid, Phase::SoFar));
                    b.said_at = now;
                    b.unsaid = 0;
                }
            }
            None => {
                (self.sink)(line(server, &loss, count, Phase::First));
                self.bursts.insert(
                    (server.to_string(), loss),
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
        self.bursts.retain(|(server, loss), b| {
            let going = now.saturating_duration_since(b.last) < QUIET;
            if !going && b.unsaid > 0 {
                sink(line(server, loss, b.unsaid, Phase::Ended));
            }
            going
        });
    }

    /// Says what is left unsaid (at exit).
    pub(crate) fn finish(&mut self) {
        for ((server, loss), b) in self.bursts.drain() {
            if b.unsaid > 0 {
                (self.sink)(line(&server, &loss, b.unsaid, Phase::Ended));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn keeping() -> (Losses, Arc<Mutex<Vec<String>>>) {
        let said = Arc::new(Mutex::new(Vec::new()));
        let keep = said.clone();
        let d = Losses::with_sink(move |l| keep.lock().unwrap_or_else(|e| e.into_inner()).push(l));
        (d, said)
    }

    #[test]
    fn a_burst_is_said_once_with_its_reason_then_its_count_when_it_ends() {
        let (mut d, said) = keeping();
        let t0 = Instant::now();
        let skip = Discard::NotEventOrResponse;
        for i in 0..1000 {
            d.note("", Loss::Discarded(skip), 1, t0 + Duration::from_millis(i));
        }
        // Quiet for 1 s: the burst ends and its count is said; the next discard opens another.
        d.tick(t0 + Duration::from_secs(3));
        d.note(
            "pbx1",
            Loss::Discarded(skip),
            2,
            t0 + Duration::from_secs(3),
        );
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
                Loss::Discarded(Discard::UnmatchedResponse),
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

    #[test]
    fn a_burst_of_gaps_is_said_in_a_few_lines_not_one_per_gap() {
        let (mut d, said) = keeping();
        let t0 = Instant::now();
        // 100,000 small gaps in 2 s (a pipe that reads slower than the stream), then one
        // for pbx2, whose burst is its own.
        for i in 0..100_000u32 {
            d.note(
                "",
                Loss::NotPrinted,
                2,
                t0 + Duration::from_micros(u64::from(i) * 20),
            );
        }
        d.note("pbx2", Loss::FellBehind, 120, t0 + Duration::from_secs(2));
        d.tick(t0 + Duration::from_secs(4));
        d.finish();
        let said = said.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            said,
            [
                "ami: gap: 2 events not printed (stdout too slow)",
                "ami: pbx2: gap: 120 events dropped (this reader fell behind)",
                "ami: gap: 199998 more events not printed in that burst (stdout too slow)",
            ]
        );
    }
}
