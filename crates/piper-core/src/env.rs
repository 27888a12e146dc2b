//! The environment variables piper's processes read and set, named once:
//! piper-launch sets for its nodes what piper-node (and systemd's units)
//! read, and a typo on one side would be a silent mismatch.

/// The socket directory when none is given (`--dir`).
pub const DIR: &str = "PIPER_DIR";

/// A launched program's own name: it owns `$PIPER_DIR/piper-$PIPER_NAME`.
pub const NAME: &str = "PIPER_NAME";

/// The node a launched program answers (piper-node's `--next`).
pub const NEXT: &str = "PIPER_NEXT";

/// The pid of the piper-launch that holds a node's socket: a node whose
/// parent is no longer that launcher removes the socket file itself.
pub const LAUNCHER: &str = "PIPER_LAUNCHER";

/// Where a service manager reads `READY=1`, `STATUS=` and the rest
/// ([`notify`](crate::notify)).
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The manager's watchdog interval, in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";

/// The process the watchdog interval is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// The process the passed sockets are meant for ([`activation`](crate::activation)).
pub const LISTEN_PID: &str = "LISTEN_PID";

/// How many sockets were passed, from fd 3 on.
pub const LISTEN_FDS: &str = "LISTEN_FDS";

/// The passed sockets' names, colon-separated.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// What a service manager sets for the process it starts, which that
/// process must not hand on to its own children.
pub const MANAGER: [&str; 6] = [
    NOTIFY_SOCKET,
    WATCHDOG_USEC,
    WATCHDOG_PID,
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
];
