"""The inference CLI: `python -m loftr.match IMAGE0 IMAGE1 ckpt_path=PATH`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from omegaconf import OmegaConf

from loftr.model import LoFTR

ROOT = Path(__file__).resolve().parents[1]


def test_match_cli_prints_matches_and_writes_a_figure(tmp_path):
    photo = skimage.data.camera()
    cv2.imwrite(str(tmp_path / "a.png"), photo[:240, :300])
    cv2.imwrite(str(tmp_path / "b.png"), photo[6:246, 10:310])
    cfg = OmegaConf.load(ROOT / "conf/model/loftr.yaml")
    torch.manual_seed(0)
    ckpt = tmp_path / "weights.ckpt"
    # a Lightning-style checkpoint: `state_dict` with the `matcher.` prefix
    state = {f"matcher.{k}": v for k, v in LoFTR(cfg).state_dict().items()}
    torch.save({"state_dict": state}, ckpt)
    figure = tmp_path / "pair.png"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "loftr.match",
            str(tmp_path / "a.png"),
            str(tmp_path / "b.png"),
            f"ckpt_path={ckpt}",
            "resize=300",
            "model.match_coarse.thr=0.0",
            f"output={figure}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    n = int(out.split(" matches")[0].split()[-1])
    assert n > 0
    image = cv2.imread(str(figure))
    assert image is not None and image.shape[1] > 300


def test_match_cli_without_weights_says_what_to_pass(tmp_path):
    blank = tmp_path / "a.png"
    cv2.imwrite(str(blank), np.zeros((64, 64), np.uint8))
    proc = subprocess.run(
        [sys.executable, "-m", "loftr.match", str(blank), str(blank)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ckpt is not set") and "Traceback" not in proc.stderr
