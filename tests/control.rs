//! Steering a running ring from another terminal: `piper-launch ctl`
//! against real launchers, real nodes and the control socket.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::Signal;
use piper_tests::{bin, launch_cmd, may_run, wait_until, Dir, Needs, Proc, PROMPT};

const NOBODY: u32 = 65534;

fn launch(dir: &Dir, label: &str, args: &[&str]) -> Proc {
    Proc::spawn(dir, label, launch_cmd(dir, args))
}

fn wait_ready(launcher: &Proc) {
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")),
        "{}",
        launcher.stderr()
    );
}

/// `piper-launch ctl --dir DIR ARGS` (socket directory `sockets`): its exit
/// code, stdout and stderr.
fn ctl_at(dir: &Dir, sockets: &std::path::Path, args: &[&str], uid: Option<u32>) -> (i32, String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.arg("ctl").arg("--dir").arg(sockets).args(args);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let label = format!("ctl-{}", N.fetch_add(1, Ordering::SeqCst));
    let mut proc = Proc::spawn(dir, &label, cmd);
    let code = proc.code(PROMPT).expect("ctl answers within its patience");
    (code, proc.stdout(), proc.stderr())
}

fn ctl(dir: &Dir, args: &[&str]) -> (i32, String, String) {
    ctl_at(dir, dir.path(), args, None)
}

/// `ctl ARGS`, which must succeed: its stdout.
fn ok(dir: &Dir, args: &[&str]) -> String {
    let (code, out, err) = ctl(dir, args);
    assert_eq!((code, err.as_str()), (0, ""), "ctl {args:?}: {out}");
    out
}

/// One member of `status --json` (or of the ring summary's JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    state: String,
    pid: Option<i32>,
    restarts: u64,
    counts: [u64; 3],
}

fn members(json: &str) -> HashMap<String, Member> {
    let list = json.split("\"members\":[").nth(1).expect("members");
    list.split("},{")
        .map(|m| {
            let field = |key: &str| -> String {
                let rest = m.split(&format!("\"{key}\":")).nth(1).unwrap_or("null");
                rest.split([',', '}']).next().unwrap().trim_matches('"').to_string()
            };
            // null for a program that reports no counts.
            let n = |key: &str| field(key).parse::<u64>().unwrap_or(0);
            let member = Member {
                state: field("state"),
                pid: field("pid").parse().ok(),
                restarts: n("restarts"),
                counts: [n("received"), n("sent"), n("dropped")],
            };
            (field("name"), member)
        })
        .collect()
}

fn status(dir: &Dir) -> HashMap<String, Member> {
    members(&ok(dir, &["status", "--json"]))
}

/// Waits until `cond` holds of the status.
fn wait_status(dir: &Dir, mut cond: impl FnMut(&HashMap<String, Member>) -> bool) -> HashMap<String, Member> {
    let mut last = HashMap::new();
    let held = wait_until(PROMPT, || {
        last = status(dir);
        cond(&last)
    });
    assert!(held, "the status never got there: {last:?}");
    last
}

