//! What piper's binaries share: their exit codes (one table each, from which
//! `--help` and the README's tables are written), the [`Failure`] every
//! error becomes, and logging to stderr.
//!
//! Not a library for embedding piper: that is `piper-core`. This crate holds
//! the command-line conventions, so that `piper-node` and `piper-launch`
//! state them once.
#![deny(missing_docs)]

use std::io::Write;
use std::process::ExitCode;

use piper_core::Error;

pub mod exit;

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
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(exit::of(&e), e.to_string())
    }
}

/// Ends `main`: prints `PROGRAM: error: MESSAGE` for a failure, and turns the
/// outcome into the process's exit code.
pub fn finish(program: &str, outcome: Result<u8, Failure>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, message }) => {
            // One write: the line stays whole among a thousand nodes' output.
            let line = format!("{program}: error: {message}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            ExitCode::from(code)
        }
    }
}

/// Logs to stderr as `PREFIX: LEVEL: message`, filtered by `RUST_LOG`
/// (else `default`, such as `warn`). Stdout stays for message lines.
pub fn init_logging(prefix: String, default: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format(move |buf, record| {
            let level = record.level().as_str().to_ascii_lowercase();
            writeln!(buf, "{prefix}: {level}: {}", record.args())
        })
        .init();
}
