//! Finding `piper-node` and starting one process per member, whatever
//! program it runs: a vfork-style clone and exec, no shell, each child in
//! the members' process group and tied to the launcher's life by
//! `PR_SET_PDEATHSIG`.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use piper_core::env;

use crate::plan::{Plan, Socket};

/// Finds piper-node: `flag`, else next to this executable, else on PATH.
pub fn find_node_binary(flag: Option<&Path>) -> Result<PathBuf, String> {
    const HOW: &str = "build it with `cargo build --release` or pass --node-bin PATH";
    if let Some(path) = flag {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "--node-bin {} is not an executable file; {HOW}",
                path.display()
            ))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("piper-node")));
    if let Some(path) = beside.as_ref().filter(|p| is_executable(p)) {
        return Ok(path.clone());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("piper-node"))
        .find(|p| is_executable(p));
    on_path.ok_or_else(|| {
        let beside = beside.map_or("(unknown)".into(), |p| p.display().to_string());
        format!("piper-node not found: looked at {beside} and on PATH; {HOW}")
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What every child shares: the binary and the environment, prepared once
/// so that each spawn only builds its own argument list.
///
/// Made before the launcher binds its nodes' sockets, so that its own
/// descriptors (`/dev/null` and the three slots) are low in the file table:
/// a child copies only the table below them, not the two descriptors per
/// node the launcher holds (see [`Spawner::start`]).
#[derive(Debug)]
pub struct Spawner {
    /// What every child inherits from the launcher (less what is a
    /// manager's, or set per member).
    env: Vec<CString>,
    null: File,
    /// What becomes the node's fd 3, 1 and 2 is put here just before each
    /// start, and `/dev/null` again just after: the child finds them below
    /// `table_end`.
    slots: [OwnedFd; 3],
    /// One past the highest descriptor a child needs.
    table_end: RawFd,
    /// The child's stack until it execs (it shares the launcher's memory).
    stack: Stack,
    launcher: Pid,
    /// The process group the nodes share, once the first one made it.
    group: Option<Pid>,
}

/// What one node is given besides its command line.
#[derive(Debug, Clone, Copy)]
pub struct NodeIo<'a> {
    /// Where it reports (`$NOTIFY_SOCKET`).
    pub notify_socket: &'a str,
    /// Its socket, bound (and its name claimed) by the launcher, which the
    /// node adopts as fd 3, as under systemd's socket activation
    /// (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`); `None` for a member
    /// that binds its own.
    pub socket: Option<RawFd>,
    /// Where a node whose lines are shown writes them: a relay pipe, or
    /// (`None`) the launcher's own stdout.
    pub stdout: Option<RawFd>,
    /// Likewise for the foreground node's stderr.
    pub stderr: Option<RawFd>,
}

/// The slots are at or above this descriptor, clear of 0 to 3, which the
/// child fills from them.
const FIRST_SLOT: RawFd = 4;

/// The child's stack: it calls a dozen system call wrappers, no more.
const CHILD_STACK: usize = 64 * 1024;

impl Spawner {
    /// Prepares to start members: what they share.
    pub fn new() -> Result<Spawner, String> {
        // Our own manager's variables are ours: children report to us. What
        // every member is told of itself is the plan's (its own variables
        // replace inherited ones at each start).
        let skip: Vec<&str> = env::MANAGER
            .into_iter()
            .chain([env::LAUNCHER, env::DIR, env::NAME, env::NEXT])
            .collect();
        let mut vars: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| !skip.iter().any(|s| k == s))
            .filter_map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                CString::new(kv).ok()
            })
            .collect();
        // Who holds the nodes' sockets: should it die, the nodes remove them.
        vars.push(CString::new(format!("{}={}", env::LAUNCHER, std::process::id())).map_err(|_| "bad pid")?);
        let null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?;
        let slot = || {
            let fd = nix::fcntl::fcntl(&null, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FIRST_SLOT))
                .map_err(|e| format!("cannot duplicate /dev/null: {}", e.desc()))?;
            // SAFETY: a descriptor just made, owned by nothing else.
            Ok::<_, String>(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        };
        let slots = [slot()?, slot()?, slot()?];
        let table_end = 1 + slots
            .iter()
            .map(|s| s.as_raw_fd())
            .chain([null.as_raw_fd()])
            .max()
            .unwrap_or(0);
        Ok(Spawner {
            env: vars,
            null,
            slots,
            table_end,
            stack: Stack::new(CHILD_STACK)?,
            launcher: nix::unistd::getpid(),
            group: None,
        })
    }

    /// Points the slots at the node's socket, stdout and stderr, or (all
    /// `None`) back at `/dev/null`, so that no slot keeps a node's socket
    /// or a relay pipe's write end open in the launcher.
    fn fill_slots(&mut self, fds: [Option<RawFd>; 3]) -> Result<(), String> {
        for (slot, fd) in self.slots.iter_mut().zip(fds) {
            // SAFETY: the caller's descriptors are open for this call.
            let fd = fd.map_or(self.null.as_fd(), |fd| unsafe {
                std::os::fd::BorrowedFd::borrow_raw(fd)
            });
            nix::unistd::dup3(fd, slot, nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("cannot prepare a node's descriptors: {}", e.desc()))?;
        }
        Ok(())
    }

    /// Starts node `i` of the plan: clone, then exec in the child. Returns
    /// once the child has exec'd (or died trying), with its pid and process
    /// group; a child that cannot exec exits 127, which the launcher reports
    /// like any early death.
    ///
    /// The nodes share one process group of their own, apart from the
    /// terminal's: Ctrl-C reaches the launcher alone, and teardown signals
    /// every node with one `kill(-group)`. The first node leads the group;
    /// should every member be gone, the next node starts a new one.
    ///
    /// A clone the way `posix_spawn` does it, rather than a fork: the child
    /// shares the launcher's memory and file table (`CLONE_VM`,
    /// `CLONE_FILES`), and the launcher waits only until it calls `execve`
    /// (`CLONE_VFORK`), not for the exec to finish: the launcher starts the
    /// next node while the last one is still loading. Its first act is
    /// `close_range(table_end, ~0, CLOSE_RANGE_UNSHARE)`: a private table
    /// holding only the launcher's few low descriptors. A fork would copy
    /// the whole table, two descriptors per node already started, and the
    /// exec close them all again: for 1000 nodes, half a million closes,
    /// most of the launch's CPU time. Nor is the launcher's memory copied,
    /// page table and all, only to be thrown away at the exec.
    /// (Not `std::process::Command`: it waits until the exec has finished.)
    ///
    /// `io` says what the node is given; `cpus`, where it may run.
    pub fn start(
        &mut self,
        plan: &Plan,
        i: usize,
        io: NodeIo<'_>,
        cpus: Option<nix::sched::CpuSet>,
    ) -> Result<(Pid, Pid), String> {
        let NodeIo {
            notify_socket,
            socket,
            stdout,
            stderr,
        } = io;
        let name = &plan.members[i].name;
        let (path, args) = plan.command(i);
        let nul = |what: &str| format!("{what} for node '{name}' has a NUL byte");
        let path = CString::new(path.into_os_string().into_vec()).map_err(|_| nul("the program's path"))?;
        let args: Vec<CString> = args
            .into_iter()
            .map(|a| CString::new(a.into_vec()).map_err(|_| nul("an argument")))
            .collect::<Result<_, _>>()?;
        let own: Vec<CString> = plan
            .env(i)
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                CString::new(kv).map_err(|_| nul("a variable"))
            })
            .collect::<Result<_, _>>()?;
        let held = plan.members[i].socket == Socket::Held && socket.is_some();
        let null = self.null.as_raw_fd();
        let (out, err) = if i == plan.foreground {
            let out = if plan.shows(i) { stdout.unwrap_or(1) } else { null };
            (out, stderr.unwrap_or(2))
        } else if plan.shows(i) {
            // Its lines in the stream; its warnings and summary would be a
            // thousand nodes' noise: the ring summary counts for them.
            (stdout.unwrap_or(1), null)
        } else {
            // Into its log (a pipe the launcher writes to the file), or
            // nowhere.
            (stdout.unwrap_or(null), stderr.unwrap_or(null))
        };
        // Everything the child touches is built before the clone: it allocates
        // nothing. LISTEN_PID must be the child's own pid, known only after
        // the clone: the child writes its digits into room made here.
        let argv: Vec<*const nix::libc::c_char> = args.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        let names = CString::new(format!("{}={name}", env::LISTEN_FDNAMES)).map_err(|_| "a name has a NUL")?;
        let fds = CString::new(format!("{}=1", env::LISTEN_FDS)).map_err(|_| "bad variable")?;
        let notify =
            CString::new(format!("{}={notify_socket}", env::NOTIFY_SOCKET)).map_err(|_| "bad notify socket")?;
        let mut listen_pid = format!("{}=", env::LISTEN_PID).into_bytes();
        let digits_at = listen_pid.len();
        listen_pid.resize(digits_at + 24, 0);
        // One pointer for both uses: the variable, and the room for its digits.
        let listen_pid = listen_pid.as_mut_ptr();
        // A held socket comes with systemd's three variables; a member that
        // binds its own gets none of them.
        let activation = [fds.as_ptr(), names.as_ptr(), listen_pid.cast_const().cast()];
        // An inherited variable the member sets itself is left out.
        let replaced = |inherited: &CString| {
            let inherited = inherited.as_bytes();
            own.iter().any(|var| {
                let key = var.as_bytes().split(|&b| b == b'=').next().unwrap_or_default();
                inherited.len() > key.len() && inherited.starts_with(key) && inherited[key.len()] == b'='
            })
        };
        let envp: Vec<*const nix::libc::c_char> = self
            .env
            .iter()
            .filter(|e| !replaced(e))
            .chain(&own)
            .map(|e| e.as_ptr())
            .chain([notify.as_ptr()])
            .chain(activation.into_iter().filter(|_| held))
            .chain([std::ptr::null()])
            .collect();
        // SAFETY: within the buffer just made: the name and '=', then 24 bytes of room.
        let pid_digits = unsafe { listen_pid.add(digits_at) };
        self.fill_slots([socket, Some(out), Some(err)])?;
        let [slot, out, err] = self.slots.each_ref().map(|s| s.as_raw_fd());
        let socket = socket.map(|_| slot);
        let exec = ChildExec {
            launcher: self.launcher,
            group: self.group.unwrap_or(Pid::from_raw(0)),
            table_end: self.table_end,
            stdio: [self.null.as_raw_fd(), out, err],
            socket,
            pid_digits,
            cpus,
            foreground: i == plan.foreground,
            argv: &argv,
            envp: &envp,
            path: &path,
        };
        use nix::sched::CloneFlags;
        let flags = CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK | CloneFlags::CLONE_FILES;
        // SAFETY: the launcher is single-threaded while it starts nodes (the
        // teardown's one thread comes after the last start), and it waits
        // (CLONE_VFORK) while the child runs on its own stack, so nothing
        // the child reads changes under it, and nothing it writes (the room
        // for LISTEN_PID's digits, errno) is read before the next start
        // rewrites it. The child calls only async-signal-safe functions
        // (close_range, unshare, setpgid, prctl, getppid, getpid,
        // sched_setaffinity, sigaction, rt_sigaction, sigprocmask, dup2, fcntl, execve,
        // _exit) on data prepared before the clone, allocates nothing, and
        // never returns. No signal handler is installed in the launcher (its
        // signals are blocked and read from a signalfd), so none can run in
        // the child either.
        let started = unsafe {
            nix::sched::clone(
                Box::new(|| exec.exec()),
                &mut self.stack,
                flags,
                Some(Signal::SIGCHLD as nix::libc::c_int),
            )
        };
        // Whatever happened, the slots let go of the node's socket and pipes.
        let emptied = self.fill_slots([None; 3]);
        let child = started.map_err(|e| format!("cannot start node '{name}': clone: {}", e.desc()))?;
        emptied?;
        // The child set its group itself (CLONE_VFORK: it has exec'd, or
        // exited, by the time this runs), joining `group` or, if that has
        // emptied meanwhile, leading a new one.
        let pgid = nix::unistd::getpgid(Some(child)).unwrap_or(child);
        self.group = Some(pgid);
        Ok((child, pgid))
    }
}

