//! A listening stream socket that answers one request per connection,
//! without ever blocking the event loop that serves it: the launcher's
//! control socket and the metrics endpoints of the launcher and the bridge.
//!
//! Everything is non-blocking and bounded: at most [`MAX_CONNECTIONS`] at
//! once (the rest wait in the kernel's backlog), a request of at most the
//! size given, and [`TIMEOUT`] from accept to the last byte of the answer,
//! after which the connection is closed, whatever it was doing. The
//! endpoint keeps its listener and connections in an epoll set of its own,
//! whose one descriptor the owner's loop polls ([`AsFd`]); when it is
//! readable, [`Endpoint::requests`] does what can be done and returns the
//! requests that are complete, which the owner answers with
//! [`Endpoint::respond`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, recv, send, MsgFlags, SockFlag};
use piper_core::Credentials;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// How long a connection may take, from accept to the last byte answered.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The listener's token in the epoll set; connections are their slot.
const LISTENER: u64 = u64::MAX;

/// Where a request ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// At the first newline (or the end of the stream).
    Line,
    /// At the blank line after an HTTP request's head.
    HttpHead,
}

impl Frame {
    /// The length of the request in `bytes`, if it is complete.
    fn end(self, bytes: &[u8]) -> Option<usize> {
        match self {
            Frame::Line => bytes.iter().position(|&b| b == b'\n').map(|i| i + 1),
            Frame::HttpHead => bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4),
        }
    }
}

/// A request read whole (or cut at the size limit).
#[derive(Debug)]
pub struct Request {
    /// Which connection to answer.
    pub id: usize,
    /// The request's bytes, with its end (newline or blank line).
    pub bytes: Vec<u8>,
    /// Whether it ended within the size limit; if not, `bytes` holds what
    /// came, up to the limit.
    pub whole: bool,
    /// Who sent it, on a Unix socket.
    pub peer: Option<Credentials>,
}

#[derive(Debug)]
enum Stage {
    Reading(Vec<u8>),
    /// Handed to the owner, not answered yet.
    Asked,
    Writing {
        out: Vec<u8>,
        at: usize,
    },
    /// Answered, and our end shut: what the peer still sends is read and
    /// thrown away until it closes its end, so that closing ours does not
    /// reset the connection before the peer has read the answer (as it
    /// would with unread bytes left, such as a request cut at the limit).
    Lingering,
}

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    deadline: Instant,
    stage: Stage,
    peer: Option<Credentials>,
}

/// A listener and its connections.
#[derive(Debug)]
pub struct Endpoint {
    listener: OwnedFd,
    epoll: Epoll,
    conns: Vec<Option<Conn>>,
    /// Whether the listener is in the epoll set (not while every slot is
    /// taken).
    listening: bool,
    frame: Frame,
    max_request: usize,
    unix: bool,
}

