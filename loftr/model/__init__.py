"""The LoFTR model (docs/original.md#model)."""

from loftr.model.loftr import (
    LoFTR,
    count_parameters,
    parameter_counts,
    read_state_dict,
    strip_prefix,
)

__all__ = ["LoFTR", "count_parameters", "parameter_counts", "read_state_dict", "strip_prefix"]
