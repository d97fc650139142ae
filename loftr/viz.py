"""Match figures: two grey images side by side with their matches (docs/original.md#figures).

Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, safe in
worker processes and headless runs): :func:`make_matching_figure` draws any coloured matches,
:func:`make_evaluation_figure` colours a batch pair's matches by their epipolar error as the
original's validation figures do, :func:`make_homography_figure` by their reprojection error
under the true homography (docs/homography.md#metrics), :func:`make_confidence_figure` colours
matches by the model's confidence (for inference, where there is no ground truth), and
:func:`figure_to_array` turns a figure into an ``(H, W, 3)`` uint8 image for W&B.

Conventions: keypoints are ``(N, 2)`` pixel ``(x, y)`` in the drawn images; colours are
``(N, 4)`` RGBA floats in [0, 1]; epipolar errors are the squared normalised distances of
:mod:`loftr.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure

__all__ = [
    "dynamic_alpha",
    "epi_err_threshold",
    "error_colormap",
    "figure_size",
    "figure_to_array",
    "make_confidence_figure",
    "make_evaluation_figure",
    "make_homography_figure",
    "make_matching_figure",
]

# docs/original.md#figures: alpha by number of matches, piecewise linear through these points, then
# constant.
_ALPHA_MATCHES = (0, 300, 1000, 2000)
_ALPHA_VALUES = (1.0, 0.8, 0.4, 0.2)
FIG_WIDTH = 10.0  # inches, as the original (docs/original.md#figures); the height follows the
# images


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _grey_image(img: Any) -> np.ndarray:
    """A ``(H, W)`` grey image in [0, 255] from ``(H, W)`` / ``(1, H, W)``, 0-255 or 0-1 floats."""
    arr = _to_numpy(img)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a grey (H, W) or (1, H, W) image, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
        arr = arr * 255.0
    return arr.astype(np.float32)


def figure_size(shape0: tuple[int, ...], shape1: tuple[int, ...]) -> tuple[float, float]:
    """Figure ``(width, height)`` in inches: 10 wide, as high as two side-by-side images need.

    Args:
        shape0: ``(H0, W0)`` of image 0.
        shape1: ``(H1, W1)`` of image 1.

    Example:
        >>> figure_size((480, 640), (480, 640))  # 4:3 images: 5 in wide each, 3.75 high
        (10.0, 4.1)
    """
    aspect = max(shape0[0] / shape0[1], shape1[0] / shape1[1])
    height = FIG_WIDTH / 2 * aspect + 0.35  # + the layout's padding
    return FIG_WIDTH, round(min(max(height, 2.0), 12.0), 2)


def dynamic_alpha(n_matches: int) -> float:
    """Line opacity by number of matches (docs/original.md#figures): 1 at 0, to 0.8 at 300, 0.4 at
    1000, 0.2.

    Example:
        >>> dynamic_alpha(0), dynamic_alpha(150), dynamic_alpha(5000)
        (1.0, 0.9, 0.2)
    """
    return float(np.interp(n_matches, _ALPHA_MATCHES, _ALPHA_VALUES))


def error_colormap(err: Any, thr: float, alpha: float = 1.0) -> np.ndarray:
    """RGBA per match from its error (docs/original.md#figures): green, yellow at ``thr``, red at
    2 thr.

    With ``x = 1 - clip(err / (2 thr), 0, 1)`` the colour is
    ``(clip(2 - 2x, 0, 1), clip(2x, 0, 1), 0, alpha)``.

    Args:
        err: ``(N,)`` errors: squared normalised epipolar errors, or reprojection errors in px.
        thr: the correctness threshold (epipolar: 5e-4 ScanNet, 1e-4 MegaDepth).
        alpha: the opacity of every match.

    Returns:
        ``(N, 4)`` float RGBA in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    x = 1.0 - np.clip(_to_numpy(err).astype(np.float64) / (2.0 * thr), 0.0, 1.0)
    return np.stack(
        [
            np.clip(2.0 - 2.0 * x, 0.0, 1.0),
            np.clip(2.0 * x, 0.0, 1.0),
            np.zeros_like(x),
            np.full_like(x, alpha),
        ],
        axis=-1,
    )


def epi_err_threshold(dataset_name: str) -> float:
    """The figures' correctness threshold: 5e-4 for ScanNet, 1e-4 otherwise
    (docs/original.md#figures)."""
    return 5e-4 if dataset_name.lower() == "scannet" else 1e-4


def _text_colour(img0: np.ndarray) -> str:
    """Black on a bright top-left corner (100 x 200 px mean > 200), else white
    (docs/original.md#figures)."""
    return "k" if float(img0[:100, :200].mean()) > 200 else "w"


def make_matching_figure(
    img0: Any,
    img1: Any,
    mkpts0: Any,
    mkpts1: Any,
    color: Any,
    text: Sequence[str] = (),
    path: str | Path | None = None,
    dpi: int = 75,
    kpts0: Any = None,
    kpts1: Any = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Two grey images side by side with a line and two dots per match (docs/original.md#figures).

    Args:
        img0: grey image 0, ``(H0, W0)`` or ``(1, H0, W0)``, values in [0, 255] (or floats in
            [0, 1]).
        img1: grey image 1.
        mkpts0: ``(N, 2)`` pixel ``(x, y)`` of the matches in image 0.
        mkpts1: ``(N, 2)`` pixel ``(x, y)`` in image 1.
        color: ``(N, 4)`` RGBA per match (or one colour for all).
        text: lines written at the top left of image 0.
        path: when given, the figure is also saved there (PNG, tight bounding box).
        dpi: resolution in pixels per inch.
        kpts0: optional ``(K0, 2)`` keypoints of image 0 drawn as small white dots.
        kpts1: optional ``(K1, 2)`` keypoints of image 1.
        figsize: ``(width, height)`` in inches; by default 10 wide (as the original) and as
            high as the images need (:func:`figure_size`), where the original's (10, 6) leaves
            white bands around 4:3 images.

    Returns:
        The figure, on an Agg canvas (close nothing; it is garbage-collected).
    """
    grey0, grey1 = _grey_image(img0), _grey_image(img1)
    pts0 = _to_numpy(mkpts0).astype(np.float64).reshape(-1, 2)
    pts1 = _to_numpy(mkpts1).astype(np.float64).reshape(-1, 2)
    if pts0.shape != pts1.shape:
        raise ValueError(f"mkpts0 {pts0.shape} and mkpts1 {pts1.shape} must have the same shape")
    # (N, 4), or (1, 4) for one colour (a name, or one RGB(A) tuple)
    colours = to_rgba_array(color if isinstance(color, str) else _to_numpy(color))

    fig = Figure(figsize=figsize or figure_size(grey0.shape, grey1.shape), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, grey in zip(axes, (grey0, grey1), strict=True):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
        ax.autoscale(False)  # points outside the image must not rescale it
    fig.tight_layout(pad=1)

    for ax, kpts in zip(axes, (kpts0, kpts1), strict=True):
        if kpts is not None and len(kpts):
            k = _to_numpy(kpts).reshape(-1, 2)
            ax.scatter(k[:, 0], k[:, 1], c="w", s=2, linewidths=0)

    if len(pts0):
        # Lines cross both axes, so they live in figure coordinates, computed once the layout
        # is final.
        fig.canvas.draw()
        to_figure = fig.transFigure.inverted()
        fig0 = to_figure.transform(axes[0].transData.transform(pts0))
        fig1 = to_figure.transform(axes[1].transData.transform(pts1))
        fig.add_artist(
            LineCollection(
                np.stack([fig0, fig1], axis=1),
                colors=colours,
                linewidths=1,
                transform=fig.transFigure,
            )
        )
        axes[0].scatter(pts0[:, 0], pts0[:, 1], color=colours, s=4, linewidths=0)
        axes[1].scatter(pts1[:, 0], pts1[:, 1], color=colours, s=4, linewidths=0)

    if text:
        colour = _text_colour(grey0)
        backdrop = "w" if colour == "k" else "k"
        # A figure-level text above the match lines, on a translucent backdrop of the
        # contrasting colour so that it stays readable over any image and any lines.
        fig.text(
            0.01,
            0.99,
            "\n".join(text),
            transform=axes[0].transAxes,
            fontsize=15,
            va="top",
            ha="left",
            color=colour,
            zorder=10,
            bbox={"facecolor": backdrop, "alpha": 0.45, "edgecolor": "none", "pad": 3},
        )

    if path is not None:
        fig.savefig(str(path), bbox_inches="tight", pad_inches=0)
    return fig


def _pair_matches(
    data: dict[str, Any], b_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images (0-255) and matches (input pixels) of pair ``b_id``, and its match mask.

    Returns:
        ``(img0, img1, kpts0, kpts1, b_mask)``: ``(H, W)`` grey images, ``(n, 2)`` keypoints
        on those images, ``(M,)`` boolean mask of the pair's matches among the batch's.
    """
    n_all = len(data["mkpts0_f"])
    if "m_bids" in data:
        b_mask = _to_numpy(data["m_bids"]) == b_id
    else:  # a single pair, e.g. at inference
        b_mask = np.ones(n_all, dtype=bool)
    img0 = np.round(_to_numpy(data["image0"][b_id][0]).astype(np.float64) * 255)
    img1 = np.round(_to_numpy(data["image1"][b_id][0]).astype(np.float64) * 255)
    kpts0 = _to_numpy(data["mkpts0_f"]).astype(np.float64).reshape(-1, 2)[b_mask]
    kpts1 = _to_numpy(data["mkpts1_f"]).astype(np.float64).reshape(-1, 2)[b_mask]
    # Matches are in original-image pixels; draw them on the resized input. Unlike the original
    # (which divides x by the h-scale, docs/original.md#figures), x is divided by the x-scale here.
    if "scale0" in data:
        kpts0 = kpts0 / _to_numpy(data["scale0"][b_id]).astype(np.float64).reshape(1, 2)
    if "scale1" in data:
        kpts1 = kpts1 / _to_numpy(data["scale1"][b_id]).astype(np.float64).reshape(1, 2)
    return img0, img1, kpts0, kpts1, b_mask


def make_evaluation_figure(
    data: dict[str, Any],
    b_id: int,
    alpha: str | float = "dynamic",
    epi_err_thr: float | None = None,
) -> Figure:
    """The validation figure of pair ``b_id`` of a batch: matches coloured by epipolar error.

    Reads ``image0``, ``image1`` (``(B, 1, H, W)`` in [0, 1], the padded network input),
    ``mkpts0_f``, ``mkpts1_f``, ``m_bids``, ``epi_errs`` and, when present, ``scale0``,
    ``scale1`` (``(B, 2)``: ``[w_orig / w_in, h_orig / h_in]``), ``conf_matrix_gt`` and
    ``dataset_name``. Text: the match count, the precision and the recall against the
    ground-truth coarse matches (it can exceed 100 %, docs/original.md#figures).

    Args:
        data: the batch after the metrics (``compute_symmetrical_epipolar_errors``).
        b_id: index of the pair in the batch.
        alpha: ``"dynamic"`` (by number of matches) or a fixed opacity.
        epi_err_thr: the correctness threshold; by default 5e-4 for ScanNet and 1e-4 otherwise.

    Returns:
        The figure.
    """
    if epi_err_thr is None:
        names = data.get("dataset_name", ["ScanNet"])
        epi_err_thr = epi_err_threshold(str(names[b_id] if len(names) > b_id else names[0]))
    return _error_figure(data, b_id, "epi_errs", epi_err_thr, f"{epi_err_thr:.2e}", alpha)


def make_homography_figure(
    data: dict[str, Any], b_id: int, precision_thr: float, alpha: str | float = "dynamic"
) -> Figure:
    """The validation figure of a homography pair: matches coloured by their reprojection error
    under the true homography (docs/homography.md#metrics), green below ``precision_thr`` px,
    yellow at it, red at twice it; the corner error of the estimated homography on top.

    Reads what :func:`make_evaluation_figure` reads, with ``reproj_errs`` (``(M,)`` px of the
    network input) and ``H_errs`` (per pair, px) in place of ``epi_errs``.

    Args:
        data: the batch after ``loftr.evaluation.homography.compute_homography_errors``.
        b_id: index of the pair in the batch.
        precision_thr: a match is correct below this reprojection error, px.
        alpha: ``"dynamic"`` (by number of matches) or a fixed opacity.

    Returns:
        The figure.
    """
    error = float(data["H_errs"][b_id])
    title = f"Corner error {error:.2f} px" if np.isfinite(error) else "Corner error: no homography"
    return _error_figure(
        data, b_id, "reproj_errs", precision_thr, f"{precision_thr:g}px", alpha, (title,)
    )


def _error_figure(
    data: dict[str, Any],
    b_id: int,
    key: str,
    thr: float,
    label: str,
    alpha: str | float,
    title: Sequence[str] = (),
) -> Figure:
    """Pair ``b_id``'s matches coloured by the per-match errors ``data[key]`` against ``thr``,
    with the match count, the precision and the recall against the ground-truth coarse matches
    (``label`` names the threshold) under the ``title`` lines."""
    img0, img1, kpts0, kpts1, b_mask = _pair_matches(data, b_id)
    errors = _to_numpy(data[key]).astype(np.float64)[b_mask]
    correct = errors < thr
    n_matches, n_correct = len(correct), int(correct.sum())
    precision = n_correct / n_matches if n_matches else 0.0
    opacity = dynamic_alpha(n_matches) if alpha == "dynamic" else float(alpha)
    text = [
        *title,
        f"#Matches {n_matches}",
        f"Precision({label}) ({100 * precision:.1f}%): {n_correct}/{n_matches}",
    ]
    if "conf_matrix_gt" in data:
        n_gt = int(_to_numpy(data["conf_matrix_gt"][b_id]).sum())
        recall = n_correct / n_gt if n_gt else 0.0
        text.append(f"Recall({label}) ({100 * recall:.1f}%): {n_correct}/{n_gt}")
    colours = error_colormap(errors, thr, opacity)
    return make_matching_figure(img0, img1, kpts0, kpts1, colours, text=text)


def make_confidence_figure(
    data: dict[str, Any],
    b_id: int = 0,
    text: Sequence[str] = (),
    alpha: str | float = "dynamic",
    path: str | Path | None = None,
    dpi: int = 75,
    cmap: str = "RdYlGn",
) -> Figure:
    """Pair ``b_id``'s matches coloured by the model's confidence, for inference without GT.

    Confidence 0 is red, 0.5 yellow and 1 green (``RdYlGn``), so the figure reads like the
    evaluation figure: green is what the model trusts.

    Args:
        data: the matcher's output dict: ``image0``, ``image1`` (``(B, 1, H, W)`` in [0, 1]),
            ``mkpts0_f``, ``mkpts1_f`` (original pixels), ``mconf`` (``(M,)`` in [0, 1]) and,
            when present, ``m_bids`` and ``scale0``, ``scale1`` (as
            :func:`make_evaluation_figure`).
        b_id: index of the pair in the batch.
        text: extra lines, written after the match count and the mean confidence.
        alpha: ``"dynamic"`` or a fixed opacity.
        path: when given, the figure is also saved there.
        dpi: resolution.
        cmap: a matplotlib colormap name.

    Returns:
        The figure.
    """
    img0, img1, kpts0, kpts1, b_mask = _pair_matches(data, b_id)
    conf = np.clip(_to_numpy(data["mconf"]).astype(np.float64).reshape(-1)[b_mask], 0.0, 1.0)
    opacity = dynamic_alpha(len(conf)) if alpha == "dynamic" else float(alpha)
    colours = matplotlib.colormaps[cmap](conf)
    colours[:, 3] = opacity
    mean = f"{conf.mean():.3f}" if len(conf) else "-"
    lines = [f"#Matches {len(conf)}", f"Mean confidence {mean}", *text]
    return make_matching_figure(img0, img1, kpts0, kpts1, colours, text=lines, path=path, dpi=dpi)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an ``(H, W, 3)`` uint8 RGB array (e.g. for ``wandb.Image``).

    The size is the figure's canvas, ``(int(height * dpi), int(width * dpi))``: e.g.
    ``(307, 750)`` for 640 x 480 images at the default dpi 75.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
