"""The GPU check: one command, one report, a few minutes on one GPU, no internet.

    make gpu-check                                  # = python -m experiments.gpu.check
    python -m experiments.gpu.check --device cpu --quick     # the same parts, tiny, on the CPU

What it checks on CUDA, in this order (each part reports PASS or FAIL; a part that raises
reports its error line, and the others still run):

1. parity, eval mode, fp32 with TF32 off, both coarse matchers (dual-softmax, Sinkhorn): our
   LoFTR against kornia's holding the same weights, and our fast eval path against our
   module-by-module path (the original's computation, run with autograd recording), on the
   benchmark pair (`experiments/bench/common.py`);
2. training, 50 steps on a small synthetic ScanNet-format set generated on the spot, the default
   run's model at 320x240, in `32-true`, `bf16-mixed` and `16-mixed`: no non-finite step and a
   falling loss (the mean of the last tenth of the steps below that of the first);
3. a training step of the paper model at 640x480, batch 1, per precision: time and peak memory;
4. DDP with 2 processes on the one GPU: NCCL first, gloo when NCCL refuses two ranks on one
   device; the parameters must stay equal on both ranks;
5. inference time, ours against kornia, at 640x480 and 1024x768: fp32, bf16 autocast, and ours
   with `model.compile=true` (last: compiling takes a minute or two per size).

The packages the GPU machine lacks (kornia, Hydra, OmegaConf, W&B, ...) come as wheels in
`experiments/gpu/wheels/` (`make gpu-wheels`, experiments/gpu/wheels.py) and are installed into
`.gpu_site/` beside the repository, never over the machine's torch. Without CUDA the check
prints one line and exits 0. Exit status 1 when any part fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import json
import logging
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.gpu.wheels import WHEELS, install_missing  # noqa: E402 (stdlib only)

SITE = ROOT / ".gpu_site"
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
MATCH_TYPES = ("dual_softmax", "sinkhorn")
# the benchmark pair's threshold: the conditioned random weights then find a trained model's
# number of matches (experiments/bench/common.py)
THR = 1e-3
# parity: largest keypoint difference allowed over the common matches (px), and the share of
# matches both sides must share (a near-tie may flip under another summation order)
KEYPOINT_TOL_PX = 1e-3
MIN_COMMON_SHARE = 0.99
# fewer ground-truth pads than a 160x120 input has training windows (conf/debug/fast.yaml)
TINY = ["model.match_coarse.train_pad_num_gt_min=16"]
# what each plan runs: the real check, and a tiny one for the CPU (tests, dry runs)
PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "parity_size": (640, 480),
        "train": {"model": "loftr_small", "size": (320, 240), "steps": 50, "overrides": []},
        "step": {"model": "loftr", "size": (640, 480), "steps": 6, "overrides": []},
        "inference_sizes": [(640, 480), (1024, 768)],
        "runs": 5,
        "compile": True,
        "ddp_steps": 10,
        "synthetic": {"train_scenes": 4, "frames_per_scene": 8},
    },
    "quick": {
        "parity_size": (128, 96),
        "train": {"model": "loftr_small", "size": (160, 120), "steps": 6, "overrides": TINY},
        "step": {"model": "loftr", "size": (160, 120), "steps": 2, "overrides": TINY},
        "inference_sizes": [(128, 96)],
        "runs": 1,
        "compile": False,
        "ddp_steps": 2,
        "synthetic": {"train_scenes": 1, "frames_per_scene": 6},
    },
}
# seconds an inference timing part may need, compiling included: not started with less left
COMPILE_S = {"fp32": 10, "bf16": 10, "compile": 150}
SYNTHETIC_TEST = {"test_scenes": 1, "test_frames_per_scene": 4, "test_pairs_per_scene": 2}


# --------------------------------------------------------------------------- environment
def prepare_imports(wheels: Path, site: Path) -> dict[str, Any]:
    """Make the project importable: the carried wheels the machine lacks go into `site`.

    The folder also reaches subprocesses (the DDP ranks) through PYTHONPATH.
    """
    installed: dict[str, list[str]] = {"installed": [], "present": []}
    if wheels.is_dir() and any(wheels.glob("*.whl")):
        installed = install_missing(wheels, site)
    paths = [str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    return installed


def environment(device: str, wheels: dict[str, list[str]]) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "wheels_installed": wheels["installed"],
        "wheels_present": len(wheels["present"]),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            gpus=torch.cuda.device_count(),
        )
    else:
        info["gpu"] = f"none (CPU: {platform.processor() or platform.machine()})"
    return info


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------- parity
def check_parity(device: str, size: tuple[int, int], match_type: str) -> dict[str, Any]:
    """Ours against kornia and against our module-by-module path, same weights, eval, fp32.

    kornia's Sinkhorn needs SuperGlue's code, which it does not ship: for `sinkhorn` ours holds
    the conditioned dual-softmax weights plus its dustbin score and is compared with its own
    module-by-module path only.
    """
    import torch

    from experiments.bench.bench_inference import agreement
    from experiments.bench.common import conditioned_models, model_config
    from loftr.model import LoFTR

    width, height = size
    kornia_model, ours, image0, image1 = conditioned_models(width, height, THR)
    if match_type != "dual_softmax":
        weights, cfg = ours.state_dict(), model_config(THR)
        cfg["match_coarse"]["match_type"] = match_type
        ours = LoFTR(cfg).eval()
        ours.load_state_dict(weights, strict=False)  # all but the dustbin score
    kornia_model, ours = kornia_model.to(device), ours.to(device)
    pair = {"image0": image0.to(device), "image1": image1.to(device)}
    with torch.no_grad():
        reference = kornia_model(dict(pair)) if match_type == "dual_softmax" else None
        data = dict(pair)
        ours(data)
    module_path = dict(pair)
    with torch.enable_grad():  # autograd recording: the module-by-module forward
        ours(module_path)
    as_reference = {
        "keypoints0": module_path["mkpts0_f"].detach(),
        "keypoints1": module_path["mkpts1_f"].detach(),
        "confidence": module_path["mconf"].detach(),
    }
    result = {
        "size": f"{width}x{height}",
        "kornia": None if reference is None else agreement(reference, data),
        "original_style": agreement(as_reference, data),
    }
    result["ok"] = all(_agrees(a) for a in (result["kornia"], result["original_style"]) if a)
    return result


def _agrees(a: dict[str, Any]) -> bool:
    both = max(a["matches_ours"], a["matches_kornia"])
    return (
        both > 0
        and a["common_matches"] >= MIN_COMMON_SHARE * both
        and a.get("max_keypoint_diff_px", math.inf) <= KEYPOINT_TOL_PX
    )


# ------------------------------------------------------------------------------- training
def compose_run(
    model: str, size: tuple[int, int], synthetic: dict[str, int], overrides: list[str]
) -> dict[str, Any]:
    """The default training run's config with `model`, at `size`, on the small synthetic set
    (generated on first use under the working directory's `data/synthetic`)."""
    from experiments.bench.bench_train_step import compose_config

    sizes = {**synthetic, **SYNTHETIC_TEST}
    data = [f"+dataset.synthetic.{k}={v}" for k, v in sizes.items()]
    return compose_config(size[0], size[1], [f"model={model}", *data, *overrides])


def step_recorder(device: str) -> Any:
    """A Lightning callback keeping the loss and the wall time of every training step."""
    import lightning.pytorch as pl

    class StepRecorder(pl.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.seconds: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, *args: Any) -> None:
            synchronize(device)
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *args: Any) -> None:
            synchronize(device)
            self.seconds.append(time.perf_counter() - self._start)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(math.nan if loss is None else float(loss))

    return StepRecorder()


