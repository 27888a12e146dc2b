//! Owning a name: the one home of the stale-socket rule.
//!
//! A node owns NAME while its socket is bound at `DIR/piper-NAME`: `bind`
//! is atomic, so of two processes binding one name at the same instant
//! exactly one succeeds, and a free name costs nothing but its socket file.
//!
//! A socket file left by a dead process (kill -9) makes `bind` fail. It is
//! stale only if nothing answers on it: the seed's Python nodes hold no
//! lock, so a file is probed with `connect` before it is removed
//! (`ECONNREFUSED` means nobody reads it). Removing and binding again is
//! done under a claim, an exclusive `flock` on `DIR/.piper-NAME.lock`, so
//! that two processes reclaiming one name at once cannot both remove and
//! bind: the kernel drops the lock when its holder dies, and the holder
//! removes the lock file once it has bound. A lock file costs an inode,
//! which on a disk filesystem costs as much again as the socket's: it is
//! made only where there is something to reclaim.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::unistd::Uid;

use crate::dir::{Namespace, SocketDir};
use crate::error::{Error, Result};
use crate::name::Name;

/// A held claim on a name, for the time it takes to reclaim it: the locked
/// lock file. Dropping it removes the lock file and releases the claim.
#[derive(Debug)]
pub(crate) struct Claim {
    /// Held, never read: the lock lasts as long as this open file.
    _lock: Flock<File>,
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
    /// Something other than a socket is there.
    NotSocket,
    /// It could not be probed (another user's socket we may not connect to).
    Unknown,
}

impl Claim {
    /// Takes the lock for `name`, or says who holds it.
    pub(crate) fn acquire(dir: &SocketDir, name: &Name) -> Result<Claim> {
        let in_use = || {
            // Someone is reclaiming the name, and will own it.
            let pid = dir.owner_pid(name);
            Error::NameInUse {
                name: name.clone(),
                address: dir.display_address(name),
                pid,
                launcher: pid.is_some_and(is_launcher),
            }
        };
        Claim::acquire_at(dir.lock_path(name), in_use, |lock_path, e| {
            lock_error(dir, name, lock_path, e)
        })
    }

    /// Takes the lock at `lock_path`: `in_use` says who holds it, and
    /// `unusable` why the file cannot be opened. For a name
    /// ([`Claim::acquire`]) and for a launcher's control socket.
    pub(crate) fn acquire_at(
        lock_path: PathBuf,
        in_use: impl FnOnce() -> Error,
        unusable: impl FnOnce(&Path, std::io::Error) -> Error,
    ) -> Result<Claim> {
        loop {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&lock_path);
            let file = match opened {
                Ok(file) => file,
                Err(e) => return Err(unusable(&lock_path, e)),
            };
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((_, Errno::EWOULDBLOCK)) => return Err(in_use()),
                Err((_, e)) => return Err(Error::io("lock", lock_path.display(), e)),
            };
            // The previous owner may have removed the lock file between our
            // open and our flock; a lock on an unlinked file claims nothing.
            let held = lock.metadata().map(|m| (m.dev(), m.ino())).ok();
            let now = std::fs::symlink_metadata(&lock_path).map(|m| (m.dev(), m.ino())).ok();
            if still_the_lock_file(held, now) {
                return Ok(Claim { _lock: lock, lock_path });
            }
        }
    }
}

/// Whether the file we locked (`held`, device and inode) is still the one
/// at the lock path (`now`): not if it was removed or replaced meanwhile.
fn still_the_lock_file(held: Option<(u64, u64)>, now: Option<(u64, u64)>) -> bool {
    held.is_some() && held == now
}

/// Why a lock file could not be opened, in the terms of the exit codes: a
/// lock file that another user made (or a symlink where it should be) means
/// the name is taken; a directory we may not write, or that is full, is an
/// unusable directory.
fn lock_error(dir: &SocketDir, name: &Name, lock_path: &Path, e: std::io::Error) -> Error {
    let errno = e.raw_os_error().unwrap_or(0);
    if let Ok(meta) = std::fs::symlink_metadata(lock_path) {
        let what = if meta.file_type().is_symlink() {
            format!("a symlink at {}", lock_path.display())
        } else {
            format!("a lock file of uid {} at {}", meta.uid(), lock_path.display())
        };
        if errno == nix::libc::EACCES || errno == nix::libc::ELOOP || meta.uid() != Uid::effective().as_raw() {
            return Error::NameTaken {
                name: name.clone(),
                what,
            };
        }
    }
    match Errno::from_raw(errno) {
        Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::ENOSPC | Errno::EDQUOT => {
            Error::dir(dir.path(), "create a lock file in", e)
        }
        _ => Error::io("open lock file", lock_path.display(), e),
    }
}

