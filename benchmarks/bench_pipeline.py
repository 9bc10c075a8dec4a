"""Prints facerecon's time per photo stage by stage, in process, and, when the peer harness of
../shared/peers is set up, 3DDFA_V2's on the same images in the same run, with the ratios.

Stages (ms per image; each image's median over the runs, then the mean over the images, the
peer harness's statistic; the images go round robin so that load from other work spreads over
all of them):

- decode: the JPEG bytes to an RGB array (the peer: cv2.imread, which reads the file too);
- detect: the face detector, the largest face kept;
- network: the crop, ONNX Runtime and the outputs mapped to photo pixels (the dense 7,489-vertex
  mesh, 68 landmarks, pose); the peer's net (crop, resize, ONNX Runtime) plus its dense mesh
  (38,365 vertices through its BFM decoder);
- total: photo to dense mesh; box given: the same with the detector's box given (no detection), as
  a request that reads no colours from the photo runs it (the mesh, landmarks and pose: a JSON
  answer, or a mesh with ``texture=albedo`` or ``none``): the JPEG decoded at the reduction the
  face's crop applies anyway (:meth:`model.runtime.pipeline.FacePipeline.decode`); and with the
  whole photo decoded, as for a mesh coloured from the photo;
- and what the service adds to a GLB answer: vertex colours from what the photo saw
  (``texture=vertex``, the default) and the GLB bytes, timed in a pass of their own after the
  comparison, so that the comparison's loop is the peer harness's (each image through the
  pipeline, then again with its box given).

Usage: python benchmarks/bench_pipeline.py [--images DIR] [--runs 40] [--warmup 10] [--threads 2]
       [--detector-threads 1] [--[no-]spinning] [--peers DIR] [--repeat 1]
The peer harness is looked for in --peers (default: $PEERS, else /tmp/peers); set it up as
../shared/peers/README.md says. Without it only facerecon's figures are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from model.conventions import FaceSelection, MeshSpace
from model.mesh.export import export_glb
from model.mesh.texture_bake import UVRasterMap
from model.runtime.detector import FaceDetector
from model.runtime.pipeline import FacePipeline, ImageReconstruction, ReconstructedFace
from model.runtime.reconstructor import FaceReconstructor
from service.encoding import build_meshes
from service.schemas import TextureMode

REPO = Path(__file__).resolve().parents[1]
AFLW_DEV = REPO.parent / "shared" / "data" / "eval" / "aflw2000-3d-dev"
PEER_SCRIPT = REPO.parent / "shared" / "peers" / "run_3ddfa_v2.py"
STAGES = ("decode", "detect", "network", "total", "given_total", "given_whole", "colours", "glb")


def time_facerecon(paths: list[Path], runs: int, warmup: int, threads: int, detector_threads: int,
                   spinning: bool) -> dict[str, float]:
    """Per-stage ms per image (mean over images of the per-image median over runs)."""
    pipeline = FacePipeline(FaceReconstructor(threads=threads, spinning=spinning),
                            FaceDetector(threads=detector_threads, spinning=spinning))
    reconstructor, topology = pipeline.reconstructor, pipeline.reconstructor.topology
    uv_map = UVRasterMap.build(topology.uvs, topology.faces, 256)  # unused by texture=vertex
    datas = [path.read_bytes() for path in paths]
    given = [pipeline.locate(pipeline.decode(data), FaceSelection.largest, None)[0][0] for data in datas]
    samples: dict[str, list[list[float]]] = {stage: [[] for _ in paths] for stage in STAGES}
    clock = time.perf_counter
    # The loop of the peer harness: each image through the pipeline, then again with its box given
    # (and once more with its box given and the whole photo decoded).
    reconstructions = []
    for run in range(warmup + runs):
        for i, data in enumerate(datas):
            t0 = clock()
            image = pipeline.decode(data)
            t1 = clock()
            boxes = pipeline.locate(image, FaceSelection.largest, None)[0]
            t2 = clock()
            crops, transforms = reconstructor.crop(image, boxes)
            results = reconstructor.results(boxes, transforms, reconstructor.run(crops))
            t3 = clock()
            image = pipeline.decode(data, given[i], photo_colours=False)
            crops, transforms = reconstructor.crop(image, [given[i]])
            reconstructor.results([given[i]], transforms, reconstructor.run(crops))
            t4 = clock()
            image = pipeline.decode(data, given[i])
            crops, transforms = reconstructor.crop(image, [given[i]])
            reconstructor.results([given[i]], transforms, reconstructor.run(crops))
            t5 = clock()
            if run >= warmup:
                for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0, t4 - t3, t5 - t4)):
                    samples[stage][i].append(seconds * 1e3)
            if run == 0:
                reconstructions.append(ImageReconstruction(
                    image, [ReconstructedFace(b, None, r) for b, r in zip(boxes, results)]))
    # What the service adds, in a pass of its own (the peer has no such stages).
    for run in range(warmup + runs):
        for i, reconstruction in enumerate(reconstructions):
            t0 = clock()
            meshes = build_meshes(reconstruction, topology, MeshSpace.image, TextureMode.vertex, uv_map)
            t1 = clock()
            export_glb(meshes)
            t2 = clock()
            if run >= warmup:
                samples["colours"][i].append((t1 - t0) * 1e3)
                samples["glb"][i].append((t2 - t1) * 1e3)
    return {stage: statistics.fmean(statistics.median(s) for s in per_image) for stage, per_image in samples.items()}


def time_peer(peers: Path, images: Path, runs: int, warmup: int, threads: int) -> dict[str, float] | None:
    """3DDFA_V2's figures from the peer harness (one JSON line), or None where it is not set up."""
    python = peers / "3ddfa_v2" / "venv" / "bin" / "python"
    if not (python.is_file() and (peers / "3ddfa_v2" / "manifest.json").is_file() and PEER_SCRIPT.is_file()):
        return None
    command = [str(python), str(PEER_SCRIPT), "speed", str(images), "--runs", str(runs), "--warmup", str(warmup),
               "--threads", str(threads), "--n-images", "10"]
    env = {**os.environ, "PEER_3DDFA_ROOT": str(peers / "3ddfa_v2")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"decode": figures["decode_ms"], "detect": figures["detect_ms"],
            "network": figures["net_ms"] + figures["dense_ms"], "total": figures["total_ms"],
            "given_total": figures["given_total_ms"], "given_whole": figures["given_total_ms"]}


