//! One member's life as the supervisor knows it: a state that carries its
//! data, and its restarts.

use std::time::Instant;

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Planned,
    /// Started, not ready yet.
    Starting { pid: Pid, group: Pid },
    /// Said `READY=1`.
    Ready { pid: Pid, group: Pid },
    /// Reaped.
    Ended(WaitStatus),
    /// Ended as `after` says, to be started again at `until`.
    Waiting { until: Instant, after: WaitStatus },
    /// Dead too often in too short a time: left dead.
    GivenUp(WaitStatus),
    /// Told to stop by a user (`piper-launch ctl stop` or `restart`), and
    /// not reaped yet; started again once it is if `then_start`.
    Stopping { pid: Pid, group: Pid, then_start: bool },
    /// Stopped by a user, as `after` says (if it ran at all): left
    /// stopped until a user starts it. Its socket keeps what is sent to it.
    Stopped(Option<WaitStatus>),
}

impl State {
    /// The process and its group, while it lives.
    pub fn live(&self) -> Option<(Pid, Pid)> {
        match *self {
            State::Starting { pid, group } | State::Ready { pid, group } | State::Stopping { pid, group, .. } => {
                Some((pid, group))
            }
            State::Planned | State::Ended(_) | State::Waiting { .. } | State::GivenUp(_) | State::Stopped(_) => None,
        }
    }

    /// The current process, or the last one: only its reports count (a
    /// node's last counts may come after it was reaped).
    pub fn pid(&self) -> Option<Pid> {
        match *self {
            State::Starting { pid, .. } | State::Ready { pid, .. } | State::Stopping { pid, .. } => Some(pid),
            State::Ended(status) | State::Waiting { after: status, .. } | State::GivenUp(status) => status.pid(),
            State::Stopped(status) => status.and_then(|s| s.pid()),
            State::Planned => None,
        }
    }
}

/// One member.
#[derive(Debug)]
pub struct Member {
    pub state: State,
    /// When it was started lately, for the burst limit.
    pub starts: Vec<Instant>,
    /// How often it was started again.
    pub restarts: u32,
    /// When its state last changed.
    pub changed: Instant,
}

impl Member {
    /// A member not started yet, planned at `now`.
    pub fn new(now: Instant) -> Member {
        Member {
            state: State::Planned,
            starts: Vec::new(),
            restarts: 0,
            changed: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_outlives_the_process_and_the_group_does_not() {
        let (pid, group) = (Pid::from_raw(10), Pid::from_raw(9));
        let ended = WaitStatus::Exited(pid, 1);
        let now = Instant::now();
        let cases = [
            (State::Planned, None, None),
            (State::Starting { pid, group }, Some(pid), Some((pid, group))),
            (State::Ready { pid, group }, Some(pid), Some((pid, group))),
            (State::Ended(ended), Some(pid), None),
            (
                State::Waiting {
                    until: now,
                    after: ended,
                },
                Some(pid),
                None,
            ),
            (State::GivenUp(ended), Some(pid), None),
            (
                State::Stopping {
                    pid,
                    group,
                    then_start: true,
                },
                Some(pid),
                Some((pid, group)),
            ),
            (State::Stopped(Some(ended)), Some(pid), None),
            (State::Stopped(None), None, None),
        ];
        for (state, pid, live) in cases {
            assert_eq!((state.pid(), state.live()), (pid, live), "{state:?}");
        }
    }
}
