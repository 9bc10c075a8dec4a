"""Reconstructed faces -> response payloads: mesh files (GLB / OBJ / PLY / zip) or JSON."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.conventions import MeshSpace
from model.mesh.export import DEFLATE_LEVEL, ExportMesh, export_glb, export_obj, export_obj_zip, export_ply
from model.mesh.texture_bake import (
    UVRasterMap,
    bake_uv_texture,
    bake_vertex_texture,
    merge_uv_textures,
    merge_vertex_colors,
    sample_vertex_colors,
)
from model.mesh.visibility import FaceVisibility, face_visibility, merge_weights
from model.runtime.image_io import photo_reduction, photo_size
from model.runtime.pipeline import ImageReconstruction, PersonPhoto, ReconstructedFace
from model.topology import FaceTopology
from service.schemas import (
    MEDIA_TYPES,
    FaceJSON,
    OutputFormat,
    PersonJSON,
    PersonPhotoJSON,
    ReconstructionJSON,
    TextureMode,
)

SIDE_BY_SIDE_GAP = 0.2  # metres between faces' centres when several are shown frontal
PHOTO_TEXTURES = (TextureMode.vertex, TextureMode.uv)  # coloured from what the photo saw


@dataclass(frozen=True)
class Payload:
    content: bytes
    media_type: str
    filename: str


def face_vertices(face: ReconstructedFace, space: MeshSpace, image_size: tuple[int, int]) -> np.ndarray:
    """(V, 3) float32 metres in ``space``."""
    return face.result.vertices(space, image_size)


def build_meshes(rec: ImageReconstruction, topology: FaceTopology, space: MeshSpace, texture: TextureMode,
                 uv_map: UVRasterMap, stem: str = "face", colourings: Sequence[Colouring | None] | None = None
                 ) -> list[ExportMesh]:
    """One ExportMesh per face. In the frontal spaces (canonical, neutral) several faces are laid
    out left to right in the photo's order, SIDE_BY_SIDE_GAP apart, instead of on top of each other.
    Colours (vertex or UV) come from what the photo saw of each face (:func:`face_colouring`;
    ``albedo`` bakes the model's per-vertex albedo into the UV layout instead), or are the
    faces' ``colourings`` when given (e.g. a transferred face coloured as its own reconstruction)."""
    order = sorted(range(len(rec.faces)), key=lambda i: rec.faces[i].box[0])
    meshes = []
    for i, face in enumerate(rec.faces):
        vertices = face_vertices(face, space, rec.size)
        if space is not MeshSpace.image and len(rec.faces) > 1:
            slot = order.index(i) - (len(rec.faces) - 1) / 2.0
            vertices = vertices + np.array([slot * SIDE_BY_SIDE_GAP, 0.0, 0.0], np.float32)
        mesh = ExportMesh(vertices=vertices, faces=topology.faces,
                          name=stem if len(rec.faces) == 1 else f"{stem}_{i}")
        if colourings is None:
            seen = seen_by_photo(rec.image, face, topology) if texture in PHOTO_TEXTURES else None
            colouring = face_colouring(rec.image, face, topology, texture, uv_map, seen)
            if seen is not None and space is MeshSpace.image:
                mesh.normals = seen.normals  # the posed surface's, judged in the photo's frame: this mesh's
        else:
            colouring = colourings[i]
        if colouring is not None:
            colouring.apply(mesh, topology)
        meshes.append(mesh)
    return meshes


@dataclass(frozen=True)
class Colouring:
    """The colours of one face, for every mesh of it: per-vertex colours or a UV texture."""

    vertex_colors: np.ndarray | None = None  # (V, 3) uint8
    texture: np.ndarray | None = None  # (T, T, 3) uint8, in the topology's UV layout

    def apply(self, mesh: ExportMesh, topology: FaceTopology) -> None:
        mesh.vertex_colors = self.vertex_colors
        if self.texture is not None:
            mesh.uvs, mesh.texture = topology.uvs, self.texture


def seen_by_photo(image: np.ndarray, face: ReconstructedFace, topology: FaceTopology) -> FaceVisibility:
    """What the photo ``image`` (H, W, 3) showed of ``face``, vertex by vertex (:mod:`model.mesh.visibility`)."""
    return face_visibility(face.result.image_points, topology.faces, topology.mirror, topology.regions,
                           photo_size(image))


def _read_at(image: np.ndarray, seen: FaceVisibility) -> np.ndarray:
    """(V, 2) where each vertex's colour is read in the array ``image``: ``seen.sample_points`` in
    photo pixels, divided by the reduction of a photo decoded reduced."""
    reduction = photo_reduction(image)
    return seen.sample_points if reduction == 1 else seen.sample_points / np.float32(reduction)


def face_colouring(image: np.ndarray, face: ReconstructedFace, topology: FaceTopology, texture: TextureMode,
                   uv_map: UVRasterMap, seen: FaceVisibility | None = None) -> Colouring | None:
    """The colours of ``face`` from the photo ``image`` (H, W, 3) it was reconstructed from, only where the
    photo saw it (hidden or grazing parts take their mirror side's colour; ``seen``: :func:`seen_by_photo`,
    computed when not given); ``albedo``: the model's albedo, nothing of the photo's lighting. None for
    ``texture=none``."""
    if texture is TextureMode.none:
        return None
    if texture is TextureMode.albedo:
        return Colouring(texture=bake_vertex_texture(face.result.albedo, topology.faces, uv_map))
    if seen is None:
        seen = seen_by_photo(image, face, topology)
    if texture is TextureMode.vertex:
        return Colouring(vertex_colors=sample_vertex_colors(image, _read_at(image, seen), seen))
    return Colouring(texture=bake_uv_texture(image, _read_at(image, seen), topology.faces, uv_map, seen))


def merged_colouring(faces: Sequence[tuple[np.ndarray, ReconstructedFace]], weights: Sequence[float],
                     topology: FaceTopology, texture: TextureMode, uv_map: UVRasterMap) -> Colouring | None:
    """One colouring of a face seen in several photos, ``faces`` (each photo (H, W, 3) and its face): per
    vertex (or texel), each photo's colour weighted by how well and how squarely it saw that part
    (:func:`model.mesh.visibility.merge_weights`); ``albedo``: the photos' albedos averaged with
    ``weights`` (their shares of the identity). None for ``texture=none``."""
    if texture is TextureMode.none:
        return None
    if len(faces) == 1:
        return face_colouring(*faces[0], topology, texture, uv_map)
    if texture is TextureMode.albedo:
        albedo = np.average(np.stack([face.result.albedo for _, face in faces]), axis=0, weights=weights)
        return Colouring(texture=bake_vertex_texture(albedo, topology.faces, uv_map))
    colours, merge = [], []
    for image, face in faces:
        seen = seen_by_photo(image, face, topology)
        merge.append(merge_weights(seen, face.result.image_points, topology.faces))
        colours.append(sample_vertex_colors(image, _read_at(image, seen), seen) if texture is TextureMode.vertex
                       else bake_uv_texture(image, _read_at(image, seen), topology.faces, uv_map, seen))
    if texture is TextureMode.vertex:
        return Colouring(vertex_colors=merge_vertex_colors(colours, merge))
    return Colouring(texture=merge_uv_textures(colours, merge, topology.faces, uv_map))


def person_meshes(used: Sequence[tuple[str, ImageReconstruction, float]], topology: FaceTopology, space: MeshSpace,
                  texture: TextureMode, uv_map: UVRasterMap) -> list[ExportMesh]:
    """The meshes of one person from the photos ``used`` (a name, the photo's reconstruction: its one face on
    the fused identity, and its share of the identity), all coloured alike (:func:`merged_colouring`): in
    the neutral space the one fused face, named ``person`` (it is the same in every photo), else one mesh
    per photo in ``space``, named as given."""
    colouring = merged_colouring([(rec.image, rec.faces[0]) for _, rec, _ in used], [w for _, _, w in used],
                                 topology, texture, uv_map)
    named = [("person", used[0][1])] if space is MeshSpace.neutral else [(name, rec) for name, rec, _ in used]
    meshes = []
    for name, rec in named:
        mesh = ExportMesh(vertices=face_vertices(rec.faces[0], space, rec.size), faces=topology.faces, name=name)
        if colouring is not None:
            colouring.apply(mesh, topology)
        meshes.append(mesh)
    return meshes


def person_json(photos: Sequence[tuple[str | None, PersonPhoto | str]], space: MeshSpace, topology: FaceTopology,
                include_mesh: bool, *, model_version: str, landmark_calibration: str, results: bool = True
                ) -> PersonJSON:
    """The JSON answer of a person reconstruction: ``photos`` are each photo's file name and outcome (or
    why it could not be read at all); ``results``: each used photo's face (in ``space``) too."""
    items = []
    for index, (filename, outcome) in enumerate(photos):
        if isinstance(outcome, str):
            items.append(PersonPhotoJSON(index=index, filename=filename, used=False, weight=0.0,
                                         reason=f"not a usable image: {outcome}"))
            continue
        result = None
        if results and outcome.accepted:
            result = reconstruction_json(outcome.reconstruction, space, topology, include_mesh,
                                         model_version=model_version, landmark_calibration=landmark_calibration)
        items.append(PersonPhotoJSON(index=index, filename=filename, used=outcome.accepted,
                                     weight=round(outcome.weight, 4), reason=rejection_reason(outcome), result=result))
    return PersonJSON(photos_sent=len(items), photos_used=sum(item.used for item in items),
                      rejected=[item.index for item in items if not item.used], space=space,
                      model_version=model_version, landmark_calibration=landmark_calibration, photos=items)


def rejection_reason(photo: PersonPhoto) -> str | None:
    """Why a photo of a person reconstruction was not used, in words (None when it was)."""
    if photo.rejection == "no_face":
        return "no face was detected in the photo"
    if photo.rejection == "different_person":
        return (f"another person: its identity code is {photo.distance:.2f} from the other photos' (their "
                f"weighted mean), beyond the same-person limit of {photo.threshold:g}")
    return None


def zip_files(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=DEFLATE_LEVEL) as archive:
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
            lighting=_rounded(face.result.lighting, 4),
            expression_code=_rounded(face.result.codes.expression, 5),
            vertices=_rounded(face_vertices(face, space, rec.size), 5) if include_mesh else None,
            triangles=topology.faces.tolist() if include_mesh else None,
            albedo=_rounded(face.result.albedo, 3) if include_mesh else None,
        ))
    width, height = rec.size
    return ReconstructionJSON(width=width, height=height, space=space, face_count=len(faces),
                              faces_dropped=rec.faces_dropped, model_version=model_version,
                              landmark_calibration=landmark_calibration, faces=faces)
