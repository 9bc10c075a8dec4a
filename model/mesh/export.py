"""Mesh files for reconstructed faces: GLB, OBJ (+ MTL + PNG, or a zip of them) and PLY.

Coordinates are metres in the glTF convention (+X the subject's left, +Y up, +Z toward the
viewer; a face is about 0.15 m wide) in every format, PLY included (:data:`AXES_COMMENT`;
Blender's PLY importer does not convert axes, so a PLY arrives there lying face up, while
its glTF and OBJ importers turn +Y up into Blender's +Z up). Topology is kept exactly in
every format: the vertices in their order and the triangles as given, with no merging, no
removal of unreferenced vertices or degenerate triangles.

Every format carries the same smooth normals (area-weighted, :func:`area_weighted_normals`), so
viewers shade the surface smooth rather than faceted.

All three writers are the project's own (no trimesh), to control what trimesh's exporters do
not:

* GLB (JSON + one binary buffer): a non-metallic material (glTF's default material is fully
  metallic) in skin grey (:data:`UNTEXTURED_BASE_COLOR`) when the mesh has neither texture
  nor colours (glTF's default white blows out under environment light), unit normals even
  for vertices no triangle uses, vertex colours in the linear colour space glTF requires,
  16-bit indices when they fit, and the texture as a JPEG (quality :data:`GLB_JPEG_QUALITY`;
  a photo texture is ~10x smaller than as PNG).
* OBJ: ``v`` (with colours), ``vt``, ``vn`` lines one per vertex in the mesh's order, one
  smoothing group (``s 1``) and ``f v/vt/vn`` faces; the MTL has no ambient (``Ka`` 0;
  Blender's Python OBJ importer maps ``Ka`` to metallic), no specular and ``Ns`` 40, which
  Blender turns into the GLB's roughness, 0.8.
* PLY: binary little-endian, float ``x y z``, float ``nx ny nz`` and uchar ``red green blue``
  per vertex, a ``comment`` line stating the axes.

When a mesh has both a texture and vertex colours, GLB and OBJ carry the texture only (in
glTF, COLOR_0 would multiply the texture); PLY, which has no texture, carries the vertex
colours, or colours sampled from the texture at the UVs when the mesh has none.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model.mesh.normals import area_weighted_normals
from model.mesh.texture_bake import sample_vertex_colors

GLB_JPEG_QUALITY = 90
# zlib level of PNG textures and of zipped OBJ files: level 1 against the default 6, measured on a
# 512 x 512 face texture and its 1.4 MB OBJ: 17 against 76 ms and 201 against 167 kB for the PNG, 13
# against 101 ms and 493 against 448 kB for the OBJ; a few more bytes for a fraction of the CPU
DEFLATE_LEVEL = 1
_ROUGHNESS = 0.8  # skin: non-metallic, mostly diffuse
# The web viewer's skin grey (sRGB 0.82, 0.80, 0.78) in linear RGB(A), for meshes with
# neither texture nor vertex colours: glTF's default, white, blows out under environment light.
UNTEXTURED_BASE_COLOR = (0.638, 0.604, 0.57, 1.0)
# First line of every PLY header after the format: the axes, which PLY itself cannot state.
AXES_COMMENT = "facerecon: metres, +X subject's left, +Y up, +Z toward the viewer"

_GLB_MAGIC, _GLB_JSON, _GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_TRIANGLES = 4

_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")



def _srgb_to_linear_table() -> np.ndarray:
    """(256,) float32: sRGB byte -> linear value (the IEC 61966-2-1 transfer function)."""
    encoded = np.arange(256) / 255.0
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
    return linear.astype(np.float32)


_SRGB_TO_LINEAR = _srgb_to_linear_table()


@dataclass
class ExportMesh:
    """One face mesh to write.

    vertices (V, 3) float32 metres; faces (F, 3) int, counter-clockwise seen from outside;
    vertex_colors (V, 3) uint8 sRGB; uvs (V, 2) float32 in [0, 1] with v up, together with
    texture (T, T, 3) uint8 whose row 0 is the top of the image (v = 1); normals (V, 3) float32
    unit normals when they are known already (they must be the area-weighted normals of these
    vertices and faces, see :meth:`vertex_normals`).

    Fields may be set after construction; every exporter calls :meth:`validate`.
    """

    vertices: np.ndarray
    faces: np.ndarray
    name: str = "face"
    vertex_colors: np.ndarray | None = None
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None
    normals: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def textured(self) -> bool:
        return self.texture is not None

    def vertex_normals(self) -> np.ndarray:
        """(V, 3) float32 smooth unit normals: ``normals`` when given, else computed
        (:func:`area_weighted_normals`)."""
        if self.normals is not None:
            return np.asarray(self.normals, dtype=np.float32)
        return area_weighted_normals(np.asarray(self.vertices, dtype=np.float32), np.asarray(self.faces))

    def validate(self) -> None:
        """Raise ValueError unless shapes, dtypes and index ranges are consistent."""
        vertices, faces = np.asarray(self.vertices), np.asarray(self.faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
            raise ValueError(f"vertices must be (V, 3) with V > 0, got {vertices.shape}")
        if not np.isfinite(vertices).all():
            raise ValueError("vertices must be finite")
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or faces.dtype.kind not in "iu":
            raise ValueError(f"faces must be (F, 3) integers with F > 0, got {faces.shape} {faces.dtype}")
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise ValueError(f"faces index outside [0, {len(vertices)})")
        if self.vertex_colors is not None:
            colors = np.asarray(self.vertex_colors)
            if colors.shape != (len(vertices), 3) or colors.dtype != np.uint8:
                raise ValueError(f"vertex_colors must be (V, 3) uint8, got {colors.shape} {colors.dtype}")
        if (self.uvs is None) != (self.texture is None):
            raise ValueError("uvs and texture go together")
        if self.normals is not None and np.shape(self.normals) != (len(vertices), 3):
            raise ValueError(f"normals must be (V, 3), got {np.shape(self.normals)}")
        if self.uvs is not None:
            uvs, texture = np.asarray(self.uvs), np.asarray(self.texture)
            if uvs.shape != (len(vertices), 2) or not np.isfinite(uvs).all():
                raise ValueError(f"uvs must be finite (V, 2), got {uvs.shape}")
            if texture.ndim != 3 or texture.shape[2] != 3 or texture.dtype != np.uint8:
                raise ValueError(f"texture must be (T, T, 3) uint8, got {texture.shape} {texture.dtype}")


def _unique_stems(meshes: Sequence[ExportMesh]) -> list[str]:
    """File-name-safe, unique stems from the mesh names: 'face', 'face_2', ..."""
    stems: list[str] = []
    for mesh in meshes:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", mesh.name).strip("_") or "face"
        stem, n = base, 1
        while stem in stems:
            n += 1
            stem = f"{base}_{n}"
        stems.append(stem)
    return stems


class _GlbWriter:
    """Accumulates the glTF JSON and the binary buffer of one GLB file."""

    def __init__(self) -> None:
        self.gltf: dict = {
            "asset": {"version": "2.0", "generator": "facerecon"},
            "scene": 0,
            "scenes": [{"nodes": []}],
            "nodes": [],
            "meshes": [],
            "materials": [],
            "accessors": [],
            "bufferViews": [],
        }
        self.chunks: list[memoryview] = []  # the binary buffer's parts, each 4-byte aligned: copied once, at the end
        self.length = 0

    def _view(self, data: bytes | np.ndarray, target: int | None) -> int:
        """data: bytes or a C-contiguous array, kept as it is until :meth:`to_bytes`."""
        self._pad()
        chunk = data.data if isinstance(data, np.ndarray) else memoryview(data)
        view = {"buffer": 0, "byteOffset": self.length, "byteLength": chunk.nbytes}
        if target is not None:
            view["target"] = target
        self.chunks.append(chunk)
        self.length += view["byteLength"]
        self.gltf["bufferViews"].append(view)
        return len(self.gltf["bufferViews"]) - 1

    def _pad(self) -> None:
        if self.length % 4:
            self.chunks.append(memoryview(b"\0" * (-self.length % 4)))
            self.length += -self.length % 4

    def accessor(self, array: np.ndarray, component_type: int, kind: str, target: int, bounds: bool = False) -> int:
        """array (N,) or (N, C) already in the component type's dtype -> accessor index."""
        accessor = {
            "bufferView": self._view(np.ascontiguousarray(array), target),
            "componentType": component_type,
            "count": len(array),
            "type": kind,
        }
        if bounds:  # per component over contiguous columns: a (N, C) reduction down axis 0 is ~30x slower
            columns = np.ascontiguousarray(array.reshape(len(array), -1).T)
            accessor["min"] = columns.min(axis=1).tolist()
            accessor["max"] = columns.max(axis=1).tolist()
        self.gltf["accessors"].append(accessor)
        return len(self.gltf["accessors"]) - 1

    def jpeg_texture(self, image: np.ndarray) -> int:
        """image (H, W, 3) uint8 -> texture index."""
        encoded = io.BytesIO()
        Image.fromarray(image).save(encoded, format="JPEG", quality=GLB_JPEG_QUALITY)
        self.gltf.setdefault("images", []).append(
            {"bufferView": self._view(encoded.getvalue(), None), "mimeType": "image/jpeg"}
        )
        if "samplers" not in self.gltf:
            self.gltf["samplers"] = [
                {
                    "magFilter": _LINEAR,
                    "minFilter": _LINEAR_MIPMAP_LINEAR,
                    "wrapS": _CLAMP_TO_EDGE,
                    "wrapT": _CLAMP_TO_EDGE,
                }
            ]
        textures = self.gltf.setdefault("textures", [])
        textures.append({"sampler": 0, "source": len(self.gltf["images"]) - 1})
        return len(textures) - 1

    def add_mesh(self, mesh: ExportMesh, name: str) -> None:
        vertices = np.asarray(mesh.vertices, dtype=np.float32)
        faces = np.asarray(mesh.faces)
        # 65535 is the primitive-restart value, so 16-bit indices need V <= 65535
        index_dtype, index_type = (np.uint16, _UNSIGNED_SHORT) if len(vertices) <= 65535 else (np.uint32, _UNSIGNED_INT)
        attributes = {
            "POSITION": self.accessor(vertices, _FLOAT, "VEC3", _ARRAY_BUFFER, bounds=True),
            "NORMAL": self.accessor(mesh.vertex_normals(), _FLOAT, "VEC3", _ARRAY_BUFFER),
        }
        pbr: dict = {"metallicFactor": 0.0, "roughnessFactor": _ROUGHNESS}
        if mesh.textured:
            uvs = np.asarray(mesh.uvs, dtype=np.float32)
            # glTF's texture origin is the top-left corner: v runs down
            gltf_uvs = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1)
            attributes["TEXCOORD_0"] = self.accessor(gltf_uvs, _FLOAT, "VEC2", _ARRAY_BUFFER)
            pbr["baseColorTexture"] = {"index": self.jpeg_texture(np.asarray(mesh.texture))}
        elif mesh.vertex_colors is not None:
            # COLOR_0 times the default base colour factor, 1: the colours as they are
            linear = _SRGB_TO_LINEAR[np.asarray(mesh.vertex_colors)]
            attributes["COLOR_0"] = self.accessor(linear, _FLOAT, "VEC3", _ARRAY_BUFFER)
        else:
            pbr["baseColorFactor"] = list(UNTEXTURED_BASE_COLOR)
        self.gltf["materials"].append({"name": name, "pbrMetallicRoughness": pbr, "doubleSided": True})
        primitive = {
            "attributes": attributes,
            "indices": self.accessor(faces.astype(index_dtype).ravel(), index_type, "SCALAR", _ELEMENT_ARRAY_BUFFER),
            "material": len(self.gltf["materials"]) - 1,
            "mode": _TRIANGLES,
        }
        self.gltf["meshes"].append({"name": name, "primitives": [primitive]})
        self.gltf["nodes"].append({"name": name, "mesh": len(self.gltf["meshes"]) - 1})
        self.gltf["scenes"][0]["nodes"].append(len(self.gltf["nodes"]) - 1)

    def to_bytes(self) -> bytes:
        self._pad()
        self.gltf["buffers"] = [{"byteLength": self.length}]
        text = json.dumps(self.gltf, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + self.length
        return b"".join(
            [
                struct.pack("<III", _GLB_MAGIC, 2, total),
                struct.pack("<II", len(text), _GLB_JSON),
                text,
                struct.pack("<II", self.length, _GLB_BIN),
                *self.chunks,
            ]
        )


def export_glb(meshes: Sequence[ExportMesh]) -> bytes:
    """One binary glTF 2.0 scene with a root node per mesh (e.g. every face of one photo).

    Nodes, meshes and materials are named after the meshes (made unique like the OBJ zip
    stems). Each primitive has POSITION, NORMAL and either TEXCOORD_0 + a JPEG base-colour
    texture, or linear float COLOR_0, or neither and the base colour factor
    :data:`UNTEXTURED_BASE_COLOR`; indices are uint16 when V <= 65535, else uint32.
    """
    if not meshes:
        raise ValueError("nothing to export")
    writer = _GlbWriter()
    for mesh, name in zip(meshes, _unique_stems(meshes)):
        mesh.validate()
        writer.add_mesh(mesh, name)
    return writer.to_bytes()


def _rows(template: str, array: np.ndarray) -> str:
    """Lines of ``template % row`` for each row of the (N, K) array, each ending in a newline."""
    if len(array) == 0:
        return ""
    return ((template + "\n") * len(array)) % tuple(array.ravel().tolist())


def export_obj(mesh: ExportMesh, stem: str = "face") -> dict[str, bytes]:
    """Wavefront OBJ files keyed by file name.

    ``{stem}.obj`` has line i of ``v`` (``v x y z``, or ``v x y z r g b`` with sRGB floats in
    [0, 1] when the mesh has vertex colours and no texture), of ``vt`` (textured meshes) and
    of ``vn`` (smooth unit normals) for vertex i of the mesh, one smoothing group ``s 1``,
    and ``f a/a/a b/b/b c/c/c`` (``f a//a ...`` untextured) faces. When textured, also
    ``{stem}.mtl`` (white diffuse, no ambient, no specular, ``map_Kd``) and the texture as
    ``{stem}.png``. The first line is a comment stating the axes (:data:`AXES_COMMENT`).
    """
    if not _STEM.fullmatch(stem):
        raise ValueError(f"stem must be a plain file name, got {stem!r}")
    mesh.validate()
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64) + 1
    normals = mesh.vertex_normals().astype(np.float64)
    parts = [f"# {AXES_COMMENT}\n"]
    if mesh.textured:
        parts += [f"mtllib {stem}.mtl\n", f"o {stem}\n", _rows("v %.8f %.8f %.8f", vertices)]
        parts.append(_rows("vt %.8f %.8f", np.asarray(mesh.uvs, dtype=np.float64)))
    else:
        parts.append(f"o {stem}\n")
        if mesh.vertex_colors is not None:
            colours = np.asarray(mesh.vertex_colors) / 255.0
            parts.append(_rows("v %.8f %.8f %.8f %.8f %.8f %.8f", np.concatenate([vertices, colours], axis=1)))
        else:
            parts.append(_rows("v %.8f %.8f %.8f", vertices))
    parts.append(_rows("vn %.6f %.6f %.6f", normals))
    if mesh.textured:
        parts += [f"usemtl {stem}\n", "s 1\n", _rows("f %d/%d/%d %d/%d/%d %d/%d/%d", np.repeat(faces, 3, axis=1))]
    else:
        parts += ["s 1\n", _rows("f %d//%d %d//%d %d//%d", np.repeat(faces, 2, axis=1))]
    files = {f"{stem}.obj": "".join(parts).encode()}
    if mesh.textured:
        files[f"{stem}.mtl"] = (
            f"newmtl {stem}\n"
            "Ka 0.00000000 0.00000000 0.00000000\n"
            "Kd 1.00000000 1.00000000 1.00000000\n"
            "Ks 0.00000000 0.00000000 0.00000000\n"
            "Ns 40.00000000\n"
            "illum 1\n"
            f"map_Kd {stem}.png\n"
        ).encode()
        png = io.BytesIO()
        Image.fromarray(np.asarray(mesh.texture)).save(png, format="PNG", compress_level=DEFLATE_LEVEL)
        files[f"{stem}.png"] = png.getvalue()
    return files


