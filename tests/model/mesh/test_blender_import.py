"""The exported GLB, OBJ and PLY files as Blender imports them, in one headless Blender.

Needs a `blender` on PATH (Debian's 3.4.1 package: `apt-get install blender`); skips without
one. Debian's package lacks numpy, which Blender's glTF importer needs (python3-numpy is no
dependency of it); where Blender's Python has none, the script borrows this virtualenv's (same
Python 3.11), appended last to sys.path. With Debian's own numpy (1.24), Blender 3.4's glTF
importer fails on `np.bool` (removed in numpy 1.24, back in 2.0); the script then sets
`np.bool = bool` first (the README gives users a one-line fix). The files are what is tested
here, not Debian's packaging.

One Blender process imports every file, each into an empty scene, and writes what it got: a
JSON summary and one .npz of arrays per file. What is checked, per the README's advice on
formats:

* every file becomes one mesh with the exported vertices in their order (Blender keeps UVs per
  face corner, so the OBJ's UV seams split nothing);
* GLB and OBJ arrive upright (their importers turn +Y up into Blender's +Z up: Blender's
  (X, Y, Z) is the file's (x, -z, y), the face looking toward -Y, at the front view); PLY keeps
  the file's coordinates (Blender 3.4's PLY importer has no axis options), so the face lies
  face up, as documented;
* GLB and OBJ are smooth on import with the file's normals: every polygon smooth, the corner
  normals at a vertex within 1 degree of each other and of the exported normal. Blender 3.4's
  PLY importer ignores PLY normals (a TODO in io_mesh_ply) and imports flat faces; after Shade
  Smooth the normals Blender computes point the file's way;
* vertex colours reach Blender: GLB's COLOR_0 as the "Col" attribute feeding the material's
  base colour, OBJ's `v x y z r g b` and PLY's red/green/blue as colour attributes;
* the untextured, uncoloured GLB's material is skin grey, every material non-metallic, and
  textured GLB/OBJ show the texture image through the exported UVs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.mesh.export import UNTEXTURED_BASE_COLOR, ExportMesh, export_glb, export_obj, export_ply
from model.mesh.texture_bake import sample_vertex_colors
from model.topology import FaceTopology

BLENDER_TIMEOUT_S = 300
TEXTURE_SIZE = 64
FILES = ["plain.glb", "coloured.glb", "textured.glb", "plain.obj", "coloured.obj", "textured.obj",
         "plain.ply", "coloured.ply", "textured.ply"]

# Runs inside Blender: argv after "--" is the config JSON path. Writes report.json and
# {file}.npz next to it.
BLENDER_SCRIPT = r'''
import json, sys
from pathlib import Path

import bpy

config_path = Path(sys.argv[sys.argv.index("--") + 1])
config = json.loads(config_path.read_text())
try:
    import numpy as np
    numpy_borrowed = False
except ImportError:  # Debian's blender package: python3-numpy is not installed with it
    sys.path.append(config["numpy_fallback"])
    import numpy as np
    numpy_borrowed = True
numpy_bool_shim = not hasattr(np, "bool")
if numpy_bool_shim:  # numpy 1.24-1.26 (Debian's python3-numpy): Blender 3.4's glTF importer uses np.bool
    np.bool = bool

wm_ops, legacy_ops = set(dir(bpy.ops.wm)), set(dir(bpy.ops.import_mesh)) | set(dir(bpy.ops.import_scene))


def import_file(path):
    """-> the operator used; every importer with its default options."""
    if path.suffix == ".glb":
        bpy.ops.import_scene.gltf(filepath=str(path))
        return "import_scene.gltf"
    if path.suffix == ".obj":
        if "obj_import" in wm_ops:
            bpy.ops.wm.obj_import(filepath=str(path))
            return "wm.obj_import"
        bpy.ops.import_scene.obj(filepath=str(path))
        return "import_scene.obj"
    if "ply_import" in wm_ops:  # Blender 3.6+: its default axes (forward Y, up Z) keep the file's
        bpy.ops.wm.ply_import(filepath=str(path))
        return "wm.ply_import"
    bpy.ops.import_mesh.ply(filepath=str(path))
    return "import_mesh.ply"


def loop_normals(mesh):
    if hasattr(mesh, "calc_normals_split"):  # Blender < 4.1
        mesh.calc_normals_split()
        normals = np.empty(len(mesh.loops) * 3, np.float32)
        mesh.loops.foreach_get("normal", normals)
    else:
        normals = np.empty(len(mesh.loops) * 3, np.float32)
        mesh.corner_normals.foreach_get("vector", normals)
    return normals.reshape(-1, 3)


def upstream_types(socket, seen=None):
    """Node types feeding a socket, recursively."""
    types = set()
    for link in socket.links:
        node = link.from_node
        types.add(node.type)
        for inp in node.inputs:
            types |= upstream_types(inp)
    return types


def material_summary(material):
    summary = {"name": material.name}
    if not material.use_nodes:
        return summary
    bsdfs = [n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED"]
    if bsdfs:
        base = bsdfs[0].inputs["Base Color"]
        summary.update(
            base_color=list(base.default_value),
            base_color_from=sorted(upstream_types(base)),
            metallic=bsdfs[0].inputs["Metallic"].default_value,
            metallic_linked=bsdfs[0].inputs["Metallic"].is_linked,
            roughness=bsdfs[0].inputs["Roughness"].default_value,
        )
    summary["images"] = [list(n.image.size) for n in material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image]
    return summary


report = {"blender": bpy.app.version_string, "numpy": np.__version__, "numpy_borrowed": numpy_borrowed,
          "numpy_bool_shim": numpy_bool_shim, "files": {}}
for name in config["files"]:
    path = config_path.parent / name
    bpy.ops.wm.read_factory_settings(use_empty=True)
    operator = import_file(path)
    objects = [o for o in bpy.data.objects if o.type == "MESH"]
    entry = {"operator": operator, "mesh_objects": len(objects)}
    report["files"][name] = entry
    if len(objects) != 1:
        continue
    obj = objects[0]
    mesh = obj.data
    world = np.array(obj.matrix_world, dtype=np.float64)
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
    loop_vertex = np.empty(len(mesh.loops), np.int64)
    mesh.loops.foreach_get("vertex_index", loop_vertex)
    smooth = np.empty(len(mesh.polygons), bool)
    mesh.polygons.foreach_get("use_smooth", smooth)
    entry.update(
        vertices=len(mesh.vertices),
        polygons=len(mesh.polygons),
        loops=len(mesh.loops),
        smooth_polygons=int(smooth.sum()),
        custom_normals=bool(mesh.has_custom_normals),
        colour_attributes=[[a.name, a.domain, a.data_type] for a in mesh.color_attributes],
        uv_layers=[layer.name for layer in mesh.uv_layers],
        materials=[material_summary(m) for m in mesh.materials if m is not None],
    )
    arrays = {"co": co, "loop_vertex": loop_vertex}
    if not smooth.all():
        arrays["flat_loop_normals"] = loop_normals(mesh) @ np.linalg.inv(world[:3, :3])  # normals: inverse transpose
        mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), bool))  # Shade Smooth
        mesh.update()
    arrays["loop_normals"] = loop_normals(mesh) @ np.linalg.inv(world[:3, :3])
    for attribute in mesh.color_attributes:
        values = np.empty(len(attribute.data) * 4, np.float32)
        attribute.data.foreach_get("color_srgb" if hasattr(attribute.data[0], "color_srgb") else "color", values)
        arrays[f"colour_{attribute.name}"] = values.reshape(-1, 4)
    if mesh.uv_layers:
        uvs = np.empty(len(mesh.loops) * 2, np.float32)
        mesh.uv_layers[0].data.foreach_get("uv", uvs)
        arrays["uv"] = uvs.reshape(-1, 2)
    np.savez(path.with_suffix(path.suffix + ".npz"), **arrays)

(config_path.parent / "report.json").write_text(json.dumps(report, indent=1))
'''


def _srgb_to_linear(colours: np.ndarray) -> np.ndarray:
    c = colours / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _texture() -> np.ndarray:
    """(64, 64, 3) uint8: red grows left to right, green grows bottom to top (v), blue 60."""
    rows, cols = np.mgrid[0:TEXTURE_SIZE, 0:TEXTURE_SIZE]
    red = cols * 255 // (TEXTURE_SIZE - 1)
    green = (TEXTURE_SIZE - 1 - rows) * 255 // (TEXTURE_SIZE - 1)
    return np.stack([red, green, np.full_like(rows, 60)], -1).astype(np.uint8)


def _file_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The exported normals, read back from a PLY (its nx ny nz), (V, 3)."""
    data = export_ply(ExportMesh(vertices, faces))
    body = data[data.index(b"end_header\n") + len(b"end_header\n") :]
    return np.frombuffer(body, dtype="<f4", count=len(vertices) * 6).reshape(-1, 6)[:, 3:].astype(np.float64)


