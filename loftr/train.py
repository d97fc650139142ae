"""`python -m loftr.train [group=option ...] [key=value ...]`: compose a run and fit it.

python -m loftr.train                                  # synthetic data, CPU, minutes
python -m loftr.train matcher=ot supervision=sparse --cfg job --resolve
python -m loftr.train experiment=indoor_ds hardware=gpus4 accumulate=16
python -m loftr.train ckpt_path=last                   # resume the newest run of this name
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import loftr.lightning.schedule  # noqa: F401  (registers the LR-scaling resolvers)
from loftr.config import model_config


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from loftr.lightning.run import train  # heavy imports after Hydra's --help / --cfg paths

    model_config(cfg.model)  # fail fast, naming the key, before any data is touched
    with open_dict(cfg):
        cfg.run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    result = train(cfg)
    return result["metrics"] and float(
        sum(m["auc@10"] for m in result["metrics"].values()) / len(result["metrics"])
    )


if __name__ == "__main__":
    main()
