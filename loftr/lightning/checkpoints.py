"""Where a run writes its checkpoints and files, and what it resumes.

- `atomic_write`: every checkpoint and run file goes to a temporary file in its destination
  directory, is fsynced, then renamed over the destination (`os.replace`, atomic within one
  filesystem). A crash or a full disk leaves the previous file or none, never a partial one,
  and nothing in `$TMPDIR`; `remove_leftovers` deletes the temporaries of a killed process.
- `AtomicCheckpointIO`: the Trainer plugin through which Lightning's own saves take that path.
- `RunLock`: one command at a time per run directory, also on network filesystems.
- `resolve_ckpt_path`: a run resumes only its own directory, or an explicit checkpoint.
- `ResumeGuard`: every rank agrees on the run directory and the checkpoint; a resumed run keeps
  the training values it was started with, unless `resume_allow_changes` names them.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from loftr.errors import CheckpointError, ConfigError
from loftr.lightning.module import gather_objects
from loftr.model.checkpoint import read_checkpoint

LAST_CHECKPOINT = "last.ckpt"
LOCK_FILE = ".lock"
TMP_SUFFIX = ".loftr-tmp"

# the config values that decide what a resumed run trains; run length (trainer.max_steps,
# trainer.max_epochs), logging, workers and checkpoint cadence may change freely
TRAINING_KEYS = (
    "seed",
    "precision",
    "accumulate",
    "model",
    "optim",
    "dataset",
    "hardware.batch_size",
    "hardware.devices",
    "hardware.num_nodes",
    "hardware.sync_batchnorm",
    "trainer.limit_train_batches",
)
# model keys that change how a step is computed, not what: a resume may switch them (a run
# that ran out of memory continues with checkpointing on) and older checkpoints lack them
HOW_NOT_WHAT_KEYS = ("model.checkpoint_activations",)


# --------------------------------------------------------------------------- atomic files
def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through `write(file)` so that it is either complete or untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)  # the rename itself survives a power cut
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Delete the temporaries a killed process left under `run_dir`; hold the run's lock."""
    leftovers = [p for p in Path(run_dir).rglob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoints written with `atomic_write` (remote URLs: Lightning's way).

    Lightning's default stages the file in `$TMPDIR`; when that is another filesystem than the
    run directory, its final move is a truncate-and-copy that a kill or a full disk cuts short.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(checkpoint, f))


# ------------------------------------------------------------------------------- the lock
class RunLock:
    """`<run_dir>/.lock`, created exclusively (O_EXCL, atomic on local disks, NFS and Lustre),
    naming the host, pid and job that hold it; the holder touches it every `HEARTBEAT_S`.

    A lock is stale, and taken over, when its process is gone on this host, when another host
    holds it for an earlier start of this job (a requeued SLURM job, a restarted torchrun: the
    same job id), or when its heartbeat stopped `STALE_AFTER_S` ago (a dead holder elsewhere).
    Any other lock is refused, naming its holder.
    """

    HEARTBEAT_S = 30.0
    STALE_AFTER_S = 300.0

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "job": _job_id()}
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _stale_because(self, holder: dict[str, Any] | None) -> str | None:
        try:
            silent = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "it is gone"
        if silent > self.STALE_AFTER_S:
            return f"no heartbeat for {silent:.0f} s"
        if holder is None:
            return None
        if holder.get("host") == self.owner["host"]:
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return f"pid {holder['pid']} is dead"
            except PermissionError:
                pass
            return None  # a live process of this host
        if holder.get("job") is not None and holder.get("job") == self.owner["job"]:
            return f"it is an earlier start of job {holder['job']}"
        return None

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                reason = self._stale_because(holder)
                if reason is None:
                    raise CheckpointError(self._refusal(holder)) from None
                rank_zero_info(f"{self.path}: taking over a stale lock ({reason})")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({**self.owner, "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
                f.flush()
                os.fsync(f.fileno())
            self._heartbeat = threading.Thread(target=self._beat, daemon=True)
            self._heartbeat.start()
            return
        raise CheckpointError(f"{self.path}: another process took the lock while this one started")

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def _refusal(self, holder: dict[str, Any] | None) -> str:
        who = (
            f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
            if holder
            else "an unreadable lock file"
        )
        return (
            f"run directory {self.path.parent} is in use by {who}; two runs in one directory "
            f"would interleave their checkpoints. Use another hydra.run.dir, or delete "
            f"{self.path} if that process is gone"
        )

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        holder = self.holder() or {}
        if (holder.get("host"), holder.get("pid")) == (self.owner["host"], self.owner["pid"]):
            self.path.unlink(missing_ok=True)


def _job_id() -> str | None:
    """The scheduler's id of this job, kept across its restarts, if it has one."""
    elastic = os.environ.get("TORCHELASTIC_RUN_ID")
    if elastic and elastic != "none":
        return f"torchrun-{elastic}"
    return f"slurm-{os.environ['SLURM_JOB_ID']}" if os.environ.get("SLURM_JOB_ID") else None


# ---------------------------------------------------------------------------- what resumes
def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint a run resumes from, or None for a fresh start.

    A run resumes only its own lineage, never a sibling run or sweep job:
    - null: this run directory's `last.ckpt` when there is one (a requeued job, a command
      rerun with the same `hydra.run.dir`, a sweep rerun with the same `hydra.sweep.dir`),
      else a fresh start.
    - `last`: this run directory's `last.ckpt`; an error when there is none.
    - a path: that file.
    """
    own = run_dir / "checkpoints" / LAST_CHECKPOINT
    if ckpt_path is None:
        return readable_checkpoint(own) if own.is_file() else None
    if ckpt_path != "last":
        return readable_checkpoint(Path(ckpt_path))
    if not own.is_file():
        raise CheckpointError(
            f"ckpt_path=last: {own} does not exist, and a run resumes only its own directory; "
            "pass the interrupted run's directory (hydra.run.dir=DIR) or a checkpoint "
            "(ckpt_path=PATH). In a sweep rerun with hydra.sweep.dir=DIR, ckpt_path=null "
            "continues each job that saved and starts the others"
        )
    return readable_checkpoint(own)


def readable_checkpoint(path: Path) -> str:
    """`path` if the one checkpoint reader opens it, else its CheckpointError naming the file."""
    read_checkpoint(path)
    return str(path)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def training_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `TRAINING_KEYS` of a resolved config, flattened to dotted keys."""
    flat = _flatten(config)
    return {k: v for k, v in flat.items() if any(_under(k, t) for t in TRAINING_KEYS)}


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def config_changes(
    saved: Mapping[str, Any], current: Mapping[str, Any], allowed: Iterable[str] = ()
) -> list[str]:
    """`key: saved -> current` for each training value that differs and is not allowed.

    An absent key equals a null one: the schema's optional keys (`model.coarse.layer_type`,
    `dataset.test_only`, ...) are null in every config now, and absent from older checkpoints.
    `HOW_NOT_WHAT_KEYS` are always allowed.
    """
    allowed = (*allowed, *HOW_NOT_WHAT_KEYS)
    before, after = training_values(saved), training_values(current)
    return [
        f"{k}: {before.get(k, '(absent)')!r} -> {after.get(k, '(absent)')!r}"
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k) and not any(_under(k, p) for p in allowed)
    ]


