//! The broker connection's state and the reconnection policy. No I/O: the
//! bridge tells it what happened, with the time, and it says what to do
//! and what to report.

use std::time::{Duration, Instant};

/// Reconnection backoff: the first wait, and the longest.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How long a connection must have lasted for the next loss to start the
/// backoff over: one that dies at once (a broker that drops us after the
/// handshake) keeps the backoff growing.
pub const STABLE: Duration = Duration::from_secs(10);

/// How often the bridge makes the broker answer it while connected.
pub const BEAT: Duration = Duration::from_millis(500);
/// How long the broker may leave us without a word while connected: past
/// it, the connection is given up (a broker that stopped, or a network
/// that went away without closing anything).
pub const DEAD: Duration = Duration::from_secs(2);

/// The connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet since the start.
    Never,
    /// Connected since `since`; `queued` datagrams are in the client's
    /// queue, not yet written to the broker; the broker was last heard at
    /// `heard`, and last asked for an answer at `beat`.
    Up {
        since: Instant,
        queued: u64,
        heard: Instant,
        beat: Instant,
    },
    /// Lost at `since`; `dropped` datagrams were dropped since.
    Down { since: Instant, dropped: u64 },
}

/// What a new connection reports.
#[derive(Debug, PartialEq)]
pub enum Connected {
    /// The first.
    First,
    /// Again, after `outage`, with the datagrams dropped meanwhile.
    Again { outage: Duration, dropped: u64 },
}

/// What a failure reports.
#[derive(Debug, PartialEq)]
pub enum Failed {
    /// The connection was up and is lost; `dropped` queued datagrams went
    /// with it.
    Lost { dropped: u64, wait: Duration },
    /// An attempt to connect failed.
    Attempt { wait: Duration },
}

/// The link and its backoff.
#[derive(Debug)]
pub struct State {
    link: Link,
    backoff: Duration,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    /// Never connected.
    pub fn new() -> State {
        State {
            link: Link::Never,
            backoff: BACKOFF.0,
        }
    }

    /// The link now.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Whether connected.
    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// The broker accepted the connection at `now`.
    pub fn connected(&mut self, now: Instant) -> Connected {
        let report = match self.link {
            Link::Down { since, dropped } => Connected::Again {
                outage: now.saturating_duration_since(since),
                dropped,
            },
            Link::Never | Link::Up { .. } => Connected::First,
        };
        self.link = Link::Up {
            since: now,
            queued: 0,
            heard: now,
            beat: now,
        };
        report
    }

    /// The broker said something at `now`.
    pub fn heard(&mut self, now: Instant) {
        if let Link::Up { heard, .. } = &mut self.link {
            *heard = now;
        }
    }

    /// The bridge itself did not run from `from` to `now` (stopped, or
    /// starved): the broker's silence meanwhile is not the broker's fault.
    pub fn paused(&mut self, now: Instant) {
        self.heard(now);
    }

    /// When the connection is to be given up if the broker says nothing.
    pub fn deadline(&self) -> Option<Instant> {
        match self.link {
            Link::Up { heard, .. } => Some(heard + DEAD),
            _ => None,
        }
    }

    /// Whether to ask the broker for an answer at `now` (and if so, it is
    /// counted asked).
    pub fn beat_due(&mut self, now: Instant) -> bool {
        match &mut self.link {
            Link::Up { beat, .. } if now >= *beat + BEAT => {
                *beat = now;
                true
            }
            _ => false,
        }
    }

    /// The connection failed at `now` (or could not be made): what was
    /// queued for it is dropped, and how long to wait before the next try.
    pub fn failed(&mut self, now: Instant) -> Failed {
        let wait = self.backoff;
        match self.link {
            Link::Up { since, queued, .. } => {
                // A connection that lasted starts the backoff over; one that
                // died at once is a failed attempt as far as waiting goes.
                let wait = if now.saturating_duration_since(since) >= STABLE {
                    BACKOFF.0
                } else {
                    wait
                };
                self.backoff = (wait * 2).min(BACKOFF.1);
                self.link = Link::Down {
                    since: now,
                    dropped: queued,
                };
                Failed::Lost { dropped: queued, wait }
            }
            Link::Never | Link::Down { .. } => {
                self.backoff = (wait * 2).min(BACKOFF.1);
                Failed::Attempt { wait }
            }
        }
    }

