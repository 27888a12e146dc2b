//! What a user sees of a running ring: every node's lines in one stream,
//! a status line on a terminal, live counts, and machine-readable state.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use piper_tests::{bin, launch_cmd, may_run, node_cmd, state, wait_until, Dir, Needs, Proc, Ready, PROMPT};

/// Parses JSON with Python's json module (strict, and independent of ours);
/// returns Python's ASCII repr of the value, one per input line.
fn python_json(lines: &str) -> Vec<String> {
    let script = "import json, sys\nfor line in sys.stdin.read().splitlines():\n    print(ascii(json.loads(line)))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not JSON:\n{lines}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The JSON ring summary's per-node counts, from its text.
fn member_counts(summary: &str) -> HashMap<String, [u64; 3]> {
    let members = summary.split("\"members\":[").nth(1).expect("members");
    members
        .split("},{")
        .map(|m| {
            let field = |key: &str| -> String {
                let rest = m.split(&format!("\"{key}\":")).nth(1).unwrap();
                rest.split([',', '}']).next().unwrap().trim_matches('"').to_string()
            };
            let n = |key: &str| field(key).parse::<u64>().unwrap();
            (field("name"), [n("received"), n("sent"), n("dropped")])
        })
        .collect()
}

#[test]
fn a_pipe_gets_every_nodes_lines_exactly_as_the_seed_prints_them() {
    // Python's json module is the independent judge of our JSON.
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    let dir = Dir::new("out-pingpong");
    let mut launcher = Proc::spawn(
        &dir,
        "launch",
        launch_cmd(&dir, &["--nodes", "ping,pong", "--count", "300", "--json"]),
    );
    assert_eq!(launcher.code(PROMPT), Some(0));
    let lines = launcher.lines();
    // The seed's two lines, nothing else, no prefix: ping's and pong's.
    let pong = lines.iter().filter(|l| *l == "pong received: 'ping'").count();
    let ping = lines.iter().filter(|l| *l == "ping received: 'pong'").count();
    assert_eq!(pong, 300);
    assert_eq!(ping + pong, lines.len(), "only whole seed lines");
    let err = launcher.stderr();
    let summary = err.lines().last().unwrap();
    let counts = member_counts(summary);
    assert_eq!(counts["pong"][0], 300);
    assert_eq!(counts["ping"][0] as usize, ping, "ping's lines are ping's count");
    assert_eq!(python_json(summary).len(), 1);
}

#[test]
fn a_200_node_ring_at_full_speed_keeps_every_line_whole() {
    let dir = Dir::new("out-200");
    let mut launcher = Proc::spawn(
        &dir,
        "launch",
        launch_cmd(&dir, &["--nodes", "200", "--count", "50", "--json"]),
    );
    assert_eq!(launcher.code(Duration::from_secs(60)), Some(0));
    let mut per_node: HashMap<String, u64> = HashMap::new();
    for line in launcher.lines() {
        // nodeK received: 'nodeK-1' (node1 hears from node200).
        let (name, from) = line
            .strip_suffix('\'')
            .and_then(|l| l.split_once(" received: '"))
            .unwrap_or_else(|| panic!("a torn line: {line:?}"));
        let k: u64 = name.strip_prefix("node").unwrap().parse().unwrap();
        let j: u64 = from.strip_prefix("node").unwrap().parse().unwrap();
        assert_eq!(j, if k == 1 { 200 } else { k - 1 }, "{line}");
        *per_node.entry(name.to_string()).or_default() += 1;
    }
    // Each node's lines are exactly the count it reported to the launcher.
    let summary = launcher.stderr().lines().last().unwrap().to_string();
    let counts = member_counts(&summary);
    assert_eq!(counts.len(), 200);
    assert_eq!(counts["node200"][0], 50);
    for (name, [received, ..]) in &counts {
        assert_eq!(per_node.get(name).copied().unwrap_or(0), *received, "{name}");
    }
    // And the totals are the sum of the nodes' own counts.
    let total: u64 = counts.values().map(|c| c[0]).sum();
    assert!(summary.contains(&format!("\"received\":{total},")), "{summary}");
}

#[test]
fn the_ring_summary_adds_up_the_nodes_own_summaries() {
    let dir = Dir::new("out-sums");
    let logs = dir.aux("logs");
    let args = ["--nodes", "6", "--count", "40", "--log-dir", logs.to_str().unwrap()];
    let mut launcher = Proc::spawn(&dir, "launch", launch_cmd(&dir, &args));
    assert_eq!(launcher.code(PROMPT), Some(0));
    let err = launcher.stderr();
    let mut own = [0u64; 3];
    for k in 1..=6 {
        let text = match k {
            6 => err.clone(),
            _ => std::fs::read_to_string(logs.join(format!("node{k}.log"))).unwrap(),
        };
        let s = piper_tests::summary(&text);
        own[0] += s.received;
        own[1] += s.sent;
        own[2] += s.dropped;
    }
    let ring = err
        .lines()
        .find(|l| l.starts_with("piper-launch: ring of 6: "))
        .expect("a ring summary");
    let want = format!("received {}, sent {}, dropped {};", own[0], own[1], own[2]);
    assert!(ring.contains(&want), "{ring} vs {want}");
    assert!(ring.ends_with("6 exited 0"), "{ring}");
}

#[test]
fn final_counts_wait_for_no_one_while_the_launcher_is_stopped() {
    // 30 nodes: three times what one notify socket's queue holds (10). Each
    // node's last counts must find room at once, with nobody reading: a
    // node that had to wait for the launcher would give up after a second
    // and its counts be lost.
    let dir = Dir::new("out-final");
    let logs = dir.aux("logs");
    let args = ["--nodes", "30", "--json", "--log-dir", logs.to_str().unwrap()];
    let mut launcher = Proc::spawn(&dir, "launch", launch_cmd(&dir, &args));
    assert!(piper_tests::wait_until(PROMPT, || launcher
        .stderr()
        .contains("nodes ready in")));
    let pids: Vec<_> = (1..=30)
        .map(|k| piper_tests::node_pid(&dir, &format!("node{k}"), PROMPT).expect("a node"))
        .collect();
    launcher.signal(Signal::SIGSTOP);
    for &pid in &pids {
        // Verified nodes of this test's ring (node_pid), not yet reaped:
        // the launcher, stopped, cannot reap them.
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    }
    let zombie = |pid| piper_tests::state(pid) == 'Z';
    assert!(
        piper_tests::wait_until(PROMPT, || pids.iter().all(|&pid| zombie(pid))),
        "every node ends while nobody reads its reports"
    );
    launcher.signal(Signal::SIGCONT);
    assert_eq!(launcher.code(PROMPT), Some(0), "the foreground ended with 0");
    let err = launcher.stderr();
    let counts = member_counts(err.lines().last().unwrap());
    assert_eq!(counts.len(), 30);
    for k in 1..=30 {
        let name = format!("node{k}");
        let own = match k {
            30 => piper_tests::summary(&err),
            _ => piper_tests::summary(&std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap()),
        };
        assert_eq!(counts[&name], [own.received, own.sent, own.dropped], "{name}");
    }
}

#[test]
fn on_a_terminal_lines_carry_names_and_a_status_line_counts() {
    if !may_run(Needs::Tool("script")) {
        return;
    }
    let dir = Dir::new("out-tty");
    let launch = format!(
        "{} --dir {} --nodes ping,pong,third --interval 50 --count 30",
        bin("piper-launch").display(),
        dir.path().display()
    );
    // `script` gives the launcher a pseudo-terminal for stdout and stderr.
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &launch, "/dev/null"]).env_remove("NO_COLOR");
    let mut run = Proc::spawn(&dir, "tty", cmd);
    assert_eq!(run.code(PROMPT), Some(0));
    let text = run.stdout();
    // Names padded to the longest, in a colour each.
    assert!(
        text.contains("\x1b[33mpong  |\x1b[0m pong received: 'ping'"),
        "{text:?}"
    );
    assert!(
        text.contains("\x1b[32mthird |\x1b[0m third received: 'pong'"),
        "{text:?}"
    );
    // The foreground's exit summary: under a status line its stderr comes
    // through a pipe, and the launcher writes it out.
    assert!(text.contains("piper-node[third]: received 30, "), "{text:?}");
    // The others' summaries would be a thousand nodes' noise: the ring
    // summary counts for them.
    assert!(
        !text.contains("piper-node[ping]") && !text.contains("piper-node[pong]"),
        "{text:?}"
    );
    // A status line whose counts grow, and never a line written into it.
    let statuses: Vec<u64> = text
        .split("\r\x1b[K")
        .filter_map(|s| s.strip_prefix("piper-launch: 3/3 alive, "))
        .filter_map(|s| s.split("received ").nth(1)?.split(',').next()?.parse().ok())
        .collect();
    assert!(statuses.len() >= 2, "{text:?}");
    // And a rate: a hop every 50 ms is about 20 messages a second.
    let rates: Vec<f64> = text
        .split("\r\x1b[K")
        .filter_map(|s| s.strip_prefix("piper-launch: 3/3 alive, "))
        .filter_map(|s| s.split(" msg/s").next()?.parse().ok())
        .collect();
    assert!(rates.iter().any(|&r| (5.0..=40.0).contains(&r)), "{rates:?}");
    assert!(statuses.last() > statuses.first(), "{statuses:?}");
    for piece in text
        .split("\r\x1b[K")
        .filter(|p| p.starts_with("piper-launch: 3/3 alive"))
    {
        assert!(
            !piece.contains("received: '") && !piece.contains("piper-node["),
            "a line inside the status line: {piece:?}"
        );
    }
    // While nodes start, the progress is drawn ten times a second at most,
    // not once per node.
    let many = format!(
        "{} --dir {} --nodes 40 --count 1 --quiet",
        bin("piper-launch").display(),
        dir.path().display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &many, "/dev/null"]);
    let mut run = Proc::spawn(&dir, "tty-progress", cmd);
    assert_eq!(run.code(PROMPT), Some(0));
    let text = run.stdout();
    let ready: f64 = text
        .split("40 nodes ready in ")
        .nth(1)
        .and_then(|s| s.split('s').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no ready line in {text:?}"));
    let starting = text
        .split("\r\x1b[K")
        .filter(|p| p.starts_with("piper-launch: started ") && !p.starts_with("piper-launch: started 40/40"))
        .count();
    assert!(
        starting as f64 <= ready / 0.1 + 1.0,
        "{starting} redraws in {ready}s: {text:?}"
    );
    let no_color = Command::new("script")
        .args(["-qfec", &launch, "/dev/null"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&no_color.stdout);
    assert!(
        text.contains("pong  | pong received: 'ping'") && !text.contains("\x1b[33m"),
        "{text:?}"
    );
}

#[test]
fn prefixes_and_timestamps_on_request_and_the_foreground_alone() {
    let dir = Dir::new("out-flags");
    let mut launcher = Proc::spawn(
        &dir,
        "prefix",
        launch_cmd(&dir, &["--nodes", "a,bb", "--count", "3", "--prefix", "--timestamps"]),
    );
    assert_eq!(launcher.code(PROMPT), Some(0));
    for line in launcher.lines() {
        let (time, rest) = line.trim_start().split_once(' ').unwrap();
        assert!(time.parse::<f64>().is_ok(), "{line}");
        assert!(
            rest == "bb | bb received: 'a'" || rest == "a  | a received: 'bb'",
            "{line}"
        );
    }
    // Timestamps alone: no prefix, and still relayed to be dressed.
    let mut launcher = Proc::spawn(
        &dir,
        "stamps",
        launch_cmd(&dir, &["--nodes", "a,bb", "--count", "3", "--timestamps"]),
    );
    assert_eq!(launcher.code(PROMPT), Some(0));
    let lines = launcher.lines();
    // bb's three, and a's two or three: bb's last answer reaches a, or the
    // teardown that bb's end starts gets there first (seen on a loaded run).
    let bb = lines.iter().filter(|l| l.ends_with("bb received: 'a'")).count();
    assert!(bb == 3 && (5..=6).contains(&lines.len()), "{lines:?}");
    for line in lines {
        let (time, rest) = line.trim_start().split_once(' ').unwrap();
        assert!(time.parse::<f64>().is_ok(), "{line}");
        assert!(rest == "bb received: 'a'" || rest == "a received: 'bb'", "{line}");
    }
    let mut launcher = Proc::spawn(
        &dir,
        "fg",
        launch_cmd(&dir, &["--nodes", "a,bb", "--count", "3", "--output", "foreground"]),
    );
    assert_eq!(launcher.code(PROMPT), Some(0));
    assert_eq!(launcher.lines(), vec!["bb received: 'a'"; 3]);
    // Relayed lines come as they are printed, not at the end.
    let mut launcher = Proc::spawn(
        &dir,
        "live",
        launch_cmd(&dir, &["--nodes", "a,bb", "--interval", "20", "--prefix"]),
    );
    let seen = |l: &Proc| l.lines().contains(&"bb | bb received: 'a'".to_string());
    assert!(wait_until(PROMPT, || seen(&launcher)), "{:?}", launcher.lines());
    launcher.signal(Signal::SIGTERM);
    assert_eq!(launcher.code(PROMPT), Some(0));
}

#[test]
fn list_and_summaries_in_json_parse_and_carry_the_right_values() {
    // Python's json module is the independent judge of our JSON.
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    let dir = Dir::new("out-json");
    let mut ready = Ready::new();
    let mut pong = piper_tests::start_node(&dir, &mut ready, "pong", "pong", &["--json", "--count", "6"]);
    let mut list = Proc::spawn(&dir, "list", {
        let mut c = Command::new(bin("piper-node"));
        c.arg("--list").arg("--json").arg("--dir").arg(dir.path());
        c
    });
    assert_eq!(list.code(PROMPT), Some(0));
    let want = format!(
        "{{'name': 'pong', 'pid': {}, 'state': 'live', 'path': '{}'}}",
        pong.pid(),
        dir.join("piper-pong").display()
    );
    assert_eq!(python_json(&list.stdout()), [want]);
    let mut ping = Proc::spawn(
        &dir,
        "ping",
        node_cmd(&dir, "ping", &["--send", "pong", "--count", "5"]),
    );
    assert_eq!(ping.code(PROMPT), Some(0));
    assert_eq!(pong.code(PROMPT), Some(0), "--count 6 ends pong");
    let summary = pong.stderr().lines().last().unwrap().to_string();
    let parsed = &python_json(&summary)[0];
    // pong's last answer finds ping either still draining (sent) or gone
    // (dropped): one of the two, never both.
    let sent_last = "{'node': 'pong', 'received': 6, 'sent': 6, 'dropped': 0, 'refused': 0, 'elapsed': ";
    let dropped_last = "{'node': 'pong', 'received': 6, 'sent': 5, 'dropped': 1, 'refused': 0, 'elapsed': ";
    assert!(
        parsed.starts_with(sent_last) || parsed.starts_with(dropped_last),
        "{parsed}"
    );
    assert!(parsed.contains("'active': ") && parsed.contains("'rate': "), "{parsed}");
}

#[test]
fn json_escapes_quotes_backslashes_and_non_utf8_bytes_in_paths() {
    // Python's json module is the independent judge of our JSON.
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = Dir::new("out-escape");
    let odd = dir.aux("").join(std::ffi::OsStr::from_bytes(b"q\"b\\s\xff"));
    let mut ready = Ready::new();
    let mut cmd = Command::new(bin("piper-node"));
    cmd.arg("n")
        .arg("--dir")
        .arg(&odd)
        .env("NOTIFY_SOCKET", ready.address());
    let mut node = Proc::spawn(&dir, "n", cmd);
    assert!(ready.wait(node.pid(), "READY=1", PROMPT));
    let out = Command::new(bin("piper-node"))
        .arg("--list")
        .arg("--json")
        .arg("--dir")
        .arg(&odd)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).expect("JSON is UTF-8");
    let parsed = &python_json(&text)[0];
    let mut bytes: Vec<u8> = odd.as_os_str().as_bytes().to_vec();
    bytes.extend(b"/piper-n");
    let byte_list: Vec<String> = bytes.iter().map(u8::to_string).collect();
    assert!(parsed.contains("q\"b\\\\s\\ufffd/piper-n'"), "{parsed}");
    assert!(
        parsed.ends_with(&format!("'path_bytes': [{}]}}", byte_list.join(", "))),
        "{parsed}"
    );
    node.signal(Signal::SIGTERM);
    assert_eq!(node.code(PROMPT), Some(0));
}

