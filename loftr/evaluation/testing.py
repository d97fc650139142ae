"""The test run of a checkpoint, `python -m loftr.evaluate`'s work: export-then-evaluate
(docs/original.md#test-scripts, #lightning-module-and-metrics): predictions are cached once,
metrics made from the cache.

The cache key combines the checkpoint file's hash and the resolved model, dataset and pose
protocol configs, so a changed threshold, resize or weight file never reuses stale predictions.

An HPatches-layout test set (docs/hpatches.md#protocol) is scored by the homography metrics
(`loftr.evaluation.homography`): corner-error AUC over all pairs and per kind (illumination,
viewpoint), a per-pair table and a few figures of matches coloured by reprojection error.
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
from loftr.evaluation.homography import (
    aggregate_homography_metrics,
    collect_homography_pair_metrics,
    compute_homography_errors,
)
from loftr.evaluation.metrics import (
    aggregate_metrics,
    collect_pair_metrics,
    compute_pose_errors,
    compute_symmetrical_epipolar_errors,
)
from loftr.evaluation.protocol import evaluation_protocol
from loftr.lightning.checkpoints import atomic_write
from loftr.model import LoFTR
from loftr.viz import make_homography_figure

PREDICTION_FILE = "predictions.pt"
PAIR_KEYS = ("K0", "K1", "T_0to1")
# what a homography pair's record keeps: its ground truth and the scales of its resized inputs
HOMOGRAPHY_KEYS = ("H_0to1", "scale0", "scale1")
POSE_COLUMNS = ["pair", "scene", "matches", "precision", "R_err", "t_err"]
HOMOGRAPHY_COLUMNS = [
    "pair",
    "sequence",
    "kind",
    "k",
    "matches",
    "inliers",
    "corner_err",
    "precision",
]
#: How many figures of matches an evaluation of a homography set draws.
N_FIGURES = 4


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
        homography = "H_0to1" in data
        for b in range(data["bs"]):
            sel = data["m_bids"] == b
            record = {
                "pair_names": [names0[b], names1[b]],
                "scene_id": str(data["scene_id"][b]) if "scene_id" in data else "",
                "mkpts0_f": data["mkpts0_f"][sel].float().cpu(),
                "mkpts1_f": data["mkpts1_f"][sel].float().cpu(),
                "mconf": data["mconf"][sel].float().cpu(),
            }
            if homography:  # sizes in network-input pixels: the frame of the metrics
                record.update({k: data[k][b].double().cpu() for k in HOMOGRAPHY_KEYS if k in data})
                h, w = data["image0"].shape[-2:]
                record["image_size"] = [int(w), int(h)]
                record["kind"] = str(data["kind"][b]) if "kind" in data else ""
                record["pair_id"] = int(data["pair_id"][b]) if "pair_id" in data else b
            else:
                record.update({k: data[k][b].double().cpu() for k in PAIR_KEYS})
            records.append(record)
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


def _homography_batch(record: dict[str, Any]) -> dict[str, Any]:
    """A cached homography record as the one-pair batch the homography metrics read."""
    n = len(record["mconf"])
    w, h = record["image_size"]
    batch = {
        "mkpts0_f": record["mkpts0_f"].double(),
        "mkpts1_f": record["mkpts1_f"].double(),
        "mconf": record["mconf"],
        "m_bids": torch.zeros(n, dtype=torch.long),
        "pair_names": ([record["pair_names"][0]], [record["pair_names"][1]]),
        "image0": torch.zeros(()).expand(1, 1, h, w),  # only its size is read
    }
    batch.update({k: record[k][None] for k in HOMOGRAPHY_KEYS if k in record})
    return batch


def evaluate_homography_predictions(
    records: list[dict[str, Any]], eval_cfg: Any
) -> tuple[dict, dict, list]:
    """Metrics of cached homography predictions (docs/hpatches.md#protocol).

    Returns:
        ``(metrics, subsets, rows)``: the corner-error AUC at 3/5/10 px and the precision over
        all pairs; the same per kind (``illumination``, ``viewpoint``: the records' ``kind``);
        one row of :data:`HOMOGRAPHY_COLUMNS` per pair (corner error None for a failure).
    """
    thr = float(eval_cfg["homography"]["precision_thr"])
    pairs: dict[str, list[Any]] = {}
    rows = []
    for record in records:
        batch = _homography_batch(record)
        compute_homography_errors(batch, eval_cfg)
        pair = collect_homography_pair_metrics(batch)
        for key, values in pair.items():
            pairs.setdefault(key, []).extend(values)
        error, errors = pair["H_errs"][0], pair["reproj_errs"][0]
        rows.append(
            [
                pair["identifiers"][0],
                record["scene_id"],
                record["kind"],
                record["pair_id"],
                len(record["mconf"]),
                int(np.sum(pair["inliers"][0])),
                error if np.isfinite(error) else None,
                float(np.mean(errors < thr)) if len(errors) else 0.0,
            ]
        )
    metrics = aggregate_homography_metrics(pairs, thr)
    subsets = {}
    for kind in sorted({record["kind"] for record in records}):
        chosen = [i for i, record in enumerate(records) if record["kind"] == kind]
        subset = {key: [values[i] for i in chosen] for key, values in pairs.items()}
        subsets[kind] = {**aggregate_homography_metrics(subset, thr), "n_pairs": len(chosen)}
    return metrics, subsets, rows


def homography_figures(
    dataset: Any, records: list[dict[str, Any]], eval_cfg: Any, folder: Path, n: int = N_FIGURES
) -> list[tuple[str, Path]]:
    """Figures of the matches of ``n`` pairs spread over the set, coloured by reprojection error
    under the true homography (:func:`loftr.viz.make_homography_figure`, at
    ``eval.homography.precision_thr``); PNGs ``pair-<i>.png`` in ``folder``.

    Returns:
        ``(caption, path)`` per figure: the sequence, the pair and its kind.
    """
    thr = float(eval_cfg["homography"]["precision_thr"])
    chosen = sorted({int(i) for i in np.linspace(0, len(records) - 1, min(n, len(records)))})
    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    for i, index in enumerate(chosen):
        record, item = records[index], dataset[index]
        batch = {**_homography_batch(record), "image0": item["image0"][None]}
        batch["image1"] = item["image1"][None]
        compute_homography_errors(batch, eval_cfg)
        path = folder / f"pair-{i}.png"
        make_homography_figure(batch, 0, thr).savefig(str(path), bbox_inches="tight", pad_inches=0)
        figures.append((f"{record['scene_id']} 1-{record['pair_id']} ({record['kind']})", path))
    return figures


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
    datamodule = LoFTRDataModule(cfg.dataset, num_workers=cfg.hardware.num_workers, seed=cfg.seed)
    homography = dataset_cfg.get("test_data_source") == "HPatches"
    config = {"dataset": dataset_cfg, "eval": eval_cfg, "model": model_cfg}
    cached_config = dataset_cfg
    if homography:
        # the set (generated on first use) must be there: its figures read its images, and its
        # sequences' hash keys the cache, so a regenerated set never reuses stale predictions
        datamodule.prepare_data()
        protocol = evaluation_protocol(config)
        cached_config = {**dataset_cfg, "index_hash": protocol.index_hash}
    key = cache_key(cfg.ckpt_path, model_cfg, cached_config)
    cache = Path(cfg.cache_dir) / key / PREDICTION_FILE
    cached = cache.is_file()
    if cached:
        rank_zero_info(f"reusing cached predictions {cache}")
        records = torch.load(cache, weights_only=True)
    else:
        if not homography:
            datamodule.prepare_data()
        device = (
            "cuda" if cfg.hardware.accelerator == "gpu" and torch.cuda.is_available() else "cpu"
        )
        records = export_predictions(matcher, datamodule.test_dataloader(), device)
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda f: torch.save(records, f))
    extra: dict[str, Any] = {}
    if homography:
        metrics, subsets, rows = evaluate_homography_predictions(records, eval_cfg)
        extra["subsets"] = subsets
        columns = HOMOGRAPHY_COLUMNS
    else:
        metrics, rows = evaluate_predictions(records, eval_cfg)
        columns = POSE_COLUMNS
    if not homography:
        protocol = evaluation_protocol(config)
    result = {
        "name": cfg.name,
        "ckpt": str(cfg.ckpt_path),
        "metrics": metrics,
        **extra,
        **protocol_fields(protocol),
        "n_pairs": len(records),
        "cache": str(cache),
    }
    write_metrics(cfg.run_dir, "eval", result)
    figures = []
    if homography:
        datamodule.setup("test")
        folder = Path(cfg.run_dir) / "figures" / "test"
        figures = homography_figures(datamodule.test_dataset, records, eval_cfg, folder)
    return {**result, "rows": rows, "columns": columns, "figures": figures, "cached": cached}
