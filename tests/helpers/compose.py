"""Compose the project's Hydra configs from `conf/`, as the entry points do."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from loftr.config import check_additions  # the package registers the schemas and resolvers
from tests.helpers import ROOT

CONF = ROOT / "conf"


def compose_cfg(config_name: str, *overrides: str, hydra_node: bool = False) -> DictConfig:
    """The `config_name` primary config with `overrides`; with `hydra_node`, the `hydra` node too
    (launcher, sweeper, run directory). Added keys are held to the schema, as the entry points
    do (`check_additions`)."""
    check_additions(config_name, overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=hydra_node)


def compose_fast(*overrides: str, hydra_node: bool = False) -> DictConfig:
    """A `debug=fast` training config without a logger, then `overrides`."""
    return compose_cfg("train", "debug=fast", "logger=none", *overrides, hydra_node=hydra_node)
