//! Test utilities: a temp dir per test, a guard per process, bounded waits,
//! and failures that explain themselves.
//!
//! Every spawned process is owned by a [`Proc`], whose drop kills and reaps
//! it (and the kernel kills it if the test's thread dies first), so a failing
//! test leaves nothing running. Every wait has a bound.
//!
//! A test's [`Dir`] registers itself with a panic hook: when any assertion
//! in the test fails, the hook prints what the socket directory held, and
//! each process's command line, stdout and stderr, as ripgrep's test
//! harness does. A test body is only its scenario and its assertions.

pub mod http;

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use piper_core::notify::Listener;

/// The directory holding piper-node and piper-launch (and piper-core's
/// examples under `examples/`), built once per run.
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
        cmd.args(["build", "--quiet", "--bins", "--examples"]).args([
            "-p",
            "piper-node",
            "-p",
            "piper-launch",
            "-p",
            "piper-core",
            "-p",
            "piper-bridge",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries and examples failed");
        dir
    })
}

/// Man pages and shell completions (`cargo xtask dist`), made once per run,
/// for the tests that install.
pub fn dist_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = bin_dir().join("dist-tests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["run", "--quiet", "--package", "xtask", "--", "dist"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("run cargo xtask dist");
        assert!(status.success(), "cargo xtask dist failed");
        dir
    })
}

/// The Debian package of the local tools, built by scripts/package.sh
/// from the test build.
pub fn build_package() -> PathBuf {
    let [local, _bridge] = build_packages();
    local
}

/// The Debian packages scripts/package.sh builds from the test build: the
/// local tools' (piper) and the bridge's (piper-bridge).
pub fn build_packages() -> [PathBuf; 2] {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/package.sh");
    let out = Command::new(script)
        .env("PIPER_BIN_DIR", bin_dir())
        .env("PIPER_DIST_DIR", dist_dir())
        .output()
        .expect("run scripts/package.sh");
    assert!(
        out.status.success(),
        "package.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = String::from_utf8(out.stdout).expect("paths");
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut debs = paths.lines().map(|p| root.join(p));
    let (Some(local), Some(bridge), None) = (debs.next(), debs.next(), debs.next()) else {
        panic!("package.sh printed {paths:?}, not two paths");
    };
    [local, bridge]
}

/// The path of binary `name`.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

thread_local! {
    /// The roots of this thread's live [`Dir`]s, for the panic hook.
    static DIRS: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Installs, once, the panic hook that prints the failing test's context.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            let roots = DIRS.try_with(|d| d.borrow().clone()).unwrap_or_default();
            for root in roots {
                eprintln!("{}", report(&root));
            }
        }));
    });
}

/// A unique temp directory for one test, removed on drop. It holds the
/// socket directory ([`Dir::path`], mode 0700, where nothing else goes), the
/// processes' logs, and scratch space ([`Dir::aux`]).
#[derive(Debug)]
pub struct Dir {
    root: PathBuf,
    sockets: PathBuf,
}

