"""One training step on the CPU, stage by stage, with peak memory.

    python -m experiments.bench.bench_train_step [--size 640x480] [--steps 2] [--threads 1]

Composes the default training run (`conf/train.yaml`: synthetic ScanNet-format data, dual-softmax,
dense supervision) with the paper model (`model=loftr`, whatever model the default run trains)
at the real recipes' 640x480 input, batch 1, and times the stages of a step as the
LightningModule runs them (docs/original.md#lightning-module): data loading, coarse ground truth,
forward, fine ground truth, loss, backward, optimizer step (with the gradient clipping), plus the
metrics a validation step adds (epipolar errors and the pose per pair).
The first step is a warm-up; the medians of `--steps` more are reported with the peak resident
memory of the process during a step (VmHWM, reset before each step).

    python -m experiments.bench.bench_train_step --compare 320x240 640x480 [--repeats 3]

compares instead the training step of the paper model (`model=loftr`, whatever the default run
uses) as it runs now (after) against the same step with the fine branch's last conv over the
whole map (`model.fine_train_max_coverage=0`, docs/differences.md#15) and the linear attention
keeping its intermediates for backward (docs/differences.md#16), the computation before them
(before): same batch, same weights, the two alternating, medians; with the losses' and the
gradients' agreement, and the profile of one step at the first size. The dense coarse loss's
fused negative term (docs/differences.md#16) runs in both.
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
from torch.profiler import ProfilerActivity, profile

from experiments.bench.bench_inference import OUR_SECTIONS, parse_size
from experiments.bench.common import (
    ROOT,
    heaviest_ops,
    machine_info,
    median,
    time_alternating,
    write_json,
)
from loftr.config import plain  # the package registers the schemas and resolvers
from loftr.data.datamodule import LoFTRDataModule
from loftr.evaluation.metrics import compute_pose_errors, compute_symmetrical_epipolar_errors
from loftr.lightning.module import LoFTRModule
from loftr.model.loftr import count_parameters
from loftr.model.transformer import RecomputedLinearAttention
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
    # the paper model, whatever model the default run trains
    config = compose_config(width, height, ["model=loftr", *(overrides or [])])
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
        "model": "loftr",
        "parameters": count_parameters(module.matcher),
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


def bench_train_compare(
    size: tuple[int, int],
    repeats: int = 3,
    overrides: list[str] | None = None,
    with_profile: bool = False,
) -> dict[str, Any]:
    """Training step (coarse ground truth to backward) after / before the sparse fine branch
    and the recomputed linear attention.

    Args:
        size: network input `(width, height)`.
        repeats: timed steps of each path, alternating, after one warm-up each.
        overrides: extra Hydra overrides (for tiny inputs).
        with_profile: add the stages and heaviest operators of one step of each path.

    Returns:
        Medians, ratio after / before, the window share and path of the fine branch, and the
        largest relative differences of the loss and of any parameter's gradient.
    """
    width, height = size
    config = compose_config(width, height, ["model=loftr", *(overrides or [])])
    datamodule = LoFTRDataModule(OmegaConf.create(config["dataset"]), batch_size=1, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    module = LoFTRModule(config).train()
    model_cfg, backbone = module.model_cfg, module.matcher.backbone
    after = backbone.train_max_sparse_coverage
    attentions = [m for m in module.modules() if isinstance(m, RecomputedLinearAttention)]
    outputs: dict[str, dict[str, Any]] = {}

    def step(name: str, coverage: float, recompute: bool) -> Callable[[], None]:
        def run() -> None:
            backbone.train_max_sparse_coverage = coverage
            for attention in attentions:
                attention.recompute = recompute
            module.zero_grad(set_to_none=True)
            data = dict(batch)
            torch.manual_seed(0)  # the same ground-truth pads in both paths
            compute_supervision_coarse(data, model_cfg)
            module.matcher(data)
            compute_supervision_fine(data, model_cfg)
            module.loss(data)
            data["loss"].backward()
            outputs[name] = {
                "loss": float(data["loss"].detach()),
                "plan": dict(module.matcher.last_fine_plan or {}),
                "windows": int(data["b_ids"].shape[0]),
                "grads": {n: p.grad.clone() for n, p in module.named_parameters()},
            }

        return run

    steps = {"after": step("after", after, True), "before": step("before", 0.0, False)}
    times = time_alternating(steps, runs=repeats)
    grads_a, grads_b = outputs["after"].pop("grads"), outputs["before"].pop("grads")
    grad_rel = max(
        float((grads_a[n] - g).norm() / g.norm()) for n, g in grads_b.items() if g.norm() > 0
    )
    loss_a, loss_b = outputs["after"]["loss"], outputs["before"]["loss"]
    med = {name: median(values) for name, values in times.items()}
    result: dict[str, Any] = {
        "size": f"{width}x{height}",
        "model": "loftr",
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "after_s": round(med["after"], 3),
        "before_s": round(med["before"], 3),
        "ratio": round(med["after"] / med["before"], 3),
        "times_s": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "fine_train_max_coverage": after,
        "fine_plan": outputs["after"]["plan"],
        "fine_windows": outputs["after"]["windows"],
        "loss_rel_diff": abs(loss_a - loss_b) / abs(loss_b),
        "max_grad_rel_diff": grad_rel,
    }
    if with_profile:
        result["profile"] = {name: profile_step(fn) for name, fn in steps.items()}
    return result


def profile_step(step: Callable[[], None], top: int = 12) -> dict[str, Any]:
    """The forward stages' seconds, the backward's, and the heaviest operators of one step."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    events = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages()}
    stages = {stage: round(events.get(label, 0.0), 3) for stage, label in OUR_SECTIONS.items()}
    backward = sum(t for key, t in events.items() if key.startswith("autograd::engine"))
    stages["backward (all stages)"] = round(backward, 3)
    heaviest = heaviest_ops(prof, top, skip=("loftr/", "autograd::engine"))
    return {"stages_s": stages, "top_ops": heaviest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--compare", nargs="+", metavar="WxH", help="after / before, these sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path (--compare)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        results = []
        for index, text in enumerate(args.compare):
            res = bench_train_compare(parse_size(text), args.repeats, args.overrides, index == 0)
            results.append(res)
            print(
                f"training step {res['size']} (paper model), {res['threads']} thread(s): after "
                f"{res['after_s']:.2f} s, before {res['before_s']:.2f} s, ratio {res['ratio']:.3f};"
                f" fine plan {res['fine_plan']}; loss rel. diff {res['loss_rel_diff']:.1e}, max "
                f"gradient rel. diff {res['max_grad_rel_diff']:.1e}",
                flush=True,
            )
            for stage, t in res.get("profile", {}).get("after", {}).get("stages_s", {}).items():
                print(f"  {stage:45s} {t:7.3f} s")
        write_json(args.json, {"machine": machine_info(), "train_compare": results})
        return
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
