"""The ``facerecon`` command line: reconstruct, serve, export, build-topology, build-detector."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence


log = logging.getLogger("facerecon")

MESH_FORMATS = ("glb", "obj", "ply")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box wants four numbers x1,y1,x2,y2, got {text!r}") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--box wants four numbers x1,y1,x2,y2, got {text!r}")
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise argparse.ArgumentTypeError(f"--box needs x1 < x2 and y1 < y2, got {text!r}")
    return values  # type: ignore[return-value]


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from model.face_detector import FaceDetector
    from model.inference import FaceReconstructor
    from model.pipeline import FacePipeline
    from model.texture_bake import UVRasterMap
    from service.batch import MeshOptions, collect_images, reconstruct_files
    from service.schemas import FaceSelection, MeshSpace, OutputFormat, TextureMode

    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"output {args.out} exists and is not a folder")
    try:
        reconstructor = FaceReconstructor(args.model, mirror_average=args.mirror_average)
        detector = FaceDetector(args.detector)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    if not reconstructor.metadata.trained:
        print(f"warning: {args.model} holds UNTRAINED weights (random initialisation); "
              "meshes will not resemble the photo", file=sys.stderr)
    jobs, skipped = collect_images(args.images)
    if not jobs:
        raise CLIError("no images found in " + ", ".join(str(p) for p in args.images))
    options = MeshOptions(OutputFormat(args.format), TextureMode(args.texture), MeshSpace(args.space),
                          FaceSelection(args.faces), args.box)
    topology = reconstructor.topology
    uv_map = UVRasterMap.build(topology.uvs, topology.faces, args.texture_size)
    pipeline = FacePipeline(reconstructor, detector, refine=args.refine)
    summary = reconstruct_files(pipeline, jobs, args.out, options, uv_map, show_progress=not args.quiet)
    summary.skipped[:0] = skipped
    for path, reason in summary.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(summary.report())
    return 0 if summary.processed else 1


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from model.face_model import FaceReconstructionModel
    from model.topology import FaceTopology
    from training.checkpoint import load_checkpoint
    from training.export_onnx import export_onnx, metadata_json

    topology = FaceTopology.load()
    if args.untrained:
        torch.manual_seed(args.seed)
        model, steps = FaceReconstructionModel(topology), 0
    else:
        if not args.checkpoint.is_file():
            raise CLIError(f"checkpoint not found: {args.checkpoint}")
        try:
            model, data = load_checkpoint(args.checkpoint, topology)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CLIError(f"cannot load {args.checkpoint}: {err}") from None
        steps = int(data["steps"])
    metadata = export_onnx(model, args.out, trained=not args.untrained, steps=steps, half_weights=args.half_weights)
    print(f"wrote {args.out}\n{metadata_json(metadata)}")
    return 0


def cmd_build_topology(args: argparse.Namespace) -> int:
    from training.topology_builder import TopologyBuildConfig, build_topology_from_images

    try:
        topology = build_topology_from_images(
            args.images, args.out, TopologyBuildConfig(max_images=args.max_images, seed=args.seed)
        )
    except (FileNotFoundError, RuntimeError) as err:
        raise CLIError(str(err)) from None
    print(
        f"wrote {args.out}: version {topology.version}, {topology.num_vertices} vertices, "
        f"{topology.num_faces} triangles ({len(topology.base_faces)} on the 468 base vertices)"
    )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from training.prepare import PrepareConfig, prepare_dataset

    try:
        manifest = prepare_dataset(args.images, args.out, PrepareConfig(workers=args.workers, crop_size=args.crop_size,
                                                                         val_fraction=args.val_fraction, seed=args.seed))
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    print(f"wrote {args.out}: {manifest['faces_labelled']} faces from {manifest['images_read']} images read; "
          f"skipped {manifest['skipped']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.trainer import TrainConfig, train

    try:
        config = TrainConfig.load(args.config)
    except (OSError, ValueError, TypeError) as err:
        raise CLIError(f"bad config {args.config}: {err}") from None
    try:
        metrics = train(args.data, config, args.out, max_samples=args.max_samples)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    if metrics:
        print(f"finished {args.out}: {metrics}")
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    import json

    from model.topology import FaceTopology
    from training.contact_sheet import write_contact_sheet
    from training.synthesize import SceneBuilder, SourceFaces, SynthesisConfig, load_reconstructor, synthesize_dataset

    if args.per_image < 1 or args.yaw_max <= 0 or (args.limit is not None and args.limit < 1):
        raise CLIError("--per-image and --limit must be at least 1 and --yaw-max positive")
    if args.out.resolve() == args.data.resolve():
        raise CLIError("--out must be another folder than --data")
    config = SynthesisConfig(yaw_max=args.yaw_max, per_image=args.per_image, limit=args.limit, seed=args.seed)
    topology = FaceTopology.load()
    try:
        model = load_reconstructor(args.model, topology)
        if args.contact_sheet is not None:
            write_contact_sheet(args.contact_sheet, SourceFaces(args.data), SceneBuilder(model, topology, config),
                                config, args.sheet_faces)
            print(f"wrote {args.contact_sheet}", file=sys.stderr)
        manifest = synthesize_dataset(args.data, args.out, model, config, topology=topology,
                                      show_progress=not args.quiet)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        raise CLIError(str(err)) from None
    print(json.dumps({k: manifest[k] for k in ("images", "sources", "images_per_second", "yaw_histogram")}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from model.inference import FaceReconstructor
    from training.evaluate import convert_aflw2000, evaluate_aflw

    if args.convert_from is not None:
        try:
            count = convert_aflw2000(args.convert_from, args.aflw2000)
        except FileNotFoundError as err:
            raise CLIError(str(err)) from None
        print(f"converted {count} AFLW2000-3D images into {args.aflw2000}", file=sys.stderr)
    try:
        reconstructor = FaceReconstructor(args.model, mirror_average=args.mirror_average)
        metrics = evaluate_aflw(args.aflw2000, reconstructor, boxes=args.boxes, overlays=args.save_overlays,
                                refine=args.refine)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    if not reconstructor.metadata.trained:
        print(f"warning: {args.model} holds UNTRAINED weights", file=sys.stderr)
    print(json.dumps(metrics))
    return 0


def cmd_calibrate_landmarks(args: argparse.Namespace) -> int:
    import json

    from model.inference import FaceReconstructor
    from training.landmark_calibration import calibrate, collect_samples, read_offsets, write_calibrated_model

    try:
        reconstructor = FaceReconstructor(args.model)
        samples = collect_samples(args.aflw2000, reconstructor)
        report = calibrate(samples, reconstructor.topology, read_offsets(args.model), args.folds, args.seed)
        source = args.source or f"{args.aflw2000.name} ({len(samples)} images)"
        write_calibrated_model(args.model, report.offsets, args.out, source)
    except (OSError, ValueError) as err:
        raise CLIError(str(err)) from None
    print(json.dumps({"images": len(samples), "folds": report.folds, "uncalibrated": report.uncalibrated,
                      "before": report.before, "in_sample": report.in_sample, "held_out": report.held_out}))
    print(f"wrote {args.out} (landmark calibration: {source})", file=sys.stderr)
    return 0


def cmd_build_detector(args: argparse.Namespace) -> int:
    from training.detector_convert import build_detector, metadata_json

    try:
        metadata, checks, fits = build_detector(args.source, args.out, args.calibrate, args.calibration_photos, args.seed)
    except (FileNotFoundError, RuntimeError) as err:
        raise CLIError(str(err)) from None
    for check in checks:
        print(f"{check.source}: matches MediaPipe FaceDetection on {check.faces} faces in {check.images} images "
              f"(max {check.max_pixel_difference:.2g} px, score {check.max_score_difference:.2g})")
    for name, fit in fits.items():
        print(f"{name}: box calibration {fit.calibration} from {fit.views} views; residual centre "
              f"{fit.residual_centre:.4f}, size {fit.residual_size:.4f} (x 68-point box side); "
              f"mean IoU {fit.mean_iou:.3f} (uncalibrated {fit.mean_iou_raw:.3f})")
    print(f"wrote {args.out}\n{metadata_json(metadata)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.logs import configure_logging
    from service.settings import ServiceSettings

    overrides = {name: getattr(args, name) for name in ("host", "port", "log_level") if getattr(args, name) is not None}
    try:
        settings = ServiceSettings(**overrides)
    except ValidationError as err:
        raise CLIError(f"bad service settings (FACERECON_* environment variables or options): {err}") from None
    for path in (settings.model_path, settings.detector_path):
        if not path.is_file():
            raise CLIError(f"model file not found: {path}")
    log_config = configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=log_config,
                access_log=False, timeout_graceful_shutdown=settings.graceful_shutdown_s)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from model.face_detector import DEFAULT_DETECTOR
    from model.inference import DEFAULT_MODEL
    from model.topology import DEFAULT_ASSET

    parser = argparse.ArgumentParser(prog="facerecon", description="Single-image 3D face reconstruction.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("reconstruct", help="reconstruct the faces in photos and folders into mesh files")
    rec.add_argument("images", nargs="+", type=Path, metavar="PATH", help="photos, or folders searched recursively")
    rec.add_argument("-o", "--out", type=Path, required=True, metavar="OUTDIR",
                     help="folder for one mesh per face and a JSON sidecar per photo (box, score, landmarks, pose)")
    rec.add_argument("--format", choices=MESH_FORMATS, default="glb")
    rec.add_argument("--faces", choices=("largest", "all"), default="largest")
    rec.add_argument("--box", type=_parse_box, metavar="x1,y1,x2,y2", help="face box in pixels: skips detection")
    rec.add_argument("--space", choices=("image", "canonical", "neutral"), default="image",
                     help="image: posed as in the photo; canonical: frontal; neutral: frontal without expression")
    rec.add_argument("--texture", choices=("none", "vertex", "uv"), default="vertex",
                     help="vertex colours or a UV texture baked from the photo")
    rec.add_argument("--texture-size", type=int, default=512)
    rec.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    rec.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR)
    rec.add_argument("--refine", action="store_true",
                     help="reconstruct detected faces twice, re-cropped around the first pass's landmarks "
                          "(more accurate, one more network run)")
    rec.add_argument("--mirror-average", action="store_true",
                     help="also reconstruct each face from its mirror image and average the two (more accurate, "
                          "twice the network's work)")
    rec.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=cmd_reconstruct)

    exp = sub.add_parser("export", help="export a checkpoint to ONNX for the service and the CLI")
    src = exp.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path)
    src.add_argument("--untrained", action="store_true", help="export a randomly initialised model (placeholder)")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    exp.add_argument("--half-weights", action="store_true",
                     help="store the weights as float16 (half the file; computed in float32)")
    exp.set_defaults(func=cmd_export)

    topo = sub.add_parser("build-topology", help="regenerate the face topology asset from photos")
    topo.add_argument("--images", type=Path, nargs="+", required=True, metavar="DIR")
    topo.add_argument("--out", type=Path, default=DEFAULT_ASSET)
    topo.add_argument("--max-images", type=int, default=3000)
    topo.add_argument("--seed", type=int, default=0)
    topo.set_defaults(func=cmd_build_topology)

    prep = sub.add_parser("prepare", help="label training photos with dense landmarks and store face crops")
    prep.add_argument("--images", type=Path, nargs="+", required=True, metavar="DIR")
    prep.add_argument("--out", type=Path, required=True, metavar="DATA")
    prep.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    prep.add_argument("--crop-size", type=int, default=192)
    prep.add_argument("--val-fraction", type=float, default=0.05)
    prep.add_argument("--seed", type=int, default=0)
    prep.set_defaults(func=cmd_prepare)

    trn = sub.add_parser("train", help="train the face model on prepared data (torchrun for several GPUs)")
    trn.add_argument("--data", type=Path, required=True, action="append", metavar="DATA",
                     help="prepared data folder; repeat to mix several (validation uses the first)")
    trn.add_argument("--config", type=Path, required=True, metavar="CONFIG", help="TOML file (training/configs/)")
    trn.add_argument("--out", type=Path, required=True, metavar="RUN", help="run folder; an existing run resumes")
    trn.add_argument("--max-samples", type=int, help="use only the first N training samples (smoke tests)")
    trn.set_defaults(func=cmd_train)

    syn = sub.add_parser("synthesize", help="turn prepared faces to new yaws: a large-pose training set")
    syn.add_argument("--data", type=Path, required=True, metavar="DATA", help="prepared data folder to read")
    syn.add_argument("--out", type=Path, required=True, metavar="DATA_POSED", help="folder for the new shards")
    syn.add_argument("--yaw-max", type=float, default=90.0, help="target yaws spread over [-yaw-max, yaw-max]")
    syn.add_argument("--per-image", type=int, default=2, help="turned views per source face")
    syn.add_argument("--limit", type=int, help="use a random subset of this many source faces")
    syn.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx or training checkpoint .pt")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--contact-sheet", type=Path, metavar="PNG", help="also draw sample faces at yaws -90..90")
    syn.add_argument("--sheet-faces", type=int, default=8, help="source faces on the contact sheet")
    syn.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    syn.set_defaults(func=cmd_synthesize)

    ev = sub.add_parser("evaluate", help="AFLW2000-3D 68-point NME of an exported model, per yaw bin")
    ev.add_argument("--aflw2000", type=Path, required=True, metavar="DIR", help="DIR/images and DIR/gt.npz")
    ev.add_argument("--boxes", choices=("gt", "detect"), default="gt")
    ev.add_argument("--refine", action="store_true",
                    help="with --boxes detect: a second pass cropped around the first pass's landmarks")
    ev.add_argument("--mirror-average", action="store_true",
                    help="average each face's reconstruction with that of its mirror image")
    ev.add_argument("--save-overlays", type=Path, metavar="OUT", help="write the mesh and landmarks over each photo")
    ev.add_argument("--convert-from", type=Path, metavar="ORIG",
                    help="first convert the original release (images + .mat) from ORIG into DIR")
    ev.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ev.set_defaults(func=cmd_evaluate)

    cal = sub.add_parser("calibrate-landmarks",
                         help="fit where the 68 landmarks sit on the mesh to 3D-annotated images (AFLW2000-3D layout)")
    cal.add_argument("--aflw2000", type=Path, required=True, metavar="DIR", help="DIR/images and DIR/gt.npz")
    cal.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx to calibrate")
    cal.add_argument("--out", type=Path, required=True, help="where to write the calibrated .onnx (may be --model)")
    cal.add_argument("--folds", type=int, default=10, help="folds of the held-out figure (each image scored by a "
                                                           "fit without its fold)")
    cal.add_argument("--source", help="how the metadata names the calibration data (default: DIR's name and count)")
    cal.add_argument("--seed", type=int, default=0)
    cal.set_defaults(func=cmd_calibrate_landmarks)

    det = sub.add_parser("build-detector", help="convert MediaPipe's BlazeFace face detector to ONNX")
    det.add_argument("--source", choices=("short", "full", "both"), default="both",
                     help="short-range (large faces), full-range (small faces) or both networks")
    det.add_argument("--out", type=Path, default=DEFAULT_DETECTOR)
    det.add_argument("--calibrate", type=Path, nargs="+", metavar="DIR",
                     help="refit the face box calibration on training photos in DIR (default: the shipped fit)")
    det.add_argument("--calibration-photos", type=int, default=1500)
    det.add_argument("--seed", type=int, default=0)
    det.set_defaults(func=cmd_build_detector)

    srv = sub.add_parser("serve", help="start the HTTP service")
    srv.add_argument("--host", help="interface to listen on (default 127.0.0.1, or FACERECON_HOST)")
    srv.add_argument("--port", type=int, help="default 8000, or FACERECON_PORT")
    srv.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    srv.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        print(f"error: {args.command} needs the missing package {err.name!r}; install facerecon[train]", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
