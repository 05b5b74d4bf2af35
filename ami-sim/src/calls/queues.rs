//! The simulated queues (app_queue): `testq` with one static member, `testq-empty` with none.
//!
//! **Simplification:** the member is not dialled as a real channel. The agent leg named in
//! AgentCalled/AgentConnect/AgentComplete is a synthetic `Local/qagent@ami-test-XXXXXXXX;1`
//! snapshot that never appears in CoreShowChannels, and the agent "talks" for 3 s (the
//! `qagent` extension's Wait(3)).

use std::time::Instant;

/// A static queue member.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) location: String,
    pub(crate) in_call: bool,
    pub(crate) calls_taken: u64,
    pub(crate) last_call: u64,
    pub(crate) login_time: u64,
}

/// A caller waiting in a queue.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) call: u64,
    pub(crate) leg: usize,
    pub(crate) joined: Instant,
    pub(crate) original_position: usize,
    /// A member was reserved for this caller and is being connected.
    pub(crate) ringing: bool,
}

/// One queue and its counters.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub(crate) name: String,
    pub(crate) members: Vec<Member>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) completed: u64,
    pub(crate) abandoned: u64,
    pub(crate) talk_total: u64,
    pub(crate) hold_total: u64,
}

impl Queue {
    fn new(name: &str, members: Vec<Member>) -> Queue {
        Queue {
            name: name.to_string(),
            members,
            entries: Vec::new(),
            completed: 0,
            abandoned: 0,
            talk_total: 0,
            hold_total: 0,
        }
    }

    /// Average hold time (s) over completed calls.
    pub(crate) fn holdtime(&self) -> u64 {
        self.hold_total.checked_div(self.completed).unwrap_or(0)
    }

    /// Average talk time (s) over completed calls.
    pub(crate) fn talktime(&self) -> u64 {
        self.talk_total.checked_div(self.completed).unwrap_or(0)
    }

    /// Service level percentage as app_queue prints it.
    pub(crate) fn service_level_perf(&self) -> f64 {
        if self.completed == 0 {
            0.0
        } else {
            100.0
        }
    }

    /// Index of the first member not in a call.
    pub(crate) fn free_member(&self) -> Option<usize> {
        self.members.iter().position(|m| !m.in_call)
    }
}

/// All queues, in the order QueueStatus lists them.
#[derive(Debug, Clone)]
pub(crate) struct Queues {
    pub(crate) list: Vec<Queue>,
}

impl Queues {
    /// The fixtures' queues; `login_time` is the member's login (server start).
    pub(crate) fn new(login_time: u64) -> Queues {
        let agent = Member {
            name: "Agent1".to_string(),
            location: "Local/qagent@ami-test/n".to_string(),
            in_call: false,
            calls_taken: 0,
            last_call: 0,
            login_time,
        };
        Queues {
            list: vec![
                Queue::new("testq-empty", Vec::new()),
                Queue::new("testq", vec![agent]),
            ],
        }
    }

    /// A queue by name.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Queue> {
        self.list.iter_mut().find(|q| q.name == name)
    }

    /// Removes a call from every queue's waiting list, returning (queue, position, entry).
    pub(crate) fn remove_call(&mut self, call: u64) -> Option<(String, usize, Entry)> {
        for q in &mut self.list {
            if let Some(i) = q.entries.iter().position(|e| e.call == call) {
                let e = q.entries.remove(i);
                return Some((q.name.clone(), i + 1, e));
            }
        }
        None
    }
}
