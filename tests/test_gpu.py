"""The GPU check's parts as tests, on CUDA (`pytest -m gpu`); skipped without a CUDA device.

On a bare GPU machine `make gpu-check` installs the carried wheels into `.gpu_site` first; then
`PYTHONPATH=.gpu_site:. python3 -m pytest -m gpu` (README, "GPU check").
"""

from __future__ import annotations

import pytest
import torch

from experiments.gpu import check

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 parity means fp32: no TF32 in convolutions or matrix products."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("match_type", check.MATCH_TYPES)
def test_parity_on_cuda(match_type):
    result = check.check_parity("cuda", (640, 480), match_type)
    assert result["ok"], result


@pytest.mark.parametrize("precision", check.PRECISIONS)
def test_training_on_cuda_has_no_nonfinite_step(tmp_path, monkeypatch, precision):
    monkeypatch.chdir(tmp_path)
    result = check.train(
        "cuda",
        precision,
        model="loftr_small",
        size=(320, 240),
        steps=10,
        synthetic={"train_scenes": 1, "frames_per_scene": 6},
        overrides=[],
    )
    assert result["steps"] == 10, result
    assert result["nonfinite_losses"] == 0 and result["skipped_steps"] == 0, result


def test_ddp_with_two_processes_on_one_gpu():
    result = check.check_ddp("cuda", steps=2)
    assert result["ok"], result
