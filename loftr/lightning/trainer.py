"""The Trainer and its callbacks, built by `hydra.utils.instantiate` from `conf/trainer` and
`conf/callbacks`; and the check of the `trainer`, `logger` and `callbacks` nodes against their
`_target_`s, made before any work (docs/config.md#lightning-objects).

Every key of such a node is an argument of its target, handed through as is; a value None means
the target's default (the key is dropped). What is not simply handed through:

- the platform's own keys (`TRAINER_OWN_KEYS`, `LOGGER_OWN_KEYS`), read by the platform and
  left out of the target's arguments;
- arguments the platform sets itself (`TRAINER_FIXED`, `LOGGER_FIXED`, `WANDB_FIXED`): a config
  that sets one is refused, saying why;
- Trainer arguments that other groups own (`TRAINER_FROM_GROUPS`: the hardware, precision,
  accumulation, clipping) are interpolated from them; a config that sets one apart is refused,
  naming the key to set instead (the true batch, the LR scaling and the resume checks read it);
- the callbacks the platform's guarantees rely on (`GUARANTEED_CALLBACKS`) are added by code: a
  `callbacks.<name>` entry that targets one of them is refused.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from loftr.config import plain
from loftr.errors import ConfigError
from loftr.lightning.callbacks import LastCheckpoint, MetricsJson, ValidationReport
from loftr.lightning.checkpoints import AtomicCheckpointIO, ResumeGuard
from loftr.lightning.curves import LearningCurves

HYDRA_KEYS = {"_target_", "_recursive_", "_convert_", "_partial_", "_args_"}
TRAINER_OWN_KEYS = {"max_consecutive_nonfinite", "max_skipped_pairs"}
TRAINER_FIXED = {
    "logger": "the logger comes from the logger group (logger=wandb|csv|none)",
    "callbacks": "add a callback as callbacks.<name>._target_=...",
    "plugins": "the platform's AtomicCheckpointIO writes every checkpoint atomically",
    "default_root_dir": "the run directory is run_dir",
    "use_distributed_sampler": "the project's samplers shard scenes and pairs themselves",
    "enable_checkpointing": "last.ckpt and the top-k checkpoints are what resumes rely on",
}
TRAINER_FROM_GROUPS = {
    "accelerator": "hardware.accelerator",
    "devices": "hardware.devices",
    "num_nodes": "hardware.num_nodes",
    "strategy": "hardware.strategy",
    "sync_batchnorm": "hardware.sync_batchnorm",
    "precision": "precision",
    "accumulate_grad_batches": "accumulate",
    "gradient_clip_val": "optim.gradient_clipping",
}
LOGGER_OWN_KEYS = {"kind", "log_every_n_steps", "n_val_pairs_to_plot", "rewind"}
LOGGER_FIXED = {"save_dir": "the logger writes into the run directory (run_dir)"}
_IDENTITY = "one W&B run per training is kept in <run_dir>/wandb_run_id"
WANDB_FIXED = {
    **LOGGER_FIXED,
    "dir": LOGGER_FIXED["save_dir"],
    "id": _IDENTITY,
    "version": _IDENTITY,
    "resume": _IDENTITY,
    "resume_from": _IDENTITY,
    "fork_from": _IDENTITY,
    "experiment": _IDENTITY,
    "config": "the run's composed config is logged as the W&B config",
    "offline": "use logger.mode=offline",
}
GUARANTEED_CALLBACKS = {
    LastCheckpoint: "last.ckpt and the stop signals",
    MetricsJson: "metrics.json",
    ResumeGuard: "the resume checks",
    ValidationReport: "the validation figures and tables",
    LearningCurves: "the learning-curve plot",
}
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def load_target(where: str, node: Mapping[str, Any]) -> Any:
    """The object `node._target_` names; ConfigError naming `where` when it cannot be imported."""
    target = node.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}._target_ is not set: name the class to build")
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as exc:  # not found, or whatever the module raises while importing
        raise ConfigError(f"{where}._target_={target} cannot be imported: {exc}") from None


def target_arguments(target: Any) -> set[str] | None:
    """The keyword arguments `target` takes, None when it takes any.

    A class's `__init__` that forwards `**kwargs` takes its base classes' arguments too; a
    WandbLogger forwards the rest to `wandb.init`, whose arguments then count.
    """
    if not inspect.isclass(target):
        named, forwards = _arguments(inspect.signature(target))
        return None if forwards else named
    names: set[str] = set()
    for klass in target.__mro__[:-1]:  # object's __init__ takes nothing
        if "__init__" not in vars(klass):
            continue
        own, forwards = _arguments(inspect.signature(klass.__init__))
        names |= own - {"self"}
        if not forwards:
            return names
    if issubclass(target, WandbLogger):
        import wandb

        return names | set(inspect.signature(wandb.init).parameters)
    return None


def _arguments(signature: inspect.Signature) -> tuple[set[str], bool]:
    """(named arguments, whether `**kwargs` takes more) of a signature."""
    params = signature.parameters.values()
    named = {p.name for p in params if p.kind in _NAMED}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_node(where: str, node: Mapping[str, Any], own: set[str], fixed: dict[str, str]) -> Any:
    """Every key of `node` is its target's argument, one of `own`, or a `fixed` one left unset;
    returns the target. ConfigError names the key, and for a typo the nearest argument."""
    target = load_target(where, node)
    accepted = target_arguments(target)
    for key in node:
        if key in HYDRA_KEYS or key in own:
            continue
        if key in fixed:
            if node[key] is not None:
                raise ConfigError(f"{where}.{key} cannot be set: {fixed[key]}")
            continue
        if accepted is not None and key not in accepted:
            nearest = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.0)
            hint = f"did you mean {where}.{nearest[0]}?" if nearest else "it takes no arguments"
            raise ConfigError(f"{where}.{key} is not an argument of {node['_target_']}; {hint}")
    return target


def check_logger_config(cfg: Mapping[str, Any] | DictConfig) -> None:
    """The `logger` node builds what it names (`check_node`). `logger=none` (`_target_: null`)
    builds nothing, so its other keys (an experiment's `logger.group`) are not read."""
    logger = cfg["logger"]
    if logger.get("_target_") is not None:
        target = load_target("logger", logger)
        wandb = inspect.isclass(target) and issubclass(target, WandbLogger)
        check_node("logger", logger, LOGGER_OWN_KEYS, WANDB_FIXED if wandb else LOGGER_FIXED)


def check_lightning_config(cfg: Mapping[str, Any] | DictConfig) -> None:
    """A training's `trainer`, `logger` and `callbacks` nodes build what they name, and the
    Trainer takes the other groups' values for their arguments (`TRAINER_FROM_GROUPS`)."""
    trainer = cfg["trainer"]
    check_node("trainer", trainer, TRAINER_OWN_KEYS, TRAINER_FIXED)
    for key, source in TRAINER_FROM_GROUPS.items():
        value = OmegaConf.select(cfg, source)
        if key in trainer and trainer[key] != value:
            raise ConfigError(
                f"trainer.{key}={trainer[key]!r} differs from {source}={value!r}: set {source} "
                "instead, the rest of the run reads it"
            )
    check_logger_config(cfg)
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:  # `callbacks.<name>=null` leaves that callback out
            continue
        target = check_node(f"callbacks.{name}", node, set(), {})
        for guaranteed, what in GUARANTEED_CALLBACKS.items():
            if inspect.isclass(target) and issubclass(target, guaranteed):
                raise ConfigError(
                    f"callbacks.{name}: {guaranteed.__name__} is added by the platform ({what} "
                    "rely on it) and cannot be configured"
                )


def build(node: DictConfig, own: set[str] = frozenset(), **provided: Any) -> Any:
    """`node`'s target built with its arguments (None values and `own` keys left out), then
    `provided` (what the platform hands over: objects, paths), which win."""
    settings = plain(node)
    settings = {k: v for k, v in settings.items() if v is not None and k not in own}
    return instantiate(settings, _partial_=True, _convert_="all")(**provided)


def build_callbacks(cfg: DictConfig, ckpt_dir: Path) -> list[L.Callback]:
    """The callbacks of the `callbacks` group, in their order (null entries left out); a
    ModelCheckpoint without a `dirpath` writes into `ckpt_dir`."""
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        target = load_target(f"callbacks.{name}", node)
        in_run = inspect.isclass(target) and issubclass(target, ModelCheckpoint)
        default = {"dirpath": str(ckpt_dir)} if in_run and node.get("dirpath") is None else {}
        callbacks.append(build(node, **default))
    return callbacks


def cluster_plugins() -> list:
    """Atomic checkpoint writes; under SLURM, leave requeueing to the submitit launcher (one
    mechanism, not two)."""
    slurm = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    return [AtomicCheckpointIO(), *slurm]


def build_trainer(
    cfg: DictConfig, run_dir: Path, logger: Logger | bool, callbacks: list
) -> L.Trainer:
    """The Trainer of `cfg.trainer` with the platform's fixed settings (`TRAINER_FIXED`)."""
    return build(
        cfg.trainer,
        TRAINER_OWN_KEYS,
        logger=logger,
        callbacks=callbacks,
        plugins=cluster_plugins(),
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,
        enable_checkpointing=True,
    )
