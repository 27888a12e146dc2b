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
}

impl State {
    /// The process and its group, while it lives.
    pub fn live(&self) -> Option<(Pid, Pid)> {
        match *self {
            State::Starting { pid, group } | State::Ready { pid, group } => Some((pid, group)),
            State::Planned | State::Ended(_) | State::Waiting { .. } | State::GivenUp(_) => None,
        }
    }

    /// The current process, or the last one: only its reports count (a
    /// node's last counts may come after it was reaped).
    pub fn pid(&self) -> Option<Pid> {
        match *self {
            State::Starting { pid, .. } | State::Ready { pid, .. } => Some(pid),
            State::Ended(status) | State::Waiting { after: status, .. } | State::GivenUp(status) => status.pid(),
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
}

impl Member {
    /// A member not started yet.
    pub fn new() -> Member {
        Member {
            state: State::Planned,
            starts: Vec::new(),
            restarts: 0,
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
        ];
        for (state, pid, live) in cases {
            assert_eq!((state.pid(), state.live()), (pid, live), "{state:?}");
        }
    }
}
