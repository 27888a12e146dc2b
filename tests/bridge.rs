//! piper-bridge: rings across two "hosts" (two socket directories, each
//! with its own bridge) through a real mosquitto broker that each test
//! starts on its own port and stops afterwards.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use piper_tests::*;

/// How long a cross-broker exchange of a few thousand messages may take.
const LONG: Duration = Duration::from_secs(60);

/// A mosquitto of the test's own, on 127.0.0.1 at a free port.
struct Broker {
    proc: Proc,
    port: u16,
    config: PathBuf,
}

impl Broker {
    fn start(dir: &Dir) -> Option<Broker> {
        Broker::start_with(dir, "allow_anonymous true\n")
    }

    /// A broker whose listener has `settings` (a login, TLS).
    fn start_with(dir: &Dir, settings: &str) -> Option<Broker> {
        if !may_run(Needs::Tool("mosquitto")) {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.aux("mosquitto.conf");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        // As root, mosquitto would switch to its own user, which cannot read
        // the test's files.
        let user = if nix::unistd::geteuid().is_root() {
            "user root\n"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!("{user}persistence false\nlistener {port} 127.0.0.1\n{settings}"),
        )
        .unwrap();
        let mut broker = Broker {
            proc: Broker::spawn(dir, &config, "mosquitto"),
            port,
            config,
        };
        broker.await_listening();
        Some(broker)
    }

    fn spawn(dir: &Dir, config: &Path, label: &str) -> Proc {
        let mut cmd = Command::new(tool_path("mosquitto").unwrap());
        cmd.arg("-c").arg(config);
        Proc::spawn(dir, label, cmd)
    }

    fn await_listening(&mut self) {
        let port = self.port;
        assert!(
            wait_until(PROMPT, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "mosquitto never listened on {port}"
        );
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker outright, as a crash would.
    fn kill(&mut self) {
        self.proc.signal(Signal::SIGKILL);
        assert!(self.proc.wait(PROMPT).is_some());
    }

    /// A bridge that is only retained presence messages, "ghost", offers
    /// `name`: the bridges stand in for it, and what they publish for it
    /// goes nowhere.
    fn ghost_offers(&self, name: &str) {
        self.offers("ghost", &[name]);
    }

    /// Bridge `id` (retained messages only) offers `names`, as the bridges
    /// do: its state, and one message per name, in one epoch.
    fn offers(&self, id: &str, names: &[&str]) {
        let mut messages = vec![(format!("piper/t/hosts/{id}"), EPOCH.to_vec(), true)];
        messages.extend((names.iter()).map(|name| (format!("piper/t/names/{id}/{name}"), EPOCH.to_vec(), true)));
        publish_many(self.port, &messages);
    }

    fn restart(&mut self, dir: &Dir) {
        self.proc = Broker::spawn(dir, &self.config, "mosquitto-again");
        self.await_listening();
    }
}

/// One side: a socket directory and its bridge.
struct Host {
    sockets: PathBuf,
    bridge: Option<Proc>,
    id: &'static str,
    /// The bridge's notify socket: its STATUS= lines carry its counts.
    manager: Ready,
    /// Messages on it before the last [`Host::mark`].
    seen: usize,
    /// How many messages the manager had, and since when: [`Host::settled`].
    quiet: Option<(usize, std::time::Instant)>,
    /// The uid the bridge runs as, if not ours.
    uid: Option<u32>,
}

impl Host {
    fn new(dir: &Dir, id: &'static str) -> Host {
        let sockets = dir.aux(id);
        std::fs::create_dir_all(&sockets).unwrap();
        std::fs::set_permissions(&sockets, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Host {
            sockets,
            bridge: None,
            id,
            manager: Ready::new(),
            seen: 0,
            quiet: None,
            uid: None,
        }
    }

    fn start_bridge(&mut self, dir: &Dir, broker: &Broker, label: &str) {
        self.start_bridge_with(dir, &broker.url(), &[], label);
    }

    fn start_bridge_with(&mut self, dir: &Dir, url: &str, args: &[&str], label: &str) {
        self.start_bridge_env(dir, url, args, &[], label);
    }

    /// A bridge with `args`, and `env` set besides the usual.
    fn start_bridge_env(&mut self, dir: &Dir, url: &str, args: &[&str], env: &[(&str, &str)], label: &str) {
        let mut cmd = Command::new(bin("piper-bridge"));
        cmd.envs(env.iter().copied());
        if let Some(uid) = self.uid {
            cmd.uid(uid).gid(uid);
        }
        cmd.args(args)
            .args([
                "--broker",
                url,
                "--ring",
                "t",
                "--id",
                self.id,
                "--json",
                "--keep-alive",
                "5",
            ])
            .arg("--dir")
            .arg(&self.sockets)
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", self.manager.address());
        self.bridge = Some(Proc::spawn(dir, label, cmd));
    }

    fn bridge(&mut self) -> &mut Proc {
        self.bridge.as_mut().expect("a bridge")
    }

    /// Whether a live socket for `name` is here (a node or a stand-in).
    fn has(&self, name: &str) -> bool {
        let dir = piper_core::SocketDir::open_existing(&self.sockets).unwrap();
        dir.probe(&piper_core::Name::new(name).unwrap()).ok() == Some(piper_core::Liveness::Live)
    }

    fn await_has(&self, name: &str) {
        assert!(
            wait_until(PROMPT, || self.has(name)),
            "no live '{name}' in {} (its bridge never heard of it?)",
            self.sockets.display()
        );
    }

    fn node(&self, dir: &Dir, label: &str, name: &str, args: &[&str]) -> Proc {
        Proc::spawn(dir, label, node_cmd_at(&self.sockets, name, args))
    }

    fn launch(&self, dir: &Dir, label: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin("piper-launch"));
        cmd.arg("--dir")
            .arg(&self.sockets)
            .args(args)
            .env_remove("NOTIFY_SOCKET");
        Proc::spawn(dir, label, cmd)
    }

    /// Stops the bridge with SIGTERM: exit 0, and its counts.
    fn stop_bridge(&mut self) -> Counts {
        let bridge = self.bridge();
        bridge.signal(Signal::SIGTERM);
        assert_eq!(bridge.code(PROMPT), Some(0), "bridge exit code");
        counts(&bridge.stderr())
    }

    /// Forgets the STATUS= lines so far (some may be old: the queue holds
    /// ten, and later ones were dropped while nobody read).
    fn mark(&mut self) {
        let pid = self.bridge().pid();
        self.seen = self.manager.messages(pid).len();
    }

    /// Whether the counts have stopped moving: the bridge sends STATUS= on
    /// every change, at most once a second, so no new one for 1.5 s (and
    /// the last one connected) means that nothing moved.
    fn settled(&mut self) -> bool {
        let pid = self.bridge().pid();
        let statuses = self.manager.messages(pid);
        let now = std::time::Instant::now();
        let count = statuses.iter().filter(|m| m.starts_with("STATUS=")).count();
        if self.quiet.is_none_or(|(n, _)| n != count) {
            self.quiet = Some((count, now));
        }
        let connected = (statuses.iter().rev())
            .find(|m| m.starts_with("STATUS="))
            .is_some_and(|m| m.starts_with("STATUS=connected"));
        connected
            && self
                .quiet
                .is_some_and(|(_, since)| now - since >= Duration::from_millis(1500))
    }

    /// Binds node `name` here in the test process, its receives bounded by
    /// PROMPT.
    fn bind(&self, name: &str) -> piper_core::Node {
        let dir = piper_core::SocketDir::open_existing(&self.sockets).unwrap();
        let node = piper_core::Node::bind(&dir, piper_core::Name::new(name).unwrap()).unwrap();
        node.set_recv_timeout(PROMPT).unwrap();
        node
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.sockets)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// A bridge's summary counts, from its `--json` line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    from_nodes: u64,
    published: u64,
    dropped_out: u64,
    refused: u64,
    from_broker: u64,
    delivered: u64,
    dropped_in: u64,
    reconnects: u64,
    ignored: u64,
}

impl Counts {
    /// Every datagram and every message is accounted for, on each side.
    fn assert_balanced(&self, side: &str) {
        assert_eq!(
            self.from_nodes,
            self.published + self.dropped_out + self.refused,
            "{side}: datagrams from nodes = published + dropped + refused: {self:?}"
        );
        assert_eq!(
            self.from_broker,
            self.delivered + self.dropped_in,
            "{side}: messages from the broker = delivered + dropped: {self:?}"
        );
    }
}

fn counts(stderr: &str) -> Counts {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("{\"bridge\""))
        .unwrap_or_else(|| panic!("no JSON summary in:\n{stderr}"));
    let num = |key: &str| -> u64 {
        let at = line
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        let rest = &line[at + key.len() + 3..];
        rest[..rest.find([',', '}']).unwrap()].parse().unwrap()
    };
    Counts {
        from_nodes: num("from_nodes"),
        published: num("published"),
        dropped_out: num("dropped_out"),
        refused: num("refused"),
        from_broker: num("from_broker"),
        delivered: num("delivered"),
        dropped_in: num("dropped_in"),
        reconnects: num("reconnects"),
        ignored: num("ignored"),
    }
}

/// A launcher's per-node received counts, from its `--json` summary.
fn received(stderr: &str, node: &str) -> u64 {
    member_count(stderr, node, "received")
}

/// A launcher's per-node count `key` (received, sent, dropped), from its
/// `--json` summary.
fn member_count(stderr: &str, node: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("{\"nodes\""))
        .unwrap_or_else(|| panic!("no JSON summary in:\n{stderr}"));
    let at = line.find(&format!("\"name\":\"{node}\"")).expect("the node");
    let rest = &line[at..];
    let key = format!("\"{key}\":");
    let at = rest.find(&key).unwrap() + key.len();
    rest[at..at + rest[at..].find([',', '}']).unwrap()].parse().unwrap()
}

fn lines_of(proc: &Proc, needle: &str) -> usize {
    proc.stdout().lines().filter(|l| l.contains(needle)).count()
}

/// An epoch, as a bridge's presence carries it.
const EPOCH: &[u8; 16] = b"00000000000000e1";

/// Publishes one MQTT 3.1.1 message at QoS 0, as any client with access to
/// the broker could: connect, publish, disconnect.
fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    publish_many(port, &[(topic.to_string(), payload.to_vec(), retain)]);
}

