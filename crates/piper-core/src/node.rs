//! A node: one bound `AF_UNIX SOCK_DGRAM` socket under a name.
//!
//! [`Node::bind`] binds `DIR/piper-NAME` (reclaiming a stale socket file
//! there, under a claim on the name) and removes it again on drop. [`Node::adopt`] takes a
//! socket that systemd bound instead, and leaves its file to systemd.
//! Sends go out from the node's own socket, so a piper receiver learns who
//! sent; every datagram received carries its sender's credentials
//! (`SO_PASSCRED`), unless the node relies on its socket file's permissions
//! instead ([`Node::trust_file_permissions`]).

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    bind, getsockname, getsockopt, recvmsg, sendto, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr, UnixCredentials,
};
use nix::sys::time::TimeVal;

use crate::claim::{self, Claim};
use crate::dir::{Namespace, SocketDir};
use crate::error::{Error, Result};
use crate::name::Name;
use crate::trust::Policy;

/// The largest datagram the kernel takes by default: `net.core.wmem_default`
/// (212992 bytes) is the sender's `SO_SNDBUF`, which bounds one datagram.
/// A receive buffer of this size holds every datagram a default sender can
/// send; a larger one (a sender that raised its buffer) is reported as
/// [`Error::Truncated`].
pub const MAX_DATAGRAM: usize = 212_992;

/// How long a send waits for a full peer queue before giving up with
/// [`Error::WouldBlock`], unless [`Node::set_send_timeout`] says otherwise.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_millis(250);

/// A bound node.
///
/// ```
/// use piper_core::{Name, Node, RecvBuf, SocketDir};
///
/// let tmp = std::env::temp_dir().join(format!("piper-doc-node-{}", std::process::id()));
/// let dir = SocketDir::open(&tmp).unwrap();
/// let ping = Node::bind(&dir, Name::new("ping").unwrap()).unwrap();
/// let pong = Node::bind(&dir, Name::new("pong").unwrap()).unwrap();
///
/// ping.send_to(pong.name(), b"ping").unwrap();
/// let mut buf = RecvBuf::new();
/// let got = pong.recv(&mut buf).unwrap().expect("a datagram");
/// assert_eq!(got.payload, b"ping");
/// assert_eq!(got.from().as_ref(), Some(ping.name()));
///
/// let path = dir.socket_path(ping.name()).unwrap();
/// drop(ping);
/// assert!(!path.exists());
/// # drop(pong); std::fs::remove_dir(&tmp).unwrap();
/// ```
#[derive(Debug)]
pub struct Node {
    name: Name,
    dir: SocketDir,
    fd: OwnedFd,
    /// The socket file this node created and must remove, with its identity,
    /// so that a file someone else has since bound is never removed.
    file: Option<(PathBuf, (u64, u64))>,
    /// Bound by someone else (socket activation): its queue outlives us.
    adopted: bool,
    /// Set while the socket's file lets only one user and root send to it,
    /// and the node relies on that instead of asking the kernel for every
    /// sender's credentials (see [`Node::trust_file_permissions`]).
    owner_only: OwnerOnly,
}

/// `Some(uid)` or `None`, changed through a shared reference: a node's
/// receive loop holds it as `&Node`, and rechecks the file from there.
#[derive(Debug, Default)]
struct OwnerOnly(std::sync::atomic::AtomicU64);

impl OwnerOnly {
    fn get(&self) -> Option<u32> {
        let v = self.0.load(std::sync::atomic::Ordering::Relaxed);
        v.checked_sub(1).map(|uid| uid as u32)
    }

    fn set(&self, uid: Option<u32>) {
        let v = uid.map_or(0, |uid| u64::from(uid) + 1);
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A resolved destination: a name and its socket address, computed once.
#[derive(Clone, Debug)]
pub struct Peer {
    name: Name,
    addr: UnixAddr,
}

impl Peer {
    /// Resolves `name` in `dir`, checking that its address fits. The same
    /// as [`Node::peer`], for a sender that is not a node.
    pub fn new(dir: &SocketDir, name: &Name) -> Result<Peer> {
        Ok(Peer {
            name: name.clone(),
            addr: dir.address(name)?,
        })
    }

    /// The peer's name.
    pub fn name(&self) -> &Name {
        &self.name
    }
}

/// Who sent a datagram, as the kernel vouches (`SCM_CREDENTIALS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The sender's process id.
    pub pid: i32,
    /// The sender's user id.
    pub uid: u32,
    /// The sender's group id.
    pub gid: u32,
}

/// One received datagram.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The bytes.
    pub payload: &'a [u8],
    /// The sender's credentials; `None` when the datagram carries none
    /// (it was queued before `SO_PASSCRED` was set), which the kernel
    /// reports as pid 0. Whether to trust them is [`Datagram::trusted`]'s.
    pub creds: Option<Credentials>,
    /// `Some(uid)` if the socket's file admits only `uid` and root, and the
    /// node took no credentials for that reason.
    pub(crate) owner_only: Option<u32>,
    sender: Option<UnixAddr>,
    dir: &'a SocketDir,
}

