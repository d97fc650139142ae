"""`python -m experiments.parameters [MODEL ...]`: parameter counts of the conf/model variants.

Prints a markdown table (the one in experiments/README.md) of trainable parameters per part, each
model composed as `python -m loftr.train model=<name> matcher=ot` would build it (OT adds the
dustbin score to the total, docs/original.md#state-dict).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir

import loftr.config  # noqa: F401  (registers the schemas and resolvers)
from loftr.model import parameter_counts
from loftr.model.config import variant_name

CONF = Path(__file__).resolve().parents[1] / "conf"
PARTS = ("backbone", "loftr_coarse", "fine_preprocess", "loftr_fine", "total")


def model_names() -> list[str]:
    """The options of the `model` config group, the paper model first."""
    names = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
    return sorted(names, key=lambda n: n != "loftr")


def parameter_table(names: list[str] | None = None) -> str:
    """The markdown table of `parameter_counts` for each `model=` option in `names`."""
    lines = [
        "| model | variant | " + " | ".join(PARTS) + " |",
        "|---|---|" + "---:|" * len(PARTS),
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in names or model_names():
            cfg = compose(config_name="train", overrides=[f"model={name}", "matcher=ot"])
            counts = parameter_counts(cfg.model)
            cells = " | ".join(f"{counts[p]:,}" for p in PARTS)
            lines.append(f"| `model={name}` | {variant_name(cfg.model)} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model= options (default: all)")
    args = parser.parse_args(argv)
    print(parameter_table(args.models or None))


if __name__ == "__main__":
    main()
