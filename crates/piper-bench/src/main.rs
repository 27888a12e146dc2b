//! piper-bench: every figure of BENCHMARKS.md, measured in one run against a
//! raw `AF_UNIX SOCK_DGRAM` baseline on the same machine.
//!
//! `scripts/bench.sh` builds the release binaries and calls this with the
//! directory that holds them. Each figure is the median of `--reps` runs.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Command-line settings.
struct Settings {
    bin: PathBuf,
    reps: usize,
    count: u64,
    ring: usize,
    ring_count: u64,
    launch_sizes: Vec<usize>,
    out: Option<PathBuf>,
    tmp: PathBuf,
}

fn parse_args() -> Settings {
    let mut s = Settings {
        bin: PathBuf::from("target/release"),
        reps: 5,
        count: 200_000,
        ring: 1000,
        ring_count: 200,
        launch_sizes: vec![100, 1000],
        out: None,
        tmp: default_tmp(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
                .clone()
        };
        match flag.as_str() {
            "--bin" => s.bin = PathBuf::from(value()),
            "--reps" => s.reps = value().parse().unwrap_or_else(|_| die("--reps N")),
            "--count" => s.count = value().parse().unwrap_or_else(|_| die("--count N")),
            "--ring" => s.ring = value().parse().unwrap_or_else(|_| die("--ring N")),
            "--ring-count" => s.ring_count = value().parse().unwrap_or_else(|_| die("--ring-count N")),
            "--launch" => {
                s.launch_sizes = value()
                    .split(',')
                    .map(|n| n.parse().unwrap_or_else(|_| die("--launch N,M")))
                    .collect()
            }
            "--out" => s.out = Some(PathBuf::from(value())),
            "--tmp" => s.tmp = PathBuf::from(value()),
            "--raw-ring" => {
                let n: usize = value().parse().unwrap_or_else(|_| die("--raw-ring N"));
                println!("{:.0}", raw_ring(n, (200_000 / n as u64).max(1)));
                std::process::exit(0);
            }
            "--echo" => echo(&value()),
            "--forward" => {
                let from = value();
                forward(&from, &value())
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    s
}

/// Where sockets live during the run: a tmpfs, as `$XDG_RUNTIME_DIR` is on
/// a systemd machine. On a disk filesystem, creating and removing thousands
/// of socket and lock files measures the filesystem instead.
fn default_tmp() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    runtime
        .filter(|p| p.is_dir())
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir)
}

fn die(message: &str) -> ! {
    eprintln!("piper-bench: error: {message}");
    std::process::exit(2);
}

/// A temp directory for one measurement, removed afterwards.
struct Scratch(PathBuf);

static TMP: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let tmp = TMP.get().cloned().unwrap_or_else(std::env::temp_dir);
        let path = tmp.join(format!("piper-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("scratch dir");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The raw baseline's echo side: answer every datagram on `path` with "pong".
fn echo(path: &str) -> ! {
    let sock = UnixDatagram::bind(path).expect("bind echo");
    let mut buf = [0u8; 64];
    loop {
        let (n, from) = sock.recv_from(&mut buf).expect("recv");
        let to = from.as_pathname().expect("bound client").to_path_buf();
        let _ = n;
        sock.send_to(b"pong", to).expect("send");
    }
}

/// A raw ring member: forward every datagram on `path` to `next`.
fn forward(path: &str, next: &str) -> ! {
    let sock = UnixDatagram::bind(path).expect("bind ring member");
    let mut buf = [0u8; 64];
    loop {
        let n = sock.recv(&mut buf).expect("recv");
        let _ = sock.send_to(&buf[..n], next);
    }
}

/// The raw ring: `n` processes with no piper code, the bench itself being
/// one of them. Returns hops per second over `laps` laps.
fn raw_ring(n: usize, laps: u64) -> f64 {
    let dir = Scratch::new("rawring");
    let path = |i: usize| dir.0.join(format!("r{i}"));
    let exe = std::env::current_exe().unwrap();
    let _members: Vec<Guard> = (1..n)
        .map(|i| {
            let next = path((i + 1) % n);
            Guard(
                Command::new(&exe)
                    .arg("--forward")
                    .arg(path(i))
                    .arg(next)
                    .spawn()
                    .expect("ring member"),
            )
        })
        .collect();
    for i in 1..n {
        wait_for(&path(i));
    }
    let me = UnixDatagram::bind(path(0)).unwrap();
    me.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let lap = |me: &UnixDatagram, buf: &mut [u8]| {
        me.send_to(b"token", path(1)).expect("send");
        me.recv(buf).expect("a lap");
    };
    lap(&me, &mut buf);
    let start = Instant::now();
    for _ in 0..laps {
        lap(&me, &mut buf);
    }
    (n as u64 * laps) as f64 / start.elapsed().as_secs_f64()
}

/// Round trips between a bound client socket and `server`; returns the hop
/// rate and the round-trip p50 and p99 in microseconds.
fn round_trips(client_path: &Path, server: &Path, payload: &[u8], count: u64) -> (f64, f64, f64) {
    let client = UnixDatagram::bind(client_path).expect("bind client");
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let mut rtts = Vec::with_capacity(count as usize);
    // Warm up: caches, page faults, the scheduler's idea of who runs where.
    for _ in 0..1000.min(count) {
        client.send_to(payload, server).expect("send");
        client.recv(&mut buf).expect("reply");
    }
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        client.send_to(payload, server).expect("send");
        client.recv(&mut buf).expect("reply");
        rtts.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    let total = start.elapsed().as_secs_f64();
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
    (2.0 * count as f64 / total, pct(0.50), pct(0.99))
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Figure 1: two processes, bound sockets, no piper code.
fn raw(s: &Settings) -> (f64, f64, f64) {
    let dir = Scratch::new("raw");
    let server = dir.0.join("echo");
    let exe = std::env::current_exe().unwrap();
    let _echo = Guard(Command::new(exe).arg("--echo").arg(&server).spawn().expect("echo"));
    wait_for(&server);
    round_trips(&dir.0.join("client"), &server, b"ping", s.count)
}

/// Round trips against a real `piper-node pong --quiet`.
fn piper_rtt(s: &Settings) -> (f64, f64) {
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
    let (_, p50, p99) = round_trips(&dir.0.join("piper-bench"), &dir.0.join("piper-pong"), b"bench", s.count);
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

/// The foreground node's message rate, from its summary line.
fn fg_rate(stderr: &str) -> f64 {
    let line = stderr.lines().find(|l| l.contains("msg/s")).expect("a summary line");
    let rate = line.rsplit("rate ").next().unwrap().split_whitespace().next().unwrap();
    rate.parse().expect("a rate")
}

/// Figures 2 and 3: the seed's ping-pong through the launcher, quiet or printing
/// every message to files.
fn pingpong(s: &Settings, quiet: bool) -> f64 {
    let dir = Scratch::new(if quiet { "quiet" } else { "loud" });
    let sockets = dir.0.join("sockets");
    let count = s.count.to_string();
    let err = if quiet {
        launch(
            s,
            &sockets,
            &["--nodes", "ping,pong", "--count", &count, "--quiet"],
            Stdio::null(),
        )
    } else {
        let logs = dir.0.join("logs");
        let file = std::fs::File::create(dir.0.join("pong.out")).unwrap();
        let logs = logs.to_str().unwrap().to_string();
        let err = launch(
            s,
            &sockets,
            &["--nodes", "ping,pong", "--count", &count, "--log-dir", &logs],
            file.into(),
        );
        let lines = std::fs::read_to_string(dir.0.join("pong.out")).unwrap().lines().count() as u64;
        assert_eq!(lines, s.count, "every message printed");
        err
    };
    2.0 * fg_rate(&err)
}

/// Figure 4: a ring, where every hop is a different pair of processes.
fn ring(s: &Settings) -> f64 {
    let dir = Scratch::new("ring");
    let n = s.ring.to_string();
    let err = launch(
        s,
        &dir.0,
        &["--nodes", &n, "--count", &s.ring_count.to_string(), "--quiet"],
        Stdio::null(),
    );
    s.ring as f64 * fg_rate(&err)
}

/// Figure 5: time to ready, and teardown after the foreground is killed.
fn launch_and_teardown(s: &Settings, n: usize) -> (f64, f64) {
    let dir = Scratch::new(&format!("launch{n}"));
    let sockets = dir.0.join("s");
    let mut launcher = Guard(
        Command::new(s.bin.join("piper-launch"))
            .arg("--dir")
            .arg(&sockets)
            .args(["--nodes", &n.to_string(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("err")).unwrap())
            .spawn()
            .expect("piper-launch"),
    );
    let err_path = dir.0.join("err");
    let read = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read().contains("nodes ready in") {
        assert!(Instant::now() < deadline, "ring of {n} never ready:\n{}", read());
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = foreground_pid(s, &sockets, &format!("node{n}"));
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
        after
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .split('s')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (seconds("nodes ready in"), seconds("tore down"))
}

/// The pid of node `name`, from `piper-node --list`.
fn foreground_pid(s: &Settings, sockets: &Path, name: &str) -> i32 {
    let out = Command::new(s.bin.join("piper-node"))
        .arg("--list")
        .arg("--dir")
        .arg(sockets)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let line = list
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .expect("the node is listed");
    line.split('\t').nth(1).unwrap().parse().expect("a pid")
}

/// Figure 6: an idle node's resident memory.
fn idle_rss_kib(s: &Settings) -> f64 {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn machine() -> String {
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
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
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

fn main() {
    let s = parse_args();
    let _ = TMP.set(s.tmp.clone());
    let command: Vec<String> = std::env::args().collect();
    let reps = s.reps.max(1);
    let mut raw_rate = Vec::new();
    let (mut raw_p50, mut raw_p99) = (Vec::new(), Vec::new());
    let (mut quiet, mut loud, mut ringv) = (Vec::new(), Vec::new(), Vec::new());
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    let mut ready: Vec<Vec<f64>> = vec![Vec::new(); s.launch_sizes.len()];
    let mut down: Vec<Vec<f64>> = vec![Vec::new(); s.launch_sizes.len()];
    let mut rss = Vec::new();
    let mut raw_ringv = Vec::new();
    for rep in 0..reps {
        eprintln!("piper-bench: repetition {}/{reps}", rep + 1);
        // Interleaved, so that drift in the machine's load hits every figure alike.
        let (r, a, b) = raw(&s);
        raw_rate.push(r);
        raw_p50.push(a);
        raw_p99.push(b);
        quiet.push(pingpong(&s, true));
        let (a, b) = piper_rtt(&s);
        p50.push(a);
        p99.push(b);
        loud.push(pingpong(&s, false));
        ringv.push(ring(&s));
        raw_ringv.push(raw_ring(s.ring, s.ring_count));
        for (i, &n) in s.launch_sizes.iter().enumerate() {
            let (r, d) = launch_and_teardown(&s, n);
            ready[i].push(r);
            down[i].push(d);
        }
        rss.push(idle_rss_kib(&s));
    }
    let raw_rate = median(raw_rate);
    let quiet = median(quiet);
    let ring_rate = median(ringv);
    let mut table = String::new();
    table.push_str("| Figure | Median | Ratio | Target |\n|---|---:|---:|---|\n");
    let kilo = |r: f64| format!("{:.0} k hops/s", r / 1000.0);
    let ratio = |r: f64, base: f64| format!("{:.2}×", r / base);
    let mut row = |figure: &str, value: String, ratio: String, target: &str| {
        table.push_str(&format!("| {figure} | {value} | {ratio} | {target} |\n"));
    };
    row("Raw baseline: 2-process ping-pong", kilo(raw_rate), "1.00×".into(), "");
    let (raw_p50, raw_p99) = (median(raw_p50), median(raw_p99));
    row(
        "Raw round trip p50 / p99",
        format!("{raw_p50:.1} / {raw_p99:.1} µs"),
        String::new(),
        "",
    );
    row(
        "Quiet piper ping-pong (launcher)",
        kilo(quiet),
        ratio(quiet, raw_rate),
        "≥ 0.9× raw",
    );
    let (p50, p99) = (median(p50), median(p99));
    row(
        "piper round trip p50 / p99",
        format!("{p50:.1} / {p99:.1} µs"),
        format!("{:.2}× raw p50", p50 / raw_p50),
        "",
    );
    let loud = median(loud);
    row(
        "piper ping-pong printing to files",
        kilo(loud),
        ratio(loud, raw_rate),
        "≥ 0.8× raw",
    );
    row(
        &format!("{}-node ring", s.ring),
        kilo(ring_rate),
        format!("{:.2}× 2-node", ring_rate / quiet),
        "≥ 0.8× 2-node",
    );
    let raw_ring_rate = median(raw_ringv);
    row(
        &format!("Raw {}-process ring (no piper code)", s.ring),
        kilo(raw_ring_rate),
        format!("{:.2}× raw 2-process", raw_ring_rate / raw_rate),
        "",
    );
    for (i, &n) in s.launch_sizes.iter().enumerate() {
        let target_ready = if n == 1000 { "≤ 0.6 s" } else { "" };
        let target_down = if n == 1000 { "≤ 100 ms" } else { "" };
        row(
            &format!("{n} nodes ready"),
            format!("{:.3} s", median(ready[i].clone())),
            String::new(),
            target_ready,
        );
        row(
            &format!("{n} nodes torn down"),
            format!("{:.0} ms", median(down[i].clone()) * 1000.0),
            String::new(),
            target_down,
        );
    }
    row(
        "Idle node RSS",
        format!("{:.2} MiB", median(rss) / 1024.0),
        String::new(),
        "≤ 2 MiB",
    );
    let report = format!(
        "Machine: {}\n\nCommand: `{}`; sockets in {}.\nMedians of {reps} repetitions; counts: {} round trips, ring of {} × {} laps.\n\n{table}",
        machine(),
        command.join(" "),
        s.tmp.display(),
        s.count,
        s.ring,
        s.ring_count
    );
    print!("{report}");
    if let Some(out) = &s.out {
        let mut f = std::fs::File::create(out).expect("write report");
        f.write_all(report.as_bytes()).unwrap();
    }
}