def _to_blender(points: np.ndarray) -> np.ndarray:
    """File (x, y, z), +Y up -> Blender (x, -z, y), +Z up: what the glTF and OBJ importers do."""
    return np.stack([points[:, 0], -points[:, 2], points[:, 1]], axis=1)


@pytest.fixture(scope="module")
def blender() -> str:
    path = shutil.which("blender")
    if path is None:
        pytest.skip("Blender is not installed (Debian: `apt-get install blender python3-numpy`)")
    return path


@pytest.fixture(scope="module")
def meshes() -> dict[str, np.ndarray]:
    topology = FaceTopology.load()
    vertices = topology.vertices.astype(np.float32)
    # synthetic skin-ish colours that vary over the face
    span = np.ptp(vertices, axis=0)
    ramp = (vertices - vertices.min(axis=0)) / span
    colours = np.rint(np.stack([150 + 90 * ramp[:, 0], 110 + 80 * ramp[:, 1], 90 + 60 * ramp[:, 2]], 1))
    return {
        "vertices": vertices,
        "faces": topology.faces,
        "uvs": topology.uvs.astype(np.float32),
        "colours": colours.astype(np.uint8),
        "texture": _texture(),
        "normals": _file_normals(vertices, topology.faces),
    }


@pytest.fixture(scope="module")
def imported(blender, meshes, tmp_path_factory) -> dict:
    """{"report": Blender's JSON summary, "arrays": {file name: its arrays}}."""
    folder = tmp_path_factory.mktemp("blender_import")
    v, f = meshes["vertices"], meshes["faces"]
    variants = {
        "plain": ExportMesh(v, f),
        "coloured": ExportMesh(v, f, vertex_colors=meshes["colours"]),
        "textured": ExportMesh(v, f, uvs=meshes["uvs"], texture=meshes["texture"]),
    }
    for stem, mesh in variants.items():
        (folder / f"{stem}.glb").write_bytes(export_glb([mesh]))
        for name, data in export_obj(mesh, stem=stem).items():
            (folder / name).write_bytes(data)
        (folder / f"{stem}.ply").write_bytes(export_ply(mesh))
    numpy_fallback = str(Path(np.__file__).resolve().parent.parent)
    (folder / "config.json").write_text(json.dumps({"files": FILES, "numpy_fallback": numpy_fallback}))
    (folder / "import.py").write_text(BLENDER_SCRIPT)
    command = [blender, "--background", "--factory-startup", "--python-exit-code", "1",
               "--python", str(folder / "import.py"), "--", str(folder / "config.json")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=BLENDER_TIMEOUT_S, cwd=folder)
    if run.returncode != 0 or not (folder / "report.json").is_file():
        raise AssertionError(f"Blender failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
    report = json.loads((folder / "report.json").read_text())
    arrays = {}
    for name in FILES:
        with np.load(folder / f"{name}.npz") as data:
            arrays[name] = dict(data)
    return {"report": report, "arrays": arrays}


@pytest.mark.parametrize("name", FILES)
def test_every_file_is_one_mesh_with_the_vertices_in_order_and_oriented_as_documented(imported, meshes, name):
    entry, arrays = imported["report"]["files"][name], imported["arrays"][name]
    assert entry["mesh_objects"] == 1
    assert (entry["vertices"], entry["polygons"]) == (len(meshes["vertices"]), len(meshes["faces"]))
    # the triangles as exported, corner by corner (an importer may start a triangle at another corner)
    corners = arrays["loop_vertex"].reshape(-1, 3)
    rolled = [np.roll(meshes["faces"], shift, axis=1) for shift in range(3)]
    assert np.any([(corners == r).all(axis=1) for r in rolled], axis=0).all()
    if name.endswith(".ply"):
        expected = meshes["vertices"]  # as in the file: the face looks up (+Z), its top toward +Y
    else:
        expected = _to_blender(meshes["vertices"])  # upright: the top toward +Z, looking toward -Y
    np.testing.assert_allclose(arrays["co"], expected, atol=1e-6)
    # the same in words: which way the face looks and where the top of the head is
    looking, up = ([0, 0, 1], [0, 1, 0]) if name.endswith(".ply") else ([0, -1, 0], [0, 0, 1])
    assert _unit(arrays["loop_normals"]).mean(axis=0) @ looking > 0.5
    assert np.argmax(arrays["co"] @ up) == np.argmax(meshes["vertices"][:, 1])


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(_unit(a) * _unit(b), axis=1), -1.0, 1.0)))


