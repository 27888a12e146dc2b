//! Who may talk to a node, and the bad-input corpus.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use piper_tests::{bin, may_run, node_cmd, start_node, Dir, Needs, Proc, Ready, Summary, PROMPT};

const NOBODY: u32 = 65534;

fn counts(received: u64, sent: u64, dropped: u64, refused: u64) -> Summary {
    Summary {
        received,
        sent,
        dropped,
        refused,
    }
}

/// `piper-node NAME --kick PEER` run as uid nobody: one datagram from a
/// foreign user.
fn kick_as_nobody(dir: &Dir, name: &str, peer: &str, extra: &[&str]) -> Proc {
    let mut cmd = node_cmd(dir, name, &["--kick", peer]);
    cmd.args(extra).uid(NOBODY).gid(NOBODY);
    Proc::spawn(dir, &format!("kick-{name}"), cmd)
}

#[test]
fn a_foreign_uid_is_refused_by_credentials_unless_allowed() {
    if !may_run(Needs::Root("to send as another uid")) {
        return;
    }
    // Abstract addresses have no file permissions: the credential check is
    // all the access control there is.
    let dir = Dir::new("foreign");
    let mut ready = Ready::new();
    let mut strict = start_node(&dir, &mut ready, "strict", "strict", &["--abstract"]);
    let mut open = start_node(
        &dir,
        &mut ready,
        "open",
        "open",
        &["--abstract", "--allow-uid", "65534"],
    );
    for target in ["strict", "open"] {
        for _ in 0..3 {
            let mut kick = kick_as_nobody(&dir, "stranger", target, &["--abstract"]);
            assert_eq!(kick.code(PROMPT), Some(0));
        }
    }
    // A marker from ourselves (root, always allowed) comes after the
    // strangers' datagrams: once it is printed, they have all been judged.
    for target in ["strict", "open"] {
        let mut kick = Proc::spawn(
            &dir,
            "marker",
            node_cmd(&dir, "marker", &["--abstract", "--kick", target]),
        );
        assert_eq!(kick.code(PROMPT), Some(0));
    }
    let marked = |node: &Proc| node.lines().last().is_some_and(|l| l.ends_with("'marker'"));
    assert!(piper_tests::wait_until(PROMPT, || marked(&strict) && marked(&open)));
    for node in [&mut strict, &mut open] {
        node.signal(Signal::SIGTERM);
    }
    assert_eq!(strict.code(PROMPT), Some(0));
    assert_eq!(open.code(PROMPT), Some(0));
    assert_eq!(
        strict.lines(),
        ["strict received: 'marker'"],
        "nothing from a stranger is printed"
    );
    // Every reply is dropped: neither "stranger" nor "marker" is a node.
    assert_eq!(strict.summary(), counts(1, 0, 4, 3));
    assert!(strict.stderr().contains("refused a datagram from uid 65534 (pid "));
    let mut want = vec!["open received: 'stranger'"; 3];
    want.push("open received: 'marker'");
    assert_eq!(open.lines(), want);
    assert_eq!(open.summary(), counts(4, 0, 4, 0));
    assert_eq!(dir.entries(), Vec::<String>::new(), "abstract nodes make no files");
}

