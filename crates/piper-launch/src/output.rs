//! What the user sees of a running ring: every node's message lines in one
//! stream, and on a terminal a status line at the bottom.
//!
//! Two ways to one stream, chosen per run:
//! - **direct**: every node writes to the launcher's own stdout (a pipe or a
//!   file). Nodes write whole lines, at most `PIPE_BUF` bytes at a time, so
//!   lines never interleave mid-line, they stay in the order they were
//!   written, and the launcher does no work per line. Used when the lines
//!   go out as the nodes print them (no prefix, no timestamps, not a
//!   terminal): `piper-launch --nodes ping,pong | cat` is the seed's output.
//! - **relay**: each node writes to a pipe of its own, and the launcher
//!   reads them all in its event loop, puts the node's name (padded, in a
//!   colour of its own unless `NO_COLOR` is set) and, if asked, a timestamp
//!   before each whole line, and writes them out. Used on a terminal, or
//!   when a prefix or timestamps are asked for; only the relay can keep a
//!   status line at the bottom of a terminal without tearing the lines
//!   above it.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nix::fcntl::OFlag;
use piper_core::Name;

/// Foreman's colours: cyan, yellow, green, magenta, red, blue.
const COLOURS: [&str; 6] = ["36", "33", "32", "35", "31", "34"];

/// Whether a status line is drawn on stderr now: whoever else writes to
/// stderr (the launcher's log lines, see [`StderrClearingStatus`]) clears
/// it first, so that no line is ever written into it.
static DRAWN: AtomicBool = AtomicBool::new(false);

/// stderr for the launcher's log lines: a status line drawn there is
/// cleared first (and drawn again at the next tick).
#[derive(Debug)]
pub struct StderrClearingStatus;

impl Write for StderrClearingStatus {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if DRAWN.swap(false, Ordering::SeqCst) {
            err.write_all(b"\r\x1b[K")?;
        }
        err.write_all(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How lines reach the launcher's stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Nodes write straight to the launcher's stdout.
    Direct,
    /// Nodes write to pipes the launcher relays.
    Relay,
}

/// How lines are dressed and where the status line goes.
#[derive(Debug)]
pub struct Display {
    pub route: Route,
    prefix: bool,
    colour: bool,
    timestamps: bool,
    started: Instant,
    /// The width names are padded to.
    width: usize,
    /// Lines formatted and not yet written, to stdout and to stderr.
    pending: Vec<u8>,
    pending_err: Vec<u8>,
    /// Whether a status line goes to stderr (a terminal), and the one
    /// drawn now, if any.
    status_line: bool,
    drawn: Option<String>,
    /// The terminal's width in columns, when known: a status line is cut
    /// to fit one row, since `\r\x1b[K` clears only the row it is on.
    columns: Option<usize>,
    /// Whether a write to stdout found its reader gone (`EPIPE`).
    stdout_gone: bool,
}

/// The read end of one node's output pipe, and its unfinished line.
#[derive(Debug)]
pub struct Relay {
    fd: OwnedFd,
    partial: Vec<u8>,
    /// A node's stderr, relayed as it is to ours (so that its warnings and
    /// summary never tear the status line): no prefix, no timestamp.
    stderr: bool,
}

impl Relay {
    /// A pipe for one node: the read end (ours, non-blocking) and the write
    /// end (the child's stdout).
    pub fn pipe(stderr: bool) -> nix::Result<(Relay, OwnedFd)> {
        let (read, write) = node_pipe()?;
        Ok((
            Relay {
                fd: read,
                partial: Vec::new(),
                stderr,
            },
            write,
        ))
    }
}

/// A pipe from a node to the launcher: the read end non-blocking (the
/// launcher's loop never waits on one node), the node's end blocking (a
/// node outrunning the launcher waits, as a program printing to a slow
/// terminal does). Both close on exec; the node's end is dup'ed into place.
pub fn node_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let flags = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok((read, write))
}

