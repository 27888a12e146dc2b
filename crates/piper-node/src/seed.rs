//! The seed's protocol, as a [`Handler`] for piper-core's receive loop.
//!
//! For each datagram: print `NAME received: 'PAYLOAD'`, then send NAME to the
//! node named by PAYLOAD (or to the `next` peer in a ring). Whatever cannot be
//! answered is counted as dropped and the loop goes on. Around that protocol
//! sit what a node run by hand or by a service manager needs: buffered
//! output flushed when idle, rate-limited warnings, watchdog pings, and the
//! counts of the exit summary.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use piper_cli::RateLimit;
use piper_core::node::DEFAULT_SEND_TIMEOUT;
use piper_core::notify::Notifier;
use piper_core::serve::{serve_with, End, Event, Flow, Handler, IDLE_WAKE};
use piper_core::trust::Policy;
use piper_core::{escape, Counts, Datagram, Error, Name, Node, Peer, RecvBuf, Result, Signals};

use crate::clock::Clock;

/// How long buffered output may wait while the node is idle.
pub const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// How often, at most, a node under a service manager reports its counts
/// (`STATUS=`), and only when they changed.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How often a node that relies on its socket file's permissions instead
/// of credentials checks the file again ([`Node::recheck_file_permissions`]).
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// How long the first `--send` keeps trying a peer that is not there yet
/// (or not reading yet) before the node gives up and exits 1.
pub const FIRST_SEND_PATIENCE: Duration = Duration::from_secs(5);

/// How the node behaves.
#[derive(Clone, Debug, Default)]
pub struct Options {
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
    /// Whose datagrams are taken.
    pub trust: Policy,
    /// Where to send `WATCHDOG=1` and `STATUS=`.
    pub notifier: Option<Arc<Notifier>>,
    /// Send `WATCHDOG=1` this often (half the manager's interval).
    pub watchdog: Option<Duration>,
}

/// What the node did.
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

impl Stats {
    /// The counts a manager is told (`STATUS=`).
    pub fn counts(&self) -> Counts {
        Counts {
            received: self.received,
            sent: self.sent,
            dropped: self.dropped,
        }
    }
}

/// Runs the seed's protocol on `node` until `count` is reached or `signals`
/// asks for a stop. Per-message lines go to `out`. Datagrams still queued
/// at the end are counted as dropped (unless the socket was adopted: its
/// queue outlives us, and the next start answers them).
pub fn run(node: &Node, signals: &Signals, opts: &Options, out: &mut dyn Write) -> Result<(Stats, End)> {
    let mut seed = Seed {
        opts,
        signals,
        out,
        stats: Stats::default(),
        first: None,
        last: None,
        peer: None,
        dirty: false,
        warnings: RateLimit::new(),
        next_ping: Instant::now(),
        next_status: Instant::now(),
        next_recheck: Instant::now() + RECHECK_EVERY,
        reported: None,
        stalled: HashSet::new(),
        stdout_gone: false,
        budget: WaitBudget::new(Instant::now()),
        clock: Clock::new(),
    };
    if let Some(peer) = &opts.send_first {
        seed.send_first(node, peer)?;
    }
    // The seed answers the node a payload names, never its sender.
    let mut buf = RecvBuf::without_sender();
    let end = serve_with(node, signals, &mut seed, &mut buf);
    seed.flush()?;
    if end.is_ok() && !node.is_adopted() {
        // Nothing more comes in, then what came is counted: a datagram
        // sent meanwhile is refused to its sender, who counts it, rather
        // than lost between the count and the close.
        if let Err(e) = node.stop_receiving() {
            log::debug!("{e}");
        }
        while let Ok(Some(_)) | Err(Error::Truncated { .. }) = node.try_recv(&mut buf) {
            seed.stats.dropped += 1;
        }
    }
    // Never freed: the process exits soon after, and the kernel takes the
    // buffer with the rest. Unmapping it first costs a TLB flush on every
    // CPU the node ran on, which a thousand nodes stopping at once pay in
    // a launcher's teardown.
    std::mem::forget(buf);
    seed.warnings.finish();
    seed.stats.active = seed.first.zip(seed.last).map_or(Duration::ZERO, |(f, l)| l - f);
    Ok((seed.stats, end?))
}

