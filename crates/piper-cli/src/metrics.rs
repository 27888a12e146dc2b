//! Metrics for Prometheus, as the launcher and the bridge serve them
//! (`--metrics ADDR`): where to listen, the text exposition format, and
//! the little HTTP it takes (`GET /metrics`, and a proper refusal of
//! anything else), on an [`Endpoint`] in the program's own event loop.
//!
//! ```
//! use piper_cli::metrics::{Exposition, Kind};
//!
//! let mut text = Exposition::new();
//! text.family("piper_node_received_total", Kind::Counter, "Messages received.");
//! text.sample("piper_node_received_total", &[("node", "ping")], 42);
//! let lines = [
//!     "# HELP piper_node_received_total Messages received.",
//!     "# TYPE piper_node_received_total counter",
//!     "piper_node_received_total{node=\"ping\"} 42",
//! ];
//! assert!(text.finish().lines().eq(lines));
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::Instant;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    UnixAddr,
};
use piper_core::trust::Policy;

use crate::endpoint::{Endpoint, Frame};

/// The largest request head taken: a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8192;

/// Where the metrics are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix stream socket at this path.
    Unix(PathBuf),
}

impl Address {
    /// `HOST:PORT` (an IP address, `[v6]`, or `localhost`) or a path (it
    /// has a `/`). An address that is not loopback is refused unless
    /// `remote` says it is meant: the metrics name every node.
    pub fn parse(text: &str, remote: bool) -> Result<Address, String> {
        if text.contains('/') {
            return Ok(Address::Unix(PathBuf::from(text)));
        }
        let bad = || {
            format!("--metrics {text}: give a loopback HOST:PORT (127.0.0.1:9464, [::1]:9464, localhost:9464) or a socket path")
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let ip: IpAddr = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad())?,
        };
        if !ip.is_loopback() && !remote {
            return Err(format!(
                "--metrics {text}: not a loopback address; the metrics name every node: \
                 give --metrics-remote to serve them there"
            ));
        }
        Ok(Address::Tcp(SocketAddr::new(ip, port)))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A metrics endpoint: the listener, its connections, and the socket file
/// it removes when dropped.
#[derive(Debug)]
pub struct Server {
    endpoint: Endpoint,
    file: Option<PathBuf>,
    trust: Policy,
}

impl Server {
    /// Listens on `address`. A socket file is made 0600 (a stale one is
    /// replaced; a live one, or anything else there, is an error).
    pub fn listen(address: &Address) -> Result<Server, String> {
        let fail = |what: &str, e: nix::errno::Errno| format!("cannot {what} --metrics {address}: {}", e.desc());
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let (fd, file) = match address {
            Address::Tcp(addr) => {
                let family = match addr {
                    SocketAddr::V4(_) => AddressFamily::Inet,
                    SocketAddr::V6(_) => AddressFamily::Inet6,
                };
                let fd = socket(family, SockType::Stream, flags, None).map_err(|e| fail("open", e))?;
                setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| fail("set up", e))?;
                let bound = match addr {
                    SocketAddr::V4(a) => bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(*a)),
                    SocketAddr::V6(a) => bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(*a)),
                };
                bound.map_err(|e| fail("bind", e))?;
                (fd, None)
            }
            Address::Unix(path) => {
                let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None).map_err(|e| fail("open", e))?;
                let addr = UnixAddr::new(path).map_err(|e| fail("use", e))?;
                clear_stale(path)?;
                bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(|e| fail("bind", e))?;
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
                (fd, Some(path.clone()))
            }
        };
        listen(&fd, Backlog::new(16).expect("a small backlog")).map_err(|e| fail("listen on", e))?;
        let endpoint = Endpoint::new(fd, Frame::HttpHead, MAX_HEAD).map_err(|e| fail("serve", e))?;
        Ok(Server {
            endpoint,
            file,
            trust: Policy::default(),
        })
    }

    /// Answers every request that is complete; `render` makes the
    /// exposition text, once, if any request wants it.
    pub fn serve(&mut self, now: Instant, render: impl FnOnce() -> String) {
        let requests = self.endpoint.requests(now);
        let mut render = Some(render);
        let mut text: Option<String> = None;
        for request in requests {
            // A Unix socket's peers are judged as a node's senders are.
            let allowed = request.peer.is_none_or(|p| p.trusted(&self.trust));
            let answer = answer(&request.bytes, request.whole, allowed, || {
                text.get_or_insert_with(|| render.take().map_or_else(String::new, |r| r()))
                    .clone()
            });
            self.endpoint.respond(request.id, answer);
        }
    }

    /// When the next connection runs out of time, if any is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.endpoint.next_deadline()
    }
}

impl AsFd for Server {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.endpoint.as_fd()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(path) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Makes way for a socket at `path`: nothing there, or a socket nobody
/// listens on (removed); anything else is an error.
fn clear_stale(path: &std::path::Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let taken = || format!("--metrics {}: something is there already", path.display());
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Err(taken());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(format!("--metrics {}: another program listens there", path.display())),
        Err(e) if e.raw_os_error() == Some(nix::libc::ECONNREFUSED) => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))
        }
        Err(_) => Err(taken()),
    }
}

