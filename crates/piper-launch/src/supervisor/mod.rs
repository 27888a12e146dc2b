//! The launcher's decisions, without I/O: a [`Supervisor`] takes what
//! happened ([`Event`]) and the time, and says what to do ([`Action`]).
//! The event loop (`ring.rs`) waits on signals, notify sockets and relay
//! pipes, feeds what it saw here, and carries out the actions: it starts
//! processes, sends the chain, reports, and kills. Nothing here reads a
//! clock or makes a system call, so every policy is tested with a clock
//! the test moves.
//!
//! The policies, each in a module named after it: [`restart`] (which dead
//! nodes start again, after what delay, and the burst limit), [`healing`]
//! (the silence rule), [`report`] (what is reported, and when); [`member`]
//! holds a member's state.

pub mod healing;
pub mod member;
pub mod report;
pub mod restart;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use piper_cli::{exit, Failure};
use piper_core::Name;

use healing::{Healing, Reinject};
use member::{Member, State};
use report::Ticker;
use restart::{Restart, Verdict};

/// How a run ends: the launcher's exit code, or a failure to report.
pub type Outcome = Result<u8, Failure>;

/// What the supervisor goes by.
#[derive(Debug)]
pub struct Policy {
    /// The members' names, in ring order.
    pub names: Vec<Name>,
    /// The member whose end ends the run.
    pub foreground: usize,
    /// How long from the run's start every member has to be ready.
    pub ready_timeout: Duration,
    /// Which dead members are started again, and how often: each its own.
    pub restart: Vec<Restart>,
    /// Whether any node's end (or giving one up) ends the run.
    pub fail_fast: bool,
    /// The silence after which a silent ring is started again, and whether
    /// it crosses hosts; `None` when this launcher does not heal its ring
    /// (it did not start it, or nothing restarts and nothing crosses).
    pub healing: Option<(Duration, bool)>,
    /// Whether anything is reported once a second (a manager, a status
    /// line) or looked at (healing).
    pub ticking: bool,
    /// What each member's readiness waits for, said when it is late (empty
    /// for a ring of piper-nodes, whose readiness needs no explaining).
    pub waiting_for: Vec<String>,
    /// Per member, whether its stderr goes nowhere (a background member
    /// without `--log-dir`): its failure then says where to find it.
    pub stderr_lost: Vec<bool>,
}

/// Said after a failure of a member whose stderr goes nowhere, so that
/// its own account of why it failed can be had next time.
pub const STDERR_LOST: &str = "its stderr is not shown: --log-dir DIR keeps every node's";

/// The run's phases, as the decisions differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Starting the nodes and waiting for their readiness: any end or stop
    /// ends the run.
    Launching,
    /// The ring runs: ends are restarted or end the run as the policy says.
    Watching,
    /// The run is ending: ends are recorded; once the nodes are told to
    /// stop, those left after the grace period, or at a second stop
    /// signal, are killed.
    Stopping,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Member `member` was started as `pid`, in process group `group`.
    Started { member: usize, pid: Pid, group: Pid },
    /// Process `pid` of member `member` said `READY=1`.
    Ready { member: usize, pid: Pid },
    /// A process of member `member` was reaped.
    Ended { member: usize, status: WaitStatus },
    /// A stop signal came.
    Stop(Signal),
    /// Time passed; the ring has received `received` messages in all, or
    /// `None` if some member does not report its counts (its progress
    /// cannot be seen, so the silence rule does not judge it).
    Wake { received: Option<u64> },
    /// The chain was sent again, as [`Action::Reinject`] asked.
    Reinjected,
    /// Stdout's reader went away (`| head` has what it wanted).
    OutputGone,
    /// A job-control stop came (Ctrl-Z, or the terminal read or written
    /// from the background).
    Suspend(Signal),
    /// The launcher was continued (`fg`, `bg`, SIGCONT).
    Resume,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start member `0` again.
    Start(usize),
    /// End the run.
    End(Result<u8, String>),
    /// Say this, at this level.
    Log(log::Level, String),
    /// Member `member` is ready as `pid`: where it runs may be looked at.
    Place { member: usize, pid: Pid },
    /// Report to the manager and redraw the status line.
    Report,
    /// Send the chain again.
    Reinject(Reinject),
    /// Kill these members' processes (member, pid): the grace period is
    /// over, or a second stop signal cut it short.
    Kill(Vec<(usize, Pid)>),
    /// Stop the ring and the launcher, as a shell user expects of Ctrl-Z,
    /// and continue the ring when the launcher is continued.
    Suspend,
    /// Continue the ring's stopped nodes (a SIGSTOP may have reached some
    /// alone, or the launcher with them).
    Resume,
    /// Tell member `member`'s process `pid` to stop (SIGTERM, and SIGCONT
    /// should it be stopped): a user asked for it.
    Terminate { member: usize, pid: Pid },
}

