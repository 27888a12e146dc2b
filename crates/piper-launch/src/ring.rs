//! Running a ring: launch, watch, teardown, as one event loop over a table
//! of members, which carries out what the [`Supervisor`] decides.
//!
//! Every phase repeats one step, [`Ring::wait_events`]: wait (in `poll`) on
//! the signalfd, the notify sockets, where nodes say `READY=1`, and the
//! relay pipes; read what came; reap every child that ended; and hand the
//! supervisor what happened. The phases differ only in what they do with
//! its [`Action`]s; no decision is made in a signal handler.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use piper_cli::{exit, Failure};
use piper_core::notify::{Listener, Notifier};
use piper_core::{send_unbound, Counts, Liveness, Name, Node};

use crate::io::control::{Control, Refusal, Request};
use crate::io::logs::{Log, LogPipe, Rotation};
use crate::output::{Display, Relay, Route};
use crate::placement::Placer;
use crate::plan::{Plan, Program, Ready, Socket};
use crate::signals::{self as blocked, SUSPENDING, TERMINATING};
use crate::spawn::{NodeIo, Spawner};
use crate::supervisor::healing::{self, Reinject};
use crate::supervisor::member::State;
use crate::supervisor::report::{self, nodes, Meter, Rate, Reported, View};
use crate::supervisor::{fail, stop_code, Action, Event, Outcome, Policy, Supervisor};
use piper_cli::metrics::Server as Metrics;
use piper_cli::signals::Blocked as Signals;
use piper_launch::cli::RestartPolicy;

pub use crate::supervisor::restart::Restart;

/// Timing and failure policy.
#[derive(Debug)]
pub struct Options {
    /// How long every node has to send `READY=1`.
    pub ready_timeout: Duration,
    /// How long nodes have between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Whether any node's death ends the run.
    pub fail_fast: bool,
    /// Whether the ring summary at exit is one JSON object.
    pub json: bool,
    /// Where the nodes run.
    pub cpus: piper_launch::cli::Cpus,
    /// How `--log-dir`'s files are rotated.
    pub logs: Rotation,
}

/// One node of the ring, as the launcher knows it.
#[derive(Debug)]
struct Member {
    name: Name,
    /// Its socket, bound and its name claimed by the launcher, which keeps
    /// it across the node's restarts: what is sent to a dead node waits in
    /// the queue for its successor. Dropping it removes the socket file;
    /// the teardown does that as soon as the nodes are told to stop.
    socket: Option<Node>,
    /// Its counts as its running process's last `STATUS=` said, and those
    /// of its earlier lives; and whether any life has reported counts at
    /// all (a program that never does is shown as such, not as zero).
    counts: Counts,
    earlier: Counts,
    counted: bool,
    /// Its output pipes, while the relay reads them: stdout, and (for the
    /// foreground under a status line) stderr.
    relays: Vec<Relay>,
    /// Its rate, from its reports.
    rate: Rate,
    /// Its log (`--log-dir`), opened at its first start and kept across
    /// its restarts, and the pipe its current life writes to it through.
    log: Option<Log>,
    log_pipe: Option<LogPipe>,
}

impl Member {
    /// Its counts over all its lives.
    fn all_counts(&self) -> Counts {
        self.counts + self.earlier
    }
}

struct Ring<'a> {
    plan: &'a Plan,
    members: Vec<Member>,
    by_pid: HashMap<Pid, usize>,
    signals: Signals,
    /// Where nodes send READY=1 and their counts.
    notices: Notices,
    display: Display,
    /// The status line's rate.
    meter: Meter,
    /// The launcher's own service manager, if it has one, and the last
    /// `STATUS=` it was sent.
    manager: Option<Notifier>,
    reported: Reported,
    /// Starts nodes.
    spawner: Spawner,
    /// The decisions.
    sup: Supervisor,
    /// Where nodes run.
    placer: Placer,
    /// Whether stdout is a pipe whose reader is still there: watched, so
    /// that the run ends when it goes, as `head`'s writers do.
    stdout_pipe: bool,
    /// The members whose readiness is a bound socket: looked at while
    /// they start.
    bound: Vec<usize>,
    /// The held sockets still being bound, in order, on a thread of their
    /// own while the launch starts the nodes (see [`Ring::bind`]).
    binder: Option<Binder>,
    /// The control socket, if this launcher has one, and the metrics
    /// endpoint, if asked for: served between the ring's events.
    control: Option<Control>,
    metrics: Option<Metrics>,
    /// How logs are rotated.
    rotation: Rotation,
}

/// The thread that binds the held sockets during a launch, and what it has
/// bound: member index and socket, or why not.
struct Binder {
    bound: std::sync::mpsc::Receiver<(usize, piper_core::Result<Node>)>,
    /// Says how many it bound, of how many.
    thread: std::thread::JoinHandle<(usize, usize)>,
}

/// Runs the plan: launch, wait for readiness, start the chain, watch, tear
/// down, and sum up.
pub fn run(plan: &Plan, options: &Options, display: Display, metrics: Option<Metrics>) -> Outcome {
    let started = Instant::now();
    let signals = blocked::block().map_err(|e| Failure::new(exit::FAILURE, format!("cannot block signals: {e}")))?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // First: its descriptors are then low in the table, and each child
    // copies only those (see Spawner::start).
    let spawner = Spawner::new().map_err(fail)?;
    let notices = Notices::bind(
        &format!("piper-launch/{}/{nonce}", std::process::id()),
        plan.members.len(),
    )?;
    let n = plan.members.len();
    let manager = Notifier::from_env().unwrap_or_else(|e| {
        log::warn!("{e}");
        None
    });
    let restarting = plan.members.iter().any(|m| m.restart.policy != RestartPolicy::No);
    let delay = plan.members.iter().map(|m| m.restart.delay).max().unwrap_or_default();
    let healing = healing::rule(
        plan.kick.is_some(),
        restarting,
        !plan.remote.is_empty(),
        delay,
        Duration::from_millis(plan.interval.unwrap_or(0)),
    );
    let policy = Policy {
        names: plan.names(),
        foreground: plan.foreground,
        ready_timeout: options.ready_timeout,
        restart: plan.members.iter().map(|m| m.restart).collect(),
        fail_fast: options.fail_fast,
        ticking: manager.is_some() || display.has_status_line() || healing.is_some(),
        healing,
        waiting_for: (0..n).map(|i| waiting_for(plan, i)).collect(),
        stderr_lost: (0..n).map(|i| !plan.keeps_stderr(i)).collect(),
    };
    let mut ring = Ring {
        plan,
        members: plan
            .members
            .iter()
            .map(|m| Member {
                name: m.name.clone(),
                socket: None,
                counts: Counts::default(),
                earlier: Counts::default(),
                // piper-node reports counts, whether it has yet or not; any
                // other program counts once it has.
                counted: matches!(m.program, Program::Node(_)),
                relays: Vec::new(),
                rate: Rate::default(),
                log: None,
                log_pipe: None,
            })
            .collect(),
        by_pid: HashMap::with_capacity(n),
        signals,
        notices,
        display,
        meter: Meter::new(Instant::now()),
        manager,
        reported: Reported::default(),
        spawner,
        sup: Supervisor::new(policy, started),
        placer: Placer::new(&options.cpus, n),
        stdout_pipe: stdout_is_pipe(),
        bound: (0..n).filter(|&i| plan.members[i].ready == Ready::Bound).collect(),
        binder: None,
        control: None,
        metrics,
        rotation: options.logs,
    };
    let outcome = match ring.bind(started)? {
        ControlFlow::Break(sig) => Ok(stop_code(sig)),
        ControlFlow::Continue(()) => match ring.launch(started) {
            ControlFlow::Continue(()) => ring.watch(),
            ControlFlow::Break(outcome) => outcome,
        },
    };
    ring.teardown(options.grace);
    // The summary is the last line, and under --json says how the run
    // failed, if it did; the failure's own line comes just before it.
    let failure = outcome.as_ref().err().map(|f| f.message.as_str());
    ring.summary(options.json, failure);
    outcome.map_err(|f| Failure::reported(f.code))
}