/// The child's stack: an anonymous mapping with an inaccessible guard page
/// below it, as glibc's `posix_spawn` makes. The child runs in the
/// launcher's memory (`CLONE_VM`): overflowing a stack without a guard
/// would write over whatever the launcher keeps below it; with one, it
/// faults (SIGSEGV), and the launcher reports a node that died.
#[derive(Debug)]
struct Stack {
    /// The whole mapping, guard page first.
    map: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
    /// The guard page's size.
    guard: usize,
}

impl Stack {
    /// A stack of `size` bytes (rounded up to whole pages), zeroed.
    fn new(size: usize) -> Result<Stack, String> {
        use nix::sys::mman::{mmap_anonymous, mprotect, MapFlags, ProtFlags};
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as usize);
        let len = page + size.div_ceil(page) * page;
        let fail = |e: nix::errno::Errno| format!("cannot map a stack for the nodes: {}", e.desc());
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_STACK;
        let length = std::num::NonZeroUsize::new(len).ok_or("an empty stack")?;
        // SAFETY: a fresh private mapping at an address of the kernel's
        // choosing: nothing else is there.
        let map = unsafe { mmap_anonymous(None, length, rw, flags) }.map_err(fail)?;
        let stack = Stack { map, len, guard: page };
        // SAFETY: the first page of the mapping just made, used by nothing.
        unsafe { mprotect(map, page, ProtFlags::PROT_NONE) }.map_err(fail)?;
        Ok(stack)
    }
}

