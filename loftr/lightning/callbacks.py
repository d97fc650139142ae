"""Callbacks of a run: the periodic `last` checkpoint, match figures and tables, metrics.json."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from loftr.lightning.module import gather_objects
from loftr.viz import figure_to_array, make_evaluation_figure

LAST_CHECKPOINT = "last.ckpt"


class LastCheckpoint(L.Callback):
    """`last.ckpt`: refreshed every `every_n_train_steps` optimizer steps, after each validation,
    at the end, and when SIGTERM or SIGINT asks the run to stop.

    A signal lets the current step finish; every rank then saves (the ranks agree through one
    all-reduce per step) and the run stops cleanly, so SLURM preemption loses nothing. A second
    Ctrl+C interrupts at once. SIGKILL loses at most the steps since the last refresh; the run
    resumes exactly with `ckpt_path=last` (the checkpoint holds the sampler position and the RNG
    states). Lightning writes checkpoints through a temporary file and a rename (fsspec
    transaction), so a crash while writing leaves the previous `last.ckpt` intact.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = int(every_n_train_steps)
        self._last_step_saved = -1
        self.stopped_by: str | None = None
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    @property
    def path(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.global_step == self._last_step_saved:
            return
        trainer.save_checkpoint(self.path)
        self._last_step_saved = trainer.global_step
        for logger in trainer.loggers:  # as ModelCheckpoint does: a logger may upload the file
            logger.after_save_checkpoint(self)

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now
        self._signal = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    # -------------------------------------------------------------------- hooks
    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        step = trainer.global_step
        if self.every_n_train_steps > 0 and step > 0 and step % self.every_n_train_steps == 0:
            self._save(trainer)
        if trainer.strategy.reduce_boolean_decision(self._signal is not None, all=False):
            self._save(trainer)
            self.stopped_by = signal.Signals(self._signal or signal.SIGTERM).name
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.should_stop:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        if self.stopped_by is None:
            self._save(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException
    ) -> None:
        self._restore_handlers()


class ValidationReport(L.Callback):
    """Match figures coloured by epipolar error and a per-pair table, per validation set.

    Figures go to W&B as images (`val_match_<set>/evaluation`) and, whatever the logger, as
    PNGs under `<run_dir>/figures/epoch=<e>/`; the table lists every pair with its scene,
    overlap, number of matches, precision and pose errors (`val_pairs_<set>`).
    """

    def __init__(self, run_dir: str | Path, n_pairs_to_plot: int, epi_err_thr: float) -> None:
        self.run_dir = Path(run_dir)
        self.n_pairs_to_plot = int(n_pairs_to_plot)
        self.epi_err_thr = float(epi_err_thr)
        self._figures: dict[int, list[tuple[str, np.ndarray]]] = {}
        self._rows: dict[int, list[list[Any]]] = {}

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._figures, self._rows = {}, {}

    def _plot_every(self, trainer: L.Trainer, dataloader_idx: int) -> int:
        n_batches = trainer.num_val_batches[dataloader_idx] if trainer.num_val_batches else 1
        n_plot = max(self.n_pairs_to_plot // max(trainer.world_size, 1), 1)
        return max(int(n_batches) // n_plot, 1)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        rows = self._rows.setdefault(dataloader_idx, [])
        for b, identifier in enumerate(outputs["identifiers"]):
            errs = np.asarray(outputs["epi_errs"][b])
            precision = float((errs < self.epi_err_thr).mean()) if errs.size else 0.0
            overlap = batch.get("overlap_score")
            rows.append(
                [
                    identifier,
                    outputs["scene_id"][b],
                    float(overlap[b]) if overlap is not None else math.nan,
                    outputs["n_matches"][b],
                    precision,
                    float(outputs["R_errs"][b]),
                    float(outputs["t_errs"][b]),
                ]
            )
        figures = self._figures.setdefault(dataloader_idx, [])
        if (
            self.n_pairs_to_plot > 0
            and batch_idx % self._plot_every(trainer, dataloader_idx) == 0
            and len(figures) < self.n_pairs_to_plot
        ):
            fig = make_evaluation_figure(batch, 0)
            figures.append((outputs["identifiers"][0], figure_to_array(fig)))
            plt.close(fig)

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        names = pl_module.val_set_names
        wandb_logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        for index, figures in self._figures.items():
            folder = self.run_dir / "figures" / f"epoch={trainer.current_epoch}" / names[index]
            folder.mkdir(parents=True, exist_ok=True)
            for i, (_, image) in enumerate(figures):
                plt.imsave(folder / f"pair-{i}.png", image)
            if wandb_logger is not None and figures:
                wandb_logger.log_image(
                    key=f"val_match_{names[index]}/evaluation",
                    images=[image for _, image in figures],
                    caption=[identifier for identifier, _ in figures],
                )
        if wandb_logger is not None:
            for index, rows in self._rows.items():
                wandb_logger.log_table(
                    key=f"val_pairs_{names[index]}",
                    columns=["pair", "scene", "overlap", "matches", "precision", "R_err", "t_err"],
                    data=rows,
                )


class MetricsJson(L.Callback):
    """`<run_dir>/metrics.json`: last and best validation metrics, protocol and key settings.

    Sweeps and the results collector read it without W&B; it is rewritten after every
    validation, so a killed run still has its numbers.
    """

    def __init__(
        self, run_dir: str | Path, summary: dict[str, Any], monitor: str, mode: str
    ) -> None:
        self.path = Path(run_dir) / "metrics.json"
        self.summary = summary
        self.monitor, self.mode = monitor, mode
        self.last: dict[str, Any] | None = None
        self.best: dict[str, Any] | None = None
        self.start = time.time()

    def state_dict(self) -> dict[str, Any]:
        return {"last": self.last, "best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last, self.best = state_dict.get("last"), state_dict.get("best")

    def _is_better(self, value: float | None) -> bool:
        if self.best is None:
            return True
        if value is None:
            return False
        best = self.best[self.monitor]
        return value > best if self.mode == "max" else value < best

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module's epoch-end hook, which aggregates the metrics
        if trainer.sanity_checking or not pl_module.validation_results:
            return
        self.last = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "sets": pl_module.validation_results,
        }
        for key in ("auc@5", "auc@10", "auc@20"):
            if key in trainer.callback_metrics:
                self.last[key] = float(trainer.callback_metrics[key])
        if self._is_better(self.last.get(self.monitor)):
            self.best = self.last
        self.write(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # every rank takes part: each reports its training scenes and a parameter checksum, so
        # a run shows that ranks trained disjoint scenes and ended with identical weights
        checksum = float(sum(p.detach().double().sum() for p in pl_module.parameters()))
        scenes = getattr(trainer.datamodule, "train_scenes", None) if trainer.datamodule else None
        ranks = gather_objects({"train_scenes": scenes, "parameter_checksum": checksum})
        if trainer.is_global_zero:
            self.write(trainer, world_size=trainer.world_size, per_rank=ranks)

    def write(self, trainer: L.Trainer, **extra: Any) -> None:
        content = {
            **self.summary,
            "last": self.last,
            "best": self.best,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.time() - self.start, 1),
            **extra,
        }
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(content, indent=2))
        os.replace(tmp, self.path)
