//! piper-node as a process: the seed's protocol, signals, names, bad input.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use piper_tests::{may_run, node_cmd, start_node, wait_until, Dir, Needs, Proc, Ready, RemoveOnDrop, PROMPT};

fn count_lines(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

#[test]
fn ping_pong_exact_counts_and_clean_exit() {
    let dir = Dir::new("pingpong");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &["--count", "500"]);
    let mut ping = Proc::spawn(
        &dir,
        "ping",
        node_cmd(&dir, "ping", &["--send", "pong", "--count", "500"]),
    );
    assert_eq!(pong.code(PROMPT), Some(0));
    assert_eq!(ping.code(PROMPT), Some(0));
    let (pong_lines, ping_lines) = (pong.lines(), ping.lines());
    assert_eq!(pong_lines.len(), 500);
    assert_eq!(count_lines(&pong_lines, "pong received: 'ping'"), 500);
    assert_eq!(ping_lines.len(), 500);
    assert_eq!(count_lines(&ping_lines, "ping received: 'pong'"), 500);
    // ping sent its first message plus 500 replies; the last finds pong
    // either gone (dropped by ping) or exiting (dropped by pong).
    let (pong_stats, ping_stats) = (pong.summary(), ping.summary());
    assert_eq!((pong_stats.received, pong_stats.sent), (500, 500));
    assert_eq!((ping_stats.received, ping_stats.sent + ping_stats.dropped), (500, 501));
    assert_eq!(ping_stats.dropped + pong_stats.dropped, 1);
    assert_eq!(dir.entries(), Vec::<String>::new(), "sockets and locks must be gone");
}

#[test]
fn sigint_and_sigterm_exit_fast_and_remove_the_socket() {
    for (sig, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 0), (Signal::SIGHUP, 0)] {
        let dir = Dir::new("signals");
        let mut ready = Ready::new();
        let mut node = start_node(&dir, &mut ready, "n", "n", &[]);
        assert_eq!(dir.entries(), ["piper-n"]);
        let sent = Instant::now();
        node.signal(sig);
        let status = node.code(PROMPT);
        let took = sent.elapsed();
        assert_eq!(status, Some(code), "{sig}: ");
        assert!(took < Duration::from_millis(100), "{sig}: exit took {took:?}");
        assert!(ready.wait(node.pid(), "STOPPING=1", PROMPT), "{sig}: no STOPPING=1");
        assert!(node.stderr().contains("received 0, sent 0"), "{sig}: no summary");
        assert_eq!(dir.entries(), Vec::<String>::new(), "{sig}: files left");
    }
}

