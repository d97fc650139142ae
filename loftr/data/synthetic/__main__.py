"""CLI: ``python -m loftr.data.synthetic [--root R] [--format F] [--seed S] [sizes]`` writes the
synthetic sets (both formats by default) and reports what it wrote or reused."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from loftr.data.synthetic.cache import (
    DEFAULT_SIZES,
    FORMATS,
    _manifest_key,
    _matches,
    ensure_synthetic,
    read_manifest,
    resolve_sizes,
)
from loftr.errors import ConfigError, DataError


def _folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


_SIZE_HELP = {
    "train_scenes": "training scenes",
    "frames_per_scene": "frames rendered per training scene",
    "test_scenes": "validation/test scenes (different from the training scenes)",
    "test_frames_per_scene": "frames rendered per validation/test scene",
    "test_pairs_per_scene": "validation/test pairs per scene (MegaDepth: spread over the bins)",
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loftr.data.synthetic",
        description=(
            "Render the synthetic LoFTR dataset (piecewise-planar scenes with exact depth) in the "
            "real ScanNet and/or MegaDepth on-disk formats. A set whose manifest matches the "
            "seed and sizes is reused."
        ),
    )
    parser.add_argument(
        "--root", default="data/synthetic", help="parent folder (default: %(default)s)"
    )
    parser.add_argument(
        "--format",
        choices=[*FORMATS, "both"],
        default="both",
        help="which format(s) to write into ROOT/<format> (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    for key, what in _SIZE_HELP.items():
        defaults = ", ".join(f"{f} {DEFAULT_SIZES[f][key]}" for f in FORMATS)
        parser.add_argument(
            "--" + key.replace("_", "-"),
            type=int,
            default=None,
            dest=key,
            metavar="N",
            help=f"{what} (default: {defaults})",
        )
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if a matching set exists"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m loftr.data.synthetic [--root R] [--format F] [--seed S] [sizes]``."""
    args = _build_parser().parse_args(argv)
    formats = FORMATS if args.format == "both" else (args.format,)
    sizes = {k: getattr(args, k) for k in DEFAULT_SIZES["scannet"]}
    for fmt in formats:
        start = time.perf_counter()
        try:
            key = _manifest_key(fmt, args.seed, resolve_sizes(fmt, sizes))
            reused = not args.force and _matches(read_manifest(Path(args.root) / fmt), key)
            path = ensure_synthetic(
                args.root, fmt, args.seed, progress=not args.no_progress, force=args.force, **sizes
            )
        except (ConfigError, DataError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        elapsed = time.perf_counter() - start
        manifest = read_manifest(path) or {}
        n_files, n_bytes = _folder_size(path)
        verb = "reused" if reused else f"wrote in {elapsed:.1f} s"
        print(f"{fmt}: {verb}: {path} ({n_files} files, {n_bytes / 2**20:.1f} MiB)")
        for split, info in (manifest.get("written") or {}).items():
            print(
                f"  {split}: {info['scenes']} scenes, {info['frames']} frames, {info['pairs']} "
                f"pairs, overlap {info['score_min']}-{info['score_max']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
