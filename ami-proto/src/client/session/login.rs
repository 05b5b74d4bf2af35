//! Login (plain and MD5, never downgraded), filter re-application and the heartbeat.

use super::*;
use crate::repeats::Say;
use crate::Shown;

/// Asterisk's MD5 login key: lowercase hex of md5(challenge followed by secret). The
/// challenge is bytes, as Asterisk hashes it (a C string; its own are decimal digits).
fn md5_key(challenge: &[u8], secret: &str) -> String {
    use md5::{Digest, Md5};
    let mut md5 = Md5::new();
    md5.update(challenge);
    md5.update(secret.as_bytes());
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Message` with which Asterisk refuses every action, Login included, while it shuts
/// down (`process_message`); the connection stays open.
const SHUTTING_DOWN: &str = "Asterisk is shutting down";

/// The `Message` with which Asterisk refuses a Login or Challenge for a user already logged
/// in on another session when `allowmultiplelogin=no`, before it closes the connection. Not
/// the credentials: that other session may be this client's own, half-open after a network
/// fault and not yet noticed by the server, or another program's that will end; so the
/// client retries with backoff instead of closing for good.
const LOGIN_IN_USE: &str = "Login Already In Use";

/// What a Challenge answer without a challenge becomes in [`DisconnectReason::LoginRejected`].
const NO_CHALLENGE: &str = "the server answered the MD5 Challenge with no challenge";

impl Client {
    pub(super) fn on_banner(&mut self, now: Instant, version: Option<String>) {
        if self.state != State::AwaitBanner {
            self.stats.unexpected += 1;
            return;
        }
        let Some(version) = version else {
            log::warn!(
                "{who}: first line is not an `{BANNER_PREFIX}` banner",
                who = self.config.who()
            );
            self.disconnect(now, DisconnectReason::BadBanner);
            return;
        };
        log::debug!("{who}: banner: version {version}", who = self.config.who());
        self.conn.ami_version = version;
        self.timers.stop(Timer::Banner);
        self.timers
            .set(Timer::Login, now + self.config.login_timeout);
        self.state = State::LoggingIn;
        match self.config.auth {
            AuthMethod::Plain => {
                let login = self.login_action(None);
                self.send_login(now, login);
            }
            AuthMethod::Md5 => {
                let challenge = Action::new("Challenge").field("AuthType", "MD5");
                self.send_internal(now, Internal::Challenge, challenge);
            }
        }
    }

    /// Sends the Login, and right behind it, without waiting for its answer, the
    /// prefilters: Asterisk reads the two from one buffer and handles them back to back,
    /// so the filters are in place microseconds after the login instead of a round trip
    /// later (a busy server's events of that round trip are what they exist to keep out).
    /// Should the login fail, their answers are errors the closing session never reads.
    fn send_login(&mut self, now: Instant, login: Action) {
        self.send_internal(now, Internal::Login, login);
        for f in self.config.prefilters.clone() {
            let action = Action::new("Filter")
                .field("Operation", "Add")
                .field("Filter", f);
            self.send_internal(now, Internal::Prefilter, action);
        }
    }

    /// The Login, carrying the session's event mask: from then on the server has that mask,
    /// so the mask changes still pending are for good (undoing one would leave the client
    /// believing a mask the server does not have).
    pub(super) fn login_action(&mut self, challenge: Option<&[u8]>) -> Action {
        self.mask_changes.clear();
        let login = Action::new("Login").field("Username", self.config.username.as_str());
        let login = match challenge {
            None => login.field("Secret", self.config.secret.expose()),
            Some(c) => login
                .field("AuthType", "MD5")
                .field("Key", md5_key(c, self.config.secret.expose())),
        };
        login.field("Events", self.config.events.as_str())
    }

    pub(super) fn on_internal_response(
        &mut self,
        now: Instant,
        seq: u64,
        which: Internal,
        msg: Message,
    ) {
        self.pending.remove(seq);
        let ok = msg.get("Response").is_some_and(|r| r.is_word("Success"));
        let text = msg.get_str("Message").unwrap_or("").to_string();
        match which {
            Internal::Challenge | Internal::Login if !ok && is_shutting_down(&text) => {
                // Not the credentials: the server refuses everything until it is gone (or
                // restarted), so this is its shutdown, and a reconnect with backoff follows.
                log::info!(
                    "{}: {} refused: the server is shutting down",
                    self.config.who(),
                    if which == Internal::Login {
                        "login"
                    } else {
                        "challenge"
                    }
                );
                self.disconnect(now, DisconnectReason::ServerShutdown);
            }
            Internal::Challenge => match msg.get("Challenge").filter(|c| ok && !c.is_empty()) {
                Some(challenge) => {
                    // As sent, even if not UTF-8: Asterisk hashes the bytes it sent.
                    let login = self.login_action(Some(challenge.as_bytes()));
                    self.send_login(now, login);
                }
                None if ok => self.login_rejected(now, NO_CHALLENGE.to_string()),
                None => self.login_rejected(now, text),
            },
            Internal::Login if ok => self.logged_in(now),
            Internal::Login => self.login_rejected(now, text),
            Internal::Reapply => {
                // One given up on at the login timeout was counted then.
                if !ok && self.conn.reapply_left > 0 {
                    self.stats.filters_failed += 1;
                    log::warn!(
                        "{}: re-applying a filter failed: {}",
                        self.config.who(),
                        Shown(&text)
                    );
                }
                self.filter_settled(now);
            }
            Internal::Prefilter => {
                if !ok {
                    self.stats.filters_failed += 1;
                    log::warn!(
                        "{}: the server refused a traffic filter (the session goes on \
                         unfiltered): {}",
                        self.config.who(),
                        Shown(&text)
                    );
                }
            }
            Internal::Heartbeat => self.conn.heartbeat_outstanding = false,
            Internal::Logoff => {
                // Asterisk answers Goodbye and hangs up. Any other answer still ends the
                // exchange: waiting on would leave the client logging off for ever, since
                // no heartbeat runs while it does.
                if !msg.get("Response").is_some_and(|r| r.is_word("Goodbye")) {
                    log::warn!(
                        "{}: Logoff answered without Goodbye: {}",
                        self.config.who(),
                        Shown(&text)
                    );
                }
                self.disconnect(now, DisconnectReason::Logoff);
            }
        }
    }

    /// One filter installed at login is done with: answered, refused, or unanswered by its
    /// deadline. Ready once none is left.
    pub(super) fn filter_settled(&mut self, now: Instant) {
        self.conn.reapply_left = self.conn.reapply_left.saturating_sub(1);
        if self.conn.reapply_left == 0 && self.state == State::Configuring {
            self.become_ready(now);
        }
    }

    /// A filter installed at login got no answer by its deadline. Counted as done, as a
    /// refused one is: the session goes on, maybe unfiltered (the server may still apply
    /// it; its late answer is then an unmatched response).
    pub(super) fn filter_timed_out(&mut self, now: Instant) {
        if self.conn.reapply_left == 0 {
            // Already given up on at the login timeout, and said so.
            return;
        }
        self.stats.filters_failed += 1;
        log::warn!(
            "{}: the server did not answer a filter in time; the session goes on, maybe \
             unfiltered",
            self.config.who()
        );
        self.filter_settled(now);
    }

    /// The login timeout passed after the login succeeded, with filters still unanswered
    /// (their own deadlines are later): the session becomes Ready without waiting for them.
    pub(super) fn filters_unanswered(&mut self, now: Instant) {
        log::warn!(
            "{}: {} filter(s) unanswered within the login timeout; the session goes on, \
             maybe unfiltered",
            self.config.who(),
            self.conn.reapply_left
        );
        self.stats.filters_failed += self.conn.reapply_left as u64;
        self.conn.reapply_left = 0;
        self.become_ready(now);
    }

    pub(super) fn login_rejected(&mut self, now: Instant, message: String) {
        if is_login_in_use(&message) {
            // Another refusal than the streak's (if any): that streak is over, and the same
            // refusal coming back after this one is a change, said again.
            if let Some((n, _)) = self.refusals.reset() {
                log::warn!(
                    "{}: login was rejected {n} more time(s) with the previous message",
                    self.config.who()
                );
            }
            self.refused_with = None;
            log::warn!(
                "{}: login rejected: {} (allowmultiplelogin=no and another session of {} is \
                 logged in, perhaps this client's own, half-open); retrying with backoff",
                self.config.who(),
                Shown(&message),
                Shown(&self.config.username)
            );
        } else {
            // A refusal retried for hours (`reconnect_on_auth_failure`, a secret rotated on
            // the server): said when it starts and when its message changes, then a summary
            // with the count at most every few minutes; each retry at debug.
            let who = self.config.who();
            if self.refused_with.as_deref() != Some(message.as_str()) {
                if let Some((n, _)) = self.refusals.reset() {
                    log::warn!(
                        "{who}: login was rejected {n} more time(s) with the previous message"
                    );
                }
                self.refused_with = Some(message.clone());
            }
            match self.refusals.occur(now) {
                Say::Full { .. } => log::warn!(
                    "{who}: login rejected: {} (repeated refusals are summarised)",
                    Shown(&message)
                ),
                Say::Summary { unsaid, over, .. } => log::warn!(
                    "{who}: login still rejected: {} more refusal(s) in the last {} s: {}",
                    unsaid + 1,
                    over.as_secs(),
                    Shown(&message)
                ),
                Say::Counted => {
                    self.refusals.unsaid(1, 0);
                    log::debug!("{who}: login rejected again: {}", Shown(&message));
                }
            }
        }
        self.disconnect(now, DisconnectReason::LoginRejected { message });
    }

    pub(super) fn logged_in(&mut self, now: Instant) {
        self.state = State::Configuring;
        // A filter whose own action is still queued is sent by it; re-applying would send it
        // twice on this connection.
        let filters: Vec<String> = self
            .filters
            .iter()
            .filter(|(_, seq)| self.pending.stage(*seq) != Some(Stage::Queued))
            .map(|(f, _)| f.clone())
            .collect();
        self.conn.reapply_left = filters.len();
        for f in filters {
            let action = Action::new("Filter")
                .field("Operation", "Add")
                .field("Filter", f);
            self.send_internal(now, Internal::Reapply, action);
        }
        if self.conn.reapply_left == 0 {
            self.become_ready(now);
        }
    }

    pub(super) fn become_ready(&mut self, now: Instant) {
        self.state = State::Ready;
        self.timers.stop(Timer::Login);
        self.timers
            .set(Timer::Idle, now + self.config.ping_interval);
        self.conn.ready_since = Some(now);
        self.stats.logins += 1;
        self.streaks_cleared();
        log::info!(
            "{}: session ready (AMI {})",
            self.config.who(),
            self.conn.ami_version
        );
        self.events.session_ready(self.conn.ami_version.clone());
        for login_event in self.events.take_held() {
            self.queue_event(now, login_event);
        }
        self.notify(Notice::Ready {
            ami_version: self.conn.ami_version.clone(),
        });
        self.pump(now);
    }

    pub(super) fn heartbeat(&mut self, now: Instant) {
        if !matches!(self.state, State::Ready | State::Configuring) {
            return;
        }
        if !self.conn.heartbeat_outstanding {
            self.conn.heartbeat_outstanding = true;
            self.send_internal(now, Internal::Heartbeat, Action::new("Ping"));
        }
        // A written sync Originate legitimately silences the server until it is answered;
        // so does one cancelled while written: the server is blocked all the same.
        let mut pong = now + self.config.pong_timeout;
        if let Some(d) = self.pending.sync_originate_deadline() {
            pong = pong.max(d);
        }
        self.timers.set(Timer::Pong, pong);
    }
}

/// Whether a login's error `Message` is Asterisk's "Login Already In Use" refusal, which a
/// retry may get past (trailing blanks ignored).
pub(super) fn is_login_in_use(text: &str) -> bool {
    text.trim_end().eq_ignore_ascii_case(LOGIN_IN_USE)
}

/// Whether an error `Message` is Asterisk's "shutting down" refusal (trailing blanks, which
/// some error paths add, ignored).
pub(super) fn is_shutting_down(text: &str) -> bool {
    text.trim_end().eq_ignore_ascii_case(SHUTTING_DOWN)
}
