//! Originate (sync and async) and Hangup.

use super::Outcome;
use crate::calls::channel::parse_callerid;
use crate::calls::{dialplan, CallTarget, Origin};
use crate::classes::{is_true, ClassMask};
use crate::input::Request;
use crate::out::{self, Msg};
use crate::server::SimServer;
use crate::SessionId;
use std::time::{Duration, Instant};

/// `AST_MAX_PUBLIC_UNIQUEID`.
const MAX_PUBLIC_UNIQUEID: usize = 149;
/// Most variables taken from one Originate (a simulator guard; Asterisk allows 64 per line).
const MAX_VARS: usize = 256;

/// Splits a `Variable:` value like `__ast_app_separate_args`: commas inside `()`, `[]` or
/// quotes do not split; quotes are removed and a backslash escapes the next character.
pub(crate) fn split_args(text: &str) -> Vec<String> {
    // As `__ast_app_separate_args` counts: brackets and parentheses whether quoted or not,
    // never below zero; a comma splits only outside all three.
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut paren, mut bracket, mut quote) = (0u32, 0u32, false);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            '"' => quote = !quote,
            '(' => {
                paren += 1;
                cur.push(c);
            }
            ')' => {
                paren = paren.saturating_sub(1);
                cur.push(c);
            }
            '[' => {
                bracket += 1;
                cur.push(c);
            }
            ']' => {
                bracket = bracket.saturating_sub(1);
                cur.push(c);
            }
            ',' if !quote && paren == 0 && bracket == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn blacklisted(app: &str, data: &str) -> bool {
    let app_l = app.to_ascii_lowercase();
    let bad_app = [
        "agi",
        "exec",
        "system",
        "originate",
        "reload",
        "mixmonitor",
        "externalivr",
        "dbdeltree",
    ]
    .iter()
    .any(|w| app_l.contains(w));
    let queue_agi = app_l == "queue" && data.to_ascii_lowercase().contains("agi");
    let data_u = data.to_ascii_uppercase();
    let bad_data = ["CURL", "DB", "EVAL", "FILE", "ODBC", "REALTIME", "SHELL"]
        .iter()
        .any(|w| data_u.contains(w));
    bad_app || queue_agi || bad_data
}

/// Originate.
pub(super) fn originate(
    srv: &mut SimServer,
    sid: SessionId,
    req: &Request,
    _now: Instant,
) -> Outcome {
    let id = req.action_id();
    let err = |m: &str| Outcome::Reply(out::error(id.as_deref(), m));
    let channel_id = req.get("ChannelId");
    let other_id = req.get("OtherChannelId");
    if channel_id
        .as_ref()
        .is_some_and(|u| u.len() > MAX_PUBLIC_UNIQUEID)
        || other_id
            .as_ref()
            .is_some_and(|u| u.len() > MAX_PUBLIC_UNIQUEID)
    {
        // Asterisk really ends this message with a newline.
        return err(&format!(
            "Uniqueid length exceeds maximum of {MAX_PUBLIC_UNIQUEID}\n"
        ));
    }
    let Some(dial) = req.get("Channel") else {
        return err("Channel not specified");
    };
    let exten = req.get("Exten");
    let context = req.get("Context");
    let priority = req.get("Priority");
    let app = req.get("Application");
    let data = req.get("Data").unwrap_or_default();
    let prio_num = match &priority {
        Some(p) => match scan_int(p) {
            Some(n) => Some(n),
            // A label: the simulated dialplan has none.
            None => return err("Invalid priority"),
        },
        None => None,
    };
    let timeout = match req.get("Timeout") {
        Some(t) => match scan_int(&t) {
            // Asterisk reads it as a C int: at most about 24.8 days.
            Some(ms) => Duration::from_millis(ms.clamp(0, i64::from(i32::MAX)) as u64),
            None => return err("Invalid timeout"),
        },
        None => Duration::from_millis(30_000),
    };
    if !dial.contains('/') {
        return err("Invalid channel");
    }
    let write = srv.session(sid).map_or(ClassMask::NONE, |s| s.write);
    if let Some(app) = &app {
        if !write.contains(ClassMask::SYSTEM) && blacklisted(app, &data) {
            return err("Originate Access Forbidden: app or data blacklisted");
        }
    }
    // manager.c `if (exten && context && pi)`: an absent Exten or Context is "", never
    // NULL, so the extension is checked whenever Priority is a non-zero number, with or
    // without Application.
    let prio_num = prio_num.filter(|&p| p != 0);
    if let Some(p) = prio_num {
        let (c, e) = (
            context.as_deref().unwrap_or(""),
            exten.as_deref().unwrap_or(""),
        );
        if !dialplan::exists_at(c, e, p) {
            return err("Extension does not exist.");
        }
    }
    let target = match (&app, &exten, &context, prio_num) {
        (Some(app), _, _, _) => CallTarget::App {
            app: app.clone(),
            data: data.clone(),
        },
        (None, Some(e), Some(c), Some(p)) => CallTarget::Exten {
            context: c.clone(),
            exten: e.clone(),
            priority: p.clamp(1, 1000) as u32,
        },
        _ => return err("Originate with 'Exten' requires 'Context' and 'Priority'"),
    };
    let (cid_name, cid_num) = match req.get("CallerID") {
        Some(c) => parse_callerid(&c),
        None => (None, None),
    };
    let mut vars = Vec::new();
    for line in req.get_all("Variable") {
        for arg in split_args(&line) {
            if vars.len() >= MAX_VARS {
                break;
            }
            if let Some((k, v)) = arg.split_once('=') {
                if !k.is_empty() {
                    vars.push((k.to_string(), v.to_string()));
                }
            }
        }
    }
    let sync = !req.get("Async").is_some_and(|a| is_true(&a));
    let origin = Origin {
        session: Some(sid),
        action_id: id.clone(),
        sync,
        report: !sync,
        target,
        cid_num,
        cid_name,
        timeout,
        channel_id,
        other_channel_id: other_id,
        vars,
        account: req.get("Account").unwrap_or_default(),
    };
    match srv.start_call(&dial, origin) {
        Err(_) => err("Originate failed"),
        Ok(_) if sync => Outcome::WaitCall,
        Ok(_) => Outcome::Reply(out::ack(id.as_deref(), "Originate successfully queued")),
    }
}

