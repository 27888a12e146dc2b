//! The silence rule: a ring whose one message died with a node is started
//! again, once per silence.
//!
//! The ring's one message dies with a node that had received it and not yet
//! answered. When the ring has received nothing for the silence, and a node
//! was restarted about when it went quiet, the launcher sends the first
//! node's name to the second again, as at the start: once, until the ring
//! moves again, so that a second message is never added to one still alive.
//! A ring that leaves the host (`--ring-next`) can lose its message on the
//! way (a broker restart): silence alone is enough there, but a longer one,
//! since the way round through other hosts is slower and less even.

use std::time::{Duration, Instant};

use super::report::STATUS_EVERY;

/// How much longer a ring that crosses hosts must be silent.
pub const CROSSING_PATIENCE: Duration = Duration::from_secs(3);

/// How long a ring may receive nothing before it is silent: a message in a
/// dead node's queue is answered by its successor well within it.
pub fn silence(restart_delay: Duration, interval: Duration) -> Duration {
    restart_delay + 2 * interval + Duration::from_secs(2)
}

/// Whether a launcher heals its ring, and how: the silence, and whether
/// the ring crosses hosts. Only the launcher that starts the chain sends
/// it again, and only if something can lose it: a restart, or the way
/// round through other hosts.
pub fn rule(
    starts_chain: bool,
    restarting: bool,
    crossing: bool,
    restart_delay: Duration,
    interval: Duration,
) -> Option<(Duration, bool)> {
    let heals = starts_chain && (restarting || crossing);
    heals.then(|| (silence(restart_delay, interval), crossing))
}

/// Why the chain is to be started again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reinject {
    /// Silent since a node was restarted.
    AfterRestart {
        /// For how long.
        silent: Duration,
    },
    /// A ring across hosts fell silent: its message was lost on the way.
    Lost {
        /// For how long.
        silent: Duration,
    },
}

/// What the silence rule remembers.
#[derive(Debug)]
pub struct Healing {
    silence: Duration,
    crossing: bool,
    /// The total received when the ring last made progress, and when.
    received: u64,
    progress: Instant,
    /// When a node was last restarted, and when the chain was last started again.
    restarted: Option<Instant>,
    reinjected: Option<Instant>,
    /// How often the chain was started again.
    pub reinjections: u32,
}

impl Healing {
    /// The rule for a ring silent after `silence`, crossing hosts or not,
    /// watched from `now`.
    pub fn new(silence: Duration, crossing: bool, now: Instant) -> Healing {
        Healing {
            silence,
            crossing,
            received: 0,
            progress: now,
            restarted: None,
            reinjected: None,
            reinjections: 0,
        }
    }

    /// A node was restarted at `now`.
    pub fn restarted(&mut self, now: Instant) {
        self.restarted = Some(now);
    }

    /// The chain was started again at `now`.
    pub fn reinjected(&mut self, now: Instant) {
        self.reinjected = Some(now);
        self.reinjections += 1;
    }

    /// The chain was not started again at `now`, though the rule said so:
    /// not again for this silence.
    pub fn declined(&mut self, now: Instant) {
        self.reinjected = Some(now);
    }

