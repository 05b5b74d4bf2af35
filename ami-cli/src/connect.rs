//! Opening a session for a command: one attempt, a clear reason on failure.

use crate::{Auth, Cli, Failure, EXIT_CONNECT, EXIT_USAGE};
use ami_proto::{AuthMethod, ClientConfig};
use ami_tokio::{Events, Handle, Status};
use std::time::Duration;

/// How long a command waits for its first login.
const FIRST_LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) fn config(
    cli: &Cli,
    user: &str,
    secret: &str,
    events: &str,
) -> Result<ClientConfig, Failure> {
    ClientConfig::builder(user, secret)
        .auth(match cli.auth {
            Auth::Plain => AuthMethod::Plain,
            Auth::Md5 => AuthMethod::Md5,
        })
        .events(events)
        .build()
        .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))
}

/// Connects and waits for the first Ready. A first failure (refused, rejected password) is
/// reported at once, with no retry loop.
pub(crate) async fn open(cli: &Cli, events: &str) -> Result<(Handle, Events), Failure> {
    let url = cli.server.as_ref().ok_or_else(|| {
        Failure::new(
            EXIT_USAGE,
            "no server: pass --server ami://USER:SECRET@HOST:PORT or set AMI_URL",
        )
    })?;
    let config = config(cli, &url.user, url.secret.expose(), events)?;
    let target = (url.host.as_str(), url.port);
    let (handle, events) = if url.tls {
        tls_spawn(cli, config, target, &url.host)?
    } else {
        ami_tokio::spawn(config, target)
    };
    first_ready(&handle, &url.to_string()).await?;
    Ok((handle, events))
}

pub(crate) async fn first_ready(handle: &Handle, what: &str) -> Result<(), Failure> {
    let mut status = handle.status();
    let wait = async {
        loop {
            let now = status.borrow_and_update().clone();
            match now {
                Status::Ready { .. } => return Ok(()),
                Status::Closed { reason } | Status::Disconnected { reason, .. } => {
                    handle.close();
                    return Err(Failure::new(EXIT_CONNECT, format!("{what}: {reason}")));
                }
                _ => {}
            }
            if status.changed().await.is_err() {
                return Err(Failure::new(
                    EXIT_CONNECT,
                    format!("{what}: driver stopped"),
                ));
            }
        }
    };
    match tokio::time::timeout(FIRST_LOGIN_TIMEOUT, wait).await {
        Ok(r) => r,
        Err(_) => {
            handle.close();
            Err(Failure::new(
                EXIT_CONNECT,
                format!("{what}: no login within {FIRST_LOGIN_TIMEOUT:?}"),
            ))
        }
    }
}

#[cfg(feature = "tls")]
fn tls_spawn(
    cli: &Cli,
    config: ClientConfig,
    target: (&str, u16),
    host: &str,
) -> Result<(Handle, Events), Failure> {
    use ami_tokio::Tls;
    use tokio_rustls_reexport::*;
    let ca = cli.ca.as_ref().ok_or_else(|| {
        Failure::new(
            EXIT_USAGE,
            "amis:// needs --ca FILE (PEM) to verify the server",
        )
    })?;
    let pem = std::fs::read(ca)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("{}: {e}", ca.display())))?;
    let tls_config = client_config_from_pem(&pem)
        .map_err(|e| Failure::new(EXIT_USAGE, format!("{}: {e}", ca.display())))?;
    Ok(ami_tokio::spawn_tls(
        config,
        target,
        Tls {
            config: tls_config,
            server_name: host.to_string(),
        },
    ))
}

#[cfg(not(feature = "tls"))]
fn tls_spawn(
    _cli: &Cli,
    _config: ClientConfig,
    _target: (&str, u16),
    _host: &str,
) -> Result<(Handle, Events), Failure> {
    Err(Failure::new(EXIT_USAGE, "amis:// needs the `tls` feature"))
}

#[cfg(feature = "tls")]
mod tokio_rustls_reexport {
    pub use ami_tokio::tls_config::client_config_from_pem;
}
