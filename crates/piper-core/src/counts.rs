//! A node's counts, and the one place their `STATUS=` line is written and
//! read.
//!
//! A node under a service manager reports `STATUS=received N, sent N,
//! dropped N` (systemd shows it in `systemctl status`); piper-launch reads
//! the same line from each of its nodes and adds the counts up. Both sides,
//! and the tests, go through [`Counts`], so the format exists once.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::str::FromStr;

/// What a node did with datagrams: accepted and printed, sent, and not
/// answered.
///
/// ```
/// use piper_core::Counts;
///
/// let counts = Counts { received: 5, sent: 4, dropped: 1 };
/// assert_eq!(counts.status(), "STATUS=received 5, sent 4, dropped 1");
/// assert_eq!(Counts::from_status(&counts.status()), Some(counts));
/// assert_eq!(counts + counts, Counts { received: 10, sent: 8, dropped: 2 });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// Messages accepted and printed.
    pub received: u64,
    /// Messages sent.
    pub sent: u64,
    /// Datagrams not answered.
    pub dropped: u64,
}

impl Counts {
    /// The sd_notify line that reports these counts.
    pub fn status(&self) -> String {
        format!("STATUS={self}")
    }

    /// The counts of a `STATUS=` line written by [`Counts::status`]; `None`
    /// for any other line.
    pub fn from_status(line: &str) -> Option<Counts> {
        line.strip_prefix("STATUS=")?.parse().ok()
    }
}

/// `received N, sent N, dropped N`: the text of the `STATUS=` line, and of
/// the summaries that quote it.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Counts {
            received,
            sent,
            dropped,
        } = self;
        write!(f, "received {received}, sent {sent}, dropped {dropped}")
    }
}

/// Why a text is not counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotCounts(String);

impl fmt::Display for NotCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not 'received N, sent N, dropped N'", self.0)
    }
}

impl std::error::Error for NotCounts {}

impl FromStr for Counts {
    type Err = NotCounts;

    /// Exactly what [`Display`](fmt::Display) writes: the three counts, in
    /// their order, and nothing else.
    fn from_str(text: &str) -> Result<Counts, NotCounts> {
        let mut counts = [0; 3];
        let mut fields = text.split(", ");
        for (count, word) in counts.iter_mut().zip(["received ", "sent ", "dropped "]) {
            let field = fields.next().and_then(|f| f.strip_prefix(word));
            let parsed = field.filter(|f| f.bytes().all(|b| b.is_ascii_digit()));
            *count = parsed
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| NotCounts(text.into()))?;
        }
        if fields.next().is_some() {
            return Err(NotCounts(text.into()));
        }
        let [received, sent, dropped] = counts;
        Ok(Counts {
            received,
            sent,
            dropped,
        })
    }
}

impl Add for Counts {
    type Output = Counts;

    fn add(self, other: Counts) -> Counts {
        Counts {
            received: self.received + other.received,
            sent: self.sent + other.sent,
            dropped: self.dropped + other.dropped,
        }
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        *self = *self + other;
    }
}

impl std::iter::Sum for Counts {
    fn sum<I: Iterator<Item = Counts>>(iter: I) -> Counts {
        iter.fold(Counts::default(), Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(received: u64, sent: u64, dropped: u64) -> Counts {
        Counts {
            received,
            sent,
            dropped,
        }
    }

    #[test]
    fn the_status_line_is_written_and_read_back_exactly() {
        let c = counts(5, 4, 1);
        assert_eq!(c.to_string(), "received 5, sent 4, dropped 1");
        assert_eq!(c.status(), "STATUS=received 5, sent 4, dropped 1");
        assert_eq!(Counts::from_status(&c.status()), Some(c));
        let max = counts(u64::MAX, 0, u64::MAX);
        assert_eq!(Counts::from_status(&max.status()), Some(max));
    }

    #[test]
    fn anything_else_is_not_counts() {
        for bad in [
            "received 5, sent 4",
            "sent 4, received 5, dropped 1",
            "received x, sent 4, dropped 1",
            "received +5, sent 4, dropped 1",
            "received 5, sent 4, dropped 1, refused 0",
            "received 5,sent 4,dropped 1",
            "",
        ] {
            assert!(bad.parse::<Counts>().is_err(), "{bad:?}");
        }
        assert_eq!(Counts::from_status("received 5, sent 4, dropped 1"), None, "no STATUS=");
        assert_eq!(Counts::from_status("STATUS=ring of 2: 2 alive"), None);
        let e = "x".parse::<Counts>().unwrap_err();
        assert_eq!(e.to_string(), "'x' is not 'received N, sent N, dropped N'");
    }

    #[test]
    fn counts_add_up() {
        let mut total = counts(1, 2, 3);
        total += counts(10, 20, 30);
        assert_eq!(total, counts(11, 22, 33));
        let sum: Counts = [counts(1, 0, 0), counts(0, 1, 0), counts(0, 0, 1)].into_iter().sum();
        assert_eq!(sum, counts(1, 1, 1));
    }
}
