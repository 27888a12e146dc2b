//! piper-launch as a library: only its command line, so that the man page
//! and the shell completions are made from the same definition as `--help`.
//! The launcher itself is the binary (`main.rs` and its modules).
#![deny(missing_docs)]

pub mod cli;
