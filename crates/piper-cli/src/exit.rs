//! Exit codes, and the tables that document them.
//!
//! [`NODE`], [`LAUNCHER`] and [`BRIDGE`] are the single source of the codes' meanings:
//! `--help` prints them ([`help`]) and a test checks that the README's
//! tables are exactly [`markdown`] of them.

use piper_core::Error;

/// A normal end: `--count` reached, or SIGTERM/SIGHUP.
pub const OK: u8 = 0;
/// A runtime failure after start-up.
pub const FAILURE: u8 = 1;
/// A usage error or an invalid node name.
pub const USAGE: u8 = 2;
/// The name is owned by another live process.
pub const NAME_IN_USE: u8 = 3;
/// The socket directory, or a socket passed by the service manager, is unusable.
pub const ENVIRONMENT: u8 = 4;
/// The node binary could not be found (as a shell says for a missing command).
pub const NOT_FOUND: u8 = 127;
/// `piper-launch ctl`: the ring has no node of that name.
pub const UNKNOWN_NODE: u8 = 3;
/// `piper-launch ctl`: no launcher runs in that socket directory.
pub const NO_LAUNCHER: u8 = 4;
/// `piper-launch ctl`: the launcher is another user's.
pub const DENIED: u8 = 5;
/// Interrupted by SIGINT (128 + 2).
pub const INTERRUPTED: u8 = 130;

/// The exit code for a piper-core error.
pub fn of(e: &Error) -> u8 {
    match e {
        Error::InvalidName { .. } | Error::NameTooLong { .. } => USAGE,
        Error::NameInUse { .. } | Error::NameTaken { .. } | Error::ControlInUse { .. } => NAME_IN_USE,
        Error::Dir { .. } | Error::DirTooLong { .. } | Error::InsecureDir { .. } | Error::Activation { .. } => {
            ENVIRONMENT
        }
        _ => FAILURE,
    }
}

/// One documented exit code: the code as shown (`130`, or `n` for a code
/// passed through) and what it means.
pub type Row = (&'static str, &'static str);

/// piper-node's exit codes.
pub const NODE: &[Row] = &[
    ("0", "normal end: `--count` reached, or SIGTERM / SIGHUP"),
    (
        "1",
        "runtime failure after start-up (an I/O error, such as a write to stdout failing), or a `--send` or `--kick` that could not be delivered",
    ),
    ("2", "usage error or invalid node name"),
    (
        "3",
        "name in use: a live process owns the name (its pid is named when known, and said to be a `piper-launch`'s when the launcher that holds the name runs it), or something else occupies its socket file (or, while a stale one is reclaimed, its lock file)",
    ),
    (
        "4",
        "socket directory unusable or unsafe, or a socket passed by the service manager is unusable",
    ),
    (
        "130",
        "SIGINT; a second SIGINT, SIGTERM or SIGHUP exits at once with 128+signal, still removing the socket file",
    ),
];

/// piper-launch's exit codes.
pub const LAUNCHER: &[Row] = &[
    (
        "*n*",
        "the foreground node's exit code, or 128+signal if a signal killed it",
    ),
    (
        "0",
        "the launcher itself got SIGTERM or SIGHUP: a normal stop, as for a node (`systemctl stop` ends in success)",
    ),
    ("130", "the launcher itself got SIGINT"),
    (
        "1",
        "a node failed to start or to become ready, or died under `--fail-fast`; or `--metrics` cannot listen",
    ),
    (
        "2",
        "usage error, or a mistake in a topology file (one line: `FILE:LINE:COL: what`)",
    ),
    (
        "3",
        "a node's name is in use: the launcher checks every name before it starts any node",
    ),
    ("4", "socket directory unusable or unsafe"),
    ("127", "the `piper-node` binary was not found"),
];

/// `piper-launch ctl`'s exit codes.
pub const CTL: &[Row] = &[
    ("0", "done: the launcher did what was asked, or said what was asked"),
    (
        "1",
        "the launcher could not do it (the ring is still starting or stopping, a node is not running, the chain could not be sent), or stopped answering",
    ),
    ("2", "usage error"),
    ("3", "unknown node: the ring has no node of that name"),
    (
        "4",
        "no launcher for this directory: no control socket, or a stale one (and `--abstract` for a launcher started with it)",
    ),
    (
        "5",
        "permission denied: the launcher runs as another user (only its own user and root may control it); so is a socket directory of another user's that holds a control socket, or that we may not look into",
    ),
];

/// piper-bridge's exit codes.
pub const BRIDGE: &[Row] = &[
    ("0", "SIGTERM or SIGHUP: a normal stop, after telling the other bridges"),
    ("130", "SIGINT"),
    (
        "1",
        "the broker refused the connection (a wrong login, not authorised, a certificate that does not verify), or a runtime failure",
    ),
    (
        "2",
        "usage error: a bad broker address (or a login in it), ring, id or node name, TLS files without TLS, or an unreadable `--credentials`, `--ca`, `--cert` or `--key` file",
    ),
    (
        "3",
        "another bridge of the ring has this bridge's id and took its place at the broker",
    ),
    ("4", "socket directory unusable or unsafe"),
];

