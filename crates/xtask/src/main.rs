//! Build-time tasks, kept out of the runtime binaries' dependency trees:
//!
//! - `cargo xtask dist DIR`: the man pages (`DIR/man/man1/*.1`) and the
//!   shell completions (`DIR/completions/{bash,zsh,fish}/`), made from the
//!   same clap definitions as `--help`, so they can never drift from it;
//! - `cargo xtask msrv`: checks, offline, that no locked dependency needs a
//!   newer Rust than the workspace's `rust-version` says.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["dist", dir] => dist(Path::new(dir)),
        ["msrv"] => msrv(),
        _ => Err("usage: cargo xtask dist DIR | cargo xtask msrv".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one program's documentation is made from.
struct Program {
    command: clap::Command,
    examples: &'static [(&'static str, &'static str)],
    environment: &'static [(&'static str, &'static str)],
    exits: &'static [piper_cli::exit::Row],
    /// Whether it has completions of its own (a subcommand's are its
    /// program's).
    completions: bool,
}

fn programs() -> Vec<Program> {
    vec![
        Program {
            command: piper_node::cli::Args::command().name("piper-node"),
            examples: piper_node::cli::EXAMPLES,
            environment: piper_node::cli::ENVIRONMENT,
            exits: piper_cli::exit::NODE,
            completions: true,
        },
        Program {
            command: piper_launch::cli::Args::command().name("piper-launch"),
            examples: piper_launch::cli::EXAMPLES,
            environment: piper_launch::cli::ENVIRONMENT,
            exits: piper_cli::exit::LAUNCHER,
            completions: true,
        },
        Program {
            // A page of its own, as git's subcommands have: `man piper-launch-ctl`.
            command: piper_launch::cli::Args::command()
                .find_subcommand("ctl")
                .expect("piper-launch has ctl")
                .clone()
                .name("piper-launch-ctl")
                .bin_name("piper-launch ctl")
                .version(env!("CARGO_PKG_VERSION")),
            examples: piper_launch::cli::CTL_EXAMPLES,
            environment: &piper_launch::cli::ENVIRONMENT[..2],
            exits: piper_cli::exit::CTL,
            completions: false,
        },
        Program {
            command: piper_bridge::cli::Args::command().name("piper-bridge"),
            examples: piper_bridge::cli::EXAMPLES,
            environment: piper_bridge::cli::ENVIRONMENT,
            exits: piper_cli::exit::BRIDGE,
            completions: true,
        },
    ]
}

fn dist(dir: &Path) -> Result<(), String> {
    let man_dir = dir.join("man/man1");
    let mut made = Vec::new();
    for program in programs() {
        let name = program.command.get_name().to_string();
        let page = man_page(&program).map_err(|e| e.to_string())?;
        made.push(write(&man_dir.join(format!("{name}.1")), &page)?);
        if !program.completions {
            continue;
        }
        for (shell, sub, file) in [
            (Shell::Bash, "bash", name.clone()),
            (Shell::Zsh, "zsh", format!("_{name}")),
            (Shell::Fish, "fish", format!("{name}.fish")),
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut program.command.clone(), &name, &mut script);
            if shell == Shell::Bash {
                script = bash_subcommands_found(&name, script);
            }
            made.push(write(&dir.join("completions").join(sub).join(file), &script)?);
        }
    }
    for path in made {
        println!("{}", path.display());
    }
    Ok(())
}

/// clap_complete's bash script for a hyphenated program names its
/// subcommands' states two ways (`piper__launch__subcmd__ctl` where it
/// walks the words, `piper__subcmd__launch__subcmd__ctl` where it answers),
/// so `piper-launch ctl <TAB>` offered nothing: the answering side is
/// renamed to match.
fn bash_subcommands_found(name: &str, script: Vec<u8>) -> Vec<u8> {
    let walked = name.replace('-', "__");
    let answered = name.replace('-', "__subcmd__");
    String::from_utf8_lossy(&script)
        .replace(&format!("{answered}__"), &format!("{walked}__"))
        .into_bytes()
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    std::fs::create_dir_all(path.parent().expect("a parent")).map_err(fail)?;
    std::fs::write(path, bytes).map_err(fail)?;
    Ok(path.to_path_buf())
}

