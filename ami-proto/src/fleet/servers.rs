//! `Fleet`: many servers as one. Each server keeps its own [`Client`]; the fleet names them,
//! paces their connects, merges their outputs and events, and routes actions.

use super::name::{InvalidName, ServerId, ServerName};
use super::scheduler::Budget;
use super::status::ServerStatus;
use super::stream::{EventRing, FleetItem};
use super::timers::TimerHeap;
use crate::{ActionId, Client, ClientConfig, Input, Notice, Outcome, Output, StreamItem};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Settings of a [`Fleet`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FleetConfig {
    /// Per-step budgets. The fleet enforces `connects_per_step` itself; the read budgets are
    /// for the adapter's loop (see [`Scheduler`](super::Scheduler)).
    pub budget: Budget,
    /// Most servers one fleet holds. Default 4,096: each server costs its client's buffers
    /// (see `ClientConfig`), so this caps a fleet's memory at a known multiple of one client's.
    pub max_servers: usize,
    /// Seed for the servers whose `ClientConfig` has none: each gets its own seed derived
    /// from this one and the order of addition, so no two servers share ActionID prefixes or
    /// reconnect jitter (shared jitter keeps a fleet's reconnects in lockstep). Adapters put
    /// OS entropy here; tests a constant.
    pub seed: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            budget: Budget::default(),
            max_servers: 4096,
            seed: 0x5eed_f1ee_7000_0001,
        }
    }
}

/// Why [`Fleet::add`] refused a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The name is not acceptable.
    #[error("invalid server name: {0}")]
    InvalidName(InvalidName),
    /// Another server already has this name.
    #[error("a server named {0} is already in the fleet")]
    DuplicateName(ServerName),
    /// The fleet holds `max_servers` already.
    #[error("the fleet holds at most {cap} servers")]
    Full {
        /// The cap (`FleetConfig::max_servers`).
        cap: usize,
    },
}

// By hand, not `#[from]`, which would make the name's problem its `source()` as well:
// the message names it already, and a chain printer would say it twice.
impl From<InvalidName> for FleetError {
    fn from(e: InvalidName) -> FleetError {
        FleetError::InvalidName(e)
    }
}

/// The next thing the adapter must do, or news for the application, from
/// [`Fleet::poll_output`]. Drain until [`FleetOutput::Wait`].
#[derive(Debug)]
#[non_exhaustive]
pub enum FleetOutput {
    /// Open a transport to this server, then report `Input::Connected` or
    /// `Input::ConnectFailed` with [`Fleet::handle_input`]. At most
    /// `budget.connects_per_step` of these come out per step, oldest request first.
    Connect(ServerId),
    /// Close this server's transport (drop any bytes not yet written).
    Close(ServerId),
    /// A server's status changed (the status watch).
    Status {
        /// Which server.
        server: ServerName,
        /// Its new status.
        status: ServerStatus,
    },
    /// An action finished, exactly once per ActionID, on the server it was sent to.
    Completed {
        /// The server the action was sent to.
        server: ServerName,
        /// The ID returned when it was sent.
        id: ActionId,
        /// How it ended.
        outcome: Outcome,
    },
    /// The server was removed: its ID is retired and its name free again. Its pending
    /// actions completed before this.
    Removed {
        /// The name it had.
        server: ServerName,
    },
    /// Nothing more to do until this deadline (call [`Fleet::handle_timeout`] then) or new
    /// input. `None`: only input or a call can wake the fleet.
    Wait(Option<Instant>),
}

/// Per-server counters kept by the fleet (the client keeps its own in `Stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ServerCounters {
    pub(crate) routed: u64,
    pub(crate) events_delivered: u64,
    pub(crate) events_lost: u64,
    pub(crate) connects_started: u64,
}

/// Fleet-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FleetCounters {
    pub(crate) routed: u64,
    pub(crate) no_server: u64,
    pub(crate) connects_started: u64,
    pub(crate) steps_with_deferred_connects: u64,
    pub(crate) most_connects_in_a_step: usize,
    pub(crate) status_changes: u64,
    pub(crate) events_lost_on_removal: u64,
    pub(crate) removal_gaps_dropped: u64,
    pub(crate) added: u64,
    pub(crate) removed: u64,
}

