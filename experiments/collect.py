"""`python -m experiments.collect RUN_OR_MULTIRUN_DIR [...]`: a results table beside the paper's.

Reads every run under the given directories (a directory with a `metrics.json`, as training
runs, sweep jobs and `loftr.evaluate` write them, read with `loftr.evaluation.export`) and writes
`results.md` and `results.csv`: one row per variant and validation (or test) set with our
AUC@5/10/20 (homography sets: corner-error AUC@3/5/10 over all pairs, then per kind, followed by
the paper's Table 1, docs/hpatches.md), the paper's numbers that fit the run
(experiments/paper_numbers.yaml) and the row's
evaluation protocol (`loftr.evaluation.protocol.Protocol`, as the run recorded it). Rows are
grouped by protocol, and a comparison never mixes two protocols (docs/differences.md#7): each
group is its own table. Whether the paper's number was made with the same protocol is said in
every row. When W&B is online (logged in, or
WANDB_MODE=online) the tables are also logged to a `collect` run.

    python -m experiments.collect multirun/ablation_table6/2026-01-01_00-00-00
    python -m experiments.collect outputs/indoor_ds outputs/eval_indoor_ds --which best --out res/
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from loftr.errors import ConfigError, DataError
from loftr.evaluation.export import FILE_NAME, hydra_file, read_metrics, set_results
from loftr.evaluation.protocol import Protocol, check_comparable

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
THRESHOLDS = (5, 10, 20)
#: The corner-error AUC thresholds (px) of homography protocols (the paper's Table 1).
HOMOGRAPHY_THRESHOLDS = (3, 5, 10)
PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(Protocol))


def thresholds_of(protocol: Protocol) -> tuple[int, int, int]:
    """The AUC thresholds of a protocol's numbers: degrees of pose, or pixels of corner error."""
    return HOMOGRAPHY_THRESHOLDS if protocol.homography else THRESHOLDS


@dataclasses.dataclass(frozen=True)
class PaperEntry:
    """One published result (experiments/paper_numbers.yaml).

    Attributes:
        table: the entry's table id (`tab2`, `tab3`, `tab6`, `issue41`).
        label: a readable name with its table.
        when: the run facts it is for (`family`, `matcher`, `variant`); None for a row of
            another method, printed with its table (Table 1) but never beside a run.
        auc: AUC@5, @10, @20 in percent (homography protocols: AUC@3, @5, @10).
        protocol: the paper protocol's fields (None where unrecorded) plus `aliases`.
        protocol_name: its key in the file.
        source: the source's description.
    """

    table: str
    label: str
    when: dict[str, str] | None
    auc: tuple[float, float, float]
    protocol: dict[str, Any]
    protocol_name: str
    source: str


@dataclasses.dataclass
class ResultRow:
    """Our numbers for one run on one evaluation set.

    Attributes:
        run_dir: the run's directory.
        kind: `train` (validation metrics of a training run) or `eval` (`loftr.evaluate`).
        name: the run's `name`.
        label: what sets this run apart from the others collected (its differing overrides).
        facts: `family`, `matcher`, `variant`, `supervision`, `model`, `dataset`,
            `true_batch_size`, `paper_table` of the run's config.
        protocol: how the numbers were made.
        auc: AUC@5, @10, @20 as fractions (homography protocols: AUC@3, @5, @10).
        precision: `prec@<thr>` as a fraction, or None.
        epoch: the validation epoch (None for evaluations).
        step: the optimizer step (None for evaluations).
        paper: the fitting published entry, or None.
        paper_agreement: `same` or `differs: ...`, comparing the two protocols.
        subset: the pairs of a homography set the row is about (`illumination`, `viewpoint`),
            None for all of them.
    """

    run_dir: Path
    kind: str
    name: str
    label: str
    facts: dict[str, Any]
    protocol: Protocol
    auc: tuple[float, float, float]
    precision: float | None
    epoch: int | None = None
    step: int | None = None
    paper: PaperEntry | None = None
    paper_agreement: str = ""
    subset: str | None = None


