//! The hop rate with and without a Prometheus scraper (`--scraped`): the
//! launcher serves `--metrics` from its event loop, and a scrape must
//! never slow the ring. Each ring runs with `--metrics` on a socket in
//! both columns; only the client polling it every `--scrape-every`
//! milliseconds differs. The two take turns within each repetition (and
//! swap who goes first every other one), so drift in the machine's load
//! hits both alike.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::report::median;
use crate::scratch::{Guard, Scratch};
use crate::Settings;

/// Runs the launcher with `args` and `--metrics` on a socket, scraping it
/// every `every` if given: hops per second (the foreground's rate times
/// `hops_per_message`), and how many scrapes were answered.
fn run(s: &Settings, args: &[&str], hops_per_message: f64, every: Option<Duration>) -> (f64, u64) {
    let dir = Scratch::new("scraped");
    let socket = dir.0.join("metrics.sock");
    let err_path = dir.0.join("err");
    let mut launcher = Guard(
        Command::new(s.bin.join("piper-launch"))
            .arg("--dir")
            .arg(dir.0.join("s"))
            .args(args)
            .arg("--metrics")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("piper-launch"),
    );
    let done = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = every.map(|every| {
        let (done, scrapes, socket) = (done.clone(), scrapes.clone(), socket.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Ok(mut stream) = UnixStream::connect(&socket) {
                    let mut answer = Vec::new();
                    let asked = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n");
                    if asked.is_ok() && stream.read_to_end(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200 ")
                    {
                        scrapes.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(every);
            }
        })
    });
    let status = launcher.0.wait().expect("wait");
    done.store(true, Ordering::SeqCst);
    if let Some(scraper) = scraper {
        scraper.join().expect("the scraper");
    }
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "piper-launch {args:?} failed:\n{err}");
    let line = err.lines().find(|l| l.contains("msg/s")).expect("a summary line");
    let rate: f64 = line
        .rsplit("rate ")
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (hops_per_message * rate, scrapes.load(Ordering::SeqCst))
}

/// The table: for the 2-node ring and the big ring, the median hop rate
/// without and with the scraper, their ratio, and the scrapes answered.
pub fn table(s: &Settings) -> String {
    let every = Duration::from_millis(s.scrape_every);
    let count = s.count.to_string();
    let (n, laps) = (s.ring.to_string(), s.ring_count.to_string());
    let rings: [(String, Vec<&str>, f64); 2] = [
        (
            "2-node".into(),
            vec!["--nodes", "ping,pong", "--count", &count, "--quiet"],
            2.0,
        ),
        (
            format!("{n}-node"),
            vec!["--nodes", &n, "--count", &laps, "--quiet"],
            s.ring as f64,
        ),
    ];
    let mut text = format!(
        "## Hop rate with a scraper\n\n\
         Medians of {} repetitions, each ring with `--metrics` on a socket, with and without a client \
         that GETs /metrics every {} ms, taking turns.\n\n\
         | ring | without | with a scraper | with / without | scrapes answered (median) |\n|---|---:|---:|---:|---:|\n",
        s.reps.max(1),
        s.scrape_every
    );
    for (name, args, hops) in &rings {
        let (mut without, mut with, mut scrapes) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..s.reps.max(1) {
            eprintln!("piper-bench: {name} ring, repetition {}/{}", rep + 1, s.reps.max(1));
            let order = if rep % 2 == 0 { [false, true] } else { [true, false] };
            for scraping in order {
                let (rate, answered) = run(s, args, *hops, scraping.then_some(every));
                if scraping {
                    with.push(rate);
                    scrapes.push(answered as f64);
                } else {
                    without.push(rate);
                }
            }
        }
        let (a, b) = (median(&without), median(&with));
        text.push_str(&format!(
            "| {name} | {:.0} k hops/s | {:.0} k hops/s | {:.2}× | {:.0} |\n",
            a / 1e3,
            b / 1e3,
            b / a,
            median(&scrapes)
        ));
    }
    text
}
