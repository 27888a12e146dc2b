//! piper-launch as a process: rings, readiness, teardown by signals.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use piper_tests::{bin, launch_cmd, wait_until, Dir, Proc, PROMPT};

fn launch(dir: &Dir, args: &[&str]) -> Proc {
    Proc::spawn(dir, "launch", launch_cmd(dir, args))
}

/// The launcher running the misbehaving stand-in node (tests/fake/node.py).
fn launch_fake(dir: &Dir, mode: &str, args: &[&str]) -> Proc {
    let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/fake/node.py");
    let mut cmd = launch_cmd(dir, args);
    cmd.args(["--node-bin", fake]).env("FAKE_MODE", mode);
    Proc::spawn(dir, "launch", cmd)
}

/// The pid of a live node, once it is up.
fn node_pid(dir: &Dir, name: &str) -> Pid {
    let pid = piper_tests::node_pid(dir, name, PROMPT);
    pid.unwrap_or_else(|| panic!("node {name} never started"))
}

/// Waits until the launcher says the ring is ready.
fn wait_ready(launcher: &Proc) {
    assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
}

fn assert_all_gone(dir: &Dir, bound: Duration) {
    assert_eq!(dir.wait_no_processes(bound), Vec::<i32>::new(), "processes left");
    assert!(wait_until(bound, || dir.entries().is_empty()), "files left");
}

