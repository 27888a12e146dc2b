//! What the launcher tells its manager and its status line, and when: at
//! most once a second (a tick), and to the manager only when it changed.

use std::time::{Duration, Instant, SystemTime};

use nix::sys::wait::WaitStatus;
use piper_cli::json::Object;
use piper_cli::metrics::{Exposition, Kind};
use piper_core::{Counts, Name};

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

/// A node's rate over about the last second: between the last two counts
/// it reported (a node reports at most once a second, and only when its
/// counts changed), while the last is recent; an idle node reports
/// nothing, and its rate falls to zero.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    last: Option<(Instant, u64)>,
    before: Option<(Instant, u64)>,
}

impl Rate {
    /// The node had received `received` in all (over its lives) by `now`.
    pub fn record(&mut self, received: u64, now: Instant) {
        self.before = self.last.replace((now, received));
    }

    /// Messages per second at `now`.
    pub fn per_second(&self, now: Instant) -> f64 {
        match (self.before, self.last) {
            (Some((t0, r0)), Some((t1, r1))) if now.saturating_duration_since(t1) <= 2 * STATUS_EVERY => {
                rate(r1, r0, t1.saturating_duration_since(t0))
            }
            _ => 0.0,
        }
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
        State::Stopped(_) => "stopped".into(),
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

/// A member's state in a word or two, as `piper-launch ctl status` and the
/// metrics say it.
pub fn state_word(state: State) -> &'static str {
    match state {
        State::Planned | State::Starting { .. } => "starting",
        State::Ready { .. } => "ready",
        State::Ended(_) => "dead",
        State::Waiting { .. } => "restarting",
        State::GivenUp(_) => "given up",
        State::Stopping { then_start: true, .. } => "restarting",
        State::Stopping { .. } => "stopping",
        State::Stopped(_) => "stopped",
    }
}

/// One member as the control socket and the metrics show it.
#[derive(Clone, Debug)]
pub struct View<'a> {
    pub name: &'a Name,
    pub state: State,
    pub restarts: u32,
    /// Its counts over all its lives; `None` for a program that has never
    /// reported any (unknown, not zero).
    pub counts: Option<Counts>,
    /// Messages per second lately ([`Rate`]).
    pub rate: f64,
    /// The CPUs its process may run on (`0`, `0-3`), while it runs.
    pub cpus: Option<String>,
    /// When its state last changed.
    pub changed: Instant,
}

/// The ring as a whole, beside its members.
#[derive(Clone, Copy, Debug)]
pub struct Ring<'a> {
    /// The socket directory, as shown.
    pub dir: &'a str,
    pub reinjected: u32,
}

