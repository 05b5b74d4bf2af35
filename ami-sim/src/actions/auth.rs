//! Login, Challenge and Logoff (`action_login`, `authenticate`, `action_challenge`).

use super::Outcome;
use crate::classes::ClassMask;
use crate::clock::later;
use crate::events::EventBuilder;
use crate::input::Request;
use crate::out::{self, Msg};
use crate::server::SimServer;
use crate::session::security_address;
use crate::{CloseReason, SessionId};
use md5::{Digest, Md5};
use std::time::{Duration, Instant};

/// Asterisk sleeps one second before answering a failed login.
const AUTH_FAIL_DELAY: Duration = Duration::from_secs(1);

/// Why authentication failed, for the security event.
enum Failure {
    NoUser(String),
    BadSecret(String),
    BadKey {
        user: String,
        challenge: String,
        got: String,
        expected: String,
    },
}

fn security_event(
    srv: &SimServer,
    sid: SessionId,
    name: &str,
    severity: &str,
    version: &str,
    account: &str,
    now: Instant,
) -> EventBuilder {
    let (tag, (local, peer)) = match srv.session(sid) {
        Some(s) => (s.session_tag(), (s.local, s.peer)),
        None => (String::new(), crate::session::virtual_addresses(sid)),
    };
    EventBuilder::new(name, ClassMask::SECURITY, srv.cfg.system_name.as_deref())
        .field("EventTV", srv.clock.event_tv(now))
        .field("Severity", severity)
        .field("Service", "AMI")
        .field("EventVersion", version)
        .field("AccountID", account)
        .field("SessionID", tag)
        .field("LocalAddress", security_address(local))
        .field("RemoteAddress", security_address(peer))
}

/// The `SessionTV` of a security event: when the session started.
fn session_tv(srv: &SimServer, sid: SessionId, now: Instant) -> String {
    let accepted = srv.session(sid).map_or(now, |s| s.accepted);
    srv.clock.event_tv(accepted)
}

/// `allowmultiplelogin=no`: a Login or Challenge for a user already logged in elsewhere.
pub(super) fn login_in_use(srv: &mut SimServer, req: &Request, now: Instant) -> Option<Outcome> {
    let name = req.get("Username")?;
    let user = srv
        .cfg
        .users
        .iter()
        .find(|u| u.name.eq_ignore_ascii_case(&name))?;
    if user.allow_multiple_login {
        return None;
    }
    let in_use = srv.sessions.values().any(|s| {
        s.is_open()
            && s.user
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(&name))
    });
    in_use.then(|| Outcome::Later {
        at: later(now, AUTH_FAIL_DELAY),
        reply: out::error(req.action_id().as_deref(), "Login Already In Use"),
        close: Some(CloseReason::AuthFailed),
    })
}

fn authenticate(srv: &SimServer, sid: SessionId, req: &Request) -> Result<usize, Option<Failure>> {
    let Some(name) = req.get("Username") else {
        return Err(None);
    };
    let Some(idx) = srv
        .cfg
        .users
        .iter()
        .position(|u| u.name.eq_ignore_ascii_case(&name))
    else {
        return Err(Some(Failure::NoUser(name)));
    };
    let user = &srv.cfg.users[idx];
    let md5 = req
        .get("AuthType")
        .is_some_and(|t| t.eq_ignore_ascii_case("MD5"));
    if md5 {
        let challenge = srv.session(sid).and_then(|s| s.challenge.clone());
        let key = req.get("Key");
        let (Some(challenge), Some(key)) = (challenge, key) else {
            return Err(Some(Failure::BadSecret(name)));
        };
        let mut h = Md5::new();
        h.update(challenge.as_bytes());
        h.update(user.secret.as_bytes());
        let expected: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if key == expected {
            return Ok(idx);
        }
        return Err(Some(Failure::BadKey {
            user: name,
            challenge,
            got: key,
            expected,
        }));
    }
    if req.get("Secret").unwrap_or_default() == user.secret {
        Ok(idx)
    } else {
        Err(Some(Failure::BadSecret(name)))
    }
}

