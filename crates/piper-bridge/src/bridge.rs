//! The bridge itself: one thread, one event loop.
//!
//! Two halves share the state: the MQTT half drives the client's event loop
//! (connects, reconnects with backoff, takes messages from the broker and
//! delivers them to local nodes), and the local half waits on the stand-in
//! sockets (all in one epoll set), the signals and a tick. Both run in one
//! task on one thread, so a datagram goes from a stand-in to the broker's
//! socket without crossing threads, and nothing is shared across threads.
//!
//! A **stand-in** is a piper node this bridge binds under the name of a node
//! that lives behind another bridge. What local nodes send it is published
//! to that name's topic; what arrives on the topic of a local node is sent
//! to that node from the stand-in of the sender's name, so the receiver
//! sees the real sender and its reply finds its way back.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::Signal;
use piper_cli::RateLimit;
use piper_core::notify::Notifier;
use piper_core::{send_unbound_nowait, Credentials, Error, Liveness, Name, Node, Peer, RecvBuf, SocketDir};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, Outgoing, QoS, SubscribeFilter};
use tokio::io::unix::AsyncFd;

use crate::wire::{self, Topic, Topics};
use piper_cli::signals::Blocked as Signals;

/// How often the loop looks at the directory, the status and the watchdog.
const TICK: Duration = Duration::from_millis(100);
/// How often `STATUS=` is sent.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long the broker is given to take the goodbye at exit.
const GOODBYE: Duration = Duration::from_secs(1);
/// Reconnection backoff: first wait, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How long a node that left stays subscribed: a message already on its
/// way to it is then counted as dropped here, not lost in the broker.
const LINGER: Duration = Duration::from_secs(5);

/// What the bridge is told at start.
#[derive(Debug)]
pub struct Config {
    /// The local socket directory.
    pub dir: SocketDir,
    /// The ring's topics.
    pub topics: Topics,
    /// This bridge's id.
    pub id: Name,
    /// The local nodes to offer, or `None` to follow the directory.
    pub export: Option<BTreeSet<Name>>,
    /// Uids besides ours and root's whose datagrams are forwarded.
    pub allow_uids: Vec<u32>,
    /// The service manager, if any.
    pub notifier: Option<Notifier>,
    /// Its watchdog interval, if it wants one.
    pub watchdog: Option<Duration>,
}

/// The bridge's counts. Each side adds up exactly: every datagram a
/// stand-in received was published, dropped or refused, and every message
/// from the broker was delivered or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Datagrams local nodes sent to stand-ins.
    pub from_nodes: u64,
    /// Of those, published to the broker.
    pub published: u64,
    /// Of those, dropped: no broker connection, a backed-up connection, or
    /// too large.
    pub dropped_out: u64,
    /// Of those, refused because of the sender's uid.
    pub refused: u64,
    /// Messages the broker brought for local nodes.
    pub from_broker: u64,
    /// Of those, delivered.
    pub delivered: u64,
    /// Of those, dropped: malformed, not a local node, or the node gone or
    /// not reading.
    pub dropped_in: u64,
    /// Times the broker connection was made again after it was lost.
    pub reconnects: u64,
}

/// Why the bridge stopped.
#[derive(Debug)]
pub enum Stopped {
    /// A terminating signal.
    Signal(Signal),
    /// The broker refused us (credentials, authorisation): retrying is
    /// pointless.
    Refused(String),
}

/// Runs the bridge until a signal stops it; returns why, with the counts.
pub fn run(
    cfg: Config,
    client: AsyncClient,
    eventloop: EventLoop,
    signals: Signals,
) -> Result<(Stopped, Counts), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start", "the event loop", e))?;
    runtime.block_on(serve(cfg, client, eventloop, signals))
}

