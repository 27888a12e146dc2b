//! piper-launch as a process: rings, readiness, teardown by signals.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use piper_tests::{bin, launch_cmd, may_run, node_cmd, running, state, wait_until, Dir, Needs, Proc, PROMPT};

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
    let mut launcher = launch(
        &dir,
        &["--nodes", "ping,pong", "--count", "300", "--output", "foreground"],
    );
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_eq!(launcher.lines(), vec!["pong received: 'ping'"; 300]);
    let err = launcher.stderr();
    assert!(err.contains("piper-node[pong]: received 300, sent 300"), "{err}");
    // Stderr is a file here: no status line, no terminal codes.
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
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
    // PR_SET_PDEATHSIG sent SIGTERM; the nodes, whose launcher is gone,
    // removed the sockets it held for them.
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
    assert_eq!(launcher.code(PROMPT), Some(0));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    let err = launcher.stderr();
    assert!(err.contains("node 'a' ignored SIGTERM; sending SIGKILL"), "{err}");
    // Each is named; there is no --grace 0 or second signal to speak of.
    assert!(!err.contains("sending SIGKILL to"), "{err}");
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn a_second_sigint_skips_the_grace_period() {
    let dir = Dir::new("launch-second");
    let mut launcher = launch_fake(&dir, "ignore-term", &["--nodes", "a,b", "--grace", "30"]);
    wait_ready(&launcher);
    let (a, b) = (node_pid(&dir, "a"), node_pid(&dir, "b"));
    launcher.signal(Signal::SIGINT);
    // The names are free as soon as the nodes are told to stop, while they
    // still run: the sockets went with the SIGTERM. Waited for: the
    // launcher removes them when it gets to the SIGINT.
    assert!(wait_until(PROMPT, || dir.entries().is_empty()), "{:?}", dir.entries());
    assert_eq!(launcher.code(Duration::ZERO), None, "still in its grace period");
    assert!(running(a) && running(b));
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(Duration::from_secs(3)), Some(130));
    let err = launcher.stderr();
    assert!(
        err.contains("a second stop signal: sending SIGKILL to 2 nodes"),
        "{err}"
    );
    assert!(!err.contains("ignored SIGTERM"), "{err}");
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
    // On PATH, the first piper-node that is an executable file: not a file
    // without execute permission, nor a directory.
    let (plain, folder, real) = (dir.aux("plain"), dir.aux("folder"), dir.aux("real"));
    for d in [&plain, &folder, &real] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(plain.join("piper-node"), "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::create_dir(folder.join("piper-node")).unwrap();
    std::os::unix::fs::symlink(bin("piper-node"), real.join("piper-node")).unwrap();
    let path = std::env::join_paths([&plain, &folder, &real]).unwrap();
    let mut cmd = Command::new(alone.join("piper-launch"));
    cmd.arg("--dir")
        .arg(dir.path())
        .args(["--nodes", "a,b", "--count", "3", "--output", "foreground"])
        .env("PATH", path);
    let mut launcher = Proc::spawn(&dir, "on-path", cmd);
    assert_eq!(launcher.code(PROMPT), Some(0), "{}", launcher.stderr());
    assert_eq!(launcher.lines(), vec!["b received: 'a'"; 3]);
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn the_ready_timeout_names_the_late_node_and_tears_down() {
    let dir = Dir::new("launch-timeout");
    let args = ["--nodes", "slow,slower", "--ready-timeout", "0.5"];
    let mut launcher = launch_fake(&dir, "never-ready", &args);
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    assert!(
        err.contains("error: node 'slow' and 1 more not ready after --ready-timeout 0.5s"),
        "{err}"
    );
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn a_name_in_use_is_refused_before_anything_starts() {
    let dir = Dir::new("launch-inuse");
    // Someone already holds "pong": the launcher checks every name itself,
    // before it starts any node, so it knows at once.
    let squatter = std::os::unix::net::UnixDatagram::bind(dir.join("piper-pong")).unwrap();
    let mut launcher = launch(&dir, &["--nodes", "ping,pong", "--foreground", "ping"]);
    assert_eq!(launcher.code(PROMPT), Some(3));
    assert_eq!(
        launcher.stderr(),
        format!(
            "piper-launch: error: name in use: node 'pong' is already running as pid {} ({})\n",
            std::process::id(),
            dir.join("piper-pong").display()
        )
    );
    drop(squatter);
    std::fs::remove_file(dir.join("piper-pong")).unwrap();
    assert_all_gone(&dir, Duration::ZERO);
    // A launcher holds its nodes' names: a second one, or a node started
    // by hand, is told that the pid it names is a launcher's.
    let mut first = launch(&dir, &["--nodes", "ping,pong", "--interval", "100"]);
    wait_ready(&first);
    let mut second = launch(&dir, &["--nodes", "pong,other"]);
    assert_eq!(second.code(PROMPT), Some(3));
    let held = format!(
        "name in use: node 'pong' is held by a running piper-launch, pid {} ({})\n",
        first.pid(),
        dir.join("piper-pong").display()
    );
    assert_eq!(second.stderr(), format!("piper-launch: error: {held}"));
    let mut node = Proc::spawn(&dir, "node", node_cmd(&dir, "pong", &[]));
    assert_eq!(node.code(PROMPT), Some(3));
    assert_eq!(node.stderr(), format!("piper-node[pong]: error: {held}"));
    first.signal(Signal::SIGTERM);
    assert_eq!(first.code(PROMPT), Some(0));
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn relayed_lines_are_shown_whole_and_a_last_line_without_newline_too() {
    let dir = Dir::new("launch-half");
    // b, the foreground, ends the run when it exits: each node exits only
    // once both have written every piece, whichever started first.
    let done = dir.aux("done");
    std::fs::create_dir_all(&done).unwrap();
    let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/fake/node.py");
    let mut cmd = launch_cmd(&dir, &["--nodes", "a,b", "--prefix", "--output", "all"]);
    cmd.args(["--node-bin", fake])
        .env("FAKE_MODE", "half-lines")
        .env("FAKE_DONE", &done)
        .env("FAKE_NODES", "2");
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert_eq!(launcher.code(PROMPT), Some(0), "{}", launcher.stderr());
    let mut lines = launcher.lines();
    lines.sort();
    assert_eq!(
        lines,
        ["a | half a line", "a | last words", "b | half a line", "b | last words"]
    );
    assert_all_gone(&dir, Duration::from_secs(2));
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
            assert_eq!(launcher.code(PROMPT), Some(0));
        }
        assert_all_gone(&dir, Duration::ZERO);
    }
}

/// A small, seedable generator, so that "random" moments are the same in
/// every run unless PIPER_FAULT_SEED says otherwise.
fn moments(n: usize, lo: u64, hi: u64) -> Vec<Duration> {
    let mut x: u64 = std::env::var("PIPER_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(lo + x % (hi - lo).max(1))
        })
        .collect()
}

