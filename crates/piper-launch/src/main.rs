//! piper-launch: forks and execs one `piper-node` per name, wired in a ring,
//! shows one of them, and tears the rest down via signals when it dies.
//!
//! Thin like piper-node: `spawn` finds and starts the nodes, `ring` watches
//! and tears them down, and this file parses arguments and maps outcomes to
//! exit codes.

mod ring;
mod spawn;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use piper_core::{Name, SocketDir};

/// Exit codes besides the foreground node's own (or 128+signal).
mod exit {
    /// A failure of the launcher itself: a node failed to start or to become ready.
    pub const FAILURE: u8 = 1;
    /// A usage error: bad flags, names or node list.
    pub const USAGE: u8 = 2;
    /// The node binary could not be found.
    pub const NO_NODE_BINARY: u8 = 127;
}

/// Runs a ring of piper nodes, one process each, and shows one of them.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit status: the foreground node's exit code, or 128+signal if it \
was killed by one; 128+signal if the launcher itself got SIGINT (130), SIGTERM (143) or SIGHUP (129); \
1 if a node failed to start or become ready, or died with --fail-fast; 2 usage error; \
127 node binary not found."
)]
struct Args {
    /// Comma-separated node names, or a number N for node1..nodeN.
    #[arg(long, value_name = "LIST|N")]
    nodes: String,
    /// The node whose output reaches the terminal [default: the last].
    #[arg(long, value_name = "NAME")]
    foreground: Option<String>,
    /// Write other nodes' output to DIR/NAME.log instead of discarding it.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Socket directory, passed to every node.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Milliseconds each node waits before replying.
    #[arg(long, value_name = "MS")]
    interval: Option<u64>,
    /// Nodes print no per-message lines.
    #[arg(long)]
    quiet: bool,
    /// End the run after the foreground node has received N messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Use abstract socket addresses instead of files.
    #[arg(long = "abstract")]
    abstract_ns: bool,
    /// Also let nodes accept datagrams from this uid (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uids: Vec<u32>,
    /// The piper-node binary [default: next to piper-launch, then on PATH].
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
    /// Seconds to wait for every node to send READY=1.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    ready_timeout: f64,
    /// Seconds between SIGTERM and SIGKILL at teardown.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    grace: f64,
    /// Tear everything down when any node dies, not just the foreground.
    #[arg(long)]
    fail_fast: bool,
}

/// A failure, with its exit code.
#[derive(Debug)]
pub struct Failure(pub u8, pub String);

impl From<piper_core::Error> for Failure {
    fn from(e: piper_core::Error) -> Self {
        let code = match e {
            piper_core::Error::InvalidName { .. } | piper_core::Error::NameTooLong { .. } => exit::USAGE,
            _ => exit::FAILURE,
        };
        Failure(code, e.to_string())
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let level = record.level().as_str().to_ascii_lowercase();
            writeln!(buf, "piper-launch: {level}: {}", record.args())
        })
        .init();
    match run(Args::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, message)) => {
            eprintln!("piper-launch: error: {message}");
            ExitCode::from(code)
        }
    }
}

fn run(args: Args) -> Result<u8, Failure> {
    let names = parse_nodes(&args.nodes)?;
    let foreground = match &args.foreground {
        None => names.len() - 1,
        Some(f) => names
            .iter()
            .position(|n| n.as_str() == f)
            .ok_or_else(|| Failure(exit::USAGE, format!("--foreground '{f}' is not one of the --nodes")))?,
    };
    let seconds = |flag: &str, secs: f64| {
        Duration::try_from_secs_f64(secs).map_err(|_| Failure(exit::USAGE, format!("{flag} {secs} is not a duration")))
    };
    let dir_path = SocketDir::resolve(args.dir.as_deref());
    let dir = if args.abstract_ns {
        SocketDir::open_abstract(&dir_path)?
    } else {
        SocketDir::open(&dir_path)?
    };
    for name in &names {
        dir.socket_path(name)?;
    }
    let node_bin =
        spawn::find_node_binary(args.node_bin.as_deref()).map_err(|message| Failure(exit::NO_NODE_BINARY, message))?;
    if let Some(log_dir) = &args.log_dir {
        std::fs::create_dir_all(log_dir).map_err(|e| {
            Failure(
                exit::USAGE,
                format!("cannot create --log-dir {}: {e}", log_dir.display()),
            )
        })?;
    }
    let plan = spawn::Plan {
        node_bin,
        dir,
        names,
        foreground,
        log_dir: args.log_dir,
        interval: args.interval,
        quiet: args.quiet,
        count: args.count,
        allow_uids: args.allow_uids,
    };
    let options = ring::Options {
        ready_timeout: seconds("--ready-timeout", args.ready_timeout)?,
        grace: seconds("--grace", args.grace)?,
        fail_fast: args.fail_fast,
    };
    ring::run(&plan, &options)
}

/// `a,b,c` or a number N for `node1..nodeN`; names must be valid and distinct.
fn parse_nodes(spec: &str) -> Result<Vec<Name>, Failure> {
    let names: Vec<Name> = match spec.trim().parse::<usize>() {
        Ok(0) => return Err(Failure(exit::USAGE, "--nodes 0: a ring needs at least one node".into())),
        Ok(n) => (1..=n)
            .map(|i| Name::new(&format!("node{i}")))
            .collect::<Result<_, _>>()?,
        Err(_) => spec.split(',').map(|s| Name::new(s.trim())).collect::<Result<_, _>>()?,
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(*n)) {
        return Err(Failure(exit::USAGE, format!("--nodes names '{dup}' twice")));
    }
    Ok(names)
}
