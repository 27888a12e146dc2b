//! A node with a handler of its own: `counter NAME [--dir DIR]`.
//!
//! It answers every datagram with the running count of datagrams it has
//! received from that sender's uid (as decimal text), and only senders bound
//! as nodes of the same directory get an answer. It shows the pieces an
//! embedding program uses: a [`Handler`] with state and a timeout of its own,
//! sender credentials, the sender's name, and a clean stop on SIGINT,
//! SIGTERM or SIGHUP, after which it prints its totals on stderr.
use std::collections::HashMap;
use std::time::Duration;

use piper_core::serve::{serve, End, Event, Flow, Handler};
use piper_core::{Name, Node, Result, Signals, SocketDir};

/// Counts per sender uid; says how long it has been idle.
#[derive(Default)]
struct Counter {
    per_uid: HashMap<u32, u64>,
    idle_ticks: u64,
}

impl Handler for Counter {
    fn handle(&mut self, node: &Node, event: Event<'_>) -> Result<Flow> {
        match event {
            Event::Datagram(msg) => {
                let uid = msg.creds.map_or(u32::MAX, |c| c.uid);
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
    let mut counter = Counter::default();
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
