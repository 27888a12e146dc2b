//! Medians, the machine's description, and the table of BENCHMARKS.md.

use crate::Settings;

/// Every repetition's value of every figure.
pub struct Measurements {
    pub raw_rate: Vec<f64>,
    pub raw_p50: Vec<f64>,
    pub raw_p99: Vec<f64>,
    pub quiet: Vec<f64>,
    pub p50: Vec<f64>,
    pub p99: Vec<f64>,
    pub loud: Vec<f64>,
    pub ring: Vec<f64>,
    pub raw_ring: Vec<f64>,
    /// Per launch size: piper's, and the raw launch's.
    pub ready: Vec<Vec<f64>>,
    pub down: Vec<Vec<f64>>,
    pub raw_ready: Vec<Vec<f64>>,
    pub raw_down: Vec<Vec<f64>>,
    /// The raw teardown whose members clean up (`raw::member`'s `tidy`).
    pub raw_tidy_down: Vec<Vec<f64>>,
    pub rss: Vec<f64>,
}

impl Measurements {
    pub fn new(launch_sizes: usize) -> Measurements {
        Measurements {
            raw_rate: Vec::new(),
            raw_p50: Vec::new(),
            raw_p99: Vec::new(),
            quiet: Vec::new(),
            p50: Vec::new(),
            p99: Vec::new(),
            loud: Vec::new(),
            ring: Vec::new(),
            raw_ring: Vec::new(),
            ready: vec![Vec::new(); launch_sizes],
            down: vec![Vec::new(); launch_sizes],
            raw_ready: vec![Vec::new(); launch_sizes],
            raw_down: vec![Vec::new(); launch_sizes],
            raw_tidy_down: vec![Vec::new(); launch_sizes],
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

/// The whole report: machine, command, and the table of medians.
pub fn render(s: &Settings, m: &Measurements, command: &str) -> String {
    let mut table = String::from("| Figure | Median | Ratio | Target |\n|---|---:|---:|---|\n");
    let kilo = |r: f64| format!("{:.0} k hops/s", r / 1000.0);
    let ratio = |r: f64, base: f64| format!("{:.2}×", r / base);
    let mut row = |figure: &str, value: String, ratio: String, target: &str| {
        table.push_str(&format!("| {figure} | {value} | {ratio} | {target} |\n"));
    };
    let raw_rate = median(&m.raw_rate);
    let quiet = median(&m.quiet);
    row("Raw baseline: 2-process ping-pong", kilo(raw_rate), "1.00×".into(), "");
    let (raw_p50, raw_p99) = (median(&m.raw_p50), median(&m.raw_p99));
    let rtt = |p50: f64, p99: f64| format!("{p50:.1} / {p99:.1} µs");
    row("Raw round trip p50 / p99", rtt(raw_p50, raw_p99), String::new(), "");
    row(
        "Quiet piper ping-pong (launcher)",
        kilo(quiet),
        ratio(quiet, raw_rate),
        "≥ 0.9× raw",
    );
    let (p50, p99) = (median(&m.p50), median(&m.p99));
    let p50_ratio = format!("{:.2}× raw p50", p50 / raw_p50);
    row("piper round trip p50 / p99", rtt(p50, p99), p50_ratio, "");
    let loud = median(&m.loud);
    row(
        "piper ping-pong printing to files",
        kilo(loud),
        ratio(loud, raw_rate),
        "≥ 0.8× raw",
    );
    let ring = median(&m.ring);
    let ring_ratio = format!("{:.2}× 2-node", ring / quiet);
    row(
        &format!("{}-node ring", s.ring),
        kilo(ring),
        ring_ratio,
        "≥ 0.8× 2-node",
    );
    let raw_ring = median(&m.raw_ring);
    row(
        &format!("Raw {}-process ring (no piper code)", s.ring),
        kilo(raw_ring),
        format!("{:.2}× raw 2-process", raw_ring / raw_rate),
        "",
    );
    for (i, &n) in s.launch_sizes.iter().enumerate() {
        let (ready_target, down_target) = if n == 1000 {
            ("≤ 0.3 s", "≤ 100 ms")
        } else {
            ("", "")
        };
        let (raw_ready, raw_down) = (median(&m.raw_ready[i]), median(&m.raw_down[i]));
        let (ready, down) = (median(&m.ready[i]), median(&m.down[i]));
        row(
            &format!("Raw launch of {n} processes, ready (no piper code)"),
            format!("{raw_ready:.3} s"),
            String::new(),
            "",
        );
        row(
            &format!("{n} nodes ready"),
            format!("{ready:.3} s"),
            format!("{:.2}× raw", ready / raw_ready),
            ready_target,
        );
        row(
            &format!("Raw {n} processes torn down (SIGTERM, no cleanup)"),
            format!("{:.0} ms", raw_down * 1000.0),
            String::new(),
            "",
        );
        let raw_tidy_down = median(&m.raw_tidy_down[i]);
        row(
            &format!("Raw {n} processes torn down, each cleaning up (a line, a datagram, an unlink)"),
            format!("{:.0} ms", raw_tidy_down * 1000.0),
            String::new(),
            "",
        );
        row(
            &format!("{n} nodes torn down"),
            format!("{:.0} ms", down * 1000.0),
            format!(
                "{:.2}× raw, {:.2}× raw cleaning up",
                down / raw_down,
                down / raw_tidy_down
            ),
            down_target,
        );
    }
    let rss = format!("{:.2} MiB", median(&m.rss) / 1024.0);
    row("Idle node RSS", rss, String::new(), "≤ 2 MiB");
    format!(
        "Machine: {}\n\nCommand: `{command}`; sockets in {}.\nMedians of {} repetitions; counts: {} round trips, ring of {} × {} laps.\n\n{table}",
        machine(),
        crate::scratch::root().display(),
        s.reps.max(1),
        s.count,
        s.ring,
        s.ring_count
    )
}