/// The table as `--help` shows it, after the options.
pub fn help(rows: &[Row]) -> String {
    let mut text = String::from("Exit status:\n");
    for (code, meaning) in rows {
        let code = code.replace('*', "");
        text.push_str(&format!("  {code:<15}  {}\n", meaning.replace('`', "")));
    }
    text
}

/// The table as the README shows it, under a header naming `program`.
pub fn markdown(program: &str, rows: &[Row]) -> String {
    let mut text = format!("| {program} | meaning |\n|---|---|\n");
    for (code, meaning) in rows {
        text.push_str(&format!("| {code} | {meaning} |\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readme() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap()
    }

    #[test]
    fn the_readme_tables_are_the_code_tables() {
        let readme = readme();
        for (program, rows) in [
            ("piper-node", NODE),
            ("piper-launch", LAUNCHER),
            ("piper-launch ctl", CTL),
            ("piper-bridge", BRIDGE),
        ] {
            let table = markdown(program, rows);
            assert!(readme.contains(&table), "README.md lacks, verbatim:\n{table}");
        }
    }

    #[test]
    fn each_kind_of_error_has_its_code() {
        use piper_core::Name;
        use std::path::PathBuf;
        let name = || Name::new("pong").unwrap();
        let dir = || PathBuf::from("/run/piper");
        let io = || std::io::Error::from_raw_os_error(13);
        let cases = [
            (
                Error::InvalidName {
                    name: "../x".into(),
                    rule: "no /",
                },
                USAGE,
            ),
            (
                Error::NameTooLong {
                    name: name(),
                    dir: dir(),
                    max: 107,
                },
                USAGE,
            ),
            (
                Error::NameInUse {
                    name: name(),
                    address: "x".into(),
                    pid: Some(42),
                    launcher: false,
                },
                NAME_IN_USE,
            ),
            (
                Error::NameTaken {
                    name: name(),
                    what: "a file".into(),
                },
                NAME_IN_USE,
            ),
            (
                Error::Dir {
                    dir: dir(),
                    action: "create",
                    source: io(),
                },
                ENVIRONMENT,
            ),
            (Error::DirTooLong { dir: dir() }, ENVIRONMENT),
            (
                Error::InsecureDir {
                    dir: dir(),
                    reason: "0777".into(),
                },
                ENVIRONMENT,
            ),
            (
                Error::Activation {
                    reason: "LISTEN_FDS=2".into(),
                },
                ENVIRONMENT,
            ),
            (Error::PeerNotFound { peer: name() }, FAILURE),
            (
                Error::Io {
                    action: "send",
                    target: "pong".into(),
                    source: io(),
                },
                FAILURE,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(of(&error), code, "{error:?}");
        }
    }

    #[test]
    fn markdown_is_a_table_under_the_program_s_name() {
        assert_eq!(
            markdown("piper-x", &[("0", "fine"), ("n", "passed `on`")]),
            "| piper-x | meaning |\n|---|---|\n| 0 | fine |\n| n | passed `on` |\n"
        );
    }

    #[test]
    fn every_code_constant_is_documented() {
        let node: Vec<&str> = NODE.iter().map(|r| r.0).collect();
        for code in [OK, FAILURE, USAGE, NAME_IN_USE, ENVIRONMENT, INTERRUPTED] {
            assert!(node.contains(&code.to_string().as_str()), "{code}");
        }
        let launcher: Vec<&str> = LAUNCHER.iter().map(|r| r.0).collect();
        for code in [OK, FAILURE, USAGE, NAME_IN_USE, ENVIRONMENT, NOT_FOUND, INTERRUPTED] {
            assert!(launcher.contains(&code.to_string().as_str()), "{code}");
        }
        let ctl: Vec<&str> = CTL.iter().map(|r| r.0).collect();
        for code in [OK, FAILURE, USAGE, UNKNOWN_NODE, NO_LAUNCHER, DENIED] {
            assert!(ctl.contains(&code.to_string().as_str()), "{code}");
        }
        let bridge: Vec<&str> = BRIDGE.iter().map(|r| r.0).collect();
        for code in [OK, FAILURE, USAGE, ENVIRONMENT, INTERRUPTED] {
            assert!(bridge.contains(&code.to_string().as_str()), "{code}");
        }
    }

    #[test]
    fn help_lists_every_row_without_markdown() {
        let help = help(NODE);
        assert!(help.starts_with("Exit status:\n"));
        assert_eq!(help.lines().count(), NODE.len() + 1);
        assert!(help.contains("  130  ") && !help.contains('`'));
    }
}
