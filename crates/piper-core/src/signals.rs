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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::Signal;
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
    /// A socket to make non-blocking on a stop request, or -1.
    interrupt: AtomicI32,
}

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
                    }
                }
                signal_hook::low_level::exit(128 + signo);
            }
        }
        let fd = self.interrupt.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: `interrupt` is set only inside `Signals::interrupting`,
            // which holds a borrow of the descriptor for that whole time and
            // clears it before returning or unwinding.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
                let _ = fcntl(
                    fd,
                    FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
                );
            }
        }
        self.wake();
    }
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
                interrupt: AtomicI32::new(-1),
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

    /// Runs `f`, during which a stop request also sets `socket` non-blocking,
    /// so that a loop that blocks in a receive on it (with a receive timeout
    /// set, so that the signal itself ends the receive with EINTR) cannot
    /// miss a stop that lands between its check and its receive.
    ///
    /// The socket is registered only for the duration of the call, which
    /// borrows it throughout, and is cleared however `f` ends, by return or
    /// by panic: the handler never touches a closed descriptor. One socket
    /// at a time: a nested call replaces the outer one until it returns.
    pub fn interrupting<R>(&self, socket: BorrowedFd<'_>, f: impl FnOnce() -> R) -> R {
        struct Clear<'a>(&'a AtomicI32, i32);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.store(self.1, Ordering::SeqCst);
            }
        }
        let raw = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let outer = self.shared.interrupt.swap(raw, Ordering::SeqCst);
        let _clear = Clear(&self.shared.interrupt, outer);
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
            assert_eq!(signals.shared.interrupt.load(Ordering::SeqCst), a.as_raw_fd());
            signals.trigger().fire();
        });
        assert!(nonblocking(a.as_fd()));
        assert_eq!(signals.shared.interrupt.load(Ordering::SeqCst), -1);
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
        signals.trigger().fire();
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
        std::process::exit(3);
    }

    #[test]
    fn an_orphan_removes_what_its_dead_parent_held() {
        for (parent, removed) in [("gone", true), ("alive", false)] {
            let file = std::env::temp_dir().join(format!("piper-signals-orphan-{}-{parent}", std::process::id()));
            std::fs::write(&file, "").unwrap();
            let status = in_child(
                "signals::tests::child_exits_on_the_second_signal_as_an_orphan",
                &[
                    ("PIPER_UNIT_FILE", file.to_str().unwrap()),
                    ("PIPER_UNIT_PARENT", parent),
                ],
            );
            assert_eq!(status.code(), Some(128 + Signal::SIGUSR1 as i32));
            assert_eq!(!file.exists(), removed, "parent {parent}");
            let _ = std::fs::remove_file(&file);
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
        assert_eq!(signals.shared.interrupt.load(Ordering::SeqCst), -1);
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
