//! Configurations that cannot work are refused when built, naming the setting; the
//! smallest accepted still work end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ami_proto::{
    Action, ClientConfig, DecoderLimits, Notice, MIN_DECODER_FIELDS, MIN_DECODER_LINE_LEN,
};
use ami_sim::link::Link;
use ami_sim::tcp::TcpFront;
use ami_sim::{
    ClassMask, SimConfig, SimConfigError, SimServer, SimUser, MAX_SYSTEM_NAME_LEN, MIN_MAX_BACKLOG,
};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

/// Logs in on `link`, sends a Ping, then runs two minutes (several heartbeats): whether the
/// session got ready, the Ping was answered, and how many times the client disconnected.
fn exercise(link: &mut Link) -> (bool, bool, usize) {
    let start = link.now();
    let ready = link.run_until_ready(start + Duration::from_secs(30));
    let mut pong = false;
    if ready {
        let id = link.send(Action::new("Ping")).unwrap();
        let limit = link.now() + Duration::from_secs(5);
        pong = link
            .run_until_complete(&id, limit)
            .is_some_and(|o| o.is_ok());
        link.run_for(Duration::from_secs(120));
    }
    let disconnects = link
        .notices()
        .iter()
        .filter(|(_, n)| matches!(n, Notice::Disconnected { .. }))
        .count();
    (ready, pong, disconnects)
}

fn client() -> ClientConfig {
    ClientConfig::builder("admin", "amp111")
        .seed(7)
        .build()
        .unwrap()
}

#[test]
fn the_smallest_decoder_a_client_accepts_logs_in_and_answers_its_heartbeat() {
    let decoder = DecoderLimits::builder()
        .max_message_len(256)
        .max_line_len(MIN_DECODER_LINE_LEN)
        .max_fields(MIN_DECODER_FIELDS)
        .buffer_cap(1024)
        .build()
        .unwrap();
    let config = ClientConfig::builder("admin", "amp111")
        .seed(7)
        .decoder(decoder)
        .build()
        .unwrap();
    let start = Instant::now();
    let mut link = Link::with_configs(config, SimConfig::default(), start);
    assert_eq!(exercise(&mut link), (true, true, 0));
}

/// Each config that cannot work, with the setting its error names. Before they were
/// refused, each was accepted, and on a `Link`: `auth_limit` 0 closed every connection
/// without a banner and `auth_timeout` 0 every session before its Login (the client
/// reconnected for ever, never ready); a `max_backlog` of 256 bytes or less closed every
/// session as a slow reader during its login; a `system_name` holding `\r\n\r\n` forged
/// an event into every event the server sent (24 events taken where 13 were sent).
fn cannot_work() -> Vec<(SimConfig, &'static str)> {
    let d = SimConfig::default;
    let user =
        |name: &str, secret: &str| SimUser::new(name, secret, ClassMask::ALL, ClassMask::ALL);
    let with_users = |users: Vec<SimUser>| SimConfig { users, ..d() };
    vec![
        (
            SimConfig {
                auth_limit: 0,
                ..d()
            },
            "auth_limit",
        ),
        (
            SimConfig {
                auth_timeout: Duration::ZERO,
                ..d()
            },
            "auth_timeout",
        ),
        (
            SimConfig {
                max_backlog: 0,
                ..d()
            },
            "max_backlog",
        ),
        (
            SimConfig {
                max_backlog: MIN_MAX_BACKLOG - 1,
                ..d()
            },
            "max_backlog",
        ),
        (
            SimConfig {
                system_name: Some("pbx\r\n\r\nEvent: Forged".into()),
                ..d()
            },
            "system_name",
        ),
        (
            SimConfig {
                ami_version: "11.0.0\r\nResponse: Success".into(),
                ..d()
            },
            "ami_version",
        ),
        (
            SimConfig {
                asterisk_version: "22\n".into(),
                ..d()
            },
            "asterisk_version",
        ),
        (with_users(vec![user("", "S3CRET")]), "user"),
        (with_users(vec![user("a\r\nb", "S3CRET")]), "user"),
        (with_users(vec![user("dialer", "S3CRET\r\n")]), "user"),
        (
            with_users(vec![user("dialer", "S3CRET"), user("DIALER", "S3CRET2")]),
            "user",
        ),
    ]
}

fn names(err: &SimConfigError, setting: &str) -> bool {
    match err {
        SimConfigError::Invalid { setting: s, .. } => *s == setting,
        SimConfigError::User { .. } => setting == "user",
        _ => false,
    }
}

