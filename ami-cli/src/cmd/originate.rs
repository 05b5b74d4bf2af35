//! `ami originate`: an async Originate; prints its OriginateResponse.

use super::action::{parse_field, send_one, Shown};
use crate::subscription;
use crate::{Connection, Failure, EXIT_USAGE};
use ami_proto::{Action, SendOptions};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The channel to call, e.g. PJSIP/100.
    #[arg(long)]
    channel: String,
    /// Run this application on the answered channel (or give --context and --exten).
    #[arg(long, conflicts_with_all = ["context", "exten"], required_unless_present = "context")]
    application: Option<String>,
    /// The application's arguments.
    #[arg(long, requires = "application")]
    data: Option<String>,
    /// Dialplan context to connect the answered channel to (with --exten).
    #[arg(long, requires = "exten")]
    context: Option<String>,
    /// Extension in --context.
    #[arg(long, requires = "context")]
    exten: Option<String>,
    /// Priority in --context/--exten.
    #[arg(long, default_value = "1")]
    priority: String,
    /// Channel variables K=V (repeatable). V is sent escaped, so commas, quotes and
    /// backslashes in it reach the channel as typed.
    #[arg(long = "var", value_parser = parse_field)]
    vars: Vec<(String, String)>,
    /// Ring timeout in milliseconds.
    #[arg(long, default_value_t = 30000)]
    timeout: u64,
    /// The caller ID the called party sees, e.g. '"Sales" <5551234>'.
    #[arg(long)]
    caller_id: Option<String>,
    /// With several servers: the one to place the call from (its host:port).
    #[arg(long, value_name = "NAME")]
    on: Option<String>,
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
            action.push("Priority", &a.priority);
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
    let conn = from_server(conn, args.on.as_deref())?;
    send_one(
        &conn,
        action(args)?,
        SendOptions::default(),
        wanted,
        Shown::FollowUp,
    )
}
