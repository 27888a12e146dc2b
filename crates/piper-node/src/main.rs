//! piper-node: one piper node per OS process, running the seed's protocol.
//!
//! Thin by design: this file parses the command line, binds (or adopts) the
//! node, runs the seed's handler (`seed.rs`) on piper-core's receive loop,
//! and maps the outcome to an exit code (`piper_cli::exit`, whose table the
//! README and `--help` both show).

mod clock;
mod out;
mod seed;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::Signal;
use piper_cli::{exit, Failure};
use piper_core::serve::End;
use piper_core::{activation, notify, Error, Liveness, Name, Namespace, Node, Signals, SocketDir, Stop};
use piper_node::cli::Args;

/// How long READY=1 is retried while the manager's queue is full.
const READY_PATIENCE: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args = Args::parse();
    // Every line names the node, so that a thousand nodes' lines in one
    // stream say whose they are.
    // (Only a valid name: an invalid one may hold anything, terminal
    // controls included.)
    let program = match args.name.as_deref().map(Name::new) {
        Some(Ok(name)) => format!("piper-node[{name}]"),
        _ => "piper-node".to_string(),
    };
    piper_cli::init_logging(program.clone(), "warn");
    piper_cli::finish(&program, run(args))
}

fn run(args: Args) -> Result<u8, Failure> {
    // Before anything opens a descriptor: fds from 3 on may be sockets the
    // service manager passed, and must be taken before they are confused
    // with our own. Then the variables go, so no child inherits them; this
    // process has no other thread yet.
    let passed = activation::listen_fds()?;
    for var in activation::VARIABLES {
        std::env::remove_var(var);
    }
    // Commands that only look or only send create nothing.
    let looks_only = args.list || args.kick.is_some();
    if args.list {
        return list(&args.sockets.open_existing()?, args.json);
    }
    // Every name is checked before the directory is made: one that cannot
    // work leaves nothing behind.
    let name = Name::new(args.name.as_deref().unwrap_or_default())?;
    let peers: Vec<Name> = [&args.kick, &args.send, &args.next]
        .into_iter()
        .flatten()
        .map(|p| Name::new(p))
        .collect::<Result<_, _>>()?;
    let dir = if looks_only {
        let dir = args.sockets.open_existing()?;
        std::iter::once(&name)
            .chain(&peers)
            .try_for_each(|n| dir.check_fits(n))?;
        dir
    } else {
        args.sockets.open_for(std::iter::once(&name).chain(&peers))?
    };
    if let Some(peer) = &args.kick {
        let peer = Name::new(peer)?;
        if peer == name {
            return Err(Failure::usage(format!(
                "--kick {peer} names this node itself: a node never answers itself"
            )));
        }
        piper_core::send_unbound(&dir, &peer, name.as_bytes())?;
        return Ok(exit::OK);
    }
    if let Some(cpu) = args.cpu {
        pin_to(cpu)?;
    }
    let peer = |flag: &str, p: &Option<String>| -> Result<Option<Name>, Failure> {
        let peer = p.as_deref().map(Name::new).transpose()?;
        if let Some(peer) = &peer {
            dir.check_fits(peer)?;
            if peer == &name {
                return Err(Failure::usage(format!(
                    "{flag} {peer} names this node itself: a node never answers itself"
                )));
            }
        }
        Ok(peer)
    };
    let notifier = notify::Notifier::from_env()
        .map_err(|e| log::warn!("cannot notify the service manager: {e}"))
        .ok()
        .flatten()
        .map(Arc::new);
    let opts = seed::Options {
        send_first: peer("--send", &args.send)?,
        next: peer("--next", &args.next)?,
        count: args.count,
        interval: Duration::from_millis(args.interval),
        quiet: args.quiet,
        line_buffered: std::io::stdout().is_terminal(),
        trust: args.sockets.policy(),
        watchdog: notify::watchdog_interval().map(|every| every / 2),
        notifier: notifier.clone(),
    };

    // Signals first: a Ctrl-C during bind is then seen by the loop, which
    // returns at once and removes what bind made.
    let signals = Signals::terminating()?;
    let node = open_node(&dir, name, passed)?;
    node.trust_file_permissions(&opts.trust)?;
    signals.exit_on_repeat(&node.owned_paths());
    if let (true, Some(launcher)) = (node.is_adopted(), launcher_pid()) {
        // A launcher holds our socket; should it die (kill -9), a second
        // signal's exit at once removes what it left, as the normal end
        // does (below).
        signals.exit_on_repeat_orphaned(launcher, &dir.name_paths(node.name())?);
        if dir.namespace() == piper_core::Namespace::Filesystem {
            signals.exit_on_repeat_orphaned_listener(&dir.control_path());
        }
    }
    if let Some(n) = &notifier {
        // Readiness must not be lost to a busy (or stopped) manager whose
        // queue is full: the launcher waits for every node's.
        match n.notify_until("READY=1", READY_PATIENCE, &signals) {
            Ok(true) => {}
            Ok(false) => log::warn!("the service manager did not take READY=1 within {READY_PATIENCE:?}"),
            Err(e) => log::warn!("{e}"),
        }
    }
    let started = Instant::now();

    let stdout = std::io::stdout();
    let result = if opts.line_buffered {
        seed::run(&node, &signals, &opts, &mut stdout.lock())
    } else {
        let mut out = out::WholeLines::new(stdout.lock(), 64 * 1024);
        seed::run(&node, &signals, &opts, &mut out)
    };
    if let Some(n) = &notifier {
        // The final counts with the goodbye, so that a manager adding up
        // its nodes' counts (piper-launch) has them exactly.
        let last = match &result {
            Ok((s, _)) => format!("{}\n", s.counts().status()),
            Err(_) => String::new(),
        };
        // Waits up to a second for room: a manager that stopped reading
        // costs a stopping node no more.
        if let Err(e) = n.notify(&format!("{last}STOPPING=1")) {
            log::debug!("{e}; STOPPING=1 not sent");
        }
    }
    let name = node.name().clone();
    let adopted = node.is_adopted();
    drop(node);
    if adopted && launcher_gone() {
        // The launcher held our socket and is gone (killed): nobody else
        // will remove the file, and our socket is closed now.
        match dir.reclaim(&name) {
            Ok(_) => {}
            Err(e) => log::warn!("{e}"),
        }
        // And its control socket, which no one else would remove either.
        if let Err(e) = dir.reclaim_control() {
            log::warn!("{e}");
        }
    }
    let (stats, end) = result?;
    summary(&name, &stats, started.elapsed(), args.json);
    Ok(match end {
        End::Stop(Stop::Signal(Signal::SIGINT)) => exit::INTERRUPTED,
        End::Handler | End::Stop(_) => exit::OK,
    })
}

