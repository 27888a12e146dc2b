//! piper-node as a library: only its command line, so that the man page and
//! the shell completions are made from the same definition as `--help`.
//! The node itself is the binary (`main.rs`, `seed.rs`, `out.rs`).
#![deny(missing_docs)]

pub mod cli;
