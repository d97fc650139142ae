"""`python -m loftr.match IMAGE0 IMAGE1 ckpt_path=PATH [overrides]`: match a pair, draw them.

    python -m loftr.match a.jpg b.jpg ckpt_path=weights/indoor_ds_new.ckpt
    python -m loftr.match a.jpg b.jpg ckpt_path=weights/outdoor_ds.ckpt \
        model.coarse.temp_bug_fix=false

Every override of `conf/match.yaml` and the model groups applies (`resize=840`, `matcher=ot`,
`model.match_coarse.thr=0.3`, ...). Prints the number of matches and writes `output`. `ckpt=` is
the deprecated name of `ckpt_path=`.
"""

from __future__ import annotations

import sys

from loftr.cli import one_line_errors
from loftr.inference import match_config, match_pair, save_match_figure

USAGE = "usage: python -m loftr.match IMAGE0 IMAGE1 ckpt_path=PATH [key=value ...]"


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    images, overrides = [a for a in argv if "=" not in a], [a for a in argv if "=" in a]
    if len(images) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    cfg = match_config(overrides)
    data = match_pair(cfg, *images, overrides=overrides)
    print(f"{len(data['mconf'])} matches between {images[0]} and {images[1]}")
    print(f"figure: {save_match_figure(cfg, data)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