async fn serve(
    cfg: Config,
    client: AsyncClient,
    mut eventloop: EventLoop,
    mut signals: Signals,
) -> Result<(Stopped, Counts), Error> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::io("create", "an epoll set", e))?;
    let bridge = RefCell::new(Bridge::new(cfg, client, epoll));
    bridge.borrow_mut().rescan();
    bridge.borrow_mut().ready();
    let io = |e: tokio::io::unix::AsyncFdRegisterError<RawFd>| Error::io("watch", "the event loop's descriptors", e);
    // SAFETY: both descriptors belong to objects (`bridge`'s epoll set and
    // `signals`) that stay open, unchanged, until after these two are
    // dropped below.
    let stand_ins = unsafe { AsyncFd::register(bridge.borrow().epoll.0.as_raw_fd()) }.map_err(io)?;
    // SAFETY: as above.
    let signal_fd = unsafe { AsyncFd::register(signals.as_fd().as_raw_fd()) }.map_err(io)?;

    let mqtt = async {
        loop {
            let event = eventloop.poll().await;
            if event.is_err() {
                // What the failed poll had read is real, and is handled. What
                // it was sending went down with the connection and is counted
                // as dropped with the rest of the queue; its event, left in
                // the client, would come after the reconnection as if sent.
                for stale in std::mem::take(&mut eventloop.state.events) {
                    if matches!(stale, Event::Incoming(_)) {
                        bridge.borrow_mut().on_mqtt(Ok(stale));
                    }
                }
            }
            // Not in the match: the borrow must end before any await.
            let next = bridge.borrow_mut().on_mqtt(event);
            match next {
                Next::Go => {}
                Next::Wait(d) => tokio::time::sleep(d).await,
                Next::Stop(why) => return why,
            }
        }
    };
    let local = async {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ready = signal_fd.readable() => {
                    if let Ok(mut guard) = ready {
                        guard.clear_ready();
                    }
                    if let Some(sig) = signals.read().into_iter().next() {
                        return Stopped::Signal(sig);
                    }
                }
                ready = stand_ins.readable() => {
                    if let Ok(mut guard) = ready {
                        // Level-triggered underneath: take everything, then
                        // let the runtime wait for the set to fill again.
                        bridge.borrow_mut().pump();
                        guard.clear_ready();
                    }
                }
                _ = tick.tick() => bridge.borrow_mut().tick(),
            }
        }
    };
    let stopped = tokio::select! {
        why = mqtt => why,
        why = local => why,
    };
    drop(signal_fd);
    drop(stand_ins);

    // Say goodbye: an empty presence, so the other bridges drop our names
    // at once (a clean disconnect does not fire the last will), then the
    // disconnect. Bounded: a broker that is away is not waited for.
    if bridge.borrow_mut().goodbye() {
        let flush = async {
            loop {
                let event = eventloop.poll().await;
                let done = matches!(event, Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_));
                if !matches!(event, Ok(Event::Outgoing(Outgoing::Disconnect))) {
                    bridge.borrow_mut().on_mqtt(event);
                }
                if done {
                    break;
                }
            }
        };
        if tokio::time::timeout(GOODBYE, flush).await.is_err() {
            log::warn!("the broker did not take the goodbye within {GOODBYE:?}");
        }
    }
    let mut bridge = bridge.into_inner();
    bridge.warnings.finish();
    bridge.notify("STOPPING=1");
    Ok((stopped, bridge.counts))
}

/// What the MQTT half does next.
enum Next {
    Go,
    Wait(Duration),
    Stop(Stopped),
}

#[derive(Debug)]
struct Bridge {
    cfg: Config,
    client: AsyncClient,
    me: u32,
    /// Connected to the broker since this instant.
    connected: Option<Instant>,
    /// Lost the broker at this instant (or never had it).
    outage: Option<Instant>,
    ever_connected: bool,
    /// Datagrams dropped during the current outage.
    outage_dropped: u64,
    backoff: Duration,
    /// Published into the client's queue, not yet written to the broker:
    /// lost (and counted as dropped) if the connection goes first.
    queued: u64,
    /// Local nodes offered to the other bridges, each with its address.
    local: BTreeMap<Name, Peer>,
    /// Nodes that left, still subscribed until the instant given.
    leaving: BTreeMap<Name, Instant>,
    /// Other bridges' names, by bridge id.
    hosts: BTreeMap<Name, BTreeSet<Name>>,
    /// The stand-ins, by the remote name they stand for.
    stand_ins: HashMap<Name, Node>,
    by_fd: HashMap<RawFd, Name>,
    epoll: Epoll,
    /// The presence could not be queued: try again on the next tick.
    announce_again: bool,
    /// The directory changed, or a node was found gone: list it again.
    rescan: bool,
    dir_stamp: Option<SystemTime>,
    /// Senders seen that were not offered at the time: looked for once each.
    unoffered: BTreeSet<Name>,
    /// Names another bridge announces that a local process holds: warned once.
    clashes: BTreeSet<Name>,
    ready_sent: bool,
    last_status: Option<Instant>,
    last_watchdog: Option<Instant>,
    counts: Counts,
    warnings: RateLimit,
    buf: Option<RecvBuf>,
}

