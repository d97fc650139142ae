"""HPatches: the layout loader, the 108-sequence filter, the set-up check, the held-out generator,
and the homography protocol of `loftr.evaluate` with the collector's Table 1 (docs/hpatches.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from experiments import collect as collector
from loftr.data import homographies
from loftr.data import hpatches as hp
from loftr.data.datamodule import LoFTRDataModule
from loftr.data.io import read_homography
from loftr.data.photos import HELDOUT_PHOTOS, TRAIN_PHOTOS
from loftr.data.setup import main as setup_main
from loftr.data.synthetic import hpatches as gen
from loftr.data.synthetic.cache import read_manifest
from loftr.errors import ConfigError, DataError
from loftr.evaluation.homography import input_frame_homography
from loftr.evaluation.protocol import hpatches_protocol
from loftr.evaluation.testing import HOMOGRAPHY_COLUMNS, evaluate
from loftr.model import LoFTR
from loftr.model.config import normalised_model_config
from tests.helpers import ROOT
from tests.helpers.compose import compose_cfg

EXCLUDED = hp.protocol_exclude()


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    """The held-out photographs' HPatches-layout set, generated once for the module."""
    return gen.ensure_hpatches_heldout(tmp_path_factory.mktemp("hp") / "heldout", seed=0)


def _release(root: Path, sequences: dict[str, tuple[np.ndarray, list[np.ndarray]]]) -> Path:
    """An HPatches-layout folder: per sequence image 1 and the homographies of images 2..6,
    image k being image 1 warped by H_1_k (no photometric change)."""
    for name, (grey, warps) in sequences.items():
        image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)  # the release's images are colour
        folder = root / hp.RELEASE_FOLDER / name
        folder.mkdir(parents=True)
        h, w = image.shape[:2]
        cv2.imwrite(str(folder / "1.ppm"), image)
        for k, H in zip(hp.TARGETS, warps, strict=True):
            cv2.imwrite(str(folder / f"{k}.ppm"), cv2.warpPerspective(image, H, (w, h)))
            np.savetxt(folder / f"H_1_{k}", H)
    return root


def _smooth_photo(w: int, h: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1)).astype(np.float32)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- the loader
def test_input_size_makes_the_shorter_side_480_and_both_sides_multiples_of_8():
    assert hp.input_size(800, 600) == (640, 480)
    assert hp.input_size(451, 300) == (720, 480)  # 721.6 rounds to 722, floored to 720
    assert hp.input_size(600, 1000) == (480, 800)
    assert hp.input_size(1000, 750, shorter_side=240) == (320, 240)


def test_loader_reads_a_release_and_its_input_frame_homography_is_exact(tmp_path):
    """Image k is image 1 warped by H_1_k; after resizing both (different sizes, so different
    scales), image 1's content at p is image k's at H_input(p), to interpolation accuracy."""
    H = np.array([[0.9, 0.08, 30.0], [-0.05, 1.05, 12.0], [1e-4, -5e-5, 1.0]])
    shift = np.array([[1.0, 0, 2.0], [0, 1.0, -1.0], [0, 0, 1.0]])
    root = _release(
        tmp_path,
        {"v_plane": (_smooth_photo(800, 600), [H, shift, H, shift, H])},
    )
    dataset = hp.HPatchesDataset(root)
    assert len(dataset) == 5 and dataset.sequences == ["v_plane"]
    item = dataset[0]
    assert item["image0"].shape == (1, 480, 640) and item["image0"].dtype == torch.float32
    assert item["scale0"].tolist() == [1.25, 1.25]  # [800 / 640, 600 / 480]
    assert item["kind"] == "viewpoint" and item["scene_id"] == "v_plane" and item["pair_id"] == 2
    assert item["pair_names"] == ("v_plane/1.ppm", "v_plane/2.ppm")
    assert item["dataset_name"] == "HPatches"
    np.testing.assert_allclose(item["H_0to1"].numpy(), H, rtol=1e-6)
    np.testing.assert_allclose(item["H_1to0"].numpy() @ H, np.eye(3), atol=1e-5)

    H_in = input_frame_homography(item["H_0to1"].double(), item["scale0"], item["scale1"])
    ys, xs = np.mgrid[60:420:12, 80:560:12]
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]).astype(np.float64)
    mapped = H_in @ points
    mapped = (mapped[:2] / mapped[2]).T.astype(np.float32)
    img0, img1 = (item[k][0].numpy() * 255 for k in ("image0", "image1"))
    inside = (mapped[:, 0] > 2) & (mapped[:, 0] < 637) & (mapped[:, 1] > 2) & (mapped[:, 1] < 477)
    at0 = img0[points[1].astype(int), points[0].astype(int)][inside]
    at1 = cv2.remap(img1, mapped[:, None, 0], mapped[:, None, 1], cv2.INTER_LINEAR)[:, 0][inside]
    off = cv2.remap(img1, mapped[:, None, 0] + 6, mapped[:, None, 1], cv2.INTER_LINEAR)[:, 0]
    off = off[inside]
    assert inside.sum() > 300
    assert np.mean(np.abs(at0 - at1)) < 2.0  # grey levels: the same content
    assert np.mean(np.abs(at0 - off)) > 4 * np.mean(np.abs(at0 - at1))