/// What a user asks of one member through the control socket. Each is a
/// deliberate act: the restart policy does not restart a node stopped
/// this way, and the burst limit counts neither its end nor its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Stop it and leave it stopped; its socket keeps what is sent to it.
    Stop,
    /// Start it if it is not running (stopped, dead, given up, or waiting
    /// for a restart).
    Start,
    /// Stop it if it runs, and start it again once it has ended.
    Restart,
}

/// The decisions of a run.
#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    phase: Phase,
    members: Vec<Member>,
    healing: Option<Healing>,
    ticker: Ticker,
    /// When the launch must be over.
    deadline: Instant,
    /// When the nodes told to stop are killed, unless they are gone by
    /// then; whether without any grace; and whether they were.
    kill_at: Option<Instant>,
    graceless: bool,
    killed: bool,
}

impl Supervisor {
    /// A supervisor for `policy`'s members, none started, launching from
    /// `now`.
    pub fn new(policy: Policy, now: Instant) -> Supervisor {
        Supervisor {
            members: policy.names.iter().map(|_| Member::new(now)).collect(),
            deadline: now + policy.ready_timeout,
            kill_at: None,
            graceless: false,
            killed: false,
            policy,
            phase: Phase::Launching,
            healing: None,
            ticker: Ticker::new(now),
        }
    }

    /// The ring is ready and its chain started: from `now` on, ends are
    /// restarted as the policy says, and the silence rule watches.
    pub fn watch(&mut self, now: Instant) {
        self.phase = Phase::Watching;
        self.ticker = Ticker::new(now);
        self.healing = self
            .policy
            .healing
            .map(|(silence, crossing)| Healing::new(silence, crossing, now));
    }

    /// The nodes were told to stop at `now`: those left after `grace` are
    /// killed.
    pub fn stop(&mut self, now: Instant, grace: Duration) {
        self.phase = Phase::Stopping;
        self.kill_at = Some(now + grace);
        self.graceless = grace.is_zero();
    }

    /// Member `i`'s state.
    pub fn state(&self, i: usize) -> State {
        self.members[i].state
    }

