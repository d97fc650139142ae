"""Read an offline W&B run back from its `.wandb` file, for tests.

The file is a `:W&B` header followed by LevelDB-log framed protobuf `Record`s (wandb's own
`wandb_internal_pb2.Record`): 32 KiB blocks, counted from the start of the file (the header
sits in the first one), of chunks, each with a 4-byte CRC-32 of its type and payload, a 2-byte
length and a 1-byte type (full, first, middle, last); a block tail too short for a chunk header
is zero padding.

wandb-core keeps the block being filled in memory and writes it out only when the block is full
or the run's stream closes, which happens after `run.finish()` has returned (the service is told
to close it without being waited for). Until then the file is empty or ends at the last full
block, so tests read it through `offline_run_file`, which waits for wandb-core to close it.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import wandb
from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", a 2-byte magic and a version byte
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_run_files(root: str | Path) -> list[Path]:
    """Every `wandb/offline-run-*/run-*.wandb` under `root`, oldest first, once wandb-core has
    written them.

    `wandb.teardown()` asks this process's wandb-core service to close every run's stream and
    waits for the service to exit, so every transaction log is complete afterwards; the next
    `wandb.init` starts a new service.
    """
    wandb.teardown()
    return sorted(Path(root).glob("wandb/offline-run-*/run-*.wandb"))


def offline_run_file(root: str | Path) -> Path:
    """The one offline W&B run under `root` (`offline_run_files`)."""
    files = offline_run_files(root)
    if len(files) != 1:
        raise AssertionError(f"expected one offline W&B run under {root}/wandb, found {files}")
    return files[0]


def run_record(path: str | Path) -> wandb_internal_pb2.RunRecord:
    """The run record: id, name, group, job type, and the rewind point (`branch_point`)."""
    return next(r.run for r in read_records(path) if r.WhichOneof("record_type") == "run")


def model_artifacts(path: str | Path) -> list[tuple[list[str], dict[str, Any]]]:
    """(aliases, metadata) of every logged version of a `model` artifact, in order."""
    return [
        (sorted(r.artifact.aliases), json.loads(r.artifact.metadata))
        for r in read_records(path)
        if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"
    ]


def read_records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a complete `.wandb` file; ValueError naming the offset where it is cut or
    corrupt (a file read before wandb-core closed it ends inside a block or is empty)."""
    raw = Path(path).read_bytes()
    if not raw.startswith(b":W&B"):
        raise ValueError(f"{path} is not a W&B run file ({len(raw)} bytes; not closed yet?)")
    records, pending, pos = [], None, HEADER
    while pos < len(raw):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # zero-padded block tail
            pos += left_in_block
            continue
        end = pos + CHUNK_HEADER + struct.unpack_from("<H", raw, pos + 4)[0]
        if end > len(raw) or end > pos + left_in_block:
            raise ValueError(f"{path}: the chunk at byte {pos} is cut off (not closed yet?)")
        checksum, _, kind = struct.unpack_from("<IHB", raw, pos)
        data = raw[pos + CHUNK_HEADER : end]
        if zlib.crc32(bytes([kind]) + data) != checksum or kind not in (FULL, FIRST, MIDDLE, LAST):
            raise ValueError(f"{path}: the chunk at byte {pos} is corrupt")
        pos = end
        pending = data if kind in (FULL, FIRST) else (pending or b"") + data
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = None
    if pending is not None:
        raise ValueError(f"{path}: the last record is cut off (not closed yet?)")
    return records


def history_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every logged history row as `{key: value}` (W&B's step is `_step`)."""
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
