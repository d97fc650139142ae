"""``python -m loftr.data.setup DATASET --check``: read every file an index names, before training.

For each split of the layout (ScanNet: train, test; MegaDepth: train, val, test) every scene index
of its list is opened and every file and camera its pairs name (all pairs, whatever their
overlap) is read the way a training or validation item reads it: images decoded (and not
truncated), depth maps of the right size (with a valid pixel for training), intrinsics and poses
finite and invertible. Each problem becomes one line naming the file; a progress bar counts the
files on stderr. For HPatches every image of every sequence is decoded and every homography
file read as a finite invertible 3x3 matrix.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from loftr.data.io import read_list
from loftr.data.layout import IndexSplit, index_splits
from loftr.errors import DataError

#: OpenCV decodes and numpy parses outside the GIL, so threads speed a check up.
DEFAULT_JOBS = max(1, min(8, os.cpu_count() or 1))


def _open_index(dataset: str, split: IndexSplit, npz: Path) -> Any:
    """The dataset of one scene index with every pair kept (no overlap filter)."""
    if dataset == "scannet":
        from loftr.data.scannet import ScanNetDataset

        return ScanNetDataset(
            split.root, npz, split.intrinsics, mode=split.mode, min_overlap_score=-1.0
        )
    from loftr.data.megadepth import MegaDepthDataset

    return MegaDepthDataset(split.root, npz, mode=split.mode, min_overlap_score=-1.0)


def _problem(check: Callable[[], object]) -> str | None:
    try:
        check()
    except (DataError, OSError) as err:
        return str(err)
    return None


def _checks(dataset: str, split: IndexSplit) -> Iterator[tuple[str, Callable[[], object]]]:
    """``(file, check)`` over a split's indices; one that cannot be opened is its own check."""
    try:
        names = read_list(split.list_file)
    except DataError:
        yield str(split.list_file), functools.partial(read_list, split.list_file)
        return
    for name in names:
        npz = split.npz_root / (name if name.endswith(".npz") else f"{name}.npz")
        try:
            index = _open_index(dataset, split, npz)
        except DataError:
            yield str(npz), functools.partial(_open_index, dataset, split, npz)
            continue
        yield from index.file_checks()


def _unseen(
    checks: Iterator[tuple[str, Callable[[], object]]], seen: set[str]
) -> Iterator[Callable[[], object]]:
    """The checks of files not checked yet (MegaDepth scene infos share their images)."""
    for key, check in checks:
        if key not in seen:
            seen.add(key)
            yield check


def check_files(
    dataset: str,
    data_dir: str | os.PathLike = "data",
    jobs: int = DEFAULT_JOBS,
    progress: bool = True,
) -> tuple[int, list[str]]:
    """Read every file the layout's indices name, on ``jobs`` threads.

    Args:
        dataset: ``scannet``, ``megadepth`` or ``hpatches`` (every image and homography file of
            every sequence).
        data_dir: the data folder; the test indices are in ``<data_dir>/../assets``.
        jobs: reader threads.
        progress: show a tqdm bar per split on stderr.

    Returns:
        ``(files_checked, problems)``: one line per file at fault (a shared file once). Splits
        whose list file is absent are left out (the layout report names them).
    """
    from tqdm import tqdm

    data_dir = Path(data_dir)
    seen: set[str] = set()
    problems: list[str] = []
    if dataset == "hpatches":
        splits = [("sequences", _hpatches_checks(data_dir))]
    else:
        splits = [
            (split.label, _checks(dataset, split))
            for split in index_splits(dataset, data_dir, data_dir.parent / "assets")
            if split.list_file.is_file()
        ]
    with ThreadPoolExecutor(max(1, int(jobs))) as pool:
        for label, checks in splits:
            bar = tqdm(desc=f"{dataset} {label}", unit="file", disable=not progress)
            pending = _unseen(checks, seen)
            while chunk := list(itertools.islice(pending, 256)):
                problems += [p for p in pool.map(_problem, chunk) if p is not None]
                bar.update(len(chunk))
                bar.set_postfix(problems=len(problems))
            bar.close()
    return len(seen), problems


def _hpatches_checks(data_dir: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    """Every image and homography file of every sequence (none when the folder is missing:
    the layout report names it)."""
    from loftr.data.hpatches import HPatchesDataset
    from loftr.data.verify import hpatches_root

    try:
        dataset = HPatchesDataset(hpatches_root(data_dir))
    except DataError:
        return
    yield from dataset.file_checks()


def report_lines(checked: int, problems: Sequence[str]) -> list[str]:
    """The printable outcome of :func:`check_files`."""
    lines = [f"  BAD      {p}" for p in problems]
    verdict = "all readable" if not problems else f"{len(problems)} with a problem"
    return [*lines, f"checked {checked} files and cameras: {verdict}"]
