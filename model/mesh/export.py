"""Mesh files for reconstructed faces: GLB, OBJ (+ MTL + PNG, or a zip of them) and PLY.

Coordinates are metres in the glTF convention (+Y up, +Z toward the viewer; a face is about
0.15 m wide). Topology is kept exactly in every format: the vertices in their order and the
triangles as given, with no merging, no removal of unreferenced vertices or degenerate
triangles.

* GLB is written here directly (JSON + one binary buffer), not through trimesh, to control
  what trimesh's exporter does not: a non-metallic material (glTF's default material is fully
  metallic), unit normals even for vertices no triangle uses, vertex colours in the linear
  colour space glTF requires, 16-bit indices when they fit, and the texture as a JPEG
  (quality :data:`GLB_JPEG_QUALITY`; a photo texture is ~10x smaller than as PNG).
* OBJ and PLY go through trimesh's exporters with ``process=False``; both write vertices and
  faces verbatim.

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
import trimesh
from PIL import Image
from trimesh.visual.material import SimpleMaterial

from model.mesh.texture_bake import sample_vertex_colors

GLB_JPEG_QUALITY = 90
_ROUGHNESS = 0.8  # skin: non-metallic, mostly diffuse

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
    texture (T, T, 3) uint8 whose row 0 is the top of the image (v = 1).

    Fields may be set after construction; every exporter calls :meth:`validate`.
    """

    vertices: np.ndarray
    faces: np.ndarray
    name: str = "face"
    vertex_colors: np.ndarray | None = None
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def textured(self) -> bool:
        return self.texture is not None

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


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, (V, 3) float32; +Z where undefined (a vertex no
    triangle of non-zero area uses)."""
    corners = vertices.astype(np.float64)[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    sums = np.stack(
        [np.bincount(faces.ravel(), np.repeat(face_normals[:, k], 3), len(vertices)) for k in range(3)],
        axis=1,
    )
    lengths = np.linalg.norm(sums, axis=1, keepdims=True)
    normals = np.where(lengths > 0, sums / np.where(lengths > 0, lengths, 1.0), [0.0, 0.0, 1.0])
    return normals.astype(np.float32)


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
        self.binary = bytearray()

    def _view(self, data: bytes, target: int | None) -> int:
        self.binary.extend(b"\0" * (-len(self.binary) % 4))
        view = {"buffer": 0, "byteOffset": len(self.binary), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.binary.extend(data)
        self.gltf["bufferViews"].append(view)
        return len(self.gltf["bufferViews"]) - 1

    def accessor(self, array: np.ndarray, component_type: int, kind: str, target: int, bounds: bool = False) -> int:
        """array (N,) or (N, C) already in the component type's dtype -> accessor index."""
        accessor = {
            "bufferView": self._view(np.ascontiguousarray(array).tobytes(), target),
            "componentType": component_type,
            "count": len(array),
            "type": kind,
        }
        if bounds:
            accessor["min"] = array.min(axis=0).tolist()
            accessor["max"] = array.max(axis=0).tolist()
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
            "NORMAL": self.accessor(_vertex_normals(vertices, faces), _FLOAT, "VEC3", _ARRAY_BUFFER),
        }
        pbr: dict = {"metallicFactor": 0.0, "roughnessFactor": _ROUGHNESS}
        if mesh.textured:
            uvs = np.asarray(mesh.uvs, dtype=np.float32)
            # glTF's texture origin is the top-left corner: v runs down
            gltf_uvs = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1)
            attributes["TEXCOORD_0"] = self.accessor(gltf_uvs, _FLOAT, "VEC2", _ARRAY_BUFFER)
            pbr["baseColorTexture"] = {"index": self.jpeg_texture(np.asarray(mesh.texture))}
        elif mesh.vertex_colors is not None:
            linear = _SRGB_TO_LINEAR[np.asarray(mesh.vertex_colors)]
            attributes["COLOR_0"] = self.accessor(linear, _FLOAT, "VEC3", _ARRAY_BUFFER)
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
        self.binary.extend(b"\0" * (-len(self.binary) % 4))
        self.gltf["buffers"] = [{"byteLength": len(self.binary)}]
        text = json.dumps(self.gltf, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + len(self.binary)
        return b"".join(
            [
                struct.pack("<III", _GLB_MAGIC, 2, total),
                struct.pack("<II", len(text), _GLB_JSON),
                text,
                struct.pack("<II", len(self.binary), _GLB_BIN),
                bytes(self.binary),
            ]
        )


def export_glb(meshes: Sequence[ExportMesh]) -> bytes:
    """One binary glTF 2.0 scene with a root node per mesh (e.g. every face of one photo).

    Nodes, meshes and materials are named after the meshes (made unique like the OBJ zip
    stems). Each primitive has POSITION, NORMAL and either TEXCOORD_0 + a JPEG base-colour
    texture or linear float COLOR_0; indices are uint16 when V <= 65535, else uint32.
    """
    if not meshes:
        raise ValueError("nothing to export")
    writer = _GlbWriter()
    for mesh, name in zip(meshes, _unique_stems(meshes)):
        mesh.validate()
        writer.add_mesh(mesh, name)
    return writer.to_bytes()


_TrimeshVisual = trimesh.visual.ColorVisuals | trimesh.visual.TextureVisuals


def _to_trimesh(mesh: ExportMesh, visual: _TrimeshVisual | None) -> trimesh.Trimesh:
    return trimesh.Trimesh(
        vertices=np.asarray(mesh.vertices, dtype=np.float32),
        faces=np.asarray(mesh.faces, dtype=np.int64),
        visual=visual,
        process=False,
        validate=False,
    )


def export_obj(mesh: ExportMesh, stem: str = "face") -> dict[str, bytes]:
    """Wavefront OBJ files keyed by file name.

    ``{stem}.obj`` alone when untextured, with vertex colours as ``v x y z r g b`` (floats in
    [0, 1]) when the mesh has them; when textured, ``{stem}.obj`` with ``vt`` per vertex and
    ``f a/a b/b c/c`` faces, ``{stem}.mtl`` (white diffuse, no specular, ``map_Kd``) and the
    texture as ``{stem}.png``. No normals are written.
    """
    if not _STEM.fullmatch(stem):
        raise ValueError(f"stem must be a plain file name, got {stem!r}")
    mesh.validate()
    if not mesh.textured:
        visual: _TrimeshVisual | None = None
        if mesh.vertex_colors is not None:
            visual = trimesh.visual.ColorVisuals(vertex_colors=np.asarray(mesh.vertex_colors))
        text = trimesh.exchange.obj.export_obj(
            _to_trimesh(mesh, visual), include_normals=False, include_texture=False, header=None
        )
        return {f"{stem}.obj": text.encode()}
    # trimesh names the MTL and the image after the material: {stem}.mtl, {stem}.png
    material = SimpleMaterial(
        name=stem,
        image=Image.fromarray(np.asarray(mesh.texture)),
        diffuse=[255, 255, 255, 255],
        ambient=[255, 255, 255, 255],
        specular=[0, 0, 0, 255],
        glossiness=1.0,
    )
    visual = trimesh.visual.TextureVisuals(uv=np.asarray(mesh.uvs, dtype=np.float64), material=material)
    text, assets = trimesh.exchange.obj.export_obj(
        _to_trimesh(mesh, visual),
        include_normals=False,
        include_texture=True,
        return_texture=True,
        mtl_name=f"{stem}.mtl",
        header=None,
    )
    files = {f"{stem}.obj": text.encode(), **assets}
    expected = {f"{stem}.obj", f"{stem}.mtl", f"{stem}.png"}
    if set(files) != expected:
        raise RuntimeError(f"trimesh wrote {sorted(files)}, expected {sorted(expected)}")
    return files


def export_obj_zip(meshes: Sequence[ExportMesh]) -> bytes:
    """A zip with one OBJ (+ MTL + PNG) per mesh, stems from the mesh names made unique."""
    if not meshes:
        raise ValueError("nothing to export")
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for mesh, stem in zip(meshes, _unique_stems(meshes)):
            for name, data in export_obj(mesh, stem=stem).items():
                # PNG is compressed already
                archive.writestr(name, data, zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED)
    return archive_bytes.getvalue()


def export_ply(mesh: ExportMesh) -> bytes:
    """Binary little-endian PLY: float32 x y z, uchar RGBA per vertex when the mesh has
    colours (given, or sampled from its texture at the UVs), and the triangles."""
    mesh.validate()
    colors = mesh.vertex_colors
    if colors is None and mesh.textured:
        texture = np.asarray(mesh.texture)
        height, width = texture.shape[:2]
        uvs = np.asarray(mesh.uvs, dtype=np.float32)
        colors = sample_vertex_colors(texture, np.stack([uvs[:, 0] * width, (1.0 - uvs[:, 1]) * height], axis=1))
    visual = None if colors is None else trimesh.visual.ColorVisuals(vertex_colors=np.asarray(colors))
    return trimesh.exchange.ply.export_ply(
        _to_trimesh(mesh, visual), encoding="binary", vertex_normal=False, include_attributes=False
    )