def train(
    device: str,
    precision: str,
    *,
    model: str,
    size: tuple[int, int],
    steps: int,
    synthetic: dict[str, int],
    overrides: list[str],
    falling_loss: bool = True,
) -> dict[str, Any]:
    """`steps` Lightning training steps; losses, skipped steps, step time and peak memory.

    The part passes when every step ran with a finite loss and none was skipped, and, with
    `falling_loss`, when the loss fell (first tenth of the steps against the last).
    """
    import lightning.pytorch as pl
    import torch
    from omegaconf import OmegaConf

    from loftr.data.datamodule import LoFTRDataModule
    from loftr.lightning.module import LoFTRModule

    gc.collect()  # the previous parts' models, out of this part's peak memory
    if device == "cuda":
        torch.cuda.empty_cache()
    torch.manual_seed(0)
    config = compose_run(model, size, synthetic, overrides)
    datamodule = LoFTRDataModule(OmegaConf.create(config["dataset"]), batch_size=1, num_workers=2)
    module = LoFTRModule(config)
    recorder = step_recorder(device)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=0.5,  # the original's clip (docs/original.md#optimizer-schedule)
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        default_root_dir=tempfile.mkdtemp(prefix="trainer-", dir="."),
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=datamodule)
    losses = recorder.losses
    tenth = max(1, len(losses) // 10)
    first = statistics.fmean(losses[:tenth]) if losses else math.nan
    last = statistics.fmean(losses[-tenth:]) if losses else math.nan
    timed = recorder.seconds[1:] or recorder.seconds  # the first step warms up
    result = {
        "model": model,
        "size": f"{size[0]}x{size[1]}",
        "precision": precision,
        "steps": len(losses),
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
        "nonfinite_losses": sum(not math.isfinite(v) for v in losses),
        "skipped_steps": module.skipped_steps,
        "scaler_skipped_steps": module.scaler_skipped_steps,
        "step_ms": round(1e3 * statistics.median(timed), 1) if timed else math.nan,
        "peak_memory_gib": round(_peak_memory_gib(device), 2),
    }
    result["ok"] = (
        result["steps"] == steps
        and result["nonfinite_losses"] == 0
        and result["skipped_steps"] == 0
        and (last < first or not falling_loss)
    )
    return result


def _peak_memory_gib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ------------------------------------------------------------------------------ inference
def time_inference(device: str, size: tuple[int, int], mode: str, runs: int) -> dict[str, Any]:
    """Median forward time (ms) of ours and kornia's on the benchmark pair, same weights.

    `mode`: `fp32`, `bf16` (autocast, both models) or `compile` (ours with `compile: true`,
    kornia eager, both fp32).
    """
    import torch

    from experiments.bench.common import median, model_config, time_alternating
    from loftr.model import LoFTR

    width, height = size
    kornia_model, ours, image0, image1 = _benchmark_models(width, height)
    if mode == "compile":
        compiled = LoFTR(model_config(THR) | {"compile": True}).eval()
        compiled.load_state_dict(ours.state_dict())
        ours = compiled
    kornia_model, ours = kornia_model.to(device), ours.to(device)
    pair = {"image0": image0.to(device), "image1": image1.to(device)}
    autocast = (
        torch.autocast(device, dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    )
    matches: dict[str, int] = {}

    def run_kornia() -> None:
        with autocast:
            matches["kornia"] = len(kornia_model(dict(pair))["keypoints0"])
        synchronize(device)

    def run_ours() -> None:
        data = dict(pair)
        with autocast:
            ours(data)
        matches["ours"] = len(data["mconf"])
        synchronize(device)

    with torch.inference_mode():
        times = time_alternating(
            {"kornia": run_kornia, "ours": run_ours},
            runs=runs,
            warmup=2 if mode == "compile" else 1,
        )
    med = {name: median(values) for name, values in times.items()}
    return {
        "size": f"{width}x{height}",
        "mode": mode,
        "runs": runs,
        "kornia_ms": round(1e3 * med["kornia"], 1),
        "ours_ms": round(1e3 * med["ours"], 1),
        "ratio": round(med["ours"] / med["kornia"], 3),
        "matches_ours": matches["ours"],
        "matches_kornia": matches["kornia"],
        "ok": True,
    }


@functools.lru_cache(maxsize=1)
def _benchmark_models(width: int, height: int) -> tuple[Any, Any, Any, Any]:
    """`conditioned_models` of one size, built once for the three timing modes."""
    from experiments.bench.common import conditioned_models

    return conditioned_models(width, height, THR)


# ------------------------------------------------------------------------------------ DDP
def ddp_rank(rank: int, backend: str, device: str, port: int, steps: int, out: str) -> None:
    """One rank of the 2-process DDP run: the same steps on different pairs, then the
    parameters compared across ranks."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from loftr.losses import LoFTRLoss
    from loftr.model import LoFTR
    from loftr.supervision import compute_supervision_coarse, compute_supervision_fine

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    timeout = datetime.timedelta(seconds=60)  # a refusing backend fails instead of hanging
    dist.init_process_group(backend, rank=rank, world_size=2, timeout=timeout)
    try:
        if device == "cuda":
            torch.cuda.set_device(0)
        torch.manual_seed(0)
        cfg = _small_model_config()
        model = LoFTR(cfg).to(device).train()
        ddp = DistributedDataParallel(model, device_ids=[0] if device == "cuda" else None)
        loss_fn = LoFTRLoss(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        losses = []
        for step in range(steps):
            pair = shifted_pair(3 + 2 * rank + step, 2 + step)  # each rank its own pairs
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in pair.items()}
            compute_supervision_coarse(batch, cfg)
            ddp(batch)
            compute_supervision_fine(batch, cfg)
            loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            batch["loss"].backward()
            optimizer.step()
            losses.append(float(batch["loss"]))
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()])
        gathered = [torch.zeros_like(checksum) for _ in range(2)]
        dist.all_gather(gathered, checksum)
        if rank == 0:
            result = {
                "backend": backend,
                "steps": steps,
                "losses_finite": all(math.isfinite(v) for v in losses),
                "max_parameter_sum_difference": float((gathered[0] - gathered[1]).abs().max()),
            }
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _small_model_config() -> dict[str, Any]:
    """The default run's reduced model (conf/model/loftr_small.yaml over conf/model/loftr.yaml)."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(ROOT / "conf" / "model" / "loftr.yaml")
    small = OmegaConf.load(ROOT / "conf" / "model" / "loftr_small.yaml")
    small.pop("defaults", None)
    cfg = OmegaConf.to_container(OmegaConf.merge(base, small))
    cfg["match_coarse"]["train_pad_num_gt_min"] = 16
    return cfg


def shifted_pair(dx: int, dy: int, size: tuple[int, int] = (160, 120)) -> dict[str, Any]:
    """A photograph and its copy shifted by `(dx, dy)` px, ground truth from that homography."""
    import numpy as np
    import skimage.data
    import torch

    width, height = size
    img = skimage.data.camera().astype(np.float32) / 255.0
    shift = np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]], dtype=np.float32)
    y, x = 100, 150
    return {
        "image0": torch.from_numpy(img[y : y + height, x : x + width].copy())[None, None],
        "image1": torch.from_numpy(img[y - dy : y - dy + height, x - dx : x - dx + width].copy())[
            None, None
        ],
        "H_0to1": torch.from_numpy(shift)[None],
        "H_1to0": torch.from_numpy(np.linalg.inv(shift).astype(np.float32))[None],
        "dataset_name": ["Homographies"],
    }


