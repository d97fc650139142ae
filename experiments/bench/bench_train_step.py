"""One training step on the CPU, stage by stage, with peak memory.

    python -m experiments.bench.bench_train_step [--size 640x480] [--steps 2] [--threads 1]

Composes the default training run (`conf/train.yaml`: synthetic ScanNet-format data, the paper
model, dual-softmax, dense supervision) at the real recipes' 640x480 input, batch 1, and times
the stages of a step as the LightningModule runs them (docs/original.md#lightning-module): data
loading, coarse ground truth, forward, fine ground truth, loss, backward, optimizer step (with the
gradient clipping), plus the metrics a validation step adds (epipolar errors and the pose per pair).
The first step is a warm-up; the medians of `--steps` more are reported with the peak resident
memory of the process during a step (VmHWM, reset before each step).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.bench.bench_inference import parse_size
from experiments.bench.common import ROOT, machine_info, write_json
from loftr.config import plain  # the package registers the schemas and resolvers
from loftr.data.datamodule import LoFTRDataModule
from loftr.evaluation.metrics import compute_pose_errors, compute_symmetrical_epipolar_errors
from loftr.lightning.module import LoFTRModule
from loftr.supervision import compute_supervision_coarse, compute_supervision_fine

STAGES = (
    "data",
    "coarse_gt",
    "forward",
    "fine_gt",
    "loss",
    "backward",
    "optimizer",
    "metrics",
)
# the share the issue allows these together
SUPERVISION_STAGES = ("coarse_gt", "fine_gt", "loss", "metrics")


def _status_kib(field: str) -> int | None:
    """A `/proc/self/status` memory field (VmRSS, VmHWM) in KiB, None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def compose_config(width: int, height: int, overrides: list[str] | None = None) -> dict[str, Any]:
    """The default training run's config at `width x height`, resolved to plain containers."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"dataset.scannet_img_resize=[{width},{height}]", *(overrides or [])],
        )
    return plain(cfg)


def bench_train_step(
    size: tuple[int, int] = (640, 480), steps: int = 2, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Median stage times (s) of `steps` training steps after one warm-up, and peak memory.

    Args:
        size: network input `(width, height)`.
        steps: timed steps.
        overrides: extra Hydra overrides (e.g. `model.match_coarse.train_pad_num_gt_min=20`
            for tiny inputs).
    """
    width, height = size
    config = compose_config(width, height, overrides)
    datamodule = LoFTRDataModule(OmegaConf.create(config["dataset"]), batch_size=1, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = LoFTRModule(config).train()
    optimizer = module.configure_optimizers()
    model_cfg, eval_cfg = module.model_cfg, module.eval_cfg
    iterator = iter(datamodule.train_dataloader())

    def step() -> tuple[dict[str, float], int]:
        times: dict[str, float] = {}

        def timed(stage: str, fn: Callable[[], Any]) -> Any:
            start = time.perf_counter()
            out = fn()
            times[stage] = time.perf_counter() - start
            return out

        batch = timed("data", lambda: next(iterator))
        timed("coarse_gt", lambda: compute_supervision_coarse(batch, model_cfg))
        timed("forward", lambda: module.matcher(batch))
        timed("fine_gt", lambda: compute_supervision_fine(batch, model_cfg))
        timed("loss", lambda: module.loss(batch))
        timed("backward", lambda: batch["loss"].backward())

        def optimizer_step() -> None:
            # the original's clip (docs/original.md#optimizer-schedule)
            torch.nn.utils.clip_grad_norm_(module.parameters(), 0.5)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        timed("optimizer", optimizer_step)

        def metrics() -> None:
            with torch.no_grad():
                compute_symmetrical_epipolar_errors(batch)
                compute_pose_errors(batch, eval_cfg)

        timed("metrics", metrics)
        return times, len(batch["mconf"])

    can_reset = _reset_peak_rss()
    start_rss = _status_kib("VmRSS")
    step()  # warm-up; its peak is the first step's, before any memory is reused
    first_peak = _status_kib("VmHWM")
    records, peaks, matches = [], [], []
    for _ in range(steps):
        _reset_peak_rss()
        before = _status_kib("VmRSS")
        times, n_matches = step()
        records.append(times)
        matches.append(n_matches)
        peak = _status_kib("VmHWM")
        if peak is not None and before is not None:
            peaks.append((peak, before))
    medians = {stage: statistics.median(r[stage] for r in records) for stage in STAGES}
    total = sum(medians.values())
    supervision = sum(medians[s] for s in SUPERVISION_STAGES)
    result: dict[str, Any] = {
        "size": f"{width}x{height}",
        "batch": 1,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "matches": matches,
        "stages_s": {s: round(v, 4) for s, v in medians.items()},
        "total_s": round(total, 3),
        "shares": {s: round(v / total, 4) for s, v in medians.items()},
        "gt_loss_metrics_share": round(supervision / total, 4),
    }
    if peaks and start_rss is not None and first_peak is not None:
        peak, _ = max(peaks)
        result["memory"] = {
            "rss_before_first_step_mib": round(start_rss / 1024, 1),
            "peak_rss_first_step_mib": round(first_peak / 1024, 1),
            "peak_rss_later_steps_mib": round(peak / 1024, 1),
            "peak_reset_per_step": can_reset,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = bench_train_step(parse_size(args.size), args.steps, args.overrides)
    print(
        f"training step {res['size']}, batch 1, {res['threads']} thread(s), matches "
        f"{res['matches']}: {res['total_s']:.2f} s"
    )
    for stage in STAGES:
        print(f"  {stage:10s} {res['stages_s'][stage]:8.3f} s  {res['shares'][stage]:6.1%}")
    print(f"  ground truth + loss + metrics: {res['gt_loss_metrics_share']:.1%} of the step")
    if "memory" in res:
        mem = res["memory"]
        print(
            f"  resident memory: {mem['rss_before_first_step_mib']} MiB before the first step, "
            f"peak {mem['peak_rss_first_step_mib']} MiB in it, "
            f"{mem['peak_rss_later_steps_mib']} MiB in later steps"
        )
    write_json(args.json, {"machine": machine_info(), "train_step": res})


if __name__ == "__main__":
    main()
