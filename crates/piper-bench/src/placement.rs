//! The placement table: the same rings under each `--cpus` policy, on a
//! quiet machine and a busy one, beside raw rings placed by hand, all in
//! one run. It is what `auto`, the default, was chosen by.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::report::median;
use crate::scratch::{wait_for, Guard, Scratch};
use crate::Settings;

/// Runs this process on `cpu` only, if given.
pub fn pin_self(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let mut set = CpuSet::new();
        set.set(cpu).expect("a CPU number");
        sched_setaffinity(Pid::from_raw(0), &set).expect("pin");
    }
}

/// A busy loop, forever.
pub fn hog() -> ! {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Background load while a figure is measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    Quiet,
    /// Unpinned busy loops.
    Hogs(usize),
    /// A busy loop pinned, once the ring is running, to the CPU its first
    /// node runs on: the trap for a ring packed there.
    OnTheRingsCpu,
}

impl Load {
    fn label(self) -> String {
        match self {
            Load::Quiet => "quiet".into(),
            Load::Hogs(1) => "1 hog".into(),
            Load::Hogs(n) => format!("{n} hogs"),
            Load::OnTheRingsCpu => "hog on the ring's CPU".into(),
        }
    }

    fn start(self) -> Vec<Guard> {
        match self {
            Load::Hogs(n) => (0..n).map(|_| hog_process(None)).collect(),
            _ => Vec::new(),
        }
    }
}

fn hog_process(cpu: Option<usize>) -> Guard {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("hog");
    if let Some(cpu) = cpu {
        cmd.args(["--cpu", &cpu.to_string()]);
    }
    Guard(cmd.spawn().expect("hog"))
}

/// Raw ping-pong with the echo on `echo_cpu` and this thread on
/// `client_cpu` (each None: unpinned): hops per second.
pub fn raw_pair(count: u64, echo_cpu: Option<usize>, client_cpu: Option<usize>, load: Load) -> f64 {
    let _load = load.start();
    let dir = Scratch::new("place-raw");
    let server = dir.0.join("echo");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("echo").arg(&server);
    if let Some(cpu) = echo_cpu {
        cmd.args(["--cpu", &cpu.to_string()]);
    }
    let _echo = Guard(cmd.spawn().expect("echo"));
    wait_for(&server);
    let rate = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin_self(client_cpu);
                let _hog = (load == Load::OnTheRingsCpu).then(|| hog_process(client_cpu.or(Some(0))));
                crate::raw::round_trips(&dir.0.join("client"), &server, b"ping", count).0
            })
            .join()
            .unwrap()
    });
    rate
}

/// A raw ring of `n` processes, all on `cpu` (or unpinned): hops per second.
pub fn raw_ring(n: usize, laps: u64, cpu: Option<usize>, load: Load) -> f64 {
    let _load = load.start();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--placement-count",
        "0",
        "raw-ring",
        &n.to_string(),
        "--laps",
        &laps.to_string(),
    ]);
    if let Some(cpu) = cpu {
        // The ring's members inherit the affinity of the process that forks them.
        cmd.env("PIPER_BENCH_CPU", cpu.to_string());
    }
    let _hog = (load == Load::OnTheRingsCpu).then(|| hog_process(cpu.or(Some(0))));
    let out = cmd.stderr(Stdio::null()).output().expect("raw ring");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0)
}

/// What `auto` did in one run, from its log.
fn auto_did(log: &str) -> &'static str {
    let has = |what: &str| log.contains(what);
    match (
        has("packing the ring onto CPU"),
        has("moving the ring to CPU"),
        has("no CPU is idle"),
    ) {
        (false, _, _) => "did not pack",
        (true, false, false) => "packed",
        (true, true, _) => "packed, moved",
        (true, false, true) => "packed, unpacked",
    }
}

/// piper's ring of `n` nodes under `--cpus policy`: hops per second, and
/// what the launcher decided (`auto` only).
fn piper_ring(s: &Settings, n: usize, laps: u64, policy: &str, load: Load) -> (f64, &'static str) {
    let _load = load.start();
    let dir = Scratch::new("place-piper");
    let err_path = dir.0.join("err");
    let nodes = if n == 2 { "ping,pong".to_string() } else { n.to_string() };
    let mut launcher = Guard(
        Command::new(s.bin.join("piper-launch"))
            .arg("--dir")
            .arg(dir.0.join("s"))
            .args([
                "--nodes",
                &nodes,
                "--count",
                &laps.to_string(),
                "--quiet",
                "--cpus",
                policy,
            ])
            .env("RUST_LOG", "warn,piper_launch=info,piper_launch::placement=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("piper-launch"),
    );
    let mut hog = None;
    if load == Load::OnTheRingsCpu {
        // Once the ring runs, a hog on the CPU of its first node.
        let read = || std::fs::read_to_string(&err_path).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !read().contains("nodes ready in") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let cpu = first_child_cpu(launcher.0.id());
        hog = Some(hog_process(Some(cpu)));
    }
    let status = launcher.0.wait().unwrap();
    drop(hog);
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "piper-launch --cpus {policy} failed:\n{err}");
    (n as f64 * crate::piper::foreground_rate(&err), auto_did(&err))
}

