"""`python -m loftr.match IMAGE0 IMAGE1 ckpt=PATH [overrides]`: match a pair, draw the matches.

    python -m loftr.match a.jpg b.jpg ckpt=weights/indoor_ds_new.ckpt
    python -m loftr.match a.jpg b.jpg ckpt=weights/outdoor_ds.ckpt model.coarse.temp_bug_fix=false

Every override of `conf/match.yaml` and the model groups applies (`resize=840`, `matcher=ot`,
`model.match_coarse.thr=0.3`, ...). Prints the number of matches and writes `output`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from loftr.cli import one_line_errors
from loftr.config import check_additions
from loftr.config.command_line import composition_error
from loftr.config.validate import validate
from loftr.data.megadepth import read_megadepth_gray
from loftr.model import LoFTR
from loftr.viz import make_confidence_figure

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
USAGE = "usage: python -m loftr.match IMAGE0 IMAGE1 ckpt=PATH [key=value ...]"


def match_pair(cfg: DictConfig, image0: str, image1: str, overrides: Sequence[str] = ()) -> dict:
    """Match two image files with the weights of `cfg.ckpt`; keypoints in original pixels.

    A checkpoint of ours brings its model config (with `overrides`' `model.*` keys on top, see
    `LoFTR.from_checkpoint`); the images are resized so that both sides are multiples of that
    model's coarse stride.
    """
    validate(cfg)
    matcher = LoFTR.from_checkpoint(cfg.ckpt, cfg.model, overrides, cfg.model_from_ckpt)
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


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    images = [a for a in argv if "=" not in a]
    overrides = [a for a in argv if "=" in a]
    if len(images) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        check_additions("match", overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="match", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:  # a typo in an override
        raise composition_error(exc) from None
    data = match_pair(cfg, *images, overrides=overrides)
    n = len(data["mconf"])
    print(f"{n} matches between {images[0]} and {images[1]}")
    fig = make_confidence_figure(data, 0, text=[Path(cfg.ckpt).name])
    fig.savefig(cfg.output, bbox_inches="tight")
    plt.close(fig)
    print(f"figure: {cfg.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
