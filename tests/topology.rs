//! piper-launch running topology files: any program as a node (piper-node,
//! the Python, C and Rust examples, the seed's own node), each with the
//! launcher's guarantees; and every mistake in a file named with its line
//! and column, with nothing started.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use piper_tests::{bin, bin_dir, launch_cmd, may_run, running, state, wait_until, Dir, Needs, Proc, PROMPT};

/// The workspace's examples directory.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The example programs, kept in this test's directory so that its
/// processes can be told (and cleaned up) by their command lines.
struct Programs {
    py: PathBuf,
    c: PathBuf,
    rust: PathBuf,
    seed: PathBuf,
}

/// Copies (or, for C, compiles) the examples into `dir`; `None` (with a
/// SKIPPED line) if python3 or cc is missing.
fn programs(dir: &Dir) -> Option<Programs> {
    if !may_run(Needs::Tool("python3")) || !may_run(Needs::Tool("cc")) {
        return None;
    }
    std::fs::create_dir_all(dir.aux("")).unwrap();
    let copy = |from: &Path, to: &str| {
        let to = dir.aux(to);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    };
    let c = dir.aux("node-c");
    let built = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&c)
        .arg(examples().join("node.c"))
        .status()
        .unwrap();
    assert!(built.success(), "examples/node.c does not build");
    let ring_member = bin_dir().join("examples/ring_member");
    assert!(
        ring_member.exists(),
        "{} is not built: cargo build --examples",
        ring_member.display()
    );
    Some(Programs {
        py: copy(&examples().join("node.py"), "node.py"),
        c,
        rust: copy(&ring_member, "ring_member"),
        seed: copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("seed/piper.py"), "piper.py"),
    })
}

/// A ring of the four kinds of held node (piper-node, Python, C, Rust),
/// started, at 20 ms a hop.
fn polyglot_ring(p: &Programs) -> String {
    format!(
        "start = \"ping\"\n[defaults]\nenv = {{ PIPER_INTERVAL = \"20\" }}\n\
         [[node]]\nname = \"ping\"\nexec = [\"piper-node\", \"--interval=20\"]\n\
         [[node]]\nname = \"py\"\nexec = [{}]\n\
         [[node]]\nname = \"c\"\nexec = [{}]\n\
         [[node]]\nname = \"rust\"\nexec = [{}]\n",
        quoted(&p.py),
        quoted(&p.c),
        quoted(&p.rust)
    )
}

/// `path` as a TOML string.
fn quoted(path: &Path) -> String {
    format!("{:?}", path.to_str().unwrap())
}

/// Writes a topology file into the test's scratch space.
fn topology(dir: &Dir, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir.aux("")).unwrap();
    let path = dir.aux(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn launch_file(dir: &Dir, file: &Path, args: &[&str]) -> Proc {
    let mut cmd = launch_cmd(dir, &["--file", file.to_str().unwrap()]);
    cmd.args(args);
    Proc::spawn(dir, "launch", cmd)
}

/// The live process of member `name` of `launcher`: its child whose
/// environment says `PIPER_NAME=name`.
fn member_pid(launcher: Pid, name: &str) -> Option<Pid> {
    let want = format!("PIPER_NAME={name}");
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|&pid| running(pid))
        .find(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ.split(|&b| b == 0).any(|v| v == want.as_bytes())
        })
}

fn wait_member(launcher: &Proc, name: &str, not: Option<Pid>) -> Pid {
    let mut found = None;
    wait_until(PROMPT, || {
        found = member_pid(launcher.pid(), name).filter(|&p| Some(p) != not);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("member {name} never ran (or never came back)"))
}

fn wait_ready(launcher: &Proc, n: usize) {
    let said = format!("{n} nodes ready in");
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains(&said)),
        "{}",
        launcher.stderr()
    );
}

fn assert_all_gone(dir: &Dir) {
    assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new(), "processes left");
    assert!(
        wait_until(PROMPT, || dir.entries().is_empty()),
        "files left: {:?}",
        dir.entries()
    );
}

/// The ring summary's counts: (received, sent, dropped).
fn ring_counts(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with("piper-launch: ring of "))
        .unwrap_or_else(|| panic!("no ring summary in {stderr}"));
    let number = |word: &str| -> u64 {
        let at = line.find(word).unwrap_or_else(|| panic!("no {word} in {line}")) + word.len();
        let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    };
    (number("received "), number("sent "), number("dropped "))
}

