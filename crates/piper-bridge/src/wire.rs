//! What the bridges say to each other through the broker: the topics and
//! the payloads. Pure functions, so that the rules are tested on their own.
//!
//! Under the ring's prefix `piper/RING/`:
//! - `hosts/ID` (retained, QoS 1): bridge ID is up, in the run whose epoch
//!   (16 hex digits, new at each start) is the payload. Empty when the
//!   bridge is gone: its last will, or its goodbye.
//! - `names/ID/NAME` (retained, QoS 1): bridge ID offers node NAME, in the
//!   run whose epoch is the payload. Empty when it no longer does. A name
//!   counts only while its epoch is its bridge's current one, so the will
//!   on `hosts/ID` withdraws every name at once, and each message stays
//!   the same small size however many nodes a bridge offers.
//! - `ids/ID` (retained, QoS 1): the epoch of the run that last connected
//!   as bridge ID. Only ID reads it: a foreign epoch there, followed by the
//!   broker dropping us, is another bridge with our id.
//! - `sync/ID` (QoS 1): what bridge ID sends itself after subscribing; it
//!   comes back after every retained message the subscription brought.
//! - `beat/ID` (QoS 1): what bridge ID sends twice a second to hear from
//!   the broker (its answer); nobody subscribes to it.
//! - `msg/NAME` (QoS 0, at most once, like a datagram): one datagram for
//!   node NAME: the sender's name, a newline, then the payload's bytes as
//!   they were sent. A sender without a name (an unbound socket, as the
//!   seed's nodes use) has an empty name.
//!
//! Every name read from the broker goes through [`Name`]'s rules before it
//! is used as a path or a topic, so a topic can never name a file outside
//! the socket directory.

use piper_core::Name;

/// A bridge's run: new at each start, so that what an earlier run left
/// retained on the broker is told from what this one says.
pub type Epoch = u64;

/// The topics of one ring.
#[derive(Clone, Debug)]
pub struct Topics {
    prefix: String,
}

