//! Test utilities: a temp dir per test, a guard per process, bounded waits.
//!
//! Every spawned process is owned by a [`Proc`], whose drop kills and reaps
//! it, so a failing test leaves nothing running. Every wait has a bound.
//! When an assertion fails, [`Dir::report`] says what the directory held and
//! what each process printed.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use piper_core::notify::Listener;

/// The directory holding piper-node and piper-launch, built once per run.
///
/// `CARGO_BIN_EXE_*` exists only for a binary's own package, so this finds
/// the workspace's target directory from the test executable's path and asks
/// cargo to build both binaries there.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PIPER_BIN_DIR") {
            return PathBuf::from(dir);
        }
        // target/<profile>/deps/<test> -> target/<profile>
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "piper-node", "-p", "piper-launch"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
        dir
    })
}

/// The path of binary `name`.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A unique, empty temp directory (mode 0700), removed on drop.
#[derive(Debug)]
pub struct Dir {
    path: PathBuf,
}

impl Dir {
    /// A new directory for `test`.
    pub fn new(test: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("pt-{}-{n}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create test dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Dir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The sorted names of what it holds, logs (`*.out`, `*.err`) excepted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.retain(|n| !n.ends_with(".out") && !n.ends_with(".err") && !n.starts_with("aux"));
        names.sort();
        names
    }

    /// What a failing assertion should show: the listing and every log.
    pub fn report(&self) -> String {
        let mut text = format!("dir {}: {:?}\n", self.path.display(), self.entries());
        let mut logs: Vec<_> = std::fs::read_dir(&self.path)
            .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        logs.sort();
        for log in logs {
            if log.extension().is_some_and(|e| e == "out" || e == "err") {
                let body = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = body
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                text.push_str(&format!("--- {}\n{tail}\n", log.display()));
            }
        }
        text
    }

    /// The pids of live processes whose command line mentions this directory.
    pub fn processes(&self) -> Vec<i32> {
        let needle = self.path.to_string_lossy().into_owned();
        let me = std::process::id() as i32;
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|&pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                running(Pid::from_raw(pid)) && String::from_utf8_lossy(&cmdline).contains(&needle)
            })
            .collect()
    }

    /// Waits up to `bound` for no process to mention this directory.
    pub fn wait_no_processes(&self, bound: Duration) -> Vec<i32> {
        let mut left = Vec::new();
        wait_until(bound, || {
            left = self.processes();
            left.is_empty()
        });
        left
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        for pid in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Whether `pid` is a running process: not gone, and not a zombie waiting
/// for whoever adopted it to reap it.
pub fn running(pid: Pid) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|s| s.trim_start().chars().next());
    state.is_some_and(|c| c != 'Z' && c != 'X')
}

/// Polls `cond` every 2 ms for up to `bound`; returns whether it held.
pub fn wait_until(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A spawned process that is killed and reaped when dropped. Its stdout and
/// stderr go to `DIR/LABEL.out` and `DIR/LABEL.err`.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with its output captured in `dir` under `label`.
    pub fn spawn(dir: &Dir, label: &str, mut cmd: Command) -> Proc {
        let out = dir.join(&format!("{label}.out"));
        let err = dir.join(&format!("{label}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child,
            out,
            err,
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("kill");
    }

    /// Waits up to `bound` for the exit; `None` if it is still running.
    pub fn wait(&mut self, bound: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            let child = &mut self.child;
            let mut status = None;
            wait_until(bound, || {
                status = child.try_wait().expect("try_wait");
                status.is_some()
            });
            self.status = status;
        }
        self.status
    }

    /// Waits up to `bound` and returns the exit code (128+signal if killed).
    pub fn code(&mut self, bound: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.wait(bound)
            .map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Stdout lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout().lines().map(str::to_string).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A notify socket for `NOTIFY_SOCKET`, to learn when nodes are ready.
#[derive(Debug)]
pub struct Ready {
    listener: Listener,
    seen: Vec<(i32, String)>,
}

impl Ready {
    /// Binds a fresh abstract notify socket.
    pub fn new() -> Ready {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("piper-test/{}/{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        Ready {
            listener: Listener::bind_abstract(&name).expect("bind notify socket"),
            seen: Vec::new(),
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn address(&self) -> &str {
        self.listener.address()
    }

    /// Waits up to `bound` for `pid` to send `state`; returns whether it did.
    pub fn wait(&mut self, pid: Pid, state: &str, bound: Duration) -> bool {
        let pid = pid.as_raw();
        wait_until(bound, || {
            while let Ok(Some(msg)) = self.listener.try_recv() {
                self.seen.push(msg);
            }
            self.seen
                .iter()
                .any(|(p, s)| *p == pid && s.lines().any(|l| l == state))
        })
    }

    /// Every message received so far from `pid`.
    pub fn messages(&mut self, pid: Pid) -> Vec<String> {
        while let Ok(Some(msg)) = self.listener.try_recv() {
            self.seen.push(msg);
        }
        self.seen
            .iter()
            .filter(|(p, _)| *p == pid.as_raw())
            .map(|(_, s)| s.clone())
            .collect()
    }
}

impl Default for Ready {
    fn default() -> Self {
        Ready::new()
    }
}

/// A `piper-node` command for `name` in `dir`, with `args`.
pub fn node_cmd(dir: &Dir, name: &str, args: &[&str]) -> Command {
    node_cmd_at(dir.path(), name, args)
}

/// A `piper-node` command for `name` with socket directory `sockets`.
pub fn node_cmd_at(sockets: &Path, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("piper-node"));
    cmd.arg(name)
        .arg("--dir")
        .arg(sockets)
        .args(args)
        .env_remove("NOTIFY_SOCKET");
    cmd
}

/// A `piper-launch` command with socket directory `dir` and `args`.
pub fn launch_cmd(dir: &Dir, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("piper-launch"));
    cmd.arg("--dir").arg(dir.path()).args(args);
    cmd
}

/// Starts a node and waits until it is ready (bound).
pub fn start_node(dir: &Dir, ready: &mut Ready, label: &str, name: &str, args: &[&str]) -> Proc {
    let mut cmd = node_cmd(dir, name, args);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let proc = Proc::spawn(dir, label, cmd);
    assert!(
        ready.wait(proc.pid(), "READY=1", Duration::from_secs(10)),
        "node {name} never became ready\n{}",
        dir.report()
    );
    proc
}

/// The pid of the live node `name` in `dir`, as the kernel's lock table
/// says, waiting up to `bound` for it to appear.
pub fn node_pid(dir: &Dir, name: &str, bound: Duration) -> Option<Pid> {
    let sockets = piper_core::SocketDir::open(dir.path()).expect("socket dir");
    let name = piper_core::Name::new(name).expect("a valid name");
    let mut pid = None;
    wait_until(bound, || {
        pid = piper_core::claim::owner_pid(&sockets, &name);
        pid.is_some()
    });
    pid.map(Pid::from_raw)
}

/// The counts on a node's summary line: received, sent, dropped, refused.
pub fn summary(stderr: &str) -> [u64; 4] {
    let line = stderr
        .lines()
        .find(|l| l.contains(": received "))
        .expect("a summary line");
    let mut numbers = line
        .split([' ', ','])
        .filter_map(|w| w.trim_end_matches(')').parse::<u64>().ok());
    [(); 4].map(|()| numbers.next().expect("four counts"))
}

/// Standard bound for a process that should exit promptly.
pub const PROMPT: Duration = Duration::from_secs(10);