def check_ddp(device: str, steps: int, timeout_s: float = 120) -> dict[str, Any]:
    """The 2-process run over NCCL (CUDA), or over gloo when NCCL refuses or there is no CUDA."""
    attempts: list[dict[str, Any]] = []
    for backend in ("nccl", "gloo") if device == "cuda" else ("gloo",):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "ddp.json"
            command = [sys.executable, "-m", "experiments.gpu.check", "--device", device]
            command += ["--ddp-worker", backend, "--ddp-steps", str(steps), "--ddp-out", str(out)]
            try:
                done = subprocess.run(
                    command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
                )
                error = _last_error_line(done.stderr) if done.returncode else None
            except subprocess.TimeoutExpired:
                error = f"no answer within {timeout_s:.0f} s"
            if error is None and out.exists():
                result = json.loads(out.read_text())
                result["ok"] = (
                    result["losses_finite"] and result["max_parameter_sum_difference"] == 0.0
                )
                result["refused"] = attempts
                return result
            attempts.append({"backend": backend, "error": error or "no result written"})
    return {"ok": False, "refused": attempts}


def ddp_worker(backend: str, device: str, steps: int, out: str) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_rank, args=(backend, device, port, steps, out), nprocs=2, join=True)


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["failed"])[-1][:200]


# ----------------------------------------------------------------------------- the report
def run_checks(device: str, plan_name: str, budget_s: float, wheels: dict) -> dict[str, Any]:
    """Every part of the check, within `budget_s` seconds; a part past the budget is not run."""
    import torch

    plan = PLANS[plan_name]
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "plan": plan_name,
        "budget_s": budget_s,
        "environment": environment(device, wheels),
        "parity": {},
        "training": {},
        "step": {},
        "inference": [],
    }
    # fp32 means fp32: no TF32 in convolutions or matrix products
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def part(
        fn: Callable[..., dict[str, Any]], *args: Any, needs_s: float = 0, **kwargs: Any
    ) -> dict[str, Any]:
        """Run a part when the budget leaves it `needs_s` seconds, its failure as one line."""
        if time.perf_counter() - started + needs_s > budget_s:
            return {"ok": False, "error": f"not run: the {budget_s:.0f} s budget was spent"}
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # one line in the report; the other parts still run
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}

    for match_type in MATCH_TYPES:
        report["parity"][match_type] = part(check_parity, device, plan["parity_size"], match_type)
    # mixed precision on a CPU is bf16 at best, and its convolutions' backward is slow there
    precisions = PRECISIONS if device == "cuda" else ("32-true",)
    train_plan, step_plan = plan["train"], plan["step"]
    with tempfile.TemporaryDirectory(prefix="loftr-gpu-check-") as work:
        previous = Path.cwd()
        os.chdir(work)  # the synthetic set and the trainers' folders go here
        try:
            for precision in precisions:
                report["training"][precision] = part(
                    train, device, precision, **train_plan, synthetic=plan["synthetic"]
                )
            for precision in precisions:
                report["step"][precision] = part(
                    train,
                    device,
                    precision,
                    **step_plan,
                    synthetic=plan["synthetic"],
                    falling_loss=False,
                )
        finally:
            os.chdir(previous)
    report["ddp"] = part(check_ddp, device, plan["ddp_steps"], needs_s=60)
    # bf16 on a CPU is emulated where it lacks AVX512-BF16, and minutes slower: CUDA only;
    # compiling takes a minute or two per size, so it comes last
    modes = ["fp32", *(["bf16"] if device == "cuda" else [])]
    runs = [(size, mode) for size in plan["inference_sizes"] for mode in modes]
    runs += [(size, "compile") for size in plan["inference_sizes"] if plan["compile"]]
    for size, mode in runs:
        report["inference"].append(
            part(time_inference, device, size, mode, plan["runs"], needs_s=COMPILE_S[mode])
            | {"size": f"{size[0]}x{size[1]}", "mode": mode}
        )
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["ok"] = all(r.get("ok") for r in _parts(report))
    return report


