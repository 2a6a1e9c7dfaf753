"""One guest connection to a host TCP port, for QEMU's `guestfwd=...-cmd:` (images/tests/
boot-image): QEMU starts this for every connection the guest opens to the forwarded address,
with that connection on stdin and stdout; it relays both ways to HOST:PORT until either side
closes. (socat would do; this keeps the test's dependencies to what the machine has.)

    tcp-relay.py HOST PORT
"""

import os
import selectors
import socket
import sys


def main():
    up = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(up, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj == 0:
                data = os.read(0, 65536)
                if not data:
                    return
                up.sendall(data)
            else:
                data = up.recv(65536)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view):]


if __name__ == "__main__":
    try:
        main()
    except OSError:
        pass
