"""Mesh files for reconstructed faces: GLB, OBJ (+ MTL + PNG) and PLY, written with trimesh.

Coordinates are metres in the glTF convention (+Y up, +Z toward the viewer; a face is about
0.15 m wide). Topology is kept exactly: every file has the mesh's vertices in their order and
its triangles, with no merging or clean-up (trimesh runs with ``process=False``).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import trimesh
from PIL import Image
from trimesh.visual.material import PBRMaterial, SimpleMaterial


@dataclass
class ExportMesh:
    """One face mesh to write.

    vertices (V, 3) float32 metres; faces (F, 3) int, counter-clockwise seen from outside;
    vertex_colors (V, 3) uint8 sRGB; uvs (V, 2) in [0, 1] with v up, and texture (T, T, 3)
    uint8, whose row 0 is the top (v = 1).
    """

    vertices: np.ndarray
    faces: np.ndarray
    name: str = "face"
    vertex_colors: np.ndarray | None = None
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.uvs is None) != (self.texture is None):
            raise ValueError("uvs and texture go together")

    @property
    def textured(self) -> bool:
        return self.texture is not None


def _to_trimesh(mesh: ExportMesh, *, pbr: bool) -> trimesh.Trimesh:
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if mesh.textured:
        image = Image.fromarray(np.asarray(mesh.texture, dtype=np.uint8))
        material = (
            PBRMaterial(name=f"{mesh.name}_material", baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)
            if pbr
            else SimpleMaterial(name=f"{mesh.name}_material", image=image)
        )
        visual = trimesh.visual.TextureVisuals(uv=np.asarray(mesh.uvs, dtype=np.float64), material=material)
    elif mesh.vertex_colors is not None:
        colors = np.concatenate(
            [np.asarray(mesh.vertex_colors, dtype=np.uint8), np.full((len(vertices), 1), 255, np.uint8)], axis=1
        )
        visual = trimesh.visual.ColorVisuals(vertex_colors=colors)
    else:
        visual = None
    return trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False, validate=False)


def export_glb(meshes: Sequence[ExportMesh]) -> bytes:
    """One binary glTF scene with a node per mesh (for example every face of a photo)."""
    if not meshes:
        raise ValueError("nothing to export")
    scene = trimesh.Scene()
    for mesh in meshes:
        scene.add_geometry(_to_trimesh(mesh, pbr=True), geom_name=mesh.name, node_name=mesh.name)
    return scene.export(file_type="glb", include_normals=True)


def export_obj(mesh: ExportMesh, stem: str = "face") -> dict[str, bytes]:
    """``{stem}.obj``, and when textured ``{stem}.mtl`` + ``{stem}.png``; untextured vertex
    colours go on the ``v`` lines (``v x y z r g b``)."""
    tm = _to_trimesh(mesh, pbr=False)
    if not mesh.textured:
        text = trimesh.exchange.obj.export_obj(tm, include_color=mesh.vertex_colors is not None,
                                               include_normals=True, include_texture=False, header=None)
        return {f"{stem}.obj": text.encode()}
    text, assets = trimesh.exchange.obj.export_obj(
        tm, include_normals=True, include_texture=True, return_texture=True, mtl_name=f"{stem}.mtl", header=None
    )
    files = {f"{stem}.obj": text.encode()}
    for name, data in assets.items():
        if name.endswith(".mtl"):
            files[f"{stem}.mtl"] = data.replace(name.encode(), f"{stem}.mtl".encode())
        else:
            image_name = name
            files[f"{stem}.png"] = data
    if f"{stem}.mtl" in files:
        files[f"{stem}.mtl"] = files[f"{stem}.mtl"].replace(image_name.encode(), f"{stem}.png".encode())
    return files


def export_obj_zip(meshes: Sequence[ExportMesh]) -> bytes:
    """A zip holding one OBJ (+ MTL + PNG) per mesh, named after the meshes (made unique)."""
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for mesh in meshes:
            stem, n = mesh.name, 1
            while stem in used:
                n += 1
                stem = f"{mesh.name}_{n}"
            used.add(stem)
            for name, data in export_obj(mesh, stem=stem).items():
                archive.writestr(name, data)
    return buffer.getvalue()


def export_ply(mesh: ExportMesh) -> bytes:
    """Binary little-endian PLY with per-vertex colours when the mesh has them."""
    tm = _to_trimesh(mesh, pbr=False)
    if mesh.textured:
        tm.visual = trimesh.visual.ColorVisuals()  # PLY carries no texture: geometry only
    return trimesh.exchange.ply.export_ply(tm, encoding="binary", vertex_normal=False)
