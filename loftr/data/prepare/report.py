"""The report of a prepared scene as a short table for the terminal (docs/prepare.md#the-report).

:meth:`loftr.data.prepare.scene.SceneWriter.finish` builds the report and writes it as JSON;
the command (``loftr.data.prepare.__main__``) prints it with :func:`format_report`.
"""

from __future__ import annotations

from typing import Any

from loftr.data.scene_info import OVERLAP_BINS


def format_report(report: dict[str, Any]) -> str:
    """The report as a short table for the terminal."""
    coverage = report["depth_coverage"]
    bins = ", ".join(f"{k}: {v}" for k, v in report["pairs_per_bin"].items())
    refused = ", ".join(f"{reason}: {n}" for reason, n in report["refused"].items()) or "none"
    rows = [
        ("scene", f"{report['name']} ({report['split']}, from {report['source']})"),
        ("images", str(report["images"])),
        ("refused", refused),
        ("pairs", f"{report['pairs_written']} written of {report['pairs_considered']} considered"),
        ("per bin", bins),
        (
            "left out",
            f"{report['below_min_overlap']} below min overlap, {report['above_max_overlap']} "
            f"above {OVERLAP_BINS[-1][1]}, {report['over_max_pairs_per_image']} over the "
            "per-image cap",
        ),
        (
            "depth",
            f"{coverage['mean']:.1%} of pixels on average (min {coverage['min']:.1%}, max "
            f"{coverage['max']:.1%})",
        ),
        ("seconds", f"{report['seconds']:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
