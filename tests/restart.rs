//! A ring that heals: the launcher restarts dead nodes on the sockets it
//! holds for them, so what was queued to a dead node is answered by its
//! successor, and a message that died with a node is sent again.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use piper_tests::{cpu_ticks, launch_cmd, node_pid, running, wait_until, Dir, Proc, PROMPT};

fn launch(dir: &Dir, args: &[&str]) -> Proc {
    Proc::spawn(dir, "launch", launch_cmd(dir, args))
}

fn wait_ready(launcher: &Proc) {
    assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
}

/// The live pid of `name`, different from `old` (its predecessor).
fn successor(dir: &Dir, name: &str, old: Pid, bound: Duration) -> Option<Pid> {
    let mut pid = None;
    wait_until(bound, || {
        pid = node_pid(dir, name, Duration::ZERO).filter(|&p| p != old);
        pid.is_some()
    });
    pid
}

/// The foreground's count of message lines so far.
fn lines_of(launcher: &Proc, name: &str) -> usize {
    let prefix = format!("{name} received: ");
    launcher.lines().iter().filter(|l| l.starts_with(&prefix)).count()
}

#[test]
fn a_killed_node_is_back_within_the_delay_and_the_chain_goes_on() {
    for nodes in ["2", "30"] {
        let dir = Dir::new("restart-back");
        let args = [
            "--nodes",
            nodes,
            "--interval",
            "5",
            "--restart",
            "on-failure",
            "--output",
            "foreground",
        ];
        let mut launcher = launch(&dir, &args);
        wait_ready(&launcher);
        let fg = format!("node{nodes}");
        let victim = "node1";
        let old = node_pid(&dir, victim, PROMPT).expect("node1 runs");
        kill(old, Signal::SIGKILL).unwrap();
        // When it comes back (--restart-delay) is the supervisor's decision,
        // unit-tested with a moving clock (a_dead_node_is_started_again_
        // after_the_delay); here, that it does.
        let new = successor(&dir, victim, old, PROMPT).expect("node1 is back");
        let before = lines_of(&launcher, &fg);
        assert!(
            wait_until(PROMPT, || lines_of(&launcher, &fg) > before + 3),
            "{nodes} nodes: the chain stopped"
        );
        assert!(running(new));
        let err = launcher.stderr();
        assert!(
            err.contains(&format!(
                "node '{victim}' (pid {old}) was killed by SIGKILL; restarting it (restart 1)"
            )),
            "{err}"
        );
        launcher.signal(Signal::SIGTERM);
        assert_eq!(launcher.code(PROMPT), Some(0));
        assert!(launcher.stderr().contains("; 1 restarts, "), "{}", launcher.stderr());
        assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new());
        assert_eq!(dir.entries(), Vec::<String>::new());
    }
}