#[test]
fn sigint_at_any_moment_of_a_big_launch_tears_down_at_once() {
    for (round, after) in moments(6, 100, 400).into_iter().enumerate() {
        let dir = Dir::new("launch-interrupt");
        // A grace period far beyond any honest teardown: a node that
        // swallowed SIGTERM between fork and exec would hold it all.
        let mut launcher = launch(&dir, &["--nodes", "1000", "--quiet", "--grace", "60"]);
        std::thread::sleep(after);
        let sent = Instant::now();
        launcher.signal(Signal::SIGINT);
        assert_eq!(
            launcher.code(PROMPT),
            Some(130),
            "round {round}, SIGINT after {after:?}"
        );
        let took = sent.elapsed();
        // Some 0.2 s alone, up to 2 s beside the other tests of a debug run.
        assert!(took < Duration::from_secs(5), "round {round}: teardown took {took:?}");
        assert!(!launcher.stderr().contains("ignored SIGTERM"), "round {round}");
        assert_all_gone(&dir, Duration::from_secs(2));
    }
}

#[test]
fn a_fork_that_fails_midway_tears_down_what_started() {
    if !may_run(Needs::Root("to put the launcher in a pids cgroup")) {
        return;
    }
    let cgroup = std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/piper-test-{}", std::process::id()));
    if !cgroup.parent().unwrap().join("cgroup.procs").exists() {
        // cgroup v2 only: the pids controller lives in the unified tree.
        panic!("no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids on this machine");
    }
    std::fs::create_dir(&cgroup).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _remove = Remove(cgroup.clone());
    std::fs::write(cgroup.join("pids.max"), "40").unwrap();
    let dir = Dir::new("launch-forkfail");
    let mut cmd = launch_cmd(&dir, &["--nodes", "100", "--quiet"]);
    let procs = cgroup.join("cgroup.procs");
    // SAFETY: the closure only writes a file, as the child, before exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let started = Instant::now();
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}: {err}",
        started.elapsed()
    );
    assert!(
        err.contains("error: cannot start node 'node")
            && err.contains(&format!("clone: {}", nix::errno::Errno::EAGAIN.desc())),
        "{err}"
    );
    assert!(!err.contains("ignored SIGTERM"), "{err}");
    assert_all_gone(&dir, Duration::from_secs(2));
}

