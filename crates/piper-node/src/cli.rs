//! piper-node's command line: the one definition that `--help`, the man
//! page and the shell completions are all made from (`cargo xtask dist`).

use clap::Parser;
use piper_cli::args::Sockets;
use piper_cli::exit;

/// Examples, for the long help and the man page.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("piper-node pong", "serve as pong in the default socket directory"),
    (
        "piper-node ping --send pong",
        "start a chain with pong: ping sends its name first",
    ),
    (
        "piper-node pong --dir /tmp",
        "the seed's own path, /tmp/piper-pong: chat with its Python nodes",
    ),
    (
        "piper-node ping --kick pong --dir /run/piper",
        "send pong one datagram from ping's name, and exit",
    ),
    (
        "piper-node --list --json",
        "the nodes in the socket directory, one JSON object each",
    ),
];

/// The environment piper-node reads, for the long help and the man page.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("PIPER_DIR", "the socket directory when --dir is not given"),
    (
        "XDG_RUNTIME_DIR",
        "else the socket directory is $XDG_RUNTIME_DIR/piper (else /dev/shm/piper-$UID, else /tmp/piper-$UID)",
    ),
    (
        "RUST_LOG",
        "which diagnostics reach stderr: error, warn (the default), info, debug",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID",
        "a service manager's sd_notify socket and watchdog",
    ),
    (
        "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
        "a socket passed by the service manager (socket activation)",
    ),
];

/// The three ways to run a node, for `--help` and usage errors (clap's own
/// usage line would offer `--list [NAME]`, which `--list` refuses).
pub const USAGE: &str = "piper-node [OPTIONS] <NAME>
       piper-node [--dir <DIR>] [--abstract] <NAME> --kick <PEER>
       piper-node [--dir <DIR>] --list [--json]";

/// The long help's tail: examples, environment and exit status.
pub fn after_long_help() -> String {
    piper_cli::help_sections(EXAMPLES, ENVIRONMENT, exit::NODE)
}

/// One piper node: prints every datagram it receives and answers with its own name.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    override_usage = USAGE,
    after_help = exit::help(exit::NODE),
    after_long_help = after_long_help()
)]
pub struct Args {
    /// The node's name: letters, digits, '.', '_' and '-'.
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// Where the sockets are, and whom the node trusts.
    #[command(flatten)]
    pub sockets: Sockets,
    /// Send our name to PEER once after binding: starts the chain.
    #[arg(long, value_name = "PEER")]
    pub send: Option<String>,
    /// Answer PEER instead of the node named by each payload (a ring).
    #[arg(long, value_name = "PEER")]
    pub next: Option<String>,
    /// Exit 0 after receiving N messages (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Wait MS milliseconds before each reply.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub interval: u64,
    /// Print no per-message lines.
    #[arg(long)]
    pub quiet: bool,
    /// Send NAME to PEER once from an unbound socket and exit, without binding:
    /// starts a chain between running nodes, as the seed's main() does.
    #[arg(long, value_name = "PEER", conflicts_with_all = ["send", "next", "count", "quiet", "list"])]
    pub kick: Option<String>,
    /// List the nodes in the socket directory: name, pid, and live, stale,
    /// or unknown (another user's, in a shared directory).
    #[arg(long, conflicts_with_all = ["name", "send", "next", "count", "quiet"])]
    pub list: bool,
    /// Run on CPU N only (see the README's performance section: a ring is
    /// fastest with all its nodes on one CPU).
    #[arg(long, value_name = "N")]
    pub cpu: Option<usize>,
    /// Machine-readable output: the exit summary as one JSON object on
    /// stderr, and with --list one JSON object per node on stdout.
    #[arg(long)]
    pub json: bool,
}
