"""Datasets, sampler and DataModule: ScanNet and MegaDepth in the original layouts (SPEC §5).

Import the pieces from their modules (``loftr.data.scannet``, ``loftr.data.megadepth``,
``loftr.data.sampler``, ``loftr.data.datamodule``); this package file stays import-light so
that ``python -m loftr.data.setup`` starts fast.
"""
