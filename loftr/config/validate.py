"""`validate(cfg)`: the one check of a composed config, run once before a command does any work.

The schema (`loftr.config.schema`) has already held every key to its type and its choices; what
is left spans the groups or needs the machine: test-only datasets, strides, numeric ranges, the
pose protocol, the GPUs. Each part with rules of its own is handed to the room that owns them:
the data (`loftr.data.datamodule.check_dataset_config`), the model
(`loftr.model.config.validate_model_config`), the loss (`loftr.losses.check_loss_config`), the
schedule (`loftr.lightning.schedule.check_optim_config`), the metrics
(`loftr.evaluation.metrics.check_pose_estimator`) and the Lightning objects
(`loftr.lightning.trainer.check_lightning_config`). A training run's constructors are told the
config passed (`validated=True`) and do not check it again; built by a user, they check it
themselves. This module stands above those rooms and imports them when it runs, so that `--help`
and `--cfg` never load torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from loftr.checks import check_range, is_int
from loftr.cli import group_choice
from loftr.config.schema import EvaluateConf, MatchConf, TrainConf, plain
from loftr.errors import ConfigError

# the batch-size keys come first: optim.lr and optim.warmup_steps are derived from them
RUN_RANGES = (
    ("hardware.num_nodes", "count"),
    ("hardware.batch_size", "count"),
    ("hardware.num_workers", "count_or_zero"),
    ("accumulate", "count"),
    ("optim.lr", "positive"),
    ("optim.warmup_steps", "count_or_zero"),
    ("optim.warmup_ratio", "fraction"),
    ("optim.gamma", "positive"),
    ("optim.adam_decay", "non_negative"),
    ("optim.adamw_decay", "non_negative"),
    ("optim.gradient_clipping", "non_negative"),
    ("trainer.max_epochs", "limit"),
    ("trainer.max_steps", "limit"),
    ("trainer.check_val_every_n_epoch", "count"),
    ("trainer.limit_train_batches", "batches"),
    ("trainer.limit_val_batches", "batches"),
    ("trainer.num_sanity_val_steps", "count_or_all"),
    ("trainer.max_consecutive_nonfinite", "count"),
    ("checkpoint.every_n_train_steps", "count_or_zero"),
    ("checkpoint.save_top_k", "count_or_all"),
    ("logger.log_every_n_steps", "count"),
    ("logger.n_val_pairs_to_plot", "count_or_zero"),
)
EVAL_RANGES = (
    ("eval.epi_err_thr", "positive"),
    ("eval.ransac_pixel_thr", "positive"),
    ("eval.ransac_conf", "probability"),
    ("eval.homography.ransac_thr", "positive"),
    ("eval.homography.ransac_conf", "probability"),
    ("eval.homography.ransac_max_iters", "count"),
    ("eval.homography.max_matches", "count"),
    ("eval.homography.precision_thr", "positive"),
)


def _setting(cfg: Mapping[str, Any] | DictConfig, dotted: str) -> Any:
    """`cfg`'s value at a dotted key, resolved; a derived value that cannot be made is named."""
    node: Any = cfg
    try:
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"{dotted} is missing from the config")
            node = node[part]
    except OmegaConfBaseException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{dotted} cannot be resolved: {str(exc).splitlines()[0]}") from None
    return node


def check_ranges(cfg: Mapping[str, Any] | DictConfig, ranges: tuple[tuple[str, str], ...]) -> None:
    """Raise ConfigError naming the first setting of `ranges` whose value is out of range."""
    for key, kind in ranges:
        check_range(key, _setting(cfg, key), kind)


def check_gpus(hardware: Mapping[str, Any]) -> None:
    """A GPU hardware group needs that many GPUs on this machine (per node), before any work."""
    if hardware["accelerator"] not in ("gpu", "cuda"):
        return
    import torch  # here: `--help` and `--cfg` stay fast

    devices = hardware["devices"]
    wanted = devices if is_int(devices) and devices > 0 else 1
    found = torch.cuda.device_count()
    if found < wanted:
        raise ConfigError(
            f"{group_choice('hardware', 'hardware.accelerator=gpu')} asks for {wanted} GPU(s) per "
            f"node (hardware.devices={devices!r}) but this machine has {found}; use hardware=cpu "
            "or a hardware group with fewer devices"
        )


def _check_protocol(cfg: DictConfig) -> None:
    """The pose protocol (`eval`) a run validates and an evaluation tests with, in range."""
    from loftr.evaluation.metrics import check_pose_estimator  # the metrics own their estimators

    check_ranges(cfg, EVAL_RANGES)
    check_pose_estimator(_setting(cfg, "eval.pose_estimator"))