#[test]
fn kill_9_then_the_same_name_starts_again() {
    let dir = Dir::new("kill9");
    let mut ready = Ready::new();
    let mut first = start_node(&dir, &mut ready, "first", "x", &[]);
    first.signal(Signal::SIGKILL);
    assert_eq!(first.code(PROMPT), Some(137));
    // kill -9 leaves the socket file behind: stale, and listed as such.
    assert_eq!(dir.entries(), ["piper-x"]);
    let list = || {
        let out = Command::new(piper_tests::bin("piper-node"))
            .args(["--list", "--dir"])
            .arg(dir.path())
            .output();
        String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
    };
    assert_eq!(list(), "x\t-\tstale\n");
    let mut second = start_node(&dir, &mut ready, "second", "x", &[]);
    assert_eq!(list(), format!("x\t{}\tlive\n", second.pid()));
    second.signal(Signal::SIGTERM);
    assert_eq!(second.code(PROMPT), Some(0));
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn simultaneous_binds_of_one_name_have_exactly_one_winner() {
    let dir = Dir::new("race");
    for round in 0..10 {
        // Every other round starts with a stale socket file (a node killed
        // by kill -9): all four then reclaim it at once, under the claim.
        if round % 2 == 1 {
            let stale = dir.path().join("piper-same");
            drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
        }
        let mut ready = Ready::new();
        let mut contenders: Vec<Proc> = (0..4)
            .map(|i| {
                let mut cmd = node_cmd(&dir, "same", &[]);
                cmd.env("NOTIFY_SOCKET", ready.address());
                Proc::spawn(&dir, &format!("r{round}-{i}"), cmd)
            })
            .collect();
        let exited = |c: &mut [Proc]| {
            (0..4)
                .filter(|&i| c[i].code(Duration::ZERO).is_some())
                .collect::<Vec<_>>()
        };
        wait_until(PROMPT, || exited(&mut contenders).len() >= 3);
        let losers = exited(&mut contenders);
        assert_eq!(losers.len(), 3, "round {round}");
        for &i in &losers {
            assert_eq!(contenders[i].code(PROMPT), Some(3), "round {round}");
            assert!(contenders[i].stderr().contains("name in use"));
        }
        let winner = (0..4).find(|i| !losers.contains(i)).unwrap();
        // The kernel's socket table names the one owner: the winner, alive.
        let owner = piper_tests::node_pid(&dir, "same", PROMPT);
        assert_eq!(owner, Some(contenders[winner].pid()), "round {round}");
        assert!(ready.wait(contenders[winner].pid(), "READY=1", PROMPT));
        contenders[winner].signal(Signal::SIGTERM);
        assert_eq!(contenders[winner].code(PROMPT), Some(0));
        assert_eq!(dir.entries(), Vec::<String>::new(), "round {round}");
    }
}

#[test]
fn invalid_names_exit_2_with_a_message_and_leave_nothing() {
    let dir = Dir::new("names");
    let long = "x".repeat(101);
    let fits_nowhere = "y".repeat(100 - dir.path().as_os_str().len() + 10);
    let cases: &[(&[&str], &str)] = &[
        (&[""], "must not be empty"),
        (&["."], "are not names"),
        (&[".."], "are not names"),
        (&["a/b"], "only letters"),
        (&["../x"], "only letters"),
        (&["a b"], "only letters"),
        (&["né"], "only letters"),
        (&[&long], "at most 100 bytes"),
        (&[&fits_nowhere], "too long for"),
        (&["ok", "--send", "../etc"], "only letters"),
        (&["ok", "--next", "a\u{1}b"], "only letters"),
    ];
    for (args, message) in cases {
        let mut node = Proc::spawn(&dir, "bad", node_cmd(&dir, args[0], &args[1..]));
        assert_eq!(node.code(PROMPT), Some(2), "{args:?}: ");
        let err = node.stderr();
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        // A valid name is named; an invalid one may hold anything.
        let program = match piper_core::Name::new(args[0]) {
            Ok(name) => format!("piper-node[{name}]"),
            Err(_) => "piper-node".to_string(),
        };
        assert!(
            err.starts_with(&format!("{program}: error: ")) && err.contains(message),
            "{args:?}: {err}"
        );
        assert_eq!(dir.entries(), Vec::<String>::new(), "{args:?}");
    }
}

/// A bound test socket standing in for a node, to see what a node sends.
fn listener(dir: &Dir, name: &str) -> UnixDatagram {
    let sock = UnixDatagram::bind(dir.join(&format!("piper-{name}"))).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock
}

fn expect_reply(sock: &UnixDatagram, want: &[u8]) {
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a reply within 5 s");
    assert_eq!(&buf[..n], want);
}

#[test]
fn unbound_sender_gets_its_answer_by_payload() {
    let dir = Dir::new("unbound");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &[]);
    let tester = listener(&dir, "tester");
    let unbound = UnixDatagram::unbound().unwrap();
    unbound.send_to(b"tester", dir.join("piper-pong")).unwrap();
    expect_reply(&tester, b"pong");
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert_eq!(pong.lines(), ["pong received: 'tester'"]);
}

#[test]
fn traversal_and_garbage_payloads_get_no_reply_and_the_node_keeps_serving() {
    let dir = Dir::new("garbage");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &[]);
    // Traps where a naive DIR/piper-PAYLOAD join would land.
    std::fs::create_dir(dir.aux("piper-..")).unwrap();
    let trap = UnixDatagram::bind(dir.aux("piper-../victim")).unwrap();
    trap.set_nonblocking(true).unwrap();
    let payloads: &[&[u8]] = &[
        b"../victim",
        b"../aux-piper-../victim",
        b"a/b",
        b"",
        b"a\0b",
        b"\xff\xfe",
        b".",
        b"..",
        b"/tmp/x",
    ];
    let unbound = UnixDatagram::unbound().unwrap();
    for p in payloads {
        unbound.send_to(p, dir.join("piper-pong")).unwrap();
    }
    let tester = listener(&dir, "tester");
    unbound.send_to(b"tester", dir.join("piper-pong")).unwrap();
    expect_reply(&tester, b"pong");
    assert!(
        trap.recv(&mut [0u8; 16]).is_err(),
        "a traversal payload reached the trap"
    );
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let lines = pong.lines();
    assert_eq!(lines.len(), payloads.len() + 1);
    assert_eq!(lines[4], "pong received: 'a\\x00b'");
    assert_eq!(lines[5], "pong received: '\\xff\\xfe'");
    let err = pong.stderr();
    assert!(err.contains("received 10, sent 1, dropped 9"));
    assert!(err.contains("payload is not a node to answer"), "{err}");
}

