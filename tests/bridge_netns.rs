//! piper-bridge across real network namespaces: hosts A and B and the
//! broker each in a namespace of their own, joined by veth pairs, with
//! addresses that exist only between them. A six-node ring runs across
//! them (a1..a3 on A, which starts the chain; b1..b3 on B), at one hop per
//! 100 ms, and each test makes one fault: A's link down for a while, the
//! broker killed and restarted, a bridge killed. After each, the ring must
//! move again and carry exactly one message, and every count adds up.
//!
//! Both launchers write to one file, opened for appending, and with an
//! interval each node writes its line before it sends on: the file's order
//! is the order in which the message went round. One message makes it
//! a1, a2, a3, b1, b2, b3, a1, ... exactly; a second one breaks the cycle
//! within a round, whatever the machine's load (a rate, which the test
//! also reports, swings with it).
//!
//! Root only (namespaces, links); each test says SKIPPED otherwise.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use piper_tests::*;

/// How long the ring may take to move again after a fault ends: the
/// launcher's silence rule (5.2 s at this interval) and a kept datagram's
/// wait (9 s), with room for a loaded machine.
const HEAL: Duration = Duration::from_secs(40);
/// The window the ring's rate is measured over.
const WINDOW: Duration = Duration::from_secs(8);

/// Runs a command that must succeed.
fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three namespaces (A, B, the broker's) and two links, removed on drop.
struct Net {
    a: String,
    b: String,
    broker: String,
    /// A's and B's ends of their links to the broker.
    a_dev: String,
    b_dev: String,
    /// The broker's address as A and B see it.
    to_a: String,
    to_b: String,
}

impl Net {
    fn new() -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}", (pid & 0xfffff) << 4 | (k & 0xf));
        let ns = |role: &str| format!("p26{role}{tag}");
        let net = Net {
            a: ns("a"),
            b: ns("b"),
            broker: ns("m"),
            a_dev: format!("va{tag}"),
            b_dev: format!("vb{tag}"),
            to_a: format!("10.{}.{}.1", 100 + k, pid % 250),
            to_b: format!("10.{}.{}.5", 100 + k, pid % 250),
        };
        for ns in [&net.a, &net.b, &net.broker] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let prefix = format!("10.{}.{}", 100 + k, pid % 250);
        for (host, dev, near, far) in [(&net.a, format!("va{tag}"), 2, 1), (&net.b, format!("vb{tag}"), 6, 5)] {
            let peer = format!("{dev}m");
            sh(&[
                "ip",
                "link",
                "add",
                &dev,
                "netns",
                host,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &net.broker,
            ]);
            sh(&[
                "ip",
                "-n",
                host,
                "addr",
                "add",
                &format!("{prefix}.{near}/30"),
                "dev",
                &dev,
            ]);
            sh(&[
                "ip",
                "-n",
                &net.broker,
                "addr",
                "add",
                &format!("{prefix}.{far}/30"),
                "dev",
                &peer,
            ]);
            sh(&["ip", "-n", host, "link", "set", &dev, "up"]);
            sh(&["ip", "-n", &net.broker, "link", "set", &peer, "up"]);
        }
        net
    }

    /// `args` run in namespace `ns`.
    fn cmd(ns: &str, program: &std::path::Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program).args(args);
        cmd
    }

    /// A's link goes down (a partition) or comes back.
    fn link_a(&self, up: bool) {
        sh(&[
            "ip",
            "-n",
            &self.a,
            "link",
            "set",
            &self.a_dev,
            if up { "up" } else { "down" },
        ]);
    }

    /// B's link goes down or comes back.
    fn link_b(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        sh(&["ip", "-n", &self.b, "link", "set", &self.b_dev, state]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b, &self.broker] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The ring across the namespaces, and what it runs on.
struct Ring {
    net: Net,
    dir: Dir,
    broker: Option<Proc>,
    broker_conf: PathBuf,
    bridges: [Option<Proc>; 2],
    sockets: [PathBuf; 2],
    launch_a: Proc,
    launch_b: Proc,
    /// Both launchers' stdout, in the order the nodes wrote it.
    lines: PathBuf,
    restarts: u32,
}

/// The ring's order: who receives after each node.
const CYCLE: [&str; 6] = ["a1", "a2", "a3", "b1", "b2", "b3"];

impl Ring {
    fn start(test: &str) -> Option<Ring> {
        if !may_run(Needs::Root("to make network namespaces")) || !may_run(Needs::Tool("mosquitto")) {
            return None;
        }
        let dir = Dir::new(test);
        let net = Net::new();
        let broker_conf = dir.aux("mosquitto.conf");
        std::fs::create_dir_all(broker_conf.parent().unwrap()).unwrap();
        std::fs::write(
            &broker_conf,
            "user root\npersistence false\nlistener 1883 0.0.0.0\nallow_anonymous true\n",
        )
        .unwrap();
        let sockets = [dir.aux("a"), dir.aux("b")];
        for s in &sockets {
            std::fs::create_dir_all(s).unwrap();
            std::fs::set_permissions(s, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        }
        let lines = dir.aux("lines");
        let shared = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&lines)
            .unwrap();
        let launch = |sockets: &PathBuf, label: &str, args: &[&str]| {
            let mut cmd = Command::new(bin("piper-launch"));
            cmd.arg("--dir").arg(sockets).args(args).env_remove("NOTIFY_SOCKET");
            Proc::spawn_with_stdout(&dir, label, cmd, shared.try_clone().unwrap().into())
        };
        let mut ring = Ring {
            broker: None,
            broker_conf,
            bridges: [None, None],
            launch_b: launch(
                &sockets[1],
                "launch-b",
                &[
                    "--nodes",
                    "b1,b2,b3",
                    "--ring-next",
                    "a1",
                    "--no-start",
                    "--json",
                    "--output",
                    "all",
                    "--interval",
                    "100",
                ],
            ),
            launch_a: launch(
                &sockets[0],
                "launch-a",
                &[
                    "--nodes",
                    "a1,a2,a3",
                    "--ring-next",
                    "b1",
                    "--json",
                    "--output",
                    "all",
                    "--interval",
                    "100",
                ],
            ),
            sockets,
            lines,
            net,
            dir,
            restarts: 0,
        };
        ring.start_broker();
        ring.start_bridge(0);
        ring.start_bridge(1);
        assert!(wait_until(HEAL, || ring.progress() >= 20), "the ring never ran");
        Some(ring)
    }

    fn start_broker(&mut self) {
        let cmd = Net::cmd(
            &self.net.broker,
            &tool_path("mosquitto").unwrap(),
            &["-c", self.broker_conf.to_str().unwrap()],
        );
        self.restarts += 1;
        self.broker = Some(Proc::spawn(&self.dir, &format!("mosquitto-{}", self.restarts), cmd));
    }

    fn start_bridge(&mut self, side: usize) {
        let (ns, broker, id) = match side {
            0 => (&self.net.a, &self.net.to_a, "a"),
            _ => (&self.net.b, &self.net.to_b, "b"),
        };
        let url = format!("mqtt://{broker}:1883");
        let sockets = self.sockets[side].to_str().unwrap().to_string();
        let cmd = Net::cmd(
            ns,
            &bin("piper-bridge"),
            &["--broker", &url, "--ring", "t", "--id", id, "--json", "--dir", &sockets],
        );
        self.restarts += 1;
        let mut cmd = cmd;
        cmd.env("RUST_LOG", "info");
        self.bridges[side] = Some(Proc::spawn(&self.dir, &format!("bridge-{id}-{}", self.restarts), cmd));
    }

    fn bridge(&mut self, side: usize) -> &mut Proc {
        self.bridges[side].as_mut().unwrap()
    }

    /// Each line's receiving node, in the order written.
    fn receivers(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.lines).unwrap_or_default();
        // Whole lines only: the last may still be coming.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }

    /// Messages a2 has received so far: the ring's progress.
    fn progress(&self) -> usize {
        self.receivers().iter().filter(|n| *n == "a2").count()
    }

    /// Returns as soon as `node` receives the message.
    fn await_receives(&self, node: &str) {
        let count = || self.receivers().iter().filter(|n| *n == node).count();
        let before = count();
        let deadline = Instant::now() + PROMPT;
        while count() == before {
            assert!(Instant::now() < deadline, "{node} received nothing for {PROMPT:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The ring's rate before a fault: the better of two windows.
    fn baseline(&self) -> usize {
        self.rate().max(self.rate())
    }

    /// The ring's rate now: messages a2 receives in [`WINDOW`].
    fn rate(&self) -> usize {
        let before = self.progress();
        let end = Instant::now() + WINDOW;
        // The window is the measurement itself, not a wait for an event.
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        self.progress() - before
    }

    /// After the fault: waits for the ring to move again (the time includes
    /// two rounds, about 1.5 s here), and checks that it carries exactly
    /// one message: over two windows of the rate (anything late arrives
    /// meanwhile), every node's line is followed by the next node's.
    /// Returns how long it took to move, from `since`, and the rate.
    fn heals(&self, since: Instant) -> (Duration, usize) {
        // Moving again is a2 receiving three more: the message has gone
        // round through both hosts twice (one a2 receives can be a start
        // of the chain that a bridge then drops or keeps).
        let before = self.progress();
        assert!(
            wait_until(HEAL, || self.progress() >= before + 3),
            "the ring did not move again within {HEAL:?}"
        );
        let moved = since.elapsed();
        let from = self.receivers().len();
        let rate = self.rate();
        let rate = rate.max(self.rate());
        let seen = &self.receivers()[from..];
        assert!(seen.len() >= CYCLE.len(), "the ring stopped: {seen:?}");
        let next = |node: &str| CYCLE[(CYCLE.iter().position(|n| *n == node).unwrap() + 1) % CYCLE.len()];
        for (k, pair) in seen.windows(2).enumerate() {
            assert_eq!(
                pair[1],
                next(&pair[0]),
                "not one message in the ring: after line {} of {}, {seen:?}",
                from + k,
                self.lines.display()
            );
        }
        let again = self.launch_a.stderr().matches("starting the chain again").count();
        eprintln!("the launcher started the chain again {again} times");
        (moved, rate)
    }

    /// Stops everything; the bridges' counts add up, and the directories
    /// are left empty.
    fn finish(mut self) {
        self.launch_a.signal(Signal::SIGTERM);
        assert_eq!(self.launch_a.code(PROMPT), Some(0));
        self.launch_b.signal(Signal::SIGTERM);
        assert_eq!(self.launch_b.code(PROMPT), Some(0));
        for side in 0..2 {
            let bridge = self.bridge(side);
            bridge.signal(Signal::SIGTERM);
            assert_eq!(bridge.code(PROMPT), Some(0));
            let err = bridge.stderr();
            let line = err.lines().find(|l| l.starts_with("{\"bridge\"")).expect("a summary");
            let num = |key: &str| -> u64 {
                let at = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
                line[at..at + line[at..].find([',', '}']).unwrap()].parse().unwrap()
            };
            assert_eq!(
                num("from_nodes"),
                num("published") + num("dropped_out") + num("refused"),
                "{line}"
            );
            assert_eq!(num("from_broker"), num("delivered") + num("dropped_in"), "{line}");
        }
        for s in &self.sockets {
            assert_eq!(std::fs::read_dir(s).unwrap().count(), 0, "{} not empty", s.display());
        }
        if let Some(broker) = self.broker.as_mut() {
            broker.signal(Signal::SIGTERM);
            broker.wait(PROMPT);
        }
    }
}

fn partition(test: &str, down: Duration) {
    let Some(ring) = Ring::start(test) else { return };
    let baseline = ring.baseline();
    // The link goes down just as a3 takes the message: a3 sends it on to
    // b1 100 ms later, through bridge a, into a connection that cannot
    // deliver it. Where TCP keeps it and delivers it once the link is back,
    // late, after the launcher has started the chain again, the ring holds
    // two messages from then on.
    ring.await_receives("a3");
    ring.net.link_a(false);
    std::thread::sleep(down);
    ring.net.link_a(true);
    let up = Instant::now();
    let (moved, rate) = ring.heals(up);
    eprintln!(
        "MEASURED {test}: link down {down:?}; the ring moved again {moved:?} after the link came back; \
         a2 received {rate} per {WINDOW:?} after, {baseline} before"
    );
    ring.finish();
}

#[test]
fn a_3_s_partition_leaves_exactly_one_message() {
    partition("netns-part3", Duration::from_secs(3));
}

#[test]
fn a_6_5_s_partition_leaves_exactly_one_message() {
    partition("netns-part6", Duration::from_millis(6500));
}

#[test]
fn a_9_s_partition_leaves_exactly_one_message() {
    partition("netns-part9", Duration::from_secs(9));
}

#[test]
fn a_12_s_partition_leaves_exactly_one_message() {
    partition("netns-part12", Duration::from_secs(12));
}

#[test]
fn a_25_s_partition_leaves_exactly_one_message() {
    partition("netns-part25", Duration::from_secs(25));
}

#[test]
fn a_6_5_s_partition_of_the_host_that_does_not_start_the_chain_leaves_exactly_one_message() {
    let Some(ring) = Ring::start("netns-part-b") else {
        return;
    };
    let baseline = ring.baseline();
    // Cut as b3 takes the message: it is sent into bridge b's dead
    // connection, and what A's launcher sends meanwhile meets B's link down.
    ring.await_receives("b3");
    ring.net.link_b(false);
    std::thread::sleep(Duration::from_millis(6500));
    ring.net.link_b(true);
    let up = Instant::now();
    let (moved, rate) = ring.heals(up);
    eprintln!(
        "MEASURED B's link down 6.5s: the ring moved again {moved:?} after the link came back; \
         a2 received {rate} per {WINDOW:?} after, {baseline} before"
    );
    ring.finish();
}

#[test]
fn a_broker_killed_and_restarted_leaves_exactly_one_message() {
    let Some(mut ring) = Ring::start("netns-broker") else {
        return;
    };
    let baseline = ring.baseline();
    let broker = ring.broker.as_mut().unwrap();
    broker.signal(Signal::SIGKILL);
    assert!(broker.wait(PROMPT).is_some());
    let fault = Instant::now();
    ring.start_broker();
    let (moved, rate) = ring.heals(fault);
    eprintln!("MEASURED broker kill -9 and restart: the ring moved again {moved:?} after; a2 received {rate} per {WINDOW:?} after, {baseline} before");
    ring.finish();
}

#[test]
fn a_broker_restart_while_a_bridge_died_leaves_exactly_one_message() {
    let Some(mut ring) = Ring::start("netns-broker-bridge") else {
        return;
    };
    let baseline = ring.baseline();
    let broker = ring.broker.as_mut().unwrap();
    broker.signal(Signal::SIGKILL);
    assert!(broker.wait(PROMPT).is_some());
    let fault = Instant::now();
    ring.bridge(1).signal(Signal::SIGKILL);
    assert_eq!(ring.bridge(1).code(PROMPT), Some(137));
    ring.start_broker();
    // As systemd would, a second later.
    std::thread::sleep(Duration::from_secs(1));
    ring.start_bridge(1);
    let (moved, rate) = ring.heals(fault);
    eprintln!("MEASURED broker kill -9, bridge b kill -9, both restarted: the ring moved again {moved:?} after; a2 received {rate} per {WINDOW:?} after, {baseline} before");
    ring.finish();
}

#[test]
fn a_bridge_killed_and_restarted_leaves_exactly_one_message() {
    let Some(mut ring) = Ring::start("netns-bridge") else {
        return;
    };
    let baseline = ring.baseline();
    ring.bridge(0).signal(Signal::SIGKILL);
    assert_eq!(ring.bridge(0).code(PROMPT), Some(137));
    let fault = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    ring.start_bridge(0);
    let (moved, rate) = ring.heals(fault);
    eprintln!("MEASURED bridge a kill -9, restarted 1 s later: the ring moved again {moved:?} after; a2 received {rate} per {WINDOW:?} after, {baseline} before");
    ring.finish();
}
