import io
import json
import struct
import zipfile

import numpy as np
import pytest
import trimesh

from model.mesh.export import (
    AXES_COMMENT,
    UNTEXTURED_BASE_COLOR,
    ExportMesh,
    export_glb,
    export_obj,
    export_obj_zip,
    export_ply,
)
from model.mesh.texture_bake import sample_vertex_colors


def _half_cylinder(rows: int = 50, cols: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A face-sized grid patch bent into a half cylinder facing +Z.

    -> vertices (rows*cols, 3) float32, faces (2*(rows-1)*(cols-1), 3) counter-clockwise
    seen from +Z, uvs (rows*cols, 2) float32 (u along the arc, v up).
    """
    u, v = np.meshgrid(np.linspace(0, 1, cols), np.linspace(0, 1, rows))
    angle = (u - 0.5) * np.pi
    vertices = np.stack([0.075 * np.sin(angle), 0.18 * (v - 0.5), 0.075 * np.cos(angle)], -1).reshape(-1, 3)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices.astype(np.float32), faces, np.stack([u.ravel(), v.ravel()], 1).astype(np.float32)


def _texture(size: int = 128) -> np.ndarray:
    """(size, size, 3) uint8: red grows left to right, green grows bottom to top (v), blue 60."""
    rows, cols = np.mgrid[0:size, 0:size]
    red = cols * 255 // (size - 1)
    green = (size - 1 - rows) * 255 // (size - 1)
    return np.stack([red, green, np.full_like(rows, 60)], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def patch() -> dict[str, np.ndarray]:
    vertices, faces, uvs = _half_cylinder()
    colours = np.random.default_rng(0).integers(0, 256, (len(vertices), 3), dtype=np.uint8)
    return {"vertices": vertices, "faces": faces, "uvs": uvs, "colours": colours, "texture": _texture()}


@pytest.fixture(scope="module")
def odd_topology(patch) -> dict[str, np.ndarray]:
    """The patch plus what a cleaning exporter would remove: an unreferenced vertex, a degenerate
    triangle, and a vertex duplicating another's position."""
    vertices = np.concatenate([patch["vertices"], [[0.0, 0.0, 0.2], patch["vertices"][0]]]).astype(np.float32)
    faces = np.concatenate([patch["faces"], [[0, 0, 1], [len(vertices) - 1, 1, 2]]])
    colours = np.concatenate([patch["colours"], [[1, 2, 3], [250, 251, 252]]]).astype(np.uint8)
    return {"vertices": vertices, "faces": faces, "colours": colours}


def _srgb_to_linear(colours: np.ndarray) -> np.ndarray:
    c = colours / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    c = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(np.maximum(linear, 0), 1 / 2.4) - 0.055)
    return np.rint(c * 255).astype(np.uint8)


def _glb_json(data: bytes) -> dict:
    magic, version, length = struct.unpack_from("<III", data)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, chunk_type = struct.unpack_from("<II", data, 12)
    assert chunk_type == 0x4E4F534A
    return json.loads(data[20 : 20 + json_length])


def _load_glb(data: bytes, **kwargs) -> trimesh.Scene:
    return trimesh.load(io.BytesIO(data), file_type="glb", process=False, **kwargs)


def _single(scene: trimesh.Scene) -> trimesh.Trimesh:
    (mesh,) = scene.geometry.values()
    return mesh


def test_glb_keeps_the_topology_exactly(odd_topology):
    data = export_glb([ExportMesh(odd_topology["vertices"], odd_topology["faces"])])
    mesh = _single(_load_glb(data))
    np.testing.assert_array_equal(mesh.vertices, odd_topology["vertices"])
    np.testing.assert_array_equal(mesh.faces, odd_topology["faces"])
    # normals are unit length everywhere, also for the unreferenced vertex
    np.testing.assert_allclose(np.linalg.norm(mesh.vertex_normals, axis=1), 1.0, atol=1e-6)
    assert mesh.vertex_normals[-2] @ [0, 0, 1] == pytest.approx(1.0)


def test_glb_vertex_normals_point_out_of_the_surface(patch):
    mesh = _single(_load_glb(export_glb([ExportMesh(patch["vertices"], patch["faces"])])))
    radial = patch["vertices"] * [1, 0, 1]
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    assert (np.sum(mesh.vertex_normals * radial, axis=1) > 0.99).all()


