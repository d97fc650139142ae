"""`python -m loftr.train [group=option ...] [key=value ...]`: compose a run and fit it.

python -m loftr.train                                  # synthetic data, CPU, minutes
python -m loftr.train matcher=ot supervision=sparse --cfg job --resolve
python -m loftr.train experiment=indoor_ds hardware=gpus4 accumulate=16
python -m loftr.train hydra.run.dir=outputs/default/DIR ckpt_path=last   # resume that run
"""

from __future__ import annotations

import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from loftr.cli import one_line_errors
from loftr.config.command_line import check_command_line

WHERE = {
    "training": "during training",
    "validation": "during validation (the resumed run validates that epoch again)",
    "the end": "after the last validation",
    "at once": "at once by a second SIGINT (nothing saved since the last last.ckpt)",
}


def report_stop(result: dict, run_dir: str) -> None:
    """Say where a stop signal stopped the run and how to resume it; exit with 128 + signal.

    SIGUSR1/SIGUSR2 then go to the handler installed before training, if any: submitit's
    requeues the job (and exits itself) now that the checkpoint is on disk.
    """
    name, step = result["stopped_by"], result["trainer"].global_step
    print(
        f"stopped by {name} after step {step}, {WHERE[result['stopped_in']]}; resume with the "
        f"same command and hydra.run.dir={run_dir}",
        flush=True,
    )
    signum = signal.Signals[name]
    handler = signal.getsignal(signum)
    if signum in (signal.SIGUSR1, signal.SIGUSR2) and callable(handler):
        handler(signum, None)
    raise SystemExit(128 + signum)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    from loftr.lightning.run import train  # heavy imports after Hydra's --help / --cfg paths

    with open_dict(cfg):
        cfg.run_dir = cfg.run_dir or HydraConfig.get().runtime.output_dir
    result = train(cfg)
    if result["stopped_by"]:
        report_stop(result, cfg.run_dir)
    # a sweeper optimising the run reads this: the mean AUC@10 over the validation sets
    return result["metrics"] and float(
        sum(m["auc@10"] for m in result["metrics"].values()) / len(result["metrics"])
    )


if __name__ == "__main__":
    one_line_errors(check_command_line)("train", sys.argv[1:])  # config faults in one line
    main()
