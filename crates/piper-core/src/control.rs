//! The launcher's control socket: the one home of its address rule, and of
//! how it is claimed, found and left.
//!
//! A piper-launch listens on a stream socket in its socket directory,
//! `DIR/.piper-launch.sock` (or `@DIR/.piper-launch.sock` in the abstract
//! namespace), so that `piper-launch ctl --dir DIR` finds it from the
//! directory alone. Neither the socket nor the lock file a reclaim takes,
//! `DIR/.piper-launch.lck`, can be mistaken for a node's (`piper-NAME`,
//! `.piper-NAME.lock`). It is owned as a name is: the bind is the claim, a
//! socket file nobody answers on is stale and removed under an `flock` on
//! the lock file (so that two launchers reclaiming it at once cannot both
//! remove and bind), and dropping the [`ControlListener`] removes the file
//! it bound. Who may talk to it is the launcher's to decide, from the
//! peer's credentials ([`peer`]).
//!
//! ```
//! use piper_core::control::{self, ControlListener};
//! use piper_core::SocketDir;
//!
//! let tmp = std::env::temp_dir().join(format!("piper-doc-control-{}", std::process::id()));
//! let dir = SocketDir::open(&tmp)?;
//! let listener = ControlListener::bind(&dir)?;
//! let client = control::connect(&dir)?;
//! # drop(client);
//! drop(listener);
//! assert!(matches!(control::connect(&dir), Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT)));
//! # std::fs::remove_dir(&tmp).unwrap();
//! # Ok::<(), piper_core::Error>(())
//! ```

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect as connect_fd, getsockopt, listen, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    UnixAddr,
};
use nix::unistd::Uid;

use crate::claim::{self, Claim};
use crate::dir::{Namespace, SocketDir};
use crate::error::{Error, Result};
use crate::node::Credentials;
use crate::Liveness;

/// The control socket's file name in the socket directory.
pub const SOCKET: &str = ".piper-launch.sock";

/// The lock file's name, held while a stale control socket is reclaimed.
const LOCK: &str = ".piper-launch.lck";

/// Connections the kernel queues before the launcher accepts them.
const BACKLOG: i32 = 16;

impl SocketDir {
    /// The path the control socket is at (or, in the abstract namespace,
    /// is named after).
    pub fn control_path(&self) -> PathBuf {
        self.path().join(SOCKET)
    }

    /// The lock file a reclaim of the control socket holds.
    fn control_lock_path(&self) -> PathBuf {
        self.path().join(LOCK)
    }

    /// The control socket's address.
    pub fn control_address(&self) -> Result<UnixAddr> {
        let path = self.control_path();
        let addr = match self.namespace() {
            Namespace::Filesystem => UnixAddr::new(&path),
            Namespace::Abstract => UnixAddr::new_abstract(path.as_os_str().as_bytes()),
        };
        addr.map_err(|e| Error::io("build the address of", self.display_control(), e))
    }

