//! What the launcher tells its manager and its status line, and when: at
//! most once a second (a tick), and to the manager only when it changed.

use std::time::{Duration, Instant};

use nix::sys::wait::WaitStatus;
use piper_core::Counts;

use super::member::State;

/// How often, at most, the launcher reports the ring to its manager and
/// redraws its status line.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The once-a-second beat of reports and of the silence rule.
#[derive(Clone, Copy, Debug)]
pub struct Ticker {
    next: Instant,
}

impl Ticker {
    /// A ticker whose first tick is due at `now`.
    pub fn new(now: Instant) -> Ticker {
        Ticker { next: now }
    }

    /// When the next tick is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Whether a tick is due at `now`; if so, the next one is a full
    /// period later (a late tick does not bring the next one closer).
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + STATUS_EVERY;
        true
    }
}

/// The `STATUS=` the launcher's own manager is sent: `systemctl status
/// piper-launch` shows it.
pub fn manager_status(nodes: usize, alive: usize, totals: Counts) -> String {
    format!("STATUS=ring of {nodes}: {alive} alive, {totals}")
}

/// What was last sent to the manager, so that only a change is sent.
#[derive(Debug, Default)]
pub struct Reported(Option<String>);

impl Reported {
    /// Whether `status` differs from what was last sent.
    pub fn changed(&self, status: &str) -> bool {
        self.0.as_deref() != Some(status)
    }

    /// `status` was sent.
    pub fn sent(&mut self, status: String) {
        self.0 = Some(status);
    }
}

/// Messages per second between two ticks: `received` now and `before`,
/// `elapsed` apart (at least a millisecond).
pub fn rate(received: u64, before: u64, elapsed: Duration) -> f64 {
    received.saturating_sub(before) as f64 / elapsed.as_secs_f64().max(1e-3)
}

/// The status line's rate: what was received by the last look, and when.
#[derive(Clone, Copy, Debug)]
pub struct Meter {
    received: u64,
    at: Instant,
}

impl Meter {
    /// A meter that starts counting at `now`, from nothing.
    pub fn new(now: Instant) -> Meter {
        Meter { received: 0, at: now }
    }

    /// Messages per second since the last look, `received` in all at `now`.
    pub fn look(&mut self, received: u64, now: Instant) -> f64 {
        let last = std::mem::replace(self, Meter { received, at: now });
        rate(received, last.received, now.saturating_duration_since(last.at))
    }
}

/// The status line on a terminal: nodes alive, messages per second over
/// the last tick, and the totals, and how many report no counts (their
/// messages are not in the totals: not zero, unknown).
pub fn status_line(alive: usize, nodes: usize, rate: f64, totals: Counts, uncounted: usize) -> String {
    let Counts { received, dropped, .. } = totals;
    let line = format!("piper-launch: {alive}/{nodes} alive, {rate:.0} msg/s, received {received}, dropped {dropped}");
    match uncounted {
        0 => line,
        k => format!("{line}, {k} with no counts"),
    }
}

/// How a member ended, for the ring summary: "exited 0", "killed by
/// SIGKILL", "given up", "not running".
pub fn end(state: State) -> String {
    match state {
        State::Ended(WaitStatus::Exited(_, code)) => format!("exited {code}"),
        State::Ended(WaitStatus::Signaled(_, sig, _)) => format!("killed by {}", sig.as_str()),
        State::GivenUp(_) => "given up".into(),
        State::Planned | State::Waiting { .. } => "not running".into(),
        _ => "unknown".into(),
    }
}

/// The ring summary's line: the counts added up, then how many ended each
/// way (in the order first seen), then restarts and re-injections if any,
/// then the members that reported no counts, by name.
pub fn summary_line(
    states: impl IntoIterator<Item = State>,
    totals: Counts,
    restarts: u64,
    reinjected: u32,
    uncounted: &[&str],
) -> String {
    let mut tally: Vec<(String, usize)> = Vec::new();
    let mut nodes = 0;
    for state in states {
        nodes += 1;
        let end = end(state);
        match tally.iter_mut().find(|(e, _)| *e == end) {
            Some((_, n)) => *n += 1,
            None => tally.push((end, 1)),
        }
    }
    let ends: Vec<String> = tally.into_iter().map(|(end, n)| format!("{n} {end}")).collect();
    let again = match (restarts, reinjected) {
        (0, 0) => String::new(),
        (r, k) => format!("; {r} restarts, {k} re-injected"),
    };
    // Counts nobody reported are unknown, not zero.
    let (totals, unknown) = match uncounted {
        [] => (totals.to_string(), String::new()),
        names if names.len() == nodes => ("no counts".to_string(), String::new()),
        names => (totals.to_string(), format!("; no counts from {}", names.join(", "))),
    };
    format!(
        "piper-launch: ring of {nodes}: {totals}; {}{again}{unknown}",
        ends.join(", ")
    )
}

