//! The seed's protocol, as a loop that takes its node and its signals as
//! arguments, so tests drive it in-process and the binary stays thin.
//!
//! For each datagram: print `NAME received: 'PAYLOAD'`, then send NAME to the
//! node named by PAYLOAD (or to the `next` peer in a ring). Whatever cannot be
//! answered is counted as dropped and the loop goes on.

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Uid;

use crate::error::{Error, Result};
use crate::name::{escape, Name};
use crate::node::{Credentials, Datagram, Node, Peer, RecvBuf};
use crate::notify::Notifier;
use crate::signals::{Signals, Stop};

/// How often an idle node wakes up anyway: this bounds how long a stop
/// requested by [`Trigger::fire`](crate::Trigger::fire) from another thread
/// takes to be seen (a signal is seen at once).
pub const IDLE_WAKE: Duration = Duration::from_secs(1);

/// How long buffered output may wait while the node is idle.
pub const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// How the loop behaves.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Send our name to this node once, before serving: starts a chain.
    pub send_first: Option<Name>,
    /// Answer this node instead of the one named by the payload (a ring).
    pub next: Option<Name>,
    /// End after this many received messages.
    pub count: Option<u64>,
    /// Wait this long before each reply.
    pub interval: Duration,
    /// Print no per-message lines.
    pub quiet: bool,
    /// Flush after every line (a terminal); otherwise flush when idle.
    pub line_buffered: bool,
    /// Senders' uids accepted besides our own and root's.
    pub allow_uids: Vec<u32>,
    /// Where to send `READY=1`, `STOPPING=1` and `WATCHDOG=1`.
    pub notifier: Option<std::sync::Arc<Notifier>>,
    /// Send `WATCHDOG=1` this often (half the manager's interval).
    pub watchdog: Option<Duration>,
}

/// What the loop did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages accepted and printed.
    pub received: u64,
    /// Messages sent (replies and the first send).
    pub sent: u64,
    /// Datagrams not answered: bad payloads, failed sends, truncated or
    /// refused datagrams, and those still queued at shutdown.
    pub dropped: u64,
    /// Of those, datagrams refused because of the sender's uid.
    pub refused: u64,
    /// From the first accepted message to the last: the time spent chatting,
    /// which the message rate is computed over.
    pub active: Duration,
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// `count` messages were received.
    Count,
    /// A stop was requested.
    Stop(Stop),
}

/// Logs at most a few warnings a second, and says how many it held back.
#[derive(Debug)]
struct RateLimit {
    window: Instant,
    shown: u32,
    held: u64,
}

impl RateLimit {
    const PER_SECOND: u32 = 5;

    fn new() -> Self {
        RateLimit {
            window: Instant::now(),
            shown: 0,
            held: 0,
        }
    }

    /// Says how many warnings were held back since the last one shown.
    fn finish(&mut self) {
        if self.held > 0 {
            log::warn!("{} similar warnings suppressed", self.held);
            self.held = 0;
        }
    }

    fn warn(&mut self, args: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.finish();
            self.window = now;
            self.shown = 0;
        }
        if self.shown < Self::PER_SECOND {
            self.shown += 1;
            log::warn!("{args}");
        } else {
            self.held += 1;
        }
    }
}

/// Runs the seed's protocol on `node` until `count` is reached or `signals`
/// asks for a stop. Per-message lines go to `out`.
///
/// ```
/// use piper_core::serve::{serve, End, ServeOptions};
/// use piper_core::{Name, Node, SocketDir, Signals};
///
/// let tmp = std::env::temp_dir().join(format!("piper-doc-serve-{}", std::process::id()));
/// let dir = SocketDir::open(&tmp).unwrap();
/// let pong = Node::bind(&dir, Name::new("pong").unwrap()).unwrap();
/// let ping = Node::bind(&dir, Name::new("ping").unwrap()).unwrap();
/// ping.send_to(pong.name(), b"ping").unwrap();
///
/// let opts = ServeOptions { count: Some(1), ..Default::default() };
/// let mut out = Vec::new();
/// let (stats, end) = serve(&pong, &Signals::new().unwrap(), &opts, &mut out).unwrap();
/// assert_eq!(end, End::Count);
/// assert_eq!(out, b"pong received: 'ping'\n");
/// assert_eq!((stats.received, stats.sent), (1, 1));
/// # drop((ping, pong)); std::fs::remove_dir(&tmp).unwrap();
/// ```
pub fn serve(node: &Node, signals: &Signals, opts: &ServeOptions, out: &mut dyn Write) -> Result<(Stats, End)> {
    let mut server = Server {
        node,
        signals,
        opts,
        out,
        stats: Stats::default(),
        me: Uid::effective().as_raw(),
        first: None,
        peer: None,
        dirty: false,
        warnings: RateLimit::new(),
    };
    if let Some(peer) = &opts.send_first {
        server.reply(Some(peer));
    }
    let mut buf = RecvBuf::new();
    // The loop's wake-ups: a receive timeout (so that signals interrupt
    // a blocked receive), and the handler's O_NONBLOCK on this socket.
    node.set_recv_timeout(IDLE_WAKE)?;
    signals.interrupt(Some(node.as_fd()));
    let end = server.run(&mut buf);
    signals.interrupt(None);
    server.flush()?;
    if end.is_ok() {
        server.drain_queue(&mut buf);
    }
    server.warnings.finish();
    server.stats.active = server.first.map_or(Duration::ZERO, |first| first.elapsed());
    end.map(|end| (server.stats, end))
}