def test_glb_vertex_colours_are_linear_and_round_trip(odd_topology):
    mesh_in = ExportMesh(odd_topology["vertices"], odd_topology["faces"], vertex_colors=odd_topology["colours"])
    data = export_glb([mesh_in])
    # with a material on the primitive, trimesh keeps COLOR_0 as a raw vertex attribute
    mesh = _single(_load_glb(data))
    linear = mesh.visual.vertex_attributes["color"]
    assert linear.shape == (len(odd_topology["vertices"]), 3) and linear.dtype == np.float32
    np.testing.assert_allclose(linear, _srgb_to_linear(odd_topology["colours"]), atol=1e-6)
    np.testing.assert_array_equal(_linear_to_srgb(linear), odd_topology["colours"])
    # without materials trimesh reads them as (linear) 8-bit vertex colours
    plain = _single(_load_glb(data, skip_materials=True))
    np.testing.assert_array_equal(plain.faces, odd_topology["faces"])
    expected = np.rint(_srgb_to_linear(odd_topology["colours"]) * 255)
    np.testing.assert_array_equal(plain.visual.vertex_colors[:, :3], expected)


def test_glb_material_is_a_non_metallic_double_sided_surface(patch):
    gltf = _glb_json(export_glb([ExportMesh(patch["vertices"], patch["faces"], vertex_colors=patch["colours"])]))
    (material,) = gltf["materials"]
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert material["doubleSided"] is True
    (primitive,) = gltf["meshes"][0]["primitives"]
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "COLOR_0"}
    # 3000 vertices: 16-bit indices
    assert gltf["accessors"][primitive["indices"]]["componentType"] == 5123


def test_glb_base_colour_is_skin_grey_only_without_texture_or_colours(patch):
    v, f = patch["vertices"], patch["faces"]
    plain, coloured, textured = (
        _glb_json(export_glb([mesh]))["materials"][0]["pbrMetallicRoughness"]
        for mesh in [
            ExportMesh(v, f),
            ExportMesh(v, f, vertex_colors=patch["colours"]),
            ExportMesh(v, f, uvs=patch["uvs"], texture=patch["texture"]),
        ]
    )
    # glTF's default white blows out under environment light; linear, the viewer's grey
    assert plain["baseColorFactor"] == list(UNTEXTURED_BASE_COLOR)
    np.testing.assert_allclose(_linear_to_srgb(np.array(UNTEXTURED_BASE_COLOR[:3])), [209, 204, 199], atol=1)
    # COLOR_0 and the texture are multiplied by the factor: left at its default, 1
    assert "baseColorFactor" not in coloured and "baseColorFactor" not in textured
    material = _single(_load_glb(export_glb([ExportMesh(v, f)]))).visual.material
    np.testing.assert_allclose(material.baseColorFactor, np.rint(np.array(UNTEXTURED_BASE_COLOR) * 255), atol=1)


def test_textured_glb_round_trips_uvs_and_the_image(patch):
    mesh_in = ExportMesh(patch["vertices"], patch["faces"], uvs=patch["uvs"], texture=patch["texture"])
    data = export_glb([mesh_in])
    gltf = _glb_json(data)
    assert gltf["images"][0]["mimeType"] == "image/jpeg"
    mesh = _single(_load_glb(data))
    np.testing.assert_array_equal(mesh.faces, patch["faces"])
    np.testing.assert_allclose(mesh.visual.uv, patch["uvs"], atol=1e-6)
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB")).astype(int)
    assert image.shape == patch["texture"].shape
    assert np.abs(image - patch["texture"]).mean() < 2.0  # JPEG
    # orientation: trimesh samples the image at the loaded uvs like we sample ours at ours
    size = patch["texture"].shape[0]
    pixel = np.stack([patch["uvs"][:, 0] * size, (1 - patch["uvs"][:, 1]) * size], 1)
    expected = sample_vertex_colors(patch["texture"], pixel).astype(int)
    sampled = mesh.visual.to_color().vertex_colors[:, :3].astype(int)
    assert np.abs(sampled - expected).max() <= 12 and np.abs(sampled - expected).mean() < 3


def test_a_textured_glb_ignores_vertex_colours(patch):
    mesh = ExportMesh(
        patch["vertices"], patch["faces"], vertex_colors=patch["colours"], uvs=patch["uvs"], texture=patch["texture"]
    )
    (primitive,) = _glb_json(export_glb([mesh]))["meshes"][0]["primitives"]
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0"}


