//! The control socket and its protocol: how `piper-launch ctl` asks a
//! running launcher for its status or to act on its nodes.
//!
//! One request per connection, one line each way and then the body: the
//! client sends a command line (`status`, `status json`, `metrics`,
//! `stop NAME...`, `start NAME...`, `restart NAME...`, `kick`,
//! `signal NAME SIG`); the launcher answers `ok` and what it has to say, or
//! `error KIND MESSAGE` (KIND: `usage`, `unknown`, `denied`, `failed`), and
//! closes. Plain lines, so `socat - UNIX-CONNECT:DIR/.piper-launch.sock`
//! speaks it too. Only the launcher's own user and root are answered
//! (`SO_PEERCRED`); anyone else is told `error denied`.
//!
//! The socket itself is [`piper_core::control`]'s: found from the socket
//! directory alone, claimed and reclaimed as node names are. The launcher
//! serves it from its event loop through a non-blocking
//! [`Endpoint`]: a client that stalls never holds the ring up.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use nix::sys::signal::Signal;
use piper_cli::endpoint::{Endpoint, Frame};
use piper_cli::exit;
use piper_core::control::ControlListener;
use piper_core::{Credentials, Name, SocketDir};

use crate::supervisor::Act;

/// The longest request: a command and its names (`ctl` sends a longer
/// list in several requests).
pub const MAX_REQUEST: usize = 64 * 1024;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The ring and its nodes: a table, or one JSON object.
    Status { json: bool },
    /// The metrics, as `--metrics` serves them.
    Metrics,
    /// Stop, start or restart these nodes.
    Act(Act, Vec<Name>),
    /// Start the chain again.
    Kick,
    /// Send a signal to a node's process.
    Signal(Name, Signal),
}

/// Why a request was not done; each kind has its exit code in `ctl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a request of the protocol.
    Usage(String),
    /// No node of that name in this ring.
    Unknown(String),
    /// The client is not the launcher's user or root.
    Denied(String),
    /// Understood, and could not be done.
    Failed(String),
}

impl Refusal {
    fn kind(&self) -> &'static str {
        match self {
            Refusal::Usage(_) => "usage",
            Refusal::Unknown(_) => "unknown",
            Refusal::Denied(_) => "denied",
            Refusal::Failed(_) => "failed",
        }
    }

    /// What it says.
    pub fn message(&self) -> &str {
        match self {
            Refusal::Usage(m) | Refusal::Unknown(m) | Refusal::Denied(m) | Refusal::Failed(m) => m,
        }
    }

    /// The exit code `piper-launch ctl` ends with.
    pub fn code(&self) -> u8 {
        match self {
            Refusal::Usage(_) => exit::USAGE,
            Refusal::Unknown(_) => exit::UNKNOWN_NODE,
            Refusal::Denied(_) => exit::DENIED,
            Refusal::Failed(_) => exit::FAILURE,
        }
    }
}

impl Request {
    /// Reads a request line.
    pub fn parse(line: &[u8]) -> Result<Request, Refusal> {
        let usage = |m: String| Refusal::Usage(m);
        let line = std::str::from_utf8(line).map_err(|_| usage("a request is one line of UTF-8".into()))?;
        let mut words = line.trim_end_matches('\n').split(' ').filter(|w| !w.is_empty());
        let verb = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let names = |rest: &[&str]| -> Result<Vec<Name>, Refusal> {
            if rest.is_empty() {
                return Err(usage(format!("{verb}: name at least one node")));
            }
            rest.iter()
                .map(|n| Name::new(n).map_err(|e| Refusal::Unknown(e.to_string())))
                .collect()
        };
        let none = |request: Request| match rest.is_empty() {
            true => Ok(request),
            false => Err(usage(format!("{verb} takes no arguments"))),
        };
        match verb {
            "status" => match rest[..] {
                [] => Ok(Request::Status { json: false }),
                ["json"] => Ok(Request::Status { json: true }),
                _ => Err(usage("status takes only json".into())),
            },
            "metrics" => none(Request::Metrics),
            "kick" => none(Request::Kick),
            "stop" => Ok(Request::Act(Act::Stop, names(&rest)?)),
            "start" => Ok(Request::Act(Act::Start, names(&rest)?)),
            "restart" => Ok(Request::Act(Act::Restart, names(&rest)?)),
            "signal" => match rest[..] {
                [node, sig] => Ok(Request::Signal(
                    Name::new(node).map_err(|e| Refusal::Unknown(e.to_string()))?,
                    parse_signal(sig).map_err(usage)?,
                )),
                _ => Err(usage("signal takes a node and a signal".into())),
            },
            "" => Err(usage("an empty request".into())),
            other => Err(usage(format!("'{}' is not a request", other.escape_debug()))),
        }
    }

