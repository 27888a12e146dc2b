//! The background nodes' logs (`--log-dir`): each node's output reaches
//! the launcher through a pipe, and the launcher writes it to
//! `DIR/NAME.log`, rotated by size as svlogd and s6-log do.
//!
//! When the current file would grow past `--log-max-size`, it is renamed
//! `NAME.log.1` (the one before becomes `NAME.log.2`, and so on; the
//! oldest past `--log-keep` is replaced) and a new `NAME.log` is begun.
//! Files are cut only between lines: a node writes whole lines, and the
//! launcher writes each line whole into one file, so the files read in
//! order (`NAME.log.N` … `NAME.log.1`, `NAME.log`) hold every line once,
//! whole, in order. A line longer than the limit gets a file to itself
//! (and one longer than 4 MiB, which no piper-node writes, is written as
//! it comes: what the launcher holds of a line is bounded).
//! Nothing is lost: a node that writes faster than the launcher reads
//! waits on its pipe, as a program printing to a slow terminal does.
//!
//! A node's log lives across its restarts (each life gets a new pipe, and
//! the last life's is drained first); the files are as private as the
//! sockets (0600, never through a symbolic link, never another user's).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// The longest line kept whole: piper-node's longest, a 208 KiB datagram
/// printed escaped (four bytes for each), fits with room to spare.
const MAX_LINE: usize = 4 << 20;

/// How logs are rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The most bytes a file holds (but for one line longer than this).
    pub max_size: u64,
    /// How many rotated files are kept besides the current one.
    pub keep: u32,
}

/// What to do with the next part of a chunk of whole lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write its first `n` bytes (whole lines).
    Write(usize),
    /// Rotate before writing more.
    Rotate,
}

/// The next step for `chunk` (whole lines) into a file that holds `size`
/// bytes, of at most `max`: as many lines as fit; else a rotation; else
/// (an empty file, and a first line longer than `max`) that line alone.
pub fn step(size: u64, max: u64, chunk: &[u8]) -> Step {
    let room = max.saturating_sub(size);
    if chunk.len() as u64 <= room {
        return Step::Write(chunk.len());
    }
    let fits = &chunk[..room as usize];
    match fits.iter().rposition(|&b| b == b'\n') {
        Some(end) => Step::Write(end + 1),
        None if size > 0 => Step::Rotate,
        None => Step::Write(
            chunk
                .iter()
                .position(|&b| b == b'\n')
                .map_or(chunk.len(), |end| end + 1),
        ),
    }
}

