//! piper-launch: clones and execs one process per member (`piper-node`, or
//! any program a topology file names), wired in a ring, shows their lines,
//! and tears them down via signals when the run ends.
//!
//! Thin like piper-node: this file parses arguments into a `plan` (from
//! `--nodes`, or from a `topology` file) and maps outcomes to exit codes;
//! `plan` is the one place that speaks piper-node's command line; `spawn`
//! finds and starts the members, `ring` runs the one event loop that
//! launches, watches and tears them down, carrying out what the
//! `supervisor` decides, and `signals` blocks the launcher's signals and
//! reads them from a signalfd.

mod ctl;
mod io;
mod output;
mod placement;
mod plan;
mod ring;
mod signals;
mod spawn;
mod supervisor;
mod topology;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use piper_cli::{exit, Failure};
use piper_core::Name;
use piper_launch::cli::{Args, Command, Cpus, Output};

fn main() -> ExitCode {
    piper_cli::init_logging_to("piper-launch".into(), "info", Box::new(output::StderrClearingStatus));
    let mut args = match Args::try_parse() {
        Ok(args) => args,
        // `piper-launch --dir D ctl`: the flags before `ctl` are the
        // launcher's, and clap's "cannot be used with" does not say where
        // ctl's go.
        Err(e)
            if e.kind() == clap::error::ErrorKind::ArgumentConflict && std::env::args().skip(1).any(|a| a == "ctl") =>
        {
            let message = "options before `ctl` are the launcher's: give ctl's after it \
                           (piper-launch ctl --dir DIR ...)";
            return piper_cli::finish("piper-launch", Err(Failure::usage(message)));
        }
        Err(e) => e.exit(),
    };
    let outcome = match args.command.take() {
        Some(Command::Ctl(ctl)) => ctl::run(ctl),
        None => run(args),
    };
    piper_cli::finish("piper-launch", outcome)
}

