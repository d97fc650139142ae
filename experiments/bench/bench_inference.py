"""Inference speed: our LoFTR against kornia's holding the same weights, in one process.

    python -m experiments.bench.bench_inference                       # 640x480 and 1024x768
    python -m experiments.bench.bench_inference --size 640x480 --runs 5 --profile
    python -m experiments.bench.bench_inference --size 320x240 --bf16 # bf16 autocast (slow here)

Both models hold the same random weights, conditioned on the pair so that the matcher finds a
trained model's number of matches (common.condition_weights), and match the same textured grey
pair. Each model is warmed up, then the two are timed alternately so that a noisy machine slows
both alike; the medians, their ratio ours / kornia and the agreement of the outputs (same
matches, largest keypoint and confidence difference) are printed. `--profile` adds where the
time goes, per stage of each model and per operator of ours.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from experiments.bench.common import (
    conditioned_models,
    heaviest_ops,
    machine_info,
    median,
    time_alternating,
    write_json,
)

# docs/original.md#model-flow stages, as named by our record_function labels and by kornia's child
# modules
OUR_SECTIONS = {
    "backbone": "loftr/backbone",
    "coarse transformer": "loftr/coarse_transformer",
    "coarse matching": "loftr/coarse_matching",
    "fine preprocess (+ fine FPN branch in ours)": "loftr/fine_preprocess",
    "fine transformer": "loftr/fine_transformer",
    "fine matching": "loftr/fine_matching",
}
KORNIA_SECTIONS = {
    "backbone": "kornia/backbone",
    "coarse transformer": "kornia/loftr_coarse",
    "coarse matching": "kornia/coarse_matching",
    "fine preprocess (+ fine FPN branch in ours)": "kornia/fine_preprocess",
    "fine transformer": "kornia/loftr_fine",
    "fine matching": "kornia/fine_matching",
}


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def _autocast(dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def labelled_children(model: torch.nn.Module, prefix: str):
    """Profiler labels `prefix/<child>` around every top-level child module's forward."""
    handles, stack = [], []
    for name, child in model.named_children():

        def pre(module, args, label=f"{prefix}/{name}"):
            scope = record_function(label)
            scope.__enter__()
            stack.append(scope)

        def post(module, args, output):
            stack.pop().__exit__(None, None, None)

        handles += [child.register_forward_pre_hook(pre), child.register_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profile_sections(
    reference: torch.nn.Module, ours: torch.nn.Module, pair: dict[str, torch.Tensor], dtype: str
) -> dict[str, Any]:
    """Seconds per stage of one forward of each model, and ours' heaviest operators."""
    with _autocast(dtype), labelled_children(reference, "kornia"):
        with profile(activities=[ProfilerActivity.CPU]) as prof_ref:
            reference(dict(pair))
    with _autocast(dtype), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        ours(dict(pair))

    def totals(prof_: Any, labels: dict[str, str]) -> dict[str, float]:
        events = {e.key: e.cpu_time_total / 1e6 for e in prof_.key_averages()}
        return {stage: round(events.get(label, 0.0), 3) for stage, label in labels.items()}

    top = heaviest_ops(prof, 15)
    return {
        "stages_s": {
            stage: {
                "kornia": totals(prof_ref, KORNIA_SECTIONS)[stage],
                "ours": totals(prof, OUR_SECTIONS)[stage],
            }
            for stage in OUR_SECTIONS
        },
        "ours_top_ops": top,
    }


def agreement(ref_out: dict[str, torch.Tensor], data: dict[str, Any]) -> dict[str, Any]:
    """Same matches? Largest keypoint (px) and confidence differences over the common matches.

    A match is identified by its image-0 cell (`keypoints0`, exact grid points) and its image-1
    cell (`keypoints1` rounded to the coarse grid: the fine offset is at most 4 px).
    """
    stride = int(data["stride_c"])
    ours_k0, ours_k1 = data["mkpts0_f"].float(), data["mkpts1_f"].float()
    ref_k0, ref_k1 = ref_out["keypoints0"].float(), ref_out["keypoints1"].float()
    result: dict[str, Any] = {"matches_ours": len(ours_k0), "matches_kornia": len(ref_k0)}

    def keys(k0: torch.Tensor, k1: torch.Tensor) -> list[tuple[float, ...]]:
        cells1 = torch.round(k1 / stride)
        return [tuple(row) for row in torch.cat([k0, cells1], 1).tolist()]

    ours_index = {key: i for i, key in enumerate(keys(ours_k0, ours_k1))}
    pairs = [
        (ours_index[key], i) for i, key in enumerate(keys(ref_k0, ref_k1)) if key in ours_index
    ]
    result["common_matches"] = len(pairs)
    result["same_matches"] = len(pairs) == len(ours_k0) == len(ref_k0)
    if pairs:
        o, r = (torch.tensor(p) for p in zip(*pairs, strict=True))
        result["max_keypoint_diff_px"] = float((ours_k1[o] - ref_k1[r]).abs().max())
        conf_diff = data["mconf"].float()[o] - ref_out["confidence"].float()[r]
        result["max_confidence_diff"] = float(conf_diff.abs().max())
    return result


def bench_inference(
    size: tuple[int, int],
    runs: int = 5,
    thr: float = 1e-3,
    dtype: str = "fp32",
    with_profile: bool = False,
) -> dict[str, Any]:
    """Time and compare both models on one pair size.

    Args:
        size: `(width, height)`, multiples of 8.
        runs: timed runs per model after one warm-up.
        thr: coarse threshold for both models (the conditioned random weights give about
            1100 matches at 640x480 with 1e-3, in a trained model's range).
        dtype: "fp32" or "bf16" (autocast).
        with_profile: add `profile_sections`.

    Returns:
        A JSON-ready dict of the settings, times, ratio, agreement and fine-branch plan.
    """
    width, height = size
    reference, ours, image0, image1 = conditioned_models(width, height, thr)
    pair = {"image0": image0, "image1": image1}
    outputs: dict[str, Any] = {}

    def run_reference() -> None:
        with _autocast(dtype):
            outputs["kornia"] = reference(dict(pair))

    def run_ours() -> None:
        data = dict(pair)
        with _autocast(dtype):
            ours(data)
        outputs["ours"] = data

    with torch.inference_mode():
        times = time_alternating({"kornia": run_reference, "ours": run_ours}, runs=runs)
        sections = profile_sections(reference, ours, pair, dtype) if with_profile else None
    med = {name: median(values) for name, values in times.items()}
    data = outputs["ours"]
    plan = dict(getattr(ours, "last_fine_plan", {}) or {})
    result = {
        "size": f"{width}x{height}",
        "dtype": dtype,
        "runs": runs,
        "threads": torch.get_num_threads(),
        "thr": thr,
        "matches": len(data["mconf"]),
        "kornia_s": round(med["kornia"], 3),
        "ours_s": round(med["ours"], 3),
        "ratio": round(med["ours"] / med["kornia"], 3),
        "speedup": round(med["kornia"] / med["ours"], 3),
        "times_s": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "agreement": agreement(outputs["kornia"], data),
        "fine_plan": plan,
    }
    if sections is not None:
        result["profile"] = sections
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", nargs="+", default=["640x480", "1024x768"], help="WxH")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: see README)")
    parser.add_argument("--thr", type=float, default=1e-3, help="coarse match threshold")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast instead of fp32")
    parser.add_argument("--profile", action="store_true", help="stage and operator times")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for text in args.size:
        res = bench_inference(
            parse_size(text), args.runs, args.thr, "bf16" if args.bf16 else "fp32", args.profile
        )
        results.append(res)
        agree = res["agreement"]
        print(
            f"{res['size']} {res['dtype']} {res['threads']} thread(s), {res['matches']} matches: "
            f"kornia {res['kornia_s']:.3f} s, ours {res['ours_s']:.3f} s, ratio {res['ratio']:.3f}"
            f" (x{res['speedup']:.2f}); same matches {agree['same_matches']}, max keypoint "
            f"difference {agree.get('max_keypoint_diff_px', float('nan')):.1e} px",
            flush=True,
        )
        if "profile" in res:
            for stage, t in res["profile"]["stages_s"].items():
                print(f"  {stage:45s} kornia {t['kornia']:7.3f} s   ours {t['ours']:7.3f} s")
    write_json(args.json, {"machine": machine_info(), "inference": results})


if __name__ == "__main__":
    main()