    /// Removes the control socket (and its lock file) that a launcher
    /// killed with SIGKILL left behind, if no live process owns it: a node
    /// whose launcher died calls this as it reclaims its own name, so a
    /// killed ring leaves nothing. Returns whether a socket file was
    /// removed.
    pub fn reclaim_control(&self) -> Result<bool> {
        if self.namespace() == Namespace::Abstract {
            return Ok(false);
        }
        // Someone else is reclaiming it: theirs to do.
        let in_use = || Error::ControlInUse {
            address: self.display_control(),
            pid: None,
        };
        // Dropping the claim removes the lock file, on every path out of here.
        let _claim = match Claim::acquire_at(self.control_lock_path(), in_use, |lock, e| {
            Error::io("open lock file", lock.display(), e)
        }) {
            Ok(claim) => claim,
            Err(Error::ControlInUse { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(self.remove_stale_control()?.unwrap_or(false))
    }

    /// With the reclaim's lock held: removes the control socket file if it
    /// is stale and ours to remove, and says whether it removed one
    /// (`Some(false)`: there is none). `None`: something else is there, a
    /// live socket, or another user's in a sticky directory.
    fn remove_stale_control(&self) -> Result<Option<bool>> {
        let path = self.control_path();
        match claim::probe_path_as(&path, SockType::Stream)? {
            Liveness::Missing => Ok(Some(false)),
            Liveness::Stale if !self.is_sticky() || owned_by_me(&path) => {
                claim::removed(&path, std::fs::remove_file(&path)).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The control socket's address as people read it: its path, or
    /// `@path` for an abstract one.
    pub fn display_control(&self) -> String {
        match self.namespace() {
            Namespace::Filesystem => self.control_path().display().to_string(),
            Namespace::Abstract => format!("@{}", self.control_path().display()),
        }
    }
}

/// A bound, listening control socket (non-blocking, close-on-exec). Its
/// file, if any, goes when it is dropped.
#[derive(Debug)]
pub struct ControlListener {
    fd: OwnedFd,
    /// The socket file this listener bound, with its device and inode: only
    /// that file is removed, never one that replaced it.
    file: Option<(PathBuf, (u64, u64))>,
}

impl ControlListener {
    /// Binds the control socket of `dir` and listens on it, mode 0600. A
    /// control socket that another live process owns is
    /// [`Error::ControlInUse`]; a stale one (its launcher died) is removed
    /// first, as a node's stale socket is.
    pub fn bind(dir: &SocketDir) -> Result<ControlListener> {
        let addr = dir.control_address()?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| Error::io("create", "a control socket", e))?;
        let in_use = || Error::ControlInUse {
            address: dir.display_control(),
            pid: dir.owner_of(dir.display_control()),
        };
        let mut listener = ControlListener { fd, file: None };
        let raw = listener.fd.as_raw_fd();
        match (dir.namespace(), bind(raw, &addr)) {
            (_, Ok(())) => {}
            // Exclusive and gone with its socket: nothing to reclaim.
            (Namespace::Abstract, Err(Errno::EADDRINUSE)) => return Err(in_use()),
            (Namespace::Filesystem, Err(Errno::EADDRINUSE)) => {
                let path = dir.control_path();
                let _claim = Claim::acquire_at(dir.control_lock_path(), in_use, |lock, e| {
                    Error::io("open lock file", lock.display(), e)
                })?;
                match dir.remove_stale_control()? {
                    Some(true) => log::info!("removed stale control socket {}", path.display()),
                    Some(false) => {}
                    None => return Err(in_use()),
                }
                match bind(raw, &addr) {
                    Err(Errno::EADDRINUSE) => return Err(in_use()),
                    r => r.map_err(|e| Error::io("bind", path.display(), e))?,
                }
            }
            (_, Err(e)) => return Err(Error::io("bind", dir.display_control(), e)),
        }
        if dir.namespace() == Namespace::Filesystem {
            let path = dir.control_path();
            let meta = std::fs::symlink_metadata(&path);
            let id = meta.map(|m| (m.dev(), m.ino()));
            let id = id.map_err(|e| Error::io("inspect", path.display(), e))?;
            listener.file = Some((path.clone(), id));
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| Error::io("chmod", path.display(), e))?;
        }
        listen(&listener.fd, Backlog::new(BACKLOG).expect("a small backlog"))
            .map_err(|e| Error::io("listen on", dir.display_control(), e))?;
        log::debug!("control socket at {}", dir.display_control());
        Ok(listener)
    }
}

impl AsFd for ControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for ControlListener {
    /// Removes the socket file it bound, if it is still that file.
    fn drop(&mut self) {
        if let Some((path, id)) = &self.file {
            let now = std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()));
            if now.is_ok_and(|now| now == *id) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn owned_by_me(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.uid() == Uid::effective().as_raw())
}

/// Connects to the control socket of `dir` (a blocking, close-on-exec
/// stream). No launcher there is `ENOENT` (no socket file) or
/// `ECONNREFUSED` (a stale one, or no abstract listener); a socket we may
/// not reach is `EACCES`: see [`Error::raw_os_error`].
pub fn connect(dir: &SocketDir) -> Result<OwnedFd> {
    let addr = dir.control_address()?;
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::io("create", "a socket", e))?;
    connect_fd(fd.as_raw_fd(), &addr).map_err(|e| Error::io("connect to", dir.display_control(), e))?;
    Ok(fd)
}

/// The credentials of the process at the other end of a connected Unix
/// stream socket (`SO_PEERCRED`, as the kernel took them at `connect`).
pub fn peer(fd: impl AsFd) -> Option<Credentials> {
    let creds = getsockopt(&fd, sockopt::PeerCredentials).ok()?;
    Some(Credentials {
        pid: creds.pid(),
        uid: creds.uid(),
        gid: creds.gid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Temp(PathBuf);

    impl Temp {
        fn new(tag: &str) -> Temp {
            let path = std::env::temp_dir().join(format!("piper-control-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Temp(path)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn one_listener_per_directory_and_a_stale_one_is_reclaimed() {
        let t = Temp::new("claim");
        let dir = SocketDir::open(&t.0).unwrap();
        let first = ControlListener::bind(&dir).unwrap();
        let mode = std::fs::symlink_metadata(dir.control_path()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        match ControlListener::bind(&dir) {
            Err(Error::ControlInUse { pid, .. }) => assert_eq!(pid, Some(std::process::id() as i32)),
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join(LOCK).exists(), "a live socket needs no lock file");
        let client = connect(&dir).unwrap();
        let creds = peer(&client).unwrap();
        assert_eq!(creds.uid, Uid::effective().as_raw());
        drop(first);
        assert!(!dir.control_path().exists());
        // A socket file left by a launcher killed with SIGKILL: nobody
        // answers on it, and the next launcher takes its place.
        drop(std::os::unix::net::UnixListener::bind(dir.control_path()).unwrap());
        assert_eq!(connect(&dir).unwrap_err().raw_os_error(), Some(nix::libc::ECONNREFUSED));
        let again = ControlListener::bind(&dir).unwrap();
        drop(connect(&dir).unwrap());
        assert!(!dir.reclaim_control().unwrap(), "a live one is never reclaimed");
        assert!(dir.control_path().exists());
        drop(again);
        // What a node whose launcher was killed does.
        drop(std::os::unix::net::UnixListener::bind(dir.control_path()).unwrap());
        assert!(dir.reclaim_control().unwrap());
        assert!(!dir.reclaim_control().unwrap(), "nothing left");
        assert_eq!(
            std::fs::read_dir(&t.0).unwrap().count(),
            0,
            "no socket and no lock file left"
        );
    }

    #[test]
    fn an_abstract_listener_is_exclusive_and_leaves_no_file() {
        let t = Temp::new("abstract");
        let dir = SocketDir::open_abstract(&t.0).unwrap();
        let listener = ControlListener::bind(&dir).unwrap();
        assert!(matches!(
            ControlListener::bind(&dir),
            Err(Error::ControlInUse { pid: Some(_), .. })
        ));
        drop(connect(&dir).unwrap());
        assert!(!t.0.exists());
        drop(listener);
        assert_eq!(connect(&dir).unwrap_err().raw_os_error(), Some(nix::libc::ECONNREFUSED));
    }

    #[test]
    fn its_names_are_no_node_s() {
        // A node's socket starts `piper-`, its lock `.piper-` and ends `.lock`.
        assert!(!SOCKET.starts_with("piper-") && !SOCKET.ends_with(".lock"));
        assert!(!LOCK.starts_with("piper-") && !LOCK.ends_with(".lock"));
    }
}