    /// The live members: index, pid, process group.
    pub fn alive(&self) -> impl Iterator<Item = (usize, Pid, Pid)> + '_ {
        let live = self.members.iter().enumerate();
        live.filter_map(|(i, m)| m.state.live().map(|(pid, group)| (i, pid, group)))
    }

    /// How many members said `READY=1` and live.
    pub fn ready(&self) -> usize {
        let ready = self.members.iter().filter(|m| matches!(m.state, State::Ready { .. }));
        ready.count()
    }

    /// When member `i`'s state last changed.
    pub fn changed(&self, i: usize) -> Instant {
        self.members[i].changed
    }

    /// Dates member `member`'s state, if it changed from `before`.
    fn note_change(&mut self, member: Option<usize>, before: Option<State>, now: Instant) {
        if let (Some(i), Some(before)) = (member, before) {
            if self.members[i].state != before {
                self.members[i].changed = now;
            }
        }
    }

    /// How often member `i` was started again.
    pub fn restarts(&self, i: usize) -> u32 {
        self.members[i].restarts
    }

    /// When the launch must be over (`--ready-timeout` after the start).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How often the chain was sent again.
    pub fn reinjections(&self) -> u32 {
        self.healing.as_ref().map_or(0, |h| h.reinjections)
    }

    /// When to wake up next at the latest, if anything is due: the end of
    /// the launch's patience, a restart, or a tick while the ring runs.
    pub fn next_wake(&self) -> Option<Instant> {
        let due = self.members.iter().filter_map(|m| match m.state {
            State::Waiting { until, .. } => Some(until),
            _ => None,
        });
        let ticking = self.policy.ticking && self.phase == Phase::Watching;
        let launching = self.phase == Phase::Launching;
        let killing = self.kill_at.filter(|_| !self.killed && self.alive().next().is_some());
        due.chain(ticking.then(|| self.ticker.next()))
            .chain(launching.then_some(self.deadline))
            .chain(killing)
            .min()
    }

    /// Takes in `event`, which happened at `now`, and says what to do.
    /// Once it says [`Action::End`], the run is stopping: later events are
    /// only recorded.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let member = match event {
            Event::Started { member, .. } | Event::Ready { member, .. } | Event::Ended { member, .. } => Some(member),
            _ => None,
        };
        let before = member.map(|i| self.members[i].state);
        let actions = self.decide(event, now);
        self.note_change(member, before, now);
        if actions.iter().any(|a| matches!(a, Action::End(_))) {
            self.phase = Phase::Stopping;
        }
        actions
    }

    fn decide(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Started { member, pid, group } => {
                let m = &mut self.members[member];
                m.state = State::Starting { pid, group };
                m.starts.push(now);
                vec![]
            }
            Event::Ready { member, pid } => match self.members[member].state {
                State::Starting { pid: p, group } if p == pid => {
                    self.members[member].state = State::Ready { pid, group };
                    vec![Action::Place { member, pid }]
                }
                _ => vec![],
            },
            Event::Ended { member, status } => self.ended(member, status, now),
            Event::Stop(sig) => match self.phase {
                Phase::Launching | Phase::Watching => vec![Action::End(Ok(stop_code(sig)))],
                Phase::Stopping => self.kill(true),
            },
            Event::Wake { received } => self.wake(received, now),
            Event::Reinjected => {
                if let Some(h) = &mut self.healing {
                    h.reinjected(now);
                }
                vec![]
            }
            // A normal end, as for any command whose output was piped into
            // `head`.
            Event::Suspend(sig) => vec![
                Action::Log(log::Level::Debug, format!("{sig}: stopping the ring and the launcher")),
                Action::Suspend,
            ],
            Event::Resume => vec![Action::Resume],
            Event::OutputGone => match self.phase {
                Phase::Stopping => vec![],
                Phase::Launching | Phase::Watching => vec![
                    Action::Log(log::Level::Debug, "stdout's reader has gone: ending the run".into()),
                    Action::End(Ok(exit::OK)),
                ],
            },
        }
    }

    /// A member's process ended.
    fn ended(&mut self, i: usize, status: WaitStatus, now: Instant) -> Vec<Action> {
        let m = &mut self.members[i];
        // Only its current process's end counts (an earlier one was reaped).
        if m.state.live().map(|(pid, _)| pid) != status.pid() {
            return vec![];
        }
        if let (State::Stopping { then_start, .. }, Phase::Watching) = (m.state, self.phase) {
            // Deliberate: no restart policy, no burst, no end of the run.
            m.state = State::Stopped(Some(status));
            let name = &self.policy.names[i];
            let mut actions = vec![Action::Log(
                log::Level::Info,
                format!("node '{name}' {}, as asked", describe(status)),
            )];
            if then_start {
                m.starts.clear();
                if let Some(h) = &mut self.healing {
                    h.restarted(now);
                }
                actions.push(Action::Start(i));
            }
            return actions;
        }
        m.state = State::Ended(status);
        let name = &self.policy.names[i];
        let foreground = i == self.policy.foreground;
        let lost = match self.policy.stderr_lost.get(i) {
            Some(true) => format!(" ({STDERR_LOST})"),
            _ => String::new(),
        };
        match self.phase {
            Phase::Stopping => vec![],
            Phase::Launching => vec![Action::End(Err(format!(
                "node '{name}' {} before the ring was ready{lost}",
                describe(status)
            )))],
            Phase::Watching if foreground && !self.policy.restart[i].foreground => {
                // Its clean end (--count reached, a reader gone) is the
                // run's normal end; any other is told, or all the log would
                // say is that the ring was torn down.
                let code = status_code(status);
                let told = (code != 0).then(|| {
                    let message = format!("node '{name}' {}{lost}: {FOREGROUND_ENDS}", describe(status));
                    Action::Log(log::Level::Warn, message)
                });
                told.into_iter().chain([Action::End(Ok(code))]).collect()
            }
            Phase::Watching if self.policy.restart[i].wants(status) => {
                match self.policy.restart[i].after_death(&mut m.starts, now) {
                    Verdict::RestartAt(until) => {
                        m.restarts += 1;
                        m.state = State::Waiting { until, after: status };
                        if let Some(h) = &mut self.healing {
                            h.restarted(now);
                        }
                        let message = format!(
                            "node '{name}' {}; restarting it (restart {})",
                            describe(status),
                            m.restarts
                        );
                        vec![Action::Log(log::Level::Warn, message)]
                    }
                    Verdict::GiveUp => {
                        m.state = State::GivenUp(status);
                        let restart = &self.policy.restart[i];
                        let message = format!(
                            "node '{name}' {}, and was restarted {} times in {:.0}s: giving it up{lost}",
                            describe(status),
                            restart.burst,
                            restart.interval.as_secs_f64()
                        );
                        match self.policy.fail_fast {
                            true => vec![Action::End(Err(format!("{message} (--fail-fast)")))],
                            false => vec![Action::Log(log::Level::Error, message)],
                        }
                    }
                }
            }
            Phase::Watching => {
                let ends = match foreground {
                    true => format!(": {FOREGROUND_ENDS}"),
                    false => String::new(),
                };
                let message = format!("node '{name}' {}{lost}{ends}", describe(status));
                let end = if foreground {
                    Some(Action::End(Ok(status_code(status))))
                } else if self.policy.fail_fast {
                    Some(Action::End(Err(format!("{message} (--fail-fast)"))))
                } else {
                    None
                };
                [Action::Log(log::Level::Warn, message)]
                    .into_iter()
                    .chain(end)
                    .collect()
            }
        }
    }

    /// Time passed: restarts that are due, and the tick's reports and look
    /// at the silence.
    fn wake(&mut self, received: Option<u64>, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Launching => return self.late(now).into_iter().collect(),
            Phase::Stopping if self.kill_at.is_some_and(|at| now >= at) => return self.kill(false),
            Phase::Stopping => return vec![],
            Phase::Watching => {}
        }
        let due = self.members.iter().enumerate().filter(|(_, m)| match m.state {
            State::Waiting { until, .. } => until <= now,
            _ => false,
        });
        let mut actions: Vec<Action> = due.map(|(i, _)| Action::Start(i)).collect();
        if self.policy.ticking && self.ticker.due(now) {
            actions.push(Action::Report);
            let healing = self.healing.as_mut().zip(received);
            if let Some(why) = healing.and_then(|(h, received)| h.look(received, now)) {
                actions.push(self.reinject(why, now));
            }
        }
        actions
    }
}

