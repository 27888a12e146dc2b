//! The systemd side: units that verify, hardening that scores, socket
//! activation, sd_notify readiness and the watchdog, run without a systemd
//! PID 1 through `systemd-analyze` and `systemd-socket-activate`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use piper_tests::{bin, bin_dir, may_run, node_cmd, wait_until, Dir, Needs, Proc, Ready, PROMPT};

/// Installs into `dir` with scripts/install.sh, then instantiates the
/// templates (`piper-node@ping.service`, ...) beside them.
fn install(dir: &Dir) -> PathBuf {
    let prefix = dir.aux("prefix");
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install.sh"))
        .env("PIPER_BIN_DIR", bin_dir())
        .env("PIPER_DIST_DIR", piper_tests::dist_dir())
        .env("PREFIX", &prefix)
        .env("SYSCONFDIR", dir.aux("etc"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("systemctl enable --now piper-node@ping.socket"));
    for installed in [
        "bin/piper-node",
        "share/man/man1/piper-launch.1",
        "share/bash-completion/completions/piper-node",
        "share/zsh/vendor-completions/_piper-launch",
        "share/fish/vendor_completions.d/piper-node.fish",
        "share/doc/piper/LICENSE-APACHE",
    ] {
        assert!(prefix.join(installed).exists(), "{installed}");
    }
    assert!(dir.aux("etc/sysusers.d/piper.conf").exists());
    let units = prefix.join("lib/systemd/system");
    for (template, instance) in [
        ("piper-node@.service", "piper-node@ping.service"),
        ("piper-node@.socket", "piper-node@ping.socket"),
    ] {
        std::fs::copy(units.join(template), units.join(instance)).unwrap();
    }
    assert!(prefix.join("bin/piper-node").exists() && dir.aux("etc/piper/launch.env").exists());
    units
}

#[test]
fn units_verify_cleanly_when_instantiated() {
    if !may_run(Needs::Tool("systemd-analyze")) {
        return;
    }
    let dir = Dir::new("verify");
    let units = install(&dir);
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            "piper-node@ping.service",
            "piper-node@ping.socket",
            "piper-launch.service",
            "piper-bridge.service",
        ])
        .current_dir(&units)
        .output()
        .expect("systemd-analyze is installed");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "systemd-analyze verify printed on stderr"
    );
    assert!(out.status.success());
}

#[test]
fn exposure_scores_are_at_most_2() {
    if !may_run(Needs::Tool("systemd-analyze")) {
        return;
    }
    let dir = Dir::new("security");
    let units = install(&dir);
    for unit in [
        "piper-node@ping.service",
        "piper-launch.service",
        "piper-bridge.service",
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager", unit])
            .current_dir(&units)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .expect("a score line");
        let score: f64 = line
            .split(": ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(score <= 2.0, "{unit}: {line}");
    }
}

#[test]
fn user_units_have_no_user_switch_and_use_the_runtime_dir() {
    let dir = Dir::new("user-units");
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install.sh"))
        .arg("--user")
        .env("PIPER_BIN_DIR", bin_dir())
        .env("PIPER_DIST_DIR", piper_tests::dist_dir())
        .env("HOME", dir.aux("home"))
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let units = dir.aux("home/.config/systemd/user");
    let service = std::fs::read_to_string(units.join("piper-node@.service")).unwrap();
    let socket = std::fs::read_to_string(units.join("piper-node@.socket")).unwrap();
    assert!(!service.contains("\nUser=") && !socket.contains("SocketUser="));
    assert!(service.contains(&format!(
        "ExecStart={}/bin/piper-node %i --dir %t/piper",
        dir.aux("home/.local").display()
    )));
    assert!(socket.contains("ListenDatagram=%t/piper/piper-%i"));
}

/// `systemd-socket-activate` binding DIR/piper-NAME and running piper-node on it.
fn activated(dir: &Dir, ready: &Ready, name: &str, extra: &[&str]) -> Proc {
    activated_as(dir, ready, name, extra, None)
}

/// [`activated`], the node running as `uid` (its group too) if given.
fn activated_as(dir: &Dir, ready: &Ready, name: &str, extra: &[&str], uid: Option<u32>) -> Proc {
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("--datagram")
        .arg("-l")
        .arg(dir.join(&format!("piper-{name}")))
        .args(["-E", &format!("NOTIFY_SOCKET={}", ready.address())])
        .args(["-E", "RUST_LOG=info"])
        .arg(bin("piper-node"))
        .arg(name)
        .arg("--dir")
        .arg(dir.path())
        .args(extra);
    if let Some(uid) = uid {
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, uid);
    }
    let proc = Proc::spawn(dir, name, cmd);
    let socket = dir.join(&format!("piper-{name}"));
    assert!(wait_until(PROMPT, || socket.exists()));
    proc
}

