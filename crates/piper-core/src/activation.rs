//! Socket activation: the one home of the `LISTEN_FDS` protocol.
//!
//! systemd (or `systemd-socket-activate`) binds the socket, then starts the
//! service with the socket as fd 3 and sets `LISTEN_PID` to the service's pid,
//! `LISTEN_FDS` to the number of fds, and `LISTEN_FDNAMES` to their names,
//! colon-separated. Datagrams sent while the service is down wait in the
//! socket's queue and are read when it starts.
//!
//! The library only reads the variables. Removing them, so that children do
//! not inherit them, is the program's business ([`VARIABLES`] names them):
//! changing the environment is not thread-safe, and a library cannot know
//! that no other thread reads it.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::env;
use crate::error::{Error, Result};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The environment variables of the protocol.
pub const VARIABLES: [&str; 3] = [env::LISTEN_PID, env::LISTEN_FDS, env::LISTEN_FDNAMES];

/// One socket passed by the service manager.
#[derive(Debug)]
pub struct ListenFd {
    /// The descriptor, now owned by this process.
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES`, if given.
    pub name: Option<String>,
}

/// Takes the descriptors passed with `LISTEN_FDS`, if they are meant for this
/// process (`LISTEN_PID`); none when there are none. Only the first call
/// takes them: a descriptor has one owner, so later calls return none.
/// Call it before opening any descriptor of your own.
pub fn listen_fds() -> Result<Vec<ListenFd>> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let var = |name| std::env::var(name).ok();
    let passed = passed_count(
        var(env::LISTEN_PID).as_deref(),
        var(env::LISTEN_FDS).as_deref(),
        std::process::id(),
    )?;
    let Some(count) = passed else {
        return Ok(Vec::new());
    };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let names = var(env::LISTEN_FDNAMES).unwrap_or_default();
    let mut names = names.split(':').map(str::to_string);
    (LISTEN_FDS_START..LISTEN_FDS_START + count)
        .map(|raw| {
            // Whether `raw` is open, asked without touching it: nothing may
            // borrow a descriptor that might be closed (or someone else's).
            if let Err(e) = std::fs::symlink_metadata(format!("/proc/self/fd/{raw}")) {
                if std::path::Path::new("/proc/self/fd").is_dir() {
                    return Err(Error::Activation {
                        reason: format!("LISTEN_FDS={count} but fd {raw} is not open ({e})"),
                    });
                }
            }
            // SAFETY: `raw` is open (checked above when /proc is there), and
            // the protocol hands it to this process alone: LISTEN_PID names
            // us, and TAKEN makes this the only call that takes ownership.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| Error::Activation {
                reason: format!("LISTEN_FDS={count} but fd {raw} is unusable ({})", e.desc()),
            })?;
            let name = names.next().filter(|n| !n.is_empty());
            Ok(ListenFd { fd, name })
        })
        .collect()
}

/// How many descriptors `LISTEN_PID` and `LISTEN_FDS` pass to process `me`:
/// none when either is unset or the pid is another process's; an error when
/// the count is not a plausible number.
fn passed_count(pid: Option<&str>, count: Option<&str>, me: u32) -> Result<Option<RawFd>> {
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(me) {
        log::debug!("LISTEN_PID={pid} is not this process; ignoring LISTEN_FDS");
        return Ok(None);
    }
    let n = count
        .parse()
        .ok()
        .filter(|&n| (0..=1024).contains(&n))
        .ok_or_else(|| Error::Activation {
            reason: format!("LISTEN_FDS={count} is not a number of descriptors"),
        })?;
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    #[test]
    #[ignore = "run by passed_sockets_are_taken_once_and_closed_ones_refused, in a child"]
    fn child_takes_its_sockets() {
        if std::env::var_os("PIPER_UNIT_CHILD").is_none() {
            return;
        }
        // Alone in this process (one test thread): the variables are ours.
        std::env::set_var("LISTEN_PID", std::process::id().to_string());
        let want: usize = std::env::var("PIPER_UNIT_WANT").unwrap().parse().unwrap();
        match listen_fds() {
            Ok(fds) => {
                assert_eq!(fds.len(), want);
                assert_eq!(fds[0].fd.as_raw_fd(), LISTEN_FDS_START);
                assert_eq!(fds[0].name.as_deref(), Some("x"));
                let flags = fcntl(&fds[0].fd, FcntlArg::F_GETFD).unwrap();
                assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
                assert!(listen_fds().unwrap().is_empty(), "taken once");
            }
            Err(e) => {
                assert_eq!(want, 0, "{e}");
                assert!(e.to_string().contains("fd 4 is not open"), "{e}");
            }
        }
    }

    fn run_child(count: &str, want: &str) -> std::process::ExitStatus {
        let (socket, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let raw = socket.as_raw_fd();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "activation::tests::child_takes_its_sockets",
            "--ignored",
            "--test-threads=1",
        ])
        .env("PIPER_UNIT_CHILD", "1")
        .env("PIPER_UNIT_WANT", want)
        .env("LISTEN_FDS", count)
        .env("LISTEN_FDNAMES", "x")
        .stderr(std::process::Stdio::null());
        // SAFETY: dup2 is async-signal-safe; it puts the socket at fd 3,
        // without FD_CLOEXEC, as a service manager would. The new fd is
        // forgotten, not closed: exec hands it to the child's test.
        unsafe {
            cmd.pre_exec(move || {
                let socket = std::os::fd::BorrowedFd::borrow_raw(raw);
                if raw == LISTEN_FDS_START {
                    // dup2 onto itself would keep FD_CLOEXEC.
                    fcntl(socket, FcntlArg::F_SETFD(FdFlag::empty()))?;
                } else {
                    std::mem::forget(nix::unistd::dup2_raw(socket, LISTEN_FDS_START)?);
                }
                // Whatever the runner left open at fd 4 (a jobserver pipe),
                // the child must find it closed.
                let _ = nix::unistd::close(LISTEN_FDS_START + 1);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        }
        out.status
    }

    #[test]
    fn passed_sockets_are_taken_once_and_closed_ones_refused() {
        let status = run_child("1", "1");
        assert!(status.success(), "one socket: {status:?}");
        let status = run_child("2", "0");
        assert!(status.success(), "fd 4 is not open: {status:?}");
    }

    #[test]
    fn descriptors_are_ours_only_when_listen_pid_names_us() {
        assert_eq!(passed_count(Some("42"), Some("2"), 42).unwrap(), Some(2));
        assert_eq!(passed_count(Some("42"), Some("0"), 42).unwrap(), Some(0));
        assert_eq!(
            passed_count(Some("43"), Some("2"), 42).unwrap(),
            None,
            "another process's"
        );
        assert_eq!(passed_count(Some("x"), Some("2"), 42).unwrap(), None);
        assert_eq!(passed_count(None, Some("2"), 42).unwrap(), None);
        assert_eq!(passed_count(Some("42"), None, 42).unwrap(), None);
        for bad in ["-1", "1025", "two", ""] {
            assert!(passed_count(Some("42"), Some(bad), 42).is_err(), "{bad}");
        }
        assert_eq!(passed_count(Some("42"), Some("1024"), 42).unwrap(), Some(1024));
    }
}
