//! Which dead nodes start again, when, and when one is given up.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use piper_launch::cli::RestartPolicy;

/// The restart policy and its limits.
#[derive(Clone, Copy, Debug)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// How long after a death the node starts again.
    pub delay: Duration,
    /// At most this many restarts of one node within `interval`; then it
    /// is given up (systemd's `StartLimitBurst=`, `StartLimitIntervalSec=`).
    pub burst: u32,
    pub interval: Duration,
    /// Whether the foreground node is restarted too (else its death ends
    /// the run, as always).
    pub foreground: bool,
}

/// What becomes of a node that died and that the policy wants back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start it again at this moment.
    RestartAt(Instant),
    /// It was started too often within the interval: leave it dead.
    GiveUp,
}

impl Restart {
    /// Whether a node that ended with `status` is to be started again.
    pub fn wants(&self, status: WaitStatus) -> bool {
        let clean = match status {
            WaitStatus::Exited(_, code) => code == 0,
            WaitStatus::Signaled(_, sig, _) => {
                matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGPIPE)
            }
            _ => true,
        };
        match self.policy {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => !clean,
            RestartPolicy::Always => true,
        }
    }

    /// A node the policy wants back died at `now`, having been started at
    /// `starts` (which forgets those older than the interval): restart it
    /// after the delay, unless it started more than `burst` times within
    /// the interval, counting its first start.
    pub fn after_death(&self, starts: &mut Vec<Instant>, now: Instant) -> Verdict {
        starts.retain(|&t| now.duration_since(t) < self.interval);
        if starts.len() > self.burst as usize {
            Verdict::GiveUp
        } else {
            Verdict::RestartAt(now + self.delay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    fn restart(policy: RestartPolicy) -> Restart {
        Restart {
            policy,
            delay: Duration::from_millis(100),
            burst: 2,
            interval: Duration::from_secs(10),
            foreground: false,
        }
    }

    #[test]
    fn the_policy_says_which_ends_are_restarted() {
        let pid = Pid::from_raw(7);
        let ends = [
            WaitStatus::Exited(pid, 0),
            WaitStatus::Exited(pid, 1),
            WaitStatus::Signaled(pid, Signal::SIGTERM, false),
            WaitStatus::Signaled(pid, Signal::SIGPIPE, false),
            WaitStatus::Signaled(pid, Signal::SIGKILL, false),
            WaitStatus::Signaled(pid, Signal::SIGSEGV, true),
        ];
        let wants = |policy| ends.map(|e| restart(policy).wants(e));
        assert_eq!(wants(RestartPolicy::No), [false; 6]);
        assert_eq!(wants(RestartPolicy::Always), [true; 6]);
        assert_eq!(wants(RestartPolicy::OnFailure), [false, true, false, false, true, true]);
    }

    #[test]
    fn a_restart_comes_after_the_delay_and_the_burst_limit_gives_up() {
        let r = restart(RestartPolicy::Always);
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut starts = vec![at(0.0)];
        // Burst 2: the first start and two restarts within 10 s are fine.
        assert_eq!(r.after_death(&mut starts, at(1.0)), Verdict::RestartAt(at(1.1)));
        starts.push(at(1.1));
        assert_eq!(r.after_death(&mut starts, at(2.0)), Verdict::RestartAt(at(2.1)));
        starts.push(at(2.1));
        // A third death within the window: three starts, more than two.
        assert_eq!(r.after_death(&mut starts, at(3.0)), Verdict::GiveUp);
        // Once the first start is older than the interval, it no longer counts.
        assert_eq!(r.after_death(&mut starts, at(10.5)), Verdict::RestartAt(at(10.6)));
        assert_eq!(starts, [at(1.1), at(2.1)]);
    }

    #[test]
    fn a_burst_of_zero_gives_up_at_the_first_death() {
        let r = Restart {
            burst: 0,
            ..restart(RestartPolicy::Always)
        };
        let t0 = Instant::now();
        assert_eq!(
            r.after_death(&mut vec![t0], t0 + Duration::from_secs(1)),
            Verdict::GiveUp
        );
    }
}
