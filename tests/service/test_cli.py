import numpy as np
import pytest
import trimesh
from PIL import Image

from service.cli import main


@pytest.fixture
def photo_path(face_photo, tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(face_photo).save(path, quality=92)
    return path


def _load_mesh(path):
    loaded = trimesh.load(path, process=False)
    return loaded.to_geometry() if isinstance(loaded, trimesh.Scene) else loaded


def test_reconstruct_writes_a_dense_glb_and_warns_about_untrained_weights(photo_path, onnx_model, tmp_path, capsys, topology):
    out = tmp_path / "face.glb"
    assert main(["reconstruct", str(photo_path), "-o", str(out), "--model", str(onnx_model)]) == 0
    err = capsys.readouterr().err
    assert "UNTRAINED" in err
    mesh = _load_mesh(out)
    assert len(mesh.vertices) == topology.num_vertices >= 5000
    assert len(mesh.faces) == topology.num_faces


@pytest.mark.parametrize("texture", ["none", "vertex", "uv"])
def test_reconstruct_obj_with_each_texture_mode(photo_path, onnx_model, tmp_path, texture, topology):
    out = tmp_path / "face.obj"
    h, w = np.asarray(Image.open(photo_path)).shape[:2]
    box = f"{0.2 * w},{0.15 * h},{0.8 * w},{0.85 * h}"
    code = main(["reconstruct", str(photo_path), "-o", str(out), "--format", "obj", "--texture", texture,
                 "--box", box, "--model", str(onnx_model), "--texture-size", "128"])
    assert code == 0
    assert out.is_file()
    assert (tmp_path / "face.png").is_file() == (texture == "uv")
    mesh = _load_mesh(out)
    assert len(mesh.vertices) == topology.num_vertices


def test_reconstruct_ply_in_neutral_space(photo_path, onnx_model, tmp_path, topology):
    out = tmp_path / "face.ply"
    assert main(["reconstruct", str(photo_path), "-o", str(out), "--format", "ply", "--space", "neutral",
                 "--model", str(onnx_model)]) == 0
    mesh = _load_mesh(out)
    np.testing.assert_allclose(np.ptp(mesh.vertices[:, 0]), 0.15, rtol=0.2)


def test_several_images_go_to_a_folder_and_a_bad_one_does_not_stop_the_rest(photo_path, onnx_model, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a jpeg")
    out_dir = tmp_path / "meshes"
    code = main(["reconstruct", str(broken), str(photo_path), "-o", str(out_dir), "--model", str(onnx_model)])
    assert code == 1
    assert (out_dir / "photo.glb").is_file() and not (out_dir / "broken.glb").exists()
    assert "broken.jpg" in capsys.readouterr().err


@pytest.mark.parametrize("box", ["1,2,3", "a,b,c,d", "10,10,5,50"])
def test_bad_box_is_a_usage_error(photo_path, tmp_path, box, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reconstruct", str(photo_path), "-o", str(tmp_path / "f.glb"), "--box", box])
    assert exc.value.code == 2
    assert "--box" in capsys.readouterr().err


def test_missing_model_and_wrong_suffix_are_clear_errors(photo_path, onnx_model, tmp_path, capsys):
    assert main(["reconstruct", str(photo_path), "-o", str(tmp_path / "f.glb"), "--model", str(tmp_path / "x.onnx")]) == 2
    assert "no model" in capsys.readouterr().err
    assert main(["reconstruct", str(photo_path), "-o", str(tmp_path / "f.obj"), "--model", str(onnx_model)]) == 2
    assert "does not end in .glb" in capsys.readouterr().err


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
    from model.inference import FaceReconstructor

    assert FaceReconstructor(out).metadata.training_steps == 7
