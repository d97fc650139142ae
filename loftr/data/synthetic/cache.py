"""Sizes, the manifest and the generate-once cache of the synthetic sets.

``ensure_synthetic`` reuses a set whose manifest records the same generator version, format, seed
and sizes; otherwise it writes the set into a temporary folder beside the target and renames it
into place, so a reader never sees a half-written set. ``ensure_generated`` is that cache for any
generated set (the HPatches-layout set of ``loftr.data.synthetic.hpatches`` uses it too).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from loftr.data.synthetic.writers import write_megadepth, write_scannet
from loftr.errors import ConfigError, DataError

log = logging.getLogger(__name__)


#: Bump when the generated content changes, so that cached sets are regenerated.
GENERATOR_VERSION = 5
MANIFEST_NAME = "synthetic_manifest.json"
FORMATS = ("scannet", "megadepth")

#: Default sizes per format: many short scenes rather than a few long ones, so that a run sees
#: many rooms and plazas (the default run draws three pairs per scene and epoch). ScanNet: about
#: 150 MiB; MegaDepth: about 330 MiB (float32 depth at 0.5-0.75 Mpx). More scenes are one size
#: away (``--train-scenes 300``); tests pass tinier sizes.
DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "scannet": {
        "train_scenes": 36,
        "frames_per_scene": 16,
        "test_scenes": 6,
        "test_frames_per_scene": 12,
        "test_pairs_per_scene": 5,
    },
    "megadepth": {
        "train_scenes": 24,
        "frames_per_scene": 12,
        "test_scenes": 6,
        "test_frames_per_scene": 12,
        "test_pairs_per_scene": 5,
    },
}
_MIN_SIZES = {
    "train_scenes": 1,
    "frames_per_scene": 2,
    "test_scenes": 1,
    "test_frames_per_scene": 2,
    "test_pairs_per_scene": 1,
}


def resolve_sizes(format: str, sizes: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The format's ``DEFAULT_SIZES`` updated with ``sizes`` (None values keep the default).

    Raises:
        ConfigError: unknown format, unknown size key or a value below its minimum.
    """
    if format not in FORMATS:
        raise ConfigError(f"synthetic format={format!r} is not one of {list(FORMATS)}")
    resolved = dict(DEFAULT_SIZES[format])
    for key, value in (sizes or {}).items():
        if key not in resolved:
            raise ConfigError(
                f"unknown synthetic size {key!r}={value!r}; known sizes: {sorted(resolved)}"
            )
        if value is None:
            continue
        if isinstance(value, bool) or int(value) != value or int(value) < _MIN_SIZES[key]:
            raise ConfigError(
                f"synthetic size {key}={value!r} must be an integer >= {_MIN_SIZES[key]}"
            )
        resolved[key] = int(value)
    return resolved


def generate_synthetic(
    out: str | os.PathLike[str],
    format: str = "scannet",
    seed: int = 0,
    *,
    progress: bool = False,
    **sizes: int,
) -> dict[str, Any]:
    """Write one synthetic set into ``out`` (no caching; see ``ensure_synthetic``).

    Returns:
        The manifest written to ``out/synthetic_manifest.json``: generator version, format, seed,
        sizes and a summary of what was written.
    """
    resolved = resolve_sizes(format, sizes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = write_scannet if format == "scannet" else write_megadepth
    summary = writer(out, seed, resolved, progress)
    manifest = _manifest_key(format, seed, resolved)
    manifest["written"] = summary
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _manifest_key(format: str, seed: int, sizes: Mapping[str, int]) -> dict[str, Any]:
    return {
        "generator": "loftr.data.synthetic",
        "version": GENERATOR_VERSION,
        "format": format,
        "seed": int(seed),
        "sizes": dict(sizes),
    }


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a generated set, or None if ``folder`` holds none (or an unreadable one)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _matches(manifest: dict[str, Any] | None, key: dict[str, Any]) -> bool:
    return manifest is not None and all(manifest.get(k) == v for k, v in key.items())


def ensure_synthetic(
    root: str | os.PathLike[str] = "data/synthetic",
    format: str = "scannet",
    seed: int = 0,
    *,
    progress: bool = False,
    force: bool = False,
    **sizes: int,
) -> Path:
    """Generate the synthetic set on first use and return its folder ``root/<format>``.

    The set is deterministic from ``seed`` and ``sizes``; a manifest records both, and a set
    whose manifest matches is reused. Otherwise the set is written into a temporary folder beside
    it and renamed into place, so an interrupted run never leaves a half-built set and concurrent
    callers (e.g. DDP ranks) end up sharing one complete set.

    Args:
        root: parent folder; the set goes to ``root/<format>``.
        format: "scannet" or "megadepth".
        seed: seeds the scenes, textures, cameras and noise.
        progress: show a progress bar while rendering.
        force: regenerate even if a matching set exists (it is replaced once the new one is
            complete).
        **sizes: overrides of ``DEFAULT_SIZES[format]`` (``train_scenes``, ``frames_per_scene``,
            ``test_scenes``, ``test_frames_per_scene``, ``test_pairs_per_scene``).

    Returns:
        ``Path(root) / format``.

    Raises:
        ConfigError: unknown format or size.
        DataError: ``root/<format>`` exists but is not a synthetic set (it is never deleted).

    Example:
        >>> ensure_synthetic("/tmp/syn", "scannet", train_scenes=1)  # doctest: +SKIP
        PosixPath('/tmp/syn/scannet')
    """
    resolved = resolve_sizes(format, sizes)
    key = _manifest_key(format, seed, resolved)
    return ensure_generated(
        Path(root) / format,
        key,
        lambda tmp: generate_synthetic(tmp, format, seed, progress=progress, **resolved),
        force=force,
    )


def ensure_generated(
    target: str | os.PathLike[str],
    key: Mapping[str, Any],
    write: Callable[[Path], object],
    *,
    force: bool = False,
) -> Path:
    """Generate a set into ``target`` on first use: the cache behind every generated set.

    A folder whose manifest (``MANIFEST_NAME``) holds every item of ``key`` is reused. Otherwise
    ``write`` fills a temporary folder beside ``target`` (manifest included) and the folder is
    renamed into place, so an interrupted run never leaves a half-built set and concurrent
    callers (e.g. DDP ranks) end up sharing one complete set.

    Args:
        target: the set's folder.
        key: what identifies the set (generator, version, seed, sizes).
        write: writes the whole set, its manifest included, into the folder it is given.
        force: regenerate even if a matching set exists (it is replaced once the new one is
            complete).

    Returns:
        ``Path(target)``.

    Raises:
        DataError: ``target`` exists but holds no manifest, so it was not generated here (it is
            never deleted).
    """
    key = dict(key)
    target = Path(target)
    root = target.parent
    name = target.name
    if not force and _matches(read_manifest(target), key):
        return target
    if target.exists() and read_manifest(target) is None:
        raise DataError(
            f"{target} exists but has no {MANIFEST_NAME}, so it is not a set generated by "
            f"{key.get('generator')}; it is left untouched. Move it away or pick another root "
            "(ensure_synthetic(root=...), `python -m loftr.data.synthetic --root ...`, or the "
            "dataset config's root)."
        )
    root.mkdir(parents=True, exist_ok=True)
    log.info("generating %s (%s) into %s", key.get("generator"), key, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        if target.exists():
            if not force and _matches(read_manifest(target), key):  # another process was faster
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            stale = root / f".{name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, stale)  # a set with other settings (or forced): replace
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _matches(read_manifest(target), key):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race against an identical set
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def iter_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Files under ``folder`` in sorted order (relative paths); used to hash a generated set."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path.relative_to(folder)
