"""``facerecon reconstruct``: photos and folders in, one mesh per face plus a JSON sidecar out,
through the same detection and reconstruction as the service (in-process, ONNX Runtime)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.conventions import Box, FaceSelection, MeshSpace
from model.mesh.texture_bake import UVRasterMap
from model.runtime.image_io import ImageDecodeError
from model.runtime.pipeline import (
    FacePipeline,
    ImageReconstruction,
    InvalidBox,
    NoFaceFound,
    PersonPhoto,
    PoseSource,
)
from service.encoding import (
    PHOTO_TEXTURES,
    build_meshes,
    face_colouring,
    mesh_files,
    person_json,
    person_meshes,
    reconstruction_json,
)
from service.schemas import OutputFormat, TextureMode

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass(frozen=True)
class MeshOptions:
    format: OutputFormat = OutputFormat.glb
    texture: TextureMode = TextureMode.vertex
    space: MeshSpace = MeshSpace.image
    faces: FaceSelection = FaceSelection.largest
    box: Box | None = None


@dataclass
class BatchSummary:
    processed: int = 0
    faces: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0

    def report(self) -> str:
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        lines = [f"processed {self.processed} images ({rate:.1f} images/s), {self.faces} faces; "
                 f"skipped {len(self.skipped)}"]
        for reason, count in Counter(reason.split(":")[0] for _, reason in self.skipped).most_common():
            lines.append(f"  {count} x {reason}")
        return "\n".join(lines)


def collect_images(paths: Sequence[Path]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(source, output stem relative to the output folder) for every photo under ``paths``.

    Files are taken whatever their suffix; folders are searched recursively for JPEG, PNG and
    WebP files and keep their sub-folders in the output. Missing paths are reported as skipped.
    """
    jobs: list[tuple[Path, Path]] = []
    skipped: list[tuple[str, str]] = []
    taken: set[Path] = set()

    def add(source: Path, stem: Path) -> None:
        unique, n = stem, 2
        while unique in taken:
            unique, n = stem.with_name(f"{stem.name}_{n}"), n + 1
        taken.add(unique)
        jobs.append((source, unique))

    for path in paths:
        if path.is_dir():
            for source in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                add(source, source.relative_to(path).with_suffix(""))
        elif path.is_file():
            add(path, Path(path.stem))
        else:
            skipped.append((str(path), "not found"))
    return jobs, skipped


def reconstruct_files(pipeline: FacePipeline, jobs: Sequence[tuple[Path, Path]], out_dir: Path,
                      options: MeshOptions, uv_map: UVRasterMap, *, show_progress: bool = True) -> BatchSummary:
    """Reconstruct every job; a file that fails is skipped with its reason, the rest go on.

    Progress goes to stderr: a tqdm bar on a terminal, else (a log file, a pipe) one plain line per file."""
    summary = BatchSummary()
    reconstructor = pipeline.reconstructor
    topology = reconstructor.topology
    lines = show_progress and not sys.stderr.isatty()
    progress = tqdm(total=len(jobs), desc="reconstruct", unit="image", disable=not show_progress or lines)
    started = time.perf_counter()
    for number, (source, stem) in enumerate(jobs, 1):
        try:
            image = pipeline.decode(source.read_bytes(), options.box, photo_colours=options.texture in PHOTO_TEXTURES)
            rec = pipeline.reconstruct(image, options.faces, options.box)
        except (OSError, ImageDecodeError, NoFaceFound, InvalidBox) as err:
            summary.skipped.append((str(source), _reason(err)))
            outcome = "skipped"
        else:
            outcome = f"{len(rec.faces)} face{'s' if len(rec.faces) != 1 else ''}"
            target = out_dir / stem
            target.parent.mkdir(parents=True, exist_ok=True)
            names = []
            for mesh in build_meshes(rec, topology, options.space, options.texture, uv_map, stem=stem.name):
                for name, data in mesh_files([mesh], options.format, mesh.name).items():
                    (target.parent / name).write_bytes(data)
                    names.append(name)
            sidecar = reconstruction_json(rec, options.space, topology, include_mesh=False,
                                          model_version=reconstructor.model_version,
                                          landmark_calibration=reconstructor.metadata.landmark_calibration
                                          ).model_dump(mode="json")
            sidecar = {"source": str(source), "files": names, **sidecar}
            target.with_name(f"{stem.name}.json").write_text(json.dumps(sidecar, indent=1))
            summary.processed += 1
            summary.faces += len(rec.faces)
        status = f"faces {summary.faces}, skipped {len(summary.skipped)}"
        if lines:
            print(f"reconstruct {number}/{len(jobs)}: {source}: {outcome} ({status})", file=sys.stderr, flush=True)
        progress.set_postfix_str(status, refresh=False)
        progress.update(1)
    progress.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _sidecar(pipeline: FacePipeline, rec: ImageReconstruction, space: MeshSpace, **fields: object) -> dict:
    """A photo's JSON sidecar: ``fields`` first, then the JSON answer, stamped with the model."""
    answer = reconstruction_json(rec, space, pipeline.reconstructor.topology, include_mesh=False,
                                 model_version=pipeline.reconstructor.model_version,
                                 landmark_calibration=pipeline.reconstructor.metadata.landmark_calibration)
    return {**fields, **answer.model_dump(mode="json")}


