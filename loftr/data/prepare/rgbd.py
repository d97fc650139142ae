"""RGB-D sequences become a prepared scene: ``python -m loftr.data.prepare rgbd``
(docs/prepare.md#rgb-d-sequences).

This module is the command: its options, their checks and the conversion loop. The two layouts
(``--format tum``: the TUM RGB-D benchmark's folders; ``--format folder``: a plain one) are parsed
by ``loftr.data.prepare.rgbd_layouts``; what both share after parsing (reading colour and depth,
undistortion, the keyframe rule, the pair scores by depth reprojection) is in
``loftr.data.prepare.rgbd_frames``; the scene is written through
``loftr.data.prepare.scene.SceneWriter``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loftr.data.io import check_dir
from loftr.data.prepare.rgbd_frames import (
    KeptFrame,
    KeyframeRule,
    Undistorter,
    check_sizes,
    prepare_frame,
    score_pairs,
)
from loftr.data.prepare.rgbd_layouts import intrinsics_matrix, read_folder, read_tum
from loftr.data.prepare.scene import SceneWriter
from loftr.errors import ConfigError

FORMATS = ("tum", "folder")
#: Depth units per metre of each layout's 16-bit PNGs (TUM: 5000; folder: millimetres).
DEFAULT_DEPTH_SCALE = {"tum": 5000.0, "folder": 1000.0}
#: TUM's Freiburg 1 and 2 cameras have noticeable lens distortion: their folders are refused
#: without --distortion (docs/prepare.md#lens-distortion).
DISTORTED_TUM_PREFIXES = ("rgbd_dataset_freiburg1", "rgbd_dataset_freiburg2")
CALIBRATION_SOURCE = (
    "the TUM RGB-D camera-calibration page (the dataset's 'File Formats' page, section "
    "'Intrinsic Camera Calibration of the Kinect')"
)


# -- option strings ---------------------------------------------------------------------------


def parse_floats(text: str, option: str, counts: Sequence[int]) -> np.ndarray:
    """The comma-separated numbers of ``option``'s value, finite and ``counts`` many.

    Raises:
        ConfigError: not numbers, not finite, or a count not in ``counts``.
    """
    try:
        values = np.array([float(v) for v in str(text).split(",")], np.float64)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a comma-separated list of numbers") from None
    if len(values) not in counts or not np.isfinite(values).all():
        want = " or ".join(str(c) for c in counts)
        raise ConfigError(f"{option} {text!r}: expected {want} finite comma-separated numbers")
    return values


def parse_intrinsics(text: str) -> np.ndarray:
    """``--intrinsics fx,fy,cx,cy`` (pixels, pixel centres at integers) as a 3x3 matrix."""
    return intrinsics_matrix(*parse_floats(text, "--intrinsics", (4,)), what="--intrinsics")


def parse_distortion(text: str | None) -> np.ndarray | None:
    """``--distortion k1,k2,p1,p2[,k3]`` (OpenCV's order) as an array, or None."""
    if text is None:
        return None
    return parse_floats(text, "--distortion", (4, 5))


def parse_baseline(text: str) -> tuple[float, float]:
    """``--keyframe-baseline METRES,DEGREES``: both positive."""
    metres, degrees = parse_floats(text, "--keyframe-baseline", (2,))
    if metres <= 0 or degrees <= 0:
        raise ConfigError(f"--keyframe-baseline {text!r}: metres and degrees must be positive")
    return float(metres), float(degrees)


# -- the command ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m loftr.data.prepare rgbd`` beside the common ones."""
    parser.add_argument("--format", choices=FORMATS, default="tum", help="layout (default: tum)")
    parser.add_argument("--root", type=Path, required=True, help="the sequence's folder")
    parser.add_argument(
        "--intrinsics",
        metavar="FX,FY,CX,CY",
        help="pinhole intrinsics in pixels, pixel centres at integers (tum: required; folder: "
        "replaces K.txt)",
    )
    parser.add_argument(
        "--distortion",
        metavar="K1,K2,P1,P2[,K3]",
        help="lens distortion in OpenCV's order; images and depth are undistorted with it "
        "(a negative first value needs the = form: --distortion=-0.26,0.9,0,0,-1.2)",
    )
    parser.add_argument(
        "--depth-scale",
        type=float,
        help="16-bit depth units per metre (default: 5000 for tum, 1000 for folder)",
    )
    parser.add_argument(
        "--max-dt",
        type=float,
        default=0.02,
        help="tum: seconds within which rgb, depth and pose associate (default: %(default)s)",
    )
    parser.add_argument(
        "--min-depth-fraction",
        type=float,
        default=0.1,
        help="refuse frames with valid depth on a smaller share of pixels (default: %(default)s)",
    )
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument(
        "--keyframe-overlap",
        type=float,
        default=0.7,
        help="a new keyframe when the overlap with the last one drops below this "
        "(default: %(default)s)",
    )
    rule.add_argument(
        "--keyframe-baseline",
        metavar="METRES,DEGREES",
        help="a new keyframe when the camera moved or turned this much from the last one",
    )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Every option of the command checked, before anything is read or written."""
    root = check_dir(args.root, f"--root ({args.format} sequence)")
    if args.intrinsics is None and args.format == "tum":
        raise ConfigError("--intrinsics fx,fy,cx,cy is required with --format tum")
    K = parse_intrinsics(args.intrinsics) if args.intrinsics is not None else None
    distortion = parse_distortion(args.distortion)
    folder_name = root.resolve().name
    if (
        args.format == "tum"
        and distortion is None
        and folder_name.startswith(DISTORTED_TUM_PREFIXES)
    ):
        raise ConfigError(
            f"--root {root} is a TUM Freiburg 1/2 sequence, whose camera is distorted: pass "
            f"--distortion k1,k2,p1,p2,k3 (and --intrinsics) as published on {CALIBRATION_SOURCE}"
        )
    scale = DEFAULT_DEPTH_SCALE[args.format] if args.depth_scale is None else args.depth_scale
    if not (np.isfinite(scale) and scale > 0):
        raise ConfigError(f"--depth-scale {args.depth_scale} must be a positive number")
    if not (np.isfinite(args.max_dt) and args.max_dt >= 0):
        raise ConfigError(f"--max-dt {args.max_dt} must be a non-negative number of seconds")
    if not 0.0 <= args.min_depth_fraction <= 1.0:
        raise ConfigError(f"--min-depth-fraction {args.min_depth_fraction} must lie in [0, 1]")
    if args.keyframe_baseline is not None:
        rule = KeyframeRule(baseline=parse_baseline(args.keyframe_baseline))
    elif 0.0 <= args.keyframe_overlap <= 1.0:
        rule = KeyframeRule(overlap=args.keyframe_overlap)
    else:
        raise ConfigError(f"--keyframe-overlap {args.keyframe_overlap} must lie in [0, 1]")
    return dict(
        root=root,
        K=K,
        undistort=Undistorter(distortion) if distortion is not None else None,
        scale=float(scale),
        rule=rule,
        name=args.name or folder_name,
    )


def run(args: argparse.Namespace) -> dict:
    """Convert one RGB-D sequence (``add_arguments``' options and the common ones) and return
    the report. Every option, text file, file's existence and image size is checked before
    ``--out`` is touched."""
    opts = _options(args)
    if args.format == "tum":
        sequence = read_tum(opts["root"], opts["K"], args.max_dt)
    else:
        sequence = read_folder(opts["root"], opts["K"])
    check_sizes(sequence.frames)
    rule: KeyframeRule = opts["rule"]
    kept: list[tuple[int, KeptFrame]] = []
    skipped = 0
    source = f"rgbd ({args.format})"
    with SceneWriter(Path(args.out), opts["name"], args.split, source, args.max_size) as writer:
        for rel, reason in sequence.refused:
            writer.refuse(rel, reason)
        for frame in sequence.frames:
            prepared, share = prepare_frame(frame, opts["scale"], opts["undistort"], args.max_size)
            if share == 0.0:
                writer.refuse(frame.rel, "no valid depth")
                continue
            if share < args.min_depth_fraction:
                writer.refuse(frame.rel, "valid depth below --min-depth-fraction")
                continue
            entry = KeptFrame(prepared.depth, prepared.K, prepared.T_w2c)
            if kept and not rule.is_new(kept[-1][1], entry.depth, entry.K, entry.T_w2c):
                skipped += 1
                continue
            kept.append((writer.add_frame(prepared), entry))
        pairs = score_pairs(kept, args.min_overlap)
        extra = {
            "format": args.format,
            "root": str(opts["root"]),
            "frames_listed": len(sequence.frames) + len(sequence.refused),
            "keyframes": len(kept),
            "skipped_between_keyframes": skipped,
            "keyframe_rule": rule.describe(),
            "max_dt": args.max_dt,
            "depth_scale": opts["scale"],
            "undistorted": opts["undistort"] is not None,
        }
        return writer.finish(pairs, args.min_overlap, args.max_pairs_per_image, extra)