#[test]
fn a_datagram_larger_than_the_buffer_is_detected() {
    use nix::sys::socket::{setsockopt, sockopt};
    if !may_run(Needs::Root("to raise SO_SNDBUF past wmem_max")) {
        return;
    }
    let dir = Dir::new("large");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &[]);
    let big = UnixDatagram::unbound().unwrap();
    setsockopt(&big, sockopt::SndBufForce, &(1 << 20)).unwrap();
    big.send_to(&vec![b'a'; 300_000], dir.join("piper-pong")).unwrap();
    let tester = listener(&dir, "tester");
    big.send_to(b"tester", dir.join("piper-pong")).unwrap();
    expect_reply(&tester, b"pong");
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let err = pong.stderr();
    assert!(
        err.contains("datagram of 300000 bytes is larger than the 212992-byte receive buffer"),
        "{err}"
    );
    assert!(err.contains("received 1, sent 1, dropped 1"), "{err}");
}

#[test]
fn the_largest_datagram_of_the_worst_bytes_costs_a_node_little_cpu() {
    use nix::sys::socket::{setsockopt, sockopt};
    // Into a file, as under the launcher or the journal: whole lines,
    // buffered. Every byte \xff is printed as four.
    let dir = Dir::new("worst");
    let mut ready = Ready::new();
    let mut cmd = node_cmd(&dir, "pong", &[]);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut pong = Proc::spawn(&dir, "pong", cmd);
    assert!(ready.wait(pong.pid(), "READY=1", PROMPT));
    let before = piper_tests::cpu_ticks(pong.pid());
    let sender = UnixDatagram::unbound().unwrap();
    // Room for the largest datagram the node reads whole (up to wmem_max).
    setsockopt(&sender, sockopt::SndBuf, &(1 << 20)).unwrap();
    let len = [piper_core::MAX_DATAGRAM, 212_960]
        .into_iter()
        .find(|&len| sender.send_to(&vec![0xff; len], dir.join("piper-pong")).is_ok())
        .expect("a large datagram sent");
    let whole = |p: &Proc| p.stdout().len() == "pong received: ''\n".len() + 4 * len;
    assert!(
        wait_until(PROMPT, || whole(&pong)),
        "{} bytes printed",
        pong.stdout().len()
    );
    // Before, the line cost time quadratic in its length: minutes of CPU
    // for this one; now milliseconds. One second of CPU is the bound.
    let ticks = piper_tests::cpu_ticks(pong.pid()) - before;
    let second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
    assert!(ticks < second, "{ticks} ticks of CPU for one datagram of {len} bytes");
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert_eq!(pong.summary().received, 1);
}

#[test]
fn a_peer_that_vanishes_and_returns_resumes_the_chain() {
    let dir = Dir::new("vanish");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &["--next", "ping", "--interval", "2"]);
    let received = |p: &Proc| p.lines().len();
    for (round, death) in [Signal::SIGKILL, Signal::SIGTERM].into_iter().enumerate() {
        let mut ping = start_node(&dir, &mut ready, &format!("ping{round}"), "ping", &["--send", "pong"]);
        let before = received(&pong);
        assert!(wait_until(PROMPT, || received(&pong) >= before + 20));
        ping.signal(death);
        ping.code(PROMPT).expect("ping exits");
        // The chain may have died inside ping; a poke makes pong answer it.
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"poke", dir.join("piper-pong"))
            .unwrap();
        let warning = if death == Signal::SIGKILL {
            "peer 'ping' is gone"
        } else {
            "peer 'ping' not found"
        };
        assert!(wait_until(PROMPT, || pong.stderr().contains(warning)));
    }
    let mut ping = start_node(
        &dir,
        &mut ready,
        "ping-back",
        "ping",
        &["--send", "pong", "--count", "10"],
    );
    assert_eq!(ping.code(PROMPT), Some(0));
    assert_eq!(ping.lines().len(), 10);
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0), "pong kept serving throughout");
}