impl Datagram<'_> {
    /// The sender's node name, if it sent from a piper node socket of this
    /// directory; `None` for unbound senders such as the seed's Python nodes,
    /// and for a datagram received into a [`RecvBuf::without_sender`].
    /// Worked out on demand: the hot path never needs it.
    pub fn from(&self) -> Option<Name> {
        self.sender.as_ref().and_then(|addr| self.dir.name_of(addr))
    }
}

/// Reusable receive buffers: [`MAX_DATAGRAM`] bytes of payload plus room for
/// the credentials. Allocate one and reuse it for every receive.
#[derive(Debug)]
pub struct RecvBuf {
    data: Vec<u8>,
    cmsg: Vec<u8>,
    /// Whether receives ask for the sender's address.
    sender: bool,
}

impl RecvBuf {
    /// A buffer for the largest default datagram.
    pub fn new() -> RecvBuf {
        RecvBuf {
            data: vec![0; MAX_DATAGRAM],
            cmsg: nix::cmsg_space!(UnixCredentials),
            sender: true,
        }
    }

    /// A buffer whose datagrams do not say which socket sent them
    /// ([`Datagram::from`] is `None`), for a receiver that never asks: the
    /// kernel then copies no address, which in a ring of many cache-cold
    /// processes is a measurable part of a hop.
    pub fn without_sender() -> RecvBuf {
        RecvBuf {
            sender: false,
            ..RecvBuf::new()
        }
    }
}

impl Default for RecvBuf {
    fn default() -> Self {
        RecvBuf::new()
    }
}