    /// The request as a line, as the client sends it.
    pub fn line(&self) -> String {
        let names = |names: &[Name]| names.iter().map(Name::as_str).collect::<Vec<_>>().join(" ");
        match self {
            Request::Status { json: false } => "status\n".into(),
            Request::Status { json: true } => "status json\n".into(),
            Request::Metrics => "metrics\n".into(),
            Request::Kick => "kick\n".into(),
            Request::Act(Act::Stop, n) => format!("stop {}\n", names(n)),
            Request::Act(Act::Start, n) => format!("start {}\n", names(n)),
            Request::Act(Act::Restart, n) => format!("restart {}\n", names(n)),
            Request::Signal(n, sig) => format!("signal {n} {}\n", sig.as_str()),
        }
    }
}

/// A signal by name (`TERM`, `SIGTERM`, `term`) or number (`15`).
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let bad = || format!("'{}' is not a signal (TERM, SIGUSR1, 9, ...)", text.escape_debug());
    if let Ok(n) = text.parse::<i32>() {
        // Real signals all the same, but nix's `Signal`, through which every
        // signal is sent, names none of them: said, not called unknown.
        let realtime = nix::libc::SIGRTMIN()..=nix::libc::SIGRTMAX();
        if realtime.contains(&n) {
            return Err(format!(
                "'{n}' is a real-time signal ({}-{}), which ctl cannot send: send it with kill(1) to the pid `ctl status` shows",
                realtime.start(),
                realtime.end()
            ));
        }
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let full = match upper.starts_with("SIG") {
        true => upper,
        false => format!("SIG{upper}"),
    };
    full.parse().map_err(|_| bad())
}

/// The answer to a request that was done: `ok`, then `body`.
pub fn ok(body: &str) -> Vec<u8> {
    let mut answer = b"ok\n".to_vec();
    answer.extend_from_slice(body.as_bytes());
    answer
}

/// The answer to a request that was not.
pub fn refused(refusal: &Refusal) -> Vec<u8> {
    let message = refusal.message().replace('\n', " ");
    format!("error {} {message}\n", refusal.kind()).into_bytes()
}

/// Reads an answer: the body, or why the request was refused.
pub fn parse_answer(answer: &[u8]) -> Result<String, Refusal> {
    let text = String::from_utf8_lossy(answer);
    let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
    if first == "ok" {
        return Ok(body.to_string());
    }
    let lost = || Refusal::Failed("the launcher closed the connection without an answer".into());
    let rest = first.strip_prefix("error ").ok_or_else(lost)?;
    let (kind, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let message = message.to_string();
    Err(match kind {
        "usage" => Refusal::Usage(message),
        "unknown" => Refusal::Unknown(message),
        "denied" => Refusal::Denied(message),
        _ => Refusal::Failed(message),
    })
}

/// Whether a client with `peer`'s credentials is answered: the launcher's
/// own user and root, as for a node's senders (without `--allow-uid`:
/// those may send to nodes, not steer the ring).
pub fn allowed(peer: Option<Credentials>) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    peer.is_some_and(|p| p.uid == me || p.uid == 0)
}

/// The launcher's control socket, served.
#[derive(Debug)]
pub struct Control {
    endpoint: Endpoint,
    /// Held for its socket file, which goes with it.
    _listener: ControlListener,
}

