"""The training commands of ``facerecon`` (export, build-topology, prepare, train, synthesize,
evaluate, evaluate-identity, evaluate-photometric, calibrate-landmarks, calibrate-identity, build-detector,
transfer-topology, quantize, embed-identities).

The ``facerecon`` command (:mod:`service.cli`) finds them through the ``facerecon.commands``
entry points, one per command, each naming a ``register_*`` function here; heavy imports
(torch, mediapipe, onnx) happen when a command runs, so a serving-only install lists them and
says which extra to install.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from model.runtime.detector import DEFAULT_DETECTOR
from model.runtime.reconstructor import DEFAULT_MODEL
from model.topology import DEFAULT_ASSET
from service.cli import CLIError, SubParsers


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from model.nn.face_model import FaceReconstructionModel
    from model.topology import FaceTopology
    from training.checkpoint import load_checkpoint
    from training.export.onnx_export import export_onnx, metadata_json

    topology = FaceTopology.load()
    if args.untrained:
        torch.manual_seed(args.seed)
        model, steps, calibration = FaceReconstructionModel(topology), 0, "none"
    else:
        if not args.checkpoint.is_file():
            raise CLIError(f"checkpoint not found: {args.checkpoint}")
        try:
            model, data = load_checkpoint(args.checkpoint, topology)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CLIError(f"cannot load {args.checkpoint}: {err}") from None
        steps, calibration = int(data["steps"]), data.get("landmark_calibration", "none")
    metadata = export_onnx(model, args.out, trained=not args.untrained, steps=steps,
                           landmark_calibration=calibration, half_weights=args.half_weights)
    print(f"wrote {args.out}\n{metadata_json(metadata)}")
    return 0


def register_export(sub: SubParsers) -> None:
    exp = sub.add_parser("export", help="export a checkpoint to ONNX for the service and the CLI")
    src = exp.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="training checkpoint (with its landmark calibration, if any)")
    src.add_argument("--untrained", action="store_true", help="export a randomly initialised model (placeholder)")
    exp.add_argument("--seed", type=int, default=0, help="random seed of the --untrained weights")
    exp.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="where to write the .onnx")
    exp.add_argument("--half-weights", action="store_true",
                     help="store the weights as float16 (half the file; computed in float32)")
    exp.set_defaults(func=cmd_export)


def cmd_build_topology(args: argparse.Namespace) -> int:
    from training.tools.topology_builder import TopologyBuildConfig, build_topology_from_images

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


def register_build_topology(sub: SubParsers) -> None:
    topo = sub.add_parser("build-topology", help="regenerate the face topology asset from photos")
    topo.add_argument("--images", type=Path, nargs="+", required=True, metavar="DIR",
                      help="folders of face photos to fit the topology to")
    topo.add_argument("--out", type=Path, default=DEFAULT_ASSET, help="where to write the topology asset (.npz)")
    topo.add_argument("--max-images", type=int, default=3000, help="photos used at most")
    topo.add_argument("--seed", type=int, default=0, help="random seed of the photo sample")
    topo.set_defaults(func=cmd_build_topology)


def cmd_prepare(args: argparse.Namespace) -> int:
    from training.data.prepare import PrepareConfig, prepare_dataset

    try:
        manifest = prepare_dataset(args.images, args.out,
                                   PrepareConfig(workers=args.workers, crop_size=args.crop_size,
                                                 val_fraction=args.val_fraction, seed=args.seed))
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    print(f"wrote {args.out}: {manifest['faces_labelled']} faces from {manifest['images_read']} images read; "
          f"skipped {manifest['skipped']}")
    return 0


def register_prepare(sub: SubParsers) -> None:
    prep = sub.add_parser("prepare", help="label training photos with dense landmarks and store face crops")
    prep.add_argument("--images", type=Path, nargs="+", required=True, metavar="DIR",
                      help="folders of training photos, searched recursively")
    prep.add_argument("--out", type=Path, required=True, metavar="DATA", help="folder for the prepared data")
    prep.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)),
                      help="labelling processes (default: the CPU count, here %(default)s)")
    prep.add_argument("--crop-size", type=int, default=192, metavar="PIXELS", help="side of the stored face crops")
    prep.add_argument("--val-fraction", type=float, default=0.05, help="share of the faces held out for validation")
    prep.add_argument("--seed", type=int, default=0, help="random seed of the validation split")
    prep.set_defaults(func=cmd_prepare)


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import TrainConfig
    from training.trainer import train

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


def register_train(sub: SubParsers) -> None:
    trn = sub.add_parser("train", help="train the face model on prepared data (torchrun for several GPUs)")
    trn.add_argument("--data", type=Path, required=True, action="append", metavar="DATA",
                     help="prepared data folder; repeat to mix several (validation uses the first)")
    trn.add_argument("--config", type=Path, required=True, metavar="CONFIG",
                     help="TOML file (training/configs/; may extend another, see training.config)")
    trn.add_argument("--out", type=Path, required=True, metavar="RUN", help="run folder; an existing run resumes")
    trn.add_argument("--max-samples", type=int, metavar="N",
                     help="use only the first N training samples (smoke tests; default: all)")
    trn.set_defaults(func=cmd_train)


def cmd_synthesize(args: argparse.Namespace) -> int:
    from model.topology import FaceTopology
    from training.data.contact_sheet import write_contact_sheet
    from training.data.synthesize import (
        SceneBuilder,
        SourceFaces,
        SynthesisConfig,
        load_reconstructor,
        synthesize_dataset,
    )

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


def register_synthesize(sub: SubParsers) -> None:
    syn = sub.add_parser("synthesize", help="turn prepared faces to new yaws: a large-pose training set")
    syn.add_argument("--data", type=Path, required=True, metavar="DATA", help="prepared data folder to read")
    syn.add_argument("--out", type=Path, required=True, metavar="DATA_POSED", help="folder for the new shards")
    syn.add_argument("--yaw-max", type=float, default=90.0, help="target yaws spread over [-yaw-max, yaw-max]")
    syn.add_argument("--per-image", type=int, default=2, help="turned views per source face")
    syn.add_argument("--limit", type=int, help="use a random subset of this many source faces (default: all)")
    syn.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx or training checkpoint .pt")
    syn.add_argument("--seed", type=int, default=0, help="random seed of the yaws, lights and subset")
    syn.add_argument("--contact-sheet", type=Path, metavar="PNG",
                     help="also draw sample faces at yaws -90..90 (default: no sheet)")
    syn.add_argument("--sheet-faces", type=int, default=8, help="source faces on the contact sheet")
    syn.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    syn.set_defaults(func=cmd_synthesize)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from model.runtime.detector import FaceDetector
    from model.runtime.pipeline import FacePipeline
    from model.runtime.reconstructor import FaceReconstructor
    from training.evaluate import convert_aflw2000, evaluate_aflw

    if args.convert_from is not None:
        try:
            count = convert_aflw2000(args.convert_from, args.aflw2000)
        except FileNotFoundError as err:
            raise CLIError(str(err)) from None
        print(f"converted {count} AFLW2000-3D images into {args.aflw2000}", file=sys.stderr)
    try:
        reconstructor = FaceReconstructor(args.model, mirror_average=args.mirror_average)
        pipeline = FacePipeline(reconstructor, FaceDetector(args.detector), refine=args.refine)
        metrics = evaluate_aflw(args.aflw2000, pipeline, boxes=args.boxes, overlays=args.save_overlays)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    if not reconstructor.metadata.trained:
        print(f"warning: {args.model} holds UNTRAINED weights", file=sys.stderr)
    print(json.dumps(metrics))
    return 0


def register_evaluate(sub: SubParsers) -> None:
    ev = sub.add_parser("evaluate", help="AFLW2000-3D 68-point NME of an exported model, per yaw bin")
    ev.add_argument("--aflw2000", type=Path, required=True, metavar="DIR", help="DIR/images and DIR/gt.npz")
    ev.add_argument("--boxes", choices=("gt", "detect"), default="gt",
                    help="gt: crop each face around its annotated landmarks; detect: around the detector's box")
    ev.add_argument("--refine", action="store_true",
                    help="with --boxes detect: a second pass cropped around the first pass's landmarks")
    ev.add_argument("--mirror-average", action="store_true",
                    help="average each face's reconstruction with that of its mirror image")
    ev.add_argument("--save-overlays", type=Path, metavar="OUT",
                    help="write the mesh and landmarks over each photo into OUT (default: none written)")
    ev.add_argument("--convert-from", type=Path, metavar="ORIG",
                    help="first convert the original release (images + .mat) from ORIG into DIR")
    ev.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx to evaluate")
    ev.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR, help="face detector for --boxes detect")
    ev.set_defaults(func=cmd_evaluate)


def cmd_calibrate_landmarks(args: argparse.Namespace) -> int:
    from model.runtime.reconstructor import FaceReconstructor
    from training.export.landmark_calibration import calibrate, collect_samples, read_offsets, write_calibrated_model

    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise CLIError(f"checkpoint not found: {args.checkpoint}")
    try:
        reconstructor = FaceReconstructor(args.model)
        samples = collect_samples(args.aflw2000, reconstructor)
        report = calibrate(samples, reconstructor.topology, read_offsets(args.model), args.folds, args.seed)
        source = args.source or f"{args.aflw2000.name} ({len(samples)} images)"
        if args.checkpoint is not None:  # first: with a checkpoint the model was not exported from, nothing is written
            from training.checkpoint import store_landmark_calibration

            metadata = reconstructor.metadata
            store_landmark_calibration(args.checkpoint, report.offsets, source,
                                       topology_version=metadata.topology_version, steps=metadata.training_steps)
        write_calibrated_model(args.model, report.offsets, args.out, source)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CLIError(str(err)) from None
    print(json.dumps({"images": len(samples), "folds": report.folds, "uncalibrated": report.uncalibrated,
                      "before": report.before, "in_sample": report.in_sample, "held_out": report.held_out}))
    written = f"{args.out} and {args.checkpoint}" if args.checkpoint is not None else str(args.out)
    print(f"wrote {written} (landmark calibration: {source})", file=sys.stderr)
    return 0


def register_calibrate_landmarks(sub: SubParsers) -> None:
    cal = sub.add_parser("calibrate-landmarks",
                         help="fit where the 68 landmarks sit on the mesh to 3D-annotated images (AFLW2000-3D layout)")
    cal.add_argument("--aflw2000", type=Path, required=True, metavar="DIR", help="DIR/images and DIR/gt.npz")
    cal.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx to calibrate")
    cal.add_argument("--out", type=Path, required=True, help="where to write the calibrated .onnx (may be --model)")
    cal.add_argument("--folds", type=int, default=10, help="folds of the held-out figure (each image scored by a "
                                                           "fit without its fold)")
    cal.add_argument("--checkpoint", type=Path, metavar="CKPT",
                     help="also write the offsets into the training checkpoint that --model was exported from, so "
                          "that `export --checkpoint CKPT` carries them")
    cal.add_argument("--source", help="how the metadata names the calibration data (default: DIR's name and count)")
    cal.add_argument("--seed", type=int, default=0, help="random seed of the folds")
    cal.set_defaults(func=cmd_calibrate_landmarks)


def cmd_calibrate_identity(args: argparse.Namespace) -> int:
    from model.runtime.detector import FaceDetector
    from model.runtime.pipeline import FacePipeline
    from model.runtime.reconstructor import FaceReconstructor
    from training.export.identity_consensus import calibrate, write_identity_threshold

    if not args.people.is_dir():
        raise CLIError(f"people folder not found: {args.people}")
    if args.photos < 2:
        raise CLIError("--photos must be at least 2")
    if args.max_people <= args.photos:
        raise CLIError("--max-people must be more than --photos (each person's intruders are --photos others)")
    if not 0.0 < args.quantile < 1.0:
        raise CLIError("--quantile must lie between 0 and 1")
    try:
        pipeline = FacePipeline(FaceReconstructor(args.model), FaceDetector(DEFAULT_DETECTOR))
        report = calibrate(args.people, pipeline, people=args.max_people, photos=args.photos, quantile=args.quantile)
        write_identity_threshold(args.model, report["threshold"], args.out)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CLIError(str(err)) from None
    print(json.dumps(report))
    print(f"wrote {args.out} (identity threshold: {report['threshold']})", file=sys.stderr)
    return 0


def register_calibrate_identity(sub: SubParsers) -> None:
    cal = sub.add_parser("calibrate-identity",
                         help="fit the different-person distance of several-photo fusion to a folder of people "
                              "(LFW layout, training split) and write it into a copy of the model")
    cal.add_argument("--people", type=Path, required=True, metavar="DIR",
                     help="one sub-folder of photos per person (LFW layout: DIR/<Person_Name>/*.jpg)")
    cal.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx to calibrate")
    cal.add_argument("--out", type=Path, required=True, help="where to write the calibrated .onnx (may be --model)")
    cal.add_argument("--max-people", type=int, default=150, metavar="N",
                     help="training-split people used, folders in name order")
    cal.add_argument("--photos", type=int, default=4, metavar="N",
                     help="photos per person (people with fewer, or a photo without a face, are skipped)")
    cal.add_argument("--quantile", type=float, default=0.95,
                     help="share of a person's own photos kept: the threshold is this quantile of the same-person "
                          "distances")
    cal.set_defaults(func=cmd_calibrate_identity)


def cmd_transfer_topology(args: argparse.Namespace) -> int:
    from model.topology import FaceTopology
    from training.checkpoint import save_checkpoint
    from training.export.onnx_export import export_onnx, metadata_json
    from training.export.topology_transfer import transfer_topology

    for path in (args.model, args.old_topology):
        if not path.is_file():
            raise CLIError(f"not found: {path}")
    try:
        model, source = transfer_topology(args.model, FaceTopology.load(args.old_topology), FaceTopology.load())
    except (ValueError, KeyError) as err:
        raise CLIError(f"cannot transfer {args.model}: {err}") from None
    metadata = export_onnx(model, args.out, trained=source.trained, steps=source.training_steps,
                           landmark_calibration=source.landmark_calibration, half_weights=True)
    if args.checkpoint:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(args.checkpoint, model, steps=source.training_steps,
                        landmark_calibration=source.landmark_calibration)
    print(f"wrote {args.out}" + (f" and {args.checkpoint}" if args.checkpoint else "") + f"\n{metadata_json(metadata)}")
    return 0


def register_transfer_topology(sub: SubParsers) -> None:
    tra = sub.add_parser("transfer-topology",
                         help="carry an exported model over to the installed topology asset (same 468 base "
                              "vertices, new triangulation) without retraining")
    tra.add_argument("--model", type=Path, required=True, help="exported .onnx made for --old-topology")
    tra.add_argument("--old-topology", type=Path, required=True, metavar="NPZ",
                     help="the topology asset --model was exported for (e.g. from git history)")
    tra.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="where to write the transferred .onnx")
    tra.add_argument("--checkpoint", type=Path, metavar="CKPT",
                     help="also write a training checkpoint of the transferred weights (for a fine-tune with "
                          "freeze_batchnorm; default: none)")
    tra.set_defaults(func=cmd_transfer_topology)


def cmd_quantize(args: argparse.Namespace) -> int:
    from google.protobuf.message import DecodeError

    from training.export.onnx_export import metadata_json
    from training.export.quantize import CALIBRATION_CROPS, calibration_crops, quantize_model

    if not args.model.is_file():
        raise CLIError(f"not found: {args.model}")
    count = CALIBRATION_CROPS if args.calibration_crops is None else args.calibration_crops
    if count < 1:
        raise CLIError(f"--calibration-crops must be at least 1, not {count}")
    crops = None
    if args.calibration is not None:
        try:
            crops = calibration_crops(args.calibration, count)
        except (FileNotFoundError, ValueError) as err:
            raise CLIError(str(err)) from None
    try:
        metadata = quantize_model(args.model, args.out, crops)
    except (ValueError, KeyError, DecodeError) as err:
        raise CLIError(f"cannot quantize {args.model}: {err}") from None
    print(f"wrote {args.out}\n{metadata_json(metadata)}")
    return 0


def register_quantize(sub: SubParsers) -> None:
    qua = sub.add_parser("quantize",
                         help="store an exported model's fully connected layers as int8 (ONNX Runtime's dynamic "
                              "quantization; the pose head stays float) and, with --calibration, run its "
                              "convolutional trunk in int8 (static quantization calibrated on training crops): the "
                              "shipped model's last step, after export and before calibrate-landmarks")
    qua.add_argument("--model", type=Path, required=True, help="a float .onnx export")
    qua.add_argument("--out", type=Path, required=True, help="where to write the quantized .onnx")
    qua.add_argument("--calibration", type=Path, metavar="DATA",
                     help="a prepared data folder (facerecon prepare) whose training crops calibrate an int8 "
                          "convolutional trunk (default: none, the trunk stays float)")
    qua.add_argument("--calibration-crops", type=int, metavar="N",
                     help="training crops to calibrate on (default: training.export.quantize.CALIBRATION_CROPS, 256)")
    qua.set_defaults(func=cmd_quantize)


def cmd_evaluate_identity(args: argparse.Namespace) -> int:
    from model.runtime.detector import FaceDetector
    from model.runtime.pipeline import FacePipeline
    from model.runtime.reconstructor import FaceReconstructor
    from training.evaluate_identity import evaluate_identity, json_safe

    if not args.people.is_dir():
        raise CLIError(f"people folder not found: {args.people}")
    if args.min_photos < 2:
        raise CLIError("--min-photos must be at least 2")
    if args.max_people is not None and args.max_people < 2:
        raise CLIError("--max-people must be at least 2")
    if args.max_pairs < 1:
        raise CLIError("--max-pairs must be at least 1")
    if not 0.0 < args.val_fraction < 1.0:
        raise CLIError("--val-fraction must lie between 0 and 1")
    try:
        reconstructor = FaceReconstructor(args.model)
        pipeline = FacePipeline(reconstructor, FaceDetector(args.detector))
        metrics = evaluate_identity(args.people, pipeline, min_photos=args.min_photos, max_people=args.max_people,
                                    validation_only=args.validation_only, val_fraction=args.val_fraction,
                                    seed=args.seed, max_pairs=args.max_pairs, pair_seed=args.pair_seed,
                                    contact_sheet_path=args.contact_sheet, show_progress=not args.quiet)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    if not reconstructor.metadata.trained:
        print(f"warning: {args.model} holds UNTRAINED weights", file=sys.stderr)
    if args.contact_sheet is not None:
        print(f"wrote {args.contact_sheet}", file=sys.stderr)
    print(json.dumps(json_safe(metrics)))
    return 0


def register_evaluate_identity(sub: SubParsers) -> None:
    from training.evaluate_identity import MAX_DIFFERENT_PAIRS, SHEET_PEOPLE  # numpy and Pillow only

    ev = sub.add_parser("evaluate-identity",
                        help="identity evaluation: same-vs-different-person AUC, spread and expression leak "
                             "of the neutral and canonical meshes on a folder of people (LFW layout)")
    ev.add_argument("--people", type=Path, required=True, metavar="DIR",
                    help="one sub-folder of photos per person (LFW layout: DIR/<Person_Name>/*.jpg)")
    ev.add_argument("--min-photos", type=int, default=2, metavar="N",
                    help="skip people with fewer usable photos (a face found)")
    ev.add_argument("--max-people", type=int, metavar="N",
                    help="keep at most N people, folders in name order (default: all)")
    ev.add_argument("--validation-only", action="store_true",
                    help="keep only the people in the validation split of `facerecon prepare` "
                         "(subject key <DIR name>/<person folder>, see --val-fraction and --seed)")
    ev.add_argument("--val-fraction", type=float, default=0.05,
                    help="validation share that `facerecon prepare` used (with --validation-only)")
    ev.add_argument("--seed", type=int, default=0,
                    help="random seed of the validation split that `facerecon prepare` used (with --validation-only)")
    ev.add_argument("--max-pairs", type=int, default=MAX_DIFFERENT_PAIRS, metavar="N",
                    help="score at most N different-person pairs (a seeded random subset); all same-person pairs "
                         "are scored")
    ev.add_argument("--pair-seed", type=int, default=0, help="random seed of the different-person pair subset")
    ev.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx to evaluate")
    ev.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR, help="face detector .onnx")
    ev.add_argument("--contact-sheet", type=Path, metavar="PNG",
                    help=f"also draw up to {SHEET_PEOPLE} people, one row each: the photo with the widest open "
                         "mouth, front and side views of its neutral and canonical mesh (default: no sheet)")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_evaluate_identity)


def cmd_evaluate_photometric(args: argparse.Namespace) -> int:
    from model.topology import FaceTopology
    from training.checkpoint import load_checkpoint
    from training.evaluate_photometric import evaluate_photometric

    if args.samples is not None and args.samples < 1:
        raise CLIError("--samples must be at least 1")
    if not args.checkpoint.is_file():
        raise CLIError(f"checkpoint not found: {args.checkpoint}")
    try:
        topology = FaceTopology.load()
        model, _ = load_checkpoint(args.checkpoint, topology)
        metrics = evaluate_photometric(model, args.data, topology, samples=args.samples)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    print(json.dumps({"checkpoint": str(args.checkpoint), **metrics}))
    return 0


def register_evaluate_photometric(sub: SubParsers) -> None:
    ev = sub.add_parser("evaluate-photometric",
                        help="per-region photometric error (rendered albedo x shading against the photo) of a "
                             "checkpoint on the held-out crops of a prepared data folder")
    ev.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (.pt)")
    ev.add_argument("--data", type=Path, default=Path("data/prepared"),
                    help="prepared data folder; its validation split (held-out people) is used")
    ev.add_argument("--samples", type=int, metavar="N", help="use the first N validation crops (default: all)")
    ev.set_defaults(func=cmd_evaluate_photometric)


def cmd_embed_identities(args: argparse.Namespace) -> int:
    from training.data.identity_embeddings import EMBEDDINGS_FILE, embed_prepared

    try:
        counts = embed_prepared(args.data, args.batch_size, args.workers, args.all_photos)
    except ImportError as err:
        raise CLIError(f"{err}: install the teacher extra (pip install -e '.[teacher]')") from None
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    which = "all" if args.all_photos else "those in a person's folder"
    print(f"wrote {args.data / EMBEDDINGS_FILE}: {counts['embedded']} samples ({which})")
    return 0


def register_embed_identities(sub: SubParsers) -> None:
    emb = sub.add_parser("embed-identities",
                         help="face-recognition embeddings of prepared photos in person folders, the identity "
                              "branch's training-time teacher (needs the teacher extra: dlib)")
    emb.add_argument("--data", type=Path, required=True, metavar="DATA", help="prepared data folder")
    emb.add_argument("--batch-size", type=int, default=32, help="face chips per network call")
    emb.add_argument("--workers", type=int, default=2, help="processes (one shard each at a time)")
    emb.add_argument("--all-photos", action="store_true",
                     help="embed every prepared photo, not only those in a person's folder (the teacher's "
                          "relations between people need no identity label)")
    emb.set_defaults(func=cmd_embed_identities)


def cmd_build_detector(args: argparse.Namespace) -> int:
    from training.tools.detector_convert import build_detector, metadata_json

    try:
        metadata, checks, fits = build_detector(args.source, args.out, args.calibrate, args.calibration_photos,
                                                args.seed)
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


def register_build_detector(sub: SubParsers) -> None:
    det = sub.add_parser("build-detector", help="convert MediaPipe's BlazeFace face detector to ONNX")
    det.add_argument("--source", choices=("short", "full", "both"), default="both",
                     help="short-range (large faces), full-range (small faces) or both networks")
    det.add_argument("--out", type=Path, default=DEFAULT_DETECTOR, help="where to write the detector's .onnx")
    det.add_argument("--calibrate", type=Path, nargs="+", metavar="DIR",
                     help="refit the face box calibration on training photos in DIR (default: the shipped fit)")
    det.add_argument("--calibration-photos", type=int, default=1500,
                     help="photos used at most to refit the box calibration (--calibrate)")
    det.add_argument("--seed", type=int, default=0, help="random seed of the calibration photo sample")
    det.set_defaults(func=cmd_build_detector)
