//! piper-bridge's command line: the one definition that `--help`, the man
//! page and the shell completions are made from (`cargo xtask dist`), and
//! the parsing of the broker's address and credentials.

use std::path::{Path, PathBuf};

use clap::Parser;
use piper_cli::exit;

/// Examples, for the long help and the man page.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "piper-bridge --broker mqtt://broker.lan --ring lab",
        "carry ring 'lab' between this host's socket directory and the other hosts' bridges",
    ),
    (
        "piper-bridge --broker mqtts://broker.lan --ca /etc/piper/ca.pem --credentials /etc/piper/mqtt",
        "the same over TLS, with a user name and password from a file",
    ),
    (
        "piper-bridge --broker mqtt://127.0.0.1 --abstract --export ping,pong",
        "abstract sockets cannot be listed: name the local nodes",
    ),
];

/// The environment piper-bridge reads, for the long help and the man page.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("PIPER_BROKER", "the broker when --broker is not given"),
    ("PIPER_DIR", "the socket directory when --dir is not given"),
    (
        "XDG_RUNTIME_DIR",
        "else the socket directory is $XDG_RUNTIME_DIR/piper (else /dev/shm/piper-$UID, else /tmp/piper-$UID)",
    ),
    (
        "PIPER_MQTT_USERNAME, PIPER_MQTT_PASSWORD",
        "the broker login, when --credentials is not given",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "systemd's LoadCredential= directory: its file 'mqtt' is the login when neither of the above is",
    ),
    (
        "RUST_LOG",
        "which diagnostics reach stderr: error, warn (the default), info, debug",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID",
        "a service manager's sd_notify socket and watchdog",
    ),
];

/// The long help's tail: examples, environment and exit status.
pub fn after_long_help() -> String {
    piper_cli::help_sections(EXAMPLES, ENVIRONMENT, exit::BRIDGE)
}

/// Carries a piper ring across hosts through an MQTT broker: local nodes
/// reach remote ones under their own names, unmodified.
#[derive(Debug, Parser)]
#[command(version, about, after_help = exit::help(exit::BRIDGE), after_long_help = after_long_help())]
pub struct Args {
    /// The broker: mqtt://HOST or mqtt://HOST:PORT (port 1883), or mqtts://... (port 8883) for TLS [env: PIPER_BROKER].
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// The ring's name: its topics are under piper/RING/, so several rings
    /// share one broker without crossing.
    #[arg(long, value_name = "NAME", default_value = "piper")]
    pub ring: String,
    /// This bridge's id among the ring's bridges [default: the host name and
    /// a hash of the machine id and the socket directory, e.g. host-1a2b3c4d].
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// The socket directory, its namespace and whom to trust, as for
    /// piper-node and piper-launch (abstract sockets need --export: they
    /// cannot be listed).
    #[command(flatten)]
    pub sockets: piper_cli::args::Sockets,
    /// The local nodes other hosts may reach, comma-separated (repeatable)
    /// [default: every live node in the directory, followed as they come
    /// and go].
    #[arg(long, value_name = "LIST")]
    pub export: Vec<String>,
    /// A file whose first line is USER:PASSWORD for the broker (never on
    /// the command line).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// With mqtts://, the CA certificates (PEM) to trust [default: the system's].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// With mqtts://, a client certificate (PEM) to log in with (needs --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Seconds between keep-alives (5 or more); the broker announces a
    /// bridge that stops answering as gone after 1.5 times this.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u16).range(5..))]
    pub keep_alive: u16,
    /// The most remote names this bridge stands in for (two open files
    /// each); names past it get no stand-in, and are counted and said.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_remote: u32,
    /// The summary at exit as one JSON object on stderr.
    #[arg(long)]
    pub json: bool,
    /// Serve Prometheus metrics over HTTP at ADDR: a loopback HOST:PORT
    /// (127.0.0.1:9465) or a socket path.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Let --metrics listen on an address that is not loopback.
    #[arg(long, requires = "metrics")]
    pub metrics_remote: bool,
}

/// Where the broker is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS.
    pub tls: bool,
}