/// Publishes MQTT 3.1.1 messages at QoS 0 on one connection, in order.
fn publish_many(port: u16, messages: &[(String, Vec<u8>, bool)]) {
    fn remaining(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let mut byte = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if n == 0 {
                break;
            }
        }
    }
    fn string(s: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.extend_from_slice(&[4, 0x02, 0, 30]);
    string(format!("test-{}", std::process::id()).as_bytes(), &mut body);
    let mut packet = vec![0x10];
    remaining(body.len(), &mut packet);
    packet.extend(body);
    stream.write_all(&packet).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK");
    let mut packets = Vec::new();
    for (topic, payload, retain) in messages {
        let mut body = Vec::new();
        string(topic.as_bytes(), &mut body);
        body.extend_from_slice(payload);
        packets.push(0x30 | u8::from(*retain));
        remaining(body.len(), &mut packets);
        packets.extend(body);
    }
    packets.extend([0xe0, 0]);
    stream.write_all(&packets).unwrap();
    // The broker closes the connection after the DISCONNECT.
    let _ = stream.read(&mut [0u8; 1]);
}

#[test]
fn ping_and_pong_on_two_hosts_exchange_10000_messages_through_the_broker() {
    let dir = Dir::new("bridge-pingpong");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    a.start_bridge(&dir, &broker, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    let mut pong = b.node(&dir, "pong", "pong", &[]);
    a.await_has("pong");

    let mut ping = a.node(&dir, "ping", "ping", &["--send", "pong", "--count", "10000", "--quiet"]);
    assert_eq!(ping.code(LONG), Some(0), "ping's exit");
    let ping_summary = ping.summary();
    assert_eq!((ping_summary.received, ping_summary.sent), (10_000, 10_001));
    // The seed's line for each, on the far host, from the real sender's name.
    assert!(
        wait_until(PROMPT, || lines_of(&pong, "pong received: 'ping'") == 10_001),
        "pong printed {} lines",
        lines_of(&pong, "pong received: 'ping'")
    );
    assert_eq!(pong.lines().len(), 10_001);
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let s = pong.summary();
    // Pong's last answer goes to B's stand-in for ping, which B drops once
    // A has seen ping go (A's next look at its directory, within 100 ms of
    // ping's exit): the answer is sent, or, when B dropped the stand-in
    // first, dropped by pong; one sent as B drops the stand-in, unread,
    // is dropped by B. Each outcome has its exact counts.
    let answered = match (s.received, s.sent, s.dropped) {
        (10_001, 10_001, 0) => 1,
        (10_001, 10_000, 1) => 0,
        other => panic!("pong's counts: {other:?}"),
    };
    // Each side found the other's node gone before the bridges stop.
    assert!(wait_until(PROMPT, || !a.has("pong") && !b.has("ping")));

    let (ca, cb) = (a.stop_bridge(), b.stop_bridge());
    ca.assert_balanced("a");
    cb.assert_balanced("b");
    assert_eq!(
        (ca.from_nodes, ca.published, ca.dropped_out, ca.refused),
        (10_001, 10_001, 0, 0)
    );
    let unread = cb.dropped_out;
    assert!(unread <= answered, "{cb:?}, pong answered its last: {answered}");
    let published = 10_000 + answered - unread;
    assert_eq!(
        (cb.from_nodes, cb.published, cb.refused),
        (10_000 + answered, published, 0)
    );
    assert_eq!((cb.from_broker, cb.delivered), (10_001, 10_001));
    // Pong's last answer, if published, found ping gone, or reached its
    // socket as it stopped (counted by ping as dropped if it was still
    // reading).
    assert_eq!(ca.from_broker, published);
    let delivered = 10_000 + ping_summary.dropped..=published;
    assert!(
        delivered.contains(&ca.delivered),
        "{ca:?}, ping dropped {}, pong answered its last: {answered}",
        ping_summary.dropped
    );
    assert_eq!((ca.reconnects, cb.reconnects), (0, 0));
    // Nothing to warn about: no invalid names, no clash with its own
    // names, a goodbye the broker took; and stand-ins named as bound.
    for (bridge, far) in [(a.bridge(), "pong"), (b.bridge(), "ping")] {
        let err = bridge.stderr();
        assert!(!err.contains("invalid") && !err.contains("offered by"), "{err}");
        assert!(!err.contains("goodbye") && !err.contains("bound: no nodes"), "{err}");
        assert_eq!(err.matches(&format!("stand-ins bound: {far}\n")).count(), 1, "{err}");
    }
    assert_eq!(a.entries(), Vec::<String>::new(), "stand-ins removed");
    assert_eq!(b.entries(), Vec::<String>::new(), "stand-ins removed");
}

#[test]
fn a_six_node_ring_split_three_and_three_runs_through_two_launchers() {
    let dir = Dir::new("bridge-split");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    a.start_bridge(&dir, &broker, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    // Either side may start first: A's launcher waits for b1's stand-in.
    let mut launch_a = a.launch(
        &dir,
        "launch-a",
        &[
            "--nodes",
            "a1,a2,a3",
            "--ring-next",
            "b1",
            "--count",
            "2000",
            "--quiet",
            "--json",
        ],
    );
    let mut launch_b = b.launch(
        &dir,
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
        ],
    );
    assert_eq!(launch_a.code(LONG), Some(0), "launcher a");
    let err = launch_a.stderr();
    // The chain starts at a2 (a1's name, sent to a2), so a2 reaches its
    // count with a1's 1999th answer and a3 with a2's 2000th. a3's last
    // answer goes round through B while A tears down: it reaches a1 (2000)
    // or finds it stopping (1999); a1's answer to it reaches a2 (2001) or
    // finds it stopping.
    let (a1, a2) = (received(&err, "a1"), received(&err, "a2"));
    assert_eq!(received(&err, "a3"), 2000);
    assert!((1999..=2000).contains(&a1), "a1 {a1}");
    assert!(a2 == 2000 || (a2 == 2001 && a1 == 2000), "a1 {a1}, a2 {a2}");
    // B's nodes saw every message a3 sent, in their own order.
    for (node, from) in [("b1", "a3"), ("b2", "b1"), ("b3", "b2")] {
        let want = format!("{node} received: '{from}'");
        assert!(
            wait_until(PROMPT, || lines_of(&launch_b, &want) == 2000),
            "{want}: {} lines",
            lines_of(&launch_b, &want)
        );
    }
    launch_b.signal(Signal::SIGTERM);
    assert_eq!(launch_b.code(PROMPT), Some(0));
    let err = launch_b.stderr();
    assert_eq!(
        [received(&err, "b1"), received(&err, "b2"), received(&err, "b3")],
        [2000, 2000, 2000]
    );
    // b3's last answer goes to B's stand-in for a1, which B drops once A
    // has seen A's nodes go in its teardown (A's next look at its
    // directory, within 100 ms): the answer is sent, or, when B dropped the
    // stand-in first, dropped by b3; one sent as B drops the stand-in,
    // unread, is dropped by B. Each outcome has its exact counts.
    let answered = match (member_count(&err, "b3", "sent"), member_count(&err, "b3", "dropped")) {
        (2000, 0) => 1,
        (1999, 1) => 0,
        other => panic!("b3's sent and dropped: {other:?}"),
    };
    let (ca, cb) = (a.stop_bridge(), b.stop_bridge());
    ca.assert_balanced("a");
    cb.assert_balanced("b");
    // a3's 2000 went out through A; b3's came back through B, and A
    // delivered what a1 received (the last may have found a1 torn down).
    assert_eq!(
        (ca.from_nodes, ca.published, cb.from_broker, cb.delivered),
        (2000, 2000, 2000, 2000)
    );
    let unread = cb.dropped_out;
    assert!(unread <= answered, "{cb:?}, b3 answered its last: {answered}");
    let back = 1999 + answered - unread;
    assert_eq!(cb.from_nodes, 1999 + answered);
    assert_eq!((cb.published, ca.from_broker), (back, back));
    assert!((a1..=back).contains(&ca.delivered), "{ca:?}, a1 received {a1}");
    assert_eq!(a.entries(), Vec::<String>::new());
    assert_eq!(b.entries(), Vec::<String>::new());
}

#[test]
fn a_broker_restart_mid_run_is_survived_and_every_message_is_accounted_for() {
    let dir = Dir::new("bridge-restart");
    let Some(mut broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    a.start_bridge(&dir, &broker, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    let mut launch_b = b.launch(
        &dir,
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
        ],
    );
    let mut launch_a = a.launch(
        &dir,
        "launch-a",
        &["--nodes", "a1,a2,a3", "--ring-next", "b1", "--json", "--output", "all"],
    );
    let progress = |launch: &Proc| lines_of(launch, "a2 received: ");
    assert!(wait_until(LONG, || progress(&launch_a) >= 300), "the ring runs");

    broker.kill();
    assert!(
        wait_until(PROMPT, || a.bridge().stderr().contains("lost the broker")
            && b.bridge().stderr().contains("lost the broker")),
        "both bridges see the broker go"
    );
    let before = progress(&launch_a);
    broker.restart(&dir);
    // The message in flight either came through (it was between the
    // bridges' sockets and their queues while the broker was away, and was
    // sent on the new connection) or was lost: then the launcher that
    // started the chain starts it again once the ring has been silent,
    // and the silence lets every node flush its lines.
    let reinjected = || launch_a.stderr().contains("starting the chain again");
    assert!(
        wait_until(LONG, || reinjected() || progress(&launch_a) >= before + 5000),
        "the ring neither went on nor was started again"
    );
    let before = progress(&launch_a);
    assert!(
        wait_until(LONG, || progress(&launch_a) >= before + 300),
        "the ring resumes: {} lines of a2 after {before}",
        progress(&launch_a)
    );
    for host in [&mut a, &mut b] {
        assert!(host.bridge().stderr().contains("reconnected to the broker after"));
    }

    launch_a.signal(Signal::SIGTERM);
    assert_eq!(launch_a.code(PROMPT), Some(0));
    launch_b.signal(Signal::SIGTERM);
    assert_eq!(launch_b.code(PROMPT), Some(0));
    // What the last nodes sent reaches the other bridge before they stop.
    a.mark();
    b.mark();
    assert!(
        wait_until(PROMPT, || a.settled() && b.settled()),
        "the bridges' counts settle"
    );
    let (ca, cb) = (a.stop_bridge(), b.stop_bridge());
    ca.assert_balanced("a");
    cb.assert_balanced("b");
    assert_eq!((ca.reconnects, cb.reconnects), (1, 1));
    // QoS 0 is at most once: the one message in flight when the broker
    // died came through, or was dropped by a bridge while the broker was
    // away (counted), or died inside the broker (the one loss nobody can
    // count, seen as published on one side and never received on the
    // other). A lost message is replaced once, by the launcher.
    let lost_a_to_b = ca.published - cb.from_broker;
    let lost_b_to_a = cb.published - ca.from_broker;
    let lost = lost_a_to_b + lost_b_to_a + ca.dropped_out + cb.dropped_out;
    let err = launch_a.stderr();
    let again = err.matches("starting the chain again").count() as u64;
    assert!(lost <= 1, "{ca:?} {cb:?}");
    assert_eq!(again, lost, "re-injections = messages lost: {ca:?} {cb:?}\n{err}");
    assert_eq!(a.entries(), Vec::<String>::new());
    assert_eq!(b.entries(), Vec::<String>::new());
}

#[test]
fn bad_names_and_payloads_from_the_broker_are_dropped_and_touch_nothing_outside() {
    let dir = Dir::new("bridge-hostile");
    let Some(broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    a.start_bridge(&dir, &broker, "bridge-a");
    let mut pong = a.node(&dir, "pong", "pong", &[]);
    a.await_has("pong");
    // The bridge says it is connected once the broker has taken its
    // subscriptions: pong's topic among them.
    assert!(wait_until(PROMPT, || a.bridge().stderr().contains("offering pong")
        && a.bridge().stderr().contains("connected to the broker")));
    let outside = |root: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let parent = a.sockets.parent().unwrap().to_path_buf();
    let before = outside(&parent);

    let port = broker.port;
    // Topics for names that are not offered here never reach the bridge:
    // it subscribes to its own nodes' topics only.
    publish(port, "piper/t/msg/../x", b"ping\nhello", false);
    publish(port, "piper/t/msg/pong", b"../../etc\nhello", false);
    publish(port, "piper/t/msg/pong", b"no sender line", false);
    publish(port, "piper/t/msg/nothere", b"ping\nhello", false);
    publish(port, "piper/t/hosts/evil", EPOCH, true);
    publish(port, "piper/t/names/evil/ok1", EPOCH, true);
    publish(port, "piper/t/names/evil/..", EPOCH, true);
    publish(port, "piper/t/names/evil/ok2", b"../../etc/passwd", true);
    publish(port, "piper/t/hosts/..", EPOCH, false);
    publish(port, "piper/t/msg/pong", b"\nunnamed", false);
    assert!(wait_until(PROMPT, || lines_of(&pong, "pong received: 'unnamed'") == 1));
    a.await_has("ok1");
    // The evil bridge leaves: its stand-in goes.
    publish(port, "piper/t/hosts/evil", b"", true);
    assert!(wait_until(PROMPT, || !a.has("ok1")), "the stand-in for ok1 is dropped");

    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert_eq!(pong.lines(), ["pong received: 'unnamed'"]);
    let ca = a.stop_bridge();
    ca.assert_balanced("a");
    assert_eq!((ca.from_broker, ca.delivered, ca.dropped_in, ca.ignored), (3, 1, 2, 3));
    let err = a.bridge().stderr();
    assert!(!err.contains("'../x'") && !err.contains("nothere"), "{err}");
    for said in [
        "dropped a malformed message for 'pong': the sender's name is not a valid name",
        "dropped a malformed message for 'pong': no sender line",
        "ignored the presence of 'evil/..': not a valid id or name",
        "ignored bridge 'evil''s offer of 'ok2': not an epoch (16 hex digits)",
        "ignored the presence of '..': not a valid id or name",
    ] {
        assert!(err.contains(said), "stderr lacks {said:?}");
    }
    assert_eq!(outside(&parent), before, "nothing appeared beside the socket directory");
    assert_eq!(a.entries(), Vec::<String>::new());
}

#[test]
fn a_bridge_killed_with_sigkill_is_announced_gone_and_its_restart_reclaims_its_stand_ins() {
    let dir = Dir::new("bridge-kill9");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    a.start_bridge(&dir, &broker, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    let _x = a.node(&dir, "x", "x", &["--quiet"]);
    let mut pong = b.node(&dir, "pong", "pong", &["--quiet"]);
    b.await_has("x");
    a.await_has("pong");

    a.bridge().signal(Signal::SIGKILL);
    assert_eq!(a.bridge().code(PROMPT), Some(137));
    // Its last will (keep-alive 1 s) tells B: B's stand-in for x goes.
    assert!(wait_until(PROMPT, || !b.has("x")), "b still stands in for x");
    // A's stand-in for pong is left behind, stale.
    assert!(a.entries().contains(&"piper-pong".to_string()));
    assert!(!a.has("pong"));

    a.start_bridge(&dir, &broker, "bridge-a-again");
    a.await_has("pong");
    b.await_has("x");
    let mut ping = a.node(&dir, "ping", "ping", &["--send", "pong", "--count", "10", "--quiet"]);
    assert_eq!(ping.code(LONG), Some(0));
    assert_eq!(ping.summary().received, 10);
    assert!(
        !a.bridge().stderr().contains("no stand-in"),
        "the stale stand-in was reclaimed"
    );
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    a.stop_bridge().assert_balanced("a");
    b.stop_bridge().assert_balanced("b");
}

#[test]
fn a_far_node_that_is_gone_is_reported_and_then_not_found_as_locally() {
    let dir = Dir::new("bridge-gone");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    a.start_bridge(&dir, &broker, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    let mut pong = b.node(&dir, "pong", "pong", &["--quiet"]);
    a.await_has("pong");
    pong.signal(Signal::SIGKILL);
    assert_eq!(pong.code(PROMPT), Some(137));

    // The stand-in still takes the datagram; B finds pong gone, says so,
    // and stops offering it.
    let mut kick = a.node(&dir, "kick", "ping", &["--kick", "pong"]);
    assert_eq!(kick.code(PROMPT), Some(0));
    assert!(
        wait_until(PROMPT, || b
            .bridge()
            .stderr()
            .contains("cannot deliver to 'pong': peer 'pong' is gone")),
        "bridge b's warning"
    );
    assert!(wait_until(PROMPT, || !a.has("pong")), "a still stands in for pong");
    // Now a send fails at the sender, as for a local node that is gone.
    let mut kick = a.node(&dir, "kick-again", "ping", &["--kick", "pong"]);
    assert_eq!(kick.code(PROMPT), Some(1));
    assert!(kick.stderr().contains("peer 'pong' not found"), "{}", kick.stderr());
    let (ca, cb) = (a.stop_bridge(), b.stop_bridge());
    ca.assert_balanced("a");
    cb.assert_balanced("b");
    assert_eq!((cb.from_broker, cb.delivered, cb.dropped_in), (1, 0, 1));
}

/// Runs `cmd`, which must succeed.
#[test]
fn the_bridge_serves_its_counts_and_its_link_to_prometheus() {
    if !may_run(Needs::Tool("promtool")) {
        return;
    }
    let dir = Dir::new("bridge-metrics");
    let Some(mut broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    let socket = dir.aux("a-metrics.sock");
    a.start_bridge_with(
        &dir,
        &broker.url(),
        &["--metrics", socket.to_str().unwrap()],
        "bridge-a",
    );
    b.start_bridge(&dir, &broker, "bridge-b");
    let mut pong = b.node(&dir, "pong", "pong", &["--quiet"]);
    a.await_has("pong");
    let mut ping = a.node(&dir, "ping", "ping", &["--send", "pong", "--count", "100", "--quiet"]);
    assert_eq!(ping.code(LONG), Some(0), "ping's exit");
    let at = http::At::Socket(&socket);
    let mut text = String::new();
    assert!(
        wait_until(PROMPT, || {
            text = http::scrape(at);
            http::sample(&text, "piper_bridge_delivered_total") >= Some(100.0)
        }),
        "{text}"
    );
    let (passed, said) = http::promtool(&text);
    assert!(passed && said.trim().is_empty(), "promtool: {said}\n{text}");
    let value = |series: &str| http::sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(value("piper_bridge_info{ring=\"t\",id=\"a\"}"), 1.0);
    assert_eq!(value("piper_bridge_link_up"), 1.0);
    assert!(value("piper_bridge_published_total") >= 100.0);
    assert_eq!(value("piper_bridge_dropped_total{direction=\"out\"}"), 0.0);
    assert_eq!(value("piper_bridge_remote_nodes"), 1.0, "pong's stand-in");
    let up_since = value("piper_bridge_link_change_timestamp_seconds");
    // The broker goes: the link is down within its 2 s of silence.
    broker.kill();
    assert!(
        wait_until(PROMPT, || {
            text = http::scrape(at);
            http::sample(&text, "piper_bridge_link_up") == Some(0.0)
        }),
        "{text}"
    );
    assert!(http::sample(&text, "piper_bridge_link_change_timestamp_seconds") > Some(up_since));
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    a.stop_bridge();
    b.stop_bridge();
    assert!(!socket.exists(), "the metrics socket goes with the bridge");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate it signed for 127.0.0.1, made with openssl.
fn certificates(dir: &Dir) -> (PathBuf, PathBuf, PathBuf) {
    let at = |f: &str| dir.aux(f);
    std::fs::create_dir_all(at("")).unwrap();
    let openssl = || Command::new(tool_path("openssl").unwrap());
    run(openssl()
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=piper test CA",
        ])
        .arg("-keyout")
        .arg(at("ca.key"))
        .arg("-out")
        .arg(at("ca.pem")));
    run(openssl()
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(at("server.key"))
        .arg("-out")
        .arg(at("server.csr")));
    std::fs::write(
        at("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(openssl()
        .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
        .arg("-in")
        .arg(at("server.csr"))
        .arg("-CA")
        .arg(at("ca.pem"))
        .arg("-CAkey")
        .arg(at("ca.key"))
        .arg("-extfile")
        .arg(at("server.ext"))
        .arg("-out")
        .arg(at("server.pem")));
    (at("ca.pem"), at("server.pem"), at("server.key"))
}

#[test]
fn tls_and_a_login_are_used_when_asked_and_a_wrong_login_ends_the_bridge_with_1() {
    if !may_run(Needs::Tool("openssl")) || !may_run(Needs::Tool("mosquitto_passwd")) {
        return;
    }
    let dir = Dir::new("bridge-tls");
    let (ca, cert, key) = certificates(&dir);
    let passwords = dir.aux("passwords");
    run(Command::new(tool_path("mosquitto_passwd").unwrap())
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["piper", "s3cret:with:colons"]));
    let settings = format!(
        "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
        passwords.display(),
        ca.display(),
        cert.display(),
        key.display()
    );
    let Some(broker) = Broker::start_with(&dir, &settings) else {
        return;
    };
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let login = dir.aux("login");
    std::fs::write(&login, "piper:s3cret:with:colons\n").unwrap();
    std::fs::set_permissions(&login, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let wrong = dir.aux("wrong");
    std::fs::write(&wrong, "piper:guess\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let ca_arg = ca.to_str().unwrap();

    // A wrong password: the broker says no, and retrying would not help.
    // The directory the bridge made for the run goes again.
    let mut c = Host::new(&dir, "c");
    std::fs::remove_dir(&c.sockets).unwrap();
    c.start_bridge_with(
        &dir,
        &url,
        &["--ca", ca_arg, "--credentials", wrong.to_str().unwrap()],
        "bridge-wrong",
    );
    assert_eq!(c.bridge().code(PROMPT), Some(1));
    let err = c.bridge().stderr();
    assert!(
        err.ends_with("piper-bridge: error: the broker refused the connection: NotAuthorized\n"),
        "{err}"
    );
    assert!(!err.contains("warn"), "{err}");
    assert!(!c.sockets.exists(), "the refused bridge left its directory");

    // Without our CA the broker's certificate is not trusted: retrying
    // would not help either. One line, exit 1, nothing left behind.
    let mut d = Host::new(&dir, "d");
    std::fs::remove_dir(&d.sockets).unwrap();
    d.start_bridge_with(
        &dir,
        &url,
        &["--credentials", login.to_str().unwrap()],
        "bridge-untrusted",
    );
    assert_eq!(d.bridge().code(PROMPT), Some(1));
    let err = d.bridge().stderr();
    let said = "piper-bridge: error: TLS: the broker's certificate cannot be verified: invalid peer certificate: UnknownIssuer\n";
    assert!(err.ends_with(said), "{err}");
    assert!(!err.contains("warn"), "{err}");
    assert_eq!(counts(&err), Counts::default());
    assert!(!d.sockets.exists(), "the refused bridge left its directory");

    // With both, ping and pong talk over TLS, as the login's user. (One
    // bridge says all it can, so that a password in any line would show.)
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    let args = ["--ca", ca_arg, "--credentials", login.to_str().unwrap()];
    a.start_bridge_env(&dir, &url, &args, &[("RUST_LOG", "trace")], "bridge-a");
    b.start_bridge_with(&dir, &url, &args, "bridge-b");
    let mut pong = b.node(&dir, "pong", "pong", &[]);
    a.await_has("pong");
    let mut ping = a.node(&dir, "ping", "ping", &["--send", "pong", "--count", "100", "--quiet"]);
    assert_eq!(ping.code(LONG), Some(0));
    assert_eq!(ping.summary().received, 100);
    // Ping's last answer is still on its way when ping exits.
    assert!(wait_until(PROMPT, || lines_of(&pong, "pong received: 'ping'") == 101));
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert_eq!(pong.summary().received, 101);
    let (ca_counts, cb_counts) = (a.stop_bridge(), b.stop_bridge());
    ca_counts.assert_balanced("a");
    cb_counts.assert_balanced("b");
    assert_eq!((ca_counts.published, cb_counts.delivered), (101, 101));
    // No password in anything a bridge said, wrong or right, nor in the
    // broker's log.
    let said = [
        a.bridge().stderr(),
        b.bridge().stderr(),
        c.bridge().stderr(),
        d.bridge().stderr(),
    ];
    assert!(said[0].contains(": info: connected to the broker"), "{}", said[0]);
    for (err, who) in said.iter().zip(["a", "b", "c", "d"]) {
        assert!(!err.contains("s3cret") && !err.contains("guess"), "bridge {who}: {err}");
    }
    let log = broker.proc.stderr();
    assert!(!log.contains("s3cret") && !log.contains("guess"), "{log}");
}

#[test]
fn bridge_usage_errors_are_exit_2_and_an_unusable_directory_is_4_with_one_line() {
    let dir = Dir::new("bridge-usage");
    let file = dir.aux("a-file");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "").unwrap();
    let missing = dir.aux("missing-login");
    let cases: &[(&[&str], i32, &str)] = &[
        (&[], 2, "no broker: give --broker"),
        (&["--broker", "tcp://h"], 2, "expected mqtt://HOST[:PORT]"),
        (&["--broker", "mqtt://h:0"], 2, "the port must be 1 to 65535"),
        (
            &["--broker", "mqtt://h", "--ring", "a/b"],
            2,
            "--ring: invalid node name",
        ),
        (&["--broker", "mqtt://h", "--id", ".."], 2, "--id: invalid node name"),
        (
            &["--broker", "mqtt://h", "--export", "a,../b"],
            2,
            "--export: invalid node name",
        ),
        (&["--broker", "mqtt://h", "--abstract"], 2, "--abstract needs --export"),
        (
            &["--broker", "mqtt://h", "--credentials", missing.to_str().unwrap()],
            2,
            "cannot read",
        ),
        (&["--broker", "mqtt://h", "--dir", file.to_str().unwrap()], 4, "a-file"),
        // A login never goes on a command line, where `ps` shows it.
        (
            &["--broker", "mqtt://user:pw@h"],
            2,
            "a login does not belong in the address: use --credentials FILE",
        ),
        // TLS files without TLS would be silently unused.
        (
            &["--broker", "mqtt://h", "--ca", file.to_str().unwrap()],
            2,
            "--ca is for TLS: give an mqtts:// broker",
        ),
    ];
    for (args, code, message) in cases {
        let mut cmd = Command::new(bin("piper-bridge"));
        if !args.contains(&"--id") {
            cmd.args(["--id", "x"]);
        }
        if !args.contains(&"--dir") {
            cmd.arg("--dir").arg(dir.path());
        }
        cmd.args(*args).env_remove("PIPER_BROKER");
        let mut bridge = Proc::spawn(&dir, "bridge", cmd);
        assert_eq!(bridge.code(PROMPT), Some(*code), "{args:?}");
        let err = bridge.stderr();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("piper-bridge: error: ") && err.contains(message),
            "{args:?}: {err}"
        );
    }
    // What clap itself refuses: exit 2, its own message.
    let clap_cases: &[(&[&str], &str)] = &[
        (&["--cert", file.to_str().unwrap()], "--key <FILE>"),
        (&["--keep-alive", "1"], "--keep-alive"),
        (&["--max-remote", "0"], "--max-remote"),
    ];
    for (args, message) in clap_cases {
        let mut cmd = Command::new(bin("piper-bridge"));
        cmd.args(["--broker", "mqtts://h", "--id", "x", "--dir"])
            .arg(dir.path())
            .args(*args);
        let mut bridge = Proc::spawn(&dir, "bridge", cmd);
        assert_eq!(bridge.code(PROMPT), Some(2), "{args:?}");
        let err = bridge.stderr();
        assert!(err.starts_with("error: ") && err.contains(message), "{args:?}: {err}");
    }
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn the_largest_datagram_crosses_the_bridges_both_ways_byte_for_byte() {
    use piper_core::{RecvBuf, MAX_DATAGRAM};
    let dir = Dir::new("bridge-large");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    a.start_bridge(&dir, &broker, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    let (near, far) = (a.bind("near"), b.bind("far"));
    a.await_has("far");
    b.await_has("near");
    // The largest a socket with the default buffers sends (and so the
    // largest a stand-in delivers): 32 bytes short of MAX_DATAGRAM here.
    let size = MAX_DATAGRAM - 32;
    let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut buf = RecvBuf::new();
    for (from, to) in [(&near, &far), (&far, &near)] {
        from.send(&from.peer(to.name()).unwrap(), &big).unwrap();
        let got = to.recv(&mut buf).unwrap().expect("the datagram, within PROMPT");
        assert_eq!(got.from().as_ref(), Some(from.name()));
        assert_eq!(got.payload.len(), size);
        assert!(got.payload == &big[..], "the bytes differ");
    }
    drop((near, far));
    let (ca, cb) = (a.stop_bridge(), b.stop_bridge());
    for c in [ca, cb] {
        assert_eq!(
            (c.from_nodes, c.published, c.from_broker, c.delivered),
            (1, 1, 1, 1),
            "{c:?}"
        );
    }
}

#[test]
fn the_bridge_tells_its_manager_ready_its_counts_on_a_change_and_the_watchdog() {
    let dir = Dir::new("bridge-manager");
    let Some(broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    // A 400 ms watchdog: WATCHDOG=1 every 200 ms or so, on the 100 ms tick.
    a.start_bridge_env(&dir, &broker.url(), &[], &[("WATCHDOG_USEC", "400000")], "bridge-a");
    let pid = a.bridge().pid();
    assert!(a.manager.wait(pid, "READY=1", PROMPT), "no READY=1");
    let idle = "STATUS=connected; from nodes 0, published 0, dropped 0, refused 0; \
                from the broker 0, delivered 0, dropped 0; 0 local, 0 remote, 0 reconnects";
    assert!(a.manager.wait(pid, idle, PROMPT), "{:?}", a.manager.messages(pid));
    a.mark();
    // Its pacing (twice per interval) is pace.rs's, unit-tested with a
    // moved clock; here, the wiring: it keeps coming.
    let seen = a.seen;
    let pings = |a: &mut Host| {
        a.manager.messages(pid)[seen..]
            .iter()
            .filter(|m| *m == "WATCHDOG=1")
            .count()
    };
    assert!(
        wait_until(PROMPT, || pings(&mut a) >= 10),
        "{:?}",
        a.manager.messages(pid)
    );
    let said = a.manager.messages(pid)[a.seen..].to_vec();
    // Nothing changes: no STATUS= (it goes on a change only), and READY=1
    // never again.
    assert!(said.iter().all(|m| m == "WATCHDOG=1"), "{said:?}");
    a.bridge().signal(Signal::SIGTERM);
    assert_eq!(a.bridge().code(PROMPT), Some(0));
    assert_eq!(a.manager.messages(pid).last().map(String::as_str), Some("STOPPING=1"));
}

#[test]
fn a_login_file_that_others_may_read_is_warned_about() {
    let dir = Dir::new("bridge-login-mode");
    for (id, mode, warned) in [("open", 0o644, true), ("private", 0o600, false)] {
        let login = dir.aux(&format!("login-{id}"));
        std::fs::create_dir_all(login.parent().unwrap()).unwrap();
        std::fs::write(&login, "piper:secret\n").unwrap();
        std::fs::set_permissions(&login, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let mut host = Host::new(&dir, id);
        // Nothing listens on port 1: the bridge retries until stopped.
        let args = ["--credentials", login.to_str().unwrap()];
        host.start_bridge_with(&dir, "mqtt://127.0.0.1:1", &args, id);
        assert!(wait_until(PROMPT, || host
            .bridge()
            .stderr()
            .contains("cannot reach the broker")));
        let err = host.bridge().stderr();
        let warning = format!(
            "{} is readable by others: a password file should be mode 0600",
            login.display()
        );
        assert_eq!(err.contains(&warning), warned, "mode {mode:o}: {err}");
        // It tries again after 0.1 s, and waits twice as long each time.
        let waits = |err: String| -> Vec<String> {
            let waits = err.lines().filter_map(|l| l.split("trying again in ").nth(1));
            waits.map(str::to_string).collect()
        };
        assert!(wait_until(PROMPT, || waits(host.bridge().stderr()).len() >= 4));
        assert_eq!(waits(host.bridge().stderr())[..4], ["0.1s", "0.2s", "0.4s", "0.8s"]);
        assert_eq!(host.stop_bridge(), Counts::default());
    }
}

#[test]
fn a_bridge_forwards_its_own_uids_roots_and_allowed_uids_datagrams_only() {
    if !may_run(Needs::Root("to run a bridge and senders as other uids")) {
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = Dir::new("bridge-uids");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    // Abstract sockets: no file permissions stand between the uids, only
    // the bridge's own check. Bridge a runs as nobody.
    a.uid = Some(NOBODY);
    let url = broker.url();
    let args = |export| ["--abstract", "--export", export, "--allow-uid", "4242"];
    a.start_bridge_with(&dir, &url, &args("near"), "bridge-a");
    b.start_bridge_with(&dir, &url, &args("far"), "bridge-b");
    let mut far = b.node(&dir, "far", "far", &["--abstract"]);
    // a's stand-in for far is there once bridge a has heard of far.
    let stand_in = format!("@{}/piper-far", a.sockets.display());
    assert!(
        // Read as bytes: another test may have bound a path that is not UTF-8.
        wait_until(PROMPT, || String::from_utf8_lossy(
            &std::fs::read("/proc/net/unix").unwrap_or_default()
        )
        .lines()
        .any(|l| l.ends_with(&stand_in))),
        "no stand-in for far"
    );
    // One datagram each: from a's own uid (nobody), root, the allowed
    // 4242, and 4243, which is not allowed.
    for (name, uid) in [("mine", NOBODY), ("root", 0), ("allowed", 4242), ("stranger", 4243)] {
        let mut cmd = node_cmd_at(&a.sockets, name, &["--abstract", "--kick", "far"]);
        cmd.uid(uid).gid(uid);
        let mut kick = Proc::spawn(&dir, name, cmd);
        assert_eq!(kick.code(PROMPT), Some(0), "{name}");
    }
    assert!(wait_until(PROMPT, || far.lines().len() == 3), "{:?}", far.lines());
    far.signal(Signal::SIGTERM);
    assert_eq!(far.code(PROMPT), Some(0));
    let mut got = far.lines();
    got.sort();
    assert_eq!(
        got,
        [
            "far received: 'allowed'",
            "far received: 'mine'",
            "far received: 'root'"
        ]
    );
    let err = a.bridge().stderr();
    assert!(
        err.contains("refused a datagram for 'far' from uid 4243 (pid ") && !err.contains("from uid 4242"),
        "{err}"
    );
    let ca = a.stop_bridge();
    ca.assert_balanced("a");
    assert_eq!((ca.from_nodes, ca.published, ca.refused), (4, 3, 1));
}

#[test]
fn what_nodes_sent_just_before_the_stop_is_published_and_counted() {
    let dir = Dir::new("bridge-last-words");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    a.start_bridge(&dir, &broker, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    let (near, far) = (a.bind("near"), b.bind("far"));
    a.await_has("far");
    b.await_has("near");
    // Five datagrams wait in the stand-in while bridge a is stopped, and
    // the stop request is there when it resumes.
    a.bridge().signal(Signal::SIGSTOP);
    let to_far = near.peer(far.name()).unwrap();
    for k in 0..5 {
        near.send(&to_far, format!("last {k}").as_bytes()).unwrap();
    }
    a.bridge().signal(Signal::SIGTERM);
    a.bridge().signal(Signal::SIGCONT);
    let mut buf = piper_core::RecvBuf::new();
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = far.recv(&mut buf).unwrap().expect("a datagram within PROMPT");
        got.push(String::from_utf8_lossy(d.payload).into_owned());
    }
    got.sort();
    assert_eq!(got, (0..5).map(|k| format!("last {k}")).collect::<Vec<_>>());
    assert_eq!(a.bridge().code(PROMPT), Some(0));
    let ca = counts(&a.bridge().stderr());
    ca.assert_balanced("a");
    assert_eq!((ca.from_nodes, ca.published), (5, 5), "{ca:?}");
    drop((near, far));
    assert_eq!(b.stop_bridge().delivered, 5);
}

#[test]
fn a_message_for_a_node_that_left_a_moment_ago_is_counted_as_dropped_here() {
    let dir = Dir::new("bridge-linger");
    let Some(broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    a.start_bridge(&dir, &broker, "bridge-a");
    // Connected first: pong's topic is then subscribed to as pong appears.
    assert!(wait_until(PROMPT, || a
        .bridge()
        .stderr()
        .contains("connected to the broker")));
    let mut pong = a.node(&dir, "pong", "pong", &["--quiet"]);
    assert!(wait_until(PROMPT, || a.bridge().stderr().contains("offering pong")));
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert!(wait_until(PROMPT, || a.bridge().stderr().contains("offering no nodes")));
    // Half a second later the bridge still listens on pong's topic (for 5 s),
    // so a message already on its way is counted, not lost in the broker.
    std::thread::sleep(Duration::from_millis(500));
    publish(broker.port, "piper/t/msg/pong", b"x\nhello", false);
    let dropped = "dropped a message for 'pong': not a node this bridge offers";
    assert!(wait_until(PROMPT, || a.bridge().stderr().contains(dropped)));
    let ca = a.stop_bridge();
    assert_eq!((ca.from_broker, ca.delivered, ca.dropped_in), (1, 0, 1));
}

#[test]
fn a_broker_that_stops_reading_costs_counted_drops_and_one_reconnect() {
    let dir = Dir::new("bridge-stuck-broker");
    let Some(mut broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    a.start_bridge(&dir, &broker, "bridge-a");
    broker.ghost_offers("far");
    a.await_has("far");
    let near = a.bind("near");
    let to_far = near.peer(&piper_core::Name::new("far").unwrap()).unwrap();
    // The broker stops reading. 30 MB for far fill the TCP buffers, and
    // 1200 small datagrams more than the client's queue of 1024 holds: the
    // bridge's writes block until it gives the connection up, what is sent
    // meanwhile is dropped as backed up, and what was still queued is lost
    // with the connection.
    broker.proc.signal(Signal::SIGSTOP);
    let payload = vec![b'x'; 150_000];
    for k in 0..1400 {
        near.send(&to_far, if k < 200 { &payload } else { b"small" }).unwrap();
    }
    assert!(
        wait_until(LONG, || a.bridge().stderr().contains("lost the broker")),
        "{}",
        a.bridge().stderr()
    );
    broker.proc.signal(Signal::SIGCONT);
    assert!(wait_until(LONG, || a
        .bridge()
        .stderr()
        .contains("reconnected to the broker after")));
    // What was queued when the connection went is said with the reconnection.
    let err = a.bridge().stderr();
    let line = err.lines().find(|l| l.contains("reconnected")).unwrap();
    let lost: u64 = line
        .split("s; ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        line.ends_with(" datagrams for remote nodes were dropped meanwhile") && lost > 0,
        "{line}"
    );
    assert!(err.contains("the broker connection is backed up"), "{err}");
    let ca = a.stop_bridge();
    ca.assert_balanced("a");
    assert_eq!((ca.from_nodes, ca.refused, ca.reconnects), (1400, 0, 1), "{ca:?}");
    assert!(ca.dropped_out > lost, "{ca:?}");
}

#[test]
fn a_name_offered_twice_reaches_both_and_is_warned_about_once() {
    let dir = Dir::new("bridge-clash");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b, mut c) = (Host::new(&dir, "a"), Host::new(&dir, "b"), Host::new(&dir, "c"));
    for host in [&mut a, &mut b, &mut c] {
        let label = format!("bridge-{}", host.id);
        host.start_bridge(&dir, &broker, &label);
    }
    // b is stopped while both nodes start: when it resumes, a's offer and
    // b's own new node are there at once, and either may be seen first.
    b.bridge().signal(Signal::SIGSTOP);
    let mut dup_b = b.node(&dir, "dup-b", "dup", &[]);
    b.await_has("dup");
    let mut dup_a = a.node(&dir, "dup-a", "dup", &[]);
    c.await_has("dup");
    b.bridge().signal(Signal::SIGCONT);
    let both = "'dup' is offered by bridges 'a' and 'b': messages for it reach both";
    let here = |other: &str| {
        format!("'dup' is offered by bridge '{other}', but a node here has that name: messages for it stay here")
    };
    assert!(wait_until(PROMPT, || c.bridge().stderr().contains(both)));
    assert!(wait_until(PROMPT, || a.bridge().stderr().contains(&here("b"))));
    assert!(wait_until(PROMPT, || b.bridge().stderr().contains(&here("a"))));
    // One datagram from c reaches both.
    let mut kick = c.node(&dir, "kick", "x", &["--kick", "dup"]);
    assert_eq!(kick.code(PROMPT), Some(0));
    for dup in [&dup_a, &dup_b] {
        assert!(
            wait_until(PROMPT, || dup.lines() == ["dup received: 'x'"]),
            "{:?}",
            dup.lines()
        );
    }
    // b offers one more name: everyone looks again, and nobody says it twice.
    let _more = b.node(&dir, "more", "more", &["--quiet"]);
    c.await_has("more");
    a.await_has("more");
    for dup in [&mut dup_a, &mut dup_b] {
        dup.signal(Signal::SIGTERM);
        assert_eq!(dup.code(PROMPT), Some(0));
    }
    assert_eq!(c.bridge().stderr().matches(both).count(), 1);
    assert_eq!(a.bridge().stderr().matches(&here("b")).count(), 1);
    assert_eq!(b.bridge().stderr().matches(&here("a")).count(), 1);
    assert!(!b.bridge().stderr().contains("no stand-in"), "{}", b.bridge().stderr());
    for host in [&mut a, &mut b, &mut c] {
        host.stop_bridge().assert_balanced(host.id);
    }
}

#[test]
fn a_datagram_too_large_for_a_stand_in_is_counted_as_dropped() {
    use nix::sys::socket::{setsockopt, sockopt};
    if !may_run(Needs::Root("to raise SO_SNDBUF past wmem_max")) {
        return;
    }
    let dir = Dir::new("bridge-too-large");
    let Some(broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    a.start_bridge(&dir, &broker, "bridge-a");
    broker.ghost_offers("far");
    a.await_has("far");
    let big = std::os::unix::net::UnixDatagram::unbound().unwrap();
    setsockopt(&big, sockopt::SndBufForce, &(1 << 20)).unwrap();
    let far = a.sockets.join("piper-far");
    big.send_to(&vec![b'a'; 300_000], &far).unwrap();
    big.send_to(b"small", &far).unwrap();
    let said = "dropped a datagram for 'far': ";
    assert!(wait_until(PROMPT, || a.bridge().stderr().contains(said)));
    a.mark();
    assert!(wait_until(PROMPT, || a.settled()), "the counts settle");
    let ca = a.stop_bridge();
    ca.assert_balanced("a");
    assert_eq!((ca.from_nodes, ca.published, ca.dropped_out), (2, 1, 1), "{ca:?}");
}

#[test]
fn datagrams_for_remote_nodes_while_the_broker_is_away_are_dropped_and_counted_but_the_newest_is_kept() {
    let dir = Dir::new("bridge-outage");
    let Some(mut broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    a.start_bridge(&dir, &broker, "bridge-a");
    broker.ghost_offers("far");
    a.await_has("far");
    broker.kill();
    let lost = "reconnecting, and dropping datagrams for remote nodes until it is back";
    assert!(wait_until(PROMPT, || a.bridge().stderr().contains(lost)));
    let unbound = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for k in 0..3 {
        unbound
            .send_to(format!("{k}").as_bytes(), a.sockets.join("piper-far"))
            .unwrap();
    }
    let pid = a.bridge().pid();
    // The newest is kept (a ring's one message), the older two dropped.
    let status = "STATUS=no broker; from nodes 3, published 0, dropped 2, refused 0; ";
    assert!(
        wait_until(PROMPT, || a.manager.messages(pid).iter().any(|m| m.starts_with(status))),
        "{:?}",
        a.manager.messages(pid)
    );
    broker.restart(&dir);
    let back = "; 2 datagrams for remote nodes were dropped meanwhile";
    assert!(
        wait_until(LONG, || a.bridge().stderr().contains(back)),
        "{}",
        a.bridge().stderr()
    );
    // At once if the broker is back within 2 s of it, else after 9 s.
    let sent = "sent the datagram for 'far' kept while the broker was away";
    assert!(
        wait_until(LONG, || a.bridge().stderr().contains(sent)),
        "{}",
        a.bridge().stderr()
    );
    a.mark();
    assert!(wait_until(PROMPT, || a.settled()), "the counts settle");
    let ca = a.stop_bridge();
    assert_eq!(
        (ca.from_nodes, ca.published, ca.dropped_out, ca.reconnects),
        (3, 1, 2, 1),
        "{ca:?}"
    );
    assert_eq!(a.bridge().stderr().matches("dropping datagrams").count(), 1);
}

/// The bridges of a ring, ping on A and pong on B, after `ping` has made
/// `count` round trips: both links must have stayed up throughout.
fn round_trips(dir: &Dir, a: &mut Host, count: u32) {
    let mut ping = a.node(
        dir,
        "ping",
        "ping",
        &["--send", "pong", "--count", &count.to_string(), "--quiet"],
    );
    assert_eq!(ping.code(LONG), Some(0), "ping's exit");
    assert_eq!(ping.summary().received, u64::from(count));
}

#[test]
fn a_message_too_large_for_the_bridges_never_reaches_them_and_the_ring_stays_up() {
    let dir = Dir::new("bridge-too-large-retained");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    a.start_bridge(&dir, &broker, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    let mut pong = b.node(&dir, "pong", "pong", &["--quiet"]);
    a.await_has("pong");
    // 250 KB, retained, where every bridge reads (far under mosquitto's
    // own limit, over the bridges' Maximum Packet Size), and on pong's
    // topic; and a message that fits but is no presence at all.
    let big = vec![b'x'; 250_000];
    publish(broker.port, "piper/t/hosts/big", &big, true);
    publish(broker.port, "piper/t/names/big/x", &big, true);
    publish(broker.port, "piper/t/msg/pong", &big, false);
    publish(broker.port, "piper/t/hosts/junk", &vec![b'y'; 100_000], true);
    // A bridge that connects now gets the retained ones at once.
    let mut c = Host::new(&dir, "c");
    c.start_bridge(&dir, &broker, "bridge-c");
    c.await_has("pong");
    round_trips(&dir, &mut a, 100);
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    for host in [&mut a, &mut b, &mut c] {
        let err = host.bridge().stderr();
        assert!(!err.contains("lost the broker"), "{}: {err}", host.id);
        let counts = host.stop_bridge();
        counts.assert_balanced(host.id);
        assert_eq!(counts.reconnects, 0, "{}: {counts:?}", host.id);
        // The junk that fits is read, dropped and counted, once.
        assert_eq!(counts.ignored, 1, "{}: {counts:?}", host.id);
        let err = host.bridge().stderr();
        assert_eq!(
            err.matches("ignored the state of bridge 'junk': not an epoch").count(),
            1,
            "{err}"
        );
    }
}

#[test]
fn a_bridge_that_offers_4000_names_of_60_bytes_is_heard_whole() {
    let dir = Dir::new("bridge-many-names");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    // 4,000 names of 60 bytes (as long as the test's socket paths allow):
    // 244 KB of names, once a single message larger than the client's own
    // packet limit.
    let names: Vec<String> = (0..4000).map(|k| format!("{k:05}{}", "n".repeat(55))).collect();
    let lists: Vec<String> = names.chunks(1000).map(|c| c.join(",")).collect();
    let mut args = Vec::new();
    for list in &lists {
        args.extend(["--export", list.as_str()]);
    }
    a.start_bridge_with(&dir, &broker.url(), &args, "bridge-a");
    b.start_bridge(&dir, &broker, "bridge-b");
    let last = names.last().unwrap();
    assert!(wait_until(LONG, || b.has(last)), "b never stood in for the last name");
    let stand_ins = b.entries().iter().filter(|e| e.starts_with("piper-")).count();
    assert_eq!(stand_ins, 4000);
    let ca = a.stop_bridge();
    assert_eq!(ca.reconnects, 0, "{ca:?}");
    // Its goodbye withdraws all 4,000 at once.
    assert!(
        wait_until(PROMPT, || b.entries().is_empty()),
        "{} left",
        b.entries().len()
    );
    assert_eq!(b.stop_bridge().reconnects, 0);
}

#[test]
fn remote_names_past_the_cap_get_no_stand_in_and_are_said_once() {
    let dir = Dir::new("bridge-cap");
    let Some(broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    a.start_bridge_with(&dir, &broker.url(), &["--max-remote", "100"], "bridge-a");
    let names: Vec<String> = (0..300).map(|k| format!("far{k:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    broker.offers("ghost", &refs);
    a.await_has("far099");
    let said = "200 remote names past --max-remote 100: no stand-ins for them";
    assert!(
        wait_until(PROMPT, || a.bridge().stderr().contains(said)),
        "{}",
        a.bridge().stderr()
    );
    // One more name past the cap is said again, with the new number.
    broker.offers("ghost", &["far300"]);
    let again = "201 remote names past --max-remote 100";
    assert!(
        wait_until(PROMPT, || a.bridge().stderr().contains(again)),
        "{}",
        a.bridge().stderr()
    );
    let stand_ins: Vec<String> = a.entries().into_iter().filter(|e| e.starts_with("piper-")).collect();
    assert_eq!(stand_ins.len(), 100);
    assert!(stand_ins.iter().all(|e| e.as_str() < "piper-far100"), "{stand_ins:?}");
    let err = a.bridge().stderr();
    assert_eq!(err.matches(said).count(), 1, "{err}");
    assert!(!err.contains("Too many open files"), "{err}");
    a.stop_bridge();
    assert_eq!(a.entries(), Vec::<String>::new());
}

/// `prlimit`'s view of `pid`'s open-file limit: (soft, hard).
fn nofile(pid: nix::unistd::Pid) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut fields = line.split_whitespace().skip(3);
    let mut next = || fields.next().unwrap().parse().unwrap();
    (next(), next())
}

#[test]
fn the_bridge_raises_its_open_file_limit_and_caps_the_stand_ins_by_what_fits() {
    if !may_run(Needs::Tool("prlimit")) {
        return;
    }
    let dir = Dir::new("bridge-nofile");
    let Some(broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    let mut b = Host::new(&dir, "b");
    // Soft 256: --max-remote 500 needs 1064, which the hard limit allows.
    let prlimit = |host: &mut Host, limits: &str, label: &str| {
        let mut cmd = Command::new(tool_path("prlimit").unwrap());
        cmd.arg(format!("--nofile={limits}")).arg(bin("piper-bridge"));
        cmd.args([
            "--broker",
            &broker.url(),
            "--ring",
            "t",
            "--id",
            host.id,
            "--max-remote",
            "500",
            "--json",
        ])
        .arg("--dir")
        .arg(&host.sockets)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", host.manager.address());
        host.bridge = Some(Proc::spawn(&dir, label, cmd));
    };
    prlimit(&mut a, "256:4096", "bridge-a");
    // Hard 300: 118 stand-ins fit, said once, and the cap follows.
    prlimit(&mut b, "256:300", "bridge-b");
    assert!(wait_until(PROMPT, || a
        .bridge()
        .stderr()
        .contains("connected to the broker")));
    assert!(wait_until(PROMPT, || b
        .bridge()
        .stderr()
        .contains("connected to the broker")));
    assert_eq!(nofile(a.bridge().pid()), (1064, 4096));
    assert_eq!(nofile(b.bridge().pid()), (300, 300));
    let fits = "the open-file limit (300) fits 118 stand-ins, not --max-remote 500";
    assert!(b.bridge().stderr().contains(fits), "{}", b.bridge().stderr());
    let names: Vec<String> = (0..400).map(|k| format!("far{k:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    broker.offers("ghost", &refs);
    a.await_has("far399");
    b.await_has("far117");
    assert!(wait_until(PROMPT, || b
        .bridge()
        .stderr()
        .contains("282 remote names past --max-remote 118")));
    for host in [&mut a, &mut b] {
        let err = host.bridge().stderr();
        assert!(!err.contains("Too many open files"), "{err}");
        host.stop_bridge();
        assert_eq!(host.entries(), Vec::<String>::new());
    }
}

#[test]
fn a_second_bridge_with_the_same_id_says_so_and_stops_with_3() {
    let dir = Dir::new("bridge-same-id");
    let Some(broker) = Broker::start(&dir) else { return };
    let (mut a, mut twin) = (Host::new(&dir, "a"), Host::new(&dir, "a2"));
    a.start_bridge(&dir, &broker, "bridge-a");
    assert!(wait_until(PROMPT, || a
        .bridge()
        .stderr()
        .contains("connected to the broker")));
    // A clone of A's machine: the same id, another directory. Each
    // connection takes the other's place at the broker; the one that finds
    // another run's epoch and then loses its place, twice in a row (once
    // could be a broker restarting), says so and stops: the newcomer.
    twin.id = "a";
    twin.start_bridge(&dir, &broker, "bridge-twin");
    assert_eq!(twin.bridge().code(PROMPT), Some(3));
    let err = twin.bridge().stderr();
    let said = "piper-bridge: error: another bridge has this bridge's id, and the broker gave it our place: give each bridge of a ring its own --id\n";
    assert!(err.ends_with(said), "{err}");
    assert_eq!(
        (
            err.matches("lost the broker").count(),
            err.matches("reconnected to").count()
        ),
        (1, 1),
        "{err}"
    );
    // The first stays, and works.
    let mut pong = a.node(&dir, "pong", "pong", &["--quiet"]);
    let mut b = Host::new(&dir, "b");
    b.start_bridge(&dir, &broker, "bridge-b");
    b.await_has("pong");
    round_trips(&dir, &mut b, 10);
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    // Each took the other's place twice before the twin, the later of the
    // two, had met it twice in a row.
    let ca = a.stop_bridge();
    assert_eq!(ca.reconnects, 2, "{ca:?}");
    assert!(!a.bridge().stderr().contains("error"), "{}", a.bridge().stderr());
    b.stop_bridge();
}

#[test]
fn a_restarted_bridge_is_no_twin_of_its_last_run_when_the_broker_restarts() {
    let dir = Dir::new("bridge-rerun");
    let Some(mut broker) = Broker::start(&dir) else { return };
    let mut a = Host::new(&dir, "a");
    let connected = |a: &mut Host| {
        let bridge = a.bridge();
        wait_until(PROMPT, || bridge.stderr().contains("connected to the broker"))
    };
    a.start_bridge(&dir, &broker, "bridge-a-1");
    assert!(connected(&mut a));
    a.stop_bridge();
    // The same id again, as systemd restarts it: the broker still holds
    // the last run's epoch, and sends it as this run subscribes. Then the
    // broker restarts within seconds, which is no twin taking our place.
    a.start_bridge(&dir, &broker, "bridge-a-2");
    assert!(connected(&mut a));
    broker.kill();
    broker.restart(&dir);
    let bridge = a.bridge();
    assert!(
        wait_until(PROMPT, || bridge.stderr().contains("reconnected to the broker")),
        "{}",
        bridge.stderr()
    );
    assert_eq!(bridge.code(Duration::ZERO), None, "{}", bridge.stderr());
    assert!(!bridge.stderr().contains("another bridge"), "{}", bridge.stderr());
    a.stop_bridge();
}

#[test]
fn bridges_without_an_id_on_one_host_do_not_share_one() {
    let dir = Dir::new("bridge-default-id");
    let Some(broker) = Broker::start(&dir) else { return };
    let (a, b) = (Host::new(&dir, "a"), Host::new(&dir, "b"));
    let mut bridges = Vec::new();
    for host in [&a, &b] {
        let mut cmd = Command::new(bin("piper-bridge"));
        cmd.args(["--broker", &broker.url(), "--ring", "t", "--json"])
            .arg("--dir")
            .arg(&host.sockets)
            .env("RUST_LOG", "info");
        bridges.push(Proc::spawn(&dir, host.id, cmd));
    }
    let _pong = b.node(&dir, "pong", "pong", &["--quiet"]);
    a.await_has("pong");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let labels: Vec<String> = (bridges.iter())
        .map(|p| {
            let err = p.stderr();
            let first = err.lines().next().unwrap_or_default().to_string();
            first[..first.find(']').unwrap() + 1].to_string()
        })
        .collect();
    let prefix = format!("piper-bridge[{}-", host.trim());
    assert!(
        labels
            .iter()
            .all(|l| l.starts_with(&prefix) && l.len() == prefix.len() + 9),
        "{labels:?}"
    );
    assert_ne!(labels[0], labels[1]);
    for mut bridge in bridges {
        bridge.signal(Signal::SIGTERM);
        assert_eq!(bridge.code(PROMPT), Some(0));
        let c = counts(&bridge.stderr());
        assert_eq!(c.reconnects, 0, "{c:?}");
    }
}

#[test]
fn after_a_broker_crash_a_bridge_that_died_meanwhile_is_forgotten() {
    let dir = Dir::new("bridge-forget");
    let Some(mut broker) = Broker::start(&dir) else { return };
    let (mut a, mut b, mut c) = (Host::new(&dir, "a"), Host::new(&dir, "b"), Host::new(&dir, "c"));
    for host in [&mut a, &mut b, &mut c] {
        let label = format!("bridge-{}", host.id);
        host.start_bridge(&dir, &broker, &label);
    }
    let _x = a.node(&dir, "x", "x", &["--quiet"]);
    let _y = c.node(&dir, "y", "y", &["--quiet"]);
    b.await_has("x");
    b.await_has("y");
    // The broker dies, then bridge a; the broker comes back without its
    // retained messages (no persistence) and nobody ever fires a's will.
    broker.kill();
    a.bridge().signal(Signal::SIGKILL);
    assert_eq!(a.bridge().code(PROMPT), Some(137));
    broker.restart(&dir);
    assert!(wait_until(LONG, || !b.has("x")), "b still stands in for dead a's x");
    // c's y, announced again by c, stays (or comes back).
    b.await_has("y");
    assert!(wait_until(PROMPT, || !c.has("x")));
    let cb = b.stop_bridge();
    cb.assert_balanced("b");
    assert_eq!(cb.reconnects, 1, "{cb:?}");
    c.stop_bridge();
}

#[test]
fn the_bridges_unit_gives_it_the_files_its_default_cap_needs_and_no_restart_on_a_twin() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/systemd/piper-bridge.service"
    ))
    .unwrap();
    let value = |key: &str| -> String {
        let line = unit
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key}"));
        line[key.len()..].to_string()
    };
    // It cannot raise the limit itself there (@resources is filtered):
    // two files per stand-in, 4096 stand-ins by default, and 64 to spare.
    let files: u64 = value("LimitNOFILE=").parse().unwrap();
    assert!(files >= 2 * 4096 + 64, "{files}");
    assert!(unit.contains("SystemCallFilter=~@privileged @resources"));
    assert_eq!(value("RestartPreventExitStatus="), "3");
}

#[test]
fn what_the_brokers_acl_forbids_is_said_with_its_reason() {
    if !may_run(Needs::Tool("mosquitto_passwd")) {
        return;
    }
    let dir = Dir::new("bridge-acl");
    let passwords = dir.aux("passwords");
    std::fs::create_dir_all(passwords.parent().unwrap()).unwrap();
    for (k, user) in ["reader", "writer"].into_iter().enumerate() {
        let mut cmd = Command::new(tool_path("mosquitto_passwd").unwrap());
        cmd.args(if k == 0 { &["-c", "-b"][..] } else { &["-b"][..] });
        run(cmd.arg(&passwords).args([user, "pw"]));
    }
    let acl = dir.aux("acl");
    std::fs::write(
        &acl,
        "user reader\ntopic read piper/t/#\n\nuser writer\ntopic write piper/t/#\n",
    )
    .unwrap();
    let settings = format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        passwords.display(),
        acl.display()
    );
    let Some(broker) = Broker::start_with(&dir, &settings) else {
        return;
    };
    let mut hosts = Vec::new();
    for user in ["reader", "writer"] {
        let login = dir.aux(&format!("login-{user}"));
        std::fs::write(&login, format!("{user}:pw\n")).unwrap();
        std::fs::set_permissions(&login, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let mut host = Host::new(&dir, if user == "reader" { "r" } else { "w" });
        host.start_bridge_with(&dir, &broker.url(), &["--credentials", login.to_str().unwrap()], user);
        hosts.push(host);
    }
    // mosquitto takes a subscription it will not serve, and drops what it
    // may not send: the bridge's own barrier never comes back.
    let (r, w) = (
        &mut hosts[0],
        "the broker has not sent back this bridge's own message on piper/t/sync/w within 5s: may bridge 'w' read piper/t/#?",
    );
    let said = "the broker refused a presence message (NotAuthorized): bridge 'r' needs to write piper/t/hosts/r, \
                piper/t/names/r/#, piper/t/ids/r, piper/t/sync/r, piper/t/beat/r and piper/t/msg/#";
    assert!(
        wait_until(PROMPT, || r.bridge().stderr().contains(said)),
        "{}",
        r.bridge().stderr()
    );
    let writer = &mut hosts[1];
    assert!(
        wait_until(PROMPT, || writer.bridge().stderr().contains(w)),
        "{}",
        writer.bridge().stderr()
    );
    // Said once, though every beat (two a second, for the 5 s the writer
    // took) was refused again.
    assert_eq!(hosts[0].bridge().stderr().matches("the broker refused").count(), 1);
    for host in &mut hosts {
        let err = host.bridge().stderr();
        assert!(!err.contains("lost the broker"), "{err}");
        assert_eq!(host.stop_bridge().reconnects, 0);
    }
}

/// A client certificate for `cn`, signed by the CA of [`certificates`].
fn client_certificate(dir: &Dir, cn: &str) -> (PathBuf, PathBuf) {
    let at = |f: &str| dir.aux(f);
    let openssl = || Command::new(tool_path("openssl").unwrap());
    let (key, csr, pem, ext) = (at("client.key"), at("client.csr"), at("client.pem"), at("client.ext"));
    run(openssl()
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    std::fs::write(&ext, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").unwrap();
    run(openssl()
        .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(at("ca.pem"))
        .arg("-CAkey")
        .arg(at("ca.key"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&pem));
    (pem, key)
}

#[test]
fn a_client_certificate_logs_in_and_a_broker_that_wants_one_refuses_a_bridge_without() {
    if !may_run(Needs::Tool("openssl")) {
        return;
    }
    let dir = Dir::new("bridge-client-cert");
    let (ca, cert, key) = certificates(&dir);
    let (client, client_key) = client_certificate(&dir, "piper-bridge");
    let settings = format!(
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\ncafile {}\ncertfile {}\nkeyfile {}\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    let Some(broker) = Broker::start_with(&dir, &settings) else {
        return;
    };
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let ca_arg = ca.to_str().unwrap();
    let mut a = Host::new(&dir, "a");
    let args = [
        "--ca",
        ca_arg,
        "--cert",
        client.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
    ];
    a.start_bridge_with(&dir, &url, &args, "bridge-a");
    assert!(
        wait_until(PROMPT, || a.bridge().stderr().contains("connected to the broker")),
        "{}",
        a.bridge().stderr()
    );
    // Without one: the broker ends the handshake; retrying cannot help.
    let mut b = Host::new(&dir, "b");
    b.start_bridge_with(&dir, &url, &["--ca", ca_arg], "bridge-b");
    assert_eq!(b.bridge().code(PROMPT), Some(1));
    let err = b.bridge().stderr();
    assert!(
        err.lines().last().is_some_and(|l| l
            .starts_with("piper-bridge: error: TLS: the broker refused the handshake (")
            && l.ends_with("): does it want a client certificate (--cert, --key) it trusts?")),
        "{err}"
    );
    assert!(!err.contains("warn"), "{err}");
    assert_eq!(a.stop_bridge().reconnects, 0);
}

#[test]
fn the_readmes_acl_recipe_lets_a_ring_run_with_nothing_refused() {
    if !may_run(Needs::Tool("mosquitto_passwd")) {
        return;
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let at = readme.find("bridge `a` of ring `lab`:").expect("the recipe");
    let block = &readme[at..];
    let block = &block[block.find("```\n").unwrap() + 4..];
    let recipe = &block[..block.find("```").unwrap()];
    let dir = Dir::new("bridge-acl-recipe");
    let passwords = dir.aux("passwords");
    std::fs::create_dir_all(passwords.parent().unwrap()).unwrap();
    let mut acl = String::new();
    for (k, id) in ["a", "b"].into_iter().enumerate() {
        let mut cmd = Command::new(tool_path("mosquitto_passwd").unwrap());
        cmd.args(if k == 0 { &["-c", "-b"][..] } else { &["-b"][..] });
        run(cmd.arg(&passwords).args([&format!("bridge-{id}"), "pw"]));
        for line in recipe.lines() {
            let line = line.trim().replace("piper/lab/", "piper/t/");
            let line = line
                .replace("/a/", &format!("/{id}/"))
                .replace("bridge-a", &format!("bridge-{id}"));
            let line = if line.ends_with("/a") {
                format!("{}{id}", &line[..line.len() - 1])
            } else {
                line
            };
            acl.push_str(&line);
            acl.push('\n');
        }
        acl.push('\n');
    }
    std::fs::write(dir.aux("acl"), &acl).unwrap();
    let settings = format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        passwords.display(),
        dir.aux("acl").display()
    );
    let Some(broker) = Broker::start_with(&dir, &settings) else {
        return;
    };
    let mut hosts = Vec::new();
    for id in ["a", "b"] {
        let login = dir.aux(&format!("login-{id}"));
        std::fs::write(&login, format!("bridge-{id}:pw\n")).unwrap();
        std::fs::set_permissions(&login, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let mut host = Host::new(&dir, id);
        host.start_bridge_with(&dir, &broker.url(), &["--credentials", login.to_str().unwrap()], id);
        hosts.push(host);
    }
    let mut pong = hosts[1].node(&dir, "pong", "pong", &["--quiet"]);
    hosts[0].await_has("pong");
    round_trips(&dir, &mut hosts[0], 20);
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    for host in &mut hosts {
        assert!(host.bridge().stderr().contains("connected to the broker"));
        let counts = host.stop_bridge();
        let err = host.bridge().stderr();
        assert!(
            !err.contains("the broker refused") && !err.contains("has not sent back"),
            "{acl}\n{err}"
        );
        assert_eq!(counts.reconnects, 0);
    }
}

#[test]
fn a_broker_that_speaks_only_mqtt_3_1_1_is_named_as_the_likely_cause() {
    // What mosquitto 1.x answers an MQTT 5 CONNECT: a 3.1.1 CONNACK,
    // "unacceptable protocol version", then it closes the connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let broker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(PROMPT)).unwrap();
                        let _ = stream.read(&mut [0u8; 1024]);
                        let _ = stream.write_all(&[0x20, 2, 0, 1]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let dir = Dir::new("bridge-mqtt311");
    let mut a = Host::new(&dir, "a");
    a.start_bridge_with(&dir, &format!("mqtt://127.0.0.1:{port}"), &[], "bridge-a");
    let said = "cannot reach the broker (it closed the connection before answering: does it speak MQTT 5? piper-bridge needs it)";
    assert!(
        wait_until(PROMPT, || a.bridge().stderr().contains(said)),
        "{}",
        a.bridge().stderr()
    );
    assert_eq!(a.stop_bridge(), Counts::default());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    broker.join().unwrap();
}
