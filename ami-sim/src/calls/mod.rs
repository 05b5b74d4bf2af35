//! Simulated calls: Local channel pairs running the dialplan over virtual time, with the
//! events Asterisk 22 emits for them (see AMI-PROTOCOL.md §7 and `originate_async.raw`).
//!
//! An originate of `Local/<exten>@<context>` creates `Local/<exten>@<context>-XXXXXXXX;1`
//! (the originated channel) and `...;2` (which runs the extension). When `;2` answers, `;1`
//! is answered too and runs the originate's application (or extension). Whichever side ends
//! first tears the call down. Steps are `SimConfig::step_delay` apart; `Wait(n)` and
//! timeouts take their real (virtual) time. Dial strings that are not `Local/`, and
//! extensions that do not exist, fail after one step with Reason 0 and no channel at all,
//! as a failed channel request does in Asterisk.

pub(crate) mod channel;
pub(crate) mod dialplan;
pub(crate) mod queues;

use crate::classes::ClassMask;
use crate::clock::{later, WallClock};
use crate::events::{escape_c, Event, EventBuilder};
use crate::SessionId;
use channel::{ChanState, Channel};
use dialplan::Prio;
use queues::{Entry, Queues};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most events one `Burst` UserEvent raises: the count a client names in an Originate's
/// `Data: Burst,Count: N` or in the `burst` extension's `BURST_N` variable is cut to it.
/// A million events of some 500 bytes is far more than any client's test needs and more
/// than any session can hold (the default `max_backlog` closes a reader after about a
/// tenth of them); without a cap, one Originate made the simulator build events until
/// the allocator failed.
pub const MAX_BURST: usize = 1_000_000;

/// Where an originated channel goes once it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallTarget {
    /// Run an application (`Application`/`Data` headers). `Wait(n)` lasts n seconds,
    /// `Hangup` ends at once, anything else runs until the other side hangs up.
    App {
        /// Application name.
        app: String,
        /// Its argument.
        data: String,
    },
    /// Continue in the dialplan (`Context`/`Exten`/`Priority` headers).
    Exten {
        /// Context.
        context: String,
        /// Extension.
        exten: String,
        /// Starting priority (1 = first).
        priority: u32,
    },
}

/// A call started by the test harness with [`SimServer::originate_call`], as if another
/// connection had sent an async Originate.
///
/// [`SimServer::originate_call`]: crate::SimServer::originate_call
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    /// Dial string, e.g. `Local/wait10@ami-test`.
    pub channel: String,
    /// What the originated channel does once answered.
    pub target: CallTarget,
    /// `CallerID`, e.g. `AMI Test <5551000>`.
    pub caller_id: Option<String>,
    /// Channel variables set on both legs.
    pub variables: Vec<(String, String)>,
    /// Dial timeout (no answer within it fails the call with Reason 3).
    pub timeout: Duration,
    /// ActionID echoed in the OriginateResponse event.
    pub action_id: Option<String>,
    /// Preset Uniqueid of the `;1` channel (`ChannelId`).
    pub channel_id: Option<String>,
    /// Whether an OriginateResponse event is broadcast (true, like an async Originate).
    pub report: bool,
}

impl CallRequest {
    /// A call to `channel` that runs `Wait(wait_secs)` once answered, 30 s timeout,
    /// reported with an OriginateResponse.
    pub fn new(channel: &str, wait_secs: u32) -> CallRequest {
        CallRequest {
            channel: channel.to_string(),
            target: CallTarget::App {
                app: "Wait".to_string(),
                data: wait_secs.to_string(),
            },
            caller_id: None,
            variables: Vec::new(),
            timeout: Duration::from_secs(30),
            action_id: None,
            channel_id: None,
            report: true,
        }
    }
}

/// Identifies a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Who asked for a call and how its outcome is reported.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) session: Option<SessionId>,
    pub(crate) action_id: Option<String>,
    pub(crate) sync: bool,
    pub(crate) report: bool,
    pub(crate) target: CallTarget,
    pub(crate) cid_num: Option<String>,
    pub(crate) cid_name: Option<Vec<u8>>,
    pub(crate) timeout: Duration,
    pub(crate) channel_id: Option<String>,
    pub(crate) other_channel_id: Option<String>,
    pub(crate) vars: Vec<(String, String)>,
    pub(crate) account: String,
}

/// What a call step produced, in order.
#[derive(Debug)]
pub(crate) enum Effect {
    /// An event to broadcast.
    Event(Event),
    /// A `Burst`'s `n` UserEvents: `head` (the unfinished event) then `Seq: i`, built one
    /// at a time as they are broadcast, so that the count a client names costs one
    /// event's memory, not `n`.
    Burst { head: Vec<u8>, n: usize },
    /// A sync Originate finished: answer the blocked session.
    SyncDone {
        session: SessionId,
        action_id: Option<String>,
        ok: bool,
    },
}

#[derive(Debug, Clone)]
enum Step {
    Exec(usize),
    AppDone,
    DialTimeout,
    AbsTimeout(usize),
    Fail(u8),
    QueueConnect { queue: String, member: usize },
    QueueDone { queue: String, member: usize },
    QueueTimeout { queue: String, leg: usize },
}

/// The agent leg of a queue call (synthetic, see [`queues`]).
#[derive(Debug, Clone)]
struct AgentLeg {
    queue: String,
    member: usize,
    channel: Channel,
    hold: u64,
    connected: Instant,
    leg: usize,
}

#[derive(Debug)]
struct Call {
    dial: String,
    device: String,
    legs: Vec<Channel>,
    progs: [Vec<Prio>; 2],
    pcs: [usize; 2],
    origin: Origin,
    answered: bool,
    timers: Vec<(Instant, u64)>,
    agent: Option<AgentLeg>,
}

/// Counters the engine keeps.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallCounters {
    pub(crate) started: u64,
    pub(crate) answered: u64,
    pub(crate) failed: u64,
    pub(crate) processed: u64,
}