    /// Looks at the ring's total received at `now` (once a tick): whether
    /// to start the chain again, and why. Counts reach the launcher up to a
    /// second late, so a restart just after the last progress seen still
    /// counts.
    pub fn look(&mut self, received: u64, now: Instant) -> Option<Reinject> {
        if received > self.received {
            (self.received, self.progress) = (received, now);
            return None;
        }
        let quiet_since = self.progress;
        let lag = 2 * STATUS_EVERY;
        let restarted = self.restarted.is_some_and(|r| r + lag >= quiet_since);
        let already = self.reinjected.is_some_and(|t| t >= quiet_since);
        let enough = match restarted {
            true => self.silence,
            false => self.silence + CROSSING_PATIENCE,
        };
        let silent = now.saturating_duration_since(quiet_since);
        if !(restarted || self.crossing) || already || silent < enough {
            return None;
        }
        Some(match restarted {
            true => Reinject::AfterRestart { silent },
            false => Reinject::Lost { silent },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILENCE: Duration = Duration::from_secs(2);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn the_silence_grows_with_the_restart_delay_and_twice_the_interval() {
        assert_eq!(silence(secs(0.1), Duration::ZERO), secs(2.1));
        assert_eq!(silence(secs(0.1), secs(0.3)), secs(2.7));
    }

    #[test]
    fn only_the_launcher_that_starts_the_chain_heals_and_only_if_it_can_be_lost() {
        let (delay, interval) = (secs(0.1), secs(0.3));
        let rule = |start, restarting, crossing| rule(start, restarting, crossing, delay, interval);
        assert_eq!(rule(true, true, false), Some((secs(2.7), false)));
        assert_eq!(rule(true, false, true), Some((secs(2.7), true)));
        assert_eq!(rule(true, false, false), None, "nothing loses the message");
        assert_eq!(rule(false, true, true), None, "--no-start: another launcher's chain");
    }

    #[test]
    fn a_silence_shorter_than_the_rule_is_waited_out() {
        // --restart-delay 3 s: the ring is silent while the node is down,
        // for less than the rule's 3 + 2 × 0.3 + 2 s, then moves again.
        let t0 = Instant::now();
        let mut h = Healing::new(silence(secs(3.0), secs(0.3)), false, t0);
        assert_eq!(h.look(5, t0 + secs(1.0)), None);
        h.restarted(t0 + secs(1.2));
        for s in [2.0, 3.0, 4.0, 5.0] {
            assert_eq!(h.look(5, t0 + secs(s)), None, "at {s} s");
        }
        assert_eq!(h.look(6, t0 + secs(6.0)), None, "it moved");
        assert_eq!(h.look(7, t0 + secs(7.0)), None);
        assert_eq!(h.reinjections, 0);
    }

    #[test]
    fn a_ring_silent_since_a_restart_is_started_again_once_per_silence() {
        let t0 = Instant::now();
        let mut h = Healing::new(SILENCE, false, t0);
        assert_eq!(h.look(5, t0 + secs(1.0)), None, "progress");
        // A node restarted just after the last progress seen; silence since 1 s.
        h.restarted(t0 + secs(1.5));
        assert_eq!(h.look(5, t0 + secs(2.0)), None);
        assert_eq!(h.look(5, t0 + secs(2.9)), None, "silent 1.9 s only");
        let due = h.look(5, t0 + secs(3.0));
        assert_eq!(due, Some(Reinject::AfterRestart { silent: secs(2.0) }));
        h.reinjected(t0 + secs(3.0));
        // Still silent: never a second message while the first may live.
        assert_eq!(h.look(5, t0 + secs(4.0)), None);
        assert_eq!(h.look(5, t0 + secs(60.0)), None);
        assert_eq!(h.reinjections, 1);
        // It moves, a node is restarted and it falls silent again: once more.
        assert_eq!(h.look(6, t0 + secs(61.0)), None);
        h.restarted(t0 + secs(61.5));
        assert!(h.look(6, t0 + secs(63.0)).is_some());
    }

    #[test]
    fn a_silence_without_a_restart_is_left_alone_on_one_host() {
        let t0 = Instant::now();
        let mut h = Healing::new(SILENCE, false, t0);
        assert_eq!(h.look(5, t0 + secs(1.0)), None);
        assert_eq!(h.look(5, t0 + secs(100.0)), None);
        // A restart long before the ring went quiet is no reason either.
        let mut h = Healing::new(SILENCE, false, t0);
        h.restarted(t0);
        assert_eq!(h.look(5, t0 + secs(10.0)), None);
        assert_eq!(h.look(5, t0 + secs(100.0)), None);
    }

    #[test]
    fn a_ring_across_hosts_is_started_again_after_a_longer_silence() {
        let t0 = Instant::now();
        let mut h = Healing::new(SILENCE, true, t0);
        assert_eq!(h.look(5, t0 + secs(1.0)), None);
        assert_eq!(h.look(5, t0 + secs(5.9)), None, "2 s + 3 s of patience");
        assert_eq!(h.look(5, t0 + secs(6.0)), Some(Reinject::Lost { silent: secs(5.0) }));
        h.reinjected(t0 + secs(6.0));
        assert_eq!(h.look(5, t0 + secs(20.0)), None);
    }
}