struct Server<'a> {
    node: &'a Node,
    signals: &'a Signals,
    opts: &'a ServeOptions,
    out: &'a mut dyn Write,
    stats: Stats,
    me: u32,
    /// When the first message was accepted.
    first: Option<Instant>,
    /// The last destination, resolved once and reused while it stays the same.
    peer: Option<Peer>,
    dirty: bool,
    warnings: RateLimit,
}

impl Server<'_> {
    /// The loop. It waits in a plain blocking `recvmsg`, so a hop costs one
    /// receive and one send, as in a raw loop. The socket's receive timeout
    /// is the loop's only timer: [`FLUSH_AFTER`] while output waits to be
    /// flushed, else [`IDLE_WAKE`], and at most half the watchdog interval
    /// when `WATCHDOG=1` is due at set times; it is set only when it changes.
    /// Signals still get through: with a receive timeout set, the kernel
    /// fails a blocked receive with EINTR instead of restarting it, and the
    /// handler sets the socket non-blocking, so a receive entered just after
    /// the signal returns at once (see [`Signals::interrupt`]).
    fn run(&mut self, buf: &mut RecvBuf) -> Result<End> {
        let watchdog = self.opts.watchdog.zip(self.opts.notifier.clone());
        let mut next_ping = Instant::now();
        // A copy of the reference: what it lends out is not a borrow of self.
        let node = self.node;
        let mut recv_timeout = IDLE_WAKE;
        loop {
            if let Some(stop) = self.signals.stop() {
                return Ok(End::Stop(stop));
            }
            if self.opts.count.is_some_and(|count| self.stats.received >= count) {
                return Ok(End::Count);
            }
            let mut idle = if self.dirty { FLUSH_AFTER } else { IDLE_WAKE };
            if let Some((every, notifier)) = &watchdog {
                let now = Instant::now();
                if now >= next_ping {
                    if let Err(e) = notifier.notify("WATCHDOG=1") {
                        log::warn!("{e}");
                    }
                    // On schedule on average; after a stall, not in a burst.
                    next_ping = (next_ping + *every).max(now);
                }
                // Waking every half interval keeps a ping at most 1.5
                // intervals after the last, inside the manager's 2.
                idle = idle.min((*every / 2).max(Duration::from_millis(1)));
            }
            if idle != recv_timeout {
                node.set_recv_timeout(idle)?;
                recv_timeout = idle;
            }
            match node.recv(buf) {
                // The idle timeout, a signal, or the signal handler's
                // O_NONBLOCK: flush what waits; the check at the top decides
                // whether to stop.
                Err(Error::Io {
                    source: Errno::EINTR | Errno::EAGAIN,
                    ..
                }) => {
                    if self.dirty {
                        self.flush()?;
                    }
                }
                received => self.handle(received)?,
            }
        }
    }

    /// Prints and answers one received datagram, or counts why not.
    fn handle(&mut self, received: Result<Datagram<'_>>) -> Result<()> {
        let target = match received {
            Ok(Datagram { payload, creds, .. }) => {
                if !allowed(creds, self.me, &self.opts.allow_uids) {
                    self.stats.dropped += 1;
                    self.stats.refused += 1;
                    match creds {
                        Some(c) if c.pid != 0 => self.warnings.warn(format_args!(
                            "refused a datagram from uid {} (pid {}): not an allowed user",
                            c.uid, c.pid
                        )),
                        // The kernel records credentials only if the sender or
                        // the receiver had SO_PASSCRED when it was sent.
                        _ => self.warnings.warn(format_args!(
                            "refused a datagram without sender credentials: it was queued before \
                             SO_PASSCRED was set (use PassCredentials=yes on the socket unit)"
                        )),
                    }
                    return Ok(());
                }
                self.stats.received += 1;
                if self.first.is_none() {
                    self.first = Some(Instant::now());
                }
                if !self.opts.quiet {
                    writeln!(self.out, "{} received: '{}'", self.node.name(), escape(payload))
                        .map_err(|e| Error::io("write", "stdout", crate::dir::errno_of(&e)))?;
                    self.dirty = true;
                    if self.opts.line_buffered {
                        self.flush()?;
                    }
                }
                match &self.opts.next {
                    // The ring's peer, resolved once: no work per message.
                    Some(_) => Ok(None),
                    // The seed's protocol: the payload names the peer; the
                    // last one resolved is reused while it stays the same.
                    None => match &self.peer {
                        Some(peer) if peer.name().as_bytes() == payload => Ok(None),
                        _ => Name::from_bytes(payload).map(Some),
                    },
                }
            }
            Err(e @ Error::Truncated { .. }) => {
                self.stats.dropped += 1;
                self.warnings.warn(format_args!("{e}; not answering"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match target {
            Ok(to) => self.reply(to.as_ref()),
            Err(e) => {
                self.stats.dropped += 1;
                self.warnings
                    .warn(format_args!("payload is not a node to answer ({e}); not answering"));
            }
        }
        Ok(())
    }

    /// Sends our name to `to`, or to the current peer if `None` (the ring's
    /// `next`, or the last payload's node), after the interval. Failures are
    /// counted and logged, never fatal.
    fn reply(&mut self, to: Option<&Name>) {
        if !self.opts.interval.is_zero() && !self.pause() {
            self.stats.dropped += 1;
            return;
        }
        if let Some(name) = to.or(self.opts.next.as_ref()) {
            if self.peer.as_ref().map(Peer::name) != Some(name) {
                match self.node.peer(name) {
                    Ok(peer) => self.peer = Some(peer),
                    Err(e) => {
                        self.stats.dropped += 1;
                        self.warnings.warn(format_args!("{e}; dropping the reply"));
                        return;
                    }
                }
            }
        }
        let Some(peer) = &self.peer else { return };
        match self.node.send(peer, self.node.name().as_bytes()) {
            Ok(()) => self.stats.sent += 1,
            Err(e) => {
                self.stats.dropped += 1;
                self.warnings.warn(format_args!("{e}; dropping the reply"));
            }
        }
    }

    /// Waits the interval, waking early for a stop. Returns false on a stop.
    fn pause(&mut self) -> bool {
        if self.dirty && self.flush().is_err() {
            return false;
        }
        let deadline = Instant::now() + self.opts.interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            let mut fds = [PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
            let ms = PollTimeout::try_from(left.as_millis().max(1) as u64).unwrap_or(PollTimeout::MAX);
            if let Ok(1) = poll(&mut fds, ms) {
                if self.signals.stop().is_some() {
                    return false;
                }
                self.signals.drain();
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.dirty = false;
        self.out
            .flush()
            .map_err(|e| Error::io("write", "stdout", crate::dir::errno_of(&e)))
    }

    /// Counts what is still queued at shutdown as dropped. An adopted socket
    /// is left alone: its queue outlives us and the next start answers it.
    fn drain_queue(&mut self, buf: &mut RecvBuf) {
        if self.node.is_adopted() {
            return;
        }
        while let Ok(Some(_)) | Err(Error::Truncated { .. }) = self.node.try_recv(buf) {
            self.stats.dropped += 1;
        }
    }
}

fn allowed(creds: Option<Credentials>, me: u32, extra: &[u32]) -> bool {
    creds.is_some_and(|c| c.uid == me || c.uid == 0 || extra.contains(&c.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Name, SocketDir};
    use std::sync::mpsc;

    /// The loop driven in-process: its node and its stop handle are plain
    /// arguments, no process is spawned.
    #[test]
    fn a_trigger_stops_the_loop_and_queued_datagrams_are_counted() {
        let tmp = std::env::temp_dir().join(format!("piper-serve-test-{}", std::process::id()));
        let dir = SocketDir::open(&tmp).unwrap();
        let pong = Node::bind(&dir, Name::new("pong").unwrap()).unwrap();
        let ping = Node::bind(&dir, Name::new("ping").unwrap()).unwrap();
        let signals = Signals::new().unwrap();
        let trigger = signals.trigger();
        let (done, result) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let opts = ServeOptions {
                    next: Some(Name::new("ping").unwrap()),
                    ..Default::default()
                };
                let mut out = Vec::new();
                let end = serve(&pong, &signals, &opts, &mut out);
                done.send((end.map_err(|e| e.to_string()), out)).unwrap();
            });
            let mut buf = RecvBuf::new();
            for _ in 0..3 {
                ping.send_to(pong.name(), b"ping").unwrap();
                ping.set_recv_timeout(Duration::from_secs(5)).unwrap();
                assert_eq!(ping.recv(&mut buf).unwrap().payload, b"pong");
            }
            trigger.fire();
            // Seen within IDLE_WAKE: the loop is blocked in a receive.
            let (end, out) = result.recv_timeout(IDLE_WAKE * 5).expect("the loop stops");
            let (stats, end) = end.unwrap();
            assert_eq!(end, End::Stop(Stop::Requested));
            assert_eq!((stats.received, stats.sent, stats.dropped), (3, 3, 0));
            assert_eq!(out, b"pong received: 'ping'\n".repeat(3));
        });
        drop((ping, pong));
        std::fs::remove_dir(&tmp).unwrap();
    }
}
