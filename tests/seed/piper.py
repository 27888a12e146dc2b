#!/usr/bin/env python3
"""The seed: Dustin Ingram's `piper` class, ported to Python 3 for interop tests.

The class is the blog's, changed only where Python 3 demands it (print(),
bytes, Thread.daemon) plus a flush so tests see each line. main() runs one
node per process: `piper.py NAME [--send PEER]`. Like the original, it binds
/tmp/piper-NAME, sends from unbound sockets, and never cleans up.
"""
import socket
import sys
from threading import Thread


class piper:

    def __init__(self, name, isDaemon):
        self._name = name
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("/tmp/piper-%s" % name)
        self._thread = Thread(target=self._listener)
        self._thread.daemon = isDaemon
        self._thread.start()

    def _listener(self):
        while True:
            data, _ = self._socket.recvfrom(1024)
            print("%s received: '%s'" % (self._name, data.decode()), flush=True)
            self._send(data.decode(), self._name)

    def _send(self, recp, data):
        _s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _s.sendto(data.encode(), "/tmp/piper-%s" % recp)


def main():
    name = sys.argv[1]
    node = piper(name=name, isDaemon=False)
    if len(sys.argv) > 3 and sys.argv[2] == "--send":
        node._send(recp=sys.argv[3], data=name)


if __name__ == "__main__":
    main()
