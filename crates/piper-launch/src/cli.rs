//! piper-launch's command line: the one definition that `--help`, the man
//! page and the shell completions are all made from (`cargo xtask dist`).

use std::path::PathBuf;

use clap::Parser;
use piper_cli::args::Sockets;
use piper_cli::exit;

/// The highest CPU number a CPU list may name (the kernel's `CPU_SETSIZE`).
pub const MAX_CPUS: usize = 1024;

/// Examples, for the long help and the man page.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "piper-launch --nodes ping,pong",
        "the seed's ping-pong, both nodes' lines in one stream",
    ),
    (
        "piper-launch --nodes ping,pong --interval 300",
        "the same at a human pace",
    ),
    (
        "piper-launch --nodes 1000 --quiet",
        "a thousand-node ring; on a terminal, a live count",
    ),
    (
        "piper-launch --nodes 10 --restart on-failure",
        "a ring that restarts what dies",
    ),
    (
        "piper-launch --nodes ping,pong --count 1000 --json",
        "a measured run, its summary as JSON",
    ),
    (
        "piper-launch --file examples/polyglot.toml",
        "a ring of programs in Python, C, Rust and piper-node",
    ),
    (
        "piper-launch --file ring.toml --check",
        "check a topology file and print its plan",
    ),
];

/// The environment piper-launch reads, for the long help and the man page.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("PIPER_DIR", "the socket directory when --dir is not given"),
    (
        "XDG_RUNTIME_DIR",
        "else the socket directory is $XDG_RUNTIME_DIR/piper (else /dev/shm/piper-$UID, else /tmp/piper-$UID)",
    ),
    (
        "RUST_LOG",
        "which diagnostics reach stderr: error, warn, info (the default), debug",
    ),
    (
        "PIPER_NODES",
        "the ring when --nodes is not given (piper-launch.service sets it)",
    ),
    (
        "PIPER_FILE",
        "the topology file when --file is not given (piper-launch.service sets it)",
    ),
    ("NO_COLOR", "when set and not empty, no colours on a terminal"),
    (
        "NOTIFY_SOCKET",
        "a service manager's sd_notify socket: READY=1, STATUS=, STOPPING=1",
    ),
];

/// The long help's tail: examples, environment and exit status.
pub fn after_long_help() -> String {
    piper_cli::help_sections(EXAMPLES, ENVIRONMENT, exit::LAUNCHER)
}

/// Runs a ring of piper nodes, one process each, and shows one of them.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = exit::help(exit::LAUNCHER),
    after_long_help = after_long_help(),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
