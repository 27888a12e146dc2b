//! The sd_notify protocol: the one home of readiness.
//!
//! A service manager (systemd, or piper-launch) sets `$NOTIFY_SOCKET` to a
//! datagram socket, a path or `@abstract`, and reads `KEY=VALUE` lines from
//! it: `READY=1` once the node is bound, `STOPPING=1` on shutdown,
//! `WATCHDOG=1` as a heartbeat. The manager learns which process spoke from
//! the datagram's credentials. The `sd-notify` crate cannot reach `@`
//! sockets, hence this small module.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recvmsg, sendto, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr, UnixCredentials,
};

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
/// assert_eq!(manager.recv(&mut buf).unwrap().unwrap().payload, b"READY=1");
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
        // A manager that stopped reading must not hang us forever.
        crate::node::set_send_timeout(&fd, Duration::from_secs(1))
            .map_err(|e| Error::io("configure a socket for", socket, e))?;
        Ok(Notifier {
            fd,
            addr,
            socket: socket.to_string(),
        })
    }

    /// Sends one state message, such as `READY=1`, waiting up to a second
    /// if the manager's queue is full.
    pub fn notify(&self, state: &str) -> Result<()> {
        self.send(state, MsgFlags::empty())
            .map_err(|e| Error::io("notify", &self.socket, e))
    }

    /// Sends a state message that must not be lost, such as `READY=1`,
    /// waiting (a second at a time, woken the moment the manager reads) while
    /// the manager's queue is full, for up to `patience`; a stop reported by
    /// `signals` ends the wait early. Returns whether it was delivered. For
    /// one process's message; many at once use [`Notifier::notify_polling`].
    pub fn notify_until(&self, state: &str, patience: Duration, signals: &crate::Signals) -> Result<bool> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.send(state, MsgFlags::empty()) {
                Ok(()) => return Ok(true),
                // The send timeout passed, or a signal came.
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::io("notify", &self.socket, e)),
            }
            if signals.stop().is_some() || std::time::Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Sends a state message that should not be lost, for up to `patience`,
    /// without ever waiting in the kernel: while the manager's queue is full
    /// it tries again after a pause of a few milliseconds. When a thousand
    /// nodes stop at once against a ten-deep queue, senders blocked on it
    /// would all be woken by every read, a thundering herd; polling is not.
    /// Returns whether it was delivered.
    pub fn notify_polling(&self, state: &str, patience: Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + patience;
        let mut pause = Duration::from_micros(500);
        loop {
            if self.try_notify(state)? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Sends a state message only if the manager's queue has room; returns
    /// whether it did. For reports that the next one replaces (`STATUS=`).
    pub fn try_notify(&self, state: &str) -> Result<bool> {
        match self.send(state, MsgFlags::MSG_DONTWAIT) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EAGAIN) => Ok(false),
            Err(e) => Err(Error::io("notify", &self.socket, e)),
        }
    }

    fn send(&self, state: &str, flags: MsgFlags) -> nix::Result<()> {
        sendto(
            self.fd.as_raw_fd(),
            state.as_bytes(),
            &self.addr,
            flags | MsgFlags::MSG_NOSIGNAL,
        )
        .map(drop)
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

/// The manager's side: a socket that children find through `$NOTIFY_SOCKET`.
/// It reports each message with the sender's pid, from its credentials.
///
/// ```
/// use piper_core::notify::{Listener, Notifier};
///
/// let listener = Listener::bind_abstract(&format!("piper-doc/{}", std::process::id())).unwrap();
/// Notifier::new(listener.address()).unwrap().notify("READY=1").unwrap();
/// let (pid, state) = listener.try_recv().unwrap().unwrap();
/// assert_eq!((pid, state.as_str()), (std::process::id() as i32, "READY=1"));
/// ```
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    address: String,
}

impl Listener {
    /// Binds the abstract address `@name`. Nothing is created on disk, and the
    /// address vanishes with the process, however it dies.
    pub fn bind_abstract(name: &str) -> Result<Listener> {
        let address = format!("@{name}");
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| Error::io("create", &address, e))?;
        let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(|e| Error::io("bind", &address, e))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| Error::io("bind", &address, e))?;
        setsockopt(&fd, sockopt::PassCred, &true).map_err(|e| Error::io("configure", &address, e))?;
        Ok(Listener { fd, address })
    }

    /// The value for `$NOTIFY_SOCKET`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The next message and its sender's pid, if one is queued.
    pub fn try_recv(&self) -> Result<Option<(i32, String)>> {
        let mut data = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(UnixCredentials);
        let mut iov = [std::io::IoSliceMut::new(&mut data)];
        let msg = match recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT) {
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            r => r.map_err(|e| Error::io("receive on", &self.address, e))?,
        };
        let pid = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(c) => Some(c.pid()),
                _ => None,
            })
        });
        let len = msg.bytes.min(data.len());
        Ok(Some((
            pid.unwrap_or(0),
            String::from_utf8_lossy(&data[..len]).into_owned(),
        )))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