/// `--cpu N`: this process runs on CPU N only.
fn pin_to(cpu: usize) -> Result<(), Failure> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu)
        .and_then(|()| sched_setaffinity(nix::unistd::Pid::from_raw(0), &set))
        .map_err(|e| Failure::usage(format!("--cpu {cpu}: not a CPU this process may use ({})", e.desc())))
}

/// Whether this node was started by a piper-launch (`$PIPER_LAUNCHER`)
/// that is no longer its parent: the launcher died, and its sockets are
/// ours to clean up.
fn launcher_gone() -> bool {
    launcher_pid().is_some_and(|pid| nix::unistd::getppid() != pid)
}

/// The piper-launch that started this node (`$PIPER_LAUNCHER`), if any.
fn launcher_pid() -> Option<nix::unistd::Pid> {
    let launcher = std::env::var(piper_core::env::LAUNCHER).ok()?.parse::<i32>().ok()?;
    Some(nix::unistd::Pid::from_raw(launcher))
}

/// Binds the node, or adopts the socket systemd passed for it.
fn open_node(dir: &SocketDir, name: Name, mut fds: Vec<activation::ListenFd>) -> Result<Node, Failure> {
    if fds.is_empty() {
        return Ok(Node::bind(dir, name)?);
    }
    let pick = fds
        .iter()
        .position(|f| f.name.as_deref() == Some(name.as_str()))
        .or((fds.len() == 1).then_some(0))
        .ok_or_else(|| Error::Activation {
            reason: format!(
                "{} sockets were passed and none is named '{name}' in LISTEN_FDNAMES",
                fds.len()
            ),
        })?;
    let fd = fds.swap_remove(pick).fd;
    log::info!("adopting the socket passed by the service manager");
    Ok(Node::adopt(fd, dir, name)?)
}