def test_several_faces_become_several_nodes_of_one_scene(patch):
    meshes = [
        ExportMesh(patch["vertices"], patch["faces"], name="face"),
        ExportMesh(
            (patch["vertices"] + [0.2, 0, 0]).astype(np.float32),
            patch["faces"],
            name="face",
            uvs=patch["uvs"],
            texture=patch["texture"],
        ),
    ]
    data = export_glb(meshes)
    gltf = _glb_json(data)
    assert [node["name"] for node in gltf["nodes"]] == ["face", "face_2"]
    assert gltf["scenes"][0]["nodes"] == [0, 1]
    scene = _load_glb(data)
    assert sorted(scene.graph.nodes_geometry) == ["face", "face_2"]
    for node, mesh_in in zip(["face", "face_2"], meshes):
        _, geometry = scene.graph[node]
        np.testing.assert_array_equal(scene.geometry[geometry].vertices, mesh_in.vertices)


def test_meshes_past_65535_vertices_get_32_bit_indices():
    vertices, faces, _ = _half_cylinder(rows=300, cols=250)
    data = export_glb([ExportMesh(vertices, faces)])
    gltf = _glb_json(data)
    assert gltf["accessors"][gltf["meshes"][0]["primitives"][0]["indices"]]["componentType"] == 5125
    np.testing.assert_array_equal(_single(_load_glb(data)).faces, faces)


def test_obj_with_vertex_colours_round_trips(odd_topology, tmp_path):
    files = export_obj(
        ExportMesh(odd_topology["vertices"], odd_topology["faces"], vertex_colors=odd_topology["colours"]), stem="c"
    )
    assert set(files) == {"c.obj"}
    lines = files["c.obj"].decode().splitlines()
    vertex_lines = [line.split() for line in lines if line.startswith("v ")]
    assert len(vertex_lines) == len(odd_topology["vertices"])  # unreferenced vertex written too
    assert {len(fields) for fields in vertex_lines} == {7}  # v x y z r g b
    face_corners = [[corner.split("//") for corner in line.split()[1:]] for line in lines if line.startswith("f ")]
    face_lines = np.array(face_corners, dtype=int) - 1  # (F, 3, 2): vertex and normal index
    np.testing.assert_array_equal(face_lines[..., 0], odd_topology["faces"])
    np.testing.assert_array_equal(face_lines[..., 1], odd_topology["faces"])
    np.testing.assert_allclose(np.array(vertex_lines)[:, 1:4].astype(float), odd_topology["vertices"], atol=1e-7)
    colours = np.rint(np.array(vertex_lines)[:, 4:].astype(float) * 255)
    np.testing.assert_array_equal(colours, odd_topology["colours"])


def _radial(vertices: np.ndarray) -> np.ndarray:
    """Unit outward normals of the half cylinder."""
    radial = vertices * [1, 0, 1]
    return radial / np.linalg.norm(radial, axis=1, keepdims=True)


def test_obj_loads_back_in_trimesh(patch, tmp_path):
    files = export_obj(ExportMesh(patch["vertices"], patch["faces"], vertex_colors=patch["colours"]))
    (tmp_path / "face.obj").write_bytes(files["face.obj"])
    mesh = trimesh.load(tmp_path / "face.obj", process=False)
    np.testing.assert_array_equal(mesh.faces, patch["faces"])
    np.testing.assert_allclose(mesh.vertices, patch["vertices"], atol=1e-7)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], patch["colours"])
    assert (np.sum(mesh.vertex_normals * _radial(patch["vertices"]), axis=1) > 0.99).all()


@pytest.mark.parametrize("textured", [False, True])
def test_obj_has_one_smooth_normal_per_vertex_in_one_smoothing_group(odd_topology, patch, textured):
    if textured:
        mesh_in = ExportMesh(patch["vertices"], patch["faces"], uvs=patch["uvs"], texture=patch["texture"])
    else:
        mesh_in = ExportMesh(odd_topology["vertices"], odd_topology["faces"])
    lines = export_obj(mesh_in, stem="n")["n.obj"].decode().splitlines()
    assert lines[0] == f"# {AXES_COMMENT}"
    normals = np.array([line.split()[1:] for line in lines if line.startswith("vn ")], dtype=float)
    assert normals.shape == mesh_in.vertices.shape
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    # the GLB's normals, line i for vertex i: also the unreferenced vertex's (+Z)
    glb_normals = _single(_load_glb(export_glb([mesh_in]))).vertex_normals
    np.testing.assert_allclose(normals, glb_normals, atol=1e-6)
    # one smoothing group, set before the first face
    assert [line for line in lines if line.startswith("s ")] == ["s 1"]
    first_face = next(i for i, line in enumerate(lines) if line.startswith("f "))
    assert lines.index("s 1") < first_face
    # every corner: vertex, uv (textured) and normal of the same index
    corners = [corner.split("/") for line in lines if line.startswith("f ") for corner in line.split()[1:]]
    indices = np.array([[c[0], c[2]] + ([c[1]] if textured else []) for c in corners], dtype=int) - 1
    np.testing.assert_array_equal(indices, np.repeat(np.asarray(mesh_in.faces).reshape(-1, 1), indices.shape[1], 1))
    assert all(c[1] == "" for c in corners) != textured
    if textured:
        assert (np.sum(normals * _radial(patch["vertices"]), axis=1) > 0.99).all()


