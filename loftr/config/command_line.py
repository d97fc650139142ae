"""A command line's config faults in one line, before Hydra runs the command.

Hydra reports a composition error in its own words and exits 1; the entry points compose the
command line's config once first (`check_command_line`), so that a bad choice, an unknown key or
a typo'd `+key` ends as `error: <key>=<value>: <what is allowed>` with exit status 2, as every
other bad input does, `--cfg job` included.
"""

from __future__ import annotations

from collections.abc import Sequence

from loftr.config.schema import CONF_DIR, check_additions
from loftr.errors import ConfigError


def composition_error(exc: Exception) -> ConfigError:
    """The ConfigError of a Hydra or OmegaConf composition error, in one line naming the key."""
    from omegaconf.errors import ValidationError

    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.full_key:
        reason = str(cause.msg).splitlines()[0]
        return ConfigError(f"{cause.full_key}={cause.value!r}: {reason}")
    return ConfigError(" ".join(str(exc).split()))


def check_command_line(config_name: str, argv: Sequence[str]) -> None:
    """Raise ConfigError when the `config_name` config does not compose from `argv`.

    Added keys are held to the schema (`check_additions`); a single run's config is then composed
    as Hydra will (a multirun's jobs are composed by Hydra, one by one).
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args = get_args_parser().parse_args(list(argv))
    check_additions(config_name, args.overrides)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.multirun:
        return
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name, overrides=args.overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise composition_error(exc) from None
