//! Command (Asterisk 14+ format: `Message: Command output follows` + `Output:` lines).
//!
//! Supported CLI commands: `core show version`, `core show uptime`, `core show channels`,
//! `manager show connected`, `dialplan show [ami-test]`. `module load|unload` and
//! `restart gracefully` are blacklisted as in Asterisk; anything else is "No such command".
//! **Simplification:** the `core show help ...` hint in that error repeats the first two
//! words of the command (Asterisk computes the longest known prefix).

use super::Outcome;
use crate::calls::dialplan;
use crate::clock::uptime_phrase;
use crate::input::Request;
use crate::out::{self, Msg};
use crate::server::SimServer;
use crate::SessionId;
use std::time::Instant;

const BLACKLIST: [&[&str]; 3] = [
    &["module", "load"],
    &["module", "unload"],
    &["restart", "gracefully"],
];

fn blacklisted(words: &[&str]) -> bool {
    BLACKLIST.iter().any(|entry| {
        words.len() >= entry.len()
            && entry
                .iter()
                .zip(words)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    })
}

/// Runs a CLI command: `Ok(lines)` or `Err(lines)` when the CLI reports failure.
fn run_cli(
    srv: &SimServer,
    words: &[&str],
    cmd: &str,
    now: Instant,
) -> Result<Vec<String>, Vec<String>> {
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["core", "show", "version"] => {
            let (date, time) = srv.clock.date_and_time(srv.started);
            Ok(vec![format!(
                "Asterisk {} built by ami-sim @ sim on a x86_64 running Linux on {date} {time} UTC",
                srv.cfg.asterisk_version
            )])
        }
        ["core", "show", "uptime", ..] => {
            let up = uptime_phrase(srv.uptime());
            Ok(vec![
                format!("System uptime: {up}"),
                format!("Last reload: {up}"),
            ])
        }
        ["core", "show", "channels", ..] => {
            let mut out = vec![format!(
                "{:<64} {:<32} {:<7} {:<50}",
                "Channel", "Location", "State", "Application(Data)"
            )];
            let mut n = 0;
            for ch in srv.engine.channels() {
                n += 1;
                out.push(format!(
                    "{:<64.64} {:<32.32} {:<7.7} {:<50.50}",
                    ch.name,
                    format!("{}@{}:{}", ch.exten, ch.context, ch.priority),
                    ch.state.desc(),
                    format!("{}({})", ch.app, ch.app_data)
                ));
            }
            let calls = srv.engine.active();
            let processed = srv.engine.counters.processed;
            let s = |k: u64| if k == 1 { "" } else { "s" };
            out.push(format!("{n} active channel{}", s(n)));
            out.push(format!("{calls} active call{}", s(calls as u64)));
            out.push(format!("{processed} call{} processed", s(processed)));
            Ok(out)
        }
        ["manager", "show", "connected"] => {
            let mut out = vec![format!(
                "  {:<15}  {:<55}  {:<10}  {:<10}  {:<8}  {:<8}  {:<10}  {:<10}",
                "Username",
                "IP Address",
                "Start",
                "Elapsed",
                "FileDes",
                "HttpCnt",
                "ReadPerms",
                "WritePerms"
            )];
            let mut n = 0;
            for s in srv
                .sessions
                .values()
                .filter(|s| s.is_open() && s.logged_in())
            {
                n += 1;
                let start = srv.clock.secs(s.accepted);
                let elapsed = now.saturating_duration_since(s.accepted).as_secs();
                out.push(format!(
                    "  {:<15.15}  {:<55.55}  {:<10}  {:<10}  {:<8}  {:<8}  {:<10}  {:<10}",
                    s.user.as_deref().unwrap_or(""),
                    crate::session::shown_ip(s.peer.ip()).to_string(),
                    start,
                    elapsed,
                    s.id.0 + 3,
                    0,
                    s.read.0,
                    s.write.0
                ));
            }
            out.push(format!("{n} users connected."));
            Ok(out)
        }
        ["dialplan", "show"] => dialplan::show(dialplan::CONTEXT).ok_or_default(),
        ["dialplan", "show", ctx] => match dialplan::show(ctx) {
            Some(lines) => Ok(lines),
            None => Err(vec![format!("There is no existence of '{ctx}' context")]),
        },
        _ => {
            let hint = words.iter().take(2).copied().collect::<Vec<_>>().join(" ");
            Err(vec![format!(
                "No such command '{cmd}' (type 'core show help {hint}' for other possible commands)"
            )])
        }
    }
}

trait OkOrDefault {
    fn ok_or_default(self) -> Result<Vec<String>, Vec<String>>;
}

impl OkOrDefault for Option<Vec<String>> {
    fn ok_or_default(self) -> Result<Vec<String>, Vec<String>> {
        self.ok_or_else(Vec::new)
    }
}

/// Command.
pub(super) fn command(
    srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    now: Instant,
) -> Outcome {
    let id = req.action_id();
    let Some(cmd) = req.get("Command") else {
        return Outcome::Reply(out::error(id.as_deref(), "No command provided"));
    };
    let words: Vec<&str> = cmd.split_whitespace().collect();
    if blacklisted(&words) {
        return Outcome::Reply(out::error(id.as_deref(), "Command blacklisted"));
    }
    let (kind, lines) = match run_cli(srv, &words, &cmd, now) {
        Ok(l) => ("Success", l),
        Err(l) => ("Error", l),
    };
    let mut m = Msg::response(kind)
        .id(id.as_deref())
        .field("Message", "Command output follows");
    for line in lines {
        m.push("Output", line);
    }
    Outcome::Reply(m.end())
}

#[cfg(test)]
mod tests {
    use super::blacklisted;

    #[test]
    fn blacklist() {
        assert!(blacklisted(&["module", "unload", "app_dial.so"]));
        assert!(blacklisted(&["Module", "Load"]));
        assert!(!blacklisted(&["module", "show"]));
        assert!(!blacklisted(&["module"]));
    }
}
