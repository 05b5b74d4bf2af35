//! Memory when the application never reads its events while the server floods 256 KiB
//! events (issue 9): the core's event queue is bounded in bytes, so the peak RSS stays
//! bounded and the drops are counted. The hostile server runs in this process on its own
//! thread (it holds one event at a time). Same measurement as `ami-tokio`'s
//! `hostile -- unread`.
//!
//! Run: `cargo run --release -p ami-mio --example mio_hostile_unread`

use ami_mio::MioDriver;
use ami_proto::ClientConfig;
use ami_sim::hostile::{unread_summary, Hostile, HostileServer};
use std::error::Error;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn Error>> {
    let server = HostileServer::start(Hostile::BigEvents { size: 256 << 10 }, 0)?;
    let mut driver = MioDriver::new()?;
    let config = ClientConfig::builder("admin", "hostile").build()?;
    let conn = driver.add(Instant::now(), config, server.local_addr())?;
    let end = Instant::now() + Duration::from_secs(10);
    // The loop steps the driver and never calls `poll_event`.
    while Instant::now() < end {
        driver.step(Instant::now())?;
        driver.wait(Some(Duration::from_millis(50)))?;
    }
    let s = driver.stats(conn).unwrap_or_default();
    println!(
        "mio, unread events, 256 KiB events, 10 s: {}",
        unread_summary(&s)
    );
    Ok(())
}
