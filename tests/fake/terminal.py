#!/usr/bin/env python3
"""terminal.py COLS ROWS CMD...: runs CMD on a pseudo-terminal of its own, as a
shell's foreground job would run on a user's terminal: what CMD writes to
the terminal is copied to stdout as it comes, and what comes on stdin is
typed into the terminal (so b"\\x1a" is Ctrl-Z, with the terminal's echo and
SIGTSTP). Unlike script(1) it never stops when CMD stops: a test can see
everything CMD wrote before it stopped. Exits with CMD's exit code (or
128 + the signal that killed it)."""
import fcntl
import os
import pty
import select
import struct
import sys
import termios

cols, rows, cmd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
pid, master = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    os.execvp(cmd[0], cmd)
inputs = [master, 0]
while True:
    ready, _, _ = select.select(inputs, [], [])
    if 0 in ready:
        typed = os.read(0, 1024)
        if typed:
            os.write(master, typed)
        else:
            inputs.remove(0)
    if master in ready:
        try:
            out = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            out = b""
        if not out:
            break
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
