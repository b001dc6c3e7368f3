#!/usr/bin/env python3
"""An independent reader of TensorBoard event files, for ctrain's tests.

Compiles tracking/tensorboard.proto with protoc into a temporary folder, reads every
TFRecord (checking both masked CRC-32C values with a CRC written here, not ctrain's), parses
each Event with Python's protobuf and prints one JSON line per event:
{"step", "wall_time", "file_version"} or {"step", "wall_time", "tag", "value"}.
Usage: read_events.py PROTO_FILE EVENTS_FILE...   Exit 1 on a bad CRC or truncated record.
"""
import importlib
import json
import os
import struct
import subprocess
import sys
import tempfile


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def main() -> int:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    proto, files = sys.argv[1], sys.argv[2:]
    out = tempfile.mkdtemp()
    subprocess.run([os.environ.get("PROTOC", "protoc"), "-I", os.path.dirname(proto), "--python_out", out, proto], check=True)
    sys.path.insert(0, out)
    pb = importlib.import_module(os.path.basename(proto).replace(".proto", "_pb2"))
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        i = 0
        while i < len(data):
            if i + 12 > len(data):
                print(f"{path}: truncated header at byte {i}", file=sys.stderr)
                return 1
            header = data[i:i + 8]
            (length,) = struct.unpack("<Q", header)
            (hcrc,) = struct.unpack("<I", data[i + 8:i + 12])
            if hcrc != masked(header):
                print(f"{path}: bad length CRC at byte {i}", file=sys.stderr)
                return 1
            body = data[i + 12:i + 12 + length]
            if len(body) != length or i + 16 + length > len(data):
                print(f"{path}: truncated record at byte {i}", file=sys.stderr)
                return 1
            (dcrc,) = struct.unpack("<I", data[i + 12 + length:i + 16 + length])
            if dcrc != masked(body):
                print(f"{path}: bad data CRC at byte {i}", file=sys.stderr)
                return 1
            i += 16 + length
            e = pb.Event()
            e.ParseFromString(body)
            if e.WhichOneof("what") == "file_version":
                print(json.dumps({"step": e.step, "wall_time": e.wall_time, "file_version": e.file_version}))
            for v in e.summary.value:
                print(json.dumps({"step": e.step, "wall_time": e.wall_time, "tag": v.tag, "value": v.simple_value}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
