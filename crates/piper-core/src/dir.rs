//! The socket directory, and the one home of the address rule: node NAME lives
//! at `DIR/piper-NAME`, or at `@DIR/piper-NAME` in Linux's abstract namespace.
//!
//! With `DIR=/tmp` the address is exactly the seed's `/tmp/piper-NAME`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::UnixAddr;
use nix::unistd::Uid;

use crate::error::{Error, Result};
use crate::name::Name;

/// Where a directory's node addresses live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// Socket files in the directory.
    Filesystem,
    /// Linux abstract addresses named after the directory: no files at all.
    Abstract,
}

/// A checked socket directory.
///
/// ```
/// use piper_core::{Name, SocketDir};
///
/// let tmp = std::env::temp_dir().join(format!("piper-doc-{}", std::process::id()));
/// let dir = SocketDir::open(&tmp).unwrap();
/// let ping = Name::new("ping").unwrap();
/// assert_eq!(dir.socket_path(&ping).unwrap(), dir.path().join("piper-ping"));
/// # std::fs::remove_dir(&tmp).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct SocketDir {
    path: PathBuf,
    namespace: Namespace,
    sticky: bool,
}

const PREFIX: &str = "piper-";

impl SocketDir {
    /// The directory to use when none is given: `$PIPER_DIR`, else
    /// `$XDG_RUNTIME_DIR/piper`, else `/dev/shm/piper-$UID` where `/dev/shm`
    /// is a tmpfs (as on every systemd machine and in containers), else
    /// `/tmp/piper-$UID`. A tmpfs first: where `/tmp` is on a disk, each
    /// socket file costs an inode on the disk (here 0.6 ms of CPU, as much
    /// as starting the node's process), and sockets need no disk at all.
    pub fn default_path() -> PathBuf {
        default_path_from(
            std::env::var_os(crate::env::DIR),
            std::env::var_os("XDG_RUNTIME_DIR"),
            Uid::effective(),
            shm_is_tmpfs(),
        )
    }

    /// Opens `path` in `namespace`: [`SocketDir::open`] for socket files,
    /// [`SocketDir::open_abstract`] for abstract addresses.
    pub fn open_in(path: impl AsRef<Path>, namespace: Namespace) -> Result<SocketDir> {
        match namespace {
            Namespace::Filesystem => SocketDir::open(path),
            Namespace::Abstract => SocketDir::open_abstract(path),
        }
    }

    /// Opens `path` for socket files, creating it (and any missing parent)
    /// with mode 0700 if missing.
    ///
    /// An existing directory must belong to this user or to root (root
    /// trusts any owner: it can do anything there anyway) and must not be
    /// writable by group or others, as ssh's `StrictModes` demands; a sticky
    /// directory such as `/tmp` is the one exception. A directory that is
    /// refused, or too long for any socket address, is never left behind:
    /// what this call created it removes again.
    pub fn open(path: impl AsRef<Path>) -> Result<SocketDir> {
        SocketDir::open_checking(path.as_ref(), |_| Ok(()))
    }

