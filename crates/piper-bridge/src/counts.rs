//! The bridge's counts. Each side adds up exactly: every datagram a
//! stand-in received is published, dropped, refused, or still queued or
//! kept for the broker, and every message from the broker is delivered or dropped.

/// The counts, each outcome with its total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Datagrams local nodes sent to stand-ins.
    pub from_nodes: u64,
    /// Of those, published to the broker.
    pub published: u64,
    /// Of those, dropped: no broker connection, a backed-up connection, or
    /// too large.
    pub dropped_out: u64,
    /// Of those, refused because of the sender's uid.
    pub refused: u64,
    /// Messages the broker brought for local nodes.
    pub from_broker: u64,
    /// Of those, delivered.
    pub delivered: u64,
    /// Of those, dropped: malformed, not a local node, or the node gone or
    /// not reading.
    pub dropped_in: u64,
    /// Times the broker connection was made again after it was lost.
    pub reconnects: u64,
    /// Messages from the broker that were not for a bridge at all (too
    /// large, bad presence): dropped and not part of the sides' sums.
    pub ignored: u64,
}

/// What became of a datagram a stand-in took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// In the client's queue, or kept while the broker is away:
    /// published or dropped later.
    Queued,
    Dropped,
    Refused,
}

impl Counts {
    /// A datagram from a local node, and what became of it now.
    pub fn took(&mut self, out: Out) {
        self.from_nodes += 1;
        match out {
            Out::Queued => {}
            Out::Dropped => self.dropped_out += 1,
            Out::Refused => self.refused += 1,
        }
    }

    /// A queued datagram was written to the broker.
    pub fn published(&mut self) {
        self.published += 1;
    }

    /// `n` queued datagrams were lost with the connection.
    pub fn lost(&mut self, n: u64) {
        self.dropped_out += n;
    }

    /// A message from the broker for a local node: delivered or not.
    pub fn brought(&mut self, delivered: bool) {
        self.from_broker += 1;
        if delivered {
            self.delivered += 1;
        } else {
            self.dropped_in += 1;
        }
    }

    /// Whether both sides add up, with `queued` datagrams still in the
    /// client's queue.
    pub fn balanced(&self, queued: u64) -> bool {
        self.from_nodes == self.published + self.dropped_out + self.refused + queued
            && self.from_broker == self.delivered + self.dropped_in
    }
}

/// What the metrics say of the link besides the counts.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    /// The ring and this bridge's id.
    pub ring: &'a str,
    pub id: &'a str,
    /// Whether the broker connection is up, and since when it is up or
    /// down (on the wall clock, in seconds since the epoch), if it ever was.
    pub up: bool,
    pub since: Option<f64>,
    /// Local nodes offered, and remote names stood in for.
    pub local: usize,
    pub remote: usize,
}

/// The bridge's metrics, in Prometheus's text format: every count as a
/// counter, and the link's state.
pub fn metrics(c: &Counts, seen: Seen<'_>) -> String {
    use piper_cli::metrics::{Exposition, Kind};
    let mut text = Exposition::new();
    piper_cli::metrics::build_info(&mut text, "piper-bridge", env!("CARGO_PKG_VERSION"));
    text.family("piper_bridge_info", Kind::Gauge, "The bridge's ring and id; always 1.");
    text.sample("piper_bridge_info", &[("ring", seen.ring), ("id", seen.id)], 1);
    let counters = [
        (
            "piper_bridge_from_nodes_total",
            "Datagrams local nodes sent to stand-ins.",
            c.from_nodes,
        ),
        (
            "piper_bridge_published_total",
            "Of those, published to the broker.",
            c.published,
        ),
        (
            "piper_bridge_refused_total",
            "Of those, refused for the sender's uid.",
            c.refused,
        ),
        (
            "piper_bridge_from_broker_total",
            "Messages the broker brought for local nodes.",
            c.from_broker,
        ),
        (
            "piper_bridge_delivered_total",
            "Of those, delivered to a local node.",
            c.delivered,
        ),
        (
            "piper_bridge_reconnects_total",
            "Times the broker connection was made again.",
            c.reconnects,
        ),
        (
            "piper_bridge_ignored_total",
            "Messages from the broker that were no bridge's.",
            c.ignored,
        ),
    ];
    for (name, help, value) in counters {
        text.single(name, Kind::Counter, help, value);
    }
    let name = "piper_bridge_dropped_total";
    text.family(
        name,
        Kind::Counter,
        "Datagrams dropped: to the broker (out) or to local nodes (in).",
    );
    text.sample(name, &[("direction", "out")], c.dropped_out);
    text.sample(name, &[("direction", "in")], c.dropped_in);
    text.single(
        "piper_bridge_link_up",
        Kind::Gauge,
        "Whether the broker connection is up.",
        u8::from(seen.up),
    );
    if let Some(since) = seen.since {
        text.single(
            "piper_bridge_link_change_timestamp_seconds",
            Kind::Gauge,
            "When the broker connection last came up or went down, in seconds since the epoch.",
            format!("{since:.3}"),
        );
    }
    text.single(
        "piper_bridge_local_nodes",
        Kind::Gauge,
        "Local nodes offered to the other bridges.",
        seen.local,
    );
    text.single(
        "piper_bridge_remote_nodes",
        Kind::Gauge,
        "Remote names stood in for.",
        seen.remote,
    );
    text.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_carry_every_count_and_the_link() {
        let mut c = Counts::default();
        c.took(Out::Queued);
        c.took(Out::Dropped);
        c.brought(false);
        let seen = Seen {
            ring: "lab",
            id: "a",
            up: false,
            since: Some(12.5),
            local: 3,
            remote: 2,
        };
        let text = metrics(&c, seen);
        for line in [
            "piper_bridge_info{ring=\"lab\",id=\"a\"} 1",
            "piper_bridge_from_nodes_total 2",
            "piper_bridge_dropped_total{direction=\"out\"} 1",
            "piper_bridge_dropped_total{direction=\"in\"} 1",
            "piper_bridge_link_up 0",
            "piper_bridge_link_change_timestamp_seconds 12.500",
            "piper_bridge_remote_nodes 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let never = metrics(&c, Seen { since: None, ..seen });
        assert!(!never.contains("timestamp"), "a link never made has no date");
    }

    #[test]
    fn every_outcome_keeps_both_sides_balanced() {
        let mut c = Counts::default();
        c.took(Out::Queued);
        c.took(Out::Queued);
        c.took(Out::Queued);
        c.took(Out::Dropped);
        c.took(Out::Refused);
        assert!(c.balanced(3));
        c.published();
        assert!(c.balanced(2));
        c.lost(2);
        assert!(c.balanced(0));
        c.brought(true);
        c.brought(false);
        assert!(c.balanced(0));
        assert_eq!(
            (
                c.from_nodes,
                c.published,
                c.dropped_out,
                c.refused,
                c.from_broker,
                c.delivered,
                c.dropped_in
            ),
            (5, 1, 3, 1, 2, 1, 1)
        );
        assert!(!c.balanced(1));
    }
}
