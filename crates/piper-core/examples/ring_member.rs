//! A ring member of one's own, as piper-launch runs it from a topology
//! file: `ring_member` (no arguments).
//!
//! Everything comes from the environment the launcher sets: its socket
//! (fd 3, `LISTEN_FDS`/`LISTEN_PID`: adopted; without them it binds its
//! own), `PIPER_DIR`, `PIPER_NAME`, and `PIPER_NEXT`, the node it answers
//! whatever the payload says. It prints the seed's line for every datagram
//! from a trusted sender, says `READY=1` once it can receive, and reports
//! its counts (`STATUS=`, piper's format) at most once a second and as it
//! stops, so that the launcher adds them to the ring's. `PIPER_INTERVAL`
//! (milliseconds) paces its replies for humans watching.
use std::time::{Duration, Instant};

use piper_core::activation::listen_fds;
use piper_core::notify::Notifier;
use piper_core::serve::{serve, Event, Flow};
use piper_core::trust::Policy;
use piper_core::{env, escape, Counts, Name, Node, Signals, SocketDir};

fn main() -> Result<(), piper_core::Error> {
    let var = |key: &str| std::env::var(key).unwrap_or_default();
    let name = Name::new(&var(env::NAME))?;
    let next = Name::new(&var(env::NEXT))?;
    let interval = Duration::from_millis(var("PIPER_INTERVAL").parse().unwrap_or(0));
    // Taken before anything else opens a descriptor.
    let passed = listen_fds()?;
    let dir = SocketDir::open(SocketDir::default_path())?;
    let signals = Signals::terminating()?; // before binding: Ctrl-C is never lost
    let node = match passed.into_iter().next() {
        Some(held) => Node::adopt(held.fd, &dir, name)?,
        None => Node::bind(&dir, name)?,
    };
    let manager = Notifier::from_env()?;
    let report = |counts: &Counts| {
        if let Some(m) = &manager {
            m.notify(&counts.status()).unwrap_or_else(|e| eprintln!("{e}"));
        }
    };
    let mut counts = Counts::default();
    report(&counts);
    if let Some(m) = &manager {
        m.notify("READY=1")?;
    }
    let trust = Policy::new([]); // our own user and root
    let mut reported = Instant::now();
    serve(&node, &signals, &mut |node: &Node, event: Event<'_>| {
        if let Event::Datagram(msg) = event {
            if !msg.trusted(&trust) {
                eprintln!("refused a datagram from an untrusted sender: {:?}", msg.creds);
                return Ok(Flow::Continue);
            }
            counts.received += 1;
            println!("{} received: '{}'", node.name(), escape(msg.payload));
            // A pause that a stop cuts short: the teardown waits for no one.
            let _ = signals.sleep(interval);
            match node.send_to(&next, node.name().as_bytes()) {
                Ok(()) => counts.sent += 1,
                Err(e) => {
                    counts.dropped += 1;
                    eprintln!("{e}");
                }
            }
        }
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            report(&counts);
        }
        Ok(Flow::Continue)
    })?;
    report(&counts);
    if let Some(m) = &manager {
        let _ = m.notify("STOPPING=1");
    }
    Ok(()) // an adopted socket is the launcher's to remove; a bound one goes now
}
