//! Signals the self-pipe way, as in `just`'s `signals.rs`.
//!
//! A handler only records which signal came and writes one byte to a pipe;
//! the main loop polls that pipe beside its socket and decides what to do.
//! This is needed because signal-hook installs handlers with `SA_RESTART`: a
//! blocking receive would never wake up for a signal flag alone. A loop that
//! does block in a receive, to save the poll on every message, runs inside
//! [`Signals::interrupting`] with its socket: a stop request then also makes
//! that socket non-blocking, so the loop cannot sleep through it.
//!
//! Terminating signals (SIGINT, SIGTERM, SIGHUP) are counted. After
//! [`Signals::exit_on_repeat`], a second one exits at once from inside the
//! handler: it removes the given files (`unlink` is async-signal-safe) and
//! calls `_exit(128 + signal)`, for a process that is stuck somewhere the
//! main loop cannot notice, such as a write to a stalled terminal.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::Signal;
use nix::sys::socket::UnixAddr;
use signal_hook::SigId;

use crate::error::{Error, Result};

/// The signals that ask a piper process to stop.
pub const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Why a process was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A terminating signal arrived.
    Signal(Signal),
    /// [`Trigger::fire`] was called (tests, embedding code).
    Requested,
}

/// A set of watched signals and the pipe that reports them.
///
/// ```
/// use nix::poll::{poll, PollFd, PollFlags};
/// use piper_core::{Signals, Stop};
///
/// let signals = Signals::new().unwrap();
/// assert_eq!(signals.stop(), None);
/// signals.trigger().fire();
/// let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
/// assert_eq!(poll(&mut fds, 1000u16).unwrap(), 1);
/// signals.drain();
/// assert_eq!(signals.stop(), Some(Stop::Requested));
/// ```
#[derive(Debug)]
pub struct Signals {
    shared: Arc<Shared>,
    read: OwnedFd,
    ids: Vec<SigId>,
}

#[derive(Debug)]
struct Shared {
    write: OwnedFd,
    /// How many stop requests arrived.
    stops: AtomicUsize,
    /// The first stop request: a signal number, or 0 for a trigger.
    first: AtomicI32,
    /// Files to remove when a repeated terminating signal exits at once.
    emergency: OnceLock<Vec<CString>>,
    /// Files to remove then too if, by then, the process's parent is no
    /// longer this pid: what that parent held for us, and left.
    orphaned: OnceLock<(i32, Vec<CString>)>,
    /// And a stream socket the parent held for itself (a launcher's
    /// control socket), if nobody listens on it any more.
    orphaned_listener: OnceLock<(UnixAddr, CString)>,
    /// Sockets to make non-blocking on a stop request; -1 is a free slot.
    interrupt: [AtomicI32; SLOTS],
    /// How many stop requests are between reading a slot and being done
    /// with its descriptor: a slot's owner waits for none before it lets
    /// its descriptor go.
    touching: AtomicUsize,
}

/// How many sockets may be registered at once by [`Signals::interrupting`]
/// calls, nested or on other threads.
pub const SLOTS: usize = 8;

impl Shared {
    fn wake(&self) {
        // The pipe is non-blocking: when it is full, a wake-up is pending anyway.
        let _ = nix::unistd::write(&self.write, &[1]);
    }

    /// Async-signal-safe: atomics, fcntl, write, unlink and _exit only.
    fn on_stop(&self, signo: i32) {
        let before = self.stops.fetch_add(1, Ordering::SeqCst);
        if before == 0 {
            self.first.store(signo, Ordering::SeqCst);
        } else if signo != 0 {
            if let Some(paths) = self.emergency.get() {
                for path in paths {
                    let _ = nix::unistd::unlink(path.as_c_str());
                }
                if let Some((parent, paths)) = self.orphaned.get() {
                    if nix::unistd::getppid().as_raw() != *parent {
                        for path in paths {
                            let _ = nix::unistd::unlink(path.as_c_str());
                        }
                        if let Some((addr, socket)) = self.orphaned_listener.get() {
                            if nobody_listens(addr) {
                                let _ = nix::unistd::unlink(socket.as_c_str());
                            }
                        }
                    }
                }
                signal_hook::low_level::exit(128 + signo);
            }
        }
        // Counted before any slot is read: a slot's owner, having cleared
        // it, waits until this is done (see `interrupting`).
        self.touching.fetch_add(1, Ordering::SeqCst);
        for slot in &self.interrupt {
            let fd = slot.load(Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: a slot is set only inside `Signals::interrupting`,
                // which borrows the descriptor for that whole time, and
                // before it returns or unwinds clears the slot and then
                // waits until `touching` is zero: a descriptor read here
                // stays open until this fcntl is done.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
                    let _ = fcntl(
                        fd,
                        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
                    );
                }
            }
        }
        self.touching.fetch_sub(1, Ordering::SeqCst);
        self.wake();
    }
}

