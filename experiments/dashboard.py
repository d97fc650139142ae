"""The W&B dashboard (a saved workspace) of the LoFTR runs, as code.

    python -m experiments.dashboard --dry-run                       # print it; no network
    python -m experiments.dashboard --entity ME --project loftr     # save it to W&B

Panels: training loss (total, coarse, fine) and LR curves, the OT dustbin score, the mean AUC
the checkpoint monitors, and per validation set its AUC@5/10/20, precision, validation losses,
match figures and per-pair table. Runs are grouped by matcher, supervision and model variant
(`model.match_coarse.match_type`, `model.match_coarse.sparse_spvs`, `model.variant`).

The definition is plain data (`Dashboard`); `--dry-run` prints it without touching the network
or needing anything beyond the standard library. Saving it needs the `wandb-workspaces`
package (`pip install wandb-workspaces`) and a W&B login.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[1] / "conf"

#: W&B run-config keys the runs are grouped by: matcher, supervision, model variant.
GROUP_BY = ("model.match_coarse.match_type", "model.match_coarse.sparse_spvs", "model.variant")

PANEL_KINDS = ("line", "bar", "media", "table")


@dataclasses.dataclass(frozen=True)
class Panel:
    """One panel.

    Attributes:
        kind: `line` (curves over steps), `bar` (last value per run group), `media` (logged
            images) or `table` (a logged W&B table).
        title: the panel's title.
        keys: the logged keys it shows (metric names, image keys or the table key).
    """

    kind: str
    title: str
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in PANEL_KINDS:
            raise ValueError(f"panel kind {self.kind!r}; use one of {PANEL_KINDS}")


@dataclasses.dataclass(frozen=True)
class Section:
    """A named, collapsible group of panels."""

    name: str
    panels: tuple[Panel, ...]


@dataclasses.dataclass(frozen=True)
class Dashboard:
    """The whole workspace: where it lives, how runs are grouped, and its sections."""

    name: str
    project: str
    entity: str | None
    group_by: tuple[str, ...]
    sections: tuple[Section, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def panel_keys(self) -> list[str]:
        """Every logged key some panel shows, in order."""
        return [key for s in self.sections for p in s.panels for key in p.keys]


def default_val_sets() -> list[str]:
    """The validation-set names the dataset configs give runs (the stems of
    `dataset.val_list_path`, as `LoFTRDataModule.val_set_names` names them), in config order."""
    import yaml

    names: list[str] = []
    for path in sorted((CONF / "dataset").glob("*.yaml")):
        value = _inherited_value(path, "val_list_path", yaml)
        for item in value if isinstance(value, list) else [value]:
            stem = Path(str(item)).stem if item else None
            if stem and stem not in names:
                names.append(stem)
    return names


def _inherited_value(path: Path, key: str, yaml: Any) -> Any:
    """`key` of a dataset config, following its `defaults` to the configs it extends."""
    content = yaml.safe_load(path.read_text()) or {}
    if key in content:
        return content[key]
    for parent in content.get("defaults", []):
        if isinstance(parent, str) and parent != "_self_":
            return _inherited_value(path.with_name(f"{parent}.yaml"), key, yaml)
    return None


def build_dashboard(
    project: str = "loftr",
    entity: str | None = None,
    val_sets: Sequence[str] | None = None,
    name: str = "LoFTR experiments",
) -> Dashboard:
    """The dashboard definition for runs of `python -m loftr.train` in `entity/project`.

    Args:
        project: the W&B project (`logger.project`).
        entity: the W&B entity (`logger.entity`), None for the default one.
        val_sets: validation-set names to give sections; default `default_val_sets()`.
        name: the saved workspace's name.
    """
    sets = list(val_sets) if val_sets is not None else default_val_sets()
    training = Section(
        "Training",
        (
            Panel("line", "loss", ("train/loss", "train/loss_c", "train/loss_f")),
            Panel("line", "learning rate", ("lr",)),
            Panel("line", "OT dustbin score", ("train/skh_bin_score",)),
        ),
    )
    summary = Section(
        "Validation: mean over sets",
        (
            # pose sets have auc@5/10/20, homography sets auc@3/5/10 (docs/homography.md#validation)
            Panel(
                "line", "AUC (mean over validation sets)", ("auc@3", "auc@5", "auc@10", "auc@20")
            ),
            Panel("bar", "AUC@10 by matcher, supervision and variant", ("auc@10",)),
        ),
    )
    per_set = tuple(
        Section(
            f"Validation: {s}",
            (
                Panel(
                    "line",
                    f"AUC ({s})",
                    tuple(f"metrics_{s}/auc@{t}" for t in (5, 10, 20)),
                ),
                # a homography set's precision is prec@3px (docs/homography.md#validation)
                Panel(
                    "line", f"precision ({s})", (f"metrics_{s}/prec@5e-04", f"metrics_{s}/prec@3px")
                ),
                Panel(
                    "line",
                    f"validation loss ({s})",
                    tuple(f"val_{s}/avg_{k}" for k in ("loss", "loss_c", "loss_f")),
                ),
                Panel("media", f"match figures ({s})", (f"val_match_{s}/evaluation",)),
                Panel("table", f"per-pair table ({s})", (f"val_pairs_{s}",)),
            ),
        )
        for s in sets
    )
    return Dashboard(name, project, entity, GROUP_BY, (training, summary, *per_set))


def render(dashboard: Dashboard) -> str:
    """A readable listing of the definition (what `--dry-run` prints), then it as JSON."""
    lines = [
        f"workspace : {dashboard.name}",
        f"project   : {dashboard.entity or '<default entity>'}/{dashboard.project}",
        f"group by  : {', '.join(dashboard.group_by)}",
    ]
    for section in dashboard.sections:
        lines.append(f"section {section.name}")
        for panel in section.panels:
            lines.append(f"  {panel.kind:<5} {panel.title}: {', '.join(panel.keys)}")
    return "\n".join(lines) + "\n\n" + json.dumps(dashboard.to_dict(), indent=2)


def to_workspace(dashboard: Dashboard) -> Any:
    """The `wandb_workspaces.workspaces.Workspace` of the definition (not yet saved).

    Raises:
        ImportError: `wandb-workspaces` is not installed, saying how to install it.
    """
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError:
        raise ImportError(
            "saving the dashboard needs the wandb-workspaces package: "
            "`pip install wandb-workspaces` (or print it with --dry-run, which needs nothing)"
        ) from None

    def panel(p: Panel) -> Any:
        if p.kind == "line":
            return wr.LinePlot(title=p.title, x="Step", y=list(p.keys))
        if p.kind == "bar":
            return wr.BarPlot(title=p.title, metrics=list(p.keys))
        if p.kind == "media":
            return wr.MediaBrowser(title=p.title, media_keys=list(p.keys))
        return wr.WeavePanelSummaryTable(table_name=p.keys[0])

    return ws.Workspace(
        entity=dashboard.entity or "",
        project=dashboard.project,
        name=dashboard.name,
        sections=[
            ws.Section(name=s.name, panels=[panel(p) for p in s.panels], is_open=True)
            for s in dashboard.sections
        ],
        runset_settings=ws.RunsetSettings(groupby=[ws.Config(k) for k in dashboard.group_by]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.dashboard",
        description="Print (--dry-run) or save the W&B workspace of the LoFTR runs.",
    )
    parser.add_argument("--project", default="loftr", help="W&B project (logger.project)")
    parser.add_argument("--entity", default=None, help="W&B entity (logger.entity)")
    parser.add_argument("--name", default="LoFTR experiments", help="workspace name")
    parser.add_argument(
        "--val-set",
        action="append",
        dest="val_sets",
        help="a validation-set name (repeatable); default: those of conf/dataset",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the definition only")
    args = parser.parse_args(argv)
    dashboard = build_dashboard(args.project, args.entity, args.val_sets, args.name)
    if args.dry_run:
        print(render(dashboard))
        return 0
    if not args.entity:
        print("error: saving needs --entity (your W&B user or team)", file=sys.stderr)
        return 2
    try:
        workspace = to_workspace(dashboard)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    saved = workspace.save()
    print(f"saved workspace {dashboard.name}: {getattr(saved, 'url', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