/// Settings the engine needs.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub(crate) step: Duration,
    pub(crate) echo_timeout: Duration,
    pub(crate) system_name: Option<String>,
    pub(crate) max_calls: usize,
}

/// All calls and queues.
#[derive(Debug)]
pub(crate) struct Engine {
    cfg: EngineConfig,
    clock: WallClock,
    calls: BTreeMap<u64, Call>,
    timers: BTreeMap<(Instant, u64), (u64, Step)>,
    timer_seq: u64,
    next_call: u64,
    local_seq: u32,
    uniq: u64,
    pub(crate) queues: Queues,
    pub(crate) globals: Vec<(String, String)>,
    pub(crate) counters: CallCounters,
}

/// Why an originate was refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartError {
    /// `maxcalls` reached.
    TooManyCalls,
}

fn cause_text(cause: u8) -> &'static str {
    match cause {
        16 => "Normal Clearing",
        17 => "User busy",
        19 => "User alerting, no answer",
        21 => "Call Rejected",
        34 => "Circuit/channel congestion",
        _ => "Unknown",
    }
}

fn secs_of(data: &str) -> Duration {
    let v: f64 = data
        .split(',')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0.0);
    if v.is_finite() && v > 0.0 {
        Duration::from_secs_f64(v.min(1e9))
    } else {
        Duration::ZERO
    }
}

impl Engine {
    pub(crate) fn new(cfg: EngineConfig, clock: WallClock, now: Instant) -> Engine {
        Engine {
            cfg,
            clock,
            calls: BTreeMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_call: 1,
            local_seq: 0,
            uniq: 0,
            queues: Queues::new(clock.secs(now)),
            globals: Vec::new(),
            counters: CallCounters::default(),
        }
    }

    fn sys(&self) -> Option<&str> {
        self.cfg.system_name.as_deref()
    }

    fn ev(&self, name: &str, class: ClassMask) -> EventBuilder {
        EventBuilder::new(name, class, self.sys())
    }

    fn chan_ev(&self, name: &str, class: ClassMask, ch: &Channel) -> EventBuilder {
        let mut e = self.ev(name, class);
        ch.block(&mut e, "");
        e
    }

    fn new_uniqueid(&mut self, now: Instant) -> String {
        let id = format!("{}.{}", self.clock.secs(now), self.uniq);
        self.uniq += 1;
        id
    }

    fn schedule(&mut self, id: u64, at: Instant, step: Step) {
        let key = (at, self.timer_seq);
        self.timer_seq += 1;
        self.timers.insert(key, (id, step));
        if let Some(c) = self.calls.get_mut(&id) {
            c.timers.push(key);
        }
    }

    /// Number of calls up (including ones still dialling).
    pub(crate) fn active(&self) -> usize {
        self.calls.len()
    }

    /// The next step's time.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// Runs the earliest step if it is due at `now`. Returns its time, or `None`.
    pub(crate) fn fire_one(&mut self, now: Instant, fx: &mut Vec<Effect>) -> Option<Instant> {
        let (&key, _) = self.timers.iter().next()?;
        if key.0 > now {
            return None;
        }
        let (id, step) = self.timers.remove(&key)?;
        let at = key.0;
        if let Some(c) = self.calls.get_mut(&id) {
            c.timers.retain(|k| *k != key);
        } else {
            return Some(at);
        }
        self.run_step(at, id, step, fx);
        Some(at)
    }

    /// Drops every call and its timers without any event (server restart).
    pub(crate) fn clear(&mut self) {
        self.calls.clear();
        self.timers.clear();
        for q in &mut self.queues.list {
            q.entries.clear();
            for m in &mut q.members {
                m.in_call = false;
            }
        }
    }

    /// Starts a call. Events of the call's creation are pushed at once.
    pub(crate) fn originate(
        &mut self,
        now: Instant,
        dial: &str,
        origin: Origin,
        fx: &mut Vec<Effect>,
    ) -> Result<CallId, StartError> {
        if self.calls.len() >= self.cfg.max_calls {
            return Err(StartError::TooManyCalls);
        }
        let id = self.next_call;
        self.next_call += 1;
        self.counters.started += 1;
        let dial = dial.trim().to_string();
        let local = dial
            .strip_prefix("Local/")
            .or_else(|| dial.strip_prefix("local/"))
            .map(|rest| rest.split('/').next().unwrap_or(rest));
        let echo = origin
            .vars
            .iter()
            .find(|(k, _)| k == "ECHO_SECS")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map_or_else(|| self.echo_timeout(), Duration::from_secs);
        let burst_n = origin
            .vars
            .iter()
            .find(|(k, _)| k == "BURST_N")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(1000)
            .min(MAX_BURST);
        let parsed = local.and_then(|spec| {
            let (exten, context) = match spec.split_once('@') {
                Some((e, c)) => (e, c),
                None => (spec, "default"),
            };
            dialplan::program(context, exten, echo, burst_n)
                .map(|prog| (exten.to_string(), context.to_string(), prog))
        });
        let mut call = Call {
            dial: dial.clone(),
            device: dial.clone(),
            legs: Vec::new(),
            progs: [Vec::new(), Vec::new()],
            pcs: [0, 0],
            origin,
            answered: false,
            timers: Vec::new(),
            agent: None,
        };
        let Some((exten, context, prog)) = parsed else {
            self.calls.insert(id, call);
            self.schedule(id, later(now, self.cfg.step), Step::Fail(0));
            return Ok(CallId(id));
        };
        call.device = format!("Local/{exten}@{context}");
        let seq = self.local_seq;
        self.local_seq = self.local_seq.wrapping_add(1);
        let base = format!("Local/{exten}@{context}-{seq:08x}");
        let uid1 = match call.origin.channel_id.clone() {
            Some(u) => u,
            None => self.new_uniqueid(now),
        };
        let uid2 = match (&call.origin.other_channel_id, &call.origin.channel_id) {
            (Some(u), _) => u.clone(),
            (None, Some(u)) => format!("{u};2"),
            (None, None) => self.new_uniqueid(now),
        };
        let mk = |name: String, uid: String, state: ChanState| Channel {
            name,
            uniqueid: uid,
            linkedid: uid1.clone(),
            state,
            cid_num: None,
            cid_name: None,
            conn_num: None,
            conn_name: None,
            account: call.origin.account.clone(),
            context: context.clone(),
            exten: exten.clone(),
            priority: 1,
            app: String::new(),
            app_data: String::new(),
            vars: Vec::new(),
            created: now,
            answered: None,
        };
        let one = mk(format!("{base};1"), uid1.clone(), ChanState::Down);
        let two = mk(format!("{base};2"), uid2, ChanState::Ring);
        call.legs = vec![one, two];
        call.progs[1] = prog;
        self.calls.insert(id, call);
        self.creation_events(now, id, &exten, &context, fx);
        let timeout = self
            .calls
            .get(&id)
            .map_or(Duration::from_secs(30), |c| c.origin.timeout);
        self.schedule(id, later(now, self.cfg.step), Step::Exec(1));
        self.schedule(id, later(now, timeout), Step::DialTimeout);
        Ok(CallId(id))
    }