class ResumeGuard(L.Callback):
    """Checks a run's start across ranks and against the checkpoint it resumes.

    At setup, once the ranks can talk, every rank must have the same run directory and
    checkpoint (nodes that computed different directories, or saw different files, stop here).
    On load, the checkpoint's training values must equal this run's, except the keys in
    `resume_allow_changes`; the run then says which checkpoint, epoch and step it continues.
    """

    def __init__(self, run_dir: str | Path, ckpt_path: str | None, config: dict[str, Any]):
        self.start = {"run_dir": str(run_dir), "ckpt_path": ckpt_path}
        self.config = config
        self.allowed = list(config.get("resume_allow_changes") or ())
        keys = training_values(config)
        for prefix in self.allowed:
            if not any(_under(k, prefix) for k in keys):
                raise ConfigError(
                    f"resume_allow_changes names {prefix!r}, which is no training key "
                    f"(those are under {', '.join(TRAINING_KEYS)})"
                )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        starts = gather_objects(self.start)
        if any(s != starts[0] for s in starts):
            ranks = "; ".join(
                f"rank {r}: {s['run_dir']}, ckpt {s['ckpt_path']}" for r, s in enumerate(starts)
            )
            raise CheckpointError(
                f"the ranks disagree on the run directory or checkpoint ({ranks}); give every "
                "node the same hydra.run.dir (or torchrun --rdzv-id) on a shared filesystem"
            )

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("config")
        note = ""
        if saved is None:
            note = " (it holds no run config: values not compared)"
        else:
            changes = config_changes(saved, self.config, self.allowed)
            if changes:
                raise CheckpointError(
                    f"checkpoint {trainer.ckpt_path} was trained with other values: "
                    f"{'; '.join(changes)}. Resume with the same values, or name the keys in "
                    f"resume_allow_changes=[{','.join(c.split(':')[0] for c in changes)}]"
                )
        rank_zero_info(
            f"resuming {trainer.ckpt_path}: epoch {checkpoint.get('epoch')}, "
            f"step {checkpoint.get('global_step')}{note}"
        )