def test_textured_obj_round_trips_with_mtl_and_png(patch, tmp_path):
    mesh_in = ExportMesh(patch["vertices"], patch["faces"], uvs=patch["uvs"], texture=patch["texture"])
    files = export_obj(mesh_in, stem="t")
    assert set(files) == {"t.obj", "t.mtl", "t.png"}
    lines = files["t.obj"].decode().splitlines()
    assert lines[:2] == [f"# {AXES_COMMENT}", "mtllib t.mtl"]
    mtl = files["t.mtl"].decode().splitlines()
    assert "map_Kd t.png" in mtl and "Kd 1.00000000 1.00000000 1.00000000" in mtl
    # no ambient (some importers read Ka as metallic) and no specular: skin, as in the GLB
    assert "Ka 0.00000000 0.00000000 0.00000000" in mtl and "Ks 0.00000000 0.00000000 0.00000000" in mtl
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    mesh = trimesh.load(tmp_path / "t.obj", process=False)
    assert len(mesh.vertices) == len(patch["vertices"])
    np.testing.assert_array_equal(mesh.faces, patch["faces"])
    np.testing.assert_allclose(mesh.vertices, patch["vertices"], atol=1e-7)
    np.testing.assert_allclose(mesh.visual.uv, patch["uvs"], atol=1e-7)
    np.testing.assert_array_equal(np.asarray(mesh.visual.material.image.convert("RGB")), patch["texture"])


def test_obj_stem_must_be_a_plain_file_name(patch):
    with pytest.raises(ValueError, match="stem"):
        export_obj(ExportMesh(patch["vertices"], patch["faces"]), stem="../face")


def test_obj_zip_holds_one_obj_per_mesh_with_unique_stems(patch):
    meshes = [
        ExportMesh(patch["vertices"], patch["faces"], name="face", vertex_colors=patch["colours"]),
        ExportMesh(patch["vertices"], patch["faces"], name="face", uvs=patch["uvs"], texture=patch["texture"]),
        ExportMesh(patch["vertices"], patch["faces"], name="my face/1"),
    ]
    with zipfile.ZipFile(io.BytesIO(export_obj_zip(meshes))) as archive:
        assert sorted(archive.namelist()) == ["face.obj", "face_2.mtl", "face_2.obj", "face_2.png", "my_face_1.obj"]
        assert archive.read("face.obj") == export_obj(meshes[0], stem="face")["face.obj"]
        assert archive.read("face_2.png") == export_obj(meshes[1], stem="face_2")["face_2.png"]


def _ply_header(data: bytes) -> list[str]:
    return data[: data.index(b"end_header\n")].decode().splitlines()


def test_ply_keeps_topology_and_colours(odd_topology):
    mesh_in = ExportMesh(odd_topology["vertices"], odd_topology["faces"], vertex_colors=odd_topology["colours"])
    data = export_ply(mesh_in)
    assert data.startswith(b"ply\nformat binary_little_endian 1.0\n")
    mesh = trimesh.load(io.BytesIO(data), file_type="ply", process=False)
    np.testing.assert_array_equal(mesh.vertices, odd_topology["vertices"])
    np.testing.assert_array_equal(mesh.faces, odd_topology["faces"])
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], odd_topology["colours"])