impl Drop for Claim {
    /// Removes the lock file while the lock is still held (the field drops
    /// after this), so nobody can be between open and flock on this inode
    /// without noticing: `acquire` rechecks the inode after locking.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// The inodes of the sockets bound at one of `addresses` (a path, or
/// `@name` for an abstract one), from the text of `/proc/net/unix`, each
/// with the index of its address.
fn socket_inodes(unix: &str, addresses: &[String]) -> HashMap<u64, usize> {
    let index: HashMap<&str, usize> = addresses.iter().enumerate().map(|(i, a)| (a.as_str(), i)).collect();
    // "0000000000000000: 00000002 00000000 00000000 0002 01 123456 /run/x"
    unix.lines()
        .skip(1)
        .filter_map(|line| {
            let mut rest = line.trim_start();
            let mut inode = "";
            for _ in 0..7 {
                let end = rest.find(' ')?;
                inode = &rest[..end];
                rest = rest[end..].trim_start();
            }
            Some((inode.parse().ok()?, *index.get(rest)?))
        })
        .collect()
}

/// Of the processes holding one socket, the one that owns its name: a
/// launcher (it holds its nodes' sockets for them), else one that is not
/// the service manager (systemd holds a socket it activates a node on),
/// else the first.
fn likeliest_owner(pids: &[i32]) -> Option<i32> {
    let mut pids = pids.to_vec();
    pids.sort_unstable();
    pids.dedup();
    let manager = |pid: i32| pid == 1 || std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c == b"systemd\n");
    (pids.iter().copied().find(|&pid| is_launcher(pid)))
        .or_else(|| pids.iter().copied().find(|&pid| !manager(pid)))
        .or(pids.first().copied())
}

/// `/proc/PID/net/unix`, the Unix sockets of `pid`'s network namespace;
/// `None` if it cannot be read (even an empty list has its header line).
/// Any process may bind a path that is not UTF-8: its line is read
/// lossily, and the others as they are.
fn unix_sockets(pid: i32) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/net/unix")).ok()?;
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// Every open socket of every process we may look at: (pid, inode).
fn socket_fds() -> Vec<(i32, u64)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids = procs.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    pids.flat_map(|pid| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten();
        fds.filter_map(move |fd| {
            let link = std::fs::read_link(fd.ok()?.path()).ok()?;
            let inode = link
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((pid, inode))
        })
    })
    .collect()
}

/// Probes the datagram socket at `path`: live if a `connect` succeeds,
/// stale if it is refused.
fn probe_path(path: &Path) -> Result<Liveness> {
    probe_path_as(path, SockType::Datagram)
}

/// Probes the socket of type `kind` at `path` (a `connect` of another type
/// fails with `EPROTOTYPE`).
pub(crate) fn probe_path_as(path: &Path, kind: SockType) -> Result<Liveness> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Liveness::Missing),
        Err(e) => return Err(Error::io("inspect", path.display(), e)),
    };
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Ok(Liveness::NotSocket);
    }
    let fd = socket(AddressFamily::Unix, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::io("create a socket to probe", path.display(), e))?;
    let addr = UnixAddr::new(path).map_err(|e| Error::io("probe", path.display(), e))?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(Liveness::Live),
        Err(Errno::ECONNREFUSED) => Ok(Liveness::Stale),
        Err(Errno::ENOENT) => Ok(Liveness::Missing),
        // Another user's socket in a shared directory such as /tmp.
        Err(Errno::EACCES | Errno::EPERM) => Ok(Liveness::Unknown),
        Err(e) => Err(Error::io("probe", path.display(), e)),
    }
}

/// Whether process `pid` runs piper-launch (its command name, as the kernel
/// keeps it).
pub(crate) fn is_launcher(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm == b"piper-launch\n")
}

