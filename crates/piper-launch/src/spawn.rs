//! Finding `piper-node` and starting one process per node: fork and exec,
//! no shell, each child in its own process group and tied to the launcher's
//! life by `PR_SET_PDEATHSIG`.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use piper_core::{Name, Namespace, SocketDir};

/// Everything needed to start the ring.
#[derive(Debug)]
pub struct Plan {
    /// The node binary.
    pub node_bin: PathBuf,
    /// The socket directory.
    pub dir: SocketDir,
    /// The nodes, in ring order: node i answers node i+1.
    pub names: Vec<Name>,
    /// Index of the node whose output is shown.
    pub foreground: usize,
    /// Where background nodes' output goes, if kept.
    pub log_dir: Option<PathBuf>,
    /// `--interval` for every node.
    pub interval: Option<u64>,
    /// `--quiet` for every node.
    pub quiet: bool,
    /// `--count` for the foreground node.
    pub count: Option<u64>,
    /// `--allow-uid` for every node.
    pub allow_uids: Vec<u32>,
}

/// Finds piper-node: `flag`, else next to this executable, else on PATH.
pub fn find_node_binary(flag: Option<&Path>) -> Result<PathBuf, String> {
    const HOW: &str = "build it with `cargo build --release` or pass --node-bin PATH";
    if let Some(path) = flag {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "--node-bin {} is not an executable file; {HOW}",
                path.display()
            ))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("piper-node")));
    if let Some(path) = beside.as_ref().filter(|p| is_executable(p)) {
        return Ok(path.clone());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("piper-node"))
        .find(|p| is_executable(p));
    on_path.ok_or_else(|| {
        let beside = beside.map_or("(unknown)".into(), |p| p.display().to_string());
        format!("piper-node not found: looked at {beside} and on PATH; {HOW}")
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts node `i` of the plan, reporting readiness to `notify_socket`.
pub fn start(plan: &Plan, i: usize, notify_socket: &str) -> Result<Pid, String> {
    let name = &plan.names[i];
    let next = &plan.names[(i + 1) % plan.names.len()];
    let mut cmd = Command::new(&plan.node_bin);
    cmd.arg(name.as_str())
        .arg("--dir")
        .arg(plan.dir.path())
        .args(["--next", next.as_str()])
        .env("NOTIFY_SOCKET", notify_socket)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .process_group(0);
    if plan.dir.namespace() == Namespace::Abstract {
        cmd.arg("--abstract");
    }
    if let Some(ms) = plan.interval {
        cmd.args(["--interval", &ms.to_string()]);
    }
    if plan.quiet {
        cmd.arg("--quiet");
    }
    for uid in &plan.allow_uids {
        cmd.args(["--allow-uid", &uid.to_string()]);
    }
    if i == plan.foreground {
        if let Some(count) = plan.count {
            cmd.args(["--count", &count.to_string()]);
        }
    } else if let Some(log_dir) = &plan.log_dir {
        let path = log_dir.join(format!("{name}.log"));
        let log = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot use {}: {e}", path.display()))?;
        cmd.stdout(log).stderr(err);
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let launcher = nix::unistd::getpid();
    // SAFETY: between fork and exec the closure calls only prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // A launcher that dies, even by SIGKILL, takes its nodes along.
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // If it died before prctl took effect, no signal will ever come:
            // the prctl(2) race. Our parent is then no longer the launcher.
            if nix::unistd::getppid() != launcher {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start node '{name}' ({}): {e}", plan.node_bin.display()))?;
    Ok(Pid::from_raw(child.id() as i32))
}
