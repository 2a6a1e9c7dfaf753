"""Plays a recorded trace (edge/traces/*.tsv, DESIGN.md's trace format) into a box under QEMU
in real time, on the devices its configuration reads, for images/tests/boot-image:

  - serial sensors (lane node, radiation portal): the bytes on a Unix socket that QEMU
    connects to one of the guest's serial ports (text lines end in CR LF, as on the wire);
  - cameras with a TCP transport: their plate reads, one JSON line each, on a TCP port
    forwarded into the guest;
  - EGTS trackers: each packet on a TCP port forwarded into the guest, and the appliance's
    EGTS RESPONSE must come back for that packet id with result 0 (accepted) before the
    next packet of that feed is sent.

Lines for sensors not named here and `@` lines (what central publishes) are skipped; the
caller cuts the trace to the part it wants played (and replays the same file).

    play-trace.py TRACE SENSOR=serial:SOCKET | SENSOR=camera:PORT | SENSOR=egts:PORT ...

Prints a summary line; exits non-zero when a device could not be reached or a packet was not
acknowledged.
"""

import socket
import sys
import time


def connect_tcp(port, deadline):
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=60)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def connect_unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(60)
    return s


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the appliance")
        buf += chunk
    return buf


def egts_ack(s, sent):
    """Reads one EGTS transport packet and checks it is the RESPONSE (PT 0) to `sent`."""
    head = read_exact(s, 4)
    hl = head[3]
    head += read_exact(s, hl - 4)
    fdl = int.from_bytes(head[5:7], "little")
    body = read_exact(s, fdl + 2) if fdl else b""
    pt = head[9]
    pid = int.from_bytes(sent[7:9], "little")
    if pt != 0 or len(body) < 3:
        raise ValueError(f"packet {pid}: answer of type {pt}, not a RESPONSE")
    rpid = int.from_bytes(body[0:2], "little")
    if rpid != pid or body[2] != 0:
        raise ValueError(f"packet {pid}: RESPONSE for {rpid} with result {body[2]}")


def main():
    trace = sys.argv[1]
    devices = {}
    for arg in sys.argv[2:]:
        sensor, spec = arg.split("=", 1)
        kind, where = spec.split(":", 1)
        devices[sensor] = (kind, where)
    lines = []
    with open(trace, encoding="utf-8") as f:
        for raw in f:
            if raw.startswith("#") or not raw.strip():
                continue
            offset, sensor, kind, payload = raw.rstrip("\n").split("\t", 3)
            if sensor in devices:
                data = bytes.fromhex(payload) if kind == "hex" else payload.encode()
                lines.append((int(offset), sensor, kind, data))
    deadline = time.time() + 120
    conns = {}
    for sensor, (kind, where) in devices.items():
        if kind == "serial":
            conns[sensor] = connect_unix(where)
        elif kind in ("camera", "egts"):
            conns[sensor] = connect_tcp(int(where), deadline)
        else:
            sys.exit(f"play-trace: unknown device kind {kind} for {sensor}")
    played = {s: 0 for s in devices}
    start = time.monotonic()
    late = 0.0
    for offset, sensor, kind, data in lines:
        wait = start + offset / 1000 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            late = max(late, -wait)
        dev_kind = devices[sensor][0]
        s = conns[sensor]
        if dev_kind == "serial":
            s.sendall(data + (b"\r\n" if kind == "text" else b""))
        elif dev_kind == "camera":
            s.sendall(data + b"\n")
        else:
            s.sendall(data)
            egts_ack(s, data)
        played[sensor] += 1
    for s in conns.values():
        s.close()
    print(
        "played "
        + ", ".join(f"{n} lines of {s}" for s, n in played.items())
        + f" in {time.monotonic() - start:.0f} s (at most {late:.1f} s late)"
    )


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, ConnectionError) as e:
        sys.exit(f"play-trace: {e}")