/// Makes way for binding `name` while holding its claim: a stale socket file
/// is removed; a live one, or one that another user owns in a sticky
/// directory, means the name is in use. Returns whether a file was removed.
pub(crate) fn clear_stale(dir: &SocketDir, name: &Name, path: &Path) -> Result<bool> {
    let in_use = || Error::NameInUse {
        name: name.clone(),
        address: path.display().to_string(),
        pid: None,
        launcher: false,
    };
    match probe_path(path)? {
        Liveness::Missing => Ok(false),
        Liveness::Live | Liveness::Unknown => Err(in_use()),
        Liveness::NotSocket => Err(Error::NameTaken {
            name: name.clone(),
            what: format!("{}, which is not a socket", path.display()),
        }),
        Liveness::Stale => {
            let owner = std::fs::symlink_metadata(path).map(|m| m.uid()).unwrap_or(u32::MAX);
            if dir.is_sticky() && owner != Uid::effective().as_raw() {
                return Err(in_use());
            }
            log::info!("removing stale socket {}", path.display());
            removed(path, std::fs::remove_file(path))
        }
    }
}

/// Whether a removal removed something: a file already gone (someone
/// cleared it first) is no error.
pub(crate) fn removed(path: &Path, result: std::io::Result<()>) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove stale socket", path.display(), e)),
    }
}

/// One entry of [`SocketDir::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The node's name.
    pub name: Name,
    /// The owner's pid, if a live piper node owns the name.
    pub pid: Option<i32>,
    /// Whether anyone reads the socket.
    pub liveness: Liveness,
}

/// Inspecting a directory: who owns which name, and what is left over.
impl SocketDir {
    /// The pid of a process that holds `name`'s bound socket, if one can be
    /// seen: a launcher, if one holds it (its nodes share the socket it
    /// holds for them), else the lowest pid. Found in the kernel's own
    /// tables (`/proc/net/unix`, and each process's open files), so another
    /// user's process shows only to root; reads only.
    pub fn owner_pid(&self, name: &Name) -> Option<i32> {
        self.owners(&[self.display_address(name)]).pop().flatten()
    }

    /// [`SocketDir::owner_pid`] for any socket address (a path, or `@name`).
    pub(crate) fn owner_of(&self, address: String) -> Option<i32> {
        self.owners(&[address]).pop().flatten()
    }

    /// [`SocketDir::owner_pid`] for each of `addresses`, in one pass over
    /// the process table.
    fn owners(&self, addresses: &[String]) -> Vec<Option<i32>> {
        let fds = socket_fds();
        // Each network namespace lists its own sockets (a service with
        // PrivateNetwork= has one of its own): read through a process in
        // it, ours first. A process that exits before its list is read
        // leaves the namespace to the next one in it.
        let mut namespaces = std::collections::HashSet::new();
        let mut readers = Vec::new();
        let mut inodes = HashMap::new();
        let mut pids: Vec<i32> = fds.iter().map(|&(pid, _)| pid).collect();
        pids.dedup();
        let me = std::process::id() as i32;
        for pid in std::iter::once(me).chain(pids) {
            let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            if namespaces.contains(&ns) {
                continue;
            }
            if let Some(unix) = unix_sockets(pid) {
                inodes.extend(socket_inodes(&unix, addresses));
                namespaces.insert(ns);
                readers.push(pid);
            }
        }
        // The list is read a page at a time, and the kernel finds its place
        // again by counting; a socket that closes meanwhile shifts the
        // count, and one still open can be missed. Read again for what is
        // missing: twice missed is very rare, and a name with no socket
        // costs two more reads.
        for _ in 0..2 {
            let found: std::collections::HashSet<usize> = inodes.values().copied().collect();
            if found.len() == addresses.len() {
                break;
            }
            for &pid in &readers {
                if let Some(unix) = unix_sockets(pid) {
                    inodes.extend(socket_inodes(&unix, addresses));
                }
            }
        }
        let mut holders = vec![Vec::new(); addresses.len()];
        for (pid, inode) in fds {
            if let Some(&i) = inodes.get(&inode) {
                holders[i].push(pid);
            }
        }
        holders.into_iter().map(|pids| likeliest_owner(&pids)).collect()
    }

    /// Probes `name`'s socket file: [`Liveness::Live`] if something reads it,
    /// [`Liveness::Stale`] if nothing does, [`Liveness::Missing`] if there is
    /// none. An abstract directory has no files: its names are always missing.
    pub fn probe(&self, name: &Name) -> Result<Liveness> {
        match self.namespace() {
            Namespace::Abstract => Ok(Liveness::Missing),
            Namespace::Filesystem => probe_path(&self.socket_path(name)?),
        }
    }