/// Hangup: one channel, or every channel matching `/pattern/` as a ChannelHungup list.
/// Without a valid `Cause` (see [`hangup_cause`]) the channel's cause stays unset, which the
/// Hangup events show as 16 (Normal Clearing).
/// **Simplification:** the pattern is a plain substring, not a regular expression.
pub(super) fn hangup(srv: &mut SimServer, _sid: SessionId, req: &Request, now: Instant) -> Outcome {
    let id = req.action_id();
    let Some(name) = req.get("Channel") else {
        return Outcome::Reply(out::error(id.as_deref(), "No channel specified"));
    };
    let cause = req
        .get("Cause")
        .and_then(|c| hangup_cause(&c))
        .unwrap_or(16);
    let mut fx = Vec::new();
    if name.len() >= 2 && name.starts_with('/') && name.ends_with('/') {
        let pattern = &name[1..name.len() - 1];
        let victims: Vec<String> = srv
            .engine
            .channels()
            .filter(|c| c.name.contains(pattern))
            .map(|c| c.name.clone())
            .collect();
        let mut reply = out::list_start(id.as_deref(), "Channels hung up will follow");
        for v in &victims {
            srv.engine.hangup_channel(now, v, cause, &mut fx);
            reply.extend(
                Msg::item("ChannelHungup")
                    .field("Channel", v)
                    .id_capped(id.as_deref(), 256)
                    .end(),
            );
        }
        reply.extend(
            out::list_complete("ChannelsHungupListComplete", id.as_deref(), victims.len()).end(),
        );
        srv.apply_effects(fx);
        return Outcome::Reply(reply);
    }
    if !srv.engine.hangup_channel(now, &name, cause, &mut fx) {
        return Outcome::Reply(out::error(id.as_deref(), "No such channel"));
    }
    srv.apply_effects(fx);
    Outcome::Reply(out::ack(id.as_deref(), "Channel Hungup"))
}

/// The number at the start of `text` as `sscanf(text, "%d")` reads it (Originate's
/// `Timeout` and `Priority`): leading white space, a sign, then digits, whatever follows
/// (`3000ms` is 3000); `None` without a digit. Saturates where C would overflow.
fn scan_int(text: &str) -> Option<i64> {
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return None;
    }
    let n = digits[..len].bytes().fold(0i64, |n, d| {
        n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    Some(if negative { -n } else { n })
}

/// Hangup's `Cause` as Asterisk's `ast_manager_hangup_helper` takes it: a whole decimal
/// number (`strtol` to the end) from 1 to 127. Anything else, 0 included, leaves the
/// channel's cause unset (Asterisk logs "Invalid 'Cause'" and hangs up anyway): `None`.
fn hangup_cause(text: &str) -> Option<u8> {
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let body = t.strip_prefix('+').unwrap_or(t);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = scan_int(body)?;
    u8::try_from(n).ok().filter(|c| (1..=127).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_c() {
        assert_eq!(scan_int("3000ms"), Some(3000));
        assert_eq!(scan_int("  -5"), Some(-5));
        assert_eq!(scan_int("+7 "), Some(7));
        assert_eq!(scan_int("ms"), None);
        assert_eq!(scan_int("-"), None);
        assert_eq!(scan_int("99999999999999999999999"), Some(i64::MAX));
        assert_eq!(hangup_cause("17"), Some(17));
        assert_eq!(hangup_cause("+17"), Some(17));
        assert_eq!(hangup_cause("127"), Some(127));
        for bad in ["0", "128", "200", "-1", "17x", "17 ", "", "x", "-0"] {
            assert_eq!(hangup_cause(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn variable_args() {
        assert_eq!(split_args("A=1,B=2"), ["A=1", "B=2"]);
        assert_eq!(split_args("A=f(x,y),B=\"q,r\""), ["A=f(x,y)", "B=q,r"]);
        assert_eq!(split_args("A=a\\,b"), ["A=a,b"]);
        // Asterisk counts a quoted parenthesis too, and never below zero.
        assert_eq!(split_args("A=\"(\",B=1"), ["A=(,B=1"]);
        assert_eq!(split_args("A=),B=1"), ["A=)", "B=1"]);
        assert!(blacklisted("System", ""));
        assert!(blacklisted("Wait", "${SHELL(ls)}"));
        assert!(!blacklisted("Wait", "3"));
    }
}
