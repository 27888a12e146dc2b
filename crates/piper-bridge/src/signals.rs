//! The bridge's signals, as the launcher takes them: blocked before any
//! thread starts (the runtime's helper threads inherit the mask), and read
//! from a signalfd in the event loop. No handler ever runs.

/// The signals that stop the bridge, as they stop a node and a launcher.
pub use piper_core::signals::TERMINATING;

/// Blocks [`TERMINATING`] for the bridge's signalfd.
pub fn block() -> nix::Result<piper_cli::signals::Blocked> {
    piper_cli::signals::Blocked::block(&TERMINATING)
}