    fn creation_events(
        &mut self,
        _now: Instant,
        id: u64,
        exten: &str,
        context: &str,
        fx: &mut Vec<Effect>,
    ) {
        let sys = self.cfg.system_name.clone();
        let sys = sys.as_deref();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let push = |fx: &mut Vec<Effect>, e: EventBuilder| fx.push(Effect::Event(e.build()));
        let chan = |name: &str, class: ClassMask, ch: &Channel| {
            let mut e = EventBuilder::new(name, class, sys);
            ch.block(&mut e, "");
            e
        };
        push(fx, chan("Newchannel", ClassMask::CALL, &call.legs[0]));
        push(fx, chan("Newchannel", ClassMask::CALL, &call.legs[1]));
        {
            let one = &mut call.legs[0];
            one.app = "AppDial2".to_string();
            one.app_data = "(Outgoing Line)".to_string();
            let e = chan("Newexten", ClassMask::DIALPLAN, one)
                .field("Extension", exten)
                .field("Application", "AppDial2")
                .field("AppData", "(Outgoing Line)");
            push(fx, e);
        }
        let vars = call.origin.vars.clone();
        for (k, v) in vars.iter().rev() {
            if !call.legs[0].set_var(k, v) {
                continue;
            }
            let e = chan("VarSet", ClassMask::DIALPLAN, &call.legs[0])
                .field("Variable", k)
                .field("Value", escape_c(v.as_bytes()));
            push(fx, e);
        }
        let has_cid = call.origin.cid_num.is_some() || call.origin.cid_name.is_some();
        if has_cid {
            let (num, name) = (call.origin.cid_num.clone(), call.origin.cid_name.clone());
            let one = &mut call.legs[0];
            one.cid_num = num.clone();
            one.cid_name = name.clone();
            push(
                fx,
                chan("NewCallerid", ClassMask::CALL, one)
                    .field("CID-CallingPres", "0 (Presentation Allowed, Not Screened)"),
            );
            one.conn_num = num;
            one.conn_name = name;
            push(fx, chan("NewConnectedLine", ClassMask::CALL, one));
        }
        for (k, v) in &vars {
            if !call.legs[1].set_var(k, v) {
                continue;
            }
            let e = chan("VarSet", ClassMask::DIALPLAN, &call.legs[1])
                .field("Variable", k)
                .field("Value", escape_c(v.as_bytes()));
            push(fx, e);
        }
        if has_cid {
            let (num, name) = (call.origin.cid_num.clone(), call.origin.cid_name.clone());
            let two = &mut call.legs[1];
            two.cid_num = num.clone();
            two.cid_name = name.clone();
            two.conn_num = num;
            two.conn_name = name;
            push(
                fx,
                chan("NewCallerid", ClassMask::CALL, two)
                    .field("CID-CallingPres", "0 (Presentation Allowed, Not Screened)"),
            );
            push(fx, chan("NewConnectedLine", ClassMask::CALL, two));
        }
        let mut lb = EventBuilder::new("LocalBridge", ClassMask::CALL, sys);
        call.legs[0].block(&mut lb, "LocalOne");
        call.legs[1].block(&mut lb, "LocalTwo");
        push(
            fx,
            lb.field("Context", context)
                .field("Exten", exten)
                .field("LocalOptimization", "Yes"),
        );
        let mut db = EventBuilder::new("DialBegin", ClassMask::CALL, sys);
        call.legs[0].block(&mut db, "Dest");
        push(fx, db.field("DialString", format!("{exten}@{context}")));
    }

    fn run_step(&mut self, now: Instant, id: u64, step: Step, fx: &mut Vec<Effect>) {
        match step {
            Step::Exec(leg) => self.exec(now, id, leg, fx),
            Step::AppDone => self.end_answered(now, id, 0, 0, fx),
            Step::DialTimeout => {
                if self.calls.get(&id).is_some_and(|c| !c.answered) {
                    self.fail(now, id, 3, 19, fx);
                }
            }
            Step::AbsTimeout(leg) => self.abs_timeout(now, id, leg, fx),
            Step::Fail(reason) => self.fail(now, id, reason, 0, fx),
            Step::QueueConnect { queue, member } => self.queue_connect(now, id, &queue, member, fx),
            Step::QueueDone { queue, member } => self.queue_done(now, id, &queue, member, fx),
            Step::QueueTimeout { queue, leg } => self.queue_timeout(now, id, &queue, leg, fx),
        }
    }