#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) name: ServerName,
    pub(crate) client: Client,
    pub(crate) status: ServerStatus,
    /// The client asked for a connect that has not come out as `FleetOutput::Connect` yet.
    connect_wanted: bool,
    /// In the fleet's connect queue (at most once).
    connect_queued: bool,
    /// The deadline the timer heap holds for this server.
    timer: Option<Instant>,
    /// In the fleet's writable queue (at most once).
    write_queued: bool,
    /// The kinds of status said at info since the server was last ready (see
    /// [`say_status`]): a server that stays unreachable goes Connecting, BreakerOpen,
    /// Connecting... at every probe; each kind is said once, the repeats at debug (its
    /// client summarises the failed tries with their count).
    said: u8,
    pub(crate) counters: ServerCounters,
}

/// Says `server`'s new status: at info the first time its kind comes since the server was
/// last ready, and Ready and Closed always; a repeat of the churn of retries at debug.
fn say_status(said: &mut u8, server: &ServerName, status: &ServerStatus) {
    let bit = match status {
        ServerStatus::Connecting => 1,
        ServerStatus::LoggingIn => 2,
        ServerStatus::BackingOff { .. } => 4,
        ServerStatus::BreakerOpen { .. } => 8,
        ServerStatus::Ready { .. } | ServerStatus::Closed { .. } => 0,
    };
    if bit == 0 {
        *said = 0;
        log::info!("AMI fleet: {server} is {status}");
    } else if *said & bit == 0 {
        *said |= bit;
        log::info!("AMI fleet: {server} is {status} (repeats of this status are at debug)");
    } else {
        log::debug!("AMI fleet: {server} is {status}");
    }
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) generation: u64,
    pub(crate) server: Option<Server>,
}

/// Many AMI servers as one, without I/O: see the [module docs](super).
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    pub(crate) slots: Vec<Slot>,
    free: Vec<usize>,
    pub(crate) names: HashMap<ServerName, usize>,
    next_generation: u64,
    outputs: VecDeque<FleetOutput>,
    /// Servers whose client asked for a connect, oldest first.
    connects: VecDeque<ServerId>,
    /// Servers with bytes to write that the adapter has not been told about yet.
    writable: VecDeque<ServerId>,
    connects_left: usize,
    connects_this_step: usize,
    pub(crate) ring: EventRing,
    pub(crate) timers: TimerHeap,
    /// Where round-robin routing looks first.
    pub(crate) rr: usize,
    /// The latest `now` the fleet was given.
    now: Option<Instant>,
    pub(crate) counters: FleetCounters,
}

impl Fleet {
    /// An empty fleet.
    pub fn new(config: FleetConfig) -> Fleet {
        let mut config = config;
        config.budget = config.budget.clamped();
        config.max_servers = config.max_servers.max(1);
        Fleet {
            connects_left: config.budget.connects_per_step,
            config,
            slots: Vec::new(),
            free: Vec::new(),
            names: HashMap::new(),
            next_generation: 0,
            outputs: VecDeque::new(),
            connects: VecDeque::new(),
            writable: VecDeque::new(),
            connects_this_step: 0,
            ring: EventRing::default(),
            timers: TimerHeap::default(),
            rr: 0,
            now: None,
            counters: FleetCounters::default(),
        }
    }

