//! Owning a name: the one home of the stale-socket rule.
//!
//! A node owns NAME for as long as it holds an exclusive `flock` on
//! `DIR/.piper-NAME.lock`. The lock is what makes binding race-free (two
//! processes binding one name at the same instant: exactly one gets the lock)
//! and what tells a live owner from a dead one: the kernel drops the lock when
//! its holder dies, even by `kill -9`.
//!
//! A socket file whose lock is free is stale only if nothing answers on it:
//! the seed's Python nodes hold no lock, so a file is probed with `connect`
//! before it is removed (`ECONNREFUSED` means nobody reads it).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::unistd::Uid;

use crate::dir::{errno_of, SocketDir};
use crate::error::{Error, Result};
use crate::name::Name;

/// A held claim on a name: the locked lock file. Dropping it releases the name.
#[derive(Debug)]
pub(crate) struct Claim {
    lock: Flock<File>,
    lock_path: PathBuf,
}

/// What a socket file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Someone reads it.
    Live,
    /// Nobody does: it is left over from a dead process.
    Stale,
    /// There is no socket file.
    Missing,
}

impl Claim {
    /// Takes the lock for `name`, or says who holds it.
    pub(crate) fn acquire(dir: &SocketDir, name: &Name) -> Result<Claim> {
        let lock_path = dir.lock_path(name);
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&lock_path)
                .map_err(|e| Error::io("open lock file", lock_path.display(), errno_of(&e)))?;
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    return Err(Error::NameInUse {
                        name: name.clone(),
                        address: dir.display_address(name),
                        pid: read_pid(&mut file),
                    })
                }
                Err((_, e)) => return Err(Error::io("lock", lock_path.display(), e)),
            };
            // The previous owner may have removed the lock file between our
            // open and our flock; a lock on an unlinked file claims nothing.
            let held = lock.metadata().map(|m| (m.dev(), m.ino())).ok();
            let now = std::fs::symlink_metadata(&lock_path).map(|m| (m.dev(), m.ino())).ok();
            if held.is_some() && held == now {
                return Ok(Claim { lock, lock_path });
            }
        }
    }

    /// Records the owner's pid in the lock file, for "name in use" messages
    /// and `--list`.
    pub(crate) fn record_pid(&mut self) -> Result<()> {
        let pid = std::process::id().to_string();
        let file: &mut File = &mut self.lock;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io("write lock file", self.lock_path.display(), errno_of(&e)))
    }

    /// Removes the lock file. Called while the lock is still held, so nobody
    /// can be between open and flock on this inode without noticing.
    pub(crate) fn release(self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// The pid of the live piper node that holds `name`'s lock, if any. Reads
/// only: an unheld or missing lock file yields `None` and stays as it is.
pub fn owner_pid(dir: &SocketDir, name: &Name) -> Option<i32> {
    let file = File::open(dir.lock_path(name)).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Err((mut file, Errno::EWOULDBLOCK)) => read_pid(&mut file),
        _ => None,
    }
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Probes the socket at `path`: live if a `connect` succeeds, stale if it is
/// refused.
pub fn probe(path: &Path) -> Result<Liveness> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Liveness::Missing),
        Err(e) => return Err(Error::io("inspect", path.display(), errno_of(&e))),
    };
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Err(Error::io("use", path.display(), Errno::ENOTSOCK));
    }
    let fd = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::io("create a socket to probe", path.display(), e))?;
    let addr = UnixAddr::new(path).map_err(|e| Error::io("probe", path.display(), e))?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(Liveness::Live),
        Err(Errno::ECONNREFUSED) => Ok(Liveness::Stale),
        Err(Errno::ENOENT) => Ok(Liveness::Missing),
        Err(e) => Err(Error::io("probe", path.display(), e)),
    }
}

/// Makes way for binding `name` while holding its claim: a stale socket file
/// is removed; a live one, or one that another user owns in a sticky
/// directory, means the name is in use.
pub(crate) fn clear_stale(dir: &SocketDir, name: &Name, path: &Path) -> Result<()> {
    let in_use = || Error::NameInUse {
        name: name.clone(),
        address: path.display().to_string(),
        pid: None,
    };
    match probe(path)? {
        Liveness::Missing => Ok(()),
        Liveness::Live => Err(in_use()),
        Liveness::Stale => {
            let owner = std::fs::symlink_metadata(path).map(|m| m.uid()).unwrap_or(u32::MAX);
            if dir.is_sticky() && owner != Uid::effective().as_raw() {
                return Err(in_use());
            }
            log::info!("removing stale socket {}", path.display());
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove stale socket", path.display(), errno_of(&e)))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Removes what a dead node left behind (its stale socket file and lock file),
/// if the name is not owned by a live process. Returns whether a socket file
/// was removed. The launcher calls this after killing nodes.
pub fn reclaim(dir: &SocketDir, name: &Name) -> Result<bool> {
    if dir.namespace() == crate::Namespace::Abstract {
        return Ok(false);
    }
    let claim = match Claim::acquire(dir, name) {
        Ok(claim) => claim,
        Err(Error::NameInUse { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let path = dir.socket_path(name)?;
    let existed = probe(&path)? == Liveness::Stale;
    let result = clear_stale(dir, name, &path);
    claim.release();
    match result {
        Ok(()) => Ok(existed),
        Err(Error::NameInUse { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One entry of [`list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The node's name.
    pub name: Name,
    /// The owner's pid, if a live piper node owns the name.
    pub pid: Option<i32>,
    /// Whether anyone reads the socket.
    pub liveness: Liveness,
}

/// The nodes in a directory: name, pid and live or stale.
pub fn list(dir: &SocketDir) -> Result<Vec<Listing>> {
    dir.socket_names()?
        .into_iter()
        .map(|name| {
            let path = dir.socket_path(&name)?;
            let liveness = probe(&path)?;
            let pid = owner_pid(dir, &name);
            Ok(Listing { name, pid, liveness })
        })
        .collect()
}