    /// The nodes in the directory: name, pid, and live or stale. An entry
    /// that cannot be probed (another user's, in a shared directory) is
    /// listed as [`Liveness::Unknown`]; it never hides the others.
    pub fn list(&self) -> Result<Vec<Listing>> {
        let names = self.socket_names()?;
        let addresses: Vec<String> = names.iter().map(|n| self.display_address(n)).collect();
        let owners = self.owners(&addresses);
        let listing = names.into_iter().zip(owners).map(|(name, pid)| {
            let liveness = self.probe(&name).unwrap_or_else(|e| {
                log::debug!("{e}");
                Liveness::Unknown
            });
            Listing { name, pid, liveness }
        });
        Ok(listing.collect())
    }

    /// Checks that `name` is free to bind: [`Error::NameInUse`] (naming the
    /// owner, if it can be seen) if something answers on its socket,
    /// [`Error::NameTaken`] if something other than a socket is there. A
    /// stale socket is free: binding reclaims it. Makes and removes
    /// nothing; an abstract name is always free here (its bind decides).
    pub fn check_free(&self, name: &Name) -> Result<()> {
        match self.probe(name)? {
            Liveness::Live | Liveness::Unknown => {
                let pid = self.owner_pid(name);
                Err(Error::NameInUse {
                    name: name.clone(),
                    address: self.display_address(name),
                    pid,
                    launcher: pid.is_some_and(is_launcher),
                })
            }
            Liveness::NotSocket => Err(Error::NameTaken {
                name: name.clone(),
                what: format!("{}, which is not a socket", self.display_address(name)),
            }),
            Liveness::Stale | Liveness::Missing => Ok(()),
        }
    }