/// `piper-launch ctl status`: the ring in a line, then one line per
/// member under a header.
pub fn status_text(ring: Ring<'_>, members: &[View<'_>]) -> String {
    let totals: Counts = members.iter().filter_map(|m| m.counts).sum();
    let alive = members.iter().filter(|m| m.state.live().is_some()).count();
    let rate: f64 = members.iter().filter(|m| m.counts.is_some()).map(|m| m.rate).sum();
    let mut rows = vec![[
        "NAME", "STATE", "PID", "RESTARTS", "RECEIVED", "SENT", "DROPPED", "MSG/S", "CPUS",
    ]
    .map(String::from)];
    for m in members {
        let pid = m.state.live().map_or("-".into(), |(pid, _)| pid.to_string());
        let count = |of: fn(&Counts) -> u64| m.counts.as_ref().map_or("-".into(), |c| of(c).to_string());
        rows.push([
            m.name.to_string(),
            state_word(m.state).into(),
            pid,
            m.restarts.to_string(),
            count(|c| c.received),
            count(|c| c.sent),
            count(|c| c.dropped),
            m.counts.map_or("-".into(), |_| format!("{:.0}", m.rate)),
            m.cpus.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let uncounted = match members.iter().filter(|m| m.counts.is_none()).count() {
        0 => String::new(),
        k => format!(", {k} with no counts"),
    };
    let mut text = format!(
        "ring of {} in {}: {alive} alive, {rate:.0} msg/s, {totals}{uncounted}\n",
        members.len(),
        ring.dir
    );
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| match c {
                // Names and states to the left, numbers to the right.
                0 | 1 | 8 => format!("{cell:<w$}", w = widths[c]),
                _ => format!("{cell:>w$}", w = widths[c]),
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// `piper-launch ctl status --json`: one object, the ring's totals and
/// each member's line.
pub fn status_json(ring: Ring<'_>, members: &[View<'_>]) -> String {
    let totals: Counts = members.iter().filter_map(|m| m.counts).sum();
    let alive = members.iter().filter(|m| m.state.live().is_some()).count();
    let each: Vec<String> = members
        .iter()
        .map(|m| {
            Object::new()
                .str("name", m.name.as_str())
                .str("state", state_word(m.state))
                .opt_num("pid", m.state.live().map(|(pid, _)| pid.as_raw()))
                .num("restarts", m.restarts)
                .opt_num("received", m.counts.map(|c| c.received))
                .opt_num("sent", m.counts.map(|c| c.sent))
                .opt_num("dropped", m.counts.map(|c| c.dropped))
                .float("rate", m.counts.map_or(f64::NAN, |_| m.rate))
                .opt_str("cpus", m.cpus.as_deref())
                .finish()
        })
        .collect();
    Object::new()
        .str("dir", ring.dir)
        .num("nodes", members.len() as u64)
        .num("alive", alive as u64)
        .num("received", totals.received)
        .num("sent", totals.sent)
        .num("dropped", totals.dropped)
        .num("restarts", members.iter().map(|m| u64::from(m.restarts)).sum::<u64>())
        .num("reinjected", ring.reinjected)
        .float(
            "rate",
            members.iter().filter(|m| m.counts.is_some()).map(|m| m.rate).sum(),
        )
        .raw("members", &format!("[{}]", each.join(",")))
        .finish()
}

/// The launcher's metrics, in Prometheus's text format: the ring's
/// totals, and each member's counts (over all its lives, so a counter
/// never goes down across a restart), restarts, state, and when the state
/// last changed (dated by `wall`, the wall clock at `now`).
pub fn metrics(ring: Ring<'_>, members: &[View<'_>], now: Instant, wall: SystemTime) -> String {
    let mut text = Exposition::new();
    piper_cli::metrics::build_info(&mut text, "piper-launch", env!("CARGO_PKG_VERSION"));
    let totals: Counts = members.iter().filter_map(|m| m.counts).sum();
    let alive = members.iter().filter(|m| m.state.live().is_some()).count();
    text.single("piper_ring_nodes", Kind::Gauge, "Nodes in the ring.", members.len());
    text.single(
        "piper_ring_nodes_alive",
        Kind::Gauge,
        "Nodes whose process runs.",
        alive,
    );
    let ring_counts = [
        (
            "piper_ring_received_total",
            "Messages the ring's nodes received.",
            totals.received,
        ),
        ("piper_ring_sent_total", "Messages the ring's nodes sent.", totals.sent),
        (
            "piper_ring_dropped_total",
            "Datagrams the ring's nodes did not answer.",
            totals.dropped,
        ),
    ];
    for (name, help, value) in ring_counts {
        text.single(name, Kind::Counter, help, value);
    }
    let restarts: u64 = members.iter().map(|m| u64::from(m.restarts)).sum();
    text.single(
        "piper_ring_restarts_total",
        Kind::Counter,
        "Nodes started again after they died.",
        restarts,
    );
    text.single(
        "piper_ring_reinjections_total",
        Kind::Counter,
        "Times the chain was started again after a silence.",
        ring.reinjected,
    );
    // A member that reports no counts has no count samples: unknown, not 0.
    type Of = fn(&View<'_>) -> Option<u64>;
    let node_counts: [(&str, Kind, &str, Of); 6] = [
        (
            "piper_node_received_total",
            Kind::Counter,
            "Messages the node received, over all its lives.",
            |m| m.counts.map(|c| c.received),
        ),
        (
            "piper_node_sent_total",
            Kind::Counter,
            "Messages the node sent, over all its lives.",
            |m| m.counts.map(|c| c.sent),
        ),
        (
            "piper_node_dropped_total",
            Kind::Counter,
            "Datagrams the node did not answer, over all its lives.",
            |m| m.counts.map(|c| c.dropped),
        ),
        (
            "piper_node_restarts_total",
            Kind::Counter,
            "Times the node was started again after it died.",
            |m| Some(u64::from(m.restarts)),
        ),
        ("piper_node_up", Kind::Gauge, "Whether the node's process runs.", |m| {
            Some(u64::from(m.state.live().is_some()))
        }),
        (
            "piper_node_ready",
            Kind::Gauge,
            "Whether the node's process said READY=1.",
            |m| Some(u64::from(matches!(m.state, State::Ready { .. }))),
        ),
    ];
    for (name, kind, help, of) in node_counts {
        text.family(name, kind, help);
        for m in members {
            if let Some(value) = of(m) {
                text.sample(name, &[("node", m.name.as_str())], value);
            }
        }
    }
    let name = "piper_node_last_change_timestamp_seconds";
    text.family(
        name,
        Kind::Gauge,
        "When the node's state last changed, in seconds since the epoch.",
    );
    for m in members {
        let at = piper_cli::metrics::unix_seconds(m.changed, now, wall);
        text.sample(name, &[("node", m.name.as_str())], format!("{at:.3}"));
    }
    text.finish()
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
    fn a_node_s_rate_is_between_its_last_two_reports_while_they_are_fresh() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut rate = Rate::default();
        assert_eq!(rate.per_second(t0), 0.0, "nothing reported");
        rate.record(100, at(0));
        assert_eq!(rate.per_second(at(500)), 0.0, "one report is no rate");
        rate.record(600, at(1000));
        assert_eq!(rate.per_second(at(1000)), 500.0);
        assert_eq!(rate.per_second(at(3000)), 500.0, "still fresh");
        assert_eq!(rate.per_second(at(3001)), 0.0, "idle: no report for over 2 s");
        rate.record(700, at(5000));
        assert_eq!(rate.per_second(at(5000)), 25.0, "100 over the 4 s since the last");
    }

    fn view<'a>(name: &'a Name, state: State, received: u64, changed: Instant) -> View<'a> {
        View {
            name,
            state,
            restarts: 1,
            counts: Some(Counts {
                received,
                sent: received,
                dropped: 2,
            }),
            rate: 12.4,
            cpus: state.live().map(|_| "0-1".to_string()),
            changed,
        }
    }

    #[test]
    fn status_is_a_line_for_the_ring_and_a_table_of_its_nodes() {
        use nix::unistd::Pid;
        let (a, bb) = (Name::new("a").unwrap(), Name::new("bb").unwrap());
        let now = Instant::now();
        let ready = State::Ready {
            pid: Pid::from_raw(42),
            group: Pid::from_raw(40),
        };
        let members = [view(&a, ready, 1000, now), view(&bb, State::Stopped(None), 7, now)];
        let ring = Ring {
            dir: "/run/piper",
            reinjected: 0,
        };
        assert_eq!(
            status_text(ring, &members),
            "ring of 2 in /run/piper: 1 alive, 25 msg/s, received 1007, sent 1007, dropped 4\n\
             NAME  STATE    PID  RESTARTS  RECEIVED  SENT  DROPPED  MSG/S  CPUS\n\
             a     ready     42         1      1000  1000        2     12  0-1\n\
             bb    stopped    -         1         7     7        2     12  -\n"
        );
        let json = status_json(ring, &members);
        assert!(
            json.starts_with("{\"dir\":\"/run/piper\",\"nodes\":2,\"alive\":1,\"received\":1007,"),
            "{json}"
        );
        assert!(
            json.contains("{\"name\":\"bb\",\"state\":\"stopped\",\"pid\":null,\"restarts\":1,\"received\":7,"),
            "{json}"
        );
    }

    #[test]
    fn metrics_count_every_node_and_the_ring() {
        let a = Name::new("a").unwrap();
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let members = [view(&a, State::Stopped(None), 9, now - Duration::from_millis(250))];
        let ring = Ring {
            dir: "/d",
            reinjected: 3,
        };
        let text = metrics(ring, &members, now, wall);
        for line in [
            "# TYPE piper_node_received_total counter",
            "piper_node_received_total{node=\"a\"} 9",
            "piper_node_up{node=\"a\"} 0",
            "piper_node_last_change_timestamp_seconds{node=\"a\"} 999999.750",
            "piper_ring_reinjections_total 3",
            "piper_ring_nodes_alive 0",
            "piper_ring_dropped_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_program_that_reports_no_counts_is_shown_as_unknown_not_zero() {
        let (a, c) = (Name::new("a").unwrap(), Name::new("c").unwrap());
        let now = Instant::now();
        let silent = View {
            counts: None,
            ..view(&c, State::Stopped(None), 0, now)
        };
        let members = [view(&a, State::Stopped(None), 9, now), silent];
        let ring = Ring {
            dir: "/d",
            reinjected: 0,
        };
        let text = status_text(ring, &members);
        assert!(
            text.starts_with("ring of 2 in /d: 0 alive, 12 msg/s, received 9, sent 9, dropped 2, 1 with no counts\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\nc     stopped    -         1         -     -        -      -  -\n"),
            "{text}"
        );
        let json = status_json(ring, &members);
        assert!(json.contains("\"name\":\"c\",\"state\":\"stopped\",\"pid\":null,\"restarts\":1,\"received\":null,\"sent\":null,\"dropped\":null,\"rate\":null"), "{json}");
        let metrics = metrics(ring, &members, now, SystemTime::now());
        assert!(
            metrics.contains("\npiper_node_received_total{node=\"a\"} 9\n"),
            "{metrics}"
        );
        assert!(
            !metrics.contains("received_total{node=\"c\"}"),
            "no sample: unknown, not 0"
        );
        assert!(metrics.contains("\npiper_node_up{node=\"c\"} 0\n"));
    }

    #[test]
    fn the_rate_is_per_second_of_the_tick() {
        assert_eq!(rate(300, 100, Duration::from_secs(2)), 100.0);
        assert_eq!(rate(100, 300, Duration::from_secs(1)), 0.0, "a restart's lower count");
        assert_eq!(rate(1, 0, Duration::ZERO), 1000.0);
    }
}
