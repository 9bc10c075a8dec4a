import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh

from model.mesh_export import ExportMesh, export_glb, export_obj, export_obj_zip, export_ply

REPO = Path(__file__).resolve().parents[2]
VALIDATOR = REPO / "node_modules" / "gltf-validator"


def _half_cylinder(rows: int = 40, cols: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bent grid patch (a face-sized half cylinder): vertices, faces, uvs."""
    u, v = np.meshgrid(np.linspace(0, 1, cols), np.linspace(0, 1, rows))
    angle = (u - 0.5) * np.pi
    vertices = np.stack([0.075 * np.sin(angle), 0.18 * (v - 0.5), 0.075 * np.cos(angle)], -1).reshape(-1, 3)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices.astype(np.float32), faces, np.stack([u.ravel(), v.ravel()], 1).astype(np.float32)


@pytest.fixture
def patch():
    vertices, faces, uvs = _half_cylinder()
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (len(vertices), 3), dtype=np.uint8)
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:32] = (255, 0, 0)  # top half red: v > 0.5
    texture[32:] = (0, 0, 255)
    return vertices, faces, uvs, colours, texture


def _only_geometry(scene_or_mesh):
    if isinstance(scene_or_mesh, trimesh.Scene):
        (geometry,) = scene_or_mesh.geometry.values()
        return geometry
    return scene_or_mesh


def test_glb_keeps_topology_and_vertex_colours(patch):
    vertices, faces, _, colours, _ = patch
    # Duplicate a vertex position: an exporter that merges vertices would lose it.
    vertices = vertices.copy()
    vertices[1] = vertices[0]
    data = export_glb([ExportMesh(vertices, faces, vertex_colors=colours)])
    mesh = _only_geometry(trimesh.load(io.BytesIO(data), file_type="glb", process=False))
    assert len(mesh.vertices) == len(vertices)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-7)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], colours)


def test_textured_glb_carries_uvs_and_the_image(patch):
    vertices, faces, uvs, _, texture = patch
    data = export_glb([ExportMesh(vertices, faces, uvs=uvs, texture=texture)])
    mesh = _only_geometry(trimesh.load(io.BytesIO(data), file_type="glb", process=False))
    np.testing.assert_allclose(mesh.visual.uv, uvs, atol=1e-6)
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(image, texture)
    # v up: a vertex at the top of the layout samples the red top rows.
    top = np.argmax(uvs[:, 1])
    assert tuple(mesh.visual.to_color().vertex_colors[top, :3]) == (255, 0, 0)


def test_several_meshes_become_several_nodes(patch):
    vertices, faces, *_ = patch
    data = export_glb([ExportMesh(vertices, faces, name="face_0"), ExportMesh(vertices + 0.2, faces, name="face_1")])
    scene = trimesh.load(io.BytesIO(data), file_type="glb", process=False)
    assert len(scene.geometry) == 2
    assert {"face_0", "face_1"} <= set(scene.graph.nodes_geometry)


def test_obj_round_trips_with_colours_and_with_texture(patch, tmp_path):
    vertices, faces, uvs, colours, texture = patch
    coloured = export_obj(ExportMesh(vertices, faces, vertex_colors=colours), stem="c")
    assert set(coloured) == {"c.obj"}
    (tmp_path / "c.obj").write_bytes(coloured["c.obj"])
    mesh = trimesh.load(tmp_path / "c.obj", process=False)
    assert len(mesh.vertices) == len(vertices)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], colours)

    textured = export_obj(ExportMesh(vertices, faces, uvs=uvs, texture=texture), stem="t")
    assert set(textured) == {"t.obj", "t.mtl", "t.png"}
    assert b"mtllib t.mtl" in textured["t.obj"] and b"t.png" in textured["t.mtl"]
    for name, data in textured.items():
        (tmp_path / name).write_bytes(data)
    mesh = trimesh.load(tmp_path / "t.obj", process=False)
    assert len(mesh.vertices) == len(vertices)
    np.testing.assert_array_equal(np.asarray(mesh.visual.material.image.convert("RGB")), texture)


def test_obj_zip_names_are_unique(patch):
    vertices, faces, uvs, _, texture = patch
    meshes = [ExportMesh(vertices, faces, name="face"), ExportMesh(vertices, faces, name="face", uvs=uvs, texture=texture)]
    with zipfile.ZipFile(io.BytesIO(export_obj_zip(meshes))) as archive:
        assert sorted(archive.namelist()) == ["face.obj", "face_2.mtl", "face_2.obj", "face_2.png"]


def test_ply_keeps_topology_and_colours(patch):
    vertices, faces, _, colours, _ = patch
    data = export_ply(ExportMesh(vertices, faces, vertex_colors=colours))
    assert data.startswith(b"ply\nformat binary_little_endian")
    mesh = trimesh.load(io.BytesIO(data), file_type="ply", process=False)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], colours)


def test_uvs_without_texture_are_refused(patch):
    vertices, faces, uvs, *_ = patch
    with pytest.raises(ValueError, match="together"):
        ExportMesh(vertices, faces, uvs=uvs)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: cannot run the Khronos glTF validator")
@pytest.mark.skipif(not VALIDATOR.is_dir(), reason="gltf-validator is not installed (run `npm install` at the repo root)")
@pytest.mark.parametrize("kind", ["plain", "vertex_colours", "texture", "two_faces"])
def test_khronos_validator_finds_no_errors(patch, tmp_path, kind, topology):
    vertices, faces, uvs, colours, texture = patch
    meshes = {
        "plain": [ExportMesh(topology.vertices, topology.faces)],
        "vertex_colours": [ExportMesh(vertices, faces, vertex_colors=colours)],
        "texture": [ExportMesh(topology.vertices, topology.faces, uvs=topology.uvs, texture=texture)],
        "two_faces": [ExportMesh(vertices, faces, name="a"), ExportMesh(vertices, faces, name="b", vertex_colors=colours)],
    }[kind]
    path = tmp_path / "mesh.glb"
    path.write_bytes(export_glb(meshes))
    result = subprocess.run(["node", str(REPO / "tests" / "gltf_validate.mjs"), str(path)],
                            capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    report = json.loads(result.stdout)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
