"""`model.checkpoint_activations`: the same loss, gradients and BatchNorm statistics as without."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf

from loftr.losses import LoFTRLoss
from loftr.model import LoFTR
from loftr.model.activation_checkpointing import CheckpointedStage
from loftr.supervision import compute_supervision_coarse, compute_supervision_fine

H, W = 96, 128


def tiny_config(match_type: str, sparse: bool) -> dict:
    """The paper model's keys at the widths of `debug=fast`."""
    cfg = OmegaConf.to_container(OmegaConf.load("conf/model/loftr.yaml"))
    cfg["resnetfpn"] = {"initial_dim": 32, "block_dims": [32, 48, 64]}
    cfg["coarse"].update(d_model=64, nhead=4, layer_names=["self", "cross"])
    cfg["fine"].update(d_model=32, nhead=4)
    cfg["match_coarse"].update(match_type=match_type, sparse_spvs=sparse, train_pad_num_gt_min=8)
    return cfg


def shifted_pair_batch(masked: bool) -> dict:
    """A photograph and its copy shifted by (6, 4) px, the ground truth from that homography."""
    img = skimage.data.camera().astype(np.float32) / 255.0
    shift = np.array([[1.0, 0, 6.0], [0, 1.0, 4.0], [0, 0, 1.0]], dtype=np.float32)
    batch = {
        "image0": torch.from_numpy(img[100 : 100 + H, 200 : 200 + W].copy())[None, None],
        "image1": torch.from_numpy(img[96 : 96 + H, 194 : 194 + W].copy())[None, None],
        "H_0to1": torch.from_numpy(shift)[None],
        "H_1to0": torch.from_numpy(np.linalg.inv(shift).astype(np.float32))[None],
        "dataset_name": ["Homographies"],
    }
    if masked:  # the right quarter of image 1 is padding
        mask = torch.ones(1, H // 8, W // 8, dtype=torch.bool)
        mask[..., -(W // 32) :] = False
        batch["mask0"] = torch.ones_like(mask)
        batch["mask1"] = mask
    return batch


def loss_and_gradients(model: LoFTR, cfg: dict, masked: bool) -> tuple[torch.Tensor, dict]:
    batch = shifted_pair_batch(masked)
    torch.manual_seed(1)  # the ground-truth pads draw from torch's generator
    compute_supervision_coarse(batch, cfg)
    model(batch)
    compute_supervision_fine(batch, cfg)
    LoFTRLoss(cfg)(batch)
    model.zero_grad(set_to_none=True)
    batch["loss"].backward()
    return batch["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "match_type, sparse, masked",
    [("dual_softmax", False, False), ("sinkhorn", True, True)],
    ids=["ds-dense", "ot-sparse-masked"],
)
def test_checkpointing_gives_the_same_loss_gradients_and_statistics(match_type, sparse, masked):
    cfg = tiny_config(match_type, sparse)
    torch.manual_seed(0)
    plain = LoFTR(cfg).train()
    checkpointed = LoFTR(cfg | {"checkpoint_activations": True}).train()
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.backbone.layer1.checkpoint_activations
    assert checkpointed.loftr_coarse.checkpoint_activations
    assert not plain.backbone.layer1.checkpoint_activations

    loss, grads = loss_and_gradients(plain, cfg, masked)
    calls = []
    hook = checkpointed.backbone.layer1[0].register_forward_hook(lambda *a: calls.append(1))
    loss_c, grads_c = loss_and_gradients(checkpointed, cfg, masked)
    hook.remove()
    assert len(calls) == 2  # the stage ran again in backward: it was checkpointed

    assert torch.isfinite(loss) and loss_c == loss
    assert set(grads_c) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # the recomputation is not a second step: running statistics and counters as without it
    for (name, buf), buf_c in zip(plain.named_buffers(), checkpointed.buffers(), strict=True):
        torch.testing.assert_close(buf_c, buf, rtol=0, atol=0, msg=name)


def test_checkpointed_stages_keep_the_state_dict_and_inference():
    cfg = tiny_config("dual_softmax", False)
    model = LoFTR(cfg | {"checkpoint_activations": True})
    assert isinstance(model.backbone.layer2, CheckpointedStage)
    assert set(model.state_dict()) == set(LoFTR(cfg).state_dict())
    reference = LoFTR(cfg).eval()
    reference.load_state_dict(model.state_dict())
    model.eval()
    with torch.no_grad():  # no autograd: nothing is checkpointed, the fast path runs
        data, expected = shifted_pair_batch(False), shifted_pair_batch(False)
        model(data)
        reference(expected)
    torch.testing.assert_close(data["mkpts0_f"], expected["mkpts0_f"])


def _saved_bytes(model: LoFTR, cfg: dict, masked: bool) -> int:
    """Bytes autograd keeps for backward over one forward and loss (each storage once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_and_gradients(model, cfg, masked)
    return sum(storages.values())


@pytest.mark.parametrize(
    "match_type, sparse, masked",
    [("dual_softmax", False, False), ("sinkhorn", True, True)],
    ids=["ds-dense", "ot-sparse-masked"],
)
def test_recomputed_attention_gives_identical_loss_and_gradients(match_type, sparse, masked):
    """The linear attention's intermediates are recomputed in backward (on by default): the same
    loss and gradients bit for bit, less kept for backward."""
    cfg = tiny_config(match_type, sparse)
    torch.manual_seed(0)
    model = LoFTR(cfg).train()
    attentions = [
        layer.attention for t in (model.loftr_coarse, model.loftr_fine) for layer in t.layers
    ]
    assert attentions and all(a.recompute for a in attentions)
    loss, grads = loss_and_gradients(model, cfg, masked)
    kept = _saved_bytes(model, cfg, masked)
    for attention in attentions:
        attention.recompute = False
    loss_k, grads_k = loss_and_gradients(model, cfg, masked)
    kept_k = _saved_bytes(model, cfg, masked)
    assert torch.equal(loss, loss_k)
    for name, grad in grads_k.items():
        assert torch.equal(grads[name], grad), name
    assert kept < kept_k - 100_000, (kept, kept_k)


def test_layer_checkpointing_turns_the_attention_recomputation_off():
    model = LoFTR(tiny_config("dual_softmax", False) | {"checkpoint_activations": True})
    assert not any(layer.attention.recompute for layer in model.loftr_coarse.layers)


def test_compiled_training_gives_the_plain_loss_and_gradients():
    """`model.compile=true` in training traces the attention without its own checkpoint."""
    cfg = tiny_config("dual_softmax", False)
    torch.manual_seed(0)
    plain = LoFTR(cfg).train()
    compiled = LoFTR(cfg | {"compile": True}).train()
    compiled.load_state_dict(plain.state_dict())
    loss, grads = loss_and_gradients(plain, cfg, False)
    loss_c, grads_c = loss_and_gradients(compiled, cfg, False)
    torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=0)
    for name, grad in grads.items():  # the compiled kernels sum in their own order
        assert (grads_c[name] - grad).norm() <= 1e-4 * grad.norm() + 1e-12, name