#[test]
fn readiness_survives_a_launcher_that_is_stopped_while_nodes_start() {
    let dir = Dir::new("launch-stopped");
    let mut launcher = launch(
        &dir,
        &["--nodes", "300", "--quiet", "--count", "300", "--ready-timeout", "20"],
    );
    std::thread::sleep(Duration::from_millis(50));
    launcher.signal(Signal::SIGSTOP);
    // Meanwhile its notify queue (10 deep) overflows with READY=1.
    std::thread::sleep(Duration::from_millis(2500));
    launcher.signal(Signal::SIGCONT);
    assert_eq!(launcher.code(Duration::from_secs(60)), Some(0));
    assert!(launcher.stderr().contains("300 nodes ready in"));
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn kill_9_of_a_stopped_launcher_leaves_no_node_and_no_file() {
    // Ctrl-Z, then `kill -9 %1`: the stopped nodes get the parent-death
    // SIGTERM and, their group orphaned, the kernel's SIGHUP (and
    // SIGCONT). Two signals at once: the second's exit at once must still
    // remove what the dead launcher held for them.
    let dir = Dir::new("launch-tstp-kill");
    let mut launcher = launch(&dir, &["--nodes", "ping,pong", "--interval", "5"]);
    wait_ready(&launcher);
    let nodes = ["ping", "pong"].map(|n| node_pid(&dir, n));
    launcher.signal(Signal::SIGTSTP);
    let everyone: Vec<Pid> = nodes.iter().copied().chain([launcher.pid()]).collect();
    assert!(
        wait_until(PROMPT, || everyone.iter().all(|&p| state(p) == 'T')),
        "not all stopped"
    );
    launcher.signal(Signal::SIGKILL);
    assert_eq!(launcher.code(PROMPT), Some(137));
    assert!(wait_until(PROMPT, || nodes.iter().all(|&p| !running(p))), "nodes left");
    assert!(wait_until(PROMPT, || dir.entries().is_empty()), "{:?}", dir.entries());
}

#[test]
fn ctrl_z_pauses_the_whole_ring_and_fg_resumes_it() {
    let dir = Dir::new("launch-tstp");
    let mut launcher = launch(&dir, &["--nodes", "a,b,c", "--interval", "5"]);
    wait_ready(&launcher);
    let nodes = ["a", "b", "c"].map(|n| node_pid(&dir, n));
    launcher.signal(Signal::SIGTSTP);
    let stopped = |pids: &[Pid]| pids.iter().all(|&p| state(p) == 'T');
    let everyone: Vec<Pid> = nodes.iter().copied().chain([launcher.pid()]).collect();
    assert!(wait_until(PROMPT, || stopped(&everyone)), "not all stopped");
    let lines = launcher.lines().len();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(launcher.lines().len(), lines, "a paused ring prints nothing");
    launcher.signal(Signal::SIGCONT);
    assert!(
        wait_until(PROMPT, || everyone.iter().all(|&p| state(p) != 'T')),
        "not all resumed"
    );
    assert!(
        wait_until(PROMPT, || launcher.lines().len() > lines + 5),
        "the chain goes on"
    );
    // A stop nobody can catch (SIGSTOP, here to the launcher and to b, as
    // `kill -STOP` or a debugger would) ends the same way: SIGCONT to the
    // launcher continues the whole ring.
    launcher.signal(Signal::SIGSTOP);
    nix::sys::signal::kill(nodes[1], Signal::SIGSTOP).unwrap();
    let both = [launcher.pid(), nodes[1]];
    assert!(wait_until(PROMPT, || stopped(&both)), "not stopped");
    launcher.signal(Signal::SIGCONT);
    assert!(
        wait_until(PROMPT, || everyone.iter().all(|&p| state(p) != 'T')),
        "b not continued with the launcher"
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_all_gone(&dir, Duration::ZERO);
}

#[test]
fn names_that_look_like_options_and_non_utf8_directories_work() {
    use std::os::unix::ffi::OsStrExt;
    let dir = Dir::new("launch-odd");
    for nodes in ["--nodes=-x,y", "--nodes=a,--version"] {
        let mut launcher = launch(&dir, &[nodes, "--count", "5", "--output", "foreground"]);
        assert_eq!(launcher.code(PROMPT), Some(0), "{nodes}");
        let (first, last) = nodes["--nodes=".len()..].split_once(',').unwrap();
        assert_eq!(launcher.lines(), vec![format!("{last} received: '{first}'"); 5]);
    }
    let odd = dir.aux("").join(std::ffi::OsStr::from_bytes(b"bad\xffdir"));
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.arg("--dir").arg(&odd).args(["--nodes", "a,b", "--count", "5"]);
    let mut launcher = Proc::spawn(&dir, "odd", cmd);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let made: Vec<_> = std::fs::read_dir(dir.aux(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made, std::slice::from_ref(&odd), "one directory, the one named");
    assert_eq!(std::fs::read_dir(&odd).unwrap().count(), 0);
}

#[test]
fn launcher_usage_errors_are_exit_2_with_one_line() {
    let dir = Dir::new("launch-usage");
    let cases: &[(&[&str], &str)] = &[
        (&["--nodes", "99999999999999999999999"], "at most"),
        (&["--nodes", "1"], "a ring needs at least two nodes"),
        (&["--nodes", "solo"], "a ring needs at least two nodes"),
        (&["--nodes", "a,b", "--count", "0"], "--count"),
        (
            &["--nodes", "a,b", "--ready-timeout", "1e19"],
            "--ready-timeout 10000000000000000000",
        ),
        (&["--nodes", "a,b", "--grace", "1e19"], "--grace 10000000000000000000"),
        (&["--nodes", "a,b", "--grace=-1"], "--grace -1"),
        // The longest is a year, to the second.
        (
            &["--nodes", "a,b", "--grace", "31536001"],
            "--grace 31536001: give a number of seconds from 0 to 31536000\n",
        ),
        (&["--nodes", "a,a"], "names 'a' twice"),
        (&["--nodes", "a,a", "--ring-next", "b"], "names 'a' twice"),
        (
            &["--nodes", "a,b", "--ring-next", "a"],
            "--ring-next 'a' is one of the --nodes",
        ),
        (&["--nodes", "a", "--ring-next", "../x"], "invalid node name"),
        (
            &["--nodes", "a,b", "--restart-foreground"],
            "--restart-foreground restarts the foreground node as --restart says",
        ),
    ];
    for (args, message) in cases {
        let mut launcher = launch(&dir, args);
        assert_eq!(launcher.code(PROMPT), Some(2), "{args:?}");
        let err = launcher.stderr();
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert_all_gone(&dir, Duration::ZERO);
    let mut year = launch(&dir, &["--nodes", "a,b", "--count", "1", "--grace", "31536000"]);
    assert_eq!(
        year.code(PROMPT),
        Some(0),
        "a year's grace is allowed: {}",
        year.stderr()
    );
    assert_all_gone(&dir, Duration::from_secs(2));
}

#[test]
fn a_one_node_segment_closes_its_ring_through_ring_next() {
    let dir = Dir::new("launch-ring-next");
    // x lives outside the launcher (on another host, behind a bridge).
    let mut ready = piper_tests::Ready::new();
    let mut x = piper_tests::start_node(&dir, &mut ready, "x", "x", &["--next", "a1"]);
    let mut launcher = launch(&dir, &["--nodes", "a1", "--ring-next", "x", "--count", "10"]);
    assert_eq!(launcher.code(PROMPT), Some(0));
    // The chain starts with x's name sent to a1, which answers x.
    assert_eq!(launcher.lines(), vec!["a1 received: 'x'"; 10]);
    // a1 answered its tenth too: x has it, printed or about to be.
    assert!(wait_until(PROMPT, || x.lines().len() >= 10), "{:?}", x.lines());
    x.signal(Signal::SIGTERM);
    assert_eq!(x.code(PROMPT), Some(0));
    assert!((10..=11).contains(&x.summary().received), "{:?}", x.summary());
    assert_all_gone(&dir, PROMPT);
}

#[test]
fn a_ring_next_that_never_appears_ends_the_launch_after_the_ready_timeout() {
    let dir = Dir::new("launch-ring-next-missing");
    let mut launcher = launch(
        &dir,
        &["--nodes", "a1,a2", "--ring-next", "far", "--ready-timeout", "0.5"],
    );
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    assert!(err.contains("error: --ring-next 'far' is not reachable in"), "{err}");
    // Said once, not at every look.
    assert_eq!(err.matches("waiting for 'far' to close the ring").count(), 1, "{err}");
    assert_all_gone(&dir, PROMPT);
}

#[test]
fn abstract_directories_meet_whatever_their_spelling() {
    let dir = Dir::new("launch-spelling");
    let plain = dir.path().to_str().unwrap().to_string();
    let mut ready = piper_tests::Ready::new();
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["pong", "--abstract", "--dir"])
        .arg(format!("{plain}/./"))
        .env("NOTIFY_SOCKET", ready.address());
    let mut pong = Proc::spawn(&dir, "pong", cmd);
    assert!(ready.wait(pong.pid(), "READY=1", PROMPT));
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["ping", "--abstract", "--send", "pong", "--count", "3", "--dir"])
        .arg(format!("{plain}//sub/.."));
    let mut ping = Proc::spawn(&dir, "ping", cmd);
    assert_eq!(ping.code(PROMPT), Some(0));
    assert_eq!(ping.lines(), vec!["ping received: 'pong'"; 3]);
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
}

#[test]
fn logs_are_as_private_as_sockets() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("launch-logs");
    let logs = dir.aux("logs");
    let mut launcher = launch(
        &dir,
        &["--nodes", "a,b", "--count", "3", "--log-dir", logs.to_str().unwrap()],
    );
    assert_eq!(launcher.code(PROMPT), Some(0));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&logs), 0o700);
    assert_eq!(mode(&logs.join("a.log")), 0o600);
    assert!(std::fs::read_to_string(logs.join("a.log"))
        .unwrap()
        .contains("a received: 'b'"));
}

