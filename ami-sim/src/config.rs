//! Server configuration: users, versions, timeouts and limits.

use crate::classes::ClassMask;
use std::time::Duration;

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
    pub auth_timeout: Duration,
    /// `authlimit`: with this many unauthenticated sessions open, new connections are closed
    /// at once without a banner.
    pub auth_limit: usize,
    /// `writetimeout`: a write that cannot complete within this time closes the session.
    pub write_timeout: Duration,
    /// Bytes the "kernel" holds for one session (socket buffers on both ends). Output beyond
    /// this many untransmitted bytes is a blocked write, which gets `write_timeout` to finish.
    pub socket_buffer: usize,
    /// Hard cap on one session's untransmitted output plus events held while it is busy.
    /// Exceeding it closes the session as a slow reader at once (a simulator guard; Asterisk
    /// itself would buffer without bound while the write timer runs).
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
    /// channel variable overrides it).
    pub echo_timeout: Duration,
    /// `SystemName`: when set, added to events (not to FullyBooted) and shown by CoreSettings.
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