    /// [`SocketDir::open_in`] for these nodes: each of `names` must fit in
    /// the directory's addresses ([`SocketDir::check_fits`]). When one does
    /// not, the error says which, and a directory this call created is
    /// removed again: a name that was never going to work leaves nothing.
    pub fn open_for<'a>(
        path: impl AsRef<Path>,
        namespace: Namespace,
        names: impl IntoIterator<Item = &'a Name>,
    ) -> Result<SocketDir> {
        let check = |dir: &SocketDir| names.into_iter().try_for_each(|name| dir.check_fits(name));
        match namespace {
            Namespace::Filesystem => SocketDir::open_checking(path.as_ref(), check),
            Namespace::Abstract => {
                let dir = SocketDir::open_abstract(path)?;
                check(&dir)?;
                Ok(dir)
            }
        }
    }

    /// [`SocketDir::open`], with `check` run on the opened directory before
    /// anything created for it is kept.
    fn open_checking(path: &Path, check: impl FnOnce(&SocketDir) -> Result<()>) -> Result<SocketDir> {
        let absolute = std::path::absolute(path).map_err(|e| Error::dir(path, "resolve", e))?;
        if max_name_len(&absolute) == 0 {
            return Err(Error::DirTooLong { dir: absolute });
        }
        let created = create_missing(&absolute)?;
        let opened = SocketDir::open_existing(&absolute).and_then(|dir| check(&dir).map(|()| dir));
        if opened.is_err() {
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        opened
    }

    /// Opens an existing `path` for socket files, creating nothing: for
    /// commands that only look (`--list`) or only send (`--kick`). The same
    /// checks as [`SocketDir::open`] apply.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<SocketDir> {
        let (path, sticky) = check_private(path.as_ref())?;
        SocketDir::checked(path, Namespace::Filesystem, sticky)
    }

    /// Uses `path` only to name abstract addresses: nothing is created or
    /// read. The path is made absolute and normalised as text (`.`, `..` and
    /// repeated slashes resolved), so that every spelling of one directory
    /// names the same addresses.
    pub fn open_abstract(path: impl AsRef<Path>) -> Result<SocketDir> {
        let path = path.as_ref();
        let absolute = std::path::absolute(path).map_err(|e| Error::dir(path, "resolve", e))?;
        SocketDir::checked(normalise(&absolute), Namespace::Abstract, false)
    }

    fn checked(path: PathBuf, namespace: Namespace, sticky: bool) -> Result<SocketDir> {
        let dir = SocketDir {
            path,
            namespace,
            sticky,
        };
        if dir.max_name_len() == 0 {
            return Err(Error::DirTooLong { dir: dir.path });
        }
        Ok(dir)
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether addresses are files or abstract.
    pub fn namespace(&self) -> Namespace {
        self.namespace
    }

    /// Whether the directory is sticky (like `/tmp`): other users' socket files
    /// there are never reclaimed or removed.
    pub fn is_sticky(&self) -> bool {
        self.sticky
    }

    /// The longest node name whose address fits in `sun_path` here.
    pub fn max_name_len(&self) -> usize {
        max_name_len(&self.path)
    }

    /// Checks that `name`'s address fits in `sun_path` here.
    pub fn check_fits(&self, name: &Name) -> Result<()> {
        if name.as_str().len() > self.max_name_len() {
            return Err(Error::NameTooLong {
                name: name.clone(),
                dir: self.path.clone(),
                max: self.max_name_len(),
            });
        }
        Ok(())
    }

    /// The socket file of `name`: `DIR/piper-NAME`. For an abstract directory
    /// this is the path the abstract address is named after.
    pub fn socket_path(&self, name: &Name) -> Result<PathBuf> {
        self.check_fits(name)?;
        Ok(self.path.join(format!("{PREFIX}{name}")))
    }

    /// The socket address of `name`.
    pub fn address(&self, name: &Name) -> Result<UnixAddr> {
        let path = self.socket_path(name)?;
        let addr = match self.namespace {
            Namespace::Filesystem => UnixAddr::new(&path),
            Namespace::Abstract => UnixAddr::new_abstract(path.as_os_str().as_bytes()),
        };
        addr.map_err(|e| Error::io("build the address of", name, e))
    }

    /// The address shown to people: the path, or `@path` for abstract ones.
    pub fn display_address(&self, name: &Name) -> String {
        let path = self.path.join(format!("{PREFIX}{name}"));
        match self.namespace {
            Namespace::Filesystem => path.display().to_string(),
            Namespace::Abstract => format!("@{}", path.display()),
        }
    }

    /// The files name `name` occupies here: its socket file; none in the
    /// abstract namespace. (A lock file exists only while a stale socket
    /// file is being reclaimed, and goes with its claim.)
    pub fn name_paths(&self, name: &Name) -> Result<Vec<PathBuf>> {
        match self.namespace {
            Namespace::Abstract => Ok(Vec::new()),
            Namespace::Filesystem => Ok(vec![self.socket_path(name)?]),
        }
    }

    /// The lock file of a claim on `name`, held while a stale socket file is
    /// reclaimed: `DIR/.piper-NAME.lock`.
    /// The leading dot keeps it out of the `piper-*` namespace of sockets.
    pub(crate) fn lock_path(&self, name: &Name) -> PathBuf {
        self.path.join(format!(".{PREFIX}{name}.lock"))
    }

    /// The node name behind a sender's address, if the sender is a piper node
    /// of this directory; `None` for unbound senders and anything else.
    pub fn name_of(&self, addr: &UnixAddr) -> Option<Name> {
        let full: &[u8] = match self.namespace {
            // A zero-length address (an unbound sender) must not reach path():
            // nix panics on it.
            _ if nix::sys::socket::SockaddrLike::len(addr) as usize
                <= std::mem::size_of::<nix::libc::sa_family_t>() =>
            {
                return None
            }
            Namespace::Filesystem => addr.path()?.as_os_str().as_bytes(),
            Namespace::Abstract => addr.as_abstract()?,
        };
        let rest = full.strip_prefix(self.path.as_os_str().as_bytes())?;
        let rest = rest.strip_prefix(b"/")?.strip_prefix(PREFIX.as_bytes())?;
        Name::from_bytes(rest).ok()
    }

    /// The names of the socket files in the directory (`piper-*`), sorted.
    /// An abstract directory has no files and lists nothing.
    pub fn socket_names(&self) -> Result<Vec<Name>> {
        if self.namespace == Namespace::Abstract {
            return Ok(Vec::new());
        }
        let entries = std::fs::read_dir(&self.path).map_err(|e| Error::dir(&self.path, "list", e))?;
        let mut names: Vec<Name> = entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let file_name = entry.file_name();
                let rest = file_name.as_bytes().strip_prefix(PREFIX.as_bytes())?;
                let is_socket = std::os::unix::fs::FileTypeExt::is_socket(&entry.file_type().ok()?);
                is_socket.then(|| Name::from_bytes(rest).ok()).flatten()
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Whether a directory owned by `owner` is someone else's to user `me`: not
/// ours, not root's, and we are not root (who trusts any owner).
/// Creates `path` (and any missing parent) with mode 0700 if missing, and
/// checks it as a socket directory is checked ([`SocketDir::open`]): owned
/// by this user or root, and not writable by group or others unless it is
/// sticky. For other files that must stay as private as the sockets, such
/// as a launcher's logs. Returns the directory's canonical path; what this
/// call created and then refused, it removes again.
pub fn private_dir(path: impl AsRef<Path>) -> Result<PathBuf> {
    let path = path.as_ref();
    let absolute = std::path::absolute(path).map_err(|e| Error::dir(path, "resolve", e))?;
    let created = create_missing(&absolute)?;
    let checked = check_private(&absolute);
    if checked.is_err() {
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    checked.map(|(path, _)| path)
}

/// The checks of [`SocketDir::open_existing`]: the canonical path, and
/// whether the directory is sticky.
fn check_private(path: &Path) -> Result<(PathBuf, bool)> {
    let path = path.canonicalize().map_err(|e| Error::dir(path, "open", e))?;
    let meta = std::fs::metadata(&path).map_err(|e| Error::dir(&path, "read", e))?;
    if !meta.is_dir() {
        let e = std::io::Error::from_raw_os_error(nix::libc::ENOTDIR);
        return Err(Error::dir(&path, "open", e));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    let me = Uid::effective();
    if !sticky {
        if foreign(meta.uid(), me) {
            return Err(Error::InsecureDir {
                dir: path,
                reason: format!("it is owned by uid {}, not by uid {me} or root", meta.uid()),
            });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(Error::InsecureDir {
                dir: path,
                reason: format!(
                    "it is writable by group or others (mode {:04o}); use chmod go-w or a sticky directory",
                    meta.mode() & 0o7777
                ),
            });
        }
    }
    Ok((path, sticky))
}

fn foreign(owner: u32, me: Uid) -> bool {
    owner != me.as_raw() && owner != 0 && !me.is_root()
}

/// [`SocketDir::default_path`]'s rule; an empty variable counts as unset.
fn default_path_from(piper_dir: Option<OsString>, runtime: Option<OsString>, uid: Uid, shm: bool) -> PathBuf {
    let non_empty = |v: Option<OsString>| v.filter(|v| !v.is_empty());
    if let Some(dir) = non_empty(piper_dir) {
        PathBuf::from(dir)
    } else if let Some(run) = non_empty(runtime) {
        PathBuf::from(run).join("piper")
    } else if shm {
        PathBuf::from(format!("/dev/shm/piper-{uid}"))
    } else {
        PathBuf::from(format!("/tmp/piper-{uid}"))
    }
}

/// Whether `/dev/shm` is a tmpfs directory (not a symlink), shared by all
/// users and sticky, as `/tmp` is: then a directory of one's own there is
/// as safe as in `/tmp` (the same checks apply), and costs no disk.
fn shm_is_tmpfs() -> bool {
    let shm = Path::new("/dev/shm");
    let sticky = std::fs::symlink_metadata(shm).is_ok_and(|m| m.is_dir() && m.mode() & 0o1000 != 0);
    sticky && nix::sys::statfs::statfs(shm).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// The longest node name whose address fits in `sun_path` in `dir`.
fn max_name_len(dir: &Path) -> usize {
    // sun_path holds 108 bytes; a path needs its NUL, an abstract address
    // its leading NUL (shown as '@'): 107 either way.
    107usize.saturating_sub(dir.as_os_str().len() + 1 + PREFIX.len())
}

/// Creates the missing directories of the absolute `path`, each with mode
/// 0700; returns those it created, outermost first. On failure it removes
/// them again.
fn create_missing(path: &Path) -> Result<Vec<PathBuf>> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| std::fs::symlink_metadata(p).is_err())
        .collect();
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => created.push(dir.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                for dir in created.iter().rev() {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(Error::dir(path, "create", e));
            }
        }
    }
    Ok(created)
}

/// `.`, `..` and repeated slashes resolved as text, without the filesystem.
fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn the_default_directory_is_piper_dir_else_the_runtime_dir_else_shm_else_tmp() {
        let uid = Uid::from_raw(1234);
        let v = |s: &str| Some(OsString::from(s));
        for shm in [true, false] {
            assert_eq!(default_path_from(v("/d"), v("/run/user/1"), uid, shm), Path::new("/d"));
            assert_eq!(
                default_path_from(None, v("/run/user/1"), uid, shm),
                Path::new("/run/user/1/piper")
            );
            assert_eq!(
                default_path_from(v(""), v("/run/user/1"), uid, shm),
                Path::new("/run/user/1/piper")
            );
        }
        assert_eq!(
            default_path_from(v(""), v(""), uid, true),
            Path::new("/dev/shm/piper-1234")
        );
        assert_eq!(
            default_path_from(None, None, uid, true),
            Path::new("/dev/shm/piper-1234")
        );
        assert_eq!(default_path_from(None, None, uid, false), Path::new("/tmp/piper-1234"));
    }

    #[test]
    fn a_directory_is_trusted_if_it_is_ours_or_roots_or_we_are_root() {
        let user = Uid::from_raw(1000);
        assert!(!foreign(1000, user));
        assert!(!foreign(0, user));
        assert!(foreign(2000, user));
        assert!(!foreign(2000, Uid::from_raw(0)));
    }

    #[test]
    fn the_default_directory_is_an_absolute_path() {
        assert!(SocketDir::default_path().is_absolute());
    }

    #[test]
    fn open_existing_opens_only_safe_existing_directories() {
        let base = std::env::temp_dir().join(format!("piper-dir-existing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        assert!(
            matches!(SocketDir::open_existing(&base), Err(Error::Dir { .. })),
            "missing"
        );
        assert!(!base.exists(), "created nothing");
        std::fs::create_dir(&base).unwrap();
        let mode = |m| std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
        mode(0o700);
        let dir = SocketDir::open_existing(&base).unwrap();
        assert!(!dir.is_sticky());
        mode(0o770);
        assert!(
            matches!(SocketDir::open_existing(&base), Err(Error::InsecureDir { .. })),
            "group-writable"
        );
        mode(0o702);
        assert!(
            matches!(SocketDir::open_existing(&base), Err(Error::InsecureDir { .. })),
            "world-writable"
        );
        mode(0o1777);
        assert!(SocketDir::open_existing(&base).unwrap().is_sticky(), "sticky is fine");
        mode(0o700);
        let file = base.join("f");
        std::fs::write(&file, "").unwrap();
        assert!(
            matches!(SocketDir::open_existing(&file), Err(Error::Dir { .. })),
            "not a directory"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_seed_path_is_kept_in_tmp() {
        let tmp = SocketDir::open("/tmp").unwrap();
        assert!(tmp.is_sticky());
        assert_eq!(tmp.socket_path(&name("pong")).unwrap(), Path::new("/tmp/piper-pong"));
        assert_eq!(tmp.display_address(&name("pong")), "/tmp/piper-pong");
    }

    #[test]
    fn names_that_do_not_fit_are_refused_per_directory() {
        let dir = SocketDir::open_abstract("/run/piper").unwrap();
        assert_eq!(dir.max_name_len(), 107 - "/run/piper/piper-".len());
        let longest = "x".repeat(dir.max_name_len());
        assert!(dir.address(&name(&longest)).is_ok());
        let too_long = format!("{longest}y");
        assert!(matches!(dir.address(&name(&too_long)), Err(Error::NameTooLong { .. })));
    }

    #[test]
    fn every_spelling_of_an_abstract_directory_names_the_same_addresses() {
        for spelling in ["/y", "//y", "/x/../y", "/y/.", "/y/", "/./y//"] {
            let dir = SocketDir::open_abstract(spelling).unwrap();
            assert_eq!(dir.path(), Path::new("/y"), "{spelling}");
        }
        assert_eq!(SocketDir::open_abstract("/..").unwrap().path(), Path::new("/"));
    }

    #[test]
    fn a_directory_too_long_for_any_address_is_refused_before_it_is_created() {
        let base = std::env::temp_dir().join(format!("piper-long-{}", std::process::id()));
        let long = base.join("d".repeat(120));
        assert!(matches!(SocketDir::open(&long), Err(Error::DirTooLong { .. })));
        assert!(!base.exists(), "nothing was created");
    }

    #[test]
    fn a_refused_directory_that_open_created_is_removed() {
        let base = std::env::temp_dir().join(format!("piper-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        // A file where a directory should be: creating beneath it fails.
        std::fs::write(base.join("file"), b"").unwrap();
        assert!(SocketDir::open(base.join("file/sub/dir")).is_err());
        assert!(SocketDir::open_existing(base.join("missing")).is_err());
        assert!(!base.join("missing").exists());
        let mut left: Vec<_> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["file"]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn sender_names_come_only_from_this_directory() {
        let dir = SocketDir::open_abstract("/run/piper").unwrap();
        let ping = dir.address(&name("ping")).unwrap();
        assert_eq!(dir.name_of(&ping), Some(name("ping")));
        let elsewhere = SocketDir::open_abstract("/run/other")
            .unwrap()
            .address(&name("ping"))
            .unwrap();
        assert_eq!(dir.name_of(&elsewhere), None);
        // An unbound sender's address: zero length, and nix would panic on path().
        assert_eq!(dir.name_of(&UnixAddr::new_unnamed()), None);
        let fs = SocketDir {
            path: PathBuf::from("/run/piper"),
            namespace: Namespace::Filesystem,
            sticky: false,
        };
        assert_eq!(
            fs.name_of(&UnixAddr::new("/run/piper/piper-pong").unwrap()),
            Some(name("pong"))
        );
        assert_eq!(fs.name_of(&UnixAddr::new("/run/piper/pong").unwrap()), None);
        assert_eq!(fs.name_of(&UnixAddr::new("/run/piper/piper-../x").unwrap()), None);
    }
}
