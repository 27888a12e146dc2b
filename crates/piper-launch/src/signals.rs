//! The launcher's signals, tini's way: blocked, and read from a signalfd in
//! the main loop. No handler ever runs, so there is no self-pipe, nothing
//! async-signal-safe to get right, and nothing for a child to inherit
//! between fork and exec: the child only has to unblock them again
//! ([`unblock_in_child`]) before it execs.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
pub use piper_core::signals::TERMINATING;

/// The terminal's job-control stops (Ctrl-Z, and reading or writing the
/// terminal from the background): the launcher stops its nodes and itself.
pub const SUSPENDING: [Signal; 3] = [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];

/// The launcher's blocked signals: [`TERMINATING`] (the signals that ask
/// a piper process to stop), [`SUSPENDING`], SIGCHLD and SIGCONT (a blocked
/// SIGCONT still continues a stopped launcher; the signalfd then says it
/// happened).
pub fn block() -> nix::Result<piper_cli::signals::Blocked> {
    let watched: Vec<Signal> = TERMINATING
        .into_iter()
        .chain(SUSPENDING)
        .chain([Signal::SIGCHLD, Signal::SIGCONT])
        .collect();
    piper_cli::signals::Blocked::block(&watched)
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