#[test]
fn teardown_messages_say_what_happened() {
    // --grace 0: no node "ignored" anything; SIGKILL is the plan.
    let dir = Dir::new("launch-grace0");
    let mut launcher = launch(&dir, &["--nodes", "20", "--quiet", "--grace", "0"]);
    wait_ready(&launcher);
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    assert!(!err.contains("ignored SIGTERM"), "{err}");
    assert!(err.contains("--grace 0: sending SIGKILL to 20 nodes"), "{err}");
    assert_all_gone(&dir, Duration::from_secs(2));
    // A busy ring torn down normally: stopping nodes do not warn about the
    // sends the teardown interrupts.
    let dir = Dir::new("launch-busy");
    let mut launcher = launch(&dir, &["--nodes", "20", "--quiet"]);
    wait_ready(&launcher);
    std::thread::sleep(Duration::from_millis(300));
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    assert!(!err.contains("cannot send") && !err.contains("Interrupted"), "{err}");
    assert_all_gone(&dir, Duration::from_secs(2));
}

/// The open descriptors of `pid`: number and what it is (`socket:[…]`,
/// `pipe:[…]`, a path), with the access mode from fdinfo.
fn descriptors(pid: Pid) -> Vec<(i32, String, u32)> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<(i32, String, u32)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| {
            let fd: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let what = std::fs::read_link(format!("{dir}/{fd}")).ok()?;
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
            let flags = u32::from_str_radix(flags, 8).ok()?;
            Some((
                fd,
                what.to_string_lossy().into_owned(),
                flags & nix::libc::O_ACCMODE as u32,
            ))
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn each_node_holds_its_four_descriptors_and_the_launcher_no_node_s_pipe_end() {
    let dir = Dir::new("launch-fds");
    // --prefix relays every node's lines through a pipe per node. The
    // launcher inherits a descriptor without close-on-exec, as under make's
    // jobserver: it must not reach the nodes either.
    let (stray, _stray_write) = nix::unistd::pipe().unwrap();
    let mut cmd = launch_cmd(&dir, &["--nodes", "40", "--no-start", "--prefix"]);
    let stray_fd = stray.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; it gives the launcher fd 9 without
    // close-on-exec, and the test's own descriptor keeps its flag.
    unsafe {
        cmd.pre_exec(move || match nix::libc::dup2(stray_fd, 9) {
            9 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    wait_ready(&launcher);
    let launcher_fds = descriptors(launcher.pid());
    // Nodes share notify sockets, at most half a queue's worth each.
    let qlen: usize =
        std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen").map_or(10, |s| s.trim().parse().unwrap());
    let per = (qlen / 2).max(1);
    for k in [1, 2, 20, 39, 40] {
        let pid = node_pid(&dir, &format!("node{k}"));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let notify = environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(b"NOTIFY_SOCKET="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("NOTIFY_SOCKET");
        let socket: usize = notify.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(socket, (k - 1) / per, "node{k}: {notify}");
        // The foreground alone ignores SIGTTOU: it may write to a terminal
        // from outside the terminal's foreground group even under tostop.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ignored = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim();
        let ignored = u64::from_str_radix(ignored, 16).unwrap();
        let ttou = 1u64 << (Signal::SIGTTOU as i32 - 1);
        assert_eq!(ignored & ttou != 0, k == 40, "node{k}: SigIgn {ignored:x}");
        let fds = descriptors(pid);
        // 0 to 3 from the launcher; then the node's own: its notifier's
        // socket and its signal pipe. Nothing else of the launcher's (the
        // other nodes' sockets) came along.
        let numbers: Vec<i32> = fds.iter().map(|f| f.0).collect();
        assert_eq!(numbers, [0, 1, 2, 3, 4, 5, 6], "node{k}: {fds:?}");
        assert!(fds[3].1.starts_with("socket:"), "node{k}: {fds:?}");
        assert!(
            fds[1].1.starts_with("pipe:"),
            "node{k}'s stdout is its relay pipe: {fds:?}"
        );
        // fd 2 is /dev/null, or for the foreground the launcher's stderr
        // itself: on a file there is no status line to keep clear of it.
        let launcher_err = &launcher_fds.iter().find(|f| f.0 == 2).expect("launcher's fd 2").1;
        let want = if k == 40 { launcher_err.as_str() } else { "/dev/null" };
        assert_eq!(fds[2].1, want, "node{k}'s stderr: {fds:?}");
        let kinds = |prefix: &str| fds.iter().filter(|f| f.0 != 2 && f.1.starts_with(prefix)).count();
        assert_eq!(
            (kinds("/dev/null"), kinds("socket:"), kinds("pipe:")),
            (1, 2, 3),
            "node{k}: {fds:?}"
        );
        // The launcher holds the read end of that pipe, and not the write
        // end, which would keep a dead node's pipe from ever ending.
        let ends: Vec<u32> = launcher_fds.iter().filter(|f| f.1 == fds[1].1).map(|f| f.2).collect();
        assert_eq!(
            ends,
            [nix::libc::O_RDONLY as u32],
            "node{k}'s relay in the launcher: {launcher_fds:?}"
        );
    }
    assert!(
        launcher_fds.iter().any(|f| f.0 == 9),
        "the launcher has the stray: {launcher_fds:?}"
    );
    // Its own: one socket per node, and a few more.
    let sockets = launcher_fds.iter().filter(|f| f.1.starts_with("socket:")).count();
    assert!((40..60).contains(&sockets), "{sockets} sockets: {launcher_fds:?}");
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(PROMPT), Some(130));
    assert_all_gone(&dir, Duration::from_secs(2));
}

#[test]
fn without_a_relay_the_shown_node_writes_to_the_launchers_own_stdout() {
    let dir = Dir::new("launch-direct");
    let mut launcher = launch(&dir, &["--nodes", "a,b", "--no-start", "--output", "foreground"]);
    wait_ready(&launcher);
    let target = |fds: &[(i32, String, u32)], fd: i32| fds.iter().find(|f| f.0 == fd).map(|f| f.1.clone());
    let launcher_fds = descriptors(launcher.pid());
    let (a, b) = (descriptors(node_pid(&dir, "a")), descriptors(node_pid(&dir, "b")));
    assert_eq!(target(&b, 1), target(&launcher_fds, 1), "b, the foreground: {b:?}");
    assert_eq!(target(&a, 1).as_deref(), Some("/dev/null"), "a, not shown: {a:?}");
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(PROMPT), Some(130));
    assert_all_gone(&dir, Duration::from_secs(2));
}

#[test]
fn a_big_launch_raises_its_own_open_file_limit() {
    // A user's usual soft limit is 1024 descriptors; a thousand nodes need
    // more than two each in the launcher.
    let dir = Dir::new("launch-nofile");
    let mut cmd = launch_cmd(&dir, &["--nodes", "1000", "--no-start", "--quiet"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs before exec.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
            setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard)?;
            Ok(())
        });
    }
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert!(
        wait_until(Duration::from_secs(60), || launcher
            .stderr()
            .contains("1000 nodes ready in")
            || launcher.code(Duration::ZERO).is_some()),
        "{}",
        launcher.stderr()
    );
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(PROMPT), Some(130), "{}", launcher.stderr());
    assert!(
        launcher.stderr().contains("1000 nodes ready in"),
        "{}",
        launcher.stderr()
    );
    assert_all_gone(&dir, Duration::from_secs(5));
}

