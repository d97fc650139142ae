"""Inference speed: our LoFTR against kornia's holding the same weights, in one process.

    python experiments/bench/bench_inference.py [--size 640x480] [--runs 5] [--threads 2]

Both models get the same random weights (no pretrained file can be downloaded here) and the same
textured grey pair; each is warmed up once, then timed alternately so that a noisy machine
affects both alike. Prints both medians, the ratio ours / kornia and the largest keypoint
difference, which must stay below 1e-4 px.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import kornia.feature as KF
import numpy as np
import skimage.data
import skimage.transform
import torch
from kornia.feature.loftr.loftr import default_cfg as kornia_default_cfg
from omegaconf import OmegaConf

from loftr.model import LoFTR


def textured_pair(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A photograph and a slightly rotated, shifted view of it, grey in [0, 1]."""
    photo = skimage.transform.resize(
        skimage.color.rgb2gray(skimage.data.astronaut()), (height + 64, width + 64)
    )
    view = skimage.transform.warp(
        photo, skimage.transform.SimilarityTransform(rotation=0.05, translation=(12, -8)).inverse
    )
    crop = (slice(32, 32 + height), slice(32, 32 + width))
    to_tensor = lambda a: torch.from_numpy(a[crop].astype(np.float32))[None, None]
    return to_tensor(photo), to_tensor(view)


def build_models(thr: float) -> tuple[torch.nn.Module, LoFTR]:
    kornia_cfg = copy.deepcopy(kornia_default_cfg)
    kornia_cfg["match_coarse"]["thr"] = thr
    torch.manual_seed(0)
    reference = KF.LoFTR(pretrained=None, config=kornia_cfg).eval()
    ours_cfg = OmegaConf.to_container(OmegaConf.load("conf/model/loftr.yaml"))
    ours_cfg["coarse"]["temp_bug_fix"] = False
    ours_cfg["match_coarse"]["thr"] = thr
    ours = LoFTR(ours_cfg).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", default="640x480", help="WxH, multiples of 8")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--thr", type=float, default=0.0, help="coarse threshold (random weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    image0, image1 = textured_pair(width, height)
    reference, ours = build_models(args.thr)

    def run_reference() -> tuple[torch.Tensor, torch.Tensor]:
        out = reference({"image0": image0, "image1": image1})
        return out["keypoints0"], out["keypoints1"]

    def run_ours() -> tuple[torch.Tensor, torch.Tensor]:
        data = {"image0": image0, "image1": image1}
        ours(data)
        return data["mkpts0_f"], data["mkpts1_f"]

    times: dict[str, list[float]] = {"kornia": [], "ours": []}
    with torch.inference_mode():
        ref_kpts, our_kpts = run_reference(), run_ours()  # warm-up
        for _ in range(args.runs):
            for name, fn in (("kornia", run_reference), ("ours", run_ours)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    same_count = ref_kpts[0].shape == our_kpts[0].shape
    diff = (
        max((a - b).abs().max().item() for a, b in zip(ref_kpts, our_kpts, strict=True))
        if same_count
        else float("inf")
    )
    med = {name: statistics.median(values) for name, values in times.items()}
    n_matches = len(ref_kpts[0])
    print(f"pair {width}x{height}, fp32, {args.threads} threads, {n_matches} matches")
    print(f"median of {args.runs} runs after one warm-up")
    print(f"kornia LoFTR : {med['kornia']:.3f} s")
    print(f"ours         : {med['ours']:.3f} s")
    print(f"ratio ours/kornia: {med['ours'] / med['kornia']:.3f}")
    print(f"max keypoint difference: {diff:.2e} px")


if __name__ == "__main__":
    main()