impl Dir {
    /// A new directory for `test`.
    pub fn new(test: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        install_panic_hook();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("pt-{}-{n}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let sockets = root.join("s");
        for dir in [&root, &sockets, &root.join("logs"), &root.join("aux")] {
            std::fs::create_dir(dir).expect("create test dir");
            // The root only traversable by others, so that a test may open
            // the socket directory to another uid.
            let mode = if dir == &root { 0o711 } else { 0o700 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        DIRS.with(|d| d.borrow_mut().push(root.clone()));
        Dir { root, sockets }
    }

    /// The socket directory.
    pub fn path(&self) -> &Path {
        &self.sockets
    }

    /// A path inside the socket directory.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.sockets.join(rel)
    }

    /// A scratch path outside the socket directory (created on demand by
    /// the test).
    pub fn aux(&self, rel: &str) -> PathBuf {
        self.root.join("aux").join(rel)
    }

    fn log(&self, file: &str) -> PathBuf {
        self.root.join("logs").join(file)
    }

    /// The sorted names of everything in the socket directory.
    pub fn entries(&self) -> Vec<String> {
        entries(&self.sockets)
    }

    /// The pids of live processes whose command line mentions this test's
    /// directory: the only processes a test may kill that are not its own
    /// children. Never pid 0 or 1, never ourselves.
    pub fn processes(&self) -> Vec<i32> {
        let needle = self.root.to_string_lossy().into_owned();
        let me = std::process::id() as i32;
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid > 1 && pid != me)
            .filter(|&pid| running(Pid::from_raw(pid)) && mentions(pid, &needle))
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
        DIRS.with(|d| d.borrow_mut().retain(|r| r != &self.root));
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether `/proc/PID/cmdline` contains `needle`.
fn mentions(pid: i32, needle: &str) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(needle)
}

/// What a failing test shows: the socket directory's listing, and each
/// process's command line, stdout and stderr (their last 20 lines).
fn report(root: &Path) -> String {
    let mut text = format!("--- socket dir {}/s: {:?}\n", root.display(), entries(&root.join("s")));
    let logs = root.join("logs");
    let mut labels: Vec<String> = entries(&logs)
        .into_iter()
        .filter_map(|f| f.strip_suffix(".cmd").map(str::to_string))
        .collect();
    labels.sort();
    for label in labels {
        let read = |ext: &str| std::fs::read_to_string(logs.join(format!("{label}.{ext}"))).unwrap_or_default();
        text.push_str(&format!("--- {label}: {}\n", read("cmd").trim_end()));
        for ext in ["out", "err"] {
            let body = read(ext);
            let lines: Vec<&str> = body.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            if !tail.is_empty() {
                text.push_str(&format!(
                    "  {ext} ({} lines):\n    {}\n",
                    lines.len(),
                    tail.join("\n    ")
                ));
            }
        }
    }
    text
}

/// The fields of `/proc/PID/stat` after the command name: the state letter
/// (field 3) first, utime and stime at 11 and 12; none if `pid` is gone.
pub fn stat_fields(pid: Pid) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_name.split_whitespace().map(str::to_string).collect()
}

/// What `pid` has run, user and system, in clock ticks (0 if it is gone).
pub fn cpu_ticks(pid: Pid) -> u64 {
    let fields = stat_fields(pid);
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// A process's state letter (R, S, T, Z, ...), or '?' if it is gone.
pub fn state(pid: Pid) -> char {
    stat_fields(pid).first().and_then(|s| s.chars().next()).unwrap_or('?')
}

/// Whether `pid` is a running process: not gone, and not a zombie waiting
/// for whoever adopted it to reap it.
pub fn running(pid: Pid) -> bool {
    !matches!(state(pid), 'Z' | 'X' | '?')
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
/// stderr are kept in the test's log directory under its label, where a
/// failing test's report finds them with its command line.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with its output captured under `label`.
    pub fn spawn(dir: &Dir, label: &str, cmd: Command) -> Proc {
        let out = dir.log(&format!("{label}.out"));
        let stdout = File::create(&out).expect("stdout file");
        Proc::spawn_with_stdout(dir, label, cmd, stdout.into())
    }

    /// Spawns `cmd` with stdout connected to `stdout` (for example a pipe
    /// the test never reads); stderr is captured under `label`.
    pub fn spawn_with_stdout(dir: &Dir, label: &str, cmd: Command, stdout: Stdio) -> Proc {
        Proc::spawn_with(dir, label, cmd, Stdio::null(), stdout)
    }

    /// [`Proc::spawn`] with stdin a pipe, written with [`Proc::input`].
    pub fn spawn_with_input(dir: &Dir, label: &str, cmd: Command) -> Proc {
        let out = File::create(dir.log(&format!("{label}.out"))).expect("stdout file");
        Proc::spawn_with(dir, label, cmd, Stdio::piped(), out.into())
    }

    fn spawn_with(dir: &Dir, label: &str, mut cmd: Command, stdin: Stdio, stdout: Stdio) -> Proc {
        let out = dir.log(&format!("{label}.out"));
        let err = dir.log(&format!("{label}.err"));
        let mut record = File::create(dir.log(&format!("{label}.cmd"))).expect("cmd file");
        let _ = writeln!(record, "{cmd:?}");
        cmd.stdin(stdin)
            .stdout(stdout)
            .stderr(File::create(&err).expect("stderr file"));
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            // Should the test's thread die without dropping us (an abort, a
            // killed test binary), the kernel kills the child.
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(Into::into));
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child,
            out,
            err,
            status: None,
        }
    }

    /// Writes `bytes` to its stdin (see [`Proc::spawn_with_input`]).
    pub fn input(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("spawned with input");
        stdin.write_all(bytes).expect("write stdin");
    }

