//! Getvar and Setvar, on a channel or global.
//!
//! Functions understood by Getvar: `CHANNEL(name|state|uniqueid|linkedid|context|exten)`,
//! `CALLERID(num|name)`, `GLOBAL(x)`; other functions read as empty. `SHELL`, `EVAL`,
//! `FILE`, `ODBC`, `REALTIME`, `CURL`, `DB` need `write=system`, as Asterisk's
//! dangerous-function check requires.

use super::Outcome;
use crate::calls::channel::Channel;
use crate::calls::Effect;
use crate::classes::ClassMask;
use crate::events::{escape_c, EventBuilder};
use crate::input::Request;
use crate::out::{self, Msg};
use crate::server::SimServer;
use crate::SessionId;
use std::time::Instant;

const DANGEROUS: [&str; 7] = ["SHELL", "EVAL", "FILE", "ODBC", "REALTIME", "CURL", "DB"];

pub(super) fn function_value(
    srv: &SimServer,
    ch: Option<&Channel>,
    func: &str,
    arg: &str,
) -> String {
    let global = |name: &str| {
        srv.engine
            .globals
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match (func.to_ascii_uppercase().as_str(), ch) {
        ("GLOBAL", _) => global(arg),
        ("CHANNEL", Some(c)) => match arg.to_ascii_lowercase().as_str() {
            "name" => c.name.clone(),
            "state" => c.state.desc().to_string(),
            "uniqueid" => c.uniqueid.clone(),
            "linkedid" => c.linkedid.clone(),
            "context" => c.context.clone(),
            "exten" => c.exten.clone(),
            _ => String::new(),
        },
        ("CALLERID", Some(c)) => match arg.to_ascii_lowercase().as_str() {
            "num" | "number" => c.cid_num.clone().unwrap_or_default(),
            "name" => c
                .cid_name
                .as_deref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn variable_value(srv: &SimServer, ch: Option<&Channel>, name: &str) -> String {
    if let Some(c) = ch {
        if let Some(v) = c.var(name) {
            return v.to_string();
        }
        let builtin = match name {
            "CHANNEL" => Some(c.name.clone()),
            "UNIQUEID" => Some(c.uniqueid.clone()),
            "CONTEXT" => Some(c.context.clone()),
            "EXTEN" => Some(c.exten.clone()),
            "PRIORITY" => Some(c.priority.to_string()),
            _ => None,
        };
        if let Some(v) = builtin {
            return v;
        }
    }
    srv.engine
        .globals
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Getvar.
pub(super) fn getvar(srv: &mut SimServer, sid: SessionId, req: &Request, _now: Instant) -> Outcome {
    let id = req.action_id();
    let Some(var) = req.get("Variable") else {
        return Outcome::Reply(out::error(id.as_deref(), "No variable specified"));
    };
    let write = srv.session(sid).map_or(ClassMask::NONE, |s| s.write);
    let func = var
        .split_once('(')
        .map(|(f, rest)| (f.to_string(), rest.trim_end_matches(')').to_string()));
    if let Some((f, _)) = &func {
        if DANGEROUS.iter().any(|d| d.eq_ignore_ascii_case(f)) && !write.contains(ClassMask::SYSTEM)
        {
            return Outcome::Reply(out::error(
                id.as_deref(),
                "GetVar Access Forbidden: Variable",
            ));
        }
    }
    let chan = match req.get("Channel") {
        Some(name) => match srv.engine.channel(&name) {
            Some(c) => Some(c.clone()),
            None => return Outcome::Reply(out::error(id.as_deref(), "No such channel")),
        },
        None => None,
    };
    let value = match (&func, var.ends_with(')')) {
        (Some((f, arg)), true) => function_value(srv, chan.as_ref(), f, arg),
        _ => variable_value(srv, chan.as_ref(), &var),
    };
    Outcome::Reply(
        Msg::response("Success")
            .id(id.as_deref())
            .field("Variable", &var)
            .field("Value", value)
            .end(),
    )
}

/// Setvar, like `pbx_builtin_setvar_helper`: a channel variable, or a global one (both
/// raise VarSet, a global one with `Channel: none` and `Uniqueid: none`). A name ending in
/// `)` writes a function: `GLOBAL(x)` sets the global `x`, with or without a channel.
/// **Simplification:** other functions are set as variables of that literal name.
pub(super) fn setvar(
    srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    _now: Instant,
) -> Outcome {
    let id = req.action_id();
    let Some(var) = req.get("Variable") else {
        return Outcome::Reply(out::error(id.as_deref(), "No variable specified"));
    };
    let value = req.get("Value").unwrap_or_default();
    let chan = req.get("Channel");
    if let Some(name) = &chan {
        if srv.engine.channel(name).is_none() {
            return Outcome::Reply(out::error(id.as_deref(), "No such channel"));
        }
    }
    let global = var
        .strip_suffix(')')
        .and_then(|v| v.split_once('('))
        .filter(|(f, _)| f.eq_ignore_ascii_case("GLOBAL"))
        .map(|(_, arg)| arg.to_string());
    match (global, chan) {
        (Some(name), _) => {
            if !set_global(srv, &name, value) {
                return Outcome::Reply(out::error(id.as_deref(), "Variable not set"));
            }
        }
        (None, Some(name)) => {
            let mut fx = Vec::new();
            match srv.engine.set_channel_var(&name, &var, &value, &mut fx) {
                None => return Outcome::Reply(out::error(id.as_deref(), "No such channel")),
                // The channel's variables are full: what Asterisk says when
                // `pbx_builtin_setvar_helper` fails.
                Some(false) => {
                    return Outcome::Reply(out::error(id.as_deref(), "Variable not set"))
                }
                Some(true) => {}
            }
            srv.apply_effects(fx);
        }
        (None, None) => {
            if !set_global(srv, &var, value) {
                return Outcome::Reply(out::error(id.as_deref(), "Variable not set"));
            }
        }
    }
    Outcome::Reply(out::ack(id.as_deref(), "Variable Set"))
}

/// Sets a global variable and raises its VarSet (`varset_to_ami` without a channel);
/// false when the simulator's table of globals is full.
fn set_global(srv: &mut SimServer, var: &str, value: String) -> bool {
    let globals = &mut srv.engine.globals;
    let escaped = escape_c(value.as_bytes());
    match globals.iter_mut().find(|(k, _)| k == var) {
        Some(slot) => slot.1 = value,
        None => {
            if globals.len() >= 4096 {
                return false;
            }
            globals.push((var.to_string(), value));
        }
    }
    let ev = EventBuilder::new(
        "VarSet",
        ClassMask::DIALPLAN,
        srv.cfg.system_name.as_deref(),
    )
    .field("Channel", "none")
    .field("Uniqueid", "none")
    .field("Variable", var)
    .field("Value", escaped)
    .build();
    srv.apply_effects(vec![Effect::Event(ev)]);
    true
}
