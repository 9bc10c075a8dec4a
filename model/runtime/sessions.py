"""ONNX Runtime sessions that fit the machine: execution providers for a device, CPU threading."""

from __future__ import annotations

import os
from typing import Literal

import onnxruntime as ort

Device = Literal["auto", "cuda", "cpu"]

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


def execution_providers(device: Device = "auto") -> list[Provider]:
    """ONNX Runtime providers for ``device``: CUDA (tuned) with CPU fallback, or CPU alone.

    ``cuda`` fails when this ONNX Runtime build has no CUDA provider; ``auto`` falls back.
    """
    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", dict(CUDA_PROVIDER_OPTIONS)), "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError(f"device=cuda, but this ONNX Runtime offers only {available} "
                           "(install onnxruntime-gpu instead of onnxruntime)")
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """CPU threading that fits the machine: ``threads`` intra-op (default: usable cores), no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
