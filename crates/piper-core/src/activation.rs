//! Socket activation: the one home of the `LISTEN_FDS` protocol.
//!
//! systemd (or `systemd-socket-activate`) binds the socket, then starts the
//! service with the socket as fd 3 and sets `LISTEN_PID` to the service's pid,
//! `LISTEN_FDS` to the number of fds, and `LISTEN_FDNAMES` to their names,
//! colon-separated. Datagrams sent while the service is down wait in the
//! socket's queue and are read when it starts.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::error::{Error, Result};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// One socket passed by the service manager.
#[derive(Debug)]
pub struct ListenFd {
    /// The descriptor, now owned by this process.
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES`, if given.
    pub name: Option<String>,
}

/// Takes the descriptors passed with `LISTEN_FDS`, if they are meant for this
/// process, and removes the variables so that nothing takes them twice or
/// hands them to children. Returns none when there are none.
pub fn listen_fds() -> Result<Vec<ListenFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        log::debug!("LISTEN_PID={pid} is not this process; ignoring LISTEN_FDS");
        return Ok(Vec::new());
    }
    let count: RawFd = count.parse().map_err(|_| Error::Activation {
        reason: format!("LISTEN_FDS={count} is not a number"),
    })?;
    let mut names = names.as_deref().unwrap_or("").split(':').map(str::to_string);
    (LISTEN_FDS_START..LISTEN_FDS_START + count)
        .map(|raw| {
            // SAFETY: the borrow lives for this one call; if `raw` is not open,
            // fcntl fails with EBADF and nothing else happens.
            let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
            fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| Error::Activation {
                reason: format!("LISTEN_FDS={count} but fd {raw} is unusable ({})", e.desc()),
            })?;
            // SAFETY: the fd is open (F_SETFD just succeeded), and the
            // protocol hands it to this process alone; the variables are gone,
            // so no second call can take ownership of it again.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let name = names.next().filter(|n| !n.is_empty());
            Ok(ListenFd { fd, name })
        })
        .collect()
}
