//! The one datagram a bridge keeps while the broker is away. No I/O.
//!
//! A ring carries one message. When the broker connection is down, the
//! datagram a local node sends to a remote one is that message: dropping
//! it leaves the ring silent until its launcher starts the chain again,
//! and that new message, too, is dropped if the connection is still down
//! then. So the newest such datagram is kept (an older one is dropped: the
//! newer supersedes it) and sent once the connection is back, but only
//! when that cannot put a second message beside one the launcher added:
//! - at once, if it has been kept less than [`FRESH`]: the launcher starts
//!   the chain again only after 5 s of silence, so it has not, and the
//!   ring moves again before it would;
//! - else once it has been kept [`SURE`] and nothing superseded it: by
//!   then a launcher that was going to start the chain again has done so,
//!   and its message would have come through here and superseded this
//!   one, so this one is the ring's only message.
//!
//! Any datagram taken for a remote node while connected supersedes it.

use std::time::{Duration, Instant};

/// Kept for less than this when the connection is back: sent at once.
pub const FRESH: Duration = Duration::from_secs(2);
/// Kept this long and not superseded: sent.
pub const SURE: Duration = Duration::from_secs(9);

/// The kept datagram, if any, and since when.
#[derive(Debug)]
pub struct Hold<T> {
    kept: Option<(T, Instant)>,
}

impl<T> Default for Hold<T> {
    fn default() -> Self {
        Hold { kept: None }
    }
}

impl<T> Hold<T> {
    /// Keeps `item` from `now`; returns the one it supersedes, to drop.
    pub fn keep(&mut self, item: T, now: Instant) -> Option<T> {
        self.kept.replace((item, now)).map(|(old, _)| old)
    }

    /// A newer datagram went out: returns the kept one, to drop.
    pub fn supersede(&mut self) -> Option<T> {
        self.kept.take().map(|(old, _)| old)
    }

    /// Whether one is kept.
    #[cfg(test)]
    pub fn is_some(&self) -> bool {
        self.kept.is_some()
    }

    /// The kept datagram, if it is to be sent at `now` on a connection
    /// that came back at `up_since`.
    pub fn due(&mut self, now: Instant, up_since: Instant) -> Option<T> {
        let (_, since) = self.kept.as_ref()?;
        let fresh = up_since.saturating_duration_since(*since) < FRESH;
        if fresh || now.saturating_duration_since(*since) >= SURE {
            self.kept.take().map(|(item, _)| item)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_datagram_kept_briefly_goes_as_soon_as_the_connection_is_back() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        assert_eq!(h.keep("m", t0), None);
        assert_eq!(h.due(t0 + ms(1900), t0 + ms(1900)), Some("m"));
        assert!(!h.is_some());
    }

    #[test]
    fn a_datagram_kept_longer_waits_until_sure_and_goes_unless_superseded() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        h.keep("m", t0);
        // Back after 3 s: the launcher may be about to start the chain.
        let up = t0 + ms(3000);
        assert_eq!(h.due(up, up), None);
        assert_eq!(h.due(t0 + ms(8999), up), None);
        assert_eq!(h.due(t0 + SURE, up), Some("m"));
        // The launcher's new message came through: the kept one is dropped.
        h.keep("m", t0);
        assert_eq!(h.due(t0 + ms(5000), up), None);
        assert_eq!(h.supersede(), Some("m"));
        assert_eq!(h.due(t0 + ms(60_000), up), None);
    }

    #[test]
    fn the_newest_is_kept_and_the_older_dropped() {
        let t0 = Instant::now();
        let mut h = Hold::default();
        h.keep("old", t0);
        assert_eq!(h.keep("new", t0 + ms(6000)), Some("old"));
        // Back 1 s after the newer one came: it goes at once.
        assert_eq!(h.due(t0 + ms(7000), t0 + ms(7000)), Some("new"));
    }
}
