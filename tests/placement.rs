//! Where a ring's nodes run: `--cpus` on the launcher, `--cpu` on a node.

use std::process::Command;

use nix::sys::signal::Signal;
use piper_tests::{bin, launch_cmd, node_cmd, node_pid, wait_until, Dir, Proc, Ready, PROMPT};

/// The CPUs `pid` may run on, as `/proc/PID/status` lists them.
fn cpus_of(pid: nix::unistd::Pid) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"));
    list.unwrap_or_default().trim().to_string()
}

fn two_cpus() -> bool {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        eprintln!("placement: one CPU here, nothing to place apart");
    }
    n >= 2
}

fn nodes_cpus(dir: &Dir, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| cpus_of(node_pid(dir, n, PROMPT).unwrap_or_else(|| panic!("{n} runs"))))
        .collect()
}

#[test]
fn each_policy_places_the_nodes_before_they_run() {
    let everywhere = {
        let mut ready = Ready::new();
        let dir = Dir::new("place-free");
        let mut node = piper_tests::start_node(&dir, &mut ready, "free", "free", &[]);
        let cpus = cpus_of(node.pid());
        node.signal(Signal::SIGTERM);
        node.code(PROMPT);
        cpus
    };
    let cases: &[(&str, Option<[&str; 3]>)] = &[
        ("0", Some(["0", "0", "0"])),
        ("none", None),
        ("spread", Some(["0", "1", "0"])),
    ];
    for (policy, want) in cases {
        if want.is_some_and(|w| w.contains(&"1")) && !two_cpus() {
            continue;
        }
        let dir = Dir::new("place-policy");
        let mut launcher = Proc::spawn(
            &dir,
            "launch",
            launch_cmd(&dir, &["--nodes", "a,b,c", "--interval", "50", "--cpus", policy]),
        );
        assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
        let got = nodes_cpus(&dir, &["a", "b", "c"]);
        match want {
            Some(want) => assert_eq!(got, want, "--cpus {policy}"),
            None => assert!(got.iter().all(|c| *c == everywhere), "--cpus none: {got:?}"),
        }
        launcher.signal(Signal::SIGTERM);
        assert_eq!(launcher.code(PROMPT), Some(0));
    }
    // The default packs every node onto one CPU.
    let dir = Dir::new("place-auto");
    let mut launcher = Proc::spawn(
        &dir,
        "launch",
        launch_cmd(&dir, &["--nodes", "a,b,c", "--interval", "50"]),
    );
    assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
    let got = nodes_cpus(&dir, &["a", "b", "c"]);
    assert!(
        got.iter().all(|c| *c == got[0] && c.parse::<usize>().is_ok()),
        "{got:?}"
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn auto_moves_a_packed_ring_off_a_cpu_that_turns_busy() {
    if !two_cpus() || !piper_tests::may_run(piper_tests::Needs::Tool("taskset")) {
        return;
    }
    let dir = Dir::new("place-move");
    let mut launcher = Proc::spawn(&dir, "launch", launch_cmd(&dir, &["--nodes", "4", "--quiet"]));
    assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
    let packed = cpus_of(node_pid(&dir, "node1", PROMPT).unwrap());
    // A busy loop on the ring's CPU.
    let mut hog = Command::new("taskset");
    hog.args(["-c", &packed, "sh", "-c", "while :; do :; done"]);
    let _hog = Proc::spawn(&dir, "hog", hog);
    // It moves to a CPU that is mostly idle, or, when none is (the other
    // tests of this file may be running rings there), unpacks: either
    // way, off the busy CPU.
    let moved = format!("CPU {packed}: moving the ring to CPU ");
    let unpacked = format!("CPU {packed}, and no CPU is idle: leaving the ring to the scheduler");
    let acted = wait_until(PROMPT, || {
        let err = launcher.stderr();
        err.contains(&moved) || err.contains(&unpacked)
    });
    assert!(acted, "the ring stayed on CPU {packed}");
    let now = nodes_cpus(&dir, &["node1", "node2", "node3", "node4"]);
    let everywhere = cpus_of(nix::unistd::getpid());
    if launcher.stderr().contains(&moved) {
        assert!(now.iter().all(|c| *c != packed && *c == now[0]), "{now:?}");
    } else {
        assert!(now.iter().all(|c| *c == everywhere), "{now:?} vs {everywhere}");
    }
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn a_node_started_by_hand_runs_where_cpu_says() {
    let dir = Dir::new("place-node");
    let mut ready = Ready::new();
    let mut node = piper_tests::start_node(&dir, &mut ready, "n", "n", &["--cpu", "0"]);
    assert_eq!(cpus_of(node.pid()), "0");
    node.signal(Signal::SIGTERM);
    assert_eq!(node.code(PROMPT), Some(0));
    let mut bad = Proc::spawn(&dir, "bad", node_cmd(&dir, "m", &["--cpu", "4095"]));
    assert_eq!(bad.code(PROMPT), Some(2));
    assert!(
        bad.stderr().contains("--cpu 4095: not a CPU this process may use"),
        "{}",
        bad.stderr()
    );
    let mut bad = Proc::spawn(&dir, "badlist", {
        let mut c = Command::new(bin("piper-launch"));
        c.args(["--nodes", "a,b", "--cpus", "1000"])
            .arg("--dir")
            .arg(dir.path());
        c
    });
    assert_eq!(bad.code(PROMPT), Some(2));
    assert!(
        bad.stderr()
            .contains("--cpus: CPU 1000 is not one this process may use"),
        "{}",
        bad.stderr()
    );
}