    /// Its children's pids (for a wrapper such as `script` that execs or
    /// forks what it runs).
    pub fn children(&self) -> Vec<Pid> {
        let pid = self.pid();
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        text.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(Pid::from_raw)
            .collect()
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `sig`, unless it has been reaped (its pid may be reused since).
    pub fn signal(&mut self, sig: Signal) {
        assert!(self.wait(Duration::ZERO).is_none(), "signal {sig} to a reaped process");
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

    /// The counts on its exit summary line.
    pub fn summary(&self) -> Summary {
        summary(&self.stderr())
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

/// Files removed when dropped, pass or fail: for paths outside the test's
/// directory, such as the seed's `/tmp/piper-NAME`.
#[derive(Debug)]
pub struct RemoveOnDrop(pub Vec<PathBuf>);

impl RemoveOnDrop {
    /// Removes them now (and again on drop).
    pub fn remove(&self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A notify socket for `NOTIFY_SOCKET`, to learn when nodes are ready.
#[derive(Debug)]
pub struct Ready {
    listener: Listener,
    /// Every message so far: when it was read, the sender's pid, the text.
    seen: Vec<(Instant, i32, String)>,
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

    fn take(&mut self) {
        while let Ok(Some((pid, text))) = self.listener.try_recv() {
            self.seen.push((Instant::now(), pid, text));
        }
    }

    /// Waits up to `bound` for `pid` to send `state`; returns whether it did.
    pub fn wait(&mut self, pid: Pid, state: &str, bound: Duration) -> bool {
        let pid = pid.as_raw();
        wait_until(bound, || {
            self.take();
            self.seen
                .iter()
                .any(|(_, p, s)| *p == pid && s.lines().any(|l| l == state))
        })
    }

    /// Every message received so far from `pid`.
    pub fn messages(&mut self, pid: Pid) -> Vec<String> {
        self.take();
        self.seen
            .iter()
            .filter(|(_, p, _)| *p == pid.as_raw())
            .map(|(_, _, s)| s.clone())
            .collect()
    }

    /// Reads continuously for `span`, so that the 10-deep queue never
    /// overflows and every message gets the time it came.
    pub fn listen(&mut self, span: Duration) {
        let end = Instant::now() + span;
        while Instant::now() < end {
            self.take();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// [`Ready::listen`]s for `span`, then returns when each `state`
    /// message from `pid` came.
    pub fn times(&mut self, pid: Pid, state: &str, span: Duration) -> Vec<Instant> {
        self.listen(span);
        self.seen
            .iter()
            .filter(|(_, p, s)| *p == pid.as_raw() && s == state)
            .map(|(t, _, _)| *t)
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
        "node {name} never became ready"
    );
    proc
}

/// The pid of the live node `name` in `dir`, waiting up to `bound` for it
/// to appear. Only a pid that is safe to signal is returned: greater than
/// 1, not ours, and a piper node (or the test's fake node) of that name
/// whose command line names this test's directory, found by its command
/// line. (Not by who holds its socket: that walks every process's open
/// files, and a test polling it takes enough of a CPU for `--cpus auto` to
/// see the CPU its ring is packed on as busy, and move the ring.)
pub fn node_pid(dir: &Dir, name: &str, bound: Duration) -> Option<Pid> {
    let needle = dir.root.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let is_node = |pid: i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
        let program = args
            .first()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        let named = args.get(1) == Some(&name.as_bytes()) || args.last() == Some(&name.as_bytes());
        let ours = String::from_utf8_lossy(&cmdline).contains(&needle);
        let node = program.ends_with("piper-node") || args.iter().any(|a| a.ends_with(b"node.py"));
        pid > 1 && pid != me && node && named && ours && running(Pid::from_raw(pid))
    };
    let mut pid = None;
    wait_until(bound, || {
        pid = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&p| is_node(p));
        pid.is_some()
    });
    pid.map(Pid::from_raw)
}

/// The counts of a node's exit summary line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Messages accepted and printed.
    pub received: u64,
    /// Messages sent.
    pub sent: u64,
    /// Datagrams not answered.
    pub dropped: u64,
    /// Of those, refused because of the sender's uid.
    pub refused: u64,
}

/// The counts on the first node summary in `stderr`: a line
/// (`piper-node[x]: received 3, sent 3, dropped 0 (refused 0), ...`) or,
/// under `--json`, an object (`{"node":"x","received":3,...}`).
pub fn summary(stderr: &str) -> Summary {
    let line = stderr
        .lines()
        .find(|l| l.contains(": received ") || l.starts_with("{\"node\":"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let mut numbers = line
        .split([' ', ',', ':'])
        .filter_map(|w| w.trim_end_matches(')').parse::<u64>().ok());
    let mut next = || numbers.next().expect("four counts");
    Summary {
        received: next(),
        sent: next(),
        dropped: next(),
        refused: next(),
    }
}

/// Whether this test may run here. A test that needs root (to switch users,
/// chown, or raise a socket buffer past the system limit) or a tool the
/// machine lacks is skipped for an ordinary developer, with one line on
/// stderr that names it and says why; CI sets `PIPER_TESTS_REQUIRE_ALL=1`,
/// and there a skip is a failure.
pub fn may_run(needs: Needs) -> bool {
    let missing = match needs {
        Needs::Root(_) if !nix::unistd::geteuid().is_root() => Some("root".to_string()),
        Needs::Tool(tool) if !on_path(tool) => Some(format!("the command `{tool}`")),
        Needs::Cpus(n) if allowed_cpus().len() < n => {
            Some(format!("{n} CPUs (this process may use {:?})", allowed_cpus()))
        }
        Needs::IdleCpus(_) => busy_cpus().map(|busy| format!("idle CPUs (the machine is busy: {busy})")),
        _ => None,
    };
    let Some(missing) = missing else { return true };
    let why = match needs {
        Needs::Root(why) | Needs::IdleCpus(why) => why,
        Needs::Tool(_) | Needs::Cpus(_) => "",
    };
    let test = std::thread::current().name().unwrap_or("?").to_string();
    if std::env::var_os("PIPER_TESTS_REQUIRE_ALL").is_some() {
        panic!("{test} needs {missing} {why}, and PIPER_TESTS_REQUIRE_ALL is set");
    }
    // Straight to stderr: the test harness captures only the print macros.
    let line = format!("SKIPPED {test}: needs {missing} {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// What a test needs beyond an ordinary user's machine.
#[derive(Clone, Copy, Debug)]
pub enum Needs {
    /// Root, and what for.
    Root(&'static str),
    /// A command on `PATH`.
    Tool(&'static str),
    /// At least this many CPUs to run on.
    Cpus(usize),
    /// CPUs with nothing else to do (each at least 80% idle), and what
    /// for: placement decides by how busy each CPU is, and on a busy
    /// machine rightly decides otherwise. CI runs its tests alone, so
    /// there a busy machine is a failure, as any missing need is.
    IdleCpus(&'static str),
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// Each allowed CPU's busy share over a quarter of a second, if any was
/// busier than 20% ("CPU 0 63%, CPU 1 97%"), else None.
fn busy_cpus() -> Option<String> {
    // cpuN's (idle + iowait, total) jiffies from /proc/stat.
    let sample = || -> Vec<(usize, u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        stat.lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let cpu: usize = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
                let n: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
                Some((cpu, n.get(3)? + n.get(4)?, n.iter().take(8).sum()))
            })
            .collect()
    };
    let before = sample();
    std::thread::sleep(Duration::from_millis(250));
    let after = sample();
    let allowed = allowed_cpus();
    let shares: Vec<(usize, f64)> = before
        .iter()
        .zip(&after)
        .filter(|((cpu, ..), _)| allowed.contains(cpu))
        .map(|(&(cpu, idle0, total0), &(_, idle1, total1))| {
            let total = total1.saturating_sub(total0).max(1) as f64;
            (cpu, 1.0 - idle1.saturating_sub(idle0) as f64 / total)
        })
        .collect();
    shares.iter().any(|&(_, busy)| busy > 0.2).then(|| {
        let each: Vec<String> = shares
            .iter()
            .map(|(c, b)| format!("CPU {c} {:.0}%", b * 100.0))
            .collect();
        each.join(", ")
    })
}

fn on_path(tool: &str) -> bool {
    tool_path(tool).is_some()
}

/// Where command `tool` is: on `PATH`, or in the system's sbin directories,
/// which an ordinary user's `PATH` often lacks (mosquitto lives there).
pub fn tool_path(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
}

/// Standard bound for a process that should exit promptly.
pub const PROMPT: Duration = Duration::from_secs(10);
