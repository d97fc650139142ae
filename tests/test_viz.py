"""Tests of the match figures (docs/original.md#figures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection

from loftr.viz import (
    dynamic_alpha,
    epi_err_threshold,
    error_colormap,
    figure_size,
    figure_to_array,
    make_confidence_figure,
    make_evaluation_figure,
    make_matching_figure,
)

THR = 5e-4


def test_error_colormap_ramp() -> None:
    # x = 1 - clip(err / 2thr): err 0 -> x 1 green; thr -> x .5 yellow; 2thr and beyond -> red.
    # 1.5 thr -> x .25: (clip(1.5), clip(.5)) = (1, .5).
    colours = error_colormap(np.array([0.0, THR, 2 * THR, 4 * THR, 1.5 * THR]), THR, alpha=0.7)
    np.testing.assert_allclose(
        colours,
        [
            [0.0, 1.0, 0.0, 0.7],
            [1.0, 1.0, 0.0, 0.7],
            [1.0, 0.0, 0.0, 0.7],
            [1.0, 0.0, 0.0, 0.7],
            [1.0, 0.5, 0.0, 0.7],
        ],
        atol=1e-12,
    )
    # 0.5 thr -> x .75: (.5, 1).
    np.testing.assert_allclose(error_colormap(torch.tensor([0.5 * THR]), THR)[0], [0.5, 1, 0, 1])


@pytest.mark.parametrize(
    ("n", "alpha"),
    [(0, 1.0), (150, 0.9), (300, 0.8), (650, 0.6), (1000, 0.4), (1500, 0.3), (2000, 0.2),
     (9999, 0.2)],
)  # fmt: skip
def test_dynamic_alpha(n: int, alpha: float) -> None:
    assert dynamic_alpha(n) == pytest.approx(alpha, abs=1e-12)


def test_thresholds_per_dataset() -> None:
    assert epi_err_threshold("ScanNet") == 5e-4
    assert epi_err_threshold("MegaDepth") == 1e-4


def _images(value: float = 0.9, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((h, w), value * 255.0)
    return img, img.copy()


def test_matching_figure_renders_to_expected_size(tmp_path: Path) -> None:
    img0, img1 = _images(h=48, w=64)
    assert figure_size(img0.shape, img1.shape) == (10.0, 4.1)  # 5 * 48 / 64 + 0.35
    pts = np.array([[10.0, 10.0], [30.0, 20.0]])
    fig = make_matching_figure(img0, img1, pts, pts + 2, error_colormap(np.zeros(2), THR))
    arr = figure_to_array(fig)
    assert arr.shape == (int(4.1 * 75), 750, 3) and arr.dtype == np.uint8
    fig = make_matching_figure(img0, img1, pts, pts, [0, 1, 0, 1], figsize=(10, 6), dpi=50)
    assert figure_to_array(fig).shape == (300, 500, 3)
    # Saved as a PNG; no axes ticks anywhere.
    path = tmp_path / "m.png"
    fig = make_matching_figure(img0, img1, pts, pts, [0, 1, 0, 1], text=["a"], path=path)
    assert path.stat().st_size > 1000
    assert all(not ax.axison for ax in fig.axes)


def test_rendered_match_is_green_for_zero_error_and_red_for_large() -> None:
    # Black images, one horizontal match along y = 24: the line is drawn in the ramp's colour.
    img0, img1 = _images(value=0.0)
    for err, channel in ((0.0, 1), (4 * THR, 0)):
        colours = error_colormap(np.array([err]), THR)
        fig = make_matching_figure(img0, img1, [[5.0, 24.0]], [[60.0, 24.0]], colours)
        arr = figure_to_array(fig).astype(int)
        # Pixels where the line's channel dominates strongly (green: (0, 255, 0); red: (255, 0, 0)).
        other = 1 - channel
        dominant = (arr[..., channel] > 200) & (arr[..., other] < 60) & (arr[..., 2] < 60)
        assert dominant.sum() > 100, (err, dominant.sum())


def _batch(n: int = 4, value: float = 0.95, dataset: str = "ScanNet") -> dict:
    h, w = 48, 64
    return {
        "image0": torch.full((2, 1, h, w), value),
        "image1": torch.full((2, 1, h, w), value),
        "mkpts0_f": torch.tensor(
            [[8.0, 8.0], [16.0, 24.0], [40.0, 30.0], [50.0, 40.0], [1.0, 1.0]]
        ),
        "mkpts1_f": torch.tensor(
            [[9.0, 8.0], [17.0, 24.0], [41.0, 30.0], [52.0, 40.0], [2.0, 2.0]]
        ),
        "m_bids": torch.tensor([0, 0, 0, 0, 1]),
        # ScanNet threshold 5e-4: 2 of the 4 matches of pair 0 are correct.
        "epi_errs": torch.tensor([0.0, 4e-4, 6e-4, 2e-3, 0.0]),
        "conf_matrix_gt": torch.cat([torch.ones(1, 5), torch.zeros(1, 5)]).reshape(2, 5, 1),
        "dataset_name": [dataset, dataset],
    }


def test_evaluation_figure_text_and_colours() -> None:
    fig = make_evaluation_figure(_batch(), 0)
    (text,) = fig.texts
    assert text.get_text().split("\n") == [
        "#Matches 4",
        "Precision(5.00e-04) (50.0%): 2/4",
        "Recall(5.00e-04) (40.0%): 2/5",
    ]
    assert text.get_color() == "k"  # bright top-left corner
    (lines,) = [a for a in fig.artists if isinstance(a, LineCollection)]
    alpha = dynamic_alpha(4)
    expected = error_colormap(np.array([0.0, 4e-4, 6e-4, 2e-3]), THR, alpha)
    np.testing.assert_allclose(lines.get_colors(), expected, atol=1e-12)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), _batch()["mkpts0_f"][:4])


def test_evaluation_figure_dark_image_megadepth_threshold_and_recall_over_gt() -> None:
    batch = _batch(value=0.2, dataset="MegaDepth")
    fig = make_evaluation_figure(batch, 0, alpha=0.5)
    lines = fig.texts[0].get_text().split("\n")
    assert fig.texts[0].get_color() == "w"
    # MegaDepth threshold 1e-4: only the zero-error match is correct.
    assert lines[1] == "Precision(1.00e-04) (25.0%): 1/4"
    # Pair 1 has no GT matches: recall 0 (no division by zero).
    fig1 = make_evaluation_figure(batch, 1)
    assert fig1.texts[0].get_text().split("\n")[2] == "Recall(1.00e-04) (0.0%): 1/0"
    (line_collection,) = [a for a in fig.artists if isinstance(a, LineCollection)]
    assert np.all(line_collection.get_colors()[:, 3] == 0.5)


def test_evaluation_figure_divides_x_by_the_x_scale() -> None:
    batch = _batch()
    batch["scale0"] = torch.tensor([[2.0, 1.5], [2.0, 1.5]])
    batch["scale1"] = torch.tensor([[4.0, 3.0], [4.0, 3.0]])
    fig = make_evaluation_figure(batch, 0)
    np.testing.assert_allclose(
        fig.axes[0].collections[0].get_offsets(),
        batch["mkpts0_f"][:4].numpy() / np.array([2.0, 1.5]),  # not the original's [1.5, 2.0]
    )
    np.testing.assert_allclose(
        fig.axes[1].collections[0].get_offsets(),
        batch["mkpts1_f"][:4].numpy() / np.array([4.0, 3.0]),
    )


def test_evaluation_figure_without_matches_or_gt() -> None:
    batch = _batch()
    batch["m_bids"] = torch.ones(5, dtype=torch.long)
    del batch["conf_matrix_gt"]
    fig = make_evaluation_figure(batch, 0)
    assert fig.texts[0].get_text().split("\n") == [
        "#Matches 0",
        "Precision(5.00e-04) (0.0%): 0/0",
    ]
    assert figure_to_array(fig).shape == (307, 750, 3)


def test_confidence_figure_colours_by_confidence(tmp_path: Path) -> None:
    # The matcher's output at inference: one pair, no m_bids needed, keypoints in original
    # pixels (scale 2 in x and y).
    img0, _ = _images()
    pts = torch.tensor([[10.0, 10.0], [40.0, 40.0], [80.0, 60.0]])
    data = {
        "image0": torch.tensor(img0 / 255.0)[None, None],
        "image1": torch.tensor(img0 / 255.0)[None, None],
        "mkpts0_f": pts,
        "mkpts1_f": pts,
        "mconf": torch.tensor([0.0, 0.5, 1.0]),
        "scale0": torch.tensor([[2.0, 2.0]]),
        "scale1": torch.tensor([[2.0, 2.0]]),
    }
    path = tmp_path / "conf.png"
    fig = make_confidence_figure(data, 0, text=["x"], path=path)
    assert path.is_file()
    assert fig.texts[0].get_text().split("\n") == ["#Matches 3", "Mean confidence 0.500", "x"]
    (lines,) = [a for a in fig.artists if isinstance(a, LineCollection)]
    rgba = lines.get_colors()
    assert rgba[0, 0] > rgba[0, 1]  # confidence 0: red
    assert rgba[2, 1] > rgba[2, 0]  # confidence 1: green
    assert np.all(rgba[:, 3] == pytest.approx(dynamic_alpha(3)))
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), pts.numpy() / 2)
    # With m_bids, only pair b_id's matches are drawn.
    data["m_bids"] = torch.tensor([0, 1, 1])
    fig = make_confidence_figure(data, 0)
    assert fig.texts[0].get_text().split("\n")[:2] == ["#Matches 1", "Mean confidence 0.000"]