/// The CPU the launcher's first child may run on (its first, if several).
fn first_child_cpu(launcher: u32) -> usize {
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).unwrap_or_default();
    let child = children.split_whitespace().next().unwrap_or("0");
    let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("0");
    list.trim()
        .split([',', '-'])
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The placement table, `s.reps` repetitions of each figure, medians.
pub fn table(s: &Settings) -> String {
    let cpus = allowed();
    let (a, b) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let loads = [Load::Quiet, Load::Hogs(1), Load::Hogs(2), Load::OnTheRingsCpu];
    let policies = ["none", "pack", "spread", "auto"];
    let reps = s.reps.max(1);
    let count = s.placement_count;
    let laps = s.placement_laps;
    let mut auto_choices = Vec::new();
    let mut ring_ratios = Vec::new();
    let mut text = format!(
        "\n### Placement\n\nHops per second, medians of {reps}; 2-node: {count} round trips, {}-node ring: {laps} laps. \
         Each row's ratios are against the best raw figure of its own load, in the same run.\n\n",
        s.ring
    );
    text.push_str("| load | ring | raw unpinned | raw one CPU | raw apart |");
    for p in policies {
        text.push_str(&format!(" piper {p} |"));
    }
    text.push_str(" auto / best raw | auto / none |\n|---|---|");
    text.push_str(&"---:|".repeat(3 + policies.len() + 2));
    text.push('\n');
    for load in loads {
        for (n, label) in [(2usize, "2-node"), (s.ring, "ring")] {
            eprintln!("piper-bench: placement, {}, {label}", load.label());
            let med = |f: &mut dyn FnMut() -> f64| median(&(0..reps).map(|_| f()).collect::<Vec<_>>());
            let (raw_free, raw_one, raw_apart) = if n == 2 {
                (
                    med(&mut || raw_pair(count, None, None, load)),
                    med(&mut || raw_pair(count, Some(b), Some(b), load)),
                    med(&mut || raw_pair(count, Some(a), Some(b), load)),
                )
            } else {
                (
                    med(&mut || raw_ring(n, laps, None, load)),
                    med(&mut || raw_ring(n, laps, Some(b), load)),
                    f64::NAN,
                )
            };
            // The policies take turns within each repetition, so that a
            // drift in the load (hogs settling, the scheduler's placement of
            // them) falls on each alike.
            let mut runs = vec![Vec::new(); policies.len()];
            let mut auto = Vec::new();
            for _ in 0..reps {
                for (j, p) in policies.iter().enumerate() {
                    let (rate, did) = piper_ring(s, n, if n == 2 { count } else { laps }, p, load);
                    runs[j].push(rate);
                    if *p == "auto" {
                        auto.push(did);
                    }
                }
            }
            let piper: Vec<f64> = runs.iter().map(|r| median(r)).collect();
            auto_choices.push(format!("{}, {label}: {}", load.label(), tally(&auto)));
            let best_raw = raw_free
                .max(raw_one)
                .max(if raw_apart.is_nan() { 0.0 } else { raw_apart });
            let k = |r: f64| {
                if r.is_nan() {
                    "—".to_string()
                } else {
                    format!("{:.0} k", r / 1000.0)
                }
            };
            text.push_str(&format!(
                "| {} | {label} | {} | {} | {} |",
                load.label(),
                k(raw_free),
                k(raw_one),
                k(raw_apart)
            ));
            for r in &piper {
                text.push_str(&format!(" {} |", k(*r)));
            }
            let (auto, none) = (piper[3], piper[0]);
            text.push_str(&format!(" {:.2}× | {:.2}× |\n", auto / best_raw, auto / none));
            if n == s.ring {
                ring_ratios.push(format!("{} {:.2}×", load.label(), auto / best_raw));
            }
        }
    }
    text.push_str(&format!(
        "\nThe {}-node ring under the default `auto` against the best raw placement of its load (target ≥ 0.90× quiet, ≥ 0.85× loaded): {}.\n",
        s.ring,
        ring_ratios.join(", ")
    ));
    text.push_str(&format!("\nWhat `auto` did: {}.\n", auto_choices.join("; ")));
    text
}

/// "packed ×2, did not pack ×1": each outcome and how often, in first-seen order.
fn tally(outcomes: &[&str]) -> String {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for o in outcomes {
        match seen.iter_mut().find(|(s, _)| s == o) {
            Some((_, k)) => *k += 1,
            None => seen.push((o, 1)),
        }
    }
    seen.iter()
        .map(|(o, k)| format!("{o} ×{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn allowed() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).expect("affinity");
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// The CPU the limits are measured on: the second allowed one (the first
/// takes more of the machine's interrupts), as the placement table's "one
/// CPU" columns are.
pub fn limit_cpu() -> usize {
    let cpus = allowed();
    *cpus.get(1).unwrap_or(&cpus[0])
}