#[test]
fn the_polyglot_ring_runs_its_counts_add_up_and_ctrl_c_leaves_nothing() {
    let dir = Dir::new("topo-polyglot");
    let Some(p) = programs(&dir) else { return };
    // The shipped file, with its programs where this test keeps them, at a
    // faster pace.
    let shipped = std::fs::read_to_string(examples().join("polyglot.toml")).unwrap();
    let text = shipped
        .replace("\"./node.py\"", &quoted(&p.py))
        .replace("\"../target/node-c\"", &quoted(&p.c))
        .replace("\"../target/release/examples/ring_member\"", &quoted(&p.rust))
        .replace("300", "5");
    for program in [&p.py, &p.c, &p.rust] {
        assert!(
            text.contains(program.to_str().unwrap()),
            "polyglot.toml no longer runs {program:?}"
        );
    }
    let file = topology(&dir, "polyglot.toml", &text);
    // piper-node takes its pace from the command line, as the file says.
    let mut launcher = launch_file(&dir, &file, &["--interval", "5"]);
    assert!(
        wait_until(PROMPT, || launcher.lines().len() >= 40),
        "{}",
        launcher.stderr()
    );
    launcher.signal(Signal::SIGINT);
    assert_eq!(launcher.code(PROMPT), Some(130));
    // Every line whole and in ring order: each node received the name of
    // the node before it, and the next line is the next node's.
    let ring = ["ping", "py", "c", "rust"];
    let lines = launcher.lines();
    for (k, line) in lines.iter().enumerate() {
        let at = ring
            .iter()
            .position(|n| line.starts_with(&format!("{n} received: '")))
            .unwrap_or_else(|| panic!("{line:?}"));
        let before = ring[(at + ring.len() - 1) % ring.len()];
        assert_eq!(*line, format!("{} received: '{before}'", ring[at]));
        if let Some(next) = lines.get(k + 1) {
            assert!(next.starts_with(ring[(at + 1) % ring.len()]), "{line:?} then {next:?}");
        }
    }
    assert!(lines[0].starts_with("py received: 'ping'"), "the start: {:?}", lines[0]);
    // Every program reports counts: they add up to the lines seen; the
    // message in flight at the end was sent, not yet answered, or dropped
    // (its receiver's socket already gone in the teardown).
    let err = launcher.stderr();
    let (received, sent, dropped) = ring_counts(&err);
    assert_eq!(received, lines.len() as u64, "{err}");
    assert!(sent + dropped == received || sent + dropped + 1 == received, "{err}");
    assert!(dropped <= 1, "{err}");
    assert!(!err.contains("no counts"), "{err}");
    assert_all_gone(&dir);
}

/// A ring of `x` (running `exec`, or piper-node) and a piper-node `sink`,
/// both on held sockets, nobody starting it. `x` is killed with kill -9;
/// while it is dead, a datagram is sent to its socket; its successor
/// answers it.
fn a_held_member_comes_back_and_answers_what_was_sent_while_it_was_dead(test: &str, exec: Option<&Path>) {
    let dir = Dir::new(test);
    let Some(_) = programs(&dir) else { return };
    let exec = exec.map_or(String::new(), |e| {
        format!("exec = [{}]\n", quoted(&dir.aux(e.to_str().unwrap())))
    });
    let text = format!(
        "[defaults]\nenv = {{ PIPER_INTERVAL = \"20\" }}\n\
         [[node]]\nname = \"x\"\n{exec}restart = \"on-failure\"\nrestart-delay = 1.5\n\
         [[node]]\nname = \"sink\"\nexec = [\"piper-node\", \"--interval=20\"]\n"
    );
    let file = topology(&dir, "ring.toml", &text);
    let mut launcher = launch_file(&dir, &file, &[]);
    wait_ready(&launcher, 2);
    let first = wait_member(&launcher, "x", None);
    kill(first, Signal::SIGKILL).unwrap();
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains("restarting it (restart 1)")),
        "{}",
        launcher.stderr()
    );
    // Reaped, and its successor not started yet (1.5 s later): the
    // datagram waits in the socket the launcher holds.
    assert_eq!(member_pid(launcher.pid(), "x"), None, "x is dead");
    let sent = Instant::now();
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"hello", dir.join("piper-x"))
        .expect("the held socket takes it while x is dead");
    assert!(
        sent.elapsed() < Duration::from_millis(1000) && member_pid(launcher.pid(), "x").is_none(),
        "x came back too soon for this test to prove anything"
    );
    let second = wait_member(&launcher, "x", Some(first));
    assert_ne!(second, first);
    assert!(
        wait_until(PROMPT, || launcher.lines().contains(&"x received: 'hello'".to_string())),
        "{:?}\n{}",
        launcher.lines(),
        launcher.stderr()
    );
    // And it answers its next, as before.
    assert!(wait_until(PROMPT, || launcher
        .lines()
        .contains(&"sink received: 'x'".to_string())));
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_all_gone(&dir);
}

