//! Server configuration: users, versions, timeouts and limits.

use crate::classes::ClassMask;
use std::time::Duration;
use thiserror::Error;

/// Smallest [`SimConfig::max_backlog`] accepted, in bytes. A login writes the banner, the
/// Login answer and its events (FullyBooted, SuccessfulAuth: some 300 bytes, more with a
/// long `system_name`) before the client can read any of it; a cap below that closes every
/// session as a slow reader before it is logged in (256 bytes did). 1 KiB leaves room for
/// that and a typical answer.
pub const MIN_MAX_BACKLOG: usize = 1024;

/// Longest [`SimConfig::system_name`] accepted, in bytes: what Asterisk keeps of
/// `systemname` (its buffer holds 128 bytes with the terminating NUL).
pub const MAX_SYSTEM_NAME_LEN: usize = 127;

/// One `manager.conf` user. Its `Debug` shows the secret as `<redacted>`: a simulator
/// configured with a real password (a user pointing it at their own dialer) must not print
/// it in a log line or a panic message.
#[derive(Clone, PartialEq, Eq)]
pub struct SimUser {
    /// Login name (matched case-insensitively, like Asterisk).
    pub name: String,
    /// Secret (matched exactly).
    pub secret: String,
    /// `read=`: the event classes this user may receive.
    pub read: ClassMask,
    /// `write=`: the action classes this user may run.
    pub write: ClassMask,
    /// `allowmultiplelogin` (Asterisk's default is yes). When false, a second Login or
    /// Challenge naming this user while a session of it is logged in gets
    /// "Login Already In Use" after 1 s, then a close.
    pub allow_multiple_login: bool,
}

impl std::fmt::Debug for SimUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimUser")
            .field("name", &self.name)
            .field("secret", &format_args!("<redacted>"))
            .field("read", &self.read)
            .field("write", &self.write)
            .field("allow_multiple_login", &self.allow_multiple_login)
            .finish()
    }
}

impl SimUser {
    /// A user with the given permissions and `allowmultiplelogin=yes`.
    pub fn new(name: &str, secret: &str, read: ClassMask, write: ClassMask) -> SimUser {
        SimUser {
            name: name.to_string(),
            secret: secret.to_string(),
            read,
            write,
            allow_multiple_login: true,
        }
    }
}

/// Everything that shapes a [`SimServer`](crate::SimServer).
///
/// The default matches the recorded fixtures: users `admin`/`amp111` (read=all, write=all)
/// and `limited`/`limited1` (read=call, write=originate), AMI 11.0.0 (Asterisk 22.10.1).
///
/// Build one with [`SimConfig::builder`], or write it out and let every constructor that
/// takes one check it with [`SimConfig::validate`]: a combination that cannot work (no
/// connection ever accepted, every session closed before its login, a line break in a text
/// the server writes into its messages) is refused with a [`SimConfigError`] naming the
/// setting. Settings that are merely unusual (no users, `max_calls` 0, a zero
/// `socket_buffer` or `write_timeout`, `Duration::MAX` as "never") are accepted.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the simulator's PRNG (MD5 challenges, probabilistic faults, cut points).
    pub seed: u64,
    /// The `manager.conf` users.
    pub users: Vec<SimUser>,
    /// The AMI version in the banner and CoreSettings (`11.0.0` on Asterisk 22).
    pub ami_version: String,
    /// The Asterisk version shown by CoreSettings and `core show version`.
    pub asterisk_version: String,
    /// `authtimeout`: unauthenticated sessions are closed silently this long after connect.
    /// More than zero (Asterisk refuses less than 1 s).
    pub auth_timeout: Duration,
    /// `authlimit`: with this many unauthenticated sessions open, new connections are closed
    /// at once without a banner. At least 1 (as Asterisk requires).
    pub auth_limit: usize,
    /// `writetimeout`: a write that cannot complete within this time closes the session.
    pub write_timeout: Duration,
    /// Bytes the "kernel" holds for one session (socket buffers on both ends). Output beyond
    /// this many untransmitted bytes is a blocked write, which gets `write_timeout` to finish.
    pub socket_buffer: usize,
    /// Hard cap on one session's untransmitted output plus events held while it is busy.
    /// Exceeding it closes the session as a slow reader at once (a simulator guard; Asterisk
    /// itself would buffer without bound while the write timer runs). At least
    /// [`MIN_MAX_BACKLOG`].
    pub max_backlog: usize,
    /// Hard cap on one session's unread input (what the client wrote while the session was
    /// blocked). Bytes beyond it given to [`SimServer::receive`](crate::SimServer::receive)
    /// are dropped and counted in [`SimStats`](crate::SimStats); the TCP front reads no more
    /// than fits ([`SimServer::input_room`](crate::SimServer::input_room)), leaving the rest
    /// to TCP flow control, so over TCP nothing is dropped.
    pub max_input_backlog: usize,
    /// Whether Asterisk is fully booted at start (and right after a restart). When false,
    /// `Event: FullyBooted` is broadcast `boot_delay` later, and a Login before that gets no
    /// inline FullyBooted.
    pub fully_booted: bool,
    /// How long booting takes when `fully_booted` is false.
    pub boot_delay: Duration,
    /// Unix time of the virtual clock at the `now` passed to `SimServer::new`: what Ping's
    /// `Timestamp`, security events' `EventTV`, Cdr times and CoreStatus dates count from.
    /// A fixed date by default, so that runs replay byte for byte; a simulator serving real
    /// clients (`ami sim`) sets the real time, so that their clocks and its agree.
    pub start_unix: Duration,
    /// `maxcalls`: Originate fails once this many calls are up.
    pub max_calls: usize,
    /// Delay between the steps of a simulated call (dialplan priorities, answer, teardown).
    pub step_delay: Duration,
    /// How long the `echo` extension runs before its absolute timeout (the `ECHO_SECS`
    /// channel variable overrides it). A fraction of a second is kept, as Asterisk's
    /// `TIMEOUT(absolute)` takes one; zero runs 1 s (Asterisk would read 0 as no timeout).
    pub echo_timeout: Duration,
    /// `SystemName`: when set, added to events (not to FullyBooted) and shown by CoreSettings.
    /// No CR, LF or NUL (nor in the two versions): each would forge lines or messages. At
    /// most [`MAX_SYSTEM_NAME_LEN`] bytes.
    pub system_name: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0x5eed_a571_e415,
            users: vec![
                SimUser::new("admin", "amp111", ClassMask::ALL, ClassMask::ALL),
                SimUser::new("limited", "limited1", ClassMask::CALL, ClassMask::ORIGINATE),
            ],
            ami_version: "11.0.0".to_string(),
            asterisk_version: "22.10.1".to_string(),
            auth_timeout: Duration::from_secs(30),
            auth_limit: 50,
            write_timeout: Duration::from_millis(100),
            socket_buffer: 256 << 10,
            max_backlog: 64 << 20,
            max_input_backlog: 1 << 20,
            fully_booted: true,
            boot_delay: Duration::from_secs(2),
            start_unix: Duration::from_secs(1_795_423_100),
            max_calls: 2000,
            step_delay: Duration::from_millis(20),
            echo_timeout: Duration::from_secs(1),
            system_name: None,
        }
    }
}