# --------------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------------


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory (one holding `metrics.json`) at or under the given paths, sorted.

    Raises:
        DataError: a path does not exist or holds no run.
    """
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise DataError(f"{path} does not exist; pass a run or multirun directory")
        found = [path] if (path / "metrics.json").is_file() else []
        found = found or sorted(p.parent for p in path.rglob("metrics.json"))
        if not found:
            raise DataError(
                f"{path} holds no metrics.json; pass a run directory (outputs/<name>/<time>) or "
                "a multirun directory (multirun/<name>/<time>) of `python -m loftr.train`"
            )
        runs.extend(found)
    return sorted(dict.fromkeys(runs), key=_job_order)


def _job_order(run_dir: Path) -> tuple[str, int, str]:
    """Sweep jobs `<num>_<overrides>` in job order, other directories by name."""
    head = run_dir.name.split("_", 1)[0]
    return (str(run_dir.parent), int(head) if head.isdigit() else -1, run_dir.name)


def _facts(config: Mapping[str, Any], choices: Mapping[str, Any], source: str) -> dict[str, Any]:
    match_coarse = config["model"]["match_coarse"]
    return {
        "family": source.lower(),
        "matcher": match_coarse["match_type"],
        "supervision": "sparse" if match_coarse.get("sparse_spvs") else "dense",
        "variant": str(config["model"].get("variant") or "full"),
        "model": choices.get("model"),
        "dataset": config["dataset"].get("name"),
        "paper_table": config.get("paper_table"),
    }


def load_run(
    run_dir: str | Path, which: str = "last", root: str | Path | None = None
) -> list[ResultRow]:
    """The rows of one run: one per validation set (training) or one (evaluation).

    Args:
        run_dir: a directory with `metrics.json` and `.hydra/`.
        which: `last` or `best` validation of a training run (the checkpoint monitor's best).
        root: where relative dataset paths start, for a `metrics.json` written before the
            schema had a version (its protocols are rebuilt); default the run's working
            directory as Hydra recorded it.

    Returns:
        The rows, without paper numbers and labels; empty when the run has not validated yet.
    """
    if which not in ("last", "best"):
        raise ConfigError(f"which={which!r}: use 'last' or 'best'")
    run_dir = Path(run_dir)
    document = read_metrics(run_dir / FILE_NAME, root=root)
    config = hydra_file(run_dir, "config")
    choices = hydra_file(run_dir, "hydra")["hydra"]["runtime"]["choices"]
    name = str(document.get("name", config.get("name")))
    if document["kind"] == "eval":  # `python -m loftr.evaluate`
        source, true_batch = config["dataset"]["test_data_source"], None
    else:
        source = config["dataset"]["trainval_data_source"]
        true_batch = document.get("config", {}).get("true_batch_size")
    facts = {**_facts(config, choices, source), "true_batch_size": true_batch}
    rows = []
    for result in set_results(document, which):
        # a homography evaluation's kinds (illumination, viewpoint) follow its row over all pairs
        parts = {None: result.metrics, **document.get("subsets", {})}
        for subset, values in parts.items():
            rows.append(
                ResultRow(
                    run_dir=run_dir,
                    kind=document["kind"],
                    name=name,
                    label=name,
                    facts=facts,
                    protocol=result.protocol,
                    auc=tuple(float(values[f"auc@{t}"]) for t in thresholds_of(result.protocol)),
                    precision=_precision(values),
                    epoch=result.epoch,
                    step=result.step,
                    subset=subset,
                )
            )
    return rows


def _precision(values: Mapping[str, Any]) -> float | None:
    keys = [k for k in values if k.startswith("prec@")]
    return float(values[keys[0]]) if keys else None


def label_runs(rows: list[ResultRow]) -> None:
    """Label each row by the overrides that set its run apart from the other runs collected.

    A sweep's jobs become `model=loftr_conv`, `matcher=ot,supervision=sparse`, ...; a lone run,
    or runs with identical overrides, keep their `name`.
    """
    overrides = {}
    for row in rows:
        recorded = (row.run_dir / ".hydra" / "overrides.yaml").is_file()
        overrides[row.run_dir] = (hydra_file(row.run_dir, "overrides") or []) if recorded else []
    common = set.intersection(*(set(v) for v in overrides.values())) if overrides else set()
    for row in rows:
        own = [o for o in overrides[row.run_dir] if o not in common]
        row.label = ",".join(sorted(own)) if own else row.name


# --------------------------------------------------------------------------------------------
# The paper's numbers
# --------------------------------------------------------------------------------------------


def load_paper_numbers(path: str | Path = PAPER_NUMBERS) -> list[PaperEntry]:
    """The published entries of `path`, each with its protocol and source resolved.

    Raises:
        ConfigError: an entry names an unknown protocol or source, or has not three AUCs.
    """
    content = yaml.safe_load(Path(path).read_text())
    protocols, sources = content["protocols"], content["sources"]
    entries = []
    for i, raw in enumerate(content["entries"]):
        if raw["protocol"] not in protocols:
            raise ConfigError(f"{path}: entries[{i}].protocol={raw['protocol']!r} is not defined")
        if raw["source"] not in sources:
            raise ConfigError(f"{path}: entries[{i}].source={raw['source']!r} is not defined")
        if len(raw["auc"]) != len(THRESHOLDS):
            raise ConfigError(f"{path}: entries[{i}].auc needs {len(THRESHOLDS)} values")
        entries.append(
            PaperEntry(
                table=raw["table"],
                label=raw["label"],
                when=None if raw["when"] is None else dict(raw["when"]),
                auc=tuple(float(v) for v in raw["auc"]),
                protocol=dict(protocols[raw["protocol"]]),
                protocol_name=raw["protocol"],
                source=sources[raw["source"]],
            )
        )
    return entries


def paper_entry_for(facts: Mapping[str, Any], entries: Sequence[PaperEntry]) -> PaperEntry | None:
    """The published entry that fits a run: every `when` fact equal, the run's `paper_table`
    preferred, else the first fitting entry of the file."""
    fitting = [
        e
        for e in entries
        if e.when is not None and all(facts.get(k) == v for k, v in e.when.items())
    ]
    preferred = [e for e in fitting if e.table == facts.get("paper_table")]
    return (preferred or fitting or [None])[0]


def protocol_agreement(ours: Protocol, paper: Mapping[str, Any]) -> str:
    """`same` when every field the paper records equals ours, else `differs: <fields>`.

    The test set matches by name or alias; fields the paper does not record (null) are listed
    as unverified after `same`, unless ours has none either (a pose protocol's homography
    fields).
    """
    mine = {**dict.fromkeys(PROTOCOL_FIELDS), **ours.to_dict()}
    differing, unverified = [], []
    for name in PROTOCOL_FIELDS:
        theirs = paper.get(name)
        if theirs is None and mine[name] is None:
            continue
        if theirs is None:
            unverified.append(name)
        elif name == "test_set":
            if mine[name] not in (theirs, *paper.get("aliases", [])):
                differing.append(f"test_set {mine[name]} vs {theirs}")
        elif _normal(mine[name]) != _normal(theirs):
            differing.append(f"{name} {_show(mine[name])} vs {_show(theirs)}")
    if differing:
        return "differs: " + "; ".join(differing)
    return "same" + (f" ({', '.join(unverified)} not recorded by the paper)" if unverified else "")


def _normal(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(value)
    return float(value) if isinstance(value, int | float) else value


def _show(value: Any) -> str:
    return "x".join(str(v) for v in value) if isinstance(value, list | tuple) else f"{value}"


def attach_paper(rows: Iterable[ResultRow], entries: Sequence[PaperEntry]) -> None:
    """Put the fitting published entry and the protocol agreement on each row."""
    for row in rows:
        row.paper = paper_entry_for(row.facts, entries)
        row.paper_agreement = (
            protocol_agreement(row.protocol, row.paper.protocol) if row.paper else ""
        )


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def columns_of(thresholds: Sequence[int]) -> tuple[str, ...]:
    """The table columns of numbers at ``thresholds``."""
    return (
        "run",
        "variant",
        "matcher",
        "supervision",
        "true batch",
        "epoch",
        *(f"AUC@{t}" for t in thresholds),
        "precision",
        *(f"paper AUC@{t}" for t in thresholds),
        "paper entry",
        "paper protocol",
        "protocol",
    )


COLUMNS = columns_of(THRESHOLDS)
#: The columns of a homography protocol's table (corner-error AUC at 3/5/10 px).
HOMOGRAPHY_COLUMNS = columns_of(HOMOGRAPHY_THRESHOLDS)


def group_by_protocol(rows: Iterable[ResultRow]) -> list[list[ResultRow]]:
    """Rows split by protocol, groups in order of first appearance."""
    groups: dict[str, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(row.protocol.key(), []).append(row)
    return list(groups.values())


def comparison_table(rows: Sequence[ResultRow]) -> list[dict[str, Any]]:
    """The records of one comparison: rows made with one protocol, AUCs in percent.

    Raises:
        ConfigError: two rows were made with different protocols (naming the fields), since
            their numbers cannot be compared (`loftr.evaluation.protocol.check_comparable`).
    """
    for row in rows[1:]:
        try:
            check_comparable(rows[0].protocol, row.protocol)
        except ConfigError as exc:
            raise ConfigError(
                f"runs {rows[0].run_dir} and {row.run_dir} cannot be in one comparison: {exc}"
            ) from None
    thresholds = thresholds_of(rows[0].protocol)
    records = []
    for row in rows:
        paper = row.paper.auc if row.paper and row.subset is None else (None, None, None)
        records.append(
            {
                "run": row.label + (f" [{row.subset}]" if row.subset else ""),
                "variant": row.facts["variant"],
                "matcher": {"dual_softmax": "ds", "sinkhorn": "ot"}.get(
                    row.facts["matcher"], row.facts["matcher"]
                ),
                "supervision": row.facts["supervision"],
                "true batch": row.facts.get("true_batch_size"),
                "epoch": row.epoch,
                **{f"AUC@{t}": 100.0 * v for t, v in zip(thresholds, row.auc, strict=True)},
                "precision": None if row.precision is None else 100.0 * row.precision,
                **{f"paper AUC@{t}": v for t, v in zip(thresholds, paper, strict=True)},
                "paper entry": row.paper.label if row.paper and row.subset is None else "",
                "paper protocol": row.paper_agreement if row.subset is None else "",
                "protocol": row.protocol.key(),
            }
        )
    return records


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")


def group_columns(rows: Sequence[ResultRow]) -> tuple[str, ...]:
    """The columns of one comparison's table."""
    return HOMOGRAPHY_COLUMNS if rows[0].protocol.homography else COLUMNS


def paper_table_rows(rows: Sequence[ResultRow], entries: Sequence[PaperEntry]) -> list[PaperEntry]:
    """The published rows printed with a homography comparison (Table 1 for HPatches): every
    entry made with the protocol of the entry beside one of its rows, other methods included."""
    if not rows[0].protocol.homography:
        return []
    names = {row.paper.protocol_name for row in rows if row.paper is not None}
    return [e for e in entries if e.protocol_name in names]


def _write_table(out: io.StringIO, columns: Sequence[str], records: Sequence[Mapping]) -> None:
    out.write("| " + " | ".join(columns) + " |\n")
    out.write("|" + "---|" * len(columns) + "\n")
    for record in records:
        out.write("| " + " | ".join(_cell(record[c]) for c in columns) + " |\n")


def render_markdown(
    groups: Sequence[Sequence[ResultRow]],
    which: str,
    sources: Sequence[str],
    entries: Sequence[PaperEntry] = (),
) -> str:
    """The markdown report: one table per protocol (a homography protocol's followed by the
    paper's table of its test set, Table 1 for HPatches), then the paper's sources."""
    out = io.StringIO()
    out.write("# Results\n\n")
    out.write(
        f"Pose AUC in % ({which} validation of training runs; test metrics of evaluations), "
        "beside the published numbers that fit each run (experiments/paper_numbers.yaml); "
        "homography protocols give the AUC of the corner error at 3/5/10 px. "
        "Each table holds the rows of one evaluation protocol: numbers in different tables are "
        "not comparable. `paper protocol` says whether the published number was made with "
        "this row's protocol.\n"
    )
    for i, rows in enumerate(groups, 1):
        out.write(f"\n## Protocol {i}: `{rows[0].protocol.key()}`\n\n")
        _write_table(out, group_columns(rows), comparison_table(rows))
        published = paper_table_rows(rows, entries)
        if published:
            out.write(f"\nThe paper's table ({published[0].table}, AUC in %):\n\n")
            columns = ("method", *(f"AUC@{t}" for t in HOMOGRAPHY_THRESHOLDS), "paper protocol")
            records = [
                {
                    "method": e.label,
                    **dict(zip(columns[1:4], e.auc, strict=True)),
                    "paper protocol": protocol_agreement(rows[0].protocol, e.protocol),
                }
                for e in published
            ]
            _write_table(out, columns, records)
    out.write("\n## Sources\n\n")
    for source in sources:
        out.write(f"- {source}\n")
    return out.getvalue()


def write_csv(groups: Sequence[Sequence[ResultRow]], path: Path) -> None:
    """One CSV line per row, with its comparison group (one per protocol) and run directory;
    with homography protocols among the groups the columns hold every threshold of both."""
    columns = list(COLUMNS)
    for extra in (c for rows in groups for c in group_columns(rows) if c not in columns):
        columns.insert(columns.index(extra.replace("@3", "@5")), extra)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["comparison", *columns, "run_dir"])
        for i, rows in enumerate(groups, 1):
            for row, record in zip(rows, comparison_table(rows), strict=True):
                cells = ["" if record.get(c) is None else record[c] for c in columns]
                writer.writerow([i, *cells, str(row.run_dir)])


