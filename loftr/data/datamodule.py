"""The Lightning DataModule: train/val/test loaders from a ``dataset`` config node
(docs/original.md#datamodule).

The ``dataset`` node uses the original data-config keys lower-cased
(docs/original.md#config-defaults, #data-configs), e.g. ``trainval_data_source``,
``train_data_root``, ``train_npz_root``, ``train_list_path``, ``mgdpt_img_resize``,
``n_samples_per_subset``, plus our ``scannet_img_resize`` and ``synthetic`` (arguments of
:func:`loftr.data.synthetic.ensure_synthetic`, or null). What each data source builds (its
training scenes, one dataset per scene, its validation and test sets and their names) is its
builder's business: :data:`loftr.data.sources.BUILDERS`.

Training builds only this rank's scenes (:func:`~loftr.data.sampler.get_local_split`) and draws
from them with a :class:`~loftr.data.sampler.RandomConcatSampler`, whose state the DataModule's
``state_dict`` carries into checkpoints so a resumed run continues the same sequence.
The Trainer must be built with ``use_distributed_sampler=False`` (the original's
``replace_sampler_ddp=False``, docs/original.md#sampler): the sampler already splits the data per
rank.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from loftr.data.sampler import RandomConcatSampler, get_local_split
from loftr.data.skipping import SkipBrokenPairs
from loftr.data.source import Source, list_set_names, required
from loftr.data.sources import SOURCES, source
from loftr.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _ranks_without_pairs(has_pairs: bool) -> list[int]:
    """The ranks whose training share has no pair (every rank learns the answer)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [] if has_pairs else [0]
    flags: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(flags, has_pairs)
    return [rank for rank, flag in enumerate(flags) if not flag]


def check_dataset_config(dataset: Mapping[str, Any]) -> None:
    """Raise ConfigError, naming the key, for a `dataset` node the loaders cannot serve: an
    augmentation (docs/original.md#augmentation), an unknown data source or settings its
    builder refuses (:attr:`loftr.data.sources.Source.check`)."""
    if isinstance(dataset, DictConfig):
        dataset = OmegaConf.to_container(dataset, resolve=True, enum_to_str=True)
    if dataset.get("augmentation_type") is not None:
        # docs/original.md#augmentation: the original raises NotImplementedError for every
        # augmentation.
        raise ConfigError(
            f"dataset.augmentation_type={dataset['augmentation_type']!r}: LoFTR trains "
            "without augmentation (docs/original.md#augmentation); set it to null"
        )
    names = {key: dataset.get(key) for key in ("trainval_data_source", "test_data_source")}
    for key, name in names.items():
        if name is not None and name not in SOURCES:
            raise ConfigError(f"dataset.{key}={name!r}; use one of {list(SOURCES)} or null")
    for name in dict.fromkeys(n for n in names.values() if n is not None):
        source(str(name)).check(dataset)


def set_names(dataset: Mapping[str, Any], split: str) -> list[str]:
    """A name per validation (``val``) or test (``test``) set of a ``dataset`` node: the stems
    of ``{split}_list_path`` for the list-file sources, the source's own names for the others
    (:attr:`loftr.data.sources.Source.set_names`); empty when the split has no set."""
    name = dataset.get("test_data_source" if split == "test" else "trainval_data_source")
    if name is None:
        return list_set_names(dataset, split)
    return source(str(name)).set_names(dataset, split)


def test_instead(dataset: Mapping[str, Any]) -> str | None:
    """The ``dataset`` choice that tests models trained on ``dataset`` when it has no test set of
    its own (``dataset=homographies``: ``hpatches_heldout``), else None."""
    if set_names(dataset, "test"):
        return None
    trainval = dataset.get("trainval_data_source")
    return source(str(trainval)).test_instead if trainval is not None else None


def check_test_set(dataset: Mapping[str, Any]) -> None:
    """ConfigError, saying where to test instead, for a ``dataset`` node without a test set."""
    if set_names(dataset, "test"):
        return
    instead = test_instead(dataset)
    raise ConfigError(
        f"dataset {dataset.get('name')} has no test set (dataset.test_list_path is null)"
        + (
            f"; its models are tested on dataset={instead}: python -m loftr.evaluate "
            f"dataset={instead} ckpt_path=PATH"
            if instead
            else ""
        )
    )