#[test]
fn the_json_summary_names_the_signal_that_killed_a_node() {
    let dir = Dir::new("out-json-signal");
    let mut launcher = Proc::spawn(
        &dir,
        "launch",
        launch_cmd(&dir, &["--nodes", "a,b", "--interval", "20", "--json"]),
    );
    assert!(wait_until(PROMPT, || launcher.stderr().contains("nodes ready in")));
    let b = piper_tests::node_pid(&dir, "b", PROMPT).expect("b runs");
    nix::sys::signal::kill(b, Signal::SIGKILL).unwrap();
    assert_eq!(launcher.code(PROMPT), Some(137));
    let err = launcher.stderr();
    let summary = err.lines().last().unwrap();
    assert_eq!(python_json(summary).len(), 1);
    let want = format!("{{\"name\":\"b\",\"pid\":{b},\"exit\":null,\"signal\":\"SIGKILL\",\"restarts\":0,");
    assert!(summary.contains(&want), "{summary}");
    assert!(summary.contains("{\"name\":\"a\",\"pid\":"), "{summary}");
}

/// What a terminal `cols` wide shows after `stream`: its rows, as a
/// terminal draws them (wrapping at the last column, as xterm does, when
/// the next character comes; `\r`, `\n`, backspace, and of the escape
/// sequences `ESC[K`, clear to the end of the row; colours are skipped).
fn screen(stream: &str, cols: usize) -> Vec<String> {
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col, mut wrap) = (0usize, 0usize, false);
    let mut chars = stream.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => (col, wrap) = (0, false),
            '\n' => (row, col, wrap) = (row + 1, 0, false),
            '\x08' => (col, wrap) = (col.saturating_sub(1), false),
            '\x1b' => {
                let mut sequence = String::new();
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        sequence.push(c);
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                if sequence == "K" {
                    rows[row].truncate(col);
                }
            }
            c if c.is_control() => {}
            c => {
                if wrap {
                    (row, col, wrap) = (row + 1, 0, false);
                }
                while rows.len() <= row {
                    rows.push(Vec::new());
                }
                let line = &mut rows[row];
                while line.len() < col {
                    line.push(' ');
                }
                match line.get_mut(col) {
                    Some(cell) => *cell = c,
                    None => line.push(c),
                }
                if col + 1 == cols {
                    wrap = true;
                } else {
                    col += 1;
                }
            }
        }
        while rows.len() <= row {
            rows.push(Vec::new());
        }
    }
    rows.into_iter().map(|r| r.into_iter().collect()).collect()
}

