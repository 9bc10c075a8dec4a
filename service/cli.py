"""The ``facerecon`` command line. Serving commands (``reconstruct``, ``serve``) live here and need
only the serving install; other commands (the training ones, :mod:`training.cli`) are found
through the ``facerecon.commands`` entry points, so this module never imports them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from model.conventions import FaceSelection, MeshSpace, parse_box

if TYPE_CHECKING:
    import numpy as np

    from model.runtime.pipeline import FacePipeline

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

COMMAND_ENTRY_POINTS = "facerecon.commands"  # name: the command; value: a function (SubParsers) -> None
MESH_FORMATS = ("glb", "obj", "ply")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _box_argument(text: str) -> tuple[float, float, float, float]:
    try:
        return parse_box(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _pipeline(args: argparse.Namespace) -> FacePipeline:
    """The detector and reconstruction model that ``args`` name (``--model``, ``--detector``, ``--refine``,
    ``--mirror-average``); a warning on stderr when the weights are untrained."""
    from model.runtime.detector import FaceDetector
    from model.runtime.pipeline import FacePipeline
    from model.runtime.reconstructor import FaceReconstructor

    try:
        reconstructor = FaceReconstructor(args.model, mirror_average=args.mirror_average)
        detector = FaceDetector(args.detector)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    if not reconstructor.metadata.trained:
        print(f"warning: {args.model} holds UNTRAINED weights (random initialisation); "
              "meshes will not resemble the photo", file=sys.stderr)
    return FacePipeline(reconstructor, detector, refine=args.refine)


def _output_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CLIError(f"output {path} exists and is not a folder")


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from model.mesh.texture_bake import UVRasterMap
    from model.runtime.pipeline import NoFaceFound
    from service.batch import MeshOptions, collect_images, reconstruct_files, reconstruct_person_files
    from service.schemas import OutputFormat, TextureMode

    _output_folder(args.out)
    if args.same_person and (args.box is not None or args.faces != FaceSelection.largest.value):
        raise CLIError("--same-person takes the largest face of every photo: drop --box and --faces")
    jobs, skipped = collect_images(args.images)
    if not jobs:
        raise CLIError("no images found in " + ", ".join(str(p) for p in args.images))
    if args.same_person and len(jobs) + len(skipped) < 2:
        raise CLIError(f"--same-person needs at least 2 photos of the person, got {len(jobs) + len(skipped)}")
    pipeline = _pipeline(args)
    options = MeshOptions(OutputFormat(args.format), TextureMode(args.texture), MeshSpace(args.space),
                          FaceSelection(args.faces), args.box)
    topology = pipeline.reconstructor.topology
    uv_map = UVRasterMap.build(topology.uvs, topology.faces, args.texture_size)
    if args.same_person:
        try:
            print(reconstruct_person_files(pipeline, jobs, skipped, args.out, options, uv_map))
        except NoFaceFound as err:
            raise CLIError(str(err)) from None
        return 0
    summary = reconstruct_files(pipeline, jobs, args.out, options, uv_map, show_progress=not args.quiet)
    summary.skipped[:0] = skipped
    for path, reason in summary.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(summary.report())
    return 0 if summary.processed else 1


def _expression_code(path: Path, model_version: str) -> list[float]:
    """The expression code in a JSON file: a bare array, or a JSON answer or sidecar of facerecon (its first
    face's ``expression_code``, refused when another model made it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CLIError(f"cannot read an expression code from {path}: {err}") from None
    if isinstance(data, dict):
        if data.get("model_version", model_version) != model_version:
            raise CLIError(f"{path} holds a code of the model {data['model_version']}, not of this model "
                           f"({model_version}): expression codes are valid only with the model that made them")
        faces = data.get("faces")
        data = faces[0].get("expression_code") if isinstance(faces, list) and faces and isinstance(faces[0], dict) \
            else None
    if not isinstance(data, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        raise CLIError(f"{path} holds no expression code: give a JSON array of numbers, or a facerecon JSON answer "
                       "or sidecar (its first face's expression_code)")
    return data


def cmd_transfer(args: argparse.Namespace) -> int:
    from model.mesh.texture_bake import UVRasterMap
    from model.runtime.image_io import ImageDecodeError
    from model.runtime.pipeline import NoFaceFound
    from service.batch import transfer_files
    from service.schemas import OutputFormat, TextureMode

    _output_folder(args.out)
    pipeline = _pipeline(args)
    code = None
    if args.expression_code is not None:
        code = _expression_code(args.expression_code, pipeline.reconstructor.model_version)
        if args.pose == "expression":
            raise CLIError("--pose expression needs --expression (a photo): a code carries no head pose")
    def read(path: Path) -> np.ndarray:
        try:
            return pipeline.decode(path.read_bytes())
        except (OSError, ImageDecodeError) as err:
            raise CLIError(f"{path}: {err}") from None

    identity = read(args.identity)
    expression = None if args.expression is None else read(args.expression)
    topology = pipeline.reconstructor.topology
    uv_map = UVRasterMap.build(topology.uvs, topology.faces, args.texture_size)
    stem = f"{args.identity.stem}_with_{args.expression.stem if args.expression else args.expression_code.stem}"
    try:
        names = transfer_files(pipeline, identity, expression, code, args.pose, args.out / stem,
                               OutputFormat(args.format), TextureMode(args.texture), MeshSpace(args.space), uv_map)
    except (NoFaceFound, ValueError) as err:
        raise CLIError(str(err)) from None
    print(f"wrote {', '.join(str(args.out / name) for name in names)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.logs import configure_logging
    from service.middleware import guarded_h11_protocol
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
    app = create_app(settings)
    # h11 (not httptools) with the protocol guard: bounded request heads (bytes, fields, arrival time);
    # no WebSocket routes, so no upgrades.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=log_config, access_log=False,
                timeout_graceful_shutdown=settings.graceful_shutdown_s, ws="none",
                http=guarded_h11_protocol(settings, app.state.metrics, lambda: app.state.model_version),
                h11_max_incomplete_event_size=settings.max_header_bytes)
    return 0


def _unavailable(name: str, error: ImportError):
    def run(args: argparse.Namespace) -> int:
        raise CLIError(f"{name} is not installed here ({error}): it needs the training code and its "
                       "packages: pip install -e '.[train]' from a source checkout")
    return run


def add_plugin_commands(sub: SubParsers) -> None:
    """Every command registered under the ``facerecon.commands`` entry points; one whose code or
    packages are missing stays listed and says what to install."""
    for entry in sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as err:
            stub = sub.add_parser(entry.name, help="(not installed: needs facerecon[train])", add_help=False)
            stub.set_defaults(func=_unavailable(entry.name, err), unavailable=True)
            continue
        register(sub)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, ``(default: ...)``, except where there is none to show
    (the help then says what applies)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """The parser of ``facerecon`` and of each of its commands (also those of the plugins): help with defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def versions() -> str:
    """The package's version and the shipped model's (``facerecon --version``)."""
    from importlib.metadata import PackageNotFoundError, version

    from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor

    try:
        package = version("facerecon")
    except PackageNotFoundError:
        package = "unknown (not installed)"
    try:
        reconstructor = FaceReconstructor(DEFAULT_MODEL)
    except (FileNotFoundError, ValueError) as err:
        model = f"none ({err})"
    else:
        model = (f"{reconstructor.model_version} (landmark calibration: "
                 f"{reconstructor.metadata.landmark_calibration}; {DEFAULT_MODEL})")
    return f"facerecon {package}\nmodel {model}"


class VersionAction(argparse.Action):
    """``--version``: prints :func:`versions` (the model is loaded only then) and exits 0."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(versions())
        parser.exit()


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    from service.schemas import TextureMode

    parser.add_argument("--format", choices=MESH_FORMATS, default="glb", help="mesh file format")
    parser.add_argument("--space", choices=[s.value for s in MeshSpace], default=MeshSpace.image.value,
                        help="image: posed as in the photo; canonical: frontal; neutral: frontal without expression")
    parser.add_argument("--texture", choices=[t.value for t in TextureMode], default=TextureMode.vertex.value,
                        help="vertex colours or a UV texture baked from the photo; albedo: the model's albedo as a "
                             "UV texture, without the photo's lighting")
    parser.add_argument("--texture-size", type=int, default=512, metavar="PIXELS",
                        help="side of the UV texture (--texture uv or albedo)")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from model.runtime.detector import DEFAULT_DETECTOR
    from model.runtime.reconstructor import DEFAULT_MODEL

    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="reconstruction model (.onnx)")
    parser.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR, help="face detector model (.onnx)")
    parser.add_argument("--refine", action="store_true",
                        help="reconstruct detected faces twice, re-cropped around the first pass's landmarks "
                             "(more accurate, one more network run)")
    parser.add_argument("--mirror-average", action="store_true",
                        help="also reconstruct each face from its mirror image and average the two (more accurate, "
                             "twice the network's work)")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="facerecon", description="Single-image 3D face reconstruction.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--version", action=VersionAction, help="print the package's and the shipped model's "
                                                                "versions and exit")
    sub = cast(SubParsers, parser.add_subparsers(dest="command", required=True, parser_class=CommandParser))

    rec = sub.add_parser("reconstruct", help="reconstruct the faces in photos and folders into mesh files",
                         description="Reconstruct the faces in photos and folders: one mesh per face and a JSON "
                                     "sidecar per photo (box, score, landmarks, pose, model version). Progress goes "
                                     "to stderr: a bar on a terminal, one line per photo otherwise. With "
                                     "--same-person: one face from all the photos of one person.")
    rec.add_argument("images", nargs="+", type=Path, metavar="PATH", help="photos, or folders searched recursively")
    rec.add_argument("-o", "--out", type=Path, required=True, metavar="OUTDIR",
                     help="folder for one mesh per face and a JSON sidecar per photo (box, score, landmarks, pose, "
                          "model_version, landmark_calibration)")
    rec.add_argument("--same-person", action="store_true",
                     help="the photos show one person: fuse one identity from every photo that shows them (the "
                          "others are reported and left out) and write person.json (which photos were used, and "
                          "why not) and, with --space neutral, the one fused face person.FORMAT, else each used "
                          "photo's face on it, all with colours merged from where each photo saw the face best")
    rec.add_argument("--faces", choices=[s.value for s in FaceSelection], default=FaceSelection.largest.value,
                     help="largest: the largest detected face of each photo; all: every detected face")
    rec.add_argument("--box", type=_box_argument, metavar="x1,y1,x2,y2",
                     help="face box in pixels: skips detection (default: detect the faces)")
    _add_output_options(rec)
    _add_model_options(rec)
    rec.add_argument("-q", "--quiet", action="store_true", help="no progress bar or progress lines")
    rec.set_defaults(func=cmd_reconstruct)

    tra = sub.add_parser("transfer", help="put the expression of one photo (or code) on the face of another",
                         description="The face of the --identity photo (its largest face: shape, albedo, "
                                     "lighting, colours) with the expression of the --expression photo's largest "
                                     "face, or of a stored --expression-code. Writes IDENTITY_with_EXPRESSION.FORMAT "
                                     "and its JSON sidecar (with the expression_code) into OUTDIR.")
    tra.add_argument("--identity", type=Path, required=True, metavar="PHOTO", help="the photo whose face is kept")
    source = tra.add_mutually_exclusive_group(required=True)
    source.add_argument("--expression", type=Path, metavar="PHOTO", help="the photo whose expression is transferred")
    source.add_argument("--expression-code", type=Path, metavar="FILE.json",
                        help="instead of a photo: an expression code, a JSON array of numbers or a JSON answer or "
                             "sidecar of the same model (its first face's expression_code); codes are the model's "
                             "own, valid only with the model that made them")
    tra.add_argument("--pose", choices=("identity", "expression"), default="identity",
                     help="whose head pose: the identity photo's, or the expression photo's (the face stays where "
                          "it is in the identity photo)")
    tra.add_argument("-o", "--out", type=Path, required=True, metavar="OUTDIR", help="folder for the mesh and sidecar")
    _add_output_options(tra)
    _add_model_options(tra)
    tra.set_defaults(func=cmd_transfer)

    srv = sub.add_parser("serve", help="start the HTTP service",
                         description="Start the HTTP service. Every setting is also an environment variable "
                                     "(FACERECON_*, see service/settings.py); options override them.")
    srv.add_argument("--host", help="interface to listen on (default: 127.0.0.1, or FACERECON_HOST)")
    srv.add_argument("--port", type=int, help="TCP port (default: 8000, or FACERECON_PORT)")
    srv.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                     help="least severe log level written (default: info, or FACERECON_LOG_LEVEL)")
    srv.set_defaults(func=cmd_serve)

    add_plugin_commands(sub)
    return parser


def compiled_code_cache(argv: Sequence[str]) -> Path | None:
    """Where the command of ``argv`` keeps the compiled loops (:mod:`model.compiled`) between runs, so that
    a command on one photo takes about 1 s instead of 5: the user's cache folder, except for ``serve``
    (None), which writes nothing and compiles them when it starts."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)  # the options before it are flags
    if command == "serve":
        return None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facerecon" / "numba"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cache = compiled_code_cache(argv)
    if cache is not None:  # set before the parser is built: the commands' modules load numba, which reads it once
        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache))
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):  # an unavailable command's options are unknown
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        print(f"error: {args.command} needs the missing package {err.name!r}; install facerecon[train]",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
