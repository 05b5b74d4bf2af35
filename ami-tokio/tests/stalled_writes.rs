//! A server that stops reading: an action whose deadline passes while its bytes wait
//! unwritten is reported timed out and never sent, even once the server reads again (a
//! timed-out Originate that still rang would be a duplicate call when the caller retries).
//! Over loopback with a fake Asterisk that logs the client in, then reads nothing until
//! told; the client's socket fills with padding actions first. Both async drivers write
//! from a copy the core lent them, so the Originate is queued in the same poll as the
//! padding: the driver's first copy holds it, and must be given back before its deadline
//! fires (the core never withdraws lent bytes) for it to be withdrawn.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)] // test code: real time on loopback

use ami_proto::fleet::{FleetConfig, Route, ServerStatus};
use ami_proto::{Action, ActionError, ClientConfig, Phase, Response, SendOptions, Stats};
use ami_tokio::AmiError;
use std::future::{poll_fn, Future};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::mpsc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

/// Padding actions of about 120 KB: together far more than the socket buffers hold.
const FILLERS: usize = 100;
const VICTIM: &[u8] = b"Local/victim-0042@ami-test";
const SENTINEL: &[u8] = b"sentinel-0042";

/// One action's outcome, whichever adapter sent it.
type Sent = Pin<Box<dyn Future<Output = Result<Response, AmiError>> + Send>>;

fn filler(n: usize) -> Action {
    let pad = "x".repeat(1000);
    (0..120).fold(
        Action::new("UserEvent").field("UserEvent", format!("Fill{n}")),
        |a, _| a.field("Pad", pad.as_str()),
    )
}

fn originate() -> Action {
    Action::new("Originate")
        .field("Channel", String::from_utf8_lossy(VICTIM))
        .field("Application", "Wait")
        .field("Async", "true")
}

fn sentinel() -> Action {
    Action::new("UserEvent").field("UserEvent", String::from_utf8_lossy(SENTINEL))
}

fn config() -> ClientConfig {
    ClientConfig::builder("admin", "deaf")
        .seed(9)
        .pipeline_depth(FILLERS + 8)
        .ping_interval(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn long() -> SendOptions {
    SendOptions::timeout(Duration::from_secs(60))
}

fn short() -> SendOptions {
    SendOptions::timeout(Duration::from_millis(800))
}

/// Reads until one of `needles` has arrived; returns everything read.
fn read_until(stream: &mut TcpStream, needles: &[&[u8]]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "the client hung up");
        let before = got.len();
        got.extend_from_slice(&buf[..n]);
        let found = needles.iter().any(|needle| {
            let from = before.saturating_sub(needle.len());
            got[from..].windows(needle.len()).any(|w| w == *needle)
        });
        if found {
            return got;
        }
    }
}

/// A fake Asterisk that logs one client in, reads nothing until resumed, then reads up to
/// the sentinel (or the Originate, which must not come).
struct Deaf {
    addr: SocketAddr,
    resume: mpsc::Sender<()>,
    thread: JoinHandle<Vec<u8>>,
}

impl Deaf {
    fn start() -> Deaf {
        // A small receive buffer: the client's send buffer alone holds what is unread.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let listener = socket.listen(1).unwrap().into_std().unwrap();
        listener.set_nonblocking(false).unwrap();
        let addr = listener.local_addr().unwrap();
        let (resume, resumed) = mpsc::channel();
        let thread = std::thread::spawn(move || Deaf::serve(&listener, &resumed));
        Deaf {
            addr,
            resume,
            thread,
        }
    }

    fn serve(listener: &TcpListener, resumed: &mpsc::Receiver<()>) -> Vec<u8> {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(b"Asterisk Call Manager/11.0.0\r\n").unwrap();
        let login = read_until(&mut s, &[b"\r\n\r\n"]);
        let text = String::from_utf8_lossy(&login);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .expect("the Login carries an ActionID");
        let ok = format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
        );
        s.write_all(ok.as_bytes()).unwrap();
        resumed.recv().expect("told to resume");
        read_until(&mut s, &[SENTINEL, VICTIM])
    }

    /// Lets the server read again; `send_sentinel` sends the action it reads up to. Checks
    /// what arrived: every padding action, never the Originate.
    async fn resume_and_check(self, send_sentinel: Sent) {
        self.resume.send(()).unwrap();
        let after = tokio::spawn(send_sentinel);
        let thread = self.thread;
        let got = tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        assert!(
            !got.windows(VICTIM.len()).any(|w| w == VICTIM),
            "the timed-out Originate reached the server"
        );
        let fill = b"UserEvent: Fill";
        let fills = got.windows(fill.len()).filter(|w| w == fill).count();
        assert_eq!(fills, FILLERS, "every padding action arrived");
        after.abort();
    }
}