#[test]
fn socket_activation_answers_datagrams_queued_before_the_node_started() {
    if !may_run(Needs::Tool("systemd-socket-activate")) {
        return;
    }
    let dir = Dir::new("activate");
    let mut ready = Ready::new();
    let mut pong = activated(&dir, &ready, "pong", &[]);
    // Nobody reads yet: these wait in the kernel queue of systemd's socket.
    let tester = UnixDatagram::bind(dir.join("piper-tester")).unwrap();
    // Like a piper node, the sender asks for credentials to be attached: no
    // SO_PASSCRED was set on the socket while nobody had adopted it.
    nix::sys::socket::setsockopt(&tester, nix::sys::socket::sockopt::PassCred, &true).unwrap();
    tester.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..5 {
        tester.send_to(b"tester", dir.join("piper-pong")).unwrap();
    }
    let mut buf = [0u8; 16];
    for i in 0..5 {
        let n = tester.recv(&mut buf).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(&buf[..n], b"pong");
    }
    assert!(ready.wait(pong.pid(), "READY=1", PROMPT));
    // And a real chain through the adopted socket.
    let mut ping = Proc::spawn(
        &dir,
        "ping",
        node_cmd(&dir, "ping", &["--send", "pong", "--count", "20"]),
    );
    assert_eq!(ping.code(PROMPT), Some(0));
    assert_eq!(ping.lines().len(), 20);
    // The five, ping's first send and its 20 replies; the last may still be
    // on its way: pong is stopped once it has printed it, not before.
    assert!(wait_until(PROMPT, || pong.lines().len() == 26), "{:?}", pong.lines());
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert!(pong
        .stderr()
        .contains("adopting the socket passed by the service manager"));
    assert_eq!(pong.lines().len(), 26);
    // The socket file is systemd's to remove, not the node's.
    assert!(
        dir.join("piper-pong").exists(),
        "an adopted socket file must be left alone"
    );
    std::fs::remove_file(dir.join("piper-pong")).unwrap();
    drop(tester);
    std::fs::remove_file(dir.join("piper-tester")).unwrap();
    assert_eq!(dir.entries(), Vec::<String>::new());
}

/// piper-node started with fd 3 set up by a Python one-liner, as a service
/// manager would, but with the wrong kind of socket.
fn with_fd3(dir: &Dir, family: &str, kind: &str) -> Proc {
    let script = format!(
        "import os, socket, sys\n\
         s = socket.socket(socket.{family}, socket.{kind})\n\
         os.dup2(s.fileno(), 3)\n\
         os.set_inheritable(3, True)\n\
         os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n\
         os.execv(sys.argv[1], sys.argv[1:])\n"
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &script])
        .arg(bin("piper-node"))
        .args(["pong", "--dir"])
        .arg(dir.path());
    Proc::spawn(dir, "fd3", cmd)
}

#[test]
fn of_two_passed_sockets_the_node_adopts_the_one_named_after_it() {
    if !may_run(Needs::Tool("systemd-socket-activate")) {
        return;
    }
    let dir = Dir::new("activate-two");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("--datagram")
        .arg("-l")
        .arg(dir.join("piper-other"))
        .arg("-l")
        .arg(dir.join("piper-pong"))
        .arg("--fdname=other:pong")
        .args(["-E", "RUST_LOG=info"])
        .arg(bin("piper-node"))
        .args(["pong", "--dir"])
        .arg(dir.path());
    let mut pong = Proc::spawn(&dir, "pong", cmd);
    assert!(wait_until(PROMPT, || dir.join("piper-pong").exists()));
    // The first datagram starts the node (systemd-socket-activate waits for
    // one); it carries credentials because the sender asks for them.
    let tester = UnixDatagram::bind(dir.join("piper-tester")).unwrap();
    nix::sys::socket::setsockopt(&tester, nix::sys::socket::sockopt::PassCred, &true).unwrap();
    tester.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tester.send_to(b"tester", dir.join("piper-pong")).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = tester.recv_from(&mut buf).expect("pong answers on its own socket");
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(from.as_pathname(), Some(dir.join("piper-pong").as_path()));
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert_eq!(pong.lines(), ["pong received: 'tester'"]);
}

#[test]
fn a_datagram_queued_without_credentials_is_refused_and_says_why() {
    if !may_run(Needs::Tool("systemd-socket-activate")) {
        return;
    }
    let dir = Dir::new("activate-nocreds");
    let ready = Ready::new();
    let pong = activated(&dir, &ready, "pong", &[]);
    refuses_a_datagram_without_credentials(&dir, pong);
}