impl Node {
    /// Claims `name` in `dir` and binds its socket.
    ///
    /// Fails with [`Error::NameInUse`] if a live process owns the name. A
    /// socket file left by a dead process is reclaimed.
    pub fn bind(dir: &SocketDir, name: Name) -> Result<Node> {
        let addr = dir.address(&name)?;
        let fd = new_socket()?;
        let mut node = Node {
            name,
            dir: dir.clone(),
            fd,
            file: None,
            adopted: false,
            owner_only: OwnerOnly::default(),
        };
        match dir.namespace() {
            // The kernel makes an abstract bind atomic and frees the address
            // when the socket closes: there is nothing to lock or clean up.
            Namespace::Abstract => match bind(node.fd.as_raw_fd(), &addr) {
                Err(Errno::EADDRINUSE) => return Err(node.in_use()),
                r => r.map_err(|e| bind_error(dir, &dir.display_address(&node.name), e))?,
            },
            Namespace::Filesystem => {
                let path = dir.socket_path(&node.name)?;
                let bound = match bind(node.fd.as_raw_fd(), &addr) {
                    // Nothing was there: the bind itself is the claim.
                    Ok(()) => Ok(()),
                    Err(Errno::EADDRINUSE) => node.bind_over_stale(&path, &addr),
                    Err(e) => Err(bind_error(dir, &path.display(), e)),
                };
                bound?;
                let id = match std::fs::symlink_metadata(&path) {
                    Ok(meta) => (meta.dev(), meta.ino()),
                    Err(e) => {
                        // Just bound, so ours: not left behind.
                        let _ = std::fs::remove_file(&path);
                        return Err(Error::io("inspect", path.display(), e));
                    }
                };
                // From here on the node's drop removes the file it bound.
                node.file = Some((path.clone(), id));
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io("chmod", path.display(), e))?;
            }
        }
        log::debug!("bound {}", dir.display_address(&node.name));
        Ok(node)
    }

    /// Binds over a socket file already at `path`, if it is stale: under a
    /// claim on the name (see [`claim`]), so that two processes reclaiming
    /// one name at once cannot both remove and bind. The claim ends once the
    /// bind has succeeded or failed: from then on the bound socket answers
    /// probes, and a live socket is never reclaimed.
    fn bind_over_stale(&self, path: &std::path::Path, addr: &UnixAddr) -> Result<()> {
        let dir = &self.dir;
        let _claim = Claim::acquire(dir, &self.name)?;
        claim::clear_stale(dir, &self.name, path).map_err(|e| match e {
            Error::NameInUse { .. } => self.in_use(),
            e => e,
        })?;
        match bind(self.fd.as_raw_fd(), addr) {
            // Someone bound it since the file was cleared: it is theirs.
            Err(Errno::EADDRINUSE) => Err(self.in_use()),
            r => r.map_err(|e| bind_error(dir, &path.display(), e)),
        }
    }

    /// The name is in use, by whoever holds its socket (see
    /// [`SocketDir::owner_pid`]).
    fn in_use(&self) -> Error {
        let pid = self.dir.owner_pid(&self.name);
        Error::NameInUse {
            name: self.name.clone(),
            address: self.dir.display_address(&self.name),
            pid,
            launcher: pid.is_some_and(claim::is_launcher),
        }
    }

    /// Adopts a socket bound by someone else, such as systemd's
    /// `ListenDatagram=`, as node `name`. The socket must be `AF_UNIX
    /// SOCK_DGRAM`; its file, if any, is left for its binder to remove.
    pub fn adopt(fd: OwnedFd, dir: &SocketDir, name: Name) -> Result<Node> {
        let raw = fd.as_raw_fd();
        let kind = getsockopt(&fd, sockopt::SockType).map_err(|e| Error::Activation {
            reason: format!("fd {raw} is not a socket ({})", e.desc()),
        })?;
        let local = getsockname::<SockaddrStorage>(raw).map_err(|e| Error::io("inspect fd", raw, e))?;
        if local.family() != Some(AddressFamily::Unix) || kind != SockType::Datagram {
            let family = match local.family() {
                Some(AddressFamily::Unix) => "AF_UNIX".to_string(),
                Some(AddressFamily::Inet) => "AF_INET".to_string(),
                Some(AddressFamily::Inet6) => "AF_INET6".to_string(),
                other => format!("{other:?}"),
            };
            let kind = match kind {
                SockType::Stream => "SOCK_STREAM".to_string(),
                SockType::Datagram => "SOCK_DGRAM".to_string(),
                SockType::SeqPacket => "SOCK_SEQPACKET".to_string(),
                other => format!("{other:?}"),
            };
            return Err(Error::Activation {
                reason: format!("fd {raw} is an {family} {kind} socket, not AF_UNIX SOCK_DGRAM"),
            });
        }
        let bound_as = local.as_unix_addr().and_then(|a| dir.name_of(a));
        if bound_as.as_ref() != Some(&name) {
            log::warn!(
                "adopted fd {raw} is not bound at {}; peers may not find node '{name}'",
                dir.display_address(&name)
            );
        }
        // systemd may hand the socket over non-blocking; a node's receives
        // block (bounded by the receive timeout) and its sends are bounded by
        // the send timeout, so both want a blocking socket.
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| Error::io("inspect fd", raw, e))?;
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::io("configure fd", raw, e))?;
        configure(&fd)?;
        Ok(Node {
            name,
            dir: dir.clone(),
            fd,
            file: None,
            adopted: true,
            owner_only: OwnerOnly::default(),
        })
    }

    /// The node's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The node's socket directory.
    pub fn dir(&self) -> &SocketDir {
        &self.dir
    }

    /// Whether the socket was adopted rather than bound by this node.
    pub fn is_adopted(&self) -> bool {
        self.adopted
    }

    /// The files this node owns and removes on exit: its socket file. Empty
    /// for adopted and abstract nodes.
    pub fn owned_paths(&self) -> Vec<PathBuf> {
        self.file.iter().map(|(path, _)| path.clone()).collect()
    }

    /// Relies on the socket file's permissions instead of the kernel's
    /// credentials, where the two say the same: if `policy` trusts no one
    /// but its own user and root, and the socket is a file of that user's
    /// with no permission for anyone else (mode 0600, as a node binds it),
    /// then only that user and root can send to it: the kernel checks the
    /// file's permission on every `sendto` by path and every `connect`
    /// (unix(7)). The node then stops asking for credentials
    /// (`SO_PASSCRED` off), which spares every receive the copy of the
    /// sender's pid, uid and gid. Datagrams it takes without credentials
    /// are trusted as its own user's ([`Datagram::trusted`]).
    ///
    /// Returns whether it did. Anything else (an abstract address, a socket
    /// file of another user's or one that others may write, allowed users)
    /// keeps the credentials. The file can change while the node runs:
    /// call [`Node::recheck_file_permissions`] now and then.
    ///
    /// One difference remains: a process of another user that holds
    /// `CAP_DAC_OVERRIDE` may write any file of this user's, the socket
    /// included; credentials would refuse it, the file does not.
    pub fn trust_file_permissions(&self, policy: &Policy) -> Result<bool> {
        let owner = match policy.allow.is_empty() {
            true => self.file_owner_only()?,
            false => None,
        };
        let Some(uid) = owner.filter(|&uid| uid == policy.me) else {
            return Ok(false);
        };
        setsockopt(&self.fd, sockopt::PassCred, &false).map_err(|e| Error::io("configure", &self.name, e))?;
        self.owner_only.set(Some(uid));
        log::debug!(
            "{}: only uid {uid} and root may write its socket file: no credentials needed",
            self.name
        );
        Ok(true)
    }

    /// Checks again what [`Node::trust_file_permissions`] relied on: if the
    /// socket file now admits anyone else (its mode or owner changed, or it
    /// was replaced), the node asks for credentials again before its next
    /// receive, and takes nothing without them from then on. Returns
    /// whether the node still relies on the file.
    pub fn recheck_file_permissions(&self) -> Result<bool> {
        let Some(uid) = self.owner_only.get() else {
            return Ok(false);
        };
        if self.file_owner_only()? == Some(uid) {
            return Ok(true);
        }
        setsockopt(&self.fd, sockopt::PassCred, &true).map_err(|e| Error::io("configure", &self.name, e))?;
        self.owner_only.set(None);
        log::info!(
            "{}: its socket file now admits others: checking every sender's credentials",
            self.name
        );
        Ok(false)
    }

    /// `Some(uid)` if this node's socket is a file that only `uid` (and
    /// root) may write: owned by `uid`, no permission for group or others,
    /// and the very file the socket is bound to.
    fn file_owner_only(&self) -> Result<Option<u32>> {
        if self.dir.namespace() == Namespace::Abstract {
            return Ok(None);
        }
        let local = getsockname::<UnixAddr>(self.fd.as_raw_fd()).map_err(|e| Error::io("inspect", &self.name, e))?;
        let Some(path) = local.path() else {
            return Ok(None);
        };
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            // Gone: nobody can send by path any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("inspect", path.display(), e)),
        };
        let socket = std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type());
        // A socket file replaced since this node bound it is not this socket.
        let ours = self.file.as_ref().is_none_or(|(_, id)| *id == (meta.dev(), meta.ino()));
        let private = meta.mode() & 0o077 == 0;
        Ok((socket && ours && private).then_some(meta.uid()))
    }

    /// Resolves `name` to a destination, checking that its address fits.
    pub fn peer(&self, name: &Name) -> Result<Peer> {
        Peer::new(&self.dir, name)
    }

    /// Refuses datagrams from now on (`shutdown(SHUT_RD)`): a sender gets
    /// an error at once ([`Error::PeerGone`]) instead of queueing what
    /// nobody will read. What is queued already can still be read, so a
    /// node that stops can count exactly what it leaves unanswered.
    pub fn stop_receiving(&self) -> Result<()> {
        nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Read)
            .map_err(|e| Error::io("shut down", &self.name, e))
    }

    /// Sets how long a send waits on a full peer queue (at least 1 ms).
    pub fn set_send_timeout(&self, timeout: Duration) -> Result<()> {
        set_send_timeout(&self.fd, timeout.max(Duration::from_millis(1)))
            .map_err(|e| Error::io("configure", &self.name, e))
    }

    /// Sets how long [`Node::recv`] waits before it returns `Ok(None)`.
    /// With a timeout set, a signal also ends a blocked receive (with
    /// `Ok(None)`) instead of restarting it (signal(7)).
    /// A zero timeout would mean "forever" to the kernel; it is taken as 1 µs.
    pub fn set_recv_timeout(&self, timeout: Duration) -> Result<()> {
        let timeout = timeout.max(Duration::from_micros(1));
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &timeval(timeout))
            .map_err(|e| Error::io("configure", &self.name, e))
    }

    /// Sends `bytes` to `to` from this node's socket.
    pub fn send(&self, to: &Peer, bytes: &[u8]) -> Result<()> {
        match sendto(self.fd.as_raw_fd(), bytes, &to.addr, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => Ok(()),
            Err(e) => Err(send_error(e, &self.dir, &to.name, bytes.len())),
        }
    }

    /// Sends `bytes` to `to` only if its queue has room now: a full queue is
    /// [`Error::WouldBlock`] at once, without waiting the send timeout. For
    /// a peer that has stopped reading, so that it costs nobody else time.
    pub fn send_nowait(&self, to: &Peer, bytes: &[u8]) -> Result<()> {
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        match sendto(self.fd.as_raw_fd(), bytes, &to.addr, flags) {
            Ok(_) => Ok(()),
            Err(e) => Err(send_error(e, &self.dir, &to.name, bytes.len())),
        }
    }

    /// Resolves `to` and sends `bytes` to it; see [`Node::send`].
    pub fn send_to(&self, to: &Name, bytes: &[u8]) -> Result<()> {
        self.send(&self.peer(to)?, bytes)
    }

    /// Waits for the next datagram. Returns `Ok(None)` when the wait ended
    /// without one: the receive timeout ([`Node::set_recv_timeout`]) passed,
    /// a signal interrupted it, or the socket was made non-blocking (as a
    /// stop request does while [`Signals::interrupting`](crate::Signals::interrupting)
    /// runs).
    pub fn recv<'a>(&'a self, buf: &'a mut RecvBuf) -> Result<Option<Datagram<'a>>> {
        self.receive(buf, MsgFlags::empty())
    }

    /// Takes the next datagram if one is queued, without waiting.
    pub fn try_recv<'a>(&'a self, buf: &'a mut RecvBuf) -> Result<Option<Datagram<'a>>> {
        self.receive(buf, MsgFlags::MSG_DONTWAIT)
    }

    fn receive<'a>(&'a self, buf: &'a mut RecvBuf, flags: MsgFlags) -> Result<Option<Datagram<'a>>> {
        // MSG_TRUNC makes the kernel return the datagram's real length.
        let flags = flags | MsgFlags::MSG_TRUNC;
        let fd = self.fd.as_raw_fd();
        let owner_only = self.owner_only.get();
        let want_creds = owner_only.is_none();
        let received = match (buf.sender, want_creds) {
            // Nothing but the payload: the plainest receive there is.
            (false, false) => nix::sys::socket::recv(fd, &mut buf.data, flags).map(|len| (len, None, None)),
            _ => {
                let mut iov = [IoSliceMut::new(&mut buf.data)];
                let cmsg = want_creds.then_some(buf.cmsg.as_mut_slice());
                match buf.sender {
                    true => recvmsg::<UnixAddr>(fd, &mut iov, cmsg, flags).map(|m| (m.bytes, m.address, creds_of(&m))),
                    false => recvmsg::<()>(fd, &mut iov, cmsg, flags).map(|m| (m.bytes, None, creds_of(&m))),
                }
            }
        };
        let (len, sender, creds) = match received {
            Ok(got) => got,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(None),
            Err(e) => return Err(Error::io("receive on", &self.name, e)),
        };
        if len > buf.data.len() {
            return Err(Error::Truncated {
                len,
                max: buf.data.len(),
            });
        }
        Ok(Some(Datagram {
            payload: &buf.data[..len],
            creds,
            owner_only,
            sender,
            dir: &self.dir,
        }))
    }
}

