"""ONNX Runtime sessions that fit the machine: execution providers for a device, CPU threading."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal

import onnxruntime as ort

Device = Literal["auto", "cuda", "cpu"]

log = logging.getLogger("facerecon.runtime")

# Nothing is sent or written by this process: the environment switch (set in model/runtime/__init__.py
# before ONNX Runtime loads) stops the telemetry store on disk; this stops its events too.
ort.disable_telemetry_events()


def default_threads() -> int:
    """Threads for ONNX Runtime's intra-op pool: the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


Provider = str | tuple[str, dict[str, str]]

# Tuned CUDA settings: heuristic cuDNN algorithm search (exhaustive search costs seconds per new
# batch shape, and micro-batches vary in size), and an arena that grows by what is requested.
CUDA_PROVIDER_OPTIONS = {
    "cudnn_conv_algo_search": "HEURISTIC",
    "arena_extend_strategy": "kSameAsRequested",
    "do_copy_in_default_stream": "1",
}


class DeviceUnavailable(RuntimeError):
    """``device=cuda`` was asked for, but a session runs without the CUDA provider."""


def execution_providers(device: Device = "auto") -> list[Provider]:
    """ONNX Runtime providers for ``device``: CUDA (tuned) with CPU fallback, or CPU alone.

    ``cuda`` fails when this ONNX Runtime build has no CUDA provider; ``auto`` falls back.
    """
    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", dict(CUDA_PROVIDER_OPTIONS)), "CPUExecutionProvider"]
    if device == "cuda":
        raise DeviceUnavailable(f"device=cuda, but this ONNX Runtime offers only {available} "
                                "(install onnxruntime-gpu instead of onnxruntime)")
    if device == "auto":
        log.info("device=auto: this ONNX Runtime offers no CUDA provider; the models run on the CPU")
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None, *, spinning: bool = True) -> ort.SessionOptions:
    """CPU threading that fits the machine: ``threads`` intra-op (default: usable cores).
    ``spinning``: the intra-op pool's threads busy-wait a moment for the next operator's work
    instead of sleeping (ONNX Runtime's default), within a run only: they sleep once it ends
    (``session.force_spinning_stop``), leaving the cores to other work between runs. The network
    runs a few hundred small operators, and waking sleeping threads for each costs more than the
    work: on this repository's 2-core CPU the reconstruction network took 1.51 ms on 2 threads
    spinning within runs, 1.44 spinning on past them, 1.77 not spinning (and 1.83 on one thread);
    the CPU each run took with 5 ms idle after it: 3.9, 8.4 and 2.2 ms (2026-12-04).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")  # no spinning past the end of a run
    return options


def provider_name(provider: Provider) -> str:
    """The name of a provider entry: ``"CUDAExecutionProvider"`` or ``("CUDAExecutionProvider", {...})``."""
    return provider if isinstance(provider, str) else provider[0]


def check_session_providers(device: Device, requested: Sequence[Provider], actual: Sequence[str],
                            what: str = "the model") -> None:
    """Compare the providers a session really got (``session.get_providers()``) with those requested.

    ONNX Runtime does not fail when it cannot create a requested provider (no GPU visible, CUDA or
    cuDNN libraries missing): it logs "Failed to create CUDAExecutionProvider" and quietly runs the
    session on the CPU. With ``device=cuda`` that is a misconfigured deployment, and this raises
    :class:`DeviceUnavailable` with the reason, so start-up fails instead of reporting ready on the
    CPU. With ``device=auto`` the CPU is the documented fallback: it is logged as a warning.
    """
    wanted = [provider_name(p) for p in requested]
    missing = [name for name in wanted if name != "CPUExecutionProvider" and name not in actual]
    if not missing:
        return
    if device == "cuda":
        raise DeviceUnavailable(
            f"device=cuda, but ONNX Runtime could not create {', '.join(missing)} for {what} and would run it "
            f"on {', '.join(actual)}: no GPU visible to this process, or the CUDA / cuDNN libraries that "
            "onnxruntime-gpu needs are missing (see ONNX Runtime's error above). Give the container a GPU "
            "(e.g. `docker run --gpus all`), or set FACERECON_DEVICE=cpu (or auto) to serve on the CPU")
    log.warning("device=%s: ONNX Runtime could not create %s for %s; it runs on %s",
                device, ", ".join(missing), what, ", ".join(actual))
