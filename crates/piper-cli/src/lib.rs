//! What piper's binaries share: their exit codes (one table each, from which
//! `--help` and the README's tables are written), the [`Failure`] every
//! error becomes, the flags they take alike ([`args`]), logging to stderr,
//! with the journal's priority prefixes when stderr is the journal, and
//! what their event loops serve besides nodes: one-request connections
//! ([`endpoint`]) and Prometheus metrics over them ([`metrics`]).
//!
//! Not a library for embedding piper: that is `piper-core`. This crate holds
//! the command-line conventions, so that `piper-node`, `piper-launch` and
//! `piper-bridge` state them once.
#![deny(missing_docs)]

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use piper_core::Error;

pub mod args;
pub mod endpoint;
pub mod exit;
pub mod json;
pub mod metrics;
pub mod signals;

/// A failure, with the exit code it maps to and its one-line message.
#[derive(Debug)]
pub struct Failure {
    /// The process's exit code.
    pub code: u8,
    /// What went wrong, without the `program: error: ` prefix.
    pub message: String,
}

impl Failure {
    /// A failure with an explicit code.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(exit::USAGE, message)
    }

    /// A failure already reported (its message printed where it belongs,
    /// such as before a JSON summary): [`finish`] prints nothing for it.
    pub fn reported(code: u8) -> Failure {
        Failure::new(code, String::new())
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(exit::of(&e), e.to_string())
    }
}

/// The long help's last sections: examples, the environment, and the exit
/// status (the same text the man pages carry).
pub fn help_sections(examples: &[(&str, &str)], environment: &[(&str, &str)], exits: &[exit::Row]) -> String {
    let mut text = String::from("Examples:\n");
    for (command, what) in examples {
        text.push_str(&format!("  {command}\n      {what}\n"));
    }
    text.push_str("\nEnvironment:\n");
    for (var, what) in environment {
        text.push_str(&format!("  {var}\n      {what}\n"));
    }
    text.push('\n');
    text.push_str(&exit::help(exits));
    text
}

/// Ends `main`: prints `PROGRAM: error: MESSAGE` for a failure, and turns the
/// outcome into the process's exit code.
pub fn finish(program: &str, outcome: Result<u8, Failure>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, message }) => {
            if !message.is_empty() {
                stderr_line(Priority::Error, &format!("{program}: error: {message}"));
            }
            ExitCode::from(code)
        }
    }
}

/// Logs to stderr as `PREFIX: LEVEL: message`, filtered by `RUST_LOG`
/// (else `default`, such as `warn`). Stdout stays for message lines.
pub fn init_logging(prefix: String, default: &str) {
    builder(prefix, default).init();
}

/// [`init_logging`], writing the lines to `target` (which ends on stderr).
pub fn init_logging_to(prefix: String, default: &str, target: Box<dyn Write + Send>) {
    builder(prefix, default).target(env_logger::Target::Pipe(target)).init();
}

fn builder(prefix: String, default: &str) -> env_logger::Builder {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    builder.format(move |buf, record| {
        let level = record.level().as_str().to_ascii_lowercase();
        let priority = journal_prefix(Priority::from(record.level()));
        writeln!(buf, "{priority}{prefix}: {level}: {}", record.args())
    });
    builder
}

/// How much a line on stderr matters, in the journal's terms (syslog's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// `<3>`: something failed.
    Error = 3,
    /// `<4>`: something is wrong, and the program goes on.
    Warning = 4,
    /// `<5>`: normal, but worth noticing (an exit summary).
    Notice = 5,
    /// `<6>`: what happened.
    Info = 6,
    /// `<7>`: detail.
    Debug = 7,
}

impl From<log::Level> for Priority {
    fn from(level: log::Level) -> Priority {
        match level {
            log::Level::Error => Priority::Error,
            log::Level::Warn => Priority::Warning,
            log::Level::Info => Priority::Info,
            log::Level::Debug | log::Level::Trace => Priority::Debug,
        }
    }
}

/// Writes `text` as one line on stderr, in one write (so it stays whole
/// among many processes' output), with the journal's `<N>` prefix when
/// stderr is the journal.
pub fn stderr_line(priority: Priority, text: &str) {
    let line = format!("{}{text}\n", journal_prefix(priority));
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// `<N>` when stderr is the journal, so that it records the line at that
/// priority (`journalctl -p warning` finds warnings); nothing otherwise.
fn journal_prefix(priority: Priority) -> &'static str {
    const PREFIXES: [&str; 8] = ["<0>", "<1>", "<2>", "<3>", "<4>", "<5>", "<6>", "<7>"];
    if stderr_is_journal() {
        PREFIXES[priority as usize]
    } else {
        ""
    }
}

