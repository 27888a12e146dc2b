//! The seed's ping-pong as an embedded node: `ping_pong NAME [PEER]`.
//!
//! Binds NAME in the default socket directory (`$PIPER_DIR`, else
//! `$XDG_RUNTIME_DIR/piper`, else `/dev/shm/piper-$UID`, else
//! `/tmp/piper-$UID`), sends its name to PEER if given, then prints every
//! datagram from a trusted sender (our own user or root) and answers the
//! node it names.
//! Ctrl-C ends it and removes its socket. Try it beside `piper-node`:
//! `cargo run --example ping_pong -- pong` and `piper-node ping --send pong`.
use piper_core::serve::{serve, Event, Flow};
use piper_core::trust::Policy;
use piper_core::{escape, Name, Node, Signals, SocketDir};

fn main() -> Result<(), piper_core::Error> {
    let mut args = std::env::args().skip(1);
    let name = Name::new(&args.next().unwrap_or_else(|| "pong".into()))?;
    let dir = SocketDir::open(SocketDir::default_path())?;
    let signals = Signals::terminating()?; // before binding: Ctrl-C is never lost
    let node = Node::bind(&dir, name)?;
    if let Some(peer) = args.next() {
        node.send_to(&Name::new(&peer)?, node.name().as_bytes())?;
    }
    let trust = Policy::new([]); // our own user and root
    serve(&node, &signals, &mut |node: &Node, event: Event<'_>| {
        if let Event::Datagram(msg) = event {
            if !msg.trusted(&trust) {
                eprintln!("refused a datagram from an untrusted sender: {:?}", msg.creds);
                return Ok(Flow::Continue);
            }
            println!("{} received: '{}'", node.name(), escape(msg.payload));
            // The payload names who to answer; anything else is not answered.
            match Name::from_bytes(msg.payload) {
                Ok(peer) => node
                    .send_to(&peer, node.name().as_bytes())
                    .unwrap_or_else(|e| eprintln!("{e}")),
                Err(e) => eprintln!("not answering: {e}"),
            }
        }
        Ok(Flow::Continue)
    })?;
    Ok(()) // dropping the node removes its socket file
}
