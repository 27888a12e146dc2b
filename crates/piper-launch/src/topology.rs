//! The topology file (`--file FILE`): TOML read into typed tables (unknown
//! keys refused), then checked into [`Member`]s for a [`Plan`], every
//! mistake named with the file, line and column where it is, as compilers
//! do: `ring.toml:7:8: next = "pnog" names no node and no remote`.
//!
//! ```toml
//! dir = "/tmp/piper-demo"      # the socket directory (--dir wins)
//! start = "ping"               # ping's name goes to ping's next once all are ready
//! remote = ["far"]             # names reached through a bridge
//!
//! [defaults]                   # any per-node key but name and next
//! restart = "on-failure"
//!
//! [[node]]
//! name = "ping"                # piper-node by default, next = the following node
//!
//! [[node]]
//! name = "py"
//! exec = ["python3", "node.py"]   # a path with a / is relative to this file
//! ready = "notify"                # or "exec"; "bound" for socket = "own"
//! ```
//!
//! Nothing here starts or binds anything: `--check` prints what this makes
//! and exits.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use piper_core::Name;
use piper_launch::cli::RestartPolicy;
use serde::Deserialize;
use toml::Spanned;

use crate::plan::{Member, Program, Ready, Socket};
use crate::supervisor::restart::Restart;

/// A mistake in a topology file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mistake {
    pub file: PathBuf,
    /// 1-based line and column (in characters).
    pub line: usize,
    pub column: usize,
    pub what: String,
}

impl std::fmt::Display for Mistake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.what
        )
    }
}

/// What a topology file says, checked.
#[derive(Debug)]
pub struct Topology {
    pub dir: Option<PathBuf>,
    /// Where `dir` is in the file (line, column), for an error in making it.
    pub dir_at: Option<(usize, usize)>,
    pub members: Vec<Member>,
    pub remote: Vec<Name>,
    /// The node whose name starts the chain, sent to its next.
    pub start: Option<usize>,
    /// The member marked `foreground = true`, if any.
    pub foreground: Option<usize>,
}

