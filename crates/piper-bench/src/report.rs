//! Medians, the machine's description, and the tables of BENCHMARKS.md:
//! first each figure against its limit measured in the same run, then the
//! context.

use std::path::PathBuf;

use crate::Settings;

/// How the binaries of a launch figure were built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// `scripts/install.sh`'s and the benchmark's: static (`+crt-static`).
    Static,
    /// The README's quick start: `cargo build --release`, dynamic.
    Dynamic,
}

/// One launch figure: `n` nodes of one build in one directory, against a
/// raw launch of the same build in the same directory.
pub struct Launch {
    pub n: usize,
    pub build: Build,
    pub bin: PathBuf,
    pub root: PathBuf,
    pub ready: Vec<f64>,
    pub down: Vec<f64>,
    pub raw_ready: Vec<f64>,
    pub raw_down: Vec<f64>,
    /// The raw teardown whose members clean up (`raw::member`'s `tidy`).
    pub raw_tidy_down: Vec<f64>,
}

impl Launch {
    pub fn new(n: usize, build: Build, bin: PathBuf, root: PathBuf) -> Launch {
        Launch {
            n,
            build,
            bin,
            root,
            ready: Vec::new(),
            down: Vec::new(),
            raw_ready: Vec::new(),
            raw_down: Vec::new(),
            raw_tidy_down: Vec::new(),
        }
    }

    /// "static, /dev/shm (tmpfs)".
    fn label(&self) -> String {
        let build = match self.build {
            Build::Static => "static",
            Build::Dynamic => "dynamic",
        };
        let fs = if crate::scratch::on_disk(&self.root) {
            "disk"
        } else {
            "tmpfs"
        };
        format!("{build}, {} ({fs})", self.root.display())
    }
}

/// Every repetition's value of every figure.
pub struct Measurements {
    /// The raw ping-pong, unpinned: the scheduler's choice.
    pub raw_rate: Vec<f64>,
    pub raw_p50: Vec<f64>,
    pub raw_p99: Vec<f64>,
    /// The raw ping-pong with both processes on one CPU: the limit.
    pub raw_one_cpu: Vec<f64>,
    pub quiet: Vec<f64>,
    pub p50: Vec<f64>,
    pub p99: Vec<f64>,
    pub loud: Vec<f64>,
    pub ring: Vec<f64>,
    pub raw_ring: Vec<f64>,
    pub raw_ring_one_cpu: Vec<f64>,
    pub launches: Vec<Launch>,
    pub rss: Vec<f64>,
}

impl Measurements {
    pub fn new(launches: &[Launch]) -> Measurements {
        Measurements {
            raw_rate: Vec::new(),
            raw_p50: Vec::new(),
            raw_p99: Vec::new(),
            raw_one_cpu: Vec::new(),
            quiet: Vec::new(),
            p50: Vec::new(),
            p99: Vec::new(),
            loud: Vec::new(),
            ring: Vec::new(),
            raw_ring: Vec::new(),
            raw_ring_one_cpu: Vec::new(),
            launches: launches
                .iter()
                .map(|l| Launch::new(l.n, l.build, l.bin.clone(), l.root.clone()))
                .collect(),
            rss: Vec::new(),
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// CPU, cores, memory, kernel and datagram queue length.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(": ").nth(1).unwrap_or("").to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kib = m.lines().next()?.split_whitespace().nth(1)?;
            kib.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem} GiB RAM, Linux {}, net.unix.max_dgram_qlen {}",
        kernel.trim(),
        qlen.trim()
    )
}

/// A markdown table being written.
struct Table(String);

impl Table {
    fn new(header: &[&str]) -> Table {
        let mut t = format!("| {} |\n|", header.join(" | "));
        t.push_str("---|");
        t.push_str(&"---:|".repeat(header.len() - 2));
        t.push_str("---|\n");
        Table(t)
    }

