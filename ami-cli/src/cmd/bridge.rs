//! `ami bridge`: the servers' events and actions through NATS JetStream (crate `ami-nats`).
//!
//! Every `--server` (or each URL of a comma-separated AMI_URL) is one server of the bridge's
//! fleet. Events go to `ami.<name>.event.<Event>`, gaps to `ami.<name>.gap`, session
//! boundaries to `ami.<name>.session` (stream `AMI`, created if absent); actions are NATS
//! requests on `ami.<name>.action` and `ami.any.action` (routed by `--any-policy` among the
//! ready servers). Several `ami bridge` processes may run for the same servers: a lease per
//! server in the KV bucket `ami_leases` lets exactly one serve it at a time, and another takes
//! over within about `--lease-ttl` when it dies. Runs until Ctrl-C, SIGTERM or SIGHUP, then
//! stops taking action requests, lets those in flight finish (up to 2 s), logs every AMI
//! session off (up to 2 s for the Goodbyes), and releases its leases so another bridge takes
//! over at once. A second signal meanwhile ends it at once (exit 130), saying what it left
//! undone.

use crate::terminal::say;
use crate::{Connection, Failure, EXIT_CONNECT, EXIT_STOPPED_AGAIN, EXIT_USAGE};
use ami_nats::{Bridge, BridgeConfig, BridgeError, ServerSpec, StreamLimits, Unfinished};
use ami_proto::fleet::Policy;
use std::time::Duration;

// Debug is written out: the NATS URL may carry a password or token.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The NATS server, with JetStream enabled, or a comma-separated list;
    /// `nats://user:password@host:port` or `nats://token@host:port` logs in (never shown).
    #[arg(
        long,
        env = "NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// The server's name in subjects and JSON (default HOST:PORT; characters other than
    /// letters, digits, `-` and `_` become `_` in subjects). With several servers, give one
    /// --name per --server, in the same order.
    #[arg(long)]
    name: Vec<String>,
    /// How `ami.any.action` picks among the ready servers.
    #[arg(long, value_enum, default_value = "round-robin")]
    any_policy: AnyPolicy,
    /// The event mask every server's session asks for at login: `on`, or the classes to
    /// publish (`call,agent`: lowercase, no spaces, as Asterisk reads it). What a server is
    /// not asked for it does not even build; an async Originate through the bridge needs
    /// `call` (its OriginateResponse), and is refused without it.
    #[arg(long, value_name = "MASK", default_value = "on")]
    events: String,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9185.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Lease time-to-live in seconds (at least 1).
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
    /// How long JetStream remembers message IDs to store a retried publish once, in
    /// seconds, when the bridge creates the stream (at least --lease-ttl). nats-server keeps
    /// every ID of the window in memory: lower it for high event rates.
    #[arg(long, default_value_t = 120)]
    dedup_window: u64,
    /// Action requests kept for the server's late answer (at least 1): those running, and
    /// those that ended without it for the server's action timeout after. At this many (or
    /// 2 MiB of them) the oldest is forgotten, counted and logged: its late answer is still
    /// published, without its idempotency key, and not stored at the key.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_late_answer_requests: usize,
}

impl std::fmt::Debug for Args {
    /// As derived, but for the NATS URL, shown redacted: a `{:?}` of the command line (a
    /// test's failure message, a debug log) must not print its password or token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("nats", &ami_nats::redact_url(&self.nats))
            .field("name", &self.name)
            .field("any_policy", &self.any_policy)
            .field("events", &self.events)
            .field("metrics", &self.metrics)
            .field("lease_ttl", &self.lease_ttl)
            .field("dedup_window", &self.dedup_window)
            .field("max_late_answer_requests", &self.max_late_answer_requests)
            .finish()
    }
}

impl Args {
    /// The NATS URL's passwords and tokens: never shown in a log line.
    pub(crate) fn secrets(&self) -> Vec<String> {
        ami_nats::url_secrets(&self.nats)
    }
}

