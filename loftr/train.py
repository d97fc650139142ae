"""`python -m loftr.train [group=option ...] [key=value ...]`: compose a run and fit it.

python -m loftr.train                                  # synthetic data, CPU, minutes
python -m loftr.train matcher=ot supervision=sparse --cfg job --resolve
python -m loftr.train experiment=indoor_ds hardware=gpus4 accumulate=16
python -m loftr.train hydra.run.dir=outputs/default/DIR ckpt_path=last   # resume that run
"""

import sys

import hydra
from omegaconf import DictConfig

from loftr.cli import one_line_errors, set_run_dir
from loftr.config.command_line import check_command_line


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    from loftr.lightning.fit import train_command  # heavy imports after --help / --cfg

    set_run_dir(cfg)
    return train_command(cfg)  # validates, builds and fits; the sweep objective


if __name__ == "__main__":
    one_line_errors(check_command_line)("train", sys.argv[1:])  # config faults in one line
    main()