def test_the_108_sequences_of_a_full_release_and_a_wrong_exclude_list(tmp_path):
    """A full release listing (116 sequences, files empty) keeps 52 + 56; an exclude list that
    does not cut it so is refused, and a partial folder is taken as it is."""
    illumination = [n for n in EXCLUDED if n.startswith("i_")]
    viewpoint = [n for n in EXCLUDED if n.startswith("v_")]
    illumination += [f"i_seq{i:02d}" for i in range(57 - len(illumination))]
    viewpoint += [f"v_seq{i:02d}" for i in range(59 - len(viewpoint))]
    for name in illumination + viewpoint:
        (tmp_path / hp.RELEASE_FOLDER / name).mkdir(parents=True)
    (tmp_path / hp.RELEASE_FOLDER / "README").write_text("not a sequence")
    kept = hp.list_sequences(tmp_path, EXCLUDED)
    assert len(kept) == 108 and hp.kind_counts(kept) == {"illumination": 52, "viewpoint": 56}
    assert not set(kept) & set(EXCLUDED) and kept == sorted(kept)
    assert len(hp.HPatchesDataset(tmp_path, EXCLUDED)) == 540
    with pytest.raises(DataError, match=r"full HPatches release.*'illumination': 53"):
        hp.list_sequences(tmp_path, EXCLUDED[1:])
    (tmp_path / hp.RELEASE_FOLDER / "v_seq00").rmdir()  # no longer the full release
    assert len(hp.list_sequences(tmp_path, EXCLUDED[1:])) == 108


def test_the_config_names_the_eight_high_resolution_sequences():
    assert EXCLUDED == [
        "i_contruction",
        "i_crownnight",
        "i_dc",
        "i_pencils",
        "i_whitebuilding",
        "v_artisans",
        "v_astronautis",
        "v_talent",
    ]
    cfg = compose_cfg("evaluate", "dataset=hpatches", "ckpt_path=x")
    assert list(cfg.dataset.hpatches.exclude) == EXCLUDED
    assert cfg.dataset.test_data_source == "HPatches" and cfg.dataset.test_only


