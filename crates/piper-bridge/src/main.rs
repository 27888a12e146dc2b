//! piper-bridge: carries a piper ring across hosts through an MQTT broker.
//!
//! This file reads the command line and the login, opens the socket
//! directory, configures the MQTT 5 client, runs the bridge (`bridge.rs`)
//! and turns the outcome into the summary and an exit code
//! (`piper_cli::exit::BRIDGE`, which the README and `--help` both show).

mod bridge;
mod counts;
mod hold;
mod link;
mod pace;
mod presence;
mod signals;
mod standins;
mod twin;
mod wire;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::Signal;
use piper_bridge::cli::{self, Args, Broker};
use piper_cli::{exit, Failure};
use piper_core::{notify, Name, Namespace, SocketDir, MAX_DATAGRAM};
use rumqttc::v5::mqttbytes::v5::LastWill;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};

use bridge::Stopped;
use counts::Counts;
use wire::Topics;

/// Requests the client may hold before publishing fails (and the datagram
/// is counted as dropped): a few rings' worth.
const QUEUE: usize = 1024;
/// The largest packet the bridge takes: the largest datagram, its sender's
/// name and the topic. The broker is told, and never sends a larger one.
const MAX_PACKET: usize = MAX_DATAGRAM + 1024;
/// Open files besides the stand-ins': the runtime, the broker, the
/// directory, the logs.
const SPARE_FILES: u64 = 64;
/// The longest id: a name fits in at most 100 bytes.
const MAX_ID: usize = 100;

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.sockets.path();
    let label = (args.id.clone()).or_else(|| default_id(&dir).map(|n| n.to_string()));
    piper_cli::init_logging(format!("piper-bridge[{}]", label.unwrap_or_default()), "warn");
    piper_cli::finish("piper-bridge", run(args))
}

fn run(args: Args) -> Result<u8, Failure> {
    let broker: Broker = match args.broker.clone().or_else(|| std::env::var("PIPER_BROKER").ok()) {
        Some(url) => url.parse().map_err(Failure::usage)?,
        None => {
            return Err(Failure::usage(
                "no broker: give --broker mqtt://HOST[:PORT] or set PIPER_BROKER",
            ))
        }
    };
    if !broker.tls {
        for (given, flag) in [(args.ca.is_some(), "--ca"), (args.cert.is_some(), "--cert")] {
            if given {
                return Err(Failure::usage(format!(
                    "{flag} is for TLS: give an mqtts:// broker, or leave {flag} out"
                )));
            }
        }
    }
    let ring = Name::new(&args.ring).map_err(|e| Failure::usage(format!("--ring: {e}")))?;
    let export = if !args.export.is_empty() {
        Some(
            (args.export.iter().flat_map(|list| list.split(',')))
                .map(|n| Name::new(n).map_err(|e| Failure::usage(format!("--export: {e}"))))
                .collect::<Result<BTreeSet<Name>, Failure>>()?,
        )
    } else if args.sockets.abstract_ns {
        return Err(Failure::usage(
            "abstract sockets cannot be listed: --abstract needs --export",
        ));
    } else {
        None
    };
    let login = cli::login(args.credentials.as_deref()).map_err(Failure::usage)?;
    let transport = if broker.tls { Some(tls(&args)?) } else { None };
    let namespace = args.sockets.namespace();
    let path = args.sockets.path();
    let id = match &args.id {
        Some(id) => Name::new(id).map_err(|e| Failure::usage(format!("--id: {e}")))?,
        None => {
            default_id(&path).ok_or_else(|| Failure::usage("cannot use the host name as the bridge's id: give --id"))?
        }
    };
    // A directory this run makes is removed again if the broker turns it
    // away, so that a refused start leaves nothing behind.
    let made = (namespace == Namespace::Filesystem && !path.exists()).then(|| path.clone());
    let dir = SocketDir::open_in(&path, namespace)?;
    for name in export.iter().flatten() {
        dir.check_fits(name)?;
    }
    let max_remote = fit_files(args.max_remote as usize);

    let topics = Topics::new(&ring);
    let mut options = MqttOptions::new(format!("piper-{ring}-{id}"), broker.host.clone(), broker.port);
    options
        .set_keep_alive(Duration::from_secs(args.keep_alive.into()))
        .set_clean_start(true)
        .set_max_packet_size(Some(MAX_PACKET as u32))
        .set_request_channel_capacity(QUEUE)
        .set_connection_timeout(5)
        // This run is over when we are, whatever the way: every name it
        // offered goes with it.
        .set_last_will(LastWill::new(
            topics.host(&id),
            Vec::new(),
            QoS::AtLeastOnce,
            true,
            None,
        ));
    if let Some(login) = login {
        options.set_credentials(login.username, login.password);
    }
    if let Some(transport) = transport {
        options.set_transport(transport);
    }

    let metrics = match &args.metrics {
        Some(address) => {
            let address = piper_cli::metrics::Address::parse(address, args.metrics_remote).map_err(Failure::usage)?;
            let server = piper_cli::metrics::Server::listen(&address).map_err(|m| Failure::new(exit::FAILURE, m))?;
            log::info!("metrics on {address} (GET /metrics)");
            Some(server)
        }
        None => None,
    };
    let notifier = notify::Notifier::from_env()
        .map_err(|e| log::warn!("cannot notify the service manager: {e}"))
        .ok()
        .flatten();
    let config = bridge::Config {
        dir,
        topics,
        id: id.clone(),
        epoch: new_epoch(),
        export,
        trust: args.sockets.policy(),
        max_remote,
        max_packet: MAX_PACKET,
        broker_port: broker.port,
        notifier,
        watchdog: notify::watchdog_interval(),
        metrics,
    };
    // Before the runtime starts its threads, so that they inherit the mask.
    let signals = signals::block().map_err(|e| Failure::new(exit::FAILURE, format!("cannot block signals: {e}")))?;
    let (client, mut eventloop) = AsyncClient::new(options, QUEUE);
    let mut network = eventloop.options.network_options();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.options.set_network_options(network);
    log::info!(
        "bridge '{id}' of ring '{ring}' to {}://{}:{}",
        if broker.tls { "mqtts" } else { "mqtt" },
        broker.host,
        broker.port
    );

    let (stopped, counts) = bridge::run(config, client, eventloop, signals)?;
    let refused = !matches!(stopped, Stopped::Signal(_));
    if refused && counts == Counts::default() {
        if let Some(made) = made {
            // Only if nothing is in it: never what someone else put there.
            let _ = std::fs::remove_dir(made);
        }
    }
    summary(&id, &counts, args.json);
    match stopped {
        Stopped::Signal(Signal::SIGINT) => Ok(exit::INTERRUPTED),
        Stopped::Signal(_) => Ok(exit::OK),
        Stopped::Refused(why) => Err(Failure::new(exit::FAILURE, why)),
        Stopped::Clash(why) => Err(Failure::new(exit::NAME_IN_USE, why)),
    }
}

