"""The quick check of a ``data/`` layout that ``python -m loftr.data.setup`` ends with: scenes
found, a sample of pairs whose image, depth and pose files exist (HPatches: every sequence's
files, docs/hpatches.md#set-up), and each missing part with the set-up step that makes it
(docs/original.md#data-layout). ``--check`` reads every file instead
(:mod:`loftr.data.check`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loftr.data.layout import LAYOUT, SCANNET_SCENE, IndexSplit, index_splits, setup_hint


@dataclass
class LayoutReport:
    """What :func:`verify_layout` found: report lines and the missing parts (each with its fix)."""

    dataset: str
    lines: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing."""
        return not self.missing

    def found(self, text: str) -> None:
        self.lines.append(f"  ok       {text}")

    def lack(self, text: str) -> None:
        self.lines.append(f"  MISSING  {text}")
        self.missing.append(text)

    def text(self) -> str:
        """The printable report."""
        head = f"{self.dataset} data layout"
        tail = (
            "complete: every checked path is there"
            if self.ok
            else f"incomplete: {len(self.missing)} missing:\n"
            + "\n".join(f"  - {m}" for m in self.missing)
        )
        return "\n".join([head, *self.lines, tail])


def _folder_status(path: Path) -> str | None:
    """None when ``path`` is a folder, else why not."""
    if path.is_dir():
        return None
    if path.is_symlink():
        return f"{path} is a broken symlink (-> {os.readlink(path)})"
    return f"{path} does not exist"


def _check_list(report: LayoutReport, split: IndexSplit) -> list[Path]:
    """Report a split's list file and its index files; return the index files that exist."""
    from loftr.data.io import read_list
    from loftr.errors import DataError

    list_path, npz_root, part = split.list_file, split.npz_root, split.index_part
    try:
        names = read_list(list_path)
    except DataError as err:
        report.lack(f"{err}; {setup_hint(part, list_path.parent)}")
        return []
    files = [npz_root / (n if n.endswith(".npz") else n + ".npz") for n in names]
    present = [f for f in files if f.is_file()]
    absent = [f for f in files if not f.is_file()]
    if absent:
        shown = ", ".join(str(f) for f in absent[:5]) + (" ..." if len(absent) > 5 else "")
        report.lack(
            f"{len(absent)} of {len(files)} index files listed in {list_path}: {shown}; "
            + setup_hint(part, npz_root)
        )
    else:
        report.found(f"{list_path}: {len(names)} entries, all in {npz_root}")
    return present


def _report_pair_files(
    report: LayoutReport, label: str, pairs: list[tuple[str, list[Path]]]
) -> None:
    complete = [name for name, files in pairs if all(f.is_file() for f in files)]
    report.found(f"sample pairs ({label}): {len(complete)} of {len(pairs)} have all their files")
    for name, files in pairs:
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            report.lack(f"pair {name} ({label}): " + ", ".join(absent))
        else:
            report.lines.append(f"           {name}")


def _scannet_pair_files(root: Path, row: Sequence[int]) -> tuple[str, list[Path]]:
    scene = f"scene{int(row[0]):04d}_{int(row[1]):02d}"
    files = []
    for frame in (int(row[2]), int(row[3])):
        files += [
            root / scene / "color" / f"{frame}.jpg",
            root / scene / "depth" / f"{frame}.png",
            root / scene / "pose" / f"{frame}.txt",
        ]
    return f"{scene} {int(row[2])}-{int(row[3])}", files


