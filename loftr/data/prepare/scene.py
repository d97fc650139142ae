"""The scene writer every converter shares: frames in, a MegaDepth-format scene of a prepared set
out (docs/prepare.md).

A converter reads its source, validates it, then opens a :class:`SceneWriter` and hands it one
:class:`~loftr.data.prepare.frames.PreparedFrame` at a time (image, intrinsics, world-to-camera
pose, depth) and finally the scored :class:`PreparedPair` list. The writer resizes frames above
``max_size`` (``loftr.data.prepare.frames``), writes images and h5 depth maps into a hidden
folder inside ``out``, bins the pairs by overlap into one scene info per bin, and only then moves
the scene into place and rewrites the list files, so ``out`` never shows a half-written scene
(docs/prepare.md#how-a-scene-is-written).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from loftr.data.io import check_matrix, write_megadepth_depth
from loftr.data.prepare.frames import PreparedFrame, fit_size, frame_size, resize_frame
from loftr.data.scene_info import OVERLAP_BINS, bin_stem, save_scene_info_npz
from loftr.errors import ConfigError, DataError

__all__ = ["OVERLAP_BINS", "SPLITS", "PreparedPair", "SceneWriter", "list_path"]

SPLITS = ("train", "val", "test")
# A scene name is one folder name: it names the scene folder, its scene infos and its report.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Examples of refused frames the report keeps per reason.
_REFUSED_EXAMPLES = 5


@dataclass
class PreparedPair:
    """A scored frame pair for :meth:`SceneWriter.finish`.

    Attributes:
        i, j: frame indices in the order the frames were added, ``i < j``.
        overlap: one symmetric score in [0, 1]; each converter documents how it gets it.
        central_match: (4,) float64 ``[x0, y0, x1, y1]`` in the two written images' pixels
            (NaN when unknown).
    """

    i: int
    j: int
    overlap: float
    central_match: np.ndarray


def list_path(out: Path, split: str) -> Path:
    """The list file of ``split`` in the prepared set ``out``: ``index/<split>_list.txt``."""
    return out / "index" / f"{split}_list.txt"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"--name {name!r}: a scene name is one folder name of letters, digits, '.', '_' and "
            "'-' that starts with a letter or digit (no '/')"
        )
    return name


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def _check_rel(rel: str) -> str:
    path = PurePosixPath(rel)
    if (
        not rel
        or "\\" in rel
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in rel.split("/"))
        or not path.suffix
    ):
        raise DataError(
            f"frame {rel!r}: an image path must be relative, posix, without '.' or '..' parts, "
            "and end in an image suffix (.jpg, .png)"
        )
    return rel


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then move it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class SceneWriter:
    """Write one scene of a prepared set (docs/prepare.md): a context manager.

    ``out`` receives ``scenes/<name>/images/<rel>``, ``scenes/<name>/depths/<rel stem>.h5``,
    ``index/scene_info/<name>_<lo>_<hi>.npz`` per non-empty overlap bin, the name in
    ``index/<split>_list.txt`` and ``reports/<name>.json``. Everything is written into
    ``out/.incoming-<name>-<pid>`` first; :meth:`finish` moves it into place. Leaving the block
    by an exception (or without :meth:`finish`) removes that folder and leaves ``out`` as it was.

    Args:
        out: the prepared set's folder (made if missing).
        name: the scene's name, one folder name.
        split: ``train``, ``val`` or ``test``: the list the scene goes to.
        source: what the scene was made from, for the report (``"colmap"``).
        max_size: frames whose longer side is larger are downscaled to it
            (``loftr.data.prepare.frames.resize_frame``).

    Raises:
        ConfigError: (on enter) a bad name, split or max_size.
        DataError: (on enter) ``out`` exists and is not a folder.
    """

    def __init__(self, out: Path, name: str, split: str, source: str, max_size: int = 1600) -> None:
        self.out = Path(out)
        self.name = name
        self.split = split
        self.source = source
        self.max_size = max_size
        self._tmp: Path | None = None
        self._made: list[Path] = []  # folders this writer made for out, deepest first
        self._started = 0.0
        self._rels: list[str] = []
        self._intrinsics: list[np.ndarray] = []
        self._poses: list[np.ndarray] = []
        self._coverage: list[float] = []
        self._refused: dict[str, list[str]] = {}

    # --- the context ----------------------------------------------------------------------

    def __enter__(self) -> SceneWriter:
        _check_name(self.name)
        _check_split(self.split)
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int):
            raise ConfigError(f"--max-size {self.max_size!r}: give a whole number of pixels")
        if self.max_size < 1:
            raise ConfigError(f"--max-size {self.max_size}: must be at least 1 pixel")
        if self.out.exists() and not self.out.is_dir():
            raise DataError(f"--out {self.out} exists and is not a folder")
        self._made = [p for p in (self.out, *self.out.parents) if not p.exists()]
        self.out.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out / f".incoming-{self.name}-{os.getpid()}"
        shutil.rmtree(self._tmp, ignore_errors=True)  # left by an earlier, killed run
        self._tmp.mkdir()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._discard()

    def _discard(self) -> None:
        """Remove the temporary folder, and the folders made for ``out`` that are still empty."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        for folder in self._made:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self._made = []

    def _staging(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("SceneWriter is used outside its with-block or after finish()")
        return self._tmp

    # --- frames ---------------------------------------------------------------------------

    def add_frame(self, frame: PreparedFrame) -> int:
        """Write a frame's image and depth map now (downscaled above ``max_size``); its index.

        Raises:
            DataError: a bad image path (absolute, ``..``, no suffix, already added), intrinsics
                or pose that are not finite and invertible, a depth map that is not 2-D or not
                the image's size, or an image that cannot be encoded.
        """
        staging = self._staging()
        rel = _check_rel(frame.rel)
        if rel in self._rels:
            raise DataError(f"frame {rel!r} is added twice to scene {self.name}")
        K = check_matrix(frame.K, f"intrinsics of frame {rel}", (3, 3))
        T = check_matrix(frame.T_w2c, f"pose of frame {rel}", (4, 4))
        if isinstance(frame.image, np.ndarray) and (
            frame.image.dtype != np.uint8
            or not (frame.image.ndim == 2 or (frame.image.ndim == 3 and frame.image.shape[2] == 3))
        ):
            raise DataError(
                f"frame {rel}: image is {frame.image.dtype} {frame.image.shape}; expected uint8 "
                "(H, W) grey or (H, W, 3) BGR"
            )
        w, h = frame_size(frame)
        depth = np.asarray(frame.depth)
        if depth.shape != (h, w):
            raise DataError(
                f"frame {rel}: depth map is {depth.shape[::-1]} (w, h) but its image is {(w, h)}"
            )
        frame = replace(frame, K=K, T_w2c=T, depth=depth)
        size = fit_size(w, h, self.max_size)
        if size is not None:
            frame = resize_frame(frame, size)
        depth = np.asarray(frame.depth, np.float32)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))

        image_path = staging / "images" / rel
        image_path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(frame.image, np.ndarray):
            if not cv2.imwrite(str(image_path), frame.image):
                raise DataError(f"frame {rel}: could not encode the image as {image_path.suffix}")
        else:
            shutil.copyfile(frame.image, image_path)
        write_megadepth_depth(staging / "depths" / self._depth_rel(rel), depth)

        self._rels.append(rel)
        self._intrinsics.append(np.asarray(frame.K, np.float64))
        self._poses.append(T)
        self._coverage.append(float((depth > 0).mean()))
        return len(self._rels) - 1

    @staticmethod
    def _depth_rel(rel: str) -> str:
        return PurePosixPath(rel).with_suffix(".h5").as_posix()

    def refuse(self, rel: str, reason: str) -> None:
        """Record a frame that was not converted, and why (the report counts the reasons)."""
        self._refused.setdefault(reason, []).append(rel)

    # --- pairs, index and the move into place -----------------------------------------------

    def _check_pairs(self, pairs: Sequence[PreparedPair]) -> None:
        n, seen = len(self._rels), set()
        for pair in pairs:
            where = f"pair ({pair.i}, {pair.j}) of scene {self.name}"
            if not (0 <= pair.i < pair.j < n):
                raise DataError(f"{where}: needs 0 <= i < j < {n} (frames added)")
            if (pair.i, pair.j) in seen:
                raise DataError(f"{where} is given twice")
            seen.add((pair.i, pair.j))
            if not (0.0 <= pair.overlap <= 1.0):
                raise DataError(f"{where}: overlap {pair.overlap} is not in [0, 1]")
            if np.asarray(pair.central_match).size != 4:
                raise DataError(f"{where}: central_match must hold 4 numbers [x0, y0, x1, y1]")

    def finish(
        self,
        pairs: Sequence[PreparedPair],
        min_overlap: float = 0.1,
        max_pairs_per_image: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Bin the pairs, write the index, move the scene into place; the report.

        Pairs with ``min_overlap <= overlap < 0.7`` are kept in their bin of
        :data:`OVERLAP_BINS` (those below and above are counted). ``max_pairs_per_image`` then
        caps the pairs any one frame takes part in: the kept pairs are visited bin by bin in
        turn (the best remaining pair of the lowest bin, of the middle one, of the highest one,
        then the next of each...), best overlap first within a bin, and a pair is written when
        both its frames still have room (docs/prepare.md#pairs).

        Args:
            pairs: every scored pair the converter considered.
            min_overlap: the lowest overlap kept, in [0.1, 0.7).
            max_pairs_per_image: the most pairs per frame, or None for no cap.
            extra: the converter's own report keys (must not clash with the writer's).

        Returns:
            The report (docs/prepare.md#the-report), also written to ``reports/<name>.json``.

        Raises:
            ConfigError: ``min_overlap`` or ``max_pairs_per_image`` out of range, or ``extra``
                repeats a report key.
            DataError: a bad pair, or no pair left to write.
        """
        self._staging()
        lowest, highest = OVERLAP_BINS[0][0], OVERLAP_BINS[-1][1]
        if not (lowest <= min_overlap < highest):
            raise ConfigError(
                f"--min-overlap {min_overlap}: must be in [{lowest}, {highest}), the overlap "
                "range the scene infos' bins cover"
            )
        if max_pairs_per_image is not None and max_pairs_per_image < 1:
            raise ConfigError(f"--max-pairs-per-image {max_pairs_per_image}: must be at least 1")
        self._check_pairs(pairs)

        below = sum(p.overlap < min_overlap for p in pairs)
        above = sum(p.overlap >= highest for p in pairs)
        binned = [
            sorted(
                (p for p in pairs if max(lo, min_overlap) <= p.overlap < hi),
                key=lambda p: (-p.overlap, p.i, p.j),
            )
            for lo, hi in OVERLAP_BINS
        ]
        kept, capped = self._cap(binned, max_pairs_per_image)
        written = sum(len(b) for b in kept)
        if written == 0:
            raise DataError(
                f"scene {self.name}: no pair to write ({len(pairs)} considered, {below} below "
                f"--min-overlap {min_overlap}, {above} at or above {highest}, {capped} over "
                "--max-pairs-per-image); nothing is written"
            )
        report = self._report(pairs, kept, below, above, capped)
        if extra:
            clash = sorted(set(extra) & set(report))
            if clash:
                raise ConfigError(f"report keys {clash} are the writer's; name them otherwise")
            report.update(extra)
        report["seconds"] = round(time.perf_counter() - self._started, 3)
        self._write_index(kept)
        (self._staging() / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        self._move_into_place(kept)
        self._discard()
        return report

    @staticmethod
    def _cap(
        binned: list[list[PreparedPair]], limit: int | None
    ) -> tuple[list[list[PreparedPair]], int]:
        """The pairs ``limit`` per frame lets through (bins in turn, best first); and the count
        of those it drops."""
        if limit is None:
            return binned, 0
        used: dict[int, int] = {}
        kept: list[list[PreparedPair]] = [[] for _ in binned]
        dropped = 0
        for rank in range(max((len(b) for b in binned), default=0)):
            for b, pairs in enumerate(binned):
                if rank >= len(pairs):
                    continue
                pair = pairs[rank]
                if used.get(pair.i, 0) < limit and used.get(pair.j, 0) < limit:
                    kept[b].append(pair)
                    used[pair.i] = used.get(pair.i, 0) + 1
                    used[pair.j] = used.get(pair.j, 0) + 1
                else:
                    dropped += 1
        return kept, dropped

    def _report(
        self,
        pairs: Sequence[PreparedPair],
        kept: list[list[PreparedPair]],
        below: int,
        above: int,
        capped: int,
    ) -> dict[str, Any]:
        coverage = np.asarray(self._coverage, np.float64)
        return {
            "source": self.source,
            "name": self.name,
            "split": self.split,
            "images": len(self._rels),
            "refused": {reason: len(rels) for reason, rels in self._refused.items()},
            "refused_examples": {
                reason: rels[:_REFUSED_EXAMPLES] for reason, rels in self._refused.items()
            },
            "pairs_considered": len(pairs),
            "pairs_written": sum(len(b) for b in kept),
            "pairs_per_bin": {
                f"{lo}-{hi}": len(b) for (lo, hi), b in zip(OVERLAP_BINS, kept, strict=True)
            },
            "below_min_overlap": below,
            "above_max_overlap": above,
            "over_max_pairs_per_image": capped,
            "depth_coverage": {
                "mean": round(float(coverage.mean()), 4),
                "min": round(float(coverage.min()), 4),
                "max": round(float(coverage.max()), 4),
            },
        }

    def _scene_rel(self) -> PurePosixPath:
        return PurePosixPath("scenes", self.name)

    def _write_index(self, kept: list[list[PreparedPair]]) -> None:
        """One scene info per non-empty bin into the staging folder's ``scene_info/``."""
        scene = self._scene_rel()
        info_dir = self._staging() / "scene_info"
        info_dir.mkdir()
        image_paths = np.array([(scene / "images" / r).as_posix() for r in self._rels], object)
        depth_paths = np.array(
            [(scene / "depths" / self._depth_rel(r)).as_posix() for r in self._rels], object
        )
        for (lo, hi), pairs in zip(OVERLAP_BINS, kept, strict=True):
            if not pairs:
                continue
            info = {
                "image_paths": image_paths,
                "depth_paths": depth_paths,
                "intrinsics": np.stack(self._intrinsics),
                "poses": np.stack(self._poses),
                "pair_infos": [
                    (
                        (p.i, p.j),
                        float(p.overlap),
                        np.asarray(p.central_match, np.float64).reshape(4),
                    )
                    for p in sorted(pairs, key=lambda p: (p.i, p.j))
                ],
            }
            save_scene_info_npz(info, info_dir / f"{bin_stem(self.name, lo, hi)}.npz")

    def _move_into_place(self, kept: list[list[PreparedPair]]) -> None:
        """Replace any earlier scene of this name, in an order that keeps the lists true.

        1. the name leaves all three lists (atomic rewrites): from here no list names it;
        2. its old scene infos are deleted, its old folder is renamed aside and deleted after
           the new one is renamed into ``scenes/<name>``;
        3. the new scene infos and the report move in (``os.replace``, file by file);
        4. the name joins its split's list (atomic rewrite).
        A crash leaves at worst an unlisted scene or an ``.outgoing-*`` folder
        (docs/prepare.md#how-a-scene-is-written). Only renames of files and of a folder to a
        new name are used, so this works on network file systems.
        """
        staging = self._staging()
        out, stems = self.out, [bin_stem(self.name, lo, hi) for lo, hi in OVERLAP_BINS]
        for folder in ("scenes", "index/scene_info", "reports"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        lists = {split: self._listed(out, split) for split in SPLITS}
        for split, entries in lists.items():
            _write_atomic(
                list_path(out, split), "".join(f"{e}\n" for e in entries if e not in stems)
            )

        for stem in stems:
            (out / "index" / "scene_info" / f"{stem}.npz").unlink(missing_ok=True)
        target = out / "scenes" / self.name
        # old copies of this scene a crashed run left (docs/prepare.md#how-a-scene-is-written)
        for stale in out.glob(f".outgoing-{self.name}-*"):
            if stale.name[len(f".outgoing-{self.name}-") :].isdigit():
                shutil.rmtree(stale, ignore_errors=True)
        outgoing = out / f".outgoing-{self.name}-{os.getpid()}"
        if target.exists():
            os.rename(target, outgoing)
        (staging / "scene").mkdir()
        for folder in ("images", "depths"):
            os.rename(staging / folder, staging / "scene" / folder)
        os.rename(staging / "scene", target)
        shutil.rmtree(outgoing, ignore_errors=True)

        written = []
        for (lo, hi), pairs in zip(OVERLAP_BINS, kept, strict=True):
            if pairs:
                stem = bin_stem(self.name, lo, hi)
                os.replace(
                    staging / "scene_info" / f"{stem}.npz",
                    out / "index" / "scene_info" / f"{stem}.npz",
                )
                written.append(stem)
        os.replace(staging / "report.json", out / "reports" / f"{self.name}.json")
        entries = [e for e in lists[self.split] if e not in stems] + written
        _write_atomic(list_path(out, self.split), "".join(f"{e}\n" for e in entries))

    @staticmethod
    def _listed(out: Path, split: str) -> list[str]:
        """The stems ``split``'s list holds now (none when it does not exist yet)."""
        path = list_path(out, split)
        if not path.is_file():
            return []
        return [line.split()[0] for line in path.read_text().splitlines() if line.split()]
