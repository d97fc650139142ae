"""The package's shape: the import graph of `loftr` has no circle and no arrow that runs back up.

The graph is read from the source with `ast`, not by importing: every `import` and
`from ... import` of a module counts, at any depth (a function-level import is an arrow too), with
relative imports resolved. Layers, lowest first: the config's schema and resolvers
(`loftr.config`, which import no other room), the model and the data rooms, the training rooms
(`loftr.lightning`, `loftr.evaluation`) and the config's `validate` (which asks every room), the
entry points (train, evaluate, match and any `__main__`), which nothing imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "loftr"
MAX_LINES = 500
ENTRY_POINTS = {"loftr.train", "loftr.evaluate", "loftr.match"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's `__init__`), for every file of `loftr`."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The `loftr` module that `name` (a module or a name inside one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, source: str | None = None) -> set[str]:
    """The `loftr` modules `module` imports anywhere in its file (or in `source`, if given)."""
    path, is_package = MODULES[module]
    package = module if is_package else module.rpartition(".")[0]
    targets: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            targets.update(_owner(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from . import x`, `from ..y import z`
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:  # `from loftr.model import config` imports a module
                full = f"{origin}.{alias.name}"
                targets.add(full if full in MODULES else _owner(origin))
    return {t for t in targets if t is not None and t != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _reachable(start: str) -> dict[str, list[str]]:
    """Every module `start` imports, directly or through others, with one path to it."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        current = todo.pop()
        for target in sorted(GRAPH[current]):
            if target not in paths:
                paths[target] = [*paths[current], target]
                todo.append(target)
    del paths[start]
    return paths


def _cycle() -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the stack, "done" after
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def _in(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def _is_entry_point(module: str) -> bool:
    return module in ENTRY_POINTS or module.rpartition(".")[2] == "__main__"


def test_the_graph_sees_every_kind_of_import():
    """The reader finds module-level, function-level and relative imports (a self-check)."""
    assert "loftr.model.checkpoint" in GRAPH["loftr.model.loftr"]  # from loftr.model.x import y
    assert "loftr.model.loftr" in GRAPH["loftr.model"]  # the package file
    assert "loftr.losses" in GRAPH["loftr.config.validate"]  # a function-level import
    relative = "def f():\n    from . import fine\n    from ..errors import ConfigError\n"
    assert _imports("loftr.model.backbone", relative) == {"loftr.model.fine", "loftr.errors"}
    assert _imports("loftr.model", "from .config import model_config\n") == {"loftr.model.config"}


def test_no_import_circle():
    cycle = _cycle()
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


# (room, rooms it must never reach, directly or through another module)
FORBIDDEN = (
    (
        "loftr.model",
        (
            "loftr.data",
            "loftr.lightning",
            "loftr.evaluation",
            "loftr.losses",
            "loftr.config.validate",
        ),
    ),
    ("loftr.data", ("loftr.model", "loftr.lightning", "loftr.evaluation", "loftr.config.validate")),
)


@pytest.mark.parametrize(("room", "forbidden"), FORBIDDEN, ids=[room for room, _ in FORBIDDEN])
def test_lower_rooms_never_import_higher_ones(room, forbidden):
    """The model builds without data, training, evaluation or the loss rules; the data loads
    without the model, training or evaluation (entry points:
    `test_nothing_imports_an_entry_point`)."""
    wrong = []
    for module in sorted(m for m in GRAPH if _in(m, room)):
        for target, path in _reachable(module).items():
            if any(_in(target, f) for f in forbidden):
                wrong.append(" -> ".join(path))
    assert not wrong, f"{room} reaches a higher layer:\n" + "\n".join(wrong)


# the config's lowest layer: what every room may import, so it imports none of them
CONFIG_BASE = (
    "loftr.config",
    "loftr.config.schema",
    "loftr.config.resolvers",
    "loftr.config.command_line",
)
SHARED = ("loftr.errors",)


@pytest.mark.parametrize("module", CONFIG_BASE)
def test_the_config_schema_and_resolvers_import_no_other_room(module):
    wrong = [
        " -> ".join(path)
        for target, path in _reachable(module).items()
        if target not in (*CONFIG_BASE, *SHARED)
    ]
    assert not wrong, f"{module} reaches another room:\n" + "\n".join(wrong)


def test_nothing_imports_an_entry_point():
    wrong = [
        f"{module} -> {target}"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if _is_entry_point(target)
    ]
    assert not wrong, "entry points are imported by: " + ", ".join(wrong)


def _long_modules() -> dict[str, int]:
    lengths = {m: len(path.read_text().splitlines()) for m, (path, _) in MODULES.items()}
    return {m: n for m, n in sorted(lengths.items()) if n > MAX_LINES}


def test_no_module_over_500_lines():
    long = _long_modules()
    assert not long, f"modules over {MAX_LINES} lines: {long}"