#[test]
fn a_held_piper_node_killed_comes_back_and_answers_what_waited() {
    a_held_member_comes_back_and_answers_what_was_sent_while_it_was_dead("topo-held-node", None);
}

#[test]
fn a_held_python_node_killed_comes_back_and_answers_what_waited() {
    a_held_member_comes_back_and_answers_what_was_sent_while_it_was_dead("topo-held-py", Some(Path::new("node.py")));
}

#[test]
fn a_held_c_node_killed_comes_back_and_answers_what_waited() {
    a_held_member_comes_back_and_answers_what_was_sent_while_it_was_dead("topo-held-c", Some(Path::new("node-c")));
}

#[test]
fn a_held_rust_node_killed_comes_back_and_answers_what_waited() {
    a_held_member_comes_back_and_answers_what_was_sent_while_it_was_dead(
        "topo-held-rust",
        Some(Path::new("ring_member")),
    );
}

#[test]
fn the_seeds_own_node_killed_comes_back_with_the_weaker_promise_of_own() {
    let dir = Dir::new("topo-own-seed");
    let Some(p) = programs(&dir) else { return };
    // The seed binds /tmp/piper-NAME, whatever the launcher says: names of
    // this test's own in /tmp.
    let tag = format!("{}x{}", std::process::id(), dir.path().to_string_lossy().len());
    let (a, b, me) = (format!("sa{tag}"), format!("sb{tag}"), format!("st{tag}"));
    let tmp = |name: &str| PathBuf::from(format!("/tmp/piper-{name}"));
    let text = format!(
        "dir = \"/tmp\"\n[defaults]\nsocket = \"own\"\nrestart = \"on-failure\"\nrestart-delay = 1.5\n\
         [[node]]\nname = \"{a}\"\nexec = [{seed}, \"{a}\"]\n\
         [[node]]\nname = \"{b}\"\nexec = [{seed}, \"{b}\"]\n",
        seed = quoted(&p.seed)
    );
    let file = topology(&dir, "seed.toml", &text);
    let _cleanup = piper_tests::RemoveOnDrop(vec![tmp(&a), tmp(&b), tmp(&me)]);
    let mut launcher = Proc::spawn(&dir, "launch", {
        let mut cmd = Command::new(bin("piper-launch"));
        cmd.args(["--file", file.to_str().unwrap()]);
        cmd
    });
    wait_ready(&launcher, 2);
    let me_socket = UnixDatagram::bind(tmp(&me)).unwrap();
    me_socket.set_read_timeout(Some(PROMPT)).unwrap();
    let mut buf = [0u8; 64];
    // The seed answers the node its payload names: us.
    me_socket.send_to(me.as_bytes(), tmp(&a)).unwrap();
    let n = me_socket.recv(&mut buf).expect("a answers");
    assert_eq!(&buf[..n], a.as_bytes());
    let first = wait_member(&launcher, &a, None);
    kill(first, Signal::SIGKILL).unwrap();
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains("restarting it (restart 1)")),
        "{}",
        launcher.stderr()
    );
    // The weaker promise: nobody holds its socket, so a datagram sent now
    // is refused to its sender, not kept for the successor.
    let refused = me_socket
        .send_to(me.as_bytes(), tmp(&a))
        .expect_err("nobody reads a's socket");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    // The successor binds again (the launcher removed what the dead one
    // left) and answers what is sent from then on.
    let second = wait_member(&launcher, &a, Some(first));
    assert!(wait_until(PROMPT, || me_socket.send_to(me.as_bytes(), tmp(&a)).is_ok()));
    let n = me_socket.recv(&mut buf).expect("the successor answers");
    assert_eq!(&buf[..n], a.as_bytes());
    assert!(running(second));
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    assert!(
        err.contains("piper-launch: ring of 2: no counts; "),
        "the seed reports no counts, and is not counted as zero: {err}"
    );
    assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new());
    assert!(
        !tmp(&a).exists() && !tmp(&b).exists(),
        "the seed's socket files are removed"
    );
}