    fn exec(&mut self, now: Instant, id: u64, leg: usize, fx: &mut Vec<Effect>) {
        let step = self.cfg.step;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.legs.len() != 2 {
            return;
        }
        let pc = call.pcs[leg];
        let Some(prio) = call.progs[leg].get(pc).cloned() else {
            // Falling off the end of the extension hangs the channel up.
            let answered = call.answered;
            if answered {
                self.end_answered(now, id, leg, 16, fx);
            } else {
                self.fail(now, id, 0, 16, fx);
            }
            return;
        };
        call.pcs[leg] += 1;
        let answered = call.answered;
        {
            let ch = &mut call.legs[leg];
            ch.priority = pc as u32 + 1;
            ch.app = prio.app.to_string();
            ch.app_data = prio.data.clone();
        }
        let ch = call.legs[leg].clone();
        let e = self
            .chan_ev("Newexten", ClassMask::DIALPLAN, &ch)
            .field("Extension", &ch.exten)
            .field("Application", prio.app)
            .field("AppData", &prio.data);
        fx.push(Effect::Event(e.build()));
        match prio.app {
            "Answer" => {
                let up_now = self.set_up(now, id, leg, fx);
                let _ = up_now;
                if leg == 1 && !answered {
                    self.answer(now, id, fx);
                }
                self.schedule(id, later(now, step), Step::Exec(leg));
            }
            "Wait" => self.schedule(
                id,
                later(now, secs_of(&prio.data).max(step)),
                Step::Exec(leg),
            ),
            "Set" => {
                let (k, v) = prio.data.split_once('=').unwrap_or((&prio.data, ""));
                if k == "TIMEOUT(absolute)" {
                    self.schedule(id, later(now, secs_of(v).max(step)), Step::AbsTimeout(leg));
                } else {
                    // The dialplan's own variables, a few short ones: a full channel
                    // skips one, as Asterisk's Set() carries on after a failed set.
                    let _ = self.set_var_leg(id, leg, k, v, fx);
                }
                self.schedule(id, later(now, step), Step::Exec(leg));
            }
            "Echo" => {}
            "UserEvent" => {
                self.dialplan_user_event(id, leg, &prio.data, fx);
                self.schedule(id, later(now, step), Step::Exec(leg));
            }
            "Hangup" => {
                if answered {
                    self.end_answered(now, id, leg, 16, fx);
                } else {
                    self.fail(now, id, 0, 16, fx);
                }
            }
            "Busy" | "Congestion" => {
                let (reason, cause) = if prio.app == "Busy" { (5, 17) } else { (8, 34) };
                if answered {
                    self.end_answered(now, id, leg, cause, fx);
                } else {
                    self.fail(now, id, reason, cause, fx);
                }
            }
            "Queue" => self.queue_join(now, id, leg, &prio.data, fx),
            _ => self.schedule(id, later(now, step), Step::Exec(leg)),
        }
    }

    /// Sets a leg Up (Newstate) unless it already is. Returns whether it changed.
    fn set_up(&mut self, now: Instant, id: u64, leg: usize, fx: &mut Vec<Effect>) -> bool {
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        let ch = &mut call.legs[leg];
        if ch.state == ChanState::Up {
            return false;
        }
        ch.state = ChanState::Up;
        ch.answered = Some(now);
        let ch = ch.clone();
        fx.push(Effect::Event(
            self.chan_ev("Newstate", ClassMask::CALL, &ch).build(),
        ));
        true
    }

    /// Sets a variable on a leg and raises its VarSet; false when the leg is gone or its
    /// variables are full (nothing set, no event: Asterisk's "Variable not set").
    fn set_var_leg(&mut self, id: u64, leg: usize, k: &str, v: &str, fx: &mut Vec<Effect>) -> bool {
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        if !call.legs[leg].set_var(k, v) {
            return false;
        }
        let ch = call.legs[leg].clone();
        let e = self
            .chan_ev("VarSet", ClassMask::DIALPLAN, &ch)
            .field("Variable", k)
            .field("Value", escape_c(v.as_bytes()));
        fx.push(Effect::Event(e.build()));
        true
    }

    fn dialplan_user_event(&mut self, id: u64, leg: usize, data: &str, fx: &mut Vec<Effect>) {
        let Some(ch) = self.calls.get(&id).map(|c| c.legs[leg].clone()) else {
            return;
        };
        let mut parts = data.split(',');
        let name = parts.next().unwrap_or("").to_string();
        let body: Vec<&str> = parts.collect();
        if name == "Burst" {
            // `burst`: BURST_N events in a row, as the fixture's While loop produces.
            let n = body
                .first()
                .and_then(|b| b.split_once(':'))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(1000)
                // The count may be a client's (an Originate's `Data`): capped like `BURST_N`.
                .min(MAX_BURST);
            let head = self
                .chan_ev("UserEvent", ClassMask::USER, &ch)
                .field("UserEvent", "Burst")
                .unfinished();
            fx.push(Effect::Burst { head, n });
            return;
        }
        let mut e = self
            .chan_ev("UserEvent", ClassMask::USER, &ch)
            .field("UserEvent", &name);
        for line in body {
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            e.push(k.trim(), v.trim_start());
        }
        fx.push(Effect::Event(e.build()));
    }