#[test]
fn socket_files_are_0600_so_a_foreign_uid_cannot_even_send() {
    if !may_run(Needs::Root("to send as another uid")) {
        return;
    }
    let dir = Dir::new("mode");
    // Let nobody reach the directory, so only the socket's own mode stops it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut ready = Ready::new();
    let mut node = start_node(&dir, &mut ready, "n", "n", &[]);
    let mode = std::fs::metadata(dir.join("piper-n")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut kick = kick_as_nobody(&dir, "stranger", "n", &[]);
    assert_eq!(kick.code(PROMPT), Some(1));
    assert!(kick.stderr().contains("Permission denied"), "{}", kick.stderr());
    node.signal(Signal::SIGTERM);
    assert_eq!(node.code(PROMPT), Some(0));
}

#[test]
fn a_socket_file_opened_to_others_while_the_node_runs_brings_credentials_back() {
    if !may_run(Needs::Root("to send as another uid")) {
        return;
    }
    // A socket file only its owner may write needs no credentials: only
    // the owner and root can send to it. Opened to everyone while the node
    // runs, it needs them again, and a stranger is refused as anywhere.
    let dir = Dir::new("reopened");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut ready = Ready::new();
    let mut cmd = node_cmd(&dir, "n", &[]);
    cmd.env("RUST_LOG", "warn,piper_core=debug");
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut node = Proc::spawn(&dir, "n", cmd);
    assert!(ready.wait(node.pid(), "READY=1", PROMPT));
    assert!(
        node.stderr()
            .contains("only uid 0 and root may write its socket file: no credentials needed"),
        "{}",
        node.stderr()
    );
    // Ours, before: taken without credentials.
    let mut kick = Proc::spawn(&dir, "before", node_cmd(&dir, "before", &["--kick", "n"]));
    assert_eq!(kick.code(PROMPT), Some(0));
    std::fs::set_permissions(dir.join("piper-n"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let noticed = "its socket file now admits others: checking every sender's credentials";
    assert!(
        piper_tests::wait_until(PROMPT, || node.stderr().contains(noticed)),
        "{}",
        node.stderr()
    );
    let mut kick = kick_as_nobody(&dir, "stranger", "n", &[]);
    assert_eq!(kick.code(PROMPT), Some(0), "the file lets nobody send now");
    let mut kick = Proc::spawn(&dir, "after", node_cmd(&dir, "after", &["--kick", "n"]));
    assert_eq!(kick.code(PROMPT), Some(0));
    let marked = |node: &Proc| node.lines().last().is_some_and(|l| l.ends_with("'after'"));
    assert!(piper_tests::wait_until(PROMPT, || marked(&node)), "{:?}", node.lines());
    node.signal(Signal::SIGTERM);
    assert_eq!(node.code(PROMPT), Some(0));
    assert_eq!(node.lines(), ["n received: 'before'", "n received: 'after'"]);
    // Each reply dropped (neither kicker is a node), and the stranger refused.
    assert_eq!(node.summary(), counts(2, 0, 3, 1));
    assert!(
        node.stderr().contains("refused a datagram from uid 65534 (pid "),
        "{}",
        node.stderr()
    );
}

#[test]
fn unsafe_socket_directories_are_refused() {
    let dir = Dir::new("dirs");
    let mut ready = Ready::new();
    let writable = dir.aux("writable");
    std::fs::create_dir(&writable).unwrap();
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["n", "--dir"]).arg(&writable);
    let mut node = Proc::spawn(&dir, "n", cmd);
    assert_eq!(node.code(PROMPT), Some(4));
    let err = node.stderr();
    assert!(
        err.starts_with("piper-node[n]: error: refusing socket directory")
            && err.contains("is writable by group or others (mode 0777)"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&writable).unwrap().count(), 0);
    if may_run(Needs::Root("to give a directory to other uids")) {
        // Another user's directory: refused to an ordinary user, but not to
        // root, who can do anything there anyway (systemd's RuntimeDirectory=
        // with User= makes /run/piper the service user's).
        std::fs::set_permissions(dir.aux(""), std::fs::Permissions::from_mode(0o711)).unwrap();
        let foreign = dir.aux("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(4242), Some(4242)).unwrap();
        let mut cmd = Command::new(bin("piper-node"));
        cmd.args(["n", "--dir"]).arg(&foreign).uid(NOBODY).gid(NOBODY);
        let mut node = Proc::spawn(&dir, "foreign", cmd);
        assert_eq!(node.code(PROMPT), Some(4));
        assert!(
            node.stderr()
                .contains("it is owned by uid 4242, not by uid 65534 or root"),
            "{}",
            node.stderr()
        );
        let mut cmd = Command::new(bin("piper-node"));
        cmd.args(["n", "--dir"])
            .arg(&foreign)
            .env("NOTIFY_SOCKET", ready.address());
        let mut node = Proc::spawn(&dir, "root", cmd);
        assert!(ready.wait(node.pid(), "READY=1", PROMPT), "root trusts any owner");
        node.signal(Signal::SIGTERM);
        assert_eq!(node.code(PROMPT), Some(0));
    }
    // A missing directory is created for a node, mode 0700, parents too.
    let fresh = dir.aux("fresh/nested");
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["n", "--dir"])
        .arg(&fresh)
        .env("NOTIFY_SOCKET", ready.address());
    let mut node = Proc::spawn(&dir, "fresh", cmd);
    assert!(ready.wait(node.pid(), "READY=1", PROMPT));
    for made in [&fresh, &dir.aux("fresh")] {
        assert_eq!(std::fs::metadata(made).unwrap().permissions().mode() & 0o7777, 0o700);
    }
    node.signal(Signal::SIGTERM);
    assert_eq!(node.code(PROMPT), Some(0));
}

#[test]
fn in_a_sticky_directory_another_users_socket_is_never_reclaimed() {
    if !may_run(Needs::Root("to give a socket file to another uid")) {
        return;
    }
    let dir = Dir::new("sticky");
    let sticky = dir.aux("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // A stale socket owned by somebody else, like a dead seed node of theirs in /tmp.
    let stale = sticky.join("piper-squat");
    drop(UnixDatagram::bind(&stale).unwrap());
    std::os::unix::fs::chown(&stale, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["squat", "--dir"]).arg(&sticky);
    let mut node = Proc::spawn(&dir, "n", cmd);
    assert_eq!(node.code(PROMPT), Some(3));
    assert!(node.stderr().contains("name in use"), "{}", node.stderr());
    assert!(stale.exists(), "another user's socket must stay");
    // Our own stale socket there is reclaimed as usual.
    std::os::unix::fs::chown(&stale, Some(0), Some(0)).unwrap();
    let mut ready = Ready::new();
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["squat", "--dir"])
        .arg(&sticky)
        .env("NOTIFY_SOCKET", ready.address());
    let mut node = Proc::spawn(&dir, "n2", cmd);
    assert!(ready.wait(node.pid(), "READY=1", PROMPT));
    node.signal(Signal::SIGTERM);
    assert_eq!(node.code(PROMPT), Some(0));
    assert!(!stale.exists());
}

#[test]
fn abstract_names_are_exclusive_and_leave_no_files() {
    let dir = Dir::new("abstract");
    let mut ready = Ready::new();
    let mut first = start_node(&dir, &mut ready, "a1", "a", &["--abstract"]);
    let mut second = Proc::spawn(&dir, "a2", node_cmd(&dir, "a", &["--abstract"]));
    assert_eq!(second.code(PROMPT), Some(3));
    assert!(
        second.stderr().contains(&format!(
            "name in use: node 'a' is already running as pid {} (@{}/piper-a)",
            first.pid(),
            dir.path().display()
        )),
        "{}",
        second.stderr()
    );
    let mut ping = Proc::spawn(
        &dir,
        "ping",
        node_cmd(&dir, "ping", &["--abstract", "--send", "a", "--count", "25"]),
    );
    assert_eq!(ping.code(PROMPT), Some(0));
    assert_eq!(ping.lines().len(), 25);
    first.signal(Signal::SIGKILL);
    assert_eq!(first.code(PROMPT), Some(137));
    // kill -9 leaves nothing to reclaim: the name is free at once.
    let mut again = start_node(&dir, &mut ready, "a3", "a", &["--abstract"]);
    again.signal(Signal::SIGINT);
    assert_eq!(again.code(PROMPT), Some(130));
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn the_launcher_runs_an_abstract_ring() {
    let dir = Dir::new("abstract-ring");
    let cmd = piper_tests::launch_cmd(
        &dir,
        &["--abstract", "--nodes", "5", "--count", "40", "--output", "foreground"],
    );
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_eq!(launcher.lines(), vec!["node5 received: 'node4'"; 40]);
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[test]
fn bad_payload_corpus_gets_logged_drops_and_no_reply() {
    let dir = Dir::new("corpus");
    let other = Dir::new("corpus-other");
    let mut ready = Ready::new();
    let mut pong = start_node(&dir, &mut ready, "pong", "pong", &[]);
    // A node of the same name lives in another directory: a payload naming
    // it must be answered in pong's own directory or not at all.
    let victim = UnixDatagram::bind(other.join("piper-victim")).unwrap();
    victim.set_nonblocking(true).unwrap();
    let escape_to_other = format!(
        "../{}/piper-victim",
        other.path().file_name().unwrap().to_str().unwrap()
    );
    let big = vec![b'a'; 64 * 1024];
    let mut corpus: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        big.clone(),
        b"a\0b".to_vec(),
        b"\0".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"\xc3\x28".to_vec(),
        b"../x".to_vec(),
        b"..".to_vec(),
        b".".to_vec(),
        b"/etc/passwd".to_vec(),
        escape_to_other.clone().into_bytes(),
        other.join("piper-victim").to_string_lossy().into_owned().into_bytes(),
        b"victim".to_vec(),
        b"a\nb".to_vec(),
        b"name with spaces".to_vec(),
        "ünïcödé".as_bytes().to_vec(),
        vec![b'x'; 101],
    ];
    let sender = UnixDatagram::unbound().unwrap();
    sender.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for payload in &corpus {
        sender.send_to(payload, dir.join("piper-pong")).unwrap();
    }
    // Larger than any datagram the kernel takes from a default sender.
    let too_big = sender.send_to(&vec![b'z'; 300_000], dir.join("piper-pong"));
    assert_eq!(too_big.unwrap_err().raw_os_error(), Some(nix::libc::EMSGSIZE));
    corpus.push(b"done".to_vec());
    sender.send_to(b"done", dir.join("piper-pong")).unwrap();
    assert!(piper_tests::wait_until(PROMPT, || pong.lines().len() == corpus.len()));
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    assert!(
        victim.recv(&mut [0u8; 16]).is_err(),
        "nothing reached the other directory"
    );
    let lines = pong.lines();
    assert_eq!(lines[0], "pong received: ''");
    assert_eq!(lines[2], "pong received: 'a\\x00b'");
    assert_eq!(lines[4], "pong received: '\\xff\\xfe\\xfd'");
    assert_eq!(lines[13], "pong received: 'a\\nb'");
    assert_eq!(lines[15], "pong received: 'ünïcödé'");
    // "victim" and "done" are valid names with no node behind them here.
    let n = corpus.len() as u64;
    assert_eq!(pong.summary(), counts(n, 0, n, 0));
    let err = pong.stderr();
    // Five warnings a second at most, then a count of the rest.
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("payload is not a node to answer"))
            .count(),
        5,
        "{err}"
    );
    assert!(err.contains("13 similar warnings suppressed"), "{err}");
    assert!(err.lines().all(|l| l.len() < 400), "warnings stay one readable line");
    assert_eq!(dir.entries(), Vec::<String>::new());
    drop(victim);
}

/// `piper-node ARGS` run as uid nobody.
fn as_nobody(dir: &Dir, label: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(args).uid(NOBODY).gid(NOBODY).env_remove("NOTIFY_SOCKET");
    Proc::spawn(dir, label, cmd)
}

#[test]
fn list_in_a_shared_directory_shows_what_it_can_and_marks_the_rest() {
    if !may_run(Needs::Root("to run nodes as two users")) {
        return;
    }
    let dir = Dir::new("list-shared");
    let sticky = dir.aux("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(dir.aux(""), std::fs::Permissions::from_mode(0o711)).unwrap();
    let sticky_str = sticky.to_str().unwrap();
    let mut ready = Ready::new();
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["roots", "--dir", sticky_str])
        .env("NOTIFY_SOCKET", ready.address());
    let mut root_node = Proc::spawn(&dir, "roots", cmd);
    assert!(ready.wait(root_node.pid(), "READY=1", PROMPT));
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["mine", "--dir", sticky_str])
        .uid(NOBODY)
        .gid(NOBODY)
        .env("NOTIFY_SOCKET", ready.address());
    let mut own = Proc::spawn(&dir, "mine", cmd);
    assert!(ready.wait(own.pid(), "READY=1", PROMPT));
    let mut list = as_nobody(&dir, "list", &["--list", "--dir", sticky_str]);
    assert_eq!(list.code(PROMPT), Some(0), "{}", list.stderr());
    assert_eq!(list.stdout(), format!("mine\t{}\tlive\nroots\t-\tunknown\n", own.pid()));
    for node in [&mut root_node, &mut own] {
        node.signal(Signal::SIGTERM);
        assert_eq!(node.code(PROMPT), Some(0));
    }
}