/// TLS with the CA certificates of `--ca`, else the system's, and the
/// client certificate of `--cert` and `--key`, if given.
fn tls(args: &Args) -> Result<Transport, Failure> {
    // One process-wide crypto provider: ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|e| Failure::usage(format!("cannot read {flag} {}: {e}", path.display())))
    };
    let client_auth = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some((read("--cert", cert)?, read("--key", key)?)),
        _ => None,
    };
    let config = match &args.ca {
        Some(path) => TlsConfiguration::Simple {
            ca: read("--ca", path)?,
            alpn: None,
            client_auth,
        },
        None if client_auth.is_some() => {
            return Err(Failure::usage(
                "--cert needs --ca: the CA that signed the broker's certificate",
            ));
        }
        None => TlsConfiguration::default(),
    };
    Ok(Transport::tls_with_config(config))
}

/// Raises the soft open-file limit to what `max_remote` stand-ins need (a
/// socket each, and a lock file while a stale one is reclaimed), as far as the hard limit allows, and
/// returns how many stand-ins fit.
fn fit_files(max_remote: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max_remote;
    };
    let want = (2 * max_remote as u64 + SPARE_FILES).min(hard);
    let mut limit = soft;
    if soft < want {
        match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
            Ok(()) => limit = want,
            Err(e) => log::debug!("cannot raise the open-file limit to {want}: {}", e.desc()),
        }
    }
    let fits = (limit.saturating_sub(SPARE_FILES) / 2) as usize;
    if fits < max_remote {
        log::warn!(
            "the open-file limit ({limit}) fits {fits} stand-ins, not --max-remote {max_remote}: at most {fits} remote names (raise LimitNOFILE=)"
        );
        return fits.max(1);
    }
    max_remote
}

fn host_name() -> Option<Name> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Name::new(name.trim()).ok()
}

/// The host name, and a hash of the machine id and the socket directory:
/// two clones of one machine image that kept its host name, or two
/// directories on one host, do not share it by accident.
fn default_id(dir: &Path) -> Option<Name> {
    let host = host_name()?;
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let dir: PathBuf = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut hash = Fnv::default();
    hash.write(machine.trim().as_bytes());
    hash.write(b"\0");
    hash.write(dir.as_os_str().as_encoded_bytes());
    let suffix = format!("-{:08x}", hash.0 as u32);
    let keep = MAX_ID - suffix.len();
    let host = &host.as_str()[..host.as_str().len().min(keep)];
    Name::new(&format!("{host}{suffix}")).ok()
}

/// FNV-1a: a stable hash, the same on every build.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// A new run's epoch: random, so that no two runs share one.
fn new_epoch() -> wire::Epoch {
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut hash = Fnv::default();
    hash.write(&now.as_nanos().to_ne_bytes());
    hash.write(&std::process::id().to_ne_bytes());
    hash.0
}

fn summary(id: &Name, c: &Counts, json: bool) {
    let text = if json {
        piper_cli::json::Object::new()
            .str("bridge", id.as_str())
            .num("from_nodes", c.from_nodes)
            .num("published", c.published)
            .num("dropped_out", c.dropped_out)
            .num("refused", c.refused)
            .num("from_broker", c.from_broker)
            .num("delivered", c.delivered)
            .num("dropped_in", c.dropped_in)
            .num("reconnects", c.reconnects)
            .num("ignored", c.ignored)
            .finish()
    } else {
        format!(
            "piper-bridge[{id}]: to the broker {} of {} (dropped {}, refused {}); from the broker {} of {} (dropped {}); {} reconnects; {} ignored",
            c.published, c.from_nodes, c.dropped_out, c.refused, c.delivered, c.from_broker, c.dropped_in, c.reconnects, c.ignored
        )
    };
    piper_cli::stderr_line(piper_cli::Priority::Notice, &text);
}
