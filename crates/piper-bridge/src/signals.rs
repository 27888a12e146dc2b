//! The bridge's signals, as the launcher takes them: blocked before any
//! thread starts (the runtime's helper threads inherit the mask), and read
//! from a signalfd in the event loop. No handler ever runs.

use nix::sys::signal::Signal;

/// The signals that stop the bridge.
pub const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Blocks [`TERMINATING`] for the bridge's signalfd.
pub fn block() -> nix::Result<piper_cli::signals::Blocked> {
    piper_cli::signals::Blocked::block(&TERMINATING)
}