#[test]
fn nodes_start_with_every_signal_at_its_default_and_none_blocked() {
    // A node in C or shell must get SIGPIPE (Rust ignores it in the
    // launcher), and nothing the launcher's own caller ignored or blocked.
    // The stand-in node execs `sleep 61` (node a) or `sleep 62` (node b),
    // which keeps the signal state it was given; the test reads it.
    let dir = Dir::new("launch-sigdfl");
    let script = dir.aux("node.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nfor name; do :; done\ncase $name in a) exec sleep 61;; *) exec sleep 62;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = launch_cmd(&dir, &["--nodes", "a,b", "--node-bin", script.to_str().unwrap()]);
    // SAFETY: signal and sigprocmask are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{signal, SigHandler, SigSet, SigmaskHow};
            signal(Signal::SIGUSR1, SigHandler::SigIgn)?;
            let mut usr2 = SigSet::empty();
            usr2.add(Signal::SIGUSR2);
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&usr2), None)?;
            Ok(())
        });
    }
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    let children = format!("/proc/{0}/task/{0}/children", launcher.pid());
    let read = |path: String| std::fs::read(path).unwrap_or_default();
    let mut state: Vec<(Vec<u8>, String)> = Vec::new();
    assert!(wait_until(PROMPT, || {
        let pids = String::from_utf8(read(children.clone())).unwrap_or_default();
        state = pids
            .split_whitespace()
            .map(|pid| {
                let status = String::from_utf8(read(format!("/proc/{pid}/status"))).unwrap_or_default();
                let sig = status
                    .lines()
                    .filter(|l| l.starts_with("SigBlk") || l.starts_with("SigIgn"));
                (read(format!("/proc/{pid}/cmdline")), sig.collect::<Vec<_>>().join(" "))
            })
            .filter(|(cmdline, _)| cmdline.starts_with(b"sleep\0"))
            .collect();
        state.sort();
        state.len() == 2
    }));
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(PROMPT), Some(130), "{}", launcher.stderr());
    assert_eq!(state[0].0, b"sleep\x0061\0");
    assert_eq!(state[0].1, "SigBlk:\t0000000000000000 SigIgn:\t0000000000000000");
    // The foreground node alone ignores SIGTTOU, to write to a terminal
    // whose foreground group it is not in.
    assert_eq!(state[1].1, "SigBlk:\t0000000000000000 SigIgn:\t0000000000200000");
}