impl Endpoint {
    /// Serves `listener`, a bound, listening, non-blocking stream socket;
    /// requests end as `frame` says, and are at most `max_request` bytes.
    pub fn new(listener: OwnedFd, frame: Frame, max_request: usize) -> nix::Result<Endpoint> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        use nix::sys::socket::SockaddrLike;
        let unix = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(listener.as_raw_fd())
            .is_ok_and(|a| a.family() == Some(nix::sys::socket::AddressFamily::Unix));
        Ok(Endpoint {
            listener,
            epoll,
            conns: (0..MAX_CONNECTIONS).map(|_| None).collect(),
            listening: true,
            frame,
            max_request,
            unix,
        })
    }

    /// Accepts, reads and writes what is ready now, closes connections
    /// past their time, and returns the requests that are complete.
    pub fn requests(&mut self, now: Instant) -> Vec<Request> {
        let mut ready = [EpollEvent::empty(); MAX_CONNECTIONS + 1];
        let n = self.epoll.wait(&mut ready, EpollTimeout::ZERO).unwrap_or(0);
        let mut requests = Vec::new();
        for event in &ready[..n] {
            match event.data() {
                LISTENER => self.accept(now),
                slot => {
                    if let Some(request) = self.progress(slot as usize) {
                        requests.push(request);
                    }
                }
            }
        }
        for slot in 0..self.conns.len() {
            if self.conns[slot].as_ref().is_some_and(|c| c.deadline <= now) {
                log::debug!("closing a connection that took over {TIMEOUT:?}");
                self.close(slot);
            }
        }
        requests
    }

    /// Answers request `id` with `answer`; the connection closes once it is
    /// written (or its time is up).
    pub fn respond(&mut self, id: usize, answer: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        conn.stage = Stage::Writing { out: answer, at: 0 };
        let _ = self
            .epoll
            .modify(&conn.fd, &mut EpollEvent::new(EpollFlags::EPOLLOUT, id as u64));
        self.progress(id);
    }

    /// When the next connection runs out of time, if any is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().flatten().map(|c| c.deadline).min()
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    fn accept(&mut self, now: Instant) {
        while let Some(slot) = self.conns.iter().position(Option::is_none) {
            let fd = match accept4(&self.listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => fd,
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    log::warn!("cannot accept a connection: {}", e.desc());
                    return;
                }
            };
            let peer = if self.unix {
                piper_core::control::peer(&fd)
            } else {
                None
            };
            if self
                .epoll
                .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, slot as u64))
                .is_err()
            {
                continue;
            }
            self.conns[slot] = Some(Conn {
                fd,
                deadline: now + TIMEOUT,
                stage: Stage::Reading(Vec::new()),
                peer,
            });
        }
        // Every slot taken: the rest wait in the backlog until one frees.
        if self.listening && self.epoll.delete(&self.listener).is_ok() {
            self.listening = false;
        }
    }

    /// Reads or writes what connection `slot` is ready for; returns its
    /// request once it is complete.
    fn progress(&mut self, slot: usize) -> Option<Request> {
        let (frame, max) = (self.frame, self.max_request);
        let conn = self.conns.get_mut(slot)?.as_mut()?;
        let (request, close) = match &mut conn.stage {
            Stage::Reading(buf) => {
                let closed = read_some(&conn.fd, buf, frame, max);
                let end = frame.end(buf);
                // A line may end with the stream; an HTTP head may not.
                let whole = end.is_some_and(|e| e <= max) || (closed && frame == Frame::Line && !buf.is_empty());
                if whole || buf.len() >= max {
                    let mut bytes = std::mem::take(buf);
                    bytes.truncate(end.unwrap_or(bytes.len()).min(max));
                    conn.stage = Stage::Asked;
                    // Nothing more is read; a peer that sends more waits.
                    let _ = self
                        .epoll
                        .modify(&conn.fd, &mut EpollEvent::new(EpollFlags::empty(), slot as u64));
                    let request = Request {
                        id: slot,
                        bytes,
                        whole,
                        peer: conn.peer,
                    };
                    (Some(request), false)
                } else {
                    (None, closed)
                }
            }
            Stage::Asked => (None, false),
            Stage::Lingering => (None, discard(&conn.fd)),
            Stage::Writing { out, at } => {
                let mut done = true;
                while *at < out.len() {
                    match send(conn.fd.as_raw_fd(), &out[*at..], MsgFlags::MSG_NOSIGNAL) {
                        Ok(k) => *at += k,
                        Err(Errno::EINTR) => {}
                        Err(Errno::EAGAIN) => {
                            done = false;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if done && *at == out.len() {
                    conn.stage = Stage::Lingering;
                    let _ = nix::sys::socket::shutdown(conn.fd.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                    let _ = self
                        .epoll
                        .modify(&conn.fd, &mut EpollEvent::new(EpollFlags::EPOLLIN, slot as u64));
                    (None, false)
                } else {
                    (None, done)
                }
            }
        };
        if close {
            self.close(slot);
        }
        request
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            let _ = self.epoll.delete(&conn.fd);
        }
        if !self.listening
            && self
                .epoll
                .add(&self.listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
                .is_ok()
        {
            self.listening = true;
        }
    }
}

/// Reads what `fd` holds into `buf`, until the request is complete, the
/// limit is reached, or nothing is left; returns whether the peer closed
/// its end (or the connection failed).
fn read_some(fd: &OwnedFd, buf: &mut Vec<u8>, frame: Frame, max: usize) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match recv(fd.as_raw_fd(), &mut chunk, MsgFlags::empty()) {
            Ok(0) => return true,
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                if buf.len() >= max || frame.end(buf).is_some() {
                    return false;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
}

/// Reads and throws away what `fd` holds; returns whether the peer closed
/// its end (or the connection failed).
fn discard(fd: &OwnedFd) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match recv(fd.as_raw_fd(), &mut chunk, MsgFlags::empty()) {
            Ok(0) => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
}

impl AsFd for Endpoint {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    fn endpoint(tag: &str, frame: Frame, max: usize) -> (Endpoint, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("piper-endpoint-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        (Endpoint::new(listener.into(), frame, max).unwrap(), path)
    }

    /// Serves until `cond` holds, answering each request with `answer`.
    fn serve_until(
        e: &mut Endpoint,
        mut answer: impl FnMut(&Request) -> Vec<u8>,
        mut cond: impl FnMut(&Endpoint) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond(e) {
            assert!(Instant::now() < deadline, "never happened");
            for r in e.requests(Instant::now()) {
                let a = answer(&r);
                e.respond(r.id, a);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_line_is_answered_and_the_connection_closed() {
        let (mut e, path) = endpoint("line", Frame::Line, 64);
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                let mut s = UnixStream::connect(&path).unwrap();
                s.write_all(b"status\nmore").unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                answer
            }
        });
        let mut seen = Vec::new();
        serve_until(
            &mut e,
            |r| {
                seen.push((r.bytes.clone(), r.whole, r.peer.map(|p| p.uid)));
                b"ok\n".repeat(100_000)
            },
            |_| client.is_finished(),
        );
        assert_eq!(client.join().unwrap().len(), 300_000, "a large answer is written whole");
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(seen, [(b"status\n".to_vec(), true, Some(me))]);
        // Closed once the client has closed its end.
        serve_until(&mut e, |_| Vec::new(), |e| e.open() == 0);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn an_oversized_request_is_cut_and_a_silent_peer_timed_out() {
        let (mut e, path) = endpoint("cut", Frame::HttpHead, 16);
        let mut big = UnixStream::connect(&path).unwrap();
        big.write_all(&[b'x'; 100]).unwrap();
        let silent = UnixStream::connect(&path).unwrap();
        let got = std::cell::RefCell::new(Vec::new());
        serve_until(
            &mut e,
            |r| {
                got.borrow_mut().push((r.bytes.len(), r.whole));
                b"no".to_vec()
            },
            |_| !got.borrow().is_empty(),
        );
        assert_eq!(got.into_inner(), [(16, false)]);
        // Answered whole, though it sent more than was read: no reset.
        let mut answer = [0u8; 2];
        big.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"no");
        drop(big);
        serve_until(&mut e, |_| Vec::new(), |e| e.open() == 1);
        let now = Instant::now();
        assert!(e.next_deadline().is_some_and(|d| d <= now + TIMEOUT));
        e.requests(now + TIMEOUT + Duration::from_millis(1));
        assert_eq!(e.open(), 0);
        assert_eq!(e.next_deadline(), None);
        let mut rest = Vec::new();
        let _ = (&silent).read_to_end(&mut rest);
        assert!(rest.is_empty(), "closed without an answer");
        drop(silent);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn connections_are_bounded_and_the_rest_wait_their_turn() {
        let (mut e, path) = endpoint("bound", Frame::Line, 64);
        let clients: Vec<UnixStream> = (0..MAX_CONNECTIONS + 3)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        e.requests(Instant::now());
        assert_eq!(e.open(), MAX_CONNECTIONS);
        let mut answered = 0;
        for mut c in clients {
            c.write_all(b"x\n").unwrap();
            let mut out = String::new();
            let reader = std::thread::spawn(move || {
                c.read_to_string(&mut out).unwrap();
                out
            });
            serve_until(&mut e, |_| b"y".to_vec(), |_| reader.is_finished());
            assert_eq!(reader.join().unwrap(), "y");
            answered += 1;
        }
        assert_eq!(answered, MAX_CONNECTIONS + 3);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn frames_end_where_their_protocol_says() {
        assert_eq!(Frame::Line.end(b"ab\ncd"), Some(3));
        assert_eq!(Frame::Line.end(b"ab"), None);
        assert_eq!(Frame::HttpHead.end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(Frame::HttpHead.end(b"GET / HTTP/1.1\r\n"), None);
    }
}
