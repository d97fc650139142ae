"""Callbacks of a run: the periodic `last` checkpoint, match figures and tables, metrics.json."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from loftr.evaluation.export import protocol_fields, write_metrics
from loftr.evaluation.protocol import validation_protocols
from loftr.lightning.checkpoints import LAST_CHECKPOINT, atomic_write
from loftr.lightning.module import TOP_LEVEL_AUCS, gather_objects
from loftr.viz import figure_to_array, make_evaluation_figure, make_homography_figure

# what a scheduler or a user sends to stop a run: SLURM and submitit send SIGUSR1/2 before a
# time limit, SIGTERM at preemption, scancel or the limit itself; Ctrl+C is SIGINT
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


class LastCheckpoint(L.Callback):
    """`last.ckpt`: refreshed every `every_n_train_steps` optimizer steps, after each validation,
    at the end, and when a stop signal asks the run to stop.

    Stop signals are SIGTERM, SIGINT and SIGUSR1/SIGUSR2 (what SLURM and submitit send before a
    time limit). The handler only records the signal; at the end of every training and
    validation batch the ranks agree on it through one all-reduce, so all stop at the same
    batch. The run then saves and leaves through Lightning's own stop path (`SIGTERMException`,
    the exception its loops raise for SIGTERM): no further batch, no validation and no top-k
    checkpoint for the interrupted epoch. A stop during validation, or at an epoch's last
    training batch, saves the finished epoch's training with its validation marked as begun,
    so the resumed run validates that epoch again from its first batch (RNG states restored at
    its start) and goes on exactly as an uninterrupted run. A signal that comes after the last
    validation batch lets the epoch end as usual and stops after the next training batch, or
    at the end of the run. A second SIGINT stops at once, without saving. Under DDP a signal
    that reaches one rank only stops them all.

    SIGKILL loses at most the steps since the last refresh; the run resumes exactly with
    `ckpt_path=last` (the checkpoint holds the sampler position and the RNG states). Checkpoints
    are written beside their destination and renamed over it
    (`loftr.lightning.checkpoints.AtomicCheckpointIO`), so a crash while writing leaves the
    previous `last.ckpt` intact.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = int(every_n_train_steps)
        self._last_step_saved = -1
        self.stopped_by: str | None = None  # the stop signal's name, once the run stops for it
        self.stopped_in: str | None = None  # "training", "validation", "the end" or "at once"
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._wakeup = (-1, -1, -1)  # the pipe that counts deliveries, and the previous fd

    @property
    def path(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    def _save(self, trainer: L.Trainer, force: bool = False) -> None:
        if trainer.sanity_checking or (not force and trainer.global_step == self._last_step_saved):
            return
        trainer.save_checkpoint(self.path)
        self._last_step_saved = trainer.global_step
        for logger in trainer.loggers:  # as ModelCheckpoint does: a logger may upload the file
            logger.after_save_checkpoint(self)

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: Any) -> None:
        # Signals that come while the main thread is inside one C call (a long kernel, a CUDA
        # sync) reach Python as one call; the wakeup pipe holds one byte per delivery.
        try:
            deliveries = os.read(self._wakeup[0], 4096).count(signum)
        except OSError:  # empty
            deliveries = 1
        if signum == signal.SIGINT and (self._signal == signal.SIGINT or deliveries > 1):
            self.stopped_by, self.stopped_in = "SIGINT", "at once"  # a second Ctrl+C
            raise SIGTERMException
        if self._signal is None:
            self._signal = signum

    def _install_handlers(self, trainer: L.Trainer) -> None:
        """Replace Lightning's SIGTERM handler (and the defaults) with `_on_signal`.

        Lightning's handler sets a flag that each rank's loops read on their own and, under
        DDP, broadcasts from inside the handler; the agreement at batch ends replaces both.
        A SIGTERM Lightning caught before this point is taken over.
        """
        if self._previous_handlers or threading.current_thread() is not threading.main_thread():
            return
        if trainer.received_sigterm and self._signal is None:
            self._signal = signal.SIGTERM
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._wakeup = (read, write, previous)
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        if not self._previous_handlers:
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        read, write, previous = self._wakeup
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)

    def _agreed_signal(self, trainer: L.Trainer) -> int:
        """The stop signal any rank received (the highest number), 0 if none; a collective."""
        received = torch.tensor(self._signal or 0, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(received, reduce_op="max"))

    def _stop(self, signum: int, stage: str) -> None:
        self.stopped_by, self.stopped_in = signal.Signals(signum).name, stage
        raise SIGTERMException

    # -------------------------------------------------------------------- hooks
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install_handlers(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install_handlers(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        step = trainer.global_step
        if self.every_n_train_steps > 0 and step > 0 and step % self.every_n_train_steps == 0:
            self._save(trainer)
        signum = self._agreed_signal(trainer)
        if signum and not _validation_follows(trainer):  # else stop as validation starts
            self._save(trainer)
            self._stop(signum, "training")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_in_validation(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_in_validation(trainer)

    def _stop_in_validation(self, trainer: L.Trainer) -> None:
        if trainer.state.fn != "fit":
            return
        signum = self._agreed_signal(trainer)
        if signum:
            if not trainer.sanity_checking:
                _mark_validation_begun(trainer)
                self._save(trainer, force=True)
            self._stop(signum, "validation")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        self._save(trainer)
        signum = self._agreed_signal(trainer)
        if signum:  # the run is complete, but whoever sent the signal learns that it stopped
            self.stopped_by, self.stopped_in = signal.Signals(signum).name, "the end"

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException
    ) -> None:
        self._restore_handlers()


def _validation_follows(trainer: L.Trainer) -> bool:
    """Whether the epoch's validation comes right after this training batch.

    A checkpoint saved at the end of an epoch's last training batch resumes in the next epoch
    (Lightning takes that epoch's validation as done), so a stop there waits for the
    validation's start and saves it as begun.
    """
    every = trainer.check_val_every_n_epoch
    return (
        trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        and trainer.enable_validation
        and every is not None
        and (trainer.current_epoch + 1) % every == 0
    )


def _mark_validation_begun(trainer: L.Trainer) -> None:
    """Rewind the running validation's progress to "inside its first batch".

    A checkpoint saved from this state resumes by running the whole validation again, as after
    a failure in its first step (Lightning's restart "mid evaluation"), instead of treating the
    epoch's validation as done.
    """
    progress = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    counters = ("ready", "started", "processed", "completed")
    before = {k: getattr(progress.total, k) - getattr(progress.current, k) for k in counters}
    begun = {"ready": 1, "started": 1, "processed": 0, "completed": 0}
    progress.current.load_state_dict(begun)
    progress.total.load_state_dict({k: before[k] + begun[k] for k in counters})
    progress.is_last_batch = False


class ValidationReport(L.Callback):
    """Match figures coloured by epipolar error (homography sets: by reprojection error under the
    true homography) and a per-pair table, per validation set.

    Figures go to W&B as images (`val_match_<set>/evaluation`) and, whatever the logger, as
    PNGs under `<run_dir>/figures/epoch=<e>/` (`figures/before_training/` for the validation of
    the untrained model, `validate_before_training`); the table lists every pair with its scene,
    overlap, number of matches, precision and pose errors (`val_pairs_<set>`); a homography
    set's lists its scene, number of matches, precision and corner error.
    """

    def __init__(
        self,
        run_dir: str | Path,
        n_pairs_to_plot: int,
        epi_err_thr: float,
        precision_thr: float,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.n_pairs_to_plot = int(n_pairs_to_plot)
        self.epi_err_thr = float(epi_err_thr)
        self.precision_thr = float(precision_thr)  # px, homography sets'
        self._homography_sets: set[int] = set()
        self._figures: dict[int, list[tuple[str, np.ndarray]]] = {}
        self._rows: dict[int, list[list[Any]]] = {}

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._figures, self._rows, self._homography_sets = {}, {}, set()

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
        homography = "H_errs" in outputs
        if homography:
            self._homography_sets.add(dataloader_idx)
        rows = self._rows.setdefault(dataloader_idx, [])
        for b, identifier in enumerate(outputs["identifiers"]):
            if homography:
                errs = np.asarray(outputs["reproj_errs"][b])
                precision = float((errs < self.precision_thr).mean()) if errs.size else 0.0
                rows.append(
                    [
                        identifier,
                        outputs["scene_id"][b],
                        outputs["n_matches"][b],
                        precision,
                        float(outputs["H_errs"][b]),
                    ]
                )
                continue
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
            if homography:
                fig = make_homography_figure(batch, 0, self.precision_thr)
            else:
                fig = make_evaluation_figure(batch, 0)
            figures.append((outputs["identifiers"][0], figure_to_array(fig)))
            plt.close(fig)

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        names = pl_module.val_set_names
        wandb_logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        before = trainer.state.fn == "validate"  # the untrained model, validate_before_training
        when = "before_training" if before else f"epoch={trainer.current_epoch}"
        for index, figures in self._figures.items():
            folder = self.run_dir / "figures" / when / names[index]
            folder.mkdir(parents=True, exist_ok=True)
            for i, (_, image) in enumerate(figures):
                atomic_write(folder / f"pair-{i}.png", partial(plt.imsave, arr=image, format="png"))
            if wandb_logger is not None and figures:
                wandb_logger.log_image(
                    key=f"val_match_{names[index]}/evaluation",
                    images=[image for _, image in figures],
                    caption=[identifier for identifier, _ in figures],
                )
        if wandb_logger is not None:
            for index, rows in self._rows.items():
                if index in self._homography_sets:
                    columns = ["pair", "scene", "matches", "precision", "corner_err"]
                else:
                    columns = ["pair", "scene", "overlap", "matches", "precision", "R_err", "t_err"]
                wandb_logger.log_table(key=f"val_pairs_{names[index]}", columns=columns, data=rows)


class MetricsJson(L.Callback):
    """`<run_dir>/metrics.json` (`loftr.evaluation.export`, docs/run_directory.md#metrics-json):
    first, last and best validation metrics, every validation set's protocol and key settings.

    `first` is the run's first validation: of the untrained model when the run validates before
    training (`validate_before_training`, which is never `last` nor `best`), else its first
    epoch's; the run's closing report prints it beside `last`.

    Sweeps and the results collector read it without W&B; it is rewritten after every
    validation, so a killed run still has its numbers.
    """

    def __init__(
        self, run_dir: str | Path, summary: dict[str, Any], monitor: str, mode: str
    ) -> None:
        self.run_dir = Path(run_dir)
        self.summary = summary
        self.monitor, self.mode = monitor, mode
        self.first: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self.best: dict[str, Any] | None = None
        self.val_sets: dict[str, Any] = {}
        self.start = time.time()

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last, self.best = state_dict.get("last"), state_dict.get("best")
        self.first = state_dict.get("first", self.first)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the sets' names and protocols, from the files the run validates on (rank 0 writes)
        if trainer.is_global_zero and not self.val_sets:
            protocols = validation_protocols(pl_module.hparams["config"])
            self.val_sets = {name: protocol_fields(p) for name, p in protocols.items()}

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
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "sets": pl_module.validation_results,
        }
        for key in TOP_LEVEL_AUCS:
            if key in trainer.callback_metrics:
                record[key] = float(trainer.callback_metrics[key])
        self.first = self.first or record
        if trainer.state.fn == "fit":  # not the validation before training
            self.last = record
            if self._is_better(record.get(self.monitor)):
                self.best = record
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
            "val_sets": self.val_sets,
            "first": self.first,
            "last": self.last,
            "best": self.best,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.time() - self.start, 1),
            **extra,
        }
        write_metrics(self.run_dir, "train", content)