def _parts(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *report["parity"].values(),
        *report["training"].values(),
        *report["step"].values(),
        *report["inference"],
        report["ddp"],
    ]


def _verdict(result: dict[str, Any]) -> str:
    return "PASS" if result.get("ok") else "FAIL"


def format_report(report: dict[str, Any]) -> str:
    """The one report the check prints."""
    env = report["environment"]
    gpu = env["gpu"]
    if "cuda" in env:
        gpu += f" ({env['gpu_memory_gib']} GiB, sm {env['capability']}), CUDA {env['cuda']}"
    lines = [
        f"LoFTR GPU check, {report['date']}: {_verdict(report)} in {report['wall_s']} s "
        f"(budget {report['budget_s']:.0f} s, plan {report['plan']})",
        f"  {gpu}; torch {env['torch']}, Python {env['python']}",
        f"  wheels: {len(env['wheels_installed'])} installed into .gpu_site, "
        f"{env['wheels_present']} already on the machine",
        "",
        "parity, eval, fp32 (TF32 off): ours vs kornia | ours vs the module-by-module path",
    ]
    for match_type, r in report["parity"].items():
        lines.append(f"  {match_type:14s} {_verdict(r)}  " + _parity_text(r))
    lines += ["", "training on synthetic pairs: loss first -> last tenth of the steps"]
    for precision, r in report["training"].items():
        lines.append(f"  {precision:14s} {_verdict(r)}  " + _training_text(r))
    lines += ["", "training step, batch 1: median time, peak memory"]
    for precision, r in report["step"].items():
        text = r.get("error") or (
            f"{r['model']} {r['size']}: {r['step_ms']} ms, {r['peak_memory_gib']} GiB"
        )
        lines.append(f"  {precision:14s} {_verdict(r)}  {text}")
    lines += ["", "inference (median ms): ours / kornia = ratio, matches ours / kornia"]
    for r in report["inference"]:
        text = r.get("error") or (
            f"{r['ours_ms']} / {r['kornia_ms']} = {r['ratio']:.3f}, "
            f"{r['matches_ours']} / {r['matches_kornia']}"
        )
        lines.append(f"  {r['size']:9s} {r['mode']:7s} {_verdict(r)}  {text}")
    ddp = report["ddp"]
    refused = "; ".join(f"{a['backend']} refused ({a['error']})" for a in ddp.get("refused", []))
    if "backend" in ddp:
        text = (
            f"{ddp['backend']}, {ddp['steps']} steps, losses finite: {ddp['losses_finite']}, "
            f"parameters equal across ranks: {ddp['max_parameter_sum_difference'] == 0.0}"
        )
    else:
        text = ddp.get("error", "no backend ran")
    lines += ["", f"DDP, 2 processes on one device: {_verdict(ddp)}  {text}"]
    if refused:
        lines.append(f"  {refused}")
    failed = [name for name, r in _named_parts(report) if not r.get("ok")]
    lines += ["", "result: " + ("PASS" if not failed else "FAIL: " + ", ".join(failed))]
    return "\n".join(lines)