impl Supervisor {
    /// A user asks `act` of member `i` at `now`: what is being done, to
    /// tell them, and the actions that do it; or why it cannot be done.
    pub fn act(&mut self, i: usize, act: Act, now: Instant) -> Result<(String, Vec<Action>), String> {
        let before = Some(self.members[i].state);
        let acted = self.decide_act(i, act, now);
        self.note_change(Some(i), before, now);
        acted
    }

    fn decide_act(&mut self, i: usize, act: Act, now: Instant) -> Result<(String, Vec<Action>), String> {
        if self.phase != Phase::Watching {
            let why = match self.phase {
                Phase::Launching => "the ring is still starting",
                _ => "the ring is stopping",
            };
            return Err(why.into());
        }
        let name = &self.policy.names[i];
        let m = &mut self.members[i];
        let start = |m: &mut Member| {
            // A deliberate start is a first start: the burst limit counts
            // from here, whatever came before.
            m.starts.clear();
            (format!("starting '{name}'"), vec![Action::Start(i)])
        };
        Ok(match (act, m.state) {
            (Act::Stop | Act::Restart, State::Starting { pid, group } | State::Ready { pid, group }) => {
                let then_start = act == Act::Restart;
                m.state = State::Stopping { pid, group, then_start };
                let what = if then_start { "restarting" } else { "stopping" };
                let said = format!("{what} '{name}' (pid {pid})");
                (said, vec![Action::Terminate { member: i, pid }])
            }
            (_, State::Stopping { pid, group, .. }) => {
                let then_start = act != Act::Stop;
                m.state = State::Stopping { pid, group, then_start };
                let then = if then_start { ", then starting it" } else { "" };
                (format!("'{name}' (pid {pid}) is stopping{then}"), vec![])
            }
            (Act::Stop, State::Stopped(_)) => (format!("'{name}' is stopped already"), vec![]),
            (Act::Stop, State::Ended(status) | State::GivenUp(status) | State::Waiting { after: status, .. }) => {
                m.state = State::Stopped(Some(status));
                (format!("'{name}' is not running: left stopped"), vec![])
            }
            (Act::Start, State::Starting { pid, .. } | State::Ready { pid, .. }) => {
                (format!("'{name}' is running already (pid {pid})"), vec![])
            }
            (_, State::Planned) => return Err(format!("'{name}' was never started")),
            (
                Act::Start | Act::Restart,
                State::Stopped(_) | State::Ended(_) | State::GivenUp(_) | State::Waiting { .. },
            ) => {
                if let Some(h) = &mut self.healing {
                    h.restarted(now);
                }
                start(m)
            }
        })
    }