@pytest.mark.parametrize("name", [n for n in FILES if not n.endswith(".ply")])
def test_glb_and_obj_are_smooth_with_the_files_normals(imported, meshes, name):
    entry, arrays = imported["report"]["files"][name], imported["arrays"][name]
    assert entry["smooth_polygons"] == entry["polygons"]
    assert entry["custom_normals"]
    loop_vertex, normals = arrays["loop_vertex"], arrays["loop_normals"]
    expected = _to_blender(meshes["normals"][loop_vertex])
    # every corner's normal is the vertex's exported normal, so corners at a vertex agree
    assert _angles_deg(normals, expected).max() < 1.0
    first_corner = np.full(len(meshes["vertices"]), -1)
    first_corner[loop_vertex[::-1]] = np.arange(len(loop_vertex))[::-1]
    assert _angles_deg(normals, normals[first_corner[loop_vertex]]).max() < 1.0


@pytest.mark.parametrize("name", [n for n in FILES if n.endswith(".ply")])
def test_ply_normals_point_the_files_way(imported, meshes, name):
    entry, arrays = imported["report"]["files"][name], imported["arrays"][name]
    expected = meshes["normals"][arrays["loop_vertex"]]
    if entry["operator"] == "import_mesh.ply":
        # Blender 3.4's importer drops nx ny nz and imports flat faces (README: Shade Smooth, or GLB)
        assert entry["smooth_polygons"] == 0
        assert np.median(_angles_deg(arrays["flat_loop_normals"], expected)) < 5
        # after Shade Smooth: Blender's own vertex normals (angle- rather than area-weighted)
        angles = _angles_deg(arrays["loop_normals"], expected)
        # at sharp features (lips, eyelids) angle and area weighting differ by tens of degrees
        assert np.median(angles) < 1 and np.percentile(angles, 95) < 10 and angles.max() < 90
    else:  # Blender 3.6+ imports the normals
        assert entry["smooth_polygons"] == entry["polygons"]
        assert _angles_deg(arrays["loop_normals"], expected).max() < 1.0


