"""`facerecon calibrate-identity`: the different-person threshold of several-photo fusion, calibrated
on LFW's training split and written into a copy of the model's metadata."""

import dataclasses
import json
import shutil

import onnx
import pytest

from model.onnx_contract import ModelMetadata
from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor
from service.cli import main
from tests.conftest import SHARED_DATA
from training.export.identity_consensus import write_identity_threshold

LFW = SHARED_DATA / "train" / "lfw"


def _metadata(path) -> ModelMetadata:
    return ModelMetadata.from_properties({p.key: p.value for p in onnx.load(str(path)).metadata_props})


@pytest.mark.skipif(not LFW.is_dir(), reason="needs the face photos of ../shared/data (train/lfw)")
def test_cli_reports_the_threshold_and_writes_it_into_the_model(tmp_path, capsys):
    out = tmp_path / "calibrated.onnx"
    assert main(["calibrate-identity", "--people", str(LFW), "--model", str(DEFAULT_MODEL), "--out", str(out),
                 "--max-people", "6", "--photos", "2"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["people"], report["photos_per_person"], report["quantile"]) == (6, 2, 0.95)
    assert report["same_person"]["n"] == report["different_person"]["n"] == 12
    threshold = report["threshold"]
    assert threshold > 0 and threshold == report["same_person"]["p95"]  # the quantile of the same-person distances
    assert f"wrote {out}" in captured.err
    written = _metadata(out)
    assert written.identity_threshold == threshold
    assert written == dataclasses.replace(_metadata(DEFAULT_MODEL), identity_threshold=threshold)  # nothing else
    assert FaceReconstructor(out).metadata.identity_threshold == threshold


def test_the_threshold_can_be_written_into_the_model_itself(tmp_path):
    model = tmp_path / "facerecon.onnx"
    shutil.copyfile(DEFAULT_MODEL, model)
    write_identity_threshold(model, 12.5, model)
    assert FaceReconstructor(model).metadata.identity_threshold == 12.5


def test_a_missing_people_folder_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "calibrated.onnx"
    assert main(["calibrate-identity", "--people", str(tmp_path / "nobody"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "people folder not found" in err and str(tmp_path / "nobody") in err
    assert "Traceback" not in err and not out.exists()


def test_too_few_people_for_the_intruders_is_a_clear_error(tmp_path, capsys):
    people = tmp_path / "people"
    people.mkdir()
    out = tmp_path / "calibrated.onnx"
    assert main(["calibrate-identity", "--people", str(people), "--out", str(out), "--max-people", "6",
                 "--photos", "2"]) == 2
    err = capsys.readouterr().err
    assert "0 training-split people" in err and "needs at least 3" in err
    assert "Traceback" not in err and not out.exists()