    fn row(&mut self, cells: &[String]) {
        self.0.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
}

fn kilo(r: f64) -> String {
    format!("{:.1} k hops/s", r / 1000.0)
}

fn ratio(r: f64) -> String {
    format!("{r:.2}×")
}

/// The whole report: machine, command, the figures against their limits,
/// then the context.
pub fn render(s: &Settings, m: &Measurements, command: &str) -> String {
    let med = |v: &[f64]| median(v);
    let mut head = Table::new(&["figure", "piper", "the limit, same run", "ratio", "target"]);
    let (one_cpu, quiet) = (med(&m.raw_one_cpu), med(&m.quiet));
    head.row(&[
        "2-node ring (`--nodes ping,pong`), quiet".into(),
        kilo(quiet),
        format!("raw, both processes on one CPU: {}", kilo(one_cpu)),
        ratio(quiet / one_cpu),
        "≥ 0.95×".into(),
    ]);
    let (ring, raw_free, raw_one) = (med(&m.ring), med(&m.raw_ring), med(&m.raw_ring_one_cpu));
    let (best, where_) = if raw_one >= raw_free {
        (raw_one, "on one CPU")
    } else {
        (raw_free, "unpinned")
    };
    head.row(&[
        format!("{}-node ring, quiet", s.ring),
        kilo(ring),
        format!("raw, best placement ({where_}): {}", kilo(best)),
        ratio(ring / best),
        "≥ 0.90×".into(),
    ]);
    let largest = s.launch_sizes.iter().copied().max().unwrap_or(0);
    for l in m.launches.iter().filter(|l| l.n == largest) {
        let (ready, raw) = (med(&l.ready), med(&l.raw_ready));
        let target = match l.build {
            Build::Static => "≤ 1.10×",
            Build::Dynamic => "≤ 1.20×",
        };
        head.row(&[
            format!("{} nodes ready, {}", l.n, l.label()),
            format!("{ready:.3} s"),
            format!("raw launch, same build and directory: {raw:.3} s"),
            ratio(ready / raw),
            target.into(),
        ]);
    }
    for l in m.launches.iter().filter(|l| l.n == largest && l.build == Build::Static) {
        let (down, raw) = (med(&l.down), med(&l.raw_tidy_down));
        head.row(&[
            format!("{} nodes torn down, {}", l.n, l.label()),
            format!("{:.0} ms", down * 1000.0),
            format!("raw processes that each clean up: {:.0} ms", raw * 1000.0),
            ratio(down / raw),
            "≤ 1.10×".into(),
        ]);
    }
    let loud = med(&m.loud);
    head.row(&[
        "2-node ring printing every message to a file".into(),
        kilo(loud),
        format!("piper quiet: {}", kilo(quiet)),
        ratio(loud / quiet),
        "≥ 0.90×".into(),
    ]);
    let (p99, raw_p99) = (med(&m.p99), med(&m.raw_p99));
    head.row(&[
        "round trip to a node, p99".into(),
        format!("{p99:.1} µs"),
        format!("raw echo: {raw_p99:.1} µs"),
        ratio(p99 / raw_p99),
        "≤ 1.10×".into(),
    ]);
    head.row(&[
        "idle node RSS".into(),
        format!("{:.2} MiB", med(&m.rss) / 1024.0),
        String::new(),
        String::new(),
        "≤ 2 MiB".into(),
    ]);

    let mut ctx = Table::new(&["figure", "median", "note"]);
    let raw_rate = med(&m.raw_rate);
    ctx.row(&[
        "raw 2-process ping-pong, unpinned".into(),
        kilo(raw_rate),
        format!("the scheduler's choice: piper quiet is {:.2}× this", quiet / raw_rate),
    ]);
    let (p50, raw_p50) = (med(&m.p50), med(&m.raw_p50));
    ctx.row(&[
        "round trip p50, piper / raw".into(),
        format!("{p50:.1} / {raw_p50:.1} µs"),
        ratio(p50 / raw_p50),
    ]);
    ctx.row(&[
        format!("raw {}-process ring, unpinned / on one CPU", s.ring),
        format!("{} / {}", kilo(raw_free), kilo(raw_one)),
        String::new(),
    ]);
    for l in &m.launches {
        let (ready, raw) = (med(&l.ready), med(&l.raw_ready));
        let (down, raw_down, raw_tidy) = (med(&l.down), med(&l.raw_down), med(&l.raw_tidy_down));
        ctx.row(&[
            format!("{} nodes, {}: ready / torn down", l.n, l.label()),
            format!("{ready:.3} s / {:.0} ms", down * 1000.0),
            format!(
                "raw: {raw:.3} s ({:.2}×) / {:.0} ms cleaning up ({:.2}×), {:.0} ms not ({:.2}×)",
                ready / raw,
                raw_tidy * 1000.0,
                down / raw_tidy,
                raw_down * 1000.0,
                down / raw_down
            ),
        ]);
    }
    format!(
        "Machine: {}\n\nCommand: `{command}`; sockets in {}.\nMedians of {} repetitions, each figure beside its limit in the same run; counts: {} round trips, ring of {} × {} laps.\n\n{}\nContext:\n\n{}",
        machine(),
        crate::scratch::root().display(),
        s.reps.max(1),
        s.count,
        s.ring,
        s.ring_count,
        head.0,
        ctx.0
    )
}
