//! The Plan: every member a run starts, with its program, its socket, its
//! readiness and its policies, and what the ring as a whole does.
//!
//! Both ways of naming a ring end here: `--nodes` is the simplest
//! topology, generated ([`Plan::ring`]), and a topology file is read and
//! checked by [`topology`](crate::topology) into the same thing. From the
//! plan on there is one code path: the ring loop starts members as the
//! plan says, whatever program each runs.

use std::ffi::OsString;
use std::path::PathBuf;

use piper_core::{env, Name, Namespace, SocketDir};

use crate::supervisor::restart::Restart;

/// Who binds a member's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socket {
    /// The launcher binds and holds `DIR/piper-NAME` and passes it as fd 3
    /// (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, systemd's socket
    /// activation): it outlives the program, so what is queued for a dead
    /// member reaches its successor.
    Held,
    /// The program binds its own socket (the seed's node does). The
    /// launcher removes a stale file before each start and at the end, but
    /// queued datagrams die with the program.
    Own,
}

/// When a member is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// It says `READY=1` on `$NOTIFY_SOCKET`.
    Notify,
    /// It has exec'd.
    Exec,
    /// Its socket answers a probe (`own` sockets only).
    Bound,
}

impl Ready {
    /// Its name in a topology file and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Ready::Notify => "notify",
            Ready::Exec => "exec",
            Ready::Bound => "bound",
        }
    }
}

impl Socket {
    /// Its name in a topology file and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Socket::Held => "held",
            Socket::Own => "own",
        }
    }
}

/// What a member runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// `piper-node` (the plan's node binary) with a ring member's
    /// arguments, and these before its name.
    Node(Vec<OsString>),
    /// This executable, with this argument vector (its first is argv[0]).
    Exec(PathBuf, Vec<OsString>),
}

/// One member of the plan.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: Name,
    pub program: Program,
    /// Whom it answers: `--next` for piper-node, `$PIPER_NEXT` for all.
    pub next: Name,
    pub socket: Socket,
    pub ready: Ready,
    pub restart: Restart,
    /// The CPU it is pinned to, if any: the placement leaves it there.
    pub cpu: Option<usize>,
    /// Variables added to its environment.
    pub env: Vec<(OsString, OsString)>,
    /// Whether its lines may be shown (`--output` and `--log-dir` decide
    /// the rest).
    pub show: bool,
}

/// Everything needed to start the ring.
#[derive(Debug)]
pub struct Plan {
    /// The node binary, for members that run piper-node.
    pub node_bin: PathBuf,
    /// The socket directory.
    pub dir: SocketDir,
    /// The members, in the order they start.
    pub members: Vec<Member>,
    /// Names reached through a bridge, not started here: the chain waits
    /// until they are reachable.
    pub remote: Vec<Name>,
    /// What starts the chain once all are ready: this name, sent to this
    /// member. `None`: another launcher (or nobody) starts it.
    pub kick: Option<(Name, Name)>,
    /// Index of the member whose end ends the run.
    pub foreground: usize,
    /// Where background members' output goes, if kept.
    pub log_dir: Option<PathBuf>,
    /// `--interval` for every piper-node.
    pub interval: Option<u64>,
    /// `--quiet` for every piper-node.
    pub quiet: bool,
    /// `--count` for the foreground piper-node.
    pub count: Option<u64>,
    /// `--allow-uid` for every piper-node.
    pub allow_uids: Vec<u32>,
    /// Whether every member's lines are shown, or only the foreground's.
    pub all_output: bool,
    /// `--json` for the foreground piper-node.
    pub json: bool,
    /// The topology file it was read from, named in errors; `None` for
    /// `--nodes`.
    pub file: Option<PathBuf>,
}

/// What a ring generated from `--nodes` shares with a topology file's
/// ring: the command line's ring options.
#[derive(Debug, Clone)]
pub struct RingOptions {
    pub node_bin: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub interval: Option<u64>,
    pub quiet: bool,
    pub count: Option<u64>,
    pub allow_uids: Vec<u32>,
    pub all_output: bool,
    pub json: bool,
}

