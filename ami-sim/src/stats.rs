//! Counters of a [`SimServer`](crate::SimServer).

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Connections accepted (including refused ones).
    pub sessions_accepted: u64,
    /// Sessions open now.
    pub sessions_open: usize,
    /// Connections closed at once without a banner (server down, authlimit, or the TCP
    /// front's 1,024 connections open already).
    pub sessions_refused: u64,
    /// Successful logins.
    pub logins: u64,
    /// Failed logins.
    pub login_failures: u64,
    /// Sessions the client ended with `Logoff` (answered `Goodbye`, then closed): a
    /// client that stops cleanly, as Asterisk's log tells it from a dropped connection.
    pub logoffs: u64,
    /// Client messages handled (actions, errors for bad messages, stray blank lines).
    pub actions: u64,
    /// Actions swallowed by a drop fault.
    pub actions_dropped: u64,
    /// Broadcast events generated.
    pub events_emitted: u64,
    /// Broadcast events delivered, summed over sessions.
    pub events_delivered: u64,
    /// Calls started (Originate and `originate_call`).
    pub calls_started: u64,
    /// Calls up now.
    pub calls_active: usize,
    /// Calls answered.
    pub calls_answered: u64,
    /// Calls that failed (busy, no answer, no such extension...).
    pub calls_failed: u64,
    /// Bytes queued for clients.
    pub bytes_queued: u64,
    /// Bytes the clients read (`advance_transmit`).
    pub bytes_transmitted: u64,
    /// Client bytes dropped because a blocked session's input backlog was full.
    pub input_bytes_dropped: u64,
    /// Sessions closed for not reading (write timeout or backlog cap).
    pub slow_reader_closes: u64,
    /// One-shot faults applied and reply faults that fired.
    pub faults_injected: u64,
    /// Server restarts.
    pub restarts: u64,
}