    /// Kills the members still alive, once: at the end of the grace
    /// period, or at a second stop signal (`again`). A node that let the
    /// whole grace period pass is named: it ignored SIGTERM.
    fn kill(&mut self, again: bool) -> Vec<Action> {
        let alive: Vec<(usize, Pid)> = self.alive().map(|(i, pid, _)| (i, pid)).collect();
        // Not before the nodes were told to stop, and only once.
        if self.kill_at.is_none() || self.killed || alive.is_empty() {
            return vec![];
        }
        self.killed = true;
        let mut actions: Vec<Action> = if again || self.graceless {
            let why = if again { "a second stop signal" } else { "--grace 0" };
            let message = format!("{why}: sending SIGKILL to {}", report::nodes(alive.len()));
            vec![Action::Log(log::Level::Info, message)]
        } else {
            let name = |i: usize| &self.policy.names[i];
            let ignored = alive.iter().map(|&(i, _)| {
                let message = format!("node '{}' ignored SIGTERM; sending SIGKILL", name(i));
                Action::Log(log::Level::Warn, message)
            });
            ignored.collect()
        };
        actions.push(Action::Kill(alive));
        actions
    }

    /// The end of a launch that ran out of patience at `now`: which
    /// members are not ready, the first by name.
    fn late(&self, now: Instant) -> Option<Action> {
        if now < self.deadline {
            return None;
        }
        let mut late = (0..self.members.len()).filter(|&i| !matches!(self.members[i].state, State::Ready { .. }));
        let first = late.next()?;
        let more = match late.count() {
            0 => String::new(),
            k => format!(" and {k} more"),
        };
        Some(Action::End(Err(format!(
            "node '{}'{more} not ready after --ready-timeout {:.1}s{}",
            self.policy.names[first],
            self.policy.ready_timeout.as_secs_f64(),
            self.policy.waiting_for.get(first).map_or("", String::as_str),
        ))))
    }

    /// The silence rule says to send the chain again: unless a member was
    /// given up, whose queue is where the chain would end; starting it
    /// again would only feed a node that is not coming back. Said once per
    /// silence, as a re-injection would be.
    fn reinject(&mut self, why: Reinject, now: Instant) -> Action {
        // A node a user stopped keeps the chain in its queue until it is
        // started again: a second message would be added to it.
        let held = self.members.iter().position(|m| {
            matches!(
                m.state,
                State::GivenUp(_) | State::Stopped(_) | State::Stopping { then_start: false, .. }
            )
        });
        let (Some(i), Some(healing)) = (held, &mut self.healing) else {
            return Action::Reinject(why);
        };
        healing.declined(now);
        let (Reinject::AfterRestart { silent } | Reinject::Lost { silent }) = why;
        let was = match self.members[i].state {
            State::GivenUp(_) => "was given up",
            _ => "is stopped",
        };
        Action::Log(
            log::Level::Warn,
            format!(
                "the ring has been silent for {:.1}s, and node '{}' {was}: not starting the chain again",
                silent.as_secs_f64(),
                self.policy.names[i]
            ),
        )
    }
}

/// The launcher's exit code when a signal stops it, as for a node: SIGINT
/// is an interruption (130); SIGTERM and SIGHUP are a normal stop (0), so
/// that `systemctl stop` ends in success.
pub fn stop_code(sig: Signal) -> u8 {
    match sig {
        Signal::SIGINT => exit::INTERRUPTED,
        _ => exit::OK,
    }
}

/// What the log says when the foreground's end ends the run.
pub const FOREGROUND_ENDS: &str = "it is the foreground, so the run ends";

/// The foreground's exit code, or 128 + the signal that killed it.
pub fn status_code(status: WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, code) => code as u8,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as u8,
        _ => exit::FAILURE,
    }
}

/// How a process ended, for a message about it.
pub fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(pid, code) => format!("(pid {pid}) exited with status {code}"),
        WaitStatus::Signaled(pid, sig, _) => format!("(pid {pid}) was killed by {}", sig.as_str()),
        other => format!("changed state: {other:?}"),
    }
}

/// A failure of the run: exit 1 with `message`.
pub fn fail(message: String) -> Failure {
    Failure::new(exit::FAILURE, message)
}

#[cfg(test)]
mod tests;