#[test]
fn interop_with_the_seed_python_nodes_in_both_roles() {
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/seed/piper.py");
    let dir = Dir::new("seed");
    let tag = std::process::id();
    let (py, rs) = (format!("seedpy{tag}"), format!("seedrs{tag}"));
    // The seed never cleans up after itself; this guard does, pass or fail.
    let cleanup = RemoveOnDrop([&py, &rs].map(|n| format!("/tmp/piper-{n}").into()).to_vec());
    cleanup.remove();
    let mut ready = Ready::new();

    // Python answers, piper starts the chain.
    let mut python = Proc::spawn(&dir, "py1", {
        let mut c = Command::new("python3");
        c.args([seed, &py]);
        c
    });
    assert!(wait_until(PROMPT, || std::path::Path::new(&format!("/tmp/piper-{py}")).exists()));
    let mut ours = Proc::spawn(&dir, "rs1", {
        piper_tests::node_cmd_at(std::path::Path::new("/tmp"), &rs, &["--send", &py, "--count", "50"])
    });
    assert_eq!(ours.code(PROMPT), Some(0));
    assert_eq!(count_lines(&ours.lines(), &format!("{rs} received: '{py}'")), 50);
    assert!(count_lines(&python.lines(), &format!("{py} received: '{rs}'")) >= 50);
    drop(python);
    cleanup.remove();

    // piper answers, Python starts the chain.
    let mut cmd = piper_tests::node_cmd_at(std::path::Path::new("/tmp"), &rs, &["--count", "50"]);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut ours = Proc::spawn(&dir, "rs2", cmd);
    assert!(ready.wait(ours.pid(), "READY=1", PROMPT));
    python = Proc::spawn(&dir, "py2", {
        let mut c = Command::new("python3");
        c.args([seed, &py, "--send", &rs]);
        c
    });
    assert_eq!(ours.code(PROMPT), Some(0));
    assert_eq!(count_lines(&ours.lines(), &format!("{rs} received: '{py}'")), 50);
    assert!(
        !std::path::Path::new(&format!("/tmp/piper-{rs}")).exists(),
        "piper removed its socket"
    );
    drop(python);
    drop(cleanup);
}

#[test]
fn a_second_sigint_exits_at_once_even_when_stuck_and_removes_the_socket() {
    use std::process::Stdio;
    let dir = Dir::new("second-sigint");
    let mut ready = Ready::new();
    // Stdout is a pipe nobody reads: once it and the node's buffer are full,
    // the node is stuck in write(2), where the first Ctrl-C cannot reach it.
    let mut cmd = node_cmd(&dir, "stuck", &[]);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut node = Proc::spawn_with_stdout(&dir, "stuck", cmd, Stdio::piped());
    assert!(ready.wait(node.pid(), "READY=1", PROMPT));
    let sender = UnixDatagram::unbound().unwrap();
    // Once the node is stuck its queue fills up: sends then time out.
    sender.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let payload = vec![b'x'; 200];
    // Up to 2000 lines of about 220 bytes: far more than a pipe and a buffer hold.
    let mut sent = 0;
    while sent < 2000 && sender.send_to(&payload, dir.join("piper-stuck")).is_ok() {
        sent += 1;
    }
    // More than the pipe holds (64 KiB, about 290 lines): the node is stuck.
    assert!(
        (250..2000).contains(&sent),
        "{sent} datagrams went out before the node got stuck"
    );
    node.signal(Signal::SIGINT);
    assert_eq!(
        node.code(Duration::from_millis(300)),
        None,
        "stuck in write, the first SIGINT cannot end it"
    );
    let sent = Instant::now();
    node.signal(Signal::SIGINT);
    let code = node.code(PROMPT);
    assert!(
        sent.elapsed() < Duration::from_millis(100),
        "the second SIGINT exits at once"
    );
    assert_eq!(code, Some(130));
    assert_eq!(
        dir.entries(),
        Vec::<String>::new(),
        "the emergency exit removed the socket"
    );
}

