"""Learning curves of a run as one PNG in its directory: training losses, validation AUCs and
precision over optimizer steps, refreshed after every validation and at the end.

The values are the ones the LightningModule logs (so W&B shows the same curves, grouped by their
prefixes `train/`, `metrics_<set>/` and `val_<set>/`): `train/loss`, `train/loss_c` and
`train/loss_f` every `trainer.log_every_n_steps` steps; per validation set its AUCs
(`metrics_<set>/auc@<k>`: pose sets in degrees, homography sets in pixels of corner error), its
precision (`metrics_<set>/prec@<thr>`) and its mean loss (`val_<set>/avg_loss`). A run without
one of them draws no panel for it.
"""

from __future__ import annotations

import math
import re
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
from lightning.pytorch.utilities import rank_zero_only

from loftr.lightning.checkpoints import atomic_write

CURVES_FILE = "learning_curves.png"
TRAIN_KEYS = ("train/loss", "train/loss_c", "train/loss_f")
_SET_METRIC = re.compile(r"^metrics_(?P<set>.+)/(?P<kind>auc|prec)@(?P<at>.+)$")
_SET_LOSS = re.compile(r"^val_(?P<set>.+)/avg_loss$")

History = dict[str, list[tuple[int, dict[str, float]]]]


def plot_learning_curves(history: History, path: str | Path) -> list[str]:
    """Draw `history` into the PNG `path`; return the panels' titles (none: no file).

    Args:
        history: `{"train": [(step, {key: value})], "val": [(step, {key: value})]}` with the
            logged keys (module docstring); values that are not finite are left out.
        path: the PNG to write (atomically).

    Returns:
        The titles of the panels drawn, in order: the loss, one AUC panel per validation set,
        the precision.
    """
    panels: list[tuple[str, str, dict[str, list[tuple[int, float]]]]] = []
    losses = {k: _series(history.get("train", []), k) for k in TRAIN_KEYS}
    for step_values in history.get("val", []):
        for key in step_values[1]:
            if match := _SET_LOSS.match(key):
                losses.setdefault(f"val {match['set']} (mean)", _series(history["val"], key))
    losses = {k: v for k, v in losses.items() if v}
    if losses:
        panels.append(("losses: training steps, validation means", "loss", losses))
    aucs: dict[str, dict[str, list[tuple[int, float]]]] = {}
    precision: dict[str, list[tuple[int, float]]] = {}
    keys = sorted({k for _, values in history.get("val", []) for k in values}, key=_metric_order)
    for key in keys:
        if not (match := _SET_METRIC.match(key)):
            continue
        series = [(s, 100 * v) for s, v in _series(history["val"], key)]
        if not series:
            continue
        if match["kind"] == "auc":
            aucs.setdefault(match["set"], {})[f"AUC@{match['at']}"] = series
        else:
            precision[f"{match['set']} @{match['at']}"] = series
    for name, series in aucs.items():
        # homography sets report AUC@3 (px of corner error), pose sets AUC@20 (degrees)
        unit = "px, corner error" if "AUC@3" in series else "deg, pose error"
        panels.append((f"{name}: AUC ({unit})", "AUC (%)", series))
    if precision:
        panels.append(("validation precision", "precision (%)", precision))
    if not panels:
        return []
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (title, ylabel, series) in zip(axes.flat, panels, strict=False):
        for label, points in series.items():
            steps, values = zip(*points, strict=True)
            # training losses are dense lines; validations are few points: markers
            style = "-" if label in TRAIN_KEYS else "o-"
            ax.plot(steps, values, style, label=label.replace("train/", "train "), markersize=4)
        if ylabel.endswith("(%)"):
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, partial(fig.savefig, format="png", dpi=100))
    plt.close(fig)
    return [title for title, _, _ in panels]


def _series(records: list[tuple[int, dict[str, float]]], key: str) -> list[tuple[int, float]]:
    return [(s, v[key]) for s, v in records if key in v and math.isfinite(v[key])]


def _metric_order(key: str) -> tuple[str, float]:
    """AUC thresholds in increasing order (auc@5 before auc@10)."""
    match = _SET_METRIC.match(key)
    if not match:
        return (key, 0.0)
    try:
        at = float(match["at"])
    except ValueError:
        at = 0.0
    return (f"{match['set']}/{match['kind']}", at)


class LearningCurves(L.Callback):
    """`<run_dir>/learning_curves.png` (`plot_learning_curves`) from the logged metrics; its
    history is kept in the checkpoints, so a resumed run's plot goes on where it stopped."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / CURVES_FILE
        self.history: History = {"train": [], "val": []}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = state_dict.get("history", self.history)

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        step = trainer.global_step
        recorded = self.history["train"][-1][0] if self.history["train"] else -1
        if step % max(trainer.log_every_n_steps, 1) or step == recorded:  # accumulation
            return
        metrics = trainer.callback_metrics
        values = {k: float(metrics[k]) for k in TRAIN_KEYS if k in metrics}
        if values:
            self.history["train"].append((step, values))

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if _SET_METRIC.match(k) or _SET_LOSS.match(k)
        }
        if values:
            self.history["val"].append((trainer.global_step, values))
            plot_learning_curves(self.history, self.path)

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        plot_learning_curves(self.history, self.path)