impl Ring<'_> {
    /// Checks every name before any node starts: a name in use is known at
    /// once, and ends the run with nothing started. A stale socket is left
    /// for the bind to reclaim; a member that binds its own (`socket =
    /// "own"`) cannot have its name held for it, so what a dead program
    /// left is removed now. A stop signal is looked for before each name,
    /// since a thousand of them take a while on a busy machine: Ctrl-C acts
    /// at once.
    ///
    /// Then the held sockets are bound, in order, on a thread of their own
    /// while the launch starts each node as soon as its socket is there
    /// ([`Ring::take_socket`]): where a socket file costs an inode on a disk
    /// (0.6 ms of CPU each here, as much as starting a node), binding a
    /// thousand first kept the CPUs from starting anything for 0.6 s. No
    /// node on a held socket ever binds its own. A name taken in the
    /// instant between its check and its bind ends the run as a name in
    /// use does, the nodes already started torn down.
    fn bind(&mut self, started: Instant) -> Result<ControlFlow<Signal>, Failure> {
        let n = self.members.len();
        let dir = &self.plan.dir;
        for i in 0..n {
            if let Some(sig) = self.stop_before_launch() {
                log::debug!("checked {i} names in {:?}; {sig} came", started.elapsed());
                return Ok(ControlFlow::Break(sig));
            }
            let name = &self.members[i].name;
            match self.plan.members[i].socket {
                Socket::Held => dir.check_free(name)?,
                Socket::Own => clear_own(dir, name)?,
            }
        }
        log::debug!("checked {n} names in {:?}", started.elapsed());
        // Once every name is checked free: a launcher that cannot run has
        // nothing to say about the control socket.
        self.control = Control::bind(&self.plan.dir);
        let held: Vec<(usize, Name)> = (0..n)
            .filter(|&i| self.plan.members[i].socket == Socket::Held)
            .map(|i| (i, self.members[i].name.clone()))
            .collect();
        let (send, bound) = std::sync::mpsc::channel();
        let dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("bind".into())
            .spawn(move || {
                let n = held.len();
                for (k, (i, name)) in held.into_iter().enumerate() {
                    // Gone: the launch has ended, and the socket goes with
                    // it (a Node's drop removes its file).
                    if send.send((i, Node::bind(&dir, name))).is_err() {
                        return (k + 1, n);
                    }
                }
                (n, n)
            })
            .map_err(|e| Failure::new(exit::FAILURE, format!("cannot start a thread to bind sockets: {e}")))?;
        self.binder = Some(Binder { bound, thread });
        Ok(ControlFlow::Continue(()))
    }

    /// Waits until member `i`'s held socket is bound (the binder hands them
    /// over in order), and keeps every socket bound meanwhile.
    fn take_socket(&mut self, i: usize) -> Result<(), Failure> {
        let Some(binder) = &self.binder else { return Ok(()) };
        while self.plan.members[i].socket == Socket::Held && self.members[i].socket.is_none() {
            match binder.bound.recv() {
                Ok((k, bound)) => self.members[k].socket = Some(bound?),
                Err(_) => return Err(fail(format!("node '{}' has no socket", self.members[i].name))),
            }
        }
        Ok(())
    }

    /// Ends the binder: whatever it has not handed over is dropped, and so
    /// removed; the thread ends at its next bind.
    fn stop_binder(&mut self) {
        if let Some(Binder { bound, thread }) = self.binder.take() {
            drop(bound);
            if let Ok((k, n)) = thread.join() {
                log::debug!("bound {k} of {n} sockets");
            }
        }
    }

    /// The first stop signal pending, while no node runs yet; a suspending
    /// signal stops the launcher right here (there is no ring to stop).
    fn stop_before_launch(&mut self) -> Option<Signal> {
        let mut stop = None;
        for sig in self.signals.read() {
            if TERMINATING.contains(&sig) {
                stop = stop.or(Some(sig));
            } else if SUSPENDING.contains(&sig) {
                self.job_control(Event::Suspend(sig));
            }
        }
        stop
    }

    /// The one step of every phase: waits up to `timeout` (forever if
    /// `None`) for a signal, a notification or output, then takes in
    /// everything that is there (stop signals, `READY=1`, counts, ended
    /// children) and returns what the supervisor makes of it. Stops come
    /// first: once the run ends, later news is only recorded.
    fn wait_events(&mut self, timeout: Option<Duration>) -> Vec<Action> {
        // A socket's binding sends no notice: looked for every 20 ms while
        // a member waits for it.
        let binding = self
            .bound
            .iter()
            .any(|&i| matches!(self.sup.state(i), State::Starting { .. }));
        let timeout = match binding {
            true => Some(timeout.map_or(BOUND_EVERY, |t| t.min(BOUND_EVERY))),
            false => timeout,
        };
        // A connection that runs out of time is closed on time.
        let now = Instant::now();
        let served = self.control.as_ref().and_then(Control::next_deadline);
        let served = served
            .into_iter()
            .chain(self.metrics.as_ref().and_then(Metrics::next_deadline))
            .min();
        let timeout = match (timeout, served) {
            (Some(t), Some(at)) => Some(t.min(at.saturating_duration_since(now))),
            (None, Some(at)) => Some(at.saturating_duration_since(now)),
            (t, None) => t,
        };
        let timeout = timeout.map_or(PollTimeout::NONE, |t| {
            PollTimeout::try_from(t.as_millis()).unwrap_or(PollTimeout::MAX)
        });
        // (member, relay) for every open relay pipe, in poll order, and
        // the members whose log pipe is open.
        let relaying: Vec<(usize, usize)> = (0..self.members.len())
            .flat_map(|i| (0..self.members[i].relays.len()).map(move |k| (i, k)))
            .collect();
        let logging: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].log_pipe.is_some())
            .collect();
        let logs_ready: Vec<usize>;
        let mut stdout_gone = false;
        let (mut control_ready, mut metrics_ready) = (false, false);
        let readable: Vec<(usize, usize)> = {
            let mut fds = vec![
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.notices.as_fd(), PollFlags::POLLIN),
            ];
            let served = [
                self.control.as_ref().map(|c| c.as_fd()),
                self.metrics.as_ref().map(|m| m.as_fd()),
            ];
            fds.extend(served.iter().flatten().map(|&fd| PollFd::new(fd, PollFlags::POLLIN)));
            let first_relay = fds.len();
            let relays = relaying.iter().map(|&(i, k)| self.members[i].relays[k].as_fd());
            fds.extend(relays.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
            let first_log = fds.len();
            let pipes = logging.iter().filter_map(|&i| self.members[i].log_pipe.as_ref());
            fds.extend(pipes.map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN)));
            // A pipe's write end polls as POLLERR once its reader is gone;
            // nothing else is asked of it.
            let stdout = std::io::stdout();
            if self.stdout_pipe {
                fds.push(PollFd::new(stdout.as_fd(), PollFlags::empty()));
            }
            let _ = poll(&mut fds, timeout);
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            if self.stdout_pipe && fds.last().is_some_and(ready) {
                self.stdout_pipe = false;
                stdout_gone = true;
            }
            let mut k = 2;
            for (kind, fd) in served.iter().enumerate() {
                if fd.is_some() {
                    let is_ready = ready(&fds[k]);
                    *[&mut control_ready, &mut metrics_ready][kind] = is_ready;
                    k += 1;
                }
            }
            logs_ready = (logging.iter().zip(&fds[first_log..]))
                .filter(|(_, fd)| ready(fd))
                .map(|(&i, _)| i)
                .collect();
            relaying
                .iter()
                .zip(&fds[first_relay..])
                .filter(|(_, fd)| ready(fd))
                .map(|(&ik, _)| ik)
                .collect()
        };
        for i in logs_ready {
            self.drain_log(i);
        }
        // Back to front, so that removing a closed pipe moves no index yet to come.
        for &(i, k) in readable.iter().rev() {
            let member = &mut self.members[i];
            if !self.display.read(&mut member.relays[k], i, &member.name) {
                member.relays.remove(k);
            }
        }
        self.display.flush();
        let mut actions = Vec::new();
        let stdout_gone = stdout_gone || self.display.stdout_gone();
        // Children are reaped only after a SIGCHLD: waitpid scans every
        // child, and calling it after each of a thousand starts cost the
        // launch 0.1 s.
        let mut reap = false;
        for sig in self.signals.read() {
            if sig == Signal::SIGCHLD {
                reap = true;
            } else if TERMINATING.contains(&sig) {
                actions.extend(self.sup.handle(Event::Stop(sig), Instant::now()));
            } else if SUSPENDING.contains(&sig) {
                self.job_control(Event::Suspend(sig));
            } else if sig == Signal::SIGCONT {
                self.job_control(Event::Resume);
            } else if sig == Signal::SIGWINCH {
                self.display.resized();
            }
        }
        // Before the deaths: a node that found stdout gone ended for the
        // same reason, and is no failure. The reader may have gone since
        // the poll, and the node with it: asked again before any death is
        // judged.
        let stdout_gone = stdout_gone || (reap && self.stdout_pipe && self.stdout_reader_gone());
        if stdout_gone {
            actions.extend(self.sup.handle(Event::OutputGone, Instant::now()));
        }
        self.read_notifications();
        if binding {
            self.look_bound();
        }
        self.serve(control_ready, metrics_ready, &mut actions);
        if reap {
            loop {
                let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        log::warn!("waitpid: {}", e.desc());
                        break;
                    }
                    Ok(status) => status,
                };
                if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                    continue;
                }
                // The pid stays known: a node's last words (its final counts)
                // may be read after it was reaped.
                if let Some(&member) = status.pid().and_then(|pid| self.by_pid.get(&pid)) {
                    actions.extend(self.sup.handle(Event::Ended { member, status }, Instant::now()));
                }
            }
        }
        actions
    }

    /// Takes in every queued notification: `READY=1`, and `STATUS=` counts
    /// from each member's current life.
    fn read_notifications(&mut self) {
        for (pid, state) in self.notices.take() {
            let Some(&i) = self.by_pid.get(&Pid::from_raw(pid)) else {
                continue;
            };
            let pid = Pid::from_raw(pid);
            if self.sup.state(i).pid() != Some(pid) {
                continue; // a life before this one
            }
            for line in state.lines() {
                if line == "READY=1" {
                    self.became_ready(i, pid);
                } else if let Some(counts) = Counts::from_status(line) {
                    let member = &mut self.members[i];
                    member.counts = counts;
                    member.counted = true;
                    member.rate.record(member.all_counts().received, Instant::now());
                }
            }
        }
    }

    /// Member `i`'s process `pid` is ready, as its readiness says: its
    /// `READY=1`, its exec, or its bound socket.
    fn became_ready(&mut self, i: usize, pid: Pid) {
        for action in self.sup.handle(Event::Ready { member: i, pid }, Instant::now()) {
            if let Action::Place { member, pid } = action {
                if self.plan.members[member].cpu.is_none() {
                    self.placer.ready(member, pid);
                }
            }
        }
    }

    /// The members waiting for their own socket to be bound: ready once it
    /// answers a probe.
    fn look_bound(&mut self) {
        for k in 0..self.bound.len() {
            let i = self.bound[k];
            let State::Starting { pid, .. } = self.sup.state(i) else {
                continue;
            };
            if self
                .plan
                .dir
                .probe(&self.members[i].name)
                .is_ok_and(|l| l == Liveness::Live)
            {
                self.became_ready(i, pid);
            }
        }
    }

    /// Ctrl-Z (or a background read or write of the terminal), and `fg`
    /// or `bg`: carries out at once what the supervisor says, since the
    /// launcher itself may have to stop right here.
    fn job_control(&mut self, event: Event) {
        for action in self.sup.handle(event, Instant::now()) {
            match action {
                Action::Log(level, message) => log::log!(level, "{message}"),
                Action::Suspend => self.suspend(),
                Action::Resume => self.signal_groups(Signal::SIGCONT),
                _ => {}
            }
        }
    }

    /// Stops the ring and the launcher until someone continues the
    /// launcher, then continues the ring.
    fn suspend(&mut self) {
        self.display.suspending();
        self.signal_groups(Signal::SIGSTOP);
        // Stops right here until someone continues us.
        let _ = kill(nix::unistd::getpid(), Signal::SIGSTOP);
        self.signal_groups(Signal::SIGCONT);
    }

    /// Sends `sig` to every process group with a live member: one kill
    /// reaches every node at once. An empty group is never signalled: its id
    /// may since belong to someone else.
    fn signal_groups(&self, sig: Signal) {
        let mut groups: Vec<Pid> = self.alive().map(|(_, _, group)| group).collect();
        groups.sort_unstable();
        groups.dedup();
        for group in groups {
            let _ = killpg(group, sig);
        }
    }

    fn ready(&self) -> usize {
        self.sup.ready()
    }

    /// Whether stdout is a pipe whose reader has gone (its write end polls
    /// as POLLERR); if so, it is not asked again.
    fn stdout_reader_gone(&mut self) -> bool {
        let stdout = std::io::stdout();
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
        let gone = matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1));
        if gone {
            self.stdout_pipe = false;
        }
        gone
    }

    /// Answers what the control socket and the metrics endpoint were
    /// asked (those that were `ready`, and any connection out of time).
    /// What a user asked the supervisor to do joins `actions`, for the
    /// phase's loop to carry out with the rest.
    fn serve(&mut self, control_ready: bool, metrics_ready: bool, actions: &mut Vec<Action>) {
        let now = Instant::now();
        let due = |deadline: Option<Instant>| deadline.is_some_and(|at| at <= now);
        if let Some(mut metrics) = self.metrics.take() {
            if metrics_ready || due(metrics.next_deadline()) {
                metrics.serve(now, || self.metrics_text(now));
            }
            self.metrics = Some(metrics);
        }
        if let Some(mut control) = self.control.take() {
            if control_ready || due(control.next_deadline()) {
                for (id, request) in control.requests(now) {
                    let answer = self.answer(request, now, actions);
                    control.respond(id, answer);
                }
            }
            self.control = Some(control);
        }
    }

    /// What the control socket answers to `request`.
    fn answer(&mut self, request: Request, now: Instant, actions: &mut Vec<Action>) -> Result<String, Refusal> {
        let ring = report::Ring {
            dir: &self.dir_shown(),
            reinjected: self.sup.reinjections(),
        };
        match request {
            Request::Status { json } => {
                let views = self.views(now, true);
                Ok(match json {
                    true => report::status_json(ring, &views) + "\n",
                    false => report::status_text(ring, &views),
                })
            }
            Request::Metrics => Ok(self.metrics_text(now)),
            Request::Act(act, names) => {
                let members = names.iter().map(|n| self.member(n)).collect::<Result<Vec<_>, _>>()?;
                let mut said = String::new();
                for i in members {
                    let (what, acts) = self.sup.act(i, act, now).map_err(Refusal::Failed)?;
                    log::info!("asked through the control socket: {what}");
                    said.push_str(&what);
                    said.push('\n');
                    actions.extend(acts);
                }
                Ok(said)
            }
            Request::Kick => {
                // What the plan's start sends; a ring that another launcher
                // (or nobody) was to start gets the first member's name, sent
                // to its next, as --nodes would have sent it.
                // A kick adds a message; it replaces none. On a ring that
                // moves, the user is told there are now more.
                let moving = self.views(now, false).iter().any(|v| v.rate > 0.0);
                let first = &self.plan.members[0];
                let (from, to) = match &self.plan.kick {
                    Some((from, to)) => (from, to),
                    None => (&first.name, &first.next),
                };
                send_unbound(&self.plan.dir, to, from.as_bytes())
                    .map_err(|e| Refusal::Failed(format!("cannot start the chain: {e}")))?;
                log::info!("asked through the control socket: starting the chain ('{from}' to '{to}')");
                let more = match moving {
                    true => "; the ring was moving, so it now carries one message more",
                    false => "",
                };
                Ok(format!("started the chain: '{from}' to '{to}'{more}\n"))
            }
            Request::Signal(name, sig) => {
                let i = self.member(&name)?;
                let Some((pid, _)) = self.sup.state(i).live() else {
                    let state = report::state_word(self.sup.state(i));
                    return Err(Refusal::Failed(format!("'{name}' is not running ({state})")));
                };
                // Our own child, not yet reaped: the pid cannot have been reused.
                kill(pid, sig).map_err(|e| Refusal::Failed(format!("cannot signal '{name}': {}", e.desc())))?;
                log::info!(
                    "asked through the control socket: sent {} to '{name}' (pid {pid})",
                    sig.as_str()
                );
                // Unlike a stop by hand, a death by a signal is the
                // foreground's end, and ends the run unless it is restarted:
                // the user is told before the ring goes.
                let restart = &self.plan.members[i].restart;
                let restarted = restart.foreground && restart.wants(WaitStatus::Signaled(pid, sig, false));
                let warning = match i == self.plan.foreground && !restarted {
                    true => format!(
                        "'{name}' is the foreground, not restarted after {}: if it ends, the run ends (`ctl stop` or `ctl restart` it instead, or run with --restart-foreground)\n",
                        sig.as_str()
                    ),
                    false => String::new(),
                };
                Ok(format!("sent {} to '{name}' (pid {pid})\n{warning}", sig.as_str()))
            }
        }
    }

    /// Writes what member `i`'s log pipe holds to its log; forgets the
    /// pipe once its life has closed it.
    fn drain_log(&mut self, i: usize) {
        let member = &mut self.members[i];
        if let (Some(pipe), Some(log)) = (&mut member.log_pipe, &mut member.log) {
            if !pipe.drain(log) {
                member.log_pipe = None;
            }
        }
    }

    /// The index of the member named `name`.
    fn member(&self, name: &Name) -> Result<usize, Refusal> {
        (self.members.iter().position(|m| m.name == *name))
            .ok_or_else(|| Refusal::Unknown(format!("no node '{name}' in this ring")))
    }

    /// The socket directory as status shows it.
    fn dir_shown(&self) -> String {
        let path = self.plan.dir.path().display();
        match self.plan.dir.namespace() {
            piper_core::Namespace::Abstract => format!("@{path}"),
            piper_core::Namespace::Filesystem => path.to_string(),
        }
    }

    /// Every member as the control socket and the metrics show it; with
    /// `cpus`, where each may run (one system call per live node).
    fn views(&self, now: Instant, cpus: bool) -> Vec<View<'_>> {
        (self.members.iter().enumerate())
            .map(|(i, m)| {
                let state = self.sup.state(i);
                View {
                    name: &m.name,
                    state,
                    restarts: self.sup.restarts(i),
                    counts: Some(m.all_counts()).filter(|_| m.counted),
                    // A node with no process moves nothing, whatever its
                    // last reports said a moment ago.
                    rate: state.live().map_or(0.0, |_| m.rate.per_second(now)),
                    cpus: state.live().filter(|_| cpus).and_then(|(pid, _)| cpu_list(pid)),
                    changed: self.sup.changed(i),
                }
            })
            .collect()
    }

    /// The metrics, as `--metrics` and `ctl metrics` give them.
    fn metrics_text(&self, now: Instant) -> String {
        let ring = report::Ring {
            dir: &self.dir_shown(),
            reinjected: self.sup.reinjections(),
        };
        report::metrics(ring, &self.views(now, false), now, std::time::SystemTime::now())
    }

    /// Starts every node and waits until all are ready, then starts the
    /// chain. Any death or stop before that ends the run.
    fn launch(&mut self, started: Instant) -> ControlFlow<Outcome> {
        let n = self.members.len();
        let mut shown = Instant::now();
        for i in 0..n {
            if let Err(failure) = self.take_socket(i) {
                return ControlFlow::Break(Err(failure));
            }
            or_fail(self.start(i))?;
            // Read READY=1 as we go: the notify queue holds only a few
            // datagrams, and a node waiting on it is a node not starting.
            let events = self.wait_events(Some(Duration::ZERO));
            self.check_launch(events)?;
            if shown.elapsed() >= PROGRESS_EVERY {
                shown = Instant::now();
                self.display.status(format!(
                    "piper-launch: started {}/{n}, ready {}/{n}",
                    i + 1,
                    self.ready()
                ));
            }
        }
        self.stop_binder();
        log::debug!(
            "started {n} nodes after {:?}, {} ready",
            started.elapsed(),
            self.ready()
        );
        while self.ready() < n {
            let now = Instant::now();
            let wake = self.sup.next_wake().map(|at| at.saturating_duration_since(now));
            let mut actions = self.wait_events(Some(wake.map_or(PROGRESS_EVERY, |w| w.min(PROGRESS_EVERY))));
            // The launch's patience is the supervisor's.
            actions.extend(self.sup.handle(Event::Wake { received: None }, Instant::now()));
            self.check_launch(actions)?;
            self.display
                .status(format!("piper-launch: started {n}/{n}, ready {}/{n}", self.ready()));
        }
        self.display.clear_status();
        self.placer.launched(&self.placed_pids());
        log::info!("{} ready in {:.3}s", nodes(n), started.elapsed().as_secs_f64());
        // Under systemd (Type=notify) the launcher is ready when its ring is.
        notify_manager("READY=1");
        if self.plan.kick.is_none() {
            // A silent ring looks like a stalled one: say why it is silent.
            let why = match &self.plan.file {
                Some(file) => format!("no start in {}, or --no-start", file.display()),
                None => "--no-start".to_string(),
            };
            log::info!("nothing here starts the chain ({why}): the ring waits for a message to one of its nodes");
            return ControlFlow::Continue(());
        }
        for next in &self.plan.remote {
            self.await_ring_next(next, self.sup.deadline())?;
        }
        or_fail(self.kick().map_err(|e| format!("cannot start the chain: {e}")))
    }

    /// Waits (until `deadline`) for the node that closes the ring elsewhere
    /// to be reachable: its bridge's stand-in, or the node itself.
    fn await_ring_next(&mut self, next: &Name, deadline: Instant) -> ControlFlow<Outcome> {
        let reachable = |dir: &piper_core::SocketDir| {
            dir.namespace() == piper_core::Namespace::Abstract || dir.probe(next).is_ok_and(|l| l == Liveness::Live)
        };
        let mut said = false;
        while !reachable(&self.plan.dir) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let what = match &self.plan.file {
                    None => format!("--ring-next '{next}'"),
                    Some(file) => format!("remote '{next}' ({})", file.display()),
                };
                return ControlFlow::Break(Err(fail(format!(
                    "{what} is not reachable in {}: is its bridge (or the node) running?",
                    self.plan.dir.display_address(next)
                ))));
            }
            if !said {
                said = true;
                self.display.status(format!("piper-launch: waiting for '{next}'"));
                log::info!("waiting for '{next}' to close the ring");
            }
            let events = self.wait_events(Some(left.min(Duration::from_millis(20))));
            self.check_launch(events)?;
        }
        self.display.clear_status();
        ControlFlow::Continue(())
    }

    /// Starts the chain as the plan says: for `--nodes`, the first node's
    /// name to the second, as the seed's ping does (a lone node gets the
    /// name of the node it answers); for a topology file, the `start`
    /// node's name to its `next`.
    fn kick(&self) -> piper_core::Result<()> {
        let Some((from, to)) = &self.plan.kick else {
            return Ok(());
        };
        send_unbound(&self.plan.dir, to, from.as_bytes())
    }

    /// Starts node `i` on its held socket, with relay pipes if its lines
    /// are relayed.
    fn start(&mut self, i: usize) -> Result<(), String> {
        // The node's ends of its relay pipes live until the start is done.
        let pipe = |stderr| Relay::pipe(stderr).map_err(|e| format!("cannot make a pipe: {}", e.desc()));
        let out = match self.display.route == Route::Relay && self.plan.shows(i) {
            true => Some(pipe(false)?),
            false => None,
        };
        let err = match i == self.plan.foreground && self.display.has_status_line() {
            true => Some(pipe(true)?),
            false => None,
        };
        // A logged node writes through a pipe of its own into its log,
        // which its first start opens; what its last life left is written
        // first.
        let logged = match &self.plan.log_dir {
            Some(dir) if !self.plan.shows(i) && i != self.plan.foreground => {
                if self.members[i].log.is_none() {
                    let path = dir.join(format!("{}.log", self.members[i].name));
                    self.members[i].log = Some(Log::open(path, self.rotation)?);
                }
                self.drain_log(i);
                let (pipe, write) = LogPipe::new().map_err(|e| format!("cannot make a pipe: {}", e.desc()))?;
                Some((pipe, write))
            }
            _ => None,
        };
        let log_fd = logged.as_ref().map(|(_, write)| write.as_raw_fd());
        let fd = |p: &Option<(Relay, std::os::fd::OwnedFd)>| p.as_ref().map(|(_, write)| write.as_raw_fd());
        let socket = match (&self.members[i].socket, self.plan.members[i].socket) {
            (Some(socket), _) => Some(socket.as_fd().as_raw_fd()),
            (None, Socket::Held) => return Err("its socket is gone: the ring is being torn down".into()),
            // What its last life left would make its bind fail.
            (None, Socket::Own) => {
                clear_own(&self.plan.dir, &self.members[i].name).map_err(|e| e.to_string())?;
                None
            }
        };
        let cpus = match self.plan.members[i].cpu {
            Some(cpu) => Some(crate::placement::set_of(&[cpu])),
            None => self.placer.before_exec(i),
        };
        let io = NodeIo {
            notify_socket: self.notices.address(i),
            socket,
            stdout: fd(&out).or(log_fd),
            stderr: fd(&err).or(log_fd),
        };
        let (pid, group) = self.spawner.start(self.plan, i, io, cpus)?;
        let member = &mut self.members[i];
        // A restarted node's last life may have left lines in its pipes.
        for relay in &mut member.relays {
            self.display.read(relay, i, &member.name);
        }
        member.relays = out.into_iter().chain(err).map(|(relay, _)| relay).collect();
        member.log_pipe = logged.map(|(pipe, _)| pipe);
        // A new life counts from zero; the last one's counts are kept.
        member.earlier += std::mem::take(&mut member.counts);
        self.sup
            .handle(Event::Started { member: i, pid, group }, Instant::now());
        self.by_pid.insert(pid, i);
        if self.plan.members[i].ready == Ready::Exec {
            self.became_ready(i, pid);
        }
        Ok(())
    }

    /// During launch, the supervisor ends the run at a stop signal or any
    /// death.
    fn check_launch(&self, actions: Vec<Action>) -> ControlFlow<Outcome> {
        for action in actions {
            match action {
                Action::End(end) => return ControlFlow::Break(end.map_err(fail)),
                Action::Log(level, message) => log::log!(level, "{message}"),
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    /// Runs until the foreground node dies or the launcher is told to stop,
    /// carrying out what the supervisor decides: restarts, reports (once a
    /// second when anything is ticking: a manager to report to, a status
    /// line, or a ring to heal), and the chain sent again after a silence.
    fn watch(&mut self) -> Outcome {
        let now = Instant::now();
        self.sup.watch(now);
        self.meter = Meter::new(now);
        loop {
            let now = Instant::now();
            let look = self.placer.next_look();
            let wake = self.sup.next_wake().into_iter().chain(look).min();
            let mut actions = self.wait_events(wake.map(|at| at.saturating_duration_since(now)));
            let now = Instant::now();
            let received = self.members.iter().all(|m| m.counted).then(|| self.totals().received);
            actions.extend(self.sup.handle(Event::Wake { received }, now));
            for action in actions {
                match action {
                    Action::End(end) => return end.map_err(fail),
                    Action::Log(level, message) => log::log!(level, "{message}"),
                    Action::Start(i) => self.start(i).map_err(fail)?,
                    Action::Report => {
                        self.report_status();
                        self.draw_status();
                    }
                    Action::Reinject(why) => self.reinject(why),
                    Action::Terminate { pid, .. } => terminate(pid),
                    Action::Place { .. } | Action::Kill(_) | Action::Suspend | Action::Resume => {}
                }
            }
            if look.is_some_and(|at| now >= at) {
                let alive = self.placed_pids();
                self.placer.look(&alive);
            }
        }
    }

    /// Sends the chain again, as the silence rule says.
    fn reinject(&mut self, why: Reinject) {
        let (silent, why) = match why {
            Reinject::AfterRestart { silent } => (silent, "since a node was restarted"),
            Reinject::Lost { silent } => (silent, "(its message was lost on the way round)"),
        };
        log::warn!(
            "the ring has been silent for {:.1}s {why}: starting the chain again",
            silent.as_secs_f64()
        );
        match self.kick() {
            Ok(()) => drop(self.sup.handle(Event::Reinjected, Instant::now())),
            Err(e) => log::warn!("cannot restart the chain: {e}"),
        }
    }

    fn restarts(&self) -> u64 {
        (0..self.members.len()).map(|i| u64::from(self.sup.restarts(i))).sum()
    }

    /// The counts of every node added up.
    fn totals(&self) -> Counts {
        self.members.iter().map(Member::all_counts).sum()
    }

    /// The status line on a terminal: nodes alive, messages per second
    /// over the last tick, and the totals.
    fn draw_status(&mut self) {
        if !self.display.has_status_line() {
            return;
        }
        let totals = self.totals();
        let rate = self.meter.look(totals.received, Instant::now());
        let uncounted = self.members.iter().filter(|m| !m.counted).count();
        let text = report::status_line(self.alive().count(), self.members.len(), rate, totals, uncounted);
        self.display.status(text);
    }

    /// The ring summary at exit: the nodes' counts added up and how they
    /// ended, as one line, or one JSON object with each node's figures.
    fn summary(&mut self, json: bool, failure: Option<&str>) {
        // What the nodes printed last, before the launcher's last words;
        // and the rest of their logs.
        for i in 0..self.members.len() {
            let member = &mut self.members[i];
            for relay in &mut member.relays {
                self.display.read(relay, i, &member.name);
            }
            self.drain_log(i);
        }
        self.display.flush();
        self.display.clear_status();
        if let Some(message) = failure {
            let line = format!("piper-launch: error: {message}");
            piper_cli::stderr_line(piper_cli::Priority::Error, &line);
        }
        // A node's last counts may come after it was reaped, and after the
        // teardown's last look.
        self.read_notifications();
        let Counts {
            received,
            sent,
            dropped,
        } = self.totals();
        if json {
            let members: Vec<String> = (0..self.members.len())
                .map(|i| member_json(&self.members[i], self.sup.state(i), self.sup.restarts(i)))
                .collect();
            let object = piper_cli::json::Object::new()
                .num("nodes", self.members.len() as u64)
                .num("received", received)
                .num("sent", sent)
                .num("dropped", dropped)
                .num("restarts", self.restarts())
                .num("reinjected", self.sup.reinjections())
                .raw("members", &format!("[{}]", members.join(",")))
                .opt_str("error", failure)
                .finish();
            piper_cli::stderr_line(piper_cli::Priority::Notice, &object);
            return;
        }
        let states = (0..self.members.len()).map(|i| self.sup.state(i));
        let uncounted: Vec<&str> = self
            .members
            .iter()
            .filter(|m| !m.counted)
            .map(|m| m.name.as_str())
            .collect();
        let line = report::summary_line(
            states,
            self.totals(),
            self.restarts(),
            self.sup.reinjections(),
            &uncounted,
        );
        piper_cli::stderr_line(piper_cli::Priority::Notice, &line);
    }

    /// `STATUS=` for the launcher's own manager (`systemctl status
    /// piper-launch` shows it): nodes alive, and their counts added up.
    /// Sent only when it changed.
    fn report_status(&mut self) {
        let Some(manager) = &self.manager else { return };
        let status = report::manager_status(self.members.len(), self.alive().count(), self.totals());
        // Unchanged, or the manager's queue full: the next tick tries again.
        if self.reported.changed(&status) {
            if let Ok(true) = manager.try_notify(&status) {
                self.reported.sent(status);
            }
        }
    }

    fn alive(&self) -> impl Iterator<Item = (usize, Pid, Pid)> + '_ {
        self.sup.alive()
    }

    /// The live nodes' pids that the placer moves: all but those pinned
    /// to a CPU of their own.
    fn placed_pids(&self) -> Vec<Pid> {
        let placed = self.alive().filter(|&(i, _, _)| self.plan.members[i].cpu.is_none());
        placed.map(|(_, pid, _)| pid).collect()
    }

    /// SIGTERM (and SIGCONT) to every node at once, SIGKILL after `grace` or
    /// a second stop signal, reap all, and remove what killed nodes left.
    fn teardown(&mut self, grace: Duration) {
        // First: what is still being bound must not outlive the run.
        self.stop_binder();
        let started = Instant::now();
        notify_manager("STOPPING=1");
        self.sup.stop(started, grace);
        let targets = self.alive().count();
        if (0..self.members.len()).all(|i| self.sup.state(i) == State::Planned) {
            return;
        }
        // SIGCONT too, and first: a stopped node cannot act on SIGTERM, and
        // it wakes no node that is not stopped. After SIGTERM a thousand
        // nodes wake at once, and the launcher may not run again until most
        // have exited (a second signal sent then came a second late).
        let alive = self.placed_pids();
        self.placer.release(&alive);
        self.signal_groups(Signal::SIGCONT);
        self.signal_groups(Signal::SIGTERM);
        log::debug!("SIGTERM sent to {targets} nodes after {:?}", started.elapsed());
        // The names are free from now on: the socket files go while the
        // nodes exit, on a thread of their own that takes whichever CPU is
        // free, while this one reaps (after the nodes, and on this thread, a
        // thousand took 30 ms alone). A stopping node whose peer's file is
        // gone counts the reply dropped without a warning; before, it was
        // sent into a socket that nobody would read.
        let sockets: Vec<Node> = self.members.iter_mut().filter_map(|m| m.socket.take()).collect();
        // The control socket goes with them: the directory is free for the
        // next launcher, and there is nothing left to ask of this ring.
        self.control = None;
        let removal = std::thread::Builder::new()
            .name("remove".into())
            .spawn(move || drop(sockets))
            .map_err(|e| log::debug!("no thread to remove the sockets ({e}): removing them here"));
        // Nodes say STOPPING=1 on the way out; reading keeps room for it
        // (they never wait for it). The supervisor says when the grace is
        // over, or cut short by a second stop signal, and whom to kill.
        // (Asked first, before any wait: with --grace 0 every node is
        // killed as it was told to stop.)
        let mut stubborn = Vec::new();
        let mut actions = Vec::new();
        loop {
            actions.extend(self.sup.handle(Event::Wake { received: None }, Instant::now()));
            for action in actions.drain(..) {
                match action {
                    Action::Log(level, message) => log::log!(level, "{message}"),
                    Action::Kill(nodes) => stubborn = nodes,
                    _ => {}
                }
            }
            if !stubborn.is_empty() || self.alive().next().is_none() {
                break;
            }
            let now = Instant::now();
            let wake = self.sup.next_wake().map(|at| at.saturating_duration_since(now));
            actions = self.wait_events(wake);
        }
        log::debug!("reaped after {:?}", started.elapsed());
        // The whole group, not only the member: a program's own children
        // (a shell's, say) ignored SIGTERM with it, and must not outlive
        // the run. A live member keeps its group's id from being reused.
        let mut groups: Vec<Pid> = self
            .alive()
            .filter(|(i, _, _)| stubborn.iter().any(|(k, _)| k == i))
            .map(|(_, _, group)| group)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        for group in groups {
            let _ = killpg(group, Signal::SIGKILL);
        }
        for &(_, pid) in &stubborn {
            // Our own child, not yet reaped: the pid cannot have been reused.
            // (It may have left the group.)
            let _ = kill(pid, Signal::SIGKILL);
        }
        for (i, pid) in stubborn {
            loop {
                match waitpid(pid, None) {
                    Err(Errno::EINTR) => continue,
                    Ok(status) => drop(self.sup.handle(Event::Ended { member: i, status }, Instant::now())),
                    Err(_) => {}
                }
                break;
            }
        }
        if let Ok(removal) = removal {
            let _ = removal.join();
        }
        // What members that bind their own socket left: all are reaped, so
        // nothing lives there any more.
        for i in 0..self.members.len() {
            if self.plan.members[i].socket == Socket::Own {
                if let Err(e) = clear_own(&self.plan.dir, &self.members[i].name) {
                    log::warn!("{e}");
                }
            }
        }
        log::info!(
            "tore down {} in {:.3}s",
            nodes(targets),
            started.elapsed().as_secs_f64()
        );
    }
}

/// Where nodes report: a few notify sockets, each shared by a few nodes.
///
/// A datagram socket's queue holds `net.unix.max_dgram_qlen` messages
/// (often 10), and a node whose manager's queue is full waits for room.
/// With one socket for a thousand nodes, a teardown had them all waiting at
/// once, and a launcher that had just had its share of the CPU could not
/// get back on it to read them until they gave up. Sharing a socket between
/// at most half a queue's worth of nodes, each node's READY=1 and last
/// counts always find room: nobody waits on the launcher, which reads the
/// sockets that have something (one epoll set) when it gets to it.
struct Notices {
    sockets: Vec<Listener>,
    /// Nodes per socket: node i reports to socket i / per.
    per: usize,
    epoll: Epoll,
}

impl Notices {
    /// Binds `@NAME/K` for enough K for `n` nodes.
    fn bind(name: &str, n: usize) -> piper_core::Result<Notices> {
        let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(10);
        let per = (qlen / 2).max(1);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| piper_core::Error::io("create", "an epoll set", e))?;
        let sockets = (0..n.div_ceil(per).max(1))
            .map(|k| {
                let socket = Listener::bind_abstract(&format!("{name}/{k}"))?;
                epoll
                    .add(&socket, EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
                    .map_err(|e| piper_core::Error::io("watch", socket.address(), e))?;
                Ok(socket)
            })
            .collect::<piper_core::Result<_>>()?;
        Ok(Notices { sockets, per, epoll })
    }

    /// `$NOTIFY_SOCKET` for node `i` (of the `n` it was bound for).
    fn address(&self, i: usize) -> &str {
        self.sockets[i / self.per].address()
    }

    /// Every queued message, with its sender's pid.
    fn take(&self) -> Vec<(i32, String)> {
        let mut taken = Vec::new();
        let mut ready = [EpollEvent::empty(); 64];
        while let Ok(k) = self.epoll.wait(&mut ready, EpollTimeout::ZERO) {
            for event in &ready[..k] {
                let socket = &self.sockets[event.data() as usize];
                while let Ok(Some(message)) = socket.try_recv() {
                    taken.push(message);
                }
            }
            if k < ready.len() {
                break;
            }
        }
        taken
    }
}

impl AsFd for Notices {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

/// How often a member whose readiness is its bound socket is looked at.
const BOUND_EVERY: Duration = Duration::from_millis(20);

/// Makes `name` free for a member that binds its own socket: a live
/// socket there is a name in use (exit 3, as for a held one); what a dead
/// program left is removed (in a sticky directory, only our own).
fn clear_own(dir: &piper_core::SocketDir, name: &Name) -> piper_core::Result<()> {
    dir.check_free(name)?;
    dir.reclaim(name).map(drop)
}

/// What member `i`'s readiness waits for, for the error when it is late:
/// nothing to add for a ring of piper-nodes from `--nodes`.
fn waiting_for(plan: &Plan, i: usize) -> String {
    let m = &plan.members[i];
    let Some(file) = &plan.file else {
        return String::new();
    };
    let what = match m.ready {
        Ready::Notify => "READY=1 on $NOTIFY_SOCKET".to_string(),
        Ready::Exec => "its exec".to_string(),
        Ready::Bound => format!("{} to be bound", plan.dir.display_address(&m.name)),
    };
    format!(
        " ({}: ready = \"{}\" waited for {what})",
        file.display(),
        m.ready.as_str()
    )
}

/// How often the progress line moves while nodes start.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One node's line in the JSON ring summary.
fn member_json(member: &Member, state: State, restarts: u32) -> String {
    let (pid, exit, signal) = match state {
        State::Ended(WaitStatus::Exited(pid, code))
        | State::GivenUp(WaitStatus::Exited(pid, code))
        | State::Stopped(Some(WaitStatus::Exited(pid, code))) => (Some(pid.as_raw()), Some(code), None),
        State::Ended(WaitStatus::Signaled(pid, sig, _))
        | State::GivenUp(WaitStatus::Signaled(pid, sig, _))
        | State::Stopped(Some(WaitStatus::Signaled(pid, sig, _))) => (Some(pid.as_raw()), None, Some(sig.as_str())),
        // Never started, or waiting for a restart. (After the teardown no
        // node is running.)
        _ => (None, None, None),
    };
    // A program that never reported counts has none: null, not zero.
    let counts = Some(member.all_counts()).filter(|_| member.counted);
    piper_cli::json::Object::new()
        .str("name", member.name.as_str())
        .opt_num("pid", pid)
        .opt_num("exit", exit)
        .opt_str("signal", signal)
        .num("restarts", restarts)
        .opt_num("received", counts.map(|c| c.received))
        .opt_num("sent", counts.map(|c| c.sent))
        .opt_num("dropped", counts.map(|c| c.dropped))
        .finish()
}

/// The CPUs process `pid` may run on, as a list (`0`, `0-1`, `0,2`).
fn cpu_list(pid: Pid) -> Option<String> {
    let set = nix::sched::sched_getaffinity(pid).ok()?;
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    let mut ranges: Vec<String> = Vec::new();
    let mut k = 0;
    while k < cpus.len() {
        let start = cpus[k];
        while k + 1 < cpus.len() && cpus[k + 1] == cpus[k] + 1 {
            k += 1;
        }
        ranges.push(match cpus[k] == start {
            true => start.to_string(),
            false => format!("{start}-{}", cpus[k]),
        });
        k += 1;
    }
    Some(ranges.join(","))
}

/// Asks a node to stop, as the teardown does: SIGTERM, and SIGCONT in
/// case it is stopped. Our own child, not yet reaped: the pid cannot have
/// been reused.
fn terminate(pid: Pid) {
    let _ = kill(pid, Signal::SIGTERM);
    let _ = kill(pid, Signal::SIGCONT);
}

/// Whether stdout is a pipe.
fn stdout_is_pipe() -> bool {
    use nix::sys::stat::{fstat, SFlag};
    fstat(std::io::stdout().as_fd())
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
}

/// Tells the launcher's own service manager, if it has one, about `state`.
fn notify_manager(state: &str) {
    match Notifier::from_env() {
        Ok(Some(notifier)) => notifier.notify(state).unwrap_or_else(|e| log::warn!("{e}")),
        Ok(None) => {}
        Err(e) => log::warn!("{e}"),
    }
}

/// A step of the launch that may fail: its failure ends the run with exit 1.
fn or_fail<T>(step: Result<T, String>) -> ControlFlow<Outcome, T> {
    match step {
        Ok(value) => ControlFlow::Continue(value),
        Err(message) => ControlFlow::Break(Err(fail(message))),
    }
}
