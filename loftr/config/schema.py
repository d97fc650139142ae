"""The typed schema of the composed `train`, `evaluate` and `match` configs.

Each primary config (conf/train.yaml, conf/evaluate.yaml, conf/match.yaml) names its schema first
in its defaults list (`train_schema`, `evaluate_schema`, `match_schema`), so every group's YAML is
merged onto these dataclasses: a value of the wrong type, a choice outside its Enum or a key the
schema does not declare fails while Hydra composes, `--cfg job` included. The values themselves
live in the YAML (`???` here: the YAML must set them); the schema holds types only, except the
Trainer's arguments (None: Lightning's default) and keys that are optional.

Closed choices are Enums whose member names are the allowed strings (OmegaConf 2.3 has no
`Literal`). A `Choice` compares, hashes, prints and JSON-encodes as its string, so code that
compares with strings is unchanged; containers that leave the process are made with
`OmegaConf.to_container(..., enum_to_str=True)` (`plain`), so checkpoints and logs hold strings.

Hydra's `+key=value` and `++key=value` add keys past a structured node (OmegaConf's force-add), so
`check_additions` holds added keys to the schema before composing; the entry points
(`loftr.config.command_line`) and the tests' compose helper call it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from omegaconf import MISSING, DictConfig, OmegaConf

from loftr.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class Choice(str, Enum):
    """A closed config choice: its name is its value, and it reads as that string."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def _choice(name: str, values: Sequence[str]) -> type[Choice]:
    """A Choice whose members are `values` (names that are not identifiers, e.g. `32-true`)."""
    return Choice(name, {value: value for value in values})  # type: ignore[return-value]


# a number as written: an int stays an int, so a message quotes the value the user typed
Number = int | float

Attention = _choice("Attention", ("linear", "full"))
MatchType = _choice("MatchType", ("dual_softmax", "sinkhorn"))
CoarseLoss = _choice("CoarseLoss", ("focal", "cross_entropy"))
FineLoss = _choice("FineLoss", ("l2_with_std", "l2"))
BackboneType = _choice("BackboneType", ("ResNetFPN",))
Optimizer = _choice("Optimizer", ("adamw", "adam"))
Scheduler = _choice("Scheduler", ("MultiStepLR", "CosineAnnealing", "ExponentialLR"))
SchedulerInterval = _choice("SchedulerInterval", ("epoch", "step"))
WarmupType = _choice("WarmupType", ("linear", "constant"))
# loftr.data.sources.SOURCES (tests/test_homographies.py compares them)
DataSource = _choice(
    "DataSource", ("ScanNet", "MegaDepth", "Homographies", "PairsWithHomography", "HPatches")
)
MonitorMode = _choice("MonitorMode", ("max", "min"))
# Lightning's precision strings (lightning.fabric.connector._PRECISION_INPUT_STR)
Precision = _choice(
    "Precision",
    (
        "transformer-engine",
        "transformer-engine-float16",
        "16-true",
        "16-mixed",
        "bf16-true",
        "bf16-mixed",
        "32-true",
        "64-true",
    ),
)

# The parameters of lightning.pytorch.Trainer.__init__, kept here so that `--help` and `--cfg`
# do not import Lightning; tests/test_config_schema.py compares them with the signature.
TRAINER_ARGUMENTS = (
    "accelerator",
    "strategy",
    "devices",
    "num_nodes",
    "precision",
    "logger",
    "callbacks",
    "fast_dev_run",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "max_time",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
    "val_check_interval",
    "check_val_every_n_epoch",
    "num_sanity_val_steps",
    "log_every_n_steps",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "deterministic",
    "benchmark",
    "inference_mode",
    "use_distributed_sampler",
    "profiler",
    "detect_anomaly",
    "barebones",
    "plugins",
    "sync_batchnorm",
    "reload_dataloaders_every_n_epochs",
    "default_root_dir",
    "enable_autolog_hparams",
    "model_registry",
)


# ------------------------------------------------------------------------------------- model
@dataclass
class ResNetFPNConf:
    initial_dim: int = MISSING
    block_dims: list[int] = MISSING


@dataclass
class CoarseConf:
    d_model: int = MISSING
    d_ffn: int = MISSING
    nhead: int = MISSING
    layer_names: list[str] = MISSING
    attention: Attention = MISSING  # type: ignore[valid-type]
    temp_bug_fix: bool = MISSING
    # the Table 6 variants' keys (loftr/model/variants.py): null is the paper model's
    # (transformer layers, the encoding added once at the input)
    layer_type: str | None = None
    pos_encoding: str | None = None


