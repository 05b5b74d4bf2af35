//! CPU use per thread of this process, from /proc, for the measurement examples
//! (`stream_rate`, `fleet_loopback`): wall-clock figures on 2 shared cores say little
//! without who got the CPU, and how often a runnable thread was pushed off it.

use std::collections::BTreeMap;
use std::time::Duration;

/// One thread at one moment: its name, CPU seconds (user + system) and involuntary context
/// switches (times it was preempted while runnable).
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadTimes {
    /// The thread's name (`main` for the process's first thread).
    pub name: String,
    /// CPU seconds used so far, user and system.
    pub cpu: f64,
    /// Times preempted so far.
    pub preempted: u64,
    /// CPU nanoseconds on the clock of `schedstat` (finer than `cpu`'s clock ticks, for
    /// threads that barely run: the idle measurements).
    pub sched_ns: u64,
    /// Times it went to sleep so far (voluntary context switches: one per wake-up).
    pub slept: u64,
}

/// Every thread of this process, by thread id (empty where /proc is missing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot(pub BTreeMap<u32, ThreadTimes>);

/// What one thread used between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadUse {
    /// The thread's name (`main` for the process's first thread).
    pub name: String,
    /// CPU seconds per second of the span (1.0 is one whole core).
    pub share: f64,
    /// Times preempted during the span.
    pub preempted: u64,
}

impl Snapshot {
    /// Reads every thread's counters now.
    pub fn now() -> Snapshot {
        let mut out = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Snapshot(out);
        };
        let main = std::process::id();
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let name = if tid == main {
                "main"
            } else {
                stat.split_once('(')
                    .and_then(|(_, r)| r.rsplit_once(')'))
                    .map_or("?", |(n, _)| n)
            };
            // After the name: utime and stime are the 12th and 13th fields, in clock ticks.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            let cpu = (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0;
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let count = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            let sched = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
            let sched_ns = sched
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            let name = name.to_string();
            out.insert(
                tid,
                ThreadTimes {
                    name,
                    cpu,
                    preempted: count("nonvoluntary_ctxt_switches:"),
                    sched_ns,
                    slept: count("voluntary_ctxt_switches:"),
                },
            );
        }
        Snapshot(out)
    }

    /// CPU seconds (schedstat) and sleeps of every thread, summed.
    pub fn totals(&self) -> (f64, u64) {
        let ns: u64 = self.0.values().map(|t| t.sched_ns).sum();
        (ns as f64 / 1e9, self.0.values().map(|t| t.slept).sum())
    }

    /// What each thread used from this snapshot until now, `took` later, busiest first
    /// (threads under half a percent of a core left out).
    pub fn used_since(&self, took: Duration) -> Vec<ThreadUse> {
        let secs = took.as_secs_f64().max(1e-9);
        let mut rows: Vec<ThreadUse> = Snapshot::now()
            .0
            .into_iter()
            .map(|(tid, t)| {
                let (cpu0, pre0) = self.0.get(&tid).map_or((0.0, 0), |b| (b.cpu, b.preempted));
                ThreadUse {
                    name: t.name,
                    share: (t.cpu - cpu0) / secs,
                    preempted: t.preempted.saturating_sub(pre0),
                }
            })
            .filter(|u| u.share >= 0.005)
            .collect();
        rows.sort_by(|a, b| b.share.total_cmp(&a.share));
        rows
    }

    /// [`used_since`](Self::used_since) as one line: `name share (preempted), ...`.
    pub fn report_since(&self, took: Duration) -> String {
        self.used_since(took)
            .iter()
            .map(|u| format!("{} {:.2} ({})", u.name, u.share, u.preempted))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
