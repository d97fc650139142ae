"""The wheels the GPU check carries, and their installation on the GPU machine.

    python -m experiments.gpu.wheels [--dest experiments/gpu/wheels]     # = make gpu-wheels

Here (a machine with the package index): downloads every wheel of `requirements.txt` for
CPython 3.12 on manylinux x86_64, without dependencies (the list names them all), builds the one
package published as an sdist only (antlr4-python3-runtime) into a wheel, then checks the set:
a Python 3.12 target install into a temporary folder must take every pin from the folder alone,
and every dependency the installed packages declare must be installed there or be one the GPU
machine brings (`MACHINE_PROVIDES`). On the GPU machine `install_missing` installs those wheels
whose distribution is not installed yet into a folder of their own (`pip install --no-index
--no-deps --target`), so the machine's CUDA torch is never replaced.

Only the standard library is used: this module runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
WHEELS = HERE / "wheels"
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "any")
# published as an sdist only: built here (pure Python, so the wheel fits any 3.x)
SDIST_ONLY = ("antlr4-python3-runtime",)
# what the GPU machine has installed (torch, Lightning, h5py, OpenCV, scikit-image and what
# those depend on), so the wheels need not carry it
MACHINE_PROVIDES = (
    "torch",
    "numpy",
    "lightning",
    "lightning-utilities",
    "pytorch-lightning",
    "torchmetrics",
    "fsspec",
    "tqdm",
    "packaging",
    "typing-extensions",
    "setuptools",
    "h5py",
    "opencv-python",
    "opencv-python-headless",
    "scikit-image",
    "scipy",
    "networkx",
    "pillow",
    "imageio",
    "tifffile",
    "lazy-loader",
)
# the carry limit of the device machine's working tree (the run tool's 64 MiB)
CARRY_LIMIT_MIB = 64


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path = REQUIREMENTS) -> list[str]:
    """The pins of a requirements file, comments and blank lines left out."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def wheel_distribution(path: Path) -> tuple[str, str]:
    """`(normalised name, version)` from a wheel's file name (`name-version-tags.whl`)."""
    name, version = path.name.split("-")[:2]
    return normalise(name), version


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def has_pip() -> bool:
    """Whether this Python has pip, asked of a child process: looking pip up in this one
    (`importlib.util.find_spec("pip")`) makes setuptools' distutils shim step aside for the rest
    of the process, after which `torch.compile`'s import of setuptools fails."""
    probe = [sys.executable, "-m", "pip", "--version"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def _target_options() -> list[str]:
    options = ["--python-version", PYTHON_VERSION, "--only-binary=:all:", "--no-deps"]
    for platform in PLATFORMS:
        options += ["--platform", platform]
    return options


def download(dest: Path = WHEELS, requirements_path: Path = REQUIREMENTS) -> list[Path]:
    """Download (and for `SDIST_ONLY`, build) every wheel of the requirements into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = requirements(requirements_path)
    built = [p for p in pins if normalise(re.split(r"[=<>!~ ]", p, maxsplit=1)[0]) in SDIST_ONLY]
    binary = [p for p in pins if p not in built]
    _pip("download", "-q", *_target_options(), "-d", str(dest), *binary)
    if built:
        _pip("wheel", "-q", "--no-deps", "-w", str(dest), *built)
    return sorted(dest.glob("*.whl"))


def _declared_dependencies(metadata: str) -> list[str]:
    """Requirement names a wheel's METADATA declares for Python 3.12 on Linux, without extras.

    A small reading of the markers (python_version, sys_platform, platform_system, extra),
    enough for these packages; a marker it cannot judge counts as true.
    """
    names = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        spec, _, marker = line[len("Requires-Dist:") :].partition(";")
        if _marker_holds(marker.strip()):
            names.append(normalise(re.split(r"[\s\[=<>!~(;]", spec.strip(), maxsplit=1)[0]))
    return names


def _marker_holds(marker: str) -> bool:
    if not marker:
        return True
    if "extra" in marker:
        return False
    environment = {
        "python_version": PYTHON_VERSION,
        "python_full_version": PYTHON_VERSION + ".0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    expression = marker.replace('"', "'")
    for key, value in environment.items():
        expression = re.sub(rf"\b{key}\b", repr(value), expression)
    expression = re.sub(r"'(\d+(?:\.\d+)*)'", lambda m: repr(_version_key(m.group(1))), expression)
    try:
        return bool(eval(expression, {"__builtins__": {}}))  # noqa: S307 (quoted literals only)
    except Exception:
        return True


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def verify(dest: Path = WHEELS, requirements_path: Path = REQUIREMENTS) -> dict[str, object]:
    """Install the pins for Python 3.12 from `dest` alone into a temporary folder and check that
    every declared dependency is there or on the GPU machine.

    Returns:
        `{"wheels": n, "mib": size, "unmet": [(package, dependency), ...]}`.

    Raises:
        subprocess.CalledProcessError: a pin has no fitting wheel in `dest`.
    """
    with tempfile.TemporaryDirectory() as target:
        _pip(
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(dest),
            *_target_options(),
            "--target",
            target,
            *requirements(requirements_path),
        )
        installed: dict[str, str] = {}
        for info in Path(target).glob("*.dist-info"):
            installed[normalise(info.name.split("-")[0])] = (info / "METADATA").read_text()
    available = set(installed) | {normalise(n) for n in MACHINE_PROVIDES}
    unmet = [
        (name, dep)
        for name, metadata in sorted(installed.items())
        for dep in _declared_dependencies(metadata)
        if dep not in available
    ]
    wheels = sorted(dest.glob("*.whl"))
    mib = sum(w.stat().st_size for w in wheels) / 2**20
    return {"wheels": len(wheels), "mib": round(mib, 1), "unmet": unmet}


def install_missing(wheels: Path, site: Path) -> dict[str, list[str]]:
    """Install into `site` the wheels whose distributions this Python lacks; `site` first on
    `sys.path` then.

    Returns:
        `{"installed": [...], "present": [...]}`: `name==version` of the wheels installed, and
        `name version` of those the machine already had (its own version kept).
    """
    site.mkdir(parents=True, exist_ok=True)
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    missing, present = [], []
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel_distribution(wheel)
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(wheel)
            continue
        present.append(f"{name} {have}")
    if missing and has_pip():
        _pip("install", "-q", "--no-index", "--no-deps", "--target", str(site), *map(str, missing))
    else:  # no pip: a wheel's files unpacked into the folder are the package installed
        for wheel in missing:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
    importlib.invalidate_caches()
    return {"installed": ["==".join(wheel_distribution(w)) for w in missing], "present": present}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=WHEELS)
    parser.add_argument("--verify-only", action="store_true", help="check the folder only")
    args = parser.parse_args()
    if not args.verify_only:
        download(args.dest)
    result = verify(args.dest)
    print(f"{result['wheels']} wheels, {result['mib']} MiB in {args.dest}")
    for name, dep in result["unmet"]:
        print(f"  unmet: {name} needs {dep}, neither carried nor on the GPU machine")
    if result["mib"] > CARRY_LIMIT_MIB - 4:
        print(f"  over the device machine's carry limit ({CARRY_LIMIT_MIB} MiB with the tree)")
    if result["unmet"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
