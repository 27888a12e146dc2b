//! A node's receive loop, generic over what it does with each datagram, in
//! the mini-redis style: the loop takes its bound [`Node`] and its stop
//! source ([`Signals`]) as arguments, so a program (or a test) decides where
//! both come from, and a [`Handler`] decides what each datagram means. The
//! seed's ping-pong is one such handler, in `piper-node`.
//!
//! The loop waits in a plain blocking receive, so a hop costs one receive
//! (plus whatever the handler sends), as in a raw loop. The socket's receive
//! timeout is the loop's only timer: the handler names it through
//! [`Handler::timeout`], and gets [`Event::Idle`] when it passes. Signals
//! still get through: with a receive timeout set, the kernel ends a blocked
//! receive with EINTR instead of restarting it, and the stop request sets the
//! socket non-blocking (see [`Signals::interrupting`]), so a receive entered
//! just after the signal returns at once.

use std::os::fd::AsFd;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::node::{Datagram, Node, RecvBuf};
use crate::signals::{Signals, Stop};

/// How long the loop waits for a datagram, unless the handler asks for less.
/// This also bounds how long a stop requested by
/// [`Trigger::fire`](crate::Trigger::fire) from another thread takes to be
/// seen (a signal is seen at once).
pub const IDLE_WAKE: Duration = Duration::from_secs(1);

/// What the loop hands its handler.
#[derive(Debug)]
pub enum Event<'a> {
    /// A datagram arrived.
    Datagram(Datagram<'a>),
    /// A datagram larger than the receive buffer arrived and was cut.
    Truncated {
        /// Its real length.
        len: usize,
    },
    /// The wait ended with nothing to read: the handler's timeout passed, or
    /// a signal came.
    Idle,
}

/// Whether the loop goes on after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Wait for the next event.
    Continue,
    /// End the loop with [`End::Handler`].
    Stop,
}

