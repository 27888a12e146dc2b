//! The sd_notify protocol: the one home of readiness.
//!
//! A service manager (systemd, or piper-launch) sets `$NOTIFY_SOCKET` to a
//! datagram socket, a path or `@abstract`, and reads `KEY=VALUE` lines from
//! it: `READY=1` once the node is bound, `STOPPING=1` on shutdown,
//! `WATCHDOG=1` as a heartbeat. The manager learns which process spoke from
//! the datagram's credentials. The `sd-notify` crate cannot reach `@`
//! sockets, hence this small module.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{sendto, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

use crate::error::{Error, Result};

/// A connection to the service manager.
///
/// ```
/// use piper_core::{notify::Notifier, Name, Node, RecvBuf, SocketDir};
///
/// let tmp = std::env::temp_dir().join(format!("piper-doc-notify-{}", std::process::id()));
/// let dir = SocketDir::open(&tmp).unwrap();
/// let manager = Node::bind(&dir, Name::new("manager").unwrap()).unwrap();
/// let path = dir.socket_path(manager.name()).unwrap();
///
/// let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
/// notifier.notify("READY=1").unwrap();
/// let mut buf = RecvBuf::new();
/// assert_eq!(manager.recv(&mut buf).unwrap().payload, b"READY=1");
/// # drop(manager); std::fs::remove_dir(&tmp).unwrap();
/// ```
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
    addr: UnixAddr,
    socket: String,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, or `None` when it is unset.
    pub fn from_env() -> Result<Option<Notifier>> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(socket) if !socket.is_empty() => Notifier::new(&socket).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for `socket`: a path, or `@name` for an abstract socket.
    pub fn new(socket: &str) -> Result<Notifier> {
        let addr = match socket.strip_prefix('@') {
            Some(name) => UnixAddr::new_abstract(name.as_bytes()),
            None if socket.starts_with('/') => UnixAddr::new(socket),
            None => {
                return Err(Error::io("use NOTIFY_SOCKET", socket, nix::errno::Errno::EAFNOSUPPORT));
            }
        }
        .map_err(|e| Error::io("use NOTIFY_SOCKET", socket, e))?;
        let fd = socket_fd().map_err(|e| Error::io("create a socket for", socket, e))?;
        Ok(Notifier {
            fd,
            addr,
            socket: socket.to_string(),
        })
    }

    /// Sends one state message, such as `READY=1`.
    pub fn notify(&self, state: &str) -> Result<()> {
        sendto(self.fd.as_raw_fd(), state.as_bytes(), &self.addr, MsgFlags::MSG_NOSIGNAL)
            .map(drop)
            .map_err(|e| Error::io("notify", &self.socket, e))
    }
}

fn socket_fd() -> nix::Result<OwnedFd> {
    socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
}

/// The interval at which the manager expects `WATCHDOG=1`, from
/// `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, which must be this process when set).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}
