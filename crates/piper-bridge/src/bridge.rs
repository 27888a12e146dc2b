//! The bridge itself: one thread, one event loop, carrying out what the
//! cores decide (`link`, `presence`, `pace`, `counts`).
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
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::epoll::EpollEvent;
use nix::sys::signal::Signal;
use piper_cli::RateLimit;
use piper_core::notify::Notifier;
use piper_core::{send_unbound_nowait, Error, Liveness, Name, Peer, RecvBuf, SocketDir};
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, Filter, Packet, PubAckReason, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, StateError};
use rumqttc::Outgoing;
use tokio::io::unix::AsyncFd;

use crate::counts::{Counts, Out};
use crate::hold::Hold;
use crate::link::{self, Connected, Failed};
use crate::pace::{self, Linger, Watchdog};
use crate::presence::{self, Presence};
use crate::standins::StandIns;
use crate::twin::Twin;
use crate::wire::{self, Epoch, Topic, Topics};
use piper_cli::signals::Blocked as Signals;

/// How often the loop looks at the directory, the offers, the status and
/// the watchdog.
const TICK: Duration = Duration::from_millis(100);
/// How long the broker is given to take the goodbye at exit.
const GOODBYE: Duration = Duration::from_secs(1);
/// Presence messages and subscriptions awaiting the broker's answer, at
/// most: a large offer goes out in pieces, and datagrams are not held up
/// behind it.
const WINDOW: usize = 32;
/// How long the broker may take to send back a connection's barrier
/// before the bridge says it may not be allowed to read.
const SYNC_WAIT: Duration = Duration::from_secs(5);
/// Subscription filters per SUBSCRIBE packet.
const FILTERS_PER_PACKET: usize = 256;
/// Room for a PUBLISH packet's header and properties beside its topic
/// and payload.
const PUBLISH_OVERHEAD: usize = 16;

/// What a bridge says when another has its id.
const CLASH: &str =
    "another bridge has this bridge's id, and the broker gave it our place: give each bridge of a ring its own --id";

/// What the bridge is told at start.
#[derive(Debug)]
pub struct Config {
    /// The local socket directory.
    pub dir: SocketDir,
    /// The ring's topics.
    pub topics: Topics,
    /// This bridge's id.
    pub id: Name,
    /// This run's epoch.
    pub epoch: Epoch,
    /// The local nodes to offer, or `None` to follow the directory.
    pub export: Option<BTreeSet<Name>>,
    /// Whose datagrams are forwarded: ours, root's and `--allow-uid`.
    pub trust: piper_core::trust::Policy,
    /// The most remote names stood in for.
    pub max_remote: usize,
    /// The largest packet this bridge takes (the broker must respect it).
    pub max_packet: usize,
    /// The broker's TCP port.
    pub broker_port: u16,
    /// The service manager, if any.
    pub notifier: Option<Notifier>,
    /// Its watchdog interval, if it wants one.
    pub watchdog: Option<Duration>,
    /// The `--metrics` endpoint, if asked for.
    pub metrics: Option<piper_cli::metrics::Server>,
}

/// Why the bridge stopped.
#[derive(Debug)]
pub enum Stopped {
    /// A terminating signal.
    Signal(Signal),
    /// The broker refused us (credentials, authorisation, its certificate):
    /// retrying is pointless.
    Refused(String),
    /// Another bridge has this bridge's id.
    Clash(String),
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
    let bridge = RefCell::new(Bridge::new(cfg, client, StandIns::new()?));
    bridge.borrow_mut().rescan();
    bridge.borrow_mut().ready();
    let io = |e: tokio::io::unix::AsyncFdRegisterError<RawFd>| Error::io("watch", "the event loop's descriptors", e);
    // SAFETY: both descriptors belong to objects (`bridge`'s epoll set and
    // `signals`) that stay open, unchanged, until after these two are
    // dropped below.
    let stand_ins = unsafe { AsyncFd::register(bridge.borrow().stand_ins.raw_fd()) }.map_err(io)?;
    // SAFETY: as above.
    let signal_fd = unsafe { AsyncFd::register(signals.as_fd().as_raw_fd()) }.map_err(io)?;
    let metrics_fd = bridge.borrow().metrics.as_ref().map(|m| m.as_fd().as_raw_fd());
    // SAFETY: the metrics server lives in `bridge` until the end of this
    // function, after this registration is dropped below.
    let metrics_fd = metrics_fd
        .map(|fd| unsafe { AsyncFd::register(fd) })
        .transpose()
        .map_err(io)?;