#[test]
fn status_json_matches_each_node_s_own_summary_at_exit() {
    let dir = Dir::new("ctl-status");
    let logs = dir.aux("logs");
    let args = ["--nodes", "a,b,c", "--json", "--log-dir", logs.to_str().unwrap()];
    let mut launcher = launch(&dir, "launch", &args);
    wait_ready(&launcher);
    wait_status(&dir, |s| s["a"].counts[0] > 1000);
    let text = ok(&dir, &[]);
    let header = format!("ring of 3 in {}: 3 alive, ", dir.path().display());
    assert!(text.starts_with(&header), "{text}");
    let table: Vec<&str> = text.lines().skip(1).collect();
    assert!(
        table[0].starts_with("NAME  STATE") && table[0].ends_with("MSG/S  CPUS"),
        "{text}"
    );
    assert!(table[1].starts_with("a     ready"), "{text}");
    // Stopped by hand, every node reports its last counts as it ends, and
    // the ring stands still: the foreground too, without ending the run.
    let said = ok(&dir, &["stop", "a", "b", "c"]);
    assert_eq!(said.lines().count(), 3, "{said}");
    assert!(said.starts_with("stopping 'a' (pid "), "{said}");
    let stopped = wait_status(&dir, |s| s.values().all(|m| m.state == "stopped"));
    assert!(stopped.values().all(|m| m.pid.is_none()));
    assert_eq!(status(&dir), stopped, "nothing moves any more");
    // And says so at once: no process, no rate, however recent its last.
    let text = ok(&dir, &["status"]);
    assert!(
        text.starts_with(&header.replace("3 alive, ", "0 alive, 0 msg/s, ")),
        "{text}"
    );
    let rates: Vec<&str> = (text.lines().skip(2))
        .map(|l| l.split_whitespace().nth(7).unwrap())
        .collect();
    assert_eq!(rates, ["0", "0", "0"], "{text}");
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    for name in ["a", "b", "c"] {
        // a and b log their summaries; c, the foreground, writes to ours.
        let text = match name {
            "c" => err.clone(),
            _ => std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap(),
        };
        let own = piper_tests::summary(&text);
        let [received, sent, dropped] = stopped[name].counts;
        assert_eq!(
            (received, sent, dropped),
            (own.received, own.sent, own.dropped),
            "{name}"
        );
    }
    let ring = members(err.lines().last().unwrap());
    for name in ["a", "b", "c"] {
        assert_eq!(ring[name].counts, stopped[name].counts, "{name} in the ring summary");
    }
    assert_eq!(dir.entries(), Vec::<String>::new(), "no control socket left");
}

