"""Turn one's own data into a prepared set: MegaDepth-format scenes that ``dataset=custom`` trains
on and ``dataset=custom_test`` evaluates (docs/prepare.md).

Modules:
    ``__main__``: the command ``python -m loftr.data.prepare {colmap,rgbd} ...`` and the options
        every converter takes.
    ``frames``: :class:`~loftr.data.prepare.frames.PreparedFrame`, what a converter hands the
        writer per frame, and its resizing (the ``--max-size`` rule, intrinsics included).
    ``scene``: :class:`~loftr.data.prepare.scene.SceneWriter`, which every converter writes its
        frames and scored pairs through: h5 depth maps, overlap bins, scene infos, list files,
        the report, and the move of a finished scene into place.
    ``report``: the report as a short table for the terminal.
    ``colmap``: a COLMAP reconstruction with dense depth maps.
    ``rgbd``: the command for an RGB-D sequence: its options and the conversion loop.
    ``rgbd_layouts``: the two RGB-D layouts parsed (TUM RGB-D with its timestamp association,
        and a plain folder).
    ``rgbd_frames``: what both RGB-D layouts share after parsing: a frame's colour and depth
        read (``loftr.data.io``), lens undistortion, keyframes and the pair scores by depth
        reprojection.
"""