    /// The configuration (budgets clamped to at least 1).
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Adds a server under `name` with a client of its own; its first connect request is
    /// queued at once. A config without a seed gets one derived from the fleet's; one
    /// without a [name](ClientConfig::name) gets `name`, so that the client's log records
    /// say which server they are about.
    pub fn add(
        &mut self,
        now: Instant,
        name: &str,
        config: ClientConfig,
    ) -> Result<ServerId, FleetError> {
        let name = ServerName::new(name)?;
        if self.names.contains_key(name.as_str()) {
            return Err(FleetError::DuplicateName(name));
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < self.config.max_servers => {
                self.slots.push(Slot {
                    generation: 0,
                    server: None,
                });
                self.slots.len() - 1
            }
            None => {
                return Err(FleetError::Full {
                    cap: self.config.max_servers,
                })
            }
        };
        self.counters.added += 1;
        self.next_generation += 1;
        // One seed for several servers (a config cloned for each) would give them one
        // ActionID prefix sequence: two names for one Asterisk would then take each other's
        // OriginateResponses. The name and the count of additions keep a given seed
        // reproducible (the same additions in the same order give the same IDs) and each
        // server's prefixes its own, also for a name removed and added again (its old
        // session's answers may still be on their way).
        let config = match config.seed() {
            Some(seed) => config.with_seed(mix(seed
                ^ name_hash(name.as_str())
                ^ mix(self.counters.added))),
            None => config.with_seed(mix(self.config.seed ^ mix(self.counters.added))),
        };
        // The fleet's name for the server, so that the client's own log records say which
        // server they are about, as the fleet's do; a name the caller chose stays.
        let config = config.or_name(name.as_str());
        self.now = Some(now);
        let mut client = Client::new(config, now);
        if self.ring.unread {
            client.close_reader([]);
        }
        let server = Server {
            name: name.clone(),
            client,
            status: ServerStatus::Connecting,
            connect_wanted: false,
            connect_queued: false,
            timer: None,
            write_queued: false,
            said: 0,
            counters: ServerCounters::default(),
        };
        let id = ServerId {
            index,
            generation: self.next_generation,
        };
        if let Some(slot) = self.slots.get_mut(index) {
            slot.generation = id.generation;
            slot.server = Some(server);
        }
        self.names.insert(name.clone(), index);
        self.counters.status_changes += 1;
        self.outputs.push_back(FleetOutput::Status {
            server: name,
            status: ServerStatus::Connecting,
        });
        self.touch(index);
        Ok(id)
    }

    /// Removes the server named `name`: its client is closed at once (no Logoff), so every
    /// pending action completes (`NotSent` or `Unknown`) before [`FleetOutput::Removed`].
    /// Events still queued for it are reported as one gap naming it (with the drops of
    /// gap notices it had queued), and counted in `FleetStats::events_lost_on_removal`;
    /// with [`MAX_REMOVAL_GAPS`](super::MAX_REMOVAL_GAPS) such gaps waiting for a reader
    /// already, the gap is not queued (counted in `FleetStats::removal_gaps_dropped`, and
    /// logged). Its queued [marks](crate::StreamItem::Mark) (of actions that completed,
    /// those the close ended included) and [late answers](crate::StreamItem::LateAnswer)
    /// follow the gap, under the same cap and counter (late answers also under
    /// [`MAX_REMOVAL_BYTES`](super::MAX_REMOVAL_BYTES)). False
    /// if no such server.
    pub fn remove(&mut self, now: Instant, name: &str) -> bool {
        let Some(&index) = self.names.get(name) else {
            return false;
        };
        self.now = Some(now);
        if let Some(s) = self.server_mut(index) {
            s.client.close(now);
        }
        self.touch(index);
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        let Some(mut server) = slot.server.take() else {
            return false;
        };
        slot.generation = 0;
        self.free.push(index);
        self.names.remove(name);
        self.ring.forget(index);
        // Its entry in the writable queue goes with it: an adapter that never asks
        // `poll_writable` (ami-mio writes every server at every step) would otherwise keep
        // one for every server ever removed.
        self.writable.retain(|w| w.index != index);
        // Events still queued are lost here; gap notices still queued report drops its
        // client counted already (`events_dropped`). The reader misses both: one gap.
        // Marks follow the gap; past `MAX_REMOVAL_GAPS` orphans waiting, they are dropped
        // with it (counted and logged below), as the memory cap has it.
        let (mut queued, mut reported, mut marks) = (0u64, 0u64, Vec::new());
        while let Some(item) = server.client.poll_event() {
            match item {
                StreamItem::Event(_) => queued += 1,
                StreamItem::Gap { dropped } => reported += dropped,
                // An answer the reader waits for, as a mark is: kept, after the gap.
                StreamItem::Mark { .. } | StreamItem::LateAnswer { .. } => marks.push(item),
                _ => {}
            }
        }
        let lost = queued + reported;
        if lost > 0 {
            log::warn!(
                "AMI fleet: {queued} events queued for removed server {} dropped \
                 ({lost} missing from its stream with earlier drops)",
                server.name
            );
            self.counters.events_lost_on_removal += queued;
            let queued_gap = self.ring.orphan(FleetItem {
                server: server.name.clone(),
                item: StreamItem::Gap { dropped: lost },
            });
            if !queued_gap {
                // The reader is that far behind: its stream misses this notice, the stats
                // still count every event (above) and the notice.
                self.counters.removal_gaps_dropped += 1;
                if self.counters.removal_gaps_dropped.is_power_of_two() {
                    log::warn!(
                        "AMI fleet: {} gap notices of removed servers wait for the reader; the one for {} ({lost} events) was not queued \
                         ({} so far, counted in FleetStats::removal_gaps_dropped)",
                        super::stream::MAX_REMOVAL_GAPS,
                        server.name,
                        self.counters.removal_gaps_dropped
                    );
                }
            }
        }
        for item in marks {
            let what = match item {
                StreamItem::LateAnswer { .. } => "a late answer",
                _ => "a stream mark",
            };
            let queued_mark = self.ring.orphan(FleetItem {
                server: server.name.clone(),
                item,
            });
            if !queued_mark {
                self.counters.removal_gaps_dropped += 1;
                if self.counters.removal_gaps_dropped.is_power_of_two() {
                    log::warn!(
                        "AMI fleet: {} notices (or {} bytes of late answers) of removed servers wait for the reader; {what} of {} was not queued \
                         ({} so far, counted in FleetStats::removal_gaps_dropped)",
                        super::stream::MAX_REMOVAL_GAPS,
                        super::stream::MAX_REMOVAL_BYTES,
                        server.name,
                        self.counters.removal_gaps_dropped
                    );
                }
            }
        }
        self.counters.removed += 1;
        self.outputs.push_back(FleetOutput::Removed {
            server: server.name,
        });
        true
    }

