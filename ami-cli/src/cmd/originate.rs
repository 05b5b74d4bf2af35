//! `ami originate`: an async Originate; prints its OriginateResponse.

use super::action::{parse_field, send_one, Shown};
use crate::subscription;
use crate::{Connection, Failure, EXIT_USAGE};
use ami_proto::{Action, SendOptions};

// Where the answered channel goes: one of the two is required, and clap's message then
// names both (with `required_unless_present` it named --application alone).
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["application", "context"])))]
pub(crate) struct Args {
    /// The channel to call, e.g. PJSIP/100.
    #[arg(long)]
    channel: String,
    /// Run this application on the answered channel (or give --context and --exten).
    #[arg(long, conflicts_with_all = ["context", "exten"])]
    application: Option<String>,
    /// The application's arguments (with --application only).
    #[arg(long)]
    data: Option<String>,
    /// Dialplan context to connect the answered channel to (with --exten).
    #[arg(long, requires = "exten")]
    context: Option<String>,
    /// Extension in --context.
    #[arg(long, requires = "context")]
    exten: Option<String>,
    /// Priority in --context/--exten [default: 1] (with --context only).
    #[arg(long)]
    priority: Option<String>,
    /// Channel variables K=V (repeatable). V is sent escaped, so commas, quotes and
    /// backslashes in it reach the channel as typed.
    #[arg(long = "var", value_parser = parse_field)]
    vars: Vec<(String, String)>,
    /// Ring timeout in milliseconds, more than 0.
    #[arg(long, default_value_t = 30000, value_parser = positive_ms)]
    timeout: u64,
    /// The caller ID the called party sees, e.g. '"Sales" <5551234>'.
    #[arg(long)]
    caller_id: Option<String>,
    /// With several servers: the one to place the call from (its host:port).
    #[arg(long, value_name = "NAME")]
    on: Option<String>,
}

/// `--timeout`: milliseconds, more than 0 (at 0 Asterisk gives the call up at once), as
/// `action --timeout` refuses 0 seconds.
fn positive_ms(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("give more than 0 milliseconds".to_string()),
        Ok(ms) => Ok(ms),
        Err(e) => Err(e.to_string()),
    }
}

/// `--data` and `--priority` belong to one kind of call each: given with the other, they
/// would not be sent (clap exempts `--data`'s `requires` once `--context` conflicts
/// `--application` away, so it is checked here).
fn misplaced(a: &Args) -> Result<(), Failure> {
    let refused = |reason: &str| Err(Failure::new(EXIT_USAGE, reason));
    if a.application.is_some() && a.priority.is_some() {
        return refused(
            "--priority is for --context/--exten; --application runs an application, which \
             has no priority",
        );
    }
    if a.application.is_none() && a.data.is_some() {
        return refused(
            "--data is for --application (its arguments); --context/--exten take no data",
        );
    }
    Ok(())
}

/// The one server the call is placed from: the only `--server`, or the one `--on` names.
fn from_server(conn: &Connection, on: Option<&str>) -> Result<Connection, Failure> {
    let names = || crate::fleet::names(&conn.server);
    let url = match (on, conn.server.as_slice()) {
        (None, [] | [_]) => return Ok(conn.clone()),
        (None, _) => {
            return Err(Failure::new(
                EXIT_USAGE,
                format!(
                    "several servers: pick the one to call from with --on ({})",
                    names()
                ),
            ))
        }
        (Some(on), servers) => crate::fleet::named(servers, on).ok_or_else(|| {
            Failure::new(
                EXIT_USAGE,
                format!("--on {on}: no such server (servers: {})", names()),
            )
        })?,
    };
    Ok(Connection {
        server: vec![url.clone()],
        ..conn.clone()
    })
}

fn action(a: &Args) -> Result<Action, Failure> {
    misplaced(a)?;
    let mut action = Action::new("Originate").field("Channel", &a.channel);
    // clap guarantees --application, or --context with --exten.
    match (&a.application, &a.context, &a.exten) {
        (Some(app), _, _) => {
            action.push("Application", app);
            if let Some(d) = &a.data {
                action.push("Data", d);
            }
        }
        (None, context, exten) => {
            action.push("Context", context.as_deref().unwrap_or_default());
            action.push("Exten", exten.as_deref().unwrap_or_default());
            action.push("Priority", a.priority.as_deref().unwrap_or("1"));
        }
    }
    for (k, v) in &a.vars {
        // Asterisk splits a Variable header at commas and drops quotes and backslashes:
        // `--var NOTE=a,b` sent as typed would set NOTE to `a`.
        action = action
            .variable(k, v)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("invalid --var: {e}")))?;
    }
    if let Some(cid) = &a.caller_id {
        action.push("CallerID", cid);
    }
    action.push("Timeout", a.timeout.to_string());
    action.push("Async", "true");
    Ok(action)
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    // Only the OriginateResponse is wanted: on a busy server the other call events (every
    // call's, not only this one's) would be most of what the session reads meanwhile.
    let wanted = subscription::for_events(&["OriginateResponse".to_string()]);
    let picked = from_server(conn, args.on.as_deref())?;
    // Picked of several: the line names its server, as `action --on` lines do.
    let named = (conn.server.len() > 1)
        .then(|| picked.server.first().map(crate::fleet::name))
        .flatten();
    send_one(
        &picked,
        action(args)?,
        SendOptions::default(),
        wanted,
        (Shown::FollowUp, named.as_deref()),
        // `--timeout` here is the ring time, not the wait for the answer: no flag sets that.
        None,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Line::try_parse_from([&["originate", "--channel", "Local/echo@ami-test"], args].concat())
            .map(|l| l.args)
    }

    #[test]
    fn a_call_with_nowhere_to_go_names_both_ways_to_say_where() {
        let e = parse(&[]).unwrap_err().to_string();
        assert!(
            e.contains("--application") && e.contains("--context"),
            "{e}"
        );
        assert!(parse(&["--application", "Wait", "--context", "c", "--exten", "e"]).is_err());
        assert!(
            parse(&["--context", "c"]).is_err(),
            "--context needs --exten"
        );
    }

    #[test]
    fn a_dialplan_call_sends_priority_1_unless_told_and_an_application_its_data() {
        let a = action(&parse(&["--context", "c", "--exten", "e"]).unwrap()).unwrap();
        assert_eq!(a.get("Priority"), Some("1"));
        let a = action(&parse(&["--context", "c", "--exten", "e", "--priority", "3"]).unwrap());
        assert_eq!(a.unwrap().get("Priority"), Some("3"));
        let a = action(&parse(&["--application", "Wait", "--data", "1"]).unwrap()).unwrap();
        assert_eq!((a.get("Data"), a.get("Priority")), (Some("1"), None));
    }

    #[test]
    fn priority_with_an_application_or_data_with_a_dialplan_call_is_refused() {
        for args in [
            &["--application", "Wait", "--priority", "3"][..],
            &["--context", "c", "--exten", "e", "--data", "foo"],
        ] {
            let f = action(&parse(args).unwrap()).unwrap_err();
            assert_eq!(f.code, EXIT_USAGE, "{args:?}");
        }
    }

    #[test]
    fn a_ring_timeout_of_0_is_refused_before_anything_is_sent() {
        assert!(parse(&["--application", "Wait", "--timeout", "0"]).is_err());
        let a = action(&parse(&["--application", "Wait", "--timeout", "5"]).unwrap());
        assert_eq!(a.unwrap().get("Timeout"), Some("5"));
    }
}