struct Seed<'a> {
    opts: &'a Options,
    signals: &'a Signals,
    out: &'a mut dyn Write,
    stats: Stats,
    /// When the first and the last message were accepted.
    first: Option<Instant>,
    last: Option<Instant>,
    /// The last destination, resolved once and reused while it stays the same.
    peer: Option<Peer>,
    /// Whether output waits in the buffer.
    dirty: bool,
    warnings: RateLimit,
    next_ping: Instant,
    /// When the next `STATUS=` may go, and the counts it last reported.
    next_status: Instant,
    /// When the socket file's permissions are next checked.
    next_recheck: Instant,
    reported: Option<Counts>,
    /// Peers that let a wait run out: sent to only without waiting, until
    /// a send finds room again. A peer that never reads then costs the
    /// node one wait, not one per period.
    stalled: HashSet<Name>,
    /// Whether stdout's reader went away (`| head` has its lines): a normal
    /// end, as for any command-line tool.
    stdout_gone: bool,
    /// How long sends may still wait on full queues.
    budget: WaitBudget,
    /// The time of each event.
    clock: Clock,
}

impl Handler for Seed<'_> {
    fn handle(&mut self, node: &Node, event: Event<'_>) -> Result<Flow> {
        // The time of the event: the message's for the active span, and
        // the watchdog's, STATUS='s and the recheck's clock.
        let now = self.clock.now();
        let managed = self.opts.notifier.is_some();
        if managed {
            self.watchdog(now);
        }
        match event {
            Event::Datagram(datagram) => self.datagram(node, datagram, now)?,
            Event::Truncated { len } => {
                self.stats.dropped += 1;
                let e = Error::Truncated {
                    len,
                    max: piper_core::MAX_DATAGRAM,
                };
                self.warnings.warn(format_args!("{e}; not answering"));
            }
            Event::Idle => {
                if self.dirty {
                    self.flush()?;
                }
            }
        }
        if managed {
            self.status(now);
        }
        if now >= self.next_recheck {
            self.next_recheck = now + RECHECK_EVERY;
            if let Err(e) = node.recheck_file_permissions() {
                log::warn!("{e}");
            }
        }
        let done = self.stdout_gone || self.opts.count.is_some_and(|count| self.stats.received >= count);
        Ok(if done { Flow::Stop } else { Flow::Continue })
    }

    /// [`FLUSH_AFTER`] while output waits to be flushed, else [`IDLE_WAKE`],
    /// and at most half the watchdog interval when `WATCHDOG=1` is due at
    /// set times: waking every half interval keeps a ping at most 1.5
    /// intervals after the last, inside the manager's 2.
    fn timeout(&self) -> Duration {
        let idle = if self.dirty { FLUSH_AFTER } else { IDLE_WAKE };
        match self.opts.watchdog {
            Some(every) => idle.min((every / 2).max(Duration::from_millis(1))),
            None => idle,
        }
    }
}