impl std::ops::Deref for Stack {
    type Target = [u8];

    /// The usable part, above the guard page.
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping is readable from `guard` to `len`, and lives
        // as long as self.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<u8>().add(self.guard), self.len - self.guard) }
    }
}

impl std::ops::DerefMut for Stack {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for deref, and writable; borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().cast::<u8>().add(self.guard), self.len - self.guard) }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, which no slice outlives (they borrow self).
        let _ = unsafe { nix::sys::mman::munmap(self.map, self.len) };
    }
}

/// What the child needs between clone and exec, all prepared before the clone.
struct ChildExec<'a> {
    launcher: Pid,
    /// The group to join, or 0 to lead a new one.
    group: Pid,
    /// The child keeps the launcher's descriptors below this one.
    table_end: RawFd,
    /// What becomes fds 0, 1 and 2.
    stdio: [RawFd; 3],
    /// What becomes fd 3: the node's socket, if the launcher holds it.
    socket: Option<RawFd>,
    /// Room (24 bytes) for LISTEN_PID's digits and their NUL.
    pid_digits: *mut u8,
    /// The CPUs the node may run on, if placed.
    cpus: Option<nix::sched::CpuSet>,
    /// Whether this is the foreground node, which writes to the terminal.
    foreground: bool,
    /// Null-terminated argument and environment pointer arrays.
    argv: &'a [*const nix::libc::c_char],
    envp: &'a [*const nix::libc::c_char],
    path: &'a CString,
}