fn run(args: Args) -> Result<u8, Failure> {
    if args.restart_foreground && args.restart == piper_launch::cli::RestartPolicy::No {
        return Err(Failure::usage(
            "--restart-foreground restarts the foreground node as --restart says: give --restart on-failure or always",
        ));
    }
    let seconds = |flag: &str, secs: f64| {
        if !(0.0..=MAX_SECONDS).contains(&secs) {
            return Err(Failure::usage(format!(
                "{flag} {secs}: give a number of seconds from 0 to {MAX_SECONDS}"
            )));
        }
        Ok(Duration::from_secs_f64(secs))
    };
    let restart = ring::Restart {
        policy: args.restart,
        delay: seconds("--restart-delay", args.restart_delay)?,
        burst: args.restart_burst,
        interval: seconds("--restart-interval", args.restart_interval)?,
        foreground: args.restart_foreground,
    };
    // Both ways of naming a ring become the same members: --nodes is the
    // simplest topology, generated.
    let shape = match &args.file {
        Some(file) => from_file(file, restart, &given(&args))?,
        None => from_nodes(args.nodes.as_deref().unwrap_or_default(), &args, restart)?,
    };
    let names: Vec<Name> = shape.members.iter().map(|m| m.name.clone()).collect();
    let foreground = match &args.foreground {
        None => shape.foreground.unwrap_or(names.len() - 1),
        Some(f) => names
            .iter()
            .position(|n| n.as_str() == f)
            .ok_or_else(|| match &args.file {
                Some(file) => Failure::usage(format!("--foreground '{f}' is not a node of {}", file.display())),
                None => Failure::usage(format!("--foreground '{f}' is not one of the --nodes")),
            })?,
    };
    // piper-node is looked for only if a member runs it.
    let runs_node = shape
        .members
        .iter()
        .any(|m| matches!(m.program, plan::Program::Node(_)));
    let node_bin = match runs_node {
        true => spawn::find_node_binary(args.node_bin.as_deref()).map_err(|m| Failure::new(exit::NOT_FOUND, m))?,
        false => args.node_bin.clone().unwrap_or_default(),
    };
    let mut sockets = args.sockets.clone();
    sockets.dir = sockets.dir.or(shape.dir);
    // Only piper-node is told (--abstract) that the addresses are
    // abstract; any other program would look for DIR/piper-NEXT as a file,
    // find none, and the ring would stall without a word.
    let program = shape
        .members
        .iter()
        .find(|m| matches!(m.program, plan::Program::Exec(..)));
    if let (piper_core::Namespace::Abstract, Some(m)) = (sockets.namespace(), program) {
        return Err(Failure::usage(format!(
            "--abstract: node '{}' runs a program other than piper-node, which is not told that \
             addresses are abstract (leave out --abstract)",
            m.name
        )));
    }
    // An abstract address has no file to probe: a bound socket there
    // would never be seen, and the member never ready.
    let bound = shape.members.iter().find(|m| m.ready == plan::Ready::Bound);
    if let (piper_core::Namespace::Abstract, Some(m)) = (sockets.namespace(), bound) {
        return Err(Failure::usage(format!(
            "--abstract: node '{}' is ready = \"bound\", which cannot be seen at an abstract address \
             (use ready = \"notify\" or \"exec\")",
            m.name
        )));
    }
    if args.check {
        let kick = shape.kick.as_ref().filter(|_| !args.no_start);
        print!(
            "{}",
            plan::describe(
                &sockets.path(),
                &shape.members,
                &shape.remote,
                kick,
                foreground,
                &node_bin
            )
        );
        return Ok(exit::OK);
    }
    // Every name is checked before the directory is made: a name that
    // cannot work leaves nothing behind.
    let dir = sockets.open_for(names.iter().chain(&shape.remote)).map_err(|e| {
        // A directory the file names is a mistake in the file: say where.
        let failure = Failure::from(e);
        match (&args.sockets.dir, &args.file, shape.dir_at) {
            (None, Some(file), Some((line, column))) => Failure::new(
                failure.code,
                format!("{}:{line}:{column}: dir: {}", file.display(), failure.message),
            ),
            _ => failure,
        }
    })?;
    // Logs carry every payload: as private as the sockets, in a directory
    // checked as theirs is.
    let log_dir = args
        .log_dir
        .as_deref()
        .map(|dir| {
            piper_core::dir::private_dir(dir).map_err(|e| {
                let code = exit::of(&e);
                let message = match e {
                    piper_core::Error::InsecureDir { dir, reason } => {
                        format!("refusing --log-dir {}: {reason}", dir.display())
                    }
                    piper_core::Error::Dir { dir, action, source } => {
                        format!("cannot {action} --log-dir {}: {source}", dir.display())
                    }
                    e => format!("--log-dir: {e}"),
                };
                Failure::new(code, message)
            })
        })
        .transpose()?;
    // Listening before any name is claimed: a port in use ends the run
    // with nothing started.
    let metrics = metrics_server(args.metrics.as_deref(), args.metrics_remote)?;
    raise_fd_limit(names.len());
    let stdout_tty = std::io::stdout().is_terminal();
    let prefix = (stdout_tty || args.prefix) && !args.no_prefix;
    // A relay is needed to dress lines, and on a terminal to keep the
    // status line below them; otherwise nodes write straight to stdout.
    let route = match prefix || args.timestamps || stdout_tty {
        true => output::Route::Relay,
        false => output::Route::Direct,
    };
    let colour = prefix && stdout_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let status_line = output::status_line_fits();
    let display = output::Display::new(route, prefix, colour, args.timestamps, &names, status_line);
    let options = plan::RingOptions {
        node_bin,
        log_dir,
        interval: args.interval,
        quiet: args.quiet,
        count: args.count,
        allow_uids: args.sockets.allow_uids.clone(),
        all_output: args.output == Output::All,
        json: args.json,
    };
    let kick = shape.kick.filter(|_| !args.no_start);
    let mut plan = plan::Plan::with(dir, shape.members, shape.remote, kick, foreground, options);
    plan.file = args.file.clone();
    let options = ring::Options {
        ready_timeout: seconds("--ready-timeout", args.ready_timeout)?,
        grace: seconds("--grace", args.grace)?,
        fail_fast: args.fail_fast,
        json: args.json,
        cpus: check_cpus(args.cpus)?,
        logs: io::logs::Rotation {
            max_size: io::logs::parse_size(&args.log_max_size)
                .map_err(|e| Failure::usage(format!("--log-max-size: {e}")))?,
            keep: args.log_keep,
        },
    };
    ring::run(&plan, &options, display, metrics)
}

/// The `--metrics` endpoint, if asked for: an address that is not
/// loopback is a usage error unless `remote`; one we cannot listen on
/// ends the run (exit 1).
fn metrics_server(address: Option<&str>, remote: bool) -> Result<Option<piper_cli::metrics::Server>, Failure> {
    let Some(address) = address else { return Ok(None) };
    let address = piper_cli::metrics::Address::parse(address, remote).map_err(Failure::usage)?;
    let server = piper_cli::metrics::Server::listen(&address).map_err(|m| Failure::new(exit::FAILURE, m))?;
    log::info!("metrics on {address} (GET /metrics)");
    Ok(Some(server))
}

/// What a run's members are, before the directory is opened.
struct Shape {
    members: Vec<plan::Member>,
    remote: Vec<Name>,
    kick: Option<(Name, Name)>,
    /// The foreground the topology names, if it does.
    foreground: Option<usize>,
    /// The topology's socket directory, if it names one.
    dir: Option<std::path::PathBuf>,
    /// Where the topology file names it: line and column.
    dir_at: Option<(usize, usize)>,
}

