//! The figures measured through piper's real binaries: the launcher's
//! ping-pong (quiet, and printing to files), round trips against a node,
//! the big ring, launch and teardown, and an idle node's memory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::scratch::{wait_for, Guard, Scratch};
use crate::Settings;

/// Round trips against a real `piper-node pong --quiet`: p50 and p99 in µs.
pub fn round_trips(s: &Settings) -> (f64, f64) {
    let dir = Scratch::new("rtt");
    let _pong = Guard(
        Command::new(s.bin.join("piper-node"))
            .args(["pong", "--quiet", "--dir"])
            .arg(&dir.0)
            .stderr(Stdio::null())
            .spawn()
            .expect("piper-node"),
    );
    wait_for(&dir.0.join("piper-pong"));
    let client = dir.0.join("piper-bench");
    let (_, p50, p99) = crate::raw::round_trips(&client, &dir.0.join("piper-pong"), b"bench", s.count);
    (p50, p99)
}

/// Runs the launcher to completion; returns its stderr.
fn launch(s: &Settings, dir: &Path, args: &[&str], stdout: Stdio) -> String {
    let out = Command::new(s.bin.join("piper-launch"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("piper-launch");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "piper-launch {args:?} failed:\n{err}");
    err
}

/// The foreground node's message rate, from its summary line: the
/// messages after its first over the time from the first to the last
/// (the line's rounded `rate` is too coarse for a slow ring).
pub fn foreground_rate(stderr: &str) -> f64 {
    let line = stderr.lines().find(|l| l.contains("msg/s")).expect("a summary line");
    let after = |key: &str| -> f64 {
        let rest = line
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("no '{key}' in {line:?}"));
        let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        number
            .parse()
            .unwrap_or_else(|_| panic!("no number after '{key}' in {line:?}"))
    };
    (after("received ") - 1.0) / after("(active ")
}

/// The seed's ping-pong through the launcher, quiet or with both nodes
/// printing every message to one file (the launcher's stdout, which the
/// nodes write straight to): hops per second.
pub fn pingpong(s: &Settings, quiet: bool) -> f64 {
    let dir = Scratch::new(if quiet { "quiet" } else { "loud" });
    let sockets = dir.0.join("sockets");
    let count = s.count.to_string();
    let err = if quiet {
        let args = ["--nodes", "ping,pong", "--count", &count, "--quiet"];
        launch(s, &sockets, &args, Stdio::null())
    } else {
        let file = std::fs::File::create(dir.0.join("out")).unwrap();
        let args = ["--nodes", "ping,pong", "--count", &count];
        let err = launch(s, &sockets, &args, file.into());
        let text = std::fs::read_to_string(dir.0.join("out")).unwrap();
        let pong = text.lines().filter(|l| *l == "pong received: 'ping'").count() as u64;
        let ping = text.lines().filter(|l| *l == "ping received: 'pong'").count() as u64;
        assert_eq!(pong, s.count, "every message printed, whole");
        assert!(ping + 1 >= s.count && pong + ping == text.lines().count() as u64);
        err
    };
    2.0 * foreground_rate(&err)
}

/// A ring, where every hop is a different pair of processes: hops per second.
pub fn ring(s: &Settings) -> f64 {
    let dir = Scratch::new("ring");
    let (n, laps) = (s.ring.to_string(), s.ring_count.to_string());
    let err = launch(s, &dir.0, &["--nodes", &n, "--count", &laps, "--quiet"], Stdio::null());
    s.ring as f64 * foreground_rate(&err)
}

/// Seconds to ready, and to tear down after the foreground is killed: the
/// binaries in `bin`, the sockets in a directory under `root`.
pub fn launch_and_teardown(bin: &Path, root: &Path, n: usize) -> (f64, f64) {
    let dir = Scratch::new_in(root, &format!("launch{n}"));
    let sockets = dir.0.join("s");
    let err_path = dir.0.join("err");
    let mut launcher = Guard(
        Command::new(bin.join("piper-launch"))
            .arg("--dir")
            .arg(&sockets)
            .args(["--nodes", &n.to_string(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("piper-launch"),
    );
    let read = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read().contains("nodes ready in") {
        assert!(Instant::now() < deadline, "ring of {n} never ready:\n{}", read());
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = node_pid(launcher.0.id(), &format!("node{n}"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = launcher.0.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    let err = read();
    let seconds = |marker: &str| -> f64 {
        let line = err
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no '{marker}' in:\n{err}"));
        let after = line.split(" in ").nth(1).unwrap();
        let number = after.trim_end_matches(|c: char| !c.is_ascii_digit());
        number.split('s').next().unwrap().parse().unwrap()
    };
    (seconds("nodes ready in"), seconds("tore down"))
}

/// The pid of node `name`: a child of `launcher` whose command line ends in
/// that name. Only such a pid is ever signalled: the launcher's own child
/// (it holds every node's name, so the lock table would name the launcher).
fn node_pid(launcher: u32, name: &str) -> i32 {
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).unwrap_or_default();
    let pid = children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmdline.split(|&b| b == 0).rfind(|a| !a.is_empty()) == Some(name.as_bytes())
        });
    let pid = pid.unwrap_or_else(|| panic!("no child of {launcher} is node {name}"));
    assert!(pid > 1 && pid != std::process::id() as i32);
    pid
}

/// An idle node's resident memory, in KiB.
pub fn idle_rss_kib(s: &Settings) -> f64 {
    let dir = Scratch::new("rss");
    let node = Guard(
        Command::new(s.bin.join("piper-node"))
            .args(["idle", "--dir"])
            .arg(&dir.0)
            .spawn()
            .expect("piper-node"),
    );
    wait_for(&dir.0.join("piper-idle"));
    std::thread::sleep(Duration::from_millis(100));
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.0.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
