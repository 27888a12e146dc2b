//! piper-core: named, credential-checked datagram endpoints between local
//! processes, over Unix domain datagram sockets.
//!
//! A node named NAME owns the datagram socket `DIR/piper-NAME` (exactly the
//! path of the seed's Python `piper` class when `DIR` is `/tmp`), or the
//! abstract address `@DIR/piper-NAME`. Binding claims the name, so two
//! processes never own one; every datagram received carries its sender's
//! kernel-vouched credentials; dropping a node removes its socket file.
//!
//! ```
//! use piper_core::{Name, Node, RecvBuf, SocketDir};
//!
//! let tmp = std::env::temp_dir().join(format!("piper-doc-lib-{}", std::process::id()));
//! let dir = SocketDir::open(&tmp)?;
//! let ping = Node::bind(&dir, Name::new("ping")?)?;
//! let pong = Node::bind(&dir, Name::new("pong")?)?;
//!
//! // The seed's chain: ping's name goes to pong, pong answers with its own.
//! ping.send_to(pong.name(), ping.name().as_bytes())?;
//! let mut buf = RecvBuf::new();
//! let msg = pong.recv(&mut buf)?.expect("a datagram");
//! assert_eq!(msg.creds.map(|c| c.uid), Some(nix::unistd::getuid().as_raw()));
//! let to = Name::from_bytes(msg.payload)?;
//! pong.send_to(&to, pong.name().as_bytes())?;
//! assert_eq!(ping.recv(&mut buf)?.expect("the answer").payload, b"pong");
//! # drop((ping, pong)); std::fs::remove_dir(&tmp).unwrap();
//! # Ok::<(), piper_core::Error>(())
//! ```
//!
//! A whole node (a receive loop that stops cleanly on SIGINT, SIGTERM and
//! SIGHUP) is [`serve::serve`] with a [`Handler`](serve::Handler) and
//! [`Signals::terminating`]; the crate's `examples/` hold the seed's
//! ping-pong and an echo node built that way.
//!
//! The modules, in the order data flows through them:
//! - [`name`]: the naming rules, which also guard payloads;
//! - [`dir`]: the socket directory, the address rule, and inspecting a
//!   directory (owners, stale sockets);
//! - [`node`]: claiming a name, binding, sending and receiving;
//! - [`trust`]: which senders' datagrams a node takes;
//! - [`signals`]: the self-pipe that lets a blocked loop see signals;
//! - [`serve`]: a receive loop generic over its handler;
//! - [`notify`] and [`activation`]: the service manager's two protocols,
//!   and [`mod@env`]: the names of the variables they and piper share;
//!   [`counts`]: the counts a node reports through the first;
//! - [`control`]: where a launcher's control socket is, claimed and
//!   reclaimed as names are.
//!
//! Linux only: abstract sockets and `SO_PASSCRED` are used.
#![deny(missing_docs)]

pub mod activation;
mod claim;
pub mod control;
pub mod counts;
pub mod dir;
pub mod env;
pub mod error;
pub mod name;
pub mod node;
pub mod notify;
pub mod serve;
pub mod signals;
pub mod trust;

pub use claim::{Listing, Liveness};
pub use counts::Counts;
pub use dir::{Namespace, SocketDir};
pub use error::{Error, Result};
pub use name::{escape, Name};
pub use node::{send_unbound, send_unbound_nowait, Credentials, Datagram, Node, Peer, RecvBuf, MAX_DATAGRAM};
pub use signals::{Signals, Stop, Trigger};