def transfer_files(pipeline: FacePipeline, identity: np.ndarray, expression: np.ndarray | None,
                   expression_code: Sequence[float] | None, pose: PoseSource, target: Path, fmt: OutputFormat,
                   texture: TextureMode, space: MeshSpace, uv_map: UVRasterMap) -> list[str]:
    """``facerecon transfer``: the identity photo's face with the expression of the expression photo (or
    code), written as ``target``.FORMAT (and its texture files) and ``target``.json; the names written.
    Colours as the service's /v1/transfer: from the identity photo where it saw its own face."""
    code = None if expression_code is None else np.asarray(expression_code, dtype=np.float32)
    rec = pipeline.transfer(identity, expression, expression_code=code, pose_from=pose)
    topology = pipeline.reconstructor.topology
    colourings = None
    if texture in (TextureMode.vertex, TextureMode.uv):
        own = pipeline.reconstruct(identity, box=rec.faces[0].box)
        colourings = [face_colouring(own.image, own.faces[0], topology, texture, uv_map)]
    target.parent.mkdir(parents=True, exist_ok=True)
    meshes = build_meshes(rec, topology, space, texture, uv_map, stem=target.name, colourings=colourings)
    names = []
    for name, data in mesh_files(meshes, fmt, target.name).items():
        (target.parent / name).write_bytes(data)
        names.append(name)
    target.with_name(f"{target.name}.json").write_text(json.dumps(_sidecar(pipeline, rec, space, files=names),
                                                                  indent=1))
    return [*names, f"{target.name}.json"]


def reconstruct_person_files(pipeline: FacePipeline, jobs: Sequence[tuple[Path, Path]],
                             skipped: Sequence[tuple[str, str]], out_dir: Path, options: MeshOptions,
                             uv_map: UVRasterMap) -> str:
    """``facerecon reconstruct --same-person``: one identity from the photos ``jobs`` (source, output stem);
    writes ``person.json`` (every photo: used or why not, its weight, a used photo's face) and the meshes:
    ``person.FORMAT`` in the neutral space, else one per used photo (its output stem), all coloured from
    every used photo (:func:`service.encoding.person_meshes`). Returns the summary to print. NoFaceFound
    when no photo shows a face."""
    decoded: list[tuple[str, Path, np.ndarray]] = []
    unreadable: list[tuple[str | None, PersonPhoto | str]] = [(path, reason) for path, reason in skipped]
    for source, stem in jobs:
        try:
            decoded.append((str(source), stem, pipeline.decode(source.read_bytes())))
        except (OSError, ImageDecodeError) as err:
            unreadable.append((str(source), _reason(err)))
    person = pipeline.reconstruct_person([image for _, _, image in decoded])
    photos = [(name, outcome) for (name, _, _), outcome in zip(decoded, person.photos)] + unreadable
    topology = pipeline.reconstructor.topology
    summary = person_json(photos, options.space, topology, include_mesh=False,
                          model_version=pipeline.reconstructor.model_version,
                          landmark_calibration=pipeline.reconstructor.metadata.landmark_calibration)
    used = [(str(stem), photo.reconstruction, photo.weight) for (_, stem, _), photo in zip(decoded, person.photos)
            if photo.accepted]
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for mesh in person_meshes(used, topology, options.space, options.texture, uv_map):
        (out_dir / mesh.name).parent.mkdir(parents=True, exist_ok=True)
        for name, data in mesh_files([mesh], options.format, Path(mesh.name).name).items():
            (out_dir / mesh.name).with_name(name).write_bytes(data)
            names.append(str((out_dir / mesh.name).with_name(name).relative_to(out_dir)))
    (out_dir / "person.json").write_text(json.dumps({"files": names, **summary.model_dump(mode="json")}, indent=1))
    lines = [f"used {summary.photos_used} of {summary.photos_sent} photos; wrote {len(names)} file(s) and person.json "
             f"to {out_dir}"]
    lines += [f"  left out {item.filename}: {item.reason}" for item in summary.photos if not item.used]
    return "\n".join(lines)


def _reason(err: Exception) -> str:
    kind = {NoFaceFound: "no face", InvalidBox: "box outside the image"}.get(type(err))
    if kind is None:
        kind = "unreadable file" if isinstance(err, OSError) else "not a usable image"
    return f"{kind}: {err}"