impl AsFd for Relay {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Display {
    /// `names` sets the padding; `status_line` whether stderr shows one.
    pub fn new(
        route: Route,
        prefix: bool,
        colour: bool,
        timestamps: bool,
        names: &[Name],
        status_line: bool,
    ) -> Display {
        Display {
            route,
            prefix,
            colour,
            timestamps,
            started: Instant::now(),
            width: names.iter().map(|n| n.as_str().len()).max().unwrap_or(0).min(24),
            pending: Vec::new(),
            pending_err: Vec::new(),
            status_line,
            drawn: None,
            columns: if status_line { terminal_columns() } else { None },
            stdout_gone: false,
        }
    }

    /// Reads what `relay` holds for node `index` and formats its whole
    /// lines. Returns false once the node has closed its end (it exited).
    pub fn read(&mut self, relay: &mut Relay, index: usize, name: &Name) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        let open = loop {
            match nix::unistd::read(relay.fd.as_fd(), &mut chunk) {
                Ok(0) => break false,
                Ok(n) => relay.partial.extend_from_slice(&chunk[..n]),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break true,
            }
        };
        let mut start = 0;
        while let Some(end) = relay.partial[start..].iter().position(|&b| b == b'\n') {
            self.line(relay.stderr, index, name, &relay.partial[start..start + end]);
            start += end + 1;
        }
        relay.partial.drain(..start);
        if !open && !relay.partial.is_empty() {
            // A last line without its newline: shown whole all the same.
            let line = std::mem::take(&mut relay.partial);
            self.line(relay.stderr, index, name, &line);
        }
        open
    }

    fn line(&mut self, stderr: bool, index: usize, name: &Name, line: &[u8]) {
        if stderr {
            self.pending_err.extend_from_slice(line);
            self.pending_err.push(b'\n');
            return;
        }
        if self.timestamps {
            let t = self.started.elapsed().as_secs_f64();
            let _ = write!(self.pending, "{t:9.3} ");
        }
        if self.prefix {
            let (on, off) = match self.colour {
                true => (format!("\x1b[{}m", COLOURS[index % COLOURS.len()]), "\x1b[0m"),
                false => (String::new(), ""),
            };
            let _ = write!(
                self.pending,
                "{on}{:<width$} |{off} ",
                name.as_str(),
                width = self.width
            );
        }
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
    }

    /// Writes the formatted lines, with the status line (if any) cleared
    /// first and drawn again below them.
    pub fn flush(&mut self) {
        if self.pending.is_empty() && self.pending_err.is_empty() {
            return;
        }
        let drawn = self.drawn.take();
        self.clear_status();
        if !self.pending.is_empty() {
            let mut out = std::io::stdout().lock();
            let written = out.write_all(&self.pending).and_then(|()| out.flush());
            if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
                self.stdout_gone = true;
            }
            self.pending.clear();
        }
        if !self.pending_err.is_empty() {
            let _ = std::io::stderr().write_all(&self.pending_err);
            self.pending_err.clear();
        }
        // The same line again: it was cut to the width and found in the
        // foreground when it was drawn, which this path (once per batch of
        // lines) need not ask again.
        if let Some(text) = drawn {
            self.draw(text);
        }
    }

    /// Shows `text` as the status line, replacing the one drawn, cut to
    /// the terminal's width.
    pub fn status(&mut self, text: String) {
        let text = fit(text, self.columns);
        let drawn = DRAWN.load(Ordering::SeqCst) && self.drawn.as_ref() == Some(&text);
        if !self.status_line || drawn {
            return;
        }
        if !in_the_foreground() {
            // Forgotten, not erased: erasing would erase the prompt too.
            self.drawn = None;
            return;
        }
        self.draw(text);
    }

    /// Writes `text` as the status line.
    fn draw(&mut self, text: String) {
        let _ = std::io::stderr().write_all(format!("\r\x1b[K{text}").as_bytes());
        DRAWN.store(true, Ordering::SeqCst);
        self.drawn = Some(text);
    }

    /// Takes the status line away (before the launcher's last words).
    pub fn clear_status(&mut self) {
        if DRAWN.swap(false, Ordering::SeqCst) {
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
        }
        self.drawn = None;
    }

    /// The terminal changed size (SIGWINCH): the status line is drawn again
    /// to the new width.
    pub fn resized(&mut self) {
        if !self.status_line {
            return;
        }
        self.columns = terminal_columns();
        if let Some(text) = self.drawn.take() {
            DRAWN.store(false, Ordering::SeqCst);
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
            self.status(text);
        }
    }

    /// Before the launcher stops (Ctrl-Z): the status line goes, and with
    /// it the `^Z` the terminal echoed after it, so that the shell's
    /// "Stopped" line starts on a clean row. It is drawn again on resume.
    pub fn suspending(&mut self) {
        if self.status_line {
            DRAWN.store(false, Ordering::SeqCst);
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
            self.drawn = None;
        }
    }

    /// Whether stdout's reader went away: a write to it failed with `EPIPE`.
    pub fn stdout_gone(&self) -> bool {
        self.stdout_gone
    }

    /// Whether a status line is kept on stderr.
    pub fn has_status_line(&self) -> bool {
        self.status_line
    }
}

