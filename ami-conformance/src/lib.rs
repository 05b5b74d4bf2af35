//! # ami-conformance: one suite for every async runtime
//!
//! `ami-tokio` and `ami-async-std` are the same client (`ami-async`) on two runtimes, so
//! they are held to one set of tests: each adapter implements [`Adapter`] (how to run a
//! test body and how to start a session) and instantiates the suite with
//! [`conformance_suite!`]. The tests use only `ami-async`'s API and runtime-neutral plumbing
//! (async-io's timers, plain threads for extra callers), so a test passes or fails for the
//! adapter's reasons only. The multi-server fleet has its tests here too ([`fleet`]).
//!
//! ```ignore
//! struct OnTokio;
//! impl ami_conformance::Adapter for OnTokio { /* ... */ }
//! ami_conformance::conformance_suite!(OnTokio);
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fleet;
pub mod suite;
mod support;
pub mod threads;
mod tls;

pub use support::*;
pub use tls::{ca_as_server_cert, client_tls, localhost_cert, TlsTerminator};

use ami_async::fleet::{FleetConfig, FleetEvents, FleetHandle};
use ami_async::{Events, Handle, Target, Tls, TlsConfigError};
use ami_proto::ClientConfig;
use std::future::Future;
use std::pin::Pin;

/// A runtime under test.
pub trait Adapter: 'static {
    /// The adapter's [`ami_async::Runtime`].
    type Runtime: ami_async::Runtime;
    /// Runs a test body to its end (on the adapter's runtime, so that `spawn` works in it).
    fn block_on<T>(body: impl Future<Output = T>) -> T;
    /// Starts a session with the adapter's own entry point, inside [`block_on`](Self::block_on).
    fn spawn(config: ClientConfig, target: Target) -> (Handle, Events);
    /// Like `spawn`, over TLS.
    fn spawn_tls(
        config: ClientConfig,
        target: Target,
        tls: Tls,
    ) -> Result<(Handle, Events), TlsConfigError>;
    /// Runs a driver future the way the adapter runs its own (a task, a thread).
    fn run_driver(driver: Pin<Box<dyn Future<Output = ()> + Send>>);
    /// Starts a fleet with the adapter's own entry point (its `spawn_fleet`), inside
    /// [`block_on`](Self::block_on).
    fn spawn_fleet(config: FleetConfig) -> (FleetHandle, FleetEvents);
}

/// Instantiates every test of [`suite`] for an [`Adapter`], one `#[test]` each.
#[macro_export]
macro_rules! conformance_suite {
    ($adapter:ty) => {
        $crate::conformance_suite!(@tests $adapter;
            plain_login_reaches_ready_and_ping_round_trips,
            an_answer_and_a_hang_up_in_one_burst_are_both_seen,
            md5_login_reaches_ready,
            wrong_password_closes_with_login_rejected_and_never_reconnects,
            a_host_name_target_is_resolved_and_connected,
            core_show_channels_gathers_items_and_complete_while_a_call_is_up,
            queue_status_gathers_params_members_and_complete,
            async_originate_resolves_with_its_originate_response,
            actions_sent_before_ready_are_written_after_login,
            dropping_a_send_future_cancels_the_action_and_the_session_carries_on,
            close_while_the_server_is_unreachable_fails_queued_actions_as_not_sent,
            logoff_while_disconnected_closes_at_once,
            restart_mid_stream_fails_the_written_action_then_reconnects_and_events_resume,
            half_open_link_is_detected_by_the_heartbeat_and_a_new_session_is_ready,
            slow_consumer_gets_a_gap_and_the_connection_is_kept,
            a_panicking_event_consumer_does_not_stop_actions_or_the_reader,
            a_caller_that_panics_while_waiting_does_not_break_other_callers,
            dropping_every_handle_and_the_events_closes_the_session_a_status_watch_does_not_count,
            a_driver_that_died_fails_waiting_callers_and_every_later_call_at_once,
            events_are_also_a_stream,
            tls_login_and_ping_round_trip_with_a_generated_certificate,
            tls_refuses_a_certificate_for_another_name,
            tls_names_a_ca_certificate_the_server_presents_as_its_own,
            tls_to_a_plain_ami_port_fails_the_connect_with_a_tls_reason,
            a_tls_handshake_that_never_ends_times_out_as_a_tls_handshake,
            the_call_tracker_follows_calls_across_a_server_restart,
        );
        $crate::conformance_suite!(@fleet $adapter;
            a_fleet_merges_a_flood_a_restart_and_a_quiet_server_fairly,
            a_removed_server_fails_its_pending_action_and_the_last_user_closes_the_fleet,
            an_action_sent_with_a_deadline_fails_a_silent_server_at_that_deadline,
            a_sharded_fleet_is_one_fleet_with_one_connect_budget_and_even_shares,
            a_stalled_reader_holds_reads_but_actions_on_a_flooding_server_complete,
            per_server_operations_act_on_the_named_server_while_the_stream_is_stalled,
            a_reader_that_stops_taking_stops_holding_reads_until_it_takes_again,
            the_fleet_driver_counts_each_servers_reads,
            a_flooding_server_cannot_hold_the_drivers_thread_beyond_a_poll_budget,
        );
    };
    (@fleet $adapter:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::fleet::$name::<$adapter>();
            }
        )*
    };
    (@tests $adapter:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::suite::$name::<$adapter>();
            }
        )*
    };
}
