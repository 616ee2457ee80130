"""Read what an offline W&B run recorded, without uploading it.

An offline run is one ``run-<id>.wandb`` file: a LevelDB-style log (32 KiB blocks of records with
a 7-byte header: CRC32, length, type) after a 7-byte file header, each record a protobuf
``wandb.proto.wandb_internal_pb2.Record``. Reading it lets tests check what a run logged and lets
local tools compare runs that never went online.

W&B writes the file from its own service process, so ``wandb.finish()`` can return a moment
before the last records reach the disk; :func:`read_offline_run` waits for the run's ``exit``
record (the last one W&B writes) instead of reading a file that is still growing.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

FILE_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version
RECORD_HEADER = struct.Struct("<IHB")  # crc32, data length, record type
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """The config, history rows and final summary of one offline run."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    run_id: str = ""
    group: str = ""

    def metric(self, key: str) -> list[Any]:
        """Every logged value of ``key``, in order."""
        return [row[key] for row in self.history if key in row]


def iter_records(path: Path) -> list[bytes]:
    """The raw records of a ``.wandb`` file, reassembled across blocks."""
    data = Path(path).read_bytes()
    ident, magic, _version = FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B run file (bad header)")
    records, pending, pos = [], b"", FILE_HEADER.size
    while pos + RECORD_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:
            pos += left_in_block  # block trailer padding
            continue
        _crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding to the end of the block
            pos += left_in_block
            continue
        chunk = data[pos + RECORD_HEADER.size : pos + RECORD_HEADER.size + length]
        pos += RECORD_HEADER.size + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
            pending = b""
    return records


def _items(items: Any) -> dict[str, Any]:
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}


def read_offline_run(path: str | Path, timeout: float = 60.0) -> OfflineRun:
    """Parse a finished offline run given its ``.wandb`` file or its ``offline-run-*`` folder.

    Waits up to ``timeout`` seconds for the ``exit`` record, so a run that has just finished is
    read whole.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if not files:
            raise FileNotFoundError(f"no .wandb file in {path}")
        path = files[0]
    run = OfflineRun(path=path)
    for record in finished_records(path, timeout):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "run":
            run.name, run.run_id = record.run.display_name, record.run.run_id
            run.group = record.run.run_group
    return run


def finished_records(path: Path, timeout: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """Every record of the run file, once its ``exit`` record is on disk."""
    deadline = time.monotonic() + timeout
    while True:
        records = [_parse(raw) for raw in iter_records(path)]
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout:.0f} s (run not finished)")
        time.sleep(0.2)


def _parse(raw: bytes) -> wandb_internal_pb2.Record:
    record = wandb_internal_pb2.Record()
    record.ParseFromString(raw)
    return record