    /// A datagram was put in the client's queue.
    pub fn queued(&mut self) {
        if let Link::Up { queued, .. } = &mut self.link {
            *queued += 1;
        }
    }

    /// A QoS 0 message left the client's queue for the broker: returns
    /// whether it was a queued datagram (the rest is the goodbye).
    pub fn sent(&mut self) -> bool {
        match &mut self.link {
            Link::Up { queued, .. } if *queued > 0 => {
                *queued -= 1;
                true
            }
            _ => false,
        }
    }

    /// A datagram was dropped because the link is down.
    pub fn dropped(&mut self) {
        if let Link::Down { dropped, .. } = &mut self.link {
            *dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_broker_is_given_up_after_two_seconds_and_asked_twice_a_second() {
        let t0 = Instant::now();
        let mut s = State::new();
        assert_eq!(s.deadline(), None);
        assert!(!s.beat_due(t0));
        s.connected(t0);
        assert_eq!(s.deadline(), Some(t0 + DEAD));
        let beats: Vec<u64> = (0..=12).map(|k| k * 100).filter(|&t| s.beat_due(t0 + ms(t))).collect();
        assert_eq!(beats, [500, 1000]);
        s.heard(t0 + ms(1500));
        assert_eq!(s.deadline(), Some(t0 + ms(3500)));
        // The bridge was stopped for a minute: the clock starts again.
        s.paused(t0 + ms(60_000));
        assert_eq!(s.deadline(), Some(t0 + ms(62_000)));
        s.failed(t0 + ms(62_000));
        assert_eq!(s.deadline(), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn attempts_wait_from_a_tenth_of_a_second_doubling_to_five() {
        let t0 = Instant::now();
        let mut s = State::new();
        let waits: Vec<Duration> = (0..8)
            .map(|k| match s.failed(t0 + ms(k)) {
                Failed::Attempt { wait } => wait,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(ms));
        assert_eq!(s.link(), Link::Never);
    }

    #[test]
    fn a_connection_that_dies_at_once_does_not_start_the_backoff_over() {
        let t0 = Instant::now();
        let mut s = State::new();
        assert_eq!(s.connected(t0), Connected::First);
        let mut waits = Vec::new();
        let mut t = t0;
        for _ in 0..6 {
            t += ms(50);
            match s.failed(t) {
                Failed::Lost { wait, .. } => waits.push(wait),
                other => panic!("{other:?}"),
            }
            t += waits.last().copied().unwrap();
            s.connected(t);
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200].map(ms));
        // One that lasted starts it over.
        t += STABLE;
        assert_eq!(
            s.failed(t),
            Failed::Lost {
                dropped: 0,
                wait: ms(100)
            }
        );
    }

    #[test]
    fn a_loss_drops_what_was_queued_and_the_reconnection_reports_the_outage() {
        let t0 = Instant::now();
        let mut s = State::new();
        s.connected(t0);
        for _ in 0..5 {
            s.queued();
        }
        assert!(s.sent());
        assert!(s.sent());
        assert!(matches!(s.link(), Link::Up { since, queued: 3, .. } if since == t0));
        assert_eq!(
            s.failed(t0 + ms(20_000)),
            Failed::Lost {
                dropped: 3,
                wait: ms(100)
            }
        );
        s.dropped();
        s.dropped();
        let back = s.connected(t0 + ms(21_500));
        assert_eq!(
            back,
            Connected::Again {
                outage: ms(1500),
                dropped: 5
            }
        );
        assert!(s.is_up());
    }
}
