"""The ``facerecon`` command line. Serving commands (``reconstruct``, ``serve``) live here and need
only the serving install; other commands (the training ones, :mod:`training.cli`) are found
through the ``facerecon.commands`` entry points, so this module never imports them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeAlias, cast

from model.conventions import FaceSelection, MeshSpace, parse_box

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


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from model.mesh.texture_bake import UVRasterMap
    from model.runtime.detector import FaceDetector
    from model.runtime.pipeline import FacePipeline
    from model.runtime.reconstructor import FaceReconstructor
    from service.batch import MeshOptions, collect_images, reconstruct_files
    from service.schemas import OutputFormat, TextureMode

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


def build_parser() -> argparse.ArgumentParser:
    from model.runtime.detector import DEFAULT_DETECTOR
    from model.runtime.reconstructor import DEFAULT_MODEL

    parser = CommandParser(prog="facerecon", description="Single-image 3D face reconstruction.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--version", action=VersionAction, help="print the package's and the shipped model's "
                                                                "versions and exit")
    sub = cast(SubParsers, parser.add_subparsers(dest="command", required=True, parser_class=CommandParser))

    rec = sub.add_parser("reconstruct", help="reconstruct the faces in photos and folders into mesh files",
                         description="Reconstruct the faces in photos and folders: one mesh per face and a JSON "
                                     "sidecar per photo (box, score, landmarks, pose, model version). Progress goes "
                                     "to stderr: a bar on a terminal, one line per photo otherwise.")
    rec.add_argument("images", nargs="+", type=Path, metavar="PATH", help="photos, or folders searched recursively")
    rec.add_argument("-o", "--out", type=Path, required=True, metavar="OUTDIR",
                     help="folder for one mesh per face and a JSON sidecar per photo (box, score, landmarks, pose, "
                          "model_version, landmark_calibration)")
    rec.add_argument("--format", choices=MESH_FORMATS, default="glb", help="mesh file format")
    rec.add_argument("--faces", choices=[s.value for s in FaceSelection], default=FaceSelection.largest.value,
                     help="largest: the largest detected face of each photo; all: every detected face")
    rec.add_argument("--box", type=_box_argument, metavar="x1,y1,x2,y2",
                     help="face box in pixels: skips detection (default: detect the faces)")
    rec.add_argument("--space", choices=[s.value for s in MeshSpace], default=MeshSpace.image.value,
                     help="image: posed as in the photo; canonical: frontal; neutral: frontal without expression")
    rec.add_argument("--texture", choices=("none", "vertex", "uv"), default="vertex",
                     help="vertex colours or a UV texture baked from the photo")
    rec.add_argument("--texture-size", type=int, default=512, metavar="PIXELS",
                     help="side of the baked UV texture (--texture uv)")
    rec.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="reconstruction model (.onnx)")
    rec.add_argument("--detector", type=Path, default=DEFAULT_DETECTOR, help="face detector model (.onnx)")
    rec.add_argument("--refine", action="store_true",
                     help="reconstruct detected faces twice, re-cropped around the first pass's landmarks "
                          "(more accurate, one more network run)")
    rec.add_argument("--mirror-average", action="store_true",
                     help="also reconstruct each face from its mirror image and average the two (more accurate, "
                          "twice the network's work)")
    rec.add_argument("-q", "--quiet", action="store_true", help="no progress bar or progress lines")
    rec.set_defaults(func=cmd_reconstruct)

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


def main(argv: Sequence[str] | None = None) -> int:
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