impl SimConfig {
    /// A builder that starts from [`SimConfig::default`].
    pub fn builder() -> SimConfigBuilder {
        SimConfigBuilder {
            config: SimConfig::default(),
        }
    }

    /// Checks the settings against each other: `Ok` unless they cannot work. Every
    /// constructor that takes a `SimConfig` calls it ([`SimServer::try_new`],
    /// [`TcpFront::start`]; [`SimServer::new`] panics on an error).
    ///
    /// [`SimServer::try_new`]: crate::SimServer::try_new
    /// [`SimServer::new`]: crate::SimServer::new
    /// [`TcpFront::start`]: crate::tcp::TcpFront::start
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let invalid = |setting, why| Err(SimConfigError::Invalid { setting, why });
        // Asterisk itself refuses `authlimit` and `authtimeout` below 1 (manager.c); a
        // simulator with 0 closes every connection before a Login can be read.
        if self.auth_limit == 0 {
            return invalid(
                "auth_limit",
                "must be at least 1: every connection would be closed without a banner",
            );
        }
        if self.auth_timeout.is_zero() {
            return invalid(
                "auth_timeout",
                "must be greater than zero: every session would be closed before its Login",
            );
        }
        if self.max_backlog < MIN_MAX_BACKLOG {
            return invalid(
                "max_backlog",
                "must be at least 1024 bytes (MIN_MAX_BACKLOG): every session would be closed as a slow reader during its login",
            );
        }
        // Asterisk keeps at most 127 bytes of `systemname` (options.c, `char
        // system_name[128]`). Longer, the name written into every event (each login's
        // SuccessfulAuth included) can leave the smallest backlog no room for a login:
        // every session closed as a slow reader before it is ready (900 bytes over 1 KiB).
        if self
            .system_name
            .as_deref()
            .is_some_and(|n| n.len() > MAX_SYSTEM_NAME_LEN)
        {
            return invalid(
                "system_name",
                "must be at most 127 bytes (MAX_SYSTEM_NAME_LEN, as Asterisk keeps): it is written into every event, and a longer one can leave no room for a login in the backlog",
            );
        }
        // Written into the banner, CoreSettings and every event: a line break there would
        // end the line (or the message) early and forge lines or whole messages.
        let texts = [
            ("ami_version", Some(self.ami_version.as_str())),
            ("asterisk_version", Some(self.asterisk_version.as_str())),
            ("system_name", self.system_name.as_deref()),
        ];
        for (setting, text) in texts {
            if text.is_some_and(has_line_break) {
                return invalid(setting, "must not contain CR, LF or NUL");
            }
        }
        for (i, user) in self.users.iter().enumerate() {
            let why = if user.name.is_empty() {
                "has an empty name"
            } else if has_line_break(&user.name) {
                "has CR, LF or NUL in its name: no Login can name it"
            } else if has_line_break(&user.secret) {
                "has CR, LF or NUL in its secret: no Login can give it"
            } else if self.users[..i]
                .iter()
                .any(|u| u.name.eq_ignore_ascii_case(&user.name))
            {
                "is given twice (names match case-insensitively): only the first could log in"
            } else {
                continue;
            };
            return Err(SimConfigError::User {
                name: user.name.escape_debug().to_string(),
                why,
            });
        }
        Ok(())
    }
}

