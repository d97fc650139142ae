"""Training pairs that cannot be read are replaced, not fatal: a long run outlives a bad file.

:class:`SkipBrokenPairs` wraps the training ConcatDataset. When a pair raises
:class:`~loftr.errors.DataError` or ``OSError`` (a missing, unreadable, truncated or corrupt file,
or data that cannot supervise: non-finite or singular intrinsics and poses, depth without a valid
pixel), the next pair of the same rank's data stands in for it, so the batch keeps its shape and
every rank its step count. Each item records the pairs it replaced under :data:`SKIPPED_KEY`, one
line per pair naming its index file and the error; the LightningModule counts and logs them and
stops the run past ``trainer.max_skipped_pairs``.
"""

from __future__ import annotations

import bisect
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from loftr.errors import DataError

#: The item key listing the pairs an item replaced: newline-separated lines, "" for none (a
#: string, so the default collate makes it a list of strings).
SKIPPED_KEY = "skipped_pairs"


class SkipBrokenPairs(Dataset):
    """A ConcatDataset whose unreadable pairs are replaced by the next readable one.

    Pair ``i`` failing, pairs ``i + 1, i + 2, ...`` (wrapping around) are tried in turn: the
    replacement depends on the index only, so a resumed run loads the same items.

    Args:
        dataset: the training scenes of this rank.
        max_recorded: at most this many replaced pairs are named per item; more than
            ``trainer.max_skipped_pairs`` stop the run anyway.

    Raises:
        DataError: (from ``__getitem__``) not a single pair of ``dataset`` can be read.
    """

    def __init__(self, dataset: ConcatDataset, max_recorded: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.max_recorded = max(1, int(max_recorded))

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self, idx: int) -> str:
        """``pair <i> of <scene index file>`` for a global index."""
        scene = bisect.bisect_right(self.dataset.cumulative_sizes, idx)
        start = self.dataset.cumulative_sizes[scene - 1] if scene else 0
        subset = self.dataset.datasets[scene]
        return f"pair {idx - start} of {getattr(subset, 'npz_path', f'scene {scene}')}"

    def __getitem__(self, idx: int) -> dict[str, Any]:
        skipped: list[str] = []
        n = len(self.dataset)
        for step in range(n):
            candidate = (idx + step) % n
            try:
                item = self.dataset[candidate]
            except (DataError, OSError) as err:  # OSError: e.g. a network filesystem's I/O error
                if len(skipped) < self.max_recorded:
                    skipped.append(f"{self.describe(candidate)}: {err}")
                continue
            item[SKIPPED_KEY] = "\n".join(skipped)
            return item
        raise DataError(
            f"none of the {n} training pairs of this rank can be used; the first: "
            + "; ".join(skipped[:3])
        )