@dataclass
class FineConf:
    d_model: int = MISSING
    d_ffn: int = MISSING
    nhead: int = MISSING
    layer_names: list[str] = MISSING
    attention: Attention = MISSING  # type: ignore[valid-type]
    layer_type: str | None = None


@dataclass
class MatchCoarseConf:
    thr: Number = MISSING
    border_rm: int = MISSING
    match_type: MatchType = MISSING  # type: ignore[valid-type]  # the matcher group
    dsmax_temperature: Number = MISSING
    skh_iters: int = MISSING
    skh_init_bin_score: Number = MISSING
    skh_prefilter: bool = MISSING
    train_coarse_percent: Number = MISSING
    train_pad_num_gt_min: int = MISSING
    sparse_spvs: bool = MISSING  # the supervision group


@dataclass
class LossConf:
    coarse_type: CoarseLoss = MISSING  # type: ignore[valid-type]
    coarse_weight: Number = MISSING
    focal_alpha: Number = MISSING
    focal_gamma: Number = MISSING
    pos_weight: Number = MISSING
    neg_weight: Number = MISSING
    fine_type: FineLoss = MISSING  # type: ignore[valid-type]
    fine_weight: Number = MISSING
    fine_correct_thr: Number = MISSING


@dataclass
class ModelConf:
    variant: str = MISSING
    backbone_type: BackboneType = MISSING  # type: ignore[valid-type]
    resolution: list[int] = MISSING
    fine_window_size: int = MISSING
    fine_concat_coarse_feat: bool = MISSING
    fine_windows_only: bool = MISSING
    fine_train_max_coverage: float = MISSING
    compile: bool = MISSING
    checkpoint_activations: bool = MISSING
    resnetfpn: ResNetFPNConf = field(default_factory=ResNetFPNConf)
    coarse: CoarseConf = field(default_factory=CoarseConf)
    match_coarse: MatchCoarseConf = field(default_factory=MatchCoarseConf)
    fine: FineConf = field(default_factory=FineConf)
    loss: LossConf = field(default_factory=LossConf)


# --------------------------------------------------------------------------- the other groups
@dataclass
class HPatchesConf:
    """An HPatches-layout test set (loftr/data/hpatches.py, docs/hpatches.md)."""

    root: str = MISSING  # the folder holding hpatches-sequences-release/
    exclude: list[str] = MISSING  # sequences left out (the protocol's high-resolution ones)
    shorter_side: int = MISSING  # px: the network input's shorter side (480)
    df: int = MISSING  # both input sides are multiples of it (8)
    generate_seed: int | None = MISSING  # null: the real release; a seed: generated on first use


@dataclass
class WarpConf:
    """The random homographies' limits (loftr.data.homographies, docs/homographies.md)."""

    max_angle: Number = MISSING  # degrees, in-plane rotation in [-max_angle, max_angle]
    scale: list[Number] = MISSING  # [min, max], drawn log-uniformly
    max_perspective: Number = MISSING  # projective terms, in units of the half image size
    max_translation: Number = MISSING  # shift, as a share of the half image size
    min_visible: Number = MISSING  # share of image 0's pixels that must land inside image 1


@dataclass
class PhotometricConf:
    """The photometric changes of a homography pair (image 1; image 0 scaled by image0)."""

    brightness: Number = MISSING  # added, in [-b, b] (intensities in [0, 1])
    contrast: list[Number] = MISSING  # [min, max] factor about the mean
    gamma: list[Number] = MISSING  # [min, max] exponent, drawn log-uniformly
    noise: Number = MISSING  # the Gaussian noise's standard deviation is drawn in [0, noise]
    blur: Number = MISSING  # the Gaussian blur's sigma is drawn in [0, blur] (px)
    image0: Number = MISSING  # image 0's changes: the limits scaled towards none by this share


@dataclass
class HomographiesConf:
    """`dataset=homographies`: pairs generated from photographs (loftr.data.homographies)."""

    train_root: str | None = MISSING  # null: the packaged TRAIN_PHOTOS; a folder: its images
    val_root: str | None = MISSING  # null: the packaged HELDOUT_PHOTOS
    image_size: list[int] = MISSING  # [w, h] of both images, divisible by the coarse stride
    val_pairs_per_photo: int = MISSING  # the fixed validation pairs per photograph
    val_seed: int = MISSING  # seeds the validation pairs (the same in every run)
    warp: WarpConf = field(default_factory=WarpConf)
    photometric: PhotometricConf = field(default_factory=PhotometricConf)


