#!/usr/bin/env python3
"""loop-frame.py SEQ OCCUPIED [UNIX_SOCKET]: one lane-node loop frame (lane protocol, see
drivers/src/lane.rs: sync, addr 1, seq, type 3, len 6, t_ms, loop 1, occupied,
CRC-16/CCITT-FALSE), written to stdout or sent into a Unix socket (a QEMU serial port's host
end). What the update tests use to put a vehicle on lane 1 and take it off again."""
import socket
import struct
import sys
import time

seq, occupied = int(sys.argv[1]), int(sys.argv[2])
body = bytes([1, seq, 0x03, 6]) + struct.pack("<IBB", 0, 1, occupied)
crc = 0xFFFF
for b in body:
    crc ^= b << 8
    for _ in range(8):
        crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
frame = b"\xa5\x5a" + body + struct.pack("<H", crc)
if len(sys.argv) > 3:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[3])
    s.sendall(frame)
    # QEMU hands the bytes to the emulated UART a few at a time, as its FIFO takes them, and
    # drops what it has not handed on when the peer hangs up: stay connected a while.
    time.sleep(2)
    s.close()
else:
    sys.stdout.buffer.write(frame)