/// clap_mangen's sections, then EXAMPLES, ENVIRONMENT and EXIT STATUS from
/// the same tables the long help shows.
fn man_page(program: &Program) -> std::io::Result<Vec<u8>> {
    // The long help's tail is ours to render: clap_mangen would repeat it
    // as plain text.
    let command = program
        .command
        .clone()
        .after_help(None::<&str>)
        .after_long_help(None::<&str>);
    let man = Man::new(command);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    synopsis(&program.command).to_writer(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if program.command.has_subcommands() {
        commands(&program.command).to_writer(&mut out)?;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    for (command, what) in program.examples {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(*command)]);
        roff.text([roman(*what)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, what) in program.environment {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(*var)]);
        roff.text([roman(*what)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in program.exits {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(code.replace('*', ""))]);
        roff.text([roman(what.replace('`', ""))]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let other = match program.command.get_name() {
        "piper-node" => "piper-launch(1), piper-bridge(1)",
        "piper-launch" => "piper-launch-ctl(1), piper-node(1), piper-bridge(1)",
        "piper-launch-ctl" => "piper-launch(1), piper-node(1)",
        _ => "piper-node(1), piper-launch(1), mosquitto(8)",
    };
    roff.text([roman(format!("{other}, systemd.socket(5), sd_notify(3)"))]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    out.flush()?;
    Ok(out)
}

/// The SYNOPSIS section: every option with its value's name (clap_mangen
/// shows `[--dir]`, leaving out what the option takes), then the
/// positional arguments.
fn synopsis(command: &clap::Command) -> Roff {
    // Built, so that --help and --version are there too.
    let mut command = command.clone();
    command.build();
    let name = command.get_bin_name().unwrap_or(command.get_name()).to_string();
    let mut line: Vec<Inline> = vec![bold(name)];
    let visible = command.get_arguments().filter(|a| !a.is_hide_set());
    let (positional, options): (Vec<&clap::Arg>, Vec<&clap::Arg>) = visible.partition(|a| a.is_positional());
    for arg in options {
        let value = arg.get_action().takes_values().then(|| {
            let names = arg.get_value_names().map(|n| n.join(" "));
            names.unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
        });
        let (open, close) = if arg.is_required_set() { ("", "") } else { ("[", "]") };
        line.push(roman(format!(" {open}")));
        let mut flags = Vec::new();
        if let Some(short) = arg.get_short() {
            flags.push(format!("-{short}"));
        }
        if let Some(long) = arg.get_long() {
            flags.push(format!("--{long}"));
        }
        for (k, flag) in flags.into_iter().enumerate() {
            if k > 0 {
                line.push(roman("|"));
            }
            line.push(bold(flag));
        }
        if let Some(value) = value {
            line.push(roman(" "));
            line.push(italic(value));
        }
        line.push(roman(close));
    }
    for arg in positional {
        let name = arg
            .get_value_names()
            .map_or(arg.get_id().as_str().to_uppercase(), |n| n.join(" "));
        let (open, close) = if arg.is_required_set() { ("", "") } else { ("[", "]") };
        line.extend([roman(format!(" {open}")), italic(name), roman(close)]);
    }
    if command.has_subcommands() {
        line.push(roman(" ["));
        line.push(italic("COMMAND"));
        line.push(roman("]"));
    }
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text(line);
    roff
}

/// The COMMANDS section: each subcommand with what it takes and its help
/// (clap_mangen's own section points to a page per subcommand, which we
/// make only for `ctl`).
fn commands(command: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let mut line = vec![bold(sub.get_name().to_string())];
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set()) {
            let (open, close) = if arg.is_required_set() { ("", "") } else { ("[", "]") };
            let many = matches!(arg.get_action(), clap::ArgAction::Append);
            line.push(roman(format!(" {open}")));
            match arg.get_long() {
                Some(long) => line.push(bold(format!("--{long}"))),
                None => {
                    let name = arg.get_value_names().map_or(arg.get_id().to_string(), |n| n.join(" "));
                    line.push(italic(name));
                    if many {
                        line.push(roman("..."));
                    }
                }
            }
            line.push(roman(close));
        }
        roff.control("TP", [] as [&str; 0]);
        roff.text(line);
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let see = match command.get_name() {
            "piper-launch" => format!(" (see {}-{}(1))", command.get_name(), sub.get_name()),
            _ => String::new(),
        };
        roff.text([roman(format!("{about}{see}"))]);
    }
    roff
}

/// Every locked package's `rust-version`, from `cargo metadata` (offline:
/// the lock file and the registry cache are all it reads), against the
/// workspace's.
fn msrv() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let packages = meta["packages"].as_array().ok_or("no packages in cargo metadata")?;
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .ok_or("no workspace members")?
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let version = |p: &serde_json::Value| p["rust_version"].as_str().map(parse_version);
    let ours = packages
        .iter()
        .filter(|p| members.contains(&p["id"].as_str().unwrap_or("")))
        .filter_map(version)
        .max()
        .ok_or("the workspace declares no rust-version")?;
    let mut newer = Vec::new();
    let mut checked = 0;
    for p in packages {
        checked += 1;
        if let Some(needs) = version(p) {
            if needs > ours {
                newer.push(format!("{} {} needs Rust {}", p["name"], p["version"], show(needs)));
            }
        }
    }
    if newer.is_empty() {
        println!(
            "msrv: every one of {checked} locked packages builds with Rust {}",
            show(ours)
        );
        Ok(())
    } else {
        Err(format!(
            "the workspace says Rust {}, but:\n  {}",
            show(ours),
            newer.join("\n  ")
        ))
    }
}

fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn show((a, b, c): (u32, u32, u32)) -> String {
    format!("{a}.{b}.{c}")
}