/// Whether stderr is a stream the journal reads: systemd sets
/// `$JOURNAL_STREAM` to `DEVICE:INODE` of the stream it connected, and a
/// stderr that was redirected since is a different file.
pub fn stderr_is_journal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
            return false;
        };
        matches_stream(&stream.to_string_lossy(), stat.st_dev, stat.st_ino)
    })
}

/// Whether `$JOURNAL_STREAM`'s `DEVICE:INODE` is this device and inode.
fn matches_stream(stream: &str, dev: u64, ino: u64) -> bool {
    stream
        .split_once(':')
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// Logs at most a few warnings a second, and says how many it held back.
#[derive(Debug)]
pub struct RateLimit {
    window: Instant,
    shown: u32,
    held: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new()
    }
}

impl RateLimit {
    /// How many warnings a second are shown.
    pub const PER_SECOND: u32 = 5;

    /// A limiter with nothing shown yet.
    pub fn new() -> Self {
        RateLimit {
            window: Instant::now(),
            shown: 0,
            held: 0,
        }
    }

    /// Says how many warnings were held back since the last one shown;
    /// returns that number.
    pub fn finish(&mut self) -> u64 {
        let held = std::mem::take(&mut self.held);
        if held > 0 {
            log::warn!("{held} similar warnings suppressed");
        }
        held
    }

    /// Logs `args` as a warning, unless this second's share is used up;
    /// returns whether it was shown.
    pub fn warn(&mut self, args: std::fmt::Arguments<'_>) -> bool {
        self.warn_at(Instant::now(), args)
    }

    fn warn_at(&mut self, now: Instant, args: std::fmt::Arguments<'_>) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.finish();
            self.window = now;
            self.shown = 0;
        }
        if self.shown < Self::PER_SECOND {
            self.shown += 1;
            log::warn!("{args}");
            true
        } else {
            self.held += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert!(matches_stream("8:1234", 8, 1234));
        assert!(!matches_stream("8:1234", 8, 1235));
        assert!(!matches_stream("9:1234", 8, 1234));
        assert!(!matches_stream("8", 8, 1234));
        assert!(!matches_stream("", 8, 1234));
    }

    #[test]
    fn five_warnings_a_second_are_shown_and_the_rest_counted() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut limit = RateLimit {
            window: t0,
            shown: 0,
            held: 0,
        };
        let shown: Vec<bool> = [0, 10, 20, 30, 40, 50, 999]
            .iter()
            .map(|&ms| limit.warn_at(at(ms), format_args!("w")))
            .collect();
        assert_eq!(shown, [true, true, true, true, true, false, false]);
        assert_eq!((limit.shown, limit.held), (5, 2));
        // A second after the window opened, a new one opens: the two held
        // back are reported, and five more may be shown.
        assert!(limit.warn_at(at(1000), format_args!("w")));
        assert_eq!((limit.shown, limit.held, limit.window), (1, 0, at(1000)));
        for ms in 1001..1005 {
            assert!(limit.warn_at(at(ms), format_args!("w")));
        }
        assert!(!limit.warn_at(at(1005), format_args!("w")));
        assert_eq!(limit.finish(), 1);
        assert_eq!(limit.finish(), 0, "finish clears the count");
        assert_eq!(RateLimit::default().finish(), 0);
    }

    #[test]
    fn help_sections_carry_examples_environment_and_exit_codes() {
        let text = help_sections(
            &[("piper-node pong", "a node")],
            &[("PIPER_DIR", "the directory")],
            &[("0", "fine")],
        );
        assert_eq!(
            text,
            "Examples:\n  piper-node pong\n      a node\n\nEnvironment:\n  PIPER_DIR\n      the directory\n\nExit status:\n  0                fine\n"
        );
    }

    #[test]
    fn without_the_journal_lines_have_no_prefix() {
        // The test harness's stderr is not a journal stream (unless the
        // whole run is a service's, with JOURNAL_STREAM set).
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
            assert_eq!(journal_prefix(Priority::Warning), "");
        }
        assert_eq!(Priority::from(log::Level::Warn) as u8, 4);
    }
}