    /// Removes what a dead node left behind (its stale socket file and lock
    /// file), if the name is not owned by a live process. Returns whether a
    /// socket file was removed. A node whose launcher died calls this for
    /// its own name: the socket it adopted was the launcher's to remove.
    pub fn reclaim(&self, name: &Name) -> Result<bool> {
        if self.namespace() == Namespace::Abstract {
            return Ok(false);
        }
        let path = self.socket_path(name)?;
        // Dropping the claim removes the lock file, on every path out of here.
        let _claim = match Claim::acquire(self, name) {
            Ok(claim) => claim,
            Err(Error::NameInUse { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match clear_stale(self, name, &path) {
            Err(Error::NameInUse { .. }) => Ok(false),
            removed => removed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A directory of the test's own, removed on drop.
    struct Temp(PathBuf, SocketDir);

    impl Temp {
        fn new(tag: &str) -> Temp {
            let path = std::env::temp_dir().join(format!("piper-claim-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            let dir = SocketDir::open(&path).unwrap();
            Temp(path, dir)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    /// A socket file nobody reads any more. Another test's thread that
    /// forks a child holds every descriptor of this process until the
    /// child execs: the socket is stale once no such child holds it, which
    /// is waited for (bounded).
    fn stale(dir: &SocketDir, n: &str) -> PathBuf {
        let path = dir.socket_path(&name(n)).unwrap();
        drop(std::os::unix::net::UnixDatagram::bind(&path).unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while probe_path(&path).unwrap() != Liveness::Stale {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never went stale",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        path
    }

    #[test]
    fn an_owner_is_found_beside_a_socket_whose_path_is_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let t = Temp::new("utf8");
        // Anywhere in the network namespace: its list names every socket.
        let odd = t.0.join(std::ffi::OsStr::from_bytes(b"odd-\xff"));
        let _odd = std::os::unix::net::UnixDatagram::bind(&odd).unwrap();
        let live = crate::Node::bind(&t.1, name("live")).unwrap();
        assert_eq!(t.1.owner_pid(live.name()), Some(std::process::id() as i32));
    }

    #[test]
    fn a_file_someone_else_removed_first_is_no_error() {
        let p = Path::new("/x");
        assert!(removed(p, Ok(())).unwrap());
        assert!(!removed(p, Err(std::io::Error::from_raw_os_error(nix::libc::ENOENT))).unwrap());
        assert!(removed(p, Err(std::io::Error::from_raw_os_error(nix::libc::EPERM))).is_err());
    }

    #[test]
    fn a_claim_holds_only_while_the_lock_file_is_the_one_locked() {
        assert!(still_the_lock_file(Some((1, 2)), Some((1, 2))));
        assert!(!still_the_lock_file(Some((1, 2)), Some((1, 3))), "replaced");
        assert!(!still_the_lock_file(Some((1, 2)), None), "removed");
        assert!(!still_the_lock_file(None, None));
    }

    #[test]
    fn lock_file_failures_map_to_the_exit_codes_terms() {
        let t = Temp::new("lock-errors");
        let n = name("x");
        let errno = std::io::Error::from_raw_os_error;
        let missing = t.0.join("no-such-lock");
        let e = lock_error(&t.1, &n, &missing, errno(nix::libc::EROFS));
        assert!(matches!(e, Error::Dir { .. }), "{e:?}");
        let e = lock_error(&t.1, &n, &missing, errno(nix::libc::EIO));
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        // Our own lock file that we cannot open: taken (EACCES), else an
        // I/O error.
        let ours = t.0.join("ours");
        std::fs::write(&ours, "").unwrap();
        let e = lock_error(&t.1, &n, &ours, errno(nix::libc::EACCES));
        assert!(matches!(e, Error::NameTaken { .. }), "{e:?}");
        let e = lock_error(&t.1, &n, &ours, errno(nix::libc::EIO));
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        let link = t.0.join("link");
        std::os::unix::fs::symlink(&ours, &link).unwrap();
        let e = lock_error(&t.1, &n, &link, errno(nix::libc::ELOOP));
        assert!(e.to_string().contains("a symlink at"), "{e}");
    }

    #[test]
    fn probing_tells_live_stale_missing_and_not_a_socket_apart() {
        let t = Temp::new("probe");
        let live = crate::Node::bind(&t.1, name("live")).unwrap();
        stale(&t.1, "stale");
        std::fs::write(t.1.socket_path(&name("file")).unwrap(), "").unwrap();
        assert_eq!(t.1.probe(live.name()).unwrap(), Liveness::Live);
        assert_eq!(t.1.probe(&name("stale")).unwrap(), Liveness::Stale);
        assert_eq!(t.1.probe(&name("file")).unwrap(), Liveness::NotSocket);
        assert_eq!(t.1.probe(&name("none")).unwrap(), Liveness::Missing);
        // A path that cannot be looked at is an error, not "missing".
        assert!(probe_path(&t.1.socket_path(&name("file")).unwrap().join("x")).is_err());
        let listing = t.1.list().unwrap();
        let got: Vec<(String, Liveness, bool)> = listing
            .iter()
            .map(|l| (l.name.to_string(), l.liveness, l.pid.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                ("live".to_string(), Liveness::Live, true),
                ("stale".to_string(), Liveness::Stale, false)
            ]
        );
        assert_eq!(t.1.socket_names().unwrap(), [name("live"), name("stale")]);
        let abs = SocketDir::open_abstract(&t.0).unwrap();
        assert_eq!(abs.probe(&name("live")).unwrap(), Liveness::Missing);
        assert!(abs.socket_names().unwrap().is_empty());
        assert!(!abs.reclaim(&name("stale")).unwrap());
    }

    #[test]
    fn a_name_is_free_unless_something_answers_on_it_or_is_no_socket() {
        let t = Temp::new("free");
        assert!(t.1.check_free(&name("none")).is_ok());
        let path = stale(&t.1, "dead");
        assert!(t.1.check_free(&name("dead")).is_ok());
        assert!(path.exists(), "checking removes nothing");
        let live = crate::Node::bind(&t.1, name("live")).unwrap();
        let me = Some(std::process::id() as i32);
        assert!(matches!(
            t.1.check_free(live.name()),
            Err(Error::NameInUse { pid, launcher: false, .. }) if pid == me
        ));
        std::fs::write(t.1.socket_path(&name("file")).unwrap(), "").unwrap();
        assert!(matches!(t.1.check_free(&name("file")), Err(Error::NameTaken { .. })));
    }

    #[test]
    fn reclaiming_removes_what_a_dead_node_left_and_nothing_live() {
        let t = Temp::new("reclaim");
        let path = stale(&t.1, "dead");
        assert!(t.1.reclaim(&name("dead")).unwrap());
        assert!(!path.exists());
        assert!(!t.1.lock_path(&name("dead")).exists());
        assert!(!t.1.reclaim(&name("dead")).unwrap(), "nothing left to remove");
        let live = crate::Node::bind(&t.1, name("live")).unwrap();
        assert!(!t.1.reclaim(live.name()).unwrap());
        assert_eq!(t.1.probe(live.name()).unwrap(), Liveness::Live);
        // clear_stale, as bind uses it: a stale file goes, a live one is in use.
        let path = stale(&t.1, "again");
        assert!(clear_stale(&t.1, &name("again"), &path).unwrap());
        assert!(!clear_stale(&t.1, &name("again"), &path).unwrap());
        let live_path = t.1.socket_path(live.name()).unwrap();
        assert!(matches!(
            clear_stale(&t.1, live.name(), &live_path),
            Err(Error::NameInUse { .. })
        ));
    }

    #[test]
    fn in_a_sticky_directory_another_users_stale_socket_is_left_alone() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("PIPER_TESTS_REQUIRE_ALL").is_none(),
                "needs root to chown"
            );
            // Straight to stderr: the harness captures only the print macros.
            let line = "SKIPPED in_a_sticky_directory_another_users_stale_socket_is_left_alone: needs root to chown\n";
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return;
        }
        let path = std::env::temp_dir().join(format!("piper-claim-{}-sticky", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        let t = Temp(path.clone(), SocketDir::open(&path).unwrap());
        assert!(t.1.is_sticky());
        let theirs = stale(&t.1, "theirs");
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        assert!(matches!(
            clear_stale(&t.1, &name("theirs"), &theirs),
            Err(Error::NameInUse { .. })
        ));
        assert!(theirs.exists());
        let mine = stale(&t.1, "mine");
        assert!(clear_stale(&t.1, &name("mine"), &mine).unwrap());
        // Outside a sticky directory a stale socket is anyone's to clear.
        let plain = Temp::new("plain");
        assert!(!plain.1.is_sticky());
        let other = stale(&plain.1, "theirs");
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
        assert!(clear_stale(&plain.1, &name("theirs"), &other).unwrap());
    }

    #[test]
    fn a_claim_is_exclusive_private_and_not_inherited() {
        let path = std::env::temp_dir().join(format!("piper-claim-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let dir = SocketDir::open(&path).unwrap();
        let name = Name::new("c").unwrap();
        let claim = Claim::acquire(&dir, &name).unwrap();
        let flags = nix::fcntl::fcntl(claim._lock.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC));
        let meta = std::fs::metadata(dir.lock_path(&name)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        assert_eq!(meta.len(), 0, "lock files stay empty");
        assert!(matches!(Claim::acquire(&dir, &name), Err(Error::NameInUse { .. })));
        assert_eq!(dir.probe(&name).unwrap(), Liveness::Missing);
        drop(claim);
        assert!(!dir.lock_path(&name).exists());
        // Free again.
        drop(Claim::acquire(&dir, &name).unwrap());
        std::fs::remove_dir_all(&path).unwrap();
    }

    const UNIX: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00000000 0002 01 4242 /run/p/piper-a
0000000000000000: 00000002 00000000 00000000 0002 01 4243 /run/p/piper-a b
0000000000000000: 00000003 00000000 00000000 0001 03 17
0000000000000000: 00000002 00000000 00010000 0002 01 99 @/run/p/piper-c
0000000000000000: 00000002 00000000 00000000 0002 01 98 /run/p/piper-ab
";

    #[test]
    fn the_sockets_bound_at_an_address_are_found_by_their_whole_path() {
        let addresses = ["/run/p/piper-a".to_string(), "@/run/p/piper-c".to_string()];
        let found = socket_inodes(UNIX, &addresses);
        assert_eq!(found, HashMap::from([(4242, 0), (99, 1)]));
        let spaced = socket_inodes(UNIX, &["/run/p/piper-a b".to_string()]);
        assert_eq!(spaced, HashMap::from([(4243, 0)]));
        assert!(socket_inodes("", &addresses).is_empty());
    }

    #[test]
    fn the_owner_among_a_sockets_holders_is_not_the_service_manager() {
        let me = std::process::id() as i32;
        assert_eq!(likeliest_owner(&[]), None);
        assert_eq!(likeliest_owner(&[1, me]), Some(me), "pid 1 holds an activated socket");
        assert_eq!(likeliest_owner(&[me, me]), Some(me));
        assert_eq!(likeliest_owner(&[1]), Some(1));
    }

    #[test]
    fn the_owner_of_a_bound_name_is_the_process_holding_its_socket() {
        let t = Temp::new("owner");
        let a = crate::Node::bind(&t.1, name("a")).unwrap();
        assert_eq!(t.1.owner_pid(a.name()), Some(std::process::id() as i32));
        assert_eq!(t.1.owner_pid(&name("none")), None);
        drop(a);
        assert_eq!(t.1.owner_pid(&name("a")), None);
    }
}
