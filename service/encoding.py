"""Reconstructed faces -> response payloads: mesh files (GLB / OBJ / PLY / zip) or JSON."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.conventions import MeshSpace
from model.mesh.export import ExportMesh, export_glb, export_obj, export_obj_zip, export_ply
from model.mesh.texture_bake import UVRasterMap, bake_uv_texture, sample_vertex_colors
from model.mesh.visibility import face_visibility
from model.runtime.pipeline import ImageReconstruction, ReconstructedFace
from model.topology import FaceTopology
from service.schemas import MEDIA_TYPES, FaceJSON, OutputFormat, ReconstructionJSON, TextureMode

SIDE_BY_SIDE_GAP = 0.2  # metres between faces' centres when several are shown frontal


@dataclass(frozen=True)
class Payload:
    content: bytes
    media_type: str
    filename: str


def face_vertices(face: ReconstructedFace, space: MeshSpace, image_size: tuple[int, int]) -> np.ndarray:
    """(V, 3) float32 metres in ``space``."""
    return face.result.vertices(space, image_size)


def build_meshes(rec: ImageReconstruction, topology: FaceTopology, space: MeshSpace, texture: TextureMode,
                 uv_map: UVRasterMap, stem: str = "face") -> list[ExportMesh]:
    """One ExportMesh per face. In the frontal spaces (canonical, neutral) several faces are laid
    out left to right in the photo's order, SIDE_BY_SIDE_GAP apart, instead of on top of each other.
    Colours (vertex or UV) come from what the photo saw of each face (:mod:`model.mesh.visibility`)."""
    order = sorted(range(len(rec.faces)), key=lambda i: rec.faces[i].box[0])
    meshes = []
    for i, face in enumerate(rec.faces):
        vertices = face_vertices(face, space, rec.size)
        if space is not MeshSpace.image and len(rec.faces) > 1:
            slot = order.index(i) - (len(rec.faces) - 1) / 2.0
            vertices = vertices + np.array([slot * SIDE_BY_SIDE_GAP, 0.0, 0.0], np.float32)
        mesh = ExportMesh(vertices=vertices, faces=topology.faces,
                          name=stem if len(rec.faces) == 1 else f"{stem}_{i}")
        if texture is not TextureMode.none:
            # colour only what the photo saw: hidden or grazing parts take their mirror side's colour
            seen = face_visibility(face.result.image_points, topology.faces, topology.mirror, topology.regions,
                                   rec.size)
            if texture is TextureMode.vertex:
                mesh.vertex_colors = sample_vertex_colors(rec.image, seen.sample_points, seen)
            else:
                mesh.uvs = topology.uvs
                mesh.texture = bake_uv_texture(rec.image, seen.sample_points, topology.faces, uv_map, seen)
        meshes.append(mesh)
    return meshes


def zip_files(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data,
                             zipfile.ZIP_STORED if name.endswith((".png", ".glb")) else zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def mesh_files(meshes: list[ExportMesh], fmt: OutputFormat, stem: str = "face") -> dict[str, bytes]:
    """The files of ``meshes`` in ``fmt`` keyed by name (one GLB holds every face)."""
    if fmt is OutputFormat.glb:
        return {f"{stem}.glb": export_glb(meshes)}
    if fmt is OutputFormat.ply:
        return {f"{mesh.name}.ply": export_ply(mesh) for mesh in meshes}
    if fmt is OutputFormat.obj:
        if len(meshes) == 1:
            return export_obj(meshes[0], stem=meshes[0].name)
        with zipfile.ZipFile(io.BytesIO(export_obj_zip(meshes))) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    raise ValueError(f"{fmt.value} is not a mesh format")


def mesh_payload(meshes: list[ExportMesh], fmt: OutputFormat, stem: str = "face") -> Payload:
    """A single file when the format and faces fit one (GLB always), else a zip of the files."""
    files = mesh_files(meshes, fmt, stem)
    if len(files) == 1:
        ((name, data),) = files.items()
        return Payload(data, MEDIA_TYPES[fmt.value], name)
    return Payload(zip_files(files), MEDIA_TYPES["zip"], f"{stem}.zip")


def _rounded(array: npt.ArrayLike, decimals: int) -> list:
    return np.round(np.asarray(array, dtype=np.float64), decimals).tolist()


def reconstruction_json(rec: ImageReconstruction, space: MeshSpace, topology: FaceTopology, include_mesh: bool, *,
                        model_version: str, landmark_calibration: str) -> ReconstructionJSON:
    """The JSON answer, stamped with the model that made it (``FaceReconstructor.model_version`` and its
    metadata's ``landmark_calibration``)."""
    faces = []
    for face in rec.faces:
        yaw, pitch, roll = (float(v) for v in face.result.euler_degrees)
        faces.append(FaceJSON(
            box=_rounded(face.box, 2),
            score=None if face.score is None else round(float(face.score), 4),
            yaw=round(yaw, 2), pitch=round(pitch, 2), roll=round(roll, 2),
            landmarks_2d=_rounded(face.result.landmarks_2d, 2),
            landmarks_3d=_rounded(face.result.landmarks_3d, 2),
            metres_per_pixel=float(f"{face.result.metres_per_pixel:.6g}"),
            vertices=_rounded(face_vertices(face, space, rec.size), 5) if include_mesh else None,
            triangles=topology.faces.tolist() if include_mesh else None,
        ))
    width, height = rec.size
    return ReconstructionJSON(width=width, height=height, space=space, face_count=len(faces),
                              faces_dropped=rec.faces_dropped, model_version=model_version,
                              landmark_calibration=landmark_calibration, faces=faces)
