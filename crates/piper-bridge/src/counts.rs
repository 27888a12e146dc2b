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

#[cfg(test)]
mod tests {
    use super::*;

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
