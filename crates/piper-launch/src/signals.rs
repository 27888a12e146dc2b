//! The launcher's signals, tini's way: blocked, and read from a signalfd in
//! the main loop. No handler ever runs, so there is no self-pipe, nothing
//! async-signal-safe to get right, and nothing for a child to inherit
//! between clone and exec: the child only has to put its signal state back
//! to a new process's ([`reset_in_child`]) before it execs.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
pub use piper_core::signals::TERMINATING;

/// The terminal's job-control stops (Ctrl-Z, and reading or writing the
/// terminal from the background): the launcher stops its nodes and itself.
pub const SUSPENDING: [Signal; 3] = [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];

/// The launcher's blocked signals: [`TERMINATING`] (the signals that ask
/// a piper process to stop), [`SUSPENDING`], SIGCHLD, SIGCONT (a blocked
/// SIGCONT still continues a stopped launcher; the signalfd then says it
/// happened) and SIGWINCH (the status line fits itself to the terminal
/// again).
pub fn block() -> nix::Result<piper_cli::signals::Blocked> {
    let watched: Vec<Signal> = TERMINATING
        .into_iter()
        .chain(SUSPENDING)
        .chain([Signal::SIGCHLD, Signal::SIGCONT, Signal::SIGWINCH])
        .collect();
    piper_cli::signals::Blocked::block(&watched)
}

/// Gives the child the signal state of a freshly started process: every
/// disposition the default, and no signal blocked. Call it after the child
/// has left the terminal's process group, before it execs.
///
/// First, a job-control stop that reached the child while it was still in
/// the launcher's group (a Ctrl-Z between the clone and its `setpgid`) is
/// discarded: ignoring a pending signal drops it. Left pending, it would
/// stop the child the moment it is unblocked, before its exec, with the
/// launcher waiting on that exec (`CLONE_VFORK`) for good: the launcher
/// stops the ring itself when it reads its own copy of the stop.
///
/// Then every signal goes back to its default: the launcher's choices (Rust
/// ignores SIGPIPE) and what its own caller ignored are not the node's, as
/// `std::process::Command` and tini also make sure. Only an ignored signal
/// survives exec (a handler does not), so this undoes all there is. The
/// foreground node alone ignores SIGTTOU, to write to the terminal from a
/// group that is not the terminal's foreground group (with `stty tostop`).
///
/// Last, every signal is unblocked: a terminating signal that arrived since
/// the clone was held pending and now takes its default action, so a child
/// caught by a teardown before it could exec dies at once instead of
/// running a node.
///
/// Async-signal-safe (sigaction and sigprocmask only), for use between
/// clone and exec.
pub fn reset_in_child(foreground: bool) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let set = |sig: Signal, handler: SigHandler| {
        let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
        // SAFETY: SIG_IGN and SIG_DFL run no code of ours.
        let _ = unsafe { sigaction(sig, &action) };
    };
    for sig in SUSPENDING {
        set(sig, SigHandler::SigIgn);
    }
    for sig in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        set(sig, SigHandler::SigDfl);
    }
    default_realtime();
    if foreground {
        set(Signal::SIGTTOU, SigHandler::SigIgn);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// The real-time signals back to their default. nix names none of them,
/// and glibc's `sigaction` refuses 32 and 33, which it keeps for itself
/// (and which a caller may still have left ignored): the system call
/// itself, with an all-zero action (SIG_DFL, no flags, nothing masked,
/// whatever the architecture's field order).
fn default_realtime() {
    use nix::libc;
    let action = [0usize; 4];
    for signo in 32..=64 {
        // SAFETY: rt_sigaction reads the action (32 zero bytes, at least
        // the kernel's struct sigaction) and writes nothing: no old action
        // is asked for.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo as libc::c_long,
                action.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8 as libc::c_long,
            );
        }
    }
}
