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

from tqdm import tqdm

from model.conventions import Box, FaceSelection, MeshSpace
from model.mesh.texture_bake import UVRasterMap
from model.runtime.image_io import ImageDecodeError
from model.runtime.pipeline import FacePipeline, InvalidBox, NoFaceFound
from service.encoding import build_meshes, mesh_files, reconstruction_json
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
            image = pipeline.decode(source.read_bytes())
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


def _reason(err: Exception) -> str:
    kind = {NoFaceFound: "no face", InvalidBox: "box outside the image"}.get(type(err))
    if kind is None:
        kind = "unreadable file" if isinstance(err, OSError) else "not a usable image"
    return f"{kind}: {err}"
