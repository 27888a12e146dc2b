#!/usr/bin/env python3
"""A misbehaving stand-in for piper-node, for launcher tests.

Invoked as piper-node would be (--dir=DIR ... -- NAME, its socket as fd 3,
LISTEN_FDS=1), it takes the socket the launcher bound for it, then
misbehaves as FAKE_MODE says:
  ignore-term  says READY=1, then ignores SIGTERM (only SIGKILL ends it)
  never-ready  never says READY=1
  die-soon     says READY=1, then exits 1 after 50 ms (after 1 s the first
               time); each start appends a line to $FAKE_LOG
  half-lines   says READY=1, writes a line in two pieces 0.2 s apart, then
               a last line without its newline, and exits 0 (with
               FAKE_DONE=DIR and FAKE_NODES=N, once N nodes, itself
               included, have written all theirs: see below)
FAKE_ONLY=NAME limits the misbehaviour to node NAME.
FAKE_CPUS=PATH: each start appends "NAME CPUS" to PATH, the CPUs it may run
on as it starts (before READY=1), comma-separated.
"""
import os
import signal
import socket
import sys
import time

name = sys.argv[-1]
sock_dir = next(a[len("--dir="):] for a in sys.argv if a.startswith("--dir="))
mode = os.environ.get("FAKE_MODE", "")
if os.environ.get("FAKE_ONLY", name) != name:
    mode = ""  # only the node FAKE_ONLY names misbehaves
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
assert os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid())
assert os.environ.get("LISTEN_FDNAMES") == name
node = socket.socket(fileno=3)
assert node.getsockname() in (os.path.join(sock_dir, "piper-" + name), "\0" + os.path.join(sock_dir, "piper-" + name))
if "FAKE_CPUS" in os.environ:
    with open(os.environ["FAKE_CPUS"], "a") as f:
        f.write(name + " " + ",".join(map(str, sorted(os.sched_getaffinity(0)))) + "\n")
if mode != "never-ready":
    notify = os.environ["NOTIFY_SOCKET"]
    if notify.startswith("@"):
        notify = "\0" + notify[1:]
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", notify)
if mode == "die-soon":
    log = os.environ["FAKE_LOG"]
    first = not os.path.exists(log)
    with open(log, "a") as f:
        f.write(name + "\n")
    # The first start lives until the whole ring is surely ready.
    time.sleep(1.0 if first else 0.05)
    sys.exit(1)
if mode == "half-lines":
    for piece in ["half", " a line\nlast words"]:
        sys.stdout.write(piece)
        sys.stdout.flush()
        time.sleep(0.2)
    # The foreground's exit ends the run, and its teardown would cut short
    # a node that started later and has not written all its pieces yet:
    # each says it is done (a file in FAKE_DONE), and waits for the others.
    done = os.environ.get("FAKE_DONE")
    if done:
        open(os.path.join(done, name), "w").close()
        want = int(os.environ["FAKE_NODES"])
        deadline = time.monotonic() + 10
        while len(os.listdir(done)) < want and time.monotonic() < deadline:
            time.sleep(0.01)
    sys.exit(0)
while True:
    time.sleep(60)