def test_ply_has_normals_rgb_colours_and_states_its_axes(odd_topology):
    mesh_in = ExportMesh(odd_topology["vertices"], odd_topology["faces"], vertex_colors=odd_topology["colours"])
    data = export_ply(mesh_in)
    assert _ply_header(data) == [
        "ply",
        "format binary_little_endian 1.0",
        f"comment {AXES_COMMENT}",
        f"element vertex {len(odd_topology['vertices'])}",
        *(f"property float {name}" for name in ["x", "y", "z", "nx", "ny", "nz"]),
        *(f"property uchar {name}" for name in ["red", "green", "blue"]),  # no alpha
        f"element face {len(odd_topology['faces'])}",
        "property list uchar int vertex_indices",
    ]
    assert AXES_COMMENT == "facerecon: metres, +X subject's left, +Y up, +Z toward the viewer"
    mesh = trimesh.load(io.BytesIO(data), file_type="ply", process=False)
    glb_normals = _single(_load_glb(export_glb([mesh_in]))).vertex_normals
    np.testing.assert_allclose(mesh.vertex_normals, glb_normals, atol=1e-6)
    assert len(data) == len(b"\n".join(line.encode() for line in _ply_header(data))) + len(b"\nend_header\n") + (
        len(odd_topology["vertices"]) * (6 * 4 + 3) + len(odd_topology["faces"]) * (1 + 3 * 4)
    )


def test_ply_normals_point_out_of_the_surface(patch):
    mesh = trimesh.load(io.BytesIO(export_ply(ExportMesh(patch["vertices"], patch["faces"]))), file_type="ply",
                        process=False)
    assert (np.sum(mesh.vertex_normals * _radial(patch["vertices"]), axis=1) > 0.99).all()


def test_ply_of_a_textured_mesh_takes_colours_from_the_texture(patch):
    data = export_ply(ExportMesh(patch["vertices"], patch["faces"], uvs=patch["uvs"], texture=patch["texture"]))
    colours = trimesh.load(io.BytesIO(data), file_type="ply", process=False).visual.vertex_colors[:, :3].astype(int)
    # red follows u, green follows v (texture row 0 is v = 1)
    np.testing.assert_allclose(colours[:, 0], patch["uvs"][:, 0] * 255, atol=2.5)
    np.testing.assert_allclose(colours[:, 1], patch["uvs"][:, 1] * 255, atol=2.5)


def test_ply_without_colours_is_geometry_and_normals_only(patch):
    data = export_ply(ExportMesh(patch["vertices"], patch["faces"]))
    header = data[: data.index(b"end_header")].decode()
    assert "red" not in header and "property float nz" in header
    np.testing.assert_array_equal(trimesh.load(io.BytesIO(data), file_type="ply", process=False).faces, patch["faces"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"uvs": np.zeros((4, 2), np.float32)}, "together"),
        ({"faces": np.array([[0, 1, 9]])}, "outside"),
        ({"vertex_colors": np.zeros((4, 3))}, "uint8"),
        ({"vertices": np.zeros((4, 2))}, r"\(V, 3\)"),
    ],
)
def test_inconsistent_meshes_are_refused(change, message):
    fields = {"vertices": np.zeros((4, 3), np.float32), "faces": np.array([[0, 1, 2]]), **change}
    with pytest.raises(ValueError, match=message):
        ExportMesh(**fields)


def test_fields_set_after_construction_are_checked_on_export(patch):
    mesh = ExportMesh(patch["vertices"], patch["faces"])
    mesh.uvs = patch["uvs"]
    with pytest.raises(ValueError, match="together"):
        export_glb([mesh])


@pytest.mark.parametrize("kind", ["plain", "vertex_colours", "textured", "two_faces_and_odd_topology"])
def test_khronos_validator_reports_no_errors_or_warnings(patch, odd_topology, kind, tmp_path, gltf_validator):
    meshes = {
        "plain": [ExportMesh(patch["vertices"], patch["faces"])],
        "vertex_colours": [ExportMesh(patch["vertices"], patch["faces"], vertex_colors=patch["colours"])],
        "textured": [ExportMesh(patch["vertices"], patch["faces"], uvs=patch["uvs"], texture=patch["texture"])],
        "two_faces_and_odd_topology": [
            ExportMesh(patch["vertices"], patch["faces"], uvs=patch["uvs"], texture=patch["texture"]),
            ExportMesh(odd_topology["vertices"], odd_topology["faces"], vertex_colors=odd_topology["colours"]),
        ],
    }[kind]
    path = tmp_path / f"{kind}.glb"
    path.write_bytes(export_glb(meshes))
    issues = gltf_validator(path)
    assert issues["numErrors"] == 0, issues["messages"]
    assert issues["numWarnings"] == 0, issues["messages"]
    # the degenerate triangle is reported, as information only
    expected_infos = {"ACCESSOR_INDEX_TRIANGLE_DEGENERATE"} if kind == "two_faces_and_odd_topology" else set()
    assert {message["code"] for message in issues["messages"]} == expected_infos
