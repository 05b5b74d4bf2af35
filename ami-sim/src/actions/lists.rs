//! Event-list actions: Status, CoreShowChannels, QueueStatus, QueueSummary. Shapes and
//! field orders are those of the captures (ActionID second in CoreShowChannel items, last
//! in Status and Queue* items; `Privilege: Call` only on Status items).

use super::vars::function_value;
use super::Outcome;
use crate::calls::channel::Channel;
use crate::classes::is_true;
use crate::clock::hms;
use crate::input::Request;
use crate::out::{self, Msg};
use crate::server::SimServer;
use crate::SessionId;
use std::time::Instant;

/// Status: all channels, or one (`Channel`), with `Variables`/`AllVariables`.
pub(super) fn status(srv: &mut SimServer, _sid: SessionId, req: &Request, now: Instant) -> Outcome {
    let id = req.action_id();
    let id = id.as_deref();
    let wanted = req.get("Channel");
    let chans: Vec<Channel> = match &wanted {
        Some(name) => match srv.engine.channel(name) {
            Some(c) => vec![c.clone()],
            None => return Outcome::Reply(out::error(id, "No such channel")),
        },
        None => srv.engine.channels().cloned().collect(),
    };
    let var_names: Vec<String> = req
        .get("Variables")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let all_vars = req.get("AllVariables").is_some_and(|v| is_true(&v));
    let mut reply = out::list_start(id, "Channel status will follow");
    // Past this length the reply closes the session as a slow reader when written (over
    // `max_backlog`), keeping only the kernel's first `socket_buffer` bytes: more items
    // change nothing the client gets, so they are not built. Each channel's item can be
    // hundreds of KB (a 1 KiB `Variables` list naming long variables), and with
    // `max_calls` channels the whole reply ran to gigabytes before the cap was looked at.
    let room = srv.cfg.max_backlog.max(srv.cfg.socket_buffer);
    for ch in &chans {
        if reply.len() > room {
            break;
        }
        let mut m = Msg::item("Status")
            .field("Privilege", "Call")
            .channel(ch)
            .field("Type", "Local")
            .field("DNID", "")
            .field(
                "EffectiveConnectedLineNum",
                ch.conn_num.as_deref().unwrap_or("<unknown>"),
            )
            .field(
                "EffectiveConnectedLineName",
                ch.conn_name.clone().unwrap_or(b"<unknown>".to_vec()),
            )
            .field("TimeToHangup", "0")
            .field("BridgeID", "")
            .field("Application", &ch.app)
            .field("Data", &ch.app_data)
            .field("Nativeformats", "(slin)")
            .field("Readformat", "slin")
            .field("Readtrans", "")
            .field("Writeformat", "slin")
            .field("Writetrans", "")
            .field("Callgroup", "0")
            .field("Pickupgroup", "0")
            .field("Seconds", srv.engine.uptime_of(ch, now).to_string());
        if all_vars {
            for (k, v) in &ch.vars {
                m.push("Variable", format!("{k}={v}"));
            }
        } else {
            for name in &var_names {
                let value = match name.split_once('(') {
                    Some((f, arg)) if name.ends_with(')') => {
                        function_value(srv, Some(ch), f, arg.trim_end_matches(')'))
                    }
                    _ => ch.var(name).unwrap_or("").to_string(),
                };
                m.push("Variable", format!("{name}={value}"));
            }
        }
        reply.extend(m.id_capped(id, 256).end());
    }
    reply.extend(
        out::list_complete("StatusComplete", id, chans.len())
            .field("Items", chans.len().to_string())
            .end(),
    );
    Outcome::Reply(reply)
}

/// CoreShowChannels.
pub(super) fn core_show_channels(
    srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    now: Instant,
) -> Outcome {
    let id = req.action_id();
    let id = id.as_deref();
    let mut reply = out::list_start(id, "Channels will follow");
    let mut n = 0;
    for ch in srv.engine.channels() {
        n += 1;
        let item = Msg::item("CoreShowChannel")
            .id_capped(id, 256)
            .channel(ch)
            .field("Application", &ch.app)
            .field("ApplicationData", &ch.app_data)
            .field("Duration", hms(srv.engine.uptime_of(ch, now)))
            .field("BridgeId", "")
            .end();
        reply.extend(item);
    }
    reply.extend(out::list_complete("CoreShowChannelsComplete", id, n).end());
    Outcome::Reply(reply)
}

fn unknown_plain(v: Option<&[u8]>) -> Vec<u8> {
    v.map_or(b"unknown".to_vec(), <[u8]>::to_vec)
}

