//! piper-core's examples, run as the programs they are: an embedded node
//! talks to piper-node, and a handler of one's own keeps its state.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use piper_tests::{bin_dir, node_cmd, wait_until, Dir, Proc, PROMPT};

fn example(dir: &Dir, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin_dir().join("examples").join(name));
    cmd.args(args).env("PIPER_DIR", dir.path());
    cmd
}

#[test]
fn the_embedded_ping_pong_answers_piper_node() {
    let dir = Dir::new("example-pingpong");
    let mut pong = Proc::spawn(&dir, "example", example(&dir, "ping_pong", &["pong"]));
    assert!(wait_until(PROMPT, || dir.join("piper-pong").exists()));
    let mut ping = Proc::spawn(
        &dir,
        "ping",
        node_cmd(&dir, "ping", &["--send", "pong", "--count", "20"]),
    );
    assert_eq!(ping.code(PROMPT), Some(0));
    assert_eq!(ping.lines(), vec!["ping received: 'pong'"; 20]);
    // ping's last reply may still be on its way: pong is stopped once it
    // has printed it, not before.
    assert!(wait_until(PROMPT, || pong.lines().len() == 21), "{:?}", pong.lines());
    pong.signal(Signal::SIGTERM);
    assert_eq!(pong.code(PROMPT), Some(0));
    let lines = pong.lines();
    // ping's 20th answer is the last it receives; pong got ping's first
    // send and its 20 replies, of which the last found ping gone.
    assert_eq!(lines, vec!["pong received: 'ping'"; 21]);
    assert_eq!(dir.entries(), Vec::<String>::new(), "the example removed its socket");
}

#[test]
fn a_handler_of_ones_own_keeps_state_and_stops_cleanly() {
    let dir = Dir::new("example-counter");
    let mut counter = Proc::spawn(&dir, "counter", example(&dir, "counter", &["counter"]));
    assert!(wait_until(PROMPT, || dir.join("piper-counter").exists()));
    let me = UnixDatagram::bind(dir.join("piper-tester")).unwrap();
    me.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 32];
    for want in ["1", "2", "3"] {
        me.send_to(b"hello", dir.join("piper-counter")).unwrap();
        let n = me.recv(&mut buf).expect("an answer");
        assert_eq!(&buf[..n], want.as_bytes());
    }
    // An unbound sender is counted but cannot be answered.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"x", dir.join("piper-counter"))
        .unwrap();
    me.send_to(b"hello", dir.join("piper-counter")).unwrap();
    let n = me.recv(&mut buf).expect("an answer");
    assert_eq!(&buf[..n], b"5");
    counter.signal(Signal::SIGINT);
    assert_eq!(counter.code(PROMPT), Some(0));
    assert!(
        counter.stderr().starts_with("counter: 5 datagrams from 1 uids, "),
        "{}",
        counter.stderr()
    );
    assert!(counter.stderr().contains("ended by Stop(Signal(SIGINT))"));
    drop(me);
    std::fs::remove_file(dir.join("piper-tester")).unwrap();
    assert_eq!(dir.entries(), Vec::<String>::new());
}
