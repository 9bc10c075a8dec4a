"""Prints ONNX Runtime forward time per face (CPU), at 1 and 2 threads, batch 1 and 8, the model's
size, and what mirror averaging costs (FaceReconstructor.run with and without it, one face, the
usable cores). Usage: python benchmarks/bench_inference.py [--model PATH]"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from model.onnx_contract import ModelMetadata
from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """Median seconds per call after a warm-up."""
    for _ in range(5):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()

    graph = onnx.load(str(args.model))
    params = sum(int(np.prod(init.dims)) for init in graph.graph.initializer)
    meta = ModelMetadata.from_properties({p.key: p.value for p in graph.metadata_props})
    print(f"model {args.model} ({args.model.stat().st_size / 1e6:.1f} MB, "
          f"{params / 1e6:.2f} M stored weights (identical initialisers are stored once), "
          f"mesh {meta.num_vertices} vertices / {meta.num_faces} triangles, input {meta.input_size}px)")
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
        for batch_size in (1, 8):
            batch = rng.random((batch_size, 3, meta.input_size, meta.input_size), dtype=np.float32)
            seconds = median_seconds(partial(session.run, None, {"image": batch}), args.repeats)
            print(f"onnxruntime {ort.__version__} CPU threads={threads} batch={batch_size}: "
                  f"{seconds * 1e3 / batch_size:.2f} ms/face ({seconds * 1e3:.2f} ms/batch)")
    crops = rng.integers(0, 256, (1, meta.input_size, meta.input_size, 3), dtype=np.uint8)
    for mirror_average in (False, True):
        reconstructor = FaceReconstructor(args.model, mirror_average=mirror_average)
        seconds = median_seconds(partial(reconstructor.run, crops), args.repeats)
        print(f"FaceReconstructor.run, one face, mirror_average={mirror_average}: {seconds * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
