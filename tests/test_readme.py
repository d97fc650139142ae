"""The README's config-group table lists exactly the options in `conf/`, defaults first."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def readme_groups() -> dict[str, list[str]]:
    """`{group: [option, ...]}` from the README table; `(none)`-style entries are dropped."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| group | options") :].split("\n\n")[0]
    groups = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        groups[cells[0].strip("`")] = re.findall(r"`([^`]+)`", cells[1])
    return groups


def conf_groups() -> dict[str, set[str]]:
    """Every config group folder under `conf/` with its options."""
    groups = {}
    for path in (ROOT / "conf").rglob("*.yaml"):
        group = path.parent.relative_to(ROOT / "conf").as_posix()
        if group != ".":
            groups.setdefault(group, set()).add(path.stem)
    return groups


def train_defaults() -> dict[str, str | None]:
    defaults = yaml.safe_load((ROOT / "conf" / "train.yaml").read_text())["defaults"]
    return {k: v for entry in defaults if isinstance(entry, dict) for k, v in entry.items()}


def test_readme_group_table_matches_conf():
    listed, present = readme_groups(), conf_groups()
    assert set(listed) == set(present), "README groups differ from conf/"
    for group, options in listed.items():
        assert len(options) == len(set(options)), f"{group}: an option listed twice"
        assert set(options) == present[group], f"{group}: README {options} vs conf {present[group]}"


def test_readme_lists_each_default_first():
    listed = readme_groups()
    for group, default in train_defaults().items():
        if default is not None:
            assert listed[group][0] == default, f"{group}: the default {default} is not first"