#[test]
fn what_was_sent_to_a_dead_node_is_answered_by_its_successor() {
    let dir = Dir::new("restart-queue");
    let args = [
        "--nodes",
        "a,b",
        "--restart",
        "always",
        "--restart-delay",
        "1",
        "--interval",
        "20",
    ];
    let mut launcher = launch(&dir, &args);
    wait_ready(&launcher);
    let old = node_pid(&dir, "a", PROMPT).expect("a runs");
    kill(old, Signal::SIGKILL).unwrap();
    assert!(wait_until(PROMPT, || launcher.stderr().contains("restarting it")));
    // a is dead for a second: these wait in the queue of the socket the
    // launcher holds for it, and its successor reads every one.
    let sender = UnixDatagram::unbound().unwrap();
    for _ in 0..5 {
        sender.send_to(b"tester", dir.join("piper-a")).unwrap();
    }
    assert!(node_pid(&dir, "a", Duration::ZERO).is_none_or(|p| p == old && !running(p)));
    let answered = |l: &Proc| l.lines().iter().filter(|l| *l == "a received: 'tester'").count();
    assert!(
        wait_until(PROMPT, || answered(&launcher) == 5),
        "{} of 5",
        answered(&launcher)
    );
    assert!(successor(&dir, "a", old, Duration::ZERO).is_some());
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_eq!(answered(&launcher), 5, "each answered once");
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn chaos_200_kills_and_the_ring_still_runs_with_one_message() {
    let dir = Dir::new("restart-chaos");
    let args = [
        "--nodes",
        "30",
        "--output",
        "foreground",
        "--restart",
        "on-failure",
        "--restart-burst",
        "1000",
        "--restart-delay",
        "0.05",
        "--json",
    ];
    let mut launcher = launch(&dir, &args);
    wait_ready(&launcher);
    let mut x: u64 = std::env::var("PIPER_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_ef01);
    let mut next = |below: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below
    };
    let mut kills = 0;
    for round in 0..200 {
        let name = format!("node{}", 1 + next(29));
        let pid = node_pid(&dir, &name, PROMPT).unwrap_or_else(|| panic!("round {round}: {name} is not back"));
        kill(pid, Signal::SIGKILL).unwrap();
        kills += 1;
        // Gone before the next round looks: a victim not yet scheduled to
        // die still looks alive, and would be killed (and counted) twice.
        assert!(
            wait_until(PROMPT, || !running(pid)),
            "round {round}: {name} survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(next(40)));
    }
    // Every node alive again, each once.
    for k in 1..=30 {
        assert!(
            node_pid(&dir, &format!("node{k}"), PROMPT).is_some(),
            "node{k} is not back"
        );
    }
    let alive = || dir.processes().len();
    assert!(wait_until(PROMPT, || alive() == 31), "{} processes", alive());
    // The chain still runs: the foreground keeps receiving, after a
    // re-injection if the last kill took the message with it.
    let before = lines_of(&launcher, "node30");
    assert!(
        wait_until(Duration::from_secs(20), || lines_of(&launcher, "node30") > before + 100),
        "the chain stopped"
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    let summary = err.lines().last().unwrap();
    let number = |key: &str| -> u64 {
        let rest = summary.split(&format!("\"{key}\":")).nth(1).unwrap();
        rest.split([',', '}']).next().unwrap().parse().unwrap()
    };
    let (restarts, reinjected, received) = (number("restarts"), number("reinjected"), number("received"));
    assert_eq!(restarts, kills, "every kill was restarted");
    let logged = err.lines().filter(|l| l.contains("again")).count() as u64;
    assert_eq!(logged, reinjected, "every re-injection is logged");
    assert!(received > 0);
    assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new(), "no orphan");
    assert_eq!(dir.entries(), Vec::<String>::new(), "no stray file");
    eprintln!("chaos: {kills} kills, {restarts} restarts, {reinjected} re-injections (messages lost and replaced), {received} received");
}

#[test]
fn a_node_that_dies_at_once_every_time_is_given_up() {
    let dir = Dir::new("restart-burst");
    let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/fake/node.py");
    let log = dir.aux("starts");
    let mut cmd = launch_cmd(
        &dir,
        &["--nodes", "a,b", "--restart", "on-failure", "--foreground", "b"],
    );
    cmd.args(["--node-bin", fake])
        .env("FAKE_MODE", "die-soon")
        .env("FAKE_LOG", &log);
    // b would die too: it is the foreground, whose death ends the run. So
    // only a dies here (its FAKE_MODE), b waits.
    cmd.env("FAKE_ONLY", "a");
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    let gave_up = "node 'a' (pid";
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains("giving it up")),
        "never given up"
    );
    let err = launcher.stderr();
    assert!(
        err.contains(gave_up) && err.contains("and was restarted 5 times in 10s: giving it up"),
        "{err}"
    );
    // The first start and five restarts, and then no more: no busy loop.
    let starts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "a")
            .count()
    };
    assert_eq!(starts(), 6);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(starts(), 6);
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert!(launcher.stderr().contains("1 given up"), "{}", launcher.stderr());
}

