//! The launcher's signals, tini's way: blocked, and read from a signalfd in
//! the main loop. No handler ever runs, so there is no self-pipe, nothing
//! async-signal-safe to get right, and nothing for a child to inherit
//! between fork and exec: the child only has to unblock them again
//! ([`unblock_in_child`]) before it execs.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;

/// The signals that ask the launcher to stop.
pub const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The terminal's job-control stops (Ctrl-Z, and reading or writing the
/// terminal from the background): the launcher stops its nodes and itself.
pub const SUSPENDING: [Signal; 3] = [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];

/// Every signal the launcher blocks and reads.
const WATCHED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGCHLD,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCONT,
];

/// The launcher's blocked signals and the descriptor that reports them.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks [`TERMINATING`], [`SUSPENDING`], SIGCHLD and SIGCONT, and
    /// opens a signalfd for them. (A blocked SIGCONT still continues a
    /// stopped launcher; the signalfd then says it happened.)
    ///
    /// Their dispositions are reset to the default first: a signal ignored
    /// by whoever started us (a shell's `&` ignores SIGINT) would otherwise
    /// be discarded, never queued for the signalfd.
    pub fn block() -> nix::Result<Signals> {
        Ok(Signals {
            fd: piper_cli::signals::block(&WATCHED)?,
        })
    }

    /// Reads every pending signal, in the order they came (SIGCHLD at most
    /// once: the kernel merges them, and one means "reap").
    pub fn read(&mut self) -> Vec<Signal> {
        let mut came = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                if !(sig == Signal::SIGCHLD && came.contains(&sig)) {
                    came.push(sig);
                }
            }
        }
        came
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Unblocks every signal: the node starts with the mask a process normally
/// has. A terminating signal that arrived between fork and here was held
/// pending and now takes its default action, so a child caught by a teardown
/// before it could exec dies at once instead of running a node.
///
/// Async-signal-safe (sigprocmask only), for use between fork and exec.
pub fn unblock_in_child() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
