//! Whether another bridge has this bridge's id. No I/O.
//!
//! Two bridges with one id connect as one MQTT client: each connection
//! takes the other's place at the broker (mosquitto closes the old one
//! without a reason code). Each run writes its epoch to `ids/ID` when it
//! connects, so a run that reads another epoch there and then loses its
//! connection soon after has met its twin.

use std::time::{Duration, Instant};

use crate::wire::Epoch;

/// How soon after another run's epoch a loss counts as that run taking
/// our place.
pub const SOON: Duration = Duration::from_secs(10);

/// What this run knows of another with its id.
#[derive(Debug, Default)]
pub struct Twin {
    seen: Option<Instant>,
}

impl Twin {
    /// `ids/ID` says `theirs` at `now`; this run's epoch is `mine`.
    pub fn epoch(&mut self, theirs: Epoch, mine: Epoch, now: Instant) {
        if theirs != mine {
            self.seen = Some(now);
        }
    }

    /// The connection failed at `now` (`was_up`: it had been made):
    /// whether that was another run with our id taking our place.
    pub fn lost(&mut self, now: Instant, was_up: bool) -> bool {
        let seen = self.seen.take();
        was_up && seen.is_some_and(|at| now < at + SOON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_epoch_then_a_loss_soon_after_is_a_twin() {
        let t0 = Instant::now();
        let mut t = Twin::default();
        // Our own epoch, echoed: nobody else.
        t.epoch(7, 7, t0);
        assert!(!t.lost(t0, true));
        t.epoch(8, 7, t0);
        assert!(t.lost(t0 + Duration::from_secs(9), true));
        // Said once: the next loss is an ordinary one.
        assert!(!t.lost(t0 + Duration::from_secs(9), true));
        // Long after: an earlier run's epoch, not a twin.
        t.epoch(8, 7, t0);
        assert!(!t.lost(t0 + SOON, true));
        // A connection that was never made is not taken by anyone.
        t.epoch(8, 7, t0);
        assert!(!t.lost(t0, false));
    }
}
