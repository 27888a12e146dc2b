//! Temp directories for one measurement, and guards for the processes a
//! measurement starts, so that nothing outlives the run.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Where sockets live during the run: a tmpfs, as `$XDG_RUNTIME_DIR` is on
/// a systemd machine. The launch figures are also measured in a directory
/// on a disk filesystem (`--disk-tmp`), where creating an inode costs
/// about as much as starting a process.
pub fn default_root() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    runtime
        .filter(|p| p.is_dir())
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir)
}

/// Sets where [`Scratch`] directories go.
pub fn set_root(root: PathBuf) {
    let _ = ROOT.set(root);
}

/// Where [`Scratch`] directories go.
pub fn root() -> &'static Path {
    ROOT.get_or_init(default_root)
}

/// A temp directory for one measurement, removed afterwards.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        Scratch::new_in(root(), tag)
    }

    /// A temp directory under `root` instead of the run's root.
    pub fn new_in(root: &Path, tag: &str) -> Scratch {
        let path = root.join(format!("piper-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("scratch dir");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child, killed and reaped on drop. Only our own children are ever
/// signalled: a guard holds the `Child`, whose pid cannot be reused before
/// it is reaped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 10 s for `path` to appear.
pub fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether `path` is a directory on a disk filesystem (not tmpfs or ramfs).
pub fn on_disk(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    statfs(path).is_ok_and(|fs| path.is_dir() && ![TMPFS_MAGIC, RAMFS_MAGIC].contains(&fs.filesystem_type()))
}
