"""Every benchmark in one run: a JSON and a markdown report under experiments/results/.

    make bench                                   # = python -m experiments.bench.run_all
    python -m experiments.bench.run_all --bf16   # + bf16 autocast (slow where emulated)
    python -m experiments.bench.run_all --quick --out /tmp/bench   # tiny sizes, a smoke test

Runs, in one process and at one torch thread count (`--threads`, 1 by default: on a machine
shared with other jobs, a 2-thread OpenMP pool waits on descheduled threads at every operator):

1. inference, ours against kornia's LoFTR on the same weights, at 640x480 and 1024x768 (fp32;
   bf16 autocast with `--bf16`), with the stage profile at the first size;
2. the roofline at the first size: FLOPs of both forwards, and the achieved FLOP/s as a share
   of this machine's dense matmul and 3x3-convolution throughput measured in the same run;
3. a 640x480 training step, batch 1, stage by stage, with peak memory;
   and the paper model's training step after / before the sparse fine branch and the recomputed
   attention at 320x240 and 640x480 (same batch and weights, alternating), with the profile of
   one step at 320x240;
4. the training loader's pairs/s with 0 and 2 workers, and memory over 1000 loaded pairs (in a
   process of its own, so that the other benchmarks' memory is not counted);
5. pose estimation time per pair with OpenCV (RANSAC, USAC_MAGSAC) and poselib.

Writes `bench.json` (everything) and `bench.md` (the tables) into `--out`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from experiments.bench.bench_inference import bench_inference, parse_size
from experiments.bench.bench_pose import bench_pose
from experiments.bench.bench_roofline import bench_roofline
from experiments.bench.bench_train_step import STAGES, bench_train_compare, bench_train_step
from experiments.bench.common import RESULTS, ROOT, machine_info

QUICK = {
    "sizes": ["128x96"],
    "runs": 1,
    "train_size": "128x96",
    "train_steps": 1,
    "train_overrides": ["model.match_coarse.train_pad_num_gt_min=20"],
    "compare_sizes": ["128x96"],
    "compare_repeats": 1,
    "loader": {"workers": [0], "pairs": 4, "repeats": 1, "warmup": 1, "memory_pairs": 8},
    "pose": {"pairs": 2, "matches": 300},
}
FULL = {
    "sizes": ["640x480", "1024x768"],
    "runs": 5,
    "train_size": "640x480",
    "train_steps": 2,
    "train_overrides": [],
    "compare_sizes": ["320x240", "640x480"],
    "compare_repeats": 3,
    "loader": {"workers": [0, 2], "pairs": 100, "repeats": 3, "warmup": 4, "memory_pairs": 1000},
    "pose": {"pairs": 10, "matches": 1500},
}


def run_all(
    out: Path,
    quick: bool = False,
    bf16: bool = False,
    threads: int = 1,
    runs: int | None = None,
    sizes: list[str] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run every benchmark, write `bench.json` and `bench.md` into `out`, return the results."""
    previous_threads = torch.get_num_threads()
    try:
        return _run_all(out, quick, bf16, threads, runs, sizes, command)
    finally:
        torch.set_num_threads(previous_threads)