impl ChildExec<'_> {
    /// The child's side of [`Spawner::start`]: a file table of its own, the
    /// nodes' process group, tied to the launcher's life, standard streams
    /// in place, then exec.
    ///
    /// # Safety
    /// Call only in a child cloned with `CLONE_VM | CLONE_VFORK |
    /// CLONE_FILES` from a single-threaded parent.
    unsafe fn exec(&self) -> ! {
        use nix::libc;
        // Before anything touches a descriptor: the shared table is the
        // launcher's. A kernel before 5.9 has no close_range; the whole
        // table is then copied, and the exec closes what is close-on-exec.
        // SAFETY: close_range and unshare are plain system calls.
        unsafe {
            let unshared = libc::syscall(
                libc::SYS_close_range,
                self.table_end as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) == 0;
            if !unshared && nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES).is_err() {
                libc::_exit(127);
            }
        }
        let (launcher, group) = (self.launcher, self.group);
        // The nodes' group, not the terminal's: Ctrl-C reaches the launcher alone.
        // If the group has emptied meanwhile, lead a new one.
        if nix::unistd::setpgid(Pid::from_raw(0), group).is_err() {
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
        }
        // A launcher that dies, even by SIGKILL, takes its nodes along: they get
        // SIGTERM and remove their sockets.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
        // If it died before prctl took effect, no signal will ever come (the race
        // prctl(2) describes); our parent is then no longer the launcher.
        if nix::unistd::getppid() != launcher {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(1) };
        }
        // Placed before it runs a single instruction of its own: a node
        // never starts on the wrong CPU. (A failure leaves it unplaced.)
        if let Some(cpus) = &self.cpus {
            let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), cpus);
        }
        // Out of the terminal's group by now: a stop from the terminal
        // that came before is dropped, every disposition is the default,
        // and the launcher's blocked signals are unblocked (a teardown's
        // SIGTERM that came since the clone takes effect now).
        crate::signals::reset_in_child(self.foreground);
        // SAFETY: pid_digits points at 24 writable bytes of this start's own
        // environment block, which a pid's digits and a NUL fit.
        unsafe { write_decimal(self.pid_digits, nix::unistd::getpid().as_raw()) };
        // SAFETY: dup2, fcntl and execve are async-signal-safe; the fds are
        // open and the arrays end in null.
        unsafe {
            if (0..3).any(|fd| libc::dup2(self.stdio[fd as usize], fd) < 0) {
                libc::_exit(127);
            }
            // The socket becomes fd 3 (SD_LISTEN_FDS_START); a dup has no
            // close-on-exec flag. The slots are above 3: nothing is
            // overwritten before it is read. A member without a held socket
            // gets no fd 3 at all.
            let first_closed: libc::c_uint = match self.socket {
                Some(socket) if libc::dup2(socket, 3) < 0 => libc::_exit(127),
                Some(_) => 4,
                None => 3,
            };
            // Nothing else: not the slots, and not what the launcher itself
            // inherited without close-on-exec (a make jobserver's pipe, a
            // caller's stray descriptor), which would otherwise reach every
            // node. The table is the child's own and small by now. (A
            // kernel before 5.9 fails this call: exec then closes only what
            // is close-on-exec.)
            libc::syscall(
                libc::SYS_close_range,
                first_closed,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            );
            libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
            libc::_exit(127)
        }
    }
}

