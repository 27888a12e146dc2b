//! Where a ring's nodes run: `--cpus` on the launcher, `--cpu` on a node.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::Signal;
use piper_tests::{
    bin, cpu_ticks, launch_cmd, may_run, node_cmd, node_pid, wait_until, Dir, Needs, Proc, Ready, PROMPT,
};

/// One test of this file at a time: each reads or makes the CPUs' load,
/// which another's ring or hog would disturb.
fn serial() -> MutexGuard<'static, ()> {
    static CPUS: Mutex<()> = Mutex::new(());
    CPUS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A busy loop on `cpu`, running (it has used CPU time) when this returns.
fn hog(dir: &Dir, cpu: &str) -> Proc {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpu, "sh", "-c", "while :; do :; done"]);
    let hog = Proc::spawn(dir, "hog", cmd);
    assert!(wait_until(PROMPT, || cpu_ticks(hog.pid()) >= 5), "the hog never ran");
    hog
}

/// The CPUs `pid` may run on, as `/proc/PID/status` lists them.
fn cpus_of(pid: nix::unistd::Pid) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"));
    list.unwrap_or_default().trim().to_string()
}

/// Whether this test may run: `n` CPUs, and with `idle` every CPU idle
/// (auto decides by how busy the CPUs are, and rightly declines to pack
/// a ring onto a busy machine).
fn machine(n: usize, idle: bool) -> bool {
    may_run(Needs::Cpus(n))
        && (!idle || may_run(Needs::IdleCpus("for auto to judge the CPUs by this test's load alone")))
}

/// `launch_cmd` with placement's moves logged (they are debug lines).
fn launch_logged(dir: &Dir, args: &[&str]) -> Command {
    let mut cmd = launch_cmd(dir, args);
    cmd.env("RUST_LOG", "info,piper_launch::placement=debug");
    cmd
}

fn nodes_cpus(dir: &Dir, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| cpus_of(node_pid(dir, n, PROMPT).unwrap_or_else(|| panic!("{n} runs"))))
        .collect()
}

#[test]
fn each_policy_places_the_nodes_before_they_run() {
    let _cpus = serial();
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
        if want.is_some_and(|w| w.contains(&"1")) && !machine(2, false) {
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
    if !machine(1, true) {
        return;
    }
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
    let _cpus = serial();
    if !machine(2, true) || !may_run(Needs::Tool("taskset")) {
        return;
    }
    let dir = Dir::new("place-move");
    let mut launcher = Proc::spawn(&dir, "launch", launch_logged(&dir, &["--nodes", "4", "--quiet"]));
    assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
    let packed = cpus_of(node_pid(&dir, "node1", PROMPT).unwrap());
    let _hog = hog(&dir, &packed);
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
    // The launcher says so, then places each node: looked at until all
    // are placed (bounded), not once.
    let everywhere = cpus_of(nix::unistd::getpid());
    let mut now = Vec::new();
    let placed = wait_until(PROMPT, || {
        now = nodes_cpus(&dir, &["node1", "node2", "node3", "node4"]);
        match launcher.stderr().contains(&moved) {
            true => now.iter().all(|c| *c != packed && *c == now[0]),
            false => now.iter().all(|c| *c == everywhere),
        }
    });
    assert!(placed, "{now:?} (everywhere: {everywhere})");
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn auto_packs_the_ring_onto_the_least_busy_cpu() {
    let _cpus = serial();
    if !machine(2, true) || !may_run(Needs::Tool("taskset")) {
        return;
    }
    let cpus = piper_tests::allowed_cpus();
    // The first CPU busy, then the last: the ring goes where the hog is not.
    for busy in [cpus[0], cpus[cpus.len() - 1]] {
        let dir = Dir::new("place-least");
        let _hog = hog(&dir, &busy.to_string());
        let mut launcher = Proc::spawn(
            &dir,
            "launch",
            launch_cmd(&dir, &["--nodes", "a,b", "--interval", "50", "--quiet"]),
        );
        assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
        let got = nodes_cpus(&dir, &["a", "b"]);
        let packed: usize = got[0].parse().unwrap_or_else(|_| panic!("not packed: {got:?}"));
        assert!(packed != busy && got[1] == got[0], "hog on CPU {busy}, ring on {got:?}");
        launcher.signal(Signal::SIGTERM);
        assert_eq!(launcher.code(PROMPT), Some(0));
    }
}

#[test]
fn auto_leaves_a_busy_ring_packed_while_nothing_else_wants_its_cpu() {
    let _cpus = serial();
    if !machine(1, true) {
        return;
    }
    let dir = Dir::new("place-stay");
    // No --interval: the ring keeps its CPU busy by itself.
    let mut launcher = Proc::spawn(&dir, "launch", launch_logged(&dir, &["--nodes", "2", "--quiet"]));
    assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
    let packed = nodes_cpus(&dir, &["node1", "node2"]);
    assert!(
        packed[0].parse::<usize>().is_ok() && packed[1] == packed[0],
        "{packed:?}"
    );
    // A second of the ring's CPU time: ten looks at least, each finding
    // the CPU busy with the ring alone.
    let pids = ["node1", "node2"].map(|n| node_pid(&dir, n, PROMPT).unwrap());
    let ran = || pids.map(cpu_ticks).iter().sum::<u64>();
    let second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
    let start = ran();
    assert!(wait_until(PROMPT, || ran() >= start + second), "the ring did not run");
    let err = launcher.stderr();
    assert!(!err.contains("others took"), "{err}");
    assert_eq!(nodes_cpus(&dir, &["node1", "node2"]), packed);
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn auto_places_a_first_start_once_it_is_ready_and_a_restart_before_it_runs() {
    let _cpus = serial();
    if !machine(2, true) {
        return;
    }
    let dir = Dir::new("place-when");
    let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/fake/node.py");
    let starts = dir.aux("cpus");
    std::fs::create_dir_all(starts.parent().unwrap()).unwrap();
    let mut cmd = launch_cmd(
        &dir,
        &["--nodes", "a,b", "--restart", "on-failure", "--foreground", "b"],
    );
    // a dies after a second, then is restarted (and dies again soon).
    cmd.args(["--node-bin", fake])
        .env("FAKE_MODE", "die-soon")
        .env("FAKE_ONLY", "a")
        .env("FAKE_LOG", dir.aux("log"))
        .env("FAKE_CPUS", &starts);
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
    let packed = cpus_of(node_pid(&dir, "b", PROMPT).expect("b runs"));
    assert!(packed.parse::<usize>().is_ok(), "b is not packed: {packed}");
    let lines = || -> Vec<String> {
        let text = std::fs::read_to_string(&starts).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    };
    assert!(
        wait_until(PROMPT, || lines().len() >= 4),
        "{:?}\n{}",
        lines(),
        launcher.stderr()
    );
    let got = lines();
    // Launched: free to run anywhere until ready (a thousand starting on one
    // CPU start slower), then packed.
    let everywhere = piper_tests::allowed_cpus()
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut first = got[..2].to_vec();
    first.sort();
    assert_eq!(first, [format!("a {everywhere}"), format!("b {everywhere}")]);
    // Restarted: placed with the ring before it runs, on one CPU (which
    // may have changed since: restarts every 50 ms keep that CPU busy, and
    // auto may move the ring off it).
    for restart in &got[2..] {
        let cpu = restart.strip_prefix("a ").unwrap_or_else(|| panic!("{got:?}"));
        assert!(cpu.parse::<usize>().is_ok(), "a restart not placed: {got:?}");
    }
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn a_node_started_by_hand_runs_where_cpu_says() {
    let _cpus = serial();
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