#[test]
fn ping_pong_through_the_launcher_with_exact_counts() {
    let dir = Dir::new("launch-pingpong");
    let mut launcher = launch(&dir, &["--nodes", "ping,pong", "--count", "300"]);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let lines = launcher.lines();
    assert_eq!(lines.len(), 300);
    assert!(lines.iter().all(|l| l == "pong received: 'ping'"));
    assert!(launcher.stderr().contains("piper-node[pong]: received 300, sent 300"));
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn kill_9_of_the_foreground_tears_down_with_137() {
    let dir = Dir::new("launch-kill-fg");
    let mut launcher = launch(&dir, &["--nodes", "ping,pong", "--interval", "5"]);
    wait_ready(&launcher);
    let (_ping, pong) = (node_pid(&dir, "ping"), node_pid(&dir, "pong"));
    let killed = Instant::now();
    nix::sys::signal::kill(pong, Signal::SIGKILL).unwrap();
    assert_eq!(launcher.code(PROMPT), Some(137));
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "exit must come within the grace period"
    );
    assert!(launcher.stderr().contains("removed 1 stale sockets"));
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn kill_9_of_the_launcher_leaves_no_node_behind() {
    let dir = Dir::new("launch-kill-launcher");
    let mut launcher = launch(&dir, &["--nodes", "a,b,c", "--interval", "5"]);
    wait_ready(&launcher);
    let pids = ["a", "b", "c"].map(|n| node_pid(&dir, n));
    launcher.signal(Signal::SIGKILL);
    assert_eq!(launcher.code(PROMPT), Some(137));
    let all_gone = || pids.iter().all(|&p| !piper_tests::running(p));
    assert!(wait_until(Duration::from_secs(1), all_gone));
    // PR_SET_PDEATHSIG sent SIGTERM, so the nodes removed their own files.
    assert_all_gone(&dir, Duration::from_secs(1));
}

#[test]
fn sigint_to_the_launcher_exits_130_and_everything_goes() {
    let dir = Dir::new("launch-sigint");
    let mut launcher = launch(&dir, &["--nodes", "ping,pong", "--interval", "5"]);
    wait_ready(&launcher);
    node_pid(&dir, "ping");
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(PROMPT), Some(130));
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn a_node_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let dir = Dir::new("launch-grace");
    let mut launcher = launch_fake(&dir, "ignore-term", &["--nodes", "a,b", "--grace", "0.5"]);
    wait_ready(&launcher);
    let sent = Instant::now();
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(143));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(launcher.stderr().contains("node 'a' ignored SIGTERM; sending SIGKILL"));
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn a_second_sigint_skips_the_grace_period() {
    let dir = Dir::new("launch-second");
    let mut launcher = launch_fake(&dir, "ignore-term", &["--nodes", "a,b", "--grace", "30"]);
    wait_ready(&launcher);
    launcher.signal(Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(launcher.code(Duration::ZERO), None, "still in its grace period");
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(Duration::from_secs(3)), Some(130));
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn a_200_node_ring_runs_and_tears_down_cleanly() {
    let dir = Dir::new("launch-200");
    let mut launcher = launch(&dir, &["--nodes", "200", "--count", "200", "--quiet"]);
    assert_eq!(launcher.code(Duration::from_secs(120)), Some(0));
    let err = launcher.stderr();
    assert!(err.contains("200 nodes ready in"), "{err}");
    assert!(err.contains("piper-node[node200]: received 200, sent 200"), "{err}");
    assert!(err.contains("tore down 199 nodes"), "{err}");
    assert_eq!(launcher.stdout(), "", "--quiet prints no message lines");
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn a_missing_node_binary_is_a_clear_error() {
    let dir = Dir::new("launch-missing");
    let mut launcher = launch(&dir, &["--nodes", "a,b", "--node-bin", "/nonexistent/piper-node"]);
    assert_eq!(launcher.code(PROMPT), Some(127));
    assert_eq!(
        launcher.stderr(),
        "piper-launch: error: --node-bin /nonexistent/piper-node is not an executable file; \
         build it with `cargo build --release` or pass --node-bin PATH\n"
    );
    // A launcher alone in a directory, with nothing on PATH.
    let alone = dir.aux("bin");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(bin("piper-launch"), alone.join("piper-launch")).unwrap();
    let mut cmd = Command::new(alone.join("piper-launch"));
    cmd.arg("--dir")
        .arg(dir.path())
        .args(["--nodes", "a,b"])
        .env("PATH", "/nonexistent");
    let mut launcher = Proc::spawn(&dir, "alone", cmd);
    assert_eq!(launcher.code(PROMPT), Some(127));
    let err = launcher.stderr();
    assert!(
        err.contains(&format!(
            "piper-node not found: looked at {}/piper-node and on PATH",
            alone.display()
        )),
        "{err}"
    );
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn the_ready_timeout_names_the_late_node_and_tears_down() {
    let dir = Dir::new("launch-timeout");
    let mut launcher = launch_fake(&dir, "never-ready", &["--nodes", "slow", "--ready-timeout", "0.5"]);
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    assert!(
        err.contains("error: node 'slow' not ready after --ready-timeout 0.5s"),
        "{err}"
    );
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn a_node_that_fails_to_start_is_named_and_everything_goes() {
    let dir = Dir::new("launch-inuse");
    // Someone already holds "pong".
    let squatter = std::os::unix::net::UnixDatagram::bind(dir.join("piper-pong")).unwrap();
    let mut launcher = launch(&dir, &["--nodes", "ping,pong", "--foreground", "ping"]);
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    assert!(err.contains("node 'pong' (pid"), "{err}");
    assert!(err.contains("exited with status 3 before the ring was ready"), "{err}");
    drop(squatter);
    std::fs::remove_file(dir.join("piper-pong")).unwrap();
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn a_background_death_is_reported_and_fail_fast_ends_the_run() {
    for fail_fast in [false, true] {
        let dir = Dir::new("launch-bg");
        let mut args = vec!["--nodes", "a,b,c", "--interval", "5"];
        if fail_fast {
            args.push("--fail-fast");
        }
        let mut launcher = launch(&dir, &args);
        wait_ready(&launcher);
        nix::sys::signal::kill(node_pid(&dir, "b"), Signal::SIGKILL).unwrap();
        let reported = "node 'b' (pid";
        assert!(wait_until(PROMPT, || launcher.stderr().contains(reported)));
        assert!(launcher.stderr().contains("was killed by SIGKILL"));
        if fail_fast {
            assert_eq!(launcher.code(PROMPT), Some(1));
        } else {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(launcher.code(Duration::ZERO), None, "the run continues");
            launcher.signal(Signal::SIGTERM);
            assert_eq!(launcher.code(PROMPT), Some(143));
        }
        assert_all_gone(&dir, Duration::ZERO);
    }
}
