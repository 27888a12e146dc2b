//! The one error type of piper-core.
//!
//! Every variant says what failed and with which input, in lowercase, so a
//! binary can print `piper-node: {error}` as its whole one-line diagnostic.

use std::fmt;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::name::Name;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in piper-core.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A node name broke one of the naming rules; `rule` says which.
    InvalidName {
        /// The offending name, escaped for display.
        name: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// `DIR/piper-NAME` would not fit in `sun_path` (107 bytes plus the NUL).
    NameTooLong {
        /// The name.
        name: Name,
        /// The socket directory it was meant for.
        dir: PathBuf,
        /// The longest name that fits in that directory.
        max: usize,
    },
    /// The socket directory could not be created, read or used.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What piper was doing with it.
        action: &'static str,
        /// The cause.
        source: Errno,
    },
    /// The socket directory is not safe to hold sockets: wrong owner or mode.
    InsecureDir {
        /// The directory.
        dir: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Another live process already owns this node name.
    NameInUse {
        /// The name.
        name: Name,
        /// Where the name lives (a socket file, or `@...` for an abstract address).
        address: String,
        /// The owner's pid, when known.
        pid: Option<i32>,
    },
    /// No node of that name exists (`ENOENT`).
    PeerNotFound {
        /// The peer's name.
        peer: Name,
    },
    /// The peer's socket exists but nobody reads it any more (`ECONNREFUSED`).
    PeerGone {
        /// The peer's name.
        peer: Name,
    },
    /// The message is larger than the kernel accepts in one datagram (`EMSGSIZE`).
    TooLarge {
        /// The peer's name.
        peer: Name,
        /// The message length in bytes.
        len: usize,
    },
    /// The peer's queue stayed full for the whole send timeout (`EAGAIN`).
    WouldBlock {
        /// The peer's name.
        peer: Name,
    },
    /// A datagram was larger than the receive buffer and was cut (`MSG_TRUNC`).
    Truncated {
        /// The datagram's real length.
        len: usize,
        /// The receive buffer's size.
        max: usize,
    },
    /// A system call failed.
    Io {
        /// What piper was doing.
        action: &'static str,
        /// What it was doing it to (a path, a name, a descriptor).
        target: String,
        /// The cause.
        source: Errno,
    },
    /// Socket activation (`LISTEN_FDS`) handed over something unusable.
    Activation {
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, target: impl fmt::Display, source: Errno) -> Self {
        Error::Io {
            action,
            target: target.to_string(),
            source,
        }
    }

    pub(crate) fn dir(dir: &std::path::Path, action: &'static str, source: Errno) -> Self {
        Error::Dir {
            dir: dir.to_path_buf(),
            action,
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, rule } => write!(f, "invalid node name '{name}': {rule}"),
            Error::NameTooLong { name, dir, max } => write!(
                f,
                "node name '{name}' is too long for {}: at most {max} bytes fit in a socket address there",
                dir.display()
            ),
            Error::Dir { dir, action, source } => {
                write!(
                    f,
                    "cannot {action} socket directory {}: {}",
                    dir.display(),
                    source.desc()
                )
            }
            Error::InsecureDir { dir, reason } => {
                write!(f, "refusing socket directory {}: {reason}", dir.display())
            }
            Error::NameInUse { name, address, pid } => match pid {
                Some(pid) => write!(
                    f,
                    "name in use: node '{name}' is already running as pid {pid} ({address})"
                ),
                None => write!(
                    f,
                    "name in use: node '{name}' is already bound by another process ({address})"
                ),
            },
            Error::PeerNotFound { peer } => write!(f, "peer '{peer}' not found: no such node"),
            Error::PeerGone { peer } => write!(f, "peer '{peer}' is gone: its socket is stale"),
            Error::TooLarge { peer, len } => {
                write!(f, "message of {len} bytes to '{peer}' is too large for one datagram")
            }
            Error::WouldBlock { peer } => write!(f, "peer '{peer}' is not reading: its queue stayed full"),
            Error::Truncated { len, max } => write!(
                f,
                "datagram of {len} bytes is larger than the {max}-byte receive buffer and was truncated"
            ),
            Error::Io { action, target, source } => write!(f, "cannot {action} {target}: {}", source.desc()),
            Error::Activation { reason } => write!(f, "socket activation: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Dir { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
