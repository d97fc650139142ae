"""`metrics.json`: the one record of a run's numbers, a training's or an evaluation's
(docs/run_directory.md#metrics-schema).

:func:`write_metrics` writes it, for the training callback (`loftr.lightning.callbacks.MetricsJson`)
and for the test run (`loftr.evaluation.testing.evaluate`); :func:`read_metrics` reads it, for
the results collector (`experiments/collect.py`), and :func:`set_results` pairs every set's
numbers with the protocol they were made with. The file names its sets and their protocols, so
a reader needs neither the dataset's files nor the run's config to know what the numbers mean.
Files written before the schema had a version (no `schema_version`) are read too: their
protocols are rebuilt from the run's recorded config, as they were made.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from loftr.errors import DataError
from loftr.evaluation.protocol import Protocol, validation_protocols

__all__ = [
    "FILE_NAME",
    "SCHEMA_VERSION",
    "SetResult",
    "hydra_file",
    "protocol_fields",
    "read_metrics",
    "set_results",
    "write_metrics",
]

FILE_NAME = "metrics.json"
SCHEMA_VERSION = 1
# the fields each kind of run must write (besides `schema_version` and `kind`)
REQUIRED = {
    "train": ("name", "val_sets", "last", "best"),
    "eval": ("name", "metrics", "protocol", "protocol_key"),
}


@dataclasses.dataclass(frozen=True)
class SetResult:
    """The numbers of one run on one evaluation set.

    Attributes:
        name: the set's name (a validation set's, or the test set's).
        protocol: how the numbers were made.
        metrics: `auc@5/10/20`, `prec@<thr>` and, for validation sets, mean losses and
            `n_pairs`.
        epoch: the validation's epoch (None for an evaluation).
        step: the validation's optimizer step (None for an evaluation).
    """

    name: str
    protocol: Protocol
    metrics: dict[str, Any]
    epoch: int | None = None
    step: int | None = None


def protocol_fields(protocol: Protocol) -> dict[str, Any]:
    """A protocol as the file records it: its fields and its key."""
    return {"protocol": protocol.to_dict(), "protocol_key": protocol.key()}


def write_metrics(run_dir: str | Path, kind: str, fields: Mapping[str, Any]) -> Path:
    """Write `<run_dir>/metrics.json` atomically: `schema_version`, `kind`, then `fields`.

    Args:
        run_dir: the run directory (created if missing).
        kind: `train` or `eval`.
        fields: the kind's fields (docs/run_directory.md#metrics-schema), JSON-ready.

    Returns:
        The file's path.

    Raises:
        ValueError: an unknown kind, or a field the kind requires is missing.
    """
    if kind not in REQUIRED:
        raise ValueError(f"metrics.json kind {kind!r} is unknown; use one of {sorted(REQUIRED)}")
    missing = [key for key in REQUIRED[kind] if key not in fields]
    if missing:
        raise ValueError(f"a {kind} metrics.json needs the field(s) {missing}")
    # the writer's helper lives with the checkpoints, which load the network: imported here, so
    # that reading metrics.json (the collector) does not
    from loftr.lightning.checkpoints import atomic_write

    document = {"schema_version": SCHEMA_VERSION, "kind": kind, **fields}
    path = Path(run_dir) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(document, indent=2).encode()))
    return path


def read_metrics(path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """A `metrics.json` as a document of the current schema.

    Args:
        path: the file.
        root: where the run's relative dataset paths start, needed only for an unversioned
            training file (its protocols are rebuilt from the hashes of the index files);
            default the run's working directory as Hydra recorded it.

    Raises:
        DataError: the file's `schema_version` is not one this version reads, it lacks a field
            of its kind or a protocol of a validated set, or (an unversioned training file) the
            run's Hydra files or its dataset's index files are missing.
    """
    path = Path(path)
    document = json.loads(path.read_text())
    version = document.get("schema_version")
    if version is None:
        document = _upgrade_unversioned(document, path, root)
    elif version != SCHEMA_VERSION:
        raise DataError(
            f"{path} has metrics.json schema_version {version!r}, which this version of loftr "
            f"cannot read (it reads {SCHEMA_VERSION} and unversioned files); update loftr"
        )
    kind = document.get("kind")
    if kind not in REQUIRED:
        raise DataError(
            f"{path} has metrics.json kind {kind!r}; expected one of {sorted(REQUIRED)}"
        )
    missing = [key for key in REQUIRED[kind] if key not in document]
    if missing:
        raise DataError(f"{path} lacks the {kind} metrics.json field(s) {missing}")
    for which in ("last", "best") if kind == "train" else ():
        unnamed = [
            n for n in (document[which] or {}).get("sets", {}) if n not in document["val_sets"]
        ]
        if unnamed:
            raise DataError(
                f"{path} has validation set(s) {unnamed} in `{which}`, which its val_sets do "
                f"not name (they name {list(document['val_sets'])})"
            )
    return document


def set_results(document: Mapping[str, Any], which: str = "last") -> list[SetResult]:
    """Every set's numbers of a document of :func:`read_metrics`, with their protocol.

    Args:
        document: the document.
        which: a training's `last` or `best` validation (ignored for an evaluation).

    Returns:
        One result (an evaluation), one per validated set (a training), or none (a training
        that has not validated yet).
    """
    if document["kind"] == "eval":
        protocol = Protocol.from_dict(document["protocol"])
        return [SetResult(protocol.test_set, protocol, dict(document["metrics"]))]
    record = document.get(which)
    if not record:
        return []
    return [
        SetResult(
            name,
            Protocol.from_dict(document["val_sets"][name]["protocol"]),
            dict(values),
            record.get("epoch"),
            record.get("step"),
        )
        for name, values in record["sets"].items()
    ]


def hydra_file(run_dir: str | Path, name: str) -> Any:
    """One of the run's Hydra files (`.hydra/<name>.yaml`), parsed.

    Raises:
        DataError: the file is missing.
    """
    path = Path(run_dir) / ".hydra" / f"{name}.yaml"
    if not path.is_file():
        raise DataError(
            f"{path} is missing: a run's Hydra files (.hydra/) are read with its metrics.json; "
            "`python -m loftr.train` and `python -m loftr.evaluate` write them"
        )
    return yaml.safe_load(path.read_text())


def _upgrade_unversioned(
    document: dict[str, Any], path: Path, root: str | Path | None
) -> dict[str, Any]:
    """A file written before `schema_version` existed, in the current schema.

    An evaluation's file had the current evaluation fields (`protocol_key` is made where it is
    missing); a training's (told apart by its `last` record) named the pose estimator settings
    `protocol` and recorded no validation sets, whose names and protocols are rebuilt from the
    run's recorded config (docs/run_directory.md#metrics-unversioned).
    """
    if "last" not in document:
        protocol = document.get("protocol")
        key = {"protocol_key": Protocol.from_dict(protocol).key()} if protocol else {}
        return {"schema_version": SCHEMA_VERSION, "kind": "eval", **key, **document}
    run_dir = path.parent
    config = hydra_file(run_dir, "config")
    if root is None:
        root = hydra_file(run_dir, "hydra")["hydra"]["runtime"]["cwd"]
    try:
        protocols = validation_protocols(config, root)
    except FileNotFoundError as exc:
        raise DataError(
            f"{exc} Read {path} where the run ran, or pass its working directory as the root "
            "(the collector's --root)."
        ) from None
    fields = {key: value for key, value in document.items() if key != "protocol"}
    val_sets = {name: protocol_fields(protocol) for name, protocol in protocols.items()}
    upgraded = {"schema_version": SCHEMA_VERSION, "kind": "train", "val_sets": val_sets}
    return {**upgraded, "name": document.get("name", config.get("name")), **fields}