impl Seed<'_> {
    /// Prints and answers one datagram, or counts why not.
    fn datagram(&mut self, node: &Node, datagram: Datagram<'_>, now: Instant) -> Result<()> {
        if !datagram.trusted(&self.opts.trust) {
            self.stats.dropped += 1;
            self.stats.refused += 1;
            match datagram.creds {
                Some(c) => self.warnings.warn(format_args!(
                    "refused a datagram from uid {} (pid {}): not an allowed user",
                    c.uid, c.pid
                )),
                // The kernel records credentials only if the sender or the
                // receiver had SO_PASSCRED when it was sent.
                None => self.warnings.warn(format_args!(
                    "refused a datagram without sender credentials: it was queued before \
                     SO_PASSCRED was set (use PassCredentials=yes on the socket unit)"
                )),
            };
            return Ok(());
        }
        let payload = datagram.payload;
        self.stats.received += 1;
        self.first.get_or_insert(now);
        self.last = Some(now);
        if !self.opts.quiet {
            let written = writeln!(self.out, "{} received: '{}'", node.name(), escape(payload));
            self.dirty = true;
            if self.wrote(written)? || (self.opts.line_buffered && self.flush()?) {
                // Nobody reads the line: nobody hears the answer either.
                self.stats.dropped += 1;
                return Ok(());
            }
        }
        let target = match &self.opts.next {
            // The ring's peer, resolved once: no work per message.
            Some(_) => Ok(None),
            // The seed's protocol: the payload names the peer; the last one
            // resolved is reused while it stays the same.
            None => match &self.peer {
                Some(peer) if peer.name().as_bytes() == payload => Ok(None),
                _ => Name::from_bytes(payload).map(Some),
            },
        };
        match target {
            // Answering our own name would answer ourselves, forever, at full
            // speed: the seed does, piper does not.
            Ok(Some(to)) if &to == node.name() => {
                self.stats.dropped += 1;
                self.warnings.warn(format_args!(
                    "payload names this node itself; not answering (a node never answers itself)"
                ));
            }
            Ok(to) => self.reply(node, to.as_ref()),
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
    fn reply(&mut self, node: &Node, to: Option<&Name>) {
        if !self.opts.interval.is_zero() && !self.pause() {
            self.stats.dropped += 1;
            return;
        }
        // The peer changes only when a payload names another node: a ring's
        // `next` is resolved once, and then nothing is compared per message.
        let wanted = match (to, &self.peer) {
            (Some(name), Some(peer)) if peer.name() == name => None,
            (Some(name), _) => Some(name),
            (None, None) => self.opts.next.as_ref(),
            (None, Some(_)) => None,
        };
        if let Some(name) = wanted {
            match node.peer(name) {
                Ok(peer) => self.peer = Some(peer),
                Err(e) => {
                    self.stats.dropped += 1;
                    self.warnings.warn(format_args!("{e}; dropping the reply"));
                    return;
                }
            }
        }
        // A peer that let a wait run out is sent to without waiting until a
        // send finds room again (it reads); the common case pays one
        // emptiness check.
        let penalised = !self.stalled.is_empty() && self.peer.as_ref().is_some_and(|p| self.stalled.contains(p.name()));
        let Some(peer) = &self.peer else { return };
        let (sent, ran_out) = match penalised {
            true => (node.send_nowait(peer, node.name().as_bytes()), false),
            false => send_within(&mut self.budget, node, peer),
        };
        match sent {
            Ok(()) => {
                self.stats.sent += 1;
                if penalised {
                    self.stalled.remove(peer.name());
                }
            }
            Err(e) => {
                self.stats.dropped += 1;
                match (&e, ran_out) {
                    (Error::WouldBlock { peer }, true) => {
                        self.stalled.insert(peer.clone());
                    }
                    (Error::WouldBlock { .. }, false) => {}
                    // Gone, or never there: nothing to wait on any more.
                    _ => {
                        self.stalled.remove(peer.name());
                    }
                }
                // A stopping node does not warn about the teardown it is part
                // of: its sends fail with EINTR, or to peers already gone.
                if self.signals.stop().is_none() {
                    self.warnings.warn(format_args!("{e}; dropping the reply"));
                }
            }
        }
    }

    /// The first `--send`, which starts a chain: retried while the peer is
    /// not there yet (or not reading yet), with a growing pause, for up to
    /// [`FIRST_SEND_PATIENCE`]. A peer still missing then is an error: the
    /// chain would never start, and saying so beats serving in silence.
    fn send_first(&mut self, node: &Node, to: &Name) -> Result<()> {
        if !self.opts.interval.is_zero() && !self.pause() {
            return Ok(());
        }
        let peer = node.peer(to)?;
        let deadline = Instant::now() + FIRST_SEND_PATIENCE;
        let mut pause = Duration::from_millis(10);
        loop {
            match node.send(&peer, node.name().as_bytes()) {
                Ok(()) => {
                    self.stats.sent += 1;
                    // Kept for the replies only if they go there too: a
                    // ring's replies go to `next`, which `reply` resolves.
                    if self.opts.next.as_ref().is_none_or(|next| next == to) {
                        self.peer = Some(peer);
                    }
                    return Ok(());
                }
                Err(e @ (Error::PeerNotFound { .. } | Error::PeerGone { .. } | Error::WouldBlock { .. })) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    log::info!("{e}; trying again");
                    if self.signals.sleep(pause.min(left)).is_some() {
                        self.stats.dropped += 1;
                        return Ok(());
                    }
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits the interval, waking early for a stop, and keeping up the
    /// watchdog pings meanwhile. Returns false on a stop.
    fn pause(&mut self) -> bool {
        if self.dirty && !matches!(self.flush(), Ok(false)) {
            return false;
        }
        let deadline = Instant::now() + self.opts.interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            let step = self.opts.watchdog.map_or(left, |every| left.min(every / 2));
            if self.signals.sleep(step).is_some() {
                return false;
            }
            self.watchdog(Instant::now());
        }
    }

    /// Sends `STATUS=` with the counts, at most every [`STATUS_EVERY`] and
    /// only when they changed: `systemctl status` shows them, and the
    /// launcher adds them up. Never waits: a full queue skips a report.
    fn status(&mut self, now: Instant) {
        let Some(notifier) = &self.opts.notifier else { return };
        let counts = self.stats.counts();
        if now < self.next_status || self.reported == Some(counts) {
            return;
        }
        if let Ok(true) = notifier.try_notify(&counts.status()) {
            self.reported = Some(counts);
            self.next_status = now + STATUS_EVERY;
        }
    }

    /// Sends `WATCHDOG=1` when it is due: on schedule on average, and after
    /// a stall not in a burst.
    fn watchdog(&mut self, now: Instant) {
        let (Some(every), Some(notifier)) = (self.opts.watchdog, &self.opts.notifier) else {
            return;
        };
        if ping_due(&mut self.next_ping, every, now) {
            if let Err(e) = notifier.notify("WATCHDOG=1") {
                log::warn!("{e}");
            }
        }
    }

    /// Writes out buffered lines; true if stdout's reader has gone.
    fn flush(&mut self) -> Result<bool> {
        self.dirty = false;
        let flushed = self.out.flush();
        self.wrote(flushed)
    }

    /// Takes in how a write to stdout went: true if its reader has gone
    /// (`EPIPE`), which ends the loop as a normal end; any other failure
    /// is an error.
    fn wrote(&mut self, written: std::io::Result<()>) -> Result<bool> {
        match written {
            Ok(()) => Ok(self.stdout_gone),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                if !self.stdout_gone {
                    log::debug!("stdout's reader has gone: stopping");
                }
                self.stdout_gone = true;
                Ok(true)
            }
            Err(e) => Err(stdout_error(e)),
        }
    }
}

/// Whether a `WATCHDOG=1` is due at `now`, the next being due at `next`
/// and one due `every`; if so, `next` moves on by `every`, or to `now` if
/// that is later: on schedule on average, and after a stall (a pause, a
/// busy CPU) one ping, not a burst to catch up.
fn ping_due(next: &mut Instant, every: Duration, now: Instant) -> bool {
    if now < *next {
        return false;
    }
    *next = (*next + every).max(now);
    true
}

/// A failed write of message lines.
fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        action: "write",
        target: "stdout".into(),
        source,
    }
}

