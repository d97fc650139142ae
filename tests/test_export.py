"""The one metrics.json schema (docs/run_directory.md#metrics-schema): the writer and the reader
of `loftr.evaluation.export`, the files written before the schema had a version, and the
refusal of a version this code does not know."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from loftr.errors import DataError
from loftr.evaluation.export import (
    SCHEMA_VERSION,
    SetResult,
    protocol_fields,
    read_metrics,
    set_results,
    write_metrics,
)
from loftr.evaluation.protocol import Protocol, hash_index, validation_protocols

VAL = Protocol("scannet_test", "abc123", (640, 480), border_rm=2)
TEST = Protocol("scannet_test_1500", "def456", (640, 480), border_rm=0)
SETS = {"scannet_test": {"auc@5": 0.1, "auc@10": 0.2, "auc@20": 0.3, "prec@5e-04": 0.5}}


def training_fields(**changes) -> dict:
    last = {"epoch": 3, "step": 40, "sets": SETS, "auc@5": 0.1, "auc@10": 0.2, "auc@20": 0.3}
    best = {**last, "epoch": 1, "step": 20}
    fields = {
        "name": "indoor_ds",
        "parameters": {"total": 11},
        "config": {"matcher": "dual_softmax", "true_batch_size": 4},
        "val_sets": {"scannet_test": protocol_fields(VAL)},
        "last": last,
        "best": best,
        "global_step": 40,
        "wall_time_s": 1.5,
    }
    return {**fields, **changes}


def evaluation_fields() -> dict:
    metrics = {"auc@5": 0.22, "auc@10": 0.41, "auc@20": 0.58, "prec@5e-04": 0.9}
    return {
        "name": "eval_indoor_ds",
        "ckpt": "w.ckpt",
        "metrics": metrics,
        **protocol_fields(TEST),
        "n_pairs": 1500,
        "cache": "dump/x/predictions.pt",
    }


def test_a_training_result_round_trips(tmp_path):
    path = write_metrics(tmp_path / "run", "train", training_fields())
    assert path == tmp_path / "run" / "metrics.json"
    written = json.loads(path.read_text())
    assert list(written)[:2] == ["schema_version", "kind"]
    assert written == {"schema_version": SCHEMA_VERSION, "kind": "train", **training_fields()}
    document = read_metrics(path)
    assert document == written
    assert set_results(document) == [SetResult("scannet_test", VAL, SETS["scannet_test"], 3, 40)]
    assert set_results(document, "best") == [
        SetResult("scannet_test", VAL, SETS["scannet_test"], 1, 20)
    ]
    assert not list(tmp_path.glob("run/.*"))  # written atomically: no temporary left


def test_an_evaluation_result_round_trips(tmp_path):
    path = write_metrics(tmp_path, "eval", evaluation_fields())
    document = read_metrics(path)
    assert document == {"schema_version": SCHEMA_VERSION, "kind": "eval", **evaluation_fields()}
    assert document["protocol_key"] == TEST.key()
    (result,) = set_results(document, "best")  # `which` is a training's choice only
    assert result == SetResult("scannet_test_1500", TEST, evaluation_fields()["metrics"])


def test_a_training_that_has_not_validated_has_no_results(tmp_path):
    document = read_metrics(write_metrics(tmp_path, "train", training_fields(last=None, best=None)))
    assert set_results(document) == [] and set_results(document, "best") == []


def test_the_writer_refuses_an_unknown_kind_or_a_missing_field(tmp_path):
    with pytest.raises(ValueError, match="kind 'test' is unknown"):
        write_metrics(tmp_path, "test", evaluation_fields())
    fields = training_fields()
    del fields["val_sets"]
    with pytest.raises(ValueError, match=r"train metrics.json needs the field\(s\) \['val_sets'\]"):
        write_metrics(tmp_path, "train", fields)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, "2.0"])
def test_an_unknown_schema_version_is_refused_in_one_line_naming_the_file(tmp_path, version):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"schema_version": version, "kind": "train", **training_fields()}))
    with pytest.raises(DataError) as error:
        read_metrics(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path))
    assert f"schema_version {version!r}" in message and "update loftr" in message


def test_a_versioned_file_must_name_its_kind_fields_and_sets(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **training_fields()}))
    with pytest.raises(DataError, match="kind None"):
        read_metrics(path)
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "kind": "eval", "name": "e"}))
    with pytest.raises(DataError, match=r"field\(s\) \['metrics', 'protocol', 'protocol_key'\]"):
        read_metrics(path)
    write_metrics(tmp_path, "train", training_fields(val_sets={}))
    with pytest.raises(DataError, match=r"validation set\(s\) \['scannet_test'\] in `last`"):
        read_metrics(path)


# ------------------------------------------------------------- files without schema_version
def test_an_unversioned_evaluation_file_is_read(tmp_path):
    old = evaluation_fields()
    del old["protocol_key"]  # the oldest files lack it
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    document = read_metrics(tmp_path / "metrics.json")
    assert document == {"schema_version": SCHEMA_VERSION, "kind": "eval", **evaluation_fields()}


def _unversioned_training_run(root: Path) -> tuple[Path, dict]:
    """A run directory as training runs wrote it before the schema had a version."""
    (root / "index").mkdir(parents=True)
    (root / "index" / "scannet_test.txt").write_text("a.npz\n")
    (root / "index" / "a.npz").write_bytes(b"pairs")
    config = {
        "name": "indoor_ds",
        "dataset": {
            "trainval_data_source": "ScanNet",
            "val_list_path": "index/scannet_test.txt",
            "val_npz_root": "index",
            "scannet_img_resize": [640, 480],
        },
        "model": {"match_coarse": {"border_rm": 2}},
        "eval": {"pose_estimator": "RANSAC", "ransac_pixel_thr": 0.5, "ransac_conf": 0.99999},
    }
    run = root / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    hydra = {"hydra": {"runtime": {"cwd": str(root), "choices": {}}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    old = training_fields(protocol=dict(config["eval"], epi_err_thr=5e-4))
    del old["val_sets"]
    (run / "metrics.json").write_text(json.dumps(old))
    return run, config


def test_an_unversioned_training_file_gets_its_sets_and_protocols_from_the_run(tmp_path):
    run, config = _unversioned_training_run(tmp_path)
    document = read_metrics(run / "metrics.json")
    index = tmp_path / "index"
    val = Protocol(
        "scannet_test", hash_index([index / "scannet_test.txt", index / "a.npz"]), (640, 480)
    )
    assert validation_protocols(config, tmp_path) == {"scannet_test": val}
    expected = training_fields(val_sets={"scannet_test": protocol_fields(val)})
    assert document == {"schema_version": SCHEMA_VERSION, "kind": "train", **expected}
    assert "protocol" not in document  # the old files' estimator settings, not a Protocol
    assert set_results(document) == [SetResult("scannet_test", val, SETS["scannet_test"], 3, 40)]


def test_an_unversioned_training_file_needs_its_index_files_or_a_root(tmp_path):
    run, _ = _unversioned_training_run(tmp_path / "moved")
    (tmp_path / "moved" / "index" / "scannet_test.txt").unlink()
    with pytest.raises(DataError, match=r"scannet_test\.txt.*--root"):
        read_metrics(run / "metrics.json")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "index").mkdir(parents=True)
    (elsewhere / "index" / "scannet_test.txt").write_text("a.npz\n")
    (elsewhere / "index" / "a.npz").write_bytes(b"pairs")
    document = read_metrics(run / "metrics.json", root=elsewhere)
    assert list(document["val_sets"]) == ["scannet_test"]
    (run / ".hydra" / "config.yaml").unlink()
    with pytest.raises(DataError, match=r"config\.yaml is missing"):
        read_metrics(run / "metrics.json", root=elsewhere)
