"""Peak resident memory of one training step, stage by stage, with and without checkpointing.

    python -m experiments.bench.bench_memory [--size 640x480] [--steps 2] [--out DIR] [OVERRIDES]

The paper model (`model=loftr`, fp32, batch 1, dense supervision) on a synthetic ScanNet-format
pair at `--size`, as `bench_train_step` composes it. Each setting (`model.checkpoint_activations`
false and true) runs in a fresh process, so neither inherits the other's freed memory. In that
process one warm-up step runs as training runs it (its peak RSS is the process's real peak),
then `--steps` measured steps; in each, the peak RSS (VmHWM) is
reset when a stage starts and read when it ends: backbone, coarse transformer, coarse matching,
fine level (the fine branch, the window transformer and the refinement), loss and backward. The
RSS after a stage is what it left alive, most of it kept for backward; freed heap memory is
handed back to the system (`malloc_trim`) before each stage, so the figures follow the live
tensors rather than the allocator's cache. Writes `memory.json` and
`memory.md` into `--out` (experiments/results).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from experiments.bench.bench_inference import parse_size
from experiments.bench.bench_train_step import _reset_peak_rss, _status_kib, compose_config
from experiments.bench.common import RESULTS, ROOT, machine_info
from loftr.data.datamodule import LoFTRDataModule
from loftr.lightning.module import LoFTRModule
from loftr.supervision import compute_supervision_coarse, compute_supervision_fine

# the matcher's parts per reported stage, in forward order
# the modules whose forward starts each stage; the backbone's stem, since training calls the
# backbone through `forward_windowed`, not its `forward`
FORWARD_STAGES = {
    "backbone": ("backbone.conv1",),
    "coarse transformer": ("loftr_coarse",),
    "coarse matching": ("coarse_matching",),
    "fine": ("fine_preprocess", "loftr_fine", "fine_matching"),
}
STAGES = (*FORWARD_STAGES, "loss", "backward")
SETTINGS = {"plain": [], "checkpointed": ["model.checkpoint_activations=true"]}


def _trim_heap() -> None:
    """Give freed heap memory back to the system (glibc's `malloc_trim`), so that the RSS at a
    stage's start is what is alive then, not what earlier stages freed; a no-op elsewhere."""
    name = ctypes.util.find_library("c")
    if name:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
        if trim is not None:
            trim(0)


def _mib(kib: int | None) -> float:
    return round((kib or 0) / 1024, 1)


class StageMeter:
    """Peak and remaining RSS per stage: the peak is reset when a stage starts."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, float]] = {}
        self._current: str | None = None
        self.enabled = True

    def start(self, stage: str) -> None:
        if not self.enabled or self._current == stage:  # the fine stage spans three modules
            return
        self.stop()
        _trim_heap()
        _reset_peak_rss()
        self._current = stage
        self.records[stage] = {"rss_start_mib": _mib(_status_kib("VmRSS"))}

    def stop(self) -> None:
        if self._current is not None:
            record = self.records[self._current]
            record["peak_mib"] = _mib(_status_kib("VmHWM"))
            record["rss_end_mib"] = _mib(_status_kib("VmRSS"))
        self._current = None


def measure(width: int, height: int, steps: int, overrides: list[str]) -> dict[str, Any]:
    """Per-stage memory and the step time of the paper model's training step (this process)."""
    config = compose_config(width, height, ["model=loftr", *overrides])
    datamodule = LoFTRDataModule(OmegaConf.create(config["dataset"]), batch_size=1, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = LoFTRModule(config).train()
    matcher, model_cfg = module.matcher, module.model_cfg
    meter = StageMeter()
    for stage, parts in FORWARD_STAGES.items():
        for part in parts:
            matcher.get_submodule(part).register_forward_pre_hook(
                lambda *_, stage=stage: meter.start(stage)
            )
    iterator = iter(datamodule.train_dataloader())

    def step() -> tuple[dict[str, dict[str, float]], float]:
        batch = next(iterator)
        compute_supervision_coarse(batch, model_cfg)
        meter.records = {}
        start = time.perf_counter()
        matcher(batch)
        meter.stop()
        compute_supervision_fine(batch, model_cfg)
        meter.start("loss")
        module.loss(batch)
        meter.start("backward")
        batch["loss"].backward()
        meter.stop()
        seconds = time.perf_counter() - start
        module.zero_grad(set_to_none=True)
        del batch
        return meter.records, seconds

    baseline = _mib(_status_kib("VmRSS"))
    # the warm-up step as training runs it, heap never trimmed: the process's real peak
    meter.enabled = False
    _reset_peak_rss()
    step()
    untrimmed_peak = _mib(_status_kib("VmHWM"))
    meter.enabled = True
    runs = [step() for _ in range(steps)]
    stages = {
        stage: {
            key: max(records[stage][key] for records, _ in runs)
            for key in ("rss_start_mib", "peak_mib", "rss_end_mib")
        }
        for stage in STAGES
    }
    return {
        "size": f"{width}x{height}",
        "overrides": overrides,
        "steps": steps,
        "baseline_mib": baseline,
        "untrimmed_peak_mib": untrimmed_peak,
        "stages": stages,
        "peak_mib": max(s["peak_mib"] for s in stages.values()),
        "step_s": round(statistics.median(seconds for _, seconds in runs), 2),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one table per setting, then the saving and the time cost."""
    m = report["machine"]
    lines = [
        "# Training-step memory",
        "",
        f"Made {report['date']} with `{report['command']}`: the paper model, fp32, batch 1, "
        f"{report['size']}, dense supervision, one torch thread; {m['cpu']}, torch {m['torch']}.",
        "Peak RSS is reset when a stage starts (VmHWM); the RSS after a stage is what it left "
        "alive; freed heap memory is handed back (`malloc_trim`) before each stage. The largest "
        "of the measured steps after one warm-up step.",
    ]
    for name, result in report["settings"].items():
        lines += [
            "",
            f"## {name} (`{' '.join(result['overrides']) or 'defaults'}`)",
            "",
            f"Process RSS before the first step: {result['baseline_mib']} MiB; peak of the first "
            f"step, the heap never trimmed (what training sees): {result['untrimmed_peak_mib']} "
            f"MiB. Step (forward, loss, backward): {result['step_s']} s.",
            "",
            "| stage | RSS at start (MiB) | peak (MiB) | RSS at end (MiB) |",
            "| --- | --- | --- | --- |",
        ]
        for stage, s in result["stages"].items():
            lines.append(
                f"| {stage} | {s['rss_start_mib']} | {s['peak_mib']} | {s['rss_end_mib']} |"
            )
        lines.append(f"| **step** | | **{result['peak_mib']}** | |")
    plain, ckpt = report["settings"].get("plain"), report["settings"].get("checkpointed")
    if plain and ckpt:
        lines += [
            "",
            f"Checkpointing: peak of the live tensors {plain['peak_mib']} -> {ckpt['peak_mib']} "
            f"MiB ({ckpt['peak_mib'] - plain['peak_mib']:+.0f} MiB), untrimmed first-step peak "
            f"{plain['untrimmed_peak_mib']} -> {ckpt['untrimmed_peak_mib']} MiB; step "
            f"{plain['step_s']} -> {ckpt['step_s']} s (x{ckpt['step_s'] / plain['step_s']:.2f}).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--setting", choices=SETTINGS, help="measure one setting, print JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both settings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = parse_size(args.size)
    if args.setting:
        overrides = [*args.overrides, *SETTINGS[args.setting]]
        print(json.dumps(measure(width, height, args.steps, overrides)))
        return
    settings = {}
    for name in SETTINGS:
        command = [sys.executable, "-m", "experiments.bench.bench_memory", "--setting", name]
        command += ["--size", args.size, "--steps", str(args.steps), "--threads", str(args.threads)]
        command += args.overrides
        out = subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True)
        settings[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: peak {settings[name]['peak_mib']} MiB, {settings[name]['step_s']} s")
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m experiments.bench.bench_memory " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "size": f"{width}x{height}",
        "settings": settings,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(report, indent=2))
    (args.out / "memory.md").write_text(markdown(report))
    print(f"wrote {args.out / 'memory.md'}")


if __name__ == "__main__":
    main()