/// Sends `pong`, started by socket activation, a datagram queued before
/// anyone set SO_PASSCRED on the socket, by a sender that did not ask
/// either (the kernel attached no credentials): it is refused and said
/// to be, never printed or answered.
fn refuses_a_datagram_without_credentials(dir: &Dir, mut pong: Proc) {
    let tester = UnixDatagram::bind(dir.join("piper-tester")).unwrap();
    tester.send_to(b"tester", dir.join("piper-pong")).unwrap();
    let why = "refused a datagram without sender credentials";
    assert!(wait_until(PROMPT, || pong.stderr().contains(why)), "{}", pong.stderr());
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let summary = pong.summary();
    assert_eq!((summary.received, summary.dropped, summary.refused), (0, 1, 1));
    assert_eq!(pong.lines(), Vec::<String>::new(), "nothing printed, nothing answered");
}

#[test]
fn a_node_running_as_nobody_refuses_a_datagram_without_credentials_too() {
    // The kernel reports a datagram without credentials as pid 0 with the
    // overflow uid, 65534: to a node running as that uid, it looked like its
    // own user's.
    if !may_run(Needs::Tool("systemd-socket-activate"))
        || !may_run(Needs::Root("to run a node as the overflow uid 65534"))
    {
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = Dir::new("activate-nocreds-nobody");
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let ready = Ready::new();
    let pong = activated_as(&dir, &ready, "pong", &[], Some(NOBODY));
    refuses_a_datagram_without_credentials(&dir, pong);
}

#[test]
fn a_wrong_socket_passed_as_listen_fds_is_a_clear_error() {
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    let dir = Dir::new("wrongfd");
    for (family, kind, what) in [
        (
            "AF_UNIX",
            "SOCK_STREAM",
            "fd 3 is an AF_UNIX SOCK_STREAM socket, not AF_UNIX SOCK_DGRAM",
        ),
        (
            "AF_INET",
            "SOCK_DGRAM",
            "fd 3 is an AF_INET SOCK_DGRAM socket, not AF_UNIX SOCK_DGRAM",
        ),
    ] {
        let mut node = with_fd3(&dir, family, kind);
        assert_eq!(node.code(PROMPT), Some(4));
        let err = node.stderr();
        assert!(err.starts_with("piper-node[pong]: error: socket activation: "), "{err}");
        assert!(err.contains(what), "{err}");
        assert_eq!(dir.entries(), Vec::<String>::new());
    }
}

#[test]
fn ready_and_stopping_reach_a_path_notify_socket() {
    let dir = Dir::new("notify-path");
    let manager = UnixDatagram::bind(dir.aux("notify")).unwrap();
    manager.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = node_cmd(&dir, "n", &[]);
    cmd.env("NOTIFY_SOCKET", dir.aux("notify"));
    let mut node = Proc::spawn(&dir, "n", cmd);
    let mut buf = [0u8; 64];
    let n = manager.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(dir.join("piper-n").exists(), "READY=1 comes after the bind");
    node.signal(Signal::SIGTERM);
    // The last message gives the final counts with STOPPING=1; a count
    // report may come before it.
    let mut n = manager.recv(&mut buf).expect("STOPPING=1");
    if !buf[..n].ends_with(b"STOPPING=1") {
        assert_eq!(&buf[..n], b"STATUS=received 0, sent 0, dropped 0");
        n = manager.recv(&mut buf).expect("STOPPING=1");
    }
    assert_eq!(&buf[..n], b"STATUS=received 0, sent 0, dropped 0\nSTOPPING=1");
    assert_eq!(node.code(PROMPT), Some(0));
}

#[test]
fn ready_and_stopping_reach_an_abstract_notify_socket() {
    let dir = Dir::new("notify-abstract");
    let mut ready = Ready::new();
    assert!(ready.address().starts_with('@'));
    let mut cmd = node_cmd(&dir, "n", &[]);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut node = Proc::spawn(&dir, "n", cmd);
    assert!(ready.wait(node.pid(), "READY=1", PROMPT));
    node.signal(Signal::SIGTERM);
    assert!(ready.wait(node.pid(), "STOPPING=1", PROMPT));
    assert_eq!(node.code(PROMPT), Some(0));
    let messages = ready.messages(node.pid());
    let states: Vec<&str> = messages
        .iter()
        .flat_map(|m| m.lines())
        .filter(|s| !s.starts_with("STATUS="))
        .collect();
    assert_eq!(states, ["READY=1", "STOPPING=1"]);
}

#[test]
fn counts_reach_the_manager_at_most_once_a_second_and_only_when_changed() {
    let dir = Dir::new("notify-status");
    let mut ready = Ready::new();
    let mut cmd = node_cmd(&dir, "pong", &["--quiet"]);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut pong = Proc::spawn(&dir, "pong", cmd);
    assert!(ready.wait(pong.pid(), "READY=1", PROMPT));
    // A stream of datagrams for 2.5 s: counts change all the time.
    let sender = UnixDatagram::unbound().unwrap();
    let start = std::time::Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        sender.send_to(b"nobody", dir.join("piper-pong")).unwrap();
        sent += 1;
        ready.listen(Duration::from_millis(2));
    }
    // Then quiet: the last counts are reported, at the node's next wake
    // (within a second of the last datagram, as the node's clock goes).
    let last = format!("STATUS=received {sent}, sent 0, dropped {sent}");
    assert!(
        wait_until(PROMPT, || ready.messages(pong.pid()).contains(&last)),
        "the final counts are reported: {:?}",
        ready.messages(pong.pid())
    );
    let statuses: Vec<String> = ready
        .messages(pong.pid())
        .into_iter()
        .filter(|m| m.starts_with("STATUS="))
        .collect();
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    // About one a second over some 3.5 s, never one per datagram.
    assert!((2..=6).contains(&statuses.len()), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&last), "the final counts come last");
    let mut unique = statuses.clone();
    unique.dedup();
    assert_eq!(unique, statuses, "only changes are reported");
}