/// `--any-policy`: the fleet's routing policies.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AnyPolicy {
    /// The next ready server after the one picked last.
    RoundRobin,
    /// The ready server with the fewest actions pending.
    FewestInFlight,
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    let usage = |e: &dyn std::fmt::Display| Failure::new(EXIT_USAGE, e.to_string());
    if conn.server.is_empty() {
        return Err(crate::session::no_server());
    }
    if !args.name.is_empty() && args.name.len() != conn.server.len() {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "{} --name for {} servers: give one per --server, in order, or none",
                args.name.len(),
                conn.server.len()
            ),
        ));
    }
    let mut specs = Vec::with_capacity(conn.server.len());
    for (i, url) in conn.server.iter().enumerate() {
        if url.tls {
            return Err(Failure::new(
                EXIT_USAGE,
                "ami bridge speaks plain AMI only (ami://)",
            ));
        }
        let client = crate::session::config(
            conn.auth,
            &url.user,
            url.secret.expose(),
            args.events.as_str(),
        )?;
        let name = args.name.get(i).cloned().unwrap_or_else(|| url.authority());
        specs.push(
            ServerSpec::new(name, url.host.clone(), url.port, client).map_err(|e| usage(&e))?,
        );
    }
    let config = bridge_config(args, specs);
    // One thread: the bridge is one pipeline (AMI sessions -> publisher -> NATS connection)
    // whose tasks hand work to each other; on worker threads every hand-off may wake
    // another core. Measured with ami-nats's bridge_bench (BRIDGE_THREADS=0 vs 2, alternated,
    // 9 pairs at load 4-8): 5.9-6.9 us of bridge CPU per event on one thread against
    // 7.0-8.1 us on two workers; at about 5-6 us per event one core carries more events than
    // a nats-server on the same box stores.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(crate::EXIT_OTHER, format!("tokio runtime: {e}")))?;
    let ran = rt.block_on(async {
        let bridge = Bridge::start(config).await.map_err(|e| {
            let code = match e {
                BridgeError::Config(_) => EXIT_USAGE,
                _ => EXIT_CONNECT,
            };
            Failure::new(code, e.to_string())
        })?;
        // Caught before it says it serves: a SIGTERM sent as soon as it does (a service
        // manager, a test) must find the handler, not the default action.
        let mut stops = Stops::catch();
        say!(
            "{}",
            serving_line(
                bridge.bridge_id(),
                &ami_nats::redact_url(&args.nats),
                stopped_by(),
                bridge.metrics_addr()
            )
        );
        stops.next().await;
        // Said once the signal is taken: a person pressing Ctrl-C sees that the bridge heard
        // it, and that a second one does not wait.
        say!(
            "ami: stopping: finishing the actions in flight, logging off, releasing the leases (stop again to leave at once)"
        );
        let progress = bridge.progress();
        // Pinned out here: the stop is still under way (its requests in flight not aborted
        // yet) while a second signal's line counts what it leaves.
        let stopping = bridge.shutdown(Duration::from_secs(2));
        tokio::pin!(stopping);
        tokio::select! {
            () = &mut stopping => Ok(()),
            () = stops.next() => Err(Failure::new(
                EXIT_STOPPED_AGAIN,
                abandoned(&progress.unfinished()),
            )),
        }
    });
    // Dropping a runtime waits for its blocking tasks however long they take (a name lookup
    // that hangs on a dead resolver): the stop stays bounded, as in the other commands.
    rt.shutdown_timeout(Duration::from_millis(100));
    ran
}

/// The bridge's configuration for `specs` as the command line asks (checked when it starts).
fn bridge_config(args: &Args, specs: Vec<ServerSpec>) -> BridgeConfig {
    let stream = StreamLimits {
        duplicate_window: Duration::from_secs(args.dedup_window),
        ..StreamLimits::default()
    };
    let mut config = BridgeConfig::new(args.nats.clone(), specs)
        .stream(stream)
        .lease_ttl(Duration::from_secs(args.lease_ttl))
        .max_late_answer_requests(args.max_late_answer_requests)
        .any_policy(match args.any_policy {
            AnyPolicy::RoundRobin => Policy::RoundRobin,
            AnyPolicy::FewestInFlight => Policy::FewestInFlight,
        });
    if let Some(addr) = args.metrics {
        config = config.metrics(addr);
    }
    config
}

/// The line that says the bridge serves: its ID, the NATS it serves through (`nats`, its
/// secret already shown as `***`), the signals that stop it and where its metrics are.
fn serving_line(
    bridge_id: &str,
    nats: &str,
    stopped_by: &str,
    metrics: Option<std::net::SocketAddr>,
) -> String {
    format!(
        "ami: bridge {bridge_id} serving through {nats} ({stopped_by} stops){}",
        metrics
            .map(|a| format!("; metrics on http://{a}/metrics"))
            .unwrap_or_default()
    )
}

/// The signals that stop the bridge, as its start line says them (SIGHUP not under `nohup`).
fn stopped_by() -> &'static str {
    #[cfg(unix)]
    if !crate::stop::hangup_ignored() {
        return "Ctrl-C, SIGTERM or SIGHUP";
    }
    "Ctrl-C or SIGTERM"
}

/// The one line a second stop signal leaves with: what the stop had not done yet, in counts.
fn abandoned(left: &Unfinished) -> String {
    let n = |count: u64, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    format!(
        "second stop signal: left at once; abandoned: {}, {}, {}",
        n(
            left.actions as u64,
            "action request not answered",
            "action requests not answered"
        ),
        n(
            left.sessions as u64,
            "AMI session not logged off",
            "AMI sessions not logged off"
        ),
        n(
            left.unpublished,
            "item not stored in JetStream",
            "items not stored in JetStream"
        ),
    )
}

