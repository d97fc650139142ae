"""Roofline: the forward pass's FLOPs and the share of this machine's own peak it reaches.

    python -m experiments.bench.bench_roofline [--size 640x480] [--threads 1]

Counts the FLOPs of one forward of kornia's LoFTR and of ours (torch's FlopCounterMode: matrix
products and convolutions, two FLOPs per multiply-add), measures in the same process the dense
matrix-product and 3x3-convolution throughput of this machine at the same thread count, and
divides the FLOPs by the models' forward times (given, or measured here once each) to report
the achieved FLOP/s as a fraction of each peak.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from experiments.bench.bench_inference import parse_size
from experiments.bench.common import conditioned_models, machine_info, write_json


def _best_of(fn: Any, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def machine_peaks(repeats: int = 5, small: bool = False) -> dict[str, float]:
    """GFLOP/s of a square fp32 matrix product and of LoFTR's commonest 3x3 convolution.

    Args:
        repeats: timed repeats (the best is kept: the peak).
        small: tiny sizes, for a smoke test.
    """
    n = 256 if small else 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    matmul = 2 * n**3 / _best_of(lambda: a @ b, repeats) / 1e9
    # layer1's 128 -> 128 3x3 convolution on a 640x480 pair (both images, 1/2 resolution)
    h, w = (24, 32) if small else (240, 320)
    x = torch.randn(2, 128, h, w)
    weight = torch.randn(128, 128, 3, 3)
    flops = 2 * 2 * 128 * 128 * 9 * h * w
    conv_nchw = flops / _best_of(lambda: F.conv2d(x, weight, padding=1), repeats) / 1e9
    x_cl = x.contiguous(memory_format=torch.channels_last)
    w_cl = weight.contiguous(memory_format=torch.channels_last)
    conv_nhwc = flops / _best_of(lambda: F.conv2d(x_cl, w_cl, padding=1), repeats) / 1e9
    return {
        "matmul_gflops": round(matmul, 1),
        "conv3x3_nchw_gflops": round(conv_nchw, 1),
        "conv3x3_channels_last_gflops": round(conv_nhwc, 1),
    }


def count_flops(model: torch.nn.Module, pair: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Total FLOPs of one forward, and per operator."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(dict(pair))
    per_op: dict[str, int] = {}
    for ops in counter.get_flop_counts().values():
        for op, flops in ops.items():
            per_op[str(op)] = max(per_op.get(str(op), 0), int(flops))
    return {"total": int(counter.get_total_flops()), "per_op": per_op}


def bench_roofline(
    size: tuple[int, int],
    times_s: dict[str, float] | None = None,
    thr: float = 1e-3,
    small: bool = False,
) -> dict[str, Any]:
    """FLOPs, peaks and achieved fractions for both models at `size`.

    Args:
        size: `(width, height)`.
        times_s: `{"kornia": s, "ours": s}` forward medians from the inference benchmark (same
            size and threads); measured here once each when None.
        thr: coarse threshold (as in the inference benchmark).
        small: tiny peak measurements, for a smoke test.
    """
    width, height = size
    reference, ours, image0, image1 = conditioned_models(width, height, thr)
    pair = {"image0": image0, "image1": image1}
    flops = {"kornia": count_flops(reference, pair), "ours": count_flops(ours, pair)}
    if times_s is None:
        with torch.inference_mode():
            times_s = {
                "kornia": _best_of(lambda: reference(dict(pair)), 1),
                "ours": _best_of(lambda: ours(dict(pair)), 1),
            }
    peaks = machine_peaks(small=small)
    result: dict[str, Any] = {
        "size": f"{width}x{height}",
        "threads": torch.get_num_threads(),
        "peaks": peaks,
    }
    for name in ("kornia", "ours"):
        achieved = flops[name]["total"] / times_s[name] / 1e9
        result[name] = {
            "gflop": round(flops[name]["total"] / 1e9, 1),
            "time_s": round(times_s[name], 3),
            "achieved_gflops": round(achieved, 1),
            "fraction_of_matmul": round(achieved / peaks["matmul_gflops"], 3),
            "fraction_of_conv": round(achieved / peaks["conv3x3_channels_last_gflops"], 3),
            "gflop_per_op": {
                op: round(v / 1e9, 2)
                for op, v in sorted(flops[name]["per_op"].items(), key=lambda kv: -kv[1])
            },
        }
    result["flops_not_done"] = round(1 - flops["ours"]["total"] / flops["kornia"]["total"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--thr", type=float, default=1e-3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = bench_roofline(parse_size(args.size), thr=args.thr)
    peaks = res["peaks"]
    print(
        f"peaks ({res['threads']} thread(s)): matmul {peaks['matmul_gflops']} GFLOP/s, 3x3 conv "
        f"{peaks['conv3x3_channels_last_gflops']} (channels-last) / "
        f"{peaks['conv3x3_nchw_gflops']} (NCHW) GFLOP/s"
    )
    for name in ("kornia", "ours"):
        r = res[name]
        print(
            f"{name:6s} {res['size']}: {r['gflop']} GFLOP in {r['time_s']} s = "
            f"{r['achieved_gflops']} GFLOP/s, {r['fraction_of_matmul']:.0%} of matmul, "
            f"{r['fraction_of_conv']:.0%} of conv peak"
        )
    print(f"FLOPs not done by ours: {res['flops_not_done']:.0%}")
    write_json(args.json, {"machine": machine_info(), "roofline": res})


if __name__ == "__main__":
    main()