#[test]
fn a_name_bound_by_a_lockless_process_is_in_use_and_left_alone() {
    // Like a running seed node: a bound socket, no piper lock.
    let dir = Dir::new("squat");
    let squatter = UnixDatagram::bind(dir.join("piper-x")).unwrap();
    let mut node = Proc::spawn(&dir, "x", node_cmd(&dir, "x", &[]));
    assert_eq!(node.code(PROMPT), Some(3));
    let err = node.stderr();
    // Named by the process that holds the socket (the kernel's socket
    // table), piper node or not.
    let want = format!(
        "name in use: node 'x' is already running as pid {} ({})",
        std::process::id(),
        dir.join("piper-x").display()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(
        dir.entries(),
        ["piper-x"],
        "the squatter's socket stays, and no lock file is left"
    );
    drop(squatter);
}

#[test]
fn a_node_never_answers_its_own_name() {
    let dir = Dir::new("self");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &[]);
    let kicker = UnixDatagram::unbound().unwrap();
    kicker.send_to(b"pong", dir.join("piper-pong")).unwrap();
    // Still serving others: a reply to a sender of ours arrives.
    let tester = listener(&dir, "tester");
    kicker.send_to(b"tester", dir.join("piper-pong")).unwrap();
    expect_reply(&tester, b"pong");
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert_eq!(pong.lines(), ["pong received: 'pong'", "pong received: 'tester'"]);
    let s = pong.summary();
    assert_eq!((s.received, s.sent, s.dropped), (2, 1, 1));
    assert!(pong.stderr().contains("payload names this node itself; not answering"));
    // Asked to at start, it refuses at once.
    for flag in ["--send", "--next"] {
        let mut node = Proc::spawn(&dir, "self", node_cmd(&dir, "pong", &[flag, "pong"]));
        assert_eq!(node.code(PROMPT), Some(2));
        assert_eq!(
            node.stderr(),
            format!("piper-node[pong]: error: {flag} pong names this node itself: a node never answers itself\n")
        );
    }
}

#[test]
fn a_peer_that_never_reads_costs_only_itself() {
    let dir = Dir::new("stall");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &["--quiet"]);
    // A bound socket that sends 30 datagrams and never reads its answers:
    // its queue holds max_dgram_qlen of them, the rest cannot be delivered.
    let started = Instant::now();
    let hostile = UnixDatagram::bind(dir.join("piper-hostile")).unwrap();
    hostile.set_write_timeout(Some(PROMPT)).unwrap();
    for _ in 0..30 {
        hostile.send_to(b"hostile", dir.join("piper-pong")).unwrap();
    }
    let mut ping = Proc::spawn(
        &dir,
        "ping",
        node_cmd(&dir, "ping", &["--send", "pong", "--count", "200"]),
    );
    assert_eq!(ping.code(PROMPT), Some(0));
    let took = started.elapsed();
    // One send timeout (250 ms) to find the hostile peer stalled, then none:
    // without the penalty, 20 of them (5 s) before pong gets to ping.
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // 30 from the hostile peer, 201 from ping, whose last reply may still
    // be on its way: pong is stopped once its counts say it has it (a stop
    // that came first would find it queued, and count it dropped only).
    let all = 30 + 201;
    let has_all = |ready: &mut Ready| {
        let messages = ready.messages(pong.pid());
        let counted = format!("STATUS=received {all}, ");
        messages.iter().flat_map(|m| m.lines()).any(|l| l.starts_with(&counted))
    };
    assert!(
        wait_until(PROMPT, || has_all(&mut ready)),
        "{:?}",
        ready.messages(pong.pid())
    );
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let qlen: u64 = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    hostile.set_nonblocking(true).unwrap();
    let mut got = 0;
    while hostile.recv(&mut [0u8; 16]).is_ok() {
        got += 1;
    }
    let s = pong.summary();
    // The kernel queues one more than max_dgram_qlen before it refuses.
    assert_eq!(got, (qlen + 1).min(30), "what the hostile queue held");
    assert_eq!(s.received, all, "30 from the hostile peer, 201 from ping");
    assert_eq!(s.sent + s.dropped, s.received);
    assert!(s.dropped >= 30 - (qlen + 1), "{s:?}");
    drop(hostile);
    std::fs::remove_file(dir.join("piper-hostile")).unwrap();
}