def _scannet_pairs(
    report: LayoutReport, root: Path, npz_files: list[Path], sample: int, label: str
):
    from loftr.data.io import load_scannet_pairs
    from loftr.errors import DataError

    pairs = []
    for npz in npz_files:
        if len(pairs) >= sample:
            break
        try:
            names, _ = load_scannet_pairs(npz)
        except DataError as err:
            report.lack(str(err))
            continue
        step = max(1, len(names) // max(1, sample))
        for row in names[::step][: sample - len(pairs)]:
            pairs.append(_scannet_pair_files(root, row))
    if pairs:
        _report_pair_files(report, label, pairs)


def _scannet_scenes(report: LayoutReport, root: Path, label: str, part: str) -> None:
    from loftr.data.scannet import sensreader_cpp_hint

    status = _folder_status(root)
    if status is not None:
        report.lack(f"{label} root: {status}; {setup_hint(part, root)}")
        return
    scenes = sorted(c.name for c in root.iterdir() if c.is_dir() and SCANNET_SCENE.match(c.name))
    if not scenes:
        report.lack(f"{label} root {root} holds no sceneXXXX_YY folders; {setup_hint(part, root)}")
        return
    shown = ", ".join(scenes[:3]) + (" ..." if len(scenes) > 3 else "")
    report.found(f"{label} root {root}: {len(scenes)} scenes ({shown})")
    hint = sensreader_cpp_hint(root / scenes[0])
    if hint is not None:
        report.lack(hint)


def verify_scannet(data_dir: Path, assets_dir: Path, sample: int = 5) -> LayoutReport:
    """Check the ScanNet layout: train scenes and index, test scenes and the ScanNet-1500 index."""
    from loftr.data.io import load_intrinsics
    from loftr.errors import DataError

    report = LayoutReport("ScanNet")
    for split in index_splits("scannet", data_dir, assets_dir):
        _scannet_scenes(report, split.root, split.label, split.root_part)
        npz_files = _check_list(report, split)
        intrinsics = split.intrinsics
        try:
            report.found(f"{intrinsics}: {len(load_intrinsics(intrinsics))} scenes")
        except DataError as err:
            report.lack(f"{err}; {setup_hint(split.index_part, intrinsics.parent)}")
        if split.root.is_dir():
            _scannet_pairs(report, split.root, npz_files, sample, split.label)
    return report


def _megadepth_root(report: LayoutReport, split: IndexSplit) -> bool:
    root, label, part = split.root, split.label, split.root_part
    status = _folder_status(root)
    if status is not None:
        report.lack(f"{label} root: {status}; {setup_hint(part, root)}")
        return False
    absent = [n for n in ("phoenix", "Undistorted_SfM") if not (root / n).is_dir()]
    if absent:
        report.lack(
            f"{label} root {root} lacks {absent} (the scene infos' paths start with phoenix/ and "
            f"Undistorted_SfM/); {setup_hint(part, root)}"
        )
        return False
    scenes = sorted(c.name for c in (root / "Undistorted_SfM").iterdir() if c.is_dir())
    report.found(f"{label} root {root}: {len(scenes)} scenes in Undistorted_SfM")
    return True


def _megadepth_pairs(
    report: LayoutReport, root: Path, npz_files: list[Path], sample: int, label: str
) -> None:
    from loftr.data.scene_info import load_scene_info
    from loftr.errors import DataError

    pairs = []
    for npz in npz_files[: max(1, min(3, sample))]:
        try:
            info = load_scene_info(npz)
        except DataError as err:
            report.lack(str(err))
            continue
        pair_infos = info["pair_infos"]
        per_file = max(1, sample // max(1, min(3, len(npz_files))))
        step = max(1, len(pair_infos) // per_file)
        for (i0, i1), _, _ in pair_infos[::step][:per_file]:
            files = [
                root / str(info[key][i]) for i in (i0, i1) for key in ("image_paths", "depth_paths")
            ]
            pairs.append((f"{npz.stem} {i0}-{i1}", files))
    if pairs:
        _report_pair_files(report, label, pairs)


def verify_megadepth(data_dir: Path, assets_dir: Path, sample: int = 5) -> LayoutReport:
    """Check the MegaDepth layout: train/test roots, train and val indices, MegaDepth-1500."""
    report = LayoutReport("MegaDepth")
    train, val, test = index_splits("megadepth", data_dir, assets_dir)
    train_ok = _megadepth_root(report, train)
    train_files = _check_list(report, train)
    val_files = _check_list(report, val)
    if train_ok:
        _megadepth_pairs(report, train.root, train_files, sample, train.label)
    test_ok = _megadepth_root(report, test)  # the val pairs' images are in the test root too
    if test_ok:
        _megadepth_pairs(report, val.root, val_files, sample, val.label)
    test_files = _check_list(report, test)
    if test_ok:
        _megadepth_pairs(report, test.root, test_files, sample, test.label)
    return report


def hpatches_root(data_dir: Path) -> Path:
    """The folder that holds ``hpatches-sequences-release/`` (docs/hpatches.md#set-up)."""
    return Path(data_dir) / LAYOUT["hpatches"]["root"]


def verify_hpatches(data_dir: Path) -> LayoutReport:
    """Check the HPatches layout: every folder an ``i_*`` / ``v_*`` sequence holding its six
    images and five homography files, and the protocol's 108 sequences when the release is full.
    """
    from loftr.data import hpatches as hp
    from loftr.errors import DataError

    report = LayoutReport("HPatches")
    root = hpatches_root(data_dir)
    folder = root / hp.RELEASE_FOLDER
    status = _folder_status(folder)
    if status is not None:
        report.lack(f"sequences folder: {status}; {setup_hint('hpatches', root)}")
        return report
    entries = sorted(p for p in folder.iterdir() if p.is_dir())
    for entry in entries:
        if hp.sequence_kind(entry.name) is None:
            report.lack(
                f"{entry} is not a sequence: its name starts with neither i_ (illumination) nor "
                "v_ (viewpoint)"
            )
    names = [entry.name for entry in entries if hp.sequence_kind(entry.name)]
    counts = hp.kind_counts(names)
    report.found(
        f"{folder}: {len(names)} sequences ({counts['illumination']} illumination, "
        f"{counts['viewpoint']} viewpoint)"
    )
    for name in names:
        files = [hp.image_name(k) for k in (1, *hp.TARGETS)]
        files += [hp.homography_name(k) for k in hp.TARGETS]
        for file in files:
            if not (folder / name / file).is_file():
                report.lack(f"{folder / name / file} is missing")
    if not names:
        return report
    try:
        kept = hp.list_sequences(root, hp.protocol_exclude())
    except DataError as err:
        report.lack(str(err))
        return report
    if counts == hp.FULL_RELEASE:
        report.found(
            f"the full release: the protocol keeps {len(kept)} sequences "
            f"({hp.PROTOCOL_COUNTS['illumination']} illumination, "
            f"{hp.PROTOCOL_COUNTS['viewpoint']} viewpoint)"
        )
    else:
        report.found(
            f"not the full release ({hp.FULL_RELEASE['illumination']} + "
            f"{hp.FULL_RELEASE['viewpoint']} sequences): {len(kept)} are evaluated and the "
            "protocol's count of 108 is not checked"
        )
    return report


def verify_layout(
    dataset: str, data_dir: str | os.PathLike = "data", sample: int = 5
) -> LayoutReport:
    """Check the layout of ``dataset`` under ``data_dir`` (assets beside it) and report.

    Args:
        dataset: ``scannet``, ``megadepth`` or ``hpatches``.
        data_dir: the data folder; the test indices are looked up in ``<data_dir>/../assets``.
        sample: how many pairs to check file by file (HPatches: every file is looked for).

    Returns:
        The report; ``report.ok`` is True when nothing is missing.
    """
    data_dir = Path(data_dir)
    assets_dir = data_dir.parent / "assets"
    if dataset == "scannet":
        return verify_scannet(data_dir, assets_dir, sample)
    if dataset == "hpatches":
        return verify_hpatches(data_dir)
    return verify_megadepth(data_dir, assets_dir, sample)
