//! The bridge's signals, as the launcher takes them: blocked before any
//! thread starts (the runtime's helper threads inherit the mask), and read
//! from a signalfd in the event loop. No handler ever runs.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

/// The signals that stop the bridge.
pub const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The blocked signals and the descriptor that reports them.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks [`TERMINATING`] and opens a signalfd for them (see
    /// [`piper_cli::signals::block`]).
    pub fn block() -> nix::Result<Signals> {
        Ok(Signals {
            fd: piper_cli::signals::block(&TERMINATING)?,
        })
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
