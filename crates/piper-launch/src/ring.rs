//! Watching a running ring and tearing it down.
//!
//! The launcher waits in `poll` on two descriptors: the notify socket, where
//! nodes say `READY=1`, and the signal pipe, which reports SIGCHLD and the
//! terminating signals. Every decision is made in this loop, never in a
//! signal handler.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use piper_core::notify::{Listener, Notifier};
use piper_core::{claim, send_unbound, Signals, Stop};

use crate::spawn::{Plan, Spawner};
use crate::{exit, Failure};

/// Timing and failure policy.
#[derive(Debug)]
pub struct Options {
    /// How long every node has to send `READY=1`.
    pub ready_timeout: Duration,
    /// How long nodes have between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Whether any node's death ends the run.
    pub fail_fast: bool,
}

/// How the run ended, before teardown.
enum Outcome {
    /// Exit with this code after teardown.
    Exit(u8),
    /// Report this failure after teardown.
    Fail(Failure),
}

struct Ring<'a> {
    plan: &'a Plan,
    signals: Signals,
    listener: Listener,
    pids: Vec<Option<Pid>>,
    /// Each node's process group (normally one for all).
    groups: Vec<Option<Pid>>,
    by_pid: HashMap<Pid, usize>,
    /// How each node ended, once reaped.
    ended: Vec<Option<WaitStatus>>,
    ready: Vec<bool>,
    ready_count: usize,
    progress: Progress,
}

/// Runs the plan: launch, wait for readiness, start the chain, watch, tear down.
pub fn run(plan: &Plan, options: &Options) -> Result<u8, Failure> {
    let mut signals = Signals::terminating()?;
    signals.watch(Signal::SIGCHLD, false)?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let listener = Listener::bind_abstract(&format!("piper-launch/{}/{nonce}", std::process::id()))?;
    let n = plan.names.len();
    let mut ring = Ring {
        plan,
        signals,
        listener,
        pids: vec![None; n],
        groups: vec![None; n],
        by_pid: HashMap::with_capacity(n),
        ended: vec![None; n],
        ready: vec![false; n],
        ready_count: 0,
        progress: Progress::new(n),
    };
    let outcome = match ring.launch(options.ready_timeout) {
        Ok(()) => ring.watch(options.fail_fast),
        Err(outcome) => outcome,
    };
    ring.teardown(options.grace);
    match outcome {
        Outcome::Exit(code) => Ok(code),
        Outcome::Fail(failure) => Err(failure),
    }
}