/// Ctrl-C, or SIGTERM: what systemd, Docker and Kubernetes send to stop a service; or
/// SIGHUP, as for `listen` (the SSH session of a bridge run in a terminal closed; under
/// `nohup` it stays ignored). The first one stops the bridge cleanly: it lets the actions
/// in flight finish (up to 2 s: an Originate about to be confirmed is answered, not cut
/// off), logs its AMI sessions off and releases its leases, so another bridge takes its
/// servers over at once instead of after the lease time-to-live (killed by the signal's
/// default action, it held them until they expired, and the servers' events went
/// unpublished meanwhile). A second one, during that stop, leaves at once.
struct Stops {
    #[cfg(unix)]
    caught: Option<UnixStops>,
}

#[cfg(unix)]
struct UnixStops {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// `None` under `nohup`: SIGHUP stays ignored.
    hup: Option<tokio::signal::unix::Signal>,
}

impl Stops {
    /// Catches the signals from now on (not from the first wait): once caught they stay so
    /// for the process's life, a signal between two waits is kept for the next one.
    fn catch() -> Stops {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let caught = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => Some(UnixStops {
                    int,
                    term,
                    hup: if crate::stop::hangup_ignored() {
                        None
                    } else {
                        signal(SignalKind::hangup()).ok()
                    },
                }),
                _ => None,
            };
            Stops { caught }
        }
        #[cfg(not(unix))]
        Stops {}
    }

    /// Returns at the next stop signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.caught {
            let hangup = async {
                match &mut s.hup {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = s.int.recv() => {}
                _ = s.term.recv() => {}
                _ = hangup => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use ami_nats::redact_url as shown_nats_url;

    /// The start line names the NATS it serves through, then what stops it (the two were
    /// once given in each other's place: "serving through Ctrl-C, SIGTERM or SIGHUP
    /// (nats://127.0.0.1:4222 stops)").
    #[test]
    fn the_start_line_says_the_nats_url_then_the_signals_that_stop_it() {
        let metrics = "127.0.0.1:9185".parse().ok();
        assert_eq!(
            super::serving_line(
                "b1",
                "nats://127.0.0.1:4222",
                "Ctrl-C, SIGTERM or SIGHUP",
                metrics
            ),
            "ami: bridge b1 serving through nats://127.0.0.1:4222 (Ctrl-C, SIGTERM or SIGHUP \
             stops); metrics on http://127.0.0.1:9185/metrics"
        );
        assert_eq!(
            super::serving_line("b1", "nats://***@h:4222", "Ctrl-C or SIGTERM", None),
            "ami: bridge b1 serving through nats://***@h:4222 (Ctrl-C or SIGTERM stops)"
        );
    }

    #[test]
    fn a_nats_password_or_token_is_never_shown() {
        assert_eq!(
            shown_nats_url("nats://bridge:S3cr3t@127.0.0.1:4222"),
            "nats://bridge:***@127.0.0.1:4222"
        );
        assert_eq!(
            shown_nats_url("nats://T0ken@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            shown_nats_url("nats://a:p@h1:4222,tls://T0ken@h2:4222,h3:4222"),
            "nats://a:***@h1:4222,tls://***@h2:4222,h3:4222"
        );
        assert_eq!(shown_nats_url("u:p@h:1"), "u:***@h:1");
        assert_eq!(
            shown_nats_url("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }

    #[test]
    fn the_bridge_arguments_debug_shows_the_nats_url_without_its_password() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            args: super::Args,
        }
        let line =
            Line::try_parse_from(["bridge", "--nats", "nats://u:NPART1,NPART2@h:4222"]).unwrap();
        let shown = format!("{:?}", line.args);
        assert!(!shown.contains("NPART"), "{shown}");
        assert!(shown.contains("nats://u:***@h:4222"), "{shown}");
    }

    #[test]
    fn max_late_answer_requests_reaches_the_bridge_config_and_defaults_as_the_library() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            args: super::Args,
        }
        let given = Line::try_parse_from(["bridge", "--max-late-answer-requests", "16"]).unwrap();
        let config = format!("{:?}", super::bridge_config(&given.args, Vec::new()));
        assert!(config.contains("max_late_answer_requests: 16"), "{config}");
        // Without the flag, the library's own default.
        let library = format!(
            "{:?}",
            ami_nats::BridgeConfig::new("nats://127.0.0.1:4222", Vec::new())
        );
        let default = Line::try_parse_from(["bridge"]).unwrap();
        let config = format!("{:?}", super::bridge_config(&default.args, Vec::new()));
        let field = |s: &str| {
            s.split(", ")
                .find(|f| f.starts_with("max_late_answer_requests"))
                .map(str::to_string)
        };
        assert_eq!(field(&config), field(&library), "{config}");
        assert!(field(&config).is_some(), "{config}");
        assert!(Line::try_parse_from(["bridge", "--max-late-answer-requests", "x"]).is_err());
    }
}
