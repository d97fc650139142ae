"""CLI: ``python -m loftr.data.prepare {colmap,rgbd} --out DIR [--name SCENE] [--split S] ...``
converts one scene into the prepared set ``--out`` (docs/prepare.md), prints the report as a
table and writes it to ``<out>/reports/<name>.json``.

A converter module exposes ``add_arguments(parser)`` (its own options) and ``run(args) -> report``;
only the module of the command given is imported. Bad input is one line on stderr and exit
status 2, as in the other entry points (``loftr.cli``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from loftr.data.prepare.report import format_report
from loftr.data.prepare.scene import SPLITS
from loftr.data.scene_info import OVERLAP_BINS
from loftr.errors import LoFTRError

# command -> (module, one-line description)
COMMANDS = {
    "colmap": (
        "loftr.data.prepare.colmap",
        "a COLMAP reconstruction (undistorted model, images and dense depth maps)",
    ),
    "rgbd": (
        "loftr.data.prepare.rgbd",
        "an RGB-D sequence (--format tum: the TUM RGB-D layout; --format folder: a plain one)",
    ),
}


def _bounded(kind: type, lo: float, hi: float | None = None, what: str = "") -> object:
    """An argparse type: ``kind`` in ``[lo, hi)`` (no upper bound when ``hi`` is None)."""

    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value < lo or (hi is not None and value >= hi):
            upper = f", below {hi}" if hi is not None else ""
            raise argparse.ArgumentTypeError(f"{text} must be at least {lo}{upper}{what}")
        return value

    return parse


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every converter takes (docs/prepare.md#the-command)."""
    group = parser.add_argument_group("prepared set (every converter)")
    group.add_argument(
        "--out", type=Path, required=True, help="the prepared set's folder (made if missing)"
    )
    group.add_argument(
        "--name",
        default=None,
        help="the scene's name, one folder name (default: the converter's, from its input)",
    )
    group.add_argument(
        "--split", choices=SPLITS, default="train", help="the list the scene joins (%(default)s)"
    )
    lowest, highest = OVERLAP_BINS[0][0], OVERLAP_BINS[-1][1]
    group.add_argument(
        "--min-overlap",
        type=_bounded(float, lowest, highest, " (the range of the overlap bins)"),
        default=lowest,
        help=f"lowest pair overlap kept, in [{lowest}, {highest}) (default: %(default)s)",
    )
    group.add_argument(
        "--max-pairs-per-image",
        type=_bounded(int, 1),
        default=None,
        metavar="N",
        help="most pairs one image takes part in (default: no cap; docs/prepare.md#pairs)",
    )
    group.add_argument(
        "--max-size",
        type=_bounded(int, 1),
        default=1600,
        metavar="PX",
        help="images with a longer side above this are downscaled to it (default: %(default)s)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its options."""
    parser = argparse.ArgumentParser(
        prog="python -m loftr.data.prepare",
        description="Convert a scene of one's own data into a prepared set (MegaDepth format) "
        "that dataset=custom trains on (docs/prepare.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{colmap,rgbd}")
    for name, (module, description) in COMMANDS.items():
        sub = commands.add_parser(name, help=description, description=description)
        if name == command:
            add_common_arguments(sub)
            importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m loftr.data.prepare`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        report = importlib.import_module(COMMANDS[args.command][0]).run(args)
    except LoFTRError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"report: {args.out / 'reports' / (report['name'] + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
