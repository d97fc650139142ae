"""The kinds of value a numeric setting may hold, shared by every room's config check.

The model's check (`loftr.model.config`) and the run's (`loftr.config.validate`) name a setting's
kind here, so the same words describe the same range wherever a key is checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from loftr.errors import ConfigError

# What a numeric setting may hold: a test of the value and the words that say it.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "non_negative": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "fraction": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "probability": (lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "count": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "count_or_zero": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "limit": (lambda v: is_int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1 (no limit)"),
    "count_or_all": (lambda v: is_int(v) and v >= -1, "an integer >= 0, or -1 (all)"),
    "batches": (
        lambda v: (is_int(v) and v >= 0) or (is_number(v) and 0 <= v <= 1),
        "a number of batches >= 0 or a fraction in [0, 1]",
    ),
}


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_range(key: str, value: Any, kind: str) -> None:
    """Raise ConfigError naming `key` when `value` is not of `kind` (a key of `KINDS`)."""
    test, allowed = KINDS[kind]
    if not test(value):
        raise ConfigError(f"{key}={value!r} must be {allowed}")