#[test]
fn a_program_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = Dir::new("topo-stubborn");
    // A shell that ignores SIGTERM, and a child of its that inherits that:
    // the whole group goes after the grace.
    let script = "trap '' TERM; sleep 1000 & wait; : \"$0\"";
    let text = format!(
        "[[node]]\nname = \"stubborn\"\nready = \"exec\"\nexec = [\"sh\", \"-c\", {script:?}, {root}]\n\
         [[node]]\nname = \"sink\"\n",
        root = quoted(dir.path())
    );
    let file = topology(&dir, "ring.toml", &text);
    let mut launcher = launch_file(&dir, &file, &["--grace", "0.5"]);
    wait_ready(&launcher, 2);
    let stubborn = wait_member(&launcher, "stubborn", None);
    // The shell's child, the sleep, exists only once the trap is set: the
    // SIGTERM must come after that, or the shell dies of it.
    let children = format!("/proc/{stubborn}/task/{stubborn}/children");
    let mut sleep = None;
    assert!(
        wait_until(PROMPT, || {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            sleep = text.split_whitespace().next().and_then(|p| p.parse().ok());
            sleep.is_some()
        }),
        "sh never started its sleep"
    );
    let sleep = Pid::from_raw(sleep.unwrap());
    let asked = Instant::now();
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert!(asked.elapsed() >= Duration::from_millis(500), "the grace was given");
    let err = launcher.stderr();
    assert!(
        err.contains("node 'stubborn' ignored SIGTERM; sending SIGKILL"),
        "{err}"
    );
    assert!(!running(stubborn));
    assert!(wait_until(PROMPT, || !running(sleep)), "the shell's sleep outlived it");
    assert_all_gone(&dir);
}

#[test]
fn a_program_that_never_becomes_ready_fails_the_launch_naming_it_the_file_and_the_readiness() {
    let dir = Dir::new("topo-never-ready");
    let text = format!(
        "[[node]]\nname = \"lazy\"\nexec = [\"sh\", \"-c\", \"exec sleep 1000\", {root}]\n[[node]]\nname = \"sink\"\n",
        root = quoted(dir.path())
    );
    let file = topology(&dir, "ring.toml", &text);
    let mut launcher = launch_file(&dir, &file, &["--ready-timeout", "0.5"]);
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    let want = format!(
        "piper-launch: error: node 'lazy' not ready after --ready-timeout 0.5s ({}: ready = \"notify\" waited for READY=1 on $NOTIFY_SOCKET)",
        file.display()
    );
    assert!(err.contains(&want), "{err}");
    assert_all_gone(&dir);
}

