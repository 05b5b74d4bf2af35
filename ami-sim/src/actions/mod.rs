//! Action handlers and the dispatcher (`process_message`).

mod auth;
mod basic;
mod command;
mod lists;
mod originate;
mod vars;

use crate::classes::ClassMask;
use crate::input::Request;
use crate::out;
use crate::server::SimServer;
use crate::{CloseReason, SessionId};
use std::time::Instant;

/// What an action handler wants done with the session.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send this now.
    Reply(Vec<u8>),
    /// Send this, then close.
    Close(Vec<u8>, CloseReason),
    /// Stay busy until `at`, then send `reply` (and close).
    Later {
        at: Instant,
        reply: Vec<u8>,
        close: Option<CloseReason>,
    },
    /// Stay busy until the sync Originate's call is answered or fails.
    WaitCall,
}

type Handler = fn(&mut SimServer, SessionId, &Request, Instant) -> Outcome;

/// One registered action.
pub(crate) struct ActionDef {
    pub(crate) name: &'static str,
    pub(crate) authority: ClassMask,
    pub(crate) synopsis: &'static str,
    handler: Handler,
}

const NONE: ClassMask = ClassMask::NONE;

/// Every action the simulator knows, sorted by name (ListCommands order).
pub(crate) static ACTIONS: &[ActionDef] = &[
    ActionDef {
        name: "Challenge",
        authority: NONE,
        synopsis: "Generate a challenge for MD5 authentication.",
        handler: auth::challenge,
    },
    ActionDef {
        name: "Command",
        authority: ClassMask::COMMAND,
        synopsis: "Run a CLI command.",
        handler: command::command,
    },
    ActionDef {
        name: "CoreSettings",
        authority: ClassMask(ClassMask::SYSTEM.0 | ClassMask::REPORTING.0),
        synopsis: "Show core settings.",
        handler: basic::core_settings,
    },
    ActionDef {
        name: "CoreShowChannels",
        authority: ClassMask(ClassMask::SYSTEM.0 | ClassMask::REPORTING.0),
        synopsis: "List the active channels.",
        handler: lists::core_show_channels,
    },
    ActionDef {
        name: "CoreStatus",
        authority: ClassMask(ClassMask::SYSTEM.0 | ClassMask::REPORTING.0),
        synopsis: "Show core status.",
        handler: basic::core_status,
    },
    ActionDef {
        name: "Events",
        authority: NONE,
        synopsis: "Set the session's event mask.",
        handler: basic::events,
    },
    ActionDef {
        name: "Filter",
        authority: ClassMask::SYSTEM,
        synopsis: "Add an event filter to the session.",
        handler: basic::filter,
    },
    ActionDef {
        name: "Getvar",
        authority: ClassMask(ClassMask::CALL.0 | ClassMask::REPORTING.0),
        synopsis: "Read a channel or global variable.",
        handler: vars::getvar,
    },
    ActionDef {
        name: "Hangup",
        authority: ClassMask(ClassMask::SYSTEM.0 | ClassMask::CALL.0),
        synopsis: "Hang up a channel.",
        handler: originate::hangup,
    },
    ActionDef {
        name: "ListCommands",
        authority: NONE,
        synopsis: "List the available actions.",
        handler: basic::list_commands,
    },
    ActionDef {
        name: "Login",
        authority: NONE,
        synopsis: "Log in.",
        handler: auth::login,
    },
    ActionDef {
        name: "Logoff",
        authority: NONE,
        synopsis: "Log off and close the connection.",
        handler: auth::logoff,
    },
    ActionDef {
        name: "Originate",
        authority: ClassMask::ORIGINATE,
        synopsis: "Originate a call.",
        handler: originate::originate,
    },
    ActionDef {
        name: "Ping",
        authority: NONE,
        synopsis: "Keepalive.",
        handler: basic::ping,
    },
    ActionDef {
        name: "QueueStatus",
        authority: NONE,
        synopsis: "List queue parameters, members and callers.",
        handler: lists::queue_status,
    },
    ActionDef {
        name: "QueueSummary",
        authority: NONE,
        synopsis: "Summarise the queues.",
        handler: lists::queue_summary,
    },
    ActionDef {
        name: "Setvar",
        authority: ClassMask::CALL,
        synopsis: "Set a channel or global variable.",
        handler: vars::setvar,
    },
    ActionDef {
        name: "Status",
        authority: ClassMask(ClassMask::SYSTEM.0 | ClassMask::CALL.0 | ClassMask::REPORTING.0),
        synopsis: "List channel status.",
        handler: lists::status,
    },
    ActionDef {
        name: "UserEvent",
        authority: ClassMask::USER,
        synopsis: "Broadcast a user-defined event.",
        handler: basic::user_event,
    },
];

/// Runs one action the way `process_message` does: permission before login, the action
/// table, the `write=` authority check, then the handler.
pub(crate) fn dispatch(
    srv: &mut SimServer,
    sid: SessionId,
    req: &Request,
    action: &str,
    now: Instant,
) -> Outcome {
    let id = req.action_id();
    let Some(sess) = srv.session(sid) else {
        return Outcome::Reply(Vec::new());
    };
    let logged_in = sess.logged_in();
    let write = sess.write;
    let pre_login_ok = ["Login", "Logoff", "Challenge"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(action));
    if !logged_in && !pre_login_ok {
        return Outcome::Reply(out::error(id.as_deref(), "Permission denied"));
    }
    if !logged_in
        && (action.eq_ignore_ascii_case("Login") || action.eq_ignore_ascii_case("Challenge"))
    {
        if let Some(o) = auth::login_in_use(srv, req, now) {
            return o;
        }
    }
    match ACTIONS.iter().find(|a| a.name.eq_ignore_ascii_case(action)) {
        Some(def) => {
            if def.authority.is_empty() || write.intersects(def.authority) {
                (def.handler)(srv, sid, req, now)
            } else {
                Outcome::Reply(out::error(id.as_deref(), "Permission denied"))
            }
        }
        None => Outcome::Reply(out::error(
            id.as_deref(),
            &format!(
                "Invalid/unknown command: {action}. Use Action: ListCommands to show available commands."
            ),
        )),
    }
}