/// `text` cut to fit one row of `columns` (one column is left free: writing
/// into the last one makes some terminals wrap at once).
fn fit(text: String, columns: Option<usize>) -> String {
    match columns {
        Some(columns) if text.chars().count() >= columns => text.chars().take(columns.saturating_sub(1)).collect(),
        _ => text,
    }
}

/// Whether the launcher is in its terminal's foreground process group. A
/// job sent to the background (`bg`) still runs, and its lines still come,
/// as any job's do; but a status line drawn there would erase the shell's
/// prompt and what the user is typing, again every second.
fn in_the_foreground() -> bool {
    nix::unistd::tcgetpgrp(std::io::stderr()).is_ok_and(|group| group == nix::unistd::getpgrp())
}

/// stderr's terminal width in columns, if it has one.
fn terminal_columns() -> Option<usize> {
    nix::ioctl_read_bad!(window_size, nix::libc::TIOCGWINSZ, nix::libc::winsize);
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct given, which
    // lives for the call; on a descriptor that is not a terminal it fails
    // and writes nothing.
    let got = unsafe { window_size(std::io::stderr().as_raw_fd(), &mut size) };
    match got {
        Ok(_) if size.ws_col > 0 => Some(usize::from(size.ws_col)),
        _ => None,
    }
}

/// Whether a status line may be drawn on stderr: stderr is a terminal, and
/// stdout does not go into a pipe or a socket, whose reader may well print
/// the lines onto the same screen (`| cat`, `| grep`), where the status
/// line would tear them. Lines that go to the same terminal are relayed
/// below it; lines that go to a file or another terminal never meet it.
pub fn status_line_fits() -> bool {
    use nix::sys::stat::{fstat, SFlag};
    if !std::io::stderr().is_terminal() {
        return false;
    }
    let Ok(stat) = fstat(std::io::stdout().as_fd()) else {
        return false;
    };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    kind != SFlag::S_IFIFO && kind != SFlag::S_IFSOCK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_is_cut_to_one_row_of_the_terminal() {
        let line = "piper-launch: 2/2 alive, 137000 msg/s".to_string();
        assert_eq!(fit(line.clone(), None), line);
        assert_eq!(fit(line.clone(), Some(80)), line);
        assert_eq!(fit(line.clone(), Some(20)), "piper-launch: 2/2 a");
        assert_eq!(fit(line.clone(), Some(line.len() + 1)), line);
        assert_eq!(fit(line.clone(), Some(line.len())).len(), line.len() - 1);
        assert_eq!(fit(line, Some(1)), "");
    }
}
