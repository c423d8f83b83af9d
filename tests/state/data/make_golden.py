#!/usr/bin/env python3
"""Writes the golden state snapshots from the layout in include/cairn/state.h, independently
of the C encoder. Run once per released payload version; never regenerate an old file."""
import hashlib
import struct
import sys
from pathlib import Path

MAGIC = b"CAIRNST\x1a"


def envelope(payload_version, payload):
    head = MAGIC + struct.pack("<HHI", 1, payload_version, len(payload))
    return head + payload + hashlib.sha256(head + payload).digest()


def payload_v1(entries):
    out = struct.pack("<I", len(entries))
    for name, sec in sorted(entries.items(), key=lambda kv: kv[0].encode()):
        out += struct.pack("<H", len(name)) + name.encode() + struct.pack("<q", sec)
    return out


here = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
V1 = {"hourly": 1767268800, "daily": 1767225600, "influx-prod_5m.b": 1767269100,
      "old": -86400}
(here / "state-v1.bin").write_bytes(envelope(1, payload_v1(V1)))
(here / "state-v1-empty.bin").write_bytes(envelope(1, payload_v1({})))