/// The status lines drawn in `stream`: what follows each `\r\x1b[K` that
/// starts as the running ring's status line does, up to the next control.
fn status_lines(stream: &str) -> Vec<&str> {
    stream
        .split("\r\x1b[K")
        .filter(|piece| {
            piece.strip_prefix("piper-launch: ").is_some_and(|rest| {
                rest.starts_with(|c: char| c.is_ascii_digit())
                    || rest.starts_with("started ")
                    || rest.starts_with("waiting ")
            })
        })
        .map(|piece| piece.split(['\r', '\n', '\x1b']).next().unwrap_or_default())
        .collect()
}

/// `command` run on a terminal of its own (`script`), where `{launch}`
/// stands for `piper-launch --dir DIR`.
fn on_terminal(dir: &Dir, label: &str, command: &str) -> Proc {
    let launch = format!("{} --dir {}", bin("piper-launch").display(), dir.path().display());
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &command.replace("{launch}", &launch), "/dev/null"]);
    Proc::spawn(dir, label, cmd)
}

#[test]
fn the_screen_model_wraps_and_clears_as_a_terminal_does() {
    assert_eq!(screen("abcdef", 4), ["abcd", "ef"]);
    assert_eq!(screen("abcd\r\x1b[Kxy", 4), ["xy"]);
    // A line wider than the terminal wraps; clearing its last row leaves
    // the first: the fragment a status line must never leave.
    assert_eq!(screen("abcdef\r\x1b[Kxy", 4), ["abcd", "xy"]);
    assert_eq!(screen("\x1b[33mab\x1b[0m\r\nc", 10), ["ab", "c"]);
}

