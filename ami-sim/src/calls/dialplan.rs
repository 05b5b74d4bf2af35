//! The simulated dialplan: context `ami-test`, mirroring the one the fixtures were recorded
//! with (`dialplan show ami-test` in `command_multiline.raw`).
//!
//! | exten | does |
//! |---|---|
//! | `echo` | Answer, `Set(TIMEOUT(absolute)=N)` (N = `ECHO_SECS` or the configured echo timeout), Echo; the timeout sends it to `T`, which hangs up |
//! | `wait10` | Answer, Wait(10), Hangup |
//! | `hold` | Answer, Wait(300), Hangup |
//! | `busy` | Busy: the originate fails with Reason 5 |
//! | `congestion` | Congestion: Reason 8 |
//! | `noanswer` | Wait(120) without answering: the originate times out (Reason 3) |
//! | `hangup` | Hangup before answer: Reason 0 |
//! | `userevent` | Answer, `UserEvent(TestEvent,Foo: bar)`, Hangup |
//! | `burst` | Answer, `BURST_N` (default 1000, at most [`MAX_BURST`](super::MAX_BURST)) `UserEvent(Burst,Seq: i)`, Hangup |
//! | `setvar` | Answer, `Set(AMI_TEST_VAR=from-dialplan)`, Wait(2), Hangup |
//! | `queue` | Answer, `Queue(testq,r,,,30)`, Hangup |
//! | `queue-wait` | Answer, `Queue(testq-empty,r,,,60)`, Hangup |
//! | `qagent` | Answer, Wait(3), Hangup (the queue agent's extension) |
//! | `100`, `101` | Answer, Wait(10), Hangup (hints `Custom:ext100`/`Custom:ext101`) |
//! | `T` | Hangup |

use std::time::Duration;

/// The only context.
pub(crate) const CONTEXT: &str = "ami-test";

/// One priority: an application and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prio {
    pub(crate) app: &'static str,
    pub(crate) data: String,
}

/// `d` as Asterisk's seconds (`7`, `2.5`), written exactly from its nanoseconds so that
/// `TIMEOUT(absolute)` (which takes a fraction: func_timeout.c) runs what was configured.
fn seconds(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return d.as_secs().to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
}

fn p(app: &'static str, data: &str) -> Prio {
    Prio {
        app,
        data: data.to_string(),
    }
}

/// Extension names in `dialplan show` order.
pub(crate) const EXTENS: [&str; 16] = [
    "100",
    "101",
    "T",
    "burst",
    "busy",
    "congestion",
    "echo",
    "hangup",
    "hold",
    "noanswer",
    "qagent",
    "queue",
    "queue-wait",
    "setvar",
    "userevent",
    "wait10",
];

/// The priorities of `exten@context`, with `${...}` already substituted (`echo`,
/// `burst_n`). `None` when the extension does not exist.
pub(crate) fn program(
    context: &str,
    exten: &str,
    echo: Duration,
    burst_n: usize,
) -> Option<Vec<Prio>> {
    if context != CONTEXT {
        return None;
    }
    let answer = || p("Answer", "");
    let hangup = || p("Hangup", "");
    let prog = match exten {
        "100" | "101" | "wait10" => vec![answer(), p("Wait", "10"), hangup()],
        "T" | "hangup" => vec![hangup()],
        "burst" => vec![
            answer(),
            p("UserEvent", &format!("Burst,Count: {burst_n}")),
            hangup(),
        ],
        "busy" => vec![p("Busy", "5")],
        "congestion" => vec![p("Congestion", "5")],
        "echo" => vec![
            answer(),
            p("Set", &format!("TIMEOUT(absolute)={}", seconds(echo))),
            p("Echo", ""),
            hangup(),
        ],
        "hold" => vec![answer(), p("Wait", "300"), hangup()],
        "noanswer" => vec![p("Wait", "120"), hangup()],
        "qagent" => vec![answer(), p("Wait", "3"), hangup()],
        "queue" => vec![answer(), p("Queue", "testq,r,,,30"), hangup()],
        "queue-wait" => vec![answer(), p("Queue", "testq-empty,r,,,60"), hangup()],
        "setvar" => vec![
            answer(),
            p("Set", "AMI_TEST_VAR=from-dialplan"),
            p("Wait", "2"),
            hangup(),
        ],
        "userevent" => vec![answer(), p("UserEvent", "TestEvent,Foo: bar"), hangup()],
        _ => return None,
    };
    Some(prog)
}

/// Whether priority `priority` of `exten@context` exists (`ast_exists_extension`).
pub(crate) fn exists_at(context: &str, exten: &str, priority: i64) -> bool {
    program(context, exten, Duration::from_secs(1), 1).is_some_and(|prog| {
        priority >= 1 && usize::try_from(priority).is_ok_and(|p| p <= prog.len())
    })
}

/// `dialplan show <context>` output lines, `None` for an unknown context.
pub(crate) fn show(context: &str) -> Option<Vec<String>> {
    if context != CONTEXT {
        return None;
    }
    let mut out = vec![format!("[ Context '{CONTEXT}' created by 'pbx_config' ]")];
    let mut prios = 0;
    for exten in EXTENS {
        let prog = program(CONTEXT, exten, Duration::from_secs(5), 1000).unwrap_or_default();
        for (i, pr) in prog.iter().enumerate() {
            prios += 1;
            let step = format!("{}. {}({})", i + 1, pr.app, pr.data);
            if i == 0 {
                let head = format!("'{exten}' =>");
                out.push(format!("  {head:<18}{step:<46}[extensions.conf]"));
            } else {
                out.push(format!("  {:<18}{step:<46}[extensions.conf]", ""));
            }
        }
    }
    out.push(String::new());
    out.push(format!(
        "-= {} extensions ({prios} priorities) in 1 context. =-",
        EXTENS.len()
    ));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown() {
        assert!(exists_at("ami-test", "echo", 1));
        assert!(exists_at("ami-test", "echo", 4));
        assert!(!exists_at("ami-test", "echo", 5));
        assert!(!exists_at("ami-test", "echo", -1));
        assert!(!exists_at("ami-test", "nope", 1));
        assert!(!exists_at("other", "echo", 1));
        let echo = program("ami-test", "echo", Duration::from_secs(7), 1).unwrap();
        assert_eq!(echo[1].data, "TIMEOUT(absolute)=7");
        assert!(show("ami-test").unwrap().len() > 20);
    }
}