def _run_all(
    out: Path,
    quick: bool,
    bf16: bool,
    threads: int,
    runs: int | None,
    sizes: list[str] | None,
    command: str,
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    torch.set_num_threads(threads)
    runs = runs or plan["runs"]
    sizes = sizes or plan["sizes"]
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "inference": [],
    }

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)

    for index, size in enumerate(sizes):
        log(f"inference {size} fp32")
        report["inference"].append(bench_inference(parse_size(size), runs, with_profile=index == 0))
    if bf16:
        # native on CPUs with AVX512-BF16 / AMX; emulated, and far slower, elsewhere
        log(f"inference {sizes[0]} bf16")
        report["inference"].append(bench_inference(parse_size(sizes[0]), runs, dtype="bf16"))
    first = report["inference"][0]
    log(f"roofline {first['size']}")
    report["roofline"] = bench_roofline(
        parse_size(first["size"]),
        times_s={"kornia": first["kornia_s"], "ours": first["ours_s"]},
        small=quick,
    )
    log(f"training step {plan['train_size']}")
    report["train_step"] = bench_train_step(
        parse_size(plan["train_size"]), plan["train_steps"], plan["train_overrides"]
    )
    report["train_compare"] = []
    for index, size in enumerate(plan["compare_sizes"]):
        log(f"training step {size} after / before")
        report["train_compare"].append(
            bench_train_compare(
                parse_size(size), plan["compare_repeats"], plan["train_overrides"], index == 0
            )
        )
    log("loader (own process)")
    report["loader"] = loader_in_subprocess(plan["loader"], out)
    log("pose")
    report["pose"] = bench_pose(**plan["pose"])
    report["machine"]["load_average_end"] = machine_info()["load_average"]
    report["wall_s"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.md").write_text(markdown(report))
    log(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return report


def loader_in_subprocess(settings: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """`bench_loader` in a fresh process: its memory figures must not include the models and
    tensors of the other benchmarks, which forked workers would also inherit."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "loader.tmp.json"
    command = [
        sys.executable,
        "-m",
        "experiments.bench.bench_loader",
        "--dataset",
        "synthetic",
        "--workers",
        *(str(w) for w in settings["workers"]),
        "--pairs",
        str(settings["pairs"]),
        "--repeats",
        str(settings["repeats"]),
        "--warmup",
        str(settings["warmup"]),
        "--memory-pairs",
        str(settings["memory_pairs"]),
        "--json",
        str(target),
    ]
    subprocess.run(command, check=True, cwd=ROOT)
    results = json.loads(target.read_text())["loader"]
    target.unlink()
    return results


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(report: dict[str, Any]) -> str:
    """The report's tables as markdown."""
    m = report["machine"]
    lines = [
        "# LoFTR benchmarks",
        "",
        f"Made {report['date']} with `{report['command']}` in {report['wall_s']} s.",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}); torch threads: "
        f"{m['torch_threads']}",
        f"- torch {m['torch']}, kornia {m['kornia']}, numpy {m['numpy']}, python {m['python']}",
        f"- load average at start / end: {m['load_average']} / {m.get('load_average_end')} "
        "(the machine is shared: absolute times are noisy, ratios measured alternately are not)",
        "",
        "## Inference: ours vs kornia's LoFTR, same weights",
        "",
        "Random weights conditioned on the pair to a trained model's activation statistics "
        "(`experiments/bench/common.py`), so the matcher finds a trained model's number of "
        "matches; warm-up, then the median of the runs, the two models alternating.",
        "",
        _row(
            [
                "pair",
                "dtype",
                "matches ours / kornia / common",
                "kornia (s)",
                "ours (s)",
                "ratio ours/kornia",
                "speed-up",
                "same matches",
                "max keypoint diff, common (px)",
                "runs",
            ]
        ),
        _row(["---"] * 10),
    ]
    for r in report["inference"]:
        a = r["agreement"]
        lines.append(
            _row(
                [
                    r["size"],
                    r["dtype"],
                    f"{a['matches_ours']} / {a['matches_kornia']} / {a['common_matches']}",
                    f"{r['kornia_s']:.3f}",
                    f"{r['ours_s']:.3f}",
                    f"{r['ratio']:.3f}",
                    f"x{r['speedup']:.2f}",
                    a["same_matches"],
                    f"{a.get('max_keypoint_diff_px', float('nan')):.1e}",
                    r["runs"],
                ]
            )
        )
    first = report["inference"][0]
    if "profile" in first:
        plan = first.get("fine_plan") or {}
        lines += [
            "",
            f"### Where the time goes ({first['size']}, one forward each)",
            "",
            "kornia's backbone stage includes the fine (1/2-resolution) FPN branch; ours computes "
            "that branch inside the fine preprocess, around the selected windows only"
            + (
                f" (this pair: conv 1 {plan.get('conv1')} over "
                f"{plan.get('coverage_conv1', 0):.0%} of the 1/2-resolution map, conv 2 "
                f"{plan.get('conv2')} over {plan.get('coverage_conv2', 0):.0%})."
                if plan
                else "."
            ),
            "",
            _row(["stage", "kornia (s)", "ours (s)"]),
            _row(["---"] * 3),
        ]
        for stage, t in first["profile"]["stages_s"].items():
            lines.append(_row([stage, f"{t['kornia']:.3f}", f"{t['ours']:.3f}"]))
        lines += ["", "Ours, heaviest operators:", ""]
        lines += [_row(["operator", "calls", "self (s)", "shapes"]), _row(["---"] * 4)]
        for op in first["profile"]["ours_top_ops"][:10]:
            lines.append(_row([op["op"], op["calls"], f"{op['self_s']:.3f}", op["shapes"]]))
    roof = report["roofline"]
    peaks = roof["peaks"]
    lines += [
        "",
        f"## Roofline ({roof['size']}, {roof['threads']} thread(s))",
        "",
        f"Measured in the same run: dense fp32 matmul {peaks['matmul_gflops']} GFLOP/s; 3x3 "
        f"convolution 128->128 {peaks['conv3x3_channels_last_gflops']} GFLOP/s channels-last, "
        f"{peaks['conv3x3_nchw_gflops']} GFLOP/s NCHW. FLOPs from torch's FlopCounterMode "
        "(matrix products and convolutions, 2 per multiply-add).",
        "",
        _row(["model", "GFLOP", "time (s)", "GFLOP/s", "of matmul peak", "of conv peak"]),
        _row(["---"] * 6),
    ]
    for name in ("kornia", "ours"):
        r = roof[name]
        lines.append(
            _row(
                [
                    name,
                    r["gflop"],
                    r["time_s"],
                    r["achieved_gflops"],
                    f"{r['fraction_of_matmul']:.0%}",
                    f"{r['fraction_of_conv']:.0%}",
                ]
            )
        )
    lines.append("")
    lines.append(f"FLOPs ours does not do: {roof['flops_not_done']:.0%}.")
    step = report["train_step"]
    lines += [
        "",
        f"## Training step (paper model, {step['size']}, batch {step['batch']}, CPU, "
        f"{step['threads']} thread(s))",
        "",
        f"Median of {step['steps']} steps after a warm-up; predicted matches in the timed "
        f"steps: {step['matches']} (the fine level also gets the ground-truth pads).",
        "",
        _row(["stage", "time (s)", "share"]),
        _row(["---"] * 3),
    ]
    for stage in STAGES:
        lines.append(
            _row([stage, f"{step['stages_s'][stage]:.3f}", f"{step['shares'][stage]:.1%}"])
        )
    lines.append(_row(["**total**", f"{step['total_s']:.3f}", "100%"]))
    lines += [
        "",
        f"Ground truth + loss + metrics: **{step['gt_loss_metrics_share']:.1%}** of the step.",
    ]
    if "memory" in step:
        mem = step["memory"]
        lines.append(
            f"Resident memory: {mem['rss_before_first_step_mib']} MiB before the first step, "
            f"peak {mem['peak_rss_first_step_mib']} MiB during it, "
            f"{mem['peak_rss_later_steps_mib']} MiB during later steps."
        )
    lines += train_compare_markdown(report["train_compare"])
    lines += [
        "",
        "## Training loader (synthetic ScanNet-format pairs, 640x480)",
        "",
        _row(["workers", "pairs/s (median)", "memory start (MiB)", "memory end (MiB)", "pairs"]),
        _row(["---"] * 5),
    ]
    for r in report["loader"]:
        mem = r.get("memory")
        if mem:
            first_t, last_t = mem["trace"][1], mem["trace"][-1]
            start = f"{first_t['main_mib'] + first_t['workers_mib']:.0f}"
            end = f"{last_t['main_mib'] + last_t['workers_mib']:.0f}"
            pairs = mem["pairs"]
        else:
            start = end = pairs = "-"
        lines.append(_row([r["workers"], r["pairs_per_s_median"], start, end, pairs]))
    lines += [
        "",
        "Memory is the PSS of the main process plus its workers after the first and the last "
        "batch.",
        "",
        "## Pose estimation per pair",
        "",
        _row(["estimator", "ms per pair (median)", "median pose error (deg)", "matches"]),
        _row(["---"] * 4),
    ]
    for r in report["pose"]:
        if not r["available"]:
            lines.append(_row([r["estimator"], "not installed", r["note"], "-"]))
            continue
        lines.append(
            _row(
                [
                    r["estimator"],
                    f"{r['median_s_per_pair'] * 1e3:.1f}",
                    r["median_pose_error_deg"],
                    f"{r['matches']} ({r['outliers']:.0%} outliers)",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def train_compare_markdown(results: list[dict[str, Any]]) -> list[str]:
    """The after / before table of the training step, and the first size's profile."""
    lines = [
        "",
        "## Training step after / before the sparse fine branch and the recomputed attention "
        "(paper model)",
        "",
        "The same batch and weights, the two paths alternating after a warm-up each, medians; "
        "before: the fine branch's last conv over the whole map (`model.fine_train_max_coverage"
        "=0`, docs/differences.md#15) and the linear attention keeping its intermediates for "
        "backward (docs/differences.md#16), the computation before them. A step is coarse "
        "ground truth, forward, fine ground truth, loss and backward.",
        "",
        _row(
            [
                "size",
                "before (s)",
                "after (s)",
                "ratio after/before",
                "fine windows, share of the map",
                "loss rel. diff",
                "max gradient rel. diff",
                "repeats",
            ]
        ),
        _row(["---"] * 8),
    ]
    for r in results:
        plan = r["fine_plan"]
        lines.append(
            _row(
                [
                    r["size"],
                    f"{r['before_s']:.3f}",
                    f"{r['after_s']:.3f}",
                    f"{r['ratio']:.3f}",
                    f"{r['fine_windows']} x 2, {plan.get('window_share', 0):.0%} "
                    f"({plan.get('conv2')})",
                    f"{r['loss_rel_diff']:.1e}",
                    f"{r['max_grad_rel_diff']:.1e}",
                    r["repeats"],
                ]
            )
        )
    profiled = [r for r in results if "profile" in r]
    if profiled:
        first = profiled[0]
        lines += [
            "",
            f"### Where a training step's time goes ({first['size']}, one step each)",
            "",
            _row(["stage", "before (s)", "after (s)"]),
            _row(["---"] * 3),
        ]
        before, after = first["profile"]["before"], first["profile"]["after"]
        for stage, t in after["stages_s"].items():
            lines.append(_row([stage, f"{before['stages_s'][stage]:.3f}", f"{t:.3f}"]))
        lines += ["", "After, heaviest operators (forward and backward):", ""]
        lines += [_row(["operator", "calls", "self (s)", "shapes"]), _row(["---"] * 4)]
        for op in after["top_ops"][:10]:
            lines.append(_row([op["op"], op["calls"], f"{op['self_s']:.3f}", op["shapes"]]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="report folder")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--bf16", action="store_true", help="add bf16-autocast inference")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, help="timed inference runs per model")
    parser.add_argument("--size", nargs="+", help="inference sizes WxH")
    args = parser.parse_args()
    command = "python -m experiments.bench.run_all " + " ".join(sys.argv[1:])
    run_all(args.out, args.quick, args.bf16, args.threads, args.runs, args.size, command.strip())


if __name__ == "__main__":
    main()
