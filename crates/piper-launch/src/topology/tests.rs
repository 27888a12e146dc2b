//! The topology file's checks: what each mistake says, and where.

use super::*;

fn restart() -> Restart {
    Restart {
        policy: RestartPolicy::No,
        delay: Duration::from_millis(100),
        burst: 5,
        interval: Duration::from_secs(10),
        foreground: false,
    }
}

fn read(text: &str) -> Result<Topology, Mistake> {
    parse(Path::new("/etc/piper/ring.toml"), text, restart(), &[])
}

/// The mistake's `line:col: what`, without the file.
fn mistake(text: &str) -> String {
    let m = read(text).expect_err("a mistake");
    assert_eq!(m.file, Path::new("/etc/piper/ring.toml"));
    format!("{}:{}: {}", m.line, m.column, m.what)
}

#[test]
fn a_ring_of_piper_nodes_is_the_simplest_file() {
    let t = read("start = \"a\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n").unwrap();
    let names: Vec<(&str, &str)> = t.members.iter().map(|m| (m.name.as_str(), m.next.as_str())).collect();
    assert_eq!(
        names,
        [("a", "b"), ("b", "a")],
        "each answers the next, the last the first"
    );
    let m = &t.members[0];
    assert_eq!(m.program, Program::Node(vec![]));
    assert_eq!((m.socket, m.ready), (Socket::Held, Ready::Notify));
    let kick = t.kick().map(|(from, to)| (from.to_string(), to.to_string()));
    assert_eq!(kick, Some(("a".into(), "b".into())));
    assert_eq!((t.dir, t.foreground), (None, None));
}

#[test]
fn the_ring_nodes_generates_is_the_file_that_says_only_names() {
    // `--nodes a,b,c` and a file of three bare [[node]]s with start = "a"
    // make the same members: one code path from here on.
    let t = read("start = \"a\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n[[node]]\nname = \"c\"\n").unwrap();
    let names = ["a", "b", "c"].map(|n| Name::new(n).unwrap()).to_vec();
    let (members, remote, kick) = crate::plan::generated(names, None, true, restart());
    let shape = |m: &Member| {
        (
            m.name.clone(),
            m.next.clone(),
            m.program.clone(),
            m.socket,
            m.ready,
            m.restart.policy,
            m.cpu,
            m.env.clone(),
            m.show,
        )
    };
    let file: Vec<_> = t.members.iter().map(shape).collect();
    let generated: Vec<_> = members.iter().map(shape).collect();
    assert_eq!(file, generated);
    assert_eq!((t.remote.clone(), t.kick()), (remote, kick));
}

