"""The test run of a checkpoint, `python -m loftr.evaluate`'s work: export-then-evaluate
(docs/original.md#test-scripts, #lightning-module-and-metrics): predictions are cached once,
metrics made from the cache.

The cache key combines the checkpoint file's hash and the resolved model, dataset and pose
protocol configs, so a changed threshold, resize or weight file never reuses stale predictions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig
from tqdm import tqdm

from loftr.config import plain
from loftr.config.validate import validate
from loftr.data.datamodule import LoFTRDataModule
from loftr.evaluation.export import protocol_fields, write_metrics
from loftr.evaluation.metrics import (
    aggregate_metrics,
    collect_pair_metrics,
    compute_pose_errors,
    compute_symmetrical_epipolar_errors,
)
from loftr.evaluation.protocol import evaluation_protocol
from loftr.lightning.checkpoints import atomic_write
from loftr.model import LoFTR

PREDICTION_FILE = "predictions.pt"
PAIR_KEYS = ("K0", "K1", "T_0to1")


def file_hash(path: str | Path, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def cache_key(ckpt: str | Path, model: dict[str, Any], dataset: dict[str, Any]) -> str:
    """`<checkpoint hash>-<hash of the resolved model and dataset configs>`."""
    blob = json.dumps({"model": model, "dataset": dataset}, sort_keys=True, default=str)
    return f"{file_hash(ckpt)}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def export_predictions(matcher: LoFTR, loader: Any, device: str = "cpu") -> list[dict[str, Any]]:
    """Run the matcher over a test loader; one record per pair, keypoints in original pixels."""
    records: list[dict[str, Any]] = []
    matcher.eval().to(device)
    for batch in tqdm(loader, desc="matching", unit="pair"):
        data = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.inference_mode():
            matcher(data)
        names0, names1 = data["pair_names"]
        for b in range(data["bs"]):
            sel = data["m_bids"] == b
            records.append(
                {
                    "pair_names": [names0[b], names1[b]],
                    "scene_id": str(data["scene_id"][b]) if "scene_id" in data else "",
                    "mkpts0_f": data["mkpts0_f"][sel].float().cpu(),
                    "mkpts1_f": data["mkpts1_f"][sel].float().cpu(),
                    "mconf": data["mconf"][sel].float().cpu(),
                    **{k: data[k][b].double().cpu() for k in PAIR_KEYS},
                }
            )
    return records


def evaluate_predictions(records: list[dict[str, Any]], eval_cfg: Any) -> tuple[dict, list]:
    """Metrics of cached predictions: per-pair errors and the aggregated AUC and precision."""
    pairs: dict[str, list[Any]] = {}
    for record in records:
        n = len(record["mconf"])
        data = {
            "mkpts0_f": record["mkpts0_f"].double(),
            "mkpts1_f": record["mkpts1_f"].double(),
            "m_bids": torch.zeros(n, dtype=torch.long),
            "pair_names": ([record["pair_names"][0]], [record["pair_names"][1]]),
            **{k: record[k][None] for k in PAIR_KEYS},
        }
        compute_symmetrical_epipolar_errors(data)
        compute_pose_errors(data, eval_cfg)
        for key, values in collect_pair_metrics(data).items():
            pairs.setdefault(key, []).extend(values)
    metrics = aggregate_metrics(pairs, epi_err_thr=float(eval_cfg["epi_err_thr"]))
    rows = [
        [
            ident,
            rec["scene_id"],
            len(rec["mconf"]),
            float(np.mean(e < eval_cfg["epi_err_thr"])) if len(e) else 0.0,
            float(r),
            float(t),
        ]
        for ident, rec, e, r, t in zip(
            pairs["identifiers"],
            records,
            pairs["epi_errs"],
            pairs["R_errs"],
            pairs["t_errs"],
            strict=True,
        )
    ]
    return metrics, rows


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate `cfg.ckpt_path` on `cfg.dataset`'s test set; write `metrics.json` into the run dir.

    The checkpoint, the model config and the protocol settings are checked before anything is
    written; nothing is created for a bad input.

    Args:
        cfg: the composed `evaluate` config.
        overrides: the command line's overrides: their `model.*` keys apply on top of a
            checkpoint's stored model config (`LoFTR.from_checkpoint`).

    Returns:
        `metrics`, `protocol`, `cache` (the prediction file) and `cached` (True when reused).
    """
    validate(cfg)
    matcher = LoFTR.from_checkpoint(cfg.ckpt_path, cfg.model, overrides, cfg.model_from_ckpt)
    model_cfg = matcher.config
    dataset_cfg, eval_cfg = plain(cfg.dataset), plain(cfg.eval)
    cache = Path(cfg.cache_dir) / cache_key(cfg.ckpt_path, model_cfg, dataset_cfg) / PREDICTION_FILE
    datamodule = LoFTRDataModule(cfg.dataset, num_workers=cfg.hardware.num_workers, seed=cfg.seed)
    cached = cache.is_file()
    if cached:
        rank_zero_info(f"reusing cached predictions {cache}")
        records = torch.load(cache, weights_only=True)
    else:
        datamodule.prepare_data()
        device = (
            "cuda" if cfg.hardware.accelerator == "gpu" and torch.cuda.is_available() else "cpu"
        )
        records = export_predictions(matcher, datamodule.test_dataloader(), device)
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda f: torch.save(records, f))
    metrics, rows = evaluate_predictions(records, eval_cfg)
    protocol = evaluation_protocol({"dataset": dataset_cfg, "eval": eval_cfg, "model": model_cfg})
    result = {
        "name": cfg.name,
        "ckpt": str(cfg.ckpt_path),
        "metrics": metrics,
        **protocol_fields(protocol),
        "n_pairs": len(records),
        "cache": str(cache),
    }
    write_metrics(cfg.run_dir, "eval", result)
    return {**result, "rows": rows, "cached": cached}