// A ring is named one way: by --nodes or by --file, never both (or not at
// all, for a subcommand).
#[command(group(clap::ArgGroup::new("ring").args(["nodes", "file"]).required(true).multiple(false)))]
pub struct Args {
    /// Control a running launcher from another terminal (see `piper-launch ctl --help`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Comma-separated node names, or a number N for node1..nodeN: a ring
    /// of piper-nodes.
    #[arg(long, env = "PIPER_NODES", value_name = "LIST|N")]
    pub nodes: Option<String>,
    /// Run the topology file FILE (TOML): any program as a node, each with
    /// its own socket mode, readiness and restart policy.
    #[arg(long, env = "PIPER_FILE", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub file: Option<PathBuf>,
    /// Check the ring (--file's file, or --nodes), print the plan it would
    /// run, and exit (2, with FILE:LINE:COL for a mistake in a file).
    /// Nothing is started or made.
    #[arg(long)]
    pub check: bool,
    /// Close the ring through NAME, a node this launcher does not start
    /// (one on another host, reached through piper-bridge): the last node
    /// answers NAME instead of the first. The chain starts once NAME is
    /// reachable, and is sent again if the ring falls silent.
    #[arg(long, value_name = "NAME", conflicts_with = "file")]
    pub ring_next: Option<String>,
    /// Do not start the chain: another launcher of the ring does.
    #[arg(long)]
    pub no_start: bool,
    /// The node whose exit ends the run, and whose warnings and summary
    /// reach stderr [default: the last].
    #[arg(long, value_name = "NAME")]
    pub foreground: Option<String>,
    /// Whose message lines are shown: every node's, or the foreground's only.
    #[arg(long, value_enum, value_name = "WHOSE", default_value = "all")]
    pub output: Output,
    /// Put each node's name before its lines [default: when stdout is a terminal].
    #[arg(long, overrides_with = "no_prefix")]
    pub prefix: bool,
    /// Show lines exactly as the nodes print them, as the seed's program does.
    #[arg(long, overrides_with = "prefix")]
    pub no_prefix: bool,
    /// Put the seconds since the launch before each line.
    #[arg(long)]
    pub timestamps: bool,
    /// Write the other nodes' output (lines, warnings, summaries) to
    /// DIR/NAME.log instead of the stream.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub log_dir: Option<PathBuf>,
    /// Rotate each node's log when it would grow past SIZE (bytes, or with
    /// K, M or G), cutting only between lines.
    #[arg(long, value_name = "SIZE", default_value = "1M", requires = "log_dir")]
    pub log_max_size: String,
    /// How many rotated files each node's log keeps (NAME.log.1 is the
    /// newest) besides NAME.log.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "log_dir")]
    pub log_keep: u32,
    /// Where the sockets are, and whom the nodes trust: passed to every node.
    #[command(flatten)]
    pub sockets: Sockets,
    /// Milliseconds each node waits before replying.
    #[arg(long, value_name = "MS")]
    pub interval: Option<u64>,
    /// Nodes print no per-message lines.
    #[arg(long)]
    pub quiet: bool,
    /// End the run after the foreground node has received N messages (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// The piper-node binary [default: next to piper-launch, then on PATH].
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::ExecutablePath)]
    pub node_bin: Option<PathBuf>,
    /// Seconds to wait for every node to send READY=1.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub ready_timeout: f64,
    /// Seconds between SIGTERM and SIGKILL at teardown.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub grace: f64,
    /// Tear everything down when any node dies (or is given up), not just
    /// the foreground.
    #[arg(long)]
    pub fail_fast: bool,
    /// Start dead nodes again: never, after an unclean end (a non-zero exit
    /// or a killing signal), or always.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "no")]
    pub restart: RestartPolicy,
    /// Seconds between a death and the restart.
    #[arg(long, value_name = "SECS", default_value_t = 0.1)]
    pub restart_delay: f64,
    /// Give a node up after this many restarts within --restart-interval.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub restart_burst: u32,
    /// The window of --restart-burst, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub restart_interval: f64,
    /// Restart the foreground node too, instead of ending the run.
    #[arg(long)]
    pub restart_foreground: bool,
    /// Where nodes run: auto (pack onto the least busy CPU, and unpack if
    /// it turns busy), pack, spread (round robin), none (the scheduler's
    /// choice), or a CPU list such as 0,2-3.
    #[arg(long, value_name = "POLICY", default_value = "auto", value_parser = CpusParser, hide_possible_values = true)]
    pub cpus: Cpus,
    /// The ring summary at exit as one JSON object on stderr: totals, and
    /// each node's counts and how it ended.
    #[arg(long)]
    pub json: bool,
    /// Serve Prometheus metrics over HTTP at ADDR: a loopback HOST:PORT
    /// (127.0.0.1:9464) or a socket path (./metrics.sock).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Let --metrics listen on an address that is not loopback: the
    /// metrics name every node to whoever can reach it.
    #[arg(long, requires = "metrics")]
    pub metrics_remote: bool,
}

/// What piper-launch does besides running a ring.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Control the launcher running in a socket directory: its status, its
    /// metrics, and its nodes stopped, started, restarted or signalled.
    #[command(after_help = exit::help(exit::CTL), after_long_help = ctl_after_long_help())]
    Ctl(Ctl),
}

