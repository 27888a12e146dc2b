//! The bridge's signals, as the launcher takes them: blocked before any
//! thread starts (the runtime's helper threads inherit the mask), and read
//! from a signalfd in the event loop. No handler ever runs.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals that stop the bridge.
pub const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The blocked signals and the descriptor that reports them.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks [`TERMINATING`] and opens a signalfd for them. Their
    /// dispositions are reset first: a signal that whoever started us
    /// ignored (a shell's `&` ignores SIGINT) would never be queued.
    pub fn block() -> nix::Result<Signals> {
        let mut mask = SigSet::empty();
        for sig in TERMINATING {
            mask.add(sig);
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            // SAFETY: installing the default disposition runs no code of ours.
            unsafe { sigaction(sig, &default) }?;
        }
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// Every pending signal, in the order they came.
    pub fn read(&mut self) -> Vec<Signal> {
        let mut came = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                came.push(sig);
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