/// Writes `n` in decimal at `dst`, then a NUL, without allocating.
///
/// # Safety
/// `dst` must have room for 12 bytes.
unsafe fn write_decimal(dst: *mut u8, n: i32) {
    let mut digits = [0u8; 11];
    let mut len = 0;
    let mut v = n.unsigned_abs();
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for (k, &d) in digits[..len].iter().rev().enumerate() {
        // SAFETY: k < 11, within the room the caller promised.
        unsafe { *dst.add(k) = d };
    }
    // SAFETY: len <= 10, within the room.
    unsafe { *dst.add(len) = 0 };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn plan(dir: &[u8], names: &[&str]) -> Plan {
        use piper_core::{Name, SocketDir};
        let dir = std::path::Path::new(std::ffi::OsStr::from_bytes(dir));
        let restart = crate::supervisor::restart::Restart {
            policy: piper_launch::cli::RestartPolicy::No,
            delay: std::time::Duration::ZERO,
            burst: 5,
            interval: std::time::Duration::from_secs(10),
            foreground: false,
        };
        let options = crate::plan::RingOptions {
            node_bin: PathBuf::from("/bin/false"),
            log_dir: None,
            interval: None,
            quiet: true,
            count: None,
            allow_uids: Vec::new(),
            all_output: true,
            json: false,
        };
        let names: Vec<Name> = names.iter().map(|n| Name::new(n).unwrap()).collect();
        let dir = SocketDir::open_abstract(dir).unwrap();
        Plan::ring(dir, names, None, true, 0, restart, options)
    }

    #[test]
    fn the_child_uses_under_a_quarter_of_its_stack() {
        // A real start, of /bin/false: the child runs everything it runs for
        // a node, then execs. The stack was zeros; what it wrote is its use.
        // (The test process has other threads, unlike the launcher; the
        // child touches only what `start` prepared, which they do not.)
        let plan = plan(b"/run/p", &["a"]);
        let mut spawner = Spawner::new().unwrap();
        let socket = File::open("/dev/null").unwrap();
        let io = NodeIo {
            notify_socket: "@piper-test-stack",
            socket: Some(socket.as_raw_fd()),
            stdout: None,
            stderr: None,
        };
        let (child, _) = spawner.start(&plan, 0, io, None).unwrap();
        // CLONE_VFORK: it has exec'd /bin/false; give it 10 s to end.
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let mut status = WaitStatus::StillAlive;
        for _ in 0..1000 {
            status = waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap();
            if status != WaitStatus::StillAlive {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if status == WaitStatus::StillAlive {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
        assert_eq!(status, WaitStatus::Exited(child, 1), "/bin/false ran");
        let used = spawner.stack.len() - spawner.stack.iter().position(|&b| b != 0).unwrap();
        assert!(
            used > 0 && 4 * used <= CHILD_STACK,
            "the child used {used} of {CHILD_STACK} bytes"
        );
    }

    #[test]
    fn the_childs_stack_has_an_inaccessible_guard_page_below_it() {
        let spawner = Spawner::new().unwrap();
        let bottom = spawner.stack.as_ptr() as usize;
        assert!(spawner.stack.len() >= CHILD_STACK);
        // /proc/self/maps: "start-end perms ...", in hexadecimal.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let perms = |addr: usize| {
            maps.lines().find_map(|line| {
                let (range, rest) = line.split_once(' ')?;
                let (start, end) = range.split_once('-')?;
                let (start, end) = (
                    usize::from_str_radix(start, 16).ok()?,
                    usize::from_str_radix(end, 16).ok()?,
                );
                (start <= addr && addr < end).then(|| rest[..4].to_string())
            })
        };
        assert_eq!(perms(bottom).as_deref(), Some("rw-p"), "the stack itself");
        assert_eq!(perms(bottom - 1).as_deref(), Some("---p"), "the page below it:\n{maps}");
    }

    #[test]
    fn pids_are_written_as_decimal_without_allocating() {
        for (n, want) in [(0, "0"), (7, "7"), (4_194_304, "4194304"), (i32::MAX, "2147483647")] {
            let mut room = [0xffu8; 24];
            // SAFETY: 24 bytes of room.
            unsafe { write_decimal(room.as_mut_ptr(), n) };
            let end = room.iter().position(|&b| b == 0).unwrap();
            assert_eq!(&room[..end], want.as_bytes());
        }
    }
}
