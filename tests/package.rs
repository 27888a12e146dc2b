//! The Debian package and what it carries: man pages that render without
//! warnings, completions that load, the expected files and nothing else.
//! (tests/systemd_boot.rs installs it under a real systemd.)

use std::process::Command;

use piper_tests::{build_packages, dist_dir, may_run, Needs};

#[test]
fn the_package_holds_exactly_the_expected_files() {
    if !may_run(Needs::Tool("dpkg-deb")) {
        return;
    }
    let [deb, bridge] = build_packages();
    let files = |deb: &std::path::Path| {
        let list = Command::new("dpkg-deb").arg("-c").arg(deb).output().unwrap();
        let mut files: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|l| !l.starts_with('d'))
            .map(|l| l.split_whitespace().last().unwrap().trim_start_matches('.').to_string())
            .collect();
        files.sort();
        files
    };
    assert_eq!(
        files(&deb),
        [
            "/etc/piper/launch.env",
            "/usr/bin/piper-launch",
            "/usr/bin/piper-node",
            "/usr/lib/systemd/system/piper-launch.service",
            "/usr/lib/systemd/system/piper-node@.service",
            "/usr/lib/systemd/system/piper-node@.socket",
            "/usr/lib/sysusers.d/piper.conf",
            "/usr/share/bash-completion/completions/piper-launch",
            "/usr/share/bash-completion/completions/piper-node",
            "/usr/share/doc/piper/README.md",
            "/usr/share/doc/piper/changelog.Debian.gz",
            "/usr/share/doc/piper/copyright",
            "/usr/share/fish/vendor_completions.d/piper-launch.fish",
            "/usr/share/fish/vendor_completions.d/piper-node.fish",
            "/usr/share/man/man1/piper-launch-ctl.1.gz",
            "/usr/share/man/man1/piper-launch.1.gz",
            "/usr/share/man/man1/piper-node.1.gz",
            "/usr/share/zsh/vendor-completions/_piper-launch",
            "/usr/share/zsh/vendor-completions/_piper-node",
        ]
    );
    // The bridge, which the launcher's help points to, in a package of its
    // own: its libraries stay off machines that run only local rings.
    assert_eq!(
        files(&bridge),
        [
            "/etc/piper/bridge.env",
            "/usr/bin/piper-bridge",
            "/usr/lib/systemd/system/piper-bridge.service",
            "/usr/share/bash-completion/completions/piper-bridge",
            "/usr/share/doc/piper-bridge/changelog.Debian.gz",
            "/usr/share/doc/piper-bridge/copyright",
            "/usr/share/fish/vendor_completions.d/piper-bridge.fish",
            "/usr/share/man/man1/piper-bridge.1.gz",
            "/usr/share/zsh/vendor-completions/_piper-bridge",
        ]
    );
    let field = |deb: &std::path::Path, f: &str| {
        let out = Command::new("dpkg-deb").args(["-f"]).arg(deb).arg(f).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(field(&deb, "Package"), "piper");
    assert_eq!(field(&deb, "Version"), version);
    assert_eq!(field(&deb, "Homepage"), "", "no Homepage: piper has none to give");
    assert_eq!(field(&bridge, "Package"), "piper-bridge");
    assert_eq!(field(&bridge, "Depends"), format!("piper (= {version}), libc6"));
    // A changelog, as Debian wants of every package.
    let changelog = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/share/doc/piper/changelog.Debian.gz | gzip -d")
        .args(["sh", deb.to_str().unwrap()])
        .output()
        .unwrap();
    let changelog = String::from_utf8_lossy(&changelog.stdout);
    assert!(
        changelog.starts_with(&format!("piper ({version}) unstable; urgency=medium\n")),
        "{changelog}"
    );
    let conffiles = |deb: &std::path::Path| {
        let out = Command::new("dpkg-deb")
            .args(["-I"])
            .arg(deb)
            .arg("conffiles")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(conffiles(&deb), "/etc/piper/launch.env\n");
    assert_eq!(conffiles(&bridge), "/etc/piper/bridge.env\n");
    // The units name /usr/bin, never /usr/local.
    let unit = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/lib/systemd/system/piper-node@.service")
        .args(["sh", deb.to_str().unwrap()])
        .output()
        .unwrap();
    let unit = String::from_utf8_lossy(&unit.stdout);
    assert!(
        unit.contains("ExecStart=/usr/bin/piper-node %i") && !unit.contains("/usr/local"),
        "{unit}"
    );
    let size = std::fs::metadata(&deb).unwrap().len();
    eprintln!("{}: {size} bytes", deb.display());
}

#[test]
fn man_pages_render_without_warnings_and_say_it_all() {
    if !may_run(Needs::Tool("groff")) {
        return;
    }
    for program in ["piper-node", "piper-launch", "piper-bridge"] {
        let page = dist_dir().join(format!("man/man1/{program}.1"));
        let out = Command::new("groff")
            .args(["-z", "-wall", "-man"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{program}: groff warnings");
        let text = std::fs::read_to_string(&page).unwrap();
        for section in ["NAME", "SYNOPSIS", "OPTIONS", "EXAMPLES", "ENVIRONMENT", "EXIT STATUS"] {
            assert!(
                text.contains(&format!(".SH {section}")) || text.contains(&format!(".SH \"{section}\"")),
                "{program}: no {section}"
            );
        }
        assert!(text.contains("PIPER_DIR") && text.contains("RUST_LOG"), "{program}");
        // An option's synopsis says what it takes.
        let synopsis = text.split(".SH SYNOPSIS").nth(1).unwrap_or_default();
        assert!(
            synopsis.contains("[\\fB\\-\\-dir\\fR \\fIDIR\\fR]"),
            "{program}: {synopsis}"
        );
        assert!(
            synopsis.contains("[\\fB\\-h\\fR|\\fB\\-\\-help\\fR]"),
            "{program}: {synopsis}"
        );
    }
    // piper-launch ctl, on a page of its own: its commands and exit codes.
    let page = dist_dir().join("man/man1/piper-launch-ctl.1");
    let out = Command::new("groff")
        .args(["-z", "-wall", "-man"])
        .arg(&page)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "piper-launch-ctl: groff warnings"
    );
    let text = std::fs::read_to_string(&page).unwrap();
    let synopsis = text.split(".SH SYNOPSIS").nth(1).unwrap_or_default();
    assert!(synopsis.contains("\\fBpiper\\-launch ctl\\fR"), "{synopsis}");
    for part in ["restart", "signal", "metrics", "permission denied", "unknown node"] {
        assert!(text.contains(part), "piper-launch-ctl lacks {part}");
    }
}

#[test]
fn completions_load_in_bash() {
    if !may_run(Needs::Tool("bash")) {
        return;
    }
    for program in ["piper-node", "piper-launch", "piper-bridge"] {
        let script = dist_dir().join(format!("completions/bash/{program}"));
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && complete -p {program}", script.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).ends_with(&format!(" {program}\n")));
    }
    // --cpus <TAB> offers the policies (a CPU list cannot be listed).
    let script = dist_dir().join("completions/bash/piper-launch");
    let complete = "source \"$1\"; COMP_WORDS=(piper-launch --cpus ''); COMP_CWORD=2; \
                    _piper__launch piper-launch '' --cpus; echo \"${COMPREPLY[@]}\"";
    let out = Command::new("bash")
        .args(["-c", complete, "bash"])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "auto pack spread none\n");
    // ctl <TAB> offers its commands.
    let complete = "source \"$1\"; COMP_WORDS=(piper-launch ctl ''); COMP_CWORD=2; \
                    _piper__launch piper-launch '' ctl; echo \"${COMPREPLY[@]}\"";
    let out = Command::new("bash")
        .args(["-c", complete, "bash"])
        .arg(&script)
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    for command in [
        "status", "restart", "stop", "start", "kick", "signal", "metrics", "--dir",
    ] {
        assert!(offered.split_whitespace().any(|w| w == command), "{command}: {offered}");
    }
    // --dir <TAB> offers directories, in every shell.
    for program in ["piper-node", "piper-launch"] {
        let zsh = std::fs::read_to_string(dist_dir().join(format!("completions/zsh/_{program}"))).unwrap();
        assert!(zsh.contains(":DIR:_files -/' \\"), "{program}: {zsh}");
        let fish = std::fs::read_to_string(dist_dir().join(format!("completions/fish/{program}.fish"))).unwrap();
        let dir = fish.lines().find(|l| l.contains(" -l dir ")).unwrap_or_default();
        assert!(
            dir.ends_with("-a \"(__fish_complete_directories)\""),
            "{program}: {dir}"
        );
    }
}
