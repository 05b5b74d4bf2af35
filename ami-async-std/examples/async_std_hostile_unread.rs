//! Memory when the application never reads its `Events` while the server floods 256 KiB
//! events (issue 9): the core's event queue is bounded in bytes, so the peak RSS stays
//! bounded and the drops are counted. The hostile server runs in this process on its own
//! thread (it holds one event at a time). Same measurement as `ami-tokio`'s
//! `hostile -- unread`.
//!
//! Run: `cargo run --release -p ami-async-std --example async_std_hostile_unread`

use ami_proto::ClientConfig;
use ami_sim::hostile::{unread_summary, Hostile, HostileServer};
use std::error::Error;
use std::time::Duration;

fn main() -> Result<(), Box<dyn Error>> {
    let server = HostileServer::start(Hostile::BigEvents { size: 256 << 10 }, 0)?;
    let config = ClientConfig::builder("admin", "hostile").build()?;
    // `_events` stays alive, never read.
    let (ami, _events) = ami_async_std::run_on_thread(config, server.local_addr())?;
    async_io::block_on(async {
        ami.wait_ready().await?;
        async_io::Timer::after(Duration::from_secs(10)).await;
        Ok::<_, Box<dyn Error>>(())
    })?;
    let s = ami.stats();
    println!(
        "async-std, unread Events, 256 KiB events, 10 s: {}",
        unread_summary(&s)
    );
    Ok(())
}