/// Login.
pub(super) fn login(srv: &mut SimServer, sid: SessionId, req: &Request, now: Instant) -> Outcome {
    let id = req.action_id();
    if srv.session(sid).is_some_and(|s| s.logged_in()) {
        return Outcome::Reply(out::ack(id.as_deref(), "Already authenticated"));
    }
    match authenticate(srv, sid, req) {
        Err(failure) => {
            srv.stats.login_failures += 1;
            let ev = match failure {
                Some(Failure::NoUser(u)) => Some(
                    security_event(srv, sid, "InvalidAccountID", "Error", "1", &u, now)
                        .field("SessionTV", session_tv(srv, sid, now)),
                ),
                Some(Failure::BadSecret(u)) => Some(
                    security_event(srv, sid, "InvalidPassword", "Error", "2", &u, now)
                        .field("SessionTV", session_tv(srv, sid, now)),
                ),
                Some(Failure::BadKey {
                    user,
                    challenge,
                    got,
                    expected,
                }) => Some(
                    security_event(
                        srv,
                        sid,
                        "ChallengeResponseFailed",
                        "Error",
                        "1",
                        &user,
                        now,
                    )
                    .field("Challenge", challenge)
                    .field("Response", got)
                    .field("ExpectedResponse", expected)
                    .field("SessionTV", session_tv(srv, sid, now)),
                ),
                None => None,
            };
            if let Some(ev) = ev {
                srv.broadcast(&ev.build());
            }
            Outcome::Later {
                at: later(now, AUTH_FAIL_DELAY),
                reply: out::error(id.as_deref(), "Authentication failed"),
                close: Some(CloseReason::AuthFailed),
            }
        }
        Ok(idx) => {
            let user = srv.cfg.users[idx].clone();
            let mask = req.get("Events").and_then(|e| ClassMask::parse(&e));
            let booted = srv.booted;
            let uptime = srv.uptime();
            let Some(s) = srv.session_mut(sid) else {
                return Outcome::Reply(Vec::new());
            };
            s.user = Some(user.name.clone());
            s.read = user.read;
            s.write = user.write;
            if let Some(m) = mask {
                s.events = m;
            }
            let inline_boot = s.events.contains(ClassMask::SYSTEM)
                && s.read.contains(ClassMask::SYSTEM)
                && booted;
            srv.stats.logins += 1;
            let mut reply = out::ack(id.as_deref(), "Authentication accepted");
            if inline_boot {
                reply.extend(
                    Msg::item("FullyBooted")
                        .field("Privilege", ClassMask::SYSTEM.privilege())
                        .field("Uptime", uptime.to_string())
                        .field("LastReload", uptime.to_string())
                        .field("Status", "Fully Booted")
                        .end(),
                );
            }
            let ev = security_event(
                srv,
                sid,
                "SuccessfulAuth",
                "Informational",
                "1",
                &user.name,
                now,
            )
            .field("UsingPassword", "0")
            .field("SessionTV", session_tv(srv, sid, now));
            srv.broadcast(&ev.build());
            Outcome::Reply(reply)
        }
    }
}

/// Challenge.
pub(super) fn challenge(
    srv: &mut SimServer,
    sid: SessionId,
    req: &Request,
    _now: Instant,
) -> Outcome {
    let id = req.action_id();
    let md5 = req
        .get("AuthType")
        .is_some_and(|t| t.eq_ignore_ascii_case("MD5"));
    if !md5 {
        return Outcome::Reply(out::error(id.as_deref(), "Must specify AuthType"));
    }
    let existing = srv.session(sid).and_then(|s| s.challenge.clone());
    let ch = match existing {
        Some(c) => c,
        None => {
            let c = srv.challenge();
            if let Some(s) = srv.session_mut(sid) {
                s.challenge = Some(c.clone());
            }
            c
        }
    };
    Outcome::Reply(
        Msg::response("Success")
            .id(id.as_deref())
            .field("Challenge", ch)
            .end(),
    )
}

/// Logoff.
pub(super) fn logoff(
    _srv: &mut SimServer,
    _sid: SessionId,
    req: &Request,
    _now: Instant,
) -> Outcome {
    Outcome::Close(
        out::simple(
            "Goodbye",
            req.action_id().as_deref(),
            "Thanks for all the fish.",
        ),
        CloseReason::Logoff,
    )
}
