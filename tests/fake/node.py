#!/usr/bin/env python3
"""A misbehaving stand-in for piper-node, for launcher tests.

Invoked as piper-node would be (--dir=DIR ... -- NAME). It binds DIR/piper-NAME
so the launcher can start its chain, then misbehaves as FAKE_MODE says:
  ignore-term  says READY=1, then ignores SIGTERM (only SIGKILL ends it)
  never-ready  never says READY=1
"""
import os
import signal
import socket
import sys
import time

name = sys.argv[-1]
sock_dir = next(a[len("--dir="):] for a in sys.argv if a.startswith("--dir="))
mode = os.environ.get("FAKE_MODE", "")
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
node = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
node.bind(os.path.join(sock_dir, "piper-" + name))
if mode != "never-ready":
    notify = os.environ["NOTIFY_SOCKET"]
    if notify.startswith("@"):
        notify = "\0" + notify[1:]
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", notify)
while True:
    time.sleep(60)
