//! piper-bench: every figure of BENCHMARKS.md, measured in one run against a
//! raw `AF_UNIX SOCK_DGRAM` baseline on the same machine.
//!
//! `scripts/bench.sh` builds the release binaries and calls this with the
//! directory that holds them. Each figure is the median of `--reps` runs,
//! the figures interleaved so that drift in the machine's load hits every
//! one alike. The modules: `raw` (the baselines, with no piper code),
//! `piper` (the same measurements through the real binaries), `report`
//! (medians, the machine, the table), `scraped` (the hop rate with and
//! without a metrics scraper, `--scraped`), `scratch` (temp dirs and child
//! guards). The helper processes the raw baselines need are subcommands of
//! this same binary.

mod piper;
mod placement;
mod raw;
mod report;
mod scraped;
mod scratch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Benchmarks piper against a raw AF_UNIX SOCK_DGRAM baseline, in one run.
#[derive(Debug, Parser)]
#[command(about)]
pub struct Settings {
    /// The directory holding piper-node and piper-launch.
    #[arg(long, default_value = "target/release")]
    bin: PathBuf,
    /// Repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Round trips per ping-pong figure.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Nodes in the big ring.
    #[arg(long, default_value_t = 1000)]
    ring: usize,
    /// Laps of the big ring.
    #[arg(long, default_value_t = 200)]
    ring_count: u64,
    /// Ring sizes whose launch and teardown are timed.
    #[arg(long = "launch", value_delimiter = ',', default_value = "100,1000")]
    launch_sizes: Vec<usize>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where sockets live during the run [default: $XDG_RUNTIME_DIR, else /dev/shm].
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// A directory on a disk filesystem where the launch figures are also
    /// measured (skipped if it is missing or not on a disk).
    #[arg(long, default_value = "/var/tmp")]
    disk_tmp: PathBuf,
    /// piper-node, piper-launch and piper-bench built dynamically (as the
    /// README's quick start builds them): the launch figures are also
    /// measured with these, against a raw launch of that piper-bench.
    #[arg(long)]
    dyn_bin: Option<PathBuf>,
    /// Round trips per 2-node figure of the placement table (0: no table).
    #[arg(long, default_value_t = 50_000)]
    placement_count: u64,
    /// Laps of the big ring in the placement table.
    #[arg(long, default_value_t = 50)]
    placement_laps: u64,
    /// Measure only the hop rate with and without a client scraping the
    /// launcher's --metrics every --scrape-every ms (the 2-node ring with
    /// --count round trips, and the big ring).
    #[arg(long)]
    scraped: bool,
    /// How often the scraper of --scraped asks, in milliseconds.
    #[arg(long, default_value_t = 100)]
    scrape_every: u64,
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// The helper processes of the raw baselines.
#[derive(Debug, Subcommand)]
enum Helper {
    /// Answer every datagram on PATH with "pong" (the raw ping-pong's server).
    Echo {
        path: PathBuf,
        /// Run on this CPU only.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Forward every datagram on PATH to NEXT (a raw ring member).
    Forward {
        path: PathBuf,
        next: PathBuf,
        /// Run on this CPU only.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Spin forever: load for the placement table.
    Hog {
        /// Run on this CPU only.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Bind PATH, say READY=1 to NOTIFY, and sleep (a raw launch's member).
    Member {
        path: PathBuf,
        notify: PathBuf,
        /// On SIGTERM, print a line, send one datagram, remove PATH, exit.
        #[arg(long)]
        tidy: bool,
    },
    /// Run a raw ring of N processes and print its hop rate.
    RawRing {
        n: usize,
        /// Laps to time [default: 200000 hops' worth].
        #[arg(long)]
        laps: Option<u64>,
    },
}

fn main() {
    let s = Settings::parse();
    scratch::set_root(s.tmp.clone().unwrap_or_else(scratch::default_root));
    match s.helper {
        Some(Helper::Echo { path, cpu }) => {
            placement::pin_self(cpu);
            raw::echo(&path)
        }
        Some(Helper::Forward { path, next, cpu }) => {
            placement::pin_self(cpu);
            raw::forward(&path, &next)
        }
        Some(Helper::Member { path, notify, tidy }) => raw::member(&path, &notify, tidy),
        Some(Helper::Hog { cpu }) => {
            placement::pin_self(cpu);
            placement::hog()
        }
        Some(Helper::RawRing { n, laps }) => {
            // The placement table pins a whole raw ring by pinning its root.
            placement::pin_self(std::env::var("PIPER_BENCH_CPU").ok().and_then(|c| c.parse().ok()));
            println!("{:.0}", raw::ring(n, laps.unwrap_or((200_000 / n as u64).max(1))))
        }
        None if s.scraped => {
            let text = scraped::table(&s);
            print!("{text}");
            if let Some(out) = &s.out {
                std::fs::write(out, text).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
            }
        }
        None => run(&s),
    }
}

/// Every figure, `reps` times, then the report.
fn run(s: &Settings) {
    let mut m = report::Measurements::new(&launches(s));
    let reps = s.reps.max(1);
    let cpu = placement::limit_cpu();
    for rep in 0..reps {
        eprintln!("piper-bench: repetition {}/{reps}", rep + 1);
        let (rate, p50, p99) = raw::pingpong(s.count);
        m.raw_rate.push(rate);
        m.raw_p50.push(p50);
        m.raw_p99.push(p99);
        let quiet = placement::Load::Quiet;
        m.raw_one_cpu
            .push(placement::raw_pair(s.count, Some(cpu), Some(cpu), quiet));
        m.quiet.push(piper::pingpong(s, true));
        let (p50, p99) = piper::round_trips(s);
        m.p50.push(p50);
        m.p99.push(p99);
        m.loud.push(piper::pingpong(s, false));
        m.ring.push(piper::ring(s));
        m.raw_ring.push(raw::ring(s.ring, s.ring_count));
        m.raw_ring_one_cpu
            .push(placement::raw_ring(s.ring, s.ring_count, Some(cpu), quiet));
        for l in &mut m.launches {
            let raw_exe = match l.build {
                report::Build::Static => std::env::current_exe().unwrap(),
                report::Build::Dynamic => l.bin.join("piper-bench"),
            };
            let (ready, down) = raw::launch(&raw_exe, &l.root, l.n, false);
            l.raw_ready.push(ready);
            l.raw_down.push(down);
            l.raw_tidy_down.push(raw::launch(&raw_exe, &l.root, l.n, true).1);
            let (ready, down) = piper::launch_and_teardown(&l.bin, &l.root, l.n);
            l.ready.push(ready);
            l.down.push(down);
        }
        m.rss.push(piper::idle_rss_kib(s));
    }
    let command: Vec<String> = std::env::args().collect();
    let mut text = report::render(s, &m, &command.join(" "));
    if s.placement_count > 0 {
        text.push_str(&placement::table(s));
    }
    print!("{text}");
    if let Some(out) = &s.out {
        std::fs::write(out, text).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    }
}

/// Each launch measured: every size, in the run's directory and on a
/// disk, with the static build and the dynamic one if given.
fn launches(s: &Settings) -> Vec<report::Launch> {
    let mut roots = vec![scratch::root().to_path_buf()];
    if scratch::on_disk(&s.disk_tmp) {
        roots.push(s.disk_tmp.clone());
    } else {
        eprintln!(
            "piper-bench: {} is not a directory on a disk filesystem: no launch figures there",
            s.disk_tmp.display()
        );
    }
    let mut builds = vec![(report::Build::Static, s.bin.clone())];
    if let Some(dyn_bin) = &s.dyn_bin {
        builds.push((report::Build::Dynamic, dyn_bin.clone()));
    }
    let mut launches = Vec::new();
    for &n in &s.launch_sizes {
        for (build, bin) in &builds {
            for root in &roots {
                launches.push(report::Launch::new(n, *build, bin.clone(), root.clone()));
            }
        }
    }
    launches
}