#[test]
fn tcp_front_refuses_a_sim_config_that_cannot_work() {
    for (config, setting) in cannot_work() {
        let err = match TcpFront::start(config, "127.0.0.1:0") {
            Ok(_) => panic!("{setting}: a config that cannot work was accepted"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{setting}: {err}");
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<SimConfigError>())
            .unwrap_or_else(|| panic!("{setting}: {err}"));
        assert!(names(inner, setting), "{setting}: {inner}");
        assert!(!err.to_string().contains("S3CRET"), "{err}");
    }
}

#[test]
fn sim_server_try_new_and_the_builder_refuse_a_config_that_cannot_work() {
    let now = Instant::now();
    for (config, setting) in cannot_work() {
        let err = SimServer::try_new(config.clone(), now).unwrap_err();
        assert!(names(&err, setting), "{setting}: {err}");
        assert!(err.to_string().starts_with("invalid simulator config: "));
        assert!(!err.to_string().contains("S3CRET"), "{err}");
        assert_eq!(config.validate(), Err(err));
    }
    let b = SimConfig::builder;
    let refused = [
        b().auth_limit(0).build(),
        b().auth_timeout(Duration::ZERO).build(),
        b().max_backlog(100).build(),
        b().system_name("pbx\r\nEvent: Forged").build(),
        b().user(SimUser::new("ADMIN", "x", ClassMask::ALL, ClassMask::ALL))
            .build(),
    ];
    for r in refused {
        assert!(r.is_err(), "{r:?}");
    }
}

#[test]
#[should_panic(expected = "invalid simulator config: auth_limit")]
fn sim_server_new_panics_naming_the_setting_of_a_config_that_cannot_work() {
    let _ = SimServer::new(
        SimConfig {
            auth_limit: 0,
            ..SimConfig::default()
        },
        Instant::now(),
    );
}

#[test]
fn unusual_sim_configs_that_work_are_accepted_and_the_smallest_backlog_logs_in() {
    let d = SimConfig::default;
    let unusual = [
        SimConfig {
            users: Vec::new(),
            ..d()
        },
        SimConfig {
            max_calls: 0,
            ..d()
        },
        SimConfig {
            socket_buffer: 0,
            ..d()
        },
        SimConfig {
            max_input_backlog: 0,
            ..d()
        },
        SimConfig {
            write_timeout: Duration::ZERO,
            ..d()
        },
        SimConfig {
            step_delay: Duration::ZERO,
            ..d()
        },
        SimConfig {
            auth_timeout: Duration::MAX,
            boot_delay: Duration::MAX,
            ..d()
        },
        SimConfig {
            ami_version: String::new(),
            ..d()
        },
    ];
    for config in unusual {
        assert_eq!(config.validate(), Ok(()), "{config:?}");
    }
    let built = SimConfig::builder()
        .max_backlog(MIN_MAX_BACKLOG)
        .system_name("pbx-east-1")
        .build()
        .unwrap();
    let start = Instant::now();
    let mut link = Link::with_configs(client(), built, start);
    assert_eq!(exercise(&mut link), (true, true, 0));
}

/// A `system_name` is written into every event, the SuccessfulAuth of each login included:
/// one that takes most of the smallest `max_backlog` leaves no room for the login, so every
/// session is closed as a slow reader before it is ready (900 bytes over a 1 KiB backlog:
/// ten reconnects in two minutes, never ready). Refused at build past what Asterisk keeps of
/// a `systemname` (127 bytes); the longest it keeps logs in over the smallest backlog.
#[test]
fn a_system_name_longer_than_asterisk_keeps_is_refused_at_build_and_the_longest_logs_in() {
    let crowded = SimConfig {
        max_backlog: MIN_MAX_BACKLOG,
        system_name: Some("x".repeat(900)),
        ..SimConfig::default()
    };
    let err = crowded.validate().unwrap_err();
    assert!(names(&err, "system_name"), "{err}");
    let built = SimConfig::builder()
        .system_name("x".repeat(MAX_SYSTEM_NAME_LEN + 1))
        .build();
    assert!(built.is_err(), "the builder refuses it too");
    let longest = SimConfig::builder()
        .max_backlog(MIN_MAX_BACKLOG)
        .system_name("x".repeat(MAX_SYSTEM_NAME_LEN))
        .build()
        .unwrap();
    let mut link = Link::with_configs(client(), longest, Instant::now());
    assert_eq!(exercise(&mut link), (true, true, 0));
}