/// `piper-launch ctl`: the launcher is found from its socket directory.
#[derive(Debug, clap::Args)]
pub struct Ctl {
    /// The launcher's socket directory [env: PIPER_DIR] [default: $XDG_RUNTIME_DIR/piper, else /dev/shm/piper-$UID, else /tmp/piper-$UID].
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath, global = true)]
    pub dir: Option<PathBuf>,
    /// The launcher was started with --abstract.
    #[arg(long = "abstract", global = true)]
    pub abstract_ns: bool,
    /// `status`'s flags, for `status` the default: `ctl --json` is
    /// `ctl status --json`.
    #[command(flatten)]
    pub status: StatusArgs,
    /// What to ask [default: status].
    #[command(subcommand)]
    pub command: Option<CtlCommand>,
}

/// How `piper-launch ctl status` shows the status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct StatusArgs {
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Show it again every second, as `watch` does, until Ctrl-C (the
    /// screen cleared on a terminal only: into a pipe, one answer after
    /// another).
    #[arg(long)]
    pub watch: bool,
}

impl StatusArgs {
    /// Either's flags: given before `status` (`ctl --json status`) or
    /// after it.
    pub fn or(self, other: StatusArgs) -> StatusArgs {
        StatusArgs {
            json: self.json || other.json,
            watch: self.watch || other.watch,
        }
    }
}