#[test]
fn a_program_that_dies_before_it_is_ready_says_where_its_stderr_went() {
    let dir = Dir::new("topo-crash");
    let text = format!(
        "[[node]]\nname = \"crash\"\nexec = [\"sh\", \"-c\", \"echo boom >&2; exit 1\", {root}]\n[[node]]\nname = \"sink\"\n",
        root = quoted(dir.path())
    );
    let file = topology(&dir, "ring.toml", &text);
    let mut launcher = launch_file(&dir, &file, &[]);
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    assert!(
        err.contains(
            "exited with status 1 before the ring was ready (its stderr is not shown: --log-dir DIR keeps every node's)"
        ),
        "{err}"
    );
    assert!(!err.contains("boom"), "{err}");
    // With --log-dir, its stderr is in its log, and the error says no more.
    let logs = dir.aux("logs");
    let mut launcher = launch_file(&dir, &file, &["--log-dir", logs.to_str().unwrap()]);
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    assert!(
        err.contains("exited with status 1 before the ring was ready\n"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(logs.join("crash.log")).unwrap(), "boom\n");
    assert_all_gone(&dir);
}

#[test]
fn a_program_that_exits_1_at_once_is_given_up_after_the_burst() {
    let dir = Dir::new("topo-burst");
    // It fails as soon as it has started, every time; ready once exec'd.
    let text = format!(
        "[[node]]\nname = \"flaky\"\nready = \"exec\"\nrestart = \"on-failure\"\nrestart-burst = 2\nrestart-delay = 0.05\n\
         exec = [\"sh\", \"-c\", \"sleep 0.3; exit 1\", {root}]\n[[node]]\nname = \"sink\"\n",
        root = quoted(dir.path())
    );
    let file = topology(&dir, "ring.toml", &text);
    let mut launcher = launch_file(&dir, &file, &["--json"]);
    let given_up = "node 'flaky' (pid ";
    assert!(
        wait_until(PROMPT, || launcher
            .stderr()
            .contains("and was restarted 2 times in 10s: giving it up")),
        "{}",
        launcher.stderr()
    );
    let err = launcher.stderr();
    assert_eq!(err.matches("restarting it").count(), 2, "{err}");
    assert!(err.contains(given_up), "{err}");
    // Given up, not a busy loop: the run goes on until told to stop.
    assert!(running(launcher.pid()));
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    let summary = launcher.stderr().lines().last().unwrap().to_string();
    assert!(summary.contains("\"name\":\"flaky\",\"pid\":"), "{summary}");
    assert!(
        summary.contains("\"exit\":1,\"signal\":null,\"restarts\":2,\"received\":null"),
        "{summary}"
    );
    assert_all_gone(&dir);
}

#[test]
fn every_kind_of_mistake_in_a_file_is_exit_2_with_file_line_col_and_nothing_started() {
    let dir = Dir::new("topo-bad");
    std::fs::create_dir_all(dir.aux("")).unwrap();
    let not_exec = dir.aux("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let node = |extra: &str| format!("[[node]]\nname = \"a\"\n{extra}[[node]]\nname = \"b\"\n");
    let cases = [
        (
            "dup",
            "[[node]]\nname = \"a\"\n[[node]]\nname = \"a\"\n".to_string(),
            "4:8: node 'a' is named twice (first at 2:8)",
        ),
        (
            "next",
            node("next = \"nobody\"\n"),
            "3:8: next = \"nobody\" names no node and no remote",
        ),
        (
            "missing",
            node("exec = [\"no-such-program-anywhere\"]\n"),
            "3:8: exec: 'no-such-program-anywhere' is not found on PATH",
        ),
        (
            "notexec",
            node(&format!("exec = [{}]\n", quoted(&not_exec))),
            "is not an executable file",
        ),
        (
            "ready",
            node("ready = \"bound\"\n"),
            "3:9: node 'a': ready = \"bound\" needs socket = \"own\"",
        ),
        (
            "unknown",
            node("restart_delay = 1\n"),
            "3:1: unknown field `restart_delay`",
        ),
        (
            "name",
            "[[node]]\nname = \"../etc\"\n[[node]]\nname = \"b\"\n".to_string(),
            "2:8: name '../etc': ",
        ),
    ];
    let sockets = dir.aux("sockets");
    for (label, text, want) in cases {
        let file = topology(&dir, &format!("{label}.toml"), &text);
        for check in [false, true] {
            let mut cmd = Command::new(bin("piper-launch"));
            cmd.arg("--dir").arg(&sockets).args(["--file", file.to_str().unwrap()]);
            if check {
                cmd.arg("--check");
            }
            let mut run = Proc::spawn(&dir, &format!("{label}-{check}"), cmd);
            assert_eq!(run.code(PROMPT), Some(2), "{label}: {}", run.stderr());
            let err = run.stderr();
            let lines: Vec<&str> = err.lines().collect();
            let prefix = format!("piper-launch: error: {}:", file.display());
            assert_eq!(lines.len(), 1, "{label}: one line: {err}");
            assert!(
                lines[0].starts_with(&prefix) && lines[0].contains(want),
                "{label}: {err}\nwant {want}"
            );
            assert_eq!(run.stdout(), "", "{label}: no plan printed");
        }
        assert!(!sockets.exists(), "{label}: the socket directory was made");
    }
    assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new());
}

#[test]
fn an_option_given_both_in_an_exec_and_on_the_command_line_is_exit_2_even_for_check() {
    let dir = Dir::new("topo-twice");
    let file = topology(
        &dir,
        "ring.toml",
        "[[node]]\nname = \"a\"\nexec = [\"piper-node\", \"--interval=300\"]\n[[node]]\nname = \"b\"\n",
    );
    let sockets = dir.aux("sockets");
    for check in [true, false] {
        let mut cmd = Command::new(bin("piper-launch"));
        cmd.arg("--dir")
            .arg(&sockets)
            .args(["--file", file.to_str().unwrap(), "--interval", "0"]);
        if check {
            cmd.arg("--check");
        }
        let mut run = Proc::spawn(&dir, &format!("twice-{check}"), cmd);
        assert_eq!(run.code(PROMPT), Some(2), "{}", run.stderr());
        assert_eq!(
            run.stderr(),
            format!(
                "piper-launch: error: {}:3:8: node 'a': exec gives piper-node --interval=300, and so does the \
                 command line's --interval: give it in one place\n",
                file.display()
            )
        );
        assert_eq!(run.stdout(), "");
    }
    assert!(!sockets.exists(), "nothing made");
    assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new());
}

