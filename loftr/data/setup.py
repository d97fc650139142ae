"""Set up and verify the ``data/`` layout of the original LoFTR (TRAINING.md,
docs/original.md#data-layout).

Usage::

    python -m loftr.data.setup scannet --train /path/to/scannet_train --test /path/to/scannet_test \
        [--indices scannet_indices.tar] [--testdata scannet_test_1500.tar] \
        [--assets /path/to/LoFTR/assets] [--data-dir data]
    python -m loftr.data.setup megadepth --train /path/to/megadepth [--test PATH] \
        [--indices megadepth_indices.tar] [--testdata megadepth_test_1500.tar] [--data-dir data]
    python -m loftr.data.setup hpatches --testdata hpatches-sequences-release.tar.gz [--test PATH]
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

For HPatches (docs/hpatches.md#set-up) the release is extracted, or ``--test`` (the folder holding
``hpatches-sequences-release/``) linked, into ``data/hpatches/``; the report names every missing
image or homography file and every folder that is not an ``i_*`` / ``v_*`` sequence, and
``--check`` reads each image and homography (a 3x3 finite invertible matrix).

The paths it makes and the set-up step each "missing" error quotes are in
:mod:`loftr.data.layout`; this module is the command only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

from loftr.data.layout import ASSETS, LAYOUT, SCANNET_SCENE
from loftr.data.verify import verify_layout

# What identifies the top folder of an extracted archive.
_INDEX_MARKERS = {
    "scannet": ("scene_data",),
    "megadepth": ("scene_info_0.1_0.7", "trainvaltest_list"),
}


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
            if any(SCANNET_SCENE.match(c.name) for c in folder.iterdir() if c.is_dir()):
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


def build_hpatches(
    data_dir: Path, test: Path | None = None, testdata: Path | None = None
) -> list[str]:
    """Link (``test``) or extract (``testdata``) the HPatches sequences into
    ``<data_dir>/hpatches/hpatches-sequences-release`` (docs/hpatches.md#set-up).

    Args:
        data_dir: the project's data folder (``data``).
        test: the release folder itself, or a folder holding it.
        testdata: ``hpatches-sequences-release.tar.gz``.

    Returns:
        One line per action.
    """
    from loftr.data.hpatches import RELEASE_FOLDER

    root = data_dir / LAYOUT["hpatches"]["root"]
    sources = []
    if testdata is not None:
        out = extract_archive(testdata, root / "extracted" / Path(testdata).name.split(".")[0])
        sources.append((testdata, find_folder_with(out, (RELEASE_FOLDER,))))
    if test is not None:
        test = Path(test)
        holder = test.parent if test.name == RELEASE_FOLDER else test
        sources.append((test, holder if (holder / RELEASE_FOLDER).is_dir() else None))
    done = []
    for given, holder in sources:
        link = root / RELEASE_FOLDER
        if holder is None:
            done.append(f"!! {given} holds no {RELEASE_FOLDER} folder; not linked")
        elif link.exists() or link.is_symlink():
            done.append(f"skip   {link} exists (left alone)")
        else:
            root.mkdir(parents=True, exist_ok=True)
            link.symlink_to((holder / RELEASE_FOLDER).resolve())
            done.append(f"linked {link} -> {(holder / RELEASE_FOLDER).resolve()}")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m loftr.data.setup`` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m loftr.data.setup",
        description="Make the data/ symlinks of LoFTR's TRAINING.md, extract index and test "
        "archives, and verify the layout.",
    )
    parser.add_argument("dataset", choices=sorted(LAYOUT))
    parser.add_argument("--train", type=Path, help="raw train data (ln -s TRAIN/* data/.../train)")
    parser.add_argument(
        "--test",
        type=Path,
        help="raw test data (MegaDepth: defaults to --train; HPatches: the folder holding "
        "hpatches-sequences-release)",
    )
    parser.add_argument("--indices", type=Path, help="scannet_indices.tar / megadepth_indices.tar")
    parser.add_argument(
        "--testdata",
        type=Path,
        help="scannet_test_1500.tar / megadepth_...tar / hpatches-sequences-release.tar.gz",
    )
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
            if args.dataset == "hpatches":
                actions = build_hpatches(args.data_dir, test=args.test, testdata=args.testdata)
            else:
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