/// What `piper-launch ctl` asks.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// One line per node: name, state, pid, restarts, received, sent,
    /// dropped, messages per second lately, and the CPUs it may run on.
    Status(StatusArgs),
    /// Stop these nodes and start them again at once (no --restart-delay);
    /// a deliberate act, which the restart limit does not count.
    Restart {
        /// The nodes.
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Stop these nodes and leave them stopped: their sockets keep what is
    /// sent to them, for when they start again.
    Stop {
        /// The nodes.
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Start these nodes if they are not running (stopped, dead, given up,
    /// or waiting for a restart).
    Start {
        /// The nodes.
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Start the chain again, as at the start (or, for a ring another
    /// launcher was to start, the first node's name to its next). It adds
    /// a message: a ring that moves then carries one more.
    Kick,
    /// Send a signal (TERM, USR1, 9, ...) to a node's process.
    Signal {
        /// The node.
        #[arg(value_name = "NODE")]
        node: String,
        /// The signal, by name or number.
        #[arg(value_name = "SIG")]
        signal: String,
    },
    /// The launcher's metrics, as --metrics serves them.
    Metrics,
}

/// Examples of `piper-launch ctl`, for its long help and man page.
pub const CTL_EXAMPLES: &[(&str, &str)] = &[
    (
        "piper-launch ctl",
        "the status of the launcher in the default directory",
    ),
    (
        "piper-launch ctl --dir /run/piper --watch",
        "its counts, refreshed every second",
    ),
    (
        "piper-launch ctl --json --watch | jq .alive",
        "how many nodes are alive, every second",
    ),
    (
        "piper-launch ctl restart node7",
        "a new process for node7; what was sent to it waits for it",
    ),
    ("piper-launch ctl signal node7 USR1", "a signal to node7's process"),
];

/// `piper-launch ctl`'s long help tail.
pub fn ctl_after_long_help() -> String {
    piper_cli::help_sections(CTL_EXAMPLES, &ENVIRONMENT[..2], exit::CTL)
}

/// Whose message lines `--output` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Every node's.
    All,
    /// The foreground node's only.
    Foreground,
}

/// When a node that died is started again (systemd's `Restart=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartPolicy {
    /// Never.
    No,
    /// After an unclean end: a non-zero exit, or a signal other than
    /// SIGTERM, SIGINT, SIGHUP and SIGPIPE.
    OnFailure,
    /// After any end.
    Always,
}

/// The `--cpus` policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cpus {
    /// No placement: the scheduler decides.
    None,
    /// Every node on the least busy CPU at start.
    Pack,
    /// Node i on the i-th allowed CPU, round robin.
    Spread,
    /// Pack, and unpack when the CPU turns out busy (the default).
    Auto,
    /// Every node allowed on exactly these CPUs.
    List(Vec<usize>),
}

/// Parses `--cpus`, and offers its policies to shell completion (a CPU
/// list, which it also takes, cannot be listed).
#[derive(Clone, Copy, Debug)]
pub struct CpusParser;

impl clap::builder::TypedValueParser for CpusParser {
    type Value = Cpus;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Cpus, clap::Error> {
        let parse = clap::builder::StringValueParser::new().try_map(|s| s.parse::<Cpus>());
        parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let policies = ["auto", "pack", "spread", "none"];
        Some(Box::new(policies.into_iter().map(clap::builder::PossibleValue::new)))
    }
}

impl std::str::FromStr for Cpus {
    type Err = String;

    /// `none`, `pack`, `spread`, `auto`, or a CPU list such as `0`, `0,2`
    /// or `0-3`.
    fn from_str(s: &str) -> Result<Cpus, String> {
        match s {
            "none" => return Ok(Cpus::None),
            "pack" => return Ok(Cpus::Pack),
            "spread" => return Ok(Cpus::Spread),
            "auto" => return Ok(Cpus::Auto),
            _ => {}
        }
        let mut cpus = Vec::new();
        for part in s.split(',') {
            let bad = || format!("'{s}' is not none, pack, spread, auto or a CPU list such as 0,2-3");
            let (lo, hi): (usize, usize) = match part.split_once('-') {
                Some((lo, hi)) => (lo.parse().map_err(|_| bad())?, hi.parse().map_err(|_| bad())?),
                None => {
                    let n = part.parse().map_err(|_| bad())?;
                    (n, n)
                }
            };
            if lo > hi || hi >= MAX_CPUS {
                return Err(bad());
            }
            cpus.extend(lo..=hi);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Cpus::List(cpus))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_cpu_lists_parse() {
        assert_eq!("auto".parse::<Cpus>(), Ok(Cpus::Auto));
        assert_eq!("none".parse::<Cpus>(), Ok(Cpus::None));
        assert_eq!("pack".parse::<Cpus>(), Ok(Cpus::Pack));
        assert_eq!("spread".parse::<Cpus>(), Ok(Cpus::Spread));
        assert_eq!("0".parse::<Cpus>(), Ok(Cpus::List(vec![0])));
        assert_eq!("3,0-1,1".parse::<Cpus>(), Ok(Cpus::List(vec![0, 1, 3])));
        for bad in ["", "x", "1-0", "0,", "-1", "99999"] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad}");
        }
    }

    #[test]
    fn status_s_flags_work_before_and_after_status_and_without_it() {
        let status = |argv: &[&str]| {
            let args = Args::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let Some(Command::Ctl(ctl)) = args.command else {
                panic!("{argv:?}")
            };
            match ctl.command {
                None => ctl.status,
                Some(CtlCommand::Status(after)) => ctl.status.or(after),
                Some(other) => panic!("{argv:?}: {other:?}"),
            }
        };
        let both = StatusArgs {
            json: true,
            watch: true,
        };
        for argv in [
            &["piper-launch", "ctl", "--json", "--watch"][..],
            &["piper-launch", "ctl", "--dir", "/d", "--json", "status", "--watch"],
            &["piper-launch", "ctl", "status", "--json", "--watch", "--dir", "/d"],
        ] {
            assert_eq!(status(argv), both, "{argv:?}");
        }
        assert_eq!(status(&["piper-launch", "ctl"]), StatusArgs::default());
    }

    #[test]
    fn the_long_help_ends_with_examples_environment_and_exit_codes() {
        let help = after_long_help();
        for part in [
            "Examples:\n  piper-launch --nodes ping,pong\n",
            "Environment:\n",
            "  NOTIFY_SOCKET\n",
            "Exit status:\n  n                the foreground node's exit code",
            "\n  130              the launcher itself got SIGINT\n",
        ] {
            assert!(help.contains(part), "lacks {part:?}:\n{help}");
        }
    }
}
