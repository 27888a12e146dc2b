//! What the bridges say to each other through the broker: the topics and
//! the payloads. Pure functions, so that the rules are tested on their own.
//!
//! Under the ring's prefix `piper/RING/`:
//! - `hosts/ID` (retained, QoS 1): bridge ID's local node names, one per
//!   line. Empty when the bridge is gone: its last will, or its goodbye.
//! - `msg/NAME` (QoS 0, at most once, like a datagram): one datagram for
//!   node NAME: the sender's name, a newline, then the payload's bytes as
//!   they were sent. A sender without a name (an unbound socket, as the
//!   seed's nodes use) has an empty name.
//!
//! Every name read from the broker goes through [`Name`]'s rules before it
//! is used as a path or a topic, so a topic can never name a file outside
//! the socket directory.

use std::collections::BTreeSet;

use piper_core::Name;

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
    /// The presence of this bridge, if its id is valid.
    Hosts(Result<Name, &'a str>),
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

    /// Bridge `id`'s presence.
    pub fn hosts(&self, id: &Name) -> String {
        format!("{}hosts/{id}", self.prefix)
    }

    /// Every bridge's presence (a subscription filter).
    pub fn all_hosts(&self) -> String {
        format!("{}hosts/+", self.prefix)
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
            Topic::Hosts(name(id))
        } else {
            Topic::Other
        }
    }
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

/// A presence payload: the names, one per line.
pub fn presence<'a>(names: impl IntoIterator<Item = &'a Name>) -> Vec<u8> {
    let names: Vec<&str> = names.into_iter().map(Name::as_str).collect();
    names.join("\n").into_bytes()
}

/// Reads a presence payload: the valid names, and how many lines were not.
pub fn parse_presence(bytes: &[u8]) -> (BTreeSet<Name>, usize) {
    let mut names = BTreeSet::new();
    let mut invalid = 0;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match Name::from_bytes(line) {
            Ok(name) => {
                names.insert(name);
            }
            Err(_) => invalid += 1,
        }
    }
    (names, invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn topics_are_under_the_rings_prefix() {
        let t = Topics::new(&name("lab"));
        assert_eq!(t.msg(&name("pong")), "piper/lab/msg/pong");
        assert_eq!(t.hosts(&name("h1")), "piper/lab/hosts/h1");
        assert_eq!(t.all_hosts(), "piper/lab/hosts/+");
        assert_eq!(t.parse("piper/lab/msg/pong"), Topic::Msg(Ok(name("pong"))));
        assert_eq!(t.parse("piper/lab/hosts/h1"), Topic::Hosts(Ok(name("h1"))));
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
        assert_eq!(t.parse("piper/lab/hosts/../x"), Topic::Hosts(Err("../x")));
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

    #[test]
    fn presence_lists_valid_names_and_counts_the_rest() {
        let names = [name("a"), name("b.c")];
        let bytes = presence(&names);
        assert_eq!(bytes, b"a\nb.c");
        assert_eq!(parse_presence(&bytes), (names.into_iter().collect(), 0));
        let (got, invalid) = parse_presence(b"a\n../etc\n\nx/y\nz\n");
        assert_eq!(got, [name("a"), name("z")].into_iter().collect());
        assert_eq!(invalid, 2);
        assert_eq!(parse_presence(b""), (BTreeSet::new(), 0));
    }
}