#[test]
fn watchdog_pings_arrive_at_half_the_interval() {
    let dir = Dir::new("watchdog");
    let mut ready = Ready::new();
    let mut cmd = node_cmd(&dir, "w", &[]);
    // WATCHDOG_USEC of 200 ms: a ping every 100 ms.
    cmd.env("NOTIFY_SOCKET", ready.address()).env("WATCHDOG_USEC", "200000");
    let mut node = Proc::spawn(&dir, "w", cmd);
    assert!(ready.wait(node.pid(), "READY=1", PROMPT));
    let pings = ready.times(node.pid(), "WATCHDOG=1", Duration::from_secs(1));
    node.signal(Signal::SIGTERM);
    assert_eq!(node.code(PROMPT), Some(0));
    // The wiring: pings come, about ten in a second, never a burst. When
    // each is due is piper-node's ping_due, unit-tested with a clock the
    // test moves; the gaps seen here also hold this test's own scheduling
    // (45 ms between two pings 100 ms apart, under a load of 8).
    assert!((5..=11).contains(&pings.len()), "{} pings in a second", pings.len());
}

#[test]
fn watchdog_pings_go_on_during_a_long_interval() {
    let dir = Dir::new("watchdog-pause");
    let mut ready = Ready::new();
    let mut cmd = node_cmd(&dir, "pong", &["--interval", "5000"]);
    // WATCHDOG_USEC of 400 ms, while each reply waits 5 s.
    cmd.env("NOTIFY_SOCKET", ready.address()).env("WATCHDOG_USEC", "400000");
    let mut pong = Proc::spawn(&dir, "pong", cmd);
    assert!(ready.wait(pong.pid(), "READY=1", PROMPT));
    let kicker = UnixDatagram::unbound().unwrap();
    kicker.send_to(b"nobody", dir.join("piper-pong")).unwrap();
    let pings = ready.times(pong.pid(), "WATCHDOG=1", Duration::from_millis(1500));
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert_eq!(pong.lines(), ["pong received: 'nobody'"], "it was pausing");
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(pings.len() >= 4, "{} pings in 1.5 s", pings.len());
    assert!(gaps.iter().all(|g| *g < Duration::from_millis(400)), "late: {gaps:?}");
}

#[test]
fn watchdog_pid_of_another_process_means_no_pings() {
    let dir = Dir::new("watchdog-pid");
    let mut ready = Ready::new();
    let mut cmd = node_cmd(&dir, "w", &[]);
    cmd.env("NOTIFY_SOCKET", ready.address())
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1");
    let mut node = Proc::spawn(&dir, "w", cmd);
    assert!(ready.wait(node.pid(), "READY=1", PROMPT));
    let pings = ready.times(node.pid(), "WATCHDOG=1", Duration::from_millis(500));
    node.signal(Signal::SIGTERM);
    assert_eq!(node.code(PROMPT), Some(0));
    assert_eq!(
        pings,
        Vec::<std::time::Instant>::new(),
        "the watchdog is another process's"
    );
}