    // ----- the adapter's side -------------------------------------------------------------

    /// Reports what happened on `server`'s transport (see `Client::handle_input`). Input for a
    /// removed server is ignored.
    pub fn handle_input(&mut self, now: Instant, server: ServerId, input: Input<'_>) {
        self.now = Some(now);
        let Some(s) = self.server_by_id(server) else {
            return;
        };
        if input == Input::Connected && s.status == ServerStatus::Connecting {
            s.status = ServerStatus::LoggingIn;
            let status = s.status.clone();
            let name = s.name.clone();
            say_status(&mut s.said, &name, &status);
            self.status_changed(name, status);
        }
        if let Some(s) = self.server_by_id(server) {
            s.client.handle_input(now, input);
        }
        self.touch(server.index);
    }

    /// Starts a new step: fires every server timer due at `now` (heartbeats, action
    /// deadlines, reconnects) and refills the per-step connect budget. Call it once per turn
    /// of the adapter's loop; each call is one step for `connects_per_step`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.connects_this_step > 0 && !self.connects.is_empty() {
            self.counters.steps_with_deferred_connects += 1;
        }
        self.connects_left = self.config.budget.connects_per_step;
        self.connects_this_step = 0;
        while let Some((at, index, generation)) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            let Some(s) = slot.server.as_mut().filter(|s| s.timer == Some(at)) else {
                continue;
            };
            s.timer = None;
            s.client.handle_timeout(now);
            self.touch(index);
        }
        self.compact_timers();
    }

    /// Drops the timer heap's stale entries once they outnumber the live ones: after every
    /// deadline pushed, not only when timers fire, since an adapter that steps only when its
    /// timer fires (the async drivers) may push thousands of moved deadlines in between
    /// (each action sent moves a server's next deadline). One pass over the slots each time
    /// the heap has doubled past the fleet's size: amortised, a constant per push.
    fn compact_timers(&mut self) {
        if !self.timers.needs_compaction(self.len()) {
            return;
        }
        let entries: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let s = slot.server.as_ref()?;
                Some((s.timer?, i, slot.generation))
            })
            .collect();
        self.timers.rebuild(entries.into_iter());
    }

    /// True when [`poll_output`](Self::poll_output) has something before its `Wait`: a
    /// call such as [`close_all`](Self::close_all), [`remove`](Self::remove) or
    /// [`with_client`](Self::with_client) queued news or a transport verb. An adapter that
    /// blocks must not block then.
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty() || (self.connects_left > 0 && !self.connects.is_empty())
    }

    /// The next output: transport verbs for the adapter, news for the application. Drain
    /// until [`FleetOutput::Wait`].
    pub fn poll_output(&mut self) -> FleetOutput {
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        while self.connects_left > 0 {
            let Some(id) = self.connects.pop_front() else {
                break;
            };
            let Some(s) = self.server_by_id(id) else {
                continue;
            };
            s.connect_queued = false;
            if !s.connect_wanted {
                continue;
            }
            s.connect_wanted = false;
            s.counters.connects_started += 1;
            self.connects_left -= 1;
            self.connects_this_step += 1;
            self.counters.connects_started += 1;
            self.counters.most_connects_in_a_step = self
                .counters
                .most_connects_in_a_step
                .max(self.connects_this_step);
            return FleetOutput::Connect(id);
        }
        FleetOutput::Wait(self.poll_timeout())
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout) has work: the
    /// earliest server timer, or the latest `now` when connects wait for the next step's
    /// budget.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some((at, index, generation)) = self.timers.peek() {
            let live = self
                .slots
                .get(index)
                .filter(|slot| slot.generation == generation)
                .and_then(|slot| slot.server.as_ref())
                .is_some_and(|s| s.timer == Some(at));
            if live {
                break;
            }
            self.timers.pop();
        }
        let timer = self.timers.peek().map(|(at, _, _)| at);
        let deferred = self.connects.iter().any(|id| {
            self.slots
                .get(id.index)
                .filter(|slot| slot.generation == id.generation)
                .and_then(|slot| slot.server.as_ref())
                .is_some_and(|s| s.connect_wanted)
        });
        match (timer, deferred.then_some(self.now).flatten()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes to write to `server`'s transport (empty for a removed server), for an adapter
    /// that writes straight from this slice and reports each write at once; the same
    /// contract as [`Client::transmit`]. An adapter that writes from a copy takes its bytes
    /// with [`lend_transmit`](Self::lend_transmit).
    pub fn transmit(&self, server: ServerId) -> &[u8] {
        self.slots
            .get(server.index)
            .filter(|slot| slot.generation == server.generation)
            .and_then(|slot| slot.server.as_ref())
            .map_or(&[], |s| s.client.transmit())
    }

    /// Lends the adapter `server`'s bytes not lent before, for a copy written outside the
    /// fleet's borrow (empty for a removed server; see [`Client::lend_transmit`]). Call
    /// [`handle_server_timeout`](Self::handle_server_timeout) first, so that no byte of an
    /// action already due is lent.
    pub fn lend_transmit(&mut self, server: ServerId) -> &[u8] {
        match self.server_by_id(server) {
            Some(s) => s.client.lend_transmit(),
            None => &[],
        }
    }

    /// Gives back `server`'s lent bytes not reported written: the adapter dropped the rest
    /// of its copy (see [`Client::unlend_transmit`]).
    pub fn unlend_transmit(&mut self, server: ServerId) {
        if let Some(s) = self.server_by_id(server) {
            s.client.unlend_transmit();
            self.touch(server.index);
        }
    }

    /// Fires `server`'s own deadlines due at `now` (its timers, its actions' deadlines),
    /// without starting a step: for an adapter about to lend or write that server's bytes,
    /// so that an action whose deadline passed since the last
    /// [`handle_timeout`](Self::handle_timeout) is withdrawn, not written late (timers fire
    /// at their granularity, and a deadline may pass between two steps). Drain
    /// [`poll_output`](Self::poll_output) after it.
    pub fn handle_server_timeout(&mut self, now: Instant, server: ServerId) {
        let Some(s) = self.server_by_id(server) else {
            return;
        };
        if s.client.poll_timeout().is_some_and(|d| d <= now) {
            s.client.handle_timeout(now);
            self.now = Some(now);
            self.touch(server.index);
        }
    }

    /// Marks `n` bytes of [`transmit`](Self::transmit) as taken by the transport (see
    /// [`Client::advance_transmit`]).
    pub fn advance_transmit(&mut self, server: ServerId, n: usize) {
        if let Some(s) = self.server_by_id(server) {
            s.client.advance_transmit(n);
        }
    }

    /// Actions withdrawn from `server`'s [`transmit`](Self::transmit) so far (0 for a
    /// removed server; see [`Client::actions_withdrawn`]).
    pub fn actions_withdrawn(&self, server: ServerId) -> u64 {
        self.client_by_id(server)
            .map_or(0, Client::actions_withdrawn)
    }

    /// The next server with bytes to hand out: [`transmit`](Self::transmit) holds bytes
    /// not lent (nor written) since it was last returned here, so an adapter with one
    /// writer per server (a task each) wakes only those with bytes to write instead of
    /// asking every server after every call. A server is listed at most once until
    /// returned (the queue holds at most one entry per server); any later call that leaves
    /// unlent bytes in its buffer lists it again. Bytes that are all lent do not list it:
    /// the adapter holding the copy writes them when its transport has room, and bytes
    /// given back and lent again in one turn (to withdraw what came due) are no news, or
    /// a stalled socket would wake its writer at every turn.
    pub fn poll_writable(&mut self) -> Option<ServerId> {
        while let Some(id) = self.writable.pop_front() {
            if let Some(s) = self.server_by_id(id) {
                s.write_queued = false;
                if s.client.has_unlent_transmit() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Messages `server` has decoded so far (for the adapter's per-step message budget).
    pub fn messages_in(&self, server: ServerId) -> u64 {
        self.client_by_id(server).map_or(0, Client::messages_in)
    }

    // ----- the application's side ---------------------------------------------------------

    /// The ID of the server named `name`.
    pub fn id(&self, name: &str) -> Option<ServerId> {
        let index = *self.names.get(name)?;
        let generation = self.slots.get(index)?.generation;
        Some(ServerId { index, generation })
    }

    /// The name of `server`.
    pub fn name(&self, server: ServerId) -> Option<&ServerName> {
        self.slots
            .get(server.index)
            .filter(|slot| slot.generation == server.generation)
            .and_then(|slot| slot.server.as_ref())
            .map(|s| &s.name)
    }

    /// Every server, in slot order.
    pub fn servers(&self) -> impl Iterator<Item = (ServerId, &ServerName)> + '_ {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let s = slot.server.as_ref()?;
            let id = ServerId {
                index,
                generation: slot.generation,
            };
            Some((id, &s.name))
        })
    }

    /// How many servers the fleet holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the fleet holds no server.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Where the server named `name` is now.
    pub fn status(&self, name: &str) -> Option<&ServerStatus> {
        let index = *self.names.get(name)?;
        Some(&self.slots.get(index)?.server.as_ref()?.status)
    }

    /// The client of the server named `name`, read-only (its config, stats, readiness).
    pub fn client(&self, name: &str) -> Option<&Client> {
        let index = *self.names.get(name)?;
        Some(&self.slots.get(index)?.server.as_ref()?.client)
    }

    /// Runs `f` on the client of the server named `name` (to add a filter, change the event
    /// mask, log off...), then collects what it caused. `None` if there is no such server.
    pub fn with_client<R>(
        &mut self,
        now: Instant,
        name: &str,
        f: impl FnOnce(&mut Client, Instant) -> R,
    ) -> Option<R> {
        let index = *self.names.get(name)?;
        self.now = Some(now);
        let r = f(&mut self.server_mut(index)?.client, now);
        self.touch(index);
        Some(r)
    }

    /// Cancels an action pending on the server named `server` (see `Client::cancel`).
    pub fn cancel(&mut self, now: Instant, server: &str, id: &ActionId) -> bool {
        self.with_client(now, server, |c, now| c.cancel(now, id))
            .unwrap_or(false)
    }

    /// Takes back the outcome of an action on `server` whose caller will never take it
    /// (see [`Client::unclaimed`]): `id` is the one [`send`](Self::send) returned, `mark`
    /// the one it was sent with. The answer it holds reaches the merged stream as a
    /// [`StreamItem::LateAnswer`] naming `server`, only while the client under that name
    /// is the one, and its session the one, that received it.
    pub fn unclaimed(
        &mut self,
        now: Instant,
        server: &str,
        id: &ActionId,
        mark: Option<u64>,
        outcome: Outcome,
    ) {
        self.with_client(now, server, |c, now| c.unclaimed(now, id, mark, outcome));
    }

    /// Logs every server off (see `Client::logoff`); each closes after its Goodbye.
    pub fn logoff_all(&mut self, now: Instant) {
        self.each_client(now, |c, now| c.logoff(now));
    }

    /// Closes every server at once, without Logoff: every pending action completes now.
    /// The servers stay listed (status `Closed`) until removed.
    pub fn close_all(&mut self, now: Instant) {
        self.each_client(now, |c, now| c.close(now));
    }

    fn each_client(&mut self, now: Instant, mut f: impl FnMut(&mut Client, Instant)) {
        self.now = Some(now);
        for index in 0..self.slots.len() {
            if let Some(s) = self.server_mut(index) {
                f(&mut s.client, now);
                self.touch(index);
            }
        }
    }

    // ----- internals ----------------------------------------------------------------------

    pub(crate) fn server_mut(&mut self, index: usize) -> Option<&mut Server> {
        self.slots.get_mut(index)?.server.as_mut()
    }

    fn server_by_id(&mut self, id: ServerId) -> Option<&mut Server> {
        self.slots
            .get_mut(id.index)
            .filter(|slot| slot.generation == id.generation)?
            .server
            .as_mut()
    }

    fn client_by_id(&self, id: ServerId) -> Option<&Client> {
        self.slots
            .get(id.index)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.server.as_ref())
            .map(|s| &s.client)
    }

    fn status_changed(&mut self, server: ServerName, status: ServerStatus) {
        self.counters.status_changes += 1;
        self.outputs
            .push_back(FleetOutput::Status { server, status });
    }

    /// Collects what the client of slot `index` produced: its outputs become fleet outputs
    /// (connect requests queued for the budget), its deadline goes to the timer heap, and a
    /// server with events queued joins the event rotation.
    pub(crate) fn touch(&mut self, index: usize) {
        self.collect(index);
        self.compact_timers();
    }

    /// [`touch`](Self::touch) but the timer heap's compaction.
    fn collect(&mut self, index: usize) {
        let Fleet {
            slots,
            outputs,
            connects,
            writable,
            timers,
            ring,
            now,
            counters,
            ..
        } = self;
        let Some(slot) = slots.get_mut(index) else {
            return;
        };
        let id = ServerId {
            index,
            generation: slot.generation,
        };
        let Some(s) = slot.server.as_mut() else {
            return;
        };
        loop {
            let status = match s.client.poll_output() {
                Output::Wait(deadline) => {
                    if deadline != s.timer {
                        s.timer = deadline;
                        if let Some(at) = deadline {
                            timers.push(at, index, id.generation);
                        }
                    }
                    break;
                }
                Output::Connect => {
                    s.connect_wanted = true;
                    if !s.connect_queued {
                        s.connect_queued = true;
                        connects.push_back(id);
                    }
                    ServerStatus::Connecting
                }
                Output::Close => {
                    if s.connect_wanted {
                        // The connect never came out: there is nothing to close.
                        s.connect_wanted = false;
                    } else {
                        outputs.push_back(FleetOutput::Close(id));
                    }
                    continue;
                }
                Output::Notice(Notice::Ready { ami_version }) => {
                    ServerStatus::Ready { ami_version }
                }
                Output::Notice(Notice::Completed {
                    id: action,
                    outcome,
                }) => {
                    outputs.push_back(FleetOutput::Completed {
                        server: s.name.clone(),
                        id: action,
                        outcome,
                    });
                    continue;
                }
                Output::Notice(Notice::Disconnected {
                    reason,
                    retry_at,
                    breaker_open,
                }) => {
                    // `now` is set by every call that reaches a client, so `until` is known.
                    let Some(until) = retry_at.or(*now) else {
                        continue;
                    };
                    if breaker_open {
                        ServerStatus::BreakerOpen { until, reason }
                    } else {
                        ServerStatus::BackingOff { until, reason }
                    }
                }
                Output::Notice(Notice::Closed { reason }) => ServerStatus::Closed { reason },
            };
            if s.status != status {
                say_status(&mut s.said, &s.name, &status);
                s.status = status.clone();
                counters.status_changes += 1;
                outputs.push_back(FleetOutput::Status {
                    server: s.name.clone(),
                    status,
                });
            }
        }
        if s.client.has_stream_items() {
            ring.join(index);
        }
        if !s.write_queued && s.client.has_unlent_transmit() {
            s.write_queued = true;
            writable.push_back(id);
        }
    }
}

/// FNV-1a over a server name's bytes: mixed into a seed the caller gave, so that servers
/// sharing it still get prefixes of their own.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: spreads a counter into an unrelated-looking seed.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