#[test]
fn a_restarted_nodes_counts_add_up_over_its_lives() {
    let dir = Dir::new("restart-counts");
    let args = [
        "--nodes",
        "a,b",
        "--interval",
        "5",
        "--restart",
        "always",
        "--output",
        "all",
        "--json",
    ];
    let mut launcher = launch(&dir, &args);
    wait_ready(&launcher);
    let old = node_pid(&dir, "a", PROMPT).expect("a runs");
    assert!(wait_until(PROMPT, || lines_of(&launcher, "a") >= 5));
    // A clean end: a's last counts reach the launcher, then a is back.
    kill(old, Signal::SIGTERM).unwrap();
    successor(&dir, "a", old, PROMPT).expect("a is back");
    let before = lines_of(&launcher, "a");
    assert!(wait_until(PROMPT, || lines_of(&launcher, "a") > before + 5));
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    // Every line a printed, in both lives, is in its count.
    let err = launcher.stderr();
    let json = err.lines().last().unwrap();
    let a = json.split("{\"name\":\"a\",").nth(1).expect("member a");
    let received: usize = a
        .split("\"received\":")
        .nth(1)
        .and_then(|s| s.split(',').next()?.parse().ok())
        .expect("a's received");
    assert_eq!(received, lines_of(&launcher, "a"), "{json}");
    assert!(a.contains("\"restarts\":1,"), "{json}");
}

#[test]
fn a_ring_launched_with_no_start_is_never_started_by_the_launcher_even_after_a_restart() {
    let dir = Dir::new("restart-no-start");
    let args = [
        "--nodes",
        "a,b",
        "--no-start",
        "--restart",
        "on-failure",
        "--output",
        "all",
    ];
    let mut launcher = launch(&dir, &args);
    wait_ready(&launcher);
    let old = node_pid(&dir, "a", PROMPT).expect("a runs");
    kill(old, Signal::SIGKILL).unwrap();
    successor(&dir, "a", old, PROMPT).expect("a is back");
    // That a launcher which did not start the ring never heals it is the
    // supervisor's policy (no healing: a_launcher_that_did_not_start_the_
    // ring_never_sends_its_chain); here, that --no-start reaches it.
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    assert!(!err.contains("starting the chain again"), "{err}");
    assert_eq!(launcher.lines(), Vec::<String>::new());
}

/// Launches the ring a, b, c, each node waiting 300 ms before it answers,
/// restarted on failure, every line shown; `extra` options after those.
fn slow_ring(dir: &Dir, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--nodes",
        "a,b,c",
        "--interval",
        "300",
        "--restart",
        "on-failure",
        "--output",
        "all",
    ];
    args.extend_from_slice(extra);
    let launcher = launch(dir, &args);
    wait_ready(&launcher);
    launcher
}