#[test]
fn the_readmes_example_file_runs_as_written() {
    let dir = Dir::new("topo-lab");
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    let lab = examples().join("lab.toml");
    let mut launcher = launch_file(&dir, &lab, &[]);
    wait_ready(&launcher, 2);
    assert!(
        wait_until(PROMPT, || launcher.stdout().contains("py received: 'ping'")),
        "{}",
        launcher.stderr()
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0), "{}", launcher.stderr());
    assert_all_gone(&dir);
}

#[test]
fn a_file_without_start_says_that_nothing_starts_the_chain() {
    let dir = Dir::new("topo-no-start");
    let file = topology(&dir, "ring.toml", "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n");
    let mut launcher = launch_file(&dir, &file, &[]);
    wait_ready(&launcher, 2);
    let want = format!(
        "piper-launch: info: nothing here starts the chain (no start in {}, or --no-start): the ring waits for a \
         message to one of its nodes\n",
        file.display()
    );
    assert!(
        wait_until(PROMPT, || launcher.stderr().contains(&want)),
        "{}",
        launcher.stderr()
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0), "{}", launcher.stderr());
    assert_eq!(launcher.stdout(), "", "a silent ring");
    assert_all_gone(&dir);
}

#[test]
fn the_usage_asks_for_nodes_or_file_and_check_takes_either() {
    let dir = Dir::new("topo-usage");
    let run = |label: &str, args: &[&str]| {
        let mut cmd = Command::new(bin("piper-launch"));
        cmd.env_remove("PIPER_NODES").env_remove("PIPER_FILE").args(args);
        let mut run = Proc::spawn(&dir, label, cmd);
        let code = run.code(PROMPT);
        (code, run.stdout(), run.stderr())
    };
    for (label, args) in [("none", &[][..]), ("check", &["--check"][..])] {
        let (code, out, err) = run(label, args);
        assert_eq!(code, Some(2), "{label}: {err}");
        assert!(
            err.contains("required arguments were not provided:\n  <--nodes <LIST|N>|--file <FILE>>"),
            "{label}: {err}"
        );
        assert_eq!(out, "");
    }
    let (code, _, err) = run("both", &["--nodes", "a,b", "--file", "x.toml"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("'--nodes <LIST|N>' cannot be used with '--file <FILE>'"),
        "{err}"
    );
    let sockets = dir.aux("sockets");
    let (code, out, err) = run(
        "check-nodes",
        &["--check", "--nodes", "a,b", "--dir", sockets.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with(&format!("dir {}\nstart: 'a' sent to 'b'", sockets.display())),
        "{out}"
    );
    assert!(!sockets.exists(), "nothing made");
}

#[test]
fn a_dir_the_file_names_that_cannot_be_made_is_named_with_its_line_and_column() {
    let dir = Dir::new("topo-dir");
    // A directory under a plain file cannot be made, even by root.
    let file = topology(
        &dir,
        "ring.toml",
        "dir = \"plain/sockets\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n",
    );
    std::fs::write(dir.aux("plain"), "").unwrap();
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.args(["--file", file.to_str().unwrap()]);
    let mut run = Proc::spawn(&dir, "launch", cmd);
    let code = run.code(PROMPT);
    let err = run.stderr();
    assert!(matches!(code, Some(c) if c != 0 && c != 1), "{code:?}: {err}");
    let want = format!("piper-launch: error: {}:1:7: dir: ", file.display());
    assert!(err.starts_with(&want) && err.lines().count() == 1, "{err}");
    assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new());
}

#[test]
fn the_shipped_seed_file_checks_and_bound_readiness_needs_files() {
    let dir = Dir::new("topo-seed-check");
    let seed = examples().join("seed.toml");
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.args(["--file", seed.to_str().unwrap(), "--check"]);
    let mut run = Proc::spawn(&dir, "check", cmd);
    assert_eq!(run.code(PROMPT), Some(0), "{}", run.stderr());
    let out = run.stdout();
    assert!(
        out.starts_with("dir /tmp\nstart: 'ping' sent to 'pong' once all are ready\n"),
        "{out}"
    );
    for name in ["ping", "pong"] {
        assert!(out.contains(&format!("node {name}")), "{out}");
    }
    assert_eq!(
        out.matches("socket own, ready bound, restart on-failure").count(),
        1,
        "{out}"
    );
    assert!(out.contains("/tests/seed/piper.py ping\n"), "{out}");
    // The foreground's end ends the run, whatever its restart key says.
    assert!(
        out.contains("restart no (its end ends the run; --restart-foreground restarts it); runs"),
        "{out}"
    );
    // A bound socket at an abstract address could never be seen.
    let bound = topology(
        &dir,
        "bound.toml",
        "[[node]]\nname = \"a\"\nsocket = \"own\"\n[[node]]\nname = \"b\"\n",
    );
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.args(["--file", bound.to_str().unwrap(), "--check", "--abstract"]);
    let mut run = Proc::spawn(&dir, "abstract-bound", cmd);
    assert_eq!(run.code(PROMPT), Some(2));
    assert!(
        run.stderr().contains("--abstract: node 'a' is ready = \"bound\""),
        "{}",
        run.stderr()
    );
}

#[test]
fn abstract_addresses_are_refused_for_programs_that_are_not_told_of_them() {
    let dir = Dir::new("topo-abstract");
    let file = topology(
        &dir,
        "ring.toml",
        "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\nexec = [\"sh\", \"-c\", \"exec sleep 1000\"]\n",
    );
    let sockets = dir.aux("sockets");
    for check in [true, false] {
        let mut cmd = Command::new(bin("piper-launch"));
        cmd.arg("--dir")
            .arg(&sockets)
            .args(["--file", file.to_str().unwrap(), "--abstract"]);
        if check {
            cmd.arg("--check");
        }
        let mut run = Proc::spawn(&dir, &format!("abstract-{check}"), cmd);
        assert_eq!(run.code(PROMPT), Some(2), "{}", run.stderr());
        assert_eq!(
            run.stderr(),
            "piper-launch: error: --abstract: node 'b' runs a program other than piper-node, which is not told \
             that addresses are abstract (leave out --abstract)\n"
        );
        assert_eq!(run.stdout(), "");
    }
    assert!(!sockets.exists(), "nothing made");
    assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new());
}

