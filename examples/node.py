#!/usr/bin/env python3
"""A piper node in Python, standard library only, for piper-launch.

Run it from a topology file (examples/polyglot.toml). Everything comes from
the environment the launcher sets:

- its socket: fd 3, passed as systemd's socket activation passes it
  (LISTEN_FDS, LISTEN_PID); without them it binds $PIPER_DIR/piper-$PIPER_NAME
  itself (socket = "own"), and removes it at the end;
- PIPER_NAME, its name, and PIPER_NEXT, the node it answers whatever the
  payload says (a ring);
- NOTIFY_SOCKET, where it says READY=1 once it can receive, and its counts
  in piper's format (STATUS=received N, sent N, dropped N) at most once a
  second and as it stops: the launcher adds them to the ring's.
- PIPER_INTERVAL, milliseconds to wait before each reply (for humans).

For each datagram it prints the seed's line, NAME received: 'PAYLOAD', then
sends its name to PIPER_NEXT. SIGTERM, SIGINT and SIGHUP end it cleanly.
"""
import os
import signal
import socket
import sys
import time

LISTEN_FDS_START = 3


def notifier():
    """A function that sends one sd_notify message, or does nothing."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return lambda message: None
    if address.startswith("@"):
        address = "\0" + address[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def notify(message):
        try:
            sock.sendto(message.encode(), address)
        except OSError as e:
            print(f"cannot notify: {e}", file=sys.stderr)

    return notify


def adopt_or_bind(path):
    """The socket the launcher passed (and whether it did), else our own."""
    passed = os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1
    if passed:
        return socket.socket(fileno=LISTEN_FDS_START), True
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    return sock, False


class Stop(Exception):
    pass


def stop(signum, frame):
    raise Stop()


def main():
    name = os.environ["PIPER_NAME"]
    nxt = os.environ["PIPER_NEXT"]
    directory = os.environ["PIPER_DIR"]
    interval = int(os.environ.get("PIPER_INTERVAL", "0")) / 1000
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    path = os.path.join(directory, "piper-" + name)
    sock, held = adopt_or_bind(path)
    peer = os.path.join(directory, "piper-" + nxt)
    notify = notifier()
    counts = {"received": 0, "sent": 0, "dropped": 0}

    def report():
        notify("STATUS=received {received}, sent {sent}, dropped {dropped}".format(**counts))

    report()
    notify("READY=1")
    reported = time.monotonic()
    try:
        while True:
            payload = sock.recv(65536)
            counts["received"] += 1
            text = payload.decode("utf-8", "backslashreplace")
            print(f"{name} received: '{text}'", flush=True)
            time.sleep(interval)
            try:
                sock.sendto(name.encode(), peer)
                counts["sent"] += 1
            except OSError as e:
                counts["dropped"] += 1
                print(f"{name}: cannot send to {nxt}: {e}", file=sys.stderr)
            if time.monotonic() - reported >= 1:
                reported = time.monotonic()
                report()
    except (Stop, BrokenPipeError):
        pass
    report()
    notify("STOPPING=1")
    if not held:
        os.unlink(path)


if __name__ == "__main__":
    main()