#[test]
fn stop_start_kick_and_signal_do_what_they_say() {
    let dir = Dir::new("ctl-acts");
    let mut launcher = launch(
        &dir,
        "launch",
        &["--nodes", "a,b", "--no-start", "--output", "foreground"],
    );
    wait_ready(&launcher);
    let before = status(&dir);
    assert_eq!(before["b"].state, "ready");
    assert_eq!(before["b"].counts, [0, 0, 0], "--no-start: nothing moves");
    // kick starts the chain, which --no-start left to someone else.
    assert_eq!(ok(&dir, &["kick"]), "started the chain: 'a' to 'b'\n");
    wait_status(&dir, |s| s["a"].counts[0] > 100 && s["b"].counts[0] > 100);
    let b = before["b"].pid.expect("b runs");
    assert_eq!(ok(&dir, &["stop", "b"]), format!("stopping 'b' (pid {b})\n"));
    let stopped = wait_status(&dir, |s| s["b"].state == "stopped");
    assert_eq!(ok(&dir, &["stop", "b"]), "'b' is stopped already\n");
    // Sent while b is stopped: the launcher holds its socket, and the
    // datagram waits in its queue (behind the chain's message) for b's
    // next life, which answers it (to a, as a ring member does).
    let me = UnixDatagram::unbound().unwrap();
    me.send_to(b"t", dir.join("piper-b")).unwrap();
    assert!(!launcher.lines().contains(&"b received: 't'".to_string()));
    assert_eq!(ok(&dir, &["start", "b"]), "starting 'b'\n");
    assert!(
        wait_until(PROMPT, || launcher.lines().contains(&"b received: 't'".to_string())),
        "b's next life takes what was sent while it was stopped"
    );
    let after = wait_status(&dir, |s| {
        s["b"].state == "ready" && s["b"].counts[0] > stopped["b"].counts[0] + 100
    });
    assert_ne!(after["b"].pid, Some(b), "a new process");
    assert_eq!(after["b"].restarts, 0, "a deliberate start is no restart");
    // signal: a's process gets it; with no restart policy, a stays dead.
    let a = after["a"].pid.unwrap();
    assert_eq!(
        ok(&dir, &["signal", "a", "KILL"]),
        format!("sent SIGKILL to 'a' (pid {a})\n")
    );
    wait_status(&dir, |s| s["a"].state == "dead");
    let (code, out, err) = ctl(&dir, &["signal", "a", "TERM"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err, "piper-launch: error: 'a' is not running (dead)\n");
    // A dead node started by hand comes back.
    assert_eq!(ok(&dir, &["start", "a"]), "starting 'a'\n");
    wait_status(&dir, |s| s["a"].state == "ready");
    // Errors: one line and their own exit code each.
    let cases: [(&[&str], i32, &str); 4] = [
        (&["stop", "x"], 3, "piper-launch: error: no node 'x' in this ring\n"),
        (
            &["start", "a", "../x"],
            3,
            "piper-launch: error: invalid node name '../x': ",
        ),
        (
            &["signal", "a", "NOPE"],
            2,
            "piper-launch: error: 'NOPE' is not a signal",
        ),
        (
            &["restart"],
            2,
            "error: the following required arguments were not provided",
        ),
    ];
    for (args, want, says) in cases {
        let (code, out, err) = ctl(&dir, args);
        assert_eq!((code, out.as_str()), (want, ""), "{args:?}: {err}");
        assert!(err.starts_with(says), "{args:?}: {err}");
    }
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_eq!(dir.entries(), Vec::<String>::new());
    // No launcher any more: exit 4, one line.
    let (code, _, err) = ctl(&dir, &[]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.starts_with("piper-launch: error: no launcher for ") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn status_s_flags_work_without_naming_status() {
    let dir = Dir::new("ctl-default-flags");
    let mut launcher = launch(&dir, "launch", &["--nodes", "a,b", "--quiet"]);
    wait_ready(&launcher);
    for args in [&["--json"][..], &["--json", "status"], &["status", "--json"]] {
        let m = members(&ok(&dir, args));
        assert_eq!(m["a"].state, "ready", "{args:?}");
    }
    let (code, out, err) = ctl(&dir, &["--json", "stop", "a"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err,
        "piper-launch: error: --json and --watch are status's: give them alone (`ctl --json`) or with status\n"
    );
    // The launcher's flags before ctl: said where ctl's go.
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.arg("--dir").arg(dir.path()).arg("ctl");
    let mut misplaced = Proc::spawn(&dir, "misplaced", cmd);
    assert_eq!(misplaced.code(PROMPT), Some(2));
    assert_eq!(
        misplaced.stderr(),
        "piper-launch: error: options before `ctl` are the launcher's: give ctl's after it (piper-launch ctl --dir DIR ...)\n"
    );
    assert_eq!(status(&dir)["a"].state, "ready", "nothing was stopped");
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn restart_gives_the_node_a_new_pid_and_the_ring_goes_on() {
    // No restart policy at all: only the deliberate act brings it back.
    let dir = Dir::new("ctl-restart");
    let mut launcher = launch(&dir, "launch", &["--nodes", "a,b,c", "--quiet"]);
    wait_ready(&launcher);
    let before = wait_status(&dir, |s| s["b"].counts[0] > 100);
    let old = before["b"].pid.unwrap();
    assert_eq!(ok(&dir, &["restart", "b"]), format!("restarting 'b' (pid {old})\n"));
    let after = wait_status(&dir, |s| s["b"].state == "ready" && s["b"].pid != Some(old));
    // Its counts carry on from its last life's, and the chain goes on
    // through it.
    let moved = wait_status(&dir, |s| s["b"].counts[0] > after["b"].counts[0] + 100);
    assert!(moved["b"].counts[0] >= before["b"].counts[0]);
    assert_eq!(moved["b"].restarts, 0);
    let err = launcher.stderr();
    assert!(
        err.contains(&format!("node 'b' (pid {old}) exited with status 0, as asked")),
        "{err}"
    );
    assert!(!err.contains("warn"), "{err}");
    // A kick on a moving ring adds a message to it, and says so.
    let moving = || {
        !ok(&dir, &["status"])
            .lines()
            .next()
            .unwrap()
            .contains(" alive, 0 msg/s")
    };
    assert!(wait_until(PROMPT, moving), "the ring never moved");
    assert_eq!(
        ok(&dir, &["kick"]),
        "started the chain: 'a' to 'b'; the ring was moving, so it now carries one message more\n"
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn a_signal_that_ends_the_foreground_is_warned_of_and_its_end_told() {
    let dir = Dir::new("ctl-foreground");
    let mut launcher = launch(&dir, "launch", &["--nodes", "a,b", "--quiet"]);
    wait_ready(&launcher);
    let b = status(&dir)["b"].pid.expect("b runs");
    assert_eq!(
        ok(&dir, &["signal", "b", "KILL"]),
        format!(
            "sent SIGKILL to 'b' (pid {b})\n'b' is the foreground, not restarted after SIGKILL: if it ends, \
             the run ends (`ctl stop` or `ctl restart` it instead, or run with --restart-foreground)\n"
        )
    );
    assert_eq!(launcher.code(PROMPT), Some(137));
    let err = launcher.stderr();
    assert!(
        err.contains(&format!(
            "node 'b' (pid {b}) was killed by SIGKILL: it is the foreground, so the run ends\n"
        )),
        "{err}"
    );
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn another_user_is_refused() {
    if !may_run(Needs::Root("to ask as another uid")) {
        return;
    }
    // Abstract: no file mode stands in the way, so the launcher's own
    // check (SO_PEERCRED) is what refuses.
    let dir = Dir::new("ctl-uid");
    let mut launcher = launch(&dir, "launch", &["--nodes", "a,b", "--quiet", "--abstract"]);
    wait_ready(&launcher);
    let (code, out, err) = ctl_at(&dir, dir.path(), &["--abstract", "stop", "a"], Some(NOBODY));
    assert_eq!((code, out.as_str()), (5, ""), "{err}");
    assert_eq!(
        err,
        "piper-launch: error: permission denied: uid 65534 is not this launcher's (uid 0) or root\n"
    );
    // Socket files: the directory's mode keeps the stranger out first.
    let mut files = launch(&dir, "files", &["--nodes", "c,d", "--quiet"]);
    wait_ready(&files);
    let (code, _, err) = ctl_at(&dir, dir.path(), &["status"], Some(NOBODY));
    assert_eq!(code, 5, "{err}");
    assert!(err.starts_with("piper-launch: error: permission denied: "), "{err}");
    // Nothing was done: a still runs.
    let (code, out, _) = ctl_at(&dir, dir.path(), &["--abstract", "status", "--json"], None);
    assert_eq!(code, 0);
    assert_eq!(members(&out)["a"].state, "ready");
    for l in [&mut launcher, &mut files] {
        l.signal(Signal::SIGTERM);
        assert_eq!(l.code(PROMPT), Some(0));
    }
}

#[test]
fn another_user_s_directory_with_a_control_socket_is_permission_denied() {
    if !may_run(Needs::Root("to own a directory as another uid")) {
        return;
    }
    // The directory of uid 1001's launcher, as uid 65534 finds it: not
    // its own, so never used as a socket directory; yet a control socket
    // there (or one it cannot look for) is that user's launcher, and the
    // answer is the one its control socket gives: permission denied.
    let dir = Dir::new("ctl-other-uid");
    let socket = std::os::unix::net::UnixListener::bind(dir.join(".piper-launch.sock")).unwrap();
    let other = Some(nix::unistd::Uid::from_raw(1001));
    nix::unistd::chown(dir.path(), other, None).unwrap();
    let want = format!(
        "piper-launch: error: permission denied: {} is uid 1001's, and so is its launcher (only its own user and root may control it)\n",
        dir.path().display()
    );
    let (code, out, err) = ctl_at(&dir, dir.path(), &["status"], Some(NOBODY));
    assert_eq!((code, out.as_str(), err.as_str()), (5, "", want.as_str()));
    // Open to look into, and no control socket there: no launcher.
    drop(socket);
    std::fs::remove_file(dir.join(".piper-launch.sock")).unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, _, err) = ctl_at(&dir, dir.path(), &["status"], Some(NOBODY));
    assert_eq!(code, 4, "{err}");
    assert!(
        err.starts_with("piper-launch: error: no launcher for ") && err.contains("owned by uid 1001"),
        "{err}"
    );
}

#[test]
fn each_launcher_is_reached_by_its_own_directory_only() {
    let one = Dir::new("ctl-one");
    let two = Dir::new("ctl-two");
    // A control socket left by a launcher killed with SIGKILL: stale, and
    // reclaimed as a node's socket is.
    drop(std::os::unix::net::UnixListener::bind(one.join(".piper-launch.sock")).unwrap());
    let mut first = launch(&one, "first", &["--nodes", "a,b", "--quiet"]);
    let mut second = launch(&two, "second", &["--nodes", "c,d", "--quiet"]);
    wait_ready(&first);
    wait_ready(&second);
    let names = |dir: &Dir| {
        let mut names: Vec<String> = status(dir).into_keys().collect();
        names.sort();
        names
    };
    assert_eq!(names(&one), ["a", "b"]);
    assert_eq!(names(&two), ["c", "d"]);
    let (code, _, err) = ctl(&two, &["stop", "a"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(status(&one)["a"].state, "ready", "untouched");
    // A third in the first's directory has no control socket: ctl still
    // reaches the first, and the third says so.
    let mut third = launch(&one, "third", &["--nodes", "e,f", "--quiet"]);
    wait_ready(&third);
    assert!(
        third.stderr().contains("another piper-launch runs in this directory"),
        "{}",
        third.stderr()
    );
    assert_eq!(names(&one), ["a", "b"]);
    for l in [&mut third, &mut first, &mut second] {
        l.signal(Signal::SIGTERM);
        assert_eq!(l.code(PROMPT), Some(0));
    }
    assert_eq!(one.entries(), Vec::<String>::new());
    assert_eq!(two.entries(), Vec::<String>::new());
}

#[test]
fn a_launcher_killed_with_sigkill_leaves_no_control_socket() {
    let dir = Dir::new("ctl-killed");
    let mut launcher = launch(&dir, "launch", &["--nodes", "a,b", "--quiet"]);
    wait_ready(&launcher);
    assert!(dir.entries().contains(&".piper-launch.sock".to_string()));
    launcher.signal(Signal::SIGKILL);
    launcher.wait(PROMPT).expect("killed");
    // Its nodes follow it, and remove what it held: their sockets and
    // its control socket.
    assert!(dir.wait_no_processes(PROMPT).is_empty());
    assert!(wait_until(PROMPT, || dir.entries().is_empty()), "{:?}", dir.entries());
    let (code, _, err) = ctl(&dir, &[]);
    assert_eq!(code, 4, "{err}");
    let mut next = launch(&dir, "next", &["--nodes", "a,b", "--quiet"]);
    wait_ready(&next);
    assert_eq!(status(&dir)["a"].state, "ready");
    next.signal(Signal::SIGTERM);
    assert_eq!(next.code(PROMPT), Some(0));
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn no_launcher_is_told_with_what_may_be_wrong() {
    let dir = Dir::new("ctl-none");
    let d = dir.path().display().to_string();
    let fails = |sockets: &std::path::Path, args: &[&str]| {
        let (code, out, err) = ctl_at(&dir, sockets, args, None);
        assert_eq!((code, out.as_str()), (4, ""), "{err}");
        err
    };
    // A launcher with --abstract makes no directory, and no socket file.
    let missing = dir.aux("missing");
    assert_eq!(
        fails(&missing, &[]),
        format!(
            "piper-launch: error: no launcher for {0}: cannot open socket directory {0}: \
             No such file or directory (was it started with --abstract?)\n",
            missing.display()
        )
    );
    assert_eq!(
        fails(dir.path(), &[]),
        format!(
            "piper-launch: error: no launcher for {d}: nothing listens on {d}/.piper-launch.sock \
             (was it started with --abstract?)\n"
        )
    );
    assert_eq!(
        fails(dir.path(), &["--abstract"]),
        format!(
            "piper-launch: error: no launcher for {d}: nothing listens on @{d}/.piper-launch.sock \
             (was it started without --abstract?)\n"
        )
    );
    // A socket file nobody listens on: its launcher is gone.
    drop(std::os::unix::net::UnixListener::bind(dir.join(".piper-launch.sock")).unwrap());
    assert_eq!(
        fails(dir.path(), &[]),
        format!(
            "piper-launch: error: no launcher for {d}: {d}/.piper-launch.sock is stale: \
             the launcher that made it is gone\n"
        )
    );
}

#[test]
fn status_watch_shows_the_status_again_every_second() {
    let dir = Dir::new("ctl-watch");
    let mut launcher = launch(&dir, "launch", &["--nodes", "a,b", "--quiet"]);
    wait_ready(&launcher);
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.args(["ctl", "status", "--watch", "--dir"]).arg(dir.path());
    let mut watch = Proc::spawn(&dir, "watch", cmd);
    // The status, once a second: the counts move from one to the next.
    // Into a file, no screen is cleared: the answers follow one another.
    let screens = |out: &str| -> Vec<String> {
        assert!(!out.contains('\x1b'), "no terminal codes: {out:?}");
        (out.split("ring of 2 in ").skip(1))
            .map(|s| format!("ring of 2 in {s}"))
            .collect()
    };
    assert!(
        wait_until(PROMPT, || screens(&watch.stdout()).len() >= 3),
        "{}",
        watch.stdout()
    );
    let shown = screens(&watch.stdout());
    assert!(shown.iter().all(|s| s.starts_with("ring of 2 in ")), "{shown:?}");
    assert_ne!(shown[0], shown[2], "the counts moved");
    watch.signal(Signal::SIGINT);
    assert_eq!(watch.code(PROMPT), Some(130));
    // It ends with its launcher, with exit 4.
    let mut again = Proc::spawn(&dir, "watch-again", {
        let mut cmd = Command::new(bin("piper-launch"));
        cmd.args(["ctl", "status", "--watch", "--dir"]).arg(dir.path());
        cmd
    });
    assert!(wait_until(PROMPT, || !screens(&again.stdout()).is_empty()));
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_eq!(again.code(PROMPT), Some(4), "{}", again.stderr());
}

#[test]
fn status_watch_ends_quietly_when_its_reader_goes() {
    use std::io::BufRead;
    // `piper-launch ctl status --json --watch | head -1`: once head has
    // gone, the next write finds no reader, and ctl ends, exit 0.
    let dir = Dir::new("ctl-watch-head");
    let mut launcher = launch(&dir, "launch", &["--nodes", "a,b", "--quiet"]);
    wait_ready(&launcher);
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.args(["ctl", "status", "--json", "--watch", "--dir"])
        .arg(dir.path());
    let mut watch = Proc::spawn_with_stdout(&dir, "watch", cmd, write.into());
    let mut head = std::io::BufReader::new(std::fs::File::from(read));
    let mut line = String::new();
    head.read_line(&mut line).unwrap();
    assert!(line.contains("\"members\":["), "{line:?}");
    drop(head);
    assert_eq!(watch.code(PROMPT), Some(0), "{}", watch.stderr());
    assert_eq!(watch.stderr(), "");
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn any_program_of_a_topology_file_is_controlled_and_measured_too() {
    // A piper-node and a program that reports no counts (ready once it has
    // exec'd): stopped, started and restarted as any node, and shown with
    // its counts unknown, not zero.
    let dir = Dir::new("ctl-topology");
    let file = dir.aux("ring.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let text = "[[node]]\nname = \"a\"\n\n[[node]]\nname = \"s\"\nexec = [\"sleep\", \"1000\"]\nready = \"exec\"\nforeground = false\n";
    std::fs::write(&file, text).unwrap();
    let socket = dir.aux("metrics.sock");
    let mut cmd = launch_cmd(&dir, &["--file", file.to_str().unwrap(), "--quiet"]);
    cmd.arg("--metrics").arg(&socket);
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    wait_ready(&launcher);
    let before = wait_status(&dir, |s| s["s"].state == "ready");
    let text = ok(&dir, &["status"]);
    assert!(text.lines().next().unwrap().ends_with(", 1 with no counts"), "{text}");
    let row = text.lines().find(|l| l.starts_with("s ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[4..8], ["-", "-", "-", "-"], "{row}");
    let old = before["s"].pid.unwrap();
    assert_eq!(ok(&dir, &["restart", "s"]), format!("restarting 's' (pid {old})\n"));
    let after = wait_status(&dir, |s| s["s"].state == "ready" && s["s"].pid != Some(old));
    assert_eq!(after["s"].restarts, 0);
    let metrics = piper_tests::http::scrape(piper_tests::http::At::Socket(&socket));
    assert!(metrics.contains("\npiper_node_up{node=\"s\"} 1\n"), "{metrics}");
    assert!(
        metrics.contains("\npiper_node_received_total{node=\"a\"} "),
        "{metrics}"
    );
    assert!(!metrics.contains("piper_node_received_total{node=\"s\"}"), "{metrics}");
    assert_eq!(
        ok(&dir, &["stop", "s"]),
        format!("stopping 's' (pid {})\n", after["s"].pid.unwrap())
    );
    wait_status(&dir, |s| s["s"].state == "stopped");
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_eq!(dir.entries(), Vec::<String>::new());
}
