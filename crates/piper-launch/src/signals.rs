//! The launcher's signals, tini's way: blocked, and read from a signalfd in
//! the main loop. No handler ever runs, so there is no self-pipe, nothing
//! async-signal-safe to get right, and nothing for a child to inherit
//! between fork and exec: the child only has to unblock them again
//! ([`unblock_in_child`]) before it execs.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// The signals that ask the launcher to stop.
pub const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The terminal's job-control stops (Ctrl-Z, and reading or writing the
/// terminal from the background): the launcher stops its nodes and itself.
pub const SUSPENDING: [Signal; 3] = [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];

/// Every signal the launcher blocks and reads.
const WATCHED: [Signal; 9] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGCHLD,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCONT,
    Signal::SIGWINCH,
];

/// The launcher's blocked signals: [`TERMINATING`], [`SUSPENDING`],
/// SIGCHLD, SIGCONT (a blocked SIGCONT still continues a stopped launcher;
/// the signalfd then says it happened) and SIGWINCH (the status line fits
/// itself to the terminal again).
pub fn block() -> nix::Result<piper_cli::signals::Blocked> {
    piper_cli::signals::Blocked::block(&WATCHED)
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
