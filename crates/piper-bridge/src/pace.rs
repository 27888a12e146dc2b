//! When the bridge tells things: `STATUS=` for the service manager (on a
//! change, at most once a second), the watchdog (twice per interval), and
//! how long a node that left stays subscribed (the linger). No I/O: each
//! takes the time from its caller.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use piper_core::Name;

/// How often `STATUS=` may be sent.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long a node that left stays subscribed: a message already on its
/// way to it is then counted as dropped here, not lost in the broker.
pub const LINGER: Duration = Duration::from_secs(5);

/// `STATUS=` pacing.
#[derive(Debug, Default)]
pub struct Status {
    last: Option<(Instant, String)>,
}

impl Status {
    /// The status is `text` at `now`: returns it if it is to be sent (it
    /// changed, and the last was sent a second ago or more). A change held
    /// back is sent by a later call, once the second is up.
    pub fn offer(&mut self, now: Instant, text: String) -> Option<String> {
        if let Some((at, last)) = &self.last {
            if *last == text || now < *at + STATUS_EVERY {
                return None;
            }
        }
        self.last = Some((now, text.clone()));
        Some(text)
    }
}

/// Watchdog pacing: twice per interval, so that one late tick is no miss.
#[derive(Debug)]
pub struct Watchdog {
    every: Duration,
    last: Option<Instant>,
}

impl Watchdog {
    /// For a manager that wants a sign of life every `every`.
    pub fn new(every: Duration) -> Watchdog {
        Watchdog { every, last: None }
    }

    /// Whether `WATCHDOG=1` is due at `now` (and if so, it is counted sent).
    pub fn due(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|t| now < t + self.every / 2) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Nodes that left, still subscribed until their linger is up.
#[derive(Debug, Default)]
pub struct Linger {
    leaving: BTreeMap<Name, Instant>,
}

impl Linger {
    /// `name` left at `now`.
    pub fn left(&mut self, name: Name, now: Instant) {
        self.leaving.insert(name, now);
    }

    /// `name` is back (or a new connection subscribes afresh).
    pub fn back(&mut self, name: &Name) {
        self.leaving.remove(name);
    }

    /// Forgets them all: a new connection has none of their subscriptions.
    pub fn clear(&mut self) {
        self.leaving.clear();
    }

    /// The names whose linger is up at `now`: to unsubscribe.
    pub fn expired(&mut self, now: Instant) -> Vec<Name> {
        let done: Vec<Name> = (self.leaving.iter())
            .filter(|(_, since)| now >= **since + LINGER)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &done {
            self.leaving.remove(name);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn status_goes_on_a_change_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut s = Status::default();
        assert_eq!(s.offer(t0, "a".into()).as_deref(), Some("a"));
        // No change: never again.
        assert_eq!(s.offer(t0 + ms(5000), "a".into()), None);
        // A change within the second waits for it.
        let mut s = Status::default();
        s.offer(t0, "a".into());
        assert_eq!(s.offer(t0 + ms(300), "b".into()), None);
        assert_eq!(s.offer(t0 + ms(999), "c".into()), None);
        assert_eq!(s.offer(t0 + ms(1000), "c".into()).as_deref(), Some("c"));
        assert_eq!(s.offer(t0 + ms(1100), "c".into()), None);
    }

    #[test]
    fn the_watchdog_goes_twice_per_interval() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(ms(400));
        let sent: Vec<u64> = (0..=20).map(|k| k * 50).filter(|&t| w.due(t0 + ms(t))).collect();
        assert_eq!(sent, [0, 200, 400, 600, 800, 1000]);
    }

    #[test]
    fn a_node_that_left_lingers_five_seconds() {
        let t0 = Instant::now();
        let (a, b) = (Name::new("a").unwrap(), Name::new("b").unwrap());
        let mut l = Linger::default();
        l.left(a.clone(), t0);
        l.left(b.clone(), t0 + ms(1000));
        assert!(l.expired(t0 + ms(4999)).is_empty());
        assert_eq!(l.expired(t0 + LINGER), std::slice::from_ref(&a));
        l.back(&b);
        assert!(l.expired(t0 + ms(60_000)).is_empty());
        l.left(a.clone(), t0);
        l.clear();
        assert!(l.expired(t0 + ms(60_000)).is_empty());
    }
}