impl std::str::FromStr for Broker {
    type Err = String;

    /// `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`; an IPv6 address in
    /// brackets.
    fn from_str(url: &str) -> Result<Broker, String> {
        let bad = |why: &str| format!("--broker '{url}': {why}");
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(bad("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(bad(
                "a login does not belong in the address: use --credentials FILE (or PIPER_MQTT_USERNAME and PIPER_MQTT_PASSWORD)",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("an IPv6 address needs its ']'"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#']) {
            return Err(bad("expected a host name or address"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad("the port must be 1 to 65535"))?,
        };
        Ok(Broker {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// A broker login.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Reads `USER:PASSWORD` from the first line of `text`.
pub fn parse_login(text: &str) -> Option<Login> {
    let line = text.lines().next()?;
    let (username, password) = line.split_once(':')?;
    (!username.is_empty()).then(|| Login {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// The login: from `--credentials FILE`, else `$PIPER_MQTT_USERNAME` and
/// `$PIPER_MQTT_PASSWORD`, else systemd's `$CREDENTIALS_DIRECTORY/mqtt`,
/// else none.
pub fn login(file: Option<&Path>) -> Result<Option<Login>, String> {
    let from_file = |path: &Path| -> Result<Login, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mode = std::fs::metadata(path).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        if mode.is_ok_and(|m| m & 0o077 != 0) {
            log::warn!(
                "{} is readable by others: a password file should be mode 0600",
                path.display()
            );
        }
        parse_login(&text).ok_or_else(|| format!("{}: the first line must be USER:PASSWORD", path.display()))
    };
    if let Some(path) = file {
        return from_file(path).map(Some);
    }
    if let Ok(username) = std::env::var("PIPER_MQTT_USERNAME") {
        let password = std::env::var("PIPER_MQTT_PASSWORD").unwrap_or_default();
        return Ok(Some(Login { username, password }));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join("mqtt");
        if path.exists() {
            return from_file(&path).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(url: &str) -> Result<Broker, String> {
        url.parse()
    }

    #[test]
    fn broker_urls() {
        let b = |host: &str, port, tls| Broker {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(broker("mqtt://localhost"), Ok(b("localhost", 1883, false)));
        assert_eq!(broker("mqtts://broker.lan"), Ok(b("broker.lan", 8883, true)));
        assert_eq!(broker("mqtt://127.0.0.1:1884/"), Ok(b("127.0.0.1", 1884, false)));
        assert_eq!(broker("mqtt://[::1]:1885"), Ok(b("::1", 1885, false)));
        assert_eq!(broker("mqtt://[::1]"), Ok(b("::1", 1883, false)));
        for bad in [
            "localhost",
            "tcp://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtt://h:x",
            "mqtt://[::1",
        ] {
            assert!(broker(bad).is_err(), "{bad}");
        }
        for login in ["mqtt://u:p@h", "mqtts://user@h:8883", "mqtt://u:p@[::1]:1"] {
            let e = broker(login).unwrap_err();
            assert!(
                e.contains("a login does not belong in the address: use --credentials"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_login_is_user_colon_password_on_the_first_line() {
        let login = parse_login("piper:s3:cret\nignored\n").unwrap();
        assert_eq!((login.username.as_str(), login.password.as_str()), ("piper", "s3:cret"));
        assert!(parse_login(":nouser").is_none());
        assert!(parse_login("no colon").is_none());
        assert!(parse_login("").is_none());
        // The password is never printed.
        assert_eq!(format!("{login:?}"), r#"Login { username: "piper", .. }"#);
    }

    #[test]
    fn the_long_help_ends_with_examples_environment_and_exit_codes() {
        let help = after_long_help();
        for part in [
            "Examples:\n  piper-bridge --broker mqtt://broker.lan --ring lab\n",
            "Environment:\n  PIPER_BROKER\n",
            "  CREDENTIALS_DIRECTORY\n",
            "Exit status:\n  0                SIGTERM or SIGHUP",
            "\n  4                socket directory unusable or unsafe",
        ] {
            assert!(help.contains(part), "lacks {part:?}:\n{help}");
        }
    }
}