#[test]
fn twenty_peers_that_never_read_cost_a_node_little_time() {
    let dir = Dir::new("stall-many");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &["--quiet"]);
    // Twenty bound sockets of our own uid that never read, their queues full.
    let peers: Vec<UnixDatagram> = (0..20)
        .map(|k| {
            let peer = UnixDatagram::bind(dir.join(&format!("piper-mute{k}"))).unwrap();
            let filler = UnixDatagram::unbound().unwrap();
            filler.set_nonblocking(true).unwrap();
            while filler.send_to(b"x", dir.join(&format!("piper-mute{k}"))).is_ok() {}
            peer
        })
        .collect();
    // Ten rounds of messages naming each of them: every answer is dropped.
    let sender = UnixDatagram::unbound().unwrap();
    sender.set_write_timeout(Some(PROMPT)).unwrap();
    for round in 0..10 {
        for k in 0..20 {
            let name = format!("mute{k}");
            sender
                .send_to(name.as_bytes(), dir.join("piper-pong"))
                .unwrap_or_else(|e| panic!("{round}: {e}"));
        }
    }
    let tester = listener(&dir, "tester");
    sender.send_to(b"tester", dir.join("piper-pong")).unwrap();
    expect_reply(&tester, b"pong");
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let err = pong.stderr();
    let s = pong.summary();
    assert_eq!((s.received, s.sent, s.dropped), (201, 1, 200), "{err}");
    // From the first message to the last. Before, each of the twenty cost
    // a full 250 ms send timeout: 5 s at least. Now the first four cost
    // that (the budget), the others 50 ms each: 1.8 s.
    let active: f64 = err
        .split("(active ")
        .nth(1)
        .and_then(|a| a.split('s').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(active < 3.5, "{active}s to answer 201 messages: {err}");
    drop(peers);
    for k in 0..20 {
        std::fs::remove_file(dir.join(&format!("piper-mute{k}"))).unwrap();
    }
    std::fs::remove_file(dir.join("piper-tester")).unwrap();
}

#[test]
fn a_stalled_peer_does_not_take_the_waits_of_a_slow_peer_that_reads() {
    let dir = Dir::new("stall-beside");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &["--quiet"]);
    let qlen: u64 = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // First a peer that never reads: pong finds it stalled and from then on
    // sends to it without waiting.
    let hostile = UnixDatagram::bind(dir.join("piper-hostile")).unwrap();
    hostile.set_write_timeout(Some(PROMPT)).unwrap();
    for _ in 0..30 {
        hostile.send_to(b"hostile", dir.join("piper-pong")).unwrap();
    }
    // Then a peer that reads, but more slowly than pong answers: its queue
    // is full at almost every answer, and each answer waits a few ms for
    // room. The penalty is the stalled peer's alone; none of these may go
    // without waiting, so none is dropped.
    let slow = UnixDatagram::bind(dir.join("piper-slow")).unwrap();
    slow.set_read_timeout(Some(PROMPT)).unwrap();
    slow.set_write_timeout(Some(PROMPT)).unwrap();
    let reader = slow.try_clone().unwrap();
    let answers = std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while got.len() < 30 {
                std::thread::sleep(Duration::from_millis(5));
                match reader.recv(&mut buf) {
                    Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) => break,
                }
            }
            got
        });
        for _ in 0..30 {
            slow.send_to(b"slow", dir.join("piper-pong")).unwrap();
        }
        reading.join().unwrap()
    });
    assert_eq!(answers.len(), 30, "every answer reached the slow peer");
    assert!(answers.iter().all(|a| a == "pong"), "{answers:?}");
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let held = (qlen + 1).min(30);
    let s = pong.summary();
    assert_eq!(
        (s.received, s.sent, s.dropped),
        (60, held + 30, 30 - held),
        "only the stalled peer's answers beyond its queue are dropped"
    );
    drop((hostile, slow, reader));
    for name in ["piper-hostile", "piper-slow"] {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
}