impl Control {
    /// Binds `dir`'s control socket. A launcher that cannot (another
    /// launcher in the same directory has it) runs without one, and says so.
    pub fn bind(dir: &SocketDir) -> Option<Control> {
        let bound = ControlListener::bind(dir).and_then(|listener| {
            let fd = listener
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| piper_core::Error::io("duplicate", dir.display_control(), e))?;
            let endpoint = Endpoint::new(fd, Frame::Line, MAX_REQUEST)
                .map_err(|e| piper_core::Error::io("serve", dir.display_control(), e))?;
            Ok(Control {
                endpoint,
                _listener: listener,
            })
        });
        match bound {
            Ok(control) => Some(control),
            Err(e @ piper_core::Error::ControlInUse { .. }) => {
                log::warn!(
                    "{e}: another piper-launch runs in this directory, and `piper-launch ctl` reaches it, not this one"
                );
                None
            }
            Err(e) => {
                log::warn!("no control socket: {e}");
                None
            }
        }
    }

    /// The requests that are complete, each with who asked: what is not
    /// the protocol's, or not from someone allowed, is refused here.
    pub fn requests(&mut self, now: Instant) -> Vec<(usize, Request)> {
        let mut requests = Vec::new();
        for r in self.endpoint.requests(now) {
            let parsed = if !allowed(r.peer) {
                let uid = r.peer.map_or("unknown".into(), |p| p.uid.to_string());
                Err(Refusal::Denied(format!(
                    "permission denied: uid {uid} is not this launcher's (uid {}) or root",
                    nix::unistd::geteuid()
                )))
            } else if !r.whole {
                Err(Refusal::Usage(format!("a request is at most {MAX_REQUEST} bytes")))
            } else {
                Request::parse(&r.bytes)
            };
            match parsed {
                Ok(request) => requests.push((r.id, request)),
                Err(refusal) => self.endpoint.respond(r.id, refused(&refusal)),
            }
        }
        requests
    }

    /// Answers request `id`.
    pub fn respond(&mut self, id: usize, answer: Result<String, Refusal>) {
        let bytes = match answer {
            Ok(body) => ok(&body),
            Err(refusal) => refused(&refusal),
        };
        self.endpoint.respond(id, bytes);
    }

    /// When the next connection runs out of time, if any is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.endpoint.next_deadline()
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.endpoint.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<Name> {
        n.iter().map(|n| Name::new(n).unwrap()).collect()
    }

    #[test]
    fn requests_read_back_as_they_are_written() {
        let requests = [
            Request::Status { json: false },
            Request::Status { json: true },
            Request::Metrics,
            Request::Kick,
            Request::Act(Act::Stop, names(&["a"])),
            Request::Act(Act::Start, names(&["a", "b"])),
            Request::Act(Act::Restart, names(&["-x"])),
            Request::Signal(Name::new("a").unwrap(), Signal::SIGUSR1),
        ];
        for request in requests {
            assert_eq!(
                Request::parse(request.line().as_bytes()),
                Ok(request.clone()),
                "{request:?}"
            );
        }
        assert_eq!(
            Request::parse(b"status"),
            Ok(Request::Status { json: false }),
            "no newline"
        );
    }

    #[test]
    fn what_is_not_a_request_is_refused_with_its_kind() {
        let usage = |r: &[u8]| matches!(Request::parse(r), Err(Refusal::Usage(_)));
        for bad in [
            &b""[..],
            b"\n",
            b"dance\n",
            b"stop\n",
            b"kick now\n",
            b"status yaml\n",
            b"signal a\n",
            b"\xff\n",
        ] {
            assert!(usage(bad), "{bad:?}");
        }
        assert!(matches!(Request::parse(b"signal a SIGNOPE\n"), Err(Refusal::Usage(m)) if m.contains("SIGNOPE")));
        assert!(matches!(Request::parse(b"stop ../x\n"), Err(Refusal::Unknown(_))));
    }

    #[test]
    fn signals_by_name_or_number() {
        for text in ["TERM", "SIGTERM", "term", "15"] {
            assert_eq!(parse_signal(text), Ok(Signal::SIGTERM), "{text}");
        }
        assert_eq!(parse_signal("kill"), Ok(Signal::SIGKILL));
        assert!(parse_signal("0").is_err());
        let rtmax = nix::libc::SIGRTMAX();
        let said = parse_signal(&rtmax.to_string()).unwrap_err();
        assert!(
            said.contains("is a real-time signal") && said.contains("kill(1)"),
            "{said}"
        );
        assert!(parse_signal(&(rtmax + 1).to_string())
            .unwrap_err()
            .contains("is not a signal"));
        assert!(parse_signal("TERMS").is_err());
    }

    #[test]
    fn answers_carry_their_body_or_their_refusal() {
        assert_eq!(parse_answer(&ok("a\nb\n")), Ok("a\nb\n".into()));
        for refusal in [
            Refusal::Usage("u".into()),
            Refusal::Unknown("no node 'x'".into()),
            Refusal::Denied("permission denied".into()),
            Refusal::Failed("two\nlines".into()),
        ] {
            let back = parse_answer(&refused(&refusal)).unwrap_err();
            assert_eq!(back.kind(), refusal.kind());
            assert_eq!(back.message(), refusal.message().replace('\n', " "));
        }
        assert_eq!(parse_answer(b"").unwrap_err().code(), exit::FAILURE, "nothing at all");
        let codes: Vec<u8> = ["usage", "unknown", "denied", "failed"]
            .iter()
            .map(|k| parse_answer(format!("error {k} m\n").as_bytes()).unwrap_err().code())
            .collect();
        assert_eq!(codes, [exit::USAGE, exit::UNKNOWN_NODE, exit::DENIED, exit::FAILURE]);
    }

    #[test]
    fn only_our_user_and_root_are_answered() {
        let creds = |uid| Some(Credentials { pid: 1, uid, gid: 1 });
        assert!(allowed(creds(nix::unistd::geteuid().as_raw())));
        assert!(allowed(creds(0)));
        assert!(!allowed(creds(65534)) || nix::unistd::geteuid().as_raw() == 65534);
        assert!(!allowed(None));
    }
}