def _check_training(cfg: DictConfig) -> None:
    """A training run: a training set, inputs the coarse stride divides, settings in range, the
    GPUs it asks for, and the model, loss and schedule rules.

    A test-only dataset (and so an `eval_*` experiment) is refused with the command that takes
    it. ScanNet-format images are resized to `dataset.scannet_img_resize`, MegaDepth-format ones
    floored to `dataset.mgdpt_df`, homography pairs made at `dataset.homographies.image_size`:
    all must be multiples of the coarse stride.
    """
    dataset = cfg["dataset"]
    if dataset.get("test_only"):
        name = dataset.get("name")
        raise ConfigError(
            f"dataset {name} is a test set (dataset.test_only), not a training set: test a "
            f"checkpoint on it with `python -m loftr.evaluate ckpt_path=PATH dataset={name}` (the "
            "eval_* experiments too: `python -m loftr.evaluate experiment=eval_indoor_ds`)"
        )
    for key in ("ckpt", "model_from_ckpt"):
        if cfg.get(key) is not None:
            raise ConfigError(
                f"{key} is an option of python -m loftr.evaluate and loftr.match; a training run "
                "continues from ckpt_path=PATH (or ckpt_path=last)"
            )
    stride = int(cfg["model"]["resolution"][0])
    sources = {dataset.get("trainval_data_source"), dataset.get("test_data_source")}
    if "ScanNet" in sources:
        width, height = dataset.get("scannet_img_resize") or (640, 480)
        if width % stride or height % stride:
            raise ConfigError(
                f"dataset.scannet_img_resize=[{width}, {height}] is not divisible by the coarse "
                f"stride {stride} (model.resolution); use e.g. [640, 480] or [320, 240]"
            )
    size = (dataset.get("homographies") or {}).get("image_size")
    if "Homographies" in sources and size and any(int(v) % stride for v in size):
        raise ConfigError(
            f"dataset.homographies.image_size={list(size)} is not divisible by the coarse stride "
            f"{stride} (model.resolution); use e.g. [320, 240] or [640, 480]"
        )
    if (
        sources & {"MegaDepth", "PairsWithHomography"}
        and int(dataset.get("mgdpt_df") or stride) % stride
    ):
        raise ConfigError(
            f"dataset.mgdpt_df={dataset['mgdpt_df']} must be a multiple of the coarse stride "
            f"{stride} (model.resolution)"
        )
    check_ranges(cfg, RUN_RANGES)
    _check_protocol(cfg)
    check_gpus(cfg["hardware"])
    # the rooms' own rules; imported here: they load torch, `--cfg` stays fast
    from loftr.data.datamodule import check_dataset_config
    from loftr.lightning.schedule import check_optim_config
    from loftr.lightning.trainer import check_lightning_config
    from loftr.losses import check_loss_config
    from loftr.model.config import normalised_model_config, validate_model_config

    check_dataset_config(dataset)
    model = normalised_model_config(cfg["model"])
    validate_model_config(model)
    check_loss_config(model)  # the loss owns its rules (docs/original.md#coarse-loss)
    check_optim_config(plain(cfg["optim"]))
    check_lightning_config(cfg)  # the Trainer, logger and callbacks against their targets


def _check_evaluation(cfg: DictConfig) -> None:
    """An evaluation: a checkpoint to test, a dataset with a test set, the protocol and the
    logger's arguments. The model config is checked when the checkpoint is read: ours bring
    their own (`LoFTR.from_checkpoint`)."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("ckpt is not set: pass ckpt_path=PATH to a LoFTR checkpoint")
    check_ranges(cfg, (("hardware.num_workers", "count_or_zero"),))
    _check_protocol(cfg)
    from loftr.data.datamodule import check_test_set  # loads torch
    from loftr.lightning.trainer import check_logger_config  # loads Lightning

    check_test_set(plain(cfg["dataset"]))
    check_logger_config(cfg)


def _check_matching(cfg: DictConfig) -> None:
    """A match: a checkpoint (nothing can be downloaded), a positive size, the device."""
    if not cfg.ckpt_path:
        raise ConfigError(
            "ckpt is not set: pass ckpt_path=PATH to a LoFTR checkpoint (no weights can be "
            "downloaded on this machine)"
        )
    if cfg.resize is not None and cfg.resize < 1:
        raise ConfigError(f"resize={cfg.resize!r} must be a positive integer or null")
    if str(cfg.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={cfg.device} but this machine has no CUDA GPU; use device=cpu"
            )


CHECKS: dict[type, Callable[[DictConfig], None]] = {
    TrainConf: _check_training,
    EvaluateConf: _check_evaluation,
    MatchConf: _check_matching,
}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError, naming the key, for a composed config its command cannot run.

    Args:
        cfg: a `train`, `evaluate` or `match` config as Hydra composed it onto its schema.
    """
    schema = OmegaConf.get_type(cfg) if isinstance(cfg, DictConfig) else None
    if schema not in CHECKS:
        raise ConfigError(
            "validate takes a config composed from conf/train.yaml, evaluate.yaml or match.yaml "
            f"(onto loftr.config.schema); got {type(cfg).__name__} of {schema}"
        )
    CHECKS[schema](cfg)
