//! What the command line and its environment variables are taken to mean: `AMI_URL` and
//! `AMI_LOG` as a service manager sets them, options that would otherwise be ignored
//! without a word, `decode` of captures that do not start with a banner, and `bench`'s
//! warning about the UserEvents it floods a real server with.
//! Exit codes: 0 ok, 1 other, 2 usage, 3 connect/login, 4 server error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ami_sim::tcp::TcpFront;
use ami_sim::SimConfig;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A URL nothing listens on: a command that tries it fails with exit 3, not 2.
const NOWHERE: &str = "ami://a:b@127.0.0.1:1";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/asterisk-22.10.1")
        .join(name)
}

fn fixture_arg(name: &str) -> String {
    fixture(name).to_str().unwrap().to_string()
}

fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// `ami ARGS` with the environment variable `key` set to `value`.
fn with_env(key: &str, value: &str, args: &[&str]) -> Output {
    command(args).env(key, value).output().unwrap()
}

/// `ami ARGS` given `input` on stdin.
fn with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `ami ARGS` (with `AMI_URL` set to `ami_url`) that should end by itself; killed and
/// failed after 20 s (an option ignored can leave `sim` serving for ever).
fn bounded(args: &[&str], ami_url: Option<&str>) -> Output {
    let mut c = command(args);
    if let Some(u) = ami_url {
        c.env("AMI_URL", u);
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

// 1. AMI_URL and AMI_LOG.

#[test]
fn an_empty_or_malformed_ami_url_does_not_stop_commands_that_connect_to_nothing() {
    let ping = fixture_arg("ping.raw");
    for url in ["", "ami://bad:S3cr3t@h:x", "a,b,"] {
        for args in [
            &["decode", ping.as_str()][..],
            &["demo", "--duration", "0.5"],
            &["bench", "--duration", "0.5"],
        ] {
            let out = bounded(args, Some(url));
            assert_code(&out, 0, &format!("AMI_URL={url:?} {args:?}"));
            assert!(!stderr(&out).contains("S3cr3t"));
        }
        // `sim` serves until stopped: it has started when it prints its URL.
        let mut sim = command(&["sim", "--listen", "127.0.0.1:0"])
            .env("AMI_URL", url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_guarded();
        let mut first = String::new();
        std::io::BufReader::new(sim.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let early_exit = sim.try_wait().unwrap();
        sim.kill().unwrap();
        let out = sim.wait_with_output().unwrap();
        assert!(
            first.starts_with("ami://admin:amp111@127.0.0.1:") && early_exit.is_none(),
            "AMI_URL={url:?} sim: {first:?} {}",
            stderr(&out)
        );
    }
}

#[test]
fn an_empty_ami_url_is_as_if_unset() {
    let out = with_env("AMI_URL", "", &["action", "Ping"]);
    assert_code(&out, 2, "AMI_URL= action Ping");
    let said = stderr(&out);
    assert!(
        said.contains("no server: pass --server") && !said.contains("relative URL"),
        "{said}"
    );
}

#[test]
fn a_malformed_ami_url_is_still_refused_by_commands_that_connect_without_its_secret() {
    for args in [
        &["action", "Ping"][..],
        &["listen", "--count", "1"],
        &["originate", "--channel", "x", "--application", "Wait"],
    ] {
        let out = with_env("AMI_URL", "ami://bad:S3cr3t@h:x", args);
        assert_code(&out, 2, &format!("{args:?}"));
        let said = stderr(&out);
        assert!(said.contains("invalid port number"), "{args:?}: {said}");
        assert!(said.contains("AMI_URL"), "{args:?}: {said}");
        assert!(
            !said.contains("S3cr3t"),
            "{args:?}: the secret leaked: {said}"
        );
    }
}

#[test]
fn a_stray_comma_in_ami_url_is_named_not_a_relative_url_error() {
    for url in [
        format!("{NOWHERE},"),
        format!(",{NOWHERE}"),
        format!("{NOWHERE},,{NOWHERE}"),
    ] {
        let out = with_env("AMI_URL", &url, &["action", "Ping"]);
        assert_code(&out, 2, &url);
        let said = stderr(&out);
        assert!(
            said.contains("empty") && said.contains("comma") && !said.contains("relative URL"),
            "{url}: {said}"
        );
    }
    // The same on the command line.
    let out = ami(&["--server", &format!("{NOWHERE},"), "action", "Ping"]);
    assert_code(&out, 2, "--server with a trailing comma");
    assert!(!stderr(&out).contains("relative URL"), "{}", stderr(&out));
}

#[test]
fn an_empty_ami_log_is_as_if_unset() {
    let out = with_env("AMI_LOG", "", &["decode", &fixture_arg("ping.raw")]);
    assert_code(&out, 0, "AMI_LOG= decode");
    let out = with_env("AMI_LOG", "", &["action", "Ping"]);
    assert_code(&out, 2, "AMI_LOG= action Ping");
    assert!(stderr(&out).contains("no server"), "{}", stderr(&out));
}

#[test]
fn ami_log_and_log_take_levels_in_any_case() {
    let ping = fixture_arg("ping.raw");
    for level in ["DEBUG", "Warn", "info"] {
        let out = with_env("AMI_LOG", level, &["decode", &ping]);
        assert_code(&out, 0, &format!("AMI_LOG={level}"));
        let out = ami(&["--log", level, "decode", &ping]);
        assert_code(&out, 0, &format!("--log {level}"));
    }
}

#[test]
fn a_bad_ami_log_is_refused_naming_ami_log_not_the_option() {
    let out = with_env("AMI_LOG", "loud", &["decode", &fixture_arg("ping.raw")]);
    assert_code(&out, 2, "AMI_LOG=loud");
    let said = stderr(&out);
    assert!(said.contains("AMI_LOG"), "{said}");
    assert!(!said.contains("--log"), "{said}");
    // The option on the command line wins over the variable, as for AMI_URL.
    let out = command(&["--log", "warn", "decode", &fixture_arg("ping.raw")])
        .env("AMI_LOG", "loud")
        .output()
        .unwrap();
    assert_code(&out, 0, "--log warn with AMI_LOG=loud");
}

// 2. Options that cannot apply are refused, not ignored.

#[test]
fn demo_refuses_the_connection_options_its_own_simulator_cannot_use() {
    for args in [
        &["--server", NOWHERE, "demo", "--duration", "0.5"][..],
        &["demo", "--auth", "md5", "--duration", "0.5"],
        &["--ca", "ca.pem", "demo", "--duration", "0.5"],
    ] {
        let out = bounded(args, None);
        assert_code(&out, 2, &format!("{args:?}"));
        let said = stderr(&out);
        assert!(said.contains("not `ami demo`"), "{args:?}: {said}");
        assert_eq!(said.lines().count(), 1, "{args:?}: one line: {said}");
    }
    // --runtime picks the adapter of demo's client: it applies.
    let out = bounded(&["--runtime", "mio", "demo", "--duration", "0.5"], None);
    assert_code(&out, 0, "demo --runtime mio");
}

#[test]
fn bench_refuses_a_server_with_the_options_of_its_simulators() {
    for args in [
        &[
            "--server",
            NOWHERE,
            "bench",
            "--servers",
            "2",
            "--duration",
            "0.5",
        ][..],
        &[
            "--server",
            NOWHERE,
            "bench",
            "--event-bytes",
            "1000",
            "--duration",
            "0.5",
        ],
    ] {
        let out = bounded(args, None);
        assert_code(&out, 2, &format!("{args:?}"));
        let said = stderr(&out);
        assert!(said.contains("--server"), "{args:?}: {said}");
        assert_eq!(said.lines().count(), 1, "{args:?}: one line: {said}");
    }
}

#[test]
fn bench_on_its_own_simulator_refuses_auth_and_ca() {
    for args in [
        &["--auth", "md5", "bench", "--duration", "0.5"][..],
        &["--ca", "ca.pem", "bench", "--duration", "0.5"],
    ] {
        let out = bounded(args, None);
        assert_code(&out, 2, &format!("{args:?}"));
        assert!(stderr(&out).contains("--server"), "{}", stderr(&out));
    }
}

#[test]
fn bench_does_not_take_its_target_from_ami_url() {
    // AMI_URL names the operator's server for every command of the shell: bench floods
    // the server it targets, so only a --server typed for it makes it leave its simulator.
    let out = bounded(&["bench", "--duration", "0.5"], Some(NOWHERE));
    assert_code(&out, 0, "AMI_URL=<unreachable> bench");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("README loop"),
        "ran on the simulator: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn originate_refuses_priority_with_application_and_data_with_context() {
    for args in [
        &[
            "--server",
            NOWHERE,
            "originate",
            "--channel",
            "Local/echo@ami-test",
            "--application",
            "Wait",
            "--priority",
            "3",
        ][..],
        &[
            "--server",
            NOWHERE,
            "originate",
            "--channel",
            "Local/echo@ami-test",
            "--context",
            "c",
            "--exten",
            "e",
            "--data",
            "foo",
        ],
    ] {
        let out = ami(args);
        assert_code(&out, 2, &format!("{args:?}"));
    }
}

#[test]
fn originate_timeout_0_is_refused_like_action_timeout_0() {
    let out = ami(&[
        "--server",
        NOWHERE,
        "originate",
        "--channel",
        "Local/echo@ami-test",
        "--application",
        "Wait",
        "--timeout",
        "0",
    ]);
    assert_code(&out, 2, "originate --timeout 0");
    assert!(stderr(&out).contains("--timeout"), "{}", stderr(&out));
}

#[test]
fn ca_given_for_plain_ami_servers_only_is_refused() {
    for args in [
        &["--ca", "ca.pem", "--server", NOWHERE, "action", "Ping"][..],
        &[
            "--ca",
            "ca.pem",
            "--server",
            NOWHERE,
            "--server",
            "ami://a:b@127.0.0.1:2",
            "listen",
        ],
    ] {
        let out = bounded(args, None);
        assert_code(&out, 2, &format!("{args:?}"));
        let said = stderr(&out);
        assert!(
            said.contains("--ca") && said.contains("amis://"),
            "{args:?}: {said}"
        );
    }
    // From AMI_URL too.
    let out = with_env("AMI_URL", NOWHERE, &["--ca", "ca.pem", "action", "Ping"]);
    assert_code(&out, 2, "AMI_URL=ami:// --ca");
}

// 3. decode: the first line is a banner only if it looks like one.

#[test]
fn decode_keeps_the_first_message_of_a_capture_cut_after_the_banner() {
    let raw = std::fs::read(fixture("ping.raw")).unwrap();
    // `tail -c +31`: what follows "Asterisk Call Manager/11.0.0\r\n".
    let out = with_stdin(&["decode", "-"], &raw[30..]);
    assert_code(&out, 0, "decode -");
    let lines = stdout_lines(&out);
    let first = json(&lines[0]);
    assert_eq!(first["type"], "response", "{}", lines[0]);
    assert_eq!(
        first["headers"][0],
        serde_json::json!(["Response", "Success"])
    );
    assert!(!stderr(&out).contains("banner"), "{}", stderr(&out));
    // Every message of the whole capture, the same.
    let whole = ami(&["decode", &fixture_arg("ping.raw")]);
    assert_eq!(lines, stdout_lines(&whole));
}

#[test]
fn decode_of_what_a_client_sent_keeps_its_first_action() {
    let out = ami(&["decode", &fixture_arg("ping.sent")]);
    assert_code(&out, 0, "decode ping.sent");
    let lines = stdout_lines(&out);
    let first = json(&lines[0]);
    assert_eq!(first["type"], "action", "{}", lines[0]);
    assert_eq!(first["headers"][0], serde_json::json!(["Action", "Login"]));
    assert!(!stderr(&out).contains("banner"), "{}", stderr(&out));
}

#[test]
fn decode_still_reports_a_real_banner_apart_from_the_messages() {
    let out = ami(&["decode", &fixture_arg("ping.raw")]);
    assert_code(&out, 0, "decode ping.raw");
    let said = stderr(&out);
    assert!(
        said.contains("banner: Asterisk Call Manager/11.0.0"),
        "{said}"
    );
    let lines = stdout_lines(&out);
    assert_eq!(json(&lines[0])["type"], "response", "{}", lines[0]);
    // Fed a byte at a time, the banner is still told apart (its line end comes late).
    let raw = std::fs::read(fixture("ping.raw")).unwrap();
    let mut child = command(&["decode", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded();
    let mut stdin = child.stdin.take().unwrap();
    for b in &raw[..40] {
        stdin.write_all(std::slice::from_ref(b)).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    stdin.write_all(&raw[40..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout_lines(&out), lines);
    assert!(stderr(&out).contains("banner: Asterisk Call Manager/11.0.0"));
}

// 4. bench against a real server says what it does to it.

#[test]
fn bench_help_says_a_real_server_broadcasts_its_user_events_to_every_client() {
    let out = ami(&["bench", "--help"]);
    assert_code(&out, 0, "bench --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("UserEvent") && help.contains("every AMI client"),
        "{help}"
    );
}

#[test]
fn bench_against_a_server_warns_once_on_stderr_and_not_on_its_simulator() {
    let front = TcpFront::start(SimConfig::default(), "127.0.0.1:0").unwrap();
    let url = format!("ami://admin:amp111@{}", front.local_addr());
    let out = bounded(&["--server", &url, "bench", "--duration", "0.5"], None);
    assert_code(&out, 0, "bench --server");
    let said = stderr(&out);
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("every AMI client"))
        .collect();
    assert_eq!(warnings.len(), 1, "{said}");
    assert!(warnings[0].contains("UserEvent"), "{said}");
    assert!(!said.contains("amp111"), "{said}");
    let out = bounded(&["bench", "--duration", "0.5"], None);
    assert_code(&out, 0, "bench");
    assert!(
        !stderr(&out).contains("every AMI client"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unescaped_comma_in_a_secret_is_refused_with_the_hint_to_write_it_as_2c() {
    // The README and `--help` say a comma in a secret is written %2C: `--server` and
    // `AMI_URL` are split at commas, so a raw one cuts the URL in two. The refusal said only
    // `bad server URL: invalid port number`, which leaves a user whose password holds a
    // comma nowhere to look. It must say what to write, and still never show the secret.
    let url = "ami://admin:pa,ssXYZ@127.0.0.1:5038";
    let from_flag = ami(&["--server", url, "action", "Ping"]);
    let mut env = command(&["action", "Ping"]);
    let from_env = env.env("AMI_URL", url).output().unwrap();
    for (what, out) in [("--server", from_flag), ("AMI_URL", from_env)] {
        assert_code(&out, 2, what);
        let err = stderr(&out);
        assert!(!err.contains("ssXYZ"), "{what}: the secret is shown: {err}");
        assert!(
            err.contains("%2C"),
            "{what}: nothing says to write the comma as %2C: {err}"
        );
    }
}

#[test]
fn decode_help_offers_none_of_the_connection_options_decode_refuses() {
    // `ami decode --server ...` (and --auth, --runtime, --ca) is refused with exit 2, yet
    // `ami decode --help` lists all four with their full descriptions, as if they applied; the
    // same for `sim` and `demo`. A newcomer reads the help first.
    let refused = ami(&["decode", "--runtime", "mio", "capture.raw"]);
    assert_code(&refused, 2, "decode --runtime");
    let out = ami(&["decode", "--help"]);
    assert_code(&out, 0, "decode --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--server", "--auth", "--runtime", "--ca"] {
        assert!(
            !help.contains(option),
            "decode --help offers {option}, which decode refuses:\n{help}"
        );
    }
}

#[test]
fn a_url_whose_user_or_secret_decodes_to_a_line_break_is_refused_in_one_prefix_without_it() {
    for (url, what) in [
        ("ami://ad%0Amin:x@127.0.0.1:1", "username"),
        ("ami://admin:Se%0Dcr3t@127.0.0.1:1", "secret"),
    ] {
        let out = ami(&["action", "Ping", "--server", url]);
        assert_code(&out, 2, url);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{what} must not contain CR, LF or NUL")),
            "{err}"
        );
        // One "what is wrong" prefix, not "bad client settings: invalid client config: ".
        assert_eq!(
            err.matches("config").count() + err.matches("settings").count(),
            1,
            "{err}"
        );
        assert!(!err.contains("cr3t"), "{err}");
    }
}
