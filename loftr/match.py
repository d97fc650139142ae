"""`python -m loftr.match IMAGE0 IMAGE1 ckpt=PATH [overrides]`: match a pair, draw the matches.

    python -m loftr.match a.jpg b.jpg ckpt=weights/indoor_ds_new.ckpt
    python -m loftr.match a.jpg b.jpg ckpt=weights/outdoor_ds.ckpt model.coarse.temp_bug_fix=false

Every override of `conf/match.yaml` and the model groups applies (`resize=840`, `matcher=ot`,
`model.match_coarse.thr=0.3`, ...). Prints the number of matches and writes `output`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from loftr.data.megadepth import read_megadepth_gray
from loftr.errors import ConfigError, LoFTRError
from loftr.model import LoFTR
from loftr.viz import make_confidence_figure

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
USAGE = "usage: python -m loftr.match IMAGE0 IMAGE1 ckpt=PATH [key=value ...]"


def match_pair(cfg: DictConfig, image0: str, image1: str) -> dict:
    """Match two image files with the weights of `cfg.ckpt`; keypoints in original pixels."""
    if not cfg.ckpt:
        raise ConfigError(
            "ckpt is not set: pass ckpt=PATH to a LoFTR checkpoint (no weights can be "
            "downloaded on this machine)"
        )
    matcher = LoFTR(cfg.model).load_weights(cfg.ckpt).eval().to(cfg.device)
    data = {}
    for side, path in (("0", image0), ("1", image1)):
        image, _, scale = read_megadepth_gray(path, cfg.resize, df=8, padding=False)
        data[f"image{side}"] = image[None].to(cfg.device)
        data[f"scale{side}"] = scale[None].to(cfg.device)
    with torch.inference_mode():
        matcher(data)
    return data


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
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="match", overrides=overrides)
    try:
        data = match_pair(cfg, *images)
    except LoFTRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = len(data["mconf"])
    print(f"{n} matches between {images[0]} and {images[1]}")
    fig = make_confidence_figure(data, 0, text=[Path(cfg.ckpt).name])
    fig.savefig(cfg.output, bbox_inches="tight")
    plt.close(fig)
    print(f"figure: {cfg.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
