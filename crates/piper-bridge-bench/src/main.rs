//! piper-bridge-bench: the round trip through two piper-bridges and a
//! mosquitto broker, against the round trip of two plain MQTT clients on the
//! same broker, measured in the same run (`scripts/bench.sh` runs it after
//! piper-bench and appends its table).
//!
//! Raw: a client publishes on `raw/ping`; an echo client (a second process)
//! publishes each message back on `raw/pong`. Bridge: node `ping` (this
//! process, a piper-core node) in socket directory A sends to `pong`, a real
//! `piper-node pong` in directory B behind the other bridge, and waits for
//! its answer. Both use rumqttc with TCP_NODELAY, one thread each. The
//! limit: the same plain clients, each relaying to an AF_UNIX socket beside
//! it, so that a round trip wakes as many processes as the bridge's does.

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use piper_core::{Liveness, Name, Node, RecvBuf, SocketDir};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};

#[derive(Debug, Parser)]
struct Args {
    /// Where piper-bridge is.
    #[arg(long, default_value = "target/release")]
    bin: PathBuf,
    /// Where piper-node is, if not beside piper-bridge (scripts/bench.sh
    /// builds it statically, into a target-specific directory).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Repetitions (the medians are reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Round trips per repetition.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Run as the raw echo client on this port (internal).
    #[arg(long, hide = true)]
    echo: Option<u16>,
    /// Run as a relay on this port: TOPIC_IN SOCKET PEER TOPIC_OUT (internal).
    #[arg(long, hide = true, num_args = 5, value_names = ["PORT", "IN", "SOCKET", "PEER", "OUT"])]
    relay: Option<Vec<String>>,
    /// Run as a datagram echo on this socket path (internal).
    #[arg(long, hide = true)]
    unix_echo: Option<PathBuf>,
}

/// Kills and reaps a child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let args = Args::parse();
    if let Some(port) = args.echo {
        return echo(port);
    }
    if let Some(r) = &args.relay {
        return relay(r[0].parse().unwrap(), &r[1], Path::new(&r[2]), Path::new(&r[3]), &r[4]);
    }
    if let Some(path) = &args.unix_echo {
        let socket = UnixDatagram::bind(path).expect("bind the echo socket");
        let mut buf = [0u8; 256];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            if let Some(to) = from.as_pathname() {
                let _ = socket.send_to(&buf[..n], to);
            }
        }
    }
    let Some(mosquitto) = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        println!("\n## Across hosts: piper-bridge through mosquitto\n\nSkipped: mosquitto is not installed.");
        return;
    };
    let scratch = std::env::temp_dir().join(format!("piper-bridge-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let (mut raw, mut relayed, mut bridged) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.reps {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = scratch.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type none\n"),
        )
        .unwrap();
        let _broker = Guard(
            Command::new(mosquitto)
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mosquitto"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto never listened");
            std::thread::sleep(Duration::from_millis(5));
        }
        raw.push(raw_rtt(port, args.count));
        relayed.push(relay_rtt(&scratch.join(format!("relay{rep}")), port, args.count));
        bridged.push(bridge_rtt(
            &args.bin,
            args.node_bin.as_deref().unwrap_or(&args.bin),
            &scratch.join(format!("rep{rep}")),
            port,
            args.count,
        ));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    report(&raw, &relayed, &bridged, &args);
}

/// One repetition's figures: p50 and p99 round trip, and hops per second.
#[derive(Clone, Copy, Debug)]
struct Figures {
    p50: Duration,
    p99: Duration,
    hops_per_sec: f64,
}

