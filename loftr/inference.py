"""Matching two image files with a checkpoint, what `python -m loftr.match` runs: the `match`
config, the matches in original pixels, their figure.

Its own room: it reads image files (`loftr.data`) and draws (`loftr.viz`), which the network
(`loftr.model`) never imports, and it is not the evaluation protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from loftr.cli import checkpoint_option
from loftr.config import check_additions
from loftr.config.command_line import composition_error
from loftr.config.schema import CONF_DIR
from loftr.config.validate import validate
from loftr.data.megadepth import read_megadepth_gray
from loftr.model import LoFTR
from loftr.viz import make_confidence_figure


def match_config(overrides: Sequence[str]) -> DictConfig:
    """The `match` config with the command line's `overrides` (`ckpt=` moved to `ckpt_path`)."""
    try:
        check_additions("match", overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="match", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:  # a typo in an override
        raise composition_error(exc) from None
    checkpoint_option(cfg, overrides)
    return cfg


def match_pair(cfg: DictConfig, image0: str, image1: str, overrides: Sequence[str] = ()) -> dict:
    """Match two image files with the weights of `cfg.ckpt_path`; keypoints in original pixels.

    A checkpoint of ours brings its model config (with `overrides`' `model.*` keys on top, see
    `LoFTR.from_checkpoint`); the images are resized so that both sides are multiples of that
    model's coarse stride.
    """
    validate(cfg)
    matcher = LoFTR.from_checkpoint(cfg.ckpt_path, cfg.model, overrides, cfg.model_from_ckpt)
    matcher.eval().to(cfg.device)
    stride = matcher.config["resolution"][0]
    data = {}
    for side, path in (("0", image0), ("1", image1)):
        image, _, scale = read_megadepth_gray(path, cfg.resize, df=stride, padding=False)
        data[f"image{side}"] = image[None].to(cfg.device)
        data[f"scale{side}"] = scale[None].to(cfg.device)
    with torch.inference_mode():
        matcher(data)
    return data


def save_match_figure(cfg: DictConfig, data: dict) -> str:
    """Draw `match_pair`'s matches, coloured by confidence, into `cfg.output`; its path."""
    fig = make_confidence_figure(data, 0, text=[Path(cfg.ckpt_path).name])
    fig.savefig(cfg.output, bbox_inches="tight")
    plt.close(fig)
    return cfg.output
