//! `ami bridge`: the server's events and actions through NATS JetStream (crate `ami-nats`).
//!
//! Events go to `ami.<name>.event.<Event>`, gaps to `ami.<name>.gap`, session boundaries to
//! `ami.<name>.session` (stream `AMI`, created if absent); actions are NATS requests on
//! `ami.<name>.action` and `ami.any.action`. Several `ami bridge` processes may run for the
//! same server: a lease in the KV bucket `ami_leases` lets exactly one serve it at a time, and
//! another takes over within about `--lease-ttl` when it dies. Runs until Ctrl-C, then
//! releases its leases so another bridge takes over at once.

use crate::{Connection, Failure, EXIT_CONNECT, EXIT_USAGE};
use ami_nats::{Bridge, BridgeConfig, ServerSpec};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The NATS server, with JetStream enabled.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The server's name in subjects and JSON (default HOST:PORT; characters other than
    /// letters, digits, `-` and `_` become `_` in subjects).
    #[arg(long)]
    name: Option<String>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9185.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Lease time-to-live in seconds (at least 1).
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
}

pub(crate) fn run(conn: &Connection, args: &Args) -> Result<(), Failure> {
    let usage = |e: &dyn std::fmt::Display| Failure::new(EXIT_USAGE, e.to_string());
    let url = crate::session::one_server(conn)?;
    if url.tls {
        return Err(Failure::new(
            EXIT_USAGE,
            "ami bridge speaks plain AMI only (ami://)",
        ));
    }
    let client = crate::session::config(conn.auth, &url.user, url.secret.expose(), "on")?;
    let name = args.name.clone().unwrap_or_else(|| url.authority());
    let spec = ServerSpec::new(name, url.host.clone(), url.port, client).map_err(|e| usage(&e))?;
    let mut config = BridgeConfig::new(args.nats.clone(), vec![spec])
        .lease_ttl(Duration::from_secs(args.lease_ttl));
    if let Some(addr) = args.metrics {
        config = config.metrics(addr);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(crate::EXIT_OTHER, format!("tokio runtime: {e}")))?;
    rt.block_on(async {
        let bridge = Bridge::start(config)
            .await
            .map_err(|e| Failure::new(EXIT_CONNECT, e.to_string()))?;
        eprintln!(
            "ami: bridge {} serving through {} (Ctrl-C stops){}",
            bridge.bridge_id(),
            args.nats,
            bridge
                .metrics_addr()
                .map(|a| format!("; metrics on http://{a}/metrics"))
                .unwrap_or_default()
        );
        let _ = tokio::signal::ctrl_c().await;
        bridge.shutdown(Duration::from_secs(2)).await;
        Ok(())
    })
}
