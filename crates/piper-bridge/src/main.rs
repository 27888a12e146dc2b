//! piper-bridge: carries a piper ring across hosts through an MQTT broker.
//!
//! This file reads the command line and the login, opens the socket
//! directory, configures the MQTT client, runs the bridge (`bridge.rs`) and
//! turns the outcome into the summary and an exit code
//! (`piper_cli::exit::BRIDGE`, which the README and `--help` both show).

mod bridge;
mod signals;
mod wire;

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::Signal;
use piper_bridge::cli::{self, Args, Broker};
use piper_cli::{exit, Failure};
use piper_core::{notify, Name, Namespace, SocketDir, MAX_DATAGRAM};
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use bridge::{Counts, Stopped};
use wire::Topics;

/// Requests the client may hold before publishing fails (and the datagram
/// is counted as dropped): a few rings' worth.
const QUEUE: usize = 1024;

fn main() -> ExitCode {
    let args = Args::parse();
    let label = args.id.clone().or_else(|| host_name().map(|n| n.to_string()));
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
    let ring = Name::new(&args.ring).map_err(|e| Failure::usage(format!("--ring: {e}")))?;
    let id = match &args.id {
        Some(id) => Name::new(id).map_err(|e| Failure::usage(format!("--id: {e}")))?,
        None => host_name().ok_or_else(|| Failure::usage("cannot use the host name as the bridge's id: give --id"))?,
    };
    let export = match &args.export {
        Some(list) => Some(
            list.split(',')
                .map(|n| Name::new(n).map_err(|e| Failure::usage(format!("--export: {e}"))))
                .collect::<Result<BTreeSet<Name>, Failure>>()?,
        ),
        None if args.abstract_ns => {
            return Err(Failure::usage(
                "abstract sockets cannot be listed: --abstract needs --export",
            ));
        }
        None => None,
    };
    let login = cli::login(args.credentials.as_deref()).map_err(Failure::usage)?;
    let namespace = if args.abstract_ns {
        Namespace::Abstract
    } else {
        Namespace::Filesystem
    };
    let dir = SocketDir::open_in(args.dir.clone().unwrap_or_else(SocketDir::default_path), namespace)?;
    for name in export.iter().flatten() {
        dir.check_fits(name)?;
    }

    let topics = Topics::new(&ring);
    let mut options = MqttOptions::new(format!("piper-{ring}-{id}"), broker.host.clone(), broker.port);
    options
        .set_keep_alive(Duration::from_secs(args.keep_alive.into()))
        .set_clean_session(true)
        // Room for the largest datagram, its sender's name and the topic.
        .set_max_packet_size(MAX_DATAGRAM + 1024, MAX_DATAGRAM + 1024)
        .set_request_channel_capacity(QUEUE)
        // Our presence goes when we do, whatever the way.
        .set_last_will(LastWill::new(topics.hosts(&id), Vec::new(), QoS::AtLeastOnce, true));
    if let Some(login) = login {
        options.set_credentials(login.username, login.password);
    }
    if broker.tls {
        options.set_transport(tls(args.ca.as_deref())?);
    }

    let notifier = notify::Notifier::from_env()
        .map_err(|e| log::warn!("cannot notify the service manager: {e}"))
        .ok()
        .flatten();
    let config = bridge::Config {
        dir,
        topics,
        id: id.clone(),
        export,
        allow_uids: args.allow_uids.clone(),
        notifier,
        watchdog: notify::watchdog_interval(),
    };
    // Before the runtime starts its threads, so that they inherit the mask.
    let signals = signals::block().map_err(|e| Failure::new(exit::FAILURE, format!("cannot block signals: {e}")))?;
    let (client, mut eventloop) = AsyncClient::new(options, QUEUE);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    log::info!(
        "bridge '{id}' of ring '{ring}' to {}://{}:{}",
        if broker.tls { "mqtts" } else { "mqtt" },
        broker.host,
        broker.port
    );

    let (stopped, counts) = bridge::run(config, client, eventloop, signals)?;
    summary(&id, &counts, args.json);
    match stopped {
        Stopped::Signal(Signal::SIGINT) => Ok(exit::INTERRUPTED),
        Stopped::Signal(_) => Ok(exit::OK),
        Stopped::Refused(why) => Err(Failure::new(exit::FAILURE, why)),
    }
}

/// TLS with the CA certificates in `ca`, else the system's.
fn tls(ca: Option<&std::path::Path>) -> Result<Transport, Failure> {
    // One process-wide crypto provider: ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match ca {
        Some(path) => TlsConfiguration::Simple {
            ca: std::fs::read(path).map_err(|e| Failure::usage(format!("cannot read --ca {}: {e}", path.display())))?,
            alpn: None,
            client_auth: None,
        },
        None => TlsConfiguration::default(),
    };
    Ok(Transport::tls_with_config(config))
}

fn host_name() -> Option<Name> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Name::new(name.trim()).ok()
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
            .finish()
    } else {
        format!(
            "piper-bridge[{id}]: to the broker {} of {} (dropped {}, refused {}); from the broker {} of {} (dropped {}); {} reconnects",
            c.published, c.from_nodes, c.dropped_out, c.refused, c.delivered, c.from_broker, c.dropped_in, c.reconnects
        )
    };
    piper_cli::stderr_line(piper_cli::Priority::Notice, &text);
}