# --------------------------------------------------------------------------------------------
# W&B
# --------------------------------------------------------------------------------------------


def log_to_wandb(
    groups: Sequence[Sequence[ResultRow]],
    project: str,
    entity: str | None = None,
    mode: str = "online",
    directory: str | Path | None = None,
) -> str:
    """Log one W&B table per protocol (`results/protocol_<i>`) to a new `collect` run.

    Returns:
        The W&B run's id.
    """
    import wandb

    run = wandb.init(
        project=project,
        entity=entity,
        job_type="collect",
        mode=mode,
        dir=str(directory) if directory is not None else None,
        config={"protocols": [rows[0].protocol.key() for rows in groups]},
    )
    try:
        for i, rows in enumerate(groups, 1):
            records, columns = comparison_table(rows), group_columns(rows)
            table = wandb.Table(
                columns=list(columns),
                data=[["" if r[c] is None else r[c] for c in columns] for r in records],
            )
            run.log({f"results/protocol_{i}": table})
        return run.id
    finally:
        run.finish()


def _wandb_target(rows: Sequence[ResultRow]) -> tuple[str, str | None]:
    config = hydra_file(rows[0].run_dir, "config")
    logger = config.get("logger", {})
    return logger.get("project") or "loftr", logger.get("entity")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def collect(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    which: str = "last",
    paper_numbers: str | Path = PAPER_NUMBERS,
    root: str | Path | None = None,
    wandb_mode: str | None = "auto",
) -> dict[str, Any]:
    """Collect runs into `results.md` and `results.csv` under `out_dir` (default: the first
    path); log to W&B when `wandb_mode` is `auto` and W&B is online, or when it is a mode.

    Returns:
        `rows`, `groups` (rows per protocol), `markdown`, `csv` (paths), `skipped` (run
        directories without a validation yet) and `wandb_run` (an id, or None).
    """
    run_dirs = find_run_dirs(paths)
    rows, skipped = [], []
    for run_dir in run_dirs:
        found = load_run(run_dir, which=which, root=root)
        rows.extend(found)
        if not found:
            skipped.append(run_dir)
    if not rows:
        raise DataError(
            f"none of the {len(run_dirs)} runs under {list(map(str, paths))} has validated yet"
        )
    label_runs(rows)
    entries = load_paper_numbers(paper_numbers)
    attach_paper(rows, entries)
    groups = group_by_protocol(rows)
    shown = {id(e) for rows in groups for e in paper_table_rows(rows, entries)}
    sources = sorted(
        {e.source for e in entries if id(e) in shown or any(r.paper is e for r in rows)}
    )

    out = Path(out_dir) if out_dir is not None else Path(paths[0])
    out.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(groups, which, sources, entries)
    if skipped:
        markdown += "\nRuns without a validation yet: " + ", ".join(map(str, skipped)) + "\n"
    (out / "results.md").write_text(markdown)
    write_csv(groups, out / "results.csv")

    wandb_run = None
    mode = wandb_mode
    if mode == "auto":
        from loftr.lightning.loggers import wandb_mode as resolve_mode  # imports Lightning: lazily

        mode = "online" if resolve_mode(None) == "online" else None
    if mode and mode != "disabled":
        project, entity = _wandb_target(rows)
        wandb_run = log_to_wandb(groups, project, entity, mode=mode, directory=out)
    return {
        "rows": rows,
        "groups": groups,
        "markdown": out / "results.md",
        "csv": out / "results.csv",
        "skipped": skipped,
        "wandb_run": wandb_run,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.collect",
        description="Collect runs into a results table beside the paper's numbers.",
    )
    parser.add_argument("paths", nargs="+", help="run or multirun directories")
    parser.add_argument("--out", help="where results.md and results.csv go (default: first path)")
    parser.add_argument(
        "--which",
        choices=("last", "best"),
        default="last",
        help="the last validation, or the best by the checkpoint monitor",
    )
    parser.add_argument("--paper", default=str(PAPER_NUMBERS), help="the paper numbers file")
    parser.add_argument(
        "--root",
        help="where relative dataset paths start, for metrics.json files without a "
        "schema_version (default: each run's cwd)",
    )
    parser.add_argument(
        "--wandb",
        choices=("auto", "online", "offline", "off"),
        default="auto",
        help="log the tables to W&B: when online (auto), always, or never",
    )
    args = parser.parse_args(argv)
    try:
        result = collect(
            args.paths,
            out_dir=args.out,
            which=args.which,
            paper_numbers=args.paper,
            root=args.root,
            wandb_mode=None if args.wandb == "off" else args.wandb,
        )
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["markdown"].read_text())
    print(f"wrote {result['markdown']} and {result['csv']}")
    if result["wandb_run"]:
        print(f"logged to W&B run {result['wandb_run']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
