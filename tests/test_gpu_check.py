"""The GPU check on a CPU machine: its clean skip, its report, its wheels and its parts at tiny
sizes (experiments/gpu)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import zipfile

import pytest
import torch

from experiments.gpu import check, wheels
from tests.helpers import ROOT

PASSING = {
    "date": "2026-12-01 12:00 UTC",
    "plan": "full",
    "budget_s": 420.0,
    "wall_s": 301.5,
    "ok": True,
    "environment": {
        "python": "3.12.3",
        "torch": "2.11.0+cu128",
        "device": "cuda",
        "gpu": "NVIDIA H200",
        "gpu_memory_gib": 139.8,
        "capability": "9.0",
        "cuda": "12.8",
        "wheels_installed": ["kornia==0.9.0", "omegaconf==2.3.1"],
        "wheels_present": 3,
    },
    "parity": {
        "dual_softmax": {
            "ok": True,
            "size": "640x480",
            "kornia": {
                "matches_ours": 1153,
                "matches_kornia": 1153,
                "common_matches": 1153,
                "max_keypoint_diff_px": 6.1e-5,
            },
            "original_style": {
                "matches_ours": 1153,
                "matches_kornia": 1153,
                "common_matches": 1153,
                "max_keypoint_diff_px": 3.0e-5,
            },
        },
    },
    "training": {
        "16-mixed": {
            "ok": True,
            "model": "loftr_small",
            "size": "320x240",
            "steps": 50,
            "loss_first": 4.5,
            "loss_last": 2.25,
            "nonfinite_losses": 0,
            "skipped_steps": 0,
            "scaler_skipped_steps": 2,
        },
    },
    "step": {
        "bf16-mixed": {
            "ok": True,
            "model": "loftr",
            "size": "640x480",
            "step_ms": 95.5,
            "peak_memory_gib": 3.12,
        },
    },
    "inference": [
        {
            "ok": True,
            "size": "1024x768",
            "mode": "compile",
            "ours_ms": 20.0,
            "kornia_ms": 40.0,
            "ratio": 0.5,
            "matches_ours": 3051,
            "matches_kornia": 3051,
        }
    ],
    "ddp": {
        "ok": True,
        "backend": "gloo",
        "steps": 10,
        "losses_finite": True,
        "max_parameter_sum_difference": 0.0,
        "refused": [{"backend": "nccl", "error": "DistBackendError: Duplicate GPU detected"}],
    },
}


def test_without_cuda_the_check_is_one_line_and_exit_0():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    done = subprocess.run(
        [sys.executable, "-m", "experiments.gpu.check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        f"gpu check: skipped, no CUDA device (torch {torch.__version__})"
    ]


def test_report_lists_every_part_and_its_numbers():
    text = check.format_report(PASSING)
    lines = text.splitlines()
    assert (
        lines[0]
        == "LoFTR GPU check, 2026-12-01 12:00 UTC: PASS in 301.5 s (budget 420 s, plan full)"
    )
    assert (
        lines[1]
        == "  NVIDIA H200 (139.8 GiB, sm 9.0), CUDA 12.8; torch 2.11.0+cu128, Python 3.12.3"
    )
    assert lines[2] == "  wheels: 2 installed into .gpu_site, 3 already on the machine"
    assert (
        "  dual_softmax   PASS  640x480: 1153/1153/1153 common/ours/other, max diff 6.1e-05 px"
        " | 1153/1153/1153 common/ours/other, max diff 3.0e-05 px"
    ) in lines
    assert (
        "  16-mixed       PASS  loftr_small 320x240, 50 steps: 4.5 -> 2.25, non-finite 0, "
        "fp16 scaler skips 2"
    ) in lines
    assert "  bf16-mixed     PASS  loftr 640x480: 95.5 ms, 3.12 GiB" in lines
    assert "  1024x768  compile PASS  20.0 / 40.0 = 0.500, 3051 / 3051" in lines
    assert (
        "DDP, 2 processes on one device: PASS  gloo, 10 steps, losses finite: True, "
        "parameters equal across ranks: True"
    ) in lines
    assert "  nccl refused (DistBackendError: Duplicate GPU detected)" in lines
    assert lines[-1] == "result: PASS"


def test_report_names_the_failed_parts():
    report = copy.deepcopy(PASSING)
    report["ok"] = False
    report["parity"]["sinkhorn"] = {"ok": False, "error": "RuntimeError: CUDA out of memory"}
    report["ddp"] = {"ok": False, "error": "not run: the 420 s budget was spent"}
    lines = check.format_report(report).splitlines()
    assert "FAIL in 301.5 s" in lines[0]
    assert "  sinkhorn       FAIL  RuntimeError: CUDA out of memory" in lines
    assert "DDP, 2 processes on one device: FAIL  not run: the 420 s budget was spent" in lines
    assert lines[-1] == "result: FAIL: parity sinkhorn, ddp"


@pytest.mark.parametrize(
    "marker, holds",
    [
        ("", True),
        ('python_version < "3.11"', False),
        ("python_version >= '3.8'", True),
        ('python_version < "3.13" and sys_platform == "linux"', True),
        ('sys_platform == "win32"', False),
        ('extra == "socks"', False),
    ],
)
def test_dependency_markers_are_read_for_python_3_12_on_linux(marker, holds):
    assert wheels._marker_holds(marker) is holds


def test_every_carried_wheel_is_pinned():
    pins = wheels.requirements()
    assert {"kornia==0.9.0", "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3"} <= set(pins)
    assert all("==" in p for p in pins)
    assert not any(wheels.normalise(p.split("==")[0]) == "torch" for p in pins)


def _fake_wheel(folder, name: str, version: str) -> None:
    """A minimal pure-Python wheel holding the module `name`."""
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        whl.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        whl.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        whl.writestr(f"{info}/RECORD", "")


@pytest.mark.parametrize("with_pip", [True, False], ids=["pip", "unpacked"])
def test_only_missing_wheels_are_installed_into_the_side_folder(tmp_path, monkeypatch, with_pip):
    if not with_pip:  # a Python without pip: the wheels are unpacked
        monkeypatch.setattr(wheels, "has_pip", lambda: False)
    folder, site = tmp_path / "wheels", tmp_path / "site"
    folder.mkdir()
    _fake_wheel(folder, "gpu_check_probe", "1.0")
    _fake_wheel(folder, "pytest", "0.0.1")  # installed here: kept, not replaced
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = wheels.install_missing(folder, site)
    assert result["installed"] == ["gpu-check-probe==1.0"]
    assert result["present"] == [f"pytest {pytest.__version__}"]
    assert (site / "gpu_check_probe" / "__init__.py").exists()
    assert not (site / "pytest").exists()
    assert sys.path[0] == str(site)


@pytest.mark.parametrize("match_type", check.MATCH_TYPES)
def test_parity_part_on_cpu(match_type):
    result = check.check_parity("cpu", (128, 96), match_type)
    assert result["ok"], result
    assert result["original_style"]["matches_ours"] > 10
    if match_type == "dual_softmax":
        assert result["kornia"]["same_matches"]
    else:
        assert result["kornia"] is None  # kornia ships no Sinkhorn


@pytest.mark.slow  # writes a synthetic set and runs a Lightning fit: ~25 s here
def test_training_part_on_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = check.train(
        "cpu",
        "32-true",
        model="loftr_small",
        size=(160, 120),
        steps=3,
        synthetic={"train_scenes": 1, "frames_per_scene": 4},
        overrides=check.TINY,
    )
    assert result["steps"] == 3
    assert result["nonfinite_losses"] == 0 and result["skipped_steps"] == 0
    assert result["loss_first"] > 0 and result["step_ms"] > 0 and result["peak_memory_gib"] > 0


@pytest.mark.slow  # two spawned ranks, each importing torch and the project: ~30 s here
def test_ddp_part_on_cpu_over_gloo():
    # the check's 120 s bound is for a GPU machine; two ranks importing torch on a busy 2-core
    # machine took longer than that once
    result = check.check_ddp("cpu", steps=1, timeout_s=600)
    assert result["ok"], result
    assert result["backend"] == "gloo" and result["refused"] == []