    /// `;2` answered: `;1` is answered, the originate succeeds, `;1` starts its target.
    fn answer(&mut self, now: Instant, id: u64, fx: &mut Vec<Effect>) {
        let step = self.cfg.step;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.answered = true;
        self.counters.answered += 1;
        let origin = call.origin.clone();
        let one = call.legs[0].clone();
        let device = call.device.clone();
        if origin.report {
            let mut e = self.ev("OriginateResponse", ClassMask::CALL);
            if let Some(aid) = &origin.action_id {
                e.push("ActionID", aid);
            }
            e.push("Response", "Success");
            e.push("Channel", &one.name);
            push_target(&mut e, &origin.target);
            e.push("Reason", "4");
            e.push("Uniqueid", &one.uniqueid);
            e.push("CallerIDNum", one.cid_num_text());
            e.push(
                "CallerIDName",
                one.cid_name.clone().unwrap_or(b"<unknown>".to_vec()),
            );
            fx.push(Effect::Event(e.build()));
        }
        self.set_up(now, id, 0, fx);
        let one = match self.calls.get(&id) {
            Some(c) => c.legs[0].clone(),
            None => return,
        };
        let mut de = self.ev("DialEnd", ClassMask::CALL);
        one.block(&mut de, "Dest");
        fx.push(Effect::Event(de.field("DialStatus", "ANSWER").build()));
        for _ in 0..2 {
            let e = self
                .ev("DeviceStateChange", ClassMask::CALL)
                .field("Device", &device)
                .field("State", "INUSE");
            fx.push(Effect::Event(e.build()));
        }
        if origin.sync {
            if let Some(s) = origin.session {
                fx.push(Effect::SyncDone {
                    session: s,
                    action_id: origin.action_id.clone(),
                    ok: true,
                });
            }
        }
        // `;1` runs the originate's target.
        match origin.target {
            CallTarget::App { app, data } => {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.legs[0].app = app.clone();
                    call.legs[0].app_data = data.clone();
                }
                if app.eq_ignore_ascii_case("Wait") {
                    self.schedule(id, later(now, secs_of(&data).max(step)), Step::AppDone);
                } else if app.eq_ignore_ascii_case("Hangup") {
                    self.schedule(id, later(now, step), Step::AppDone);
                } else if app.eq_ignore_ascii_case("UserEvent") {
                    self.dialplan_user_event(id, 0, &data, fx);
                    self.schedule(id, later(now, step), Step::AppDone);
                }
            }
            CallTarget::Exten {
                context,
                exten,
                priority,
            } => {
                let echo = self.echo_timeout();
                match dialplan::program(&context, &exten, echo, 1000) {
                    Some(prog) => {
                        if let Some(call) = self.calls.get_mut(&id) {
                            call.legs[0].context = context;
                            call.legs[0].exten = exten;
                            call.progs[0] = prog;
                            call.pcs[0] = priority.saturating_sub(1) as usize;
                        }
                        self.schedule(id, later(now, step), Step::Exec(0));
                    }
                    None => self.schedule(id, later(now, step), Step::AppDone),
                }
            }
        }
    }

    /// The configured echo run time, sub-second part kept (the timers are `Duration`s).
    /// Zero keeps its old meaning of 1 s: `TIMEOUT(absolute)=0` would disable the timeout
    /// and leave the call up for ever.
    fn echo_timeout(&self) -> Duration {
        if self.cfg.echo_timeout.is_zero() {
            Duration::from_secs(1)
        } else {
            self.cfg.echo_timeout
        }
    }

    fn abs_timeout(&mut self, now: Instant, id: u64, leg: usize, fx: &mut Vec<Effect>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        // Jump to the `T` extension, whose only priority is Hangup.
        let ch = &mut call.legs[leg];
        ch.exten = "T".to_string();
        ch.priority = 1;
        ch.app = "Hangup".to_string();
        ch.app_data = String::new();
        let ch = ch.clone();
        let e = self
            .chan_ev("Newexten", ClassMask::DIALPLAN, &ch)
            .field("Extension", "T")
            .field("Application", "Hangup")
            .field("AppData", "");
        fx.push(Effect::Event(e.build()));
        if self.calls.get(&id).is_some_and(|c| c.answered) {
            self.end_answered(now, id, leg, 16, fx);
        } else {
            self.fail(now, id, 0, 16, fx);
        }
    }

    fn hangup_ev(&self, name: &str, ch: &Channel, cause: u8) -> Event {
        let mut e = self
            .chan_ev(name, ClassMask::CALL, ch)
            .field("Cause", cause.to_string());
        if name == "Hangup" {
            e.push("Cause-txt", cause_text(cause));
        }
        e.build()
    }

    fn cdr(&self, now: Instant, call: &Call, leg: usize, disposition: &str) -> Event {
        let ch = &call.legs[leg];
        let start = ch.created;
        let answer = ch.answered;
        let duration = now.saturating_duration_since(start).as_secs();
        let billable = answer.map_or(0, |a| now.saturating_duration_since(a).as_secs());
        let callerid = match (&ch.cid_name, &ch.cid_num) {
            (Some(n), Some(u)) => {
                let mut v = b"\"".to_vec();
                v.extend_from_slice(n);
                v.extend_from_slice(format!("\" <{u}>").as_bytes());
                v
            }
            (None, Some(u)) => format!("<{u}>").into_bytes(),
            (Some(n), None) => n.clone(),
            (None, None) => Vec::new(),
        };
        self.ev("Cdr", ClassMask::CDR)
            .field("AccountCode", &ch.account)
            .field("Source", ch.cid_num.as_deref().unwrap_or(""))
            .field("Destination", &ch.exten)
            .field("DestinationContext", &ch.context)
            .field("CallerID", callerid)
            .field("Channel", &ch.name)
            .field("DestinationChannel", "")
            .field("LastApplication", &ch.app)
            .field("LastData", &ch.app_data)
            .field("StartTime", self.clock.cdr_time(start))
            .field(
                "AnswerTime",
                answer.map(|a| self.clock.cdr_time(a)).unwrap_or_default(),
            )
            .field("EndTime", self.clock.cdr_time(now))
            .field("Duration", duration.to_string())
            .field("BillableSeconds", billable.to_string())
            .field("Disposition", disposition)
            .field("AMAFlags", "DOCUMENTATION")
            .field("UniqueID", &ch.uniqueid)
            .field("UserField", "")
            .build()
    }

    fn device_idle(&self, call: &Call, fx: &mut Vec<Effect>) {
        for _ in 0..2 {
            let e = self
                .ev("DeviceStateChange", ClassMask::CALL)
                .field("Device", &call.device)
                .field("State", "NOT_INUSE");
            fx.push(Effect::Event(e.build()));
        }
    }

    fn remove_call(&mut self, id: u64) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        for key in &call.timers {
            self.timers.remove(key);
        }
        self.counters.processed += 1;
        Some(call)
    }

    /// Tears down an answered call that `initiator` ended.
    fn end_answered(
        &mut self,
        now: Instant,
        id: u64,
        initiator: usize,
        cause: u8,
        fx: &mut Vec<Effect>,
    ) {
        self.leave_queue(now, id, fx);
        let Some(call) = self.remove_call(id) else {
            return;
        };
        if call.legs.len() != 2 {
            return;
        }
        let (one, two) = (&call.legs[0], &call.legs[1]);
        if initiator == 0 {
            fx.push(Effect::Event(self.hangup_ev("HangupRequest", two, cause)));
            fx.push(Effect::Event(self.cdr(now, &call, 0, "ANSWERED")));
            fx.push(Effect::Event(self.hangup_ev("Hangup", one, cause)));
            fx.push(Effect::Event(self.hangup_ev("SoftHangupRequest", two, 16)));
            fx.push(Effect::Event(self.hangup_ev("Hangup", two, cause)));
            fx.push(Effect::Event(self.cdr(now, &call, 1, "ANSWERED")));
        } else {
            fx.push(Effect::Event(self.hangup_ev("SoftHangupRequest", two, 16)));
            fx.push(Effect::Event(self.hangup_ev("HangupRequest", one, 16)));
            fx.push(Effect::Event(self.cdr(now, &call, 1, "ANSWERED")));
            fx.push(Effect::Event(self.hangup_ev("Hangup", two, cause)));
            fx.push(Effect::Event(self.hangup_ev("Hangup", one, cause)));
            fx.push(Effect::Event(self.cdr(now, &call, 0, "ANSWERED")));
        }
        self.device_idle(&call, fx);
    }

    /// Fails a call that was never answered (no answer, busy, congestion, hangup, no such
    /// extension or channel type) and reports the failure.
    fn fail(&mut self, now: Instant, id: u64, reason: u8, cause: u8, fx: &mut Vec<Effect>) {
        self.leave_queue(now, id, fx);
        let Some(call) = self.remove_call(id) else {
            return;
        };
        self.counters.failed += 1;
        if call.legs.len() == 2 {
            let disposition = match reason {
                3 => "NO ANSWER",
                5 => "BUSY",
                8 => "CONGESTION",
                _ => "FAILED",
            };
            let (one, two) = (&call.legs[0], &call.legs[1]);
            fx.push(Effect::Event(self.hangup_ev("HangupRequest", two, cause)));
            fx.push(Effect::Event(self.hangup_ev("Hangup", one, cause)));
            fx.push(Effect::Event(self.hangup_ev("SoftHangupRequest", two, 16)));
            fx.push(Effect::Event(self.hangup_ev("Hangup", two, cause)));
            fx.push(Effect::Event(self.cdr(now, &call, 0, disposition)));
            fx.push(Effect::Event(self.cdr(now, &call, 1, disposition)));
        }
        let o = &call.origin;
        if o.report {
            let mut e = self.ev("OriginateResponse", ClassMask::CALL);
            if let Some(aid) = &o.action_id {
                e.push("ActionID", aid);
            }
            e.push("Response", "Failure");
            e.push("Channel", &call.dial);
            push_target(&mut e, &o.target);
            e.push("Reason", reason.to_string());
            e.push("Uniqueid", o.channel_id.as_deref().unwrap_or("<unknown>"));
            e.push("CallerIDNum", o.cid_num.as_deref().unwrap_or("<unknown>"));
            e.push(
                "CallerIDName",
                o.cid_name.clone().unwrap_or(b"<unknown>".to_vec()),
            );
            fx.push(Effect::Event(e.build()));
        }
        if o.sync {
            if let Some(s) = o.session {
                fx.push(Effect::SyncDone {
                    session: s,
                    action_id: o.action_id.clone(),
                    ok: false,
                });
            }
        }
        if call.legs.len() == 2 {
            self.device_idle(&call, fx);
        }
    }

    /// Hangs up the channel called `name` (the AMI Hangup action). False if unknown.
    pub(crate) fn hangup_channel(
        &mut self,
        now: Instant,
        name: &str,
        cause: u8,
        fx: &mut Vec<Effect>,
    ) -> bool {
        let Some((id, leg)) = self.find(name) else {
            return false;
        };
        let answered = self.calls.get(&id).is_some_and(|c| c.answered);
        if answered {
            self.end_answered(now, id, leg, cause, fx);
        } else {
            self.fail(now, id, 1, cause, fx);
        }
        true
    }

    /// Ends a call by id (driver helper). False if it is already over.
    pub(crate) fn hangup_call(&mut self, now: Instant, id: CallId, fx: &mut Vec<Effect>) -> bool {
        let Some(call) = self.calls.get(&id.0) else {
            return false;
        };
        if call.legs.len() != 2 {
            self.fail(now, id.0, 0, 16, fx);
        } else if call.answered {
            self.end_answered(now, id.0, 1, 16, fx);
        } else {
            self.fail(now, id.0, 1, 16, fx);
        }
        true
    }

    /// The call and leg of the channel called `name`, or else of the channel whose Uniqueid
    /// (a ChannelId, say) is `name`: both case-insensitive, like Asterisk's
    /// `ast_channel_get_by_name`, which tries every name before any Uniqueid.
    pub(crate) fn find(&self, name: &str) -> Option<(u64, usize)> {
        let by = |matches: &dyn Fn(&Channel) -> bool| {
            self.calls
                .iter()
                .find_map(|(id, c)| c.legs.iter().position(matches).map(|leg| (*id, leg)))
        };
        if name.is_empty() {
            return None;
        }
        by(&|ch| ch.name.eq_ignore_ascii_case(name))
            .or_else(|| by(&|ch| ch.uniqueid.eq_ignore_ascii_case(name)))
    }

    /// The channel called `name`.
    pub(crate) fn channel(&self, name: &str) -> Option<&Channel> {
        let (id, leg) = self.find(name)?;
        self.calls.get(&id).map(|c| &c.legs[leg])
    }

    /// Every live channel, oldest call first, `;1` before `;2`.
    pub(crate) fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.calls.values().flat_map(|c| c.legs.iter())
    }

    /// Sets a variable on a channel (Setvar), with its VarSet event. `None` if the channel
    /// is unknown; `Some(false)` if its variables are full (nothing set).
    pub(crate) fn set_channel_var(
        &mut self,
        name: &str,
        var: &str,
        value: &str,
        fx: &mut Vec<Effect>,
    ) -> Option<bool> {
        let (id, leg) = self.find(name)?;
        Some(self.set_var_leg(id, leg, var, value, fx))
    }

    /// Seconds a call has been up (for Status/CoreShowChannels).
    pub(crate) fn uptime_of(&self, ch: &Channel, now: Instant) -> u64 {
        now.saturating_duration_since(ch.created).as_secs()
    }

    /// The channel of a call leg.
    pub(crate) fn leg(&self, call: u64, leg: usize) -> Option<&Channel> {
        self.calls.get(&call).and_then(|c| c.legs.get(leg))
    }

    // ----- queues -----

    fn queue_join(&mut self, now: Instant, id: u64, leg: usize, data: &str, fx: &mut Vec<Effect>) {
        let step = self.cfg.step;
        let mut args = data.split(',');
        let qname = args.next().unwrap_or("").to_string();
        let timeout = args.nth(3).map(secs_of).unwrap_or(Duration::ZERO);
        let Some(ch) = self.leg(id, leg).cloned() else {
            return;
        };
        let Some(q) = self.queues.get_mut(&qname) else {
            self.schedule(id, later(now, step), Step::Exec(leg));
            return;
        };
        let position = q.entries.len() + 1;
        q.entries.push(Entry {
            call: id,
            leg,
            joined: now,
            original_position: position,
            ringing: false,
        });
        let count = q.entries.len();
        let e = self
            .chan_ev("QueueCallerJoin", ClassMask::AGENT, &ch)
            .field("Queue", &qname)
            .field("Position", position.to_string())
            .field("Count", count.to_string());
        fx.push(Effect::Event(e.build()));
        if !timeout.is_zero() {
            self.schedule(
                id,
                later(now, timeout),
                Step::QueueTimeout {
                    queue: qname.clone(),
                    leg,
                },
            );
        }
        self.queue_dispatch(now, &qname);
    }

    fn queue_dispatch(&mut self, now: Instant, qname: &str) {
        let step = self.cfg.step;
        let Some(q) = self.queues.get_mut(qname) else {
            return;
        };
        let Some(member) = q.free_member() else {
            return;
        };
        let Some(entry) = q.entries.iter_mut().find(|e| !e.ringing) else {
            return;
        };
        entry.ringing = true;
        let call = entry.call;
        q.members[member].in_call = true;
        self.schedule(
            call,
            later(now, step),
            Step::QueueConnect {
                queue: qname.to_string(),
                member,
            },
        );
    }

    fn queue_connect(
        &mut self,
        now: Instant,
        id: u64,
        qname: &str,
        member: usize,
        fx: &mut Vec<Effect>,
    ) {
        let Some(q) = self.queues.get_mut(qname) else {
            return;
        };
        let Some(pos) = q.entries.iter().position(|e| e.call == id) else {
            if let Some(m) = q.members.get_mut(member) {
                m.in_call = false;
            }
            self.queue_dispatch(now, qname);
            return;
        };
        let entry = q.entries.remove(pos);
        let count = q.entries.len();
        let Some(m) = q.members.get(member).cloned() else {
            return;
        };
        let Some(ch) = self.leg(id, entry.leg).cloned() else {
            return;
        };
        let hold = now.saturating_duration_since(entry.joined).as_secs();
        let seq = self.local_seq;
        self.local_seq = self.local_seq.wrapping_add(1);
        let agent = Channel {
            name: format!("Local/qagent@ami-test-{seq:08x};1"),
            uniqueid: self.new_uniqueid(now),
            linkedid: ch.linkedid.clone(),
            state: ChanState::Up,
            cid_num: ch.cid_num.clone(),
            cid_name: ch.cid_name.clone(),
            conn_num: ch.cid_num.clone(),
            conn_name: ch.cid_name.clone(),
            account: String::new(),
            context: dialplan::CONTEXT.to_string(),
            exten: "queue".to_string(),
            priority: 1,
            app: "AppQueue".to_string(),
            app_data: "(Outgoing Line)".to_string(),
            vars: Vec::new(),
            created: now,
            answered: Some(now),
        };
        let agent_ev = |name: &str| {
            let mut e = self.chan_ev(name, ClassMask::AGENT, &ch);
            agent.block(&mut e, "Dest");
            e.field("Queue", qname)
                .field("Interface", &m.location)
                .field("MemberName", &m.name)
        };
        fx.push(Effect::Event(agent_ev("AgentCalled").build()));
        let leave = self
            .chan_ev("QueueCallerLeave", ClassMask::AGENT, &ch)
            .field("Queue", qname)
            .field("Position", (pos + 1).to_string())
            .field("Count", count.to_string());
        fx.push(Effect::Event(leave.build()));
        let connect = agent_ev("AgentConnect")
            .field("HoldTime", hold.to_string())
            .field("RingTime", "0");
        fx.push(Effect::Event(connect.build()));
        if let Some(call) = self.calls.get_mut(&id) {
            call.agent = Some(AgentLeg {
                queue: qname.to_string(),
                member,
                channel: agent,
                hold,
                connected: now,
                leg: entry.leg,
            });
        }
        self.schedule(
            id,
            later(now, Duration::from_secs(3)),
            Step::QueueDone {
                queue: qname.to_string(),
                member,
            },
        );
    }

    /// Finishes the agent part of a queue call; `by_caller` when the caller hung up.
    fn finish_agent(
        &mut self,
        now: Instant,
        id: u64,
        by_caller: bool,
        fx: &mut Vec<Effect>,
    ) -> Option<(String, usize)> {
        let agent = self.calls.get_mut(&id)?.agent.take()?;
        let ch = self.leg(id, agent.leg)?.clone();
        let talk = now.saturating_duration_since(agent.connected).as_secs();
        let unix = self.clock.secs(now);
        let q = self.queues.get_mut(&agent.queue)?;
        q.completed += 1;
        q.talk_total += talk;
        q.hold_total += agent.hold;
        let m = q.members.get_mut(agent.member)?;
        m.in_call = false;
        m.calls_taken += 1;
        m.last_call = unix;
        let m = m.clone();
        let mut e = self.chan_ev("AgentComplete", ClassMask::AGENT, &ch);
        agent.channel.block(&mut e, "Dest");
        let e = e
            .field("Queue", &agent.queue)
            .field("Interface", &m.location)
            .field("MemberName", &m.name)
            .field("HoldTime", agent.hold.to_string())
            .field("TalkTime", talk.to_string())
            .field("Reason", if by_caller { "caller" } else { "agent" });
        fx.push(Effect::Event(e.build()));
        Some((agent.queue, agent.leg))
    }

    fn queue_done(
        &mut self,
        now: Instant,
        id: u64,
        qname: &str,
        _member: usize,
        fx: &mut Vec<Effect>,
    ) {
        let step = self.cfg.step;
        if let Some((queue, leg)) = self.finish_agent(now, id, false, fx) {
            self.schedule(id, later(now, step), Step::Exec(leg));
            self.queue_dispatch(now, &queue);
        } else {
            self.queue_dispatch(now, qname);
        }
    }

    fn queue_timeout(
        &mut self,
        now: Instant,
        id: u64,
        qname: &str,
        leg: usize,
        fx: &mut Vec<Effect>,
    ) {
        let step = self.cfg.step;
        let Some(q) = self.queues.get_mut(qname) else {
            return;
        };
        let Some(pos) = q.entries.iter().position(|e| e.call == id && !e.ringing) else {
            return;
        };
        q.entries.remove(pos);
        let count = q.entries.len();
        let Some(ch) = self.leg(id, leg).cloned() else {
            return;
        };
        let e = self
            .chan_ev("QueueCallerLeave", ClassMask::AGENT, &ch)
            .field("Queue", qname)
            .field("Position", (pos + 1).to_string())
            .field("Count", count.to_string());
        fx.push(Effect::Event(e.build()));
        self.schedule(id, later(now, step), Step::Exec(leg));
    }

    /// A call is ending: take it out of any queue (abandon) or agent conversation.
    fn leave_queue(&mut self, now: Instant, id: u64, fx: &mut Vec<Effect>) {
        if let Some((queue, _)) = self.finish_agent(now, id, true, fx) {
            self.queue_dispatch(now, &queue);
            return;
        }
        let Some((qname, pos, entry)) = self.queues.remove_call(id) else {
            return;
        };
        let Some(ch) = self.leg(id, entry.leg).cloned() else {
            return;
        };
        let count = self
            .queues
            .list
            .iter()
            .find(|q| q.name == qname)
            .map_or(0, |q| q.entries.len());
        if let Some(q) = self.queues.get_mut(&qname) {
            q.abandoned += 1;
            if entry.ringing {
                // The member was reserved for this caller: free it.
                for m in &mut q.members {
                    m.in_call = false;
                }
            }
        }
        let hold = now.saturating_duration_since(entry.joined).as_secs();
        let ab = self
            .chan_ev("QueueCallerAbandon", ClassMask::AGENT, &ch)
            .field("Queue", &qname)
            .field("Position", pos.to_string())
            .field("OriginalPosition", entry.original_position.to_string())
            .field("HoldTime", hold.to_string());
        fx.push(Effect::Event(ab.build()));
        let leave = self
            .chan_ev("QueueCallerLeave", ClassMask::AGENT, &ch)
            .field("Queue", &qname)
            .field("Position", pos.to_string())
            .field("Count", count.to_string());
        fx.push(Effect::Event(leave.build()));
        self.queue_dispatch(now, &qname);
    }
}

