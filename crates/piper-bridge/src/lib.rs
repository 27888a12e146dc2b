//! piper-bridge's command line, as a library so that `cargo xtask dist`
//! can make its man page and completions. The bridge itself is the binary.
pub mod cli;
