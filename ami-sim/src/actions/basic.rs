//! Ping, Events, Filter, UserEvent, CoreSettings, CoreStatus, ListCommands.

use super::{Outcome, ACTIONS};
use crate::classes::ClassMask;
use crate::events::EventBuilder;
use crate::filter::FilterError;
use crate::input::Request;
use crate::out::{self, Msg};
use crate::server::SimServer;
use crate::SessionId;
use std::time::Instant;

/// Ping: `Ping: Pong` and the wall-clock `Timestamp`.
pub(super) fn ping(srv: &mut SimServer, _sid: SessionId, req: &Request, now: Instant) -> Outcome {
    Outcome::Reply(
        Msg::response("Success")
            .id(req.action_id().as_deref())
            .field("Ping", "Pong")
            .field("Timestamp", srv.clock.timestamp(now))
            .end(),
    )
}

/// Events: sets the event mask; `Events: On|Off`, or "Invalid event mask" when empty.
pub(super) fn events(srv: &mut SimServer, sid: SessionId, req: &Request, _now: Instant) -> Outcome {
    let id = req.action_id();
    let mask = req.get("EventMask").and_then(|m| ClassMask::parse(&m));
    let Some(mask) = mask else {
        return Outcome::Reply(out::error(id.as_deref(), "Invalid event mask"));
    };
    if let Some(s) = srv.session_mut(sid) {
        s.events = mask;
    }
    let state = if mask.is_empty() { "Off" } else { "On" };
    Outcome::Reply(
        Msg::response("Success")
            .id_capped(id.as_deref(), 256)
            .field("Events", state)
            .end(),
    )
}

/// Filter: `Operation: Add` only (see [`crate::filter`] for the matching rules).
pub(super) fn filter(srv: &mut SimServer, sid: SessionId, req: &Request, _now: Instant) -> Outcome {
    let id = req.action_id();
    let op = req.get("Operation").unwrap_or_default();
    if !op.eq_ignore_ascii_case("Add") {
        return Outcome::Reply(out::error(id.as_deref(), "Unknown operation"));
    }
    let filter = req.get("Filter");
    let criteria = req.get("MatchCriteria");
    let Some(s) = srv.session_mut(sid) else {
        return Outcome::Reply(Vec::new());
    };
    match s.filters.add(filter.as_deref(), criteria.as_deref()) {
        Ok(()) => Outcome::Reply(out::ack(id.as_deref(), "Success")),
        Err(FilterError::Format) => Outcome::Reply(out::error(
            id.as_deref(),
            "Filter was formatted incorrectly.  Check the syntax of the filter given.",
        )),
        Err(FilterError::Compile) => Outcome::Reply(out::error(
            id.as_deref(),
            "Filter did not compile.  Check the syntax of the filter given.",
        )),
    }
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// UserEvent: every header but `Action` and `UserEvent` (ActionID included) is copied, as
/// sent, into a broadcast `Event: UserEvent`.
pub(super) fn user_event(
    srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    _now: Instant,
) -> Outcome {
    let name = req.get_bytes("UserEvent").unwrap_or_default();
    let mut ev = EventBuilder::new("UserEvent", ClassMask::USER, srv.cfg.system_name.as_deref())
        .field("UserEvent", name)
        .build();
    // Reopen the message and append the raw header lines verbatim.
    ev.bytes.truncate(ev.bytes.len().saturating_sub(2));
    for line in req.lines() {
        if starts_with_ci(line, b"UserEvent:") || starts_with_ci(line, b"Action:") {
            continue;
        }
        ev.bytes.extend_from_slice(line);
        ev.bytes.extend_from_slice(b"\r\n");
    }
    ev.bytes.extend_from_slice(b"\r\n");
    let reply = out::ack(req.action_id().as_deref(), "Event Sent");
    srv.broadcast(&ev);
    Outcome::Reply(reply)
}

/// CoreSettings (field order of the capture).
pub(super) fn core_settings(
    srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    _now: Instant,
) -> Outcome {
    let cfg = &srv.cfg;
    Outcome::Reply(
        Msg::response("Success")
            .id_capped(req.action_id().as_deref(), 150)
            .field("AMIversion", &cfg.ami_version)
            .field("AsteriskVersion", &cfg.asterisk_version)
            .field("SystemName", cfg.system_name.as_deref().unwrap_or(""))
            .field("CoreMaxCalls", cfg.max_calls.to_string())
            .field("CoreMaxLoadAvg", "0.000000")
            .field("CoreRunUser", "")
            .field("CoreRunGroup", "")
            .field("CoreMaxFilehandles", "0")
            .field("CoreRealTimeEnabled", "No")
            .field("CoreCDRenabled", "Yes")
            .field("CoreHTTPenabled", "No")
            .field("SoundsSearchCustomDir", "No")
            .end(),
    )
}

/// CoreStatus (field order of the capture).
pub(super) fn core_status(
    srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    _now: Instant,
) -> Outcome {
    let (date, time) = srv.clock.date_and_time(srv.started);
    Outcome::Reply(
        Msg::response("Success")
            .id_capped(req.action_id().as_deref(), 150)
            .field("CoreStartupDate", &date)
            .field("CoreStartupTime", &time)
            .field("CoreReloadDate", &date)
            .field("CoreReloadTime", &time)
            .field("CoreCurrentCalls", srv.engine.active().to_string())
            .field(
                "CoreProcessedCalls",
                srv.engine.counters.processed.to_string(),
            )
            .end(),
    )
}

/// ListCommands: `Name: synopsis  (Priv: classes)` for every simulated action the user may
/// run (manager.c: `(writeperm & authority) || authority == 0`).
pub(super) fn list_commands(
    srv: &mut SimServer,
    sid: SessionId,
    req: &Request,
    _now: Instant,
) -> Outcome {
    let write = srv.session(sid).map_or(ClassMask::NONE, |s| s.write);
    let mut m = Msg::response("Success").id(req.action_id().as_deref());
    let allowed = ACTIONS
        .iter()
        .filter(|a| a.authority.is_empty() || write.intersects(a.authority));
    for a in allowed {
        m.push(
            a.name,
            format!("{}  (Priv: {})", a.synopsis, a.authority.privilege()),
        );
    }
    Outcome::Reply(m.end())
}