/// The simplest topology, the ring `--nodes` names: piper-node on a held
/// socket for each name, node i answering node i+1 and the last the first
/// (or `ring_next`, a remote name), the first's name sent to the second
/// once all are ready (unless `start` is false; a lone node is sent the
/// name of the node it answers). Returns the members, the remote names
/// and the kick.
pub fn generated(
    names: Vec<Name>,
    ring_next: Option<Name>,
    start: bool,
    restart: Restart,
) -> (Vec<Member>, Vec<Name>, Option<(Name, Name)>) {
    let n = names.len();
    let next = |i: usize| match (&ring_next, names.get(i + 1)) {
        (_, Some(next)) => next.clone(),
        (Some(next), None) => next.clone(),
        (None, None) => names[0].clone(),
    };
    let members = (0..n)
        .map(|i| Member {
            name: names[i].clone(),
            program: Program::Node(Vec::new()),
            next: next(i),
            socket: Socket::Held,
            ready: Ready::Notify,
            restart,
            cpu: None,
            env: Vec::new(),
            show: true,
        })
        .collect();
    let kick = match (&names[..], &ring_next) {
        _ if !start => None,
        ([first, second, ..], _) => Some((first.clone(), second.clone())),
        ([only], Some(next)) => Some((next.clone(), only.clone())),
        _ => None,
    };
    (members, ring_next.into_iter().collect(), kick)
}

