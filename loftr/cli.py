"""What the command-line entry points share: bad input in one line, the run directory, the
checkpoint option, and commands to paste back."""

from __future__ import annotations

import functools
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from loftr.errors import ConfigError, LoFTRError

F = TypeVar("F", bound=Callable[..., Any])
# what Hydra writes into a job's directory before the job runs
HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def one_line_errors(main: F) -> F:
    """Decorate an entry point: a LoFTRError prints `error: <message>` on stderr and exits 2.

    Under `@hydra.main`, the job directory Hydra made for the failed job is removed when it holds
    nothing but Hydra's own files (`.hydra/` and the job log), so bad input leaves no empty run
    folder behind; a directory with anything else in it (a checkpoint, metrics) is kept.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except LoFTRError as exc:
            print(f"error: {exc}", file=sys.stderr)
            _remove_unused_job_dir()
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]


def _remove_unused_job_dir() -> None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    job_dir = Path(hydra.runtime.output_dir)
    subdir = job_dir / str(hydra.output_subdir) if hydra.output_subdir else None
    expected = {f"{hydra.job.name}.log"} | ({subdir.name} if subdir else set())
    if not job_dir.is_dir() or {p.name for p in job_dir.iterdir()} - expected:
        return
    if subdir and subdir.exists() and {p.name for p in subdir.iterdir()} - HYDRA_FILES:
        return
    shutil.rmtree(job_dir, ignore_errors=True)


def under_hydra() -> bool:
    """Whether this process runs a Hydra job (an entry point), not a library call."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def hydra_overrides() -> list[str]:
    """The command line's overrides of this Hydra job; none outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if under_hydra() else []


def set_run_dir(cfg: Any) -> None:
    """`cfg.run_dir`, when not given, becomes the Hydra job's directory."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir


def checkpoint_option(cfg: Any, overrides: Sequence[str]) -> None:
    """`ckpt_path` is the checkpoint option of train, evaluate and match; `ckpt`, its former name
    in evaluate and match, still works for one release: its value moves to `ckpt_path`, with a
    line on stderr. Both on the command line (`overrides`) is an error; a `ckpt` of a config file
    gives way to a `ckpt_path` of the command line.
    """
    from omegaconf import open_dict

    if cfg.get("ckpt") is None:
        return
    given = {o.lstrip("+~").partition("=")[0] for o in overrides}
    if {"ckpt", "ckpt_path"} <= given:
        raise ConfigError("ckpt= and ckpt_path= are both given: pass ckpt_path= only")
    print("ckpt= is deprecated, use ckpt_path=", file=sys.stderr)
    with open_dict(cfg):
        ckpt = cfg.pop("ckpt")
        cfg.ckpt_path = cfg.ckpt_path if "ckpt_path" in given else ckpt


def command(module: str, args: Sequence[str]) -> str:
    """`python -m module args...`, quoted for a POSIX shell where an argument needs it."""
    return " ".join(["python", "-m", module, *(shlex.quote(str(a)) for a in args)])


def group_choice(group: str, fallback: str) -> str:
    """`group=option` as the command line chose it (Hydra runs), else `fallback`."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        option = HydraConfig.get().runtime.choices.get(group)
        if option is not None:
            return f"{group}={option}"
    return fallback