impl Topology {
    /// What starts the chain: the start node's name, sent to its next.
    pub fn kick(&self) -> Option<(Name, Name)> {
        let m = &self.members[self.start?];
        Some((m.name.clone(), m.next.clone()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTable {
    dir: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    #[serde(default)]
    remote: Vec<Spanned<String>>,
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    node: Vec<Spanned<NodeTable>>,
}

/// The per-node keys that `[defaults]` may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Settings {
    exec: Option<Spanned<Vec<String>>>,
    socket: Option<Spanned<SocketKey>>,
    ready: Option<Spanned<ReadyKey>>,
    restart: Option<RestartKey>,
    restart_delay: Option<Spanned<f64>>,
    restart_burst: Option<u32>,
    cpu: Option<Spanned<usize>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    show: Option<bool>,
    foreground: Option<bool>,
}

/// One `[[node]]`: a name, whom it answers, and any of the settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NodeTable {
    name: Spanned<String>,
    next: Option<Spanned<String>>,
    exec: Option<Spanned<Vec<String>>>,
    socket: Option<Spanned<SocketKey>>,
    ready: Option<Spanned<ReadyKey>>,
    restart: Option<RestartKey>,
    restart_delay: Option<Spanned<f64>>,
    restart_burst: Option<u32>,
    cpu: Option<Spanned<usize>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    show: Option<bool>,
    foreground: Option<Spanned<bool>>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SocketKey {
    Held,
    Own,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ReadyKey {
    Notify,
    Exec,
    Bound,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RestartKey {
    No,
    OnFailure,
    Always,
}

/// The longest `restart-delay`: a year, as on the command line.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// The piper-node options the launcher always gives a ring member, from
/// the file's `dir` and `next`: an `exec` must not give them again.
const LAUNCHER_GIVES: [&str; 2] = ["--dir", "--next"];

/// Reads `file` and checks it. `restart` is the command line's restart
/// policy, which the file's keys override per node; `given` are the
/// piper-node options the command line passes to every piper-node
/// (`--interval`), which an `exec` must not give as well: piper-node
/// takes each once.
pub fn read(file: &Path, restart: Restart, given: &[&str]) -> Result<Topology, Mistake> {
    let text = std::fs::read_to_string(file).map_err(|e| Mistake {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        what: format!("cannot read it: {e}"),
    })?;
    parse(file, &text, restart, given)
}

/// Checks `text`, the contents of `file`.
pub fn parse(file: &Path, text: &str, restart: Restart, given: &[&str]) -> Result<Topology, Mistake> {
    let at = |span: Range<usize>, what: String| {
        let (line, column) = line_column(text, span.start);
        Mistake {
            file: file.to_path_buf(),
            line,
            column,
            what,
        }
    };
    let table: FileTable = toml::from_str(text).map_err(|e| {
        let what = e.message().trim_end().replace('\n', " ");
        at(e.span().unwrap_or(0..0), what)
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let name = |s: &Spanned<String>, what: &str| {
        Name::new(s.get_ref()).map_err(|e| at(s.span(), format!("{what} '{}': {e}", s.get_ref())))
    };
    if table.node.is_empty() {
        return Err(at(0..0, "no [[node]]: a topology runs at least one node".into()));
    }
    // Names first, so that `next` and `start` can be checked against them.
    let mut names: Vec<Name> = Vec::new();
    let mut seen: HashMap<Name, Range<usize>> = HashMap::new();
    for node in &table.node {
        let n = name(&node.get_ref().name, "name")?;
        if let Some(first) = seen.get(&n) {
            let (line, column) = line_column(text, first.start);
            let what = format!("node '{n}' is named twice (first at {line}:{column})");
            return Err(at(node.get_ref().name.span(), what));
        }
        seen.insert(n.clone(), node.get_ref().name.span());
        names.push(n);
    }
    let mut remote = Vec::new();
    for r in &table.remote {
        let n = name(r, "remote")?;
        if seen.contains_key(&n) {
            return Err(at(r.span(), format!("remote '{n}' is also a [[node]] here")));
        }
        remote.push(n);
    }
    let d = &table.defaults;
    let mut members = Vec::new();
    let mut foreground = None;
    for (i, node) in table.node.iter().enumerate() {
        let node = node.get_ref();
        let me = &names[i];
        let next = match &node.next {
            None => names[(i + 1) % names.len()].clone(),
            Some(next) => {
                let n = name(next, "next")?;
                if !seen.contains_key(&n) && !remote.contains(&n) {
                    return Err(at(next.span(), format!("next = \"{n}\" names no node and no remote")));
                }
                n
            }
        };
        if next == *me {
            let span = node.next.as_ref().map_or(node.name.span(), Spanned::span);
            let what = match node.next {
                Some(_) => format!("node '{me}' would answer itself (a node never does): name another node"),
                None => format!(
                    "node '{me}' would answer itself (a node never does): add another [[node]], or give it a \
                     next that names a remote"
                ),
            };
            return Err(at(span, what));
        }
        let exec = node.exec.as_ref().or(d.exec.as_ref());
        let program = match exec {
            None => Program::Node(Vec::new()),
            Some(exec) => program(base, exec.get_ref()).map_err(|what| at(exec.span(), what))?,
        };
        if let (Program::Node(extra), Some(exec)) = (&program, exec) {
            let options = extra.iter().take_while(|a| *a != "--");
            let twice = options.filter_map(|a| a.to_str()).find_map(|a| {
                let flag = a.split_once('=').map_or(a, |(flag, _)| flag);
                let by_launcher = LAUNCHER_GIVES.contains(&flag);
                (by_launcher || given.contains(&flag)).then_some((a, flag, by_launcher))
            });
            if let Some((arg, flag, by_launcher)) = twice {
                let what = match by_launcher {
                    true => format!(
                        "node '{me}': exec gives piper-node {arg}, which the launcher gives it \
                         (from the file's dir and next, or --dir)"
                    ),
                    false => format!(
                        "node '{me}': exec gives piper-node {arg}, and so does the command line's {flag}: \
                         give it in one place"
                    ),
                };
                return Err(at(exec.span(), what));
            }
        }
        let socket = match node.socket.as_ref().or(d.socket.as_ref()).map(|s| *s.get_ref()) {
            Some(SocketKey::Own) => Socket::Own,
            Some(SocketKey::Held) | None => Socket::Held,
        };
        let ready_key = node.ready.as_ref().or(d.ready.as_ref());
        let ready = match (ready_key.map(|r| *r.get_ref()), socket) {
            (Some(ReadyKey::Notify), _) => Ready::Notify,
            (Some(ReadyKey::Exec), _) => Ready::Exec,
            (Some(ReadyKey::Bound), Socket::Own) | (None, Socket::Own) => Ready::Bound,
            (None, Socket::Held) => Ready::Notify,
            (Some(ReadyKey::Bound), Socket::Held) => {
                let span = ready_key.map_or(node.name.span(), Spanned::span);
                let what = format!(
                    "node '{me}': ready = \"bound\" needs socket = \"own\": the launcher binds a held socket \
                     itself, so its binding says nothing about the program (use \"notify\" or \"exec\")"
                );
                return Err(at(span, what));
            }
        };
        let delay = match node.restart_delay.as_ref().or(d.restart_delay.as_ref()) {
            None => restart.delay,
            Some(s) if (0.0..=MAX_SECONDS).contains(s.get_ref()) => Duration::from_secs_f64(*s.get_ref()),
            Some(s) => {
                let what = format!(
                    "restart-delay = {}: give a number of seconds from 0 to {MAX_SECONDS}",
                    s.get_ref()
                );
                return Err(at(s.span(), what));
            }
        };
        let policy = match node.restart.or(d.restart) {
            None => restart.policy,
            Some(RestartKey::No) => RestartPolicy::No,
            Some(RestartKey::OnFailure) => RestartPolicy::OnFailure,
            Some(RestartKey::Always) => RestartPolicy::Always,
        };
        let restart = Restart {
            policy,
            delay,
            burst: node.restart_burst.or(d.restart_burst).unwrap_or(restart.burst),
            ..restart
        };
        let cpu = match node.cpu.as_ref().or(d.cpu.as_ref()) {
            None => None,
            Some(cpu) if crate::placement::allowed().contains(cpu.get_ref()) => Some(*cpu.get_ref()),
            Some(cpu) => {
                let what = format!(
                    "cpu = {}: not a CPU this process may use ({:?})",
                    cpu.get_ref(),
                    crate::placement::allowed()
                );
                return Err(at(cpu.span(), what));
            }
        };
        let mut env: BTreeMap<&String, &String> = d.env.iter().collect();
        env.extend(&node.env);
        let env = env
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        let is_foreground = node.foreground.as_ref().map(|f| *f.get_ref()).or(d.foreground);
        if is_foreground == Some(true) {
            if let Some(first) = foreground {
                let span = node.foreground.as_ref().map_or(node.name.span(), Spanned::span);
                let what = format!(
                    "node '{me}' is the foreground, and so is node '{}': one node's end ends the run",
                    names[first]
                );
                return Err(at(span, what));
            }
            foreground = Some(i);
        }
        members.push(Member {
            name: me.clone(),
            program,
            next,
            socket,
            ready,
            restart,
            cpu,
            env,
            show: node.show.or(d.show).unwrap_or(true),
        });
    }
    // The chain waits until every remote name is reachable: one that no
    // `next` names would hold the start forever for nothing.
    for (r, n) in table.remote.iter().zip(&remote) {
        if !members.iter().any(|m| m.next == *n) {
            let what = format!("remote '{n}' is named by no next: the start would wait for it forever");
            return Err(at(r.span(), what));
        }
    }
    let start = match &table.start {
        None => None,
        Some(start) => {
            let n = name(start, "start")?;
            let i = names.iter().position(|m| *m == n);
            Some(i.ok_or_else(|| at(start.span(), format!("start = \"{n}\" names no node")))?)
        }
    };
    let dir = table.dir.as_ref().map(|d| base.join(d.get_ref()));
    let dir_at = table.dir.as_ref().map(|d| line_column(text, d.span().start));
    Ok(Topology {
        dir,
        dir_at,
        members,
        remote,
        start,
        foreground,
    })
}

/// `exec`'s program: `piper-node` (the launcher's node binary, with a ring
/// member's arguments added), a path (relative to the file's directory if
/// it has a `/`), or a name found on `PATH`.
fn program(base: &Path, exec: &[String]) -> Result<Program, String> {
    let Some(first) = exec.first() else {
        return Err("exec = []: give the program and its arguments, as [\"python3\", \"node.py\"]".into());
    };
    let args: Vec<OsString> = exec.iter().map(OsString::from).collect();
    if first == "piper-node" {
        return Ok(Program::Node(args[1..].to_vec()));
    }
    let path = if first.contains('/') {
        // Without `.` components: the plan names `examples/node.py`, not
        // `examples/./node.py`.
        let path: PathBuf = base.join(first).components().collect();
        if !is_executable(&path) {
            let why = match path.exists() {
                true => "is not an executable file",
                false => "is not found",
            };
            return Err(format!("exec: '{first}' ({}) {why}", path.display()));
        }
        path
    } else {
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .map(|dir| dir.join(first))
            .find(|p| is_executable(p));
        on_path.ok_or_else(|| format!("exec: '{first}' is not found on PATH (or not executable)"))?
    };
    Ok(Program::Exec(path, args))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
