"""Set up and verify the ``data/`` layout of the original LoFTR (TRAINING.md,
docs/original.md#data-layout).

Usage::

    python -m loftr.data.setup scannet --train /path/to/scannet_train --test /path/to/scannet_test \
        [--indices scannet_indices.tar] [--testdata scannet_test_1500.tar] \
        [--assets /path/to/LoFTR/assets] [--data-dir data]
    python -m loftr.data.setup megadepth --train /path/to/megadepth [--test PATH] \
        [--indices megadepth_indices.tar] [--testdata megadepth_test_1500.tar] [--data-dir data]
    python -m loftr.data.setup scannet --verify-only
    python -m loftr.data.setup scannet --verify-only --check

It makes the symlinks of TRAINING.md (``ln -s PATH/* data/<dataset>/{train,test,index}``),
extracts the index and test archives when given (``tarfile`` with the ``data`` filter, so an
archive cannot write outside its folder), then checks the layout and prints a report: scenes
found, a sample of pairs whose image, depth and pose files exist, and what is missing with the
step that makes it. ``--check`` then reads every file every index names, as training reads it
(:mod:`loftr.data.check`), and lists each broken one. The exit status is 0 when nothing is
missing or broken.

``--train`` for MegaDepth is the folder holding ``phoenix/`` and ``Undistorted_SfM/`` (the paths
inside the scene infos start with those two names); the test data defaults to the same folder, as
train and test share the data (TRAINING.md). ``--assets`` is the original repository's
``assets/`` folder, which holds the ScanNet-1500 and MegaDepth-1500 test indices; they are linked
into ``assets/`` beside ``--data-dir`` (the paths of docs/original.md#data-configs).

The paths it makes and the set-up step each "missing" error quotes are in
:mod:`loftr.data.layout`; this module is the command only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loftr.data.layout import ASSETS, LAYOUT, setup_hint

# What identifies the top folder of an extracted archive.
_INDEX_MARKERS = {
    "scannet": ("scene_data",),
    "megadepth": ("scene_info_0.1_0.7", "trainvaltest_list"),
}
_SCANNET_SCENE = re.compile(r"^scene\d{4}_\d{2}$")


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


# --- building the layout -----------------------------------------------------------------------


def link_children(source: Path, target_dir: Path) -> list[str]:
    """``ln -s source/* target_dir``: link every entry of ``source`` into ``target_dir``.

    Existing entries are left alone (re-running is harmless).

    Args:
        source: the folder whose entries are linked.
        target_dir: the folder that receives the links (created if needed).

    Returns:
        One line per entry saying what was done.
    """
    from loftr.data.io import check_dir

    source = check_dir(source, "source folder").resolve()
    target_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for child in sorted(source.iterdir()):
        link = target_dir / child.name
        if link.is_symlink() and Path(os.readlink(link)) == child:
            done.append(f"kept   {link} -> {child}")
        elif link.exists() or link.is_symlink():
            done.append(f"skip   {link} exists (left alone)")
        else:
            link.symlink_to(child)
            done.append(f"linked {link} -> {child}")
    return done


def extract_archive(archive: Path, destination: Path) -> Path:
    """Extract a tar archive into ``destination`` with tarfile's ``data`` filter.

    Args:
        archive: a ``.tar`` (optionally compressed) file.
        destination: the folder to extract into (created if needed).

    Returns:
        ``destination``.

    Raises:
        DataError: the archive is missing or not a tar file.
    """
    from loftr.data.io import check_file
    from loftr.errors import DataError

    check_file(archive, "archive")
    if not hasattr(tarfile, "data_filter"):
        raise DataError(
            f"cannot extract {archive} safely: this Python's tarfile has no 'data' filter "
            "(Python 3.10.12+, 3.11.4+ or 3.12+ has it); extract it by hand with tar xf"
        )
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(destination, filter="data")
    except tarfile.TarError as err:
        raise DataError(f"archive {archive} cannot be extracted ({err})") from err
    return destination


def find_folder_with(root: Path, markers: Sequence[str], max_depth: int = 3) -> Path | None:
    """The shallowest folder under ``root`` (itself included) holding any of ``markers``."""
    level = [root]
    for _ in range(max_depth + 1):
        for folder in level:
            if any((folder / m).exists() for m in markers):
                return folder
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir() and not c.is_symlink()]
    return None


def _find_scannet_scenes_parent(root: Path, max_depth: int = 3) -> Path | None:
    level = [root]
    for _ in range(max_depth + 1):
        for folder in level:
            if any(_SCANNET_SCENE.match(c.name) for c in folder.iterdir() if c.is_dir()):
                return folder
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir() and not c.is_symlink()]
    return None


def build_layout(
    dataset: str,
    data_dir: Path,
    train: Path | None = None,
    test: Path | None = None,
    indices: Path | None = None,
    testdata: Path | None = None,
    assets: Path | None = None,
) -> list[str]:
    """Make the symlinks of TRAINING.md and extract the archives; return what was done.

    Args:
        dataset: ``scannet`` or ``megadepth``.
        data_dir: the project's data folder (``data``).
        train: raw train data (ScanNet scenes; MegaDepth's folder with phoenix/ and
            Undistorted_SfM/).
        test: raw test data (ScanNet test scenes; MegaDepth defaults to ``train``).
        indices: ``scannet_indices.tar`` / ``megadepth_indices.tar``.
        testdata: ``scannet_test_1500.tar`` / ``megadepth_test_1500.tar``.
        assets: the original LoFTR repository's ``assets/`` folder (test indices).

    Returns:
        One line per action.
    """
    layout = LAYOUT[dataset]
    done: list[str] = []
    if dataset == "megadepth" and test is None:
        test = train
    if train is not None:
        done += link_children(train, data_dir / layout["train_root"])
    if test is not None:
        done += link_children(test, data_dir / layout["test_root"])
    extracted = data_dir / dataset / "extracted"
    if indices is not None:
        out = extract_archive(indices, extracted / Path(indices).name.split(".")[0])
        top = find_folder_with(out, _INDEX_MARKERS[dataset])
        if top is None:
            done.append(f"!! {indices} holds none of {list(_INDEX_MARKERS[dataset])}; not linked")
        else:
            done += link_children(top, data_dir / layout["index"])
    if testdata is not None:
        out = extract_archive(testdata, extracted / Path(testdata).name.split(".")[0])
        top = (
            _find_scannet_scenes_parent(out)
            if dataset == "scannet"
            else find_folder_with(out, ("Undistorted_SfM", "phoenix"))
        )
        if top is None:
            done.append(f"!! {testdata} holds no test scenes; not linked")
        else:
            done += link_children(top, data_dir / layout["test_root"])
    if assets is not None:
        folder = ASSETS[dataset]["folder"]
        assets_dir = data_dir.parent / "assets"
        assets_dir.mkdir(parents=True, exist_ok=True)
        source = Path(assets) / folder
        link = assets_dir / folder
        if not source.is_dir():
            done.append(f"!! {source} does not exist; not linked")
        elif link.exists() or link.is_symlink():
            done.append(f"skip   {link} exists (left alone)")
        else:
            link.symlink_to(source.resolve())
            done.append(f"linked {link} -> {source.resolve()}")
    return done


# --- verifying the layout ------------------------------------------------------------------


def _folder_status(path: Path) -> str | None:
    """None when ``path`` is a folder, else why not."""
    if path.is_dir():
        return None
    if path.is_symlink():
        return f"{path} is a broken symlink (-> {os.readlink(path)})"
    return f"{path} does not exist"


def _check_list(
    report: LayoutReport, list_path: Path, npz_root: Path, suffix: str, part: str
) -> list[Path]:
    """Report a list file and its index files; return the index files that exist."""
    from loftr.data.io import read_list
    from loftr.errors import DataError

    try:
        names = read_list(list_path)
    except DataError as err:
        report.lack(f"{err}; {setup_hint(part, list_path.parent)}")
        return []
    files = [npz_root / (n if n.endswith(".npz") else n + suffix) for n in names]
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
    scenes = sorted(c.name for c in root.iterdir() if c.is_dir() and _SCANNET_SCENE.match(c.name))
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

    layout = LAYOUT["scannet"]
    report = LayoutReport("ScanNet")
    train_root = data_dir / layout["train_root"]
    _scannet_scenes(report, train_root, "train", "scannet_train")
    npz_files = _check_list(
        report,
        data_dir / layout["train_list"],
        data_dir / layout["train_npz_root"],
        ".npz",
        "scannet_index",
    )
    intrinsics_path = data_dir / layout["train_intrinsics"]
    try:
        report.found(f"{intrinsics_path}: {len(load_intrinsics(intrinsics_path))} scenes")
    except DataError as err:
        report.lack(f"{err}; {setup_hint('scannet_index', intrinsics_path.parent)}")
    if train_root.is_dir():
        _scannet_pairs(report, train_root, npz_files, sample, "train")

    test_root = data_dir / layout["test_root"]
    _scannet_scenes(report, test_root, "test", "scannet_test")
    assets = ASSETS["scannet"]
    test_files = _check_list(
        report,
        assets_dir / assets["list"],
        assets_dir / assets["folder"],
        ".npz",
        "scannet_test_index",
    )
    test_intrinsics = assets_dir / assets["intrinsics"]
    try:
        report.found(f"{test_intrinsics}: {len(load_intrinsics(test_intrinsics))} scenes")
    except DataError as err:
        report.lack(f"{err}; {setup_hint('scannet_test_index', test_intrinsics.parent)}")
    if test_root.is_dir():
        _scannet_pairs(report, test_root, test_files, sample, "test")
    return report


def _megadepth_root(report: LayoutReport, root: Path, label: str) -> bool:
    status = _folder_status(root)
    if status is not None:
        report.lack(f"{label} root: {status}; {setup_hint('megadepth_root', root)}")
        return False
    absent = [n for n in ("phoenix", "Undistorted_SfM") if not (root / n).is_dir()]
    if absent:
        report.lack(
            f"{label} root {root} lacks {absent} (the scene infos' paths start with phoenix/ and "
            f"Undistorted_SfM/); {setup_hint('megadepth_root', root)}"
        )
        return False
    scenes = sorted(c.name for c in (root / "Undistorted_SfM").iterdir() if c.is_dir())
    report.found(f"{label} root {root}: {len(scenes)} scenes in Undistorted_SfM")
    return True


def _megadepth_pairs(
    report: LayoutReport, root: Path, npz_files: list[Path], sample: int, label: str
) -> None:
    from loftr.data.io import load_scene_info
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
    layout = LAYOUT["megadepth"]
    report = LayoutReport("MegaDepth")
    train_root = data_dir / layout["train_root"]
    train_ok = _megadepth_root(report, train_root, "train")
    train_files = _check_list(
        report,
        data_dir / layout["train_list"],
        data_dir / layout["train_npz_root"],
        ".npz",
        "megadepth_index",
    )
    val_files = _check_list(
        report,
        data_dir / layout["val_list"],
        data_dir / layout["val_npz_root"],
        ".npz",
        "megadepth_index",
    )
    if train_ok:
        _megadepth_pairs(report, train_root, train_files, sample, "train")
    test_root = data_dir / layout["test_root"]
    test_ok = _megadepth_root(report, test_root, "test")
    if test_ok:
        _megadepth_pairs(report, test_root, val_files, sample, "val")
    assets = ASSETS["megadepth"]
    test_files = _check_list(
        report,
        assets_dir / assets["list"],
        assets_dir / assets["folder"],
        ".npz",
        "megadepth_test_index",
    )
    if test_ok:
        _megadepth_pairs(report, test_root, test_files, sample, "test")
    return report


def verify_layout(
    dataset: str, data_dir: str | os.PathLike = "data", sample: int = 5
) -> LayoutReport:
    """Check the layout of ``dataset`` under ``data_dir`` (assets beside it) and report.

    Args:
        dataset: ``scannet`` or ``megadepth``.
        data_dir: the data folder; the test indices are looked up in ``<data_dir>/../assets``.
        sample: how many pairs to check file by file.

    Returns:
        The report; ``report.ok`` is True when nothing is missing.
    """
    data_dir = Path(data_dir)
    assets_dir = data_dir.parent / "assets"
    if dataset == "scannet":
        return verify_scannet(data_dir, assets_dir, sample)
    return verify_megadepth(data_dir, assets_dir, sample)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m loftr.data.setup`` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m loftr.data.setup",
        description="Make the data/ symlinks of LoFTR's TRAINING.md, extract index and test "
        "archives, and verify the layout.",
    )
    parser.add_argument("dataset", choices=sorted(LAYOUT))
    parser.add_argument("--train", type=Path, help="raw train data (ln -s TRAIN/* data/.../train)")
    parser.add_argument("--test", type=Path, help="raw test data (MegaDepth: defaults to --train)")
    parser.add_argument("--indices", type=Path, help="scannet_indices.tar / megadepth_indices.tar")
    parser.add_argument("--testdata", type=Path, help="scannet_test_1500.tar / megadepth_...tar")
    parser.add_argument("--assets", type=Path, help="the original LoFTR repository's assets/")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="default: data")
    parser.add_argument("--sample", type=int, default=5, help="pairs to check file by file")
    parser.add_argument("--verify-only", action="store_true", help="make no links, only check")
    parser.add_argument(
        "--check", action="store_true", help="also read every file the indices name (slow)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="reader threads of --check")
    args = parser.parse_args(argv)

    from loftr.errors import DataError

    if not args.verify_only:
        try:
            actions = build_layout(
                args.dataset,
                args.data_dir,
                train=args.train,
                test=args.test,
                indices=args.indices,
                testdata=args.testdata,
                assets=args.assets,
            )
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for line in actions:
            print(line)
    report = verify_layout(args.dataset, args.data_dir, args.sample)
    print(report.text())
    if not args.check:
        return 0 if report.ok else 1
    from loftr.data.check import DEFAULT_JOBS, check_files, report_lines

    checked, problems = check_files(args.dataset, args.data_dir, args.jobs or DEFAULT_JOBS)
    print("\n".join(report_lines(checked, problems)))
    return 0 if report.ok and not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