/// How long a node waits in sends that come to nothing: a wait on a full
/// queue that runs out says the peer stopped reading, and from then on it
/// is sent to only without waiting, until it reads again. Each new such
/// peer still costs a wait: without a budget over all peers, twenty of
/// them cost twenty [`DEFAULT_SEND_TIMEOUT`]s, and the node's other peers
/// waited with it. Waits that run out may take a twentieth of the node's
/// time, [`DEFAULT_SEND_TIMEOUT`] at most at once, and [`WaitBudget::MAX`]
/// at most in a burst: a few peers may stop reading before a send to one
/// that reads, however slowly, waits less than a full timeout. Once that is
/// spent a send still waits [`WaitBudget::FLOOR`]. A wait that ends in a
/// send costs nothing: it is how a reading peer paces the node.
#[derive(Clone, Copy, Debug)]
struct WaitBudget {
    left: Duration,
    at: Instant,
}

impl WaitBudget {
    /// What the budget earns per unit of time.
    const SHARE: u32 = 20;
    /// The shortest wait, once the budget is spent: a peer that reads
    /// makes room within it, unless the machine is very busy.
    const FLOOR: Duration = Duration::from_millis(50);
    /// The most the budget holds: four full send timeouts.
    const MAX: Duration = Duration::from_secs(1);

    fn new(now: Instant) -> WaitBudget {
        WaitBudget {
            left: Self::MAX,
            at: now,
        }
    }

    /// How long a send may wait now.
    fn available(&mut self, now: Instant) -> Duration {
        let earned = now.saturating_duration_since(self.at) / Self::SHARE;
        self.left = (self.left + earned).min(Self::MAX);
        self.at = now;
        self.left.clamp(Self::FLOOR, DEFAULT_SEND_TIMEOUT)
    }

    /// Takes away a wait that came to nothing.
    fn spend(&mut self, waited: Duration) {
        self.left = self.left.saturating_sub(waited);
    }
}