/// What a topic of the ring is about.
#[derive(Debug, PartialEq, Eq)]
pub enum Topic<'a> {
    /// A datagram for this node, if its name is valid (the raw text if not).
    Msg(Result<Name, &'a str>),
    /// Whether this bridge is up, if its id is valid.
    Host(Result<Name, &'a str>),
    /// Whether this bridge offers this name, if both are valid.
    Offer(Result<(Name, Name), &'a str>),
    /// This bridge's own barrier.
    Sync(Result<Name, &'a str>),
    /// The last run of this bridge id.
    Id(Result<Name, &'a str>),
    /// Not one of ours.
    Other,
}

impl Topics {
    /// The topics under `piper/RING/`.
    pub fn new(ring: &Name) -> Topics {
        Topics {
            prefix: format!("piper/{ring}/"),
        }
    }

    /// The ring's name.
    pub fn ring(&self) -> &str {
        let ring = self.prefix.strip_prefix("piper/").unwrap_or(&self.prefix);
        ring.strip_suffix('/').unwrap_or(ring)
    }

    /// Whether bridge `id` is up.
    pub fn host(&self, id: &Name) -> String {
        format!("{}hosts/{id}", self.prefix)
    }

    /// Whether bridge `id` offers `name`.
    pub fn offer(&self, id: &Name, name: &Name) -> String {
        format!("{}names/{id}/{name}", self.prefix)
    }

    /// The last run of bridge `id`.
    pub fn id(&self, id: &Name) -> String {
        format!("{}ids/{id}", self.prefix)
    }

    /// Bridge `id`'s barrier.
    pub fn sync(&self, id: &Name) -> String {
        format!("{}sync/{id}", self.prefix)
    }

    /// The subscription filters every bridge has: every bridge's state and
    /// offers.
    pub fn presence_filters(&self) -> [String; 2] {
        [format!("{}hosts/+", self.prefix), format!("{}names/+/+", self.prefix)]
    }

    /// What bridge `id` sends to make the broker answer (nobody reads it).
    pub fn beat(&self, id: &Name) -> String {
        format!("{}beat/{id}", self.prefix)
    }

    /// Datagrams for node `name`.
    pub fn msg(&self, name: &Name) -> String {
        format!("{}msg/{name}", self.prefix)
    }

    /// Reads a topic a message arrived on.
    pub fn parse<'a>(&self, topic: &'a str) -> Topic<'a> {
        let Some(rest) = topic.strip_prefix(&self.prefix) else {
            return Topic::Other;
        };
        let name = |s: &'a str| Name::new(s).map_err(|_| s);
        if let Some(dest) = rest.strip_prefix("msg/") {
            Topic::Msg(name(dest))
        } else if let Some(id) = rest.strip_prefix("hosts/") {
            Topic::Host(name(id))
        } else if let Some(pair) = rest.strip_prefix("names/") {
            Topic::Offer(match pair.split_once('/') {
                Some((id, node)) => Name::new(id)
                    .and_then(|id| Ok((id, Name::new(node)?)))
                    .map_err(|_| pair),
                None => Err(pair),
            })
        } else if let Some(id) = rest.strip_prefix("sync/") {
            Topic::Sync(name(id))
        } else if let Some(id) = rest.strip_prefix("ids/") {
            Topic::Id(name(id))
        } else {
            Topic::Other
        }
    }
}

/// An epoch as a payload.
pub fn epoch(epoch: Epoch) -> Vec<u8> {
    format!("{epoch:016x}").into_bytes()
}

/// Reads a `hosts/` or `names/` payload: `Ok(None)` when empty (gone).
pub fn parse_epoch(bytes: &[u8]) -> Result<Option<Epoch>, &'static str> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() != 16 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return Err("not an epoch (16 hex digits)");
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not an epoch (16 hex digits)")?;
    Epoch::from_str_radix(text, 16)
        .map(Some)
        .map_err(|_| "not an epoch (16 hex digits)")
}

/// Writes a datagram from `from` (`None`: an unbound sender) as a `msg/`
/// payload.
pub fn encode(from: Option<&Name>, payload: &[u8]) -> Vec<u8> {
    let from = from.map_or(&b""[..], |n| n.as_bytes());
    let mut out = Vec::with_capacity(from.len() + 1 + payload.len());
    out.extend_from_slice(from);
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// Reads a `msg/` payload: the sender's name (`None` if it had none) and
/// the datagram's bytes.
pub fn decode(bytes: &[u8]) -> Result<(Option<Name>, &[u8]), &'static str> {
    let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
        return Err("no sender line");
    };
    let (from, payload) = (&bytes[..newline], &bytes[newline + 1..]);
    if from.is_empty() {
        return Ok((None, payload));
    }
    match Name::from_bytes(from) {
        Ok(name) => Ok((Some(name), payload)),
        Err(_) => Err("the sender's name is not a valid name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn topics_are_under_the_rings_prefix() {
        assert_eq!(Topics::new(&Name::new("piper").unwrap()).ring(), "piper");
        let t = Topics::new(&name("lab"));
        assert_eq!(t.msg(&name("pong")), "piper/lab/msg/pong");
        assert_eq!(t.host(&name("h1")), "piper/lab/hosts/h1");
        assert_eq!(t.offer(&name("h1"), &name("pong")), "piper/lab/names/h1/pong");
        assert_eq!(t.sync(&name("h1")), "piper/lab/sync/h1");
        assert_eq!(t.presence_filters(), ["piper/lab/hosts/+", "piper/lab/names/+/+"]);
        assert_eq!(t.parse("piper/lab/msg/pong"), Topic::Msg(Ok(name("pong"))));
        assert_eq!(t.parse("piper/lab/hosts/h1"), Topic::Host(Ok(name("h1"))));
        assert_eq!(
            t.parse("piper/lab/names/h1/pong"),
            Topic::Offer(Ok((name("h1"), name("pong"))))
        );
        assert_eq!(t.parse("piper/lab/sync/h1"), Topic::Sync(Ok(name("h1"))));
        assert_eq!(t.id(&name("h1")), "piper/lab/ids/h1");
        assert_eq!(t.parse("piper/lab/ids/h1"), Topic::Id(Ok(name("h1"))));
        assert_eq!(t.parse("piper/other/msg/pong"), Topic::Other);
        assert_eq!(t.parse("piper/lab/else/pong"), Topic::Other);
    }

    #[test]
    fn a_topic_never_yields_a_name_that_leaves_the_directory() {
        let t = Topics::new(&name("lab"));
        for bad in ["..", ".", "../x", "a/b", "", "a\0b", "x y", "/etc/passwd"] {
            let topic = format!("piper/lab/msg/{bad}");
            assert_eq!(t.parse(&topic), Topic::Msg(Err(bad)), "{bad:?}");
        }
        assert_eq!(t.parse("piper/lab/hosts/../x"), Topic::Host(Err("../x")));
        assert_eq!(t.parse("piper/lab/names/h1/.."), Topic::Offer(Err("h1/..")));
        assert_eq!(t.parse("piper/lab/names/../x"), Topic::Offer(Err("../x")));
        assert_eq!(t.parse("piper/lab/names/h1"), Topic::Offer(Err("h1")));
        assert_eq!(t.parse("piper/lab/names/h1/a/b"), Topic::Offer(Err("h1/a/b")));
    }

    #[test]
    fn a_presence_message_is_small_however_many_names_a_bridge_offers() {
        // The longest ring, id and name: one offer's topic and payload.
        let long = name(&"x".repeat(100));
        let t = Topics::new(&long);
        let offer = t.offer(&long, &long).len() + epoch(u64::MAX).len();
        assert!(offer < 350, "{offer}");
        let host = t.host(&long).len() + epoch(u64::MAX).len();
        assert!(host < 250, "{host}");
    }

    #[test]
    fn an_epoch_is_16_hex_digits_and_empty_means_gone() {
        assert_eq!(epoch(0xdead_beef), b"00000000deadbeef");
        assert_eq!(parse_epoch(&epoch(u64::MAX)), Ok(Some(u64::MAX)));
        assert_eq!(parse_epoch(b""), Ok(None));
        for bad in [
            &b"12"[..],
            b"+000000000000000",
            b"00000000deadbeefX",
            b"a\nb\nc\nd\ne\nf\ng\nh\n",
        ] {
            assert!(parse_epoch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_datagram_round_trips_with_or_without_a_sender() {
        let bytes = encode(Some(&name("ping")), b"pong\nwith\nnewlines\0");
        assert_eq!(bytes, b"ping\npong\nwith\nnewlines\0");
        assert_eq!(decode(&bytes), Ok((Some(name("ping")), &b"pong\nwith\nnewlines\0"[..])));
        assert_eq!(decode(&encode(None, b"x")), Ok((None, &b"x"[..])));
        assert_eq!(decode(&encode(None, b"")), Ok((None, &b""[..])));
    }

    #[test]
    fn malformed_datagrams_are_refused() {
        assert!(decode(b"no newline at all").is_err());
        assert!(decode(b"../x\npayload").is_err());
        assert!(decode(b"a b\npayload").is_err());
        assert!(decode(b"").is_err());
    }
}
