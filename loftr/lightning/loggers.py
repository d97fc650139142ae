"""The run's logger, built from `conf/logger` (`build_logger`), and the evaluation's logging.

With W&B, one W&B run per training: its id kept in the run directory and continued by every
resume, rerun and requeue, its history rewound to the checkpoint it resumes from, sweep jobs
named by their overrides, and checkpoints uploaded as model artifacts.

`RunLogger` makes W&B's own step (`_step`) the trainer's logging step. A run resumed from a
checkpoint logs again from the checkpoint's `global_step`, so it rewinds the W&B run to the
step before (`wandb.init(resume_from="<id>?_step=<global_step - 1>")`): the steps run again
after a SIGKILL replace the rows the killed process logged after its last checkpoint instead
of being dropped as out of order. An offline run records the rewind in its run record and
`wandb sync` applies it; servers without run rewinding take `logger.rewind=false` (the run is
then continued as is).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from loftr.config import plain
from loftr.errors import ConfigError
from loftr.lightning.checkpoints import atomic_write
from loftr.lightning.trainer import LOGGER_OWN_KEYS, build, load_target

RUN_ID_FILE = "wandb_run_id"


def wandb_logged_in() -> bool:
    """Whether W&B has credentials for its configured host, found the way `wandb.init` finds
    them: WANDB_API_KEY or WANDB_IDENTITY_TOKEN_FILE, the netrc file (`$NETRC`, else
    `~/.netrc`) entry of the host (WANDB_BASE_URL or `base_url` of W&B's settings files, so
    self-hosted servers count), or an API key in the settings."""
    import wandb
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib import wbauth

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    settings = wandb.setup().settings
    try:
        in_netrc = wbauth.read_netrc_auth(host=settings.base_url) is not None
    except AuthenticationError as err:
        netrc = os.environ.get("NETRC", "~/.netrc")
        raise ConfigError(
            f"{netrc}: the W&B entry of {settings.base_url} is invalid: {err}"
        ) from None
    return in_netrc or bool(settings.api_key)


def sweep_job_names(hydra: Any) -> tuple[str | None, str | None]:
    """(name, group) of a job of a Hydra sweep: its overrides (`matcher=ot,supervision=sparse`)
    and the sweep directory (`<name>/<time>`); (None, None) outside a sweep.

    Args:
        hydra: the job's Hydra config (`HydraConfig.get()`), or None outside Hydra.
    """
    if hydra is None or str(hydra.mode) not in ("MULTIRUN", "RunMode.MULTIRUN"):
        return None, None
    sweep_dir = Path(hydra.sweep.dir)
    return hydra.job.override_dirname or None, f"{sweep_dir.parent.name}/{sweep_dir.name}"


def run_init_arguments(run_dir: Path, ckpt_path: str | None, rewind: bool) -> dict[str, Any]:
    """The `wandb.init` arguments that make a training one W&B run across its processes.

    A training that resumes from a checkpoint continues the W&B run of `<run_dir>/wandb_run_id`
    (a run directory is one lineage: a checkpoint of another directory starts a new W&B run), and
    (with `rewind`) rewinds it to the checkpoint: W&B keeps the rows up to the given step and
    takes new ones after it, so `<global_step> - 1` keeps what the checkpoint holds. A training
    that starts afresh opens a new run. Rank zero writes the id to the run directory.
    """
    from wandb.sdk.lib.runid import generate_id

    id_file = run_dir / RUN_ID_FILE
    continued = ckpt_path is not None and id_file.is_file()
    run_id = id_file.read_text().strip() if continued else generate_id()
    if rank_zero_only.rank == 0 and not continued:
        atomic_write(id_file, lambda f: f.write(f"{run_id}\n".encode()))
    step = checkpoint_step(ckpt_path) if continued and rewind else 0
    if step == 0:
        return {"id": run_id, "resume": "allow"}
    return {"id": run_id, "resume": None, "resume_from": f"{run_id}?_step={step - 1}"}


def checkpoint_step(path: str | Path) -> int:
    """The `global_step` a checkpoint was saved at (memory-mapped: the weights are not read)."""
    content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(content.get("global_step", 0))


class RunLogger(WandbLogger):
    """Lightning's WandbLogger with W&B's step set to the trainer's logging step, uploading
    checkpoints as versions of the `model-<run id>` artifact when `log_model` is on:
    `last.ckpt` after every save (periodic, after validation, at the end, on a stop signal;
    alias `last`) and each new best of ModelCheckpoint (alias `best`).

    W&B copies a file when it is logged, so a later rewrite of `last.ckpt` does not change an
    uploaded version. `log_model` replaces WandbLogger's own (which uploads only at the end).
    """

    def __init__(self, *args: Any, log_model: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upload_checkpoints = log_model
        self._uploaded_best: str | None = None
        self._step = 0

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log at `step`, or without one (figures, tables) at the step logged last."""
        self._step = self._step if step is None else int(step)
        self.experiment.log({**metrics, "trainer/global_step": self._step}, step=self._step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if not self.upload_checkpoints:
            return
        if isinstance(checkpoint_callback, ModelCheckpoint):
            path = checkpoint_callback.best_model_path
            if path and path != self._uploaded_best:
                self._upload(Path(path), "best", checkpoint_callback.best_model_score)
                self._uploaded_best = path
        else:  # LastCheckpoint
            self._upload(checkpoint_callback.path, "last", None)

    def _upload(self, path: Path, alias: str, score: Any) -> None:
        import wandb

        metadata = {"file": path.name, "global_step": checkpoint_step(path)}
        if score is not None:
            metadata["score"] = float(score)
        artifact = wandb.Artifact(f"model-{self.experiment.id}", type="model", metadata=metadata)
        artifact.add_file(str(path), name=path.name)
        self.experiment.log_artifact(artifact, aliases=[alias])


def wandb_mode(requested: str | None) -> str:
    """`online` when W&B has credentials for its host (`wandb_logged_in`), else `offline`,
    unless asked otherwise.

    WANDB_MODE in the environment wins over the config's `logger.mode`.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested:
        return requested
    return "online" if wandb_logged_in() else "offline"


def build_logger(
    cfg: DictConfig,
    run_dir: Path,
    config: dict[str, Any],
    job_type: str = "train",
    ckpt_path: str | None = None,
) -> Logger | bool:
    """The logger of `cfg.logger` (its `_target_`; null: none), writing into `run_dir`.

    A W&B logger logs `config` and resolves `logger.mode` (`wandb_mode`). A training's W&B run
    (`job_type="train"`) is continued across resumes, reruns and requeues and rewound to
    `ckpt_path` (`run_init_arguments`); a sweep job is named by its overrides and grouped by its
    sweep, unless `logger.name`, `logger.group` or `logger.job_type` say otherwise.
    """
    node = cfg.logger
    if node.get("_target_") is None:
        return False
    target = load_target("logger", node)
    if not (isinstance(target, type) and issubclass(target, WandbLogger)):
        return build(node, LOGGER_OWN_KEYS, save_dir=str(run_dir))
    log_model = node.get("log_model", False)
    if not isinstance(log_model, bool):
        raise ConfigError(f"logger.log_model={log_model!r} must be true or false")
    job_name, sweep = sweep_job_names(HydraConfig.get() if HydraConfig.initialized() else None)
    rewind = bool(node.get("rewind", True))
    identity = run_init_arguments(run_dir, ckpt_path, rewind) if job_type == "train" else {}
    defaults = {"name": job_name or cfg.name, "group": sweep, "job_type": job_type}
    return build(
        node,
        LOGGER_OWN_KEYS,
        **{key: value for key, value in defaults.items() if node.get(key) is None},
        save_dir=str(run_dir),
        mode=wandb_mode(node.get("mode")),
        config=config,
        **identity,
    )


def log_evaluation(cfg: DictConfig, result: dict[str, Any]) -> None:
    """Send an evaluation's metrics (a homography set's per kind too, `test_<kind>/...`),
    protocol, per-pair table and figures (docs/hpatches.md#protocol) to the configured logger."""
    config = plain(cfg)
    logger = build_logger(cfg, Path(cfg.run_dir), config, job_type="eval")
    if not logger:
        return
    metrics = {f"test/{k}": v for k, v in result["metrics"].items()}
    for kind, values in result.get("subsets", {}).items():  # a homography set's kinds
        metrics.update({f"test_{kind}/{k}": v for k, v in values.items()})
    logger.log_metrics(metrics)
    if isinstance(logger, WandbLogger):
        logger.log_table(
            key="test_pairs",
            columns=result.get("columns")
            or ["pair", "scene", "matches", "precision", "R_err", "t_err"],
            data=result["rows"],
        )
        figures = result.get("figures") or []
        if figures:
            logger.log_image(
                key="test_match/evaluation",
                images=[str(path) for _, path in figures],
                caption=[caption for caption, _ in figures],
            )
        logger.experiment.summary.update({"protocol": result["protocol_key"]})
        logger.experiment.finish()
    else:
        logger.save()