fn has_line_break(text: &str) -> bool {
    text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// A [`SimConfig`] that cannot work. Never shows a user's secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SimConfigError {
    /// One setting is out of range or conflicts with another.
    #[error("invalid simulator config: {setting} {why}")]
    Invalid {
        /// The setting at fault.
        setting: &'static str,
        /// Why it cannot work.
        why: &'static str,
    },
    /// A user (of [`SimConfig::users`]) can never log in.
    #[error("invalid simulator config: user \"{name}\" {why}")]
    User {
        /// The user's name, escaped.
        name: String,
        /// Why it cannot work.
        why: &'static str,
    },
}

/// Builds a [`SimConfig`]; [`build`](Self::build) refuses settings that cannot work (see
/// [`SimConfig::validate`]). Every setting starts at its [`SimConfig::default`] value.
#[derive(Debug, Clone)]
pub struct SimConfigBuilder {
    config: SimConfig,
}

macro_rules! sim_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl SimConfigBuilder {
    sim_setters! {
        /// Seed of the simulator's PRNG ([`SimConfig::seed`]).
        seed: u64;
        /// The `manager.conf` users, replacing the default two ([`SimConfig::users`]).
        users: Vec<SimUser>;
        /// `authtimeout` ([`SimConfig::auth_timeout`]); more than zero.
        auth_timeout: Duration;
        /// `authlimit` ([`SimConfig::auth_limit`]); at least 1.
        auth_limit: usize;
        /// `writetimeout` ([`SimConfig::write_timeout`]).
        write_timeout: Duration;
        /// Bytes the "kernel" holds for one session ([`SimConfig::socket_buffer`]).
        socket_buffer: usize;
        /// Cap on one session's output and held events ([`SimConfig::max_backlog`]); at
        /// least [`MIN_MAX_BACKLOG`].
        max_backlog: usize;
        /// Cap on one session's unread input ([`SimConfig::max_input_backlog`]).
        max_input_backlog: usize;
        /// Whether Asterisk is fully booted at start ([`SimConfig::fully_booted`]).
        fully_booted: bool;
        /// How long booting takes ([`SimConfig::boot_delay`]).
        boot_delay: Duration;
        /// Unix time of the virtual clock's start ([`SimConfig::start_unix`]).
        start_unix: Duration;
        /// `maxcalls` ([`SimConfig::max_calls`]).
        max_calls: usize;
        /// Delay between the steps of a simulated call ([`SimConfig::step_delay`]).
        step_delay: Duration;
        /// The `echo` extension's run time ([`SimConfig::echo_timeout`]).
        echo_timeout: Duration;
    }

    /// One more `manager.conf` user.
    pub fn user(mut self, user: SimUser) -> Self {
        self.config.users.push(user);
        self
    }

    /// The AMI version in the banner and CoreSettings ([`SimConfig::ami_version`]).
    pub fn ami_version(mut self, version: impl Into<String>) -> Self {
        self.config.ami_version = version.into();
        self
    }

    /// The Asterisk version ([`SimConfig::asterisk_version`]).
    pub fn asterisk_version(mut self, version: impl Into<String>) -> Self {
        self.config.asterisk_version = version.into();
        self
    }

    /// `SystemName` ([`SimConfig::system_name`]).
    pub fn system_name(mut self, name: impl Into<String>) -> Self {
        self.config.system_name = Some(name.into());
        self
    }

    /// Checks the settings ([`SimConfig::validate`]) and returns the config.
    pub fn build(self) -> Result<SimConfig, SimConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sim_users_debug_never_shows_its_secret() {
        let user = SimUser::new("admin", "TOPSECRET1", ClassMask::ALL, ClassMask::ALL);
        let shown = format!("{user:?}");
        assert!(!shown.contains("TOPSECRET1"), "{shown}");
        assert!(
            shown.contains("admin") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
