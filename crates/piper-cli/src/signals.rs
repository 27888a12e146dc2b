//! Signals taken tini's way, for the programs that run an event loop (the
//! launcher, the bridge): blocked, and read from a signalfd. No handler
//! ever runs, so there is nothing async-signal-safe to get right.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Blocked signals and the descriptor that reports them.
#[derive(Debug)]
pub struct Blocked {
    fd: SignalFd,
}

impl Blocked {
    /// Blocks `signals` in this thread (threads started later inherit the
    /// mask) and opens a non-blocking signalfd for them. Their dispositions
    /// are reset to the default first: a signal that whoever started us
    /// ignored (a shell's `&` ignores SIGINT) would otherwise be discarded,
    /// never queued.
    pub fn block(signals: &[Signal]) -> nix::Result<Blocked> {
        Ok(Blocked { fd: block(signals)? })
    }

    /// Every pending signal, in the order they came (SIGCHLD at most once:
    /// the kernel merges them, and one means "reap").
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

impl AsFd for Blocked {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn block(signals: &[Signal]) -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for &sig in signals {
        mask.add(sig);
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing the default disposition runs no code of ours.
        unsafe { sigaction(sig, &default) }?;
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_signals_are_read_in_order_and_reading_never_waits() {
        // Signals raised by this thread stay pending on it (blocked) until
        // its signalfd reads them. The harness's other threads are not
        // touched: a thread's mask is its own.
        std::thread::spawn(|| {
            let mut blocked = Blocked::block(&[Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGCHLD]).unwrap();
            assert_eq!(blocked.read(), [], "nothing pending yet, and no wait");
            for sig in [Signal::SIGUSR2, Signal::SIGCHLD, Signal::SIGUSR1] {
                nix::sys::signal::raise(sig).unwrap();
            }
            // The kernel hands them over lowest number first.
            assert_eq!(blocked.read(), [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGCHLD]);
            assert_eq!(blocked.read(), []);
        })
        .join()
        .unwrap();
    }
}