impl Bridge {
    fn new(cfg: Config, client: AsyncClient, epoll: Epoll) -> Bridge {
        Bridge {
            cfg,
            client,
            me: nix::unistd::getuid().as_raw(),
            connected: None,
            outage: Some(Instant::now()),
            ever_connected: false,
            outage_dropped: 0,
            backoff: BACKOFF.0,
            queued: 0,
            local: BTreeMap::new(),
            leaving: BTreeMap::new(),
            hosts: BTreeMap::new(),
            stand_ins: HashMap::new(),
            by_fd: HashMap::new(),
            epoll,
            announce_again: false,
            rescan: true,
            dir_stamp: None,
            unoffered: BTreeSet::new(),
            clashes: BTreeSet::new(),
            ready_sent: false,
            last_status: None,
            last_watchdog: None,
            counts: Counts::default(),
            warnings: RateLimit::new(),
            buf: Some(RecvBuf::new()),
        }
    }

    // ---- the MQTT half ----

    fn on_mqtt(&mut self, event: Result<Event, ConnectionError>) -> Next {
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => self.connected(),
            Ok(Event::Incoming(Incoming::Publish(p))) => self.on_publish(&p.topic, &p.payload),
            // QoS 0 publishes are the datagrams; the presence goes at QoS 1.
            Ok(Event::Outgoing(Outgoing::Publish(0))) => {
                self.queued = self.queued.saturating_sub(1);
                self.counts.published += 1;
            }
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => {
                return Next::Stop(Stopped::Refused(format!("the broker refused the connection: {code:?}")));
            }
            Err(e) => return Next::Wait(self.lost(e)),
        }
        Next::Go
    }

    fn connected(&mut self) {
        let since = self.outage.take().unwrap_or_else(Instant::now);
        if self.ever_connected {
            self.counts.reconnects += 1;
            log::warn!(
                "reconnected to the broker after {:.1}s; {} datagrams for remote nodes were dropped meanwhile",
                since.elapsed().as_secs_f64(),
                self.outage_dropped
            );
        } else {
            log::info!("connected to the broker");
        }
        self.ever_connected = true;
        self.connected = Some(Instant::now());
        self.outage_dropped = 0;
        self.leaving.clear();
        self.backoff = BACKOFF.0;
        // A clean session: subscriptions are made anew each time.
        let mut filters = vec![SubscribeFilter::new(self.cfg.topics.all_hosts(), QoS::AtLeastOnce)];
        filters.extend(
            self.local
                .keys()
                .map(|name| SubscribeFilter::new(self.cfg.topics.msg(name), QoS::AtMostOnce)),
        );
        if let Err(e) = self.client.try_subscribe_many(filters) {
            log::warn!("cannot subscribe: {e}");
        }
        self.announce();
        self.status(true);
    }

    /// The connection is gone (or could not be made): what was queued for
    /// it is lost, and counted so.
    fn lost(&mut self, e: ConnectionError) -> Duration {
        if self.connected.take().is_some() {
            log::warn!("lost the broker ({e}); reconnecting, and dropping datagrams for remote nodes until it is back");
            self.outage = Some(Instant::now());
        } else {
            log::warn!(
                "cannot reach the broker ({e}); trying again in {:.1}s",
                self.backoff.as_secs_f64()
            );
        }
        self.counts.dropped_out += self.queued;
        self.outage_dropped += self.queued;
        self.queued = 0;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
        self.status(true);
        wait
    }

    fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        match self.cfg.topics.parse(topic) {
            Topic::Msg(Ok(dest)) => self.deliver(&dest, payload),
            Topic::Hosts(Ok(id)) => self.presence(id, payload),
            Topic::Hosts(Err(raw)) => {
                let raw = piper_core::escape(raw.as_bytes());
                self.warnings
                    .warn(format_args!("ignored the presence of bridge '{raw}': not a valid id"));
            }
            // Only the topics of the nodes offered here are subscribed to,
            // and their names are valid: anything else is not for us.
            Topic::Msg(Err(_)) | Topic::Other => {
                log::debug!("ignored a message on {}", piper_core::escape(topic.as_bytes()));
            }
        }
    }

    /// A message from the broker for local node `dest`.
    fn deliver(&mut self, dest: &Name, message: &[u8]) {
        self.counts.from_broker += 1;
        let Some(peer) = self.local.get(dest) else {
            self.counts.dropped_in += 1;
            self.warnings.warn(format_args!(
                "dropped a message for '{dest}': not a node this bridge offers"
            ));
            return;
        };
        let (from, payload) = match wire::decode(message) {
            Ok(decoded) => decoded,
            Err(why) => {
                self.counts.dropped_in += 1;
                self.warnings
                    .warn(format_args!("dropped a malformed message for '{dest}': {why}"));
                return;
            }
        };
        // From the sender's stand-in, so that the receiver sees its name;
        // a sender without one (unnamed, or not announced) sends unbound.
        let sent = match from.as_ref().and_then(|f| self.stand_ins.get(f)) {
            Some(stand_in) => stand_in.send_nowait(peer, payload),
            None => send_unbound_nowait(&self.cfg.dir, dest, payload),
        };
        match sent {
            Ok(()) => self.counts.delivered += 1,
            Err(e) => {
                self.counts.dropped_in += 1;
                if matches!(e, Error::PeerGone { .. } | Error::PeerNotFound { .. }) {
                    // Look again: a node that is gone is no longer offered.
                    self.rescan = true;
                }
                self.warnings.warn(format_args!("cannot deliver to '{dest}': {e}"));
            }
        }
    }

    /// Bridge `id` says which names it offers (none: it is gone).
    fn presence(&mut self, id: Name, payload: &[u8]) {
        if id == self.cfg.id {
            return;
        }
        let (names, invalid) = wire::parse_presence(payload);
        if invalid > 0 {
            self.warnings
                .warn(format_args!("bridge '{id}' announced {invalid} invalid names: ignored"));
        }
        if names.is_empty() {
            if self.hosts.remove(&id).is_some() {
                log::info!("bridge '{id}' is gone");
            }
        } else {
            log::info!("bridge '{id}' offers {}", join(&names));
            self.hosts.insert(id, names);
        }
        self.reconcile();
    }

    /// Binds a stand-in for every name another bridge offers and no local
    /// node has, and drops those no longer offered.
    fn reconcile(&mut self) {
        let mut wanted: BTreeMap<Name, Name> = BTreeMap::new();
        for (id, names) in &self.hosts {
            for name in names {
                if let Some(first) = wanted.insert(name.clone(), id.clone()) {
                    if &first != id && self.clashes.insert(name.clone()) {
                        log::warn!("'{name}' is offered by bridges '{first}' and '{id}': messages for it reach both");
                    }
                }
            }
        }
        let gone: Vec<Name> = self
            .stand_ins
            .keys()
            .filter(|n| !wanted.contains_key(n) || self.local.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(stand_in) = self.stand_ins.remove(&name) {
                self.by_fd.remove(&stand_in.as_fd().as_raw_fd());
                let _ = self.epoll.delete(stand_in.as_fd());
                log::debug!("dropped the stand-in for '{name}'");
            }
        }
        let mut added = Vec::new();
        for (name, id) in &wanted {
            if self.stand_ins.contains_key(name) || self.local.contains_key(name) {
                if self.local.contains_key(name) && self.clashes.insert(name.clone()) {
                    log::warn!("'{name}' is offered by bridge '{id}', but a node here has that name: messages for it stay here");
                }
                continue;
            }
            match self.bind_stand_in(name) {
                Ok(()) => added.push(name.clone()),
                Err(e) => {
                    // A node here that the last look at the directory missed
                    // has the name: look again, and the clash is said as such.
                    if matches!(e, Error::NameInUse { .. }) {
                        self.rescan();
                    }
                    if !self.local.contains_key(name) && self.clashes.insert(name.clone()) {
                        log::warn!("no stand-in for '{name}' (offered by bridge '{id}'): {e}");
                    }
                }
            }
        }
        if !added.is_empty() {
            log::info!("stand-ins bound: {}", join(&added));
        }
    }

    fn bind_stand_in(&mut self, name: &Name) -> Result<(), Error> {
        let node = Node::bind(&self.cfg.dir, name.clone())?;
        let fd = node.as_fd().as_raw_fd();
        let event = EpollEvent::new(EpollFlags::EPOLLIN, fd as u64);
        self.epoll
            .add(node.as_fd(), event)
            .map_err(|e| Error::io("watch", name, e))?;
        self.by_fd.insert(fd, name.clone());
        self.stand_ins.insert(name.clone(), node);
        Ok(())
    }

    // ---- the local half ----

    /// Takes what local nodes sent to stand-ins, and publishes it.
    fn pump(&mut self) {
        let mut events = [EpollEvent::empty(); 32];
        let mut buf = self.buf.take().unwrap_or_default();
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(0) => break,
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("cannot wait on the stand-ins: {e}");
                    break;
                }
            };
            for event in &events[..n] {
                let Some(name) = self.by_fd.get(&(event.data() as RawFd)).cloned() else {
                    continue;
                };
                // One datagram per ready stand-in per round, so that none
                // starves the others; the set is level-triggered, so the
                // next round finds what is left, and an empty round ends.
                self.take(&name, &mut buf);
            }
        }
        self.buf = Some(buf);
    }

    /// Takes one datagram from `name`'s stand-in, if there is one.
    fn take(&mut self, name: &Name, buf: &mut RecvBuf) {
        let Some(stand_in) = self.stand_ins.get(name) else {
            return;
        };
        let (creds, from, message) = match stand_in.try_recv(buf) {
            Ok(Some(d)) => {
                let from = d.from();
                (d.creds, from.clone(), wire::encode(from.as_ref(), d.payload))
            }
            Ok(None) => return,
            Err(e) => {
                self.counts.from_nodes += 1;
                self.counts.dropped_out += 1;
                self.warnings.warn(format_args!("dropped a datagram for '{name}': {e}"));
                return;
            }
        };
        self.counts.from_nodes += 1;
        if !allowed(creds, self.me, &self.cfg.allow_uids) {
            self.counts.refused += 1;
            let who = creds.map_or("an unknown sender".into(), |c| format!("uid {} (pid {})", c.uid, c.pid));
            self.warnings.warn(format_args!(
                "refused a datagram for '{name}' from {who}: not an allowed user"
            ));
            return;
        }
        if self.connected.is_none() {
            // Said when the broker was lost, and counted at the reconnection.
            self.counts.dropped_out += 1;
            self.outage_dropped += 1;
            return;
        }
        if let Some(from) = &from {
            // A sender not yet offered: offer it first, so that the other
            // side knows the name (and binds its stand-in) before this
            // datagram reaches it. The broker keeps one client's messages
            // in order.
            if !self.local.contains_key(from) && self.unoffered.insert(from.clone()) {
                self.rescan();
            }
        }
        let topic = self.cfg.topics.msg(name);
        match self.client.try_publish(topic, QoS::AtMostOnce, false, message) {
            Ok(()) => self.queued += 1,
            Err(e) => {
                self.counts.dropped_out += 1;
                self.warnings.warn(format_args!(
                    "dropped a datagram for '{name}': the broker connection is backed up ({e})"
                ));
            }
        }
    }

    fn tick(&mut self) {
        if self.directory_changed() || std::mem::take(&mut self.rescan) {
            self.rescan();
        }
        let now = Instant::now();
        let expired: Vec<Name> = (self.leaving.iter())
            .filter(|(_, since)| now >= **since + LINGER)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.leaving.remove(&name);
            let _ = self.client.try_unsubscribe(self.cfg.topics.msg(&name));
        }
        if std::mem::take(&mut self.announce_again) {
            self.announce();
        }
        if !self.ready_sent {
            self.ready();
        }
        self.status(false);
        if let Some(every) = self.cfg.watchdog {
            let now = Instant::now();
            if self.last_watchdog.is_none_or(|t| now >= t + every / 2) {
                self.last_watchdog = Some(now);
                self.notify("WATCHDOG=1");
            }
        }
    }

    fn directory_changed(&mut self) -> bool {
        if self.cfg.export.is_some() {
            return false;
        }
        let stamp = std::fs::metadata(self.cfg.dir.path()).and_then(|m| m.modified()).ok();
        stamp != std::mem::replace(&mut self.dir_stamp, stamp)
    }

    /// Works out the local nodes again; on a change, subscribes to the new
    /// ones' topics and tells the other bridges.
    fn rescan(&mut self) {
        self.rescan = false;
        let names: BTreeSet<Name> = match &self.cfg.export {
            Some(names) => names.clone(),
            None => match self.cfg.dir.list() {
                Ok(listing) => listing
                    .into_iter()
                    .filter(|l| l.liveness == Liveness::Live && !self.stand_ins.contains_key(&l.name))
                    .map(|l| l.name)
                    .collect(),
                Err(e) => {
                    self.warnings.warn(format_args!("cannot list the nodes: {e}"));
                    return;
                }
            },
        };
        let old: BTreeSet<Name> = self.local.keys().cloned().collect();
        if names == old {
            return;
        }
        let added: Vec<&Name> = names.difference(&old).collect();
        for name in &added {
            self.leaving.remove(*name);
        }
        let removed: Vec<&Name> = old.difference(&names).collect();
        if self.connected.is_some() {
            if !added.is_empty() {
                let filters = added
                    .iter()
                    .map(|name| SubscribeFilter::new(self.cfg.topics.msg(name), QoS::AtMostOnce));
                if let Err(e) = self.client.try_subscribe_many(filters) {
                    log::warn!("cannot subscribe: {e}");
                }
            }
            let now = Instant::now();
            for name in &removed {
                self.leaving.insert((*name).clone(), now);
            }
        }
        log::info!("offering {}", join(&names));
        self.local = names
            .iter()
            .filter_map(|name| Peer::new(&self.cfg.dir, name).ok().map(|peer| (name.clone(), peer)))
            .collect();
        self.announce();
        self.reconcile();
    }

    /// Publishes the local names (retained), if connected.
    fn announce(&mut self) {
        if self.connected.is_none() {
            return;
        }
        let topic = self.cfg.topics.hosts(&self.cfg.id);
        let names = wire::presence(self.local.keys());
        if self.client.try_publish(topic, QoS::AtLeastOnce, true, names).is_err() {
            self.announce_again = true;
        }
    }

    /// Queues the goodbye; false if there is no connection to say it on.
    /// What local nodes sent before the stop goes first.
    fn goodbye(&mut self) -> bool {
        self.pump();
        if self.connected.is_none() {
            return false;
        }
        let topic = self.cfg.topics.hosts(&self.cfg.id);
        let _ = self.client.try_publish(topic, QoS::AtLeastOnce, true, Vec::new());
        self.client.try_disconnect().is_ok()
    }

    fn ready(&mut self) {
        self.ready_sent = match &self.cfg.notifier {
            Some(n) => n.try_notify("READY=1").unwrap_or(true),
            None => true,
        };
    }

    /// `STATUS=` for the service manager, at most once a second unless `now`.
    fn status(&mut self, now: bool) {
        if self.cfg.notifier.is_none() {
            return;
        }
        let t = Instant::now();
        if !now && self.last_status.is_some_and(|last| t < last + STATUS_EVERY) {
            return;
        }
        self.last_status = Some(t);
        let c = &self.counts;
        let link = if self.connected.is_some() {
            "connected"
        } else {
            "no broker"
        };
        let status = format!(
            "STATUS={link}; from nodes {}, published {}, dropped {}, refused {}; \
             from the broker {}, delivered {}, dropped {}; {} local, {} remote, {} reconnects",
            c.from_nodes,
            c.published,
            c.dropped_out,
            c.refused,
            c.from_broker,
            c.delivered,
            c.dropped_in,
            self.local.len(),
            self.stand_ins.len(),
            c.reconnects
        );
        self.notify(&status);
    }

    fn notify(&self, state: &str) {
        if let Some(n) = &self.cfg.notifier {
            if let Err(e) = n.try_notify(state) {
                log::debug!("cannot notify the service manager: {e}");
            }
        }
    }
}

fn allowed(creds: Option<Credentials>, me: u32, extra: &[u32]) -> bool {
    creds.is_some_and(|c| c.uid == me || c.uid == 0 || extra.contains(&c.uid))
}

fn join<'a>(names: impl IntoIterator<Item = &'a Name>) -> String {
    let names: Vec<&str> = names.into_iter().map(Name::as_str).collect();
    if names.is_empty() {
        "no nodes".into()
    } else {
        names.join(", ")
    }
}