/// "1 node", "2 nodes".
pub fn nodes(n: usize) -> String {
    match n {
        1 => "1 node".into(),
        n => format!("{n} nodes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_each_way_of_ending_in_the_order_seen() {
        use nix::sys::signal::Signal;
        use nix::unistd::Pid;
        let p = Pid::from_raw(5);
        let totals = Counts {
            received: 7,
            sent: 6,
            dropped: 1,
        };
        let states = [
            State::Ended(WaitStatus::Exited(p, 0)),
            State::Ended(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            State::Ended(WaitStatus::Exited(p, 0)),
            State::GivenUp(WaitStatus::Exited(p, 1)),
            State::Planned,
        ];
        assert_eq!(
            summary_line(states, totals, 0, 0, &[]),
            "piper-launch: ring of 5: received 7, sent 6, dropped 1; \
             2 exited 0, 1 killed by SIGKILL, 1 given up, 1 not running"
        );
        assert_eq!(
            summary_line([State::Ended(WaitStatus::Exited(p, 0))], totals, 3, 1, &[]),
            "piper-launch: ring of 1: received 7, sent 6, dropped 1; 1 exited 0; 3 restarts, 1 re-injected"
        );
        // A program that never reports counts is named, not counted as zero.
        let ended = [State::Ended(WaitStatus::Exited(p, 0)); 3];
        assert_eq!(
            summary_line(ended, totals, 0, 0, &["c", "seed"]),
            "piper-launch: ring of 3: received 7, sent 6, dropped 1; 3 exited 0; no counts from c, seed"
        );
        let ended = [State::Ended(WaitStatus::Exited(p, 0)); 2];
        assert_eq!(
            summary_line(ended, Counts::default(), 0, 0, &["ping", "pong"]),
            "piper-launch: ring of 2: no counts; 2 exited 0"
        );
    }

    #[test]
    fn one_node_is_one_node() {
        assert_eq!(nodes(1), "1 node");
        assert_eq!(nodes(0), "0 nodes");
        assert_eq!(nodes(1000), "1000 nodes");
    }

    #[test]
    fn ticks_come_at_most_once_a_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut ticker = Ticker::new(t0);
        assert!(ticker.due(at(0)), "the first at once");
        assert!(!ticker.due(at(999)));
        assert_eq!(ticker.next(), at(1000));
        assert!(ticker.due(at(1000)));
        // A late tick: the next is a second after it, not sooner.
        assert!(ticker.due(at(2700)));
        assert!(!ticker.due(at(3000)));
        assert!(ticker.due(at(3700)));
    }

    #[test]
    fn the_manager_hears_only_of_a_change() {
        let counts = Counts {
            received: 5,
            sent: 4,
            dropped: 1,
        };
        let status = manager_status(3, 2, counts);
        assert_eq!(status, "STATUS=ring of 3: 2 alive, received 5, sent 4, dropped 1");
        let mut reported = Reported::default();
        assert!(reported.changed(&status));
        reported.sent(status.clone());
        assert!(!reported.changed(&status));
        assert!(reported.changed(&manager_status(3, 3, counts)));
    }

    #[test]
    fn the_status_line_shows_the_rate_since_the_last_look() {
        let t0 = Instant::now();
        let mut meter = Meter::new(t0);
        assert_eq!(meter.look(50, t0 + Duration::from_secs(1)), 50.0);
        assert_eq!(meter.look(50, t0 + Duration::from_secs(2)), 0.0, "idle");
        assert_eq!(meter.look(250, t0 + Duration::from_secs(4)), 100.0);
        let counts = Counts {
            received: 250,
            sent: 250,
            dropped: 3,
        };
        assert_eq!(
            status_line(29, 30, 99.6, counts, 0),
            "piper-launch: 29/30 alive, 100 msg/s, received 250, dropped 3"
        );
        assert_eq!(
            status_line(4, 4, 5.0, counts, 1),
            "piper-launch: 4/4 alive, 5 msg/s, received 250, dropped 3, 1 with no counts"
        );
    }

    #[test]
    fn the_rate_is_per_second_of_the_tick() {
        assert_eq!(rate(300, 100, Duration::from_secs(2)), 100.0);
        assert_eq!(rate(100, 300, Duration::from_secs(1)), 0.0, "a restart's lower count");
        assert_eq!(rate(1, 0, Duration::ZERO), 1000.0);
    }
}
