"""`dataset=pairs_with_homography`: a user's list of image pairs with their homography files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from loftr.config.validate import validate
from loftr.data.datamodule import LoFTRDataModule
from loftr.data.pairs_with_homography import PairsWithHomography, read_pair_list
from loftr.errors import ConfigError, DataError
from tests.helpers.compose import compose_cfg, compose_fast

# image 0 is 200x100, image 1 100x200; H: x1 = 0.5 x0 + 10, y1 = 2 y0 - 20 (then a tilt)
H = np.array([[0.5, 0.0, 10.0], [0.0, 2.0, -20.0], [0.0, 0.0, 1.0]])
DOT0 = (150, 60)  # (x, y) in stored image 0; H maps it to (85, 100) in stored image 1


def _write_dot(path: Path, w: int, h: int, xy: tuple[float, float]) -> None:
    image = np.zeros((h, w), np.uint8)
    cv2.circle(image, (round(xy[0]), round(xy[1])), 3, 255, -1)
    cv2.imwrite(str(path), image)


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    """A root with a.png, b.png, h.txt and list.txt (a comment, a blank line, one pair)."""
    _write_dot(tmp_path / "a.png", 200, 100, DOT0)
    x1 = H @ np.array([*DOT0, 1.0])
    _write_dot(tmp_path / "b.png", 100, 200, (x1[0] / x1[2], x1[1] / x1[2]))
    np.savetxt(tmp_path / "h.txt", H)
    (tmp_path / "list.txt").write_text("# image0 image1 H\n\na.png b.png h.txt  # the pair\n")
    return tmp_path


def _config(root: Path, **overrides: Any) -> dict[str, Any]:
    keys = {
        f"dataset.{split}_{k}={root / 'list.txt' if k == 'list_path' else root}"
        for split in ("train", "val", "test")
        for k in ("data_root", "list_path")
    }
    cfg = compose_fast("dataset=pairs_with_homography", *sorted(keys))
    node = {k: v for k, v in dict(cfg.dataset).items()}
    node.update(overrides)
    return node


def _peak(image: torch.Tensor) -> np.ndarray:
    """The brightness-weighted centre (x, y) of the dot in a (1, h, w) image."""
    values = image[0].numpy().astype(np.float64)
    ys, xs = np.mgrid[0 : values.shape[0], 0 : values.shape[1]]
    return np.array([(xs * values).sum(), (ys * values).sum()]) / values.sum()


def test_a_list_with_comments_is_read(pairs: Path):
    ((name0, name1, matrix),) = read_pair_list(pairs / "list.txt", pairs)
    assert (name0, name1) == ("a.png", "b.png") and np.allclose(matrix, H)


def test_resized_images_with_their_scales_map_a_point_at_the_network_input(pairs: Path):
    item = PairsWithHomography(pairs / "list.txt", pairs, img_resize=160, df=8)[0]
    # a.png 200x100 -> 160x80; b.png 100x200 -> 80x160; both padded to 160x160 with masks
    assert item["image0"].shape == item["image1"].shape == (1, 160, 160)
    assert item["scale0"].tolist() == [1.25, 1.25] and item["scale1"].tolist() == [1.25, 1.25]
    assert (
        item["mask0"].shape == (20, 20)
        and item["mask0"][:10].all()
        and not item["mask0"][10:].any()
    )
    assert torch.allclose(item["H_0to1"], torch.tensor(H, dtype=torch.float32))
    # the network-input homography S1^-1 H S0 takes the dot of input 0 onto the dot of input 1
    S0, S1 = (np.diag([*item[f"scale{i}"].tolist(), 1.0]) for i in (0, 1))
    H_in = np.linalg.inv(S1) @ H @ S0
    dot0 = _peak(item["image0"])
    mapped = H_in @ np.array([*dot0, 1.0])
    assert np.allclose(dot0, [119.9, 47.9], atol=0.2)  # (150.5, 60.5) / 1.25 - 0.5
    assert np.allclose(mapped[:2] / mapped[2], _peak(item["image1"]), atol=0.5)
    assert item["dataset_name"] == "PairsWithHomography" and item["pair_names"] == (
        "a.png",
        "b.png",
    )


def test_training_validation_and_test_loaders(pairs: Path):
    cfg = compose_fast(
        "dataset=pairs_with_homography",
        f"dataset.train_data_root={pairs}",
        f"dataset.train_list_path={pairs / 'list.txt'}",
        f"dataset.val_data_root={pairs}",
        f"dataset.val_list_path=[{pairs / 'list.txt'},{pairs / 'list.txt'}]",
        f"dataset.test_data_root={pairs}",
        f"dataset.test_list_path={pairs / 'list.txt'}",
        "dataset.n_samples_per_subset=3",
    )
    validate(cfg)
    dm = LoFTRDataModule(cfg.dataset, batch_size=3, seed=0, validated=True)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image0"].shape == (3, 1, 160, 160) and batch["mask1"].shape == (3, 20, 20)
    assert dm.val_set_names == ["list_0", "list_1"] and len(dm.val_dataloader()) == 2
    assert next(iter(dm.test_dataloader()))["H_0to1"].shape == (1, 3, 3)


def test_training_without_padding_is_refused(pairs: Path):
    with pytest.raises(ConfigError, match="mgdpt_img_pad"):
        LoFTRDataModule(_config(pairs, mgdpt_img_pad=False)).setup("fit")


@pytest.mark.parametrize(
    ("line", "files", "message"),
    [
        ("a.png b.png", {}, r"list.txt line 2: 2 column\(s\); expected 3"),
        ("a.png c.png h.txt", {}, r"list.txt line 2: image .*c.png does not exist"),
        ("a.png b.png g.txt", {}, r"list.txt line 2: homography file .*g.txt does not exist"),
        ("a.png b.png g.txt", {"g.txt": "1 0 x\n0 1 0\n0 0 1\n"}, r"line 2: .*g.txt is not a"),
        ("a.png b.png g.txt", {"g.txt": "1 0\n0 1\n"}, r"line 2: .*g.txt holds 4 numbers"),
        ("a.png b.png g.txt", {"g.txt": "1 2 3\n2 4 6\n0 0 1\n"}, r"line 2: .*g.txt is a singular"),
    ],
    ids=["columns", "image", "missing_H", "unreadable_H", "not_3x3", "singular"],
)
def test_bad_input_is_refused_before_a_run_in_one_line_naming_file_and_line(
    pairs: Path, line: str, files: dict[str, str], message: str
):
    for name, text in files.items():
        (pairs / name).write_text(text)
    (pairs / "list.txt").write_text(f"# header\n{line}\n")
    cfg = compose_fast(
        "dataset=pairs_with_homography",
        f"dataset.train_data_root={pairs}",
        f"dataset.train_list_path={pairs / 'list.txt'}",
    )
    with pytest.raises(DataError, match=message) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


def test_an_empty_list_and_an_unset_one_are_named(pairs: Path):
    (pairs / "list.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="holds no pair"):
        read_pair_list(pairs / "list.txt", pairs)
    with pytest.raises(ConfigError, match="dataset.train_list_path is null"):
        LoFTRDataModule(compose_fast("dataset=pairs_with_homography").dataset).setup("fit")


def test_evaluation_takes_a_test_list(pairs: Path):
    cfg = compose_cfg(
        "evaluate",
        "dataset=pairs_with_homography",
        "ckpt_path=model.ckpt",
        f"dataset.test_data_root={pairs}",
        f"dataset.test_list_path={pairs / 'list.txt'}",
    )
    validate(cfg)
    with pytest.raises(ConfigError, match="has no test set"):
        validate(compose_cfg("evaluate", "dataset=pairs_with_homography", "ckpt_path=model.ckpt"))
