//! The units under a real, running systemd: the README's systemd section,
//! walked as written, for system units (as root) and for `--user` units (as
//! an ordinary user), on a machine whose PID 1 is not systemd.
//!
//! systemd is booted once for the whole walk, as PID 1 of private pid, mount,
//! uts, ipc, net and cgroup namespaces, over an overlay of `/` whose changes
//! stay on a tmpfs (`tests/systemd/boot.sh`), and driven with `nsenter`. It
//! is always powered off, and its cgroup removed, even when a step fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use piper_core::Counts;
use piper_tests::{bin_dir, may_run, wait_until, Dir, Needs, Proc};

/// A booted systemd; powered off on drop.
struct Booted {
    /// The `unshare` process; systemd is its only child.
    unshare: Proc,
    /// systemd's pid, as this (the host's) pid namespace sees it.
    pid1: i32,
    cgroup: PathBuf,
}

/// The cgroup2 hierarchy: `/sys/fs/cgroup` on a unified host, its
/// `unified` subdirectory on a hybrid one.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (fields.get(dash + 1) == Some(&"cgroup2")).then(|| PathBuf::from(fields[4]))
    })
}

/// Why systemd cannot be booted here, if it cannot.
fn cannot_boot() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("root (to create namespaces and mount)".into());
    }
    for tool in ["unshare", "nsenter", "setpriv", "useradd"] {
        if !may_run(Needs::Tool(tool)) {
            return Some(format!("the command `{tool}`"));
        }
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        return Some("/lib/systemd/systemd (Debian package systemd)".into());
    }
    if cgroup2_root().is_none() {
        return Some("a cgroup2 hierarchy".into());
    }
    None
}

