"""The serial console of a test image under QEMU (a chardev on a Unix socket), for
images/tests/boot-image: waits for the root shell the test image logs in on ttyS0, runs
commands and returns what they printed. Everything the guest prints is appended to a log.

    console.py SOCKET LOG wait-shell SECONDS
    console.py SOCKET LOG run SECONDS COMMAND...
"""

import os
import re
import socket
import sys
import time

PROMPT = re.compile(rb"root@[^:\s]+:[^#\n]*# $")


def connect(path, deadline):
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def read_until(s, log, pred, deadline):
    buf = b""
    while not pred(buf):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError(buf[-2000:].decode(errors="replace"))
        s.settimeout(min(left, 1.0))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            raise EOFError("the console closed (the VM stopped)")
        log.write(chunk)
        log.flush()
        buf += chunk
    return buf


def main():
    path, log_path, what, secs = sys.argv[1:5]
    deadline = time.time() + float(secs)
    with open(log_path, "ab") as log:
        s = connect(path, deadline)
        if what == "wait-shell":
            # A newline now and then: the prompt may have been printed before we connected.
            def shell(buf):
                return PROMPT.search(buf) is not None

            while True:
                s.sendall(b"\n")
                try:
                    read_until(s, log, shell, min(deadline, time.time() + 5))
                    return 0
                except TimeoutError:
                    if time.time() > deadline:
                        raise
        elif what == "run":
            # No pager: systemctl and journalctl page whenever their output is a terminal, and
            # a pager on the console waits for a key (seen with less in the kiosk image).
            command = "export SYSTEMD_PAGER=cat PAGER=cat; " + " ".join(sys.argv[5:])
            marker = "END-%d-%d" % (os.getpid(), int(time.time() * 1000))
            # The marker is split in the command so that only its output matches.
            s.sendall(("%s; echo \"%s\"'-'\"$?\"\n" % (command, marker)).encode())
            # The echoed command has the marker followed by a quote, its output by -STATUS.
            pattern = re.compile(re.escape(marker.encode()) + rb"-(\d+)\r?\n")
            buf = read_until(s, log, lambda b: pattern.search(b) is not None, deadline)
            m = pattern.search(buf)
            out = buf[: m.start()].decode(errors="replace")
            # Drop the echoed command line.
            out = out.split("\n", 1)[1] if "\n" in out else ""
            # Without the terminal's escapes (bash's bracketed paste, colours).
            out = re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]", "", out)
            sys.stdout.write(out.replace("\r", ""))
            return int(m.group(1))
    return 2


if __name__ == "__main__":
    sys.exit(main())