#[test]
fn defaults_apply_to_every_node_and_a_node_overrides_them() {
    let text = r#"
dir = "/tmp"
remote = ["far"]
[defaults]
restart = "on-failure"
restart-delay = 0.5
env = { A = "1", B = "2" }
[[node]]
name = "a"
next = "far"
restart = "always"
restart-burst = 2
env = { B = "3" }
show = false
[[node]]
name = "b"
socket = "own"
exec = ["/bin/sh", "-c", "exit 0"]
foreground = true
"#;
    let t = read(text).unwrap();
    let (a, b) = (&t.members[0], &t.members[1]);
    assert_eq!(t.dir.as_deref(), Some(Path::new("/tmp")));
    assert_eq!(t.remote, [Name::new("far").unwrap()]);
    assert_eq!(a.next.as_str(), "far");
    assert_eq!(a.restart.policy, RestartPolicy::Always);
    assert_eq!(a.restart.burst, 2);
    assert_eq!(a.restart.delay, Duration::from_millis(500));
    assert_eq!(b.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(b.restart.burst, 5, "the command line's");
    let env: Vec<(&str, &str)> = a
        .env
        .iter()
        .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
        .collect();
    assert_eq!(env, [("A", "1"), ("B", "3")]);
    assert!(!a.show && b.show);
    assert_eq!(
        (b.socket, b.ready),
        (Socket::Own, Ready::Bound),
        "own is ready once bound"
    );
    assert_eq!(
        b.program,
        Program::Exec("/bin/sh".into(), vec!["/bin/sh".into(), "-c".into(), "exit 0".into()])
    );
    assert_eq!(t.foreground, Some(1));
    assert_eq!(t.kick(), None, "no start: nobody starts the chain");
}

#[test]
fn piper_node_in_exec_keeps_a_ring_members_arguments_and_adds_its_own() {
    let t =
        read("[[node]]\nname = \"a\"\nexec = [\"piper-node\", \"--interval=5\"]\n[[node]]\nname = \"b\"\n").unwrap();
    assert_eq!(t.members[0].program, Program::Node(vec!["--interval=5".into()]));
}

#[test]
fn a_relative_exec_path_is_relative_to_the_file() {
    let dir = std::env::temp_dir().join(format!("piper-topology-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("prog");
    std::fs::write(&prog, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = "[[node]]\nname = \"a\"\nexec = [\"./prog\"]\n[[node]]\nname = \"b\"\n";
    let t = parse(&dir.join("ring.toml"), text, restart(), &[]);
    std::fs::remove_dir_all(&dir).unwrap();
    match &t.unwrap().members[0].program {
        Program::Exec(path, argv) => {
            assert_eq!(*path, dir.join("./prog"));
            assert_eq!(argv, &[OsString::from("./prog")]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_mistake_is_named_with_its_line_and_column() {
    let two = "[[node]]\nname = \"a\"\n";
    // Node a with `extra` on line 3, then node b.
    let a = |extra: &str| format!("{two}{extra}[[node]]\nname = \"b\"\n");
    let cases: Vec<(String, &str)> = vec![
        // Unknown keys, at the top, in a node and in the defaults.
        ("nodes = 3\n".into(), "1:1: unknown field `nodes`"),
        (
            format!("{two}[[node]]\nname = \"b\"\nnxt = \"a\"\n"),
            "5:1: unknown field `nxt`",
        ),
        ("[defaults]\nname = \"x\"\n".into(), "2:1: unknown field `name`"),
        // Values of the wrong kind.
        (a("socket = \"shared\"\n"), "3:10: unknown variant `shared`"),
        (
            a("exec = \"python3 node.py\"\n"),
            "3:8: invalid type: string \"python3 node.py\", expected a sequence",
        ),
        // Names.
        ("[[node]]\nname = \"a/b\"\n".into(), "2:8: name 'a/b': "),
        (
            format!("{two}[[node]]\nname = \"a\"\n"),
            "4:8: node 'a' is named twice (first at 2:8)",
        ),
        (
            format!("{two}next = \"pnog\"\n[[node]]\nname = \"b\"\n"),
            "3:8: next = \"pnog\" names no node and no remote",
        ),
        (
            format!("{two}next = \"a\"\n[[node]]\nname = \"b\"\n"),
            "3:8: node 'a' would answer itself (a node never does): name another node",
        ),
        (
            format!("{two}next = \"a\"\n"),
            "3:8: node 'a' would answer itself (a node never does): name another node",
        ),
        (
            two.to_string(),
            "2:8: node 'a' would answer itself (a node never does): add another [[node]], or give it a next \
             that names a remote",
        ),
        (
            format!("start = \"z\"\n{two}[[node]]\nname = \"b\"\n"),
            "1:9: start = \"z\" names no node",
        ),
        (
            format!("remote = [\"a\"]\n{two}[[node]]\nname = \"b\"\n"),
            "1:11: remote 'a' is also a [[node]] here",
        ),
        (
            format!("remote = [\"far\"]\n{two}[[node]]\nname = \"b\"\n"),
            "1:11: remote 'far' is named by no next: the start would wait for it forever",
        ),
        // Programs.
        (a("exec = []\n"), "3:8: exec = []: give the program"),
        (
            a("exec = [\"no-such-program-here\"]\n"),
            "3:8: exec: 'no-such-program-here' is not found on PATH",
        ),
        (
            a("exec = [\"/etc/passwd\"]\n"),
            "3:8: exec: '/etc/passwd' (/etc/passwd) is not an executable file",
        ),
        (
            a("exec = [\"./missing\"]\n"),
            "3:8: exec: './missing' (/etc/piper/missing) is not found",
        ),
        // Readiness that cannot work with the socket mode.
        (
            a("ready = \"bound\"\n"),
            "3:9: node 'a': ready = \"bound\" needs socket = \"own\"",
        ),
        (
            format!("[defaults]\nready = \"bound\"\n{two}[[node]]\nname = \"b\"\n"),
            "2:9: node 'a': ready = \"bound\" needs socket = \"own\"",
        ),
        // Policies.
        (a("restart = \"sometimes\"\n"), "3:11: unknown variant `sometimes`"),
        (
            a("restart-delay = -1.0\n"),
            "3:17: restart-delay = -1: give a number of seconds",
        ),
        (a("cpu = 100000\n"), "3:7: cpu = 100000: not a CPU this process may use"),
        (
            format!("{two}foreground = true\n[[node]]\nname = \"b\"\nforeground = true\n"),
            "6:14: node 'b' is the foreground, and so is node 'a'",
        ),
        // Nothing to run, and not TOML at all.
        ("dir = \"/tmp\"\n".into(), "1:1: no [[node]]"),
        ("[[node]\n".into(), "1:8: unclosed array table, expected `]`"),
    ];
    for (text, want) in cases {
        let got = mistake(&text);
        assert!(got.starts_with(want), "{text:?}:\n got {got:?}\nwant {want:?}");
        assert!(!got.contains('\n'), "one line: {got:?}");
    }
}

#[test]
fn a_mistake_reads_as_file_line_column_what() {
    let m = read("[[node]]\nname = \"a\"\n\nnext = \"zz\"\n").unwrap_err();
    assert_eq!(
        m.to_string(),
        "/etc/piper/ring.toml:4:8: next = \"zz\" names no node and no remote"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(line_column("a\nüü = 1", 7), (2, 4));
    assert_eq!(line_column("abc", 0), (1, 1));
    assert_eq!(line_column("abc", 99), (1, 4));
}

#[test]
fn an_exec_may_not_give_piper_node_an_option_it_is_given_anyway() {
    let text = "[[node]]\nname = \"a\"\nexec = [\"piper-node\", \"--interval=300\"]\n[[node]]\nname = \"b\"\n";
    assert!(read(text).is_ok(), "alone, it is the file's to give");
    let m = parse(
        Path::new("/etc/piper/ring.toml"),
        text,
        restart(),
        &["--quiet", "--interval"],
    )
    .unwrap_err();
    assert_eq!(
        format!("{}:{}: {}", m.line, m.column, m.what),
        "3:8: node 'a': exec gives piper-node --interval=300, and so does the command line's --interval: \
         give it in one place"
    );
    assert_eq!(
        mistake("[[node]]\nname = \"a\"\nexec = [\"piper-node\", \"--next\", \"b\"]\n[[node]]\nname = \"b\"\n"),
        "3:8: node 'a': exec gives piper-node --next, which the launcher gives it (from the file's dir and next, or --dir)"
    );
    // After `--`, an argument is not an option.
    let text = "[[node]]\nname = \"a\"\nexec = [\"piper-node\", \"--\", \"--interval\"]\n[[node]]\nname = \"b\"\n";
    assert!(parse(Path::new("/etc/piper/ring.toml"), text, restart(), &["--interval"]).is_ok());
}
