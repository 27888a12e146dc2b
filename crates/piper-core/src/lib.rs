//! piper-core: message passing between local processes over Unix domain
//! datagram sockets, the library under `piper-node` and `piper-launch`.
//!
//! A node named NAME owns the datagram socket `DIR/piper-NAME`, exactly the
//! path of the seed's Python `piper` class when `DIR` is `/tmp`.
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
//! let msg = pong.recv(&mut buf)?;
//! let to = Name::from_bytes(msg.payload)?;
//! pong.send_to(&to, pong.name().as_bytes())?;
//! assert_eq!(ping.recv(&mut buf)?.payload, b"pong");
//! # drop((ping, pong)); std::fs::remove_dir(&tmp).unwrap();
//! # Ok::<(), piper_core::Error>(())
//! ```
//!
//! The modules, in the order data flows through them:
//! - [`name`]: the naming rules, which also guard payloads;
//! - [`dir`]: the socket directory and the address rule;
//! - [`claim`]: owning a name, and the stale-socket rule;
//! - [`node`]: binding, sending and receiving;
//! - [`signals`]: the self-pipe that lets a blocked loop see signals;
//! - [`serve`]: the seed's protocol as a loop;
//! - [`notify`] and [`activation`]: the service manager's two protocols.
//!
//! Linux only: abstract sockets, `SO_PASSCRED` and `PR_SET_PDEATHSIG` are used.
#![deny(missing_docs)]

pub mod activation;
pub mod claim;
pub mod dir;
pub mod error;
pub mod name;
pub mod node;
pub mod notify;
pub mod serve;
pub mod signals;

pub use claim::Liveness;
pub use dir::{Namespace, SocketDir};
pub use error::{Error, Result};
pub use name::{escape, Name};
pub use node::{send_unbound, Credentials, Datagram, Node, Peer, RecvBuf, MAX_DATAGRAM};
pub use signals::{Signals, Stop, Trigger};
