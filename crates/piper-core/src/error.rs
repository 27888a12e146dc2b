//! The one error type of piper-core.
//!
//! Every variant says what failed and with which input, in lowercase, so a
//! binary can print `piper-node: {error}` as its whole one-line diagnostic.
//! System-call failures keep their [`std::io::Error`], so the cause is never
//! lost; a receive that simply found nothing is not an error at all (see
//! [`Node::recv`](crate::Node::recv)).

use std::fmt;
use std::io;
use std::path::PathBuf;

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
    /// The socket directory's path is so long that no socket address fits in it.
    DirTooLong {
        /// The directory.
        dir: PathBuf,
    },
    /// The socket directory could not be created, read or listed.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What piper was doing with it.
        action: &'static str,
        /// The cause.
        source: io::Error,
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
        /// Whether the owner is a piper-launch, which holds the names of
        /// the nodes it runs (so the pid is the launcher's, not a node's).
        launcher: bool,
    },
    /// Another live process (a piper-launch, by the rule) owns the socket
    /// directory's control socket.
    ControlInUse {
        /// The control socket's address.
        address: String,
        /// The owner's pid, when known.
        pid: Option<i32>,
    },
    /// The name's path is taken by something that is not a piper node's
    /// socket: a regular file, say, or a lock file another user made.
    NameTaken {
        /// The name.
        name: Name,
        /// What occupies it, and where.
        what: String,
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
    /// The peer's path holds something other than a socket.
    PeerNotSocket {
        /// The peer's name.
        peer: Name,
        /// The path.
        path: PathBuf,
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
        source: io::Error,
    },
    /// Socket activation (`LISTEN_FDS`) handed over something unusable.
    Activation {
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Io`]: `action` (a verb such as "bind") on `target` failed
    /// with `source`. For code built on piper-core that reports its own
    /// system calls the way piper-core does.
    pub fn io(action: &'static str, target: impl fmt::Display, source: impl Into<io::Error>) -> Self {
        Error::Io {
            action,
            target: target.to_string(),
            source: source.into(),
        }
    }

    pub(crate) fn dir(dir: &std::path::Path, action: &'static str, source: io::Error) -> Self {
        Error::Dir {
            dir: dir.to_path_buf(),
            action,
            source,
        }
    }

    /// The operating system's error code behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Dir { source, .. } | Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The cause as people read it: `Permission denied`, without std's
/// ` (os error 13)` suffix.
struct Cause<'a>(&'a io::Error);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.raw_os_error() {
            Some(errno) => f.write_str(nix::errno::Errno::from_raw(errno).desc()),
            None => write!(f, "{}", self.0),
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
            Error::DirTooLong { dir } => write!(
                f,
                "socket directory {} is too long: no socket address fits in it",
                dir.display()
            ),
            Error::Dir { dir, action, source } => {
                write!(
                    f,
                    "cannot {action} socket directory {}: {}",
                    dir.display(),
                    Cause(source)
                )
            }
            Error::InsecureDir { dir, reason } => {
                write!(f, "refusing socket directory {}: {reason}", dir.display())
            }
            Error::NameInUse {
                name,
                address,
                pid,
                launcher,
            } => match pid {
                Some(pid) if *launcher => write!(
                    f,
                    "name in use: node '{name}' is held by a running piper-launch, pid {pid} ({address})"
                ),
                Some(pid) => write!(
                    f,
                    "name in use: node '{name}' is already running as pid {pid} ({address})"
                ),
                None => write!(
                    f,
                    "name in use: node '{name}' is already bound by another process ({address})"
                ),
            },
            Error::NameTaken { name, what } => write!(f, "name in use: node '{name}' is taken by {what}"),
            Error::ControlInUse { address, pid } => match pid {
                Some(pid) => write!(f, "control socket {address} is in use by pid {pid}"),
                None => write!(f, "control socket {address} is in use by another process"),
            },
            Error::PeerNotSocket { peer, path } => {
                write!(f, "peer '{peer}' is not a node: {} is not a socket", path.display())
            }
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
            Error::Io { action, target, source } => write!(f, "cannot {action} {target}: {}", Cause(source)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_and_shown_without_the_os_error_suffix() {
        let e = Error::io("open", "/x", nix::errno::Errno::EACCES);
        assert_eq!(e.to_string(), "cannot open /x: Permission denied");
        assert_eq!(e.raw_os_error(), Some(nix::libc::EACCES));
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "Permission denied (os error 13)");
    }

    #[test]
    fn an_error_without_an_errno_keeps_its_message() {
        let e = Error::io("parse", "x", io::Error::other("not a number"));
        assert_eq!(e.to_string(), "cannot parse x: not a number");
        assert_eq!(e.raw_os_error(), None);
    }
}