#[test]
fn check_prints_the_plan_and_starts_and_makes_nothing() {
    let dir = Dir::new("topo-check");
    let sockets = dir.aux("sockets");
    let file = topology(
        &dir,
        "ring.toml",
        "start = \"a\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\nexec = [\"sh\", \"-c\", \"exit 0\"]\nready = \"exec\"\n",
    );
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.arg("--dir")
        .arg(&sockets)
        .args(["--file", file.to_str().unwrap(), "--check"]);
    let mut run = Proc::spawn(&dir, "check", cmd);
    assert_eq!(run.code(PROMPT), Some(0), "{}", run.stderr());
    let out = run.stdout();
    assert!(
        out.starts_with(&format!(
            "dir {}\nstart: 'a' sent to 'b' once all are ready\n",
            sockets.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("node a: next b, socket held, ready notify, restart no; runs "),
        "{out}"
    );
    assert!(
        out.contains(
            "node b (foreground): next a, socket held, ready exec, restart no (its end ends the run; \
             --restart-foreground restarts it); runs /"
        ),
        "{out}"
    );
    assert!(!sockets.exists(), "nothing made");
}

#[test]
fn a_childs_signal_dispositions_and_mask_are_the_defaults() {
    let dir = Dir::new("topo-signals");
    // A program that touches no signal, whose state the test reads from
    // /proc/PID/status: what the launcher gave it at exec.
    let text =
        "[[node]]\nname = \"probe\"\nready = \"exec\"\nexec = [\"sleep\", \"1000\"]\n[[node]]\nname = \"sink\"\n";
    let file = topology(&dir, "ring.toml", text);
    let mut cmd = launch_cmd(&dir, &["--file", file.to_str().unwrap()]);
    // Something for the launcher to undo: SIGHUP and SIGUSR1 ignored, as
    // nohup and some service managers leave them; the launcher itself
    // blocks the signals it reads from its signalfd.
    // SAFETY: signal() between fork and exec, on the child's own state.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            use nix::sys::signal::{signal, SigHandler};
            signal(Signal::SIGHUP, SigHandler::SigIgn).map(drop)?;
            signal(Signal::SIGUSR1, SigHandler::SigIgn).map(drop)?;
            Ok(())
        });
    }
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    wait_ready(&launcher, 2);
    let probe = wait_member(&launcher, "probe", None);
    let status = std::fs::read_to_string(format!("/proc/{probe}/status")).unwrap();
    let field = |key: &str| status.lines().find(|l| l.starts_with(key)).map(str::to_string);
    assert!(status.starts_with("Name:\tsleep\n"), "{status}");
    assert_eq!(
        field("SigBlk:").as_deref(),
        Some("SigBlk:\t0000000000000000"),
        "{status}"
    );
    assert_eq!(
        field("SigIgn:").as_deref(),
        Some("SigIgn:\t0000000000000000"),
        "{status}"
    );
    // The launcher's own, for contrast: the test would see it if the
    // child kept it.
    let own = std::fs::read_to_string(format!("/proc/{}/status", launcher.pid())).unwrap();
    assert!(!own.contains("SigBlk:\t0000000000000000"), "{own}");
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert!(!running(probe));
    assert_all_gone(&dir);
}

