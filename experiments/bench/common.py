"""Shared pieces of the benchmarks: the test pair, the two models, timing and machine facts.

No trained weights can be downloaded here, so the models hold random weights conditioned to
behave like a trained network on the benchmark pair (`condition_weights`); without that a
random LoFTR finds about a hundred mutual nearest neighbours at 640x480, far fewer than the
1000-3000 matches of a trained one, and the fine stage would cost almost nothing.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kornia
import kornia.feature as KF
import numpy as np
import skimage.color
import skimage.data
import skimage.transform
import torch
from kornia.feature.loftr.backbone import resnet_fpn
from kornia.feature.loftr.loftr import default_cfg as kornia_default_cfg
from omegaconf import OmegaConf

from loftr.model import LoFTR

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
# The benchmark pair's view: a similarity transform of the photograph (radians, pixels).
ROTATION, TRANSLATION = 0.05, (12.0, -8.0)
MARGIN = 32


def textured_pair(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A photograph and a rotated, shifted view of it: two `(1, 1, height, width)` grey images.

    The view maps photograph pixel `p` to `R p + t` (`ROTATION`, `TRANSLATION`), both cropped by
    `MARGIN`; `true_matches` gives the ground truth.
    """
    photo = skimage.transform.resize(
        skimage.color.rgb2gray(skimage.data.astronaut()), (height + 2 * MARGIN, width + 2 * MARGIN)
    )
    view = skimage.transform.warp(
        photo,
        skimage.transform.SimilarityTransform(rotation=ROTATION, translation=TRANSLATION).inverse,
    )
    crop = (slice(MARGIN, MARGIN + height), slice(MARGIN, MARGIN + width))

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[crop], dtype=np.float32))[None, None]

    return to_tensor(photo), to_tensor(view)


def true_matches(kpts0: torch.Tensor) -> torch.Tensor:
    """`(M, 2)` image-1 pixels of image-0 pixels `kpts0` under the benchmark pair's transform."""
    c, s = float(np.cos(ROTATION)), float(np.sin(ROTATION))
    x, y = kpts0[:, 0] + MARGIN, kpts0[:, 1] + MARGIN
    return torch.stack(
        [c * x - s * y + TRANSLATION[0] - MARGIN, s * x + c * y + TRANSLATION[1] - MARGIN], 1
    )


def model_config(thr: float) -> dict[str, Any]:
    """The paper model (conf/model/loftr.yaml) with kornia's inference settings and `thr`."""
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "loftr.yaml"))
    cfg["coarse"]["temp_bug_fix"] = False  # kornia's default_cfg, the released checkpoints'
    cfg["match_coarse"]["thr"] = thr
    return cfg


def build_models(thr: float, seed: int = 0) -> tuple[torch.nn.Module, LoFTR]:
    """kornia's LoFTR with random weights and ours holding the same weights, both in eval."""
    kornia_cfg = copy.deepcopy(kornia_default_cfg)
    kornia_cfg["match_coarse"]["thr"] = thr
    torch.manual_seed(seed)
    reference = KF.LoFTR(pretrained=None, config=kornia_cfg).eval()
    ours = LoFTR(model_config(thr)).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@torch.no_grad()
def condition_weights(model: LoFTR, image0: torch.Tensor, image1: torch.Tensor) -> None:
    """Give random weights the activation statistics of a trained network on this pair.

    Three steps, each what training would have done to the statistics involved:
    1. BatchNorm running statistics are those of the pair (one train-mode pass, cumulative);
    2. the coarse output projection (`layer3_outconv`, no BatchNorm after it) has its output's
       mean over the pair removed, so coarse features differ between cells instead of sharing a
       large common component that makes every cell's best match the same few cells;
    3. the fine merge (`merge_feat`) is scaled to unit RMS output, the scale of the LayerNorm
       outputs the fine transformer adds to it, so the fine heatmaps are neither flat nor
       one-hot.

    Args:
        model: our LoFTR (its state dict then goes to kornia's).
        image0: `(1, 1, H, W)`.
        image1: `(1, 1, H, W)`.
    """
    backbone = model.backbone
    images = torch.cat([image0, image1])
    for bn in (m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one pass gives the pair's statistics
    backbone.train()
    backbone(images)
    backbone.eval()
    for bn in (m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = 0.1

    captured: dict[str, torch.Tensor] = {}
    hook = backbone.layer3.register_forward_hook(lambda m, i, o: captured.update(x3=o))
    resnet_fpn.ResNetFPN_8_2.forward(backbone, images)  # the module-by-module forward
    hook.remove()
    mean = captured["x3"].mean((0, 2, 3))
    weight = backbone.layer3_outconv.weight[:, :, 0, 0]
    weight -= (weight @ mean)[:, None] * mean[None] / (mean @ mean)

    hook = model.loftr_fine.register_forward_hook(lambda m, i, o: captured.update(merged=i[0]))
    model({"image0": image0, "image1": image1})
    hook.remove()
    if "merged" in captured:
        rms = captured["merged"].pow(2).mean().sqrt()
        model.fine_preprocess.merge_feat.weight /= rms
        model.fine_preprocess.merge_feat.bias /= rms


def conditioned_models(
    width: int, height: int, thr: float
) -> tuple[torch.nn.Module, LoFTR, torch.Tensor, torch.Tensor]:
    """The benchmark pair and both models holding the same conditioned weights."""
    image0, image1 = textured_pair(width, height)
    reference, ours = build_models(thr)
    with torch.inference_mode(False):
        condition_weights(ours, image0, image1)
    reference.load_state_dict(ours.state_dict())
    return reference, ours, image0, image1


def time_alternating(
    fns: dict[str, Callable[[], Any]], runs: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, warm-up calls first, then interleaved runs."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, core count, threads and library versions, for every report."""
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": isa,
        "torch": torch.__version__,
        "kornia": kornia.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_json(path: str | None, report: dict[str, Any]) -> None:
    """Write a benchmark's report to ``path`` (its ``--json`` option) as indented JSON; nothing
    when no path is given."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)


def heaviest_ops(prof: Any, top: int, skip: tuple[str, ...] = ("loftr/",)) -> list[dict[str, Any]]:
    """The `top` operators of a `torch.profiler` run by self CPU time, per input shape, leaving
    out the events whose names start with `skip` (the project's section labels)."""
    ops = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    return [
        {
            "op": e.key,
            "shapes": str(e.input_shapes)[:90],
            "calls": e.count,
            "self_s": round(e.self_cpu_time_total / 1e6, 3),
        }
        for e in ops
        if not e.key.startswith(skip)
    ][:top]