fn push_target(e: &mut EventBuilder, target: &CallTarget) {
    match target {
        CallTarget::App { app, data } => {
            e.push("Application", app);
            e.push("Data", data);
        }
        CallTarget::Exten { context, exten, .. } => {
            e.push("Context", context);
            e.push("Exten", exten);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(now: Instant) -> Engine {
        let cfg = EngineConfig {
            step: Duration::from_millis(20),
            echo_timeout: Duration::from_secs(1),
            system_name: None,
            max_calls: 10,
        };
        Engine::new(
            cfg,
            WallClock::new(now, Duration::from_secs(1_795_423_100)),
            now,
        )
    }

    /// An async Originate that runs `UserEvent(data)` once answered.
    fn user_event_origin(data: &str) -> Origin {
        Origin {
            session: None,
            action_id: None,
            sync: false,
            report: true,
            target: CallTarget::App {
                app: "UserEvent".to_string(),
                data: data.to_string(),
            },
            cid_num: None,
            cid_name: None,
            timeout: Duration::from_secs(30),
            channel_id: None,
            other_channel_id: None,
            vars: Vec::new(),
            account: String::new(),
        }
    }

    /// Runs one call to its end: the effects of each of its steps, step by step.
    fn steps(dial: &str, origin: Origin) -> Vec<Vec<Effect>> {
        let now = Instant::now();
        let mut engine = engine(now);
        let mut creation = Vec::new();
        engine.originate(now, dial, origin, &mut creation).unwrap();
        let mut out = vec![creation];
        while let Some(at) = engine.next_deadline() {
            let mut fx = Vec::new();
            engine.fire_one(at, &mut fx);
            out.push(fx);
        }
        out
    }

    #[test]
    fn a_burst_holds_as_few_effects_in_one_step_whatever_count_the_client_names() {
        // The count comes from the client (`Data: Burst,Count: N` on an Originate). Each
        // step's effects are held at once before any reaches a session: they must not
        // grow with N. 5,000 is cheap even where every event is an effect of its own.
        let largest = |count: usize| {
            let data = format!("Burst,Count: {count}");
            let origin = user_event_origin(&data);
            steps("Local/wait10@ami-test", origin)
                .iter()
                .map(Vec::len)
                .max()
                .unwrap()
        };
        assert_eq!(largest(5000), largest(10));
    }
}