# ----------------------------------------------------------------------- the set-up command
def test_setup_check_names_every_broken_file_and_folder(tmp_path, capsys):
    data = tmp_path / "data"
    image = _smooth_photo(64, 48)
    root = _release(data / "hpatches", {n: (image, [np.eye(3)] * 5) for n in ("i_a", "v_b")})
    folder = root / hp.RELEASE_FOLDER
    (folder / "v_b" / "3.ppm").unlink()
    (folder / "v_b" / "H_1_4").unlink()
    (folder / "v_b" / "5.ppm").write_bytes(b"P6 broken")
    (folder / "i_a" / "H_1_2").write_text("0 0 0\n0 0 0\n0 0 0\n")
    (folder / "i_a" / "H_1_3").write_text("1 0 0\n0 1 0\n")
    (folder / "i_a" / "H_1_5").write_text("1 0 nan\n0 1 0\n0 0 1\n")
    (folder / "extra").mkdir()
    status = setup_main(["hpatches", "--verify-only", "--check", "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert status == 1
    for named in (
        f"{folder / 'v_b' / '3.ppm'} is missing",
        f"{folder / 'v_b' / 'H_1_4'} is missing",
        f"{folder / 'extra'} is not a sequence",
        f"homography file {folder / 'i_a' / 'H_1_2'} is a singular matrix",
        f"homography file {folder / 'i_a' / 'H_1_3'} holds 6 numbers",
        f"homography file {folder / 'i_a' / 'H_1_5'} contains inf or nan",
        f"image {folder / 'v_b' / '5.ppm'} is corrupt",
    ):
        assert sum(named in line for line in out.splitlines()) >= 1, (named, out)
    assert "2 sequences (1 illumination, 1 viewpoint)" in out
    assert "not the full release" in out
    assert "checked 22 files and cameras: 6 with a problem" in out


def test_setup_links_a_release_and_a_missing_one_names_the_command(tmp_path, capsys):
    release = _release(tmp_path / "download", {"i_a": (_smooth_photo(64, 48), [np.eye(3)] * 5)})
    data = tmp_path / "data"
    assert setup_main(["hpatches", "--test", str(release), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "linked" in out and "complete" in out
    assert (data / "hpatches" / hp.RELEASE_FOLDER / "i_a" / "1.ppm").is_file()
    assert setup_main(["hpatches", "--verify-only", "--data-dir", str(tmp_path / "none")]) == 1
    assert "python -m loftr.data.setup hpatches" in capsys.readouterr().out

    config = compose_cfg("evaluate", "dataset=hpatches", "ckpt_path=x").dataset
    config.hpatches.root = str(tmp_path / "none" / "hpatches")
    with pytest.raises(DataError, match=r"does not exist; .*python -m loftr\.data\.setup hpatches"):
        LoFTRDataModule(config).test_dataloader()
    config.trainval_data_source = "HPatches"
    with pytest.raises(ConfigError, match=r"trainval_data_source='HPatches' is a test set"):
        LoFTRDataModule(config)


# -------------------------------------------------------------------- the held-out generator
def test_the_heldout_set_is_the_release_layout_of_the_heldout_photographs(heldout):
    folder = heldout / hp.RELEASE_FOLDER
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{kind}_{photo}" for photo in HELDOUT_PHOTOS for kind in "iv")
    assert not {n.split("_", 1)[1] for n in names} & set(TRAIN_PHOTOS)
    for name in names:
        files = sorted(p.name for p in (folder / name).iterdir())
        assert files == [*(f"{k}.ppm" for k in range(1, 7)), *(f"H_1_{k}" for k in range(2, 7))]
    image = cv2.imread(str(folder / "v_coffee" / "1.ppm"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (400, 600, 3)  # colour, the photograph's size
    assert (folder / "v_coffee" / "1.ppm").read_bytes()[:2] == b"P6"
    assert read_manifest(heldout)["version"] == gen.VERSION


def test_heldout_warps_never_fold_keep_half_the_image_and_grow_in_strength(heldout):
    dataset = hp.HPatchesDataset(heldout)
    shift = {"illumination": [], "viewpoint": []}
    for name in dataset.sequences:
        w, h = cv2.imread(str(dataset.folder / name / "1.ppm")).shape[1::-1]
        per_k = []
        for k in hp.TARGETS:
            H = read_homography(dataset.folder / name / f"H_1_{k}")
            assert not homographies.folds(H, w, h)
            assert homographies.visible_share(H, w, h) >= gen.MIN_VISIBLE
            corners = homographies.corners(w, h)
            mapped = cv2.perspectiveTransform(corners[None], H)[0]
            per_k.append(np.linalg.norm(mapped - corners, axis=1).max())
        shift[str(hp.sequence_kind(name))].append(per_k)
    assert 0 < np.max(shift["illumination"]) <= np.sqrt(2) + 1e-3  # a pixel at most
    viewpoint = np.mean(shift["viewpoint"], axis=0)
    assert viewpoint[-1] > 2 * viewpoint[0] > 0


def test_the_heldout_set_is_deterministic(heldout, tmp_path):
    again = gen.write_hpatches_heldout(tmp_path / "again", seed=0, photos=("coffee",))
    gen.write_hpatches_heldout(tmp_path / "other", seed=1, photos=("coffee",))
    assert again["written"]["sequences"] == ["i_coffee", "v_coffee"]
    for k in (3, 6):
        for name in ("i_coffee", "v_coffee"):
            first = (heldout / hp.RELEASE_FOLDER / name / f"{k}.ppm").read_bytes()
            second = (tmp_path / "again" / hp.RELEASE_FOLDER / name / f"{k}.ppm").read_bytes()
            third = (tmp_path / "other" / hp.RELEASE_FOLDER / name / f"{k}.ppm").read_bytes()
            assert first == second and first != third
    assert gen.ensure_hpatches_heldout(heldout, seed=0) == heldout  # reused as it is


# -------------------------------------------------------------------- the protocol and evaluate
def _hpatches_config(root: Path, **settings) -> dict:
    return {
        "dataset": {
            "name": "hpatches",
            "test_data_source": "HPatches",
            "hpatches": {
                "root": str(root),
                "exclude": settings.pop("exclude", []),
                "shorter_side": settings.pop("shorter_side", 480),
                "df": 8,
            },
        },
        "eval": {
            "homography": {
                "ransac_thr": 3.0,
                "ransac_conf": 0.995,
                "ransac_max_iters": 2000,
                "max_matches": 1000,
                "precision_thr": 3.0,
                **settings,
            }
        },
        "model": {"match_coarse": {"border_rm": 2}},
    }


def test_the_protocol_holds_every_setting(heldout):
    base = hpatches_protocol(_hpatches_config(heldout))
    assert base.homography and base.resize == "shorter=480,df=8"
    assert base.key().endswith("|iters=2000|top=1000|corners=pixel-centres")
    changed = [
        {"ransac_thr": 2.0},
        {"ransac_conf": 0.999},
        {"ransac_max_iters": 5000},
        {"max_matches": 500},
        {"shorter_side": 240},
        {"exclude": ["v_rocket"]},
    ]
    keys = {base.key(), *(hpatches_protocol(_hpatches_config(heldout, **c)).key() for c in changed)}
    assert len(keys) == 1 + len(changed)
    (heldout / hp.RELEASE_FOLDER / "v_rocket" / "H_1_2").touch()  # same bytes: same hash
    assert hpatches_protocol(_hpatches_config(heldout)).key() == base.key()


# the known shift (x pixels, in image 1's input frame) of every match of a pair: illumination pairs
# exact, viewpoint pairs 1, 2, 4, 8 px off, and one failure (three matches only)
SHIFTS = {("illumination", k): 0.0 for k in hp.TARGETS}
SHIFTS.update({("viewpoint", k): d for k, d in zip(hp.TARGETS, (1, 2, 4, 8, None), strict=True)})


class ShiftedMatcher(nn.Module):
    """Matches of a 7 x 7 grid of image 0, mapped by the true homography and shifted by SHIFTS."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = config

    def forward(self, data: dict) -> None:
        h, w = data["image0"].shape[-2:]
        xs, ys = np.meshgrid(np.linspace(40, w - 40, 7), np.linspace(40, h - 40, 7))
        points = np.stack([xs.ravel(), ys.ravel()], 1)
        H = input_frame_homography(data["H_0to1"][0].double(), data["scale0"][0], data["scale1"][0])
        mapped = cv2.perspectiveTransform(points[None], H)[0]
        shift = SHIFTS[(data["kind"][0], int(data["pair_id"][0]))]
        if shift is None:  # a failure: fewer than 4 matches
            points, mapped, shift = points[:3], mapped[:3], 100.0
        mapped = mapped + [shift, 0.0]
        data.update(
            bs=1,
            m_bids=torch.zeros(len(points), dtype=torch.long),
            mkpts0_f=torch.from_numpy(points * data["scale0"][0].numpy()).float(),
            mkpts1_f=torch.from_numpy(mapped * data["scale1"][0].numpy()).float(),
            mconf=torch.ones(len(points)),
        )


def _write_hydra(run_dir: Path, cfg) -> None:
    from omegaconf import OmegaConf

    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    choices = {"model": "loftr", "dataset": "hpatches_heldout"}
    hydra = {"hydra": {"runtime": {"choices": choices, "cwd": str(ROOT)}}}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")


def test_corner_error_auc_through_evaluate_equals_the_hand_computation(
    heldout, tmp_path, monkeypatch
):
    """Two sequences: five exact illumination pairs (error 0), viewpoint pairs 1, 2, 4 and 8 px off
    and a failure (inf). The recall curve through (0, 0), the sorted errors and their ranks:

    viewpoint, 5 pairs, recall 0.2 per pair:
      AUC@3 = (0.1 + 0.3 + 0.4) / 3 = 0.8 / 3; AUC@5 = (0.1 + 0.3 + 1.0 + 0.6) / 5 = 0.4;
      AUC@10 = (0.1 + 0.3 + 1.0 + 2.8 + 1.6) / 10 = 0.58;
    all 10 pairs, recall 0.1 per pair, the five zeros reach 0.5 at 0 px:
      AUC@3 = (0.55 + 0.65 + 0.7) / 3 = 1.9 / 3; AUC@5 = (0.55 + 0.65 + 1.5 + 0.8) / 5 = 0.7;
      AUC@10 = (0.55 + 0.65 + 1.5 + 3.4 + 1.8) / 10 = 0.79.
    Precision at 3 px: every match of the pairs off by at most 2 px, none of the others.
    """
    keep = ["i_chelsea", "v_chelsea"]
    exclude = [p.name for p in (heldout / hp.RELEASE_FOLDER).iterdir() if p.name not in keep]
    overrides = [
        "dataset=hpatches_heldout",
        f"dataset.hpatches.root={heldout}",
        f"dataset.hpatches.exclude=[{','.join(exclude)}]",
        "debug=fast",
        "logger=none",
        f"ckpt_path={tmp_path / 'fake.ckpt'}",
        f"cache_dir={tmp_path / 'dump'}",
    ]
    cfg = compose_cfg("evaluate", *overrides, f"run_dir={tmp_path / 'run'}")
    (tmp_path / "fake.ckpt").write_bytes(b"fake")
    model = normalised_model_config(cfg.model)
    monkeypatch.setattr(LoFTR, "from_checkpoint", lambda *a, **k: ShiftedMatcher(model))
    result = evaluate(cfg)
    assert result["n_pairs"] == 10
    metrics, subsets = result["metrics"], result["subsets"]
    assert metrics["auc@3"] == pytest.approx(1.9 / 3, abs=2e-4)
    assert metrics["auc@5"] == pytest.approx(0.7, abs=2e-4)
    assert metrics["auc@10"] == pytest.approx(0.79, abs=2e-4)
    assert subsets["viewpoint"]["auc@3"] == pytest.approx(0.8 / 3, abs=2e-4)
    assert subsets["viewpoint"]["auc@5"] == pytest.approx(0.4, abs=2e-4)
    assert subsets["viewpoint"]["auc@10"] == pytest.approx(0.58, abs=2e-4)
    assert subsets["illumination"]["auc@3"] == pytest.approx(1.0, abs=2e-4)
    assert metrics["prec@3px"] == pytest.approx(0.7)
    assert subsets["viewpoint"]["prec@3px"] == pytest.approx(0.4)
    assert subsets["viewpoint"]["n_pairs"] == subsets["illumination"]["n_pairs"] == 5
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["subsets"] == subsets and written["metrics"] == metrics
    assert written["protocol"]["max_matches"] == 1000 and written["protocol"]["corners"]
    rows = {(r[1], r[3]): r for r in result["rows"]}
    assert rows[("v_chelsea", 5)][6] == pytest.approx(8.0, abs=1e-3)  # the corner error
    assert rows[("v_chelsea", 6)][6] is None  # a failure
    assert rows[("v_chelsea", 2)][4:6] == [49, 49]  # matches, RANSAC inliers
    assert len(result["figures"]) == 4 and all(path.is_file() for _, path in result["figures"])
    again = evaluate(compose_cfg("evaluate", *overrides, f"run_dir={tmp_path / 'again'}"))
    assert again["cached"] and not result["cached"] and again["metrics"] == metrics

    # the collector: our row over all pairs and per kind beside LoFTR's, then the paper's Table 1
    _write_hydra(tmp_path / "run", cfg)
    collected = collector.collect([tmp_path / "run"], wandb_mode=None)
    text = collected["markdown"].read_text()
    assert "| AUC@3 | AUC@5 | AUC@10 |" in text
    assert "| eval | full | ds | dense | — | — | 63.33 | 70.00 | 79.00 | 70.00 | 65.90 |" in text
    assert "| eval [viewpoint] |" in text and "| eval [illumination] |" in text
    for row in (
        "| LoFTR-DS, 1K matches (Tab. 1) | 65.90 | 75.60 | 84.60 |",
        "| D2Net + NN (Tab. 1) | 23.20 | 35.90 | 53.60 |",
        "| R2D2 + NN (Tab. 1) | 50.60 | 63.90 | 76.80 |",
        "| DISK + NN (Tab. 1) | 52.30 | 64.90 | 78.90 |",
        "| SuperPoint + SuperGlue (Tab. 1) | 53.90 | 68.30 | 81.70 |",
        "| Sparse-NCNet (Tab. 1) | 48.90 | 54.20 | 67.10 |",
        "| DRC-Net (Tab. 1) | 50.60 | 56.20 | 68.30 |",
    ):
        assert row in text, text
    assert "differs: test_set hpatches_heldout vs hpatches" in text  # not the real release


def test_evaluate_cli_on_the_heldout_set_writes_metrics_json(heldout, tmp_path):
    """`python -m loftr.evaluate dataset=hpatches_heldout` with a tiny random checkpoint, on one
    sequence at a 160-pixel shorter side (the smoke run of the protocol)."""
    cfg = compose_cfg("evaluate", "debug=fast", "ckpt_path=x")
    torch.manual_seed(0)
    matcher = LoFTR(normalised_model_config(cfg.model))
    ckpt = tmp_path / "random.ckpt"
    torch.save({"state_dict": {f"matcher.{k}": v for k, v in matcher.state_dict().items()}}, ckpt)
    exclude = [p.name for p in (heldout / hp.RELEASE_FOLDER).iterdir() if p.name != "v_rocket"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loftr.evaluate",
            "dataset=hpatches_heldout",
            f"ckpt_path={ckpt}",
            "debug=fast",
            "logger=none",
            f"dataset.hpatches.root={heldout}",
            f"dataset.hpatches.exclude=[{','.join(exclude)}]",
            "dataset.hpatches.shorter_side=160",
            f"cache_dir={tmp_path / 'dump'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["kind"] == "eval" and written["n_pairs"] == 5
    assert set(written["metrics"]) == {"auc@3", "auc@5", "auc@10", "prec@3px"}
    assert set(written["subsets"]) == {"viewpoint"}
    assert "resize=shorter=160,df=8" in written["protocol_key"]
    assert "viewpoint" in proc.stdout and "protocol hpatches_heldout@" in proc.stdout


def test_homography_validation_sets_have_homography_protocols(tmp_path):
    """A training on generated homographies names its validation set as the source does, with a
    homography protocol, so its metrics.json reads back (and the collector takes it)."""
    from loftr.config import plain
    from loftr.evaluation.export import protocol_fields, read_metrics, write_metrics
    from loftr.evaluation.protocol import validation_protocols

    config = plain(compose_cfg("train", "dataset=homographies"))
    ((name, protocol),) = validation_protocols(config).items()
    assert name == "heldout_photos" and protocol.homography
    assert protocol.resize == "320x240" and protocol.max_matches == 1000
    config["dataset"]["homographies"]["val_seed"] += 1  # other pairs: another protocol
    assert validation_protocols(config)[name].index_hash != protocol.index_hash
    sets = {name: {"auc@3": 0.1, "auc@5": 0.2, "auc@10": 0.3, "prec@3px": 0.5}}
    record = {"epoch": 0, "step": 4, "sets": sets, "auc@5": 0.2, "auc@10": 0.3}
    fields = {"name": "h", "val_sets": {name: protocol_fields(protocol)}}
    path = write_metrics(tmp_path, "train", {**fields, "last": record, "best": record})
    assert read_metrics(path)["val_sets"][name]["protocol_key"] == protocol.key()


def test_an_hpatches_evaluation_logs_its_kinds_pairs_and_figures_to_wandb(tmp_path):
    from loftr.lightning.loggers import log_evaluation
    from tests.helpers.wandb_records import history_rows, offline_run_file

    cfg = compose_cfg("evaluate", "ckpt_path=unused.ckpt", "logger=wandb", f"run_dir={tmp_path}")
    figure = tmp_path / "pair-0.png"
    cv2.imwrite(str(figure), np.zeros((8, 8, 3), np.uint8))
    row = ["v_a/1.ppm#v_a/2.ppm", "v_a", "viewpoint", 2, 10, 8, None, 0.5]
    result = {
        "metrics": {"auc@3": 0.5, "auc@5": 0.6, "auc@10": 0.7, "prec@3px": 0.5},
        "subsets": {"viewpoint": {"auc@3": 0.25, "n_pairs": 1}},
        "rows": [row],
        "columns": HOMOGRAPHY_COLUMNS,
        "figures": [("v_a 1-2 (viewpoint)", figure)],
        "protocol_key": "k",
    }
    log_evaluation(cfg, result)
    rows = history_rows(offline_run_file(tmp_path))
    logged = {k: v for r in rows for k, v in r.items()}
    assert logged["test/auc@3"] == 0.5 and logged["test_viewpoint/auc@3"] == 0.25
    assert logged["test_pairs/ncols"] == 8 and logged["test_pairs/nrows"] == 1
    assert logged["test_match/evaluation/count"] == 1