def report(ours: dict[str, float], peer: dict[str, float] | None) -> None:
    names = {"decode": "decode", "detect": "detect", "network": "crop + network + dense mesh",
             "total": "total, photo to dense mesh", "given_total": "total with the box given",
             "given_whole": "  the same, whole photo decoded (colours)",
             "colours": "service: vertex colours (texture=vertex)", "glb": "service: GLB bytes"}
    print(f"{'stage, ms per image':44s} {'facerecon':>10s} {'3DDFA_V2':>10s} {'ratio':>7s}")
    for stage, name in names.items():
        theirs = peer.get(stage) if peer else None
        shown = "" if theirs is None else f"{theirs:.2f}"
        ratio = f"{ours[stage] / theirs:7.2f}" if theirs else ""
        print(f"{name:44s} {ours[stage]:10.2f} {shown:>10s} {ratio:>7s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=AFLW_DEV, help="a folder with images/*.jpg")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, both projects")
    parser.add_argument("--detector-threads", type=int, default=1,
                        help="facerecon's face detector's intra-op threads (its default and the service's: 1)")
    parser.add_argument("--spinning", action=argparse.BooleanOptionalAction, default=True,
                        help="facerecon's ONNX Runtime threads busy-wait between operators (ONNX Runtime's default, "
                             "which the peer runs with)")
    parser.add_argument("--peers", type=Path, default=Path(os.environ.get("PEERS", "/tmp/peers")))
    parser.add_argument("--repeat", type=int, default=1, help="run both this many times (figures as ranges)")
    args = parser.parse_args()
    paths = sorted((args.images / "images").glob("*.jpg"))[:10]
    if not paths:
        parser.error(f"no images in {args.images / 'images'}")
    print(f"{len(paths)} images from {args.images}, {args.runs} runs after {args.warmup} warm-up, "
          f"ONNX Runtime {args.threads} intra-op threads (facerecon's detector {args.detector_threads}, "
          f"spinning {'on' if args.spinning else 'off'})")
    for attempt in range(args.repeat):
        ours = time_facerecon(paths, args.runs, args.warmup, args.threads, args.detector_threads, args.spinning)
        peer = time_peer(args.peers, args.images, args.runs, args.warmup, args.threads)
        print(f"run {attempt + 1}" + ("" if peer else f" (no 3DDFA_V2 harness in {args.peers}: facerecon only)"))
        report(ours, peer)


if __name__ == "__main__":
    main()