def _per_vertex_colours(arrays: dict, attribute: str, domain: str, vertex_count: int) -> np.ndarray:
    """(V, 3) sRGB floats of a colour attribute; a corner attribute must agree at each vertex."""
    values = arrays[f"colour_{attribute}"][:, :3]
    if domain == "POINT":
        return values
    per_vertex = np.zeros((vertex_count, 3))
    per_vertex[arrays["loop_vertex"]] = values
    np.testing.assert_allclose(values, per_vertex[arrays["loop_vertex"]], atol=1e-6)
    return per_vertex


@pytest.mark.parametrize("name", ["coloured.glb", "coloured.obj", "coloured.ply", "textured.ply"])
def test_vertex_colours_reach_blender(imported, meshes, name):
    entry, arrays = imported["report"]["files"][name], imported["arrays"][name]
    assert len(entry["colour_attributes"]) == 1, entry["colour_attributes"]
    ((attribute, domain, _),) = entry["colour_attributes"]
    if name.endswith(".ply") and entry["operator"] == "import_mesh.ply":
        assert attribute == "Col"  # what the README tells a material to use
    colours = _per_vertex_colours(arrays, attribute, domain, len(meshes["vertices"]))
    if name == "textured.ply":
        size = TEXTURE_SIZE
        pixels = np.stack([meshes["uvs"][:, 0] * size, (1 - meshes["uvs"][:, 1]) * size], axis=1)
        expected = sample_vertex_colors(meshes["texture"], pixels) / 255.0
    else:
        expected = meshes["colours"] / 255.0
    np.testing.assert_allclose(colours, expected, atol=1.5 / 255)
    if name == "coloured.glb":
        (material,) = entry["materials"]
        assert "VERTEX_COLOR" in material["base_color_from"] or "ATTRIBUTE" in material["base_color_from"]


def test_materials_are_non_metallic_skin_grey_or_coloured_or_textured(imported):
    files = imported["report"]["files"]
    for name in [n for n in FILES if not n.endswith(".ply")]:
        if name == "plain.obj" or name == "coloured.obj":
            assert files[name]["materials"] == [], name  # no MTL: Blender's default material
            continue
        (material,) = files[name]["materials"]
        assert material["metallic"] == 0.0 and not material["metallic_linked"], name
        assert material["roughness"] == pytest.approx(0.8, abs=0.01), name
    plain = files["plain.glb"]["materials"][0]
    assert plain["base_color_from"] == []
    np.testing.assert_allclose(plain["base_color"], UNTEXTURED_BASE_COLOR, atol=1e-6)
    for name in ["textured.glb", "textured.obj"]:
        (material,) = files[name]["materials"]
        assert "TEX_IMAGE" in material["base_color_from"], name
        assert material["images"] == [[TEXTURE_SIZE, TEXTURE_SIZE]], name
    # PLY has no materials: Blender shows its colours once a material uses the "Col" attribute
    for name in [n for n in FILES if n.endswith(".ply")]:
        assert files[name]["materials"] == [], name


@pytest.mark.parametrize("name", ["textured.glb", "textured.obj"])
def test_textured_files_carry_the_uvs(imported, meshes, name):
    arrays = imported["arrays"][name]
    np.testing.assert_allclose(arrays["uv"], meshes["uvs"][arrays["loop_vertex"]], atol=1e-6)