/// The HTTP answer to a request head: the metrics for `GET /metrics` (and
/// `HEAD`), a refusal with its status for anything else. `whole` is false
/// when the head was longer than we take; `allowed`, whether the peer may
/// see the metrics.
pub fn answer(head: &[u8], whole: bool, allowed: bool, text: impl FnOnce() -> String) -> Vec<u8> {
    if !whole {
        return refusal("431 Request Header Fields Too Large", "");
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return refusal("400 Bad Request", "");
    };
    if !version.starts_with("HTTP/1.") {
        return refusal("505 HTTP Version Not Supported", "");
    }
    if !allowed {
        return refusal("403 Forbidden", "");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return refusal("404 Not Found", "");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return refusal("405 Method Not Allowed", "Allow: GET, HEAD\r\n"),
    };
    let body = text();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The text exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn refusal(status: &str, headers: &str) -> Vec<u8> {
    let body = format!("{status}\n");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a metric family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// The text exposition format, written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Nothing written yet.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts the family `name`: its help and its type. Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    /// One sample of `name` with `labels`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (k, (label, value)) in labels.iter().enumerate() {
                if k > 0 {
                    self.text.push(',');
                }
                let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{value}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family of one sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// The build's version, as every piper program's `piper_build_info` says.
pub fn build_info(text: &mut Exposition, program: &str, version: &str) {
    text.family(
        "piper_build_info",
        Kind::Gauge,
        "The program and its version; always 1.",
    );
    text.sample("piper_build_info", &[("program", program), ("version", version)], 1);
}

/// Seconds since the Unix epoch of `at`, an instant on this process's
/// monotonic clock, as `_timestamp_seconds` gauges want: `now` and
/// `wall_now` are the same moment on both clocks.
pub fn unix_seconds(at: Instant, now: Instant, wall_now: std::time::SystemTime) -> f64 {
    let wall = wall_now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    wall - now.saturating_duration_since(at).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn loopback_or_a_path_unless_remote_is_said() {
        let tcp = |s: &str| Address::Tcp(s.parse().unwrap());
        assert_eq!(Address::parse("127.0.0.1:9464", false), Ok(tcp("127.0.0.1:9464")));
        assert_eq!(Address::parse("[::1]:9464", false), Ok(tcp("[::1]:9464")));
        assert_eq!(Address::parse("localhost:0", false), Ok(tcp("127.0.0.1:0")));
        assert_eq!(Address::parse("127.8.9.10:1", false), Ok(tcp("127.8.9.10:1")));
        assert_eq!(
            Address::parse("./m.sock", false),
            Ok(Address::Unix(PathBuf::from("./m.sock")))
        );
        let refused = Address::parse("0.0.0.0:9464", false).unwrap_err();
        assert!(refused.contains("not a loopback address") && refused.contains("--metrics-remote"));
        assert_eq!(Address::parse("0.0.0.0:9464", true), Ok(tcp("0.0.0.0:9464")));
        for bad in ["9464", "host:9464", "127.0.0.1:", "127.0.0.1:99999", ":1", ""] {
            assert!(Address::parse(bad, true).is_err(), "{bad}");
        }
    }

    fn status(answer: &[u8]) -> String {
        let text = String::from_utf8_lossy(answer);
        text.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn get_metrics_is_answered_and_anything_else_refused() {
        let get = |head: &str| answer(head.as_bytes(), true, true, || "x 1\n".into());
        let ok = String::from_utf8(get("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")).unwrap();
        assert_eq!(
            ok,
            format!("HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nx 1\n")
        );
        assert!(status(&get("GET /metrics?x=1 HTTP/1.0\r\n\r\n")).ends_with("200 OK"));
        let head = get("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(String::from_utf8_lossy(&head).ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
        let cases = [
            ("POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            ("DELETE /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            ("GET / HTTP/1.1\r\n\r\n", "404 Not Found"),
            ("GET /metrics/x HTTP/1.1\r\n\r\n", "404 Not Found"),
            ("GET /metrics\r\n\r\n", "400 Bad Request"),
            ("\r\n\r\n", "400 Bad Request"),
            ("GET /metrics SPDY/3\r\n\r\n", "505 HTTP Version Not Supported"),
        ];
        for (request, want) in cases {
            let a = get(request);
            assert_eq!(status(&a), format!("HTTP/1.1 {want}"), "{request:?}");
            assert!(!String::from_utf8_lossy(&a).contains("x 1"));
        }
        assert!(String::from_utf8_lossy(&get("PUT /metrics HTTP/1.1\r\n\r\n")).contains("\r\nAllow: GET, HEAD\r\n"));
        let long = answer(b"GET /metrics HTTP/1.1\r\nX: aaaa", false, true, String::new);
        assert_eq!(status(&long), "HTTP/1.1 431 Request Header Fields Too Large");
        let stranger = answer(b"GET /metrics HTTP/1.1\r\n\r\n", true, false, String::new);
        assert_eq!(status(&stranger), "HTTP/1.1 403 Forbidden");
    }

    #[test]
    fn labels_and_help_are_escaped() {
        let mut text = Exposition::new();
        text.family("a_total", Kind::Counter, "back\\slash\nnewline");
        text.sample("a_total", &[("node", "q\"b\\n\n"), ("x", "y")], 1.5);
        text.single("b", Kind::Gauge, "b.", 0);
        assert_eq!(
            text.finish(),
            "# HELP a_total back\\\\slash\\nnewline\n# TYPE a_total counter\n\
             a_total{node=\"q\\\"b\\\\n\\n\",x=\"y\"} 1.5\n# HELP b b.\n# TYPE b gauge\nb 0\n"
        );
    }

    #[test]
    fn a_moment_on_the_monotonic_clock_is_dated_by_the_wall_clock() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(unix_seconds(now - Duration::from_millis(1500), now, wall), 998.5);
        assert_eq!(unix_seconds(now, now, wall), 1000.0);
    }
}
