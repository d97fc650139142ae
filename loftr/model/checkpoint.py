"""The one checkpoint reader: train (resume), evaluate and match open files through it.

A file is loaded with `weights_only=True`, so it cannot run code (docs/differences.md#5), and every
way it can be unusable is named in one line with its path: missing, empty, truncated, a zip that
torch did not write, pickled objects the safe loader refuses, or no tensors inside.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from loftr.errors import CheckpointError

CHECKPOINT_PREFIX = "matcher."
ZIP_MAGIC = b"PK\x03\x04"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The content of a checkpoint file, loaded on the CPU without running code.

    Args:
        path: a Lightning `.ckpt` of ours, an original or kornia checkpoint, or a state dict.

    Returns:
        The top-level mapping `torch.save` wrote.

    Raises:
        CheckpointError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): its save never finished; use another one"
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (classified below, one line each)
        raise CheckpointError(f"checkpoint {path} {_unreadable(path, exc)}") from None
    if not isinstance(content, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(content).__name__}, not a dict of weights"
        )
    return dict(content)


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch could not load `path`, as the end of a sentence that starts with the path."""
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head == ZIP_MAGIC and not zipfile.is_zipfile(path):  # a zip without its directory
        return "is truncated (a zip archive without its end); use another checkpoint"
    if zipfile.is_zipfile(path) and not isinstance(exc, pickle.UnpicklingError):
        return "is a zip archive but not a torch checkpoint (no data.pkl written by torch.save)"
    text = str(exc)
    if "Weights only load failed" in text:
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed|\n|$)", text)
        detail = found.group(1).strip() if found else "a pickled object"
        return (
            f"holds pickled Python objects that a weights-only load refuses ({detail}): they "
            "may run code when opened; re-save only its tensors from a trusted copy"
        )
    first = text.splitlines()[0][:200] if text else ""
    return f"cannot be read ({exc.__class__.__name__}: {first}); it may be truncated"


def checkpoint_state_dict(content: Mapping[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint, `state_dict` node or bare, prefix stripped."""
    state = content.get("state_dict", content)
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    # a Lightning checkpoint of ours also holds the loss module's (empty) and other prefixes
    if any(k.startswith(CHECKPOINT_PREFIX) for k in state):
        state = {k: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}
    return strip_prefix(state)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint file (`read_checkpoint`, then the state dict)."""
    return checkpoint_state_dict(read_checkpoint(path), path)


def stored_model_config(content: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model config one of our checkpoints carries, or None (original and kornia files)."""
    hyper = content.get("hyper_parameters")
    config = hyper.get("config") if isinstance(hyper, Mapping) else None
    model = config.get("model") if isinstance(config, Mapping) else None
    return dict(model) if isinstance(model, Mapping) else None


def strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a leading `matcher.` from every key (Lightning checkpoints,
    docs/original.md#state-dict)."""
    n = len(CHECKPOINT_PREFIX)
    return {(k[n:] if k.startswith(CHECKPOINT_PREFIX) else k): v for k, v in state_dict.items()}