/// The exit summary. The rate counts from the first message received to the
/// last, so that time spent waiting for a peer does not dilute it.
fn summary(name: &Name, stats: &seed::Stats, elapsed: Duration, json: bool) {
    let active = stats.active.as_secs_f64();
    let rate = rate(stats.received, stats.active);
    if json {
        let object = piper_cli::json::Object::new()
            .str("node", name.as_str())
            .num("received", stats.received)
            .num("sent", stats.sent)
            .num("dropped", stats.dropped)
            .num("refused", stats.refused)
            .float("elapsed", elapsed.as_secs_f64())
            .float("active", active)
            .float("rate", rate)
            .finish();
        piper_cli::stderr_line(piper_cli::Priority::Notice, &object);
        return;
    }
    // One write: stderr is unbuffered, and a thousand nodes stopping at
    // once should not make twenty system calls each.
    let line = format!(
        "piper-node[{name}]: received {}, sent {}, dropped {} (refused {}), elapsed {:.3}s (active {active:.3}s), rate {rate:.0} msg/s",
        stats.received,
        stats.sent,
        stats.dropped,
        stats.refused,
        elapsed.as_secs_f64()
    );
    piper_cli::stderr_line(piper_cli::Priority::Notice, &line);
}

/// Messages per second over the active time; 0 when it is under the
/// millisecond the summary shows (a single message, or none, or a burst
/// too short to make a rate of).
fn rate(received: u64, active: Duration) -> f64 {
    if active >= Duration::from_millis(1) {
        received as f64 / active.as_secs_f64()
    } else {
        0.0
    }
}

/// `--list`: a line per node (`NAME\tPID\tSTATE`), or with `--json` one
/// JSON object per node per line (`name`, `pid`, `state`, `path`).
fn list(dir: &SocketDir, json: bool) -> Result<u8, Failure> {
    if dir.namespace() == Namespace::Abstract {
        return Err(Failure::usage("--list shows socket files; abstract nodes have none"));
    }
    let mut out = std::io::stdout().lock();
    for entry in dir.list()? {
        let state = match entry.liveness {
            Liveness::Live => "live",
            Liveness::Stale => "stale",
            Liveness::Unknown => "unknown",
            Liveness::Missing | Liveness::NotSocket => continue,
        };
        let line = if json {
            piper_cli::json::Object::new()
                .str("name", entry.name.as_str())
                .opt_num("pid", entry.pid)
                .str("state", state)
                .path("path", &dir.socket_path(&entry.name)?)
                .finish()
        } else {
            let pid = entry.pid.map_or("-".to_string(), |p| p.to_string());
            format!("{}\t{pid}\t{state}", entry.name)
        };
        writeln!(out, "{line}").map_err(|e| Failure::new(exit::FAILURE, format!("cannot write stdout: {e}")))?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_messages_per_active_second_and_zero_without_time() {
        assert_eq!(rate(10, Duration::from_secs(2)), 5.0);
        assert_eq!(rate(3, Duration::from_millis(250)), 12.0);
        assert_eq!(rate(1, Duration::ZERO), 0.0);
        assert_eq!(rate(0, Duration::ZERO), 0.0);
        // Two messages 40 µs apart: "active 0.000s", so no rate either.
        assert_eq!(rate(2, Duration::from_micros(40)), 0.0);
        assert_eq!(rate(2, Duration::from_millis(1)), 2000.0);
    }
}