impl Booted {
    fn boot(dir: &Dir) -> Booted {
        let cgroup = cgroup2_root()
            .expect("a cgroup2 hierarchy")
            .join(format!("piper-test-{}", std::process::id()));
        std::fs::create_dir(&cgroup).expect("create a child cgroup");
        let scratch = dir.aux("boot");
        std::fs::create_dir(&scratch).unwrap();
        let boot = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/boot.sh");
        // The checkout and the binaries, seen inside even where a tmpfs
        // covers them (a clone under /tmp).
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut cmd = Command::new("sh");
        // Into the child cgroup first: the new cgroup namespace is rooted
        // where the process is when it unshares.
        cmd.arg("-c")
            .arg(
                "echo $$ > \"$1/cgroup.procs\" && exec unshare --pid --fork --kill-child \
                 --mount --uts --ipc --net --cgroup \"$2\" \"$3\" \"$4\" \"$5\"",
            )
            .args(["sh", cgroup.to_str().unwrap(), boot, scratch.to_str().unwrap()])
            .args([workspace, bin_dir()]);
        let unshare = Proc::spawn(dir, "systemd", cmd);
        let mut booted = Booted {
            pid1: 0,
            unshare,
            cgroup,
        };
        let children = format!("/proc/{0}/task/{0}/children", booted.unshare.pid());
        let found = wait_until(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            booted.pid1 = text.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", booted.pid1)).unwrap_or_default();
            comm.trim() == "systemd"
        });
        assert!(found, "systemd did not start");
        let started = Instant::now();
        let running = wait_until(Duration::from_secs(60), || {
            let state = booted.run(&["systemctl", "is-system-running"]);
            matches!(text(&state).trim(), "running" | "degraded")
        });
        assert!(running, "systemd never reached running");
        eprintln!("systemd running after {:?}", started.elapsed());
        booted
    }

    /// `nsenter` into every namespace of systemd, as root.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &self.pid1.to_string(),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "-C",
            "-r",
            "-w",
        ])
        .args(args)
        .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("nsenter")
    }

    /// Runs `args`, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out)
    }

    /// Runs `args` as `uid` in its login environment, which must succeed.
    fn ok_as(&self, uid: u32, home: &str, args: &[&str]) -> String {
        let uid = uid.to_string();
        let runtime = format!("XDG_RUNTIME_DIR=/run/user/{uid}");
        let bus = format!("DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus");
        let home = format!("HOME={home}");
        let mut full = vec!["setpriv", "--reuid", &uid, "--regid", &uid, "--init-groups", "env"];
        full.extend([home.as_str(), runtime.as_str(), bus.as_str()]);
        full.extend(args);
        self.ok(&full)
    }

    /// A unit property, as `systemctl show -P`.
    fn property(&self, unit: &str, property: &str) -> String {
        self.ok(&["systemctl", "show", "-P", property, unit]).trim().to_string()
    }

    /// The journal lines of `unit`, at `priority` or more important.
    fn journal(&self, unit: &str, priority: &str) -> String {
        self.ok(&["journalctl", "--no-pager", "-o", "cat", "-p", priority, "-u", unit])
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = self.run(&["systemctl", "poweroff"]);
        if self.unshare.code(Duration::from_secs(20)).is_none() {
            // Killing unshare kills PID 1 (--kill-child), and with it the
            // whole namespace.
            let _ = nix::sys::signal::kill(self.unshare.pid(), nix::sys::signal::Signal::SIGKILL);
            self.unshare.code(Duration::from_secs(10));
        }
        // systemd's own cgroups below ours, deepest first.
        let mut dirs = vec![self.cgroup.clone()];
        let mut i = 0;
        while i < dirs.len() {
            let children = std::fs::read_dir(&dirs[i]).into_iter().flatten().flatten();
            dirs.extend(children.filter(|e| e.path().is_dir()).map(|e| e.path()));
            i += 1;
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        if self.cgroup.exists() {
            eprintln!("warning: could not remove {}", self.cgroup.display());
        }
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node's counts, as its `STATUS=` text (systemd's StatusText) says
/// them: read the way piper-launch reads them.
fn counts(status: &str) -> Option<Counts> {
    status.trim().parse().ok()
}

/// Installs with scripts/install.sh into the namespace's root.
fn install(booted: &Booted, extra_env: &[(&str, &str)], args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install.sh");
    let mut cmd = Command::new(script);
    cmd.args(args)
        .env("PIPER_BIN_DIR", bin_dir())
        .env("PIPER_DIST_DIR", piper_tests::dist_dir())
        .env("DESTDIR", format!("/proc/{}/root", booted.pid1));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_systemd_walkthrough_works_under_a_real_systemd() {
    if let Some(missing) = cannot_boot() {
        if std::env::var_os("PIPER_TESTS_REQUIRE_ALL").is_some() {
            panic!("cannot boot systemd in namespaces here: needs {missing}");
        }
        // Straight to stderr: the harness captures only the print macros.
        let line = format!("SKIPPED the_readme_systemd_walkthrough_works_under_a_real_systemd: needs {missing}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    let dir = Dir::new("systemd-boot");
    let booted = Booted::boot(&dir);
    let wait = Duration::from_secs(15);

    // The README, step by step, as root.
    install(&booted, &[], &[]);
    booted.ok(&["systemd-sysusers"]);
    assert!(booted.ok(&["id", "piper"]).contains("(piper)"));
    booted.ok(&["systemctl", "daemon-reload"]);
    booted.ok(&["systemctl", "enable", "--now", "piper-node@ping.socket"]);
    booted.ok(&["systemctl", "start", "piper-node@pong.service"]);
    booted.ok(&["piper-node", "pong", "--dir", "/run/piper", "--kick", "ping"]);
    // The chatter at a human pace, in the journal.
    let chatted = wait_until(wait, || {
        booted
            .journal("piper-node@ping", "info")
            .contains("ping received: 'pong'")
            && booted
                .journal("piper-node@pong", "info")
                .contains("pong received: 'ping'")
    });
    assert!(chatted, "no chatter in the journal");
    // Live counts in `systemctl status`, growing.
    let status = |unit| booted.property(unit, "StatusText");
    let said = status("piper-node@pong.service");
    let first = counts(&said).unwrap_or_else(|| panic!("not counts: {said:?}"));
    let grown = |c: Option<Counts>| c.is_some_and(|c| c.received > first.received + 1);
    assert!(wait_until(wait, || grown(counts(&status("piper-node@pong.service")))));
    let shown = booted.ok(&["systemctl", "status", "--no-pager", "piper-node@pong.service"]);
    assert!(shown.contains("Status: \"received "), "{shown}");
    eprintln!("{shown}");
    // A warning reaches the journal at its priority: a kick from a name
    // nobody has, whose answer pong cannot deliver.
    booted.ok(&["piper-node", "ghost", "--dir", "/run/piper", "--kick", "pong"]);
    let warned = || {
        booted
            .journal("piper-node@pong", "warning")
            .contains("peer 'ghost' not found")
    };
    assert!(wait_until(wait, warned), "no warning at priority warning");
    assert!(
        !booted.journal("piper-node@pong", "warning").contains("received:"),
        "chatter is not a warning"
    );

    // A normal stop is a success, and leaves only systemd's own socket.
    booted.ok(&["systemctl", "stop", "piper-node@pong.service"]);
    assert_eq!(booted.property("piper-node@pong.service", "Result"), "success");
    assert_eq!(booted.property("piper-node@pong.service", "ExecMainStatus"), "0");
    assert_eq!(booted.ok(&["ls", "-A", "/run/piper"]), "piper-ping\n");

    // kill -9: restarted, and the name its stale socket held is reclaimed.
    booted.ok(&["systemctl", "start", "piper-node@pong.service"]);
    let before = booted.property("piper-node@pong.service", "MainPID");
    booted.ok(&["systemctl", "kill", "-s", "KILL", "piper-node@pong.service"]);
    let restarted = wait_until(wait, || {
        booted.property("piper-node@pong.service", "NRestarts") == "1"
            && booted.property("piper-node@pong.service", "ActiveState") == "active"
            && booted.property("piper-node@pong.service", "SubState") == "running"
    });
    assert!(restarted, "pong was not restarted");
    assert_ne!(booted.property("piper-node@pong.service", "MainPID"), before);
    let listed = booted.ok(&["piper-node", "--list", "--dir", "/run/piper"]);
    let pid = booted.property("piper-node@pong.service", "MainPID");
    assert!(listed.contains(&format!("pong\t{pid}\tlive")), "{listed}");
    booted.ok(&[
        "systemctl",
        "stop",
        "piper-node@pong.service",
        "piper-node@ping.socket",
        "piper-node@ping.service",
    ]);

    // The whole ring as one service: its status, and a successful stop.
    booted.ok(&["systemctl", "start", "piper-launch.service"]);
    let ring = wait_until(wait, || {
        status("piper-launch.service").starts_with("ring of 2: 2 alive, received ")
    });
    assert!(ring, "{}", status("piper-launch.service"));
    let shown = booted.ok(&["systemctl", "status", "--no-pager", "piper-launch.service"]);
    eprintln!("{shown}");
    booted.ok(&["systemctl", "stop", "piper-launch.service"]);
    assert_eq!(booted.property("piper-launch.service", "Result"), "success");
    assert_eq!(booted.property("piper-launch.service", "ExecMainStatus"), "0");

    // The same unit running a topology file, /etc/piper/piper.toml:
    // piper-node and the Python example in one ring, as the user piper.
    let root = format!("/proc/{}/root", booted.pid1);
    let lib = format!("{root}/usr/local/lib/piper-example");
    std::fs::create_dir_all(&lib).unwrap();
    let node_py = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/node.py");
    std::fs::copy(node_py, format!("{lib}/node.py")).unwrap();
    std::fs::set_permissions(
        format!("{lib}/node.py"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let topology = "start = \"ping\"\n\
                    [[node]]\nname = \"ping\"\nexec = [\"piper-node\", \"--interval=100\"]\n\
                    [[node]]\nname = \"py\"\nexec = [\"/usr/local/lib/piper-example/node.py\"]\n\
                    env = { PIPER_INTERVAL = \"100\" }\n";
    std::fs::write(format!("{root}/etc/piper/piper.toml"), topology).unwrap();
    let env_file = format!("{root}/etc/piper/launch.env");
    let shipped_env = std::fs::read_to_string(&env_file).unwrap();
    std::fs::write(&env_file, "PIPER_FILE=/etc/piper/piper.toml\n").unwrap();
    booted.ok(&["piper-launch", "--file", "/etc/piper/piper.toml", "--check"]);
    booted.ok(&["systemctl", "start", "piper-launch.service"]);
    let counted = |s: &str| {
        s.strip_prefix("ring of 2: 2 alive, ")
            .and_then(counts)
            .is_some_and(|c| c.received >= 4)
    };
    let ring = wait_until(wait, || counted(&status("piper-launch.service")));
    assert!(ring, "{}", status("piper-launch.service"));
    let journal = booted.journal("piper-launch", "info");
    assert!(journal.contains("py received: 'ping'"), "{journal}");
    assert!(journal.contains("ping received: 'py'"), "{journal}");
    booted.ok(&["systemctl", "stop", "piper-launch.service"]);
    assert_eq!(booted.property("piper-launch.service", "Result"), "success");
    assert_eq!(booted.property("piper-launch.service", "ExecMainStatus"), "0");
    let run = booted.ok(&["ls", "-A", "/run"]);
    assert!(
        !run.contains("piper-ring"),
        "the ring's directory and sockets are gone: {run}"
    );
    // As it was, for the package's steps below.
    std::fs::write(&env_file, shipped_env).unwrap();
    std::fs::remove_file(format!("{root}/etc/piper/piper.toml")).unwrap();

    for unit in ["piper-node@pong.service", "piper-launch.service"] {
        let out = booted.run(&["systemd-analyze", "security", "--no-pager", unit]);
        let score = text(&out).lines().last().unwrap_or_default().to_string();
        eprintln!("systemd-analyze security {unit}: {score}");
    }
    // No unit of ours failed. (The machine's own units may: the booted
    // system is this machine's, and a package installed here, such as
    // nvme-cli or openipmi, brings units that fail in namespaces.)
    let failed = booted.ok(&[
        "systemctl",
        "list-units",
        "--failed",
        "--plain",
        "--no-legend",
        "--no-pager",
    ]);
    let ours: Vec<&str> = failed.lines().filter(|l| l.trim_start().starts_with("piper")).collect();
    assert!(ours.is_empty(), "{failed}");
    if !failed.trim().is_empty() {
        eprintln!("failed units not of piper's, left alone:\n{failed}");
    }

    // The user units, as an ordinary user with a user manager of its own.
    booted.ok(&["useradd", "-m", "tester"]);
    let uid: u32 = booted.ok(&["id", "-u", "tester"]).trim().parse().unwrap();
    booted.ok(&["systemctl", "start", &format!("user@{uid}.service")]);
    let home = "/home/tester";
    let installer = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install.sh");
    let bins = format!("PIPER_BIN_DIR={}", bin_dir().display());
    let dist = format!("PIPER_DIST_DIR={}", piper_tests::dist_dir().display());
    booted.ok_as(uid, home, &["env", &bins, &dist, installer, "--user"]);
    let user = |args: &[&str]| {
        let mut full = vec!["systemctl", "--user"];
        full.extend(args);
        booted.ok_as(uid, home, &full)
    };
    user(&["daemon-reload"]);
    user(&["enable", "--now", "piper-node@ping.socket"]);
    user(&["start", "piper-node@pong.service"]);
    let node = format!("{home}/.local/bin/piper-node");
    let sockets = format!("/run/user/{uid}/piper");
    booted.ok_as(uid, home, &[&node, "pong", "--dir", &sockets, "--kick", "ping"]);
    let answered = wait_until(wait, || {
        let ping = user(&["show", "-P", "StatusText", "piper-node@ping.service"]);
        let pong = user(&["show", "-P", "StatusText", "piper-node@pong.service"]);
        let chatted = |text: &str| counts(text).is_some_and(|c| c.received >= 1);
        chatted(&ping) && chatted(&pong)
    });
    assert!(answered, "the user units did not chat");
    let shown = user(&["status", "--no-pager", "piper-node@ping.service"]);
    assert!(shown.contains("Active: active (running)"), "{shown}");
    let security = booted.ok_as(
        uid,
        home,
        &[
            "systemd-analyze",
            "--user",
            "security",
            "--no-pager",
            "piper-node@pong.service",
        ],
    );
    let score = security.lines().last().unwrap_or_default();
    eprintln!("systemd-analyze --user security piper-node@pong.service: {score}");
    user(&[
        "stop",
        "piper-node@pong.service",
        "piper-node@ping.socket",
        "piper-node@ping.service",
    ]);
    assert_eq!(
        user(&["show", "-P", "Result", "piper-node@pong.service"]).trim(),
        "success"
    );

    // The Debian package, on the same system: what install.sh put under
    // /usr/local goes first, and the user piper too, which the package
    // creates again.
    booted.ok(&[
        "sh",
        "-c",
        "rm -f /usr/local/bin/piper-* /usr/local/lib/systemd/system/piper-* /etc/sysusers.d/piper.conf \
         /etc/piper/bridge.env && userdel piper && systemctl daemon-reload",
    ]);
    let deb = piper_tests::build_package();
    std::fs::copy(&deb, format!("/proc/{}/root/tmp/piper.deb", booted.pid1)).unwrap();
    booted.ok(&["dpkg", "-i", "/tmp/piper.deb"]);
    assert!(
        booted.ok(&["id", "piper"]).contains("(piper)"),
        "the package made the user"
    );
    let man = booted.ok(&["man", "-P", "cat", "piper-node"]);
    assert!(man.contains("EXIT STATUS") && man.contains("--kick"), "{man}");
    booted.ok(&["systemctl", "enable", "--now", "piper-node@ping.socket"]);
    booted.ok(&["systemctl", "start", "piper-node@pong.service"]);
    assert_eq!(booted.ok(&["which", "piper-node"]).trim(), "/usr/bin/piper-node");
    booted.ok(&["piper-node", "pong", "--dir", "/run/piper", "--kick", "ping"]);
    let answered = wait_until(wait, || {
        counts(&status("piper-node@ping.service")).is_some_and(|c| c.received >= 1)
    });
    assert!(answered, "the packaged units did not chat");
    booted.ok(&["dpkg", "-r", "piper"]);
    let left = booted.ok(&["sh", "-c", "ls /etc/systemd/system/*.wants/ | grep piper || true"]);
    assert_eq!(left, "", "units left enabled");
    assert_eq!(booted.property("piper-node@pong.service", "ActiveState"), "inactive");
    let files = booted.ok(&[
        "sh",
        "-c",
        "ls /usr/bin/piper-* /usr/lib/systemd/system/piper-* /usr/share/man/man1/piper-* 2>/dev/null || true",
    ]);
    assert_eq!(files, "", "files left after dpkg -r");
    assert_eq!(
        booted.ok(&["ls", "/etc/piper"]),
        "launch.env\n",
        "only the conffile stays"
    );
    booted.ok(&["dpkg", "-P", "piper"]);
    assert!(!booted.run(&["test", "-e", "/etc/piper/launch.env"]).status.success());
}