def export_obj_zip(meshes: Sequence[ExportMesh]) -> bytes:
    """A zip with one OBJ (+ MTL + PNG) per mesh, stems from the mesh names made unique."""
    if not meshes:
        raise ValueError("nothing to export")
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=DEFLATE_LEVEL) as archive:
        for mesh, stem in zip(meshes, _unique_stems(meshes)):
            for name, data in export_obj(mesh, stem=stem).items():
                # PNG is compressed already
                archive.writestr(name, data, zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED)
    return archive_bytes.getvalue()


def export_ply(mesh: ExportMesh) -> bytes:
    """Binary little-endian PLY: per vertex float ``x y z``, float ``nx ny nz`` (smooth unit
    normals) and, when the mesh has colours (given, or sampled from its texture at the UVs),
    uchar ``red green blue`` (sRGB); the triangles as ``uchar int vertex_indices`` lists. The
    header's first comment states the axes (:data:`AXES_COMMENT`)."""
    mesh.validate()
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces)
    colors = mesh.vertex_colors
    if colors is None and mesh.textured:
        texture = np.asarray(mesh.texture)
        height, width = texture.shape[:2]
        uvs = np.asarray(mesh.uvs, dtype=np.float32)
        colors = sample_vertex_colors(texture, np.stack([uvs[:, 0] * width, (1.0 - uvs[:, 1]) * height], axis=1))
    vertex_fields = [(name, "<f4") for name in ("x", "y", "z", "nx", "ny", "nz")]
    if colors is not None:
        vertex_fields += [(name, "u1") for name in ("red", "green", "blue")]
    vertex_rows = np.empty(len(vertices), dtype=vertex_fields)
    for k, name in enumerate("xyz"):
        vertex_rows[name] = vertices[:, k]
    normals = mesh.vertex_normals()
    for k, name in enumerate(("nx", "ny", "nz")):
        vertex_rows[name] = normals[:, k]
    if colors is not None:
        for k, name in enumerate(("red", "green", "blue")):
            vertex_rows[name] = np.asarray(colors)[:, k]
    face_rows = np.empty(len(faces), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    face_rows["count"] = 3
    face_rows["indices"] = faces
    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment {AXES_COMMENT}",
        f"element vertex {len(vertices)}",
        *(f"property float {name}" for name in ("x", "y", "z", "nx", "ny", "nz")),
        *(f"property uchar {name}" for name in ("red", "green", "blue") if colors is not None),
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    return "\n".join(header).encode() + b"\n" + vertex_rows.tobytes() + face_rows.tobytes()