/// What a node does with what it receives.
///
/// A closure `FnMut(&Node, Event<'_>) -> Result<Flow>` is a handler that
/// never needs to wake up early.
pub trait Handler {
    /// Handles one event. An `Err` ends the loop with that error.
    fn handle(&mut self, node: &Node, event: Event<'_>) -> Result<Flow>;

    /// How long the next wait may last before [`Event::Idle`]; asked before
    /// every wait. Defaults to [`IDLE_WAKE`].
    fn timeout(&self) -> Duration {
        IDLE_WAKE
    }
}

impl<F> Handler for F
where
    F: FnMut(&Node, Event<'_>) -> Result<Flow>,
{
    fn handle(&mut self, node: &Node, event: Event<'_>) -> Result<Flow> {
        self(node, event)
    }
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The handler returned [`Flow::Stop`].
    Handler,
    /// A stop was requested through `signals`.
    Stop(Stop),
}

/// Runs `handler` on every datagram `node` receives, until the handler says
/// [`Flow::Stop`] or `signals` reports a stop request.
///
/// It receives into a [`RecvBuf`] of its own, freed when it returns;
/// [`serve_with`] receives into the caller's.
///
/// An echo node in a few lines:
///
/// ```
/// use piper_core::serve::{serve, End, Event, Flow};
/// use piper_core::{Name, Node, RecvBuf, Signals, SocketDir};
///
/// let tmp = std::env::temp_dir().join(format!("piper-doc-serve-{}", std::process::id()));
/// let dir = SocketDir::open(&tmp)?;
/// let echo = Node::bind(&dir, Name::new("echo")?)?;
/// let client = Node::bind(&dir, Name::new("client")?)?;
/// client.send_to(echo.name(), b"hello")?;
///
/// let end = serve(&echo, &Signals::new()?, &mut |node: &Node, event: Event<'_>| {
///     if let Event::Datagram(msg) = event {
///         if let Some(from) = msg.from() {
///             node.send_to(&from, msg.payload)?;
///         }
///         return Ok(Flow::Stop);
///     }
///     Ok(Flow::Continue)
/// })?;
/// assert_eq!(end, End::Handler);
/// let mut buf = RecvBuf::new();
/// assert_eq!(client.recv(&mut buf)?.expect("the echo").payload, b"hello");
/// # drop((echo, client)); std::fs::remove_dir(&tmp).unwrap();
/// # Ok::<(), piper_core::Error>(())
/// ```
pub fn serve(node: &Node, signals: &Signals, handler: &mut impl Handler) -> Result<End> {
    serve_with(node, signals, handler, &mut RecvBuf::new())
}

/// [`serve`], receiving into `buf`: a program that serves more than once,
/// or decides when its buffer is freed, owns it.
pub fn serve_with(node: &Node, signals: &Signals, handler: &mut impl Handler, buf: &mut RecvBuf) -> Result<End> {
    signals.interrupting(node.as_fd(), || {
        let mut timeout = None;
        loop {
            if let Some(stop) = signals.stop() {
                return Ok(End::Stop(stop));
            }
            // Set only when it changes: no extra system call per hop.
            let want = handler.timeout();
            if timeout != Some(want) {
                node.set_recv_timeout(want)?;
                timeout = Some(want);
            }
            let event = match node.recv(buf) {
                Ok(Some(datagram)) => Event::Datagram(datagram),
                Ok(None) => Event::Idle,
                Err(Error::Truncated { len, .. }) => Event::Truncated { len },
                Err(e) => return Err(e),
            };
            if handler.handle(node, event)? == Flow::Stop {
                return Ok(End::Handler);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Name, SocketDir};

    struct Idler {
        idles: u32,
        datagrams: u32,
    }

    impl Handler for Idler {
        fn handle(&mut self, _node: &Node, event: Event<'_>) -> Result<Flow> {
            match event {
                Event::Idle => self.idles += 1,
                Event::Datagram(_) => self.datagrams += 1,
                Event::Truncated { .. } => {}
            }
            Ok(if self.idles == 3 { Flow::Stop } else { Flow::Continue })
        }

        fn timeout(&self) -> std::time::Duration {
            std::time::Duration::from_millis(5)
        }
    }

    #[test]
    fn a_handler_without_a_timeout_of_its_own_waits_idle_wake() {
        assert_eq!(IDLE_WAKE, std::time::Duration::from_secs(1));
        let path = std::env::temp_dir().join(format!("piper-serve-default-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let dir = SocketDir::open(&path).unwrap();
        let node = Node::bind(&dir, Name::new("d").unwrap()).unwrap();
        let mut idles = 0;
        let mut handler = |_: &Node, event: Event<'_>| {
            Ok(match event {
                Event::Idle => {
                    idles += 1;
                    Flow::Continue
                }
                _ => Flow::Stop,
            })
        };
        assert_eq!(Handler::timeout(&handler), IDLE_WAKE);
        let sender = {
            let dir = dir.clone();
            let to = node.name().clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                crate::send_unbound(&dir, &to, b"wake").unwrap();
            })
        };
        assert_eq!(
            serve(&node, &Signals::new().unwrap(), &mut handler).unwrap(),
            End::Handler
        );
        sender.join().unwrap();
        assert!(idles <= 1, "{idles} idle events in 0.1 s");
        drop(node);
        std::fs::remove_dir(&path).unwrap();
    }

    #[test]
    fn the_handlers_timeout_brings_idle_events_and_a_stop_ends_the_loop() {
        let path = std::env::temp_dir().join(format!("piper-serve-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let dir = SocketDir::open(&path).unwrap();
        let node = Node::bind(&dir, Name::new("s").unwrap()).unwrap();
        crate::send_unbound(&dir, node.name(), b"one").unwrap();
        let signals = Signals::new().unwrap();
        let mut idler = Idler { idles: 0, datagrams: 0 };
        assert_eq!(serve(&node, &signals, &mut idler).unwrap(), End::Handler);
        assert_eq!((idler.datagrams, idler.idles), (1, 3));
        signals.trigger().fire();
        assert_eq!(
            serve(&node, &signals, &mut idler).unwrap(),
            End::Stop(crate::Stop::Requested)
        );
        drop(node);
        std::fs::remove_dir(&path).unwrap();
    }
}
