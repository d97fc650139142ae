"""Datasets, sampler and DataModule: ScanNet and MegaDepth in the original layouts
(docs/original.md#data).

Import the pieces from their modules (``loftr.data.scannet``, ``loftr.data.megadepth``,
``loftr.data.sampler``, ``loftr.data.datamodule``); this package file stays import-light so
that ``python -m loftr.data.setup`` starts fast.
"""