impl Ring<'_> {
    /// Starts every node and waits until all are ready, then starts the chain.
    fn launch(&mut self, timeout: Duration) -> Result<(), Outcome> {
        let started = Instant::now();
        let deadline = started + timeout;
        let n = self.plan.names.len();
        let mut spawner = Spawner::new(self.plan, self.listener.address()).map_err(fail)?;
        for i in 0..n {
            let (pid, group) = spawner.start(self.plan, i).map_err(fail)?;
            self.pids[i] = Some(pid);
            self.groups[i] = Some(group);
            self.by_pid.insert(pid, i);
            // Read READY=1 as we go: the notify queue holds only a few
            // datagrams, and a node waiting on it is a node not starting.
            self.pump(false, 0)?;
            self.progress.show(i + 1, self.ready_count);
        }
        while self.ready_count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let late: Vec<_> = (0..n)
                    .filter(|&i| !self.ready[i])
                    .map(|i| &self.plan.names[i])
                    .collect();
                let more = if late.len() > 1 {
                    format!(" and {} more", late.len() - 1)
                } else {
                    String::new()
                };
                return Err(fail(format!(
                    "node '{}'{more} not ready after --ready-timeout {:.1}s",
                    late[0],
                    timeout.as_secs_f64()
                )));
            }
            self.pump(true, left.as_millis().max(1) as u64)?;
            self.progress.show(n, self.ready_count);
        }
        self.progress.done();
        log::info!("{n} nodes ready in {:.3}s", started.elapsed().as_secs_f64());
        // Under systemd (Type=notify) the launcher is ready when its ring is.
        notify_manager("READY=1");
        let (first, second) = (&self.plan.names[0], &self.plan.names[1 % n]);
        send_unbound(&self.plan.dir, second, first.as_bytes()).map_err(|e| fail(format!("cannot start the chain: {e}")))
    }

    /// Waits for events (up to `wait_ms` if `wait`), then handles them:
    /// readiness, deaths and stop signals. During launch every death is fatal.
    fn pump(&mut self, wait: bool, wait_ms: u64) -> Result<(), Outcome> {
        if wait {
            self.wait_readable(Some(wait_ms));
        }
        while let Ok(Some((pid, state))) = self.listener.try_recv() {
            let Some(&i) = self.by_pid.get(&Pid::from_raw(pid)) else {
                continue;
            };
            if state.lines().any(|l| l == "READY=1") && !self.ready[i] {
                self.ready[i] = true;
                self.ready_count += 1;
            }
        }
        self.signals.drain();
        if let Some(stop) = self.signals.stop() {
            return Err(Outcome::Exit(stop_code(stop)));
        }
        if let Some(&(i, status)) = self.reap().first() {
            let name = &self.plan.names[i];
            return Err(fail(format!(
                "node '{name}' {} before the ring was ready",
                describe(status)
            )));
        }
        Ok(())
    }

    /// Runs until the foreground node dies or the launcher is told to stop.
    fn watch(&mut self, fail_fast: bool) -> Outcome {
        loop {
            self.wait_readable(None);
            self.drain_notifications();
            self.signals.drain();
            if let Some(stop) = self.signals.stop() {
                return Outcome::Exit(stop_code(stop));
            }
            for (i, status) in self.reap() {
                let name = &self.plan.names[i];
                if i == self.plan.foreground {
                    return Outcome::Exit(status_code(status));
                }
                log::warn!("node '{name}' {}", describe(status));
                if fail_fast {
                    return fail(format!("node '{name}' {} (--fail-fast)", describe(status)));
                }
            }
        }
    }

    /// SIGTERM (and SIGCONT) to every node at once, SIGKILL after `grace` or
    /// a second stop signal, reap all, and remove what killed nodes left.
    fn teardown(&mut self, grace: Duration) {
        let started = Instant::now();
        notify_manager("STOPPING=1");
        let alive = |ring: &Self| {
            (0..ring.pids.len())
                .filter(|&i| ring.pids[i].is_some() && ring.ended[i].is_none())
                .collect::<Vec<_>>()
        };
        let targets = alive(self);
        if targets.is_empty() && self.pids.iter().all(Option::is_none) {
            return;
        }
        // One kill per process group reaches every node at once. Only groups
        // with a live member are signalled: an empty group's id may since
        // belong to someone else.
        let mut groups: Vec<Pid> = targets.iter().filter_map(|&i| self.groups[i]).collect();
        groups.sort_unstable();
        groups.dedup();
        for group in groups {
            let _ = killpg(group, Signal::SIGTERM);
            let _ = killpg(group, Signal::SIGCONT);
        }
        log::debug!("SIGTERM sent to {} nodes after {:?}", targets.len(), started.elapsed());
        let stops = self.signals.stops();
        let deadline = started + grace;
        loop {
            self.reap();
            let left = deadline.saturating_duration_since(Instant::now());
            if alive(self).is_empty() || left.is_zero() || self.signals.stops() > stops {
                break;
            }
            // Nodes say STOPPING=1 on the way out; keep reading so that it
            // finds room (they never wait for it).
            self.wait_readable(Some(left.as_millis().max(1) as u64));
            self.drain_notifications();
            self.signals.drain();
        }
        log::debug!("reaped after {:?}", started.elapsed());
        let stubborn = alive(self);
        for &i in &stubborn {
            log::warn!("node '{}' ignored SIGTERM; sending SIGKILL", self.plan.names[i]);
            let _ = kill(self.pids[i].expect("started"), Signal::SIGKILL);
        }
        for &i in &stubborn {
            let pid = self.pids[i].expect("started");
            loop {
                match waitpid(pid, None) {
                    Err(Errno::EINTR) => continue,
                    Ok(status) => self.ended[i] = Some(status),
                    Err(_) => {}
                }
                break;
            }
        }
        // A node killed by a signal had no chance to remove its socket file.
        let mut removed = 0;
        for (i, status) in self.ended.iter().enumerate() {
            if matches!(status, Some(WaitStatus::Signaled(..))) {
                match claim::reclaim(&self.plan.dir, &self.plan.names[i]) {
                    Ok(true) => removed += 1,
                    Ok(false) => {}
                    Err(e) => log::warn!("{e}"),
                }
            }
        }
        log::info!(
            "tore down {} nodes in {:.3}s{}",
            targets.len(),
            started.elapsed().as_secs_f64(),
            if removed > 0 {
                format!(", removed {removed} stale sockets")
            } else {
                String::new()
            }
        );
    }

    fn drain_notifications(&self) {
        while let Ok(Some(_)) = self.listener.try_recv() {}
    }

    /// Collects every child that has ended, without waiting.
    fn reap(&mut self) -> Vec<(usize, WaitStatus)> {
        let mut ended = Vec::new();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {}", e.desc());
                    break;
                }
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                        continue;
                    }
                    if let Some(&i) = self.by_pid.get(&pid) {
                        self.ended[i] = Some(status);
                        ended.push((i, status));
                    }
                }
            }
        }
        ended
    }

    /// Polls the signal pipe and the notify socket for up to
    /// `ms` milliseconds (forever if `None`).
    fn wait_readable(&self, ms: Option<u64>) {
        let timeout = ms.map_or(PollTimeout::NONE, |ms| {
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = [
            PollFd::new(self.signals.fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, timeout);
    }
}

/// Tells the launcher's own service manager, if it has one, about `state`.
fn notify_manager(state: &str) {
    match Notifier::from_env() {
        Ok(Some(notifier)) => notifier.notify(state).unwrap_or_else(|e| log::warn!("{e}")),
        Ok(None) => {}
        Err(e) => log::warn!("{e}"),
    }
}

fn fail(message: String) -> Outcome {
    Outcome::Fail(Failure(exit::FAILURE, message))
}

/// 128 + the signal that stopped the launcher: 130 for SIGINT.
fn stop_code(stop: Stop) -> u8 {
    match stop {
        Stop::Signal(sig) => 128 + sig as u8,
        Stop::Requested => exit::FAILURE,
    }
}

/// The foreground's exit code, or 128 + the signal that killed it.
fn status_code(status: WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, code) => code as u8,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as u8,
        _ => exit::FAILURE,
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(pid, code) => format!("(pid {pid}) exited with status {code}"),
        WaitStatus::Signaled(pid, sig, _) => format!("(pid {pid}) was killed by {}", sig.as_str()),
        other => format!("changed state: {other:?}"),
    }
}

/// A progress line on a terminal while many nodes start.
struct Progress {
    total: usize,
    on: bool,
    last: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            on: total >= 20 && std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn show(&mut self, started: usize, ready: usize) {
        if self.on && self.last.elapsed() >= Duration::from_millis(100) {
            self.last = Instant::now();
            eprint!(
                "\rpiper-launch: started {started}/{}, ready {ready}/{}",
                self.total, self.total
            );
        }
    }

    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}
