//! The launcher's metrics for Prometheus (`--metrics`): what promtool makes
//! of them, counters across restarts, the HTTP that serves them, and a
//! scraper that never stops.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Command;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use piper_tests::http::{self, At};
use piper_tests::{bin, launch_cmd, may_run, node_pid, wait_until, Dir, Needs, Proc, PROMPT};

fn launch(dir: &Dir, args: &[&str]) -> Proc {
    Proc::spawn(dir, "launch", launch_cmd(dir, args))
}

fn wait_ready(launcher: &Proc) {
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")),
        "{}",
        launcher.stderr()
    );
}

/// A TCP port nobody listens on just now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every sample of a scrape, by its series (name and labels).
fn samples(text: &str) -> HashMap<String, f64> {
    (text.lines().filter(|l| !l.starts_with('#')))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn promtool_passes_the_launcher_s_metrics() {
    if !may_run(Needs::Tool("promtool")) {
        return;
    }
    let dir = Dir::new("metrics-promtool");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut launcher = launch(&dir, &["--nodes", "a,b,-c.d_e", "--quiet", "--metrics", &address]);
    wait_ready(&launcher);
    assert!(wait_until(PROMPT, || http::sample(
        &http::scrape(At::Port(port)),
        "piper_ring_received_total"
    )
    .is_some_and(|n| n > 100.0)));
    let text = http::scrape(At::Port(port));
    let (passed, said) = http::promtool(&text);
    assert!(passed, "promtool: {said}\n{text}");
    assert_eq!(said.trim(), "", "no lint warnings");
    for series in [
        "piper_build_info{program=\"piper-launch\",version=\"0.1.0\"}",
        "piper_ring_nodes",
        "piper_ring_nodes_alive",
        "piper_node_up{node=\"-c.d_e\"}",
        "piper_node_ready{node=\"a\"}",
        "piper_node_restarts_total{node=\"b\"}",
        "piper_node_last_change_timestamp_seconds{node=\"b\"}",
        "piper_ring_reinjections_total",
    ] {
        assert!(http::sample(&text, series).is_some(), "no {series} in\n{text}");
    }
    assert_eq!(http::sample(&text, "piper_ring_nodes_alive"), Some(3.0));
    // ctl metrics says the same families.
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.args(["ctl", "metrics", "--dir"]).arg(dir.path());
    let mut ctl = Proc::spawn(&dir, "ctl", cmd);
    assert_eq!(ctl.code(PROMPT), Some(0));
    let families = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(String::from)
            .collect()
    };
    assert_eq!(families(&ctl.stdout()), families(&text));
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn counters_never_go_down_across_a_node_s_restart() {
    let dir = Dir::new("metrics-restart");
    let socket = dir.aux("metrics.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let args = [
        "--nodes",
        "a,b,c",
        "--quiet",
        "--restart",
        "on-failure",
        "--metrics",
        socket.to_str().unwrap(),
    ];
    let mut launcher = launch(&dir, &args);
    wait_ready(&launcher);
    let mut scrapes: Vec<HashMap<String, f64>> = Vec::new();
    let mut scrape_until = |cond: &dyn Fn(&HashMap<String, f64>) -> bool| {
        let held = wait_until(PROMPT, || {
            scrapes.push(samples(&http::scrape(At::Socket(&socket))));
            cond(scrapes.last().unwrap())
        });
        assert!(held, "never: {:?}", scrapes.last());
        scrapes.last().unwrap().clone()
    };
    let received = |s: &HashMap<String, f64>, n: &str| s[&format!("piper_node_received_total{{node=\"{n}\"}}")];
    let before = scrape_until(&|s| received(s, "b") > 1000.0);
    // b is killed (a failure: restarted by the policy), c restarted by
    // hand; both start again from zero, and their counters go on.
    let b = node_pid(&dir, "b", PROMPT).unwrap();
    kill(b, Signal::SIGKILL).unwrap();
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.args(["ctl", "restart", "c", "--dir"]).arg(dir.path());
    assert_eq!(Proc::spawn(&dir, "ctl", cmd).code(PROMPT), Some(0));
    let after = scrape_until(&|s| {
        s["piper_node_restarts_total{node=\"b\"}"] == 1.0
            && received(s, "b") > received(&before, "b") + 1000.0
            && received(s, "c") > received(&before, "c") + 1000.0
    });
    assert_eq!(
        after["piper_node_restarts_total{node=\"c\"}"], 0.0,
        "a deliberate restart"
    );
    assert!(
        after["piper_node_last_change_timestamp_seconds{node=\"b\"}"]
            > before["piper_node_last_change_timestamp_seconds{node=\"b\"}"]
    );
    // Every counter, in every scrape, at least what it was in the one
    // before.
    let counters: Vec<&String> = after.keys().filter(|k| k.contains("_total")).collect();
    assert!(counters.len() >= 15, "{counters:?}");
    for pair in scrapes.windows(2) {
        for series in &counters {
            assert!(
                pair[1][*series] >= pair[0][*series],
                "{series} went down: {} then {}",
                pair[0][*series],
                pair[1][*series]
            );
        }
    }
    assert!(scrapes.len() >= 3, "{} scrapes", scrapes.len());
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert!(!socket.exists(), "the metrics socket goes with the launcher");
}

#[test]
fn get_metrics_is_answered_and_anything_else_refused() {
    let dir = Dir::new("metrics-http");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut launcher = launch(
        &dir,
        &["--nodes", "a,b", "--quiet", "--no-start", "--metrics", &address],
    );
    wait_ready(&launcher);
    let at = At::Port(port);
    let body = http::scrape(at);
    assert!(body.contains("\npiper_ring_nodes 2\n"), "{body}");
    let head = http::request(at, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let cases: [(&[u8], &str); 6] = [
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "405 Method Not Allowed",
        ),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
        (b"GET / HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"GET /debug HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"hello\r\n\r\n", "400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\n\r\n", "200 OK"),
    ];
    for (request, status) in cases {
        let answer = http::request(at, request);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{answer}");
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    }
    let long = [b"GET /metrics HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 9000], b"\r\n\r\n"].concat();
    assert!(http::request(at, &long).starts_with("HTTP/1.1 431 "));
    // The ring never noticed.
    assert!(!launcher.stderr().contains("warn"), "{}", launcher.stderr());
    // A second launcher cannot have the port: exit 1 before anything is
    // claimed. A non-loopback address is refused unless meant: exit 2.
    let other = Dir::new("metrics-http-2");
    for (metrics, code, says) in [
        (address.as_str(), 1, "Address already in use"),
        ("0.0.0.0:1", 2, "not a loopback address"),
        ("example.com:80", 2, "give a loopback HOST:PORT"),
    ] {
        let mut second = Proc::spawn(
            &other,
            "second",
            launch_cmd(&other, &["--nodes", "x,y", "--metrics", metrics]),
        );
        assert_eq!(second.code(PROMPT), Some(code), "{metrics}");
        let err = second.stderr();
        assert!(err.contains(says) && err.lines().count() == 1, "{metrics}: {err}");
        assert_eq!(other.entries(), Vec::<String>::new());
    }
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

/// Open sockets and resident memory (KiB) of `pid`. Sockets only: a
/// connection that leaks is one, while the launcher's other work opens a
/// file for a moment now and then (auto's look at the CPUs reads /proc),
/// which a count of every descriptor would catch at random.
fn sockets_and_rss(pid: Pid) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    (fds, rss)
}

#[test]
fn a_thousand_scrapes_leave_the_launcher_s_fds_and_memory_flat() {
    let dir = Dir::new("metrics-flat");
    let socket = dir.aux("metrics.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let args = ["--nodes", "20", "--quiet", "--metrics", socket.to_str().unwrap()];
    let mut launcher = launch(&dir, &args);
    wait_ready(&launcher);
    let at = At::Socket(&socket);
    // Sockets before any connection: a scrape's reader may be done with
    // the answer before the launcher has closed its end.
    let fds = sockets_and_rss(launcher.pid()).0;
    // Warm up: the first scrapes grow the launcher's buffers to size.
    for _ in 0..100 {
        http::scrape(at);
    }
    let rss = sockets_and_rss(launcher.pid()).1;
    for k in 0..1000 {
        let text = http::scrape(at);
        assert!(text.ends_with("\n"), "scrape {k} whole");
        // Every other one, a client that goes away without reading.
        if k % 2 == 0 {
            drop(std::os::unix::net::UnixStream::connect(&socket).unwrap());
        }
    }
    // The abandoned connections are closed as soon as the launcher sees
    // their end; a last scrape makes sure it has looked, and the count is
    // taken again until it is back, within the bound.
    http::scrape(at);
    let mut fds_after = 0;
    let back = wait_until(PROMPT, || {
        fds_after = sockets_and_rss(launcher.pid()).0;
        fds_after == fds
    });
    assert!(back, "sockets: {fds} before, {fds_after} after");
    let rss_after = sockets_and_rss(launcher.pid()).1;
    assert!(
        rss_after <= rss + 256,
        "resident memory grew from {rss} KiB to {rss_after} KiB"
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}
