//! Whether another bridge has this bridge's id. No I/O.
//!
//! Two bridges with one id connect as one MQTT client: each connection
//! takes the other's place at the broker (mosquitto closes the old one
//! without a reason code). Each run writes its epoch to `ids/ID`
//! (retained) when it connects. Another epoch there, then a connection
//! lost soon after, is what a twin does, but also what a restarted bridge
//! meets when the broker restarts within seconds: the epoch is the last
//! run's, retained. A twin does it again at once, on every connection, and
//! a broker restart does not: two in a row are a twin.

use std::time::{Duration, Instant};

use crate::wire::Epoch;

/// How soon after another run's epoch a loss counts as that run taking
/// our place.
pub const SOON: Duration = Duration::from_secs(10);

/// How many such losses in a row are a twin.
const IN_A_ROW: u32 = 2;

/// What this run knows of another with its id.
#[derive(Debug, Default)]
pub struct Twin {
    seen: Option<Instant>,
    in_a_row: u32,
}

impl Twin {
    /// `ids/ID` says `theirs` at `now`; this run's epoch is `mine`.
    pub fn epoch(&mut self, theirs: Epoch, mine: Epoch, now: Instant) {
        if theirs != mine {
            self.seen = Some(now);
        }
    }

    /// The connection failed at `now` (`was_up`: it had been made):
    /// whether that was another run with our id taking our place. A
    /// connection that was never made says nothing either way.
    pub fn lost(&mut self, now: Instant, was_up: bool) -> bool {
        let seen = self.seen.take();
        if !was_up {
            return false;
        }
        match seen.is_some_and(|at| now < at + SOON) {
            true => self.in_a_row += 1,
            false => self.in_a_row = 0,
        }
        self.in_a_row >= IN_A_ROW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn another_epoch_then_a_loss_soon_after_twice_in_a_row_is_a_twin() {
        let t0 = Instant::now();
        let mut t = Twin::default();
        // Our own epoch, echoed: nobody else.
        t.epoch(7, 7, t0);
        assert!(!t.lost(t0, true));
        t.epoch(8, 7, t0);
        assert!(!t.lost(t0 + 9 * S, true));
        // A connection refused meanwhile changes nothing.
        assert!(!t.lost(t0 + 9 * S, false));
        t.epoch(8, 7, t0 + 10 * S);
        assert!(t.lost(t0 + 11 * S, true));
    }

    #[test]
    fn the_last_runs_epoch_then_a_broker_restart_is_no_twin() {
        let t0 = Instant::now();
        let mut t = Twin::default();
        // Retained from the run before this one, sent as we subscribe;
        // then the broker restarts at once.
        t.epoch(6, 7, t0);
        t.epoch(7, 7, t0);
        assert!(!t.lost(t0 + S, true));
        // It comes back without the old epoch (or with ours), and a later
        // loss starts the count over.
        assert!(!t.lost(t0 + 60 * S, true));
        t.epoch(6, 7, t0 + 61 * S);
        assert!(!t.lost(t0 + 62 * S, true));
    }

    #[test]
    fn an_epoch_long_before_the_loss_is_not_a_twins() {
        let t0 = Instant::now();
        let mut t = Twin::default();
        t.epoch(8, 7, t0);
        assert!(!t.lost(t0 + S, true));
        t.epoch(8, 7, t0);
        assert!(!t.lost(t0 + SOON, true));
        // ...and it started the count over.
        t.epoch(8, 7, t0 + SOON);
        assert!(!t.lost(t0 + SOON + S, true));
    }
}