@dataclass
class DatasetConf:
    name: str = MISSING
    trainval_data_source: DataSource | None = MISSING  # type: ignore[valid-type]
    test_data_source: DataSource | None = MISSING  # type: ignore[valid-type]
    # per split: a path, null, or (validation) a list of them for several sets
    train_data_root: Any = MISSING
    train_pose_root: Any = MISSING
    train_npz_root: Any = MISSING
    train_list_path: Any = MISSING
    train_intrinsic_path: Any = MISSING
    val_data_root: Any = MISSING
    val_pose_root: Any = MISSING
    val_npz_root: Any = MISSING
    val_list_path: Any = MISSING
    val_intrinsic_path: Any = MISSING
    test_data_root: Any = MISSING
    test_pose_root: Any = MISSING
    test_npz_root: Any = MISSING
    test_list_path: Any = MISSING
    test_intrinsic_path: Any = MISSING
    min_overlap_score_train: Number = MISSING
    min_overlap_score_test: Number = MISSING
    augmentation_type: str | None = MISSING
    mgdpt_img_resize: int | None = MISSING
    mgdpt_img_pad: bool = MISSING
    mgdpt_depth_pad: bool = MISSING
    mgdpt_df: int | None = MISSING
    n_samples_per_subset: int = MISSING
    sb_subset_sample_replacement: bool = MISSING
    sb_subset_shuffle: bool = MISSING
    sb_repeat: int = MISSING
    scannet_img_resize: list[int] | None = MISSING
    synthetic: dict[str, Any] | None = MISSING  # loftr.data.synthetic's arguments
    test_only: bool | None = None  # the test sets: training refuses them
    root: str | None = None  # dataset=custom: the prepared set (loftr.data.prepare's --out)
    hpatches: HPatchesConf | None = None  # test_data_source HPatches: the sequences folder
    homographies: HomographiesConf | None = None  # dataset=homographies only


@dataclass
class HardwareConf:
    accelerator: str = MISSING
    devices: Any = MISSING  # a count, a list of ids or "0,1"
    num_nodes: int = MISSING
    strategy: str = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    pin_memory: bool = MISSING
    sync_batchnorm: bool = MISSING
    benchmark: bool = MISSING


@dataclass
class OptimConf:
    optimizer: Optimizer = MISSING  # type: ignore[valid-type]
    adam_decay: Number = MISSING
    adamw_decay: Number = MISSING
    canonical_bs: int = MISSING
    canonical_lr: Number = MISSING
    canonical_warmup_steps: int = MISSING
    lr: Number = MISSING  # derived: ${loftr.scaled_lr:...}
    warmup_steps: int = MISSING  # derived: ${loftr.scaled_warmup_steps:...}
    warmup_type: WarmupType = MISSING  # type: ignore[valid-type]
    warmup_ratio: Number = MISSING
    scheduler: Scheduler = MISSING  # type: ignore[valid-type]
    scheduler_interval: SchedulerInterval = MISSING  # type: ignore[valid-type]
    milestones: list[int] = MISSING
    gamma: Number = MISSING
    cosa_tmax: int = MISSING
    elr_gamma: Number = MISSING
    gradient_clipping: Number = MISSING


@dataclass
class HomographyEvalConf:
    """The homography protocol of homography sets (loftr/evaluation/homography.py)."""

    ransac_thr: Number = MISSING  # px of the network input
    ransac_conf: Number = MISSING
    ransac_max_iters: int = MISSING
    max_matches: int = MISSING  # the top matches by confidence that the estimate uses
    precision_thr: Number = MISSING  # px: a correct match's reprojection error


@dataclass
class EvalConf:
    epi_err_thr: Number = MISSING
    pose_estimator: str = MISSING  # evaluation.metrics.check_pose_estimator (poselib optional)
    ransac_pixel_thr: Number = MISSING
    ransac_conf: Number = MISSING
    homography: HomographyEvalConf = field(default_factory=HomographyEvalConf)


@dataclass
class CheckpointConf:
    monitor: str = MISSING
    mode: MonitorMode = MISSING  # type: ignore[valid-type]
    save_top_k: int = MISSING
    every_n_train_steps: int = MISSING


def _trainer_conf() -> type:
    """`TrainerConf`: every Trainer argument (None: Lightning's default) and the platform's own
    two keys, which the LightningModule reads."""
    namespace: dict[str, Any] = {
        "__annotations__": {"_target_": str, **dict.fromkeys(TRAINER_ARGUMENTS, Any | None)},
        "_target_": "lightning.pytorch.Trainer",
        **dict.fromkeys(TRAINER_ARGUMENTS),
    }
    namespace["__annotations__"].update(max_consecutive_nonfinite=int, max_skipped_pairs=int)
    namespace.update(max_consecutive_nonfinite=10, max_skipped_pairs=100)
    namespace["__doc__"] = _trainer_conf.__doc__
    return dataclass(type("TrainerConf", (), namespace))