#[test]
fn the_first_send_waits_for_its_peer_and_fails_visibly_without_one() {
    let dir = Dir::new("first-send");
    let mut ready = Ready::new();
    // ping starts first; pong comes 300 ms later, and the chain still starts.
    let mut ping = Proc::spawn(
        &dir,
        "ping",
        node_cmd(&dir, "ping", &["--send", "pong", "--count", "5"]),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &[]);
    assert_eq!(ping.code(PROMPT), Some(0));
    assert_eq!(ping.lines(), vec!["ping received: 'pong'"; 5]);
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    // Nobody ever comes: a non-zero exit and one clear line, after a while.
    let started = Instant::now();
    let mut lonely = Proc::spawn(&dir, "lonely", node_cmd(&dir, "lonely", &["--send", "nobody"]));
    assert_eq!(lonely.code(PROMPT), Some(1));
    assert!(started.elapsed() >= Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(
        lonely
            .stderr()
            .ends_with("piper-node[lonely]: error: peer 'nobody' not found: no such node\n"),
        "{}",
        lonely.stderr()
    );
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn the_rate_counts_from_the_first_message_to_the_last() {
    let dir = Dir::new("rate");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &["--count", "50", "--quiet"]);
    let mut ping = start_node(&dir, &mut ready, "ping", "ping", &["--send", "pong", "--quiet"]);
    assert_eq!(pong.code(PROMPT), Some(0));
    // ping idles on after its last message; that is not active time.
    std::thread::sleep(Duration::from_millis(1500));
    ping.signal(Signal::SIGTERM);
    assert_eq!(ping.code(PROMPT), Some(0));
    let err = ping.stderr();
    let active: f64 = err
        .split("(active ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no active time in {err}"));
    assert!(active < 1.0, "active {active}s includes the idle time: {err}");
}

#[test]
fn a_failing_stdout_is_exit_1_and_count_0_is_a_usage_error() {
    let dir = Dir::new("stdout");
    let mut ready = Ready::new();
    let mut cmd = node_cmd(&dir, "pong", &[]);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
    let mut pong = Proc::spawn_with_stdout(&dir, "pong", cmd, full.into());
    assert!(ready.wait(pong.pid(), "READY=1", PROMPT));
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"x", dir.join("piper-pong"))
        .unwrap();
    assert_eq!(pong.code(PROMPT), Some(1));
    assert!(
        pong.stderr()
            .contains("piper-node[pong]: error: cannot write stdout: No space left on device"),
        "{}",
        pong.stderr()
    );
    assert_eq!(
        dir.entries(),
        Vec::<String>::new(),
        "the socket is removed all the same"
    );
    let mut zero = Proc::spawn(&dir, "zero", node_cmd(&dir, "z", &["--count", "0"]));
    assert_eq!(zero.code(PROMPT), Some(2));
    assert!(zero.stderr().contains("--count"), "{}", zero.stderr());
}

#[test]
fn kicks_and_lists_create_nothing_and_say_what_is_wrong() {
    let dir = Dir::new("kick");
    let run = |label: &str, args: &[&str]| {
        let mut cmd = Command::new(piper_tests::bin("piper-node"));
        cmd.args(args);
        let mut p = Proc::spawn(&dir, label, cmd);
        let code = p.code(PROMPT);
        (code, p.stderr())
    };
    let missing = dir.aux("a/b/c");
    let missing = missing.to_str().unwrap();
    for args in [
        &["--list", "--dir", missing][..],
        &["x", "--kick", "y", "--dir", missing],
    ] {
        let (code, err) = run("missing", args);
        assert_eq!(code, Some(4), "{args:?}: {err}");
        assert!(err.contains("No such file or directory"), "{err}");
    }
    assert!(!dir.aux("a").exists(), "read-only commands create nothing");
    let long = dir.aux(&"d".repeat(120));
    let (code, err) = run("long", &["x", "--dir", long.to_str().unwrap()]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("is too long: no socket address fits in it"), "{err}");
    assert!(!long.exists(), "a refused directory is not left behind");
    // A regular file where a node should be.
    std::fs::write(dir.join("piper-file"), b"").unwrap();
    let sockets = dir.path().to_str().unwrap();
    let (code, err) = run("file", &["x", "--kick", "file", "--dir", sockets]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("peer 'file' is not a node:") && err.contains("is not a socket"),
        "{err}"
    );
    let (code, err) = run("taken", &["file", "--dir", sockets]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("name in use: node 'file' is taken by"), "{err}");
    let (code, err) = run("abstract", &["x", "--abstract", "--kick", "nobody", "--dir", sockets]);
    assert_eq!(code, Some(1));
    assert!(err.contains("peer 'nobody' not found"), "{err}");
    // A name too long for a directory that does not exist yet: said
    // before the directory is made, so none is left behind; the same for
    // a peer's name, and for the launcher.
    let new = dir.aux("new/sub");
    let new = new.to_str().unwrap();
    let name = "n".repeat(100);
    let peer = ["x", "--next", &name, "--dir", new];
    for (label, args) in [("long-new", &[&name, "--dir", new][..]), ("long-peer", &peer[..])] {
        let (code, err) = run(label, args);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("fit"), "{err}");
        assert!(!dir.aux("new").exists(), "{args:?} left {new}");
    }
    let mut launch = Proc::spawn(&dir, "long-launch", {
        let mut cmd = Command::new(piper_tests::bin("piper-launch"));
        cmd.args(["--nodes", &format!("a,{name}"), "--dir", new]);
        cmd
    });
    assert_eq!(launch.code(PROMPT), Some(2), "{}", launch.stderr());
    assert!(!dir.aux("new").exists(), "the launcher left {new}");
    // A kick from a node to itself would be answered by nobody, as --send
    // to itself: refused the same way. And --list takes no node's name.
    let (code, err) = run("self", &["x", "--kick", "x", "--dir", sockets]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err,
        "piper-node[x]: error: --kick x names this node itself: a node never answers itself\n"
    );
    let (code, err) = run("list-name", &["--list", "x", "--dir", sockets]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("'--list' cannot be used with '[NAME]'"), "{err}");
    std::fs::remove_file(dir.join("piper-file")).unwrap();
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn help_shows_examples_environment_and_exit_codes() {
    let help = |flag: &str| {
        let out = Command::new(piper_tests::bin("piper-node")).arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        String::from_utf8(out.stdout).unwrap()
    };
    let long = help("--help");
    for part in [
        "Examples:\n  piper-node pong\n      serve as pong in the default socket directory\n",
        "Environment:\n",
        "  PIPER_DIR\n      the socket directory when --dir is not given\n",
        "Exit status:\n  0  ",
    ] {
        assert!(long.contains(part), "--help lacks {part:?}:\n{long}");
    }
    // The short help keeps only the exit codes.
    let short = help("-h");
    assert!(
        short.contains("Exit status:\n  0  ") && !short.contains("Examples:"),
        "{short}"
    );
}