class LoFTRDataModule(L.LightningDataModule):
    """The loaders of any data source, built as the original LoFTR builds ScanNet and MegaDepth's
    (docs/original.md#datamodule); each source's datasets come from its builder
    (:mod:`loftr.data.sources`).

    Loaders: train uses ``batch_size``, ``num_workers``, ``pin_memory`` and the
    :class:`RandomConcatSampler` (exposed as :attr:`train_sampler`); validation and test use a
    batch of 1 (hard-coded, docs/original.md#datamodule), no shuffling and a
    ``DistributedSampler(shuffle=False)`` when the world size is above 1. Several validation sets
    are given as a list in ``dataset.val_list_path`` (with ``val_npz_root`` etc. either shared or as
    lists); the validation loader is then a list.

    Args:
        dataset: the ``dataset`` config node (DictConfig or mapping).
        batch_size: training batch size per process.
        num_workers: DataLoader workers.
        pin_memory: pin training and validation batches.
        seed: the run seed: scene split and sampler draws (66 in the original).
        max_skipped_pairs: ``trainer.max_skipped_pairs``; a training pair that cannot be read
            is replaced by the next one (:class:`~loftr.data.skipping.SkipBrokenPairs`), which
            names up to one more than this many per item.
        validated: ``dataset`` has passed :func:`check_dataset_config` already (a training
            run's `loftr.config.validate.validate`), so it is not checked again.

    Raises:
        ConfigError: an unknown data source, a missing key, or an augmentation type other than
            null (docs/original.md#augmentation; :func:`check_dataset_config`).

    Example:
        >>> dm = LoFTRDataModule(cfg.dataset, batch_size=1, num_workers=0, seed=66)
        >>> dm.prepare_data(); dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
    """

    def __init__(
        self,
        dataset: DictConfig | Mapping[str, Any],
        batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 66,
        max_skipped_pairs: int = 100,
        *,
        validated: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(dataset, DictConfig):
            dataset = OmegaConf.to_container(dataset, resolve=True, enum_to_str=True)
        self.config: dict[str, Any] = dict(dataset)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.max_skipped_pairs = int(max_skipped_pairs)
        if not validated:
            check_dataset_config(self.config)

        self.train_dataset: ConcatDataset | None = None
        self.train_sampler: RandomConcatSampler | None = None
        self.train_scenes: list[str] = []  # this rank's share of the training list
        # (docs/original.md#datamodule)
        self.val_datasets: list[ConcatDataset] = []
        self.test_dataset: ConcatDataset | None = None
        self._pending_sampler_state: dict[str, Any] | None = None

    # --- config access --------------------------------------------------------------------

    def _source(self, split: str) -> Source:
        """The builder of the source that serves ``split`` (``train``/``val`` or ``test``)."""
        name = "test_data_source" if split == "test" else "trainval_data_source"
        return source(str(required(self.config, name)))

    def _world(self) -> tuple[int, int]:
        """``(world_size, global_rank)`` from the attached trainer, else ``(1, 0)``."""
        trainer = self._trainer_or_none()
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _trainer_or_none(self) -> L.Trainer | None:
        return getattr(self, "trainer", None)

    @property
    def val_set_names(self) -> list[str]:
        """A name per validation loader: for list-file sources the stems of ``val_list_path``
        (made unique), else the source's own names (:attr:`~loftr.data.sources.Source.set_names`).

        Known from the config alone (before :meth:`setup`), so the LightningModule can name its
        per-set metrics; empty when the config has no validation set.
        """
        return set_names(self.config, "val")

    # --- Lightning hooks ------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Generate the synthetic set when ``dataset.synthetic`` is set, the held-out
        HPatches-layout set when ``dataset.hpatches.generate_seed`` is (once per node)."""
        synthetic = self.config.get("synthetic")
        if synthetic:
            from loftr.data.synthetic import ensure_synthetic  # lazy: only synthetic needs it

            ensure_synthetic(**dict(synthetic))
        hpatches = self.config.get("hpatches")
        if hpatches and hpatches.get("generate_seed") is not None:
            from loftr.data.synthetic.hpatches import ensure_hpatches_heldout

            ensure_hpatches_heldout(hpatches["root"], int(hpatches["generate_seed"]))

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of ``stage`` (``fit``, ``validate``, ``test``, or None for all)."""
        if stage in ("fit", None) and self.train_dataset is None:
            self._setup_train()
        if stage in ("fit", "validate", None) and not self.val_datasets:
            self._setup_val()
        if stage in ("test", None) and self.test_dataset is None:
            self._setup_test()

    def _setup_train(self) -> None:
        builder = self._source("train")
        world_size, rank = self._world()
        names, list_path = builder.train_scenes(self.config)
        local = get_local_split(names, world_size, rank, self.seed)
        datasets = builder.train_datasets(self.config, local, self.seed)
        kept = [ds for ds in datasets if len(ds) > 0]
        if len(kept) < len(datasets):
            log.warning(
                "rank %d: %d of its %d training scenes have no pair above "
                "min_overlap_score_train=%s; their draws go to its other scenes",
                rank,
                len(datasets) - len(kept),
                len(datasets),
                self.config.get("min_overlap_score_train"),
            )
        empty_ranks = _ranks_without_pairs(bool(kept))
        if empty_ranks:
            # raised on every rank at once: a rank left alone would wait for the others for ever
            raise DataError(
                f"no training pairs on rank(s) {empty_ranks} of {world_size}: every scene listed "
                f"in {list_path} is empty in their share (no pair above min_overlap_score_train="
                f"{self.config.get('min_overlap_score_train')}); list scenes with pairs, lower "
                "the threshold or use fewer processes"
            )
        self.train_dataset = ConcatDataset(kept)
        self.train_scenes = [str(name) for name in local]
        self.train_sampler = RandomConcatSampler(
            self.train_dataset,
            n_samples_per_subset=int(required(self.config, "n_samples_per_subset")),
            subset_replacement=bool(self.config.get("sb_subset_sample_replacement", True)),
            shuffle=bool(self.config.get("sb_subset_shuffle", True)),
            repeat=int(self.config.get("sb_repeat", 1)),
            seed=self.seed,
            rank=rank,
            n_scenes=len(local),  # the same on every rank, so are the epoch lengths
        )
        if self._pending_sampler_state is not None:
            self.train_sampler.load_state_dict(self._pending_sampler_state)
            self._pending_sampler_state = None
        log.info(
            "rank %d/%d: %d training scenes, %d pairs, %d samples per epoch",
            rank,
            world_size,
            len(kept),
            len(self.train_dataset),
            len(self.train_sampler),
        )

    def _eval_sets(self, split: str) -> list[Dataset]:
        return self._source(split).eval_sets(self.config, split, self.seed)

    def _setup_val(self) -> None:
        if not set_names(self.config, "val"):
            return
        self.val_datasets = self._eval_sets("val")

    def _setup_test(self) -> None:
        if not set_names(self.config, "test"):
            return
        sets = self._eval_sets("test")
        self.test_dataset = sets[0] if len(sets) == 1 else ConcatDataset(sets)

    # --- loaders --------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        """The training loader; also points the sampler at the trainer's current epoch."""
        if self.train_dataset is None or self.train_sampler is None:
            self.setup("fit")
        assert self.train_dataset is not None and self.train_sampler is not None
        trainer = self._trainer_or_none()
        if trainer is not None:
            connector = getattr(trainer, "_accelerator_connector", None)
            if trainer.world_size > 1 and getattr(connector, "use_distributed_sampler", False):
                raise ConfigError(
                    "Trainer(use_distributed_sampler=True) would split the RandomConcatSampler's "
                    "draws again; build the Trainer with use_distributed_sampler=False (each rank "
                    "already loads its own scenes, docs/original.md#datamodule, #sampler)"
                )
            # Lightning creates the first iterator before it calls set_epoch (and DataLoader
            # workers prefetch at once), so the epoch must be right already (resume included).
            self.train_sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        return DataLoader(
            SkipBrokenPairs(self.train_dataset, max_recorded=self.max_skipped_pairs + 1),
            batch_size=self.batch_size,
            sampler=self.train_sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def _eval_loader(self, dataset: Dataset, pin_memory: bool) -> DataLoader:
        world_size, rank = self._world()
        sampler = (
            DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
            if world_size > 1
            else None
        )
        # docs/original.md#datamodule: evaluation batch size 1 is hard-coded.
        return DataLoader(
            dataset,
            batch_size=1,
            shuffle=False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=pin_memory,
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per validation set (a list when ``val_list_path`` is a list)."""
        if not self.val_datasets:
            self.setup("validate")
        if not self.val_datasets:
            return []
        loaders = [self._eval_loader(ds, self.pin_memory) for ds in self.val_datasets]
        return (
            loaders if isinstance(self.config.get("val_list_path"), (list, tuple)) else loaders[0]
        )

    def test_dataloader(self) -> DataLoader:
        """The test loader (batch 1; pinned on GPU machines, as the original pins it)."""
        if self.test_dataset is None:
            self.setup("test")
        if self.test_dataset is None:
            check_test_set(self.config)
        return self._eval_loader(self.test_dataset, self.pin_memory or torch.cuda.is_available())

    # --- checkpointed state -----------------------------------------------------------------

    def _consumed_by_trainer(self) -> int | None:
        """Samples of the current epoch the trainer has trained on, or None when not fitting.

        Lightning resumes an epoch after ``batch_progress.current`` batches; DataLoader workers
        and the fetcher run ahead of that, so the sampler's own count is too high.
        """
        trainer = self._trainer_or_none()
        if trainer is None or self.train_sampler is None:
            return None
        try:
            if trainer.state.fn != "fit":
                return None
            processed = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        except AttributeError:
            return None
        return min(int(processed) * self.batch_size, len(self.train_sampler))

    def state_dict(self) -> dict[str, Any]:
        """``{"train_sampler": {"seed", "epoch", "rank", "consumed"}}`` once training is set up."""
        if self.train_sampler is None:
            pending = self._pending_sampler_state
            return {"train_sampler": dict(pending)} if pending is not None else {}
        state = self.train_sampler.state_dict()
        consumed = self._consumed_by_trainer()
        if consumed is not None:
            state["consumed"] = consumed
        return {"train_sampler": state}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the sampler's position (applied when the sampler is built, if not yet)."""
        sampler_state = state_dict.get("train_sampler")
        if sampler_state is None:
            return
        if self.train_sampler is None:
            self._pending_sampler_state = dict(sampler_state)
        else:
            self.train_sampler.load_state_dict(sampler_state)
