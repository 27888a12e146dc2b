//! The raw baselines: the same message patterns over bound `AF_UNIX
//! SOCK_DGRAM` sockets with no piper code, so every piper figure has a
//! yardstick measured in the same run.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::scratch::{wait_for, Guard, Scratch};

/// The raw ping-pong's server: answers every datagram on `path` with "pong".
pub fn echo(path: &Path) -> ! {
    let sock = UnixDatagram::bind(path).expect("bind echo");
    let mut buf = [0u8; 64];
    loop {
        let (_, from) = sock.recv_from(&mut buf).expect("recv");
        let to = from.as_pathname().expect("bound client").to_path_buf();
        sock.send_to(b"pong", to).expect("send");
    }
}

/// A raw ring member: forwards every datagram on `path` to `next`. With
/// `PIPER_BENCH_PASSCRED` set, the socket asks for sender credentials, as
/// every piper node does: the kernel then attaches them to every datagram.
pub fn forward(path: &Path, next: &Path) -> ! {
    let sock = UnixDatagram::bind(path).expect("bind ring member");
    if std::env::var_os("PIPER_BENCH_PASSCRED").is_some() {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true).expect("SO_PASSCRED");
    }
    let mut buf = [0u8; 64];
    loop {
        let n = sock.recv(&mut buf).expect("recv");
        let _ = sock.send_to(&buf[..n], next);
    }
}

/// Two processes, bound sockets, no piper code: the hop rate and the round
/// trip's p50 and p99 in microseconds.
pub fn pingpong(count: u64) -> (f64, f64, f64) {
    let dir = Scratch::new("raw");
    let server = dir.0.join("echo");
    let exe = std::env::current_exe().unwrap();
    let _echo = Guard(Command::new(exe).arg("echo").arg(&server).spawn().expect("echo"));
    wait_for(&server);
    round_trips(&dir.0.join("client"), &server, b"ping", count)
}

/// A ring of `n` processes with no piper code, this one among them: hops
/// per second over `laps` laps.
pub fn ring(n: usize, laps: u64) -> f64 {
    let dir = Scratch::new("rawring");
    let path = |i: usize| dir.0.join(format!("r{i}"));
    let exe = std::env::current_exe().unwrap();
    let _members: Vec<Guard> = (1..n)
        .map(|i| {
            let mut cmd = Command::new(&exe);
            cmd.arg("forward").arg(path(i)).arg(path((i + 1) % n));
            Guard(cmd.spawn().expect("ring member"))
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

/// Round trips between a bound client socket and `server`: the hop rate,
/// and the round trip's p50 and p99 in microseconds.
pub fn round_trips(client_path: &Path, server: &Path, payload: &[u8], count: u64) -> (f64, f64, f64) {
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

/// A raw launch's member: binds `path`, says `READY=1` to `notify` (waiting
/// while its queue is full), then sleeps until a signal ends it.
/// `tidy`: SIGTERM is awaited (blocked, so one that comes before the wait
/// is kept for it), and the member then does what any program that cleans
/// up does, and no more: one line on stderr, one datagram to `notify`
/// (dropped if its queue is full), its socket file removed, exit.
pub fn member(path: &Path, notify: &Path, tidy: bool) -> ! {
    use nix::sys::signal::{SigSet, Signal};
    let sock = UnixDatagram::bind(path).expect("bind member");
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    if tidy {
        term.thread_block().expect("block SIGTERM");
    }
    sock.send_to(b"READY=1", notify).expect("notify");
    if !tidy {
        let mut buf = [0u8; 64];
        loop {
            let _ = sock.recv(&mut buf);
        }
    }
    term.wait().expect("sigwait");
    eprintln!("member: received 0, sent 0, dropped 0");
    let _ = nix::sys::socket::sendto(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        b"STOPPING=1",
        &nix::sys::socket::UnixAddr::new(notify).expect("notify address"),
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    );
    let _ = std::fs::remove_file(path);
    std::process::exit(0)
}

/// The raw launch and teardown of `n` processes in a directory under
/// `root`, no piper code: the way one would write it with the standard
/// library. Each is `exe` (this benchmark, built the way the piper binaries
/// it is compared with are: static, or dynamic) binding its socket and
/// saying READY=1 to ours, started
/// one after the other by `Command::spawn` (glibc's `posix_spawn`) into one
/// process group, readiness read as it comes; then one SIGTERM to the
/// group, whose default action ends them (or, `tidy`, which each catches
/// and cleans up after: see [`member`]), and every one reaped. Seconds to
/// all ready, and to all reaped.
pub fn launch(exe: &Path, root: &Path, n: usize, tidy: bool) -> (f64, f64) {
    let dir = Scratch::new_in(root, "rawlaunch");
    let notify_path = dir.0.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify");
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let mut ready = 0;
    let mut drain = |ready: &mut usize| {
        while notify.recv(&mut buf).is_ok() {
            *ready += 1;
        }
    };
    let start = Instant::now();
    let mut group = 0;
    let mut members: Vec<Guard> = Vec::with_capacity(n);
    for i in 0..n {
        let child: Child = Command::new(exe)
            .arg("member")
            .arg(dir.0.join(format!("m{i}")))
            .arg(&notify_path)
            .args(tidy.then_some("--tidy"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .process_group(group)
            .spawn()
            .expect("raw member");
        if group == 0 {
            group = child.id() as i32;
        }
        members.push(Guard(child));
        drain(&mut ready);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready < n {
        assert!(Instant::now() < deadline, "raw launch: {ready} of {n} ready");
        std::thread::sleep(Duration::from_micros(100));
        drain(&mut ready);
    }
    let up = start.elapsed().as_secs_f64();
    let start = Instant::now();
    // Our own children's group, led by the first, not yet reaped.
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), nix::sys::signal::Signal::SIGTERM).expect("killpg");
    for member in &mut members {
        member.0.wait().expect("reap");
    }
    (up, start.elapsed().as_secs_f64())
}