#[test]
fn a_message_lost_with_its_node_is_sent_again_after_the_silence() {
    let dir = Dir::new("restart-lost");
    let mut launcher = slow_ring(&dir, &[]);
    // A node prints its line, and waits --interval before it answers: once
    // a's line shows, a holds the message for most of 300 ms.
    let a = node_pid(&dir, "a", PROMPT).expect("a runs");
    assert!(wait_until(PROMPT, || lines_of(&launcher, "a") >= 1));
    kill(a, Signal::SIGKILL).unwrap();
    // c, stopped, holds up the chain that starts again at b: the ring is
    // silent once more, and must not be started a second time.
    let c = node_pid(&dir, "c", PROMPT).expect("c runs");
    kill(c, Signal::SIGSTOP).unwrap();
    let at_b = lines_of(&launcher, "b");
    let lines = launcher.lines().len();
    let cpu = cpu_ticks(launcher.pid());
    let heal = "since a node was restarted: starting the chain again";
    // Silent for --restart-delay + 2 × --interval + 2 s, looked at once a second.
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains(heal)),
        "{}",
        launcher.stderr()
    );
    // Meanwhile the launcher slept: it looks once a second, it never spins.
    let spent = cpu_ticks(launcher.pid()) - cpu;
    assert!(spent < 30, "{spent} ticks of CPU in a silence of about 3 s");
    // The chain starts again with a's name sent to b; b answers c, which
    // is stopped: silence again.
    assert!(
        wait_until(PROMPT, || lines_of(&launcher, "b") > at_b),
        "{:?}",
        launcher.lines()
    );
    // Once per silence, however long it lasts, is the supervisor's rule,
    // unit-tested with a moving clock; the summary below counts one.
    kill(c, Signal::SIGCONT).unwrap();
    assert!(
        wait_until(PROMPT, || launcher.lines().len() > lines + 3),
        "the chain goes on"
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    assert!(err.contains("; 1 restarts, 1 re-injected"), "{err}");
    assert_eq!(err.matches(heal).count(), 1, "{err}");
}

#[test]
fn the_foregrounds_end_ends_the_run_whatever_the_restart_policy() {
    let dir = Dir::new("restart-fg-end");
    let args = [
        "--nodes",
        "a,b",
        "--count",
        "5",
        "--restart",
        "always",
        "--output",
        "foreground",
    ];
    let mut launcher = launch(&dir, &args);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_eq!(launcher.lines(), vec!["b received: 'a'"; 5]);
    let err = launcher.stderr();
    assert!(!err.contains("warn"), "{err}");
    // The ring summary names restarts only when there were some.
    assert!(!err.contains("restarts"), "{err}");
}

