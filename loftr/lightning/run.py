"""Builds a run from the composed config: data, module, loggers, callbacks, Trainer; and fits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from loftr.cli import command, group_choice, hydra_overrides, under_hydra
from loftr.config import plain
from loftr.config.validate import validate
from loftr.data.datamodule import LoFTRDataModule
from loftr.errors import ConfigError
from loftr.lightning.callbacks import LastCheckpoint, MetricsJson, ValidationReport
from loftr.lightning.checkpoints import (
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    ResumeGuard,
    RunLock,
    remove_leftovers,
    resolve_ckpt_path,
)
from loftr.lightning.module import LoFTRModule
from loftr.lightning.schedule import true_batch_size
from loftr.lightning.wandb_run import (
    RunLogger,
    run_init_arguments,
    sweep_job_names,
    wandb_logged_in,
)


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
    """The logger of `cfg.logger.kind`: wandb, csv or none.

    A training's W&B run (`job_type="train"`) is continued across resumes, reruns and requeues
    and rewound to `ckpt_path` (`run_init_arguments`); a sweep job is named by its overrides
    and grouped by its sweep unless `logger.group` is set.
    """
    kind = cfg.logger.kind
    if kind == "none":
        return False
    if kind == "csv":
        return CSVLogger(save_dir=run_dir, name="csv", version="")
    if kind == "wandb":
        log_model = cfg.logger.get("log_model", False)
        if not isinstance(log_model, bool):
            raise ConfigError(f"logger.log_model={log_model!r} must be true or false")
        job_name, sweep = sweep_job_names(HydraConfig.get() if HydraConfig.initialized() else None)
        rewind = bool(cfg.logger.get("rewind", True))
        identity = run_init_arguments(run_dir, ckpt_path, rewind) if job_type == "train" else {}
        return RunLogger(
            name=job_name or cfg.name,
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group or sweep,
            tags=list(cfg.logger.tags),
            save_dir=str(run_dir),
            mode=wandb_mode(cfg.logger.mode),
            config=config,
            job_type=job_type,
            upload_checkpoints=log_model,
            **identity,
        )
    raise ConfigError(
        f"logger.kind={kind!r} is unknown; use logger=wandb, logger=csv or logger=none"
    )


def cluster_plugins() -> list:
    """Atomic checkpoint writes; under SLURM, leave requeueing to the submitit launcher (one
    mechanism, not two)."""
    slurm = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    return [AtomicCheckpointIO(), *slurm]


def build_trainer(
    cfg: DictConfig, run_dir: Path, logger: Logger | bool, callbacks: list
) -> L.Trainer:
    hw, tr = cfg.hardware, cfg.trainer
    return L.Trainer(
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.num_nodes,
        strategy=hw.strategy,
        precision=cfg.precision,
        sync_batchnorm=hw.sync_batchnorm,
        benchmark=hw.benchmark,
        max_epochs=tr.max_epochs,
        max_steps=tr.max_steps,
        check_val_every_n_epoch=tr.check_val_every_n_epoch,
        limit_train_batches=tr.limit_train_batches,
        limit_val_batches=tr.limit_val_batches,
        num_sanity_val_steps=tr.num_sanity_val_steps,
        enable_progress_bar=tr.enable_progress_bar,
        profiler=tr.profiler,
        gradient_clip_val=cfg.optim.gradient_clipping,
        gradient_clip_algorithm="norm",
        accumulate_grad_batches=cfg.accumulate,
        log_every_n_steps=cfg.logger.log_every_n_steps,
        logger=logger,
        callbacks=callbacks,
        plugins=cluster_plugins(),
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,  # our samplers shard scenes and pairs themselves
        enable_checkpointing=True,
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit one composed run; return its metrics and the objects it built.

    Args:
        cfg: the composed `train` config; `cfg.run_dir` is the run directory.

    Returns:
        `metrics` (the validation metrics of the last epoch), `best_ckpt`, `run_dir`,
        `trainer`, `module`, `datamodule`, and `stopped_by`/`stopped_in` (the stop signal's name
        and where it stopped the run, see `LastCheckpoint`; None when no signal came).
    """
    validate(cfg)  # the run's one check
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, run_dir)
    L.seed_everything(cfg.seed, workers=True)
    config = plain(cfg)
    datamodule = LoFTRDataModule(
        cfg.dataset,
        batch_size=cfg.hardware.batch_size,
        num_workers=cfg.hardware.num_workers,
        pin_memory=cfg.hardware.pin_memory,
        seed=cfg.seed,
        max_skipped_pairs=cfg.trainer.max_skipped_pairs,
        validated=True,  # by validate(cfg) above
    )
    module = LoFTRModule(config, val_set_names=datamodule.val_set_names)
    logger = build_logger(cfg, run_dir, config, job_type="train", ckpt_path=ckpt_path)
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        # no `=` or `@` in the name: `ckpt=<path>` must parse as a Hydra override unquoted
        filename="epoch{epoch}-auc5_{auc@5:.3f}-auc10_{auc@10:.3f}-auc20_{auc@20:.3f}",
        auto_insert_metric_name=False,
        monitor=cfg.checkpoint.monitor,
        mode=cfg.checkpoint.mode,
        save_top_k=cfg.checkpoint.save_top_k,
        save_last=False,
    )
    summary = {
        "name": cfg.name,
        "protocol": dict(config["eval"]),
        "parameters": module.parameter_counts(),
        "config": {
            "matcher": config["model"]["match_coarse"]["match_type"],
            "sparse_spvs": config["model"]["match_coarse"]["sparse_spvs"],
            "dataset": cfg.dataset.get("name", None),
            "true_batch_size": true_batch_size(
                cfg.hardware.devices,
                cfg.hardware.num_nodes,
                cfg.hardware.batch_size,
                cfg.accumulate,
            ),
            "lr": config["optim"]["lr"],
            "warmup_steps": config["optim"]["warmup_steps"],
        },
    }
    last = LastCheckpoint(ckpt_dir, cfg.checkpoint.every_n_train_steps)
    callbacks = [
        best,
        last,
        ValidationReport(run_dir, cfg.logger.n_val_pairs_to_plot, cfg.eval.epi_err_thr),
        MetricsJson(run_dir, summary, cfg.checkpoint.monitor, cfg.checkpoint.mode),
        ResumeGuard(run_dir, ckpt_path, config),
    ]
    trainer = build_trainer(cfg, run_dir, logger, callbacks)
    lock = RunLock(run_dir)
    if trainer.is_global_zero:  # the one writer of the run directory's shared files
        lock.acquire()
        remove_leftovers(run_dir)
    if isinstance(logger, WandbLogger) and trainer.is_global_zero:
        logger.experiment.config.update(
            {"parameters": summary["parameters"]}, allow_val_change=True
        )
    try:
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
            weights_only=True,  # a checkpoint cannot run code (docs/differences.md#5)
        )
    except SIGTERMException:
        if last.stopped_by is None:  # not a stop of ours: keep Lightning's meaning
            raise
    finally:
        report_run(run_dir, best, logger, trainer)
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()
        if trainer.is_global_zero:
            lock.release()
    return {
        "metrics": module.validation_results,
        "best_ckpt": best.best_model_path or None,
        "run_dir": run_dir,
        "trainer": trainer,
        "module": module,
        "datamodule": datamodule,
        "stopped_by": last.stopped_by,
        "stopped_in": last.stopped_in,
    }


