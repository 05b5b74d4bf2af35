//! A slow event handler must not stop the loop from reading: Asterisk drops a client whose
//! socket it cannot write to for 100 ms (`writetimeout` in manager.conf).
//!
//! The loop hands events to a handler thread through a bounded channel and never waits on
//! it: when the channel is full the event is dropped and counted, and the count is said
//! aloud. The handler here takes 1 ms per event while the simulated Asterisk sends 20,000
//! events at once; the loop keeps reading the socket throughout.
//!
//! Run: `cargo run -p ami-mio --example slow_handler`

use ami_mio::MioDriver;
use ami_proto::{ClientConfig, Message, StreamItem};
use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::error::Error;
use std::sync::mpsc::{sync_channel, TrySendError};
use std::time::{Duration, Instant};

/// Events waiting for the handler at most: the memory bound of the hand-over.
const HANDOVER: usize = 1024;

fn main() -> Result<(), Box<dyn Error>> {
    let sim = TcpFront::start(SimConfig::default(), "127.0.0.1:0")?;
    let mut driver = MioDriver::new()?;
    let config = ClientConfig::builder("admin", "amp111")
        .events("user")
        .build()?;
    let pbx = driver.add(Instant::now(), config, sim.local_addr())?;

    let (to_handler, inbox) = sync_channel::<Message>(HANDOVER);
    let handler = std::thread::spawn(move || {
        let mut handled = 0u64;
        while inbox.recv().is_ok() {
            std::thread::sleep(Duration::from_millis(1)); // the slow part
            handled += 1;
        }
        handled
    });

    let end = Instant::now() + Duration::from_secs(2);
    let (mut read, mut dropped) = (0u64, 0u64);
    let mut flooded = false;
    while Instant::now() < end {
        driver.step(Instant::now())?;
        if !flooded && driver.stats(pbx).is_some_and(|s| s.logins > 0) {
            sim.with_server(|s, now| s.emit_user_events(now, 20_000));
            flooded = true;
        }
        while let Some(item) = driver.poll_event(pbx) {
            let StreamItem::Event(event) = item else {
                continue;
            };
            read += 1;
            match to_handler.try_send(event) {
                Ok(()) => {}
                // Never wait for the handler: count the drop and read on.
                Err(TrySendError::Full(_)) => dropped += 1,
                Err(TrySendError::Disconnected(_)) => return Err("handler stopped".into()),
            }
        }
        driver.wait(Some(Duration::from_millis(50)))?;
    }
    drop(to_handler);
    let handled = handler.join().map_err(|_| "handler panicked")?;
    println!("read {read} events; handled {handled}; dropped {dropped} (handler too slow)");
    Ok(())
}
