import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("mediapipe")

from tests.conftest import SHARED_DATA  # noqa: E402
from training.data.prepare import PrepareConfig, is_validation, prepare_dataset, subject_key  # noqa: E402


def test_split_is_by_subject_and_seeded(tmp_path):
    root = tmp_path / "lfw"
    assert subject_key(root / "Ann_Lee" / "Ann_Lee_0001.jpg", root) == "lfw/Ann_Lee"
    assert subject_key(root / "23_1_0_x.jpg", root) == "lfw/23_1_0_x"
    keys = [f"k{i}" for i in range(4000)]
    chosen = [is_validation(k, 0.05, seed=0) for k in keys]
    assert 0.04 < np.mean(chosen) < 0.06
    assert chosen == [is_validation(k, 0.05, seed=0) for k in keys]
    assert chosen != [is_validation(k, 0.05, seed=1) for k in keys]


def test_faceless_and_unreadable_files_are_skipped_and_counted(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(images / "wall.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "data"
    manifest = prepare_dataset([images], out, PrepareConfig(workers=1, shard_size=8))
    assert manifest["images_found"] == 2 and manifest["faces_labelled"] == 0
    assert manifest["skipped"] == {"no face found": 1, "unreadable": 1}
    assert json.loads((out / "manifest.json").read_text())["skipped"] == manifest["skipped"]


@pytest.mark.skipif(not (SHARED_DATA / "train" / "lfw").is_dir(), reason="needs ../shared/data/train (face photos)")
def test_labels_real_photos_and_resumes(tmp_path):
    source = SHARED_DATA / "train" / "lfw"
    people = sorted(p for p in source.iterdir() if p.is_dir())[:4]
    images = tmp_path / "lfw"
    for person in people:
        (images / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:2]:
            (images / person.name / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "data"
    manifest = prepare_dataset([images], out, PrepareConfig(workers=1, shard_size=2))
    assert manifest["images_found"] >= 4 and manifest["faces_labelled"] >= 0.75 * manifest["images_found"]
    with np.load(out / "shard_00000.npz") as shard:
        landmarks = shard["landmarks"]
        assert landmarks.shape[1:] == (468, 3)
        assert (landmarks[..., :2] > 0).all() and (landmarks[..., :2] < 192).all()
    stamp = (out / "shard_00000.npz").stat().st_mtime_ns
    again = prepare_dataset([images], out, PrepareConfig(workers=1, shard_size=2))
    assert again["faces_labelled"] == manifest["faces_labelled"]
    assert (out / "shard_00000.npz").stat().st_mtime_ns == stamp  # kept, not relabelled