TrainerConf = _trainer_conf()


# ------------------------------------------------------------------------ the primary configs
@dataclass
class TrainConf:
    seed: int = MISSING
    accumulate: int = MISSING
    precision: Precision | None = MISSING  # type: ignore[valid-type]  # null: the plugin's
    ckpt_path: str | None = MISSING
    resume_allow_changes: list[str] = MISSING
    run_dir: str | None = MISSING
    name: str = MISSING
    objective: str = MISSING  # a validation metric, e.g. auc@10
    validate_before_training: bool = MISSING
    paper_table: str | None = None  # the experiments' row of experiments/paper_numbers.yaml
    # evaluate keys that the eval_* experiments set; declared so that such an experiment composes
    # into a training run, which then refuses it naming the evaluate command
    ckpt: str | None = None
    model_from_ckpt: bool | None = None
    dataset: DatasetConf = field(default_factory=DatasetConf)
    model: ModelConf = field(default_factory=ModelConf)
    optim: OptimConf = field(default_factory=OptimConf)
    hardware: HardwareConf = field(default_factory=HardwareConf)
    eval: EvalConf = field(default_factory=EvalConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)  # type: ignore[valid-type]
    checkpoint: CheckpointConf = field(default_factory=CheckpointConf)
    # open: their keys are their `_target_`'s arguments, checked when the run is built
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluateConf:
    name: str = MISSING
    seed: int = MISSING
    ckpt_path: str | None = None
    ckpt: str | None = MISSING  # the former name of ckpt_path
    model_from_ckpt: bool = MISSING
    cache_dir: str = MISSING
    run_dir: str | None = MISSING
    paper_table: str | None = None
    dataset: DatasetConf = field(default_factory=DatasetConf)
    model: ModelConf = field(default_factory=ModelConf)
    hardware: HardwareConf = field(default_factory=HardwareConf)
    eval: EvalConf = field(default_factory=EvalConf)
    logger: dict[str, Any] = field(default_factory=dict)
    # what a debug overlay sets for training; an evaluation does not read them
    trainer: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    validate_before_training: bool | None = None


@dataclass
class MatchConf:
    ckpt_path: str | None = None
    ckpt: str | None = MISSING  # the former name of ckpt_path
    model_from_ckpt: bool = MISSING
    resize: int | None = MISSING
    output: str = MISSING
    device: str = MISSING
    model: ModelConf = field(default_factory=ModelConf)


SCHEMAS = {"train": TrainConf, "evaluate": EvaluateConf, "match": MatchConf}


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore as `<config>_schema` (again: replaced)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for config_name, schema in SCHEMAS.items():
        store.store(name=f"{config_name}_schema", node=schema)


def plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` resolved into plain containers, its choices as strings: what may leave the process
    (checkpoints read with weights_only, W&B, JSON files)."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def _field_type(schema: type, name: str) -> Any:
    hint = get_type_hints(schema)[name]
    if get_origin(hint) is not None and type(None) in get_args(hint):  # X | None
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    return hint


def check_additions(config_name: str, overrides: Sequence[str]) -> None:
    """Raise ConfigError for a `+key=value` or `++key=value` that names no key of the schema.

    Keys under an open node (`logger`, `callbacks`, a `Dict` or `Any` field) and config groups
    (`+experiment=...`) are not checked here.

    Args:
        config_name: `train`, `evaluate` or `match`.
        overrides: the command line's overrides, as Hydra receives them.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    schema = SCHEMAS[config_name]
    parser = OverridesParser.create()
    for line in (o for o in overrides if o.startswith("+")):  # other arguments are Hydra's
        try:
            (override,) = parser.parse_overrides([line])
        except HydraException:
            continue  # Hydra names the syntax error when it composes
        key = override.key_or_group
        if override.package is not None:
            continue
        if key.startswith("hydra") or (CONF_DIR / key).is_dir():  # a config group
            continue
        node: Any = schema
        for depth, part in enumerate(key.split(".")):
            if not (isinstance(node, type) and is_dataclass(node)):
                break  # an open node
            names = [f.name for f in fields(node)]
            if part not in names:
                parent = ".".join(key.split(".")[:depth]) or "the config"
                near = difflib.get_close_matches(part, names, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(
                    f"{override.input_line}: {parent} has no key {part!r}{hint} (keys: "
                    f"{', '.join(names)})"
                )
            node = _field_type(node, part)
