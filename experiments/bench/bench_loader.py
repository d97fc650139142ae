"""Training-loader throughput and host memory: pairs per second, and memory over many pairs.

Builds the LoFTRDataModule of a dataset config (the synthetic sets by default, generated on first
use) with the network-input size of the real recipes (640x480 ScanNet, 640 MegaDepth), then times
``train_dataloader()`` for each worker count: a warm-up of a few batches (worker start-up
included in neither number), then ``--repeats`` timed runs of ``--pairs`` pairs each. With
``--memory-pairs N`` it also loads N pairs per worker count and records the memory of the main
process and its workers every tenth of the way: users of the original saw host memory grow over
an epoch until the machine ran out (docs/original.md#user-reports, issue #253).

    python -m experiments.bench.bench_loader                       # both formats, 0 and 2 workers
    python -m experiments.bench.bench_loader --workers 0 4 --pairs 200 --dataset synthetic
    python -m experiments.bench.bench_loader --memory-pairs 1000

Memory is the proportional set size (PSS: shared pages split between the processes sharing
them) summed over the main process and its workers, so forked workers' shared copy-on-write
pages count once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

import loftr.config  # noqa: F401  (registers the schemas and resolvers)
from loftr.data.datamodule import LoFTRDataModule

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# (dataset config, overrides giving the real recipes' input size)
SETUPS = {
    "synthetic": ["dataset.scannet_img_resize=[640,480]"],  # ScanNet format, stored 640x480
    "synthetic_outdoor": ["dataset.mgdpt_img_resize=640"],  # MegaDepth format, padded 640x640
}


def _next_batch(dm: LoFTRDataModule, state: dict[str, Any]) -> dict[str, Any]:
    """The next training batch, starting a new epoch when the sampler is exhausted."""
    while True:
        try:
            return next(state["iterator"])
        except StopIteration:
            dm.train_sampler.set_epoch(dm.train_sampler.epoch + 1)
            state["iterator"] = iter(dm.train_dataloader())


def time_loader(dm: LoFTRDataModule, pairs: int, warmup: int) -> float:
    """Pairs per second of one pass over ``pairs`` pairs after ``warmup`` batches."""
    state = {"iterator": iter(dm.train_dataloader())}
    for _ in range(warmup):
        _next_batch(dm, state)
    n, start = 0, time.perf_counter()
    while n < pairs:
        n += _next_batch(dm, state)["image0"].shape[0]
    return n / (time.perf_counter() - start)


def _children(pid: int) -> list[int]:
    """Direct child processes of `pid` (the DataLoader workers), from /proc."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _pss_kib(pid: int) -> int:
    """Proportional set size of a process in KiB (RSS where smaps_rollup is missing), or 0."""
    for name, field in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1])
        except OSError:
            continue
    return 0


def process_memory_mib() -> dict[str, float]:
    """PSS of this process and of its children (workers), in MiB."""
    main = _pss_kib(os.getpid())
    workers = sum(_pss_kib(child) for child in _children(os.getpid()))
    return {"main_mib": round(main / 1024, 1), "workers_mib": round(workers / 1024, 1)}


def memory_over_pairs(dm: LoFTRDataModule, pairs: int, samples: int = 10) -> list[dict[str, Any]]:
    """Memory after every `pairs / samples` loaded pairs (the batches are dropped at once)."""
    state = {"iterator": iter(dm.train_dataloader())}
    trace = [{"pairs": 0, **process_memory_mib()}]
    every = max(1, pairs // samples)
    n = 0
    while n < pairs:
        n += _next_batch(dm, state)["image0"].shape[0]
        if n // every > (trace[-1]["pairs"]) // every or n >= pairs:
            trace.append({"pairs": n, **process_memory_mib()})
    del state
    return trace


def build_datamodule(name: str, workers: int, batch_size: int = 1) -> LoFTRDataModule:
    """The LoFTRDataModule of dataset config `name` at the recipes' input size."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"dataset={name}", *SETUPS[name]])
    dm = LoFTRDataModule(cfg.dataset, batch_size=batch_size, num_workers=workers)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def bench_loader(
    datasets: list[str],
    workers: list[int],
    pairs: int = 40,
    repeats: int = 3,
    warmup: int = 4,
    memory_pairs: int = 0,
    batch_size: int = 1,
) -> list[dict[str, Any]]:
    """Pairs/s (and optionally the memory trace) per dataset and worker count."""
    results = []
    for name in datasets:
        for n_workers in workers:
            dm = build_datamodule(name, n_workers, batch_size)
            rates = [time_loader(dm, pairs, warmup) for _ in range(repeats)]
            item = dm.train_dataset[0]
            entry: dict[str, Any] = {
                "dataset": name,
                "input": "x".join(str(s) for s in item["image0"].shape[-2:][::-1]),
                "workers": n_workers,
                "batch": batch_size,
                "pairs_per_s_mean": round(statistics.mean(rates), 2),
                "pairs_per_s_median": round(statistics.median(rates), 2),
                "timed": f"{repeats} x {pairs} pairs",
            }
            if memory_pairs:
                trace = memory_over_pairs(dm, memory_pairs)
                total = [t["main_mib"] + t["workers_mib"] for t in trace]
                entry["memory"] = {
                    "pairs": memory_pairs,
                    "trace": trace,
                    "growth_mib": round(total[-1] - total[1], 1),
                    "growth_first_to_last_sample": f"{trace[1]['pairs']} -> {trace[-1]['pairs']}",
                }
            results.append(entry)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--pairs", type=int, default=40, help="timed pairs per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=4, help="untimed batches per repeat")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--memory-pairs", type=int, default=0, help="pairs for the memory trace")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    torch.set_num_threads(1)
    results = bench_loader(
        args.dataset,
        args.workers,
        args.pairs,
        args.repeats,
        args.warmup,
        args.memory_pairs,
        args.batch_size,
    )
    for r in results:
        line = (
            f"{r['dataset']:18s} input {r['input']:8s} workers={r['workers']} "
            f"batch={r['batch']}: {r['pairs_per_s_mean']:6.1f} pairs/s mean, "
            f"{r['pairs_per_s_median']:6.1f} median over {r['timed']}"
        )
        if "memory" in r:
            trace = r["memory"]["trace"]
            line += (
                f"; memory {trace[1]['main_mib'] + trace[1]['workers_mib']:.0f} -> "
                f"{trace[-1]['main_mib'] + trace[-1]['workers_mib']:.0f} MiB over "
                f"{r['memory']['pairs']} pairs"
            )
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"loader": results}, f, indent=2)


if __name__ == "__main__":
    main()
