"""Training-loader throughput: pairs per second for ScanNet- and MegaDepth-format items.

Builds the LoFTRDataModule of a dataset config (the synthetic sets by default, generated on first
use) with the network-input size of the real recipes (640x480 ScanNet, 640 MegaDepth), then times
``train_dataloader()`` for each worker count: a warm-up of a few batches (worker start-up
included in neither number), then ``--repeats`` timed runs of ``--pairs`` pairs each.

    python experiments/bench/bench_loader.py                       # both formats, 0 and 2 workers
    python experiments/bench/bench_loader.py --workers 0 4 --pairs 200 --dataset synthetic

Prints one line per (dataset, workers): mean and median pairs/s over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from loftr.data.datamodule import LoFTRDataModule

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# (dataset config, overrides giving the real recipes' input size)
SETUPS = {
    "synthetic": ["dataset.scannet_img_resize=[640,480]"],  # ScanNet format, stored 640x480
    "synthetic_outdoor": ["dataset.mgdpt_img_resize=640"],  # MegaDepth format, padded 640x640
}


def time_loader(dm: LoFTRDataModule, pairs: int, warmup: int) -> float:
    """Pairs per second of one pass over ``pairs`` pairs after ``warmup`` batches."""
    iterator = iter(dm.train_dataloader())
    for _ in range(warmup):
        next(iterator)
    n, start = 0, time.perf_counter()
    while n < pairs:
        try:
            batch = next(iterator)
        except StopIteration:
            dm.train_sampler.set_epoch(dm.train_sampler.epoch + 1)
            iterator = iter(dm.train_dataloader())
            continue
        n += batch["image0"].shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--pairs", type=int, default=40, help="timed pairs per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=4, help="untimed batches per repeat")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in args.dataset:
            cfg = compose(config_name="train", overrides=[f"dataset={name}", *SETUPS[name]])
            for workers in args.workers:
                dm = LoFTRDataModule(cfg.dataset, batch_size=args.batch_size, num_workers=workers)
                dm.prepare_data()
                dm.setup("fit")
                rates = [time_loader(dm, args.pairs, args.warmup) for _ in range(args.repeats)]
                item = dm.train_dataset[0]
                size = "x".join(str(s) for s in item["image0"].shape[-2:][::-1])
                print(
                    f"{name:18s} input {size:8s} workers={workers} batch={args.batch_size}: "
                    f"{statistics.mean(rates):6.1f} pairs/s mean, "
                    f"{statistics.median(rates):6.1f} median over {args.repeats} x {args.pairs}"
                )


if __name__ == "__main__":
    main()