/// QueueStatus (`Queue` and `Member` filters). An unknown queue is an empty list.
pub(super) fn queue_status(
    srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    now: Instant,
) -> Outcome {
    let id = req.action_id();
    let id = id.as_deref();
    let want_queue = req.get("Queue");
    let want_member = req.get("Member");
    let mut reply = out::list_start(id, "Queue status will follow");
    let mut n = 0;
    for q in &srv.engine.queues.list {
        if want_queue.as_deref().is_some_and(|w| w != q.name) {
            continue;
        }
        n += 1;
        let perf = format!("{:.1}", q.service_level_perf());
        reply.extend(
            Msg::item("QueueParams")
                .field("Queue", &q.name)
                .field("Max", "0")
                .field("Strategy", "ringall")
                .field("Calls", q.entries.len().to_string())
                .field("Holdtime", q.holdtime().to_string())
                .field("TalkTime", q.talktime().to_string())
                .field("Completed", q.completed.to_string())
                .field("Abandoned", q.abandoned.to_string())
                .field("ServiceLevel", "0")
                .field("ServicelevelPerf", &perf)
                .field("ServicelevelPerf2", &perf)
                .field("Weight", "0")
                .id_capped(id, 256)
                .end(),
        );
        for m in &q.members {
            if want_member
                .as_deref()
                .is_some_and(|w| w != m.name && w != m.location)
            {
                continue;
            }
            n += 1;
            reply.extend(
                Msg::item("QueueMember")
                    .field("Queue", &q.name)
                    .field("Name", &m.name)
                    .field("Location", &m.location)
                    .field("StateInterface", &m.location)
                    .field("Membership", "static")
                    .field("Penalty", "0")
                    .field("CallsTaken", m.calls_taken.to_string())
                    .field("LastCall", m.last_call.to_string())
                    .field("LastPause", "0")
                    .field("LoginTime", m.login_time.to_string())
                    .field("InCall", u8::from(m.in_call).to_string())
                    .field("Status", if m.in_call { "2" } else { "1" })
                    .field("Paused", "0")
                    .field("PausedReason", "")
                    .field("Wrapuptime", "0")
                    .id_capped(id, 256)
                    .end(),
            );
        }
        for (i, e) in q.entries.iter().enumerate() {
            let Some(ch) = srv.engine.leg(e.call, e.leg) else {
                continue;
            };
            n += 1;
            reply.extend(
                Msg::item("QueueEntry")
                    .field("Queue", &q.name)
                    .field("Position", (i + 1).to_string())
                    .field("Channel", &ch.name)
                    .field("Uniqueid", &ch.uniqueid)
                    .field(
                        "CallerIDNum",
                        unknown_plain(ch.cid_num.as_deref().map(str::as_bytes)),
                    )
                    .field("CallerIDName", unknown_plain(ch.cid_name.as_deref()))
                    .field(
                        "ConnectedLineNum",
                        unknown_plain(ch.conn_num.as_deref().map(str::as_bytes)),
                    )
                    .field("ConnectedLineName", unknown_plain(ch.conn_name.as_deref()))
                    .field(
                        "Wait",
                        now.saturating_duration_since(e.joined)
                            .as_secs()
                            .to_string(),
                    )
                    .field("Priority", "0")
                    .id_capped(id, 256)
                    .end(),
            );
        }
    }
    reply.extend(out::list_complete("QueueStatusComplete", id, n).end());
    Outcome::Reply(reply)
}

/// QueueSummary (`Queue` filter).
pub(super) fn queue_summary(
    srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    now: Instant,
) -> Outcome {
    let id = req.action_id();
    let id = id.as_deref();
    let want_queue = req.get("Queue");
    let mut reply = out::list_start(id, "Queue summary will follow");
    let mut n = 0;
    for q in &srv.engine.queues.list {
        if want_queue.as_deref().is_some_and(|w| w != q.name) {
            continue;
        }
        n += 1;
        let longest = q
            .entries
            .iter()
            .map(|e| now.saturating_duration_since(e.joined).as_secs())
            .max()
            .unwrap_or(0);
        reply.extend(
            Msg::item("QueueSummary")
                .field("Queue", &q.name)
                .field("LoggedIn", q.members.len().to_string())
                .field(
                    "Available",
                    q.members.iter().filter(|m| !m.in_call).count().to_string(),
                )
                .field("Callers", q.entries.len().to_string())
                .field("HoldTime", q.holdtime().to_string())
                .field("TalkTime", q.talktime().to_string())
                .field("LongestHoldTime", longest.to_string())
                .id_capped(id, 256)
                .end(),
        );
    }
    reply.extend(out::list_complete("QueueSummaryComplete", id, n).end());
    Outcome::Reply(reply)
}