fn figures(mut rtts: Vec<Duration>, elapsed: Duration) -> Figures {
    rtts.sort();
    let at = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        hops_per_sec: 2.0 * rtts.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// `count` timed round trips, after a tenth as many to warm up.
fn timed(count: usize, mut round: impl FnMut()) -> Figures {
    for _ in 0..count / 10 {
        round();
    }
    let mut rtts = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        round();
        rtts.push(t.elapsed());
    }
    figures(rtts, start.elapsed())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Waits for the next message on `topic`.
async fn next_on(eventloop: &mut EventLoop, topic: &str) {
    loop {
        match eventloop.poll().await.expect("broker connection") {
            Event::Incoming(Incoming::Publish(p)) if p.topic == topic => return,
            _ => {}
        }
    }
}

/// The raw echo: every message on raw/ping goes back on raw/pong.
fn echo(port: u16) {
    runtime().block_on(async {
        let (client, mut eventloop) = client("bench-echo", port);
        client.subscribe("raw/ping", QoS::AtMostOnce).await.unwrap();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    client
                        .try_publish("raw/pong", QoS::AtMostOnce, false, p.payload.to_vec())
                        .unwrap();
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    client.try_publish("raw/ready", QoS::AtMostOnce, true, "1").unwrap();
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
}

fn raw_rtt(port: u16, count: usize) -> Figures {
    let me = std::env::current_exe().unwrap();
    let _echo = Guard(
        Command::new(me)
            .arg("--echo")
            .arg(port.to_string())
            .spawn()
            .expect("start the echo client"),
    );
    runtime().block_on(async {
        let (client, mut eventloop) = client("bench-ping", port);
        client.subscribe("raw/pong", QoS::AtMostOnce).await.unwrap();
        client.subscribe("raw/ready", QoS::AtMostOnce).await.unwrap();
        next_on(&mut eventloop, "raw/ready").await;
        let payload = b"ping".to_vec();
        for _ in 0..count / 10 {
            client
                .try_publish("raw/ping", QoS::AtMostOnce, false, payload.clone())
                .unwrap();
            next_on(&mut eventloop, "raw/pong").await;
        }
        let mut rtts = Vec::with_capacity(count);
        let start = Instant::now();
        for _ in 0..count {
            let t = Instant::now();
            client
                .try_publish("raw/ping", QoS::AtMostOnce, false, payload.clone())
                .unwrap();
            next_on(&mut eventloop, "raw/pong").await;
            rtts.push(t.elapsed());
        }
        let _ = client.try_publish("raw/ready", QoS::AtMostOnce, true, Vec::new());
        figures(rtts, start.elapsed())
    })
}

fn bridge_rtt(bin: &Path, node_bin: &Path, scratch: &Path, port: u16, count: usize) -> Figures {
    let (a, b) = (scratch.join("a"), scratch.join("b"));
    let bridge = |id: &str, dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        Guard(
            Command::new(bin.join("piper-bridge"))
                .args([
                    "--broker",
                    &format!("mqtt://127.0.0.1:{port}"),
                    "--ring",
                    "bench",
                    "--id",
                    id,
                ])
                .arg("--dir")
                .arg(dir)
                .env_remove("NOTIFY_SOCKET")
                .spawn()
                .expect("start piper-bridge"),
        )
    };
    let _bridges = (bridge("a", &a), bridge("b", &b));
    let _pong = Guard(
        Command::new(node_bin.join("piper-node"))
            .args(["pong", "--quiet", "--dir"])
            .arg(&b)
            .env_remove("NOTIFY_SOCKET")
            .spawn()
            .expect("start piper-node"),
    );
    let dir_a = SocketDir::open(&a).unwrap();
    let dir_b = SocketDir::open(&b).unwrap();
    let (ping, pong) = (Name::new("ping").unwrap(), Name::new("pong").unwrap());
    let live = |dir: &SocketDir, name: &Name| dir.probe(name).is_ok_and(|l| l == Liveness::Live);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live(&dir_a, &pong) {
        assert!(Instant::now() < deadline, "no stand-in for pong");
        std::thread::sleep(Duration::from_millis(5));
    }
    let node = Node::bind(&dir_a, ping.clone()).unwrap();
    while !live(&dir_b, &ping) {
        assert!(Instant::now() < deadline, "no stand-in for ping");
        std::thread::sleep(Duration::from_millis(5));
    }
    node.set_recv_timeout(Duration::from_secs(5)).unwrap();
    let to = node.peer(&pong).unwrap();
    let mut buf = RecvBuf::new();
    let round = || {
        node.send(&to, ping.as_bytes()).expect("send to pong");
        node.recv(&mut buf).expect("receive").expect("pong's answer within 5 s");
    };
    timed(count, round)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(raw: &[Figures], relayed: &[Figures], bridged: &[Figures], args: &Args) {
    let us =
        |f: &[Figures], pick: fn(&Figures) -> Duration| median(f.iter().map(|x| pick(x).as_secs_f64() * 1e6).collect());
    let rate = |f: &[Figures]| median(f.iter().map(|x| x.hops_per_sec).collect());
    println!("\n## Across hosts: piper-bridge through mosquitto\n");
    println!(
        "{} round trips per repetition, medians of {} (one broker per repetition, on 127.0.0.1; every \
         process unpinned):\n",
        args.count, args.reps
    );
    println!("| | processes woken per round trip | round trip p50 | round trip p99 | hops/s | p50 / raw |");
    println!("|---|---:|---:|---:|---:|---:|");
    let raw50 = us(raw, |f| f.p50);
    for (what, wakes, figures) in [
        ("raw MQTT: two plain clients (rumqttc)", 4, raw),
        (
            "the limit: the same clients, each relaying to a plain AF_UNIX echo/sender beside it (no piper code)",
            8,
            relayed,
        ),
        (
            "piper: node → piper-bridge → broker → piper-bridge → `piper-node pong`, and back",
            8,
            bridged,
        ),
    ] {
        let p50 = us(figures, |f| f.p50);
        println!(
            "| {what} | {wakes} | {p50:.0} µs | {:.0} µs | {:.1} k | {:.2}× |",
            us(figures, |f| f.p99),
            rate(figures) / 1e3,
            p50 / raw50
        );
    }
    println!(
        "\npiper-bridge p50 / the limit's p50: **{:.2}×**.",
        us(bridged, |f| f.p50) / us(relayed, |f| f.p50)
    );
}

/// A minimal relay: what arrives on `topic_in` goes to the datagram socket
/// `peer` from `socket`; what arrives on `socket` is published on
/// `topic_out`. The bridge's job with nothing else: one thread, one client.
fn relay(port: u16, topic_in: &str, socket: &Path, peer: &Path, topic_out: &str) {
    let unix = UnixDatagram::bind(socket).expect("bind the relay socket");
    unix.set_nonblocking(true).unwrap();
    runtime().block_on(async {
        let unix = tokio::net::UnixDatagram::from_std(unix).unwrap();
        let (client, mut eventloop) = client(&format!("relay-{topic_in}"), port);
        client.subscribe(topic_in, QoS::AtMostOnce).await.unwrap();
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let _ = unix.try_send_to(&p.payload, peer);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                got = unix.recv(&mut buf) => {
                    let Ok(n) = got else { return };
                    let _ = client.try_publish(topic_out, QoS::AtMostOnce, false, buf[..n].to_vec());
                }
            }
        }
    });
}

fn relay_rtt(scratch: &Path, port: u16, count: usize) -> Figures {
    std::fs::create_dir_all(scratch).unwrap();
    let me = std::env::current_exe().unwrap();
    let path = |name: &str| scratch.join(name);
    let _echo = Guard(
        Command::new(&me)
            .arg("--unix-echo")
            .arg(path("echo"))
            .spawn()
            .expect("start the echo"),
    );
    let relay = |topic_in: &str, socket: &str, peer: &str, topic_out: &str| {
        Guard(
            Command::new(&me)
                .args(["--relay", &port.to_string(), topic_in])
                .arg(path(socket))
                .arg(path(peer))
                .arg(topic_out)
                .spawn()
                .expect("start a relay"),
        )
    };
    let _relays = (
        relay("lim/a", "relay-a", "node", "lim/b"),
        relay("lim/b", "relay-b", "echo", "lim/a"),
    );
    let node = UnixDatagram::bind(path("node")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    // Ready when a datagram makes the whole round (the relays subscribe
    // asynchronously; early ones are lost, so keep trying).
    node.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    loop {
        assert!(Instant::now() < deadline, "the relays never answered");
        if node.send_to(b"ping", path("relay-a")).is_ok() && node.recv(&mut buf).is_ok() {
            break;
        }
    }
    while node.recv(&mut buf).is_ok() {}
    node.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let round = || {
        node.send_to(b"ping", path("relay-a")).expect("send to the relay");
        node.recv(&mut buf).expect("the answer within 5 s");
    };
    timed(count, round)
}
