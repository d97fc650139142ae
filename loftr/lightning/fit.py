"""A training run from its composed config: data, module, logger, callbacks and Trainer, the
fit, the report of where its outputs are, and what `python -m loftr.train` does with the
result (the exit code of a stopped run, the sweep objective)."""

from __future__ import annotations

import math
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from loftr.cli import command, group_choice, hydra_overrides, under_hydra
from loftr.config import plain
from loftr.config.validate import validate
from loftr.data.datamodule import LoFTRDataModule, test_instead
from loftr.errors import ConfigError
from loftr.lightning.callbacks import LastCheckpoint, MetricsJson, ValidationReport
from loftr.lightning.checkpoints import (
    LAST_CHECKPOINT,
    ResumeGuard,
    RunLock,
    remove_leftovers,
    resolve_ckpt_path,
)
from loftr.lightning.curves import CURVES_FILE, LearningCurves
from loftr.lightning.loggers import build_logger
from loftr.lightning.module import LoFTRModule
from loftr.lightning.schedule import true_batch_size
from loftr.lightning.trainer import build_callbacks, build_trainer

WHERE = {
    "training": "during training",
    "validation": "during validation (the resumed run validates that epoch again)",
    "the end": "after the last validation",
    "at once": "at once by a second SIGINT (nothing saved since the last last.ckpt)",
}


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
    configured = build_callbacks(cfg, ckpt_dir)
    best = next((c for c in configured if isinstance(c, ModelCheckpoint)), None)
    summary = {
        "name": cfg.name,
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
    metrics_json = MetricsJson(run_dir, summary, cfg.checkpoint.monitor, cfg.checkpoint.mode)
    callbacks = [
        *configured,
        last,
        ValidationReport(
            run_dir,
            cfg.logger.n_val_pairs_to_plot,
            cfg.eval.epi_err_thr,
            cfg.eval.homography.precision_thr,
        ),
        metrics_json,
        LearningCurves(run_dir),
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
        if cfg.validate_before_training and ckpt_path is None:  # a fresh start: the "before"
            trainer.validate(module, datamodule=datamodule, verbose=False)
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
        report_run(run_dir, best, logger, trainer, config["dataset"], metrics_json)
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()
        if trainer.is_global_zero:
            lock.release()
    return {
        "metrics": module.validation_results,
        "best_ckpt": (best and best.best_model_path) or None,
        "run_dir": run_dir,
        "trainer": trainer,
        "module": module,
        "datamodule": datamodule,
        "stopped_by": last.stopped_by,
        "stopped_in": last.stopped_in,
    }


def report_run(
    run_dir: Path,
    best: ModelCheckpoint | None,
    logger: Logger | bool,
    trainer: L.Trainer,
    dataset: Mapping[str, Any],
    metrics_json: MetricsJson | None = None,
) -> None:
    """Print the first and the last validation's numbers, where the run's outputs are, how to
    sync an offline W&B run, and the commands that evaluate and resume it, ready to paste (only
    for checkpoints that exist)."""
    if not trainer.is_global_zero:
        return
    last = run_dir / "checkpoints" / LAST_CHECKPOINT
    best_path = best and best.best_model_path
    best_path = best_path if best_path and Path(best_path).is_file() else None
    lines = before_after(metrics_json.first, metrics_json.last) if metrics_json else []
    lines.append(f"run directory : {run_dir}")
    lines.append(f"best checkpoint: {best_path or '(none saved)'}")
    lines.append(f"last checkpoint: {last if last.is_file() else '(none saved)'}")
    lines.append(f"metrics       : {run_dir / 'metrics.json'}")
    if (run_dir / CURVES_FILE).is_file():
        lines.append(f"curves        : {run_dir / CURVES_FILE}")
    if isinstance(logger, WandbLogger):
        wandb_dir = Path(logger.experiment.dir).parent
        lines.append(f"W&B files     : {wandb_dir}")
        if logger.experiment.settings.mode == "offline":
            lines.append(f"sync to W&B   : wandb sync {wandb_dir}")
    if under_hydra() and (best_path or last.is_file()):  # the commands are the command line's
        lines.append(f"evaluate      : {evaluate_command(best_path or last, dataset)}")
    if under_hydra() and last.is_file():
        lines.append(f"resume        : {resume_command(run_dir)}")
    rank_zero_info("\n".join(lines))


def before_after(first: dict[str, Any] | None, last: dict[str, Any] | None) -> list[str]:
    """Lines comparing two validations of `metrics.json` (`first` and `last` records): per set,
    each AUC and the precision, in %, from the first to the last; none when there are not two.

    >>> first = {"step": 0, "sets": {"val": {"auc@5": 0.0, "auc@10": 0.01, "prec@5e-04": 0.2}}}
    >>> last = {"step": 90, "sets": {"val": {"auc@5": 0.25, "auc@10": 0.5, "prec@5e-04": 0.8}}}
    >>> print("\\n".join(before_after(first, last)))
    first validation (step 0) -> last (step 90):
      val: AUC@5 0.0 -> 25.0 %, AUC@10 1.0 -> 50.0 %, precision@5e-04 20.0 -> 80.0 %
    """
    if not first or not last or first["step"] == last["step"]:
        return []
    lines = [f"first validation (step {first['step']}) -> last (step {last['step']}):"]
    for name, after in last["sets"].items():
        before = first["sets"].get(name, {})
        aucs = sorted((k for k in after if k.startswith("auc@")), key=lambda k: float(k[4:]))
        precisions = [k for k in after if k.startswith("prec@")]
        parts = [
            f"{k.replace('auc', 'AUC').replace('prec', 'precision')} "
            f"{100 * before.get(k, math.nan):.1f} -> {100 * after[k]:.1f} %"
            for k in aucs + precisions
        ]
        lines.append(f"  {name}: " + ", ".join(parts))
    return lines


def evaluate_command(ckpt: str | Path, dataset: Mapping[str, Any]) -> str:
    """`python -m loftr.evaluate` of a checkpoint on this run's dataset, as the run was started:
    its `dataset` and `debug` choices and `dataset.*` overrides (the model comes from `ckpt`);
    for a dataset without a test set, the dataset its source is tested on instead
    (`dataset=homographies`: `dataset=hpatches_heldout`)."""
    args = [f"ckpt_path={ckpt}"]
    instead = test_instead(dataset)
    if instead:
        args.append(f"dataset={instead}")
    for group in ("debug",) if instead else ("dataset", "debug"):
        if choice := group_choice(group, ""):
            args.append(choice)
    if not instead:
        args += [o for o in hydra_overrides() if o.startswith("dataset.")]
    return command("loftr.evaluate", args)


def resume_command(run_dir: Path) -> str:
    """This run's command again, in its own directory, from its own `last.ckpt`."""
    kept = [o for o in hydra_overrides() if not o.startswith(("hydra.run.dir=", "ckpt_path="))]
    return command("loftr.train", [*kept, f"hydra.run.dir={run_dir}", "ckpt_path=last"])


def train_command(cfg: DictConfig) -> float | None:
    """`python -m loftr.train`'s work: fit; exit as `report_stop` says when a signal stopped the
    run; else return the objective a sweeper optimises: the mean of `cfg.objective` (a
    validation metric, e.g. `auc@10`) over the validation sets that report it (a pose set has
    no `auc@3`, a homography set no `auc@20`), None without a validation."""
    result = train(cfg)
    if result["stopped_by"]:
        report_stop(result, cfg.run_dir)
    metrics = result["metrics"]
    values = [m[cfg.objective] for m in metrics.values() if cfg.objective in m]
    if metrics and not values:
        keys = sorted({key for m in metrics.values() for key in m})
        raise ConfigError(
            f"objective={cfg.objective} is no validation metric; choose one of {keys}"
        )
    return float(sum(values) / len(values)) if values else None


def report_stop(result: dict, run_dir: str) -> None:
    """Say where a stop signal stopped the run and how to resume it; exit with 128 + signal.

    SIGUSR1/SIGUSR2 then go to the handler installed before training, if any: submitit's
    requeues the job (and exits itself) now that the checkpoint is on disk.
    """
    name, step = result["stopped_by"], result["trainer"].global_step
    print(
        f"stopped by {name} after step {step}, {WHERE[result['stopped_in']]}; resume with the "
        f"same command and hydra.run.dir={run_dir}",
        flush=True,
    )
    signum = signal.Signals[name]
    handler = signal.getsignal(signum)
    if signum in (signal.SIGUSR1, signal.SIGUSR2) and callable(handler):
        handler(signum, None)
    raise SystemExit(128 + signum)
