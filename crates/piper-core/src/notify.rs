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
/// Three ways to send, by how much a message matters: [`Notifier::try_notify`]
/// never waits (a report the next one replaces, `STATUS=`);
/// [`Notifier::notify`] waits up to a second for room (`WATCHDOG=1`, the
/// last words); [`Notifier::notify_until`] keeps trying for as long as the
/// caller can wait and no stop comes (`READY=1`, which a manager waits for).
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
        Notifier::from_value(std::env::var(crate::env::NOTIFY_SOCKET).ok().as_deref())
    }

    /// [`Notifier::from_env`]'s rule: unset or empty means no manager.
    fn from_value(socket: Option<&str>) -> Result<Option<Notifier>> {
        match socket {
            Some(socket) if !socket.is_empty() => Notifier::new(socket).map(Some),
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
    /// `signals` ends the wait early. Returns whether it was delivered.
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
    watchdog_from(
        std::env::var(crate::env::WATCHDOG_PID).ok().as_deref(),
        std::env::var(crate::env::WATCHDOG_USEC).ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`]'s rule, for process `me`: no interval unless the
/// pid, when given, is `me`, and the microseconds are a positive number.
fn watchdog_from(pid: Option<&str>, usec: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let usec: u64 = usec?.parse().ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_ours_only_when_its_pid_is_ours_and_its_interval_positive() {
        let me = 4242;
        let every = |pid, usec| watchdog_from(pid, usec, me);
        assert_eq!(every(None, Some("2000000")), Some(Duration::from_secs(2)));
        assert_eq!(every(Some("4242"), Some("500")), Some(Duration::from_micros(500)));
        assert_eq!(every(Some("4243"), Some("500")), None, "another process's watchdog");
        assert_eq!(every(Some("x"), Some("500")), None);
        assert_eq!(every(Some("4242"), Some("0")), None, "zero means off");
        assert_eq!(every(Some("4242"), None), None);
        assert_eq!(every(None, Some("-1")), None);
        assert_eq!(every(None, Some("")), None);
    }

    #[test]
    #[ignore = "run by the_environment_names_the_manager_and_the_watchdog, in a child"]
    fn child_reads_the_environment() {
        if std::env::var_os("PIPER_UNIT_CHILD").is_none() {
            return;
        }
        let n = Notifier::from_env().unwrap().expect("NOTIFY_SOCKET is set");
        assert_eq!(n.socket, "@piper-unit-env");
        assert_eq!(watchdog_interval(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn the_environment_names_the_manager_and_the_watchdog() {
        let status = crate::signals::tests::in_child(
            "notify::tests::child_reads_the_environment",
            &[("NOTIFY_SOCKET", "@piper-unit-env"), ("WATCHDOG_USEC", "1500000")],
        );
        assert!(status.success(), "{status:?}");
    }

    #[test]
    fn an_unset_or_empty_notify_socket_means_no_manager() {
        assert!(Notifier::from_value(None).unwrap().is_none());
        assert!(Notifier::from_value(Some("")).unwrap().is_none());
        assert!(Notifier::from_value(Some("relative/path")).is_err());
        let n = Notifier::from_value(Some("@piper-unit-test"))
            .unwrap()
            .expect("a notifier");
        assert_eq!(n.socket, "@piper-unit-test");
    }

    #[test]
    fn messages_reach_the_listener_with_the_senders_pid() {
        let listener = Listener::bind_abstract(&format!("piper-unit/{}", std::process::id())).unwrap();
        assert!(listener.try_recv().unwrap().is_none());
        let cloexec = |fd: &OwnedFd| {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        };
        assert!(cloexec(&listener.fd), "a manager's socket is not for its children");
        let n = Notifier::new(listener.address()).unwrap();
        assert!(cloexec(&n.fd));
        n.notify("READY=1").unwrap();
        assert!(n.try_notify("STATUS=x").unwrap());
        let me = std::process::id() as i32;
        assert_eq!(listener.try_recv().unwrap(), Some((me, "READY=1".to_string())));
        assert_eq!(listener.try_recv().unwrap(), Some((me, "STATUS=x".to_string())));
        assert!(listener.try_recv().unwrap().is_none());
    }

    #[test]
    fn a_full_manager_queue_is_reported_not_waited_on() {
        let listener = Listener::bind_abstract(&format!("piper-unit-full/{}", std::process::id())).unwrap();
        let n = Notifier::new(listener.address()).unwrap();
        // The queue holds net.unix.max_dgram_qlen datagrams; then try_notify
        // says no at once, and notify gives up after its send timeout.
        let mut sent = 0;
        while n.try_notify("STATUS=fill").unwrap() {
            sent += 1;
            assert!(sent < 100_000, "the queue never filled");
        }
        assert!(sent >= 1);
        // try_notify never waits, however long a send may block.
        crate::node::set_send_timeout(&n.fd, Duration::from_secs(60)).unwrap();
        let start = std::time::Instant::now();
        assert!(!n.try_notify("STATUS=more").unwrap());
        assert!(start.elapsed() < Duration::from_secs(30), "try_notify waited");
        // notify waits out its send timeout, then says why it failed.
        crate::node::set_send_timeout(&n.fd, Duration::from_millis(100)).unwrap();
        let start = std::time::Instant::now();
        let e = n.notify("STOPPING=1").unwrap_err();
        assert!(e.to_string().contains("notify"), "{e}");
        assert!(start.elapsed() >= Duration::from_millis(90), "{:?}", start.elapsed());
        crate::node::set_send_timeout(&n.fd, Duration::from_secs(1)).unwrap();
        let signals = crate::Signals::new().unwrap();
        // Without a stop, notify_until keeps trying for its whole patience
        // (each try waits up to the 1 s send timeout).
        let start = std::time::Instant::now();
        assert!(!n
            .notify_until("READY=1", Duration::from_millis(2500), &signals)
            .unwrap());
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(2400) && waited < Duration::from_secs(20),
            "{waited:?}"
        );
        // A stop ends the wait at the next try, not after the patience.
        signals.trigger().fire();
        let start = std::time::Instant::now();
        assert!(!n.notify_until("READY=1", Duration::from_secs(60), &signals).unwrap());
        assert!(start.elapsed() < Duration::from_secs(30), "the stop was not seen");
        // Once the manager reads, a message goes through again.
        while listener.try_recv().unwrap().is_some() {}
        n.notify("STOPPING=1").unwrap();
        assert!(n
            .notify_until("READY=1", Duration::from_secs(5), &crate::Signals::new().unwrap())
            .unwrap());
    }
}