#[test]
fn directory_and_lock_file_failures_have_their_documented_codes() {
    if !may_run(Needs::Root("to act as another uid and mount a tmpfs")) {
        return;
    }
    let dir = Dir::new("codes");
    std::fs::set_permissions(dir.aux(""), std::fs::Permissions::from_mode(0o711)).unwrap();
    // A directory nobody owns but may not write: unusable, 4.
    let readonly = dir.aux("readonly");
    std::fs::create_dir(&readonly).unwrap();
    std::os::unix::fs::chown(&readonly, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o500)).unwrap();
    let mut node = as_nobody(&dir, "readonly", &["n", "--dir", readonly.to_str().unwrap()]);
    assert_eq!(node.code(PROMPT), Some(4), "{}", node.stderr());
    assert!(node.stderr().contains("Permission denied"), "{}", node.stderr());
    // A lock file another user made in a sticky directory, where the
    // node's own stale socket is to be reclaimed: the name is taken, 3.
    let sticky = dir.aux("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    drop(std::os::unix::net::UnixDatagram::bind(sticky.join("piper-n")).unwrap());
    std::os::unix::fs::chown(sticky.join("piper-n"), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::write(sticky.join(".piper-n.lock"), b"").unwrap();
    let mut node = as_nobody(&dir, "squatted", &["n", "--dir", sticky.to_str().unwrap()]);
    assert_eq!(node.code(PROMPT), Some(3), "{}", node.stderr());
    assert!(
        node.stderr().contains("is taken by a lock file of uid 0"),
        "{}",
        node.stderr()
    );
    // A full filesystem: no room for the socket file: 4.
    let full = dir.aux("full");
    std::fs::create_dir(&full).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,nr_inodes=1,mode=0700", "tmpfs"])
        .arg(&full)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(full.clone());
    let mut cmd = Command::new(bin("piper-node"));
    cmd.args(["n", "--dir"]).arg(&full);
    let mut node = Proc::spawn(&dir, "full", cmd);
    assert_eq!(node.code(PROMPT), Some(4), "{}", node.stderr());
    assert!(node.stderr().contains("No space left on device"), "{}", node.stderr());
    assert_eq!(
        std::fs::read_dir(&full).unwrap().count(),
        0,
        "nothing left in the full directory"
    );
}

#[test]
fn a_node_run_by_another_user_takes_its_own_uid_and_root() {
    if !may_run(Needs::Root("to run a node as another uid")) {
        return;
    }
    let dir = Dir::new("own-uid");
    let mut ready = Ready::new();
    let mut cmd = node_cmd(&dir, "own", &["--abstract"]);
    cmd.uid(NOBODY).gid(NOBODY).env("NOTIFY_SOCKET", ready.address());
    let mut own = Proc::spawn(&dir, "own", cmd);
    assert!(ready.wait(own.pid(), "READY=1", PROMPT));
    // From its own uid, then from root: both taken.
    let mut kick = kick_as_nobody(&dir, "stranger", "own", &["--abstract"]);
    assert_eq!(kick.code(PROMPT), Some(0));
    let mut marker = Proc::spawn(
        &dir,
        "marker",
        node_cmd(&dir, "marker", &["--abstract", "--kick", "own"]),
    );
    assert_eq!(marker.code(PROMPT), Some(0));
    assert!(
        piper_tests::wait_until(PROMPT, || own.lines().len() == 2),
        "{:?}",
        own.lines()
    );
    own.signal(Signal::SIGTERM);
    assert_eq!(own.code(PROMPT), Some(0));
    assert_eq!(own.lines(), ["own received: 'stranger'", "own received: 'marker'"]);
    // Both replies are dropped: neither sender is a node any more.
    assert_eq!(own.summary(), counts(2, 0, 2, 0));
}

#[test]
fn log_files_are_as_private_as_sockets_and_never_followed() {
    use piper_tests::launch_cmd;
    let dir = Dir::new("logs-private");
    let launch = |label: &str, logs: &std::path::Path| {
        let args = ["--nodes", "a,b", "--count", "3", "--log-dir", logs.to_str().unwrap()];
        let mut launcher = Proc::spawn(&dir, label, launch_cmd(&dir, &args));
        let code = launcher.code(PROMPT);
        (code, launcher.stderr())
    };
    // A directory others may write to: refused as a socket directory is,
    // before anything starts.
    let open = dir.aux("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = launch("open", &open);
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(
        err,
        format!(
            "piper-launch: error: refusing --log-dir {}: it is writable by group or others (mode 0777); \
             use chmod go-w or a sticky directory\n",
            open.display()
        )
    );
    assert_eq!(dir.entries(), Vec::<String>::new());
    // One that cannot be a directory: the same exit code, as for sockets.
    let file = dir.aux("file");
    std::fs::write(&file, "").unwrap();
    let (code, err) = launch("file", &file);
    assert_eq!(code, Some(4), "{err}");
    let cannot = format!(
        "piper-launch: error: cannot open --log-dir {}: Not a directory",
        file.display()
    );
    assert!(err.starts_with(&cannot), "{err}");
    // A symbolic link where a log goes (a is in the background: it logs)
    // is never followed: the launch fails, and its target is untouched.
    let logs = dir.aux("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let precious = dir.aux("precious");
    std::fs::write(&precious, "keep").unwrap();
    std::os::unix::fs::symlink(&precious, logs.join("a.log")).unwrap();
    let (code, err) = launch("link", &logs);
    assert_eq!(code, Some(1), "{err}");
    let refused = format!(
        "refusing log file {}: it is a symbolic link",
        logs.join("a.log").display()
    );
    // The error, then the ring summary, last.
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[lines.len() - 2].ends_with(&refused), "{err}");
    assert!(lines[lines.len() - 1].starts_with("piper-launch: ring of 2: "), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    assert_eq!(dir.entries(), Vec::<String>::new());
    // A log of ours that others could read is made private before use.
    std::fs::remove_file(logs.join("a.log")).unwrap();
    std::fs::write(logs.join("a.log"), "old").unwrap();
    std::fs::set_permissions(logs.join("a.log"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = launch("ours", &logs);
    assert_eq!(code, Some(0), "{err}");
    let meta = std::fs::metadata(logs.join("a.log")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let log = std::fs::read_to_string(logs.join("a.log")).unwrap();
    assert!(!log.contains("old") && log.contains("a received: 'b'"), "{log}");
    // In a sticky directory others may write to (as /tmp), what another
    // user planted is refused, not written to: their own file, or a link.
    if may_run(Needs::Root("to plant files as another uid")) {
        let sticky = dir.aux("sticky");
        std::fs::create_dir_all(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let planted = sticky.join("a.log");
        std::fs::write(&planted, "theirs").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
        nix::unistd::chown(&planted, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
        // Refused as another user's, or by the kernel first, when it keeps
        // O_CREAT out of others' files in sticky directories
        // (fs.protected_regular, fs.protected_fifos).
        let refused = |err: &str, why: &str| {
            let line = err.lines().find(|l| l.contains(": error: ")).unwrap_or_default();
            line.contains(&planted.display().to_string())
                && (line.ends_with(why) || line.ends_with("Permission denied (os error 13)"))
        };
        let (code, err) = launch("planted", &sticky);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            refused(&err, &format!("it is owned by uid {NOBODY}, not by uid 0")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&planted).unwrap(), "theirs");
        std::fs::remove_file(&planted).unwrap();
        std::os::unix::fs::symlink(&precious, &planted).unwrap();
        std::os::unix::fs::lchown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
        let (code, err) = launch("planted-link", &sticky);
        assert_eq!(code, Some(1), "{err}");
        assert!(refused(&err, "it is a symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    }
    assert_eq!(dir.entries(), Vec::<String>::new());
}