/// Kills (SIGKILL) every process that mentions the test's directory when
/// dropped: a node stopped before its exec ignores the teardown's SIGTERM.
struct KillLeftovers<'a>(&'a Dir);

impl Drop for KillLeftovers<'_> {
    fn drop(&mut self) {
        for pid in self.0.processes() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn ctrl_z_at_any_moment_of_a_big_launch_in_a_terminal_never_hangs_it() {
    // A Ctrl-Z reaches the terminal's foreground group, which a node just
    // cloned is still in until its setpgid: the stop must not stay pending
    // in it, to stop it before its exec, with the launcher waiting on that
    // exec for good (state D) and `fg` unable to reach it.
    for (round, after) in moments(8, 0, 400).into_iter().enumerate() {
        let dir = Dir::new("launch-ctrlz");
        let _leftovers = KillLeftovers(&dir);
        let pty = nix::pty::openpty(None, None).unwrap();
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).unwrap();
        }
        let mut ready = piper_tests::Ready::new();
        let mut cmd = launch_cmd(&dir, &["--nodes", "1000", "--quiet", "--ready-timeout", "60"]);
        cmd.env("NOTIFY_SOCKET", ready.address());
        let slave = pty.slave.as_raw_fd();
        // SAFETY: setsid, dup2 and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // A session of its own, on the terminal as its foreground
                // group and its stdin, as a shell's job is.
                nix::unistd::setsid()?;
                if nix::libc::dup2(slave, 0) < 0 || nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut launcher = Proc::spawn(&dir, "launch", cmd);
        // Into the phase that clones, once the sockets are bound.
        let children = format!("/proc/{0}/task/{0}/children", launcher.pid());
        assert!(wait_until(PROMPT, || std::fs::read(&children).is_ok_and(|c| !c.is_empty())));
        std::thread::sleep(after);
        // Ctrl-Z, typed.
        nix::unistd::write(&pty.master, &[0x1a]).unwrap();
        // The launcher stops the ring and itself (unless the launch was
        // already over and its stop came first: it is then stopped too).
        let stopped = wait_until(PROMPT, || state(launcher.pid()) == 'T');
        let what = format!("round {round}, Ctrl-Z after {after:?}");
        assert!(
            stopped,
            "{what}: the launcher never stopped (state {})",
            state(launcher.pid())
        );
        // `fg`: SIGCONT to its group.
        nix::sys::signal::killpg(launcher.pid(), Signal::SIGCONT).unwrap();
        assert!(
            ready.wait(launcher.pid(), "READY=1", Duration::from_secs(60)),
            "{what}: the launch never ended: {}",
            launcher.stderr()
        );
        launcher.signal(Signal::SIGINT);
        assert_eq!(launcher.code(PROMPT), Some(130), "{what}");
        assert_all_gone(&dir, PROMPT);
    }
}

#[test]
fn sigint_while_the_sockets_are_bound_stops_the_binding() {
    // Binding a thousand names takes about a second on a disk; Ctrl-C must
    // not wait for the last of them. (They are bound while the nodes
    // start, the first ones first.)
    let dir = Dir::new("launch-bind-interrupt");
    let mut cmd = launch_cmd(&dir, &["--nodes", "1000", "--quiet"]);
    cmd.env("RUST_LOG", "piper_launch=debug");
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert!(wait_until(PROMPT, || dir.join("piper-node1").exists()));
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(PROMPT), Some(130), "{}", launcher.stderr());
    let err = launcher.stderr();
    let bound: usize = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("piper-launch: debug: bound ")?
                .strip_suffix(" of 1000 sockets")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no 'bound N of 1000 sockets' line:\n{err}"));
    assert!(bound < 1000, "all {bound} sockets were bound after the SIGINT");
    let summary = err
        .lines()
        .find(|l| l.starts_with("piper-launch: ring of 1000: received 0, sent 0, dropped 0;"));
    assert!(summary.is_some_and(|l| l.contains(" not running")), "{err}");
    assert_all_gone(&dir, PROMPT);
}