    let mqtt = async {
        loop {
            let deadline = bridge.borrow().link.deadline();
            let event = match deadline {
                Some(at) => match tokio::time::timeout_at(at.into(), eventloop.poll()).await {
                    Ok(event) => event,
                    Err(_) if bridge.borrow_mut().was_paused() => continue,
                    Err(_) => {
                        // The connection is given up: whatever the client
                        // was writing goes with it.
                        eventloop.clean();
                        let silent = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("it said nothing for {:?}", link::DEAD),
                        );
                        Err(ConnectionError::Io(silent))
                    }
                },
                None => eventloop.poll().await,
            };
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
                ready = async {
                    match &metrics_fd {
                        Some(fd) => fd.readable().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Ok(mut guard) = ready {
                        bridge.borrow_mut().serve_metrics();
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
    drop(metrics_fd);

    // Say goodbye: this run is over, so the other bridges drop its names at
    // once (a clean disconnect does not fire the last will), then the
    // disconnect. Bounded: a broker that is away is not waited for.
    if matches!(stopped, Stopped::Signal(_)) && bridge.borrow_mut().goodbye() {
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
    bridge.finish();
    Ok((stopped, bridge.counts))
}

/// What the MQTT half does next.
enum Next {
    Go,
    Wait(Duration),
    Stop(Stopped),
}

/// A request for the broker that it answers (QoS 1, or a subscription
/// change): sent as the window allows.
#[derive(Debug)]
enum Control {
    Retain(String, Vec<u8>),
    Send(String, Vec<u8>),
    Subscribe(Vec<Filter>),
    Unsubscribe(String),
}

#[derive(Debug)]
struct Bridge {
    cfg: Config,
    client: AsyncClient,
    link: link::State,
    /// The largest packet the broker takes from us (its CONNACK says).
    broker_max: usize,
    /// Requests the broker answers, waiting for room in the window.
    outbox: VecDeque<Control>,
    /// Of those, sent and not answered yet.
    in_window: usize,
    /// How many may be: [`WINDOW`], or less if the broker wants.
    window: usize,
    /// The filters of the subscriptions sent, until the client names their
    /// packet ids; then by packet id, until the broker answers.
    subs_sent: VecDeque<Vec<String>>,
    subs: HashMap<u16, Vec<String>>,
    /// The first connection is made, and not said yet.
    first: bool,
    /// Another run with this bridge's id.
    twin: Twin,
    /// The barrier this connection waits for.
    generation: u64,
    synced: bool,
    /// The barrier is late, and that was said.
    sync_said: bool,
    /// The broker refused a publish on this connection, and that was said.
    refusal_said: bool,
    /// Local nodes offered to the other bridges, each with its address.
    local: BTreeMap<Name, Peer>,
    linger: Linger,
    presence: Presence,
    /// The offers changed: reconcile the stand-ins on the next tick.
    dirty: bool,
    stand_ins: StandIns,
    /// Stand-in slots ready to read, reused.
    ready: Vec<usize>,
    /// The directory changed, or a node was found gone: list it again.
    rescan: bool,
    dir_stamp: Option<SystemTime>,
    /// Senders seen that were not offered at the time: looked for once each.
    unoffered: BTreeSet<Name>,
    /// The datagram kept while the broker is away: its name, topic and
    /// message.
    hold: Hold<(Name, String, Vec<u8>)>,
    /// Names said to clash: said once each.
    clashes: BTreeSet<Name>,
    /// Names past the cap, as last said.
    over_cap: usize,
    ready_sent: bool,
    /// When the last tick ran: a long gap means the bridge was not running.
    last_tick: Option<Instant>,
    status: pace::Status,
    watchdog: Option<Watchdog>,
    counts: Counts,
    warnings: RateLimit,
    buf: Option<RecvBuf>,
    /// The `--metrics` endpoint, served from this loop.
    metrics: Option<piper_cli::metrics::Server>,
}

impl Bridge {
    fn new(mut cfg: Config, client: AsyncClient, stand_ins: StandIns) -> Bridge {
        Bridge {
            metrics: cfg.metrics.take(),
            presence: Presence::new(cfg.id.clone()),
            watchdog: cfg.watchdog.map(Watchdog::new),
            broker_max: cfg.max_packet,
            cfg,
            client,
            link: link::State::new(),
            outbox: VecDeque::new(),
            in_window: 0,
            window: WINDOW,
            subs_sent: VecDeque::new(),
            subs: HashMap::new(),
            first: false,
            twin: Twin::default(),
            generation: 0,
            synced: false,
            sync_said: false,
            refusal_said: false,
            local: BTreeMap::new(),
            linger: Linger::default(),
            dirty: false,
            stand_ins,
            ready: Vec::new(),
            rescan: true,
            dir_stamp: None,
            unoffered: BTreeSet::new(),
            hold: Hold::default(),
            clashes: BTreeSet::new(),
            over_cap: 0,
            ready_sent: false,
            last_tick: None,
            status: pace::Status::default(),
            counts: Counts::default(),
            warnings: RateLimit::new(),
            buf: Some(RecvBuf::new()),
        }
    }

    // ---- the MQTT half ----

    fn on_mqtt(&mut self, event: Result<Event, ConnectionError>) -> Next {
        match event {
            Ok(Event::Incoming(packet)) => {
                self.link.heard(Instant::now());
                self.incoming(packet);
            }
            // QoS 0 publishes are the datagrams; the rest goes at QoS 1.
            Ok(Event::Outgoing(Outgoing::Publish(0))) => {
                if self.link.sent() {
                    self.counts.published();
                }
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                if let Some(filters) = self.subs_sent.pop_front() {
                    self.subs.insert(pkid, filters);
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                if let Some(why) = fatal(&e) {
                    return Next::Stop(why);
                }
                if self.twin.lost(Instant::now(), self.link.is_up()) {
                    return Next::Stop(Stopped::Clash(CLASH.into()));
                }
                return Next::Wait(self.lost(e));
            }
        }
        self.flush_outbox();
        Next::Go
    }

    fn incoming(&mut self, packet: Packet) {
        match packet {
            Packet::ConnAck(ack) => {
                let max = ack.properties.as_ref().and_then(|p| p.max_packet_size);
                self.broker_max = max.map_or(self.cfg.max_packet, |m| m as usize);
                give_up_late_data(self.cfg.broker_port);
                // Below the broker's Receive Maximum: the client reuses
                // packet ids past it, and an id still in use stalls it.
                let receive = ack.properties.as_ref().and_then(|p| p.receive_max);
                self.window = receive.map_or(WINDOW, |r| usize::from(r).saturating_sub(1).clamp(1, WINDOW));
                self.connected();
            }
            Packet::Publish(p) => match std::str::from_utf8(&p.topic) {
                Ok(topic) => self.on_publish(topic, &p.payload),
                Err(_) => self.ignore(format_args!("ignored a message on a topic that is not UTF-8")),
            },
            Packet::PubAck(ack) => {
                self.answered();
                let refused = !matches!(ack.reason, PubAckReason::Success | PubAckReason::NoMatchingSubscribers);
                // Once per connection: every beat would say it again.
                if refused && !std::mem::replace(&mut self.refusal_said, true) {
                    let id = &self.cfg.id;
                    let own = self.cfg.topics.host(id).replace(&format!("hosts/{id}"), "");
                    self.warnings.warn(format_args!(
                        "the broker refused a presence message ({:?}): bridge '{id}' needs to write {own}hosts/{id}, {own}names/{id}/#, {own}ids/{id}, {own}sync/{id}, {own}beat/{id} and {own}msg/#",
                        ack.reason,
                    ));
                }
            }
            Packet::SubAck(ack) => {
                self.answered();
                let filters = self.subs.remove(&ack.pkid).unwrap_or_default();
                for (k, code) in ack.return_codes.iter().enumerate() {
                    if !matches!(code, SubscribeReasonCode::Success(_)) {
                        let filter = filters.get(k).map_or("?", String::as_str);
                        self.warnings.warn(format_args!(
                            "the broker refused the subscription to {filter}: {code:?}"
                        ));
                    }
                }
            }
            Packet::UnsubAck(_) => self.answered(),
            _ => {}
        }
    }

    /// A request in the window was answered.
    fn answered(&mut self) {
        self.in_window = self.in_window.saturating_sub(1);
    }

    fn connected(&mut self) {
        match self.link.connected(Instant::now()) {
            // Said once the broker has taken everything this connection
            // starts with (the barrier): from then on, what is published
            // for our nodes reaches them.
            Connected::First => self.first = true,
            Connected::Again { outage, dropped } => {
                self.counts.reconnects += 1;
                self.warnings.warn(format_args!(
                    "reconnected to the broker after {:.1}s; {dropped} datagrams for remote nodes were dropped meanwhile",
                    outage.as_secs_f64(),
                ));
            }
        }
        self.linger.clear();
        // A clean start: the requests of the last connection are gone, and
        // subscriptions and offers are made anew.
        self.outbox.clear();
        self.in_window = 0;
        self.subs_sent.clear();
        self.subs.clear();
        self.generation = self.presence.reconnected();
        self.synced = false;
        self.sync_said = false;
        self.refusal_said = false;
        let [hosts, names] = self.cfg.topics.presence_filters();
        // Our own offers are not echoed back; the barrier is. At QoS 0:
        // the broker then sends a large offer straight on instead of
        // queueing it (and dropping past its queue's limit); a connection
        // that breaks is followed by a full rebuild anyway.
        let quiet = |path: String| Filter {
            nolocal: true,
            ..Filter::new(path, QoS::AtMostOnce)
        };
        let barrier = Filter::new(self.cfg.topics.sync(&self.cfg.id), QoS::AtLeastOnce);
        // Not `nolocal`: a twin has our client id, and its runs must reach us.
        let runs = Filter::new(self.cfg.topics.id(&self.cfg.id), QoS::AtMostOnce);
        self.outbox
            .push_back(Control::Subscribe(vec![quiet(hosts), quiet(names), barrier, runs]));
        self.outbox.push_back(Control::Retain(
            self.cfg.topics.id(&self.cfg.id),
            wire::epoch(self.cfg.epoch),
        ));
        let names: Vec<Name> = self.local.keys().cloned().collect();
        self.subscribe(&names);
        self.outbox.push_back(Control::Retain(
            self.cfg.topics.host(&self.cfg.id),
            wire::epoch(self.cfg.epoch),
        ));
        for name in &names {
            self.offer(name, true);
        }
        // Last: when it comes back, the broker has done all of the above.
        self.outbox.push_back(Control::Send(
            self.cfg.topics.sync(&self.cfg.id),
            self.generation.to_string().into_bytes(),
        ));
        self.flush_outbox();
        self.release();
        self.report();
    }

    /// The connection is gone (or could not be made): what was queued for
    /// it is lost, and counted so.
    fn lost(&mut self, e: ConnectionError) -> Duration {
        let why = describe(&e);
        match self.link.failed(Instant::now()) {
            Failed::Lost { dropped, wait } => {
                self.counts.lost(dropped);
                self.warnings.warn(format_args!(
                    "lost the broker ({why}); reconnecting, and dropping datagrams for remote nodes until it is back"
                ));
                log::debug!("reconnecting in {:.1}s", wait.as_secs_f64());
                self.report();
                wait
            }
            Failed::Attempt { wait } => {
                // Closed after the TCP handshake and before any answer: what
                // a broker that speaks only MQTT 3.1.1 does (its refusal is
                // not MQTT 5), among other things; said, and tried again.
                let why = match e {
                    ConnectionError::MqttState(StateError::ConnectionAborted) => {
                        "it closed the connection before answering: does it speak MQTT 5? piper-bridge needs it".into()
                    }
                    _ => why,
                };
                self.warnings.warn(format_args!(
                    "cannot reach the broker ({why}); trying again in {:.1}s",
                    wait.as_secs_f64()
                ));
                wait
            }
        }
    }

    /// Queues a presence message for `name`: offered in this run, or not.
    fn offer(&mut self, name: &Name, offered: bool) {
        let payload = if offered {
            wire::epoch(self.cfg.epoch)
        } else {
            Vec::new()
        };
        self.outbox
            .push_back(Control::Retain(self.cfg.topics.offer(&self.cfg.id, name), payload));
    }

    /// Queues the subscriptions to `names`' topics.
    fn subscribe(&mut self, names: &[Name]) {
        for chunk in names.chunks(FILTERS_PER_PACKET) {
            let filters = chunk
                .iter()
                .map(|n| Filter::new(self.cfg.topics.msg(n), QoS::AtMostOnce))
                .collect();
            self.outbox.push_back(Control::Subscribe(filters));
        }
    }

    /// Sends what the window has room for.
    fn flush_outbox(&mut self) {
        if !self.link.is_up() {
            return;
        }
        while self.in_window < self.window {
            let Some(control) = self.outbox.pop_front() else { break };
            let sent = match &control {
                Control::Retain(topic, payload) => {
                    self.client
                        .try_publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone())
                }
                Control::Send(topic, payload) => {
                    self.client
                        .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                }
                Control::Subscribe(filters) => {
                    let sent = self.client.try_subscribe_many(filters.iter().cloned());
                    if sent.is_ok() {
                        self.subs_sent
                            .push_back(filters.iter().map(|f| f.path.clone()).collect());
                    }
                    sent
                }
                Control::Unsubscribe(topic) => self.client.try_unsubscribe(topic.clone()),
            };
            if sent.is_err() {
                // The client's queue is full: try again on the next event.
                self.outbox.push_front(control);
                break;
            }
            self.in_window += 1;
        }
    }

    fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        match self.cfg.topics.parse(topic) {
            Topic::Msg(Ok(dest)) => self.deliver(&dest, payload),
            Topic::Id(Ok(id)) if id == self.cfg.id => {
                if let Ok(Some(epoch)) = wire::parse_epoch(payload) {
                    self.twin.epoch(epoch, self.cfg.epoch, Instant::now());
                }
            }
            Topic::Host(Ok(id)) => match wire::parse_epoch(payload) {
                Ok(epoch) => self.dirty |= self.presence.host(id, epoch),
                Err(why) => self.ignore(format_args!("ignored the state of bridge '{id}': {why}")),
            },
            Topic::Offer(Ok((id, name))) => match wire::parse_epoch(payload) {
                Ok(epoch) if id == self.cfg.id => self.own_offer(name, epoch),
                Ok(epoch) => self.dirty |= self.presence.offer(id, name, epoch),
                Err(why) => self.ignore(format_args!("ignored bridge '{id}''s offer of '{name}': {why}")),
            },
            Topic::Sync(Ok(id)) if id == self.cfg.id => {
                let generation = std::str::from_utf8(payload).ok().and_then(|g| g.parse().ok());
                if generation == Some(self.generation) && !self.synced {
                    self.synced = true;
                    if std::mem::take(&mut self.first) {
                        log::info!("connected to the broker");
                    }
                    self.dirty |= self.presence.synced(self.generation);
                    self.reconcile();
                }
            }
            Topic::Host(Err(raw)) | Topic::Offer(Err(raw)) => {
                let raw = piper_core::escape(raw.as_bytes());
                self.ignore(format_args!("ignored the presence of '{raw}': not a valid id or name"));
            }
            // Only the topics of the nodes offered here are subscribed to,
            // and their names are valid: anything else is not for us.
            Topic::Msg(Err(_)) | Topic::Sync(_) | Topic::Id(_) | Topic::Other => {
                log::debug!("ignored a message on {}", piper_core::escape(topic.as_bytes()));
            }
        }
    }

    /// A message that is not for a bridge: dropped, counted, said.
    fn ignore(&mut self, what: std::fmt::Arguments<'_>) {
        self.counts.ignored += 1;
        self.warnings.warn(what);
    }

    /// What the broker holds of this bridge's own offers: an earlier run's,
    /// or one no longer made, is made right (offered in this run, or
    /// withdrawn), so that nothing stale stays. It may be the retained
    /// copy the subscription brought, sent before this run's offer
    /// replaced it: the answer is this run's state either way.
    fn own_offer(&mut self, name: Name, epoch: Option<Epoch>) {
        let offered = self.local.contains_key(&name);
        if epoch.is_some_and(|e| e != self.cfg.epoch || !offered) {
            self.offer(&name, offered);
            self.flush_outbox();
        }
    }

    /// A message from the broker for local node `dest`.
    fn deliver(&mut self, dest: &Name, message: &[u8]) {
        if !self.local.contains_key(dest) {
            self.counts.brought(false);
            self.warnings.warn(format_args!(
                "dropped a message for '{dest}': not a node this bridge offers"
            ));
            return;
        }
        let (from, payload) = match wire::decode(message) {
            Ok(decoded) => decoded,
            Err(why) => {
                self.counts.brought(false);
                self.warnings
                    .warn(format_args!("dropped a malformed message for '{dest}': {why}"));
                return;
            }
        };
        // A sender whose offer came just before its first datagram: its
        // stand-in is bound now, so that the receiver sees its name.
        if self.dirty && from.as_ref().is_some_and(|f| !self.stand_ins.contains(f)) {
            self.reconcile();
        }
        let Some(peer) = self.local.get(dest) else {
            // Gone in the look at the directory that reconciling made.
            self.counts.brought(false);
            return;
        };
        // From the sender's stand-in, so that the receiver sees its name;
        // a sender without one (unnamed, or not announced) sends unbound.
        let sent = match from.as_ref().and_then(|f| self.stand_ins.get(f)) {
            Some(stand_in) => stand_in.send_nowait(peer, payload),
            None => send_unbound_nowait(&self.cfg.dir, dest, payload),
        };
        self.counts.brought(sent.is_ok());
        if let Err(e) = sent {
            if matches!(e, Error::PeerGone { .. } | Error::PeerNotFound { .. }) {
                // Look again: a node that is gone is no longer offered.
                self.rescan = true;
            }
            self.warnings.warn(format_args!("cannot deliver to '{dest}': {e}"));
        }
    }

    /// Binds a stand-in for every name another bridge offers and no local
    /// node has (up to the cap), and drops those no longer offered.
    fn reconcile(&mut self) {
        self.dirty = false;
        let wanted = self.presence.wanted(self.cfg.max_remote);
        for (name, first, second) in &wanted.shared {
            if self.clashes.insert(name.clone()) {
                self.warnings.warn(format_args!(
                    "'{name}' is offered by bridges '{first}' and '{second}': messages for it reach both"
                ));
            }
        }
        if wanted.over_cap != self.over_cap {
            self.over_cap = wanted.over_cap;
            if wanted.over_cap > 0 {
                self.warnings.warn(format_args!(
                    "{} remote names past --max-remote {}: no stand-ins for them",
                    wanted.over_cap, self.cfg.max_remote
                ));
            }
        }
        let local: BTreeSet<Name> = self.local.keys().cloned().collect();
        for (name, id) in &wanted.names {
            if local.contains(name) && self.clashes.insert(name.clone()) {
                self.warnings.warn(format_args!(
                    "'{name}' is offered by bridge '{id}', but a node here has that name: messages for it stay here"
                ));
            }
        }
        let (bind, drop) = presence::plan(&wanted.names, self.stand_ins.names(), &local);
        let mut buf = self.buf.take().unwrap_or_default();
        for name in &drop {
            // What a local node sent to a name no longer offered has nowhere
            // to go: dropped, and counted.
            let unread = self.stand_ins.drop_name(name, &mut buf);
            for _ in 0..unread {
                self.counts.took(Out::Dropped);
            }
            if unread > 0 {
                self.warnings.warn(format_args!(
                    "dropped {unread} datagram(s) for '{name}': it is no longer offered"
                ));
            }
            log::debug!("dropped the stand-in for '{name}'");
        }
        self.buf = Some(buf);
        let mut added = Vec::new();
        for name in bind {
            match self.stand_ins.bind(&self.cfg.dir, &name) {
                Ok(()) => added.push(name),
                Err(e) => {
                    // A node here that the last look at the directory missed
                    // has the name: look again, and the clash is said as such.
                    if matches!(e, Error::NameInUse { .. }) {
                        self.rescan();
                    }
                    if !self.local.contains_key(&name) && self.clashes.insert(name.clone()) {
                        let id = wanted.names.get(&name).map_or("?", Name::as_str);
                        self.warnings
                            .warn(format_args!("no stand-in for '{name}' (offered by bridge '{id}'): {e}"));
                    }
                }
            }
        }
        if !added.is_empty() {
            log::info!("stand-ins bound: {}", join(&added));
        }
    }

    // ---- the local half ----

    /// Takes what local nodes sent to stand-ins, and publishes it.
    fn pump(&mut self) {
        let mut events = [EpollEvent::empty(); 32];
        let mut buf = self.buf.take().unwrap_or_default();
        let mut ready = std::mem::take(&mut self.ready);
        loop {
            self.stand_ins.ready(&mut events, &mut ready);
            if ready.is_empty() {
                break;
            }
            // One datagram per ready stand-in per round, so that none
            // starves the others; the set is level-triggered, so the next
            // round finds what is left, and an empty round ends.
            for &slot in &ready {
                self.take(slot, &mut buf);
            }
        }
        self.ready = ready;
        self.buf = Some(buf);
    }

    /// Takes one datagram from the stand-in in `slot`, if there is one.
    fn take(&mut self, slot: usize, buf: &mut RecvBuf) {
        let Some(stand_in) = self.stand_ins.slot(slot) else {
            return;
        };
        let name = stand_in.name().clone();
        let (creds, from, message) = match stand_in.try_recv(buf) {
            Ok(Some(d)) => {
                let from = d.from();
                (d.creds, from.clone(), wire::encode(from.as_ref(), d.payload))
            }
            Ok(None) => return,
            Err(e) => {
                self.counts.took(Out::Dropped);
                self.warnings.warn(format_args!("dropped a datagram for '{name}': {e}"));
                return;
            }
        };
        if !self.cfg.trust.trusts(creds) {
            self.counts.took(Out::Refused);
            let who = creds.map_or("an unknown sender".into(), |c| format!("uid {} (pid {})", c.uid, c.pid));
            self.warnings.warn(format_args!(
                "refused a datagram for '{name}' from {who}: not an allowed user"
            ));
            return;
        }
        let topic = self.cfg.topics.msg(&name);
        if topic.len() + message.len() + PUBLISH_OVERHEAD > self.broker_max {
            self.counts.took(Out::Dropped);
            self.warnings.warn(format_args!(
                "dropped a datagram for '{name}': {} bytes, more than the broker takes ({} bytes a packet)",
                message.len(),
                self.broker_max
            ));
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
        self.counts.took(Out::Queued);
        if !self.link.is_up() {
            // Kept, and the one it supersedes dropped (said when the broker
            // was lost, and counted at the reconnection).
            if self.hold.keep((name, topic, message), Instant::now()).is_some() {
                self.counts.lost(1);
                self.link.dropped();
            }
            return;
        }
        if self.hold.supersede().is_some() {
            self.counts.lost(1);
        }
        self.publish(name, topic, message);
    }

    /// Publishes a datagram for `name`, counted as taken.
    fn publish(&mut self, name: Name, topic: String, message: Vec<u8>) {
        match self.client.try_publish(topic, QoS::AtMostOnce, false, message) {
            Ok(()) => self.link.queued(),
            Err(e) => {
                self.counts.lost(1);
                self.warnings.warn(format_args!(
                    "dropped a datagram for '{name}': the broker connection is backed up ({e})"
                ));
            }
        }
    }

    /// Sends the datagram kept while the broker was away, if it is time.
    fn release(&mut self) {
        if let link::Link::Up { since, .. } = self.link.link() {
            if let Some((name, topic, message)) = self.hold.due(Instant::now(), since) {
                log::info!("sent the datagram for '{name}' kept while the broker was away");
                self.publish(name, topic, message);
            }
        }
    }

    /// Whether the bridge itself did not run for a while (stopped, or
    /// starved): then the broker's silence meanwhile is not held against
    /// it.
    fn was_paused(&mut self) -> bool {
        let now = Instant::now();
        let paused = self.last_tick.is_some_and(|t| now > t + 5 * TICK);
        if paused {
            self.link.paused(now);
        }
        self.last_tick = Some(now);
        paused
    }

    fn tick(&mut self) {
        self.was_paused();
        let now = Instant::now();
        // Also on the tick: a scrape that ran out of time is closed within
        // one, and the runtime's edge-triggered wake-up cannot leave one
        // unanswered (a look at an epoll set with nothing ready costs a
        // system call).
        self.serve_metrics();
        if self.link.beat_due(now) && self.outbox.is_empty() && self.in_window < self.window {
            self.outbox
                .push_back(Control::Send(self.cfg.topics.beat(&self.cfg.id), Vec::new()));
        }
        if self.directory_changed() || std::mem::take(&mut self.rescan) {
            self.rescan();
        }
        for name in self.linger.expired(now) {
            self.outbox.push_back(Control::Unsubscribe(self.cfg.topics.msg(&name)));
        }
        if self.dirty {
            self.reconcile();
        }
        self.release();
        if let link::Link::Up { since, .. } = self.link.link() {
            if !self.synced && !self.sync_said && now >= since + SYNC_WAIT {
                // What the broker does not let us read, it drops without a
                // word: our own barrier is the one message we know is due.
                self.sync_said = true;
                let topic = self.cfg.topics.sync(&self.cfg.id);
                self.warnings.warn(format_args!(
                    "the broker has not sent back this bridge's own message on {topic} within {SYNC_WAIT:?}: \
                     may bridge '{}' read {}?",
                    self.cfg.id,
                    topic.replace(&format!("sync/{}", self.cfg.id), "#"),
                ));
            }
        }
        self.flush_outbox();
        if !self.ready_sent {
            self.ready();
        }
        self.report();
        if self.watchdog.as_mut().is_some_and(|w| w.due(now)) {
            self.notify("WATCHDOG=1");
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
            // The names, each probed unless it is a stand-in of ours (not
            // a full listing: the owners' pids are not needed, and finding
            // each costs a walk of every process's open files).
            None => match self.cfg.dir.socket_names() {
                Ok(names) => (names.into_iter())
                    .filter(|name| {
                        !self.stand_ins.contains(name) && self.cfg.dir.probe(name).is_ok_and(|l| l == Liveness::Live)
                    })
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
        let added: Vec<Name> = names.difference(&old).cloned().collect();
        let removed: Vec<Name> = old.difference(&names).cloned().collect();
        log::info!("offering {}", join(&names));
        self.local = names
            .iter()
            .filter_map(|name| Peer::new(&self.cfg.dir, name).ok().map(|peer| (name.clone(), peer)))
            .collect();
        for name in &added {
            self.linger.back(name);
        }
        if self.link.is_up() {
            self.subscribe(&added);
            let now = Instant::now();
            for name in &removed {
                self.linger.left(name.clone(), now);
            }
            for name in &added {
                self.offer(name, true);
            }
            for name in &removed {
                self.offer(name, false);
            }
            self.flush_outbox();
        }
        self.reconcile();
    }

    /// Queues the goodbye; false if there is no connection to say it on.
    /// What local nodes sent before the stop goes first.
    fn goodbye(&mut self) -> bool {
        self.pump();
        if !self.link.is_up() {
            return false;
        }
        // At QoS 0: it needs no packet id, so nothing still in flight can
        // hold it back behind the disconnect.
        let topic = self.cfg.topics.host(&self.cfg.id);
        let _ = self.client.try_publish(topic, QoS::AtMostOnce, true, Vec::new());
        self.client.try_disconnect().is_ok()
    }

    /// At exit: what is still queued is dropped, and the manager told.
    fn finish(&mut self) {
        if let link::Link::Up { queued, .. } = self.link.link() {
            self.counts.lost(queued);
        }
        if self.hold.supersede().is_some() {
            self.counts.lost(1);
        }
        debug_assert!(self.counts.balanced(0), "{:?}", self.counts);
        self.warnings.finish();
        self.notify("STOPPING=1");
    }

    fn ready(&mut self) {
        self.ready_sent = match &self.cfg.notifier {
            Some(n) => n.try_notify("READY=1").unwrap_or(true),
            None => true,
        };
    }

    /// `STATUS=` for the service manager, on a change, at most once a second.
    fn report(&mut self) {
        if self.cfg.notifier.is_none() {
            return;
        }
        let c = &self.counts;
        let link = if self.link.is_up() { "connected" } else { "no broker" };
        let text = format!(
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
        if let Some(text) = self.status.offer(Instant::now(), text) {
            self.notify(&text);
        }
    }

    /// Answers the scrapes that are complete.
    fn serve_metrics(&mut self) {
        let Some(mut server) = self.metrics.take() else { return };
        let now = Instant::now();
        server.serve(now, || {
            let (up, since) = match self.link.link() {
                link::Link::Never => (false, None),
                link::Link::Up { since, .. } => (true, Some(since)),
                link::Link::Down { since, .. } => (false, Some(since)),
            };
            let wall = SystemTime::now();
            let seen = crate::counts::Seen {
                ring: self.cfg.topics.ring(),
                id: self.cfg.id.as_str(),
                up,
                since: since.map(|at| piper_cli::metrics::unix_seconds(at, now, wall)),
                local: self.local.len(),
                remote: self.stand_ins.len(),
            };
            crate::counts::metrics(&self.counts, seen)
        });
        self.metrics = Some(server);
    }

    fn notify(&self, state: &str) {
        if let Some(n) = &self.cfg.notifier {
            if let Err(e) = n.try_notify(state) {
                log::debug!("cannot notify the service manager: {e}");
            }
        }
    }
}

/// Makes the broker connection's socket (TCP, to `port`) give up what it
/// could not deliver instead of delivering it late: closed with a reset
/// (`SO_LINGER` 0), so that nothing written before a loss reaches the
/// broker after it, and aborted by the kernel once data has waited
/// [`link::DEAD`] unacknowledged (`TCP_USER_TIMEOUT`). rumqttc does not
/// hand its socket out, so it is found among the process's descriptors.
fn give_up_late_data(port: u16) {
    use nix::sys::socket::{getpeername, getsockopt, setsockopt, sockopt, SockType, SockaddrLike, SockaddrStorage};
    use std::os::fd::BorrowedFd;
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in fds.flatten() {
        let Some(raw) = entry.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is open (listed just now) and stays so
        // for these few calls: the runtime's one thread is here, and its
        // blocking pool (name lookups) is idle once connected.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        if getsockopt(&fd, sockopt::SockType) != Ok(SockType::Stream) {
            continue;
        }
        let Ok(peer) = getpeername::<SockaddrStorage>(fd.as_raw_fd()) else {
            continue;
        };
        let peer_port = (peer.as_sockaddr_in().map(|a| a.port())).or_else(|| peer.as_sockaddr_in6().map(|a| a.port()));
        if peer_port != Some(port) || peer.family().is_none() {
            continue;
        }
        let reset = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let timeout = link::DEAD.as_millis() as u32;
        if let Err(e) =
            setsockopt(&fd, sockopt::Linger, &reset).and_then(|()| setsockopt(&fd, sockopt::TcpUserTimeout, &timeout))
        {
            log::debug!("cannot set the broker socket's options: {e}");
        }
    }
}

/// Why a connection error ends the bridge, if it does: the broker said no
/// to who we are, or to this id being ours.
fn fatal(e: &ConnectionError) -> Option<Stopped> {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword
            | ConnectReturnCode::NotAuthorized
            | ConnectReturnCode::Banned
            | ConnectReturnCode::BadAuthenticationMethod
            | ConnectReturnCode::ClientIdentifierNotValid
            | ConnectReturnCode::BadClientId => {
                Some(Stopped::Refused(format!("the broker refused the connection: {code:?}")))
            }
            ConnectReturnCode::UnsupportedProtocolVersion | ConnectReturnCode::RefusedProtocolVersion => Some(
                Stopped::Refused("the broker does not speak MQTT 5 (piper-bridge needs it)".into()),
            ),
            _ => None,
        },
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
            ..
        }) => Some(Stopped::Clash(CLASH.into())),
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code: DisconnectReasonCode::NotAuthorized,
            ..
        }) => Some(Stopped::Refused(
            "the broker ended the connection: NotAuthorized".into(),
        )),
        ConnectionError::Tls(tls) => certificate(tls).map(|why| Stopped::Refused(format!("TLS: {why}"))),
        // A refusal that comes once the handshake seemed done (TLS 1.3: the
        // broker checks our certificate after we have sent the CONNECT).
        ConnectionError::MqttState(StateError::Io(io))
        | ConnectionError::MqttState(StateError::Deserialization(rumqttc::v5::mqttbytes::Error::Io(io)))
        | ConnectionError::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(refusal)
            .map(|why| Stopped::Refused(format!("TLS: {why}"))),
        _ => None,
    }
}

/// A TLS failure that retrying cannot mend: a certificate that does not
/// verify, or one the broker does not accept.
fn certificate(e: &rumqttc::TlsError) -> Option<String> {
    use rustls::Error as Tls;
    let rustls = match e {
        rumqttc::TlsError::TLS(e) => Some(e),
        rumqttc::TlsError::Io(io) => io.get_ref().and_then(|inner| inner.downcast_ref::<Tls>()),
        _ => None,
    }?;
    refusal(rustls)
}

/// What a TLS error says, if it is one that retrying cannot mend.
fn refusal(rustls: &rustls::Error) -> Option<String> {
    use rustls::Error as Tls;
    match rustls {
        Tls::InvalidCertificate(_) => Some(format!("the broker's certificate cannot be verified: {rustls}")),
        Tls::AlertReceived(alert) => Some(format!(
            "the broker refused the handshake ({alert:?}): does it want a client certificate (--cert, --key) it trusts?"
        )),
        _ => None,
    }
}

/// A connection error, said briefly.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => match reason_string {
            Some(s) => format!("the broker ended the connection: {reason_code:?}, {s}"),
            None => format!("the broker ended the connection: {reason_code:?}"),
        },
        e => e.to_string(),
    }
}

fn join<'a>(names: impl IntoIterator<Item = &'a Name>) -> String {
    let names: Vec<&str> = names.into_iter().map(Name::as_str).collect();
    if names.is_empty() {
        "no nodes".into()
    } else {
        names.join(", ")
    }
}