/// The plan `--check` prints: the directory, what starts the chain, and
/// one line per member (whom it answers, how its socket and readiness
/// work, its restart policy, and what it runs).
pub fn describe(
    dir: &std::path::Path,
    members: &[Member],
    remote: &[Name],
    kick: Option<&(Name, Name)>,
    foreground: usize,
    node_bin: &std::path::Path,
) -> String {
    let mut out = format!("dir {}\n", dir.display());
    match kick {
        Some((from, to)) => out.push_str(&format!("start: '{from}' sent to '{to}' once all are ready\n")),
        None => out.push_str("start: none (another launcher, or nobody, starts the chain)\n"),
    }
    if !remote.is_empty() {
        let names: Vec<&str> = remote.iter().map(Name::as_str).collect();
        out.push_str(&format!("remote: {}\n", names.join(", ")));
    }
    for (i, m) in members.iter().enumerate() {
        // The foreground's end ends the run unless --restart-foreground
        // says otherwise, whatever its restart key says.
        let ends_run = i == foreground && !m.restart.foreground;
        let policy = match m.restart.policy {
            _ if ends_run => "no (its end ends the run; --restart-foreground restarts it)".to_string(),
            piper_launch::cli::RestartPolicy::No => "no".to_string(),
            p => format!(
                "{} (delay {}s, burst {})",
                if p == piper_launch::cli::RestartPolicy::Always {
                    "always"
                } else {
                    "on-failure"
                },
                m.restart.delay.as_secs_f64(),
                m.restart.burst
            ),
        };
        let runs = match &m.program {
            Program::Node(extra) => {
                let extra: Vec<String> = extra.iter().map(|a| a.to_string_lossy().into_owned()).collect();
                let extra = if extra.is_empty() {
                    String::new()
                } else {
                    format!(" {}", extra.join(" "))
                };
                format!("{} (ring member's arguments){extra}", node_bin.display())
            }
            Program::Exec(path, argv) => {
                let args: Vec<String> = argv[1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
                format!("{} {}", path.display(), args.join(" ")).trim_end().to_string()
            }
        };
        out.push_str(&format!(
            "node {}{}: next {}, socket {}, ready {}, restart {policy}{}{}; runs {runs}\n",
            m.name,
            if i == foreground { " (foreground)" } else { "" },
            m.next,
            m.socket.as_str(),
            m.ready.as_str(),
            m.cpu.map_or(String::new(), |c| format!(", cpu {c}")),
            if m.show { "" } else { ", output hidden" },
        ));
    }
    out
}

impl Plan {
    /// The ring `--nodes` names (see [`generated`]), with the command
    /// line's ring options.
    #[cfg(test)]
    pub fn ring(
        dir: SocketDir,
        names: Vec<Name>,
        ring_next: Option<Name>,
        start: bool,
        foreground: usize,
        restart: Restart,
        options: RingOptions,
    ) -> Plan {
        let (members, remote, kick) = generated(names, ring_next, start, restart);
        Plan::with(dir, members, remote, kick, foreground, options)
    }

    /// A plan of these members, with the command line's ring options.
    pub fn with(
        dir: SocketDir,
        members: Vec<Member>,
        remote: Vec<Name>,
        kick: Option<(Name, Name)>,
        foreground: usize,
        options: RingOptions,
    ) -> Plan {
        let RingOptions {
            node_bin,
            log_dir,
            interval,
            quiet,
            count,
            allow_uids,
            all_output,
            json,
        } = options;
        Plan {
            node_bin,
            dir,
            members,
            remote,
            kick,
            foreground,
            log_dir,
            interval,
            quiet,
            count,
            allow_uids,
            all_output,
            json,
            file: None,
        }
    }

    /// The members' names, in order.
    pub fn names(&self) -> Vec<Name> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Whether member `i`'s message lines go to the launcher's stream
    /// (rather than to a log file, or nowhere).
    pub fn shows(&self, i: usize) -> bool {
        let shown = i == self.foreground || (self.all_output && self.log_dir.is_none());
        shown && self.members[i].show
    }

    /// Whether member `i`'s stderr reaches the user: the foreground's goes
    /// to the launcher's stderr, and with `--log-dir` every other's to its
    /// log; a background member's goes nowhere otherwise (a thousand
    /// nodes' warnings and summaries would drown the stream).
    pub fn keeps_stderr(&self, i: usize) -> bool {
        i == self.foreground || self.log_dir.is_some()
    }

    /// The program member `i` execs, and its argument vector.
    pub fn command(&self, i: usize) -> (PathBuf, Vec<OsString>) {
        match &self.members[i].program {
            Program::Node(extra) => (self.node_bin.clone(), self.node_args(i, extra)),
            Program::Exec(path, argv) => (path.clone(), argv.clone()),
        }
    }

    /// What member `i` finds in its environment besides what the launcher
    /// inherited: where the sockets are, its name and whom it answers,
    /// then its own variables (which win).
    pub fn env(&self, i: usize) -> Vec<(OsString, OsString)> {
        let m = &self.members[i];
        let mut vars: Vec<(OsString, OsString)> = vec![
            (env::DIR.into(), self.dir.path().as_os_str().to_owned()),
            (env::NAME.into(), m.name.as_str().into()),
            (env::NEXT.into(), m.next.as_str().into()),
        ];
        vars.retain(|(k, _)| !m.env.iter().any(|(key, _)| key == k));
        vars.extend(m.env.iter().cloned());
        vars
    }

    /// piper-node's command line for member `i`: the one place the
    /// launcher speaks the node's CLI. Options come first, with their
    /// values attached (`--next=NAME`), then `extra`, and the name last
    /// after `--`, so that a name beginning with `-` is never read as an
    /// option. The directory is passed as the bytes it is, UTF-8 or not.
    fn node_args(&self, i: usize, extra: &[OsString]) -> Vec<OsString> {
        let m = &self.members[i];
        let mut dir = OsString::from("--dir=");
        dir.push(self.dir.path());
        let mut args: Vec<OsString> = vec!["piper-node".into(), dir, format!("--next={}", m.next).into()];
        if self.dir.namespace() == Namespace::Abstract {
            args.push("--abstract".into());
        }
        if let Some(ms) = self.interval {
            args.push(format!("--interval={ms}").into());
        }
        if self.quiet {
            args.push("--quiet".into());
        }
        for uid in &self.allow_uids {
            args.push(format!("--allow-uid={uid}").into());
        }
        if let (true, Some(count)) = (i == self.foreground, self.count) {
            args.push(format!("--count={count}").into());
        }
        if i == self.foreground && self.json {
            args.push("--json".into());
        }
        args.extend(extra.iter().cloned());
        args.extend(["--".into(), m.name.as_str().into()]);
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use piper_launch::cli::RestartPolicy;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::time::Duration;

    fn options() -> RingOptions {
        RingOptions {
            node_bin: PathBuf::from("/bin/false"),
            log_dir: None,
            interval: Some(5),
            quiet: true,
            count: Some(7),
            allow_uids: vec![65534],
            all_output: true,
            json: false,
        }
    }

    fn restart() -> Restart {
        Restart {
            policy: RestartPolicy::No,
            delay: Duration::from_millis(100),
            burst: 5,
            interval: Duration::from_secs(10),
            foreground: false,
        }
    }

    fn plan(dir: &[u8], names: &[&str], ring_next: Option<&str>) -> Plan {
        let dir = std::path::Path::new(std::ffi::OsStr::from_bytes(dir));
        let names: Vec<Name> = names.iter().map(|n| Name::new(n).unwrap()).collect();
        let foreground = names.len() - 1;
        let next = ring_next.map(|n| Name::new(n).unwrap());
        Plan::ring(
            SocketDir::open_abstract(dir).unwrap(),
            names,
            next,
            true,
            foreground,
            restart(),
            options(),
        )
    }

    fn args(plan: &Plan, i: usize) -> Vec<Vec<u8>> {
        plan.command(i).1.into_iter().map(|a| a.into_vec()).collect()
    }

    #[test]
    fn each_node_answers_the_next_and_only_the_foreground_counts() {
        let plan = plan(b"/run/p", &["ping", "pong"], None);
        let want = |next: &str, name: &str, count: bool| {
            let mut v: Vec<Vec<u8>> = ["piper-node", "--dir=/run/p", &format!("--next={next}"), "--abstract"]
                .iter()
                .chain(&["--interval=5", "--quiet", "--allow-uid=65534"])
                .map(|s| s.as_bytes().to_vec())
                .collect();
            if count {
                v.push(b"--count=7".to_vec());
            }
            v.extend([b"--".to_vec(), name.as_bytes().to_vec()]);
            v
        };
        assert_eq!(args(&plan, 0), want("pong", "ping", false));
        assert_eq!(args(&plan, 1), want("ping", "pong", true));
        assert_eq!(plan.command(0).0, PathBuf::from("/bin/false"));
        assert_eq!(
            plan.kick,
            Some((plan.members[0].name.clone(), plan.members[1].name.clone()))
        );
    }

    #[test]
    fn a_ring_closed_elsewhere_ends_at_its_ring_next() {
        let plan = plan(b"/run/p", &["a1", "a2"], Some("b1"));
        assert_eq!(args(&plan, 0)[2], b"--next=a2");
        assert_eq!(args(&plan, 1)[2], b"--next=b1");
        assert_eq!(plan.remote, [Name::new("b1").unwrap()]);
        let one = self::plan(b"/run/p", &["a1"], Some("b1"));
        assert_eq!(args(&one, 0)[2], b"--next=b1");
        // A lone node is started with the name of the node it answers.
        let kick = one.kick.as_ref().map(|(from, to)| (from.as_str(), to.as_str()));
        assert_eq!(kick, Some(("b1", "a1")));
    }

    #[test]
    fn names_that_look_like_options_and_non_utf8_dirs_pass_unharmed() {
        let plan = plan(b"/run/bad\xffdir", &["-x", "--version"], None);
        let a = args(&plan, 0);
        assert_eq!(a[1], b"--dir=/run/bad\xffdir");
        assert_eq!(a[2], b"--next=--version");
        assert_eq!(a[a.len() - 2..], [b"--".to_vec(), b"-x".to_vec()]);
    }

    #[test]
    fn every_program_learns_its_dir_name_and_next_and_its_own_variables_win() {
        let mut plan = plan(b"/run/p", &["a", "b"], None);
        plan.members[1].env = vec![("PIPER_NEXT".into(), "z".into()), ("X".into(), "1".into())];
        let env = |i| {
            let vars: Vec<(OsString, OsString)> = plan.env(i);
            vars.into_iter()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect::<Vec<_>>()
        };
        assert_eq!(env(0), ["PIPER_DIR=/run/p", "PIPER_NAME=a", "PIPER_NEXT=b"]);
        assert_eq!(env(1), ["PIPER_DIR=/run/p", "PIPER_NAME=b", "PIPER_NEXT=z", "X=1"]);
    }

    #[test]
    fn extra_arguments_come_before_the_name() {
        let mut plan = plan(b"/run/p", &["a", "b"], None);
        plan.members[0].program = Program::Node(vec!["--interval=9".into()]);
        let a = args(&plan, 0);
        assert_eq!(a[a.len() - 3..], [&b"--interval=9"[..], b"--", b"a"]);
        plan.members[1].program = Program::Exec("/usr/bin/python3".into(), vec!["python3".into(), "n.py".into()]);
        assert_eq!(args(&plan, 1), [&b"python3"[..], b"n.py"]);
        assert_eq!(plan.command(1).0, PathBuf::from("/usr/bin/python3"));
    }
}
