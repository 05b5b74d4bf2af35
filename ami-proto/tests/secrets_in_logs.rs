//! Secrets never reach a log line: every record the client emits at every level, through a
//! plain login, an MD5 login, a rejected login, actions, timeouts and reconnects, is captured
//! and searched for the secret and the MD5 key. Server text in a record is shown escaped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

#[path = "support/log_capture.rs"]
mod log_capture;
mod support;

use ami_proto::{Action, AuthMethod, Client, ClientConfig, Input, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SECRET: &str = "s3cr3t-Pa55";

/// Installs the capturing logger once for every test of this file.
fn capture() {
    log_capture::install(log::LevelFilter::Trace);
}

#[test]
fn server_text_in_a_log_record_is_shown_escaped() {
    capture();
    let t0 = Instant::now();
    let cfg = ClientConfig::builder("admin", SECRET)
        .seed(3)
        .build()
        .unwrap();
    let mut c = Client::new(cfg, t0);
    drive(&mut c, t0, |b| {
        b.starts_with("Action: Login").then(|| {
            format!(
                "Response: Error\r\nActionID: {}\r\nMessage: pwned \x1b]0;title\x07\rFAKE \u{202e}\r\n\r\n",
                id_of(b)
            )
        })
    });
    assert!(c.is_closed());
    let records: Vec<String> = log_capture::snapshot()
        .iter()
        .map(log_capture::Record::line)
        .collect();
    let shown: Vec<&String> = records.iter().filter(|r| r.contains("pwned")).collect();
    assert!(!shown.is_empty(), "the rejection is logged: {records:?}");
    for r in shown {
        assert!(
            !r.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "raw server text in a log record: {r:?}"
        );
        assert!(
            r.contains("pwned \\x1b]0;title\\x07\\x0dFAKE \\u{202e}"),
            "{r:?}"
        );
    }
}

fn drive(client: &mut Client, now: Instant, reply: impl Fn(&str) -> Option<String>) {
    for _ in 0..8 {
        loop {
            match client.poll_output() {
                Output::Connect => {
                    client.handle_input(now, Input::Connected);
                    client.handle_input(now, Input::Received(b"Asterisk Call Manager/11.0.0\r\n"));
                }
                Output::Wait(_) => break,
                _ => {}
            }
        }
        let wire = String::from_utf8_lossy(client.transmit()).to_string();
        client.advance_transmit(wire.len());
        for block in wire.split("\r\n\r\n").filter(|b| !b.is_empty()) {
            if let Some(r) = reply(block) {
                client.handle_input(now, Input::Received(r.as_bytes()));
            }
        }
    }
}

fn id_of(block: &str) -> &str {
    block
        .lines()
        .find_map(|l| l.strip_prefix("ActionID: "))
        .unwrap_or("")
}

#[test]
fn no_log_record_ever_contains_the_secret_or_the_md5_key() {
    capture();
    let t0 = Instant::now();

    // Plain login, actions, a timeout, a server-side close and a reconnect.
    let cfg = ClientConfig::builder("admin", SECRET)
        .seed(1)
        .build()
        .unwrap();
    let mut c = Client::new(cfg, t0);
    c.send_action(t0, Action::new("Ping")).unwrap();
    c.send_action(t0, Action::new("Getvar").field("Variable", "X"))
        .unwrap();
    drive(&mut c, t0, |b| {
        b.starts_with("Action: Login").then(|| {
            format!(
                "Response: Success\r\nActionID: {}\r\nMessage: Authentication accepted\r\n\r\n",
                id_of(b)
            )
        })
    });
    c.handle_timeout(t0 + Duration::from_secs(60));
    c.handle_input(t0 + Duration::from_secs(60), Input::Eof);
    c.handle_timeout(t0 + Duration::from_secs(120));
    drive(&mut c, t0 + Duration::from_secs(120), |_| None);

    // MD5 login: the key is derived from the secret and must not be logged either.
    let challenge = "123456789";
    let key = {
        use std::fmt::Write;
        // The expected key, computed independently of the client.
        let digest = md5_hex(&format!("{challenge}{SECRET}"));
        let mut s = String::new();
        write!(s, "{digest}").unwrap();
        s
    };
    let cfg = ClientConfig::builder("admin", SECRET)
        .auth(AuthMethod::Md5)
        .seed(2)
        .build()
        .unwrap();
    let mut c = Client::new(cfg, t0);
    let sent_key = Mutex::new(String::new());
    drive(&mut c, t0, |b| {
        if b.starts_with("Action: Challenge") {
            return Some(format!(
                "Response: Success\r\nActionID: {}\r\nChallenge: {challenge}\r\n\r\n",
                id_of(b)
            ));
        }
        if b.starts_with("Action: Login") {
            let k = b
                .lines()
                .find_map(|l| l.strip_prefix("Key: "))
                .unwrap_or("");
            *sent_key.lock().unwrap() = k.to_string();
            return Some(format!(
                "Response: Error\r\nActionID: {}\r\nMessage: Authentication failed\r\n\r\n",
                id_of(b)
            ));
        }
        None
    });
    assert_eq!(
        *sent_key.lock().unwrap(),
        key,
        "the client sent the right key"
    );
    assert!(c.is_closed());

    let records: Vec<String> = log_capture::snapshot()
        .iter()
        .map(log_capture::Record::line)
        .collect();
    assert!(records.len() > 5, "the client logged: {records:?}");
    for r in records.iter() {
        assert!(!r.contains(SECRET), "secret in log: {r}");
        assert!(!r.contains(&key), "MD5 key in log: {r}");
    }
}

/// Textbook MD5 (RFC 1321), written out here so the test does not trust the client's own.
fn md5_hex(input: &str) -> String {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let mut msg = input.as_bytes().to_vec();
    let bit_len = (msg.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    [a0, b0, c0, d0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}
