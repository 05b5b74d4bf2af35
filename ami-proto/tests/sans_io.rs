//! Law 1: the core is runtime-agnostic. No source line of ami-proto (comments and doc
//! examples aside) may read a clock, open a socket or file, start a thread, sleep, or name an
//! async runtime. Every input carries `now`; the simulation suite drives the same code on
//! virtual time, which would be impossible if it read the real clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // test code: a real epoch for virtual time, fixtures read from disk

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "std::net",
    "std::fs",
    "std::thread",
    "thread::sleep",
    "std::process",
    "std::io::Read",
    "std::io::Write",
    "tokio",
    "mio::",
    "async_std",
    "async fn",
    ".await",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_source_reads_no_clock_and_does_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found the sources: {files:?}");
    let mut hits = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue; // comments and doc examples (the crate docs show a caller's loop)
            }
            let code = code.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    hits.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "I/O or clock in the core:\n{}",
        hits.join("\n")
    );
}

#[test]
fn core_depends_on_no_runtime_or_io_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    for runtime in ["tokio", "mio", "async-std", "async-io", "smol", "futures"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(runtime)),
            "ami-proto depends on {runtime}"
        );
    }
}

/// The type-aware half of law 1 lives in `ami-proto/clippy.toml` (CI runs clippy with
/// `-D warnings`); this test fails if someone trims that list, so the grep above is never the
/// only line of defence.
#[test]
fn core_clippy_config_disallows_clocks_sockets_files_threads_and_locks() {
    let conf = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("clippy.toml"))
        .expect("ami-proto/clippy.toml exists");
    for path in [
        "std::time::Instant::now",
        "std::time::SystemTime::now",
        "std::thread::spawn",
        "std::thread::sleep",
        "std::net::ToSocketAddrs::to_socket_addrs",
        "std::net::TcpStream",
        "std::fs::File",
        "std::sync::Mutex",
    ] {
        assert!(
            conf.contains(&format!("path = \"{path}\"")),
            "ami-proto/clippy.toml no longer disallows {path}"
        );
    }
}
