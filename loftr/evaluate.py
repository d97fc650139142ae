"""`python -m loftr.evaluate ckpt_path=PATH dataset=scannet_test_1500`: test a checkpoint.

    python -m loftr.evaluate ckpt_path=weights/indoor_ds.ckpt dataset=scannet_test_1500 \
        model.coarse.temp_bug_fix=false model.match_coarse.border_rm=0 model_from_ckpt=false
    python -m loftr.evaluate ckpt_path=outputs/default/<time>/checkpoints/last.ckpt \
        dataset=synthetic

Our checkpoints carry their model config, which is used (`model_from_ckpt`) with the command
line's `model.*` overrides on top. Predictions are cached (`cache_dir`); a second call with the
same checkpoint and configs reuses them. Writes `metrics.json` (AUC@5/10/20, precision, the
protocol) and logs to W&B. `ckpt=` is the deprecated name of `ckpt_path=`.

    python -m loftr.evaluate ckpt_path=PATH dataset=hpatches           # the paper's Table 1
    python -m loftr.evaluate ckpt_path=PATH dataset=hpatches_heldout   # held-out photographs

HPatches-layout sets are scored by the homography protocol (docs/hpatches.md#protocol):
corner-error AUC@3/5/10 over all pairs and per kind (illumination, viewpoint).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from loftr.cli import checkpoint_option, hydra_overrides, one_line_errors, set_run_dir
from loftr.config.command_line import check_command_line


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from loftr.evaluation.testing import evaluate
    from loftr.lightning.loggers import log_evaluation

    set_run_dir(cfg)
    checkpoint_option(cfg, hydra_overrides())
    result = evaluate(cfg, hydra_overrides())  # validates, then evaluates
    log_evaluation(cfg, result)
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(f"{result['n_pairs']} pairs  {metrics}\nprotocol {result['protocol_key']}")
    for kind, values in result.get("subsets", {}).items():  # a homography set's kinds
        shown = (f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        print(f"  {kind:<13} " + "  ".join(shown))
    print(f"metrics: {cfg.run_dir}/metrics.json")


if __name__ == "__main__":
    one_line_errors(check_command_line)("evaluate", sys.argv[1:])  # config faults in one line
    main()
