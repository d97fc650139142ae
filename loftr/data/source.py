"""What a data source's builder gives the DataModule (:class:`Source`), and the ``dataset``-node
access the builders share; the registry of sources is :mod:`loftr.data.sources`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from loftr.data.layout import list_names
from loftr.errors import ConfigError

Config = Mapping[str, Any]


def key(config: Config, name: str) -> Any:
    """``config[name]``; ConfigError naming ``dataset.<name>`` when the key is absent."""
    if name not in config:
        raise ConfigError(f"dataset.{name} is missing from the dataset config")
    return config[name]


def required(config: Config, name: str) -> Any:
    """``config[name]``; ConfigError naming ``dataset.<name>`` when it is absent or null."""
    value = key(config, name)
    if value is None:
        raise ConfigError(f"dataset.{name} is null; the dataset config must set it")
    return value


def as_list(value: Any, n: int, name: str) -> list[Any]:
    """Broadcast a scalar config value to ``n`` entries, or check a list has ``n``."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(f"dataset.{name} has {len(value)} entries; expected {n}")
        return list(value)
    return [value] * n


def split_lists(config: Config, split: str) -> list[Any]:
    """The ``{split}_list_path`` entries (a path or a list of them), as a list."""
    paths = required(config, f"{split}_list_path")
    return list(paths) if isinstance(paths, (list, tuple)) else [paths]


def list_set_names(config: Config, split: str) -> list[str]:
    """Set names from the stems of ``{split}_list_path`` (empty when it is null)."""
    return list_names(config.get(f"{split}_list_path"))


@dataclass(frozen=True)
class Source:
    """How the DataModule builds one source's datasets.

    Attributes:
        train_scenes: ``(config) -> (names, where)``: the training scenes the ranks share out
            (``get_local_split``) and the file or folder that lists them (for messages).
        train_datasets: ``(config, names, seed) -> datasets``: one dataset per scene of this
            rank's share, in order; ``seed`` is the run seed.
        eval_sets: ``(config, split, seed) -> datasets``: one dataset per validation (``val``) or
            test (``test``) set.
        set_names: ``(config, split) -> names``: a name per set of ``eval_sets``, known from the
            config alone (metric keys carry it).
        test_instead: the ``dataset`` choice (conf/dataset) that tests this source's models, for
            a source without a test set of its own (None: it has one).
        check: ``(config) -> None``: ConfigError naming the key for settings the source cannot
            follow (``check_dataset_config`` calls it before any work).
    """

    train_scenes: Callable[[Config], tuple[list[str], str]]
    train_datasets: Callable[[Config, Sequence[str], int], list[Dataset]]
    eval_sets: Callable[[Config, str, int], list[Dataset]]
    set_names: Callable[[Config, str], list[str]] = list_set_names
    test_instead: str | None = None
    check: Callable[[Config], None] = lambda config: None
