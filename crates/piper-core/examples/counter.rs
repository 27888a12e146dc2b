//! A node with a handler of its own: `counter NAME [--dir DIR] [--allow-uid UID]...`.
//!
//! It answers every datagram with the running count of datagrams it has
//! received from that sender's uid (as decimal text), and only senders bound
//! as nodes of the same directory get an answer. Only trusted senders are
//! counted: our own user, root, and each `--allow-uid`. It shows the pieces
//! an embedding program uses: a [`Handler`] with state and a timeout of its
//! own, the trust policy and sender credentials, the sender's name, and a
//! clean stop on SIGINT, SIGTERM or SIGHUP, after which it prints its totals
//! on stderr.
use std::collections::HashMap;
use std::time::Duration;

use piper_core::serve::{serve, End, Event, Flow, Handler};
use piper_core::trust::Policy;
use piper_core::{Name, Node, Result, Signals, SocketDir};

/// Counts per trusted sender uid; says how long it has been idle.
struct Counter {
    trust: Policy,
    per_uid: HashMap<u32, u64>,
    idle_ticks: u64,
}

impl Handler for Counter {
    fn handle(&mut self, node: &Node, event: Event<'_>) -> Result<Flow> {
        match event {
            Event::Datagram(msg) => {
                let Some(uid) = msg.creds.filter(|_| msg.trusted(&self.trust)).map(|c| c.uid) else {
                    eprintln!("refused a datagram from an untrusted sender: {:?}", msg.creds);
                    return Ok(Flow::Continue);
                };
                let count = self.per_uid.entry(uid).or_default();
                *count += 1;
                if let Some(from) = msg.from() {
                    node.send_to(&from, count.to_string().as_bytes())?;
                }
            }
            Event::Truncated { len } => eprintln!("ignoring a datagram of {len} bytes"),
            Event::Idle => self.idle_ticks += 1,
        }
        Ok(Flow::Continue)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(250)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = Name::new(args.first().map_or("counter", String::as_str))?;
    let dir = match args.iter().position(|a| a == "--dir") {
        Some(i) => args.get(i + 1).map(Into::into).unwrap_or_default(),
        None => SocketDir::default_path(),
    };
    let dir = SocketDir::open(dir)?;
    let signals = Signals::terminating()?;
    let node = Node::bind(&dir, name)?;
    let allow = args
        .iter()
        .zip(args.iter().skip(1))
        .filter(|(flag, _)| *flag == "--allow-uid");
    let allow: Vec<u32> = allow.filter_map(|(_, uid)| uid.parse().ok()).collect();
    let mut counter = Counter {
        trust: Policy::new(allow),
        per_uid: HashMap::new(),
        idle_ticks: 0,
    };
    let end = serve(&node, &signals, &mut counter)?;
    let total: u64 = counter.per_uid.values().sum();
    eprintln!(
        "counter: {total} datagrams from {} uids, {} idle ticks, ended by {end:?}",
        counter.per_uid.len(),
        counter.idle_ticks
    );
    assert!(matches!(end, End::Stop(_)));
    Ok(())
}
