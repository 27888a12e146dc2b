//! `piper-launch ctl`: asks the launcher of a socket directory, through its
//! control socket ([`crate::io::control`]), and prints what it says.
//!
//! Errors are one line and an exit code of their own
//! (`piper_cli::exit::CTL`): no launcher for this directory, permission
//! denied, unknown node, or a request the launcher could not do.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use piper_cli::args::Sockets;
use piper_cli::{exit, Failure};
use piper_core::{Name, SocketDir};
use piper_launch::cli::{Ctl, CtlCommand, StatusArgs};

use crate::io::control::{self, parse_answer, Refusal, Request};
use crate::supervisor::Act;

/// How long the launcher has to answer: it answers from its event loop,
/// at once unless it is stopped (Ctrl-Z) or stuck.
const PATIENCE: Duration = Duration::from_secs(10);

/// Runs `ctl`: the launcher's answer on stdout, or an error.
pub fn run(ctl: Ctl) -> Result<u8, Failure> {
    let sockets = Sockets {
        dir: ctl.dir,
        abstract_ns: ctl.abstract_ns,
        allow_uids: Vec::new(),
    };
    let command = ctl.command.unwrap_or(CtlCommand::Status(StatusArgs::default()));
    if ctl.status != StatusArgs::default() && !matches!(command, CtlCommand::Status(_)) {
        return Err(Failure::usage(
            "--json and --watch are status's: give them alone (`ctl --json`) or with status",
        ));
    }
    let names = |nodes: &[String]| -> Result<Vec<Name>, Failure> {
        (nodes.iter())
            .map(|n| Name::new(n).map_err(|e| Failure::new(exit::UNKNOWN_NODE, e.to_string())))
            .collect()
    };
    let (request, watch) = match &command {
        CtlCommand::Status(after) => {
            let StatusArgs { json, watch } = ctl.status.or(*after);
            (Request::Status { json }, watch)
        }
        CtlCommand::Metrics => (Request::Metrics, false),
        CtlCommand::Kick => (Request::Kick, false),
        CtlCommand::Stop { nodes } => (Request::Act(Act::Stop, names(nodes)?), false),
        CtlCommand::Start { nodes } => (Request::Act(Act::Start, names(nodes)?), false),
        CtlCommand::Restart { nodes } => (Request::Act(Act::Restart, names(nodes)?), false),
        CtlCommand::Signal { node, signal } => {
            let node = Name::new(node).map_err(|e| Failure::new(exit::UNKNOWN_NODE, e.to_string()))?;
            let sig = control::parse_signal(signal).map_err(Failure::usage)?;
            (Request::Signal(node, sig), false)
        }
    };
    let dir = sockets.open_existing().map_err(|e| no_dir(&sockets, e))?;
    if !watch {
        // A request is at most MAX_REQUEST bytes: a long list of nodes goes
        // in several, one after the other, each answered before the next.
        for request in split(request) {
            if !print(&ask(&dir, &request)?)? {
                break;
            }
        }
        return Ok(exit::OK);
    }
    // As `watch` does: the screen cleared, the answer, every second, until
    // Ctrl-C (whose default action ends us), the launcher goes, or the
    // reader does (`| head`: SIGPIPE is ignored, so EPIPE says it). Into a
    // pipe or a file, the answers follow one another with no terminal
    // codes between them, so that `| jq` reads them.
    let clear = match std::io::stdout().is_terminal() {
        true => "\x1b[H\x1b[2J",
        false => "",
    };
    loop {
        let answer = ask(&dir, &request)?;
        if !print(&format!("{clear}{answer}"))? {
            return Ok(exit::OK);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Why `ctl` cannot use the socket directory. One of another user's that
/// holds a control socket (or does not let us look) is that user's
/// launcher's: permission denied (exit 5), as its control socket would
/// answer; else there is no launcher to ask (exit 4).
fn no_dir(sockets: &Sockets, e: piper_core::Error) -> Failure {
    let path = sockets.path();
    if let piper_core::Error::InsecureDir { .. } = e {
        let me = nix::unistd::geteuid().as_raw();
        let owner = std::fs::metadata(&path).map(|m| m.uid()).ok().filter(|&uid| uid != me);
        let control = std::fs::symlink_metadata(path.join(piper_core::control::SOCKET));
        let absent = matches!(&control, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if let (Some(owner), false) = (owner, absent) {
            return Failure::new(
                exit::DENIED,
                format!(
                    "permission denied: {} is uid {owner}'s, and so is its launcher (only its own user and root may control it)",
                    path.display()
                ),
            );
        }
    }
    // A launcher started with --abstract makes no directory: a missing one
    // may be where its addresses are named.
    let hint = match (sockets.namespace(), e.raw_os_error()) {
        (piper_core::Namespace::Filesystem, Some(nix::libc::ENOENT)) => " (was it started with --abstract?)",
        _ => "",
    };
    Failure::new(
        exit::NO_LAUNCHER,
        format!("no launcher for {}: {e}{hint}", path.display()),
    )
}

/// `request` as requests of at most [`control::MAX_REQUEST`] bytes each.
fn split(request: Request) -> Vec<Request> {
    let Request::Act(act, names) = request else {
        return vec![request];
    };
    let mut requests = Vec::new();
    let mut batch: Vec<Name> = Vec::new();
    let mut len = 16;
    for name in names {
        if len + name.as_str().len() + 1 > control::MAX_REQUEST && !batch.is_empty() {
            requests.push(Request::Act(act, std::mem::take(&mut batch)));
            len = 16;
        }
        len += name.as_str().len() + 1;
        batch.push(name);
    }
    requests.push(Request::Act(act, batch));
    requests
}

/// Sends `request` to `dir`'s launcher and returns its answer's body.
fn ask(dir: &SocketDir, request: &Request) -> Result<String, Failure> {
    let none = |why: String| {
        Failure::new(
            exit::NO_LAUNCHER,
            format!("no launcher for {}: {why}", dir.path().display()),
        )
    };
    let fd = piper_core::control::connect(dir).map_err(|e| match (e.raw_os_error(), dir.namespace()) {
        // A socket file that refuses: a launcher killed with SIGKILL left
        // it, and no node was left to remove it.
        (Some(nix::libc::ECONNREFUSED), piper_core::Namespace::Filesystem) => none(format!(
            "{} is stale: the launcher that made it is gone",
            dir.display_control()
        )),
        (Some(nix::libc::ENOENT), piper_core::Namespace::Filesystem) => none(format!(
            "nothing listens on {} (was it started with --abstract?)",
            dir.display_control()
        )),
        (Some(nix::libc::ENOENT | nix::libc::ECONNREFUSED), piper_core::Namespace::Abstract) => none(format!(
            "nothing listens on {} (was it started without --abstract?)",
            dir.display_control()
        )),
        (Some(nix::libc::EACCES | nix::libc::EPERM), _) => {
            Failure::new(exit::DENIED, format!("permission denied: {e}"))
        }
        _ => Failure::new(exit::FAILURE, e.to_string()),
    })?;
    let mut stream = UnixStream::from(fd);
    let lost = |e: std::io::Error| Failure::new(exit::FAILURE, format!("the launcher stopped answering: {e}"));
    stream.set_read_timeout(Some(PATIENCE)).map_err(lost)?;
    stream.set_write_timeout(Some(PATIENCE)).map_err(lost)?;
    stream.write_all(request.line().as_bytes()).map_err(lost)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(lost)?;
    parse_answer(&answer).map_err(|refusal: Refusal| Failure::new(refusal.code(), refusal.message()))
}

/// Writes `text` to stdout: whether its reader is still there. A reader
/// gone (`| head`) is no failure, and nothing more is worth writing.
fn print(text: &str) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::new(exit::FAILURE, format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_of_nodes_goes_in_requests_that_fit() {
        let names: Vec<Name> = (0..20_000).map(|k| Name::new(&format!("node{k}")).unwrap()).collect();
        let requests = split(Request::Act(Act::Stop, names.clone()));
        assert!(requests.len() > 1);
        assert!(requests.iter().all(|r| r.line().len() <= control::MAX_REQUEST));
        let back: Vec<Name> = (requests.into_iter())
            .flat_map(|r| match r {
                Request::Act(Act::Stop, names) => names,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(back, names, "every name, in order");
        assert_eq!(split(Request::Kick), [Request::Kick]);
    }
}