#[test]
fn every_program_is_told_its_name_next_and_dir_and_its_own_variables_win_for_it_alone() {
    let dir = Dir::new("topo-env");
    // Each prints what it was told, then waits to be stopped.
    let script = "echo \"$PIPER_NAME $PIPER_NEXT $PIPER_DIR $FOO $LISTEN_FDS\"; exec sleep 1000";
    let text = format!(
        "[[node]]\nname = \"a\"\nready = \"exec\"\nenv = {{ FOO = \"mine\" }}\nexec = [\"sh\", \"-c\", {script:?}]\n\
         [[node]]\nname = \"b\"\nready = \"exec\"\nexec = [\"sh\", \"-c\", {script:?}]\n\
         [[node]]\nname = \"c\"\nsocket = \"own\"\nready = \"exec\"\nexec = [\"sh\", \"-c\", {script:?}]\n"
    );
    let file = topology(&dir, "ring.toml", &text);
    let mut cmd = launch_cmd(&dir, &["--file", file.to_str().unwrap()]);
    cmd.env("FOO", "inherited")
        .env("PIPER_NAME", "stale")
        .env("PIPER_NEXT", "stale");
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert!(
        wait_until(PROMPT, || launcher.lines().len() == 3),
        "{:?}",
        launcher.lines()
    );
    let mut lines = launcher.lines();
    lines.sort();
    let d = dir.path().display();
    assert_eq!(
        lines,
        [
            format!("a b {d} mine 1"),
            format!("b c {d} inherited 1"),
            // Its own socket: no LISTEN_* variables.
            format!("c a {d} inherited "),
        ]
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn ctrl_z_stops_every_kind_of_node_and_fg_resumes_them_all() {
    let dir = Dir::new("topo-tstp");
    let Some(p) = programs(&dir) else { return };
    let text = polyglot_ring(&p);
    let file = topology(&dir, "ring.toml", &text);
    let mut launcher = launch_file(&dir, &file, &[]);
    wait_ready(&launcher, 4);
    let members: Vec<Pid> = ["ping", "py", "c", "rust"]
        .iter()
        .map(|n| wait_member(&launcher, n, None))
        .collect();
    let everyone: Vec<Pid> = members.iter().copied().chain([launcher.pid()]).collect();
    launcher.signal(Signal::SIGTSTP);
    assert!(
        wait_until(PROMPT, || everyone.iter().all(|&p| state(p) == 'T')),
        "not all stopped: {:?}",
        everyone.iter().map(|&p| state(p)).collect::<Vec<_>>()
    );
    let lines = launcher.lines().len();
    launcher.signal(Signal::SIGCONT);
    assert!(
        wait_until(PROMPT, || everyone.iter().all(|&p| state(p) != 'T')),
        "not all resumed"
    );
    assert!(
        wait_until(PROMPT, || launcher.lines().len() > lines + 8),
        "the chain goes on"
    );
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_all_gone(&dir);
}

#[test]
fn no_program_outlives_a_launcher_killed_with_sigkill() {
    let dir = Dir::new("topo-kill-launcher");
    let Some(p) = programs(&dir) else { return };
    let file = topology(&dir, "ring.toml", &polyglot_ring(&p));
    let mut launcher = launch_file(&dir, &file, &[]);
    wait_ready(&launcher, 4);
    let members: Vec<Pid> = ["ping", "py", "c", "rust"]
        .iter()
        .map(|n| wait_member(&launcher, n, None))
        .collect();
    assert!(wait_until(PROMPT, || launcher.lines().len() >= 8));
    launcher.signal(Signal::SIGKILL);
    assert!(launcher.wait(PROMPT).is_some());
    // PR_SET_PDEATHSIG: each gets SIGTERM as the launcher dies, and ends.
    assert!(
        wait_until(PROMPT, || members.iter().all(|&pid| !running(pid))),
        "left: {:?}",
        members.iter().filter(|&&pid| running(pid)).collect::<Vec<_>>()
    );
    assert_eq!(dir.wait_no_processes(PROMPT), Vec::<i32>::new());
}