#[test]
fn a_piped_stdout_gets_no_status_line_to_tear_its_lines() {
    if !may_run(Needs::Tool("script")) {
        return;
    }
    let dir = Dir::new("out-tty-pipe");
    // stderr on the terminal, stdout through `cat` onto the same terminal.
    let launch = "{launch} --nodes ping,pong --interval 20 --count 60 | cat";
    let mut run = on_terminal(&dir, "tty", launch);
    assert_eq!(run.code(PROMPT), Some(0));
    let text = run.stdout();
    assert!(!text.contains('\x1b'), "no status line, no escapes: {text:?}");
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let messages: Vec<&&str> = lines.iter().filter(|l| l.contains(" received: '")).collect();
    assert!(messages.len() >= 60, "{text:?}");
    for line in messages {
        assert!(
            ["ping received: 'pong'", "pong received: 'ping'"].contains(line),
            "a torn line: {line:?}"
        );
    }
}

#[test]
fn a_narrow_terminal_keeps_one_status_row_and_follows_a_resize() {
    if !may_run(Needs::Tool("script")) || !may_run(Needs::Tool("stty")) {
        return;
    }
    let dir = Dir::new("out-tty-narrow");
    let launch = "stty cols 40 rows 24; exec {launch} --nodes ping,pong --interval 20 --count 100";
    let mut run = on_terminal(&dir, "tty", launch);
    assert_eq!(run.code(PROMPT), Some(0));
    let text = run.stdout();
    let drawn = status_lines(&text);
    assert!(!drawn.is_empty(), "{text:?}");
    for status in &drawn {
        assert!(
            status.chars().count() < 40,
            "a status line wider than the terminal: {status:?}"
        );
    }
    // What stays on the screen: every line whole, and no piece of a status
    // line (a wrapped one left its first row behind).
    let rows = screen(&text, 40);
    let leftovers: Vec<&String> = rows.iter().filter(|r| r.contains("alive")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?} in {rows:#?}");

    // Wide, then narrowed while it runs: the next status line fits the
    // new width at once (SIGWINCH), not at the next start.
    let launch = "stty cols 120 rows 24; exec {launch} --nodes ping,pong --interval 20";
    let mut run = on_terminal(&dir, "tty-resize", launch);
    let wide = |run: &Proc| status_lines(&run.stdout()).iter().any(|s| s.chars().count() >= 40);
    assert!(wait_until(PROMPT, || wide(&run)), "{:?}", run.stdout());
    let launcher = run.children()[0];
    let terminal = std::fs::read_link(format!("/proc/{launcher}/fd/2")).unwrap();
    let resized = Command::new("stty")
        .arg("-F")
        .arg(&terminal)
        .args(["cols", "30"])
        .status()
        .unwrap();
    assert!(resized.success());
    let narrow = |run: &Proc| {
        status_lines(&run.stdout())
            .last()
            .is_some_and(|s| s.chars().count() == 29)
    };
    assert!(wait_until(PROMPT, || narrow(&run)), "{:?}", status_lines(&run.stdout()));
    nix::sys::signal::kill(launcher, Signal::SIGTERM).unwrap();
    assert_eq!(run.code(PROMPT), Some(0));
}

#[test]
fn ctrl_z_on_a_terminal_leaves_no_status_line_and_no_echo_behind() {
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    let dir = Dir::new("out-tty-tstp");
    // Not script(1): it stops when its child does, and may not have copied
    // what the child wrote last.
    let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fake/terminal.py"));
    cmd.args(["100", "24"])
        .arg(bin("piper-launch"))
        .arg("--dir")
        .arg(dir.path());
    cmd.args(["--nodes", "ping,pong", "--interval", "50"]);
    let mut run = Proc::spawn_with_input(&dir, "tty", cmd);
    // Running: a status line drawn after a message line (a status line
    // can come before the first message, and the screen is then checked
    // for a message line last).
    let running = |run: &Proc| {
        let text = run.stdout();
        text.rfind(" received: '")
            .is_some_and(|at| text[at..].contains("alive"))
    };
    assert!(wait_until(PROMPT, || running(&run)), "{:?}", run.stdout());
    let launcher = run.children()[0];
    // Ctrl-Z, typed: the terminal echoes ^Z and stops the launcher's group.
    run.input(b"\x1a");
    assert!(wait_until(PROMPT, || state(launcher) == 'T'), "not stopped");
    assert!(wait_until(PROMPT, || run.stdout().contains("^Z")), "{:?}", run.stdout());
    let stopped = run.stdout();
    let rows = screen(&stopped, 100);
    let last = rows.iter().rev().find(|r| !r.is_empty());
    assert!(
        last.is_some_and(|r| r.contains(" received: '")),
        "the screen at the stop ends with {last:?}: {rows:#?}"
    );
    assert!(
        !rows.iter().any(|r| r.contains("^Z") || r.contains("alive")),
        "{rows:#?}"
    );
    // fg: it goes on, status line and all.
    nix::sys::signal::kill(launcher, Signal::SIGCONT).unwrap();
    let drawn = status_lines(&stopped).len();
    assert!(wait_until(PROMPT, || status_lines(&run.stdout()).len() > drawn));
    nix::sys::signal::kill(launcher, Signal::SIGTERM).unwrap();
    assert_eq!(run.code(PROMPT), Some(0));
}

#[test]
fn a_reader_that_goes_away_ends_the_run_normally_with_its_counts() {
    use std::io::BufRead;
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    // `piper-launch --nodes ping,pong --json | head -5`, with the lines
    // written straight to the pipe, and relayed (--prefix).
    for (label, extra) in [("direct", None), ("relay", Some("--prefix"))] {
        let dir = Dir::new("out-head");
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let args: Vec<&str> = ["--nodes", "ping,pong", "--json"].into_iter().chain(extra).collect();
        let mut launcher = Proc::spawn_with_stdout(&dir, label, launch_cmd(&dir, &args), write.into());
        let mut head = std::io::BufReader::new(std::fs::File::from(read));
        for _ in 0..5 {
            let mut line = String::new();
            head.read_line(&mut line).unwrap();
            assert!(line.contains(" received: '"), "{label}: {line:?}");
        }
        drop(head);
        assert_eq!(launcher.code(PROMPT), Some(0), "{label}: {}", launcher.stderr());
        let err = launcher.stderr();
        for bad in [": warn: ", ": error: ", "Broken pipe", "exited with"] {
            assert!(!err.contains(bad), "{label}: {bad}: {err}");
        }
        // The foreground's summary, then the ring's, both JSON, the last line last.
        let objects: Vec<&str> = err.lines().filter(|l| l.starts_with('{')).collect();
        assert_eq!(objects.len(), 2, "{label}: {err}");
        assert_eq!(err.lines().last(), objects.last().copied(), "{label}: {err}");
        assert!(objects[0].starts_with("{\"node\":\"pong\""), "{label}: {err}");
        let ring = &python_json(objects[1])[0];
        let received: u64 = ring
            .split("'received': ")
            .nth(1)
            .and_then(|s| s.split(',').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{ring}"));
        assert!(
            received >= 5,
            "{label}: the counts of a run that printed 5 lines at least: {ring}"
        );
        assert_eq!(ring.matches("'exit': 0").count(), 2, "{label}: {ring}");
    }
    // A node run by hand: `piper-node pong | head -1`.
    let dir = Dir::new("out-head-node");
    let mut ready = Ready::new();
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut cmd = node_cmd(&dir, "pong", &[]);
    cmd.env("NOTIFY_SOCKET", ready.address());
    let mut pong = Proc::spawn_with_stdout(&dir, "pong", cmd, write.into());
    assert!(ready.wait(pong.pid(), "READY=1", PROMPT));
    let kicker = std::os::unix::net::UnixDatagram::unbound().unwrap();
    kicker.send_to(b"first", dir.join("piper-pong")).unwrap();
    let mut head = std::io::BufReader::new(std::fs::File::from(read));
    let mut line = String::new();
    head.read_line(&mut line).unwrap();
    assert_eq!(line, "pong received: 'first'\n");
    drop(head);
    kicker.send_to(b"second", dir.join("piper-pong")).unwrap();
    assert_eq!(pong.code(PROMPT), Some(0), "{}", pong.stderr());
    assert!(!pong.stderr().contains("error"), "{}", pong.stderr());
    assert_eq!(pong.summary().received, 2);
}

#[test]
fn under_json_a_failed_run_says_why_in_the_summary_which_comes_last() {
    if !may_run(Needs::Tool("python3")) {
        return;
    }
    let dir = Dir::new("out-json-fail");
    let mut cmd = launch_cmd(&dir, &["--nodes", "a,b", "--json", "--node-bin", "/bin/false"]);
    cmd.env("RUST_LOG", "off");
    let mut launcher = Proc::spawn(&dir, "launch", cmd);
    assert_eq!(launcher.code(PROMPT), Some(1));
    let err = launcher.stderr();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    // Both nodes exit at once; whichever the launcher reaps first is told.
    // A background node's stderr is not shown, and the line says so; the
    // foreground node's is, and the line says nothing more.
    let background = "piper-launch: error: node 'a' (pid ";
    let foreground = "piper-launch: error: node 'b' (pid ";
    let hint = ") exited with status 1 before the ring was ready (its stderr is not shown";
    let plain = ") exited with status 1 before the ring was ready";
    assert!(
        (lines[0].starts_with(background) && lines[0].contains(hint))
            || (lines[0].starts_with(foreground) && lines[0].ends_with(plain)),
        "{err}"
    );
    let summary = &python_json(lines[1])[0];
    let message = lines[0].strip_prefix("piper-launch: error: ").unwrap();
    assert!(summary.ends_with(&format!("'error': \"{message}\"}}")), "{summary}");
}

#[test]
fn a_launcher_in_the_background_draws_no_status_line_over_the_prompt() {
    if !may_run(Needs::Tool("python3")) || !may_run(Needs::Tool("sh")) {
        return;
    }
    let dir = Dir::new("out-tty-bg");
    // A shell with job control (set -m) runs the launcher as a background
    // job: in a process group of its own, not the terminal's foreground
    // one, as after `bg` or `&`.
    let launch = format!(
        "set -m; {} --dir {} --nodes ping,pong --interval 20 & wait",
        bin("piper-launch").display(),
        dir.path().display()
    );
    let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fake/terminal.py"));
    cmd.args(["100", "24", "sh", "-c", &launch]);
    let mut run = Proc::spawn_with_input(&dir, "tty", cmd);
    // Its lines come, as any background job's do: 100 of them, at a hop
    // every 20 ms, span two of the launcher's once-a-second ticks at least.
    let lines = |run: &Proc| run.stdout().matches(" received: '").count();
    assert!(wait_until(PROMPT, || lines(&run) >= 100), "{:?}", run.stdout());
    assert!(status_lines(&run.stdout()).is_empty(), "{:?}", run.stdout());
    let shell = run.children()[0];
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let launcher = nix::unistd::Pid::from_raw(children.split_whitespace().next().unwrap().parse().unwrap());
    nix::sys::signal::kill(launcher, Signal::SIGTERM).unwrap();
    assert_eq!(run.code(PROMPT), Some(0));
    assert!(status_lines(&run.stdout()).is_empty(), "{:?}", run.stdout());
}

/// A background node's log files in `logs`, oldest first (`a.log.N` …
/// `a.log.1`, then `a.log`), with their contents.
fn log_files(logs: &std::path::Path, name: &str) -> Vec<(String, String)> {
    let mut rotated: Vec<(u32, String)> = std::fs::read_dir(logs)
        .unwrap()
        .filter_map(|e| {
            let file = e.unwrap().file_name().into_string().unwrap();
            let n = file.strip_prefix(&format!("{name}.log."))?.parse().ok()?;
            Some((n, file))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    (rotated.into_iter().map(|(_, f)| f))
        .chain([format!("{name}.log")])
        .map(|f| {
            let text = std::fs::read_to_string(logs.join(&f)).unwrap();
            (f, text)
        })
        .collect()
}

#[test]
fn logs_rotate_at_full_speed_keeping_every_line_whole_and_in_order() {
    const MAX: usize = 32 * 1024;
    // Lines of 16 bytes ("a received: 'c'"): 2048 fill a file exactly.
    for keep in ["100", "2"] {
        let dir = Dir::new("out-rotate");
        let logs = dir.aux("logs");
        let max = MAX.to_string();
        let args = [
            "--nodes",
            "a,b,c",
            "--count",
            "20000",
            "--log-dir",
            logs.to_str().unwrap(),
            "--log-max-size",
            &max,
            "--log-keep",
            keep,
        ];
        let mut launcher = Proc::spawn(&dir, "launch", launch_cmd(&dir, &args));
        assert_eq!(launcher.code(PROMPT), Some(0), "{}", launcher.stderr());
        // Each node receives from the one before it in the ring.
        for (name, from) in [("a", "c"), ("b", "a")] {
            let files = log_files(&logs, name);
            let line = format!("{name} received: '{from}'");
            let all: String = files.iter().map(|(_, text)| text.as_str()).collect();
            let lines: Vec<&str> = all.lines().collect();
            // Whole lines only, the summary last; each file cut between
            // lines, the rotated ones within a line of the limit.
            let (summary, messages) = lines.split_last().unwrap();
            assert!(
                summary.starts_with(&format!("piper-node[{name}]: received ")),
                "{summary}"
            );
            assert!(
                messages.iter().all(|l| *l == line),
                "a line cut or mixed in {name}'s logs"
            );
            for (file, text) in &files {
                assert!(text.ends_with('\n'), "{file} ends mid-line");
                assert!(text.len() <= MAX, "{file}: {} bytes", text.len());
            }
            for (file, text) in &files[..files.len() - 1] {
                assert!(text.len() > MAX - 16, "{file} rotated early: {} bytes", text.len());
            }
            let own = piper_tests::summary(summary);
            match keep {
                // Room for all: nothing lost, over 9 files of 32 KiB.
                "100" => {
                    assert_eq!(messages.len() as u64, own.received, "{name}: every line, none lost");
                    assert!(files.len() >= 9, "{} files", files.len());
                }
                // Exactly two rotated files kept, the newest lines.
                _ => {
                    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
                    let want = [format!("{name}.log.2"), format!("{name}.log.1"), format!("{name}.log")];
                    assert_eq!(names, want);
                    assert!((messages.len() as u64) < own.received);
                }
            }
        }
    }
}