#[test]
fn a_restart_in_a_ring_that_still_runs_adds_no_second_message() {
    let dir = Dir::new("restart-live");
    let mut launcher = slow_ring(&dir, &["--restart-delay", "3"]);
    // Once b's line shows, a has answered and holds nothing: b has the
    // message, which then waits in a's queue until a's successor starts,
    // 3 s after the kill: a silence of over 2 s, but shorter than the one
    // that starts the chain again (3 + 2 × 0.3 + 2 s).
    let a = node_pid(&dir, "a", PROMPT).expect("a runs");
    assert!(wait_until(PROMPT, || lines_of(&launcher, "b") >= 1));
    kill(a, Signal::SIGKILL).unwrap();
    let at_a = lines_of(&launcher, "a");
    successor(&dir, "a", a, PROMPT).expect("a is back");
    // The message went round through a's successor, and on.
    assert!(
        wait_until(PROMPT, || lines_of(&launcher, "a") > at_a + 1),
        "{:?}",
        launcher.lines()
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    assert!(err.contains("; 1 restarts, 0 re-injected"), "{err}");
    // One message, one line at a time: a, b, c, a, ... never two in a row
    // from the same node: b before the kill, c, then a, b, c, a after.
    let lines = launcher.lines();
    assert!(lines.len() >= 6, "{lines:?}");
    assert!(lines.windows(2).all(|w| w[0] != w[1]), "{lines:?}");
}

#[test]
fn a_node_waiting_for_its_restart_at_the_end_is_summed_up_as_not_running() {
    let dir = Dir::new("restart-waiting");
    let args = [
        "--nodes",
        "a,b,c",
        "--interval",
        "20",
        "--restart",
        "on-failure",
        "--restart-delay",
        "30",
        "--output",
        "foreground",
    ];
    let mut launcher = launch(&dir, &args);
    wait_ready(&launcher);
    let a = node_pid(&dir, "a", PROMPT).expect("a runs");
    kill(a, Signal::SIGKILL).unwrap();
    assert!(wait_until(PROMPT, || launcher.stderr().contains("restarting it")));
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    assert!(err.contains("; 1 not running, 2 exited 0; 1 restarts, "), "{err}");
}

#[test]
fn the_launcher_tells_its_manager_the_rings_counts_when_they_change() {
    let dir = Dir::new("restart-manager");
    let mut ready = piper_tests::Ready::new();
    let mut cmd = launch_cmd(&dir, &["--nodes", "a,b", "--interval", "100", "--quiet"]);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert!(ready.wait(launcher.pid(), "READY=1", PROMPT));
    // How often (once a second at most, only on change) is the
    // supervisor's, unit-tested with a moving clock; here, that the counts
    // reach the manager as they move.
    let pid = launcher.pid();
    let mut statuses: Vec<String> = Vec::new();
    let moving = wait_until(PROMPT, || {
        statuses = ready
            .messages(pid)
            .into_iter()
            .filter(|m| m.starts_with("STATUS=ring of 2: 2 alive, received "))
            .collect();
        statuses.len() >= 2
    });
    assert!(moving, "{statuses:?}");
    assert!(statuses.windows(2).all(|w| w[0] != w[1]), "{statuses:?}");
    launcher.signal(Signal::SIGTERM);
    assert!(ready.wait(launcher.pid(), "STOPPING=1", PROMPT));
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn the_launcher_tells_its_manager_the_counts_of_an_idle_ring_too() {
    // No status line, no restarts, no placement looks: only the manager
    // makes the launcher wake once a second.
    let dir = Dir::new("restart-manager-idle");
    let mut ready = piper_tests::Ready::new();
    let mut cmd = launch_cmd(
        &dir,
        &[
            "--nodes",
            "a,b",
            "--foreground",
            "a",
            "--no-start",
            "--cpus",
            "none",
            "--quiet",
        ],
    );
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert!(ready.wait(launcher.pid(), "READY=1", PROMPT));
    let idle = "STATUS=ring of 2: 2 alive, received 0, sent 0, dropped 0";
    assert!(
        ready.wait(launcher.pid(), idle, PROMPT),
        "{:?}",
        ready.messages(launcher.pid())
    );
    // b dies just after that report: the launcher learns it before its
    // next tick, and nothing happens after that.
    let b = node_pid(&dir, "b", PROMPT).expect("b runs");
    kill(b, Signal::SIGKILL).unwrap();
    let one = "STATUS=ring of 2: 1 alive, received 0, sent 0, dropped 0";
    assert!(
        ready.wait(launcher.pid(), one, PROMPT),
        "{:?}",
        ready.messages(launcher.pid())
    );
    launcher.signal(Signal::SIGTERM);
    assert!(ready.wait(launcher.pid(), "STOPPING=1", PROMPT));
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn a_ring_with_a_node_given_up_is_not_started_again_into_its_queue() {
    let dir = Dir::new("restart-given-up");
    let args = [
        "--nodes",
        "a,b,c",
        "--interval",
        "20",
        "--restart",
        "on-failure",
        "--restart-burst",
        "1",
        "--json",
    ];
    let mut launcher = launch(&dir, &args);
    wait_ready(&launcher);
    let first = node_pid(&dir, "b", PROMPT).expect("b runs");
    kill(first, Signal::SIGKILL).unwrap();
    let second = successor(&dir, "b", first, PROMPT).expect("b is back");
    kill(second, Signal::SIGKILL).unwrap();
    assert!(wait_until(PROMPT, || launcher.stderr().contains("giving it up")));
    // The ring falls silent: the message is in b's queue, or died with b.
    // Where it would start the chain again, the launcher says why not.
    let declined = "and node 'b' was given up: not starting the chain again";
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains(declined)),
        "{}",
        launcher.stderr()
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    assert!(!err.contains(": starting the chain again"), "{err}");
    assert_eq!(err.matches(declined).count(), 1, "said once: {err}");
    let summary = err.lines().last().unwrap();
    assert!(summary.contains("\"restarts\":1,\"reinjected\":0,"), "{summary}");
}