/// Queues the padding and then the Originate, all in one poll (before the driver runs),
/// waits until the socket is full, and checks that the Originate times out unsent.
async fn stall_and_time_out(
    fill: impl Fn(usize) -> Sent,
    victim: Sent,
    stats: impl Fn() -> Stats,
) -> Vec<Sent> {
    let mut sent: Vec<Sent> = (0..FILLERS).map(fill).collect();
    sent.push(victim);
    poll_fn(|cx| {
        for s in &mut sent {
            assert!(s.as_mut().poll(cx).is_pending(), "nothing is answered");
        }
        Poll::Ready(())
    })
    .await;
    let Some(victim) = sent.pop() else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = stats().transmit_pending;
    assert!(
        pending > 1000,
        "the socket should be full and the Originate unwritten: {pending} bytes pending"
    );
    match victim.await {
        Err(AmiError::Action(ActionError::TimedOut { phase, .. })) => {
            assert_eq!(phase, Phase::Queued, "timed out unsent");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stats().actions_withdrawn, 1);
    // Kept: dropping them would cancel the padding.
    sent
}

#[tokio::test(flavor = "current_thread")]
async fn an_action_stuck_behind_a_server_that_stopped_reading_is_never_sent_after_its_deadline() {
    let deaf = Deaf::start();
    let (ami, _events) = ami_tokio::spawn(config(), deaf.addr);
    ami.wait_ready().await.unwrap();
    let send = |action: Action, options: SendOptions| -> Sent {
        let ami = ami.clone();
        Box::pin(async move { ami.send_with(action, options).await })
    };
    let padding = stall_and_time_out(
        |n| send(filler(n), long()),
        send(originate(), short()),
        || ami.stats(),
    )
    .await;
    deaf.resume_and_check(send(sentinel(), long())).await;
    drop(padding);
    ami.close();
}

#[tokio::test(flavor = "current_thread")]
async fn a_fleet_server_that_stopped_reading_never_gets_an_action_after_its_deadline() {
    let deaf = Deaf::start();
    let (fleet, _events) = ami_tokio::fleet::spawn_fleet_sharded(FleetConfig::default(), 1);
    fleet.add("pbx", config(), deaf.addr).unwrap();
    for _ in 0..500 {
        if matches!(fleet.status("pbx"), Some(ServerStatus::Ready { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let send = |action: Action, options: SendOptions| -> Sent {
        let fleet = fleet.clone();
        Box::pin(async move {
            let reply = fleet.send_with(Route::Server("pbx"), action, options);
            reply.await.expect("pbx takes it").result
        })
    };
    let padding = stall_and_time_out(
        |n| send(filler(n), long()),
        send(originate(), short()),
        || fleet.stats().total,
    )
    .await;
    deaf.resume_and_check(send(sentinel(), long())).await;
    drop(padding);
    fleet.close();
}

/// A fake Asterisk that logs one client in, reads nothing until resumed, then reads until
/// the client hangs up: everything the client wrote after the login.
fn deaf_until_resumed() -> (SocketAddr, mpsc::Sender<()>, JoinHandle<Vec<u8>>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let listener = socket.listen(1).unwrap().into_std().unwrap();
    listener.set_nonblocking(false).unwrap();
    let addr = listener.local_addr().unwrap();
    let (resume, resumed) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(b"Asterisk Call Manager/11.0.0\r\n").unwrap();
        let login = read_until(&mut s, &[b"\r\n\r\n"]);
        let text = String::from_utf8_lossy(&login);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .expect("the Login carries an ActionID");
        let ok = format!(
            "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
        );
        s.write_all(ok.as_bytes()).unwrap();
        resumed.recv().expect("told to resume");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    (addr, resume, thread)
}

/// A Logoff while the server has stopped reading (a hung Asterisk, its socket full): the
/// actions still queued fail at once as not sent; the Logoff cannot be written, so the
/// session closes after `logoff_timeout` plus the driver's bounded last flush; every action
/// fails once with a typed error (none succeeds, none hangs); the event stream ends with
/// the session's `Disconnected` then `None`; and once the server reads again, no queued
/// action reaches it.
#[tokio::test(flavor = "current_thread")]
async fn a_logoff_to_a_server_that_stopped_reading_ends_in_bounded_time_failing_each_action_once() {
    // About 4.8 MB in the pipeline: more than the socket buffers hold.
    const ON_WIRE: usize = 40;
    let (addr, resume, server) = deaf_until_resumed();
    let config = ClientConfig::builder("admin", "deaf")
        .seed(9)
        .pipeline_depth(ON_WIRE)
        .logoff_timeout(Duration::from_secs(1))
        .ping_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let (ami, mut events) = ami_tokio::spawn(config, addr);
    ami.wait_ready().await.unwrap();
    let sent: Vec<_> = (0..FILLERS)
        .map(|n| {
            let ami = ami.clone();
            tokio::spawn(async move { ami.send_with(filler(n), long()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ami.stats().transmit_pending > 1000, "the socket is full");
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), ami.logoff())
        .await
        .expect("the logoff ended");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "logoff_timeout 1 s + the last flush's 1 s, yet it took {took:?}"
    );
    let (mut not_sent, mut failed) = (0, 0);
    for s in sent {
        match tokio::time::timeout(Duration::from_secs(1), s)
            .await
            .expect("every action has its outcome once the session closed")
            .unwrap()
        {
            Err(AmiError::Action(ActionError::NotSent(_))) => not_sent += 1,
            Err(AmiError::Action(_) | AmiError::Closed { .. }) => failed += 1,
            other => panic!("an action to a server that read none of it: {other:?}"),
        }
    }
    assert!(
        not_sent >= FILLERS - ON_WIRE,
        "the queued ones fail not sent: {not_sent} not sent, {failed} otherwise"
    );
    let mut last = None;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .expect("the stream ends")
    {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(ami_proto::StreamItem::Disconnected { .. })),
        "the stream's last item: {last:?}"
    );
    assert!(matches!(
        ami.send(Action::new("Ping")).await,
        Err(AmiError::Closed { .. } | AmiError::Send(_))
    ));
    resume.send(()).unwrap();
    let got = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    let fill = b"UserEvent: Fill";
    let fills = got.windows(fill.len()).filter(|w| w == fill).count();
    assert!(
        fills <= ON_WIRE,
        "{fills} padding actions reached the server, of {ON_WIRE} it could have been sent"
    );
}

/// The fleet's `logoff_all` while its one server has stopped reading: the server closes
/// after `logoff_timeout` (plus the bounded last flush), every action completes once with
/// a typed error (the queued ones not sent), and no queued action reaches the server.
#[tokio::test(flavor = "current_thread")]
async fn a_fleet_logoff_all_to_a_server_that_stopped_reading_ends_in_bounded_time_failing_each_action_once(
) {
    // About 4.8 MB in the pipeline: more than the socket buffers hold.
    const ON_WIRE: usize = 40;
    let (addr, resume, server) = deaf_until_resumed();
    let config = ClientConfig::builder("admin", "deaf")
        .seed(9)
        .pipeline_depth(ON_WIRE)
        .logoff_timeout(Duration::from_secs(1))
        .ping_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let (fleet, _events) = ami_tokio::fleet::spawn_fleet_sharded(FleetConfig::default(), 1);
    fleet.add("pbx", config, addr).unwrap();
    for _ in 0..500 {
        if matches!(fleet.status("pbx"), Some(ServerStatus::Ready { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent: Vec<_> = (0..FILLERS)
        .map(|n| {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                let reply = fleet.send_with(Route::Server("pbx"), filler(n), long());
                reply.await.expect("pbx takes it").result
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fleet.stats().total.transmit_pending > 1000,
        "the socket is full"
    );
    let started = std::time::Instant::now();
    fleet.logoff_all();
    while !matches!(fleet.status("pbx"), Some(ServerStatus::Closed { .. })) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {:?}",
            fleet.status("pbx")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "logoff_timeout 1 s + the last flush's 1 s, yet it took {took:?}"
    );
    let mut not_sent = 0;
    for s in sent {
        match tokio::time::timeout(Duration::from_secs(1), s)
            .await
            .expect("every action has its outcome once the server closed")
            .unwrap()
        {
            Err(AmiError::Action(ActionError::NotSent(_))) => not_sent += 1,
            Err(AmiError::Action(_) | AmiError::Closed { .. }) => {}
            other => panic!("an action to a server that read none of it: {other:?}"),
        }
    }
    assert!(not_sent >= FILLERS - ON_WIRE, "{not_sent} not sent");
    resume.send(()).unwrap();
    let got = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    let fill = b"UserEvent: Fill";
    let fills = got.windows(fill.len()).filter(|w| w == fill).count();
    assert!(
        fills <= ON_WIRE,
        "{fills} padding actions reached the server, of {ON_WIRE} it could have been sent"
    );
}
