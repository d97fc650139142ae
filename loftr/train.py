"""`python -m loftr.train [group=option ...] [key=value ...]`: compose a run and fit it.

python -m loftr.train                                  # synthetic data, CPU, minutes
python -m loftr.train matcher=ot supervision=sparse --cfg job --resolve
python -m loftr.train experiment=indoor_ds hardware=gpus4 accumulate=16
python -m loftr.train hydra.run.dir=outputs/default/DIR ckpt_path=last   # resume that run
"""

from __future__ import annotations

import signal

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import loftr.lightning.schedule  # noqa: F401  (registers the LR-scaling resolvers)
from loftr.cli import one_line_errors
from loftr.config import validate_run_config


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    from loftr.lightning.run import train  # heavy imports after Hydra's --help / --cfg paths

    validate_run_config(cfg)  # fail fast, naming the key, before any data is touched
    with open_dict(cfg):
        cfg.run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    result = train(cfg)
    if result["stopped_by"]:
        step = result["trainer"].global_step
        print(
            f"stopped by {result['stopped_by']} after step {step}; last.ckpt holds it: resume "
            f"with the same command and hydra.run.dir={cfg.run_dir}"
        )
        raise SystemExit(128 + signal.Signals[result["stopped_by"]].value)
    # a sweeper optimising the run reads this: the mean AUC@10 over the validation sets
    return result["metrics"] and float(
        sum(m["auc@10"] for m in result["metrics"].values()) / len(result["metrics"])
    )


if __name__ == "__main__":
    main()
