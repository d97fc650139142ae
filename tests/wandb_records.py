"""Read an offline W&B run back from its `.wandb` file, for tests.

The file is a `:W&B` header followed by LevelDB-log framed protobuf `Record`s (wandb's own
`wandb_internal_pb2.Record`): 32 KiB blocks of chunks, each with a 4-byte checksum, a 2-byte
length and a 1-byte type (full, first, middle, last).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", a 2-byte magic and a version byte
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    raw = Path(path).read_bytes()
    if not raw.startswith(b":W&B"):
        raise ValueError(f"{path} is not a W&B run file")
    records, pending, pos = [], b"", HEADER
    while pos + CHUNK_HEADER <= len(raw):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # zero-padded block tail
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + CHUNK_HEADER])
        data = raw[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == FULL:
            pending = data
        elif kind == FIRST:
            pending = data
            continue
        elif kind == MIDDLE:
            pending += data
            continue
        elif kind == LAST:
            pending += data
        else:
            break
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        records.append(record)
    return records


def history_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every logged history row as `{key: value}`."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def config_keys(path: str | Path) -> set[str]:
    keys = set()
    for record in read_records(path):
        if record.WhichOneof("record_type") == "config":
            keys |= {item.key for item in record.config.update}
    return keys