/// Sends to `peer`, waiting on a full queue as long as `budget` allows.
/// Returns how it went, and whether a wait ran out (the peer is not
/// reading).
fn send_within(budget: &mut WaitBudget, node: &Node, peer: &Peer) -> (Result<()>, bool) {
    match node.send_nowait(peer, node.name().as_bytes()) {
        Err(Error::WouldBlock { .. }) => {}
        done => return (done, false),
    }
    let now = Instant::now();
    let may = budget.available(now);
    let sent = node
        .set_send_timeout(may)
        .and_then(|()| node.send(peer, node.name().as_bytes()));
    let ran_out = matches!(sent, Err(Error::WouldBlock { .. }));
    if ran_out {
        budget.spend(now.elapsed());
    }
    (sent, ran_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use piper_core::{SocketDir, Stop};
    use std::sync::mpsc;

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!("piper-seed-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn watchdog_pings_keep_their_schedule_and_a_stall_brings_one_not_a_burst() {
        // Every 100 ms (half a 200 ms WATCHDOG_USEC), woken every 50 ms at
        // most (half of that, Seed::timeout).
        let every = Duration::from_millis(100);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut next = t0;
        let mut pings = Vec::new();
        for ms in (0..=1000).step_by(50) {
            if ping_due(&mut next, every, at(ms)) {
                pings.push(ms);
            }
        }
        assert_eq!(pings, (0..=1000).step_by(100).collect::<Vec<_>>());
        // Woken a little late each time: still ten a second, none early.
        let mut next = t0;
        let late: Vec<u64> = [0, 60, 110, 170, 215, 260, 330]
            .into_iter()
            .filter(|&ms| ping_due(&mut next, every, at(ms)))
            .collect();
        assert_eq!(late, [0, 110, 215, 330]);
        // A stall of a second: a ping when it ends and one at the next
        // wake-up, then on schedule; not the ten it missed.
        let mut next = at(100);
        let after: Vec<u64> = (1100..=1500)
            .step_by(50)
            .filter(|&ms| ping_due(&mut next, every, at(ms)))
            .collect();
        assert_eq!(after, [1100, 1150, 1200, 1300, 1400, 1500]);
    }

    /// The loop driven in-process: its node and its stop handle are plain
    /// arguments, no process is spawned.
    #[test]
    fn a_trigger_stops_the_loop_while_it_waits_in_its_receive() {
        let tmp = TempDir::new("trigger");
        let dir = SocketDir::open(&tmp.0).unwrap();
        let pong = Node::bind(&dir, Name::new("pong").unwrap()).unwrap();
        let ping = Node::bind(&dir, Name::new("ping").unwrap()).unwrap();
        let signals = Signals::new().unwrap();
        let trigger = signals.trigger();
        let (done, result) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let opts = Options {
                    next: Some(Name::new("ping").unwrap()),
                    ..Default::default()
                };
                let mut out = Vec::new();
                let end = run(&pong, &signals, &opts, &mut out);
                done.send((end.map_err(|e| e.to_string()), out)).unwrap();
            });
            let mut buf = RecvBuf::new();
            ping.set_recv_timeout(Duration::from_secs(5)).unwrap();
            for _ in 0..3 {
                ping.send_to(pong.name(), b"ping").unwrap();
                assert_eq!(ping.recv(&mut buf).unwrap().unwrap().payload, b"pong");
            }
            trigger.fire();
            // Seen within IDLE_WAKE even though pong is blocked in a receive.
            let (end, out) = result.recv_timeout(IDLE_WAKE * 5).expect("the loop stops");
            let (stats, end) = end.unwrap();
            assert_eq!(end, End::Stop(Stop::Requested));
            assert_eq!((stats.received, stats.sent, stats.dropped), (3, 3, 0));
            assert_eq!(out, b"pong received: 'ping'\n".repeat(3));
        });
    }

    #[test]
    fn waits_that_come_to_nothing_take_a_twentieth_of_the_time_at_most() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut budget = WaitBudget::new(t0);
        // Four full waits may run out before the budget is spent.
        for _ in 0..4 {
            assert_eq!(budget.available(t0), DEFAULT_SEND_TIMEOUT);
            budget.spend(DEFAULT_SEND_TIMEOUT);
        }
        // Spent: a send still waits the floor, for a peer that reads.
        assert_eq!(budget.available(t0), WaitBudget::FLOOR);
        // A second earns 50 ms; five earn a whole send timeout; twenty
        // the whole budget, no more.
        assert_eq!(budget.available(at(1000)), Duration::from_millis(50));
        assert_eq!(budget.available(at(5000)), DEFAULT_SEND_TIMEOUT);
        assert_eq!(budget.available(at(20_000)), DEFAULT_SEND_TIMEOUT);
        for _ in 0..4 {
            budget.spend(DEFAULT_SEND_TIMEOUT);
        }
        assert_eq!(budget.available(at(20_000)), WaitBudget::FLOOR);
        // A minute of sends to new peers that never read, one every 10 ms:
        // what runs out is the budget (1 s), what it earns (5%), and the
        // floors.
        let mut budget = WaitBudget::new(t0);
        let (mut waited, mut floors) = (Duration::ZERO, Duration::ZERO);
        for ms in (0..60_000).step_by(10) {
            let may = budget.available(at(ms));
            budget.spend(may);
            waited += may;
            floors += WaitBudget::FLOOR;
        }
        assert!(waited <= Duration::from_millis(1000 + 3000) + floors, "{waited:?}");
    }

    #[test]
    fn datagrams_queued_at_the_stop_are_dropped_and_count_ends_the_loop() {
        let tmp = TempDir::new("queued");
        let dir = SocketDir::open(&tmp.0).unwrap();
        let pong = Node::bind(&dir, Name::new("pong").unwrap()).unwrap();
        let ping = Node::bind(&dir, Name::new("ping").unwrap()).unwrap();
        for _ in 0..5 {
            ping.send_to(pong.name(), b"ping").unwrap();
        }
        // --count 2: two are answered, the loop ends, three stay queued.
        let opts = Options {
            count: Some(2),
            quiet: true,
            ..Default::default()
        };
        let signals = Signals::new().unwrap();
        let (stats, end) = run(&pong, &signals, &opts, &mut Vec::new()).unwrap();
        assert_eq!(end, End::Handler);
        assert_eq!((stats.received, stats.sent, stats.dropped), (2, 2, 3));
        assert!(stats.active < Duration::from_secs(1));
    }

    #[test]
    fn a_stop_during_the_interval_ends_the_pause_at_once() {
        let tmp = TempDir::new("pause");
        let dir = SocketDir::open(&tmp.0).unwrap();
        let pong = Node::bind(&dir, Name::new("pong").unwrap()).unwrap();
        let ping = Node::bind(&dir, Name::new("ping").unwrap()).unwrap();
        ping.send_to(pong.name(), b"ping").unwrap();
        let signals = Signals::new().unwrap();
        let trigger = signals.trigger();
        let opts = Options {
            interval: Duration::from_secs(60),
            quiet: true,
            ..Default::default()
        };
        let started = Instant::now();
        let firing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            trigger.fire();
        });
        let (stats, end) = run(&pong, &signals, &opts, &mut Vec::new()).unwrap();
        firing.join().unwrap();
        assert_eq!(end, End::Stop(Stop::Requested));
        assert_eq!((stats.received, stats.sent, stats.dropped), (1, 0, 1));
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn the_first_send_goes_to_its_peer_and_every_reply_to_next() {
        let tmp = TempDir::new("send-next");
        let dir = SocketDir::open(&tmp.0).unwrap();
        let node = Node::bind(&dir, Name::new("n").unwrap()).unwrap();
        let first = Node::bind(&dir, Name::new("first").unwrap()).unwrap();
        let next = Node::bind(&dir, Name::new("next").unwrap()).unwrap();
        for _ in 0..3 {
            first.send_to(node.name(), b"first").unwrap();
        }
        let opts = Options {
            send_first: Some(Name::new("first").unwrap()),
            next: Some(Name::new("next").unwrap()),
            count: Some(3),
            quiet: true,
            ..Default::default()
        };
        let signals = Signals::new().unwrap();
        let (stats, _) = run(&node, &signals, &opts, &mut Vec::new()).unwrap();
        assert_eq!((stats.received, stats.sent, stats.dropped), (3, 4, 0));
        let mut buf = RecvBuf::new();
        let got = first.try_recv(&mut buf).unwrap().map(|d| d.payload.to_vec());
        assert_eq!(got.as_deref(), Some(&b"n"[..]), "the first send");
        assert!(first.try_recv(&mut buf).unwrap().is_none(), "and only that");
        for _ in 0..3 {
            let got = next.try_recv(&mut buf).unwrap().map(|d| d.payload.to_vec());
            assert_eq!(got.as_deref(), Some(&b"n"[..]), "a reply");
        }
        assert!(next.try_recv(&mut buf).unwrap().is_none());
    }
}
