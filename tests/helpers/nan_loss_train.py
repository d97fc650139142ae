"""`python tests/helpers/nan_loss_train.py [overrides]`: `loftr.train` with one injected NaN loss.

On rank `NAN_LOSS_RANK`, the `NAN_LOSS_CALL`-th training loss (counted from 1) gets a NaN
added: the loss is NaN while its gradients stay finite, so only the loss check can see it. The
DDP launcher starts this same script for the other ranks, so each of them is patched alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import torch.distributed as dist

from loftr.losses import LoFTRLoss
from loftr.train import main


def inject_nan_loss(rank: int, call: int) -> None:
    real_forward, calls = LoFTRLoss.forward, {"n": 0}

    def forward(self, data):
        out = real_forward(self, data)
        if self.training:
            calls["n"] += 1
            this_rank = dist.get_rank() if dist.is_initialized() else 0
            if calls["n"] == call and this_rank == rank:
                data["loss"] = data["loss"] + float("nan")
        return out

    LoFTRLoss.forward = forward


if __name__ == "__main__":
    inject_nan_loss(int(os.environ["NAN_LOSS_RANK"]), int(os.environ["NAN_LOSS_CALL"]))
    # `loftr.train`'s own entry point, with its config directory given absolutely
    conf = Path(__file__).resolve().parents[2] / "conf"
    hydra.main(config_path=str(conf), config_name="train", version_base="1.3")(main.__wrapped__)()