/// The sender's credentials in a received message, if it carries any that
/// name a process: pid 0 is the kernel's "no credentials", with the
/// overflow uid.
fn creds_of<S>(msg: &nix::sys::socket::RecvMsg<'_, '_, S>) -> Option<Credentials> {
    let creds = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(c) => Some(Credentials {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        }),
        _ => None,
    });
    creds.filter(Credentials::vouched)
}

impl AsFd for Node {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((path, id)) = &self.file {
            // Only our own inode: never a file another process bound since.
            let still_ours = std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *id);
            if still_ours {
                if let Err(e) = std::fs::remove_file(path) {
                    log::warn!("cannot remove {}: {e}", path.display());
                }
            }
        }
    }
}

fn new_socket() -> Result<OwnedFd> {
    let fd = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::io("create", "a socket", e))?;
    // The file `bind` creates takes the socket's own mode (Linux), not
    // 0777 less the umask: so it is 0600 from the instant it exists, and
    // no other user can connect to it in between.
    nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::io("chmod", "a socket", e))?;
    configure(&fd)?;
    Ok(fd)
}

fn configure(fd: &OwnedFd) -> Result<()> {
    let raw = fd.as_raw_fd();
    setsockopt(fd, sockopt::PassCred, &true).map_err(|e| Error::io("set SO_PASSCRED on fd", raw, e))?;
    set_send_timeout(fd, DEFAULT_SEND_TIMEOUT).map_err(|e| Error::io("set SO_SNDTIMEO on fd", raw, e))
}