def report_run(
    run_dir: Path, best: ModelCheckpoint, logger: Logger | bool, trainer: L.Trainer
) -> None:
    """Print where the run's outputs are, how to sync an offline W&B run, and the commands that
    evaluate and resume it, ready to paste (only for checkpoints that exist)."""
    if not trainer.is_global_zero:
        return
    last = run_dir / "checkpoints" / LAST_CHECKPOINT
    best_path = (
        best.best_model_path
        if best.best_model_path and Path(best.best_model_path).is_file()
        else None
    )
    lines = [f"run directory : {run_dir}"]
    lines.append(f"best checkpoint: {best_path or '(none saved)'}")
    lines.append(f"last checkpoint: {last if last.is_file() else '(none saved)'}")
    lines.append(f"metrics       : {run_dir / 'metrics.json'}")
    if isinstance(logger, WandbLogger):
        wandb_dir = Path(logger.experiment.dir).parent
        lines.append(f"W&B files     : {wandb_dir}")
        if logger.experiment.settings.mode == "offline":
            lines.append(f"sync to W&B   : wandb sync {wandb_dir}")
    if under_hydra() and (best_path or last.is_file()):  # the commands are the command line's
        lines.append(f"evaluate      : {evaluate_command(best_path or last)}")
    if under_hydra() and last.is_file():
        lines.append(f"resume        : {resume_command(run_dir)}")
    rank_zero_info("\n".join(lines))


def evaluate_command(ckpt: str | Path) -> str:
    """`python -m loftr.evaluate` of a checkpoint on this run's dataset, as the run was started:
    its `dataset` and `debug` choices and `dataset.*` overrides (the model comes from `ckpt`)."""
    args = [f"ckpt={ckpt}"]
    for group in ("dataset", "debug"):
        if choice := group_choice(group, ""):
            args.append(choice)
    args += [o for o in hydra_overrides() if o.startswith("dataset.")]
    return command("loftr.evaluate", args)


def resume_command(run_dir: Path) -> str:
    """This run's command again, in its own directory, from its own `last.ckpt`."""
    kept = [o for o in hydra_overrides() if not o.startswith(("hydra.run.dir=", "ckpt_path="))]
    return command("loftr.train", [*kept, f"hydra.run.dir={run_dir}", "ckpt_path=last"])


def log_evaluation(cfg: DictConfig, result: dict[str, Any]) -> None:
    """Send an evaluation's metrics, protocol and per-pair table to the configured logger."""
    config = plain(cfg)
    logger = build_logger(cfg, Path(cfg.run_dir), config, job_type="eval")
    if not logger:
        return
    logger.log_metrics({f"test/{k}": v for k, v in result["metrics"].items()})
    if isinstance(logger, WandbLogger):
        logger.log_table(
            key="test_pairs",
            columns=["pair", "scene", "matches", "precision", "R_err", "t_err"],
            data=result["rows"],
        )
        logger.experiment.summary.update({"protocol": result["protocol_key"]})
        logger.experiment.finish()
    else:
        logger.save()
