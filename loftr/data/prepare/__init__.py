"""Turn one's own data into a prepared set: MegaDepth-format scenes that ``dataset=custom`` trains
on and ``dataset=custom_test`` evaluates (docs/prepare.md).

Modules:
    ``__main__``: the command ``python -m loftr.data.prepare {colmap,rgbd} ...`` and the options
        every converter takes.
    ``scene``: :class:`~loftr.data.prepare.scene.SceneWriter`, which every converter writes its
        frames and scored pairs through: resizing, h5 depth maps, overlap bins, scene infos,
        list files, the report, and the move of a finished scene into place.
    ``colmap``: a COLMAP reconstruction with dense depth maps.
    ``rgbd``: an RGB-D sequence (the TUM RGB-D layout, or a plain folder).
"""
