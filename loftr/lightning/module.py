"""The LightningModule: ground truth, LoFTR, losses and metrics in each step
(docs/original.md#lightning-module); homography validation sets get homography metrics
(docs/homography.md#validation)."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

from loftr.config import plain
from loftr.data.skipping import SKIPPED_KEY
from loftr.errors import DataError, NonFiniteError
from loftr.evaluation.homography import (
    aggregate_homography_metrics,
    collect_homography_pair_metrics,
    compute_homography_errors,
)
from loftr.evaluation.metrics import (
    aggregate_metrics,
    collect_pair_metrics,
    compute_pose_errors,
    compute_symmetrical_epipolar_errors,
)
from loftr.lightning.schedule import build_optimizer, lr_at, set_learning_rate
from loftr.losses import LoFTRLoss
from loftr.model import LoFTR, count_parameters, strip_prefix
from loftr.model.config import normalised_model_config
from loftr.supervision import (
    carries_homography,
    compute_supervision_coarse,
    compute_supervision_fine,
)

log = logging.getLogger(__name__)

# the top-level AUCs: each the mean over the sets that have it (docs/homography.md#validation)
TOP_LEVEL_AUCS = ("auc@3", "auc@5", "auc@10", "auc@20")


class LoFTRModule(L.LightningModule):
    """Trains and validates `LoFTR` with the original's loop and metrics.

    The LR is a function of the optimizer step and the epoch (`lr_at`), set before every
    optimizer step, so a resumed run follows the same schedule (docs/differences.md#1). The
    checkpoint also carries the RNG states (torch's CPU and CUDA generators, numpy, python), so
    the ground-truth padding draws, made on the model's device, resume exactly.
    A step whose loss or gradients are not finite on any rank is skipped on every rank and
    counted; after `trainer.max_consecutive_nonfinite` of them in a row the run stops, naming the
    last pairs. Under `16-mixed` the GradScaler skips fp16 overflows itself: those are counted
    apart (`train/scaler_skipped_steps`), as its calibration, not as bad data.
    Training pairs the data loader could not use (and replaced, `loftr.data.skipping`) are
    logged with their files and counted over all ranks (`train/skipped_pairs`, kept in the
    checkpoint); past `trainer.max_skipped_pairs` distinct ones every rank stops, naming them.

    Args:
        config: the run config that `loftr.config.validate.validate` passed, resolved (a
            DictConfig or containers); reads `model`, `optim`, `eval`,
            `trainer.max_consecutive_nonfinite` and `trainer.max_skipped_pairs`.
        val_set_names: a name per validation dataloader, used in metric keys.
    """

    def __init__(self, config: dict[str, Any], val_set_names: list[str] | None = None) -> None:
        super().__init__()
        config = plain(config)  # the checkpoint's copy: strings, never Enum members
        self.save_hyperparameters()
        self.model_cfg = normalised_model_config(config["model"])  # checked by validate
        self.optim_cfg = config["optim"]
        self.eval_cfg = config["eval"]
        self.max_consecutive_nonfinite = int(config["trainer"]["max_consecutive_nonfinite"])
        self.max_skipped_pairs = int(config["trainer"]["max_skipped_pairs"])
        self.val_set_names = list(val_set_names or ["val"])
        self.matcher = LoFTR(self.model_cfg, validated=True)
        self.loss = LoFTRLoss(self.model_cfg, validated=True)
        # per validation set: AUCs, precision, mean losses and the number of distinct pairs
        self.validation_results: dict[str, dict[str, float]] = {}
        self._pending_rng_states: list[dict[str, Any]] | None = None
        self.skipped_steps = 0  # non-finite steps skipped so far
        self.scaler_skipped_steps = 0  # fp16 overflows the GradScaler skipped (16-mixed)
        self._consecutive_skips = 0
        self._last_pair_names: Any = None
        self.skipped_pairs: list[str] = []  # this rank's distinct replaced pairs, with the error
        self._val_outputs: dict[int, list[dict[str, Any]]] = defaultdict(list)

    # ---------------------------------------------------------------- steps
    def _supervised_forward(self, batch: dict[str, Any]) -> None:
        """Coarse ground truth, matcher, fine ground truth, loss
        (docs/original.md#lightning-module)."""
        compute_supervision_coarse(batch, self.model_cfg)
        self.matcher(batch)
        compute_supervision_fine(batch, self.model_cfg)
        self.loss(batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self._last_pair_names = batch.get("pair_names")
        skipped_pairs = self._count_skipped_pairs(batch.pop(SKIPPED_KEY, []))
        self._supervised_forward(batch)
        scalars = {f"train/{k}": v for k, v in batch["loss_scalars"].items()}
        scalars["train/skipped_steps"] = float(self.skipped_steps)
        scalars["train/skipped_pairs"] = float(skipped_pairs)
        if self._grad_scaler() is not None:
            scalars["train/scaler_skipped_steps"] = float(self.scaler_skipped_steps)
        if self.model_cfg["match_coarse"]["match_type"] == "sinkhorn":
            scalars["train/skh_bin_score"] = self.matcher.coarse_matching.bin_score.detach().cpu()
        scalars["lr"] = torch.tensor(self.optimizers().param_groups[0]["lr"])
        self.log_dict(scalars, on_step=True, on_epoch=False, batch_size=batch["image0"].shape[0])
        return batch["loss"]

    def _count_skipped_pairs(self, per_item: list[str]) -> int:
        """Log the pairs new in `per_item`; return the distinct ones of the run, over all ranks.

        Raises:
            DataError: on every rank at once, past `trainer.max_skipped_pairs`; names them all.
        """
        for line in (line for lines in per_item for line in lines.splitlines()):
            if line not in self.skipped_pairs:
                self.skipped_pairs.append(line)
                log.warning("step %d: skipped %s", self.global_step, line)
        count = torch.tensor(float(len(self.skipped_pairs)), device=self.device)
        total = int(self.trainer.strategy.reduce(count, reduce_op="sum").item())
        if total > self.max_skipped_pairs:
            pairs = [line for lines in gather_objects(self.skipped_pairs) for line in lines]
            more = f" | and {len(pairs) - 20} more, each logged above" if len(pairs) > 20 else ""
            raise DataError(
                f"{total} training pairs could not be used (trainer.max_skipped_pairs="
                f"{self.max_skipped_pairs}): " + " | ".join(pairs[:20]) + more + "; repair or "
                "remove these files (python -m loftr.data.setup DATASET --check lists them all)"
            )
        return total

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        self._supervised_forward(batch)
        if carries_homography(batch):  # no K or pose: the homography metrics
            compute_homography_errors(batch, self.eval_cfg)
            pairs = collect_homography_pair_metrics(batch)
        else:
            compute_symmetrical_epipolar_errors(batch)
            compute_pose_errors(batch, self.eval_cfg)
            pairs = collect_pair_metrics(batch)
        # validation batches hold one pair (docs/original.md#datamodule), so the batch losses are
        # per pair
        pairs["loss_scalars"] = [{k: float(v) for k, v in batch["loss_scalars"].items()}] * batch[
            "bs"
        ]
        pairs["n_matches"] = [int((batch["m_bids"] == b).sum()) for b in range(batch["bs"])]
        pairs["scene_id"] = list(batch.get("scene_id", [""] * batch["bs"]))
        self._val_outputs[dataloader_idx].append(pairs)
        return pairs

    def on_validation_epoch_start(self) -> None:
        self._val_outputs.clear()

    def on_validation_epoch_end(self) -> None:
        """Gather per-pair results from every rank, drop the distributed sampler's duplicates,
        aggregate, and log per validation set and their mean (docs/original.md#lightning-module)."""
        per_set: dict[str, dict[str, float]] = {}
        logged: dict[str, float] = {}
        for index, name in enumerate(self.val_set_names):
            pairs = merge_pair_lists(gather_objects(self._val_outputs.get(index, [])))
            if not pairs["identifiers"]:
                continue
            metrics = self._aggregate(pairs)
            unique = {ident: i for i, ident in enumerate(pairs["identifiers"])}.values()
            losses = [pairs["loss_scalars"][i] for i in unique]
            avg_losses = {k: float(np.mean([s[k] for s in losses])) for k in losses[0]}
            per_set[name] = {**metrics, **avg_losses, "n_pairs": len(losses)}
            logged.update({f"metrics_{name}/{k}": v for k, v in metrics.items()})
            logged.update({f"val_{name}/avg_{k}": v for k, v in avg_losses.items()})
        # the checkpoint monitors the mean over validation sets of each set's own AUC (pose or
        # corner error); a threshold only some sets have is the mean over those
        for key in TOP_LEVEL_AUCS:
            values = [m[key] for m in per_set.values() if key in m]
            if values:
                logged[key] = float(np.mean(values))
        # identical on every rank after the gather: the mean over ranks changes nothing
        self.log_dict(logged, sync_dist=True)
        self.validation_results = per_set

    def _aggregate(self, pairs: dict[str, list[Any]]) -> dict[str, float]:
        """A set's numbers: corner-error AUC and reprojection precision for a homography set,
        pose AUC and epipolar precision otherwise."""
        if "H_errs" in pairs:
            precision_thr = float(self.eval_cfg["homography"]["precision_thr"])
            return aggregate_homography_metrics(pairs, precision_thr)
        return aggregate_metrics(pairs, epi_err_thr=float(self.eval_cfg["epi_err_thr"]))

    # ------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.parameters(), self.optim_cfg)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        # the warm-up and the schedule as a function of (step, epoch),
        # docs/original.md#optimizer-schedule
        set_learning_rate(optimizer, lr_at(self.global_step, self.current_epoch, self.optim_cfg))
        finite = True

        def checked_closure() -> torch.Tensor | None:
            nonlocal finite
            loss = optimizer_closure()  # forward and backward; DDP has all-reduced the gradients
            finite = self._finite_on_every_rank(loss)
            if finite:
                return loss
            optimizer.zero_grad()  # no gradient: the step leaves the weights and AdamW's state
            return None  # and a GradScaler skips its unscale, step and update

        scaler = self._grad_scaler()
        scale = scaler.get_scale() if scaler is not None else None
        # the precision plugin runs the closure, then (GradScaler: unscales) clips and steps
        optimizer.step(closure=checked_closure)
        if finite:
            if scaler is not None and scaler.get_scale() < scale:
                # fp16 gradients overflowed: the scaler skipped the step and lowered its scale
                self.scaler_skipped_steps += 1
            else:
                self._consecutive_skips = 0
            return
        self.skipped_steps += 1
        self._consecutive_skips += 1
        log.warning(
            "step %d: non-finite loss or gradients, skipped (%d so far); pairs %s",
            self.global_step,
            self.skipped_steps,
            self._last_pair_names,
        )
        if self._consecutive_skips >= self.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"{self._consecutive_skips} consecutive steps had a non-finite loss or gradients "
                f"(trainer.max_consecutive_nonfinite={self.max_consecutive_nonfinite}); the last "
                f"batch held the pairs {self._last_pair_names}. Check those pairs' depth and "
                "poses, lower the LR, or use precision=32-true."
            )

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        """The precision plugin's GradScaler (`16-mixed`), else None."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def _finite_on_every_rank(self, loss: torch.Tensor | None) -> bool:
        """Whether the loss and the gradients are finite on every rank, so all ranks agree.

        Under a GradScaler the gradients are scaled and the scaler checks them itself.
        """
        parameters = self.parameters() if self._grad_scaler() is None else []
        return self.trainer.strategy.reduce_boolean_decision(_finite(loss, parameters), all=True)

    # ----------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # every rank's generators: the ground-truth padding draws from torch's on the model's
        # device, the CPU or the GPU (docs/original.md#coarse-padding)
        checkpoint["rng_states"] = gather_objects(_rng_states())
        checkpoint["skipped_pairs"] = gather_objects(self.skipped_pairs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # keys and shapes, named in one line before Lightning's own load_state_dict
        source = f"checkpoint {self._trainer.ckpt_path}" if self._trainer else "the checkpoint"
        self.matcher.check_fits(strip_prefix(checkpoint.get("state_dict", {})), source)
        # rank 0 carries on the count of every rank (the world size may have changed)
        skipped = checkpoint.get("skipped_pairs", [])
        self.skipped_pairs = (
            [p for pairs in skipped for p in pairs] if self.global_rank == 0 else []
        )
        states = checkpoint.get("rng_states")
        if states:
            self._pending_rng_states = states

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Restored here, not at load time: creating the dataloader iterators in between draws
        # from torch's generator, which the interrupted run had done before saving.
        self._restore_pending_rng_states()

    def on_validation_start(self) -> None:
        # a run stopped in validation resumes with that validation, before any training batch
        if not self.trainer.sanity_checking:
            self._restore_pending_rng_states()

    def _restore_pending_rng_states(self) -> None:
        if self._pending_rng_states:
            states = self._pending_rng_states
            _set_rng_states(states[min(self.global_rank, len(states) - 1)])
            self._pending_rng_states = None

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per part, for the run's config and the README."""
        parts = {
            name: count_parameters(getattr(self.matcher, name))
            for name in (
                "backbone",
                "loftr_coarse",
                "coarse_matching",
                "fine_preprocess",
                "loftr_fine",
            )
        }
        parts["total"] = count_parameters(self.matcher)
        return parts


def _finite(loss: torch.Tensor | None, parameters: Any) -> bool:
    """Whether the loss and every gradient are finite (one reduction per parameter)."""
    if loss is None or not torch.isfinite(loss).all():
        return False
    sums = [p.grad.sum() for p in parameters if p.grad is not None]
    return bool(torch.isfinite(torch.stack(sums)).all()) if sums else True


def gather_objects(obj: Any) -> list[Any]:
    """`obj` from every rank (one process: `[obj]`)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def merge_pair_lists(per_rank: list[list[dict[str, Any]]]) -> dict[str, list[Any]]:
    """Concatenate per-batch pair lists from every rank into one dict of lists."""
    merged: dict[str, list[Any]] = defaultdict(list)
    for batches in per_rank:
        for pairs in batches:
            for key, values in pairs.items():
                merged[key].extend(values)
    merged.setdefault("identifiers", [])
    return merged


def _rng_states() -> dict[str, Any]:
    """torch (CPU and every visible CUDA device), numpy and python generator states, as tensors
    and plain containers (`weights_only` loads them)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda", [])  # older checkpoints hold none
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda) != visible:
        log.warning(
            "the checkpoint holds the CUDA generators of %d device(s), this process sees %d: "
            "the common ones are restored, GPU random draws differ from the interrupted run",
            len(cuda),
            visible,
        )
    torch.cuda.set_rng_state_all(cuda[:visible])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(_as_tuple(states["python"]))


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value