/// Bounds a blocking send. A socket with a timeout also makes a send that a
/// signal interrupts fail with EINTR instead of restarting (signal(7)).
pub(crate) fn set_send_timeout(fd: &OwnedFd, timeout: Duration) -> nix::Result<()> {
    setsockopt(fd, sockopt::SendTimeout, &timeval(timeout))
}

fn timeval(d: Duration) -> TimeVal {
    TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

/// A failed bind: a directory we may not write or that is full is an
/// unusable directory; anything else is a plain failure.
fn bind_error(dir: &SocketDir, address: &dyn std::fmt::Display, e: Errno) -> Error {
    match e {
        Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::ENOSPC | Errno::EDQUOT => {
            Error::dir(dir.path(), "bind a socket in", e.into())
        }
        e => Error::io("bind", address, e),
    }
}

/// Maps a send's errno to what it means for the peer. A refused send means
/// different things by namespace: an abstract address nobody has bound is
/// refused, and so is a path that holds something other than a socket.
fn send_error(e: Errno, dir: &SocketDir, peer: &Name, len: usize) -> Error {
    let peer = peer.clone();
    match e {
        Errno::ENOENT => Error::PeerNotFound { peer },
        Errno::ECONNREFUSED if dir.namespace() == Namespace::Abstract => Error::PeerNotFound { peer },
        Errno::ECONNREFUSED => match dir.socket_path(&peer).map(|p| (std::fs::symlink_metadata(&p), p)) {
            Ok((Ok(meta), path)) if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
                Error::PeerNotSocket { peer, path }
            }
            Ok((Err(_), _)) => Error::PeerNotFound { peer },
            _ => Error::PeerGone { peer },
        },
        Errno::EPIPE => Error::PeerGone { peer },
        Errno::EMSGSIZE | Errno::ENOBUFS => Error::TooLarge { peer, len },
        Errno::EAGAIN => Error::WouldBlock { peer },
        e => Error::io("send to", peer, e),
    }
}

/// Sends `bytes` to node `to` from a fresh unbound socket, the way the seed's
/// `_send` does: the receiver sees no sender name. The launcher starts a
/// chain with this. A full queue is waited on for [`DEFAULT_SEND_TIMEOUT`].
pub fn send_unbound(dir: &SocketDir, to: &Name, bytes: &[u8]) -> Result<()> {
    unbound(dir, to, bytes, MsgFlags::MSG_NOSIGNAL)
}

