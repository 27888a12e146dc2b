//! Scraping a metrics endpoint as Prometheus does, and judging what it
//! says with Prometheus's own `promtool`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where an endpoint listens.
#[derive(Clone, Copy, Debug)]
pub enum At<'a> {
    /// A TCP port on 127.0.0.1.
    Port(u16),
    /// A Unix socket.
    Socket(&'a Path),
}

/// Sends `request` (a whole HTTP request) and returns the whole answer,
/// status line, headers and body.
pub fn request(at: At<'_>, request: &[u8]) -> String {
    let bound = Some(Duration::from_secs(10));
    let mut answer = Vec::new();
    match at {
        At::Port(port) => {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(bound).unwrap();
            s.write_all(request).unwrap();
            s.read_to_end(&mut answer).expect("an answer");
        }
        At::Socket(path) => {
            let mut s = UnixStream::connect(path).expect("connect");
            s.set_read_timeout(bound).unwrap();
            s.write_all(request).unwrap();
            s.read_to_end(&mut answer).expect("an answer");
        }
    }
    String::from_utf8(answer).expect("UTF-8")
}

/// `GET /metrics`: the body, after checking the status and content type.
pub fn scrape(at: At<'_>) -> String {
    let answer = request(
        at,
        b"GET /metrics HTTP/1.1\r\nHost: piper\r\nAccept: text/plain\r\n\r\n",
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())), "{head}");
    body.to_string()
}

/// The value of the sample `series` (its name and labels, as written).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// What `promtool check metrics` says of `text`: whether it passed, and
/// its output.
pub fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new(crate::tool_path("promtool").expect("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}
