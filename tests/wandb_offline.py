"""Read an offline W&B run file (.wandb) to check what was logged, with no server.

The file is W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks
(4-byte CRC, 2-byte length, 1-byte type: full/first/middle/last) holding protobuf Records.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, out, pending = 7, [], b""
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        payload = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
    return out


def history(path: Path) -> dict[str, list[float]]:
    """Every numeric history value logged to the run, by key."""
    values: dict[str, list[float]] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                val = json.loads(item.value_json)
                if isinstance(val, (int, float)):
                    values.setdefault(key, []).append(float(val))
    return values


def logged_keys(path: Path) -> set[str]:
    """Every history key logged to the run (numbers, tables and charts alike)."""
    return {
        item.key or "/".join(item.nested_key)
        for rec in records(path)
        if rec.WhichOneof("record_type") == "history"
        for item in rec.history.item
    }