/// [`send_unbound`] without waiting: a full queue is [`Error::WouldBlock`]
/// at once, as for [`Node::send_nowait`].
pub fn send_unbound_nowait(dir: &SocketDir, to: &Name, bytes: &[u8]) -> Result<()> {
    unbound(dir, to, bytes, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT)
}

fn unbound(dir: &SocketDir, to: &Name, bytes: &[u8], flags: MsgFlags) -> Result<()> {
    let addr = dir.address(to)?;
    let fd = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::io("create", "a socket", e))?;
    set_send_timeout(&fd, DEFAULT_SEND_TIMEOUT).map_err(|e| Error::io("configure", "a socket", e))?;
    sendto(fd.as_raw_fd(), bytes, &addr, flags)
        .map(drop)
        .map_err(|e| send_error(e, dir, to, bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Instant;

    /// A directory of the test's own, removed (with whatever is left) on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> (TempDir, SocketDir) {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = std::env::temp_dir().join(format!("piper-node-unit-{}-{n}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            let dir = SocketDir::open(&path).unwrap();
            (TempDir(path), dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
        nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn a_datagram_of_exactly_the_largest_size_arrives_whole() {
        let (_t, dir) = TempDir::new("largest");
        let a = Node::bind(&dir, name("a")).unwrap();
        let b = Node::bind(&dir, name("b")).unwrap();
        // A sender (and receiver) with buffers raised past the defaults,
        // within wmem_max and rmem_max, can send more than MAX_DATAGRAM.
        let raised = 4 * MAX_DATAGRAM;
        let (wmax, rmax) = (sysctl("net/core/wmem_max"), sysctl("net/core/rmem_max"));
        if wmax < raised || rmax < raised {
            assert!(
                std::env::var_os("PIPER_TESTS_REQUIRE_ALL").is_none(),
                "buffers too small here"
            );
            // Straight to stderr: the harness captures only the print macros.
            let line = format!("SKIPPED the exact-size datagram: wmem_max {wmax} or rmem_max {rmax} below {raised}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return;
        }
        setsockopt(&a.fd, sockopt::SndBuf, &raised).unwrap();
        setsockopt(&b.fd, sockopt::RcvBuf, &raised).unwrap();
        let mut buf = RecvBuf::new();
        a.send_to(b.name(), &vec![7u8; MAX_DATAGRAM]).unwrap();
        let got = b.recv(&mut buf).unwrap().unwrap();
        assert_eq!(got.payload.len(), MAX_DATAGRAM);
        assert_eq!(got.from(), Some(name("a")));
        assert_eq!(got.creds.map(|c| c.pid), Some(std::process::id() as i32));
        a.send_to(b.name(), &vec![7u8; MAX_DATAGRAM + 1]).unwrap();
        match b.recv(&mut buf) {
            Err(Error::Truncated { len, max }) => assert_eq!((len, max), (MAX_DATAGRAM + 1, MAX_DATAGRAM)),
            other => panic!("{other:?}"),
        }
    }

    fn sysctl(key: &str) -> usize {
        let text = std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_default();
        text.trim().parse().unwrap_or(0)
    }

    #[test]
    fn a_bound_node_owns_its_files_and_removes_only_its_own() {
        let (_t, dir) = TempDir::new("files");
        let a = Node::bind(&dir, name("a")).unwrap();
        assert!(!a.is_adopted());
        assert_eq!(a.name(), &name("a"));
        assert_eq!(a.dir().path(), dir.path());
        let sock = dir.socket_path(&name("a")).unwrap();
        assert_eq!(a.owned_paths(), vec![sock.clone()]);
        // A free name costs its socket file and nothing else.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(cloexec(a.as_fd()));
        // Someone replaced the socket file: it is not ours to remove.
        std::fs::remove_file(&sock).unwrap();
        std::fs::write(&sock, "not ours").unwrap();
        drop(a);
        assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not ours");
        std::fs::remove_file(&sock).unwrap();
        let b = Node::bind(&dir, name("b")).unwrap();
        let sock_b = dir.socket_path(&name("b")).unwrap();
        drop(b);
        assert!(!sock_b.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_adopted_socket_is_left_to_its_binder() {
        let (_t, dir) = TempDir::new("adopt");
        let path = dir.socket_path(&name("x")).unwrap();
        let fd = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_NONBLOCK, None).unwrap();
        bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        let x = Node::adopt(fd, &dir, name("x")).unwrap();
        assert!(x.is_adopted());
        assert!(x.owned_paths().is_empty());
        let flags = OFlag::from_bits_truncate(fcntl(x.as_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(!flags.contains(OFlag::O_NONBLOCK), "made blocking");
        let y = Node::bind(&dir, name("y")).unwrap();
        y.send_to(&name("x"), b"hi").unwrap();
        let mut buf = RecvBuf::new();
        let got = x.recv(&mut buf).unwrap().unwrap();
        assert_eq!((got.payload, got.from()), (&b"hi"[..], Some(name("y"))));
        drop(x);
        assert!(path.exists(), "an adopted socket's file stays");
        let stream = socket(AddressFamily::Unix, SockType::Stream, SockFlag::empty(), None).unwrap();
        let e = Node::adopt(stream, &dir, name("s")).unwrap_err();
        assert!(e.to_string().contains("SOCK_STREAM"), "{e}");
    }

    #[test]
    fn a_full_peer_costs_a_bounded_wait_or_none() {
        let (_t, dir) = TempDir::new("full");
        let a = Node::bind(&dir, name("a")).unwrap();
        let b = Node::bind(&dir, name("b")).unwrap();
        let to = a.peer(b.name()).unwrap();
        assert_eq!(to.name(), &name("b"));
        let mut sent = 0;
        loop {
            match a.send_nowait(&to, b"x") {
                Ok(()) => sent += 1,
                Err(Error::WouldBlock { peer }) => {
                    assert_eq!(peer, name("b"));
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            assert!(sent < 100_000, "the queue never filled");
        }
        // send_nowait never waits, whatever the send timeout says.
        a.set_send_timeout(Duration::from_secs(30)).unwrap();
        let start = Instant::now();
        assert!(matches!(a.send_nowait(&to, b"x"), Err(Error::WouldBlock { .. })));
        assert!(start.elapsed() < Duration::from_secs(20), "send_nowait waited");
        // A blocking send waits out the send timeout (longer than the
        // default, so that the setting shows), then gives up.
        a.set_send_timeout(Duration::from_millis(600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let start = Instant::now();
                let r = a.send(&to, b"x");
                tx.send((r, start.elapsed())).unwrap();
            });
            let (r, waited) = rx.recv_timeout(Duration::from_secs(10)).expect("the send must give up");
            assert!(matches!(r, Err(Error::WouldBlock { .. })), "{r:?}");
            assert!(waited >= Duration::from_millis(500), "{waited:?}");
        });
        // Unbound senders too, without waiting: twenty tries take far less
        // than twenty send timeouts.
        let start = Instant::now();
        for _ in 0..20 {
            let r = send_unbound_nowait(&dir, b.name(), b"x");
            assert!(matches!(r, Err(Error::WouldBlock { .. })), "{r:?}");
        }
        assert!(
            start.elapsed() < DEFAULT_SEND_TIMEOUT * 10,
            "send_unbound_nowait waited"
        );
    }

    #[test]
    fn the_default_send_timeout_bounds_a_send_to_a_full_peer() {
        let (_t, dir) = TempDir::new("default-timeout");
        let a = Node::bind(&dir, name("a")).unwrap();
        let b = Node::bind(&dir, name("b")).unwrap();
        let to = a.peer(b.name()).unwrap();
        while a.send_nowait(&to, b"x").is_ok() {}
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| tx.send(a.send(&to, b"x")).unwrap());
            let r = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the default timeout must end the send");
            assert!(matches!(r, Err(Error::WouldBlock { .. })), "{r:?}");
        });
    }

    #[test]
    fn a_receive_timeout_ends_a_wait_with_none() {
        let (_t, dir) = TempDir::new("timeout");
        let a = Node::bind(&dir, name("a")).unwrap();
        let mut buf = RecvBuf::new();
        assert!(a.try_recv(&mut buf).unwrap().is_none());
        send_unbound(&dir, a.name(), b"queued").unwrap();
        assert_eq!(
            a.try_recv(&mut buf).unwrap().map(|d| d.payload.to_vec()),
            Some(b"queued".to_vec())
        );
        a.set_recv_timeout(Duration::from_millis(20)).unwrap();
        let start = Instant::now();
        assert!(a.recv(&mut buf).unwrap().is_none());
        assert!(start.elapsed() >= Duration::from_millis(15));
        // Zero means "forever" to the kernel: taken as 1 µs.
        a.set_recv_timeout(Duration::ZERO).unwrap();
        assert!(a.recv(&mut buf).unwrap().is_none());
    }

    #[test]
    fn each_failed_send_says_what_the_peer_is() {
        let (_t, dir) = TempDir::new("errors");
        let a = Node::bind(&dir, name("a")).unwrap();
        assert!(matches!(
            a.send_to(&name("nobody"), b"x"),
            Err(Error::PeerNotFound { .. })
        ));
        std::fs::write(dir.socket_path(&name("file")).unwrap(), "").unwrap();
        assert!(matches!(
            a.send_to(&name("file"), b"x"),
            Err(Error::PeerNotSocket { .. })
        ));
        let stale = dir.socket_path(&name("stale")).unwrap();
        drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
        assert!(matches!(a.send_to(&name("stale"), b"x"), Err(Error::PeerGone { .. })));
        let b = Node::bind(&dir, name("b")).unwrap();
        let huge = vec![0u8; 8 * MAX_DATAGRAM];
        assert!(matches!(a.send_to(b.name(), &huge), Err(Error::TooLarge { .. })));
        assert!(matches!(
            send_unbound(&dir, &name("nobody"), b"x"),
            Err(Error::PeerNotFound { .. })
        ));
        send_unbound(&dir, b.name(), b"anon").unwrap();
        let mut buf = RecvBuf::new();
        let got = b.recv(&mut buf).unwrap().unwrap();
        assert_eq!((got.payload, got.from()), (&b"anon"[..], None));
    }

    #[test]
    fn a_name_is_bound_once_and_a_stale_socket_is_reclaimed() {
        let (_t, dir) = TempDir::new("once");
        let a = Node::bind(&dir, name("a")).unwrap();
        match Node::bind(&dir, name("a")) {
            Err(Error::NameInUse { pid, .. }) => assert_eq!(pid, Some(std::process::id() as i32)),
            other => panic!("{other:?}"),
        }
        drop(a);
        let stale = dir.socket_path(&name("s")).unwrap();
        drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
        let s = Node::bind(&dir, name("s")).unwrap();
        drop(s);
        assert!(!stale.exists());
        // Bound by a process that is no piper node (a seed node): in use,
        // by the process that holds the socket.
        let seed = std::os::unix::net::UnixDatagram::bind(dir.socket_path(&name("seed")).unwrap()).unwrap();
        let me = Some(std::process::id() as i32);
        assert!(matches!(
            Node::bind(&dir, name("seed")),
            Err(Error::NameInUse { pid, launcher: false, .. }) if pid == me
        ));
        assert!(!dir.lock_path(&name("seed")).exists(), "no claim is left");
        drop(seed);
        let abs = SocketDir::open_abstract(dir.path()).unwrap();
        let x = Node::bind(&abs, name("x")).unwrap();
        assert!(matches!(
            x.send_to(&name("nobody"), b"x"),
            Err(Error::PeerNotFound { .. })
        ));
        assert!(x.owned_paths().is_empty());
        assert!(matches!(
            Node::bind(&abs, name("x")),
            Err(Error::NameInUse { pid, .. }) if pid == me
        ));
    }

    #[test]
    fn credentials_give_way_to_file_permissions_only_where_they_say_the_same() {
        let (_t, dir) = TempDir::new("perms");
        let me = Policy::new([]);
        let a = Node::bind(&dir, name("a")).unwrap();
        let b = Node::bind(&dir, name("b")).unwrap();
        // Allowed users, or a policy for another user: credentials stay.
        assert!(!b.trust_file_permissions(&Policy::new([4242])).unwrap());
        let other = Policy {
            me: me.me + 1,
            allow: vec![],
        };
        assert!(!b.trust_file_permissions(&other).unwrap());
        assert!(b.recheck_file_permissions().is_ok_and(|relied| !relied));
        // Our own file, mode 0600: only we and root may send.
        assert!(b.trust_file_permissions(&me).unwrap());
        assert!(b.recheck_file_permissions().unwrap());
        let mut buf = RecvBuf::without_sender();
        a.send_to(b.name(), b"one").unwrap();
        let got = b.recv(&mut buf).unwrap().unwrap();
        assert_eq!((got.payload, got.creds, got.from()), (&b"one"[..], None, None));
        assert!(got.trusted(&me));
        // The file's owner, judged by the policy (root is trusted by all).
        assert_eq!(got.trusted(&other), me.me == 0);
        // Opened to others: credentials again, from the next datagram on.
        let path = dir.socket_path(b.name()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622)).unwrap();
        assert!(!b.recheck_file_permissions().unwrap());
        a.send_to(b.name(), b"two").unwrap();
        let mut buf = RecvBuf::new();
        let got = b.recv(&mut buf).unwrap().unwrap();
        assert_eq!(got.creds.map(|c| c.pid), Some(std::process::id() as i32));
        assert_eq!(got.from().as_ref(), Some(a.name()));
        assert!(got.trusted(&me));
        // Never in the abstract namespace, which has no files.
        let abs = SocketDir::open_abstract(dir.path()).unwrap();
        let x = Node::bind(&abs, name("x")).unwrap();
        assert!(!x.trust_file_permissions(&me).unwrap());
    }

    #[test]
    fn a_symlink_where_the_lock_file_goes_is_never_followed() {
        let (t, dir) = TempDir::new("symlink");
        let target = t.0.with_extension("target");
        let _ = std::fs::remove_file(&target);
        std::os::unix::fs::symlink(&target, dir.lock_path(&name("a"))).unwrap();
        // A free name needs no claim: the symlink is not even looked at.
        drop(Node::bind(&dir, name("a")).unwrap());
        // A stale socket to reclaim needs one.
        drop(std::os::unix::net::UnixDatagram::bind(dir.socket_path(&name("a")).unwrap()).unwrap());
        let e = Node::bind(&dir, name("a")).unwrap_err();
        assert!(matches!(e, Error::NameTaken { .. }), "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(!target.exists(), "the symlink was followed");
    }
}
