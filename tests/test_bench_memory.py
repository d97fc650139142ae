"""The training-step memory benchmark (experiments/bench/bench_memory.py): its stages and report."""

from __future__ import annotations

import pytest

from experiments.bench import bench_memory

pytestmark = pytest.mark.usefixtures("in_repo")  # the default run's data/synthetic


@pytest.mark.slow  # the paper model's warm-up and measured training steps: ~20 s here
def test_one_measured_step_reports_every_stage():
    result = bench_memory.measure(128, 96, 1, ["model.match_coarse.train_pad_num_gt_min=20"])
    assert list(result["stages"]) == list(bench_memory.STAGES)
    for stage in result["stages"].values():
        assert 0 < stage["rss_start_mib"] <= stage["peak_mib"]
        assert stage["rss_end_mib"] <= stage["peak_mib"]
    assert result["peak_mib"] == max(s["peak_mib"] for s in result["stages"].values())
    assert result["untrimmed_peak_mib"] > result["baseline_mib"] > 0 and result["step_s"] > 0


def test_report_compares_the_two_settings():
    def setting(peak: float, seconds: float, overrides: list[str]) -> dict:
        stage = {"rss_start_mib": 100.0, "peak_mib": peak, "rss_end_mib": 90.0}
        return {
            "overrides": overrides,
            "baseline_mib": 50.0,
            "untrimmed_peak_mib": peak + 10,
            "step_s": seconds,
            "stages": {name: stage for name in bench_memory.STAGES},
            "peak_mib": peak,
        }

    report = {
        "date": "2026-12-01T12:00:00Z",
        "command": "python -m experiments.bench.bench_memory",
        "machine": {"cpu": "a CPU", "torch": "2.13.0"},
        "size": "640x480",
        "settings": {
            "plain": setting(5000.0, 10.0, []),
            "checkpointed": setting(3000.0, 13.0, ["model.checkpoint_activations=true"]),
        },
    }
    text = bench_memory.markdown(report)
    assert "## checkpointed (`model.checkpoint_activations=true`)" in text
    assert "| backward | 100.0 | 5000.0 | 90.0 |" in text
    assert text.rstrip().endswith(
        "Checkpointing: peak of the live tensors 5000.0 -> 3000.0 MiB (-2000 MiB), untrimmed "
        "first-step peak 5010.0 -> 3010.0 MiB; step 10.0 -> 13.0 s (x1.30)."
    )