/// Whether a `connect` to the stream socket at `addr` is refused: nobody
/// listens on it. Async-signal-safe: socket(2), connect(2), close(2).
fn nobody_listens(addr: &UnixAddr) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType};
    let Ok(fd) = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None) else {
        return false;
    };
    matches!(connect(fd.as_raw_fd(), addr), Err(Errno::ECONNREFUSED))
}

impl Signals {
    /// A new set that watches nothing yet.
    pub fn new() -> Result<Signals> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Error::io("create", "the signal pipe", e))?;
        Ok(Signals {
            shared: Arc::new(Shared {
                write,
                stops: AtomicUsize::new(0),
                first: AtomicI32::new(-1),
                emergency: OnceLock::new(),
                orphaned: OnceLock::new(),
                orphaned_listener: OnceLock::new(),
                interrupt: [const { AtomicI32::new(-1) }; SLOTS],
                touching: AtomicUsize::new(0),
            }),
            read,
            ids: Vec::new(),
        })
    }

    /// Watches the [`TERMINATING`] signals as stop requests.
    pub fn terminating() -> Result<Signals> {
        let mut signals = Signals::new()?;
        for sig in TERMINATING {
            signals.watch(sig, true)?;
        }
        Ok(signals)
    }

    /// Watches `sig`. A `stop` signal counts as a stop request; any other
    /// only wakes the pipe.
    pub fn watch(&mut self, sig: Signal, stop: bool) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let signo = sig as i32;
        let handler = move || {
            if stop {
                shared.on_stop(signo);
            } else {
                shared.wake();
            }
        };
        // SAFETY: the handler is async-signal-safe: it touches only atomics
        // and `OnceLock`s that are already initialised when read (`get` is
        // an atomic load), and calls only fcntl(2), write(2), getppid(2),
        // unlink(2) and _exit(2).
        let id = unsafe { signal_hook::low_level::register(signo, handler) }
            .map_err(|e| Error::io("install a handler for", sig.as_str(), e))?;
        self.ids.push(id);
        Ok(())
    }

    /// Arms the emergency exit: from now on, a second terminating signal
    /// removes `paths` and exits at once with 128 + signal.
    pub fn exit_on_repeat(&self, paths: &[PathBuf]) {
        let paths = paths
            .iter()
            .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
            .collect();
        let _ = self.shared.emergency.set(paths);
    }

    /// With [`Signals::exit_on_repeat`]: the emergency exit also removes
    /// `paths` if, by then, this process's parent is no longer `parent`.
    /// For files a parent holds for this process, such as the socket a
    /// launcher bound and passed: while the parent lives it removes them
    /// (and may want them kept, for a restart); once it has died, nobody
    /// else will.
    pub fn exit_on_repeat_orphaned(&self, parent: nix::unistd::Pid, paths: &[PathBuf]) {
        let paths = paths
            .iter()
            .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
            .collect();
        let _ = self.shared.orphaned.set((parent.as_raw(), paths));
    }

    /// With [`Signals::exit_on_repeat_orphaned`]: the emergency exit of an
    /// orphan also removes the stream socket at `socket`, if nobody
    /// listens on it any more (a `connect` is refused): the control socket
    /// of a launcher killed with SIGKILL. Checked, not assumed: another
    /// launcher may have taken the directory since.
    pub fn exit_on_repeat_orphaned_listener(&self, socket: &std::path::Path) {
        let (Ok(addr), Ok(path)) = (UnixAddr::new(socket), CString::new(socket.as_os_str().as_bytes())) else {
            return;
        };
        let _ = self.shared.orphaned_listener.set((addr, path));
    }

    /// Runs `f`, during which a stop request also sets `socket` non-blocking,
    /// so that a loop that blocks in a receive on it (with a receive timeout
    /// set, so that the signal itself ends the receive with EINTR) cannot
    /// miss a stop that lands between its check and its receive.
    ///
    /// The socket is registered only for the duration of the call, which
    /// borrows it throughout; however `f` ends, by return or by panic, the
    /// registration is cleared, and the call returns only once no stop
    /// request (a signal handler, or [`Trigger::fire`] on another thread)
    /// is still using it: nothing ever touches the descriptor after the
    /// borrow ends, when its number may be reused. Calls may nest, and run
    /// on several threads at once with one `Signals`, up to [`SLOTS`]
    /// sockets at a time; beyond that a socket is not registered, and a
    /// stop is seen at the loop's next wake-up (its receive timeout).
    pub fn interrupting<R>(&self, socket: BorrowedFd<'_>, f: impl FnOnce() -> R) -> R {
        struct Clear<'a>(&'a Shared, &'a AtomicI32);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.1.store(-1, Ordering::SeqCst);
                // A stop request that read the slot before it was cleared
                // may still be using the descriptor: a few fcntl calls away
                // from done.
                while self.0.touching.load(Ordering::SeqCst) != 0 {
                    std::thread::yield_now();
                }
            }
        }
        let raw = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let free = self.shared.interrupt.iter().find(|slot| {
            slot.compare_exchange(-1, raw, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if free.is_none() {
            log::debug!("no free slot for fd {raw}: a stop reaches its loop at its next wake-up");
        }
        let _clear = free.map(|slot| Clear(&self.shared, slot));
        f()
    }

    /// Sleeps for `timeout` unless a stop is requested first; returns the
    /// stop if one came. For pauses that must not delay a shutdown.
    pub fn sleep(&self, timeout: std::time::Duration) -> Option<Stop> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(stop) = self.stop() {
                return Some(stop);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
            let ms = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
            if let Ok(1) = poll(&mut fds, ms) {
                self.drain();
            }
        }
    }

    /// A handle that requests a stop from anywhere, as a signal would.
    pub fn trigger(&self) -> Trigger {
        Trigger(Arc::clone(&self.shared))
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empties the pipe, after a wake-up has been handled. What woke it is
    /// read from [`Signals::stop`] (and, for other signals, from the state
    /// they are about, such as children to reap).
    pub fn drain(&self) {
        let mut sink = [0u8; 64];
        while matches!(nix::unistd::read(&self.read, &mut sink), Ok(n) if n > 0) {}
    }

    /// The first stop request, if any came.
    pub fn stop(&self) -> Option<Stop> {
        match self.shared.first.load(Ordering::SeqCst) {
            -1 => None,
            0 => Some(Stop::Requested),
            signo => Signal::try_from(signo).ok().map(Stop::Signal),
        }
    }

    /// How many stop requests arrived.
    pub fn stops(&self) -> usize {
        self.shared.stops.load(Ordering::SeqCst)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Requests a stop of the loop that owns the [`Signals`]; see
/// [`Signals::trigger`].
#[derive(Clone, Debug)]
pub struct Trigger(Arc<Shared>);

impl Trigger {
    /// Requests the stop.
    pub fn fire(&self) {
        self.0.on_stop(0);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    #[test]
    fn a_stop_during_interrupting_makes_the_socket_non_blocking_and_is_cleared_after() {
        let signals = Signals::new().unwrap();
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let nonblocking = |fd: BorrowedFd<'_>| {
            OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap()).contains(OFlag::O_NONBLOCK)
        };
        signals.interrupting(a.as_fd(), || {
            assert_eq!(signals.shared.interrupt[0].load(Ordering::SeqCst), a.as_raw_fd());
            signals.trigger().fire();
        });
        assert!(nonblocking(a.as_fd()));
        assert!(free(&signals));
    }

    /// Whether no socket is registered.
    fn free(signals: &Signals) -> bool {
        signals.shared.interrupt.iter().all(|s| s.load(Ordering::SeqCst) == -1)
    }

    #[test]
    fn two_threads_interrupting_with_one_set_never_touch_a_reused_descriptor() {
        // Thread A registers socket a, thread B socket b; A returns first,
        // then B. Socket a is closed and its number reused by an unrelated
        // descriptor c: a stop must not make c non-blocking.
        let signals = Signals::new().unwrap();
        let (a, _a) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let (b, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let (in_a, a_in) = std::sync::mpsc::channel();
        let (in_b, b_in) = std::sync::mpsc::channel();
        let (out_a, a_out) = std::sync::mpsc::channel::<()>();
        let (out_b, b_out) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let (set, a, b) = (&signals, &a, &b);
            let first = s.spawn(move || {
                set.interrupting(a.as_fd(), || {
                    in_a.send(()).unwrap();
                    a_out.recv().unwrap();
                })
            });
            a_in.recv().unwrap();
            let second = s.spawn(move || {
                set.interrupting(b.as_fd(), || {
                    in_b.send(()).unwrap();
                    b_out.recv().unwrap();
                })
            });
            b_in.recv().unwrap();
            out_a.send(()).unwrap();
            first.join().unwrap();
            out_b.send(()).unwrap();
            second.join().unwrap();
        });
        assert!(free(&signals));
        // dup2 closes a's number and makes it c's, at once.
        let mut reused = OwnedFd::from(a);
        let (c, _c) = std::os::unix::net::UnixDatagram::pair().unwrap();
        nix::unistd::dup2(c.as_fd(), &mut reused).unwrap();
        signals.trigger().fire();
        let flags = OFlag::from_bits_truncate(fcntl(reused.as_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(
            !flags.contains(OFlag::O_NONBLOCK),
            "a stop touched a descriptor nobody registered"
        );
        assert!(!OFlag::from_bits_truncate(fcntl(b.as_fd(), FcntlArg::F_GETFL).unwrap()).contains(OFlag::O_NONBLOCK));
    }

    #[test]
    fn nested_and_concurrent_sockets_all_get_the_stop_and_extra_ones_run_unregistered() {
        let signals = Signals::new().unwrap();
        let pairs: Vec<_> = (0..SLOTS + 1)
            .map(|_| std::os::unix::net::UnixDatagram::pair().unwrap())
            .collect();
        fn nest(signals: &Signals, socks: &[(std::os::unix::net::UnixDatagram, std::os::unix::net::UnixDatagram)]) {
            match socks.split_first() {
                Some(((s, _), rest)) => signals.interrupting(s.as_fd(), || nest(signals, rest)),
                None => signals.trigger().fire(),
            }
        }
        nest(&signals, &pairs);
        let nonblocking = |s: &std::os::unix::net::UnixDatagram| {
            OFlag::from_bits_truncate(fcntl(s.as_fd(), FcntlArg::F_GETFL).unwrap()).contains(OFlag::O_NONBLOCK)
        };
        let got: Vec<bool> = pairs.iter().map(|(s, _)| nonblocking(s)).collect();
        let mut want = vec![true; SLOTS];
        want.push(false);
        assert_eq!(got, want);
        assert!(free(&signals));
    }

    #[test]
    fn a_stop_leaves_a_non_blocking_socket_non_blocking() {
        let signals = Signals::new().unwrap();
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        signals.interrupting(a.as_fd(), || signals.trigger().fire());
        let flags = OFlag::from_bits_truncate(fcntl(a.as_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(flags.contains(OFlag::O_NONBLOCK));
    }

    #[test]
    fn dropping_the_set_unregisters_its_handlers() {
        let mut signals = Signals::new().unwrap();
        signals.watch(Signal::SIGWINCH, false).unwrap();
        let shared = Arc::clone(&signals.shared);
        assert_eq!(Arc::strong_count(&shared), 3, "ours, the set's and the handler's");
        drop(signals);
        assert_eq!(Arc::strong_count(&shared), 1, "the handler let go");
    }

    /// Runs `test` of this binary in a child process with `env`, and
    /// returns how it ended. For what ends a process or reads the
    /// environment, which a test must not do in the shared test process.
    pub(crate) fn in_child(test: &str, env: &[(&str, &str)]) -> std::process::ExitStatus {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--ignored", "--test-threads=1"])
            .env("PIPER_UNIT_CHILD", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.status().unwrap()
    }

    #[test]
    #[ignore = "run by a_second_stop_signal_removes_the_files_and_exits_at_once, in a child"]
    fn child_exits_on_the_second_signal() {
        if std::env::var_os("PIPER_UNIT_CHILD").is_none() {
            return;
        }
        let path = PathBuf::from(std::env::var_os("PIPER_UNIT_FILE").unwrap());
        let mut signals = Signals::new().unwrap();
        signals.watch(Signal::SIGUSR1, true).unwrap();
        signals.exit_on_repeat(&[path]);
        signals.trigger().fire();
        // A trigger is not a signal: no exit yet. The first signal after it
        // is a repeat, and exits.
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        std::process::exit(3);
    }

    #[test]
    fn a_second_stop_signal_removes_the_files_and_exits_at_once() {
        let file = std::env::temp_dir().join(format!("piper-signals-exit-{}", std::process::id()));
        std::fs::write(&file, "").unwrap();
        let status = in_child(
            "signals::tests::child_exits_on_the_second_signal",
            &[("PIPER_UNIT_FILE", file.to_str().unwrap())],
        );
        assert_eq!(status.code(), Some(128 + Signal::SIGUSR1 as i32));
        assert!(!file.exists(), "the file was removed");
    }

    #[test]
    #[ignore = "run by an_orphan_removes_what_its_dead_parent_held, in a child"]
    fn child_exits_on_the_second_signal_as_an_orphan() {
        if std::env::var_os("PIPER_UNIT_CHILD").is_none() {
            return;
        }
        let file = |var| PathBuf::from(std::env::var_os(var).unwrap());
        let mut signals = Signals::new().unwrap();
        signals.watch(Signal::SIGUSR1, true).unwrap();
        signals.exit_on_repeat(&[]);
        // Our parent is not pid 1: PIPER_UNIT_PARENT says whether to
        // pretend it is someone else (gone) or itself (alive).
        let parent = match std::env::var("PIPER_UNIT_PARENT").as_deref() {
            Ok("alive") => nix::unistd::getppid(),
            _ => nix::unistd::Pid::from_raw(1),
        };
        signals.exit_on_repeat_orphaned(parent, &[file("PIPER_UNIT_FILE")]);
        signals.exit_on_repeat_orphaned_listener(&file("PIPER_UNIT_SOCKET"));
        signals.trigger().fire();
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        std::process::exit(3);
    }

    #[test]
    fn an_orphan_removes_what_its_dead_parent_held() {
        // The parent's listener (a launcher's control socket) goes only if
        // nobody listens on it any more.
        let cases = [
            ("gone", false, true, true),
            ("gone", true, true, false),
            ("alive", false, false, false),
        ];
        for (parent, listening, removed, listener_removed) in cases {
            let tmp = |what: &str| {
                let path =
                    std::env::temp_dir().join(format!("piper-signals-orphan-{}-{parent}-{what}", std::process::id()));
                let _ = std::fs::remove_file(&path);
                path
            };
            let (file, socket) = (tmp("file"), tmp("socket"));
            std::fs::write(&file, "").unwrap();
            let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
            let listener = listening.then_some(listener);
            let status = in_child(
                "signals::tests::child_exits_on_the_second_signal_as_an_orphan",
                &[
                    ("PIPER_UNIT_FILE", file.to_str().unwrap()),
                    ("PIPER_UNIT_SOCKET", socket.to_str().unwrap()),
                    ("PIPER_UNIT_PARENT", parent),
                ],
            );
            assert_eq!(status.code(), Some(128 + Signal::SIGUSR1 as i32));
            assert_eq!(!file.exists(), removed, "parent {parent}");
            assert_eq!(
                !socket.exists(),
                listener_removed,
                "parent {parent}, listening {listening}"
            );
            drop(listener);
            for path in [file, socket] {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    #[test]
    fn a_panic_inside_interrupting_still_clears_the_socket() {
        let signals = Signals::new().unwrap();
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            signals.interrupting(a.as_fd(), || panic!("inside"));
        }));
        assert!(caught.is_err());
        assert!(free(&signals));
    }

    #[test]
    fn a_watched_signal_is_counted_and_wakes_the_pipe_until_drained() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let readable = |signals: &Signals| {
            let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        let mut signals = Signals::new().unwrap();
        // SIGUSR2 only wakes; SIGUSR1 asks for a stop.
        signals.watch(Signal::SIGUSR2, false).unwrap();
        signals.watch(Signal::SIGUSR1, true).unwrap();
        assert!(!readable(&signals));
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        assert!(readable(&signals));
        assert_eq!((signals.stop(), signals.stops()), (None, 0));
        signals.drain();
        assert!(!readable(&signals));
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        assert!(readable(&signals));
        assert_eq!(signals.stop(), Some(Stop::Signal(Signal::SIGUSR1)));
        assert_eq!(signals.stops(), 1);
        // A second stop, without exit_on_repeat, is only counted.
        signals.trigger().fire();
        assert_eq!(signals.stops(), 2);
        assert_eq!(signals.stop(), Some(Stop::Signal(Signal::SIGUSR1)), "the first stays");
    }

    #[test]
    fn sleep_ends_early_on_a_stop_and_runs_its_course_otherwise() {
        let signals = Signals::new().unwrap();
        let start = Instant::now();
        assert_eq!(signals.sleep(Duration::from_millis(30)), None);
        assert!(start.elapsed() >= Duration::from_millis(30));
        let trigger = signals.trigger();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            trigger.fire();
        });
        let start = Instant::now();
        assert_eq!(signals.sleep(Duration::from_secs(30)), Some(Stop::Requested));
        assert!(start.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }
}