/// One node's log: its current file, and how it is rotated.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl Log {
    /// Opens (and empties) `path` for a node's output.
    pub fn open(path: PathBuf, rotation: Rotation) -> Result<Log, String> {
        let file = open_private(&path)?;
        Ok(Log {
            path,
            file,
            size: 0,
            rotation,
        })
    }

    /// Writes whole lines, rotating where they would not fit.
    pub fn write(&mut self, mut lines: &[u8]) -> Result<(), String> {
        while !lines.is_empty() {
            match step(self.size, self.rotation.max_size, lines) {
                Step::Write(n) => {
                    self.file
                        .write_all(&lines[..n])
                        .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
                    self.size += n as u64;
                    lines = &lines[n..];
                }
                Step::Rotate => self.rotate()?,
            }
        }
        Ok(())
    }

    /// `NAME.log` becomes `NAME.log.1`, each `.k` becomes `.k+1` up to
    /// `--log-keep` (the oldest is replaced), and a new `NAME.log` begins.
    /// With nothing to keep, the file is emptied instead.
    fn rotate(&mut self) -> Result<(), String> {
        let keep = self.rotation.keep;
        let fail = |e: std::io::Error| format!("cannot rotate {}: {e}", self.path.display());
        if keep == 0 {
            self.file.set_len(0).map_err(fail)?;
            use std::io::Seek;
            self.file.seek(std::io::SeekFrom::Start(0)).map_err(fail)?;
            self.size = 0;
            return Ok(());
        }
        let numbered = |k: u32| PathBuf::from(format!("{}.{k}", self.path.display()));
        for k in (1..keep).rev() {
            match std::fs::rename(numbered(k), numbered(k + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(1)).map_err(fail)?;
        self.file = open_private(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The read end of a node's output pipe, what it holds of an unfinished
/// line, and the log it goes to.
#[derive(Debug)]
pub struct LogPipe {
    fd: OwnedFd,
    partial: Vec<u8>,
}

impl LogPipe {
    /// A pipe for one life of a node: ours to read (non-blocking), and the
    /// end the node writes its stdout and stderr to.
    pub fn new() -> nix::Result<(LogPipe, OwnedFd)> {
        let (read, write) = crate::output::node_pipe()?;
        Ok((
            LogPipe {
                fd: read,
                partial: Vec::new(),
            },
            write,
        ))
    }

    /// Moves what the pipe holds into `log`, whole lines only; once the
    /// node has closed its end, the rest too. Returns whether the pipe is
    /// still open.
    pub fn drain(&mut self, log: &mut Log) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        let open = loop {
            match nix::unistd::read(self.fd.as_fd(), &mut chunk) {
                Ok(0) => break false,
                Ok(n) => {
                    self.partial.extend_from_slice(&chunk[..n]);
                    // At most one chunk of whole lines held at a time.
                    self.write_whole(log);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break true,
            }
        };
        if !open && !self.partial.is_empty() {
            // A last line without its newline: kept whole all the same.
            let rest = std::mem::take(&mut self.partial);
            if let Err(e) = log.write(&rest) {
                log::warn!("{e}");
            }
        }
        open
    }

    fn write_whole(&mut self, log: &mut Log) {
        // What is held of a line is bounded: a program that writes more
        // than MAX_LINE without a newline has it written as it is.
        let end = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if self.partial.len() > MAX_LINE => self.partial.len(),
            None => return,
        };
        if let Err(e) = log.write(&self.partial[..end]) {
            log::warn!("{e}");
        }
        self.partial.drain(..end);
    }
}

impl AsFd for LogPipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Opens a log file the way a socket is made: never through a symbolic
/// link, never another user's file or something that is not a regular
/// file; made 0600, and only then emptied.
fn open_private(path: &Path) -> Result<File, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: String| format!("refusing log file {}: {why}", path.display());
    // Not truncated yet: it may not be ours. O_NONBLOCK: a planted FIFO
    // with no reader fails at once instead of blocking the launch.
    let file = File::options()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => refuse("it is a symbolic link".into()),
            Some(nix::libc::ENXIO) => refuse("it is not a regular file".into()),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let me = nix::unistd::Uid::effective().as_raw();
    if !meta.file_type().is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    if meta.uid() != me {
        return Err(refuse(format!("it is owned by uid {}, not by uid {me}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        // Ours, but readable by others: made private before anything is written.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    }
    file.set_len(0)
        .map_err(|e| format!("cannot empty {}: {e}", path.display()))?;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_WRONLY))
        .map_err(|e| format!("cannot configure {}: {}", path.display(), e.desc()))?;
    Ok(file)
}

/// A size such as `1048576`, `512K`, `10M` or `1G` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a size such as 65536, 512K, 10M or 1G");
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit: u64 = match unit {
        "" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).filter(|&n| n > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_fit_are_written_and_a_file_is_cut_only_between_lines() {
        assert_eq!(step(0, 10, b"ab\ncd\n"), Step::Write(6));
        assert_eq!(step(4, 10, b"ab\ncd\n"), Step::Write(6), "exactly full");
        assert_eq!(
            step(5, 10, b"ab\ncd\n"),
            Step::Write(3),
            "the first line fits, the second not"
        );
        assert_eq!(step(8, 10, b"ab\ncd\n"), Step::Rotate);
        assert_eq!(step(10, 10, b"a\n"), Step::Rotate);
        // A line longer than the limit: alone in a file of its own.
        assert_eq!(step(0, 4, b"abcdefg\nh\n"), Step::Write(8));
        assert_eq!(step(3, 4, b"abcdefg\n"), Step::Rotate);
        assert_eq!(
            step(0, 4, b"abcdefg"),
            Step::Write(7),
            "a last line without its newline"
        );
    }

    #[test]
    fn a_line_longer_than_the_most_held_is_written_as_it_is() {
        let t = Temp(std::env::temp_dir().join(format!("piper-logs-long-{}", std::process::id())));
        std::fs::create_dir_all(&t.0).unwrap();
        let mut log = Log::open(
            t.0.join("a.log"),
            Rotation {
                max_size: 1 << 30,
                keep: 1,
            },
        )
        .unwrap();
        let mut pipe = LogPipe {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            partial: vec![b'x'; MAX_LINE],
        };
        pipe.write_whole(&mut log);
        assert_eq!(pipe.partial.len(), MAX_LINE, "held: not longer than the most");
        pipe.partial.extend_from_slice(b"yz");
        pipe.write_whole(&mut log);
        assert!(pipe.partial.is_empty());
        pipe.partial.extend_from_slice(b"whole\nhalf");
        pipe.write_whole(&mut log);
        assert_eq!(pipe.partial, b"half");
        let written = std::fs::read(t.0.join("a.log")).unwrap();
        assert_eq!(written.len(), MAX_LINE + 2 + 6);
        assert!(written.ends_with(b"yzwhole\n"));
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for bad in ["", "0", "M", "1T", "-1", "1.5M", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    struct Temp(PathBuf);

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn rotation_keeps_the_newest_files_and_every_line_whole_in_order() {
        let t = Temp(std::env::temp_dir().join(format!("piper-logs-{}", std::process::id())));
        std::fs::create_dir_all(&t.0).unwrap();
        let path = t.0.join("a.log");
        let mut log = Log::open(path.clone(), Rotation { max_size: 20, keep: 2 }).unwrap();
        let lines: Vec<String> = (0..30).map(|k| format!("line {k:02}\n")).collect();
        for pair in lines.chunks(2) {
            log.write(pair.concat().as_bytes()).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(&t.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.log", "a.log.1", "a.log.2"]);
        let read = |p: &str| std::fs::read_to_string(t.0.join(p)).unwrap();
        let all = read("a.log.2") + &read("a.log.1") + &read("a.log");
        // Two lines of 8 bytes a file (a third would pass 20): the last six.
        assert_eq!(all, lines[24..].concat());
        for p in ["a.log", "a.log.1", "a.log.2"] {
            assert!(read(p).len() <= 20 && read(p).ends_with('\n'), "{p}");
        }
        // Nothing kept: the one file starts over.
        let mut log = Log::open(path, Rotation { max_size: 20, keep: 0 }).unwrap();
        for line in &lines {
            log.write(line.as_bytes()).unwrap();
        }
        assert_eq!(read("a.log"), lines[28..].concat());
    }
}