/// The ring `--nodes` names (and `--ring-next` closes), as a generated
/// topology.
fn from_nodes(spec: &str, args: &Args, restart: ring::Restart) -> Result<Shape, Failure> {
    let ring_next = args.ring_next.as_deref().map(Name::new).transpose()?;
    let names = parse_nodes(spec, ring_next.as_ref())?;
    let (members, remote, kick) = plan::generated(names, ring_next, true, restart);
    Ok(Shape {
        members,
        remote,
        kick,
        foreground: None,
        dir: None,
        dir_at: None,
    })
}

/// The topology file's members; a mistake in it is a usage error that
/// names the file, the line and the column.
fn from_file(file: &std::path::Path, restart: ring::Restart, given: &[&str]) -> Result<Shape, Failure> {
    let topology = topology::read(file, restart, given).map_err(|m| Failure::usage(m.to_string()))?;
    Ok(Shape {
        kick: topology.kick(),
        members: topology.members,
        remote: topology.remote,
        foreground: topology.foreground,
        dir: topology.dir,
        dir_at: topology.dir_at,
    })
}

/// The piper-node options the command line has the launcher pass to
/// every piper-node (`plan.rs` passes them): a file's `exec` may not give
/// them too. `--count` and `--json` reach the foreground alone, but are
/// refused in any node's `exec`: `--foreground` may yet move the
/// foreground. `--allow-uid` may be given many times, and is not here.
fn given(args: &Args) -> Vec<&'static str> {
    let mut given = Vec::new();
    if args.interval.is_some() {
        given.push("--interval");
    }
    if args.quiet {
        given.push("--quiet");
    }
    if args.sockets.namespace() == piper_core::Namespace::Abstract {
        given.push("--abstract");
    }
    if args.count.is_some() {
        given.push("--count");
    }
    if args.json {
        given.push("--json");
    }
    given
}

/// A CPU list must name CPUs this process may use.
fn check_cpus(policy: Cpus) -> Result<Cpus, Failure> {
    if let Cpus::List(cpus) = &policy {
        let allowed = placement::allowed();
        if let Some(cpu) = cpus.iter().find(|c| !allowed.contains(c)) {
            return Err(Failure::usage(format!(
                "--cpus: CPU {cpu} is not one this process may use ({allowed:?})"
            )));
        }
    }
    Ok(policy)
}

/// Makes room for what the launcher holds per node (the soft limit is often
/// 1024): its socket (and a lock file while it reclaims a stale one), a
/// relay pipe (or a log pipe and its log file), and a share of a notify
/// socket (one per five nodes); up to the hard limit, which only root
/// could raise.
fn raise_fd_limit(nodes: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let want = (5 * nodes as u64 + 64).min(hard);
    if soft < want {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
            log::warn!("cannot raise the open-file limit to {want}: {}", e.desc());
        }
    }
}

/// The longest `--ready-timeout` or `--grace`: a year.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// The most nodes one launcher starts, whatever the system allows.
const MAX_NODES: u64 = 65_536;

/// `a,b,c` or a number N for `node1..nodeN`; names must be valid and
/// distinct, and a ring has at least two (a node never answers itself),
/// counting a `--ring-next` node started elsewhere.
fn parse_nodes(spec: &str, ring_next: Option<&Name>) -> Result<Vec<Name>, Failure> {
    let spec = spec.trim();
    let names: Vec<Name> = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let max = max_nodes();
        let n = spec.parse::<u64>().ok().filter(|&n| n <= max).ok_or_else(|| {
            Failure::usage(format!(
                "--nodes {spec}: at most {max} nodes here (the least of {MAX_NODES}, half of \
                 kernel.pid_max, and RLIMIT_NPROC)"
            ))
        })?;
        (1..=n)
            .map(|i| Name::new(&format!("node{i}")))
            .collect::<Result<_, _>>()?
    } else {
        spec.split(',').map(|s| Name::new(s.trim())).collect::<Result<_, _>>()?
    };
    if names.len() + usize::from(ring_next.is_some()) < 2 {
        return Err(Failure::usage(format!(
            "--nodes {spec}: a ring needs at least two nodes (a node never answers itself)"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().chain(ring_next).find(|n| !seen.insert(*n)) {
        return Err(match ring_next {
            Some(next) if *next == *dup => Failure::usage(format!("--ring-next '{dup}' is one of the --nodes")),
            _ => Failure::usage(format!("--nodes names '{dup}' twice")),
        });
    }
    Ok(names)
}

/// How many nodes this machine lets us start: [`MAX_NODES`], half of
/// `kernel.pid_max` (the rest of the system needs pids too), and the
/// per-user process limit.
fn max_nodes() -> u64 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32_768);
    let nproc =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC).map_or(u64::MAX, |(soft, _)| soft);
    MAX_NODES.min(pid_max / 2).min(nproc)
}
