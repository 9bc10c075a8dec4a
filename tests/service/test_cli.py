import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from service.cli import compiled_code_cache, main

REPO = Path(__file__).resolve().parents[2]


def test_every_command_but_serve_keeps_compiled_code_in_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kept = tmp_path / "facerecon" / "numba"
    assert compiled_code_cache(["-v", "reconstruct", "photo.jpg", "-o", "out"]) == kept
    assert compiled_code_cache(["evaluate", "--data", "serve"]) == kept  # a value named serve is no command
    assert compiled_code_cache(["serve", "--port", "8000"]) is None  # the service writes nothing
    assert compiled_code_cache(["-v", "serve"]) is None


@pytest.fixture
def photo_path(face_photo, tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(face_photo).save(path, quality=92)
    return path


@pytest.fixture
def real_photo_paths():
    from tests.conftest import AFLW_DEV

    paths = sorted((AFLW_DEV / "images").glob("*.jpg"))[:4] if AFLW_DEV.is_dir() else []
    if not paths:
        pytest.skip(f"real face photos not found under {AFLW_DEV}")
    return paths


def _load_mesh(path):
    loaded = trimesh.load(path, process=False)
    return loaded.to_geometry() if isinstance(loaded, trimesh.Scene) else loaded


def _box(photo_path) -> str:
    h, w = np.asarray(Image.open(photo_path)).shape[:2]
    return f"{0.2 * w},{0.15 * h},{0.8 * w},{0.85 * h}"


def test_reconstruct_writes_a_mesh_and_a_sidecar_and_warns_about_untrained_weights(photo_path, onnx_model, tmp_path,
                                                                                   capsys, topology):
    out = tmp_path / "out"
    assert main(["reconstruct", str(photo_path), "-o", str(out), "--box", _box(photo_path),
                 "--model", str(onnx_model)]) == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" in captured.err
    assert "processed 1 images" in captured.out and "1 faces" in captured.out
    mesh = _load_mesh(out / "photo.glb")
    assert len(mesh.vertices) == topology.num_vertices >= 5000 and len(mesh.faces) == topology.num_faces
    sidecar = json.loads((out / "photo.json").read_text())
    assert sidecar["files"] == ["photo.glb"] and sidecar["face_count"] == 1
    (face,) = sidecar["faces"]
    assert np.array(face["landmarks_2d"]).shape == (68, 2) and np.array(face["landmarks_3d"]).shape == (68, 3)
    assert face["score"] is None and {"yaw", "pitch", "roll", "box"} <= set(face)


@pytest.mark.parametrize("texture", ["none", "vertex", "uv"])
def test_reconstruct_obj_with_each_texture_mode(photo_path, onnx_model, tmp_path, texture, topology):
    out = tmp_path / "out"
    code = main(["reconstruct", str(photo_path), "-o", str(out), "--format", "obj", "--texture", texture,
                 "--box", _box(photo_path), "--model", str(onnx_model), "--texture-size", "128", "-q"])
    assert code == 0
    assert (out / "photo.png").is_file() == (texture == "uv")
    assert len(_load_mesh(out / "photo.obj").vertices) == topology.num_vertices


def test_reconstruct_ply_in_neutral_space(photo_path, onnx_model, tmp_path):
    out = tmp_path / "out"
    assert main(["reconstruct", str(photo_path), "-o", str(out), "--format", "ply", "--space", "neutral",
                 "--box", _box(photo_path), "--model", str(onnx_model), "-q"]) == 0
    np.testing.assert_allclose(np.ptp(_load_mesh(out / "photo.ply").vertices[:, 0]), 0.15, rtol=0.2)


def test_folders_are_searched_and_bad_files_are_skipped_with_reasons(photo_path, onnx_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "a.jpg").write_bytes(photo_path.read_bytes())
    (photos / "sub" / "b.png").write_bytes(photo_path.read_bytes())  # a JPEG named .png: content decides
    (photos / "broken.jpg").write_bytes(b"definitely not a jpeg")
    (photos / "notes.txt").write_text("not a photo, not picked up")
    out = tmp_path / "out"
    code = main(["reconstruct", str(photos), str(tmp_path / "missing.jpg"), "-o", str(out), "--box", _box(photo_path),
                 "--model", str(onnx_model), "-q"])
    assert code == 0
    assert (out / "a.glb").is_file() and (out / "sub" / "b.glb").is_file() and (out / "sub" / "b.json").is_file()
    assert not (out / "broken.glb").exists() and not (out / "notes.glb").exists()
    captured = capsys.readouterr()
    assert "processed 2 images" in captured.out and "skipped 2" in captured.out
    assert "broken.jpg: not a usable image" in captured.err and "missing.jpg: not found" in captured.err


def test_nothing_processed_is_a_failure(onnx_model, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    assert main(["reconstruct", str(broken), "-o", str(tmp_path / "out"), "--model", str(onnx_model), "-q"]) == 1
    assert "processed 0 images" in capsys.readouterr().out
    assert main(["reconstruct", str(tmp_path / "empty_dir_missing"), "-o", str(tmp_path / "out")]) == 2


def test_detection_finds_faces_without_a_box(real_photo_paths, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reconstruct", *map(str, real_photo_paths), "-o", str(out), "-q"]) == 0
    sidecars = sorted(out.glob("*.json"))
    assert len(sidecars) >= len(real_photo_paths) - 1  # a profile face may be missed
    for sidecar in sidecars:
        (face,) = json.loads(sidecar.read_text())["faces"]
        assert 0.5 < face["score"] <= 1.0


@pytest.mark.parametrize("box", ["1,2,3", "a,b,c,d", "10,10,5,50"])
def test_bad_box_is_a_usage_error(photo_path, tmp_path, box, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reconstruct", str(photo_path), "-o", str(tmp_path / "out"), "--box", box])
    assert exc.value.code == 2
    assert "--box" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(photo_path, tmp_path, capsys):
    assert main(["reconstruct", str(photo_path), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "x.onnx")]) == 2
    assert "no model" in capsys.readouterr().err


def test_export_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_export_round_trip_from_a_checkpoint(face_model, tmp_path, capsys):
    pytest.importorskip("torch")
    from training.checkpoint import save_checkpoint

    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, face_model, steps=7)
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert '"facerecon.trained": "True"' in capsys.readouterr().out
    from model.runtime.reconstructor import FaceReconstructor

    assert FaceReconstructor(out).metadata.training_steps == 7


def _run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``facerecon`` in a subprocess, stdout and stderr piped (not terminals)."""
    return subprocess.run([sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd or REPO)


def test_sidecars_name_the_model_version_and_landmark_calibration(photo_path, onnx_model, tmp_path):
    from model.runtime.reconstructor import FaceReconstructor

    out = tmp_path / "out"
    assert main(["reconstruct", str(photo_path), "-o", str(out), "--box", _box(photo_path),
                 "--model", str(onnx_model), "-q"]) == 0
    sidecar = json.loads((out / "photo.json").read_text())
    model = FaceReconstructor(onnx_model)
    assert sidecar["model_version"] == model.model_version
    assert sidecar["landmark_calibration"] == model.metadata.landmark_calibration == "none"


def test_progress_is_one_plain_line_per_photo_when_stderr_is_no_terminal(photo_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (photos / name).write_bytes(photo_path.read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a photo")
    run = _run_cli("reconstruct", str(photos), "-o", str(tmp_path / "out"), "--box", _box(photo_path))
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr and "\x1b" not in run.stderr
    progress = [line for line in run.stderr.splitlines() if line.startswith("reconstruct ")]
    assert len(progress) == 4, run.stderr
    assert [line.split(":")[0] for line in progress] == [f"reconstruct {n}/4" for n in range(1, 5)]
    assert "broken.jpg: skipped" in progress[2] and "a.jpg: 1 face" in progress[0]
    quiet = _run_cli("reconstruct", str(photos / "a.jpg"), "-o", str(tmp_path / "quiet"), "--box", _box(photo_path),
                     "-q")
    assert quiet.returncode == 0 and not [line for line in quiet.stderr.splitlines() if line.startswith("reconstruct")]


def test_version_prints_the_package_and_the_shipped_model(capsys):
    from importlib.metadata import version

    from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"facerecon {version('facerecon')}" in out
    model = FaceReconstructor(DEFAULT_MODEL)
    assert model.model_version in out and model.metadata.landmark_calibration in out
    run = _run_cli("--version")
    assert run.returncode == 0 and model.model_version in run.stdout


def test_transfer_writes_the_face_with_the_other_photos_expression(photo_path, onnx_model, tmp_path, topology):
    other = tmp_path / "other.jpg"
    Image.open(photo_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    out = tmp_path / "out"
    assert main(["transfer", "--identity", str(photo_path), "--expression", str(other), "-o", str(out),
                 "--format", "obj", "--texture", "uv", "--model", str(onnx_model)]) == 0
    stem = "photo_with_other"
    assert {f"{stem}.obj", f"{stem}.mtl", f"{stem}.png", f"{stem}.json"} <= {p.name for p in out.iterdir()}
    sidecar = json.loads((out / f"{stem}.json").read_text())
    (face,) = sidecar["faces"]
    assert len(face["expression_code"]) == 64 and np.shape(face["lighting"]) == (9, 3)
    # the stored code re-applied: the same expression, from the sidecar (or as a bare array)
    bare = tmp_path / "code.json"
    bare.write_text(json.dumps(face["expression_code"]))
    for code in (out / f"{stem}.json", bare):
        assert main(["transfer", "--identity", str(photo_path), "--expression-code", str(code), "-o", str(out),
                     "--space", "canonical", "--model", str(onnx_model)]) == 0
        again = json.loads((out / f"photo_with_{code.stem}.json").read_text())["faces"][0]
        np.testing.assert_allclose(again["expression_code"], face["expression_code"], atol=1e-4)
        assert len(_load_mesh(out / f"photo_with_{code.stem}.glb").vertices) == topology.num_vertices


@pytest.mark.parametrize(("arguments", "message"), [
    (["--expression", "MISSING"], "No such file"),
    (["--expression-code", "SHORT"], "64 numbers"),
    (["--expression-code", "OTHER_MODEL"], "valid only with the model that made them"),
    (["--expression-code", "NOT_JSON"], "cannot read an expression code"),
    (["--expression-code", "SHORT", "--pose", "expression"], "needs --expression"),
    (["--expression", "BLANK"], "no face was detected in the expression image"),
])
def test_transfer_refuses_bad_input_in_one_line(photo_path, onnx_model, tmp_path, capsys, arguments, message):
    files = {"MISSING": tmp_path / "missing.jpg", "SHORT": tmp_path / "short.json", "NOT_JSON": tmp_path / "x.json",
             "OTHER_MODEL": tmp_path / "other.json", "BLANK": tmp_path / "blank.jpg"}
    files["SHORT"].write_text("[1, 2, 3]")
    files["NOT_JSON"].write_text("{nope")
    files["OTHER_MODEL"].write_text(json.dumps({"model_version": "1-steps-000000000000",
                                                "faces": [{"expression_code": [0.0] * 64}]}))
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(files["BLANK"])
    arguments = [str(files.get(a, a)) for a in arguments]
    assert main(["transfer", "--identity", str(photo_path), *arguments, "-o", str(tmp_path / "out"),
                 "--model", str(onnx_model)]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert message in error.splitlines()[-1] and error.splitlines()[-1].startswith("error: ")  # one line


def test_same_person_fuses_the_photos_and_reports_the_ones_left_out(photo_path, onnx_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(photo_path.read_bytes())
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(photos / "wall.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(["reconstruct", "--same-person", str(photos), "-o", str(out), "--space", "neutral",
                 "--texture", "uv", "--format", "obj", "--model", str(onnx_model)]) == 0
    printed = capsys.readouterr().out
    assert "used 2 of 4 photos" in printed and "wall.jpg: no face" in printed and "broken.jpg: not a usable" in printed
    assert {"person.obj", "person.mtl", "person.png", "person.json"} == {p.name for p in out.iterdir()}
    summary = json.loads((out / "person.json").read_text())
    assert summary["photos_used"] == 2 and summary["files"] == ["person.obj", "person.mtl", "person.png"]
    used = [p for p in summary["photos"] if p["used"]]
    assert [p["weight"] for p in used] == pytest.approx([0.5, 0.5], abs=1e-3)
    posed = tmp_path / "posed"
    assert main(["reconstruct", "--same-person", str(photos / "a.jpg"), str(photos / "b.jpg"), "-o", str(posed),
                 "--model", str(onnx_model)]) == 0
    assert {"a.glb", "b.glb", "person.json"} == {p.name for p in posed.iterdir()}


@pytest.mark.parametrize(("arguments", "message"), [
    (["ONE"], "needs at least 2 photos"),
    (["ONE", "ONE", "--faces", "all"], "drop --box and --faces"),
    (["WALL", "WALL"], "no face was detected in any of the photos"),
])
def test_same_person_refuses_bad_input_in_one_line(photo_path, onnx_model, tmp_path, capsys, arguments, message):
    wall = tmp_path / "wall.jpg"
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(wall)
    arguments = [{"ONE": str(photo_path), "WALL": str(wall)}.get(a, a) for a in arguments]
    assert main(["reconstruct", "--same-person", *arguments, "-o", str(tmp_path / "out"),
                 "--model", str(onnx_model)]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