def _named_parts(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    named = [(f"parity {k}", v) for k, v in report["parity"].items()]
    named += [(f"training {k}", v) for k, v in report["training"].items()]
    named += [(f"step {k}", v) for k, v in report["step"].items()]
    named += [(f"inference {r['size']} {r['mode']}", r) for r in report["inference"]]
    return [*named, ("ddp", report["ddp"])]


def _parity_text(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"]

    def side(a: dict[str, Any] | None) -> str:
        if a is None:
            return "kornia has no Sinkhorn (it needs SuperGlue's code)"
        diff = a.get("max_keypoint_diff_px", math.nan)
        return (
            f"{a['common_matches']}/{a['matches_ours']}/{a['matches_kornia']} common/ours/other, "
            f"max diff {diff:.1e} px"
        )

    return f"{r['size']}: {side(r['kornia'])} | {side(r['original_style'])}"


def _training_text(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"]
    return (
        f"{r['model']} {r['size']}, {r['steps']} steps: {r['loss_first']} -> {r['loss_last']}, "
        f"non-finite {r['nonfinite_losses'] + r['skipped_steps']}, fp16 scaler skips "
        f"{r['scaler_skipped_steps']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps")
    parser.add_argument("--budget", type=float, default=400.0, help="seconds for all parts")
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    parser.add_argument("--site", type=Path, default=SITE)
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--verbose", action="store_true", help="show library logs and warnings")
    parser.add_argument(
        "--install-only", action="store_true", help="install the missing wheels, run nothing"
    )
    parser.add_argument("--ddp-worker", choices=("nccl", "gloo"), help=argparse.SUPPRESS)
    parser.add_argument("--ddp-steps", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu check: skipped, torch is not installed")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu check: skipped, no CUDA device (torch {torch.__version__})")
        return 0
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.device, args.ddp_steps, args.ddp_out)
        return 0
    wheels = prepare_imports(args.wheels, args.site)
    if args.install_only:
        print(f"installed {len(wheels['installed'])} wheels into {args.site}: run the tests with")
        print(f"PYTHONPATH={args.site}:{ROOT} python3 -m pytest -m gpu")
        return 0
    if not args.verbose:  # one report: Lightning's notices and library warnings left out
        import lightning.pytorch  # noqa: F401  (it sets its loggers' levels when imported)

        warnings.simplefilter("ignore")
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
    import loftr.config  # noqa: F401  (the config schemas, before anything composes)

    report = run_checks(args.device, "quick" if args.quick else "full", args.budget, wheels)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
