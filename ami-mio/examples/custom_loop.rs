//! AMI inside an event loop of your own: a UDP socket of yours and a timer of yours share one
//! `mio::Poll` with an AMI session.
//!
//! The example starts a tiny fake Asterisk on 127.0.0.1 (banner, Login, Ping, Logoff), then
//! runs a loop that every 100 ms sends a datagram to its own UDP socket and a Ping over AMI,
//! reads both answers, and logs off after three rounds.
//!
//! Run: `cargo run -p ami-mio --example custom_loop`

use ami_mio::{MioDriver, Notice, USER_TOKENS};
use ami_proto::{Action, ClientConfig, StreamItem};
use mio::net::UdpSocket;
use mio::{Interest, Token};
use std::error::Error;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const UDP: Token = Token(USER_TOKENS.start);
const TICK: Duration = Duration::from_millis(100);
const ROUNDS: u32 = 3;

fn main() -> Result<(), Box<dyn Error>> {
    let ami_addr = fake_asterisk()?;

    let mut driver = MioDriver::new()?;
    let config = ClientConfig::builder("admin", "amp111").build()?;
    let pbx = driver.add(Instant::now(), config, ami_addr)?;

    // Our own socket, on the driver's poll, with a token from the caller's range.
    let mut udp = UdpSocket::bind("127.0.0.1:0".parse()?)?;
    driver
        .registry()
        .register(&mut udp, UDP, Interest::READABLE)?;
    let udp_addr = udp.local_addr()?;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;

    // Our own timer: a deadline we pass to `wait` as its timeout.
    let mut next_tick = Instant::now() + TICK;
    let (mut rounds, mut pongs, mut datagrams, mut ready) = (0u32, 0u32, 0u32, false);
    let mut logged_off = false;

    loop {
        let now = Instant::now();
        let report = driver.step(now)?;
        for (_, notice) in report.notices {
            match notice {
                Notice::Ready { ami_version } => {
                    println!("AMI ready (version {ami_version})");
                    ready = true;
                }
                Notice::Completed { id, outcome } => {
                    println!("action {id}: success={}", outcome.is_ok());
                    pongs += u32::from(outcome.is_ok());
                }
                Notice::Disconnected { reason, .. } => println!("AMI lost: {reason}"),
                Notice::Closed { reason } => {
                    println!("AMI closed: {reason}; {pongs} pongs, {datagrams} datagrams");
                    return Ok(());
                }
                other => println!("{other:?}"),
            }
        }
        for conn in report.events {
            while let Some(item) = driver.poll_event(conn) {
                if let StreamItem::Event(e) = item {
                    println!("event {}", e.event().unwrap_or("?"));
                }
            }
        }
        for ready_source in report.user {
            if ready_source.token == UDP {
                let mut buf = [0u8; 512];
                loop {
                    match udp.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            datagrams += 1;
                            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or(&[]));
                            println!("udp from {from}: {text}");
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        if now >= next_tick {
            next_tick = now + TICK;
            if ready && rounds < ROUNDS {
                rounds += 1;
                sender.send_to(format!("tick {rounds}").as_bytes(), udp_addr)?;
                driver.send(Instant::now(), pbx, Action::new("Ping"))?;
            } else if rounds == ROUNDS && !logged_off && pongs == ROUNDS {
                driver.logoff(Instant::now(), pbx);
                logged_off = true;
            }
        }
        // The only blocking call: until I/O, an AMI deadline, or our own timer.
        driver.wait(Some(next_tick.saturating_duration_since(Instant::now())))?;
    }
}

/// A fake Asterisk that serves one client: banner, Login, Ping, Logoff.
fn fake_asterisk() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            if let Err(e) = serve(stream) {
                eprintln!("fake asterisk: {e}");
            }
        }
    });
    Ok(addr)
}

fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.write_all(b"Asterisk Call Manager/11.0.0\r\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let (mut action, mut id, mut line) = (String::new(), String::new(), String::new());
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let text = line.trim_end();
        if let Some((key, value)) = text.split_once(':') {
            match key.trim().to_ascii_lowercase().as_str() {
                "action" => action = value.trim().to_ascii_lowercase(),
                "actionid" => id = value.trim().to_string(),
                _ => {}
            }
            continue;
        }
        if !text.is_empty() {
            continue;
        }
        let reply = match action.as_str() {
            "login" => format!(
                "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n\
                 Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
            ),
            "ping" => format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"),
            "logoff" => format!("Response: Goodbye\r\nActionID: {id}\r\n\r\n"),
            _ => format!(
                "Response: Error\r\nActionID: {id}\r\nMessage: Invalid/unknown command\r\n\r\n"
            ),
        };
        stream.write_all(reply.as_bytes())?;
        if action == "logoff" {
            return Ok(());
        }
        action.clear();
        id.clear();
    }
}