#[test]
fn a_reply_to_a_name_too_long_for_the_directory_is_dropped_and_counted() {
    // A directory whose path leaves room for "pong" but not for a longer
    // (valid) name in a socket address (107 bytes).
    let dir = Dir::new(&format!("long-{}", "d".repeat(50)));
    let room = 107 - dir.path().as_os_str().len() - "/piper-".len();
    assert!((4..60).contains(&room), "{room} bytes of room");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &[]);
    let long = "n".repeat(room + 1);
    let tester = UnixDatagram::unbound().unwrap();
    tester.send_to(long.as_bytes(), dir.join("piper-pong")).unwrap();
    assert!(
        wait_until(PROMPT, || pong.stderr().contains("dropping the reply")),
        "{}",
        pong.stderr()
    );
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let summary = pong.summary();
    assert_eq!((summary.received, summary.sent, summary.dropped), (1, 0, 1));
    assert_eq!(pong.lines(), [format!("pong received: '{long}'")]);
}

#[test]
fn with_an_interval_the_first_send_waits_for_it_and_the_chain_runs() {
    let dir = Dir::new("node-interval-send");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &["--count", "3"]);
    let started = Instant::now();
    let mut ping = Proc::spawn(
        &dir,
        "ping",
        node_cmd(&dir, "ping", &["--send", "pong", "--interval", "100", "--count", "3"]),
    );
    assert_eq!(ping.code(PROMPT), Some(0));
    assert_eq!(pong.code(PROMPT), Some(0));
    // Three replies each way, each after its 100 ms pause, the first too.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ping.lines(), vec!["ping received: 'pong'"; 3]);
    assert_eq!(pong.lines(), vec!["pong received: 'ping'"; 3]);
    let (p, q) = (ping.summary(), pong.summary());
    assert_eq!((p.received, p.sent, q.received, q.sent), (3, 3, 3, 3));
}

#[test]
fn a_stop_while_the_first_send_waits_for_its_peer_counts_it_dropped() {
    let dir = Dir::new("node-first-send-stop");
    let mut cmd = node_cmd(&dir, "ping", &["--send", "ghost"]);
    cmd.env("RUST_LOG", "info");
    let mut ping = Proc::spawn(&dir, "ping", cmd);
    assert!(
        wait_until(PROMPT, || ping.stderr().contains("trying again")),
        "{}",
        ping.stderr()
    );
    ping.signal(Signal::SIGTERM);
    assert_eq!(ping.code(PROMPT), Some(0));
    let summary = ping.summary();
    assert_eq!((summary.received, summary.sent, summary.dropped), (0, 0, 1));
    assert_eq!(dir.entries(), Vec::<String>::new());
}
